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

#include <unordered_map>
#include <unordered_set>
#include <utility>
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
  // Which parameter or buffer each constant is (by storage), so that the constant values can carry its name
  // (module_of, error messages of the ONNX exporter).
  std::unordered_map<const void*, std::string> names;
  for (const auto& p : module.named_parameters(true))
    if (p.value().defined()) names.emplace(p.value().data_ptr(), p.key());
  for (const auto& b : module.named_buffers(true))
    if (b.value().defined() && b.value().numel() > 0) names.emplace(b.value().data_ptr(), b.key());
  // The constants are the module's own tensors: give the graph copies, so that it is frozen (later training
  // does not change it) and its constants do not require grad once the flags are restored.
  for (auto* node : graph->nodes())
    if (node->kind() == c10::prim::Constant && node->hasAttribute(c10::attr::value) &&
        node->kindOf(c10::attr::value) == torch::jit::AttributeKind::t) {
      const auto& t = node->t(c10::attr::value);
      if (t.defined() && t.numel() > 0) {
        const auto it = names.find(t.data_ptr());
        if (it != names.end()) node->output()->setDebugName(it->second);
      }
      node->t_(c10::attr::value, t.detach().clone());
    }
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
  // The folding passes give the convolutions new weight constants: carry the parameter names over.
  std::vector<std::pair<torch::jit::Node*, std::string>> conv_weights;
  for (auto* node : graph->nodes())
    if (node->kind() == c10::Symbol::aten("_convolution") || node->kind() == c10::Symbol::aten("conv2d"))
      if (node->inputs().size() > 1 && node->input(1)->node()->kind() == c10::prim::Constant &&
          node->input(1)->hasDebugName())
        conv_weights.emplace_back(node, node->input(1)->debugNameBase());
  torch::jit::FoldFrozenConvBatchnorm(graph);
  torch::jit::FoldFrozenConvAddOrSub(graph);
  torch::jit::FoldFrozenConvMulOrDiv(graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  for (auto& [conv, name] : conv_weights) {
    auto* w = conv->input(1);
    if (w->node()->kind() == c10::prim::Constant && (!w->hasDebugName() || w->debugNameBase() != name))
      w->setDebugName(name);
  }
  return before - count();
}

std::string module_of(const torch::jit::Node* node) {
  // A parameter name "a.b.weight" (a renamed duplicate "a.b.weight.1") -> its module "a.b".
  auto module_name = [](const torch::jit::Value* v) -> std::string {
    if (v->node()->kind() != c10::prim::Constant || !v->hasDebugName()) return "";
    const std::string name = v->debugNameBase();
    const auto dot = name.rfind('.');
    return dot == std::string::npos ? "" : name.substr(0, dot);
  };
  // Breadth-first through the producers of the node's inputs: the nearest named constant.
  std::vector<const torch::jit::Node*> frontier{node};
  std::unordered_set<const torch::jit::Node*> seen{node};
  while (!frontier.empty()) {
    std::vector<const torch::jit::Node*> next;
    for (const auto* n : frontier)
      for (const auto* in : n->inputs()) {
        const std::string m = module_name(in);
        if (!m.empty()) return m;
        if (seen.insert(in->node()).second) next.push_back(in->node());
      }
    frontier = std::move(next);
  }
  return "";
}

GraphRunner::GraphRunner(std::shared_ptr<torch::jit::Graph> graph)
    : graph_(std::move(graph)), code_(std::make_shared<torch::jit::Code>(graph_, "featlearn_inference")) {}

torch::Tensor GraphRunner::operator()(const torch::Tensor& input) const {
  torch::jit::Stack stack{input};
  torch::jit::InterpreterState(*code_).run(stack);
  return stack.at(0).toTensor();
}

}  // namespace featlearn::deploy
