#include <featlearn/dist/process_group.h>

#include <featlearn/common/error.h>
#include <fmt/format.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#ifdef FEATLEARN_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef FEATLEARN_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <map>
#include <mutex>

namespace featlearn {

namespace {

int env_int(const char* name, int fallback, int lo) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > 1 << 20)
    throw Error(fmt::format("environment variable {}={}: expected an integer >= {}", name, v, lo));
  return static_cast<int>(x);
}

ProcessGroup* g_current = nullptr;

}  // namespace

DistEnv DistEnv::from_environment() {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1);
  e.local_rank = env_int("LOCAL_RANK", e.rank % e.local_world_size, 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1);
  if (e.master_port > 65535) throw Error(fmt::format("environment variable MASTER_PORT={}: not a port", e.master_port));
  if (e.rank >= e.world_size)
    throw Error(fmt::format("environment variables RANK={} and WORLD_SIZE={}: RANK must be below WORLD_SIZE", e.rank,
                            e.world_size));
  if (e.local_rank >= e.local_world_size)
    throw Error(fmt::format("environment variables LOCAL_RANK={} and LOCAL_WORLD_SIZE={}: LOCAL_RANK must be below "
                            "LOCAL_WORLD_SIZE", e.local_rank, e.local_world_size));
  return e;
}

#ifdef FEATLEARN_HAVE_GLOO
// The concrete groups: LibTorch 1.13 derives them from c10d::ProcessGroup, 2.x from c10d::Backend; both have
// the same collectives, called through `call`.
struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef FEATLEARN_HAVE_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  template <typename F>
  auto call(F&& f) {
#ifdef FEATLEARN_HAVE_NCCL
    if (nccl) return f(*nccl);
#endif
    return f(*gloo);
  }
};
#else
struct ProcessGroup::Impl {};
#endif

ProcessGroup::ProcessGroup(const DistEnv& env, std::chrono::milliseconds timeout, bool cuda)
    : env_(env), timeout_(timeout), impl_(std::make_unique<Impl>()) {
#ifndef FEATLEARN_HAVE_GLOO
  (void)cuda;
  throw Error("this featlearn was built without c10d (Debian's libgloo-dev was missing at build time): "
              "multi-process training is not available; rebuild after scripts/setup.sh");
#else
  const std::string where = fmt::format("rendezvous at {}:{} (MASTER_ADDR / MASTER_PORT) as rank {} of {}",
                                        env.master_addr, env.master_port, env.rank, env.world_size);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw Error(fmt::format("{} failed within {} s (Global.dist_timeout): {}", where, timeout.count() / 1000,
                            msg.substr(0, msg.find('\n'))));
  }
  if (cuda) {
#ifdef FEATLEARN_HAVE_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env.rank, env.world_size, opts);
    backend_ = "nccl";
#else
    throw Error("Global.device: gpu with several processes needs NCCL, which this LibTorch build does not have "
                "(run on the CPU with Gloo, or build featlearn against a CUDA LibTorch)");
#endif
  } else {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const bool loopback = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    try {
      impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      throw Error(fmt::format("{}: the Gloo group could not connect within {} s (Global.dist_timeout; is every rank "
                              "started?): {}",
                              where, timeout.count() / 1000, msg.substr(0, msg.find('\n'))));
    }
    backend_ = "gloo";
  }
#endif
}

ProcessGroup::~ProcessGroup() = default;

#ifdef FEATLEARN_HAVE_GLOO
namespace {
template <typename F>
void run_collective(const char* what, int rank, std::chrono::milliseconds timeout, F&& f) {
  try {
    auto work = f();
    work->wait(timeout);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw Error(fmt::format("rank {}: {} across the processes failed (another rank stopped, or none answered within "
                            "Global.dist_timeout = {} s): {}",
                            rank, what, timeout.count() / 1000, msg.substr(0, msg.find('\n'))));
  }
}
}  // namespace
#endif

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
#ifdef FEATLEARN_HAVE_GLOO
  if (tensors.empty()) return;
  run_collective("all-reduce", env_.rank, timeout_, [&] { return impl_->call([&](auto& g) { return g.allreduce(tensors); }); });
#else
  (void)tensors;
#endif
}

#ifdef FEATLEARN_HAVE_GLOO
namespace {
template <typename W>
class PendingWork : public ProcessGroup::Pending {
 public:
  PendingWork(W work, int rank, std::chrono::milliseconds timeout) : work_(std::move(work)), rank_(rank), timeout_(timeout) {}
  void wait() override {
    if (!work_) return;
    auto w = std::move(work_);
    run_collective("all-reduce", rank_, timeout_, [&] { return w; });
  }

