#include <featlearn/model/necks.h>
#include <featlearn/model/batch_norm.h>
#include <featlearn/model/metabin.h>

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

// An int or a [h, w] list (Paddle accepts both for conv sizes).
std::vector<int64_t> pair_arg(const ConfigNode& node, const std::string& key, int64_t default_value,
                              int64_t min_value) {
  const auto c = node[key];
  if (!c.defined()) return {default_value, default_value};
  auto v = c.as<std::vector<int64_t>>();
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2) c.fail("expected an integer or a list [h, w]");
  for (auto x : v)
    if (x < min_value) c.fail("values must be >= " + std::to_string(min_value));
  return v;
}

ParamInit paddle_init(const std::string& name) {
  ParamInit p;
  p.name = name;
  return p;
}

ParamInit paddle_constant(double value) {
  ParamInit p;
  p.name = "Constant";
  p.value = value;
  return p;
}

}  // namespace

// ---- VehicleNeck -------------------------------------------------------------------------------------------

VehicleNeckOptions VehicleNeckOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                   "padding_mode", "weight_attr", "bias_attr", "data_format"});
  const int64_t in_channels = positive_int(node, "in_channels");
  VehicleNeckOptions o(in_channels, positive_int(node, "out_channels"));
  o.kernel_size(pair_arg(node, "kernel_size", 1, 1));
  o.stride(pair_arg(node, "stride", 1, 1));
  o.padding(pair_arg(node, "padding", 0, 0));
  o.dilation(pair_arg(node, "dilation", 1, 1));
  o.groups(node.get<int64_t>("groups", 1));
  if (o.groups() <= 0 || o.in_channels() % o.groups() != 0 || o.out_channels() % o.groups() != 0)
    node["groups"].fail("must be positive and divide in_channels and out_channels");
  o.padding_mode(node.get<std::string>("padding_mode", "zeros"));
  const std::vector<std::string> modes = {"zeros", "reflect", "replicate", "circular"};
  if (std::find(modes.begin(), modes.end(), o.padding_mode()) == modes.end())
    node["padding_mode"].fail("unknown padding_mode '" + o.padding_mode() + "'" + did_you_mean(o.padding_mode(), modes) +
                              " (valid: " + join(modes) + ")");
  const auto fmt = node.get<std::string>("data_format", "NCHW");
  if (fmt != "NCHW") node["data_format"].fail("only NCHW is supported, got '" + fmt + "'");
  o.weight_attr(ParamAttr::from_config(node["weight_attr"]));
  o.bias_attr(ParamAttr::from_config(node["bias_attr"]));
  if (!o.weight_attr().enabled) node["weight_attr"].fail("the conv weight cannot be disabled (False)");
  return o;
}

VehicleNeckImpl::VehicleNeckImpl(VehicleNeckOptions opts) : options(std::move(opts)) {
  const auto& o = options;
  torch::nn::Conv2dOptions co(o.in_channels(), o.out_channels(), torch::ExpandingArray<2>(o.kernel_size()));
  co.stride(torch::ExpandingArray<2>(o.stride()))
      .padding(torch::ExpandingArray<2>(o.padding()))
      .dilation(torch::ExpandingArray<2>(o.dilation()))
      .groups(o.groups())
      .bias(o.bias_attr().enabled);
  if (o.padding_mode() == "reflect") co.padding_mode(torch::kReflect);
  else if (o.padding_mode() == "replicate") co.padding_mode(torch::kReplicate);
  else if (o.padding_mode() == "circular") co.padding_mode(torch::kCircular);
  else co.padding_mode(torch::kZeros);
  conv = register_module("conv", torch::nn::Conv2d(co));
  // Paddle conv fans: weight [out, in/groups, kh, kw].
  const double rf = static_cast<double>(o.kernel_size()[0] * o.kernel_size()[1]);
  const double fan_in = static_cast<double>(o.in_channels() / o.groups()) * rf;
  const double fan_out = static_cast<double>(o.out_channels()) * rf;
  ParamInit conv_default = paddle_init("Normal");
  conv_default.std = std::sqrt(2.0 / fan_in);  // Paddle Conv2D's default weight initializer
  o.weight_attr().init(conv->weight, conv_default, fan_in, fan_out);
  if (o.bias_attr().enabled) {
    const double n = static_cast<double>(o.out_channels());
    o.bias_attr().init(conv->bias, paddle_constant(0.0), n, n);
  }
}

