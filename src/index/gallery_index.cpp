// GalleryIndex: SQLite (truth) + FAISS snapshot (derived). Design and file formats: docs/index.md.
#include <featlearn/common/atomic_file.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <featlearn/index/gallery_index.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "faiss_store.h"
#include "sqlite_db.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace featlearn {

namespace fs = std::filesystem;
using json = nlohmann::json;

IndexMetric parse_index_metric(const std::string& name, const std::string& where) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "ip") return IndexMetric::kInnerProduct;
  if (n == "l2") return IndexMetric::kL2;
  if (n == "hamming") return IndexMetric::kHamming;
  throw Error(fmt::format("{}: dist_type '{}' is not supported; use IP, L2 or hamming", where, name));
}

std::string index_metric_name(IndexMetric m) {
  switch (m) {
    case IndexMetric::kInnerProduct: return "IP";
    case IndexMetric::kL2: return "L2";
    case IndexMetric::kHamming: return "hamming";
  }
  return "?";
}

namespace {

constexpr const char* kDbFile = "gallery.db";
constexpr const char* kSnapshotFile = "vectors.faiss";
constexpr const char* kLockFile = "LOCK";
constexpr const char* kFormat = "featlearn.gallery";

json spec_to_json(const IndexSpec& s) {
  return json{{"index_method", s.index_method},       {"metric", index_metric_name(s.metric)},
              {"dim", s.dim},                         {"nlist", s.nlist},
              {"ef_construction", s.ef_construction}, {"model_fingerprint", s.model_fingerprint},
              {"model_dir", s.model_dir},             {"preprocess", s.preprocess_yaml},
              {"feature_binarize", s.feature_binarize}};
}

IndexSpec spec_from_json(const std::string& text, const std::string& where) {
  IndexSpec s;
  try {
    const auto j = json::parse(text);
    s.index_method = j.at("index_method").get<std::string>();
    s.metric = parse_index_metric(j.at("metric").get<std::string>(), where);
    s.dim = j.at("dim").get<int64_t>();
    s.nlist = j.value("nlist", int64_t{0});
    s.ef_construction = j.value("ef_construction", int64_t{40});
    s.model_fingerprint = j.value("model_fingerprint", std::string());
    s.model_dir = j.value("model_dir", std::string());
    s.preprocess_yaml = j.value("preprocess", std::string());
    s.feature_binarize = j.value("feature_binarize", std::string());
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: the index spec in the database is damaged: {}", where, e.what()));
  }
  return s;
}

void validate_spec(const IndexSpec& s, const std::string& dir) {
  if (s.dim <= 0) throw Error(fmt::format("{}: embedding_size must be positive, got {}", dir, s.dim));
  if (s.metric == IndexMetric::kHamming && s.dim % 8 != 0)
    throw Error(fmt::format("{}: a hamming index needs a number of bits divisible by 8, got embedding_size {}", dir,
                            s.dim));
  if (s.index_method.empty()) throw Error(dir + ": IndexProcess.index_method is empty");
}

// Float rows -> FAISS codes: float32 as is (finite values checked), or one bit per value (> 0) for hamming.
std::vector<uint8_t> encode(const IndexSpec& s, const float* v, int64_t n) {
  const int64_t d = s.dim;
  std::vector<uint8_t> out;
  if (s.metric != IndexMetric::kHamming) {
    for (int64_t i = 0; i < n * d; ++i)
      if (!std::isfinite(v[i]))
        throw Error(fmt::format("vector {} has a non-finite value ({}) at position {}", i / d, v[i], i % d));
    out.resize(static_cast<size_t>(n * d) * 4);
    std::memcpy(out.data(), v, out.size());
    return out;
  }
  out.assign(static_cast<size_t>(n * d / 8), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const float x = v[i * d + j];
      if (std::isnan(x)) throw Error(fmt::format("vector {} has NaN at position {}", i, j));
      if (x > 0) out[static_cast<size_t>(i * d / 8 + j / 8)] |= static_cast<uint8_t>(1u << (j % 8));
    }
  return out;
}

std::vector<float> decode(const IndexSpec& s, const uint8_t* code) {
  std::vector<float> v(static_cast<size_t>(s.dim));
  if (s.metric != IndexMetric::kHamming) {
    std::memcpy(v.data(), code, v.size() * 4);
  } else {
    for (int64_t j = 0; j < s.dim; ++j) v[static_cast<size_t>(j)] = (code[j / 8] >> (j % 8)) & 1 ? 1.f : 0.f;
  }
  return v;
}

int64_t code_bytes(const IndexSpec& s) { return s.metric == IndexMetric::kHamming ? s.dim / 8 : s.dim * 4; }

void create_schema(sqlite::Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, "
      "  label TEXT NOT NULL, extra TEXT NOT NULL, added_gen INTEGER NOT NULL, vec BLOB NOT NULL);"
      "CREATE INDEX IF NOT EXISTS items_path ON items(path);"
      "CREATE INDEX IF NOT EXISTS items_label ON items(label);"
      "CREATE INDEX IF NOT EXISTS items_gen ON items(added_gen);"
      "CREATE TABLE IF NOT EXISTS removed(id INTEGER NOT NULL, gen INTEGER NOT NULL);");
}

