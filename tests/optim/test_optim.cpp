// Optimizers and lr schedules: hand-computed values (PaddleClas / Paddle formulas), scopes, checkpoints, errors.
#include <featlearn/optim/optimizer.h>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>

using featlearn::Config;
using featlearn::ConfigError;
using featlearn::LrSchedule;
using featlearn::OptimizerSet;
using featlearn::ParameterScopes;

namespace {

constexpr double kTol = 1e-12;

// Parses `text` and returns its top-level `key` node (the Config must outlive nothing: nodes share storage).
featlearn::ConfigNode node_of(const std::string& text, const std::string& key) {
  return Config::from_string(text, "t.yaml")[key];
}

std::unique_ptr<LrSchedule> schedule(const std::string& lr_yaml, int64_t ipe, int64_t epochs) {
  return LrSchedule::create(node_of("lr: " + lr_yaml, "lr"), ipe, epochs);
}

std::unique_ptr<OptimizerSet> optimizers(const std::string& yaml, const ParameterScopes& scopes, int64_t ipe = 10,
                                         int64_t epochs = 10) {
  return OptimizerSet::create(node_of(yaml, "Optimizer"), scopes, ipe, epochs);
}

torch::Tensor param(std::vector<double> v) {
  return torch::tensor(v, torch::kDouble).requires_grad_();
}

void set_grad(torch::Tensor& p, std::vector<double> g) {
  p.mutable_grad() = torch::tensor(g, torch::kDouble).view(p.sizes());
}

void expect_values(const torch::Tensor& t, std::vector<double> expected, double tol = kTol) {
  auto flat = t.detach().flatten();
  ASSERT_EQ(flat.numel(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(flat[i].item<double>(), expected[i], tol) << "element " << i;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const featlearn::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

// ------------------------------------------------------------------------------------------------ schedules

TEST(LrSchedule, BareLearningRateIsConstant) {
  auto s = schedule("{learning_rate: 0.1}", 10, 5);
  EXPECT_NEAR(s->lr_at(0), 0.1, kTol);
  EXPECT_NEAR(s->lr_at(49), 0.1, kTol);
}

TEST(LrSchedule, CosinePerIteration) {
  // T_max = epochs * ipe = 100 iterations.
  auto s = schedule("{name: Cosine, learning_rate: 0.1}", 10, 10);
  EXPECT_NEAR(s->lr_at(0), 0.1, kTol);
  EXPECT_NEAR(s->lr_at(50), 0.05, kTol);  // midpoint
  EXPECT_NEAR(s->lr_at(25), 0.05 * (1 + std::cos(M_PI / 4)), kTol);
  EXPECT_NEAR(s->lr_at(100), 0.0, kTol);
  auto m = schedule("{name: Cosine, learning_rate: 0.1, eta_min: 0.01}", 10, 10);
  EXPECT_NEAR(m->lr_at(50), 0.01 + 0.09 * 0.5, kTol);
}

TEST(LrSchedule, CosineWithWarmup) {
  // warmup_steps = 2 * 10 = 20 from 0.01 to 0.1; then T_max = (10 - 2) * 10 = 80 counted from the warmup end.
  auto s = schedule("{name: Cosine, learning_rate: 0.1, warmup_epoch: 2, warmup_start_lr: 0.01}", 10, 10);
  EXPECT_NEAR(s->lr_at(0), 0.01, kTol);                      // warmup start
  EXPECT_NEAR(s->lr_at(10), 0.01 + 0.09 * 10 / 20.0, kTol);   // mid warmup
  EXPECT_NEAR(s->lr_at(19), 0.01 + 0.09 * 19 / 20.0, kTol);   // last warmup step
  EXPECT_NEAR(s->lr_at(20), 0.1, kTol);                       // warmup end = cosine start
  EXPECT_NEAR(s->lr_at(60), 0.05, kTol);                      // cosine midpoint (s = 40 of 80)
  EXPECT_NEAR(s->lr_at(99), 0.05 * (1 + std::cos(M_PI * 79 / 80.0)), kTol);
}

TEST(LrSchedule, CosineByEpoch) {
  // T_max = 10 epochs; the lr changes only at epoch boundaries.
  auto s = schedule("{name: Cosine, learning_rate: 0.1, by_epoch: true}", 10, 10);
  EXPECT_NEAR(s->lr_at(9), 0.1, kTol);
  EXPECT_NEAR(s->lr_at(49), 0.05 * (1 + std::cos(M_PI * 4 / 10.0)), kTol);
  EXPECT_NEAR(s->lr_at(50), 0.05, kTol);
  EXPECT_NEAR(s->lr_at(59), 0.05, kTol);
  EXPECT_TRUE(s->by_epoch());
  // by_epoch warmup counts epochs: 2 warmup epochs from 0 to 0.1, then T_max = 8.
  auto w = schedule("{name: Cosine, learning_rate: 0.1, by_epoch: true, warmup_epoch: 2}", 10, 10);
  EXPECT_NEAR(w->lr_at(9), 0.0, kTol);
  EXPECT_NEAR(w->lr_at(10), 0.05, kTol);
  EXPECT_NEAR(w->lr_at(20), 0.1, kTol);
  EXPECT_NEAR(w->lr_at(60), 0.05, kTol);
}

TEST(LrSchedule, MultiStepDecayMilestones) {
  // The seed config's keys (verbose, last_epoch) are accepted.
  const std::string cfg = "{name: MultiStepDecay, learning_rate: 0.01, milestones: [3, 6], gamma: 0.5, "
                          "verbose: False, last_epoch: -1";
  auto s = schedule(cfg + "}", 10, 10);
  EXPECT_NEAR(s->lr_at(29), 0.01, kTol);
  EXPECT_NEAR(s->lr_at(30), 0.005, kTol);
  EXPECT_NEAR(s->lr_at(59), 0.005, kTol);
  EXPECT_NEAR(s->lr_at(60), 0.0025, kTol);
  // With warmup the milestones count from the warmup end (Paddle's LinearWarmup steps the inner schedule).
  auto w = schedule(cfg + ", warmup_epoch: 1}", 10, 10);
  EXPECT_NEAR(w->lr_at(5), 0.005, kTol);  // warmup 0 -> 0.01 over 10 steps
  EXPECT_NEAR(w->lr_at(30), 0.01, kTol);
  EXPECT_NEAR(w->lr_at(40), 0.005, kTol);
  auto e = schedule(cfg + ", by_epoch: true}", 10, 10);
  EXPECT_NEAR(e->lr_at(29), 0.01, kTol);
  EXPECT_NEAR(e->lr_at(30), 0.005, kTol);
  EXPECT_NEAR(e->lr_at(65), 0.0025, kTol);
}

TEST(LrSchedule, PiecewiseAndItsLearningRateRule) {
  auto s = schedule("{name: Piecewise, decay_epochs: [2, 4], values: [0.1, 0.01, 0.001]}", 5, 10);
  EXPECT_NEAR(s->lr_at(9), 0.1, kTol);
  EXPECT_NEAR(s->lr_at(10), 0.01, kTol);
  EXPECT_NEAR(s->lr_at(19), 0.01, kTol);
  EXPECT_NEAR(s->lr_at(20), 0.001, kTol);
  // learning_rate set: x0.1 every 30 epochs (boundaries 30, 60 for 70 epochs).
  auto r = schedule("{name: Piecewise, learning_rate: 0.1}", 2, 70);
  EXPECT_NEAR(r->lr_at(59), 0.1, kTol);
  EXPECT_NEAR(r->lr_at(60), 0.01, kTol);
  EXPECT_NEAR(r->lr_at(120), 0.001, 1e-15);
  auto short_run = schedule("{name: Piecewise, learning_rate: 0.1}", 2, 20);
  EXPECT_NEAR(short_run->lr_at(39), 0.1, kTol);
}

TEST(LrSchedule, StepUsesTruncatedIterationSize) {
  auto s = schedule("{name: Step, learning_rate: 0.1, step_size: 2, gamma: 0.1}", 10, 10);
  EXPECT_NEAR(s->lr_at(19), 0.1, kTol);
  EXPECT_NEAR(s->lr_at(20), 0.01, kTol);
  EXPECT_NEAR(s->lr_at(45), 0.001, 1e-15);
  // int(0.5 * 3) = 1 iteration per step.
  auto t = schedule("{name: Step, learning_rate: 1.0, step_size: 0.5, gamma: 0.5}", 3, 10);
  EXPECT_NEAR(t->lr_at(1), 0.5, kTol);
  EXPECT_NEAR(t->lr_at(3), 0.125, kTol);
}

TEST(LrSchedule, LinearPolynomialDecay) {
  auto s = schedule("{name: Linear, learning_rate: 0.1}", 10, 10);
  EXPECT_NEAR(s->lr_at(50), 0.05, kTol);
  EXPECT_NEAR(s->lr_at(100), 0.0, kTol);
  EXPECT_NEAR(s->lr_at(150), 0.0, kTol);  // clamped at end_lr
  auto p = schedule("{name: Linear, learning_rate: 0.1, end_lr: 0.01, power: 2.0, warmup_epoch: 5}", 10, 10);
  EXPECT_NEAR(p->lr_at(25), 0.05, kTol);  // warmup from 0
  EXPECT_NEAR(p->lr_at(75), 0.09 * 0.25 + 0.01, kTol);  // s = 25 of decay_steps 50
}

TEST(LrSchedule, ConstantWarmupRoundingAndLastEpoch) {
  auto c = schedule("{name: Constant, learning_rate: 0.2, warmup_epoch: 1, warmup_start_lr: 0.1}", 4, 3);
  EXPECT_NEAR(c->lr_at(2), 0.15, kTol);
  EXPECT_NEAR(c->lr_at(4), 0.2, kTol);
  // warmup_steps = round(0.25 * 10) = round(2.5) = 2 (Python rounds half to even).
  auto r = schedule("{name: ConstLR, learning_rate: 1.0, warmup_epoch: 0.25}", 10, 3);
  EXPECT_NEAR(r->lr_at(1), 0.5, kTol);
  EXPECT_NEAR(r->lr_at(2), 1.0, kTol);
  // last_epoch = 4: the schedule starts at its step 5.
  auto l = schedule("{name: Step, learning_rate: 1.0, step_size: 1, gamma: 0.5, last_epoch: 4}", 5, 10);
  EXPECT_NEAR(l->lr_at(0), 0.5, kTol);
  EXPECT_NEAR(l->lr_at(5), 0.25, kTol);
  // warmup_epoch >= epochs is clamped to epochs: the whole run warms up.
  auto w = schedule("{name: Cosine, learning_rate: 1.0, warmup_epoch: 8}", 2, 4);
  EXPECT_NEAR(w->lr_at(4), 0.5, kTol);
}

TEST(LrSchedule, ConfigErrors) {
  auto msg = error_of([] { schedule("{name: Cosine, learning_rate: 0.1, warmup_epochs: 5}", 10, 10); });
  EXPECT_NE(msg.find("lr.warmup_epochs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean warmup_epoch"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: Cosin, learning_rate: 0.1}", 10, 10); });
  EXPECT_NE(msg.find("unknown learning-rate schedule 'Cosin'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MultiStepDecay"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: Piecewise, decay_epochs: [10, 20], values: [0.1, 0.01]}", 10, 30); });
  EXPECT_NE(msg.find("one more entry than decay_epochs"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: MultiStepDecay, learning_rate: 0.1, milestones: [5, 3]}", 10, 30); });
  EXPECT_NE(msg.find("strictly increasing"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: Step, learning_rate: 0.1, gamma: 0.1}", 10, 30); });
  EXPECT_NE(msg.find("step_size"), std::string::npos) << msg;
}

// Cyclic (Paddle's CyclicLR) with hand-computed values: base 0.1, max 1.1 (amplitude 1), up 2, down 3, so the
// cycle is 5 steps and the peak comes at step 2 of each cycle.
TEST(LrSchedule, CyclicTriangularModesAndLastEpoch) {
  const std::string keys = "base_learning_rate: 0.1, max_learning_rate: 1.1, step_size_up: 2, step_size_down: 3, "
                           "warmup_epoch: 0, warmup_start_lr: 0.0";
  auto tri = schedule("{name: Cyclic, " + keys + "}", 4, 10);
  const std::vector<double> one_cycle = {0.1, 0.6, 1.1, 1.1 - 1.0 / 3, 1.1 - 2.0 / 3, 0.1};
  for (size_t t = 0; t < one_cycle.size(); ++t) EXPECT_NEAR(tri->lr_at(int64_t(t)), one_cycle[t], kTol) << t;
  EXPECT_NEAR(tri->lr_at(7), 1.1, kTol);  // second cycle, same height
  // triangular2 halves the amplitude each cycle: step 7 is the second peak, 0.1 + 1/2.
  auto tri2 = schedule("{name: Cyclic, mode: triangular2, " + keys + "}", 4, 10);
  EXPECT_NEAR(tri2->lr_at(2), 1.1, kTol);
  EXPECT_NEAR(tri2->lr_at(7), 0.6, kTol);
  EXPECT_NEAR(tri2->lr_at(12), 0.35, kTol);
  // exp_range scales by exp_gamma^iteration: 0.1 + 1 * 0.5^2 at the first peak, 0.1 + 0.5 * 0.5 at step 1.
  auto ex = schedule("{name: Cyclic, mode: exp_range, exp_gamma: 0.5, " + keys + "}", 4, 10);
  EXPECT_NEAR(ex->lr_at(1), 0.1 + 0.5 * 0.5, kTol);
  EXPECT_NEAR(ex->lr_at(2), 0.1 + 0.25, kTol);
  // step_size_down defaults to step_size_up; last_epoch 0 (MetaBIN) starts at step 1.
  auto sym = schedule("{name: Cyclic, base_learning_rate: 0.0, max_learning_rate: 1.0, step_size_up: 4, "
                      "warmup_epoch: 0, warmup_start_lr: 1, last_epoch: 0, by_epoch: False}", 4, 10);
  EXPECT_NEAR(sym->lr_at(0), 0.25, kTol);
  EXPECT_NEAR(sym->lr_at(3), 1.0, kTol);
  EXPECT_NEAR(sym->lr_at(5), 0.5, kTol);
  // Warmup ramps to base_learning_rate, then the cycle starts at 0: ipe 2, 1 epoch = 2 warmup steps.
  auto wu = schedule("{name: Cyclic, base_learning_rate: 0.1, max_learning_rate: 1.1, step_size_up: 2, "
                     "warmup_epoch: 1, warmup_start_lr: 0.0}", 2, 10);
  EXPECT_NEAR(wu->lr_at(1), 0.05, kTol);
  EXPECT_NEAR(wu->lr_at(2), 0.1, kTol);
  EXPECT_NEAR(wu->lr_at(3), 0.6, kTol);
  // by_epoch: one step per epoch of 4 iterations.
  auto ep = schedule("{name: Cyclic, " + keys + ", by_epoch: True}", 4, 10);
  EXPECT_NEAR(ep->lr_at(3), 0.1, kTol);
  EXPECT_NEAR(ep->lr_at(4), 0.6, kTol);
  EXPECT_NEAR(ep->lr_at(9), 1.1, kTol);
}

TEST(LrSchedule, CyclicConfigErrors) {
  const std::string base = "{name: Cyclic, base_learning_rate: 0.1, max_learning_rate: 1.0, warmup_epoch: 0, "
                           "warmup_start_lr: 0, ";
  auto msg = error_of([&] { schedule(base + "step_size_up: 2.5}", 4, 10); });
  EXPECT_NE(msg.find("lr.step_size_up: must be a whole number of iterations > 0"), std::string::npos) << msg;
  msg = error_of([&] { schedule(base + "step_size_up: 2, mode: triangle}", 4, 10); });
  EXPECT_NE(msg.find("expected triangular, triangular2 or exp_range"), std::string::npos) << msg;
  msg = error_of([&] { schedule(base + "step_size_up: 2, scale_fn: f}", 4, 10); });
  EXPECT_NE(msg.find("lr.scale_fn"), std::string::npos) << msg;
  msg = error_of([&] { schedule(base + "step_size_up: 2, learning_rate: 0.1}", 4, 10); });
  EXPECT_NE(msg.find("lr.learning_rate: unknown key"), std::string::npos) << msg;
  msg = error_of([] {
    schedule("{name: Cyclic, base_learning_rate: 0.1, max_learning_rate: 1.0, step_size_up: 2}", 4, 10);
  });
  EXPECT_NE(msg.find("warmup_start_lr"), std::string::npos) << msg;
  // epochs / step_each_epoch are PaddleClas's overwritten keys: equal values pass, others are errors.
  EXPECT_NO_THROW(schedule(base + "step_size_up: 2, epochs: 10, step_each_epoch: 4}", 4, 10));
  msg = error_of([&] { schedule(base + "step_size_up: 2, step_each_epoch: 50}", 4, 10); });
  EXPECT_NE(msg.find("lr.step_each_epoch: is 50 but an epoch has 4 iterations"), std::string::npos) << msg;
  msg = error_of([&] { schedule(base + "step_size_up: 2, epochs: 3}", 4, 10); });
  EXPECT_NE(msg.find("but Global.epochs is 10"), std::string::npos) << msg;
}

// ReduceOnPlateau as Paddle's, metric by metric (xbm_resnet50's settings, patience shortened): mode max, rel
// threshold 0.001, cooldown 2, factor 0.1, min_lr 5e-6.
TEST(LrSchedule, ReduceOnPlateauFollowsTheMetric) {
  auto s = schedule("{name: ReduceOnPlateau, learning_rate: 0.0001, mode: max, factor: 0.1, patience: 1, "
                    "threshold: 0.001, threshold_mode: rel, cooldown: 2, min_lr: 0.000005, epsilon: 1e-8, "
                    "by_epoch: True}", 10, 30);
  EXPECT_NEAR(s->lr_at(0), 1e-4, kTol);
  struct Step {
    double metric, lr_after;
  };
  // 0.5 best; 0.5004 is not better than 0.5 * 1.001 (bad 1); 0.4 bad 2 > patience 1: lr 1e-5, cooldown 2;
  // two cooldown evaluations are not compared (0.1, 0.9 ignored: best stays 0.5); 0.5 bad 1; 0.45 bad 2:
  // lr max(1e-6, 5e-6) = 5e-6; cooldown 2 (0.1, 0.1); 0.2, 0.2 bad 1, 2: 5e-7 -> min_lr 5e-6 is no decrease.
  const std::vector<Step> steps = {{0.5, 1e-4},  {0.5004, 1e-4}, {0.4, 1e-5},  {0.1, 1e-5}, {0.9, 1e-5},
                                   {0.5, 1e-5},  {0.45, 5e-6},   {0.1, 5e-6},  {0.1, 5e-6}, {0.2, 5e-6},
                                   {0.2, 5e-6}};
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_TRUE(s->observe_metric(steps[i].metric, int64_t(i + 1) * 10));
    EXPECT_NEAR(s->lr_at(int64_t(i + 1) * 10), steps[i].lr_after, 1e-15) << "evaluation " << i;
  }
  // mode min, abs threshold: 1.0, 0.95 (not < 1.0 - 0.1: bad 1), 0.85 better.
  auto m = schedule("{name: ReduceOnPlateau, learning_rate: 1.0, threshold: 0.1, threshold_mode: abs, patience: 0, "
                    "by_epoch: True}", 10, 30);
  m->observe_metric(1.0, 10);
  m->observe_metric(0.85, 20);
  EXPECT_NEAR(m->lr_at(20), 1.0, kTol);
  m->observe_metric(0.8, 30);  // not < 0.85 - 0.1: bad 1 > patience 0
  EXPECT_NEAR(m->lr_at(30), 0.1, kTol);
  // Other schedules ignore metrics.
  auto c = schedule("{name: Cosine, learning_rate: 1.0}", 10, 30);
  EXPECT_FALSE(c->observe_metric(0.5, 10));
}

TEST(LrSchedule, ReduceOnPlateauWarmupStateAndErrors) {
  // Warmup of 2 epochs (by_epoch: lr ramps per epoch); evaluations before the end of warmup are not observed.
  auto s = schedule("{name: ReduceOnPlateau, learning_rate: 1.0, patience: 0, warmup_epoch: 2, "
                    "warmup_start_lr: 0.0, by_epoch: True}", 5, 10);
  EXPECT_NEAR(s->lr_at(5), 0.5, kTol);
  EXPECT_FALSE(s->observe_metric(1.0, 5));
  EXPECT_TRUE(s->observe_metric(1.0, 10));   // best 1.0
  EXPECT_TRUE(s->observe_metric(2.0, 15));   // worse (mode min): lr 0.1
  EXPECT_NEAR(s->lr_at(15), 0.1, kTol);
  // The state round-trips (checkpoints) and a fresh schedule without it differs.
  auto copy = schedule("{name: ReduceOnPlateau, learning_rate: 1.0, patience: 0, warmup_epoch: 2, "
                       "warmup_start_lr: 0.0, by_epoch: True}", 5, 10);
  EXPECT_NEAR(copy->lr_at(15), 1.0, kTol);
  copy->set_state(s->state());
  EXPECT_EQ(copy->lr_at(15), s->lr_at(15));
  copy->observe_metric(1.5, 20);  // not better than best 1.0: 0.01
  EXPECT_NEAR(copy->lr_at(20), 0.01, kTol);

  auto msg = error_of([] { schedule("{name: ReduceOnPlateau, learning_rate: 0.1}", 10, 30); });
  EXPECT_NE(msg.find("set by_epoch: True"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: ReduceOnPlateau, learning_rate: 0.1, by_epoch: True, factor: 1.5}", 10, 30); });
  EXPECT_NE(msg.find("lr.factor: must be < 1.0"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: ReduceOnPlateau, learning_rate: 0.1, by_epoch: True, mode: maximum}", 10, 30); });
  EXPECT_NE(msg.find("expected min or max"), std::string::npos) << msg;
  msg = error_of([] { schedule("{name: ReduceOnPlateau, learning_rate: 0.1, by_epoch: True, patiance: 3}", 10, 30); });
  EXPECT_NE(msg.find("did you mean patience"), std::string::npos) << msg;
}

// ----------------------------------------------------------------------------------------------- optimizers

TEST(Optimizer, MomentumWithL2MatchesHandComputation) {
  auto p = param({1.0, -2.0});
  auto opt = optimizers(R"(Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Constant, learning_rate: 0.1}
  regularizer: {name: 'L2', coeff: 0.01}
)", {{"RecModel", {{"w", p}}}});
  EXPECT_EQ(opt->current_lrs(), std::vector<double>{0.1});
  set_grad(p, {0.5, 0.5});
  opt->step();
  // g = 0.5 + 0.01 p = [0.51, 0.48]; v = g; p -= 0.1 v
  expect_values(p, {0.949, -2.048});
  opt->zero_grad();
  expect_values(p.grad(), {0.0, 0.0});
  set_grad(p, {0.5, 0.5});
  opt->step();
  // g = [0.50949, 0.47952]; v = 0.9 [0.51, 0.48] + g = [0.96849, 0.91152]; p -= 0.1 v
  expect_values(p, {0.852151, -2.139152});
  EXPECT_EQ(opt->iteration(), 2);
}

TEST(Optimizer, NesterovMomentumMatchesHandComputation) {
  auto p = param({1.0, -2.0});
  auto opt = optimizers(R"(Optimizer:
  name: Momentum
  momentum: 0.9
  use_nesterov: true
  multi_precision: true
  lr: {name: Constant, learning_rate: 0.1}
  regularizer: {name: L2, coeff: 0.01}
)", {{"RecModel", {{"w", p}}}});
  set_grad(p, {0.5, 0.5});
  opt->step();
  // v = g = [0.51, 0.48]; p -= 0.1 (g + 0.9 v) = 0.19 g
  expect_values(p, {0.9031, -2.0912});
  set_grad(p, {0.5, 0.5});
  opt->step();
  // g = [0.509031, 0.479088]; v = [0.968031, 0.911088]; g + 0.9 v = [1.3802589, 1.2990672]
  expect_values(p, {0.76507411, -2.22110672});
}

TEST(Optimizer, L1AndPlainWeightDecay) {
  auto p = param({1.0, -2.0});
  auto opt = optimizers(R"(Optimizer:
  name: SGD
  lr: {name: Constant, learning_rate: 0.1}
  regularizer: {name: L1, coeff: 0.1}
)", {{"RecModel", {{"w", p}}}});
  set_grad(p, {0.5, 0.5});
  opt->step();
  expect_values(p, {1.0 - 0.1 * 0.6, -2.0 - 0.1 * 0.4});  // g + 0.1 sign(p)
  // A float weight_decay is Paddle's L2Decay.
  auto q = param({1.0, -2.0});
  auto opt2 = optimizers(R"(Optimizer:
  name: SGD
  weight_decay: 0.1
  lr: {name: Constant, learning_rate: 0.1}
)", {{"RecModel", {{"w", q}}}});
  set_grad(q, {0.5, 0.5});
  opt2->step();
  expect_values(q, {1.0 - 0.1 * 0.6, -2.0 - 0.1 * 0.3});
}

TEST(Optimizer, ClipNormIsPerTensorAndPrecedesRegularizer) {
  auto a = param({0.0, 0.0}), b = param({0.0, 0.0});
  auto opt = optimizers(R"(Optimizer:
  name: SGD
  clip_norm: 1.0
  lr: {name: Constant, learning_rate: 1.0}
)", {{"RecModel", {{"a", a}, {"b", b}}}});
  set_grad(a, {3.0, 4.0});  // norm 5 -> scaled to norm 1
  set_grad(b, {0.3, 0.4});  // norm 0.5 -> unchanged (a global norm would have scaled it)
  opt->step();
  expect_values(a, {-0.6, -0.8});
  expect_values(b, {-0.3, -0.4});

  auto c = param({1.0, 1.0});
  auto opt2 = optimizers(R"(Optimizer:
  name: SGD
  clip_norm: 1.0
  regularizer: {name: L2, coeff: 0.5}
  lr: {name: Constant, learning_rate: 1.0}
)", {{"RecModel", {{"c", c}}}});
  set_grad(c, {3.0, 4.0});
  opt2->step();
  expect_values(c, {1.0 - (0.6 + 0.5), 1.0 - (0.8 + 0.5)});  // clip, then + coeff * p
}

TEST(Optimizer, NoWeightDecayNamesAndOneDimParams) {
  for (const char* extra : {"no_weight_decay_name: 'bias norm'", "one_dim_param_no_weight_decay: true"}) {
    auto w = torch::ones({1, 2}, torch::kDouble).requires_grad_();
    auto b = param({1.0});
    auto opt = optimizers(std::string(R"(Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Constant, learning_rate: 0.1}
  regularizer: {name: L2, coeff: 0.1}
  )") + extra + "\n",
                          {{"RecModel", {{"fc.weight", w}, {"fc.bias", b}}}});
    set_grad(w, {0.0, 0.0});
    set_grad(b, {0.0});
    opt->step();
    expect_values(w, {0.99, 0.99});  // decayed: 1 - 0.1 * 0.1
    expect_values(b, {1.0});          // exempt
  }
}

TEST(Optimizer, AdamMatchesPaddleFormula) {
  auto p = param({1.0, -2.0});
  auto opt = optimizers(R"(Optimizer:
  name: Adam
  beta1: 0.8
  beta2: 0.99
  epsilon: 1.0e-3
  lr: {name: Constant, learning_rate: 0.1}
)", {{"RecModel", {{"w", p}}}});
  const std::vector<std::vector<double>> grads = {{0.5, -0.25}, {0.1, 0.3}, {-0.2, 0.05}};
  double m[2] = {0, 0}, v[2] = {0, 0}, x[2] = {1.0, -2.0};
  for (size_t t = 1; t <= grads.size(); ++t) {
    set_grad(p, grads[t - 1]);
    opt->step();
    // Paddle: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); p -= lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t))
    const double b1t = std::pow(0.8, double(t)), b2t = std::pow(0.99, double(t));
    const double lr_t = 0.1 * std::sqrt(1 - b2t) / (1 - b1t);
    for (int i = 0; i < 2; ++i) {
      const double g = grads[t - 1][i];
      m[i] = 0.8 * m[i] + 0.2 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      x[i] -= lr_t * m[i] / (std::sqrt(v[i]) + 1e-3 * std::sqrt(1 - b2t));
    }
    expect_values(p, {x[0], x[1]}, 1e-10);
  }
}

TEST(Optimizer, AdamWDecaysDecoupledExceptExempt) {
  auto w = torch::ones({1, 2}, torch::kDouble).requires_grad_();
  auto b = param({1.0});
  auto opt = optimizers(R"(Optimizer:
  name: AdamW
  weight_decay: 0.5
  one_dim_param_no_weight_decay: true
  lr: {name: Constant, learning_rate: 0.1}
)", {{"RecModel", {{"fc.weight", w}, {"fc.bias", b}}}});
  set_grad(w, {0.0, 0.0});
  set_grad(b, {0.0});
  opt->step();
  expect_values(w, {0.95, 0.95});  // p *= 1 - lr * wd; the Adam part is 0 for a zero gradient
  expect_values(b, {1.0});
  // With a gradient: decay, then Adam's first step moves by ~lr * sign(g).
  set_grad(w, {1.0, -1.0});
  opt->step();
  const double step2 = 0.1 * std::sqrt(1 - 0.999 * 0.999) / (1 - 0.81);  // lr_t at t = 2
  const double m = 0.1, v = 0.001;                                            // after g = 0, then g = 1
  const double upd = step2 * m / (std::sqrt(v) + 1e-8 * std::sqrt(1 - 0.999 * 0.999));
  expect_values(w, {0.95 * 0.95 - upd, 0.95 * 0.95 + upd}, 1e-10);
}

TEST(Optimizer, RMSPropMatchesPaddleRule) {
  auto p = param({1.0, -2.0});
  auto opt = optimizers(R"(Optimizer:
  name: RMSProp
  rho: 0.9
  epsilon: 1.0e-6
  momentum: 0.5
  lr: {name: Constant, learning_rate: 0.01}
)", {{"RecModel", {{"w", p}}}});
  const std::vector<std::vector<double>> grads = {{0.5, 0.5}, {0.1, -0.3}};
  double r[2] = {0, 0}, v[2] = {0, 0}, x[2] = {1.0, -2.0};
  for (const auto& gr : grads) {
    set_grad(p, gr);
    opt->step();
    for (int i = 0; i < 2; ++i) {
      r[i] = 0.9 * r[i] + 0.1 * gr[i] * gr[i];
      v[i] = 0.5 * v[i] + 0.01 * gr[i] / std::sqrt(r[i] + 1e-6);
      x[i] -= v[i];
    }
    expect_values(p, {x[0], x[1]}, 1e-12);
  }
}

TEST(Optimizer, LrFollowsScheduleEachStep) {
  auto p = param({0.0});
  auto opt = optimizers(R"(Optimizer:
  name: SGD
  lr: {name: Piecewise, decay_epochs: [1], values: [1.0, 0.5]}
)", {{"RecModel", {{"w", p}}}}, /*ipe=*/2, /*epochs=*/3);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(opt->current_lrs()[0], i < 2 ? 1.0 : 0.5, kTol);
    set_grad(p, {1.0});
    opt->step();
  }
  expect_values(p, {-3.0});  // 1 + 1 + 0.5 + 0.5
  opt->set_iteration(0);
  EXPECT_NEAR(opt->current_lrs()[0], 1.0, kTol);
}

// ------------------------------------------------------------------------------------------------- scopes

TEST(OptimizerScopes, EachOptimizerUpdatesOnlyItsScope) {
  auto a = param({0.0}), b = param({0.0}), c = param({0.0});
  const ParameterScopes scopes = {{"RecModel", {{"backbone.w", a}, {"head.w", b}}},
                                  {"TripletLossV2", {}},
                                  {"CenterLoss", {{"centers", c}}}};
  auto opt = optimizers(R"(Optimizer:
  - SGD:
      scope: backbone
      lr: {name: Constant, learning_rate: 0.1}
  - Momentum:
      scope: CenterLoss
      momentum: 0.9
      lr: {name: Constant, learning_rate: 0.5}
)", scopes);
  EXPECT_EQ(opt->size(), 2u);
  EXPECT_EQ(opt->current_lrs(), (std::vector<double>{0.1, 0.5}));
  for (auto* t : {&a, &b, &c}) set_grad(*t, {1.0});
  opt->step();
  expect_values(a, {-0.1});
  expect_values(b, {0.0});  // head.w belongs to no optimizer
  expect_values(c, {-0.5});

  // One (non-list) optimizer covers the model and every loss with parameters.
  auto x = param({0.0}), y = param({0.0});
  auto all = optimizers(R"(Optimizer:
  name: SGD
  lr: {learning_rate: 1.0}
)", {{"RecModel", {{"w", x}}}, {"TripletLossV2", {}}, {"CenterLoss", {{"centers", y}}}});
  set_grad(x, {1.0});
  set_grad(y, {2.0});
  all->step();
  expect_values(x, {-1.0});
  expect_values(y, {-2.0});
  EXPECT_NE(all->describe()[0].find("params=2"), std::string::npos) << all->describe()[0];

  // The single-map form honours a `scope` key too (PaddleClas merges it over scope: all).
  auto h = param({0.0}), k = param({0.0});
  auto head_only = optimizers(R"(Optimizer:
  name: SGD
  scope: head
  lr: {learning_rate: 1.0}
)", {{"RecModel", {{"backbone.conv.w", k}, {"head.fc.w", h}}}});
  set_grad(h, {1.0});
  set_grad(k, {1.0});
  head_only->step();
  expect_values(h, {-1.0});
  expect_values(k, {0.0});
}

TEST(OptimizerScopes, Errors) {
  auto a = param({0.0}), c = param({0.0});
  const ParameterScopes scopes = {{"RecModel", {{"backbone.w", a}}}, {"CenterLoss", {{"centers", c}}}};
  auto msg = error_of([&] {
    optimizers(R"(Optimizer:
  - SGD: {scope: CentreLoss, lr: {learning_rate: 0.1}}
)", scopes);
  });
  EXPECT_NE(msg.find("unknown scope 'CentreLoss'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean CenterLoss"), std::string::npos) << msg;
  EXPECT_NE(msg.find("backbone"), std::string::npos) << msg;
  msg = error_of([&] {
    optimizers(R"(Optimizer:
  - Adam: {scope: RecModel, lr: {learning_rate: 0.1}}
  - SGD: {scope: backbone, lr: {learning_rate: 0.1}}
)", scopes);
  });
  EXPECT_NE(msg.find("already optimized by Adam"), std::string::npos) << msg;
  msg = error_of([&] {
    optimizers(R"(Optimizer:
  - SGD: {lr: {learning_rate: 0.1}}
)", scopes);
  });
  EXPECT_NE(msg.find("scope"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------- checkpoint

namespace {

const char* kThreeOptimizers = R"(Optimizer:
  - Momentum:
      scope: backbone
      momentum: 0.9
      use_nesterov: true
      lr: {name: Cosine, learning_rate: 0.1, warmup_epoch: 1, warmup_start_lr: 0.01}
      regularizer: {name: L2, coeff: 0.001}
  - AdamW:
      scope: head
      weight_decay: 0.01
      lr: {name: Constant, learning_rate: 0.01}
  - RMSProp:
      scope: CenterLoss
      momentum: 0.5
      lr: {name: Step, learning_rate: 0.05, step_size: 1, gamma: 0.5}
)";

struct TrainingRun {
  torch::Tensor a, b, c;
  std::unique_ptr<OptimizerSet> opt;
  explicit TrainingRun(const std::vector<torch::Tensor>& init, torch::Device device = torch::kCPU) {
    a = init[0].to(device).clone().requires_grad_();
    b = init[1].to(device).clone().requires_grad_();
    c = init[2].to(device).clone().requires_grad_();
    opt = optimizers(kThreeOptimizers,
                     {{"RecModel", {{"backbone.w", a}, {"head.w", b}}}, {"CenterLoss", {{"centers", c}}}},
                     /*ipe=*/3, /*epochs=*/4);
  }
  void step() {  // a deterministic loss that depends on the parameters
    opt->zero_grad();
    const double k = static_cast<double>(opt->iteration());
    auto loss = (a * a * 0.3).sum() + (b * std::cos(k)).sum() + (c - 1).pow(2).sum() * (1 + k);
    loss.backward();
    opt->step();
  }
  std::vector<torch::Tensor> values() const { return {a.detach().clone(), b.detach().clone(), c.detach().clone()}; }
};

}  // namespace

TEST(OptimizerCheckpoint, SaveLoadContinuesIdentically) {
  const std::vector<torch::Tensor> init = {torch::tensor({1.0, -2.0}, torch::kDouble),
                                           torch::tensor({0.5, 0.25, -1.0}, torch::kDouble),
                                           torch::tensor({3.0}, torch::kDouble)};
  TrainingRun first(init);
  for (int i = 0; i < 4; ++i) first.step();
  torch::serialize::OutputArchive out;
  first.opt->save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  const auto at_save = first.values();
  for (int i = 0; i < 5; ++i) first.step();

  TrainingRun resumed(at_save);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  resumed.opt->load(in);
  EXPECT_EQ(resumed.opt->iteration(), 4);
  for (int i = 0; i < 5; ++i) resumed.step();
  EXPECT_EQ(resumed.opt->current_lrs(), first.opt->current_lrs());
  const auto want = first.values(), got = resumed.values();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(torch::equal(want[i], got[i])) << "param " << i;

  // Without the state (fresh optimizers at the same iteration) the trajectory differs: the test can fail.
  TrainingRun fresh(at_save);
  fresh.opt->set_iteration(4);
  for (int i = 0; i < 5; ++i) fresh.step();
  EXPECT_FALSE(torch::equal(want[0], fresh.values()[0]));
}

TEST(OptimizerCheckpoint, CudaMatchesCpuAndResumes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<torch::Tensor> init = {torch::tensor({1.0, -2.0}, torch::kDouble),
                                           torch::tensor({0.5, 0.25, -1.0}, torch::kDouble),
                                           torch::tensor({3.0}, torch::kDouble)};
  TrainingRun cpu(init), gpu(init, torch::kCUDA);
  for (int i = 0; i < 4; ++i) {
    cpu.step();
    gpu.step();
  }
  torch::serialize::OutputArchive out;
  gpu.opt->save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  const auto at_save = gpu.values();
  for (int i = 0; i < 5; ++i) {
    cpu.step();
    gpu.step();
  }
  TrainingRun resumed(at_save, torch::kCUDA);
  torch::serialize::InputArchive in;
  in.load_from(buffer);  // onto the CPU: load() moves the states beside the parameters
  resumed.opt->load(in);
  for (int i = 0; i < 5; ++i) resumed.step();
  const auto want = cpu.values(), got = gpu.values(), again = resumed.values();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(got[i].is_cuda());
    EXPECT_TRUE(torch::allclose(want[i], got[i].cpu(), 1e-10, 1e-12)) << "param " << i;
    EXPECT_TRUE(torch::equal(got[i], again[i])) << "param " << i;
  }
}

// ReduceOnPlateau's state (reduced lr, best, counters) travels with the optimizer state; a checkpoint without
// it (another schedule) is refused.
TEST(OptimizerCheckpoint, ReduceOnPlateauStateIsSavedAndRequired) {
  const std::string plateau = R"(Optimizer:
  name: SGD
  lr: {name: ReduceOnPlateau, learning_rate: 1.0, patience: 0, mode: max, by_epoch: True}
)";
  auto p = param({1.0});
  auto opt = optimizers(plateau, {{"RecModel", {{"w", p}}}}, 2, 10);
  opt->observe_metric(0.5);
  opt->observe_metric(0.4);  // worse: lr 0.1
  EXPECT_NEAR(opt->current_lrs()[0], 0.1, kTol);
  torch::serialize::OutputArchive out;
  opt->save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  auto q = param({1.0});
  auto resumed = optimizers(plateau, {{"RecModel", {{"w", q}}}}, 2, 10);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  resumed->load(in);
  EXPECT_NEAR(resumed->current_lrs()[0], 0.1, kTol);
  resumed->observe_metric(0.45);  // still not better than the restored best 0.5: lr 0.01
  EXPECT_NEAR(resumed->current_lrs()[0], 0.01, kTol);

  auto r = param({1.0});
  auto cosine = optimizers("Optimizer:\n  name: SGD\n  lr: {name: Cosine, learning_rate: 1.0}\n", {{"RecModel", {{"w", r}}}});
  torch::serialize::OutputArchive out2;
  cosine->save(out2);
  std::stringstream buffer2;
  out2.save_to(buffer2);
  auto again = optimizers(plateau, {{"RecModel", {{"w", param({1.0})}}}}, 2, 10);
  torch::serialize::InputArchive in2;
  in2.load_from(buffer2);
  const auto msg = error_of([&] { again->load(in2); });
  EXPECT_NE(msg.find("holds no state for its learning-rate schedule ReduceOnPlateau"), std::string::npos) << msg;
}

TEST(OptimizerCheckpoint, LoadRejectsDifferentOptimizers) {
  auto p = param({0.0});
  auto sgd = optimizers("Optimizer: {name: SGD, lr: {learning_rate: 0.1}}", {{"RecModel", {{"w", p}}}});
  torch::serialize::OutputArchive out;
  sgd->save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  auto adam = optimizers("Optimizer: {name: Adam, lr: {learning_rate: 0.1}}", {{"RecModel", {{"w", p}}}});
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  const auto msg = error_of([&] { adam->load(in); });
  EXPECT_NE(msg.find("is SGD but the config has Adam"), std::string::npos) << msg;
}

// ------------------------------------------------------------------------------------------------- errors

TEST(OptimizerConfig, Errors) {
  auto p = param({0.0});
  const ParameterScopes scopes = {{"RecModel", {{"w", p}}}};
  auto msg = error_of([&] { optimizers("Optimizer: {name: Momentun, momentum: 0.9, lr: {learning_rate: 0.1}}", scopes); });
  EXPECT_NE(msg.find("unknown optimizer 'Momentun'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean Momentum"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Adam, AdamW, Momentum, RMSProp, SGD"), std::string::npos) << msg;
  msg = error_of([&] { optimizers("Optimizer: {name: Momentum, momentun: 0.9, lr: {learning_rate: 0.1}}", scopes); });
  EXPECT_NE(msg.find("Optimizer.momentun"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean momentum"), std::string::npos) << msg;
  msg = error_of([&] { optimizers("Optimizer: {name: Momentum, lr: {learning_rate: 0.1}}", scopes); });
  EXPECT_NE(msg.find("missing required key 'momentum'"), std::string::npos) << msg;
  msg = error_of([&] { optimizers("Optimizer: {name: Momentum, momentum: 0.9}", scopes); });
  EXPECT_NE(msg.find("missing required key 'lr'"), std::string::npos) << msg;
  msg = error_of([&] {
    optimizers("Optimizer: {name: SGD, lr: {learning_rate: 0.1}, regularizer: {name: L3, coeff: 0.1}}", scopes);
  });
  EXPECT_NE(msg.find("unknown regularizer 'L3'"), std::string::npos) << msg;
  msg = error_of([&] {
    optimizers("Optimizer: {name: AdamW, weight_decay: 0.1, lr: {learning_rate: 0.1}, regularizer: {name: L2}}",
               scopes);
  });
  EXPECT_NE(msg.find("decoupled"), std::string::npos) << msg;
  msg = error_of([&] {
    optimizers("Optimizer: {name: SGD, lr: {name: Cosine, learning_rate: 0.1, warmup_epochs: 2}}", scopes);
  });
  EXPECT_NE(msg.find("Optimizer.lr.warmup_epochs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean warmup_epoch"), std::string::npos) << msg;
}

TEST(OptimizerConfig, SeedAndRecipeSectionsParse) {
  auto p = param({0.0});
  auto seed = optimizers(R"(Optimizer:
  name: Momentum
  momentum: 0.9
  lr:
    name: MultiStepDecay
    learning_rate: 0.01
    milestones: [30, 60, 70, 80, 90, 100, 120, 140]
    gamma: 0.5
    verbose: False
    last_epoch: -1
  regularizer:
    name: 'L2'
    coeff: 0.0005
)", {{"RecModel", {{"w", p}}}}, 100, 160);
  EXPECT_NEAR(seed->schedule(0).lr_at(3000), 0.005, kTol);
  EXPECT_NE(seed->describe()[0].find("L2=0.0005"), std::string::npos) << seed->describe()[0];
}
