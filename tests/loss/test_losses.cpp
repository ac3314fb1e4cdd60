// Loss tests: each loss against an independent loop implementation on a tiny batch, central-difference
// gradient checks in double, config parsing / CombinedLoss, and the batch-layout (sampler) errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <featlearn/config/config.h>
#include <featlearn/loss/loss.h>
#include <featlearn/loss/losses.h>

#include "gradient_check.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

using namespace featlearn;
using Mat = std::vector<std::vector<double>>;

namespace {

const auto kDouble = torch::TensorOptions().dtype(torch::kDouble);

torch::Tensor random_features(int64_t n, int64_t d, uint64_t seed, double scale = 1.0) {
  torch::manual_seed(seed);
  return torch::randn({n, d}, kDouble) * scale;
}
torch::Tensor labels_of(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

Mat to_mat(const torch::Tensor& t) {
  auto a = t.contiguous().to(torch::kDouble);
  Mat m(a.size(0), std::vector<double>(a.size(1)));
  for (int64_t i = 0; i < a.size(0); ++i)
    for (int64_t j = 0; j < a.size(1); ++j) m[i][j] = a[i][j].item<double>();
  return m;
}
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
double sqdist(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s;
}
Mat normalized(Mat m, double eps_add = 0) {
  for (auto& r : m) {
    const double n = std::sqrt(dot(r, r)) + eps_add;
    for (auto& v : r) v /= n;
  }
  return m;
}
double relu(double v) { return v > 0 ? v : 0; }

Config yaml(const std::string& text) { return Config::from_string(text, "loss.yaml"); }

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

// ---- CELoss -------------------------------------------------------------------------------------------------

TEST(CELoss, MatchesHandComputedWithAndWithoutSmoothing) {
  const torch::Tensor logits = torch::tensor({{1.0, 2.0, 0.5}, {0.2, -1.0, 3.0}}, kDouble);
  const torch::Tensor labels = labels_of({0, 2});
  const Mat z = to_mat(logits);
  const int y[2] = {0, 2};
  for (double eps : {0.0, 0.1}) {
    double expected = 0;
    for (int i = 0; i < 2; ++i) {
      double lse = 0;
      for (double v : z[i]) lse += std::exp(v);
      lse = std::log(lse);
      for (int c = 0; c < 3; ++c) {
        const double t = (eps > 0 ? (c == y[i] ? 1 - eps : 0) + eps / 3 : (c == y[i] ? 1.0 : 0.0));
        expected += -(z[i][c] - lse) * t;
      }
    }
    expected /= 2;
    EXPECT_NEAR(ce_loss(logits, labels, CELossOptions().epsilon(eps)).item<double>(), expected, 1e-12);
  }
  // epsilon outside (0, 1) disables smoothing, as PaddleClas.
  EXPECT_NEAR(ce_loss(logits, labels, CELossOptions().epsilon(1.5)).item<double>(),
              ce_loss(logits, labels).item<double>(), 1e-12);
  // [N, 1] labels are accepted; sum reduction.
  EXPECT_NEAR(ce_loss(logits, labels.view({2, 1}), CELossOptions().reduction("sum")).item<double>(),
              2 * ce_loss(logits, labels).item<double>(), 1e-12);
  EXPECT_NE(error_of([&] { ce_loss(logits, labels_of({0, 3})); }).find("out of range [0, 3)"), std::string::npos);
  expect_gradients_match([&](const torch::Tensor& x) { return ce_loss(x, labels, CELossOptions().epsilon(0.1)); },
                         logits);
}

// ---- SupConLoss ---------------------------------------------------------------------------------------------

namespace {
double supcon_reference(const torch::Tensor& f, const std::vector<int64_t>& y, double t, double tb,
                        const std::vector<int>& anchors) {
  const Mat x = normalized(to_mat(f), 1e-12);
  const int n = static_cast<int>(x.size());
  double total = 0;
  for (int a : anchors) {
    double denom = 0;
    for (int b = 0; b < n; ++b)
      if (b != a) denom += std::exp(dot(x[a], x[b]) / t);
    double sum = 0;
    int npos = 0;
    for (int p = 0; p < n; ++p)
      if (p != a && y[p] == y[a]) {
        sum += std::log(std::exp(dot(x[a], x[p]) / t) / denom);
        ++npos;
      }
    total += -(t / tb) * sum / npos;
  }
  return total / anchors.size();
}
}  // namespace

TEST(SupConLoss, MatchesHandComputed) {
  const torch::Tensor f = random_features(6, 3, 1);
  const std::vector<int64_t> y = {4, 4, 7, 7, 4, 4};  // two groups may share an id
  const auto opts = SupConLossOptions().views(2).temperature(0.5).base_temperature(0.7);
  EXPECT_NEAR(supcon_loss(f, labels_of(y), opts).item<double>(),
              supcon_reference(f, y, 0.5, 0.7, {0, 1, 2, 3, 4, 5}), 1e-10);
  EXPECT_NEAR(supcon_loss(f, labels_of(y), SupConLossOptions(opts).contrast_mode("one")).item<double>(),
              supcon_reference(f, y, 0.5, 0.7, {0, 2, 4}), 1e-10);
  expect_gradients_match([&](const torch::Tensor& x) { return supcon_loss(x, labels_of(y), opts); }, f);
}

TEST(SupConLoss, BatchWithoutViewsConsecutiveSamplesNamesTheSampler) {
  const torch::Tensor f = random_features(4, 3, 2);
  const std::string msg =
      error_of([&] { supcon_loss(f, labels_of({0, 1, 0, 1}), SupConLossOptions().views(2)); });
  EXPECT_NE(msg.find("SupConLoss needs batches of 2 consecutive samples per id"), std::string::npos) << msg;
  EXPECT_NE(msg.find("PKSampler with sample_per_id=2"), std::string::npos) << msg;
  const std::string msg2 = error_of([&] { supcon_loss(f, labels_of({0, 0, 0, 0}), SupConLossOptions()); });
  EXPECT_NE(msg2.find("not a multiple of 16"), std::string::npos) << msg2;
}

// ---- TripletLoss / TripletLossV2 ----------------------------------------------------------------------------

namespace {
double triplet_reference(const torch::Tensor& f, const std::vector<int64_t>& y, double margin, bool normalize) {
  const Mat x = normalize ? normalized(to_mat(f), 1e-12) : to_mat(f);
  const size_t n = x.size();
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    double ap = -1, an = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < n; ++j) {
      const double d = std::sqrt(std::max(sqdist(x[i], x[j]), 1e-12));
      if (y[i] == y[j]) ap = std::max(ap, d);
      else an = std::min(an, d);
    }
    total += relu(ap - an + margin);
  }
  return total / n;
}
}  // namespace

