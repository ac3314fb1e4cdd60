// RecModel assembly: outputs, submodule names, optional Neck/Head, config errors.
#include <featlearn/model/rec_model.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/config/config.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace featlearn;

namespace {

RecModel make(const std::string& arch_body, const std::vector<std::string>& overrides = {}) {
  auto cfg = Config::from_string("Arch:\n" + arch_body, "arch.yaml");
  cfg.apply_overrides(overrides);
  RecModel m(cfg["Arch"]);
  m->eval();
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const char* kSeedArch = R"(  name: "RecModel"
  infer_output_key: "features"
  infer_add_softmax: False
  Backbone:
    name: "ResNet50"
    pretrained: False
  BackboneStopLayer:
    name: "adaptive_avg_pool2d_0"
  Neck:
    name: "VehicleNeck"
    in_channels: 2048
    out_channels: 512
  Head:
    name: "ArcMargin"
    embedding_size: 512
    class_num: 431
    margin: 0.15
    scale: 32
)";

}  // namespace

TEST(RecModel, BackboneOnly) {
  auto m = make("  name: RecModel\n  Backbone: {name: ResNet18}\n  BackboneStopLayer: {name: flatten}\n");
  EXPECT_EQ(m->neck(), nullptr);
  EXPECT_EQ(m->head(), nullptr);
  torch::NoGradGuard ng;
  auto out = m->forward(torch::randn({2, 3, 64, 64}));
  EXPECT_EQ(out.backbone.sizes(), torch::IntArrayRef({2, 512}));
  EXPECT_TRUE(out.features.is_same(out.backbone));
  EXPECT_FALSE(out.logits.defined());
  EXPECT_FALSE(out.neck.defined());
  EXPECT_TRUE(m->named_parameters().contains("backbone.layer1.0.conv1.weight"));
  EXPECT_FALSE(m->named_parameters().contains("backbone.fc.weight"));
  EXPECT_EQ(m->infer_output_key(), "features");
  EXPECT_FALSE(m->infer_add_softmax());
  EXPECT_EQ(m->head_feature_from(), "features");
}

TEST(RecModel, SeedArchitecture) {
  auto m = make(kSeedArch);
  ASSERT_NE(m->neck(), nullptr);
  ASSERT_NE(m->head(), nullptr);
  EXPECT_TRUE(m->named_parameters().contains("neck.conv.weight"));
  EXPECT_TRUE(m->named_parameters().contains("backbone.layer4.2.bn3.weight"));
  torch::NoGradGuard ng;
  auto out = m->forward(torch::randn({2, 3, 64, 64}));
  EXPECT_EQ(out.backbone.sizes(), torch::IntArrayRef({2, 2048, 1, 1}));
  EXPECT_EQ(out.neck.sizes(), torch::IntArrayRef({2, 512}));
  EXPECT_TRUE(out.features.is_same(out.neck));
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({2, 431}));
  m->train();
  auto train_out = m->forward(torch::randn({2, 3, 64, 64}), torch::tensor({1, 2}, torch::kLong));
  EXPECT_EQ(train_out.logits.sizes(), torch::IntArrayRef({2, 431}));
}

TEST(RecModel, NeckNullAndHeadFromBackbone) {
  auto m = make(std::string(kSeedArch) + "  head_feature_from: backbone\n",
                {"Arch.Neck=null", "Arch.BackboneStopLayer.name=flatten",
                 "Arch.Head={name: FC, embedding_size: 2048, class_num: 5}"});
  EXPECT_EQ(m->neck(), nullptr);
  torch::NoGradGuard ng;
  auto out = m->forward(torch::randn({1, 3, 64, 64}));
  EXPECT_EQ(out.features.sizes(), torch::IntArrayRef({1, 2048}));
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({1, 5}));
  EXPECT_EQ(m->head_feature_from(), "backbone");
}

// PaddleClas's default value of head_feature_from is "neck" (the neck output): accepted as featlearn's "features".
TEST(RecModel, HeadFeatureFromNeckIsPaddleClassDefault) {
  auto m = make(std::string(kSeedArch) + "  head_feature_from: neck\n");
  EXPECT_EQ(m->head_feature_from(), "features");
  const auto msg = error_of([] { make(std::string(kSeedArch) + "  head_feature_from: nek\n"); });
  EXPECT_NE(msg.find("did you mean neck"), std::string::npos) << msg;
}

TEST(RecModel, ConfigErrors) {
  std::string msg = error_of([] { make("  name: ResNet50\n  Backbone: {name: ResNet18}\n"); });
  EXPECT_NE(msg.find("Arch.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ResNet50"), std::string::npos) << msg;

  msg = error_of([] { make(kSeedArch, {"Arch.Head.name=ArcMarginX"}); });
  EXPECT_NE(msg.find("Arch.Head.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ArcMargin"), std::string::npos) << msg;

  msg = error_of([] { make(kSeedArch, {"Arch.Backbone.pretrained=True"}); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resnet50-0676ba61.pth failed"), std::string::npos) << msg;  // no network in tests

  msg = error_of([] { make(kSeedArch, {"Arch.infer_output_key=feature"}); });
  EXPECT_NE(msg.find("infer_output_key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean features"), std::string::npos) << msg;

  msg = error_of([] { make(kSeedArch, {"Arch.Neckk.name=x"}); });
  EXPECT_NE(msg.find("Neckk"), std::string::npos) << msg;

  msg = error_of([] { make("  name: RecModel\n"); });
  EXPECT_NE(msg.find("Backbone"), std::string::npos) << msg;
}

// Arch.use_sync_bn: one process has one set of BatchNorm statistics either way, so the model is the same
// (parameters and outputs); the value must still be a boolean.
TEST(RecModel, UseSyncBnIsTheSameModelOnOneProcess) {
  const std::string arch = "  name: RecModel\n  Backbone: {name: ResNet18}\n  BackboneStopLayer: {name: flatten}\n";
  torch::manual_seed(3);
  auto plain = make(arch);
  torch::manual_seed(3);
  auto sync = make(arch + "  use_sync_bn: True\n");
  torch::NoGradGuard ng;
  const auto x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(plain->forward(x).features, sync->forward(x).features));
  EXPECT_EQ(plain->named_parameters().size(), sync->named_parameters().size());
  const auto msg = error_of([&] { make(arch + "  use_sync_bn: sometimes\n"); });
  EXPECT_NE(msg.find("use_sync_bn"), std::string::npos) << msg;
}
