// Per-parameter lr multipliers (LrMultipliers, e.g. ResNet50_metabin's bias_lr_factor) and stepping one optimizer
// of a set alone (the MetaBIN loop): hand-computed Momentum updates, refusal for other optimizers, checkpoints.
#include <featlearn/optim/optimizer.h>

#include <torch/torch.h>

#include <gtest/gtest.h>

using namespace featlearn;

namespace {
torch::Tensor param(std::vector<double> v) { return torch::tensor(v, torch::kDouble).requires_grad_(); }
void set_grad(torch::Tensor& p, std::vector<double> g) { p.mutable_grad() = torch::tensor(g, torch::kDouble); }
}  // namespace

TEST(LrMultipliers, MomentumStepsEachParameterWithItsFactor) {
  auto w = param({1.0, 2.0}), b = param({0.5});
  ParameterScopes scopes = {{"RecModel", {{"backbone.conv.weight", w}, {"backbone.bn.bias", b}}}};
  auto cfg = Config::from_string(R"(
Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Constant, learning_rate: 0.1},
            regularizer: {name: L2, coeff: 0.5}}
)");
  auto opt = OptimizerSet::create(cfg["Optimizer"], scopes, 1, 1, {{b, 2.0}});
  for (int step = 0; step < 2; ++step) {
    opt->zero_grad();
    set_grad(w, {1.0, -1.0});
    set_grad(b, {1.0});
    opt->step();
  }
  // g' = g + 0.5 p; v1 = g'1, v2 = 0.9 v1 + g'2; p -= lr · factor · v.
  // w0: g' = 1.5 -> v 1.5, p 0.85; g' = 1.425 -> v 2.775, p 0.5725.  b (factor 2): g' 1.25 -> v 1.25,
  // p 0.25; g' 1.125 -> v 2.25, p -0.2.
  EXPECT_NEAR(w[0].item<double>(), 0.5725, 1e-12);
  EXPECT_NEAR(b[0].item<double>(), -0.2, 1e-12);
  // The state round-trips through a checkpoint with the groups in the same order.
  torch::serialize::OutputArchive ar;
  opt->save(ar);
  std::ostringstream os;
  ar.save_to(os);
  auto w2 = param({0.5725, 0.0}), b2 = param({-0.2});
  {
    torch::NoGradGuard ng;
    w2[1].copy_(w[1]);
  }
  ParameterScopes scopes2 = {{"RecModel", {{"backbone.conv.weight", w2}, {"backbone.bn.bias", b2}}}};
  auto opt2 = OptimizerSet::create(cfg["Optimizer"], scopes2, 1, 1, {{b2, 2.0}});
  std::istringstream is(os.str());
  torch::serialize::InputArchive in;
  in.load_from(is);
  opt2->load(in);
  for (auto* o : {opt.get(), opt2.get()}) {
    o->zero_grad();
    auto& ww = o == opt.get() ? w : w2;
    auto& bb = o == opt.get() ? b : b2;
    set_grad(ww, {1.0, -1.0});
    set_grad(bb, {1.0});
    o->step();
  }
  EXPECT_TRUE(torch::allclose(w, w2, 0, 1e-15));
  EXPECT_TRUE(torch::allclose(b, b2, 0, 1e-15));
}

TEST(LrMultipliers, OtherOptimizersRefuseAFactor) {
  auto b = param({0.5});
  ParameterScopes scopes = {{"RecModel", {{"backbone.bn.bias", b}}}};
  auto cfg = Config::from_string("Optimizer: {name: Adam, lr: {name: Constant, learning_rate: 0.1}}\n");
  try {
    OptimizerSet::create(cfg["Optimizer"], scopes, 1, 1, {{b, 2.0}});
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("SGD and Momentum only"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(OptimizerSet::create(cfg["Optimizer"], scopes, 1, 1, {{b, 1.0}}));
}

TEST(LrMultipliers, StepOfStepsOneOptimizerOnly) {
  auto a = param({1.0}), g = param({1.0});
  ParameterScopes scopes = {{"RecModel", {{"backbone.conv.weight", a}, {"backbone.x.gate.gate", g}}}};
  auto cfg = Config::from_string(R"(
Optimizer:
  - SGD: {scope: ".*conv", lr: {name: Constant, learning_rate: 0.1}}
  - SGD: {scope: "backbone.*gate", lr: {name: Constant, learning_rate: 0.2}}
)");
  auto opt = OptimizerSet::create(cfg["Optimizer"], scopes, 1, 1);
  set_grad(a, {1.0});
  set_grad(g, {1.0});
  opt->step_of(1);
  EXPECT_DOUBLE_EQ(a.item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(g.item<double>(), 0.8);
  opt->zero_grad_of(1);
  EXPECT_EQ(g.grad().item<double>(), 0.0);
  EXPECT_EQ(a.grad().item<double>(), 1.0);
  EXPECT_EQ(opt->iteration(), 0);
  opt->advance();
  EXPECT_EQ(opt->iteration(), 1);
  ASSERT_EQ(opt->parameters_of(0).size(), 1u);
  EXPECT_TRUE(opt->parameters_of(0)[0].is_same(a));
}
