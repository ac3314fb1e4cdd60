// Backbones: shapes, BackboneStopLayer, weight import and parity with torchvision (fixtures made by
// tests/fixtures/make_fixtures.py with Debian's python3-torchvision).
#include <featlearn/io/state_dict.h>
#include <featlearn/model/torchvision_mobilenet_v3.h>
#include <featlearn/model/resnet.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/config/config.h>

#include "backbone_test_util.h"
#include <gtest/gtest.h>

#include "../fixture_path.h"
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <map>

namespace fs = std::filesystem;
using namespace featlearn;

using featlearn::test::error_of;
using featlearn::test::output_shape;

namespace {

// Builds Arch.Backbone (+ Arch.BackboneStopLayer) from YAML text.
BackbonePtr build(const std::string& backbone_yaml, const std::string& stop = "") {
  std::string text = "Arch:\n  Backbone: " + backbone_yaml + "\n";
  if (!stop.empty()) text += "  BackboneStopLayer: {name: \"" + stop + "\"}\n";
  auto cfg = Config::from_string(text, "test.yaml");
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  bb->eval();
  return bb;
}

std::map<std::string, torch::Tensor> load_map(const std::string& path) {
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : load_torch_state_dict(path)) m[k] = v;
  return m;
}

bool has_param(const BackbonePtr& bb, const std::string& name) {
  return bb->named_parameters(true).contains(name);
}

using Shape = std::vector<int64_t>;

}  // namespace

TEST(Backbones, EveryBackboneGivesLogits) {
  for (const char* name : {"ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "ResNet50_vd",
                           "ResNet50_last_stage_stride1", "TorchvisionMobileNetV3_small_x1_0",
                           "TorchvisionMobileNetV3_large_x1_0"}) {
    SCOPED_TRACE(name);
    auto bb = build(std::string("{name: ") + name + ", class_num: 7}");
    EXPECT_EQ(output_shape(bb, 64, 2), (Shape{2, 7}));
  }
}

TEST(Backbones, StructureAndNamesMatchTorchvision) {
  // Ordered state-dict keys and shapes as torchvision's state_dict() lists them (params then buffers of each
  // module, modules in registration order).
  const std::map<std::string, std::string> archs = {
      {"ResNet18", "resnet18"},   {"ResNet34", "resnet34"},   {"ResNet50", "resnet50"},
      {"ResNet101", "resnet101"}, {"ResNet152", "resnet152"},
      {"TorchvisionMobileNetV3_small_x1_0", "mobilenet_v3_small"},
      {"TorchvisionMobileNetV3_large_x1_0", "mobilenet_v3_large"}};
  for (const auto& [ours, theirs] : archs) {
    SCOPED_TRACE(ours);
    auto bb = build("{name: " + ours + "}");
    std::vector<std::pair<std::string, Shape>> mine;
    for (const auto& item : bb->named_modules("", true)) {
      for (const auto& p : item.value()->named_parameters(false))
        mine.emplace_back(child_path(item.key(), p.key()), p.value().sizes().vec());
      for (const auto& b : item.value()->named_buffers(false))
        mine.emplace_back(child_path(item.key(), b.key()), b.value().sizes().vec());
    }
    const YAML::Node keys = YAML::LoadFile(fixture(theirs + "_keys.json"));  // JSON is YAML
    ASSERT_EQ(mine.size(), keys.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      ASSERT_EQ(mine[i].first, keys[i][0].as<std::string>());
      ASSERT_EQ(mine[i].second, keys[i][1].as<Shape>()) << mine[i].first;
    }
  }
}

