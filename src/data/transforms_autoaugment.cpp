// TimmAutoAugment: PaddleClas's port of timm's RandAugment / AugMix / AutoAugment (include/featlearn/data/
// autoaugment.h has the config_str grammar). Every op is a PIL operation in PaddleClas and runs here through the
// Pillow-exact functions of include/featlearn/data/pil_ops.h, so that an op with a given magnitude, sign and
// filter gives Pillow's pixels (docs/data.md#timmautoaugment). The random draws come from the loader's per-sample
// Rng (uniform for probabilities and signs, normal for the magnitude noise, gamma for AugMix's Dirichlet/Beta).
#include <featlearn/common/error.h>
#include <featlearn/data/autoaugment.h>

#include "transforms_internal.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <set>

namespace featlearn {
namespace {

constexpr double kMaxLevel = 10.0;

bool negate(Rng& rng) { return rng.uniform() > 0.5; }  // timm's _randomly_negate: negative with probability 1/2
double signed_level(double v, Rng& rng) { return negate(rng) ? -v : v; }

PilFilter draw_filter(const TimmAugmentParams& hp, Rng& rng) {
  if (hp.filter) return *hp.filter;
  return rng.randint(0, 1) == 1 ? PilFilter::kBicubic : PilFilter::kBilinear;  // random.choice((BILINEAR, BICUBIC))
}

enum class Enhance { kFixed, kIncreasing };

// Factor of the ImageEnhance ops: [0.1, 1.9] growing with the level, or 1 ± 0.9 · level / 10 (increasing).
double enhance_factor(double level, Enhance e, Rng& rng) {
  if (e == Enhance::kFixed) return (level / kMaxLevel) * 1.8 + 0.1;
  return 1.0 + signed_level((level / kMaxLevel) * 0.9, rng);
}

using OpFn = std::function<void(cv::Mat&, double level, const TimmAugmentParams&, Rng&)>;

void posterize_bits(cv::Mat& img, int bits) {
  if (bits < 8) pil_posterize(img, bits);
}

OpFn enhance_op(PilEnhance kind, Enhance e) {
  return [kind, e](cv::Mat& img, double level, const TimmAugmentParams&, Rng& rng) {
    pil_enhance(img, kind, enhance_factor(level, e, rng));
  };
}

// Affine ops: the level's sign is drawn before the filter, as in timm (level_fn, then _check_args_tf).
OpFn affine_op(std::function<std::array<double, 6>(double v, const cv::Mat&, const TimmAugmentParams&)> data,
               std::function<double(double level, const TimmAugmentParams&)> scale) {
  return [data, scale](cv::Mat& img, double level, const TimmAugmentParams& hp, Rng& rng) {
    const double v = signed_level(scale(level, hp), rng);
    const PilFilter f = draw_filter(hp, rng);
    img = pil_affine(img, data(v, img, hp), f, hp.fill);
  };
}

const std::map<std::string, OpFn>& op_table() {
  static const std::map<std::string, OpFn> table = [] {
    std::map<std::string, OpFn> t;
    t["AutoContrast"] = [](cv::Mat& img, double, const TimmAugmentParams&, Rng&) { pil_autocontrast(img); };
    t["Equalize"] = [](cv::Mat& img, double, const TimmAugmentParams&, Rng&) { pil_equalize(img); };
    t["Invert"] = [](cv::Mat& img, double, const TimmAugmentParams&, Rng&) { pil_invert(img); };
    t["Rotate"] = [](cv::Mat& img, double level, const TimmAugmentParams& hp, Rng& rng) {
      const double deg = signed_level((level / kMaxLevel) * 30.0, rng);
      const PilFilter f = draw_filter(hp, rng);
      img = pil_rotate(img, deg, f, hp.fill);
    };
    // Posterize: keep int(level / 10 · 4) bits; Increasing: 4 minus that; Original: that plus 4.
    t["Posterize"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      posterize_bits(img, static_cast<int>((level / kMaxLevel) * 4));
    };
    t["PosterizeIncreasing"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      posterize_bits(img, 4 - static_cast<int>((level / kMaxLevel) * 4));
    };
    t["PosterizeOriginal"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      posterize_bits(img, static_cast<int>((level / kMaxLevel) * 4) + 4);
    };
    t["Solarize"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      pil_solarize(img, static_cast<int>((level / kMaxLevel) * 256));
    };
    t["SolarizeIncreasing"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      pil_solarize(img, 256 - static_cast<int>((level / kMaxLevel) * 256));
    };
    t["SolarizeAdd"] = [](cv::Mat& img, double level, const TimmAugmentParams&, Rng&) {
      pil_solarize_add(img, static_cast<int>((level / kMaxLevel) * 110), 128);
    };
    t["Color"] = enhance_op(PilEnhance::kColor, Enhance::kFixed);
    t["ColorIncreasing"] = enhance_op(PilEnhance::kColor, Enhance::kIncreasing);
    t["Contrast"] = enhance_op(PilEnhance::kContrast, Enhance::kFixed);
    t["ContrastIncreasing"] = enhance_op(PilEnhance::kContrast, Enhance::kIncreasing);
    t["Brightness"] = enhance_op(PilEnhance::kBrightness, Enhance::kFixed);
    t["BrightnessIncreasing"] = enhance_op(PilEnhance::kBrightness, Enhance::kIncreasing);
    t["Sharpness"] = enhance_op(PilEnhance::kSharpness, Enhance::kFixed);
    t["SharpnessIncreasing"] = enhance_op(PilEnhance::kSharpness, Enhance::kIncreasing);
    auto shear = [](double level, const TimmAugmentParams&) { return (level / kMaxLevel) * 0.3; };
    auto abs_px = [](double level, const TimmAugmentParams& hp) { return (level / kMaxLevel) * hp.translate_const; };
    auto rel = [](double level, const TimmAugmentParams& hp) { return (level / kMaxLevel) * hp.translate_pct; };
    using Data = std::array<double, 6>;
    t["ShearX"] = affine_op([](double v, const cv::Mat&, const TimmAugmentParams&) { return Data{1, v, 0, 0, 1, 0}; },
                            shear);
    t["ShearY"] = affine_op([](double v, const cv::Mat&, const TimmAugmentParams&) { return Data{1, 0, 0, v, 1, 0}; },
                            shear);
    t["TranslateX"] = affine_op(
        [](double v, const cv::Mat&, const TimmAugmentParams&) { return Data{1, 0, v, 0, 1, 0}; }, abs_px);
    t["TranslateY"] = affine_op(
        [](double v, const cv::Mat&, const TimmAugmentParams&) { return Data{1, 0, 0, 0, 1, v}; }, abs_px);
    t["TranslateXRel"] = affine_op(
        [](double v, const cv::Mat& img, const TimmAugmentParams&) { return Data{1, 0, v * img.cols, 0, 1, 0}; }, rel);
    t["TranslateYRel"] = affine_op(
        [](double v, const cv::Mat& img, const TimmAugmentParams&) { return Data{1, 0, 0, 0, 1, v * img.rows}; }, rel);
    return t;
  }();
  return table;
}

// timm's op lists and RandAugment's choice weights (by position; the weights follow the non-increasing names).
const std::vector<std::string> kRandOps = {"AutoContrast", "Equalize", "Invert", "Rotate", "Posterize",
                                           "Solarize", "SolarizeAdd", "Color", "Contrast", "Brightness",
                                           "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"};
const std::vector<std::string> kRandIncreasingOps = {
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel"};
const std::vector<double> kRandWeights0 = {0.025, 0.005, 0,     0.3,   0,   0.005, 0.005, 0.025,
                                           0.005, 0.005, 0.025, 0.2,   0.2, 0.1,   0.1};
const std::vector<std::string> kAugMixOps = {
    "AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel"};

using Policy = std::vector<std::vector<TimmAugmentOp>>;

const Policy kPolicyV0 = {
    {{"Equalize", 0.8, 1}, {"ShearY", 0.8, 4}},       {{"Color", 0.4, 9}, {"Equalize", 0.6, 3}},
    {{"Color", 0.4, 1}, {"Rotate", 0.6, 8}},          {{"Solarize", 0.8, 3}, {"Equalize", 0.4, 7}},
    {{"Solarize", 0.4, 2}, {"Solarize", 0.6, 2}},     {{"Color", 0.2, 0}, {"Equalize", 0.8, 8}},
    {{"Equalize", 0.4, 8}, {"SolarizeAdd", 0.8, 3}},  {{"ShearX", 0.2, 9}, {"Rotate", 0.6, 8}},
    {{"Color", 0.6, 1}, {"Equalize", 1.0, 2}},        {{"Invert", 0.4, 9}, {"Rotate", 0.6, 0}},
    {{"Equalize", 1.0, 9}, {"ShearY", 0.6, 3}},       {{"Color", 0.4, 7}, {"Equalize", 0.6, 0}},
    {{"Posterize", 0.4, 6}, {"AutoContrast", 0.4, 7}}, {{"Solarize", 0.6, 8}, {"Color", 0.6, 9}},
    {{"Solarize", 0.2, 4}, {"Rotate", 0.8, 9}},       {{"Rotate", 1.0, 7}, {"TranslateYRel", 0.8, 9}},
    {{"ShearX", 0.0, 0}, {"Solarize", 0.8, 4}},       {{"ShearY", 0.8, 0}, {"Color", 0.6, 4}},
    {{"Color", 1.0, 0}, {"Rotate", 0.6, 2}},          {{"Equalize", 0.8, 4}, {"Equalize", 0.0, 8}},
    {{"Equalize", 1.0, 4}, {"AutoContrast", 0.6, 2}}, {{"ShearY", 0.4, 7}, {"SolarizeAdd", 0.6, 7}},
    {{"Posterize", 0.8, 2}, {"Solarize", 0.6, 10}},   {{"Solarize", 0.6, 8}, {"Equalize", 0.6, 1}},
    {{"Color", 0.8, 6}, {"Rotate", 0.4, 5}},
};

const Policy kPolicyOriginal = {
    {{"PosterizeOriginal", 0.4, 8}, {"Rotate", 0.6, 9}},
    {{"Solarize", 0.6, 5}, {"AutoContrast", 0.6, 5}},
    {{"Equalize", 0.8, 8}, {"Equalize", 0.6, 3}},
    {{"PosterizeOriginal", 0.6, 7}, {"PosterizeOriginal", 0.6, 6}},
    {{"Equalize", 0.4, 7}, {"Solarize", 0.2, 4}},
    {{"Equalize", 0.4, 4}, {"Rotate", 0.8, 8}},
    {{"Solarize", 0.6, 3}, {"Equalize", 0.6, 7}},
    {{"PosterizeOriginal", 0.8, 5}, {"Equalize", 1.0, 2}},
    {{"Rotate", 0.2, 3}, {"Solarize", 0.6, 8}},
    {{"Equalize", 0.6, 8}, {"PosterizeOriginal", 0.4, 6}},
    {{"Rotate", 0.8, 8}, {"Color", 0.4, 0}},
    {{"Rotate", 0.4, 9}, {"Equalize", 0.6, 2}},
    {{"Equalize", 0.0, 7}, {"Equalize", 0.8, 8}},
    {{"Invert", 0.6, 4}, {"Equalize", 1.0, 8}},
    {{"Color", 0.6, 4}, {"Contrast", 1.0, 8}},
    {{"Rotate", 0.8, 8}, {"Color", 1.0, 2}},
    {{"Color", 0.8, 8}, {"Solarize", 0.8, 7}},
    {{"Sharpness", 0.4, 7}, {"Invert", 0.6, 8}},
    {{"ShearX", 0.6, 5}, {"Equalize", 1.0, 9}},
    {{"Color", 0.4, 0}, {"Equalize", 0.6, 3}},
    {{"Equalize", 0.4, 7}, {"Solarize", 0.2, 4}},
    {{"Solarize", 0.6, 5}, {"AutoContrast", 0.6, 5}},
    {{"Invert", 0.6, 4}, {"Equalize", 1.0, 8}},
    {{"Color", 0.6, 4}, {"Contrast", 1.0, 8}},
    {{"Equalize", 0.8, 8}, {"Equalize", 0.6, 3}},
};

// v0r / originalr: the policy with its Posterize variant replaced by PosterizeIncreasing.
Policy renamed(Policy p, const std::string& from) {
  for (auto& sub : p)
    for (auto& op : sub)
      if (op.name == from) op.name = "PosterizeIncreasing";
  return p;
}

int parse_int(const std::string& section, const std::string& key, const std::string& val) {
  if (val.empty() || !std::all_of(val.begin(), val.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) ||
      val.size() > 6)
    throw Error(fmt::format("section '{}': '{}' takes an integer, got '{}'", section, key, val));
  return std::stoi(val);
}

double parse_float(const std::string& section, const std::string& key, const std::string& val) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(val, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != val.size() || !std::isfinite(v))
    throw Error(fmt::format("section '{}': '{}' takes a number, got '{}'", section, key, val));
  return v;
}

}  // namespace

TimmAugmentSpec parse_timm_augment(const std::string& config_str) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t dash = config_str.find('-', start);
    parts.push_back(config_str.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  const std::string variant = parts[0];
  TimmAugmentSpec spec;
  std::set<std::string> valid;
  if (variant == "rand") {
    spec.kind = TimmAugmentSpec::Kind::kRand;
    valid = {"m", "n", "w", "mstd", "inc"};
  } else if (variant == "augmix") {
    spec.kind = TimmAugmentSpec::Kind::kAugMix;
    valid = {"m", "w", "d", "a", "b", "mstd"};
  } else if (variant == "v0" || variant == "v0r" || variant == "original" || variant == "originalr") {
    spec.kind = TimmAugmentSpec::Kind::kAuto;
    valid = {"mstd"};
  } else if (variant.rfind("auto", 0) == 0) {
    throw Error(fmt::format("'{}': name the AutoAugment policy first, as timm does: v0, v0r, original or "
                            "originalr (e.g. original-mstd0.5; PaddleClas's 'auto…' strings reach no policy)",
                            config_str));
  } else {
    throw Error(fmt::format("'{}' starts with '{}'; expected rand, augmix, or an AutoAugment policy (v0, v0r, "
                            "original, originalr)",
                            config_str, variant));
  }
  double magnitude = variant == "augmix" ? 3 : kMaxLevel;
  bool increasing = false;
  std::optional<int> weight_idx;
  std::set<std::string> seen;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& c = parts[i];
    const size_t digit = c.find_first_of("0123456789");
    if (digit == std::string::npos)
      throw Error(fmt::format("'{}': section '{}' has no value (write key and number, e.g. m9)", config_str, c));
    const std::string key = c.substr(0, digit), val = c.substr(digit);
    if (!valid.count(key)) {
      std::string list;
      for (const auto& k : valid) list += (list.empty() ? "" : ", ") + k;
      throw Error(fmt::format("'{}': unknown section '{}' for {} (valid: {})", config_str, key.empty() ? c : key,
                              variant, list));
    }
    if (!seen.insert(key).second)
      throw Error(fmt::format("'{}': section '{}' is given twice", config_str, key));
    if (key == "mstd") {
      spec.magnitude_std = parse_float(c, key, val);
      if (spec.magnitude_std < 0) throw Error(fmt::format("'{}': mstd must be >= 0", config_str));
    } else if (key == "inc") {
      increasing = parse_int(c, key, val) != 0;
    } else if (key == "m") {
      magnitude = parse_int(c, key, val);
    } else if (key == "n") {
      spec.num_layers = parse_int(c, key, val);
    } else if (key == "w" && spec.kind == TimmAugmentSpec::Kind::kRand) {
      weight_idx = parse_int(c, key, val);
      if (*weight_idx != 0)
        throw Error(fmt::format("'{}': w{} names no weight set (only w0 exists)", config_str, *weight_idx));
    } else if (key == "w") {
      spec.width = parse_int(c, key, val);
      if (spec.width < 1) throw Error(fmt::format("'{}': the AugMix width w must be at least 1", config_str));
    } else if (key == "d") {
      spec.depth = parse_int(c, key, val);
      if (spec.depth == 0) spec.depth = -1;  // timm: a depth that is not positive draws 1..3 per chain
    } else if (key == "a") {
      spec.alpha = parse_float(c, key, val);
      if (spec.alpha <= 0) throw Error(fmt::format("'{}': alpha a must be positive", config_str));
    } else if (key == "b") {
      spec.blended = parse_int(c, key, val) != 0;
    }
  }
  if (spec.kind == TimmAugmentSpec::Kind::kRand) {
    for (const auto& name : increasing ? kRandIncreasingOps : kRandOps) spec.ops.push_back({name, 0.5, magnitude});
    if (weight_idx) {
      spec.weights = kRandWeights0;
      const auto nonzero = std::count_if(spec.weights.begin(), spec.weights.end(), [](double w) { return w > 0; });
      if (spec.num_layers > nonzero)
        throw Error(fmt::format("'{}': with w0 the {} ops are drawn without replacement from the {} ops of non-zero "
                                "weight; n must be at most {}",
                                config_str, spec.num_layers, nonzero, nonzero));
    }
  } else if (spec.kind == TimmAugmentSpec::Kind::kAugMix) {
    for (const auto& name : kAugMixOps) spec.ops.push_back({name, 1.0, magnitude});
  } else {
    if (variant == "v0") spec.policy = kPolicyV0;
    else if (variant == "v0r") spec.policy = renamed(kPolicyV0, "Posterize");
    else if (variant == "original") spec.policy = kPolicyOriginal;
    else spec.policy = renamed(kPolicyOriginal, "PosterizeOriginal");
  }
  return spec;
}

