// PaddleClas RecModel configs (copies under configs/) parse and build: every component reads its keys, so a
// config that builds here has no silently ignored key. Also the top-level/Global validation messages.
#include <featlearn/data/loader.h>
#include <featlearn/data/transforms.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace featlearn;
namespace fs = std::filesystem;

namespace {
// Writes a small dataset in the list format of `set`'s dataset class (enough identities and images for the
// set's sampler to fill one batch) under `dir`, and points the set's image_root / cls_label_path at it.
void make_dataset_for(Config& cfg, const std::string& set_path, const ConfigNode& set, const fs::path& dir) {
  const auto ds = set["dataset"];
  const std::string name = ds.require<std::string>("name");
  const int64_t batch = set["sampler"].get<int64_t>("batch_size", 8);
  const int ids = static_cast<int>(std::max<int64_t>(8, batch / 2));
  const int per_id = 4;
  fs::create_directories(dir / "img");
  const fs::path list = dir / "list.txt";
  std::ofstream out(list);
  std::string image_root = dir.string(), list_value = list.string();
  fs::path market_dir;
  if (name == "Market1501") {
    market_dir = dir / "market1501/Market-1501-v15.09.15" / ds.require<std::string>("cls_label_path");
    fs::create_directories(market_dir);
    list_value = ds.require<std::string>("cls_label_path");
  }
  if (name == "LogoDataset") out << "image_id\tlabel\tcls_name\tpath\n";
  const std::string delim = ds.get<std::string>("delimiter", " ");
  int n = 0;
  for (int id = 0; id < ids; ++id)
    for (int k = 0; k < per_id; ++k, ++n) {
      cv::Mat img(40 + 3 * k, 36 + 2 * id % 7, CV_8UC3, cv::Scalar(7 * id % 255, 30 * k, 200 - 5 * id % 200));
      const std::string rel = "img/" + std::to_string(n) + ".jpg";
      const int cam = k % 2;
      if (name == "Market1501") {
        cv::imwrite((market_dir / fmt::format("{:04d}_c{}s1_{:06d}_00.jpg", id + 1, cam + 1, n)).string(), img);
        continue;
      }
      cv::imwrite((dir / rel).string(), img);
      if (name == "VeriWild") out << rel << " " << id << " " << cam << "\n";
      else if (name == "LogoDataset") out << n << "\t" << id + 1 << "\tlogo\t" << rel << "\n";
      else if (name == "ICartoonDataset") out << rel << "\t" << id << "\n";
      else if (name == "CompCars") {
        out << rel << " " << id << "\n";
        fs::create_directories(dir / "labels/img");
        std::ofstream(dir / "labels/img" / (std::to_string(n) + ".txt")) << "1\n2 3 30 35\n";
      } else out << rel << delim << id << "\n";
    }
  out.close();
  cfg.apply_override(set_path + ".dataset.image_root=" + image_root);
  cfg.apply_override(set_path + ".dataset.cls_label_path=" + list_value);
  if (name == "CompCars" && ds["label_root"].defined())
    cfg.apply_override(set_path + ".dataset.label_root=" + (dir / "labels").string());
}

// Builds every DataLoader set of the config on generated images and takes one batch from each.
void build_data_side(Config& cfg, const std::string& rel) {
  const fs::path base = fs::temp_directory_path() / ("featlearn_cfg_data_" + std::to_string(getpid())) / rel;
  fs::remove_all(base);
  std::vector<std::string> sets = {"DataLoader.Train"};
  const auto eval = cfg["DataLoader"]["Eval"];
  if (eval.has("dataset")) sets.push_back("DataLoader.Eval");
  else
    for (const auto& k : eval.keys()) sets.push_back("DataLoader.Eval." + k);
  for (size_t i = 0; i < sets.size(); ++i) {
    ConfigNode node = cfg.root();
    std::string part;
    std::stringstream ss(sets[i]);
    while (std::getline(ss, part, '.')) node = node[part];
    make_dataset_for(cfg, sets[i], node, base / std::to_string(i));
  }
  for (const auto& set_path : sets) {
    SCOPED_TRACE(set_path);
    ConfigNode node = cfg.root();
    std::string part;
    std::stringstream ss(set_path);
    while (std::getline(ss, part, '.')) node = node[part];
    LoaderContext ctx;
    auto loader = DataLoader::create(node, ctx);
    ASSERT_GT(loader->batches_per_epoch(), 0);
    loader->start_epoch(0);
    auto batch = loader->next();
    ASSERT_TRUE(batch.has_value());
    EXPECT_EQ(batch->images.dim(), 4);
    EXPECT_EQ(batch->images.size(0), loader->batch_size());
    EXPECT_EQ(batch->images.size(1), 3);
    EXPECT_EQ(batch->labels.size(0), batch->images.size(0));
    EXPECT_TRUE(torch::isfinite(batch->images).all().item<bool>());
  }
}

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
  build_data_side(cfg, rel);
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
