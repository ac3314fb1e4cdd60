// Necks and heads: hand-computed values, finite-difference gradients (double), config errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <featlearn/config/config.h>
#include <featlearn/model/heads.h>
#include <featlearn/model/necks.h>

#include <cmath>
#include <functional>

using namespace featlearn;

namespace {

constexpr double kDeg = M_PI / 180.0;

HeadPtr make_head(const std::string& yaml) {
  register_builtin_heads();
  auto cfg = Config::from_string(yaml, "test.yaml");
  return head_registry().create_named(cfg["Arch"]["Head"]);
}

NeckPtr make_neck(const std::string& yaml) {
  register_builtin_necks();
  auto cfg = Config::from_string(yaml, "test.yaml");
  return neck_registry().create_named(cfg["Arch"]["Neck"]);
}

std::string head_yaml(const std::string& body) { return "Arch:\n  Head:\n" + body; }
std::string neck_yaml(const std::string& body) { return "Arch:\n  Neck:\n" + body; }

// The message of the featlearn::Error thrown by f ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A 2-D toy problem where every cosine is known in closed form: feature i lies at angle a[i], weight column j at
// angle b[j] (norms deliberately not 1), so cos_ij = cos(a_i - b_j).
struct Toy {
  std::vector<double> a{20 * kDeg, 180 * kDeg, 20 * kDeg};  // feature angles
  std::vector<double> fnorm{2.0, 0.5, 1.0};                 // feature norms
  std::vector<double> b{0 * kDeg, 60 * kDeg, 185 * kDeg};   // weight column angles
  std::vector<double> wnorm{2.0, 0.5, 3.0};
  std::vector<int64_t> label{0, 1, 2};  // target angles: 20°, 120°, 165° (cos 165° < -cos 0.5)
  torch::Tensor features() const {
    auto f = torch::empty({3, 2}, torch::kDouble);
    for (int i = 0; i < 3; ++i) {
      f[i][0] = fnorm[i] * std::cos(a[i]);
      f[i][1] = fnorm[i] * std::sin(a[i]);
    }
    return f;
  }
  torch::Tensor weight() const {  // [E=2, C=3]
    auto w = torch::empty({2, 3}, torch::kDouble);
    for (int j = 0; j < 3; ++j) {
      w[0][j] = wnorm[j] * std::cos(b[j]);
      w[1][j] = wnorm[j] * std::sin(b[j]);
    }
    return w;
  }
  torch::Tensor labels() const { return torch::tensor(label, torch::kLong); }
  double cos(int i, int j) const { return std::cos(a[i] - b[j]); }
  // expected[i][j] = f(i, j, cos_ij, is_target)
  torch::Tensor expected(const std::function<double(int, int, double, bool)>& f) const {
    auto e = torch::empty({3, 3}, torch::kDouble);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) e[i][j] = f(i, j, cos(i, j), label[i] == j);
    return e;
  }
};

void set_param(torch::nn::Module& m, const std::string& name, const torch::Tensor& value) {
  torch::NoGradGuard g;
  auto p = m.named_parameters()[name];
  p.copy_(value);
}

void expect_close(const torch::Tensor& got, const torch::Tensor& want, double tol = 1e-9) {
  ASSERT_EQ(got.sizes(), want.sizes());
  const double diff = (got.to(torch::kDouble) - want).abs().max().item<double>();
  EXPECT_LT(diff, tol) << "got\n" << got << "\nwant\n" << want;
}

// Central-difference check of d(sum(R ⊙ forward))/d(t) for every element of `t` (modified in place).
void check_gradient(const std::function<torch::Tensor()>& forward, torch::Tensor t, const std::string& what) {
  const auto out0 = forward();
  torch::manual_seed(7);
  const auto r = torch::randn(out0.sizes(), torch::kDouble);
  t.mutable_grad() = torch::Tensor();
  (out0 * r).sum().backward();
  ASSERT_TRUE(t.grad().defined()) << what;
  const auto analytic = t.grad().clone();
  const double eps = 1e-6;
  auto flat = t.detach().view({-1});
  auto ga = analytic.view({-1});
  for (int64_t k = 0; k < flat.numel(); ++k) {
    double plus, minus;
    {
      torch::NoGradGuard g;
      const double orig = flat[k].item<double>();
      flat[k] = orig + eps;
      plus = (forward() * r).sum().item<double>();
      flat[k] = orig - eps;
      minus = (forward() * r).sum().item<double>();
      flat[k] = orig;
    }
    const double fd = (plus - minus) / (2 * eps);
    const double an = ga[k].item<double>();
    EXPECT_NEAR(an, fd, 1e-4 * std::max(1.0, std::abs(fd))) << what << " element " << k;
  }
}

}  // namespace

