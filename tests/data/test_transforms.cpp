// Transforms against hand-computed values or OpenCV references (Pillow references: test_pil_ops.cpp).
#include <featlearn/data/transforms.h>
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <functional>

#include "transform_test_util.h"

using namespace featlearn;
using featlearn::test::error_of;
using featlearn::test::pipeline;
using featlearn::test::same;
namespace fs = std::filesystem;

namespace {

// 3-channel uint8 image whose pixel (y, x) is (10y + x, 100 + c, 200 - x).
cv::Mat ramp(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(10 * y + x, 100 + y, 200 - x);
  return m;
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("featlearn_tf_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(Transforms, FlipIsExactMirrorOrIdentity) {
  auto tp = pipeline("  - RandFlipImage: {flip_code: 1}\n");
  const cv::Mat src = ramp(3, 4);
  int flipped = 0, kept = 0;
  for (uint64_t s = 0; s < 40; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    tp.apply(img, rng);
    if (same(img, src)) {
      ++kept;
      continue;
    }
    ++flipped;
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 4; ++x) ASSERT_EQ(img.at<cv::Vec3b>(y, x), src.at<cv::Vec3b>(y, 3 - x));
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(kept, 5);

  auto both = pipeline("  - RandFlipImage: {flip_code: -1}\n");
  for (uint64_t s = 0; s < 10; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    both.apply(img, rng);
    if (!same(img, src)) EXPECT_EQ(img.at<cv::Vec3b>(0, 0), src.at<cv::Vec3b>(2, 3));
  }
  EXPECT_NE(error_of([] { pipeline("  - RandFlipImage: {flip_code: 2}\n"); }).find("flip_code"), std::string::npos);
}

TEST(Transforms, CenterCropIsExact) {
  auto tp = pipeline("  - CropImage: {size: [2, 3]}\n");  // [w, h]
  const cv::Mat src = ramp(5, 6);
  cv::Mat img = src.clone();
  Rng rng(0);
  tp.apply(img, rng);
  ASSERT_EQ(img.cols, 2);
  ASSERT_EQ(img.rows, 3);
  // x0 = (6 - 2) // 2 = 2, y0 = (5 - 3) // 2 = 1
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 2; ++x) EXPECT_EQ(img.at<cv::Vec3b>(y, x), src.at<cv::Vec3b>(y + 1, x + 2));
  cv::Mat small = ramp(1, 1);
  EXPECT_NE(error_of([&] { tp.apply(small, rng); }).find("smaller than the crop"), std::string::npos);
}

TEST(Transforms, RandCropV2StaysInsideAndKeepsPixels) {
  auto tp = pipeline("  - RandCropImageV2: {size: 3}\n");
  const cv::Mat src = ramp(6, 7);
  for (uint64_t s = 0; s < 20; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    tp.apply(img, rng);
    ASSERT_EQ(img.size(), cv::Size(3, 3));
    const auto p = img.at<cv::Vec3b>(0, 0);
    const int y0 = p[1] - 100, x0 = 200 - p[2];
    ASSERT_TRUE(y0 >= 0 && y0 <= 3 && x0 >= 0 && x0 <= 4);
    EXPECT_TRUE(same(img, src(cv::Rect(x0, y0, 3, 3))));
  }
}

TEST(Transforms, PadIsExact) {
  auto tp = pipeline("  - Pad: {padding: 2, fill: 7}\n");
  const cv::Mat src = ramp(2, 3);
  cv::Mat img = src.clone();
  Rng rng(0);
  tp.apply(img, rng);
  ASSERT_EQ(img.size(), cv::Size(7, 6));
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 7; ++x) {
      const bool inside = y >= 2 && y < 4 && x >= 2 && x < 5;
      EXPECT_EQ(img.at<cv::Vec3b>(y, x), inside ? src.at<cv::Vec3b>(y - 2, x - 2) : cv::Vec3b(7, 7, 7));
    }
}

