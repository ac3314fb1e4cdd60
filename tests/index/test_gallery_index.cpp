// GalleryIndex: exactness (Flat == brute force), recall floors (HNSW, IVF), append/remove on every index type,
// binary (hamming) indexes, snapshot replay/rebuild, format versioning, model refusal, the writer lock.
#include <featlearn/index/gallery_index.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("featlearn_index_" + name);
  fs::remove_all(p);
  return p;
}

// n x d vectors around `clusters` random centres, L2-normalized (clustered, as real embeddings are).
std::vector<float> clustered(int64_t n, int64_t d, int clusters, uint32_t seed, float sigma = 0.3f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> centres(static_cast<size_t>(clusters * d));
  for (auto& c : centres) c = g(rng);
  std::vector<float> v(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(rng() % clusters);
    double norm = 0;
    for (int64_t j = 0; j < d; ++j) {
      float x = centres[static_cast<size_t>(c * d + j)] + sigma * g(rng);
      v[static_cast<size_t>(i * d + j)] = x;
      norm += x * x;
    }
    for (int64_t j = 0; j < d; ++j) v[static_cast<size_t>(i * d + j)] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

std::vector<NewItem> items_for(int64_t n, int64_t offset = 0) {
  std::vector<NewItem> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back({"img/" + std::to_string(offset + i) + ".jpg", "label" + std::to_string((offset + i) % 7), ""});
  return out;
}

IndexSpec spec(const std::string& method, IndexMetric m, int64_t d) {
  IndexSpec s;
  s.index_method = method;
  s.metric = m;
  s.dim = d;
  return s;
}

// Brute-force top-k ids over (ids, vectors) for one query: IP descending or L2 ascending, as FAISS ranks.
std::vector<std::pair<int64_t, float>> brute(const std::vector<int64_t>& ids, const std::vector<float>& vecs,
                                             const float* q, int64_t d, int64_t k, IndexMetric m) {
  std::vector<std::pair<int64_t, float>> all;
  for (size_t i = 0; i < ids.size(); ++i) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double a = vecs[i * static_cast<size_t>(d) + static_cast<size_t>(j)], b = q[j];
      s += m == IndexMetric::kL2 ? (a - b) * (a - b) : a * b;
    }
    all.emplace_back(ids[i], static_cast<float>(s));
  }
  std::sort(all.begin(), all.end(), [&](const auto& x, const auto& y) {
    return m == IndexMetric::kL2 ? x.second < y.second : x.second > y.second;
  });
  all.resize(std::min<size_t>(all.size(), static_cast<size_t>(k)));
  return all;
}

double recall(const std::vector<std::vector<SearchHit>>& got, const std::vector<std::vector<SearchHit>>& truth) {
  double r = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    std::set<int64_t> t;
    for (const auto& h : truth[i]) t.insert(h.id);
    int64_t f = 0;
    for (const auto& h : got[i]) f += t.count(h.id);
    r += static_cast<double>(f) / static_cast<double>(t.size());
  }
  return r / static_cast<double>(got.size());
}

void exec_sql(const fs::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.string().c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(h);
  sqlite3_close(h);
}

}  // namespace

TEST(GalleryIndex, FlatEqualsBruteForceForIPAndL2) {
  const int64_t n = 400, d = 12, nq = 25, k = 10;
  auto v = clustered(n, d, 20, 1);
  auto q = clustered(nq, d, 20, 2);
  for (auto metric : {IndexMetric::kInnerProduct, IndexMetric::kL2}) {
    const auto dir = temp_dir("flat");
    auto idx = GalleryIndex::create(dir.string(), spec("Flat", metric, d), items_for(n), v.data());
    ASSERT_EQ(idx->size(), n);
    std::vector<int64_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 1);  // ids are 1..n in list order
    SearchOptions opt;
    opt.top_k = k;
    const auto hits = idx->search(q.data(), nq, opt);
    for (int64_t i = 0; i < nq; ++i) {
      const auto want = brute(ids, v, q.data() + i * d, d, k, metric);
      ASSERT_EQ(hits[static_cast<size_t>(i)].size(), static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(hits[static_cast<size_t>(i)][static_cast<size_t>(j)].id, want[static_cast<size_t>(j)].first);
        EXPECT_NEAR(hits[static_cast<size_t>(i)][static_cast<size_t>(j)].score, want[static_cast<size_t>(j)].second,
                    1e-4);
      }
    }
    // Paths and labels come back with the hits.
    const auto& h = hits[0][0];
    EXPECT_EQ(h.path, "img/" + std::to_string(h.id - 1) + ".jpg");
    EXPECT_EQ(h.label, "label" + std::to_string((h.id - 1) % 7));
  }
}

