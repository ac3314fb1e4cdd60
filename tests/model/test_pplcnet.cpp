// PP-LCNet and PP-LCNetV2 (pp_lcnet.h, pp_lcnet_v2.h): stage shapes, parameter counts against PaddleClas's
// published numbers, PaddleClas parameter names, Paddle's layer semantics (hardsigmoid, downscale_in_infer
// dropout), re-parameterization, BackboneStopLayer, the PP-ShiTu / Vehicle configs' backbones, config errors.
#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/pp_lcnet_v2.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>

using namespace featlearn;
namespace nn = torch::nn;

namespace {

using LcShape = std::vector<int64_t>;
using featlearn::test::error_of;
using featlearn::test::output_shape;

// Builds Arch.Backbone (+ Arch.BackboneStopLayer) from YAML text, in eval mode.
BackbonePtr lc_build(const std::string& backbone_yaml, const std::string& stop = "") {
  std::string text = "Arch:\n  Backbone: " + backbone_yaml + "\n";
  if (!stop.empty()) text += "  BackboneStopLayer: {name: \"" + stop + "\"}\n";
  auto cfg = Config::from_string(text, "test.yaml");
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  bb->eval();
  return bb;
}

int64_t lc_count(const BackbonePtr& bb, bool skip_rep_branches = false) {
  int64_t n = 0;
  for (const auto& p : bb->named_parameters(true))
    if (!skip_rep_branches || p.key().find(".dw_conv_list.") == std::string::npos) n += p.value().numel();
  return n;
}

// Output shape of every top-level child for one [1, 3, hw, hw] input.
std::map<std::string, LcShape> lc_stage_shapes(const BackbonePtr& bb, int64_t hw) {
  torch::NoGradGuard ng;
  std::map<std::string, LcShape> out;
  auto* s = dynamic_cast<StoppableBackboneImpl*>(bb.get());
  EXPECT_NE(s, nullptr);
  s->forward_observed(torch::randn({1, 3, hw, hw}),
                      [&](const std::string& name, const torch::Tensor& y) { out[name] = y.sizes().vec(); });
  return out;
}

LcShape lc_param_shape(const BackbonePtr& bb, const std::string& name) {
  const auto params = bb->named_parameters(true);
  if (!params.contains(name)) return {-1};
  return params[name].sizes().vec();
}

double lc_rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>() / a.abs().max().item<double>();
}

// Random BN statistics and affine parameters, so that the fused kernels differ from the raw ones.
void lc_randomize_bn(nn::Module& m) {
  torch::NoGradGuard ng;
  for (auto& mod : m.modules())
    if (auto* bn = mod->as<nn::BatchNorm2d>()) {
      bn->running_mean.normal_(0, 0.2);
      bn->running_var.uniform_(0.5, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.2);
    }
}

struct LcScale {
  const char* name;
  LcShape channels;    // conv1, blocks2 .. blocks6, hand-computed with PaddleClas's make_divisible
  int64_t params;      // trainable parameters, ImageNet form (class_num 1000, class_expand 1280)
  double published_m;  // PaddleClas's published Params(M)
};

// Published Params(M): PaddleClas's model documentation, PP-LCNet page (docs/config.md, "Arch.Backbone",
// repeats the table). The exact counts are the layer-by-layer sums of PaddleClas's NET_CONFIG (convolutions
// without bias, BN weight + bias, SE convolutions with bias, last_conv without bias, fc with bias).
const std::vector<LcScale> kLcScales = {
    {"PPLCNet_x0_25", {8, 8, 16, 32, 64, 128}, 1521184, 1.5},
    {"PPLCNet_x0_35", {8, 16, 24, 48, 88, 176}, 1643090, 1.6},
    {"PPLCNet_x0_5", {8, 16, 32, 64, 128, 256}, 1879576, 1.9},
    {"PPLCNet_x0_75", {16, 24, 48, 96, 192, 384}, 2357008, 2.4},
    {"PPLCNet_x1_0", {16, 32, 64, 128, 256, 512}, 2952520, 3.0},
    {"PPLCNet_x1_5", {24, 48, 96, 192, 384, 768}, 4499832, 4.5},
    {"PPLCNet_x2_0", {32, 64, 128, 256, 512, 1024}, 6521512, 6.5},
    {"PPLCNet_x2_5", {40, 80, 160, 320, 640, 1280}, 9017560, 9.0},
};

}  // namespace

