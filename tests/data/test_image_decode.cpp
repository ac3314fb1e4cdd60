// Decoding: the header probe (include/featlearn/data/image_probe.h), truncated PNG/JPEG files and the
// DecodeImage.max_pixels limit, all as BadImageErrors naming the file (docs/data.md#decoding).
#include <featlearn/data/image_probe.h>
#include <featlearn/data/transforms.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

using namespace featlearn;
namespace fs = std::filesystem;

namespace {

TransformPipeline pipeline(const std::string& yaml) {
  static std::vector<Config> keep;  // ConfigNodes refer to the config's file name
  keep.push_back(Config::from_string("ops:\n" + yaml, "ops.yaml"));
  return TransformPipeline::create(keep.back()["ops"]);
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("featlearn_decode_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::vector<uchar>& b, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(n));
}

// The BadImageError message of decoding `path`, or "<decoded>".
std::string decode_error(const TransformPipeline& tp, const std::string& path) {
  try {
    tp.decode(path);
  } catch (const BadImageError& e) {
    return e.what();
  }
  return "<decoded>";
}

cv::Mat noise(int h, int w, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::theRNG().state = static_cast<uint64_t>(seed);
  cv::randu(m, 0, 256);
  return m;
}

}  // namespace

// ---- header probe ------------------------------------------------------------------------------------

TEST(ImageProbe, ReadsSizesOfEncodedImages) {
  cv::Mat img(5, 7, CV_8UC3, cv::Scalar(10, 20, 30));
  for (const std::string ext : {".png", ".jpg", ".bmp", ".tiff", ".ppm", ".pgm", ".webp", ".pam"}) {
    std::vector<uchar> buf;
    cv::Mat src = img;
    if (ext == ".pgm") cv::cvtColor(img, src, cv::COLOR_BGR2GRAY);
    ASSERT_TRUE(cv::imencode(ext, src, buf)) << ext;
    const auto p = featlearn::probe_image(buf.data(), buf.size());
    ASSERT_TRUE(p) << ext;
    EXPECT_EQ(p->width, 7) << ext;
    EXPECT_EQ(p->height, 5) << ext;
  }
  // Lossless WebP (VP8L) too.
  std::vector<uchar> buf;
  ASSERT_TRUE(cv::imencode(".webp", img, buf, {cv::IMWRITE_WEBP_QUALITY, 101}));
  const auto p = featlearn::probe_image(buf.data(), buf.size());
  ASSERT_TRUE(p);
  EXPECT_EQ(p->width * 1000 + p->height, 7005);
}

TEST(ImageProbe, RejectsGarbageAndTruncatedHeadersWithoutReadingPastTheEnd) {
  EXPECT_FALSE(featlearn::probe_image("", 0));
  EXPECT_FALSE(featlearn::probe_image("hello world, not an image", 25));
  cv::Mat img(300, 200, CV_8UC3, cv::Scalar(1, 2, 3));
  for (const std::string ext : {".png", ".jpg", ".bmp", ".tiff", ".ppm", ".webp"}) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(ext, img, buf));
    // Every prefix (copied, so a read past it is caught by ASan/valgrind) is either unknown or the true size.
    for (size_t n = 0; n < std::min<size_t>(buf.size(), 600); ++n) {
      std::vector<uchar> prefix(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      const auto p = featlearn::probe_image(prefix.data(), prefix.size());
      if (p) {
        EXPECT_EQ(p->width, 200) << ext << " prefix " << n;
        EXPECT_EQ(p->height, 300) << ext << " prefix " << n;
      }
    }
    // Random corruption never crashes.
    std::mt19937 rng(3);
    for (int t = 0; t < 300; ++t) {
      auto copy = std::vector<uchar>(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(buf.size(), 200)));
      for (int k = 0; k < 4; ++k) copy[rng() % copy.size()] = static_cast<uchar>(rng());
      featlearn::probe_image(copy.data(), copy.size());
    }
  }
}

