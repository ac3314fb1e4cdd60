// Image dimensions from the encoded header, before anything is decoded.
//
// The service bounds decoded pixels (ServeOptions::max_pixels) without decoding: OpenCV's own limit
// (OPENCV_IO_MAX_IMAGE_PIXELS) is read once when libopencv_imgcodecs loads, so a process cannot set it for
// itself, and a small compressed upload (a PNG of zeros) can otherwise decode to gigabytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace featlearn {

struct ImageProbe {
  std::string format;  // "png" | "jpeg" | "bmp" | "webp" | "tiff" | "pnm" | "pam"
  int64_t width = 0;
  int64_t height = 0;
  int64_t pixels() const { return width * height; }
};

// The format and size from the header of an encoded image. Returns nullopt when the bytes are not one of the
// formats above or the header is cut short / malformed (then the bytes are not decoded at all).
std::optional<ImageProbe> probe_image(const void* data, size_t size);

// "PNG, JPEG, BMP, WebP, TIFF, PNM (PBM/PGM/PPM) or PAM": the formats probe_image() knows.
const char* probed_formats();

}  // namespace featlearn
