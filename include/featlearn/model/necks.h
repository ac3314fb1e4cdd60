// Necks (Arch.Neck) of RecModel, with PaddleClas's names, keys and defaults (ppcls/arch/gears/).
// Each is registered in neck_registry() by register_builtin_necks() under its config name.
//
//   VehicleNeck  Conv2d + flatten:        [N, in_channels, H, W] -> [N, out_channels·H'·W']
//   BNNeck       flatten + BatchNorm1d:   [N, num_features, ...] -> [N, num_features]; bias trainable (init 0)
//                unless bias_attr is False or has learning_rate <= 1e-10 (PaddleClas)
//   FC           Linear:                  [N, embedding_size]    -> [N, class_num]
//   FRFNNeck     Linear, LeakyReLU(0.1), Linear, L2-normalize: [N, num_features] -> [N, low_dim], unit rows
//   Tanh         elementwise tanh
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/module_base.h>
#include <featlearn/model/batch_norm.h>
#include <featlearn/model/param_attr.h>

#include <string>
#include <vector>

namespace featlearn {

// ---- VehicleNeck -------------------------------------------------------------------------------------------
struct VehicleNeckOptions {
  VehicleNeckOptions(int64_t in_channels, int64_t out_channels) : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);                               // required
  TORCH_ARG(int64_t, out_channels);                              // required
  TORCH_ARG(std::vector<int64_t>, kernel_size) = {1, 1};         // int or [kh, kw] in YAML; default 1
  TORCH_ARG(std::vector<int64_t>, stride) = {1, 1};              // default 1
  TORCH_ARG(std::vector<int64_t>, padding) = {0, 0};             // default 0
  TORCH_ARG(std::vector<int64_t>, dilation) = {1, 1};            // default 1
  TORCH_ARG(int64_t, groups) = 1;                                // default 1
  TORCH_ARG(std::string, padding_mode) = "zeros";                // zeros | reflect | replicate | circular
  // Weight default: Paddle Conv2D's Normal(0, sqrt(2 / fan_in)); bias default: zeros; `bias_attr: False`
  // drops the bias. (PaddleClas passes weight_attr as the bias attr by mistake; we apply bias_attr to the bias.)
  TORCH_ARG(ParamAttr, weight_attr) = {};
  TORCH_ARG(ParamAttr, bias_attr) = {};
 public:
  static VehicleNeckOptions from_config(const ConfigNode& node);  // keys as PaddleClas (+ data_format: NCHW)
};

class VehicleNeckImpl : public NeckImpl {
 public:
  explicit VehicleNeckImpl(VehicleNeckOptions options);
  // x: [N, in_channels, H, W] -> [N, out_channels·H'·W']
  torch::Tensor forward(torch::Tensor x) override;
  VehicleNeckOptions options;
  torch::nn::Conv2d conv{nullptr};  // parameters "conv.weight", "conv.bias"
};
TORCH_MODULE(VehicleNeck);

// ---- BNNeck ------------------------------------------------------------------------------------------------
struct BNNeckOptions {
  explicit BNNeckOptions(int64_t num_features) : num_features_(num_features) {}
  TORCH_ARG(int64_t, num_features);  // required
  // Weight default Constant(1); bias default Constant(0). The bias is always frozen (requires_grad=false):
  // that is what PaddleClas intends (its code resets the frozen attr by mistake; its configs then freeze
  // the bias with learning_rate 1e-20). `bias_attr: False` = a zero bias, frozen.
  TORCH_ARG(ParamAttr, weight_attr) = {};
  TORCH_ARG(ParamAttr, bias_attr) = {};
  // true: always normalize with the running statistics (also in training), as Paddle's use_global_stats.
  TORCH_ARG(bool, use_global_stats) = false;
 public:
  static BNNeckOptions from_config(const ConfigNode& node);
};

class BNNeckImpl : public NeckImpl {
 public:
  explicit BNNeckImpl(BNNeckOptions options);
  // x: [N, num_features, ...] (flattened from dim 1) -> [N, num_features]
  torch::Tensor forward(torch::Tensor x) override;
  BNNeckOptions options;
  // momentum 0.1 (= Paddle's 0.9), eps 1e-5; "feat_bn.weight", "feat_bn.bias", "feat_bn.running_mean", ...
  BatchNorm1d feat_bn{nullptr};
};
TORCH_MODULE(BNNeck);

// ---- FC (neck and head) ------------------------------------------------------------------------------------
struct FCOptions {
  FCOptions(int64_t embedding_size, int64_t class_num) : embedding_size_(embedding_size), class_num_(class_num) {}
  TORCH_ARG(int64_t, embedding_size);  // required: input size
  TORCH_ARG(int64_t, class_num);       // required: output size
  // Weight default XavierNormal (fan_in=embedding_size, fan_out=class_num); bias default zeros;
  // `bias_attr: False` drops the bias.
  TORCH_ARG(ParamAttr, weight_attr) = {};
  TORCH_ARG(ParamAttr, bias_attr) = {};
 public:
  static FCOptions from_config(const ConfigNode& node);
};

// A Linear layer initialized as PaddleClas's FC gear. Parameters "fc.weight" [class_num, embedding_size]
// (torch layout; Paddle stores the transpose) and "fc.bias".
torch::nn::Linear make_paddle_fc(const FCOptions& options);

class FCNeckImpl : public NeckImpl {
 public:
  explicit FCNeckImpl(FCOptions options);
  // x: [N, embedding_size] -> [N, class_num]
  torch::Tensor forward(torch::Tensor x) override;
  FCOptions options;
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(FCNeck);

// ---- FRFNNeck ----------------------------------------------------------------------------------------------
struct FRFNNeckOptions {
  FRFNNeckOptions(int64_t num_features, int64_t low_dim) : num_features_(num_features), low_dim_(low_dim) {}
  TORCH_ARG(int64_t, num_features);  // required
  TORCH_ARG(int64_t, low_dim);       // required
 public:
  static FRFNNeckOptions from_config(const ConfigNode& node);
};

class FRFNNeckImpl : public NeckImpl {
 public:
  explicit FRFNNeckImpl(FRFNNeckOptions options);
  // x: [N, num_features] -> [N, low_dim], each row of unit L2 norm
  torch::Tensor forward(torch::Tensor x) override;
  FRFNNeckOptions options;
  // Paddle Linear defaults: weight XavierUniform, bias zeros.
  torch::nn::Linear fc1{nullptr};  // num_features -> num_features
  torch::nn::Linear fc2{nullptr};  // num_features -> low_dim
};
TORCH_MODULE(FRFNNeck);

// ---- Tanh --------------------------------------------------------------------------------------------------
class TanhNeckImpl : public NeckImpl {
 public:
  torch::Tensor forward(torch::Tensor x) override;
};
TORCH_MODULE(TanhNeck);

}  // namespace featlearn
