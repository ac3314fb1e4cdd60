// paddle.vision's transforms that PaddleClas configs name directly: Resize, RandomResizedCrop, CenterCrop,
// RandomHorizontalFlip, RandomCrop. Sizes are [h, w] here (paddle.vision's order), unlike PaddleClas's own ops
// ([w, h]). paddle.vision picks its library by the image type: Pillow for PIL images (ImageState::pil), OpenCV
// for arrays; keys are documented in include/featlearn/data/transforms.h and docs/config.md.
#include "transforms_internal.h"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace featlearn::transform_detail {
namespace {

// size: int or [h, w] (paddle.vision) -> (w, h)
cv::Size read_hw_size(const ConfigNode& p) {
  auto n = p["size"];
  if (!n.defined()) p.fail("missing required key 'size'");
  if (n.is_scalar()) {
    const int s = n.as<int>();
    if (s <= 0) n.fail("size must be positive");
    return {s, s};
  }
  const auto v = n.as<std::vector<int>>();
  if (v.size() != 2 || v[0] <= 0 || v[1] <= 0) n.fail("expected a positive int or a list [h, w]");
  return {v[1], v[0]};
}

std::array<double, 2> read_range(const ConfigNode& p, const std::string& key, std::array<double, 2> def,
                                 double min_value, bool min_open) {
  auto n = p[key];
  if (!n.defined()) return def;
  const auto v = numbers(n);
  const bool ok = v.size() == 2 && v[0] <= v[1] && (min_open ? v[0] > min_value : v[0] >= min_value);
  if (!ok)
    n.fail(fmt::format("expected [min, max] with {} min <= max", min_open ? fmt::format("{} <", min_value)
                                                                          : fmt::format("{} <=", min_value)));
  return {v[0], v[1]};
}

// Python's round() of a non-negative double to an int (half to even).
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }

// paddle.vision.transforms.Resize: an int resizes the shorter side to it (the other side int(size * long /
// short)), unchanged when the shorter side already has that length; [h, w] resizes to exactly that.
class Resize : public Transform {
 public:
  Resize(const ConfigNode& p, const ImageState& st) : resizer_(Resizer::vision(p, st, "Resize")) {
    p.check_keys({"size", "interpolation", "keys"});
    check_image_keys(p);
    auto n = p["size"];
    if (n.defined() && n.is_scalar()) {
      short_ = n.as<int>();
      if (short_ <= 0) n.fail("size must be positive");
    } else {
      size_ = read_hw_size(p);
    }
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    cv::Size target = size_;
    if (short_ > 0) {
      const int64_t w = img.cols, h = img.rows;
      if ((w <= h && w == short_) || (h <= w && h == short_)) return;
      if (w < h)
        target = {short_, static_cast<int>(static_cast<double>(short_ * h) / static_cast<double>(w))};
      else
        target = {static_cast<int>(static_cast<double>(short_ * w) / static_cast<double>(h)), short_};
      if (target.width <= 0 || target.height <= 0)
        throw Error(fmt::format("Resize: size {} makes the {}x{} image empty", short_, img.cols, img.rows));
    }
    resizer_.resize(img, target, rng);
  }
  std::string name() const override { return "Resize"; }

 private:
  Resizer resizer_;
  int short_ = 0;
  cv::Size size_;
};

