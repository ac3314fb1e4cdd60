// ONNX export (docs/deploy.md, "ONNX export"): the written models run in OpenCV DNN and give the exported model's
// outputs, with a batch other than the traced one; onnx::checker passes; unsupported operations are named with
// their module; BatchNorm folding keeps the outputs.
#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/deploy/onnx_export.h>
#include <featlearn/deploy/traced_graph.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/export_onnx.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/model/rec_model.h>
#include <gtest/gtest.h>
#include <opencv2/dnn.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

fs::path temp_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("featlearn_onnx_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Random BatchNorm statistics and affine parameters, so that folding them is not the identity.
void randomize_batch_norms(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& b : m.named_buffers(true)) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
  for (auto& p : m.named_parameters(true))
    if (p.value().dim() == 1 && p.key().find("bias") != std::string::npos) p.value().normal_(0, 0.1);
}

onnx::ModelProto read_onnx(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(ss.str())) << path;
  return m;
}

// [N, C, H, W] through OpenCV DNN's ONNX importer.
torch::Tensor run_opencv(const fs::path& onnx_path, const torch::Tensor& images, const std::string& input = "images") {
  cv::dnn::Net net = cv::dnn::readNetFromONNX(onnx_path.string());
  const auto x = images.contiguous();
  std::vector<int> dims(x.sizes().begin(), x.sizes().end());
  cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F, x.data_ptr<float>());
  net.setInput(blob, input);
  cv::Mat out = net.forward();
  std::vector<int64_t> sizes;
  for (int i = 0; i < out.dims; ++i) sizes.push_back(out.size[i]);
  return torch::from_blob(out.ptr<float>(), sizes, torch::kFloat32).clone();
}

int64_t count_ops(const onnx::ModelProto& m, const std::string& op) {
  int64_t n = 0;
  for (const auto& node : m.graph().node()) n += node.op_type() == op;
  return n;
}

struct ParityResult {
  double max_diff = 0;
  OnnxExportInfo info;
};

// Builds the RecModel of `arch_yaml` (the Arch section), exports it with export_onnx (traced on batch 2) and
// compares OpenCV's outputs on a batch of 5 with the model's own (InferenceModel::outputs before export).
ParityResult onnx_parity(const std::string& name, const std::string& arch_yaml, std::vector<int64_t> shape,
                         bool normalize = true, const std::string& binarize = "") {
  torch::manual_seed(7);
  Config cfg = Config::from_string("Arch: " + arch_yaml + "\n", name + ".yaml");
  InferenceModel m{cfg};
  m.model = RecModel(cfg["Arch"], shape);
  randomize_batch_norms(*m.model);
  m.model->eval();
  m.feature_normalize = normalize;
  m.feature_binarize = binarize;
  const auto x = torch::rand({5, shape[0], shape[1], shape[2]});
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = m.outputs(x);
  }
  const auto dir = temp_dir(name);
  ParityResult r;
  r.info = export_onnx(m, shape, dir.string());
  const auto model = read_onnx(dir / "model.onnx");
  EXPECT_NO_THROW(deploy::check_onnx(model));
  // The batch is symbolic in the input and the output; no Identity node (OpenCV rejects them on initializers).
  EXPECT_EQ(model.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "N");
  EXPECT_EQ(model.graph().output(0).type().tensor_type().shape().dim(0).dim_param(), "N");
  EXPECT_EQ(model.opset_import(0).version(), 11);
  EXPECT_EQ(count_ops(model, "Identity"), 0);
  const auto got = run_opencv(dir / "model.onnx", x);
  EXPECT_EQ(got.sizes(), expected.sizes()) << name;
  if (got.sizes() == expected.sizes()) r.max_diff = (got - expected).abs().max().item<double>();
  else r.max_diff = 1e9;
  std::cout << "[ ONNX     ] " << name << ": OpenCV vs model max abs diff " << r.max_diff << " (batch 5, traced 2; "
            << r.info.folded_batch_norms << " BatchNorm folded, " << r.info.reparameterized_blocks
            << " blocks re-parameterized, output [N, " << r.info.output_dim << "])\n";
  fs::remove_all(dir);
  return r;
}

}  // namespace

