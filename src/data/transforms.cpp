#include <featlearn/config/registry.h>
#include <featlearn/data/transforms.h>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cmath>
#include <fstream>

namespace featlearn {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Parameter helpers

// A number, or a string "a" / "a/b" (PaddleClas eval()s strings such as "1.0/255.0").
double number(const ConfigNode& n) {
  if (!n.is_scalar()) n.fail("expected a number");
  const std::string s = n.as<std::string>();
  auto parse = [&](const std::string& t) {
    try {
      size_t used = 0;
      const double v = std::stod(t, &used);
      while (used < t.size() && std::isspace(static_cast<unsigned char>(t[used]))) ++used;
      if (used != t.size()) throw std::invalid_argument(t);
      return v;
    } catch (const std::exception&) {
      n.fail("expected a number or a fraction such as 1.0/255.0, got '" + s + "'");
    }
  };
  const auto slash = s.find('/');
  if (slash == std::string::npos) return parse(s);
  const double den = parse(s.substr(slash + 1));
  if (den == 0) n.fail("division by zero in '" + s + "'");
  return parse(s.substr(0, slash)) / den;
}

double number_or(const ConfigNode& p, const std::string& key, double def) {
  auto n = p[key];
  return n.defined() ? number(n) : def;
}

std::vector<double> numbers(const ConfigNode& n) {
  if (!n.is_seq()) n.fail("expected a list of numbers");
  std::vector<double> v;
  for (size_t i = 0; i < n.size(); ++i) v.push_back(number(n.at(i)));
  return v;
}

// size: int or [w, h] -> (w, h)
cv::Size read_size(const ConfigNode& n) {
  if (!n.defined()) n.fail("missing required value 'size'");
  if (n.is_scalar()) {
    const int s = n.as<int>();
    if (s <= 0) n.fail("size must be positive");
    return {s, s};
  }
  const auto v = n.as<std::vector<int>>();
  if (v.size() != 2 || v[0] <= 0 || v[1] <= 0) n.fail("expected a positive int or a list [w, h]");
  return {v[0], v[1]};
}

// Interpolation by name; -1 = "random" (bilinear or bicubic per sample).
int read_interp(const ConfigNode& p, const std::string& key, int def) {
  auto n = p[key];
  if (!n.defined()) return def;
  const std::string s = n.as<std::string>();
  std::string l = s;
  for (auto& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "nearest") return cv::INTER_NEAREST;
  if (l == "bilinear" || l == "linear") return cv::INTER_LINEAR;
  if (l == "area" || l == "box") return cv::INTER_AREA;
  if (l == "bicubic" || l == "cubic") return cv::INTER_CUBIC;
  if (l == "lanczos") return cv::INTER_LANCZOS4;
  if (l == "random") return -1;
  n.fail("unknown interpolation '" + s + "'" +
         did_you_mean(l, {"nearest", "bilinear", "linear", "area", "box", "bicubic", "cubic", "lanczos", "random"}) +
         " (valid: nearest, bilinear, area, bicubic, lanczos, random)");
}

void check_backend(const ConfigNode& p) {
  if (!p["backend"].defined()) return;
  std::string b = p["backend"].as<std::string>();
  for (auto& ch : b) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (b != "cv2" && b != "pil") p["backend"].fail("expected cv2 or pil (both run on OpenCV here)");
}

void resize_to(cv::Mat& img, cv::Size size, int interp, Rng& rng) {
  if (img.size() == size) return;  // identical to cv::resize to the same size
  if (interp < 0) interp = rng.randint(0, 1) ? cv::INTER_CUBIC : cv::INTER_LINEAR;
  cv::Mat out;
  cv::resize(img, out, size, 0, 0, interp);
  img = out;
}

[[noreturn]] void too_small(const std::string& op, const cv::Mat& img, cv::Size want) {
  throw Error(fmt::format("{}: image of {}x{} (w x h) is smaller than the crop {}x{}", op, img.cols, img.rows,
                          want.width, want.height));
}

// ---------------------------------------------------------------------------------------------------------------
// Geometric ops

class ResizeImage : public Transform {
 public:
  explicit ResizeImage(const ConfigNode& p) {
    p.check_keys({"size", "resize_short", "interpolation", "backend", "return_numpy"});
    check_backend(p);
    if (p["resize_short"].defined() && p["resize_short"].as<int>() > 0) {
      resize_short_ = p["resize_short"].as<int>();
    } else if (p["size"].defined()) {
      size_ = read_size(p["size"]);
    } else {
      p.fail("ResizeImage needs 'size' or 'resize_short'");
    }
    interp_ = read_interp(p, "interpolation", cv::INTER_LINEAR);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    cv::Size target = size_;
    if (resize_short_ > 0) {
      const double percent = static_cast<double>(resize_short_) / std::min(img.cols, img.rows);
      target = {static_cast<int>(std::nearbyint(img.cols * percent)),
                static_cast<int>(std::nearbyint(img.rows * percent))};
    }
    resize_to(img, target, interp_, rng);
  }
  std::string name() const override { return "ResizeImage"; }

