#include <featlearn/metric/per_query.h>
#include <featlearn/metric/retrieval.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <set>
#include <unordered_map>

#include "re_ranking.h"

namespace featlearn {

// ---------------------------------------------------------------------------------------------------------
// MetricSpec / MetricSet

std::vector<std::string> MetricSpec::keys() const {
  std::vector<std::string> out;
  switch (kind) {
    case Kind::kRecallk:
      for (auto k : topk) out.push_back("recall" + std::to_string(k));
      break;
    case Kind::kMAP: out.push_back("mAP"); break;
    case Kind::kMINP: out.push_back("mINP"); break;
    case Kind::kPrecisionk:
      for (auto k : topk) out.push_back("precision@" + std::to_string(k));
      break;
    case Kind::kTopkAcc:
      for (auto k : topk) out.push_back("top" + std::to_string(k));
      break;
  }
  return out;
}

namespace {

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names = {"Recallk", "mAP", "mINP", "Precisionk", "TopkAcc"};
  return names;
}

std::vector<int64_t> read_topk(const ConfigNode& params) {
  const ConfigNode node = params["topk"];
  if (!node.defined()) return {1, 5};  // PaddleClas's default
  std::vector<int64_t> ks;
  if (node.is_seq())
    ks = node.as<std::vector<int64_t>>();
  else
    ks = {node.as<int64_t>()};
  if (ks.empty()) node.fail("topk must list at least one k");
  for (auto k : ks)
    if (k < 1) node.fail("topk values must be >= 1, got " + std::to_string(k));
  return ks;
}

}  // namespace

MetricSet MetricSet::create(const ConfigNode& metric_list) {
  MetricSet set;
  if (!metric_list.defined()) return set;
  if (!metric_list.is_seq()) metric_list.fail("expected a list of metrics such as `- Recallk: {topk: [1, 5]}`");
  std::optional<bool> descending;
  std::set<std::string> seen;
  for (size_t i = 0; i < metric_list.size(); ++i) {
    const ConfigNode item = metric_list.at(i);
    auto [name, params] = item.single_entry();
    MetricSpec spec;
    if (name == "Recallk" || name == "Precisionk") {
      params.check_keys({"topk", "descending"});
      spec.kind = name == "Recallk" ? MetricSpec::Kind::kRecallk : MetricSpec::Kind::kPrecisionk;
      spec.topk = read_topk(params);
      spec.descending = params.get<bool>("descending", true);
    } else if (name == "mAP" || name == "mINP") {
      params.check_keys({"descending"});
      spec.kind = name == "mAP" ? MetricSpec::Kind::kMAP : MetricSpec::Kind::kMINP;
      spec.descending = params.get<bool>("descending", true);
    } else if (name == "TopkAcc") {
      params.check_keys({"topk"});
      spec.kind = MetricSpec::Kind::kTopkAcc;
      spec.topk = read_topk(params);
    } else {
      item.fail("unknown Metric '" + name + "'" + did_you_mean(name, metric_names()) +
                " (valid names: " + join(metric_names()) + ")");
    }
    if (spec.is_retrieval()) {
      // One ranking serves every retrieval metric, so they must agree on its direction.
      if (descending && *descending != spec.descending)
        params.fail("all retrieval metrics must use the same `descending` (one ranking serves them all)");
      descending = spec.descending;
    }
    for (const auto& key : spec.keys())
      if (!seen.insert(key).second) item.fail("metric '" + key + "' is listed twice");
    set.specs_.push_back(std::move(spec));
  }
  return set;
}

MetricSet& MetricSet::add(MetricSpec spec) {
  specs_.push_back(std::move(spec));
  return *this;
}

bool MetricSet::has_retrieval() const {
  return std::any_of(specs_.begin(), specs_.end(), [](const MetricSpec& s) { return s.is_retrieval(); });
}

bool MetricSet::has_classification() const {
  return std::any_of(specs_.begin(), specs_.end(), [](const MetricSpec& s) { return !s.is_retrieval(); });
}