// ============================================ heads: values ================================================

TEST(ArcMargin, HandComputedIncludingLowCosBranch) {
  const Toy toy;
  const double m = 0.5, s = 80.0;
  auto head = make_head(head_yaml("    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n"));
  head->to(torch::kDouble);
  set_param(*head, "weight", toy.weight());
  head->train();
  const auto out = head->forward(toy.features(), toy.labels());
  ASSERT_LT(toy.cos(2, 2), -std::cos(m));  // sample 2 exercises the cos <= cos(pi - m) branch
  const auto want = toy.expected([&](int i, int j, double c, bool tgt) {
    if (!tgt) return s * c;
    const double theta = std::acos(c);
    return c > -std::cos(m) ? s * std::cos(theta + m) : s * (c - m * std::sin(m));
  });
  expect_close(out, want);
  // The low branch is not cos(theta + m) (which would wrap past pi):
  EXPECT_GT(std::abs(out[2][2].item<double>() - s * std::cos(165 * kDeg + m)), 1.0);
}

TEST(ArcMargin, EasyMargin) {
  const Toy toy;
  const double m = 0.3, s = 10.0;
  auto head = make_head(head_yaml(
      "    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    margin: 0.3\n    scale: 10\n"
      "    easy_margin: True\n"));
  head->to(torch::kDouble);
  set_param(*head, "weight", toy.weight());
  const auto out = head->forward(toy.features(), toy.labels());
  // Targets at 20° (cos > 0: margin) and 120°, 165° (cos <= 0: plain cos, unlike the non-easy rule at 120°).
  const auto want = toy.expected([&](int, int, double c, bool tgt) {
    if (!tgt) return s * c;
    return c > 0 ? s * std::cos(std::acos(c) + m) : s * c;
  });
  expect_close(out, want);
}

TEST(CosMargin, HandComputed) {
  const Toy toy;
  auto head = make_head(head_yaml("    name: CosMargin\n    embedding_size: 2\n    class_num: 3\n"));
  head->to(torch::kDouble);
  set_param(*head, "weight", toy.weight());
  const auto out = head->forward(toy.features(), toy.labels().view({3, 1}));  // Paddle-style [N, 1] labels
  const auto want = toy.expected([](int, int, double c, bool tgt) { return 64.0 * (c - (tgt ? 0.35 : 0.0)); });
  expect_close(out, want);
}

TEST(CircleMargin, HandComputed) {
  const Toy toy;
  const double m = 0.25, s = 2.0;
  auto head = make_head(head_yaml(
      "    name: CircleMargin\n    embedding_size: 2\n    class_num: 3\n    margin: 0.25\n    scale: 2\n"));
  head->to(torch::kDouble);
  set_param(*head, "weight", toy.weight());
  const auto out = head->forward(toy.features(), toy.labels());
  const auto want = toy.expected([&](int, int, double c, bool tgt) {
    if (tgt) return s * std::max(0.0, 1 + m - c) * (c - (1 - m));
    return s * std::max(0.0, c + m) * (c - m);  // alpha_n = 0 for cos < -m
  });
  expect_close(out, want);
}

TEST(FCHead, IsLinearAndIgnoresLabel) {
  auto head = make_head(head_yaml("    name: FC\n    embedding_size: 2\n    class_num: 3\n"));
  head->to(torch::kDouble);
  set_param(*head, "fc.weight", torch::tensor({{1.0, 2.0}, {-1.0, 0.5}, {0.0, 3.0}}, torch::kDouble));
  set_param(*head, "fc.bias", torch::tensor({0.1, 0.2, 0.3}, torch::kDouble));
  const auto x = torch::tensor({{1.0, -1.0}, {2.0, 0.5}}, torch::kDouble);
  const auto want = torch::tensor({{1 - 2 + 0.1, -1 - 0.5 + 0.2, -3 + 0.3}, {2 + 1 + 0.1, -2 + 0.25 + 0.2, 1.5 + 0.3}},
                                  torch::kDouble);
  expect_close(head->forward(x, torch::Tensor()), want);
  expect_close(head->forward(x, torch::tensor({0, 2})), want);
}

