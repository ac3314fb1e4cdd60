// `featlearn train` / `eval` as 2-process runs on 127.0.0.1 (docs/distributed.md): each rank is the featlearn
// program started with the torchrun environment, as `featlearn launch` starts it.
#include "../dist/process_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn::test;

namespace {

const std::string kExe = std::string(FEATLEARN_BINARY_DIR) + "/featlearn";

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("featlearn_disttrain_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// 5 ids x 2 cameras x 2 images of 16 x 16 (20 images: 2 ranks x batch 4 leave a partial round) and a config.
fs::path make_run(const fs::path& root) {
  fs::create_directories(root / "img");
  std::ofstream list(root / "list.txt");
  for (int id = 0; id < 5; ++id)
    for (int cam = 0; cam < 2; ++cam)
      for (int k = 0; k < 2; ++k) {
        cv::Mat img(16, 16, CV_8UC3, cv::Scalar(50 * id, 200 - 30 * id + 15 * k, 90 + 40 * cam + 7 * k));
        const std::string rel = "img/" + std::to_string(id) + "_" + std::to_string(cam) + "_" + std::to_string(k) + ".png";
        cv::imwrite((root / rel).string(), img);
        list << rel << " " << id << " " << cam << "\n";
      }
  const std::string ops =
      "[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: 16}}, "
      "{NormalizeImage: {scale: 0.00392157, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}}]";
  const std::string ds = "{name: VeriWild, image_root: " + root.string() + ", cls_label_path: " +
                         (root / "list.txt").string() + ", transform_ops: " + ops + "}";
  std::ofstream(root / "cfg.yaml")
      << "Global:\n  output_dir: " << (root / "out").string() << "\n  epochs: 1\n  eval_during_train: True\n"
      << "  eval_mode: retrieval\n  print_batch_step: 100\n  image_shape: [3, 16, 16]\n  seed: 3\n  dist_timeout: 60\n"
      << "Arch:\n  name: RecModel\n  use_sync_bn: True\n  Backbone: {name: ResNet18}\n"
      << "  BackboneStopLayer: {name: flatten}\n  Neck: {name: FC, embedding_size: 512, class_num: 8}\n"
      << "  Head: {name: FC, embedding_size: 8, class_num: 5}\n"
      << "Loss:\n  Train:\n    - CELoss: {weight: 1.0}\n"
      << "Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.01}}\n"
      << "DataLoader:\n  Train:\n    dataset: " << ds << "\n"
      << "    sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: False, shuffle: True}\n"
      << "  Eval:\n    Gallery:\n      dataset: " << ds << "\n"
      << "      sampler: {name: DistributedBatchSampler, batch_size: 3, drop_last: False, shuffle: False}\n"
      << "Metric:\n  Eval:\n    - Recallk: {topk: [1, 5]}\n    - mAP: {}\n    - mINP: {}\n";
  return root / "cfg.yaml";
}

// Runs `featlearn <args>` as `world` processes (rank r's log: <log>.<r>); returns rank 0's log after checking
// every rank exited 0.
std::string run(int world, const std::vector<std::string>& args, const fs::path& log) {
  const int port = free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> argv{kExe};
  argv.insert(argv.end(), args.begin(), args.end());
  for (int r = 0; r < world; ++r) {
    auto env = world > 1 ? rank_env(r, world, port) : std::vector<std::string>{"OMP_NUM_THREADS=1"};
    pids.push_back(spawn(argv, env, log.string() + "." + std::to_string(r)));
  }
  std::string first;
  for (int r = 0; r < world; ++r) {
    const int rc = wait_for(pids[static_cast<size_t>(r)], 240);
    const auto text = read_text(log.string() + "." + std::to_string(r));
    if (r == 0) first = text;
    EXPECT_EQ(rc, 0) << "rank " << r << " of " << world << ":\n" << text;
  }
  return first;
}

std::vector<nlohmann::json> records(const fs::path& metrics, const std::string& phase) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("phase", "") == phase) out.push_back(j);
  }
  return out;
}

}  // namespace

// Each of 2 ranks embeds its shard of the 20 images (batch 3: padded shards); the gathered features give the
// metrics of a 1-process evaluation of the same weights exactly.
TEST(DistributedTraining, GatheredEvaluationEqualsOneProcess) {
  const auto dir = scratch("eval");
  const auto cfg = make_run(dir);
  run(1, {"train", "-c", cfg.string(), "-o", "Global.eval_during_train=False"}, dir / "train");
  const std::string weights = "Global.pretrained_model=" + (dir / "out" / "RecModel" / "latest").string();
  run(1, {"eval", "-c", cfg.string(), "-o", weights, "-o", "Global.output_dir=" + (dir / "one").string()}, dir / "e1");
  const auto log = run(2, {"eval", "-c", cfg.string(), "-o", weights, "-o", "Global.output_dir=" + (dir / "two").string()},
                       dir / "e2");
  const auto one = nlohmann::json::parse(read_text((dir / "one" / "eval_metrics.json").string()));
  const auto two = nlohmann::json::parse(read_text((dir / "two" / "eval_metrics.json").string()));
  EXPECT_EQ(one, two) << "1 process: " << one.dump() << "\n2 processes: " << two.dump();
  EXPECT_EQ(one.size(), 4u);
  EXPECT_NE(log.find("Distributed run: 2 processes (gloo)"), std::string::npos) << log;
}

