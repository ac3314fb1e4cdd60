#include <featlearn/common/atomic_file.h>
#include <featlearn/engine/trainer.h>

#include <ATen/CPUGeneratorImpl.h>

#include "train_log.h"

#include <featlearn/data/face_dataset.h>
#include <featlearn/data/loader.h>
#include <featlearn/dist/process_group.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/config_check.h>
#include <featlearn/engine/train_metabin.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/face_verification.h>
#include <featlearn/model/batch_norm.h>
#include <featlearn/model/distillation_model.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

namespace featlearn {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string yaml_of(const ConfigNode& n) {
  YAML::Emitter e;
  e << n.yaml();
  return e.c_str();
}

}  // namespace

std::pair<ConfigNode, std::optional<ConfigNode>> eval_sections(const ConfigNode& eval) {
  // PaddleClas's classification form: Eval itself holds dataset / sampler / loader.
  if (eval.has("dataset")) return {eval, std::nullopt};
  // PaddleClas's gallery = query form: a single set under any key name.
  const auto keys = eval.keys();
  if (keys.size() == 1) return {eval[keys[0]], std::nullopt};
  eval.check_keys({"Query", "Gallery"});
  if (!eval.has("Query")) eval.fail("needs Query and Gallery, one set under any name, or dataset/sampler/loader");
  if (!eval.has("Gallery")) return {eval["Query"], std::nullopt};
  return {eval["Query"], eval["Gallery"]};
}

bool BestMetric::offer(const std::string& metric, double v, int64_t at_epoch, std::string* note) {
  if (!name.empty() && name != metric) {
    if (note)
      *note = fmt::format("the resumed run chose best_model by {} ({:.5f} at epoch {}); this config's first "
                          "Metric.Eval metric is {}: best_model follows {} from now on",
                          name, value, epoch, metric, metric);
    value = -1.0;
    epoch = 0;
  }
  name = metric;
  if (v < value) return false;
  value = v;
  epoch = at_epoch;
  return true;
}

torch::Tensor postprocess_features(torch::Tensor features, bool normalize, const std::string& binarize) {
  if (normalize)
    features = torch::nn::functional::normalize(features,
                                                torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
  if (binarize == "round") {
    // paddle.round rounds halves away from zero (torch::round: to even); round(x)·2 − 1 as PaddleClas.
    const torch::Tensor t = torch::trunc(features);
    features = torch::where((features - t).abs() == 0.5, t + torch::sign(features), torch::round(features)) * 2.0 - 1.0;
  }
  if (binarize == "sign") features = torch::sign(features);
  return features;
}

struct Trainer::State {
  Config config;
  GlobalConfig g;
  Mode mode = Mode::kTrain;
  torch::Device device{torch::kCPU};
  ArchModelPtr model;  // a RecModel or a DistillationModel (model/arch.h)
  CombinedLoss train_loss{nullptr};
  CombinedLoss eval_loss{nullptr};  // Loss.Eval: reported in classification eval, as PaddleClas does
  std::unique_ptr<OptimizerSet> optimizer;
  std::unique_ptr<MetaBinLoop> metabin;  // Global.train_mode: metabin (engine/train_metabin.h)
  std::unique_ptr<DataLoader> train_loader;
  // DataLoader.Eval, built (and so checked) at startup; gallery is null when the query set is also the gallery.
  std::unique_ptr<DataLoader> eval_query, eval_gallery;
  std::optional<MetricSet> metrics;
  int64_t start_epoch = 1;          // 1-based epoch to run next
  int64_t pending_eval_epoch = 0;   // resumed from a checkpoint saved before this epoch's evaluation
  BestMetric best;
  std::string ckpt_dir;
  std::string weights_label;  // what an evaluation-only run evaluates (labels its result line)
  std::unique_ptr<TrainLog> log;
  MetricValues last_eval;
  // Multi-process runs (docs/distributed.md): the group (null in a 1-process run); rank 0 alone writes.
  std::unique_ptr<DistributedRun> dist;
  ProcessGroup* pg = nullptr;
  int rank = 0, world = 1;
  std::unique_ptr<GradientReducer> reducer;  // averages model + loss gradients, overlapped with backward
  double allreduce_seconds = 0;
  int64_t allreduce_steps = 0;

  explicit State(Config c) : config(std::move(c)) {}
  bool writer() const { return rank == 0; }

  void save(const std::string& name, int64_t epoch, bool eval_pending = false) {
    CheckpointMeta meta;
    meta.world_size = world;
    if (pg) {
      // Every rank's CPU generator goes into rank 0's checkpoint (a collective: all ranks call save).
      auto gen = at::detail::getDefaultCPUGenerator();
      torch::Tensor state;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        state = gen.get_state();
      }
      auto all = pg->all_gather_rows(state.view({1, -1}));
      for (int r = 1; r < world; ++r) meta.rank_rng_states.push_back(all[r].clone());
    }
    if (!writer()) return;
    meta.epoch = epoch;
    meta.iteration = optimizer ? optimizer->iteration() : 0;
    meta.best_metric = best.value;
    meta.best_epoch = best.epoch;
    meta.metric_name = best.name;
    meta.eval_pending = eval_pending;
    meta.config_yaml = config.dump();
    save_checkpoint(
        (fs::path(ckpt_dir) / name).string(), *model, train_loss ? train_loss.ptr().get() : nullptr,
        [&](torch::serialize::OutputArchive& ar) {
          if (optimizer) optimizer->save(ar);
          if (metabin) metabin->save(ar);
        },
        meta);
  }
};

