// RecModel (Arch, name: RecModel): Backbone [-> BackboneStopLayer] [-> Neck] [-> Head], as PaddleClas's
// ppcls/arch RecModel.
//
// Arch keys:
//   name               must be RecModel
//   Backbone           {name, ...} (backbone_registry(); see resnet.h, mobilenet_v3.h), required
//   BackboneStopLayer  {name}: truncation (stop_layer.h), optional
//   Neck               {name, ...} (neck_registry()), optional; `Neck: null` means no neck
//   Head               {name, ...} (head_registry()), optional
//   infer_output_key   output of the exported model: features (default) | logits | backbone | neck
//   infer_add_softmax  softmax on the exported output (default False)
//   head_feature_from  head input: features (default) | backbone
// Submodules are registered as "backbone", "neck", "head" (state-dict names backbone.layer1.0.conv1.weight, ...).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <featlearn/config/config.h>
#include <featlearn/model/arch.h>
#include <featlearn/model/module_base.h>

#include <string>

namespace featlearn {

class RecModelImpl : public ArchModelImpl {
 public:
  // `arch` is the Arch node. Calls register_builtin_models(). Throws ConfigError naming the key and line.
  // `image_shape` is Global.image_shape (C x H x W, may be empty): the input the BackboneStopLayer.output_dim
  // check probes with.
  explicit RecModelImpl(const ConfigNode& arch, const std::vector<int64_t>& image_shape = {});
  // images: [N, C, H, W]. labels: [N] int64, or undefined (eval / inference: heads without a label).
  ModelOutput forward(torch::Tensor images, torch::Tensor labels = {}) override;
  std::string arch_name() const override { return "RecModel"; }
  RecModelImpl& infer_model() override { return *this; }

  BackbonePtr backbone() const { return backbone_; }
  NeckPtr neck() const { return neck_; }  // nullptr if absent
  HeadPtr head() const { return head_; }  // nullptr if absent
  const std::string& infer_output_key() const override { return infer_output_key_; }
  bool infer_add_softmax() const override { return infer_add_softmax_; }
  const std::string& head_feature_from() const { return head_feature_from_; }

 private:
  BackbonePtr backbone_;
  NeckPtr neck_;
  HeadPtr head_;
  std::string infer_output_key_ = "features";
  bool infer_add_softmax_ = false;
  std::string head_feature_from_ = "features";
};
TORCH_MODULE(RecModel);

}  // namespace featlearn
