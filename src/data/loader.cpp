#include <featlearn/data/loader.h>
#include <featlearn/data/sampler.h>
#include <featlearn/data/transforms.h>

#include <fmt/format.h>
#include <opencv2/core/utility.hpp>
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

namespace featlearn {

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  std::shared_ptr<const TransformPipeline> pipeline;
  std::shared_ptr<const BatchSampler> sampler;
  LoaderOptions opt;
  LoaderContext ctx;

  // Epoch state
  std::vector<BatchIndices> batches;
  int64_t epoch = -1;
  size_t cursor = 0;  // next batch handed out

  // Worker state (guarded by mu)
  struct Result {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };
  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  std::map<size_t, Result> results;
  size_t next_task = 0;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::atomic<int64_t> bad{0};

  int prefetch() const { return opt.prefetch_batches > 0 ? opt.prefetch_batches : 2 * std::max(1, opt.num_workers); }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv_work.notify_all();
    for (auto& t : threads) t.join();
    threads.clear();
    results.clear();
    stop = false;
  }

  // Builds batch k of the current epoch. Safe to call from any thread (reads only immutable state).
  Batch build(size_t k) {
    const auto& idx = batches[k];
    const int64_t B = static_cast<int64_t>(idx.size());
    Batch b;
    b.labels = torch::empty({B}, torch::kLong);
    b.camids = torch::empty({B}, torch::kLong);
    b.indices = torch::empty({B}, torch::kLong);
    auto* lp = b.labels.data_ptr<int64_t>();
    auto* cp = b.camids.data_ptr<int64_t>();
    auto* ip = b.indices.data_ptr<int64_t>();
    std::vector<char> ok(static_cast<size_t>(B), 0);
    std::vector<std::string> bad_msgs;
    float* dst = nullptr;
    int C = 0, H = 0, W = 0;
    std::string first_src;
    const int64_t bs = sampler->batch_size();
    for (int64_t j = 0; j < B; ++j) {
      if (stop) return b;  // abandoned; the result is discarded
      const size_t i = static_cast<size_t>(idx[static_cast<size_t>(j)]);
      lp[j] = dataset->label(i);
      cp[j] = dataset->camid(i);
      ip[j] = static_cast<int64_t>(i);
      // Randomness of this sample: (seed, epoch, rank, position in the rank's epoch).
      Rng rng(mix_seed({ctx.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(ctx.rank),
                        static_cast<uint64_t>(static_cast<int64_t>(k) * bs + j)}));
      if (const auto mem = dataset->memory_image(i)) {  // decoded images (FiveValidationDataset): used as they are
        if (!dst) {
          C = mem->channels, H = mem->height, W = mem->width;
          b.images = torch::empty({B, C, H, W}, torch::kFloat32);
          dst = b.images.data_ptr<float>();
        }
        const size_t plane = static_cast<size_t>(C) * H * W;
        std::copy(mem->data, mem->data + plane, dst + static_cast<size_t>(j) * plane);
        ok[static_cast<size_t>(j)] = 1;
        continue;
      }
      cv::Mat img;
      try {
        const auto box = dataset->crop_box(i);
        img = pipeline->run(dataset->path(i), rng, box ? &*box : nullptr);
      } catch (const BadImageError& e) {
        if (!opt.skip_bad_images)
          throw Error(fmt::format("{} (listed at {}); set DataLoader.<set>.loader.on_bad_image: skip to replace bad "
                                  "images instead",
                                  e.what(), dataset->source(i)));
        bad_msgs.push_back(fmt::format("{} ({})", e.what(), dataset->source(i)));
        continue;
      } catch (const std::exception& e) {
        throw Error(fmt::format("{} (image '{}'): {}", dataset->source(i), dataset->path(i), e.what()));
      }
      if (!dst) {
        C = img.channels(), H = img.rows, W = img.cols;
        b.images = torch::empty({B, C, H, W}, torch::kFloat32);
        dst = b.images.data_ptr<float>();
        first_src = dataset->source(i) + " ('" + dataset->path(i) + "')";
      } else if (img.channels() != C || img.rows != H || img.cols != W) {
        throw Error(fmt::format("images of one batch differ in size: {} gives {}x{}x{} (CxHxW) but {} gives "
                                "{}x{}x{}; add ResizeImage or CropImage to transform_ops",
                                dataset->source(i) + " ('" + dataset->path(i) + "')", img.channels(), img.rows, img.cols, first_src, C, H, W));
      }
      hwc_to_chw_float(img, dst + static_cast<size_t>(j) * C * H * W);
      ok[static_cast<size_t>(j)] = 1;
    }
    if (!bad_msgs.empty()) {
      if (!dst) throw Error(fmt::format("no image of batch {} could be decoded; first: {}", k, bad_msgs[0]));
      bad += static_cast<int64_t>(bad_msgs.size());
      for (const auto& m : bad_msgs) std::fprintf(stderr, "warning: skipping bad image: %s\n", m.c_str());
      const size_t plane = static_cast<size_t>(C) * H * W;
      for (int64_t j = 0; j < B; ++j) {
        if (ok[static_cast<size_t>(j)]) continue;
        int64_t sub = -1;  // a good sample, preferably of the same label
        for (int64_t s = 0; s < B; ++s)
          if (ok[static_cast<size_t>(s)] && (sub < 0 || (lp[s] == lp[j] && lp[sub] != lp[j]))) sub = s;
        std::copy(dst + static_cast<size_t>(sub) * plane, dst + static_cast<size_t>(sub + 1) * plane,
                  dst + static_cast<size_t>(j) * plane);
        lp[j] = lp[sub];
        cp[j] = cp[sub];
        ip[j] = ip[sub];
      }
    }
    return b;
  }

  void worker() {
    cv::setNumThreads(0);  // one image per thread; OpenCV's own pool would oversubscribe the cores
    for (;;) {
      size_t k;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, [&] {
          return stop || (next_task < batches.size() && next_task < cursor + static_cast<size_t>(prefetch()));
        });
        if (stop) return;
        k = next_task++;
      }
      Result r;
      try {
        r.batch = build(k);
      } catch (...) {
        r.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        if (stop) return;
        results.emplace(k, std::move(r));
      }
      cv_done.notify_all();
    }
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, std::shared_ptr<const TransformPipeline> pipeline,
                       std::shared_ptr<const BatchSampler> sampler, LoaderOptions options, const LoaderContext& ctx)
    : impl_(std::make_unique<Impl>()) {
  impl_->dataset = std::move(dataset);
  impl_->pipeline = std::move(pipeline);
  impl_->sampler = std::move(sampler);
  impl_->opt = options;
  impl_->ctx = ctx;
  if (options.num_workers < 0) throw Error("num_workers must be >= 0");
}