namespace {
// A fresh training run must not replace an earlier run's checkpoints (docs/architecture.md, "Training and
// evaluation"): resume it, choose another output_dir, or say Global.overwrite_output: True.
void refuse_overwrite(const ConfigNode& global, const std::string& ckpt_dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec))
    if (e.path().extension() == ".ckpt") found.push_back(e.path().filename().string());
  if (found.empty()) return;
  std::sort(found.begin(), found.end());
  if (found.size() > 4) found.resize(4), found.push_back("...");
  global["output_dir"].fail(fmt::format(
      "{} already holds checkpoints of an earlier run ({}): resume it with -o Global.checkpoints={}, "
      "choose another Global.output_dir, or set Global.overwrite_output: True to replace them",
      ckpt_dir, join(found), (fs::path(ckpt_dir) / "latest").string()));
}
}  // namespace

namespace {
// One row of the data summary the run prints first (docs/user-guide.md, "Training").
std::string data_row(const std::string& name, const DataLoader& loader) {
  const Dataset& ds = loader.dataset();
  std::set<int64_t> ids, cams;
  for (size_t i = 0; i < ds.size(); ++i) {
    ids.insert(ds.label(i));
    if (ds.has_camids()) cams.insert(ds.camid(i));
  }
  return fmt::format("| {:<22} | {:>8} | {:>6} | {:>7} | {:>10} | {:>13} |\n", name, ds.size(), ids.size(),
                     ds.has_camids() ? std::to_string(cams.size()) : "-", loader.batch_size(),
                     loader.batches_per_epoch());
}

void print_data_summary(const std::vector<std::pair<std::string, const DataLoader*>>& sets, int world) {
  std::string t = "| set                    |   images |    ids | cameras | batch size | batches/epoch |\n"
                  "|------------------------|----------|--------|---------|------------|---------------|\n";
  for (const auto& [name, loader] : sets)
    if (loader) t += data_row(name, *loader);
  fmt::print("{}", t);
  for (const auto& [name, loader] : sets) {
    if (!loader || name != "Train") continue;
    const int64_t used = loader->batches_per_epoch() * loader->batch_size() * world;
    const int64_t n = static_cast<int64_t>(loader->dataset().size());
    fmt::print("Train: {} batches of {} per epoch{} = {} images per epoch of {} listed{}\n",
               loader->batches_per_epoch(), loader->batch_size(),
               world > 1 ? fmt::format(" on each of {} processes (global batch {})", world, loader->batch_size() * world) : "",
               used, n,
               used < n ? fmt::format(" ({} left out of each epoch: drop_last or the sampler's whole-id batches)", n - used)
                        : "");
  }
}
}  // namespace

