// Shared by the transform op files: transforms.cpp (registry, pipeline, decoding, these helpers),
// transforms_geometry.cpp (resize, crops, flip, pad, rotation), transforms_vision.cpp (paddle.vision's Resize,
// RandomResizedCrop, CenterCrop, RandomHorizontalFlip, RandomCrop), transforms_color.cpp (ColorJitter, AugMix),
// transforms_autoaugment.cpp (TimmAutoAugment) and transforms_tensor.cpp (normalization, layout, erasing). Not a
// public header.
#pragma once
#include <featlearn/config/registry.h>
#include <featlearn/data/pil_ops.h>
#include <featlearn/data/transforms.h>

#include <opencv2/core.hpp>

#include <memory>
#include <string>
#include <vector>

namespace featlearn::transform_detail {

using TransformPtr = std::shared_ptr<const Transform>;
using TransformRegistry = Registry<TransformPtr, ImageState*>;

// Each op family adds its ops (factories get the ImageState before the op and update it).
void add_geometry_ops(TransformRegistry& r);
void add_vision_ops(TransformRegistry& r);
void add_autoaugment_ops(TransformRegistry& r);
void add_color_ops(TransformRegistry& r);
void add_tensor_ops(TransformRegistry& r);

// A number, or a string "a" / "a/b" (PaddleClas eval()s strings such as "1.0/255.0").
double number(const ConfigNode& n);
double number_or(const ConfigNode& p, const std::string& key, double def);
std::vector<double> numbers(const ConfigNode& n);
// size: int or [w, h] -> (w, h)
cv::Size read_size(const ConfigNode& n);
// A number (all channels) or [r, g, b].
cv::Scalar read_fill(const ConfigNode& n, double def);
// OpenCV interpolation by name (nearest, bilinear|linear, area|box, bicubic|cubic, lanczos); -1 = "random"
// (bilinear or bicubic per sample). Unknown names are errors naming the key.
int read_interp(const ConfigNode& p, const std::string& key, int def);
// `backend` of an op: "cv2" (default `def`) or "pil", case-insensitive; anything else is an error.
std::string read_backend(const ConfigNode& p, const std::string& def);
// Lower-cased copy.
std::string lower(std::string s);

// Resizing as PaddleClas's UnifiedResize (ResizeImage, RandCropImage: keys `backend`, `interpolation`) or as
// paddle.vision's F.resize (Resize, RandomResizedCrop: Pillow for PIL images, OpenCV for arrays; key
// `interpolation`, default bilinear, names of that library only). Both default to bilinear.
class Resizer {
 public:
  // UnifiedResize: backend cv2 (default) or pil; cv2 names as read_interp, Pillow names, or "random".
  Resizer(const ConfigNode& p, const ImageState& st, const char* op);
  // paddle.vision: Pillow when `st.pil`, else OpenCV (nearest, bilinear, area, bicubic, lanczos).
  static Resizer vision(const ConfigNode& p, const ImageState& st, const char* op);
  void resize(cv::Mat& img, cv::Size size, Rng& rng) const;

 private:
  Resizer() = default;
  void init_pil(const ConfigNode& p, const ImageState& st, const char* op, bool allow_random);
  bool pil_ = false, random_ = false;
  int cv_interp_ = 1;  // cv::INTER_LINEAR
  PilFilter filter_ = PilFilter::kBilinear;
};

// Padding as paddle.vision's F.pad / Pad (and PaddleClas's Pad): `padding` int | [lr, tb] | [l, t, r, b],
// `fill` number or [r, g, b] (default 0), `padding_mode` constant | edge | reflect | symmetric.
struct Padding {
  int left = 0, top = 0, right = 0, bottom = 0;
  int border = 0;  // cv::BORDER_CONSTANT
  cv::Scalar fill;
  // Reads p[padding_key] (required), p.fill and p.padding_mode.
  static Padding read(const ConfigNode& p, const std::string& padding_key);
  // Only p.fill and p.padding_mode, with zero padding.
  static Padding read_style(const ConfigNode& p);
  // This padding's fill and mode, with zero padding.
  Padding style() const;
  void apply(cv::Mat& img) const;
};

// `keys` of a paddle.vision transform: absent, null or ["image"] (the pipeline carries images only).
void check_image_keys(const ConfigNode& p);

void require_uint8(const ConfigNode& p, const ImageState& st, const char* op);
[[noreturn]] void too_small(const std::string& op, const cv::Mat& img, cv::Size want);

}  // namespace featlearn::transform_detail
