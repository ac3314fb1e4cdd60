// `featlearn index build|append|remove|search|eval|info` with a tiny exported model on generated images:
// PaddleClas list/config formats, only new lines embedded on append, removal by lines/labels/ids, bad images
// named with their list line, refusal of another model, config errors.
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/index/commands.h>
#include <featlearn/index/embedder.h>
#include <featlearn/index/gallery_index.h>
#include <featlearn/model/rec_model.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

// One directory per test process (ctest runs the tests of this file in parallel processes).
const fs::path kRoot = fs::temp_directory_path() / ("featlearn_index_cmds_" + std::to_string(::getpid()));

std::string train_config(const fs::path& out, int seed, const std::string& binarize = "") {
  return R"(
Global:
  output_dir: ")" + out.string() + R"("
  eval_mode: retrieval
  image_shape: [3, 32, 32]
  save_inference_dir: ")" + (out / "inference").string() + R"("
  seed: )" + std::to_string(seed) + (binarize.empty() ? "" : "\n  feature_binarize: " + binarize) + R"(
Arch:
  name: RecModel
  infer_output_key: features
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: avg_pool}
  Neck: {name: VehicleNeck, in_channels: 512, out_channels: 16}
  Head: {name: FC, embedding_size: 16, class_num: 4}
Loss:
  Train:
    - CELoss: {weight: 1.0}
DataLoader:
  Eval:
    Query:
      dataset:
        name: VeriWild
        image_root: "."
        cls_label_path: "unused.txt"
        transform_ops:
          - DecodeImage: {to_rgb: True, channel_first: False}
          - ResizeImage: {size: 32}
          - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
      sampler: {name: DistributedBatchSampler, batch_size: 4}
)";
}

// Exports a randomly initialised tiny model (seeded) and returns its inference directory.
std::string export_model(const std::string& name, int seed, const std::string& binarize = "") {
  const fs::path out = kRoot / name;
  fs::create_directories(out);
  const std::string text = train_config(out, seed, binarize);
  const auto cfg_path = (out / "train.yaml").string();
  std::ofstream(cfg_path) << text;
  torch::manual_seed(static_cast<uint64_t>(seed));
  auto cfg = Config::from_string(text, cfg_path);
  RecModel m(cfg["Arch"]);
  save_checkpoint((out / "weights").string(), *m, nullptr, nullptr, CheckpointMeta{});
  ConfigArgs a{cfg_path, {"Global.pretrained_model=" + (out / "weights").string()}};
  EXPECT_EQ(cmd_export(a), 0);
  return (out / "inference").string();
}

// 4 labels x 3 images: colour encodes the label.
void make_images() {
  fs::create_directories(kRoot / "gallery");
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> noise(-25, 25);
  std::ofstream list(kRoot / "gallery.txt");
  for (int label = 0; label < 4; ++label)
    for (int k = 0; k < 3; ++k) {
      cv::Mat img(40, 40, CV_8UC3, cv::Scalar(60 * label, 200 - 40 * label, 30 + 50 * k));
      for (int y = 0; y < img.rows; ++y)
        for (int x = 0; x < img.cols; ++x) img.at<cv::Vec3b>(y, x)[0] = cv::saturate_cast<uchar>(img.at<cv::Vec3b>(y, x)[0] + noise(rng));
      const std::string rel = "gallery/" + std::to_string(label) + "_" + std::to_string(k) + ".png";
      cv::imwrite((kRoot / rel).string(), img);
      list << rel << "\tclass_" << label << "\n";
    }
}

std::string index_config(const std::string& model, const std::string& method, const std::string& extra = "") {
  const auto path = kRoot / ("index_" + method + ".yaml");
  std::ofstream(path) << R"(
Global:
  rec_inference_model_dir: ")" + model + R"("
  det_inference_model_dir: null
  batch_size: 4
  use_gpu: False
  enable_mkldnn: True
  cpu_num_threads: 2
RecPreProcess: null
RecPostProcess: null
IndexProcess:
  index_method: ")" + method + R"("
  image_root: ")" + kRoot.string() + R"("
  index_dir: ")" + (kRoot / ("index_" + method)).string() + R"("
  data_file: ")" + (kRoot / "gallery.txt").string() + R"("
  index_operation: new
  delimiter: "\t"
  dist_type: IP
  embedding_size: 16
  batch_size: 5
  return_k: 3
)" + extra;
  return path.string();
}

