// Per-query retrieval outcomes: hand-computed APs and first-match ranks, exclusion, and agreement with
// evaluate_retrieval's mAP / recall on random data (docs/report.md).
#include <featlearn/metric/per_query.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

using namespace featlearn;

TEST(PerQuery, HandComputedApAndFirstRankWithExclusion) {
  // 1-D features: the score is the product. Gallery scores for query 0 (feature 1): 0.9, 0.8, 0.7, 0.6, 0.5.
  const auto g = torch::tensor({0.9f, 0.8f, 0.7f, 0.6f, 0.5f}).reshape({5, 1});
  const auto gl = torch::tensor({1, 0, 0, 1, 2}, torch::kLong);
  const auto gc = torch::tensor({0, 1, 0, 1, 1}, torch::kLong);
  const auto q = torch::tensor({1.0f, 1.0f, 1.0f}).reshape({3, 1});
  const auto ql = torch::tensor({0, 1, 3}, torch::kLong);
  const auto qc = torch::tensor({5, 0, 5}, torch::kLong);
  const auto out = retrieval_outcomes(q, ql, qc, g, gl, gc, RetrievalOptions{});
  ASSERT_EQ(out.size(), 3u);
  // Query 0 (label 0, camera 5: nothing excluded): matches at ranks 2 and 3 -> AP = (1/2 + 2/3) / 2.
  EXPECT_TRUE(out[0].valid);
  EXPECT_EQ(out[0].first_rank, 2);
  EXPECT_EQ(out[0].num_matches, 2);
  EXPECT_NEAR(out[0].ap, (0.5 + 2.0 / 3.0) / 2.0, 1e-12);
  // Query 1 (label 1, camera 0): gallery 0 (label 1, camera 0) is excluded; the match left is gallery 3,
  // ranked 3rd among the remaining four -> AP 1/3.
  EXPECT_EQ(out[1].first_rank, 3);
  EXPECT_EQ(out[1].num_matches, 1);
  EXPECT_NEAR(out[1].ap, 1.0 / 3.0, 1e-12);
  // Query 2: no true match.
  EXPECT_FALSE(out[2].valid);
  EXPECT_TRUE(std::isnan(out[2].ap));
  EXPECT_EQ(out[2].first_rank, 0);
}

TEST(PerQuery, AgreesWithEvaluateRetrieval) {
  torch::manual_seed(3);
  const auto q = torch::nn::functional::normalize(torch::randn({40, 8}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto g = torch::nn::functional::normalize(torch::randn({120, 8}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto ql = torch::randint(0, 12, {40}, torch::kLong), gl = torch::randint(0, 12, {120}, torch::kLong);
  const auto qc = torch::randint(0, 3, {40}, torch::kLong), gc = torch::randint(0, 3, {120}, torch::kLong);
  MetricSet m;
  MetricSpec recall;
  recall.kind = MetricSpec::Kind::kRecallk;
  recall.topk = {1, 5};
  MetricSpec map;
  map.kind = MetricSpec::Kind::kMAP;
  m.add(recall).add(map);
  RetrievalOptions opt;
  opt.block_size = 7;
  const auto values = evaluate_retrieval(m, q, ql, qc, g, gl, gc, opt);
  const auto out = retrieval_outcomes(q, ql, qc, g, gl, gc, opt);
  double ap = 0, r1 = 0, r5 = 0, n = 0;
  for (const auto& o : out)
    if (o.valid) {
      ap += o.ap, n += 1;
      r1 += o.first_rank <= 1, r5 += o.first_rank <= 5;
    }
  ASSERT_GT(n, 0);
  EXPECT_NEAR(values[0].second, r1 / n, 1e-12);
  EXPECT_NEAR(values[1].second, r5 / n, 1e-12);
  EXPECT_NEAR(values[2].second, ap / n, 1e-12);
}
