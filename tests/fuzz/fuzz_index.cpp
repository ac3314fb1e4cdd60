// Target `index`: an index directory (docs/index.md, "On-disk format"): the gallery.db tables (meta = the
// manifest: format, format_version, spec, generation, base_generation; items; removed) and the vectors.faiss
// snapshot, opened as `featlearn index search/info` and `featlearn serve` open it, then searched and checked.
//
// The database is SQLite, whose file format is SQLite's concern, so the input describes its rows and the
// target writes them into a copy of a real (empty) gallery.db. Input, sections separated by a line `#--`:
//   0  one mode line (`ro` opens read-only; `rw` opens writable, adds and removes an item), then meta rows
//      `key=value`
//   1  items rows `id|added_gen|path|label|extra|vec` (vec: the stored code, in hex)
//   2  removed rows `id|gen`
//   3  vectors.faiss without its last 8 bytes: the target appends the xxHash64 the reader checks, so inputs
//      reach the header and the FAISS payload (absent section: no snapshot)
#include "fuzz_common.h"

#include <featlearn/index/gallery_index.h>

#include <sqlite3.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>
#include <sstream>

namespace fs = std::filesystem;

namespace featlearn::fuzz {
namespace index_target {

const char* const kSectionSep = "\n#--\n";
std::string g_template_db;  // an empty gallery.db with the product's schema

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t p = s.find(sep, start);
    if (p == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, p - start));
    start = p + 1;
  }
}

bool to_int(const std::string& s, int64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *v = std::strtoll(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0;
}

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    const char b[3] = {h[i], h[i + 1], 0};
    out.push_back(static_cast<char>(std::strtol(b, nullptr, 16)));
  }
  return out;
}

std::string to_hex(const void* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<const uint8_t*>(p)[i];
    out += d[b >> 4];
    out += d[b & 15];
  }
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

struct Sql {
  sqlite3* db = nullptr;
  explicit Sql(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) std::abort();
  }
  ~Sql() { sqlite3_close(db); }
  void exec(const char* q) {
    if (sqlite3_exec(db, q, nullptr, nullptr, nullptr) != SQLITE_OK) {
      std::fprintf(stderr, "fuzz_index: %s: %s\n", q, sqlite3_errmsg(db));
      std::abort();
    }
  }
  // Runs `q` with text/int/blob parameters; false when SQLite refuses the row (a duplicate id, ...).
  bool run(const char* q, const std::vector<std::pair<char, std::string>>& args) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, q, -1, &st, nullptr) != SQLITE_OK) std::abort();
    for (size_t i = 0; i < args.size(); ++i) {
      const int k = static_cast<int>(i + 1);
      const auto& [type, v] = args[i];
      int64_t n = 0;
      if (type == 'i' && to_int(v, &n)) sqlite3_bind_int64(st, k, n);
      else if (type == 'b') sqlite3_bind_blob(st, k, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      else sqlite3_bind_text(st, k, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    }
    const bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
  }
};

void write_index_dir(const std::string& dir, const std::vector<std::string>& sec) {
  fs::create_directories(dir);
  const std::string db_path = dir + "/gallery.db";
  fs::copy_file(g_template_db, db_path, fs::copy_options::overwrite_existing);
  {
    Sql db(db_path);
    db.exec("BEGIN");
    db.exec("DELETE FROM meta; DELETE FROM items; DELETE FROM removed");
    const auto meta_lines = split(sec[0], '\n');
    for (size_t i = 1; i < meta_lines.size(); ++i) {
      const auto eq = meta_lines[i].find('=');
      if (eq == std::string::npos) continue;
      db.run("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
             {{'t', meta_lines[i].substr(0, eq)}, {'t', meta_lines[i].substr(eq + 1)}});
    }
    if (sec.size() > 1)
      for (const auto& l : split(sec[1], '\n')) {
        const auto f = split(l, '|');
        if (f.size() != 6) continue;
        db.run("INSERT INTO items(id, added_gen, path, label, extra, vec) VALUES(?, ?, ?, ?, ?, ?)",
               {{'i', f[0]}, {'i', f[1]}, {'t', f[2]}, {'t', f[3]}, {'t', f[4]}, {'b', from_hex(f[5])}});
      }
    if (sec.size() > 2)
      for (const auto& l : split(sec[2], '\n')) {
        const auto f = split(l, '|');
        if (f.size() == 2) db.run("INSERT INTO removed(id, gen) VALUES(?, ?)", {{'i', f[0]}, {'i', f[1]}});
      }
    db.exec("COMMIT");
  }
  if (sec.size() > 3) {
    std::string snap = sec[3];
    const uint64_t h = XXH64(snap.data(), snap.size(), 0);
    snap.append(reinterpret_cast<const char*>(&h), 8);
    write_file(dir + "/vectors.faiss", snap);
  }
}

void exercise(GalleryIndex& index, bool writable) {
  const IndexSpec& spec = index.spec();
  (void)index.info();
  const auto ids = index.ids();
  if (!ids.empty()) {
    (void)index.get(ids.front());
    (void)index.vector(ids.back());
  }
  if (spec.dim <= 0 || spec.dim > 4096) return;  // the query buffer is the harness's
  std::vector<float> q(static_cast<size_t>(spec.dim * 2));
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>((i % 5)) - 2.0f;
  SearchOptions opt;
  opt.top_k = 3;
  (void)index.search(q.data(), 2, opt);
  opt.exact = true;
  opt.top_k = 100;
  (void)index.search(q.data(), 1, opt);
  if (writable) {
    const auto added = index.add({NewItem{"new.jpg", "7", ""}}, q.data());
    index.remove(added);
    if (!ids.empty()) index.remove({ids.front()});
  }
}

}  // namespace index_target