TEST(TripletLoss, BatchHardMatchesHandComputedForAnyLayout) {
  const torch::Tensor f = random_features(7, 4, 3);
  const std::vector<int64_t> y = {0, 0, 0, 1, 1, 2, 1};  // not P×K: PaddleClas's reshape would fail
  for (bool normalize : {true, false}) {
    const auto opts = TripletLossOptions().margin(0.8).normalize_feature(normalize);
    EXPECT_NEAR(triplet_loss_batch_hard(f, labels_of(y), opts).item<double>(),
                triplet_reference(f, y, 0.8, normalize), 1e-10);
    expect_gradients_match([&](const torch::Tensor& x) { return triplet_loss_batch_hard(x, labels_of(y), opts); },
                           f);
  }
}

// ---- CenterLoss ---------------------------------------------------------------------------------------------

TEST(CenterLoss, MatchesHandComputedAndGradients) {
  const torch::Tensor f = random_features(5, 3, 4);
  const torch::Tensor centers = random_features(4, 3, 5);
  const std::vector<int64_t> y = {0, 3, 3, 1, 0};
  const Mat x = to_mat(f), c = to_mat(centers);
  double expected = 0;
  for (size_t i = 0; i < y.size(); ++i) expected += sqdist(x[i], c[y[i]]);
  expected /= y.size();
  EXPECT_NEAR(center_loss(f, labels_of(y), centers).item<double>(), expected, 1e-12);
  expect_gradients_match([&](const torch::Tensor& v) { return center_loss(v, labels_of(y), centers); }, f);
  expect_gradients_match([&](const torch::Tensor& v) { return center_loss(f, labels_of(y), v); }, centers);
  EXPECT_NE(error_of([&] { center_loss(f, labels_of({0, 1, 2, 3, 4}), centers); }).find("out of range [0, 4)"),
            std::string::npos);
}

