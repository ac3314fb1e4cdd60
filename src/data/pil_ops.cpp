// Pillow 9.4 operations, written from the algorithm description in docs/data.md#pillow-parity. Every
// floating-point expression keeps Pillow's order of operations and its float constants, because the fixed-point
// rounding that follows turns a last-bit difference into a pixel difference. Written by hand because OpenCV's
// resize does not antialias (INTER_AREA is a box filter only) and rounds differently.
#include <featlearn/common/error.h>
#include <featlearn/data/pil_ops.h>

#include <fmt/format.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace featlearn {
namespace {

void require_u8c3(const cv::Mat& m, const char* fn) {
  if (m.empty() || m.type() != CV_8UC3)
    throw Error(fmt::format("{}: expected a non-empty 8-bit 3-channel image, got {}x{} of type {}", fn, m.cols,
                            m.rows, m.type()));
}

// ---------------------------------------------------------------------------------------------------------------
// Filters (support in input pixels at scale 1)

constexpr double kPi = 3.14159265358979323846;

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // Pillow's window constants are single-precision literals.
  return std::sin(x) / x * (static_cast<double>(0.54f) + static_cast<double>(0.46f) * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

double lanczos_filter(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_of(PilFilter f) {
  switch (f) {
    case PilFilter::kBox: return {box_filter, 0.5};
    case PilFilter::kBilinear: return {bilinear_filter, 1.0};
    case PilFilter::kHamming: return {hamming_filter, 1.0};
    case PilFilter::kBicubic: return {bicubic_filter, 2.0};
    case PilFilter::kLanczos: return {lanczos_filter, 3.0};
    case PilFilter::kNearest: break;
  }
  throw Error("pil_resize: nearest is not a convolution filter");  // internal: callers dispatch nearest first
}

// ---------------------------------------------------------------------------------------------------------------
// Convolution resize

constexpr int kPrecisionBits = 32 - 8 - 2;

// For each output pixel: the first input pixel, the number of taps, and `ksize` fixed-point weights.
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out_size, ksize]
};

Taps make_taps(int in_size, int out_size, const Filter& filter) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);  // widen the support only when shrinking
  const double support = filter.support * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    int32_t* out = &t.weights[static_cast<size_t>(xx) * t.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? k[x] / ww : k[x];
      const double scaled = v * (1 << kPrecisionBits);
      out[x] = static_cast<int32_t>(v < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

inline uchar clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uchar>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

cv::Mat resample_horizontal(const cv::Mat& src, int out_w, const Filter& filter) {
  const Taps t = make_taps(src.cols, out_w, filter);
  cv::Mat dst(src.rows, out_w, CV_8UC3);
  for (int y = 0; y < src.rows; ++y) {
    const uchar* in = src.ptr<uchar>(y);
    uchar* out = dst.ptr<uchar>(y);
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &t.weights[static_cast<size_t>(xx) * t.ksize];
      const uchar* p = in + 3 * t.first[xx];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < t.count[xx]; ++x, p += 3) {
        s0 += p[0] * k[x];
        s1 += p[1] * k[x];
        s2 += p[2] * k[x];
      }
      out[3 * xx] = clip8(s0);
      out[3 * xx + 1] = clip8(s1);
      out[3 * xx + 2] = clip8(s2);
    }
  }
  return dst;
}

cv::Mat resample_vertical(const cv::Mat& src, int out_h, const Filter& filter) {
  const Taps t = make_taps(src.rows, out_h, filter);
  const int n = src.cols * 3;
  cv::Mat dst(out_h, src.cols, CV_8UC3);
  std::vector<int32_t> acc(static_cast<size_t>(n));
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &t.weights[static_cast<size_t>(yy) * t.ksize];
    for (int y = 0; y < t.count[yy]; ++y) {  // integer sums: the order of rows does not matter
      const uchar* in = src.ptr<uchar>(t.first[yy] + y);
      const int32_t w = k[y];
      for (int i = 0; i < n; ++i) acc[static_cast<size_t>(i)] += in[i] * w;
    }
    uchar* out = dst.ptr<uchar>(yy);
    for (int i = 0; i < n; ++i) out[i] = clip8(acc[static_cast<size_t>(i)]);
  }
  return dst;
}

