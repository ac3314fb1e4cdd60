// AlexNet with PaddleClas's structure and names (see alexnet.h).
#include <featlearn/model/alexnet.h>

#include <featlearn/common/error.h>
#include <featlearn/model/pp_lcnet.h>

#include <torch/torch.h>

#include <cmath>
#include <sstream>

namespace featlearn {
namespace nn = torch::nn;

namespace {

constexpr int64_t kFc6In = 256 * 6 * 6;

// PaddleClas's ParamAttr(initializer=Uniform(-stdv, stdv)) on both weight and bias.
void uniform_init(torch::Tensor& weight, torch::Tensor& bias, double stdv) {
  torch::NoGradGuard ng;
  weight.uniform_(-stdv, stdv);
  bias.uniform_(-stdv, stdv);
}

nn::Conv2d make_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, double stdv) {
  nn::Conv2d conv(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
  uniform_init(conv->weight, conv->bias, stdv);
  return conv;
}

nn::Linear make_linear(int64_t in, int64_t out, double stdv) {
  nn::Linear fc(in, out);
  uniform_init(fc->weight, fc->bias, stdv);
  return fc;
}

double fan_in_stdv(int64_t in, int64_t kernel) { return 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel)); }

}  // namespace

namespace alexnet {

ConvPoolLayerImpl::ConvPoolLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                                     double stdv) {
  register_module("relu", nn::ReLU());
  conv = register_module("_conv", make_conv(in, out, kernel, stride, padding, stdv));
  register_module("_pool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)));
}

torch::Tensor ConvPoolLayerImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  torch::Tensor y = c.step(child_path(path, "_conv"), x, [&](const torch::Tensor& t) { return conv->forward(t); });
  y = c.step(child_path(path, "relu"), y, [](const torch::Tensor& t) { return torch::relu(t); });
  return c.step(child_path(path, "_pool"), y,
                [](const torch::Tensor& t) { return torch::max_pool2d(t, {3, 3}, {2, 2}); });
}

}  // namespace alexnet

AlexNetImpl::AlexNetImpl(AlexNetOptions o) : options_(o) {
  FL_ASSERT(options_.class_num() > 0, "AlexNet class_num must be positive");
  conv1_ = register_module("_conv1", std::make_shared<alexnet::ConvPoolLayerImpl>(3, 64, 11, 4, 2, fan_in_stdv(3, 11)));
  conv2_ = register_module("_conv2", std::make_shared<alexnet::ConvPoolLayerImpl>(64, 192, 5, 1, 2, fan_in_stdv(64, 5)));
  conv3_ = register_module("_conv3", make_conv(192, 384, 3, 1, 1, fan_in_stdv(192, 3)));
  conv4_ = register_module("_conv4", make_conv(384, 256, 3, 1, 1, fan_in_stdv(384, 3)));
  conv5_ = register_module("_conv5", std::make_shared<alexnet::ConvPoolLayerImpl>(256, 256, 3, 1, 1, fan_in_stdv(256, 3)));
  for (const char* k : {"_conv1", "_conv2", "_conv5"}) multi_use_.insert(std::string(k) + ".relu");  // see header
  const double fc_stdv = 1.0 / std::sqrt(static_cast<double>(kFc6In));
  drop1_ = register_module("_drop1", paddle_nn::Dropout(0.5));
  fc6_ = register_module("_fc6", make_linear(kFc6In, 4096, fc_stdv));
  drop2_ = register_module("_drop2", paddle_nn::Dropout(0.5));
  fc7_ = register_module("_fc7", make_linear(4096, 4096, fc_stdv));
  fc8_ = register_module("_fc8", make_linear(4096, options_.class_num(), fc_stdv));
}

torch::Tensor AlexNetImpl::forward(torch::Tensor x) {
  StopCursor c(*this);
  const auto relu = [](const torch::Tensor& t) { return torch::relu(t); };
  x = c.step("_conv1", x, [&](const torch::Tensor& t) { return conv1_->run(t, c, "_conv1"); });
  x = c.step("_conv2", x, [&](const torch::Tensor& t) { return conv2_->run(t, c, "_conv2"); });
  x = c.step("_conv3", x, [&](const torch::Tensor& t) { return conv3_->forward(t); });
  if (!c.done()) x = relu(x);
  x = c.step("_conv4", x, [&](const torch::Tensor& t) { return conv4_->forward(t); });
  if (!c.done()) x = relu(x);
  x = c.step("_conv5", x, [&](const torch::Tensor& t) { return conv5_->run(t, c, "_conv5"); });
  if (c.done()) return x;
  x = x.flatten(1);
  x = c.step("_drop1", x, [&](const torch::Tensor& t) { return run_module(*drop1_, t, c, "_drop1"); });
  x = c.step("_fc6", x, [&](const torch::Tensor& t) {
    if (t.size(1) != kFc6In) {
      std::ostringstream shape;
      shape << t.sizes();
      throw Error("AlexNet: _fc6 takes the 256x6x6 = 9216 features of a 224x224 input, got " + shape.str() +
                  " after flatten; use Global.image_shape [3, 224, 224], or a BackboneStopLayer at or before "
                  "_conv5 for other input sizes");
    }
    return fc6_->forward(t);
  });
  if (!c.done()) x = relu(x);
  x = c.step("_drop2", x, [&](const torch::Tensor& t) { return run_module(*drop2_, t, c, "_drop2"); });
  x = c.step("_fc7", x, [&](const torch::Tensor& t) { return fc7_->forward(t); });
  if (!c.done()) x = relu(x);
  return c.step("_fc8", x, [&](const torch::Tensor& t) { return fc8_->forward(t); });
}

// PaddleClas's AlexNet(pretrained, use_ssld, class_num) (docs/config.md, "Arch.Backbone").
void register_alexnet_backbone() {
  backbone_registry().add("AlexNet", [](const ConfigNode& node) -> BackbonePtr {
    node.check_keys({"name", "pretrained", "use_ssld", "class_num"});
    const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
    AlexNetOptions o;
    o.class_num(node.get<int64_t>("class_num", 1000));
    if (o.class_num() <= 0) node["class_num"].fail("must be positive");
    const std::string pretrained = pplcnet::read_pretrained(
        node, ssld ? "AlexNet_ssld_pretrained.pdparams" : "AlexNet_pretrained.pdparams");
    auto m = std::make_shared<AlexNetImpl>(o);
    m->config_name = "AlexNet";
    m->pretrained_path = pretrained;
    return m;
  });
}

}  // namespace featlearn
