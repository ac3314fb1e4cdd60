// Helpers shared by the backbone tests: a backbone built from YAML, the output shape for a random square input,
// and the message of the featlearn::Error a call throws.
#pragma once
#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/model/module_base.h>
#include <featlearn/model/stop_layer.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace featlearn::test {

// Arch.Backbone from YAML text (e.g. "{name: AlexNet}") plus an optional BackboneStopLayer name, built after
// torch::manual_seed(seed), in eval mode. Builds with the same seed have the same weights.
inline BackbonePtr backbone_from_yaml(const std::string& backbone_yaml, const std::string& stop = "",
                                      uint64_t seed = 0) {
  std::string text = "Arch:\n  Backbone: " + backbone_yaml + "\n";
  if (!stop.empty()) text += "  BackboneStopLayer: {name: \"" + stop + "\"}\n";
  auto cfg = Config::from_string(text, "test.yaml");
  torch::manual_seed(seed);
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  bb->eval();
  return bb;
}

inline std::vector<int64_t> output_shape(const BackbonePtr& bb, int64_t hw = 64, int64_t n = 1) {
  torch::NoGradGuard ng;
  return bb->forward(torch::randn({n, 3, hw, hw})).sizes().vec();
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace featlearn::test
