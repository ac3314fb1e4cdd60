// The `Global` section of a config (docs/architecture.md, "Global"), validated, with PaddleClas defaults.
#pragma once
#include <c10/core/Device.h>
#include <featlearn/config/config.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

struct GlobalConfig {
  std::optional<std::string> checkpoints;       // resume prefix (default null)
  std::optional<std::string> pretrained_model;  // weights prefix (default null)
  std::string output_dir = "./output/";
  std::string device = "cpu";                   // cpu | gpu
  std::optional<int64_t> class_num;
  int64_t save_interval = 1;
  bool eval_during_train = false;
  int64_t eval_interval = 1;
  int64_t start_eval_epoch = 0;                 // first epoch evaluated (PaddleClas: epoch >= this)
  int64_t epochs = 1;
  int64_t print_batch_step = 10;
  bool use_visualdl = false;                    // PaddleClas's switch for training curves
  // TensorBoard event files in output_dir/tensorboard/ (docs/report.md); default: use_visualdl.
  bool tensorboard = false;
  std::vector<int64_t> image_shape = {3, 224, 224};
  std::string save_inference_dir = "./inference";
  std::string eval_mode = "classification";     // retrieval | classification (PaddleClas's default)
  uint64_t seed = 0;
  bool feature_normalize = true;
  std::string feature_binarize;                 // "" | round | sign
  std::string retrieval_feature_from = "features";  // features | backbone
  int64_t sim_block_size = 64;
  bool re_ranking = false;
  bool overwrite_output = false;                // featlearn: a fresh run may replace output_dir's checkpoints
  // featlearn: `eval` / `report` without Global.pretrained_model evaluate random weights only when this is true
  // (otherwise they refuse: docs/config.md, "Global").
  bool eval_random_weights = false;
  // Training steps per epoch instead of the loader's batches per epoch (PaddleClas's iter_per_epoch; the loader's
  // epochs are read as one stream of batches). Also the LR schedules' iterations per epoch.
  std::optional<int64_t> iter_per_epoch;
  // Multi-process runs (docs/distributed.md): seconds the rendezvous and every collective may wait for the
  // other processes before the run fails with an error (a dead or hung rank).
  int64_t dist_timeout = 300;

  static GlobalConfig parse(const ConfigNode& global);
};

// "cpu" -> CPU; "gpu" -> the first CUDA device, or a ConfigError at `where` when LibTorch sees none.
c10::Device resolve_device(const std::string& device, const ConfigNode& where);

// The top-level `AMP` section (PaddleClas's mixed precision; docs/config.md, "AMP"). As in PaddleClas a present
// section turns AMP on unless it says `use_amp: False`.
struct AmpConfig {
  bool use_amp = false;                   // absent section: off; present: default true
  bool use_fp16_test = false;             // evaluation under autocast too
  double scale_loss = 1.0;                // initial loss scale
  bool use_dynamic_loss_scaling = false;  // Paddle's GradScaler rule (x2 after 1000 good steps, x0.5 after 2 bad)
  bool use_promote = false;
  std::string level = "O1";               // O1 (mixed) | O2 (pure fp16)

  static AmpConfig parse(const ConfigNode& amp);  // `amp` may be undefined (then off)
};

// Checks the top-level sections (Global, Arch, Loss, Optimizer, DataLoader, Metric, Infer, AMP).
void check_root_sections(const ConfigNode& root);

}  // namespace featlearn
