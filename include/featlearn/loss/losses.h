// The built-in losses: options (defaults = PaddleClas's), plain tensor functions and LossImpl modules.
//
// Conventions for every function below:
//  - `features` is [N, D] (higher ranks are flattened to [N, -1]); `labels` is [N] or [N, 1] integer ids.
//  - the result is a scalar; it is differentiable w.r.t. `features` (and CenterLoss centers).
//  - a batch that breaks a loss's assumption (P×K layout, views) throws featlearn::Error naming the sampler
//    settings it needs.
// Config keys (besides `weight`) are the option names; `feature_from` picks a ModelOutput entry
// (backbone|neck|features|logits) where PaddleClas has that key, else the loss reads `features`.
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <featlearn/loss/loss.h>

#include <string>
#include <utility>

namespace featlearn {

// ---- CELoss: cross entropy on `logits`, optional label smoothing --------------------------------------------
struct CELossOptions {
  // Label smoothing ε: target = (1−ε)·onehot + ε/C. Values outside (0, 1) (or null) disable smoothing.
  TORCH_ARG(double, epsilon) = 0.0;
  // "mean" or "sum" over the batch.
  TORCH_ARG(std::string, reduction) = "mean";
};
// `labels`: [N] / [N,1] ids in [0, C), or [N, C] float soft targets (used as given, then smoothed).
torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                      const CELossOptions& options = {});

// ---- SupConLoss (Khosla et al. 2020) ------------------------------------------------------------------------
struct SupConLossOptions {
  // Consecutive `views` samples of the batch are views of one id (PKSampler sample_per_id = views).
  TORCH_ARG(int64_t, views) = 16;
  TORCH_ARG(double, temperature) = 0.07;
  TORCH_ARG(double, base_temperature) = 0.07;
  // "all": every sample is an anchor; "one": only the first view of each id.
  TORCH_ARG(std::string, contrast_mode) = "all";
  // x / (‖x‖ + 1e-12) first.
  TORCH_ARG(bool, normalize_feature) = true;
};
// loss = mean over anchors a of −(T/T_b)·mean_{p∈P(a)} log( exp(s_ap/T) / Σ_{b≠a} exp(s_ab/T) ),
// P(a) = other samples with a's label. Anchors without positives are left out of the mean.
torch::Tensor supcon_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const SupConLossOptions& options = {});

// ---- TripletLoss / TripletLossV2: batch-hard triplet on Euclidean distance ------------------------------------
struct TripletLossOptions {
  TORCH_ARG(double, margin) = 0.5;
  // x / (‖x‖ + 1e-12) first (TripletLossV2 default true; TripletLoss never normalizes).
  TORCH_ARG(bool, normalize_feature) = true;
};
// d_ij = sqrt(max(‖x_i‖²+‖x_j‖²−2x_i·x_j, 1e-12)); per anchor the hardest positive (max d, self included) and
// hardest negative (min d): mean_i relu(d_ap − d_an + margin). Works with any P×K (masks, no reshape); an
// anchor without negatives contributes 0.
torch::Tensor triplet_loss_batch_hard(const torch::Tensor& features, const torch::Tensor& labels,
                                      const TripletLossOptions& options = {});

// ---- CenterLoss ---------------------------------------------------------------------------------------------
// mean_i clamp(‖x_i − c_{y_i}‖², 1e-12, 1e12); `centers` [num_classes, D].
torch::Tensor center_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const torch::Tensor& centers);

// ---- PairwiseCosface (Circle-loss paper's pairwise CosFace) --------------------------------------------------
struct PairwiseCosfaceOptions {
  TORCH_ARG(double, margin) = 0.0;  // required in configs
  TORCH_ARG(double, gamma) = 1.0;   // required in configs
};
// s = cosine similarity; per anchor softplus(logsumexp_{p≠a, same id}(−γ s_ap) + logsumexp_{n}(γ(s_an + m))),
// averaged (an anchor without positives or negatives contributes ≈0, as PaddleClas's −1e8 masking).
torch::Tensor pairwise_cosface_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                    const PairwiseCosfaceOptions& options);

