// A newcomer's path (docs/user-guide.md): mistakes that must fail (eval of random weights, a typo anywhere in
// the config, in every command, before any list is read), `featlearn check`, the checkpoint's Arch used by
// export and eval, bare-path extract lists with their meta file, and the program's help and version texts.
#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/config_check.h>
#include <featlearn/engine/trainer.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../error_of.h"
#include "tiny_run.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

namespace fs = std::filesystem;
using namespace featlearn;
using featlearn::test::error_of;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / fmt::format("featlearn_newcomer_{}_{}", name, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string run_program(const std::string& args) {
  const std::string cmd = std::string(FEATLEARN_BINARY_DIR) + "/featlearn " + args + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

std::string write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p.string();
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

}  // namespace

// 1. eval without weights refuses (before any list is read), unless random weights are asked for.
TEST(NewcomerPath, EvalRefusesRandomWeightsUnlessAsked) {
  const fs::path dir = scratch("eval");
  // Lists that do not exist: the refusal must come first.
  const std::string cfg = write(dir / "c.yaml", test::tiny_reid_config(dir / "no_data", dir / "out"));
  const std::string msg = error_of([&] { cmd_eval(ConfigArgs{cfg, {}}); });
  EXPECT_NE(msg.find("nothing to evaluate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Global.pretrained_model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Global.eval_random_weights=True"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "out" / "eval_metrics.json"));
  // Asked for: it runs (on real data) and says what it evaluated.
  const fs::path data = test::make_tiny_reid_dataset(dir / "data");
  const std::string ok = write(dir / "ok.yaml", test::tiny_reid_config(data, dir / "out"));
  const std::string out = test::stdout_of([&] { cmd_eval(ConfigArgs{ok, {"Global.eval_random_weights=True"}}); });
  EXPECT_NE(out.find("[Eval][random weights]"), std::string::npos) << out;
  EXPECT_NE(out.find("| Eval.Query             |       12 |      6 |       1 |"), std::string::npos) << out;
  EXPECT_EQ(out.find("resolved config"), std::string::npos) << "the config is printed only with --print-config";
}

// 2. A mistake anywhere in the config fails every command, before any list or image is opened.
TEST(NewcomerPath, WholeConfigCheckedInEveryCommandFirst) {
  const fs::path dir = scratch("check");
  const std::string good = test::tiny_reid_config(dir / "no_such_data", dir / "out");
  struct Case {
    std::string what, yaml;
    std::vector<std::string> overrides;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"misspelled section", replace(good, "Optimizer:", "Optimzer:"), {}, "did you mean Optimizer?"},
      {"misspelled Global key by -o", good, {"Global.epoch=3"}, "did you mean epochs?"},
      {"wrong type", replace(good, "epochs: 2", "epochs: ten"), {}, "epochs"},
      {"unknown optimizer", replace(good, "name: Momentum", "name: Momentumm"), {}, "Momentumm"},
      {"unknown loss", replace(good, "TripletLossV2:", "TripletLossV3:"), {}, "TripletLossV3"},
      {"unknown sampler", replace(good, "sampler: {name: DistributedBatchSampler, batch_size: 8",
                                  "sampler: {name: DistributedBatchSamplr, batch_size: 8"),
       {}, "DistributedBatchSamplr"},
      {"unknown transform", replace(good, "- ResizeImage: {size: 32}", "- ResizeImg: {size: 32}"), {}, "ResizeImg"},
      {"misspelled dataset key", replace(good, "cls_label_path:", "cls_label_pth:"), {}, "cls_label_pth"},
      {"unknown metric", replace(good, "- mINP: {}", "- mINPP: {}"), {}, "mINPP"},
  };
  for (const auto& c : cases) {
    const std::string cfg = write(dir / "bad.yaml", c.yaml);
    std::vector<std::string> with_weights = c.overrides;
    with_weights.push_back("Global.pretrained_model=" + (dir / "none").string());
    const std::vector<std::pair<std::string, std::function<void()>>> commands = {
        {"check", [&] { cmd_check(ConfigArgs{cfg, c.overrides}); }},
        {"describe", [&] { cmd_describe(ConfigArgs{cfg, c.overrides}); }},
        {"train", [&] { cmd_train(ConfigArgs{cfg, c.overrides}); }},
        {"eval", [&] { cmd_eval(ConfigArgs{cfg, with_weights}); }},
        {"export", [&] { cmd_export(ConfigArgs{cfg, with_weights}); }},
    };
    for (const auto& [name, run] : commands) {
      std::string msg;
      test::stdout_of([&] { msg = error_of(run); });
      // The config error, not the missing list directory (which would be reported only after it).
      EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << " / " << name << ": " << msg;
      EXPECT_EQ(msg.find("does not exist"), std::string::npos) << c.what << " / " << name << ": " << msg;
    }
  }
  // `-o Global.epochs 3` (no '='): says how to write it.
  const std::string cfg = write(dir / "good.yaml", good);
  const std::string msg = error_of([&] { cmd_check(ConfigArgs{cfg, {"Global.epochs", "3"}}); });
  EXPECT_NE(msg.find("write -o Global.epochs=3"), std::string::npos) << msg;
}

