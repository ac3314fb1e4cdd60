// Datasets (list parsing, errors) and the loader (determinism, errors, shutdown); samplers: test_sampler.cpp.
#include <featlearn/data/loader.h>
#include <featlearn/data/sampler.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include "../error_of.h"

using namespace featlearn;
namespace fs = std::filesystem;

using featlearn::test::error_of;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("featlearn_data_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
  void write(const std::string& rel, const std::string& text) const {
    fs::create_directories((path / rel).parent_path());
    std::ofstream(path / rel) << text;
  }
  void image(const std::string& rel, int seed, int size = 8) const {
    fs::create_directories((path / rel).parent_path());
    cv::Mat m(size, size + 2, CV_8UC3);
    cv::randu(m, cv::Scalar::all(seed % 50), cv::Scalar::all(200 + seed % 50));
    cv::imwrite((path / rel).string(), m);
  }
};

Config config(const std::string& yaml) { return Config::from_string(yaml, "cfg.yaml"); }

std::unique_ptr<Dataset> dataset(const std::string& yaml) { return create_dataset(config(yaml).root()); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Datasets

TEST(Datasets, VeriWildParsesAndRelabels) {
  TempDir d("veriwild");
  d.image("img/a.png", 1);
  d.image("img/b.png", 2);
  d.image("img/c.png", 3);
  d.write("list.txt", "img/a.png 7 2\n\nimg/b.png   3 1\nimg/c.png 7 0\n");
  auto cfg = "name: VeriWild\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() + "/list.txt\n";
  auto ds = dataset(cfg);
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->path(1), d.str() + "/img/b.png");
  EXPECT_EQ(ds->label(0), 7);
  EXPECT_EQ(ds->camid(2), 0);
  EXPECT_TRUE(ds->has_camids());
  EXPECT_EQ(ds->num_classes(), 8);
  EXPECT_NE(ds->source(1).find("list.txt:3"), std::string::npos);
  auto rel = dataset(cfg + "relabel: True\n");
  EXPECT_EQ(rel->label(0), 1);
  EXPECT_EQ(rel->label(1), 0);
  EXPECT_EQ(rel->num_classes(), 2);
}

TEST(Datasets, ListErrorsNameFileAndLine) {
  TempDir d("listerr");
  d.image("a.png", 1);
  const auto base = "name: VeriWild\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() + "/list.txt\n";
  d.write("list.txt", "a.png 1\na.png\n");
  auto msg = error_of([&] { dataset(base); });
  EXPECT_NE(msg.find("list.txt:2: missing column 2 (label)"), std::string::npos) << msg;
  d.write("list.txt", "a.png 1\na.png x1\n");
  msg = error_of([&] { dataset(base); });
  EXPECT_NE(msg.find("list.txt:2: label 'x1' is not an integer"), std::string::npos) << msg;
  d.write("list.txt", "a.png 1\nmissing1.png 2\nmissing2.png 3\n");
  msg = error_of([&] { dataset(base); });
  EXPECT_NE(msg.find("2 of 3 images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing1.png (" + d.str() + "/list.txt:2)"), std::string::npos) << msg;
  msg = error_of([&] { dataset(base + "relabl: True\n"); });
  EXPECT_NE(msg.find("relabl"), std::string::npos) << msg;
  msg = error_of([&] { dataset("name: VeriWld\nimage_root: x\ncls_label_path: y\n"); });
  EXPECT_NE(msg.find("unknown dataset 'VeriWld'"), std::string::npos) << msg;
}

