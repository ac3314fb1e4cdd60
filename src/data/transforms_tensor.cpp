// Normalization, layout and erasing ops: NormalizeImage, ToCHWImage, ToTensor, Normalize, RandomErasing
// (PaddleClas / paddle.vision semantics; keys documented in include/featlearn/data/transforms.h).
#include "transforms_internal.h"

#include <fmt/format.h>

#include <cmath>

namespace featlearn::transform_detail {
namespace {

class NormalizeImage : public Transform {
 public:
  NormalizeImage(const ConfigNode& p, ImageState& st) {
    p.check_keys({"scale", "mean", "std", "order", "output_fp16", "channel_num"});
    scale_ = number_or(p, "scale", 1.0 / 255.0);
    std::vector<double> mean{0.485, 0.456, 0.406}, stdv{0.229, 0.224, 0.225};
    if (p["mean"].defined()) mean = numbers(p["mean"]);
    if (p["std"].defined()) stdv = numbers(p["std"]);
    if (mean.size() != 3) p["mean"].fail("expected 3 values");
    if (stdv.size() != 3) p["std"].fail("expected 3 values");
    for (double s : stdv)
      if (s == 0) p["std"].fail("std must not be 0");
    const auto order = p.get<std::string>("order", "chw");
    if (order == "chw") {
      if (!st.chw)
        p.fail("order 'chw' expects a channel-first image, but the image is HWC here; set order: '' (or put "
               "ToCHWImage / DecodeImage.channel_first: True before NormalizeImage)");
    } else if (order == "" || order == "hwc") {
      if (st.chw) p.fail("order '" + order + "' expects an HWC image, but the image is channel-first here; set order: chw");
    } else {
      p["order"].fail("expected '', 'hwc' or 'chw'");
    }
    if (p.get<bool>("output_fp16", false)) p["output_fp16"].fail("output_fp16 is not supported (batches are float32)");
    channels_ = p.get<int>("channel_num", 3);
    if (channels_ != 3 && channels_ != 4) p["channel_num"].fail("expected 3 or 4");
    if (st.channels != 3) p.fail("expects a 3-channel image");
    // out = (x * scale - mean) / std = x * (scale / std) - mean / std, per channel
    m_ = cv::Mat(3, 4, CV_32F, cv::Scalar(0));
    for (int c = 0; c < 3; ++c) {
      m_.at<float>(c, c) = static_cast<float>(scale_ / stdv[c]);
      m_.at<float>(c, 3) = static_cast<float>(-mean[c] / stdv[c]);
    }
    st.is_float = true;
    st.channels = channels_;
  }
  void apply(cv::Mat& img, Rng&) const override {
    if (img.channels() != 3) throw Error(fmt::format("NormalizeImage: expected 3 channels, got {}", img.channels()));
    cv::Mat f;
    img.convertTo(f, CV_32F);
    cv::transform(f, f, m_);
    if (channels_ == 4) {
      std::vector<cv::Mat> ch;
      cv::split(f, ch);
      ch.push_back(cv::Mat::zeros(f.size(), CV_32F));
      cv::merge(ch, f);
    }
    img = f;
  }
  std::string name() const override { return "NormalizeImage"; }

 private:
  double scale_;
  int channels_;
  cv::Mat m_;
};

class ToCHWImage : public Transform {
 public:
  ToCHWImage(const ConfigNode& p, ImageState& st) {
    p.check_keys({});
    if (st.chw) p.fail("the image is already channel-first (DecodeImage.channel_first or an earlier ToCHWImage)");
    st.chw = true;
  }
  void apply(cv::Mat&, Rng&) const override {}  // layout is logical; batches are written CHW
  std::string name() const override { return "ToCHWImage"; }
};

// paddle.vision.transforms.ToTensor (exposed by PaddleClas under this name): uint8 HWC -> float32 / 255, CHW.
class ToTensor : public Transform {
 public:
  ToTensor(const ConfigNode& p, ImageState& st) {
    p.check_keys({"data_format", "keys"});
    const auto fmt_ = p.get<std::string>("data_format", "CHW");
    if (fmt_ != "CHW" && fmt_ != "HWC") p["data_format"].fail("expected CHW or HWC");
    if (st.is_float) p.fail("ToTensor expects an 8-bit image; it already is float (NormalizeImage before it?)");
    st.is_float = true;
    st.chw = fmt_ == "CHW";
  }
  void apply(cv::Mat& img, Rng&) const override {
    cv::Mat f;
    img.convertTo(f, CV_32F, 1.0 / 255.0);
    img = f;
  }
  std::string name() const override { return "ToTensor"; }
};

// paddle.vision.transforms.Normalize: (img - mean) / std per channel (no scaling), optional BGR<->RGB swap.
class Normalize : public Transform {
 public:
  Normalize(const ConfigNode& p, ImageState& st) {
    p.check_keys({"mean", "std", "data_format", "to_rgb", "keys"});
    auto read3 = [&](const std::string& key, double def) {
      auto n = p[key];
      if (!n.defined()) return std::vector<double>(3, def);
      if (n.is_scalar()) return std::vector<double>(3, number(n));
      auto v = numbers(n);
      if (v.size() != 3) n.fail("expected a number or 3 values");
      return v;
    };
    const auto mean = read3("mean", 0.0), stdv = read3("std", 1.0);
    for (double s : stdv)
      if (s == 0) p["std"].fail("std must not be 0");
    const auto fmt_ = p.get<std::string>("data_format", "CHW");
    if (fmt_ != "CHW" && fmt_ != "HWC") p["data_format"].fail("expected CHW or HWC");
    if ((fmt_ == "CHW") != st.chw)
      p.fail("data_format " + fmt_ + " does not match the image layout here (" + (st.chw ? "CHW" : "HWC") + ")");
    swap_ = p.get<bool>("to_rgb", false);
    if (st.channels != 3) p.fail("expects a 3-channel image");
    m_ = cv::Mat(3, 4, CV_32F, cv::Scalar(0));
    for (int c = 0; c < 3; ++c) {
      m_.at<float>(c, swap_ ? 2 - c : c) = static_cast<float>(1.0 / stdv[c]);
      m_.at<float>(c, 3) = static_cast<float>(-mean[c] / stdv[c]);
    }
    st.is_float = true;
  }
  void apply(cv::Mat& img, Rng&) const override {
    cv::Mat f;
    img.convertTo(f, CV_32F);
    cv::transform(f, f, m_);
    img = f;
  }
  std::string name() const override { return "Normalize"; }

