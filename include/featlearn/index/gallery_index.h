// A persistent, crash-safe gallery index: vectors + metadata (docs/index.md).
//
// Layout of an index directory:
//   gallery.db      SQLite (WAL): the source of truth. Tables `meta` (format version, IndexSpec, generation),
//                   `items` (id, path, label, extra, added_gen, vector), `removed` (id, gen: removals since
//                   the last snapshot, for replay).
//   vectors.faiss   a derived snapshot of the FAISS index tagged with the database generation it reflects and
//                   the FAISS-position -> item-id map. On open it is replayed up to the database's
//                   generation (adds and removals after its tag) or rebuilt from the stored vectors when it is
//                   missing, damaged or does not match.
//   LOCK            flock()ed exclusively by a writer (one writing process at a time; readers need no lock).
// Every operation (create, add, remove) is one SQLite transaction that also bumps the generation, so it is
// applied whole or not at all; a kill -9 at any moment leaves an index that opens with vectors and metadata
// agreeing.
//
// FAISS holds items at sequential positions. Removal marks the position dead (every FAISS index type,
// HNSW included); float searches skip dead positions with an IDSelector, binary searches over-fetch and
// filter. When dead positions pass a threshold the FAISS index is rebuilt from the stored vectors (IVF
// retrained), so FAISS's own remove_ids (absent on HNSW, broken under IndexIDMap2 over IVF) is never used.
//
// Thread safety: search/get/info may run concurrently; add/remove/save_snapshot are serialized against them.
#pragma once
#include <featlearn/common/error.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

constexpr int64_t kIndexFormatVersion = 1;

enum class IndexMetric { kInnerProduct, kL2, kHamming };
// "IP" | "L2" | "hamming" (case-insensitive for ip/l2) -> metric; throws Error listing the valid names.
IndexMetric parse_index_metric(const std::string& name, const std::string& where);
std::string index_metric_name(IndexMetric m);

// What an index is, fixed at creation (stored in the database).
struct IndexSpec {
  std::string index_method = "HNSW32";  // HNSW<M> | IVF | IVF<n> | Flat | a FAISS factory string
  IndexMetric metric = IndexMetric::kInnerProduct;
  int64_t dim = 0;                 // floats per vector; bits for hamming (multiple of 8)
  int64_t nlist = 0;               // IVF lists; 0 -> PaddleClas's rule min(max(n / 8, 1), 65536) at build
  int64_t ef_construction = 40;    // HNSW build breadth (FAISS default 40)
  // The model the vectors come from ("" for a vector-only index), and how images were preprocessed.
  std::string model_fingerprint;
  std::string model_dir;           // informational
  std::string preprocess_yaml;     // transform_ops as YAML ("" for vector-only)
  std::string feature_binarize;    // "" | sign | round (the model's)
};

struct SearchOptions {
  int64_t top_k = 5;
  // IP: keep score >= score_thres. L2: keep distance <= score_thres. Hamming: keep distance <= hamming_radius.
  std::optional<float> score_thres;
  std::optional<float> hamming_radius;
  int64_t ef_search = 128;  // HNSW search breadth (raised to top_k when smaller)
  int64_t nprobe = 16;      // IVF lists visited (capped at nlist)
  bool exact = false;       // brute force over the stored vectors, whatever the index type
};

struct ItemMeta {
  int64_t id = -1;
  std::string path;   // as given in the list (relative to image_root), or "" for a served upload
  std::string label;
  std::string extra;  // further list fields, joined with the delimiter
};

struct NewItem {
  std::string path;
  std::string label;
  std::string extra;
};

struct SearchHit {
  int64_t id = -1;
  float score = 0;  // IP: inner product; L2: squared distance; hamming: bit distance
  std::string path;
  std::string label;
};

struct IndexInfo {
  std::string dir;
  int64_t format_version = 0;
  int64_t items = 0;
  int64_t generation = 0;
  int64_t snapshot_generation = -1;  // -1: no usable snapshot on disk
  int64_t faiss_positions = 0;       // live + dead
  int64_t dead_positions = 0;
  int64_t size_bytes = 0;            // all files in the directory
  std::string faiss_type;            // e.g. "IndexHNSWFlat"
  IndexSpec spec;
  bool consistent = false;           // FAISS live ids == database ids, vectors equal
  std::string problem;               // why not consistent
};

class GalleryIndex {
 public:
  // Creates (or replaces, in one transaction: "new") the index in `dir` with these items.
  // `vectors` is [n, spec.dim] float32 row-major (for hamming: n x bits, a bit is set where the value > 0).
  static std::unique_ptr<GalleryIndex> create(const std::string& dir, const IndexSpec& spec,
                                              const std::vector<NewItem>& items, const float* vectors);
  // Opens an existing index. `writable` takes the directory's writer lock (Error when another process holds
  // it). Throws Error for a missing directory, an unknown format version or a damaged database.
  static std::unique_ptr<GalleryIndex> open(const std::string& dir, bool writable);
  ~GalleryIndex();

  const IndexSpec& spec() const;
  const std::string& dir() const;
  int64_t size() const;  // live items

  // Appends items (one transaction); returns their new ids in order. Vectors as in create().
  std::vector<int64_t> add(const std::vector<NewItem>& items, const float* vectors);
  // Removes the given ids (one transaction); unknown ids are ignored. Returns how many were removed.
  int64_t remove(const std::vector<int64_t>& ids);
  // Ids of the items with this path / this label (for PaddleClas-style removal by list lines or labels).
  std::vector<int64_t> ids_with_path(const std::string& path) const;
  std::vector<int64_t> ids_with_label(const std::string& label) const;
  std::optional<ItemMeta> get(int64_t id) const;
  // Every live id, ascending.
  std::vector<int64_t> ids() const;
  // The stored vector of an item ([dim] floats; 0/1 per bit for hamming), empty when unknown.
  std::vector<float> vector(int64_t id) const;

  // [nq, dim] queries -> per query up to top_k hits, best first, after the score threshold.
  std::vector<std::vector<SearchHit>> search(const float* queries, int64_t nq, const SearchOptions& opt) const;

  // Writes vectors.faiss for the current generation (atomically). Called after CLI operations and
  // periodically by the service; never needed for durability (the database is the truth).
  void save_snapshot();
  // True when writes happened since the last snapshot.
  bool snapshot_stale() const;
  // Full consistency check (reads every stored vector).
  IndexInfo info() const;
  // The FAISS class in use, e.g. "IndexHNSWFlat" (cheap).
  std::string faiss_type() const;

  // Errors unless `fingerprint` / `dim` / `preprocess_yaml` match the index's (names what differs).
  void check_model(const std::string& fingerprint, int64_t dim, const std::string& preprocess_yaml,
                   const std::string& model_dir) const;

 private:
  struct Impl;
  explicit GalleryIndex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads only the spec of an index directory (no FAISS load); Error when it is not an index.
IndexSpec read_index_spec(const std::string& dir);

}  // namespace featlearn
