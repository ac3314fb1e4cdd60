// Tracing an inference function into a frozen graph, and running it (docs/deploy.md).
#include <featlearn/common/error.h>
#include <featlearn/deploy/traced_graph.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/frozen_conv_folding.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/nn/module.h>

#include <vector>

namespace featlearn::deploy {

std::shared_ptr<torch::jit::Graph> trace_frozen(const TensorFn& fn, torch::nn::Module& module,
                                                const torch::Tensor& example) {
  // The tracer bakes a tensor it has not seen as an input into the graph as a constant, but refuses tensors
  // that require grad: lift the flag for the duration of the trace.
  std::vector<torch::Tensor> lifted;
  for (auto& p : module.parameters(true))
    if (p.requires_grad()) {
      p.requires_grad_(false);
      lifted.push_back(p);
    }
  struct Restore {
    std::vector<torch::Tensor>& ps;
    ~Restore() {
      for (auto& p : ps) p.requires_grad_(true);
    }
  } restore{lifted};
  torch::NoGradGuard no_grad;
  auto traced = torch::jit::tracer::trace(
      {example},
      [&](torch::jit::Stack in) -> torch::jit::Stack { return {fn(in.at(0).toTensor())}; },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false, /*force_outplace=*/true);
  auto graph = traced.first->graph;
  // The constants are the module's own tensors: give the graph copies, so that it is frozen (later training
  // does not change it) and its constants do not require grad once the flags are restored.
  for (auto* node : graph->nodes())
    if (node->kind() == c10::prim::Constant && node->hasAttribute(c10::attr::value) &&
        node->kindOf(c10::attr::value) == torch::jit::AttributeKind::t)
      node->t_(c10::attr::value, node->t(c10::attr::value).detach().clone());
  torch::jit::Inline(*graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  if (graph->outputs().size() != 1 || graph->inputs().size() != 1)
    throw Error("trace: expected one input and one output, got " + std::to_string(graph->inputs().size()) + " and " +
                std::to_string(graph->outputs().size()));
  return graph;
}

int64_t fold_batch_norms(std::shared_ptr<torch::jit::Graph>& graph) {
  auto count = [&] {
    int64_t n = 0;
    for (auto* node : graph->nodes())
      if (node->kind() == c10::Symbol::aten("batch_norm")) ++n;
    return n;
  };
  const int64_t before = count();
  torch::jit::FoldFrozenConvBatchnorm(graph);
  torch::jit::FoldFrozenConvAddOrSub(graph);
  torch::jit::FoldFrozenConvMulOrDiv(graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  return before - count();
}

GraphRunner::GraphRunner(std::shared_ptr<torch::jit::Graph> graph)
    : graph_(std::move(graph)), code_(std::make_shared<torch::jit::Code>(graph_, "featlearn_inference")) {}

torch::Tensor GraphRunner::operator()(const torch::Tensor& input) const {
  torch::jit::Stack stack{input};
  torch::jit::InterpreterState(*code_).run(stack);
  return stack.at(0).toTensor();
}

}  // namespace featlearn::deploy
