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

// Image.transform(src.size, Image.AFFINE, data, resample=BILINEAR) with black fill: output pixel (x, y) is the
// bilinear sample of the input at (a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f), data = (a, b, c, d, e, f),
// truncated to uint8; points outside the input are black.
cv::Mat pil_affine_bilinear(const cv::Mat& src, const std::array<double, 6>& data);

// Image.rotate(degrees, resample=BILINEAR): counter-clockwise about the image center, same size, black fill.
// Multiples of 180 degrees (and of 90 on square images) are exact transposes, as in Pillow.
cv::Mat pil_rotate_bilinear(const cv::Mat& src, double degrees);

// ImageOps.autocontrast(img) (cutoff 0): per channel, maps [min, max] linearly onto [0, 255].
void pil_autocontrast(cv::Mat& img);
// ImageOps.equalize(img): per-channel histogram equalization.
void pil_equalize(cv::Mat& img);
// ImageOps.posterize(img, bits): keeps the `bits` high bits of each value (0 <= bits <= 8).
void pil_posterize(cv::Mat& img, int bits);
// ImageOps.solarize(img, threshold): inverts values >= threshold.
void pil_solarize(cv::Mat& img, int threshold);

}  // namespace featlearn
