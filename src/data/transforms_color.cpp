// Photometric transform ops: ColorJitter (OpenCV arithmetic) and AugMix, whose operations are PaddleClas's PIL
// ops and run here through the Pillow-exact functions of include/featlearn/data/pil_ops.h
// (docs/data.md#pillow-parity). Keys are documented in include/featlearn/data/transforms.h.
#include "transforms_internal.h"

#include <featlearn/data/pil_ops.h>

#include <opencv2/imgproc.hpp>

#include <array>
#include <cmath>

namespace featlearn::transform_detail {
namespace {

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
// AugMix: PaddleClas's augmentations list (autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y,
// translate_x, translate_y), each a PIL op with a level drawn from U(0.1, severity).

double sample_level(double n, Rng& rng) { return rng.uniform(0.1, n); }
int int_parameter(double level, double maxval) { return static_cast<int>(level * maxval / 10.0); }
double float_parameter(double level, double maxval) { return level * maxval / 10.0; }

void augmix_op(int op, cv::Mat& img, int severity, Rng& rng) {
  switch (op) {
    case 0: pil_autocontrast(img); break;
    case 1: pil_equalize(img); break;
    case 2: pil_posterize(img, 4 - int_parameter(sample_level(severity, rng), 4)); break;
    case 3: {
      int deg = int_parameter(sample_level(severity, rng), 30);
      if (rng.uniform() > 0.5) deg = -deg;
      img = pil_rotate_bilinear(img, deg);
      break;
    }
    case 4: pil_solarize(img, 256 - int_parameter(sample_level(severity, rng), 256)); break;
    case 5: case 6: {
      double level = float_parameter(sample_level(severity, rng), 0.3);
      if (rng.uniform() > 0.5) level = -level;
      img = op == 5 ? pil_affine_bilinear(img, {1, level, 0, 0, 1, 0})
                    : pil_affine_bilinear(img, {1, 0, 0, level, 1, 0});
      break;
    }
    default: {  // 7: translate_x, 8: translate_y (by whole pixels)
      const double extent = (op == 7 ? img.cols : img.rows) / 3.0;
      int level = int_parameter(sample_level(severity, rng), extent);
      if (rng.uniform() > 0.5) level = -level;
      img = op == 7 ? pil_affine_bilinear(img, {1, 0, double(level), 0, 1, 0})
                    : pil_affine_bilinear(img, {1, 0, 0, 0, 1, double(level)});
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

}  // namespace

void add_color_ops(TransformRegistry& r) {
  r.add("ColorJitter", [](const ConfigNode& p, ImageState* st) {
    require_uint8(p, *st, "ColorJitter");
    st->pil = false;  // PaddleClas's ColorJitter returns an array
    return std::make_shared<ColorJitter>(p, *st);
  });
  r.add("AugMix", [](const ConfigNode& p, ImageState* st) {
    require_uint8(p, *st, "AugMix");
    st->pil = false;  // returns an array
    return std::make_shared<AugMix>(p);
  });
}

}  // namespace featlearn::transform_detail
