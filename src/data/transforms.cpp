// The transform_ops registry, TransformPipeline (building, decoding, applying) and the parameter helpers the op
// files share (transforms_internal.h). The ops live by family in transforms_geometry.cpp, transforms_color.cpp
// and transforms_tensor.cpp.
#include "transforms_internal.h"

#include <featlearn/data/image_probe.h>

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <fstream>

namespace featlearn {
namespace transform_detail {

// ---------------------------------------------------------------------------------------------------------------
// Parameter helpers


// A number, or a string "a" / "a/b" (PaddleClas eval()s strings such as "1.0/255.0").
double number(const ConfigNode& n) {
  if (!n.is_scalar()) n.fail("expected a number");
  const std::string s = n.as<std::string>();
  auto parse = [&](const std::string& t) {
    try {
      size_t used = 0;
      const double v = std::stod(t, &used);
      while (used < t.size() && std::isspace(static_cast<unsigned char>(t[used]))) ++used;
      if (used != t.size()) throw std::invalid_argument(t);
      return v;
    } catch (const std::exception&) {
      n.fail("expected a number or a fraction such as 1.0/255.0, got '" + s + "'");
    }
  };
  const auto slash = s.find('/');
  double v = 0;
  if (slash == std::string::npos) {
    v = parse(s);
  } else {
    const double den = parse(s.substr(slash + 1));
    if (den == 0) n.fail("division by zero in '" + s + "'");
    v = parse(s.substr(0, slash)) / den;
  }
  if (!std::isfinite(v)) n.fail("expected a finite number, got '" + s + "'");
  return v;
}

double number_or(const ConfigNode& p, const std::string& key, double def) {
  auto n = p[key];
  return n.defined() ? number(n) : def;
}

std::vector<double> numbers(const ConfigNode& n) {
  if (!n.is_seq()) n.fail("expected a list of numbers");
  std::vector<double> v;
  for (size_t i = 0; i < n.size(); ++i) v.push_back(number(n.at(i)));
  return v;
}

// size: int or [w, h] -> (w, h)
cv::Size read_size(const ConfigNode& n) {
  if (!n.defined()) n.fail("missing required value 'size'");
  if (n.is_scalar()) {
    const int s = n.as<int>();
    if (s <= 0) n.fail("size must be positive");
    return {s, s};
  }
  const auto v = n.as<std::vector<int>>();
  if (v.size() != 2 || v[0] <= 0 || v[1] <= 0) n.fail("expected a positive int or a list [w, h]");
  return {v[0], v[1]};
}

cv::Scalar read_fill(const ConfigNode& n, double def) {
  if (!n.defined()) return cv::Scalar::all(def);
  if (n.is_scalar()) return cv::Scalar::all(number(n));
  const auto v = numbers(n);
  if (v.size() == 1) return cv::Scalar::all(v[0]);
  if (v.size() != 3) n.fail("expected a number or a list of 3 numbers");
  return cv::Scalar(v[0], v[1], v[2]);
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

int read_interp(const ConfigNode& p, const std::string& key, int def) {
  auto n = p[key];
  if (!n.defined()) return def;
  const std::string s = n.as<std::string>();
  const std::string l = lower(s);
  if (l == "nearest") return cv::INTER_NEAREST;
  if (l == "bilinear" || l == "linear") return cv::INTER_LINEAR;
  if (l == "area" || l == "box") return cv::INTER_AREA;
  if (l == "bicubic" || l == "cubic") return cv::INTER_CUBIC;
  if (l == "lanczos") return cv::INTER_LANCZOS4;
  if (l == "random") return -1;
  n.fail("unknown interpolation '" + s + "'" +
         did_you_mean(l, {"nearest", "bilinear", "linear", "area", "box", "bicubic", "cubic", "lanczos", "random"}) +
         " (valid: nearest, bilinear, area, bicubic, lanczos, random)");
}

std::string read_backend(const ConfigNode& p, const std::string& def) {
  auto n = p["backend"];
  if (!n.defined()) return def;
  const std::string b = lower(n.as<std::string>());
  if (b != "cv2" && b != "pil") n.fail("expected cv2 or pil, got '" + n.as<std::string>() + "'");
  return b;
}

void require_uint8(const ConfigNode& p, const ImageState& st, const char* op) {
  if (st.is_float)
    p.fail(std::string(op) + " works on 8-bit images; move it before NormalizeImage");
}

[[noreturn]] void too_small(const std::string& op, const cv::Mat& img, cv::Size want) {
  throw Error(fmt::format("{}: image of {}x{} (w x h) is smaller than the crop {}x{}", op, img.cols, img.rows,
                          want.width, want.height));
}

}  // namespace transform_detail

namespace {

using transform_detail::TransformPtr;
using transform_detail::TransformRegistry;

const TransformRegistry& transform_registry() {
  static const TransformRegistry reg = [] {
    TransformRegistry r("transform op");
    transform_detail::add_geometry_ops(r);
    transform_detail::add_vision_ops(r);
    transform_detail::add_autoaugment_ops(r);
    transform_detail::add_color_ops(r);
    transform_detail::add_tensor_ops(r);
    r.add("DecodeImage", [](const ConfigNode& p, ImageState*) -> TransformPtr {
      p.fail("DecodeImage must be the first op of transform_ops");
    });
    return r;
  }();
  return reg;
}

}  // namespace

// -----------------------------------------------------------------------------------------------------------------

TransformPipeline TransformPipeline::create(const ConfigNode& ops, bool pil_input) {
  TransformPipeline tp;
  ImageState st;
  st.pil = pil_input;
  if (!ops.defined()) {
    tp.out_ = st;
    return tp;
  }
  if (!ops.is_seq()) ops.fail("transform_ops must be a list of `- OpName: {params}`");
  size_t first = 0;
  if (ops.size() > 0) {
    auto [name, params] = ops.at(0).single_entry();
    if (name == "DecodeImage") {
      params.check_keys({"to_np", "to_rgb", "channel_first", "backend", "max_pixels"});
      if (!params.get<bool>("to_np", true)) params["to_np"].fail("to_np: False is not supported (images are arrays)");
      transform_detail::read_backend(params, "cv2");  // OpenCV decodes with either
      if (params["max_pixels"].defined()) {
        tp.max_pixels_ = params["max_pixels"].as<int64_t>();
        if (tp.max_pixels_ < 1) params["max_pixels"].fail("must be at least 1");
      }
      tp.to_rgb_ = params.get<bool>("to_rgb", true);
      st.rgb = tp.to_rgb_;
      st.chw = params.get<bool>("channel_first", false);
      st.pil = false;  // DecodeImage gives an array
      first = 1;
    }
  }
  for (size_t i = first; i < ops.size(); ++i) {
    auto item = ops.at(i);
    auto [name, params] = item.single_entry();
    tp.ops_.push_back(transform_registry().create(name, item, params, &st));
  }
  tp.out_ = st;
  return tp;
}

cv::Mat TransformPipeline::decode(const std::string& path) const {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BadImageError(fmt::format("cannot open image '{}'", path));
  f.seekg(0, std::ios::end);
  const auto n = static_cast<size_t>(f.tellg());
  f.seekg(0);
  std::vector<uchar> buf(n);
  if (n == 0 || !f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n)))
    throw BadImageError(fmt::format("cannot read image '{}' (empty or unreadable file)", path));
  return decode_bytes(buf.data(), buf.size(), "'" + path + "'");
}

