// AlexNet (alexnet.h): PaddleClas's structure, parameter names and count (counted by hand from PaddleClas's
// AlexNetDY), initialization, layer semantics, BackboneStopLayer names, config errors; Arch.is_rec on RecModel;
// the backbones of the three DeepHash configs.
#include <featlearn/model/alexnet.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

using namespace featlearn;
namespace nn = torch::nn;

using featlearn::test::error_of;
using featlearn::test::backbone_from_yaml;
using featlearn::test::output_shape;

namespace {

using Shape = std::vector<int64_t>;

int64_t an_count(const BackbonePtr& bb) {
  int64_t n = 0;
  for (const auto& p : bb->named_parameters(true)) n += p.value().numel();
  return n;
}

Shape an_shape(const BackbonePtr& bb, const std::string& name) {
  const auto params = bb->named_parameters(true);
  return params.contains(name) ? params[name].sizes().vec() : Shape{-1};
}

// Parameters by layer, from PaddleClas's AlexNetDY (weights + biases):
//   conv1 3·64·11·11 + 64 = 23,296      conv2 64·192·5·5 + 192 = 307,392    conv3 192·384·9 + 384 = 663,936
//   conv4 384·256·9 + 256 = 884,992     conv5 256·256·9 + 256 = 590,080
//   fc6 9216·4096 + 4096 = 37,752,832   fc7 4096·4096 + 4096 = 16,781,312   fc8 4096·C + C
// Total at C = 1000: 61,100,840; at C = 48 (the DeepHash configs): 57,200,496.
constexpr int64_t kAlexNet1000 = 61100840;
constexpr int64_t kAlexNet48 = 57200496;

}  // namespace

TEST(AlexNet, StructureNamesAndParameterCount) {
  auto bb = backbone_from_yaml("{name: AlexNet}");
  EXPECT_EQ(an_count(bb), kAlexNet1000);
  std::vector<std::string> top;
  for (const auto& c : bb->named_children()) top.push_back(c.key());
  EXPECT_EQ(top, (std::vector<std::string>{"_conv1", "_conv2", "_conv3", "_conv4", "_conv5", "_drop1", "_fc6",
                                           "_drop2", "_fc7", "_fc8"}));
  EXPECT_EQ(an_shape(bb, "_conv1._conv.weight"), (Shape{64, 3, 11, 11}));
  EXPECT_EQ(an_shape(bb, "_conv1._conv.bias"), (Shape{64}));
  EXPECT_EQ(an_shape(bb, "_conv2._conv.weight"), (Shape{192, 64, 5, 5}));
  EXPECT_EQ(an_shape(bb, "_conv3.weight"), (Shape{384, 192, 3, 3}));
  EXPECT_EQ(an_shape(bb, "_conv4.weight"), (Shape{256, 384, 3, 3}));
  EXPECT_EQ(an_shape(bb, "_conv5._conv.weight"), (Shape{256, 256, 3, 3}));
  EXPECT_EQ(an_shape(bb, "_fc6.weight"), (Shape{4096, 9216}));
  EXPECT_EQ(an_shape(bb, "_fc7.bias"), (Shape{4096}));
  EXPECT_EQ(an_shape(bb, "_fc8.weight"), (Shape{1000, 4096}));
  // ConvPoolLayer registers relu first (PaddleClas's order).
  std::vector<std::string> sub;
  for (const auto& c : bb->named_modules()["_conv1"]->named_children()) sub.push_back(c.key());
  EXPECT_EQ(sub, (std::vector<std::string>{"relu", "_conv", "_pool"}));
  EXPECT_EQ(an_count(backbone_from_yaml("{name: AlexNet, class_num: 48}")), kAlexNet48);
}

