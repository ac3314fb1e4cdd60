// Global.feature_binarize in retrieval evaluation (postprocess_features + evaluate_retrieval, the eval path of
// the trainer and of exported models): PaddleClas's round / sign on hand-picked values, and hand-computed
// retrieval metrics on binarized 4-dim features, where the dot product of ±1 codes ranks as the Hamming
// distance (q·g = D − 2·hamming).
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/metric/retrieval.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

using namespace featlearn;

namespace {

std::map<std::string, double> fb_metrics(const torch::Tensor& q, const torch::Tensor& g,
                                         const torch::Tensor& ql, const torch::Tensor& gl) {
  auto cfg = Config::from_string("Metric:\n  Eval:\n    - mAP: {}\n    - Recallk: {topk: [1, 2]}\n"
                                 "    - Precisionk: {topk: [2]}\n",
                                 "metric.yaml");
  const auto values = evaluate_retrieval(MetricSet::create(cfg["Metric"]["Eval"]), q, ql, {}, g, gl, {}, {});
  std::map<std::string, double> m;
  for (const auto& [k, v] : values) m[k] = v;
  return m;
}

torch::Tensor fb_t(std::initializer_list<float> v, int64_t rows) {
  return torch::tensor(std::vector<float>(v)).view({rows, -1});
}

}  // namespace

TEST(FeatureBinarize, RoundAndSignArePaddleClas) {
  // round: paddle.round (halves away from zero), then ·2 − 1. 0.49999997 is the float just below 0.5.
  const auto x = fb_t({0.5f, -0.5f, 1.5f, 2.5f, 0.49999997f, -0.2f, 0.7f, 0.0f}, 1);
  EXPECT_TRUE(torch::equal(postprocess_features(x, false, "round"), fb_t({1, -3, 3, 5, -1, -1, 1, -1}, 1)))
      << postprocess_features(x, false, "round");
  // sign: −1 / 0 / +1.
  EXPECT_TRUE(torch::equal(postprocess_features(x, false, "sign"), fb_t({1, -1, 1, 1, 1, -1, 1, 0}, 1)));
  // absent: unchanged.
  EXPECT_TRUE(torch::equal(postprocess_features(x, false, ""), x));
  // L2 normalization comes first: (3, 4) -> (0.6, 0.8) -> round (1, 1) -> (1, 1); unnormalized (5, 7).
  const auto y = fb_t({3, 4}, 1);
  EXPECT_TRUE(torch::equal(postprocess_features(y, true, "round"), fb_t({1, 1}, 1)));
  EXPECT_TRUE(torch::equal(postprocess_features(y, false, "round"), fb_t({5, 7}, 1)));
}

TEST(FeatureBinarize, RetrievalOnBinarizedCodesRanksByHamming) {
  // One query (label 0) and four gallery items; sign codes and Hamming distances to the query's (+ + − +):
  //   g0 ( 0.1,  0.2, −0.1,  0.1) label 0 -> (+ + − +) h 0      float q·g  0.16
  //   g1 ( 0.9, −0.01, −0.2, 0.3) label 1 -> (+ − − +) h 1      float q·g  0.939
  //   g2 (−0.5,  0.5,  0.5,  0.5) label 0 -> (− + + +) h 2      float q·g −0.35
  //   g3 (−1,   −1,    1,   −1)   label 1 -> (− − + −) h 4      float q·g −1.5
  // Binarized: ranking g0, g1, g2, g3: positives at ranks 1 and 3: mAP (1/1 + 2/3)/2, recall1 1, recall2 1,
  // precision@2 1/2. Float features: g1, g0, g2, g3: positives at 2 and 3: mAP (1/2 + 2/3)/2, recall1 0.
  const auto q = fb_t({0.9f, 0.1f, -0.2f, 0.3f}, 1);
  const auto g = fb_t({0.1f, 0.2f, -0.1f, 0.1f, 0.9f, -0.01f, -0.2f, 0.3f, -0.5f, 0.5f, 0.5f, 0.5f, -1, -1, 1, -1}, 4);
  const auto ql = torch::tensor({0}), gl = torch::tensor({0, 1, 0, 1});
  const auto qb = postprocess_features(q, false, "sign"), gb = postprocess_features(g, false, "sign");
  // Scores are D − 2·hamming.
  EXPECT_TRUE(torch::equal(torch::matmul(qb, gb.t()), fb_t({4, 2, 0, -4}, 1)));
  auto m = fb_metrics(qb, gb, ql, gl);
  EXPECT_NEAR(m["mAP"], (1.0 + 2.0 / 3) / 2, 1e-6);
  EXPECT_EQ(m["recall1"], 1.0);
  EXPECT_EQ(m["recall2"], 1.0);
  EXPECT_NEAR(m["precision@2"], 0.5, 1e-6);
  m = fb_metrics(q, g, ql, gl);
  EXPECT_NEAR(m["mAP"], (0.5 + 2.0 / 3) / 2, 1e-6);
  EXPECT_EQ(m["recall1"], 0.0);
  // round on sigmoid-like codes in [0, 1] (VGG19Sigmoid-style): (0.7, 0.2, 0.6, 0.4) -> (+ − + −). Equal
  // Hamming distances tie and rank by gallery index: g1 (label 0) and g0 (label 1) both differ in one bit
  // from the query, so g0 (a negative) ranks first.
  const auto q2 = fb_t({0.7f, 0.2f, 0.6f, 0.4f}, 1);
  const auto g2 = fb_t({0.9f, 0.9f, 0.8f, 0.1f, 0.8f, 0.3f, 0.1f, 0.2f, 0.1f, 0.9f, 0.2f, 0.8f}, 3);
  const auto q2b = postprocess_features(q2, false, "round"), g2b = postprocess_features(g2, false, "round");
  EXPECT_TRUE(torch::equal(torch::matmul(q2b, g2b.t()), fb_t({2, 2, -4}, 1)));
  m = fb_metrics(q2b, g2b, torch::tensor({0}), torch::tensor({1, 0, 0}));
  // Positives g1 (rank 2) and g2 (rank 3): mAP (1/2 + 2/3)/2, recall1 0, recall2 1, precision@2 1/2.
  EXPECT_NEAR(m["mAP"], (0.5 + 2.0 / 3) / 2, 1e-6);
  EXPECT_EQ(m["recall1"], 0.0);
  EXPECT_EQ(m["recall2"], 1.0);
  EXPECT_NEAR(m["precision@2"], 0.5, 1e-6);
}

TEST(FeatureBinarize, GlobalKeyValues) {
  const auto parse = [](const std::string& v) {
    auto cfg = Config::from_string("Global:\n  feature_binarize: " + v + "\n", "global.yaml");
    return GlobalConfig::parse(cfg["Global"]).feature_binarize;
  };
  EXPECT_EQ(parse("sign"), "sign");
  EXPECT_EQ(parse("\"round\""), "round");
  EXPECT_EQ(parse("None"), "");
  EXPECT_EQ(parse("null"), "");
  auto cfg = Config::from_string("Global: {}\n", "global.yaml");
  EXPECT_EQ(GlobalConfig::parse(cfg["Global"]).feature_binarize, "");
  try {
    parse("hash");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected round or sign"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("global.yaml:2"), std::string::npos) << e.what();
  }
}
