// `featlearn report` (docs/report.md, "featlearn report"): evaluates a trained model on DataLoader.Eval once and
// writes one self-contained HTML page with its training curves, metrics, CMC curve, similarity histograms and
// ranked retrieval grids. Rendering is src/report/html_report.cpp; this file gathers the data.
#include <featlearn/common/error.h>
#include <featlearn/common/atomic_file.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/metric/per_query.h>
#include <featlearn/report/html_report.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <sstream>

namespace featlearn {

namespace fs = std::filesystem;

namespace {

// The short form `featlearn report <run_dir>`: the run's resolved config and its best (else latest) weights.
ConfigArgs run_dir_config(const ReportArgs& args) {
  const fs::path dir(args.run_dir);
  const fs::path cfg = dir / "config.yaml";
  if (!fs::is_regular_file(cfg))
    throw Error(fmt::format("{} has no config.yaml (training writes one into Global.output_dir); give the run's "
                            "directory, or -c CONFIG -o Global.pretrained_model=PREFIX",
                            args.run_dir));
  ConfigArgs c{cfg.string(), {}};
  const std::string arch = Config::load(cfg.string()).root()["Arch"].get<std::string>("name", "RecModel");
  std::string prefix;
  for (const char* name : {"best_model", "latest"})
    if (fs::is_regular_file(dir / arch / (std::string(name) + ".ckpt"))) {
      prefix = (dir / arch / name).string();
      break;
    }
  if (prefix.empty())
    throw Error(fmt::format("{} holds neither best_model.ckpt nor latest.ckpt: nothing to evaluate",
                            (dir / arch).string()));
  c.overrides = {"Global.pretrained_model=" + prefix, "Global.output_dir=" + dir.string()};
  c.overrides.insert(c.overrides.end(), args.cfg.overrides.begin(), args.cfg.overrides.end());
  return c;
}

// Scores [rows, G] (larger = closer) of the given query rows: the similarity evaluation ranks by (negated when
// the metrics' `descending` is false), or minus the k-reciprocal distance with Global.re_ranking.
torch::Tensor scores_of(const RetrievalSets& sets, const std::vector<int64_t>& rows, const RetrievalOptions& opt,
                        bool descending) {
  const auto idx = torch::tensor(rows, torch::kInt64);
  const auto qf = sets.query.features.cpu().to(torch::kFloat), gf = sets.gallery.features.cpu().to(torch::kFloat);
  auto s = opt.re_ranking ? re_ranking_distance(qf, gf).index_select(0, idx).neg_()
                          : torch::mm(qf.index_select(0, idx), gf.t());
  return descending ? s : s.neg_();
}

// True matches and distractors among the similarities: every positive pair kept by the protocol (same label,
// not excluded), and up to `max_negatives` negative pairs drawn uniformly (seeded).
std::pair<std::vector<float>, std::vector<float>> similarity_samples(const RetrievalSets& sets, uint64_t seed,
                                                                     int64_t max_negatives) {
  const auto qf = sets.query.features.cpu().to(torch::kFloat), gf = sets.gallery.features.cpu().to(torch::kFloat);
  const auto ql = sets.query.labels.flatten(), gl = sets.gallery.labels.flatten();
  const bool cams = sets.query.camids.defined() && sets.gallery.camids.defined();
  const int64_t Q = qf.size(0), G = gf.size(0);
  const double keep = std::min(1.0, static_cast<double>(max_negatives) / std::max<double>(1.0, double(Q) * G));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<float> pos, neg;
  for (int64_t b = 0; b < Q; b += 256) {
    const int64_t e = std::min(Q, b + 256);
    const auto s = torch::mm(qf.slice(0, b, e), gf.t());
    const auto same = ql.slice(0, b, e).unsqueeze(1) == gl.unsqueeze(0);
    auto kept = same;
    if (cams) kept = same & (sets.query.camids.flatten().slice(0, b, e).unsqueeze(1) != sets.gallery.camids.flatten().unsqueeze(0));
    const auto p = s.masked_select(kept).contiguous();
    pos.insert(pos.end(), p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    auto n = s.masked_select(~same);
    if (keep < 1.0) n = n.masked_select(torch::rand({n.numel()}, gen) < keep);
    n = n.contiguous();
    neg.insert(neg.end(), n.data_ptr<float>(), n.data_ptr<float>() + n.numel());
  }
  return {pos, neg};
}

std::string model_description(torch::nn::Module& model) {
  std::ostringstream tree;  // the module tree as LibTorch prints it
  tree << model;
  int64_t params = 0, trainable = 0;
  for (const auto& p : model.parameters()) {
    params += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  return fmt::format("{}\n\nparameters: {} ({} trainable)\n", tree.str(), params, trainable);
}

}  // namespace

std::string write_report(const ReportArgs& args) {
  if (args.queries < 0) throw Error("--queries must be >= 0");
  if (args.topk < 1) throw Error("--topk must be >= 1");
  const bool short_form = !args.run_dir.empty();
  if (short_form && !args.cfg.config.empty())
    throw Error("give either a run directory or -c CONFIG, not both");
  if (!short_form && args.cfg.config.empty())
    throw Error("featlearn report needs a run directory (the training's Global.output_dir) or -c CONFIG "
                "-o Global.pretrained_model=PREFIX");
  const ConfigArgs ca = short_form ? run_dir_config(args) : args.cfg;
  Config c = load_config_for_weights(ca, ConfigUse::kEval);
  const auto global = c.root()["Global"];
  const auto start = std::chrono::steady_clock::now();
  Trainer t(c, Trainer::Mode::kEval);
  const auto& g = t.global();
  if (g.eval_mode != "retrieval")
    global.fail(fmt::format("report ranks retrieval results; Global.eval_mode is {} (only retrieval is supported)",
                            g.eval_mode));

  const RetrievalSets sets = t.retrieval_sets();
  const auto extracted = std::chrono::steady_clock::now();
  const auto opt = t.retrieval_options();
  bool descending = true;
  for (const auto& spec : t.metrics().specs())
    if (spec.is_retrieval()) descending = spec.descending;
  const auto& q = sets.query;
  const auto& gal = sets.gallery;
  const auto qf = q.features.cpu(), gf = gal.features.cpu();
  const auto metrics = evaluate_retrieval(t.metrics(), qf, q.labels, q.camids, gf, gal.labels, gal.camids, opt);
  const auto outcomes = retrieval_outcomes(qf, q.labels, q.camids, gf, gal.labels, gal.camids, opt, descending);
  const int64_t Q = qf.size(0), G = gf.size(0);

  report::ReportData d;
  d.title = "featlearn report: " + (short_form ? args.run_dir : fs::path(ca.config).filename().string());
  d.subtitle = fmt::format("weights {} · config {} · eval on DataLoader.Eval", g.pretrained_model.value_or("random (Global.eval_random_weights)"), ca.config);
  d.curves = report::curves_from_metrics_jsonl((fs::path(g.output_dir) / "metrics.jsonl").string());
  for (const auto& [name, value] : metrics) d.metrics.push_back({name, value});
  int64_t valid = 0;
  for (const auto& o : outcomes) valid += o.valid;
  const bool cams = q.camids.defined();
  d.eval_note = fmt::format("{} queries ({} with a true match), {} gallery images{}; {}{}", Q, valid, G,
                            sets.gallery_is_query ? " (the query set itself)" : "",
                            cams ? "gallery images of the query's id and camera are excluded"
                                 : "no camera ids: nothing is excluded",
                            opt.re_ranking ? "; ranked by k-reciprocal re-ranking (score = minus distance)" : "");

  // CMC: the fraction of queries (with a true match) whose first true match is at rank <= k.
  d.cmc.title = "CMC curve";
  d.cmc.x_label = "rank k";
  d.cmc.y_label = "matched by rank k";
  report::Series cmc{"CMC", {}};
  const int64_t kmax = std::min<int64_t>(50, G);
  std::vector<int64_t> at(static_cast<size_t>(kmax + 1), 0);
  for (const auto& o : outcomes)
    if (o.valid && o.first_rank <= kmax) ++at[static_cast<size_t>(o.first_rank)];
  int64_t cum = 0;
  for (int64_t k = 1; k <= kmax && valid > 0; ++k) {
    cum += at[static_cast<size_t>(k)];
    cmc.points.emplace_back(static_cast<double>(k), static_cast<double>(cum) / static_cast<double>(valid));
  }
  d.cmc.series.push_back(std::move(cmc));

  auto [pos, neg] = similarity_samples(sets, g.seed, 200000);
  d.similarities.title = "Query–gallery similarities";
  d.similarities.x_label = "similarity (q · g)";
  float lo = 0, hi = 0;
  bool first = true;
  for (const auto* v : {&pos, &neg})
    for (float x : *v) {
      lo = first ? x : std::min(lo, x);
      hi = first ? x : std::max(hi, x);
      first = false;
    }
  // L2-normalized features: cosine similarities, within [-1, 1] up to rounding.
  if (g.feature_normalize && g.feature_binarize.empty()) lo = std::max(lo, -1.0f), hi = std::min(hi, 1.0f);
  d.similarities.lo = lo;
  d.similarities.hi = hi > lo ? hi : lo + 1;
  if (neg.size() >= 200000) d.similarities.x_label += ", different ids: a uniform sample";
  d.similarities.samples = {{"true matches", std::move(pos)}, {"different ids", std::move(neg)}};

  std::vector<double> ap;
  for (const auto& o : outcomes) ap.push_back(o.ap);
  const auto sel = report::select_queries(ap, args.queries, args.seed);
  std::vector<int64_t> shown;
  for (const auto* v : {&sel.worst, &sel.random, &sel.best}) shown.insert(shown.end(), v->begin(), v->end());
  std::vector<report::QueryRow> rows;
  if (!shown.empty()) {
    const auto s = scores_of(sets, shown, opt, descending).contiguous();
    // Held here: the pointers below read these tensors' storage.
    const auto glabels = gal.labels.flatten().contiguous(), qlabels = q.labels.flatten().contiguous();
    const auto gcam = cams ? gal.camids.flatten().contiguous() : torch::Tensor();
    const int64_t* gl = glabels.data_ptr<int64_t>();
    for (size_t r = 0; r < shown.size(); ++r) {
      const int64_t qi = shown[r];
      const int64_t label = qlabels.data_ptr<int64_t>()[qi];
      const int64_t cam = cams ? q.camids.flatten()[qi].item<int64_t>() : 0;
      const float* sp = s.data_ptr<float>() + static_cast<int64_t>(r) * G;
      // The ranking evaluate_retrieval uses: excluded items (same id and camera) left out, ties by index.
      std::vector<int64_t> order;
      for (int64_t j = 0; j < G; ++j)
        if (!(cams && gl[j] == label && gcam.data_ptr<int64_t>()[j] == cam)) order.push_back(j);
      const int64_t k = std::min<int64_t>(args.topk, static_cast<int64_t>(order.size()));
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return sp[a] > sp[b] || (sp[a] == sp[b] && a < b); });
      report::QueryRow row;
      row.path = sets.query_paths[static_cast<size_t>(qi)];
      row.label = std::to_string(label);
      row.ap = outcomes[static_cast<size_t>(qi)].ap;
      row.first_match_rank = outcomes[static_cast<size_t>(qi)].first_rank;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t gi = order[static_cast<size_t>(j)];
        row.top.push_back({sets.gallery_paths[static_cast<size_t>(gi)], std::to_string(gl[gi]),
                           descending ? sp[gi] : -sp[gi], gl[gi] == label});
      }
      rows.push_back(std::move(row));
    }
  }
  auto take = [&](size_t from, size_t n) {
    return std::vector<report::QueryRow>(rows.begin() + static_cast<std::ptrdiff_t>(from),
                                         rows.begin() + static_cast<std::ptrdiff_t>(from + n));
  };
  d.grids = {{"Worst queries (lowest AP)", take(0, sel.worst.size())},
             {"Random queries", take(sel.worst.size(), sel.random.size())},
             {"Best queries (highest AP)", take(sel.worst.size() + sel.random.size(), sel.best.size())}};
  d.config_yaml = c.dump();
  d.model_description = model_description(t.model());

  const std::string out = args.out.empty() ? (fs::path(g.output_dir) / "report.html").string() : args.out;
  if (const auto parent = fs::path(out).parent_path(); !parent.empty()) fs::create_directories(parent);
  const std::string html = report::render_html(d);
  write_file_atomic(out, html);
  const auto now = std::chrono::steady_clock::now();
  fmt::print("report: {} ({:.2f} MB; {} query and {} gallery images; {} queries shown x top-{}; {:.1f} s: model "
             "and features {:.1f} s, metrics and page {:.1f} s)\n",
             out, static_cast<double>(html.size()) / 1e6, Q, G, shown.size(), args.topk,
             std::chrono::duration<double>(now - start).count(),
             std::chrono::duration<double>(extracted - start).count(),
             std::chrono::duration<double>(now - extracted).count());
  return out;
}

int cmd_report(const ReportArgs& args) {
  write_report(args);
  return 0;
}

}  // namespace featlearn
