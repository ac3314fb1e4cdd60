// TimmAutoAugment: the config_str grammar, each op's arguments at fixed magnitudes (hand-computed, checked against
// the Pillow-exact functions that test_pil_ops.cpp compares with Pillow), magnitude noise and signs with a copied
// Rng, op choice and probabilities statistically, and the TimmAutoAugment transform's keys.
#include <featlearn/data/autoaugment.h>
#include <featlearn/data/pil_ops.h>
#include <featlearn/data/transforms.h>
#include <gtest/gtest.h>

#include <functional>

#include "transform_test_util.h"

using namespace featlearn;
using featlearn::test::error_of;
using featlearn::test::pipeline;
using featlearn::test::same;

namespace {

cv::Mat noise(int h, int w, uint64_t seed) {
  cv::Mat m(h, w, CV_8UC3);
  Rng r(seed);
  for (int i = 0; i < h * w * 3; ++i) m.data[i] = static_cast<uchar>(r.below(256));
  return m;
}

TimmAugmentParams bicubic_params() {
  TimmAugmentParams hp;
  hp.filter = PilFilter::kBicubic;
  hp.fill = cv::Scalar(124, 116, 104);
  return hp;
}

}  // namespace

TEST(TimmAutoAugment, RandGrammar) {
  auto s = parse_timm_augment("rand-m7-mstd0.5-inc1");  // GeneralRecognitionV2_CLIP_vit_*.yaml
  EXPECT_EQ(s.kind, TimmAugmentSpec::Kind::kRand);
  ASSERT_EQ(s.ops.size(), 15u);
  EXPECT_EQ(s.ops[4].name, "PosterizeIncreasing");
  EXPECT_EQ(s.ops[7].name, "ColorIncreasing");
  for (const auto& op : s.ops) {
    EXPECT_EQ(op.magnitude, 7);
    EXPECT_EQ(op.prob, 0.5);
  }
  EXPECT_EQ(s.num_layers, 2);
  EXPECT_EQ(s.magnitude_std, 0.5);
  EXPECT_TRUE(s.weights.empty());
  s = parse_timm_augment("rand");
  EXPECT_EQ(s.ops[4].name, "Posterize");
  EXPECT_EQ(s.ops[0].magnitude, 10);
  EXPECT_EQ(parse_timm_augment("rand-inc0").ops[4].name, "Posterize");  // PaddleClas: bool("0") is True
  s = parse_timm_augment("rand-n3-w0-m9");
  ASSERT_EQ(s.weights.size(), 15u);
  double sum = 0;
  for (double w : s.weights) sum += w;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_EQ(s.weights[3], 0.3);  // Rotate
  EXPECT_EQ(s.num_layers, 3);
  for (const char* bad : {"rand-m", "rand-x3", "rand-m9-m7", "rand-w1", "rand-m9.5", "rand-mstdx", "rand-n14-w0",
                          "randaug-m9", "foo-m9", "auto-v0"})
    EXPECT_THROW(parse_timm_augment(bad), Error) << bad;
  EXPECT_NE(error_of([] { parse_timm_augment("rand-q3"); }).find("unknown section 'q'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_timm_augment("autoaug"); }).find("original-mstd0.5"), std::string::npos);
}

TEST(TimmAutoAugment, AugMixAndPolicyGrammar) {
  auto s = parse_timm_augment("augmix-m5-w4-d2-a0.5-b1");
  EXPECT_EQ(s.kind, TimmAugmentSpec::Kind::kAugMix);
  EXPECT_EQ(s.ops.size(), 13u);
  EXPECT_EQ(s.ops[0].magnitude, 5);
  EXPECT_EQ(s.ops[0].prob, 1.0);
  EXPECT_EQ(s.width, 4);
  EXPECT_EQ(s.depth, 2);
  EXPECT_EQ(s.alpha, 0.5);
  EXPECT_TRUE(s.blended);
  s = parse_timm_augment("augmix");
  EXPECT_EQ(s.ops[0].magnitude, 3);
  EXPECT_EQ(s.width, 3);
  EXPECT_EQ(s.depth, -1);
  EXPECT_FALSE(s.blended);
  EXPECT_FALSE(parse_timm_augment("augmix-b0").blended);  // PaddleClas: bool("0") is True
  s = parse_timm_augment("original-mstd0.5");
  EXPECT_EQ(s.kind, TimmAugmentSpec::Kind::kAuto);
  ASSERT_EQ(s.policy.size(), 25u);
  EXPECT_EQ(s.policy[0][0].name, "PosterizeOriginal");
  EXPECT_EQ(s.policy[0][0].prob, 0.4);
  EXPECT_EQ(s.policy[0][0].magnitude, 8);
  EXPECT_EQ(s.magnitude_std, 0.5);
  EXPECT_EQ(parse_timm_augment("originalr").policy[0][0].name, "PosterizeIncreasing");
  EXPECT_EQ(parse_timm_augment("v0").policy[12][0].name, "Posterize");
  EXPECT_EQ(parse_timm_augment("v0r").policy[12][0].name, "PosterizeIncreasing");
  EXPECT_THROW(parse_timm_augment("v0-m3"), Error);
  EXPECT_THROW(parse_timm_augment("augmix-n2"), Error);
}

TEST(TimmAutoAugment, OpsAtFixedMagnitudesArePillowOps) {
  const cv::Mat src = noise(17, 23, 1);
  const TimmAugmentParams hp = bicubic_params();
  // name, magnitude -> expected result given the sign drawn (`neg`).
  using Expect = std::function<cv::Mat(const cv::Mat&, bool neg)>;
  auto lut = [](void (*f)(cv::Mat&, int), int v) {
    return Expect([f, v](const cv::Mat& m, bool) { cv::Mat o = m.clone(); f(o, v); return o; });
  };
  auto enhance = [](PilEnhance k, double f0, double spread) {
    return Expect([=](const cv::Mat& m, bool neg) {
      cv::Mat o = m.clone();
      pil_enhance(o, k, f0 + (neg ? -spread : spread));
      return o;
    });
  };
  auto affine = [&](std::function<std::array<double, 6>(double)> data, double v) {
    return Expect([=](const cv::Mat& m, bool neg) { return pil_affine(m, data(neg ? -v : v), PilFilter::kBicubic, hp.fill); });
  };
  const std::vector<std::tuple<std::string, double, Expect>> cases = {
      {"Rotate", 7, [&](const cv::Mat& m, bool neg) { return pil_rotate(m, neg ? -21.0 : 21.0, PilFilter::kBicubic, hp.fill); }},
      {"Rotate", 15, [&](const cv::Mat& m, bool neg) { return pil_rotate(m, neg ? -30.0 : 30.0, PilFilter::kBicubic, hp.fill); }},  // clipped to 10
      {"Posterize", 7, lut(pil_posterize, 2)},            // int(0.7 * 4) = 2
      {"PosterizeIncreasing", 7, lut(pil_posterize, 2)},  // 4 - 2
      {"PosterizeOriginal", 7, lut(pil_posterize, 6)},    // 2 + 4
      {"Solarize", 5, lut(pil_solarize, 128)},            // int(0.5 * 256)
      {"SolarizeIncreasing", 2, lut(pil_solarize, 205)},  // 256 - int(51.2)
      {"Color", 5, enhance(PilEnhance::kColor, 1.0, 0)},  // 0.5 * 1.8 + 0.1
      {"Contrast", 0, enhance(PilEnhance::kContrast, 0.1, 0)},
      {"Brightness", 10, enhance(PilEnhance::kBrightness, 1.9, 0)},
      {"Sharpness", 5, enhance(PilEnhance::kSharpness, 1.0, 0)},
      {"ColorIncreasing", 5, enhance(PilEnhance::kColor, 1.0, 0.45)},  // 1 +- 0.5 * 0.9
      {"ContrastIncreasing", 10, enhance(PilEnhance::kContrast, 1.0, 0.9)},
      {"BrightnessIncreasing", 5, enhance(PilEnhance::kBrightness, 1.0, 0.45)},
      {"SharpnessIncreasing", 10, enhance(PilEnhance::kSharpness, 1.0, 0.9)},
      {"ShearX", 5, affine([](double v) { return std::array<double, 6>{1, v, 0, 0, 1, 0}; }, 0.15)},
      {"ShearY", 10, affine([](double v) { return std::array<double, 6>{1, 0, 0, v, 1, 0}; }, 0.3)},
      {"TranslateXRel", 5, affine([](double v) { return std::array<double, 6>{1, 0, v * 23, 0, 1, 0}; }, 0.225)},
      {"TranslateYRel", 10, affine([](double v) { return std::array<double, 6>{1, 0, 0, 0, 1, v * 17}; }, 0.45)},
      {"TranslateX", 5, affine([](double v) { return std::array<double, 6>{1, 0, v, 0, 1, 0}; }, 125)},  // const 250
      {"TranslateY", 2, affine([](double v) { return std::array<double, 6>{1, 0, 0, 0, 1, v}; }, 50)},
  };
  for (const auto& [name, magnitude, expect] : cases) {
    for (uint64_t seed = 0; seed < 6; ++seed) {
      Rng rng(seed), copy(seed);
      cv::Mat img = src.clone();
      apply_timm_augment_op({name, 1.0, magnitude}, hp, img, rng);
      const bool neg = copy.uniform() > 0.5;  // the sign draw (ops without one ignore it)
      EXPECT_TRUE(same(img, expect(src, neg))) << name << " m" << magnitude << " seed " << seed;
    }
  }
  // The ops without arguments and SolarizeAdd (add int(0.5 * 110) = 55 below 128).
  Rng rng(0);
  cv::Mat img = src.clone(), ref = src.clone();
  apply_timm_augment_op({"SolarizeAdd", 1.0, 5}, hp, img, rng);
  pil_solarize_add(ref, 55, 128);
  EXPECT_TRUE(same(img, ref));
  for (const auto& [name, fn] : std::vector<std::pair<std::string, void (*)(cv::Mat&)>>{
           {"AutoContrast", pil_autocontrast}, {"Equalize", pil_equalize}, {"Invert", pil_invert}}) {
    img = src.clone();
    ref = src.clone();
    apply_timm_augment_op({name, 1.0, 9}, hp, img, rng);
    fn(ref);
    EXPECT_TRUE(same(img, ref)) << name;
  }
  EXPECT_THROW(apply_timm_augment_op({"Cutout", 1.0, 5}, hp, img, rng), Error);
}

TEST(TimmAutoAugment, MagnitudeNoiseSignAndFilterDraws) {
  // Rotate m7 with std 0.5 and a random filter: magnitude 7 + 0.5 N(0, 1) clipped, sign, then the filter.
  const cv::Mat src = noise(15, 21, 2);
  TimmAugmentParams hp;
  hp.magnitude_std = 0.5;
  int cubic = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    Rng rng(seed), copy(seed);
    cv::Mat img = src.clone();
    apply_timm_augment_op({"Rotate", 0.5, 7}, hp, img, rng);
    if (copy.uniform() > 0.5) {  // skipped: U > prob
      EXPECT_TRUE(same(img, src));
      continue;
    }
    const double m = std::min(10.0, std::max(0.0, 7 + 0.5 * copy.normal()));
    const double deg = (m / 10) * 30 * (copy.uniform() > 0.5 ? -1 : 1);
    const bool bicubic = copy.randint(0, 1) == 1;
    cubic += bicubic;
    EXPECT_TRUE(same(img, pil_rotate(src, deg, bicubic ? PilFilter::kBicubic : PilFilter::kBilinear, hp.fill)))
        << "seed " << seed;
  }
  EXPECT_GT(cubic, 2);
}

TEST(TimmAutoAugment, OpChoiceAndProbability) {
  const cv::Mat src = noise(4, 5, 3);
  TimmAugmentParams hp;
  cv::Mat white(src.size(), CV_8UC3, cv::Scalar::all(255)), black(src.size(), CV_8UC3, cv::Scalar::all(0));
  // Invert then black (Posterize to 0 bits) gives black; black then Invert gives white.
  TimmAugmentSpec spec;
  spec.ops = {{"Invert", 1.0, 0}, {"Posterize", 1.0, 0}, {"SolarizeAdd", 1.0, 10}};
  spec.num_layers = 2;
  spec.weights = {0.7, 0.3, 0.0};  // without replacement: both of non-zero weight, Invert first with p = 0.7
  int n_black = 0;
  for (uint64_t s = 0; s < 400; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    apply_timm_augment(spec, hp, img, rng);
    const bool b = same(img, black);
    EXPECT_TRUE(b || same(img, white)) << "seed " << s;
    n_black += b;
  }
  EXPECT_NEAR(n_black, 280, 46);  // 5 SD of Binomial(400, 0.7)
  // Uniform with replacement, one op of {Invert, Posterize 0}: half inverted.
  spec.weights.clear();
  spec.ops = {{"Invert", 1.0, 0}, {"Posterize", 1.0, 0}};
  spec.num_layers = 1;
  cv::Mat inverted = src.clone();
  pil_invert(inverted);
  int n_inv = 0;
  for (uint64_t s = 0; s < 400; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    apply_timm_augment(spec, hp, img, rng);
    n_inv += same(img, inverted);
  }
  EXPECT_NEAR(n_inv, 200, 50);
  // Op probability 0.5 (RandAugment's): applied about half the time.
  int applied = 0;
  for (uint64_t s = 0; s < 400; ++s) {
    cv::Mat img = src.clone();
    Rng rng(s);
    apply_timm_augment_op({"Invert", 0.5, 0}, hp, img, rng);
    applied += same(img, inverted);
  }
  EXPECT_NEAR(applied, 200, 50);
}

TEST(TimmAutoAugment, AugMixBlendsTheChainIntoTheImage) {
  // One chain of one Invert: mixed = invert(img) (weight 1), result = blend(img, mixed, m), m ~ Beta(1, 1).
  const cv::Mat src = noise(6, 9, 4);  // not square: PaddleClas's (w, h) buffer would fail here
  TimmAugmentSpec spec;
  spec.kind = TimmAugmentSpec::Kind::kAugMix;
  spec.ops = {{"Invert", 1.0, 3}};
  spec.width = 1;
  spec.depth = 1;
  cv::Mat inverted = src.clone();
  pil_invert(inverted);
  for (uint64_t s = 0; s < 5; ++s) {
    Rng rng(s), copy(s);
    cv::Mat img = src.clone();
    apply_timm_augment(spec, TimmAugmentParams{}, img, rng);
    copy.gamma(1.0);  // the Dirichlet draw of the single weight
    const float m = static_cast<float>(copy.beta(1.0, 1.0));
    EXPECT_TRUE(same(img, pil_blend(src, inverted, m))) << "seed " << s;
    spec.blended = true;  // blended mode: blend(img, chain, m · 1 / 1) — the same here
    cv::Mat b = src.clone();
    Rng rng2(s);
    apply_timm_augment(spec, TimmAugmentParams{}, b, rng2);
    EXPECT_TRUE(same(b, pil_blend(src, inverted, m))) << "seed " << s;
    spec.blended = false;
  }
}

TEST(TimmAutoAugment, TransformKeysAndDeterminism) {
  auto tp = pipeline("  - TimmAutoAugment: {config_str: rand-m7-mstd0.5-inc1, interpolation: bicubic, img_size: 224}\n");
  const cv::Mat src = noise(32, 32, 5);
  int changed = 0;
  for (uint64_t s = 0; s < 20; ++s) {
    cv::Mat a = src.clone(), b = src.clone();
    Rng r1(s), r2(s);
    tp.apply(a, r1);
    tp.apply(b, r2);
    EXPECT_TRUE(same(a, b)) << "seed " << s;  // the loader's per-sample seed decides everything
    changed += !same(a, src);
  }
  EXPECT_GT(changed, 10);  // two ops at p = 0.5: unchanged with probability 1/4 (plus identity draws)
  auto never = pipeline("  - TimmAutoAugment: {prob: 0}\n");
  cv::Mat img = src.clone();
  Rng rng(0);
  never.apply(img, rng);
  EXPECT_TRUE(same(img, src));
  auto msg = error_of([] { pipeline("  - TimmAutoAugment: {config_str: rand-m7-x2}\n"); });
  EXPECT_NE(msg.find("TimmAutoAugment.config_str"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ops.yaml:"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - TimmAutoAugment: {interpolation: lanczos}\n"); });
  EXPECT_NE(msg.find("TimmAutoAugment.interpolation"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - TimmAutoAugment: {magnitude: 3}\n"); });
  EXPECT_NE(msg.find("magnitude"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - TimmAutoAugment: {mean: [0.5, 0.5]}\n"); });
  EXPECT_NE(msg.find("TimmAutoAugment.mean"), std::string::npos) << msg;
  msg = error_of([] { pipeline("  - NormalizeImage:\n  - TimmAutoAugment:\n"); });
  EXPECT_NE(msg.find("before NormalizeImage"), std::string::npos) << msg;
  EXPECT_NO_THROW(pipeline("  - TimmAutoAugment: {config_str: augmix-m3, img_size: [224, 200], mean: [0.5, 0.5, 0.5]}\n"));
  EXPECT_NO_THROW(pipeline("  - TimmAutoAugment: {config_str: original-mstd0.5, interpolation: random}\n"));
}
