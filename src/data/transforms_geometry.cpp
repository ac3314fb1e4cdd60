// Geometric transform ops: ResizeImage, RandCropImage, RandCropImageV2, CropImage, RandFlipImage, Pad,
// RandomRotation (PaddleClas semantics; keys documented in include/featlearn/data/transforms.h), and the Resizer
// and Padding helpers the paddle.vision ops (transforms_vision.cpp) share. Resizing with `backend: pil` uses
// Pillow's filters (include/featlearn/data/pil_ops.h, docs/data.md#pillow-parity).
#include "transforms_internal.h"

#include <featlearn/data/pil_ops.h>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <climits>
#include <cmath>

namespace featlearn::transform_detail {

// ---------------------------------------------------------------------------------------------------------------
// Resizer: UnifiedResize (OpenCV for backend cv2, Pillow for backend pil; "random" picks bilinear or bicubic per
// sample with either) and paddle.vision's F.resize (the library follows the image type). Bilinear by default:
// PaddleClas's UnifiedResize passes Image.BILINEAR to Pillow when no interpolation is configured.

Resizer::Resizer(const ConfigNode& p, const ImageState& st, const char* op) {
  pil_ = read_backend(p, "cv2") == "pil";
  if (pil_) {
    init_pil(p, st, op, true);
    return;
  }
  cv_interp_ = read_interp(p, "interpolation", cv::INTER_LINEAR);
  random_ = cv_interp_ < 0;
}

Resizer Resizer::vision(const ConfigNode& p, const ImageState& st, const char* op) {
  Resizer r;
  r.pil_ = st.pil;
  if (r.pil_) {
    r.init_pil(p, st, op, false);
    return r;
  }
  auto n = p["interpolation"];
  if (!n.defined()) return r;
  const std::string name = n.as<std::string>();  // paddle.vision's names are case-sensitive
  const std::vector<std::pair<std::string, int>> names = {{"nearest", cv::INTER_NEAREST},
                                                          {"bilinear", cv::INTER_LINEAR},
                                                          {"area", cv::INTER_AREA},
                                                          {"bicubic", cv::INTER_CUBIC},
                                                          {"lanczos", cv::INTER_LANCZOS4}};
  for (const auto& [k, v] : names)
    if (k == name) {
      r.cv_interp_ = v;
      return r;
    }
  n.fail("'" + name + "' is not an OpenCV interpolation of paddle.vision" +
         did_you_mean(name, {"nearest", "bilinear", "area", "bicubic", "lanczos"}) +
         " (the image is an array here; use nearest, bilinear, area, bicubic or lanczos)");
}

void Resizer::init_pil(const ConfigNode& p, const ImageState& st, const char* op, bool allow_random) {
  if (st.is_float || st.channels != 3)
    p.fail(std::string(op) + " resizing with Pillow works on 8-bit 3-channel images (as Pillow does); move it "
                             "before NormalizeImage" + (allow_random ? " or set backend: cv2" : ""));
  auto n = p["interpolation"];
  if (!n.defined()) return;
  const std::string name = allow_random ? lower(n.as<std::string>()) : n.as<std::string>();
  if (allow_random && name == "random") {
    random_ = true;
  } else if (auto f = pil_filter_from_name(name)) {
    filter_ = *f;
  } else {
    std::vector<std::string> valid = {"nearest", "bilinear", "bicubic", "box", "lanczos", "hamming"};
    if (allow_random) valid.push_back("random");
    n.fail("'" + n.as<std::string>() + "' is not a Pillow filter" + did_you_mean(name, valid) +
           (allow_random ? " (with backend: pil use nearest, bilinear, bicubic, box, lanczos, hamming or random)"
                         : " (the image is a PIL image here; use nearest, bilinear, bicubic, box, lanczos or "
                           "hamming)"));
  }
}

void Resizer::resize(cv::Mat& img, cv::Size size, Rng& rng) const {
  const bool cubic = random_ && rng.randint(0, 1) == 1;  // drawn even for a same-size image, as PaddleClas
  if (img.size() == size) return;  // both libraries copy a same-size image unchanged
  if (pil_) {
    img = pil_resize(img, size, random_ ? (cubic ? PilFilter::kBicubic : PilFilter::kBilinear) : filter_);
    return;
  }
  cv::Mat out;
  cv::resize(img, out, size, 0, 0, random_ ? (cubic ? cv::INTER_CUBIC : cv::INTER_LINEAR) : cv_interp_);
  img = out;
}

// ---------------------------------------------------------------------------------------------------------------
// Padding (paddle.vision's F.pad: the same pixels for PIL images and arrays)

Padding Padding::read(const ConfigNode& p, const std::string& padding_key) {
  Padding pad;
  auto n = p[padding_key];
  if (!n.defined()) p.fail("missing required key '" + padding_key + "'");
  if (n.is_scalar()) {
    pad.left = pad.top = pad.right = pad.bottom = n.as<int>();
  } else {
    const auto v = n.as<std::vector<int>>();
    if (v.size() == 2) {
      pad.left = pad.right = v[0];
      pad.top = pad.bottom = v[1];
    } else if (v.size() == 4) {
      pad.left = v[0], pad.top = v[1], pad.right = v[2], pad.bottom = v[3];
    } else {
      n.fail("expected an int, [left/right, top/bottom] or [left, top, right, bottom]");
    }
  }
  if (std::min({pad.left, pad.top, pad.right, pad.bottom}) < 0) n.fail("padding must not be negative");
  const Padding style = read_style(p);
  pad.fill = style.fill;
  pad.border = style.border;
  return pad;
}

Padding Padding::read_style(const ConfigNode& p) {
  Padding pad;
  pad.fill = read_fill(p["fill"], 0);
  const auto mode = p.get<std::string>("padding_mode", "constant");
  if (mode == "constant") pad.border = cv::BORDER_CONSTANT;
  else if (mode == "edge") pad.border = cv::BORDER_REPLICATE;
  else if (mode == "reflect") pad.border = cv::BORDER_REFLECT_101;
  else if (mode == "symmetric") pad.border = cv::BORDER_REFLECT;
  else p["padding_mode"].fail("expected constant, edge, reflect or symmetric");
  return pad;
}

Padding Padding::style() const {
  Padding s;
  s.border = border;
  s.fill = fill;
  return s;
}

void Padding::apply(cv::Mat& img) const {
  if (left == 0 && top == 0 && right == 0 && bottom == 0) return;
  cv::Mat out;
  cv::copyMakeBorder(img, out, top, bottom, left, right, border, fill);
  img = out;
}

void check_image_keys(const ConfigNode& p) {
  auto n = p["keys"];
  if (!n.defined()) return;
  if (!n.is_seq() || n.size() != 1 || n.at(0).as<std::string>() != "image")
    n.fail("only images travel through the pipeline: leave keys out or write [image]");
}

namespace {

class ResizeImage : public Transform {
 public:
  ResizeImage(const ConfigNode& p, ImageState& st) : resizer_(p, st, "ResizeImage") {
    p.check_keys({"size", "resize_short", "interpolation", "backend", "return_numpy"});
    // UnifiedResize returns a PIL image only for backend pil with return_numpy: False (paddle.vision ops after
    // it then resize with Pillow).
    st.pil = read_backend(p, "cv2") == "pil" && !p.get<bool>("return_numpy", true);
    if (p["resize_short"].defined() && p["resize_short"].as<int>() > 0) {
      resize_short_ = p["resize_short"].as<int>();
    } else if (p["size"].defined()) {
      size_ = read_size(p["size"]);
    } else {
      p.fail("ResizeImage needs 'size' or 'resize_short'");
    }
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    cv::Size target = size_;
    if (resize_short_ > 0) {
      if (img.empty()) throw Error("ResizeImage: the image is empty");
      const double percent = static_cast<double>(resize_short_) / std::min(img.cols, img.rows);
      const double w = std::nearbyint(img.cols * percent), h = std::nearbyint(img.rows * percent);
      if (!(w <= INT_MAX && h <= INT_MAX))  // a resize_short far beyond the image's aspect ratio
        throw Error(fmt::format("ResizeImage: resize_short {} makes the {}x{} image {:.0f}x{:.0f}, too large",
                                resize_short_, img.cols, img.rows, w, h));
      target = {static_cast<int>(w), static_cast<int>(h)};
    }
    resizer_.resize(img, target, rng);
  }
  std::string name() const override { return "ResizeImage"; }