TEST(OnnxExport, ResNet18FcParityInOpenCV) {
  const auto r = onnx_parity("resnet18_fc",
                             "{name: RecModel, Backbone: {name: ResNet18, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 512, class_num: 64}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
  EXPECT_EQ(r.info.folded_batch_norms, 20);  // every BatchNorm of ResNet18 follows a convolution
  EXPECT_EQ(r.info.output_dim, 64);
}

TEST(OnnxExport, ResNet50VehicleNeckParityInOpenCV) {
  const auto r = onnx_parity("resnet50_vehicle",
                             "{name: RecModel, Backbone: {name: ResNet50, pretrained: False}, "
                             "BackboneStopLayer: {name: avg_pool}, "
                             "Neck: {name: VehicleNeck, in_channels: 2048, out_channels: 32}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
  EXPECT_EQ(r.info.output_dim, 32);
}

TEST(OnnxExport, ResNet50VdBnNeckParityInOpenCV) {
  // ResNet_vd's shortcut AvgPool2d (ceil_mode) and BNNeck's BatchNorm1d (not after a convolution: an ONNX
  // BatchNormalization on [N, C]).
  const auto r = onnx_parity("resnet50vd_bnneck",
                             "{name: RecModel, Backbone: {name: ResNet50_vd, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: BNNeck, num_features: 2048}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
  EXPECT_EQ(r.info.output_dim, 2048);
}

TEST(OnnxExport, MobileNetV3LargeFcParityInOpenCV) {
  const auto r = onnx_parity("mv3_fc",
                             "{name: RecModel, Backbone: {name: MobileNetV3_large_x1_0, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 1280, class_num: 32}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
}

TEST(OnnxExport, TorchvisionMobileNetV3LargeFcParityInOpenCV) {
  const auto r = onnx_parity("tv_mv3_fc",
                             "{name: RecModel, Backbone: {name: TorchvisionMobileNetV3_large_x1_0, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 960, class_num: 32}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
}

TEST(OnnxExport, PPLCNetX25FcParityInOpenCV) {
  const auto r = onnx_parity("pplcnet_fc",
                             "{name: RecModel, Backbone: {name: PPLCNet_x2_5, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 1280, class_num: 32}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
}

TEST(OnnxExport, PPLCNetV2BaseBnNeckReparameterizedParityInOpenCV) {
  // The RepDepthwiseSeparable branches are fused before tracing (as PaddleClas's export); the reference is the
  // model before fusing.
  const auto r = onnx_parity("pplcnetv2_bnneck",
                             "{name: RecModel, Backbone: {name: PPLCNetV2_base, pretrained: False}, "
                             "BackboneStopLayer: {name: flatten}, Neck: {name: BNNeck, num_features: 1280}}",
                             {3, 64, 64});
  EXPECT_LE(r.max_diff, 1e-4);
  EXPECT_GT(r.info.reparameterized_blocks, 0);
}

TEST(OnnxExport, UnsupportedOperationNamesOpAndModule) {
  // cumsum has no ONNX form here: the error names it and the module whose parameters feed it.
  struct Net : torch::nn::Module {
    torch::nn::Conv2d conv{nullptr};
    Net() { conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3))); }
    torch::Tensor forward(const torch::Tensor& x) { return torch::cumsum(conv->forward(x), 1).flatten(1); }
  } net;
  const auto x = torch::rand({2, 3, 8, 8});
  auto graph = deploy::trace_frozen([&](const torch::Tensor& t) { return net.forward(t); }, net, x);
  const auto msg = error_of([&] { deploy::graph_to_onnx(*graph); });
  EXPECT_NE(msg.find("aten::cumsum"), std::string::npos) << msg;
  EXPECT_NE(msg.find("module 'conv'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--no-onnx"), std::string::npos) << msg;
}

TEST(OnnxExport, ClipVitIsRefusedWithItsModule) {
  Config cfg = Config::from_string(
      "Arch: {name: RecModel, Backbone: {name: CLIP_vit_base_patch32_224, pretrained: False}}\n", "clip.yaml");
  InferenceModel m{cfg};
  m.model = RecModel(cfg["Arch"], std::vector<int64_t>{3, 64, 64});
  m.model->eval();
  const auto dir = temp_dir("clip");
  const auto msg = error_of([&] { export_onnx(m, {3, 64, 64}, dir.string()); });
  EXPECT_NE(msg.find("ONNX export: aten::"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(module 'backbone."), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "model.onnx"));
  fs::remove_all(dir);
}

TEST(OnnxExport, BatchNormFoldingKeepsOutputs) {
  torch::manual_seed(3);
  Config cfg = Config::from_string(
      "Arch: {name: RecModel, Backbone: {name: ResNet18, pretrained: False}, BackboneStopLayer: {name: flatten}}\n",
      "r18.yaml");
  RecModel model(cfg["Arch"], std::vector<int64_t>{3, 32, 32});
  randomize_batch_norms(*model);
  model->eval();
  auto fn = [&](const torch::Tensor& x) { return model->forward(x).get("features"); };
  const auto x = torch::rand({3, 3, 32, 32});
  auto graph = deploy::trace_frozen(fn, *model, x.slice(0, 0, 2));
  auto count = [&](const char* kind) {
    int64_t n = 0;
    for (const auto* node : graph->nodes()) n += node->kind() == c10::Symbol::fromQualString(kind);
    return n;
  };
  EXPECT_EQ(count("aten::batch_norm"), 20);
  const deploy::GraphRunner unfolded(graph->copy());
  EXPECT_EQ(deploy::fold_batch_norms(graph), 20);
  EXPECT_EQ(count("aten::batch_norm"), 0);
  torch::NoGradGuard no_grad;
  const auto eager = fn(x);
  const auto folded = deploy::GraphRunner(graph)(x);
  EXPECT_LT((eager - unfolded(x)).abs().max().item<double>(), 1e-5);
  EXPECT_LT((eager - folded).abs().max().item<double>(), 1e-4);
  EXPECT_GT((eager - fn(x * 0.5)).abs().max().item<double>(), 1e-3) << "the comparison would be vacuous";
  // The folded convolutions keep their parameters' names (error messages name modules by them).
  bool named = false;
  for (const auto* node : graph->nodes())
    if (node->kind() == c10::Symbol::aten("_convolution"))
      named |= node->input(1)->hasDebugName() && node->input(1)->debugNameBase() == "backbone.conv1.weight";
  EXPECT_TRUE(named);
}

TEST(OnnxExport, ExportCommandWritesOnnxAndInferenceKeys) {
  const auto dir = temp_dir("cmd");
  const std::string arch =
      "  name: RecModel\n"
      "  infer_output_key: features\n"
      "  infer_add_softmax: False\n"
      "  Backbone: {name: ResNet18, pretrained: False}\n"
      "  BackboneStopLayer: {name: avg_pool}\n"
      "  Neck: {name: VehicleNeck, in_channels: 512, out_channels: 16}\n"
      "  Head: {name: ArcMargin, embedding_size: 16, class_num: 6, margin: 0.15, scale: 16}\n";
  {
    torch::manual_seed(5);
    Config c = Config::from_string("Arch:\n" + arch, "a.yaml");
    RecModel trained(c["Arch"], std::vector<int64_t>{3, 32, 32});
    randomize_batch_norms(*trained);
    save_checkpoint((dir / "trained").string(), *trained, nullptr, nullptr, CheckpointMeta{});
  }
  const std::string yaml = "Global:\n  device: cpu\n  image_shape: [3, 32, 32]\n  save_inference_dir: \"" +
                           (dir / "inference").string() + "\"\n  pretrained_model: \"" + (dir / "trained").string() +
                           "\"\nArch:\n" + arch +
                           "DataLoader:\n  Eval:\n    Query:\n      dataset:\n        name: VeriWild\n"
                           "        image_root: .\n        cls_label_path: q.txt\n        transform_ops:\n"
                           "          - ResizeImage: {size: 32}\n"
                           "          - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], "
                           "std: [0.229, 0.224, 0.225], order: ''}\n";
  const auto cfg_path = dir / "cfg.yaml";
  { std::ofstream(cfg_path) << yaml; }
  ASSERT_EQ(cmd_export(ConfigArgs{cfg_path.string(), {}}), 0);
  const auto out = dir / "inference";
  ASSERT_TRUE(fs::exists(out / "model.onnx"));
  const auto spec = Config::load((out / "inference.yaml").string());
  EXPECT_EQ(spec["format_version"].as<int64_t>(), kInferenceFormatVersion);
  EXPECT_EQ(spec["onnx"].as<std::string>(), "model.onnx");
  EXPECT_EQ(spec["onnx_opset"].as<int64_t>(), 11);
  EXPECT_EQ(spec["onnx_input"].as<std::string>(), "images");
  EXPECT_EQ(spec["onnx_output"].as<std::string>(), "features");
  EXPECT_EQ(spec["onnx_input_shape"].at(0).as<std::string>(), "N");
  EXPECT_EQ(spec["onnx_input_shape"].at(3).as<int64_t>(), 32);
  EXPECT_EQ(spec["onnx_output_shape"].at(1).as<int64_t>(), 16);
  // The ONNX model computes what featlearn extract computes.
  auto m = InferenceModel::load(out.string());
  torch::manual_seed(1);
  const auto x = torch::rand({4, 3, 32, 32});
  const auto diff = (run_opencv(out / "model.onnx", x) - m.embed(x)).abs().max().item<double>();
  std::cout << "[ ONNX     ] featlearn export (ResNet18 + VehicleNeck): OpenCV vs extract max abs diff " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
  // --no-onnx writes no model.onnx (and removes the earlier one) and no ONNX keys.
  ASSERT_EQ(cmd_export(ConfigArgs{cfg_path.string(), {}}, /*write_onnx=*/false), 0);
  EXPECT_FALSE(fs::exists(out / "model.onnx"));
  EXPECT_FALSE(Config::load((out / "inference.yaml").string()).root().has("onnx"));
  EXPECT_NO_THROW(InferenceModel::load(out.string()));
  fs::remove_all(dir);
}

namespace {
// A graph of `fn` over a conv (so every op has a module) to ONNX, run in OpenCV on batch 3: max abs diff.
double small_graph_diff(const std::function<torch::Tensor(const torch::Tensor&)>& fn, torch::nn::Module& module,
                        const std::string& name) {
  torch::manual_seed(2);
  const auto x = torch::randn({3, 4, 8, 8});
  auto graph = deploy::trace_frozen(fn, module, x.slice(0, 0, 2));
  deploy::fold_batch_norms(graph);
  const auto model = deploy::graph_to_onnx(*graph);
  deploy::check_onnx(model);
  const auto dir = temp_dir(name);
  deploy::save_onnx(model, (dir / "model.onnx").string());
  torch::NoGradGuard no_grad;
  const auto expected = fn(x);
  torch::Tensor got;
  try {
    got = run_opencv(dir / "model.onnx", x);
  } catch (const cv::Exception& e) {
    ADD_FAILURE() << name << ": OpenCV: " << e.what();
    return 1e9;
  }
  fs::remove_all(dir);
  EXPECT_EQ(got.sizes(), expected.sizes()) << name;
  return got.sizes() == expected.sizes() ? (got - expected).abs().max().item<double>() : 1e9;
}
struct ConvNet : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr}, conv2{nullptr};
  ConvNet() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).padding(1)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 1)));
  }
};
}  // namespace

