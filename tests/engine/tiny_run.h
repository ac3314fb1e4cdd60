// A tiny ReID run shared by engine tests: 24 generated images and a 2-epoch ResNet18 retrieval config.
#pragma once
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <string>

namespace featlearn::test {

namespace fs = std::filesystem;

// What `f` prints on stdout (also when it throws: the exception is rethrown after the capture ends).
inline std::string stdout_of(const std::function<void()>& f) {
  testing::internal::CaptureStdout();
  try {
    f();
  } catch (...) {
    const std::string out = testing::internal::GetCapturedStdout();
    std::fputs(out.c_str(), stderr);
    throw;
  }
  return testing::internal::GetCapturedStdout();
}

// 6 identities x 2 cameras x 2 images: a coloured disc whose colour encodes the id, noise per image.
// Query = camera 0, gallery = camera 1.
inline fs::path make_tiny_reid_dataset(const fs::path& root) {
  fs::remove_all(root);
  fs::create_directories(root / "images");
  std::ofstream train(root / "train.txt"), query(root / "query.txt"), gallery(root / "gallery.txt");
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> noise(-40, 40);
  for (int id = 0; id < 6; ++id)
    for (int cam = 0; cam < 2; ++cam)
      for (int k = 0; k < 2; ++k) {
        cv::Mat img(32, 32, CV_8UC3, cv::Scalar(230, 230, 230));
        cv::circle(img, {16 + noise(rng) / 10, 16}, 11, cv::Scalar(40 * id, 255 - 40 * id, 90 + 60 * cam), -1);
        for (int y = 0; y < img.rows; ++y)
          for (int x = 0; x < img.cols; ++x)
            for (int c = 0; c < 3; ++c) img.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uchar>(img.at<cv::Vec3b>(y, x)[c] + noise(rng));
        // A name with HTML-special characters: it must reach the page escaped.
        const std::string rel = fmt::format("images/id{}&cam<{}>_{}.png", id, cam, k);
        cv::imwrite((root / rel).string(), img);
        const std::string line = fmt::format("{} {} {}\n", rel, id, cam);
        train << line;
        (cam == 0 ? query : gallery) << line;
      }
  return root;
}

inline std::string tiny_reid_config(const fs::path& data, const fs::path& out,
                                    const std::string& eval_mode = "retrieval") {
  auto set = [&](const std::string& list) {
    return R"(
      dataset:
        name: VeriWild
        image_root: ")" + data.string() + R"("
        cls_label_path: ")" + (data / list).string() + R"("
        transform_ops:
          - DecodeImage: {to_rgb: True, channel_first: False}
          - ResizeImage: {size: 32}
          - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
      sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}
      loader: {num_workers: 1})";
  };
  return R"(
Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: 2
  eval_during_train: True
  eval_interval: 1
  print_batch_step: 1
  image_shape: [3, 32, 32]
  eval_mode: )" + eval_mode + R"(
  seed: 3
Arch:
  name: RecModel
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: flatten}
  Neck: {name: FC, embedding_size: 512, class_num: 16}
  Head: {name: ArcMargin, embedding_size: 16, class_num: 6, margin: 0.15, scale: 16}
Loss:
  Train:
    - CELoss: {weight: 1.0}
    - TripletLossV2: {weight: 1.0, margin: 0.3}
Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Cosine, learning_rate: 0.01}
DataLoader:
  Train:)" + set("train.txt") + R"(
  Eval:
    Query:)" + set("query.txt") + R"(
    Gallery:)" + set("gallery.txt") + R"(
Metric:
  Eval:
    - Recallk: {topk: [1, 5]}
    - mAP: {}
    - mINP: {}
)";
}

}  // namespace featlearn::test
