// Multiply-accumulates and PaddleClas-convention FLOPs of one forward pass (`featlearn describe`).
//
// count_compute(model, run) calls `run` (e.g. a model's forward on one image, in eval mode) and counts the ATen
// operators it dispatches on this thread, the outermost ones only (a linear's inner matmul is not counted
// again):
//   convolution   conv_macs  += output elements · in_channels/groups · kh · kw;  conv_bias += output elements
//                 when it has a bias
//   matmul, mm, bmm, addmm, baddbmm  output elements · K (M·N·K per matrix product): linear_macs when the
//                 second factor is the weight of one of `model`'s torch::nn::Linear modules (LibTorch's Linear
//                 runs as addmm / matmul: in × out per row), else matmul_macs (attention's q·kᵀ and attn·v, ViT's
//                 `x @ proj`); aten::linear (called directly) counts as linear
//   batch_norm    batch_norm_elements += input elements
//   adaptive_avg_pool2d  pool_ops += output elements · (kernel elements + 1), kernel = input size // output
//                 size per spatial dimension;  avg_pool2d  pool_ops += output elements
// Everything else (activations, layer norm, element-wise ops, max pooling, dropout) counts zero.
//
// paddle_flops() is what paddle.flops() reports, the number PaddleClas publishes as "FLOPs" in its model
// lists (docs/config.md, "Multiply-accumulates"): conv (+ its bias) + linear + 2 · batch-norm elements + average
// pooling; Paddle counts layers, not matmuls, so matmul_macs is left out. macs() = conv + linear + matmul.
#pragma once
#include <cstdint>
#include <functional>

#include <torch/nn/module.h>

namespace featlearn {

struct ComputeCount {
  int64_t conv_macs = 0;
  int64_t conv_bias = 0;
  int64_t linear_macs = 0;
  int64_t matmul_macs = 0;
  int64_t batch_norm_elements = 0;
  int64_t pool_ops = 0;

  int64_t macs() const { return conv_macs + linear_macs + matmul_macs; }
  int64_t paddle_flops() const { return conv_macs + conv_bias + linear_macs + 2 * batch_norm_elements + pool_ops; }
};

// Runs `run` (a forward pass of `model` or of a part of it) and returns what its operators compute (see
// above). Not reentrant on one thread.
ComputeCount count_compute(const torch::nn::Module& model, const std::function<void()>& run);

}  // namespace featlearn
