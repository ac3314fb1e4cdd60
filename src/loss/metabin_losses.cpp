// MetaBIN's losses (see metabin_losses.h).
#include <featlearn/loss/metabin_losses.h>

#include "loss_internal.h"

#include <featlearn/common/error.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <limits>

namespace featlearn {
using namespace loss_internal;

namespace {

torch::Tensor normalize_rows(const torch::Tensor& x) { return x / (x.norm(2, -1, true) + 1e-12); }

// PaddleClas's euclidean_dist: [N, N] sqrt(clip(‖a‖² + ‖b‖² − 2a·b, 1e-12)).
torch::Tensor euclidean_dist(const torch::Tensor& x) {
  const torch::Tensor xx = x.pow(2).sum(1, true);  // [N, 1]
  return (xx + xx.t() - 2 * x.matmul(x.t())).clamp_min(1e-12).sqrt();
}

// The hardest positive (max) and negative (min) per row: [N] each; +inf / -inf where a row has none.
std::pair<torch::Tensor, torch::Tensor> hard_example_mining(const torch::Tensor& dist, const torch::Tensor& is_pos,
                                                            const torch::Tensor& is_neg) {
  const double inf = std::numeric_limits<double>::infinity();
  const torch::Tensor zeros = torch::zeros_like(dist);
  const torch::Tensor ap = std::get<0>((dist * is_pos.to(dist.scalar_type()) + zeros.masked_fill(~is_pos, -inf)).max(1));
  const torch::Tensor an = std::get<0>((dist * is_neg.to(dist.scalar_type()) + zeros.masked_fill(~is_neg, inf)).min(1));
  return {ap, an};
}

torch::Tensor ids_of(const torch::Tensor& t, int64_t n, const std::string& loss, const torch::Device& device) {
  return flat_labels(t, n, loss, device);
}

}  // namespace

torch::Tensor ce_loss_for_metabin(const torch::Tensor& logits, const torch::Tensor& labels,
                                  std::optional<double> epsilon, const std::string& reduction) {
  const std::string name = "CELossForMetaBIN";
  if (!logits.defined() || logits.dim() != 2) throw Error(name + ": expected logits [N, C]");
  const int64_t n = logits.size(0), c = logits.size(1);
  const torch::Tensor ids = ids_of(labels, n, name, logits.device());
  check_label_range(ids, c, name, fmt::format("logits have {} classes", c));
  const torch::Tensor logp = torch::log_softmax(logits, 1);
  torch::Tensor per_sample;
  if (epsilon && *epsilon > 0 && *epsilon < 1) {
    if (c < 2) throw Error(name + ": label smoothing needs at least 2 classes (ε/(C − 1))");
    const double eps = *epsilon;
    const torch::Tensor target =
        torch::one_hot(ids, c).to(logits.scalar_type()) * (1 - eps - eps / (c - 1)) + eps / (c - 1);
    per_sample = -(logp * target).sum(1);
  } else {
    per_sample = -logp.gather(1, ids.unsqueeze(1)).squeeze(1);
  }
  return reduction == "sum" ? per_sample.sum() : per_sample.mean();
}

torch::Tensor triplet_loss_for_metabin(const torch::Tensor& features, const torch::Tensor& labels, double margin,
                                       bool normalize_feature) {
  const std::string name = "TripletLossForMetaBIN";
  torch::Tensor x = flat_features(features, name);
  const torch::Tensor ids = ids_of(labels, x.size(0), name, x.device());
  if (normalize_feature) x = normalize_rows(x);
  const torch::Tensor same = ids.unsqueeze(1) == ids.unsqueeze(0);
  auto [ap, an] = hard_example_mining(euclidean_dist(x), same, ~same);
  return torch::relu(ap - an + margin).mean();  // margin_ranking_loss(an, ap, 1, margin)
}

torch::Tensor intra_domain_scatter_loss(const torch::Tensor& features, const torch::Tensor& domains,
                                        bool normalize_feature) {
  const std::string name = "IntraDomainScatterLoss";
  torch::Tensor x = flat_features(features, name);
  const torch::Tensor dom = ids_of(domains, x.size(0), name, x.device());
  if (normalize_feature) x = normalize_rows(x);
  const torch::Tensor unique = std::get<0>(torch::_unique(dom, /*sorted=*/true));
  std::vector<torch::Tensor> per_domain;
  for (int64_t i = 0; i < unique.size(0); ++i) {
    const torch::Tensor f = x.index({dom == unique[i]});  // [n_d, D]
    const torch::Tensor center = f.mean(0, true);           // [1, D]
    const torch::Tensor cos = (center * f).sum(1) / (center.norm(2, 1) * f.norm(2, 1) + 1e-8);
    per_domain.push_back(cos.mean());
  }
  return torch::stack(per_domain).mean();
}

torch::Tensor inter_domain_shuffle_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                        const torch::Tensor& domains, bool normalize_feature) {
  const std::string name = "InterDomainShuffleLoss";
  torch::Tensor x = flat_features(features, name);
  const int64_t n = x.size(0);
  const torch::Tensor ids = ids_of(labels, n, name, x.device());
  const torch::Tensor dom = ids_of(domains, n, name, x.device());
  if (normalize_feature) x = normalize_rows(x);
  const torch::Tensor self = torch::eye(n, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
  const torch::Tensor same_domain = dom.unsqueeze(1) == dom.unsqueeze(0);
  const torch::Tensor diff_id = ids.unsqueeze(1) != ids.unsqueeze(0);
  auto [ap, an] = hard_example_mining(euclidean_dist(x), self | ~same_domain, diff_id & same_domain);
  // Paddle's soft_margin_loss as written (log(1 + exp(−y·x)), y = 1); PaddleClas falls back to a margin ranking
  // loss when it overflows.
  const torch::Tensor soft = torch::log(1 + torch::exp(-(an - ap))).mean();
  if (!std::isinf(soft.item<double>())) return soft;
  return torch::relu(ap - an + 0.3).mean();
}

const torch::Tensor& DomainLossImpl::domains(const std::string& loss) const {
  if (!domains_.defined())
    throw Error(loss + " needs each sample's domain (camera) id, which only Global.train_mode: metabin provides "
                "(use it in the Loss.MetaTrain list of a MetaBIN config)");
  return domains_;
}

void set_metabin_domains(torch::nn::Module& losses, const torch::Tensor& domains) {
  for (auto& m : losses.modules(/*include_self=*/true))
    if (auto* d = dynamic_cast<DomainLossImpl*>(m.get())) d->set_batch_domains(domains);
}

namespace {

class CELossForMetaBINImpl : public LossImpl {
 public:
  CELossForMetaBINImpl(std::optional<double> eps, std::string reduction) : eps_(eps), reduction_(std::move(reduction)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override {
    return ce_loss_for_metabin(model_input(out, "logits", "CELossForMetaBIN"), labels, eps_, reduction_);
  }

 private:
  std::optional<double> eps_;
  std::string reduction_;
};

class TripletLossForMetaBINImpl : public LossImpl {
 public:
  TripletLossForMetaBINImpl(double margin, bool normalize, std::string from)
      : margin_(margin), normalize_(normalize), from_(std::move(from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override {
    return triplet_loss_for_metabin(model_input(out, from_, "TripletLossForMetaBIN"), labels, margin_, normalize_);
  }

 private:
  double margin_;
  bool normalize_;
  std::string from_;
};

class IntraDomainScatterLossImpl : public DomainLossImpl {
 public:
  IntraDomainScatterLossImpl(bool normalize, std::string from) : normalize_(normalize), from_(std::move(from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor&) override {
    const std::string name = "IntraDomainScatterLoss";
    return intra_domain_scatter_loss(model_input(out, from_, name), domains(name), normalize_);
  }

 private:
  bool normalize_;
  std::string from_;
};

class InterDomainShuffleLossImpl : public DomainLossImpl {
 public:
  InterDomainShuffleLossImpl(bool normalize, std::string from) : normalize_(normalize), from_(std::move(from)) {}
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override {
    const std::string name = "InterDomainShuffleLoss";
    return inter_domain_shuffle_loss(model_input(out, from_, name), labels, domains(name), normalize_);
  }

 private:
  bool normalize_;
  std::string from_;
};

std::string feature_from(const ConfigNode& p, const char* def) {
  const std::string v = def ? p.get<std::string>("feature_from", def) : p.require<std::string>("feature_from");
  if (v != "backbone" && v != "neck" && v != "features" && v != "logits")
    p["feature_from"].fail("expected backbone, neck, features or logits, got '" + v + "'");
  return v;
}

}  // namespace

void register_metabin_losses() {
  auto& r = loss_registry();
  r.add("CELossForMetaBIN", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "epsilon", "reduction"});
    const std::string reduction = p.get<std::string>("reduction", "mean");
    if (reduction != "mean" && reduction != "sum")
      p["reduction"].fail("expected mean or sum (a training loss must be a scalar), got '" + reduction + "'");
    return std::make_shared<CELossForMetaBINImpl>(p.optional<double>("epsilon"), reduction);
  });
  r.add("TripletLossForMetaBIN", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin", "normalize_feature", "feature_from"});
    // PaddleClas's default feature_from is "feature", which no model output has: the key is required here.
    return std::make_shared<TripletLossForMetaBINImpl>(p.get<double>("margin", 1.0),
                                                       p.get<bool>("normalize_feature", false),
                                                       feature_from(p, nullptr));
  });
  r.add("IntraDomainScatterLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "normalize_feature", "feature_from"});
    return std::make_shared<IntraDomainScatterLossImpl>(p.require<bool>("normalize_feature"), feature_from(p, nullptr));
  });
  r.add("InterDomainShuffleLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "normalize_feature", "feature_from"});
    return std::make_shared<InterDomainShuffleLossImpl>(p.get<bool>("normalize_feature", true),
                                                        feature_from(p, "features"));
  });
}

}  // namespace featlearn
