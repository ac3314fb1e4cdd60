// Optimizers and lr schedules with PaddleClas semantics (ppcls/optimizer/{__init__,optimizer,learning_rate}.py
// on top of paddle.optimizer / paddle.optimizer.lr). See optimizer.h for the formulas.
#include <featlearn/optim/optimizer.h>

#include "optim_util.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <unordered_map>

namespace featlearn {
using namespace optim_detail;
namespace {

constexpr int64_t kOptimFormatVersion = 1;

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// OptimizerSet

namespace {

enum class OptKind { kSGD, kMomentum, kAdam, kAdamW, kRMSProp };
enum class RegKind { kNone, kL1, kL2 };

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"Adam", "AdamW", "Momentum", "RMSProp", "SGD"};
  return names;
}

OptKind kind_of(const std::string& name) {
  if (name == "SGD") return OptKind::kSGD;
  if (name == "Momentum") return OptKind::kMomentum;
  if (name == "Adam") return OptKind::kAdam;
  if (name == "AdamW") return OptKind::kAdamW;
  FL_ASSERT(name == "RMSProp", "unknown optimizer " + name);
  return OptKind::kRMSProp;
}

struct ScopedParam {
  std::string qualified;  // "RecModel:backbone.conv1.weight", for messages
  std::string name;       // name within its scope, matched by no_weight_decay_name
  torch::Tensor tensor;
};

// Parameters selected by one `scope` (PaddleClas build_optimizer's rules, see optimizer.h).
std::vector<ScopedParam> resolve_scope(const std::string& scope, const ConfigNode& where,
                                       const ParameterScopes& scopes) {
  std::vector<ScopedParam> out;
  auto add_all = [&](const std::pair<std::string, NamedParameters>& sc) {
    for (const auto& np : sc.second) out.push_back({sc.first + ":" + np.first, np.first, np.second});
  };
  std::vector<std::string> scope_names = {"all"};
  for (const auto& sc : scopes) scope_names.push_back(sc.first);

  if (scope == "all") {
    for (const auto& sc : scopes) add_all(sc);
    if (out.empty()) where.fail("there are no parameters to optimize");
    return out;
  }
  for (const auto& sc : scopes) {
    if (sc.first != scope) continue;
    if (sc.second.empty()) where.fail("scope '" + scope + "' has no parameters to optimize");
    add_all(sc);
    return out;
  }
  // A sub-layer of RecModel, matched like PaddleClas: attribute name or regex full match of a sub-layer name.
  // The model's scope is named after its Arch.name (RecModel, or DistillationModel whose sub-layers are
  // Student, Student.backbone, ...).
  const NamedParameters* model = nullptr;
  std::string model_scope;
  for (const auto& sc : scopes)
    if (sc.first == "RecModel" || sc.first == "DistillationModel") model = &sc.second, model_scope = sc.first;
  std::set<std::string> layers;  // first-level sub-layers, for the message
  if (model)
    for (const auto& np : *model) layers.insert(np.first.substr(0, np.first.find('.')));
  auto unknown = [&]() {
    std::vector<std::string> candidates = scope_names;
    candidates.insert(candidates.end(), layers.begin(), layers.end());
    std::string msg = "unknown scope '" + scope + "'" + did_you_mean(scope, candidates) +
                      " (valid: " + join(scope_names);
    if (!layers.empty())
      msg += ", or a " + model_scope + " sub-layer name/regex such as " + join({layers.begin(), layers.end()});
    where.fail(msg + ")");
  };
  if (ends_with(scope, "Loss") || !model) unknown();  // PaddleClas: *Loss scopes name a loss with parameters
  std::regex re;
  try {
    re = std::regex(scope);
  } catch (const std::regex_error& e) {
    where.fail("scope '" + scope + "' is neither a known scope nor a valid regular expression (" + e.what() + ")");
  }
  for (const auto& np : *model) {
    const std::string& n = np.first;
    for (size_t dot = n.find('.'); dot != std::string::npos; dot = n.find('.', dot + 1)) {
      if (std::regex_match(n.substr(0, dot), re)) {
        out.push_back({model_scope + ":" + n, n, np.second});
        break;
      }
    }
  }
  if (out.empty()) unknown();
  return out;
}

}  // namespace