Trainer::Trainer(Config config, Mode mode) : s_(std::make_unique<State>(std::move(config))) {
  auto& s = *s_;
  s.mode = mode;
  const auto root = s.config.root();
  // The whole config first (docs/config.md, "Checking a config"): a typo anywhere fails before any list is read.
  check_config(root, mode == Mode::kTrain ? ConfigUse::kTrain : ConfigUse::kEval);
  s.g = GlobalConfig::parse(root["Global"]);
  const auto& g = s.g;
  // An evaluation of random weights is a mistake unless asked for (docs/config.md, "Global").
  if (mode == Mode::kEval && !g.pretrained_model && !g.eval_random_weights)
    root["Global"].fail("nothing to evaluate: set Global.pretrained_model to the weights (e.g. -o "
                        "Global.pretrained_model=output/RecModel/latest), or -o Global.eval_random_weights=True to "
                        "evaluate a randomly initialized model on purpose");
  s.device = resolve_device(g.device, root["Global"]["device"]);
  // A multi-process run (the torchrun environment, as `featlearn launch` sets it; docs/distributed.md).
  const DistEnv env = DistEnv::from_environment();
  if (env.world_size > 1) {
    if (is_metabin_run(root))
      root["Global"]["train_mode"].fail("MetaBIN training runs in one process in featlearn (its meta-learning "
                                        "steps are not distributed); start it without `featlearn launch`");
    if (s.device.is_cuda()) s.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    s.dist = std::make_unique<DistributedRun>(env, std::chrono::seconds(g.dist_timeout), s.device.is_cuda());
    s.pg = s.dist->group();
    s.rank = env.rank;
    s.world = env.world_size;
    if (s.writer())
      fmt::print("Distributed run: {} processes ({}), batch_size per process; the global batch is {} x batch_size\n",
                 s.world, s.pg->backend(), s.world);
  }
  // AMP (docs/config.md, "AMP"): Paddle enables it on GPUs only and runs float32 elsewhere, with a warning.
  const auto amp = AmpConfig::parse(root["AMP"]);
  if (amp.use_amp && s.device.is_cpu())
    fmt::print("warning: {}: AMP has no effect on the CPU (as in Paddle): training and evaluation run in float32\n",
               root["AMP"].where());
  if (amp.use_amp && !s.device.is_cpu())
    root["AMP"].fail("mixed precision on the GPU is not implemented in featlearn yet; set AMP.use_amp: False "
                     "(training runs in float32)");
  torch::manual_seed(g.seed);
  s.ckpt_dir = (fs::path(g.output_dir) / root["Arch"].get<std::string>("name", "RecModel")).string();
  const bool train = mode == Mode::kTrain;
  // `featlearn launch --max-restarts` restarts a failed run from its latest checkpoint (docs/distributed.md).
  if (const char* resume = std::getenv("FEATLEARN_RESUME_LATEST");
      train && resume && std::string(resume) == "1" && !g.checkpoints) {
    const auto latest = fs::path(s.ckpt_dir) / "latest.ckpt";
    if (fs::exists(latest)) {
      s.g.checkpoints = (fs::path(s.ckpt_dir) / "latest").string();
      if (s.writer()) fmt::print("Restarted by featlearn launch: resuming from {}\n", latest.string());
    }
  }
  if (train && !g.checkpoints && !g.overwrite_output) refuse_overwrite(root["Global"], s.ckpt_dir);

  // Everything the run will need is built (and so checked) before anything is written or trained.
  s.model = build_arch(root["Arch"], g.image_shape);
  s.model->to(s.device);
  // Arch.use_sync_bn (PaddleClas's key): batch statistics over all processes; no change in one process.
  if (s.pg && root["Arch"].get<bool>("use_sync_bn", false)) {
    int64_t others = 0;
    const int64_t n = enable_sync_batch_norm(*s.model, &others);
    if (s.writer())
      fmt::print("Arch.use_sync_bn: {} BatchNorm layers synchronized across the {} processes{}\n", n, s.world,
                 others ? fmt::format(" ({} MetaBIN batch-instance norms keep per-process statistics)", others) : "");
  }
  // DistillationModel's pretrained_list: each model's own checkpoint, before Global.pretrained_model and
  // checkpoints, which replace the whole model (as PaddleClas loads them).
  if (auto* distill = dynamic_cast<DistillationModelImpl*>(s.model.get()))
    for (const auto& [name, prefix] : distill->pretrained()) {
      load_checkpoint(prefix, *distill->model(name), nullptr, nullptr);
      if (s.writer()) fmt::print("Loaded {} weights from {}\n", name, checkpoint_path(prefix));
    }

  // The metric set (validated up front, also in training mode, so a typo fails before hours of training).
  if (root["Metric"].defined() && root["Metric"]["Eval"].defined()) {
    s.metrics = MetricSet::create(root["Metric"]["Eval"]);
  }
  if (root["Loss"]["Eval"].defined()) {
    s.eval_loss = CombinedLoss(root["Loss"]["Eval"]);
    s.eval_loss->check_models(s.model->model_names());
    s.eval_loss->to(s.device);
  }
  if (train) {
    const bool metabin = is_metabin_run(root);
    s.train_loss = CombinedLoss(root["Loss"]["Train"]);
    s.train_loss->check_models(s.model->model_names());
    s.train_loss->to(s.device);
    LoaderContext ctx;
    ctx.seed = g.seed;
    ctx.rank = s.rank;
    ctx.world_size = s.world;
    s.train_loader = DataLoader::create(root["DataLoader"]["Train"], ctx);
    if (s.train_loader->batches_per_epoch() <= 0)
      root["DataLoader"]["Train"].fail("yields no batch per epoch (fewer images than batch_size with drop_last?)");
    // Labels count from 0: a head with fewer classes than the list's ids fails now, not at the first batch
    // that holds a larger label (docs/user-guide.md, "Your own data": class_num).
    const auto head = root["Arch"]["Head"];
    if (head.defined() && head.is_map() && head["class_num"].defined()) {
      const int64_t classes = s.train_loader->dataset().num_classes();
      const int64_t class_num = head["class_num"].as<int64_t>();
      if (classes > class_num)
        head["class_num"].fail(fmt::format("is {} but DataLoader.Train's labels go up to {} (labels count from 0, "
                                           "so class_num must be at least {}: the number of training ids)",
                                           class_num, classes - 1, classes));
    }

    // Optimizer scopes: the model ("RecModel" / "DistillationModel") and each loss with parameters (e.g.
    // CenterLoss), by its config name.
    ParameterScopes scopes;
    scopes.emplace_back(s.model->arch_name(), named_parameters_of(*s.model));
    for (const auto& child : s.train_loss->named_children()) {
      auto params = named_parameters_of(*child.value());
      if (!params.empty()) scopes.emplace_back(child.key(), params);
    }
    // The schedules count Global.iter_per_epoch steps per epoch when it is set (as PaddleClas).
    // MetaBIN's third optimizer (scope: the whole model) only provides a schedule.
    s.optimizer = OptimizerSet::create(root["Optimizer"], scopes,
                                       g.iter_per_epoch.value_or(s.train_loader->batches_per_epoch()), g.epochs,
                                       lr_multipliers_of(*s.model),
                                       metabin ? std::vector<size_t>{kMetaBinCyclicOptimizer} : std::vector<size_t>{});
    if (metabin) s.metabin = std::make_unique<MetaBinLoop>(root, *s.model, *s.optimizer, *s.train_loader, ctx, s.device);
  }
  if (!train || g.eval_during_train) {
    // Every Eval set's list file, so a mistake there fails now and not after the first epoch (the rules
    // between eval_mode, metrics and model were checked by check_config).
    const bool retrieval = g.eval_mode == "retrieval", adaface = g.eval_mode == "adaface";
    LoaderContext ctx;
    ctx.seed = g.seed;
    ctx.rank = s.rank;  // each rank embeds its shard; the rows are gathered (Trainer::evaluate)
    ctx.world_size = s.world;
    auto [query_node, gallery_node] = eval_sections(root["DataLoader"]["Eval"]);
    s.eval_query = DataLoader::create(query_node, ctx);
    if (adaface && !dynamic_cast<const FiveValidationDataset*>(&s.eval_query->dataset()))
      query_node["dataset"].fail("Global.eval_mode: adaface evaluates a FiveValidationDataset");
    // Identical Query and Gallery sections (the usual query = gallery protocol): extract once.
    if (retrieval && gallery_node && yaml_of(*gallery_node) != yaml_of(query_node))
      s.eval_gallery = DataLoader::create(*gallery_node, ctx);
  }
  if (s.writer()) {
    const bool two = s.eval_gallery != nullptr;
    print_data_summary({{"Train", s.train_loader.get()},
                        {two ? "Eval.Query" : "Eval (query = gallery)", s.eval_query.get()},
                        {"Eval.Gallery", s.eval_gallery.get()}},
                       s.world);
    if (train)
      fmt::print("Checkpoints: {}/{{latest,epoch_N{}}}.ckpt; resume with -o Global.checkpoints={}/latest\n", s.ckpt_dir,
                 g.eval_during_train ? ",best_model" : "", s.ckpt_dir);
  }

  // Each rank draws its own random stream from here on (seed + rank, as PaddleClas); the model was
  // initialized from the same seed on every rank and is broadcast from rank 0 below anyway.
  if (s.pg) torch::manual_seed(g.seed + static_cast<uint64_t>(s.rank));
  if (train && g.checkpoints) {
    auto loaded = load_checkpoint(*g.checkpoints, *s.model, s.train_loss.ptr().get(),
                                  [&](torch::serialize::InputArchive& ar) {
                                    s.optimizer->load(ar);
                                    if (s.metabin) s.metabin->load(ar);
                                  },
                                  s.rank);
    if (s.pg && !loaded.rng_restored)
      fmt::print("warning: rank {}: {} was written by a run of {} process(es): this rank's random stream starts "
                 "fresh (seed + rank)\n", s.rank, checkpoint_path(*g.checkpoints), loaded.meta.world_size);
    // The schedule position is counted in epochs: a run resumed with another world size (so another number
    // of steps per epoch) continues at the first step of the next epoch of its own schedule.
    const int64_t steps = g.iter_per_epoch.value_or(s.train_loader->batches_per_epoch());
    if (!s.metabin && s.optimizer->iteration() != loaded.meta.epoch * steps) {
      if (s.writer())
        fmt::print("Resuming with {} process(es) ({} steps per epoch) a run written by {} process(es) at iteration "
                   "{}: the schedule continues from epoch {} (iteration {})\n",
                   s.world, steps, loaded.meta.world_size, s.optimizer->iteration(), loaded.meta.epoch + 1,
                   loaded.meta.epoch * steps);
      s.optimizer->set_iteration(loaded.meta.epoch * steps);
    }
    s.start_epoch = loaded.meta.epoch + 1;
    s.best.value = loaded.meta.best_metric;
    s.best.epoch = loaded.meta.best_epoch;
    s.best.name = loaded.meta.metric_name;
    if (loaded.meta.eval_pending && g.eval_during_train) s.pending_eval_epoch = loaded.meta.epoch;
    if (s.writer())
      fmt::print("Resumed from {} (epoch {} done, iteration {})\n", checkpoint_path(*g.checkpoints),
               loaded.meta.epoch, s.optimizer->iteration());
  } else if (g.pretrained_model) {
    const auto loaded = load_checkpoint(*g.pretrained_model, *s.model, nullptr, nullptr);
    s.weights_label = loaded.path;
    if (s.writer()) fmt::print("Loaded weights from {}\n", loaded.path);
  } else if (mode == Mode::kEval) {
    s.weights_label = "random weights";
    if (s.writer()) fmt::print("Global.eval_random_weights: evaluating a randomly initialized model\n");
  }
  if (s.pg) {
    // All replicas start identical: rank 0's parameters and buffers (also after a resume).
    broadcast_module(*s.pg, *s.model);
    if (s.train_loss) broadcast_module(*s.pg, *s.train_loss);
    if (train) {
      std::vector<torch::Tensor> params = s.model->parameters();
      for (const auto& p : s.train_loss->parameters()) params.push_back(p);
      s.reducer = std::make_unique<GradientReducer>(*s.pg, params);
    }
  }

  if (train && !s.writer()) {
    s.log = std::make_unique<TrainLog>(g, "");  // rank 0 alone writes into output_dir
    s.log->set_quiet(true);
  } else if (train) {
    // Only training writes into output_dir; an evaluation leaves the training run's config.yaml alone.
    fs::create_directories(s.ckpt_dir);
    remove_stale_temp_files(g.output_dir);
    remove_stale_temp_files(s.ckpt_dir);
    s.config.save((fs::path(g.output_dir) / "config.yaml").string());
    s.log = std::make_unique<TrainLog>(g, (fs::path(g.output_dir) / "metrics.jsonl").string());
    if (g.tensorboard) s.log->enable_tensorboard((fs::path(g.output_dir) / "tensorboard").string());
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    s.log->record({{"phase", "run_start"},
                   {"time", std::chrono::duration<double>(now).count()},
                   {"config", s.config.file()},
                   {"start_epoch", s.start_epoch},
                   {"epochs", g.epochs},
                   {"resumed_from", g.checkpoints ? nlohmann::json(checkpoint_path(*g.checkpoints)) : nlohmann::json()},
                   {"pretrained_model", g.pretrained_model ? nlohmann::json(*g.pretrained_model) : nlohmann::json()},
                   {"device", g.device}});
  } else {
    s.log = std::make_unique<TrainLog>(g, "");
    s.log->set_quiet(!s.writer());
  }
}

