// The MetaBIN loop (engine/train_metabin.h) on a tiny ResNet50_metabin (width 2, one block per stage) and 16x16
// Market1501-style images of 4 ids in 3 cameras: which parameters each phase changes, the warmup count and
// order (against the phases run by hand), the meta split rule, lr_gate, exact resume, config errors.
#include <featlearn/data/loader.h>
#include <featlearn/engine/train_metabin.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/model/metabin.h>
#include <featlearn/model/module_base.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include "../error_of.h"

namespace fs = std::filesystem;
using namespace featlearn;

using featlearn::test::error_of;

namespace {

// "TinyResNet_metabin": ResNet50_metabin's structure and names at width 2 with one block per stage (64 features).
void register_tiny_backbone() {
  register_builtin_models();
  backbone_registry().add("TinyResNet_metabin", [](const ConfigNode& node) -> BackbonePtr {
    node.check_keys({"name"});
    auto m = std::make_shared<MetaBinResNetImpl>(
        MetaBinResNetOptions().layers({1, 1, 1, 1}).base_width(2).class_num(10).bias_lr_factor(2.0));
    m->config_name = "TinyResNet_metabin";
    return m;
  });
}

// Market1501 layout: 4 pids x 3 cameras x 2 images, each a colour per pid plus a stripe per camera and image.
fs::path make_market(const fs::path& root) {
  const fs::path dir = root / "market1501/Market-1501-v15.09.15/bounding_box_train";
  fs::create_directories(dir);
  int n = 0;
  for (int pid = 1; pid <= 4; ++pid)
    for (int cam = 1; cam <= 3; ++cam)
      for (int k = 0; k < 2; ++k, ++n) {
        cv::Mat img(16, 16, CV_8UC3, cv::Scalar(50 * pid, 220 - 40 * pid, 30 * cam));
        img.row(2 + 4 * k + cam).setTo(cv::Scalar(255, 255, 255));
        cv::imwrite((dir / fmt::format("{:04d}_c{}s1_{:06d}_00.jpg", pid, cam, n)).string(), img);
      }
  return root;
}

std::string set_yaml(const fs::path& data, const std::string& sampler) {
  return R"(
      dataset:
        name: Market1501
        image_root: ")" + data.string() + R"("
        cls_label_path: bounding_box_train
        backend: pil
        transform_ops:
          - ResizeImage: {size: [16, 16], return_numpy: False, interpolation: bicubic, backend: pil}
          - ToTensor:
          - Normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
      sampler: )" + sampler + R"(
      loader: {num_workers: 0})";
}

std::string config_yaml(const fs::path& data, const fs::path& out, int warmup_iter, int epochs, int iters) {
  const std::string naive = "{name: NaiveIdentityBatchSampler, batch_size: 4, num_instances: 2, drop_last: True}";
  const std::string domain =
      "{name: DomainShuffleBatchSampler, batch_size: 6, num_instances: 2, drop_last: True, camera_to_domain: True}";
  return R"(Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: )" + std::to_string(epochs) + R"(
  iter_per_epoch: )" + std::to_string(iters) + R"(
  warmup_iter: )" + std::to_string(warmup_iter) + R"(
  eval_during_train: False
  eval_mode: retrieval
  image_shape: [3, 16, 16]
  seed: 3
  train_mode: metabin
Arch:
  name: RecModel
  Backbone: {name: TinyResNet_metabin}
  BackboneStopLayer: {name: flatten}
  Neck: {name: MetaBNNeck, num_features: 64, use_global_stats: True}
  Head: {name: FC, embedding_size: 64, class_num: 4, bias_attr: False}
Loss:
  Train:
    - CELossForMetaBIN: {weight: 1.0, epsilon: 0.1}
  Basic:
    - CELossForMetaBIN: {weight: 1.0, epsilon: 0.1}
    - TripletLossForMetaBIN: {weight: 1.0, margin: 0.3, feature_from: backbone}
  MetaTrain:
    - CELossForMetaBIN: {weight: 1.0, epsilon: 0.1}
    - TripletLossForMetaBIN: {weight: 1.0, margin: 0.3, feature_from: backbone}
    - IntraDomainScatterLoss: {weight: 1.0, normalize_feature: True, feature_from: backbone}
    - InterDomainShuffleLoss: {weight: 1.0, normalize_feature: False, feature_from: backbone}
  MetaTest:
    - CELossForMetaBIN: {weight: 1.0, epsilon: 0.1}
    - TripletLossForMetaBIN: {weight: 1.0, margin: 0.3, feature_from: backbone}
Optimizer:
  - Momentum:
      scope: '.*(conv|batch_norm|instance_norm|feat_bn|fc)'
      lr: {name: Constant, learning_rate: 0.05}
      momentum: 0.9
      regularizer: {name: L2, coeff: 0.0005}
  - SGD:
      scope: "backbone.*gate"
      lr: {name: Constant, learning_rate: 0.2}
  - SGD:
      scope: RecModel
      lr: {name: Cyclic, base_learning_rate: 0.001, max_learning_rate: 0.1, step_size_up: 2, step_size_down: 2,
           warmup_epoch: 0, warmup_start_lr: 1, by_epoch: False, last_epoch: 0}
DataLoader:
  Train:)" + set_yaml(data, naive) + R"(
  Metalearning:
    Train:)" + set_yaml(data, domain) + R"(
  Eval:
    Query:)" + set_yaml(data, "{name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}") + R"(
Metric:
  Eval:
    - mAP: {}
)";
}