TEST(Transforms, NormalizeIsExact) {
  auto tp = pipeline(
      "  - NormalizeImage: {scale: 1.0/255.0, mean: [0.5, 0.25, 0.0], std: [0.5, 0.25, 2.0], order: ''}\n");
  const cv::Mat src = ramp(2, 2);
  cv::Mat img = src.clone();
  Rng rng(0);
  tp.apply(img, rng);
  ASSERT_EQ(img.type(), CV_32FC3);
  const double mean[3] = {0.5, 0.25, 0.0}, stdv[3] = {0.5, 0.25, 2.0};
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x)
      for (int c = 0; c < 3; ++c) {
        const double v = src.at<cv::Vec3b>(y, x)[c];
        EXPECT_NEAR(img.at<cv::Vec3f>(y, x)[c], (v / 255.0 - mean[c]) / stdv[c], 1e-5);
      }
  EXPECT_TRUE(tp.output_state().is_float);
  // order 'chw' (PaddleClas's default) on an HWC image is a config error naming the op.
  const auto msg = error_of([] { pipeline("  - NormalizeImage: {scale: 0.5}\n"); });
  EXPECT_NE(msg.find("ops[0].NormalizeImage"), std::string::npos) << msg;
  EXPECT_NE(msg.find("order 'chw'"), std::string::npos) << msg;
  // ...and fine after ToCHWImage.
  auto chw = pipeline("  - ToCHWImage:\n  - NormalizeImage: {order: chw}\n");
  EXPECT_TRUE(chw.output_state().chw);
}

TEST(Transforms, ResizeMatchesOpenCV) {
  const cv::Mat src = ramp(9, 13);
  {
    auto tp = pipeline("  - ResizeImage: {size: [5, 4]}\n");
    cv::Mat img = src.clone(), ref;
    Rng rng(0);
    tp.apply(img, rng);
    cv::resize(src, ref, cv::Size(5, 4), 0, 0, cv::INTER_LINEAR);
    EXPECT_TRUE(same(img, ref));
  }
  {
    auto tp = pipeline("  - ResizeImage: {resize_short: 6, interpolation: bicubic}\n");
    cv::Mat img = src.clone(), ref;
    Rng rng(0);
    tp.apply(img, rng);
    // percent = 6 / 9; w = round(13 * 0.667) = 9, h = 6
    cv::resize(src, ref, cv::Size(9, 6), 0, 0, cv::INTER_CUBIC);
    EXPECT_TRUE(same(img, ref));
  }
  EXPECT_NE(error_of([] { pipeline("  - ResizeImage: {interpolation: bilinear}\n"); }).find("'size' or 'resize_short'"),
            std::string::npos);
  EXPECT_NE(error_of([] { pipeline("  - ResizeImage: {size: 4, interpolation: cubik}\n"); }).find("did you mean"),
            std::string::npos);
}

TEST(Transforms, RandCropImageSizeAndBounds) {
  auto tp = pipeline("  - RandCropImage: {size: 8, scale: [0.25, 0.5]}\n");
  for (uint64_t s = 0; s < 20; ++s) {
    cv::Mat img = ramp(20, 30);
    Rng rng(s);
    tp.apply(img, rng);
    EXPECT_EQ(img.size(), cv::Size(8, 8));
  }
}

// The crop RandCropImage takes, recovered from its output: the image stores x in channel 0 and y in channel 1,
// and upscaling with nearest shows every column and row of the crop.
static cv::Rect crop_of(const TransformPipeline& tp, int W, int H, uint64_t seed) {
  cv::Mat img(H, W, CV_8UC3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) img.at<cv::Vec3b>(y, x) = cv::Vec3b(x, y, 7);
  Rng rng(seed);
  tp.apply(img, rng);
  std::vector<cv::Mat> ch;
  cv::split(img, ch);
  double x0, x1, y0, y1;
  cv::minMaxLoc(ch[0], &x0, &x1);
  cv::minMaxLoc(ch[1], &y0, &y1);
  const cv::Rect r(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0) + 1,
                   static_cast<int>(y1 - y0) + 1);
  // Every output pixel comes from inside that rectangle (it is a crop, not a warp).
  EXPECT_EQ(cv::countNonZero(ch[2] != 7), 0);
  return r;
}

