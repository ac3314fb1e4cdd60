// Distillation losses for Arch.name: DistillationModel (docs/architecture.md, "Distillation"), with
// PaddleClas's names, keys and defaults (ppcls/loss/distillationloss.py, dmlloss.py, distanceloss.py).
//
// They read ModelOutput::models (one entry per sub-model) and give one term per model or model pair, named
// like PaddleClas's loss dict; CombinedLoss weights every term with the entry's `weight` and sums them.
// Gradients reach both models of a pair (no detach), as in PaddleClas: a model that must not learn is frozen
// with Arch.freeze_params_list.
#pragma once
#include <torch/arg.h>

#include <featlearn/loss/loss.h>
#include <featlearn/loss/losses.h>

#include <string>
#include <utility>
#include <vector>

namespace featlearn {

using ModelPairs = std::vector<std::pair<std::string, std::string>>;

// ---- DMLLoss (deep mutual learning): symmetric KL divergence ------------------------------------------------
struct DMLLossOptions {
  // "softmax" (over the last axis), "sigmoid" or "" (inputs used as they are).
  TORCH_ARG(std::string, act) = "softmax";
  // false: mean over every element; true: sum over the last axis, mean over the rest.
  TORCH_ARG(bool, sum_across_class_dim) = false;
  TORCH_ARG(double, eps) = 1e-12;
};
// p = act(x), q = act(target), C = the last dimension:
//   kl(a, b) = b · log((b + eps) / (a + eps)) · C   (element-wise)
//   loss = reduce((kl(p, q) + kl(q, p)) / 2)
// (PaddleClas's formula, including the factor C and eps inside the log). Both inputs get gradients.
torch::Tensor dml_loss(const torch::Tensor& x, const torch::Tensor& target, const DMLLossOptions& options = {});

// ---- DistanceLoss: Paddle's L1Loss / MSELoss / SmoothL1Loss -------------------------------------------------
struct DistanceLossOptions {
  // "l1": |x − y|; "l2": (x − y)²; "smooth_l1": Huber, 0.5·d² if |d| < delta else delta·|d| − 0.5·delta².
  TORCH_ARG(std::string, mode) = "l2";
  // "mean" over every element, or "sum".
  TORCH_ARG(std::string, reduction) = "mean";
  // smooth_l1 only; > 0.
  TORCH_ARG(double, delta) = 1.0;
};
torch::Tensor distance_loss(const torch::Tensor& x, const torch::Tensor& y, const DistanceLossOptions& options = {});

// ---- DistillationGTCELoss: CELoss against the ground-truth labels, per model ----------------------------------
// Terms "CELoss_<model>". `key`: the model output read (PaddleClas's default null = CELoss's "logits").
class DistillationGTCELossImpl : public LossImpl {
 public:
  DistillationGTCELossImpl(std::vector<std::string> model_names, CELossOptions ce, std::string key = "logits");
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  std::vector<std::pair<std::string, torch::Tensor>> forward_terms(const ModelOutput& out,
                                                                   const torch::Tensor& labels) override;
  std::vector<std::string> model_names() const override { return models; }
  std::vector<std::string> models;
  CELossOptions ce;
  std::string key;
};

// ---- DistillationDMLLoss: dml_loss(pair.first's key, pair.second's key) per pair -----------------------------
// Terms "DMLLoss_<first>_<second>_<index of the pair>".
class DistillationDMLLossImpl : public LossImpl {
 public:
  DistillationDMLLossImpl(ModelPairs pairs, DMLLossOptions dml, std::string key);
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  std::vector<std::pair<std::string, torch::Tensor>> forward_terms(const ModelOutput& out,
                                                                   const torch::Tensor& labels) override;
  std::vector<std::string> model_names() const override;
  ModelPairs pairs;
  DMLLossOptions dml;
  std::string key;
};

// ---- DistillationDistanceLoss: distance_loss(act(first's key), act(second's key)) per pair ------------------
// `act`: "" (none), "sigmoid" or "softmax" (last axis). Terms "<name><mode>_loss_<mode>_<index of the pair>"
// (PaddleClas's default name "loss_" gives "loss_l2_loss_l2_0").
class DistillationDistanceLossImpl : public LossImpl {
 public:
  DistillationDistanceLossImpl(ModelPairs pairs, DistanceLossOptions distance, std::string key, std::string act = "",
                               std::string name = "loss_");
  torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) override;
  std::vector<std::pair<std::string, torch::Tensor>> forward_terms(const ModelOutput& out,
                                                                   const torch::Tensor& labels) override;
  std::vector<std::string> model_names() const override;
  ModelPairs pairs;
  DistanceLossOptions distance;
  std::string key, act, name;
};

// Adds DistillationGTCELoss, DistillationDMLLoss and DistillationDistanceLoss to loss_registry() (called by
// register_builtin_losses()).
void register_distillation_losses();

}  // namespace featlearn