TEST(Datasets, LogoICartoonImageNetCompCars) {
  TempDir d("formats");
  d.image("x/a.png", 1, 12);
  d.image("x/b.png", 2, 12);
  d.write("logo.txt", "image_id\tlabel\tname\tpath\n1\t3\tfoo\tx/a.png\n2\t1\tbar\tx/b.png\n");
  auto logo = dataset("name: LogoDataset\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() + "/logo.txt\n");
  ASSERT_EQ(logo->size(), 2u);
  EXPECT_EQ(logo->label(0), 2);
  EXPECT_EQ(logo->label(1), 0);
  d.write("cartoon.txt", "x/a.png\t5\nx/b.png\t6\n");
  auto car = dataset("name: ICartoonDataset\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() + "/cartoon.txt\n");
  EXPECT_EQ(car->label(1), 6);
  d.write("in.txt", "x/a.png,10\nx/b.png,30\n");
  auto in = dataset("name: ImageNetDataset\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() +
                    "/in.txt\ndelimiter: ','\nrelabel: True\n");
  EXPECT_EQ(in->label(0), 0);
  EXPECT_EQ(in->label(1), 1);
  EXPECT_FALSE(in->has_camids());
  EXPECT_EQ(in->camid(0), -1);
  d.write("labels/x/a.txt", "1\n4\n2 3 9 11\n");
  d.write("labels/x/b.txt", "0 0 5 5\n");
  d.write("cc.txt", "x/a.png 1\nx/b.png 2\n");
  auto cc = dataset("name: CompCars\nimage_root: " + d.str() + "\ncls_label_path: " + d.str() +
                    "/cc.txt\nlabel_root: " + d.str() + "/labels\nbbox_crop: True\n");
  ASSERT_TRUE(cc->crop_box(0).has_value());
  EXPECT_EQ(cc->crop_box(0)->x1, 2);
  EXPECT_EQ(cc->crop_box(0)->y2, 11);
}

TEST(Datasets, Market1501FolderParsing) {
  TempDir d("market");
  const std::string sub = "market1501/Market-1501-v15.09.15/bounding_box_train";
  d.image(sub + "/0002_c1s1_000451_03.jpg", 1);
  d.image(sub + "/0002_c3s1_000551_01.jpg", 2);
  d.image(sub + "/0007_c2s1_000001_01.jpg", 3);
  d.image(sub + "/-1_c1s1_000001_01.jpg", 4);
  auto ds = dataset("name: Market1501\nimage_root: " + d.str() + "\ncls_label_path: bounding_box_train\n");
  ASSERT_EQ(ds->size(), 3u);  // pid -1 skipped
  std::map<std::string, std::pair<int64_t, int64_t>> got;
  for (size_t i = 0; i < ds->size(); ++i)
    got[fs::path(ds->path(i)).filename().string()] = {ds->label(i), ds->camid(i)};
  EXPECT_EQ(got["0002_c1s1_000451_03.jpg"], std::make_pair(int64_t{0}, int64_t{0}));  // relabelled (train)
  EXPECT_EQ(got["0002_c3s1_000551_01.jpg"], std::make_pair(int64_t{0}, int64_t{2}));
  EXPECT_EQ(got["0007_c2s1_000001_01.jpg"], std::make_pair(int64_t{1}, int64_t{1}));
  fs::rename(d.path / sub, d.path / "market1501/Market-1501-v15.09.15/query");
  auto q = dataset("name: Market1501\nimage_root: " + d.str() + "\ncls_label_path: query\n");
  std::set<int64_t> pids;
  for (size_t i = 0; i < q->size(); ++i) pids.insert(q->label(i));
  EXPECT_EQ(pids, (std::set<int64_t>{2, 7}));  // no relabel outside train
}

TEST(Datasets, Market1501BadNumbersInFileNamesNameTheFile) {
  const std::string sub = "market1501/Market-1501-v15.09.15/query";
  auto error_for = [&](const std::string& bad) {
    TempDir d("market_bad");
    d.image(sub + "/0002_c1s1_000451_03.jpg", 1);
    d.image(sub + "/" + bad, 2);
    const auto msg = error_of([&] { dataset("name: Market1501\nimage_root: " + d.str() + "\ncls_label_path: query\n"); });
    EXPECT_NE(msg.find(d.str() + "/" + sub + "/" + bad + ": "), std::string::npos) << msg;
    return msg;
  };
  auto msg = error_for("99999999999999999999_c1s1_000451_03.jpg");
  EXPECT_NE(msg.find("person id '99999999999999999999' is out of range"), std::string::npos) << msg;
  msg = error_for("0002_c99999999999999999999s1_000451_03.jpg");
  EXPECT_NE(msg.find("camera id '99999999999999999999' is out of range"), std::string::npos) << msg;
  msg = error_for("1-2_c1s1_000001_01.jpg");  // PaddleClas's int('1-2') fails too
  EXPECT_NE(msg.find("person id '1-2' is not an integer"), std::string::npos) << msg;
  msg = error_for("0003_c9s1_000001_01.jpg");
  EXPECT_NE(msg.find("camera 9 outside 1..6"), std::string::npos) << msg;
}

TEST(Datasets, ListIntegersOutOfRangeNameFileAndLine) {
  TempDir d("intrange");
  d.image("a.png", 1, 12);
  const std::string big = "99999999999999999999";  // > 2^63
  auto expect_error = [&](const std::string& yaml, const std::string& want) {
    const auto msg = error_of([&] { dataset(yaml); });
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
  };
  const auto common = "image_root: " + d.str() + "\ncls_label_path: " + d.str() + "/list.txt\n";
  d.write("list.txt", "a.png 1\na.png " + big + "\n");
  expect_error("name: VeriWild\n" + common, "list.txt:2: label '" + big + "' is out of range");
  d.write("list.txt", "a.png 1 " + big + "\n");
  expect_error("name: VeriWild\n" + common, "list.txt:1: camera id '" + big + "' is out of range");
  d.write("list.txt", "a.png,-" + big + "\n");
  expect_error("name: ImageNetDataset\ndelimiter: ','\n" + common, "list.txt:1: label '-" + big + "' is out of range");
  d.write("list.txt", "a.png\t" + big + "\n");
  expect_error("name: ICartoonDataset\n" + common, "list.txt:1: label '" + big + "' is out of range");
  d.write("list.txt", "image_id\tlabel\tname\tpath\n1\t-9223372036854775808\tx\ta.png\n");  // label - 1 overflows
  expect_error("name: LogoDataset\n" + common, "list.txt:2: label '-9223372036854775808' is out of range");
  d.write("list.txt", "a.png " + big + "\n");
  expect_error("name: CompCars\n" + common, "list.txt:1: label '" + big + "' is out of range");
  // Bounding boxes are pixel coordinates: 32-bit.
  d.write("list.txt", "a.png 1\n");
  d.write("labels/a.txt", "1\n0 0 4294967301 5\n");  // 2^32 + 5
  const auto compcars = "name: CompCars\n" + common + "label_root: " + d.str() + "/labels\nbbox_crop: True\n";
  expect_error(compcars, "labels/a.txt:2: x2 '4294967301' is out of range");
  d.write("labels/a.txt", "-2147483649 0 4 5\n");
  expect_error(compcars, "labels/a.txt:1: x1 '-2147483649' is out of range");
  d.write("labels/a.txt", "0 0 4 y\n");
  expect_error(compcars, "labels/a.txt:1: y2 'y' is not an integer");
  // -1 is an ordinary label (PaddleClas keeps it); LogoDataset's 0 becomes -1.
  d.write("list.txt", "a.png -1 -1\n");
  EXPECT_EQ(dataset("name: VeriWild\n" + common)->label(0), -1);
  EXPECT_EQ(dataset("name: VeriWild\n" + common)->camid(0), -1);
  d.write("list.txt", "image_id\tlabel\tname\tpath\n1\t0\tx\ta.png\n");
  EXPECT_EQ(dataset("name: LogoDataset\n" + common)->label(0), -1);
}

// ---------------------------------------------------------------------------------------------------------------
// Loader

namespace {

std::string loader_yaml(const TempDir& d, int workers, const std::string& extra_loader = "",
                        const std::string& sampler_block = "") {
  return "dataset:\n  name: VeriWild\n  image_root: " + d.str() + "\n  cls_label_path: " + d.str() +
         "/list.txt\n  transform_ops:\n    - ResizeImage: {size: 6}\n    - RandFlipImage: {flip_code: 1}\n"
         "    - NormalizeImage: {order: ''}\n    - RandomErasing: {EPSILON: 0.5}\n" +
         (sampler_block.empty() ? "sampler:\n  name: PKSampler\n  batch_size: 4\n  sample_per_id: 2\n" : sampler_block) +
         "loader:\n  num_workers: " + std::to_string(workers) + "\n  use_shared_memory: False\n" + extra_loader;
}

void make_images(const TempDir& d, int n, int ids) {
  std::string list;
  for (int i = 0; i < n; ++i) {
    d.image("im/" + std::to_string(i) + ".png", i);
    list += "im/" + std::to_string(i) + ".png " + std::to_string(i % ids) + " " + std::to_string(i % 3) + "\n";
  }
  d.write("list.txt", list);
}

std::vector<Batch> run_epoch(DataLoader& l, int64_t epoch) {
  std::vector<Batch> out;
  l.start_epoch(epoch);
  while (auto b = l.next()) out.push_back(*b);
  return out;
}

}  // namespace

TEST(Loader, SameBatchesForAnyWorkerCount) {
  TempDir d("determinism");
  make_images(d, 18, 5);
  auto c0 = config(loader_yaml(d, 0));
  auto c3 = config(loader_yaml(d, 3, "  prefetch_batches: 2\n"));
  auto l0 = DataLoader::create(c0.root(), LoaderContext{11, 0, 1});
  auto l3 = DataLoader::create(c3.root(), LoaderContext{11, 0, 1});
  EXPECT_EQ(l0->batches_per_epoch(), 18 / 4);
  for (int64_t e = 0; e < 2; ++e) {
    const auto a = run_epoch(*l0, e), b = run_epoch(*l3, e);
    ASSERT_EQ(static_cast<int64_t>(a.size()), l0->batches_per_epoch());
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].images.sizes(), (std::vector<int64_t>{4, 3, 6, 6}));
      EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "epoch " << e << " batch " << i;
      EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels));
      EXPECT_TRUE(torch::equal(a[i].indices, b[i].indices));
      for (int64_t j = 0; j < 4; ++j) {
        const auto idx = static_cast<size_t>(a[i].indices[j].item<int64_t>());
        EXPECT_EQ(a[i].labels[j].item<int64_t>(), l0->dataset().label(idx));
        EXPECT_EQ(a[i].camids[j].item<int64_t>(), l0->dataset().camid(idx));
      }
    }
  }
  // A different epoch gives different augmentations/order.
  const auto e0 = run_epoch(*l0, 0), e1 = run_epoch(*l0, 1);
  EXPECT_FALSE(torch::equal(e0[0].images, e1[0].images));
}