TEST(Transforms, RandCropImageAreaAndAspectWithinScaleAndRatio) {
  struct Case {
    std::string yaml;
    int W, H;
    double s0, s1, r0, r1;
  };
  // size 255 >= every crop side: the nearest upscale keeps all crop pixels.
  const std::vector<Case> cases = {
      {"{size: 255, interpolation: nearest}", 60, 40, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0},
      {"{size: 255, interpolation: nearest, scale: [0.3, 0.6], ratio: [0.5, 2.0]}", 50, 50, 0.3, 0.6, 0.5, 2.0},
      {"{size: 255, interpolation: nearest, scale: [0.5, 1.0], ratio: [0.25, 4.0], use_log_aspect: True}", 120, 30,
       0.5, 1.0, 0.25, 4.0},
      {"{size: [255, 200], interpolation: nearest, scale: [0.1, 0.2], ratio: [1.0, 1.0]}", 90, 70, 0.1, 0.2, 1.0, 1.0},
  };
  for (const auto& c : cases) {
    auto tp = pipeline("  - RandCropImage: " + c.yaml + "\n");
    const double total = static_cast<double>(c.W) * c.H;
    // For an aspect a, scale is capped at bound(a) = min((W/H)/a, (H/W)*a) so that the crop fits; the smallest
    // cap over the ratio range bounds the lower end.
    const double bound_min = std::min((double(c.W) / c.H) / c.r1, (double(c.H) / c.W) * c.r0);
    double lo_frac = 2, hi_frac = 0, lo_aspect = 1e9, hi_aspect = 0;
    for (uint64_t s = 0; s < 400; ++s) {
      const cv::Rect r = crop_of(tp, c.W, c.H, s);
      ASSERT_GE(r.x, 0);
      ASSERT_GE(r.y, 0);
      ASSERT_LE(r.x + r.width, c.W) << c.yaml << " seed " << s;
      ASSERT_LE(r.y + r.height, c.H) << c.yaml << " seed " << s;
      // w = int(sqrt(A a)), h = int(sqrt(A / a)) with A = W H U(scale): truncation loses less than 1 per side.
      const double w = r.width, h = r.height;
      EXPECT_LE(w * h, c.s1 * total * (1 + 1e-9)) << c.yaml << " seed " << s;
      EXPECT_GE((w + 1) * (h + 1), std::min(c.s0, bound_min) * total) << c.yaml << " seed " << s;
      EXPECT_LE(w / (h + 1), c.r1) << c.yaml << " seed " << s;
      EXPECT_GE((w + 1) / h, c.r0) << c.yaml << " seed " << s;
      lo_frac = std::min(lo_frac, w * h / total);
      hi_frac = std::max(hi_frac, w * h / total);
      lo_aspect = std::min(lo_aspect, w / h);
      hi_aspect = std::max(hi_aspect, w / h);
    }
    // The draws spread over the allowed ranges (a fixed crop or a forgotten range would not).
    EXPECT_LT(lo_frac, c.s0 + 0.25 * (c.s1 - c.s0)) << c.yaml;
    EXPECT_GT(hi_frac, std::min(c.s1, 1.0) * 0.7) << c.yaml;
    if (c.r1 > c.r0) {
      EXPECT_LT(lo_aspect, c.r0 * 1.4) << c.yaml;
      EXPECT_GT(hi_aspect, c.r1 / 1.4) << c.yaml;
    }
  }
}