cv::Mat TransformPipeline::decode_bytes(const void* data, size_t size, const std::string& what) const {
  if (size == 0) throw BadImageError(fmt::format("cannot decode image {} (no bytes)", what));
  auto over_limit = [&](int64_t w, int64_t h) {
    return BadImageError(fmt::format("image {} is {}x{} (w x h, {} pixels), over the limit of {} pixels; raise "
                                     "DecodeImage.max_pixels to accept it",
                                     what, w, h, ImageProbe{"", w, h}.pixels(), max_pixels_));
  };
  // The header decides before anything is decoded; PNG and JPEG headers are always readable when whole.
  const std::string signature = png_or_jpeg_signature(data, size);
  const auto probe = probe_image(data, size);
  if (!probe && !signature.empty())
    throw BadImageError(fmt::format("cannot decode image {}: its {} header is cut short or malformed", what,
                                    signature == "png" ? "PNG" : "JPEG"));
  if (probe && probe->pixels() > max_pixels_) throw over_limit(probe->width, probe->height);
  // OpenCV would decode a cut-short JPEG, filling the missing part with gray.
  if (const auto why = find_truncation(data, size))
    throw BadImageError(fmt::format("image {} is truncated: {}", what, *why));
  const cv::Mat raw(1, static_cast<int>(size), CV_8UC1, const_cast<void*>(data));
  cv::Mat img;
  try {
    img = cv::imdecode(raw, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw BadImageError(fmt::format("cannot decode image {}: {}", what, e.what()));
  }
  if (img.empty()) throw BadImageError(fmt::format("cannot decode image {} (not a supported image file?)", what));
  // Formats whose header is not probed are held to the limit after decoding.
  if (static_cast<int64_t>(img.total()) > max_pixels_) throw over_limit(img.cols, img.rows);
  if (to_rgb_) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  return img;
}

void TransformPipeline::apply(cv::Mat& img, Rng& rng) const {
  for (const auto& op : ops_) {
    try {
      op->apply(img, rng);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: {}", op->name(), e.what()));
    }
  }
}

cv::Mat TransformPipeline::run(const std::string& path, Rng& rng, const BBox* box) const {
  cv::Mat img = decode(path);
  if (box) {
    const cv::Rect r = cv::Rect(box->x1, box->y1, box->x2 - box->x1, box->y2 - box->y1) & cv::Rect(0, 0, img.cols, img.rows);
    if (r.area() <= 0)
      throw Error(fmt::format("bounding box {} {} {} {} lies outside the {}x{} image", box->x1, box->y1, box->x2,
                              box->y2, img.cols, img.rows));
    img = img(r).clone();
  }
  apply(img, rng);
  return img;
}

std::vector<std::string> transform_names() {
  auto v = transform_registry().names();
  return v;
}

void hwc_to_chw_float(const cv::Mat& img, float* dst) {
  const int C = img.channels();
  const size_t plane = static_cast<size_t>(img.rows) * img.cols;
  std::vector<cv::Mat> planes(C);
  for (int c = 0; c < C; ++c) planes[c] = cv::Mat(img.rows, img.cols, CV_32F, dst + c * plane);
  if (img.depth() == CV_32F) {
    cv::split(img, planes);  // writes into the provided buffers (same size and type)
  } else {
    std::vector<cv::Mat> tmp;
    cv::split(img, tmp);
    for (int c = 0; c < C; ++c) tmp[c].convertTo(planes[c], CV_32F);
  }
}

}  // namespace featlearn
