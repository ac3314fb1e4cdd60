// Tiny end-to-end run on generated images: train -> interrupt -> resume (same weights as an uninterrupted
// run) -> eval -> export -> extract (features equal the model's), plus checkpoint error handling.
#include <featlearn/data/loader.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/io/npy.h>

#include "weights_util.h"
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <fstream>
#include <random>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

// 6 identities x 2 cameras x 2 images: a coloured square whose colour encodes the id, noise per image.
fs::path make_dataset() {
  const fs::path root = fs::temp_directory_path() / "featlearn_e2e_data";
  fs::remove_all(root);
  fs::create_directories(root / "images");
  std::ofstream train(root / "train.txt"), test(root / "test.txt");
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> noise(-20, 20);
  for (int id = 0; id < 6; ++id)
    for (int cam = 0; cam < 2; ++cam)
      for (int k = 0; k < 2; ++k) {
        cv::Mat img(24, 24, CV_8UC3, cv::Scalar(40 * id, 255 - 40 * id, 120 + 20 * cam));
        for (int y = 0; y < img.rows; ++y)
          for (int x = 0; x < img.cols; ++x)
            for (int c = 0; c < 3; ++c) {
              auto& v = img.at<cv::Vec3b>(y, x)[c];
              v = cv::saturate_cast<uchar>(v + noise(rng));
            }
        const std::string rel = "images/" + std::to_string(id) + "_" + std::to_string(cam) + "_" + std::to_string(k) + ".png";
        cv::imwrite((root / rel).string(), img);
        train << rel << " " << id << " " << cam << "\n";
        test << rel << " " << id << " " << cam << "\n";
      }
  return root;
}

std::string config_yaml(const fs::path& data, const fs::path& out) {
  const std::string ops = R"(
        transform_ops:
          - DecodeImage: {to_rgb: True, channel_first: False}
          - ResizeImage: {size: 32}
          - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''})";
  return R"(
Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: 2
  save_interval: 1
  eval_during_train: True
  eval_interval: 1
  print_batch_step: 1
  image_shape: [3, 32, 32]
  save_inference_dir: ")" + (out / "inference").string() + R"("
  eval_mode: retrieval
  seed: 3
Arch:
  name: RecModel
  infer_output_key: features
  infer_add_softmax: False
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: avg_pool}
  Neck: {name: VehicleNeck, in_channels: 512, out_channels: 16}
  Head: {name: ArcMargin, embedding_size: 16, class_num: 6, margin: 0.15, scale: 16}
Loss:
  Train:
    - CELoss: {weight: 1.0}
    - TripletLossV2: {weight: 1.0, margin: 0.3}
Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Cosine, learning_rate: 0.01}
  regularizer: {name: L2, coeff: 0.0005}
DataLoader:
  Train:
    dataset:
      name: VeriWild
      image_root: ")" + data.string() + R"("
      cls_label_path: ")" + (data / "train.txt").string() + R"(")" + R"(
      transform_ops:
        - DecodeImage: {to_rgb: True, channel_first: False}
        - ResizeImage: {size: 32}
        - RandFlipImage: {flip_code: 1}
        - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
        - RandomErasing: {EPSILON: 0.5, sl: 0.02, sh: 0.4, r1: 0.3, mean: [0., 0., 0.]}
    sampler: {name: PKSampler, batch_size: 8, sample_per_id: 2, drop_last: True, shuffle: True}
    loader: {num_workers: 2}
  Eval:
    Query:
      dataset:
        name: VeriWild
        image_root: ")" + data.string() + R"("
        cls_label_path: ")" + (data / "test.txt").string() + "\"" + ops + R"(
      sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}
      loader: {num_workers: 1}
Metric:
  Eval:
    - Recallk: {topk: [1, 2]}
    - mAP: {}
    - mINP: {}
)";
}


}  // namespace

