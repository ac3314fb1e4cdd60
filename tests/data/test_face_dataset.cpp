// AdaFaceDataset and FiveValidationDataset (data/face_dataset.h) on files written by numpy
// (tests/fixtures/face_fixtures.py), and the loader's first_batch start.
#include <featlearn/data/face_dataset.h>
#include <featlearn/data/loader.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <functional>

#include "../fixture_path.h"
#include "../error_of.h"

using namespace featlearn;
namespace fs = std::filesystem;

using featlearn::test::error_of;

namespace {

fs::path temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("featlearn_face_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string five_yaml(const std::string& dir) {
  return "name: FiveValidationDataset\nval_data_path: " + dir + "\nconcat_mem_file_name: " + dir +
         "/concat_validation_memfile\n";
}

}  // namespace

// The fixture: set s has 10 + s pairs with issame[p] = (p + s) % 3 != 0; image k of the concatenation holds
// k / 100 + c in channel c.
TEST(FiveValidationDataset, ReadsNumpyMemmapsAsPaddleClas) {
  const auto dir = fs::path(fixture("face/val/concat_validation_memfile")).parent_path().string();
  auto cfg = Config::from_string(five_yaml(dir), "cfg.yaml");
  FiveValidationDataset ds(cfg.root());
  ASSERT_EQ(ds.size(), 120u);  // 2 * (10 + 11 + 12 + 13 + 14)
  size_t k = 0;
  for (int s = 0; s < 5; ++s)
    for (int p = 0; p < 10 + s; ++p)
      for (int j = 0; j < 2; ++j, ++k) {
        EXPECT_EQ(ds.set_of(k), s) << k;
        EXPECT_EQ(ds.label(k), (p + s) % 3 != 0 ? 1 : 0) << k;
        const auto m = ds.memory_image(k);
        ASSERT_TRUE(m);
        ASSERT_EQ(m->channels, 3);
        ASSERT_EQ(m->height, 4);
        ASSERT_EQ(m->width, 4);
        for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(m->data[c * 16 + 5], float(k) / 100.f + c) << k;
      }
  EXPECT_EQ(FiveValidationDataset::set_names()[2], "lfw");

  // Through the loader (shuffled BatchSampler): images arrive untouched and indices say which they are.
  auto lc = Config::from_string("dataset:\n  name: FiveValidationDataset\n  val_data_path: " + dir +
                                    "\n  concat_mem_file_name: " + dir +
                                    "/concat_validation_memfile\nsampler: {name: BatchSampler, batch_size: 32, "
                                    "drop_last: False, shuffle: True}\nloader: {num_workers: 2}\n",
                                "cfg.yaml");
  auto loader = DataLoader::create(lc.root(), LoaderContext{});
  loader->start_epoch(0);
  std::vector<int> seen(120, 0);
  while (auto b = loader->next()) {
    for (int64_t j = 0; j < b->indices.numel(); ++j) {
      const auto i = b->indices[j].item<int64_t>();
      ++seen[static_cast<size_t>(i)];
      EXPECT_FLOAT_EQ(b->images[j][1][2][3].item<float>(), float(i) / 100.f + 1);
      EXPECT_EQ(b->labels[j].item<int64_t>(), ds.label(static_cast<size_t>(i)));
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 120);
}

TEST(FiveValidationDataset, FileErrorsNameTheFile) {
  const auto src = fs::path(fixture("face/val/concat_validation_memfile")).parent_path();
  const auto dir = temp_dir("errors");
  fs::copy(src, dir, fs::copy_options::recursive);
  auto open = [&] {
    auto cfg = Config::from_string(five_yaml(dir.string()), "cfg.yaml");
    FiveValidationDataset ds(cfg.root());
  };
  // A memfile whose .conf promises more images than its .dat holds.
  const auto lfw_conf = dir / "lfw" / "memfile" / "mem_file.dat.conf";
  std::ofstream(lfw_conf) << R"({"shape": [30, 3, 4, 4], "dtype": "float32"})";
  auto msg = error_of(open);
  EXPECT_NE(msg.find("mem_file.dat' holds 4608 bytes but its shape [30,3,4,4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("val_data_path"), std::string::npos) << msg;
  // Pairs and images that do not match.
  std::ofstream(lfw_conf) << R"({"shape": [26, 3, 4, 4], "dtype": "float32"})";
  fs::resize_file(dir / "lfw" / "memfile" / "mem_file.dat", 26 * 48 * 4);
  msg = error_of(open);
  EXPECT_NE(msg.find("holds 26 images but"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lfw_list.npy' lists 12 pairs"), std::string::npos) << msg;
  // float64 images are refused; a missing list names itself.
  std::ofstream(lfw_conf) << R"({"shape": [24, 3, 4, 4], "dtype": "float64"})";
  msg = error_of(open);
  EXPECT_NE(msg.find("dtype 'float64' is not float32"), std::string::npos) << msg;
  std::ofstream(lfw_conf) << R"({"shape": [24, 3, 4, 4], "dtype": "float32"})";
  fs::resize_file(dir / "lfw" / "memfile" / "mem_file.dat", 24 * 48 * 4);
  EXPECT_EQ(error_of(open), "<no error>");
  fs::remove(dir / "cplfw_list.npy");
  msg = error_of(open);
  EXPECT_NE(msg.find("cplfw_list.npy' does not exist"), std::string::npos) << msg;
  // Unknown keys (PaddleClas's class takes no transform).
  auto cfg = Config::from_string(five_yaml(dir.string()) + "transform_ops: []\n", "cfg.yaml");
  msg = error_of([&] { FiveValidationDataset ds(cfg.root()); });
  EXPECT_NE(msg.find("transform_ops: unknown key"), std::string::npos) << msg;
  fs::remove_all(dir);
}

// AdaFaceDataset: `path label` under root_dir, transforms under `transform`; the loader's first_batch start
// gives the same batches as the whole epoch from that batch on.
TEST(AdaFaceDataset, ListTransformKeyAndLoaderStartsMidEpoch) {
  const auto dir = temp_dir("adaface");
  std::string list;
  for (int i = 0; i < 6; ++i) {
    cv::Mat m(6, 6, CV_8UC3, cv::Scalar::all(10 * i));
    cv::imwrite((dir / ("f" + std::to_string(i) + ".png")).string(), m);
    list += "f" + std::to_string(i) + ".png  " + std::to_string(i / 2) + "\n";
  }
  std::ofstream(dir / "train.txt") << list;
  const std::string yaml = "dataset:\n  name: AdaFaceDataset\n  root_dir: " + dir.string() + "\n  label_path: " +
                           dir.string() +
                           "/train.txt\n  transform:\n    - ToTensor:\n    - Normalize: {mean: [0.5, 0.5, 0.5], "
                           "std: [0.5, 0.5, 0.5]}\nsampler: {name: DistributedBatchSampler, batch_size: 2, "
                           "shuffle: True, drop_last: False}\n";
  auto cfg = Config::from_string(yaml, "cfg.yaml");
  auto loader = DataLoader::create(cfg.root(), LoaderContext{5, 0, 1});
  ASSERT_EQ(loader->dataset().size(), 6u);
  EXPECT_EQ(loader->dataset().label(5), 2);
  EXPECT_EQ(loader->dataset().source(3), (dir / "train.txt").string() + ":4");
  std::vector<Batch> all;
  loader->start_epoch(1);
  while (auto b = loader->next()) all.push_back(*b);
  ASSERT_EQ(all.size(), 3u);
  // Pixel value 10 i -> (10 i / 255 - 0.5) / 0.5 (ToTensor + Normalize).
  const auto i0 = all[0].indices[0].item<int64_t>();
  EXPECT_NEAR(all[0].images[0][0][0][0].item<float>(), (10.0 * i0 / 255 - 0.5) / 0.5, 1e-6);
  loader->start_epoch(1, 1);
  for (size_t k = 1; k < 3; ++k) {
    auto b = loader->next();
    ASSERT_TRUE(b);
    EXPECT_TRUE(torch::equal(b->indices, all[k].indices));
    EXPECT_TRUE(torch::equal(b->images, all[k].images));
  }
  EXPECT_FALSE(loader->next());
  // transform_ops is not AdaFaceDataset's key.
  auto bad = Config::from_string("name: AdaFaceDataset\nroot_dir: " + dir.string() + "\nlabel_path: " +
                                     dir.string() + "/train.txt\ntransform_ops: []\n",
                                 "cfg.yaml");
  const auto msg = error_of([&] { create_dataset(bad.root()); });
  EXPECT_NE(msg.find("transform_ops: unknown key"), std::string::npos) << msg;
  fs::remove_all(dir);
}