TEST(PPLCNet, StageShapesForEveryScaleAt224) {
  for (const auto& s : kLcScales) {
    SCOPED_TRACE(s.name);
    auto bb = lc_build(std::string("{name: ") + s.name + "}");
    const auto shapes = lc_stage_shapes(bb, 224);
    const auto& c = s.channels;
    EXPECT_EQ(shapes.at("conv1"), (LcShape{1, c[0], 112, 112}));
    EXPECT_EQ(shapes.at("blocks2"), (LcShape{1, c[1], 112, 112}));
    EXPECT_EQ(shapes.at("blocks3"), (LcShape{1, c[2], 56, 56}));
    EXPECT_EQ(shapes.at("blocks4"), (LcShape{1, c[3], 28, 28}));
    EXPECT_EQ(shapes.at("blocks5"), (LcShape{1, c[4], 14, 14}));
    EXPECT_EQ(shapes.at("blocks6"), (LcShape{1, c[5], 7, 7}));
    EXPECT_EQ(shapes.at("avg_pool"), (LcShape{1, c[5], 1, 1}));
    EXPECT_EQ(shapes.at("last_conv"), (LcShape{1, 1280, 1, 1}));
    EXPECT_EQ(shapes.at("flatten"), (LcShape{1, 1280}));
    EXPECT_EQ(shapes.at("fc"), (LcShape{1, 1000}));
  }
}

TEST(PPLCNet, ParameterCountsMatchPaddleClas) {
  for (const auto& s : kLcScales) {
    SCOPED_TRACE(s.name);
    const int64_t n = lc_count(lc_build(std::string("{name: ") + s.name + "}"));
    EXPECT_EQ(n, s.params);
    EXPECT_NEAR(n / 1e6, s.published_m, 0.05);  // equal to the published value at its 0.1M precision
  }
  // PPLCNetBaseNet reads the scale from the config.
  EXPECT_EQ(lc_count(lc_build("{name: PPLCNetBaseNet, scale: 0.5}")), 1879576);
  EXPECT_EQ(lc_count(lc_build("{name: PPLCNetBaseNet}")), 2952520);
}

