// Frozen-graph optimizations for CPU inference and the per-shape graph cache (docs/deploy.md, "Fast extraction").
#include <ATen/CPUGeneratorImpl.h>
#include <featlearn/common/error.h>
#include <featlearn/deploy/cpu_graph.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/frozen_concat_linear.h>
#include <torch/csrc/jit/passes/frozen_conv_add_relu_fusion.h>
#include <torch/csrc/jit/passes/frozen_linear_transpose.h>
#include <torch/csrc/jit/passes/frozen_ops_to_mkldnn.h>
#include <torch/nn/module.h>

#include <cstdio>

namespace featlearn::deploy {

void optimize_for_cpu(std::shared_ptr<torch::jit::Graph>& graph, const CpuGraphOptions& opts) {
  if (opts.fold_batch_norms) fold_batch_norms(graph);
  if (opts.concat_linear) torch::jit::FrozenConcatLinear(graph);
  if (opts.linear_transpose) torch::jit::FrozenLinearTranspose(graph);
  if (opts.conv_add_relu) torch::jit::FuseFrozenConvAddRelu(graph);
  if (opts.mkldnn) torch::jit::ConvertFrozenOpsToMKLDNN(graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
}

namespace {
int64_t count_in(torch::jit::Block* block, c10::Symbol kind) {
  int64_t n = 0;
  for (auto* node : block->nodes()) {
    if (node->kind() == kind) ++n;
    for (auto* b : node->blocks()) n += count_in(b, kind);
  }
  return n;
}
}  // namespace

int64_t count_nodes(const torch::jit::Graph& graph, const std::string& kind) {
  return count_in(const_cast<torch::jit::Block*>(graph.block()), c10::Symbol::fromQualString(kind));
}

FrozenForward::FrozenForward(TensorFn fn, torch::nn::Module& module, CpuGraphOptions opts)
    : fn_(std::move(fn)), module_(module), opts_(opts) {}

std::shared_ptr<FrozenForward::Entry> FrozenForward::build(const torch::Tensor& input) {
  auto shape = input.sizes().vec();
  auto gen = at::detail::createCPUGenerator(/*seed_in=*/20261201);
  const auto options = torch::TensorOptions().dtype(input.dtype());
  shape[0] = 2;
  const auto example = torch::randn(shape, gen, options);
  shape[0] = 3;
  const auto check = torch::randn(shape, gen, options);
  auto entry = std::make_shared<Entry>();
  const std::string what = fmt::format("[{}]", fmt::join(input.sizes().slice(1).vec(), ", "));
  // The configured passes first; when they convert to oneDNN and the result differs, the fallback without it.
  std::vector<CpuGraphOptions> tries{opts_};
  if (opts_.mkldnn) {
    CpuGraphOptions plain = opts_;
    plain.mkldnn = false;
    plain.channels_last = true;
    tries.push_back(plain);
  }
  std::string failure;
  for (const auto& opts : tries) {
    try {
      auto graph = trace_frozen(fn_, module_, example);
      optimize_for_cpu(graph, opts);
      auto runner = std::make_shared<GraphRunner>(graph);
      torch::NoGradGuard no_grad;
      const auto want = fn_(check);
      const auto got = (*runner)(opts.channels_last && check.dim() == 4
                                     ? check.contiguous(at::MemoryFormat::ChannelsLast)
                                     : check);
      // A bound far above float rounding (measured differences are ~1e-6 relative): it catches a wrong graph
      // (a batch size or shape baked into the trace, a miscomputing op), not rounding.
      const double scale = 1.0 + want.abs().max().item<double>();
      if (got.sizes() == want.sizes() && (got - want).abs().max().item<double>() <= 1e-3 * scale) {
        entry->runner = std::move(runner);
        entry->channels_last = opts.channels_last && check.dim() == 4;
        return entry;
      }
      failure = "differs from the eager forward";
    } catch (const std::exception& e) {
      failure = std::string("could not be traced: ") + e.what();
    }
  }
  fmt::print(stderr, "warning: the optimized CPU graph for input {} {}; running it eager (docs/deploy.md, Fast "
             "extraction)\n", what, failure);
  return entry;
}

std::shared_ptr<FrozenForward::Entry> FrozenForward::entry_for(const torch::Tensor& input) {
  std::vector<int64_t> key{static_cast<int64_t>(input.scalar_type())};
  for (int64_t d = 1; d < input.dim(); ++d) key.push_back(input.size(d));
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  auto entry = build(input);
  entries_.emplace(std::move(key), entry);
  return entry;
}

bool FrozenForward::uses_graph(const torch::Tensor& input) { return entry_for(input)->runner != nullptr; }

torch::Tensor FrozenForward::operator()(const torch::Tensor& input) {
  if (input.dim() < 1 || input.size(0) == 0 || !input.device().is_cpu()) {
    torch::NoGradGuard no_grad;
    return fn_(input);
  }
  auto entry = entry_for(input);
  torch::NoGradGuard no_grad;
  if (!entry->runner) return fn_(input);
  return (*entry->runner)(entry->channels_last ? input.contiguous(at::MemoryFormat::ChannelsLast) : input);
}

}  // namespace featlearn::deploy
