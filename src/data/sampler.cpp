#include <featlearn/config/registry.h>
#include <featlearn/data/rng.h>
#include <featlearn/data/sampler.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>
#include <unordered_map>

namespace featlearn {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Ids in first-appearance order and the dataset indices of each.
struct IdIndex {
  std::vector<int64_t> ids;
  std::vector<std::vector<int64_t>> members;
};

IdIndex index_ids(const Dataset& ds) {
  IdIndex x;
  std::unordered_map<int64_t, size_t> pos;
  for (size_t i = 0; i < ds.size(); ++i) {
    const int64_t l = ds.label(i);
    auto it = pos.find(l);
    if (it == pos.end()) {
      it = pos.emplace(l, x.ids.size()).first;
      x.ids.push_back(l);
      x.members.emplace_back();
    }
    x.members[it->second].push_back(static_cast<int64_t>(i));
  }
  return x;
}

// k elements of v: without replacement when possible, else with replacement.
void draw_k(const std::vector<int64_t>& v, int64_t k, Rng& rng, BatchIndices& out) {
  if (static_cast<int64_t>(v.size()) >= k) {
    std::vector<int64_t> tmp = v;  // partial Fisher-Yates
    for (int64_t i = 0; i < k; ++i) {
      const size_t j = static_cast<size_t>(i) + rng.below(tmp.size() - static_cast<size_t>(i));
      std::swap(tmp[static_cast<size_t>(i)], tmp[j]);
      out.push_back(tmp[static_cast<size_t>(i)]);
    }
  } else {
    for (int64_t i = 0; i < k; ++i) out.push_back(v[rng.below(v.size())]);
  }
}

void common_shard_checks(ShardInfo shard) {
  if (shard.world_size < 1 || shard.rank < 0 || shard.rank >= shard.world_size)
    throw Error(fmt::format("invalid rank {} for world size {}", shard.rank, shard.world_size));
}

// ---------------------------------------------------------------------------------------------------------------

class DistributedBatchSampler : public BatchSampler {
 public:
  DistributedBatchSampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard, bool named,
                          std::string name = "DistributedBatchSampler")
      : n_(static_cast<int64_t>(ds.size())), shard_(shard), name_(std::move(name)) {
    if (named) p.check_keys({"name", "batch_size", "shuffle", "drop_last"});
    else p.check_keys({"batch_size", "shuffle", "drop_last"});
    bs_ = p.require<int64_t>("batch_size");
    if (bs_ <= 0) p["batch_size"].fail("batch_size must be positive");
    shuffle_ = p.get<bool>("shuffle", false);
    drop_last_ = p.get<bool>("drop_last", false);
    per_rank_samples_ = ceil_div(n_, shard_.world_size);
  }
  // paddle.io.DistributedBatchSampler (docs/architecture.md, "Samplers"): 0..N-1 padded by repetition to
  // W * ceil(N/W), shuffled, then blocks of batch_size dealt to the ranks in turn.
  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    const int64_t W = shard_.world_size, total = per_rank_samples_ * W;
    std::vector<int64_t> idx(static_cast<size_t>(total));
    for (int64_t k = 0; k < total; ++k) idx[static_cast<size_t>(k)] = k % std::max<int64_t>(n_, 1);
    if (shuffle_) {
      Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), 0xB5u}));
      rng.shuffle(idx);
    }
    std::vector<int64_t> mine;
    const int64_t tail = total % (bs_ * W);  // the last, incomplete round: tail / W samples per rank
    const auto take = [&](int64_t from, int64_t count) {
      mine.insert(mine.end(), idx.begin() + static_cast<std::ptrdiff_t>(from),
                  idx.begin() + static_cast<std::ptrdiff_t>(from + count));
    };
    for (int64_t i = shard_.rank * bs_; i < total - tail; i += bs_ * W) take(i, bs_);
    take(total - tail + shard_.rank * (tail / W), tail / W);
    std::vector<BatchIndices> out;
    for (size_t s = 0; s < mine.size(); s += static_cast<size_t>(bs_)) {
      const size_t e = std::min(mine.size(), s + static_cast<size_t>(bs_));
      if (drop_last_ && static_cast<int64_t>(e - s) < bs_) break;
      out.emplace_back(mine.begin() + static_cast<std::ptrdiff_t>(s), mine.begin() + static_cast<std::ptrdiff_t>(e));
    }
    return out;
  }
  int64_t batches_per_epoch() const override {
    return drop_last_ ? per_rank_samples_ / bs_ : ceil_div(per_rank_samples_, bs_);
  }
  int64_t batch_size() const override { return bs_; }
  std::string name() const override { return name_; }

 private:
  int64_t n_, bs_ = 1, per_rank_samples_ = 0;
  bool shuffle_ = false, drop_last_ = false;
  ShardInfo shard_;
  std::string name_;
};

