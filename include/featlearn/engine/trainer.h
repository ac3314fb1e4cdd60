// The training / evaluation engine (docs/architecture.md, "Training and evaluation"): builds model, losses, optimizers and loaders from a
// config, runs epochs, logs, checkpoints, resumes and evaluates.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/metric/retrieval.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

// Extracts features [N, D] (normalized/binarized per Global) plus labels and camids for one eval set.
struct FeatureSet {
  torch::Tensor features, labels, camids;
  torch::Tensor indices;  // the dataset index of each row (rows are in loader order, or dataset order with ranks)
};

// A retrieval evaluation's inputs, in dataset order: what `featlearn report` ranks (docs/report.md).
struct RetrievalSets {
  FeatureSet query, gallery;
  std::vector<std::string> query_paths, gallery_paths;  // full image paths, one per row
  bool gallery_is_query = false;  // DataLoader.Eval has one set, used as both (leave-one-out)
};

class Trainer {
 public:
  enum class Mode { kTrain, kEval };
  Trainer(Config config, Mode mode);
  ~Trainer();

  // Runs Global.epochs epochs (from the resumed epoch on); returns the last evaluation's metrics (may be empty).
  // `stop_after_epoch` > 0 ends the run early after that epoch (as if interrupted): the schedule still spans
  // Global.epochs, so a later resume continues exactly.
  MetricValues train(int64_t stop_after_epoch = -1);
  // Evaluates the current model on DataLoader.Eval; `epoch` only labels the log line.
  MetricValues evaluate(int64_t epoch = 0);
  // The features evaluate() scores in Global.eval_mode retrieval (one pass over the eval sets, no metrics).
  RetrievalSets retrieval_sets();
  // Metric.Eval and the retrieval protocol (Global.sim_block_size, re_ranking) evaluate() uses.
  const MetricSet& metrics() const;
  RetrievalOptions retrieval_options() const;
  // Writes metrics to output_dir/eval_metrics.json and prints them as a table.
  void report(const MetricValues& metrics) const;

  const GlobalConfig& global() const;
  torch::nn::Module& model();

 private:
  // Checkpoints, then the evaluation and best_model when this epoch evaluates.
  void end_of_epoch(int64_t epoch);
  void evaluate_and_keep_best(int64_t epoch);
  struct State;
  std::unique_ptr<State> s_;
};

// Global.feature_normalize / feature_binarize applied to [N, D] features; shared by eval and the exported
// inference model so both produce the same features. L2 normalization first, then `round`: round(x)·2 − 1
// with halves rounded away from zero (paddle.round), or `sign`: sign(x) (0 stays 0), as PaddleClas's eval.
torch::Tensor postprocess_features(torch::Tensor features, bool normalize, const std::string& binarize);

// The best evaluation so far (best_model), chosen by the first metric of Metric.Eval as PaddleClas does: a
// value equal to the best also becomes the best (PaddleClas compares with >=). A resumed run whose restored
// metric name differs from this config's first metric starts a new best (`note` says so).
struct BestMetric {
  std::string name;
  double value = -1.0;
  int64_t epoch = 0;
  // Returns true when (metric, v) at `at_epoch` is the new best.
  bool offer(const std::string& metric, double v, int64_t at_epoch, std::string* note = nullptr);
};

// DataLoader.Eval holds Query/Gallery sets or one set used as both: (query, gallery if distinct).
std::pair<ConfigNode, std::optional<ConfigNode>> eval_sections(const ConfigNode& eval);

}  // namespace featlearn
