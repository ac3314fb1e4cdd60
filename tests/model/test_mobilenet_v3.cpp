// MobileNetV3 with PaddleClas's structure (mobilenet_v3.h): parameter counts and FLOPs against PaddleClas's
// published numbers, PaddleClas parameter names, the SE gate's 0.2 slope, the shortcut, Paddle's dropout,
// the Products/MV3_Large_1x_Aliproduct_DLBHC backbone, config errors.
#include <featlearn/model/compute_count.h>
#include <featlearn/model/mobilenet_v3.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>

using namespace featlearn;
namespace nn = torch::nn;
using featlearn::test::error_of;
using featlearn::test::output_shape;

namespace {

using Shape = std::vector<int64_t>;

// Arch.Backbone (+ BackboneStopLayer) from YAML, seeded, in eval mode.
BackbonePtr mv3(const std::string& yaml, const std::string& stop = "", uint64_t seed = 0) {
  return featlearn::test::backbone_from_yaml(yaml, stop, seed);
}

std::map<std::string, std::vector<int64_t>> shapes(const BackbonePtr& bb) {
  std::map<std::string, std::vector<int64_t>> m;
  for (const auto& p : bb->named_parameters(true)) m[p.key()] = p.value().sizes().vec();
  for (const auto& p : bb->named_buffers(true)) m[p.key()] = p.value().sizes().vec();
  return m;
}

// Trainable parameters plus BatchNorm moving means and variances (Paddle keeps them as parameters).
int64_t paddle_params(const BackbonePtr& bb) {
  int64_t n = 0;
  for (const auto& p : bb->parameters()) n += p.numel();
  for (const auto& b : bb->named_buffers(true))
    if (b.key().find("running_") != std::string::npos) n += b.value().numel();
  return n;
}

double rounded(int64_t v, double unit, int decimals) {
  const double s = std::pow(10.0, decimals);
  return std::round(static_cast<double>(v) / unit * s) / s;
}

}  // namespace

// PaddleClas's ImageNet model list (docs/en/algorithm_introduction/ImageNet_models_en.md: FLOPs(M) by
// paddle.flops and Params(M)) for the ten factories, at class_num 1000 and 1x3x224x224.
TEST(MobileNetV3, ParametersAndFlopsMatchPaddleClas) {
  struct Published {
    const char* name;
    double flops_m, params_m;
  };
  const Published kPublished[] = {
      {"MobileNetV3_large_x1_25", 362.70, 7.47}, {"MobileNetV3_large_x1_0", 229.66, 5.50},
      {"MobileNetV3_large_x0_75", 151.70, 3.93}, {"MobileNetV3_large_x0_5", 71.83, 2.69},
      {"MobileNetV3_large_x0_35", 40.90, 2.11},  {"MobileNetV3_small_x1_25", 100.07, 3.64},
      {"MobileNetV3_small_x1_0", 63.67, 2.95},   {"MobileNetV3_small_x0_75", 46.02, 2.38},
      {"MobileNetV3_small_x0_5", 22.60, 1.91},   {"MobileNetV3_small_x0_35", 14.56, 1.67}};
  torch::NoGradGuard ng;
  for (const auto& p : kPublished) {
    SCOPED_TRACE(p.name);
    auto bb = mv3(std::string("{name: ") + p.name + "}");
    const auto c = count_compute(*bb, [&] { bb->forward(torch::zeros({1, 3, 224, 224})); });
    // Eight agree to the published 0.01M; large_x1_0 and large_x1_25 are 5.2K and 0.4K FLOPs below the
    // rounding boundary (229.654758M, 362.694596M: published 229.66, 362.70).
    const bool near = std::string(p.name) == "MobileNetV3_large_x1_0" || std::string(p.name) == "MobileNetV3_large_x1_25";
    if (near) EXPECT_NEAR(static_cast<double>(c.paddle_flops()) / 1e6, p.flops_m, 0.0055) << c.paddle_flops();
    else EXPECT_EQ(rounded(c.paddle_flops(), 1e6, 2), p.flops_m) << c.paddle_flops();
    EXPECT_EQ(rounded(paddle_params(bb), 1e6, 2), p.params_m) << paddle_params(bb);
  }
}