// ---------------------------------------------------------------------------------------------------------------

class PKSampler : public BatchSampler {
 public:
  PKSampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard) : shard_(shard) {
    p.check_keys({"name", "batch_size", "sample_per_id", "shuffle", "drop_last", "id_list", "ratio",
                  "sample_method", "total_epochs"});
    bs_ = p.require<int64_t>("batch_size");
    k_ = p.require<int64_t>("sample_per_id");
    if (bs_ <= 0) p["batch_size"].fail("batch_size must be positive");
    if (k_ <= 0) p["sample_per_id"].fail("sample_per_id must be positive");
    if (bs_ % k_ != 0)
      p.fail(fmt::format("sample_per_id ({}) must divide batch_size ({})", k_, bs_));
    (void)p.get<bool>("shuffle", true);  // see sampler.h: does not change the draws
    (void)p.get<int64_t>("total_epochs", 0);
    drop_last_ = p.get<bool>("drop_last", true);
    ids_ = index_ids(ds);
    const int64_t P = bs_ / k_;
    if (static_cast<int64_t>(ids_.ids.size()) < P)
      p.fail(fmt::format("batch_size {} / sample_per_id {} = {} ids per batch, but the dataset has only {} ids", bs_,
                         k_, P, ids_.ids.size()));
    const auto method = p.get<std::string>("sample_method", "sample_avg_prob");
    weights_.resize(ids_.ids.size());
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (method == "sample_avg_prob") weights_[i] = static_cast<double>(ids_.members[i].size());
      else if (method == "id_avg_prob") weights_[i] = 1.0;
      else p["sample_method"].fail("expected sample_avg_prob or id_avg_prob, got '" + method + "'");
    }
    if (p["id_list"].defined() || p["ratio"].defined()) {
      if (!p["id_list"].defined() || !p["ratio"].defined()) p.fail("id_list and ratio go together");
      const auto id_list = p["id_list"].as<std::vector<int64_t>>();
      const auto ratio = p["ratio"].as<std::vector<double>>();
      if (id_list.size() != 2 * ratio.size()) p["id_list"].fail("id_list must hold a [start, end] pair per ratio");
      for (double r : ratio)
        if (!std::isfinite(r) || r < 0) p["ratio"].fail(fmt::format("ratios must be finite and >= 0, got {}", r));
      for (size_t i = 0; i < weights_.size(); ++i)
        for (size_t j = 0; j < ratio.size(); ++j)
          if (static_cast<int64_t>(i) >= id_list[2 * j] && static_cast<int64_t>(i) <= id_list[2 * j + 1]) {
            weights_[i] *= ratio[j];
            break;
          }
    }
    int64_t positive = 0;
    for (double w : weights_) positive += w > 0;
    if (positive < P) p.fail(fmt::format("only {} ids have a positive sampling weight; {} per batch needed", positive, P));
    cumulative_.resize(weights_.size());
    std::partial_sum(weights_.begin(), weights_.end(), cumulative_.begin());
    per_rank_samples_ = ceil_div(static_cast<int64_t>(ds.size()), shard_.world_size);
  }
  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    const int64_t per_rank = batches_per_epoch();
    const int64_t total = per_rank * shard_.world_size;
    const int64_t P = bs_ / k_;
    std::vector<BatchIndices> out;
    Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), 0x9Cu}));
    std::vector<size_t> chosen;
    std::vector<char> taken(ids_.ids.size(), 0);
    for (int64_t b = 0; b < total; ++b) {
      draw_ids(P, rng, chosen, taken);
      const bool keep = (b % shard_.world_size) == shard_.rank;
      BatchIndices batch;
      for (size_t id : chosen) draw_k(ids_.members[id], k_, rng, batch);
      if (keep) out.push_back(std::move(batch));
    }
    return out;
  }
  int64_t batches_per_epoch() const override {
    return drop_last_ ? per_rank_samples_ / bs_ : ceil_div(per_rank_samples_, bs_);
  }
  int64_t batch_size() const override { return bs_; }
  std::string name() const override { return "PKSampler"; }

 private:
  // P distinct ids, successive draws proportional to weight (numpy's choice(replace=False, p=...)): rejection of
  // already chosen ids, falling back to explicit renormalization when rejection gets expensive.
  void draw_ids(int64_t P, Rng& rng, std::vector<size_t>& chosen, std::vector<char>& taken) const {
    chosen.clear();
    const double total = cumulative_.back();
    double taken_mass = 0;
    int rejects = 0;
    while (static_cast<int64_t>(chosen.size()) < P) {
      size_t id;
      if (taken_mass < 0.5 * total && rejects < 64) {
        const double u = rng.uniform() * total;
        id = static_cast<size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin());
        if (id >= cumulative_.size()) id = cumulative_.size() - 1;
        if (taken[id] || weights_[id] <= 0) {
          ++rejects;
          continue;
        }
      } else {
        double rest = 0;
        for (size_t i = 0; i < weights_.size(); ++i)
          if (!taken[i]) rest += weights_[i];
        double u = rng.uniform() * rest;
        id = weights_.size();
        for (size_t i = 0; i < weights_.size(); ++i) {
          if (taken[i] || weights_[i] <= 0) continue;
          id = i;
          u -= weights_[i];
          if (u < 0) break;
        }
      }
      taken[id] = 1;
      taken_mass += weights_[id];
      chosen.push_back(id);
    }
    for (size_t id : chosen) taken[id] = 0;
  }

  int64_t bs_ = 0, k_ = 1, per_rank_samples_ = 0;
  bool drop_last_ = true;
  IdIndex ids_;
  std::vector<double> weights_, cumulative_;
  ShardInfo shard_;
};

