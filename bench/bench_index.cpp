// Gallery-index benchmark: GalleryIndex (FAISS + SQLite, src/index/) on N clustered, L2-normalized D-dim
// vectors, metric IP, per index method (Flat, HNSW32, IVF). Compared side by side with peer_index.py (plain
// Python FAISS + pickle) by index_side_by_side.sh; prints one JSON object of the same shape as the peer's.
//
//   bench_index [--data DIR] [--n 1000000] [--dim 256] [--queries 1000] [--clusters 0] [--sigma 1] [--seed 0]
//               [--methods Flat,HNSW32,IVF] [--nlist 0] [--ef-construction 40] [--target 0.95]
//               [--single-seconds 5] [--threads <all cores>] [--work DIR] [--out FILE]
//
// --data DIR reads the data written by `peer_index.py --write-data DIR` (base, queries, extra, remove_ids and
// the exact top-10 ground truth gt / gt_after as .npy); the side-by-side script always uses it so both sides
// see identical data. Without --data the same recipe is generated here (torch RNG, so other numbers) and the
// ground truth computed by brute force: enough for CI-size runs (--n 20000) without Python.
//
// Per method:
//   build    NewItem list + GalleryIndex::create() (FAISS build, the SQLite transaction holding every vector
//            and item, and the first vectors.faiss snapshot); a second save_snapshot() measures the snapshot
//            part, reported as persist_s (build_s = create - snapshot)
//   search   all queries in one search() call, and one query per call (up to --single-seconds); ef_search /
//            nprobe swept upward (16..1024 / 1, 2, 4, .., nlist) until recall@10 >= --target
//   append   add() of N/100 new items (durable on return), then save_snapshot() timed separately
//   remove   remove() of N/100 random ids (durable on return), then save_snapshot()
//   reopen   open(dir, false) + one search
// --nlist 0 uses round(4 sqrt(N)) lists: PaddleClas's rule min(N / 8, 65536) (the featlearn default) means
// 65536 lists at 1M, whose k-means alone takes hours on a few cores; -1 selects that rule anyway.
#include <featlearn/engine/commands.h>
#include <featlearn/index/gallery_index.h>
#include <featlearn/io/npy.h>
#include <omp.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int64_t kTopK = 10;  // recall@10 against the exact top-10

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

double rss_mb() {  // current resident set
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

double dir_mb(const std::string& dir) {
  uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) bytes += e.file_size();
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Data {
  torch::Tensor base, base_label;    // [N, D] f32, [N] i64
  torch::Tensor queries;             // [Q, D]
  torch::Tensor extra, extra_label;  // [N/100, D], appended (logical ids N+1..)
  torch::Tensor remove_ids;          // [N/100] i64, 1-based ids of base items
  torch::Tensor gt, gt_after;        // [Q, 10] i64 exact top-10 ids before / after the update
};

// Exact top-k ids (1-based `ids` of `base` rows) by blocked brute force. [Q, D] x [M, D] -> [Q, k]
torch::Tensor exact_topk(const torch::Tensor& base, const torch::Tensor& ids, const torch::Tensor& queries, int64_t k) {
  torch::Tensor best_s, best_i;
  const int64_t block = 65536;
  for (int64_t b = 0; b < base.size(0); b += block) {
    const int64_t e = std::min(base.size(0), b + block);
    auto sims = queries.mm(base.slice(0, b, e).t());
    auto top = sims.topk(std::min(k, e - b), 1);
    auto s = std::get<0>(top), i = ids.slice(0, b, e).index({std::get<1>(top)});
    if (best_s.defined()) {
      s = torch::cat({best_s, s}, 1);
      i = torch::cat({best_i, i}, 1);
      auto t = s.topk(k, 1);
      s = std::get<0>(t);
      i = i.gather(1, std::get<1>(t));
    }
    best_s = s;
    best_i = i;
  }
  return best_i.contiguous();
}

// The peer's recipe (peer_index.py draw()) with the torch RNG.
std::pair<torch::Tensor, torch::Tensor> draw(const torch::Tensor& centres, int64_t n, double sigma) {
  auto label = torch::randint(0, centres.size(0), {n}, torch::kLong);
  auto x = centres.index({label}) + torch::randn({n, centres.size(1)}) * (sigma / std::sqrt(double(centres.size(1))));
  return {torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1)).contiguous(), label};
}

