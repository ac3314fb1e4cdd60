#include "faiss_store.h"

#include <faiss/IndexBinary.h>
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHNSW.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <fmt/format.h>
#include <featlearn/engine/checksum.h>

#include <featlearn/common/atomic_file.h>
#include <featlearn/common/error.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <shared_mutex>

namespace featlearn {

namespace {

constexpr char kMagic[8] = {'F', 'L', 'F', 'A', 'I', 'S', 'S', '\n'};
constexpr uint32_t kSnapshotVersion = 1;

// Positions whose id is >= 0 are live; FAISS skips the others during the search itself.
struct LiveSelector : faiss::IDSelector {
  const std::vector<int64_t>* ids;
  explicit LiveSelector(const std::vector<int64_t>* v) : ids(v) {}
  bool is_member(faiss::Index::idx_t pos) const override {
    return pos >= 0 && static_cast<size_t>(pos) < ids->size() && (*ids)[static_cast<size_t>(pos)] >= 0;
  }
};

// faiss::IOReader over bytes already in memory (VectorIOReader would copy them once more).
struct SpanReader : faiss::IOReader {
  const uint8_t* p;
  size_t n, at = 0;
  SpanReader(const uint8_t* data, size_t size) : p(data), n(size) {}
  size_t operator()(void* dst, size_t size, size_t nitems) override {
    if (size == 0) return nitems;
    const size_t can = std::min(nitems, (n - at) / size);
    if (can == 0) return 0;  // FAISS reads empty vectors into a null buffer
    std::memcpy(dst, p + at, can * size);
    at += can * size;
    return can;
  }
};

template <class T>
void put(std::vector<uint8_t>& out, const T& v) {
  const auto* b = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), b, b + sizeof(T));
}

template <class T>
bool take(const std::vector<uint8_t>& in, size_t& at, T* v) {
  if (at + sizeof(T) > in.size()) return false;
  std::memcpy(v, in.data() + at, sizeof(T));
  at += sizeof(T);
  return true;
}

// FAISS trusts the indexes it reads: a snapshot that passes the checksum but was written wrongly (or crafted)
// could make a search read outside FAISS's arrays. These checks cover what the index types featlearn builds
// rely on (sizes, the spec's dimension and metric, HNSW graph links); "" when the payload is consistent.
std::string check_hnsw(const faiss::HNSW& h, int64_t n) {
  const auto& cum = h.cum_nneighbor_per_level;
  if (static_cast<int64_t>(h.levels.size()) != n || static_cast<int64_t>(h.offsets.size()) != n + 1 || cum.empty() ||
      cum[0] != 0 || h.max_level < -1 || h.max_level + 2 > static_cast<int>(cum.size()))
    return "HNSW tables do not match the vector count";
  for (size_t l = 1; l < cum.size(); ++l)
    if (cum[l] < cum[l - 1]) return "HNSW neighbor counts decrease";
  if (n == 0) return h.entry_point == -1 ? "" : "HNSW entry point in an empty graph";
  if (h.entry_point < 0 || h.entry_point >= n || h.levels[static_cast<size_t>(h.entry_point)] != h.max_level + 1)
    return "HNSW entry point out of range";
  if (h.offsets[0] != 0 || h.offsets.back() != h.neighbors.size()) return "HNSW offsets do not match the links";
  for (int64_t i = 0; i < n; ++i) {
    const int level = h.levels[static_cast<size_t>(i)];
    if (level < 1 || level > h.max_level + 1) return "HNSW node level out of range";
    const size_t begin = h.offsets[static_cast<size_t>(i)], end = h.offsets[static_cast<size_t>(i) + 1];
    if (end < begin || end - begin != static_cast<size_t>(cum[static_cast<size_t>(level)]))
      return "HNSW offsets do not match the node levels";
    for (int l = 0; l < level; ++l)
      for (size_t k = begin + static_cast<size_t>(cum[static_cast<size_t>(l)]);
           k < begin + static_cast<size_t>(cum[static_cast<size_t>(l) + 1]); ++k) {
        const int64_t j = h.neighbors[k];
        if (j < -1 || j >= n || (j >= 0 && h.levels[static_cast<size_t>(j)] <= l)) return "HNSW link out of range";
      }
  }
  return "";
}

