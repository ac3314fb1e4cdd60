// MobileNetV3 backbones with torchvision's mobilenet_v3_small / mobilenet_v3_large structure and parameter
// names (features, avgpool, classifier), plus a parameter-free `flatten` between avgpool and classifier.
//
// Config names: TorchvisionMobileNetV3_small_x1_0, TorchvisionMobileNetV3_large_x1_0 (the PaddleClas names
// MobileNetV3_small_x1_0 ... build PaddleClas's structure, mobilenet_v3.h).
// Keys: name, pretrained (False | True | path to a torchvision .pth), class_num (default 1000),
//   dropout_prob (classifier dropout, default 0.2), class_expand (hidden width of the classifier, default
//   1024 small / 1280 large).
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/stop_layer.h>

#include <string>

namespace featlearn {

struct TorchvisionMobileNetV3Options {
  explicit TorchvisionMobileNetV3Options(bool large) : large_(large) {}
  TORCH_ARG(bool, large);
  TORCH_ARG(int64_t, class_num) = 1000;
  TORCH_ARG(double, dropout_prob) = 0.2;
  TORCH_ARG(int64_t, class_expand) = 0;  // 0: torchvision's last_channel (1024 small, 1280 large)
};

// Parameter-free activations (LibTorch 1.13 has the functions but no modules).
class HardswishImpl : public torch::nn::Module {
 public:
  torch::Tensor forward(const torch::Tensor& x) { return torch::hardswish(x); }
};
TORCH_MODULE(Hardswish);
class HardsigmoidImpl : public torch::nn::Module {
 public:
  torch::Tensor forward(const torch::Tensor& x) { return torch::hardsigmoid(x); }
};
TORCH_MODULE(Hardsigmoid);

// torchvision SqueezeExcitation: avgpool, fc1 (1x1 conv), fc2, activation (ReLU), scale_activation
// (Hardsigmoid); returns x * scale.
class SqueezeExcitationImpl : public StagedModule {
 public:
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 private:
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};

// torchvision InvertedResidual: `block` (Sequential of conv-bn-act stages and an optional SE), with a
// residual connection when stride is 1 and in == out channels.
class InvertedResidualImpl : public StagedModule {
 public:
  InvertedResidualImpl(int64_t in, int64_t kernel, int64_t expanded, int64_t out, bool se, bool hardswish,
                       int64_t stride);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 private:
  torch::nn::ModuleList block{nullptr};
  bool use_residual_ = false;
};

class TorchvisionMobileNetV3Impl : public StoppableBackboneImpl {
 public:
  explicit TorchvisionMobileNetV3Impl(TorchvisionMobileNetV3Options options);
  // PaddleClas names: conv, blocks, blocks[i], last_second_conv, avg_pool, flatten, last_conv, hardswish,
  // dropout, fc -> module paths.
  std::map<std::string, std::string> stop_layer_aliases() const override;
  const TorchvisionMobileNetV3Options& options() const { return options_; }

 private:
  TorchvisionMobileNetV3Options options_;
  int64_t num_blocks_ = 0;
};
TORCH_MODULE(TorchvisionMobileNetV3);

}  // namespace featlearn