// ---- TripletAngularMarginLoss: batch-hard triplet on cosine similarity --------------------------------------
struct TripletAngularMarginLossOptions {
  TORCH_ARG(double, margin) = 0.5;
  TORCH_ARG(bool, normalize_feature) = true;  // x / ‖x‖
  TORCH_ARG(std::string, reduction) = "mean";  // "mean" or "sum"
  TORCH_ARG(bool, add_absolute) = false;
  TORCH_ARG(double, absolute_loss_weight) = 1.0;
  TORCH_ARG(double, ap_value) = 0.9;
  TORCH_ARG(double, an_value) = 0.5;
};
// s_ap = min cosine over positives (self included), s_an = max over negatives;
// loss = reduce relu(s_an − s_ap + margin); with add_absolute, + w·(mean relu(ap_value − s_ap) +
// mean a_n) where a_n = s_an − an_value if positive, else 1 (PaddleClas's constant).
// `keys`/`key_labels` (optional): compare the queries against these instead of themselves (XBM memory); then
// anchors without positives/negatives use PaddleClas's ±10 masking.
torch::Tensor triplet_angular_margin_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                          const TripletAngularMarginLossOptions& options = {},
                                          const torch::Tensor& keys = {}, const torch::Tensor& key_labels = {});

// ---- ContrastiveLoss ----------------------------------------------------------------------------------------
struct ContrastiveLossOptions {
  TORCH_ARG(double, margin) = 0.5;       // required in configs
  TORCH_ARG(int64_t, embedding_size) = 0;  // required in configs; checked against D when > 0
  TORCH_ARG(bool, normalize_feature) = true;
  TORCH_ARG(double, epsilon) = 1e-5;
};
// s = q·kᵀ (features normalized first when normalize_feature); per query i:
// Σ_{j same id, s_ij < 1−ε} (1 − s_ij) + Σ_{j other id, s_ij > margin} s_ij; summed and divided by Q.
torch::Tensor contrastive_loss(const torch::Tensor& features, const torch::Tensor& labels,
                               const ContrastiveLossOptions& options);
// The same with explicit keys (already normalized as wanted): queries [Q, D] against keys [K, D].
torch::Tensor contrastive_loss_qk(const torch::Tensor& queries, const torch::Tensor& query_labels,
                                  const torch::Tensor& keys, const torch::Tensor& key_labels, double margin,
                                  double epsilon);

// ---- MSMLoss (margin sample mining) -------------------------------------------------------------------------
struct MSMLossOptions {
  TORCH_ARG(int64_t, batch_size) = 120;
  TORCH_ARG(int64_t, samples_each_class) = 2;
  TORCH_ARG(double, margin) = 0.1;
};
// Features L2-normalized, d = squared Euclidean; groups of samples_each_class consecutive samples are ids:
// relu(max_{same group, i≠j} d_ij + margin − min_{different groups} d_ij) over the whole batch.
// requires: a P×K batch (see check_pk_batch); any P (the last batch may be shorter than batch_size).
torch::Tensor msm_loss(const torch::Tensor& features, const torch::Tensor& labels,
                       const MSMLossOptions& options = {});

// ---- EmlLoss (ensemble metric learning) ---------------------------------------------------------------------
struct EmlLossOptions {
  TORCH_ARG(int64_t, batch_size) = 40;
  TORCH_ARG(int64_t, samples_each_class) = 2;
};
// d = squared Euclidean on raw features; per row: pos = d to the K−1 group mates, neg = d to other groups;
// θ = mean exp(pos − max pos) · mean exp(min neg − neg), b = max pos − min neg;
// f(θ,b) = log(1 + β θ e^b)/log(1+β), β = 1e5, made stable above b = 20 with its log-linear asymptote;
// loss = mean over rows.
torch::Tensor eml_loss(const torch::Tensor& features, const torch::Tensor& labels,
                       const EmlLossOptions& options = {});

// ---- NpairsLoss ---------------------------------------------------------------------------------------------
struct NpairsLossOptions {
  TORCH_ARG(double, reg_lambda) = 0.01;
};
// Batch = anchor/positive pairs (2i, 2i+1) of distinct ids: CE(anchors·positivesᵀ, arange) + ½λ·mean ‖x‖².
torch::Tensor npairs_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const NpairsLossOptions& options = {});

// Checks a P×K batch: N divisible by `k`, each run of `k` consecutive samples shares one id, and (when
// `distinct_groups`) the runs have different ids. Throws Error "<loss> needs ...: <how_to_fix>".
void check_pk_batch(const std::string& loss, const torch::Tensor& labels, int64_t k, bool distinct_groups,
                    const std::string& how_to_fix);

// ---- Modules ------------------------------------------------------------------------------------------------

