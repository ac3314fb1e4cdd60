#include <featlearn/common/atomic_file.h>
#include <featlearn/engine/trainer.h>

#include <featlearn/data/loader.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/loss/loss.h>
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

namespace featlearn {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

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
  if (binarize == "round") features = torch::round(features) * 2.0 - 1.0;
  if (binarize == "sign") features = torch::sign(features);
  return features;
}

struct Trainer::State {
  Config config;
  GlobalConfig g;
  Mode mode = Mode::kTrain;
  torch::Device device{torch::kCPU};
  RecModel model{nullptr};
  CombinedLoss train_loss{nullptr};
  CombinedLoss eval_loss{nullptr};  // Loss.Eval: reported in classification eval, as PaddleClas does
  std::unique_ptr<OptimizerSet> optimizer;
  std::unique_ptr<DataLoader> train_loader;
  std::optional<MetricSet> metrics;
  int64_t start_epoch = 1;  // 1-based epoch to run next
  BestMetric best;
  std::string ckpt_dir;
  std::ofstream metrics_log;
  bool tty = false;

  explicit State(Config c) : config(std::move(c)) {}

  void log_json(nlohmann::json j) {
    if (!metrics_log.is_open()) return;
    metrics_log << j.dump() << "\n";
    metrics_log.flush();
  }
  void save(const std::string& name, int64_t epoch) {
    CheckpointMeta meta;
    meta.epoch = epoch;
    meta.iteration = optimizer ? optimizer->iteration() : 0;
    meta.best_metric = best.value;
    meta.best_epoch = best.epoch;
    meta.metric_name = best.name;
    meta.config_yaml = config.dump();
    save_checkpoint(
        (fs::path(ckpt_dir) / name).string(), *model, train_loss ? train_loss.ptr().get() : nullptr,
        [&](torch::serialize::OutputArchive& ar) {
          if (optimizer) optimizer->save(ar);
        },
        meta);
  }
};

Trainer::Trainer(Config config, Mode mode) : s_(std::make_unique<State>(std::move(config))) {
  auto& s = *s_;
  s.mode = mode;
  const auto root = s.config.root();
  check_root_sections(root);
  s.g = GlobalConfig::parse(root["Global"]);
  const auto& g = s.g;
  if (g.device == "gpu") {
    if (!torch::cuda::is_available())
      root["Global"]["device"].fail("gpu requested but LibTorch sees no CUDA device (use -o Global.device=cpu)");
    s.device = torch::Device(torch::kCUDA);
  }
  s.tty = isatty(STDOUT_FILENO);
  torch::manual_seed(g.seed);

  fs::create_directories(g.output_dir);
  s.ckpt_dir = (fs::path(g.output_dir) / root["Arch"].get<std::string>("name", "RecModel")).string();
  fs::create_directories(s.ckpt_dir);
  s.config.save((fs::path(g.output_dir) / "config.yaml").string());

  if (!root["Arch"].defined()) root.fail("missing the Arch section");
  s.model = RecModel(root["Arch"]);
  s.model->to(s.device);

  // The metric set (validated up front, also in training mode, so a typo fails before hours of training).
  if (root["Metric"].defined() && root["Metric"]["Eval"].defined()) {
    root["Metric"].check_keys({"Train", "Eval"});
    s.metrics = MetricSet::create(root["Metric"]["Eval"]);
  }

  if (root["Loss"]["Eval"].defined()) {
    s.eval_loss = CombinedLoss(root["Loss"]["Eval"]);
    s.eval_loss->to(s.device);
  }
  if (mode == Mode::kTrain) {
    if (!root["Loss"]["Train"].defined()) root.fail("missing Loss.Train (the training losses)");
    root["Loss"].check_keys({"Train", "Eval"});
    s.train_loss = CombinedLoss(root["Loss"]["Train"]);
    s.train_loss->to(s.device);
    if (!root["DataLoader"]["Train"].defined()) root.fail("missing DataLoader.Train");
    root["DataLoader"].check_keys({"Train", "Eval"});
    LoaderContext ctx;
    ctx.seed = g.seed;
    s.train_loader = DataLoader::create(root["DataLoader"]["Train"], ctx);
    if (s.train_loader->batches_per_epoch() <= 0)
      root["DataLoader"]["Train"].fail("yields no batch per epoch (fewer images than batch_size with drop_last?)");

    // Optimizer scopes: "RecModel" and each loss with parameters (e.g. CenterLoss), by its config name.
    ParameterScopes scopes;
    scopes.emplace_back("RecModel", named_parameters_of(*s.model));
    for (const auto& child : s.train_loss->named_children()) {
      auto params = named_parameters_of(*child.value());
      if (!params.empty()) scopes.emplace_back(child.key(), params);
    }
    if (!root["Optimizer"].defined()) root.fail("missing the Optimizer section");
    s.optimizer = OptimizerSet::create(root["Optimizer"], scopes, s.train_loader->batches_per_epoch(), g.epochs);
    if (g.eval_during_train && !s.metrics) root.fail("eval_during_train needs Metric.Eval");
    s.metrics_log.open((fs::path(g.output_dir) / "metrics.jsonl").string(), std::ios::app);
  }

  if (mode == Mode::kTrain && g.checkpoints) {
    auto loaded = load_checkpoint(*g.checkpoints, *s.model, s.train_loss.ptr().get(),
                                  [&](torch::serialize::InputArchive& ar) { s.optimizer->load(ar); });
    s.start_epoch = loaded.meta.epoch + 1;
    s.best.value = loaded.meta.best_metric;
    s.best.epoch = loaded.meta.best_epoch;
    s.best.name = loaded.meta.metric_name;
    fmt::print("Resumed from {} (epoch {} done, iteration {})\n", checkpoint_path(*g.checkpoints),
               loaded.meta.epoch, s.optimizer->iteration());
  } else if (g.pretrained_model) {
    load_checkpoint(*g.pretrained_model, *s.model, nullptr, nullptr);
    fmt::print("Loaded weights from {}\n", checkpoint_path(*g.pretrained_model));
  } else if (mode == Mode::kEval) {
    fmt::print("warning: Global.pretrained_model is not set: evaluating a randomly initialized model\n");
  }
}