// ---------------------------------------------------------------------------------------------------------------

// PaddleClas's DistributedRandomIdentitySampler (docs/architecture.md, "Samplers"). Without max_iters the
// batches form one stream of passes (pass p drawn from (seed, p)); epoch e is the stream's batches
// [e * len * W, (e + 1) * len * W), rank r taking every W-th of them from the r-th on.
class DistributedRandomIdentitySampler : public BatchSampler {
 public:
  DistributedRandomIdentitySampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard) : shard_(shard) {
    p.check_keys({"name", "batch_size", "num_instances", "drop_last", "max_iters", "shuffle"});
    bs_ = p.require<int64_t>("batch_size");
    k_ = p.require<int64_t>("num_instances");
    if (bs_ <= 0) p["batch_size"].fail("batch_size must be positive");
    if (k_ <= 0) p["num_instances"].fail("num_instances must be positive");
    if (bs_ % k_ != 0)
      p.fail(fmt::format("batch_size ({}) must be divisible by num_instances ({})", bs_, k_));
    drop_last_ = p.require<bool>("drop_last");
    (void)p.get<bool>("shuffle", true);  // accepted, as in PaddleClas (sampling is always random)
    if (p["max_iters"].defined()) {
      max_iters_ = p["max_iters"].as<int64_t>();
      if (max_iters_ <= 0) p["max_iters"].fail("max_iters must be positive");
    }
    ids_ = index_ids(ds);
    P_ = bs_ / k_;
    if (static_cast<int64_t>(ids_.ids.size()) < P_)
      p.fail(fmt::format("batch_size {} / num_instances {} = {} ids per batch, but the dataset has only {} ids", bs_,
                         k_, P_, ids_.ids.size()));
    int64_t length = 0;  // images in the chunks of one pass
    for (const auto& m : ids_.members) {
      const int64_t n = std::max<int64_t>(static_cast<int64_t>(m.size()), k_);
      length += n - n % k_;
    }
    len_ = max_iters_ > 0 ? max_iters_ : drop_last_ ? length / bs_ : ceil_div(length, bs_);
  }
  // PaddleClas's len(): every rank runs the whole sampler.
  int64_t batches_per_epoch() const override { return len_; }
  int64_t batch_size() const override { return bs_; }
  std::string name() const override { return "DistributedRandomIdentitySampler"; }

  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    const int64_t W = shard_.world_size, global = len_ * W;
    std::vector<BatchIndices> mine;
    if (max_iters_ > 0) {
      // One iterator per epoch: `global` batches, a fresh pass whenever fewer than P ids have chunks left.
      Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), 0x1Du}));
      Pass pass = prepare(rng);
      for (int64_t b = 0; b < global; ++b) {
        if (static_cast<int64_t>(pass.avail.size()) < P_) pass = prepare(rng);
        BatchIndices batch = weighted_batch(pass, rng);
        if (b % W == shard_.rank) mine.push_back(std::move(batch));
      }
      return mine;
    }
    const int64_t first = epoch * global;  // stream position of the epoch's first batch
    int64_t pass_index = 0, pass_start = 0;
    locate(seed, first, pass_index, pass_start);
    for (int64_t pos = pass_start; pos < first + global; ++pass_index) {
      auto batches = pass_batches(seed, pass_index);
      for (auto& b : batches) {
        if (pos >= first && pos < first + global && (pos - first) % W == shard_.rank) mine.push_back(std::move(b));
        ++pos;
      }
    }
    return mine;
  }

 private:
  struct Pass {
    std::vector<std::vector<BatchIndices>> chunks;  // per id, K indices each
    std::vector<size_t> next;                       // per id: next chunk
    std::vector<size_t> avail;                      // ids with chunks left
  };
  // Each id's images (up-sampled with replacement to K when fewer) shuffled and cut into chunks of K; the
  // last incomplete chunk is dropped.
  Pass prepare(Rng& rng) const {
    Pass p;
    const size_t n = ids_.ids.size();
    p.chunks.resize(n);
    p.next.assign(n, 0);
    for (size_t id = 0; id < n; ++id) {
      std::vector<int64_t> idx;
      const auto& m = ids_.members[id];
      if (static_cast<int64_t>(m.size()) < k_) {
        for (int64_t j = 0; j < k_; ++j) idx.push_back(m[rng.below(m.size())]);
      } else {
        idx = m;
      }
      rng.shuffle(idx);
      for (size_t s = 0; s + static_cast<size_t>(k_) <= idx.size(); s += static_cast<size_t>(k_))
        p.chunks[id].emplace_back(idx.begin() + static_cast<std::ptrdiff_t>(s),
                                  idx.begin() + static_cast<std::ptrdiff_t>(s) + k_);
      p.avail.push_back(id);
    }
    return p;
  }
  // Appends id's next chunk; true when that was its last.
  static bool take(Pass& p, size_t id, BatchIndices& batch) {
    const auto& c = p.chunks[id][p.next[id]++];
    batch.insert(batch.end(), c.begin(), c.end());
    return p.next[id] == p.chunks[id].size();
  }
  // One pass: batches of P ids drawn uniformly from those with chunks left, until fewer than P have chunks;
  // their remaining chunks are dropped. Every batch is full (P x K).
  std::vector<BatchIndices> pass_batches(uint64_t seed, int64_t pass_index) const {
    Rng rng(mix_seed({seed, static_cast<uint64_t>(pass_index), 0x1Du, 0x9A55u}));
    Pass pass = prepare(rng);
    std::vector<BatchIndices> out;
    auto& avail = pass.avail;
    const size_t P = static_cast<size_t>(P_);
    while (avail.size() >= P) {
      for (size_t j = 0; j < P; ++j) std::swap(avail[j], avail[j + rng.below(avail.size() - j)]);
      BatchIndices batch;
      std::vector<char> last(P, 0);
      for (size_t j = 0; j < P; ++j) last[j] = take(pass, avail[j], batch);
      // Drop the exhausted ids (from the back, so that an id moved into slot j has already been looked at).
      for (size_t j = P; j-- > 0;)
        if (last[j]) {
          avail[j] = avail.back();
          avail.pop_back();
        }
      out.push_back(std::move(batch));
    }
    return out;
  }
  // The pass holding stream position `pos` and that pass's first position. Pass lengths are cached: epoch e
  // needs the lengths of every earlier pass.
  void locate(uint64_t seed, int64_t pos, int64_t& pass_index, int64_t& pass_start) const {
    std::lock_guard<std::mutex> lk(cache_mu_);
    if (cache_seed_ != seed || cache_starts_.empty()) {
      cache_seed_ = seed;
      cache_starts_.assign(1, 0);  // cache_starts_[p] = first position of pass p
    }
    while (cache_starts_.back() <= pos) {
      const int64_t p = static_cast<int64_t>(cache_starts_.size()) - 1;
      cache_starts_.push_back(cache_starts_.back() + static_cast<int64_t>(pass_batches(seed, p).size()));
    }
    const auto it = std::upper_bound(cache_starts_.begin(), cache_starts_.end(), pos) - 1;
    pass_index = it - cache_starts_.begin();
    pass_start = *it;
  }
  // max_iters: P ids without replacement, each draw proportional to the chunks left (numpy's
  // choice(replace=False, p=count/count.sum())).
  BatchIndices weighted_batch(Pass& pass, Rng& rng) const {
    std::vector<size_t> cand = pass.avail, picked;
    for (int64_t j = 0; j < P_; ++j) {
      double total = 0;
      for (size_t id : cand) total += static_cast<double>(pass.chunks[id].size() - pass.next[id]);
      double u = rng.uniform() * total;
      size_t pick = 0;
      for (size_t c = 0; c < cand.size(); ++c) {
        pick = c;
        u -= static_cast<double>(pass.chunks[cand[c]].size() - pass.next[cand[c]]);
        if (u < 0) break;
      }
      picked.push_back(cand[pick]);
      cand.erase(cand.begin() + static_cast<std::ptrdiff_t>(pick));
    }
    BatchIndices batch;
    for (size_t id : picked)
      if (take(pass, id, batch)) pass.avail.erase(std::find(pass.avail.begin(), pass.avail.end(), id));
    return batch;
  }

  int64_t bs_ = 0, k_ = 1, P_ = 1, max_iters_ = 0, len_ = 0;
  bool drop_last_ = false;
  IdIndex ids_;
  ShardInfo shard_;
  mutable std::mutex cache_mu_;
  mutable uint64_t cache_seed_ = 0;
  mutable std::vector<int64_t> cache_starts_;
};