std::optional<std::string> meta_get(sqlite::Db& db, const std::string& key) {
  sqlite::Stmt st(db, "SELECT value FROM meta WHERE key = ?");
  st.bind(1, key);
  if (!st.step()) return std::nullopt;
  return st.text(0);
}

void meta_set(sqlite::Db& db, const std::string& key, const std::string& value) {
  sqlite::Stmt st(db, "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  st.bind(1, key).bind(2, value);
  st.run();
}

int64_t meta_int(sqlite::Db& db, const std::string& key, const std::string& where) {
  auto v = meta_get(db, key);
  if (!v) throw Error(fmt::format("{}: the gallery database has no '{}' (damaged or not a featlearn index)", where, key));
  try {
    return std::stoll(*v);
  } catch (...) {
    throw Error(fmt::format("{}: the gallery database's '{}' is not a number: {}", where, key, *v));
  }
}

// False for a database file that holds no table at all: what a first build killed before its commit leaves.
bool has_committed_build(sqlite::Db& db) {
  sqlite::Stmt st(db, "SELECT count(*) FROM sqlite_master");
  return st.step() && st.int64(0) > 0;
}

// Reads format and version; Error for a foreign or newer database.
void check_format(sqlite::Db& db, const std::string& where) {
  auto format = meta_get(db, "format");
  if (!format || *format != kFormat)
    throw Error(fmt::format("{}: not a featlearn gallery index (format '{}')", where, format.value_or("none")));
  const int64_t v = meta_int(db, "format_version", where);
  if (v < 1 || v > kIndexFormatVersion)
    throw Error(fmt::format("{}: index format version {} is not supported (this featlearn reads 1..{}); use the "
                            "featlearn that wrote it or rebuild the index (index_operation: new)",
                            where, v, kIndexFormatVersion));
}

// Inserts the items with their codes at generation `gen` (inside the caller's transaction); returns their ids.
std::vector<int64_t> insert_items(sqlite::Db& db, const std::vector<NewItem>& items, const std::vector<uint8_t>& codes,
                                  int64_t code_size, int64_t gen) {
  std::vector<int64_t> ids;
  ids.reserve(items.size());
  sqlite::Stmt ins(db, "INSERT INTO items(path, label, extra, added_gen, vec) VALUES(?, ?, ?, ?, ?)");
  for (size_t i = 0; i < items.size(); ++i) {
    ins.bind(1, items[i].path).bind(2, items[i].label).bind(3, items[i].extra).bind(4, gen);
    ins.bind_blob(5, codes.data() + static_cast<int64_t>(i) * code_size, static_cast<size_t>(code_size));
    ins.run();
    ids.push_back(sqlite3_last_insert_rowid(db.raw()));
  }
  return ids;
}

int take_lock(const std::string& dir) {
  const std::string path = (fs::path(dir) / kLockFile).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(path + ": cannot create the index lock file: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw Error(fmt::format("{}: the index is being written by another process (featlearn serve or index "
                            "build/append/remove); stop it or use its HTTP API",
                            dir));
  }
  remove_stale_temp_files(dir);  // left by a writer killed mid-write; this process is now the only writer
  return fd;
}

}  // namespace