TEST(Backbones, VariantsHaveTheirStructure) {
  auto vd = build("{name: ResNet50_vd}", "layer4");
  EXPECT_TRUE(has_param(vd, "stem.6.weight"));  // third stem conv 32 -> 64
  EXPECT_EQ(vd->named_parameters()["stem.6.weight"].sizes().vec(), (Shape{64, 32, 3, 3}));
  EXPECT_EQ(vd->named_modules()["layer2.0.downsample.0"]->name(), "torch::nn::AvgPool2dImpl");
  EXPECT_EQ(vd->named_parameters()["layer2.0.downsample.1.weight"].sizes().vec(), (Shape{512, 256, 1, 1}));
  EXPECT_EQ(output_shape(vd), (Shape{1, 2048, 2, 2}));
  auto s1 = build("{name: ResNet50_last_stage_stride1}", "layer4");
  EXPECT_EQ(output_shape(s1), (Shape{1, 2048, 4, 4}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "layer4")), (Shape{1, 2048, 2, 2}));
}

TEST(Backbones, StopLayerShapes) {
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "flatten"), 64, 2), (Shape{2, 2048}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "avg_pool"), 64, 2), (Shape{2, 2048, 1, 1}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "adaptive_avg_pool2d_0"), 64, 2), (Shape{2, 2048, 1, 1}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "fc")), (Shape{1, 1000}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "stem")), (Shape{1, 64, 32, 32}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "max_pool")), (Shape{1, 64, 16, 16}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "blocks[3].conv1")), (Shape{1, 128, 16, 16}));  // layer2.0.conv1
  EXPECT_EQ(output_shape(build("{name: ResNet18}", "blocks[3].conv1")), (Shape{1, 128, 8, 8}));    // stride-2 3x3
  EXPECT_EQ(output_shape(build("{name: ResNet18}", "layer1[1].bn2")), (Shape{1, 64, 16, 16}));
  EXPECT_EQ(output_shape(build("{name: ResNet18}", "layer3")), (Shape{1, 256, 4, 4}));
  EXPECT_EQ(output_shape(build("{name: ResNet50}", "layer2.0.downsample")), (Shape{1, 512, 8, 8}));
  EXPECT_EQ(output_shape(build("{name: TorchvisionMobileNetV3_small_x1_0}", "flatten")), (Shape{1, 576}));
  EXPECT_EQ(output_shape(build("{name: TorchvisionMobileNetV3_large_x1_0}", "avg_pool")), (Shape{1, 960, 1, 1}));
  EXPECT_EQ(output_shape(build("{name: TorchvisionMobileNetV3_large_x1_0}", "blocks[3]")), (Shape{1, 40, 8, 8}));
  EXPECT_EQ(output_shape(build("{name: TorchvisionMobileNetV3_large_x1_0}", "features.4.block.2.fc1")),
            (Shape{1, 24, 1, 1}));  // SE squeeze 72/4 -> 24
}

TEST(Backbones, PaddleFullNamesResolve) {
  auto r50 = build("{name: ResNet50}");
  EXPECT_EQ(resolve_stop_layer(*r50, "adaptive_avg_pool2d_0"), "avgpool");
  EXPECT_EQ(resolve_stop_layer(*r50, "conv2d_0"), "conv1");
  EXPECT_EQ(resolve_stop_layer(*r50, "conv2d_1"), "layer1.0.conv1");
  EXPECT_EQ(resolve_stop_layer(*r50, "batch_norm2d_0"), "bn1");
  EXPECT_EQ(resolve_stop_layer(*r50, "re_lu_0"), "relu");
  EXPECT_EQ(resolve_stop_layer(*r50, "max_pool2d_0"), "maxpool");
  EXPECT_EQ(resolve_stop_layer(*r50, "flatten_0"), "flatten");
  EXPECT_EQ(resolve_stop_layer(*r50, "linear_0"), "fc");
  EXPECT_EQ(resolve_stop_layer(*r50, "bottleneck_block_3"), "layer2.0");
  EXPECT_EQ(resolve_stop_layer(*r50, "blocks[15]"), "layer4.2");
  EXPECT_EQ(resolve_stop_layer(*build("{name: ResNet18}"), "basic_block_3"), "layer2.1");
  const auto names = stop_layer_names(*r50);
  EXPECT_NE(std::find(names.begin(), names.end(), "adaptive_avg_pool2d_0"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "layer3.5.bn3"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "layer1.0.relu"), names.end());  // multi-use
}

