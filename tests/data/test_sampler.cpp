// Samplers: epoch lengths and contents with PaddleClas semantics (docs/architecture.md, "Samplers"), sharding
// across ranks, determinism.
#include <featlearn/data/sampler.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include "../error_of.h"

using namespace featlearn;

using featlearn::test::error_of;

namespace {

// In-memory dataset of identities 0, 1, ... with counts[i] images each (indices are consecutive per id).
ListDataset synthetic(const std::vector<int>& counts) {
  std::vector<ListDataset::Item> items;
  for (size_t id = 0; id < counts.size(); ++id)
    for (int k = 0; k < counts[id]; ++k) {
      ListDataset::Item it;
      it.path = "img" + std::to_string(items.size());
      it.label = static_cast<int64_t>(id);
      items.push_back(it);
    }
  return ListDataset(std::move(items), false);
}

// In-memory dataset with camera ids: for each (label, camera, count), count images (consecutive indices).
ListDataset synthetic_cams(const std::vector<std::array<int, 3>>& groups) {
  std::vector<ListDataset::Item> items;
  for (const auto& g : groups)
    for (int k = 0; k < g[2]; ++k) {
      ListDataset::Item it;
      it.path = "img" + std::to_string(items.size());
      it.label = g[0];
      it.camid = g[1];
      items.push_back(it);
    }
  return ListDataset(std::move(items), true);
}

std::unique_ptr<BatchSampler> sampler(const std::string& yaml, const Dataset& ds, int rank = 0, int world = 1) {
  return create_sampler(Config::from_string(yaml, "cfg.yaml").root(), ds, ShardInfo{rank, world});
}

std::string identity_yaml(int batch_size, int num_instances, bool drop_last) {
  return "name: DistributedRandomIdentitySampler\nbatch_size: " + std::to_string(batch_size) +
         "\nnum_instances: " + std::to_string(num_instances) + "\ndrop_last: " + (drop_last ? "True" : "False") + "\n";
}

// Checks that `b` is P distinct ids x K instances, each id's K instances consecutive; returns the ids in order.
std::vector<int64_t> check_pk(const BatchIndices& b, const Dataset& ds, size_t P, size_t K) {
  std::vector<int64_t> ids;
  EXPECT_EQ(b.size(), P * K) << "batch is not P x K";
  if (b.size() != P * K) return ids;
  std::set<int64_t> distinct;
  for (size_t j = 0; j < b.size(); j += K) {
    const int64_t l = ds.label(static_cast<size_t>(b[j]));
    for (size_t k = 1; k < K; ++k) EXPECT_EQ(ds.label(static_cast<size_t>(b[j + k])), l) << "instances of one id";
    EXPECT_TRUE(distinct.insert(l).second) << "id " << l << " twice in one batch";
    ids.push_back(l);
  }
  return ids;
}

// The indices of id `id` in `b` (K consecutive entries).
std::vector<int64_t> of_id(const BatchIndices& b, const Dataset& ds, int64_t id) {
  std::vector<int64_t> out;
  for (int64_t i : b)
    if (ds.label(static_cast<size_t>(i)) == id) out.push_back(i);
  return out;
}

// Epochs 0..n-1 of a sampler, concatenated.
std::vector<BatchIndices> stream(const BatchSampler& s, uint64_t seed, int64_t epochs) {
  std::vector<BatchIndices> out;
  for (int64_t e = 0; e < epochs; ++e) {
    auto b = s.epoch_batches(seed, e);
    EXPECT_EQ(static_cast<int64_t>(b.size()), s.batches_per_epoch()) << "epoch " << e;
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// DistributedRandomIdentitySampler

// ids with 1, 3, 4, 7 images, K = 2: chunks 1 (the single image up-sampled to 2), 1 (one image left over),
// 2 and 3 (one left over); length = 2 + 2 + 4 + 6 = 14.
TEST(IdentitySampler, EpochLengthIsPaddleClasLen) {
  auto ds = synthetic({1, 3, 4, 7});
  // P = 4: a pass yields exactly one batch (ids 0 and 1 then have no chunk left, 2 ids < P).
  auto p4_drop = sampler(identity_yaml(8, 2, true), ds);
  auto p4_keep = sampler(identity_yaml(8, 2, false), ds);
  EXPECT_EQ(p4_drop->batches_per_epoch(), 1);  // 14 // 8
  EXPECT_EQ(p4_keep->batches_per_epoch(), 2);  // ceil(14 / 8): two passes, both full batches
  // P = 2: a pass yields 2 or 3 batches; the epoch is still exactly len() batches.
  auto p2_drop = sampler(identity_yaml(4, 2, true), ds);
  auto p2_keep = sampler(identity_yaml(4, 2, false), ds);
  EXPECT_EQ(p2_drop->batches_per_epoch(), 3);  // 14 // 4
  EXPECT_EQ(p2_keep->batches_per_epoch(), 4);  // ceil(14 / 4); no partial batch: 14 is not a multiple of 4
  for (uint64_t seed = 0; seed < 5; ++seed)
    for (int64_t e = 0; e < 4; ++e) {
      for (const auto* s : {p4_drop.get(), p4_keep.get()}) {
        const auto bs = s->epoch_batches(seed, e);
        ASSERT_EQ(static_cast<int64_t>(bs.size()), s->batches_per_epoch());
        for (const auto& b : bs) {
          auto ids = check_pk(b, ds, 4, 2);
          EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()), (std::set<int64_t>{0, 1, 2, 3}));
          EXPECT_EQ(of_id(b, ds, 0), (std::vector<int64_t>{0, 0})) << "the single image, up-sampled";
          const auto one = of_id(b, ds, 1);
          ASSERT_EQ(one.size(), 2u);
          EXPECT_NE(one[0], one[1]) << "id 1 has 3 images: no repeat within its chunk";
        }
      }
      for (const auto* s : {p2_drop.get(), p2_keep.get()}) {
        const auto bs = s->epoch_batches(seed, e);
        ASSERT_EQ(static_cast<int64_t>(bs.size()), s->batches_per_epoch());
        for (const auto& b : bs) check_pk(b, ds, 2, 2);
      }
    }
  EXPECT_EQ(p2_keep->epoch_batches(7, 3), p2_keep->epoch_batches(7, 3));
  EXPECT_NE(p2_keep->epoch_batches(7, 3), p2_keep->epoch_batches(7, 4));
}

// ids with 7 and 4 images, K = 2, P = 2: every pass is exactly 2 batches (id 1's 2 chunks; id 0's third chunk
// and its 7th image are dropped); length = 6 + 4 = 10, len = 2 (drop_last) or 3. The epochs are consecutive
// len()-batch stretches of the stream of passes: with len = 3 an epoch ends in the middle of a pass and the
// next epoch continues it.
TEST(IdentitySampler, PassesDropLeftoversAndContinueAcrossEpochs) {
  auto ds = synthetic({7, 4});  // id 0: indices 0..6, id 1: 7..10
  for (bool drop_last : {true, false}) {
    auto s = sampler(identity_yaml(4, 2, drop_last), ds);
    ASSERT_EQ(s->batches_per_epoch(), drop_last ? 2 : 3);
    for (uint64_t seed = 0; seed < 10; ++seed) {
      const auto all = stream(*s, seed, 4);  // 8 or 12 batches = 4 or 6 passes
      ASSERT_EQ(all.size() % 2, 0u);
      for (size_t p = 0; p < all.size(); p += 2) {
        std::vector<int64_t> id0, id1;
        for (size_t b = p; b < p + 2; ++b) {
          check_pk(all[b], ds, 2, 2);
          for (int64_t i : of_id(all[b], ds, 0)) id0.push_back(i);
          for (int64_t i : of_id(all[b], ds, 1)) id1.push_back(i);
        }
        EXPECT_EQ(std::set<int64_t>(id1.begin(), id1.end()), (std::set<int64_t>{7, 8, 9, 10}))
            << "pass " << p / 2 << " (seed " << seed << "): each of id 1's images once";
        EXPECT_EQ(std::set<int64_t>(id0.begin(), id0.end()).size(), 4u)
            << "pass " << p / 2 << " (seed " << seed << "): 4 distinct images of id 0, the other 3 dropped";
      }
    }
  }
}

TEST(IdentitySampler, MaxItersAndConfigErrors) {
  auto ds = synthetic({5, 1, 3, 8, 2, 2, 4, 6, 3, 1});
  auto s = sampler("name: DistributedRandomIdentitySampler\nbatch_size: 8\nnum_instances: 2\ndrop_last: False\n"
                   "max_iters: 11\n",
                   ds);
  EXPECT_EQ(s->batches_per_epoch(), 11);
  const auto bs = s->epoch_batches(3, 0);
  ASSERT_EQ(bs.size(), 11u);  // more than one pass (17 chunks, 4 per batch)
  for (const auto& b : bs) check_pk(b, ds, 4, 2);
  auto msg = error_of([&] { sampler(identity_yaml(7, 2, false), ds); });
  EXPECT_NE(msg.find("must be divisible by num_instances"), std::string::npos) << msg;
  msg = error_of([&] { sampler(identity_yaml(24, 2, false), ds); });
  EXPECT_NE(msg.find("12 ids per batch, but the dataset has only 10 ids"), std::string::npos) << msg;
}

// PaddleClas's sampler does not shard: every rank runs it whole (seeded seed + rank), len() batches per rank.
// featlearn gives rank r the batches r, r + W, ... of one stream: len() batches per rank, and the W ranks
// together take the next W * len() batches of the single-process stream (which a single process spreads over
// W epochs).
TEST(IdentitySampler, RanksTakeInterleavedBatchesOfOneStream) {
  auto ds = synthetic({7, 4});
  auto single = sampler(identity_yaml(4, 2, false), ds);
  const auto s1 = stream(*single, 5, 4);  // 12 batches
  for (int world : {2, 3}) {
    for (int64_t e = 0; e < 4 / world; ++e) {
      std::vector<int64_t> id1_in_pass0;
      for (int r = 0; r < world; ++r) {
        auto s = sampler(identity_yaml(4, 2, false), ds, r, world);
        ASSERT_EQ(s->batches_per_epoch(), 3) << "len() batches per rank, as PaddleClas";
        const auto bs = s->epoch_batches(5, e);
        ASSERT_EQ(bs.size(), 3u);
        for (size_t i = 0; i < bs.size(); ++i)
          EXPECT_EQ(bs[i], s1[static_cast<size_t>(e * 3 * world + r) + i * static_cast<size_t>(world)])
              << "world " << world << " rank " << r << " epoch " << e << " batch " << i;
      }
    }
  }
  // Within a pass the ranks' batches are disjoint: the stream's batches 0 and 1 (one pass) go to ranks 0, 1.
  auto r0 = sampler(identity_yaml(4, 2, false), ds, 0, 2)->epoch_batches(8, 0);
  auto r1 = sampler(identity_yaml(4, 2, false), ds, 1, 2)->epoch_batches(8, 0);
  std::set<int64_t> id1;
  for (int64_t i : of_id(r0[0], ds, 1)) id1.insert(i);
  for (int64_t i : of_id(r1[0], ds, 1)) id1.insert(i);
  EXPECT_EQ(id1, (std::set<int64_t>{7, 8, 9, 10}));
  // max_iters: max_iters batches per rank.
  auto m = sampler(identity_yaml(4, 2, false) + "max_iters: 5\n", ds, 1, 2);
  EXPECT_EQ(m->batches_per_epoch(), 5);
  EXPECT_EQ(m->epoch_batches(0, 0).size(), 5u);
}

// ---------------------------------------------------------------------------------------------------------------
// DistributedBatchSampler: paddle.io.DistributedBatchSampler. The index list 0..N-1 is padded to
// ceil(N/W) * W by repeating it from the start, then shuffled (when shuffle); rank r takes the blocks of
// batch_size at r, r + W, ... of that list and its share of the final incomplete round.

namespace {
std::vector<BatchIndices> dbs(const Dataset& ds, int bs, bool drop_last, bool shuffle, int rank, int world,
                              uint64_t seed = 0) {
  auto s = sampler("name: DistributedBatchSampler\nbatch_size: " + std::to_string(bs) + "\ndrop_last: " +
                       (drop_last ? "True" : "False") + "\nshuffle: " + (shuffle ? "True" : "False") + "\n",
                   ds, rank, world);
  auto out = s->epoch_batches(seed, 0);
  EXPECT_EQ(static_cast<int64_t>(out.size()), s->batches_per_epoch());
  return out;
}
using Batches = std::vector<BatchIndices>;
}  // namespace

TEST(DistributedBatchSampler, PaddleShardsByBatchBlocks) {
  // N = 10, W = 3, batch_size 2: 4 samples per rank, padded list 0..9, 0, 1.
  auto ten = synthetic(std::vector<int>(10, 1));
  EXPECT_EQ(dbs(ten, 2, false, false, 0, 3), (Batches{{0, 1}, {6, 7}}));
  EXPECT_EQ(dbs(ten, 2, false, false, 1, 3), (Batches{{2, 3}, {8, 9}}));
  EXPECT_EQ(dbs(ten, 2, false, false, 2, 3), (Batches{{4, 5}, {0, 1}}));
  // N = 11, W = 2, batch_size 4: 6 per rank, padded 0..10, 0; rounds of 8, then the last 4 split 2 + 2.
  auto eleven = synthetic(std::vector<int>(11, 1));
  EXPECT_EQ(dbs(eleven, 4, false, false, 0, 2), (Batches{{0, 1, 2, 3}, {8, 9}}));
  EXPECT_EQ(dbs(eleven, 4, false, false, 1, 2), (Batches{{4, 5, 6, 7}, {10, 0}}));
  EXPECT_EQ(dbs(eleven, 4, true, false, 0, 2), (Batches{{0, 1, 2, 3}}));
  EXPECT_EQ(dbs(eleven, 4, true, false, 1, 2), (Batches{{4, 5, 6, 7}}));
  // N = 2, W = 5: padding longer than the list repeats it: 0, 1, 0, 1, 0.
  auto two = synthetic({1, 1});
  for (int r = 0; r < 5; ++r) EXPECT_EQ(dbs(two, 1, false, false, r, 5), (Batches{{r % 2}})) << "rank " << r;
  // One process: 0..N-1 in order, partial last batch unless drop_last.
  EXPECT_EQ(dbs(eleven, 4, false, false, 0, 1), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10}}));
  EXPECT_EQ(dbs(eleven, 4, true, false, 0, 1), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(DistributedBatchSampler, ShuffledShardsCoverEveryIndexPlusThePadding) {
  // The padding repeats indices 0.. (padded before the shuffle): with N = 10, W = 3 the ranks together hold
  // 0..9 once each plus 0 and 1 a second time, and every rank the same number of batches.
  auto ten = synthetic(std::vector<int>(10, 1));
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::multiset<int64_t> all;
    for (int r = 0; r < 3; ++r) {
      const auto bs = dbs(ten, 3, false, true, r, 3, seed);
      ASSERT_EQ(bs.size(), 2u);  // ceil(4 / 3)
      for (const auto& b : bs) all.insert(b.begin(), b.end());
    }
    std::multiset<int64_t> expected = {0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT_EQ(all, expected) << "seed " << seed;
  }
  // Evenly divisible: disjoint shards covering the single-process epoch.
  auto twelve = synthetic(std::vector<int>(12, 2));  // 24 images
  std::multiset<int64_t> all;
  for (int r = 0; r < 3; ++r) {
    const auto bs = dbs(twelve, 4, true, true, r, 3, 9);
    ASSERT_EQ(bs.size(), 2u);
    for (const auto& b : bs) all.insert(b.begin(), b.end());
  }
  std::multiset<int64_t> expected;
  for (int64_t i = 0; i < 24; ++i) expected.insert(i);
  EXPECT_EQ(all, expected);
  // A sampler without `name` is the same sampler.
  auto plain = sampler("batch_size: 4\nshuffle: False\ndrop_last: False\n", twelve, 1, 3);
  EXPECT_EQ(plain->epoch_batches(0, 0), (Batches{{4, 5, 6, 7}, {16, 17, 18, 19}}));
}

// paddle.io.BatchSampler (adaface_ir18's Eval set): 0..N-1 (a permutation with shuffle) in batches, the last
// partial unless drop_last; one process gets what paddle gives, several are sharded as DistributedBatchSampler.
TEST(BatchSampler, PaddleBatchesOnOneProcessShardedOnSeveral) {
  auto eleven = synthetic(std::vector<int>(11, 1));
  const std::string yaml = "name: BatchSampler\nbatch_size: 4\ndrop_last: False\nshuffle: False\n";
  auto s = sampler(yaml, eleven);
  EXPECT_EQ(s->name(), "BatchSampler");
  EXPECT_EQ(s->epoch_batches(0, 0), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10}}));
  EXPECT_EQ(sampler("name: BatchSampler\nbatch_size: 4\ndrop_last: True\nshuffle: False\n", eleven)->epoch_batches(0, 0),
            (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  auto shuffled = sampler("name: BatchSampler\nbatch_size: 4\ndrop_last: False\nshuffle: True\n", eleven);
  std::multiset<int64_t> all;
  for (const auto& b : shuffled->epoch_batches(3, 1)) all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 11u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 11u) << "a permutation of 0..10";
  EXPECT_NE(shuffled->epoch_batches(3, 1), shuffled->epoch_batches(3, 2));
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(sampler(yaml, eleven, r, 2)->epoch_batches(0, 0), dbs(eleven, 4, false, false, r, 2));
}

