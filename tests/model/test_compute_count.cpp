// count_compute (compute_count.h): hand-computed counts for single layers, and the FLOPs PaddleClas publishes
// (paddle.flops at 224x224, its model lists) for the ImageNet-classification forms of featlearn's backbones.
#include <featlearn/model/compute_count.h>
#include <featlearn/model/pp_lcnet_v2.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

using namespace featlearn;
namespace nn = torch::nn;

namespace {

ComputeCount count_of(nn::Module& m, const std::function<torch::Tensor(const torch::Tensor&)>& f,
                      std::vector<int64_t> shape) {
  torch::NoGradGuard ng;
  m.eval();
  const auto x = torch::zeros(shape);
  return count_compute(m, [&] { f(x); });
}

ComputeCount backbone_count(const std::string& yaml, int64_t hw = 224) {
  auto bb = featlearn::test::backbone_from_yaml(yaml);
  return count_of(*bb, [&](const torch::Tensor& x) { return bb->forward(x); }, {1, 3, hw, hw});
}

// PaddleClas rounds its published numbers: `published` in units of `unit`, given to `decimals` places.
void expect_published(const std::string& model, int64_t flops, double published, double unit, int decimals) {
  const double scale = std::pow(10.0, decimals);
  EXPECT_EQ(std::round(static_cast<double>(flops) / unit * scale) / scale, published)
      << model << ": " << flops << " FLOPs";
}

}  // namespace

TEST(ComputeCount, HandComputedLayers) {
  // Conv 3->8, 3x3, stride 1, pad 1, bias, on 10x10: 8*10*10 outputs, 3*9 MACs each.
  nn::Conv2d conv(nn::Conv2dOptions(3, 8, 3).padding(1));
  auto c = count_of(*conv, [&](const torch::Tensor& x) { return conv->forward(x); }, {1, 3, 10, 10});
  EXPECT_EQ(c.conv_macs, 800 * 27);
  EXPECT_EQ(c.conv_bias, 800);
  EXPECT_EQ(c.paddle_flops(), 800 * 28);
  // Depthwise 8 channels, 5x5, stride 2, no bias, on 2 images of 9x9 -> 5x5: 2*8*25 outputs, 25 MACs each.
  nn::Conv2d dw(nn::Conv2dOptions(8, 8, 5).stride(2).padding(2).groups(8).bias(false));
  c = count_of(*dw, [&](const torch::Tensor& x) { return dw->forward(x); }, {2, 8, 9, 9});
  EXPECT_EQ(c.conv_macs, 400 * 25);
  EXPECT_EQ(c.conv_bias, 0);
  // Linear 6->4 on [2, 5, 6] (tokens): 40 outputs x 6; the inner matmul is not counted again.
  nn::Linear fc(6, 4);
  c = count_of(*fc, [&](const torch::Tensor& x) { return fc->forward(x); }, {2, 5, 6});
  EXPECT_EQ(c.linear_macs, 240);
  EXPECT_EQ(c.matmul_macs, 0);
  // BatchNorm (eval) on 2x3x4x4: 2 FLOPs per element; adaptive average pool 4x4 -> 1x1: (16 + 1) per output;
  // a 2x2 -> 2x2 adaptive pool of a 4x4 map: kernel 2x2, (4 + 1) per output; max pooling counts zero.
  nn::BatchNorm2d bn(3);
  c = count_of(*bn, [&](const torch::Tensor& x) {
    auto y = bn->forward(x);
    torch::adaptive_avg_pool2d(y, {1, 1});
    torch::adaptive_avg_pool2d(y, {2, 2});
    torch::avg_pool2d(y, {2, 2});
    return torch::max_pool2d(y, {2, 2});
  }, {2, 3, 4, 4});
  EXPECT_EQ(c.batch_norm_elements, 96);
  EXPECT_EQ(c.pool_ops, 6 * 17 + 24 * 5 + 24);
  EXPECT_EQ(c.paddle_flops(), 192 + 6 * 17 + 24 * 5 + 24);
  // Attention-style products: [2,3,4,5] @ [2,3,5,7] -> 2*3*4*7 outputs x K=5; x @ w for x [4,6], w [6,2].
  nn::Identity id;
  c = count_of(*id, [&](const torch::Tensor& x) {
    torch::matmul(torch::ones({2, 3, 4, 5}), torch::ones({2, 3, 5, 7}));
    return torch::matmul(torch::ones({4, 6}), torch::ones({6, 2}));
  }, {1});
  EXPECT_EQ(c.matmul_macs, 168 * 5 + 8 * 6);
  EXPECT_EQ(c.macs(), c.matmul_macs);
  EXPECT_EQ(c.paddle_flops(), 0);  // paddle.flops counts layers, not matmuls
}

