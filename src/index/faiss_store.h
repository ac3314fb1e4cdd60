// The FAISS side of a gallery index (src/index only): one float or binary FAISS index holding vectors at
// sequential positions, the position -> item id map, dead positions, search with skipping of dead positions,
// and (de)serialization of the snapshot file. See docs/index.md.
#pragma once
#include <featlearn/index/gallery_index.h>

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace faiss {
struct Index;
struct IndexBinary;
}  // namespace faiss

namespace featlearn {

class FaissStore {
 public:
  FaissStore(const IndexSpec& spec);
  ~FaissStore();
  FaissStore(FaissStore&&) noexcept;
  FaissStore& operator=(FaissStore&&) noexcept;

  // Builds an empty index for `n_train` training vectors `train` (IVF is trained on them; others ignore them).
  void build(const uint8_t* train, int64_t n_train);
  // Appends vectors (codes: float32 [n, dim] or packed bits [n, dim / 8]) for these ids.
  void add(const uint8_t* codes, const int64_t* ids, int64_t n);
  // Marks the positions of these ids dead; returns how many were live.
  int64_t remove(const std::vector<int64_t>& ids);
  // Top-k (item id, score) per query. `queries` are codes as in add().
  std::vector<std::vector<std::pair<int64_t, float>>> search(const uint8_t* queries, int64_t nq,
                                                             const SearchOptions& opt) const;
  // Rebuild wanted: too many dead positions for the way this index skips them.
  bool wants_compaction() const;

  int64_t live() const { return static_cast<int64_t>(pos_of_.size()); }
  int64_t positions() const { return static_cast<int64_t>(ids_.size()); }
  int64_t dead() const { return positions() - live(); }
  bool contains(int64_t id) const { return pos_of_.count(id) != 0; }
  const std::vector<int64_t>& position_ids() const { return ids_; }
  // The stored code of a live id, when the FAISS index can reconstruct it (false otherwise).
  bool reconstruct(int64_t id, std::vector<uint8_t>* code) const;
  std::string type_name() const;
  int64_t code_size() const;

  // Snapshot file: header (magic, version, generation, base generation, positions + ids), FAISS payload,
  // xxHash64 of everything before it. Written atomically.
  void save(const std::string& path, int64_t generation, int64_t base_generation) const;
  // Loads a snapshot; false (with `why`) when it is missing, damaged or does not match `spec`.
  static bool load(const std::string& path, const IndexSpec& spec, FaissStore* out, int64_t* generation,
                   int64_t* base_generation, std::string* why);

 private:
  IndexSpec spec_;
  bool binary_ = false;
  std::unique_ptr<faiss::Index> f_;
  std::unique_ptr<faiss::IndexBinary> b_;
  std::vector<int64_t> ids_;                    // position -> item id (-1: dead)
  std::unordered_map<int64_t, int64_t> pos_of_;  // live item id -> position
  // Guards search breadths that FAISS reads from the index itself (HNSW efSearch, binary IVF nprobe): searches
  // with the current value share it, a search that needs another value takes it alone.
  std::unique_ptr<std::shared_mutex> knob_mu_;
  template <class Differs, class Set, class Run>
  void with_knobs(const Differs& differs, const Set& set, const Run& run) const;
};

// The FAISS factory string for an index_method ("HNSW32" -> "HNSW32", "IVF" -> "IVF<nlist>,Flat",
// "Flat" -> "Flat"; binary: "BHNSW32", "BIVF<nlist>", "BFlat"; anything else is passed to FAISS as is).
std::string faiss_factory_string(const IndexSpec& spec, int64_t n_train);

}  // namespace featlearn
