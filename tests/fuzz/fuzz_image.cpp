// Target `image`: encoded image bytes through the service's header probe (probe_image), the decoder
// (TransformPipeline::decode_bytes, as the loader and the service decode) and a transform pipeline, ending in
// the CHW float layout batches use (docs/testing.md).
//
// Input: one selector byte choosing the pipeline (0 the ReID training ops, 1 AugMix / ColorJitter /
// RandomRotation / RandCropImage / ToTensor / Normalize, 2 the evaluation ops with BGR decoding, 3 decode only;
// larger values wrap around), then the image file. Besides crashes, a decoded image with more pixels than
// probe_image() reported is a finding: the service's max_pixels check relies on the probe.
// scripts/fuzz.sh sets OPENCV_IO_MAX_IMAGE_PIXELS (OpenCV reads it when it loads) so a decompression bomb
// ends in OpenCV's own limit instead of gigabytes.
#include "fuzz_common.h"

#include <featlearn/config/config.h>
#include <featlearn/data/transforms.h>
#include <featlearn/data/image_probe.h>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstring>
#include <memory>

namespace featlearn::fuzz {
namespace image_target {

const char* const kPipelines[] = {
    // configs/Vehicle/ResNet50_ReID.yaml's training ops, at a small size.
    "- DecodeImage: {to_rgb: True, channel_first: False}\n"
    "- ResizeImage: {size: [40, 32], interpolation: bilinear}\n"
    "- RandFlipImage: {flip_code: 1}\n"
    "- Pad: {padding: 3, fill: 0}\n"
    "- RandCropImageV2: {size: [40, 32]}\n"
    "- NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}\n"
    "- RandomErasing: {EPSILON: 1.0, sl: 0.02, sh: 0.4, r1: 0.3, mean: [0.4914, 0.4822, 0.4465], mode: pixel}\n",
    "- DecodeImage: {to_rgb: True}\n"
    "- RandCropImage: {size: 24, scale: [0.2, 1.0], interpolation: random}\n"
    "- AugMix: {prob: 1.0, mixture_depth: -1, aug_severity: 3}\n"
    "- ColorJitter: {prob: 1.0, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}\n"
    "- RandomRotation: {prob: 1.0, degrees: 20, expand: True, interpolation: bilinear}\n"
    "- ToTensor: {}\n"
    "- Normalize: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n",
    "- DecodeImage: {to_rgb: False}\n"
    "- ResizeImage: {resize_short: 36}\n"
    "- CropImage: {size: 32}\n"
    "- ToCHWImage: {}\n"
    "- NormalizeImage: {scale: 1.0/255.0, order: chw, channel_num: 4}\n",
    "- DecodeImage: {to_rgb: True}\n",
};
constexpr size_t kNumPipelines = sizeof(kPipelines) / sizeof(kPipelines[0]);

std::vector<std::unique_ptr<TransformPipeline>> g_pipelines;

// The transforms run on images up to this size (one input stays in milliseconds).
constexpr int64_t kMaxTransformPixels = 1 << 20;

}  // namespace image_target

void image_init() {
  using namespace image_target;
  if (!std::getenv("OPENCV_IO_MAX_IMAGE_PIXELS"))
    std::fprintf(stderr, "fuzz_image: OPENCV_IO_MAX_IMAGE_PIXELS is not set; scripts/fuzz.sh sets it\n");
  for (const char* p : kPipelines) {
    std::string yaml = "transform_ops:\n";
    for (const char* l = p; *l;) {
      const char* e = std::strchr(l, '\n');
      yaml += "  " + std::string(l, e - l) + "\n";
      l = e + 1;
    }
    const Config c = Config::from_string(yaml, "pipeline.yaml");
    g_pipelines.push_back(std::make_unique<TransformPipeline>(TransformPipeline::create(c["transform_ops"])));
  }
}

void image_run(const uint8_t* data, size_t size) {
  using namespace image_target;
  if (size == 0) return;
  const TransformPipeline& pipeline = *g_pipelines[data[0] % kNumPipelines];
  const uint8_t* bytes = data + 1;
  const size_t n = size - 1;
  const auto probe = probe_image(bytes, n);
  cv::Mat img;
  expect_user_errors("decode_bytes", [&] { img = pipeline.decode_bytes(bytes, n, "fuzz input"); });
  if (img.empty()) return;
  if (probe && static_cast<int64_t>(img.total()) > probe->pixels())
    finding("probe_image", "a decoded image larger than its probed size",
            fmt::format("{} probed as {}x{}, decoded as {}x{}", probe->format, probe->width, probe->height, img.cols,
                        img.rows));
  if (static_cast<int64_t>(img.total()) > kMaxTransformPixels) return;
  expect_user_errors("transforms", [&] {
    Rng rng(n);
    pipeline.apply(img, rng);
    std::vector<float> chw(img.total() * static_cast<size_t>(img.channels()));
    hwc_to_chw_float(img, chw.data());
  });
}

// One small image per format probe_image() knows (and the pipelines in turn as the selector byte).
void image_write_seeds(const std::string& dir) {
  using namespace image_target;
  cv::Mat img(23, 31, CV_8UC3);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) img.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 8, y * 11, (x * y) % 256);
  cv::Mat gray;
  cv::cvtColor(img, gray, cv::COLOR_BGR2GRAY);
  const std::pair<const char*, const cv::Mat*> formats[] = {
      {".png", &img}, {".jpg", &img}, {".bmp", &img}, {".webp", &img},
      {".tiff", &img}, {".ppm", &img}, {".pgm", &gray}, {".pam", &img}};
  uint8_t selector = 0;
  for (const auto& [ext, m] : formats) {
    std::vector<uchar> bytes;
    if (!cv::imencode(ext, *m, bytes)) continue;
    bytes.insert(bytes.begin(), selector);
    write_file(dir + "/seed" + std::string(ext).replace(0, 1, "_") + "_" + std::to_string(selector), bytes.data(),
               bytes.size());
    selector = static_cast<uint8_t>((selector + 1) % kNumPipelines);
  }
}

}  // namespace featlearn::fuzz
