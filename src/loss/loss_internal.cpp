// Helpers shared by the loss implementations (loss_internal.h).
#include "loss_internal.h"

#include <featlearn/common/error.h>

#include <torch/torch.h>

#include <fmt/format.h>

namespace featlearn::loss_internal {

// [N, D] features (higher ranks flattened).
torch::Tensor flat_features(const torch::Tensor& features, const std::string& loss) {
  if (!features.defined()) throw Error(loss + ": features are undefined");
  if (features.dim() < 2)
    throw Error(fmt::format("{}: expected features [N, D], got a tensor of rank {}", loss, features.dim()));
  return features.dim() == 2 ? features : features.flatten(1);
}

// [N] int64 labels on `device`.
torch::Tensor flat_labels(const torch::Tensor& labels, int64_t n, const std::string& loss,
                          const torch::Device& device) {
  if (!labels.defined()) throw Error(loss + ": labels are undefined (this loss needs the batch labels)");
  torch::Tensor ids = labels;
  if (ids.dim() == 2 && ids.size(1) == 1) ids = ids.view({-1});
  if (ids.dim() != 1 || ids.size(0) != n)
    throw Error(fmt::format("{}: expected {} labels of shape [N] or [N, 1], got shape {}", loss, n,
                            fmt::join(ids.sizes().vec(), "x")));
  if (ids.is_floating_point()) throw Error(loss + ": labels must be integer class ids");
  return ids.to(device, torch::kLong);
}

void check_label_range(const torch::Tensor& ids, int64_t num_classes, const std::string& loss,
                       const std::string& what) {
  if (ids.numel() == 0) return;
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= num_classes)
    throw Error(fmt::format("{}: label {} is out of range [0, {}) ({}); check the class count against the "
                            "labels of the list file",
                            loss, lo < 0 ? lo : hi, num_classes, what));
}

// [N, N] squared Euclidean distances from explicit differences (exact zero on the diagonal).
torch::Tensor squared_distances(const torch::Tensor& x) {
  return (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1);
}

torch::Tensor model_input(const ModelOutput& out, const std::string& key, const std::string& loss) {
  try {
    return out.get(key);
  } catch (const Error& e) {
    std::string hint = key == "logits" ? " (it needs an Arch.Head)" : "";
    throw Error(loss + ": " + e.what() + hint);
  }
}

}  // namespace featlearn::loss_internal
