// MobileNetV3 with PaddleClas's structure and names (see mobilenet_v3.h).
#include <featlearn/model/mobilenet_v3.h>

#include <featlearn/common/error.h>
#include <featlearn/model/torchvision_mobilenet_v3.h>

#include <torch/torch.h>

namespace featlearn {
namespace nn = torch::nn;

namespace mobilenet_v3 {

ResidualUnitImpl::ResidualUnitImpl(int64_t in, int64_t mid, int64_t out, int64_t kernel, int64_t stride,
                                   bool use_se, const std::string& act) {
  shortcut_ = stride == 1 && in == out;
  register_module("expand_conv", std::make_shared<pplcnet::ConvBNLayerImpl>(in, mid, 1, 1, 1, act));
  register_module("bottleneck_conv", std::make_shared<pplcnet::ConvBNLayerImpl>(mid, mid, kernel, stride, mid, act));
  // PaddleClas's MobileNetV3 SE: its own Hardsigmoid with slope 0.2 (Paddle's layer default is 1/6).
  if (use_se) register_module("mid_se", std::make_shared<pplcnet::SEModuleImpl>(mid, 4, false, 0.2));
  register_module("linear_conv", std::make_shared<pplcnet::ConvBNLayerImpl>(mid, out, 1, 1, 1, ""));
}

torch::Tensor ResidualUnitImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto y = ChainedLayer::run(x, c, path);
  if (c.done() || !shortcut_) return y;
  return x + y;
}

}  // namespace mobilenet_v3

namespace {

// PaddleClas's NET_CONFIG rows: kernel, expanded width, output width, SE, activation, stride.
struct Mv3Block {
  int64_t k, exp, c;
  bool se;
  const char* act;
  int64_t s;
};
constexpr Mv3Block kLarge[] = {
    {3, 16, 16, false, "relu", 1},       {3, 64, 24, false, "relu", 2},       {3, 72, 24, false, "relu", 1},
    {5, 72, 40, true, "relu", 2},        {5, 120, 40, true, "relu", 1},       {5, 120, 40, true, "relu", 1},
    {3, 240, 80, false, "hardswish", 2}, {3, 200, 80, false, "hardswish", 1}, {3, 184, 80, false, "hardswish", 1},
    {3, 184, 80, false, "hardswish", 1}, {3, 480, 112, true, "hardswish", 1}, {3, 672, 112, true, "hardswish", 1},
    {5, 672, 160, true, "hardswish", 2}, {5, 960, 160, true, "hardswish", 1}, {5, 960, 160, true, "hardswish", 1}};
constexpr Mv3Block kSmall[] = {
    {3, 16, 16, true, "relu", 2},        {3, 72, 24, false, "relu", 2},       {3, 88, 24, false, "relu", 1},
    {5, 96, 40, true, "hardswish", 2},   {5, 240, 40, true, "hardswish", 1},  {5, 240, 40, true, "hardswish", 1},
    {5, 120, 48, true, "hardswish", 1},  {5, 144, 48, true, "hardswish", 1},  {5, 288, 96, true, "hardswish", 2},
    {5, 576, 96, true, "hardswish", 1},  {5, 576, 96, true, "hardswish", 1}};
constexpr int64_t kClassSqueezeSmall = 576, kClassSqueezeLarge = 960;

}  // namespace