// ---- PairwiseCosface ----------------------------------------------------------------------------------------

TEST(PairwiseCosface, MatchesHandComputed) {
  const torch::Tensor f = random_features(6, 3, 6);
  const std::vector<int64_t> y = {0, 0, 1, 1, 2, 2};
  const double m = 0.25, g = 4.0;
  const Mat x = normalized(to_mat(f));
  double expected = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    double sp = 0, sn = 0;
    for (size_t j = 0; j < y.size(); ++j) {
      const double s = dot(x[i], x[j]);
      if (j != i && y[j] == y[i]) sp += std::exp(-g * s);
      if (y[j] != y[i]) sn += std::exp(g * (s + m));
    }
    expected += std::log1p(std::exp(std::log(sp) + std::log(sn)));
  }
  expected /= y.size();
  const auto opts = PairwiseCosfaceOptions().margin(m).gamma(g);
  EXPECT_NEAR(pairwise_cosface_loss(f, labels_of(y), opts).item<double>(), expected, 1e-10);
  expect_gradients_match([&](const torch::Tensor& v) { return pairwise_cosface_loss(v, labels_of(y), opts); }, f);
}

// ---- TripletAngularMarginLoss -------------------------------------------------------------------------------

TEST(TripletAngularMarginLoss, MatchesHandComputedWithAbsoluteTerms) {
  const torch::Tensor f = random_features(6, 4, 7);
  const std::vector<int64_t> y = {0, 0, 1, 1, 2, 2};
  const Mat x = normalized(to_mat(f));
  // an_value between the smallest and largest hardest-negative similarity, so both branches occur: s_an − an_value
  // where the hardest negative is above an_value, and 0 where it is below. PaddleClas puts a constant 1 there
  // (`paddle.ones_like`), which changes the reported loss but not the gradient; featlearn uses the hinge's 0
  // (docs/paddleclas-differences.md).
  double an_lo = 10, an_hi = -10;
  for (size_t i = 0; i < y.size(); ++i) {
    double an = -10;
    for (size_t j = 0; j < y.size(); ++j)
      if (y[j] != y[i]) an = std::max(an, dot(x[i], x[j]));
    an_lo = std::min(an_lo, an);
    an_hi = std::max(an_hi, an);
  }
  const double an_value = (an_lo + an_hi) / 2;
  for (bool add_absolute : {false, true}) {
    const auto opts = TripletAngularMarginLossOptions()
                          .margin(0.4)
                          .add_absolute(add_absolute)
                          .absolute_loss_weight(0.7)
                          .ap_value(0.8)
                          .an_value(an_value);
    double rank = 0, abs_ap = 0, abs_an = 0;
    int an_constant = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      double ap = 10, an = -10;
      for (size_t j = 0; j < y.size(); ++j) {
        const double s = dot(x[i], x[j]);
        if (y[j] == y[i]) ap = std::min(ap, s);
        else an = std::max(an, s);
      }
      rank += relu(an - ap + 0.4);
      abs_ap += relu(0.8 - ap);
      abs_an += an - an_value > 0 ? an - an_value : 0.0;
      an_constant += an - an_value > 0 ? 0 : 1;
    }
    const double n = y.size();
    double expected = rank / n;
    if (add_absolute) {
      expected += 0.7 * (abs_ap / n + abs_an / n);
      EXPECT_GT(an_constant, 0) << "pick an_value so the below-an_value branch is exercised";
      EXPECT_LT(an_constant, 6);
    }
    EXPECT_NEAR(triplet_angular_margin_loss(f, labels_of(y), opts).item<double>(), expected, 1e-10);
    expect_gradients_match(
        [&](const torch::Tensor& v) { return triplet_angular_margin_loss(v, labels_of(y), opts); }, f);
  }
}

