// DistillationModel: sub-model outputs and names, freezing, is_rec, infer_model_name, build_arch and config
// errors, on tiny PP-LCNet models.
#include <featlearn/model/distillation_model.h>

#include <featlearn/config/config.h>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include "backbone_test_util.h"  // error_of

using namespace featlearn;
using featlearn::test::error_of;

namespace {

// A tiny RecModel body (PP-LCNet x0.25, 16-wide last conv, no dropout) for an Arch.models entry.
std::string tiny_rec(int embedding, const std::string& extra = "") {
  return "{name: RecModel, Backbone: {name: PPLCNet_x0_25, class_expand: 16, dropout_prob: 0.0}, "
         "BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 16, class_num: " +
         std::to_string(embedding) + "}, Head: {name: ArcMargin, embedding_size: " + std::to_string(embedding) +
         ", class_num: 4, margin: 0.5, scale: 10}" + extra + "}";
}

std::string arch_yaml(const std::string& top = "") {
  return "Arch:\n  name: DistillationModel\n" + top + "  models:\n    - Teacher: " + tiny_rec(8) +
         "\n    - Student: " + tiny_rec(6) + "\n";
}

ArchModelPtr make(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  auto cfg = Config::from_string(yaml, "arch.yaml");
  cfg.apply_overrides(overrides);
  return build_arch(cfg["Arch"], {3, 32, 32});
}

}  // namespace

TEST(DistillationModel, OutputsPerModelAndStateDictNames) {
  auto m = make(arch_yaml("  infer_model_name: Student\n  freeze_params_list: [True, False]\n"));
  auto* d = dynamic_cast<DistillationModelImpl*>(m.get());
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(m->arch_name(), "DistillationModel");
  EXPECT_EQ(m->model_names(), (std::vector<std::string>{"Teacher", "Student"}));
  EXPECT_EQ(&m->infer_model(), d->model("Student").get());
  m->eval();
  torch::NoGradGuard ng;
  const auto x = torch::randn({2, 3, 32, 32});
  const auto out = m->forward(x);
  ASSERT_EQ(out.models.size(), 2u);
  EXPECT_EQ(out.models[0].first, "Teacher");
  EXPECT_EQ(out.models[1].first, "Student");
  EXPECT_EQ(out.model("Teacher").backbone.sizes(), torch::IntArrayRef({2, 16}));
  EXPECT_EQ(out.model("Teacher").features.sizes(), torch::IntArrayRef({2, 8}));
  EXPECT_EQ(out.model("Student").features.sizes(), torch::IntArrayRef({2, 6}));
  EXPECT_EQ(out.model("Student").logits.sizes(), torch::IntArrayRef({2, 4}));
  // The top-level outputs are the infer model's, and equal that model run alone.
  EXPECT_TRUE(out.features.is_same(out.model("Student").features));
  EXPECT_TRUE(torch::allclose(d->model("Student")->forward(x).features, out.features));
  EXPECT_NE(error_of([&] { out.model("Studnet"); }).find("did you mean Student?"), std::string::npos);

  // PaddleClas's state-dict names: <model>.<RecModel name>; the frozen Teacher has no trainable parameter.
  int64_t teacher = 0, student = 0;
  for (const auto& p : m->named_parameters()) {
    const bool is_teacher = p.key().rfind("Teacher.", 0) == 0;
    ASSERT_TRUE(is_teacher || p.key().rfind("Student.", 0) == 0) << p.key();
    EXPECT_EQ(p.value().requires_grad(), !is_teacher) << p.key();
    (is_teacher ? teacher : student)++;
  }
  EXPECT_GT(teacher, 0);
  EXPECT_EQ(teacher, student);
  const auto params = m->named_parameters();
  EXPECT_TRUE(params.contains("Student.backbone.conv1.conv.weight"));
  EXPECT_TRUE(params.contains("Student.neck.fc.weight"));
  EXPECT_TRUE(params.contains("Teacher.head.weight"));
  EXPECT_TRUE(d->frozen("Teacher"));
  EXPECT_FALSE(d->frozen("Student"));

  // infer_model_name picks the evaluated / exported model; infer_output_key falls back to its own.
  auto t = make(arch_yaml("  infer_model_name: Teacher\n"));
  EXPECT_EQ(&t->infer_model(), dynamic_cast<DistillationModelImpl*>(t.get())->model("Teacher").get());
  EXPECT_EQ(t->infer_output_key(), "features");
  EXPECT_FALSE(t->infer_add_softmax());
}

