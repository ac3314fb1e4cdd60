#include <featlearn/engine/global_config.h>

#include <torch/cuda.h>

#include <algorithm>
#include <cmath>

namespace featlearn {

namespace {
std::optional<std::string> optional_path(const ConfigNode& g, const std::string& key) {
  auto n = g[key];
  if (!n.defined()) return std::nullopt;
  // PaddleClas allows `pretrained_model: False`.
  if (n.yaml().IsScalar()) {
    const std::string v = n.yaml().Scalar();
    if (v == "False" || v == "false" || v == "None" || v.empty()) return std::nullopt;
  }
  return n.as<std::string>();
}
}  // namespace

c10::Device resolve_device(const std::string& device, const ConfigNode& where) {
  if (device != "gpu") return c10::Device(c10::kCPU);
  if (!torch::cuda::is_available())
    where.fail("gpu requested but LibTorch sees no CUDA device (use -o Global.device=cpu)");
  return c10::Device(c10::kCUDA, 0);
}

GlobalConfig GlobalConfig::parse(const ConfigNode& g) {
  g.check_keys({"checkpoints", "pretrained_model", "output_dir", "device", "class_num", "save_interval",
                "eval_during_train", "eval_interval", "start_eval_epoch", "epochs", "print_batch_step",
                "use_visualdl", "image_shape", "save_inference_dir", "eval_mode", "seed", "feature_normalize",
                "feature_binarize", "retrieval_feature_from", "sim_block_size", "re_ranking", "to_static",
                "use_dali", "infer_imgs", "overwrite_output", "iter_per_epoch", "train_mode", "warmup_iter",
                "dist_timeout", "tensorboard", "eval_random_weights"});
  // infer_imgs is the input of PaddleClas's predict tool; it has no role in train/eval/export (featlearn's
  // `extract --list` takes the images to embed), so it is accepted and not used.
  GlobalConfig c;
  c.checkpoints = optional_path(g, "checkpoints");
  c.pretrained_model = optional_path(g, "pretrained_model");
  c.output_dir = g.get<std::string>("output_dir", c.output_dir);
  c.device = g.get<std::string>("device", c.device);
  if (c.device != "cpu" && c.device != "gpu") g["device"].fail("expected cpu or gpu, got '" + c.device + "'");
  c.class_num = g.optional<int64_t>("class_num");
  c.save_interval = g.get<int64_t>("save_interval", c.save_interval);
  c.eval_during_train = g.get<bool>("eval_during_train", c.eval_during_train);
  c.eval_interval = g.get<int64_t>("eval_interval", c.eval_interval);
  c.start_eval_epoch = g.get<int64_t>("start_eval_epoch", c.start_eval_epoch);
  c.epochs = g.get<int64_t>("epochs", c.epochs);
  c.print_batch_step = g.get<int64_t>("print_batch_step", c.print_batch_step);
  c.use_visualdl = g.get<bool>("use_visualdl", c.use_visualdl);
  c.tensorboard = g.get<bool>("tensorboard", c.use_visualdl);
  c.image_shape = g.get<std::vector<int64_t>>("image_shape", c.image_shape);
  if (c.image_shape.size() != 3 || *std::min_element(c.image_shape.begin(), c.image_shape.end()) <= 0)
    g["image_shape"].fail("expected [C, H, W] of positive sizes");
  c.save_inference_dir = g.get<std::string>("save_inference_dir", c.save_inference_dir);
  c.eval_mode = g.get<std::string>("eval_mode", c.eval_mode);
  if (c.eval_mode != "retrieval" && c.eval_mode != "classification" && c.eval_mode != "adaface")
    g["eval_mode"].fail("expected retrieval, classification or adaface, got '" + c.eval_mode + "'");
  c.seed = static_cast<uint64_t>(g.get<int64_t>("seed", 0));
  c.feature_normalize = g.get<bool>("feature_normalize", c.feature_normalize);
  if (g["feature_binarize"].defined()) {
    c.feature_binarize = g["feature_binarize"].as<std::string>();
    if (c.feature_binarize == "None" || c.feature_binarize == "False") c.feature_binarize.clear();
    if (!c.feature_binarize.empty() && c.feature_binarize != "round" && c.feature_binarize != "sign")
      g["feature_binarize"].fail("expected round or sign, got '" + c.feature_binarize + "'");
  }
  c.retrieval_feature_from = g.get<std::string>("retrieval_feature_from", c.retrieval_feature_from);
  if (c.retrieval_feature_from != "features" && c.retrieval_feature_from != "backbone")
    g["retrieval_feature_from"].fail("expected features or backbone");
  c.sim_block_size = g.get<int64_t>("sim_block_size", c.sim_block_size);
  if (c.sim_block_size <= 0) g["sim_block_size"].fail("must be positive");
  c.re_ranking = g.get<bool>("re_ranking", c.re_ranking);
  c.dist_timeout = g.get<int64_t>("dist_timeout", c.dist_timeout);
  if (c.dist_timeout <= 0) g["dist_timeout"].fail("must be a positive number of seconds");
  c.overwrite_output = g.get<bool>("overwrite_output", c.overwrite_output);
  c.eval_random_weights = g.get<bool>("eval_random_weights", c.eval_random_weights);
  if (g["iter_per_epoch"].defined()) {  // PaddleClas: a falsy value (0) keeps the loader's length
    const auto ipe = g.require<int64_t>("iter_per_epoch");
    if (ipe < 0) g["iter_per_epoch"].fail("must be positive (0 or null: the loader's batches per epoch)");
    if (ipe > 0) c.iter_per_epoch = ipe;
  }
  // Static-graph export and DALI are Paddle runtime choices; accepted when off, refused when on.
  for (const char* key : {"to_static", "use_dali"})
    if (g.get<bool>(key, false)) g[key].fail("not supported by featlearn (set it to False)");
  if (c.epochs <= 0) g["epochs"].fail("must be positive");
  if (c.save_interval <= 0) g["save_interval"].fail("must be positive");
  if (c.eval_interval <= 0) g["eval_interval"].fail("must be positive");
  if (c.print_batch_step <= 0) g["print_batch_step"].fail("must be positive");
  return c;
}

void check_root_sections(const ConfigNode& root) {
  // Sections of PaddleClas modes featlearn does not have get a reason, not just "unknown key"
  // (docs/paddleclas-differences.md, "Configs featlearn refuses").
  if (root["Slim"].defined())
    root["Slim"].fail(
        "quantization and pruning (PaddleClas's slim/ configs) need PaddleSlim, which featlearn does not "
        "include; train the float model without the Slim section, then export it");
  for (const char* key : {"SSL", "EMA"})
    if (root[key].defined())
      root[key].fail(
          "semi-supervised classification (PaddleClas's ssl/ configs, FixMatch/CCSSL) is not a feature-learning "
          "mode; featlearn trains RecModel retrieval and classification configs only");
  if (root["Global"].defined() && root["Global"]["train_mode"].defined()) {
    const auto mode = root["Global"]["train_mode"];
    const std::string m = mode.as<std::string>();
    if (m.rfind("fixmatch", 0) == 0)
      mode.fail("'" + m + "' is PaddleClas's semi-supervised classification training (ssl/ configs), which is "
                "not a feature-learning mode; featlearn does not have it");
    if (m != "metabin")
      mode.fail("unknown train_mode '" + m + "' (featlearn has: metabin; leave it out for standard training)");
  } else if (root["Global"].defined() && root["Global"]["warmup_iter"].defined()) {
    // Read by the MetaBIN loop (engine/train_metabin.h).
    root["Global"]["warmup_iter"].fail("only used with train_mode: metabin");
  }
  root.check_keys({"Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "Infer", "AMP"});
}

AmpConfig AmpConfig::parse(const ConfigNode& amp) {
  AmpConfig c;
  if (!amp.defined()) return c;
  if (!amp.is_map()) amp.fail("expected a map such as {use_amp: True, scale_loss: 128.0, level: O1}");
  amp.check_keys({"use_amp", "use_fp16_test", "scale_loss", "use_dynamic_loss_scaling", "use_promote", "level"});
  c.use_amp = amp.get<bool>("use_amp", true);  // PaddleClas: a present section means AMP
  c.use_fp16_test = amp.get<bool>("use_fp16_test", c.use_fp16_test);
  c.scale_loss = amp.get<double>("scale_loss", c.scale_loss);
  if (!(c.scale_loss > 0) || !std::isfinite(c.scale_loss)) amp["scale_loss"].fail("must be a positive number");
  c.use_dynamic_loss_scaling = amp.get<bool>("use_dynamic_loss_scaling", c.use_dynamic_loss_scaling);
  c.use_promote = amp.get<bool>("use_promote", c.use_promote);
  c.level = amp.get<std::string>("level", c.level);
  if (c.level != "O1" && c.level != "O2") amp["level"].fail("expected O1 or O2, got '" + c.level + "'");
  return c;
}

}  // namespace featlearn