struct GalleryIndex::Impl {
  std::string dir;
  IndexSpec spec;
  std::unique_ptr<sqlite::Db> db;
  int lock_fd = -1;
  bool writable = false;

  std::mutex write_mu;               // one writer (and snapshot) at a time
  mutable std::mutex db_mu;          // the SQLite connection
  mutable std::shared_mutex mem_mu;  // store + items below
  FaissStore store{IndexSpec{}};
  std::unordered_map<int64_t, std::pair<std::string, std::string>> items;  // id -> (path, label)
  int64_t generation = 0;
  int64_t base_generation = 0;
  int64_t snapshot_generation = -1;

  mutable std::mutex exact_mu;  // brute-force copy for SearchOptions::exact
  mutable std::unique_ptr<FaissStore> exact;
  mutable int64_t exact_generation = -1;

  ~Impl() {
    db.reset();
    if (lock_fd >= 0) ::close(lock_fd);
  }
  std::string db_path() const { return (fs::path(dir) / kDbFile).string(); }
  std::string snapshot_path() const { return (fs::path(dir) / kSnapshotFile).string(); }

  // All live vectors, ordered by id, as one code buffer (db_mu held by the caller).
  void read_all(std::vector<int64_t>* ids, std::vector<uint8_t>* codes) const {
    const int64_t cb = code_bytes(spec);
    sqlite::Stmt st(*db, "SELECT id, vec FROM items ORDER BY id");
    while (st.step()) {
      size_t n = 0;
      const auto* p = static_cast<const uint8_t*>(st.blob_ptr(1, &n));
      if (static_cast<int64_t>(n) != cb)
        throw Error(fmt::format("{}: item {} has a {}-byte vector, expected {} (damaged database)", db_path(),
                                st.int64(0), n, cb));
      ids->push_back(st.int64(0));
      codes->insert(codes->end(), p, p + n);
    }
  }

  // A fresh FAISS store over every stored vector (IVF retrained on them).
  FaissStore rebuild_store(const IndexSpec& s) const {
    std::vector<int64_t> ids;
    std::vector<uint8_t> codes;
    read_all(&ids, &codes);
    FaissStore st(s);
    st.build(codes.data(), static_cast<int64_t>(ids.size()));
    st.add(codes.data(), ids.data(), static_cast<int64_t>(ids.size()));
    return st;
  }

  // Replays the database changes after the snapshot's generation onto `st`.
  void replay(FaissStore& st, int64_t snap_gen) const {
    std::vector<int64_t> gone;
    {
      sqlite::Stmt r(*db, "SELECT id FROM removed WHERE gen > ?");
      r.bind(1, snap_gen);
      while (r.step()) gone.push_back(r.int64(0));
    }
    st.remove(gone);
    std::vector<int64_t> ids;
    std::vector<uint8_t> codes;
    sqlite::Stmt a(*db, "SELECT id, vec FROM items WHERE added_gen > ? ORDER BY id");
    a.bind(1, snap_gen);
    while (a.step()) {
      if (st.contains(a.int64(0))) continue;
      size_t n = 0;
      const auto* p = static_cast<const uint8_t*>(a.blob_ptr(1, &n));
      if (static_cast<int64_t>(n) != code_bytes(spec))
        throw Error(fmt::format("{}: item {} has a damaged vector", db_path(), a.int64(0)));
      ids.push_back(a.int64(0));
      codes.insert(codes.end(), p, p + n);
    }
    st.add(codes.data(), ids.data(), static_cast<int64_t>(ids.size()));
  }

  void require_writable() const {
    if (!writable) throw Error(dir + ": index opened read-only");
  }

  // One write operation: a transaction at the next generation. `body(gen)` makes the changes and returns false
  // when there is nothing to commit (then it is rolled back). Returns the committed generation, or 0. The
  // caller holds write_mu.
  template <class Body>
  int64_t commit_generation(const Body& body) {
    std::lock_guard<std::mutex> dl(db_mu);
    sqlite::Transaction tx(*db);
    const int64_t gen = generation + 1;
    if (!body(gen)) return 0;
    meta_set(*db, "generation", std::to_string(gen));
    tx.commit();
    return gen;
  }

