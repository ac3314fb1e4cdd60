// featlearn index build | append | remove | search | eval | info (docs/index.md).
#include <ATen/Parallel.h>
#include <featlearn/common/atomic_file.h>
#include <featlearn/data/dataset.h>
#include <featlearn/data/transforms.h>
#include <featlearn/index/commands.h>
#include <featlearn/index/embedder.h>
#include <featlearn/index/index_config.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>

namespace featlearn {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

InferenceConfig load_inference_config(const ConfigArgs& args, Config* keep) {
  *keep = Config::load(args.config);
  keep->apply_overrides(args.overrides);
  auto c = InferenceConfig::parse(keep->root());
  if (c.cpu_num_threads > 0) at::set_num_threads(c.cpu_num_threads);
  return c;
}

std::unique_ptr<Embedder> make_embedder(const InferenceConfig& c) {
  if (c.model_dir.empty())
    c.root["Global"].fail("Global.rec_inference_model_dir is required (a `featlearn export` directory)");
  return std::make_unique<Embedder>(c.model_dir, c.transform_ops, c.use_gpu);
}

std::vector<std::string> split_fields(const std::string& line, const std::string& delimiter) {
  std::vector<std::string> out;
  // " " splits on runs of whitespace (VeriWild-style lists); any other delimiter, "\t" included, exactly.
  if (delimiter == " ") {
    std::istringstream in(line);
    std::string f;
    while (in >> f) out.push_back(f);
    return out;
  }
  size_t start = 0;
  while (true) {
    const size_t at = line.find(delimiter, start);
    out.push_back(line.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) break;
    start = at + delimiter.size();
  }
  return out;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

struct Embedded {
  std::vector<float> features;   // [n_ok, D]
  std::vector<size_t> ok;        // indices of the inputs that embedded
  std::vector<std::string> bad;  // per input: "" or the error
};

// Decodes + preprocesses in parallel (all cores), then one forward pass per batch.
Embedded embed_images(Embedder& emb, const std::vector<std::string>& paths, const std::vector<std::string>& sources,
                      int64_t batch_size, bool skip_bad) {
  Embedded r;
  r.bad.assign(paths.size(), "");
  const int64_t n = static_cast<int64_t>(paths.size());
  for (int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const int64_t b1 = std::min(n, b0 + batch_size);
    std::vector<torch::Tensor> imgs(static_cast<size_t>(b1 - b0));
    at::parallel_for(b0, b1, 1, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        try {
          imgs[static_cast<size_t>(i - b0)] = emb.preprocess_file(paths[static_cast<size_t>(i)]);
        } catch (const std::exception& ex) {
          r.bad[static_cast<size_t>(i)] = ex.what();
        }
      }
    });
    std::vector<torch::Tensor> good;
    for (int64_t i = b0; i < b1; ++i) {
      const auto& err = r.bad[static_cast<size_t>(i)];
      if (!err.empty()) {
        const std::string msg = fmt::format("{}: {}", sources[static_cast<size_t>(i)], err);
        if (!skip_bad) throw BadImageError(msg + " (set IndexProcess.on_bad_image: skip to leave such images out)");
        fmt::print(stderr, "warning: skipped {}\n", msg);
        continue;
      }
      good.push_back(imgs[static_cast<size_t>(i - b0)]);
      r.ok.push_back(static_cast<size_t>(i));
    }
    if (good.empty()) continue;
    for (size_t i = 1; i < good.size(); ++i)
      if (good[i].sizes() != good[0].sizes())
        throw Error(fmt::format("{}: preprocessing gave shape {} but {} gave {}; RecPreProcess.transform_ops must "
                                "give every image the same size (add ResizeImage)",
                                paths[r.ok[r.ok.size() - good.size() + i]], fmt::join(good[i].sizes(), "x"),
                                paths[r.ok[r.ok.size() - good.size()]], fmt::join(good[0].sizes(), "x")));
    auto f = emb.embed(torch::stack(good));
    const auto* p = f.data_ptr<float>();
    r.features.insert(r.features.end(), p, p + f.numel());
  }
  return r;
}

