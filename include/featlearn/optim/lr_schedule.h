// Learning-rate schedules (`Optimizer.lr`) with PaddleClas semantics (ppcls/optimizer/learning_rate.py on top
// of paddle.optimizer.lr); docs/config.md lists the keys.
#pragma once
#include <featlearn/config/config.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace featlearn {

// One learning-rate schedule (config node `Optimizer.lr`). Names: Constant, ConstLR, Piecewise,
// MultiStepDecay, Step, Cosine, Linear, Cyclic, ReduceOnPlateau. A node without `name` is a constant
// `learning_rate`.
// Common keys: learning_rate, warmup_epoch (0; may be fractional unless by_epoch), warmup_start_lr (0.0),
// by_epoch (false: the schedule advances every iteration and epoch-valued keys are multiplied by
// iters_per_epoch), last_epoch (-1: the schedule starts at step last_epoch+1), verbose (accepted; the engine
// logs the lr), epochs / step_each_epoch (PaddleClas overwrites them with Global.epochs and the iterations per
// epoch: accepted when equal to those, an error otherwise).
//   Warmup: for step t < warmup_steps, lr = warmup_start_lr + (base - warmup_start_lr) * t / warmup_steps with
//   warmup_steps = round_half_even(warmup_epoch * iters_per_epoch) (or warmup_epoch when by_epoch); afterwards
//   the decay below runs on s = t - warmup_steps (so milestones/boundaries count from the end of warmup,
//   as Paddle's LinearWarmup does). warmup_epoch > epochs is clamped to epochs with a warning.
//   Constant/ConstLR: learning_rate.
//   Cosine (eta_min 0): eta_min + (lr - eta_min) * (1 + cos(pi * s / T_max)) / 2,
//                       T_max = (epochs - warmup_epoch) * iters_per_epoch (epochs - warmup_epoch if by_epoch).
//   Linear (end_lr 0, power 1, cycle false): Paddle's PolynomialDecay over
//                       decay_steps = (epochs - warmup_epoch) * iters_per_epoch.
//   Step (step_size, gamma; both required): lr * gamma^floor(s / int(step_size * iters_per_epoch)).
//   MultiStepDecay (milestones, gamma 0.1): lr * gamma^(number of milestones*iters_per_epoch <= s).
//   Piecewise (decay_epochs, values; len(values) = len(decay_epochs) + 1): values[i] for
//                       s < decay_epochs[i] * iters_per_epoch. With `learning_rate` set instead, PaddleClas's
//                       rule: ×0.1 every 30 epochs.
//   Cyclic (Paddle's CyclicLR; base_learning_rate instead of learning_rate, max_learning_rate, step_size_up
//                       required, whole steps (iterations, or epochs with by_epoch); step_size_down (= up),
//                       mode triangular|triangular2|exp_range, exp_gamma 1.0; warmup_epoch and
//                       warmup_start_lr required as in PaddleClas; scale_mode validated and, as in Paddle
//                       without a scale_fn, without effect; scale_fn refused):
//                       C = up + down, cycle = 1 + floor(s / C), x = 1 + s / C - cycle,
//                       h = x / (up / C) if x <= up / C else (1 - x) / (1 - up / C),
//                       lr = base + (max - base) * h * f, f = 1 | 1 / 2^(cycle - 1) | exp_gamma^s.
//   ReduceOnPlateau (Paddle's; by_epoch must be true; mode min|max (min), factor 0.1 (< 1), patience 10,
//                       threshold 1e-4, threshold_mode rel|abs (rel), cooldown 0, min_lr 0, epsilon 1e-8):
//                       the lr starts at learning_rate and changes only in observe_metric(), which the
//                       trainer calls after each evaluation with its first metric (as PaddleClas's engine).
//                       While cooldown_counter > 0 an evaluation only decrements it; otherwise a metric
//                       better than best (min: < best - best*threshold (rel) or best - threshold (abs); max:
//                       > best + ...) becomes best and resets num_bad, else num_bad += 1; when num_bad >
//                       patience: cooldown_counter = cooldown, num_bad = 0, lr = max(lr * factor, min_lr)
//                       unless that lowers it by no more than epsilon. With warmup the lr ramps to
//                       learning_rate first and evaluations at an iteration inside the warmup are not
//                       observed (PaddleClas's LinearWarmup would feed the step count to ReduceOnPlateau as
//                       its metric).
class LrSchedule {
 public:
  static std::unique_ptr<LrSchedule> create(const ConfigNode& lr_node, int64_t iters_per_epoch, int64_t epochs);

  // iteration = global step count (0-based) since the start of training; by_epoch schedules use
  // iteration / iters_per_epoch.
  double lr_at(int64_t iteration) const;

  bool by_epoch() const { return by_epoch_; }
  // ReduceOnPlateau: takes the evaluation metric seen after `iteration` training steps; returns whether it
  // was observed (false for every other schedule and during warmup).
  bool observe_metric(double metric, int64_t iteration);
  // The mutable state (ReduceOnPlateau: lr, has_best, best, num_bad, cooldown_counter; empty otherwise), for
  // checkpoints.
  std::vector<double> state() const;
  void set_state(const std::vector<double>& state);
  // E.g. "Cosine(learning_rate=0.05, T_max=950, eta_min=0, warmup_steps=50, warmup_start_lr=0, by_epoch=false)".
  const std::string& describe() const { return description_; }

  enum class Kind { kConstant, kCosine, kLinear, kStep, kMultiStep, kPiecewise, kCyclic, kPlateau };

 private:
  LrSchedule() = default;
  double step_of(int64_t iteration) const;  // scheduler step count t
  double decayed(double s) const;           // the schedule after warmup, at s = t - warmup_steps

  Kind kind_ = Kind::kConstant;
  int64_t iters_per_epoch_ = 1;
  bool by_epoch_ = false;
  double start_offset_ = 0;  // last_epoch + 1
  double base_lr_ = 0;
  double warmup_steps_ = 0;
  double warmup_start_lr_ = 0;
  double period_ = 0;       // T_max (Cosine), decay_steps (Linear), step_size (Step), cycle size (Cyclic)
  double end_lr_ = 0;       // eta_min (Cosine), end_lr (Linear)
  double power_ = 1;        // Linear
  bool cycle_ = false;      // Linear
  double gamma_ = 0.1;      // Step, MultiStepDecay; exp_gamma (Cyclic)
  double max_lr_ = 0;       // Cyclic
  double step_up_pct_ = 1;  // Cyclic: step_size_up / cycle size
  enum class CyclicMode { kTriangular, kTriangular2, kExpRange } cyclic_mode_ = CyclicMode::kTriangular;
  struct PlateauOptions {
    bool maximize = false, relative = true;
    double factor = 0.1, threshold = 1e-4, min_lr = 0, epsilon = 1e-8;
    int64_t patience = 10, cooldown = 0;
  } plateau_;
  struct PlateauState {
    double lr = 0, best = 0;
    bool has_best = false;
    int64_t num_bad = 0, cooldown_counter = 0;
  } plateau_state_;
  std::vector<double> boundaries_;  // MultiStepDecay milestones / Piecewise boundaries, in steps
  std::vector<double> values_;      // Piecewise
  std::string description_;
};

}  // namespace featlearn
