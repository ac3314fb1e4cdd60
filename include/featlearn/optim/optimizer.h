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
// loss name such as "CenterLoss" = that loss's parameters); otherwise a sub-layer of the model (the scope named
// RecModel or DistillationModel): the scope is matched (regex full match, as PaddleClas) against every dotted
// prefix of the model's parameter names, so `backbone` selects backbone.*, and of a DistillationModel
// `Student` selects Student.*. A parameter may be optimized by only one optimizer.
#pragma once
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <featlearn/config/config.h>
#include <featlearn/optim/lr_schedule.h>

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

// Per-parameter learning-rate multipliers (Paddle's optimize_attr['learning_rate'], e.g. ResNet50_metabin's
// bias_lr_factor): the parameter is stepped with lr · factor. Parameters not listed have factor 1. Supported by
// SGD and Momentum (the only optimizers PaddleClas configs combine them with); other optimizers refuse a
// factor other than 1.
using LrMultipliers = std::vector<std::pair<torch::Tensor, double>>;
// A module that sets multipliers for some of its parameters.
class HasLrMultipliers {
 public:
  virtual ~HasLrMultipliers() = default;
  virtual LrMultipliers lr_multipliers() const = 0;
};
// The multipliers of every HasLrMultipliers module inside `module` (itself included).
LrMultipliers lr_multipliers_of(const torch::nn::Module& module);

// The optimizers of one training run, stepped together.
class OptimizerSet {
 public:
  // `node` = cfg["Optimizer"] (a map with `name`, or a list of `- Name: {scope, ...}`).
  // A single (non-list) optimizer covers every scope that has parameters (PaddleClas's scope "all": the loss
  // parameters are optimized too).
  // `multipliers`: per-parameter lr factors (see LrMultipliers).
  // `schedule_only`: indices (config order) of optimizers that only provide a learning-rate schedule (MetaBIN's
  // third optimizer, whose scope is the whole model): they are never stepped or cleared, so their parameters
  // may also belong to another optimizer; step_of() refuses them.
  static std::unique_ptr<OptimizerSet> create(const ConfigNode& node, const ParameterScopes& scopes,
                                              int64_t iters_per_epoch, int64_t epochs,
                                              const LrMultipliers& multipliers = {},
                                              const std::vector<size_t>& schedule_only = {});
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
  // Gives an evaluation's metric (the first Metric.Eval value) to every schedule that follows one
  // (ReduceOnPlateau); the others ignore it.
  void observe_metric(double metric);

  size_t size() const { return entries_.size(); }
  // Per optimizer: "Momentum scope=all params=62 lr=Cosine(...)", for logs.
  std::vector<std::string> describe() const;
  const LrSchedule& schedule(size_t i) const;
  // Optimizer i alone (PaddleClas's engine.optimizer[i], for loops that step optimizers separately, e.g.
  // MetaBIN): zero_grad_of clears its parameters' gradients, step_of steps it with the lr of the current
  // iteration; neither advances the iteration (advance() does).
  void zero_grad_of(size_t i);
  void step_of(size_t i);
  void advance() { ++iteration_; }
  // Optimizer i's parameters.
  const std::vector<torch::Tensor>& parameters_of(size_t i) const;

  // Writes optimizer states, stateful lr schedules' state ("lr_state" in "optimizer_<i>") and the iteration
  // (keys "optim_format_version", "iteration", "optimizer_<i>");
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
