// Image transforms (`transform_ops`), PaddleClas semantics, implemented with OpenCV.
//
// The image travels as a cv::Mat, always stored HWC: CV_8UC3 after decoding, CV_32FC<C> after NormalizeImage.
// Layout ("HWC" or "CHW", changed by DecodeImage.channel_first and ToCHWImage), dtype and channel order are
// tracked when the pipeline is built, so mismatches (NormalizeImage order 'chw' on an HWC image, AugMix after
// NormalizeImage) are config errors naming the key, not crashes. Batches are always CHW (PaddleClas's datasets
// transpose HWC->CHW after the ops; an image already CHW is not transposed twice).
//
// Ops (keys and defaults as in PaddleClas):
//   DecodeImage(to_rgb=true, channel_first=false, to_np=true, backend=cv2, max_pixels=178956970)
//                                                implicit first op when absent; OpenCV decodes with either
//                                                backend. max_pixels (featlearn): larger images are bad images,
//                                                refused from the header before decoding (docs/data.md#decoding)
//   ResizeImage(size int|[w,h] | resize_short, interpolation, backend=cv2, return_numpy=true)
//                                                return_numpy false with backend pil: a PIL image follows
//   RandCropImage(size int|[w,h], scale=[0.08,1], ratio=[3/4,4/3], interpolation, use_log_aspect=false,
//                 progress_size, backend=cv2)   random area/aspect crop resized to size
//     Resizing (PaddleClas's UnifiedResize): backend cv2 = OpenCV, interpolation nearest|bilinear|area|bicubic|
//     lanczos|random, default bilinear; backend pil = Pillow 9.4's Image.resize to the bit (antialiased when
//     shrinking; include/featlearn/data/pil_ops.h), interpolation nearest|bilinear|bicubic|box|lanczos|hamming|
//     random, default bilinear (UnifiedResize passes Image.BILINEAR). random = bilinear or bicubic per image.
//   RandCropImageV2(size int|[w,h])              random crop without resize
//   CropImage(size int|[w,h])                    center crop
//   RandFlipImage(flip_code=1)                   1 horizontal, 0 vertical, -1 both; with probability 1/2
//   Pad(padding int|[lr,tb]|[l,t,r,b], fill=0 (int or [r,g,b]), padding_mode=constant|edge|reflect|symmetric,
//       backend)
//   AugMix(prob=0.5, aug_prob_coeff=0.1, mixture_width=3, mixture_depth=1 (-1: random 1..3),
//          aug_severity=1)                       ops: autocontrast, equalize, posterize, rotate, solarize,
//                                                shear_x, shear_y, translate_x, translate_y (Pillow-exact)
//   TimmAutoAugment(prob=1, config_str=rand-m9-mstd0.5-inc1, interpolation=bicubic (bilinear|random),
//                   img_size=224 (int or list), mean=[0.485,0.456,0.406])   include/featlearn/data/autoaugment.h
//   paddle.vision ops (size is [h, w]; Pillow for PIL images, OpenCV for arrays; keys: absent or [image]):
//   Resize(size int (shorter side) | [h,w], interpolation=bilinear, keys)
//   RandomResizedCrop(size int|[h,w], scale=[0.08,1], ratio=[3/4,4/3], interpolation=bilinear, keys)
//   CenterCrop(size int|[h,w], keys)     RandomHorizontalFlip(prob=0.5, keys)
//   RandomCrop(size int|[h,w], padding (as Pad), pad_if_needed=false, fill=0, padding_mode=constant, keys)
//   ColorJitter(prob=2, brightness=0, contrast=0, saturation=0, hue=0, keys)  random order of the four
//   RandomRotation(prob=0.5, degrees, interpolation=nearest|bilinear|bicubic, expand=false, center, fill=0,
//                  keys)
//   NormalizeImage(scale=1/255, mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225], order='chw' (''|hwc|chw),
//                  output_fp16=false, channel_num=3 (4 appends a zero channel))
//   ToCHWImage()
//   ToTensor(data_format=CHW)                   paddle.vision op: uint8 -> float / 255 (and CHW)
//   Normalize(mean=0, std=1, data_format=CHW, to_rgb=false)   paddle.vision op: (x - mean) / std
//   RandomErasing(EPSILON=0.5, sl=0.02, sh=0.4, r1=0.3, mean=[0,0,0], attempt=100, use_log_aspect=false,
//                 mode=const|rand|pixel)
// Numbers given as strings ("1.0/255.0") are evaluated as a/b, as PaddleClas's eval() would.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>
#include <featlearn/data/rng.h>

#include <opencv2/core.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace featlearn {

// What the pipeline knows about the image between ops (checked when the pipeline is built).
struct ImageState {
  bool is_float = false;  // after NormalizeImage
  bool chw = false;       // logical layout; the Mat stays HWC
  bool rgb = true;        // channel order (DecodeImage.to_rgb)
  int channels = 3;
  // The image is a PIL image in PaddleClas (dataset backend pil; ResizeImage backend pil with return_numpy:
  // False): paddle.vision's ops (Resize, RandomResizedCrop) then resize with Pillow instead of OpenCV.
  bool pil = false;
};

class Transform {
 public:
  virtual ~Transform() = default;
  // Transforms `img` in place (it may be replaced). Throws featlearn::Error on impossible inputs (e.g. a crop
  // larger than the image).
  virtual void apply(cv::Mat& img, Rng& rng) const = 0;
  virtual std::string name() const = 0;
};

// DecodeImage.max_pixels default: the size at which Pillow refuses an image (DecompressionBombError, twice its
// MAX_IMAGE_PIXELS), about 179 megapixels, 537 MB decoded.
constexpr int64_t kDefaultMaxImagePixels = 178956970;

class TransformPipeline {
 public:
  // `ops` is a transform_ops list node (may be undefined or null: decode only). `pil_input`: the dataset hands
  // PIL images to the ops (its `backend: pil`), see ImageState::pil.
  static TransformPipeline create(const ConfigNode& ops, bool pil_input = false);

  // Reads and decodes an image file (DecodeImage semantics). Throws BadImageError naming the file when it
  // cannot be read or decoded, is a truncated PNG/JPEG, or has more than DecodeImage.max_pixels pixels.
  cv::Mat decode(const std::string& path) const;
  // Decodes an in-memory encoded image (same semantics and errors); `what` names it in errors. OpenCV's own
  // pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 unless set in the environment at start) also applies.
  cv::Mat decode_bytes(const void* data, size_t size, const std::string& what) const;
  // Applies the ops after DecodeImage.
  void apply(cv::Mat& img, Rng& rng) const;
  // decode + crop to `box` (when given) + apply.
  cv::Mat run(const std::string& path, Rng& rng, const BBox* box = nullptr) const;

  const ImageState& output_state() const { return out_; }
  size_t num_ops() const { return ops_.size(); }
  int64_t max_pixels() const { return max_pixels_; }

 private:
  bool to_rgb_ = true;
  int64_t max_pixels_ = kDefaultMaxImagePixels;
  std::vector<std::shared_ptr<const Transform>> ops_;
  ImageState out_;
};

// An image file that is missing, unreadable or not decodable.
class BadImageError : public Error {
 public:
  using Error::Error;
};

std::vector<std::string> transform_names();

// Writes an HWC image (CV_8UC* or CV_32FC*) as CHW float32 into `dst` (C*H*W floats).
void hwc_to_chw_float(const cv::Mat& img, float* dst);

}  // namespace featlearn