  void load_items() {
    items.clear();
    sqlite::Stmt st(*db, "SELECT id, path, label FROM items");
    while (st.step()) items.emplace(st.int64(0), std::make_pair(st.text(1), st.text(2)));
  }

  std::vector<SearchHit> to_hits(const std::vector<std::pair<int64_t, float>>& raw, const SearchOptions& opt) const {
    std::vector<SearchHit> hits;
    for (const auto& [id, score] : raw) {
      if (spec.metric == IndexMetric::kInnerProduct && opt.score_thres && score < *opt.score_thres) continue;
      if (spec.metric == IndexMetric::kL2 && opt.score_thres && score > *opt.score_thres) continue;
      if (spec.metric == IndexMetric::kHamming && opt.hamming_radius && score > *opt.hamming_radius) continue;
      SearchHit h;
      h.id = id;
      h.score = score;
      if (auto it = items.find(id); it != items.end()) {
        h.path = it->second.first;
        h.label = it->second.second;
      }
      hits.push_back(std::move(h));
    }
    return hits;
  }
};

GalleryIndex::GalleryIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GalleryIndex::~GalleryIndex() = default;

const IndexSpec& GalleryIndex::spec() const { return impl_->spec; }
const std::string& GalleryIndex::dir() const { return impl_->dir; }
int64_t GalleryIndex::size() const {
  std::shared_lock<std::shared_mutex> lock(impl_->mem_mu);
  return static_cast<int64_t>(impl_->items.size());
}

std::unique_ptr<GalleryIndex> GalleryIndex::create(const std::string& dir, const IndexSpec& spec,
                                                   const std::vector<NewItem>& items, const float* vectors) {
  validate_spec(spec, dir);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->spec = spec;
  impl->writable = true;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the index directory: {}", dir, ec.message()));
  impl->lock_fd = take_lock(dir);
  const int64_t n = static_cast<int64_t>(items.size());
  const auto codes = encode(spec, vectors, n);
  // Train before touching the database: a bad index_method or too few vectors changes nothing.
  FaissStore store(spec);
  store.build(codes.data(), n);

  impl->db = std::make_unique<sqlite::Db>(impl->db_path(), true);
  auto& db = *impl->db;
  std::vector<int64_t> ids;
  {
    // The schema is created in the same transaction as the items and the meta rows (SQLite's DDL is
    // transactional): a build killed before it commits leaves a database without tables, which open()
    // reports as an interrupted first build, and which the next build fills.
    sqlite::Transaction tx(db);
    create_schema(db);
    if (meta_get(db, "format")) check_format(db, dir);
    const int64_t gen = meta_get(db, "generation") ? meta_int(db, "generation", dir) + 1 : 1;
    db.exec("DELETE FROM items; DELETE FROM removed; DELETE FROM sqlite_sequence WHERE name = 'items'");
    ids = insert_items(db, items, codes, code_bytes(spec), gen);
    meta_set(db, "format", kFormat);
    meta_set(db, "format_version", std::to_string(kIndexFormatVersion));
    meta_set(db, "spec", spec_to_json(spec).dump());
    meta_set(db, "generation", std::to_string(gen));
    meta_set(db, "base_generation", std::to_string(gen));
    tx.commit();
    impl->generation = impl->base_generation = gen;
  }
  store.add(codes.data(), ids.data(), n);
  impl->store = std::move(store);
  impl->load_items();
  std::unique_ptr<GalleryIndex> out(new GalleryIndex(std::move(impl)));
  out->save_snapshot();
  return out;
}