IndexSpec spec_for(const InferenceConfig& c, const Embedder& emb) {
  const auto& ip = c.index;
  if (ip.embedding_size > 0 && ip.embedding_size != emb.dim())
    ip.node["embedding_size"].fail(fmt::format("is {} but the model {} gives {}-dimensional features", ip.embedding_size,
                                               emb.model_dir(), emb.dim()));
  if (ip.metric == IndexMetric::kHamming && emb.feature_binarize().empty())
    ip.node["dist_type"].fail("hamming needs binary features: export the model with Global.feature_binarize: sign "
                              "(or round)");
  IndexSpec s;
  s.index_method = ip.index_method;
  s.metric = ip.metric;
  s.dim = emb.dim();
  s.nlist = ip.nlist;
  s.ef_construction = ip.ef_construction;
  s.model_fingerprint = emb.fingerprint();
  s.model_dir = emb.model_dir();
  s.preprocess_yaml = emb.preprocess_yaml();
  s.feature_binarize = emb.feature_binarize();
  return s;
}

void require_data_file(const IndexProcessConfig& ip) {
  if (ip.data_file.empty()) ip.node.fail("IndexProcess.data_file is required for this operation (the gallery list)");
}

std::string describe(const GalleryIndex& idx) {
  const auto& s = idx.spec();
  return fmt::format("{} items, {} {}, {}-{}", idx.size(), s.index_method, index_metric_name(s.metric), s.dim,
                     s.metric == IndexMetric::kHamming ? "bit" : "d");
}

json hits_json(const std::vector<SearchHit>& hits) {
  json a = json::array();
  for (const auto& h : hits) a.push_back({{"id", h.id}, {"path", h.path}, {"label", h.label}, {"score", h.score}});
  return a;
}

std::pair<std::vector<std::string>, std::vector<std::string>> query_list(const InferenceConfig& c,
                                                                         const std::vector<GalleryLine>& lines,
                                                                         const std::string& file) {
  std::vector<std::string> paths, sources;
  for (const auto& l : lines) {
    paths.push_back(join_image_path(c.index.image_root, l.path));
    sources.push_back(fmt::format("{}:{} ({})", file, l.line, paths.back()));
  }
  return {paths, sources};
}

}  // namespace

std::vector<GalleryLine> read_gallery_list(const std::string& file, const std::string& delimiter, bool need_label) {
  std::ifstream f(file);
  if (!f) throw Error(file + ": cannot open the list file");
  std::vector<GalleryLine> out;
  std::string line;
  int64_t no = 0;
  while (std::getline(f, line)) {
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    auto fields = split_fields(line, delimiter);
    for (auto& x : fields) x = trim(x);
    if (fields.empty() || fields[0].empty())
      throw Error(fmt::format("{}:{}: the line has no image path", file, no));
    if (need_label && (fields.size() < 2 || fields[1].empty()))
      throw Error(fmt::format("{}:{}: expected `path{}label`, got '{}' (check IndexProcess.delimiter)", file, no,
                              delimiter == "\t" ? "<TAB>" : delimiter, line));
    GalleryLine g;
    g.path = fields[0];
    g.label = fields.size() > 1 ? fields[1] : "";
    for (size_t i = 2; i < fields.size(); ++i) g.extra += (i > 2 ? delimiter : "") + fields[i];
    g.line = no;
    out.push_back(std::move(g));
  }
  return out;
}

