// Loading PaddleClas .pdparams state dicts into featlearn models: the Paddle -> featlearn name / layout mapping
// (PaddleNames, docs/file-formats.md) against the independent mapping of tests/fixtures/make_pdparams.py,
// whose files carry PaddleClas's real names and shapes for each architecture.
#include <featlearn/model/paddle_names.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/model/resnet.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../fixture_path.h"
#include <torch/torch.h>

#include <fstream>
#include <map>

using namespace featlearn;

namespace {

std::map<std::string, torch::Tensor> tensors_of(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers(true)) out[b.key()] = b.value();
  return out;
}

// Every tensor of `m` equals the generator's values after its own mapping (shape, weighted sum, first values);
// every featlearn tensor but the BatchNorm counters is covered. Returns the number of checked tensors.
size_t check_against_expected(torch::nn::Module& m, const std::string& expected_json) {
  std::ifstream in(expected_json);
  EXPECT_TRUE(in.good()) << expected_json;
  const auto exp = nlohmann::json::parse(in);
  const auto tensors = tensors_of(m);
  size_t checked = 0;
  for (const auto& [name, e] : exp.items()) {
    SCOPED_TRACE(name + " (Paddle " + e.at("paddle").get<std::string>() + ")");
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      ADD_FAILURE() << "the generator's featlearn name is not a tensor of the model";
      continue;
    }
    const torch::Tensor t = it->second.detach().to(torch::kDouble).contiguous();
    EXPECT_EQ(t.sizes().vec(), e.at("shape").get<std::vector<int64_t>>());
    const auto flat = t.flatten();
    const auto w = torch::remainder(torch::arange(flat.numel(), torch::kDouble), 7) - 3;
    const double wsum = (flat * w).sum().item<double>(), want = e.at("wsum").get<double>();
    EXPECT_NEAR(wsum, want, 1e-5 * (1.0 + std::abs(want)));
    const auto first = e.at("first").get<std::vector<double>>();
    for (size_t i = 0; i < first.size(); ++i) EXPECT_NEAR(flat[static_cast<int64_t>(i)].item<double>(), first[i], 1e-6);
    ++checked;
  }
  size_t others = 0;
  for (const auto& kv : tensors)
    if (kv.first.find("num_batches_tracked") == std::string::npos) ++others;
  EXPECT_EQ(checked, others) << "featlearn tensors without a Paddle counterpart in " << expected_json;
  return checked;
}

BackbonePtr build(const std::string& backbone_yaml) {
  auto cfg = Config::from_string("Arch:\n  Backbone: " + backbone_yaml + "\n", "test.yaml");
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  bb->eval();
  return bb;
}

std::string pd(const std::string& name) { return fixture("pdparams/" + name); }