Data generate(int64_t n, int64_t dim, int64_t nq, int64_t clusters, double sigma, int64_t seed) {
  torch::manual_seed(seed);
  Data d;
  auto centres = torch::nn::functional::normalize(torch::randn({clusters, dim}),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(1));
  std::tie(d.base, d.base_label) = draw(centres, n, sigma);
  d.queries = draw(centres, nq, sigma).first;
  const int64_t upd = std::max<int64_t>(1, n / 100);
  std::tie(d.extra, d.extra_label) = draw(centres, upd, sigma);
  d.remove_ids = std::get<0>(torch::randperm(n, torch::kLong).slice(0, 0, upd).sort()) + 1;
  auto ids = torch::arange(1, n + 1, torch::kLong);
  d.gt = exact_topk(d.base, ids, d.queries, kTopK);
  auto keep = torch::ones({n}, torch::kBool);
  keep.index_put_({d.remove_ids - 1}, false);
  auto after = torch::cat({d.base.index({keep}), d.extra});
  auto after_ids = torch::cat({ids.index({keep}), torch::arange(n + 1, n + 1 + upd, torch::kLong)});
  d.gt_after = exact_topk(after, after_ids, d.queries, kTopK);
  return d;
}

Data load(const std::string& dir) {
  auto l = [&](const char* name) { return featlearn::load_npy(dir + "/" + name + ".npy").contiguous(); };
  Data d;
  d.base = l("base");
  d.base_label = l("base_label");
  d.queries = l("queries");
  d.extra = l("extra");
  d.extra_label = l("extra_label");
  d.remove_ids = l("remove_ids");
  d.gt = l("gt");
  d.gt_after = l("gt_after");
  if (d.base.dim() != 2 || d.queries.size(1) != d.base.size(1) || d.gt.size(1) != kTopK)
    throw std::runtime_error(dir + ": unexpected shapes (write it with peer_index.py --write-data)");
  return d;
}

// Same metadata as the peer's id map: "gallery/c<label>/<id>.jpg", label.
std::vector<featlearn::NewItem> make_items(const torch::Tensor& labels, int64_t first_id) {
  std::vector<featlearn::NewItem> items(static_cast<size_t>(labels.size(0)));
  const int64_t* l = labels.data_ptr<int64_t>();
  char buf[64];
  for (size_t i = 0; i < items.size(); ++i) {
    std::snprintf(buf, sizeof buf, "gallery/c%04lld/%08lld.jpg", static_cast<long long>(l[i]),
                  static_cast<long long>(first_id + static_cast<int64_t>(i)));
    items[i].path = buf;
    items[i].label = std::to_string(l[i]);
  }
  return items;
}

// hits (featlearn ids) -> [Q][10] logical ids (base 1..N, extra N+1..) via `to_logical` (identity when empty).
using IdMap = std::unordered_map<int64_t, int64_t>;
std::vector<std::vector<int64_t>> logical(const std::vector<std::vector<featlearn::SearchHit>>& hits, const IdMap& to_logical) {
  std::vector<std::vector<int64_t>> out(hits.size());
  for (size_t q = 0; q < hits.size(); ++q)
    for (const auto& h : hits[q]) {
      auto it = to_logical.find(h.id);
      out[q].push_back(it == to_logical.end() ? h.id : it->second);
    }
  return out;
}

double recall(const std::vector<std::vector<int64_t>>& found, const torch::Tensor& gt) {
  const int64_t* g = gt.data_ptr<int64_t>();
  double sum = 0;
  for (size_t q = 0; q < found.size(); ++q) {
    std::unordered_set<int64_t> truth(g + q * kTopK, g + (q + 1) * kTopK);
    std::unordered_set<int64_t> got(found[q].begin(), found[q].end());
    int hit = 0;
    for (int64_t id : got) hit += truth.count(id) ? 1 : 0;
    sum += hit / double(kTopK);
  }
  return sum / double(found.size());
}

struct Args {
  std::map<std::string, std::string> v = {
      {"data", ""},      {"n", "1000000"},    {"dim", "256"},           {"queries", "1000"},
      {"clusters", "0"}, {"sigma", "1.0"},    {"seed", "0"},            {"methods", "Flat,HNSW32,IVF"},
      {"nlist", "0"},    {"ef-construction", "40"}, {"target", "0.95"}, {"single-seconds", "5"},
      {"threads", "0"},  {"work", ""},        {"out", ""}};
  int64_t i(const std::string& k) const { return std::stoll(v.at(k)); }
  double f(const std::string& k) const { return std::stod(v.at(k)); }
  const std::string& s(const std::string& k) const { return v.at(k); }
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, sep);)
    if (!x.empty()) out.push_back(x);
  return out;
}

struct Bench {
  const Args& a;
  const Data& d;
  int64_t nlist;

  featlearn::SearchOptions options(const std::string& method, int64_t value) const {
    featlearn::SearchOptions o;
    o.top_k = kTopK;
    if (method.rfind("HNSW", 0) == 0) o.ef_search = value;
    if (method == "IVF") o.nprobe = value;
    return o;
  }

