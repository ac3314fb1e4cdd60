#include <featlearn/model/rec_model.h>

#include <featlearn/model/stop_layer.h>

#include <torch/torch.h>

namespace featlearn {

RecModelImpl::RecModelImpl(const ConfigNode& arch, const std::vector<int64_t>& image_shape) {
  if (!arch.is_map()) arch.fail("expected a map (name: RecModel, Backbone, ...)");
  arch.check_keys({"name", "Backbone", "BackboneStopLayer", "Neck", "Head", "infer_output_key",
                   "infer_add_softmax", "head_feature_from", "is_rec", "use_sync_bn"});
  // PaddleClas converts BatchNorm to SyncBatchNorm across processes; with one process the two are the same
  // (docs/config.md, "Arch"), so the key is only type-checked.
  arch.get<bool>("use_sync_bn", false);
  const std::string name = arch.require<std::string>("name");
  if (name != "RecModel")
    arch["name"].fail("unsupported architecture '" + name +
                      "': featlearn builds RecModel (feature learning) models, alone or as DistillationModel.models; set "
                      "name: RecModel");
  register_builtin_models();
  if (!arch["Backbone"].defined()) arch.fail("missing required key 'Backbone'");
  backbone_ = register_module("backbone", build_backbone(arch["Backbone"], arch["BackboneStopLayer"], image_shape));
  if (arch["Neck"].defined()) neck_ = register_module("neck", neck_registry().create_named(arch["Neck"]));
  if (arch["Head"].defined()) head_ = register_module("head", head_registry().create_named(arch["Head"]));

  infer_output_key_ = arch.get<std::string>("infer_output_key", "features");
  const std::vector<std::string> keys = {"features", "logits", "backbone", "neck"};
  if (std::find(keys.begin(), keys.end(), infer_output_key_) == keys.end())
    arch["infer_output_key"].fail("must be one of " + join(keys) + did_you_mean(infer_output_key_, keys));
  if (infer_output_key_ == "logits" && !head_) arch["infer_output_key"].fail("logits needs an Arch.Head");
  if (infer_output_key_ == "neck" && !neck_) arch["infer_output_key"].fail("neck needs an Arch.Neck");
  infer_add_softmax_ = arch.get<bool>("infer_add_softmax", false);
  // PaddleClas's engine passes the labels to the model when Arch has a Head or is_rec: True; without a Head
  // RecModel does not read them, so both values mean the same here (docs/config.md, "Arch").
  arch.get<bool>("is_rec", true);
  // PaddleClas's default value is "neck": the neck output, or the backbone's when there is no neck, which is
  // what featlearn calls "features".
  head_feature_from_ = arch.get<std::string>("head_feature_from", "features");
  if (head_feature_from_ == "neck") head_feature_from_ = "features";
  if (head_feature_from_ != "features" && head_feature_from_ != "backbone")
    arch["head_feature_from"].fail("must be neck (= features), features or backbone" +
                                   did_you_mean(head_feature_from_, {"neck", "features", "backbone"}));
}

ModelOutput RecModelImpl::forward(torch::Tensor images, torch::Tensor labels) {
  ModelOutput out;
  out.backbone = backbone_->forward(images);
  out.features = out.backbone;
  if (neck_) {
    out.neck = neck_->forward(out.backbone);
    out.features = out.neck;
  }
  if (head_) out.logits = head_->forward(head_feature_from_ == "backbone" ? out.backbone : out.features, labels);
  return out;
}

}  // namespace featlearn
