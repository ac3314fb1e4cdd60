// MobileNetV1 with PaddleClas's structure, parameter names and semantics (docs/config.md, "Arch.Backbone"), so
// that a PaddleClas state dict maps onto it name by name (BatchNorm statistics as running_mean / running_var).
//
// Config names: MobileNetV1 (scale 1.0), MobileNetV1_x0_75, MobileNetV1_x0_5, MobileNetV1_x0_25.
// Keys: name, pretrained, use_ssld, class_num, return_patterns, return_stages (docs/config.md).
//
// Module tree (module paths are BackboneStopLayer names; PaddleClas's stage patterns `blocks[0]`, `blocks[2]`,
// `blocks[4]`, `blocks[10]` work as they are):
//   conv        ConvBNLayer {conv, bn, relu}: 3x3, stride 2, padding 1, 3 -> int(32·scale)
//   blocks      Sequential of 13 DepthwiseSeparable {depthwise_conv, pointwise_conv}, both ConvBNLayers:
//               depthwise 3x3 (stride 1 or 2, groups = channels), pointwise 1x1; channels int(c·scale)
//   avg_pool    AdaptiveAvgPool2d(1)
//   flatten     Flatten
//   fc          Linear(int(1024·scale), class_num)
// Convolutions have no bias. PaddleClas uses paddle.nn.BatchNorm (momentum 0.9 = torch's 0.1, epsilon 1e-5), the
// same computation as BatchNorm2D on 4-D input: here a BatchNorm2d, so its Paddle full names read batch_norm2d_<k>
// (Paddle: batch_norm_<k>).
// Initialization as PaddleClas: conv and fc weights KaimingNormal (N(0, sqrt(2 / fan_in))), fc bias 0, BN 1 / 0.
#pragma once
#include <torch/arg.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/stop_layer.h>

namespace featlearn {

namespace mobilenet_v1 {

// ConvBNLayer: conv (no bias), bn, relu.
class ConvBNLayerImpl : public pplcnet::ChainedLayer {
 public:
  ConvBNLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, int64_t groups = 1);
};

// DepthwiseSeparable: depthwise_conv (3x3, groups = in), pointwise_conv (1x1).
class DepthwiseSeparableImpl : public pplcnet::ChainedLayer {
 public:
  DepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride);
};

}  // namespace mobilenet_v1

struct MobileNetV1Options {
  explicit MobileNetV1Options(double scale = 1.0) : scale_(scale) {}
  TORCH_ARG(double, scale);              // width multiplier: 0.25, 0.5, 0.75 or 1.0
  TORCH_ARG(int64_t, class_num) = 1000;  // fc outputs
};

class MobileNetV1Impl : public StoppableBackboneImpl {
 public:
  explicit MobileNetV1Impl(MobileNetV1Options options);
  const MobileNetV1Options& options() const { return options_; }

 private:
  MobileNetV1Options options_;
};
TORCH_MODULE(MobileNetV1);

// Adds MobileNetV1, MobileNetV1_x0_25, _x0_5, _x0_75 to backbone_registry() (called by register_builtin_backbones).
void register_mobilenet_v1_backbones();

}  // namespace featlearn