 private:
  int resize_short_ = 0;
  cv::Size size_;
  int interp_;
};

class RandCropImage : public Transform {
 public:
  explicit RandCropImage(const ConfigNode& p) {
    p.check_keys({"size", "progress_size", "scale", "ratio", "interpolation", "use_log_aspect", "backend"});
    check_backend(p);
    size_ = read_size(p["size"]);
    if (p["progress_size"].defined()) p["progress_size"].fail("progress_size is not supported");
    if (p["scale"].defined()) scale_ = numbers(p["scale"]);
    if (p["ratio"].defined()) ratio_ = numbers(p["ratio"]);
    if (scale_.size() != 2 || scale_[0] > scale_[1] || scale_[0] <= 0) p["scale"].fail("expected [min, max] with 0 < min <= max");
    if (ratio_.size() != 2 || ratio_[0] > ratio_[1] || ratio_[0] <= 0) p["ratio"].fail("expected [min, max] with 0 < min <= max");
    log_aspect_ = p.get<bool>("use_log_aspect", false);
    interp_ = read_interp(p, "interpolation", cv::INTER_LINEAR);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    const double aspect = log_aspect_ ? std::exp(rng.uniform(std::log(ratio_[0]), std::log(ratio_[1])))
                                      : rng.uniform(ratio_[0], ratio_[1]);
    const double w0 = img.cols, h0 = img.rows;
    const double bound = std::min((w0 / h0) / aspect, (h0 / w0) * aspect);
    const double smax = std::min(scale_[1], bound), smin = std::min(scale_[0], bound);
    const double area = w0 * h0 * rng.uniform(smin, smax);
    const int w = std::clamp(static_cast<int>(std::sqrt(area * aspect)), 1, img.cols);
    const int h = std::clamp(static_cast<int>(std::sqrt(area / aspect)), 1, img.rows);
    const int x = static_cast<int>(rng.randint(0, img.cols - w));
    const int y = static_cast<int>(rng.randint(0, img.rows - h));
    cv::Mat crop = img(cv::Rect(x, y, w, h));
    cv::Mat out;
    int interp = interp_ < 0 ? (rng.randint(0, 1) ? cv::INTER_CUBIC : cv::INTER_LINEAR) : interp_;
    cv::resize(crop, out, size_, 0, 0, interp);
    img = out;
  }
  std::string name() const override { return "RandCropImage"; }

 private:
  cv::Size size_;
  std::vector<double> scale_{0.08, 1.0}, ratio_{3.0 / 4.0, 4.0 / 3.0};
  bool log_aspect_ = false;
  int interp_;
};

class RandCropImageV2 : public Transform {
 public:
  explicit RandCropImageV2(const ConfigNode& p) {
    p.check_keys({"size"});
    size_ = read_size(p["size"]);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (img.cols < size_.width || img.rows < size_.height) too_small(name(), img, size_);
    if (img.size() == size_) return;
    // PaddleClas draws top in [0, h - th + 1], which can yield a crop one pixel short; we stay inside.
    const int top = static_cast<int>(rng.randint(0, img.rows - size_.height));
    const int left = static_cast<int>(rng.randint(0, img.cols - size_.width));
    img = img(cv::Rect(left, top, size_.width, size_.height)).clone();
  }
  std::string name() const override { return "RandCropImageV2"; }

 private:
  cv::Size size_;
};

class CropImage : public Transform {
 public:
  explicit CropImage(const ConfigNode& p) {
    p.check_keys({"size"});
    size_ = read_size(p["size"]);
  }
  void apply(cv::Mat& img, Rng&) const override {
    if (img.cols < size_.width || img.rows < size_.height) too_small(name(), img, size_);
    const int x = (img.cols - size_.width) / 2, y = (img.rows - size_.height) / 2;
    img = img(cv::Rect(x, y, size_.width, size_.height)).clone();
  }
  std::string name() const override { return "CropImage"; }

 private:
  cv::Size size_;
};

class RandFlipImage : public Transform {
 public:
  explicit RandFlipImage(const ConfigNode& p) {
    p.check_keys({"flip_code"});
    code_ = p.get<int>("flip_code", 1);
    if (code_ < -1 || code_ > 1) p["flip_code"].fail("flip_code must be 1 (horizontal), 0 (vertical) or -1 (both)");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (rng.randint(0, 1) == 1) {
      cv::Mat out;
      cv::flip(img, out, code_);
      img = out;
    }
  }
  std::string name() const override { return "RandFlipImage"; }

 private:
  int code_;
};

cv::Scalar read_fill(const ConfigNode& n, double def) {
  if (!n.defined()) return cv::Scalar::all(def);
  if (n.is_scalar()) return cv::Scalar::all(number(n));
  const auto v = numbers(n);
  if (v.size() == 1) return cv::Scalar::all(v[0]);
  if (v.size() != 3) n.fail("expected a number or a list of 3 numbers");
  return cv::Scalar(v[0], v[1], v[2]);
}

class Pad : public Transform {
 public:
  explicit Pad(const ConfigNode& p) {
    p.check_keys({"padding", "fill", "padding_mode", "backend"});
    auto n = p["padding"];
    if (!n.defined()) p.fail("missing required key 'padding'");
    if (n.is_scalar()) {
      l_ = t_ = r_ = b_ = n.as<int>();
    } else {
      const auto v = n.as<std::vector<int>>();
      if (v.size() == 2) {
        l_ = r_ = v[0];
        t_ = b_ = v[1];
      } else if (v.size() == 4) {
        l_ = v[0], t_ = v[1], r_ = v[2], b_ = v[3];
      } else {
        n.fail("expected an int, [left/right, top/bottom] or [left, top, right, bottom]");
      }
    }
    if (std::min({l_, t_, r_, b_}) < 0) n.fail("padding must not be negative");
    fill_ = read_fill(p["fill"], 0);
    const auto mode = p.get<std::string>("padding_mode", "constant");
    if (mode == "constant") border_ = cv::BORDER_CONSTANT;
    else if (mode == "edge") border_ = cv::BORDER_REPLICATE;
    else if (mode == "reflect") border_ = cv::BORDER_REFLECT_101;
    else if (mode == "symmetric") border_ = cv::BORDER_REFLECT;
    else p["padding_mode"].fail("expected constant, edge, reflect or symmetric");
    const auto backend = p.get<std::string>("backend", "pil");
    if (backend != "pil" && backend != "cv2") p["backend"].fail("expected pil or cv2");
  }
  void apply(cv::Mat& img, Rng&) const override {
    cv::Mat out;
    cv::copyMakeBorder(img, out, t_, b_, l_, r_, border_, fill_);
    img = out;
  }
  std::string name() const override { return "Pad"; }