Trainer::~Trainer() = default;

const GlobalConfig& Trainer::global() const { return s_->g; }
torch::nn::Module& Trainer::model() { return *s_->model; }

void Trainer::evaluate_and_keep_best(int64_t epoch) {
  auto& s = *s_;
  const auto values = evaluate(epoch);
  if (values.empty()) return;
  const double value = values.front().second;
  if (s.optimizer) s.optimizer->observe_metric(value);  // ReduceOnPlateau follows the first metric, as PaddleClas
  std::string note;
  const bool better = s.best.offer(values.front().first, value, epoch, &note);
  if (!note.empty() && s.writer()) fmt::print("warning: {}\n", note);
  if (better) {
    s.save("best_model", epoch);
    if (s.writer()) fmt::print("[Eval][Epoch {}] new best {}: {:.5f}, saved best_model\n", epoch, s.best.name, value);
  } else if (s.writer()) {
    fmt::print("[Eval][Epoch {}] best {}: {:.5f} (epoch {})\n", epoch, s.best.name, s.best.value, s.best.epoch);
  }
  s.last_eval = values;
  s.save("latest", epoch);  // now with the evaluation's best
}

void Trainer::end_of_epoch(int64_t epoch) {
  auto& s = *s_;
  const auto& g = s.g;
  // PaddleClas evaluates from epoch start_eval_epoch on (its test is epoch > start_eval_epoch - 1).
  const bool eval_now = g.eval_during_train && epoch >= g.start_eval_epoch && epoch % g.eval_interval == 0;
  // The epoch's training is on disk before the evaluation runs, so a failing or killed evaluation loses nothing
  // (the checkpoint says the evaluation is pending and a resume runs it first).
  if (epoch % g.save_interval == 0) s.save("epoch_" + std::to_string(epoch), epoch, eval_now);
  s.save("latest", epoch, eval_now);
  if (s.writer()) fmt::print("[Train][Epoch {}] saved {}\n", epoch, (fs::path(s.ckpt_dir) / "latest.ckpt").string());
  std::fflush(stdout);
  if (eval_now) evaluate_and_keep_best(epoch);
}

