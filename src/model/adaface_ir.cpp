// AdaFace IR / IR-SE nets with PaddleClas's structure and names (see adaface_ir.h).
#include <featlearn/model/adaface_ir.h>
#include <featlearn/model/batch_norm.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

#include <sstream>

namespace featlearn {
namespace nn = torch::nn;

namespace adaface {

namespace {

// Conv2d without bias, KaimingNormal (PaddleClas's weight_attr for every IR conv but SE's fc1).
std::shared_ptr<nn::Module> conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding) {
  nn::Conv2d c(nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(false));
  torch::NoGradGuard ng;
  nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanIn, torch::kReLU);
  return c.ptr();
}

std::shared_ptr<nn::Module> bn(int64_t c) { return BatchNorm2d(c).ptr(); }  // weight 1, bias 0
std::shared_ptr<nn::Module> prelu(int64_t c) {
  return nn::PReLU(nn::PReLUOptions().num_parameters(c).init(0.25)).ptr();
}

}  // namespace

void SequentialImpl::push_back(std::shared_ptr<nn::Module> m) {
  register_module(std::to_string(children().size()), std::move(m));
}

torch::Tensor SequentialImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  torch::Tensor y = x;
  for (const auto& item : named_children()) {  // sees modules replaced by the stop layer
    const std::string p = child_path(path, item.key());
    auto& child = *item.value();
    y = c.step(p, y, [&](const torch::Tensor& t) -> torch::Tensor {
      if (auto* pr = child.as<nn::PReLU>()) return pr->forward(t);
      if (auto* bn1 = child.as<BatchNorm1d>()) return bn1->forward(t);  // featlearn's: it may be a SyncBN
      if (auto* bn1 = child.as<nn::BatchNorm1d>()) return bn1->forward(t);
      if (auto* fc = child.as<nn::Linear>()) {
        if (t.dim() != 2 || t.size(1) != fc->options.in_features()) {
          std::ostringstream shape;
          shape << t.sizes();
          throw Error(p + " (Linear) takes " + std::to_string(fc->options.in_features()) +
                      " features (the last feature map of an input_size x input_size image), got " + shape.str() +
                      "; the images must match Arch.Backbone.input_size (Global.image_shape)");
        }
        return fc->forward(t);
      }
      return run_module(child, t, c, p);
    });
  }
  return y;
}

SELayerImpl::SELayerImpl(int64_t channels, int64_t reduction) {
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  nn::Conv2d fc1(nn::Conv2dOptions(channels, channels / reduction, 1).bias(false));
  {
    torch::NoGradGuard ng;
    nn::init::xavier_uniform_(fc1->weight);
  }
  register_module("fc1", fc1);
  register_module("relu", nn::ReLU());
  register_module("fc2", conv(channels / reduction, channels, 1, 1, 0));
  register_module("sigmoid", paddle_nn::Sigmoid());
}

torch::Tensor SELayerImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto gate = ChainedLayer::run(x, c, path);  // [N, C, 1, 1]
  if (c.done()) return gate;
  return x * gate;
}

IRUnit::IRUnit(int64_t in, int64_t depth, int64_t stride) {
  if (in == depth) {
    register_module("shortcut_layer", nn::MaxPool2d(nn::MaxPool2dOptions(1).stride(stride)));
  } else {
    auto sc = std::make_shared<SequentialImpl>();
    sc->push_back(conv(in, depth, 1, stride, 0));
    sc->push_back(bn(depth));
    register_module("shortcut_layer", sc);
  }
}

void IRUnit::set_res_layer(std::shared_ptr<SequentialImpl> res, int64_t depth, bool se) {
  if (se) res->register_module("se_block", std::make_shared<SELayerImpl>(depth, 16));
  register_module("res_layer", std::move(res));
}

torch::Tensor IRUnit::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  const auto children = named_children();
  auto& shortcut = *children["shortcut_layer"];
  auto& res = *children["res_layer"];
  const std::string sp = child_path(path, "shortcut_layer"), rp = child_path(path, "res_layer");
  const auto sc = c.step(sp, x, [&](const torch::Tensor& t) { return run_module(shortcut, t, c, sp); });
  if (c.done()) return sc;
  const auto r = c.step(rp, x, [&](const torch::Tensor& t) { return run_module(res, t, c, rp); });
  if (c.done()) return r;
  return r + sc;
}

BasicBlockIRImpl::BasicBlockIRImpl(int64_t in, int64_t depth, int64_t stride, bool se) : IRUnit(in, depth, stride) {
  auto res = std::make_shared<SequentialImpl>();
  res->push_back(bn(in));
  res->push_back(conv(in, depth, 3, 1, 1));
  res->push_back(bn(depth));
  res->push_back(prelu(depth));
  res->push_back(conv(depth, depth, 3, stride, 1));
  res->push_back(bn(depth));
  set_res_layer(std::move(res), depth, se);
}

BottleneckIRImpl::BottleneckIRImpl(int64_t in, int64_t depth, int64_t stride, bool se) : IRUnit(in, depth, stride) {
  const int64_t r = depth / 4;
  auto res = std::make_shared<SequentialImpl>();
  res->push_back(bn(in));
  res->push_back(conv(in, r, 1, 1, 0));
  res->push_back(bn(r));
  res->push_back(prelu(r));
  res->push_back(conv(r, r, 3, 1, 1));
  res->push_back(bn(r));
  res->push_back(prelu(r));
  res->push_back(conv(r, depth, 1, stride, 0));
  res->push_back(bn(depth));
  set_res_layer(std::move(res), depth, se);
}

}  // namespace adaface

