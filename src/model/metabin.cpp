// MetaBIN layers, ResNet50_metabin and MetaBNNeck (see metabin.h; docs/architecture.md, "MetaBIN").
#include <featlearn/model/metabin.h>
#include <featlearn/model/pretrained.h>

#include <featlearn/common/error.h>

#include <c10/util/StringUtil.h>
#include <torch/torch.h>

#include <cmath>

namespace featlearn {
namespace nn = torch::nn;

torch::Tensor meta_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              const torch::Tensor& running_mean, const torch::Tensor& running_var, bool training,
                              MetaBinOpt::BnMode mode) {
  constexpr double kMomentum = 0.1, kEps = 1e-5;
  if (!training)
    return torch::batch_norm(x, weight, bias, running_mean, running_var, false, kMomentum, kEps, true);
  if (mode == MetaBinOpt::BnMode::kGeneral)
    return torch::batch_norm(x, weight, bias, running_mean, running_var, true, kMomentum, kEps, true);
  // hold: batch statistics; the running statistics are not passed, so they are not updated.
  return torch::batch_norm(x, weight, bias, {}, {}, true, kMomentum, kEps, true);
}

// ---- BINGate -----------------------------------------------------------------------------------------------

BINGateImpl::BINGateImpl(int64_t channels) { gate = register_parameter("gate", torch::ones({channels})); }

torch::Tensor BINGateImpl::effective(const MetaBinOpt& opt) const {
  if (!opt.enable_inside_update || !gate.grad().defined()) return gate;
  // The virtual step; ∇g is a constant (first order). Paddle's clip passes the gradient only strictly inside
  // (0, 1).
  const torch::Tensor v = gate - opt.lr_gate * gate.grad().detach();
  const torch::Tensor inside = (v > 0) & (v < 1);
  return torch::where(inside, v, v.clamp(0, 1).detach());
}

void BINGateImpl::clip_gate() {
  torch::NoGradGuard ng;
  gate.clamp_(0, 1);
}

// ---- InstanceNorm ------------------------------------------------------------------------------------------

PaddleInstanceNorm2dImpl::PaddleInstanceNorm2dImpl(int64_t channels) {
  scale = register_parameter("scale", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor PaddleInstanceNorm2dImpl::forward(const torch::Tensor& x) {
  return torch::instance_norm(x, scale, bias, {}, {}, /*use_input_stats=*/true, 0.1, 1e-5, true);
}

// ---- MetaBIN -----------------------------------------------------------------------------------------------

MetaBINImpl::MetaBINImpl(int64_t channels) {
  batch_norm = register_module("batch_norm", nn::BatchNorm2d(nn::BatchNormOptions(channels).momentum(0.1).eps(1e-5)));
  instance_norm = register_module("instance_norm", PaddleInstanceNorm2d(channels));
  gate = register_module("gate", BINGate(channels));
}

torch::Tensor MetaBINImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  const torch::Tensor out_bn = meta_batch_norm(x, batch_norm->weight, batch_norm->bias, batch_norm->running_mean,
                                               batch_norm->running_var, is_training(), opt_.bn_mode);
  const torch::Tensor out_in = instance_norm->forward(x);
  const torch::Tensor g = gate->effective(opt_).view({1, -1, 1, 1});
  return out_bn * g + out_in * (1 - g);
}

// ---- ResNet50_metabin --------------------------------------------------------------------------------------

namespace {

// PaddleClas's ConvBNLayer with a MetaBIN as its `bn`: conv, bn, relu (when `act`).
class ConvMetaBINImpl : public StagedModule {
 public:
  ConvMetaBINImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool act) : act_(act) {
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                                                  .stride(stride)
                                                  .padding((kernel - 1) / 2)
                                                  .bias(false)));
    bn = register_module("bn", MetaBIN(out));
    if (act) register_module("relu", nn::ReLU());
  }
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override {
    auto y = c.step(child_path(path, "conv"), x, [&](const torch::Tensor& t) { return conv->forward(t); });
    y = c.step(child_path(path, "bn"), y, [&](const torch::Tensor& t) {
      StopCursor inner;
      return bn->run(t, inner, child_path(path, "bn"));
    });
    if (act_) y = c.step(child_path(path, "relu"), y, [](const torch::Tensor& t) { return torch::relu(t); });
    return y;
  }
  nn::Conv2d conv{nullptr};
  MetaBIN bn{nullptr};

 private:
  bool act_;
};
TORCH_MODULE(ConvMetaBIN);

// PaddleClas's BottleneckBlock: conv0 (1x1), conv1 (3x3, the stride), conv2 (1x1, no act), short, relu.
class MetaBinBottleneckImpl : public StagedModule {
 public:
  MetaBinBottleneckImpl(int64_t in, int64_t planes, int64_t stride, bool shortcut) {
    conv0 = register_module("conv0", ConvMetaBIN(in, planes, 1, 1, true));
    conv1 = register_module("conv1", ConvMetaBIN(planes, planes, 3, stride, true));
    conv2 = register_module("conv2", ConvMetaBIN(planes, planes * 4, 1, 1, false));
    if (!shortcut) short_ = register_module("short", ConvMetaBIN(in, planes * 4, 1, stride, false));
    register_module("relu", nn::ReLU());
  }
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override {
    auto sub = [&](const char* name, ConvMetaBIN& m, const torch::Tensor& t) {
      const std::string p = child_path(path, name);
      return c.step(p, t, [&](const torch::Tensor& u) { return m->run(u, c, p); });
    };
    auto y = sub("conv0", conv0, x);
    y = sub("conv1", conv1, y);
    y = sub("conv2", conv2, y);
    if (c.done()) return y;
    const torch::Tensor s = short_ ? sub("short", short_, x) : x;
    if (c.done()) return s;
    return c.step(child_path(path, "relu"), y + s, [](const torch::Tensor& t) { return torch::relu(t); });
  }
  ConvMetaBIN conv0{nullptr}, conv1{nullptr}, conv2{nullptr}, short_{nullptr};
};

}  // namespace

