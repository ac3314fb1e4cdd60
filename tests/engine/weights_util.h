// Test helpers shared by the engine tests: a checkpoint's model weights, and the largest difference of two.
#pragma once
#include <featlearn/engine/checkpoint.h>
#include <featlearn/model/rec_model.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <string>

namespace featlearn::test {

// The model parameters stored in `ckpt` (a prefix or a .ckpt path) for the Arch of `cfg_text`.
inline std::map<std::string, torch::Tensor> checkpoint_weights(const std::string& cfg_text, const std::string& ckpt) {
  auto cfg = Config::from_string(cfg_text, "weights.yaml");
  RecModel m(cfg["Arch"]);
  load_checkpoint(ckpt, *m, nullptr, nullptr);
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m->named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

inline double max_abs_diff(const std::map<std::string, torch::Tensor>& a,
                           const std::map<std::string, torch::Tensor>& b) {
  double d = 0;
  for (const auto& kv : a) d = std::max(d, (kv.second - b.at(kv.first)).abs().max().item<double>());
  return d;
}

}  // namespace featlearn::test
