// PaddleClas RecModel configs (copies under configs/) parse and build: every component reads its keys, so a
// config that builds here has no silently ignored key. Also the top-level/Global validation messages.
#include <featlearn/data/loader.h>
#include <featlearn/data/transforms.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/optim/optimizer.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <sstream>
#include <unistd.h>

using namespace featlearn;
namespace fs = std::filesystem;

namespace {
const fs::path kConfigs = fs::path(FEATLEARN_SOURCE_DIR) / "configs";

// Walks a config node and returns the dotted override path of every `key` below it (list elements as indices,
// the -o syntax).
void collect_keys(const ConfigNode& n, const std::string& path, const std::string& key, std::vector<std::string>* out) {
  if (n.is_map()) {
    for (const auto& k : n.keys()) {
      const std::string p = path.empty() ? k : path + "." + k;
      if (k == key) out->push_back(p);
      collect_keys(n[k], p, key, out);
    }
  } else if (n.is_seq()) {
    for (size_t i = 0; i < n.size(); ++i) collect_keys(n.at(i), path + "." + std::to_string(i), key, out);
  }
}

ConfigNode node_at(const Config& cfg, const std::string& dotted) {
  ConfigNode node = cfg.root();
  std::string part;
  std::stringstream ss(dotted);
  while (std::getline(ss, part, '.')) node = node[part];
  return node;
}

// Images per identity a set's sampler takes (K of a P x K batch), or 0 for samplers without identities.
int64_t instances_of(const ConfigNode& sampler) {
  for (const char* k : {"num_instances", "sample_per_id", "instances"})
    if (sampler[k].defined()) return sampler[k].as<int64_t>();
  return 0;
}

// A numpy.memmap of `n` float32 images [n, 3, h, w] with its .conf (docs/file-formats.md, "Face verification sets").
void write_memfile(const fs::path& dat, int n, int h, int w, float offset) {
  fs::create_directories(dat.parent_path());
  std::vector<float> v(static_cast<size_t>(n) * 3 * h * w);
  for (size_t i = 0; i < v.size(); ++i) v[i] = offset + static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
  std::ofstream(dat, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  std::ofstream(dat.string() + ".conf") << fmt::format(R"({{"shape": [{}, 3, {}, {}], "dtype": "float32"}})", n, h, w);
}

// FiveValidationDataset: per set, `pairs` issame flags (.npy 1.0, |b1) and 2 x pairs images; the concatenation.
void make_face_validation(Config& cfg, const std::string& set_path, const fs::path& dir, int pairs) {
  const int side = static_cast<int>(cfg["Global"]["image_shape"].as<std::vector<int64_t>>()[1]);
  fs::create_directories(dir);
  const char* sets[] = {"agedb_30", "cfp_fp", "lfw", "cplfw", "calfw"};
  for (int s = 0; s < 5; ++s) {
    std::string header = fmt::format("{{'descr': '|b1', 'fortran_order': False, 'shape': ({},), }}", pairs);
    header.append(64 - (10 + header.size() + 1) % 64, ' ').push_back('\n');
    std::ofstream npy(dir / (std::string(sets[s]) + "_list.npy"), std::ios::binary);
    npy << "\x93NUMPY" << '\x01' << '\x00' << static_cast<char>(header.size() & 0xff)
        << static_cast<char>(header.size() >> 8) << header;
    for (int p = 0; p < pairs; ++p) npy << static_cast<char>(p % 2);
    write_memfile(dir / sets[s] / "memfile/mem_file.dat", 2 * pairs, side, side, 0.1f * s);
  }
  write_memfile(dir / "concat_validation_memfile", 10 * pairs, side, side, 0.0f);
  cfg.apply_override(set_path + ".dataset.val_data_path=" + dir.string());
  cfg.apply_override(set_path + ".dataset.concat_mem_file_name=" + (dir / "concat_validation_memfile").string());
}

// Writes a small dataset in the list format of `set`'s dataset class under `dir` (`ids` identities of `per_id`
// images, two cameras) and points the set's image_root / cls_label_path at it.
void make_dataset_for(Config& cfg, const std::string& set_path, const fs::path& dir, int ids, int per_id) {
  const auto ds = node_at(cfg, set_path)["dataset"];
  const std::string name = ds.require<std::string>("name");
  if (name == "FiveValidationDataset") return make_face_validation(cfg, set_path, dir, 10);  // the 10-fold search needs 10
  fs::create_directories(dir / "img");
  const fs::path list = dir / "list.txt";
  std::ofstream out(list);
  std::string image_root = dir.string(), list_value = list.string();
  fs::path person_dir;
  if (name == "Market1501" || name == "DukeMTMC" || name == "MSMT17") {
    const std::string sub = name == "Market1501" ? "market1501/Market-1501-v15.09.15"
                            : name == "DukeMTMC" ? "dukemtmc/DukeMTMC-reID" : "msmt17/MSMT17_V1";
    person_dir = dir / sub / ds.require<std::string>("cls_label_path");
    fs::create_directories(person_dir);
    list_value = ds.require<std::string>("cls_label_path");
  }
  if (name == "LogoDataset") out << "image_id\tlabel\tcls_name\tpath\n";
  const std::string delim = ds.get<std::string>("delimiter", " ");
  const int face_side = static_cast<int>(cfg["Global"]["image_shape"].as<std::vector<int64_t>>()[1]);
  int n = 0;
  for (int id = 0; id < ids; ++id)
    for (int k = 0; k < per_id; ++k, ++n) {
      // Face crops come aligned at the model's size (the AdaFace pipeline does not resize); others vary.
      const cv::Size size = name == "AdaFaceDataset" ? cv::Size(face_side, face_side) : cv::Size(36 + 2 * id % 7, 40 + 3 * k);
      cv::Mat img(size, CV_8UC3, cv::Scalar(7 * id % 255, 30 * k, 200 - 5 * id % 200));
      const std::string rel = "img/" + std::to_string(n) + ".jpg";
      const int cam = k % 2;
      if (!person_dir.empty()) {
        const std::string file = name == "DukeMTMC" ? fmt::format("{:04d}_c{}_f{:07d}.jpg", id + 1, cam + 1, n)
                                                    : fmt::format("{:04d}_c{}s1_{:06d}_00.jpg", id + 1, cam + 1, n);
        cv::imwrite((person_dir / file).string(), img);
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
  const bool adaface = name == "AdaFaceDataset";  // its keys are root_dir / label_path
  cfg.apply_override(set_path + (adaface ? ".dataset.root_dir=" : ".dataset.image_root=") + image_root);
  cfg.apply_override(set_path + (adaface ? ".dataset.label_path=" : ".dataset.cls_label_path=") + list_value);
  if (name == "CompCars" && ds["label_root"].defined())
    cfg.apply_override(set_path + ".dataset.label_root=" + (dir / "labels").string());
}

// The DataLoader sets of a config: DataLoader.Train, the Eval sets (Query/Gallery or one set) and any other
// training loader (MetaBIN's DataLoader.Metalearning.Train).
std::vector<std::string> loader_sets(const Config& cfg) {
  std::vector<std::string> sets;
  const auto dl = cfg["DataLoader"];
  for (const auto& k : dl.keys()) {
    const auto section = dl[k];
    if (section.has("dataset")) sets.push_back("DataLoader." + k);
    else
      for (const auto& sub : section.keys())
        if (section[sub].has("dataset")) sets.push_back("DataLoader." + k + "." + sub);
  }
  return sets;
}

// The config as the test runs it: no weight files, CPU, one epoch of one iteration, evaluation after it, small
// batches and one worker per loader, datasets generated in each set's own list format.
Config small_run_of(const std::string& rel, const fs::path& base) {
  auto cfg = Config::load((kConfigs / rel).string());
  std::vector<std::string> pretrained;
  collect_keys(cfg["Arch"], "Arch", "pretrained", &pretrained);
  for (const auto& p : pretrained) cfg.apply_override(p + "=False");
  // Head class counts are the dataset's (like its paths): 16 classes, not the 185,341 of a product corpus, so the
  // test does not spend its time writing gigabytes of margin-head checkpoints.
  std::vector<std::string> class_nums;
  collect_keys(cfg["Arch"], "Arch", "class_num", &class_nums);
  for (const auto& p : class_nums)
    if (p.size() >= 14 && p.compare(p.size() - 14, 14, "Head.class_num") == 0) cfg.apply_override(p + "=16");
  for (const std::string o : {"output_dir=" + (base / "out").string(), std::string("device=cpu"),
                              std::string("epochs=1"), std::string("iter_per_epoch=1"), std::string("eval_during_train=True"),
                              std::string("eval_interval=1"), std::string("save_interval=1"),
                              std::string("start_eval_epoch=0"), std::string("checkpoints=null"),
                              std::string("pretrained_model=null"), std::string("print_batch_step=1")})
    cfg.apply_override("Global." + o);
  // MetaBIN's warmup (extra basic updates before the first step) is schedule length, like epochs.
  if (cfg["Global"]["warmup_iter"].defined()) cfg.apply_override("Global.warmup_iter=1");
  const auto sets = loader_sets(cfg);
  for (size_t i = 0; i < sets.size(); ++i) {
    const auto& set = sets[i];
    const bool train = set.find(".Eval") == std::string::npos;
    const auto sampler = node_at(cfg, set)["sampler"];
    const int64_t k = instances_of(sampler);
    const int64_t batch = train ? (k > 0 ? 2 * k : 2) : 2;
    cfg.apply_override(set + ".sampler.batch_size=" + std::to_string(batch));
    if (node_at(cfg, set)["loader"]["num_workers"].defined()) cfg.apply_override(set + ".loader.num_workers=1");
    const int per_id = train ? static_cast<int>(std::max<int64_t>(k, 2)) : 2;
    make_dataset_for(cfg, set, base / ("data" + std::to_string(i)), train ? 4 : 2, per_id);
  }
  return cfg;
}

bool all_finite(const MetricValues& m) {
  return std::all_of(m.begin(), m.end(), [](const auto& kv) { return std::isfinite(kv.second); });
}

// Every YAML under configs/ that is a training config (the PaddleClas RecModel configs, copied unchanged, and
// featlearn's own), relative to configs/.
std::vector<std::string> training_configs() {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(kConfigs)) {
    if (e.path().extension() != ".yaml") continue;
    const std::string rel = fs::relative(e.path(), kConfigs).string();
    if (rel.rfind("slim/", 0) == 0 || rel.rfind("ssl/", 0) == 0) continue;
    if (!Config::load(e.path().string())["DataLoader"].defined()) continue;  // inference / index configs
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string test_name_of(const std::string& rel) {
  std::string n;
  for (char c : rel.substr(0, rel.size() - 5)) n += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return n;
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

// One training step and one evaluation per config: the model, losses, optimizer and schedule, every
// DataLoader set (datasets in their own list formats, samplers, transforms, loaders) and the evaluation are
// built from the config as written (paths, pretrained weights, batch sizes and epochs aside).
class AllConfigs : public testing::TestWithParam<std::string> {};

// Configs that PaddleClas cannot run either, with the error featlearn gives instead (docs/paddleclas-differences.md).
const std::map<std::string, std::string> kBrokenUpstream = {
    // RandomCrop is paddle.vision's ([h, w]); the config's [128, 256] is [w, h] (D9).
    {"ResNet50_UReID_infer.yaml", "RandomCrop: the image is 148x276 (w x h), smaller than the crop of 256x128"},
};

TEST_P(AllConfigs, TrainsOneStepAndEvaluates) {
  const std::string rel = GetParam();
  const fs::path base = fs::temp_directory_path() / fmt::format("featlearn_cfg_{}_{}", getpid(), test_name_of(rel));
  fs::remove_all(base);
  Config cfg = small_run_of(rel, base);
  if (kBrokenUpstream.count(rel)) {
    const auto msg = error_of([&] { Trainer(cfg, Trainer::Mode::kTrain).train(); });
    EXPECT_NE(msg.find(kBrokenUpstream.at(rel)), std::string::npos) << msg;
    fs::remove_all(base);
    return;
  }
  MetricValues metrics;
  {
    Trainer trainer(cfg, Trainer::Mode::kTrain);
    metrics = trainer.train();
  }
  ASSERT_FALSE(metrics.empty());
  EXPECT_TRUE(all_finite(metrics));
  // The train step's loss was logged and finite; a checkpoint was written.
  std::ifstream log(base / "out/metrics.jsonl");
  std::string line;
  int train_records = 0, eval_records = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("phase", "") == "train") {
      ++train_records;
      EXPECT_TRUE(std::isfinite(j["loss"].get<double>())) << line;
    }
    if (j.value("phase", "") == "eval") ++eval_records;
  }
  EXPECT_GE(train_records, 1);
  EXPECT_EQ(eval_records, 1);
  bool checkpoint = false;
  for (const auto& e : fs::recursive_directory_iterator(base / "out"))
    checkpoint |= e.path().filename() == "latest.ckpt";
  EXPECT_TRUE(checkpoint);
  fs::remove_all(base);
}

INSTANTIATE_TEST_SUITE_P(Configs, AllConfigs, testing::ValuesIn(training_configs()),
                         [](const testing::TestParamInfo<std::string>& i) { return test_name_of(i.param); });

// PaddleClas configs featlearn does not run say why, in every command.
TEST(PaddleConfigs, SlimAndSslConfigsAreRefusedWithTheReason) {
  int refused = 0;
  for (const auto& e : fs::recursive_directory_iterator(kConfigs)) {
    const std::string rel = fs::relative(e.path(), kConfigs).string();
    if (e.path().extension() != ".yaml") continue;
    const auto root = Config::load(e.path().string()).root();
    const bool slim = root["Slim"].defined(), ssl = root["SSL"].defined();
    if (!slim && !ssl) continue;
    ++refused;
    SCOPED_TRACE(rel);
    const ConfigArgs args{e.path().string(), {}};
    for (auto cmd : {cmd_describe, cmd_train}) {
      const auto msg = error_of([&] { cmd(args); });
      EXPECT_NE(msg.find(slim ? "Slim: quantization and pruning" : "semi-supervised"), std::string::npos) << msg;
      EXPECT_NE(msg.find(rel), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(refused, 8);  // slim/ (5), ssl/CCSSL (2), GeneralRecognition/Gallery2FC_PPLCNet_x2_5 (PACT quantized)
}

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
  // `pretrained: True`: describe does not download; it says what train/eval would fetch.
  ::setenv("FEATLEARN_HOME", (std::filesystem::temp_directory_path() / "featlearn_describe_home").c_str(), 1);
  ::setenv("FEATLEARN_WEIGHTS_MIRROR", "http://127.0.0.1:1", 1);  // a request would fail the command
  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_describe(ConfigArgs{cfg, {}}), 0);
  out = testing::internal::GetCapturedStdout();
  ::unsetenv("FEATLEARN_WEIGHTS_MIRROR");
  ::unsetenv("FEATLEARN_HOME");
  EXPECT_NE(out.find("Arch.Backbone.pretrained: not downloaded by describe"), std::string::npos) << out;
  EXPECT_NE(out.find("http://127.0.0.1:1/models/resnet50-0676ba61.pth"), std::string::npos) << out;
  EXPECT_NE(out.find("features: [N,512]"), std::string::npos) << out;
}