TEST(OnnxExport, ActivationsAndGatesParityInOpenCV) {
  ConvNet net;
  auto c = [&](const torch::Tensor& x) { return net.conv->forward(x); };
  EXPECT_LE(small_graph_diff([&](const torch::Tensor& x) { return torch::hardswish(c(x)).flatten(1); }, net, "hswish"), 1e-5);
  EXPECT_LE(small_graph_diff([&](const torch::Tensor& x) { return torch::hardsigmoid(c(x)).flatten(1); }, net, "hsig"), 1e-5);
  EXPECT_LE(small_graph_diff([&](const torch::Tensor& x) { return torch::clamp(c(x) * 0.2 + 0.5, 0, 1).flatten(1); }, net,
                             "clamp01"), 1e-5);
  EXPECT_LE(small_graph_diff([&](const torch::Tensor& x) { return torch::relu6(c(x)).flatten(1); }, net, "relu6"), 1e-5);
  // SE gate: [N, C, H, W] · [N, C, 1, 1]
  EXPECT_LE(small_graph_diff(
                [&](const torch::Tensor& x) {
                  auto y = c(x);
                  auto s = torch::sigmoid(net.conv2->forward(torch::adaptive_avg_pool2d(y, {1, 1})));
                  return (y * s).flatten(1);
                },
                net, "se"),
            1e-5);
}