// ---- ContrastiveLoss and XBM --------------------------------------------------------------------------------

namespace {
double contrastive_reference(const Mat& q, const std::vector<int64_t>& yq, const Mat& k,
                             const std::vector<int64_t>& yk, double margin, double eps) {
  double total = 0;
  for (size_t i = 0; i < q.size(); ++i)
    for (size_t j = 0; j < k.size(); ++j) {
      const double s = dot(q[i], k[j]);
      if (yq[i] == yk[j] && s < 1 - eps) total += 1 - s;
      if (yq[i] != yk[j] && s > margin) total += s;
    }
  return total / q.size();
}
ModelOutput features_output(const torch::Tensor& f) {
  ModelOutput out;
  out.features = f;
  out.backbone = f;
  return out;
}
}  // namespace

TEST(ContrastiveLoss, MatchesHandComputed) {
  const torch::Tensor f = random_features(6, 3, 8);
  const std::vector<int64_t> y = {0, 0, 1, 1, 2, 2};
  const auto opts = ContrastiveLossOptions().margin(0.1).embedding_size(3);
  EXPECT_NEAR(contrastive_loss(f, labels_of(y), opts).item<double>(),
              contrastive_reference(normalized(to_mat(f)), y, normalized(to_mat(f)), y, 0.1, 1e-5), 1e-10);
  expect_gradients_match([&](const torch::Tensor& v) { return contrastive_loss(v, labels_of(y), opts); }, f);
  // Against fixed memory keys (the XBM term).
  const torch::Tensor keys = torch::nn::functional::normalize(random_features(5, 3, 9));
  const std::vector<int64_t> yk = {2, 0, 5, 1, 0};
  expect_gradients_match(
      [&](const torch::Tensor& v) { return contrastive_loss_qk(v, labels_of(y), keys, labels_of(yk), 0.1, 1e-5); },
      f);
  EXPECT_NE(error_of([&] { contrastive_loss(f, labels_of(y), ContrastiveLossOptions().embedding_size(8)); })
                .find("embedding_size is 8"),
            std::string::npos);
}

TEST(ContrastiveLossXbm, MemoryQueueWrapsAndAddsTheCrossBatchTerm) {
  const double w = 0.5, margin = 0.1;
  ContrastiveLossXbm loss(ContrastiveLossOptions().margin(margin).embedding_size(3),
                          XbmOptions().xbm_size(6).xbm_weight(w).start_iter(1));
  const torch::Tensor a = random_features(4, 3, 10), b = random_features(4, 3, 11), c = random_features(4, 3, 12);
  const std::vector<int64_t> ya = {0, 0, 1, 1}, yb = {2, 2, 0, 0}, yc = {1, 1, 3, 3};
  const Mat na = normalized(to_mat(a)), nb = normalized(to_mat(b)), nc = normalized(to_mat(c));

  // Iteration 1 <= start_iter: no memory term, nothing stored.
  EXPECT_NEAR(loss->forward(features_output(a), labels_of(ya)).item<double>(),
              contrastive_reference(na, ya, na, ya, margin, 1e-5), 1e-10);
  EXPECT_EQ(loss->xbm->get().first.size(0), 0);
  // Iteration 2: memory = b (enqueued first).
  EXPECT_NEAR(loss->forward(features_output(b), labels_of(yb)).item<double>(),
              (1 + w) * contrastive_reference(nb, yb, nb, yb, margin, 1e-5), 1e-6);  // memory is float32
  // Iteration 3: 4 + 4 > 6, so c goes to the last 4 slots: memory = [b0, b1, c0, c1, c2, c3].
  Mat mem = {nb[0], nb[1], nc[0], nc[1], nc[2], nc[3]};
  std::vector<int64_t> ymem = {yb[0], yb[1], yc[0], yc[1], yc[2], yc[3]};
  EXPECT_NEAR(loss->forward(features_output(c), labels_of(yc)).item<double>(),
              contrastive_reference(nc, yc, nc, yc, margin, 1e-5) +
                  w * contrastive_reference(nc, yc, mem, ymem, margin, 1e-5),
              1e-6);
  EXPECT_EQ(loss->xbm->get().first.size(0), 6);
  // Eval mode: no memory term, memory untouched.
  loss->eval();
  EXPECT_NEAR(loss->forward(features_output(a), labels_of(ya)).item<double>(),
              contrastive_reference(na, ya, na, ya, margin, 1e-5), 1e-10);
  EXPECT_EQ(loss->iter.item<int64_t>(), 3);
  // Memory and iteration count are in the state (checkpoints).
  auto buffers = loss->named_buffers();
  EXPECT_TRUE(buffers.contains("xbm.feats") && buffers.contains("xbm.targets") && buffers.contains("iter"));
}

