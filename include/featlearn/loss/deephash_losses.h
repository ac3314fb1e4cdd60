// Deep hashing losses of PaddleClas's DeepHash configs (docs/config.md, "Loss"): DCHLoss, DSHSDLoss, LCDSHLoss.
// Each is a plain function of tensors and a LossImpl reading the model output. Conventions as losses.h:
// `features` [N, K] (K = code length; higher ranks flattened), `logits` [N, C], `labels` [N] / [N, 1] class ids;
// the result is a scalar, differentiable w.r.t. features (and logits). Notation: y_i one-hot labels,
// s_ij = 1 when y_i = y_j (the labels' one-hot inner product), else 0; means are over all N² pairs (i = j
// included) or all N samples.
#pragma once
#include <torch/arg.h>
#include <torch/types.h>

#include <featlearn/loss/loss.h>

namespace featlearn {

// ---- DCHLoss: Deep Cauchy Hashing (Cao et al., CVPR 2018); reads `features` ----------------------------------
struct DCHLossOptions {
  TORCH_ARG(double, gamma) = 20.0;   // Cauchy scale γ > 0 (required in configs)
  TORCH_ARG(double, lambda) = 0.1;   // quantization weight λ (config key `_lambda`, required)
  TORCH_ARG(int64_t, n_class) = 10;  // labels' class count (required)
};
// d(a, b) = (1 − min(cos(a, b), 0.99)) · K/2, cos(a, b) = a·b / max(‖a‖‖b‖, 1e-4);
// w_ij = s_ij·N²/Σs + (1 − s_ij)·N²/Σ(1 − s) when the batch has both similar and dissimilar pairs, else 1;
// loss = mean_ij w_ij·(s_ij·log(d_ij/γ) + log(1 + γ/d_ij)) + λ·mean_i log(1 + d(|f_i|, 1)/γ).
torch::Tensor dch_loss(const torch::Tensor& features, const torch::Tensor& labels, const DCHLossOptions& options);

// ---- DSHSDLoss: Deep Supervised Hashing based on Stable Distribution (Yu et al., IEEE Access 2019) -----------
// Reads `features` (the codes) and `logits` (the classifier, so it needs an Arch.Head).
struct DSHSDLossOptions {
  TORCH_ARG(double, alpha) = 0.05;       // weight of the distance term (required in configs)
  TORCH_ARG(bool, multi_label) = false;  // sigmoid cross entropy instead of softmax cross entropy
};
// D_ij = ‖f_i − f_j‖², m = 2K, t_ij = 1 − s_ij:
// L_d = mean_ij ((1 − t_ij)/2 · D_ij + t_ij/2 · max(m − D_ij, 0));
// L_c = mean_i −Σ_c y_ic·log softmax(z_i)_c, or with multi_label mean_i Σ_c (z_ic − y_ic·z_ic + log(1 + e^−z_ic));
// loss = L_c + α·L_d. C (the one-hot width) is the logits' width.
torch::Tensor dshsd_loss(const torch::Tensor& features, const torch::Tensor& logits, const torch::Tensor& labels,
                         const DSHSDLossOptions& options);

// ---- LCDSHLoss: Locality-Constrained Deep Supervised Hashing (Zhu et al., IJCAI 2017); reads `features` -------
struct LCDSHLossOptions {
  TORCH_ARG(int64_t, n_class) = 10;  // labels' class count (required in configs)
  TORCH_ARG(double, lambda) = 3.0;   // weight of the binary-consistency term (config key `_lambda`, required)
};
// σ_ij = 2·s_ij − 1, θ_ij = clip(f_i·f_j / 2, −50, 50), b = sign(f) (no gradient), β_ij = b_i·b_j / 2:
// loss = mean_ij log(1 + exp(−σ_ij·θ_ij)) + λ·mean_ij (sigmoid(θ_ij) − sigmoid(β_ij))².
torch::Tensor lcdsh_loss(const torch::Tensor& features, const torch::Tensor& labels,
                         const LCDSHLossOptions& options);

class DCHLossImpl : public LossImpl {
 public:
  explicit DCHLossImpl(DCHLossOptions o) : options(o) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  DCHLossOptions options;
};

class DSHSDLossImpl : public LossImpl {
 public:
  explicit DSHSDLossImpl(DSHSDLossOptions o) : options(o) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  DSHSDLossOptions options;
};

class LCDSHLossImpl : public LossImpl {
 public:
  explicit LCDSHLossImpl(LCDSHLossOptions o) : options(o) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  LCDSHLossOptions options;
};

// Adds DCHLoss, DSHSDLoss and LCDSHLoss to loss_registry() (called by register_builtin_losses()). Keys (besides
// `weight`): DCHLoss gamma, _lambda, n_class; DSHSDLoss alpha, multi_label; LCDSHLoss n_class, _lambda.
void register_deephash_losses();

}  // namespace featlearn
