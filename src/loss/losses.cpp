// The built-in losses (see losses.h for the formulas). PaddleClas semantics, written from its formulas; the
// batch-hard mining uses masks instead of PaddleClas's reshape so any P×K batch works.
#include <featlearn/loss/losses.h>

#include "loss_internal.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>

namespace featlearn {

using namespace loss_internal;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

torch::Tensor normalize_eps(const torch::Tensor& x) {  // x / (‖x‖ + 1e-12), PaddleClas's SupCon/TripletV2
  return x / (x.norm(2, {1}, true) + 1e-12);
}
torch::Tensor normalize_clamped(const torch::Tensor& x) {  // F.normalize: x / max(‖x‖, 1e-12)
  return x / x.norm(2, {1}, true).clamp_min(1e-12);
}
torch::Tensor normalize_plain(const torch::Tensor& x) {  // x / ‖x‖
  return x / x.norm(2, {1}, true);
}

torch::Tensor reduce(const torch::Tensor& per_sample, const std::string& reduction) {
  return reduction == "sum" ? per_sample.sum() : per_sample.mean();
}

}  // namespace

// ---- batch layout check -------------------------------------------------------------------------------------

void check_pk_batch(const std::string& loss, const torch::Tensor& labels, int64_t k, bool distinct_groups,
                    const std::string& how_to_fix) {
  FL_ASSERT(k >= 1, "group size must be positive");
  const torch::Tensor ids = labels.reshape({-1}).to(torch::kCPU, torch::kLong).contiguous();
  const int64_t n = ids.numel();
  const int64_t* v = ids.data_ptr<int64_t>();
  const std::string need = fmt::format("{} needs batches of {} consecutive samples per id{}", loss, k,
                                       distinct_groups ? ", each group a different id" : "");
  auto fail = [&](const std::string& got) { throw Error(need + " (" + got + "): " + how_to_fix); };
  if (n % k != 0) fail(fmt::format("got a batch of {} samples, not a multiple of {}", n, k));
  std::map<int64_t, int64_t> first_group;  // id -> first sample of its group
  for (int64_t g = 0; g < n; g += k) {
    for (int64_t i = g + 1; i < g + k; ++i)
      if (v[i] != v[g])
        fail(fmt::format("samples {}..{} have labels {}", g, g + k - 1,
                         fmt::join(std::vector<int64_t>(v + g, v + g + k), ", ")));
    if (distinct_groups) {
      auto [it, fresh] = first_group.emplace(v[g], g);
      if (!fresh) fail(fmt::format("id {} fills the groups at samples {} and {}", v[g], it->second, g));
    }
  }
}

namespace {
std::string pk_hint(int64_t k, const std::string& key) {
  return fmt::format(
      "use PKSampler with sample_per_id={0} (or DistributedRandomIdentitySampler with num_instances={0}) and a "
      "batch_size that is a multiple of {0} ({1}={0})",
      k, key);
}
}  // namespace

// ---- functions ----------------------------------------------------------------------------------------------

torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& labels, const CELossOptions& options) {
  const std::string name = "CELoss";
  if (!logits.defined() || logits.dim() != 2) throw Error(name + ": expected logits [N, C]");
  const int64_t n = logits.size(0), c = logits.size(1);
  const double eps = options.epsilon();
  const bool smooth = eps > 0 && eps < 1;
  const torch::Tensor logp = torch::log_softmax(logits, 1);
  torch::Tensor per_sample;
  if (labels.defined() && labels.is_floating_point() && labels.dim() == 2 && labels.size(1) == c && c > 1) {
    torch::Tensor target = labels.to(logits.device(), logits.scalar_type());
    if (smooth) target = target * (1 - eps) + eps / c;
    per_sample = -(logp * target).sum(1);
  } else {
    const torch::Tensor ids = flat_labels(labels, n, name, logits.device());
    check_label_range(ids, c, name, fmt::format("logits have {} classes", c));
    if (smooth) {
      const torch::Tensor target = torch::one_hot(ids, c).to(logits.scalar_type()) * (1 - eps) + eps / c;
      per_sample = -(logp * target).sum(1);
    } else {
      per_sample = -logp.gather(1, ids.unsqueeze(1)).squeeze(1);
    }
  }
  return reduce(per_sample, options.reduction());
}