TEST(AdaMargin, HandComputedWithEmaBuffers) {
  const Toy toy;
  const double m = 0.4, h = 1.0, s = 64.0, ta = 0.5, eps = 1e-3;
  auto head = make_head(head_yaml(
      "    name: AdaMargin\n    embedding_size: 2\n    class_num: 3\n    m: 0.4\n    h: 1.0\n    s: 64\n"
      "    t_alpha: 0.5\n"));
  auto* ada = dynamic_cast<AdaMarginImpl*>(head.get());
  ASSERT_NE(ada, nullptr);
  head->to(torch::kDouble);
  set_param(*head, "kernel", toy.weight());
  {
    torch::NoGradGuard g;
    ada->batch_mean.fill_(1.0);
    ada->batch_std.fill_(0.5);
  }
  const auto out = head->forward(toy.features(), toy.labels());

  // Norms 2, 0.5, 1: mean 7/6, unbiased std.
  const double mean = (2.0 + 0.5 + 1.0) / 3;
  const double std = std::sqrt((std::pow(2 - mean, 2) + std::pow(0.5 - mean, 2) + std::pow(1 - mean, 2)) / 2);
  const double bm = ta * mean + (1 - ta) * 1.0, bs = ta * std + (1 - ta) * 0.5;
  EXPECT_NEAR(ada->batch_mean.item<double>(), bm, 1e-12);
  EXPECT_NEAR(ada->batch_std.item<double>(), bs, 1e-12);
  std::vector<double> r(3);
  for (int i = 0; i < 3; ++i) r[i] = std::clamp(h * (toy.fnorm[i] - bm) / (bs + eps), -1.0, 1.0);
  EXPECT_EQ(r[0], 1.0);  // the clip is exercised
  EXPECT_GT(r[1], -1.0);
  const auto want = toy.expected([&](int i, int, double c, bool tgt) {
    c = std::clamp(c, -1 + eps, 1 - eps);
    if (!tgt) return s * c;
    const double theta = std::clamp(std::acos(c) - m * r[i], eps, M_PI - eps);
    return s * (std::cos(theta) - (m + m * r[i]));
  });
  expect_close(out, want);
}

TEST(AdaMargin, DefaultsAndInit) {
  auto head = make_head(head_yaml("    name: AdaMargin\n    embedding_size: 8\n    class_num: 5\n"));
  auto* ada = dynamic_cast<AdaMarginImpl*>(head.get());
  ASSERT_NE(ada, nullptr);
  EXPECT_DOUBLE_EQ(ada->options.m(), 0.4);
  EXPECT_DOUBLE_EQ(ada->options.h(), 0.333);
  EXPECT_DOUBLE_EQ(ada->options.s(), 64.0);
  EXPECT_DOUBLE_EQ(ada->options.t_alpha(), 1.0);
  EXPECT_NEAR(ada->batch_mean.item<double>(), 20.0, 0);
  EXPECT_NEAR(ada->batch_std.item<double>(), 100.0, 0);
  EXPECT_EQ(ada->kernel.sizes(), (std::vector<int64_t>{8, 5}));
  expect_close(ada->kernel.norm(2, {0}).to(torch::kDouble), torch::ones({5}, torch::kDouble), 1e-5);
  // Paddle state-dict names.
  const auto params = head->named_parameters();
  EXPECT_TRUE(params.contains("kernel"));
  const auto bufs = head->named_buffers();
  EXPECT_TRUE(bufs.contains("t") && bufs.contains("batch_mean") && bufs.contains("batch_std"));
}

