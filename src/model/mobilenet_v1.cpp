// MobileNetV1 with PaddleClas's structure and names (see mobilenet_v1.h).
#include <featlearn/model/mobilenet_v1.h>
#include <featlearn/model/batch_norm.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

namespace featlearn {
namespace nn = torch::nn;

namespace mobilenet_v1 {

ConvBNLayerImpl::ConvBNLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                                 int64_t groups) {
  register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                                         .stride(stride)
                                         .padding(padding)
                                         .groups(groups)
                                         .bias(false)));
  register_module("bn", BatchNorm2d(out));
  register_module("relu", nn::ReLU());
}

DepthwiseSeparableImpl::DepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride) {
  register_module("depthwise_conv", std::make_shared<ConvBNLayerImpl>(in, in, 3, stride, 1, in));
  register_module("pointwise_conv", std::make_shared<ConvBNLayerImpl>(in, out, 1, 1, 0));
}

}  // namespace mobilenet_v1

namespace {

// PaddleClas's cfg at scale 1: {in, out, stride} of the 13 DepthwiseSeparable blocks.
struct MbV1Block {
  int64_t in, out, stride;
};
constexpr MbV1Block kMbV1Blocks[] = {{32, 64, 1},    {64, 128, 2},   {128, 128, 1}, {128, 256, 2}, {256, 256, 1},
                                     {256, 512, 2},  {512, 512, 1},  {512, 512, 1}, {512, 512, 1}, {512, 512, 1},
                                     {512, 512, 1},  {512, 1024, 2}, {1024, 1024, 1}};

// Python's int(c * scale): truncation.
int64_t scaled(int64_t c, double scale) { return static_cast<int64_t>(static_cast<double>(c) * scale); }

}  // namespace

MobileNetV1Impl::MobileNetV1Impl(MobileNetV1Options o) : options_(std::move(o)) {
  const double s = options_.scale();
  FL_ASSERT(s > 0 && scaled(32, s) > 0, "MobileNetV1 scale too small");
  register_module("conv", std::make_shared<mobilenet_v1::ConvBNLayerImpl>(3, scaled(32, s), 3, 2, 1));
  nn::ModuleList blocks;
  for (const auto& b : kMbV1Blocks)
    blocks->push_back(std::make_shared<mobilenet_v1::DepthwiseSeparableImpl>(scaled(b.in, s), scaled(b.out, s), b.stride));
  register_module("blocks", blocks);
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  register_module("flatten", nn::Flatten());
  register_module("fc", nn::Linear(scaled(1024, s), options_.class_num()));

  // PaddleClas: KaimingNormal for conv and fc weights (Paddle's fan_in of a Linear is its input width, as
  // torch's), Linear bias 0, BatchNorm weight 1 / bias 0.
  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* cv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(cv->weight, 0.0, torch::kFanIn, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<nn::Linear>()) {
      nn::init::kaiming_normal_(fc->weight, 0.0, torch::kFanIn, torch::kReLU);
      nn::init::zeros_(fc->bias);
    }
  }
}

// ---- registration -----------------------------------------------------------------------------------------

namespace {

struct MbV1Scale {
  const char* name;
  double scale;
};
constexpr MbV1Scale kMbV1Scales[] = {
    {"MobileNetV1_x0_25", 0.25}, {"MobileNetV1_x0_5", 0.5}, {"MobileNetV1_x0_75", 0.75}, {"MobileNetV1", 1.0}};

// PaddleClas's MobileNetV1 factories: MobileNet(scale fixed by the factory, class_num, return_patterns,
// return_stages) plus pretrained / use_ssld (docs/config.md, "Arch.Backbone").
BackbonePtr make_mobilenet_v1(const ConfigNode& node, const std::string& name, double scale) {
  node.check_keys({"name", "pretrained", "use_ssld", "class_num", "return_patterns", "return_stages"});
  pplcnet::refuse_return_options(node);
  const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  MobileNetV1Options o(scale);
  o.class_num(node.get<int64_t>("class_num", 1000));
  if (o.class_num() <= 0) node["class_num"].fail("must be positive");
  auto m = std::make_shared<MobileNetV1Impl>(o);
  m->config_name = name;
  m->pretrained_path = pplcnet::read_pretrained(node, name + (ssld ? "_ssld" : "") + "_pretrained.pdparams");
  return m;
}

}  // namespace

void register_mobilenet_v1_backbones() {
  for (const auto& e : kMbV1Scales) {
    const std::string name = e.name;
    const double scale = e.scale;
    backbone_registry().add(name, [name, scale](const ConfigNode& node) -> BackbonePtr {
      return make_mobilenet_v1(node, name, scale);
    });
  }
}

}  // namespace featlearn