TEST(Transforms, RandomErasingAreaAndAspectWithinBounds) {
  auto tp = pipeline("  - RandomErasing: {EPSILON: 1.0, sl: 0.1, sh: 0.3, r1: 0.5, mean: [0, 0, 0]}\n");
  const int H = 40, W = 50;
  for (uint64_t s = 0; s < 50; ++s) {
    cv::Mat img(H, W, CV_32FC3, cv::Scalar(1, 1, 1));
    Rng rng(s);
    tp.apply(img, rng);
    std::vector<cv::Mat> ch;
    cv::split(img, ch);
    cv::Mat zero = ch[0] == 0;
    const int n = cv::countNonZero(zero);
    ASSERT_GT(n, 0) << "seed " << s;
    const cv::Rect r = cv::boundingRect(zero);
    EXPECT_EQ(r.area(), n) << "erased region is not a rectangle";
    // h = round(sqrt(A * a)), w = round(sqrt(A / a)), A in [0.1, 0.3] * H * W, a in [0.5, 2]
    const double area_lo = 0.1 * H * W, area_hi = 0.3 * H * W;
    const double slack = r.width + r.height + 1;  // rounding of both sides
    EXPECT_GE(n, area_lo - slack);
    EXPECT_LE(n, area_hi + slack);
    const double aspect = static_cast<double>(r.height) / r.width;
    EXPECT_GE(aspect, 0.5 * 0.8);
    EXPECT_LE(aspect, 2.0 * 1.25);
    EXPECT_EQ(cv::countNonZero(ch[1] == 0), n);  // all channels erased alike (const mode)
  }
  // EPSILON 0: never erases.
  auto never = pipeline("  - RandomErasing: {EPSILON: 0.0}\n");
  cv::Mat img(10, 10, CV_32FC3, cv::Scalar(1, 1, 1));
  Rng rng(1);
  never.apply(img, rng);
  EXPECT_EQ(cv::countNonZero(img.reshape(1) == 0), 0);
  // pixel mode fills with noise
  auto pix = pipeline("  - RandomErasing: {EPSILON: 1.0, mode: pixel}\n");
  cv::Mat p(30, 30, CV_32FC3, cv::Scalar(5, 5, 5));
  pix.apply(p, rng);
  EXPECT_GT(cv::countNonZero(p.reshape(1) != 5), 0);
  EXPECT_NE(error_of([] { pipeline("  - RandomErasing: {mode: blur}\n"); }).find("const, rand or pixel"),
            std::string::npos);
}

TEST(Transforms, AugMixRangeAndDeterminism) {
  auto tp = pipeline("  - AugMix: {prob: 1.0, mixture_depth: -1, aug_severity: 3}\n");
  cv::Mat src(32, 32, CV_8UC3);
  cv::randu(src, 0, 256);
  cv::Mat a = src.clone(), b = src.clone(), c = src.clone();
  Rng r1(7), r2(7), r3(8);
  tp.apply(a, r1);
  tp.apply(b, r2);
  tp.apply(c, r3);
  EXPECT_EQ(a.type(), CV_8UC3);
  EXPECT_EQ(a.size(), src.size());
  EXPECT_TRUE(same(a, b));
  int changed = 0;
  for (uint64_t s = 0; s < 10; ++s) {
    cv::Mat d = src.clone();
    Rng r(s);
    tp.apply(d, r);
    changed += !same(d, src);
  }
  EXPECT_GT(changed, 3);
  // A constant gray image stays inside [0, 255] and its mean stays plausible (ops keep or invert intensities).
  cv::Mat gray(16, 16, CV_8UC3, cv::Scalar(128, 128, 128));
  Rng r(3);
  tp.apply(gray, r);
  double lo, hi;
  cv::minMaxLoc(gray.reshape(1), &lo, &hi);
  EXPECT_GE(lo, 0);
  EXPECT_LE(hi, 255);
  // prob 0: untouched.
  auto off = pipeline("  - AugMix: {prob: 0.0}\n");
  cv::Mat e = src.clone();
  off.apply(e, r);
  EXPECT_TRUE(same(e, src));
  // After NormalizeImage it is a config error.
  EXPECT_NE(error_of([] { pipeline("  - NormalizeImage: {order: ''}\n  - AugMix: {}\n"); }).find("before NormalizeImage"),
            std::string::npos);
}

TEST(Transforms, ColorJitterAndRotation) {
  auto bright = pipeline("  - ColorJitter: {brightness: [2.0, 2.0]}\n");
  cv::Mat img(4, 4, CV_8UC3, cv::Scalar(10, 100, 200));
  Rng rng(0);
  bright.apply(img, rng);
  EXPECT_EQ(img.at<cv::Vec3b>(0, 0), cv::Vec3b(20, 200, 255));
  auto sat = pipeline("  - ColorJitter: {saturation: [0.0, 0.0]}\n");
  cv::Mat s(2, 2, CV_8UC3, cv::Scalar(10, 100, 200));
  sat.apply(s, rng);
  const auto g = s.at<cv::Vec3b>(0, 0);
  EXPECT_EQ(g[0], g[1]);
  EXPECT_EQ(g[1], g[2]);
  auto rot = pipeline("  - RandomRotation: {prob: 1.0, degrees: [90, 90]}\n");
  cv::Mat r = ramp(5, 5), ref;
  rot.apply(r, rng);
  cv::rotate(ramp(5, 5), ref, cv::ROTATE_90_COUNTERCLOCKWISE);
  EXPECT_TRUE(same(r, ref));
}

