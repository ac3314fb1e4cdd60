// MobileNetV1, VGG (VGG19Sigmoid), ResNet50_adaptive_max_pool2d and the AdaFace IR nets (mobilenet_v1.h, vgg.h,
// resnet.h, adaface_ir.h): parameter counts against PaddleClas's published numbers or an independent count from
// PaddleClas's layer definitions, PaddleClas parameter names, output shapes, layer semantics, BackboneStopLayer,
// the backbones of the four configs that use them, config errors.
#include <featlearn/model/adaface_ir.h>
#include <featlearn/model/mobilenet_v1.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/model/resnet.h>
#include <featlearn/model/stop_layer.h>
#include <featlearn/model/vgg.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <tuple>
#include <string>
#include <vector>

using namespace featlearn;
namespace nn = torch::nn;

using featlearn::test::error_of;
using featlearn::test::output_shape;

namespace {

using Shape = std::vector<int64_t>;

// Arch.Backbone (+ BackboneStopLayer) from YAML, seeded, in eval mode (backbone_test_util.h).
BackbonePtr mb_build(const std::string& backbone_yaml, const std::string& stop = "", uint64_t seed = 0) {
  return featlearn::test::backbone_from_yaml(backbone_yaml, stop, seed);
}

torch::Tensor mb_run(const BackbonePtr& bb, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return bb->forward(x);
}

int64_t mb_count(const BackbonePtr& bb, bool trainable_only = false) {
  int64_t n = 0;
  for (const auto& p : bb->named_parameters(true))
    if (!trainable_only || p.value().requires_grad()) n += p.value().numel();
  return n;
}

// BatchNorm moving means and variances (Paddle keeps them as parameters, so its summaries count them).
int64_t mb_bn_stats(const BackbonePtr& bb) {
  int64_t n = 0;
  for (const auto& b : bb->named_buffers(true)) {
    const auto& k = b.key();
    if (k.size() > 12 && (k.rfind("running_mean") == k.size() - 12 || k.rfind("running_var") == k.size() - 11))
      n += b.value().numel();
  }
  return n;
}

Shape mb_param_shape(const BackbonePtr& bb, const std::string& name) {
  const auto params = bb->named_parameters(true);
  if (!params.contains(name)) return {-1};
  return params[name].sizes().vec();
}

std::vector<std::string> mb_top(const BackbonePtr& bb) {
  std::vector<std::string> top;
  for (const auto& c : bb->named_children()) top.push_back(c.key());
  return top;
}

std::string mb_type(const BackbonePtr& bb, const std::string& path) {
  const auto mods = bb->named_modules();
  return mods.contains(path) ? mods[path]->name() : "(absent)";
}

// Output shape of every top-level child for one [1, 3, hw, hw] input.
std::map<std::string, Shape> mb_stage_shapes(const BackbonePtr& bb, int64_t hw) {
  torch::NoGradGuard ng;
  std::map<std::string, Shape> out;
  auto* s = dynamic_cast<StoppableBackboneImpl*>(bb.get());
  EXPECT_NE(s, nullptr);
  s->forward_observed(torch::randn({1, 3, hw, hw}),
                      [&](const std::string& name, const torch::Tensor& y) { out[name] = y.sizes().vec(); });
  return out;
}

double mb_max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// Random BN statistics and affine parameters, so that BatchNorm is not the identity in eval.
void mb_randomize_bn(nn::Module& m) {
  torch::NoGradGuard ng;
  for (auto& mod : m.modules())
    if (auto* bn = mod->as<nn::BatchNorm2d>()) {
      bn->running_mean.normal_(0, 0.2);
      bn->running_var.uniform_(0.5, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.2);
    }
}

// Loads configs/<rel> with Arch.Backbone.pretrained=False where the config has the key (no weight files in
// tests) and builds its backbone (with its stop layer) for Global.image_shape.
BackbonePtr mb_config_backbone(const std::string& rel, Shape& image_shape, uint64_t seed = 0) {
  auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + rel);
  if (cfg["Arch"]["Backbone"].has("pretrained")) cfg.apply_override("Arch.Backbone.pretrained=False");
  image_shape = cfg["Global"]["image_shape"].as<std::vector<int64_t>>();
  torch::manual_seed(seed);
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"], image_shape);
  bb->eval();
  return bb;
}

}  // namespace

// ---- MobileNetV1 ------------------------------------------------------------------------------------------

namespace {

struct MbV1Scale {
  const char* name;
  int64_t width;        // conv output (int(32·scale)); the last block gives 32x that
  int64_t params;       // trainable parameters at class_num 1000
  double published_m;   // PaddleClas's published Params(M)
};

// Published Params(M): PaddleClas's ImageNet-1k model list (its model documentation, mobile-series table;
// repeated in docs/config.md, "Arch.Backbone"). Those numbers count Paddle's parameters, which include every
// BatchNorm's moving mean and variance: trainable + BN statistics = 475,544 / 1,342,536 / 2,601,976 / 4,253,864.
// The exact trainable counts are the layer-by-layer sums of PaddleClas's cfg (convolutions without bias, BN
// weight + bias, fc with bias). (PaddleClas's MobileNetV1 model page lists older values, 0.46 / 1.31 / 2.55 /
// 4.19, which match neither count.)
const std::vector<MbV1Scale> kMbV1 = {{"MobileNetV1_x0_25", 8, 470072, 0.48},
                                      {"MobileNetV1_x0_5", 16, 1331592, 1.34},
                                      {"MobileNetV1_x0_75", 24, 2585560, 2.60},
                                      {"MobileNetV1", 32, 4231976, 4.25}};

}  // namespace

