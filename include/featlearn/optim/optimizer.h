// Optimizers and learning-rate schedules with PaddleClas semantics (ppcls/optimizer).
//
// Config (`Optimizer:` section), either one optimizer for every trainable parameter:
//   Optimizer:
//     name: Momentum            # SGD | Momentum | Adam | AdamW | RMSProp
//     momentum: 0.9
//     lr: {name: Cosine, learning_rate: 0.05, warmup_epoch: 5}
//     regularizer: {name: L2, coeff: 0.0005}
//     clip_norm: 10             # optional
// or a PaddleClas list, one optimizer per `scope`:
//   Optimizer:
//     - Adam: {scope: RecModel, lr: {name: Constant, learning_rate: 0.0001}}
//     - SGD:  {scope: CenterLoss, lr: {name: Constant, learning_rate: 1000.0}}
//
// Optimizer keys (defaults as PaddleClas):
//   lr            required; see LrSchedule.
//   regularizer   {name: L2|L1, coeff (0.0)}. L2 adds coeff*param to the gradient, L1 adds coeff*sign(param)
//                 (Paddle's L2Decay / L1Decay). Not allowed with AdamW (decoupled weight_decay instead).
//   weight_decay  a number = L2 coeff (Paddle treats a float weight_decay as L2Decay); ignored with a warning
//                 when `regularizer` is also set. For AdamW: the decoupled decay coefficient (required).
//   clip_norm     Paddle's ClipGradByNorm: EACH gradient tensor whose L2 norm exceeds clip_norm is scaled to
//                 norm clip_norm (per tensor, not a global norm over all tensors). Applied before the
//                 regularizer, as Paddle does.
//   multi_precision  accepted; featlearn keeps fp32 master weights anyway.
//   Momentum: momentum (required), use_nesterov (false).      Paddle's Momentum update equals torch's SGD
//   SGD: -                                                      momentum form: v = mu*v + g; p -= lr*v
//   Adam:  beta1 (0.9), beta2 (0.999), epsilon (1e-8), lazy_mode (only matters for sparse grads), parameter_list
//   AdamW: beta1, beta2, epsilon as Adam; weight_decay (required): p -= lr*wd*p before the Adam update.
//   RMSProp: rho (0.95), epsilon (1e-6), momentum (0.0); Paddle's rule: r = rho*r + (1-rho)*g^2,
//            v = momentum*v + lr*g/sqrt(r+epsilon), p -= v.
//   Momentum, AdamW, RMSProp: no_weight_decay_name ("" — space-separated substrings of parameter names) and
//            one_dim_param_no_weight_decay (false): matching parameters get no regularizer / weight decay.
//   SGD, Adam (list form): name — a label, accepted and unused.
//
// Scopes (key `scope`; default "all" for the single-map form, required in the list form): "all"; the name of a scope passed to create() ("RecModel" = the model, a
// loss name such as "CenterLoss" = that loss's parameters); otherwise a sub-layer of RecModel: the scope is
// matched (regex full match, as PaddleClas) against every dotted prefix of the RecModel parameter names, so
// `backbone` selects backbone.*. A parameter may be optimized by only one optimizer.
#pragma once
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <featlearn/config/config.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

// (name, parameter) pairs; names relative to their scope ("backbone.conv1.weight", "centers").
using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;
// (scope name, its parameters): {"RecModel", model params}, {"CenterLoss", that loss's params}, ...
using ParameterScopes = std::vector<std::pair<std::string, NamedParameters>>;

// module.named_parameters() as NamedParameters (recursive; includes frozen parameters, which are skipped at
// step time because they have no gradient).
NamedParameters named_parameters_of(const torch::nn::Module& module);

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

// The optimizers of one training run, stepped together.
class OptimizerSet {
 public:
  // `node` = cfg["Optimizer"] (a map with `name`, or a list of `- Name: {scope, ...}`).
  // A single (non-list) optimizer covers every scope that has parameters (PaddleClas's scope "all": the loss
  // parameters are optimized too).
  static std::unique_ptr<OptimizerSet> create(const ConfigNode& node, const ParameterScopes& scopes,
                                              int64_t iters_per_epoch, int64_t epochs);
  ~OptimizerSet();
  OptimizerSet(const OptimizerSet&) = delete;
  OptimizerSet& operator=(const OptimizerSet&) = delete;

  void zero_grad();
  // Sets each optimizer's lr for the current iteration, clips (clip_norm), applies the regularizer, steps,
  // then iteration++. Parameters without a gradient are left untouched.
  void step();
  // One per optimizer (config order): the lr the next step() uses.
  std::vector<double> current_lrs() const;
  int64_t iteration() const { return iteration_; }
  void set_iteration(int64_t it);

  size_t size() const { return entries_.size(); }
  // Per optimizer: "Momentum scope=all params=62 lr=Cosine(...)", for logs.
  std::vector<std::string> describe() const;
  const LrSchedule& schedule(size_t i) const;

  // Writes optimizer states and the iteration (keys "optim_format_version", "iteration", "optimizer_<i>");
  // give it a dedicated (sub-)archive. load() restores them; the config must describe the same optimizers over
  // the same parameters (checked: count, names, parameter sizes). Loaded states are moved to the parameters'
  // device (all parameters of one optimizer are expected on one device).
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

  struct Entry;  // one optimizer (defined in optimizer.cpp)

 private:
  OptimizerSet() = default;
  std::vector<std::unique_ptr<Entry>> entries_;
  int64_t iteration_ = 0;
};

}  // namespace featlearn