 private:
  int l_ = 0, t_ = 0, r_ = 0, b_ = 0, border_ = cv::BORDER_CONSTANT;
  cv::Scalar fill_;
};

class RandomRotation : public Transform {
 public:
  explicit RandomRotation(const ConfigNode& p) {
    p.check_keys({"prob", "degrees", "interpolation", "expand", "center", "fill", "keys"});
    prob_ = number_or(p, "prob", 0.5);
    auto d = p["degrees"];
    if (!d.defined()) p.fail("missing required key 'degrees'");
    if (d.is_scalar()) {
      const double v = number(d);
      if (v < 0) d.fail("degrees must be non-negative when a single number");
      lo_ = -v, hi_ = v;
    } else {
      const auto v = numbers(d);
      if (v.size() != 2) d.fail("expected a number or [min, max]");
      lo_ = v[0], hi_ = v[1];
    }
    interp_ = read_interp(p, "interpolation", cv::INTER_NEAREST);
    if (interp_ < 0) p["interpolation"].fail("expected nearest, bilinear or bicubic");
    expand_ = p.get<bool>("expand", false);
    if (p["center"].defined()) {
      const auto c = numbers(p["center"]);
      if (c.size() != 2) p["center"].fail("expected [x, y]");
      center_ = cv::Point2f(static_cast<float>(c[0]), static_cast<float>(c[1]));
      has_center_ = true;
    }
    fill_ = read_fill(p["fill"], 0);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    const double angle = rng.uniform(lo_, hi_);
    const cv::Point2f c = has_center_ ? center_ : cv::Point2f(img.cols * 0.5f - 0.5f, img.rows * 0.5f - 0.5f);
    cv::Mat m = cv::getRotationMatrix2D(c, angle, 1.0);
    cv::Size out_size = img.size();
    if (expand_) {
      const double a = std::abs(m.at<double>(0, 0)), b = std::abs(m.at<double>(0, 1));
      out_size = cv::Size(static_cast<int>(std::ceil(img.rows * b + img.cols * a - 1e-9)),
                          static_cast<int>(std::ceil(img.rows * a + img.cols * b - 1e-9)));
      m.at<double>(0, 2) += (out_size.width - img.cols) * 0.5;
      m.at<double>(1, 2) += (out_size.height - img.rows) * 0.5;
    }
    cv::Mat out;
    cv::warpAffine(img, out, m, out_size, interp_, cv::BORDER_CONSTANT, fill_);
    img = out;
  }
  std::string name() const override { return "RandomRotation"; }

