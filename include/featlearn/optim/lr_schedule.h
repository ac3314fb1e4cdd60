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
// MultiStepDecay, Step, Cosine, Linear. A node without `name` is a constant `learning_rate`.
// Common keys: learning_rate, warmup_epoch (0; may be fractional unless by_epoch), warmup_start_lr (0.0),
// by_epoch (false: the schedule advances every iteration and epoch-valued keys are multiplied by
// iters_per_epoch), last_epoch (-1: the schedule starts at step last_epoch+1), verbose (accepted; the engine
// logs the lr).
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
class LrSchedule {
 public:
  static std::unique_ptr<LrSchedule> create(const ConfigNode& lr_node, int64_t iters_per_epoch, int64_t epochs);

  // iteration = global step count (0-based) since the start of training; by_epoch schedules use
  // iteration / iters_per_epoch.
  double lr_at(int64_t iteration) const;

  bool by_epoch() const { return by_epoch_; }
  // E.g. "Cosine(learning_rate=0.05, T_max=950, eta_min=0, warmup_steps=50, warmup_start_lr=0, by_epoch=false)".
  const std::string& describe() const { return description_; }

  enum class Kind { kConstant, kCosine, kLinear, kStep, kMultiStep, kPiecewise };

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
  double period_ = 0;       // T_max (Cosine), decay_steps (Linear), step_size (Step)
  double end_lr_ = 0;       // eta_min (Cosine), end_lr (Linear)
  double power_ = 1;        // Linear
  bool cycle_ = false;      // Linear
  double gamma_ = 0.1;      // Step, MultiStepDecay
  std::vector<double> boundaries_;  // MultiStepDecay milestones / Piecewise boundaries, in steps
  std::vector<double> values_;      // Piecewise
  std::string description_;
};

}  // namespace featlearn