void apply_timm_augment_op(const TimmAugmentOp& op, const TimmAugmentParams& hp, cv::Mat& img, Rng& rng) {
  const auto& table = op_table();
  const auto it = table.find(op.name);
  if (it == table.end()) throw Error(fmt::format("unknown TimmAutoAugment op '{}'", op.name));
  if (op.prob < 1.0 && rng.uniform() > op.prob) return;
  double magnitude = op.magnitude;
  if (hp.magnitude_std > 0) magnitude += hp.magnitude_std * rng.normal();  // random.gauss(magnitude, std)
  magnitude = std::min(kMaxLevel, std::max(0.0, magnitude));
  it->second(img, magnitude, hp, rng);
}

namespace {

// Dirichlet(alpha, ..., alpha) of `n` components, as float32 (timm casts numpy's draw).
std::vector<float> dirichlet(int n, double alpha, Rng& rng) {
  std::vector<double> g(static_cast<size_t>(n));
  double sum = 0;
  for (auto& v : g) sum += (v = rng.gamma(alpha));
  std::vector<float> w(g.size());
  for (size_t i = 0; i < g.size(); ++i) w[i] = static_cast<float>(sum > 0 ? g[i] / sum : 1.0 / n);
  return w;
}

cv::Mat augmix_chain(const TimmAugmentSpec& spec, const TimmAugmentParams& hp, const cv::Mat& img, Rng& rng) {
  const int depth = spec.depth > 0 ? spec.depth : static_cast<int>(rng.randint(1, 3));
  cv::Mat aug = img.clone();
  for (int d = 0; d < depth; ++d) apply_timm_augment_op(spec.ops[rng.below(spec.ops.size())], hp, aug, rng);
  return aug;
}

void apply_augmix(const TimmAugmentSpec& spec, const TimmAugmentParams& hp, cv::Mat& img, Rng& rng) {
  const std::vector<float> ws = dirichlet(spec.width, spec.alpha, rng);
  const float m = static_cast<float>(rng.beta(spec.alpha, spec.alpha));
  if (spec.blended) {
    // One blend per chain with weights that make the chains' shares m · ws overall.
    std::vector<float> rws(ws.size());
    double cump = 1.0;
    for (size_t k = ws.size(); k-- > 0;) {
      const double alpha = static_cast<double>(ws[k] * m) / cump;
      cump *= 1.0 - alpha;
      rws[k] = static_cast<float>(alpha);
    }
    const cv::Mat orig = img.clone();
    for (const float w : rws) img = pil_blend(img, augmix_chain(spec, hp, orig, rng), w);
    return;
  }
  // The chains' weighted sum in float32, clipped and truncated to uint8, blended with the image by m.
  // (PaddleClas allocates this sum as (width, height, 3), which fails unless the image is square.)
  cv::Mat mixed(img.size(), CV_32FC3, cv::Scalar::all(0));
  for (const float mw : ws) {
    const cv::Mat aug = augmix_chain(spec, hp, img, rng);
    for (int y = 0; y < img.rows; ++y) {
      const uchar* a = aug.ptr<uchar>(y);
      float* o = mixed.ptr<float>(y);
      for (int i = 0; i < img.cols * 3; ++i) o[i] += mw * static_cast<float>(a[i]);
    }
  }
  cv::Mat mixed8(img.size(), CV_8UC3);
  for (int y = 0; y < img.rows; ++y) {
    const float* s = mixed.ptr<float>(y);
    uchar* o = mixed8.ptr<uchar>(y);
    for (int i = 0; i < img.cols * 3; ++i) o[i] = static_cast<uchar>(std::clamp(s[i], 0.0f, 255.0f));
  }
  img = pil_blend(img, mixed8, m);
}

}  // namespace

