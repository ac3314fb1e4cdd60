// VGG with PaddleClas's structure and names (see vgg.h).
#include <featlearn/model/vgg.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

#include <sstream>

namespace featlearn {
namespace nn = torch::nn;

namespace vgg {

ConvBlockImpl::ConvBlockImpl(int64_t in, int64_t out, int64_t groups) {
  FL_ASSERT(groups >= 1 && groups <= 4, "VGG ConvBlock takes 1 to 4 convs");
  for (int64_t i = 0; i < groups; ++i)
    convs_.push_back(register_module("conv" + std::to_string(i + 1),
                                     nn::Conv2d(nn::Conv2dOptions(i == 0 ? in : out, out, 3).padding(1).bias(false))));
  register_module("max_pool", nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)));
  register_module("relu", nn::ReLU());
}

torch::Tensor ConvBlockImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  // The relu runs after every conv; when the stop layer removed it (a stop at a conv or max_pool of this block)
  // the cursor skips it, as PaddleClas's Identity would.
  const std::string relu = child_path(path, "relu");
  torch::Tensor y = x;
  for (size_t i = 0; i < convs_.size(); ++i) {
    auto& conv = convs_[i];
    y = c.step(child_path(path, "conv" + std::to_string(i + 1)), y,
               [&](const torch::Tensor& t) { return conv->forward(t); });
    y = c.step(relu, y, [](const torch::Tensor& t) { return torch::relu(t); });
  }
  return c.step(child_path(path, "max_pool"), y,
                [](const torch::Tensor& t) { return torch::max_pool2d(t, {2, 2}, {2, 2}); });
}

SigmoidSuffixImpl::SigmoidSuffixImpl(std::shared_ptr<nn::Module> origin_layer) {
  register_module("origin_layer", std::move(origin_layer));
  register_module("sigmoid", paddle_nn::Sigmoid());
}

}  // namespace vgg

VGGImpl::VGGImpl(VGGOptions o) : options_(std::move(o)) {
  const auto& cfg = options_.config();
  FL_ASSERT(cfg.size() == 5, "VGG needs 5 blocks");
  const int64_t widths[5] = {64, 128, 256, 512, 512};
  int64_t in = 3;
  for (int b = 0; b < 5; ++b) {
    const std::string name = "conv_block_" + std::to_string(b + 1);
    blocks_.push_back(register_module(name, std::make_shared<vgg::ConvBlockImpl>(in, widths[b], cfg[b])));
    multi_use_.insert(name + ".relu");
    in = widths[b];
  }
  register_module("relu", nn::ReLU());  // forward uses torch::relu (one module, called twice)
  register_module("flatten", nn::Flatten());
  drop_ = register_module("drop", paddle_nn::Dropout(0.5));
  multi_use_.insert("relu");
  multi_use_.insert("drop");
  fc1_ = register_module("fc1", nn::Linear(7 * 7 * 512, 4096));
  nn::Linear fc2(4096, 4096);
  if (options_.sigmoid_fc2()) fc2_ = register_module("fc2", std::make_shared<vgg::SigmoidSuffixImpl>(fc2.ptr()));
  else fc2_ = register_module("fc2", fc2);
  fc3_ = register_module("fc3", nn::Linear(4096, options_.class_num()));
  // Paddle's defaults (PaddleClas sets no initializer): conv N(0, sqrt(2 / fan_in)), Linear Xavier uniform, bias 0.
  pplcnet::paddle_init(*this);
  // stop_grad_layers: PaddleClas sets trainable = False on conv_block_1 .. conv_block_k.
  for (int b = 0; b < 5 && b < options_.stop_grad_layers(); ++b)
    for (auto& p : blocks_[b]->parameters()) p.set_requires_grad(false);
}

