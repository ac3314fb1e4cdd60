// Datasets (list parsing, errors), samplers (invariants) and the loader (determinism, errors, shutdown).
#include <featlearn/data/loader.h>
#include <featlearn/data/sampler.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

using namespace featlearn;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

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

// In-memory dataset of `ids` identities with counts[i] images each.
ListDataset synthetic(const std::vector<int>& counts) {
  std::vector<ListDataset::Item> items;
  for (size_t id = 0; id < counts.size(); ++id)
    for (int k = 0; k < counts[id]; ++k) {
      ListDataset::Item it;
      it.path = "img" + std::to_string(items.size());
      it.label = static_cast<int64_t>(id);
      items.push_back(it);
    }
  return ListDataset(std::move(items), false);
}

std::unique_ptr<BatchSampler> sampler(const std::string& yaml, const Dataset& ds, int rank = 0, int world = 1) {
  return create_sampler(config(yaml).root(), ds, ShardInfo{rank, world});
}

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

// ---------------------------------------------------------------------------------------------------------------
// Samplers

TEST(Samplers, PKSamplerStructure) {
  auto ds = synthetic({5, 1, 3, 8, 2, 2, 4, 6});  // 31 images, 8 ids; id 1 has one image
  auto s = sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\n", ds);
  EXPECT_EQ(s->batches_per_epoch(), 31 / 8);
  const auto batches = s->epoch_batches(0, 0);
  ASSERT_EQ(static_cast<int64_t>(batches.size()), s->batches_per_epoch());
  std::map<int64_t, int> id_draws;
  for (int e = 0; e < 30; ++e)
    for (const auto& b : s->epoch_batches(1, e)) {
      ASSERT_EQ(b.size(), 8u);
      std::set<int64_t> ids;
      for (size_t j = 0; j < b.size(); j += 2) {
        const auto l = ds.label(static_cast<size_t>(b[j]));
        EXPECT_EQ(ds.label(static_cast<size_t>(b[j + 1])), l) << "consecutive pairs share the id";
        if (l != 1) EXPECT_NE(b[j], b[j + 1]) << "no image repeated unless the id is up-sampled";
        EXPECT_TRUE(ids.insert(l).second) << "id repeated within a batch";
        ++id_draws[l];
      }
    }
  // sample_avg_prob: the 8-image id is drawn more often than the 1-image id.
  EXPECT_GT(id_draws[3], id_draws[1]);
  EXPECT_EQ(s->epoch_batches(5, 2), s->epoch_batches(5, 2));
  EXPECT_NE(s->epoch_batches(5, 2), s->epoch_batches(5, 3));
  auto msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 9\nsample_per_id: 2\n", ds); });
  EXPECT_NE(msg.find("must divide batch_size"), std::string::npos) << msg;
  msg = error_of([&] { sampler("name: PKSampler\nbatch_size: 8\nsample_per_id: 2\nsample_method: foo\n", ds); });
  EXPECT_NE(msg.find("id_avg_prob"), std::string::npos) << msg;
}

TEST(Samplers, IdentitySamplerCoversEveryIdAndChecksSizes) {
  auto ds = synthetic({5, 1, 3, 8, 2, 2, 4, 6, 3, 1});
  auto s = sampler("name: DistributedRandomIdentitySampler\nbatch_size: 8\nnum_instances: 2\ndrop_last: False\n", ds);
  // length = 4 + 2 + 2 + 8 + 2 + 2 + 4 + 6 + 2 + 2 = 34 -> ceil(34 / 8) = 5 batches
  EXPECT_EQ(s->batches_per_epoch(), 5);
  for (int e = 0; e < 5; ++e) {
    const auto batches = s->epoch_batches(3, e);
    ASSERT_EQ(batches.size(), 5u);
    std::set<int64_t> seen;
    for (const auto& b : batches) {
      ASSERT_EQ(b.size(), 8u);
      std::set<int64_t> ids;
      for (size_t j = 0; j < b.size(); j += 2) {
        const auto l = ds.label(static_cast<size_t>(b[j]));
        EXPECT_EQ(ds.label(static_cast<size_t>(b[j + 1])), l);
        EXPECT_TRUE(ids.insert(l).second) << "id repeated within a batch";
        seen.insert(l);
      }
    }
    EXPECT_EQ(seen.size(), 10u) << "every id appears in epoch " << e;
  }
  auto msg = error_of([&] {
    sampler("name: DistributedRandomIdentitySampler\nbatch_size: 7\nnum_instances: 2\ndrop_last: False\n", ds);
  });
  EXPECT_NE(msg.find("must be divisible by num_instances"), std::string::npos) << msg;
}

TEST(Samplers, ShardsAreDisjointAndCover) {
  auto ds = synthetic(std::vector<int>(12, 2));  // 24 images
  std::multiset<int64_t> all;
  size_t per_rank = 0;
  for (int r = 0; r < 3; ++r) {
    auto s = sampler("name: DistributedBatchSampler\nbatch_size: 4\nshuffle: True\n", ds, r, 3);
    const auto bs = s->epoch_batches(9, 1);
    EXPECT_EQ(static_cast<int64_t>(bs.size()), s->batches_per_epoch());
    if (r == 0) per_rank = bs.size();
    EXPECT_EQ(bs.size(), per_rank);
    for (const auto& b : bs) all.insert(b.begin(), b.end());
  }
  EXPECT_EQ(all.size(), 24u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 24u) << "shards overlap";
  // Identity sampler: the ranks' batches are disjoint parts of one global epoch.
  auto one = sampler("name: DistributedRandomIdentitySampler\nbatch_size: 4\nnum_instances: 2\ndrop_last: True\n", ds);
  const auto global = one->epoch_batches(4, 0);
  std::vector<BatchIndices> merged;
  for (int r = 0; r < 2; ++r) {
    auto s = sampler("name: DistributedRandomIdentitySampler\nbatch_size: 4\nnum_instances: 2\ndrop_last: True\n", ds,
                     r, 2);
    const auto bs = s->epoch_batches(4, 0);
    EXPECT_EQ(bs.size(), global.size() / 2);
    for (size_t i = 0; i < bs.size(); ++i) EXPECT_EQ(bs[i], global[i * 2 + static_cast<size_t>(r)]);
  }
  // PK: same split of one global sequence.
  auto pk1 = sampler("name: PKSampler\nbatch_size: 4\nsample_per_id: 2\n", ds, 1, 2);
  auto pk0 = sampler("name: PKSampler\nbatch_size: 4\nsample_per_id: 2\n", ds, 0, 2);
  EXPECT_NE(pk0->epoch_batches(2, 0), pk1->epoch_batches(2, 0));
  EXPECT_EQ(pk0->batches_per_epoch(), 3);  // ceil(24 / 2) // 4
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
  auto c = config(loader_yaml(d, 3, "", block));
  {
    auto l = DataLoader::create(c.root(), LoaderContext{});
    l->start_epoch(0);
    ASSERT_TRUE(l->next().has_value());
    l->start_epoch(1);  // abandon epoch 0 mid-way
    int n = 0;
    while (l->next()) ++n;
    EXPECT_EQ(n, 20);
    l->start_epoch(2);
    ASSERT_TRUE(l->next().has_value());
  }  // destroyed mid-epoch: must not hang
  {
    auto l = DataLoader::create(c.root(), LoaderContext{});  // never started
    EXPECT_FALSE(l->next().has_value());
  }
  SUCCEED();
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
