// Evaluation-speed benchmark (issue 4): retrieval metrics (Recallk 1/5, mAP, mINP) for Q queries × G gallery
// items of D-dim L2-normalized random features with L labels and C cameras. Prints one JSON object with the
// time and peak memory (getrusage). Compared side by side with peer_eval_argsort.py by eval_side_by_side.sh.
//
//   bench_eval [--queries 20000] [--gallery 200000] [--dim 512] [--labels 1000] [--cams 8] [--seed 0]
//              [--block 64] [--threads <all cores>] [--data DIR] [--max-queries N]
//
// With --data DIR the features are read from DIR (written by peer_eval_argsort.py --write-data DIR):
// meta.json and raw little-endian q_feat.f32 [Q, D], g_feat.f32 [G, D], q_label.i64, g_label.i64, q_cam.i64,
// g_cam.i64. --max-queries evaluates only the first N queries (for runs the peer cannot finish in time).
#include <featlearn/metric/retrieval.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace {

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

torch::Tensor read_raw(const std::string& path, torch::ScalarType type, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, type);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (in.gcount() != static_cast<std::streamsize>(t.nbytes())) throw std::runtime_error(path + ": file too short");
  return t;
}

// Minimal reader for the flat {"key": int, ...} meta.json written by the peer script.
std::map<std::string, int64_t> read_meta(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  std::map<std::string, int64_t> out;
  size_t pos = 0;
  while ((pos = s.find('"', pos)) != std::string::npos) {
    const size_t end = s.find('"', pos + 1);
    const std::string key = s.substr(pos + 1, end - pos - 1);
    const size_t colon = s.find(':', end);
    out[key] = std::strtoll(s.c_str() + colon + 1, nullptr, 10);
    pos = s.find_first_of(",}", colon);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args = {{"queries", "20000"}, {"gallery", "200000"}, {"dim", "512"},
                                             {"labels", "1000"},   {"cams", "8"},         {"seed", "0"},
                                             {"block", "64"},      {"threads", "0"},      {"data", ""},
                                             {"max-queries", "0"}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || !args.count(a.substr(2)) || i + 1 >= argc) {
      std::cerr << "usage: bench_eval [--queries N] [--gallery N] [--dim D] [--labels L] [--cams C] [--seed S] "
                   "[--block B] [--threads T] [--data DIR] [--max-queries N]\n";
      return 2;
    }
    args[a.substr(2)] = argv[++i];
  }
  try {
    int threads = std::stoi(args["threads"]);
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    torch::set_num_threads(threads);

    torch::Tensor qf, gf, ql, gl, qc, gc;
    if (!args["data"].empty()) {
      const std::string dir = args["data"];
      auto meta = read_meta(dir + "/meta.json");
      const int64_t Q = meta.at("queries"), G = meta.at("gallery"), D = meta.at("dim");
      qf = read_raw(dir + "/q_feat.f32", torch::kFloat, {Q, D});
      gf = read_raw(dir + "/g_feat.f32", torch::kFloat, {G, D});
      ql = read_raw(dir + "/q_label.i64", torch::kLong, {Q});
      gl = read_raw(dir + "/g_label.i64", torch::kLong, {G});
      qc = read_raw(dir + "/q_cam.i64", torch::kLong, {Q});
      gc = read_raw(dir + "/g_cam.i64", torch::kLong, {G});
    } else {
      const int64_t Q = std::stoll(args["queries"]), G = std::stoll(args["gallery"]), D = std::stoll(args["dim"]);
      const int64_t L = std::stoll(args["labels"]), C = std::stoll(args["cams"]);
      torch::manual_seed(std::stoll(args["seed"]));
      qf = torch::nn::functional::normalize(torch::randn({Q, D}), torch::nn::functional::NormalizeFuncOptions().dim(1));
      gf = torch::nn::functional::normalize(torch::randn({G, D}), torch::nn::functional::NormalizeFuncOptions().dim(1));
      ql = torch::randint(0, L, {Q}, torch::kLong);
      gl = torch::randint(0, L, {G}, torch::kLong);
      qc = torch::randint(0, C, {Q}, torch::kLong);
      gc = torch::randint(0, C, {G}, torch::kLong);
    }
    const int64_t max_q = std::stoll(args["max-queries"]);
    if (max_q > 0 && max_q < qf.size(0)) {
      qf = qf.slice(0, 0, max_q);
      ql = ql.slice(0, 0, max_q);
      qc = qc.slice(0, 0, max_q);
    }

    auto cfg = featlearn::Config::from_string("Eval:\n  - Recallk: {topk: [1, 5]}\n  - mAP: {}\n  - mINP: {}\n", "bench");
    const auto metrics = featlearn::MetricSet::create(cfg["Eval"]);
    featlearn::RetrievalOptions opt;
    opt.block_size = std::stoll(args["block"]);
    const double rss_before = peak_rss_mb();
    featlearn::RetrievalStats stats;
    const auto t0 = std::chrono::steady_clock::now();
    const auto values = featlearn::evaluate_retrieval(metrics, qf, ql, qc, gf, gl, gc, opt, &stats);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("{\"impl\": \"featlearn\", \"queries\": %lld, \"gallery\": %lld, \"dim\": %lld, \"threads\": %d, "
                "\"block\": %lld, \"seconds\": %.3f, \"peak_rss_before_eval_mb\": %.1f, \"peak_rss_mb\": %.1f, "
                "\"queries_without_match\": %lld, \"metrics\": {",
                static_cast<long long>(qf.size(0)), static_cast<long long>(gf.size(0)),
                static_cast<long long>(qf.size(1)), threads, static_cast<long long>(opt.block_size), seconds,
                rss_before, peak_rss_mb(), static_cast<long long>(stats.queries_without_match));
    for (size_t i = 0; i < values.size(); ++i)
      std::printf("%s\"%s\": %.9f", i ? ", " : "", values[i].first.c_str(), values[i].second);
    std::printf("}}\n");
  } catch (const std::exception& e) {
    std::cerr << "bench_eval: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