// PaddleClas: ArcMargin / CosMargin / CircleMargin return the unscaled cos in eval or without a label, AdaMargin
// its input embeddings (the scale is not applied: a scaled value here was a featlearn bug).
TEST(MarginHeads, PlainCosineInEvalOrWithoutLabel) {
  const Toy toy;
  const std::vector<std::pair<std::string, double>> heads = {
      {"    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    scale: 30\n", 1.0},
      {"    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    easy_margin: true\n", 1.0},
      {"    name: CosMargin\n    embedding_size: 2\n    class_num: 3\n", 1.0},
      {"    name: CircleMargin\n    embedding_size: 2\n    class_num: 3\n    margin: 0.3\n    scale: 7\n", 1.0},
      {"    name: AdaMargin\n    embedding_size: 2\n    class_num: 3\n    s: 16\n", 0.0},
  };
  const auto want_cos = toy.expected([](int, int, double c, bool) { return c; });
  for (const auto& [body, s] : heads) {
    SCOPED_TRACE(body);
    auto head = make_head(head_yaml(body));
    head->to(torch::kDouble);
    const std::string wname = head->named_parameters().contains("kernel") ? "kernel" : "weight";
    set_param(*head, wname, toy.weight());
    auto snapshot = [&] {
      std::vector<torch::Tensor> v;
      for (const auto& b : head->named_buffers()) v.push_back(b.value().clone());
      return v;
    };
    const auto before = snapshot();

    // s == 0 marks AdaMargin: the embeddings come back unchanged.
    const auto want = s == 0.0 ? toy.features() : want_cos;
    head->eval();  // eval mode, label given: still the plain cos
    expect_close(head->forward(toy.features(), toy.labels()), want);
    head->train();  // training, no label
    expect_close(head->forward(toy.features(), torch::Tensor()), want);
    auto after = snapshot();
    for (size_t k = 0; k < before.size(); ++k) EXPECT_TRUE(torch::equal(before[k], after[k]));  // no EMA update
    // Train mode with a label differs (the margin is applied) ...
    const auto margin_out = head->forward(toy.features(), toy.labels());
    if (s != 0.0) EXPECT_GT((margin_out - want_cos).abs().max().item<double>(), 1e-3);
    // ... and AdaMargin's EMA buffers move.
    if (auto* ada = dynamic_cast<AdaMarginImpl*>(head.get())) EXPECT_NE(ada->batch_mean.item<double>(), 20.0);
  }
}

