// Distillation losses (docs/architecture.md, "Distillation"): formulas in distillation_losses.h.
#include <featlearn/loss/distillation_losses.h>

#include <torch/torch.h>

#include <fmt/format.h>

namespace featlearn {

namespace {

torch::Tensor sum_terms(const std::vector<std::pair<std::string, torch::Tensor>>& terms) {
  torch::Tensor total;
  for (const auto& t : terms) total = total.defined() ? total + t.second : t.second;
  return total;
}

std::vector<std::string> names_of_pairs(const ModelPairs& pairs) {
  std::vector<std::string> names;
  for (const auto& p : pairs)
    for (const auto& n : {p.first, p.second})
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  return names;
}

// PaddleClas's activations over the last axis; "" = none.
torch::Tensor activate(const torch::Tensor& x, const std::string& act) {
  if (act == "softmax") return torch::softmax(x, -1);
  if (act == "sigmoid") return torch::sigmoid(x);
  return x;
}

// `- [Student, Teacher]` entries.
ModelPairs read_model_pairs(const ConfigNode& p) {
  const ConfigNode list = p["model_name_pairs"];
  if (!list.defined()) p.fail("missing required key 'model_name_pairs' (e.g. [[Student, Teacher]])");
  if (!list.is_seq() || list.size() == 0) list.fail("expected a non-empty list of [model, model] pairs");
  ModelPairs pairs;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto pair = list.at(i).as<std::vector<std::string>>();
    if (pair.size() != 2) list.at(i).fail(fmt::format("expected a pair of model names, got {} names", pair.size()));
    pairs.emplace_back(pair[0], pair[1]);
  }
  return pairs;
}

std::string read_act(const ConfigNode& p, const std::string& default_value) {
  const ConfigNode n = p["act"];
  if (!n.defined()) return default_value;  // null = no activation
  const std::string v = n.as<std::string>();
  if (v != "softmax" && v != "sigmoid")
    n.fail("expected softmax, sigmoid or null, got '" + v + "'" + did_you_mean(v, {"softmax", "sigmoid"}));
  return v;
}

}  // namespace

torch::Tensor dml_loss(const torch::Tensor& x, const torch::Tensor& target, const DMLLossOptions& options) {
  if (!x.defined() || !target.defined() || x.sizes() != target.sizes() || x.dim() < 1)
    throw Error("DMLLoss: the two model outputs must have the same shape, got " +
                (x.defined() ? c10::str(x.sizes()) : std::string("none")) + " and " +
                (target.defined() ? c10::str(target.sizes()) : std::string("none")));
  const torch::Tensor p = activate(x, options.act()), q = activate(target, options.act());
  const double c = static_cast<double>(x.size(-1)), eps = options.eps();
  auto kl = [&](const torch::Tensor& a, const torch::Tensor& b) { return b * torch::log((b + eps) / (a + eps)) * c; };
  const torch::Tensor loss = (kl(p, q) + kl(q, p)) / 2;
  return options.sum_across_class_dim() ? loss.sum(-1).mean() : loss.mean();
}

torch::Tensor distance_loss(const torch::Tensor& x, const torch::Tensor& y, const DistanceLossOptions& options) {
  const std::string name = "DistanceLoss(" + options.mode() + ")";
  if (!x.defined() || !y.defined() || x.sizes() != y.sizes())
    throw Error(name + ": the two model outputs must have the same shape, got " +
                (x.defined() ? c10::str(x.sizes()) : std::string("none")) + " and " +
                (y.defined() ? c10::str(y.sizes()) : std::string("none")));
  const auto reduction = options.reduction() == "sum" ? at::Reduction::Sum : at::Reduction::Mean;
  if (options.mode() == "l1") return torch::l1_loss(x, y, reduction);
  if (options.mode() == "l2") return torch::mse_loss(x, y, reduction);
  FL_ASSERT(options.mode() == "smooth_l1", "unknown DistanceLoss mode " + options.mode());
  return torch::huber_loss(x, y, reduction, options.delta());
}

DistillationGTCELossImpl::DistillationGTCELossImpl(std::vector<std::string> model_names, CELossOptions ce,
                                                   std::string key)
    : models(std::move(model_names)), ce(std::move(ce)), key(std::move(key)) {}

std::vector<std::pair<std::string, torch::Tensor>> DistillationGTCELossImpl::forward_terms(const ModelOutput& out,
                                                                                         const torch::Tensor& labels) {
  std::vector<std::pair<std::string, torch::Tensor>> terms;
  for (const auto& m : models) terms.emplace_back("CELoss_" + m, ce_loss(out.model(m).get(key), labels, ce));
  return terms;
}

