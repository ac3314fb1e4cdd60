// Lost-work paths of a training run (docs/architecture.md, "Training and evaluation"): everything is checked
// before training starts, checkpoints are written before the evaluation, an earlier run's checkpoints are never
// overwritten silently, evaluation does not touch the training run's files, and damaged checkpoints are named.
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/engine/trainer.h>

#include "weights_util.h"
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace featlearn;
using featlearn::test::checkpoint_weights;
using featlearn::test::max_abs_diff;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("featlearn_safety_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// 4 ids x 2 cameras x 2 images of 16 x 16.
fs::path make_images(const fs::path& root) {
  fs::create_directories(root / "img");
  std::ofstream list(root / "list.txt");
  for (int id = 0; id < 4; ++id)
    for (int cam = 0; cam < 2; ++cam)
      for (int k = 0; k < 2; ++k) {
        cv::Mat img(16, 16, CV_8UC3, cv::Scalar(60 * id, 200 - 40 * id + 10 * k, 100 + 30 * cam));
        const std::string rel = "img/" + std::to_string(id) + "_" + std::to_string(cam) + "_" + std::to_string(k) + ".png";
        cv::imwrite((root / rel).string(), img);
        list << rel << " " << id << " " << cam << "\n";
      }
  return root;
}

std::string yaml(const fs::path& data, const fs::path& out, const std::string& eval_list = "",
                 const std::string& eval_ops_extra = "", const std::string& metric = "- Recallk: {topk: [1]}\n    - mAP: {}") {
  auto ops_with = [](const std::string& extra) {
    return "[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: 16}}, " + extra +
           "{NormalizeImage: {scale: 0.00392157, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}}]";
  };
  const std::string ops = ops_with(""), eval_ops = ops_with(eval_ops_extra);
  return "Global:\n  output_dir: " + out.string() + "\n  epochs: 2\n  eval_during_train: True\n  eval_mode: retrieval\n"
         "  print_batch_step: 100\n  image_shape: [3, 16, 16]\n  seed: 5\n"
         "  save_inference_dir: " + (out / "inference").string() + "\n"
         "Arch:\n  name: RecModel\n  Backbone: {name: ResNet18}\n  BackboneStopLayer: {name: flatten}\n"
         "  Neck: {name: FC, embedding_size: 512, class_num: 8}\n"
         "  Head: {name: FC, embedding_size: 8, class_num: 4}\n"
         "Loss:\n  Train:\n    - CELoss: {weight: 1.0}\n"
         "Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.01}}\n"
         "DataLoader:\n  Train:\n    dataset: {name: VeriWild, image_root: " + data.string() +
         ", cls_label_path: " + (data / "list.txt").string() + ", transform_ops: " + ops + "}\n"
         "    sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: True, shuffle: True}\n"
         "  Eval:\n    Gallery:\n      dataset: {name: VeriWild, image_root: " + data.string() +
         ", cls_label_path: " + (eval_list.empty() ? (data / "list.txt").string() : eval_list) +
         ", transform_ops: " + eval_ops + "}\n"
         "      sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}\n"
         "Metric:\n  Eval:\n    " + metric + "\n";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}



std::vector<nlohmann::json> jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}
}  // namespace

TEST(RunSafety, EvalMistakesFailBeforeTraining) {
  const auto dir = scratch("eval_checks");
  const auto data = make_images(dir / "data");
  // A missing eval list, an unknown eval op and a classification metric in retrieval mode all fail in the
  // constructor, before an epoch is trained and before anything is written.
  const auto missing = error_of([&] {
    Trainer(Config::from_string(yaml(data, dir / "o1", (data / "nope.txt").string()), "c.yaml"), Trainer::Mode::kTrain);
  });
  EXPECT_NE(missing.find("nope.txt"), std::string::npos) << missing;
  EXPECT_FALSE(fs::exists(dir / "o1" / "RecModel"));
  EXPECT_FALSE(fs::exists(dir / "o1" / "config.yaml"));
  const auto op = error_of([&] {
    Trainer(Config::from_string(yaml(data, dir / "o2", "", "{ResizeImagee: {size: 16}}, "), "c.yaml"),
            Trainer::Mode::kTrain);
  });
  EXPECT_NE(op.find("ResizeImagee"), std::string::npos) << op;
  EXPECT_NE(op.find("DataLoader.Eval.Gallery"), std::string::npos) << op;
  const auto metric = error_of([&] {
    Trainer(Config::from_string(yaml(data, dir / "o3", "", "", "- TopkAcc: {topk: [1]}"), "c.yaml"),
            Trainer::Mode::kTrain);
  });
  EXPECT_NE(metric.find("Metric.Eval"), std::string::npos) << metric;
  EXPECT_NE(metric.find("classification metric"), std::string::npos) << metric;
}