std::unique_ptr<GalleryIndex> GalleryIndex::open(const std::string& dir, bool writable) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->writable = writable;
  if (!fs::exists(impl->db_path()))
    throw Error(fmt::format("{}: not a featlearn index (no {}); build one with `featlearn index build -c CFG`", dir,
                            kDbFile));
  if (writable) impl->lock_fd = take_lock(dir);
  impl->db = std::make_unique<sqlite::Db>(impl->db_path(), false);
  auto& db = *impl->db;
  if (!has_committed_build(db))
    throw Error(fmt::format("{}: the index's first build was interrupted before it committed (no item was "
                            "stored); build it again (featlearn index build, IndexProcess.index_operation: new)",
                            dir));
  check_format(db, dir);
  {
    // One read transaction: the generation, items and replay log agree with each other.
    db.exec("BEGIN");
    try {
      impl->spec = spec_from_json(meta_get(db, "spec").value_or(""), dir);
      impl->generation = meta_int(db, "generation", dir);
      impl->base_generation = meta_int(db, "base_generation", dir);
      impl->load_items();
      FaissStore st(impl->spec);
      int64_t snap_gen = -1, snap_base = -1;
      std::string why;
      bool ok = FaissStore::load(impl->snapshot_path(), impl->spec, &st, &snap_gen, &snap_base, &why);
      if (ok && (snap_base != impl->base_generation || snap_gen > impl->generation)) ok = false;
      if (ok) {
        impl->replay(st, snap_gen);
        ok = st.live() == static_cast<int64_t>(impl->items.size());
      }
      if (ok) {
        impl->snapshot_generation = snap_gen;
      } else {
        st = impl->rebuild_store(impl->spec);
        impl->snapshot_generation = -1;
      }
      impl->store = std::move(st);
      db.exec("COMMIT");
    } catch (...) {
      try {
        db.exec("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
  }
  std::unique_ptr<GalleryIndex> out(new GalleryIndex(std::move(impl)));
  if (writable && out->snapshot_stale() && out->impl_->snapshot_generation < 0) out->save_snapshot();
  return out;
}

std::vector<int64_t> GalleryIndex::add(const std::vector<NewItem>& items, const float* vectors) {
  auto& m = *impl_;
  m.require_writable();
  const int64_t n = static_cast<int64_t>(items.size());
  if (n == 0) return {};
  const auto codes = encode(m.spec, vectors, n);
  std::lock_guard<std::mutex> wl(m.write_mu);
  std::vector<int64_t> ids;
  const int64_t gen = m.commit_generation([&](int64_t g) {
    ids = insert_items(*m.db, items, codes, code_bytes(m.spec), g);
    return true;
  });
  std::unique_lock<std::shared_mutex> ml(m.mem_mu);
  m.store.add(codes.data(), ids.data(), n);
  for (int64_t i = 0; i < n; ++i)
    m.items[ids[static_cast<size_t>(i)]] = {items[static_cast<size_t>(i)].path, items[static_cast<size_t>(i)].label};
  m.generation = gen;
  return ids;
}

int64_t GalleryIndex::remove(const std::vector<int64_t>& ids) {
  auto& m = *impl_;
  m.require_writable();
  std::lock_guard<std::mutex> wl(m.write_mu);
  std::vector<int64_t> gone;
  const int64_t gen = m.commit_generation([&](int64_t g) {
    sqlite::Stmt del(*m.db, "DELETE FROM items WHERE id = ?");
    sqlite::Stmt log(*m.db, "INSERT INTO removed(id, gen) VALUES(?, ?)");
    for (const auto id : ids) {
      del.bind(1, id);
      del.run();
      if (m.db->changes() > 0) {
        log.bind(1, id).bind(2, g);
        log.run();
        gone.push_back(id);
      }
    }
    return !gone.empty();  // nothing removed: rolled back, no new generation
  });
  if (gen == 0) return 0;
  std::unique_lock<std::shared_mutex> ml(m.mem_mu);
  m.store.remove(gone);
  for (const auto id : gone) m.items.erase(id);
  m.generation = gen;
  if (m.store.wants_compaction()) {
    std::lock_guard<std::mutex> dl(m.db_mu);
    m.store = m.rebuild_store(m.spec);
  }
  return static_cast<int64_t>(gone.size());
}

namespace {
// `sql` selects ids with one text parameter.
std::vector<int64_t> select_ids(sqlite::Db& db, std::mutex& mu, const char* sql, const std::string& value) {
  std::lock_guard<std::mutex> dl(mu);
  sqlite::Stmt st(db, sql);
  st.bind(1, value);
  std::vector<int64_t> out;
  while (st.step()) out.push_back(st.int64(0));
  return out;
}
}  // namespace

std::vector<int64_t> GalleryIndex::ids_with_path(const std::string& path) const {
  return select_ids(*impl_->db, impl_->db_mu, "SELECT id FROM items WHERE path = ? ORDER BY id", path);
}

std::vector<int64_t> GalleryIndex::ids_with_label(const std::string& label) const {
  return select_ids(*impl_->db, impl_->db_mu, "SELECT id FROM items WHERE label = ? ORDER BY id", label);
}

std::vector<int64_t> GalleryIndex::ids() const {
  std::shared_lock<std::shared_mutex> ml(impl_->mem_mu);
  std::vector<int64_t> out;
  out.reserve(impl_->items.size());
  for (const auto& kv : impl_->items) out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<ItemMeta> GalleryIndex::get(int64_t id) const {
  std::lock_guard<std::mutex> dl(impl_->db_mu);
  sqlite::Stmt st(*impl_->db, "SELECT path, label, extra FROM items WHERE id = ?");
  st.bind(1, id);
  if (!st.step()) return std::nullopt;
  return ItemMeta{id, st.text(0), st.text(1), st.text(2)};
}

std::vector<float> GalleryIndex::vector(int64_t id) const {
  std::lock_guard<std::mutex> dl(impl_->db_mu);
  sqlite::Stmt st(*impl_->db, "SELECT vec FROM items WHERE id = ?");
  st.bind(1, id);
  if (!st.step()) return {};
  const auto code = st.blob(0);
  if (static_cast<int64_t>(code.size()) != code_bytes(impl_->spec)) return {};
  return decode(impl_->spec, code.data());
}

std::vector<std::vector<SearchHit>> GalleryIndex::search(const float* queries, int64_t nq,
                                                         const SearchOptions& opt) const {
  auto& m = *impl_;
  if (opt.top_k <= 0) throw Error(fmt::format("top_k must be positive, got {}", opt.top_k));
  const auto codes = encode(m.spec, queries, nq);
  std::vector<std::vector<std::pair<int64_t, float>>> raw;
  std::shared_lock<std::shared_mutex> ml(m.mem_mu);
  if (opt.exact) {
    std::lock_guard<std::mutex> el(m.exact_mu);
    if (!m.exact || m.exact_generation != m.generation) {
      IndexSpec flat = m.spec;
      flat.index_method = "Flat";
      std::lock_guard<std::mutex> dl(m.db_mu);
      m.exact = std::make_unique<FaissStore>(m.rebuild_store(flat));
      m.exact_generation = m.generation;
    }
    raw = m.exact->search(codes.data(), nq, opt);
  } else {
    raw = m.store.search(codes.data(), nq, opt);
  }
  std::vector<std::vector<SearchHit>> out;
  out.reserve(raw.size());
  for (const auto& r : raw) out.push_back(m.to_hits(r, opt));
  return out;
}

void GalleryIndex::save_snapshot() {
  auto& m = *impl_;
  m.require_writable();
  std::lock_guard<std::mutex> wl(m.write_mu);
  int64_t gen = 0;
  {
    std::shared_lock<std::shared_mutex> ml(m.mem_mu);
    gen = m.generation;
    m.store.save(m.snapshot_path(), gen, m.base_generation);
  }
  {
    std::lock_guard<std::mutex> dl(m.db_mu);
    sqlite::Stmt prune(*m.db, "DELETE FROM removed WHERE gen <= ?");
    prune.bind(1, gen);
    prune.run();
    // Fold the write-ahead log into the database and truncate it (after a large build it is as big as the data).
    m.db->exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  m.snapshot_generation = gen;
}

std::string GalleryIndex::faiss_type() const {
  std::shared_lock<std::shared_mutex> ml(impl_->mem_mu);
  return impl_->store.type_name();
}

bool GalleryIndex::snapshot_stale() const {
  std::shared_lock<std::shared_mutex> ml(impl_->mem_mu);
  return impl_->snapshot_generation != impl_->generation;
}

IndexInfo GalleryIndex::info() const {
  auto& m = *impl_;
  IndexInfo r;
  r.dir = m.dir;
  r.format_version = kIndexFormatVersion;
  r.spec = m.spec;
  std::shared_lock<std::shared_mutex> ml(m.mem_mu);
  std::lock_guard<std::mutex> dl(m.db_mu);
  r.format_version = meta_int(*m.db, "format_version", m.dir);
  r.generation = m.generation;
  r.snapshot_generation = m.snapshot_generation;
  r.faiss_positions = m.store.positions();
  r.dead_positions = m.store.dead();
  r.faiss_type = m.store.type_name();
  for (const auto& e : fs::directory_iterator(m.dir))
    if (e.is_regular_file()) r.size_bytes += static_cast<int64_t>(e.file_size());
  // Consistency: the same ids on both sides, and the same vectors wherever FAISS can give them back.
  std::string problem;
  int64_t n = 0, compared = 0;
  sqlite::Stmt st(*m.db, "SELECT id, vec FROM items ORDER BY id");
  std::vector<uint8_t> code;
  while (st.step()) {
    ++n;
    const int64_t id = st.int64(0);
    if (!m.store.contains(id)) {
      if (problem.empty()) problem = fmt::format("item {} is in the database but not in the FAISS index", id);
      continue;
    }
    if (m.store.reconstruct(id, &code)) {
      ++compared;
      size_t len = 0;
      const void* p = st.blob_ptr(1, &len);
      if (len != code.size() || std::memcmp(p, code.data(), len) != 0) {
        if (problem.empty()) problem = fmt::format("item {}: the FAISS vector differs from the stored one", id);
      }
    }
  }
  r.items = n;
  if (problem.empty() && m.store.live() != n)
    problem = fmt::format("FAISS holds {} live vectors, the database {} items", m.store.live(), n);
  if (problem.empty() && static_cast<int64_t>(m.items.size()) != n)
    problem = fmt::format("{} items in memory, {} in the database", m.items.size(), n);
  r.consistent = problem.empty();
  r.problem = problem.empty() && compared < n ? fmt::format("ids checked; {} of {} vectors compared (this FAISS "
                                                            "index type cannot return the others)",
                                                            compared, n)
                                              : problem;
  return r;
}

void GalleryIndex::check_model(const std::string& fingerprint, int64_t dim, const std::string& preprocess_yaml,
                               const std::string& model_dir) const {
  const auto& s = impl_->spec;
  if (s.model_fingerprint.empty())
    throw Error(fmt::format("{}: this index holds vectors added without a model; search it by vector (serve "
                            "--index-dir, POST /search with {{\"vector\": [...]}})",
                            impl_->dir));
  if (fingerprint != s.model_fingerprint)
    throw Error(fmt::format("{}: the index was built with model {} ({}), but {} is model {}; features of another "
                            "model are not comparable. Rebuild the index with this model (IndexProcess."
                            "index_operation: new) or use the model it was built with",
                            impl_->dir, s.model_fingerprint, s.model_dir, model_dir, fingerprint));
  if (dim != s.dim)
    throw Error(fmt::format("{}: the index holds {}-dimensional vectors but the model gives {}", impl_->dir, s.dim,
                            dim));
  if (preprocess_yaml != s.preprocess_yaml)
    throw Error(fmt::format("{}: the index was built with other preprocessing (RecPreProcess.transform_ops):\n{}\n"
                            "but this config gives:\n{}\nUse the same transform_ops or rebuild the index",
                            impl_->dir, s.preprocess_yaml, preprocess_yaml));
}

IndexSpec read_index_spec(const std::string& dir) {
  const auto path = (fs::path(dir) / kDbFile).string();
  if (!fs::exists(path)) throw Error(fmt::format("{}: not a featlearn index (no {})", dir, kDbFile));
  sqlite::Db db(path, false);
  check_format(db, dir);
  return spec_from_json(meta_get(db, "spec").value_or(""), dir);
}

}  // namespace featlearn
