#include <featlearn/config/config.h>
#include <featlearn/metric/retrieval.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

using featlearn::Config;
using featlearn::ConfigError;
using featlearn::MetricSet;
using featlearn::MetricValues;
using featlearn::RetrievalOptions;
using featlearn::RetrievalStats;

namespace {

MetricSet metrics_from(const std::string& yaml) {
  static std::vector<Config> keep;  // ConfigNodes refer to the Config's YAML
  keep.push_back(Config::from_string("Metric:\n  Eval:\n" + yaml, "m.yaml"));
  return MetricSet::create(keep.back()["Metric"]["Eval"]);
}

const char* kAllRetrieval =
    "    - Recallk: {topk: [1, 5]}\n"
    "    - mAP: {}\n"
    "    - mINP: {}\n"
    "    - Precisionk: {topk: [1, 5]}\n";

std::map<std::string, double> as_map(const MetricValues& v) { return {v.begin(), v.end()}; }

torch::Tensor col(std::vector<float> v) { return torch::tensor(v).unsqueeze(1); }  // [N, 1] 1-D features
torch::Tensor ids(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

// Straightforward reference: stable descending sort of each row, excluded items removed.
std::map<std::string, double> naive_metrics(const torch::Tensor& scores, const torch::Tensor& ql,
                                            const torch::Tensor& gl, const torch::Tensor& qc,
                                            const torch::Tensor& gc) {
  const int64_t Q = scores.size(0), G = scores.size(1);
  double r1 = 0, r5 = 0, ap = 0, inp = 0, p1 = 0, p5 = 0;
  int valid = 0;
  for (int64_t q = 0; q < Q; ++q) {
    auto order = std::get<1>(scores[q].sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    std::vector<int> flags;
    for (int64_t i = 0; i < G; ++i) {
      const int64_t g = order[i].item<int64_t>();
      const bool same = gl[g].item<int64_t>() == ql[q].item<int64_t>();
      if (qc.defined() && same && gc[g].item<int64_t>() == qc[q].item<int64_t>()) continue;
      flags.push_back(same ? 1 : 0);
    }
    int P = 0;
    for (int f : flags) P += f;
    if (P == 0) continue;
    ++valid;
    int seen = 0, first = -1, last = -1, in1 = 0, in5 = 0;
    double a = 0;
    for (size_t i = 0; i < flags.size(); ++i) {
      if (!flags[i]) continue;
      ++seen;
      if (first < 0) first = static_cast<int>(i);
      last = static_cast<int>(i);
      a += static_cast<double>(seen) / static_cast<double>(i + 1);
      in1 += i < 1;
      in5 += i < 5;
    }
    r1 += first < 1;
    r5 += first < 5;
    ap += a / P;
    inp += static_cast<double>(P) / (last + 1);
    p1 += in1 / 1.0;
    p5 += in5 / 5.0;
  }
  return {{"recall1", r1 / valid}, {"recall5", r5 / valid}, {"mAP", ap / valid},
          {"mINP", inp / valid},   {"precision@1", p1 / valid}, {"precision@5", p5 / valid}};
}

}  // namespace

// Query q has feature [±1] and gallery items are 1-D, so the similarity is ±(gallery value): rankings are known.
// Gallery (value, label): g0 (.9, 1), g1 (.8, 0), g2 (.7, 2), g3 (.6, 0), g4 (.5, 1), g5 (.4, 0).
TEST(Retrieval, HandBuiltRankingsGiveHandComputedMetrics) {
  const auto gf = col({0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f});
  const auto gl = ids({1, 0, 2, 0, 1, 0});
  const auto qf = col({1.f, -1.f, 1.f, 1.f, 1.f});
  const auto ql = ids({0, 1, 2, 7, 1});
  // q0 (label 0, +): g0 g1* g2 g3* g4 g5*  -> ranks 2,4,6: AP=(1/2+2/4+3/6)/3=.5, INP=3/6, P@1=0, P@5=2/5
  // q1 (label 1, -): g5 g4* g3 g2 g1 g0*   -> ranks 2,6:   AP=(1/2+2/6)/2=5/12, INP=2/6, P@5=1/5
  // q2 (label 2, +): rank 3:                AP=1/3, INP=1/3, P@5=1/5
  // q3 (label 7): no match -> skipped by every metric
  // q4 (label 1, +): g0* g1 g2 g3 g4*      -> ranks 1,5:   AP=(1+2/5)/2=.7, INP=2/5, P@1=1, P@5=2/5
  RetrievalStats stats;
  const auto v = featlearn::evaluate_retrieval(metrics_from(kAllRetrieval), qf, ql, {}, gf, gl, {},
                                               RetrievalOptions{}, &stats);
  ASSERT_EQ(v.size(), 6u);
  const std::vector<std::string> order = {"recall1", "recall5", "mAP", "mINP", "precision@1", "precision@5"};
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(v[i].first, order[i]);
  EXPECT_DOUBLE_EQ(v[0].second, 1.0 / 4);                              // only q4 hits at rank 1
  EXPECT_DOUBLE_EQ(v[1].second, 1.0);                                  // every first match within 5
  EXPECT_NEAR(v[2].second, (0.5 + 5.0 / 12 + 1.0 / 3 + 0.7) / 4, 1e-12);  // 0.4875
  EXPECT_NEAR(v[3].second, (0.5 + 1.0 / 3 + 1.0 / 3 + 0.4) / 4, 1e-12);  // 0.391667
  EXPECT_DOUBLE_EQ(v[4].second, 1.0 / 4);
  EXPECT_NEAR(v[5].second, (0.4 + 0.2 + 0.2 + 0.4) / 4, 1e-12);  // 0.3
  EXPECT_EQ(stats.num_queries, 5);
  EXPECT_EQ(stats.queries_without_match, 1);
  EXPECT_EQ(stats.num_excluded, 0);
}

// Query (label 0, camera 1, feature [1]) against (value, label, camera):
// g0 (.9,0,1) excluded, g1 (.8,1,1) kept (other id, same camera), g2 (.7,0,2) match, g3 (.6,2,2),
// g4 (.5,0,1) excluded, g5 (.4,0,3) match.
TEST(Retrieval, SameLabelSameCameraIsExcludedOtherCameraKept) {
  const auto gf = col({0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f});
  const auto gl = ids({0, 1, 0, 2, 0, 0});
  const auto gc = ids({1, 1, 2, 2, 1, 3});
  const auto m = metrics_from("    - Recallk: {topk: [1, 2]}\n    - mAP: {}\n    - mINP: {}\n");
  RetrievalStats stats;
  // With cameras: ranking g1 g2* g3 g5* -> ranks 2, 4: recall1=0, recall2=1, AP=(1/2+2/4)/2=.5, INP=2/4.
  auto v = as_map(featlearn::evaluate_retrieval(m, col({1.f}), ids({0}), ids({1}), gf, gl, gc, {}, &stats));
  EXPECT_DOUBLE_EQ(v.at("recall1"), 0.0);
  EXPECT_DOUBLE_EQ(v.at("recall2"), 1.0);
  EXPECT_DOUBLE_EQ(v.at("mAP"), 0.5);
  EXPECT_DOUBLE_EQ(v.at("mINP"), 0.5);
  EXPECT_EQ(stats.num_excluded, 2);
  // Without cameras nothing is excluded: g0* g1 g2* g3 g4* g5* -> ranks 1,3,5,6:
  // AP=(1+2/3+3/5+4/6)/4, INP=4/6.
  v = as_map(featlearn::evaluate_retrieval(m, col({1.f}), ids({0}), {}, gf, gl, {}, {}));
  EXPECT_DOUBLE_EQ(v.at("recall1"), 1.0);
  EXPECT_NEAR(v.at("mAP"), (1 + 2.0 / 3 + 3.0 / 5 + 4.0 / 6) / 4, 1e-12);
  EXPECT_NEAR(v.at("mINP"), 4.0 / 6, 1e-12);
}

// PaddleClas multiplies excluded similarities by 0 and keeps them in the ranking as non-matches, so with
// negative similarities an excluded item (score -0.1 -> 0) ranks above the true match (score -0.2) and gives
// recall1 = 0. Excluded items must not take part in the ranking at all: recall1 = 1 here.
TEST(Retrieval, ExcludedItemsLeaveTheRankingEvenWithNegativeScores) {
  const auto v = as_map(featlearn::evaluate_retrieval(metrics_from("    - Recallk: {topk: [1]}\n    - mAP: {}\n"),
                                                      col({1.f}), ids({0}), ids({1}), col({-0.1f, -0.2f}),
                                                      ids({0, 0}), ids({1, 2}), {}));
  EXPECT_DOUBLE_EQ(v.at("recall1"), 1.0);
  EXPECT_DOUBLE_EQ(v.at("mAP"), 1.0);
}

// Query set = gallery set with cameras: each item's own entry (same label, same camera) is excluded.
// Items (label, cam, feature): 0 (0,0,[1,0]), 1 (0,1,[.8,.6]), 2 (1,0,[.6,.8]), 3 (1,1,[0,1]).
// Similarities: s01=.8 s02=.6 s03=0 s12=.96 s13=.6 s23=.8.
// item0: 1*(.8) 2(.6) 3(0)   -> match at rank 1, AP 1
// item1: 2(.96) 0*(.8) 3     -> rank 2, AP .5
// item2: 1(.96) 3*(.8) 0     -> rank 2, AP .5
// item3: 2*(.8) 1 0          -> rank 1, AP 1
TEST(Retrieval, QueryEqualsGalleryExcludesItself) {
  const auto f = torch::tensor({1.f, 0.f, .8f, .6f, .6f, .8f, 0.f, 1.f}).reshape({4, 2});
  const auto l = ids({0, 0, 1, 1});
  const auto c = ids({0, 1, 0, 1});
  const auto v = as_map(featlearn::evaluate_retrieval(metrics_from(kAllRetrieval), f, l, c, f, l, c, {}));
  EXPECT_DOUBLE_EQ(v.at("recall1"), 0.5);
  EXPECT_DOUBLE_EQ(v.at("recall5"), 1.0);
  EXPECT_DOUBLE_EQ(v.at("mAP"), 0.75);
  EXPECT_DOUBLE_EQ(v.at("mINP"), 0.75);  // one match per query: INP = AP
  EXPECT_DOUBLE_EQ(v.at("precision@1"), 0.5);
  EXPECT_DOUBLE_EQ(v.at("precision@5"), 0.2);  // one match within the top 5 (k larger than the ranking)
}

// Equal scores are ranked by gallery index: all four gallery scores are .5, labels (1,0,0,1): the label-0
// matches g1 and g2 are at ranks 2 and 3 -> AP = (1/2 + 2/3)/2, INP = 2/3.
TEST(Retrieval, TiesAreBrokenByGalleryIndex) {
  const auto v = as_map(featlearn::evaluate_retrieval(metrics_from("    - mAP: {}\n    - mINP: {}\n"),
                                                      col({1.f}), ids({0}), {}, col({.5f, .5f, .5f, .5f}),
                                                      ids({1, 0, 0, 1}), {}, {}));
  EXPECT_NEAR(v.at("mAP"), (0.5 + 2.0 / 3) / 2, 1e-12);
  EXPECT_NEAR(v.at("mINP"), 2.0 / 3, 1e-12);
}

// descending: false ranks the smallest score first. Gallery as in the first test, query label 0:
// g5* g4 g3* g2 g1* g0 -> ranks 1,3,5: AP = (1 + 2/3 + 3/5)/3.
TEST(Retrieval, AscendingOrder) {
  const auto m = metrics_from("    - Recallk: {topk: 1, descending: false}\n    - mAP: {descending: false}\n");
  const auto v = as_map(featlearn::evaluate_retrieval(m, col({1.f}), ids({0}), {},
                                                      col({0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f}),
                                                      ids({1, 0, 2, 0, 1, 0}), {}, {}));
  EXPECT_DOUBLE_EQ(v.at("recall1"), 1.0);
  EXPECT_NEAR(v.at("mAP"), (1 + 2.0 / 3 + 3.0 / 5) / 3, 1e-12);
}

TEST(Retrieval, NoQueryWithAMatchGivesNaN) {
  RetrievalStats stats;
  // The only same-label gallery item shares the query's camera: nothing is left to find.
  const auto v = featlearn::evaluate_retrieval(metrics_from("    - Recallk: {topk: [1]}\n    - mAP: {}\n"),
                                               col({1.f, 1.f}), ids({0, 3}), ids({1, 1}), col({.5f, .2f}),
                                               ids({0, 1}), ids({1, 2}), {}, &stats);
  EXPECT_TRUE(std::isnan(v[0].second));
  EXPECT_TRUE(std::isnan(v[1].second));
  EXPECT_EQ(stats.queries_without_match, 2);
  EXPECT_EQ(stats.num_excluded, 1);
}

// Random small integer features (many ties), labels and cameras: every block size gives bit-identical
// results (PaddleClas's per-block averaging does not), and they equal a plain stable-sort reference.
TEST(Retrieval, BlockSizeDoesNotChangeResultsAndMatchesSortReference) {
  torch::manual_seed(7);
  const auto qf = torch::randint(-2, 3, {37, 8}).to(torch::kFloat);
  const auto gf = torch::randint(-2, 3, {101, 8}).to(torch::kFloat);
  const auto ql = torch::randint(0, 6, {37}, torch::kLong), gl = torch::randint(0, 6, {101}, torch::kLong);
  const auto qc = torch::randint(0, 3, {37}, torch::kLong), gc = torch::randint(0, 3, {101}, torch::kLong);
  const auto m = metrics_from(kAllRetrieval);
  MetricValues first;
  for (int64_t block : {1, 7, 64, 1000}) {
    RetrievalOptions opt;
    opt.block_size = block;
    const auto v = featlearn::evaluate_retrieval(m, qf, ql, qc, gf, gl, gc, opt);
    if (first.empty()) first = v;
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i].second, first[i].second) << v[i].first << " block " << block;
  }
  auto ref = naive_metrics(qf.mm(gf.t()), ql, gl, qc, gc);
  for (const auto& [k, x] : first) EXPECT_NEAR(x, ref.at(k), 1e-12) << k;
  // Without cameras as well.
  const auto v = featlearn::evaluate_retrieval(m, qf, ql, {}, gf, gl, {}, {});
  ref = naive_metrics(qf.mm(gf.t()), ql, gl, {}, {});
  for (const auto& [k, x] : v) EXPECT_NEAR(x, ref.at(k), 1e-12) << k;
}