torch::Tensor VGGImpl::forward(torch::Tensor x) {
  StopCursor c(*this);
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const std::string name = "conv_block_" + std::to_string(b + 1);
    auto& block = *blocks_[b];
    x = c.step(name, x, [&](const torch::Tensor& t) { return run_module(block, t, c, name); });
  }
  x = c.step("flatten", x, [](const torch::Tensor& t) { return t.flatten(1); });
  const auto relu = [](const torch::Tensor& t) { return torch::relu(t); };
  const auto drop = [&](const torch::Tensor& t) { return run_module(*drop_, t, c, "drop"); };
  x = c.step("fc1", x, [&](const torch::Tensor& t) {
    if (t.dim() != 2 || t.size(1) != fc1_->options.in_features()) {
      std::ostringstream shape;
      shape << t.sizes();
      throw Error(config_name + ": fc1 takes the 7x7x512 = 25088 features of a 224x224 input, got " +
                  shape.str() + " after flatten; use Global.image_shape [3, 224, 224], or a BackboneStopLayer "
                  "before fc1 (e.g. conv_block_5) for other input sizes");
    }
    return fc1_->forward(t);
  });
  x = c.step("relu", x, relu);
  x = c.step("drop", x, drop);
  x = c.step("fc2", x, [&](const torch::Tensor& t) { return run_module(*fc2_, t, c, "fc2"); });
  x = c.step("relu", x, relu);
  x = c.step("drop", x, drop);
  return c.step("fc3", x, [&](const torch::Tensor& t) { return fc3_->forward(t); });
}

// ---- registration -----------------------------------------------------------------------------------------

namespace {

struct VGGName {
  const char* name;
  std::vector<int64_t> config;
  bool sigmoid;
  const char* paddle_file;  // what PaddleClas's pretrained: True downloads
};
const std::vector<VGGName>& vgg_names() {
  static const std::vector<VGGName> kNames = {
      {"VGG11", {1, 1, 2, 2, 2}, false, "VGG11_pretrained.pdparams"},
      {"VGG13", {2, 2, 2, 2, 2}, false, "VGG13_pretrained.pdparams"},
      {"VGG16", {2, 2, 3, 3, 3}, false, "VGG16_pretrained.pdparams"},
      {"VGG19", {2, 2, 4, 4, 4}, false, "VGG19_pretrained.pdparams"},
      // PaddleClas loads VGG19's weights into it before wrapping fc2.
      {"VGG19Sigmoid", {2, 2, 4, 4, 4}, true, "VGG19_pretrained.pdparams"}};
  return kNames;
}

// PaddleClas's VGG factories: VGGNet(config fixed by the factory, stop_grad_layers, class_num, return_patterns,
// return_stages) plus pretrained / use_ssld (docs/config.md, "Arch.Backbone").
BackbonePtr make_vgg(const ConfigNode& node, const VGGName& v) {
  node.check_keys(
      {"name", "pretrained", "use_ssld", "class_num", "stop_grad_layers", "return_patterns", "return_stages"});
  pplcnet::refuse_return_options(node);
  const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  VGGOptions o(v.config);
  o.sigmoid_fc2(v.sigmoid);
  o.class_num(node.get<int64_t>("class_num", 1000));
  if (o.class_num() <= 0) node["class_num"].fail("must be positive");
  o.stop_grad_layers(node.get<int64_t>("stop_grad_layers", 0));
  if (o.stop_grad_layers() < 0) node["stop_grad_layers"].fail("must be >= 0 (the number of conv blocks frozen)");
  std::string file = v.paddle_file;
  if (ssld) file.replace(file.find("_pretrained"), 11, "_ssld_pretrained");
  const std::string pretrained = pplcnet::read_pretrained(node, file);  // before the (2 s) construction
  auto m = std::make_shared<VGGImpl>(o);
  m->config_name = v.name;
  m->pretrained_path = pretrained;
  return m;
}

}  // namespace

void register_vgg_backbones() {
  for (const auto& v : vgg_names())
    backbone_registry().add(v.name, [&v](const ConfigNode& node) -> BackbonePtr { return make_vgg(node, v); });
}

}  // namespace featlearn
