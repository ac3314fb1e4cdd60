// Distillation losses: hand-computed values, central-difference gradients for both models of a pair, term
// names and weights in CombinedLoss, and the config / model checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <featlearn/config/config.h>
#include <featlearn/loss/distillation_losses.h>
#include <featlearn/loss/loss.h>

#include "gradient_check.h"
#include "../model/backbone_test_util.h"  // error_of

#include <cmath>

using namespace featlearn;
using featlearn::test::error_of;

namespace {

const auto kDouble = torch::TensorOptions().dtype(torch::kDouble);

torch::Tensor mat(std::vector<std::vector<double>> rows) {
  std::vector<torch::Tensor> r;
  for (const auto& row : rows) r.push_back(torch::tensor(row, kDouble));
  return torch::stack(r);
}

// A DistillationModel output with the given per-model logits (and backbone = logits).
ModelOutput distill_output(const std::vector<std::pair<std::string, torch::Tensor>>& logits) {
  ModelOutput out;
  for (const auto& [name, l] : logits) {
    ModelOutput m;
    m.logits = l;
    m.backbone = l;
    m.features = l;
    out.models.emplace_back(name, m);
  }
  return out;
}

CombinedLoss combined(const std::string& yaml) {
  auto cfg = Config::from_string(yaml, "loss.yaml");
  return CombinedLoss(cfg["Train"]);
}

}  // namespace