TEST(RunSafety, CheckpointIsWrittenBeforeEvaluationAndResumeRunsThePendingEval) {
  const auto dir = scratch("eval_crash");
  const auto data = make_images(dir / "data");
  // The eval list has one image more than the training list; that one disappears after startup.
  fs::copy_file(data / "img" / "0_0_0.png", data / "img" / "eval_only.png");
  fs::copy_file(data / "list.txt", data / "eval.txt");
  { std::ofstream(data / "eval.txt", std::ios::app) << "img/eval_only.png 0 1\n"; }
  const std::string eval_list = (data / "eval.txt").string();
  const std::string ref_cfg = yaml(data, dir / "ref", eval_list);
  Trainer(Config::from_string(ref_cfg, "ref.yaml"), Trainer::Mode::kTrain).train();

  // The same run whose first evaluation fails.
  const std::string cfg = yaml(data, dir / "run", eval_list);
  const fs::path victim = data / "img" / "eval_only.png";
  const fs::path hidden = data / "hidden.png";
  {
    Trainer t(Config::from_string(cfg, "run.yaml"), Trainer::Mode::kTrain);
    fs::rename(victim, hidden);
    const auto msg = error_of([&] { t.train(); });
    EXPECT_NE(msg.find("eval_only.png"), std::string::npos) << msg;
  }
  fs::rename(hidden, victim);
  // Epoch 1 is on disk, marked as not evaluated yet.
  ASSERT_TRUE(fs::exists(dir / "run/RecModel/latest.ckpt"));
  {
    auto c = Config::from_string(cfg, "run.yaml");
    RecModel m(c["Arch"]);
    const auto loaded = load_checkpoint((dir / "run/RecModel/latest").string(), *m, nullptr, nullptr);
    EXPECT_EQ(loaded.meta.epoch, 1);
    EXPECT_TRUE(loaded.meta.eval_pending);
  }
  // Resume: the pending evaluation runs first, then epoch 2; the result equals the uninterrupted run.
  auto c = Config::from_string(cfg, "run.yaml");
  c.apply_override("Global.checkpoints=" + (dir / "run/RecModel/latest").string());
  testing::internal::CaptureStdout();
  Trainer(c, Trainer::Mode::kTrain).train();
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("evaluation of epoch 1"), std::string::npos) << out;
  EXPECT_NE(out.find("[Eval][Epoch 1]"), std::string::npos) << out;
  EXPECT_LT(max_abs_diff(checkpoint_weights(ref_cfg, (dir / "ref/RecModel/latest").string()), checkpoint_weights(cfg, (dir / "run/RecModel/latest").string())), 1e-5);
  EXPECT_TRUE(fs::exists(dir / "run/RecModel/best_model.ckpt"));

  // Every run appends a run_start record first; the resumed one names its checkpoint.
  const auto records = jsonl(dir / "run/metrics.jsonl");
  std::vector<nlohmann::json> starts;
  for (const auto& r : records)
    if (r["phase"] == "run_start") starts.push_back(r);
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(records.front()["phase"], "run_start");
  EXPECT_TRUE(starts[0]["resumed_from"].is_null());
  EXPECT_EQ(starts[1]["start_epoch"], 2);
  EXPECT_NE(starts[1]["resumed_from"].get<std::string>().find("latest.ckpt"), std::string::npos);

  // A finished run resumed again says there is nothing to do.
  auto again = Config::from_string(cfg, "run.yaml");
  again.apply_override("Global.checkpoints=" + (dir / "run/RecModel/latest").string());
  testing::internal::CaptureStdout();
  Trainer(again, Trainer::Mode::kTrain).train();
  const std::string out2 = testing::internal::GetCapturedStdout();
  EXPECT_NE(out2.find("Nothing to do"), std::string::npos) << out2;
  EXPECT_NE(out2.find("raise Global.epochs"), std::string::npos) << out2;
}