// ---------------------------------------------------------------------------------------------------------------

// Per-id chunks of K indices as PaddleClas's MetaBIN samplers make them (docs/architecture.md, "Samplers"):
// an id with fewer than K images draws K with replacement; otherwise its images, padded to a multiple of K
// with distinct extra copies of some of them, shuffled and cut into chunks of K. No image is dropped.
std::vector<BatchIndices> padded_chunks(const std::vector<int64_t>& members, int64_t k, Rng& rng) {
  std::vector<int64_t> idx;
  const int64_t n = static_cast<int64_t>(members.size());
  if (n < k) {
    draw_k(members, k, rng, idx);  // with replacement
  } else {
    idx = members;
    if (n % k != 0) draw_k(members, k - n % k, rng, idx);  // without replacement
  }
  rng.shuffle(idx);
  std::vector<BatchIndices> chunks;
  for (size_t s = 0; s + static_cast<size_t>(k) <= idx.size(); s += static_cast<size_t>(k))
    chunks.emplace_back(idx.begin() + static_cast<std::ptrdiff_t>(s), idx.begin() + static_cast<std::ptrdiff_t>(s) + k);
  return chunks;
}

// n rounded up to a multiple of k (k when n < k): the images an id contributes to a padded pass.
int64_t padded_count(int64_t n, int64_t k) { return n % k == 0 ? n : n - n % k + k; }