std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : m.named_parameters()) out[kv.key()] = kv.value().detach().clone();
  for (const auto& kv : m.named_buffers()) out[kv.key()] = kv.value().detach().clone();
  return out;
}

bool is_gate(const std::string& name) { return name.size() > 9 && name.substr(name.size() - 9) == "gate.gate"; }

// The pieces the Trainer builds, for driving the loop's phases directly.
struct Parts {
  Config cfg;
  ArchModelPtr model;
  std::unique_ptr<OptimizerSet> optimizer;
  std::unique_ptr<DataLoader> train, meta;
  std::unique_ptr<MetaBinLoop> loop;

  explicit Parts(const std::string& yaml) : cfg(Config::from_string(yaml)) {
    torch::manual_seed(11);
    const auto root = cfg.root();
    model = build_arch(root["Arch"], {3, 16, 16});
    model->train();
    LoaderContext ctx;
    ctx.seed = 3;
    train = DataLoader::create(root["DataLoader"]["Train"], ctx);
    meta = DataLoader::create(root["DataLoader"]["Metalearning"]["Train"], ctx);
    optimizer = OptimizerSet::create(root["Optimizer"], {{"RecModel", named_parameters_of(*model)}}, 4, 2,
                                     lr_multipliers_of(*model), {kMetaBinCyclicOptimizer});
    loop = std::make_unique<MetaBinLoop>(root, *model, *optimizer, *train, ctx, torch::kCPU);
  }
};

struct MetaBinTest : testing::Test {
  void SetUp() override {
    register_tiny_backbone();
    base = fs::temp_directory_path() / ("featlearn_metabin_" + std::to_string(getpid()));
    fs::remove_all(base);
    data = make_market(base / "data");
  }
  void TearDown() override { fs::remove_all(base); }
  fs::path base, data;
};

}  // namespace

