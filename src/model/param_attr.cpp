#include <featlearn/model/param_attr.h>

#include <torch/torch.h>

#include <cmath>

namespace featlearn {

double paddle_calculate_gain(const std::string& nonlinearity, double negative_slope) {
  if (nonlinearity == "sigmoid" || nonlinearity == "linear" || nonlinearity == "conv1d" ||
      nonlinearity == "conv2d" || nonlinearity == "conv3d" || nonlinearity == "conv1d_transpose" ||
      nonlinearity == "conv2d_transpose" || nonlinearity == "conv3d_transpose")
    return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
  if (nonlinearity == "selu") return 3.0 / 4.0;
  throw Error("unknown nonlinearity '" + nonlinearity +
              "' (valid: linear, conv1d, conv2d, conv3d, sigmoid, tanh, relu, leaky_relu, selu)");
}

void ParamInit::apply(torch::Tensor& param, double param_fan_in, double param_fan_out) const {
  torch::NoGradGuard no_grad;
  const double fi = fan_in.value_or(param_fan_in);
  const double fo = fan_out.value_or(param_fan_out);
  if (name == "Constant") {
    param.fill_(value);
  } else if (name == "Normal") {
    param.normal_(mean, std);
  } else if (name == "TruncatedNormal") {
    // Truncated at mean ± 2·std: redraw the values outside (few), then clamp as a last resort.
    param.normal_(mean, std);
    for (int i = 0; i < 100; ++i) {
      auto bad = (param - mean).abs() > 2 * std;
      if (!bad.any().item<bool>()) break;
      param.copy_(torch::where(bad, torch::empty_like(param).normal_(mean, std), param));
    }
    param.clamp_(mean - 2 * std, mean + 2 * std);
  } else if (name == "Uniform") {
    param.uniform_(low, high);
  } else if (name == "XavierNormal") {
    param.normal_(0.0, gain * std::sqrt(2.0 / (fi + fo)));
  } else if (name == "XavierUniform") {
    const double limit = gain * std::sqrt(6.0 / (fi + fo));
    param.uniform_(-limit, limit);
  } else if (name == "KaimingNormal") {
    param.normal_(0.0, paddle_calculate_gain(nonlinearity, negative_slope) / std::sqrt(fi));
  } else if (name == "KaimingUniform") {
    const double limit = paddle_calculate_gain(nonlinearity, negative_slope) * std::sqrt(3.0 / fi);
    param.uniform_(-limit, limit);
  } else {
    FL_ASSERT(false, "ParamInit::apply: unvalidated initializer name " + name);
  }
}

namespace {

const std::vector<std::string> kInitializerNames = {"Constant",      "Normal",        "TruncatedNormal",
                                                    "Uniform",       "XavierNormal",  "XavierUniform",
                                                    "KaimingNormal", "KaimingUniform"};

ParamInit initializer_from_config(const ConfigNode& node) {
  if (!node.is_map()) node.fail("expected a map {name: <initializer>, ...parameters}");
  ParamInit init;
  init.name = node.require<std::string>("name");
  const auto& n = init.name;
  if (n == "Constant") {
    node.check_keys({"name", "value"});
    init.value = node.get<double>("value", 0.0);
  } else if (n == "Normal" || n == "TruncatedNormal") {
    node.check_keys({"name", "mean", "std"});
    init.mean = node.get<double>("mean", 0.0);
    init.std = node.get<double>("std", 1.0);
    if (init.std < 0) node["std"].fail("must be >= 0");
  } else if (n == "Uniform") {
    node.check_keys({"name", "low", "high"});
    init.low = node.get<double>("low", -1.0);
    init.high = node.get<double>("high", 1.0);
    if (init.low > init.high) node["low"].fail("must be <= high");
  } else if (n == "XavierNormal" || n == "XavierUniform") {
    node.check_keys({"name", "fan_in", "fan_out", "gain"});
    init.fan_in = node.optional<double>("fan_in");
    init.fan_out = node.optional<double>("fan_out");
    init.gain = node.get<double>("gain", 1.0);
  } else if (n == "KaimingNormal" || n == "KaimingUniform") {
    node.check_keys({"name", "fan_in", "negative_slope", "nonlinearity"});
    init.fan_in = node.optional<double>("fan_in");
    init.negative_slope = node.get<double>("negative_slope", 0.0);
    init.nonlinearity = node.get<std::string>("nonlinearity", "relu");
    try {
      paddle_calculate_gain(init.nonlinearity, init.negative_slope);
    } catch (const Error& e) {
      node["nonlinearity"].fail(e.what());
    }
  } else {
    node["name"].fail("unknown initializer '" + n + "'" + did_you_mean(n, kInitializerNames) +
                      " (valid names: " + join(kInitializerNames) + ")");
  }
  if (init.fan_in && *init.fan_in <= 0) node["fan_in"].fail("must be > 0");
  if (init.fan_out && *init.fan_out <= 0) node["fan_out"].fail("must be > 0");
  return init;
}

}  // namespace

ParamAttr ParamAttr::from_config(const ConfigNode& node) {
  ParamAttr attr;
  if (!node.defined()) return attr;  // absent or null: defaults
  if (node.is_scalar()) {
    attr.enabled = node.as<bool>();
    return attr;
  }
  if (!node.is_map()) node.fail("expected null, True, False or a map {initializer, learning_rate}");
  node.check_keys({"initializer", "learning_rate", "regularizer", "name", "trainable"});
  if (node["initializer"].defined()) attr.initializer = initializer_from_config(node["initializer"]);
  if (node["learning_rate"].defined()) {
    const double lr = node["learning_rate"].as<double>();
    if (lr <= 1e-10)
      attr.trainable = false;
    else if (lr != 1.0)
      node["learning_rate"].fail("a per-parameter learning_rate other than 1.0 is not supported (use 1.0, or "
                                 "a value <= 1e-10 to freeze the parameter)");
  }
  if (node["trainable"].defined() && !node["trainable"].as<bool>()) attr.trainable = false;
  if (node["regularizer"].defined())
    node["regularizer"].fail("per-parameter regularizers are not supported; use Optimizer.regularizer");
  if (node["name"].defined()) (void)node["name"].as<std::string>();  // Paddle's parameter name: cosmetic
  return attr;
}

void ParamAttr::init(torch::Tensor& param, const ParamInit& fallback, double fan_in, double fan_out,
                     bool requires_grad) const {
  (initializer ? *initializer : fallback).apply(param, fan_in, fan_out);
  param.set_requires_grad(requires_grad && trainable);
}

}  // namespace featlearn
