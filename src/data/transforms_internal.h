// Shared by the transform op files: transforms.cpp (registry, pipeline, decoding, these helpers),
// transforms_geometry.cpp (resize, crops, flip, pad, rotation), transforms_color.cpp (ColorJitter, AugMix) and
// transforms_tensor.cpp (normalization, layout, erasing). Not a public header.
#pragma once
#include <featlearn/config/registry.h>
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

void require_uint8(const ConfigNode& p, const ImageState& st, const char* op);
[[noreturn]] void too_small(const std::string& op, const cv::Mat& img, cv::Size want);

}  // namespace featlearn::transform_detail
