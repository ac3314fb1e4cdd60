// PaddlePaddle's `weight_attr` / `bias_attr` config values (ParamAttr), as PaddleClas necks and heads accept
// them (ppcls/arch/utils.py get_param_attr_dict):
//
//   weight_attr:
//     initializer: {name: KaimingUniform, fan_in: 12288}   # a paddle.nn.initializer by name
//     learning_rate: 1.0e-20                                # per-parameter lr multiplier
//   bias_attr: False                                        # no bias
//
// Supported initializers (Paddle names and parameters, Paddle's defaults):
//   Constant(value=0), Normal(mean=0, std=1), TruncatedNormal(mean=0, std=1; cut at mean±2·std),
//   Uniform(low=-1, high=1), XavierNormal / XavierUniform(fan_in, fan_out, gain=1),
//   KaimingNormal / KaimingUniform(fan_in, negative_slope=0, nonlinearity=relu).
// Fans default to Paddle's for the parameter in Paddle layout (Linear weight [in, out]: fan_in=in,
// fan_out=out; conv weight [out, in/groups, kh, kw]: fan_in=in/groups·kh·kw; 1-D: fan_in=fan_out=size).
// learning_rate: only 1.0 (default) and values ≤ 1e-10 (PaddleClas's "freeze this parameter" idiom → the
// parameter gets requires_grad=false) are supported; anything else, and `regularizer`, is a ConfigError
// (per-parameter lr/decay would be silently ignored otherwise).
#pragma once
#include <torch/types.h>

#include <featlearn/config/config.h>

#include <optional>
#include <string>

namespace featlearn {

struct ParamInit {
  std::string name;  // Paddle initializer name, see above
  double value = 0.0;
  double mean = 0.0;
  double std = 1.0;
  double low = -1.0;
  double high = 1.0;
  double gain = 1.0;
  double negative_slope = 0.0;
  std::string nonlinearity = "relu";
  std::optional<double> fan_in;   // overrides the parameter's own fan
  std::optional<double> fan_out;

  // Fills `param` in place (under NoGradGuard). `fan_in`/`fan_out` are the parameter's fans in Paddle's
  // convention, used unless the initializer overrides them.
  void apply(torch::Tensor& param, double fan_in, double fan_out) const;
};

struct ParamAttr {
  bool enabled = true;                   // false for `False`: a bias is absent / a weight is fixed
  std::optional<ParamInit> initializer;  // absent: the module's own default initializer
  bool trainable = true;                 // false for learning_rate ≤ 1e-10

  // Reads null / true / false / a map {initializer, learning_rate}; unknown keys are ConfigErrors.
  static ParamAttr from_config(const ConfigNode& node);

  // Initializes `param` with `initializer` if given, else with `fallback`, and sets requires_grad from
  // `trainable` (&& `requires_grad`).
  void init(torch::Tensor& param, const ParamInit& fallback, double fan_in, double fan_out,
            bool requires_grad = true) const;
};

// Paddle's calculate_gain(nonlinearity, param); throws Error for an unknown nonlinearity.
double paddle_calculate_gain(const std::string& nonlinearity, double negative_slope);

}  // namespace featlearn