 private:
  double prob_, lo_ = 0, hi_ = 0;
  int interp_;
  bool expand_ = false, has_center_ = false;
  cv::Point2f center_;
  cv::Scalar fill_;
};

// ---------------------------------------------------------------------------------------------------------------
// Color ops (uint8)

cv::Mat gray_of(const cv::Mat& img, bool rgb) {
  cv::Mat g;
  cv::cvtColor(img, g, rgb ? cv::COLOR_RGB2GRAY : cv::COLOR_BGR2GRAY);
  return g;
}

// PIL ImageEnhance-style blend: degenerate * (1 - f) + img * f, saturated to uint8.
void blend_into(cv::Mat& img, const cv::Mat& degenerate, double f) {
  cv::Mat out;
  cv::addWeighted(img, f, degenerate, 1.0 - f, 0.0, out);
  img = out;
}

void adjust_brightness(cv::Mat& img, double f) {
  cv::Mat out;
  img.convertTo(out, -1, f, 0.0);
  img = out;
}

void adjust_contrast(cv::Mat& img, double f, bool rgb) {
  const double mean = cv::mean(gray_of(img, rgb))[0];
  const double m = std::floor(mean + 0.5);
  cv::Mat out;
  img.convertTo(out, -1, f, m * (1.0 - f));
  img = out;
}

void adjust_saturation(cv::Mat& img, double f, bool rgb) {
  cv::Mat g3;
  cv::cvtColor(gray_of(img, rgb), g3, cv::COLOR_GRAY2BGR);
  blend_into(img, g3, f);
}

// Hue shift by `h` of a full turn (h in [-0.5, 0.5]) in HSV with 0..255 hue (PIL's convention).
void adjust_hue(cv::Mat& img, double h, bool rgb) {
  cv::Mat hsv;
  cv::cvtColor(img, hsv, rgb ? cv::COLOR_RGB2HSV_FULL : cv::COLOR_BGR2HSV_FULL);
  const int shift = static_cast<int>(std::lround(h * 255.0));
  cv::Mat lut(1, 256, CV_8UC3);
  for (int i = 0; i < 256; ++i) lut.at<cv::Vec3b>(0, i) = cv::Vec3b(static_cast<uchar>((i + shift + 256) & 255),
                                                                    static_cast<uchar>(i), static_cast<uchar>(i));
  cv::LUT(hsv, lut, hsv);
  cv::cvtColor(hsv, img, rgb ? cv::COLOR_HSV2RGB_FULL : cv::COLOR_HSV2BGR_FULL);
}

class ColorJitter : public Transform {
 public:
  ColorJitter(const ConfigNode& p, const ImageState& st) : rgb_(st.rgb) {
    p.check_keys({"prob", "brightness", "contrast", "saturation", "hue", "keys"});
    prob_ = number_or(p, "prob", 2.0);
    read_range(p, "brightness", b_);
    read_range(p, "contrast", c_);
    read_range(p, "saturation", s_);
    auto h = p["hue"];
    if (h.defined()) {
      if (h.is_scalar()) {
        const double v = number(h);
        if (v < 0 || v > 0.5) h.fail("hue must be in [0, 0.5]");
        h_ = {-v, v};
      } else {
        const auto v = numbers(h);
        if (v.size() != 2 || v[0] < -0.5 || v[1] > 0.5 || v[0] > v[1]) h.fail("expected [min, max] within [-0.5, 0.5]");
        h_ = {v[0], v[1]};
      }
    }
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    std::array<int, 4> order{0, 1, 2, 3};
    rng.shuffle(order);
    for (int k : order) {
      switch (k) {
        case 0:
          if (active(b_)) adjust_brightness(img, rng.uniform(b_[0], b_[1]));
          break;
        case 1:
          if (active(c_)) adjust_contrast(img, rng.uniform(c_[0], c_[1]), rgb_);
          break;
        case 2:
          if (active(s_)) adjust_saturation(img, rng.uniform(s_[0], s_[1]), rgb_);
          break;
        default:
          if (h_[0] != 0 || h_[1] != 0) adjust_hue(img, rng.uniform(h_[0], h_[1]), rgb_);
      }
    }
  }
  std::string name() const override { return "ColorJitter"; }