struct OptimizerSet::Entry {
  std::string name;   // config name: Momentum, Adam, ...
  std::string scope;
  OptKind kind = OptKind::kSGD;
  std::unique_ptr<LrSchedule> schedule;
  std::vector<torch::Tensor> params;
  std::vector<std::string> param_names;
  std::vector<bool> decay;  // regularizer / decoupled weight decay applies
  RegKind reg = RegKind::kNone;
  double reg_coeff = 0;
  std::optional<double> clip_norm;
  std::unique_ptr<torch::optim::Optimizer> torch_opt;  // every kind but RMSProp
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> group_options;  // as configured, re-applied on load
  std::vector<double> group_lr_factor;  // per torch param group: lr multiplier (LrMultipliers), 1 by default
  bool schedule_only = false;  // only its lr schedule is used (OptimizerSet::create's schedule_only)
  // RMSProp. Paddle's rule differs from torch::optim::RMSprop (epsilon inside the sqrt, lr inside the
  // velocity), so it is implemented here. Tensors are created at a parameter's first gradient.
  double rho = 0.95, epsilon = 1e-6, momentum = 0;
  std::vector<torch::Tensor> mean_square, moment;

  void step(double lr);
};

namespace {

std::unique_ptr<OptimizerSet::Entry> make_entry(const std::string& name, const ConfigNode& params,
                                                const std::string& scope, const ConfigNode& scope_where,
                                                bool allow_scope, const ParameterScopes& scopes,
                                                int64_t iters_per_epoch, int64_t epochs,
                                                const LrMultipliers& multipliers) {
  auto e = std::make_unique<OptimizerSet::Entry>();
  e->name = name;
  e->scope = scope;
  e->kind = kind_of(name);

  std::vector<std::string> allowed = {"name", "lr", "regularizer", "clip_norm", "weight_decay", "multi_precision"};
  if (allow_scope) allowed.push_back("scope");
  const bool has_no_decay_keys = e->kind == OptKind::kMomentum || e->kind == OptKind::kAdamW ||
                                 e->kind == OptKind::kRMSProp;
  if (has_no_decay_keys) {
    allowed.push_back("no_weight_decay_name");
    allowed.push_back("one_dim_param_no_weight_decay");
  }
  switch (e->kind) {
    case OptKind::kSGD: break;
    case OptKind::kMomentum: allowed.insert(allowed.end(), {"momentum", "use_nesterov"}); break;
    case OptKind::kAdam:
      allowed.insert(allowed.end(), {"beta1", "beta2", "epsilon", "lazy_mode", "parameter_list"});
      break;
    case OptKind::kAdamW: allowed.insert(allowed.end(), {"beta1", "beta2", "epsilon"}); break;
    case OptKind::kRMSProp: allowed.insert(allowed.end(), {"momentum", "rho", "epsilon"}); break;
  }
  params.check_keys(allowed);
  params.get<bool>("multi_precision", false);  // type check only
  if (e->kind == OptKind::kAdam) {
    params.get<bool>("lazy_mode", false);  // only changes sparse (SelectedRows) updates in Paddle
    if (params["parameter_list"].defined())
      params["parameter_list"].fail("is not supported; choose parameters with `scope`");
  }

  if (!params.has("lr")) params.fail("missing required key 'lr' (e.g. `lr: {name: Cosine, learning_rate: 0.1}`)");
  e->schedule = LrSchedule::create(params["lr"], iters_per_epoch, epochs);

  // Regularizer (Paddle: `regularizer` wins over `weight_decay`; a float weight_decay is L2Decay).
  const ConfigNode reg = params["regularizer"];
  double adamw_decay = 0;
  if (e->kind == OptKind::kAdamW) {
    if (reg.defined())
      reg.fail("AdamW applies decoupled `weight_decay`; a regularizer is not supported with AdamW (Paddle raises "
               "a TypeError). Use `weight_decay: <coeff>` instead");
    adamw_decay = params.require<double>("weight_decay");
    if (adamw_decay < 0) params["weight_decay"].fail("must be >= 0");
  } else if (reg.defined()) {
    reg.check_keys({"name", "coeff"});
    const std::string reg_name = reg.require<std::string>("name");
    if (reg_name == "L2") {
      e->reg = RegKind::kL2;
    } else if (reg_name == "L1") {
      e->reg = RegKind::kL1;
    } else {
      reg["name"].fail("unknown regularizer '" + reg_name + "'" + did_you_mean(reg_name, {"L1", "L2"}) +
                       " (valid names: L1, L2)");
    }
    e->reg_coeff = reg.get<double>("coeff", 0.0);
    if (params["weight_decay"].defined())
      warn(params["weight_decay"].where() + ": ignored because `regularizer` is set (as PaddleClas)");
  } else if (params["weight_decay"].defined()) {
    e->reg = RegKind::kL2;
    e->reg_coeff = params.require<double>("weight_decay");
  }
  if (e->reg_coeff == 0) e->reg = RegKind::kNone;

  if (params["clip_norm"].defined()) {
    e->clip_norm = params.require<double>("clip_norm");
    if (!(*e->clip_norm > 0)) params["clip_norm"].fail("must be > 0");
  }

  // Parameters and which of them are exempt from decay.
  std::vector<std::string> no_decay_names;
  bool one_dim_no_decay = false;
  if (has_no_decay_keys) {
    const ConfigNode nd = params["no_weight_decay_name"];
    if (nd.defined()) {
      if (nd.is_seq()) {
        no_decay_names = nd.as<std::vector<std::string>>();
      } else {  // PaddleClas: a space-separated string
        std::istringstream words(nd.as<std::string>());
        for (std::string w; words >> w;) no_decay_names.push_back(w);
      }
    }
    // Note: PaddleClas's Momentum only honours one_dim_param_no_weight_decay together with a non-empty
    // no_weight_decay_name (an oversight there); here it always applies.
    one_dim_no_decay = params.get<bool>("one_dim_param_no_weight_decay", false);
  }
  std::set<const void*> seen;
  for (auto& sp : resolve_scope(scope, scope_where, scopes)) {
    if (!seen.insert(sp.tensor.unsafeGetTensorImpl()).second) continue;  // shared parameter
    bool decay = !(one_dim_no_decay && sp.tensor.dim() == 1);
    for (const auto& nd : no_decay_names)
      if (sp.name.find(nd) != std::string::npos) decay = false;
    e->params.push_back(sp.tensor);
    e->param_names.push_back(sp.qualified);
    e->decay.push_back(decay);
  }

  // Per-parameter lr multipliers (SGD / Momentum only).
  auto factor_of = [&](const torch::Tensor& p) {
    for (const auto& m : multipliers)
      if (m.first.unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) return m.second;
    return 1.0;
  };
  if (e->kind != OptKind::kSGD && e->kind != OptKind::kMomentum)
    for (size_t j = 0; j < e->params.size(); ++j)
      if (factor_of(e->params[j]) != 1.0)
        params.fail(fmt::format("parameter '{}' has an lr multiplier of {} (e.g. Arch.Backbone.bias_lr_factor), "
                                "which featlearn supports with SGD and Momentum only",
                                e->param_names[j], factor_of(e->params[j])));

  // Update rule.
  const double lr0 = e->schedule->lr_at(0);
  auto betas = [&]() {
    const double b1 = params.get<double>("beta1", 0.9), b2 = params.get<double>("beta2", 0.999);
    if (!(b1 >= 0 && b1 < 1)) params["beta1"].fail("must be in [0, 1)");
    if (!(b2 >= 0 && b2 < 1)) params["beta2"].fail("must be in [0, 1)");
    return std::make_tuple(b1, b2);
  };
  auto epsilon = [&](double def) {
    const double eps = params.get<double>("epsilon", def);
    if (eps < 0) params["epsilon"].fail("must be >= 0");
    return eps;
  };
  using torch::optim::OptimizerParamGroup;
  std::vector<OptimizerParamGroup> groups;
  switch (e->kind) {
    case OptKind::kSGD:
    case OptKind::kMomentum: {
      // Paddle's Momentum: v = mu*v + g; p -= lr*v (nesterov: p -= lr*(g + mu*v)); velocity starts at 0, so the
      // first v is g. torch's SGD (dampening 0) is the same rule, lr outside the velocity.
      double mu = 0;
      bool nesterov = false;
      if (e->kind == OptKind::kMomentum) {
        mu = params.require<double>("momentum");
        if (mu < 0) params["momentum"].fail("must be >= 0");
        nesterov = params.get<bool>("use_nesterov", false) && mu > 0;  // mu = 0: nesterov is plain SGD
      }
      auto opts = torch::optim::SGDOptions(lr0).momentum(mu).nesterov(nesterov);
      // One param group per lr multiplier (first-seen order); e->params is put in group order so that saved
      // states line up with parameters.
      std::vector<double> factors;
      std::vector<std::vector<size_t>> members;
      for (size_t j = 0; j < e->params.size(); ++j) {
        const double f = factor_of(e->params[j]);
        auto it = std::find(factors.begin(), factors.end(), f);
        if (it == factors.end()) factors.push_back(f), members.emplace_back();
        members[std::find(factors.begin(), factors.end(), f) - factors.begin()].push_back(j);
      }
      std::vector<torch::Tensor> ordered;
      std::vector<std::string> ordered_names;
      std::vector<bool> ordered_decay;
      for (size_t gi = 0; gi < factors.size(); ++gi) {
        std::vector<torch::Tensor> group;
        for (size_t j : members[gi]) {
          group.push_back(e->params[j]);
          ordered.push_back(e->params[j]);
          ordered_names.push_back(e->param_names[j]);
          ordered_decay.push_back(e->decay[j]);
        }
        groups.emplace_back(group, std::make_unique<torch::optim::SGDOptions>(opts));
        e->group_options.push_back(std::make_unique<torch::optim::SGDOptions>(opts));
        e->group_lr_factor.push_back(factors[gi]);
      }
      e->params = ordered;
      e->param_names = ordered_names;
      e->decay = ordered_decay;
      if (groups.empty()) {  // no parameters: torch's optimizer still wants a group
        groups.emplace_back(std::vector<torch::Tensor>{}, std::make_unique<torch::optim::SGDOptions>(opts));
        e->group_options.push_back(std::make_unique<torch::optim::SGDOptions>(opts));
        e->group_lr_factor.push_back(1.0);
      }
      e->torch_opt = std::make_unique<torch::optim::SGD>(groups, opts);
      break;
    }
    case OptKind::kAdam: {
      // Paddle's Adam = torch's (lr_t = lr*sqrt(1-b2^t)/(1-b1^t), epsilon scaled by sqrt(1-b2^t)).
      auto opts = torch::optim::AdamOptions(lr0).betas(betas()).eps(epsilon(1e-8)).weight_decay(0);
      groups.emplace_back(e->params, std::make_unique<torch::optim::AdamOptions>(opts));
      e->group_options.push_back(std::make_unique<torch::optim::AdamOptions>(opts));
      e->torch_opt = std::make_unique<torch::optim::Adam>(groups, opts);
      break;
    }
    case OptKind::kAdamW: {
      // Paddle's AdamW: p *= (1 - lr*coeff), then Adam; no_weight_decay parameters skip the first part.
      auto opts = torch::optim::AdamWOptions(lr0).betas(betas()).eps(epsilon(1e-8)).weight_decay(adamw_decay);
      std::vector<torch::Tensor> with_decay, without_decay;
      for (size_t j = 0; j < e->params.size(); ++j) (e->decay[j] ? with_decay : without_decay).push_back(e->params[j]);
      // Keep e->params in group order so saved states line up with parameters.
      std::vector<bool> decay_in_order(with_decay.size(), true);
      decay_in_order.resize(with_decay.size() + without_decay.size(), false);
      std::vector<std::string> names_in_order;
      for (int pass = 0; pass < 2; ++pass)
        for (size_t j = 0; j < e->params.size(); ++j)
          if (e->decay[j] == (pass == 0)) names_in_order.push_back(e->param_names[j]);
      for (const auto* group : {&with_decay, &without_decay}) {
        if (group->empty()) continue;
        auto gopts = opts;
        gopts.weight_decay(group == &with_decay ? adamw_decay : 0.0);
        groups.emplace_back(*group, std::make_unique<torch::optim::AdamWOptions>(gopts));
        e->group_options.push_back(std::make_unique<torch::optim::AdamWOptions>(gopts));
      }
      e->params = with_decay;
      e->params.insert(e->params.end(), without_decay.begin(), without_decay.end());
      e->param_names = names_in_order;
      e->decay = decay_in_order;
      e->torch_opt = std::make_unique<torch::optim::AdamW>(groups, opts);
      break;
    }
    case OptKind::kRMSProp:
      e->rho = params.get<double>("rho", 0.95);
      e->epsilon = epsilon(1e-6);
      e->momentum = params.get<double>("momentum", 0.0);
      if (!(e->rho >= 0 && e->rho < 1)) params["rho"].fail("must be in [0, 1)");
      if (e->momentum < 0) params["momentum"].fail("must be >= 0");
      e->mean_square.resize(e->params.size());
      e->moment.resize(e->params.size());
      break;
  }
  return e;
}

// Saved states come back on the device the archive was read onto; the update needs them beside the parameters.
void move_state_to(torch::optim::Optimizer& opt, const torch::Device& device) {
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  for (auto& kv : opt.state()) {
    auto* state = kv.second.get();
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(state)) {
      sgd->momentum_buffer(move(sgd->momentum_buffer()));
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(state)) {
      adam->exp_avg(move(adam->exp_avg())).exp_avg_sq(move(adam->exp_avg_sq()));
      adam->max_exp_avg_sq(move(adam->max_exp_avg_sq()));
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(state)) {
      adamw->exp_avg(move(adamw->exp_avg())).exp_avg_sq(move(adamw->exp_avg_sq()));
      adamw->max_exp_avg_sq(move(adamw->max_exp_avg_sq()));
    }
  }
}

}  // namespace