// is_rec: the labels reach the margin heads only with is_rec: True (PaddleClas's engine passes them then).
TEST(DistillationModel, IsRecPassesLabelsToTheHeads) {
  torch::manual_seed(7);
  const auto x = torch::randn({4, 3, 32, 32});
  const auto labels = torch::tensor({0, 1, 2, 3}, torch::kLong);
  for (const bool is_rec : {false, true}) {
    SCOPED_TRACE(is_rec);
    torch::manual_seed(1);
    auto m = make(arch_yaml(std::string("  is_rec: ") + (is_rec ? "True" : "False") + "\n"));
    m->train();
    torch::NoGradGuard ng;
    const auto with = m->forward(x, labels).model("Student").logits;
    const auto without = m->forward(x).model("Student").logits;
    // ArcMargin with a label gives scale · cos(θ + m) at the target (lower than scale · cos θ); without one it is the
    // plain, unscaled cosine (as PaddleClas's ArcMargin).
    EXPECT_EQ(torch::allclose(with, without), !is_rec);
    if (is_rec) {
      const auto t_with = with.gather(1, labels.unsqueeze(1)), t_without = without.gather(1, labels.unsqueeze(1));
      EXPECT_TRUE((t_with < 10.0 * t_without).all().item<bool>()) << t_with << t_without;
    }
  }
}

TEST(DistillationModel, BuildArchAndConfigErrors) {
  auto rec = make("Arch: " + tiny_rec(8) + "\n");
  EXPECT_EQ(rec->arch_name(), "RecModel");
  EXPECT_TRUE(rec->model_names().empty());
  EXPECT_EQ(&rec->infer_model(), rec.get());

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Arch: {name: DistilationModel}\n", "did you mean DistillationModel?"},
      {"Arch: {name: DistillationModel}\n", "missing required key 'models'"},
      {arch_yaml("  infer_model_name: Studnet\n"), "arch.yaml:3: Arch.infer_model_name: infer_model_name 'Studnet' is not one of the models; did you mean Student?"},
      {arch_yaml("  freeze_params_list: [True]\n"), "Arch.freeze_params_list: expected a list with one entry per model (2)"},
      {arch_yaml("  pretrained_list: [a, b, c]\n"), "Arch.pretrained_list: expected a list with one entry per model (2)"},
      {arch_yaml("  use_sync_bn: True\n"), "Arch.use_sync_bn: unknown key"},
      {arch_yaml("  infer_output_key: logit\n"), "did you mean logits?"},
      {"Arch:\n  name: DistillationModel\n  infer_output_key: logits\n  models:\n    - Student: " +
           tiny_rec(6, ", infer_output_key: features") + "\n",
       "arch.yaml:3: Arch.infer_output_key: 'logits' contradicts arch.yaml:5: Arch.models[0].Student.infer_output_key"},
      {"Arch:\n  name: DistillationModel\n  models:\n    - Student: " + tiny_rec(8) + "\n    - Student: " + tiny_rec(8) + "\n",
       "model name 'Student' appears twice"},
      {"Arch:\n  name: DistillationModel\n  models:\n    - Teacher: " + tiny_rec(8) + "\n", "infer_model_name 'Student' is not one of the models"},
      {"Arch:\n  name: DistillationModel\n  models:\n    - Student: {name: RecModel, Backbone: {name: PPLCNet_x0_25}, Nek: {}}\n",
       "Arch.models[0].Student.Nek: unknown key; did you mean Neck?"},
  };
  for (const auto& [yaml, expected] : cases) {
    const auto msg = error_of([&] { make(yaml); });
    EXPECT_NE(msg.find(expected), std::string::npos) << yaml << "\n" << msg;
  }
  // Arch-level and model-level infer keys that agree are fine; pretrained_list entries may be null.
  auto ok = make(arch_yaml("  infer_output_key: features\n  infer_add_softmax: False\n  pretrained_list: [ckpt/teacher, null]\n"));
  const auto& pre = dynamic_cast<DistillationModelImpl*>(ok.get())->pretrained();
  ASSERT_EQ(pre.size(), 1u);
  EXPECT_EQ(pre[0], (std::pair<std::string, std::string>{"Teacher", "ckpt/teacher"}));
  // Without an Arch-level key, logits from a model whose own infer_output_key is logits.
  auto logits = make("Arch:\n  name: DistillationModel\n  models:\n    - Student: " +
                     tiny_rec(8, ", infer_output_key: logits") + "\n");
  EXPECT_EQ(logits->infer_output_key(), "logits");
}