// CUDA features are multiplied on the device and ranked on the CPU. Small integer features make every dot
// product exact, so the results must be identical.
TEST(Retrieval, CudaFeaturesGiveTheCpuResult) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const auto qf = torch::randint(-2, 3, {50, 16}).to(torch::kFloat);
  const auto gf = torch::randint(-2, 3, {300, 16}).to(torch::kFloat);
  const auto ql = torch::randint(0, 8, {50}, torch::kLong), gl = torch::randint(0, 8, {300}, torch::kLong);
  const auto qc = torch::randint(0, 3, {50}, torch::kLong), gc = torch::randint(0, 3, {300}, torch::kLong);
  const auto m = metrics_from(kAllRetrieval);
  const auto cpu = featlearn::evaluate_retrieval(m, qf, ql, qc, gf, gl, gc, {});
  const auto gpu = featlearn::evaluate_retrieval(m, qf.cuda(), ql.cuda(), qc.cuda(), gf.cuda(), gl.cuda(), gc.cuda(), {});
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_EQ(cpu[i], gpu[i]) << cpu[i].first;
}

TEST(Retrieval, RejectsBadInputs) {
  const auto m = metrics_from("    - mAP: {}\n");
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_retrieval(m, col({1.f}), ids({0}), ids({0}), col({1.f}), ids({0}), {}, {});
            }).find("for both query and gallery"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_retrieval(m, torch::ones({1, 2}), ids({0}), {}, torch::ones({1, 3}), ids({0}), {}, {});
            }).find("dimension"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_retrieval(m, col({NAN}), ids({0}), {}, col({1.f}), ids({0}), {}, {});
            }).find("NaN"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_retrieval(m, col({1.f}), ids({0, 1}), {}, col({1.f}), ids({0}), {}, {});
            }).find("query labels: expected 1 values"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_retrieval(metrics_from("    - TopkAcc: {topk: [1]}\n"), col({1.f}), ids({0}), {},
                                            col({1.f}), ids({0}), {}, {});
            }).find("TopkAcc is a classification metric"),
            std::string::npos);
}

