// Face verification accuracy (metric/face_verification.h): PaddleClas's 10-fold threshold search, by hand.
#include <featlearn/metric/face_verification.h>

#include <torch/torch.h>

#include <gtest/gtest.h>

using featlearn::evaluate_face_verification;
using featlearn::verification_accuracy;

// Ten pairs, one per fold (leave-one-out). Squared distances and issame (S same, D different):
// 0.105 S, 0.205 S, 0.305 D, 0.405 S, 0.505..1.005 D. Per test pair, the first best threshold on the other
// nine and the test result: p0 -> 0.21, right; p1 -> 0.11, wrong; p2 -> 0.41, wrong; p3 -> 0.21, wrong;
// p4..p9 -> 0.21, right. Accuracy 7/10, mean threshold (0.21 + 0.11 + 0.41 + 0.21 + 6 * 0.21) / 10 = 0.22.
TEST(FaceVerification, TenFoldThresholdSearchByHand) {
  std::vector<double> dist = {0.105, 0.205, 0.305, 0.405};
  std::vector<bool> same = {true, true, false, true};
  for (int k = 0; k < 6; ++k) dist.push_back(0.505 + 0.1 * k), same.push_back(false);
  const auto r = verification_accuracy(dist, same);
  EXPECT_NEAR(r.accuracy, 0.7, 1e-12);
  EXPECT_NEAR(r.best_threshold, 0.22, 1e-12);

  // Separable with 12 pairs (folds of 2, 2, then 1): every fold right at the first threshold above 0.5.
  std::vector<double> d2;
  std::vector<bool> s2;
  for (int p = 0; p < 12; ++p) d2.push_back(p % 2 ? 2.0 : 0.5), s2.push_back(p % 2 == 0);
  const auto sep = verification_accuracy(d2, s2);
  EXPECT_DOUBLE_EQ(sep.accuracy, 1.0);
  EXPECT_NEAR(sep.best_threshold, 0.51, 1e-12);

  // sklearn's KFold(10) needs 10 samples.
  try {
    verification_accuracy({0.1, 0.2}, {true, false});
    FAIL() << "no error";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("at least 10 pairs"), std::string::npos) << e.what();
  }
}

// Two sets: agedb_30 (identical / opposite unit vectors: all right at threshold 0.01) and lfw (every pair
// orthogonal, squared distance 2, 5 same + 5 different: leaving out a same pair the rest favours "all
// different" (t = 0), leaving out a different pair "all same" (t = 2.01), so every test pair is wrong).
TEST(FaceVerification, PerSetKeysAndMeanAsPaddleClas) {
  std::vector<float> rows;
  std::vector<int64_t> issame;
  std::vector<int> set_of;
  for (int p = 0; p < 10; ++p) {  // agedb_30
    const bool s = p % 2 == 0;
    rows.insert(rows.end(), {1.f, 0.f, s ? 1.f : -1.f, 0.f});
    issame.insert(issame.end(), {s, s});
    set_of.insert(set_of.end(), {0, 0});
  }
  for (int p = 0; p < 10; ++p) {  // lfw
    const bool s = p < 5;
    rows.insert(rows.end(), {1.f, 0.f, 0.f, 1.f});
    issame.insert(issame.end(), {s, s});
    set_of.insert(set_of.end(), {2, 2});
  }
  const auto features = torch::tensor(rows).view({40, 2});
  const auto v = evaluate_face_verification(features, issame, set_of,
                                            {"agedb_30", "cfp_fp", "lfw", "cplfw", "calfw"});
  const std::vector<std::pair<std::string, double>> want = {
      {"all_test_acc", 0.5},          {"agedb_30_test_acc", 1.0}, {"agedb_30_test_best_threshold", 0.01},
      {"agedb_30_num_test_samples", 20}, {"lfw_test_acc", 0.0},      {"lfw_test_best_threshold", 1.005},
      {"lfw_num_test_samples", 20}};
  ASSERT_EQ(v.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(v[i].first, want[i].first);
    EXPECT_NEAR(v[i].second, want[i].second, 1e-12) << want[i].first;
  }
}
