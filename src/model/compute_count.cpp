// Counting multiply-accumulates with an ATen RecordFunction observer (see compute_count.h). LibTorch modules
// have no forward hooks; observing the dispatched operators counts every backbone, neck and head alike,
// whichever way it calls its layers.
#include <featlearn/model/compute_count.h>

#include <featlearn/common/error.h>

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <cstring>
#include <memory>
#include <set>

namespace featlearn {
namespace {

enum class CountedOp { kNone, kConv, kLinear, kMatmul, kBatchNorm, kAdaptiveAvgPool, kAvgPool };

CountedOp counted_op(const char* name) {
  static const std::pair<const char*, CountedOp> kOps[] = {
      {"aten::convolution", CountedOp::kConv},       {"aten::linear", CountedOp::kLinear},
      {"aten::matmul", CountedOp::kMatmul},          {"aten::mm", CountedOp::kMatmul},
      {"aten::bmm", CountedOp::kMatmul},             {"aten::addmm", CountedOp::kMatmul},
      {"aten::baddbmm", CountedOp::kMatmul},         {"aten::batch_norm", CountedOp::kBatchNorm},
      {"aten::adaptive_avg_pool2d", CountedOp::kAdaptiveAvgPool}, {"aten::avg_pool2d", CountedOp::kAvgPool}};
  for (const auto& [n, op] : kOps)
    if (std::strcmp(name, n) == 0) return op;
  return CountedOp::kNone;
}

// What the start callback saw: the operator and the numbers the end callback needs besides the output.
struct CountContext : at::ObserverContext {
  CountedOp op = CountedOp::kNone;
  bool counted = false;  // outermost counted operator
  int64_t per_output = 0;  // MACs per output element (conv, linear, matmul)
  bool has_bias = false;
  int64_t input_elements = 0;
  std::vector<int64_t> input_sizes;
};

thread_local ComputeCount* t_count = nullptr;
thread_local int t_depth = 0;  // counted operators currently running
// Data of the Linear modules' weights: LibTorch's Linear runs as addmm / matmul with weight.t(), so a matrix
// product with one of these as its second factor is a linear layer.
thread_local const std::set<const void*>* t_linear_weights = nullptr;

const at::Tensor* counted_input(const c10::ArrayRef<const c10::IValue>& in, size_t i) {
  return i < in.size() && in[i].isTensor() ? &in[i].toTensor() : nullptr;
}

std::unique_ptr<at::ObserverContext> count_on_start(const at::RecordFunction& fn) {
  const CountedOp op = counted_op(fn.name());
  if (op == CountedOp::kNone || !t_count) return nullptr;
  auto ctx = std::make_unique<CountContext>();
  ctx->op = op;
  ctx->counted = t_depth == 0;
  ++t_depth;
  if (!ctx->counted) return ctx;
  const auto in = fn.inputs();
  const at::Tensor* x = counted_input(in, 0);
  switch (op) {
    case CountedOp::kConv: {  // (input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
      const at::Tensor* w = counted_input(in, 1);
      const int64_t groups = in.size() > 8 && in[8].isInt() ? in[8].toInt() : 1;
      if (x && w && x->dim() >= 2) {
        int64_t kernel = 1;
        for (int64_t d = 2; d < w->dim(); ++d) kernel *= w->size(d);
        ctx->per_output = x->size(1) / groups * kernel;  // paddle.flops: input channels / groups · kernel
      }
      ctx->has_bias = counted_input(in, 2) != nullptr && counted_input(in, 2)->defined();
      break;
    }
    case CountedOp::kLinear: {  // (input, weight [out, in], bias)
      const at::Tensor* w = counted_input(in, 1);
      if (w && w->dim() == 2) ctx->per_output = w->size(1);
      break;
    }
    case CountedOp::kMatmul: {  // K: the first factor's last dimension (addmm / baddbmm: inputs 1 and 2)
      const bool add = std::strcmp(fn.name(), "aten::addmm") == 0 || std::strcmp(fn.name(), "aten::baddbmm") == 0;
      const at::Tensor* a = counted_input(in, add ? 1 : 0);
      const at::Tensor* b = counted_input(in, add ? 2 : 1);
      if (a && a->dim() >= 1) ctx->per_output = a->size(-1);
      if (b && b->defined() && t_linear_weights && t_linear_weights->count(b->data_ptr())) ctx->op = CountedOp::kLinear;
      break;
    }
    case CountedOp::kBatchNorm:
      if (x) ctx->input_elements = x->numel();
      break;
    case CountedOp::kAdaptiveAvgPool:
      if (x) ctx->input_sizes = x->sizes().vec();
      break;
    default:
      break;
  }
  return ctx;
}

void count_on_end(const at::RecordFunction& fn, at::ObserverContext* base) {
  auto* ctx = static_cast<CountContext*>(base);
  if (!ctx) return;
  --t_depth;
  if (!ctx->counted || !t_count) return;
  const auto& out = fn.outputs();
  const int64_t y = !out.empty() && out[0].isTensor() ? out[0].toTensor().numel() : 0;
  ComputeCount& c = *t_count;
  switch (ctx->op) {
    case CountedOp::kConv:
      c.conv_macs += y * ctx->per_output;
      if (ctx->has_bias) c.conv_bias += y;
      break;
    case CountedOp::kLinear:
      c.linear_macs += y * ctx->per_output;
      break;
    case CountedOp::kMatmul:
      c.matmul_macs += y * ctx->per_output;
      break;
    case CountedOp::kBatchNorm:
      c.batch_norm_elements += ctx->input_elements;
      break;
    case CountedOp::kAdaptiveAvgPool: {
      // paddle.flops: (prod(input size // output size) + 1) per output element.
      const auto& ys = out[0].toTensor().sizes();
      int64_t kernel = 1;
      for (size_t d = 2; d < ctx->input_sizes.size() && d < ys.size(); ++d)
        if (ys[d] > 0) kernel *= ctx->input_sizes[d] / ys[d];
      c.pool_ops += y * (kernel + 1);
      break;
    }
    case CountedOp::kAvgPool:
      c.pool_ops += y;
      break;
    default:
      break;
  }
}

}  // namespace

ComputeCount count_compute(const torch::nn::Module& model, const std::function<void()>& run) {
  FL_ASSERT(t_count == nullptr, "count_compute is not reentrant");
  std::set<const void*> linear_weights;
  if (const auto* fc = model.as<torch::nn::Linear>()) linear_weights.insert(fc->weight.data_ptr());
  for (const auto& m : model.modules(/*include_self=*/false))  // include_self needs a shared_ptr-held root
    if (const auto* fc = m->as<torch::nn::Linear>()) linear_weights.insert(fc->weight.data_ptr());
  ComputeCount count;
  t_count = &count;
  t_linear_weights = &linear_weights;
  t_depth = 0;
  at::RecordFunctionGuard enable(true);
  const auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(count_on_start, count_on_end).needsInputs(true).needsOutputs(true));
  try {
    run();
  } catch (...) {
    at::removeCallback(handle);
    t_count = nullptr;
    t_linear_weights = nullptr;
    throw;
  }
  at::removeCallback(handle);
  t_count = nullptr;
  t_linear_weights = nullptr;
  return count;
}

}  // namespace featlearn