TEST(Backbones, StopLayerRemovesLaterParameters) {
  auto full = build("{name: ResNet50}");
  auto bb = build("{name: ResNet50}", "layer2.0.conv2");
  EXPECT_TRUE(has_param(bb, "layer1.2.bn3.weight"));
  EXPECT_TRUE(has_param(bb, "layer2.0.conv1.weight"));
  EXPECT_TRUE(has_param(bb, "layer2.0.bn1.weight"));
  EXPECT_TRUE(has_param(bb, "layer2.0.conv2.weight"));
  for (const char* gone : {"layer2.0.bn2.weight", "layer2.0.conv3.weight", "layer2.0.downsample.0.weight",
                           "layer2.1.conv1.weight", "layer3.0.conv1.weight", "layer4.2.bn3.bias", "fc.weight"})
    EXPECT_FALSE(has_param(bb, gone)) << gone;
  EXPECT_LT(bb->parameters().size(), full->parameters().size());
  EXPECT_EQ(bb->named_modules()["layer3"]->name(), "torch::nn::IdentityImpl");
  EXPECT_EQ(output_shape(bb), (Shape{1, 128, 8, 8}));

  auto pooled = build("{name: ResNet18}", "avg_pool");
  EXPECT_FALSE(has_param(pooled, "fc.weight"));
  EXPECT_TRUE(has_param(pooled, "layer4.1.bn2.weight"));
}

