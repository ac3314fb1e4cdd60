// PP-LCNet backbones with PaddleClas's structure, parameter names and semantics (docs/config.md,
// "Arch.Backbone"), so that a PaddleClas state dict maps onto them name by name.
//
// Config names: PPLCNet_x0_25, PPLCNet_x0_35, PPLCNet_x0_5, PPLCNet_x0_75, PPLCNet_x1_0, PPLCNet_x1_5,
//   PPLCNet_x2_0, PPLCNet_x2_5 (scale 0.25 ... 2.5), PPLCNetBaseNet (scale from the `scale` key, default 1.0),
//   PPLCNet_x2_5_Tanh (PPLCNet_x2_5 whose `fc` is wrapped as `fc.origin_layer` + `fc.tanh`: tanh on the output).
// Keys: see PPLCNetOptions and docs/config.md.
//
// Module tree (module paths are BackboneStopLayer names; `blocks5[2].dw_conv` also works):
//   conv1                 ConvBNLayer {conv, bn, act}, 3 -> make_divisible(16·scale), stride stride_list[0]
//   blocks2 .. blocks6    Sequential of DepthwiseSeparable {dw_conv, [se], pw_conv}
//                         (PaddleClas's stages_pattern: blocks2, blocks3, blocks4, blocks5, blocks6)
//   avg_pool              AdaptiveAvgPool2d(1)
//   last_conv, act, dropout   1x1 conv to class_expand (no bias), activation, Paddle downscale_in_infer
//                         Dropout (only with use_last_conv)
//   flatten, fc           Flatten, Linear(class_num)
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/stop_layer.h>
#include <featlearn/model/batch_norm.h>

#include <string>
#include <vector>

namespace featlearn {

// Parameter-free layers with PaddlePaddle's semantics where they differ from LibTorch's, named after Paddle's
// classes so that BackboneStopLayer's Paddle full names count them as Paddle does (`dropout_0`,
// `hardsigmoid_3`, `layer_list_1`). Leaf StagedModules: run_module() calls them like any other module.
namespace paddle_nn {

// paddle.nn.Dropout(p, mode="downscale_in_infer"): in training each value is kept with probability 1 - p and
// NOT rescaled; in eval the input is multiplied by 1 - p. (LibTorch's dropout is Paddle's upscale_in_train:
// kept values divided by 1 - p in training, identity in eval.) Requires 0 <= p <= 1.
class DropoutImpl : public StagedModule {
 public:
  explicit DropoutImpl(double p);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  double p() const { return p_; }

 private:
  double p_;
};
TORCH_MODULE(Dropout);

// paddle.nn.Hardsigmoid: clip(slope·x + offset, 0, 1). Paddle's layer uses F.hardsigmoid's defaults, slope
// 0.1666667 and offset 0.5 (x/6 + 1/2; the 0.2 slope is PaddleClas's MobileNetV3, which passes it explicitly).
class HardsigmoidImpl : public StagedModule {
 public:
  explicit HardsigmoidImpl(double slope = 0.1666667, double offset = 0.5) : slope_(slope), offset_(offset) {}
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 private:
  double slope_, offset_;
};
TORCH_MODULE(Hardsigmoid);

class SigmoidImpl : public StagedModule {
 public:
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};
TORCH_MODULE(Sigmoid);

class TanhImpl : public StagedModule {
 public:
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};
TORCH_MODULE(Tanh);

class ReLU6Impl : public StagedModule {
 public:
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};
TORCH_MODULE(ReLU6);

// paddle.nn.LayerList: a ModuleList (run_module runs it in order where it is a chain) with Paddle's type name.
class LayerListImpl : public torch::nn::ModuleListImpl {
 public:
  using torch::nn::ModuleListImpl::ModuleListImpl;
};
TORCH_MODULE(LayerList);

}  // namespace paddle_nn

// Building blocks shared by PP-LCNet and PP-LCNetV2 (pp_lcnet_v2.h).
namespace pplcnet {

// PaddleClas's make_divisible: v rounded to the nearest multiple of `divisor` (halves up), at least `divisor`,
// and never below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8);

// A Paddle layer whose forward is its sublayers applied in registration order.
class ChainedLayer : public StagedModule {
 public:
  using StagedModule::StagedModule;
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};

// ConvBNLayer: conv (kernel k, padding (k-1)/2, no bias), bn, act. `act`: "hardswish", "relu", "relu6", or ""
// (no act sublayer: PP-LCNetV2's use_act=False).
class ConvBNLayerImpl : public ChainedLayer {
 public:
  ConvBNLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, const std::string& act);
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
};

// SEModule: avg_pool, conv1 (C -> C/reduction, bias), relu, conv2 (-> C, bias), a gate registered as
// `hardsigmoid` (PP-LCNet: Paddle Hardsigmoid; PP-LCNetV2: Sigmoid under the same name; PaddleClas's
// MobileNetV3: its Hardsigmoid with slope 0.2); returns x · gate.
class SEModuleImpl : public ChainedLayer {
 public:
  SEModuleImpl(int64_t channels, int64_t reduction, bool sigmoid_gate, double hardsigmoid_slope = 0.1666667);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};

// DepthwiseSeparable: dw_conv (depthwise ConvBNLayer, kernel dw_size, stride), optional se, pw_conv (1x1).
class DepthwiseSeparableImpl : public ChainedLayer {
 public:
  DepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride, int64_t dw_size, bool use_se,
                         const std::string& act);
};