std::vector<nlohmann::json> read_json_lines(const fs::path& p) {
  std::ifstream f(p);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

class IndexCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs::remove_all(kRoot);
    fs::create_directories(kRoot);
    make_images();
    model_a = export_model("model_a", 1);
    model_b = export_model("model_b", 2);
  }
  static std::string model_a, model_b;
};
std::string IndexCommands::model_a, IndexCommands::model_b;

}  // namespace

TEST_F(IndexCommands, BuildSearchEvalInfoOnEveryIndexType) {
  for (const std::string method : {"Flat", "HNSW32", "IVF"}) {
    SCOPED_TRACE(method);
    const auto cfg = index_config(model_a, method, method == "IVF" ? "  nlist: 2\n  nprobe: 2\n" : "");
    ASSERT_EQ(cmd_index_build({{cfg, {}}, "", {}, {}}), 0);
    const auto dir = kRoot / ("index_" + method);
    auto idx = GalleryIndex::open(dir.string(), false);
    EXPECT_EQ(idx->size(), 12);
    EXPECT_TRUE(idx->info().consistent);
    // Searching the gallery with its own images: each finds itself first with cosine ~1.
    IndexSearchArgs s;
    s.cfg = {cfg, {}};
    s.list = (kRoot / "gallery.txt").string();
    s.out = (kRoot / ("results_" + method + ".jsonl")).string();
    ASSERT_EQ(cmd_index_search(s), 0);
    const auto lines = read_json_lines(s.out);
    ASSERT_EQ(lines.size(), 12u);
    EXPECT_EQ(lines[0]["query"], "gallery/0_0.png");
    for (const auto& l : lines) {
      ASSERT_EQ(l["results"].size(), 3u);
      EXPECT_EQ(l["results"][0]["path"], l["query"]);
      EXPECT_NEAR(l["results"][0]["score"].get<double>(), 1.0, 1e-4);
      EXPECT_TRUE(l["results"][0].contains("id"));
      EXPECT_TRUE(l["results"][0].contains("label"));
    }
    // One image, top-k and threshold from the command line.
    s.list.clear();
    s.image = (kRoot / "gallery/2_1.png").string();
    s.top_k = 1;
    s.score_thres = 0.99f;
    ASSERT_EQ(cmd_index_search(s), 0);
    const auto one = read_json_lines(s.out);
    ASSERT_EQ(one.size(), 1u);
    ASSERT_EQ(one[0]["results"].size(), 1u);
    EXPECT_EQ(one[0]["results"][0]["label"], "class_2");
    // eval: recall@k against exact search, and label accuracy.
    IndexEvalArgs e;
    e.cfg = {cfg, {}};
    e.list = (kRoot / "gallery.txt").string();
    e.out = (kRoot / "eval.json").string();
    ASSERT_EQ(cmd_index_eval(e), 0);
    std::ifstream f(e.out);
    const auto rep = nlohmann::json::parse(f);
    EXPECT_GE(rep["recall_at_k"].get<double>(), method == "Flat" ? 1.0 : 0.9);
    EXPECT_DOUBLE_EQ(rep["top1_accuracy"].get<double>(), 1.0);
    EXPECT_EQ(cmd_index_info(dir.string()), 0);
  }
}