TEST(Transforms, UnknownOpsAndKeysAreErrors) {
  auto msg = error_of([] { pipeline("  - RandFlip: {flip_code: 1}\n"); });
  EXPECT_NE(msg.find("unknown transform op 'RandFlip'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("RandFlipImage"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - RandFlipImage: {flip_cod: 1}\n"); });
  EXPECT_NE(msg.find("flip_cod"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - ResizeImage: {size: 4}\n  - DecodeImage: {}\n"); });
  EXPECT_NE(msg.find("first op"), std::string::npos) << msg;
}

TEST(Transforms, DecodeImplicitAndRgbOrder) {
  const auto dir = temp_dir("decode");
  cv::Mat bgr(4, 5, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  const auto path = (dir / "a.png").string();
  cv::imwrite(path, bgr);
  auto implicit = pipeline("  - ResizeImage: {size: 2}\n");
  Rng rng(0);
  cv::Mat img = implicit.run(path, rng);
  EXPECT_EQ(img.size(), cv::Size(2, 2));
  EXPECT_EQ(img.at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));  // RGB by default
  auto keep_bgr = pipeline("  - DecodeImage: {to_rgb: False, channel_first: False}\n");
  EXPECT_EQ(keep_bgr.run(path, rng).at<cv::Vec3b>(0, 0), cv::Vec3b(10, 20, 30));
  BBox box{1, 1, 3, 4};
  EXPECT_EQ(keep_bgr.run(path, rng, &box).size(), cv::Size(2, 3));
  // Corrupt file: BadImageError naming the path.
  const auto bad = (dir / "bad.jpg").string();
  FILE* f = std::fopen(bad.c_str(), "wb");
  std::fputs("not an image", f);
  std::fclose(f);
  try {
    implicit.run(bad, rng);
    FAIL() << "no error";
  } catch (const BadImageError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos);
  }
  fs::remove_all(dir);
}

TEST(Transforms, ChwWriterMatchesPixels) {
  cv::Mat img = ramp(2, 3);
  std::vector<float> out(3 * 2 * 3);
  hwc_to_chw_float(img, out.data());
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) EXPECT_EQ(out[(c * 2 + y) * 3 + x], img.at<cv::Vec3b>(y, x)[c]);
}

TEST(Transforms, ChwWriterFloatAndFourChannels) {
  cv::Mat img(2, 3, CV_32FC4);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) img.at<cv::Vec4f>(y, x) = cv::Vec4f(y, x, 0.5f * x + y, -1.0f);
  std::vector<float> out(4 * 2 * 3, 99.0f);
  hwc_to_chw_float(img, out.data());
  for (int c = 0; c < 4; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) EXPECT_EQ(out[(c * 2 + y) * 3 + x], img.at<cv::Vec4f>(y, x)[c]);
  // channel_num 4 appends a zero channel after normalizing.
  auto tp = pipeline("  - NormalizeImage: {order: '', channel_num: 4, scale: 1.0, mean: [0, 0, 0], std: [1, 1, 1]}\n");
  cv::Mat m = ramp(2, 2);
  Rng rng(0);
  tp.apply(m, rng);
  ASSERT_EQ(m.channels(), 4);
  EXPECT_EQ(m.at<cv::Vec4f>(1, 1), cv::Vec4f(11, 101, 199, 0));
}

TEST(Transforms, PaddleVisionToTensorNormalize) {
  auto tp = pipeline("  - ToTensor:\n  - Normalize: {mean: [0.5, 0.5, 0.0], std: [0.5, 0.25, 1.0]}\n");
  EXPECT_TRUE(tp.output_state().chw);
  cv::Mat img = ramp(2, 2);
  const cv::Mat src = img.clone();
  Rng rng(0);
  tp.apply(img, rng);
  const double mean[3] = {0.5, 0.5, 0.0}, stdv[3] = {0.5, 0.25, 1.0};
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(img.at<cv::Vec3f>(1, 1)[c], (src.at<cv::Vec3b>(1, 1)[c] / 255.0 - mean[c]) / stdv[c], 1e-5);
  EXPECT_NE(error_of([] { pipeline("  - Normalize: {mean: 0.5, data_format: CHW}\n"); }).find("does not match"),
            std::string::npos);
}
