// Losses (docs/architecture.md, "Losses"): the `Loss.Train` / `Loss.Eval` lists of PaddleClas configs.
//
//   Loss:
//     Train:
//       - CELoss: {weight: 1.0, epsilon: 0.1}
//       - SupConLoss: {weight: 1.0, views: 2}
//
// Every loss is a LossImpl (a LibTorch module, so trainable state such as CenterLoss centers or XBM memory
// lives in checkpoints) created by name from loss_registry(). CombinedLoss builds the whole list; the total is
// Σ weight·loss. The formulas are in losses.h, where each loss is also a plain function of tensors.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <featlearn/config/registry.h>
#include <featlearn/model/module_base.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

class LossImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  // requires: `labels` is [N] or [N, 1] integer ids of the batch whose model output is `out`.
  // ensures: returns a scalar tensor (differentiable w.r.t. the inputs it reads and its own parameters).
  virtual torch::Tensor forward(const ModelOutput& out, const torch::Tensor& labels) = 0;
  // The loss as named terms, each a scalar, whose sum is forward(): the Distillation* losses have one term per
  // model or model pair, named as PaddleClas's loss dict ("CELoss_Student"). Default: one unnamed term.
  virtual std::vector<std::pair<std::string, torch::Tensor>> forward_terms(const ModelOutput& out,
                                                                           const torch::Tensor& labels) {
    return {{"", forward(out, labels)}};
  }
  // The DistillationModel sub-models this loss reads (ModelOutput::models); empty: it reads one model's output.
  virtual std::vector<std::string> model_names() const { return {}; }
};
using LossPtr = std::shared_ptr<LossImpl>;

// Slot "Loss". Factories get the loss's own param node (e.g. Loss.Train[0].CELoss), call check_keys() on it
// (every loss accepts `weight`, which CombinedLoss reads) and throw ConfigError for bad values.
Registry<LossPtr>& loss_registry();
// Fills loss_registry() with CELoss, SupConLoss, TripletLoss, TripletLossV2, CenterLoss, PairwiseCosface,
// TripletAngularMarginLoss, TripletAngularMarginLoss_XBM, ContrastiveLoss, ContrastiveLoss_XBM, MSMLoss,
// EmlLoss, NpairsLoss, and the distillation losses (distillation_losses.h). Idempotent.
void register_builtin_losses();

// Config readers shared by the loss factories. `key` names a model output (backbone|neck|features|logits);
// an empty default makes the key required.
std::string read_model_output(const ConfigNode& p, const std::string& key, const std::string& default_value);
// `reduction`: mean (default) or sum; none is refused (a training loss must be a scalar).
std::string read_loss_reduction(const ConfigNode& p);

// A Loss.Train / Loss.Eval list: `- Name: {weight: w, ...params}` entries; total = Σ weight·loss.
// `weight` defaults to 1.0 (PaddleClas requires it). Unlike PaddleClas, the weight is applied also when the
// list holds a single loss. Each loss is a submodule registered under its config name (a repeated name gets
// a suffix: "CELoss_2"), so a state dict holds e.g. "CenterLoss.centers".
class CombinedLossImpl : public torch::nn::Module {
 public:
  // `list`: the list node, e.g. cfg["Loss"]["Train"]. Calls register_builtin_losses().
  explicit CombinedLossImpl(const ConfigNode& list);

  struct Result {
    torch::Tensor total;                                          // scalar Σ weight·term
    // unweighted, by config name, list order; a loss with named terms gives "<config name>.<term>" each
    std::vector<std::pair<std::string, torch::Tensor>> terms;
  };
  Result forward(const ModelOutput& out, const torch::Tensor& labels);

  std::vector<std::string> names() const;
  std::vector<double> weights() const;
  // The trainable parameters of one loss (e.g. CenterLoss centers, for an optimizer `scope`); empty for
  // losses without parameters. Throws Error for a name not in the list.
  std::vector<torch::Tensor> parameters_of(const std::string& loss_name) const;
  // The loss module itself (throws Error for a name not in the list).
  LossPtr loss(const std::string& loss_name) const;
  // Checks that every loss fits the model: `model_names` are a DistillationModel's sub-models (empty for a
  // RecModel). A Distillation* loss needs a DistillationModel that has the models it names; any other loss
  // needs a RecModel. Throws ConfigError naming the loss's config line.
  void check_models(const std::vector<std::string>& model_names) const;

 private:
  struct Entry {
    std::string name;
    double weight;
    LossPtr loss;
    std::string where;  // the list item's "file:line: path", for check_models
  };
  const Entry& entry(const std::string& loss_name) const;
  std::vector<Entry> entries_;
};
TORCH_MODULE(CombinedLoss);

}  // namespace featlearn