class CELossImpl : public LossImpl {
 public:
  explicit CELossImpl(CELossOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  CELossOptions options;
};
TORCH_MODULE(CELoss);

class SupConLossImpl : public LossImpl {
 public:
  explicit SupConLossImpl(SupConLossOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  SupConLossOptions options;
};
TORCH_MODULE(SupConLoss);

// TripletLoss (margin=1.0, never normalizes, reads `features`) and TripletLossV2 (margin=0.5,
// normalize_feature=true, feature_from) share this module.
class TripletLossImpl : public LossImpl {
 public:
  explicit TripletLossImpl(TripletLossOptions options = {}, std::string feature_from = "features")
      : options(std::move(options)), feature_from(std::move(feature_from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  TripletLossOptions options;
  std::string feature_from;
};
TORCH_MODULE(TripletLoss);

class CenterLossImpl : public LossImpl {
 public:
  // centers ~ N(0, 1), [num_classes, feat_dim], trainable.
  CenterLossImpl(int64_t num_classes, int64_t feat_dim, std::string feature_from = "features");
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  torch::Tensor centers;
  std::string feature_from;
};
TORCH_MODULE(CenterLoss);

class PairwiseCosfaceImpl : public LossImpl {
 public:
  explicit PairwiseCosfaceImpl(PairwiseCosfaceOptions options) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  PairwiseCosfaceOptions options;
};
TORCH_MODULE(PairwiseCosface);

// XBM (Wang et al. 2020): a FIFO of the latest `size` detached features and labels. State (buffers
// feats [size, D], targets [size], state [ptr, full]) is saved with checkpoints.
class CrossBatchMemoryImpl : public torch::nn::Module {
 public:
  CrossBatchMemoryImpl(int64_t size, int64_t embedding_size);
  // Writes at ptr; a batch that does not fit goes to the last n slots and ptr wraps to 0 (PaddleClas).
  void enqueue_dequeue(const torch::Tensor& feats, const torch::Tensor& targets);
  // Features and labels stored so far (all `size` once the queue has wrapped).
  std::pair<torch::Tensor, torch::Tensor> get() const;
  int64_t size;
  torch::Tensor feats, targets, state;
};
TORCH_MODULE(CrossBatchMemory);

class TripletAngularMarginLossImpl : public LossImpl {
 public:
  explicit TripletAngularMarginLossImpl(TripletAngularMarginLossOptions options = {},
                                        std::string feature_from = "features")
      : options(std::move(options)), feature_from(std::move(feature_from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  TripletAngularMarginLossOptions options;
  std::string feature_from;
};
TORCH_MODULE(TripletAngularMarginLoss);

// Cross-batch memory variant of a loss L(q, k): L(x, x) + xbm_weight·L(x, memory) once more than
// start_iter training iterations have run (the batch is enqueued first). The memory advances only in
// training mode. Iteration count and memory are buffers (resumable).
struct XbmOptions {
  TORCH_ARG(int64_t, xbm_size) = 0;
  TORCH_ARG(double, xbm_weight) = 1.0;
  TORCH_ARG(int64_t, start_iter) = 0;
};

class TripletAngularMarginLossXbmImpl : public LossImpl {
 public:
  TripletAngularMarginLossXbmImpl(TripletAngularMarginLossOptions options, XbmOptions xbm, int64_t feat_dim,
                                  std::string feature_from = "features");
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  TripletAngularMarginLossOptions options;
  XbmOptions xbm_options;
  std::string feature_from;
  CrossBatchMemory xbm{nullptr};
  torch::Tensor iter;  // [1] int64 buffer
};
TORCH_MODULE(TripletAngularMarginLossXbm);

class ContrastiveLossImpl : public LossImpl {
 public:
  explicit ContrastiveLossImpl(ContrastiveLossOptions options, std::string feature_from = "features")
      : options(std::move(options)), feature_from(std::move(feature_from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  ContrastiveLossOptions options;
  std::string feature_from;
};
TORCH_MODULE(ContrastiveLoss);

class ContrastiveLossXbmImpl : public LossImpl {
 public:
  ContrastiveLossXbmImpl(ContrastiveLossOptions options, XbmOptions xbm, std::string feature_from = "features");
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  ContrastiveLossOptions options;
  XbmOptions xbm_options;
  std::string feature_from;
  CrossBatchMemory xbm{nullptr};
  torch::Tensor iter;  // [1] int64 buffer
};
TORCH_MODULE(ContrastiveLossXbm);

class MSMLossImpl : public LossImpl {
 public:
  explicit MSMLossImpl(MSMLossOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  MSMLossOptions options;
};
TORCH_MODULE(MSMLoss);

class EmlLossImpl : public LossImpl {
 public:
  explicit EmlLossImpl(EmlLossOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  EmlLossOptions options;
};
TORCH_MODULE(EmlLoss);

class NpairsLossImpl : public LossImpl {
 public:
  explicit NpairsLossImpl(NpairsLossOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  NpairsLossOptions options;
};
TORCH_MODULE(NpairsLoss);

}  // namespace featlearn
