// Loss registry (config keys = PaddleClas's constructor arguments, plus `weight`) and CombinedLoss.
#include <featlearn/loss/distillation_losses.h>
#include <featlearn/loss/deephash_losses.h>
#include <featlearn/loss/loss.h>
#include <featlearn/loss/losses.h>
#include <featlearn/loss/metabin_losses.h>

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>

namespace featlearn {

std::string read_model_output(const ConfigNode& p, const std::string& key, const std::string& default_value) {
  const ConfigNode n = p[key];
  if (!n.defined() && default_value.empty()) p.fail("missing required key '" + key + "' (a model output)");
  const std::string v = n.defined() ? n.as<std::string>() : default_value;
  static const std::vector<std::string> valid = {"features", "backbone", "neck", "logits"};
  if (std::find(valid.begin(), valid.end(), v) == valid.end())
    n.fail("unknown model output '" + v + "'" + did_you_mean(v, valid) + " (valid: " + join(valid) + ")");
  return v;
}

std::string read_loss_reduction(const ConfigNode& p) {
  const std::string v = p.get<std::string>("reduction", "mean");
  if (v == "none")
    p["reduction"].fail("'none' gives one loss per sample, but a training loss must be a scalar: use mean or sum");
  if (v != "mean" && v != "sum") p["reduction"].fail("expected mean or sum, got '" + v + "'");
  return v;
}

namespace {

std::string read_feature_from(const ConfigNode& p) { return read_model_output(p, "feature_from", "features"); }

std::string read_reduction(const ConfigNode& p) { return read_loss_reduction(p); }

int64_t read_positive(const ConfigNode& p, const std::string& key, std::optional<int64_t> default_value) {
  const int64_t v = default_value ? p.get<int64_t>(key, *default_value) : p.require<int64_t>(key);
  if (v < 1) p[key].fail("must be a positive integer, got " + std::to_string(v));
  return v;
}

double read_positive_double(const ConfigNode& p, const std::string& key, double default_value) {
  const double v = p.get<double>(key, default_value);
  if (!(v > 0)) p[key].fail("must be positive, got " + std::to_string(v));
  return v;
}

TripletAngularMarginLossOptions read_taml(const ConfigNode& p) {
  return TripletAngularMarginLossOptions()
      .margin(p.get<double>("margin", 0.5))
      .normalize_feature(p.get<bool>("normalize_feature", true))
      .reduction(read_reduction(p))
      .add_absolute(p.get<bool>("add_absolute", false))
      .absolute_loss_weight(p.get<double>("absolute_loss_weight", 1.0))
      .ap_value(p.get<double>("ap_value", 0.9))
      .an_value(p.get<double>("an_value", 0.5));
}

ContrastiveLossOptions read_contrastive(const ConfigNode& p) {
  return ContrastiveLossOptions()
      .margin(p.require<double>("margin"))
      .embedding_size(read_positive(p, "embedding_size", std::nullopt))
      .normalize_feature(p.get<bool>("normalize_feature", true))
      .epsilon(p.get<double>("epsilon", 1e-5));
}

XbmOptions read_xbm(const ConfigNode& p) {
  const int64_t start_iter = p.require<int64_t>("start_iter");
  if (start_iter < 0) p["start_iter"].fail("must be >= 0");
  return XbmOptions()
      .xbm_size(read_positive(p, "xbm_size", std::nullopt))
      .xbm_weight(p.require<double>("xbm_weight"))
      .start_iter(start_iter);
}

std::pair<int64_t, int64_t> read_pk(const ConfigNode& p, int64_t batch_size, int64_t samples_each_class) {
  const int64_t b = read_positive(p, "batch_size", batch_size);
  const int64_t k = read_positive(p, "samples_each_class", samples_each_class);
  if (k < 2) p["samples_each_class"].fail("must be at least 2 (positives are other samples of the same id)");
  if (b % k != 0)
    p["batch_size"].fail(fmt::format("batch_size={} is not a multiple of samples_each_class={}", b, k));
  return {b, k};
}

}  // namespace

Registry<LossPtr>& loss_registry() {
  static Registry<LossPtr> r("Loss");
  return r;
}

void register_builtin_losses() {
  auto& r = loss_registry();
  if (r.contains("CELoss")) return;
  register_deephash_losses();  // DCHLoss, DSHSDLoss, LCDSHLoss (deephash_losses.h)
  register_metabin_losses();   // CELossForMetaBIN, TripletLossForMetaBIN, Intra/InterDomain... (metabin_losses.h)

  r.add("CELoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "epsilon", "reduction"});
    // PaddleClas: epsilon null or outside (0, 1) means no smoothing.
    const double eps = p.optional<double>("epsilon").value_or(0.0);
    return std::make_shared<CELossImpl>(CELossOptions().epsilon(eps).reduction(read_reduction(p)));
  });