TEST(MobileNetV1, ParameterCountsMatchPaddleClas) {
  for (const auto& s : kMbV1) {
    SCOPED_TRACE(s.name);
    auto bb = mb_build(std::string("{name: ") + s.name + "}");
    EXPECT_EQ(mb_count(bb), s.params);
    EXPECT_EQ(mb_count(bb, true), s.params);
    const int64_t paddle_count = s.params + mb_bn_stats(bb);
    EXPECT_NEAR(paddle_count / 1e6, s.published_m, 0.005);  // equal at the published 0.01M precision
    EXPECT_GT(std::abs(s.params / 1e6 - s.published_m), 0.002);  // the trainable count alone is not it
    EXPECT_EQ(mb_param_shape(bb, "fc.weight"), (Shape{1000, 32 * s.width}));
  }
}

TEST(MobileNetV1, StageShapesAt224) {
  auto bb = mb_build("{name: MobileNetV1}");
  const auto shapes = mb_stage_shapes(bb, 224);
  EXPECT_EQ(shapes.at("conv"), (Shape{1, 32, 112, 112}));
  EXPECT_EQ(shapes.at("blocks"), (Shape{1, 1024, 7, 7}));
  EXPECT_EQ(shapes.at("avg_pool"), (Shape{1, 1024, 1, 1}));
  EXPECT_EQ(shapes.at("flatten"), (Shape{1, 1024}));
  EXPECT_EQ(shapes.at("fc"), (Shape{1, 1000}));
  // PaddleClas's stages_pattern blocks[0], blocks[2], blocks[4], blocks[10], here at scale 0.25.
  const std::vector<std::pair<std::string, Shape>> stages = {{"blocks[0]", {1, 16, 112, 112}},
                                                             {"blocks[2]", {1, 32, 56, 56}},
                                                             {"blocks[4]", {1, 64, 28, 28}},
                                                             {"blocks[10]", {1, 128, 14, 14}},
                                                             {"blocks[12]", {1, 256, 7, 7}}};
  for (const auto& [stop, shape] : stages) EXPECT_EQ(output_shape(mb_build("{name: MobileNetV1_x0_25}", stop), 224), shape) << stop;
}

