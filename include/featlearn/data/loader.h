// The data loader: dataset + transform_ops + batch sampler + worker threads.
//
// `DataLoader.<set>.loader` keys:
//   num_workers (0)         threads decoding and augmenting whole batches in parallel; 0 = in next()
//   use_shared_memory       accepted for PaddleClas configs; meaningless in one process
//   prefetch_batches (2*num_workers)  batches prepared ahead of the consumer (bounded queue)
//   on_bad_image (error)    an image that cannot be read or decoded at run time:
//                           error -> next() throws featlearn::Error naming the image and its list line;
//                           skip  -> counted (bad_images()) and warned on stderr; the sample is replaced by
//                                    another sample of the same batch, preferably one with the same label
//                                    (keeps P x K batches intact); a batch with no good image is an error.
// Determinism: each sample's augmentation randomness comes from (seed, epoch, rank, position in the epoch),
// so batches are identical for any num_workers (and two views of one image in a batch differ).
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace featlearn {

class BatchSampler;
class TransformPipeline;

struct Batch {
  torch::Tensor images;   // [B, C, H, W] float32 (after transform_ops; CHW)
  torch::Tensor labels;   // [B] int64
  torch::Tensor camids;   // [B] int64 (-1 when the dataset has none)
  torch::Tensor indices;  // [B] int64 dataset indices
};

struct LoaderContext {
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
};

struct LoaderOptions {
  int num_workers = 0;
  int prefetch_batches = 0;  // 0 -> 2 * max(1, num_workers)
  bool skip_bad_images = false;
};

class DataLoader {
 public:
  // `section` is e.g. cfg["DataLoader"]["Train"] or cfg["DataLoader"]["Eval"]["Query"]: keys dataset, sampler,
  // loader.
  static std::unique_ptr<DataLoader> create(const ConfigNode& section, const LoaderContext& ctx);
  // Every check of create() that needs no file: section keys, transforms, dataset and sampler nodes, loader
  // options (featlearn check; docs/config.md, "Checking a config").
  static void check_config(const ConfigNode& section);
  // From parts (tests, tools).
  DataLoader(std::shared_ptr<const Dataset> dataset, std::shared_ptr<const TransformPipeline> pipeline,
             std::shared_ptr<const BatchSampler> sampler, LoaderOptions options, const LoaderContext& ctx);
  ~DataLoader();  // clean shutdown, also mid-epoch
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // 0-based; abandons an epoch in progress. `first_batch` > 0 starts at that batch of the epoch (the batches
  // before it are not built; the ones after it are the same as from the start).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // Batches in sampler order; nullopt at the end of the epoch (or before start_epoch). Rethrows worker errors
  // (with the image path) as featlearn::Error.
  std::optional<Batch> next();
  int64_t batches_per_epoch() const;
  const Dataset& dataset() const;
  int64_t batch_size() const;
  int num_workers() const;
  // Images replaced under on_bad_image: skip, since creation.
  int64_t bad_images() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace featlearn
