// MetaBIN's losses (loss/metabin_losses.h): hand-computed values, the InterDomainShuffleLoss overflow fallback,
// gradient checks, config keys.
#include <featlearn/config/config.h>
#include <featlearn/loss/loss.h>
#include <featlearn/loss/metabin_losses.h>

#include "gradient_check.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

using namespace featlearn;

namespace {
torch::Tensor d(std::vector<double> v, std::vector<int64_t> shape) {
  return torch::tensor(v, torch::kDouble).reshape(shape);
}
torch::Tensor ids(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }
}  // namespace

TEST(MetabinLosses, CELossSmoothsWithEpsilonOverCMinusOne) {
  const auto logits = d({1.0, 2.0, 0.5, -1.0, 0.0, 3.0}, {2, 3});
  const auto labels = ids({1, 2});
  const auto logp = torch::log_softmax(logits, 1);
  // true class 1 - 0.1, the others 0.1 / 2 (PaddleClas's ε·C/(C−1) fed to label_smooth).
  const double row0 = -(0.05 * logp[0][0] + 0.9 * logp[0][1] + 0.05 * logp[0][2]).item<double>();
  const double row1 = -(0.05 * logp[1][0] + 0.05 * logp[1][1] + 0.9 * logp[1][2]).item<double>();
  EXPECT_NEAR(ce_loss_for_metabin(logits, labels, 0.1).item<double>(), (row0 + row1) / 2, 1e-12);
  EXPECT_NEAR(ce_loss_for_metabin(logits, labels, 0.1, "sum").item<double>(), row0 + row1, 1e-12);
  // No (or an out-of-range) epsilon: plain cross entropy.
  const double plain = -(logp[0][1] + logp[1][2]).item<double>() / 2;
  EXPECT_NEAR(ce_loss_for_metabin(logits, labels, std::nullopt).item<double>(), plain, 1e-12);
  EXPECT_NEAR(ce_loss_for_metabin(logits, labels, 1.0).item<double>(), plain, 1e-12);
  // [N, 1] labels as the MetaBIN loop passes them.
  EXPECT_NEAR(ce_loss_for_metabin(logits, labels.view({2, 1}), 0.1).item<double>(), (row0 + row1) / 2, 1e-12);
}

TEST(MetabinLosses, TripletIsBatchHardWithMarginRanking) {
  // Points (0,0) (1,0) | (0,2) (0,3): d_ap = 1 for every row; d_an = 2, √5, 2, 3.
  const auto x = d({0, 0, 1, 0, 0, 2, 0, 3}, {4, 2});
  const auto labels = ids({0, 0, 1, 1});
  const double m = 1.5;
  const double expected = (0.5 + std::max(0.0, 1 - std::sqrt(5.0) + m) + 0.5 + 0.0) / 4;
  EXPECT_NEAR(triplet_loss_for_metabin(x, labels, m, false).item<double>(), expected, 1e-9);
  EXPECT_NEAR(triplet_loss_for_metabin(x, labels, 0.3, false).item<double>(), 0.0, 1e-12);
  // One id only: no negatives, every row adds 0 (d_an = +inf), the gradient is finite.
  auto one = d({0, 0, 1, 0}, {2, 2}).set_requires_grad(true);
  auto l = triplet_loss_for_metabin(one, ids({3, 3}), 0.3, false);
  EXPECT_EQ(l.item<double>(), 0.0);
  l.backward();
  EXPECT_TRUE(torch::isfinite(one.grad()).all().item<bool>());
}

TEST(MetabinLosses, IntraDomainScatterIsMeanCosineToTheDomainCenter) {
  // Domain 0: (1,0), (0,1), center (.5,.5): cos = 0.5/(√0.5 + 1e-8) each; domain 1: (1,0), (2,0): cos 1.
  const auto x = d({1, 0, 2, 0, 0, 1, 1, 0}, {4, 2});
  const auto dom = ids({0, 1, 0, 1});
  const double c0 = 0.5 / (std::sqrt(0.5) + 1e-8);
  const double c1 = (3.0 / (3.0 + 1e-8) + 1.5 / (1.5 + 1e-8)) / 2;
  const double expected = (c0 + c1) / 2;
  EXPECT_NEAR(intra_domain_scatter_loss(x, dom, false).item<double>(), expected, 1e-9);
  EXPECT_NEAR(intra_domain_scatter_loss(x, dom, true).item<double>(), (c0 + 1.0) / 2, 1e-7);
}

