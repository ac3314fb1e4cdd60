// Image dimensions from the encoded header, before anything is decoded, and a completeness check of PNG and
// JPEG byte streams.
//
// Decoded pixels are bounded without decoding (TransformPipeline's DecodeImage.max_pixels, the service's
// ServeOptions::max_pixels): OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS) is read once when
// libopencv_imgcodecs loads, so a process cannot set it for itself, and a small compressed file (a PNG of zeros)
// can otherwise decode to gigabytes. OpenCV decodes a cut-short JPEG without an error (the missing part comes
// out gray), hence the completeness check (docs/data.md#decoding).
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
  // Saturates instead of overflowing (a crafted header may claim 2^32 x 2^32).
  int64_t pixels() const {
    int64_t p = 0;
    return __builtin_mul_overflow(width, height, &p) ? INT64_MAX : p;
  }
};

// The format and size from the header of an encoded image. Returns nullopt when the bytes are not one of the
// formats above or the header is cut short / malformed (then the bytes are not decoded at all).
std::optional<ImageProbe> probe_image(const void* data, size_t size);

// "PNG, JPEG, BMP, WebP, TIFF, PNM (PBM/PGM/PPM) or PAM": the formats probe_image() knows.
const char* probed_formats();

// "png" or "jpeg" when the bytes start with that format's signature, else "".
const char* png_or_jpeg_signature(const void* data, size_t size);

// Why a PNG or JPEG byte stream is incomplete, e.g. "no EOI marker after the scan data" or "chunk IDAT at byte
// 41 needs 8204 bytes, the file ends after 3000"; nullopt when it is complete or is not PNG/JPEG. A PNG is
// complete when its chunks, each whole, reach IEND; a JPEG when its segments and entropy-coded scans reach the
// EOI marker (bytes after IEND / EOI are allowed). Reads only inside [data, data + size).
std::optional<std::string> find_truncation(const void* data, size_t size);

}  // namespace featlearn
