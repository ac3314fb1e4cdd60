// DCHLoss, DSHSDLoss, LCDSHLoss (deephash_losses.h): values and gradients against the pair-by-pair double
// reference of tests/fixtures/deephash_fixtures.py, hand-computed two-sample cases, central-difference gradient
// checks, the config keys, and the model outputs each loss reads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <featlearn/config/config.h>
#include <featlearn/io/state_dict.h>
#include <featlearn/loss/deephash_losses.h>
#include <featlearn/loss/loss.h>

#include "../fixture_path.h"
#include "../model/backbone_test_util.h"  // error_of
#include "gradient_check.h"

#include <cmath>
#include <map>
#include <string>

using namespace featlearn;
using featlearn::test::error_of;

namespace {

std::map<std::string, torch::Tensor> dh_fixture() {
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : load_torch_state_dict(fixture("deephash/losses.pth"))) m[k] = v;
  return m;
}

torch::Tensor dh_d(std::initializer_list<double> v, int64_t rows) {
  return torch::tensor(std::vector<double>(v), torch::kFloat64).view({rows, -1});
}

CombinedLoss dh_losses(const std::string& yaml) {
  auto cfg = Config::from_string("Loss:\n  Train:\n" + yaml, "loss.yaml");
  return CombinedLoss(cfg["Loss"]["Train"]);
}

// Compares a loss function of (features[, logits]) with a fixture case: value and autograd gradients.
void expect_matches_reference(const std::map<std::string, torch::Tensor>& fx, const std::string& name,
                              const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& loss) {
  SCOPED_TRACE(name);
  ASSERT_TRUE(fx.count(name + ".features")) << "fixture case missing";
  auto f = fx.at(name + ".features").clone().set_requires_grad(true);
  torch::Tensor z;
  if (fx.count(name + ".logits")) z = fx.at(name + ".logits").clone().set_requires_grad(true);
  const auto value = loss(f, z);
  EXPECT_NEAR(value.item<double>(), fx.at(name + ".loss").item<double>(), 1e-10);
  value.backward();
  EXPECT_TRUE(torch::allclose(f.grad(), fx.at(name + ".grad_features"), 1e-9, 1e-11))
      << (f.grad() - fx.at(name + ".grad_features")).abs().max().item<double>();
  if (z.defined())
    EXPECT_TRUE(torch::allclose(z.grad(), fx.at(name + ".grad_logits"), 1e-9, 1e-11))
        << (z.grad() - fx.at(name + ".grad_logits")).abs().max().item<double>();
  // Single precision agrees too.
  const auto f32 = loss(fx.at(name + ".features").to(torch::kFloat32),
                        z.defined() ? fx.at(name + ".logits").to(torch::kFloat32) : torch::Tensor());
  EXPECT_NEAR(f32.item<double>(), fx.at(name + ".loss").item<double>(), 1e-5 * std::abs(value.item<double>()));
}

}  // namespace

TEST(DCHLoss, MatchesPairwiseReference) {
  const auto fx = dh_fixture();
  expect_matches_reference(fx, "dch", [&](const torch::Tensor& f, const torch::Tensor&) {
    return dch_loss(f, fx.at("dch.labels"), DCHLossOptions().gamma(20).lambda(0.1).n_class(4));
  });
  // One class only: no dissimilar pair, so w = 1 (PaddleClas's else branch).
  expect_matches_reference(fx, "dch_one_class", [&](const torch::Tensor& f, const torch::Tensor&) {
    return dch_loss(f, fx.at("dch_one_class.labels"), DCHLossOptions().gamma(5).lambda(0.5).n_class(1));
  });
}

