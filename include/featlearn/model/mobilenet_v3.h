// MobileNetV3 with PaddleClas's structure, parameter names and semantics (docs/config.md, "Arch.Backbone"), so
// that a PaddleClas state dict maps onto it name by name (BatchNorm statistics as running_mean / running_var).
// torchvision's structure is TorchvisionMobileNetV3 (torchvision_mobilenet_v3.h).
//
// Config names: MobileNetV3_small_x0_35, _x0_5, _x0_75, _x1_0, _x1_25 and MobileNetV3_large_x0_35 ... _x1_25.
// Keys: name, pretrained, use_ssld, class_num, inplanes, class_expand, dropout_prob, return_patterns,
// return_stages (docs/config.md).
//
// Module tree (module paths are BackboneStopLayer names; `blocks[3].mid_se` also works):
//   conv               ConvBNLayer {conv, bn, act}: 3x3 stride 2, 3 -> make_divisible(inplanes·scale), hardswish
//   blocks             Sequential of ResidualUnit {expand_conv (1x1), bottleneck_conv (depthwise k x k, stride s),
//                      [mid_se], linear_conv (1x1, no act)}, + input when stride 1 and in == out channels;
//                      widths make_divisible(c·scale). expand_conv exists even when it keeps the width.
//                      mid_se: SEModule {avg_pool, conv1 (C -> C/4, bias), relu, conv2 (bias), hardsigmoid
//                      (clip(0.2·x + 0.5, 0, 1))}, x · gate
//   last_second_conv   ConvBNLayer 1x1 -> make_divisible(scale·class_squeeze) (576 small / 960 large), hardswish
//   avg_pool           AdaptiveAvgPool2d(1)
//   last_conv          1x1 conv -> class_expand (not scaled; no bias)
//   hardswish, dropout Paddle downscale_in_infer Dropout(dropout_prob) (absent with dropout_prob: null)
//   flatten, fc        Flatten, Linear(class_expand, class_num)
// PaddleClas's paddle.nn.BatchNorm (momentum 0.9 = torch's 0.1, epsilon 1e-5) is a BatchNorm2d here, so its full
// names read batch_norm2d_<k> (Paddle: batch_norm_<k>). Initialization is Paddle's default (pplcnet::paddle_init).
#pragma once
#include <torch/arg.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/stop_layer.h>

#include <optional>

namespace featlearn {

namespace mobilenet_v3 {

// ResidualUnit: expand_conv, bottleneck_conv, optional mid_se, linear_conv; shortcut when stride 1 and in == out.
class ResidualUnitImpl : public pplcnet::ChainedLayer {
 public:
  ResidualUnitImpl(int64_t in, int64_t mid, int64_t out, int64_t kernel, int64_t stride, bool use_se,
                   const std::string& act);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 private:
  bool shortcut_ = false;
};

}  // namespace mobilenet_v3

struct MobileNetV3Options {
  MobileNetV3Options(bool large, double scale) : large_(large), scale_(scale) {}
  TORCH_ARG(bool, large);                   // NET_CONFIG "large" (15 blocks) or "small" (11 blocks)
  TORCH_ARG(double, scale);                 // width multiplier (0.35, 0.5, 0.75, 1.0, 1.25)
  TORCH_ARG(int64_t, class_num) = 1000;     // fc outputs
  TORCH_ARG(int64_t, inplanes) = 16;        // stem width before scaling
  TORCH_ARG(int64_t, class_expand) = 1280;  // last_conv outputs
  TORCH_ARG(std::optional<double>, dropout_prob) = 0.2;  // nullopt: no dropout layer
};

class MobileNetV3Impl : public StoppableBackboneImpl {
 public:
  explicit MobileNetV3Impl(MobileNetV3Options options);
  const MobileNetV3Options& options() const { return options_; }

 private:
  MobileNetV3Options options_;
};
TORCH_MODULE(MobileNetV3);

// Adds the ten PaddleClas MobileNetV3 names to backbone_registry() (called by register_builtin_backbones).
void register_mobilenet_v3_backbones();

}  // namespace featlearn