torch::Tensor supcon_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const SupConLossOptions& options) {
  const std::string name = "SupConLoss";
  torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0), views = options.views();
  const torch::Tensor ids = flat_labels(labels, n, name, x.device());
  check_pk_batch(name, ids, views, false,
                 fmt::format("the sampler must give views={0} consecutive samples per id, e.g. {1}", views,
                             pk_hint(views, "views")));
  if (options.normalize_feature()) x = normalize_eps(x);
  const double t = options.temperature();
  const auto opts_long = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  torch::Tensor anchor_idx;
  if (options.contrast_mode() == "all")
    anchor_idx = torch::arange(n, opts_long);
  else if (options.contrast_mode() == "one")
    anchor_idx = torch::arange(0, n, views, opts_long);  // the first view of each id
  else
    throw Error(name + ": unknown contrast_mode '" + options.contrast_mode() + "' (valid: all, one)");

  torch::Tensor logits = x.index_select(0, anchor_idx).matmul(x.t()) / t;  // [M, N]
  logits = logits - std::get<0>(logits.max(1, true)).detach();
  const torch::Tensor self = anchor_idx.unsqueeze(1) == torch::arange(n, opts_long).unsqueeze(0);
  const torch::Tensor pos = (ids.index_select(0, anchor_idx).unsqueeze(1) == ids.unsqueeze(0)) & ~self;
  const torch::Tensor exp_sum = logits.exp().masked_fill(self, 0).sum(1, true);
  const torch::Tensor log_prob = logits - exp_sum.log();
  const torch::Tensor npos = pos.sum(1).to(x.scalar_type());
  const torch::Tensor mean_log_prob_pos = log_prob.masked_fill(~pos, 0).sum(1) / npos.clamp_min(1);
  const torch::Tensor per_anchor = -(t / options.base_temperature()) * mean_log_prob_pos;
  const torch::Tensor valid = (npos > 0).to(x.scalar_type());
  return (per_anchor * valid).sum() / valid.sum().clamp_min(1);
}

torch::Tensor triplet_loss_batch_hard(const torch::Tensor& features, const torch::Tensor& labels,
                                      const TripletLossOptions& options) {
  const std::string name = "TripletLoss";
  torch::Tensor x = flat_features(features, name);
  const torch::Tensor ids = flat_labels(labels, x.size(0), name, x.device());
  if (options.normalize_feature()) x = normalize_eps(x);
  const torch::Tensor sq = x.pow(2).sum(1, true);
  const torch::Tensor dist = (sq + sq.t() - 2 * x.matmul(x.t())).clamp_min(1e-12).sqrt();
  const torch::Tensor same = ids.unsqueeze(1) == ids.unsqueeze(0);
  const torch::Tensor dist_ap = std::get<0>(dist.masked_fill(~same, -kInf).max(1));  // hardest positive
  const torch::Tensor dist_an = std::get<0>(dist.masked_fill(same, kInf).min(1));    // hardest negative
  return torch::relu(dist_ap - dist_an + options.margin()).mean();
}

torch::Tensor center_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const torch::Tensor& centers) {
  const std::string name = "CenterLoss";
  const torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0);
  if (centers.dim() != 2 || centers.size(1) != x.size(1))
    throw Error(fmt::format("{}: features have {} dimensions but feat_dim is {}: set feat_dim to the "
                            "embedding size",
                            name, x.size(1), centers.dim() == 2 ? centers.size(1) : -1));
  const torch::Tensor ids = flat_labels(labels, n, name, x.device());
  check_label_range(ids, centers.size(0), name, fmt::format("num_classes={}", centers.size(0)));
  const torch::Tensor d = (x - centers.index_select(0, ids)).pow(2).sum(1);
  return d.clamp(1e-12, 1e12).sum() / n;
}