TEST(MetaBinSplit, FirstHalfOfACameraPermutationIsMetaTrain) {
  const std::vector<int64_t> three = {0, 1, 2}, four = {0, 1, 2, 5};
  std::set<int64_t> seen;
  for (int64_t draw = 0; draw < 40; ++draw) {
    const auto d3 = meta_train_domains(three, 9, draw);
    ASSERT_EQ(d3.size(), 1u);  // ⌊3/2⌋
    seen.insert(d3[0]);
    const auto d4 = meta_train_domains(four, 9, draw);
    ASSERT_EQ(d4.size(), 2u);
    EXPECT_NE(d4[0], d4[1]);
    for (int64_t d : d4) EXPECT_TRUE(d == 0 || d == 1 || d == 2 || d == 5);
    EXPECT_EQ(d3, meta_train_domains(three, 9, draw));  // a function of (seed, draw)
  }
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1, 2}));

  Batch b;
  b.camids = torch::tensor({2, 0, 1, 2, 0, 1}, torch::kInt64);
  b.labels = torch::tensor({10, 11, 12, 13, 14, 15}, torch::kInt64);
  b.indices = torch::arange(6);
  b.images = torch::arange(6, torch::kFloat32).view({6, 1, 1, 1});
  const auto s = split_meta_batch(b, {2});
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(torch::equal(s->first.labels, torch::tensor({10, 13}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(s->first.images.flatten(), torch::tensor({0.f, 3.f})));
  EXPECT_TRUE(torch::equal(s->second.labels, torch::tensor({11, 12, 14, 15}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(s->second.camids, torch::tensor({0, 1, 0, 1}, torch::kInt64)));
  const auto two = split_meta_batch(b, {0, 1});
  ASSERT_TRUE(two.has_value());
  EXPECT_TRUE(torch::equal(two->first.indices, torch::tensor({1, 2, 4, 5}, torch::kInt64)));
  EXPECT_FALSE(split_meta_batch(b, {7}).has_value());         // no meta-train sample
  EXPECT_FALSE(split_meta_batch(b, {0, 1, 2}).has_value());   // no meta-test sample
}

TEST_F(MetaBinTest, EachPhaseChangesOnlyItsParameters) {
  Parts p(config_yaml(data, base / "out", 1, 2, 4));
  // lr_gate = Constant 0.2 x Cyclic at iteration 0; last_epoch 0 puts the cycle at step 1 of step_size_up 2:
  // 0.001 + (0.1 - 0.001) / 2 = 0.0505.
  const auto opt = p.loop->meta_test_opt();
  EXPECT_NEAR(opt.lr_gate, 0.2 * 0.0505, 1e-12);
  EXPECT_TRUE(opt.enable_inside_update);
  EXPECT_EQ(opt.bn_mode, MetaBinOpt::BnMode::kHold);

  // Gates inside (0, 1), so that both the BN and the IN half get gradients (at the initial 1 the IN bias has none).
  {
    torch::NoGradGuard ng;
    for (auto* g : bin_gates(*p.model)) g->gate.fill_(0.6);
  }
  p.train->start_epoch(0);
  const Batch train = *p.train->next();
  const auto before = snapshot(*p.model);
  p.loop->basic_update(train);
  const auto after_basic = snapshot(*p.model);
  int changed = 0;
  for (const auto& [name, t] : before) {
    const bool same = torch::equal(t, after_basic.at(name));
    if (is_gate(name) || name.rfind("backbone.fc.", 0) == 0 || name.find("num_batches_tracked") != std::string::npos) {
      // Gates are not stepped by the basic update; the unused classifier of the backbone gets no gradient.
      if (name.find("num_batches_tracked") == std::string::npos) EXPECT_TRUE(same) << name;
    } else {
      EXPECT_FALSE(same) << name;  // every other parameter and the running statistics (phase general)
      ++changed;
    }
  }
  EXPECT_GT(changed, 50);
  for (const auto& prm : p.optimizer->parameters_of(0))
    if (prm.grad().defined()) EXPECT_EQ(prm.grad().abs().sum().item<double>(), 0.0);
  // The gates kept the basic loss's gradient (PaddleClas clears optimizer 0 only).
  double gate_grad = 0;
  for (const auto& prm : p.optimizer->parameters_of(1)) gate_grad += prm.grad().abs().sum().item<double>();
  EXPECT_GT(gate_grad, 0.0);

  p.meta->start_epoch(0);
  const Batch meta = *p.meta->next();
  const auto split = split_meta_batch(meta, {0});
  ASSERT_TRUE(split.has_value());
  p.loop->meta_update(split->first, split->second);
  const auto after_meta = snapshot(*p.model);
  int gates_changed = 0;
  for (const auto& [name, t] : after_basic) {
    const bool same = torch::equal(t, after_meta.at(name));
    if (is_gate(name)) {
      gates_changed += !same;
      EXPECT_TRUE((after_meta.at(name) >= 0).all().item<bool>() && (after_meta.at(name) <= 1).all().item<bool>());
    } else {
      EXPECT_TRUE(same) << name;  // no other parameter stepped, running statistics held
    }
  }
  EXPECT_GT(gates_changed, 0);
  for (size_t i : {0, 1})
    for (const auto& prm : p.optimizer->parameters_of(i))
      if (prm.grad().defined()) EXPECT_EQ(prm.grad().abs().sum().item<double>(), 0.0);
  EXPECT_EQ(p.optimizer->iteration(), 0);  // the phases do not advance the schedules; step() does
}

TEST_F(MetaBinTest, WarmupRunsExtraBasicUpdatesOnFreshBatchesOnce) {
  const std::string yaml = config_yaml(data, base / "out", 3, 2, 4);
  Parts a(yaml);
  const auto r = a.loop->step();
  EXPECT_EQ(a.loop->position().train_batches, 3);  // warmup_iter batches: 2 warmup updates + the basic one
  EXPECT_EQ(a.loop->position().meta_batches, 1);
  EXPECT_EQ(a.loop->position().splits, 1);
  EXPECT_TRUE(a.loop->position().warmup_done);
  EXPECT_EQ(a.optimizer->iteration(), 1);  // the schedules moved once
  EXPECT_EQ(r.images, 4);
  EXPECT_DOUBLE_EQ(r.lr, 0.05);
  std::set<std::string> names;
  for (const auto& t : r.terms) names.insert(t.first);
  for (const char* n : {"train_loss", "train_CELossForMetaBIN", "mtrain_InterDomainShuffleLoss", "mtest_loss"})
    EXPECT_TRUE(names.count(n)) << n;
  a.loop->step();
  EXPECT_EQ(a.loop->position().train_batches, 4);  // no warmup after the first iteration
  EXPECT_EQ(a.loop->position().meta_batches, 2);

  // The same first iteration by hand: basic updates on train batches 0, 1, 2, then the meta update on meta batch
  // 0 split by draw 0.
  Parts b(yaml);
  b.train->start_epoch(0);
  for (int i = 0; i < 3; ++i) b.loop->basic_update(*b.train->next());
  b.meta->start_epoch(0);
  const auto split = split_meta_batch(*b.meta->next(), meta_train_domains({0, 1, 2}, 3, 0));
  ASSERT_TRUE(split.has_value());
  b.loop->meta_update(split->first, split->second);
  Parts c(yaml);
  c.loop->step();
  const auto want = snapshot(*b.model), got = snapshot(*c.model);
  for (const auto& [name, t] : want) EXPECT_TRUE(torch::equal(t, got.at(name))) << name;
}

TEST_F(MetaBinTest, ResumeContinuesExactly) {
  auto run = [&](const std::string& out, int64_t stop, const std::string& resume) {
    Config cfg = Config::from_string(config_yaml(data, base / out, 2, 2, 2));
    if (!resume.empty()) cfg.apply_override("Global.checkpoints=" + resume);
    Trainer t(cfg, Trainer::Mode::kTrain);
    t.train(stop);
    return snapshot(t.model());
  };
  const auto full = run("full", -1, "");
  run("half", 1, "");
  const auto resumed = run("half", -1, (base / "half/RecModel/latest").string());
  for (const auto& [name, t] : full) EXPECT_TRUE(torch::equal(t, resumed.at(name))) << name;
}

TEST_F(MetaBinTest, ConfigErrors) {
  const std::string yaml = config_yaml(data, base / "out", 2, 1, 1);
  auto error_with = [&](const std::vector<std::string>& overrides) {
    return error_of([&] {
      Config cfg = Config::from_string(yaml);
      for (const auto& o : overrides) cfg.apply_override(o);
      Trainer t(cfg, Trainer::Mode::kTrain);
    });
  };
  auto expect_error = [&](const std::vector<std::string>& overrides, const std::string& want) {
    const auto msg = error_with(overrides);
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
  };
  expect_error({"Loss.Basic=null"}, "train_mode metabin needs Loss.Basic");
  expect_error({"Global.warmup_iter=0"}, "Global.warmup_iter (set by -o): must be >= 1");
  expect_error({"Arch.Neck.name=BNNeck"}, "needs Arch.Neck: MetaBNNeck");
  expect_error({"DataLoader.Metalearning=null"}, "needs DataLoader.Metalearning.Train");
  // Outside metabin mode the MetaBIN sections are unknown keys, and warmup_iter is refused.
  const auto std_mode = error_with({"Global.train_mode=null"});
  EXPECT_NE(std_mode.find("warmup_iter: only used with train_mode: metabin"), std::string::npos) << std_mode;
  const auto basic = error_with({"Global.train_mode=null", "Global.warmup_iter=null"});
  EXPECT_NE(basic.find("Loss.Basic: unknown key"), std::string::npos) << basic;
}
