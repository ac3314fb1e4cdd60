#include <featlearn/data/rng.h>
#include <featlearn/data/transforms.h>
#include <featlearn/index/embedder.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>

namespace featlearn {

namespace fs = std::filesystem;

Embedder::Embedder(const std::string& model_dir, const ConfigNode& transform_ops, bool use_gpu)
    : model_dir_(model_dir), model_(InferenceModel::load(model_dir, "cpu")) {
  const auto spec = model_.spec.root();
  const ConfigNode ops = transform_ops.defined() ? transform_ops : spec["transform_ops"];
  pipeline_ = std::make_unique<TransformPipeline>(TransformPipeline::create(ops));
  preprocess_yaml_ = ops.defined() ? YAML::Dump(ops.yaml()) : "";
  fingerprint_ = file_fingerprint({(fs::path(model_dir) / "inference.yaml").string(),
                                   (fs::path(model_dir) / "inference.ckpt").string()});
  if (use_gpu) {
    if (torch::cuda::is_available()) {
      model_.device = torch::Device(torch::kCUDA, 0);
      model_.model->to(model_.device);
    } else {
      fmt::print(stderr, "warning: Global.use_gpu is true but this LibTorch has no CUDA device; running on the CPU\n");
    }
  }
  input_shape_ = spec["image_shape"].defined() ? spec["image_shape"].as<std::vector<int64_t>>()
                                               : std::vector<int64_t>{3, 224, 224};
  if (input_shape_.size() != 3) spec["image_shape"].fail("image_shape must be [C, H, W]");
  dim_ = embed(torch::zeros({1, input_shape_[0], input_shape_[1], input_shape_[2]})).size(1);
}

Embedder::~Embedder() = default;

torch::Tensor Embedder::to_tensor(const cv::Mat& img, const std::string& what) const {
  if (img.empty() || img.dims != 2) throw BadImageError(fmt::format("image {}: preprocessing gave no image", what));
  auto t = torch::empty({img.channels(), img.rows, img.cols}, torch::kFloat32);
  hwc_to_chw_float(img, t.data_ptr<float>());
  return t;
}

torch::Tensor Embedder::preprocess_file(const std::string& path) const {
  Rng rng(0);
  cv::Mat img = pipeline_->decode(path);
  pipeline_->apply(img, rng);
  return to_tensor(img, "'" + path + "'");
}

torch::Tensor Embedder::preprocess_bytes(const void* data, size_t size, const std::string& what) const {
  Rng rng(0);
  cv::Mat img = pipeline_->decode_bytes(data, size, what);
  pipeline_->apply(img, rng);
  return to_tensor(img, what);
}

torch::Tensor Embedder::embed(const torch::Tensor& images) {
  std::lock_guard<std::mutex> lock(forward_mutex_);
  return model_.embed(images).contiguous();
}

}  // namespace featlearn