// Samplers over an endless stream of indices made of passes (pass p drawn from (seed, p)), cut into batches
// of batch_size; as PaddleClas's BatchSampler over an infinite Sampler, every batch is full and batches may
// run across passes. Epoch e is the stream's batches [e * len * W, (e + 1) * len * W), rank r taking every
// W-th from the r-th on (docs/architecture.md, "Samplers").
class PassStreamSampler : public BatchSampler {
 public:
  PassStreamSampler(ShardInfo shard, uint64_t tag) : shard_(shard), tag_(tag) {}
  int64_t batches_per_epoch() const override { return len_; }
  int64_t batch_size() const override { return bs_; }

  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    const int64_t W = shard_.world_size, global = len_ * W;
    const int64_t first = epoch * global * bs_, end = first + global * bs_;  // stream positions (indices)
    int64_t pass_index = 0, pass_start = 0;
    locate(seed, first, pass_index, pass_start);
    std::vector<int64_t> flat;
    flat.reserve(static_cast<size_t>(global * bs_));
    for (int64_t pos = pass_start; pos < end; ++pass_index)
      for (int64_t i : pass(seed, pass_index)) {
        if (pos >= first && pos < end) flat.push_back(i);
        ++pos;
      }
    std::vector<BatchIndices> mine;
    for (int64_t b = shard_.rank; b < global; b += W)
      mine.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(b * bs_),
                        flat.begin() + static_cast<std::ptrdiff_t>((b + 1) * bs_));
    return mine;
  }

 protected:
  // One pass's indices (never empty).
  virtual std::vector<int64_t> pass_indices(Rng& rng) const = 0;
  int64_t bs_ = 0, len_ = 0;

 private:
  std::vector<int64_t> pass(uint64_t seed, int64_t pass_index) const {
    Rng rng(mix_seed({seed, static_cast<uint64_t>(pass_index), tag_, 0x9A55u}));
    return pass_indices(rng);
  }
  // The pass holding stream position `pos` (in indices) and that pass's first position; pass lengths cached.
  void locate(uint64_t seed, int64_t pos, int64_t& pass_index, int64_t& pass_start) const {
    std::lock_guard<std::mutex> lk(cache_mu_);
    if (cache_seed_ != seed || cache_starts_.empty()) {
      cache_seed_ = seed;
      cache_starts_.assign(1, 0);
    }
    while (cache_starts_.back() <= pos) {
      const int64_t p = static_cast<int64_t>(cache_starts_.size()) - 1;
      cache_starts_.push_back(cache_starts_.back() + static_cast<int64_t>(pass(seed, p).size()));
    }
    const auto it = std::upper_bound(cache_starts_.begin(), cache_starts_.end(), pos) - 1;
    pass_index = it - cache_starts_.begin();
    pass_start = *it;
  }

  ShardInfo shard_;
  uint64_t tag_;
  mutable std::mutex cache_mu_;
  mutable uint64_t cache_seed_ = 0;
  mutable std::vector<int64_t> cache_starts_;
};