TEST_F(IndexCommands, AppendEmbedsOnlyNewLinesAndRemoveTakesLinesLabelsIds) {
  const auto cfg = index_config(model_a, "HNSW32");
  ASSERT_EQ(cmd_index_build({{cfg, {}}, "", {}, {}}), 0);
  const auto dir = (kRoot / "index_HNSW32").string();
  // The same list plus two new lines (one a new image of a new label): only those two are embedded.
  const auto more = kRoot / "more.txt";
  fs::copy_file(kRoot / "gallery/0_0.png", kRoot / "gallery/new.png", fs::copy_options::overwrite_existing);
  {
    std::ifstream in(kRoot / "gallery.txt");
    std::ofstream out(more);
    out << in.rdbuf() << "gallery/new.png\tclass_9\ngallery/1_1.png\tclass_8\n";
  }
  ASSERT_EQ(cmd_index_build({{cfg, {"IndexProcess.data_file=" + more.string()}}, "append", {}, {}}), 0);
  auto idx = GalleryIndex::open(dir, false);
  EXPECT_EQ(idx->size(), 14);
  EXPECT_EQ(idx->ids_with_label("class_9").size(), 1u);
  idx.reset();
  // Running append again adds nothing.
  ASSERT_EQ(cmd_index_build({{cfg, {"IndexProcess.data_file=" + more.string()}}, "append", {}, {}}), 0);
  EXPECT_EQ(GalleryIndex::open(dir, false)->size(), 14);
  // Remove by list lines (PaddleClas): every item with that path.
  const auto rm = kRoot / "rm.txt";
  std::ofstream(rm) << "gallery/1_1.png\tanything\n";
  ASSERT_EQ(cmd_index_build({{cfg, {"IndexProcess.data_file=" + rm.string()}}, "remove", {}, {}}), 0);
  EXPECT_EQ(GalleryIndex::open(dir, false)->size(), 12);
  // By label, and by id.
  ASSERT_EQ(cmd_index_build({{cfg, {}}, "remove", {}, {"class_3"}}), 0);
  EXPECT_EQ(GalleryIndex::open(dir, false)->size(), 9);
  ASSERT_EQ(cmd_index_build({{cfg, {}}, "remove", {1, 2}, {}}), 0);
  idx = GalleryIndex::open(dir, false);
  EXPECT_EQ(idx->size(), 7);
  EXPECT_FALSE(idx->get(1).has_value());
  EXPECT_TRUE(idx->info().consistent);
  // remove_by: id reads ids from data_file, and says which line is not one.
  std::ofstream(rm) << "3\nnot-an-id\n";
  const auto err = error_of([&] {
    cmd_index_build({{cfg, {"IndexProcess.data_file=" + rm.string(), "IndexProcess.remove_by=id"}}, "remove", {}, {}});
  });
  EXPECT_NE(err.find("rm.txt:2: 'not-an-id' is not an item id"), std::string::npos) << err;
}

TEST_F(IndexCommands, BadGalleryImagesAreNamedWithTheirLine) {
  const auto bad_list = kRoot / "bad.txt";
  std::ofstream(kRoot / "gallery/broken.png") << "not a png";
  {
    std::ofstream out(bad_list);
    out << "gallery/0_0.png\tclass_0\ngallery/broken.png\tclass_1\ngallery/2_0.png\tclass_2\n";
  }
  const auto cfg = index_config(model_a, "Flat");
  const auto dir = (kRoot / "index_Flat").string();
  ASSERT_EQ(cmd_index_build({{cfg, {}}, "", {}, {}}), 0);
  auto err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.data_file=" + bad_list.string()}}, "", {}, {}}); });
  EXPECT_NE(err.find("bad.txt:2"), std::string::npos) << err;
  EXPECT_NE(err.find("broken.png"), std::string::npos) << err;
  EXPECT_NE(err.find("on_bad_image: skip"), std::string::npos) << err;
  EXPECT_EQ(GalleryIndex::open(dir, false)->size(), 12);  // the failed rebuild changed nothing
  ASSERT_EQ(cmd_index_build({{cfg, {"IndexProcess.data_file=" + bad_list.string(), "IndexProcess.on_bad_image=skip"}},
                             "", {}, {}}),
            0);
  EXPECT_EQ(GalleryIndex::open(dir, false)->size(), 2);
  // A missing image and a malformed line.
  std::ofstream(bad_list) << "gallery/0_0.png\tclass_0\ngallery/missing.png\tclass_1\n";
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.data_file=" + bad_list.string()}}, "", {}, {}}); });
  EXPECT_NE(err.find("bad.txt:2"), std::string::npos) << err;
  EXPECT_NE(err.find("not found"), std::string::npos) << err;
  std::ofstream(bad_list) << "gallery/0_0.png class_0\n";
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.data_file=" + bad_list.string()}}, "", {}, {}}); });
  EXPECT_NE(err.find("bad.txt:1: expected `path<TAB>label`"), std::string::npos) << err;
}