TEST(MarginHeads, LabelErrors) {
  auto head = make_head(head_yaml("    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n"));
  const auto x = torch::randn({2, 2});
  EXPECT_NE(error_of([&] { head->forward(x, torch::tensor({0, 3})); }).find("label 3 is out of range [0, 3)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { head->forward(x, torch::tensor({0, -1})); }).find("label -1"), std::string::npos);
  EXPECT_NE(error_of([&] { head->forward(x, torch::tensor({0, 1, 2})); }).find("one label per sample"),
            std::string::npos);
  EXPECT_NE(error_of([&] { head->forward(x, torch::tensor({0.0, 1.0})); }).find("integer"), std::string::npos);
  EXPECT_NE(error_of([&] { head->forward(torch::randn({2, 5}), torch::tensor({0, 1})); })
                .find("expected features [N, 2]"),
            std::string::npos);
  // int32 labels are fine.
  EXPECT_EQ(head->forward(x, torch::tensor({0, 2}, torch::kInt)).sizes(), (std::vector<int64_t>{2, 3}));
}

// ====================================== heads: gradients (double) ==========================================

namespace {
void check_head_gradients(const std::string& body, const std::string& weight_name, int64_t e = 4, int64_t c = 3) {
  SCOPED_TRACE(body);
  torch::manual_seed(3);
  auto head = make_head(head_yaml(body));
  head->to(torch::kDouble);
  head->train();
  auto x = torch::randn({3, e}, torch::kDouble).requires_grad_(true);
  const auto label = torch::tensor({0, 2, 1}, torch::kLong).remainder(c);
  auto fwd = [&] { return head->forward(x, label); };
  check_gradient(fwd, x, "features");
  check_gradient(fwd, head->named_parameters()[weight_name], weight_name);
}
}  // namespace

TEST(HeadGradients, ArcMargin) {
  check_head_gradients("    name: ArcMargin\n    embedding_size: 4\n    class_num: 3\n    scale: 5\n", "weight");
  check_head_gradients("    name: ArcMargin\n    embedding_size: 4\n    class_num: 3\n    easy_margin: true\n", "weight");
}

TEST(HeadGradients, ArcMarginLowCosBranch) {
  // Targets beyond pi - m: gradient of cos - m·sin m.
  const Toy toy;
  auto head = make_head(head_yaml("    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    margin: 0.5\n"));
  head->to(torch::kDouble);
  set_param(*head, "weight", toy.weight());
  auto x = toy.features().requires_grad_(true);
  auto fwd = [&] { return head->forward(x, toy.labels()); };
  check_gradient(fwd, x, "features");
  check_gradient(fwd, head->named_parameters()["weight"], "weight");
}

TEST(HeadGradients, CosMargin) {
  check_head_gradients("    name: CosMargin\n    embedding_size: 4\n    class_num: 3\n    scale: 5\n", "weight");
}

TEST(HeadGradients, CircleMarginWithDetachedAlphas) {
  // alpha_p / alpha_n are detached, so the gradient is that of the logits with the alphas held at their value:
  // compare with finite differences of exactly that function.
  torch::manual_seed(5);
  const double m = 0.25, s = 3.0;
  auto head = make_head(head_yaml(
      "    name: CircleMargin\n    embedding_size: 4\n    class_num: 3\n    margin: 0.25\n    scale: 3\n"));
  head->to(torch::kDouble);
  auto x = torch::randn({3, 4}, torch::kDouble).requires_grad_(true);
  auto w = head->named_parameters()["weight"];
  const auto label = torch::tensor({0, 2, 1});
  const auto onehot = torch::one_hot(label, 3).to(torch::kDouble);
  const auto cos0 = normalized_cosine(x, w).detach();
  const auto alpha = onehot * (1 + m - cos0).clamp_min(0) + (1 - onehot) * (cos0 + m).clamp_min(0);
  const auto delta = onehot * (1 - m) + (1 - onehot) * m;
  // The module's value equals the frozen-alpha function at the current point ...
  expect_close(head->forward(x, label), s * alpha * (cos0 - delta), 1e-12);
  // ... and its gradient equals that function's derivative.
  auto frozen = [&] { return s * alpha * (normalized_cosine(x, w) - delta); };
  auto fwd = [&] { return head->forward(x, label); };
  const auto r = torch::randn({3, 3}, torch::kDouble);
  auto grads = [&](const std::function<torch::Tensor()>& f) {
    auto out = f();
    return torch::autograd::grad({(out * r).sum()}, {x, w});
  };
  const auto g_mod = grads(fwd), g_ref = grads(frozen);
  expect_close(g_mod[0], g_ref[0], 1e-12);
  expect_close(g_mod[1], g_ref[1], 1e-12);
  check_gradient(frozen, x, "features (frozen alphas)");
  check_gradient(frozen, w, "weight (frozen alphas)");
}

TEST(HeadGradients, FC) {
  check_head_gradients("    name: FC\n    embedding_size: 4\n    class_num: 3\n", "fc.weight");
}

TEST(HeadGradients, AdaMargin) {
  // The margin scaler uses detached norms. With t_alpha 0 the EMA buffers stay fixed; w.r.t. the kernel the
  // norms do not move, so a moderate h is checked there. W.r.t. the features, h is large so that every scaler
  // sits at its clip (±1) and is locally constant, making finite differences comparable.
  check_head_gradients("    name: AdaMargin\n    embedding_size: 4\n    class_num: 3\n    t_alpha: 0.0\n    s: 4\n"
                       "    h: 1000\n",
                       "kernel");
  torch::manual_seed(11);
  auto head = make_head(head_yaml(
      "    name: AdaMargin\n    embedding_size: 4\n    class_num: 3\n    t_alpha: 0.0\n    s: 4\n    h: 0.5\n"));
  head->to(torch::kDouble);
  auto* ada = dynamic_cast<AdaMarginImpl*>(head.get());
  {
    torch::NoGradGuard g;
    ada->batch_mean.fill_(2.0);
    ada->batch_std.fill_(1.0);
  }
  const auto x = torch::randn({3, 4}, torch::kDouble);
  const auto label = torch::tensor({1, 0, 2});
  check_gradient([&] { return head->forward(x, label); }, ada->kernel, "kernel, unsaturated scaler");
}

// ================================================ necks ====================================================

TEST(Necks, VehicleNeckShapesAndValues) {
  auto neck = make_neck(neck_yaml("    name: VehicleNeck\n    in_channels: 8\n    out_channels: 4\n"));
  auto* v = dynamic_cast<VehicleNeckImpl*>(neck.get());
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->conv->weight.sizes(), (std::vector<int64_t>{4, 8, 1, 1}));
  EXPECT_TRUE(v->conv->bias.defined());
  EXPECT_EQ(v->conv->bias.abs().sum().item<double>(), 0.0);  // Paddle conv bias default: zeros
  const auto x = torch::randn({2, 8, 1, 1});
  const auto y = neck->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4}));
  // 1x1 conv = matrix product over channels.
  expect_close(y.to(torch::kDouble),
               (x.flatten(1).mm(v->conv->weight.view({4, 8}).t()) + v->conv->bias).to(torch::kDouble).detach(), 1e-5);
  EXPECT_EQ(neck->forward(torch::randn({2, 8, 2, 3})).sizes(), (std::vector<int64_t>{2, 24}));
  EXPECT_NE(error_of([&] { neck->forward(torch::randn({2, 8})); }).find("avg_pool"), std::string::npos);

  auto k3 = make_neck(neck_yaml("    name: VehicleNeck\n    in_channels: 2\n    out_channels: 3\n    kernel_size: 3\n"
                                "    padding: 1\n    stride: 2\n    bias_attr: False\n"));
  EXPECT_EQ(k3->forward(torch::randn({1, 2, 5, 5})).sizes(), (std::vector<int64_t>{1, 3 * 3 * 3}));
  EXPECT_FALSE(k3->named_parameters().contains("conv.bias"));
}

