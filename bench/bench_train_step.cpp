// Compute-only training rate: forward + backward + optimizer step of a config's model and losses on a fixed
// random P×K batch (no data loading). Compare with bench/peer_train_step.py (same model in PyTorch).
//   bench_train_step -c configs/emoji/ResNet18_reid.yaml [--iters 20] [-o ...]
#include <CLI/CLI.hpp>
#include <featlearn/config/config.h>
#include <featlearn/engine/commands.h>
#include <featlearn/loss/loss.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

int main(int argc, char** argv) {
  featlearn::ensure_blas_coretype(argv);
  CLI::App app{"compute-only training rate"};
  std::string cfg_path;
  std::vector<std::string> overrides;
  int iters = 20, batch = 64, k = 2;
  app.add_option("-c", cfg_path)->required();
  app.add_option("-o", overrides);
  app.add_option("--iters", iters);
  app.add_option("--batch", batch);
  app.add_option("--k", k);
  CLI11_PARSE(app, argc, argv);
  try {
    featlearn::init_runtime();
    auto cfg = featlearn::Config::load(cfg_path);
    cfg.apply_overrides(overrides);
    torch::manual_seed(0);
    featlearn::RecModel model(cfg["Arch"]);
    featlearn::CombinedLoss loss(cfg["Loss"]["Train"]);
    auto shape = cfg["Global"].get<std::vector<int64_t>>("image_shape", {3, 224, 224});
    featlearn::ParameterScopes scopes = {{"RecModel", featlearn::named_parameters_of(*model)}};
    auto opt = featlearn::OptimizerSet::create(cfg["Optimizer"], scopes, 1000, 10);
    auto x = torch::randn({batch, shape[0], shape[1], shape[2]});
    auto y = torch::arange(batch / k).repeat_interleave(k);
    model->train();
    auto step = [&] {
      auto out = model->forward(x, y);
      auto r = loss->forward(out, y);
      opt->zero_grad();
      r.total.backward();
      opt->step();
    };
    for (int i = 0; i < 3; ++i) step();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("{{\"impl\": \"featlearn\", \"threads\": {}, \"batch\": {}, \"train_step_img_per_s\": {:.1f}}}\n",
               torch::get_num_threads(), batch, iters * batch / s);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
