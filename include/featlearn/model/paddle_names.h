// Paddle -> featlearn tensor names and layouts, for loading PaddleClas .pdparams files into featlearn models
// (docs/file-formats.md, "Paddle .pdparams": the mapping table).
//
// Most featlearn models are built with PaddleClas's module names (MobileNetV3_*, PPLCNet*, PPLCNetV2*,
// MobileNetV1, VGG, AlexNet, necks, heads, RecModel's backbone./neck./head.), so only the tensor leaf names
// and layouts differ:
//   BatchNorm   <path>._mean -> <path>.running_mean, <path>._variance -> <path>.running_var
//               (Paddle has no num_batches_tracked: featlearn's counter is left as it is)
//   Linear      <path>.weight is [in, out] in Paddle, [out, in] in a featlearn torch::nn::Linear: transposed
//   margin heads (ArcMargin, CosMargin, CircleMargin) store weight [embedding_size, class_num] like Paddle.
// ResNet* (torchvision module structure in featlearn) also renames module paths, one table per family:
//   stem.0.conv|bn -> conv1|bn1 (vb); vd: stem.<i>.conv|bn -> stem.<3i>|stem.<3i+1>
//   blocks.<k> -> layer<s>.<b> (k counts blocks across stages), conv<j>.conv|bn -> conv<j+1>|bn<j+1>,
//   short.conv|bn -> downsample.0|1, or downsample.1|2 where the vd shortcut starts with its average pool.
#pragma once
#include <torch/nn/module.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

class PaddleNames {
 public:
  // The mapping for the tensors of `root` (any module tree: a backbone, a RecModel, ...). ResNet backbones
  // found anywhere in the tree get their structural table under their path.
  explicit PaddleNames(torch::nn::Module& root);

  // "blocks.0.conv0.bn._mean" -> "layer1.0.bn1.running_mean" (for a ResNet root).
  std::string to_featlearn(const std::string& paddle_name) const;
  // The inverse, for messages: "layer1.0.bn1.running_mean" -> "blocks.0.conv0.bn._mean".
  std::string to_paddle(const std::string& featlearn_name) const;
  // True for the featlearn name of a torch::nn::Linear weight (stored transposed in Paddle files).
  bool transposed(const std::string& featlearn_name) const { return linear_weights_.count(featlearn_name) > 0; }

 private:
  std::vector<std::pair<std::string, std::string>> modules_;  // (featlearn path, Paddle path)
  std::set<std::string> linear_weights_;
};

}  // namespace featlearn
