// Batch samplers (`DataLoader.<set>.sampler`), PaddleClas semantics, sharded across ranks.
//
// Every sampler first builds the *global* epoch from (seed, epoch) alone, then gives rank r the batches (or
// samples) r, r + W, r + 2W, ... (W = world size): shards are disjoint, together they cover the epoch, and
// every rank gets the same number of batches (when the count does not divide, the shorter ranks wrap around
// to the start of the epoch unless drop_last).
//
//   DistributedBatchSampler(batch_size, shuffle=false, drop_last=false)
//       Each rank gets every W-th sample of the (shuffled) index list, padded by wrapping to a multiple of W;
//       batches of batch_size, the last one partial unless drop_last. A `sampler:` without `name` (PaddleClas's
//       plain batching: batch_size, shuffle, drop_last) behaves the same.
//   PKSampler(batch_size, sample_per_id, shuffle=true, drop_last=true, sample_method=sample_avg_prob,
//             id_list, ratio, total_epochs)
//       ceil(N/W)//batch_size batches per rank (ceil(...) without drop_last); each batch draws
//       P = batch_size/sample_per_id distinct ids, with probability proportional to their image counts
//       (sample_avg_prob) or uniform (id_avg_prob), optionally re-weighted by id_list/ratio (ranges of id
//       positions in first-appearance order, both ends inclusive), then K = sample_per_id images of each id
//       (without replacement; with replacement for ids with fewer than K images). PaddleClas's `shuffle` only
//       permutes the id order, which does not change these draws; it is accepted for that reason.
//   DistributedRandomIdentitySampler(batch_size, num_instances, drop_last=false, max_iters, shuffle)
//       Each id's images are shuffled (ids with fewer than K = num_instances images are up-sampled to K) and
//       cut into chunks of K; batches take P = batch_size/K distinct ids at random from the ids with chunks
//       left. The epoch has length = sum over ids of max(n,K) - max(n,K)%K images, i.e. length/batch_size
//       batches (rounded up without drop_last); batches are always full P x K (when the chunks run out, a fresh
//       pass continues the batch, so every id appears in the epoch when it is not dropped by drop_last).
//       With max_iters: that many batches, ids drawn with probability proportional to their chunks left.
//       `shuffle` is accepted (PaddleClas ignores it; sampling is always random).
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace featlearn {

using BatchIndices = std::vector<int64_t>;

class BatchSampler {
 public:
  virtual ~BatchSampler() = default;
  // This rank's batches of the epoch (deterministic in seed and epoch).
  virtual std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  virtual int64_t batch_size() const = 0;
  virtual std::string name() const = 0;
};

struct ShardInfo {
  int rank = 0;
  int world_size = 1;
};

// Builds the sampler of a `sampler:` node for `dataset`.
std::unique_ptr<BatchSampler> create_sampler(const ConfigNode& node, const Dataset& dataset, ShardInfo shard);
std::vector<std::string> sampler_names();

}  // namespace featlearn
