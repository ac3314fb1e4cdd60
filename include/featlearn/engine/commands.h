// The featlearn program's sub-commands, as library functions (tools/featlearn.cpp only parses arguments).
// Each returns the process exit code and throws featlearn::Error for user errors.
#pragma once
#include <string>
#include <vector>

namespace featlearn {

struct ConfigArgs {
  std::string config;                  // -c
  std::vector<std::string> overrides;  // -o Key.sub=value (repeatable)
};

int cmd_describe(const ConfigArgs& args);

// Sets LibTorch's intra-op thread count to the machine's cores (LibTorch defaults to 1 here).
void init_runtime();

}  // namespace featlearn