// PaddleClas's BNNeck resets bias_attr to None: without a bias_attr the bias is trainable (init 0); it is frozen
// by `bias_attr: False` or a 1e-20 learning rate (strong_baseline). featlearn once froze it always.
TEST(Necks, BNNeckBiasFollowsBiasAttr) {
  torch::manual_seed(0);
  auto neck = make_neck(neck_yaml("    name: BNNeck\n    num_features: 6\n"));
  auto* bn = dynamic_cast<BNNeckImpl*>(neck.get());
  ASSERT_NE(bn, nullptr);
  EXPECT_TRUE(bn->feat_bn->bias.requires_grad());
  EXPECT_EQ(bn->feat_bn->bias.abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(bn->feat_bn->weight.requires_grad());
  neck->train();
  const auto x = torch::randn({5, 6, 1, 1}) * 3 + 1;
  const auto y = neck->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{5, 6}));
  // Training-mode batch norm: zero mean, (biased) unit variance per feature.
  expect_close(y.mean(0).to(torch::kDouble), torch::zeros({6}, torch::kDouble), 1e-5);
  expect_close((y - y.mean(0)).pow(2).mean(0).to(torch::kDouble), torch::ones({6}, torch::kDouble), 1e-3);

  torch::optim::SGD sgd(neck->parameters(), torch::optim::SGDOptions(0.5));
  const auto w0 = bn->feat_bn->weight.clone();
  (neck->forward(x) * torch::randn({5, 6})).sum().backward();
  sgd.step();
  EXPECT_GT(bn->feat_bn->bias.abs().sum().item<double>(), 0.0);  // trained
  EXPECT_FALSE(torch::equal(bn->feat_bn->weight, w0));
  auto off = make_neck(neck_yaml("    name: BNNeck\n    num_features: 6\n    bias_attr: False\n"));
  EXPECT_FALSE(dynamic_cast<BNNeckImpl*>(off.get())->feat_bn->bias.requires_grad());

  // PaddleClas's strong-baseline attrs parse; the 1e-20 learning rate also means frozen.
  auto paddle_style = make_neck(neck_yaml(
      "    name: BNNeck\n    num_features: 4\n    weight_attr:\n      initializer:\n        name: Constant\n"
      "        value: 1.0\n    bias_attr:\n      initializer:\n        name: Constant\n        value: 0.0\n"
      "      learning_rate: 1.0e-20\n"));
  auto* pbn = dynamic_cast<BNNeckImpl*>(paddle_style.get());
  EXPECT_FALSE(pbn->feat_bn->bias.requires_grad());
  EXPECT_EQ(pbn->feat_bn->weight.sum().item<double>(), 4.0);

  // use_global_stats: running statistics also in training (fresh stats: mean 0, var 1 -> identity).
  auto global = make_neck(neck_yaml("    name: BNNeck\n    num_features: 6\n    use_global_stats: True\n"));
  global->train();
  expect_close(global->forward(x).to(torch::kDouble), x.flatten(1).to(torch::kDouble), 1e-4);
}

