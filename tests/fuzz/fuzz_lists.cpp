// Target `lists`: the list-file formats of the datasets (include/featlearn/data/dataset.h), read by
// create_dataset() as a DataLoader does, then used as the loader uses them (labels, cameras, samplers).
//
// Input: one selector byte, then the list file. The selector picks the dataset class:
//   0 VeriWild, 1 ImageNetDataset (delimiter " "), 2 ImageNetDataset (delimiter ","), 3 ImageNetDataset
//   (delimiter "\t"), 4 LogoDataset, 5 ICartoonDataset, 6 CompCars with bbox_crop (the list, a line `#--box--`,
//   then the text of every bounding-box file the list names), 7 Market1501 (each line is a file name in the
//   image folder), 8 MSMT17, 9 DukeMTMC; larger values wrap around.
#include "fuzz_common.h"

#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>
#include <featlearn/data/sampler.h>

#include <filesystem>

namespace fs = std::filesystem;

namespace featlearn::fuzz {
namespace lists_target {

constexpr size_t kMaxFiles = 16;

// A relative path safe to create under the scratch directory (no "..", no absolute paths, no NUL).
bool safe_relative(const std::string& p) {
  if (p.empty() || p.size() > 200 || p[0] == '/' || p.find('\0') != std::string::npos) return false;
  for (const auto& part : fs::path(p))
    if (part == ".." || part == ".") return false;
  return true;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string yaml_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void use(const Dataset& ds) {
  int64_t sum = 0;
  for (size_t i = 0; i < ds.size(); ++i) {
    sum += ds.camid(i);
    (void)ds.path(i);
    (void)ds.source(i);
    (void)ds.crop_box(i);
  }
  (void)sum;
  expect_user_errors("num_classes", [&] { (void)ds.num_classes(); });
  if (ds.size() == 0) return;
  for (const char* sampler : {"{name: PKSampler, batch_size: 4, sample_per_id: 2}",
                              "{name: DistributedRandomIdentitySampler, batch_size: 4, num_instances: 2}",
                              "{name: DistributedBatchSampler, batch_size: 3, shuffle: true}"}) {
    const Config sc = Config::from_string(sampler, "sampler.yaml");
    expect_user_errors("sampler over the list", [&] {
      const auto s = create_sampler(sc.root(), ds, ShardInfo{0, 1});
      if (s->batches_per_epoch() <= 4096)
        for (const auto& b : s->epoch_batches(0, 0))
          for (const auto i : b)
            if (i < 0 || i >= static_cast<int64_t>(ds.size()))
              finding("sampler over the list", "an out-of-range index", std::to_string(i));
    });
  }
}

}  // namespace lists_target

void lists_init() {}

void lists_run(const uint8_t* data, size_t size) {
  using namespace lists_target;
  if (size == 0) return;
  const int kind = data[0] % 10;
  std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  reset_scratch();
  const std::string root = scratch_dir() + "/images";
  fs::create_directories(root);
  const std::string list = scratch_dir() + "/list.txt";
  std::string yaml;
  switch (kind) {
    case 0: yaml = "name: VeriWild\nrelabel: true\n"; break;
    case 1: yaml = "name: ImageNetDataset\n"; break;
    case 2: yaml = "name: ImageNetDataset\ndelimiter: \",\"\nrelabel: true\n"; break;
    case 3: yaml = "name: ImageNetDataset\ndelimiter: \"\\t\"\n"; break;
    case 4: yaml = "name: LogoDataset\n"; break;
    case 5: yaml = "name: ICartoonDataset\n"; break;
    case 6: {
      yaml = "name: CompCars\nbbox_crop: true\nlabel_root: " + yaml_quote(scratch_dir() + "/boxes") + "\n";
      fs::create_directories(scratch_dir() + "/boxes");
      const auto parts = split_sections(reinterpret_cast<const uint8_t*>(body.data()), body.size(), "\n#--box--\n", 2);
      body = parts[0];
      const std::string box = parts.size() > 1 ? parts[1] : std::string("1 2 30 40\n");
      size_t files = 0;
      for (const auto& l : lines_of(body)) {
        const std::string rel = l.substr(0, l.find_first_of(" \t\r\n\v\f"));
        const std::string stem = rel.substr(0, rel.find('.'));
        if (files < kMaxFiles && safe_relative(stem + ".txt")) {
          if (try_write_file(scratch_dir() + "/boxes/" + stem + ".txt", box)) ++files;
        }
      }
      break;
    }
    default: {
      static const char* kNames[] = {"Market1501", "MSMT17", "DukeMTMC"};
      static const char* kDirs[] = {"market1501/Market-1501-v15.09.15", "msmt17/MSMT17_V1", "dukemtmc/DukeMTMC-reID"};
      const int p = kind - 7;
      const std::string dir = root + "/" + kDirs[p] + "/bounding_box_train";
      fs::create_directories(dir);
      size_t files = 0;
      for (const auto& l : lines_of(body)) {
        if (files >= kMaxFiles) break;
        if (l.empty() || l.find('/') != std::string::npos || !safe_relative(l)) continue;
        if (try_write_file(dir + "/" + l + ".jpg", "")) ++files;
      }
      yaml = std::string("name: ") + kNames[p] + "\ncls_label_path: bounding_box_train\n";
      break;
    }
  }
  if (kind < 7) {
    write_file(list, body);
    yaml += "cls_label_path: " + yaml_quote(list) + "\n";
  }
  yaml += "image_root: " + yaml_quote(root) + "\n";
  const Config cfg = Config::from_string(yaml, "dataset.yaml");
  std::unique_ptr<Dataset> ds;
  expect_user_errors("create_dataset", [&] { ds = create_dataset(cfg.root(), /*check_files=*/false); });
  if (ds) use(*ds);
}

}  // namespace featlearn::fuzz