void apply_timm_augment(const TimmAugmentSpec& spec, const TimmAugmentParams& hp, cv::Mat& img, Rng& rng) {
  switch (spec.kind) {
    case TimmAugmentSpec::Kind::kRand: {
      const size_t n = spec.ops.size();
      if (spec.weights.empty()) {  // with replacement, uniform
        for (int k = 0; k < spec.num_layers; ++k) apply_timm_augment_op(spec.ops[rng.below(n)], hp, img, rng);
        return;
      }
      // Weighted, without replacement: each pick proportional to the weights of the ops not picked yet.
      std::vector<double> w = spec.weights;
      std::vector<size_t> picks;
      for (int k = 0; k < spec.num_layers; ++k) {
        double total = 0;
        for (double v : w) total += v;
        double u = rng.uniform() * total;
        size_t j = 0;
        while (j + 1 < n && (w[j] == 0 || u >= w[j])) {
          u -= w[j];
          ++j;
        }
        while (w[j] == 0) --j;  // rounding at the end of the range: the last op of non-zero weight
        picks.push_back(j);
        w[j] = 0;
      }
      for (size_t j : picks) apply_timm_augment_op(spec.ops[j], hp, img, rng);
      return;
    }
    case TimmAugmentSpec::Kind::kAugMix:
      apply_augmix(spec, hp, img, rng);
      return;
    case TimmAugmentSpec::Kind::kAuto:
      for (const auto& op : spec.policy[rng.below(spec.policy.size())]) apply_timm_augment_op(op, hp, img, rng);
      return;
  }
}