MobileNetV3Impl::MobileNetV3Impl(MobileNetV3Options o) : options_(std::move(o)) {
  const double s = options_.scale();
  FL_ASSERT(s > 0, "MobileNetV3 scale must be positive");
  auto div = [](double v) { return pplcnet::make_divisible(v); };
  const Mv3Block* cfg = options_.large() ? kLarge : kSmall;
  const size_t n = options_.large() ? std::size(kLarge) : std::size(kSmall);
  const int64_t squeeze = options_.large() ? kClassSqueezeLarge : kClassSqueezeSmall;
  const double inplanes = static_cast<double>(options_.inplanes());

  register_module("conv", std::make_shared<pplcnet::ConvBNLayerImpl>(3, div(inplanes * s), 3, 2, 1, "hardswish"));
  nn::Sequential blocks;
  for (size_t i = 0; i < n; ++i) {
    const auto& b = cfg[i];
    const int64_t in = div(i == 0 ? inplanes * s : static_cast<double>(cfg[i - 1].c) * s);
    blocks->push_back(std::make_shared<mobilenet_v3::ResidualUnitImpl>(
        in, div(s * static_cast<double>(b.exp)), div(s * static_cast<double>(b.c)), b.k, b.s, b.se, b.act));
  }
  register_module("blocks", blocks);
  const int64_t squeezed = div(s * static_cast<double>(squeeze));
  register_module("last_second_conv", std::make_shared<pplcnet::ConvBNLayerImpl>(
                                          div(static_cast<double>(cfg[n - 1].c) * s), squeezed, 1, 1, 1, "hardswish"));
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  register_module("last_conv", nn::Conv2d(nn::Conv2dOptions(squeezed, options_.class_expand(), 1).bias(false)));
  register_module("hardswish", Hardswish());
  if (options_.dropout_prob()) register_module("dropout", paddle_nn::Dropout(*options_.dropout_prob()));
  register_module("flatten", nn::Flatten());
  register_module("fc", nn::Linear(options_.class_expand(), options_.class_num()));
  pplcnet::paddle_init(*this);
}

// ---- registration -----------------------------------------------------------------------------------------

namespace {

// PaddleClas's factories: MobileNetV3(config, scale, stages_pattern, class_squeeze fixed by the factory;
// class_num, inplanes, class_expand, dropout_prob, return_patterns, return_stages) plus pretrained / use_ssld.
BackbonePtr make_mobilenet_v3(const ConfigNode& node, const std::string& name, bool large, double scale) {
  node.check_keys({"name", "pretrained", "use_ssld", "class_num", "inplanes", "class_expand", "dropout_prob",
                   "return_patterns", "return_stages"});
  pplcnet::refuse_return_options(node);
  const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  MobileNetV3Options o(large, scale);
  o.class_num(node.get<int64_t>("class_num", 1000));
  o.inplanes(node.get<int64_t>("inplanes", 16));
  o.class_expand(node.get<int64_t>("class_expand", 1280));
  if (o.class_num() <= 0) node["class_num"].fail("must be positive");
  if (o.inplanes() <= 0) node["inplanes"].fail("must be positive");
  if (o.class_expand() <= 0) node["class_expand"].fail("must be positive");
  if (node.has("dropout_prob") && !node["dropout_prob"].defined()) {
    o.dropout_prob(std::nullopt);  // PaddleClas: dropout_prob None -> no dropout layer
  } else {
    const double p = node.get<double>("dropout_prob", 0.2);
    if (!(p >= 0 && p <= 1)) node["dropout_prob"].fail("must be in [0, 1] (or null for no dropout layer)");
    o.dropout_prob(p);
  }
  auto m = std::make_shared<MobileNetV3Impl>(o);
  m->config_name = name;
  m->pretrained_path = pplcnet::read_pretrained(node, name + (ssld ? "_ssld" : "") + "_pretrained.pdparams");
  return m;
}

struct Mv3Name {
  const char* name;
  bool large;
  double scale;
};
constexpr Mv3Name kMv3Names[] = {
    {"MobileNetV3_small_x0_35", false, 0.35}, {"MobileNetV3_small_x0_5", false, 0.5},
    {"MobileNetV3_small_x0_75", false, 0.75}, {"MobileNetV3_small_x1_0", false, 1.0},
    {"MobileNetV3_small_x1_25", false, 1.25}, {"MobileNetV3_large_x0_35", true, 0.35},
    {"MobileNetV3_large_x0_5", true, 0.5},    {"MobileNetV3_large_x0_75", true, 0.75},
    {"MobileNetV3_large_x1_0", true, 1.0},    {"MobileNetV3_large_x1_25", true, 1.25}};

}  // namespace

void register_mobilenet_v3_backbones() {
  for (const auto& e : kMv3Names) {
    const std::string name = e.name;
    const bool large = e.large;
    const double scale = e.scale;
    backbone_registry().add(name, [name, large, scale](const ConfigNode& node) -> BackbonePtr {
      return make_mobilenet_v3(node, name, large, scale);
    });
  }
}

}  // namespace featlearn