void OptimizerSet::Entry::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t j = 0; j < params.size(); ++j) {
    torch::Tensor& p = params[j];
    torch::Tensor& g = p.mutable_grad();
    if (!g.defined()) continue;
    if (clip_norm) {  // Paddle ClipGradByNorm: g * clip / max(||g||, clip), per tensor; no host sync
      const double c = *clip_norm;
      g.mul_(torch::clamp_min(g.norm(), c).reciprocal().mul_(c));
    }
    if (reg != RegKind::kNone && decay[j]) {
      if (reg == RegKind::kL2)
        g.add_(p, reg_coeff);
      else
        g.add_(p.sign(), reg_coeff);
    }
  }
  if (torch_opt) {
    auto& pgroups = torch_opt->param_groups();
    for (size_t gi = 0; gi < pgroups.size(); ++gi)
      pgroups[gi].options().set_lr(gi < group_lr_factor.size() ? lr * group_lr_factor[gi] : lr);
    torch_opt->step();
    return;
  }
  // RMSProp (Paddle): r = rho*r + (1-rho)*g^2; v = momentum*v + lr*g/sqrt(r+eps); p -= v.
  for (size_t j = 0; j < params.size(); ++j) {
    torch::Tensor& p = params[j];
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (!mean_square[j].defined()) {
      mean_square[j] = torch::zeros_like(p, torch::MemoryFormat::Preserve);
      moment[j] = torch::zeros_like(p, torch::MemoryFormat::Preserve);
    }
    mean_square[j].mul_(rho).addcmul_(g, g, 1.0 - rho);
    moment[j].mul_(momentum).addcdiv_(g, mean_square[j].add(epsilon).sqrt_(), lr);
    p.sub_(moment[j]);
  }
}