// softmax([0, 0]) = [1/2, 1/2], softmax([ln 3, 0]) = [3/4, 1/4]. Σ_c C/2 (q−p) ln(q/p) with C = 2 is
// 1/4 ln(3/2) + 1/4 ln 2 = 1/4 ln 3 (summed over the class axis); the mean over elements halves it.
TEST(DMLLoss, HandComputedSoftmaxSigmoidAndNoActivation) {
  const double sum_value = 0.25 * std::log(3.0);
  const auto x = mat({{0, 0}}), t = mat({{std::log(3.0), 0}});
  EXPECT_NEAR(dml_loss(x, t).item<double>(), sum_value / 2, 1e-9);
  EXPECT_NEAR(dml_loss(x, t, DMLLossOptions().sum_across_class_dim(true)).item<double>(), sum_value, 1e-9);
  // Symmetric in its two inputs.
  EXPECT_NEAR(dml_loss(t, x).item<double>(), sum_value / 2, 1e-9);
  // sigmoid(0) = 1/2, sigmoid(±ln 3) = 3/4, 1/4: the same probabilities element by element.
  const auto ts = mat({{std::log(3.0), -std::log(3.0)}});
  EXPECT_NEAR(dml_loss(x, ts, DMLLossOptions().act("sigmoid")).item<double>(), sum_value / 2, 1e-9);
  // No activation: the inputs are the probabilities.
  EXPECT_NEAR(dml_loss(mat({{0.5, 0.5}}), mat({{0.75, 0.25}}), DMLLossOptions().act("")).item<double>(),
              sum_value / 2, 1e-9);
  // Identical distributions: zero. Two rows: the mean over rows.
  EXPECT_NEAR(dml_loss(t, t).item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(dml_loss(mat({{0, 0}, {1, 1}}), mat({{std::log(3.0), 0}, {1, 1}}),
                       DMLLossOptions().sum_across_class_dim(true)).item<double>(),
              sum_value / 2, 1e-9);
}

TEST(DMLLoss, GradientsReachBothModels) {
  torch::manual_seed(4);
  const auto a = torch::randn({3, 5}, kDouble), b = torch::randn({3, 5}, kDouble);
  for (const std::string act : {"softmax", "sigmoid"}) {
    SCOPED_TRACE(act);
    const auto o = DMLLossOptions().act(act);
    expect_gradients_match([&](const torch::Tensor& v) { return dml_loss(v, b, o); }, a);
    expect_gradients_match([&](const torch::Tensor& v) { return dml_loss(a, v, o); }, b);
  }
  const auto o = DMLLossOptions().sum_across_class_dim(true);
  expect_gradients_match([&](const torch::Tensor& v) { return dml_loss(v, b, o); }, a);
}

// d = x − y = [1, 2, 3, −2].
TEST(DistanceLoss, HandComputedModes) {
  const auto x = mat({{1, 2}, {3, 4}}), y = mat({{0, 0}, {0, 6}});
  EXPECT_NEAR(distance_loss(x, y).item<double>(), (1 + 4 + 9 + 4) / 4.0, 1e-12);
  EXPECT_NEAR(distance_loss(x, y, DistanceLossOptions().reduction("sum")).item<double>(), 18.0, 1e-12);
  EXPECT_NEAR(distance_loss(x, y, DistanceLossOptions().mode("l1")).item<double>(), 8 / 4.0, 1e-12);
  // Huber, delta 1: 0.5, 2 − 0.5, 3 − 0.5, 2 − 0.5.
  EXPECT_NEAR(distance_loss(x, y, DistanceLossOptions().mode("smooth_l1")).item<double>(), 6 / 4.0, 1e-12);
  // delta 2.5: 0.5·1, 0.5·4, 2.5·3 − 0.5·6.25, 0.5·4.
  EXPECT_NEAR(distance_loss(x, y, DistanceLossOptions().mode("smooth_l1").delta(2.5)).item<double>(),
              (0.5 + 2 + 4.375 + 2) / 4, 1e-12);
  EXPECT_NE(error_of([&] { distance_loss(x, mat({{1, 2, 3}})); }).find("same shape"), std::string::npos);
}

TEST(DistanceLoss, GradientsReachBothModels) {
  torch::manual_seed(5);
  const auto a = torch::randn({3, 4}, kDouble), b = torch::randn({3, 4}, kDouble);
  for (const std::string mode : {"l1", "l2", "smooth_l1"}) {
    SCOPED_TRACE(mode);
    const auto o = DistanceLossOptions().mode(mode).delta(0.7);
    expect_gradients_match([&](const torch::Tensor& v) { return distance_loss(v, b, o); }, a);
    expect_gradients_match([&](const torch::Tensor& v) { return distance_loss(a, v, o); }, b);
  }
}

// The GeneralRecognition_PPLCNet_x2_5_udml loss list: terms named as PaddleClas's loss dict, each weighted.
TEST(DistillationLosses, TermsAndWeightsInCombinedLoss) {
  auto loss = combined(R"(Train:
  - DistillationGTCELoss: {weight: 0.5, key: logits, model_names: [Student, Teacher]}
  - DistillationDMLLoss: {weight: 2.0, key: logits, model_name_pairs: [[Student, Teacher]]}
  - DistillationDistanceLoss: {weight: 3.0, key: backbone, model_name_pairs: [[Student, Teacher]]}
)");
  const auto student = mat({{0, 0}}), teacher = mat({{std::log(3.0), 0}});
  const auto out = distill_output({{"Teacher", teacher}, {"Student", student}});
  const auto labels = torch::tensor({1}, torch::kLong);
  const auto r = loss->forward(out, labels);
  ASSERT_EQ(r.terms.size(), 4u);
  EXPECT_EQ(r.terms[0].first, "DistillationGTCELoss.CELoss_Student");
  EXPECT_EQ(r.terms[1].first, "DistillationGTCELoss.CELoss_Teacher");
  EXPECT_EQ(r.terms[2].first, "DistillationDMLLoss.DMLLoss_Student_Teacher_0");
  EXPECT_EQ(r.terms[3].first, "DistillationDistanceLoss.loss_l2_loss_l2_0");
  // Label 1: the Student's [0, 0] gives p(1) = 1/2, the Teacher's [ln 3, 0] p(1) = 1/4.
  EXPECT_NEAR(r.terms[0].second.item<double>(), std::log(2.0), 1e-9);
  EXPECT_NEAR(r.terms[1].second.item<double>(), std::log(4.0), 1e-9);
  // backbone = logits here: d = [−ln 3, 0], mean square ln²3 / 2.
  const double dml = 0.25 * std::log(3.0) / 2, l2 = std::log(3.0) * std::log(3.0) / 2;
  EXPECT_NEAR(r.terms[2].second.item<double>(), dml, 1e-9);
  EXPECT_NEAR(r.terms[3].second.item<double>(), l2, 1e-9);
  EXPECT_NEAR(r.total.item<double>(), 0.5 * (std::log(2.0) + std::log(4.0)) + 2.0 * dml + 3.0 * l2, 1e-9);
  // forward() of each loss is the sum of its terms.
  EXPECT_NEAR(loss->loss("DistillationGTCELoss")->forward(out, labels).item<double>(),
              std::log(2.0) + std::log(4.0), 1e-9);

  // Several pairs: one term each, indexed; GTCE's epsilon smooths as CELoss; DML act null uses raw values.
  auto more = combined(R"(Train:
  - DistillationDMLLoss: {key: logits, act: null, model_name_pairs: [[Student, Teacher], [Teacher, Student]]}
  - DistillationDistanceLoss: {key: logits, mode: l1, name: kd_, act: softmax, model_name_pairs: [[Student, Teacher]]}
  - DistillationGTCELoss: {model_names: [Student], epsilon: 0.1}
)");
  const auto p = mat({{0.5, 0.5}}), q = mat({{0.75, 0.25}});
  const auto r2 = more->forward(distill_output({{"Teacher", q}, {"Student", p}}), torch::tensor({0}, torch::kLong));
  ASSERT_EQ(r2.terms.size(), 4u);
  EXPECT_EQ(r2.terms[0].first, "DistillationDMLLoss.DMLLoss_Student_Teacher_0");
  EXPECT_EQ(r2.terms[1].first, "DistillationDMLLoss.DMLLoss_Teacher_Student_1");
  EXPECT_NEAR(r2.terms[0].second.item<double>(), 0.25 * std::log(3.0) / 2, 1e-9);
  EXPECT_NEAR(r2.terms[1].second.item<double>(), 0.25 * std::log(3.0) / 2, 1e-9);
  EXPECT_EQ(r2.terms[2].first, "DistillationDistanceLoss.kd_l1_loss_l1_0");
  const auto sp = torch::softmax(p, -1), sq = torch::softmax(q, -1);
  EXPECT_NEAR(r2.terms[2].second.item<double>(), (sp - sq).abs().mean().item<double>(), 1e-12);
  EXPECT_EQ(r2.terms[3].first, "DistillationGTCELoss.CELoss_Student");
  // Label 0, p = [1/2, 1/2], ε = 0.1: target [0.95, 0.05] · −ln(1/2) each = ln 2.
  EXPECT_NEAR(r2.terms[3].second.item<double>(), std::log(2.0), 1e-9);
}

// PaddleClas's CombinedLoss keeps only the first term of a single-entry list (unweighted) and lets an equal
// term key of a later entry replace an earlier one in the sum; featlearn weights and sums every term
// (docs/paddleclas-differences.md, KD4).
TEST(DistillationLosses, EveryTermCountsAlsoAloneOrRepeated) {
  const auto out = distill_output({{"Teacher", mat({{std::log(3.0), 0}})}, {"Student", mat({{0, 0}})}});
  const auto labels = torch::tensor({1}, torch::kLong);
  auto alone = combined("Train:\n  - DistillationGTCELoss: {weight: 0.5, model_names: [Student, Teacher]}\n");
  EXPECT_NEAR(alone->forward(out, labels).total.item<double>(), 0.5 * (std::log(2.0) + std::log(4.0)), 1e-9);
  auto twice = combined(R"(Train:
  - DistillationGTCELoss: {weight: 1.0, model_names: [Student]}
  - DistillationGTCELoss: {weight: 2.0, model_names: [Student]}
)");
  const auto r = twice->forward(out, labels);
  ASSERT_EQ(r.terms.size(), 2u);
  EXPECT_EQ(r.terms[0].first, "DistillationGTCELoss.CELoss_Student");
  EXPECT_EQ(r.terms[1].first, "DistillationGTCELoss_2.CELoss_Student");
  EXPECT_NEAR(r.total.item<double>(), 3.0 * std::log(2.0), 1e-9);
}

TEST(DistillationLosses, ModelChecksAndConfigErrors) {
  auto gtce = combined("Train:\n  - DistillationGTCELoss: {weight: 1.0, model_names: [Studnet]}\n");
  auto msg = error_of([&] { gtce->check_models({"Teacher", "Student"}); });
  EXPECT_NE(msg.find("loss.yaml:2: Train[0].DistillationGTCELoss: DistillationGTCELoss reads model 'Studnet'"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean Student?"), std::string::npos) << msg;
  msg = error_of([&] { gtce->check_models({}); });
  EXPECT_NE(msg.find("but Arch is a RecModel"), std::string::npos) << msg;
  auto ce = combined("Train:\n  - CELoss: {weight: 1.0}\n");
  msg = error_of([&] { ce->check_models({"Teacher", "Student"}); });
  EXPECT_NE(msg.find("CELoss reads a single model's output, but Arch is a DistillationModel"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { ce->check_models({}); }), "(no error)");
  auto ok = combined("Train:\n  - DistillationDMLLoss: {key: logits, model_name_pairs: [[Student, Teacher]]}\n");
  EXPECT_EQ(error_of([&] { ok->check_models({"Teacher", "Student"}); }), "(no error)");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"- DistillationDMLLoss: {model_name_pairs: [[Student, Teacher]]}", "missing required key 'key'"},
      {"- DistillationDMLLoss: {key: logit, model_name_pairs: [[Student, Teacher]]}", "did you mean logits?"},
      {"- DistillationDMLLoss: {key: logits, model_name_pairs: [[Student]]}", "expected a pair of model names"},
      {"- DistillationDMLLoss: {key: logits, model_name_pairs: [[S, T]], weight_ratio: True}", "only False"},
      {"- DistillationDMLLoss: {key: logits, model_name_pairs: [[S, T]], act: tanh}", "expected softmax, sigmoid"},
      {"- DistillationDMLLoss: {key: logits, model_name_pairs: [[S, T]], eps: 0.1}", "eps: unknown key"},
      {"- DistillationDistanceLoss: {key: backbone, model_name_pairs: [[S, T]], mode: l3}", "expected l1, l2 or smooth_l1"},
      {"- DistillationDistanceLoss: {key: backbone, model_name_pairs: [[S, T]], delta: 2}", "only mode: smooth_l1"},
      {"- DistillationDistanceLoss: {key: backbone, model_name_pairs: [[S, T]], reduction: none}", "must be a scalar"},
      {"- DistillationDistanceLoss: {key: backbone}", "missing required key 'model_name_pairs'"},
      {"- DistillationGTCELoss: {model_names: []}", "at least one model"},
  };
  for (const auto& [item, expected] : bad) {
    msg = error_of([&] { combined("Train:\n  " + item + "\n"); });
    EXPECT_NE(msg.find(expected), std::string::npos) << item << "\n" << msg;
  }
}