 private:
  W work_;
  int rank_;
  std::chrono::milliseconds timeout_;
};
}  // namespace
#endif

std::unique_ptr<ProcessGroup::Pending> ProcessGroup::all_reduce_sum_async(std::vector<torch::Tensor>& tensors) {
#ifdef FEATLEARN_HAVE_GLOO
  try {
    auto work = impl_->call([&](auto& g) { return g.allreduce(tensors); });
    return std::make_unique<PendingWork<decltype(work)>>(std::move(work), env_.rank, timeout_);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw Error(fmt::format("rank {}: starting an all-reduce failed: {}", env_.rank, msg.substr(0, msg.find('\n'))));
  }
#else
  (void)tensors;
  struct Done : Pending {
    void wait() override {}
  };
  return std::make_unique<Done>();
#endif
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int root) {
#ifdef FEATLEARN_HAVE_GLOO
  if (tensors.empty()) return;
  c10d::BroadcastOptions o;
  o.rootRank = root;
  run_collective("broadcast", env_.rank, timeout_, [&] { return impl_->call([&](auto& g) { return g.broadcast(tensors, o); }); });
#else
  (void)tensors, (void)root;
#endif
}

torch::Tensor ProcessGroup::all_gather_rows(const torch::Tensor& local) {
#ifdef FEATLEARN_HAVE_GLOO
  // Row counts first, then every rank's rows padded to the largest count.
  std::vector<torch::Tensor> n{torch::tensor({local.size(0)}, torch::kInt64).to(local.device())};
  std::vector<std::vector<torch::Tensor>> counts(1);
  for (int r = 0; r < env_.world_size; ++r) counts[0].push_back(torch::zeros_like(n[0]));
  run_collective("all-gather", env_.rank, timeout_, [&] { return impl_->call([&](auto& g) { return g.allgather(counts, n); }); });
  int64_t most = 0;
  std::vector<int64_t> rows;
  for (const auto& c : counts[0]) rows.push_back(c.cpu().item<int64_t>()), most = std::max(most, rows.back());
  auto shape = local.sizes().vec();
  shape[0] = most;
  std::vector<torch::Tensor> mine{torch::zeros(shape, local.options())};
  if (local.size(0) > 0) mine[0].narrow(0, 0, local.size(0)).copy_(local);
  std::vector<std::vector<torch::Tensor>> all(1);
  for (int r = 0; r < env_.world_size; ++r) all[0].push_back(torch::empty(shape, local.options()));
  run_collective("all-gather", env_.rank, timeout_, [&] { return impl_->call([&](auto& g) { return g.allgather(all, mine); }); });
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < env_.world_size; ++r) parts.push_back(all[0][static_cast<size_t>(r)].narrow(0, 0, rows[static_cast<size_t>(r)]));
  return torch::cat(parts);
#else
  return local;
#endif
}

void ProcessGroup::barrier() {
#ifdef FEATLEARN_HAVE_GLOO
  // A one-element all-reduce: bounded by the same timeout as every other collective.
  std::vector<torch::Tensor> t{torch::zeros({1})};
  all_reduce_sum(t);
#endif
}

ProcessGroup* current_process_group() { return g_current; }

DistributedRun::DistributedRun(const DistEnv& env, std::chrono::milliseconds timeout, bool cuda) {
  if (env.world_size <= 1) return;
  group_ = std::make_unique<ProcessGroup>(env, timeout, cuda);
  g_current = group_.get();
}

DistributedRun::~DistributedRun() {
  if (g_current == group_.get()) g_current = nullptr;
}

void broadcast_module(ProcessGroup& pg, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (auto& p : module.named_parameters(true)) ts.push_back(p.value().detach());
  for (auto& b : module.named_buffers(true))
    if (b.value().defined()) ts.push_back(b.value());
  // Gloo broadcasts dense contiguous tensors of one dtype per call: one call per tensor keeps it simple and
  // happens only at start and after a resume.
  for (auto& t : ts) {
    FL_ASSERT(t.is_contiguous(), "broadcast_module: a non-contiguous parameter");
    std::vector<torch::Tensor> one{t};
    pg.broadcast(one, 0);
  }
}

struct GradientReducer::Impl {
  ProcessGroup* pg = nullptr;
  struct Bucket {
    std::vector<size_t> members;  // indices into params
    std::vector<int64_t> offsets;
    torch::Tensor flat;
    std::vector<char> ready;
    size_t n_ready = 0;
    std::unique_ptr<ProcessGroup::Pending> work;
  };
  std::vector<torch::Tensor> params;
  std::vector<std::pair<size_t, size_t>> where;  // param -> (bucket, slot)
  std::vector<Bucket> buckets;
  size_t next_to_start = 0;  // buckets start in index order on every rank
  std::mutex mu;

