// Pillow parity: pil_resize / pil_affine_bilinear / pil_rotate_bilinear / ImageOps against the references
// written by Debian's python3-pil (Pillow 9.4, tests/fixtures/pil_fixtures.py), and the ops that use them
// (ResizeImage / RandCropImage with backend: pil). The expected difference is 0 everywhere: the C++ code keeps
// Pillow's arithmetic (docs/data.md#pillow-parity).
#include <featlearn/data/pil_ops.h>
#include <featlearn/data/transforms.h>
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "transform_test_util.h"
#include "../fixture_path.h"

using namespace featlearn;
using featlearn::test::error_of;
using featlearn::test::pipeline;

namespace {

struct PilCase {
  std::string op, arg, src, out;
};

std::vector<PilCase> manifest() {
  std::ifstream f(fixture("pil/manifest.txt"));
  std::vector<PilCase> cases;
  PilCase c;
  while (f >> c.op >> c.arg >> c.src >> c.out) cases.push_back(c);
  return cases;
}

// Fixture PNGs are read in RGB order, as Pillow holds them (gray conversion and fill colours depend on it).
cv::Mat load(const std::string& name) {
  cv::Mat m = cv::imread(fixture("pil/" + name), cv::IMREAD_COLOR);
  EXPECT_FALSE(m.empty()) << name;
  if (!m.empty()) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  return m;
}

int max_abs_diff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 1000;
  cv::Mat d;
  cv::absdiff(a, b, d);
  double hi = 0;
  cv::minMaxLoc(d.reshape(1), nullptr, &hi);
  return static_cast<int>(hi);
}

std::vector<double> split_numbers(const std::string& s, char sep) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) v.push_back(std::strtod(item.c_str(), nullptr));
  return v;
}

cv::Mat run_case(const PilCase& c) {
  cv::Mat img = load(c.src);
  if (c.op == "resize") {
    const auto colon = c.arg.find(':'), x = c.arg.find('x', colon);
    const auto filter = pil_filter_from_name(c.arg.substr(0, colon));
    EXPECT_TRUE(filter) << c.arg;
    const cv::Size size(std::stoi(c.arg.substr(colon + 1, x - colon - 1)), std::stoi(c.arg.substr(x + 1)));
    return pil_resize(img, size, *filter);
  }
  if (c.op == "affine") {
    const auto v = split_numbers(c.arg, ',');
    EXPECT_EQ(v.size(), 6u) << c.arg;
    return pil_affine_bilinear(img, {v[0], v[1], v[2], v[3], v[4], v[5]});
  }
  if (c.op == "rotate") return pil_rotate_bilinear(img, std::strtod(c.arg.c_str(), nullptr));
  if (c.op == "transform" || c.op == "rotatef") {  // <filter>:<data or degrees>:<r,g,b>
    const auto c1 = c.arg.find(':'), c2 = c.arg.rfind(':');
    const auto filter = pil_filter_from_name(c.arg.substr(0, c1));
    EXPECT_TRUE(filter) << c.arg;
    const auto f = split_numbers(c.arg.substr(c2 + 1), ',');
    const cv::Scalar fill(f.at(0), f.at(1), f.at(2));
    const std::string mid = c.arg.substr(c1 + 1, c2 - c1 - 1);
    if (c.op == "rotatef") return pil_rotate(img, std::strtod(mid.c_str(), nullptr), *filter, fill);
    const auto v = split_numbers(mid, ',');
    EXPECT_EQ(v.size(), 6u) << c.arg;
    return pil_affine(img, {v[0], v[1], v[2], v[3], v[4], v[5]}, *filter, fill);
  }
  if (c.op == "gray") {
    cv::Mat g3;
    cv::merge(std::vector<cv::Mat>(3, pil_to_gray(img)), g3);
    return g3;
  }
  if (c.op == "smooth") return pil_smooth(img);
  static const std::map<std::string, PilEnhance> kEnhance = {{"color", PilEnhance::kColor},
                                                             {"contrast", PilEnhance::kContrast},
                                                             {"brightness", PilEnhance::kBrightness},
                                                             {"sharpness", PilEnhance::kSharpness}};
  if (auto it = kEnhance.find(c.op); it != kEnhance.end()) {
    pil_enhance(img, it->second, std::strtod(c.arg.c_str(), nullptr));
    return img;
  }
  if (c.op == "invert") pil_invert(img);
  else if (c.op == "solarize_add") {
    const auto v = split_numbers(c.arg, ',');
    pil_solarize_add(img, static_cast<int>(v.at(0)), static_cast<int>(v.at(1)));
  } else if (c.op == "autocontrast") pil_autocontrast(img);
  else if (c.op == "equalize") pil_equalize(img);
  else if (c.op == "posterize") pil_posterize(img, std::stoi(c.arg));
  else if (c.op == "solarize") pil_solarize(img, std::stoi(c.arg));
  else ADD_FAILURE() << "unknown op in the manifest: " << c.op;
  return img;
}

}  // namespace