LrMultipliers lr_multipliers_of(const torch::nn::Module& module) {
  LrMultipliers out;
  auto add = [&](const torch::nn::Module& m) {
    if (const auto* h = dynamic_cast<const HasLrMultipliers*>(&m)) {
      auto more = h->lr_multipliers();
      out.insert(out.end(), more.begin(), more.end());
    }
  };
  add(module);
  for (const auto& m : module.modules(/*include_self=*/false)) add(*m);
  return out;
}

NamedParameters named_parameters_of(const torch::nn::Module& module) {
  NamedParameters out;
  for (const auto& kv : module.named_parameters(/*recurse=*/true)) out.emplace_back(kv.key(), kv.value());
  return out;
}

std::unique_ptr<OptimizerSet> OptimizerSet::create(const ConfigNode& node, const ParameterScopes& scopes,
                                                   int64_t iters_per_epoch, int64_t epochs,
                                                   const LrMultipliers& multipliers,
                                                   const std::vector<size_t>& schedule_only) {
  if (!node.defined())
    node.fail("missing Optimizer section (e.g. {name: Momentum, momentum: 0.9, lr: {name: Cosine, "
              "learning_rate: 0.1}})");
  std::unique_ptr<OptimizerSet> set(new OptimizerSet());
  auto check_name = [](const std::string& name, const ConfigNode& where) {
    const auto& names = optimizer_names();
    if (std::find(names.begin(), names.end(), name) == names.end())
      where.fail("unknown optimizer '" + name + "'" + did_you_mean(name, names) + " (valid names: " + join(names) +
                 ")");
  };
  if (node.is_map()) {
    const std::string name = node.require<std::string>("name");
    check_name(name, node["name"]);
    // PaddleClas turns the map into [{name: {scope: all, **map}}], so a `scope` key in the map still applies.
    const std::string scope = node.get<std::string>("scope", "all");
    set->entries_.push_back(make_entry(name, node, scope, node.has("scope") ? node["scope"] : node, true, scopes,
                                       iters_per_epoch, epochs, multipliers));
  } else if (node.is_seq()) {
    if (node.size() == 0) node.fail("the optimizer list is empty");
    for (size_t i = 0; i < node.size(); ++i) {
      const ConfigNode item = node.at(i);
      auto [name, params] = item.single_entry();
      check_name(name, item);
      if (!params.is_map()) params.fail("expected a map {scope: ..., lr: {...}, ...}");
      const std::string scope = params.require<std::string>("scope");
      set->entries_.push_back(
          make_entry(name, params, scope, params["scope"], true, scopes, iters_per_epoch, epochs, multipliers));
    }
  } else {
    node.fail("expected a map {name: Momentum, lr: {...}, ...} or a list of `- Name: {scope: ..., lr: {...}}`");
  }

  for (size_t i : schedule_only) {
    FL_ASSERT(i < set->entries_.size(), "schedule_only index out of range");
    set->entries_[i]->schedule_only = true;
  }
  // A parameter stepped by two optimizers would be updated twice per iteration.
  std::unordered_map<const void*, size_t> owner;
  for (size_t i = 0; i < set->entries_.size(); ++i) {
    const auto& e = *set->entries_[i];
    if (e.schedule_only) continue;
    for (size_t j = 0; j < e.params.size(); ++j) {
      auto [it, inserted] = owner.emplace(e.params[j].unsafeGetTensorImpl(), i);
      if (inserted) continue;
      const auto& other = *set->entries_[it->second];
      node.at(i).fail("parameter '" + e.param_names[j] + "' of scope '" + e.scope + "' is already optimized by " +
                      other.name + " (scope '" + other.scope + "'); each parameter may belong to one optimizer");
    }
  }
  return set;
}

