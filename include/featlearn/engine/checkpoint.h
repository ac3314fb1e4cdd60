// Versioned, atomically written checkpoints (docs/architecture.md, "File formats").
//
// File `<prefix>.ckpt` (a LibTorch serialize archive) holds:
//   format = "featlearn.checkpoint", format_version = 2,
//   model.<param or buffer name>, loss.<name> tensors (CombinedLoss parameters such as CenterLoss.centers),
//   optimizer_state (uint8: the serialized optimizer archive: states + iteration), rng_state (CPU generator),
//   cuda_rng_state.<d> (each CUDA generator), rng_state.rank<r> (rank r's CPU generator in a multi-process run,
//   r >= 1), meta (JSON: epoch, iteration, best_metric, best_epoch, metric_name, eval_pending, cuda_devices,
//   world_size), config (the resolved YAML), and checksums (JSON: record name ->
//   xxHash64 of its content), verified on load: a damaged record is an error naming the file and the record.
// Readers accept versions <= kCheckpointVersion (version 1: no checksums, optimizer as a sub-archive) and
// reject newer/unknown files with a clear error.
#pragma once
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <functional>
#include <string>
#include <vector>

namespace featlearn {

constexpr int64_t kCheckpointVersion = 2;

struct CheckpointMeta {
  int64_t epoch = 0;  // epochs completed
  int64_t iteration = 0;
  double best_metric = -1.0;
  int64_t best_epoch = 0;
  std::string metric_name;
  bool eval_pending = false;  // saved after training epoch `epoch`, before its evaluation ran
  std::string config_yaml;
  int64_t world_size = 1;  // processes of the run that wrote it
  // Multi-process runs: the CPU generator state of ranks 1..world_size-1 (rank 0's is rng_state).
  std::vector<torch::Tensor> rank_rng_states;
};

// "<prefix>.ckpt" unless prefix already ends with .ckpt.
std::string checkpoint_path(const std::string& prefix);

// `save_optimizer` writes into the given sub-archive (may be empty).
void save_checkpoint(const std::string& prefix, const torch::nn::Module& model, const torch::nn::Module* loss,
                     const std::function<void(torch::serialize::OutputArchive&)>& save_optimizer,
                     const CheckpointMeta& meta);

struct LoadedCheckpoint {
  std::string path;  // the file read: <prefix>.ckpt, or a Paddle <prefix>.pdparams
  CheckpointMeta meta;
  bool has_optimizer = false;
  bool rng_restored = false;
};

// The PaddleClas weights file `prefix` names, or "" when it names a featlearn checkpoint: `prefix` itself when
// it ends with .pdparams, else <prefix>.pdparams when it exists and <prefix>.ckpt does not (PaddleClas's
// pretrained_model / checkpoints take the prefix with or without the suffix).
std::string paddle_checkpoint_file(const std::string& prefix);

// The resolved config YAML a featlearn checkpoint was written with; "" for Paddle files and for files that cannot
// be read (load_checkpoint then names the problem).
std::string checkpoint_config(const std::string& prefix);

// A Paddle file (paddle_checkpoint_file) loads only the model's weights (load_module_weights: PaddleClas names
// mapped, docs/file-formats.md "Paddle .pdparams"), with a default `meta`; with `load_optimizer` (a resume)
// it is an error, as Paddle's .pdopt optimizer state is not read.
// Otherwise restores model (+ loss) tensors strictly (missing or shape-mismatched tensors are errors naming the
// parameter). With `load_optimizer`, also calls it with the optimizer sub-archive and restores the RNG state:
// rank `rank`'s stream (rng_state for rank 0, rng_state.rank<r> otherwise; a rank the writing run did not have
// keeps its current generator, and `LoadedCheckpoint::rng_restored` is false).
LoadedCheckpoint load_checkpoint(const std::string& prefix, torch::nn::Module& model, torch::nn::Module* loss,
                                 const std::function<void(torch::serialize::InputArchive&)>& load_optimizer,
                                 int rank = 0);

}  // namespace featlearn