TEST(Backbones, UnknownStopLayerIsAnErrorListingNames) {
  const std::string msg = error_of([] { build("{name: ResNet50}", "avg_poll"); });
  EXPECT_NE(msg.find("test.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Arch.BackboneStopLayer.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown layer 'avg_poll'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean avg_pool"), std::string::npos) << msg;
  EXPECT_NE(msg.find("conv1, bn1, relu, maxpool, layer1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("adaptive_avg_pool2d_0"), std::string::npos) << msg;

  const std::string relu = error_of([] { build("{name: ResNet18}", "layer1.0.relu"); });
  EXPECT_NE(relu.find("called several times"), std::string::npos) << relu;

  const std::string keys = error_of([] {
    auto cfg = Config::from_string("Arch:\n  Backbone: {name: ResNet50}\n  BackboneStopLayer: {nme: fc}\n", "t.yaml");
    build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  });
  EXPECT_NE(keys.find("nme"), std::string::npos) << keys;
}

TEST(Backbones, ConfigErrors) {
  std::string msg = error_of([] { build("{name: ResNet50, pretrained: True}"); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resnet50-0676ba61.pth failed"), std::string::npos) << msg;  // no network in tests
  EXPECT_NE(msg.find("put it at "), std::string::npos) << msg;
  EXPECT_NE(msg.find("pretrained: /path/to/"), std::string::npos) << msg;

  msg = error_of([] { build("{name: ResNet50, class_nm: 3}"); });
  EXPECT_NE(msg.find("class_nm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("class_num"), std::string::npos) << msg;

  msg = error_of([] { build("{name: ResNet51}"); });
  EXPECT_NE(msg.find("ResNet50"), std::string::npos) << msg;

  msg = error_of([] { build("{name: ResNet18, pretrained: /nonexistent/r18.pth}"); });
  EXPECT_NE(msg.find("/nonexistent/r18.pth"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

TEST(Backbones, PretrainedChecksNamesAndShapes) {
  const std::string r18 = fixture("resnet18_weights.pth");
  // Wrong architecture: ResNet50 parameters missing from a ResNet18 file.
  std::string msg = error_of([&] { build("{name: ResNet50, pretrained: " + r18 + "}"); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("missing layer1.0.conv3.weight") != std::string::npos ||
              msg.find("has shape") != std::string::npos)
      << msg;
  // class_num differs from the file's fc.
  msg = error_of([&] { build("{name: ResNet18, class_num: 10, pretrained: " + r18 + "}"); });
  EXPECT_NE(msg.find("'fc.weight' has shape [1000,512] in the file but [10,512]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("class_num"), std::string::npos) << msg;
  // ... unless the stop layer removed fc: its keys are ignored.
  auto bb = build("{name: ResNet18, class_num: 10, pretrained: " + r18 + "}", "flatten");
  const auto sd = load_map(r18);
  EXPECT_TRUE(torch::equal(bb->named_parameters()["layer4.1.conv2.weight"], sd.at("layer4.1.conv2.weight")));
  EXPECT_TRUE(torch::equal(bb->named_buffers()["layer4.1.bn2.running_var"], sd.at("layer4.1.bn2.running_var")));
  EXPECT_EQ(bb->named_buffers()["bn1.num_batches_tracked"].item<int64_t>(), 7);
}

// Parity with torchvision on the same weights and input (eval mode), full model and truncated outputs.
class Parity : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(Parity, MatchesTorchvision) {
  const auto& [ours, theirs] = GetParam();
  const std::string weights = fixture(theirs + "_weights.pth");
  const auto io = load_map(fixture(theirs + "_io.pth"));
  const bool resnet = ours.rfind("ResNet", 0) == 0;
  torch::NoGradGuard ng;
  auto max_diff = [](const torch::Tensor& a, const torch::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    return (a - b).abs().max().item<double>();
  };
  auto full = build("{name: " + ours + ", pretrained: " + weights + "}");
  const auto logits = full->forward(io.at("input"));
  EXPECT_LE(max_diff(logits, io.at("logits")), 1e-4);
  EXPECT_GT(io.at("logits").abs().max().item<double>(), 1e-2);  // not a trivially zero output

  auto pooled = build("{name: " + ours + ", pretrained: " + weights + "}", "flatten");
  EXPECT_LE(max_diff(pooled->forward(io.at("input")), io.at("pooled")), 1e-4);
  auto layer = build("{name: " + ours + ", pretrained: " + weights + "}", resnet ? "layer3" : "features.4");
  EXPECT_LE(max_diff(layer->forward(io.at("input")), io.at("layer")), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Torchvision, Parity,
                         ::testing::Values(std::make_pair(std::string("ResNet18"), std::string("resnet18")),
                                           std::make_pair(std::string("ResNet50"), std::string("resnet50")),
                                           std::make_pair(std::string("TorchvisionMobileNetV3_small_x1_0"),
                                                          std::string("mobilenet_v3_small"))));

// BackboneStopLayer.output_dim is checked with an input of the training shape: Global.image_shape's H x W and
// the backbone's input_image_channel. A stop layer before the pooling makes the width depend on both.
TEST(BackboneStopLayer, OutputDimProbeUsesImageShapeAndChannels) {
  const std::string text =
      "Arch:\n  Backbone: {name: ResNet18, input_image_channel: 1}\n"
      "  BackboneStopLayer: {name: layer4, output_dim: 512}\n";
  auto cfg = Config::from_string(text, "test.yaml");
  // 32 x 32 input: layer4 is 512 x 1 x 1.
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"], {3, 32, 32});
  bb->eval();
  EXPECT_EQ(bb->forward(torch::zeros({2, 1, 32, 32})).flatten(1).size(1), 512);
  // 64 x 64 input: 512 x 2 x 2 = 2048, so output_dim 512 is refused, naming the width.
  const auto msg = error_of([&] { build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"], {1, 64, 64}); });
  EXPECT_NE(msg.find("Arch.BackboneStopLayer.output_dim"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outputs 2048 values per image, not 512"), std::string::npos) << msg;
}
