// featlearn: thin command-line front end over the featlearn library.
#include <CLI/CLI.hpp>

#include <featlearn/common/error.h>
#include <featlearn/dist/launch.h>
#include <featlearn/engine/commands.h>
#include <featlearn/index/commands.h>
#include <featlearn/serve/server.h>

#include <iostream>

namespace {
// `-o Global.epochs 3` (a space instead of '='): CLI11 would only say that "3" was not expected.
void refuse_spaced_overrides(int argc, char** argv) {
  for (int i = 1; i + 2 < argc; ++i) {
    const std::string opt = argv[i], key = argv[i + 1], value = argv[i + 2];
    if ((opt == "-o" || opt == "--override") && key.find('=') == std::string::npos && !value.empty() &&
        value[0] != '-' && value.find('=') == std::string::npos)
      throw featlearn::ConfigError("-o " + key + " " + value + ": expected Key.sub=value without spaces around '=' "
                                   "(write -o " + key + "=" + value + ")");
  }
}
}  // namespace

int main(int argc, char** argv) {
  featlearn::ensure_blas_coretype(argv);
  featlearn::LaunchArgs la;
  la.command = featlearn::take_launch_command(argc, argv);  // `launch ... -- <worker command>`
  CLI::App app{"featlearn: feature (embedding) learning for image retrieval (PaddleClas RecModel configs)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return featlearn::version_text(); });
  app.footer(
      "Configs are PaddleClas YAML files; -o Key.sub=value overrides any key (no spaces around '='), e.g.\n"
      "  featlearn train -c configs/emoji/ResNet18_reid.yaml -o Global.epochs=2\n"
      "Resume an interrupted or finished run (raise Global.epochs to train further):\n"
      "  featlearn train -c CFG -o Global.checkpoints=OUTPUT_DIR/RecModel/latest\n"
      "Every key, its default and where it is read: docs/config.md. Step by step: docs/user-guide.md.\n"
      "featlearn SUBCOMMAND --help describes each subcommand.");

  featlearn::ConfigArgs cfg_args;
  auto add_config_args = [&](CLI::App* sub) {
    sub->add_option("-c,--config", cfg_args.config, "PaddleClas-style YAML config")->required();
    sub->add_option("-o,--override", cfg_args.overrides, "Key.sub=value override (repeatable; no spaces around '=')")
        ->take_all()
        ->allow_extra_args(false);
    sub->add_flag("--print-config", cfg_args.print_config, "print the resolved config (after -o) first");
  };

  auto* check = app.add_subcommand(
      "check", "Check the whole config (every section, key, component name, value) without running anything; "
               "prints ok and the commands it is complete for");
  add_config_args(check);
  auto* describe = app.add_subcommand(
      "describe", "Model tree, BackboneStopLayer names, stage output shapes, parameter counts (no weights downloaded)");
  add_config_args(describe);
  auto* train = app.add_subcommand(
      "train", "Train as the config says; checkpoints go to Global.output_dir/<Arch.name>/ (latest, epoch_N, "
               "best_model with eval_during_train), the resolved config to output_dir/config.yaml. "
               "Global.checkpoints=<prefix> resumes exactly");
  add_config_args(train);
  auto* eval = app.add_subcommand(
      "eval", "Evaluate Global.pretrained_model=<prefix> on DataLoader.Eval; writes output_dir/eval_metrics.json. "
              "The model is built from the config stored in the checkpoint");
  add_config_args(eval);
  auto* exp = app.add_subcommand(
      "export", "Write the inference model of Global.pretrained_model (no Head) to Global.save_inference_dir: "
                "inference.yaml, inference.ckpt, model.onnx");
  add_config_args(exp);
  bool no_onnx = false;
  exp->add_flag("--no-onnx", no_onnx, "write the LibTorch model only, no model.onnx");

  featlearn::ReportArgs rp;
  auto* report = app.add_subcommand(
      "report", "Self-contained HTML report: curves, metrics, CMC, ranked retrieval grids (docs/report.md)");
  report->add_option("run_dir", rp.run_dir, "a training's output_dir (its config.yaml and best_model, else latest)");
  report->add_option("-c,--config", rp.cfg.config, "config instead of run_dir (with -o Global.pretrained_model=...)");
  report->add_option("-o,--override", rp.cfg.overrides, "Key.sub=value override (repeatable)")->take_all();
  report->add_option("--out", rp.out, "HTML file (default <Global.output_dir>/report.html)");
  report->add_option("--queries", rp.queries, "queries per grid: worst, random and best by AP")->capture_default_str();
  report->add_option("--topk", rp.topk, "gallery images shown per query")->capture_default_str();
  report->add_option("--seed", rp.seed, "which queries are the random ones")->capture_default_str();

  featlearn::ExtractArgs ex;
  auto* extract = app.add_subcommand("extract", "Embed the images of a list with an exported model");
  extract->add_option("--model", ex.model_dir, "exported inference directory")->required();
  extract->add_option("--image-root", ex.image_root, "root for the list's relative paths")->required();
  extract->add_option("--list", ex.list, "list file: `path [label [camid]]` per line (bare paths: an unlabeled gallery)")->required();
  extract->add_option("--out", ex.out, "output .npy of [N, D] float32 features")->required();
  extract->add_option("--batch-size", ex.batch_size, "batch size")->capture_default_str();
  extract->add_option("--workers", ex.workers, "loader threads")->capture_default_str();
  extract->add_option("--device", ex.device, "cpu or gpu (default: the device the model was exported for)");

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

  // featlearn index build|append|remove|search|eval|info (docs/index.md)
  auto* index = app.add_subcommand("index", "Gallery index: build, append, remove, search, eval, info");
  index->require_subcommand(1);
  featlearn::IndexBuildArgs ib;
  auto add_index_cfg = [&](CLI::App* sub, featlearn::ConfigArgs& c) {
    sub->add_option("-c,--config", c.config, "PaddleClas-style inference config (IndexProcess)")->required();
    sub->add_option("-o,--override", c.overrides, "Key.sub=value override (repeatable)")->take_all();
  };
  auto* ibuild = index->add_subcommand("build", "Run IndexProcess.index_operation (default new: build the index)");
  add_index_cfg(ibuild, ib.cfg);
  auto* iappend = index->add_subcommand("append", "Embed and add the data_file lines not yet in the index");
  add_index_cfg(iappend, ib.cfg);
  auto* iremove = index->add_subcommand("remove", "Remove data_file lines (IndexProcess.remove_by), ids or labels");
  add_index_cfg(iremove, ib.cfg);
  iremove->add_option("--ids", ib.remove_ids, "item ids to remove (instead of data_file)")->delimiter(',');
  iremove->add_option("--labels", ib.remove_labels, "labels whose items to remove (instead of data_file)")
      ->delimiter(',');
  featlearn::IndexSearchArgs is;
  auto* isearch = index->add_subcommand("search", "Search the index with images; one JSON line per query");
  add_index_cfg(isearch, is.cfg);
  isearch->add_option("--image", is.image, "one query image");
  isearch->add_option("--list", is.list, "query list (data_file format, paths relative to image_root)");
  isearch->add_option("--top-k", is.top_k, "results per query (default IndexProcess.return_k)");
  isearch->add_option("--score-thres", is.score_thres, "IP: min score; L2: max distance; hamming: max bits");
  isearch->add_option("--out", is.out, "write the JSON lines here instead of stdout");
  featlearn::IndexEvalArgs ie;
  auto* ieval = index->add_subcommand("eval", "Recall@k of the index against exact search (+ label accuracy)");
  add_index_cfg(ieval, ie.cfg);
  ieval->add_option("--list", ie.list, "query images with labels (data_file format)");
  ieval->add_option("--sample", ie.sample, "without --list: stored vectors used as queries")->capture_default_str();
  ieval->add_option("--top-k", ie.top_k, "k (default IndexProcess.return_k)");
  ieval->add_option("--out", ie.out, "also write the JSON report here");
  std::string info_dir;
  auto* iinfo = index->add_subcommand("info", "Items, dimension, metric, type, fingerprint, size, consistency");
  iinfo->add_option("--index-dir", info_dir, "index directory")->required();

  // featlearn serve (docs/serve.md)
  featlearn::ServeArgs sv;
  auto* serve = app.add_subcommand("serve", "HTTP/JSON retrieval service over one index (and its model)");
  serve->add_option("-c,--config", sv.cfg.config, "inference config (model + IndexProcess)");
  serve->add_option("-o,--override", sv.cfg.overrides, "Key.sub=value override (repeatable)")->take_all();
  serve->add_option("--index-dir", sv.index_dir, "vector-only service over this index (instead of -c)");
  serve->add_option("--host", sv.opt.host, "bind address (non-loopback needs --token-file)")->capture_default_str();
  serve->add_option("--port", sv.opt.port, "port (0: ephemeral)")->capture_default_str();
  serve->add_option("--token-file", sv.opt.token_file, "bearer token required for POST/DELETE /items");
  serve->add_option("--max-body-bytes", sv.opt.max_body_bytes, "request body limit")->capture_default_str();
  serve->add_option("--max-pixels", sv.opt.max_pixels, "decoded image pixel limit")->capture_default_str();
  serve->add_option("--max-batch", sv.opt.max_batch, "images per forward pass")->capture_default_str();
  serve->add_option("--max-wait-us", sv.opt.max_wait_us, "batching wait")->capture_default_str();
  serve->add_option("--threads", sv.opt.threads, "request threads = connections at once (0: max(64, 8 x cores))")
      ->capture_default_str();
  serve->add_option("--snapshot-every", sv.opt.snapshot_every, "items written between background snapshots (0: at stop)")
      ->capture_default_str();
  serve->add_option("--timeout-s", sv.opt.timeout_s, "socket read/write timeout")->capture_default_str();

  // featlearn launch (docs/distributed.md, "Launching")
  auto* launch = app.add_subcommand("launch", "Start distributed-training workers here: launch [options] -- train -c CFG");
  launch->add_option("--nproc-per-node", la.nproc_per_node, "workers started here (K)")->required();
  launch->add_option("--nnodes", la.nnodes, "launch invocations (machines) in the run (N)")->capture_default_str();
  launch->add_option("--node-rank", la.node_rank, "this invocation's index, 0..N-1")->capture_default_str();
  launch->add_option("--master-addr", la.master_addr, "host of rank 0 (MASTER_ADDR)")->capture_default_str();
  launch->add_option("--master-port", la.master_port, "rendezvous port (MASTER_PORT)")->capture_default_str();
  launch->add_option("--max-restarts", la.max_restarts, "restarts from the latest checkpoint after a failure")
      ->capture_default_str();
  launch->add_option("--stop-grace-s", la.stop_grace_s, "seconds between SIGTERM/SIGINT and SIGKILL when stopping")
      ->capture_default_str();
  launch->allow_extras();

  try {
    refuse_spaced_overrides(argc, argv);
  } catch (const featlearn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  CLI11_PARSE(app, argc, argv);
  try {
    featlearn::init_runtime();
    if (*check) return featlearn::cmd_check(cfg_args);
    if (*describe) return featlearn::cmd_describe(cfg_args);
    if (*train) return featlearn::cmd_train(cfg_args);
    if (*eval) return featlearn::cmd_eval(cfg_args);
    if (*exp) return featlearn::cmd_export(cfg_args, !no_onnx);
    if (*extract) return featlearn::cmd_extract(ex);
    if (*report) return featlearn::cmd_report(rp);
    if (*bench) return featlearn::cmd_bench_data(cfg_args, bench_iters, bench_workers);
    if (*prep) return featlearn::cmd_prepare_emoji(emoji_out, emoji_cache);
    if (*ibuild) return featlearn::cmd_index_build(ib);
    if (*iappend) return ib.operation = "append", featlearn::cmd_index_build(ib);
    if (*iremove) return ib.operation = "remove", featlearn::cmd_index_build(ib);
    if (*isearch) return featlearn::cmd_index_search(is);
    if (*ieval) return featlearn::cmd_index_eval(ie);
    if (*iinfo) return featlearn::cmd_index_info(info_dir);
    if (*serve) return featlearn::cmd_serve(sv);
    if (*launch) return la.unexpected = launch->remaining(), featlearn::cmd_launch(la);
  } catch (const featlearn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