TEST(PPLCNet, PaddleClasParameterNames) {
  auto bb = lc_build("{name: PPLCNet_x1_0}");
  EXPECT_EQ(lc_param_shape(bb, "conv1.conv.weight"), (LcShape{16, 3, 3, 3}));
  EXPECT_EQ(lc_param_shape(bb, "conv1.bn.weight"), (LcShape{16}));
  EXPECT_EQ(lc_param_shape(bb, "blocks2.0.dw_conv.conv.weight"), (LcShape{16, 1, 3, 3}));
  EXPECT_EQ(lc_param_shape(bb, "blocks2.0.pw_conv.conv.weight"), (LcShape{32, 16, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "blocks5.1.dw_conv.conv.weight"), (LcShape{256, 1, 5, 5}));
  EXPECT_EQ(lc_param_shape(bb, "blocks6.0.se.conv1.weight"), (LcShape{64, 256, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "blocks6.0.se.conv1.bias"), (LcShape{64}));
  EXPECT_EQ(lc_param_shape(bb, "blocks6.1.se.conv2.weight"), (LcShape{512, 128, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "last_conv.weight"), (LcShape{1280, 512, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "last_conv.bias"), (LcShape{-1}));  // bias_attr=False
  EXPECT_EQ(lc_param_shape(bb, "blocks5.0.se.conv1.weight"), (LcShape{-1}));  // SE only in blocks6
  EXPECT_EQ(lc_param_shape(bb, "fc.weight"), (LcShape{1000, 1280}));
  EXPECT_TRUE(bb->named_buffers(true).contains("blocks3.1.pw_conv.bn.running_var"));
  // Top-level order = PaddleClas's sublayer order (what BackboneStopLayer truncates by).
  std::vector<std::string> top;
  for (const auto& c : bb->named_children()) top.push_back(c.key());
  EXPECT_EQ(top, (std::vector<std::string>{"conv1", "blocks2", "blocks3", "blocks4", "blocks5", "blocks6", "avg_pool",
                                           "last_conv", "act", "dropout", "flatten", "fc"}));
  // use_last_conv: False drops last_conv/act/dropout; fc reads the pooled blocks6 output.
  auto plain = lc_build("{name: PPLCNet_x1_0, use_last_conv: False, class_num: 10}");
  EXPECT_EQ(lc_param_shape(plain, "fc.weight"), (LcShape{10, 512}));
  EXPECT_FALSE(plain->named_modules().contains("last_conv"));
  EXPECT_FALSE(plain->named_modules().contains("dropout"));
  EXPECT_EQ(output_shape(plain, 64, 2), (LcShape{2, 10}));
}

TEST(PPLCNet, KeysChangeTheStructure) {
  // stride_list: conv1 and the first block of blocks3..blocks6.
  auto s = lc_stage_shapes(lc_build("{name: PPLCNet_x0_25, stride_list: [2, 2, 2, 2, 1]}"), 224);
  EXPECT_EQ(s.at("blocks6"), (LcShape{1, 128, 14, 14}));
  s = lc_stage_shapes(lc_build("{name: PPLCNet_x0_25, stride_list: [1, 2, 2, 2, 2]}"), 64);
  EXPECT_EQ(s.at("conv1"), (LcShape{1, 8, 64, 64}));
  auto relu6 = lc_build("{name: PPLCNet_x0_25, act: relu6, class_expand: 64}");
  EXPECT_EQ(relu6->named_modules()["conv1.act"]->name(), "featlearn::paddle_nn::ReLU6Impl");
  EXPECT_EQ(relu6->named_modules()["act"]->name(), "featlearn::paddle_nn::ReLU6Impl");
  EXPECT_EQ(lc_param_shape(relu6, "last_conv.weight"), (LcShape{64, 128, 1, 1}));
  auto relu = lc_build("{name: PPLCNet_x0_25, act: relu}");
  EXPECT_EQ(relu->named_modules()["blocks2.0.pw_conv.act"]->name(), "torch::nn::ReLUImpl");
}

TEST(PPLCNet, PaddleHardsigmoidAndSE) {
  // paddle.nn.Hardsigmoid = F.hardsigmoid(slope=0.1666667, offset=0.5); 2.5 -> 0.9166667 (slope 0.2 gives 1).
  paddle_nn::Hardsigmoid hs;
  const auto x = torch::tensor({-4.0f, -3.0f, 0.0f, 1.0f, 2.5f, 3.0f, 5.0f});
  const auto expected = torch::tensor({0.0f, 0.0f, 0.5f, 0.6666667f, 0.91666675f, 1.0f, 1.0f});
  EXPECT_TRUE(torch::allclose(hs->forward(x), expected, 0, 1e-6)) << hs->forward(x);

  // SEModule = x * hardsigmoid(conv2(relu(conv1(avg_pool(x))))).
  torch::manual_seed(3);
  auto se = std::make_shared<pplcnet::SEModuleImpl>(16, 4, false);
  auto mods = se->named_modules();
  auto* conv1 = mods["conv1"]->as<nn::Conv2d>();
  auto* conv2 = mods["conv2"]->as<nn::Conv2d>();
  ASSERT_TRUE(conv1 && conv2);
  {
    torch::NoGradGuard ng;
    conv2->bias.fill_(2.0);  // gates near 0.83, where the slopes 1/6 and 0.2 differ
  }
  torch::NoGradGuard ng;
  const auto in = torch::randn({2, 16, 5, 5});
  const auto pooled = in.mean({2, 3}, true);
  const auto z = conv2->forward(torch::relu(conv1->forward(pooled)));
  const auto want = in * torch::clamp(z / 6.0 + 0.5, 0.0, 1.0);
  EXPECT_LE((se->forward(in) - want).abs().max().item<double>(), 1e-6);
  EXPECT_GT((se->forward(in) - in * torch::clamp(z * 0.2 + 0.5, 0.0, 1.0)).abs().max().item<double>(), 1e-3);
  // PP-LCNetV2's SE gate is a sigmoid (registered under the same name).
  auto se2 = std::make_shared<pplcnet::SEModuleImpl>(16, 4, true);
  EXPECT_EQ(se2->named_modules()["hardsigmoid"]->name(), "featlearn::paddle_nn::SigmoidImpl");
}

TEST(PPLCNet, PaddleDropoutDownscalesInInfer) {
  torch::manual_seed(5);
  paddle_nn::Dropout d(0.25);
  const auto x = torch::ones({200000});
  d->train();
  const auto y = d->forward(x);
  // Kept values are not rescaled (LibTorch's dropout would give 1 / 0.75 = 1.333).
  EXPECT_TRUE(((y == 0) | (y == 1)).all().item<bool>());
  EXPECT_NEAR(y.mean().item<double>(), 0.75, 0.01);
  d->eval();
  EXPECT_TRUE(torch::equal(d->forward(torch::full({3}, 2.0f)), torch::full({3}, 1.5f)));
  paddle_nn::Dropout none(0.0), all(1.0);
  none->train();
  all->train();
  EXPECT_TRUE(torch::equal(none->forward(x), x));
  EXPECT_EQ(all->forward(x).abs().sum().item<double>(), 0.0);

  // In the model (dropout_prob 0.2): eval features = 0.8 x the activation before the dropout.
  torch::manual_seed(7);
  auto at_act = lc_build("{name: PPLCNet_x0_25}", "act");
  torch::manual_seed(7);
  auto at_dropout = lc_build("{name: PPLCNet_x0_25}", "dropout");
  torch::NoGradGuard ng;
  const auto in = torch::randn({2, 3, 64, 64});
  const auto a = at_act->forward(in), b = at_dropout->forward(in);
  EXPECT_GT(a.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(b, a * 0.8, 1e-6, 1e-7));
  torch::manual_seed(7);
  auto other = lc_build("{name: PPLCNet_x0_25, dropout_prob: 0.5}", "dropout");
  EXPECT_TRUE(torch::allclose(other->forward(in), a * 0.5, 1e-6, 1e-7));
}

TEST(PPLCNet, BackboneStopLayer) {
  // The PP-ShiTu / Vehicle configs' stop layer: flatten (fc leaves the model).
  auto flat = lc_build("{name: PPLCNet_x2_5}", "flatten");
  EXPECT_EQ(output_shape(flat, 224), (LcShape{1, 1280}));
  EXPECT_FALSE(flat->named_parameters(true).contains("fc.weight"));
  EXPECT_TRUE(flat->named_parameters(true).contains("last_conv.weight"));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNet_x2_5}", "blocks5"), 224), (LcShape{1, 640, 14, 14}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNet_x1_0}", "blocks6[0].se"), 64), (LcShape{1, 256, 2, 2}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNet_x1_0}", "blocks6.0.se.conv1"), 64), (LcShape{1, 64, 1, 1}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNet_x1_0}", "blocks4[1].dw_conv.bn"), 64), (LcShape{1, 128, 8, 8}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNet_x1_0}", "avg_pool"), 64), (LcShape{1, 512, 1, 1}));
  // A stop inside the SE returns the gate, not x * gate.
  auto gate = lc_build("{name: PPLCNet_x1_0}", "blocks6.0.se.hardsigmoid");
  const auto g = [&] {
    torch::NoGradGuard ng;
    return gate->forward(torch::randn({1, 3, 64, 64}));
  }();
  EXPECT_EQ(g.sizes().vec(), (LcShape{1, 256, 1, 1}));
  EXPECT_TRUE(((g >= 0) & (g <= 1)).all().item<bool>());
  // Paddle full names, counted per Paddle class in PaddleClas's sublayer order.
  auto bb = lc_build("{name: PPLCNet_x1_0}");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_bn_layer_0"), "conv1");
  EXPECT_EQ(resolve_stop_layer(*bb, "conv_bn_layer_1"), "blocks2.0.dw_conv");
  EXPECT_EQ(resolve_stop_layer(*bb, "depthwise_separable_12"), "blocks6.1");
  EXPECT_EQ(resolve_stop_layer(*bb, "se_module_1"), "blocks6.1.se");
  EXPECT_EQ(resolve_stop_layer(*bb, "hardsigmoid_0"), "blocks6.0.se.hardsigmoid");
  EXPECT_EQ(resolve_stop_layer(*bb, "hardswish_0"), "conv1.act");
  EXPECT_EQ(resolve_stop_layer(*bb, "hardswish_27"), "act");
  EXPECT_EQ(resolve_stop_layer(*bb, "dropout_0"), "dropout");
  EXPECT_EQ(resolve_stop_layer(*bb, "flatten_0"), "flatten");
  EXPECT_EQ(resolve_stop_layer(*bb, "linear_0"), "fc");
  EXPECT_EQ(resolve_stop_layer(*bb, "blocks5[2].dw_conv"), "blocks5.2.dw_conv");
  const std::string msg = error_of([] { lc_build("{name: PPLCNet_x1_0}", "flaten"); });
  EXPECT_NE(msg.find("did you mean flatten"), std::string::npos) << msg;
}