MetaBinResNetImpl::MetaBinResNetImpl(MetaBinResNetOptions o) : options_(std::move(o)) {
  const auto& op = options_;
  if (op.layers().size() != 4) throw Error("ResNet50_metabin needs 4 stages");
  const int64_t w = op.base_width();
  nn::ModuleList stem;
  stem->push_back(ConvMetaBIN(op.in_channels(), w, 7, 2, true));
  register_module("stem", stem);
  register_module("max_pool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
  nn::ModuleList blocks;
  int64_t in = w;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = w << s;
    for (int64_t b = 0; b < op.layers()[s]; ++b) {
      // Stride 2 on the first block of stages 2 and 3; the last stage keeps stride 1
      // (ResNet50_last_stage_stride1).
      const int64_t stride = (b == 0 && (s == 1 || s == 2)) ? 2 : 1;
      blocks->push_back(std::make_shared<MetaBinBottleneckImpl>(in, planes, stride, /*shortcut=*/b != 0));
      in = planes * 4;
    }
  }
  register_module("blocks", blocks);
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  register_module("flatten", nn::Flatten());
  auto fc = register_module("fc", nn::Linear(in, op.class_num()));
  out_channels_ = in;

  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false))
    if (auto* cv = m->as<nn::Conv2d>()) {
      const double fan_in = static_cast<double>(cv->weight.size(1) * cv->weight.size(2) * cv->weight.size(3));
      cv->weight.normal_(0.0, std::sqrt(2.0 / fan_in));
    }
  const double stdv = 1.0 / std::sqrt(static_cast<double>(in));
  fc->weight.uniform_(-stdv, stdv);
  fc->bias.zero_();
}

LrMultipliers MetaBinResNetImpl::lr_multipliers() const {
  LrMultipliers out;
  if (options_.bias_lr_factor() == 1.0) return out;
  for (const auto& p : named_parameters(/*recurse=*/true))
    if (p.key().find("bias") != std::string::npos) out.emplace_back(p.value(), options_.bias_lr_factor());
  return out;
}

// ---- MetaBNNeck --------------------------------------------------------------------------------------------

torch::Tensor MetaBNNeckImpl::forward(torch::Tensor x) {
  if (x.dim() < 2) throw Error("MetaBNNeck: expected input [N, num_features, ...], got [" + c10::Join(", ", x.sizes()) + "]");
  x = x.flatten(1);
  if (x.size(1) != options.num_features())
    throw Error("MetaBNNeck: num_features is " + std::to_string(options.num_features()) +
                " but the flattened input is [" + c10::Join(", ", x.sizes()) + "]; set Arch.Neck.num_features to " +
                std::to_string(x.size(1)));
  return meta_batch_norm(x, feat_bn->weight, feat_bn->bias, feat_bn->running_mean, feat_bn->running_var,
                         is_training(), opt_.bn_mode);
}

// ---- module walks and registration -------------------------------------------------------------------------

std::vector<MetaLearnable*> meta_learnable_modules(torch::nn::Module& model) {
  std::vector<MetaLearnable*> out;
  if (auto* m = dynamic_cast<MetaLearnable*>(&model)) out.push_back(m);
  for (auto& child : model.modules(/*include_self=*/false))
    if (auto* m = dynamic_cast<MetaLearnable*>(child.get())) out.push_back(m);
  return out;
}

std::vector<BINGateImpl*> bin_gates(torch::nn::Module& model) {
  std::vector<BINGateImpl*> out;
  for (auto& child : model.modules(/*include_self=*/true))
    if (auto* g = dynamic_cast<BINGateImpl*>(child.get())) out.push_back(g);
  return out;
}

void register_metabin_models() {
  backbone_registry().add("ResNet50_metabin", [](const ConfigNode& node) -> BackbonePtr {
    node.check_keys({"name", "pretrained", "class_num", "bias_lr_factor"});
    MetaBinResNetOptions o;
    o.class_num(node.get<int64_t>("class_num", 1000));
    if (o.class_num() <= 0) node["class_num"].fail("must be positive");
    o.bias_lr_factor(node.get<double>("bias_lr_factor", 1.0));
    if (!(o.bias_lr_factor() >= 0) || !std::isfinite(o.bias_lr_factor()))
      node["bias_lr_factor"].fail("must be a finite number >= 0");
    auto m = std::make_shared<MetaBinResNetImpl>(o);
    m->config_name = "ResNet50_metabin";
    // PaddleClas's ResNet50_metabin starts from its ResNet50 weights for True (model/pretrained.h).
    m->pretrained_path = resolve_pretrained(node, "ResNet50_pretrained.pdparams", "a state dict of this model");
    return m;
  });
  neck_registry().add("MetaBNNeck", [](const ConfigNode& n) -> NeckPtr {
    auto opts = BNNeckOptions::from_config(n);
    // PaddleClas's MetaBN1D never reads use_global_stats (metabin.h): type-checked by from_config, no effect.
    opts.use_global_stats(false);
    return std::make_shared<MetaBNNeckImpl>(opts);
  });
}

}  // namespace featlearn