 private:
  Resizer resizer_;
  int resize_short_ = 0;
  cv::Size size_;
};

class RandCropImage : public Transform {
 public:
  RandCropImage(const ConfigNode& p, ImageState& st) : resizer_(p, st, "RandCropImage") {
    st.pil = false;  // UnifiedResize returns an array
    p.check_keys({"size", "progress_size", "scale", "ratio", "interpolation", "use_log_aspect", "backend"});
    size_ = read_size(p["size"]);
    if (p["progress_size"].defined()) p["progress_size"].fail("progress_size is not supported");
    if (p["scale"].defined()) scale_ = numbers(p["scale"]);
    if (p["ratio"].defined()) ratio_ = numbers(p["ratio"]);
    if (scale_.size() != 2 || scale_[0] > scale_[1] || scale_[0] <= 0) p["scale"].fail("expected [min, max] with 0 < min <= max");
    if (ratio_.size() != 2 || ratio_[0] > ratio_[1] || ratio_[0] <= 0) p["ratio"].fail("expected [min, max] with 0 < min <= max");
    log_aspect_ = p.get<bool>("use_log_aspect", false);
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
    cv::Mat crop = img(cv::Rect(x, y, w, h)).clone();
    resizer_.resize(crop, size_, rng);
    img = crop;
  }
  std::string name() const override { return "RandCropImage"; }