TEST(PPLCNet, TanhVariant) {
  torch::manual_seed(11);
  auto plain = lc_build("{name: PPLCNet_x2_5, class_num: 512}");
  torch::manual_seed(11);
  auto tanh = lc_build("{name: PPLCNet_x2_5_Tanh, class_num: 512}");
  EXPECT_EQ(lc_param_shape(tanh, "fc.origin_layer.weight"), (LcShape{512, 1280}));
  EXPECT_EQ(lc_param_shape(tanh, "fc.weight"), (LcShape{-1}));
  EXPECT_EQ(lc_count(tanh), lc_count(plain));
  torch::manual_seed(11);
  auto before_tanh = lc_build("{name: PPLCNet_x2_5_Tanh, class_num: 512}", "fc.origin_layer");
  torch::NoGradGuard ng;
  // Freshly initialized activations shrink through the 27 hardswish layers; large fc weights bring the logits
  // to where tanh is far from the identity.
  plain->named_parameters()["fc.weight"].mul_(1e6);
  tanh->named_parameters()["fc.origin_layer.weight"].mul_(1e6);
  before_tanh->named_parameters()["fc.origin_layer.weight"].mul_(1e6);
  const auto in = torch::randn({2, 3, 64, 64});
  const auto logits = plain->forward(in);
  EXPECT_GT(logits.abs().max().item<double>(), 2.0);
  const auto out = tanh->forward(in);
  EXPECT_LT(out.abs().max().item<double>(), 1.0);
  EXPECT_LE((out - torch::tanh(logits)).abs().max().item<double>(), 1e-5);
  EXPECT_LE(lc_rel_diff(logits, before_tanh->forward(in)), 1e-6);
  EXPECT_EQ(resolve_stop_layer(*tanh, "tanh_suffix_0"), "fc");
}

