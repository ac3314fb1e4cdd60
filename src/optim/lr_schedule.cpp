// Learning-rate schedules with PaddleClas semantics (docs/architecture.md; formulas in lr_schedule.h).
#include <featlearn/optim/lr_schedule.h>

#include "optim_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

namespace featlearn {
using namespace optim_detail;

// ---------------------------------------------------------------------------------------------------------
// LrSchedule

std::unique_ptr<LrSchedule> LrSchedule::create(const ConfigNode& node, int64_t iters_per_epoch, int64_t epochs) {
  if (!node.defined()) node.fail("missing learning-rate schedule (e.g. `lr: {name: Cosine, learning_rate: 0.1}`)");
  if (!node.is_map()) node.fail("expected a map such as {name: Cosine, learning_rate: 0.1}");
  if (iters_per_epoch <= 0)
    node.fail("the training loader yields no batch per epoch (fewer samples than batch_size with drop_last?)");
  if (epochs <= 0) node.fail("Global.epochs must be positive, got " + std::to_string(epochs));

  std::unique_ptr<LrSchedule> s(new LrSchedule());
  s->iters_per_epoch_ = iters_per_epoch;

  if (!node.has("name")) {  // PaddleClas: a bare `learning_rate` is a constant lr
    node.check_keys({"learning_rate"});
    s->base_lr_ = node.require<double>("learning_rate");
    s->description_ = "Constant(learning_rate=" + num(s->base_lr_) + ")";
    return s;
  }

  const std::string name = node.require<std::string>("name");
  static const std::vector<std::string> kNames = {"ConstLR",   "Constant",        "Cosine", "Cyclic", "Linear",
                                                  "MultiStepDecay", "Piecewise", "ReduceOnPlateau", "Step"};
  if (std::find(kNames.begin(), kNames.end(), name) == kNames.end())
    node["name"].fail("unknown learning-rate schedule '" + name + "'" + did_you_mean(name, kNames) +
                      " (valid names: " + join(kNames) + ")");

  // epochs / step_each_epoch: PaddleClas overwrites them with Global.epochs and the iterations per epoch.
  std::vector<std::string> allowed = {"name",     "warmup_epoch", "warmup_start_lr", "last_epoch",
                                      "by_epoch", "verbose",      "epochs",          "step_each_epoch"};
  auto allow = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys) allowed.emplace_back(k);
  };
  if (name == "Cosine") allow({"eta_min"});
  if (name == "Linear") allow({"end_lr", "power", "cycle"});
  if (name == "Step") allow({"step_size", "gamma"});
  if (name == "MultiStepDecay") allow({"milestones", "gamma"});
  if (name == "Piecewise") allow({"decay_epochs", "values"});
  if (name == "Cyclic")
    allow({"base_learning_rate", "max_learning_rate", "step_size_up", "step_size_down", "mode", "exp_gamma",
           "scale_fn", "scale_mode"});
  else
    allow({"learning_rate"});
  if (name == "ReduceOnPlateau")
    allow({"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "epsilon"});
  node.check_keys(allowed);
  // PaddleClas replaces these two with the run's values, so a differing value would be silently wrong.
  if (node.has("epochs") && node.require<int64_t>("epochs") != epochs)
    node["epochs"].fail("is " + std::to_string(node.require<int64_t>("epochs")) + " but Global.epochs is " +
                        std::to_string(epochs) + " (PaddleClas overwrites it with Global.epochs; remove it)");
  if (node.has("step_each_epoch") && node.require<int64_t>("step_each_epoch") != iters_per_epoch)
    node["step_each_epoch"].fail("is " + std::to_string(node.require<int64_t>("step_each_epoch")) +
                                 " but an epoch has " + std::to_string(iters_per_epoch) +
                                 " iterations (PaddleClas overwrites it with that number; remove it)");

  s->by_epoch_ = node.get<bool>("by_epoch", false);
  node.get<bool>("verbose", false);  // type-checked; the engine logs the lr
  const int64_t last_epoch = node.get<int64_t>("last_epoch", -1);
  if (last_epoch < -1) node["last_epoch"].fail("must be >= -1 (-1 starts the schedule at its beginning)");
  s->start_offset_ = static_cast<double>(last_epoch + 1);
  s->warmup_start_lr_ = node.get<double>("warmup_start_lr", 0.0);

  // Piecewise takes its base lr from values[0] (or from learning_rate with the ×0.1-every-30-epochs rule).
  if (name == "Piecewise") {
    const double lr = node.get<double>("learning_rate", 0.0);
    std::vector<double> decay_epochs;
    if (lr != 0.0) {  // PaddleClas: `if learning_rate:` overrides decay_epochs/values
      for (int64_t e = 0; e < epochs; e += 30) decay_epochs.push_back(static_cast<double>(e));
      for (size_t i = 0; i < decay_epochs.size(); ++i) s->values_.push_back(lr * std::pow(0.1, double(i)));
      if (decay_epochs.size() == 1) {
        decay_epochs = {static_cast<double>(epochs)};
        s->values_ = {s->values_[0], s->values_[0]};
      } else {
        decay_epochs.erase(decay_epochs.begin());
      }
      if (node.has("decay_epochs") || node.has("values"))
        warn(node.where() + ": learning_rate is set, so decay_epochs/values are replaced by the rule 'lr x0.1 "
             "every 30 epochs' (as PaddleClas)");
    } else {
      decay_epochs = node.require<std::vector<double>>("decay_epochs");
      s->values_ = node.require<std::vector<double>>("values");
      if (s->values_.size() != decay_epochs.size() + 1)
        node["values"].fail("needs exactly one more entry than decay_epochs (" +
                            std::to_string(decay_epochs.size() + 1) + "), got " +
                            std::to_string(s->values_.size()));
    }
    for (double e : decay_epochs) s->boundaries_.push_back(s->by_epoch_ ? e : e * double(iters_per_epoch));
    s->base_lr_ = s->values_[0];
  } else if (name == "Cyclic") {
    // Paddle's CyclicLR: the warmup (when any) ends at base_learning_rate.
    s->base_lr_ = node.require<double>("base_learning_rate");
  } else {
    s->base_lr_ = node.require<double>("learning_rate");
  }

  // PaddleClas's Cyclic takes warmup_epoch and warmup_start_lr without defaults.
  if (name == "Cyclic") node.require<double>("warmup_start_lr"), node.require<double>("warmup_epoch");
  double warmup_epoch = node.get<double>("warmup_epoch", 0.0);
  if (warmup_epoch < 0) node["warmup_epoch"].fail("must be >= 0");
  if (warmup_epoch >= double(epochs) && warmup_epoch > 0) {
    warn(node["warmup_epoch"].where() + ": must be smaller than Global.epochs (" + std::to_string(epochs) +
         "); using " + std::to_string(epochs) + " (as PaddleClas)");
    warmup_epoch = double(epochs);
  }
  if (s->by_epoch_) {
    if (!is_whole(warmup_epoch)) node["warmup_epoch"].fail("must be a whole number of epochs when by_epoch is true");
    s->warmup_steps_ = warmup_epoch;
  } else {
    s->warmup_steps_ = std::nearbyint(warmup_epoch * double(iters_per_epoch));  // Python round(): half to even
  }
  // Steps per epoch-valued key; the decaying part spans the epochs after warmup.
  const double unit = s->by_epoch_ ? 1.0 : double(iters_per_epoch);
  const double decay_span = (double(epochs) - warmup_epoch) * unit;

  std::string params;
  if (name == "Constant" || name == "ConstLR") {
    s->kind_ = Kind::kConstant;
  } else if (name == "Cosine") {
    s->kind_ = Kind::kCosine;
    s->period_ = decay_span;
    s->end_lr_ = node.get<double>("eta_min", 0.0);
    params = ", T_max=" + num(s->period_) + ", eta_min=" + num(s->end_lr_);
  } else if (name == "Linear") {
    s->kind_ = Kind::kLinear;
    s->period_ = decay_span;
    s->end_lr_ = node.get<double>("end_lr", 0.0);
    s->power_ = node.get<double>("power", 1.0);
    s->cycle_ = node.get<bool>("cycle", false);
    params = ", decay_steps=" + num(s->period_) + ", end_lr=" + num(s->end_lr_) + ", power=" + num(s->power_) +
             (s->cycle_ ? ", cycle=true" : "");
  } else if (name == "Step") {
    s->kind_ = Kind::kStep;
    const double step_size = node.require<double>("step_size");
    s->gamma_ = node.require<double>("gamma");
    if (s->by_epoch_) {
      if (!is_whole(step_size)) node["step_size"].fail("must be a whole number of epochs when by_epoch is true");
      s->period_ = step_size;
    } else {
      s->period_ = std::trunc(step_size * double(iters_per_epoch));  // PaddleClas: int(step_size * step_each_epoch)
    }
    if (s->period_ < 1)
      node["step_size"].fail("gives a step of " + num(s->period_) + " iterations; it must be at least 1 (" +
                             std::to_string(iters_per_epoch) + " iterations per epoch)");
    if (s->gamma_ >= 1.0) node["gamma"].fail("must be < 1.0");
    params = ", step_size=" + num(s->period_) + ", gamma=" + num(s->gamma_);
  } else if (name == "MultiStepDecay") {
    s->kind_ = Kind::kMultiStep;
    const auto milestones = node.require<std::vector<double>>("milestones");
    s->gamma_ = node.get<double>("gamma", 0.1);
    if (s->gamma_ >= 1.0) node["gamma"].fail("must be < 1.0");
    for (size_t i = 0; i < milestones.size(); ++i) {
      if (i > 0 && milestones[i] <= milestones[i - 1]) node["milestones"].fail("must be strictly increasing");
      s->boundaries_.push_back(milestones[i] * unit);
    }
    params = ", gamma=" + num(s->gamma_);
  } else if (name == "Piecewise") {
    s->kind_ = Kind::kPiecewise;
  } else if (name == "Cyclic") {
    s->kind_ = Kind::kCyclic;
    s->max_lr_ = node.require<double>("max_learning_rate");
    if (s->max_lr_ < 0) node["max_learning_rate"].fail("must be >= 0");
    auto whole_steps = [&](const char* key, double v, double min) {
      if (!is_whole(v) || v < min)
        node[key].fail(std::string("must be a whole number of ") + (s->by_epoch_ ? "epochs" : "iterations") +
                       (min > 0 ? " > 0" : " >= 0") + ", got " + num(v));
      return v;
    };
    const double up = whole_steps("step_size_up", node.require<double>("step_size_up"), 1);
    const double down = node.has("step_size_down") ? whole_steps("step_size_down", node.require<double>("step_size_down"), 0) : up;
    s->period_ = up + down;             // cycle size
    s->step_up_pct_ = up / s->period_;
    const std::string mode = node.get<std::string>("mode", "triangular");
    if (mode == "triangular") s->cyclic_mode_ = CyclicMode::kTriangular;
    else if (mode == "triangular2") s->cyclic_mode_ = CyclicMode::kTriangular2;
    else if (mode == "exp_range") s->cyclic_mode_ = CyclicMode::kExpRange;
    else node["mode"].fail("expected triangular, triangular2 or exp_range, got '" + mode + "'");
    s->gamma_ = node.get<double>("exp_gamma", 1.0);
    // scale_fn is a Python callable in Paddle; a YAML file cannot hold one. Without it Paddle ignores
    // scale_mode (each mode has its own), so scale_mode is only validated.
    if (node.has("scale_fn")) node["scale_fn"].fail("a custom scaling function cannot be given in a config; use mode");
    const std::string scale_mode = node.get<std::string>("scale_mode", "cycle");
    if (scale_mode != "cycle" && scale_mode != "iterations")
      node["scale_mode"].fail("expected cycle or iterations, got '" + scale_mode + "'");
    params = ", max_learning_rate=" + num(s->max_lr_) + ", step_size_up=" + num(up) + ", step_size_down=" +
             num(down) + ", mode=" + mode + (mode == "exp_range" ? ", exp_gamma=" + num(s->gamma_) : "");
  } else if (name == "ReduceOnPlateau") {
    s->kind_ = Kind::kPlateau;
    if (!s->by_epoch_)
      node.fail("ReduceOnPlateau follows the evaluation metric, which exists once per evaluation: set by_epoch: "
                "True (PaddleClas steps a by_epoch: False ReduceOnPlateau every iteration without a metric and "
                "fails)");
    auto& p = s->plateau_;
    const std::string mode = node.get<std::string>("mode", "min");
    if (mode != "min" && mode != "max") node["mode"].fail("expected min or max, got '" + mode + "'");
    p.maximize = mode == "max";
    p.factor = node.get<double>("factor", 0.1);
    if (p.factor >= 1.0) node["factor"].fail("must be < 1.0 (new lr = lr * factor)");
    p.patience = node.get<int64_t>("patience", 10);
    if (p.patience < 0) node["patience"].fail("must be >= 0");
    p.threshold = node.get<double>("threshold", 1e-4);
    const std::string tmode = node.get<std::string>("threshold_mode", "rel");
    if (tmode != "rel" && tmode != "abs") node["threshold_mode"].fail("expected rel or abs, got '" + tmode + "'");
    p.relative = tmode == "rel";
    p.cooldown = node.get<int64_t>("cooldown", 0);
    if (p.cooldown < 0) node["cooldown"].fail("must be >= 0");
    p.min_lr = node.get<double>("min_lr", 0.0);
    p.epsilon = node.get<double>("epsilon", 1e-8);
    s->plateau_state_.lr = s->base_lr_;
    params = ", mode=" + mode + ", factor=" + num(p.factor) + ", patience=" + std::to_string(p.patience) +
             ", threshold=" + num(p.threshold) + ", threshold_mode=" + tmode + ", cooldown=" +
             std::to_string(p.cooldown) + ", min_lr=" + num(p.min_lr) + ", epsilon=" + num(p.epsilon);
  }
  if (!s->boundaries_.empty()) {
    params += ", boundaries=[";
    for (size_t i = 0; i < s->boundaries_.size(); ++i) params += (i ? "," : "") + num(s->boundaries_[i]);
    params += "]";
  }
  if (!s->values_.empty()) {
    params += ", values=[";
    for (size_t i = 0; i < s->values_.size(); ++i) params += (i ? "," : "") + num(s->values_[i]);
    params += "]";
  }
  s->description_ = name + (name == "Cyclic" ? "(base_learning_rate=" : "(learning_rate=") + num(s->base_lr_) + params;
  if (s->warmup_steps_ > 0)
    s->description_ += ", warmup_steps=" + num(s->warmup_steps_) + ", warmup_start_lr=" + num(s->warmup_start_lr_);
  if (last_epoch != -1) s->description_ += ", last_epoch=" + std::to_string(last_epoch);
  s->description_ += std::string(", by_epoch=") + (s->by_epoch_ ? "true" : "false") + ")";
  return s;
}

double LrSchedule::lr_at(int64_t iteration) const {
  FL_ASSERT(iteration >= 0, "negative iteration");
  double t = step_of(iteration);
  if (warmup_steps_ > 0) {
    // Paddle's LinearWarmup: linear ramp, then the wrapped schedule stepped to t - warmup_steps.
    if (t < warmup_steps_) return (base_lr_ - warmup_start_lr_) * t / warmup_steps_ + warmup_start_lr_;
    return decayed(t - warmup_steps_);
  }
  return decayed(t);
}

bool LrSchedule::observe_metric(double metric, int64_t iteration) {
  if (kind_ != Kind::kPlateau) return false;
  // Evaluations of epochs that end inside the warmup do not count (featlearn; see lr_schedule.h).
  if (warmup_steps_ > 0 && step_of(iteration) < warmup_steps_) return false;
  const auto& p = plateau_;
  auto& st = plateau_state_;
  if (st.cooldown_counter > 0) {  // Paddle: a cooldown evaluation is not compared at all
    --st.cooldown_counter;
    return true;
  }
  bool better = !st.has_best;
  if (!better) {
    const double margin = p.relative ? st.best * p.threshold : p.threshold;
    better = p.maximize ? metric > st.best + margin : metric < st.best - margin;
  }
  if (better) {
    st.best = metric;
    st.has_best = true;
    st.num_bad = 0;
  } else {
    ++st.num_bad;
  }
  if (st.num_bad > p.patience) {
    st.cooldown_counter = p.cooldown;
    st.num_bad = 0;
    const double reduced = std::max(st.lr * p.factor, p.min_lr);
    if (st.lr - reduced > p.epsilon) st.lr = reduced;
  }
  return true;
}

std::vector<double> LrSchedule::state() const {
  if (kind_ != Kind::kPlateau) return {};
  const auto& st = plateau_state_;
  return {st.lr, st.has_best ? 1.0 : 0.0, st.best, double(st.num_bad), double(st.cooldown_counter)};
}

void LrSchedule::set_state(const std::vector<double>& v) {
  FL_ASSERT(v.size() == state().size(), "lr schedule state size");
  if (kind_ != Kind::kPlateau) return;
  auto& st = plateau_state_;
  st.lr = v[0];
  st.has_best = v[1] != 0.0;
  st.best = v[2];
  st.num_bad = static_cast<int64_t>(v[3]);
  st.cooldown_counter = static_cast<int64_t>(v[4]);
}

double LrSchedule::step_of(int64_t iteration) const {
  const int64_t t = by_epoch_ ? iteration / iters_per_epoch_ : iteration;
  return static_cast<double>(t) + start_offset_;
}

double LrSchedule::decayed(double s) const {
  switch (kind_) {
    case Kind::kConstant:
      return base_lr_;
    case Kind::kCosine:  // CosineAnnealingDecay (closed form; Paddle's recursive form is the same function)
      if (period_ <= 0) return base_lr_;
      return end_lr_ + (base_lr_ - end_lr_) * (1.0 + std::cos(M_PI * s / period_)) / 2.0;
    case Kind::kLinear: {  // PolynomialDecay
      if (period_ <= 0) return base_lr_;
      double x = s, span = period_;
      if (cycle_) {
        const double div = s == 0 ? 1.0 : std::ceil(s / period_);
        span = period_ * div;
      } else {
        x = std::min(s, period_);
      }
      return (base_lr_ - end_lr_) * std::pow(1.0 - x / span, power_) + end_lr_;
    }
    case Kind::kStep:
      return base_lr_ * std::pow(gamma_, std::floor(s / period_));
    case Kind::kMultiStep: {
      size_t n = 0;
      while (n < boundaries_.size() && s >= boundaries_[n]) ++n;
      return base_lr_ * std::pow(gamma_, double(n));
    }
    case Kind::kCyclic: {  // Paddle's CyclicLR
      const double cycle = 1.0 + std::floor(s / period_);
      const double pct = 1.0 + s / period_ - cycle;
      const double scale = pct <= step_up_pct_ ? pct / step_up_pct_ : (1.0 - pct) / (1.0 - step_up_pct_);
      double amplitude_scale = 1.0;
      if (cyclic_mode_ == CyclicMode::kTriangular2) amplitude_scale = 1.0 / std::pow(2.0, cycle - 1.0);
      if (cyclic_mode_ == CyclicMode::kExpRange) amplitude_scale = std::pow(gamma_, s);
      return base_lr_ + (max_lr_ - base_lr_) * scale * amplitude_scale;
    }
    case Kind::kPlateau:
      return plateau_state_.lr;
    case Kind::kPiecewise:
      for (size_t i = 0; i < boundaries_.size(); ++i)
        if (s < boundaries_[i]) return values_[i];
      return values_.back();
  }
  FL_ASSERT(false, "unhandled lr schedule kind");
  return 0;
}

}  // namespace featlearn