// Nearest: Pillow's scaling affine transform; the source coordinate is accumulated step by step in double.
cv::Mat resize_nearest(const cv::Mat& src, cv::Size size) {
  const double ax = static_cast<double>(src.cols) / size.width, ay = static_cast<double>(src.rows) / size.height;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  std::vector<int> xin(static_cast<size_t>(size.width), -1);
  double xo = ax * 0.5;
  for (int x = 0; x < size.width; ++x, xo += ax) {
    const int xi = coord(xo);
    if (xi >= 0 && xi < src.cols) xin[static_cast<size_t>(x)] = xi;
  }
  cv::Mat dst(size, CV_8UC3, cv::Scalar::all(0));  // unmapped pixels stay black, as in Pillow
  double yo = ay * 0.5;
  for (int y = 0; y < size.height; ++y, yo += ay) {
    const int yi = coord(yo);
    if (yi < 0 || yi >= src.rows) continue;
    const auto* in = src.ptr<cv::Vec3b>(yi);
    auto* out = dst.ptr<cv::Vec3b>(y);
    for (int x = 0; x < size.width; ++x)
      if (xin[static_cast<size_t>(x)] >= 0) out[x] = in[xin[static_cast<size_t>(x)]];
  }
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// Lookup-table ops

void apply_luts(cv::Mat& img, const std::array<std::array<uchar, 256>, 3>& t) {
  cv::Mat lut(1, 256, CV_8UC3);
  auto* p = lut.ptr<cv::Vec3b>(0);
  for (int i = 0; i < 256; ++i) p[i] = cv::Vec3b(t[0][i], t[1][i], t[2][i]);
  cv::LUT(img, lut, img);
}

void histograms(const cv::Mat& img, std::array<std::array<int64_t, 256>, 3>& hist) {
  for (auto& h : hist) h.fill(0);
  // Counting a histogram is a per-pixel loop by nature; this is the cheapest form of it.
  for (int y = 0; y < img.rows; ++y) {
    const uchar* p = img.ptr<uchar>(y);
    for (int x = 0; x < img.cols; ++x, p += 3) {
      ++hist[0][p[0]];
      ++hist[1][p[1]];
      ++hist[2][p[2]];
    }
  }
}

uchar clamp_u8(int64_t v) { return static_cast<uchar>(std::clamp<int64_t>(v, 0, 255)); }

// Python's round(x, 15): the correctly rounded 15-decimal value (glibc's printf rounds correctly too).
double round15(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15f", x);
  return std::strtod(buf, nullptr);
}

// Python's float % (the result takes the sign of the divisor).
double py_mod(double x, double m) {
  double r = std::fmod(x, m);
  if (r != 0.0) {
    if ((m < 0) != (r < 0)) r += m;
  } else {
    r = std::copysign(0.0, m);
  }
  return r;
}

}  // namespace

std::optional<PilFilter> pil_filter_from_name(const std::string& name) {
  if (name == "nearest") return PilFilter::kNearest;
  if (name == "box") return PilFilter::kBox;
  if (name == "bilinear") return PilFilter::kBilinear;
  if (name == "hamming") return PilFilter::kHamming;
  if (name == "bicubic") return PilFilter::kBicubic;
  if (name == "lanczos") return PilFilter::kLanczos;
  return std::nullopt;
}

const char* pil_filter_name(PilFilter f) {
  switch (f) {
    case PilFilter::kNearest: return "nearest";
    case PilFilter::kBox: return "box";
    case PilFilter::kBilinear: return "bilinear";
    case PilFilter::kHamming: return "hamming";
    case PilFilter::kBicubic: return "bicubic";
    case PilFilter::kLanczos: return "lanczos";
  }
  return "?";
}

cv::Mat pil_resize(const cv::Mat& src, cv::Size size, PilFilter filter) {
  require_u8c3(src, "pil_resize");
  if (size.width <= 0 || size.height <= 0)
    throw Error(fmt::format("pil_resize: target size {}x{} (w x h) must be positive", size.width, size.height));
  if (size == src.size()) return src.clone();
  if (filter == PilFilter::kNearest) return resize_nearest(src, size);
  const Filter f = filter_of(filter);
  cv::Mat img = src;
  if (size.width != img.cols) img = resample_horizontal(img, size.width, f);
  if (size.height != img.rows) img = resample_vertical(img, size.height, f);
  return img;
}