TEST(Loader, CorruptImageReportedWithPathOrSkipped) {
  TempDir d("corrupt");
  make_images(d, 8, 4);
  d.write("im/3.png", "garbage bytes, not a png");
  const auto block = "sampler:\n  name: DistributedBatchSampler\n  batch_size: 4\n  shuffle: False\n";
  for (int workers : {0, 2}) {
    auto c = config(loader_yaml(d, workers, "", block));
    auto l = DataLoader::create(c.root(), LoaderContext{});
    l->start_epoch(0);
    const auto msg = error_of([&] {
      while (l->next()) {
      }
    });
    EXPECT_NE(msg.find(d.str() + "/im/3.png"), std::string::npos) << msg;
    EXPECT_NE(msg.find("list.txt:4"), std::string::npos) << msg;
  }
  auto c = config(loader_yaml(d, 2, "  on_bad_image: skip\n", block));
  auto l = DataLoader::create(c.root(), LoaderContext{});
  const auto batches = run_epoch(*l, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(l->bad_images(), 1);
  EXPECT_EQ(batches[0].images.size(0), 4);
  for (int64_t j = 0; j < 4; ++j) EXPECT_NE(batches[0].indices[j].item<int64_t>(), 3);
  auto bad = config(loader_yaml(d, 2, "  on_bad_image: ignore\n", block));
  EXPECT_NE(error_of([&] { DataLoader::create(bad.root(), LoaderContext{}); }).find("error or skip"), std::string::npos);
}

TEST(Loader, ShutdownMidEpochAndRestart) {
  TempDir d("shutdown");
  make_images(d, 40, 10);
  const auto block = "sampler:\n  name: DistributedBatchSampler\n  batch_size: 2\n  shuffle: True\n";
  const std::string yaml = loader_yaml(d, 3, "", block);
  struct Outcome {
    std::vector<Batch> epoch1_after_abandon, epoch1_fresh;
    std::optional<Batch> epoch2_first, epoch2_first_fresh, never_started;
  };
  // Runs in its own thread so that a hang (in start_epoch, next or the destructor) fails the test after the
  // deadline instead of stalling the suite. The thread owns everything it touches: on a timeout it is left
  // running, detached.
  auto task = std::make_shared<std::packaged_task<Outcome()>>([yaml] {
    Outcome o;
    auto c = config(yaml);
    {
      auto l = DataLoader::create(c.root(), LoaderContext{});
      l->start_epoch(0);
      if (!l->next()) throw std::runtime_error("epoch 0 gave no batch");
      o.epoch1_after_abandon = run_epoch(*l, 1);  // abandons epoch 0 mid-way
      l->start_epoch(2);
      o.epoch2_first = l->next();
    }  // destroyed mid-epoch, workers busy
    {
      auto l = DataLoader::create(c.root(), LoaderContext{});
      o.epoch1_fresh = run_epoch(*l, 1);
      l->start_epoch(2);
      o.epoch2_first_fresh = l->next();
    }
    {
      auto l = DataLoader::create(c.root(), LoaderContext{});  // never started
      o.never_started = l->next();
    }
    return o;
  });
  auto done = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(60)), std::future_status::ready)
      << "the loader did not finish within 60 s (hang on shutdown or restart)";
  const Outcome o = done.get();
  ASSERT_EQ(o.epoch1_after_abandon.size(), 20u);  // 40 images / batch_size 2
  ASSERT_EQ(o.epoch1_fresh.size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_TRUE(torch::equal(o.epoch1_after_abandon[i].indices, o.epoch1_fresh[i].indices)) << "batch " << i;
    EXPECT_TRUE(torch::equal(o.epoch1_after_abandon[i].images, o.epoch1_fresh[i].images)) << "batch " << i;
  }
  ASSERT_TRUE(o.epoch2_first.has_value());
  ASSERT_TRUE(o.epoch2_first_fresh.has_value());
  EXPECT_TRUE(torch::equal(o.epoch2_first->images, o.epoch2_first_fresh->images));
  EXPECT_FALSE(o.never_started.has_value());
}

