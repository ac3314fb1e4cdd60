// The exported model.onnx (docs/deploy.md, "ONNX export") in OpenCV DNN, as a deployment without LibTorch
// would run it: for bench/extract_side_by_side.sh. Reads `path label` lines, decodes with cv::imread, resizes
// to SIZE x SIZE, normalizes with the ImageNet mean/std (featlearn's ResizeImage + NormalizeImage), batches with
// cv::dnn::blobFromImages and runs net.forward (OpenCV's own thread pool: all cores). Prints one JSON line:
// images/s from the end of the first batch to the end, as `featlearn extract` reports it.
//
//   bench_onnx_opencv MODEL.onnx IMAGE_ROOT LIST [BATCH=32] [SIZE=224]
#include <fmt/format.h>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    fmt::print(stderr, "usage: bench_onnx_opencv MODEL.onnx IMAGE_ROOT LIST [BATCH=32] [SIZE=224]\n");
    return 2;
  }
  const std::string root = argv[2];
  const int batch = argc > 4 ? std::stoi(argv[4]) : 32;
  const int size = argc > 5 ? std::stoi(argv[5]) : 224;
  std::vector<std::string> paths;
  std::ifstream list(argv[3]);
  for (std::string line; std::getline(list, line);) {
    std::istringstream in(line);
    std::string p;
    if (in >> p) paths.push_back(root + "/" + p);
  }
  cv::dnn::Net net = cv::dnn::readNetFromONNX(argv[1]);
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  const cv::Scalar mean(0.485, 0.456, 0.406), std_(0.229, 0.224, 0.225);
  std::chrono::steady_clock::time_point after_first;
  int64_t after_first_images = 0, done = 0, dim = 0;
  for (size_t b = 0; b < paths.size(); b += batch) {
    std::vector<cv::Mat> imgs;
    for (size_t i = b; i < std::min(paths.size(), b + batch); ++i) {
      cv::Mat img = cv::imread(paths[i], cv::IMREAD_COLOR), rgb;
      if (img.empty()) {
        fmt::print(stderr, "{}: cannot decode\n", paths[i]);
        return 1;
      }
      cv::cvtColor(img, rgb, cv::COLOR_BGR2RGB);
      cv::resize(rgb, rgb, {size, size});
      rgb.convertTo(rgb, CV_32F, 1.0 / 255);
      cv::subtract(rgb, mean, rgb);
      cv::divide(rgb, std_, rgb);
      imgs.push_back(rgb);
    }
    net.setInput(cv::dnn::blobFromImages(imgs));
    cv::Mat out = net.forward();
    dim = out.size[1];
    done += static_cast<int64_t>(imgs.size());
    if (b == 0) after_first = std::chrono::steady_clock::now();
    else after_first_images += static_cast<int64_t>(imgs.size());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - after_first).count();
  fmt::print("{{\"program\": \"opencv_dnn\", \"images\": {}, \"dim\": {}, \"images_after_first\": {}, \"seconds\": {:.3f}, "
             "\"images_per_s\": {:.2f}, \"threads\": {}}}\n",
             done, dim, after_first_images, s, after_first_images / s, cv::getNumThreads());
  return 0;
}
