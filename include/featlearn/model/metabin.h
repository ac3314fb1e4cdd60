// MetaBIN (Meta Batch-Instance Normalization, PaddleClas's ResNet50_metabin backbone and MetaBNNeck; the
// training loop is engine/train_metabin.h; docs/architecture.md, "MetaBIN").
//
// MetaBIN layer (replaces every BatchNorm of the backbone), parameter names as PaddleClas:
//   batch_norm.{weight, bias, running_mean, running_var}   a BatchNorm2d (momentum 0.1 = Paddle's 0.9, eps 1e-5)
//   instance_norm.{scale, bias}                             Paddle's InstanceNorm2D (affine, eps 1e-5)
//   gate.gate                                               [C], init 1: out = BN(x)·g + IN(x)·(1 − g)
// The batch-norm half follows the phase set by setup_opt() (MetaBinOpt::bn_mode):
//   training, general: batch statistics, running statistics updated (a plain training BatchNorm)
//   training, hold:    batch statistics, running statistics left alone (the meta-train / meta-test passes)
//   eval:              running statistics
// With enable_inside_update the gate used in forward is the virtual step clip(g − lr_gate·∇g, 0, 1), ∇g the
// gradient the gate holds (the meta-train loss's); the gradient flows to g through it (first order: ∇g is a
// constant), and not where the step left [0, 1] or lands on 0 or 1 (Paddle's clip gradient, strict bounds).
// A gate without a gradient is used as is.
//
// ResNet50_metabin (Arch.Backbone keys: name, pretrained, class_num (1000), bias_lr_factor (1.0)): PaddleClas's
// ResNet50 with stride 1 in its last stage (ResNet50_last_stage_stride1) and every BatchNorm a MetaBIN.
// Module paths as PaddleClas: stem.0.{conv,bn,relu}, max_pool, blocks.<i>.{conv0,conv1,conv2}.{conv,bn,relu},
// blocks.<i>.short.{conv,bn} (i = 0, 3, 7, 13), blocks.<i>.relu, avg_pool, flatten, fc. Init as Paddle:
// convs Normal(0, sqrt(2 / fan_in)), fc weight Uniform(±1/sqrt(2048)) and bias 0, norms weight/scale 1, bias 0.
// bias_lr_factor multiplies the learning rate of every backbone parameter whose name contains "bias" (the
// batch_norm and instance_norm biases; lr_multipliers()).
//
// MetaBNNeck (Arch.Neck keys as BNNeck: num_features, weight_attr, bias_attr, use_global_stats): flatten + a
// BatchNorm1d "feat_bn" that follows the same bn_mode as MetaBIN. use_global_stats is accepted and has no effect,
// as in PaddleClas (its MetaBN1D forward never reads it; the mode decides).
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/necks.h>
#include <featlearn/model/stop_layer.h>
#include <featlearn/optim/optimizer.h>

#include <string>
#include <vector>

namespace featlearn {

// The MetaBIN phase of one forward pass (PaddleClas's `opt` dict of setup_opt).
struct MetaBinOpt {
  enum class BnMode { kGeneral, kHold };
  BnMode bn_mode = BnMode::kGeneral;
  bool enable_inside_update = false;
  double lr_gate = 0.0;  // the virtual step's learning rate (meta-test)
};

// A module whose forward depends on the MetaBIN phase. setup_opt() / reset_opt() as PaddleClas.
class MetaLearnable {
 public:
  virtual ~MetaLearnable() = default;
  void setup_opt(const MetaBinOpt& opt) { opt_ = opt; }
  void reset_opt() { opt_ = MetaBinOpt(); }
  const MetaBinOpt& opt() const { return opt_; }

 protected:
  MetaBinOpt opt_;
};

// Batch norm of x ([N, C] or [N, C, H, W]) for a MetaBIN phase (see above): weight, bias and the running
// statistics of a BatchNorm1d/2d; momentum 0.1 (Paddle's 0.9), eps 1e-5.
torch::Tensor meta_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              const torch::Tensor& running_mean, const torch::Tensor& running_var, bool training,
                              MetaBinOpt::BnMode mode);

// The learnable gate [C] (init 1) of a MetaBIN layer.
class BINGateImpl : public torch::nn::Module {
 public:
  explicit BINGateImpl(int64_t channels);
  // The gate the forward pass uses under `opt` (the virtual step with enable_inside_update, see above). [C]
  torch::Tensor effective(const MetaBinOpt& opt) const;
  // Clips the gate to [0, 1] in place (after each optimizer step, as PaddleClas).
  void clip_gate();
  torch::Tensor gate;
};
TORCH_MODULE(BINGate);

// Paddle's InstanceNorm2D: per-sample, per-channel normalization with affine scale / bias (eps 1e-5).
class PaddleInstanceNorm2dImpl : public torch::nn::Module {
 public:
  explicit PaddleInstanceNorm2dImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);  // [N, C, H, W]
  torch::Tensor scale, bias;
};
TORCH_MODULE(PaddleInstanceNorm2d);

class MetaBINImpl : public StagedModule, public MetaLearnable {
 public:
  explicit MetaBINImpl(int64_t channels);
  torch::Tensor run(const torch::Tensor& x, StopCursor& cursor, const std::string& path) override;
  torch::nn::BatchNorm2d batch_norm{nullptr};
  PaddleInstanceNorm2d instance_norm{nullptr};
  BINGate gate{nullptr};
};
TORCH_MODULE(MetaBIN);

struct MetaBinResNetOptions {
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{3, 4, 6, 3};  // bottleneck blocks per stage
  TORCH_ARG(int64_t, base_width) = 64;    // stem and first-stage width (64 in ResNet50; small in tests)
  TORCH_ARG(int64_t, class_num) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(double, bias_lr_factor) = 1.0;
};

class MetaBinResNetImpl : public StoppableBackboneImpl, public HasLrMultipliers {
 public:
  explicit MetaBinResNetImpl(MetaBinResNetOptions options);
  const MetaBinResNetOptions& options() const { return options_; }
  int64_t out_channels() const { return out_channels_; }
  // bias_lr_factor for every parameter whose name contains "bias" (none when the factor is 1).
  LrMultipliers lr_multipliers() const override;

 private:
  MetaBinResNetOptions options_;
  int64_t out_channels_ = 0;
};
TORCH_MODULE(MetaBinResNet);

class MetaBNNeckImpl : public BNNeckImpl, public MetaLearnable {
 public:
  explicit MetaBNNeckImpl(BNNeckOptions options) : BNNeckImpl(std::move(options)) {}
  torch::Tensor forward(torch::Tensor x) override;  // [N, num_features, ...] -> [N, num_features]
};
TORCH_MODULE(MetaBNNeck);

// Every MetaLearnable module of `model` (MetaBIN layers, MetaBNNeck), in module order.
std::vector<MetaLearnable*> meta_learnable_modules(torch::nn::Module& model);
// Every BINGate of `model`.
std::vector<BINGateImpl*> bin_gates(torch::nn::Module& model);

// Registers ResNet50_metabin (backbone registry) and MetaBNNeck (neck registry).
void register_metabin_models();

}  // namespace featlearn