TEST(TripletAngularMarginLossXbm, FirstIterationDoublesTheLossWithTheBatchAsMemory) {
  const torch::Tensor f = random_features(6, 4, 13);
  const auto y = labels_of({0, 0, 1, 1, 2, 2});
  const auto opts = TripletAngularMarginLossOptions().margin(0.5);
  TripletAngularMarginLossXbm loss(opts, XbmOptions().xbm_size(12).xbm_weight(2.0).start_iter(0), 4);
  EXPECT_NEAR(loss->forward(features_output(f), y).item<double>(),
              3.0 * triplet_angular_margin_loss(f, y, opts).item<double>(), 1e-6);
}

// ---- MSMLoss, EmlLoss, NpairsLoss ---------------------------------------------------------------------------

TEST(MSMLoss, MatchesHandComputed) {
  const torch::Tensor f = random_features(6, 3, 14);
  const std::vector<int64_t> y = {5, 5, 1, 1, 9, 9};
  const Mat x = normalized(to_mat(f));
  double hard_pos = -1, hard_neg = 1e9;
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      if (i == j) continue;
      if (i / 2 == j / 2) hard_pos = std::max(hard_pos, sqdist(x[i], x[j]));
      else hard_neg = std::min(hard_neg, sqdist(x[i], x[j]));
    }
  const auto opts = MSMLossOptions().batch_size(6).samples_each_class(2).margin(1.5);
  const double expected = relu(hard_pos + 1.5 - hard_neg);
  ASSERT_GT(expected, 0);
  EXPECT_NEAR(msm_loss(f, labels_of(y), opts).item<double>(), expected, 1e-10);
  expect_gradients_match([&](const torch::Tensor& v) { return msm_loss(v, labels_of(y), opts); }, f);
}

TEST(MSMLoss, NonPkBatchNamesTheSamplerSettings) {
  const torch::Tensor f = random_features(6, 3, 15);
  const auto opts = MSMLossOptions().batch_size(6).samples_each_class(2);
  std::string msg = error_of([&] { msm_loss(f, labels_of({0, 1, 0, 1, 2, 2}), opts); });
  EXPECT_NE(msg.find("MSMLoss needs batches of 2 consecutive samples per id"), std::string::npos) << msg;
  EXPECT_NE(msg.find("PKSampler with sample_per_id=2"), std::string::npos) << msg;
  msg = error_of([&] { msm_loss(f, labels_of({0, 0, 1, 1, 0, 0}), opts); });
  EXPECT_NE(msg.find("id 0 fills the groups at samples 0 and 4"), std::string::npos) << msg;
}