// PaddleClas's TanhSuffix (PPLCNet_x2_5_Tanh): origin_layer then tanh.
class TanhSuffixImpl : public ChainedLayer {
 public:
  explicit TanhSuffixImpl(std::shared_ptr<torch::nn::Module> origin_layer);
};

// The activation layer for a PaddleClas `act` name ("hardswish", "relu", "relu6"); throws Error otherwise.
std::shared_ptr<torch::nn::Module> make_activation(const std::string& act);

// Paddle's default initialization, applied to every module under `root`: Conv2d weights Normal(0,
// sqrt(2 / fan_in)) (Paddle's conv default and KaimingNormal alike), biases 0; Linear weights Xavier uniform,
// bias 0; BatchNorm weight 1, bias 0.
void paddle_init(torch::nn::Module& root);

}  // namespace pplcnet

struct PPLCNetOptions {
  explicit PPLCNetOptions(double scale = 1.0) : scale_(scale) {}
  TORCH_ARG(double, scale);                 // width multiplier
  TORCH_ARG(int64_t, class_num) = 1000;     // fc outputs
  TORCH_ARG(double, dropout_prob) = 0.2;    // Paddle downscale_in_infer dropout after last_conv
  TORCH_ARG(int64_t, class_expand) = 1280;  // last_conv outputs
  TORCH_ARG(bool, use_last_conv) = true;    // false: no last_conv/act/dropout, fc reads the pooled blocks6
  // Stride of conv1 and of the first block of blocks3..blocks6.
  TORCH_ARG(std::vector<int64_t>, stride_list) = std::vector<int64_t>{2, 2, 2, 2, 2};
  TORCH_ARG(std::string, act) = "hardswish";  // hardswish | relu | relu6
  TORCH_ARG(bool, tanh) = false;              // PPLCNet_x2_5_Tanh: fc becomes TanhSuffix
};

class PPLCNetImpl : public StoppableBackboneImpl {
 public:
  explicit PPLCNetImpl(PPLCNetOptions options);
  const PPLCNetOptions& options() const { return options_; }

 private:
  PPLCNetOptions options_;
};
TORCH_MODULE(PPLCNet);

// Adds the PP-LCNet names to backbone_registry() (called by register_builtin_backbones).
void register_pplcnet_backbones();

namespace pplcnet {
// `pretrained` of a PaddleClas backbone config: resolve_pretrained (model/pretrained.h) with PaddleClas's weight
// file `paddle_file` (e.g. "PPLCNet_x2_5_ssld_pretrained.pdparams"; "" when PaddleClas publishes none) for True.
std::string read_pretrained(const ConfigNode& node, const std::string& paddle_file);
// Refuses PaddleClas's TheseusLayer output options (return_patterns, return_stages) unless null: RecModel
// takes one tensor from the backbone (use BackboneStopLayer).
void refuse_return_options(const ConfigNode& node);
}  // namespace pplcnet

}  // namespace featlearn