MetricValues Trainer::train(int64_t stop_after_epoch) {
  auto& s = *s_;
  const auto& g = s.g;
  // Global.iter_per_epoch (as PaddleClas): every epoch runs that many steps, reading the loader's epochs as one
  // stream of batches (epoch e starts at stream batch (e - 1) * iters), so a resumed run continues exactly.
  const int64_t loader_len = s.train_loader->batches_per_epoch();
  const int64_t iters = g.iter_per_epoch.value_or(loader_len);
  if (s.pending_eval_epoch > 0) {
    fmt::print("Running the evaluation of epoch {} that the interrupted run had not finished\n", s.pending_eval_epoch);
    evaluate_and_keep_best(s.pending_eval_epoch);
    s.pending_eval_epoch = 0;
  }
  if (s.start_epoch > g.epochs) {
    fmt::print("Nothing to do: the run has finished its {} epochs (raise Global.epochs to train longer)\n", g.epochs);
    return s.last_eval;
  }
  const int64_t last_epoch = stop_after_epoch > 0 ? std::min(stop_after_epoch, g.epochs) : g.epochs;
  s.log->plan(s.start_epoch, last_epoch, iters);
  for (int64_t epoch = s.start_epoch; epoch <= last_epoch; ++epoch) {
    s.model->train();
    s.train_loss->train();  // XBM memories advance only in training mode
    int64_t stream = (epoch - 1) * iters;  // this epoch's first batch in the loader's stream
    if (!s.metabin) s.train_loader->start_epoch(stream / loader_len, stream % loader_len);  // MetaBIN reads its own
    s.log->begin_epoch(epoch);
    int64_t it = 0;
    for (int64_t step = 0; step < iters; ++step, ++stream) {
      if (s.metabin) {
        const auto t0 = Clock::now();
        const auto r = s.metabin->step();
        ++it;
        if (!std::isfinite(r.total))
          throw Error(fmt::format("training diverged at epoch {} iteration {}: loss is {} (lower the learning rate?)",
                                  epoch, it, r.total));
        s.log->step(r.lr, r.terms, r.total, r.images, std::chrono::duration<double>(Clock::now() - t0).count());
        continue;
      }
      if (step > 0 && stream % loader_len == 0) s.train_loader->start_epoch(stream / loader_len);
      auto batch = s.train_loader->next();
      FL_ASSERT(batch, "the training loader ended before batches_per_epoch batches");
      const auto t0 = Clock::now();
      auto images = batch->images.to(s.device);
      auto labels = batch->labels.to(s.device);
      auto out = s.model->forward(images, labels);
      auto res = s.train_loss->forward(out, labels);
      const auto lrs = s.optimizer->current_lrs();
      s.optimizer->zero_grad();
      res.total.backward();
      if (s.pg) {
        // Gradients averaged over the processes before the step (docs/distributed.md): every replica takes
        // the same step. The all-reduces started during backward; this waits for the rest.
        s.allreduce_seconds += s.reducer->finish();
        ++s.allreduce_steps;
      }
      s.optimizer->step();
      ++it;
      const double compute = std::chrono::duration<double>(Clock::now() - t0).count();
      std::vector<std::pair<std::string, double>> terms;
      for (const auto& t : res.terms) terms.emplace_back(t.first, t.second.item<double>());
      const double total = res.total.item<double>();
      if (!std::isfinite(total))
        throw Error(fmt::format("training diverged at epoch {} iteration {}: loss is {} (lower the learning rate?)",
                                epoch, it, total));
      s.log->step(lrs.empty() ? 0.0 : lrs[0], terms, total, batch->images.size(0) * s.world, compute);
    }
    s.log->end_epoch();
    end_of_epoch(epoch);
  }
  s.log->done();
  if (s.pg && s.writer() && s.allreduce_steps > 0) {
    const double ms = 1000.0 * s.allreduce_seconds / static_cast<double>(s.allreduce_steps);
    fmt::print("[Train] gradient all-reduce: {:.2f} ms per step waited after backward ({} processes, {}; the rest "
               "overlaps backward)\n", ms, s.world, s.pg->backend());
    s.log->record({{"phase", "allreduce"}, {"ms_per_step", ms}, {"steps", s.allreduce_steps}, {"world_size", s.world},
                   {"backend", s.pg->backend()}});
  }
  return s.last_eval;
}

