#include <featlearn/model/batch_norm.h>

#include <featlearn/dist/process_group.h>
#include <torch/torch.h>

namespace featlearn {
// Shared by LibTorch's and featlearn's BatchNorms (the header's note).
void print_bn(std::ostream& stream, const char* name, const torch::nn::BatchNormOptions& o, bool sync);

namespace {
template <typename BN>
torch::Tensor normalize_synced(const torch::Tensor& x, BN& bn) {
  const auto& o = bn.options;
  const int64_t c = x.size(1);
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  // Sums in float64 so E[x^2] - E[x]^2 keeps float32 precision.
  const auto xd = x.to(torch::kFloat64);
  const auto local = torch::cat({xd.sum(dims), (xd * xd).sum(dims),
                                 torch::full({1}, static_cast<double>(x.numel() / c), xd.options())});
  const auto total = differentiable_all_reduce_sum(local);
  const auto n = total[2 * c];
  const auto mean = total.narrow(0, 0, c) / n;
  const auto var = (total.narrow(0, c, c) / n - mean * mean).clamp_min(0);
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = c;
  auto y = ((xd - mean.view(shape)) * torch::rsqrt(var.view(shape) + o.eps())).to(x.scalar_type());
  if (o.affine()) y = y * bn.weight.view(shape) + bn.bias.view(shape);
  if (o.track_running_stats()) {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked += 1;
    const double m = o.momentum() ? *o.momentum() : 1.0 / bn.num_batches_tracked.template item<double>();
    const double count = n.template item<double>();
    const auto unbiased = var.detach() * (count / std::max(count - 1.0, 1.0));
    bn.running_mean.mul_(1 - m).add_(mean.detach().to(bn.running_mean.scalar_type()), m);
    bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.scalar_type()), m);
  }
  return y;
}
}  // namespace

torch::Tensor BatchNorm1dImpl::forward(const torch::Tensor& x) {
  if (sync && is_training() && current_process_group()) return normalize_synced(x, *this);
  return torch::nn::BatchNorm1dImpl::forward(x);
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& x) {
  if (sync && is_training() && current_process_group()) return normalize_synced(x, *this);
  return torch::nn::BatchNorm2dImpl::forward(x);
}

void print_bn(std::ostream& stream, const char* name, const torch::nn::BatchNormOptions& o, bool sync) {
  stream << name << "(" << o.num_features() << ", eps=" << o.eps() << ", momentum=";
  if (o.momentum()) stream << *o.momentum();
  else stream << "None";
  stream << ", affine=" << (o.affine() ? "true" : "false")
         << ", track_running_stats=" << (o.track_running_stats() ? "true" : "false") << (sync ? ", sync" : "") << ")";
}

}  // namespace featlearn

namespace torch::nn {
template <>
void BatchNormImplBase<1, BatchNorm1dImpl>::pretty_print(std::ostream& stream) const {
  featlearn::print_bn(stream, "torch::nn::BatchNorm1d", options, false);
}
template <>
void BatchNormImplBase<2, BatchNorm2dImpl>::pretty_print(std::ostream& stream) const {
  featlearn::print_bn(stream, "torch::nn::BatchNorm2d", options, false);
}
}  // namespace torch::nn

namespace featlearn {

void BatchNorm1dImpl::pretty_print(std::ostream& stream) const { print_bn(stream, "torch::nn::BatchNorm1d", options, sync); }
void BatchNorm2dImpl::pretty_print(std::ostream& stream) const { print_bn(stream, "torch::nn::BatchNorm2d", options, sync); }

int64_t enable_sync_batch_norm(torch::nn::Module& module, int64_t* others) {
  int64_t n = 0, plain = 0;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* a = dynamic_cast<BatchNorm1dImpl*>(m.get())) a->sync = true, ++n;
    else if (auto* b = dynamic_cast<BatchNorm2dImpl*>(m.get())) b->sync = true, ++n;
    else if (dynamic_cast<torch::nn::BatchNorm1dImpl*>(m.get()) || dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get()))
      ++plain;
  }
  if (others) *others = plain;
  return n;
}

}  // namespace featlearn