// Takes P distinct members of `pool` uniformly (they end up in pool[0..P)), appending each one's next chunk
// to `out` in draw order; members whose chunks run out are removed from the pool.
void take_round(std::vector<size_t>& pool, size_t P, std::vector<std::vector<BatchIndices>>& chunks,
                std::vector<size_t>& next, Rng& rng, std::vector<int64_t>& out) {
  for (size_t j = 0; j < P; ++j) std::swap(pool[j], pool[j + rng.below(pool.size() - j)]);
  std::vector<char> last(P, 0);
  for (size_t j = 0; j < P; ++j) {
    const size_t id = pool[j];
    const auto& c = chunks[id][next[id]++];
    out.insert(out.end(), c.begin(), c.end());
    last[j] = next[id] == chunks[id].size();
  }
  for (size_t j = P; j-- > 0;)  // from the back: an id moved into slot j has already been looked at
    if (last[j]) {
      pool[j] = pool.back();
      pool.pop_back();
    }
}

// PaddleClas's NaiveIdentityBatchSampler (MetaBIN): a pass gives every id's padded chunks, P = batch_size / K
// ids drawn uniformly per round until fewer than P ids have chunks; len = total // batch_size with
// total = sum of padded counts, rounded down to a multiple of batch_size, minus one batch_size.
class NaiveIdentityBatchSampler : public PassStreamSampler {
 public:
  NaiveIdentityBatchSampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard)
      : PassStreamSampler(shard, 0x4A1Eu) {
    p.check_keys({"name", "batch_size", "num_instances", "drop_last"});
    bs_ = p.require<int64_t>("batch_size");
    k_ = p.require<int64_t>("num_instances");
    (void)p.require<bool>("drop_last");  // the stream is endless: every batch is full either way
    if (k_ <= 0) p["num_instances"].fail("num_instances must be positive");
    if (bs_ < k_) p["batch_size"].fail(fmt::format("batch_size must be at least num_instances ({})", k_));
    ids_ = index_ids(ds);
    P_ = bs_ / k_;
    if (static_cast<int64_t>(ids_.ids.size()) < P_)
      p.fail(fmt::format("batch_size {} / num_instances {} = {} ids per batch, but the dataset has only {} ids", bs_,
                         k_, P_, ids_.ids.size()));
    int64_t total = 0;
    for (const auto& m : ids_.members) total += padded_count(static_cast<int64_t>(m.size()), k_);
    const int64_t total_images = total - total % bs_ - bs_;
    if (total_images <= 0)
      p.fail(fmt::format("the epoch is empty: {} padded images, rounded down to a multiple of batch_size {}, minus "
                         "one batch; use a smaller batch_size or more images",
                         total, bs_));
    len_ = total_images / bs_;  // total_images is a multiple of batch_size
  }
  std::string name() const override { return "NaiveIdentityBatchSampler"; }

 protected:
  std::vector<int64_t> pass_indices(Rng& rng) const override {
    const size_t n = ids_.ids.size();
    std::vector<std::vector<BatchIndices>> chunks(n);
    std::vector<size_t> next(n, 0), pool(n);
    for (size_t id = 0; id < n; ++id) chunks[id] = padded_chunks(ids_.members[id], k_, rng);
    std::iota(pool.begin(), pool.end(), size_t{0});
    std::vector<int64_t> out;
    while (pool.size() >= static_cast<size_t>(P_)) take_round(pool, static_cast<size_t>(P_), chunks, next, rng, out);
    return out;
  }

 private:
  int64_t k_ = 1, P_ = 1;
  IdIndex ids_;
};