DataLoader::~DataLoader() { impl_->stop_workers(); }

namespace {
// A loader section's keys, its dataset node, and whether its ops receive PIL images.
ConfigNode dataset_node_of(const ConfigNode& section, bool* pil_input, const char** ops_key) {
  if (!section.is_map()) section.fail("expected a map with dataset, sampler and loader");
  section.check_keys({"dataset", "sampler", "loader"});
  if (!section["dataset"].defined()) section.fail("missing 'dataset'");
  auto ds_node = section["dataset"];
  // AdaFaceDataset names its list `transform` (PaddleClas's face_dataset.py).
  const bool adaface = ds_node["name"].defined() && ds_node["name"].as<std::string>() == "AdaFaceDataset";
  *ops_key = adaface ? "transform" : "transform_ops";
  // A dataset with `backend: pil` (VeriWild, Market1501, ...) hands PIL images to the ops (ImageState::pil).
  // AdaFaceDataset opens its images with PIL.
  const auto backend = ds_node["backend"];
  *pil_input = adaface || (backend.defined() && backend.is_scalar() && backend.as<std::string>() == "pil");
  return ds_node;
}

LoaderOptions loader_options(const ConfigNode& ln) {
  LoaderOptions opt;
  if (!ln.defined()) return opt;
  ln.check_keys({"num_workers", "use_shared_memory", "prefetch_batches", "on_bad_image"});
  opt.num_workers = ln.get<int>("num_workers", 0);
  if (opt.num_workers < 0) ln["num_workers"].fail("must be >= 0");
  (void)ln.get<bool>("use_shared_memory", false);
  opt.prefetch_batches = ln.get<int>("prefetch_batches", 0);
  if (opt.prefetch_batches < 0) ln["prefetch_batches"].fail("must be >= 0");
  const auto policy = ln.get<std::string>("on_bad_image", "error");
  if (policy == "skip") opt.skip_bad_images = true;
  else if (policy != "error") ln["on_bad_image"].fail("expected error or skip, got '" + policy + "'");
  return opt;
}
}  // namespace

