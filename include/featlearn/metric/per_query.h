// Per-query retrieval outcomes (docs/report.md, "The HTML report"): what the HTML report ranks queries by.
// The protocol is evaluate_retrieval's exactly (include/featlearn/metric/retrieval.h: exclusion of same
// label and camera, ties by gallery index, `descending`), computed by the same code.
#pragma once
#include <featlearn/metric/retrieval.h>

#include <cstdint>
#include <vector>

namespace featlearn {

struct QueryOutcome {
  bool valid = false;          // the query has at least one true match left after exclusion
  double ap = 0.0;             // average precision (NaN when !valid)
  int64_t first_rank = 0;      // 1-based rank of the first true match (0 when !valid)
  int64_t num_matches = 0;     // true matches after exclusion
};

// One outcome per query row. Same inputs and errors as evaluate_retrieval.
std::vector<QueryOutcome> retrieval_outcomes(const torch::Tensor& query_feats, const torch::Tensor& query_labels,
                                             const torch::Tensor& query_camids, const torch::Tensor& gallery_feats,
                                             const torch::Tensor& gallery_labels, const torch::Tensor& gallery_camids,
                                             const RetrievalOptions& options, bool descending = true);

}  // namespace featlearn
