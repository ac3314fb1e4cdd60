// Images -> features with an exported inference model, for the gallery index and the service.
#pragma once
#include <featlearn/engine/checksum.h>
#include <featlearn/engine/inference_model.h>
#include <opencv2/core.hpp>
#include <torch/types.h>

#include <memory>
#include <mutex>
#include <string>

namespace featlearn {

class TransformPipeline;

class Embedder {
 public:
  // Loads `model_dir` (a `featlearn export` directory). `transform_ops` (RecPreProcess.transform_ops) replaces
  // the model's own preprocessing when defined. `use_gpu` runs the model on CUDA when LibTorch has it (a
  // warning and the CPU otherwise).
  Embedder(const std::string& model_dir, const ConfigNode& transform_ops, bool use_gpu = false);
  ~Embedder();

  // xxHash64 of the model's inference.yaml and inference.ckpt bytes, as 16 hex digits.
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& model_dir() const { return model_dir_; }
  int64_t dim() const { return dim_; }  // output features per image
  const std::string& preprocess_yaml() const { return preprocess_yaml_; }
  const std::string& feature_binarize() const { return model_.feature_binarize; }
  // [C, H, W] of the preprocessed image.
  const std::vector<int64_t>& input_shape() const { return input_shape_; }

  // Decode + preprocess -> [C, H, W] float32. Throw BadImageError (unreadable, undecodable, over the limit).
  torch::Tensor preprocess_file(const std::string& path) const;
  torch::Tensor preprocess_bytes(const void* data, size_t size, const std::string& what) const;
  // [N, C, H, W] -> [N, D] float32 features, as exported (normalized / binarized). Serialized internally.
  torch::Tensor embed(const torch::Tensor& images);

 private:
  torch::Tensor to_tensor(const cv::Mat& img, const std::string& what) const;
  std::string model_dir_;
  InferenceModel model_;
  std::unique_ptr<TransformPipeline> pipeline_;
  std::string fingerprint_;
  std::string preprocess_yaml_;
  std::vector<int64_t> input_shape_;
  int64_t dim_ = 0;
  std::mutex forward_mutex_;
};

}  // namespace featlearn