torch::Tensor pairwise_cosface_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                    const PairwiseCosfaceOptions& options) {
  const std::string name = "PairwiseCosface";
  const torch::Tensor e = normalize_clamped(flat_features(features, name));
  const int64_t n = e.size(0);
  const torch::Tensor ids = flat_labels(labels, n, name, e.device());
  const torch::Tensor s = e.matmul(e.t());
  const torch::Tensor same = (ids.unsqueeze(1) == ids.unsqueeze(0)).to(s.scalar_type());
  const torch::Tensor is_pos = same - torch::eye(n, s.options());
  const torch::Tensor is_neg = 1 - same;
  constexpr double kMasked = -99999999.;  // PaddleClas's masking constant
  const double g = options.gamma(), m = options.margin();
  const torch::Tensor logit_p = -g * s * is_pos + kMasked * (1 - is_pos);
  const torch::Tensor logit_n = g * (s * is_neg + m) + kMasked * (1 - is_neg);
  return torch::softplus(torch::logsumexp(logit_p, {1}) + torch::logsumexp(logit_n, {1})).mean();
}

torch::Tensor triplet_angular_margin_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                          const TripletAngularMarginLossOptions& options,
                                          const torch::Tensor& keys, const torch::Tensor& key_labels) {
  const std::string name = "TripletAngularMarginLoss";
  torch::Tensor q = flat_features(features, name);
  const torch::Tensor q_ids = flat_labels(labels, q.size(0), name, q.device());
  torch::Tensor k, k_ids;
  if (keys.defined()) {  // memory keys: used as given
    k = flat_features(keys, name).to(q.scalar_type());
    k_ids = flat_labels(key_labels, k.size(0), name, q.device());
    if (options.normalize_feature()) q = normalize_clamped(q);
  } else {
    if (options.normalize_feature()) q = normalize_plain(q);
    k = q;
    k_ids = q_ids;
  }
  const torch::Tensor s = q.matmul(k.t());  // [Q, K] cosine similarity
  const torch::Tensor same = q_ids.unsqueeze(1) == k_ids.unsqueeze(0);
  const torch::Tensor s_ap = std::get<0>(s.masked_fill(~same, kInf).min(1));  // least similar positive
  const torch::Tensor s_an = std::get<0>(s.masked_fill(same, -kInf).max(1));  // most similar negative
  torch::Tensor loss = reduce(torch::relu(s_an - s_ap + options.margin()), options.reduction());
  if (options.add_absolute()) {
    const torch::Tensor abs_ap = torch::relu(options.ap_value() - s_ap);
    // A hinge: 0 where s_an is already below an_value (PaddleClas adds a constant 1 there, which inflates the
    // reported loss without changing the gradient; docs/paddleclas-differences.md).
    const torch::Tensor abs_an = torch::relu(s_an - options.an_value());
    loss = (abs_an.mean() + abs_ap.mean()) * options.absolute_loss_weight() + loss;
  }
  return loss;
}

torch::Tensor contrastive_loss_qk(const torch::Tensor& queries, const torch::Tensor& query_labels,
                                  const torch::Tensor& keys, const torch::Tensor& key_labels, double margin,
                                  double epsilon) {
  const torch::Tensor s = queries.matmul(keys.t());  // [Q, K]
  const torch::Tensor sd = s.detach();
  const torch::Tensor same = query_labels.unsqueeze(1) == key_labels.unsqueeze(0);
  const torch::Tensor pos = same & (sd < 1 - epsilon);
  const torch::Tensor neg = ~same & (sd > margin);
  const torch::Tensor total = (1 - s).masked_fill(~pos, 0).sum() + s.masked_fill(~neg, 0).sum();
  return total / queries.size(0);
}

torch::Tensor contrastive_loss(const torch::Tensor& features, const torch::Tensor& labels,
                               const ContrastiveLossOptions& options) {
  const std::string name = "ContrastiveLoss";
  torch::Tensor x = flat_features(features, name);
  if (options.embedding_size() > 0 && x.size(1) != options.embedding_size())
    throw Error(fmt::format("{}: features have {} dimensions but embedding_size is {}", name, x.size(1),
                            options.embedding_size()));
  const torch::Tensor ids = flat_labels(labels, x.size(0), name, x.device());
  if (options.normalize_feature()) x = normalize_clamped(x);
  return contrastive_loss_qk(x, ids, x, ids, options.margin(), options.epsilon());
}