std::string check_float_payload(const faiss::Index* f, const IndexSpec& spec) {
  if (!f) return "no index";
  if (f->d != spec.dim) return fmt::format("FAISS index of dimension {} for an index of dimension {}", f->d, spec.dim);
  const auto metric = spec.metric == IndexMetric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
  if (f->metric_type != metric) return "FAISS index metric does not match the index spec";
  if (f->ntotal < 0) return "negative vector count";
  if (const auto* flat = dynamic_cast<const faiss::IndexFlatCodes*>(f)) {
    if (flat->code_size != static_cast<size_t>(f->d) * sizeof(float) ||
        flat->codes.size() != static_cast<size_t>(f->ntotal) * flat->code_size)
      return "flat codes do not match the vector count";
  } else if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(f)) {
    const std::string why = check_float_payload(hnsw->storage, spec);
    if (!why.empty()) return "HNSW storage: " + why;
    if (hnsw->storage->ntotal != f->ntotal) return "HNSW storage does not match the vector count";
    return check_hnsw(hnsw->hnsw, f->ntotal);
  } else if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(f)) {
    if (!ivf->quantizer || ivf->quantizer->d != f->d || ivf->quantizer->ntotal != static_cast<int64_t>(ivf->nlist) ||
        !ivf->invlists || ivf->invlists->nlist != ivf->nlist || ivf->invlists->code_size != ivf->code_size)
      return "IVF lists do not match their quantizer";
  }
  return "";
}

std::string check_binary_payload(const faiss::IndexBinary* b, const IndexSpec& spec) {
  if (!b) return "no index";
  if (b->d != spec.dim || b->code_size * 8 != b->d)
    return fmt::format("FAISS index of {} bits for an index of {} bits", b->d, spec.dim);
  if (b->ntotal < 0) return "negative vector count";
  if (const auto* flat = dynamic_cast<const faiss::IndexBinaryFlat*>(b)) {
    if (flat->xb.size() != static_cast<size_t>(b->ntotal) * static_cast<size_t>(b->code_size))
      return "flat codes do not match the vector count";
  } else if (const auto* hnsw = dynamic_cast<const faiss::IndexBinaryHNSW*>(b)) {
    const std::string why = check_binary_payload(hnsw->storage, spec);
    if (!why.empty()) return "HNSW storage: " + why;
    if (hnsw->storage->ntotal != b->ntotal) return "HNSW storage does not match the vector count";
    return check_hnsw(hnsw->hnsw, b->ntotal);
  } else if (const auto* ivf = dynamic_cast<const faiss::IndexBinaryIVF*>(b)) {
    if (!ivf->quantizer || ivf->quantizer->d != b->d || ivf->quantizer->ntotal != static_cast<int64_t>(ivf->nlist) ||
        !ivf->invlists || ivf->invlists->nlist != ivf->nlist ||
        ivf->invlists->code_size != static_cast<size_t>(b->code_size))
      return "IVF lists do not match their quantizer";
  }
  return "";
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

std::string faiss_factory_string(const IndexSpec& spec, int64_t n_train) {
  const bool binary = spec.metric == IndexMetric::kHamming;
  const std::string& m = spec.index_method;
  auto nlist = [&]() {
    const int64_t n = spec.nlist > 0 ? spec.nlist : std::min<int64_t>(std::max<int64_t>(n_train / 8, 1), 65536);
    return std::to_string(n);
  };
  if (m == "Flat") return binary ? "BFlat" : "Flat";
  if (m == "IVF") return binary ? "BIVF" + nlist() : "IVF" + nlist() + ",Flat";
  if (starts_with(m, "IVF") && all_digits(m.substr(3))) return binary ? "B" + m : m + ",Flat";
  if (starts_with(m, "HNSW") && all_digits(m.substr(4))) return binary ? "B" + m : m;
  return m;
}

FaissStore::FaissStore(const IndexSpec& spec)
    : spec_(spec), binary_(spec.metric == IndexMetric::kHamming), knob_mu_(std::make_unique<std::shared_mutex>()) {}
FaissStore::~FaissStore() = default;
FaissStore::FaissStore(FaissStore&&) noexcept = default;
FaissStore& FaissStore::operator=(FaissStore&&) noexcept = default;

int64_t FaissStore::code_size() const { return binary_ ? spec_.dim / 8 : spec_.dim * 4; }

void FaissStore::build(const uint8_t* train, int64_t n_train) {
  const std::string factory = faiss_factory_string(spec_, n_train);
  ids_.clear();
  pos_of_.clear();
  auto check_lists = [&](size_t nlist) {
    if (n_train < static_cast<int64_t>(nlist))
      throw Error(fmt::format("IndexProcess.index_method {} ({}) needs at least {} gallery vectors to train its "
                              "lists, got {}; lower IndexProcess.nlist or use Flat",
                              spec_.index_method, factory, nlist, n_train));
  };
  try {
    if (binary_) {
      b_.reset(faiss::index_binary_factory(static_cast<int>(spec_.dim), factory.c_str()));
      if (auto* h = dynamic_cast<faiss::IndexBinaryHNSW*>(b_.get()))
        h->hnsw.efConstruction = static_cast<int>(spec_.ef_construction);
      if (!b_->is_trained) {
        if (auto* ivf = dynamic_cast<faiss::IndexBinaryIVF*>(b_.get())) check_lists(ivf->nlist);
        b_->train(n_train, train);
      }
    } else {
      const auto metric = spec_.metric == IndexMetric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
      f_.reset(faiss::index_factory(static_cast<int>(spec_.dim), factory.c_str(), metric));
      if (auto* h = dynamic_cast<faiss::IndexHNSW*>(f_.get()))
        h->hnsw.efConstruction = static_cast<int>(spec_.ef_construction);
      if (!f_->is_trained) {
        if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(f_.get())) check_lists(ivf->nlist);
        if (n_train <= 0)
          throw Error(fmt::format("IndexProcess.index_method {} ({}) must be trained: build it with gallery vectors",
                                  spec_.index_method, factory));
        f_->train(n_train, reinterpret_cast<const float*>(train));
      }
    }
  } catch (const faiss::FaissException& e) {
    throw Error(fmt::format("IndexProcess.index_method '{}' (FAISS factory '{}'): {}", spec_.index_method, factory,
                            e.msg));
  }
}

