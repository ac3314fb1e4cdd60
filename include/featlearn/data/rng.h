// Small, portable random number generator for the data pipeline (xoshiro256** seeded by splitmix64).
// Written here rather than using <random> distributions because those differ between standard libraries, and
// the pipeline promises the same samples and augmentations for the same (seed, epoch) everywhere.
#pragma once
#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace featlearn {

inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Hash of several integers into one seed.
inline uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x2545F4914F6CDD1DULL;
  for (uint64_t p : parts) {
    uint64_t s = h ^ p;
    h = splitmix64(s);
  }
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) {
    for (auto& v : s_) v = splitmix64(seed);
  }
  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // [0, 1)
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // [lo, hi)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Integer in [lo, hi], both inclusive (Python's random.randint).
  int64_t randint(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(below(span));
  }
  // Integer in [0, n).
  uint64_t below(uint64_t n) {
    if (n == 0) return 0;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // rejection avoids modulo bias
    uint64_t v;
    do v = next_u64();
    while (v >= limit);
    return v % n;
  }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = uniform(-1.0, 1.0);
      v = uniform(-1.0, 1.0);
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }
  // Gamma(shape, 1) by Marsaglia-Tsang (shape < 1 via the U^(1/shape) boost).
  double gamma(double shape) {
    if (shape < 1.0) {
      double u;
      do u = uniform();
      while (u == 0.0);
      return gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x, v;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0.0);
      v = v * v * v;
      const double u = uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }
  double beta(double a, double b) {
    const double x = gamma(a), y = gamma(b);
    return (x + y) > 0 ? x / (x + y) : 0.5;
  }
  template <class T>
  void shuffle(T& v) {
    for (size_t i = v.size(); i > 1; --i) {
      const size_t j = below(i);
      std::swap(v[i - 1], v[j]);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace featlearn
