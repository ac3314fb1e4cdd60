// `featlearn serve`: config -> index + model -> Server, until SIGINT/SIGTERM.
#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/index/embedder.h>
#include <featlearn/index/index_config.h>
#include <featlearn/serve/server.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

namespace featlearn {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

}  // namespace

int cmd_serve(const ServeArgs& args) {
  const bool with_config = !args.cfg.config.empty();
  if (with_config == !args.index_dir.empty())
    throw Error(with_config ? "serve: give either -c CONFIG or --index-dir DIR, not both"
                            : "serve: give -c CONFIG (model + IndexProcess.index_dir) or --index-dir DIR (vector-only)");
  if (!with_config && !args.cfg.overrides.empty()) throw Error("serve: -o overrides need -c CONFIG");

  std::shared_ptr<Embedder> embedder;
  SearchOptions defaults;
  std::string index_dir = args.index_dir;
  Config keep;
  if (with_config) {
    keep = Config::load(args.cfg.config);
    keep.apply_overrides(args.cfg.overrides);
    const auto c = InferenceConfig::parse(keep.root());
    if (c.cpu_num_threads > 0) at::set_num_threads(c.cpu_num_threads);
    if (c.index.index_dir.empty()) c.index.node.fail("missing required key 'index_dir'");
    index_dir = c.index.index_dir;
    defaults = c.index.search;
    if (!c.model_dir.empty()) embedder = std::make_shared<Embedder>(c.model_dir, c.transform_ops, c.use_gpu);
  }
  std::shared_ptr<GalleryIndex> index = GalleryIndex::open(index_dir, /*writable=*/true);
  if (embedder)
    index->check_model(embedder->fingerprint(), embedder->dim(), embedder->preprocess_yaml(), embedder->model_dir());

  Server server(index, embedder, defaults, args.opt);
  const int port = server.bind();
  const auto& spec = index->spec();
  fmt::print("featlearn serve: http://{}:{}  index {} ({} items, {} {}, dim {}), {}\n", args.opt.host, port, index_dir,
             index->size(), spec.index_method, index_metric_name(spec.metric), spec.dim,
             embedder ? "model " + embedder->fingerprint() + " (" + embedder->model_dir() + ")"
                      : std::string("no model (vector requests only)"));
  fmt::print("  writes {}; Ctrl-C stops (a snapshot is saved)\n",
             args.opt.token_file.empty() ? "open (loopback only)" : "need the bearer token");
  std::fflush(stdout);

  g_stop_signal = 0;
  auto old_int = std::signal(SIGINT, on_stop_signal);
  auto old_term = std::signal(SIGTERM, on_stop_signal);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (g_stop_signal != 0) {
        server.stop();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  try {
    server.run();
  } catch (...) {
    done = true;
    watcher.join();
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    throw;
  }
  done = true;
  watcher.join();
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  fmt::print("featlearn serve: stopped ({} items, snapshot {})\n", index->size(),
             index->snapshot_stale() ? "stale" : "saved");
  return 0;
}

}  // namespace featlearn