// 2 processes train epoch 1; 1 process resumes for epoch 2; 2 processes again for epoch 3. Rank 0 alone writes
// (one run_start record per run), and each resume says how the schedule continues.
TEST(DistributedTraining, ResumesWithAnotherWorldSize) {
  const auto dir = scratch("resume");
  const auto cfg = make_run(dir);
  const auto ckpt = "Global.checkpoints=" + (dir / "out" / "RecModel" / "latest").string();
  auto log = run(2, {"train", "-c", cfg.string()}, dir / "w2");
  EXPECT_NE(log.find("gradient all-reduce"), std::string::npos) << log;
  EXPECT_NE(log.find("BatchNorm layers synchronized"), std::string::npos) << log;
  const auto rank1 = read_text((dir / "w2.1").string());
  EXPECT_EQ(rank1.find("[Train][Epoch"), std::string::npos) << "rank 1 prints the progress:\n" << rank1;

  // 20 images: 3 steps per epoch for 2 ranks of batch 4 (10 each), 5 steps for 1 process.
  log = run(1, {"train", "-c", cfg.string(), "-o", ckpt, "-o", "Global.epochs=2"}, dir / "w1");
  EXPECT_NE(log.find("Resuming with 1 process(es) (5 steps per epoch) a run written by 2 process(es) at iteration 3: "
                     "the schedule continues from epoch 2 (iteration 5)"),
            std::string::npos) << log;
  log = run(2, {"train", "-c", cfg.string(), "-o", ckpt, "-o", "Global.epochs=3"}, dir / "w2b");
  EXPECT_NE(log.find("Resuming with 2 process(es) (3 steps per epoch) a run written by 1 process(es) at iteration 10: "
                     "the schedule continues from epoch 3 (iteration 6)"),
            std::string::npos) << log;
  const auto metrics = dir / "out" / "metrics.jsonl";
  EXPECT_EQ(records(metrics, "run_start").size(), 3u);
  const auto epochs = records(metrics, "train_epoch");
  ASSERT_EQ(epochs.size(), 3u);
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(epochs[static_cast<size_t>(e)]["epoch"], e + 1);
    EXPECT_TRUE(std::isfinite(epochs[static_cast<size_t>(e)]["loss"].get<double>()));
  }
  EXPECT_EQ(records(metrics, "eval").size(), 3u);
  EXPECT_EQ(records(metrics, "allreduce").size(), 2u);
}

// A rank that never comes (rank 1 of 2 not started): rank 0 fails at the rendezvous after Global.dist_timeout
// with an error naming MASTER_ADDR:MASTER_PORT and the key, instead of waiting forever.
TEST(DistributedTraining, MissingRankFailsAfterTheTimeout) {
  const auto dir = scratch("missing");
  const auto cfg = make_run(dir);
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = spawn({kExe, "train", "-c", cfg.string(), "-o", "Global.dist_timeout=3"}, rank_env(0, 2, port),
                          (dir / "log").string());
  const int rc = wait_for(pid, 60);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto log = read_text((dir / "log").string());
  EXPECT_EQ(rc, 2) << log;
  EXPECT_LT(secs, 30) << log;
  EXPECT_NE(log.find("rendezvous at 127.0.0.1:" + std::to_string(port)), std::string::npos) << log;
  EXPECT_NE(log.find("Global.dist_timeout"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir / "out" / "RecModel" / "latest.ckpt"));
}

// A rank that hangs mid-training (stopped with SIGSTOP): the other fails in a collective within
// Global.dist_timeout with an error naming it.
TEST(DistributedTraining, HungRankFailsTheOthersWithinTheTimeout) {
  const auto dir = scratch("hung");
  const auto cfg = make_run(dir);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn({kExe, "train", "-c", cfg.string(), "-o", "Global.dist_timeout=5", "-o", "Global.epochs=400"},
                         rank_env(r, 2, port), (dir / ("log." + std::to_string(r))).string()));
  // Training has started once rank 0 appended its run_start record.
  const auto metrics = dir / "out" / "metrics.jsonl";
  for (int i = 0; i < 1200 && !fs::exists(metrics); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(metrics)) << read_text((dir / "log.0").string());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  kill(pids[1], SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  const int rc = wait_for(pids[0], 60);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  kill(pids[1], SIGKILL);
  waitpid(pids[1], nullptr, 0);
  const auto log = read_text((dir / "log.0").string());
  EXPECT_EQ(rc, 2) << log;
  EXPECT_LT(secs, 40) << log;
  EXPECT_NE(log.find("across the processes failed"), std::string::npos) << log;
  EXPECT_NE(log.find("Global.dist_timeout = 5 s"), std::string::npos) << log;
}