namespace {
// A multi-process evaluation (docs/distributed.md, "Evaluation"): each rank computed `rows` for its shard
// (dataset indices `idx`; a sampler that pads its shards repeats some); every rank gets all rows in dataset
// order, each index once. Without a group, the rows as they are.
// Rows [n, ...] of dataset indices `idx` put at their index in a [dataset_size, ...] tensor (zeros elsewhere);
// `seen` ([dataset_size] bool) marks the indices present. A repeated index holds the same row.
torch::Tensor place_by_index(const torch::Tensor& rows, const torch::Tensor& idx, int64_t dataset_size,
                             torch::Tensor* seen) {
  auto shape = rows.sizes().vec();
  shape[0] = dataset_size;
  auto ordered = torch::zeros(shape, rows.options());
  ordered.index_copy_(0, idx, rows);
  *seen = torch::zeros({dataset_size}, torch::kBool);
  seen->index_fill_(0, idx, true);
  return ordered;
}

std::vector<torch::Tensor> gather_in_dataset_order(ProcessGroup* pg, std::vector<torch::Tensor> rows,
                                                   const torch::Tensor& idx, int64_t dataset_size) {
  if (!pg) return rows;
  const auto all_idx = pg->all_gather_rows(idx.to(torch::kInt64).cpu());
  for (auto& r : rows) {
    torch::Tensor seen;
    const auto ordered = place_by_index(pg->all_gather_rows(r.contiguous()).cpu(), all_idx, dataset_size, &seen);
    r = ordered.index_select(0, seen.nonzero().flatten());
  }
  return rows;
}

// `model`: the model evaluation uses (a DistillationModel's infer_model_name model).
FeatureSet extract_features(RecModelImpl& model, DataLoader& loader, const GlobalConfig& g, torch::Device device,
                            ProcessGroup* pg, const std::string& what) {
  torch::NoGradGuard no_grad;
  model.eval();
  loader.start_epoch(0);
  std::vector<torch::Tensor> feats, labels, camids, indices;
  // A progress line on a terminal (rank 0): this rank's batches of the set.
  const bool progress = (!pg || pg->rank() == 0) && isatty(fileno(stdout));
  const int64_t batches = loader.batches_per_epoch();
  int64_t done = 0;
  while (auto b = loader.next()) {
    if (progress) {
      fmt::print("\r[Eval] extracting {}: batch {}/{}", what, ++done, batches);
      std::fflush(stdout);
    }
    auto out = model.forward(b->images.to(device));
    auto f = out.get(g.retrieval_feature_from).flatten(1).to(torch::kFloat32);
    feats.push_back(f.cpu());
    labels.push_back(b->labels);
    camids.push_back(b->camids);
    indices.push_back(b->indices);
  }
  if (progress) fmt::print("\r{:<60}\r", "");
  if (feats.empty() && !pg) throw Error("an evaluation set yields no images");
  FeatureSet fs;
  auto cat = [](const std::vector<torch::Tensor>& v, torch::Tensor empty) { return v.empty() ? empty : torch::cat(v); };
  const int64_t dim = feats.empty() ? 0 : feats[0].size(1);
  auto rows = gather_in_dataset_order(
      pg,
      {cat(feats, torch::zeros({0, dim})), cat(labels, torch::zeros({0}, torch::kInt64)),
       cat(camids, torch::zeros({0}, torch::kInt64)), cat(indices, torch::zeros({0}, torch::kInt64))},
      cat(indices, torch::zeros({0}, torch::kInt64)), static_cast<int64_t>(loader.dataset().size()));
  if (rows[0].size(0) == 0) throw Error("an evaluation set yields no images");
  fs.features = postprocess_features(rows[0], g.feature_normalize, g.feature_binarize);
  fs.labels = rows[1];
  fs.camids = rows[2];
  fs.indices = rows[3].to(torch::kInt64);
  if ((fs.camids < 0).all().item<bool>()) fs.camids = torch::Tensor();  // dataset without cameras
  return fs;
}
}  // namespace

