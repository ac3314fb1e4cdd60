// featlearn's BatchNorm1d / BatchNorm2d: LibTorch's, plus SyncBatchNorm (docs/distributed.md, "SyncBN").
// `Arch.use_sync_bn: True` in a multi-process run switches every one of them in the model to batch statistics
// over all processes (mean and variance of the global batch, as paddle.nn.SyncBatchNorm / torch's
// SyncBatchNorm); otherwise, and in eval mode, it is exactly LibTorch's BatchNorm. Same parameters, buffers
// and names as LibTorch's, so checkpoints and weight files do not change.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>

// LibTorch 1.13 defines these two members in its library without exporting them, and a class derived from
// BatchNorm1dImpl / BatchNorm2dImpl refers to them (in its construction vtables): featlearn defines them
// (src/model/batch_norm.cpp), printing what LibTorch prints.
namespace torch::nn {
template <>
void BatchNormImplBase<1, BatchNorm1dImpl>::pretty_print(std::ostream& stream) const;
template <>
void BatchNormImplBase<2, BatchNorm2dImpl>::pretty_print(std::ostream& stream) const;
}  // namespace torch::nn

namespace featlearn {

class BatchNorm1dImpl : public torch::nn::BatchNorm1dImpl {
 public:
  using torch::nn::BatchNorm1dImpl::BatchNorm1dImpl;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  bool sync = false;  // set by enable_sync_batch_norm
};
TORCH_MODULE(BatchNorm1d);

class BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  bool sync = false;  // set by enable_sync_batch_norm
};
TORCH_MODULE(BatchNorm2d);

// Marks every featlearn BatchNorm in `module` as synchronized; returns how many. LibTorch BatchNorms that are
// not featlearn's (none in the shipped models except MetaBIN's batch-instance norms) are counted in `others`.
int64_t enable_sync_batch_norm(torch::nn::Module& module, int64_t* others = nullptr);

}  // namespace featlearn