// ---------------------------------------------------------------------------------------------------------------
// PKSampler

TEST(PKSampler, Structure) {
  auto ds = synthetic({5, 1, 3, 8, 2, 2, 4, 6});  // 31 images, 8 ids; id 1 has one image
  auto s = sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\n", ds);
  EXPECT_EQ(s->batches_per_epoch(), 31 / 8);
  const auto batches = s->epoch_batches(0, 0);
  ASSERT_EQ(static_cast<int64_t>(batches.size()), s->batches_per_epoch());
  std::map<int64_t, int> id_draws;
  for (int e = 0; e < 30; ++e)
    for (const auto& b : s->epoch_batches(1, e)) {
      for (int64_t l : check_pk(b, ds, 4, 2)) {
        ++id_draws[l];
        const auto mine = of_id(b, ds, l);
        if (l != 1) EXPECT_NE(mine[0], mine[1]) << "no image repeated unless the id is up-sampled";
      }
    }
  // sample_avg_prob: the 8-image id is drawn more often than the 1-image id.
  EXPECT_GT(id_draws[3], id_draws[1]);
  EXPECT_EQ(s->epoch_batches(5, 2), s->epoch_batches(5, 2));
  EXPECT_NE(s->epoch_batches(5, 2), s->epoch_batches(5, 3));
  // drop_last False: ceil(31 / 8) = 4 batches, all full (PaddleClas draws whole P x K batches).
  auto keep = sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\ndrop_last: False\n", ds);
  EXPECT_EQ(keep->batches_per_epoch(), 4);
  for (const auto& b : keep->epoch_batches(2, 0)) check_pk(b, ds, 4, 2);
  auto msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 9\nsample_per_id: 2\n", ds); });
  EXPECT_NE(msg.find("must divide batch_size"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\nsample_method: foo\n", ds); });
  EXPECT_NE(msg.find("id_avg_prob"), std::string::npos) << msg;
}

// PaddleClas: every rank draws ceil(N / W) // batch_size batches (rounded up without drop_last) on its own, so
// the ranks' batches are independent draws, not disjoint index sets. featlearn: rank r takes the batches
// r, r + W, ... of one stream, i.e. the ranks together draw the single-process stream's first W * per-rank
// batches.
TEST(PKSampler, RanksTakeInterleavedBatchesOfOneStream) {
  auto ds = synthetic({3, 4, 2, 5, 3, 4, 2, 2});  // 25 images
  const std::string yaml = "name: PKSampler\nbatch_size: 4\nsample_per_id: 2\n";
  const auto single = sampler(yaml, ds)->epoch_batches(6, 1);  // 25 // 4 = 6 batches
  ASSERT_EQ(single.size(), 6u);
  for (int world : {2, 3}) {
    const size_t per_rank = world == 2 ? 3 : 2;  // ceil(25 / 2) // 4 = 3, ceil(25 / 3) // 4 = 2
    for (int r = 0; r < world; ++r) {
      auto s = sampler(yaml, ds, r, world);
      EXPECT_EQ(s->batches_per_epoch(), static_cast<int64_t>(per_rank));
      const auto bs = s->epoch_batches(6, 1);
      ASSERT_EQ(bs.size(), per_rank);
      for (size_t i = 0; i < per_rank; ++i)
        EXPECT_EQ(bs[i], single[static_cast<size_t>(r) + i * static_cast<size_t>(world)])
            << "world " << world << " rank " << r << " batch " << i;
    }
  }
  // Without drop_last: ceil(ceil(25 / 2) / 4) = 4 full batches per rank.
  auto keep = sampler(yaml + "drop_last: False\n", ds, 1, 2);
  EXPECT_EQ(keep->batches_per_epoch(), 4);
  for (const auto& b : keep->epoch_batches(0, 0)) check_pk(b, ds, 2, 2);
}

// sample_method id_avg_prob with id_list/ratio, as PaddleClas's PKSampler: every id starts at 1 / #ids, the
// ids at positions id_list[2j]..id_list[2j+1] (first-appearance order, inclusive; the first matching range
// wins) are multiplied by ratio[j], then the list is renormalized. Ids with 1..6 images, id_list
// [1, 2, 4, 4], ratio [3, 0.5]: weights 1, 3, 3, 1, 0.5, 1 (sum 9.5), p = 2/19, 6/19, 6/19, 2/19, 1/19, 2/19
// (independent of the image counts). The P ids of a batch are successive draws without replacement, so the
// first id of each batch follows p and, with P = 2, id i is in a batch with probability
// p_i + sum_{j != i} p_j p_i / (1 - p_j): 8807/37791, 7439/12597, 7439/12597, 8807/37791, 503/4199, 8807/37791.
// Empirical frequencies over n = 20000 batches must lie within 5 binomial standard deviations
// (5 sqrt(q (1 - q) / n) <= 0.017 here): a correct sampler fails with probability < 1e-6 per id, while
// sample_avg_prob weighting (p_1 = 6/28.5 = 0.21 instead of 0.316) or ignoring ratio (1/6) is off by > 0.05.
TEST(PKSampler, IdAvgProbWithIdListAndRatioGivesPaddleClasProbabilities) {
  auto ds = synthetic({1, 2, 3, 4, 5, 6});  // 21 images
  const std::string common = "sample_method: id_avg_prob\nid_list: [1, 2, 4, 4]\nratio: [3, 0.5]\n";
  const std::vector<double> p = {2 / 19., 6 / 19., 6 / 19., 2 / 19., 1 / 19., 2 / 19.};
  const std::vector<double> inclusion = {8807 / 37791., 7439 / 12597., 7439 / 12597.,
                                         8807 / 37791., 503 / 4199.,    8807 / 37791.};
  const auto frequencies = [&](const BatchSampler& s, size_t P, bool first_only, int64_t& n) {
    std::vector<double> f(6, 0);
    n = 0;
    for (int64_t e = 0; n < 20000; ++e)
      for (const auto& b : s.epoch_batches(11, e)) {
        const auto ids = check_pk(b, ds, P, 2);
        if (ids.size() != P) return f;
        for (size_t j = 0; j < (first_only ? 1 : P); ++j) f[static_cast<size_t>(ids[j])] += 1;
        ++n;
      }
    for (auto& x : f) x /= static_cast<double>(n);
    return f;
  };
  const auto tol = [](double q, int64_t n) { return 5 * std::sqrt(q * (1 - q) / static_cast<double>(n)); };
  int64_t n = 0;
  // P = 1 (batch_size 2, sample_per_id 2): 21 // 2 = 10 batches per epoch, each one id drawn with p.
  auto p1 = sampler("name: PKSampler\nbatch_size: 2\nsample_per_id: 2\n" + common, ds);
  ASSERT_EQ(p1->batches_per_epoch(), 10);
  auto f = frequencies(*p1, 1, true, n);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(f[i], p[i], tol(p[i], n)) << "P = 1, id " << i;
  // P = 2: the first id follows p, inclusion as above.
  auto p2 = sampler("name: PKSampler\nbatch_size: 4\nsample_per_id: 2\n" + common, ds);
  f = frequencies(*p2, 2, true, n);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(f[i], p[i], tol(p[i], n)) << "P = 2, first id " << i;
  f = frequencies(*p2, 2, false, n);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(f[i], inclusion[i], tol(inclusion[i], n)) << "P = 2, id " << i;

  // Exact: ratio 0 removes ids. id_list [0, 1, 1, 3], ratio [0, 5]: id 1 lies in both ranges and takes the
  // first one's ratio (0), so only ids 2, 3 (weight 5 each), 4 and 5 (1 each) can be drawn; with P = 4 every
  // batch holds exactly those four ids.
  auto zero = sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\nsample_method: id_avg_prob\n"
                      "id_list: [0, 1, 1, 3]\nratio: [0, 5]\n",
                      ds);
  ASSERT_EQ(zero->batches_per_epoch(), 2);  // 21 // 8
  for (int64_t e = 0; e < 20; ++e)
    for (const auto& b : zero->epoch_batches(3, e)) {
      const auto ids = check_pk(b, ds, 4, 2);
      EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()), (std::set<int64_t>{2, 3, 4, 5}));
    }
  // Without id_list/ratio, id_avg_prob is uniform: all 6 ids equally likely (1/6 each) for the first id.
  auto uniform = sampler("name: PKSampler\nbatch_size: 2\nsample_per_id: 2\nsample_method: id_avg_prob\n", ds);
  f = frequencies(*uniform, 1, true, n);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(f[i], 1 / 6., tol(1 / 6., n)) << "uniform, id " << i;
  // Errors: too few ids with a positive weight, a negative ratio, unpaired ranges, one key without the other.
  auto msg = error_of([&] {
    sampler("name: PKSampler\nbatch_size: 10\nsample_per_id: 2\nsample_method: id_avg_prob\n"
            "id_list: [0, 1, 1, 3]\nratio: [0, 5]\n",
            ds);
  });
  EXPECT_NE(msg.find("only 4 ids have a positive sampling weight; 5 per batch needed"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 2\nsample_per_id: 2\nid_list: [0, 1]\nratio: [-1]\n", ds); });
  EXPECT_NE(msg.find("ratios must be finite and >= 0, got -1"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 2\nsample_per_id: 2\nid_list: [0, 1, 2]\nratio: [2]\n", ds); });
  EXPECT_NE(msg.find("id_list must hold a [start, end] pair per ratio"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 2\nsample_per_id: 2\nratio: [2]\n", ds); });
  EXPECT_NE(msg.find("id_list and ratio go together"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------------------------
// NaiveIdentityBatchSampler and DomainShuffleBatchSampler (PaddleClas's MetaBIN samplers): endless streams of
// passes cut into batches; each id's images are padded to a multiple of K (never dropped).

namespace {
std::string naive_yaml(int batch_size, int num_instances) {
  return "name: NaiveIdentityBatchSampler\nbatch_size: " + std::to_string(batch_size) +
         "\nnum_instances: " + std::to_string(num_instances) + "\ndrop_last: True\n";
}
std::string domain_yaml(int batch_size, int num_instances, bool drop_last = true) {
  return "name: DomainShuffleBatchSampler\nbatch_size: " + std::to_string(batch_size) +
         "\nnum_instances: " + std::to_string(num_instances) + "\ndrop_last: " + (drop_last ? "True" : "False") +
         "\ncamera_to_domain: True\n";
}
std::multiset<int64_t> of_id_multi(const std::vector<BatchIndices>& bs, const Dataset& ds, int64_t id) {
  std::multiset<int64_t> out;
  for (const auto& b : bs)
    for (int64_t i : of_id(b, ds, id)) out.insert(i);
  return out;
}
}  // namespace

// len = total // batch_size, total = sum of per-id counts rounded up to K, rounded down to a multiple of
// batch_size, minus one batch_size. Ids with 1, 2, 4, 5 images, K = 2: 2 + 2 + 4 + 6 = 14 -> 14 - 2 - 4 = 8,
// len 2 for batch_size 4 (drop_last makes no difference: the stream is endless, every batch is full).
// Ids with 3 and 3 images, K = 2, P = 2: each id is padded to 4 (its 3 images and one of them again), 2 chunks;
// a pass is 2 rounds = 2 batches, and 8 - 0 - 4 = 4 gives len 1, so epochs 2k and 2k + 1 are one pass.
TEST(NaiveIdentityBatchSampler, PaddleClasLenAndPaddedPasses) {
  auto ds = synthetic({1, 2, 4, 5});
  auto s = sampler(naive_yaml(4, 2), ds);
  EXPECT_EQ(s->batches_per_epoch(), 2);
  EXPECT_EQ(sampler("name: NaiveIdentityBatchSampler\nbatch_size: 4\nnum_instances: 2\ndrop_last: False\n", ds)
                ->batches_per_epoch(),
            2);
  for (int64_t e = 0; e < 20; ++e)
    for (const auto& b : s->epoch_batches(4, e)) {
      const auto ids = check_pk(b, ds, 2, 2);
      for (int64_t l : ids)
        if (l == 0) EXPECT_EQ(of_id(b, ds, 0), (std::vector<int64_t>{0, 0})) << "one image, up-sampled";
    }
  EXPECT_EQ(s->epoch_batches(4, 3), s->epoch_batches(4, 3));
  EXPECT_NE(s->epoch_batches(4, 3), s->epoch_batches(4, 4));

  auto two = synthetic({3, 3});  // id 0: 0..2, id 1: 3..5
  auto t = sampler(naive_yaml(4, 2), two);
  ASSERT_EQ(t->batches_per_epoch(), 1);
  for (uint64_t seed = 0; seed < 10; ++seed)
    for (int64_t k = 0; k < 5; ++k) {
      std::vector<BatchIndices> pass = t->epoch_batches(seed, 2 * k);
      const auto second = t->epoch_batches(seed, 2 * k + 1);
      pass.insert(pass.end(), second.begin(), second.end());
      for (const auto& b : pass) check_pk(b, two, 2, 2);
      const auto id0 = of_id_multi(pass, two, 0), id1 = of_id_multi(pass, two, 1);
      EXPECT_EQ(id0.size(), 4u);
      EXPECT_EQ(std::set<int64_t>(id0.begin(), id0.end()), (std::set<int64_t>{0, 1, 2})) << "seed " << seed;
      EXPECT_EQ(id1.size(), 4u);
      EXPECT_EQ(std::set<int64_t>(id1.begin(), id1.end()), (std::set<int64_t>{3, 4, 5})) << "seed " << seed;
      // Two ranks: epoch k is stream batches 2k (rank 0) and 2k + 1 (rank 1), the single process's epochs 2k, 2k+1.
      for (int r = 0; r < 2; ++r)
        EXPECT_EQ(sampler(naive_yaml(4, 2), two, r, 2)->epoch_batches(seed, k), (std::vector<BatchIndices>{pass[r]}));
    }
  // batch_size not a multiple of K: rounds of P x K = 4 indices cut into batches of 5 (running across rounds
  // and passes). Ids with 4, 4, 4 images: 12 - 2 - 5 = 5, len 1; two ranks take the single stream in turn.
  auto three = synthetic({4, 4, 4});
  const std::string odd = "name: NaiveIdentityBatchSampler\nbatch_size: 5\nnum_instances: 2\ndrop_last: True\n";
  auto single = sampler(odd, three);
  ASSERT_EQ(single->batches_per_epoch(), 1);
  for (int64_t e = 0; e < 6; ++e) {
    ASSERT_EQ(single->epoch_batches(1, e).size(), 1u);
    EXPECT_EQ(single->epoch_batches(1, e)[0].size(), 5u);
  }
  for (int64_t e = 0; e < 3; ++e)
    for (int r = 0; r < 2; ++r)
      EXPECT_EQ(sampler(odd, three, r, 2)->epoch_batches(1, e), single->epoch_batches(1, 2 * e + r));
  // Errors.
  auto msg = error_of([&] { sampler(naive_yaml(4, 2), synthetic({2, 2})); });  // 4 - 0 - 4 = 0
  EXPECT_NE(msg.find("the epoch is empty: 4 padded images"), std::string::npos) << msg;
  msg = error_of([&] { sampler(naive_yaml(1, 2), ds); });
  EXPECT_NE(msg.find("batch_size must be at least num_instances (2)"), std::string::npos) << msg;
  msg = error_of([&] { sampler(naive_yaml(10, 2), ds); });
  EXPECT_NE(msg.find("5 ids per batch, but the dataset has only 4 ids"), std::string::npos) << msg;
}

// Cameras are domains and (label, camera) pairs ids. batch_size 8, K = 2: P = 4, P_d = 4 / 2 = 2 ids per
// domain and batch, per-domain batch 8 / 2 = 4. Camera 0 holds labels 0, 1, 2 with 3, 2, 5 images (padded
// 4 + 2 + 6 = 12), camera 1 labels 0, 3, 4 with 2, 1, 4 (2 + 2 + 4 = 8): len = 2 * (12 - 12 % 4 - 4) / 8 = 2.
// Every batch: 2 ids of camera 0 (K each), then 2 ids of camera 1; label 0 can appear in both halves.
TEST(DomainShuffleBatchSampler, BatchesArePdIdsOfEachCameraInTurn) {
  auto ds = synthetic_cams({{0, 0, 3}, {1, 0, 2}, {2, 0, 5}, {0, 1, 2}, {3, 1, 1}, {4, 1, 4}});
  auto s = sampler(domain_yaml(8, 2), ds);
  ASSERT_EQ(s->batches_per_epoch(), 2);
  int label0_twice = 0;
  for (int64_t e = 0; e < 30; ++e)
    for (const auto& b : s->epoch_batches(2, e)) {
      ASSERT_EQ(b.size(), 8u);
      std::set<int64_t> halves[2];
      for (size_t h = 0; h < 2; ++h)
        for (size_t j = 4 * h; j < 4 * h + 4; j += 2) {
          const auto i0 = static_cast<size_t>(b[j]), i1 = static_cast<size_t>(b[j + 1]);
          EXPECT_EQ(ds.camid(i0), static_cast<int64_t>(h)) << "camera " << h << "'s ids fill half " << h;
          EXPECT_EQ(ds.camid(i1), static_cast<int64_t>(h));
          EXPECT_EQ(ds.label(i0), ds.label(i1)) << "K instances of one id";
          EXPECT_TRUE(halves[h].insert(ds.label(i0)).second) << "P_d distinct ids per camera";
        }
      label0_twice += halves[0].count(0) && halves[1].count(0);
    }
  EXPECT_GT(label0_twice, 0) << "(label 0, camera 0) and (label 0, camera 1) are different ids";
  EXPECT_EQ(s->epoch_batches(9, 5), s->epoch_batches(9, 5));
  EXPECT_NE(s->epoch_batches(9, 5), s->epoch_batches(9, 6));
  // batch_size 5, K = 1: P = 5, P_d = 5 // 2 = 2, per-domain batch 2; rounds of 4 indices cut into batches of
  // 5. Camera 0 has the most images, 10: 2 * (10 - 0 - 2) = 16 images per epoch, len 16 // 5 = 3 with
  // drop_last, ceil(16 / 5) = 4 without (all full: the stream is endless).
  for (bool drop_last : {true, false}) {
    auto odd = sampler(domain_yaml(5, 1, drop_last), ds);
    ASSERT_EQ(odd->batches_per_epoch(), drop_last ? 3 : 4);
    for (const auto& b : odd->epoch_batches(0, 3)) EXPECT_EQ(b.size(), 5u);
  }
  // Cameras with 4 and 2 images: 2 * (4 - 0 - 2) = 4 images per epoch: len ceil(4 / 5) = 1 without drop_last,
  // 0 (an error) with it.
  auto small = synthetic_cams({{0, 0, 2}, {1, 0, 2}, {2, 1, 1}, {3, 1, 1}});
  EXPECT_EQ(sampler(domain_yaml(5, 1, false), small)->batches_per_epoch(), 1);
  auto msg = error_of([&] { sampler(domain_yaml(5, 1, true), small); });
  EXPECT_NE(msg.find("the epoch is empty: 4 images per epoch, fewer than batch_size 5"), std::string::npos) << msg;
}

// Camera 0: labels 0, 1 with 4 images each (indices 0..7, 2 chunks each); camera 1: labels 2, 3 with 2 each
// (8..11, one chunk each). batch_size 8, K = 2, P_d = 2: len = 2 * (8 - 0 - 4) / 8 = 1. A pass is exactly two
// rounds (= batches): camera 1 runs out after round 1 and is refilled, camera 0 after round 2, which ends the
// pass. So each batch's camera-1 half is {8, 9, 10, 11} and epochs 2k and 2k + 1 together hold each camera-0
// image exactly once.
TEST(DomainShuffleBatchSampler, PassEndsWhenEveryCameraWasRefilled) {
  auto ds = synthetic_cams({{0, 0, 4}, {1, 0, 4}, {2, 1, 2}, {3, 1, 2}});
  auto s = sampler(domain_yaml(8, 2), ds);
  ASSERT_EQ(s->batches_per_epoch(), 1);
  for (uint64_t seed = 0; seed < 10; ++seed)
    for (int64_t k = 0; k < 4; ++k) {
      const auto a = s->epoch_batches(seed, 2 * k), b = s->epoch_batches(seed, 2 * k + 1);
      ASSERT_EQ(a.size(), 1u);
      ASSERT_EQ(b.size(), 1u);
      std::multiset<int64_t> cam0;
      for (const auto* batch : {&a[0], &b[0]}) {
        ASSERT_EQ(batch->size(), 8u);
        cam0.insert(batch->begin(), batch->begin() + 4);
        EXPECT_EQ(std::set<int64_t>(batch->begin() + 4, batch->end()), (std::set<int64_t>{8, 9, 10, 11}));
      }
      EXPECT_EQ(cam0, (std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7})) << "seed " << seed << " pass " << k;
      for (int r = 0; r < 2; ++r)
        EXPECT_EQ(sampler(domain_yaml(8, 2), ds, r, 2)->epoch_batches(seed, k), r == 0 ? a : b);
    }
}

TEST(DomainShuffleBatchSampler, ConfigErrors) {
  auto ds = synthetic_cams({{0, 0, 4}, {1, 0, 4}, {2, 1, 2}, {3, 1, 2}});
  auto msg = error_of([&] {
    sampler("name: DomainShuffleBatchSampler\nbatch_size: 8\nnum_instances: 2\ndrop_last: True\n"
            "camera_to_domain: False\n",
            ds);
  });
  EXPECT_NE(msg.find("camera_to_domain: False needs per-image domain ids"), std::string::npos) << msg;
  msg = error_of([&] { sampler(domain_yaml(8, 2), synthetic({4, 4})); });
  EXPECT_NE(msg.find("needs camera ids"), std::string::npos) << msg;
  msg = error_of([&] { sampler(domain_yaml(8, 2), synthetic_cams({{0, 0, 4}, {1, 2, 4}})); });
  EXPECT_NE(msg.find("camera 1 has no image"), std::string::npos) << msg;
  msg = error_of([&] { sampler(domain_yaml(2, 2), ds); });
  EXPECT_NE(msg.find("1 ids per batch, fewer than the 2 domains"), std::string::npos) << msg;
  msg = error_of([&] { sampler(domain_yaml(12, 2), ds); });
  EXPECT_NE(msg.find("camera 0 has 2 ids, fewer than the 3 drawn from each domain"), std::string::npos) << msg;
  msg = error_of([&] { sampler(domain_yaml(8, 2), synthetic_cams({{0, 0, 2}, {1, 0, 2}, {2, 1, 2}, {3, 1, 2}})); });
  EXPECT_NE(msg.find("the epoch is empty: the largest domain has 4 padded images"), std::string::npos) << msg;
}

TEST(Samplers, InvalidRankAndUnknownName) {
  auto ds = synthetic({2, 2});
  auto msg = error_of([&] { sampler("batch_size: 2\n", ds, 2, 2); });
  EXPECT_NE(msg.find("invalid rank 2 for world size 2"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampeler\nbatch_size: 2\nsample_per_id: 1\n", ds); });
  EXPECT_NE(msg.find("PKSampler"), std::string::npos) << msg;
}
