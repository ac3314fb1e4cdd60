// Global.eval_mode: adaface through the Trainer on the numpy-written FiveValidationDataset fixture
// (tests/fixtures/face_fixtures.py): the reported values equal face verification of flip-fused features
// computed here independently, keys as PaddleClas.
#include <featlearn/engine/trainer.h>
#include <featlearn/metric/face_verification.h>
#include <featlearn/model/rec_model.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "../fixture_path.h"

namespace fs = std::filesystem;
using namespace featlearn;

TEST(AdaFaceEval, FlipFusedVerificationAsPaddleClas) {
  const auto dir = fs::path(fixture("face/val/concat_validation_memfile")).parent_path().string();
  const auto out = fs::temp_directory_path() / ("featlearn_adaface_" + std::to_string(::getpid()));
  const std::string arch = "Arch:\n  name: RecModel\n  Backbone: {name: ResNet18, pretrained: False}\n"
                           "  BackboneStopLayer: {name: flatten}\n";
  const std::string cfg = "Global:\n  device: cpu\n  eval_mode: adaface\n  eval_random_weights: True\n  image_shape: [3, 4, 4]\n  seed: 2\n"
                          "  output_dir: " + out.string() + "\n" + arch +
                          "DataLoader:\n  Eval:\n    dataset:\n      name: FiveValidationDataset\n"
                          "      val_data_path: " + dir + "\n      concat_mem_file_name: " + dir +
                          "/concat_validation_memfile\n    sampler: {name: BatchSampler, batch_size: 16, "
                          "drop_last: False, shuffle: True}\n";
  Trainer t(Config::from_string(cfg, "adaface.yaml"), Trainer::Mode::kEval);
  const auto values = t.evaluate();

  // Independently: the same weights (seed 2), each image's features plus its flip's, normalized, in order.
  auto& model = dynamic_cast<RecModelImpl&>(t.model());
  torch::NoGradGuard ng;
  model.eval();
  std::vector<float> all;
  for (int k = 0; k < 120; ++k)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 16; ++p) all.push_back(float(k) / 100.f + c);
  const auto images = torch::tensor(all).view({120, 3, 4, 4});
  auto f = model.forward(images).features + model.forward(images.flip({3})).features;
  f = f / f.norm(2, 1, true);
  std::vector<int64_t> issame;
  std::vector<int> set_of;
  for (int s = 0; s < 5; ++s)
    for (int p = 0; p < 10 + s; ++p) issame.insert(issame.end(), 2, (p + s) % 3 != 0), set_of.insert(set_of.end(), 2, s);
  const auto want = evaluate_face_verification(f, issame, set_of, {"agedb_30", "cfp_fp", "lfw", "cplfw", "calfw"});
  ASSERT_EQ(values.size(), 16u);  // all_test_acc + 3 per set
  ASSERT_EQ(values.size(), want.size());
  EXPECT_EQ(values[0].first, "all_test_acc");
  EXPECT_EQ(values[3].first, "agedb_30_num_test_samples");
  EXPECT_EQ(values[3].second, 20);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(values[i].first, want[i].first);
    EXPECT_NEAR(values[i].second, want[i].second, 1e-6) << want[i].first;
  }
  // Metric.Eval is not an adaface option.
  try {
    Trainer bad(Config::from_string(cfg + "Metric:\n  Eval:\n    - Recallk: {topk: [1]}\n", "adaface.yaml"),
                Trainer::Mode::kEval);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("remove Metric.Eval"), std::string::npos) << e.what();
  }
  fs::remove_all(out);
}
