#include <featlearn/engine/commands.h>

#include <torch/utils.h>

#include <thread>

namespace featlearn {

void init_runtime() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(cores));
}

}  // namespace featlearn