TEST(DCHLoss, HandComputedTwoSamples) {
  // f1 = (1, 0), f2 = (0, 1), labels 0, 1, K = 2, γ = 1, λ = 0.1. s = I, Σs = Σ(1 − s) = 2, N² = 4: w = 2 for
  // every pair. d_ii = (1 − 0.99)·1 = 0.01, d_12 = (1 − 0)·1 = 1. Pairs: i = j: 2·(log 0.01 + log 101);
  // i ≠ j: 2·log 2. Quantization: cos(|f_i|, 1) = 1/√2, d = 1 − 1/√2 for both rows.
  const double diag = 2 * (std::log(0.01) + std::log(101.0)), off = 2 * std::log(2.0);
  const double quant = std::log(1 + (1 - 1 / std::sqrt(2.0)));
  const double want = (2 * diag + 2 * off) / 4 + 0.1 * quant;
  const auto f = dh_d({1, 0, 0, 1}, 2);
  const auto got = dch_loss(f, torch::tensor({0, 1}), DCHLossOptions().gamma(1).lambda(0.1).n_class(2));
  EXPECT_NEAR(got.item<double>(), want, 1e-12);
  // Labels [N, 1] and the model-output form read `features`.
  ModelOutput out;
  out.features = f;
  EXPECT_NEAR(DCHLossImpl(DCHLossOptions().gamma(1).lambda(0.1).n_class(2)).forward(out, torch::tensor({{0}, {1}}))
                  .item<double>(),
              want, 1e-12);
  // A zero feature row has a finite gradient (PaddleClas: NaN through pow(0.5) of a zero norm).
  auto z = dh_d({0, 0, 0.5, -1, 1, 2}, 3).set_requires_grad(true);
  dch_loss(z, torch::tensor({0, 0, 1}), DCHLossOptions().gamma(2).lambda(0.1).n_class(2)).backward();
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>()) << z.grad();
}

TEST(DCHLoss, GradientCheck) {
  torch::manual_seed(3);
  const auto labels = torch::tensor({0, 1, 1, 2, 0});
  expect_gradients_match(
      [&](const torch::Tensor& f) { return dch_loss(f, labels, DCHLossOptions().gamma(3).lambda(0.7).n_class(3)); },
      torch::randn({5, 6}, torch::kFloat64));
}

TEST(DSHSDLoss, MatchesPairwiseReference) {
  const auto fx = dh_fixture();
  expect_matches_reference(fx, "dshsd", [&](const torch::Tensor& f, const torch::Tensor& z) {
    return dshsd_loss(f, z, fx.at("dshsd.labels"), DSHSDLossOptions().alpha(0.05));
  });
  expect_matches_reference(fx, "dshsd_multi", [&](const torch::Tensor& f, const torch::Tensor& z) {
    return dshsd_loss(f, z, fx.at("dshsd.labels"), DSHSDLossOptions().alpha(0.3).multi_label(true));
  });
}

