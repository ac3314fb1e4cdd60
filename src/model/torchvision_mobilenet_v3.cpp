// torchvision-compatible MobileNetV3 (see torchvision_mobilenet_v3.h).
#include <featlearn/model/torchvision_mobilenet_v3.h>
#include <featlearn/model/batch_norm.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

namespace featlearn {
namespace nn = torch::nn;

namespace {

// torchvision's _make_divisible: round to a multiple of 8, never below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

// torchvision Conv2dNormActivation: Sequential(conv, bn[, act]); BN eps 1e-3, momentum 0.01.
nn::ModuleList conv_bn_act(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, const char* act) {
  nn::ModuleList s;
  s->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding((k - 1) / 2).groups(groups).bias(false)));
  s->push_back(BatchNorm2d(nn::BatchNorm2dOptions(out).eps(1e-3).momentum(0.01)));
  if (std::string(act) == "HS") s->push_back(Hardswish());
  else if (std::string(act) == "RE") s->push_back(nn::ReLU());
  return s;
}

struct BlockConf {
  int64_t in, kernel, expanded, out;
  bool se;
  const char* act;
  int64_t stride;
};

const std::vector<BlockConf>& block_confs(bool large) {
  static const std::vector<BlockConf> kLarge = {
      {16, 3, 16, 16, false, "RE", 1},    {16, 3, 64, 24, false, "RE", 2},    {24, 3, 72, 24, false, "RE", 1},
      {24, 5, 72, 40, true, "RE", 2},     {40, 5, 120, 40, true, "RE", 1},    {40, 5, 120, 40, true, "RE", 1},
      {40, 3, 240, 80, false, "HS", 2},   {80, 3, 200, 80, false, "HS", 1},   {80, 3, 184, 80, false, "HS", 1},
      {80, 3, 184, 80, false, "HS", 1},   {80, 3, 480, 112, true, "HS", 1},   {112, 3, 672, 112, true, "HS", 1},
      {112, 5, 672, 160, true, "HS", 2},  {160, 5, 960, 160, true, "HS", 1},  {160, 5, 960, 160, true, "HS", 1}};
  static const std::vector<BlockConf> kSmall = {
      {16, 3, 16, 16, true, "RE", 2},   {16, 3, 72, 24, false, "RE", 2},  {24, 3, 88, 24, false, "RE", 1},
      {24, 5, 96, 40, true, "HS", 2},   {40, 5, 240, 40, true, "HS", 1},  {40, 5, 240, 40, true, "HS", 1},
      {40, 5, 120, 48, true, "HS", 1},  {48, 5, 144, 48, true, "HS", 1},  {48, 5, 288, 96, true, "HS", 2},
      {96, 5, 576, 96, true, "HS", 1},  {96, 5, 576, 96, true, "HS", 1}};
  return large ? kLarge : kSmall;
}

}  // namespace

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t channels, int64_t squeeze) {
  register_module("avgpool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  fc1 = register_module("fc1", nn::Conv2d(nn::Conv2dOptions(channels, squeeze, 1)));
  fc2 = register_module("fc2", nn::Conv2d(nn::Conv2dOptions(squeeze, channels, 1)));
  register_module("activation", nn::ReLU());
  register_module("scale_activation", Hardsigmoid());
}

torch::Tensor SqueezeExcitationImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  // The activations are parameter-free and registered after fc2 although they run between/after the fcs, so
  // they are applied functionally (a stop at fc2 must still see relu(fc1(...))).
  auto s = c.step(child_path(path, "avgpool"), x, [](const torch::Tensor& t) { return torch::adaptive_avg_pool2d(t, {1, 1}); });
  s = c.step(child_path(path, "fc1"), s, [&](const torch::Tensor& t) { return fc1->forward(t); });
  s = c.step_always(child_path(path, "activation"), s, [](const torch::Tensor& t) { return torch::relu(t); });
  s = c.step(child_path(path, "fc2"), s, [&](const torch::Tensor& t) { return fc2->forward(t); });
  s = c.step_always(child_path(path, "scale_activation"), s, [](const torch::Tensor& t) { return torch::hardsigmoid(t); });
  if (c.done()) return s;
  return x * s;
}

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t kernel, int64_t expanded, int64_t out, bool se,
                                           bool hardswish, int64_t stride) {
  const char* act = hardswish ? "HS" : "RE";
  nn::ModuleList b;
  if (expanded != in) b->push_back(conv_bn_act(in, expanded, 1, 1, 1, act));
  b->push_back(conv_bn_act(expanded, expanded, kernel, stride, expanded, act));
  if (se) b->push_back(std::make_shared<SqueezeExcitationImpl>(expanded, make_divisible(expanded / 4)));
  b->push_back(conv_bn_act(expanded, out, 1, 1, 1, ""));
  block = register_module("block", b);
  use_residual_ = stride == 1 && in == out;
}

torch::Tensor InvertedResidualImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  const std::string p = child_path(path, "block");
  auto y = c.step(p, x, [&](const torch::Tensor& t) { return run_module(*block, t, c, p); });
  if (c.done() || !use_residual_) return y;
  return x + y;
}

TorchvisionMobileNetV3Impl::TorchvisionMobileNetV3Impl(TorchvisionMobileNetV3Options o) : options_(std::move(o)) {
  const auto& confs = block_confs(options_.large());
  nn::ModuleList features;
  features->push_back(conv_bn_act(3, 16, 3, 2, 1, "HS"));
  for (const auto& b : confs)
    features->push_back(std::make_shared<InvertedResidualImpl>(b.in, b.kernel, b.expanded, b.out, b.se,
                                                               std::string(b.act) == "HS", b.stride));
  num_blocks_ = static_cast<int64_t>(confs.size());
  const int64_t last_in = confs.back().out, last_out = 6 * last_in;
  features->push_back(conv_bn_act(last_in, last_out, 1, 1, 1, "HS"));
  register_module("features", features);
  register_module("avgpool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  register_module("flatten", nn::Flatten());
  const int64_t hidden = options_.class_expand() > 0 ? options_.class_expand() : (options_.large() ? 1280 : 1024);
  nn::ModuleList classifier;
  classifier->push_back(nn::Linear(last_out, hidden));
  classifier->push_back(Hardswish());
  classifier->push_back(nn::Dropout(nn::DropoutOptions(options_.dropout_prob())));
  classifier->push_back(nn::Linear(hidden, options_.class_num()));
  register_module("classifier", classifier);

  // torchvision's init.
  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* cv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(cv->weight, 0.0, torch::kFanOut);
      if (cv->bias.defined()) nn::init::zeros_(cv->bias);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<nn::Linear>()) {
      nn::init::normal_(fc->weight, 0.0, 0.01);
      nn::init::zeros_(fc->bias);
    }
  }
}

std::map<std::string, std::string> TorchvisionMobileNetV3Impl::stop_layer_aliases() const {
  std::map<std::string, std::string> a = {
      {"conv", "features.0"},
      {"blocks", "features." + std::to_string(num_blocks_)},
      {"last_second_conv", "features." + std::to_string(num_blocks_ + 1)},
      {"avg_pool", "avgpool"},
      {"flatten", "flatten"},
      {"last_conv", "classifier.0"},
      {"hardswish", "classifier.1"},
      {"dropout", "classifier.2"},
      {"fc", "classifier.3"}};
  for (int64_t i = 0; i < num_blocks_; ++i) a["blocks[" + std::to_string(i) + "]"] = "features." + std::to_string(i + 1);
  return a;
}

}  // namespace featlearn
