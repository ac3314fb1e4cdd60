// Header parsers for the image formats featlearn decodes (sizes only; each reads a few dozen bytes and checks
// every offset against the buffer, so any byte string is safe input), and the PNG / JPEG completeness walk.
// Written by hand because OpenCV has no public header-only API (cv::ImageDecoder is internal), its pixel limit
// cannot be set at run time, and its JPEG decoder accepts cut-short files (docs/data.md#decoding).
#include <featlearn/data/image_probe.h>

#include <fmt/format.h>

#include <cctype>
#include <cstring>
#include <string>

namespace featlearn {

namespace {

struct Bytes {
  const unsigned char* p;
  size_t n;
  bool has(size_t off, size_t len) const { return off <= n && len <= n - off; }
  uint32_t be16(size_t o) const { return (uint32_t(p[o]) << 8) | p[o + 1]; }
  uint32_t le16(size_t o) const { return (uint32_t(p[o + 1]) << 8) | p[o]; }
  uint32_t be32(size_t o) const { return (be16(o) << 16) | be16(o + 2); }
  uint32_t le32(size_t o) const { return (le16(o + 2) << 16) | le16(o); }
  uint32_t le24(size_t o) const { return (uint32_t(p[o + 2]) << 16) | (uint32_t(p[o + 1]) << 8) | p[o]; }
  bool starts(size_t o, const char* s) const {
    const size_t len = std::strlen(s);
    return has(o, len) && std::memcmp(p + o, s, len) == 0;
  }
};

std::optional<ImageProbe> make(const char* format, int64_t w, int64_t h) {
  if (w <= 0 || h <= 0) return std::nullopt;
  return ImageProbe{format, w, h};
}

std::optional<ImageProbe> probe_png(const Bytes& b) {
  // Signature, then the IHDR chunk: length(4) "IHDR" width(4) height(4), big-endian.
  if (!b.has(0, 24) || !b.starts(12, "IHDR")) return std::nullopt;
  return make("png", b.be32(16), b.be32(20));
}

std::optional<ImageProbe> probe_jpeg(const Bytes& b) {
  // Walk the marker segments up to the first SOFn (frame header: precision(1) height(2) width(2)).
  size_t pos = 2;
  while (b.has(pos, 1)) {
    if (b.p[pos] != 0xFF) return std::nullopt;
    while (b.has(pos, 1) && b.p[pos] == 0xFF) ++pos;  // fill bytes
    if (!b.has(pos, 1)) return std::nullopt;
    const unsigned m = b.p[pos];
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // standalone markers
      ++pos;
      continue;
    }
    if (m == 0xD9 || m == 0xDA) return std::nullopt;  // end of image / scan before any frame header
    if (!b.has(pos + 1, 2)) return std::nullopt;
    const size_t len = b.be16(pos + 1);
    if (len < 2) return std::nullopt;
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (!b.has(pos + 1, 7)) return std::nullopt;
      return make("jpeg", b.be16(pos + 6), b.be16(pos + 4));
    }
    pos += 1 + len;
  }
  return std::nullopt;
}

std::optional<ImageProbe> probe_bmp(const Bytes& b) {
  if (!b.has(0, 18)) return std::nullopt;
  const uint32_t dib = b.le32(14);
  if (dib == 12) {  // BITMAPCOREHEADER: 16-bit sizes
    if (!b.has(18, 4)) return std::nullopt;
    return make("bmp", b.le16(18), b.le16(20));
  }
  if (dib < 16 || !b.has(18, 8)) return std::nullopt;
  const int64_t w = static_cast<int32_t>(b.le32(18));
  int64_t h = static_cast<int32_t>(b.le32(22));
  if (h < 0) h = -h;  // top-down bitmap
  return make("bmp", w, h);
}