  void start_ready() {
    while (next_to_start < buckets.size() && buckets[next_to_start].n_ready == buckets[next_to_start].members.size()) {
      auto& b = buckets[next_to_start++];
      std::vector<torch::Tensor> t{b.flat};
      b.work = pg->all_reduce_sum_async(t);
    }
  }
  void on_grad(size_t i, const torch::Tensor& g) {
    std::lock_guard<std::mutex> lock(mu);
    auto [bi, slot] = where[i];
    auto& b = buckets[bi];
    if (b.ready[slot]) return;  // a second gradient for the same parameter in one backward: finish() recopies
    torch::NoGradGuard no_grad;
    b.flat.narrow(0, b.offsets[slot], g.numel()).copy_(g.reshape({-1}));
    b.ready[slot] = 1;
    ++b.n_ready;
    start_ready();
  }
};

GradientReducer::GradientReducer(ProcessGroup& pg, std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : impl_(std::make_shared<Impl>()) {
  auto& m = *impl_;
  m.pg = &pg;
  for (auto& p : params)
    if (p.requires_grad()) m.params.push_back(p);
  m.where.resize(m.params.size());
  // Reverse order: the last layers' gradients come first in backward. One dtype/device per bucket.
  int64_t bytes = 0;
  for (size_t k = m.params.size(); k-- > 0;) {
    const auto& p = m.params[k];
    const bool fresh = m.buckets.empty() || bytes >= bucket_bytes ||
                       m.params[m.buckets.back().members.back()].scalar_type() != p.scalar_type() ||
                       m.params[m.buckets.back().members.back()].device() != p.device();
    if (fresh) m.buckets.emplace_back(), bytes = 0;
    auto& b = m.buckets.back();
    b.offsets.push_back(b.offsets.empty() ? 0 : b.offsets.back() + m.params[b.members.back()].numel());
    b.members.push_back(k);
    m.where[k] = {m.buckets.size() - 1, b.members.size() - 1};
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (auto& b : m.buckets) {
    const auto& last = m.params[b.members.back()];
    b.flat = torch::zeros({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
    b.ready.assign(b.members.size(), 0);
  }
  std::weak_ptr<Impl> weak = impl_;
  for (size_t k = 0; k < m.params.size(); ++k)
    m.params[k].register_hook([weak, k](torch::Tensor g) {
      if (auto impl = weak.lock()) impl->on_grad(k, g);
      return g;
    });
}

GradientReducer::~GradientReducer() = default;

double GradientReducer::finish() {
  auto& m = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    // Parameters that got no gradient (or whose hook saw a partial one) take part with .grad or zeros.
    torch::NoGradGuard no_grad;
    for (auto& b : m.buckets)
      for (size_t s = 0; s < b.members.size(); ++s) {
        const auto& p = m.params[b.members[s]];
        if (!b.ready[s]) {
          auto dst = b.flat.narrow(0, b.offsets[s], p.numel());
          if (p.grad().defined()) dst.copy_(p.grad().reshape({-1}));
          else dst.zero_();
          b.ready[s] = 1;
          ++b.n_ready;
        }
      }
    m.start_ready();
  }
  torch::NoGradGuard no_grad;
  for (auto& b : m.buckets) {
    b.work->wait();
    b.work.reset();
    b.flat.div_(m.pg->world_size());
    for (size_t s = 0; s < b.members.size(); ++s) {
      auto& p = m.params[b.members[s]];
      auto avg = b.flat.narrow(0, b.offsets[s], p.numel()).view_as(p);
      if (p.grad().defined()) p.mutable_grad().copy_(avg);
      else p.mutable_grad() = avg.clone();
    }
    std::fill(b.ready.begin(), b.ready.end(), 0);
    b.n_ready = 0;
  }
  m.next_to_start = 0;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

namespace {
struct AllReduceSumFn : public torch::autograd::Function<AllReduceSumFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, torch::Tensor x) {
    std::vector<torch::Tensor> t{x.detach().clone().contiguous()};
    current_process_group()->all_reduce_sum(t);
    return t[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list g) {
    std::vector<torch::Tensor> t{g[0].contiguous().clone()};
    current_process_group()->all_reduce_sum(t);
    return {t[0]};
  }
};
}  // namespace

torch::Tensor differentiable_all_reduce_sum(const torch::Tensor& x) {
  if (!current_process_group()) return x;
  return AllReduceSumFn::apply(x);
}

}  // namespace featlearn
