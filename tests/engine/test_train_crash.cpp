// Crash test: `featlearn train` is killed with SIGKILL at chosen moments (mid-epoch, while a checkpoint is being
// written, during the evaluation) and resumed each time from Global.checkpoints. Every checkpoint on disk
// stays loadable after every kill, and the final weights equal an uninterrupted run's.
#include <featlearn/engine/checkpoint.h>
#include <featlearn/model/rec_model.h>

#include "weights_util.h"
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn;
using featlearn::test::checkpoint_weights;
using featlearn::test::max_abs_diff;

namespace {

std::string config_text(const fs::path& data) {
  const std::string ops =
      "[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: 16}}, "
      "{NormalizeImage: {scale: 0.00392157, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}}]";
  const std::string train_ops =
      "[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: 16}}, "
      "{RandFlipImage: {flip_code: 1}}, "
      "{NormalizeImage: {scale: 0.00392157, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}}, "
      "{RandomErasing: {EPSILON: 0.5, sl: 0.02, sh: 0.4, r1: 0.3, mean: [0., 0., 0.]}}]";
  return "Global:\n  epochs: 12\n  eval_during_train: True\n  eval_mode: retrieval\n  print_batch_step: 1\n  image_shape: [3, 16, 16]\n"
         "  seed: 11\n  save_interval: 2\n"
         "Arch:\n  name: RecModel\n  Backbone: {name: TorchvisionMobileNetV3_small_x1_0}\n  BackboneStopLayer: {name: flatten}\n"
         "  Neck: {name: FC, embedding_size: 576, class_num: 16}\n"
         "  Head: {name: ArcMargin, embedding_size: 16, class_num: 8, margin: 0.15, scale: 16}\n"
         "Loss:\n  Train:\n    - CELoss: {weight: 1.0}\n    - TripletLossV2: {weight: 1.0, margin: 0.3}\n"
         "Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.01}, "
         "regularizer: {name: L2, coeff: 0.0005}}\n"
         "DataLoader:\n  Train:\n    dataset: {name: VeriWild, image_root: " + data.string() +
         ", cls_label_path: " + (data / "list.txt").string() + ", transform_ops: " + train_ops + "}\n"
         "    sampler: {name: PKSampler, batch_size: 8, sample_per_id: 2, drop_last: True, shuffle: True}\n"
         "    loader: {num_workers: 2}\n"
         "  Eval:\n    Gallery:\n      dataset: {name: VeriWild, image_root: " + data.string() +
         ", cls_label_path: " + (data / "list.txt").string() + ", transform_ops: " + ops + "}\n"
         "      sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}\n"
         "Metric:\n  Eval:\n    - Recallk: {topk: [1]}\n    - mAP: {}\n";
}

struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;
};

// Starts `featlearn train` with stdout and stderr on a pipe.
Child start(const std::string& exe, const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  return {pid, fdopen(fds[0], "r")};
}


}  // namespace

