// PaddleClas RecModel configs (copies under configs/) parse and build: every component reads its keys, so a
// config that builds here has no silently ignored key. Also the top-level/Global validation messages.
#include <featlearn/data/transforms.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

using namespace featlearn;
namespace fs = std::filesystem;

namespace {
void build_all(const std::string& rel) {
  SCOPED_TRACE(rel);
  auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + rel);
  cfg.apply_override("Arch.Backbone.pretrained=False");  // no weight files in tests
  const auto root = cfg.root();
  check_root_sections(root);
  GlobalConfig::parse(root["Global"]);
  RecModel model(root["Arch"]);
  CombinedLoss train_loss(root["Loss"]["Train"]);
  if (root["Loss"]["Eval"].defined()) CombinedLoss eval_loss(root["Loss"]["Eval"]);
  ParameterScopes scopes = {{"RecModel", named_parameters_of(*model)}};
  for (const auto& child : train_loss->named_children()) {
    auto p = named_parameters_of(*child.value());
    if (!p.empty()) scopes.emplace_back(child.key(), p);
  }
  OptimizerSet::create(root["Optimizer"], scopes, 10, root["Global"].get<int64_t>("epochs", 1));
  if (root["Metric"]["Eval"].defined()) MetricSet::create(root["Metric"]["Eval"]);
  auto train = root["DataLoader"]["Train"];
  TransformPipeline::create(train["dataset"]["transform_ops"]);
  auto eval = root["DataLoader"]["Eval"];
  for (const char* set : {"Query", "Gallery"})
    if (eval[set].defined()) TransformPipeline::create(eval[set]["dataset"]["transform_ops"]);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}
}  // namespace

TEST(PaddleConfigs, SeedConfig) { build_all("seed_config.yaml"); }
TEST(PaddleConfigs, EmojiRecipe) { build_all("emoji/ResNet18_reid.yaml"); }
TEST(PaddleConfigs, VehicleReID) { build_all("Vehicle/ResNet50_ReID.yaml"); }
TEST(PaddleConfigs, VehicleCls) { build_all("Vehicle/ResNet50.yaml"); }
TEST(PaddleConfigs, LogoReID) { build_all("Logo/ResNet50_ReID.yaml"); }
TEST(PaddleConfigs, Cartoonface) { build_all("Cartoonface/ResNet50_icartoon.yaml"); }
TEST(PaddleConfigs, StrongBaseline) { build_all("reid/strong_baseline/baseline.yaml"); }
TEST(PaddleConfigs, StrongBaselineTriplet) { build_all("reid/strong_baseline/softmax_triplet.yaml"); }
TEST(PaddleConfigs, StrongBaselineTripletCenter) { build_all("reid/strong_baseline/softmax_triplet_with_center.yaml"); }

TEST(PaddleConfigs, SeedFeatureShapeIs512) {
  auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/seed_config.yaml");
  cfg.apply_override("Arch.Backbone.pretrained=False");
  RecModel model(cfg["Arch"]);
  model->eval();
  torch::NoGradGuard ng;
  auto out = model->forward(torch::randn({2, 3, 64, 64}));
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(out.backbone.sizes(), (std::vector<int64_t>{2, 2048, 1, 1}));
}

TEST(PaddleConfigs, ErrorsNameTheKey) {
  auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/seed_config.yaml");
  cfg.apply_override("Arch.Backbone.pretrained=False");
  auto bad_head = cfg;
  bad_head.apply_override("Arch.Head.name=ArcMarginX");
  auto msg = error_of([&] { RecModel m(bad_head["Arch"]); });
  EXPECT_NE(msg.find("Arch.Head.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ArcMargin"), std::string::npos) << msg;

  auto bad_key = Config::from_string("Global:\n  epochs: 3\n  eval_intreval: 2\n", "g.yaml");
  msg = error_of([&] { GlobalConfig::parse(bad_key["Global"]); });
  EXPECT_NE(msg.find("g.yaml:3: Global.eval_intreval: unknown key; did you mean eval_interval?"), std::string::npos) << msg;

  auto bad_type = Config::from_string("Global:\n  epochs: ten\n", "g.yaml");
  msg = error_of([&] { GlobalConfig::parse(bad_type["Global"]); });
  EXPECT_NE(msg.find("g.yaml:2: Global.epochs: expected an integer, got 'ten'"), std::string::npos) << msg;

  auto bad_section = Config::from_string("Global: {}\nOptimiser: {}\n", "g.yaml");
  msg = error_of([&] { check_root_sections(bad_section.root()); });
  EXPECT_NE(msg.find("Optimiser: unknown key; did you mean Optimizer?"), std::string::npos) << msg;
}

// Issue acceptance: `featlearn describe` on the seed config.
TEST(Describe, SeedConfigShowsFeatureShapeAndPaddleNames) {
  const std::string cfg = std::string(FEATLEARN_SOURCE_DIR) + "/configs/seed_config.yaml";
  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_describe(ConfigArgs{cfg, {"Arch.Backbone.pretrained=False"}}), 0);
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("features: [N,512]"), std::string::npos) << out;
  EXPECT_NE(out.find("adaptive_avg_pool2d_0"), std::string::npos) << out;

  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_describe(ConfigArgs{cfg, {"Arch.Backbone.pretrained=False", "Arch.BackboneStopLayer.name=flatten",
                                          "Arch.Neck=null", "Arch.Head=null"}}),
            0);
  out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("features: [N,2048]"), std::string::npos) << out;

  const auto msg = error_of([&] { cmd_describe(ConfigArgs{cfg, {"Arch.Backbone.pretrained=False", "Arch.Head.name=ArcMarginX"}}); });
  EXPECT_NE(msg.find("Arch.Head.name (set by -o): unknown Arch.Head 'ArcMarginX'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ArcMargin"), std::string::npos) << msg;
  // `pretrained: True` without a file says where to put one.
  const auto pre = error_of([&] { cmd_describe(ConfigArgs{cfg, {}}); });
  EXPECT_NE(pre.find("Arch.Backbone.pretrained"), std::string::npos) << pre;
}