TEST(PilOps, BitExactAgainstPillow) {
  const auto cases = manifest();
  ASSERT_GT(cases.size(), 700u) << "manifest incomplete (fixtures older than pil_fixtures.py VERSION 2?)";
  std::map<std::string, std::pair<int, int>> worst;  // op[/filter] -> (max diff, cases)
  for (const auto& c : cases) {
    const cv::Mat ref = load(c.out);
    const cv::Mat got = run_case(c);
    const int d = max_abs_diff(got, ref);
    const bool by_filter = c.op == "resize" || c.op == "transform" || c.op == "rotatef";
    const std::string key = by_filter ? c.op + "/" + c.arg.substr(0, c.arg.find(':')) : c.op;
    auto& w = worst[key];
    w.first = std::max(w.first, d);
    ++w.second;
    EXPECT_EQ(d, 0) << c.op << " " << c.arg << " on " << c.src << ": max |difference| " << d
                    << (d == 1000 ? " (size or type differs)" : "");
  }
  for (const auto& [key, w] : worst)
    std::printf("  %-18s max |diff| %d over %d cases\n", key.c_str(), w.first, w.second);
  // Every op and filter of the fixtures was exercised.
  for (const char* key : {"resize/nearest", "resize/box", "resize/bilinear", "resize/hamming", "resize/bicubic",
                          "resize/lanczos", "affine", "rotate", "autocontrast", "equalize", "posterize", "solarize",
                          "transform/bilinear", "transform/bicubic", "rotatef/bilinear", "rotatef/bicubic", "invert",
                          "solarize_add", "gray", "smooth", "color", "contrast", "brightness", "sharpness"})
    EXPECT_GT(worst[key].second, 0) << key;
}

TEST(PilOps, ResizeImageWithPilBackendIsPillowsResize) {
  const cv::Mat src = load("src_noise_64x48.png");
  // op parameters -> reference (the fixtures' name for Pillow's resize of src_noise_64x48 with that filter/size)
  const std::map<std::string, std::string> refs = {
      {"{size: [23, 17], backend: pil, interpolation: bilinear}", "bilinear_23x17"},
      {"{size: [23, 17], backend: PIL, interpolation: lanczos}", "lanczos_23x17"},
      {"{size: [32, 24], backend: pil, interpolation: box}", "box_32x24"},
      {"{size: [32, 24], backend: pil, interpolation: hamming}", "hamming_32x24"},
      // No interpolation: bilinear (PaddleClas's UnifiedResize passes Image.BILINEAR).
      {"{size: [23, 17], backend: pil}", "bilinear_23x17"},
      // resize_short 24: percent = 24 / 48, (64, 48) -> (32, 24)
      {"{resize_short: 24, backend: pil, interpolation: nearest}", "nearest_32x24"},
  };
  for (const auto& [params, ref] : refs) {
    auto tp = pipeline("  - ResizeImage: " + params + "\n");
    cv::Mat img = src.clone();
    Rng rng(0);
    tp.apply(img, rng);
    EXPECT_EQ(max_abs_diff(img, load("resize_" + ref + "_noise_64x48.png")), 0) << params;
  }
  // backend cv2 (the default) stays OpenCV's resize.
  auto cv2 = pipeline("  - ResizeImage: {size: [23, 17]}\n");
  cv::Mat img = src.clone(), ref;
  Rng rng(0);
  cv2.apply(img, rng);
  cv::resize(src, ref, cv::Size(23, 17), 0, 0, cv::INTER_LINEAR);
  EXPECT_EQ(max_abs_diff(img, ref), 0);
  // random: bilinear or bicubic per image, both Pillow's.
  auto random = pipeline("  - ResizeImage: {size: [23, 17], backend: pil, interpolation: random}\n");
  const cv::Mat lin = load("resize_bilinear_23x17_noise_64x48.png"), cub = load("resize_bicubic_23x17_noise_64x48.png");
  int n_lin = 0, n_cub = 0;
  for (uint64_t s = 0; s < 30; ++s) {
    cv::Mat m = src.clone();
    Rng r(s);
    random.apply(m, r);
    n_lin += max_abs_diff(m, lin) == 0;
    n_cub += max_abs_diff(m, cub) == 0;
  }
  EXPECT_EQ(n_lin + n_cub, 30);
  EXPECT_GT(n_lin, 3);
  EXPECT_GT(n_cub, 3);
}