namespace {
double eml_reference(const torch::Tensor& f, int k) {
  const Mat x = to_mat(f);
  const int n = static_cast<int>(x.size());
  const double beta = 100000, thresh = 20, l1b = std::log(1 + beta);
  double total = 0;
  for (int i = 0; i < n; ++i) {
    std::vector<double> pos, neg;
    for (int j = 0; j < n; ++j) {
      if (j == i) continue;
      (i / k == j / k ? pos : neg).push_back(sqdist(x[i], x[j]));
    }
    const double pmax = *std::max_element(pos.begin(), pos.end());
    const double nmin = *std::min_element(neg.begin(), neg.end());
    double pm = 0, nm = 0;
    for (double p : pos) pm += std::exp(p - pmax) / pos.size();
    for (double q : neg) nm += std::exp(nmin - q) / neg.size();
    const double theta = pm * nm, b = pmax - nmin;
    auto f_exact = [&](double bb) { return std::log(1 + beta * theta * std::exp(bb)) / l1b; };
    auto f_approx = [&](double bb) { return (std::log(theta) + bb + std::log(beta)) / l1b; };
    total += f_exact(std::min(b, thresh)) + f_approx(std::max(b, thresh)) - f_exact(thresh);
  }
  return total / n;
}
}  // namespace

TEST(EmlLoss, MatchesHandComputedOnBothSidesOfTheStableThreshold) {
  const std::vector<int64_t> y = {3, 3, 3, 8, 8, 8};
  const auto opts = EmlLossOptions().batch_size(6).samples_each_class(3);
  for (double scale : {0.5, 4.0}) {  // small gaps (exact surrogate) and gaps > 20 (log-linear branch)
    const torch::Tensor f = random_features(6, 3, 16, scale);
    EXPECT_NEAR(eml_loss(f, labels_of(y), opts).item<double>(), eml_reference(f, 3), 1e-10);
    expect_gradients_match([&](const torch::Tensor& v) { return eml_loss(v, labels_of(y), opts); }, f);
  }
}

TEST(NpairsLoss, MatchesHandComputed) {
  const torch::Tensor f = random_features(6, 3, 17);
  const std::vector<int64_t> y = {4, 4, 0, 0, 7, 7};
  const Mat x = to_mat(f);
  const double lambda = 0.3;
  double xent = 0, reg = 0;
  for (int i = 0; i < 3; ++i) {
    double denom = 0;
    for (int j = 0; j < 3; ++j) denom += std::exp(dot(x[2 * i], x[2 * j + 1]));
    xent += -std::log(std::exp(dot(x[2 * i], x[2 * i + 1])) / denom) / 3;
  }
  for (const auto& r : x) reg += dot(r, r) / 6;
  const auto opts = NpairsLossOptions().reg_lambda(lambda);
  EXPECT_NEAR(npairs_loss(f, labels_of(y), opts).item<double>(), xent + 0.5 * lambda * reg, 1e-10);
  expect_gradients_match([&](const torch::Tensor& v) { return npairs_loss(v, labels_of(y), opts); }, f);
  const std::string msg = error_of([&] { npairs_loss(f, labels_of({4, 4, 4, 4, 7, 7}), opts); });
  EXPECT_NE(msg.find("anchor/positive pairs of different ids"), std::string::npos) << msg;
}

// ---- config / CombinedLoss ----------------------------------------------------------------------------------