// PaddleClas's DomainShuffleBatchSampler (MetaBIN) with camera_to_domain: each camera is a domain and each
// (label, camera) pair an id of that domain. A round draws P_d = (batch_size / K) / D ids uniformly in each
// domain 0..D-1 in turn; after a round, a domain with fewer than P_d ids left gets all its ids back with fresh
// chunks; the pass ends after the round in which the last domain got its first refill.
class DomainShuffleBatchSampler : public PassStreamSampler {
 public:
  DomainShuffleBatchSampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard)
      : PassStreamSampler(shard, 0xD0Au) {
    p.check_keys({"name", "batch_size", "num_instances", "drop_last", "camera_to_domain"});
    bs_ = p.require<int64_t>("batch_size");
    k_ = p.require<int64_t>("num_instances");
    drop_last_ = p.require<bool>("drop_last");
    if (!p.require<bool>("camera_to_domain"))
      p["camera_to_domain"].fail(
          "camera_to_domain: False needs per-image domain ids, which featlearn's datasets do not carry; use True "
          "(each camera is a domain)");
    if (k_ <= 0) p["num_instances"].fail("num_instances must be positive");
    if (bs_ <= 0) p["batch_size"].fail("batch_size must be positive");
    if (!ds.has_camids())
      p.fail("DomainShuffleBatchSampler needs camera ids (each camera is a domain); this dataset has none");
    // Ids are (label, camera) pairs in first-appearance order.
    std::map<std::pair<int64_t, int64_t>, size_t> pos;
    int64_t max_cam = -1;
    for (size_t i = 0; i < ds.size(); ++i) {
      const int64_t cam = ds.camid(i);
      if (cam < 0) p.fail(fmt::format("{}: camera id {} is not a domain (domains are cameras 0, 1, ...)", ds.source(i), cam));
      auto it = pos.find({ds.label(i), cam});
      if (it == pos.end()) {
        it = pos.emplace(std::make_pair(ds.label(i), cam), members_.size()).first;
        members_.emplace_back();
        domain_of_.push_back(cam);
      }
      members_[it->second].push_back(static_cast<int64_t>(i));
      max_cam = std::max(max_cam, cam);
    }
    if (members_.empty()) p.fail("DomainShuffleBatchSampler: the dataset is empty");
    domain_ids_.assign(static_cast<size_t>(max_cam + 1), {});
    for (size_t id = 0; id < members_.size(); ++id) domain_ids_[static_cast<size_t>(domain_of_[id])].push_back(id);
    const int64_t D = max_cam + 1;
    for (int64_t d = 0; d < D; ++d)
      if (domain_ids_[static_cast<size_t>(d)].empty())
        p.fail(fmt::format("cameras must be 0..{} with every one present (PaddleClas indexes domains by camera id); "
                           "camera {} has no image",
                           max_cam, d));
    pd_ = (bs_ / k_) / D;
    if (pd_ < 1)
      p.fail(fmt::format("batch_size {} / num_instances {} = {} ids per batch, fewer than the {} domains (cameras)",
                         bs_, k_, bs_ / k_, D));
    const int64_t bs_d = bs_ / D;  // PaddleClas's per-domain batch size
    int64_t max_cnt = 0;
    for (int64_t d = 0; d < D; ++d) {
      const auto& ids = domain_ids_[static_cast<size_t>(d)];
      if (static_cast<int64_t>(ids.size()) < pd_)
        p.fail(fmt::format("camera {} has {} ids, fewer than the {} drawn from each domain per batch", d, ids.size(),
                           pd_));
      int64_t cnt = 0;
      for (size_t id : ids) cnt += padded_count(static_cast<int64_t>(members_[id].size()), k_);
      max_cnt = std::max(max_cnt, cnt);
    }
    const int64_t total_images = D * (max_cnt - max_cnt % bs_d - bs_d);
    if (total_images <= 0)
      p.fail(fmt::format("the epoch is empty: the largest domain has {} padded images, fewer than two per-domain "
                         "batches of {}; use a smaller batch_size or more images",
                         max_cnt, bs_d));
    len_ = drop_last_ ? total_images / bs_ : ceil_div(total_images, bs_);
    if (len_ == 0)
      p.fail(fmt::format("the epoch is empty: {} images per epoch, fewer than batch_size {} with drop_last",
                         total_images, bs_));
  }
  std::string name() const override { return "DomainShuffleBatchSampler"; }

 protected:
  std::vector<int64_t> pass_indices(Rng& rng) const override {
    const size_t D = domain_ids_.size(), n = members_.size(), P = static_cast<size_t>(pd_);
    std::vector<std::vector<BatchIndices>> chunks(n);
    std::vector<size_t> next(n, 0);
    for (size_t id = 0; id < n; ++id) chunks[id] = padded_chunks(members_[id], k_, rng);
    std::vector<std::vector<size_t>> local = domain_ids_;
    std::vector<char> refilled(D, 0);
    std::vector<int64_t> out;
    while (std::find(refilled.begin(), refilled.end(), 0) != refilled.end()) {
      for (size_t d = 0; d < D; ++d) take_round(local[d], P, chunks, next, rng, out);
      for (size_t d = 0; d < D; ++d)
        if (local[d].size() < P) {
          refilled[d] = 1;
          local[d] = domain_ids_[d];
          for (size_t id : local[d]) {
            chunks[id] = padded_chunks(members_[id], k_, rng);
            next[id] = 0;
          }
        }
    }
    return out;
  }

 private:
  int64_t k_ = 1, pd_ = 1;
  bool drop_last_ = true;
  std::vector<std::vector<int64_t>> members_;   // per id
  std::vector<int64_t> domain_of_;              // per id
  std::vector<std::vector<size_t>> domain_ids_;  // per domain, its ids in first-appearance order
};