TEST(Loader, IdentitySamplerEpochHasLenBatches) {
  // 7 + 4 images, P = K = 2: a pass has 2 batches, len() = ceil(10 / 4) = 3: the loader hands out 3 batches
  // per epoch (the third from the next pass), as many as batches_per_epoch() (the trainer's iterations per epoch).
  TempDir d("identity");
  std::string list;
  for (int i = 0; i < 11; ++i) {
    d.image("im/" + std::to_string(i) + ".png", i);
    list += "im/" + std::to_string(i) + ".png " + std::to_string(i < 7 ? 0 : 1) + "\n";
  }
  d.write("list.txt", list);
  auto c = config(loader_yaml(d, 2, "",
                              "sampler:\n  name: DistributedRandomIdentitySampler\n  batch_size: 4\n"
                              "  num_instances: 2\n  drop_last: False\n"));
  auto l = DataLoader::create(c.root(), LoaderContext{3, 0, 1});
  EXPECT_EQ(l->batches_per_epoch(), 3);
  for (int64_t e = 0; e < 2; ++e) {
    const auto batches = run_epoch(*l, e);
    ASSERT_EQ(batches.size(), 3u);
    for (const auto& b : batches) EXPECT_EQ(b.images.size(0), 4);
  }
}

TEST(Loader, SizeMismatchInBatchIsAnError) {
  TempDir d("sizes");
  d.image("a.png", 1, 8);
  d.image("b.png", 2, 12);
  d.write("list.txt", "a.png 0\nb.png 1\n");
  auto c = config("dataset:\n  name: VeriWild\n  image_root: " + d.str() + "\n  cls_label_path: " + d.str() +
                  "/list.txt\nsampler:\n  batch_size: 2\n  shuffle: False\n  drop_last: False\n");
  auto l = DataLoader::create(c.root(), LoaderContext{});
  l->start_epoch(0);
  const auto msg = error_of([&] { l->next(); });
  EXPECT_NE(msg.find("differ in size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ResizeImage"), std::string::npos) << msg;
}
