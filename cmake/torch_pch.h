// Precompiled header shared by every featlearn target: LibTorch's headers dominate compile time.
#pragma once
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>
#include <fmt/format.h>
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