// paddle.vision.transforms.RandomResizedCrop: up to 10 tries of area U(scale) · image area and aspect ratio
// exp(U(log ratio)), w = round(sqrt(area · ratio)), h = round(sqrt(area / ratio)), accepted when it fits, at a
// uniform position; else a center crop clamped to the ratio range. The crop is resized to `size`.
// paddle.vision RandomResizedCrop._get_param: up to 10 draws of an area fraction in `scale` and a log-uniform
// aspect ratio in `ratio`, then a uniform position; else the largest central box within `ratio`.
cv::Rect random_resized_box(int width, int height, const std::array<double, 2>& scale,
                            const std::array<double, 2>& ratio, Rng& rng) {
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = rng.uniform(scale[0], scale[1]) * area;
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int w = py_round(std::sqrt(target_area * aspect));
    const int h = py_round(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(rng.randint(0, height - h));
      const int left = static_cast<int>(rng.randint(0, width - w));
      return {left, top, w, h};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = py_round(w / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = py_round(h * ratio[1]);
  }
  w = std::clamp(w, 1, width);
  h = std::clamp(h, 1, height);
  return {(width - w) / 2, (height - h) / 2, w, h};
}

class RandomResizedCrop : public Transform {
 public:
  RandomResizedCrop(const ConfigNode& p, const ImageState& st)
      : resizer_(Resizer::vision(p, st, "RandomResizedCrop")) {
    p.check_keys({"size", "scale", "ratio", "interpolation", "keys"});
    check_image_keys(p);
    size_ = read_hw_size(p);
    scale_ = read_range(p, "scale", scale_, 0.0, false);
    ratio_ = read_range(p, "ratio", ratio_, 0.0, true);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    img = img(random_resized_box(img.cols, img.rows, scale_, ratio_, rng)).clone();
    resizer_.resize(img, size_, rng);
  }
  std::string name() const override { return "RandomResizedCrop"; }

 private:
  Resizer resizer_;
  cv::Size size_;
  std::array<double, 2> scale_{0.08, 1.0}, ratio_{3.0 / 4.0, 4.0 / 3.0};
};

// paddle.vision.transforms.CenterCrop: top = round((h - th) / 2), left = round((w - tw) / 2) (half to even). A
// PIL image smaller than the crop is padded with black around it (Pillow's crop); an array must be large enough.
class CenterCrop : public Transform {
 public:
  CenterCrop(const ConfigNode& p, const ImageState& st) : pil_(st.pil) {
    p.check_keys({"size", "keys"});
    check_image_keys(p);
    size_ = read_hw_size(p);
  }
  void apply(cv::Mat& img, Rng&) const override {
    const int top = py_round_signed((img.rows - size_.height) / 2.0);
    const int left = py_round_signed((img.cols - size_.width) / 2.0);
    const cv::Rect box(left, top, size_.width, size_.height);
    const cv::Rect inside = box & cv::Rect(0, 0, img.cols, img.rows);
    if (inside == box) {
      img = img(box).clone();
      return;
    }
    if (!pil_) too_small(name(), img, size_);
    cv::Mat out(size_, img.type(), cv::Scalar::all(0));
    if (!inside.empty()) img(inside).copyTo(out(cv::Rect(inside.x - left, inside.y - top, inside.width, inside.height)));
    img = out;
  }
  std::string name() const override { return "CenterCrop"; }

 private:
  static int py_round_signed(double v) { return static_cast<int>(std::nearbyint(v)); }
  bool pil_;
  cv::Size size_;
};

// paddle.vision.transforms.RandomHorizontalFlip: flips when U[0, 1) < prob.
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(const ConfigNode& p) {
    p.check_keys({"prob", "keys"});
    check_image_keys(p);
    prob_ = number_or(p, "prob", 0.5);
    if (prob_ < 0 || prob_ > 1) p["prob"].fail("probability must be between 0 and 1");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    cv::Mat out;
    cv::flip(img, out, 1);
    img = out;
  }
  std::string name() const override { return "RandomHorizontalFlip"; }

 private:
  double prob_;
};

// paddle.vision.transforms.RandomCrop: optional `padding` first; with pad_if_needed a side shorter than the crop
// is padded by the shortfall on both ends (as paddle.vision and torchvision do); then a crop at a uniform
// position (none drawn when the image already has the crop's size).
class RandomCrop : public Transform {
 public:
  explicit RandomCrop(const ConfigNode& p) {
    p.check_keys({"size", "padding", "pad_if_needed", "fill", "padding_mode", "keys"});
    check_image_keys(p);
    size_ = read_hw_size(p);
    auto n = p["padding"];
    if (n.defined()) {
      pad_ = Padding::read(p, "padding");
    } else {
      // fill and padding_mode still apply to pad_if_needed: read them with a zero padding.
      pad_ = Padding::read_style(p);
    }
    pad_if_needed_ = p.get<bool>("pad_if_needed", false);
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    pad_.apply(img);
    if (pad_if_needed_ && img.cols < size_.width) {
      Padding extra = pad_.style();
      extra.left = extra.right = size_.width - img.cols;
      extra.apply(img);
    }
    if (pad_if_needed_ && img.rows < size_.height) {
      Padding extra = pad_.style();
      extra.top = extra.bottom = size_.height - img.rows;
      extra.apply(img);
    }
    if (img.size() == size_) return;
    if (img.cols < size_.width || img.rows < size_.height)
      throw Error(fmt::format("RandomCrop: the image is {}x{} (w x h), smaller than the crop of {}x{} (w x h; "
                              "size is [h, w] = [{}, {}] in paddle.vision's order); set pad_if_needed: True or "
                              "give a smaller size",
                              img.cols, img.rows, size_.width, size_.height, size_.height, size_.width));
    const int top = static_cast<int>(rng.randint(0, img.rows - size_.height));
    const int left = static_cast<int>(rng.randint(0, img.cols - size_.width));
    img = img(cv::Rect(left, top, size_.width, size_.height)).clone();
  }
  std::string name() const override { return "RandomCrop"; }