TEST(ComputeCount, NotReentrantAndRemovedAfterAnError) {
  nn::Identity id;
  EXPECT_THROW(count_compute(*id, [] { throw std::runtime_error("x"); }), std::runtime_error);
  // The observer is gone: a later count starts from zero and sees only its own operators.
  nn::Linear fc(3, 2);
  auto c = count_of(*fc, [&](const torch::Tensor& x) { return fc->forward(x); }, {1, 3});
  EXPECT_EQ(c.linear_macs, 6);
}

// PaddleClas's published FLOPs (docs/en/algorithm_introduction/ImageNet_models_en.md, "calculated by
// paddle.flops()"; docs/zh_CN/training/advanced/ssld.md for MobileNetV3, PP-LCNetV2): the whole classification
// network (class_num 1000) at 1x3x224x224.
TEST(ComputeCount, MatchesPaddleClasPublishedFlops) {
  const double G = 1e9, M = 1e6;
  // ResNet50/101/152: torchvision's structure equals PaddleClas's there. (PaddleClas's ResNet18/34 have an extra
  // 1x1 conv shortcut in their first block, 1.83G / 3.68G; featlearn's torchvision form gives 1.82G / 3.67G.)
  expect_published("ResNet50", backbone_count("{name: ResNet50}").paddle_flops(), 4.11, G, 2);
  expect_published("ResNet101", backbone_count("{name: ResNet101}").paddle_flops(), 7.83, G, 2);
  expect_published("ResNet152", backbone_count("{name: ResNet152}").paddle_flops(), 11.56, G, 2);
  expect_published("VGG11", backbone_count("{name: VGG11}").paddle_flops(), 7.61, G, 2);
  expect_published("VGG16", backbone_count("{name: VGG16}").paddle_flops(), 15.470, G, 3);
  expect_published("VGG19", backbone_count("{name: VGG19}").paddle_flops(), 19.63, G, 2);
  expect_published("MobileNetV1", backbone_count("{name: MobileNetV1}").paddle_flops(), 578.88, M, 2);
  expect_published("MobileNetV1_x0_25", backbone_count("{name: MobileNetV1_x0_25}").paddle_flops(), 43.56, M, 2);
  expect_published("PPLCNet_x0_5", backbone_count("{name: PPLCNet_x0_5}").paddle_flops(), 47.28, M, 2);
  expect_published("PPLCNet_x1_0", backbone_count("{name: PPLCNet_x1_0}").paddle_flops(), 160.81, M, 2);
  expect_published("PPLCNet_x2_5", backbone_count("{name: PPLCNet_x2_5}").paddle_flops(), 906.49, M, 2);
  // The other PP-LCNet scales (ImageNet_models_en.md; x2_0 is published as 590).
  expect_published("PPLCNet_x0_25", backbone_count("{name: PPLCNet_x0_25}").paddle_flops(), 18.25, M, 2);
  expect_published("PPLCNet_x0_35", backbone_count("{name: PPLCNet_x0_35}").paddle_flops(), 29.46, M, 2);
  expect_published("PPLCNet_x0_75", backbone_count("{name: PPLCNet_x0_75}").paddle_flops(), 98.82, M, 2);
  // x1_5 counts 341.850M against the published 341.86M (0.003 % apart; not traced to a layer).
  EXPECT_NEAR(backbone_count("{name: PPLCNet_x1_5}").paddle_flops() / M, 341.86, 0.011);
  expect_published("PPLCNet_x2_0", backbone_count("{name: PPLCNet_x2_0}").paddle_flops(), 590, M, 0);
  // PP-LCNetV2 base (ssld.md: 604.16M), counted as deployed: re-parameterized (one conv per RepDepthwise block).
  {
    auto bb = featlearn::test::backbone_from_yaml("{name: PPLCNetV2_base}");
    EXPECT_GT(re_parameterize_modules(*bb), 0);
    const auto c = count_of(*bb, [&](const torch::Tensor& x) { return bb->forward(x); }, {1, 3, 224, 224});
    // 604.55M here (613.73M before re-parameterization): 0.07 % above the published figure, not traced to a layer.
    EXPECT_NEAR(c.paddle_flops() / M, 604.16, 0.5);
  }
}