namespace {
// Global.eval_mode: adaface (as PaddleClas's adaface_eval): each image's `features` and those of its horizontal
// flip are summed and L2-normalized (PaddleClas's norm-weighted fusion of the two unit embeddings, which is
// the same vector), then scored by face verification on the FiveValidationDataset's sets.
MetricValues evaluate_adaface(RecModelImpl& model, DataLoader& loader, torch::Device device, ProcessGroup* pg) {
  const auto* sets = dynamic_cast<const FiveValidationDataset*>(&loader.dataset());
  FL_ASSERT(sets, "adaface evaluation without a FiveValidationDataset");
  torch::NoGradGuard no_grad;
  model.eval();
  loader.start_epoch(0);
  const int64_t n = static_cast<int64_t>(sets->size());
  std::vector<torch::Tensor> xs, idx;
  while (auto b = loader.next()) {
    auto images = b->images.to(device);
    auto f = model.forward(images).get("features").flatten(1).to(torch::kFloat32);
    auto flipped = model.forward(images.flip({3})).get("features").flatten(1).to(torch::kFloat32);
    auto x = torch::nn::functional::normalize(
                 f + flipped, torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12))
                 .cpu();
    xs.push_back(x);
    idx.push_back(b->indices);
  }
  if (xs.empty()) throw Error("DataLoader.Eval yields no images");
  // [N, D] in dataset order (the sampler may shuffle; with several processes, every rank's shard).
  auto rows = torch::cat(xs);
  auto all_idx = torch::cat(idx);
  if (pg) {
    rows = pg->all_gather_rows(rows);
    all_idx = pg->all_gather_rows(all_idx);
  }
  torch::Tensor seen;
  const torch::Tensor fused = place_by_index(rows, all_idx, n, &seen);
  if (!seen.all().item<bool>())
    throw Error("DataLoader.Eval's sampler leaves out images of the FiveValidationDataset (drop_last?): every pair "
                "must be evaluated");
  std::vector<int64_t> issame(static_cast<size_t>(n));
  std::vector<int> set_of(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    issame[static_cast<size_t>(i)] = sets->label(static_cast<size_t>(i));
    set_of[static_cast<size_t>(i)] = sets->set_of(static_cast<size_t>(i));
  }
  const auto& names = FiveValidationDataset::set_names();
  return evaluate_face_verification(fused, issame, set_of, std::vector<std::string>(names.begin(), names.end()));
}
}  // namespace

RetrievalSets Trainer::retrieval_sets() {
  auto& s = *s_;
  if (s.g.eval_mode != "retrieval")
    throw Error(fmt::format("Global.eval_mode is {}: ranked retrieval needs eval_mode retrieval", s.g.eval_mode));
  if (!s.eval_query) throw Error("the config has no DataLoader.Eval section to evaluate");
  RetrievalSets sets;
  auto paths = [](const DataLoader& loader, const FeatureSet& f) {
    std::vector<std::string> p;
    const auto idx = f.indices.contiguous();
    const int64_t* i = idx.data_ptr<int64_t>();
    for (int64_t r = 0; r < idx.size(0); ++r) p.push_back(loader.dataset().path(static_cast<size_t>(i[r])));
    return p;
  };
  sets.query = extract_features(s.model->infer_model(), *s.eval_query, s.g, s.device, s.pg,
                                s.eval_gallery ? "query" : "query = gallery");
  sets.query_paths = paths(*s.eval_query, sets.query);
  sets.gallery_is_query = !s.eval_gallery;
  if (s.eval_gallery) {
    sets.gallery = extract_features(s.model->infer_model(), *s.eval_gallery, s.g, s.device, s.pg, "gallery");
    sets.gallery_paths = paths(*s.eval_gallery, sets.gallery);
  } else {
    sets.gallery = sets.query;
    sets.gallery_paths = sets.query_paths;
  }
  return sets;
}