  r.add("SupConLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "views", "temperature", "contrast_mode", "base_temperature", "normalize_feature"});
    const std::string mode = p.get<std::string>("contrast_mode", "all");
    if (mode != "all" && mode != "one") p["contrast_mode"].fail("expected all or one, got '" + mode + "'");
    return std::make_shared<SupConLossImpl>(SupConLossOptions()
                                                .views(read_positive(p, "views", 16))
                                                .temperature(read_positive_double(p, "temperature", 0.07))
                                                .base_temperature(read_positive_double(p, "base_temperature", 0.07))
                                                .contrast_mode(mode)
                                                .normalize_feature(p.get<bool>("normalize_feature", true)));
  });

  r.add("TripletLossV2", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin", "normalize_feature", "feature_from"});
    return std::make_shared<TripletLossImpl>(TripletLossOptions()
                                                 .margin(p.get<double>("margin", 0.5))
                                                 .normalize_feature(p.get<bool>("normalize_feature", true)),
                                             read_feature_from(p));
  });

  r.add("TripletLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin"});
    return std::make_shared<TripletLossImpl>(
        TripletLossOptions().margin(p.get<double>("margin", 1.0)).normalize_feature(false), "features");
  });

  r.add("CenterLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "num_classes", "feat_dim", "feature_from"});
    return std::make_shared<CenterLossImpl>(read_positive(p, "num_classes", std::nullopt),
                                            read_positive(p, "feat_dim", std::nullopt), read_feature_from(p));
  });

  r.add("PairwiseCosface", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin", "gamma"});
    return std::make_shared<PairwiseCosfaceImpl>(
        PairwiseCosfaceOptions().margin(p.require<double>("margin")).gamma(p.require<double>("gamma")));
  });

  r.add("TripletAngularMarginLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin", "normalize_feature", "reduction", "add_absolute", "absolute_loss_weight",
                  "ap_value", "an_value", "feature_from"});
    return std::make_shared<TripletAngularMarginLossImpl>(read_taml(p), read_feature_from(p));
  });

  r.add("TripletAngularMarginLoss_XBM", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "start_iter", "xbm_size", "xbm_weight", "feat_dim", "margin", "normalize_feature",
                  "reduction", "add_absolute", "absolute_loss_weight", "ap_value", "an_value", "feature_from"});
    return std::make_shared<TripletAngularMarginLossXbmImpl>(
        read_taml(p), read_xbm(p), read_positive(p, "feat_dim", std::nullopt), read_feature_from(p));
  });

  r.add("ContrastiveLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "margin", "embedding_size", "normalize_feature", "epsilon", "feature_from"});
    return std::make_shared<ContrastiveLossImpl>(read_contrastive(p), read_feature_from(p));
  });

  r.add("ContrastiveLoss_XBM", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "xbm_size", "xbm_weight", "start_iter", "margin", "embedding_size", "epsilon",
                  "normalize_feature", "feature_from"});
    return std::make_shared<ContrastiveLossXbmImpl>(read_contrastive(p), read_xbm(p), read_feature_from(p));
  });

  r.add("MSMLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "batch_size", "samples_each_class", "margin"});
    const auto [b, k] = read_pk(p, 120, 2);
    return std::make_shared<MSMLossImpl>(
        MSMLossOptions().batch_size(b).samples_each_class(k).margin(p.get<double>("margin", 0.1)));
  });

  r.add("EmlLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "batch_size", "samples_each_class"});
    const auto [b, k] = read_pk(p, 40, 2);
    return std::make_shared<EmlLossImpl>(EmlLossOptions().batch_size(b).samples_each_class(k));
  });

  r.add("NpairsLoss", [](const ConfigNode& p) -> LossPtr {
    p.check_keys({"weight", "reg_lambda"});
    return std::make_shared<NpairsLossImpl>(NpairsLossOptions().reg_lambda(p.get<double>("reg_lambda", 0.01)));
  });

  register_distillation_losses();
}