  std::pair<std::string, std::vector<int64_t>> sweep_values(const std::string& method) const {
    if (method.rfind("HNSW", 0) == 0) return {"ef_search", {16, 32, 64, 128, 256, 512, 1024}};
    if (method == "IVF") {
      std::vector<int64_t> v;
      for (int64_t p = 1; p < nlist; p *= 2) v.push_back(p);
      v.push_back(nlist);
      return {"nprobe", v};
    }
    return {"", {0}};
  }

  // Best of `repeat` batch searches: queries/s and the hits of the last.
  std::pair<double, std::vector<std::vector<featlearn::SearchHit>>> qps_batch(const featlearn::GalleryIndex& index,
                                                                                const featlearn::SearchOptions& o,
                                                                                int repeat) const {
    double best = 1e300;
    std::vector<std::vector<featlearn::SearchHit>> hits;
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = Clock::now();
      hits = index.search(d.queries.data_ptr<float>(), d.queries.size(0), o);
      best = std::min(best, since(t0));
    }
    return {double(d.queries.size(0)) / best, std::move(hits)};
  }

  // Best of `passes` loops of one query per call, each over all queries or single-seconds / passes (one pass
  // is easily disturbed: with every core busy, an OpenMP team waits for a descheduled thread on each call).
  std::pair<double, int64_t> qps_single(const featlearn::GalleryIndex& index, const featlearn::SearchOptions& o,
                                        int passes = 3) const {
    const float* q = d.queries.data_ptr<float>();
    const int64_t dim = d.queries.size(1);
    const double budget = a.f("single-seconds") / passes;
    double best = 0;
    int64_t best_done = 0;
    for (int p = 0; p < passes; ++p) {
      const auto t0 = Clock::now();
      int64_t done = 0;
      for (int64_t i = 0; i < d.queries.size(0); ++i) {
        index.search(q + i * dim, 1, o);
        ++done;
        if (since(t0) > budget) break;
      }
      const double qps = double(done) / since(t0);
      if (qps > best) best = qps, best_done = done;
    }
    return {best, best_done};
  }

  json run(const std::string& method, const std::string& dir) const {
    const int64_t n = d.base.size(0);
    featlearn::IndexSpec spec;
    spec.index_method = method;
    spec.metric = featlearn::IndexMetric::kInnerProduct;
    spec.dim = d.base.size(1);
    spec.nlist = method == "IVF" ? nlist : 0;
    spec.ef_construction = a.i("ef-construction");
    json out = {{"method", method}, {"nlist", method == "IVF" ? json(nlist) : json(nullptr)},
                {"ef_construction", method.rfind("HNSW", 0) == 0 ? json(spec.ef_construction) : json(nullptr)}};

    const double rss0 = rss_mb();
    auto t0 = Clock::now();
    auto index = featlearn::GalleryIndex::create(dir, spec, make_items(d.base_label, 1), d.base.data_ptr<float>());
    const double create_s = since(t0);
    out["rss_growth_build_mb"] = rss_mb() - rss0;
    // create() ends with a snapshot when it leaves none; another save_snapshot() of the same content measures
    // what that part cost.
    const bool stale = index->snapshot_stale();
    t0 = Clock::now();
    index->save_snapshot();
    const double snapshot_s = since(t0);
    const double total = stale ? create_s + snapshot_s : create_s;
    out["build_s"] = stale ? create_s : std::max(0.0, create_s - snapshot_s);  // without the snapshot
    out["persist_s"] = snapshot_s;
    out["create_includes_snapshot"] = !stale;
    out["total_build_s"] = total;
    out["disk_mb"] = dir_mb(dir);

    const auto [param, values] = sweep_values(method);
    const IdMap identity;
    json sweep = json::array();
    int64_t chosen = -1;
    double best_r = -1;
    for (int64_t v : values) {
      auto [q, hits] = qps_batch(*index, options(method, v), 1);
      const double r = recall(logical(hits, identity), d.gt);
      sweep.push_back({{"value", param.empty() ? json(nullptr) : json(v)}, {"recall", r}, {"qps", q}});
      if (r > best_r) best_r = r, chosen = v;  // target not reached: the best recall of the sweep
      if (r >= a.f("target")) {
        chosen = v;
        break;
      }
    }
    const auto opt = options(method, chosen);
    auto [q_batch, hits] = qps_batch(*index, opt, 3);
    auto [q_single, n_single] = qps_single(*index, opt);
    out["param"] = param.empty() ? json(nullptr) : json(param);
    out["sweep"] = sweep;
    out["chosen"] = {{"value", param.empty() ? json(nullptr) : json(chosen)}, {"recall", recall(logical(hits, identity), d.gt)},
                     {"qps_batch", q_batch}, {"qps_single", q_single}, {"single_queries", n_single}};

    // append N/100
    t0 = Clock::now();
    const auto new_ids = index->add(make_items(d.extra_label, n + 1), d.extra.data_ptr<float>());
    const double add_s = since(t0);
    t0 = Clock::now();
    index->save_snapshot();
    const double add_p = since(t0);
    IdMap to_logical;
    for (size_t j = 0; j < new_ids.size(); ++j)
      if (new_ids[j] != n + 1 + int64_t(j)) to_logical[new_ids[j]] = n + 1 + int64_t(j);
    out["append"] = {{"n", d.extra.size(0)}, {"s", add_s}, {"snapshot_s", add_p}, {"frac_of_build", add_s / total},
                     {"ids_sequential", to_logical.empty()}};

    // remove N/100
    std::vector<int64_t> rm(d.remove_ids.data_ptr<int64_t>(), d.remove_ids.data_ptr<int64_t>() + d.remove_ids.size(0));
    t0 = Clock::now();
    const int64_t removed = index->remove(rm);
    const double rm_s = since(t0);
    t0 = Clock::now();
    index->save_snapshot();
    const double rm_p = since(t0);
    out["remove"] = {{"n", int64_t(rm.size())}, {"removed", removed}, {"how", "remove"}, {"supported", true},
                     {"s", rm_s}, {"snapshot_s", rm_p}, {"frac_of_build", rm_s / total}};

    const auto after = logical(index->search(d.queries.data_ptr<float>(), d.queries.size(0), opt), to_logical);
    const std::unordered_set<int64_t> gone(rm.begin(), rm.end());
    int64_t returned = 0;
    for (const auto& row : after)
      for (int64_t id : row) returned += gone.count(id) ? 1 : 0;
    out["recall_after_update"] = recall(after, d.gt_after);
    out["removed_returned"] = returned;
    out["size_after"] = index->size();
    index.reset();

    t0 = Clock::now();
    auto reopened = featlearn::GalleryIndex::open(dir, false);
    reopened->search(d.queries.data_ptr<float>(), 1, opt);
    out["reopen_s"] = since(t0);
    out["peak_rss_mb"] = peak_rss_mb();
    return out;
  }
};

}  // namespace