namespace {
void check_pk_options(const std::string& name, int64_t n, int64_t k) {
  if (k < 2) throw Error(fmt::format("{}: samples_each_class must be at least 2 (got {})", name, k));
  if (n < 2 * k)
    throw Error(fmt::format("{} needs at least 2 ids per batch (got {} samples with samples_each_class={}): "
                            "{}",
                            name, n, k, pk_hint(k, "samples_each_class")));
}
// Positional group masks of a P×K batch: (same group, not self), (other group).
std::pair<torch::Tensor, torch::Tensor> group_masks(int64_t n, int64_t k, const torch::Device& device) {
  const torch::Tensor idx = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(device));
  const torch::Tensor grp = torch::div(idx, k, "floor");
  const torch::Tensor same = grp.unsqueeze(1) == grp.unsqueeze(0);
  const torch::Tensor self = idx.unsqueeze(1) == idx.unsqueeze(0);
  return {same & ~self, ~same};
}
}  // namespace

torch::Tensor msm_loss(const torch::Tensor& features, const torch::Tensor& labels, const MSMLossOptions& options) {
  const std::string name = "MSMLoss";
  torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0), k = options.samples_each_class();
  const torch::Tensor ids = flat_labels(labels, n, name, x.device());
  check_pk_options(name, n, k);
  check_pk_batch(name, ids, k, true,
                 pk_hint(k, "samples_each_class") + "; batch_size in the loss config is " +
                     std::to_string(options.batch_size()));
  x = normalize_plain(x);
  const torch::Tensor d = squared_distances(x);
  const auto [pos, neg] = group_masks(n, k, x.device());
  const torch::Tensor hard_pos = d.masked_select(pos).max();
  const torch::Tensor hard_neg = d.masked_select(neg).min();
  return torch::relu(hard_pos + options.margin() - hard_neg);
}

torch::Tensor eml_loss(const torch::Tensor& features, const torch::Tensor& labels, const EmlLossOptions& options) {
  const std::string name = "EmlLoss";
  const torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0), k = options.samples_each_class();
  const torch::Tensor ids = flat_labels(labels, n, name, x.device());
  check_pk_options(name, n, k);
  check_pk_batch(name, ids, k, true,
                 pk_hint(k, "samples_each_class") + "; batch_size in the loss config is " +
                     std::to_string(options.batch_size()));
  const torch::Tensor d = squared_distances(x);
  const auto [pos_mask, neg_mask] = group_masks(n, k, x.device());
  const torch::Tensor pos = d.masked_select(pos_mask).view({n, k - 1});
  const torch::Tensor neg = d.masked_select(neg_mask).view({n, n - k});
  const torch::Tensor pos_max = std::get<0>(pos.max(1, true));
  const torch::Tensor pos_mean = (pos - pos_max).exp().mean(1, true);
  const torch::Tensor neg_min = std::get<0>(neg.min(1, true));
  const torch::Tensor neg_mean = (neg_min - neg).exp().mean(1, true);
  const torch::Tensor bias = pos_max - neg_min;
  const torch::Tensor theta = neg_mean * pos_mean;

  constexpr double kBeta = 100000.0, kThresh = 20.0;
  const double log1p_beta = std::log(1 + kBeta);
  auto surrogate = [&](const torch::Tensor& b) { return torch::log(1 + kBeta * theta * b.exp()) / log1p_beta; };
  auto asymptote = [&](const torch::Tensor& b) { return (theta.log() + b + std::log(kBeta)) / log1p_beta; };
  const torch::Tensor gap = torch::full_like(bias, kThresh);
  const torch::Tensor loss = surrogate(torch::minimum(bias, gap)) + asymptote(torch::maximum(bias, gap)) -
                             surrogate(gap);
  return loss.mean();
}

