// One rank of the collective tests of tests/dist/test_collectives.cpp: started twice with the torchrun
// environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), it checks against a 1-process reference it computes
// itself and prints "OK <what>: max diff <d>" lines; exits 1 with "FAIL ..." otherwise.
//   dist_worker grads      averaged gradients of a conv + SyncBN + linear model on half a batch each equal the
//                          1-process gradients (plain BatchNorm) of the whole batch; running statistics too
//   dist_worker collectives  broadcast_module, all_gather_rows with unequal row counts, all_reduce_sum
//   dist_worker nccl       (GPU machine, scripts/device_check.sh; also with WORLD_SIZE=1) an NCCL group and one
//                          training step on CUDA with its gradients averaged through it
#include <featlearn/common/error.h>
#include <featlearn/dist/process_group.h>
#include <featlearn/model/batch_norm.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>

using namespace featlearn;

namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d bn{nullptr};
  BatchNorm1d bn1{nullptr};
  torch::nn::Linear fc{nullptr};
  NetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3).padding(1)));
    bn = register_module("bn", BatchNorm2d(6));
    fc = register_module("fc", torch::nn::Linear(6 * 4 * 4, 8));
    bn1 = register_module("bn1", BatchNorm1d(8));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn(conv(x)));
    x = torch::adaptive_avg_pool2d(x, {4, 4}).flatten(1);
    return bn1(fc(x));
  }
};
TORCH_MODULE(Net);

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

int fail(const std::string& what) {
  fmt::print("FAIL {}\n", what);
  std::fflush(stdout);
  return 1;
}

int grads(ProcessGroup& pg) {
  const int r = pg.rank(), w = pg.world_size();
  const int64_t per = 4, n = per * w;
  torch::manual_seed(7);
  const auto x = torch::randn({n, 3, 8, 8});
  const auto y = torch::randint(0, 5, {n}, torch::kInt64);
  torch::manual_seed(11);
  Net ref;
  torch::manual_seed(11 + r);  // rank 1 starts different: the broadcast makes the replicas identical
  Net net;
  broadcast_module(pg, *net);
  for (const auto& p : ref->named_parameters())
    if (max_diff(p.value(), net->named_parameters()[p.key()]) != 0.0) return fail("broadcast of " + p.key());
  enable_sync_batch_norm(*net);
  // Reference: one process, the whole batch, plain BatchNorm.
  auto loss_ref = torch::nn::functional::cross_entropy(ref->forward(x), y);
  loss_ref.backward();
  // Distributed: this rank's rows, SyncBN, gradients averaged by GradientReducer (all-reduces overlapped with
  // backward, several buckets).
  GradientReducer reducer(pg, net->parameters(), /*bucket_bytes=*/512);
  auto mine = torch::indexing::Slice(r * per, (r + 1) * per);
  auto loss = torch::nn::functional::cross_entropy(net->forward(x.index({mine})), y.index({mine}));
  loss.backward();
  reducer.finish();
  double worst = 0;
  for (const auto& p : ref->named_parameters()) {
    const double d = max_diff(p.value().grad(), net->named_parameters()[p.key()].grad());
    worst = std::max(worst, d);
    if (d > 1e-5) return fail(fmt::format("gradient of {}: max diff {}", p.key(), d));
  }
  fmt::print("OK gradients: max diff {:.3g}\n", worst);
  worst = 0;
  for (const auto& b : ref->named_buffers()) {
    const double d = max_diff(b.value().to(torch::kFloat64), net->named_buffers()[b.key()].to(torch::kFloat64));
    worst = std::max(worst, d);
    if (d > 1e-5) return fail(fmt::format("buffer {}: max diff {}", b.key(), d));
  }
  fmt::print("OK running statistics: max diff {:.3g}\n", worst);
  // A second step through the same reducer (its buckets and hooks are reused across steps).
  for (auto& p : net->parameters()) p.mutable_grad().zero_();
  torch::nn::functional::cross_entropy(net->forward(x.index({mine})), y.index({mine})).backward();
  reducer.finish();
  worst = 0;
  for (const auto& p : ref->named_parameters()) {
    const double d = max_diff(p.value().grad(), net->named_parameters()[p.key()].grad());
    worst = std::max(worst, d);
    if (d > 1e-5) return fail(fmt::format("overlapped gradient of {}: max diff {}", p.key(), d));
  }
  fmt::print("OK overlapped gradients: max diff {:.3g}\n", worst);
  return 0;
}

int collectives(ProcessGroup& pg) {
  const int r = pg.rank(), w = pg.world_size();
  // Rank r contributes r + 1 rows of value r.
  auto rows = torch::full({r + 1, 3}, static_cast<float>(r));
  auto all = pg.all_gather_rows(rows);
  int64_t expect_rows = 0;
  for (int k = 0; k < w; ++k) expect_rows += k + 1;
  if (all.size(0) != expect_rows) return fail(fmt::format("all_gather_rows: {} rows", all.size(0)));
  int64_t at = 0;
  for (int k = 0; k < w; ++k)
    for (int j = 0; j <= k; ++j, ++at)
      if (all[at][0].item<float>() != static_cast<float>(k)) return fail("all_gather_rows: row order");
  fmt::print("OK all_gather_rows: {} rows in rank order\n", all.size(0));
  std::vector<torch::Tensor> t{torch::full({5}, static_cast<double>(r + 1), torch::kFloat64)};
  pg.all_reduce_sum(t);
  if (t[0][0].item<double>() != w * (w + 1) / 2.0) return fail("all_reduce_sum");
  fmt::print("OK all_reduce_sum\n");
  return 0;
}

// One SGD step of Net on cuda:LOCAL_RANK with gradients averaged over an NCCL group.
int nccl(const DistEnv& env) {
  if (!torch::cuda::is_available()) return fail("nccl: no CUDA device");
  ProcessGroup pg(env, std::chrono::seconds(60), /*cuda=*/true);
  const torch::Device dev(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  torch::manual_seed(5);
  Net net;
  net->to(dev);
  broadcast_module(pg, *net);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  const auto x = torch::randn({4, 3, 8, 8}, dev);
  const auto y = torch::randint(0, 5, {4}, torch::TensorOptions().dtype(torch::kInt64).device(dev));
  GradientReducer reducer(pg, net->parameters());
  auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
  loss.backward();
  const auto before = net->fc->weight.grad().clone();
  reducer.finish();
  if (pg.world_size() == 1 && max_diff(before, net->fc->weight.grad()) != 0.0) return fail("nccl: 1-process average");
  opt.step();
  auto rows = pg.all_gather_rows(torch::ones({2, 3}, dev));
  if (rows.size(0) != 2 * pg.world_size()) return fail("nccl: all_gather_rows");
  fmt::print("OK nccl: backend {}, {} process(es), loss {:.4f}\n", pg.backend(), pg.world_size(), loss.item<double>());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  try {
    torch::set_num_threads(1);
    const auto env = DistEnv::from_environment();
    if (what == "nccl") return nccl(env);
    DistributedRun run(env, std::chrono::seconds(60), /*cuda=*/false);
    if (!run.group()) return fail("not a multi-process environment");
    if (what == "grads") return grads(*run.group());
    if (what == "collectives") return collectives(*run.group());
    return fail("unknown scenario '" + what + "'");
  } catch (const std::exception& e) {
    fmt::print("error: {}\n", e.what());
    return 2;
  }
}