TEST(TrainCrash, KilledAtRandomMomentsResumesToTheUninterruptedResult) {
  const std::string exe = std::string(FEATLEARN_BINARY_DIR) + "/featlearn";
  ASSERT_TRUE(fs::exists(exe)) << exe;
  const fs::path dir = fs::temp_directory_path() / ("featlearn_train_crash_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const fs::path data = dir / "data";
  fs::create_directories(data / "img");
  {
    std::ofstream list(data / "list.txt");
    std::mt19937 rng(3);
    for (int id = 0; id < 8; ++id)
      for (int k = 0; k < 4; ++k) {
        cv::Mat img(20, 20, CV_8UC3, cv::Scalar(30 * id, 220 - 25 * id, 60 + 40 * (k % 2)));
        for (int y = 0; y < img.rows; ++y)
          for (int x = 0; x < img.cols; ++x) img.at<cv::Vec3b>(y, x)[rng() % 3] = static_cast<uchar>(rng() % 256);
        const std::string rel = "img/" + std::to_string(id) + "_" + std::to_string(k) + ".png";
        cv::imwrite((data / rel).string(), img);
        list << rel << " " << id << " " << k % 2 << "\n";
      }
  }
  const std::string cfg_text = config_text(data);
  const fs::path cfg = dir / "crash.yaml";
  { std::ofstream(cfg) << cfg_text; }

  // The uninterrupted run.
  {
    Child c = start(exe, {"train", "-c", cfg.string(), "-o", "Global.output_dir=" + (dir / "ref").string()});
    ASSERT_GT(c.pid, 0);
    char buf[4096];
    std::string log;
    while (fgets(buf, sizeof buf, c.out)) log += buf;
    fclose(c.out);
    int status = 0;
    waitpid(c.pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
  }

  // The killed run: each round picks a moment from the program's own output.
  //   mid-epoch: after the k-th progress line; checkpoint: right after an epoch's [Avg] line (the checkpoints
  //   are written next); eval: right after the "saved" line (the evaluation runs next).
  const fs::path out = dir / "crash";
  const fs::path latest = out / "RecModel" / "latest";
  std::mt19937 rng(2024);
  int kills = 0, kills_ckpt = 0, kills_eval = 0, kills_mid = 0;
  bool finished = false;
  for (int round = 0; round < 40 && !finished; ++round) {
    std::vector<std::string> args = {"train", "-c", cfg.string(), "-o", "Global.output_dir=" + out.string()};
    if (fs::exists(checkpoint_path(latest.string()))) {
      args.push_back("-o");
      args.push_back("Global.checkpoints=" + latest.string());
    }
    const int mode = kills < 12 ? round % 3 : -1;  // after 12 kills, let the run finish
    const int skip = static_cast<int>(rng() % 3);
    const auto extra_delay = std::chrono::microseconds(rng() % 20000);
    Child c = start(exe, args);
    ASSERT_GT(c.pid, 0);
    char buf[4096];
    std::string log;
    int seen = 0;
    bool killed = false;
    while (fgets(buf, sizeof buf, c.out)) {
      const std::string line = buf;
      log += line;
      if (mode < 0 || killed) continue;
      const bool hit = (mode == 0 && line.find("[Iter ") != std::string::npos) ||
                       (mode == 1 && line.find("][Avg]") != std::string::npos) ||
                       (mode == 2 && line.find("] saved ") != std::string::npos);
      if (hit && seen++ >= skip) {
        if (mode != 1) std::this_thread::sleep_for(extra_delay);
        kill(c.pid, SIGKILL);
        killed = true;
      }
    }
    fclose(c.out);
    int status = 0;
    waitpid(c.pid, &status, 0);
    if (killed && WIFSIGNALED(status)) {
      ++kills;
      (mode == 0 ? kills_mid : mode == 1 ? kills_ckpt : kills_eval)++;
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << round << ":\n" << log;
      finished = mode < 0 || log.find("Nothing to do") != std::string::npos ||
                 log.find("[Train] done") != std::string::npos;
    }
    // Whatever the moment, every checkpoint on disk loads (checksums included).
    if (fs::exists(out / "RecModel"))
      for (const auto& e : fs::directory_iterator(out / "RecModel")) {
        if (e.path().extension() != ".ckpt") continue;
        EXPECT_NO_THROW(checkpoint_weights(cfg_text, e.path().string())) << "round " << round << ": " << e.path();
      }
  }
  ASSERT_TRUE(finished);
  EXPECT_GE(kills, 10);
  EXPECT_GE(kills_ckpt, 1);
  EXPECT_GE(kills_eval, 1);
  EXPECT_GE(kills_mid, 1);
  std::printf("train crash test: %d kills survived (%d mid-epoch, %d during checkpoint writes, %d during eval)\n",
              kills, kills_mid, kills_ckpt, kills_eval);

  const auto ref = checkpoint_weights(cfg_text, (dir / "ref/RecModel/latest").string());
  const auto got = checkpoint_weights(cfg_text, (out / "RecModel/latest").string());
  const auto first = checkpoint_weights(cfg_text, (dir / "ref/RecModel/epoch_2").string());
  EXPECT_LT(max_abs_diff(ref, got), 1e-5);
  EXPECT_GT(max_abs_diff(ref, first), 1e-4) << "training did not move the weights: the comparison would be vacuous";
  fs::remove_all(dir);
}
