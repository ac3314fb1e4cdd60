#include <featlearn/model/heads.h>

#include <torch/torch.h>

#include <cmath>
#include <sstream>

namespace featlearn {

namespace {

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

int64_t positive_int(const ConfigNode& node, const std::string& key) {
  const auto v = node.require<int64_t>(key);
  if (v <= 0) node[key].fail("must be a positive integer, got " + std::to_string(v));
  return v;
}

// Rows of unit L2 norm along `dim` (the eps only guards an all-zero row; PaddleClas has none).
torch::Tensor l2_normalize(const torch::Tensor& x, int64_t dim) {
  return x / x.norm(2, {dim}, /*keepdim=*/true).clamp_min(1e-12);
}

void check_features(const torch::Tensor& features, int64_t embedding_size, const std::string& head) {
  if (features.dim() != 2 || features.size(1) != embedding_size)
    throw Error(head + ": expected features [N, " + std::to_string(embedding_size) + "] (Arch.Head.embedding_size), got " +
                shape_str(features));
}

// [embedding_size, class_num] XavierNormal as Paddle (fan_in = rows, fan_out = columns).
torch::Tensor xavier_normal_weight(int64_t embedding_size, int64_t class_num) {
  const double std = std::sqrt(2.0 / static_cast<double>(embedding_size + class_num));
  return torch::randn({embedding_size, class_num}) * std;
}

}  // namespace

// ---- plain functions ---------------------------------------------------------------------------------------

torch::Tensor normalized_cosine(const torch::Tensor& features, const torch::Tensor& weight) {
  return torch::mm(l2_normalize(features, 1), l2_normalize(weight, 0));
}

torch::Tensor label_index(const torch::Tensor& label, int64_t n, int64_t class_num, const std::string& head) {
  if (label.is_floating_point() || label.is_complex() || label.scalar_type() == torch::kBool)
    throw Error(head + ": the label must be an integer tensor, got " + std::string(c10::toString(label.scalar_type())));
  if (label.numel() != n)
    throw Error(head + ": expected one label per sample ([" + std::to_string(n) + "] or [" + std::to_string(n) +
                ", 1]), got " + shape_str(label));
  auto index = label.reshape({n, 1}).to(torch::kLong);
  if (n > 0) {
    const auto bad = (index < 0).logical_or(index >= class_num);
    if (bad.any().item<bool>()) {
      const int64_t value = index.masked_select(bad)[0].item<int64_t>();
      throw Error(head + ": label " + std::to_string(value) + " is out of range [0, " + std::to_string(class_num) +
                  "); check Arch.Head.class_num against the dataset's labels");
    }
  }
  return index;
}

torch::Tensor arc_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin, double scale,
                                bool easy_margin) {
  const auto cos_t = cos.gather(1, index);  // [N, 1] target cosines
  // sin θ; the lower clamp keeps the gradient finite at |cos| = 1 (changes sin only below 1e-6).
  const auto sin_t = (1.0 - cos_t * cos_t).clamp(1e-12, 1.0).sqrt();
  auto phi = cos_t * std::cos(margin) - sin_t * std::sin(margin);  // cos(θ + m)
  if (easy_margin) {
    phi = torch::where(cos_t > 0, phi, cos_t);
  } else {
    const double th = -std::cos(margin);           // cos(π − m): θ + m would pass π beyond this
    const double mm = std::sin(margin) * margin;   // sin(π − m)·m
    phi = torch::where(cos_t > th, phi, cos_t - mm);
  }
  return cos.scatter(1, index, phi) * scale;
}

torch::Tensor cos_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin, double scale) {
  return cos.scatter(1, index, cos.gather(1, index) - margin) * scale;
}

torch::Tensor circle_margin_logits(const torch::Tensor& cos, const torch::Tensor& index, double margin,
                                   double scale) {
  const auto alpha_n = (cos.detach() + margin).clamp_min(0.0);
  const auto others = alpha_n * (cos - margin);
  const auto cos_t = cos.gather(1, index);
  const auto alpha_p = (1.0 + margin - cos_t.detach()).clamp_min(0.0);
  const auto target = alpha_p * (cos_t - (1.0 - margin));
  return others.scatter(1, index, target) * scale;
}