TEST(Necks, FCNeckAndParamAttrs) {
  torch::manual_seed(1);
  auto neck = make_neck(neck_yaml("    name: FC\n    embedding_size: 200\n    class_num: 300\n"));
  auto* fc = dynamic_cast<FCNeckImpl*>(neck.get());
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(neck->forward(torch::randn({2, 200})).sizes(), (std::vector<int64_t>{2, 300}));
  // XavierNormal: std = sqrt(2 / (200 + 300)) = 0.0632 (60000 samples: within 3%).
  EXPECT_NEAR(fc->fc->weight.std().item<double>(), std::sqrt(2.0 / 500), 0.03 * std::sqrt(2.0 / 500));
  EXPECT_EQ(fc->fc->bias.abs().sum().item<double>(), 0.0);

  // strong_baseline-style KaimingUniform with an explicit fan_in; no bias.
  auto head = make_head(head_yaml(
      "    name: FC\n    embedding_size: 64\n    class_num: 100\n    weight_attr:\n      initializer:\n"
      "        name: KaimingUniform\n        fan_in: 12288\n    bias_attr: False\n"));
  auto* fh = dynamic_cast<FCHeadImpl*>(head.get());
  const double bound = std::sqrt(2.0) * std::sqrt(3.0 / 12288);
  EXPECT_LE(fh->fc->weight.abs().max().item<double>(), bound);
  EXPECT_GT(fh->fc->weight.abs().max().item<double>(), 0.95 * bound);
  EXPECT_FALSE(head->named_parameters().contains("fc.bias"));

  auto normal = make_head(head_yaml(
      "    name: FC\n    embedding_size: 100\n    class_num: 100\n    weight_attr:\n      initializer:\n"
      "        name: Normal\n        std: 0.001\n    bias_attr:\n      initializer:\n        name: Constant\n"
      "        value: 0.25\n"));
  auto* fn = dynamic_cast<FCHeadImpl*>(normal.get());
  EXPECT_NEAR(fn->fc->weight.std().item<double>(), 0.001, 0.0001);
  EXPECT_EQ(fn->fc->bias.min().item<double>(), 0.25);
  EXPECT_EQ(fn->fc->bias.max().item<double>(), 0.25);
}

TEST(Necks, FRFNNeckUnitNorm) {
  torch::manual_seed(2);
  auto neck = make_neck(neck_yaml("    name: FRFNNeck\n    num_features: 8\n    low_dim: 4\n"));
  auto* f = dynamic_cast<FRFNNeckImpl*>(neck.get());
  ASSERT_NE(f, nullptr);
  const auto x = torch::randn({3, 8});
  const auto y = neck->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 4}));
  expect_close(y.norm(2, {1}).to(torch::kDouble), torch::ones({3}, torch::kDouble), 1e-6);
  // fc1 -> LeakyReLU(0.1) -> fc2 -> L2 normalize, by hand.
  auto h1 = x.mm(f->fc1->weight.t()) + f->fc1->bias;
  h1 = torch::where(h1 > 0, h1, 0.1 * h1);
  auto h2 = h1.mm(f->fc2->weight.t()) + f->fc2->bias;
  expect_close(y.to(torch::kDouble), (h2 / h2.norm(2, {1}, true)).to(torch::kDouble).detach(), 1e-5);
}

TEST(Necks, Tanh) {
  auto neck = make_neck(neck_yaml("    name: Tanh\n"));
  const auto x = torch::tensor({-1.0, 0.0, 2.0}, torch::kDouble);
  expect_close(neck->forward(x), torch::tensor({std::tanh(-1.0), 0.0, std::tanh(2.0)}, torch::kDouble), 1e-12);
}

// ============================================ config errors ================================================

