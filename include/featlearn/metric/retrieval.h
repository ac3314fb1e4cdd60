// Evaluation metrics (docs/architecture.md, "Training and evaluation"): retrieval metrics (Recallk, mAP, mINP, Precisionk) over query/gallery
// features, and classification accuracy (TopkAcc).
//
// Retrieval protocol
//  - similarity = q·gᵀ, computed per block of `block_size` queries (float32 scores). Features are used as
//    given: the caller L2-normalizes / binarizes beforehand. CUDA features are multiplied on their device
//    and ranked on the CPU.
//  - Exclusion: when camera ids are given, gallery items with the same label AND the same camera as the query
//    are removed from that query's ranking altogether (this removes the query itself when query = gallery).
//    Without camera ids nothing is excluded. (To exclude only the query itself when query = gallery and there
//    are no cameras, pass camids = arange(N) for both sides.)
//  - Positives ("matches") are the remaining gallery items with the query's label. A query with no positive
//    is skipped by every retrieval metric (RetrievalStats::queries_without_match counts them). If no query has
//    a positive the metrics are NaN.
//  - Ties: items with equal scores are ranked by gallery index (lower index first), i.e. the order of a stable
//    descending sort. Results are therefore deterministic and independent of the block size and thread count.
//  - Metric definitions, with r_1 < r_2 < ... < r_P the 1-based ranks of a query's P positives:
//      recallK    = fraction of (valid) queries with r_1 <= K                        (CMC@K)
//      mAP        = mean over queries of (1/P) Σ_j j / r_j
//      mINP       = mean over queries of P / r_P                                      (Ye et al. 2021)
//      precision@K= mean over queries of |{j : r_j <= K}| / K
//    Values are fractions (not percent).
//  - Differences from PaddleClas (ppcls/engine/evaluation/retrieval.py + ppcls/metric/metrics.py), where we
//    believe PaddleClas is wrong: (1) it sets excluded items' similarity to 0 but keeps them in the ranking as
//    non-matches, so they push down positives that score below 0; we remove them. (2) It averages each metric
//    per query block and then weights every block by its full size, so results depend on sim_block_size and
//    blocks without valid queries give NaN; we average over all valid queries. (3) Its mINP divides by the
//    0-based index of the hardest positive (off by one; infinite when the only positive ranks first); we use
//    the 1-based rank. (4) Its Precisionk counts queries without positives as 0; we skip them like the other
//    metrics. (5) Its mINP finds the hardest positive as the argmax of flag·(1 − 1/(i+2)) in float32, which
//    cannot separate positions a few thousand apart and then picks an earlier positive; we use exact ranks.
//    Keys are PaddleClas's: recall{K}, mAP, mINP, precision@{K}, top{K}.
//
// Memory: O(block_size × |gallery|) floats for the score block plus O(|gallery|) for labels; never
// |query| × |gallery|. Time: one GEMM per block plus one linear pass per query that places every gallery
// score among the query's sorted positive scores (a grid lookup, exact comparison only near a positive), in
// parallel over the queries of a block (at::parallel_for: set the thread count with torch::set_num_threads).
// No sort of the gallery is needed. Larger blocks make the GEMM more efficient at the cost of memory.
#pragma once
#include <torch/types.h>

#include <featlearn/config/config.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

using MetricValues = std::vector<std::pair<std::string, double>>;  // ordered as configured

// One entry of Metric.Eval / Metric.Train.
struct MetricSpec {
  enum class Kind { kRecallk, kMAP, kMINP, kPrecisionk, kTopkAcc };
  Kind kind = Kind::kRecallk;
  std::vector<int64_t> topk;  // Recallk / Precisionk / TopkAcc (default [1, 5]); empty for mAP / mINP
  bool descending = true;     // PaddleClas's `descending` for retrieval metrics (false: smaller score = closer)

  bool is_retrieval() const { return kind != Kind::kTopkAcc; }
  // Result keys in order, e.g. {"recall1", "recall5"}.
  std::vector<std::string> keys() const;
};