TEST(MetabinLosses, InterDomainShuffleSoftMarginAndItsOverflowFallback) {
  // 1-D points 0, 1 (domain 0) and 3, 6 (domain 1), all different ids. Positives: itself + the other domain;
  // negatives: the other id of its own domain. (d_ap, d_an) per row: (6, 1), (5, 1), (3, 3), (6, 3).
  const auto x = d({0, 1, 3, 6}, {4, 1});
  const auto labels = ids({0, 1, 2, 3});
  const auto dom = ids({0, 0, 1, 1});
  auto sp = [](double ap, double an) { return std::log1p(std::exp(ap - an)); };
  const double expected = (sp(6, 1) + sp(5, 1) + sp(3, 3) + sp(6, 3)) / 4;
  EXPECT_NEAR(inter_domain_shuffle_loss(x, labels, dom, false).item<double>(), expected, 1e-5);
  // ×100 in float32: exp(500) overflows, so PaddleClas's margin ranking (margin 0.3) replaces it.
  const auto big = (x * 100).to(torch::kFloat);
  const double fallback = (500.3 + 400.3 + 0.3 + 300.3) / 4;
  EXPECT_NEAR(inter_domain_shuffle_loss(big, labels, dom, false).item<double>(), fallback, 1e-2);
}

TEST(MetabinLosses, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  const auto x0 = torch::randn({6, 4}, torch::kDouble);
  const auto labels = ids({0, 0, 1, 1, 2, 2});
  const auto dom = ids({0, 1, 0, 1, 0, 1});
  expect_gradients_match([&](const torch::Tensor& x) { return triplet_loss_for_metabin(x, labels, 3.0, true); }, x0,
                         1e-5);
  expect_gradients_match([&](const torch::Tensor& x) { return intra_domain_scatter_loss(x, dom, true); }, x0, 1e-5);
  expect_gradients_match([&](const torch::Tensor& x) { return inter_domain_shuffle_loss(x, labels, dom, false); },
                         x0, 1e-5);
  const auto logits0 = torch::randn({6, 3}, torch::kDouble);
  expect_gradients_match([&](const torch::Tensor& z) { return ce_loss_for_metabin(z, labels, 0.1); }, logits0);
}

TEST(MetabinLosses, ConfigKeysAndDomainRequirement) {
  register_builtin_losses();
  auto cfg = Config::from_string(R"(
Train:
  - CELossForMetaBIN: {weight: 1.0, epsilon: 0.1}
  - TripletLossForMetaBIN: {weight: 1.0, margin: 0.3, feature_from: backbone}
  - IntraDomainScatterLoss: {weight: 1.0, normalize_feature: True, feature_from: backbone}
  - InterDomainShuffleLoss: {weight: 2.0, normalize_feature: False, feature_from: backbone}
Bad:
  - TripletLossForMetaBIN: {weight: 1.0, margin: 0.3}
Typo:
  - InterDomainShuffleLoss: {weight: 1.0, normalise_feature: False}
)");
  CombinedLoss loss(cfg["Train"]);
  ModelOutput out;
  torch::manual_seed(0);
  out.backbone = torch::randn({4, 5});
  out.features = out.backbone;
  out.logits = torch::randn({4, 3});
  const auto labels = ids({0, 0, 1, 1}), dom = ids({0, 1, 0, 1});
  try {
    loss->forward(out, labels);
    FAIL() << "no error without domains";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train_mode: metabin"), std::string::npos) << e.what();
  }
  set_metabin_domains(*loss, dom);
  const auto r = loss->forward(out, labels);
  ASSERT_EQ(r.terms.size(), 4u);
  const double expected = ce_loss_for_metabin(out.logits, labels, 0.1).item<double>() +
                          triplet_loss_for_metabin(out.backbone, labels, 0.3, false).item<double>() +
                          intra_domain_scatter_loss(out.backbone, dom, true).item<double>() +
                          2 * inter_domain_shuffle_loss(out.backbone, labels, dom, false).item<double>();
  EXPECT_NEAR(r.total.item<double>(), expected, 1e-5);
  EXPECT_THROW({ CombinedLoss bad(cfg["Bad"]); }, ConfigError);
  try {
    CombinedLoss l(cfg["Typo"]);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("normalise_feature"), std::string::npos) << e.what();
  }
}
