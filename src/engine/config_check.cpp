// The whole-config check (docs/config.md, "Checking a config").
#include <featlearn/engine/config_check.h>

#include <featlearn/data/loader.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/train_metabin.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/arch.h>
#include <featlearn/model/pretrained.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>

#include <optional>

namespace featlearn {

namespace {

// The first section `use` needs that the config lacks ("" when none), and the rules that tie sections together.
std::string missing_for(const ConfigNode& root, ConfigUse use, const GlobalConfig& g) {
  const bool has_metrics = root["Metric"].defined() && root["Metric"]["Eval"].defined();
  const bool adaface = g.eval_mode == "adaface";
  const bool train = use == ConfigUse::kTrain;
  if (train) {
    if (!root["Loss"]["Train"].defined()) return "missing Loss.Train (the training losses)";
    if (!root["Optimizer"].defined()) return "missing the Optimizer section";
    if (!root["DataLoader"]["Train"].defined()) return "missing DataLoader.Train";
    if (g.eval_during_train && !has_metrics && !adaface) return "eval_during_train needs Metric.Eval";
  }
  const bool evaluates = use == ConfigUse::kEval || (train && g.eval_during_train);
  if (evaluates) {
    if (!has_metrics && !adaface) return "missing Metric.Eval (which metrics to compute)";
    if (!root["DataLoader"]["Eval"].defined()) return "missing DataLoader.Eval";
  }
  if (use == ConfigUse::kExport) {
    if (!root["DataLoader"]["Eval"].defined() ||
        !eval_sections(root["DataLoader"]["Eval"]).first["dataset"]["transform_ops"].defined())
      return "export needs DataLoader.Eval (Query) dataset.transform_ops to record the inference preprocessing";
  }
  return "";
}

// Rules between Global.eval_mode, Metric.Eval and the model that hold whenever the config evaluates.
void check_eval_rules(const ConfigNode& root, const GlobalConfig& g, const std::optional<MetricSet>& metrics,
                      ArchModelImpl& model) {
  const bool retrieval = g.eval_mode == "retrieval", adaface = g.eval_mode == "adaface";
  if (adaface && metrics)
    root["Metric"]["Eval"].fail("Global.eval_mode: adaface reports its own face-verification accuracies "
                                "(all_test_acc, ...); remove Metric.Eval");
  if (!metrics) return;
  if (retrieval && metrics->has_classification())
    root["Metric"]["Eval"].fail("TopkAcc is a classification metric; with Global.eval_mode: retrieval use "
                                "Recallk / mAP / mINP / Precisionk");
  if (!retrieval && !adaface && metrics->has_retrieval())
    root["Metric"]["Eval"].fail("Recallk / mAP / mINP / Precisionk are retrieval metrics; with "
                                "Global.eval_mode: classification use TopkAcc");
  if (!retrieval && !adaface && !model.infer_model().head())
    root["Arch"].fail("Global.eval_mode: classification needs an Arch.Head");
}

}  // namespace

void check_config(const ConfigNode& root, ConfigUse use) {
  check_root_sections(root);
  const GlobalConfig g = GlobalConfig::parse(root["Global"]);
  (void)AmpConfig::parse(root["AMP"]);
  if (!root["Arch"].defined()) root.fail("missing the Arch section");
  // The model is built to check Arch (names, keys, shapes through the stop layer and neck), with random weights:
  // nothing is downloaded, and a pretrained file that is not there yet is reported by train, not here.
  ArchModelPtr model;
  {
    DeferWeightDownloads no_downloads;
    model = build_arch(root["Arch"], g.image_shape);
  }
  const bool metabin = is_metabin_run(root);

  std::optional<MetricSet> metrics;
  if (root["Metric"].defined()) {
    root["Metric"].check_keys({"Train", "Eval"});
    if (root["Metric"]["Eval"].defined()) metrics = MetricSet::create(root["Metric"]["Eval"]);
    if (root["Metric"]["Train"].defined()) (void)MetricSet::create(root["Metric"]["Train"]);
  }
  if (root["Loss"].defined()) {
    if (metabin) root["Loss"].check_keys({"Train", "Eval", "Basic", "MetaTrain", "MetaTest"});
    else root["Loss"].check_keys({"Train", "Eval"});
  }
  std::optional<CombinedLoss> train_loss;
  for (const char* phase : {"Train", "Eval"})
    if (root["Loss"][phase].defined()) {
      CombinedLoss loss(root["Loss"][phase]);
      loss->check_models(model->model_names());
      if (std::string(phase) == "Train") train_loss = loss;
    }
  if (root["Optimizer"].defined()) {
    // The parameters the optimizers will own: the model's and those of each loss that has some (CenterLoss).
    ParameterScopes scopes;
    scopes.emplace_back(model->arch_name(), named_parameters_of(*model));
    if (train_loss)
      for (const auto& child : (*train_loss)->named_children()) {
        auto params = named_parameters_of(*child.value());
        if (!params.empty()) scopes.emplace_back(child.key(), params);
      }
    // One step per epoch: the schedules' shapes are checked; the real step count comes with the data.
    (void)OptimizerSet::create(root["Optimizer"], scopes, g.iter_per_epoch.value_or(1), g.epochs,
                               lr_multipliers_of(*model),
                               metabin ? std::vector<size_t>{kMetaBinCyclicOptimizer} : std::vector<size_t>{});
  }
  if (root["DataLoader"].defined()) {
    const auto dl = root["DataLoader"];
    if (metabin) dl.check_keys({"Train", "Eval", "Metalearning"});
    else dl.check_keys({"Train", "Eval"});
    if (dl["Train"].defined()) DataLoader::check_config(dl["Train"]);
    if (dl["Eval"].defined()) {
      auto [query, gallery] = eval_sections(dl["Eval"]);
      DataLoader::check_config(query);
      if (gallery) DataLoader::check_config(*gallery);
    }
  }
  check_eval_rules(root, g, metrics, *model);
  if (const std::string missing = missing_for(root, use, g); !missing.empty()) root.fail(missing);
}

std::vector<std::pair<std::string, std::string>> config_commands(const ConfigNode& root) {
  const GlobalConfig g = GlobalConfig::parse(root["Global"]);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, use] : {std::pair<const char*, ConfigUse>{"train", ConfigUse::kTrain},
                                  {"eval", ConfigUse::kEval},
                                  {"export", ConfigUse::kExport},
                                  {"describe", ConfigUse::kDescribe}})
    out.emplace_back(name, missing_for(root, use, g));
  return out;
}

}  // namespace featlearn