TEST(ImageProbe, HugeDeclaredSizeIsReportedNotDecoded) {
  // A PNG header claiming 100000 x 100000 (the rest is missing): the probe reports it, nothing is allocated.
  unsigned char png[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                           0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  const auto p = featlearn::probe_image(png, sizeof png);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->pixels(), int64_t(100000) * 100000);
}

// ---- truncated files ---------------------------------------------------------------------------------

TEST(DecodeImage, TruncatedJpegAndPngAreBadImagesNamingTheFile) {
  const auto dir = temp_dir("truncated");
  auto tp = pipeline("  - ResizeImage: {size: 8}\n");
  const cv::Mat img = noise(64, 80, 1);
  struct Variant {
    std::string name;
    std::string ext;
    std::vector<int> params;
  };
  const std::vector<Variant> variants = {
      {"baseline", ".jpg", {}},
      {"progressive", ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}},
      {"restarts", ".jpg", {cv::IMWRITE_JPEG_RST_INTERVAL, 2}},
      {"png", ".png", {}},
  };
  for (const auto& v : variants) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(v.ext, img, buf, v.params)) << v.name;
    const auto whole = dir / (v.name + "_whole" + v.ext);
    write_bytes(whole, buf, buf.size());
    EXPECT_EQ(decode_error(tp, whole.string()), "<decoded>") << v.name;
    // Cut inside the header, early and late in the compressed data, and just before the end marker / chunk.
    for (size_t cut : {size_t(30), buf.size() / 5, buf.size() / 2, buf.size() * 9 / 10, buf.size() - 12,
                       buf.size() - 2, buf.size() - 1}) {
      const auto path = dir / (v.name + "_cut" + std::to_string(cut) + v.ext);
      write_bytes(path, buf, cut);
      const std::string msg = decode_error(tp, path.string());
      EXPECT_NE(msg.find(path.string()), std::string::npos) << v.name << " cut at " << cut << ": " << msg;
      const bool said =
          msg.find("truncated") != std::string::npos || msg.find("header is cut short") != std::string::npos;
      EXPECT_TRUE(said) << v.name << " cut at " << cut << " of " << buf.size() << ": " << msg;
      // The whole pipeline (what the loader runs, and turns into on_bad_image) refuses it the same way.
      Rng rng(0);
      EXPECT_THROW(tp.run(path.string(), rng), BadImageError) << v.name << " cut at " << cut;
    }
  }
  fs::remove_all(dir);
}

TEST(DecodeImage, CompleteFilesWithTrailingBytesStillDecode) {
  const auto dir = temp_dir("trailing");
  auto tp = pipeline("  - DecodeImage: {to_rgb: False}\n");
  const cv::Mat img(12, 10, CV_8UC3, cv::Scalar(10, 120, 240));
  for (const std::string ext : {".jpg", ".png"}) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(ext, img, buf));
    for (uchar b : {uchar(0), uchar(0xFF), uchar('x')}) buf.push_back(b);  // bytes after EOI / IEND
    const auto path = dir / ("trailing" + ext);
    write_bytes(path, buf, buf.size());
    const cv::Mat got = tp.decode(path.string());
    ASSERT_EQ(got.size(), img.size()) << ext;
    EXPECT_LE(cv::norm(got, img, cv::NORM_INF), 2) << ext;  // JPEG is lossy
  }
  fs::remove_all(dir);
}