// ---- CombinedLoss -------------------------------------------------------------------------------------------

CombinedLossImpl::CombinedLossImpl(const ConfigNode& list) {
  register_builtin_losses();
  if (!list.defined()) list.fail("missing loss list; expected e.g. `- CELoss: {weight: 1.0}` entries");
  if (!list.is_seq() || list.size() == 0)
    list.fail("expected a non-empty list of `- LossName: {weight: 1.0, ...}` entries");
  for (size_t i = 0; i < list.size(); ++i) {
    const ConfigNode item = list.at(i);
    const auto [name, params] = item.single_entry();
    LossPtr loss = loss_registry().create(name, item, params);
    const double weight = params.get<double>("weight", 1.0);
    std::string key = name;
    for (int n = 2; std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.name == key; });
         ++n)
      key = name + "_" + std::to_string(n);
    register_module(key, loss);
    entries_.push_back({key, weight, std::move(loss), params.where()});
  }
}

CombinedLossImpl::Result CombinedLossImpl::forward(const ModelOutput& out, const torch::Tensor& labels) {
  Result r;
  for (const auto& e : entries_) {
    for (auto& [sub, t] : e.loss->forward_terms(out, labels)) {
      FL_ASSERT(t.defined() && t.numel() == 1, e.name + " must return a scalar");
      const torch::Tensor term = t.reshape({});
      r.total = r.total.defined() ? r.total + e.weight * term : e.weight * term;
      r.terms.emplace_back(sub.empty() ? e.name : e.name + "." + sub, term);
    }
  }
  return r;
}

void CombinedLossImpl::check_models(const std::vector<std::string>& model_names) const {
  for (const auto& e : entries_) {
    const auto wanted = e.loss->model_names();
    if (model_names.empty() && !wanted.empty())
      throw ConfigError(e.where + ": " + e.name + " compares the models of an Arch.name: DistillationModel (" +
                        join(wanted) + "), but Arch is a RecModel");
    if (!model_names.empty() && wanted.empty())
      throw ConfigError(e.where + ": " + e.name + " reads a single model's output, but Arch is a DistillationModel (" +
                        join(model_names) + "): use the Distillation losses (DistillationGTCELoss, "
                        "DistillationDMLLoss, DistillationDistanceLoss), which name the models they read");
    for (const auto& w : wanted)
      if (std::find(model_names.begin(), model_names.end(), w) == model_names.end())
        throw ConfigError(e.where + ": " + e.name + " reads model '" + w + "', which is not in Arch.models" +
                          did_you_mean(w, model_names) + " (models: " + join(model_names) + ")");
  }
}

std::vector<std::string> CombinedLossImpl::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name);
  return out;
}

std::vector<double> CombinedLossImpl::weights() const {
  std::vector<double> out;
  for (const auto& e : entries_) out.push_back(e.weight);
  return out;
}

const CombinedLossImpl::Entry& CombinedLossImpl::entry(const std::string& loss_name) const {
  for (const auto& e : entries_)
    if (e.name == loss_name) return e;
  throw Error("no loss named '" + loss_name + "' in the loss list" + did_you_mean(loss_name, names()) +
              " (losses: " + join(names()) + ")");
}

std::vector<torch::Tensor> CombinedLossImpl::parameters_of(const std::string& loss_name) const {
  return entry(loss_name).loss->parameters();
}

LossPtr CombinedLossImpl::loss(const std::string& loss_name) const { return entry(loss_name).loss; }

}  // namespace featlearn
