// Helpers shared by the backbone tests: the output shape for a random square input, and the message of the
// featlearn::Error a call throws.
#pragma once
#include <featlearn/common/error.h>
#include <featlearn/model/module_base.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace featlearn::test {

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