std::optional<ImageProbe> probe_webp(const Bytes& b) {
  if (!b.starts(8, "WEBP") || !b.has(12, 18)) return std::nullopt;
  if (b.starts(12, "VP8 ")) {  // lossy: frame tag(3) start code 9d 01 2a, then 14-bit width/height
    if (b.p[23] != 0x9d || b.p[24] != 0x01 || b.p[25] != 0x2a) return std::nullopt;
    return make("webp", b.le16(26) & 0x3fff, b.le16(28) & 0x3fff);
  }
  if (b.starts(12, "VP8L")) {  // lossless: signature 0x2f, then 14 bits width-1, 14 bits height-1
    if (b.p[20] != 0x2f) return std::nullopt;
    const uint32_t bits = b.le32(21);
    return make("webp", (bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1);
  }
  if (b.starts(12, "VP8X")) {  // extended: 24-bit canvas width-1 / height-1
    return make("webp", int64_t(b.le24(24)) + 1, int64_t(b.le24(27)) + 1);
  }
  return std::nullopt;
}

std::optional<ImageProbe> probe_tiff(const Bytes& b) {
  const bool le = b.p[0] == 'I';
  auto u16 = [&](size_t o) { return le ? b.le16(o) : b.be16(o); };
  auto u32 = [&](size_t o) { return le ? b.le32(o) : b.be32(o); };
  if (!b.has(0, 8) || u16(2) != 42) return std::nullopt;  // 43 is BigTIFF: not probed
  const size_t ifd = u32(4);
  if (!b.has(ifd, 2)) return std::nullopt;
  const size_t count = u16(ifd);
  if (!b.has(ifd + 2, count * 12)) return std::nullopt;
  int64_t w = 0, h = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + i * 12;
    const uint32_t tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257) continue;
    int64_t v;
    if (type == 3) v = u16(e + 8);        // SHORT, left-justified in the value field
    else if (type == 4) v = u32(e + 8);   // LONG
    else return std::nullopt;
    int64_t& dim = tag == 256 ? w : h;
    // A repeated width or height is malformed, and the decoder may read another copy than this probe.
    if (dim != 0) return std::nullopt;
    dim = v;
  }
  return make("tiff", w, h);
}

// Whitespace- and comment-separated decimal tokens of a PNM header.
bool pnm_number(const Bytes& b, size_t& pos, int64_t& out) {
  while (b.has(pos, 1)) {
    const unsigned char c = b.p[pos];
    if (c == '#') {
      while (b.has(pos, 1) && b.p[pos] != '\n' && b.p[pos] != '\r') ++pos;
    } else if (std::isspace(c)) {
      ++pos;
    } else {
      break;
    }
  }
  int digits = 0;
  out = 0;
  while (b.has(pos, 1) && std::isdigit(b.p[pos])) {
    if (++digits > 10) return false;
    out = out * 10 + (b.p[pos++] - '0');
  }
  // A number ends at whitespace (a header cut inside a number is not read as a smaller one).
  return digits > 0 && b.has(pos, 1) && std::isspace(b.p[pos]);
}

std::optional<ImageProbe> probe_pnm(const Bytes& b) {
  size_t pos = 2;
  int64_t w = 0, h = 0;
  if (!pnm_number(b, pos, w) || !pnm_number(b, pos, h)) return std::nullopt;
  return make("pnm", w, h);
}

std::optional<ImageProbe> probe_pam(const Bytes& b) {
  // "P7\n" then "KEY value" lines up to ENDHDR.
  const size_t limit = std::min<size_t>(b.n, 4096);
  const std::string text(reinterpret_cast<const char*>(b.p), limit);
  int64_t w = 0, h = 0;
  size_t pos = 3;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) return std::nullopt;
    const std::string line = text.substr(pos, eol - pos + 1);  // with its '\n' (a number ends at whitespace)
    pos = eol + 1;
    if (line.rfind("ENDHDR", 0) == 0) return make("pam", w, h);
    for (const char* key : {"WIDTH", "HEIGHT"}) {
      const size_t k = std::strlen(key);
      if (line.size() > k && line.compare(0, k, key) == 0 && std::isspace(static_cast<unsigned char>(line[k]))) {
        const Bytes lb{reinterpret_cast<const unsigned char*>(line.data()), line.size()};
        size_t p = k;
        int64_t v = 0;
        if (!pnm_number(lb, p, v)) return std::nullopt;
        (key[0] == 'W' ? w : h) = v;
      }
    }
  }
  return std::nullopt;
}

// Chunks (length(4) type(4) data crc(4)) from the signature to IEND, each wholly inside the buffer.
std::optional<std::string> png_truncation(const Bytes& b) {
  size_t pos = 8;
  while (true) {
    if (!b.has(pos, 8))
      return fmt::format("no IEND chunk (the file ends at byte {}, inside the chunk list)", b.n);
    const size_t len = b.be32(pos);
    const std::string type(reinterpret_cast<const char*>(b.p + pos + 4), 4);
    for (char c : type)
      if (!std::isalpha(static_cast<unsigned char>(c)))
        return fmt::format("malformed chunk type at byte {} (cut short or corrupt)", pos + 4);
    if (len > 0x7fffffffu || !b.has(pos + 8, len + 4))
      return fmt::format("chunk {} at byte {} needs {} bytes, the file ends after {}", type, pos, len + 12,
                         b.n - pos);
    if (type == "IEND") return std::nullopt;
    pos += 12 + len;
  }
}

