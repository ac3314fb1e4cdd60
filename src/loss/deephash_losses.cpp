// DCHLoss, DSHSDLoss, LCDSHLoss (formulas in deephash_losses.h; PaddleClas differences L5-L7 in
// docs/paddleclas-differences.md).
#include <featlearn/loss/deephash_losses.h>

#include "loss_internal.h"

#include <featlearn/common/error.h>

#include <torch/torch.h>

#include <fmt/format.h>

#include <cmath>

namespace featlearn {

using namespace loss_internal;

namespace {

// [N, C] float one-hot rows of checked labels (PaddleClas's one_hot(label, n_class)); kept [N, C] for N = 1
// and C = 1, where PaddleClas's squeeze() would drop an axis.
torch::Tensor hash_one_hot(const torch::Tensor& labels, int64_t n, int64_t n_class, const std::string& loss,
                           const std::string& what, const torch::Tensor& like) {
  const torch::Tensor ids = flat_labels(labels, n, loss, like.device());
  check_label_range(ids, n_class, loss, what);
  return torch::one_hot(ids, n_class).to(like.scalar_type());
}

// DCH's d(a_i, b_j) for all pairs: (1 − min(cos, 0.99))·K/2, [Na, Nb]. The norms use torch's norm, whose
// gradient at a zero row is 0 (PaddleClas's pow(0.5) gives NaN there).
torch::Tensor cauchy_distance(const torch::Tensor& a, const torch::Tensor& b) {
  const double k = static_cast<double>(a.size(1));
  const torch::Tensor norm = torch::matmul(a.norm(2, {1}, true), b.norm(2, {1}, true).t());
  const torch::Tensor cos = torch::matmul(a, b.t()) / norm.clamp_min(1e-4);
  return (1.0 - cos.clamp_max(0.99)) * (k / 2.0);
}

}  // namespace

torch::Tensor dch_loss(const torch::Tensor& features, const torch::Tensor& labels, const DCHLossOptions& o) {
  const std::string name = "DCHLoss";
  const torch::Tensor f = flat_features(features, name);
  const int64_t n = f.size(0);
  const torch::Tensor y = hash_one_hot(labels, n, o.n_class(), name, fmt::format("n_class is {}", o.n_class()), f);
  const torch::Tensor s = torch::matmul(y, y.t());  // [N, N] 1 = same class
  const double total = static_cast<double>(n * n);
  const double similar = s.sum().item<double>(), dissimilar = total - similar;
  torch::Tensor w = torch::ones_like(s);
  if (similar > 0 && dissimilar > 0) w = s * (total / similar) + (1 - s) * (total / dissimilar);
  const torch::Tensor d = cauchy_distance(f, f);
  const double g = o.gamma();
  const torch::Tensor cauchy = w * (s * torch::log(d / g) + torch::log1p(g / d));
  const torch::Tensor to_one = cauchy_distance(f.abs(), torch::ones({1, f.size(1)}, f.options()));  // [N, 1]
  return cauchy.mean() + o.lambda() * torch::log1p(to_one / g).mean();
}

torch::Tensor dshsd_loss(const torch::Tensor& features, const torch::Tensor& logits, const torch::Tensor& labels,
                         const DSHSDLossOptions& o) {
  const std::string name = "DSHSDLoss";
  const torch::Tensor f = flat_features(features, name);
  const int64_t n = f.size(0);
  if (!logits.defined() || logits.dim() != 2 || logits.size(0) != n)
    throw Error(fmt::format("{}: expected logits [{}, C] (an Arch.Head's output)", name, n));
  const int64_t c = logits.size(1);
  const torch::Tensor y = hash_one_hot(labels, n, c, name, fmt::format("the logits have {} classes", c), logits);
  const torch::Tensor dissimilar = (torch::matmul(y, y.t()) == 0).to(f.scalar_type());
  const torch::Tensor dist = squared_distances(f);
  const double margin = 2.0 * static_cast<double>(f.size(1));
  const torch::Tensor ld = ((1 - dissimilar) / 2 * dist + dissimilar / 2 * (margin - dist).clamp_min(0)).mean();
  // Stable forms of PaddleClas's expressions: log_softmax for log(softmax), softplus(−z) for log(1 + e^−z).
  torch::Tensor lc;
  if (o.multi_label())
    lc = (logits - y * logits + torch::softplus(-logits)).sum(1).mean();
  else
    lc = -(torch::log_softmax(logits, 1) * y).sum(1).mean();
  return lc + o.alpha() * ld;
}

torch::Tensor lcdsh_loss(const torch::Tensor& features, const torch::Tensor& labels, const LCDSHLossOptions& o) {
  const std::string name = "LCDSHLoss";
  const torch::Tensor f = flat_features(features, name);
  const int64_t n = f.size(0);
  const torch::Tensor y = hash_one_hot(labels, n, o.n_class(), name, fmt::format("n_class is {}", o.n_class()), f);
  const torch::Tensor sigma = 2 * (torch::matmul(y, y.t()) > 0).to(f.scalar_type()) - 1;
  const torch::Tensor theta = (torch::matmul(f, f.t()) * 0.5).clamp(-50, 50);
  const torch::Tensor l1 = torch::log1p(torch::exp(-sigma * theta)).mean();  // |θ| <= 50: exp cannot overflow
  const torch::Tensor b = f.detach().sign();
  const torch::Tensor beta = torch::matmul(b, b.t()) * 0.5;
  const torch::Tensor l2 = (torch::sigmoid(theta) - torch::sigmoid(beta)).pow(2).mean();
  return l1 + o.lambda() * l2;
}

torch::Tensor DCHLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return dch_loss(model_input(out, "features", "DCHLoss"), labels, options);
}

torch::Tensor DSHSDLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return dshsd_loss(model_input(out, "features", "DSHSDLoss"), model_input(out, "logits", "DSHSDLoss"), labels,
                    options);
}

torch::Tensor LCDSHLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return lcdsh_loss(model_input(out, "features", "LCDSHLoss"), labels, options);
}

namespace {

double read_finite(const ConfigNode& p, const std::string& key) {
  const double v = p.require<double>(key);
  if (!std::isfinite(v)) p[key].fail("must be a finite number");
  return v;
}

int64_t read_n_class(const ConfigNode& p) {
  const int64_t v = p.require<int64_t>("n_class");
  if (v < 1) p["n_class"].fail(fmt::format("must be a positive class count, got {}", v));
  return v;
}

}  // namespace

void register_deephash_losses() {
  auto& r = loss_registry();
  r.add("DCHLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "gamma", "_lambda", "n_class"});
    const double gamma = read_finite(p, "gamma");
    if (!(gamma > 0)) p["gamma"].fail("must be positive (the loss takes log(d / gamma))");
    return std::make_shared<DCHLossImpl>(
        DCHLossOptions().gamma(gamma).lambda(read_finite(p, "_lambda")).n_class(read_n_class(p)));
  });
  r.add("DSHSDLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "alpha", "multi_label"});
    return std::make_shared<DSHSDLossImpl>(
        DSHSDLossOptions().alpha(read_finite(p, "alpha")).multi_label(p.get<bool>("multi_label", false)));
  });
  r.add("LCDSHLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "n_class", "_lambda"});
    return std::make_shared<LCDSHLossImpl>(
        LCDSHLossOptions().n_class(read_n_class(p)).lambda(read_finite(p, "_lambda")));
  });
}

}  // namespace featlearn