// Logits (label): s0 [.1 .5 .2 .3] (3) rank 1; s1 [2 1 0 -1] (0) rank 0; s2 [.5 .5 .5 .1] (2) rank 2
// (ties with classes 0 and 1, lower index first). top1 = 1/3, top2 = 2/3, top3 = 1; top5 > 4 classes dropped.
TEST(Classification, TopkAcc) {
  const auto logits = torch::tensor({.1f, .5f, .2f, .3f, 2.f, 1.f, 0.f, -1.f, .5f, .5f, .5f, .1f}).reshape({3, 4});
  const auto v = featlearn::evaluate_classification(metrics_from("    - TopkAcc: {topk: [1, 2, 3, 5]}\n"), logits,
                                                    ids({3, 0, 2}).unsqueeze(1));
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0].first, "top1");
  EXPECT_DOUBLE_EQ(v[0].second, 1.0 / 3);
  EXPECT_EQ(v[1].first, "top2");
  EXPECT_DOUBLE_EQ(v[1].second, 2.0 / 3);
  EXPECT_DOUBLE_EQ(v[2].second, 1.0);
  EXPECT_NE(message_of([&] {
              featlearn::evaluate_classification(metrics_from("    - TopkAcc: {}\n"), logits, ids({3, 0, 4}));
            }).find("label 4 is outside [0, 4)"),
            std::string::npos);
  EXPECT_NE(message_of([&] { featlearn::evaluate_classification(metrics_from("    - mAP: {}\n"), logits, ids({0, 0, 0})); })
                .find("retrieval metrics"),
            std::string::npos);
}

