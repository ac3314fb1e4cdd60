// `featlearn bench-data`: images/s of the Train data loader alone (decode + transform_ops + batching).
#include <featlearn/config/config.h>
#include <featlearn/data/loader.h>
#include <featlearn/engine/commands.h>

#include <fmt/format.h>

#include <chrono>

namespace featlearn {

int cmd_bench_data(const ConfigArgs& args, int64_t iters, int workers) {
  Config cfg = Config::load(args.config);
  cfg.apply_overrides(args.overrides);
  if (workers > 0) cfg.apply_override(fmt::format("DataLoader.Train.loader.num_workers={}", workers));
  if (iters <= 0) throw Error("--iters must be positive");
  auto section = cfg["DataLoader"]["Train"];
  if (!section.defined()) cfg.root().fail("missing DataLoader.Train");
  LoaderContext ctx;
  if (cfg["Global"].is_map() && cfg["Global"]["seed"].defined()) ctx.seed = static_cast<uint64_t>(cfg["Global"]["seed"].as<int64_t>());
  auto loader = DataLoader::create(section, ctx);
  if (loader->batches_per_epoch() <= 0) section.fail("yields no batch per epoch (fewer images than batch_size?)");

  // Epochs are chained as needed; the first batches (thread start, first reads) are warm-up.
  const int64_t warmup = std::min<int64_t>(3, std::max<int64_t>(1, iters / 10));
  int64_t epoch = 0, done = 0, images = 0;
  loader->start_epoch(epoch);
  auto next = [&]() {
    for (;;) {
      if (auto b = loader->next()) return *b;
      loader->start_epoch(++epoch);
    }
  };
  for (int64_t i = 0; i < warmup; ++i) next();
  const auto t0 = std::chrono::steady_clock::now();
  for (; done < iters; ++done) images += next().images.size(0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ips = images / std::max(secs, 1e-9);
  const Dataset& ds = loader->dataset();
  fmt::print("bench-data: {} batches, {} images in {:.2f} s with {} workers (dataset {} images, batch {})\n", done,
             images, secs, loader->num_workers(), ds.size(), loader->batch_size());
  fmt::print("{{\"loader\": \"featlearn\", \"workers\": {}, \"batch_size\": {}, \"img_per_s\": {:.1f}}}\n",
             loader->num_workers(), loader->batch_size(), ips);
  return 0;
}

}  // namespace featlearn
