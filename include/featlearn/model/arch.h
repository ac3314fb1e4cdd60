// The model an `Arch` section builds: a RecModel, or a DistillationModel of several RecModels
// (docs/architecture.md, "Distillation"). The engine trains, evaluates, checkpoints and exports through this
// interface.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <featlearn/config/config.h>
#include <featlearn/model/module_base.h>

#include <memory>
#include <string>
#include <vector>

namespace featlearn {

class RecModelImpl;

class ArchModelImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  // images: [N, C, H, W]. labels: [N] int64, or undefined (eval / inference).
  virtual ModelOutput forward(torch::Tensor images, torch::Tensor labels = {}) = 0;
  // "RecModel" or "DistillationModel": Arch.name, the optimizer scope of the whole model.
  virtual std::string arch_name() const = 0;
  // The RecModel that evaluation and export use: the model itself, or DistillationModel's infer_model_name.
  virtual RecModelImpl& infer_model() = 0;
  // The sub-model names (DistillationModel, Arch.models order); empty for a RecModel.
  virtual std::vector<std::string> model_names() const { return {}; }
  // What export outputs (Arch.infer_output_key / infer_add_softmax).
  virtual const std::string& infer_output_key() const = 0;
  virtual bool infer_add_softmax() const = 0;
};
using ArchModelPtr = std::shared_ptr<ArchModelImpl>;

// Builds Arch by its `name` (RecModel | DistillationModel); other names are errors naming the valid ones.
// `image_shape` is Global.image_shape (see RecModelImpl).
ArchModelPtr build_arch(const ConfigNode& arch, const std::vector<int64_t>& image_shape = {});

// The Arch node of the model export writes: Arch itself for a RecModel, the infer_model_name entry of
// Arch.models for a DistillationModel.
ConfigNode infer_arch_node(const ConfigNode& arch);

}  // namespace featlearn