TEST(GalleryIndex, ScoreThresholdsFollowTheMetric) {
  const int64_t d = 4;
  std::vector<float> v = {1, 0, 0, 0, 0.6f, 0.8f, 0, 0, 0, 0, 1, 0};
  const auto dir = temp_dir("thres");
  auto idx = GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, d), items_for(3), v.data());
  const float q[4] = {1, 0, 0, 0};
  SearchOptions opt;
  opt.top_k = 3;
  opt.score_thres = 0.5f;  // IP: keep score >= 0.5 -> scores 1.0 and 0.6
  auto hits = idx->search(q, 1, opt)[0];
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0].id, 1);
  EXPECT_NEAR(hits[1].score, 0.6f, 1e-6);
  const auto dir2 = temp_dir("thres_l2");
  auto l2 = GalleryIndex::create(dir2.string(), spec("Flat", IndexMetric::kL2, d), items_for(3), v.data());
  opt.score_thres = 1.0f;  // L2: keep squared distance <= 1 -> 0 and 0.8 (2 is dropped)
  hits = l2->search(q, 1, opt)[0];
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_NEAR(hits[1].score, 0.4f * 0.4f + 0.8f * 0.8f, 1e-5);
}

TEST(GalleryIndex, AnnRecallFloorsAgainstExact) {
  const int64_t n = 4000, d = 32, nq = 100;
  // Queries from the gallery's distribution (the same cluster centres), held out of the index.
  auto v = clustered(n + nq, d, 40, 3);
  const std::vector<float> q(v.begin() + n * d, v.end());
  for (const std::string method : {"HNSW32", "IVF"}) {
    const auto dir = temp_dir("ann");
    auto idx = GalleryIndex::create(dir.string(), spec(method, IndexMetric::kInnerProduct, d), items_for(n), v.data());
    SearchOptions opt;
    opt.top_k = 10;
    opt.ef_search = 128;
    opt.nprobe = 16;
    const auto got = idx->search(q.data(), nq, opt);
    opt.exact = true;
    const auto truth = idx->search(q.data(), nq, opt);
    EXPECT_GE(recall(got, truth), 0.9) << method;
    // The knobs matter: one IVF list / tiny efSearch recalls less than the defaults.
    opt.exact = false;
    opt.ef_search = 1;
    opt.nprobe = 1;
    EXPECT_LT(recall(idx->search(q.data(), nq, opt), truth), recall(got, truth) + 1e-9) << method;
  }
}

TEST(GalleryIndex, SearchBreadthKnobsAreApplied) {
  // Queries away from the gallery's clusters: a narrow search misses neighbours that a broad one finds.
  const int64_t n = 4000, d = 32, nq = 100;
  auto v = clustered(n, d, 40, 3);
  auto q = clustered(nq, d, 40, 4);
  for (const std::string method : {"HNSW32", "IVF"}) {
    const auto dir = temp_dir("knobs");
    auto idx = GalleryIndex::create(dir.string(), spec(method, IndexMetric::kInnerProduct, d), items_for(n), v.data());
    SearchOptions opt;
    opt.top_k = 10;
    opt.exact = true;
    const auto truth = idx->search(q.data(), nq, opt);
    opt.exact = false;
    opt.ef_search = 10;
    opt.nprobe = 1;
    const double narrow = recall(idx->search(q.data(), nq, opt), truth);
    opt.ef_search = 1000;
    opt.nprobe = 500;
    const double broad = recall(idx->search(q.data(), nq, opt), truth);
    EXPECT_GT(broad, narrow + 0.05) << method;
    EXPECT_GE(broad, 0.97) << method;
  }
}