TEST(EndToEnd, TrainResumeEvalExportExtract) {
  init_runtime();
  const fs::path data = make_dataset();
  const fs::path base = fs::temp_directory_path() / "featlearn_e2e_out";
  fs::remove_all(base);

  // Uninterrupted 2-epoch run.
  const std::string cfg_a = config_yaml(data, base / "a");
  {
    Trainer t(Config::from_string(cfg_a, "a.yaml"), Trainer::Mode::kTrain);
    auto metrics = t.train();
    ASSERT_FALSE(metrics.empty());
    EXPECT_EQ(metrics.front().first, "recall1");
  }
  EXPECT_TRUE(fs::exists(base / "a/RecModel/latest.ckpt"));
  EXPECT_TRUE(fs::exists(base / "a/RecModel/epoch_1.ckpt"));
  EXPECT_TRUE(fs::exists(base / "a/RecModel/best_model.ckpt"));
  EXPECT_TRUE(fs::exists(base / "a/metrics.jsonl"));
  EXPECT_TRUE(fs::exists(base / "a/config.yaml"));

  // Interrupted after epoch 1, then resumed from latest.
  const std::string cfg_b = config_yaml(data, base / "b");
  {
    Trainer t(Config::from_string(cfg_b, "b.yaml"), Trainer::Mode::kTrain);
    t.train(/*stop_after_epoch=*/1);
  }
  {
    auto c = Config::from_string(cfg_b, "b.yaml");
    c.apply_override("Global.checkpoints=" + (base / "b/RecModel/latest").string());
    Trainer t(c, Trainer::Mode::kTrain);
    t.train();
  }
  const auto wa = test::checkpoint_weights(cfg_a, (base / "a/RecModel/latest").string());
  const auto wb = test::checkpoint_weights(cfg_b, (base / "b/RecModel/latest").string());
  ASSERT_EQ(wa.size(), wb.size());
  const auto w1 = test::checkpoint_weights(cfg_a, (base / "a/RecModel/epoch_1").string());
  const double moved = test::max_abs_diff(wa, w1);
  EXPECT_LT(test::max_abs_diff(wa, wb), 1e-5) << "resumed run diverged from the uninterrupted one";
  EXPECT_GT(moved, 1e-4) << "epoch 2 did not change the weights: the comparison would be vacuous";

  // Eval of the trained weights writes eval_metrics.json.
  auto cfg_eval = Config::from_string(cfg_a, "a.yaml");
  cfg_eval.apply_override("Global.pretrained_model=" + (base / "a/RecModel/latest").string());
  Trainer ev(cfg_eval, Trainer::Mode::kEval);
  auto metrics = ev.evaluate();
  ev.report(metrics);
  EXPECT_TRUE(fs::exists(base / "a/eval_metrics.json"));
  for (const auto& kv : metrics) {
    EXPECT_GE(kv.second, 0.0) << kv.first;
    EXPECT_LE(kv.second, 1.0) << kv.first;
  }

  // Export + extract: the exported model's features equal the trained model's normalized features.
  const std::string cfg_path = (base / "a.yaml").string();
  { std::ofstream(cfg_path) << cfg_a; }
  ConfigArgs args{cfg_path, {"Global.pretrained_model=" + (base / "a/RecModel/latest").string()}};
  ASSERT_EQ(cmd_export(args), 0);
  ASSERT_TRUE(fs::exists(base / "a/inference/inference.yaml"));
  ExtractArgs ex;
  ex.model_dir = (base / "a/inference").string();
  ex.image_root = data.string();
  ex.list = (data / "test.txt").string();
  ex.out = (base / "feats.npy").string();
  ex.batch_size = 5;
  ASSERT_EQ(cmd_extract(ex), 0);
  auto feats = load_npy(ex.out);
  auto labels = load_npy((base / "feats_labels.npy").string());
  ASSERT_EQ(feats.size(0), 24);
  ASSERT_EQ(feats.size(1), 16);
  ASSERT_EQ(labels.size(0), 24);

  RecModel m(cfg_eval["Arch"]);
  load_checkpoint((base / "a/RecModel/latest").string(), *m, nullptr, nullptr);
  m->eval();
  auto loader = DataLoader::create(cfg_eval["DataLoader"]["Eval"]["Query"], LoaderContext{});
  loader->start_epoch(0);
  std::vector<torch::Tensor> ref;
  {
    torch::NoGradGuard ng;
    while (auto b = loader->next()) ref.push_back(torch::nn::functional::normalize(
        m->forward(b->images).features, torch::nn::functional::NormalizeFuncOptions().dim(1)));
  }
  EXPECT_LT((torch::cat(ref) - feats).abs().max().item<double>(), 1e-5);

  // The evaluation's metrics equal an independent computation from the same features: the full similarity
  // matrix (float32 products as the evaluation's, so that near-ties of this small model order alike; a double
  // product can swap two items within float rounding, and which pairs are that close depends on the CPU's
  // kernels), a stable descending sort per query, same-id-same-camera items removed (the query itself among
  // them), then CMC@1/2, AP and INP from the ranks of the positives.
  const auto f32 = torch::cat(ref);
  const auto sim = torch::mm(f32, f32.t()).to(torch::kFloat64);
  const auto f = f32;
  std::vector<int64_t> lab, cam;
  {
    std::ifstream in(data / "test.txt");
    std::string path;
    int64_t l, c;
    while (in >> path >> l >> c) lab.push_back(l), cam.push_back(c);
  }
  ASSERT_EQ(static_cast<int64_t>(lab.size()), f.size(0));
  double r1 = 0, r2 = 0, ap_sum = 0, inp_sum = 0;
  int valid = 0;
  for (int64_t q = 0; q < f.size(0); ++q) {
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t g = 0; g < f.size(0); ++g)
      if (!(lab[g] == lab[q] && cam[g] == cam[q])) ranked.emplace_back(sim[q][g].item<double>(), g);
    std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<int64_t> pos_ranks;
    for (size_t r = 0; r < ranked.size(); ++r)
      if (lab[ranked[r].second] == lab[q]) pos_ranks.push_back(static_cast<int64_t>(r) + 1);
    if (pos_ranks.empty()) continue;
    ++valid;
    r1 += pos_ranks[0] <= 1;
    r2 += pos_ranks[0] <= 2;
    double ap = 0;
    for (size_t j = 0; j < pos_ranks.size(); ++j) ap += static_cast<double>(j + 1) / pos_ranks[j];
    ap_sum += ap / pos_ranks.size();
    inp_sum += static_cast<double>(pos_ranks.size()) / pos_ranks.back();
  }
  ASSERT_GT(valid, 0);
  std::map<std::string, double> got(metrics.begin(), metrics.end());
  EXPECT_NEAR(got.at("recall1"), r1 / valid, 1e-9);
  EXPECT_NEAR(got.at("recall2"), r2 / valid, 1e-9);
  EXPECT_NEAR(got.at("mAP"), ap_sum / valid, 1e-6);
  EXPECT_NEAR(got.at("mINP"), inp_sum / valid, 1e-6);
}

TEST(EndToEnd, CheckpointErrorsAreClear) {
  auto cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: ResNet18}, BackboneStopLayer: {name: flatten}}\n");
  RecModel m(cfg["Arch"]);
  const fs::path dir = fs::temp_directory_path() / "featlearn_ckpt_err";
  fs::create_directories(dir);
  try {
    load_checkpoint((dir / "missing").string(), *m, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint not found"), std::string::npos) << e.what();
  }
  { std::ofstream((dir / "bad.ckpt").string()) << "this is not a checkpoint"; }
  try {
    load_checkpoint((dir / "bad").string(), *m, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.ckpt"), std::string::npos) << e.what();
  }
  // A checkpoint of a different model: the mismatching parameter is named.
  save_checkpoint((dir / "r18").string(), *m, nullptr, nullptr, CheckpointMeta{});
  auto cfg34 = Config::from_string("Arch: {name: RecModel, Backbone: {name: ResNet34}, BackboneStopLayer: {name: flatten}}\n");
  RecModel m34(cfg34["Arch"]);
  try {
    load_checkpoint((dir / "r18").string(), *m34, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.backbone.layer"), std::string::npos) << e.what();
  }
}