TEST(CombinedLoss, TotalIsWeightedSumAndCenterLossParametersAreExposed) {
  auto cfg = yaml(R"(
Loss:
  Train:
    - CELoss: {weight: 1.0, epsilon: 0.1}
    - TripletLossV2: {weight: 0.5, margin: 0.3, normalize_feature: true, feature_from: features}
    - CenterLoss: {weight: 0.1, num_classes: 3, feat_dim: 4}
)");
  CombinedLoss loss(cfg["Loss"]["Train"]);
  loss->to(torch::kDouble);
  EXPECT_EQ(loss->names(), (std::vector<std::string>{"CELoss", "TripletLossV2", "CenterLoss"}));

  ModelOutput out = features_output(random_features(6, 4, 18));
  out.logits = random_features(6, 3, 19);
  const torch::Tensor y = labels_of({0, 0, 1, 1, 2, 2});
  const auto r = loss->forward(out, y);
  ASSERT_EQ(r.terms.size(), 3u);
  const torch::Tensor centers = loss->parameters_of("CenterLoss").at(0);
  const double ce = ce_loss(out.logits, y, CELossOptions().epsilon(0.1)).item<double>();
  const double tri = triplet_loss_batch_hard(out.features, y, TripletLossOptions().margin(0.3)).item<double>();
  const double cen = center_loss(out.features, y, centers).item<double>();
  EXPECT_EQ(r.terms[0].first, "CELoss");
  EXPECT_NEAR(r.terms[0].second.item<double>(), ce, 1e-12);
  EXPECT_NEAR(r.terms[1].second.item<double>(), tri, 1e-12);
  EXPECT_NEAR(r.terms[2].second.item<double>(), cen, 1e-12);
  EXPECT_NEAR(r.total.item<double>(), ce + 0.5 * tri + 0.1 * cen, 1e-12);

  // Centers: the one trainable parameter, named for checkpoints, with gradients from the total.
  EXPECT_EQ(loss->parameters_of("CenterLoss").size(), 1u);
  EXPECT_EQ(centers.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(loss->parameters_of("CELoss").empty());
  EXPECT_TRUE(loss->named_parameters().contains("CenterLoss.centers"));
  r.total.backward();
  EXPECT_TRUE(centers.grad().defined());
  EXPECT_NE(error_of([&] { loss->parameters_of("CentreLoss"); }).find("did you mean CenterLoss?"),
            std::string::npos);
}

namespace {
const char* const kAllLosses = R"(
Loss:
  Train:
    - CELoss: {weight: 1.0, epsilon: null}
    - SupConLoss: {weight: 1.0, views: 2, temperature: 0.1, base_temperature: 0.1, contrast_mode: all, normalize_feature: true}
    - TripletLossV2: {weight: 1.0, margin: 0.5}
    - TripletLoss: {weight: 1.0, margin: 1.0}
    - CenterLoss: {weight: 1.0, num_classes: 3, feat_dim: 4, feature_from: backbone}
    - PairwiseCosface: {weight: 1.0, margin: 0.35, gamma: 64}
    - TripletAngularMarginLoss: {weight: 1.0, margin: 0.5, reduction: mean, add_absolute: true, absolute_loss_weight: 0.1, normalize_feature: true, ap_value: 0.8, an_value: 0.4, feature_from: features}
    - TripletAngularMarginLoss_XBM: {weight: 1.0, start_iter: 0, xbm_size: 12, xbm_weight: 1.0, feat_dim: 4}
    - ContrastiveLoss: {weight: 1.0, margin: 0.5, embedding_size: 4, normalize_feature: true, epsilon: 1.0e-5, feature_from: features}
    - ContrastiveLoss_XBM: {weight: 1.0, xbm_size: 12, xbm_weight: 1.0, start_iter: 0, margin: 0.5, embedding_size: 4}
    - MSMLoss: {weight: 1.0, batch_size: 6, samples_each_class: 2, margin: 0.1}
    - EmlLoss: {weight: 1.0, batch_size: 6, samples_each_class: 2}
    - NpairsLoss: {weight: 1.0, reg_lambda: 0.01}
    - CELoss: {weight: 0.5}
)";
}  // namespace

TEST(CombinedLoss, EveryPaddleClasLossParsesFromConfig) {
  auto cfg = yaml(kAllLosses);
  torch::manual_seed(0);
  CombinedLoss loss(cfg["Loss"]["Train"]);
  EXPECT_EQ(loss->names().size(), 14u);
  EXPECT_EQ(loss->names().back(), "CELoss_2");
  ModelOutput out = features_output(torch::randn({6, 4}));
  out.logits = torch::randn({6, 3});
  const torch::Tensor y = labels_of({0, 0, 1, 1, 2, 2});
  const auto r = loss->forward(out, y);
  EXPECT_TRUE(std::isfinite(r.total.item<double>()));
  EXPECT_EQ(r.terms.size(), 14u);
}