TEST(GalleryIndex, AppendAndRemoveOnEveryIndexType) {
  const int64_t n = 600, d = 16, extra = 50;
  auto v = clustered(n + extra, d, 10, 5);
  struct Case {
    std::string method;
    IndexMetric metric;
  };
  for (const Case& c : {Case{"Flat", IndexMetric::kInnerProduct}, Case{"HNSW32", IndexMetric::kInnerProduct},
                        Case{"IVF", IndexMetric::kL2}, Case{"IVF8,Flat", IndexMetric::kInnerProduct},
                        Case{"Flat", IndexMetric::kHamming}, Case{"HNSW32", IndexMetric::kHamming},
                        Case{"IVF", IndexMetric::kHamming}}) {
    SCOPED_TRACE(c.method + " " + index_metric_name(c.metric));
    const auto dir = temp_dir("ops");
    auto idx = GalleryIndex::create(dir.string(), spec(c.method, c.metric, d), items_for(n), v.data());
    const auto new_ids = idx->add(items_for(extra, n), v.data() + n * d);
    ASSERT_EQ(new_ids.size(), static_cast<size_t>(extra));
    EXPECT_EQ(new_ids.front(), n + 1);
    EXPECT_EQ(idx->size(), n + extra);
    // Each appended vector finds itself first (exact duplicates score best on every metric).
    SearchOptions opt;
    opt.top_k = 5;
    opt.ef_search = 256;
    opt.nprobe = 64;
    auto hits = idx->search(v.data() + n * d, 1, opt)[0];
    ASSERT_FALSE(hits.empty());
    if (c.metric != IndexMetric::kHamming) EXPECT_EQ(hits[0].id, new_ids[0]);
    // Remove a third of the items, including that one: never returned again, on any index type.
    std::vector<int64_t> gone;
    for (int64_t id = 1; id <= n + extra; id += 3) gone.push_back(id);
    gone.push_back(new_ids[0]);
    std::sort(gone.begin(), gone.end());
    gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
    EXPECT_EQ(idx->remove(gone), static_cast<int64_t>(gone.size()));
    EXPECT_EQ(idx->remove(gone), 0);  // already gone: nothing changes
    EXPECT_EQ(idx->size(), n + extra - static_cast<int64_t>(gone.size()));
    const std::set<int64_t> gone_set(gone.begin(), gone.end());
    opt.top_k = 20;
    const auto all = idx->search(v.data(), 40, opt);
    for (const auto& r : all) {
      EXPECT_EQ(r.size(), 20u);
      for (const auto& h : r) EXPECT_EQ(gone_set.count(h.id), 0u) << h.id;
    }
    EXPECT_FALSE(idx->get(gone[0]).has_value());
    EXPECT_TRUE(idx->get(2).has_value());
    const auto info = idx->info();
    EXPECT_TRUE(info.consistent) << info.problem;
    // Reopen (replaying the un-snapshotted writes): same answers.
    idx.reset();
    auto again = GalleryIndex::open(dir.string(), true);
    EXPECT_EQ(again->size(), n + extra - static_cast<int64_t>(gone.size()));
    const auto all2 = again->search(v.data(), 40, opt);
    if (c.method == "Flat") {
      for (size_t i = 0; i < all.size(); ++i)
        for (size_t j = 0; j < all[i].size(); ++j) EXPECT_EQ(all[i][j].id, all2[i][j].id);
    }
    EXPECT_TRUE(again->info().consistent) << again->info().problem;
  }
}

TEST(GalleryIndex, FlatAfterRemovalEqualsBruteForceOverTheRest) {
  const int64_t n = 300, d = 8, k = 10;
  auto v = clustered(n, d, 5, 7);
  const auto dir = temp_dir("flat_rm");
  auto idx = GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, d), items_for(n), v.data());
  std::vector<int64_t> gone, keep_ids;
  std::vector<float> keep_vecs;
  for (int64_t id = 1; id <= n; ++id) {
    if (id % 4 == 0) {
      gone.push_back(id);
    } else {
      keep_ids.push_back(id);
      keep_vecs.insert(keep_vecs.end(), v.begin() + (id - 1) * d, v.begin() + id * d);
    }
  }
  idx->remove(gone);
  SearchOptions opt;
  opt.top_k = k;
  for (int64_t i = 0; i < 20; ++i) {
    const auto hits = idx->search(v.data() + i * d, 1, opt)[0];
    const auto want = brute(keep_ids, keep_vecs, v.data() + i * d, d, k, IndexMetric::kInnerProduct);
    ASSERT_EQ(hits.size(), want.size());
    for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ(hits[j].id, want[j].first);
  }
}

TEST(GalleryIndex, CompactionKeepsResults) {
  const int64_t n = 3000, d = 8;
  auto v = clustered(n, d, 10, 8);
  const auto dir = temp_dir("compact");
  auto idx = GalleryIndex::create(dir.string(), spec("HNSW32", IndexMetric::kInnerProduct, d), items_for(n), v.data());
  std::vector<int64_t> gone;
  for (int64_t id = 1; id <= 2000; ++id) gone.push_back(id);  // 2/3 dead: compaction rebuilds the graph
  idx->remove(gone);
  const auto info = idx->info();
  EXPECT_EQ(info.dead_positions, 0);
  EXPECT_EQ(info.faiss_positions, 1000);
  EXPECT_TRUE(info.consistent) << info.problem;
  SearchOptions opt;
  opt.top_k = 1;
  const auto hits = idx->search(v.data() + 2500 * d, 1, opt)[0];
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].id, 2501);
}