int main(int argc, char** argv) {
  featlearn::ensure_blas_coretype(argv);
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || !a.v.count(arg.substr(2)) || i + 1 >= argc) {
      std::cerr << "usage: bench_index [--data DIR] [--n N] [--dim D] [--queries Q] [--clusters C] [--sigma S] "
                   "[--seed S] [--methods Flat,HNSW32,IVF] [--nlist L] [--ef-construction E] [--target R] "
                   "[--single-seconds T] [--threads T] [--work DIR] [--out FILE]\n";
      return 2;
    }
    a.v[arg.substr(2)] = argv[++i];
  }
  try {
    int threads = static_cast<int>(a.i("threads"));
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    torch::set_num_threads(threads);
    omp_set_num_threads(threads);

    auto t0 = Clock::now();
    Data d;
    if (!a.s("data").empty()) {
      d = load(a.s("data"));
    } else {
      const int64_t n = a.i("n");
      const int64_t clusters = a.i("clusters") > 0 ? a.i("clusters") : std::max<int64_t>(10, n / 1000);
      d = generate(n, a.i("dim"), a.i("queries"), clusters, a.f("sigma"), a.i("seed"));
    }
    const double load_s = since(t0);
    const int64_t n = d.base.size(0);
    int64_t nlist = a.i("nlist");
    if (nlist == 0) nlist = static_cast<int64_t>(std::llround(4.0 * std::sqrt(double(n))));
    if (nlist < 0) nlist = std::min<int64_t>(std::max<int64_t>(n / 8, 1), 65536);  // PaddleClas's rule

    const bool temp_work = a.s("work").empty();
    const fs::path work = temp_work ? fs::temp_directory_path() / ("bench_index_" + std::to_string(getpid()))
                                    : fs::path(a.s("work"));
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    json result = {{"impl", "featlearn"}, {"n", n}, {"dim", d.base.size(1)}, {"queries", d.queries.size(0)},
                   {"threads", threads}, {"target", a.f("target")}, {"load_s", load_s},
                   {"openblas_coretype", coretype ? coretype : ""}, {"rss_after_load_mb", rss_mb()},
                   {"methods", json::array()}};
    Bench bench{a, d, nlist};
    for (const auto& method : split(a.s("methods"), ',')) {
      const fs::path dir = work / method;
      fs::remove_all(dir);
      fs::create_directories(dir.parent_path());
      result["methods"].push_back(bench.run(method, dir.string()));
      if (temp_work) fs::remove_all(dir);
    }
    if (temp_work) fs::remove_all(work);
    result["peak_rss_mb"] = peak_rss_mb();
    const std::string text = result.dump();
    if (!a.s("out").empty()) std::ofstream(a.s("out")) << text << "\n";
    std::cout << text << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_index: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
