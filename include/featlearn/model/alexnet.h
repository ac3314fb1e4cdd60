// AlexNet with PaddleClas's structure, parameter names and initialization (docs/config.md, "Arch.Backbone").
//
// Config name: AlexNet. Keys: name, pretrained, use_ssld, class_num.
//
// Module tree, in PaddleClas's sublayer order (the paths are BackboneStopLayer names):
//   _conv1 .. _conv5     _conv1, _conv2, _conv5: ConvPoolLayer {relu, _conv, _pool}: conv (with bias), relu,
//                        MaxPool2d(3, stride 2); _conv3, _conv4: Conv2d (with bias), followed by a functional
//                        relu (no module). Convs: 3->64 k11 s4 p2, 64->192 k5 p2, 192->384 k3 p1,
//                        384->256 k3 p1, 256->256 k3 p1.
//   _drop1, _fc6         Paddle Dropout(0.5, downscale_in_infer) on the 256x6x6 = 9216 flattened features
//                        (fc6 needs 6x6 maps: a 224x224 input), Linear 9216 -> 4096, functional relu
//   _drop2, _fc7         Dropout, Linear 4096 -> 4096, functional relu
//   _fc8                 Linear 4096 -> class_num
// A ConvPoolLayer's relu is registered before its conv (as in PaddleClas) but runs after it, so it is not a
// stop layer; a stop at `_convK._conv` (or `_conv3`, `_fc6`, ...) returns that layer's output, before the relu
// that follows it. PaddleClas's AlexNet is a plain Layer without stop_after, so BackboneStopLayer is a
// featlearn extension there (docs/paddleclas-differences.md, M7).
// Initialization (PaddleClas's ParamAttr): weights and biases Uniform(-s, s), s = 1/sqrt(fan_in) of the conv
// (in·k·k); for _fc6, _fc7 and _fc8 all s = 1/sqrt(9216).
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/stop_layer.h>

#include <memory>
#include <string>

namespace featlearn {

namespace alexnet {

// PaddleClas's ConvPoolLayer (act "relu"): relu (registered first), _conv, _pool; runs _conv, relu, _pool.
class ConvPoolLayerImpl : public StagedModule {
 public:
  ConvPoolLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, double stdv);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  torch::nn::Conv2d conv{nullptr};
};

}  // namespace alexnet

struct AlexNetOptions {
  TORCH_ARG(int64_t, class_num) = 1000;  // _fc8 outputs
};

class AlexNetImpl : public StoppableBackboneImpl {
 public:
  explicit AlexNetImpl(AlexNetOptions options = {});
  torch::Tensor forward(torch::Tensor x) override;
  const AlexNetOptions& options() const { return options_; }

 private:
  AlexNetOptions options_;
  std::shared_ptr<alexnet::ConvPoolLayerImpl> conv1_, conv2_, conv5_;
  torch::nn::Conv2d conv3_{nullptr}, conv4_{nullptr};
  std::shared_ptr<torch::nn::Module> drop1_, drop2_;  // Paddle Dropout
  torch::nn::Linear fc6_{nullptr}, fc7_{nullptr}, fc8_{nullptr};
};
TORCH_MODULE(AlexNet);

// Adds AlexNet to backbone_registry() (called by register_builtin_backbones).
void register_alexnet_backbone();

}  // namespace featlearn