torch::Tensor VehicleNeckImpl::forward(torch::Tensor x) {
  if (x.dim() != 4 || x.size(1) != options.in_channels())
    throw Error("VehicleNeck: expected input [N, " + std::to_string(options.in_channels()) +
                ", H, W] (e.g. BackboneStopLayer avg_pool / adaptive_avg_pool2d_0), got " + shape_str(x));
  return conv->forward(x).flatten(1);
}

// ---- BNNeck ------------------------------------------------------------------------------------------------

BNNeckOptions BNNeckOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "num_features", "weight_attr", "bias_attr", "use_global_stats"});
  BNNeckOptions o(positive_int(node, "num_features"));
  o.weight_attr(ParamAttr::from_config(node["weight_attr"]));
  o.bias_attr(ParamAttr::from_config(node["bias_attr"]));
  if (node["use_global_stats"].defined()) o.use_global_stats(node["use_global_stats"].as<bool>());
  return o;
}

BNNeckImpl::BNNeckImpl(BNNeckOptions opts) : options(std::move(opts)) {
  const auto& o = options;
  feat_bn = register_module(
      "feat_bn", BatchNorm1d(torch::nn::BatchNormOptions(o.num_features()).momentum(0.1).eps(1e-5)));
  const double n = static_cast<double>(o.num_features());
  if (o.weight_attr().enabled) {
    o.weight_attr().init(feat_bn->weight, paddle_constant(1.0), n, n);
  } else {  // Paddle: weight_attr False = a fixed weight of 1
    torch::NoGradGuard g;
    feat_bn->weight.fill_(1.0);
    feat_bn->weight.set_requires_grad(false);
  }
  // PaddleClas resets bias_attr to None (a trainable bias, initialized to 0) unless the config gives one: frozen
  // only by `bias_attr: False` (Paddle: fixed at 0) or a learning_rate <= 1e-10 (the strong_baseline idiom).
  if (o.bias_attr().enabled) {
    o.bias_attr().init(feat_bn->bias, paddle_constant(0.0), n, n);
  } else {
    torch::NoGradGuard g;
    feat_bn->bias.zero_();
    feat_bn->bias.set_requires_grad(false);
  }
}

torch::Tensor BNNeckImpl::forward(torch::Tensor x) {
  if (x.dim() < 2) throw Error("BNNeck: expected input [N, num_features, ...], got " + shape_str(x));
  x = x.flatten(1);
  if (x.size(1) != options.num_features())
    throw Error("BNNeck: num_features is " + std::to_string(options.num_features()) +
                " but the flattened input is " + shape_str(x) + "; set Arch.Neck.num_features to " +
                std::to_string(x.size(1)));
  if (options.use_global_stats())
    return torch::batch_norm(x, feat_bn->weight, feat_bn->bias, feat_bn->running_mean, feat_bn->running_var,
                             /*training=*/false, /*momentum=*/0.1, /*eps=*/1e-5, /*cudnn_enabled=*/true);
  return feat_bn->forward(x);
}

// ---- FC ----------------------------------------------------------------------------------------------------

FCOptions FCOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "embedding_size", "class_num", "weight_attr", "bias_attr"});
  const int64_t embedding_size = positive_int(node, "embedding_size");
  FCOptions o(embedding_size, positive_int(node, "class_num"));
  o.weight_attr(ParamAttr::from_config(node["weight_attr"]));
  o.bias_attr(ParamAttr::from_config(node["bias_attr"]));
  if (!o.weight_attr().enabled) node["weight_attr"].fail("the FC weight cannot be disabled (False)");
  return o;
}