TEST(MobileNetV3, PaddleClasNamesAndShapes) {
  const auto s = shapes(mv3("{name: MobileNetV3_large_x1_0}"));
  EXPECT_EQ(s.at("conv.conv.weight"), (Shape{16, 3, 3, 3}));
  // PaddleClas keeps expand_conv when it keeps the width (torchvision drops it).
  EXPECT_EQ(s.at("blocks.0.expand_conv.conv.weight"), (Shape{16, 16, 1, 1}));
  EXPECT_EQ(s.at("blocks.0.bottleneck_conv.conv.weight"), (Shape{16, 1, 3, 3}));
  // SE squeeze C // 4 without rounding to 8 (72 -> 18; torchvision: 24), with biases.
  EXPECT_EQ(s.at("blocks.3.mid_se.conv1.weight"), (Shape{18, 72, 1, 1}));
  EXPECT_EQ(s.at("blocks.3.mid_se.conv2.bias"), (Shape{72}));
  EXPECT_EQ(s.at("blocks.14.linear_conv.bn.running_var"), (Shape{160}));
  EXPECT_EQ(s.at("last_second_conv.conv.weight"), (Shape{960, 160, 1, 1}));
  EXPECT_EQ(s.at("last_conv.weight"), (Shape{1280, 960, 1, 1}));
  EXPECT_EQ(s.count("last_conv.bias"), 0u);
  EXPECT_EQ(s.at("fc.weight"), (Shape{1000, 1280}));
  // Scaled widths: make_divisible(c · 0.35); class_expand is not scaled, class_squeeze is.
  const auto t = shapes(mv3("{name: MobileNetV3_small_x0_35}"));
  EXPECT_EQ(t.at("conv.conv.weight"), (Shape{8, 3, 3, 3}));
  EXPECT_EQ(t.at("last_second_conv.conv.weight"), (Shape{200, 32, 1, 1}));  // 576·0.35 = 201.6 -> 200; 96·0.35 -> 32
  EXPECT_EQ(t.at("last_conv.weight"), (Shape{1280, 200, 1, 1}));
  EXPECT_EQ(output_shape(mv3("{name: MobileNetV3_small_x0_35}", "blocks"), 224), (Shape{1, 32, 7, 7}));
}

TEST(MobileNetV3, SEGateHasSlope02AndShortcut) {
  // SE with zero convs and conv2 bias b: the gate is clip(0.2·b + 0.5, 0, 1) whatever the input.
  pplcnet::SEModuleImpl se(8, 4, false, 0.2);
  torch::NoGradGuard ng;
  for (auto& p : se.named_parameters()) p.value().zero_();
  auto bias = se.named_parameters()["conv2.bias"];
  bias.copy_(torch::tensor({1.0, -3.0, 3.0, 0.0, -2.5, 2.5, 0.5, -0.5}));
  const auto x = torch::full({1, 8, 2, 2}, 2.0);
  const auto y = se.forward(x).mean({2, 3}).flatten();
  EXPECT_TRUE(torch::allclose(y, 2.0 * torch::tensor({0.7, 0.0, 1.0, 0.5, 0.0, 1.0, 0.6, 0.4})));
  // blocks[0] of large (16 -> 16, stride 1) adds its input; with linear_conv's BN at 0 the block is the identity.
  auto bb = mv3("{name: MobileNetV3_large_x1_0}", "blocks[0]");
  for (auto& p : bb->named_parameters())
    if (p.key().rfind("blocks.0.linear_conv.bn.", 0) == 0) p.value().zero_();
  auto stem = mv3("{name: MobileNetV3_large_x1_0}", "conv");
  const auto img = torch::randn({1, 3, 32, 32});
  EXPECT_TRUE(torch::allclose(bb->forward(img), stem->forward(img)));
}

TEST(MobileNetV3, DownscaleInInferDropoutAndNoDropout) {
  const auto img = torch::randn({2, 3, 64, 64});
  torch::NoGradGuard ng;
  const auto act = mv3("{name: MobileNetV3_small_x1_0, dropout_prob: 0.3}", "hardswish", 5)->forward(img);
  const auto drop = mv3("{name: MobileNetV3_small_x1_0, dropout_prob: 0.3}", "dropout", 5)->forward(img);
  EXPECT_TRUE(torch::allclose(drop, 0.7 * act));  // Paddle downscale_in_infer: eval multiplies by 1 - p
  EXPECT_EQ(act.sizes(), (c10::IntArrayRef{2, 1280, 1, 1}));
  auto none = mv3("{name: MobileNetV3_small_x1_0, dropout_prob: null}", "flatten", 5);
  EXPECT_EQ(shapes(none).count("dropout"), 0u);
  EXPECT_TRUE(torch::allclose(none->forward(img), act.flatten(1)));
}

TEST(MobileNetV3, AliproductDLBHCBackbone) {
  // Products/MV3_Large_1x_Aliproduct_DLBHC.yaml: class_num 512 is the embedding the FC head reads.
  auto bb = mv3("{name: \"MobileNetV3_large_x1_0\", pretrained: False, class_num: 512}");
  EXPECT_EQ(output_shape(bb, 227, 2), (Shape{2, 512}));
}

TEST(MobileNetV3, ConfigErrors) {
  auto err = [](const std::string& yaml) { return error_of([&] { mv3(yaml); }); };
  EXPECT_NE(err("{name: MobileNetV3_large_x1_0, class_squeeze: 960}").find("class_squeeze"), std::string::npos);
  EXPECT_NE(err("{name: MobileNetV3_large_x1_0, pretrained: True}").find("MobileNetV3_large_x1_0_pretrained.pdparams"),
            std::string::npos);
  EXPECT_NE(err("{name: MobileNetV3_small_x1_0, use_ssld: True, pretrained: True}")
                .find("MobileNetV3_small_x1_0_ssld_pretrained.pdparams"),
            std::string::npos);
  EXPECT_NE(err("{name: MobileNetV3_small_x1_0, dropout_prob: 1.5}").find("dropout_prob"), std::string::npos);
  EXPECT_NE(err("{name: MobileNetV3_small_x1_0, return_stages: [0]}").find("return_stages"), std::string::npos);
  EXPECT_NE(err("{name: MobileNetV3_small_x1_0, class_expand: 0}").find("class_expand"), std::string::npos);
}