TEST(PilOps, RandCropImageWithPilBackendResizesTheCropWithPillow) {
  // The crop depends only on the seed, so a cv2/nearest twin of the op reveals it: upscaled with nearest, every
  // column and row of the crop shows up, and this image stores x in channel 0 and y in channel 1.
  const int W = 64, H = 48;
  cv::Mat coords(H, W, CV_8UC3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) coords.at<cv::Vec3b>(y, x) = cv::Vec3b(x, y, 0);
  const cv::Mat src = load("src_noise_64x48.png");
  auto finder = pipeline("  - RandCropImage: {size: 70, interpolation: nearest}\n");
  auto pil = pipeline("  - RandCropImage: {size: 20, backend: pil}\n");
  auto pil_lanczos = pipeline("  - RandCropImage: {size: [21, 13], backend: pil, interpolation: lanczos}\n");
  for (uint64_t s = 0; s < 25; ++s) {
    cv::Mat c = coords.clone();
    Rng r1(s);
    finder.apply(c, r1);
    std::vector<cv::Mat> ch;
    cv::split(c, ch);
    double x0, x1, y0, y1;
    cv::minMaxLoc(ch[0], &x0, &x1);
    cv::minMaxLoc(ch[1], &y0, &y1);
    const cv::Rect crop(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0) + 1,
                        static_cast<int>(y1 - y0) + 1);
    cv::Mat a = src.clone(), b = src.clone();
    Rng r2(s), r3(s);
    pil.apply(a, r2);
    pil_lanczos.apply(b, r3);
    EXPECT_EQ(max_abs_diff(a, pil_resize(src(crop).clone(), {20, 20}, PilFilter::kBilinear)), 0) << "seed " << s;
    EXPECT_EQ(max_abs_diff(b, pil_resize(src(crop).clone(), {21, 13}, PilFilter::kLanczos)), 0) << "seed " << s;
  }
}

TEST(PilOps, BackendAndFilterErrors) {
  auto msg = error_of([] { pipeline("  - ResizeImage: {size: 4, backend: pil, interpolation: area}\n"); });
  EXPECT_NE(msg.find("ResizeImage.interpolation"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a Pillow filter"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - RandCropImage: {size: 4, backend: pil, interpolation: hammming}\n"); });
  EXPECT_NE(msg.find("did you mean hamming"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - ResizeImage: {size: 4, backend: torch}\n"); });
  EXPECT_NE(msg.find("ResizeImage.backend"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cv2 or pil"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - NormalizeImage: {order: ''}\n  - ResizeImage: {size: 4, backend: pil}\n"); });
  EXPECT_NE(msg.find("before NormalizeImage"), std::string::npos) << msg;
  // cv2 keeps OpenCV's names.
  EXPECT_EQ(error_of([] { pipeline("  - ResizeImage: {size: 4, interpolation: area}\n"); }), "<no error>");
  // The functions check their input.
  cv::Mat gray(4, 4, CV_8UC1, cv::Scalar(0));
  msg = error_of([&] { pil_resize(gray, {2, 2}, PilFilter::kBilinear); });
  EXPECT_NE(msg.find("pil_resize: expected a non-empty 8-bit 3-channel image"), std::string::npos) << msg;
  cv::Mat img(4, 4, CV_8UC3, cv::Scalar(1, 2, 3));
  msg = error_of([&] { pil_resize(img, {0, 2}, PilFilter::kBilinear); });
  EXPECT_NE(msg.find("must be positive"), std::string::npos) << msg;
  msg = error_of([&] { pil_posterize(img, 9); });
  EXPECT_NE(msg.find("0..8"), std::string::npos) << msg;
}