torch::nn::Linear make_paddle_fc(const FCOptions& o) {
  torch::nn::Linear fc(torch::nn::LinearOptions(o.embedding_size(), o.class_num()).bias(o.bias_attr().enabled));
  const double in = static_cast<double>(o.embedding_size());
  const double out = static_cast<double>(o.class_num());
  o.weight_attr().init(fc->weight, paddle_init("XavierNormal"), in, out);
  if (o.bias_attr().enabled) o.bias_attr().init(fc->bias, paddle_constant(0.0), out, out);
  return fc;
}

FCNeckImpl::FCNeckImpl(FCOptions opts) : options(std::move(opts)) {
  fc = register_module("fc", make_paddle_fc(options));
}

torch::Tensor FCNeckImpl::forward(torch::Tensor x) {
  if (x.dim() < 1 || x.size(-1) != options.embedding_size())
    throw Error("FC neck: expected input [N, " + std::to_string(options.embedding_size()) + "], got " +
                shape_str(x));
  return fc->forward(x);
}

// ---- FRFNNeck ----------------------------------------------------------------------------------------------

FRFNNeckOptions FRFNNeckOptions::from_config(const ConfigNode& node) {
  node.check_keys({"name", "num_features", "low_dim"});
  const int64_t num_features = positive_int(node, "num_features");
  return FRFNNeckOptions(num_features, positive_int(node, "low_dim"));
}

FRFNNeckImpl::FRFNNeckImpl(FRFNNeckOptions opts) : options(std::move(opts)) {
  const int64_t f = options.num_features(), d = options.low_dim();
  fc1 = register_module("fc1", torch::nn::Linear(f, f));
  fc2 = register_module("fc2", torch::nn::Linear(f, d));
  // Paddle Linear defaults: XavierUniform weight (fans in, out), zero bias.
  paddle_init("XavierUniform").apply(fc1->weight, f, f);
  paddle_init("XavierUniform").apply(fc2->weight, f, d);
  torch::NoGradGuard g;
  fc1->bias.zero_();
  fc2->bias.zero_();
}

torch::Tensor FRFNNeckImpl::forward(torch::Tensor x) {
  if (x.dim() != 2 || x.size(1) != options.num_features())
    throw Error("FRFNNeck: expected input [N, " + std::to_string(options.num_features()) + "], got " +
                shape_str(x));
  x = torch::leaky_relu(fc1->forward(x), 0.1);
  x = fc2->forward(x);
  // Paddle divides by the norm without an epsilon; 1e-12 only guards an all-zero row.
  return x / x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

// ---- Tanh --------------------------------------------------------------------------------------------------

torch::Tensor TanhNeckImpl::forward(torch::Tensor x) { return torch::tanh(x); }

// ---- registration ------------------------------------------------------------------------------------------

void register_builtin_necks() {
  auto& r = neck_registry();
  // MetaBNNeck and its backbone, ResNet50_metabin, are registered together (model/metabin.h).
  register_metabin_models();
  // Re-adding replaces the same factories: idempotent.
  r.add("VehicleNeck", [](const ConfigNode& n) -> NeckPtr {
    return std::make_shared<VehicleNeckImpl>(VehicleNeckOptions::from_config(n));
  });
  r.add("BNNeck", [](const ConfigNode& n) -> NeckPtr {
    return std::make_shared<BNNeckImpl>(BNNeckOptions::from_config(n));
  });
  r.add("FC", [](const ConfigNode& n) -> NeckPtr { return std::make_shared<FCNeckImpl>(FCOptions::from_config(n)); });
  r.add("FRFNNeck", [](const ConfigNode& n) -> NeckPtr {
    return std::make_shared<FRFNNeckImpl>(FRFNNeckOptions::from_config(n));
  });
  r.add("Tanh", [](const ConfigNode& n) -> NeckPtr {
    n.check_keys({"name"});
    return std::make_shared<TanhNeckImpl>();
  });
}

}  // namespace featlearn