namespace {

// PaddleClas's get_blocks: {in, width, units} per stage; the first unit of a stage has stride 2.
struct IRStage {
  int64_t in, depth, units;
};
std::vector<IRStage> ir_stages(int64_t num_layers) {
  switch (num_layers) {
    case 18: return {{64, 64, 2}, {64, 128, 2}, {128, 256, 2}, {256, 512, 2}};
    case 34: return {{64, 64, 3}, {64, 128, 4}, {128, 256, 6}, {256, 512, 3}};
    case 50: return {{64, 64, 3}, {64, 128, 4}, {128, 256, 14}, {256, 512, 3}};
    case 100: return {{64, 64, 3}, {64, 128, 13}, {128, 256, 30}, {256, 512, 3}};
    case 152: return {{64, 256, 3}, {256, 512, 8}, {512, 1024, 36}, {1024, 2048, 3}};
    case 200: return {{64, 256, 3}, {256, 512, 24}, {512, 1024, 36}, {1024, 2048, 3}};
    default: break;
  }
  FL_ASSERT(false, "AdaFace IR: unsupported depth " + std::to_string(num_layers));
  return {};
}

}  // namespace

AdaFaceIRImpl::AdaFaceIRImpl(AdaFaceIROptions o) : options_(std::move(o)) {
  using adaface::SequentialImpl;
  FL_ASSERT(options_.input_size() == 112 || options_.input_size() == 224, "AdaFace IR: input_size 112 or 224");
  auto input = std::make_shared<SequentialImpl>();
  input->push_back(adaface::conv(3, 64, 3, 1, 1));
  input->push_back(adaface::bn(64));
  input->push_back(adaface::prelu(64));
  register_module("input_layer", input);

  const bool bottleneck = options_.num_layers() > 100;
  auto body = std::make_shared<SequentialImpl>();
  for (const auto& st : ir_stages(options_.num_layers()))
    for (int64_t u = 0; u < st.units; ++u) {
      const int64_t in = u == 0 ? st.in : st.depth, stride = u == 0 ? 2 : 1;
      std::shared_ptr<nn::Module> unit;
      if (bottleneck && options_.se()) unit = std::make_shared<adaface::BottleneckIRSEImpl>(in, st.depth, stride);
      else if (bottleneck) unit = std::make_shared<adaface::BottleneckIRImpl>(in, st.depth, stride);
      else if (options_.se()) unit = std::make_shared<adaface::BasicBlockIRSEImpl>(in, st.depth, stride);
      else unit = std::make_shared<adaface::BasicBlockIRImpl>(in, st.depth, stride);
      body->push_back(std::move(unit));
    }
  register_module("body", body);

  const int64_t channels = bottleneck ? 2048 : 512;
  const int64_t side = options_.input_size() / 16;  // 7 or 14
  auto output = std::make_shared<SequentialImpl>();
  output->push_back(adaface::bn(channels));
  output->push_back(nn::Dropout(0.4).ptr());  // Paddle's default upscale_in_train mode = torch's dropout
  output->push_back(nn::Flatten().ptr());
  nn::Linear fc(channels * side * side, 512);
  BatchNorm1d bn1(512);
  {
    torch::NoGradGuard ng;
    nn::init::kaiming_normal_(fc->weight, 0.0, torch::kFanIn, torch::kReLU);
    nn::init::zeros_(fc->bias);
  }
  // Paddle's weight_attr=False / bias_attr=False: parameters fixed at 1 and 0 (stop_gradient).
  bn1->weight.set_requires_grad(false);
  bn1->bias.set_requires_grad(false);
  output->push_back(fc.ptr());
  output->push_back(bn1.ptr());
  register_module("output_layer", output);
}

// ---- registration -----------------------------------------------------------------------------------------

namespace {

struct IRName {
  const char* name;
  int64_t num_layers;
  bool se;
};
constexpr IRName kIRNames[] = {{"AdaFace_IR_18", 18, false},     {"AdaFace_IR_34", 34, false},
                               {"AdaFace_IR_50", 50, false},     {"AdaFace_IR_101", 100, false},
                               {"AdaFace_IR_152", 152, false},   {"AdaFace_IR_SE_50", 50, true},
                               {"AdaFace_IR_SE_101", 100, true}, {"AdaFace_IR_SE_152", 152, true},
                               {"AdaFace_IR_SE_200", 200, true}};

// PaddleClas's factories: AdaFace_IR_*(input_size=(112, 112)); input_size[0] picks the Linear's input map (7x7 or
// 14x14), so featlearn requires a square size.
BackbonePtr make_adaface(const ConfigNode& node, const IRName& v) {
  node.check_keys({"name", "input_size"});
  AdaFaceIROptions o(v.num_layers);
  o.se(v.se);
  if (node["input_size"].defined()) {
    const auto is = node["input_size"];
    if (!is.is_seq()) is.fail("expected [112, 112] or [224, 224]");
    const auto size = is.as<std::vector<int64_t>>();
    if (size.size() != 2 || (size[0] != 112 && size[0] != 224) || size[1] != size[0])
      is.fail("expected [112, 112] or [224, 224] (the output layer's Linear reads the 7x7 or 14x14 last map)");
    o.input_size(size[0]);
  }
  auto m = std::make_shared<AdaFaceIRImpl>(o);
  m->config_name = v.name;
  return m;
}

}  // namespace

void register_adaface_backbones() {
  for (const auto& v : kIRNames)
    backbone_registry().add(v.name, [v](const ConfigNode& node) -> BackbonePtr { return make_adaface(node, v); });
}

}  // namespace featlearn
