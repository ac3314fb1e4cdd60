// Each fast-extraction optimization's effect on CPU (docs/deploy.md, "Fast extraction"): the eager forward of a
// RecModel (random weights) against the traced frozen graph with each set of LibTorch frozen-graph passes, on the
// same random batch, interleaved. Prints one row per variant (best of REPS seconds per batch, images/s, speedup
// over eager, max abs difference of the L2-normalized features) and a JSON line per variant.
//
//   bench_cpu_graph [ARCH=ResNet50] [BATCH=32] [SIZE=224] [REPS=2] [VARIANTS=all]
//     VARIANTS: comma-separated names from the table (eager is always run).
#include <featlearn/config/config.h>
#include <featlearn/deploy/cpu_graph.h>
#include <featlearn/model/rec_model.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <thread>

using namespace featlearn;

namespace {
double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  const std::string arch = argc > 1 ? argv[1] : "ResNet50";
  const int64_t batch = argc > 2 ? std::stoll(argv[2]) : 32;
  const int64_t size = argc > 3 ? std::stoll(argv[3]) : 224;
  const int reps = argc > 4 ? std::stoi(argv[4]) : 2;
  const std::string only = argc > 5 ? argv[5] : "all";
  // The FC neck's input width is the backbone's: find it by running the backbone once.
  // All cores, as featlearn's programs run (OMP_NUM_THREADS when set; docs/distributed.md, "Launching").
  if (!std::getenv("OMP_NUM_THREADS")) at::set_num_threads(std::max(1u, std::thread::hardware_concurrency()));
  torch::manual_seed(0);
  auto probe_cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: " + arch +
                                           ", pretrained: False}, BackboneStopLayer: {name: flatten}}\n",
                                       "<bench>");
  RecModel probe(probe_cfg.root()["Arch"], std::vector<int64_t>{3, size, size});
  probe->eval();
  int64_t width;
  {
    torch::NoGradGuard ng;
    width = probe->forward(torch::zeros({1, 3, size, size})).get("features").flatten(1).size(1);
  }
  auto cfg = Config::from_string("Arch: {name: RecModel, Backbone: {name: " + arch +
                                     ", pretrained: False}, BackboneStopLayer: {name: flatten}, "
                                     "Neck: {name: FC, embedding_size: " + std::to_string(width) +
                                     ", class_num: 512}}\n",
                                 "<bench>");
  RecModel model(cfg.root()["Arch"], std::vector<int64_t>{3, size, size});
  model->eval();
  // Non-trivial BatchNorm statistics, so that folding them is exercised.
  {
    torch::NoGradGuard ng;
    for (auto& b : model->named_buffers(true)) {
      if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.1, 0.1);
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
    }
  }
  auto fn = [&](const torch::Tensor& x) { return model->forward(x).get("features").flatten(1); };
  auto normalize = [](const torch::Tensor& t) {
    return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  struct Variant {
    std::string name;
    deploy::CpuGraphOptions opts;
  };
  auto opt = [](bool fold, bool cl, bool mkldnn, bool add_relu, bool lt, bool cat) {
    deploy::CpuGraphOptions o;
    o.fold_batch_norms = fold;
    o.channels_last = cl;
    o.mkldnn = mkldnn;
    o.conv_add_relu = add_relu;
    o.linear_transpose = lt;
    o.concat_linear = cat;
    return o;
  };
  std::vector<Variant> all = {
      {"graph", opt(false, false, false, false, false, false)},
      {"fold", opt(true, false, false, false, false, false)},
      {"fold+cl", opt(true, true, false, false, false, false)},
      {"fold+cl+addrelu", opt(true, true, false, true, false, false)},
      {"fold+cl+lintr+cat", opt(true, true, false, false, true, true)},
      {"fold+mkldnn", opt(true, false, true, false, false, false)},
      {"fold+cl+mkldnn", opt(true, true, true, false, false, false)},
  };
  std::vector<Variant> variants;
  for (auto& v : all)
    if (only == "all" || ("," + only + ",").find("," + v.name + ",") != std::string::npos) variants.push_back(v);
  torch::NoGradGuard ng;
  const auto x = torch::randn({batch, 3, size, size});
  const auto ref = normalize(fn(x));
  std::vector<std::shared_ptr<deploy::GraphRunner>> runners;
  std::vector<double> diffs;
  for (auto& v : variants) {
    auto g = deploy::trace_frozen(fn, *model, x.slice(0, 0, 2));
    deploy::optimize_for_cpu(g, v.opts);
    runners.push_back(std::make_shared<deploy::GraphRunner>(g));
  }
  auto input_for = [&](size_t i) { return variants[i].opts.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x; };
  for (size_t i = 0; i < variants.size(); ++i)  // warm-up run, and the difference
    diffs.push_back((normalize((*runners[i])(input_for(i))) - ref).abs().max().item<double>());
  std::vector<double> best(variants.size(), 1e30);
  double eager = 1e30;
  for (int r = 0; r < reps; ++r) {
    eager = std::min(eager, seconds([&] { fn(x); }));
    for (size_t i = 0; i < variants.size(); ++i) {
      const auto in = input_for(i);
      best[i] = std::min(best[i], seconds([&] { (*runners[i])(in); }));
    }
  }
  fmt::print("{} batch {} {}x{}, {} threads, best of {}\n", arch, batch, size, size, at::get_num_threads(), reps);
  fmt::print("{:<20} {:>9} {:>9} {:>8} {:>10}\n", "variant", "s/batch", "images/s", "speedup", "max diff");
  fmt::print("{:<20} {:>9.3f} {:>9.1f} {:>8.2f} {:>10}\n", "eager", eager, batch / eager, 1.0, "-");
  for (size_t i = 0; i < variants.size(); ++i)
    fmt::print("{:<20} {:>9.3f} {:>9.1f} {:>8.2f} {:>10.2e}\n", variants[i].name, best[i], batch / best[i],
               eager / best[i], diffs[i]);
  for (size_t i = 0; i < variants.size(); ++i)
    fmt::print("{{\"arch\": \"{}\", \"batch\": {}, \"size\": {}, \"variant\": \"{}\", \"seconds\": {:.4f}, "
               "\"eager_seconds\": {:.4f}, \"max_diff\": {:.3e}}}\n",
               arch, batch, size, variants[i].name, best[i], eager, diffs[i]);
  return 0;
}