// ---- ArcMargin ---------------------------------------------------------------------------------------------

ArcMarginOptions ArcMarginOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "embedding_size", "class_num", "margin", "scale", "easy_margin"});
  const int64_t embedding_size = positive_int(node, "embedding_size");
  ArcMarginOptions o(embedding_size, positive_int(node, "class_num"));
  o.margin(node.get<double>("margin", 0.5));
  o.scale(node.get<double>("scale", 80.0));
  o.easy_margin(node.get<bool>("easy_margin", false));
  return o;
}

ArcMarginImpl::ArcMarginImpl(ArcMarginOptions opts) : options(std::move(opts)) {
  weight = register_parameter("weight", xavier_normal_weight(options.embedding_size(), options.class_num()));
}

torch::Tensor ArcMarginImpl::forward(torch::Tensor features, torch::Tensor label) {
  check_features(features, options.embedding_size(), "ArcMargin");
  const auto cos = normalized_cosine(features, weight);  // [N, class_num]
  if (!is_training() || !label.defined()) return cos;  // PaddleClas: the unscaled cosine
  const auto index = label_index(label, features.size(0), options.class_num(), "ArcMargin");
  return arc_margin_logits(cos, index, options.margin(), options.scale(), options.easy_margin());
}

// ---- CosMargin ---------------------------------------------------------------------------------------------

CosMarginOptions CosMarginOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "embedding_size", "class_num", "margin", "scale"});
  const int64_t embedding_size = positive_int(node, "embedding_size");
  CosMarginOptions o(embedding_size, positive_int(node, "class_num"));
  o.margin(node.get<double>("margin", 0.35));
  o.scale(node.get<double>("scale", 64.0));
  return o;
}

CosMarginImpl::CosMarginImpl(CosMarginOptions opts) : options(std::move(opts)) {
  weight = register_parameter("weight", xavier_normal_weight(options.embedding_size(), options.class_num()));
}

torch::Tensor CosMarginImpl::forward(torch::Tensor features, torch::Tensor label) {
  check_features(features, options.embedding_size(), "CosMargin");
  const auto cos = normalized_cosine(features, weight);
  if (!is_training() || !label.defined()) return cos;  // PaddleClas: the unscaled cosine
  const auto index = label_index(label, features.size(0), options.class_num(), "CosMargin");
  return cos_margin_logits(cos, index, options.margin(), options.scale());
}

// ---- CircleMargin ------------------------------------------------------------------------------------------

CircleMarginOptions CircleMarginOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "embedding_size", "class_num", "margin", "scale"});
  // Read in key order (function-argument evaluation order is unspecified).
  const int64_t embedding_size = positive_int(node, "embedding_size");
  const int64_t class_num = positive_int(node, "class_num");
  const double margin = node.require<double>("margin");
  const double scale = node.require<double>("scale");
  return CircleMarginOptions(embedding_size, class_num, margin, scale);
}

CircleMarginImpl::CircleMarginImpl(CircleMarginOptions opts) : options(std::move(opts)) {
  weight = register_parameter("weight", xavier_normal_weight(options.embedding_size(), options.class_num()));
}

torch::Tensor CircleMarginImpl::forward(torch::Tensor features, torch::Tensor label) {
  check_features(features, options.embedding_size(), "CircleMargin");
  const auto cos = normalized_cosine(features, weight);
  if (!is_training() || !label.defined()) return cos;  // PaddleClas: the unscaled cosine
  const auto index = label_index(label, features.size(0), options.class_num(), "CircleMargin");
  return circle_margin_logits(cos, index, options.margin(), options.scale());
}

// ---- FC ----------------------------------------------------------------------------------------------------

FCHeadImpl::FCHeadImpl(FCOptions opts) : options(std::move(opts)) {
  fc = register_module("fc", make_paddle_fc(options));
}

torch::Tensor FCHeadImpl::forward(torch::Tensor features, torch::Tensor /*label*/) {
  check_features(features, options.embedding_size(), "FC head");
  return fc->forward(features);
}

// ---- AdaMargin ---------------------------------------------------------------------------------------------

