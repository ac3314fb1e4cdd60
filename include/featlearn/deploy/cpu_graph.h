// Fast CPU inference (docs/deploy.md, "Fast extraction"): a traced frozen graph (traced_graph.h) optimized with
// LibTorch's frozen-graph passes, run on channels_last input, traced once per image shape and checked against
// the eager forward before it is used.
#pragma once
#include <featlearn/deploy/traced_graph.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace featlearn::deploy {

// Which optimizations optimize_for_cpu applies. The defaults are the ones measured to win on CPU
// (docs/deploy.md, "Fast extraction", has the measurements).
struct CpuGraphOptions {
  // Eval-mode BatchNorm folded into the convolution before it, constant add / mul folded into convolutions.
  bool fold_batch_norms = true;
  // Conv2d + add (+ relu) fused into one oneDNN call (FuseFrozenConvAddRelu).
  bool conv_add_relu = false;
  // Linear layers sharing an input concatenated into one (FrozenConcatLinear).
  bool concat_linear = false;
  // Linear rewritten as a matmul against a pre-transposed weight (FrozenLinearTranspose).
  bool linear_transpose = false;
  // Convolutions and linears converted to oneDNN (MKLDNN) ops on oneDNN tensors (ConvertFrozenOpsToMKLDNN).
  bool mkldnn = true;
  // The input is converted to channels_last before the graph runs (the layout LibTorch's CPU convolutions run
  // fastest in; with mkldnn the graph converts its input to oneDNN's layout itself, and this adds a copy).
  bool channels_last = false;
};

// Applies `opts`' passes to a frozen graph (trace_frozen's output), in place.
void optimize_for_cpu(std::shared_ptr<torch::jit::Graph>& graph, const CpuGraphOptions& opts);

// Counts the nodes of one kind (e.g. "aten::batch_norm", "prim::MKLDNNGroup") in a graph and its blocks.
int64_t count_nodes(const torch::jit::Graph& graph, const std::string& kind);

// The forward of a module on CPU, through a graph optimized for the input's [C, H, W] and dtype.
// Requires: `fn` is a pure inference function of its [N, ...] input that reads only `module`'s parameters
// and buffers (the trace records one path: no data-dependent control flow); the parameters do not change
// afterwards (the graph holds a copy); `module` outlives this object.
// Ensures: operator() returns what fn returns, within float rounding. The first call with a new [C, H, W]
// traces fn on a [2, C, H, W] random batch, optimizes the graph, and checks it against fn on a [3, C, H, W]
// random batch (so a batch size baked into the trace is caught too); if they differ and the options convert to
// oneDNN, the graph is optimized again without oneDNN and with channels_last input (oneDNN's converted ops give
// wrong results for some models on some CPUs: PPLCNet on AVX-512 Xeons, docs/deploy.md) and checked again; if
// that differs too, that shape runs fn (eager) from then on and a warning is printed once. Thread-safe: concurrent calls share the graphs, each run
// has its own interpreter state; tracing is done once per shape, under a lock.
class FrozenForward {
 public:
  FrozenForward(TensorFn fn, torch::nn::Module& module, CpuGraphOptions opts = {});
  torch::Tensor operator()(const torch::Tensor& input);
  // Whether input of this shape (any batch size) runs the optimized graph; traces the shape if not done yet.
  bool uses_graph(const torch::Tensor& input);

 private:
  struct Entry {
    std::shared_ptr<GraphRunner> runner;  // null: this shape runs eager
    bool channels_last = false;           // the runner takes channels_last input
  };
  std::shared_ptr<Entry> entry_for(const torch::Tensor& input);
  std::shared_ptr<Entry> build(const torch::Tensor& input);

  TensorFn fn_;
  torch::nn::Module& module_;
  CpuGraphOptions opts_;
  std::mutex mutex_;
  std::map<std::vector<int64_t>, std::shared_ptr<Entry>> entries_;  // key: dtype, C, H, W
};

}  // namespace featlearn::deploy