std::vector<std::string> MetricSet::keys() const {
  std::vector<std::string> out;
  for (const auto& s : specs_)
    for (auto& k : s.keys()) out.push_back(std::move(k));
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Retrieval

namespace {

// Monotone map float -> uint32 (a < b  <=>  mono(a) < mono(b)); -0 is folded onto +0 by the caller.
inline uint32_t mono_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Rank key: larger key = earlier in the ranking. Higher score first; equal scores by lower gallery index.
inline uint64_t rank_key(float score, int64_t index) {
  score += 0.0f;  // -0 -> +0
  return (static_cast<uint64_t>(mono_bits(score)) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(index));
}

// Number of keys greater than `k` in `keys[0, n)`, sorted descending, n >= 1. Branch-free binary search:
// the trip count depends only on n, so the loop is perfectly predicted.
inline int64_t count_greater(const uint64_t* keys, int64_t n, uint64_t k) {
  const uint64_t* base = keys;
  while (n > 1) {
    const int64_t half = n >> 1;
    base = (base[half - 1] > k) ? base + half : base;
    n -= half;
  }
  return (base - keys) + (base[0] > k ? 1 : 0);
}

struct RowResult {
  bool valid = false;
  int64_t num_pos = 0;
  int64_t first_rank = 0;  // 0-based rank of the first positive
  double ap = 0.0;
  double inp = 0.0;
  int64_t excluded = 0;
};

// Gallery items grouped by label: label -> ascending gallery indices.
using LabelGroups = std::unordered_map<int64_t, std::vector<int64_t>>;

struct GalleryView {
  const int64_t* labels = nullptr;
  const int64_t* camids = nullptr;  // null: no exclusion
  int64_t size = 0;
  const LabelGroups* groups = nullptr;
};

// Ranks the positives of one query in `scores` [G] and derives its per-query metric terms.
// prec_counts[i] receives |{j : rank_j < prec_ks[i]}|.
// Per-thread scratch buffers.
struct RowScratch {
  std::vector<uint64_t> pos_keys;
  std::vector<float> pos_scores;
  std::vector<int64_t> hist;
  std::vector<int32_t> table;
};

// The bucket of a score on a uniform grid over [lo, hi]. It is monotone non-decreasing in x (subtraction,
// multiplication by a positive constant and truncation all are), which is all the exactness argument needs.
inline int64_t grid_bucket(float x, float lo, float inv_width) { return static_cast<int64_t>((x - lo) * inv_width); }

RowResult rank_row(const float* scores, int64_t label, int64_t camid, const GalleryView& gallery,
                   const std::vector<int64_t>& prec_ks, int64_t* prec_counts, RowScratch& scratch) {
  std::vector<uint64_t>& pos_keys = scratch.pos_keys;
  std::vector<int64_t>& hist = scratch.hist;
  RowResult r;
  for (size_t i = 0; i < prec_ks.size(); ++i) prec_counts[i] = 0;
  auto it = gallery.groups->find(label);
  if (it == gallery.groups->end()) return r;
  pos_keys.clear();
  for (int64_t g : it->second) {
    if (gallery.camids && gallery.camids[g] == camid) {
      ++r.excluded;
      continue;
    }
    pos_keys.push_back(rank_key(scores[g], g));
  }
  const int64_t P = static_cast<int64_t>(pos_keys.size());
  if (P == 0) return r;
  std::sort(pos_keys.begin(), pos_keys.end(), std::greater<uint64_t>());
  // hist[c]: number of negatives with exactly c positives ranked before them. Negatives after every
  // positive (c = P) do not affect any metric and are not counted.
  hist.assign(static_cast<size_t>(P), 0);
  const uint64_t* keys = pos_keys.data();
  // c(x) = number of positives ranked before a negative x. A binary search per gallery item would be
  // latency-bound (~8 dependent loads); instead a uniform grid over [min, max] of the positive scores with ~16
  // cells per positive gives c(x) directly for cells that hold no positive (there every positive is strictly
  // above or strictly below x, by monotonicity of grid_bucket); only the ~1/16 of items that land in a cell
  // holding a positive take the exact key comparison, which also settles ties by gallery index.
  std::vector<float>& ps = scratch.pos_scores;
  ps.resize(static_cast<size_t>(P));
  for (int64_t j = 0; j < P; ++j) {
    const uint32_t m = static_cast<uint32_t>(keys[j] >> 32);
    const uint32_t u = (m & 0x80000000u) ? (m & 0x7FFFFFFFu) : ~m;  // inverse of mono_bits
    std::memcpy(&ps[j], &u, sizeof(float));
  }
  const float hi = ps[0], lo = ps[P - 1];
  const float inv_width = hi > lo ? static_cast<float>(16 * P) / (hi - lo) : 0.f;
  const int64_t cells = grid_bucket(hi, lo, inv_width) + 1;
  std::vector<int32_t>& table = scratch.table;
  table.assign(static_cast<size_t>(cells), 0);
  // table[t] = #positives in cells above t, or -1 when cell t holds a positive.
  for (int64_t j = 0; j < P; ++j) table[grid_bucket(ps[j], lo, inv_width)] = -1;
  for (int64_t t = cells - 1, above = 0, j = 0; t >= 0; --t) {
    int64_t here = 0;
    while (j < P && grid_bucket(ps[j], lo, inv_width) == t) ++j, ++here;
    if (here == 0) table[t] = static_cast<int32_t>(above);
    above += here;
  }
  const int32_t* tab = table.data();
  const int64_t* glabels = gallery.labels;
  int64_t* h = hist.data();
  for (int64_t g = 0; g < gallery.size; ++g) {
    if (glabels[g] == label) continue;  // positives are ranked among themselves by the sort; excluded skipped
    const float x = scores[g] + 0.0f;    // -0 -> +0, as in rank_key
    if (!(x >= lo)) continue;            // below every positive (or NaN): affects no rank
    if (x > hi) {
      ++h[0];
      continue;
    }
    int64_t c = tab[grid_bucket(x, lo, inv_width)];
    if (c < 0) c = count_greater(keys, P, rank_key(x, g));
    if (c < P) ++h[c];
  }
  r.valid = true;
  r.num_pos = P;
  int64_t negatives_before = 0;
  double ap = 0.0;
  int64_t rank = 0;
  for (int64_t j = 0; j < P; ++j) {
    negatives_before += h[j];
    rank = j + negatives_before;  // 0-based rank of the (j+1)-th positive
    if (j == 0) r.first_rank = rank;
    ap += static_cast<double>(j + 1) / static_cast<double>(rank + 1);
    for (size_t i = 0; i < prec_ks.size(); ++i)
      if (rank < prec_ks[i]) ++prec_counts[i];
  }
  r.ap = ap / static_cast<double>(P);
  r.inp = static_cast<double>(P) / static_cast<double>(rank + 1);
  return r;
}

torch::Tensor labels_1d(const torch::Tensor& t, int64_t n, const char* what) {
  if (!t.defined()) throw Error(std::string(what) + " is undefined");
  if (t.numel() != n)
    throw Error(std::string(what) + ": expected " + std::to_string(n) + " values (one per feature row), got " +
                std::to_string(t.numel()));
  if (at::isFloatingType(t.scalar_type()) || t.scalar_type() == torch::kBool)
    throw Error(std::string(what) + ": expected an integer tensor, got " + std::string(c10::toString(t.scalar_type())));
  return t.reshape({n}).to(torch::kCPU, torch::kLong).contiguous();
}

void check_features(const torch::Tensor& f, const char* what) {
  if (!f.defined() || f.dim() != 2)
    throw Error(std::string(what) + ": expected a 2-D [N, D] feature tensor" +
                (f.defined() ? ", got " + std::to_string(f.dim()) + "-D" : std::string(", got undefined")));
  if (!at::isFloatingType(f.scalar_type()))
    throw Error(std::string(what) + ": expected floating-point features");
  // In row chunks: a whole-tensor isfinite() would allocate N×D bools.
  for (int64_t r = 0; r < f.size(0); r += 4096)
    if (!torch::isfinite(f.slice(0, r, r + 4096)).all().item<bool>())
      throw Error(std::string(what) + ": features contain NaN or Inf (did training diverge?)");
}

// evaluate_retrieval, also giving each query's outcome when `outcomes` is not null.
MetricValues evaluate_impl(const MetricSet& metrics, const torch::Tensor& query_feats,
                           const torch::Tensor& query_labels, const torch::Tensor& query_camids,
                           const torch::Tensor& gallery_feats, const torch::Tensor& gallery_labels,
                           const torch::Tensor& gallery_camids, const RetrievalOptions& options, RetrievalStats* stats,
                           std::vector<QueryOutcome>* outcomes) {
  if (metrics.has_classification())
    throw Error("TopkAcc is a classification metric; use it with Global.eval_mode: classification, or list "
                "retrieval metrics (Recallk, mAP, mINP, Precisionk) under Metric.Eval");
  check_features(query_feats, "query features");
  check_features(gallery_feats, "gallery features");
  if (query_feats.size(1) != gallery_feats.size(1))
    throw Error("query features have dimension " + std::to_string(query_feats.size(1)) +
                " but gallery features have " + std::to_string(gallery_feats.size(1)));
  if (query_camids.defined() != gallery_camids.defined())
    throw Error("camera ids must be given for both query and gallery, or for neither");
  if (options.block_size < 1)
    throw Error("Global.sim_block_size must be >= 1, got " + std::to_string(options.block_size));
  const int64_t Q = query_feats.size(0), G = gallery_feats.size(0);
  if (stats) *stats = RetrievalStats{};
  if (metrics.empty()) return {};
  if (G >= (int64_t{1} << 32)) throw Error("gallery too large (more than 2^32 items)");

  const torch::Tensor ql = labels_1d(query_labels, Q, "query labels");
  const torch::Tensor gl = labels_1d(gallery_labels, G, "gallery labels");
  const bool has_cam = query_camids.defined();
  const torch::Tensor qc = has_cam ? labels_1d(query_camids, Q, "query camera ids") : torch::Tensor();
  const torch::Tensor gc = has_cam ? labels_1d(gallery_camids, G, "gallery camera ids") : torch::Tensor();

  bool descending = true;
  std::vector<int64_t> prec_ks;
  for (const auto& s : metrics.specs()) {
    descending = s.descending;
    if (s.kind == MetricSpec::Kind::kPrecisionk) prec_ks.insert(prec_ks.end(), s.topk.begin(), s.topk.end());
  }

  LabelGroups groups;
  {
    const int64_t* l = gl.data_ptr<int64_t>();
    for (int64_t g = 0; g < G; ++g) groups[l[g]].push_back(g);
  }
  GalleryView gallery{gl.data_ptr<int64_t>(), has_cam ? gc.data_ptr<int64_t>() : nullptr, G, &groups};

  // Score provider: [b, G] float32 CPU contiguous, larger = closer.
  std::function<torch::Tensor(int64_t, int64_t)> scores_for;
  torch::Tensor qf = query_feats, gf = gallery_feats, gt;
  std::unique_ptr<detail::ReRanker> reranker;
  if (options.re_ranking) {
    reranker = std::make_unique<detail::ReRanker>(qf, gf, ReRankingParams{});
    scores_for = [&](int64_t b, int64_t e) { return reranker->rows(b, e).neg_(); };
  } else {
    if (qf.device().is_cpu() && qf.scalar_type() != torch::kFloat && qf.scalar_type() != torch::kDouble)
      qf = qf.to(torch::kFloat);
    if (gf.device() != qf.device() || gf.scalar_type() != qf.scalar_type()) gf = gf.to(qf.device(), qf.scalar_type());
    gt = gf.t();
    scores_for = [&](int64_t b, int64_t e) {
      return torch::mm(qf.slice(0, b, e), gt).to(torch::kCPU, torch::kFloat).contiguous();
    };
  }

  const int64_t nprec = static_cast<int64_t>(prec_ks.size());
  const int64_t block = std::min<int64_t>(options.block_size, std::max<int64_t>(Q, 1));
  std::vector<RowResult> results(static_cast<size_t>(Q));
  std::vector<int64_t> prec_counts(static_cast<size_t>(Q * nprec));
  const int64_t* qlp = ql.data_ptr<int64_t>();
  const int64_t* qcp = has_cam ? qc.data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < Q; b += block) {
    const int64_t e = std::min(Q, b + block);
    torch::Tensor s = scores_for(b, e);
    if (!descending) s.neg_();
    FL_ASSERT(s.size(0) == e - b && s.size(1) == G && s.is_contiguous(), "bad score block");
    const float* sp = s.data_ptr<float>();
    at::parallel_for(b, e, 1, [&](int64_t r0, int64_t r1) {
      RowScratch scratch;
      for (int64_t r = r0; r < r1; ++r)
        results[r] = rank_row(sp + (r - b) * G, qlp[r], qcp ? qcp[r] : 0, gallery, prec_ks,
                              prec_counts.data() + r * nprec, scratch);
    });
  }

  if (outcomes) {
    outcomes->assign(static_cast<size_t>(Q), QueryOutcome{});
    for (int64_t r = 0; r < Q; ++r) {
      const RowResult& x = results[r];
      auto& o = (*outcomes)[r];
      o.valid = x.valid;
      o.ap = x.valid ? x.ap : std::numeric_limits<double>::quiet_NaN();
      o.first_rank = x.valid ? x.first_rank + 1 : 0;
      o.num_matches = x.num_pos;
    }
  }
  // Reduce in query order (deterministic for any block size and thread count).
  int64_t valid = 0, excluded = 0;
  double ap_sum = 0.0, inp_sum = 0.0;
  std::vector<int64_t> first_ranks;
  std::vector<double> prec_sum(static_cast<size_t>(nprec), 0.0);
  for (int64_t r = 0; r < Q; ++r) {
    const RowResult& x = results[r];
    excluded += x.excluded;
    if (!x.valid) continue;
    ++valid;
    ap_sum += x.ap;
    inp_sum += x.inp;
    first_ranks.push_back(x.first_rank);
    for (int64_t i = 0; i < nprec; ++i)
      prec_sum[i] += static_cast<double>(prec_counts[r * nprec + i]) / static_cast<double>(prec_ks[i]);
  }
  if (stats) {
    stats->num_queries = Q;
    stats->queries_without_match = Q - valid;
    stats->num_excluded = excluded;
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double n = static_cast<double>(valid);
  MetricValues out;
  int64_t prec_i = 0;
  for (const auto& spec : metrics.specs()) {
    switch (spec.kind) {
      case MetricSpec::Kind::kRecallk:
        for (auto k : spec.topk) {
          int64_t hits = 0;
          for (auto fr : first_ranks) hits += fr < k ? 1 : 0;
          out.emplace_back("recall" + std::to_string(k), valid ? hits / n : nan);
        }
        break;
      case MetricSpec::Kind::kMAP: out.emplace_back("mAP", valid ? ap_sum / n : nan); break;
      case MetricSpec::Kind::kMINP: out.emplace_back("mINP", valid ? inp_sum / n : nan); break;
      case MetricSpec::Kind::kPrecisionk:
        for (auto k : spec.topk) out.emplace_back("precision@" + std::to_string(k), valid ? prec_sum[prec_i++] / n : nan);
        break;
      case MetricSpec::Kind::kTopkAcc: break;  // rejected above
    }
  }
  return out;
}

}  // namespace

MetricValues evaluate_retrieval(const MetricSet& metrics, const torch::Tensor& query_feats,
                                const torch::Tensor& query_labels, const torch::Tensor& query_camids,
                                const torch::Tensor& gallery_feats, const torch::Tensor& gallery_labels,
                                const torch::Tensor& gallery_camids, const RetrievalOptions& options) {
  return evaluate_impl(metrics, query_feats, query_labels, query_camids, gallery_feats, gallery_labels,
                       gallery_camids, options, nullptr, nullptr);
}

MetricValues evaluate_retrieval(const MetricSet& metrics, const torch::Tensor& query_feats,
                                const torch::Tensor& query_labels, const torch::Tensor& query_camids,
                                const torch::Tensor& gallery_feats, const torch::Tensor& gallery_labels,
                                const torch::Tensor& gallery_camids, const RetrievalOptions& options,
                                RetrievalStats* stats) {
  return evaluate_impl(metrics, query_feats, query_labels, query_camids, gallery_feats, gallery_labels,
                       gallery_camids, options, stats, nullptr);
}

std::vector<QueryOutcome> retrieval_outcomes(const torch::Tensor& query_feats, const torch::Tensor& query_labels,
                                             const torch::Tensor& query_camids, const torch::Tensor& gallery_feats,
                                             const torch::Tensor& gallery_labels, const torch::Tensor& gallery_camids,
                                             const RetrievalOptions& options, bool descending) {
  MetricSpec map;
  map.kind = MetricSpec::Kind::kMAP;
  map.descending = descending;
  MetricSet one;
  one.add(map);
  std::vector<QueryOutcome> outcomes;
  evaluate_impl(one, query_feats, query_labels, query_camids, gallery_feats, gallery_labels, gallery_camids, options,
                nullptr, &outcomes);
  return outcomes;
}

// ---------------------------------------------------------------------------------------------------------
// Classification

MetricValues evaluate_classification(const MetricSet& metrics, const torch::Tensor& logits,
                                     const torch::Tensor& labels) {
  if (metrics.has_retrieval())
    throw Error("Recallk / mAP / mINP / Precisionk are retrieval metrics; use them with Global.eval_mode: "
                "retrieval, or list TopkAcc under Metric.Eval for classification");
  if (!logits.defined() || logits.dim() != 2)
    throw Error("TopkAcc: expected logits of shape [N, num_classes]");
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0) throw Error("TopkAcc: no samples to evaluate");
  const torch::Tensor y = labels_1d(labels, N, "classification labels");
  const int64_t ymin = y.min().item<int64_t>(), ymax = y.max().item<int64_t>();
  if (ymin < 0 || ymax >= C)
    throw Error("TopkAcc: label " + std::to_string(ymin < 0 ? ymin : ymax) + " is outside [0, " +
                std::to_string(C) + "); check Arch.class_num against the labels of the list file");
  const torch::Tensor x = logits.detach().to(torch::kCPU, torch::kFloat);
  const torch::Tensor ly = x.gather(1, y.unsqueeze(1));                                  // [N, 1]
  const torch::Tensor before = torch::arange(C, torch::kLong).unsqueeze(0) < y.unsqueeze(1);  // [N, C]
  // 0-based rank of the label: higher logits, then equal logits of lower class index.
  const torch::Tensor rank = (x > ly).sum(1) + ((x == ly) & before).sum(1);
  const torch::Tensor finite = torch::isfinite(ly.squeeze(1));
  MetricValues out;
  for (const auto& spec : metrics.specs()) {
    for (auto k : spec.topk) {
      if (k > C) {
        std::cerr << "featlearn: warning: TopkAcc top" << k << " dropped: the output has only " << C
                  << " classes\n";
        continue;
      }
      const double hits = ((rank < k) & finite).sum().item<int64_t>();
      out.emplace_back("top" + std::to_string(k), hits / static_cast<double>(N));
    }
  }
  return out;
}

}  // namespace featlearn
