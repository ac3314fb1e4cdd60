#include <featlearn/model/module_base.h>

namespace featlearn {

const torch::Tensor& ModelOutput::get(const std::string& key) const {
  const torch::Tensor* t = nullptr;
  if (key == "backbone") t = &backbone;
  else if (key == "neck") t = &neck;
  else if (key == "features") t = &features;
  else if (key == "logits") t = &logits;
  else
    throw Error("unknown model output '" + key + "'" +
                did_you_mean(key, {"backbone", "neck", "features", "logits"}) +
                " (valid: backbone, neck, features, logits)");
  if (!t->defined()) throw Error("model output '" + key + "' is not available (the model has no " + key + ")");
  return *t;
}

const ModelOutput& ModelOutput::model(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& m : models) {
    if (m.first == name) return m.second;
    names.push_back(m.first);
  }
  if (names.empty())
    throw Error("model output '" + name + "' is not available: the model is a RecModel, not a DistillationModel");
  throw Error("no model named '" + name + "' in the DistillationModel" + did_you_mean(name, names) +
              " (models: " + join(names) + ")");
}

Registry<BackbonePtr>& backbone_registry() {
  static Registry<BackbonePtr> r("Arch.Backbone");
  return r;
}
Registry<NeckPtr>& neck_registry() {
  static Registry<NeckPtr> r("Arch.Neck");
  return r;
}
Registry<HeadPtr>& head_registry() {
  static Registry<HeadPtr> r("Arch.Head");
  return r;
}

}  // namespace featlearn