 private:
  Resizer resizer_;
  cv::Size size_;
  std::vector<double> scale_{0.08, 1.0}, ratio_{3.0 / 4.0, 4.0 / 3.0};
  bool log_aspect_ = false;
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
// PaddleClas's Pad (ImageOps.expand for backend pil, cv2.copyMakeBorder for cv2: the same pixels).
class Pad : public Transform {
 public:
  explicit Pad(const ConfigNode& p) : pad_(Padding::read(p, "padding")) {
    p.check_keys({"padding", "fill", "padding_mode", "backend"});
    read_backend(p, "pil");  // both backends pad alike
  }
  void apply(cv::Mat& img, Rng&) const override { pad_.apply(img); }
  std::string name() const override { return "Pad"; }

 private:
  Padding pad_;
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
    if (!std::isfinite(hi_ - lo_)) d.fail("the range of degrees is too large");
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

}  // namespace

void add_geometry_ops(TransformRegistry& r) {
  r.add("ResizeImage", [](const ConfigNode& p, ImageState* st) { return std::make_shared<ResizeImage>(p, *st); });
  r.add("RandCropImage", [](const ConfigNode& p, ImageState* st) { return std::make_shared<RandCropImage>(p, *st); });
  r.add("RandCropImageV2", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandCropImageV2>(p); });
  r.add("CropImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<CropImage>(p); });
  r.add("RandFlipImage", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandFlipImage>(p); });
  r.add("Pad", [](const ConfigNode& p, ImageState*) { return std::make_shared<Pad>(p); });
  r.add("RandomRotation", [](const ConfigNode& p, ImageState* st) {
    if (st->pil)
      p.fail("RandomRotation of a PIL image (dataset backend pil or ResizeImage return_numpy: False before it) "
             "rotates with Pillow in paddle.vision, which featlearn does not reproduce; put it where the image is "
             "an array");
    return std::make_shared<RandomRotation>(p);
  });
}

}  // namespace featlearn::transform_detail
