// DistillationModel (Arch, name: DistillationModel): several RecModels run on the same images, as
// PaddleClas's ppcls/arch DistillationModel (docs/architecture.md, "Distillation").
//
//   Arch:
//     name: DistillationModel
//     infer_model_name: Student
//     infer_output_key: features
//     freeze_params_list: [True, False]
//     pretrained_list: [output/RecModel/best_model, null]
//     models:
//       - Teacher: {name: RecModel, Backbone: {...}, Neck: {...}, Head: {...}}
//       - Student: {name: RecModel, ...}
//
// Arch keys:
//   name                must be DistillationModel
//   models              required, non-empty list of `- Name: {RecModel Arch keys}`; the names are the
//                       sub-module names (state-dict names Student.backbone...) and must be distinct
//   freeze_params_list  null (default: none frozen) or one bool per model: a frozen model's parameters get no
//                       gradient, so no optimizer changes them; the model still follows train/eval mode
//                       (batch-norm running statistics update in training), as PaddleClas
//   pretrained_list     null (default) or one entry per model: null or a featlearn checkpoint prefix of that
//                       model alone (a RecModel run's best_model), loaded by the engine after building
//   infer_model_name    the model that evaluation and export use (default Student; must be in models)
//   is_rec              pass the labels to the models in training (default False, as PaddleClas: margin
//                       heads then see no label)
//   infer_output_key    what export outputs (default: the infer model's own infer_output_key); when both are
//                       set they must agree
//   infer_add_softmax   softmax on the exported output (default: the infer model's own); both set: must agree
#pragma once
#include <featlearn/model/arch.h>
#include <featlearn/model/rec_model.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

class DistillationModelImpl : public ArchModelImpl {
 public:
  // `arch` is the Arch node. Throws ConfigError naming the key and line.
  explicit DistillationModelImpl(const ConfigNode& arch, const std::vector<int64_t>& image_shape = {});
  // ensures: out.models holds every model's output (Arch.models order), each model given `labels` when is_rec;
  // out's own tensors are the infer model's.
  ModelOutput forward(torch::Tensor images, torch::Tensor labels = {}) override;
  std::string arch_name() const override { return "DistillationModel"; }
  RecModelImpl& infer_model() override { return *models_[infer_index_].second; }
  std::vector<std::string> model_names() const override;
  const std::string& infer_output_key() const override { return infer_output_key_; }
  bool infer_add_softmax() const override { return infer_add_softmax_; }

  // The sub-model `name` (throws Error for an unknown name).
  RecModel model(const std::string& name) const;
  const std::string& infer_model_name() const { return models_[infer_index_].first; }
  bool frozen(const std::string& name) const;
  bool is_rec() const { return is_rec_; }
  // (model name, checkpoint prefix) for every non-null pretrained_list entry.
  const std::vector<std::pair<std::string, std::string>>& pretrained() const { return pretrained_; }

 private:
  size_t index_of(const std::string& name) const;
  std::vector<std::pair<std::string, RecModel>> models_;
  std::vector<bool> frozen_;
  std::vector<std::pair<std::string, std::string>> pretrained_;
  size_t infer_index_ = 0;
  bool is_rec_ = false;
  std::string infer_output_key_;
  bool infer_add_softmax_ = false;
};
TORCH_MODULE(DistillationModel);

}  // namespace featlearn