TEST(RunSafety, FreshRunRefusesToOverwriteCheckpointsAndEvalLeavesConfigAlone) {
  const auto dir = scratch("overwrite");
  const auto data = make_images(dir / "data");
  auto cfg = Config::from_string(yaml(data, dir / "out"), "c.yaml");
  cfg.apply_override("Global.epochs=1");
  cfg.apply_override("Global.eval_during_train=False");
  Trainer(cfg, Trainer::Mode::kTrain).train();
  const auto latest = dir / "out/RecModel/latest.ckpt";
  const auto stamp = fs::last_write_time(latest);
  const auto msg = error_of([&] { Trainer(cfg, Trainer::Mode::kTrain); });
  EXPECT_NE(msg.find("Global.output_dir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("already holds checkpoints"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Global.checkpoints=" + (dir / "out/RecModel/latest").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("Global.overwrite_output: True"), std::string::npos) << msg;
  EXPECT_EQ(fs::last_write_time(latest), stamp);

  // A stale temp file of an interrupted write is removed by the next run that owns the directory.
  { std::ofstream(dir / "out/RecModel/latest.ckpt.tmp") << "partial"; }
  auto over = cfg;
  over.apply_override("Global.overwrite_output=True");
  Trainer(over, Trainer::Mode::kTrain).train();
  EXPECT_FALSE(fs::exists(dir / "out/RecModel/latest.ckpt.tmp"));

  // Evaluation writes eval_metrics.json only: config.yaml keeps the training run's resolved config.
  const auto config_before = [&] {
    std::ifstream in(dir / "out/config.yaml");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  auto ev = cfg;
  ev.apply_override("Global.pretrained_model=" + (dir / "out/RecModel/latest").string());
  ev.apply_override("Global.sim_block_size=3");
  Trainer e(ev, Trainer::Mode::kEval);
  e.report(e.evaluate());
  std::ifstream in(dir / "out/config.yaml");
  std::stringstream after;
  after << in.rdbuf();
  EXPECT_EQ(after.str(), config_before);
  EXPECT_TRUE(fs::exists(dir / "out/eval_metrics.json"));
}

// 50 bytes flipped inside one tensor's data (the archive's directory intact) are found on load and the tensor
// is named; the optimizer state is covered too.
TEST(RunSafety, CorruptTensorDataIsNamed) {
  const auto dir = scratch("corrupt");
  auto cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: ResNet18}, BackboneStopLayer: {name: flatten}}\n");
  RecModel m(cfg["Arch"]);
  torch::NoGradGuard ng;
  const std::string victim = "backbone.layer4.1.conv2.weight";
  auto w = m->named_parameters()[victim];
  w.copy_(torch::rand_like(w));
  CheckpointMeta meta;
  meta.epoch = 3;
  save_checkpoint((dir / "m").string(), *m, nullptr, nullptr, meta);
  RecModel fresh(cfg["Arch"]);
  EXPECT_EQ(load_checkpoint((dir / "m").string(), *fresh, nullptr, nullptr).meta.epoch, 3);

  // Find the tensor's bytes in the (uncompressed) archive and flip 50 of them.
  std::string bytes;
  {
    std::ifstream in(dir / "m.ckpt", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  const auto c = w.contiguous();
  const std::string head(static_cast<const char*>(c.data_ptr()), 256);
  const auto at = bytes.find(head);
  ASSERT_NE(at, std::string::npos);
  for (size_t i = 0; i < 50; ++i) bytes[at + 1000 + i] ^= 0x5a;
  { std::ofstream(dir / "m.ckpt", std::ios::binary | std::ios::trunc) << bytes; }
  const auto msg = error_of([&] { load_checkpoint((dir / "m").string(), *fresh, nullptr, nullptr); });
  EXPECT_NE(msg.find((dir / "m.ckpt").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model." + victim + "' is corrupt"), std::string::npos) << msg;
}

// A storage record shorter than its pickle declares (a damaged or crafted file: the fuzz_ckpt finding kept as
// tests/fuzz/corpus/ckpt/regress_record_shorter_than_storage) is named before any byte of it is read.
TEST(RunSafety, StorageRecordShorterThanItsTensorIsNamed) {
  const auto dir = scratch("short_record");
  auto cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: ResNet18}, BackboneStopLayer: {name: flatten}}\n");
  RecModel m(cfg["Arch"]);
  save_checkpoint((dir / "m").string(), *m, nullptr, nullptr, CheckpointMeta{});
  {
    caffe2::serialize::PyTorchStreamReader in((dir / "m.ckpt").string());
    caffe2::serialize::PyTorchStreamWriter out((dir / "cut.ckpt").string());
    std::string largest;
    size_t largest_size = 0;
    for (const auto& name : in.getAllRecords())
      if (name.rfind("data/", 0) == 0 && std::get<1>(in.getRecord(name)) > largest_size)
        largest_size = std::get<1>(in.getRecord(name)), largest = name;
    for (const auto& name : in.getAllRecords()) {
      if (name == "version") continue;  // the writer adds its own
      auto rec = in.getRecord(name);
      out.writeRecord(name, std::get<0>(rec).get(), name == largest ? std::get<1>(rec) / 2 : std::get<1>(rec));
    }
    out.writeEndOfFile();
  }
  RecModel fresh(cfg["Arch"]);
  const auto msg = error_of([&] { load_checkpoint((dir / "cut").string(), *fresh, nullptr, nullptr); });
  EXPECT_NE(msg.find((dir / "cut.ckpt").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not fit its data"), std::string::npos) << msg;
}

TEST(RunSafety, ExportAndExtractHonourTheDevice) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "checks the no-CUDA errors";
  const auto dir = scratch("device");
  const auto data = make_images(dir / "data");
  auto cfg = Config::from_string(yaml(data, dir / "out"), "c.yaml");
  cfg.apply_override("Global.epochs=1");
  cfg.apply_override("Global.eval_during_train=False");
  Trainer(cfg, Trainer::Mode::kTrain).train();
  const fs::path cfg_path = dir / "c.yaml";
  { std::ofstream(cfg_path) << yaml(data, dir / "out"); }
  const std::string weights_arg = "Global.pretrained_model=" + (dir / "out/RecModel/latest").string();
  const auto msg = error_of([&] { cmd_export({cfg_path.string(), {weights_arg, "Global.device=gpu"}}); });
  EXPECT_NE(msg.find("Global.device"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no CUDA device"), std::string::npos) << msg;
  ASSERT_EQ(cmd_export({cfg_path.string(), {weights_arg}}), 0);
  EXPECT_EQ(Config::load((dir / "out/inference/inference.yaml").string())["device"].as<std::string>(), "cpu");
  ExtractArgs ex;
  ex.model_dir = (dir / "out/inference").string();
  ex.image_root = data.string();
  ex.list = (data / "list.txt").string();
  ex.out = (dir / "f.npy").string();
  ex.device = "gpu";
  const auto emsg = error_of([&] { cmd_extract(ex); });
  EXPECT_NE(emsg.find("--device gpu"), std::string::npos) << emsg;
  // An exported model recorded for gpu refuses to run silently on the CPU.
  auto spec = Config::load((dir / "out/inference/inference.yaml").string());
  spec.apply_override("device=gpu");
  spec.save((dir / "out/inference/inference.yaml").string());
  const auto lmsg = error_of([&] { InferenceModel::load((dir / "out/inference").string()); });
  EXPECT_NE(lmsg.find("inference.yaml"), std::string::npos) << lmsg;
  EXPECT_NE(lmsg.find("device"), std::string::npos) << lmsg;
  EXPECT_NO_THROW(InferenceModel::load((dir / "out/inference").string(), "cpu"));
}

// PaddleClas evaluates from epoch start_eval_epoch on (epoch > start_eval_epoch - 1).
TEST(RunSafety, StartEvalEpochIsTheFirstEvaluatedEpoch) {
  const auto dir = scratch("start_eval");
  const auto data = make_images(dir / "data");
  auto cfg = Config::from_string(yaml(data, dir / "out"), "c.yaml");
  cfg.apply_override("Global.start_eval_epoch=2");
  testing::internal::CaptureStdout();
  Trainer(cfg, Trainer::Mode::kTrain).train();
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(out.find("[Eval][Epoch 1]"), std::string::npos) << out;
  EXPECT_NE(out.find("[Eval][Epoch 2]"), std::string::npos) << out;
}

// Checkpoints carry every CUDA generator's state: after a resume, CUDA random streams (dropout, random
// erasing on the device) continue where they were. Runs only where LibTorch sees a CUDA device.
TEST(RunSafety, CudaGeneratorStatesRoundTrip) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto dir = scratch("cuda_rng");
  auto cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: ResNet18}, BackboneStopLayer: {name: flatten}}\n");
  RecModel m(cfg["Arch"]);
  torch::manual_seed(1);
  (void)torch::rand({4}, torch::kCUDA);
  save_checkpoint((dir / "c").string(), *m, nullptr, [](torch::serialize::OutputArchive&) {}, CheckpointMeta{});
  const auto expected = torch::rand({8}, torch::kCUDA).cpu();
  (void)torch::rand({100}, torch::kCUDA);  // move the stream on
  load_checkpoint((dir / "c").string(), *m, nullptr, [](torch::serialize::InputArchive&) {});
  EXPECT_TRUE(torch::equal(torch::rand({8}, torch::kCUDA).cpu(), expected));
}

// A checkpoint whose TorchScript source record was damaged (a ckpt fuzz finding: LibTorch's parser crashed on
// it inside InputArchive::load_from) is refused before LibTorch parses it.
TEST(RunSafety, DamagedTorchScriptSourceIsRefusedBeforeLibTorchParsesIt) {
  const auto file = (std::filesystem::temp_directory_path() / ("featlearn_ts_" + std::to_string(::getpid()) + ".ckpt")).string();
  std::filesystem::copy_file(std::string(FEATLEARN_SOURCE_DIR) + "/tests/fuzz/corpus/ckpt/regress_torchscript_source",
                             file, std::filesystem::copy_options::overwrite_existing);
  torch::nn::Linear m(2, 2);
  try {
    load_checkpoint(file, *m, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("code/__torch__.py record is not what featlearn writes") != std::string::npos ||
                msg.find("not a readable featlearn checkpoint") != std::string::npos)
        << msg;
  }
  EXPECT_EQ(checkpoint_config(file), "");
  std::filesystem::remove(file);
}