 private:
  static bool active(const std::array<double, 2>& r) { return !(r[0] == 1.0 && r[1] == 1.0); }
  static void read_range(const ConfigNode& p, const std::string& key, std::array<double, 2>& r) {
    auto n = p[key];
    if (!n.defined()) return;
    if (n.is_scalar()) {
      const double v = number(n);
      if (v < 0) n.fail(key + " must be non-negative");
      r = {std::max(0.0, 1.0 - v), 1.0 + v};
    } else {
      const auto v = numbers(n);
      if (v.size() != 2 || v[0] < 0 || v[0] > v[1]) n.fail("expected [min, max] with 0 <= min <= max");
      r = {v[0], v[1]};
    }
  }
  bool rgb_;
  double prob_;
  std::array<double, 2> b_{1, 1}, c_{1, 1}, s_{1, 1}, h_{0, 0};
};

// ---------------------------------------------------------------------------------------------------------------
// AugMix (PaddleClas: ops of ppcls/data/preprocess/ops/functional.py, PIL semantics reproduced with OpenCV)

cv::Mat make_lut3(const std::array<std::array<uchar, 256>, 3>& t) {
  cv::Mat lut(1, 256, CV_8UC3);
  auto* p = lut.ptr<cv::Vec3b>(0);
  for (int i = 0; i < 256; ++i) p[i] = cv::Vec3b(t[0][i], t[1][i], t[2][i]);
  return lut;
}

void per_channel_hist(const cv::Mat& img, std::array<std::array<int, 256>, 3>& hist) {
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

void aug_autocontrast(cv::Mat& img) {
  std::vector<cv::Mat> ch;
  cv::split(img, ch);
  std::array<std::array<uchar, 256>, 3> t;
  for (int c = 0; c < 3; ++c) {
    double lo, hi;
    cv::minMaxLoc(ch[c], &lo, &hi);
    for (int i = 0; i < 256; ++i) {
      if (hi <= lo) {
        t[c][i] = static_cast<uchar>(i);
      } else {
        const double scale = 255.0 / (hi - lo), offset = -lo * scale;
        const int v = static_cast<int>(i * scale + offset);
        t[c][i] = static_cast<uchar>(std::clamp(v, 0, 255));
      }
    }
  }
  cv::LUT(img, make_lut3(t), img);
}

void aug_equalize(cv::Mat& img) {
  std::array<std::array<int, 256>, 3> hist;
  per_channel_hist(img, hist);
  std::array<std::array<uchar, 256>, 3> t;
  for (int c = 0; c < 3; ++c) {
    int total = 0, last = 0, nonzero = 0;
    for (int i = 0; i < 256; ++i)
      if (hist[c][i]) {
        total += hist[c][i];
        last = hist[c][i];
        ++nonzero;
      }
    const int step = nonzero <= 1 ? 0 : (total - last) / 255;
    if (step == 0) {
      for (int i = 0; i < 256; ++i) t[c][i] = static_cast<uchar>(i);
      continue;
    }
    int n = step / 2;
    for (int i = 0; i < 256; ++i) {
      t[c][i] = static_cast<uchar>(std::min(n / step, 255));
      n += hist[c][i];
    }
  }
  cv::LUT(img, make_lut3(t), img);
}

void aug_posterize(cv::Mat& img, int bits) {
  const uchar mask = static_cast<uchar>(~((1 << (8 - bits)) - 1));
  cv::bitwise_and(img, cv::Scalar::all(mask), img);
}

void aug_solarize(cv::Mat& img, int threshold) {
  cv::Mat lut(1, 256, CV_8U);
  for (int i = 0; i < 256; ++i) lut.at<uchar>(i) = static_cast<uchar>(i < threshold ? i : 255 - i);
  cv::LUT(img, lut, img);
}

// PIL Image.transform(AFFINE, (a,b,c,d,e,f), BILINEAR): output (x,y) samples input (a x + b y + c, d x + e y + f)
// in continuous coordinates (pixel centers at +0.5); converted to OpenCV's pixel-index convention.
void pil_affine(cv::Mat& img, double a, double b, double c, double d, double e, double f) {
  cv::Mat m = (cv::Mat_<double>(2, 3) << a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0));
  cv::Mat out;
  cv::warpAffine(img, out, m, img.size(), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT,
                 cv::Scalar::all(0));
  img = out;
}

double sample_level(double n, Rng& rng) { return rng.uniform(0.1, n); }
int int_parameter(double level, double maxval) { return static_cast<int>(level * maxval / 10.0); }
double float_parameter(double level, double maxval) { return level * maxval / 10.0; }

void augmix_op(int op, cv::Mat& img, int severity, Rng& rng) {
  switch (op) {
    case 0: aug_autocontrast(img); break;
    case 1: aug_equalize(img); break;
    case 2: aug_posterize(img, 4 - int_parameter(sample_level(severity, rng), 4)); break;
    case 3: {
      int deg = int_parameter(sample_level(severity, rng), 30);
      if (rng.uniform() > 0.5) deg = -deg;
      if (deg == 0) break;
      // PIL rotate: counter-clockwise about the image center, black fill.
      cv::Mat m = cv::getRotationMatrix2D(cv::Point2f(img.cols * 0.5f - 0.5f, img.rows * 0.5f - 0.5f), deg, 1.0);
      cv::Mat out;
      cv::warpAffine(img, out, m, img.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar::all(0));
      img = out;
      break;
    }
    case 4: aug_solarize(img, 256 - int_parameter(sample_level(severity, rng), 256)); break;
    case 5: case 6: {
      double level = float_parameter(sample_level(severity, rng), 0.3);
      if (rng.uniform() > 0.5) level = -level;
      if (op == 5) pil_affine(img, 1, level, 0, 0, 1, 0);
      else pil_affine(img, 1, 0, 0, level, 1, 0);
      break;
    }
    default: {  // 7: translate_x, 8: translate_y
      const double extent = (op == 7 ? img.cols : img.rows) / 3.0;
      int level = int_parameter(sample_level(severity, rng), extent);
      if (rng.uniform() > 0.5) level = -level;
      if (op == 7) pil_affine(img, 1, 0, level, 0, 1, 0);
      else pil_affine(img, 1, 0, 0, 0, 1, level);
    }
  }
}

constexpr int kAugMixOps = 9;

class AugMix : public Transform {
 public:
  explicit AugMix(const ConfigNode& p) {
    p.check_keys({"prob", "aug_prob_coeff", "mixture_width", "mixture_depth", "aug_severity"});
    prob_ = number_or(p, "prob", 0.5);
    coeff_ = number_or(p, "aug_prob_coeff", 0.1);
    width_ = p.get<int>("mixture_width", 3);
    depth_ = p.get<int>("mixture_depth", 1);
    severity_ = p.get<int>("aug_severity", 1);
    if (coeff_ <= 0) p["aug_prob_coeff"].fail("must be positive");
    if (width_ < 1) p["mixture_width"].fail("must be at least 1");
    if (depth_ == 0 || depth_ < -1) p["mixture_depth"].fail("must be positive, or -1 for a random depth in 1..3");
    if (severity_ < 1 || severity_ > 10) p["aug_severity"].fail("must be in 1..10");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (rng.uniform() > prob_) return;
    // ws ~ Dirichlet(coeff * 1), m ~ Beta(coeff, coeff)
    std::vector<double> ws(width_);
    double sum = 0;
    for (auto& w : ws) sum += (w = rng.gamma(coeff_));
    for (auto& w : ws) w = sum > 0 ? w / sum : 1.0 / width_;
    const double m = rng.beta(coeff_, coeff_);
    cv::Mat mix;
    for (int i = 0; i < width_; ++i) {
      cv::Mat aug = img.clone();
      const int depth = depth_ > 0 ? depth_ : static_cast<int>(rng.randint(1, 3));
      for (int d = 0; d < depth; ++d) augmix_op(static_cast<int>(rng.below(kAugMixOps)), aug, severity_, rng);
      if (i == 0) {
        aug.convertTo(mix, CV_32F, ws[i]);
      } else {
        cv::Mat f;
        aug.convertTo(f, CV_32F, ws[i]);
        mix += f;
      }
    }
    // (1 - m) * image + m * mix, truncated to uint8 like numpy's astype (the -0.4999 makes rounding a floor).
    cv::Mat out;
    cv::Mat src_f;
    img.convertTo(src_f, CV_32F);
    cv::addWeighted(src_f, 1.0 - m, mix, m, -0.4999, out);
    out.convertTo(img, CV_8U);
  }
  std::string name() const override { return "AugMix"; }

