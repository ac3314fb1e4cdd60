// torchvision-compatible ResNets (see resnet.h).
#include <featlearn/model/resnet.h>
#include <featlearn/model/batch_norm.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

namespace featlearn {
namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

// Runs a child held by a typed member through the cursor (the member may have been replaced by an Identity in
// the module tree; the cursor then skips it).
template <class Holder>
torch::Tensor step(StopCursor& c, const std::string& path, const char* name, Holder& m, const torch::Tensor& x) {
  return c.step(child_path(path, name), x, [&](const torch::Tensor& t) { return m->forward(t); });
}

torch::Tensor shortcut(StopCursor& c, const std::string& path, nn::ModuleList& ds, const torch::Tensor& x) {
  if (!ds) return x;
  const std::string p = child_path(path, "downsample");
  return c.step(p, x, [&](const torch::Tensor& t) { return run_module(*ds, t, c, p); });
}

}  // namespace

torch::Tensor AdaptiveMaxPool2dImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  return std::get<0>(torch::adaptive_max_pool2d(x, {1, 1}));
}

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, nn::ModuleList ds) {
  conv1 = register_module("conv1", conv(in, planes, 3, stride));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  register_module("relu", nn::ReLU());  // torchvision's shared ReLU (called twice; forward uses torch::relu)
  conv2 = register_module("conv2", conv(planes, planes, 3, 1));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  if (ds) downsample = register_module("downsample", ds);
}

torch::Tensor BasicBlockImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto out = step(c, path, "conv1", conv1, x);
  out = step(c, path, "bn1", bn1, out);
  if (c.done()) return out;
  out = torch::relu(out);
  out = step(c, path, "conv2", conv2, out);
  out = step(c, path, "bn2", bn2, out);
  if (c.done()) return out;
  auto sc = shortcut(c, path, downsample, x);
  if (c.done()) return sc;
  return torch::relu(out + sc);
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride, nn::ModuleList ds) {
  conv1 = register_module("conv1", conv(in, planes, 1, 1));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, stride));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, planes * kExpansion, 1, 1));
  bn3 = register_module("bn3", BatchNorm2d(planes * kExpansion));
  register_module("relu", nn::ReLU());  // shared ReLU (called three times; forward uses torch::relu)
  if (ds) downsample = register_module("downsample", ds);
}

torch::Tensor BottleneckImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto out = step(c, path, "conv1", conv1, x);
  out = step(c, path, "bn1", bn1, out);
  if (c.done()) return out;
  out = torch::relu(out);
  out = step(c, path, "conv2", conv2, out);
  out = step(c, path, "bn2", bn2, out);
  if (c.done()) return out;
  out = torch::relu(out);
  out = step(c, path, "conv3", conv3, out);
  out = step(c, path, "bn3", bn3, out);
  if (c.done()) return out;
  auto sc = shortcut(c, path, downsample, x);
  if (c.done()) return sc;
  return torch::relu(out + sc);
}