namespace transform_detail {
namespace {

// PaddleClas's TimmAutoAugment op: with probability `prob`, the augmentation of `config_str`, with timm's hparams
// from img_size (translate_const = int(0.45 · min size)), mean (fill colour round(255 · mean)) and interpolation.
class TimmAutoAugment : public Transform {
 public:
  explicit TimmAutoAugment(const ConfigNode& p) {
    p.check_keys({"prob", "config_str", "interpolation", "img_size", "mean"});
    prob_ = number_or(p, "prob", 1.0);
    const std::string config_str = p.get<std::string>("config_str", "rand-m9-mstd0.5-inc1");
    try {
      spec_ = parse_timm_augment(config_str);
    } catch (const Error& e) {
      (p["config_str"].defined() ? p["config_str"] : p).fail(e.what());
    }
    hp_.magnitude_std = spec_.magnitude_std;
    if (spec_.kind == TimmAugmentSpec::Kind::kAugMix) hp_.translate_pct = 0.3;
    int img_size_min = 224;
    auto sz = p["img_size"];
    if (sz.defined()) {
      if (sz.is_scalar()) {
        img_size_min = sz.as<int>();
      } else {
        const auto v = sz.as<std::vector<int>>();
        if (v.empty()) sz.fail("expected an int or a list of ints");
        img_size_min = *std::min_element(v.begin(), v.end());
      }
      if (img_size_min <= 0) sz.fail("img_size must be positive");
    }
    hp_.translate_const = static_cast<int>(img_size_min * 0.45);
    std::vector<double> mean = {0.485, 0.456, 0.406};
    if (p["mean"].defined()) {
      mean = numbers(p["mean"]);
      if (mean.size() != 3) p["mean"].fail("expected 3 values (one per channel)");
    }
    for (int c = 0; c < 3; ++c) hp_.fill[c] = std::clamp(std::nearbyint(255 * mean[static_cast<size_t>(c)]), 0.0, 255.0);
    auto in = p["interpolation"];
    const std::string interp = in.defined() ? in.as<std::string>() : "";
    if (interp == "bicubic") hp_.filter = PilFilter::kBicubic;
    else if (interp == "bilinear") hp_.filter = PilFilter::kBilinear;
    else if (!interp.empty() && interp != "random")
      in.fail("expected bicubic, bilinear or random (timm's ops transform with Pillow, which takes only these; "
              "PaddleClas maps other names to bilinear or fails)" +
              did_you_mean(interp, {"bicubic", "bilinear", "random"}));
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (!(rng.uniform() < prob_)) return;
    apply_timm_augment(spec_, hp_, img, rng);
  }
  std::string name() const override { return "TimmAutoAugment"; }

 private:
  double prob_;
  TimmAugmentSpec spec_;
  TimmAugmentParams hp_;
};

}  // namespace

void add_autoaugment_ops(TransformRegistry& r) {
  r.add("TimmAutoAugment", [](const ConfigNode& p, ImageState* st) {
    require_uint8(p, *st, "TimmAutoAugment");
    if (st->channels != 3) p.fail("TimmAutoAugment works on 3-channel images");
    st->pil = false;  // returns an array
    return std::make_shared<TimmAutoAugment>(p);
  });
}

}  // namespace transform_detail
}  // namespace featlearn