 private:
  double prob_, coeff_;
  int width_, depth_, severity_;
};

// ---------------------------------------------------------------------------------------------------------------
// Normalize, layout, erasing

class NormalizeImage : public Transform {
 public:
  NormalizeImage(const ConfigNode& p, ImageState& st) {
    p.check_keys({"scale", "mean", "std", "order", "output_fp16", "channel_num"});
    scale_ = number_or(p, "scale", 1.0 / 255.0);
    std::vector<double> mean{0.485, 0.456, 0.406}, stdv{0.229, 0.224, 0.225};
    if (p["mean"].defined()) mean = numbers(p["mean"]);
    if (p["std"].defined()) stdv = numbers(p["std"]);
    if (mean.size() != 3) p["mean"].fail("expected 3 values");
    if (stdv.size() != 3) p["std"].fail("expected 3 values");
    for (double s : stdv)
      if (s == 0) p["std"].fail("std must not be 0");
    const auto order = p.get<std::string>("order", "chw");
    if (order == "chw") {
      if (!st.chw)
        p.fail("order 'chw' expects a channel-first image, but the image is HWC here; set order: '' (or put "
               "ToCHWImage / DecodeImage.channel_first: True before NormalizeImage)");
    } else if (order == "" || order == "hwc") {
      if (st.chw) p.fail("order '" + order + "' expects an HWC image, but the image is channel-first here; set order: chw");
    } else {
      p["order"].fail("expected '', 'hwc' or 'chw'");
    }
    if (p.get<bool>("output_fp16", false)) p["output_fp16"].fail("output_fp16 is not supported (batches are float32)");
    channels_ = p.get<int>("channel_num", 3);
    if (channels_ != 3 && channels_ != 4) p["channel_num"].fail("expected 3 or 4");
    if (st.channels != 3) p.fail("expects a 3-channel image");
    // out = (x * scale - mean) / std = x * (scale / std) - mean / std, per channel
    m_ = cv::Mat(3, 4, CV_32F, cv::Scalar(0));
    for (int c = 0; c < 3; ++c) {
      m_.at<float>(c, c) = static_cast<float>(scale_ / stdv[c]);
      m_.at<float>(c, 3) = static_cast<float>(-mean[c] / stdv[c]);
    }
    st.is_float = true;
    st.channels = channels_;
  }
  void apply(cv::Mat& img, Rng&) const override {
    if (img.channels() != 3) throw Error(fmt::format("NormalizeImage: expected 3 channels, got {}", img.channels()));
    cv::Mat f;
    img.convertTo(f, CV_32F);
    cv::transform(f, f, m_);
    if (channels_ == 4) {
      std::vector<cv::Mat> ch;
      cv::split(f, ch);
      ch.push_back(cv::Mat::zeros(f.size(), CV_32F));
      cv::merge(ch, f);
    }
    img = f;
  }
  std::string name() const override { return "NormalizeImage"; }

 private:
  double scale_;
  int channels_;
  cv::Mat m_;
};

class ToCHWImage : public Transform {
 public:
  ToCHWImage(const ConfigNode& p, ImageState& st) {
    p.check_keys({});
    if (st.chw) p.fail("the image is already channel-first (DecodeImage.channel_first or an earlier ToCHWImage)");
    st.chw = true;
  }
  void apply(cv::Mat&, Rng&) const override {}  // layout is logical; batches are written CHW
  std::string name() const override { return "ToCHWImage"; }
};

// paddle.vision.transforms.ToTensor (exposed by PaddleClas under this name): uint8 HWC -> float32 / 255, CHW.
class ToTensor : public Transform {
 public:
  ToTensor(const ConfigNode& p, ImageState& st) {
    p.check_keys({"data_format", "keys"});
    const auto fmt_ = p.get<std::string>("data_format", "CHW");
    if (fmt_ != "CHW" && fmt_ != "HWC") p["data_format"].fail("expected CHW or HWC");
    if (st.is_float) p.fail("ToTensor expects an 8-bit image; it already is float (NormalizeImage before it?)");
    st.is_float = true;
    st.chw = fmt_ == "CHW";
  }
  void apply(cv::Mat& img, Rng&) const override {
    cv::Mat f;
    img.convertTo(f, CV_32F, 1.0 / 255.0);
    img = f;
  }
  std::string name() const override { return "ToTensor"; }
};

// paddle.vision.transforms.Normalize: (img - mean) / std per channel (no scaling), optional BGR<->RGB swap.
class Normalize : public Transform {
 public:
  Normalize(const ConfigNode& p, ImageState& st) {
    p.check_keys({"mean", "std", "data_format", "to_rgb", "keys"});
    auto read3 = [&](const std::string& key, double def) {
      auto n = p[key];
      if (!n.defined()) return std::vector<double>(3, def);
      if (n.is_scalar()) return std::vector<double>(3, number(n));
      auto v = numbers(n);
      if (v.size() != 3) n.fail("expected a number or 3 values");
      return v;
    };
    const auto mean = read3("mean", 0.0), stdv = read3("std", 1.0);
    for (double s : stdv)
      if (s == 0) p["std"].fail("std must not be 0");
    const auto fmt_ = p.get<std::string>("data_format", "CHW");
    if (fmt_ != "CHW" && fmt_ != "HWC") p["data_format"].fail("expected CHW or HWC");
    if ((fmt_ == "CHW") != st.chw)
      p.fail("data_format " + fmt_ + " does not match the image layout here (" + (st.chw ? "CHW" : "HWC") + ")");
    swap_ = p.get<bool>("to_rgb", false);
    if (st.channels != 3) p.fail("expects a 3-channel image");
    m_ = cv::Mat(3, 4, CV_32F, cv::Scalar(0));
    for (int c = 0; c < 3; ++c) {
      m_.at<float>(c, swap_ ? 2 - c : c) = static_cast<float>(1.0 / stdv[c]);
      m_.at<float>(c, 3) = static_cast<float>(-mean[c] / stdv[c]);
    }
    st.is_float = true;
  }
  void apply(cv::Mat& img, Rng&) const override {
    cv::Mat f;
    img.convertTo(f, CV_32F);
    cv::transform(f, f, m_);
    img = f;
  }
  std::string name() const override { return "Normalize"; }

