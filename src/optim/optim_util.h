// Small helpers shared by the optimizer and lr-schedule units (internal to src/optim).
#pragma once
#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <string>

namespace featlearn {
namespace optim_detail {

inline void warn(const std::string& msg) { std::cerr << "featlearn: warning: " << msg << "\n"; }
inline std::string num(double v) { return fmt::format("{:g}", v); }
inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
inline bool is_whole(double x) { return std::floor(x) == x; }

}  // namespace optim_detail
}  // namespace featlearn