 private:
  bool swap_ = false;
  cv::Mat m_;
};

class RandomErasing : public Transform {
 public:
  explicit RandomErasing(const ConfigNode& p) {
    p.check_keys({"EPSILON", "sl", "sh", "r1", "mean", "attempt", "use_log_aspect", "mode"});
    eps_ = number_or(p, "EPSILON", 0.5);
    sl_ = number_or(p, "sl", 0.02);
    sh_ = number_or(p, "sh", 0.4);
    const double r1 = number_or(p, "r1", 0.3);
    if (r1 <= 0) p["r1"].fail("r1 must be positive");
    if (sl_ < 0 || sl_ > sh_) p.fail("need 0 <= sl <= sh");
    log_aspect_ = p.get<bool>("use_log_aspect", false);
    r_lo_ = log_aspect_ ? std::log(r1) : r1;
    r_hi_ = log_aspect_ ? std::log(1.0 / r1) : 1.0 / r1;
    if (p["mean"].defined()) mean_ = numbers(p["mean"]);
    if (mean_.size() != 3) p["mean"].fail("expected 3 values");
    attempt_ = p.get<int>("attempt", 100);
    const auto mode = p.get<std::string>("mode", "const");
    if (mode == "const") mode_ = 0;
    else if (mode == "rand") mode_ = 1;
    else if (mode == "pixel") mode_ = 2;
    else p["mode"].fail("expected const, rand or pixel");
  }
  void apply(cv::Mat& img, Rng& rng) const override {
    if (rng.uniform() > eps_) return;
    const int H = img.rows, W = img.cols, C = img.channels();
    for (int a = 0; a < attempt_; ++a) {
      const double area = rng.uniform(sl_, sh_) * H * W;
      double aspect = rng.uniform(r_lo_, r_hi_);
      if (log_aspect_) aspect = std::exp(aspect);
      const int h = static_cast<int>(std::nearbyint(std::sqrt(area * aspect)));
      const int w = static_cast<int>(std::nearbyint(std::sqrt(area / aspect)));
      if (w < W && h < H) {
        const int y = static_cast<int>(rng.randint(0, H - h));
        const int x = static_cast<int>(rng.randint(0, W - w));
        cv::Mat roi = img(cv::Rect(x, y, w, h));
        if (mode_ == 0) {
          roi.setTo(fill_scalar(C, mean_[0], mean_[1], mean_[2]));
        } else if (mode_ == 1) {
          const double r = rng.normal(), g = rng.normal(), b = rng.normal();
          roi.setTo(fill_scalar(C, r, g, b));
        } else {
          cv::Mat noise(h, w, CV_32FC(C));
          for (int yy = 0; yy < h; ++yy) {
            float* q = noise.ptr<float>(yy);
            for (int k = 0; k < w * C; ++k) q[k] = static_cast<float>(rng.normal());
          }
          if (C == 4) {  // PaddleClas erases only channel 0 of 1-channel images; 4-channel: first three
            std::vector<cv::Mat> ch;
            cv::split(noise, ch);
            ch[3] = cv::Mat::zeros(h, w, CV_32F);
            cv::merge(ch, noise);
          }
          noise.convertTo(roi, img.depth());
        }
        return;
      }
    }
  }
  std::string name() const override { return "RandomErasing"; }

 private:
  static cv::Scalar fill_scalar(int channels, double a, double b, double c) {
    return channels == 4 ? cv::Scalar(a, b, c, 0) : cv::Scalar(a, b, c);
  }
  double eps_, sl_, sh_, r_lo_, r_hi_;
  bool log_aspect_ = false;
  std::vector<double> mean_{0, 0, 0};
  int attempt_ = 100, mode_ = 0;
};

}  // namespace

void add_tensor_ops(TransformRegistry& r) {
  r.add("NormalizeImage", [](const ConfigNode& p, ImageState* st) {
    if (st->is_float) p.fail("the image is already normalized (NormalizeImage appears twice)");
    return std::make_shared<NormalizeImage>(p, *st);
  });
  r.add("ToCHWImage", [](const ConfigNode& p, ImageState* st) { return std::make_shared<ToCHWImage>(p, *st); });
  r.add("RandomErasing", [](const ConfigNode& p, ImageState*) { return std::make_shared<RandomErasing>(p); });
  r.add("ToTensor", [](const ConfigNode& p, ImageState* st) { return std::make_shared<ToTensor>(p, *st); });
  r.add("Normalize", [](const ConfigNode& p, ImageState* st) { return std::make_shared<Normalize>(p, *st); });
}

}  // namespace featlearn::transform_detail