using SamplerPtr = std::unique_ptr<BatchSampler>;
using SamplerRegistry = Registry<SamplerPtr, const Dataset*, ShardInfo>;

const SamplerRegistry& sampler_registry() {
  static const SamplerRegistry reg = [] {
    SamplerRegistry r("sampler");
    r.add("DistributedBatchSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DistributedBatchSampler>(p, *ds, s, true);
    });
    // paddle.io.BatchSampler: the same batches on one process; sharded as DistributedBatchSampler on several
    // (docs/paddleclas-differences.md, D6).
    r.add("BatchSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DistributedBatchSampler>(p, *ds, s, true, "BatchSampler");
    });
    r.add("PKSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<PKSampler>(p, *ds, s);
    });
    r.add("DistributedRandomIdentitySampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DistributedRandomIdentitySampler>(p, *ds, s);
    });
    r.add("NaiveIdentityBatchSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<NaiveIdentityBatchSampler>(p, *ds, s);
    });
    r.add("DomainShuffleBatchSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DomainShuffleBatchSampler>(p, *ds, s);
    });
    return r;
  }();
  return reg;
}

}  // namespace

std::unique_ptr<BatchSampler> create_sampler(const ConfigNode& node, const Dataset& dataset, ShardInfo shard) {
  common_shard_checks(shard);
  if (!node.defined()) node.fail("missing sampler section (name, batch_size, ...)");
  if (!node.is_map()) node.fail("expected a map");
  if (!node.has("name")) return std::make_unique<DistributedBatchSampler>(node, dataset, shard, false);
  return sampler_registry().create_named(node, &dataset, shard);
}

namespace {
// The dataset a sampler node is checked against before any list is read: 1,024 ids, each with 2 images on
// each of 8 cameras, large enough for every batch shape a config asks for, so only the node's own keys and
// values can fail (checks that need the real data run when the loader is built).
class StandInDataset : public Dataset {
 public:
  size_t size() const override { return kIds * kCams * 2; }
  int64_t label(size_t i) const override { return static_cast<int64_t>(i % kIds); }
  int64_t camid(size_t i) const override { return static_cast<int64_t>((i / kIds) % kCams); }
  const std::string& path(size_t) const override { return path_; }
  std::string source(size_t i) const override { return "stand-in image " + std::to_string(i); }
  bool has_camids() const override { return true; }

 private:
  static constexpr size_t kIds = 1024, kCams = 8;
  std::string path_;
};
}  // namespace

void check_sampler_config(const ConfigNode& node) {
  static const StandInDataset stand_in;
  (void)create_sampler(node, stand_in, ShardInfo{});
}

std::vector<std::string> sampler_names() { return sampler_registry().names(); }

}  // namespace featlearn