int cmd_index_build(const IndexBuildArgs& args) {
  const auto t0 = std::chrono::steady_clock::now();
  Config keep;
  const auto c = load_inference_config(args.cfg, &keep);
  const auto& ip = c.index;
  const std::string op = args.operation.empty() ? ip.index_operation : args.operation;

  if (op == "remove") {
    auto idx = GalleryIndex::open(ip.index_dir, true);
    std::vector<int64_t> ids = args.remove_ids;
    for (const auto& l : args.remove_labels) {
      auto v = idx->ids_with_label(l);
      ids.insert(ids.end(), v.begin(), v.end());
    }
    int64_t lines = 0;
    if (args.remove_ids.empty() && args.remove_labels.empty()) {
      require_data_file(ip);
      for (const auto& l : read_gallery_list(ip.data_file, ip.delimiter, false)) {
        ++lines;
        std::vector<int64_t> v;
        if (ip.remove_by == "line") {
          v = idx->ids_with_path(l.path);
        } else if (ip.remove_by == "label") {
          v = idx->ids_with_label(l.path);
        } else {
          try {
            size_t used = 0;
            v.push_back(std::stoll(l.path, &used));
            if (used != l.path.size()) throw std::invalid_argument("trailing");
          } catch (const std::exception&) {
            throw Error(fmt::format("{}:{}: '{}' is not an item id (IndexProcess.remove_by: id)", ip.data_file, l.line,
                                    l.path));
          }
        }
        ids.insert(ids.end(), v.begin(), v.end());
      }
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const int64_t removed = idx->remove(ids);
    idx->save_snapshot();
    fmt::print("index remove: {} of {} requested items removed{}; {} now holds {} ({:.2f} s)\n", removed, ids.size(),
               lines ? fmt::format(" ({} list lines)", lines) : "", ip.index_dir, describe(*idx), seconds_since(t0));
    return 0;
  }

  require_data_file(ip);
  auto emb = make_embedder(c);
  auto lines = read_gallery_list(ip.data_file, ip.delimiter, true);
  std::unique_ptr<GalleryIndex> idx;
  int64_t already = 0;
  if (op == "append") {
    idx = GalleryIndex::open(ip.index_dir, true);
    idx->check_model(emb->fingerprint(), emb->dim(), emb->preprocess_yaml(), emb->model_dir());
    // Only lines not yet in the index are embedded (same path and label).
    std::vector<GalleryLine> fresh;
    for (auto& l : lines) {
      bool present = false;
      for (const auto id : idx->ids_with_path(l.path))
        if (auto m = idx->get(id); m && m->label == l.label) present = true;
      if (present)
        ++already;
      else
        fresh.push_back(std::move(l));
    }
    lines = std::move(fresh);
  }
  const auto spec = spec_for(c, *emb);
  auto [paths, sources] = query_list(c, lines, ip.data_file);
  for (size_t i = 0; i < paths.size() && !ip.skip_bad_images; ++i)
    if (!fs::exists(paths[i]))
      throw BadImageError(fmt::format("{}: image not found (IndexProcess.image_root is '{}'; set on_bad_image: skip "
                                      "to leave missing images out)",
                                      sources[i], ip.image_root));
  auto e = embed_images(*emb, paths, sources, ip.batch_size, ip.skip_bad_images);
  std::vector<NewItem> items;
  for (const auto i : e.ok) items.push_back({lines[i].path, lines[i].label, lines[i].extra});
  const int64_t skipped = static_cast<int64_t>(lines.size() - e.ok.size());
  if (op == "new") {
    if (items.empty()) throw Error(ip.data_file + ": no gallery image could be embedded");
    idx = GalleryIndex::create(ip.index_dir, spec, items, e.features.data());
  } else {
    idx->add(items, e.features.data());
    idx->save_snapshot();
  }
  fmt::print("index {}: {} images embedded{}{}; {} holds {} ({:.2f} s)\n", op, items.size(),
             skipped ? fmt::format(", {} bad images skipped", skipped) : "",
             already ? fmt::format(", {} lines already indexed", already) : "", ip.index_dir, describe(*idx),
             seconds_since(t0));
  return 0;
}

int cmd_index_search(const IndexSearchArgs& args) {
  Config keep;
  const auto c = load_inference_config(args.cfg, &keep);
  if (args.image.empty() == args.list.empty()) throw Error("index search: give exactly one of --image or --list");
  auto idx = GalleryIndex::open(c.index.index_dir, false);
  auto emb = make_embedder(c);
  idx->check_model(emb->fingerprint(), emb->dim(), emb->preprocess_yaml(), emb->model_dir());
  SearchOptions opt = c.index.search;
  if (args.top_k) opt.top_k = *args.top_k;
  if (opt.top_k <= 0) throw Error(fmt::format("--top-k must be positive, got {}", opt.top_k));
  if (args.score_thres) {
    if (idx->spec().metric == IndexMetric::kHamming)
      opt.hamming_radius = *args.score_thres;
    else
      opt.score_thres = *args.score_thres;
  }
  std::vector<std::string> queries, paths, sources;
  if (!args.image.empty()) {
    queries = {args.image};
    paths = {args.image};
    sources = {args.image};
  } else {
    const auto lines = read_gallery_list(args.list, c.index.delimiter, false);
    for (const auto& l : lines) queries.push_back(l.path);
    std::tie(paths, sources) = query_list(c, lines, args.list);
  }
  const int64_t bs = c.root["Global"]["batch_size"].defined() ? c.query_batch_size : c.index.batch_size;
  auto e = embed_images(*emb, paths, sources, bs, c.index.skip_bad_images);
  const auto hits = idx->search(e.features.data(), static_cast<int64_t>(e.ok.size()), opt);
  std::string out;
  size_t k = 0;
  for (size_t i = 0; i < queries.size(); ++i) {
    json j{{"query", queries[i]}};
    if (k < e.ok.size() && e.ok[k] == i)
      j["results"] = hits_json(hits[k++]);
    else
      j["error"] = e.bad[i];
    out += j.dump() + "\n";
  }
  if (args.out.empty())
    std::cout << out << std::flush;
  else
    write_file_atomic(args.out, out);
  return 0;
}

int cmd_index_eval(const IndexEvalArgs& args) {
  Config keep;
  const auto c = load_inference_config(args.cfg, &keep);
  auto idx = GalleryIndex::open(c.index.index_dir, false);
  SearchOptions opt = c.index.search;
  opt.score_thres.reset();
  opt.hamming_radius.reset();
  if (args.top_k) opt.top_k = *args.top_k;
  if (opt.top_k <= 0) throw Error(fmt::format("--top-k must be positive, got {}", opt.top_k));
  const int64_t d = idx->spec().dim;
  std::vector<float> q;
  std::vector<std::string> qlabels;
  std::string source;
  if (!args.list.empty()) {
    auto emb = make_embedder(c);
    idx->check_model(emb->fingerprint(), emb->dim(), emb->preprocess_yaml(), emb->model_dir());
    const auto lines = read_gallery_list(args.list, c.index.delimiter, true);
    auto [paths, sources] = query_list(c, lines, args.list);
    auto e = embed_images(*emb, paths, sources, c.index.batch_size, c.index.skip_bad_images);
    q = std::move(e.features);
    for (const auto i : e.ok) qlabels.push_back(lines[i].label);
    source = args.list;
  } else {
    // Stored gallery vectors as queries (a deterministic sample); no model needed.
    auto ids = idx->ids();
    std::mt19937_64 rng(0);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(static_cast<size_t>(std::min<int64_t>(args.sample, static_cast<int64_t>(ids.size()))));
    for (const auto id : ids) {
      auto v = idx->vector(id);
      q.insert(q.end(), v.begin(), v.end());
    }
    source = fmt::format("{} stored gallery vectors", ids.size());
  }
  const int64_t nq = static_cast<int64_t>(q.size()) / d;
  if (nq == 0) throw Error("index eval: no queries");
  auto t0 = std::chrono::steady_clock::now();
  const auto ann = idx->search(q.data(), nq, opt);
  const double ann_s = seconds_since(t0);
  SearchOptions ex = opt;
  ex.exact = true;
  idx->search(q.data(), std::min<int64_t>(nq, 1), ex);  // builds the brute-force copy outside the timing
  t0 = std::chrono::steady_clock::now();
  const auto exact = idx->search(q.data(), nq, ex);
  const double exact_s = seconds_since(t0);
  double recall = 0, top1 = 0, top5 = 0;
  for (int64_t i = 0; i < nq; ++i) {
    std::set<int64_t> truth;
    for (const auto& h : exact[static_cast<size_t>(i)]) truth.insert(h.id);
    int64_t found = 0;
    for (const auto& h : ann[static_cast<size_t>(i)]) found += truth.count(h.id);
    recall += truth.empty() ? 1.0 : static_cast<double>(found) / static_cast<double>(truth.size());
    if (!qlabels.empty()) {
      const auto& r = ann[static_cast<size_t>(i)];
      if (!r.empty() && r[0].label == qlabels[static_cast<size_t>(i)]) top1 += 1;
      for (size_t j = 0; j < r.size() && j < 5; ++j)
        if (r[j].label == qlabels[static_cast<size_t>(i)]) {
          top5 += 1;
          break;
        }
    }
  }
  json rep{{"index_dir", c.index.index_dir},
           {"index_method", idx->spec().index_method},
           {"queries", nq},
           {"query_source", source},
           {"k", opt.top_k},
           {"ef_search", opt.ef_search},
           {"nprobe", opt.nprobe},
           {"recall_at_k", recall / static_cast<double>(nq)},
           {"ann_qps", static_cast<double>(nq) / std::max(ann_s, 1e-9)},
           {"exact_qps", static_cast<double>(nq) / std::max(exact_s, 1e-9)}};
  if (!qlabels.empty()) {
    rep["top1_accuracy"] = top1 / static_cast<double>(nq);
    rep["top5_accuracy"] = top5 / static_cast<double>(nq);
  }
  const auto& sp = idx->spec();
  fmt::print(stderr,
             "index eval: {} ({} items, {} {}, {}-d, model {}): {} queries ({}), k={}: recall@{} vs exact {:.4f} "
             "(efSearch {}, nprobe {}), {:.0f} queries/s vs exact {:.0f}{}\n",
             c.index.index_dir, idx->size(), sp.index_method, index_metric_name(sp.metric), sp.dim,
             sp.model_fingerprint.empty() ? "none" : sp.model_fingerprint, nq, source, opt.top_k, opt.top_k,
             recall / static_cast<double>(nq), opt.ef_search, opt.nprobe, rep["ann_qps"].get<double>(),
             rep["exact_qps"].get<double>(),
             qlabels.empty() ? std::string()
                             : fmt::format("; label top-1 accuracy {:.4f}, top-5 accuracy {:.4f}",
                                           top1 / static_cast<double>(nq), top5 / static_cast<double>(nq)));
  const std::string text = rep.dump(2) + "\n";
  std::cout << text << std::flush;
  if (!args.out.empty()) write_file_atomic(args.out, text);
  return 0;
}

int cmd_index_info(const std::string& index_dir) {
  auto idx = GalleryIndex::open(index_dir, false);
  const auto i = idx->info();
  json j{{"index_dir", i.dir},
         {"format_version", i.format_version},
         {"items", i.items},
         {"dim", i.spec.dim},
         {"metric", index_metric_name(i.spec.metric)},
         {"index_method", i.spec.index_method},
         {"faiss_type", i.faiss_type},
         {"model_fingerprint", i.spec.model_fingerprint},
         {"model_dir", i.spec.model_dir},
         {"feature_binarize", i.spec.feature_binarize},
         {"generation", i.generation},
         {"snapshot_generation", i.snapshot_generation},
         {"faiss_positions", i.faiss_positions},
         {"dead_positions", i.dead_positions},
         {"size_bytes", i.size_bytes},
         {"consistent", i.consistent},
         {"note", i.problem}};
  std::cout << j.dump(2) << "\n" << std::flush;
  return i.consistent ? 0 : 1;
}

}  // namespace featlearn