OptimizerSet::~OptimizerSet() = default;

void OptimizerSet::zero_grad() {
  // Paddle's clear_grad zeroes gradients (set_to_zero): a parameter that got a gradient once keeps being
  // decayed / carried by momentum in steps where it gets none.
  for (auto& e : entries_)
    for (auto& p : e->params) {
      if (e->schedule_only) break;
      auto& g = p.mutable_grad();
      if (!g.defined()) continue;
      g = g.detach();
      g.zero_();
    }
}

void OptimizerSet::step() {
  for (auto& e : entries_)
    if (!e->schedule_only) e->step(e->schedule->lr_at(iteration_));
  ++iteration_;
}

std::vector<double> OptimizerSet::current_lrs() const {
  std::vector<double> out;
  for (const auto& e : entries_) out.push_back(e->schedule->lr_at(iteration_));
  return out;
}

void OptimizerSet::set_iteration(int64_t it) {
  FL_ASSERT(it >= 0, "negative iteration");
  iteration_ = it;
}

void OptimizerSet::observe_metric(double metric) {
  for (auto& e : entries_) e->schedule->observe_metric(metric, iteration_);
}

void OptimizerSet::zero_grad_of(size_t i) {
  FL_ASSERT(i < entries_.size() && !entries_[i]->schedule_only, "optimizer index out of range or schedule only");
  for (auto& p : entries_[i]->params) {
    auto& g = p.mutable_grad();
    if (!g.defined()) continue;
    g = g.detach();
    g.zero_();
  }
}