TEST(GalleryIndex, HammingDistancesAreBitCounts) {
  const int64_t d = 16;
  // Values > 0 are 1 bits: item 1 = bits 0..7, item 2 = all bits, item 3 = none.
  std::vector<float> v(3 * d, -1.f);
  for (int j = 0; j < 8; ++j) v[static_cast<size_t>(j)] = 1.f;
  for (int j = 0; j < 16; ++j) v[static_cast<size_t>(d + j)] = 1.f;
  const auto dir = temp_dir("hamming");
  auto idx = GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kHamming, d), items_for(3), v.data());
  std::vector<float> q(d, 0.f);  // round-style zeros: no bits
  q[0] = q[1] = 1.f;             // bits 0, 1
  SearchOptions opt;
  opt.top_k = 3;
  const auto hits = idx->search(q.data(), 1, opt)[0];
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0].id, 3);  // distance 2
  EXPECT_FLOAT_EQ(hits[0].score, 2.f);
  EXPECT_EQ(hits[1].id, 1);  // distance 6
  EXPECT_FLOAT_EQ(hits[1].score, 6.f);
  EXPECT_FLOAT_EQ(hits[2].score, 14.f);
  opt.hamming_radius = 6.f;
  EXPECT_EQ(idx->search(q.data(), 1, opt)[0].size(), 2u);
  EXPECT_EQ(idx->vector(2), std::vector<float>(d, 1.f));
  // The bit count must be a multiple of 8.
  EXPECT_THROW(GalleryIndex::create(temp_dir("ham12").string(), spec("Flat", IndexMetric::kHamming, 12), {}, nullptr),
               Error);
}