TEST(MetricConfig, ParsesPaddleClasListsInOrder) {
  auto m = metrics_from("    - Recallk:\n        topk: [1, 5]\n    - mAP: {}\n    - mINP:\n    - Precisionk: {topk: 10}\n");
  EXPECT_EQ(m.keys(), (std::vector<std::string>{"recall1", "recall5", "mAP", "mINP", "precision@10"}));
  EXPECT_TRUE(m.has_retrieval());
  EXPECT_FALSE(m.has_classification());
  m = metrics_from("    - TopkAcc: {}\n");  // default topk (1, 5) as PaddleClas
  EXPECT_EQ(m.keys(), (std::vector<std::string>{"top1", "top5"}));
}

TEST(MetricConfig, ErrorsNameTheKey) {
  auto err = [](const std::string& yaml) {
    try {
      metrics_from(yaml);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  std::string e = err("    - Recalk: {topk: [1]}\n");
  EXPECT_NE(e.find("unknown Metric 'Recalk'"), std::string::npos) << e;
  EXPECT_NE(e.find("Recallk"), std::string::npos) << e;
  EXPECT_NE(e.find("m.yaml:3"), std::string::npos) << e;
  e = err("    - Recallk: {top_k: [1]}\n");
  EXPECT_NE(e.find("Metric.Eval[0].Recallk.top_k"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key"), std::string::npos) << e;
  e = err("    - mAP: {topk: 3}\n");
  EXPECT_NE(e.find("unknown key"), std::string::npos) << e;
  e = err("    - Precisionk: {topk: [0]}\n");
  EXPECT_NE(e.find("topk values must be >= 1"), std::string::npos) << e;
  e = err("    - Recallk: {topk: [1]}\n    - mAP: {descending: false}\n");
  EXPECT_NE(e.find("same `descending`"), std::string::npos) << e;
  e = err("    - Recallk: {topk: [1]}\n    - Recallk: {topk: [1, 5]}\n");
  EXPECT_NE(e.find("'recall1' is listed twice"), std::string::npos) << e;
  e = err("    - Recallk: {topk: [one]}\n");
  EXPECT_NE(e.find("Recallk.topk"), std::string::npos) << e;
}

// Fixture: a numpy transcription of PaddleClas's compute_re_ranking_dist (feature_normed=False branch, float32
// where PaddleClas uses float16) on these 4 query and 8 gallery features (3 clusters).
namespace {
const float kQ[4][4] = {{2.14f, 1.12f, 0.12f, -2.03f},
                        {-0.50f, -0.97f, 0.31f, -1.07f},
                        {-0.52f, -0.56f, -0.72f, 0.98f},
                        {1.38f, 0.15f, 0.35f, -1.93f}};
const float kG[8][4] = {{1.48f, 0.34f, 0.39f, -1.07f},  {1.29f, 0.19f, -0.23f, -2.83f},
                        {-0.65f, -0.76f, 0.37f, -0.68f}, {-0.93f, -0.10f, -0.23f, -1.32f},
                        {-0.28f, -0.71f, -1.66f, 0.90f}, {-0.94f, -0.58f, -0.91f, 1.23f},
                        {2.23f, 0.88f, 0.69f, -2.31f},   {0.06f, -1.10f, -0.32f, -1.39f}};
const float kK1_3_K2_2[4][8] = {
    {0.369368f, 0.395930f, 0.864599f, 0.843860f, 0.961276f, 1.000000f, 0.005847f, 0.822893f},
    {0.834811f, 0.889663f, 0.005311f, 0.056311f, 0.888203f, 0.870197f, 1.000000f, 0.048527f},
    {0.836909f, 0.948502f, 0.753464f, 0.778979f, 0.025102f, 0.003680f, 1.000000f, 0.785595f},
    {0.013505f, 0.369645f, 0.811706f, 0.804762f, 0.966647f, 1.000000f, 0.369951f, 0.769395f}};
// k1=20, k2=6 (more neighbours than items: every set is capped at the 12 items).
const float kK1_20_K2_6[4][8] = {
    {0.025413f, 0.029295f, 0.399949f, 0.337058f, 0.500678f, 0.544250f, 0.005847f, 0.271382f},
    {0.328008f, 0.382860f, 0.062178f, 0.030959f, 0.265293f, 0.252648f, 0.493198f, 0.075534f},
    {0.381159f, 0.492752f, 0.090485f, 0.161430f, 0.023087f, 0.003680f, 0.544250f, 0.213278f},
    {0.013505f, 0.019832f, 0.347056f, 0.297960f, 0.506050f, 0.544250f, 0.025995f, 0.217885f}};
}  // namespace

TEST(ReRanking, MatchesPaddleClasTranscription) {
  const auto q = torch::from_blob(const_cast<float*>(&kQ[0][0]), {4, 4}).clone();
  const auto g = torch::from_blob(const_cast<float*>(&kG[0][0]), {8, 4}).clone();
  auto d = featlearn::re_ranking_distance(q, g, {3, 2, 0.3});
  auto want = torch::from_blob(const_cast<float*>(&kK1_3_K2_2[0][0]), {4, 8});
  EXPECT_TRUE(torch::allclose(d, want, 1e-5, 2e-5)) << d << want;
  d = featlearn::re_ranking_distance(q, g, {20, 6, 0.3});
  want = torch::from_blob(const_cast<float*>(&kK1_20_K2_6[0][0]), {4, 8});
  EXPECT_TRUE(torch::allclose(d, want, 1e-5, 2e-5)) << d << want;
}

TEST(ReRanking, EvaluationUsesReRankedDistances) {
  const auto q = torch::from_blob(const_cast<float*>(&kQ[0][0]), {4, 4}).clone();
  const auto g = torch::from_blob(const_cast<float*>(&kG[0][0]), {8, 4}).clone();
  const auto ql = ids({0, 1, 2, 0}), gl = ids({0, 0, 1, 1, 2, 2, 0, 1});
  RetrievalOptions opt;
  opt.re_ranking = true;
  opt.block_size = 3;
  const auto v = featlearn::evaluate_retrieval(metrics_from(kAllRetrieval), q, ql, {}, g, gl, {}, opt);
  const auto ref = naive_metrics(-featlearn::re_ranking_distance(q, g), ql, gl, {}, {});
  for (const auto& [k, x] : v) EXPECT_NEAR(x, ref.at(k), 1e-12) << k;
}

TEST(ReRanking, RefusesLargeSets) {
  const auto e = message_of([] {
    featlearn::re_ranking_distance(torch::zeros({1, 1}), torch::zeros({featlearn::kMaxReRankingItems, 1}));
  });
  EXPECT_NE(e.find("exceed the limit"), std::string::npos) << e;
  EXPECT_NE(e.find("Global.re_ranking: false"), std::string::npos) << e;
}