TEST(AlexNet, PaddleClasUniformInitialization) {
  auto bb = backbone_from_yaml("{name: AlexNet, class_num: 10}", "", 3);
  const auto params = bb->named_parameters(true);
  // Uniform(-s, s) on weights and biases: s = 1/sqrt(fan_in) for the convs, 1/sqrt(9216) for every fc.
  const std::vector<std::pair<std::string, double>> bounds = {
      {"_conv1._conv", 1 / std::sqrt(3.0 * 121)}, {"_conv2._conv", 1 / std::sqrt(64.0 * 25)},
      {"_conv3", 1 / std::sqrt(192.0 * 9)},       {"_conv4", 1 / std::sqrt(384.0 * 9)},
      {"_conv5._conv", 1 / std::sqrt(256.0 * 9)}, {"_fc6", 1 / 96.0},
      {"_fc7", 1 / 96.0},                         {"_fc8", 1 / 96.0}};
  for (const auto& [layer, s] : bounds) {
    SCOPED_TRACE(layer);
    for (const char* what : {".weight", ".bias"}) {
      const auto& t = params[layer + what];
      EXPECT_LE(t.abs().max().item<double>(), s * (1 + 1e-6));  // s rounded to float
      // The largest |value| of n uniform draws is close to s; the std is s/sqrt(3).
      EXPECT_GT(t.abs().max().item<double>(), s * (t.numel() >= 64 ? 0.9 : 0.5));
      if (t.numel() >= 1000) EXPECT_NEAR(t.std().item<double>(), s / std::sqrt(3.0), 0.05 * s);
    }
  }
}

TEST(AlexNet, ForwardIsPaddleClasComputation) {
  auto bb = backbone_from_yaml("{name: AlexNet, class_num: 48}", "", 5);
  torch::manual_seed(6);
  const auto x = torch::randn({2, 3, 224, 224});
  torch::NoGradGuard ng;
  const auto out = bb->forward(x);
  EXPECT_EQ(out.sizes().vec(), (Shape{2, 48}));
  auto m = bb->named_modules();
  auto conv = [&](const std::string& p, const torch::Tensor& t) { return m[p]->as<nn::Conv2d>()->forward(t); };
  auto fc = [&](const std::string& p, const torch::Tensor& t) { return m[p]->as<nn::Linear>()->forward(t); };
  auto pool = [](const torch::Tensor& t) { return torch::max_pool2d(t, {3, 3}, {2, 2}); };
  auto f = pool(torch::relu(conv("_conv1._conv", x)));
  EXPECT_EQ(f.sizes().vec(), (Shape{2, 64, 27, 27}));
  f = pool(torch::relu(conv("_conv2._conv", f)));
  EXPECT_EQ(f.sizes().vec(), (Shape{2, 192, 13, 13}));
  f = torch::relu(conv("_conv4", torch::relu(conv("_conv3", f))));
  f = pool(torch::relu(conv("_conv5._conv", f)));
  EXPECT_EQ(f.sizes().vec(), (Shape{2, 256, 6, 6}));
  // Eval: Paddle's downscale_in_infer dropout multiplies by 1 - 0.5.
  f = torch::relu(fc("_fc6", f.flatten(1) * 0.5));
  f = torch::relu(fc("_fc7", f * 0.5));
  const auto want = fc("_fc8", f);
  EXPECT_TRUE(torch::allclose(out, want, 1e-4, 1e-5)) << (out - want).abs().max().item<double>();
  // Other input sizes stop at fc6 with a message.
  const std::string msg = error_of([&] { bb->forward(torch::randn({1, 3, 96, 96})); });
  EXPECT_NE(msg.find("224x224"), std::string::npos) << msg;
  EXPECT_NE(msg.find("_conv5"), std::string::npos) << msg;
}

TEST(AlexNet, StopLayersUsePaddleClasNames) {
  auto bb = backbone_from_yaml("{name: AlexNet}");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_pool_layer_1"), "_conv2");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv2d_2"), "_conv3");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv2d_4"), "_conv5._conv");
  EXPECT_EQ(resolve_stop_layer(*bb, "max_pool2d_2"), "_conv5._pool");
  EXPECT_EQ(resolve_stop_layer(*bb, "dropout_1"), "_drop2");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_0"), "_fc6");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_2"), "_fc8");
  // A ConvPoolLayer's relu runs after the conv registered behind it: not a stop layer.
  for (const char* name : {"_conv1.relu", "re_lu_2"}) {
    const std::string msg = error_of([&] { resolve_stop_layer(*bb, name); });
    EXPECT_NE(msg.find("called several times"), std::string::npos) << name << ": " << msg;
  }
  // A stop at _conv2._conv returns that conv's output (no relu, no pool) and drops everything after it.
  auto at_conv = backbone_from_yaml("{name: AlexNet}", "_conv2._conv", 9);
  EXPECT_FALSE(at_conv->named_parameters(true).contains("_conv3.weight"));
  EXPECT_FALSE(at_conv->named_parameters(true).contains("_fc6.weight"));
  EXPECT_EQ(an_count(at_conv), 23296 + 307392);
  auto m = at_conv->named_modules();
  torch::manual_seed(2);
  const auto x = torch::randn({1, 3, 64, 64});
  torch::NoGradGuard ng;
  const auto want = m["_conv2._conv"]->as<nn::Conv2d>()->forward(
      torch::max_pool2d(torch::relu(m["_conv1._conv"]->as<nn::Conv2d>()->forward(x)), {3, 3}, {2, 2}));
  const auto got = at_conv->forward(x);
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6));
  EXPECT_LT(got.min().item<double>(), 0.0);  // before the relu
  // A stop at _conv5 works for any input size.
  EXPECT_EQ(output_shape(backbone_from_yaml("{name: AlexNet}", "_conv5"), 128), (Shape{1, 256, 3, 3}));
}