TEST_F(IndexCommands, AnotherModelOrDimensionIsRefused) {
  const auto cfg = index_config(model_a, "Flat");
  ASSERT_EQ(cmd_index_build({{cfg, {}}, "", {}, {}}), 0);
  IndexSearchArgs s;
  s.cfg = {cfg, {"Global.rec_inference_model_dir=" + model_b}};
  s.image = (kRoot / "gallery/0_0.png").string();
  auto err = error_of([&] { cmd_index_search(s); });
  EXPECT_NE(err.find("the index was built with model"), std::string::npos) << err;
  EXPECT_NE(err.find("model_b"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"Global.rec_inference_model_dir=" + model_b}}, "append", {}, {}}); });
  EXPECT_NE(err.find("the index was built with model"), std::string::npos) << err;
  // The fingerprint is the model files' hash: the same model gives the same one.
  Embedder a1(model_a, ConfigNode()), a2(model_a, ConfigNode()), b(model_b, ConfigNode());
  EXPECT_EQ(a1.fingerprint(), a2.fingerprint());
  EXPECT_NE(a1.fingerprint(), b.fingerprint());
  EXPECT_EQ(a1.dim(), 16);
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.embedding_size=512"}}, "", {}, {}}); });
  EXPECT_NE(err.find("is 512 but the model"), std::string::npos) << err;
  // Preprocessing other than the index's is refused too.
  err = error_of([&] {
    cmd_index_search({{cfg, {"RecPreProcess={transform_ops: [{ResizeImage: {size: 32}}]}"}}, s.image, "", {}, {}, ""});
  });
  EXPECT_NE(err.find("other preprocessing"), std::string::npos) << err;
}

TEST_F(IndexCommands, ConfigErrorsNameTheKey) {
  const auto cfg = index_config(model_a, "Flat");
  auto err = error_of([&] { cmd_index_build({{cfg, {"Global.det_inference_model_dir=./det"}}, "", {}, {}}); });
  EXPECT_NE(err.find("Global.det_inference_model_dir"), std::string::npos) << err;
  EXPECT_NE(err.find("searches whole images"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.dist_typ=IP"}}, "", {}, {}}); });
  EXPECT_NE(err.find("did you mean dist_type"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.dist_type=cosine"}}, "", {}, {}}); });
  EXPECT_NE(err.find("use IP, L2 or hamming"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.index_operation=update"}}, "", {}, {}}); });
  EXPECT_NE(err.find("must be new, append or remove"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"IndexProcess.dist_type=hamming"}}, "", {}, {}}); });
  EXPECT_NE(err.find("hamming needs binary features"), std::string::npos) << err;
  err = error_of([&] { cmd_index_build({{cfg, {"RecPostProcess={name: Topk}"}}, "", {}, {}}); });
  EXPECT_NE(err.find("RecPostProcess"), std::string::npos) << err;
}

TEST_F(IndexCommands, BinaryFeaturesGoToAHammingIndex) {
  const auto model = export_model("model_bin", 3, "sign");
  const auto cfg = index_config(model, "Flat", "");
  ASSERT_EQ(cmd_index_build({{cfg, {"IndexProcess.dist_type=hamming", "IndexProcess.index_dir=" +
                                                                          (kRoot / "index_bin").string()}},
                             "", {}, {}}),
            0);
  auto idx = GalleryIndex::open((kRoot / "index_bin").string(), false);
  EXPECT_EQ(idx->spec().metric, IndexMetric::kHamming);
  EXPECT_EQ(idx->spec().feature_binarize, "sign");
  IndexSearchArgs s;
  s.cfg = {cfg, {"IndexProcess.dist_type=hamming", "IndexProcess.index_dir=" + (kRoot / "index_bin").string()}};
  s.image = (kRoot / "gallery/1_2.png").string();
  s.out = (kRoot / "bin.jsonl").string();
  ASSERT_EQ(cmd_index_search(s), 0);
  const auto r = read_json_lines(s.out);
  EXPECT_EQ(r[0]["results"][0]["score"].get<double>(), 0.0);  // itself: 0 differing bits
}
