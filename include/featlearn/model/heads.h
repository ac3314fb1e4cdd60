// Heads (Arch.Head) of RecModel, with PaddleClas's names, keys and defaults (ppcls/arch/gears/).
// Each is registered in head_registry() by register_builtin_heads() under its config name.
//
// Margin heads (ArcMargin, CosMargin, CircleMargin, AdaMargin) hold a weight [embedding_size, class_num]
// (Paddle layout) and compute cos = normalize(features, rows) · normalize(weight, columns): [N, class_num].
// In eval mode (!is_training()) or without a label (undefined tensor) ArcMargin, CosMargin and CircleMargin
// return the plain, unscaled cos, and AdaMargin returns its input embeddings, as PaddleClas does (this is what
// Loss.Eval sees in classification eval and what an `infer_output_key: logits` export outputs).
// With a label (int64/int32, [N] or [N, 1], values in [0, class_num)) in training mode they apply their margin
// to the target column only. A label out of range or of the wrong size is a featlearn::Error.
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/module_base.h>
#include <featlearn/model/necks.h>  // FCOptions

namespace featlearn {

// ---- plain functions (what the modules compute) -----------------------------------------------------------
// [N, E] x [E, C] -> [N, C]: cosine between each feature row and each weight column.
torch::Tensor normalized_cosine(const torch::Tensor& features, const torch::Tensor& weight);
// Validates `label` against N rows and class_num and returns it as int64 [N, 1]. Throws Error naming `head`.
torch::Tensor label_index(const torch::Tensor& label, int64_t n, int64_t class_num, const std::string& head);
// ArcFace: target column phi = cos(θ+m) where cos > cos(π−m) (easy_margin: where cos > 0), else cos − m·sin m
// (easy_margin: cos); other columns cos; all × scale. `index` from label_index().
torch::Tensor arc_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin, double scale,
                                bool easy_margin);
// CosFace: scale · (cos − margin·onehot).
torch::Tensor cos_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin, double scale);
// Circle loss logits: target αp·(cos − (1−m)), others αn·(cos − m), αp = relu(1+m−cos), αn = relu(cos+m)
// (both detached), × scale.
torch::Tensor circle_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin,
                                   double scale);

// ---- ArcMargin ---------------------------------------------------------------------------------------------
struct ArcMarginOptions {
  ArcMarginOptions(int64_t embedding_size, int64_t class_num) : embedding_size_(embedding_size), class_num_(class_num) {}
  TORCH_ARG(int64_t, embedding_size);  // required
  TORCH_ARG(int64_t, class_num);       // required
  TORCH_ARG(double, margin) = 0.5;
  TORCH_ARG(double, scale) = 80.0;
  TORCH_ARG(bool, easy_margin) = false;
 public:
  static ArcMarginOptions from_config(const ConfigNode& node);
};

class ArcMarginImpl : public HeadImpl {
 public:
  explicit ArcMarginImpl(ArcMarginOptions options);
  torch::Tensor forward(torch::Tensor features, torch::Tensor label) override;
  ArcMarginOptions options;
  torch::Tensor weight;  // [embedding_size, class_num], XavierNormal
};
TORCH_MODULE(ArcMargin);

// ---- CosMargin ---------------------------------------------------------------------------------------------
struct CosMarginOptions {
  CosMarginOptions(int64_t embedding_size, int64_t class_num) : embedding_size_(embedding_size), class_num_(class_num) {}
  TORCH_ARG(int64_t, embedding_size);  // required
  TORCH_ARG(int64_t, class_num);       // required
  TORCH_ARG(double, margin) = 0.35;
  TORCH_ARG(double, scale) = 64.0;
 public:
  static CosMarginOptions from_config(const ConfigNode& node);
};

class CosMarginImpl : public HeadImpl {
 public:
  explicit CosMarginImpl(CosMarginOptions options);
  torch::Tensor forward(torch::Tensor features, torch::Tensor label) override;
  CosMarginOptions options;
  torch::Tensor weight;  // [embedding_size, class_num], XavierNormal
};
TORCH_MODULE(CosMargin);

// ---- CircleMargin ------------------------------------------------------------------------------------------
struct CircleMarginOptions {
  // margin and scale have no default in PaddleClas: required in the config too.
  CircleMarginOptions(int64_t embedding_size, int64_t class_num, double margin, double scale)
      : embedding_size_(embedding_size), class_num_(class_num), margin_(margin), scale_(scale) {}
  TORCH_ARG(int64_t, embedding_size);
  TORCH_ARG(int64_t, class_num);
  TORCH_ARG(double, margin);
  TORCH_ARG(double, scale);
 public:
  static CircleMarginOptions from_config(const ConfigNode& node);
};

class CircleMarginImpl : public HeadImpl {
 public:
  explicit CircleMarginImpl(CircleMarginOptions options);
  torch::Tensor forward(torch::Tensor features, torch::Tensor label) override;
  CircleMarginOptions options;
  torch::Tensor weight;  // [embedding_size, class_num], XavierNormal
};
TORCH_MODULE(CircleMargin);

// ---- FC ----------------------------------------------------------------------------------------------------
class FCHeadImpl : public HeadImpl {
 public:
  explicit FCHeadImpl(FCOptions options);
  // features [N, embedding_size] -> [N, class_num]; the label is not used.
  torch::Tensor forward(torch::Tensor features, torch::Tensor label) override;
  FCOptions options;
  torch::nn::Linear fc{nullptr};  // "fc.weight" [class_num, embedding_size], "fc.bias"
};
TORCH_MODULE(FCHead);

// ---- AdaMargin (AdaFace) -----------------------------------------------------------------------------------
// Margin adapted to the feature norm ‖x‖ (an image-quality proxy), taken before normalization:
//   n = clip(‖x‖, 0.001, 100) (detached); EMA: batch_mean ← t_alpha·mean(n) + (1−t_alpha)·batch_mean,
//   batch_std likewise with the (unbiased) std of n (skipped for a batch of one);
//   r = clip(h·(n − batch_mean)/(batch_std + 1e-3), −1, 1);
//   cos clipped to [−1+1e-3, 1−1e-3]; target: cos(clip(θ − m·r, 1e-3, π−1e-3)) − (m + m·r); × s.
// The EMA buffers are updated only in training with a label.
struct AdaMarginOptions {
  AdaMarginOptions() = default;
  TORCH_ARG(int64_t, embedding_size) = 512;  // PaddleClas defaults
  TORCH_ARG(int64_t, class_num) = 70722;
  TORCH_ARG(double, m) = 0.4;
  TORCH_ARG(double, h) = 0.333;
  TORCH_ARG(double, s) = 64.0;
  TORCH_ARG(double, t_alpha) = 1.0;  // PaddleClas's code default (its adaface config sets 0.01)
 public:
  static AdaMarginOptions from_config(const ConfigNode& node);
};

class AdaMarginImpl : public HeadImpl {
 public:
  explicit AdaMarginImpl(AdaMarginOptions options = {});
  torch::Tensor forward(torch::Tensor features, torch::Tensor label) override;
  AdaMarginOptions options;
  torch::Tensor kernel;      // [embedding_size, class_num]: uniform(−1, 1), columns scaled to unit norm
  torch::Tensor t;           // [1] buffer, 0 (kept for checkpoint compatibility; unused, as in PaddleClas)
  torch::Tensor batch_mean;  // [1] buffer, initial 20
  torch::Tensor batch_std;   // [1] buffer, initial 100
  static constexpr double kEps = 1e-3;
  static constexpr double kPi = 3.14159265358979323846;
};
TORCH_MODULE(AdaMargin);

}  // namespace featlearn
