// Global.iter_per_epoch (epochs of exactly that many steps over the loader's batch stream, exact resume) and
// the AMP section (a no-op on the CPU, as in Paddle; its keys checked).
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/trainer.h>

#include "weights_util.h"
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include "../error_of.h"

namespace fs = std::filesystem;
using namespace featlearn;

using featlearn::test::error_of;

namespace {

// 12 images of 4 ids; the loader has 3 batches of 4 per epoch.
fs::path make_images() {
  const fs::path root = fs::temp_directory_path() / ("featlearn_ipe_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  std::ofstream list(root / "train.txt");
  for (int i = 0; i < 12; ++i) {
    cv::Mat img(16, 16, CV_8UC3, cv::Scalar(20 * i, 200 - 10 * i, 60 * (i % 4)));
    cv::imwrite((root / (std::to_string(i) + ".png")).string(), img);
    list << i << ".png " << i % 4 << "\n";
  }
  return root;
}

std::string config(const fs::path& data, const fs::path& out, const std::string& extra) {
  return R"(
Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: 2
  iter_per_epoch: 5
  print_batch_step: 100
  image_shape: [3, 16, 16]
  seed: 7
Arch:
  name: RecModel
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: flatten}
  Head: {name: FC, embedding_size: 512, class_num: 4}
Loss:
  Train:
    - CELoss: {weight: 1.0}
Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Cosine, learning_rate: 0.01, step_each_epoch: 5}
DataLoader:
  Train:
    dataset:
      name: ImageNetDataset
      image_root: ")" + data.string() + R"("
      cls_label_path: ")" + (data / "train.txt").string() + R"("
      transform_ops:
        - RandFlipImage: {flip_code: 1}
        - NormalizeImage: {order: ''}
    sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: False, shuffle: True}
)" + extra;
}

}  // namespace

// Epochs of 5 steps over a 3-batch loader: the checkpoints count 5 and 10 iterations (the lr schedule's
// step_each_epoch: 5 is accepted because it equals that). A run with an AMP section (on by default, a no-op on
// the CPU) stopped after epoch 1 and resumed ends with the uninterrupted plain run's weights.
TEST(IterPerEpoch, EpochsRunThatManyStepsAndResumeExactly) {
  const auto data = make_images();
  const auto out_a = data / "a", out_b = data / "b";
  const auto cfg_a = config(data, out_a, "");
  {
    Trainer t(Config::from_string(cfg_a, "a.yaml"), Trainer::Mode::kTrain);
    t.train();
  }
  auto m = RecModel(Config::from_string(cfg_a, "a.yaml")["Arch"]);
  EXPECT_EQ(load_checkpoint((out_a / "RecModel" / "epoch_1").string(), *m, nullptr, nullptr).meta.iteration, 5);
  EXPECT_EQ(load_checkpoint((out_a / "RecModel" / "epoch_2").string(), *m, nullptr, nullptr).meta.iteration, 10);

  const auto cfg_b = config(data, out_b, "AMP:\n  scale_loss: 65536\n  use_dynamic_loss_scaling: True\n");
  {
    Trainer t(Config::from_string(cfg_b, "b.yaml"), Trainer::Mode::kTrain);
    t.train(/*stop_after_epoch=*/1);
  }
  {
    auto resumed = Config::from_string(cfg_b, "b.yaml");
    resumed.apply_overrides({"Global.checkpoints=" + (out_b / "RecModel" / "latest").string()});
    Trainer t(std::move(resumed), Trainer::Mode::kTrain);
    t.train();
  }
  const auto wa = test::checkpoint_weights(cfg_a, (out_a / "RecModel" / "latest").string());
  const auto wb = test::checkpoint_weights(cfg_b, (out_b / "RecModel" / "latest").string());
  EXPECT_EQ(test::max_abs_diff(wa, wb), 0.0);

  // Without iter_per_epoch an epoch is the loader's 3 batches (the test can fail).
  std::string plain = cfg_a;
  plain.replace(plain.find("  iter_per_epoch: 5\n"), 20, "");
  plain.replace(plain.find(", step_each_epoch: 5"), 20, "");
  const auto out_c = data / "c";
  plain.replace(plain.find(out_a.string()), out_a.string().size(), out_c.string());
  {
    Trainer t(Config::from_string(plain, "c.yaml"), Trainer::Mode::kTrain);
    t.train(1);
  }
  EXPECT_EQ(load_checkpoint((out_c / "RecModel" / "epoch_1").string(), *m, nullptr, nullptr).meta.iteration, 3);
  fs::remove_all(data);
}

TEST(IterPerEpoch, ConfigErrorsAndAmpKeys) {
  auto global = [](const std::string& body) {
    return GlobalConfig::parse(Config::from_string("Global:\n" + body, "g.yaml")["Global"]);
  };
  EXPECT_FALSE(global("  iter_per_epoch: 0\n").iter_per_epoch);  // PaddleClas: falsy keeps the loader's length
  EXPECT_EQ(*global("  iter_per_epoch: 50\n").iter_per_epoch, 50);
  auto msg = error_of([&] { global("  iter_per_epoch: -2\n"); });
  EXPECT_NE(msg.find("Global.iter_per_epoch: must be positive"), std::string::npos) << msg;
  EXPECT_EQ(global("  eval_mode: adaface\n").eval_mode, "adaface");

  auto amp = [](const std::string& body) {
    return AmpConfig::parse(Config::from_string("AMP:\n" + body, "a.yaml")["AMP"]);
  };
  EXPECT_FALSE(AmpConfig::parse(Config::from_string("Global: {}\n", "a.yaml")["AMP"]).use_amp);
  const auto on = amp("  scale_loss: 128.0\n");  // a present section means AMP, as PaddleClas
  EXPECT_TRUE(on.use_amp);
  EXPECT_EQ(on.scale_loss, 128.0);
  EXPECT_EQ(on.level, "O1");
  EXPECT_FALSE(amp("  use_amp: False\n  use_fp16_test: False\n  use_promote: False\n  level: O2\n").use_amp);
  msg = error_of([&] { amp("  level: O3\n"); });
  EXPECT_NE(msg.find("AMP.level: expected O1 or O2"), std::string::npos) << msg;
  msg = error_of([&] { amp("  scale_los: 2\n"); });
  EXPECT_NE(msg.find("did you mean scale_loss"), std::string::npos) << msg;
  msg = error_of([&] { amp("  scale_loss: 0\n"); });
  EXPECT_NE(msg.find("AMP.scale_loss: must be a positive number"), std::string::npos) << msg;
}