 private:
  bool swap_ = false;
  cv::Mat m_;
};

class RandomErasing : public Transform {
 public:
  explicit RandomErasing(const ConfigNode& p) {
    p.check_keys({"EPSILON", "sl", "sh", "r1", "mean", "attempt", "use_log_aspect", "mode"});
    eps_ = number_or(p, "EPSILON", 0.5);
    sl_ = number_or(p, "sl", 0.02);
    sh_ = number_or(p, "sh", 0.4);
    const double r1 = number_or(p, "r1", 0.3);
    if (r1 <= 0) p["r1"].fail("r1 must be positive");
    if (sl_ < 0 || sl_ > sh_) p.fail("need 0 <= sl <= sh");
    log_aspect_ = p.get<bool>("use_log_aspect", false);
    r_lo_ = log_aspect_ ? std::log(r1) : r1;
    r_hi_ = log_aspect_ ? std::log(1.0 / r1) : 1.0 / r1;
    if (p["mean"].defined()) mean_ = numbers(p["mean"]);
    if (mean_.size() != 3) p["mean"].fail("expected 3 values");
    attempt_ = p.get<int>("attempt", 100);
    const auto mode = p.get<std::string>("mode", "const");
    if (mode == "const") mode_ = 0;
    else if (mode == "rand") mode_ = 1;
    else if (mode == "pixel") mode_ = 2;
    else p["mode"].fail("expected const, rand or pixel");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (rng.uniform() > eps_) return;
    const int H = img.rows, W = img.cols, C = img.channels();
    for (int a = 0; a < attempt_; ++a) {
      const double area = rng.uniform(sl_, sh_) * H * W;
      double aspect = rng.uniform(r_lo_, r_hi_);
      if (log_aspect_) aspect = std::exp(aspect);
      const int h = static_cast<int>(std::nearbyint(std::sqrt(area * aspect)));
      const int w = static_cast<int>(std::nearbyint(std::sqrt(area / aspect)));
      if (w < W && h < H) {
        const int y = static_cast<int>(rng.randint(0, H - h));
        const int x = static_cast<int>(rng.randint(0, W - w));
        cv::Mat roi = img(cv::Rect(x, y, w, h));
        if (mode_ == 0) {
          roi.setTo(fill_scalar(C, mean_[0], mean_[1], mean_[2]));
        } else if (mode_ == 1) {
          const double r = rng.normal(), g = rng.normal(), b = rng.normal();
          roi.setTo(fill_scalar(C, r, g, b));
        } else {
          cv::Mat noise(h, w, CV_32FC(C));
          for (int yy = 0; yy < h; ++yy) {
            float* q = noise.ptr<float>(yy);
            for (int k = 0; k < w * C; ++k) q[k] = static_cast<float>(rng.normal());
          }
          if (C == 4) {  // PaddleClas erases only channel 0 of 1-channel images; 4-channel: first three
            std::vector<cv::Mat> ch;
            cv::split(noise, ch);
            ch[3] = cv::Mat::zeros(h, w, CV_32F);
            cv::merge(ch, noise);
          }
          noise.convertTo(roi, img.depth());
        }
        return;
      }
    }
  }
  std::string name() const override { return "RandomErasing"; }