Trainer::~Trainer() = default;

const GlobalConfig& Trainer::global() const { return s_->g; }
torch::nn::Module& Trainer::model() { return *s_->model; }

MetricValues Trainer::train(int64_t stop_after_epoch) {
  auto& s = *s_;
  const auto& g = s.g;
  const int64_t iters = s.train_loader->batches_per_epoch();
  const int64_t total_iters = iters * g.epochs;
  MetricValues last;
  const auto run_start = Clock::now();
  int64_t images_done = 0;
  double compute_seconds = 0;

  const int64_t last_epoch = stop_after_epoch > 0 ? std::min(stop_after_epoch, g.epochs) : g.epochs;
  for (int64_t epoch = s.start_epoch; epoch <= last_epoch; ++epoch) {
    s.model->train();
    s.train_loss->train();  // XBM memories advance only in training mode
    s.train_loader->start_epoch(epoch - 1);
    auto epoch_start = Clock::now();
    auto tick = Clock::now();
    int64_t epoch_images = 0;
    double window_seconds = 0;
    int64_t window_images = 0;
    std::vector<std::pair<std::string, double>> sums;
    double total_sum = 0;
    int64_t it = 0;
    while (auto batch = s.train_loader->next()) {
      const auto t0 = Clock::now();
      auto images = batch->images.to(s.device);
      auto labels = batch->labels.to(s.device);
      auto out = s.model->forward(images, labels);
      auto res = s.train_loss->forward(out, labels);
      const auto lrs = s.optimizer->current_lrs();
      s.optimizer->zero_grad();
      res.total.backward();
      s.optimizer->step();
      ++it;
      const auto t1 = Clock::now();
      compute_seconds += std::chrono::duration<double>(t1 - t0).count();
      const int64_t bs = batch->images.size(0);
      epoch_images += bs;
      images_done += bs;
      window_images += bs;
      window_seconds += std::chrono::duration<double>(t1 - tick).count();
      tick = t1;

      std::vector<double> term_values;
      for (const auto& t : res.terms) term_values.push_back(t.second.item<double>());
      if (sums.empty())
        for (const auto& t : res.terms) sums.emplace_back(t.first, 0.0);
      for (size_t k = 0; k < term_values.size(); ++k) sums[k].second += term_values[k];
      const double total = res.total.item<double>();
      if (!std::isfinite(total))
        throw Error(fmt::format("training diverged at epoch {} iteration {}: loss is {} (lower the learning rate?)",
                                epoch, it, total));
      total_sum += total;

      const bool print = it % g.print_batch_step == 0 || it == iters;
      if (print || s.tty) {
        const double ips = window_seconds > 0 ? window_images / window_seconds : 0.0;
        const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
        const int64_t done = (epoch - s.start_epoch) * iters + it;
        const int64_t left = (last_epoch - s.start_epoch + 1) * iters - done;
        const double eta = done > 0 ? elapsed / done * left : -1;
        std::string line = fmt::format("[Train][Epoch {}/{}][Iter {}/{}] lr: {:.5f}", epoch, g.epochs, it, iters,
                                       lrs.empty() ? 0.0 : lrs[0]);
        for (size_t k = 0; k < term_values.size(); ++k)
          line += fmt::format(", {}: {:.5f}", sums[k].first, term_values[k]);
        line += fmt::format(", loss: {:.5f}, ips: {:.1f} images/s, eta: {}", total, ips, format_duration(eta));
        if (s.tty) {
          fmt::print("\r{:<140}", line);
          if (print) fmt::print("\n");
          std::fflush(stdout);
        } else {
          fmt::print("{}\n", line);
          std::fflush(stdout);
        }
        if (print) {
          nlohmann::json j = {{"phase", "train"}, {"epoch", epoch}, {"iter", it}, {"global_step", (epoch - 1) * iters + it},
                              {"lr", lrs.empty() ? 0.0 : lrs[0]}, {"loss", total}, {"ips", ips}};
          for (size_t k = 0; k < term_values.size(); ++k) j[sums[k].first] = term_values[k];
          s.log_json(j);
          window_images = 0;
          window_seconds = 0;
        }
      }
    }
    const double epoch_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    std::string summary = fmt::format("[Train][Epoch {}/{}][Avg]", epoch, g.epochs);
    for (const auto& kv : sums) summary += fmt::format(" {}: {:.5f},", kv.first, kv.second / std::max<int64_t>(it, 1));
    summary += fmt::format(" loss: {:.5f}, {:.1f} images/s, epoch time {}", total_sum / std::max<int64_t>(it, 1),
                           epoch_images / std::max(epoch_seconds, 1e-9), format_duration(epoch_seconds));
    fmt::print("{}\n", summary);
    nlohmann::json ej = {{"phase", "train_epoch"}, {"epoch", epoch}, {"loss", total_sum / std::max<int64_t>(it, 1)},
                         {"ips", epoch_images / std::max(epoch_seconds, 1e-9)}, {"seconds", epoch_seconds}};
    for (const auto& kv : sums) ej[kv.first] = kv.second / std::max<int64_t>(it, 1);
    s.log_json(ej);

    if (g.eval_during_train && epoch > g.start_eval_epoch && epoch % g.eval_interval == 0) {
      last = evaluate(epoch);
      if (!last.empty()) {
        const double value = last.front().second;
        std::string note;
        const bool better = s.best.offer(last.front().first, value, epoch, &note);
        if (!note.empty()) fmt::print("warning: {}\n", note);
        if (better) {
          s.save("best_model", epoch);
          fmt::print("[Eval][Epoch {}] new best {}: {:.5f}, saved best_model\n", epoch, s.best.name, value);
        } else {
          fmt::print("[Eval][Epoch {}] best {}: {:.5f} (epoch {})\n", epoch, s.best.name, s.best.value, s.best.epoch);
        }
      }
    }
    if (epoch % g.save_interval == 0) s.save("epoch_" + std::to_string(epoch), epoch);
    s.save("latest", epoch);
  }
  const double wall = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (images_done > 0)
    fmt::print("[Train] done: {} images in {}: {:.1f} images/s end to end ({:.1f} images/s in model compute)\n",
               images_done, format_duration(wall), images_done / std::max(wall, 1e-9),
               images_done / std::max(compute_seconds, 1e-9));
  return last;
}