void FaissStore::add(const uint8_t* codes, const int64_t* ids, int64_t n) {
  if (n <= 0) return;
  try {
    if (binary_)
      b_->add(n, codes);
    else
      f_->add(n, reinterpret_cast<const float*>(codes));
  } catch (const faiss::FaissException& e) {
    throw Error(fmt::format("FAISS add failed: {}", e.msg));
  }
  for (int64_t i = 0; i < n; ++i) {
    pos_of_[ids[i]] = static_cast<int64_t>(ids_.size());
    ids_.push_back(ids[i]);
  }
}

int64_t FaissStore::remove(const std::vector<int64_t>& ids) {
  int64_t n = 0;
  for (const auto id : ids) {
    auto it = pos_of_.find(id);
    if (it == pos_of_.end()) continue;
    ids_[static_cast<size_t>(it->second)] = -1;
    pos_of_.erase(it);
    ++n;
  }
  return n;
}

namespace {
bool selector_capable(const faiss::Index* f) {
  return dynamic_cast<const faiss::IndexFlat*>(f) || dynamic_cast<const faiss::IndexHNSW*>(f) ||
         dynamic_cast<const faiss::IndexIVF*>(f);
}
}  // namespace

template <class Differs, class Set, class Run>
void FaissStore::with_knobs(const Differs& differs, const Set& set, const Run& run) const {
  {
    std::shared_lock<std::shared_mutex> shared(*knob_mu_);
    if (!differs()) {
      run();  // searches with the breadth already set run concurrently
      return;
    }
  }
  std::unique_lock<std::shared_mutex> exclusive(*knob_mu_);
  set();
  run();
}

bool FaissStore::wants_compaction() const {
  const int64_t d = dead();
  if (!binary_ && selector_capable(f_.get())) return d > std::max<int64_t>(1024, positions() / 4);
  return d > std::max<int64_t>(1024, positions() / 100);
}

