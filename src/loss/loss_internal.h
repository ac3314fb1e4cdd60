// Input checks and small tensor helpers shared by the loss implementations (losses.cpp, deephash_losses.cpp).
#pragma once
#include <torch/types.h>

#include <featlearn/model/module_base.h>

#include <string>

namespace featlearn::loss_internal {

// [N, D] features (higher ranks flattened); throws Error naming `loss` for an undefined or rank < 2 tensor.
torch::Tensor flat_features(const torch::Tensor& features, const std::string& loss);
// [N] int64 labels on `device` from [N] / [N, 1] integer ids; throws Error naming `loss` otherwise.
torch::Tensor flat_labels(const torch::Tensor& labels, int64_t n, const std::string& loss,
                          const torch::Device& device);
// Throws Error unless every id is in [0, num_classes); `what` says where the class count comes from.
void check_label_range(const torch::Tensor& ids, int64_t num_classes, const std::string& loss,
                       const std::string& what);
// [N, N] squared Euclidean distances from explicit differences (exact zero on the diagonal).
torch::Tensor squared_distances(const torch::Tensor& x);
// out.get(key), with the loss name (and for logits the Arch.Head hint) in the error.
torch::Tensor model_input(const ModelOutput& out, const std::string& key, const std::string& loss);

}  // namespace featlearn::loss_internal