torch::Tensor npairs_loss(const torch::Tensor& features, const torch::Tensor& labels,
                          const NpairsLossOptions& options) {
  const std::string name = "NpairsLoss";
  const torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0);
  const torch::Tensor ids = flat_labels(labels, n, name, x.device());
  check_pk_batch(name, ids, 2, true,
                 "the batch must be anchor/positive pairs of different ids: use PKSampler with sample_per_id=2 "
                 "(or DistributedRandomIdentitySampler with num_instances=2) and an even batch_size");
  const torch::Tensor pairs = x.view({n / 2, 2, -1});
  const torch::Tensor anchors = pairs.select(1, 0), positives = pairs.select(1, 1);
  const torch::Tensor s = anchors.matmul(positives.t());  // [P, P]; pair i is class i
  const torch::Tensor xent = -torch::log_softmax(s, 1).diagonal().mean();
  const torch::Tensor reg = x.pow(2).sum(1).mean();
  return xent + 0.5 * options.reg_lambda() * reg;
}

// ---- modules ------------------------------------------------------------------------------------------------

torch::Tensor CELossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return ce_loss(model_input(out, "logits", "CELoss"), labels, options);
}

torch::Tensor SupConLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return supcon_loss(model_input(out, "features", "SupConLoss"), labels, options);
}

torch::Tensor TripletLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return triplet_loss_batch_hard(model_input(out, feature_from, "TripletLoss"), labels, options);
}

CenterLossImpl::CenterLossImpl(int64_t num_classes, int64_t feat_dim, std::string feature_from_)
    : feature_from(std::move(feature_from_)) {
  if (num_classes < 1 || feat_dim < 1)
    throw Error(fmt::format("CenterLoss: num_classes ({}) and feat_dim ({}) must be positive", num_classes,
                            feat_dim));
  centers = register_parameter("centers", torch::randn({num_classes, feat_dim}));
}

torch::Tensor CenterLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  torch::Tensor x = model_input(out, feature_from, "CenterLoss");
  return center_loss(x, labels, centers.to(x.scalar_type()));
}

torch::Tensor PairwiseCosfaceImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return pairwise_cosface_loss(model_input(out, "features", "PairwiseCosface"), labels, options);
}

torch::Tensor TripletAngularMarginLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return triplet_angular_margin_loss(model_input(out, feature_from, "TripletAngularMarginLoss"), labels, options);
}

torch::Tensor ContrastiveLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return contrastive_loss(model_input(out, feature_from, "ContrastiveLoss"), labels, options);
}

torch::Tensor MSMLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return msm_loss(model_input(out, "features", "MSMLoss"), labels, options);
}

torch::Tensor EmlLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return eml_loss(model_input(out, "features", "EmlLoss"), labels, options);
}

torch::Tensor NpairsLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return npairs_loss(model_input(out, "features", "NpairsLoss"), labels, options);
}

// ---- cross-batch memory -------------------------------------------------------------------------------------

CrossBatchMemoryImpl::CrossBatchMemoryImpl(int64_t size_, int64_t embedding_size) : size(size_) {
  if (size < 1 || embedding_size < 1)
    throw Error(fmt::format("cross-batch memory: xbm_size ({}) and the embedding size ({}) must be positive",
                            size, embedding_size));
  feats = register_buffer("feats", torch::zeros({size, embedding_size}));
  targets = register_buffer("targets", torch::zeros({size}, torch::kLong));
  state = register_buffer("state", torch::zeros({2}, torch::kLong));  // [write position, wrapped/full]
}