TEST(DecodeImage, FindTruncationNamesWhatIsMissing) {
  std::vector<uchar> jpg, png;
  ASSERT_TRUE(cv::imencode(".jpg", noise(16, 16, 2), jpg));
  ASSERT_TRUE(cv::imencode(".png", noise(16, 16, 3), png));
  EXPECT_FALSE(find_truncation(jpg.data(), jpg.size()));
  EXPECT_FALSE(find_truncation(png.data(), png.size()));
  EXPECT_EQ(find_truncation(jpg.data(), jpg.size() - 2).value_or(""),
            "no EOI marker after the scan data (the file is cut short)");
  const auto idat = find_truncation(png.data(), png.size() / 2).value_or("");
  EXPECT_NE(idat.find("chunk IDAT at byte"), std::string::npos) << idat;
  const auto iend = find_truncation(png.data(), png.size() - 12).value_or("");
  EXPECT_NE(iend.find("no IEND chunk"), std::string::npos) << iend;
  // Other formats are not judged; every prefix is safe input.
  std::vector<uchar> bmp;
  ASSERT_TRUE(cv::imencode(".bmp", noise(4, 4, 4), bmp));
  EXPECT_FALSE(find_truncation(bmp.data(), bmp.size() - 5));
  for (const auto* buf : {&jpg, &png})
    for (size_t n = 0; n <= buf->size(); ++n) {
      std::vector<uchar> prefix(buf->begin(), buf->begin() + static_cast<std::ptrdiff_t>(n));
      const bool truncated = static_cast<bool>(find_truncation(prefix.data(), prefix.size()));
      const size_t signature = buf == &png ? 8 : 3;
      if (n >= signature && n < buf->size()) EXPECT_TRUE(truncated) << "prefix " << n << " of " << buf->size();
    }
}

// ---- pixel limit -------------------------------------------------------------------------------------

TEST(DecodeImage, MaxPixelsRefusesLargeImagesFromTheHeader) {
  const auto dir = temp_dir("limit");
  auto small = pipeline("  - DecodeImage: {max_pixels: 100}\n");
  EXPECT_EQ(small.max_pixels(), 100);
  EXPECT_EQ(pipeline("  - ResizeImage: {size: 4}\n").max_pixels(), kDefaultMaxImagePixels);
  for (const std::string ext : {".png", ".jpg", ".bmp"}) {
    const auto ok = dir / ("ok10x10" + ext), big = dir / ("big11x10" + ext);
    ASSERT_TRUE(cv::imwrite(ok.string(), noise(10, 10, 5)));
    ASSERT_TRUE(cv::imwrite(big.string(), noise(10, 11, 6)));
    EXPECT_EQ(decode_error(small, ok.string()), "<decoded>") << ext;
    const std::string msg = decode_error(small, big.string());
    EXPECT_NE(msg.find(big.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("11x10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("DecodeImage.max_pixels"), std::string::npos) << msg;
  }
  // Headers claiming 100000 x 100000 (PNG) and 60000 x 50000 (JPEG), with nothing after them: refused from the
  // header by the default limit, before any decoding (and before the missing data is noticed).
  const unsigned char png[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                 0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  const unsigned char jpg[21] = {0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0xC3, 0x50, 0xEA, 0x60, 3, 1, 0x22, 0, 2, 0x11,
                                 1, 3, 0x11, 1};
  auto def = pipeline("  - ResizeImage: {size: 4}\n");
  for (const auto& [bytes, size, dims] : {std::tuple{png, sizeof png, "100000x100000"},
                                          std::tuple{jpg, sizeof jpg, "60000x50000"}}) {
    const auto path = dir / (std::string("bomb_") + dims);
    write_bytes(path, std::vector<uchar>(bytes, bytes + size), size);
    const std::string msg = decode_error(def, path.string());
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(dims), std::string::npos) << msg;
    EXPECT_NE(msg.find("over the limit of 178956970 pixels"), std::string::npos) << msg;
  }
  // Config errors name the key.
  try {
    pipeline("  - DecodeImage: {max_pixels: 0}\n");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("DecodeImage.max_pixels"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(DecodeImage, BytesOfAKnownFormatWithAnUnreadableHeaderAreRefused) {
  auto tp = pipeline("  - ResizeImage: {size: 4}\n");
  const unsigned char png_sig[12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
  try {
    tp.decode_bytes(png_sig, sizeof png_sig, "upload (12 bytes)");
    FAIL() << "no error";
  } catch (const BadImageError& e) {
    EXPECT_NE(std::string(e.what()).find("upload (12 bytes): its PNG header is cut short"), std::string::npos)
        << e.what();
  }
}