// Marker segments and entropy-coded scans from SOI to EOI. Inside a scan, 0xFF is followed by 0x00 (a stuffed
// byte), a restart marker or further 0xFF fill; any other marker ends the scan.
std::optional<std::string> jpeg_truncation(const Bytes& b) {
  const char* const cut = "no EOI marker after the scan data (the file is cut short)";
  size_t pos = 2;
  while (true) {
    // Next marker; bytes that are not 0xFF are skipped, as libjpeg does (with a warning).
    const void* ff = b.has(pos, 1) ? std::memchr(b.p + pos, 0xFF, b.n - pos) : nullptr;
    if (!ff) return std::string(cut);
    pos = static_cast<size_t>(static_cast<const unsigned char*>(ff) - b.p);
    while (b.has(pos, 1) && b.p[pos] == 0xFF) ++pos;
    if (!b.has(pos, 1)) return std::string(cut);
    const unsigned m = b.p[pos];
    if (m == 0xD9) return std::nullopt;                             // EOI
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // no length field
      ++pos;
      continue;
    }
    if (!b.has(pos + 1, 2)) return std::string(cut);
    const size_t len = b.be16(pos + 1);
    if (len < 2) return fmt::format("malformed segment length at byte {}", pos + 1);
    if (!b.has(pos + 1, len))
      return fmt::format("segment 0xFF{:02X} at byte {} needs {} bytes, the file ends after {}", m, pos - 1,
                         len + 2, b.n - pos + 1);
    pos += 1 + len;
    if (m != 0xDA) continue;
    // Entropy-coded data of a scan (SOS): up to the first marker that is not a stuffed byte or a restart.
    while (true) {
      const void* q = b.has(pos, 1) ? std::memchr(b.p + pos, 0xFF, b.n - pos) : nullptr;
      if (!q) return std::string(cut);
      pos = static_cast<size_t>(static_cast<const unsigned char*>(q) - b.p);
      size_t next = pos + 1;
      while (b.has(next, 1) && b.p[next] == 0xFF) ++next;
      if (!b.has(next, 1)) return std::string(cut);
      const unsigned c = b.p[next];
      if (c == 0x00 || (c >= 0xD0 && c <= 0xD7)) {
        pos = next + 1;
        continue;
      }
      pos = next - 1;  // at the 0xFF before the marker
      break;
    }
  }
}

}  // namespace

const char* probed_formats() { return "PNG, JPEG, BMP, WebP, TIFF, PNM (PBM/PGM/PPM) or PAM"; }

std::optional<ImageProbe> probe_image(const void* data, size_t size) {
  const Bytes b{static_cast<const unsigned char*>(data), size};
  if (data == nullptr || size < 4) return std::nullopt;
  if (b.starts(0, "\x89PNG\r\n\x1a\n")) return probe_png(b);
  if (b.p[0] == 0xFF && b.p[1] == 0xD8) return probe_jpeg(b);
  if (b.starts(0, "BM")) return probe_bmp(b);
  if (b.starts(0, "RIFF")) return probe_webp(b);
  if (b.starts(0, "II") || b.starts(0, "MM")) return probe_tiff(b);
  if (b.p[0] == 'P' && b.p[1] >= '1' && b.p[1] <= '6' && std::isspace(b.p[2])) return probe_pnm(b);
  if (b.starts(0, "P7\n")) return probe_pam(b);
  return std::nullopt;
}

const char* png_or_jpeg_signature(const void* data, size_t size) {
  const Bytes b{static_cast<const unsigned char*>(data), data ? size : 0};
  if (b.starts(0, "\x89PNG\r\n\x1a\n")) return "png";
  if (b.has(0, 3) && b.p[0] == 0xFF && b.p[1] == 0xD8 && b.p[2] == 0xFF) return "jpeg";
  return "";
}

std::optional<std::string> find_truncation(const void* data, size_t size) {
  const Bytes b{static_cast<const unsigned char*>(data), data ? size : 0};
  const std::string format = png_or_jpeg_signature(data, size);
  if (format == "png") return png_truncation(b);
  if (format == "jpeg") return jpeg_truncation(b);
  return std::nullopt;
}

}  // namespace featlearn