// ---- PP-LCNetV2 ---------------------------------------------------------------------------------------------

namespace {

struct LcV2Variant {
  const char* name;
  LcShape channels;         // stem, stages[0..3] outputs, hand-computed with make_divisible
  int64_t train_params;     // every parameter of the training form (branches and dw_conv)
  int64_t infer_params;     // the re-parameterized form: without the dw_conv_list branches
  double published_m;       // PaddleClas's published Params(M); < 0 where it publishes none
};

// Published Params(M): PaddleClas's model documentation, PP-LCNetV2 page (only PPLCNetV2_base: 6.6; repeated in
// docs/config.md, "Arch.Backbone"). It counts the re-parameterized network: each RepDepthwiseSeparable's branches
// fused into its dw_conv (with bias). Exact counts: layer-by-layer sums of PaddleClas's NET_CONFIG.
const std::vector<LcV2Variant> kLcV2 = {
    {"PPLCNetV2_small", {48, 96, 192, 384, 768}, 4193448, 4092840, -1},
    {"PPLCNetV2_base", {64, 128, 256, 512, 1024}, 6800360, 6624232, 6.6},
    {"PPLCNetV2_large", {80, 160, 320, 640, 1280}, 10716840, 10444200, -1},
};

}  // namespace

TEST(PPLCNetV2, StageShapesAt224) {
  for (const auto& v : kLcV2) {
    SCOPED_TRACE(v.name);
    const auto& c = v.channels;
    auto bb = lc_build(std::string("{name: ") + v.name + "}");
    const auto shapes = lc_stage_shapes(bb, 224);
    EXPECT_EQ(shapes.at("stem"), (LcShape{1, c[0], 112, 112}));
    EXPECT_EQ(shapes.at("stages"), (LcShape{1, c[4], 7, 7}));
    EXPECT_EQ(shapes.at("flatten"), (LcShape{1, 1280}));
    EXPECT_EQ(shapes.at("fc"), (LcShape{1, 1000}));
    for (int st = 0; st < 4; ++st) {
      const int64_t hw = 224 >> (st + 2);
      EXPECT_EQ(output_shape(lc_build(std::string("{name: ") + v.name + "}", "stages[" + std::to_string(st) + "]"), 224),
                (LcShape{1, c[st + 1], hw, hw}))
          << "stage " << st;
    }
  }
}