std::vector<std::vector<std::pair<int64_t, float>>> FaissStore::search(const uint8_t* queries, int64_t nq,
                                                                       const SearchOptions& opt) const {
  std::vector<std::vector<std::pair<int64_t, float>>> out(static_cast<size_t>(nq));
  const int64_t k = std::min<int64_t>(opt.top_k, live());
  if (k <= 0 || nq <= 0) return out;
  const int64_t d = dead();
  LiveSelector live_sel(&ids_);
  int64_t fetch = k;
  std::vector<faiss::Index::idx_t> labels;
  try {
    if (!binary_) {
      const bool sel_ok = selector_capable(f_.get());
      if (!sel_ok) fetch = std::min<int64_t>(k + d, positions());
      faiss::SearchParameters plain;
      faiss::SearchParametersHNSW hnsw_params;
      faiss::SearchParametersIVF ivf;
      faiss::SearchParameters* params = nullptr;
      auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(f_.get());
      if (hnsw) {
        // FAISS 1.7.3's IndexHNSW::search takes the selector from the parameters but efSearch from the index.
        hnsw_params.efSearch = static_cast<int>(std::max<int64_t>(opt.ef_search, fetch));
        params = &hnsw_params;
      } else if (const auto* iv = dynamic_cast<const faiss::IndexIVF*>(f_.get())) {
        ivf.nprobe = static_cast<size_t>(std::clamp<int64_t>(opt.nprobe, 1, static_cast<int64_t>(iv->nlist)));
        params = &ivf;
      } else if (sel_ok) {
        params = &plain;
      }
      if (params && d > 0 && sel_ok) params->sel = &live_sel;
      std::vector<float> dist(static_cast<size_t>(nq * fetch));
      labels.resize(static_cast<size_t>(nq * fetch));
      with_knobs([&] { return hnsw && hnsw->hnsw.efSearch != static_cast<int>(std::max<int64_t>(opt.ef_search, fetch)); },
                 [&] {
                   if (hnsw) hnsw->hnsw.efSearch = static_cast<int>(std::max<int64_t>(opt.ef_search, fetch));
                 },
                 [&] {
                   f_->search(nq, reinterpret_cast<const float*>(queries), fetch, dist.data(), labels.data(), params);
                 });
      for (int64_t q = 0; q < nq; ++q) {
        auto& r = out[static_cast<size_t>(q)];
        for (int64_t j = 0; j < fetch && static_cast<int64_t>(r.size()) < k; ++j) {
          const auto pos = labels[static_cast<size_t>(q * fetch + j)];
          if (pos < 0 || static_cast<size_t>(pos) >= ids_.size() || ids_[static_cast<size_t>(pos)] < 0) continue;
          r.emplace_back(ids_[static_cast<size_t>(pos)], dist[static_cast<size_t>(q * fetch + j)]);
        }
      }
    } else {
      fetch = std::min<int64_t>(k + d, positions());
      std::vector<int32_t> dist(static_cast<size_t>(nq * fetch));
      labels.resize(static_cast<size_t>(nq * fetch));
      // Binary indexes take no SearchParameters (FAISS 1.7.3): their breadth is set on the index.
      auto* h = dynamic_cast<faiss::IndexBinaryHNSW*>(b_.get());
      auto* iv = dynamic_cast<faiss::IndexBinaryIVF*>(b_.get());
      const int ef = static_cast<int>(std::max<int64_t>(opt.ef_search, fetch));
      const size_t np = iv ? static_cast<size_t>(std::clamp<int64_t>(opt.nprobe, 1, static_cast<int64_t>(iv->nlist))) : 0;
      with_knobs([&] { return (h && h->hnsw.efSearch != ef) || (iv && iv->nprobe != np); },
                 [&] {
                   if (h) h->hnsw.efSearch = ef;
                   if (iv) iv->nprobe = np;
                 },
                 [&] { b_->search(nq, queries, fetch, dist.data(), labels.data()); });
      for (int64_t q = 0; q < nq; ++q) {
        auto& r = out[static_cast<size_t>(q)];
        for (int64_t j = 0; j < fetch && static_cast<int64_t>(r.size()) < k; ++j) {
          const auto pos = labels[static_cast<size_t>(q * fetch + j)];
          if (pos < 0 || static_cast<size_t>(pos) >= ids_.size() || ids_[static_cast<size_t>(pos)] < 0) continue;
          r.emplace_back(ids_[static_cast<size_t>(pos)], static_cast<float>(dist[static_cast<size_t>(q * fetch + j)]));
        }
      }
    }
  } catch (const faiss::FaissException& e) {
    throw Error(fmt::format("FAISS search failed: {}", e.msg));
  }
  return out;
}

bool FaissStore::reconstruct(int64_t id, std::vector<uint8_t>* code) const {
  auto it = pos_of_.find(id);
  if (it == pos_of_.end()) return false;
  code->resize(static_cast<size_t>(code_size()));
  try {
    if (binary_)
      b_->reconstruct(it->second, code->data());
    else
      f_->reconstruct(it->second, reinterpret_cast<float*>(code->data()));
  } catch (const faiss::FaissException&) {
    return false;
  }
  return true;
}

std::string FaissStore::type_name() const {
  const void* p = binary_ ? static_cast<const void*>(b_.get()) : static_cast<const void*>(f_.get());
  if (!p) return "none";
  std::string n = binary_ ? typeid(*b_).name() : typeid(*f_).name();
  // Itanium-mangled "N5faiss12IndexHNSWFlatE" -> "IndexHNSWFlat".
  const auto at = n.find("faiss");
  if (at != std::string::npos) {
    size_t i = at + 5;
    size_t len = 0;
    while (i < n.size() && std::isdigit(static_cast<unsigned char>(n[i]))) len = len * 10 + static_cast<size_t>(n[i++] - '0');
    if (len > 0 && i + len <= n.size()) return n.substr(i, len);
  }
  return n;
}

