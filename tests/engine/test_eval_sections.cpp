// DataLoader.Eval forms: Query + Gallery, PaddleClas's single set under any key name (gallery = query), and
// the classification form with dataset / sampler / loader directly under Eval.
#include <featlearn/config/config.h>
#include <featlearn/engine/trainer.h>
#include <gtest/gtest.h>

using namespace featlearn;

namespace {
std::string section_name(const std::string& yaml, bool* has_gallery) {
  auto c = Config::from_string(yaml, "eval.yaml");
  auto [q, g] = eval_sections(c["Eval"]);
  *has_gallery = g.has_value();
  return q.path();
}
}  // namespace

TEST(EvalSections, AllPaddleClasForms) {
  bool gallery = false;
  EXPECT_EQ(section_name("Eval:\n  Query: {dataset: {name: A}}\n  Gallery: {dataset: {name: B}}\n", &gallery),
            "Eval.Query");
  EXPECT_TRUE(gallery);
  // One set, any name: PaddleClas uses it as both query and gallery (featlearn once rejected "Gallery").
  for (const std::string key : {"Gallery", "Query", "Test", "QueryGallery"}) {
    EXPECT_EQ(section_name("Eval:\n  " + key + ": {dataset: {name: A}}\n", &gallery), "Eval." + key);
    EXPECT_FALSE(gallery) << key;
  }
  EXPECT_EQ(section_name("Eval:\n  dataset: {name: A}\n  sampler: {name: S}\n", &gallery), "Eval");
  EXPECT_FALSE(gallery);
  auto c = Config::from_string("Eval:\n  Gallery: {dataset: {name: A}}\n  Other: {dataset: {name: B}}\n", "e.yaml");
  EXPECT_THROW(eval_sections(c["Eval"]), ConfigError);
}

// best_model: PaddleClas keeps the later of two equal evaluations (>=); a resumed run evaluated with another
// first metric starts a new best instead of comparing numbers of different metrics.
TEST(BestMetric, EqualIsBetterAndAnotherMetricStartsOver) {
  BestMetric b;
  EXPECT_TRUE(b.offer("recall1", 0.5, 1));
  EXPECT_FALSE(b.offer("recall1", 0.4, 2));
  EXPECT_TRUE(b.offer("recall1", 0.5, 3));  // equal: the later epoch wins
  EXPECT_EQ(b.epoch, 3);
  std::string note;
  EXPECT_TRUE(b.offer("mAP", 0.1, 4, &note));  // restored recall1 0.5 must not block mAP 0.1
  EXPECT_NE(note.find("chose best_model by recall1"), std::string::npos) << note;
  EXPECT_EQ(b.name, "mAP");
  EXPECT_DOUBLE_EQ(b.value, 0.1);
}
