// The exported inference model (docs/architecture.md, "File formats"): a directory with
//   inference.yaml  format: featlearn.inference, format_version, Arch (no Head unless infer_output_key is
//                   logits; Backbone.pretrained removed), image_shape, feature_normalize, feature_binarize,
//                   transform_ops (the Eval preprocessing)
//   inference.ckpt  the weights (a featlearn checkpoint without optimizer state)
// It loads without the training config.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/model/rec_model.h>

#include <string>

namespace featlearn {

constexpr int64_t kInferenceFormatVersion = 1;

struct InferenceModel {
  Config spec;  // inference.yaml
  RecModel model{nullptr};
  std::string output_key = "features";
  bool add_softmax = false;
  bool feature_normalize = true;
  std::string feature_binarize;

  static InferenceModel load(const std::string& dir);
  // [N, C, H, W] preprocessed images -> [N, D] outputs as exported (normalized / softmaxed per the spec).
  torch::Tensor embed(const torch::Tensor& images);
};

}  // namespace featlearn
