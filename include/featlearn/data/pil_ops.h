// Pillow 9.4 image operations on 8-bit 3-channel images, reproducing Pillow's arithmetic so that the result is
// the same to the bit (docs/data.md#pillow-parity). Used by the ops with `backend: pil` and by AugMix, whose
// PaddleClas ops are PIL ops. Channels are independent, so RGB and BGR images work alike.
//
// Requires: `src` / `img` is CV_8UC3 and not empty (else featlearn::Error naming the function).
#pragma once
#include <opencv2/core.hpp>

#include <array>
#include <optional>
#include <string>

namespace featlearn {

// PIL.Image.Resampling filters.
enum class PilFilter { kNearest, kBox, kBilinear, kHamming, kBicubic, kLanczos };

// "nearest" | "box" | "bilinear" | "hamming" | "bicubic" | "lanczos" (lower case); nullopt for anything else.
std::optional<PilFilter> pil_filter_from_name(const std::string& name);
const char* pil_filter_name(PilFilter f);

// Image.resize(size, filter). kNearest picks pixel floor((x + 0.5) · in/out) per axis; the other filters
// convolve, separably (horizontal pass, then vertical, each rounded and clipped to uint8), with the filter
// support widened by the downscale factor (antialiasing) and the weights of each output pixel normalized and
// rounded to 22-bit fixed point. A same-size resize is a copy.
cv::Mat pil_resize(const cv::Mat& src, cv::Size size, PilFilter filter);

// Image.transform(src.size, Image.AFFINE, data, resample=filter, fillcolor=fill): output pixel (x, y) samples
// the input at (a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f), data = (a, b, c, d, e, f); points outside the
// input get `fill` (per channel, in the image's channel order). kBilinear interpolates the 4 neighbours, kBicubic
// the 16 neighbours with Pillow's cubic (a = -1), both in double, truncated to uint8 (bicubic clipped first).
// Requires: filter is kBilinear or kBicubic (the filters Pillow's transform and rotate accept besides nearest).
cv::Mat pil_affine(const cv::Mat& src, const std::array<double, 6>& data, PilFilter filter,
                   const cv::Scalar& fill = cv::Scalar::all(0));
// pil_affine with kBilinear and black fill (AugMix's ops).
cv::Mat pil_affine_bilinear(const cv::Mat& src, const std::array<double, 6>& data);

// Image.rotate(degrees, resample=filter, fillcolor=fill): counter-clockwise about the image center, same size.
// Multiples of 180 degrees (and of 90 on square images) are exact transposes, as in Pillow.
cv::Mat pil_rotate(const cv::Mat& src, double degrees, PilFilter filter, const cv::Scalar& fill = cv::Scalar::all(0));
// pil_rotate with kBilinear and black fill (AugMix's ops).
cv::Mat pil_rotate_bilinear(const cv::Mat& src, double degrees);

// ImageOps.autocontrast(img) (cutoff 0): per channel, maps [min, max] linearly onto [0, 255].
void pil_autocontrast(cv::Mat& img);
// ImageOps.equalize(img): per-channel histogram equalization.
void pil_equalize(cv::Mat& img);
// ImageOps.posterize(img, bits): keeps the `bits` high bits of each value (0 <= bits <= 8).
void pil_posterize(cv::Mat& img, int bits);
// ImageOps.solarize(img, threshold): inverts values >= threshold.
void pil_solarize(cv::Mat& img, int threshold);
// ImageOps.invert(img): 255 - v.
void pil_invert(cv::Mat& img);
// img.point(lut) with lut[i] = i < threshold ? min(255, i + add) : i (timm's solarize_add).
void pil_solarize_add(cv::Mat& img, int add, int threshold);

// img.convert("L"): (19595 R + 38470 G + 7471 B + 0x8000) >> 16, taking channel 0 as R. Returns CV_8UC1.
cv::Mat pil_to_gray(const cv::Mat& img);
// Image.blend(a, b, alpha) = a + alpha·(b − a) evaluated in single precision, truncated (clipped to 0..255 when
// alpha is outside [0, 1]). Requires: a and b of the same size and type CV_8UC3.
cv::Mat pil_blend(const cv::Mat& a, const cv::Mat& b, double alpha);
// img.filter(ImageFilter.SMOOTH): 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 in single precision, rounded; the border
// pixels are copied; images smaller than 3x3 are copied unchanged.
cv::Mat pil_smooth(const cv::Mat& img);

// ImageEnhance.<Kind>(img).enhance(factor) = pil_blend(degenerate, img, factor), the degenerate image being:
// Color: pil_to_gray(img) as 3 channels; Contrast: the gray image's mean, int(mean + 0.5), everywhere;
// Brightness: black; Sharpness: pil_smooth(img).
enum class PilEnhance { kColor, kContrast, kBrightness, kSharpness };
void pil_enhance(cv::Mat& img, PilEnhance kind, double factor);

}  // namespace featlearn
