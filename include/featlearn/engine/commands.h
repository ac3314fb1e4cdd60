// The featlearn program's sub-commands, as library functions (tools/featlearn.cpp only parses arguments).
// Each returns the process exit code and throws featlearn::Error for user errors.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/engine/config_check.h>

#include <cstdint>
#include <string>
#include <vector>

namespace featlearn {

struct ConfigArgs {
  std::string config;                  // -c
  std::vector<std::string> overrides;  // -o Key.sub=value (repeatable)
  bool print_config = false;           // --print-config: print the resolved config first
};

// `featlearn check`: the whole-config check alone (include/featlearn/engine/config_check.h); prints "ok" and
// the commands the config is complete for.
int cmd_check(const ConfigArgs& args);
// The config of a command that loads Global.pretrained_model (eval, export, report), checked: when the checkpoint
// stores the config it was trained with and its Arch differs, the model is built from the stored Arch (with the
// command line's -o overrides on top), and a note names the keys that differ (docs/config.md, "Global").
Config load_config_for_weights(const ConfigArgs& args, ConfigUse use);

// Model tree, BackboneStopLayer names, stage shapes, parameter count, feature shape.
int cmd_describe(const ConfigArgs& args);
// Train (and evaluate during training) as the config says; resumes from Global.checkpoints.
int cmd_train(const ConfigArgs& args);
// Evaluate Global.pretrained_model (retrieval or classification) and write output_dir/eval_metrics.json.
int cmd_eval(const ConfigArgs& args);
// Write the inference model (no Head unless infer_output_key is logits) to Global.save_inference_dir, and its
// ONNX form model.onnx unless !write_onnx (`--no-onnx`; docs/deploy.md, "ONNX export").
int cmd_export(const ConfigArgs& args, bool write_onnx = true);

struct ExtractArgs {
  std::string model_dir;   // an exported inference directory
  std::string image_root;  // prefix for the list's relative paths
  std::string list;        // `path [label [camid]]` lines (the same columns on every line; bare paths: no labels)
  // features .npy [N, D] float32; <out stem>_meta.jsonl holds {path, label, camid} per row (null when absent),
  // <out stem>_labels.npy / _camids.npy the labels / camera ids when the list has them.
  std::string out;
  int64_t batch_size = 64;
  int workers = 2;
  std::string device;      // cpu | gpu; empty: the device recorded at export (inference.yaml)
};
int cmd_extract(const ExtractArgs& args);

// `featlearn report` (docs/report.md): evaluates the model once on DataLoader.Eval and writes one self-contained
// HTML page (training curves, metrics, CMC, similarity histograms, ranked grids of the worst / random / best
// queries, the config and the model). Either `cfg` (-c, -o Global.pretrained_model=...) or `run_dir`: a
// training's output_dir, read through its config.yaml and <Arch.name>/best_model (else latest).
struct ReportArgs {
  ConfigArgs cfg;
  std::string run_dir;
  std::string out;       // default <Global.output_dir>/report.html
  int64_t queries = 8;   // queries per grid (worst, random, best)
  int64_t topk = 10;     // gallery images per query
  uint64_t seed = 0;     // which queries are "random"
};
// Returns the path written.
std::string write_report(const ReportArgs& args);
int cmd_report(const ReportArgs& args);

// Images/s of the Train loader alone (workers > 0 overrides loader.num_workers).
int cmd_bench_data(const ConfigArgs& args, int64_t iters, int workers);
// Download (npm pack) and build the Emoji-4vendor ReID benchmark.
int cmd_prepare_emoji(const std::string& out_dir, const std::string& cache_dir);

// Sets LibTorch's intra-op thread count (LibTorch defaults to 1 here): threads_per_process() of
// <featlearn/dist/launch.h> (OMP_NUM_THREADS, else the cores / LOCAL_WORLD_SIZE).
void init_runtime();
// `featlearn --version`: featlearn's version, the LibTorch it runs on (and whether it sees CUDA devices), OpenCV.
std::string version_text();
// Call first in main(): re-executes the program once with OPENBLAS_CORETYPE set for this CPU when the user has
// not set it (Debian's OpenBLAS otherwise uses its slowest kernels on recent Xeons).
void ensure_blas_coretype(char** argv);

}  // namespace featlearn