ResNetImpl::ResNetImpl(ResNetOptions o) : options_(std::move(o)) {
  const auto& o_ = options_;
  if (o_.layers().size() != 4) throw Error("ResNet needs 4 stages");
  if (o_.deep_stem()) {
    nn::ModuleList stem;
    const int64_t widths[3][2] = {{o_.in_channels(), 32}, {32, 32}, {32, 64}};
    for (int i = 0; i < 3; ++i) {
      stem->push_back(conv(widths[i][0], widths[i][1], 3, i == 0 ? 2 : 1));
      stem->push_back(BatchNorm2d(widths[i][1]));
      if (o_.stem_act()) stem->push_back(nn::ReLU());
      else stem->push_back(nn::Identity());
    }
    register_module("stem", stem);
  } else {
    register_module("conv1", nn::Conv2d(nn::Conv2dOptions(o_.in_channels(), 64, 7).stride(2).padding(3).bias(false)));
    register_module("bn1", BatchNorm2d(64));
    if (o_.stem_act()) register_module("relu", nn::ReLU());
    else register_module("relu", nn::Identity());
  }
  register_module("maxpool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));

  const int64_t expansion = o_.bottleneck() ? BottleneckImpl::kExpansion : BasicBlockImpl::kExpansion;
  int64_t in = 64;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = 64 << s;
    const int64_t stride = s == 0 ? 1 : (s == 3 ? o_.last_stride() : 2);
    nn::ModuleList layer;
    const std::string layer_name = "layer" + std::to_string(s + 1);
    for (int64_t b = 0; b < o_.layers()[s]; ++b) {
      const int64_t st = b == 0 ? stride : 1;
      nn::ModuleList ds{nullptr};
      if (b == 0 && (st != 1 || in != planes * expansion)) {
        ds = nn::ModuleList();
        if (o_.avg_down() && st > 1) {
          ds->push_back(nn::AvgPool2d(nn::AvgPool2dOptions(st).stride(st).ceil_mode(true).count_include_pad(false)));
          ds->push_back(conv(in, planes * expansion, 1, 1));
        } else {
          ds->push_back(conv(in, planes * expansion, 1, st));
        }
        ds->push_back(BatchNorm2d(planes * expansion));
      }
      const std::string block_path = layer_name + "." + std::to_string(b);
      block_paths_.push_back(block_path);
      multi_use_.insert(block_path + ".relu");
      if (o_.bottleneck())
        layer->push_back(std::make_shared<BottleneckImpl>(in, planes, st, ds));
      else
        layer->push_back(std::make_shared<BasicBlockImpl>(in, planes, st, ds));
      in = planes * expansion;
    }
    register_module(layer_name, layer);
  }
  out_channels_ = in;
  // The torchvision name is kept for the max pool too (alias avg_pool, as PaddleClas keeps the layer's name).
  if (o_.global_max_pool()) register_module("avgpool", AdaptiveMaxPool2d());
  else register_module("avgpool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({1, 1})));
  register_module("flatten", nn::Flatten());
  register_module("fc", nn::Linear(in, o_.class_num()));

  // torchvision's init: kaiming normal (fan_out, relu) for convs, BN weight 1 / bias 0; Linear keeps LibTorch's
  // default (the same kaiming-uniform as torch.nn.Linear).
  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* cv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(cv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
}

std::map<std::string, std::string> ResNetImpl::stop_layer_aliases() const {
  std::map<std::string, std::string> a = {{"stem", options_.deep_stem() ? "stem" : "relu"},
                                          {"max_pool", "maxpool"},
                                          {"blocks", "layer4"},
                                          {"avg_pool", "avgpool"},
                                          {"flatten", "flatten"},
                                          {"fc", "fc"}};
  for (size_t i = 0; i < block_paths_.size(); ++i) a["blocks[" + std::to_string(i) + "]"] = block_paths_[i];
  return a;
}

ResNetOptions resnet_options(const std::string& name) {
  if (name == "ResNet18") return ResNetOptions({2, 2, 2, 2}, false);
  if (name == "ResNet34") return ResNetOptions({3, 4, 6, 3}, false);
  if (name == "ResNet50") return ResNetOptions({3, 4, 6, 3}, true);
  if (name == "ResNet101") return ResNetOptions({3, 4, 23, 3}, true);
  if (name == "ResNet152") return ResNetOptions({3, 8, 36, 3}, true);
  if (name == "ResNet50_vd") return ResNetOptions({3, 4, 6, 3}, true).deep_stem(true).avg_down(true);
  if (name == "ResNet50_last_stage_stride1") return ResNetOptions({3, 4, 6, 3}, true).last_stride(1);
  if (name == "ResNet50_adaptive_max_pool2d") return ResNetOptions({3, 4, 6, 3}, true).global_max_pool(true);
  throw Error("unknown ResNet '" + name + "'");
}

}  // namespace featlearn