void FaissStore::save(const std::string& path, int64_t generation, int64_t base_generation) const {
  faiss::VectorIOWriter w;
  auto& out = w.data;
  out.insert(out.end(), kMagic, kMagic + sizeof(kMagic));
  put(out, kSnapshotVersion);
  put(out, static_cast<uint32_t>(binary_ ? 1 : 0));
  put(out, generation);
  put(out, base_generation);
  put(out, spec_.dim);
  put(out, static_cast<int64_t>(ids_.size()));
  const auto* idb = reinterpret_cast<const uint8_t*>(ids_.data());
  out.insert(out.end(), idb, idb + ids_.size() * sizeof(int64_t));
  try {
    if (binary_)
      faiss::write_index_binary(b_.get(), &w);
    else
      faiss::write_index(f_.get(), &w);
  } catch (const faiss::FaissException& e) {
    throw Error(fmt::format("{}: cannot serialize the FAISS index: {}", path, e.msg));
  }
  const uint64_t h = checksum64(out.data(), out.size());
  put(out, h);
  write_file_atomic(path, out.data(), out.size());
}

bool FaissStore::load(const std::string& path, const IndexSpec& spec, FaissStore* out, int64_t* generation,
                      int64_t* base_generation, std::string* why) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *why = "no snapshot";
    return false;
  }
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (buf.size() < sizeof(kMagic) + 8 || std::memcmp(buf.data(), kMagic, sizeof(kMagic)) != 0) {
    *why = "not a featlearn FAISS snapshot";
    return false;
  }
  uint64_t stored = 0;
  std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
  if (checksum64(buf.data(), buf.size() - 8) != stored) {
    *why = "checksum mismatch (damaged file)";
    return false;
  }
  buf.resize(buf.size() - 8);
  size_t at = sizeof(kMagic);
  uint32_t version = 0, binary = 0;
  int64_t dim = 0, npos = 0;
  if (!take(buf, at, &version) || !take(buf, at, &binary) || !take(buf, at, generation) ||
      !take(buf, at, base_generation) || !take(buf, at, &dim) || !take(buf, at, &npos)) {
    *why = "truncated header";
    return false;
  }
  if (version != kSnapshotVersion) {
    *why = fmt::format("snapshot version {} (this featlearn writes {})", version, kSnapshotVersion);
    return false;
  }
  const bool want_binary = spec.metric == IndexMetric::kHamming;
  if ((binary != 0) != want_binary || dim != spec.dim || npos < 0 ||
      at + static_cast<size_t>(npos) * sizeof(int64_t) > buf.size()) {
    *why = "snapshot does not match the index spec";
    return false;
  }
  FaissStore s(spec);
  s.ids_.resize(static_cast<size_t>(npos));
  std::memcpy(s.ids_.data(), buf.data() + at, static_cast<size_t>(npos) * sizeof(int64_t));
  at += static_cast<size_t>(npos) * sizeof(int64_t);
  SpanReader r(buf.data() + at, buf.size() - at);
  try {
    if (want_binary)
      s.b_.reset(faiss::read_index_binary(&r));
    else
      s.f_.reset(faiss::read_index(&r));
  } catch (const faiss::FaissException& e) {
    *why = std::string("FAISS payload unreadable: ") + e.msg;
    return false;
  } catch (const std::exception& e) {  // bad_alloc / length_error for sizes no real snapshot has
    *why = std::string("FAISS payload unreadable: ") + e.what();
    return false;
  }
  const std::string damage = want_binary ? check_binary_payload(s.b_.get(), spec) : check_float_payload(s.f_.get(), spec);
  if (!damage.empty()) {
    *why = "FAISS payload inconsistent: " + damage;
    return false;
  }
  const int64_t ntotal = want_binary ? s.b_->ntotal : s.f_->ntotal;
  if (ntotal != npos) {
    *why = fmt::format("snapshot holds {} vectors for {} positions", ntotal, npos);
    return false;
  }
  for (int64_t p = 0; p < npos; ++p)
    if (s.ids_[static_cast<size_t>(p)] >= 0) s.pos_of_[s.ids_[static_cast<size_t>(p)]] = p;
  *out = std::move(s);
  return true;
}

}  // namespace featlearn
