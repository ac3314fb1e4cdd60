// Global.use_visualdl / Global.tensorboard: a training run writes TensorBoard event files whose every record
// an independent reader (tests/report/read_events.py: python3-protobuf, python3-crc32c) accepts, with one
// scalar per step and term, per epoch and per evaluation, equal to what metrics.jsonl records.
#include <featlearn/config/config.h>
#include <featlearn/engine/trainer.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

// 12 images of 4 ids: 3 batches of 4 per epoch.
fs::path make_images() {
  const fs::path root = fs::temp_directory_path() / ("featlearn_tb_" + std::to_string(::getpid()));
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

std::string config(const fs::path& data, const fs::path& out, const std::string& switch_line) {
  const std::string dataset = R"(
    dataset:
      name: ImageNetDataset
      image_root: ")" + data.string() + R"("
      cls_label_path: ")" + (data / "train.txt").string() + R"("
      transform_ops:
        - NormalizeImage: {order: ''}
)";
  return R"(
Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: 2
  print_batch_step: 2
  image_shape: [3, 16, 16]
  eval_during_train: True
  eval_mode: classification
  )" + switch_line + R"(
Arch:
  name: RecModel
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: flatten}
  Head: {name: FC, embedding_size: 512, class_num: 4}
Loss:
  Train:
    - CELoss: {weight: 1.0}
  Eval:
    - CELoss: {weight: 1.0}
Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Cosine, learning_rate: 0.01}
Metric:
  Eval:
    - TopkAcc: {topk: [1, 2]}
DataLoader:
  Train:)" + dataset + R"(    sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: False, shuffle: True}
  Eval:)" + dataset + R"(    sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: False, shuffle: False}
)";
}

std::vector<nlohmann::json> read_events(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  EXPECT_EQ(files.size(), 1u);
  const std::string cmd = "/usr/bin/python3 " FEATLEARN_SOURCE_DIR "/tests/report/read_events.py '" +
                          files.at(0).string() + "' " FEATLEARN_SOURCE_DIR "/proto 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  EXPECT_EQ(pclose(p), 0) << out;
  std::vector<nlohmann::json> events;
  std::istringstream lines(out);
  for (std::string l; std::getline(lines, l);) events.push_back(nlohmann::json::parse(l));
  return events;
}

}  // namespace

TEST(TensorBoardLog, TrainingWritesEveryStepEpochAndEvaluationScalar) {
  const auto data = make_images();
  const auto out = data / "out";
  { Trainer(Config::from_string(config(data, out, "use_visualdl: True"), "tb.yaml"), Trainer::Mode::kTrain).train(); }
  const auto events = read_events(out / "tensorboard");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].value("file_version", ""), "brain.Event:2");
  std::map<std::string, std::vector<std::pair<int64_t, double>>> series;
  double last_wall = 0;
  for (size_t i = 1; i < events.size(); ++i) {
    ASSERT_EQ(events[i]["values"].size(), 1u);
    series[events[i]["values"][0][0]].emplace_back(events[i]["step"], events[i]["values"][0][1]);
    EXPECT_GE(events[i]["wall_time"].get<double>(), last_wall);  // wall times in order
    last_wall = events[i]["wall_time"];
  }
  // 2 epochs x 3 steps: loss, the term, lr and images/s at every global step 1..6.
  for (const char* tag : {"train/loss", "train/CELoss", "train/lr", "train/ips"}) {
    ASSERT_EQ(series[tag].size(), 6u) << tag;
    for (int64_t s = 0; s < 6; ++s) EXPECT_EQ(series[tag][s].first, s + 1) << tag;
  }
  EXPECT_NEAR(series["train/lr"][0].second, 0.01, 1e-8);  // cosine, first step
  // Per epoch and per evaluation, at the global step that ends the epoch, equal to metrics.jsonl's records.
  ASSERT_EQ(series["epoch/loss"].size(), 2u);
  ASSERT_EQ(series["eval/top1"].size(), 2u);
  ASSERT_EQ(series["eval/top2"].size(), 2u);
  std::ifstream jsonl(out / "metrics.jsonl");
  std::vector<double> epoch_loss, top1;
  for (std::string l; std::getline(jsonl, l);) {
    const auto j = nlohmann::json::parse(l);
    if (j["phase"] == "train_epoch") epoch_loss.push_back(j["loss"]);
    if (j["phase"] == "eval") top1.push_back(j["top1"]);
  }
  ASSERT_EQ(epoch_loss.size(), 2u);
  ASSERT_EQ(top1.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    EXPECT_EQ(series["epoch/loss"][e].first, 3 * (e + 1));
    EXPECT_NEAR(series["epoch/loss"][e].second, epoch_loss[e], 1e-5 * std::abs(epoch_loss[e]));
    EXPECT_EQ(series["eval/top1"][e].first, 3 * (e + 1));
    EXPECT_NEAR(series["eval/top1"][e].second, top1[e], 1e-6);
  }
  // The featlearn key does the same, and false (PaddleClas's default) writes nothing.
  const auto out2 = data / "out2", out3 = data / "out3";
  {
    auto cfg = config(data, out2, "tensorboard: True");
    cfg.replace(cfg.find("epochs: 2"), 9, "epochs: 1");
    Trainer(Config::from_string(cfg, "tb2.yaml"), Trainer::Mode::kTrain).train();
  }
  EXPECT_FALSE(fs::is_empty(out2 / "tensorboard"));
  {
    auto cfg = config(data, out3, "use_visualdl: False");
    cfg.replace(cfg.find("epochs: 2"), 9, "epochs: 1");
    Trainer(Config::from_string(cfg, "tb3.yaml"), Trainer::Mode::kTrain).train();
  }
  EXPECT_FALSE(fs::exists(out3 / "tensorboard"));
  fs::remove_all(data);
}