 private:
  cv::Size size_;
  Padding pad_;
  bool pad_if_needed_ = false;
};

// PaddleClas's CropWithPadding (AdaFace): with probability `prob`, keeps a RandomResizedCrop box of the image in
// place and sets everything outside it to `padding_num`; the image keeps its size. `size` and `interpolation` are
// validated but, as in PaddleClas, never used (nothing is resized).
class CropWithPadding : public Transform {
 public:
  CropWithPadding(const ConfigNode& p, const ImageState& st) {
    p.check_keys({"prob", "padding_num", "size", "scale", "ratio", "interpolation", "key"});
    require_uint8(p, st, "CropWithPadding");
    prob_ = number_or(p, "prob", 1.0);
    if (prob_ < 0 || prob_ > 1) p["prob"].fail("expected a probability in [0, 1]");
    padding_ = number_or(p, "padding_num", 0.0);
    if (padding_ < 0 || padding_ > 255) p["padding_num"].fail("expected a pixel value in [0, 255]");
    if (p["size"].defined()) (void)read_hw_size(p);
    (void)Resizer::vision(p, st, "CropWithPadding");  // checks `interpolation`
    scale_ = read_range(p, "scale", scale_, 0.0, false);
    ratio_ = read_range(p, "ratio", ratio_, 0.0, true);
    if (p["key"].defined() && p["key"].as<std::string>() != "None") p["key"].fail("expected null");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    const cv::Rect box = random_resized_box(img.cols, img.rows, scale_, ratio_, rng);
    cv::Mat out(img.size(), img.type(), cv::Scalar::all(padding_));
    img(box).copyTo(out(box));
    img = out;
  }
  std::string name() const override { return "CropWithPadding"; }

 private:
  double prob_ = 1.0, padding_ = 0.0;
  std::array<double, 2> scale_{0.08, 1.0}, ratio_{3.0 / 4.0, 4.0 / 3.0};
};

// PaddleClas's RandomInterpolationAugment (AdaFace): with probability `prob`, resizes the image (OpenCV, for PIL
// images too) to a square of side int(u * height), u uniform in [0.2, 1), and back to its size, each resize with an
// interpolation drawn uniformly from nearest, bilinear, area, bicubic, lanczos. The side is at least 1 pixel
// (PaddleClas's cv2.resize fails on a 0 side).
class RandomInterpolationAugment : public Transform {
 public:
  RandomInterpolationAugment(const ConfigNode& p, const ImageState& st) {
    p.check_keys({"prob"});
    require_uint8(p, st, "RandomInterpolationAugment");
    if (!p["prob"].defined()) p.fail("missing required key 'prob'");
    prob_ = number(p["prob"]);
    if (prob_ < 0 || prob_ > 1) p["prob"].fail("expected a probability in [0, 1]");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    static constexpr int kInterp[] = {cv::INTER_NEAREST, cv::INTER_LINEAR, cv::INTER_AREA, cv::INTER_CUBIC,
                                      cv::INTER_LANCZOS4};
    const int side = std::max(1, static_cast<int>(rng.uniform(0.2, 1.0) * img.rows));
    cv::Mat small;
    cv::resize(img, small, cv::Size(side, side), 0, 0, kInterp[rng.randint(0, 4)]);
    cv::resize(small, img, img.size(), 0, 0, kInterp[rng.randint(0, 4)]);
  }
  std::string name() const override { return "RandomInterpolationAugment"; }

 private:
  double prob_ = 0.0;
};

}  // namespace

void add_vision_ops(TransformRegistry& r) {
  r.add("Resize", [](const ConfigNode& p, ImageState* st) { return std::make_shared<Resize>(p, *st); });
  r.add("RandomResizedCrop",
        [](const ConfigNode& p, ImageState* st) { return std::make_shared<RandomResizedCrop>(p, *st); });
  r.add("CenterCrop", [](const ConfigNode& p, ImageState* st) { return std::make_shared<CenterCrop>(p, *st); });
  r.add("RandomHorizontalFlip",
        [](const ConfigNode& p, ImageState*) { return std::make_shared<RandomHorizontalFlip>(p); });
  r.add("RandomCrop", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandomCrop>(p); });
  r.add("CropWithPadding",
        [](const ConfigNode& p, ImageState* st) { return std::make_shared<CropWithPadding>(p, *st); });
  r.add("RandomInterpolationAugment",
        [](const ConfigNode& p, ImageState* st) { return std::make_shared<RandomInterpolationAugment>(p, *st); });
}

}  // namespace featlearn::transform_detail
