// DistillationModel and build_arch (docs/architecture.md, "Distillation").
#include <featlearn/model/distillation_model.h>

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>

namespace featlearn {

namespace {
const std::vector<std::string> kArchNames = {"RecModel", "DistillationModel"};
const std::vector<std::string> kInferOutputKeys = {"features", "logits", "backbone", "neck"};
}  // namespace

DistillationModelImpl::DistillationModelImpl(const ConfigNode& arch, const std::vector<int64_t>& image_shape) {
  if (!arch.is_map()) arch.fail("expected a map (name: DistillationModel, models, ...)");
  arch.check_keys({"name", "models", "pretrained_list", "freeze_params_list", "infer_model_name", "is_rec",
                   "infer_output_key", "infer_add_softmax"});
  if (arch.require<std::string>("name") != "DistillationModel") arch["name"].fail("must be DistillationModel");
  const ConfigNode models = arch["models"];
  if (!models.defined()) arch.fail("missing required key 'models' (a list of `- Student: {name: RecModel, ...}`)");
  if (!models.is_seq() || models.size() == 0)
    models.fail("expected a non-empty list of `- ModelName: {name: RecModel, ...}` entries");
  // One entry per model, or null; PaddleClas asserts the lengths.
  auto per_model = [&](const char* key) -> std::optional<ConfigNode> {
    const ConfigNode n = arch[key];
    if (!n.defined()) return std::nullopt;
    if (!n.is_seq() || n.size() != models.size())
      n.fail(fmt::format("expected a list with one entry per model ({}), or null", models.size()));
    return n;
  };
  const auto freeze = per_model("freeze_params_list");
  const auto pretrained = per_model("pretrained_list");
  for (size_t i = 0; i < models.size(); ++i) {
    const auto [name, node] = models.at(i).single_entry();
    if (name.empty() || name.find('.') != std::string::npos)
      models.at(i).fail("model name '" + name + "' must be non-empty and contain no '.' (it names the sub-module)");
    for (const auto& m : models_)
      if (m.first == name) models.at(i).fail("model name '" + name + "' appears twice in models");
    RecModel m(node, image_shape);
    register_module(name, m);
    const bool frozen = freeze && freeze->at(i).as<bool>();
    if (frozen)
      for (auto& p : m->parameters()) p.requires_grad_(false);
    frozen_.push_back(frozen);
    if (pretrained && pretrained->at(i).defined()) pretrained_.emplace_back(name, pretrained->at(i).as<std::string>());
    models_.emplace_back(name, m);
  }
  const auto names = model_names();
  const std::string infer_name = arch.get<std::string>("infer_model_name", "Student");
  const auto it = std::find(names.begin(), names.end(), infer_name);
  if (it == names.end()) {
    const ConfigNode where = arch["infer_model_name"].defined() ? arch["infer_model_name"] : arch;
    where.fail("infer_model_name '" + infer_name + "' is not one of the models" + did_you_mean(infer_name, names) +
               " (models: " + join(names) + "); it names the model that evaluation and export use");
  }
  infer_index_ = static_cast<size_t>(it - names.begin());
  is_rec_ = arch.get<bool>("is_rec", false);

  // Export's output: the DistillationModel's keys (PaddleClas's export reads these), else the infer model's.
  RecModelImpl& infer = infer_model();
  infer_output_key_ = arch.get<std::string>("infer_output_key", infer.infer_output_key());
  if (std::find(kInferOutputKeys.begin(), kInferOutputKeys.end(), infer_output_key_) == kInferOutputKeys.end())
    arch["infer_output_key"].fail("must be one of " + join(kInferOutputKeys) +
                                  did_you_mean(infer_output_key_, kInferOutputKeys));
  const ConfigNode infer_node = models.at(infer_index_).single_entry().second;
  if (arch["infer_output_key"].defined() && infer_node["infer_output_key"].defined() &&
      infer_output_key_ != infer.infer_output_key())
    arch["infer_output_key"].fail("'" + infer_output_key_ + "' contradicts " + infer_node["infer_output_key"].where() +
                                  " ('" + infer.infer_output_key() + "'): set one, or the same value in both");
  if (infer_output_key_ == "logits" && !infer.head())
    arch["infer_output_key"].fail("logits needs a Head in the " + infer_name + " model");
  if (infer_output_key_ == "neck" && !infer.neck())
    arch["infer_output_key"].fail("neck needs a Neck in the " + infer_name + " model");
  infer_add_softmax_ = arch.get<bool>("infer_add_softmax", infer.infer_add_softmax());
  if (arch["infer_add_softmax"].defined() && infer_node["infer_add_softmax"].defined() &&
      infer_add_softmax_ != infer.infer_add_softmax())
    arch["infer_add_softmax"].fail("contradicts " + infer_node["infer_add_softmax"].where() +
                                   ": set one, or the same value in both");
}

ModelOutput DistillationModelImpl::forward(torch::Tensor images, torch::Tensor labels) {
  ModelOutput out;
  for (auto& m : models_) out.models.emplace_back(m.first, m.second->forward(images, is_rec_ ? labels : torch::Tensor()));
  const ModelOutput& infer = out.models[infer_index_].second;
  out.backbone = infer.backbone;
  out.neck = infer.neck;
  out.features = infer.features;
  out.logits = infer.logits;
  return out;
}

std::vector<std::string> DistillationModelImpl::model_names() const {
  std::vector<std::string> names;
  for (const auto& m : models_) names.push_back(m.first);
  return names;
}

size_t DistillationModelImpl::index_of(const std::string& name) const {
  for (size_t i = 0; i < models_.size(); ++i)
    if (models_[i].first == name) return i;
  throw Error("no model named '" + name + "' in the DistillationModel" + did_you_mean(name, model_names()) +
              " (models: " + join(model_names()) + ")");
}

RecModel DistillationModelImpl::model(const std::string& name) const { return models_[index_of(name)].second; }

bool DistillationModelImpl::frozen(const std::string& name) const { return frozen_[index_of(name)]; }

ArchModelPtr build_arch(const ConfigNode& arch, const std::vector<int64_t>& image_shape) {
  if (!arch.defined()) arch.fail("missing the Arch section");
  if (!arch.is_map()) arch.fail("expected a map (name: RecModel, Backbone, ...)");
  const std::string name = arch.require<std::string>("name");
  if (name == "DistillationModel") return std::make_shared<DistillationModelImpl>(arch, image_shape);
  if (name == "RecModel") return std::make_shared<RecModelImpl>(arch, image_shape);
  arch["name"].fail("unsupported architecture '" + name + "'" + did_you_mean(name, kArchNames) + ": featlearn builds " +
                    join(kArchNames) + " (feature learning) models");
}

ConfigNode infer_arch_node(const ConfigNode& arch) {
  if (arch.get<std::string>("name", "RecModel") != "DistillationModel") return arch;
  const std::string infer_name = arch.get<std::string>("infer_model_name", "Student");
  const ConfigNode models = arch["models"];
  for (size_t i = 0; i < models.size(); ++i) {
    auto [name, node] = models.at(i).single_entry();
    if (name == infer_name) return node;
  }
  arch.fail("infer_model_name '" + infer_name + "' is not one of the models");
}

}  // namespace featlearn