namespace {

// Pillow's cubic for the geometric transforms (a = -1), in the order of its expression.
inline double cubic(double v1, double v2, double v3, double v4, double d) {
  const double p1 = v2;
  const double p2 = -v1 + v3;
  const double p3 = 2 * (v1 - v2) + v3 - v4;
  const double p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

inline int clip_index(int v, int n) { return v < 0 ? 0 : (v < n ? v : n - 1); }
inline int floor_int(double v) { return v < 0.0 ? static_cast<int>(std::floor(v)) : static_cast<int>(v); }

// Samples pixel `out` at (xin, yin) of the input (already checked to lie inside it).
void sample_bilinear(const cv::Mat& src, double xin, double yin, uchar* out) {
  const int W = src.cols, H = src.rows;
  xin -= 0.5;
  yin -= 0.5;
  const int xi = floor_int(xin), yi = floor_int(yin);
  const double dx = xin - xi, dy = yin - yi;
  const int x0 = 3 * clip_index(xi, W), x1 = 3 * clip_index(xi + 1, W);
  const uchar* r0 = src.ptr<uchar>(clip_index(yi, H));
  const uchar* r1 = (yi + 1 >= 0 && yi + 1 < H) ? src.ptr<uchar>(yi + 1) : nullptr;
  for (int b = 0; b < 3; ++b) {
    const double v1 = r0[x0 + b] + (static_cast<double>(r0[x1 + b]) - r0[x0 + b]) * dx;
    const double v2 = r1 ? r1[x0 + b] + (static_cast<double>(r1[x1 + b]) - r1[x0 + b]) * dx : v1;
    out[b] = static_cast<uchar>(v1 + (v2 - v1) * dy);  // truncated, as Pillow does
  }
}

void sample_bicubic(const cv::Mat& src, double xin, double yin, uchar* out) {
  const int W = src.cols, H = src.rows;
  xin -= 0.5;
  yin -= 0.5;
  int x = floor_int(xin), y = floor_int(yin);
  const double dx = xin - x, dy = yin - y;
  --x;
  --y;
  int xs[4];
  for (int k = 0; k < 4; ++k) xs[k] = 3 * clip_index(x + k, W);
  // Row y is clipped into the image; rows below that fall outside repeat the row above them.
  const uchar* rows[4];
  rows[0] = src.ptr<uchar>(clip_index(y, H));
  for (int k = 1; k < 4; ++k) rows[k] = (y + k >= 0 && y + k < H) ? src.ptr<uchar>(y + k) : nullptr;
  for (int b = 0; b < 3; ++b) {
    double v[4];
    for (int k = 0; k < 4; ++k) {
      if (!rows[k]) {
        v[k] = v[k - 1];
        continue;
      }
      const uchar* r = rows[k];
      v[k] = cubic(r[xs[0] + b], r[xs[1] + b], r[xs[2] + b], r[xs[3] + b], dx);
    }
    const double r = cubic(v[0], v[1], v[2], v[3], dy);
    out[b] = r <= 0.0 ? 0 : (r >= 255.0 ? 255 : static_cast<uchar>(r));
  }
}

}  // namespace

cv::Mat pil_affine(const cv::Mat& src, const std::array<double, 6>& data, PilFilter filter, const cv::Scalar& fill) {
  require_u8c3(src, "pil_affine");
  if (filter != PilFilter::kBilinear && filter != PilFilter::kBicubic)
    throw Error(fmt::format("pil_affine: filter {} is not supported (bilinear or bicubic)", pil_filter_name(filter)));
  const bool cubic_filter = filter == PilFilter::kBicubic;
  const int W = src.cols, H = src.rows;
  const auto [a0, a1, a2, a3, a4, a5] = data;
  cv::Mat dst(src.size(), CV_8UC3, cv::Scalar(clamp_u8(static_cast<int64_t>(fill[0])),
                                              clamp_u8(static_cast<int64_t>(fill[1])),
                                              clamp_u8(static_cast<int64_t>(fill[2]))));
  for (int y = 0; y < H; ++y) {
    auto* out = dst.ptr<uchar>(y);
    const double yc = y + 0.5;
    for (int x = 0; x < W; ++x, out += 3) {
      const double xc = x + 0.5;
      const double xin = a0 * xc + a1 * yc + a2;
      const double yin = a3 * xc + a4 * yc + a5;
      if (xin < 0.0 || xin >= W || yin < 0.0 || yin >= H) continue;  // keeps the fill
      if (cubic_filter)
        sample_bicubic(src, xin, yin, out);
      else
        sample_bilinear(src, xin, yin, out);
    }
  }
  return dst;
}

cv::Mat pil_affine_bilinear(const cv::Mat& src, const std::array<double, 6>& data) {
  return pil_affine(src, data, PilFilter::kBilinear);
}

cv::Mat pil_rotate(const cv::Mat& src, double degrees, PilFilter filter, const cv::Scalar& fill) {
  require_u8c3(src, "pil_rotate");
  const double angle = py_mod(degrees, 360.0);
  cv::Mat out;
  if (angle == 0) return src.clone();
  if (angle == 180) {
    cv::rotate(src, out, cv::ROTATE_180);
    return out;
  }
  if ((angle == 90 || angle == 270) && src.cols == src.rows) {
    cv::rotate(src, out, angle == 90 ? cv::ROTATE_90_COUNTERCLOCKWISE : cv::ROTATE_90_CLOCKWISE);
    return out;
  }
  // The inverse map (output -> input): rotation by -angle about the center (w/2, h/2).
  const double cx = src.cols / 2.0, cy = src.rows / 2.0;
  const double rad = -(angle * (kPi / 180.0));
  const double a = round15(std::cos(rad)), b = round15(std::sin(rad));
  const double d = round15(-std::sin(rad)), e = round15(std::cos(rad));
  double c = a * -cx + b * -cy + 0.0;
  double f = d * -cx + e * -cy + 0.0;
  c += cx;
  f += cy;
  return pil_affine(src, {a, b, c, d, e, f}, filter, fill);
}

cv::Mat pil_rotate_bilinear(const cv::Mat& src, double degrees) {
  return pil_rotate(src, degrees, PilFilter::kBilinear);
}

void pil_autocontrast(cv::Mat& img) {
  require_u8c3(img, "pil_autocontrast");
  std::array<std::array<int64_t, 256>, 3> hist;
  histograms(img, hist);
  std::array<std::array<uchar, 256>, 3> t;
  for (int c = 0; c < 3; ++c) {
    int lo = 0, hi = 255;
    while (lo < 256 && hist[c][lo] == 0) ++lo;
    while (hi >= 0 && hist[c][hi] == 0) --hi;
    for (int i = 0; i < 256; ++i) {
      if (hi <= lo) {
        t[c][i] = static_cast<uchar>(i);
      } else {
        const double scale = 255.0 / (hi - lo), offset = -lo * scale;
        t[c][i] = clamp_u8(static_cast<int64_t>(i * scale + offset));  // int(): toward zero
      }
    }
  }
  apply_luts(img, t);
}

void pil_equalize(cv::Mat& img) {
  require_u8c3(img, "pil_equalize");
  std::array<std::array<int64_t, 256>, 3> hist;
  histograms(img, hist);
  std::array<std::array<uchar, 256>, 3> t;
  for (int c = 0; c < 3; ++c) {
    int64_t total = 0, last = 0;
    int nonzero = 0;
    for (int i = 0; i < 256; ++i)
      if (hist[c][i]) {
        total += hist[c][i];
        last = hist[c][i];
        ++nonzero;
      }
    const int64_t step = nonzero <= 1 ? 0 : (total - last) / 255;
    if (step == 0) {
      for (int i = 0; i < 256; ++i) t[c][i] = static_cast<uchar>(i);
      continue;
    }
    int64_t n = step / 2;
    for (int i = 0; i < 256; ++i) {
      t[c][i] = clamp_u8(n / step);  // Pillow clips lookup-table values to 0..255
      n += hist[c][i];
    }
  }
  apply_luts(img, t);
}

void pil_posterize(cv::Mat& img, int bits) {
  require_u8c3(img, "pil_posterize");
  if (bits < 0 || bits > 8) throw Error(fmt::format("pil_posterize: bits must be in 0..8, got {}", bits));
  const uchar mask = static_cast<uchar>(~((1 << (8 - bits)) - 1) & 0xFF);
  cv::bitwise_and(img, cv::Scalar::all(mask), img);
}

void pil_solarize(cv::Mat& img, int threshold) {
  require_u8c3(img, "pil_solarize");
  std::array<std::array<uchar, 256>, 3> t;
  for (int i = 0; i < 256; ++i) t[0][i] = t[1][i] = t[2][i] = static_cast<uchar>(i < threshold ? i : 255 - i);
  apply_luts(img, t);
}

void pil_invert(cv::Mat& img) {
  require_u8c3(img, "pil_invert");
  cv::bitwise_not(img, img);
}

void pil_solarize_add(cv::Mat& img, int add, int threshold) {
  require_u8c3(img, "pil_solarize_add");
  std::array<std::array<uchar, 256>, 3> t;
  for (int i = 0; i < 256; ++i)
    t[0][i] = t[1][i] = t[2][i] = i < threshold ? clamp_u8(static_cast<int64_t>(i) + add) : static_cast<uchar>(i);
  apply_luts(img, t);
}

cv::Mat pil_to_gray(const cv::Mat& img) {
  require_u8c3(img, "pil_to_gray");
  cv::Mat g(img.size(), CV_8UC1);
  for (int y = 0; y < img.rows; ++y) {
    const uchar* p = img.ptr<uchar>(y);
    uchar* o = g.ptr<uchar>(y);
    for (int x = 0; x < img.cols; ++x, p += 3)
      o[x] = static_cast<uchar>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
  }
  return g;
}

cv::Mat pil_blend(const cv::Mat& a, const cv::Mat& b, double alpha) {
  require_u8c3(a, "pil_blend");
  require_u8c3(b, "pil_blend");
  if (a.size() != b.size()) throw Error("pil_blend: the images differ in size");
  const float al = static_cast<float>(alpha);  // Pillow's ImagingBlend takes a float
  const bool inside = al >= 0 && al <= 1.0;
  cv::Mat out(a.size(), CV_8UC3);
  const int n = a.cols * 3;
  for (int y = 0; y < a.rows; ++y) {
    const uchar* p = a.ptr<uchar>(y);
    const uchar* q = b.ptr<uchar>(y);
    uchar* o = out.ptr<uchar>(y);
    for (int i = 0; i < n; ++i) {
      const float v = static_cast<float>(p[i]) + al * static_cast<float>(static_cast<int>(q[i]) - static_cast<int>(p[i]));
      o[i] = inside ? static_cast<uchar>(v) : (v <= 0.0f ? 0 : (v >= 255.0f ? 255 : static_cast<uchar>(v)));
    }
  }
  return out;
}

cv::Mat pil_smooth(const cv::Mat& img) {
  require_u8c3(img, "pil_smooth");
  if (img.cols < 3 || img.rows < 3) return img.clone();
  float k[9];
  for (int i = 0; i < 9; ++i) k[i] = (i == 4 ? 5.0f : 1.0f) / 13.0f;
  cv::Mat out = img.clone();  // the border rows and columns stay as they are
  const float offset = 0.0f + 0.5f;  // the rounding half Pillow adds to the kernel's offset
  for (int y = 1; y < img.rows - 1; ++y) {
    const uchar* up = img.ptr<uchar>(y - 1);
    const uchar* mid = img.ptr<uchar>(y);
    const uchar* down = img.ptr<uchar>(y + 1);
    uchar* o = out.ptr<uchar>(y);
    auto row = [](const uchar* r, int i, const float* kk) {
      return static_cast<float>(r[i - 3]) * kk[0] + static_cast<float>(r[i]) * kk[1] + static_cast<float>(r[i + 3]) * kk[2];
    };
    for (int x = 1; x < img.cols - 1; ++x) {
      for (int b = 0; b < 3; ++b) {
        const int i = 3 * x + b;
        float s = offset;
        s += row(down, i, &k[0]);  // Pillow sums the row below first
        s += row(mid, i, &k[3]);
        s += row(up, i, &k[6]);
        o[i] = s <= 0.0f ? 0 : (s >= 255.0f ? 255 : static_cast<uchar>(s));
      }
    }
  }
  return out;
}

void pil_enhance(cv::Mat& img, PilEnhance kind, double factor) {
  require_u8c3(img, "pil_enhance");
  cv::Mat degenerate;
  switch (kind) {
    case PilEnhance::kColor:
      cv::merge(std::vector<cv::Mat>(3, pil_to_gray(img)), degenerate);
      break;
    case PilEnhance::kContrast: {
      // ImageStat's mean of the gray image: sum of values / count, in double.
      const cv::Mat g = pil_to_gray(img);
      double sum = 0;
      for (int y = 0; y < g.rows; ++y) {
        const uchar* p = g.ptr<uchar>(y);
        for (int x = 0; x < g.cols; ++x) sum += p[x];
      }
      const int mean = static_cast<int>(sum / static_cast<double>(g.total()) + 0.5);
      degenerate = cv::Mat(img.size(), CV_8UC3, cv::Scalar::all(mean));
      break;
    }
    case PilEnhance::kBrightness:
      degenerate = cv::Mat(img.size(), CV_8UC3, cv::Scalar::all(0));
      break;
    case PilEnhance::kSharpness:
      degenerate = pil_smooth(img);
      break;
  }
  img = pil_blend(degenerate, img, factor);
}

}  // namespace featlearn