TEST(HeadConfig, UnknownKeySuggestsNearest) {
  const auto msg = error_of(
      [] { make_head(head_yaml("    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    margn: 0.2\n")); });
  EXPECT_NE(msg.find("test.yaml:6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Arch.Head.margn"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean margin?"), std::string::npos) << msg;
}

TEST(HeadConfig, MissingRequiredKeys) {
  auto msg = error_of([] { make_head(head_yaml("    name: CosMargin\n    class_num: 3\n")); });
  EXPECT_NE(msg.find("Arch.Head"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing required key 'embedding_size'"), std::string::npos) << msg;
  msg = error_of([] { make_head(head_yaml("    name: ArcMargin\n    embedding_size: 3\n")); });
  EXPECT_NE(msg.find("'class_num'"), std::string::npos) << msg;
  // CircleMargin has no default margin/scale (as in PaddleClas).
  msg = error_of([] { make_head(head_yaml("    name: CircleMargin\n    embedding_size: 3\n    class_num: 3\n")); });
  EXPECT_TRUE(msg.find("'margin'") != std::string::npos || msg.find("'scale'") != std::string::npos) << msg;
  msg = error_of([] { make_head(head_yaml("    name: CircleMargin\n    embedding_size: 3\n    class_num: 3\n    scale: 2\n")); });
  EXPECT_NE(msg.find("'margin'"), std::string::npos) << msg;
}

TEST(HeadConfig, WrongTypesAndValues) {
  auto msg = error_of(
      [] { make_head(head_yaml("    name: ArcMargin\n    embedding_size: 2\n    class_num: 3\n    margin: big\n")); });
  EXPECT_NE(msg.find("Arch.Head.margin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected a number"), std::string::npos) << msg;
  msg = error_of([] { make_head(head_yaml("    name: FC\n    embedding_size: 0\n    class_num: 3\n")); });
  EXPECT_NE(msg.find("Arch.Head.embedding_size: must be a positive integer"), std::string::npos) << msg;
  msg = error_of([] { make_head(head_yaml("    name: ArcMarginX\n    embedding_size: 2\n    class_num: 3\n")); });
  EXPECT_NE(msg.find("Arch.Head.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean ArcMargin?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("AdaMargin, ArcMargin, CircleMargin, CosMargin, FC"), std::string::npos) << msg;
}

TEST(NeckConfig, Errors) {
  auto msg = error_of([] { make_neck(neck_yaml("    name: VehicleNeck\n    in_channels: 8\n    out_channel: 4\n")); });
  EXPECT_NE(msg.find("Arch.Neck.out_channel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean out_channels?"), std::string::npos) << msg;
  msg = error_of([] { make_neck(neck_yaml("    name: BNNeck\n    num_features: 4\n    weight_attr:\n"
                                          "      initializer:\n        name: Kaiming\n")); });
  EXPECT_NE(msg.find("Arch.Neck.weight_attr.initializer.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("KaimingNormal"), std::string::npos) << msg;
  msg = error_of([] { make_neck(neck_yaml("    name: FC\n    embedding_size: 4\n    class_num: 2\n"
                                          "    weight_attr:\n      learning_rate: 0.1\n")); });
  EXPECT_NE(msg.find("Arch.Neck.weight_attr.learning_rate"), std::string::npos) << msg;
  msg = error_of([] { make_neck(neck_yaml("    name: Tanh\n    scale: 2\n")); });
  EXPECT_NE(msg.find("Arch.Neck.scale: unknown key"), std::string::npos) << msg;
  msg = error_of([] { make_neck(neck_yaml("    name: VehicleNeck\n    in_channels: 8\n    out_channels: 4\n"
                                          "    padding_mode: reflct\n")); });
  EXPECT_NE(msg.find("did you mean reflect?"), std::string::npos) << msg;
}

TEST(Registration, IdempotentAndComplete) {
  register_builtin_heads();
  register_builtin_heads();
  register_builtin_necks();
  register_builtin_necks();
  EXPECT_EQ(head_registry().names(), (std::vector<std::string>{"AdaMargin", "ArcMargin", "CircleMargin", "CosMargin", "FC"}));
  for (const auto* n : {"VehicleNeck", "BNNeck", "FC", "FRFNNeck", "Tanh"}) EXPECT_TRUE(neck_registry().contains(n)) << n;
}