class MetricSet {
 public:
  MetricSet() = default;
  // From cfg["Metric"]["Eval"] (or ["Train"]): a list of `- Name: {params}` entries.
  //   Recallk: {topk: int | [int...] = [1, 5], descending: true}
  //   Precisionk: {topk: int | [int...] = [1, 5], descending: true}
  //   mAP: {descending: true}      mINP: {descending: true}
  //   TopkAcc: {topk: int | [int...] = [1, 5]}
  // Unknown metric names and keys, non-positive topk, and retrieval metrics that disagree on `descending`
  // are ConfigErrors naming the key path.
  static MetricSet create(const ConfigNode& metric_list);

  MetricSet& add(MetricSpec spec);
  const std::vector<MetricSpec>& specs() const { return specs_; }
  bool empty() const { return specs_.empty(); }
  bool has_retrieval() const;
  bool has_classification() const;
  // All result keys in configured order.
  std::vector<std::string> keys() const;

 private:
  std::vector<MetricSpec> specs_;
};

struct RetrievalOptions {
  int64_t block_size = 64;  // queries per similarity block (Global.sim_block_size)
  bool re_ranking = false;  // k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3); see re_ranking_distance
};

// Side information about an evaluation run.
struct RetrievalStats {
  int64_t num_queries = 0;
  int64_t queries_without_match = 0;  // skipped by every metric
  int64_t num_excluded = 0;           // gallery items excluded over all queries (same label and camera)
};

// query_feats [Q, D], query_labels [Q] (or [Q, 1]) integer, query_camids [Q] integer or undefined;
// likewise for the gallery. Camera ids must be given for both sides or for neither.
// Throws Error for inconsistent shapes, non-finite features, or a MetricSet holding TopkAcc.
MetricValues evaluate_retrieval(const MetricSet& metrics, const torch::Tensor& query_feats,
                                const torch::Tensor& query_labels, const torch::Tensor& query_camids,
                                const torch::Tensor& gallery_feats, const torch::Tensor& gallery_labels,
                                const torch::Tensor& gallery_camids, const RetrievalOptions& options);
// Same, also filling `stats` (may be null).
MetricValues evaluate_retrieval(const MetricSet& metrics, const torch::Tensor& query_feats,
                                const torch::Tensor& query_labels, const torch::Tensor& query_camids,
                                const torch::Tensor& gallery_feats, const torch::Tensor& gallery_labels,
                                const torch::Tensor& gallery_camids, const RetrievalOptions& options,
                                RetrievalStats* stats);

// TopkAcc: logits [N, C], labels [N] or [N, 1]. topK = fraction of samples whose label is among the K highest
// logits (ties ranked by class index, lower first). As in PaddleClas, a K larger than C is dropped from the
// result (with a warning on stderr). Throws Error for retrieval metrics in `metrics` or bad shapes/labels.
MetricValues evaluate_classification(const MetricSet& metrics, const torch::Tensor& logits,
                                     const torch::Tensor& labels);

// k-reciprocal re-ranking (Zhong et al., CVPR 2017), with PaddleClas's conventions: all = [query; gallery],
// d = squared Euclidean distance (= 2 - 2·cos for L2-normalized features), each row divided by its maximum,
// R*(p) from k1-reciprocal neighbours expanded by k1/2-reciprocal sets, Gaussian-weighted sparse vectors V,
// local query expansion over the k2 nearest, Jaccard distance, final = (1-λ)·jaccard + λ·d.
// Memory is O((Q+G)·k1) plus the [rows, G] output; time is quadratic in Q+G, so it is refused (Error) beyond
// kMaxReRankingItems items. Returns the final distance [Q, G] (float32, CPU). Deliberate difference: V and
// the Jaccard sums are float32 (PaddleClas stores them as float16).
constexpr int64_t kMaxReRankingItems = 100000;
struct ReRankingParams {
  int64_t k1 = 20;
  int64_t k2 = 6;
  double lambda = 0.3;
};
torch::Tensor re_ranking_distance(const torch::Tensor& query_feats, const torch::Tensor& gallery_feats,
                                  const ReRankingParams& params = {});

}  // namespace featlearn
