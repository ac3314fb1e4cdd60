#include <featlearn/config/registry.h>
#include <featlearn/data/rng.h>
#include <featlearn/data/sampler.h>

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

namespace featlearn {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rank r's share of a global list of batches: r, r+W, ...; `per_rank` of them, wrapping around when short.
std::vector<BatchIndices> shard_batches(std::vector<BatchIndices> global, ShardInfo shard, int64_t per_rank) {
  if (shard.world_size == 1 && static_cast<int64_t>(global.size()) == per_rank) return global;
  std::vector<BatchIndices> out;
  if (global.empty()) return out;
  for (int64_t i = 0; i < per_rank; ++i) {
    const size_t k = static_cast<size_t>((shard.rank + i * shard.world_size) % static_cast<int64_t>(global.size()));
    out.push_back(global[k]);
  }
  return out;
}

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
  DistributedBatchSampler(const ConfigNode& p, const Dataset& ds, ShardInfo shard, bool named)
      : n_(static_cast<int64_t>(ds.size())), shard_(shard) {
    if (named) p.check_keys({"name", "batch_size", "shuffle", "drop_last"});
    else p.check_keys({"batch_size", "shuffle", "drop_last"});
    bs_ = p.require<int64_t>("batch_size");
    if (bs_ <= 0) p["batch_size"].fail("batch_size must be positive");
    shuffle_ = p.get<bool>("shuffle", false);
    drop_last_ = p.get<bool>("drop_last", false);
    per_rank_samples_ = ceil_div(n_, shard_.world_size);
  }
  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    std::vector<int64_t> idx(static_cast<size_t>(n_));
    std::iota(idx.begin(), idx.end(), 0);
    if (shuffle_) {
      Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), 0xB5u}));
      rng.shuffle(idx);
    }
    std::vector<int64_t> mine;
    const int64_t total = per_rank_samples_ * shard_.world_size;
    for (int64_t k = shard_.rank; k < total; k += shard_.world_size)
      mine.push_back(idx[static_cast<size_t>(k % std::max<int64_t>(n_, 1))]);
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
  std::string name() const override { return "DistributedBatchSampler"; }

 private:
  int64_t n_, bs_ = 1, per_rank_samples_ = 0;
  bool shuffle_ = false, drop_last_ = false;
  ShardInfo shard_;
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
    length_ = 0;
    for (const auto& m : ids_.members) {
      const int64_t n = std::max<int64_t>(static_cast<int64_t>(m.size()), k_);
      length_ += n - n % k_;
    }
  }
  int64_t global_batches() const {
    if (max_iters_ > 0) return max_iters_;
    return drop_last_ ? length_ / bs_ : ceil_div(length_, bs_);
  }
  int64_t batches_per_epoch() const override {
    const int64_t g = global_batches();
    return drop_last_ ? g / shard_.world_size : ceil_div(g, shard_.world_size);
  }
  int64_t batch_size() const override { return bs_; }
  std::string name() const override { return "DistributedRandomIdentitySampler"; }

  std::vector<BatchIndices> epoch_batches(uint64_t seed, int64_t epoch) const override {
    Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), 0x1Du}));
    const int64_t G = global_batches();
    std::vector<BatchIndices> global;
    Pass pass = prepare(rng);
    while (static_cast<int64_t>(global.size()) < G) {
      BatchIndices batch;
      std::vector<size_t> in_batch;
      if (max_iters_ > 0) {
        if (static_cast<int64_t>(pass.avail.size()) < P_) pass = prepare(rng);
        // P ids without replacement, probability proportional to chunks left.
        std::vector<size_t> cand = pass.avail;
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
          in_batch.push_back(cand[pick]);
          cand.erase(cand.begin() + static_cast<std::ptrdiff_t>(pick));
        }
        for (size_t id : in_batch) take(pass, id, batch);
      } else if (static_cast<int64_t>(pass.avail.size()) >= P_) {
        std::vector<size_t> pick = pass.avail;
        for (int64_t j = 0; j < P_; ++j) {
          const size_t r = static_cast<size_t>(j) + rng.below(pick.size() - static_cast<size_t>(j));
          std::swap(pick[static_cast<size_t>(j)], pick[r]);
        }
        pick.resize(static_cast<size_t>(P_));
        for (size_t id : pick) take(pass, id, batch);
      } else {
        // The pass runs out: its remaining ids first, then the batch continues from a fresh pass.
        std::vector<size_t> rest = pass.avail;
        std::unordered_set<size_t> used(rest.begin(), rest.end());
        for (size_t id : rest) take(pass, id, batch);
        pass = prepare(rng);
        std::vector<size_t> cand;
        for (size_t id : pass.avail)
          if (!used.count(id)) cand.push_back(id);
        const size_t need = static_cast<size_t>(P_) - rest.size();
        for (size_t j = 0; j < need; ++j) {
          const size_t r = j + rng.below(cand.size() - j);
          std::swap(cand[j], cand[r]);
          take(pass, cand[j], batch);
        }
      }
      global.push_back(std::move(batch));
    }
    return shard_batches(std::move(global), shard_, batches_per_epoch());
  }

 private:
  struct Pass {
    std::vector<std::vector<BatchIndices>> chunks;  // per id
    std::vector<size_t> next;                       // per id: next chunk
    std::vector<size_t> avail;                      // ids with chunks left (first-appearance order)
  };
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
  static void take(Pass& p, size_t id, BatchIndices& batch) {
    const auto& c = p.chunks[id][p.next[id]++];
    batch.insert(batch.end(), c.begin(), c.end());
    if (p.next[id] == p.chunks[id].size()) p.avail.erase(std::find(p.avail.begin(), p.avail.end(), id));
  }

  int64_t bs_ = 0, k_ = 1, P_ = 1, max_iters_ = 0, length_ = 0;
  bool drop_last_ = false;
  IdIndex ids_;
  ShardInfo shard_;
};

using SamplerPtr = std::unique_ptr<BatchSampler>;
using SamplerRegistry = Registry<SamplerPtr, const Dataset*, ShardInfo>;

const SamplerRegistry& sampler_registry() {
  static const SamplerRegistry reg = [] {
    SamplerRegistry r("sampler");
    r.add("DistributedBatchSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DistributedBatchSampler>(p, *ds, s, true);
    });
    r.add("PKSampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<PKSampler>(p, *ds, s);
    });
    r.add("DistributedRandomIdentitySampler", [](const ConfigNode& p, const Dataset* ds, ShardInfo s) -> SamplerPtr {
      return std::make_unique<DistributedRandomIdentitySampler>(p, *ds, s);
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

std::vector<std::string> sampler_names() { return sampler_registry().names(); }

}  // namespace featlearn