TEST(PPLCNetV2, ParameterCountsMatchPaddleClas) {
  for (const auto& v : kLcV2) {
    SCOPED_TRACE(v.name);
    auto bb = lc_build(std::string("{name: ") + v.name + "}");
    EXPECT_EQ(lc_count(bb), v.train_params);
    EXPECT_EQ(lc_count(bb, /*skip_rep_branches=*/true), v.infer_params);
    if (v.published_m > 0) EXPECT_NEAR(v.infer_params / 1e6, v.published_m, 0.05);
  }
}

TEST(PPLCNetV2, PaddleClasParameterNames) {
  auto bb = lc_build("{name: PPLCNetV2_base}");
  EXPECT_EQ(lc_param_shape(bb, "stem.0.conv.weight"), (LcShape{32, 3, 3, 3}));
  EXPECT_EQ(lc_param_shape(bb, "stem.1.dw_conv.conv.weight"), (LcShape{32, 1, 3, 3}));
  EXPECT_EQ(lc_param_shape(bb, "stem.1.pw_conv.conv.weight"), (LcShape{64, 32, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.0.0.dw_conv.conv.weight"), (LcShape{64, 1, 3, 3}));  // no rep in stage 1
  // Rep block at stride 2: kernels 5 and 3 (no 1x1 branch); its fused dw_conv has a bias.
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.dw_conv_list.0.conv.weight"), (LcShape{256, 1, 5, 5}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.dw_conv_list.1.conv.weight"), (LcShape{256, 1, 3, 3}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.dw_conv_list.2.conv.weight"), (LcShape{-1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.dw_conv.weight"), (LcShape{256, 1, 5, 5}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.dw_conv.bias"), (LcShape{256}));
  // At stride 1: kernels 5, 3, 1.
  EXPECT_EQ(lc_param_shape(bb, "stages.2.1.dw_conv_list.2.conv.weight"), (LcShape{512, 1, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.1.dw_conv_list.2.bn.bias"), (LcShape{512}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.1.se.conv1.weight"), (LcShape{128, 512, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.0.pw_conv_1.conv.weight"), (LcShape{256, 256, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.1.pw_conv_1.conv.weight"), (LcShape{256, 512, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.2.1.pw_conv_2.conv.weight"), (LcShape{512, 256, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.3.1.pw_conv.conv.weight"), (LcShape{1024, 1024, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "stages.3.1.se.conv1.weight"), (LcShape{-1}));  // SE only in stage 3
  EXPECT_EQ(lc_param_shape(bb, "last_conv.weight"), (LcShape{1280, 1024, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "last_conv.bias"), (LcShape{-1}));
  EXPECT_EQ(bb->named_modules()["act"]->name(), "torch::nn::ReLUImpl");
  std::vector<std::string> top;
  for (const auto& c : bb->named_children()) top.push_back(c.key());
  EXPECT_EQ(top, (std::vector<std::string>{"stem", "stages", "avg_pool", "last_conv", "act", "dropout", "flatten",
                                           "fc"}));
}

TEST(PPLCNetV2, ShiTuVariant) {
  // GeneralRecognitionV2_PPLCNetV2_base.yaml: class_expand 512, stop at flatten.
  auto bb = lc_build("{name: PPLCNetV2_base_ShiTu, class_expand: 512}", "flatten");
  EXPECT_EQ(lc_param_shape(bb, "last_conv.weight"), (LcShape{512, 1024, 1, 1}));
  EXPECT_EQ(lc_param_shape(bb, "last_conv.bias"), (LcShape{512}));  // bias added
  EXPECT_EQ(bb->named_modules()["act"]->name(), "torch::nn::IdentityImpl");  // ReLU removed
  // stages[3] at stride 1, so its first block also has the 1x1 branch.
  EXPECT_EQ(lc_param_shape(bb, "stages.3.0.dw_conv_list.2.conv.weight"), (LcShape{512, 1, 1, 1}));
  EXPECT_EQ(output_shape(bb, 224), (LcShape{1, 512}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNetV2_base_ShiTu}", "stages"), 224), (LcShape{1, 1024, 14, 14}));
  // Features can be negative (no ReLU) and are the last_conv output times 0.8 (eval dropout).
  torch::manual_seed(2);
  auto feat = lc_build("{name: PPLCNetV2_base_ShiTu, class_expand: 512}", "flatten");
  torch::manual_seed(2);
  auto conv = lc_build("{name: PPLCNetV2_base_ShiTu, class_expand: 512}", "last_conv");
  torch::manual_seed(9);
  lc_randomize_bn(*feat);
  torch::manual_seed(9);
  lc_randomize_bn(*conv);
  torch::NoGradGuard ng;
  const auto in = torch::randn({2, 3, 64, 64});
  const auto f = feat->forward(in);
  EXPECT_TRUE(torch::allclose(f, conv->forward(in).flatten(1) * 0.8, 1e-5, 1e-6));
  EXPECT_LT(f.min().item<double>(), 0.0);
}

TEST(PPLCNetV2, ReParameterizationKeepsFeatures) {
  for (const char* name : {"PPLCNetV2_base", "PPLCNetV2_base_ShiTu", "PPLCNetV2_small"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(21);
    auto bb = lc_build(std::string("{name: ") + name + "}");
    lc_randomize_bn(*bb);
    auto* v2 = dynamic_cast<PPLCNetV2Impl*>(bb.get());
    ASSERT_NE(v2, nullptr);
    torch::NoGradGuard ng;
    {  // the fused convs start as something else, so a fusion that is not used would show
      for (auto& m : bb->modules())
        if (auto* b = dynamic_cast<pplcnet::RepDepthwiseSeparableImpl*>(m.get()); b && b->use_rep())
          b->named_parameters()["dw_conv.weight"].normal_();
    }
    const auto in = torch::randn({2, 3, 64, 64});
    const auto before = bb->forward(in);
    const int64_t fused = v2->re_parameterize();
    EXPECT_EQ(fused, std::string(name) == "PPLCNetV2_small" ? 6 : 8);  // stages[2] and stages[3] blocks
    const auto after = bb->forward(in);
    const double rel = lc_rel_diff(before, after);
    std::cout << "[ re-param ] " << name << ": max |before - after| / max |before| = " << rel
              << " (max abs " << (before - after).abs().max().item<double>() << ")\n";
    EXPECT_LE(rel, 1e-5);
    // After re-parameterization forward runs dw_conv, not the branches (PaddleClas's is_repped).
    bb->named_parameters()["stages.2.1.dw_conv_list.0.conv.weight"].mul_(3.0);
    EXPECT_LE(lc_rel_diff(after, bb->forward(in)), 1e-7);
    bb->named_parameters()["stages.2.1.dw_conv.weight"].mul_(3.0);
    EXPECT_GT(lc_rel_diff(after, bb->forward(in)), 1e-3);
    // Re-fusing takes the branches' current weights.
    v2->re_parameterize();
    bb->named_parameters()["stages.2.1.dw_conv_list.0.conv.weight"].div_(3.0);
    v2->re_parameterize();
    EXPECT_LE(lc_rel_diff(after, bb->forward(in)), 1e-5);
  }
  // re_parameterize_modules finds the blocks anywhere under a module; other backbones have none.
  auto v2 = lc_build("{name: PPLCNetV2_large}");
  EXPECT_EQ(re_parameterize_modules(*v2), 10);
  EXPECT_EQ(re_parameterize_modules(*lc_build("{name: PPLCNet_x0_25}")), 0);
}

TEST(PPLCNetV2, BackboneStopLayer) {
  // A stop at a rep block's dw_conv gives the branch sum before re-parameterization and the fused conv after.
  torch::manual_seed(4);
  auto bb = lc_build("{name: PPLCNetV2_base}", "stages[2][1].dw_conv");
  lc_randomize_bn(*bb);
  torch::NoGradGuard ng;
  const auto in = torch::randn({1, 3, 64, 64});
  const auto sum = bb->forward(in);
  EXPECT_EQ(sum.sizes().vec(), (LcShape{1, 512, 4, 4}));
  EXPECT_LT(sum.min().item<double>(), 0.0);  // before the ReLU
  EXPECT_EQ(dynamic_cast<PPLCNetV2Impl*>(bb.get())->re_parameterize(), 2);  // the blocks left: stages.2.0, .1
  EXPECT_LE(lc_rel_diff(sum, bb->forward(in)), 1e-5);
  EXPECT_FALSE(bb->named_parameters(true).contains("stages.2.1.se.conv1.weight"));
  // One branch of the list.
  auto br = lc_build("{name: PPLCNetV2_base}", "stages.2.1.dw_conv_list.2");
  EXPECT_EQ(output_shape(br, 64), (LcShape{1, 512, 4, 4}));
  EXPECT_FALSE(br->named_parameters(true).contains("stages.2.1.dw_conv.weight"));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNetV2_base}", "stages[3][1]"), 64), (LcShape{1, 1024, 2, 2}));
  EXPECT_EQ(output_shape(lc_build("{name: PPLCNetV2_base}", "stem[1].act"), 64), (LcShape{1, 32, 32, 32}));
  auto full = lc_build("{name: PPLCNetV2_base}");
  EXPECT_EQ(resolve_stop_layer(*full, "rep_depthwise_separable_0"), "stem.1");
  EXPECT_EQ(resolve_stop_layer(*full, "sequential_0"), "stem");
  EXPECT_EQ(resolve_stop_layer(*full, "sequential_1"), "stages.0");
  EXPECT_EQ(resolve_stop_layer(*full, "layer_list_0"), "stages");
  EXPECT_EQ(resolve_stop_layer(*full, "layer_list_1"), "stages.2.0.dw_conv_list");
  EXPECT_EQ(resolve_stop_layer(*full, "sigmoid_0"), "stages.2.0.se.hardsigmoid");
  EXPECT_EQ(resolve_stop_layer(*full, "dropout_0"), "dropout");
}

// ---- configs and errors -------------------------------------------------------------------------------------

TEST(PPLCNet, ConfigBackbonesAtTheirImageShape) {
  const std::vector<std::pair<std::string, LcShape>> configs = {
      {"GeneralRecognition/GeneralRecognition_PPLCNet_x2_5.yaml", {1, 1280}},
      {"Vehicle/PPLCNet_2.5x_ReID.yaml", {1, 1280}},
      {"GeneralRecognitionV2/GeneralRecognitionV2_PPLCNetV2_base.yaml", {1, 512}}};
  for (const auto& [rel, shape] : configs) {
    SCOPED_TRACE(rel);
    auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + rel);
    cfg.apply_override("Arch.Backbone.pretrained=False");  // no weight files in tests
    const auto image_shape = cfg["Global"]["image_shape"].as<std::vector<int64_t>>();
    ASSERT_EQ(image_shape, (LcShape{3, 224, 224}));
    auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"], image_shape);
    bb->eval();
    torch::NoGradGuard ng;
    EXPECT_EQ(bb->forward(torch::zeros({1, image_shape[0], image_shape[1], image_shape[2]})).sizes().vec(), shape);
  }
}

TEST(PPLCNet, ConfigErrors) {
  std::string msg = error_of([] { lc_build("{name: PPLCNet_x2_5, pretrained: True, use_ssld: True}"); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("PPLCNet_x2_5_ssld_pretrained.pdparams"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pretrained: False"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNetV2_base_ShiTu, pretrained: True}"); });
  EXPECT_NE(msg.find("PPLCNetV2_base_pretrained.pdparams"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, pretrained: /nonexistent/lcnet.pth}"); });
  EXPECT_NE(msg.find("/nonexistent/lcnet.pth"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, clas_num: 3}"); });
  EXPECT_NE(msg.find("did you mean class_num"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, scale: 0.5}"); });  // only PPLCNetBaseNet has it
  EXPECT_NE(msg.find("scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x0_3}"); });
  EXPECT_NE(msg.find("PPLCNet_x0_35"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNetV2_base, dropout_prob: 0.1}"); });
  EXPECT_NE(msg.find("fixes dropout_prob at 0.2"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, return_patterns: [blocks2]}"); });
  EXPECT_NE(msg.find("BackboneStopLayer"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, lr_mult_list: [1, 1, 1, 1, 1, 0.5]}"); });
  EXPECT_NE(msg.find("not supported"), std::string::npos) << msg;
  EXPECT_EQ(error_of([] { lc_build("{name: PPLCNet_x0_25, lr_mult_list: [1, 1, 1, 1, 1, 1]}"); }), "(no error)");
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, stride_list: [2, 2, 2]}"); });
  EXPECT_NE(msg.find("needs 5 strides"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, act: gelu}"); });
  EXPECT_NE(msg.find("hardswish, relu, relu6"), std::string::npos) << msg;
  msg = error_of([] { lc_build("{name: PPLCNet_x1_0, dropout_prob: 1.5}"); });
  EXPECT_NE(msg.find("[0, 1]"), std::string::npos) << msg;
}