void index_init() {
  using namespace index_target;
  const std::string dir = scratch_dir() + "/keep_index_template";
  IndexSpec spec;
  spec.index_method = "Flat";
  spec.dim = 4;
  const float v[4] = {1, 0, 0, 0};
  {
    auto index = GalleryIndex::create(dir, spec, {NewItem{"a.jpg", "0", ""}}, v);
  }
  // The reader's checksum must be the one this target appends.
  const std::string snap = read_all(dir + "/vectors.faiss");
  uint64_t stored = 0;
  if (snap.size() > 8) std::memcpy(&stored, snap.data() + snap.size() - 8, 8);
  if (snap.size() <= 8 || XXH64(snap.data(), snap.size() - 8, 0) != stored) {
    std::fprintf(stderr, "fuzz_index: vectors.faiss no longer ends in xxHash64(seed 0); update fuzz_index.cpp\n");
    std::abort();
  }
  g_template_db = scratch_dir() + "/keep_template_gallery.db";
  fs::copy_file(dir + "/gallery.db", g_template_db, fs::copy_options::overwrite_existing);
  Sql db(g_template_db);
  db.exec("DELETE FROM meta; DELETE FROM items; DELETE FROM removed");
}

void index_run(const uint8_t* data, size_t size) {
  using namespace index_target;
  const auto sec = split_sections(data, size, kSectionSep, 4);
  const bool writable = sec[0].rfind("rw", 0) == 0;
  reset_scratch();
  const std::string dir = scratch_dir() + "/index";
  write_index_dir(dir, sec);
  expect_user_errors("read_index_spec", [&] { (void)read_index_spec(dir); });
  expect_user_errors("GalleryIndex::open", [&] {
    auto index = GalleryIndex::open(dir, writable);
    exercise(*index, writable);
  });
}

// Seeds: real index directories written by GalleryIndex::create / add / remove, in the input format above.
void index_write_seeds(const std::string& out) {
  using namespace index_target;
  struct Case {
    const char* name;
    const char* method;
    IndexMetric metric;
    int64_t dim;
  };
  const Case cases[] = {{"flat_ip", "Flat", IndexMetric::kInnerProduct, 4},
                        {"hnsw_l2", "HNSW8", IndexMetric::kL2, 4},
                        {"ivf_ip", "IVF2", IndexMetric::kInnerProduct, 4},
                        {"hamming_flat", "Flat", IndexMetric::kHamming, 16}};
  for (const auto& c : cases) {
    const std::string dir = scratch_dir() + "/seed_" + c.name;
    fs::remove_all(dir);
    IndexSpec spec;
    spec.index_method = c.method;
    spec.metric = c.metric;
    spec.dim = c.dim;
    std::vector<float> v(static_cast<size_t>(8 * c.dim));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 37) % 11) - 5.0f;
    std::vector<NewItem> items;
    for (int i = 0; i < 8; ++i) items.push_back({"g/" + std::to_string(i) + ".jpg", std::to_string(i % 3), "x"});
    {
      auto index = GalleryIndex::create(dir, spec, items, v.data());
      index->remove({2});
      index->add({NewItem{"late.jpg", "9", ""}}, v.data());
      index->save_snapshot();
      index->remove({3});  // after the snapshot: replayed from `removed` on open
    }
    std::string meta = "ro", items_rows, removed_rows;
    {
      Sql db(dir + "/gallery.db");
      auto rows = [&](const char* q, const std::function<void(sqlite3_stmt*)>& f) {
        sqlite3_stmt* st = nullptr;
        sqlite3_prepare_v2(db.db, q, -1, &st, nullptr);
        while (sqlite3_step(st) == SQLITE_ROW) f(st);
        sqlite3_finalize(st);
      };
      auto col = [](sqlite3_stmt* st, int i) {
        const auto* p = sqlite3_column_text(st, i);
        return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
      };
      auto line = [](std::string& to, const std::string& row) { to += (to.empty() ? "" : "\n") + row; };
      rows("SELECT key, value FROM meta", [&](sqlite3_stmt* st) { line(meta, col(st, 0) + "=" + col(st, 1)); });
      rows("SELECT id, added_gen, path, label, extra, vec FROM items", [&](sqlite3_stmt* st) {
        line(items_rows, col(st, 0) + "|" + col(st, 1) + "|" + col(st, 2) + "|" + col(st, 3) + "|" + col(st, 4) + "|" +
                             to_hex(sqlite3_column_blob(st, 5), static_cast<size_t>(sqlite3_column_bytes(st, 5))));
      });
      rows("SELECT id, gen FROM removed", [&](sqlite3_stmt* st) { line(removed_rows, col(st, 0) + "|" + col(st, 1)); });
    }
    const std::string snap = read_all(dir + "/vectors.faiss");
    const std::string sep = kSectionSep;
    const std::string text = meta + sep + items_rows + sep + removed_rows + sep + snap.substr(0, snap.size() - 8);
    write_file(out + "/" + c.name, text);
  }
}

}  // namespace featlearn::fuzz
