// An inference function traced into a TorchScript graph with its weights frozen in as constants
// (docs/deploy.md). Two consumers: the ONNX exporter (docs/deploy.md, "ONNX export") converts the graph node
// by node, and the fast CPU runtime (docs/deploy.md, "Fast extraction") runs it after LibTorch's frozen-graph
// passes (Conv+BatchNorm folding, Conv+Add/Mul folding, oneDNN conversion).
#pragma once
#include <torch/csrc/jit/ir/ir.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>

namespace torch::nn {
class Module;
}

namespace featlearn::deploy {

using TensorFn = std::function<torch::Tensor(const torch::Tensor&)>;

// Requires: `fn` computes its output from its input with ATen operations only (no data-dependent control
// flow: the trace records the path `example` takes); `module` holds every parameter and buffer fn reads.
// Ensures: a graph with one tensor input (the images) and one tensor output, every parameter and buffer a
// constant, in-place operations rewritten out of place, dead code removed. Each constant that is one of
// `module`'s parameters or buffers has its name as the value's debug name (e.g. "backbone.conv1.weight"). `module`'s parameters keep their
// requires_grad flags. Runs fn once on `example` (CPU, no grad).
std::shared_ptr<torch::jit::Graph> trace_frozen(const TensorFn& fn, torch::nn::Module& module,
                                                const torch::Tensor& example);

// Folds eval-mode BatchNorm into the convolution before it, and constant adds / multiplies into convolutions
// (LibTorch's FoldFrozenConv* passes). Returns the number of BatchNorm nodes folded.
int64_t fold_batch_norms(std::shared_ptr<torch::jit::Graph>& graph);

// The module a node of a trace_frozen graph comes from, for error messages: the module of the nearest
// parameter constant among its inputs or upstream of them ("" when none). fold_batch_norms keeps the names of
// the convolution weights it rewrites.
std::string module_of(const torch::jit::Node* node);

// Runs a traced graph (thread-safe: each call has its own interpreter state).
class GraphRunner {
 public:
  explicit GraphRunner(std::shared_ptr<torch::jit::Graph> graph);
  torch::Tensor operator()(const torch::Tensor& input) const;
  const std::shared_ptr<torch::jit::Graph>& graph() const { return graph_; }

 private:
  std::shared_ptr<torch::jit::Graph> graph_;
  std::shared_ptr<torch::jit::Code> code_;
};

}  // namespace featlearn::deploy
