// Internal: k-reciprocal re-ranking split into a preparation step and per-block final distances, so the
// retrieval evaluation can consume it block by block like plain similarities.
#pragma once
#include <torch/types.h>

#include <featlearn/metric/retrieval.h>

#include <cstdint>
#include <vector>

namespace featlearn::detail {

class ReRanker {
 public:
  // query [Q, D], gallery [G, D] (any device/dtype; copied to float32 CPU).
  ReRanker(const torch::Tensor& query, const torch::Tensor& gallery, const ReRankingParams& params);
  // Final re-ranked distance for query rows [begin, end): [end - begin, G] float32 CPU.
  torch::Tensor rows(int64_t begin, int64_t end) const;

 private:
  ReRankingParams params_;
  int64_t num_query_ = 0, num_gallery_ = 0, num_all_ = 0;
  torch::Tensor all_;     // [N, D] float32, query rows first
  torch::Tensor sqnorm_;  // [N]
  std::vector<float> rowmax_;  // max distance of each row (PaddleClas's per-column normalization)
  // V after local query expansion, as CSR rows (column indices ascending) and its transpose.
  std::vector<int64_t> v_ptr_;
  std::vector<int32_t> v_col_;
  std::vector<float> v_val_;
  std::vector<int64_t> t_ptr_;
  std::vector<int32_t> t_row_;
  std::vector<float> t_val_;
};

}  // namespace featlearn::detail