namespace {
FeatureSet extract_features(RecModel& model, DataLoader& loader, const GlobalConfig& g, torch::Device device) {
  torch::NoGradGuard no_grad;
  model->eval();
  loader.start_epoch(0);
  std::vector<torch::Tensor> feats, labels, camids;
  while (auto b = loader.next()) {
    auto out = model->forward(b->images.to(device));
    auto f = out.get(g.retrieval_feature_from).flatten(1).to(torch::kFloat32);
    feats.push_back(f);
    labels.push_back(b->labels);
    camids.push_back(b->camids);
  }
  if (feats.empty()) throw Error("an evaluation set yields no images");
  FeatureSet fs;
  fs.features = postprocess_features(torch::cat(feats), g.feature_normalize, g.feature_binarize);
  fs.labels = torch::cat(labels);
  fs.camids = torch::cat(camids);
  if ((fs.camids < 0).all().item<bool>()) fs.camids = torch::Tensor();  // dataset without cameras
  return fs;
}
}  // namespace

MetricValues Trainer::evaluate(int64_t epoch) {
  auto& s = *s_;
  const auto& g = s.g;
  const auto root = s.config.root();
  if (!s.metrics) root.fail("missing Metric.Eval (which metrics to compute)");
  if (!root["DataLoader"]["Eval"].defined()) root.fail("missing DataLoader.Eval");
  const auto start = Clock::now();
  LoaderContext ctx;
  ctx.seed = g.seed;
  auto [query_node, gallery_node] = eval_sections(root["DataLoader"]["Eval"]);
  MetricValues values;
  if (g.eval_mode == "retrieval") {
    auto qloader = DataLoader::create(query_node, ctx);
    FeatureSet q = extract_features(s.model, *qloader, g, s.device);
    FeatureSet gal;
    // Identical Query and Gallery sections (the usual query = gallery protocol): extract once.
    if (gallery_node && yaml_of(*gallery_node) != yaml_of(query_node)) {
      auto gloader = DataLoader::create(*gallery_node, ctx);
      gal = extract_features(s.model, *gloader, g, s.device);
    } else {
      gal = q;
    }
    RetrievalOptions opt;
    opt.block_size = g.sim_block_size;
    opt.re_ranking = g.re_ranking;
    values = evaluate_retrieval(*s.metrics, q.features.cpu(), q.labels, q.camids, gal.features.cpu(), gal.labels,
                                gal.camids, opt);
  } else {
    torch::NoGradGuard no_grad;
    s.model->eval();
    auto loader = DataLoader::create(query_node, ctx);
    loader->start_epoch(0);
    std::vector<torch::Tensor> logits, labels;
    // Loss.Eval is reported in classification mode (as PaddleClas does); retrieval mode has no eval loss.
    auto& eval_loss = s.eval_loss;
    if (eval_loss) eval_loss->eval();
    std::vector<std::pair<std::string, double>> loss_sums;
    int64_t batches = 0;
    while (auto b = loader->next()) {
      auto labels_dev = b->labels.to(s.device);
      auto out = s.model->forward(b->images.to(s.device));
      logits.push_back(out.get("logits").cpu());
      labels.push_back(b->labels);
      if (eval_loss) {
        auto r = eval_loss->forward(out, labels_dev);
        if (loss_sums.empty())
          for (const auto& t : r.terms) loss_sums.emplace_back(t.first, 0.0);
        for (size_t k = 0; k < r.terms.size(); ++k) loss_sums[k].second += r.terms[k].second.item<double>();
        ++batches;
      }
    }
    if (logits.empty()) query_node.fail("yields no images");
    values = evaluate_classification(*s.metrics, torch::cat(logits), torch::cat(labels));
    for (const auto& kv : loss_sums) values.emplace_back(kv.first, kv.second / std::max<int64_t>(batches, 1));
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::string line = fmt::format("[Eval][Epoch {}]", epoch);
  for (const auto& kv : values) line += fmt::format(" {}: {:.5f},", kv.first, kv.second);
  fmt::print("{} time {:.1f}s\n", line, secs);
  nlohmann::json j = {{"phase", "eval"}, {"epoch", epoch}, {"seconds", secs}};
  for (const auto& kv : values) j[kv.first] = kv.second;
  s.log_json(j);
  return values;
}

void Trainer::report(const MetricValues& metrics) const {
  const auto& g = s_->g;
  fmt::print("\n| metric | value |\n|---|---|\n");
  nlohmann::json j = nlohmann::json::object();
  for (const auto& kv : metrics) {
    const bool fraction = kv.first.rfind("recall", 0) == 0 || kv.first == "mAP" || kv.first == "mINP" ||
                          kv.first.rfind("precision", 0) == 0 || kv.first.rfind("top", 0) == 0;
    fmt::print(fraction ? "| {} | {:.2f} % |\n" : "| {} | {:.5f} |\n", kv.first, fraction ? kv.second * 100 : kv.second);
    j[kv.first] = kv.second;
  }
  const auto path = (fs::path(g.output_dir) / "eval_metrics.json").string();
  write_file_atomic(path, j.dump(2) + "\n");
  fmt::print("metrics written to {}\n", path);
}

}  // namespace featlearn