// On CUDA the same losses give the CPU values (labels left on the CPU; XBM memory follows the features).
TEST(CombinedLoss, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto cfg = yaml(kAllLosses);
  torch::manual_seed(0);
  CombinedLoss loss(cfg["Loss"]["Train"]);
  ModelOutput out = features_output(torch::randn({6, 4}));
  out.logits = torch::randn({6, 3});
  const torch::Tensor y = labels_of({0, 0, 1, 1, 2, 2});
  const auto r = loss->forward(out, y);
  torch::manual_seed(0);
  CombinedLoss gpu(cfg["Loss"]["Train"]);  // same initial centers
  gpu->to(torch::kCUDA);
  ModelOutput gout = features_output(out.features.to(torch::kCUDA));
  gout.logits = out.logits.to(torch::kCUDA);
  const auto g = gpu->forward(gout, y);
  ASSERT_EQ(g.terms.size(), r.terms.size());
  for (size_t i = 0; i < r.terms.size(); ++i)
    EXPECT_NEAR(g.terms[i].second.item<double>(), r.terms[i].second.item<double>(),
                1e-4 * std::max(1.0, std::abs(r.terms[i].second.item<double>())))
        << r.terms[i].first;
  g.total.backward();
  EXPECT_TRUE(gpu->parameters_of("CenterLoss").at(0).grad().defined());
}

TEST(CombinedLoss, ConfigErrorsNameTheKey) {
  auto msg = [](const std::string& text) {
    auto cfg = yaml(text);
    try {
      CombinedLoss loss(cfg["Loss"]["Train"]);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  std::string m = msg("Loss:\n  Train:\n    - CELoss: {weight: 1.0, epsilom: 0.1}\n");
  EXPECT_NE(m.find("loss.yaml:3: Loss.Train[0].CELoss.epsilom: unknown key; did you mean epsilon?"),
            std::string::npos)
      << m;
  m = msg("Loss:\n  Train:\n    - CELos: {weight: 1.0}\n");
  EXPECT_NE(m.find("unknown Loss 'CELos'; did you mean CELoss?"), std::string::npos) << m;
  m = msg("Loss:\n  Train:\n    - ContrastiveLoss: {weight: 1.0, embedding_size: 4}\n");
  EXPECT_NE(m.find("missing required key 'margin'"), std::string::npos) << m;
  m = msg("Loss:\n  Train:\n    - TripletLossV2: {weight: 1.0, feature_from: feature}\n");
  EXPECT_NE(m.find("did you mean features?"), std::string::npos) << m;
  m = msg("Loss:\n  Train:\n    - CELoss: {weight: 1.0, reduction: none}\n");
  EXPECT_NE(m.find("must be a scalar"), std::string::npos) << m;
  m = msg("Loss:\n  Train:\n    - MSMLoss: {weight: 1.0, batch_size: 7, samples_each_class: 2}\n");
  EXPECT_NE(m.find("not a multiple of samples_each_class=2"), std::string::npos) << m;
}

TEST(CombinedLoss, SupConWithMixedPairsGivesTheSamplerMessage) {
  auto cfg = yaml("Loss:\n  Train:\n    - SupConLoss: {weight: 1.0, views: 2}\n");
  CombinedLoss loss(cfg["Loss"]["Train"]);
  const std::string m =
      error_of([&] { loss->forward(features_output(torch::randn({4, 8})), labels_of({0, 1, 1, 0})); });
  EXPECT_NE(m.find("the sampler must give views=2 consecutive samples per id"), std::string::npos) << m;
  EXPECT_NE(m.find("PKSampler with sample_per_id=2"), std::string::npos) << m;
}

TEST(CombinedLoss, CELossWithoutHeadSaysSo) {
  auto cfg = yaml("Loss:\n  Train:\n    - CELoss: {weight: 1.0}\n");
  CombinedLoss loss(cfg["Loss"]["Train"]);
  const std::string m = error_of([&] { loss->forward(features_output(torch::randn({2, 3})), labels_of({0, 1})); });
  EXPECT_NE(m.find("Arch.Head"), std::string::npos) << m;
}
