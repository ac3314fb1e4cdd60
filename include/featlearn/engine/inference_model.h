// The exported inference model (docs/architecture.md, "File formats"): a directory with
//   inference.yaml  format: featlearn.inference, format_version, Arch (no Head unless infer_output_key is
//                   logits; Backbone.pretrained removed), image_shape, feature_normalize, feature_binarize,
//                   transform_ops (the Eval preprocessing), device (Global.device at export: cpu | gpu),
//                   onnx* (model.onnx's file, opset, input/output names and shapes)
//   inference.ckpt  the weights (a featlearn checkpoint without optimizer state)
//   model.onnx      the inference computation as ONNX (docs/deploy.md, "ONNX export")
// It loads without the training config.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/model/rec_model.h>

#include <memory>
#include <optional>
#include <string>

namespace featlearn {

namespace deploy {
class FrozenForward;
}

// Version 2 added `device`; version 3 the ONNX keys onnx, onnx_opset, onnx_input, onnx_input_shape, onnx_output,
// onnx_output_shape (present unless exported with --no-onnx; docs/file-formats.md).
constexpr int64_t kInferenceFormatVersion = 3;

struct InferenceModel {
  Config spec;  // inference.yaml
  RecModel model{nullptr};
  std::string output_key = "features";
  bool add_softmax = false;
  bool feature_normalize = true;
  std::string feature_binarize;
  c10::Device device{c10::kCPU};

  // `device` "cpu" | "gpu", or "" for inference.yaml's `device` (default cpu); gpu without CUDA is an error.
  static InferenceModel load(const std::string& dir, const std::string& device = "");
  // [N, C, H, W] preprocessed images -> [N, D] CPU outputs as exported (normalized / softmaxed per the spec),
  // computed on `device`.
  torch::Tensor embed(const torch::Tensor& images);
  // The computation embed runs (and the ONNX model holds, docs/deploy.md): the model's output_key output
  // flattened to [N, D] float32, softmaxed with add_softmax, then postprocess_features (normalize / binarize)
  // unless it is logits. `images` on `device`; the result stays there. Call under NoGradGuard.
  torch::Tensor outputs(const torch::Tensor& images) const;

  // On the CPU, embed runs the model through an optimized frozen graph, traced on first use per image shape
  // (docs/deploy.md, "Fast extraction"); FEATLEARN_EAGER=1 in the environment runs it eager instead. The graph
  // holds a copy of the weights as they were at the first embed call; copies made after it share it.
  std::shared_ptr<deploy::FrozenForward> cpu_graph;
  // embed's CPU graph path: the outputs embed returns, or nullopt when `device` is not the CPU or
  // FEATLEARN_EAGER=1. Thread-safe.
  std::optional<torch::Tensor> embed_with_cpu_graph(const torch::Tensor& images);
};

}  // namespace featlearn
