// VGG backbones with PaddleClas's structure, parameter names and semantics (docs/config.md, "Arch.Backbone").
//
// Config names: VGG11, VGG13, VGG16, VGG19, and VGG19Sigmoid: VGG19 whose `fc2` is wrapped as
//   `fc2.origin_layer` (the Linear) + `fc2.sigmoid`, so the sigmoid acts on fc2's output, before the shared
//   relu and dropout; fc3 (class_num outputs) stays linear (VGG19_CIFAR10_DeepHash's 48-bit codes are fc3's).
// Keys: name, pretrained, use_ssld, class_num, stop_grad_layers, return_patterns, return_stages.
//
// Module tree, in PaddleClas's sublayer order (what BackboneStopLayer truncates by):
//   conv_block_1 .. conv_block_5   ConvBlock {conv1[, conv2[, conv3, conv4]], max_pool, relu}: 3x3 convs
//                  (padding 1, no bias) each followed by the block's relu, then MaxPool2d(2, 2); widths 64, 128,
//                  256, 512, 512; convs per block 1-1-2-2-2 (VGG11), 2-2-2-2-2 (13), 2-2-3-3-3 (16), 2-2-4-4-4 (19)
//   relu           after fc1 and after fc2 (one module called twice: not a stop layer)
//   flatten        [N, 512, 7, 7] -> [N, 25088]: fc1 needs a 224x224 input (224..255 gives 7x7 too)
//   drop           Paddle Dropout(0.5, downscale_in_infer) after fc1's and fc2's relu (twice: not a stop layer)
//   fc1, fc2, fc3  Linear 25088 -> 4096 -> 4096 -> class_num
// forward: blocks, flatten, fc1, relu, drop, fc2, relu, drop, fc3. A block's relu is registered after its convs
// and max_pool but runs between them, so it is not a stop layer either; a stop at a block's conv or max_pool
// removes the relu (Identity) as PaddleClas's stop_after does. A stop at fc1 or fc2 returns that layer's output
// (PaddleClas would still apply the relu and drop registered before it).
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/stop_layer.h>

#include <memory>
#include <string>
#include <vector>

namespace featlearn {

namespace vgg {

// PaddleClas's ConvBlock: `groups` (1..4) 3x3 convs, each followed by relu, then max_pool.
class ConvBlockImpl : public StagedModule {
 public:
  ConvBlockImpl(int64_t in, int64_t out, int64_t groups);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 private:
  std::vector<torch::nn::Conv2d> convs_;
};

// PaddleClas's SigmoidSuffix (VGG19Sigmoid): origin_layer then sigmoid.
class SigmoidSuffixImpl : public pplcnet::ChainedLayer {
 public:
  explicit SigmoidSuffixImpl(std::shared_ptr<torch::nn::Module> origin_layer);
};

}  // namespace vgg

struct VGGOptions {
  explicit VGGOptions(std::vector<int64_t> config) : config_(std::move(config)) {}
  TORCH_ARG(std::vector<int64_t>, config);       // convs per block, 5 values in 1..4 (e.g. {2, 2, 4, 4, 4})
  TORCH_ARG(int64_t, class_num) = 1000;          // fc3 outputs
  TORCH_ARG(int64_t, stop_grad_layers) = 0;      // conv_block_1..conv_block_k get requires_grad false
  TORCH_ARG(bool, sigmoid_fc2) = false;          // VGG19Sigmoid: fc2 becomes SigmoidSuffix
};

class VGGImpl : public StoppableBackboneImpl {
 public:
  explicit VGGImpl(VGGOptions options);
  // blocks, flatten, fc1, relu, drop, fc2, relu, drop, fc3 (see above), through a StopCursor. describe's
  // per-child listing (forward_observed) runs the children in registration order, which has the same shapes.
  torch::Tensor forward(torch::Tensor x) override;
  const VGGOptions& options() const { return options_; }

 private:
  VGGOptions options_;
  std::vector<std::shared_ptr<torch::nn::Module>> blocks_;
  std::shared_ptr<torch::nn::Module> drop_, fc2_;  // Paddle Dropout; Linear or SigmoidSuffix
  torch::nn::Linear fc1_{nullptr}, fc3_{nullptr};
};
TORCH_MODULE(VGG);

// Adds VGG11, VGG13, VGG16, VGG19, VGG19Sigmoid to backbone_registry() (called by register_builtin_backbones).
void register_vgg_backbones();

}  // namespace featlearn
