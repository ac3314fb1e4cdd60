// Target `config`: a YAML config plus `-o` overrides, carried through component construction as `featlearn
// train` / `featlearn index` do it (docs/testing.md).
//
// Input: the YAML text, optionally followed by a line `# -o` and one override (`Key.sub=value`) per line.
// A training config builds Global, Metric, Loss.Train/Eval, each DataLoader set's transform pipeline (run on a
// small image) and sampler (over a small in-memory dataset: the list files are target `lists`), the RecModel
// and the optimizers with their LR schedules. A config with IndexProcess or RecPreProcess is read as an
// inference config (index / serve) and its preprocessing is built and run. Each section is independent, so a
// user error in one does not hide the others.
#include "fuzz_common.h"

#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>
#include <featlearn/data/sampler.h>
#include <featlearn/data/transforms.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/index/gallery_index.h>
#include <featlearn/index/index_config.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <memory>

namespace featlearn::fuzz {
namespace config_target {

std::unique_ptr<ListDataset> g_dataset;  // 256 images of 64 ids on 3 cameras (enough ids for the configs' P x K)
cv::Mat g_image;                         // 37 x 29, 8-bit RGB

// Caps on what one input may ask the samplers for (the work budget does not see std::vector).
constexpr int64_t kMaxSampledIndices = 1 << 16;

void run_pipeline(const ConfigNode& ops, uint64_t seed) {
  const auto pipeline = TransformPipeline::create(ops);
  cv::Mat img = g_image.clone();
  Rng rng(seed);
  pipeline.apply(img, rng);
  std::vector<float> chw(img.total() * static_cast<size_t>(img.channels()));
  hwc_to_chw_float(img, chw.data());
}

int64_t run_sampler(const ConfigNode& sampler, uint64_t seed) {
  const auto s = create_sampler(sampler, *g_dataset, ShardInfo{0, 1});
  const int64_t batches = s->batches_per_epoch();
  if (batches > 0 && s->batch_size() > 0 && batches <= kMaxSampledIndices / s->batch_size()) {
    for (const auto& b : s->epoch_batches(seed, 0))
      for (const auto i : b)
        if (i < 0 || i >= static_cast<int64_t>(g_dataset->size()))
          finding("sampler", "an out-of-range index", std::to_string(i));
  }
  return batches;
}

// A DataLoader set (`dataset` with transform_ops, `sampler`): returns batches per epoch (1 when unknown).
int64_t run_loader_set(const char* what, const ConfigNode& set, uint64_t seed) {
  int64_t batches = 1;
  if (!set.is_map()) return batches;
  expect_user_errors(what, [&] { run_pipeline(set["dataset"]["transform_ops"], seed); });
  expect_user_errors(what, [&] {
    if (set["sampler"].defined()) batches = std::max<int64_t>(1, run_sampler(set["sampler"], seed));
  });
  return batches;
}

void run_training_config(const ConfigNode& root) {
  GlobalConfig g;
  expect_user_errors("check_root_sections", [&] { check_root_sections(root); });
  expect_user_errors("Global", [&] { g = GlobalConfig::parse(root["Global"]); });
  expect_user_errors("Metric", [&] {
    if (root["Metric"].defined() && root["Metric"]["Eval"].defined()) (void)MetricSet::create(root["Metric"]["Eval"]);
    if (root["Metric"].defined() && root["Metric"]["Train"].defined()) (void)MetricSet::create(root["Metric"]["Train"]);
  });
  CombinedLoss train_loss{nullptr};
  expect_user_errors("Loss.Train", [&] {
    if (root["Loss"]["Train"].defined()) train_loss = CombinedLoss(root["Loss"]["Train"]);
  });
  expect_user_errors("Loss.Eval", [&] {
    if (root["Loss"]["Eval"].defined()) (void)CombinedLoss(root["Loss"]["Eval"]);
  });
  int64_t iters_per_epoch = 1;
  const ConfigNode dl = root["DataLoader"];
  if (dl.is_map()) {
    iters_per_epoch = run_loader_set("DataLoader.Train", dl["Train"], g.seed);
    expect_user_errors("DataLoader.Eval", [&] {
      if (!dl["Eval"].is_map()) return;
      auto [query, gallery] = eval_sections(dl["Eval"]);
      run_loader_set("DataLoader.Eval (query)", query, g.seed);
      if (gallery) run_loader_set("DataLoader.Eval (gallery)", *gallery, g.seed);
    });
  }
  RecModel model{nullptr};
  expect_user_errors("Arch", [&] {
    // BackboneStopLayer.output_dim is checked with a forward pass at Global.image_shape: capped at 64 x 64 here
    // (a 224 x 224 ResNet50 pass takes a second), which can only turn a correct output_dim into a user error.
    std::vector<int64_t> shape = g.image_shape;
    if (shape.size() == 3)
      for (size_t i = 1; i < 3; ++i) shape[i] = std::min<int64_t>(shape[i], 64);
    if (root["Arch"].defined()) model = RecModel(root["Arch"], shape);
  });
  if (!model || !root["Optimizer"].defined()) return;
  expect_user_errors("Optimizer", [&] {
    ParameterScopes scopes;
    scopes.emplace_back("RecModel", named_parameters_of(*model));
    if (train_loss)
      for (const auto& child : train_loss->named_children()) {
        auto params = named_parameters_of(*child.value());
        if (!params.empty()) scopes.emplace_back(child.key(), params);
      }
    const auto opt = OptimizerSet::create(root["Optimizer"], scopes, iters_per_epoch, g.epochs);
    (void)opt->describe();
    (void)opt->current_lrs();
    const int64_t last = iters_per_epoch * std::max<int64_t>(1, std::min<int64_t>(g.epochs, int64_t(1) << 20));
    for (size_t i = 0; i < opt->size(); ++i)
      for (const int64_t it : {int64_t(0), int64_t(1), last / 2, last - 1, last}) (void)opt->schedule(i).lr_at(it);
  });
}

void run_inference_config(const ConfigNode& root) {
  InferenceConfig c;
  if (!expect_user_errors("InferenceConfig", [&] { c = InferenceConfig::parse(root); })) return;
  expect_user_errors("RecPreProcess.transform_ops", [&] { run_pipeline(c.transform_ops, 0); });
  // What `featlearn index build` does with IndexProcess before it embeds any image: build the FAISS index.
  // Capped: the embedding size a config may give is not bounded, and FAISS allocations are not counted.
  const int64_t dim = c.index.embedding_size > 0 ? c.index.embedding_size : 8;
  if (dim > 4096) return;
  expect_user_errors("IndexProcess (index build)", [&] {
    IndexSpec spec;
    spec.index_method = c.index.index_method;
    spec.metric = c.index.metric;
    spec.dim = dim;
    spec.nlist = c.index.nlist;
    spec.ef_construction = c.index.ef_construction;
    const int64_t n = 16;
    std::vector<float> vectors(static_cast<size_t>(n * dim));
    for (size_t i = 0; i < vectors.size(); ++i) vectors[i] = static_cast<float>((i * 7919) % 13) - 6.0f;
    std::vector<NewItem> items(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) items[static_cast<size_t>(i)] = {"img" + std::to_string(i) + ".jpg", std::to_string(i % 4), ""};
    reset_scratch();
    auto index = GalleryIndex::create(scratch_dir() + "/index", spec, items, vectors.data());
    (void)index->search(vectors.data(), 2, c.index.search);
  });
}

}  // namespace config_target

void config_init() {
  using namespace config_target;
  std::vector<ListDataset::Item> items;
  for (int i = 0; i < 256; ++i) {
    ListDataset::Item it;
    it.path = "img" + std::to_string(i) + ".jpg";
    it.label = i % 64;
    it.camid = i % 3;
    items.push_back(it);
  }
  g_dataset = std::make_unique<ListDataset>(std::move(items), true);
  g_image = cv::Mat(29, 37, CV_8UC3);
  for (int y = 0; y < g_image.rows; ++y)
    for (int x = 0; x < g_image.cols; ++x) g_image.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 7, y * 9, (x + y) * 5);
}

void config_run(const uint8_t* data, size_t size) {
  using namespace config_target;
  const auto parts = split_sections(data, size, "\n# -o\n", 2);
  Config cfg;
  const bool ok = expect_user_errors("Config", [&] {
    cfg = Config::from_string(parts[0], "fuzz.yaml");
    if (parts.size() > 1) {
      size_t start = 0;
      const std::string& o = parts[1];
      while (start < o.size()) {
        size_t end = o.find('\n', start);
        if (end == std::string::npos) end = o.size();
        const std::string line = o.substr(start, end - start);
        if (!line.empty()) cfg.apply_override(line);
        start = end + 1;
      }
    }
  });
  if (!ok) return;
  expect_user_errors("Config dump / copy", [&] {
    (void)cfg.dump();
    Config copy(cfg);
    (void)copy.dump();
  });
  const ConfigNode root = cfg.root();
  if (root.has("IndexProcess") || root.has("RecPreProcess"))
    run_inference_config(root);
  else
    run_training_config(root);
}

}  // namespace featlearn::fuzz
