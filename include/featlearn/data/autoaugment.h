// TimmAutoAugment (PaddleClas's port of timm's auto_augment): RandAugment, AugMix and AutoAugment over the
// Pillow-exact ops of include/featlearn/data/pil_ops.h. The transform op reads its YAML keys (transforms.h); this
// header exposes the `config_str` grammar and the single ops so that they can be tested on their own.
//
// config_str (sections joined by '-'; a section is a key followed by its value, which starts at its first digit):
//   rand[-m<int>][-n<int>][-w<int>][-mstd<float>][-inc<int>]   RandAugment: magnitude m (10), n ops per image (2),
//       w weight set index (only 0: a weighted choice without replacement), mstd magnitude std-dev (0),
//       inc 1 = the "increasing" op variants. Each op runs with probability 0.5.
//   augmix[-m<int>][-w<int>][-d<int>][-a<float>][-b<int>][-mstd<float>]   AugMix: severity m (3), width w (3),
//       depth d (-1 = 1..3 per chain), Dirichlet/Beta alpha a (1), b 1 = blended mode, mstd (0).
//   v0 | v0r | original | originalr [-mstd<float>]   AutoAugment policy (a sub-policy drawn per image).
// Errors (featlearn::Error): unknown variant or section, a section without a value, a malformed number.
#pragma once
#include <featlearn/data/pil_ops.h>
#include <featlearn/data/rng.h>

#include <opencv2/core.hpp>

#include <optional>
#include <string>
#include <vector>

namespace featlearn {

// timm's op names: AutoContrast, Equalize, Invert, Rotate, Posterize, PosterizeIncreasing, PosterizeOriginal,
// Solarize, SolarizeIncreasing, SolarizeAdd, Color, ColorIncreasing, Contrast, ContrastIncreasing, Brightness,
// BrightnessIncreasing, Sharpness, SharpnessIncreasing, ShearX, ShearY, TranslateX, TranslateY, TranslateXRel,
// TranslateYRel.
struct TimmAugmentOp {
  std::string name;
  double prob = 0.5;
  double magnitude = 10;
};

// timm's hparams.
struct TimmAugmentParams {
  double translate_const = 250;  // TranslateX/Y: pixels at magnitude 10 (TimmAutoAugment: 0.45 · min(img_size))
  double translate_pct = 0.45;   // TranslateX/YRel: fraction of the size at magnitude 10 (AugMix: 0.3)
  cv::Scalar fill{128, 128, 128};  // fill colour of the geometric ops, in the image's channel order
  std::optional<PilFilter> filter;  // kBilinear or kBicubic; nullopt: either, drawn per op
  double magnitude_std = 0;         // > 0: magnitude ~ N(magnitude, std) per op, clipped to [0, 10]
};

struct TimmAugmentSpec {
  enum class Kind { kRand, kAugMix, kAuto } kind = Kind::kRand;
  std::vector<TimmAugmentOp> ops;                   // rand, augmix
  std::vector<std::vector<TimmAugmentOp>> policy;   // auto: the sub-policies
  int num_layers = 2;                               // rand
  std::vector<double> weights;                      // rand with w: per-op choice weights (sum 1)
  int width = 3, depth = -1;                        // augmix
  double alpha = 1;                                 // augmix
  bool blended = false;                             // augmix
  double magnitude_std = 0;
};

// Parses config_str. `translate_pct` of the result's AugMix is the caller's to set (TimmAutoAugment: 0.3).
TimmAugmentSpec parse_timm_augment(const std::string& config_str);

// One op, as timm's AugmentOp.__call__: skipped unless U[0,1) <= prob (for prob < 1), magnitude noise, level
// arguments (signs drawn with probability 1/2), interpolation drawn when params.filter is unset.
// Requires: img is CV_8UC3. Throws featlearn::Error for an unknown op name.
void apply_timm_augment_op(const TimmAugmentOp& op, const TimmAugmentParams& params, cv::Mat& img, Rng& rng);

// The whole augmentation (RandAugment, AugMix or AutoAugment) on one image.
void apply_timm_augment(const TimmAugmentSpec& spec, const TimmAugmentParams& params, cv::Mat& img, Rng& rng);

}  // namespace featlearn
