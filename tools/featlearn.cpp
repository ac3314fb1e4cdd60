// featlearn: thin command-line front end over the featlearn library.
#include <CLI/CLI.hpp>

#include <featlearn/common/error.h>
#include <featlearn/engine/commands.h>

#include <iostream>

int main(int argc, char** argv) {
  featlearn::ensure_blas_coretype(argv);
  CLI::App app{"featlearn: feature (embedding) learning for image retrieval (PaddleClas RecModel configs)"};
  app.require_subcommand(1);

  featlearn::ConfigArgs cfg_args;
  auto add_config_args = [&](CLI::App* sub) {
    sub->add_option("-c,--config", cfg_args.config, "PaddleClas-style YAML config")->required();
    sub->add_option("-o,--override", cfg_args.overrides, "Key.sub=value override (repeatable)")
        ->take_all()
        ->allow_extra_args(false);
  };

  auto* describe = app.add_subcommand("describe", "Model tree, stop-layer names, stage shapes, parameter count");
  add_config_args(describe);
  auto* train = app.add_subcommand("train", "Train (and evaluate during training)");
  add_config_args(train);
  auto* eval = app.add_subcommand("eval", "Evaluate Global.pretrained_model");
  add_config_args(eval);
  auto* exp = app.add_subcommand("export", "Write the inference model to Global.save_inference_dir");
  add_config_args(exp);

  featlearn::ExtractArgs ex;
  auto* extract = app.add_subcommand("extract", "Embed the images of a list with an exported model");
  extract->add_option("--model", ex.model_dir, "exported inference directory")->required();
  extract->add_option("--image-root", ex.image_root, "root for the list's relative paths")->required();
  extract->add_option("--list", ex.list, "list file: path label [camid]")->required();
  extract->add_option("--out", ex.out, "output .npy of [N, D] float32 features")->required();
  extract->add_option("--batch-size", ex.batch_size, "batch size")->capture_default_str();
  extract->add_option("--workers", ex.workers, "loader threads")->capture_default_str();

  int64_t bench_iters = 50;
  int bench_workers = 0;
  auto* bench = app.add_subcommand("bench-data", "Images/s of the Train data loader alone");
  add_config_args(bench);
  bench->add_option("--iters", bench_iters, "batches to time")->capture_default_str();
  bench->add_option("--workers", bench_workers, "override loader.num_workers (0: keep)")->capture_default_str();

  std::string emoji_out = "dataset/emoji_reid", emoji_cache = "dataset/.npm_cache";
  auto* prep = app.add_subcommand("prepare-emoji", "Build the Emoji-4vendor ReID benchmark from npm packages");
  prep->add_option("--out", emoji_out, "output directory")->capture_default_str();
  prep->add_option("--cache", emoji_cache, "download/extract cache")->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  try {
    featlearn::init_runtime();
    if (*describe) return featlearn::cmd_describe(cfg_args);
    if (*train) return featlearn::cmd_train(cfg_args);
    if (*eval) return featlearn::cmd_eval(cfg_args);
    if (*exp) return featlearn::cmd_export(cfg_args);
    if (*extract) return featlearn::cmd_extract(ex);
    if (*bench) return featlearn::cmd_bench_data(cfg_args, bench_iters, bench_workers);
    if (*prep) return featlearn::cmd_prepare_emoji(emoji_out, emoji_cache);
  } catch (const featlearn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
