// Batch samplers (`DataLoader.<set>.sampler`), PaddleClas semantics, sharded across ranks (W = world size).
// docs/architecture.md ("Samplers") defines each epoch exactly; batches_per_epoch() is what every rank's
// epoch_batches() returns, and the trainer's iterations per epoch.
//
//   DistributedBatchSampler(batch_size, shuffle=false, drop_last=false)
//       paddle.io.DistributedBatchSampler: indices 0..N-1 padded to W*ceil(N/W) by repeating them from 0,
//       shuffled (when shuffle), then blocks of batch_size dealt to the ranks in turn (the last, incomplete
//       round split evenly); ceil(N/W) samples per rank, the last batch partial unless drop_last. A `sampler:`
//       without `name` (PaddleClas's plain batching: batch_size, shuffle, drop_last) is the same sampler.
//   PKSampler(batch_size, sample_per_id, shuffle=true, drop_last=true, sample_method=sample_avg_prob,
//             id_list, ratio, total_epochs)
//       ceil(N/W)//batch_size batches per rank (ceil(...) without drop_last), all full; each batch draws
//       P = batch_size/sample_per_id distinct ids, with probability proportional to their image counts
//       (sample_avg_prob) or uniform (id_avg_prob), optionally re-weighted by id_list/ratio (ranges of id
//       positions in first-appearance order, both ends inclusive), then K = sample_per_id images of each id
//       (without replacement; with replacement for ids with fewer than K images). Rank r gets the batches
//       r, r+W, ... of one stream. PaddleClas's `shuffle` only permutes the id order, which does not change
//       these draws; it is accepted for that reason.
//   DistributedRandomIdentitySampler(batch_size, num_instances, drop_last=false, max_iters, shuffle)
//       A pass: each id's images shuffled (ids with fewer than K = num_instances images up-sampled to K) and
//       cut into chunks of K; batches of P = batch_size/K distinct ids drawn uniformly from the ids with chunks
//       left, until fewer than P have chunks (their chunks are dropped). Every batch is full P x K. An epoch
//       is len = length//batch_size batches per rank (rounded up without drop_last; length = sum over ids of
//       max(n,K) - max(n,K)%K) taken from the stream of passes, which continues across epochs (PaddleClas's
//       trainer keeps its iterator and restarts it when a pass runs out). With max_iters: max_iters batches
//       per rank, a fresh pass at each epoch and whenever fewer than P ids have chunks, ids drawn with
//       probability proportional to their chunks left. `shuffle` is accepted (PaddleClas ignores it).
//   NaiveIdentityBatchSampler(batch_size, num_instances, drop_last)
//       PaddleClas's MetaBIN sampler: an endless stream of passes cut into batches (all full). A pass: each id's
//       images padded to a multiple of K (fewer than K: K drawn with replacement; else distinct extra copies),
//       shuffled, cut into chunks of K; rounds of P = batch_size/K ids drawn uniformly from those with chunks
//       left, until fewer than P have. len = T/batch_size, T = (sum of padded counts) rounded down to a multiple
//       of batch_size, minus batch_size. Epoch e is the stream's batches [e*len*W, (e+1)*len*W), rank r taking
//       every W-th from the r-th on.
//   DomainShuffleBatchSampler(batch_size, num_instances, drop_last, camera_to_domain)
//       PaddleClas's MetaBIN domain sampler (camera_to_domain: True only): cameras 0..D-1 are the domains,
//       (label, camera) pairs the ids. A round draws P_d = (batch_size/K)/D ids uniformly in each domain in
//       turn (their next padded chunk each); a domain left with fewer than P_d ids gets all of them back with
//       fresh chunks; a pass ends after the round in which the last domain got its first refill. len =
//       T/batch_size (rounded up without drop_last), T = D*(M - M % b - b), b = batch_size/D, M = the largest
//       domain's padded image count. Epochs and ranks as NaiveIdentityBatchSampler.
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
// The node's name, keys and values alone (featlearn check): checked against a large stand-in dataset, so
// what depends on the real list (enough ids or cameras per batch) is left to create_sampler.
void check_sampler_config(const ConfigNode& node);
std::vector<std::string> sampler_names();

}  // namespace featlearn