torch::Tensor DistillationGTCELossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return sum_terms(forward_terms(out, labels));
}

DistillationDMLLossImpl::DistillationDMLLossImpl(ModelPairs pairs, DMLLossOptions dml, std::string key)
    : pairs(std::move(pairs)), dml(std::move(dml)), key(std::move(key)) {}

std::vector<std::pair<std::string, torch::Tensor>> DistillationDMLLossImpl::forward_terms(const ModelOutput& out,
                                                                                        const torch::Tensor&) {
  std::vector<std::pair<std::string, torch::Tensor>> terms;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& [a, b] = pairs[i];
    terms.emplace_back(fmt::format("DMLLoss_{}_{}_{}", a, b, i), dml_loss(out.model(a).get(key), out.model(b).get(key), dml));
  }
  return terms;
}

torch::Tensor DistillationDMLLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return sum_terms(forward_terms(out, labels));
}

std::vector<std::string> DistillationDMLLossImpl::model_names() const { return names_of_pairs(pairs); }

DistillationDistanceLossImpl::DistillationDistanceLossImpl(ModelPairs pairs, DistanceLossOptions distance,
                                                           std::string key, std::string act, std::string name)
    : pairs(std::move(pairs)), distance(std::move(distance)), key(std::move(key)), act(std::move(act)),
      name(std::move(name)) {}

std::vector<std::pair<std::string, torch::Tensor>> DistillationDistanceLossImpl::forward_terms(
    const ModelOutput& out, const torch::Tensor&) {
  std::vector<std::pair<std::string, torch::Tensor>> terms;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& [a, b] = pairs[i];
    const torch::Tensor x = activate(out.model(a).get(key), act), y = activate(out.model(b).get(key), act);
    terms.emplace_back(fmt::format("{}{}_loss_{}_{}", name, distance.mode(), distance.mode(), i),
                       distance_loss(x, y, distance));
  }
  return terms;
}

torch::Tensor DistillationDistanceLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  return sum_terms(forward_terms(out, labels));
}

std::vector<std::string> DistillationDistanceLossImpl::model_names() const { return names_of_pairs(pairs); }

void register_distillation_losses() {
  auto& r = loss_registry();
  if (r.contains("DistillationGTCELoss")) return;

  r.add("DistillationGTCELoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "model_names", "epsilon", "key"});
    const auto names = p.require<std::vector<std::string>>("model_names");
    if (names.empty()) p["model_names"].fail("expected at least one model name");
    // PaddleClas: epsilon null or outside (0, 1) means no smoothing (CELoss).
    const double eps = p.optional<double>("epsilon").value_or(0.0);
    return std::make_shared<DistillationGTCELossImpl>(names, CELossOptions().epsilon(eps),
                                                      read_model_output(p, "key", "logits"));
  });

  r.add("DistillationDMLLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "model_name_pairs", "act", "weight_ratio", "sum_across_class_dim", "key"});
    if (p.get<bool>("weight_ratio", false))
      p["weight_ratio"].fail("True weights a multi-label DML by label ratios ([N, 2, C] labels); featlearn's "
                             "labels are class ids, so only False is supported");
    return std::make_shared<DistillationDMLLossImpl>(
        read_model_pairs(p),
        DMLLossOptions().act(read_act(p, p.has("act") ? "" : "softmax"))
            .sum_across_class_dim(p.get<bool>("sum_across_class_dim", false)),
        read_model_output(p, "key", ""));
  });

  r.add("DistillationDistanceLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "mode", "model_name_pairs", "act", "key", "name", "reduction", "delta"});
    const std::string mode = p.get<std::string>("mode", "l2");
    if (mode != "l1" && mode != "l2" && mode != "smooth_l1")
      p["mode"].fail("expected l1, l2 or smooth_l1, got '" + mode + "'" + did_you_mean(mode, {"l1", "l2", "smooth_l1"}));
    if (p["delta"].defined() && mode != "smooth_l1")
      p["delta"].fail("only mode: smooth_l1 takes delta (Paddle's L1Loss and MSELoss have none)");
    const double delta = p.get<double>("delta", 1.0);
    if (!(delta > 0)) p["delta"].fail("must be positive, got " + std::to_string(delta));
    return std::make_shared<DistillationDistanceLossImpl>(
        read_model_pairs(p), DistanceLossOptions().mode(mode).reduction(read_loss_reduction(p)).delta(delta),
        read_model_output(p, "key", ""), read_act(p, ""), p.get<std::string>("name", "loss_"));
  });
}

}  // namespace featlearn