void CrossBatchMemoryImpl::enqueue_dequeue(const torch::Tensor& f, const torch::Tensor& t) {
  torch::NoGradGuard no_grad;
  const int64_t n = f.size(0);
  if (n > size)
    throw Error(fmt::format("cross-batch memory: xbm_size={} is smaller than the batch ({} samples): raise "
                            "xbm_size",
                            size, n));
  if (f.size(1) != feats.size(1))
    throw Error(fmt::format("cross-batch memory: features have {} dimensions but the memory holds {} (set "
                            "embedding_size / feat_dim to the embedding size)",
                            f.size(1), feats.size(1)));
  if (feats.device() != f.device()) to(f.device());  // moves the buffers in place
  int64_t ptr = state[0].item<int64_t>();
  if (ptr + n > size) {
    feats.narrow(0, size - n, n).copy_(f);
    targets.narrow(0, size - n, n).copy_(t);
    ptr = 0;
    state[1].fill_(1);
  } else {
    feats.narrow(0, ptr, n).copy_(f);
    targets.narrow(0, ptr, n).copy_(t);
    ptr += n;
    if (ptr == size) state[1].fill_(1);
  }
  state[0].fill_(ptr);
}

std::pair<torch::Tensor, torch::Tensor> CrossBatchMemoryImpl::get() const {
  if (state[1].item<int64_t>() != 0) return {feats, targets};
  const int64_t ptr = state[0].item<int64_t>();
  return {feats.narrow(0, 0, ptr), targets.narrow(0, 0, ptr)};
}

namespace {
// Advances the iteration buffer in training mode; true once past start_iter.
bool xbm_active(torch::nn::Module& m, torch::Tensor& iter, int64_t start_iter) {
  if (!m.is_training()) return false;
  torch::NoGradGuard no_grad;
  iter.add_(1);
  return iter.item<int64_t>() > start_iter;
}
}  // namespace

TripletAngularMarginLossXbmImpl::TripletAngularMarginLossXbmImpl(TripletAngularMarginLossOptions options_,
                                                                 XbmOptions xbm_options_, int64_t feat_dim,
                                                                 std::string feature_from_)
    : options(std::move(options_)), xbm_options(std::move(xbm_options_)), feature_from(std::move(feature_from_)) {
  xbm = register_module("xbm", CrossBatchMemory(xbm_options.xbm_size(), feat_dim));
  iter = register_buffer("iter", torch::zeros({1}, torch::kLong));
}

torch::Tensor TripletAngularMarginLossXbmImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  const std::string name = "TripletAngularMarginLoss_XBM";
  torch::Tensor x = flat_features(model_input(out, feature_from, name), name);
  const torch::Tensor ids = flat_labels(labels, x.size(0), name, x.device());
  if (options.normalize_feature()) x = normalize_clamped(x);
  auto plain = options;
  plain.normalize_feature(false);  // already normalized
  torch::Tensor loss = triplet_angular_margin_loss(x, ids, plain, x, ids);
  if (xbm_active(*this, iter, xbm_options.start_iter())) {
    xbm->enqueue_dequeue(x.detach(), ids);
    auto [mf, mt] = xbm->get();
    loss = loss + xbm_options.xbm_weight() * triplet_angular_margin_loss(x, ids, plain, mf, mt);
  }
  return loss;
}

ContrastiveLossXbmImpl::ContrastiveLossXbmImpl(ContrastiveLossOptions options_, XbmOptions xbm_options_,
                                               std::string feature_from_)
    : options(std::move(options_)), xbm_options(std::move(xbm_options_)), feature_from(std::move(feature_from_)) {
  xbm = register_module("xbm", CrossBatchMemory(xbm_options.xbm_size(), options.embedding_size()));
  iter = register_buffer("iter", torch::zeros({1}, torch::kLong));
}

torch::Tensor ContrastiveLossXbmImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  const std::string name = "ContrastiveLoss_XBM";
  torch::Tensor x = flat_features(model_input(out, feature_from, name), name);
  const torch::Tensor ids = flat_labels(labels, x.size(0), name, x.device());
  if (options.normalize_feature()) x = normalize_clamped(x);
  torch::Tensor loss = contrastive_loss_qk(x, ids, x, ids, options.margin(), options.epsilon());
  if (xbm_active(*this, iter, xbm_options.start_iter())) {
    xbm->enqueue_dequeue(x.detach(), ids);
    auto [mf, mt] = xbm->get();
    loss = loss + xbm_options.xbm_weight() *
                      contrastive_loss_qk(x, ids, mf.to(x.scalar_type()), mt, options.margin(), options.epsilon());
  }
  return loss;
}

}  // namespace featlearn