TEST(MobileNetV1, PaddleClasParameterNamesAndInit) {
  auto bb = mb_build("{name: MobileNetV1, class_num: 101}");
  EXPECT_EQ(mb_param_shape(bb, "conv.conv.weight"), (Shape{32, 3, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv.conv.bias"), (Shape{-1}));  // bias_attr=False
  EXPECT_EQ(mb_param_shape(bb, "conv.bn.weight"), (Shape{32}));
  EXPECT_TRUE(bb->named_buffers(true).contains("conv.bn.running_var"));
  EXPECT_EQ(mb_param_shape(bb, "blocks.0.depthwise_conv.conv.weight"), (Shape{32, 1, 3, 3}));  // groups = channels
  EXPECT_EQ(mb_param_shape(bb, "blocks.0.pointwise_conv.conv.weight"), (Shape{64, 32, 1, 1}));
  EXPECT_EQ(mb_param_shape(bb, "blocks.11.depthwise_conv.conv.weight"), (Shape{512, 1, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "blocks.12.pointwise_conv.bn.bias"), (Shape{1024}));
  EXPECT_EQ(mb_param_shape(bb, "blocks.12.pointwise_conv.conv.weight"), (Shape{1024, 1024, 1, 1}));
  EXPECT_EQ(mb_param_shape(bb, "blocks.13.depthwise_conv.conv.weight"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(bb, "fc.weight"), (Shape{101, 1024}));
  EXPECT_EQ(mb_param_shape(bb, "fc.bias"), (Shape{101}));
  EXPECT_EQ(mb_top(bb), (std::vector<std::string>{"conv", "blocks", "avg_pool", "flatten", "fc"}));
  // featlearn's BatchNorm2d: LibTorch's plus SyncBN (model/batch_norm.h), same parameters and buffers.
  EXPECT_EQ(mb_type(bb, "conv.bn"), "featlearn::BatchNorm2dImpl");
  EXPECT_EQ(mb_param_shape(mb_build("{name: MobileNetV1_x0_75}"), "blocks.12.pointwise_conv.conv.weight"),
            (Shape{768, 768, 1, 1}));
  // KaimingNormal for fc (std sqrt(2 / 1024) = 0.0442; Paddle's Linear default, Xavier, would give 0.0314).
  const auto params = bb->named_parameters(true);
  EXPECT_NEAR(params["fc.weight"].std().item<double>(), std::sqrt(2.0 / 1024), 0.003);
  EXPECT_EQ(params["fc.bias"].abs().sum().item<double>(), 0.0);
  EXPECT_NEAR(params["blocks.12.pointwise_conv.conv.weight"].std().item<double>(), std::sqrt(2.0 / 1024), 0.001);
}

TEST(MobileNetV1, ConvBNLayerSemantics) {
  // conv.bn in eval: (conv(x) - mean) / sqrt(var + 1e-5) · weight + bias (Paddle's epsilon); conv.relu clamps.
  auto at_conv = mb_build("{name: MobileNetV1_x0_25}", "conv.conv", 5);
  auto at_bn = mb_build("{name: MobileNetV1_x0_25}", "conv.bn", 5);
  auto at_relu = mb_build("{name: MobileNetV1_x0_25}", "conv", 5);
  torch::manual_seed(6);
  mb_randomize_bn(*at_bn);
  torch::manual_seed(6);
  mb_randomize_bn(*at_relu);
  auto* bn = at_bn->named_modules()["conv.bn"]->as<nn::BatchNorm2d>();
  ASSERT_NE(bn, nullptr);
  const auto x = torch::randn({2, 3, 32, 32});
  const auto v = [](const torch::Tensor& t) { return t.view({1, -1, 1, 1}); };
  const auto want =
      (mb_run(at_conv, x) - v(bn->running_mean)) / torch::sqrt(v(bn->running_var) + 1e-5) * v(bn->weight) + v(bn->bias);
  const auto got = mb_run(at_bn, x);
  EXPECT_EQ(got.sizes().vec(), (Shape{2, 8, 16, 16}));
  EXPECT_LE(mb_max_diff(got, want.detach()), 1e-5);
  EXPECT_LT(got.min().item<double>(), 0.0);
  EXPECT_LE(mb_max_diff(mb_run(at_relu, x), torch::relu(got)), 1e-6);
}

TEST(MobileNetV1, BackboneStopLayer) {
  auto flat = mb_build("{name: MobileNetV1}", "flatten");
  EXPECT_EQ(output_shape(flat, 224), (Shape{1, 1024}));
  EXPECT_FALSE(flat->named_parameters(true).contains("fc.weight"));
  EXPECT_TRUE(flat->named_parameters(true).contains("blocks.12.pointwise_conv.conv.weight"));
  EXPECT_EQ(output_shape(mb_build("{name: MobileNetV1_x0_5}", "blocks[5].depthwise_conv"), 64), (Shape{1, 128, 4, 4}));
  // Paddle full names, counted per Paddle class in PaddleClas's sublayer order.
  auto bb = mb_build("{name: MobileNetV1_x0_25}");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_bn_layer_0"), "conv");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_bn_layer_1"), "blocks.0.depthwise_conv");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_bn_layer_26"), "blocks.12.pointwise_conv");
  EXPECT_EQ(resolve_stop_layer(*bb, "depthwise_separable_12"), "blocks.12");
  EXPECT_EQ(resolve_stop_layer(*bb, "batch_norm2d_0"), "conv.bn");
  EXPECT_EQ(resolve_stop_layer(*bb, "batch_norm2d_2"), "blocks.0.pointwise_conv.bn");
  EXPECT_EQ(resolve_stop_layer(*bb, "re_lu_0"), "conv.relu");
  EXPECT_EQ(resolve_stop_layer(*bb, "adaptive_avg_pool2d_0"), "avg_pool");
  EXPECT_EQ(resolve_stop_layer(*bb, "flatten_0"), "flatten");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_0"), "fc");
  EXPECT_EQ(resolve_stop_layer(*bb, "blocks[10]"), "blocks.10");
  const std::string msg = error_of([] { mb_build("{name: MobileNetV1_x0_25}", "flaten"); });
  EXPECT_NE(msg.find("did you mean flatten"), std::string::npos) << msg;
}

TEST(MobileNetV1, ConfigErrors) {
  std::string msg = error_of([] { mb_build("{name: MobileNetV1, pretrained: True}"); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MobileNetV1_pretrained.pdparams"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1_x0_5, pretrained: True, use_ssld: True}"); });
  EXPECT_NE(msg.find("MobileNetV1_x0_5_ssld_pretrained.pdparams"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1, scale: 0.5}"); });  // fixed by the factory in PaddleClas
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scale"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1, clas_num: 3}"); });
  EXPECT_NE(msg.find("did you mean class_num"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1, class_num: 0}"); });
  EXPECT_NE(msg.find("must be positive"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1, return_stages: [1]}"); });
  EXPECT_NE(msg.find("BackboneStopLayer"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: MobileNetV1_x1_0}"); });
  EXPECT_NE(msg.find("unknown Arch.Backbone 'MobileNetV1_x1_0'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MobileNetV1_x0_75"), std::string::npos) << msg;
}

// ---- VGG ----------------------------------------------------------------------------------------------------

// Published Params(M): PaddleClas's ImageNet-1k model list (its model documentation, "other models" table;
// repeated in docs/config.md, "Arch.Backbone"): VGG11 132.86, VGG13 133.05, VGG16 138.35, VGG19 143.66. The exact
// counts are the layer-by-layer sums of PaddleClas's VGGNet: 3x3 convs without bias (bias_attr=False; with
// biases VGG19 would be 143.67M), fc1..fc3 with bias. VGG13's published 133.05 is 0.005M above its count
// (133,044,904), the only one not equal at the published precision. (Each full VGG takes about 2 s to build on
// 2 cores, so the tests build few.)
TEST(VGG, VGG19ParameterCountsAndNames) {
  auto bb = mb_build("{name: VGG19}");
  EXPECT_EQ(mb_count(bb), 143661736);
  EXPECT_NEAR(mb_count(bb) / 1e6, 143.66, 0.005);
  EXPECT_EQ(mb_top(bb), (std::vector<std::string>{"conv_block_1", "conv_block_2", "conv_block_3", "conv_block_4",
                                                  "conv_block_5", "relu", "flatten", "drop", "fc1", "fc2", "fc3"}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_1.conv1.weight"), (Shape{64, 3, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_1.conv1.bias"), (Shape{-1}));  // bias_attr=False
  EXPECT_EQ(mb_param_shape(bb, "conv_block_1.conv2.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_3.conv4.weight"), (Shape{256, 256, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_5.conv4.weight"), (Shape{512, 512, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_5.conv5.weight"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(bb, "fc1.weight"), (Shape{4096, 25088}));
  EXPECT_EQ(mb_param_shape(bb, "fc1.bias"), (Shape{4096}));
  EXPECT_EQ(mb_param_shape(bb, "fc2.weight"), (Shape{4096, 4096}));
  EXPECT_EQ(mb_param_shape(bb, "fc3.weight"), (Shape{1000, 4096}));
  EXPECT_EQ(mb_type(bb, "drop"), "featlearn::paddle_nn::DropoutImpl");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv2d_15"), "conv_block_5.conv4");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_1"), "fc2");
  // Paddle's default initialization: Linear Xavier uniform (std sqrt(2 / (fan_in + fan_out))), bias 0.
  const auto params = bb->named_parameters(true);
  EXPECT_NEAR(params["fc1.weight"].std().item<double>(), std::sqrt(2.0 / (25088 + 4096)), 1e-4);
  EXPECT_EQ(params["fc1.bias"].abs().sum().item<double>(), 0.0);
}

TEST(VGG, VGG13AndVGG16ParameterCounts) {
  const std::vector<std::tuple<const char*, int64_t, double, double>> counts = {
      {"{name: VGG13}", 133044904, 133.05, 0.0055}, {"{name: VGG16}", 138353320, 138.35, 0.005}};
  for (const auto& [yaml, params, published_m, tolerance_m] : counts) {
    SCOPED_TRACE(yaml);
    const int64_t n = mb_count(mb_build(yaml));
    EXPECT_EQ(n, params);
    EXPECT_NEAR(n / 1e6, published_m, tolerance_m);
  }
}

TEST(VGG, VGG11CountsNamesAndInputSize) {
  auto bb = mb_build("{name: VGG11}");
  EXPECT_EQ(mb_count(bb), 132860584);
  EXPECT_NEAR(mb_count(bb) / 1e6, 132.86, 0.005);
  EXPECT_EQ(mb_param_shape(bb, "conv_block_1.conv2.weight"), (Shape{-1}));  // 1 conv in VGG11's first block
  EXPECT_EQ(mb_param_shape(bb, "conv_block_3.conv2.weight"), (Shape{256, 256, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "conv_block_3.conv3.weight"), (Shape{-1}));
  // The full model needs 224x224 (fc1 reads 7x7x512).
  std::string msg = error_of([&] { mb_run(bb, torch::randn({1, 3, 64, 64})); });
  EXPECT_NE(msg.find("224x224"), std::string::npos) << msg;
  EXPECT_NE(msg.find("VGG11"), std::string::npos) << msg;
  // The shared relu / drop and the blocks' relus are not stop layers; Paddle full names resolve.
  for (const char* name : {"relu", "drop", "conv_block_1.relu", "dropout_0", "re_lu_5"}) {
    msg = error_of([&] { resolve_stop_layer(*bb, name); });
    EXPECT_NE(msg.find("called several times"), std::string::npos) << name << ": " << msg;
  }
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_block_0"), "conv_block_1");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv2d_7"), "conv_block_5.conv2");
  EXPECT_EQ(resolve_stop_layer(*bb, "max_pool2d_4"), "conv_block_5.max_pool");
  EXPECT_EQ(resolve_stop_layer(*bb, "flatten_0"), "flatten");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_2"), "fc3");
}

TEST(VGG, DeepHashConfigSigmoidOnFc2) {
  // VGG19_CIFAR10_DeepHash.yaml: VGG19Sigmoid, class_num 48, no stop layer: [N, 48] at its 224x224 image_shape.
  // forward = fc3(drop(relu(sigmoid(fc2(drop(relu(fc1(flatten(blocks(x)))))))))), eval drop = x 0.5.
  Shape image_shape;
  auto full = mb_config_backbone("quick_start/professional/VGG19_CIFAR10_DeepHash.yaml", image_shape, 3);
  ASSERT_EQ(image_shape, (Shape{3, 224, 224}));
  auto* s = dynamic_cast<StoppableBackboneImpl*>(full.get());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->config_name, "VGG19Sigmoid");
  EXPECT_TRUE(s->stop_path().empty());
  // fc2 wrapped as SigmoidSuffix; the parameters are VGG19's with a 48-wide fc3.
  EXPECT_EQ(mb_count(full), 143661736 - 4096 * (1000 - 48) - (1000 - 48));
  EXPECT_EQ(mb_param_shape(full, "fc2.origin_layer.weight"), (Shape{4096, 4096}));
  EXPECT_EQ(mb_param_shape(full, "fc2.origin_layer.bias"), (Shape{4096}));
  EXPECT_EQ(mb_param_shape(full, "fc2.weight"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(full, "fc3.weight"), (Shape{48, 4096}));
  EXPECT_EQ(mb_type(full, "fc2.sigmoid"), "featlearn::paddle_nn::SigmoidImpl");
  EXPECT_EQ(resolve_stop_layer(*full, "sigmoid_suffix_0"), "fc2");
  EXPECT_EQ(resolve_stop_layer(*full, "linear_1"), "fc2.origin_layer");
  EXPECT_EQ(resolve_stop_layer(*full, "sigmoid_0"), "fc2.sigmoid");
  torch::manual_seed(4);
  const auto x = torch::randn({1, 3, 224, 224});
  const auto out = mb_run(full, x);
  EXPECT_EQ(out.sizes().vec(), (Shape{1, 48}));
  // The same computation from the model's layers.
  auto mods = full->named_modules();
  auto* fc1 = mods["fc1"]->as<nn::Linear>();
  auto* fc2 = mods["fc2.origin_layer"]->as<nn::Linear>();
  auto* fc3 = mods["fc3"]->as<nn::Linear>();
  ASSERT_TRUE(fc1 && fc2 && fc3);
  torch::NoGradGuard ng;
  StopCursor no_stop;
  torch::Tensor f = x;
  for (int b = 1; b <= 5; ++b) {
    const std::string name = "conv_block_" + std::to_string(b);
    f = run_module(*mods[name], f, no_stop, name);
  }
  f = f.flatten(1);
  EXPECT_EQ(f.sizes().vec(), (Shape{1, 25088}));
  const auto h = torch::relu(fc1->forward(f)) * 0.5;
  const auto z = torch::sigmoid(fc2->forward(h));
  const auto want = fc3->forward(torch::relu(z) * 0.5);
  EXPECT_LE(mb_max_diff(out, want), 1e-4 * want.abs().max().item<double>());
  // Without the sigmoid (plain VGG19) the output differs.
  const auto plain = fc3->forward(torch::relu(fc2->forward(h)) * 0.5);
  EXPECT_GT(mb_max_diff(plain, want), 1e-3 * want.abs().max().item<double>());
}

TEST(VGG, BlocksAndStopLayers) {
  // A stop at a block's max_pool removes the block's relu (registered last) as PaddleClas's Identity does:
  // conv_block_2 then computes max_pool(conv2(conv1(x))) without activations.
  auto at_pool = mb_build("{name: VGG13}", "conv_block_2.max_pool", 8);
  EXPECT_FALSE(at_pool->named_parameters(true).contains("conv_block_3.conv1.weight"));
  EXPECT_FALSE(at_pool->named_parameters(true).contains("fc1.weight"));
  auto mods = at_pool->named_modules();
  const auto conv = [&](const std::string& path, const torch::Tensor& t) {
    return mods[path]->as<nn::Conv2d>()->forward(t);
  };
  const auto x = torch::randn({1, 3, 32, 32});
  const auto pooled = mb_run(at_pool, x);
  torch::NoGradGuard ng;
  const auto block1 = torch::max_pool2d(torch::relu(conv("conv_block_1.conv2", torch::relu(conv("conv_block_1.conv1", x)))),
                                        {2, 2}, {2, 2});
  const auto c1 = conv("conv_block_2.conv1", block1);
  EXPECT_EQ(pooled.sizes().vec(), (Shape{1, 128, 8, 8}));
  EXPECT_LE(mb_max_diff(pooled, torch::max_pool2d(conv("conv_block_2.conv2", c1), {2, 2}, {2, 2})), 1e-5);
  EXPECT_LT(pooled.min().item<double>(), 0.0);
  const auto with_relu = torch::max_pool2d(torch::relu(conv("conv_block_2.conv2", torch::relu(c1))), {2, 2}, {2, 2});
  EXPECT_GT(mb_max_diff(pooled, with_relu), 1e-3);
  // Block outputs (relus and max pool applied) at small inputs; the truncated model has no fc layers.
  auto block5 = mb_build("{name: VGG11}", "conv_block_5");
  EXPECT_EQ(output_shape(block5, 64), (Shape{1, 512, 2, 2}));
  EXPECT_FALSE(block5->named_parameters(true).contains("fc1.weight"));
  EXPECT_GE(mb_run(block5, torch::randn({1, 3, 64, 64})).min().item<double>(), 0.0);
}

TEST(VGG, StopGradLayersAndConfigErrors) {
  auto bb = mb_build("{name: VGG11, stop_grad_layers: 2}");
  const auto params = bb->named_parameters(true);
  EXPECT_FALSE(params["conv_block_1.conv1.weight"].requires_grad());
  EXPECT_FALSE(params["conv_block_2.conv1.weight"].requires_grad());
  EXPECT_TRUE(params["conv_block_3.conv1.weight"].requires_grad());
  EXPECT_EQ(mb_count(bb, true), 132860584 - 3 * 64 * 9 - 64 * 128 * 9);
  std::string msg = error_of([] { mb_build("{name: VGG19Sigmoid, pretrained: True}"); });
  EXPECT_NE(msg.find("VGG19_pretrained.pdparams"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: VGG19, stop_grad_layers: -1}"); });
  EXPECT_NE(msg.find("stop_grad_layers"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: VGG19Sigmoid, class_nums: 48}"); });
  EXPECT_NE(msg.find("did you mean class_num"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: VGG19Sigmoid, return_patterns: [fc2]}"); });
  EXPECT_NE(msg.find("BackboneStopLayer"), std::string::npos) << msg;
}

// ---- ResNet50_adaptive_max_pool2d ---------------------------------------------------------------------------

TEST(ResNetAdaptiveMaxPool, GlobalMaxPoolInsteadOfAverage) {
  // Same parameters as ResNet50 (PaddleClas publishes 25.56M for ResNet50; the variant only swaps the pooling).
  auto bb = mb_build("{name: ResNet50_adaptive_max_pool2d}");
  EXPECT_EQ(mb_count(bb), 25557032);
  EXPECT_EQ(mb_count(bb), mb_count(mb_build("{name: ResNet50}")));
  EXPECT_EQ(mb_type(bb, "avgpool"), "featlearn::AdaptiveMaxPool2dImpl");
  EXPECT_EQ(resolve_stop_layer(*bb, "avg_pool"), "avgpool");
  EXPECT_EQ(resolve_stop_layer(*bb, "adaptive_max_pool2d_0"), "avgpool");
  EXPECT_EQ(mb_type(mb_build("{name: ResNet50}"), "avgpool"), "torch::nn::AdaptiveAvgPool2dImpl");
  // The pooled features are the spatial maximum of layer4.
  auto pooled = mb_build("{name: ResNet50_adaptive_max_pool2d}", "avg_pool", 2);
  auto layer4 = mb_build("{name: ResNet50_adaptive_max_pool2d}", "layer4", 2);
  const auto x = torch::randn({2, 3, 64, 64});
  const auto p = mb_run(pooled, x), l4 = mb_run(layer4, x);
  EXPECT_EQ(p.sizes().vec(), (Shape{2, 2048, 1, 1}));
  EXPECT_EQ(l4.sizes().vec(), (Shape{2, 2048, 2, 2}));
  EXPECT_TRUE(torch::equal(p, l4.amax({2, 3}, true)));
  EXPECT_GT(mb_max_diff(p, l4.mean({2, 3}, true)), 1e-3);
  EXPECT_EQ(output_shape(mb_build("{name: ResNet50_adaptive_max_pool2d, class_num: 7}"), 64), (Shape{1, 7}));
}

// ---- AdaFace IR -----------------------------------------------------------------------------------------------

// Independent counts from PaddleClas's layer definitions (adaface_ir.h lists them): input_layer 3·64·9 + 2·64 +
// 64; a BasicBlockIR(in, d) 2·in + 9·in·d + 2·d + d + 9·d² + 2·d, plus in·d + 2·d for a conv shortcut; a
// BottleneckIR (r = d/4) 2·in + in·r + 2·r + r + 9·r² + 2·r + r + r·d + 2·d (+ shortcut); SE 2·d·(d/16);
// output_layer 2·C + C·S²·512 + 512 (S = 7 at input_size 112, 14 at 224), plus BatchNorm1d's fixed weight and
// bias (512 + 512, not trainable).
TEST(AdaFaceIR, ParameterCounts) {
  struct IrCount {
    const char* yaml;
    int64_t trainable;
  };
  const std::vector<IrCount> counts = {{"{name: AdaFace_IR_18}", 24020352},
                                       {"{name: AdaFace_IR_18, input_size: [224, 224]}", 62555520},
                                       {"{name: AdaFace_IR_34}", 34134080},
                                       {"{name: AdaFace_IR_50}", 43585600},
                                       {"{name: AdaFace_IR_SE_50}", 43808320},
                                       {"{name: AdaFace_IR_152}", 109636736}};
  for (const auto& c : counts) {
    SCOPED_TRACE(c.yaml);
    auto bb = mb_build(c.yaml);
    EXPECT_EQ(mb_count(bb, true), c.trainable);
    EXPECT_EQ(mb_count(bb), c.trainable + 1024);
  }
}

TEST(AdaFaceIR, ShapesNamesAndStages) {
  auto bb = mb_build("{name: AdaFace_IR_18, input_size: [112, 112]}");
  const auto shapes = mb_stage_shapes(bb, 112);
  EXPECT_EQ(shapes.at("input_layer"), (Shape{1, 64, 112, 112}));
  EXPECT_EQ(shapes.at("body"), (Shape{1, 512, 7, 7}));
  EXPECT_EQ(shapes.at("output_layer"), (Shape{1, 512}));
  EXPECT_EQ(mb_top(bb), (std::vector<std::string>{"input_layer", "body", "output_layer"}));
  EXPECT_EQ(mb_param_shape(bb, "input_layer.0.weight"), (Shape{64, 3, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "input_layer.0.bias"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(bb, "input_layer.2.weight"), (Shape{64}));  // PReLU (Paddle: _weight)
  EXPECT_EQ(mb_type(bb, "input_layer.2"), "torch::nn::PReLUImpl");
  EXPECT_EQ(mb_type(bb, "body.0"), "featlearn::adaface::BasicBlockIRImpl");
  EXPECT_EQ(mb_type(bb, "body.0.shortcut_layer"), "torch::nn::MaxPool2dImpl");  // width stays: MaxPool2D(1, 2)
  EXPECT_EQ(mb_param_shape(bb, "body.0.res_layer.0.weight"), (Shape{64}));
  EXPECT_EQ(mb_param_shape(bb, "body.0.res_layer.1.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "body.0.res_layer.3.weight"), (Shape{64}));
  EXPECT_EQ(mb_param_shape(bb, "body.0.res_layer.4.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(mb_param_shape(bb, "body.2.shortcut_layer.0.weight"), (Shape{128, 64, 1, 1}));
  EXPECT_EQ(mb_param_shape(bb, "body.2.shortcut_layer.1.bias"), (Shape{128}));
  EXPECT_EQ(mb_param_shape(bb, "body.7.res_layer.5.weight"), (Shape{512}));
  EXPECT_EQ(mb_param_shape(bb, "body.8.res_layer.0.weight"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(bb, "output_layer.0.weight"), (Shape{512}));
  EXPECT_EQ(mb_type(bb, "output_layer.1"), "torch::nn::DropoutImpl");
  EXPECT_EQ(mb_param_shape(bb, "output_layer.3.weight"), (Shape{512, 512 * 7 * 7}));
  EXPECT_EQ(mb_param_shape(bb, "output_layer.3.bias"), (Shape{512}));
  const auto params = bb->named_parameters(true);
  EXPECT_FALSE(params["output_layer.4.weight"].requires_grad());  // weight_attr=False: fixed at 1
  EXPECT_FALSE(params["output_layer.4.bias"].requires_grad());
  EXPECT_TRUE(torch::equal(params["output_layer.4.weight"], torch::ones({512})));
  EXPECT_TRUE(bb->named_buffers(true).contains("output_layer.4.running_var"));
  EXPECT_NEAR(params["input_layer.2.weight"].mean().item<double>(), 0.25, 1e-7);
  // Stage ends at 112.
  const std::vector<std::pair<std::string, Shape>> stages = {{"body[1]", {1, 64, 56, 56}},
                                                             {"body[3]", {1, 128, 28, 28}},
                                                             {"body[5]", {1, 256, 14, 14}},
                                                             {"body[7]", {1, 512, 7, 7}}};
  for (const auto& [stop, shape] : stages)
    EXPECT_EQ(output_shape(mb_build("{name: AdaFace_IR_18}", stop), 112), shape) << stop;
  EXPECT_EQ(resolve_stop_layer(*bb, "basic_block_ir_7"), "body.7");
  EXPECT_EQ(resolve_stop_layer(*bb, "p_re_lu_0"), "input_layer.2");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_0"), "output_layer.3");
  // IR-SE: se_block appended to res_layer; bottleneck units for 152 / 200 layers.
  auto se = mb_build("{name: AdaFace_IR_SE_50}", "body[0]");
  EXPECT_EQ(mb_type(se, "body.0"), "featlearn::adaface::BasicBlockIRSEImpl");
  EXPECT_EQ(mb_param_shape(se, "body.0.res_layer.se_block.fc1.weight"), (Shape{4, 64, 1, 1}));
  EXPECT_EQ(mb_param_shape(se, "body.0.res_layer.se_block.fc1.bias"), (Shape{-1}));
  EXPECT_EQ(mb_param_shape(se, "body.0.res_layer.se_block.fc2.weight"), (Shape{64, 4, 1, 1}));
  EXPECT_EQ(resolve_stop_layer(*se, "se_layer_0"), "body.0.res_layer.se_block");
  auto bott = mb_build("{name: AdaFace_IR_SE_152}", "body[0]");
  EXPECT_EQ(mb_type(bott, "body.0"), "featlearn::adaface::BottleneckIRSEImpl");
  EXPECT_EQ(mb_param_shape(bott, "body.0.shortcut_layer.0.weight"), (Shape{256, 64, 1, 1}));
  EXPECT_EQ(mb_param_shape(bott, "body.0.res_layer.1.weight"), (Shape{64, 64, 1, 1}));
  EXPECT_EQ(mb_param_shape(bott, "body.0.res_layer.4.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(mb_param_shape(bott, "body.0.res_layer.7.weight"), (Shape{256, 64, 1, 1}));
  EXPECT_EQ(mb_param_shape(bott, "body.0.res_layer.se_block.fc1.weight"), (Shape{16, 256, 1, 1}));
  EXPECT_EQ(output_shape(bott, 32), (Shape{1, 256, 16, 16}));
}

TEST(AdaFaceIR, UnitSemantics) {
  // input_layer = PReLU(0.25)(bn(conv(x))); a unit = res_layer(x) + shortcut_layer(x), the shortcut of an
  // unchanged width being MaxPool2d(1, 2) (every other pixel); stops before output_layer take any input size.
  const std::string ir18 = "{name: AdaFace_IR_18}";
  auto at_bn = mb_build(ir18, "input_layer.1", 9);
  auto at_input = mb_build(ir18, "input_layer", 9);
  auto at_short = mb_build(ir18, "body.0.shortcut_layer", 9);
  auto at_res = mb_build(ir18, "body.0.res_layer", 9);
  auto at_unit = mb_build(ir18, "body.0", 9);
  for (auto* m : {&at_bn, &at_input, &at_short, &at_res, &at_unit}) {
    torch::manual_seed(10);
    mb_randomize_bn(**m);
  }
  const auto x = torch::randn({2, 3, 32, 32});
  const auto b = mb_run(at_bn, x), in = mb_run(at_input, x);
  EXPECT_LT(b.min().item<double>(), 0.0);
  EXPECT_LE(mb_max_diff(in, torch::where(b >= 0, b, b * 0.25)), 1e-6);
  const auto sc = mb_run(at_short, x), res = mb_run(at_res, x), unit = mb_run(at_unit, x);
  EXPECT_TRUE(torch::equal(sc, in.index({"...", torch::indexing::Slice(0, torch::indexing::None, 2),
                                         torch::indexing::Slice(0, torch::indexing::None, 2)})));
  EXPECT_EQ(res.sizes().vec(), (Shape{2, 64, 16, 16}));
  EXPECT_LE(mb_max_diff(unit, res + sc), 1e-5);
  EXPECT_GT(mb_max_diff(unit, res), 1e-3);
  // SE: x · sigmoid(fc2(relu(fc1(mean(x))))).
  auto before_se = mb_build("{name: AdaFace_IR_SE_50}", "body.0.res_layer.5", 11);
  auto after_se = mb_build("{name: AdaFace_IR_SE_50}", "body.0.res_layer.se_block", 11);
  auto mods = after_se->named_modules();
  auto* fc1 = mods["body.0.res_layer.se_block.fc1"]->as<nn::Conv2d>();
  auto* fc2 = mods["body.0.res_layer.se_block.fc2"]->as<nn::Conv2d>();
  ASSERT_TRUE(fc1 && fc2);
  const auto r5 = mb_run(before_se, x);
  torch::NoGradGuard ng;
  const auto gate = torch::sigmoid(fc2->forward(torch::relu(fc1->forward(r5.mean({2, 3}, true)))));
  EXPECT_LE(mb_max_diff(mb_run(after_se, x), r5 * gate), 1e-5);
}

TEST(AdaFaceIR, OutputLayerAndTraining) {
  // output_layer in eval: bn, dropout (identity), flatten, linear, BatchNorm1d with fixed weight 1 / bias 0.
  auto full = mb_build("{name: AdaFace_IR_18}", "", 12);
  auto body = mb_build("{name: AdaFace_IR_18}", "body", 12);
  auto mods = full->named_modules();
  auto* bn = mods["output_layer.0"]->as<nn::BatchNorm2d>();
  auto* fc = mods["output_layer.3"]->as<nn::Linear>();
  auto* bn1 = mods["output_layer.4"]->as<nn::BatchNorm1d>();
  ASSERT_TRUE(bn && fc && bn1);
  {
    torch::NoGradGuard ng;
    bn1->running_mean.normal_(0, 0.5);
    bn1->running_var.uniform_(0.5, 2.0);
  }
  const auto x = torch::randn({2, 3, 112, 112});
  const auto out = mb_run(full, x), b = mb_run(body, x);
  torch::NoGradGuard ng;
  const auto want = (fc->forward(bn->forward(b).flatten(1)) - bn1->running_mean) / torch::sqrt(bn1->running_var + 1e-5);
  EXPECT_EQ(out.sizes().vec(), (Shape{2, 512}));
  EXPECT_LE(mb_max_diff(out, want), 1e-4 * want.abs().max().item<double>());
  // One training step's gradients: the Linear gets one, the fixed BatchNorm1d parameters none.
  full->train();
  {
    torch::AutoGradMode grad(true);
    full->forward(torch::randn({2, 3, 112, 112})).pow(2).mean().backward();
  }
  EXPECT_TRUE(fc->weight.grad().defined());
  EXPECT_GT(fc->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(bn1->weight.grad().defined());
  EXPECT_TRUE(torch::equal(bn1->weight, torch::ones({512})));
}

TEST(AdaFaceIR, ConfigErrors) {
  std::string msg = error_of([] { mb_build("{name: AdaFace_IR_18, input_size: [96, 96]}"); });
  EXPECT_NE(msg.find("Arch.Backbone.input_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[112, 112] or [224, 224]"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: AdaFace_IR_18, input_size: [112, 224]}"); });
  EXPECT_NE(msg.find("[112, 112] or [224, 224]"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: AdaFace_IR_18, input_size: 112}"); });
  EXPECT_NE(msg.find("[112, 112] or [224, 224]"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: AdaFace_IR_18, pretrained: False}"); });  // PaddleClas's factory takes none
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: AdaFace_IR_18, input_sise: [112, 112]}"); });
  EXPECT_NE(msg.find("did you mean input_size"), std::string::npos) << msg;
  msg = error_of([] { mb_build("{name: AdaFace_IR_200}"); });  // not among PaddleClas's exported names
  EXPECT_NE(msg.find("unknown Arch.Backbone 'AdaFace_IR_200'"), std::string::npos) << msg;
  auto bb = mb_build("{name: AdaFace_IR_18}");
  msg = error_of([&] { mb_run(bb, torch::randn({1, 3, 64, 64})); });
  EXPECT_NE(msg.find("input_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("output_layer.3"), std::string::npos) << msg;
}

// ---- the configs --------------------------------------------------------------------------------------------

TEST(MoreBackboneConfigs, BackbonesAndModelsAtTheirImageShape) {
  struct ConfigCase {
    const char* rel;
    const char* backbone;
    Shape image_shape, backbone_out, features;
  };
  const std::vector<ConfigCase> cases = {
      {"quick_start/MobileNetV1_retrieval.yaml", "MobileNetV1", {3, 224, 224}, {1, 1024}, {1, 512}},
      {"metric_learning/xbm_resnet50.yaml", "ResNet50_adaptive_max_pool2d", {3, 224, 224}, {1, 2048}, {1, 128}},
      {"metric_learning/adaface_ir18.yaml", "AdaFace_IR_18", {3, 112, 112}, {1, 512}, {1, 512}}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.rel);
    auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + c.rel);
    if (cfg["Arch"]["Backbone"].has("pretrained")) cfg.apply_override("Arch.Backbone.pretrained=False");
    const auto image_shape = cfg["Global"]["image_shape"].as<std::vector<int64_t>>();
    ASSERT_EQ(image_shape, c.image_shape);
    RecModel model(cfg["Arch"], image_shape);
    model->eval();
    auto* s = dynamic_cast<StoppableBackboneImpl*>(model->backbone().get());
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->config_name, c.backbone);
    torch::NoGradGuard ng;
    const auto out = model->forward(torch::zeros({1, image_shape[0], image_shape[1], image_shape[2]}));
    EXPECT_EQ(out.backbone.sizes().vec(), c.backbone_out);
    EXPECT_EQ(out.features.sizes().vec(), c.features);
  }
  // xbm_resnet50: stem_act null (no ReLU after the stem), stop at flatten (fc removed).
  Shape image_shape;
  auto xbm = mb_config_backbone("metric_learning/xbm_resnet50.yaml", image_shape);
  EXPECT_EQ(mb_type(xbm, "relu"), "torch::nn::IdentityImpl");
  EXPECT_FALSE(xbm->named_parameters(true).contains("fc.weight"));
  EXPECT_EQ(mb_type(xbm, "avgpool"), "featlearn::AdaptiveMaxPool2dImpl");
}