void check_backbone(const std::string& config_name, const std::string& file, int64_t width) {
  SCOPED_TRACE(config_name);
  const std::string path = pd(file + ".pdparams");
  auto bb = build("{name: " + config_name + ", pretrained: \"" + path + "\"}");
  EXPECT_GT(check_against_expected(*bb, pd(file + ".expected.json")), 50u);
  // num_batches_tracked: not in Paddle files, left as it was.
  for (const auto& b : bb->named_buffers(true))
    if (b.key().find("num_batches_tracked") != std::string::npos) EXPECT_EQ(b.value().item<int64_t>(), 0);
  torch::NoGradGuard ng;
  const auto y = bb->forward(torch::randn({1, 3, 64, 64}));
  EXPECT_EQ(y.size(1), width);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(PaddleWeights, ResNet50VdBackbone) { check_backbone("ResNet50_vd", "resnet50_vd", 1000); }
TEST(PaddleWeights, MobileNetV3LargeBackbone) {
  check_backbone("MobileNetV3_large_x1_0", "mobilenet_v3_large_x1_0", 1000);
}
TEST(PaddleWeights, PPLCNetX25Backbone) { check_backbone("PPLCNet_x2_5", "pplcnet_x2_5", 1000); }
TEST(PaddleWeights, PPLCNetV2BaseBackbone) { check_backbone("PPLCNetV2_base", "pplcnetv2_base", 1000); }

TEST(PaddleWeights, RecModelCheckpointResNet50FcArcMargin) {
  auto cfg = Config::from_string(R"(Arch:
  name: RecModel
  Backbone: {name: ResNet50}
  BackboneStopLayer: {name: flatten}
  Neck: {name: FC, embedding_size: 2048, class_num: 512}
  Head: {name: ArcMargin, embedding_size: 512, class_num: 100, margin: 0.2, scale: 30}
)", "test.yaml");
  RecModel model(cfg["Arch"]);
  const std::string path = pd("rec_resnet50_fc_arcmargin.pdparams");
  // The checkpoint was written from a full ResNet50 (with its fc); the stop layer removed backbone.fc, whose
  // tensors are skipped, so the expected table is checked without them.
  load_module_weights(*model, path, path, "RecModel", "");
  std::ifstream in(pd("rec_resnet50_fc_arcmargin.expected.json"));
  auto exp = nlohmann::json::parse(in);
  exp.erase("backbone.fc.weight");
  exp.erase("backbone.fc.bias");
  const std::string trimmed = fixture("pdparams") + "/rec_trimmed.tmp.json";
  std::ofstream(trimmed) << exp.dump();
  // ResNet50 without fc: 53 convs and 53 BNs (4 tensors each); the neck's fc weight and bias; the head weight.
  EXPECT_EQ(check_against_expected(*model, trimmed), 53u * 5u + 2u + 1u);
  std::remove(trimmed.c_str());
  model->eval();
  torch::NoGradGuard ng;
  const auto out = model->forward(torch::randn({2, 3, 64, 64}));
  EXPECT_EQ(out.features.sizes(), torch::IntArrayRef({2, 512}));
  EXPECT_TRUE(torch::isfinite(out.features).all().item<bool>());
}

TEST(PaddleWeights, PretrainedPathMayOmitTheSuffix) {
  const std::string path = pd("pplcnet_x0_25.pdparams");
  auto bb = build("{name: PPLCNet_x0_25, pretrained: \"" + path.substr(0, path.size() - 9) + "\"}");
  check_against_expected(*bb, pd("pplcnet_x0_25.expected.json"));
}

TEST(PaddleWeights, NamesMapBothWaysForResNet) {
  auto bb = build("{name: ResNet50_vd}");
  PaddleNames names(*bb);
  EXPECT_EQ(names.to_featlearn("stem.1.bn._variance"), "stem.4.running_var");
  EXPECT_EQ(names.to_featlearn("blocks.3.conv2.conv.weight"), "layer2.0.conv3.weight");
  EXPECT_EQ(names.to_featlearn("blocks.0.short.conv.weight"), "layer1.0.downsample.0.weight");  // no pool
  EXPECT_EQ(names.to_featlearn("blocks.3.short.bn._mean"), "layer2.0.downsample.2.running_mean");
  EXPECT_EQ(names.to_paddle("layer4.2.bn1.weight"), "blocks.15.conv0.bn.weight");
  EXPECT_EQ(names.to_paddle("fc.weight"), "fc.weight");
  EXPECT_TRUE(names.transposed("fc.weight"));
  EXPECT_FALSE(names.transposed("layer4.2.conv1.weight"));
  auto vb = build("{name: ResNet50}");
  PaddleNames vb_names(*vb);
  EXPECT_EQ(vb_names.to_featlearn("stem.0.conv.weight"), "conv1.weight");
  EXPECT_EQ(vb_names.to_featlearn("blocks.3.short.bn.bias"), "layer2.0.downsample.1.bias");
}

TEST(PaddleWeights, MissingUnexpectedAndMisShapedTensorsAreNamed) {
  std::string path = pd("pplcnet_x0_25_missing_unexpected.pdparams");
  std::string msg = error_of([&] { build("{name: PPLCNet_x0_25, pretrained: \"" + path + "\"}"); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing blocks2.0.dw_conv.bn.running_mean (Paddle blocks2.0.dw_conv.bn._mean)"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected blocks2.0.extra.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;  // the config key and line

  path = pd("pplcnet_x0_25_bad_shape.pdparams");
  msg = error_of([&] { build("{name: PPLCNet_x0_25, pretrained: \"" + path + "\"}"); });
  EXPECT_NE(msg.find("'last_conv.weight' has shape [1280,64,1,1] in the file but [1280,128,1,1]"),
            std::string::npos) << msg;

  // A Linear of the wrong size: both shapes, in featlearn's layout, and Paddle's name and layout.
  path = pd("pplcnet_x0_25.pdparams");
  msg = error_of([&] { build("{name: PPLCNet_x0_25, class_num: 10, pretrained: \"" + path + "\"}"); });
  EXPECT_NE(msg.find("'fc.weight' (Paddle 'fc.weight' [1280,1000] [in, out], transposed) has shape [1000,1280] in "
                     "the file but [10,1280]"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("class_num"), std::string::npos) << msg;

  // Another architecture's file: the first clash is named.
  path = pd("pplcnet_x0_25.pdparams");
  msg = error_of([&] { build("{name: MobileNetV3_large_x1_0, pretrained: \"" + path + "\"}"); });
  EXPECT_NE(msg.find("'last_conv.weight' has shape [1280,128,1,1] in the file but [1280,960,1,1] in "
                     "MobileNetV3_large_x1_0 (is the file for another architecture?)"),
            std::string::npos) << msg;
  // A corrupt file is named too.
  path = pd("truncated.pdparams");
  msg = error_of([&] { build("{name: PPLCNet_x0_25, pretrained: \"" + path + "\"}"); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(PaddleWeights, StopLayerSkipsTheRemovedLayersTensors) {
  const std::string path = pd("pplcnet_x0_25.pdparams");
  auto cfg = Config::from_string("Arch:\n  Backbone: {name: PPLCNet_x0_25, pretrained: \"" + path +
                                     "\"}\n  BackboneStopLayer: {name: blocks6}\n",
                                 "test.yaml");
  auto bb = build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
  const auto t = tensors_of(*bb);
  EXPECT_EQ(t.count("last_conv.weight"), 0u);
  EXPECT_EQ(t.count("blocks6.1.pw_conv.conv.weight"), 1u);
}