 private:
  static cv::Scalar fill_scalar(int channels, double a, double b, double c) {
    return channels == 4 ? cv::Scalar(a, b, c, 0) : cv::Scalar(a, b, c);
  }
  double eps_, sl_, sh_, r_lo_, r_hi_;
  bool log_aspect_ = false;
  std::vector<double> mean_{0, 0, 0};
  int attempt_ = 100, mode_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Registry

using TransformPtr = std::shared_ptr<const Transform>;
using TransformRegistry = Registry<TransformPtr, ImageState*>;

void require_uint8(const ConfigNode& p, const ImageState& st, const char* op) {
  if (st.is_float)
    p.fail(std::string(op) + " works on 8-bit images; move it before NormalizeImage");
}

const TransformRegistry& transform_registry() {
  static const TransformRegistry reg = [] {
    TransformRegistry r("transform op");
    r.add("ResizeImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<ResizeImage>(p); });
    r.add("RandCropImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandCropImage>(p); });
    r.add("RandCropImageV2", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandCropImageV2>(p); });
    r.add("CropImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<CropImage>(p); });
    r.add("RandFlipImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandFlipImage>(p); });
    r.add("Pad", [](const ConfigNode& p, ImageState*) { return std::make_shared<Pad>(p); });
    r.add("RandomRotation", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandomRotation>(p); });
    r.add("AugMix", [](const ConfigNode& p, ImageState* st) {
      require_uint8(p, *st, "AugMix");
      return std::make_shared<AugMix>(p);
    });
    r.add("ColorJitter", [](const ConfigNode& p, ImageState* st) {
      require_uint8(p, *st, "ColorJitter");
      return std::make_shared<ColorJitter>(p, *st);
    });
    r.add("NormalizeImage", [](const ConfigNode& p, ImageState* st) {
      if (st->is_float) p.fail("the image is already normalized (NormalizeImage appears twice)");
      return std::make_shared<NormalizeImage>(p, *st);
    });
    r.add("ToCHWImage", [](const ConfigNode& p, ImageState* st) { return std::make_shared<ToCHWImage>(p, *st); });
    r.add("RandomErasing", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandomErasing>(p); });
    r.add("ToTensor", [](const ConfigNode& p, ImageState* st) { return std::make_shared<ToTensor>(p, *st); });
    r.add("Normalize", [](const ConfigNode& p, ImageState* st) { return std::make_shared<Normalize>(p, *st); });
    r.add("DecodeImage", [](const ConfigNode& p, ImageState*) -> TransformPtr {
      p.fail("DecodeImage must be the first op of transform_ops");
    });
    return r;
  }();
  return reg;
}

}  // namespace

// -----------------------------------------------------------------------------------------------------------------

TransformPipeline TransformPipeline::create(const ConfigNode& ops) {
  TransformPipeline tp;
  ImageState st;
  if (!ops.defined()) {
    tp.out_ = st;
    return tp;
  }
  if (!ops.is_seq()) ops.fail("transform_ops must be a list of `- OpName: {params}`");
  size_t first = 0;
  if (ops.size() > 0) {
    auto [name, params] = ops.at(0).single_entry();
    if (name == "DecodeImage") {
      params.check_keys({"to_np", "to_rgb", "channel_first", "backend"});
      if (!params.get<bool>("to_np", true)) params["to_np"].fail("to_np: False is not supported (images are arrays)");
      check_backend(params);
      tp.to_rgb_ = params.get<bool>("to_rgb", true);
      st.rgb = tp.to_rgb_;
      st.chw = params.get<bool>("channel_first", false);
      first = 1;
    }
  }
  for (size_t i = first; i < ops.size(); ++i) {
    auto item = ops.at(i);
    auto [name, params] = item.single_entry();
    tp.ops_.push_back(transform_registry().create(name, item, params, &st));
  }
  tp.out_ = st;
  return tp;
}

cv::Mat TransformPipeline::decode(const std::string& path) const {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BadImageError(fmt::format("cannot open image '{}'", path));
  f.seekg(0, std::ios::end);
  const auto n = static_cast<size_t>(f.tellg());
  f.seekg(0);
  std::vector<uchar> buf(n);
  if (n == 0 || !f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n)))
    throw BadImageError(fmt::format("cannot read image '{}' (empty or unreadable file)", path));
  return decode_bytes(buf.data(), buf.size(), "'" + path + "'");
}

cv::Mat TransformPipeline::decode_bytes(const void* data, size_t size, const std::string& what) const {
  if (size == 0) throw BadImageError(fmt::format("cannot decode image {} (no bytes)", what));
  const cv::Mat raw(1, static_cast<int>(size), CV_8UC1, const_cast<void*>(data));
  cv::Mat img;
  try {
    img = cv::imdecode(raw, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw BadImageError(fmt::format("cannot decode image {}: {}", what, e.what()));
  }
  if (img.empty()) throw BadImageError(fmt::format("cannot decode image {} (not a supported image file?)", what));
  if (to_rgb_) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  return img;
}

void TransformPipeline::apply(cv::Mat& img, Rng& rng) const {
  for (const auto& op : ops_) {
    try {
      op->apply(img, rng);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: {}", op->name(), e.what()));
    }
  }
}

cv::Mat TransformPipeline::run(const std::string& path, Rng& rng, const BBox* box) const {
  cv::Mat img = decode(path);
  if (box) {
    const cv::Rect r = cv::Rect(box->x1, box->y1, box->x2 - box->x1, box->y2 - box->y1) & cv::Rect(0, 0, img.cols, img.rows);
    if (r.area() <= 0)
      throw Error(fmt::format("bounding box {} {} {} {} lies outside the {}x{} image", box->x1, box->y1, box->x2,
                              box->y2, img.cols, img.rows));
    img = img(r).clone();
  }
  apply(img, rng);
  return img;
}

std::vector<std::string> transform_names() {
  auto v = transform_registry().names();
  return v;
}

void hwc_to_chw_float(const cv::Mat& img, float* dst) {
  const int C = img.channels();
  const size_t plane = static_cast<size_t>(img.rows) * img.cols;
  std::vector<cv::Mat> planes(C);
  for (int c = 0; c < C; ++c) planes[c] = cv::Mat(img.rows, img.cols, CV_32F, dst + c * plane);
  if (img.depth() == CV_32F) {
    cv::split(img, planes);  // writes into the provided buffers (same size and type)
  } else {
    std::vector<cv::Mat> tmp;
    cv::split(img, tmp);
    for (int c = 0; c < C; ++c) tmp[c].convertTo(planes[c], CV_32F);
  }
}

}  // namespace featlearn