const MetricSet& Trainer::metrics() const {
  if (!s_->metrics) throw Error("the config has no Metric.Eval section");
  return *s_->metrics;
}

RetrievalOptions Trainer::retrieval_options() const {
  RetrievalOptions opt;
  opt.block_size = s_->g.sim_block_size;
  opt.re_ranking = s_->g.re_ranking;
  return opt;
}

MetricValues Trainer::evaluate(int64_t epoch) {
  auto& s = *s_;
  const auto& g = s.g;
  const auto start = Clock::now();
  MetricValues values;
  if (g.eval_mode == "adaface") {
    values = evaluate_adaface(s.model->infer_model(), *s.eval_query, s.device, s.pg);
  } else if (g.eval_mode == "retrieval") {
    const RetrievalSets sets = retrieval_sets();
    const FeatureSet& q = sets.query;
    const FeatureSet& gal = sets.gallery;
    values = evaluate_retrieval(*s.metrics, q.features.cpu(), q.labels, q.camids, gal.features.cpu(), gal.labels,
                                gal.camids, retrieval_options());
  } else {
    torch::NoGradGuard no_grad;
    s.model->eval();
    auto& loader = *s.eval_query;
    loader.start_epoch(0);
    std::vector<torch::Tensor> logits, labels, indices;
    // Loss.Eval is reported in classification mode (as PaddleClas does); retrieval mode has no eval loss.
    auto& eval_loss = s.eval_loss;
    if (eval_loss) eval_loss->eval();
    std::vector<std::pair<std::string, double>> loss_sums;
    int64_t batches = 0;
    while (auto b = loader.next()) {
      auto labels_dev = b->labels.to(s.device);
      auto out = s.model->forward(b->images.to(s.device));
      logits.push_back(out.get("logits").cpu());
      labels.push_back(b->labels);
      indices.push_back(b->indices);
      if (eval_loss) {
        auto r = eval_loss->forward(out, labels_dev);
        if (loss_sums.empty())
          for (const auto& t : r.terms) loss_sums.emplace_back(t.first, 0.0);
        for (size_t k = 0; k < r.terms.size(); ++k) loss_sums[k].second += r.terms[k].second.item<double>();
        ++batches;
      }
    }
    if (logits.empty()) throw Error("DataLoader.Eval yields no images");
    const auto rows = gather_in_dataset_order(s.pg, {torch::cat(logits), torch::cat(labels)}, torch::cat(indices),
                                              static_cast<int64_t>(loader.dataset().size()));
    values = evaluate_classification(*s.metrics, rows[0], rows[1]);
    // Loss.Eval: the mean over batches of this rank, averaged over the ranks.
    std::vector<torch::Tensor> means;
    for (const auto& kv : loss_sums) means.push_back(torch::tensor({kv.second / std::max<int64_t>(batches, 1)}, torch::kFloat64));
    if (s.pg && !means.empty()) {
      std::vector<torch::Tensor> one{torch::cat(means)};
      s.pg->all_reduce_sum(one);
      for (size_t k = 0; k < means.size(); ++k) means[k] = one[0][static_cast<int64_t>(k)] / s.world;
    }
    for (size_t k = 0; k < loss_sums.size(); ++k) values.emplace_back(loss_sums[k].first, means[k].item<double>());
  }
  s.log->eval(epoch, values, std::chrono::duration<double>(Clock::now() - start).count(),
              s.mode == Mode::kEval ? s.weights_label : "");
  return values;
}

void Trainer::report(const MetricValues& metrics) const {
  const auto& g = s_->g;
  if (!s_->writer()) return;  // rank 0 reports for the run
  fmt::print("\n| metric | value |\n|---|---|\n");
  nlohmann::json j = nlohmann::json::object();
  for (const auto& kv : metrics) {
    const bool fraction = kv.first.rfind("recall", 0) == 0 || kv.first == "mAP" || kv.first == "mINP" ||
                          kv.first.rfind("precision", 0) == 0 || kv.first.rfind("top", 0) == 0;
    fmt::print(fraction ? "| {} | {:.2f} % |\n" : "| {} | {:.5f} |\n", kv.first, fraction ? kv.second * 100 : kv.second);
    j[kv.first] = kv.second;
  }
  fs::create_directories(g.output_dir);
  const auto path = (fs::path(g.output_dir) / "eval_metrics.json").string();
  write_file_atomic(path, j.dump(2) + "\n");
  fmt::print("metrics written to {}\n", path);
}

}  // namespace featlearn