// `featlearn check` alone: ok, and which commands the config is complete for.
TEST(NewcomerPath, CheckSaysOkAndWhatTheConfigIsFor) {
  const fs::path dir = scratch("ok");
  const std::string cfg = write(dir / "c.yaml", test::tiny_reid_config(dir / "not_needed", dir / "out"));
  std::string out = test::stdout_of([&] { cmd_check(ConfigArgs{cfg, {}}); });
  EXPECT_NE(out.find("ok: " + cfg), std::string::npos) << out;
  EXPECT_NE(out.find("ready for: train, eval, export, describe"), std::string::npos) << out;
  // An eval-only config (no Loss.Train, no Optimizer) is fine for eval, not for train.
  std::string eval_only = test::tiny_reid_config(dir / "not_needed", dir / "out");
  eval_only = eval_only.substr(0, eval_only.find("Loss:")) + eval_only.substr(eval_only.find("DataLoader:"));
  const std::string cfg2 = write(dir / "e.yaml", eval_only);
  out = test::stdout_of([&] { cmd_check(ConfigArgs{cfg2, {}}); });
  EXPECT_NE(out.find("ready for: eval, export, describe"), std::string::npos) << out;
  EXPECT_NE(out.find("not for train: missing Loss.Train"), std::string::npos) << out;
}