TEST(AlexNet, ConfigErrors) {
  std::string msg = error_of([] { backbone_from_yaml("{name: AlexNet, class_num: 0}"); });
  EXPECT_NE(msg.find("class_num"), std::string::npos) << msg;
  msg = error_of([] { backbone_from_yaml("{name: AlexNet, clas_num: 3}"); });
  EXPECT_NE(msg.find("did you mean class_num"), std::string::npos) << msg;
  msg = error_of([] { backbone_from_yaml("{name: AlexNet, pretrained: True}"); });
  EXPECT_NE(msg.find("AlexNet_pretrained.pdparams"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pretrained: False"), std::string::npos) << msg;
  msg = error_of([] { backbone_from_yaml("{name: AlexNet, use_ssld: maybe}"); });
  EXPECT_NE(msg.find("use_ssld"), std::string::npos) << msg;
}

TEST(AlexNet, DeepHashConfigsAndIsRec) {
  // DCH / LCDSH: AlexNet(class_num 48) features; DSHSD: + Tanh neck and FC head (10 classes). is_rec: True.
  for (const char* rel : {"DeepHash/DCH.yaml", "DeepHash/LCDSH.yaml", "DeepHash/DSHSD.yaml"}) {
    SCOPED_TRACE(rel);
    auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + rel);
    cfg.apply_override("Arch.Backbone.pretrained=False");
    torch::manual_seed(0);
    RecModel model(cfg["Arch"], cfg["Global"]["image_shape"].as<std::vector<int64_t>>());
    model->eval();
    torch::NoGradGuard ng;
    const auto out = model->forward(torch::randn({2, 3, 224, 224}), torch::tensor({1, 2}));
    EXPECT_EQ(out.features.sizes().vec(), (Shape{2, 48}));
    if (std::string(rel) == "DeepHash/DSHSD.yaml") {
      EXPECT_EQ(out.logits.sizes().vec(), (Shape{2, 10}));
      EXPECT_LE(out.features.abs().max().item<double>(), 1.0);  // tanh
    } else {
      EXPECT_FALSE(out.logits.defined());
    }
  }
  // is_rec: False builds the same model (the labels reach only a Head, and PaddleClas passes them whenever
  // there is one); a non-boolean is an error naming the key.
  const std::string base = "Arch:\n  name: RecModel\n  Backbone: {name: AlexNet, class_num: 8}\n  BackboneStopLayer: {name: _conv1}\n";
  auto build_out = [&](const std::string& extra) {
    auto cfg = Config::from_string(base + extra, "arch.yaml");
    torch::manual_seed(1);
    RecModel model(cfg["Arch"]);
    model->eval();
    torch::manual_seed(2);
    torch::NoGradGuard ng;
    return model->forward(torch::randn({1, 3, 64, 64}), torch::tensor({0})).features;
  };
  const auto a = build_out("  is_rec: True\n"), b = build_out("  is_rec: False\n"), c = build_out("");
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::equal(a, c));
  const std::string msg = error_of([&] { build_out("  is_rec: sometimes\n"); });
  EXPECT_NE(msg.find("is_rec"), std::string::npos) << msg;
  EXPECT_NE(msg.find("arch.yaml:5"), std::string::npos) << msg;
}