AdaMarginOptions AdaMarginOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "embedding_size", "class_num", "m", "h", "s", "t_alpha"});
  AdaMarginOptions o;
  if (node["embedding_size"].defined()) o.embedding_size(positive_int(node, "embedding_size"));
  if (node["class_num"].defined()) o.class_num(positive_int(node, "class_num"));
  o.m(node.get<double>("m", 0.4));
  o.h(node.get<double>("h", 0.333));
  o.s(node.get<double>("s", 64.0));
  o.t_alpha(node.get<double>("t_alpha", 1.0));
  if (o.t_alpha() < 0 || o.t_alpha() > 1) node["t_alpha"].fail("must be in [0, 1]");
  return o;
}

AdaMarginImpl::AdaMarginImpl(AdaMarginOptions opts) : options(std::move(opts)) {
  auto k = torch::empty({options.embedding_size(), options.class_num()}).uniform_(-1.0, 1.0);
  auto norm = k.norm(2, {0}, /*keepdim=*/true);
  norm = torch::where(norm > 1e-5, norm, torch::ones_like(norm));
  kernel = register_parameter("kernel", k / norm);
  t = register_buffer("t", torch::zeros({1}));
  batch_mean = register_buffer("batch_mean", torch::full({1}, 20.0));
  batch_std = register_buffer("batch_std", torch::full({1}, 100.0));
}

torch::Tensor AdaMarginImpl::forward(torch::Tensor features, torch::Tensor label) {
  check_features(features, options.embedding_size(), "AdaMargin");
  const auto norms = features.norm(2, {1}, /*keepdim=*/true);  // [N, 1], before normalization
  if (!is_training() || !label.defined()) return features;  // PaddleClas: the embeddings themselves
  const int64_t n = features.size(0);
  const auto index = label_index(label, n, options.class_num(), "AdaMargin");

  const auto cosine = torch::mm(features / norms.clamp_min(1e-12), l2_normalize(kernel, 0)).clamp(-1 + kEps, 1 - kEps);
  const auto safe_norms = norms.clamp(0.001, 100.0).detach();
  {
    torch::NoGradGuard no_grad;
    const double a = options.t_alpha();
    batch_mean.copy_(safe_norms.mean() * a + batch_mean * (1 - a));
    if (n > 1) batch_std.copy_(safe_norms.std() * a + batch_std * (1 - a));  // unbiased std needs 2 samples
  }
  const auto margin_scaler = ((safe_norms - batch_mean) / (batch_std + kEps) * options.h()).clamp(-1.0, 1.0);

  const auto g_angular = margin_scaler * -options.m();                  // [N, 1]
  const auto g_add = options.m() + options.m() * margin_scaler;         // [N, 1]
  const auto theta = torch::acos(cosine.gather(1, index));              // target angles [N, 1]
  const auto theta_m = (theta + g_angular).clamp(kEps, kPi - kEps);
  const auto target = torch::cos(theta_m) - g_add;
  // Other columns: cos(clip(acos(c))) = c, since c is already clipped to [-1+eps, 1-eps].
  return cosine.scatter(1, index, target) * options.s();
}

// ---- registration ------------------------------------------------------------------------------------------

void register_builtin_heads() {
  auto& r = head_registry();
  // Re-adding replaces the same factories: idempotent.
  r.add("ArcMargin", [](const ConfigNode& n) -> HeadPtr {
    return std::make_shared<ArcMarginImpl>(ArcMarginOptions::from_config(n));
  });
  r.add("CosMargin", [](const ConfigNode& n) -> HeadPtr {
    return std::make_shared<CosMarginImpl>(CosMarginOptions::from_config(n));
  });
  r.add("CircleMargin", [](const ConfigNode& n) -> HeadPtr {
    return std::make_shared<CircleMarginImpl>(CircleMarginOptions::from_config(n));
  });
  r.add("FC", [](const ConfigNode& n) -> HeadPtr { return std::make_shared<FCHeadImpl>(FCOptions::from_config(n)); });
  r.add("AdaMargin", [](const ConfigNode& n) -> HeadPtr {
    return std::make_shared<AdaMarginImpl>(AdaMarginOptions::from_config(n));
  });
}

}  // namespace featlearn