// 3 and 9: train with an override, export and eval with the original config (the checkpoint's Arch is used,
// and the note names the key), then extract a bare-path list.
TEST(NewcomerPath, CheckpointArchIsUsedAndBarePathListsExtract) {
  const fs::path dir = scratch("arch");
  const fs::path data = test::make_tiny_reid_dataset(dir / "data");
  const std::string cfg = write(dir / "c.yaml", test::tiny_reid_config(data, dir / "out"));
  const std::string train_out = test::stdout_of([&] {
    cmd_train(ConfigArgs{cfg, {"Arch.Head.class_num=7", "Global.epochs=1", "Global.eval_during_train=False"}});
  });
  EXPECT_NE(train_out.find("| Train                  |       24 |      6 |       2 |          8 |             3 |"),
            std::string::npos)
      << train_out;
  EXPECT_NE(train_out.find("batch_cost: "), std::string::npos);
  EXPECT_NE(train_out.find("reader_cost: "), std::string::npos);
  EXPECT_NE(train_out.find("Checkpoints: " + (dir / "out" / "RecModel").string()), std::string::npos) << train_out;

  // A head too small for the list's labels fails before training, naming the key and the needed size.
  std::string small;
  test::stdout_of([&] {
    small = error_of([&] {
      cmd_train(ConfigArgs{cfg, {"Arch.Head.class_num=5", "Global.output_dir=" + (dir / "small").string()}});
    });
  });
  EXPECT_NE(small.find("Arch.Head.class_num (set by -o): is 5 but DataLoader.Train's labels go up to 5"), std::string::npos) << small;
  EXPECT_NE(small.find("class_num must be at least 6"), std::string::npos) << small;

  const std::string weights = "Global.pretrained_model=" + (dir / "out" / "RecModel" / "latest").string();
  const std::string exp_out = test::stdout_of(
      [&] { cmd_export(ConfigArgs{cfg, {weights, "Global.save_inference_dir=" + (dir / "inf").string()}}, false); });
  EXPECT_NE(exp_out.find("Arch.Head.class_num (6 in the config, 7 in the checkpoint)"), std::string::npos) << exp_out;
  const std::string eval_out = test::stdout_of([&] { cmd_eval(ConfigArgs{cfg, {weights}}); });
  EXPECT_NE(eval_out.find("[Eval][" + (dir / "out" / "RecModel" / "latest.ckpt").string() + "]"), std::string::npos)
      << eval_out;

  // A bare-path list: features, a meta row per feature with null label / camid, no labels file.
  {
    std::ofstream bare(dir / "bare.txt");
    bare << "images/" << fs::path(fmt::format("id0&cam<0>_0.png")).string() << "\n\n"
         << "images/" << "id3&cam<1>_1.png" << "\n";
  }
  ExtractArgs ex;
  ex.model_dir = (dir / "inf").string();
  ex.image_root = data.string();
  ex.list = (dir / "bare.txt").string();
  ex.out = (dir / "feats.npy").string();
  const std::string ex_out = test::stdout_of([&] { cmd_extract(ex); });
  EXPECT_NE(ex_out.find("L2-normalized"), std::string::npos) << ex_out;
  std::ifstream meta(dir / "feats_meta.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(meta, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["path"], "images/id0&cam<0>_0.png");
  EXPECT_TRUE(rows[0]["label"].is_null());
  EXPECT_TRUE(rows[1]["camid"].is_null());
  EXPECT_FALSE(fs::exists(dir / "feats_labels.npy"));
  // With labels and cameras: the meta rows carry them.
  std::ofstream(dir / "full.txt") << "images/id2&cam<1>_0.png 2 1\n";
  ex.list = (dir / "full.txt").string();
  test::stdout_of([&] { cmd_extract(ex); });
  std::ifstream meta2(dir / "feats_meta.jsonl");
  std::string line;
  std::getline(meta2, line);
  EXPECT_EQ(nlohmann::json::parse(line), nlohmann::json::parse(R"({"path": "images/id2&cam<1>_0.png", "label": 2, "camid": 1})"));
  EXPECT_TRUE(fs::exists(dir / "feats_labels.npy"));
  EXPECT_TRUE(fs::exists(dir / "feats_camids.npy"));
  // Errors name the user's own argument and line.
  std::ofstream(dir / "mixed.txt") << "images/id2&cam<1>_0.png 2\nimages/id2&cam<1>_1.png\n";
  ex.list = (dir / "mixed.txt").string();
  std::string msg = error_of([&] { cmd_extract(ex); });
  EXPECT_NE(msg.find("extract --list " + ex.list + ":2"), std::string::npos) << msg;
  ex.list = (dir / "absent.txt").string();
  msg = error_of([&] { cmd_extract(ex); });
  EXPECT_NE(msg.find("extract --list " + ex.list + ": cannot open"), std::string::npos) << msg;
}

// 10. The program's help and version.
TEST(NewcomerPath, HelpAndVersion) {
  const std::string help = run_program("--help");
  for (const char* s : {"check", "train", "eval", "export", "extract", "report", "index", "serve", "launch",
                        "Global.checkpoints=", "docs/config.md", "docs/user-guide.md", "--version"})
    EXPECT_NE(help.find(s), std::string::npos) << s << "\n" << help;
  const std::string train_help = run_program("train --help");
  EXPECT_NE(train_help.find("--print-config"), std::string::npos) << train_help;
  EXPECT_NE(train_help.find("Global.checkpoints"), std::string::npos) << train_help;
  // A space instead of '=' after -o: the program says how to write it (not CLI11's "3 was not expected").
  const std::string spaced =
      run_program(std::string("check -c ") + FEATLEARN_SOURCE_DIR + "/configs/emoji/ResNet18_reid.yaml -o Global.epochs 3");
  EXPECT_NE(spaced.find("error: -o Global.epochs 3: expected Key.sub=value without spaces around '=' (write -o "
                        "Global.epochs=3)"),
            std::string::npos)
      << spaced;
  const std::string version = run_program("--version");
  EXPECT_NE(version.find("featlearn "), std::string::npos) << version;
  EXPECT_NE(version.find("LibTorch "), std::string::npos) << version;
  EXPECT_NE(version.find(version_text()), std::string::npos) << version;
}
