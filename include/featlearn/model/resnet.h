// ResNet backbones with torchvision's module structure and parameter names, so torchvision state dicts load
// as is (conv1, bn1, relu, maxpool, layer1..layer4 of BasicBlock/Bottleneck, avgpool, fc), plus a
// parameter-free `flatten` between avgpool and fc (a stop-layer target, as in PaddleClas).
//
// Config names (Arch.Backbone.name): ResNet18, ResNet34, ResNet50, ResNet101, ResNet152,
//   ResNet50_vd                  PaddleClas "vd": deep stem of three 3x3 convs (`stem.0`..`stem.8`) and an
//                                average-pool downsample shortcut (`downsample.0` AvgPool2d, .1 conv, .2 bn)
//   ResNet50_last_stage_stride1  ResNet50 with stride 1 in layer4 (14x14 last stage at 224x224)
//   ResNet50_adaptive_max_pool2d ResNet50 whose `avgpool` is a global max pool (AdaptiveMaxPool2d(1)), as
//                                PaddleClas's variant replaces its avg_pool
// Keys: name, pretrained (False | True | path to a torchvision .pth), class_num (fc outputs, default 1000),
//   input_image_channel (default 3), data_format (NCHW only).
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/stop_layer.h>
#include <featlearn/model/batch_norm.h>

#include <string>
#include <vector>

namespace featlearn {

struct ResNetOptions {
  ResNetOptions(std::vector<int64_t> layers, bool bottleneck) : layers_(std::move(layers)), bottleneck_(bottleneck) {}
  TORCH_ARG(std::vector<int64_t>, layers);  // blocks per stage, e.g. {3, 4, 6, 3}
  TORCH_ARG(bool, bottleneck);              // Bottleneck (expansion 4) or BasicBlock
  TORCH_ARG(int64_t, class_num) = 1000;     // fc outputs
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(bool, deep_stem) = false;       // vd stem
  TORCH_ARG(bool, avg_down) = false;        // vd shortcut
  TORCH_ARG(int64_t, last_stride) = 2;      // stride of layer4
  TORCH_ARG(bool, stem_act) = true;         // ReLU after the stem conv(s); PaddleClas `stem_act: null` = none
  TORCH_ARG(bool, global_max_pool) = false; // `avgpool` is AdaptiveMaxPool2d(1) (ResNet50_adaptive_max_pool2d)
};

// Global max pooling, [N, C, H, W] -> [N, C, 1, 1] (torch's AdaptiveMaxPool2d(1)); a leaf StagedModule so that
// run_module() calls it. Its Paddle full name is adaptive_max_pool2d_<k>.
class AdaptiveMaxPool2dImpl : public StagedModule {
 public:
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};
TORCH_MODULE(AdaptiveMaxPool2d);

// torchvision BasicBlock: conv1 bn1 relu conv2 bn2 (+downsample), relu(out + shortcut).
class BasicBlockImpl : public StagedModule {
 public:
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, torch::nn::ModuleList downsample);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  static constexpr int64_t kExpansion = 1;

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::ModuleList downsample{nullptr};
};

// torchvision Bottleneck (v1.5, stride on the 3x3 conv): conv1 bn1 conv2 bn2 conv3 bn3 relu (+downsample).
class BottleneckImpl : public StagedModule {
 public:
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, torch::nn::ModuleList downsample);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  static constexpr int64_t kExpansion = 4;

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::ModuleList downsample{nullptr};
};

class ResNetImpl : public StoppableBackboneImpl {
 public:
  explicit ResNetImpl(ResNetOptions options);
  // stem, max_pool, blocks, blocks[i], avg_pool, flatten, fc (PaddleClas names) -> module paths.
  std::map<std::string, std::string> stop_layer_aliases() const override;
  const ResNetOptions& options() const { return options_; }
  int64_t out_channels() const { return out_channels_; }  // channels after layer4 (512 or 2048)

 private:
  ResNetOptions options_;
  int64_t out_channels_ = 0;
  std::vector<std::string> block_paths_;  // "layer1.0", ... in order
};
TORCH_MODULE(ResNet);

// Options for a config name ("ResNet50", "ResNet50_vd", ...); throws Error for an unknown one.
ResNetOptions resnet_options(const std::string& name);

}  // namespace featlearn
