// paddle.vision's ops as PaddleClas configs name them (Resize, RandomResizedCrop, CenterCrop,
// RandomHorizontalFlip, RandomCrop): sizes [h, w], hand-computed crops and sizes, the library chosen by the image
// type (Pillow for PIL images: dataset backend pil or ResizeImage return_numpy: False).
#include <featlearn/data/pil_ops.h>
#include <featlearn/data/transforms.h>
#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include <functional>
#include <set>

#include "transform_test_util.h"

using namespace featlearn;
using featlearn::test::error_of;
using featlearn::test::pipeline;
using featlearn::test::same;

namespace {

// Pixel (y, x) = (x, y, (7x + 13y) % 256): positions can be read back from the pixels.
cv::Mat coords(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(x, y, (7 * x + 13 * y) % 256);
  return m;
}

cv::Mat run(const TransformPipeline& tp, const cv::Mat& src, uint64_t seed = 0) {
  cv::Mat img = src.clone();
  Rng rng(seed);
  tp.apply(img, rng);
  return img;
}

}  // namespace

TEST(VisionTransforms, ResizeShorterSideAndHW) {
  const cv::Mat src = coords(20, 30);  // 30 wide, 20 high
  cv::Mat ref;
  // int: shorter side (h = 20) -> 10, width int(10 * 30 / 20) = 15; OpenCV bilinear for arrays.
  cv::Mat out = run(pipeline("  - Resize: {size: 10}\n"), src);
  cv::resize(src, ref, cv::Size(15, 10), 0, 0, cv::INTER_LINEAR);
  EXPECT_TRUE(same(out, ref));
  // 30 x 20 -> size 7: width int(7 * 30 / 20) = int(10.5) = 10.
  EXPECT_EQ(run(pipeline("  - Resize: {size: 7}\n"), src).size(), cv::Size(10, 7));
  // [h, w]
  out = run(pipeline("  - Resize: {size: [8, 12], interpolation: nearest}\n"), src);
  cv::resize(src, ref, cv::Size(12, 8), 0, 0, cv::INTER_NEAREST);
  EXPECT_TRUE(same(out, ref));
  // Shorter side already the size: unchanged.
  EXPECT_TRUE(same(run(pipeline("  - Resize: {size: 20}\n"), src), src));
  // A PIL image (dataset backend pil) resizes with Pillow, bilinear by default.
  out = run(pipeline("  - Resize: {size: 10}\n", true), src);
  EXPECT_TRUE(same(out, pil_resize(src, {15, 10}, PilFilter::kBilinear)));
  out = run(pipeline("  - Resize: {size: 10, interpolation: hamming}\n", true), src);
  EXPECT_TRUE(same(out, pil_resize(src, {15, 10}, PilFilter::kHamming)));
  // ResizeImage with backend pil and return_numpy: False hands a PIL image on; with the default, an array.
  out = run(pipeline("  - ResizeImage: {size: [30, 20], backend: pil, return_numpy: False}\n  - Resize: {size: 10}\n"),
            src);
  EXPECT_TRUE(same(out, pil_resize(src, {15, 10}, PilFilter::kBilinear)));
  out = run(pipeline("  - ResizeImage: {size: [30, 20], backend: pil}\n  - Resize: {size: 10}\n"), src);
  cv::resize(src, ref, cv::Size(15, 10), 0, 0, cv::INTER_LINEAR);
  EXPECT_TRUE(same(out, ref));
  // Names are the library's own.
  auto msg = error_of([] { pipeline("  - Resize: {size: 10, interpolation: hamming}\n"); });
  EXPECT_NE(msg.find("Resize.interpolation"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an OpenCV interpolation"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - Resize: {size: 10, interpolation: area}\n", true); });
  EXPECT_NE(msg.find("not a Pillow filter"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - Resize: {size: [1, 2, 3]}\n"); });
  EXPECT_NE(msg.find("[h, w]"), std::string::npos) << msg;
}

TEST(VisionTransforms, ResizeImageWithPilBackendDefaultsToBilinear) {
  // PaddleClas's UnifiedResize passes Image.BILINEAR when no interpolation is configured.
  const cv::Mat src = coords(20, 30);
  EXPECT_TRUE(same(run(pipeline("  - ResizeImage: {size: [13, 9], backend: pil}\n"), src),
                   pil_resize(src, {13, 9}, PilFilter::kBilinear)));
}

TEST(VisionTransforms, CenterCropRoundsHalfToEven) {
  const cv::Mat src = coords(7, 9);
  // [h, w] = [2, 4]: top = round((7 - 2) / 2) = round(2.5) = 2, left = round(2.5) = 2 (Python rounds half to even).
  cv::Mat out = run(pipeline("  - CenterCrop: {size: [2, 4]}\n"), src);
  EXPECT_TRUE(same(out, src(cv::Rect(2, 2, 4, 2))));
  // [4, 2]: top = round(1.5) = 2, left = round(3.5) = 4.
  out = run(pipeline("  - CenterCrop: {size: [4, 2]}\n"), src);
  EXPECT_TRUE(same(out, src(cv::Rect(4, 2, 2, 4))));
  // A PIL image smaller than the crop: Pillow's crop fills outside with black. size 9: top = round(1) = 1,
  // left = 0 -> the image sits at rows 1..7 of the 9 x 9 result.
  out = run(pipeline("  - CenterCrop: {size: 9}\n", true), src);
  ASSERT_EQ(out.size(), cv::Size(9, 9));
  EXPECT_TRUE(same(out(cv::Rect(0, 1, 9, 7)), src));
  EXPECT_EQ(cv::countNonZero(out.row(0).reshape(1)), 0);
  EXPECT_EQ(cv::countNonZero(out.row(8).reshape(1)), 0);
  // An array must be large enough.
  auto tp = pipeline("  - CenterCrop: {size: 9}\n");
  const auto msg = error_of([&] { run(tp, src); });
  EXPECT_NE(msg.find("smaller than the crop"), std::string::npos) << msg;
}

TEST(VisionTransforms, RandomHorizontalFlipProbability) {
  const cv::Mat src = coords(3, 5);
  cv::Mat flipped;
  cv::flip(src, flipped, 1);
  EXPECT_TRUE(same(run(pipeline("  - RandomHorizontalFlip: {prob: 1}\n"), src), flipped));
  EXPECT_TRUE(same(run(pipeline("  - RandomHorizontalFlip: {prob: 0}\n"), src), src));
  auto half = pipeline("  - RandomHorizontalFlip:\n");
  int n = 0;
  for (uint64_t s = 0; s < 400; ++s) n += same(run(half, src, s), flipped);
  EXPECT_NEAR(n, 200, 50);  // 5 binomial standard deviations
  const auto msg = error_of([] { pipeline("  - RandomHorizontalFlip: {prob: 1.5}\n"); });
  EXPECT_NE(msg.find("RandomHorizontalFlip.prob"), std::string::npos) << msg;
}

TEST(VisionTransforms, RandomCropPadsThenCropsUniformly) {
  const cv::Mat src = coords(6, 10);
  cv::Mat padded;
  cv::copyMakeBorder(src, padded, 2, 2, 2, 2, cv::BORDER_CONSTANT, cv::Scalar::all(0));  // 14 x 10
  auto tp = pipeline("  - RandomCrop: {size: [6, 10], padding: 2}\n");
  std::set<std::pair<int, int>> offsets;
  for (uint64_t s = 0; s < 400; ++s) {
    const cv::Mat out = run(tp, src, s);
    ASSERT_EQ(out.size(), cv::Size(10, 6));
    bool found = false;
    for (int top = 0; top <= 4 && !found; ++top)
      for (int left = 0; left <= 4 && !found; ++left)
        if (same(out, padded(cv::Rect(left, top, 10, 6)))) {
          offsets.insert({left, top});
          found = true;
        }
    EXPECT_TRUE(found) << "seed " << s;
  }
  EXPECT_EQ(offsets.size(), 25u);  // every position of the 5 x 5 range
  // The image's own size: no crop drawn, unchanged.
  EXPECT_TRUE(same(run(pipeline("  - RandomCrop: {size: [6, 10]}\n"), src), src));
  // pad_if_needed: width 10 < 12 pads 2 on both sides (edge mode), height 6 < 8 pads 2 on both sides.
  const cv::Mat out = run(pipeline("  - RandomCrop: {size: [8, 12], pad_if_needed: True, padding_mode: edge}\n"),
                          src, 3);
  EXPECT_EQ(out.size(), cv::Size(12, 8));
  // Too small without padding: the error names paddle.vision's [h, w] order.
  auto small = pipeline("  - RandomCrop: {size: [10, 6]}\n");
  const auto msg = error_of([&] { run(small, src); });
  EXPECT_NE(msg.find("smaller than the crop of 6x10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[h, w]"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { pipeline("  - RandomCrop: {size: 4, padding_mode: wrap}\n"); }).find("padding_mode"),
            std::string::npos);
}

TEST(VisionTransforms, RandomResizedCropSizeAndFallback) {
  const cv::Mat src = coords(10, 20);
  // Output [h, w].
  EXPECT_EQ(run(pipeline("  - RandomResizedCrop: {size: [5, 7]}\n"), src, 1).size(), cv::Size(7, 5));
  // scale [2, 3]: no try fits, so the fallback: in_ratio 2 > 4/3 -> h = 10, w = round(10 * 4/3) = 13, centered at
  // left (20 - 13) // 2 = 3. With size [10, 13] nothing is resized.
  const cv::Mat out = run(pipeline("  - RandomResizedCrop: {size: [10, 13], scale: [2, 3]}\n"), src, 5);
  EXPECT_TRUE(same(out, src(cv::Rect(3, 0, 13, 10))));
  // Crops of the default range lie inside the image and cover several sizes.
  auto finder = pipeline("  - RandomResizedCrop: {size: [40, 60], interpolation: nearest}\n");
  std::set<int> widths;
  for (uint64_t s = 0; s < 50; ++s) {
    const cv::Mat o = run(finder, src, s);
    std::vector<cv::Mat> ch;
    cv::split(o, ch);
    double x0, x1;
    cv::minMaxLoc(ch[0], &x0, &x1);
    widths.insert(static_cast<int>(x1 - x0));
  }
  EXPECT_GT(widths.size(), 5u);
  auto msg = error_of([] { pipeline("  - RandomResizedCrop: {size: 4, ratio: [0, 1]}\n"); });
  EXPECT_NE(msg.find("RandomResizedCrop.ratio"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - RandomResizedCrop: {size: 4, scale: [0.5, 0.2]}\n"); });
  EXPECT_NE(msg.find("RandomResizedCrop.scale"), std::string::npos) << msg;
}

TEST(VisionTransforms, KeysAndStateErrors) {
  EXPECT_NO_THROW(pipeline("  - CenterCrop: {size: 4, keys: [image]}\n"));
  auto msg = error_of([] { pipeline("  - CenterCrop: {size: 4, keys: [image, label]}\n"); });
  EXPECT_NE(msg.find("CenterCrop.keys"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - Resize: {size: 4, max_size: 9}\n"); });
  EXPECT_NE(msg.find("max_size"), std::string::npos) << msg;
  // paddle.vision rotates PIL images with Pillow: not reproduced, so refused there.
  msg = error_of([] { pipeline("  - RandomRotation: {degrees: 10}\n", true); });
  EXPECT_NE(msg.find("PIL image"), std::string::npos) << msg;
  EXPECT_NO_THROW(pipeline("  - TimmAutoAugment:\n  - RandomRotation: {degrees: 10}\n", true));
}

// CropWithPadding (AdaFace): a RandomResizedCrop box stays in place, the rest becomes padding_num, the size is kept.
TEST(VisionTransforms, CropWithPaddingKeepsABoxInPlace) {
  const cv::Mat src = coords(40, 50);  // no pixel is (255, 255, 255)
  const auto tp = pipeline(
      "  - CropWithPadding: {prob: 1, padding_num: 255, size: [112, 112], scale: [0.2, 1.0], "
      "ratio: [0.75, 1.3333333333333333]}\n");
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const cv::Mat out = run(tp, src, seed);
    ASSERT_EQ(out.size(), src.size());
    // The kept pixels form one rectangle equal to the source there; all others are the padding.
    int x0 = out.cols, y0 = out.rows, x1 = -1, y1 = -1, kept = 0;
    for (int y = 0; y < out.rows; ++y)
      for (int x = 0; x < out.cols; ++x) {
        const auto v = out.at<cv::Vec3b>(y, x);
        if (v == cv::Vec3b(255, 255, 255)) continue;
        ASSERT_EQ(v, src.at<cv::Vec3b>(y, x)) << "at " << x << "," << y;
        ++kept;
        x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
      }
    const int w = x1 - x0 + 1, h = y1 - y0 + 1;
    EXPECT_EQ(kept, w * h) << "seed " << seed;
    // Area within scale (rounding of w and h allowed), aspect within ratio, or the central fallback.
    EXPECT_GE(w * h, 0.2 * 40 * 50 * 0.9) << "seed " << seed;
    EXPECT_GE(static_cast<double>(w) / h, 0.75 * 0.9);
    EXPECT_LE(static_cast<double>(w) / h, 4.0 / 3.0 * 1.1);
  }
  EXPECT_TRUE(same(run(pipeline("  - CropWithPadding: {prob: 0}\n"), src), src));
  const auto msg = error_of([] { pipeline("  - CropWithPadding: {prob: 1, padding_num: 300}\n"); });
  EXPECT_NE(msg.find("CropWithPadding.padding_num"), std::string::npos) << msg;
}

// RandomInterpolationAugment: replaying the op's draws (prob, side fraction, two interpolations) on a copy of the
// RNG gives exactly OpenCV's down-and-up resize.
TEST(VisionTransforms, RandomInterpolationAugmentReplaysItsDraws) {
  const cv::Mat src = coords(30, 44);
  const auto tp = pipeline("  - RandomInterpolationAugment: {prob: 1}\n");
  const int kInterp[] = {cv::INTER_NEAREST, cv::INTER_LINEAR, cv::INTER_AREA, cv::INTER_CUBIC, cv::INTER_LANCZOS4};
  std::set<int> sides;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    Rng rng(seed);
    ASSERT_LT(rng.uniform(), 1.0);
    const int side = std::max(1, static_cast<int>(rng.uniform(0.2, 1.0) * 30));
    const int down = kInterp[rng.randint(0, 4)], up = kInterp[rng.randint(0, 4)];
    cv::Mat small, expected;
    cv::resize(src, small, cv::Size(side, side), 0, 0, down);
    cv::resize(small, expected, src.size(), 0, 0, up);
    EXPECT_TRUE(same(run(tp, src, seed), expected)) << "seed " << seed;
    EXPECT_GE(side, 6);  // int(0.2 * 30)
    sides.insert(side);
  }
  EXPECT_GT(sides.size(), 3u);
  EXPECT_TRUE(same(run(pipeline("  - RandomInterpolationAugment: {prob: 0}\n"), src), src));
  const auto msg = error_of([] { pipeline("  - RandomInterpolationAugment: {}\n"); });
  EXPECT_NE(msg.find("missing required key 'prob'"), std::string::npos) << msg;
}
