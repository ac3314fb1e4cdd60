// The vector the crash writer stores for key k; tests/index/test_crash_safety.cpp recomputes it to check that
// every stored vector survived intact.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

constexpr int64_t kCrashDim = 16;

inline std::vector<float> vector_for_key(int64_t k) {
  std::mt19937 rng(static_cast<uint32_t>(k));
  std::normal_distribution<float> g;
  std::vector<float> v(kCrashDim);
  double n = 0;
  for (auto& x : v) {
    x = g(rng);
    n += x * x;
  }
  for (auto& x : v) x /= static_cast<float>(std::sqrt(n));
  return v;
}