TEST(DSHSDLoss, HandComputedTwoSamplesAndInputs) {
  // f1 = (1, 0), f2 = (−0.5, 0): K = 2, margin 4, D_12 = 2.25; labels 0, 1 (dissimilar): each off-diagonal pair
  // adds max(4 − 2.25, 0)/2 = 0.875, the diagonal (similar, D = 0) 0: L_d = 1.75/4. Zero logits over 2
  // classes: L_c = log 2. α = 1.
  const auto f = dh_d({1, 0, -0.5, 0}, 2), z = torch::zeros({2, 2}, torch::kFloat64);
  const auto labels = torch::tensor({0, 1});
  EXPECT_NEAR(dshsd_loss(f, z, labels, DSHSDLossOptions().alpha(1)).item<double>(), std::log(2.0) + 0.4375, 1e-12);
  // Sigmoid cross entropy on zero logits: 2 classes · log 2 per sample.
  EXPECT_NEAR(dshsd_loss(f, z, labels, DSHSDLossOptions().alpha(1).multi_label(true)).item<double>(),
              2 * std::log(2.0) + 0.4375, 1e-12);
  // Extreme logits stay finite (PaddleClas's log(softmax) and log(1 + e^−z) overflow to inf here): each sample
  // puts 200 on the wrong class and −200 on its own: softmax CE 400; sigmoid CE 200 + 200 (two wrong classes).
  const auto big = dh_d({200, -200, -200, 200}, 2);
  for (bool multi : {false, true}) {
    const double v = dshsd_loss(f, big, torch::tensor({1, 0}), DSHSDLossOptions().alpha(1).multi_label(multi)).item<double>();
    EXPECT_NEAR(v, 400.0 + 0.4375, 1e-9) << multi;
  }
  // It reads features and logits: without a Head there are no logits.
  ModelOutput out;
  out.features = f;
  const std::string msg = error_of([&] { DSHSDLossImpl(DSHSDLossOptions()).forward(out, labels); });
  EXPECT_NE(msg.find("DSHSDLoss"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Arch.Head"), std::string::npos) << msg;
  out.logits = z;
  EXPECT_NEAR(DSHSDLossImpl(DSHSDLossOptions().alpha(1)).forward(out, labels).item<double>(), std::log(2.0) + 0.4375,
              1e-12);
  // Labels beyond the logits' classes.
  const std::string range = error_of([&] { dshsd_loss(f, z, torch::tensor({0, 2}), DSHSDLossOptions()); });
  EXPECT_NE(range.find("label 2 is out of range [0, 2)"), std::string::npos) << range;
}

TEST(DSHSDLoss, GradientCheck) {
  torch::manual_seed(4);
  const auto labels = torch::tensor({0, 1, 0, 2});
  const auto z = torch::randn({4, 3}, torch::kFloat64);
  for (bool multi : {false, true}) {
    SCOPED_TRACE(multi);
    // Codes of width 3 (margin 6) around ±1: distances on both sides of the margin, none at the hinge.
    const auto f0 = torch::tensor({0.9, -0.8, 0.7, -0.9, 0.85, -0.75, 0.2, 0.1, -0.3, 0.6, -0.5, 0.4},
                                  torch::kFloat64).view({4, 3});
    const auto opts = DSHSDLossOptions().alpha(0.5).multi_label(multi);
    expect_gradients_match([&](const torch::Tensor& f) { return dshsd_loss(f, z, labels, opts); }, f0);
    expect_gradients_match([&](const torch::Tensor& zz) { return dshsd_loss(f0, zz, labels, opts); }, z);
  }
}

TEST(LCDSHLoss, MatchesPairwiseReference) {
  const auto fx = dh_fixture();
  expect_matches_reference(fx, "lcdsh", [&](const torch::Tensor& f, const torch::Tensor&) {
    return lcdsh_loss(f, fx.at("lcdsh.labels"), LCDSHLossOptions().n_class(3).lambda(3));
  });
}

TEST(LCDSHLoss, HandComputedTwoSamples) {
  // f1 = (1, 1), f2 = (1, −1), one class (σ = 1; n_class 1, where PaddleClas's squeeze() breaks s): θ_ii = 1,
  // θ_12 = 0; b = sign(f) = f, so β = θ and the second term is 0.
  const auto f = dh_d({1, 1, 1, -1}, 2);
  const double want = (2 * std::log1p(std::exp(-1.0)) + 2 * std::log(2.0)) / 4;
  EXPECT_NEAR(lcdsh_loss(f, torch::tensor({0, 0}), LCDSHLossOptions().n_class(1).lambda(3)).item<double>(), want,
              1e-12);
  // Halving f: θ = β/4, so (σ(θ) − σ(β))² enters: diagonal θ = 0.25, β = 1; off-diagonal 0 and 0.
  const auto h = f * 0.5;
  const double sig = 1 / (1 + std::exp(-0.25)) - 1 / (1 + std::exp(-1.0));
  const double want_h = (2 * std::log1p(std::exp(-0.25)) + 2 * std::log(2.0)) / 4 + 3 * (2 * sig * sig) / 4;
  EXPECT_NEAR(lcdsh_loss(h, torch::tensor({0, 0}), LCDSHLossOptions().n_class(1).lambda(3)).item<double>(), want_h,
              1e-12);
  // Different classes: σ_12 = −1, log(1 + e^0) unchanged for θ_12 = 0.
  EXPECT_NEAR(lcdsh_loss(f, torch::tensor({0, 1}), LCDSHLossOptions().n_class(2).lambda(3)).item<double>(), want,
              1e-12);
  const std::string range = error_of([&] { lcdsh_loss(f, torch::tensor({0, 3}), LCDSHLossOptions().n_class(3)); });
  EXPECT_NE(range.find("n_class is 3"), std::string::npos) << range;
}

TEST(LCDSHLoss, GradientCheck) {
  torch::manual_seed(5);
  const auto labels = torch::tensor({0, 1, 1, 2, 0});
  auto f0 = torch::randn({5, 4}, torch::kFloat64);
  f0 = torch::where(f0.abs() < 0.05, f0 + 0.1 * f0.sign(), f0);  // sign(f) constant under the perturbation
  expect_gradients_match(
      [&](const torch::Tensor& f) { return lcdsh_loss(f, labels, LCDSHLossOptions().n_class(3).lambda(3)); }, f0);
}

TEST(DeepHashLosses, ConfigKeysOfThePaddleClasConfigs) {
  // The Loss.Train entries of DCH.yaml, DSHSD.yaml and LCDSH.yaml, weighted.
  auto dch = dh_losses("    - DCHLoss: {weight: 2.0, gamma: 20.0, _lambda: 0.1, n_class: 10}\n");
  auto dshsd = dh_losses("    - DSHSDLoss: {weight: 1.0, alpha: 0.05}\n");
  auto lcdsh = dh_losses("    - LCDSHLoss: {weight: 1.0, n_class: 10, _lambda: 3}\n");
  torch::manual_seed(6);
  ModelOutput out;
  out.features = torch::randn({4, 48});
  out.logits = torch::randn({4, 10});
  const auto labels = torch::tensor({{1}, {7}, {1}, {9}});
  EXPECT_NEAR(dch->forward(out, labels).total.item<double>(),
              2 * dch_loss(out.features, labels, DCHLossOptions().gamma(20).lambda(0.1).n_class(10)).item<double>(),
              1e-6);
  EXPECT_NEAR(dshsd->forward(out, labels).total.item<double>(),
              dshsd_loss(out.features, out.logits, labels, DSHSDLossOptions().alpha(0.05)).item<double>(), 1e-6);
  EXPECT_NEAR(lcdsh->forward(out, labels).total.item<double>(),
              lcdsh_loss(out.features, labels, LCDSHLossOptions().n_class(10).lambda(3)).item<double>(), 1e-6);
  const std::vector<std::pair<std::string, std::string>> errors = {
      {"    - DCHLoss: {weight: 1.0, _lambda: 0.1, n_class: 10}\n", "gamma"},
      {"    - DCHLoss: {weight: 1.0, gamma: 0, _lambda: 0.1, n_class: 10}\n", "must be positive"},
      {"    - DCHLoss: {weight: 1.0, gamma: 20, lambda: 0.1, n_class: 10}\n", "did you mean _lambda"},
      {"    - DCHLoss: {weight: 1.0, gamma: 20, _lambda: 0.1, n_class: 0}\n", "n_class"},
      {"    - DSHSDLoss: {weight: 1.0}\n", "alpha"},
      {"    - DSHSDLoss: {weight: 1.0, alpha: .nan}\n", "finite"},
      {"    - DSHSDLoss: {weight: 1.0, alpha: 0.05, multi_label: 2}\n", "multi_label"},
      {"    - LCDSHLoss: {weight: 1.0, _lambda: 3}\n", "n_class"},
      {"    - LCDSHLoss: {weight: 1.0, n_class: 10, _lambda: 3, gamma: 1}\n", "unknown key"}};
  for (const auto& [yaml, want] : errors) {
    const std::string msg = error_of([&] { dh_losses(yaml); });
    EXPECT_NE(msg.find(want), std::string::npos) << yaml << msg;
    EXPECT_NE(msg.find("loss.yaml:3"), std::string::npos) << yaml << msg;
  }
}