void OptimizerSet::step_of(size_t i) {
  FL_ASSERT(i < entries_.size() && !entries_[i]->schedule_only, "optimizer index out of range or schedule only");
  entries_[i]->step(entries_[i]->schedule->lr_at(iteration_));
}

const std::vector<torch::Tensor>& OptimizerSet::parameters_of(size_t i) const {
  FL_ASSERT(i < entries_.size(), "optimizer index out of range");
  return entries_[i]->params;
}

const LrSchedule& OptimizerSet::schedule(size_t i) const {
  FL_ASSERT(i < entries_.size(), "optimizer index out of range");
  return *entries_[i]->schedule;
}

std::vector<std::string> OptimizerSet::describe() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) {
    std::string s = e->name + " scope=" + e->scope + " params=" + std::to_string(e->params.size());
    if (e->reg != RegKind::kNone) s += std::string(" ") + (e->reg == RegKind::kL2 ? "L2" : "L1") + "=" + num(e->reg_coeff);
    if (e->clip_norm) s += " clip_norm=" + num(*e->clip_norm);
    if (e->schedule_only) s += " (schedule only)";
    out.push_back(s + " lr=" + e->schedule->describe());
  }
  return out;
}

void OptimizerSet::save(torch::serialize::OutputArchive& archive) const {
  archive.write("optim_format_version", torch::tensor(kOptimFormatVersion));
  archive.write("iteration", torch::tensor(iteration_));
  archive.write("num_optimizers", torch::tensor(static_cast<int64_t>(entries_.size())));
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = *entries_[i];
    torch::serialize::OutputArchive sub(archive.compilation_unit());
    sub.write("name", c10::IValue(e.name));
    std::vector<int64_t> numels;
    for (const auto& p : e.params) numels.push_back(p.numel());
    sub.write("param_numels", torch::tensor(numels, torch::kInt64));
    const auto lr_state = e.schedule->state();
    if (!lr_state.empty()) sub.write("lr_state", torch::tensor(lr_state, torch::kDouble));
    if (e.torch_opt) {
      e.torch_opt->save(sub);
    } else {
      for (size_t j = 0; j < e.params.size(); ++j) {
        if (!e.mean_square[j].defined()) continue;
        sub.write("mean_square_" + std::to_string(j), e.mean_square[j]);
        sub.write("moment_" + std::to_string(j), e.moment[j]);
      }
    }
    archive.write("optimizer_" + std::to_string(i), sub);
  }
}