TEST(GalleryIndex, SnapshotIsReplayedOrRebuilt) {
  const int64_t n = 200, d = 8;
  auto v = clustered(n + 20, d, 5, 9);
  const auto dir = temp_dir("snap");
  {
    auto idx = GalleryIndex::create(dir.string(), spec("IVF", IndexMetric::kInnerProduct, d), items_for(n), v.data());
    idx->add(items_for(20, n), v.data() + n * d);  // no snapshot saved after this
    idx->remove({1, 2, 3});
    EXPECT_TRUE(idx->snapshot_stale());
  }
  {
    auto idx = GalleryIndex::open(dir.string(), false);  // replays the add and the removal
    EXPECT_EQ(idx->size(), n + 20 - 3);
    const auto info = idx->info();
    EXPECT_TRUE(info.consistent) << info.problem;
    EXPECT_LT(info.snapshot_generation, info.generation);
  }
  // A damaged snapshot is detected (checksum) and rebuilt from the database.
  {
    std::fstream f(dir / "vectors.faiss", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  {
    auto idx = GalleryIndex::open(dir.string(), true);
    EXPECT_EQ(idx->size(), n + 20 - 3);
    EXPECT_TRUE(idx->info().consistent);
    EXPECT_EQ(idx->info().snapshot_generation, idx->info().generation);  // rewritten by the writer
  }
  fs::remove(dir / "vectors.faiss");
  auto idx = GalleryIndex::open(dir.string(), false);
  EXPECT_EQ(idx->size(), n + 20 - 3);
  EXPECT_TRUE(idx->info().consistent);
}

TEST(GalleryIndex, NewReplacesTheIndexWhole) {
  const int64_t d = 8;
  auto v = clustered(100, d, 5, 10);
  const auto dir = temp_dir("replace");
  GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, d), items_for(100), v.data());
  auto idx = GalleryIndex::create(dir.string(), spec("HNSW32", IndexMetric::kInnerProduct, d), items_for(10), v.data());
  EXPECT_EQ(idx->size(), 10);
  EXPECT_EQ(idx->ids().front(), 1);  // ids restart
  idx.reset();
  auto again = GalleryIndex::open(dir.string(), false);
  EXPECT_EQ(again->size(), 10);
  EXPECT_EQ(again->spec().index_method, "HNSW32");
  EXPECT_TRUE(again->info().consistent);
  // A bad index_method fails before anything changes.
  again.reset();
  EXPECT_THROW(GalleryIndex::create(dir.string(), spec("NoSuchIndex", IndexMetric::kInnerProduct, d), items_for(5),
                                    v.data()),
               Error);
  EXPECT_EQ(GalleryIndex::open(dir.string(), false)->size(), 10);
  // IVF needs enough vectors for its lists.
  auto s = spec("IVF", IndexMetric::kInnerProduct, d);
  s.nlist = 50;
  try {
    GalleryIndex::create(dir.string(), s, items_for(10), v.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs at least 50 gallery vectors"), std::string::npos) << e.what();
  }
  EXPECT_EQ(GalleryIndex::open(dir.string(), false)->size(), 10);
}

TEST(GalleryIndex, FormatVersionAndForeignFilesAreRefused) {
  const auto dir = temp_dir("version");
  auto v = clustered(10, 4, 2, 11);
  GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, 4), items_for(10), v.data());
  exec_sql(dir / "gallery.db", "UPDATE meta SET value = '99' WHERE key = 'format_version'");
  try {
    GalleryIndex::open(dir.string(), false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index format version 99 is not supported"), std::string::npos) << e.what();
  }
  exec_sql(dir / "gallery.db", "UPDATE meta SET value = 'something.else' WHERE key = 'format'");
  EXPECT_THROW(GalleryIndex::open(dir.string(), false), Error);
  try {
    GalleryIndex::open(temp_dir("nothing").string(), false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a featlearn index"), std::string::npos) << e.what();
  }
  // A file that is not SQLite at all.
  const auto junk = temp_dir("junk");
  fs::create_directories(junk);
  std::ofstream(junk / "gallery.db") << "this is not a database, just text that is long enough to be read";
  EXPECT_THROW(GalleryIndex::open(junk.string(), false), Error);
}

TEST(GalleryIndex, AnotherModelIsRefused) {
  const auto dir = temp_dir("model");
  auto v = clustered(10, 4, 2, 12);
  auto s = spec("Flat", IndexMetric::kInnerProduct, 4);
  s.model_fingerprint = "00000000deadbeef";
  s.model_dir = "inference/a";
  s.preprocess_yaml = "- ResizeImage: {size: 64}";
  auto idx = GalleryIndex::create(dir.string(), s, items_for(10), v.data());
  EXPECT_NO_THROW(idx->check_model("00000000deadbeef", 4, s.preprocess_yaml, "inference/a"));
  try {
    idx->check_model("1111111111111111", 4, s.preprocess_yaml, "inference/b");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("was built with model 00000000deadbeef (inference/a)"), std::string::npos) << m;
    EXPECT_NE(m.find("inference/b is model 1111111111111111"), std::string::npos) << m;
  }
  EXPECT_THROW(idx->check_model("00000000deadbeef", 8, s.preprocess_yaml, "inference/a"), Error);
  EXPECT_THROW(idx->check_model("00000000deadbeef", 4, "- ResizeImage: {size: 32}", "inference/a"), Error);
  EXPECT_EQ(read_index_spec(dir.string()).model_fingerprint, "00000000deadbeef");
}

TEST(GalleryIndex, OneWriterAtATimeAndBadVectorsChangeNothing) {
  const auto dir = temp_dir("lock");
  auto v = clustered(10, 4, 2, 13);
  auto w = GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, 4), items_for(10), v.data());
  try {
    GalleryIndex::open(dir.string(), true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("being written by another process"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(GalleryIndex::open(dir.string(), false));  // readers need no lock
  std::vector<float> bad = {1, 0, NAN, 0};
  EXPECT_THROW(w->add(items_for(1), bad.data()), Error);
  EXPECT_EQ(w->size(), 10);
  auto r = GalleryIndex::open(dir.string(), false);
  EXPECT_EQ(r->size(), 10);
  EXPECT_THROW(r->add(items_for(1), v.data()), Error);  // read-only
}

// A writer killed between writing `vectors.faiss.tmp` and renaming it leaves the temp file; the next writer
// (the only one, under the lock) removes it, readers leave it alone.
TEST(GalleryIndex, NextWriterRemovesStaleTempFiles) {
  const auto dir = temp_dir("stale_tmp");
  auto v = clustered(10, 4, 2, 17);
  GalleryIndex::create(dir.string(), spec("Flat", IndexMetric::kInnerProduct, 4), items_for(10), v.data()).reset();
  { std::ofstream(dir / "vectors.faiss.tmp") << "partial snapshot"; }
  GalleryIndex::open(dir.string(), false).reset();
  EXPECT_TRUE(fs::exists(dir / "vectors.faiss.tmp"));
  auto w = GalleryIndex::open(dir.string(), true);
  EXPECT_FALSE(fs::exists(dir / "vectors.faiss.tmp"));
  EXPECT_EQ(w->size(), 10);
}
