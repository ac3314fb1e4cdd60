// Abstract bases for the RecModel slots (Arch.Backbone, Arch.Neck, Arch.Head) and their registries.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <featlearn/config/registry.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

// What RecModel::forward returns (docs/architecture.md, "Model output"). `neck` and `logits` are undefined tensors when absent.
struct ModelOutput {
  torch::Tensor backbone;  // backbone output (after BackboneStopLayer)
  torch::Tensor neck;      // neck output, if a Neck exists
  torch::Tensor features;  // neck output, else backbone output
  torch::Tensor logits;    // Head(features or backbone per head_feature_from, label), if a Head exists
  // By name: "backbone", "neck", "features", "logits"; throws Error for an absent/unknown key.
  const torch::Tensor& get(const std::string& key) const;
  // DistillationModel (model/distillation_model.h): every sub-model's output by name, in Arch.models order;
  // the four tensors above are then the infer_model_name model's. Empty for a RecModel.
  std::vector<std::pair<std::string, ModelOutput>> models;
  // The sub-model output `name`; throws Error naming the models there are.
  const ModelOutput& model(const std::string& name) const;
};

// A backbone network. Children are registered in execution order so that BackboneStopLayer can truncate
// "after the named sub-layer" (see model/stop_layer.h).
class BackboneImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Extra names accepted by BackboneStopLayer, mapped to module paths (e.g. PaddleClas-style "avg_pool" ->
  // "avgpool", "blocks[3]" -> "layer1.2"). Default: none.
  virtual std::map<std::string, std::string> stop_layer_aliases() const { return {}; }
};

class NeckImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

class HeadImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  // `label` is an undefined tensor in eval / inference: margin heads then return plain scaled cosine logits.
  virtual torch::Tensor forward(torch::Tensor features, torch::Tensor label) = 0;
};

using BackbonePtr = std::shared_ptr<BackboneImpl>;
using NeckPtr = std::shared_ptr<NeckImpl>;
using HeadPtr = std::shared_ptr<HeadImpl>;

// Factories receive the component's own node (e.g. Arch.Head) and must call check_keys() on it.
Registry<BackbonePtr>& backbone_registry();  // slot "Arch.Backbone"
Registry<NeckPtr>& neck_registry();          // slot "Arch.Neck"
Registry<HeadPtr>& head_registry();          // slot "Arch.Head"

// Fill the registries (idempotent). Defined next to the components in src/model/.
void register_builtin_backbones();
void register_builtin_necks();
void register_builtin_heads();
inline void register_builtin_models() {
  register_builtin_backbones();
  register_builtin_necks();
  register_builtin_heads();
}

}  // namespace featlearn