void OptimizerSet::load(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (!archive.try_read("optim_format_version", t))
    throw Error("the checkpoint holds no optimizer state (key optim_format_version missing)");
  const int64_t version = t.item<int64_t>();
  if (version < 1 || version > kOptimFormatVersion)
    throw Error("optimizer state format version " + std::to_string(version) +
                " is not supported by this featlearn (supports 1.." + std::to_string(kOptimFormatVersion) + ")");
  archive.read("num_optimizers", t);
  const int64_t n = t.item<int64_t>();
  if (n != static_cast<int64_t>(entries_.size()))
    throw Error("the checkpoint holds " + std::to_string(n) + " optimizer(s) but the config defines " +
                std::to_string(entries_.size()) + "; resume with the Optimizer section the run was started with");
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = *entries_[i];
    torch::serialize::InputArchive sub;
    archive.read("optimizer_" + std::to_string(i), sub);
    c10::IValue name;
    sub.read("name", name);
    if (name.toStringRef() != e.name)
      throw Error("optimizer " + std::to_string(i) + " in the checkpoint is " + name.toStringRef() +
                  " but the config has " + e.name + " (scope '" + e.scope + "')");
    sub.read("param_numels", t);
    t = t.to(torch::kCPU);
    if (t.numel() != static_cast<int64_t>(e.params.size()))
      throw Error("optimizer " + std::to_string(i) + " (" + e.name + ", scope '" + e.scope + "'): the checkpoint has " +
                  std::to_string(t.numel()) + " parameters, the model has " + std::to_string(e.params.size()));
    for (size_t j = 0; j < e.params.size(); ++j)
      if (t[j].item<int64_t>() != e.params[j].numel())
        throw Error("optimizer " + std::to_string(i) + " (" + e.name + "): parameter '" + e.param_names[j] +
                    "' has " + std::to_string(e.params[j].numel()) + " elements but its saved state has " +
                    std::to_string(t[j].item<int64_t>()));
    const size_t lr_state_size = e.schedule->state().size();
    if (lr_state_size > 0) {
      torch::Tensor st;
      if (!sub.try_read("lr_state", st) || st.numel() != static_cast<int64_t>(lr_state_size))
        throw Error("optimizer " + std::to_string(i) + " (" + e.name + ", scope '" + e.scope +
                    "'): the checkpoint holds no state for its learning-rate schedule " + e.schedule->describe() +
                    "; resume with the Optimizer section the run was started with");
      st = st.to(torch::kCPU, torch::kDouble).contiguous();
      e.schedule->set_state(std::vector<double>(st.data_ptr<double>(), st.data_ptr<double>() + st.numel()));
    }
    if (e.torch_opt) {
      e.torch_opt->load(sub);
      move_state_to(*e.torch_opt, e.params.empty() ? torch::Device(torch::kCPU) : e.params.front().device());
      // The saved group options (betas, weight decay, ...) give way to the config's; lr is set every step.
      auto& groups = e.torch_opt->param_groups();
      FL_ASSERT(groups.size() == e.group_options.size(), "param group count changed");
      for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(e.group_options[g]->clone());
    } else {
      for (size_t j = 0; j < e.params.size(); ++j) {
        torch::Tensor ms, mom;
        if (!sub.try_read("mean_square_" + std::to_string(j), ms) || !sub.try_read("moment_" + std::to_string(j), mom)) {
          e.mean_square[j] = torch::Tensor();
          e.moment[j] = torch::Tensor();
          continue;
        }
        const auto& p = e.params[j];
        e.mean_square[j] = ms.to(p.device(), p.scalar_type()).clone();
        e.moment[j] = mom.to(p.device(), p.scalar_type()).clone();
      }
    }
  }
  archive.read("iteration", t);
  iteration_ = t.item<int64_t>();
}

}  // namespace featlearn