std::unique_ptr<DataLoader> DataLoader::create(const ConfigNode& section, const LoaderContext& ctx) {
  bool pil_input = false;
  const char* ops_key = nullptr;
  auto ds_node = dataset_node_of(section, &pil_input, &ops_key);
  // The transforms are built first: config errors there should not wait for a scan of the image files.
  auto pipeline = std::make_shared<TransformPipeline>(TransformPipeline::create(ds_node[ops_key], pil_input));
  const LoaderOptions opt = loader_options(section["loader"]);
  std::shared_ptr<const Dataset> ds = create_dataset(ds_node);
  if (ds->size() == 0) ds_node.fail("the dataset is empty");
  std::shared_ptr<const BatchSampler> sampler(
      create_sampler(section["sampler"], *ds, ShardInfo{ctx.rank, ctx.world_size}).release());
  return std::make_unique<DataLoader>(ds, pipeline, sampler, opt, ctx);
}

void DataLoader::check_config(const ConfigNode& section) {
  bool pil_input = false;
  const char* ops_key = nullptr;
  auto ds_node = dataset_node_of(section, &pil_input, &ops_key);
  (void)TransformPipeline::create(ds_node[ops_key], pil_input);
  (void)loader_options(section["loader"]);
  check_dataset_config(ds_node);
  // A missing sampler is reported when a loader is built (export reads an Eval set's transforms alone).
  if (section["sampler"].defined()) check_sampler_config(section["sampler"]);
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  auto& m = *impl_;
  m.stop_workers();
  m.epoch = epoch;
  m.batches = m.sampler->epoch_batches(m.ctx.seed, epoch);
  FL_ASSERT(first_batch >= 0 && first_batch <= static_cast<int64_t>(m.batches.size()), "first_batch out of range");
  m.cursor = static_cast<size_t>(first_batch);
  m.next_task = m.cursor;
  for (int t = 0; t < m.opt.num_workers; ++t) m.threads.emplace_back([&m] { m.worker(); });
}

std::optional<Batch> DataLoader::next() {
  auto& m = *impl_;
  if (m.epoch < 0 || m.cursor >= m.batches.size()) return std::nullopt;
  const size_t k = m.cursor;
  if (m.threads.empty()) {
    ++m.cursor;
    return m.build(k);
  }
  Impl::Result r;
  {
    std::unique_lock<std::mutex> lk(m.mu);
    m.cv_done.wait(lk, [&] { return m.results.count(k) > 0; });
    auto it = m.results.find(k);
    r = std::move(it->second);
    m.results.erase(it);
    ++m.cursor;
  }
  m.cv_work.notify_all();
  if (r.error) std::rethrow_exception(r.error);
  return std::move(r.batch);
}

int64_t DataLoader::batches_per_epoch() const { return impl_->sampler->batches_per_epoch(); }
const Dataset& DataLoader::dataset() const { return *impl_->dataset; }
int64_t DataLoader::batch_size() const { return impl_->sampler->batch_size(); }
int DataLoader::num_workers() const { return impl_->opt.num_workers; }
int64_t DataLoader::bad_images() const { return impl_->bad.load(); }

}  // namespace featlearn
