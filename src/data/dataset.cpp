#include <featlearn/config/registry.h>
#include <featlearn/data/dataset.h>
#include <featlearn/data/face_dataset.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <sys/stat.h>

namespace fs = std::filesystem;

namespace featlearn {

int64_t Dataset::num_classes() const {
  int64_t m = -1;
  for (size_t i = 0; i < size(); ++i) {
    if (label(i) == std::numeric_limits<int64_t>::max())
      throw Error(fmt::format("{}: label {} is too large (labels are class indices 0..C-1)", source(i), label(i)));
    m = std::max(m, label(i));
  }
  return m + 1;
}

ListDataset::ListDataset(std::vector<Item> items, bool has_camids)
    : items_(std::move(items)), has_camids_(has_camids) {}

std::string ListDataset::source(size_t i) const {
  const auto& it = items_[i];
  return it.source.empty() ? it.path : it.source;
}

std::string join_image_path(const std::string& root, const std::string& rel) {
  if (root.empty() || (!rel.empty() && rel[0] == '/')) return rel;
  if (root.back() == '/') return root + rel;
  return root + "/" + rel;
}

namespace {

using Items = std::vector<ListDataset::Item>;

struct ListLine {
  std::vector<std::string> fields;
  int line = 0;
};

std::string strip(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Python's str.split(sep): exact separator, empty fields kept.
std::vector<std::string> split_exact(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const auto p = s.find(sep, start);
    if (p == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
}

// Non-blank lines of a list file, split (sep empty = any whitespace).
std::vector<ListLine> read_list(const std::string& file, const std::string& sep) {
  std::ifstream in(file);
  if (!in) throw Error(fmt::format("cannot open list file '{}' (cls_label_path): {}", file, std::strerror(errno)));
  std::vector<ListLine> out;
  std::string raw;
  int n = 0;
  while (std::getline(in, raw)) {
    ++n;
    const std::string s = strip(raw);
    if (s.empty()) continue;
    out.push_back({sep.empty() ? split_ws(s) : split_exact(s, sep), n});
  }
  return out;
}

std::string where(const std::string& file, int line) { return fmt::format("{}:{}", file, line); }

// A whole-string decimal integer within [lo, hi]; errors name `where` (file:line or the image path).
int64_t parse_int_at(const std::string& s, const std::string& where_, const char* what,
                     int64_t lo = std::numeric_limits<int64_t>::min(),
                     int64_t hi = std::numeric_limits<int64_t>::max()) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || end == s.c_str() || *end != '\0')
    throw Error(fmt::format("{}: {} '{}' is not an integer", where_, what, s));
  if (errno == ERANGE || v < lo || v > hi)
    throw Error(fmt::format("{}: {} '{}' is out of range [{}, {}]", where_, what, s, lo, hi));
  return v;
}

int64_t parse_int(const std::string& s, const std::string& file, int line, const char* what,
                  int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) {
  return parse_int_at(s, where(file, line), what, lo, hi);
}

// Pixel coordinates are 32-bit (BBox).
int parse_coordinate(const std::string& s, const std::string& file, int line, const char* what) {
  return static_cast<int>(
      parse_int(s, file, line, what, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

const std::string& field(const ListLine& l, size_t i, const std::string& file, const char* what,
                         const char* format) {
  if (l.fields.size() <= i)
    throw Error(fmt::format("{}: missing column {} ({}); expected lines of the form `{}`", where(file, l.line),
                            i + 1, what, format));
  return l.fields[i];
}

void relabel(Items& items) {
  std::map<int64_t, int64_t> m;
  for (const auto& it : items) m.emplace(it.label, 0);
  int64_t next = 0;
  for (auto& kv : m) kv.second = next++;
  for (auto& it : items) it.label = m[it.label];
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void check_dir(const ConfigNode& node, const std::string& key, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) node[key].fail(fmt::format("directory '{}' does not exist", dir));
}

void check_images(const Items& items, const std::string& list, const std::string& root) {
  std::vector<size_t> missing;
  for (size_t i = 0; i < items.size(); ++i)
    if (!file_exists(items[i].path)) missing.push_back(i);
  if (missing.empty()) return;
  std::string first;
  for (size_t k = 0; k < std::min<size_t>(missing.size(), 5); ++k) {
    const auto& it = items[missing[k]];
    first += fmt::format("\n  {}{}", it.path, it.source.empty() ? "" : " (" + it.source + ")");
  }
  throw Error(fmt::format("{} of {} images listed in '{}' are missing (image_root '{}'); first ones:{}",
                          missing.size(), items.size(), list, root, first));
}

struct Common {
  std::string image_root, list;
  bool relabel = false;
};

const std::vector<std::string> kCommonKeys = {"name", "image_root", "cls_label_path", "transform_ops"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// How far a dataset factory goes: the node's keys and values only (check_dataset_config), the list too, or
// the list and a stat of every image.
enum class Open { kKeys, kList, kFiles };

Common read_common(const ConfigNode& node, const std::vector<std::string>& extra_keys, Open open) {
  node.check_keys(with(kCommonKeys, extra_keys));
  Common c;
  c.image_root = node.require<std::string>("image_root");
  c.list = node.require<std::string>("cls_label_path");
  if (open == Open::kKeys) return c;
  check_dir(node, "image_root", c.image_root);
  std::error_code ec;
  if (!fs::is_regular_file(c.list, ec)) node["cls_label_path"].fail(fmt::format("list file '{}' does not exist", c.list));
  return c;
}

}  // namespace


namespace {

using DatasetPtr = std::unique_ptr<Dataset>;

DatasetPtr finish(Items items, bool has_camids, Open open, const std::string& list, const std::string& root) {
  if (open == Open::kFiles) check_images(items, list, root);
  return std::make_unique<ListDataset>(std::move(items), has_camids);
}

// VeriWild: `path label [camid]`, whitespace separated.
DatasetPtr make_veriwild(const ConfigNode& node, Open open) {
  const auto c = read_common(node, {"relabel", "backend"}, open);
  const auto backend = node.get<std::string>("backend", "cv2");
  if (backend != "cv2" && backend != "pil") node["backend"].fail("expected cv2 or pil, got '" + backend + "'");
  (void)node.get<bool>("relabel", false);
  if (open == Open::kKeys) return nullptr;
  Items items;
  bool any_cam = false, all_cam = true;
  for (const auto& l : read_list(c.list, "")) {
    const char* fmt_ = "relative/path.jpg label [camid]";
    ListDataset::Item it;
    it.path = join_image_path(c.image_root, field(l, 0, c.list, "image path", fmt_));
    it.label = parse_int(field(l, 1, c.list, "label", fmt_), c.list, l.line, "label");
    if (l.fields.size() >= 3) {
      it.camid = parse_int(l.fields[2], c.list, l.line, "camera id");
      any_cam = true;
    } else {
      all_cam = false;
    }
    it.source = where(c.list, l.line);
    items.push_back(std::move(it));
  }
  if (any_cam && !all_cam)
    throw Error(fmt::format("{}: some lines have a camera id (third column) and some do not; give every line one",
                            c.list));
  if (node.get<bool>("relabel", false)) relabel(items);
  return finish(std::move(items), any_cam, open, c.list, c.image_root);
}

// ImageNetDataset: `path<delimiter>label`.
DatasetPtr make_imagenet(const ConfigNode& node, Open open) {
  const auto c = read_common(node, {"relabel", "delimiter"}, open);
  std::string delim = " ";
  if (node["delimiter"].defined()) delim = node["delimiter"].as<std::string>();
  if (delim.empty()) node["delimiter"].fail("the delimiter must not be empty");
  (void)node.get<bool>("relabel", false);
  if (open == Open::kKeys) return nullptr;
  Items items;
  const std::string fmt_ = "path" + std::string(delim == "\t" ? "<TAB>" : delim) + "label";
  for (const auto& l : read_list(c.list, delim)) {
    ListDataset::Item it;
    it.path = join_image_path(c.image_root, field(l, 0, c.list, "image path", fmt_.c_str()));
    it.label = parse_int(strip(field(l, 1, c.list, "label", fmt_.c_str())), c.list, l.line, "label");
    it.source = where(c.list, l.line);
    items.push_back(std::move(it));
  }
  if (node.get<bool>("relabel", false)) relabel(items);
  return finish(std::move(items), false, open, c.list, c.image_root);
}

// LogoDataset: tab separated with a header row; label = col1 - 1, path = col3.
DatasetPtr make_logo(const ConfigNode& node, Open open) {
  const auto c = read_common(node, {}, open);
  if (open == Open::kKeys) return nullptr;
  Items items;
  const char* fmt_ = "image_id<TAB>label<TAB>...<TAB>path";
  for (const auto& l : read_list(c.list, "\t")) {
    if (!l.fields.empty() && l.fields[0] == "image_id") continue;  // header
    ListDataset::Item it;
    // label - 1 must not overflow
    it.label = parse_int(field(l, 1, c.list, "label", fmt_), c.list, l.line, "label",
                         std::numeric_limits<int64_t>::min() + 1) - 1;
    it.path = join_image_path(c.image_root, field(l, 3, c.list, "image path", fmt_));
    it.source = where(c.list, l.line);
    items.push_back(std::move(it));
  }
  return finish(std::move(items), false, open, c.list, c.image_root);
}

// ICartoonDataset: `path\tlabel`.
DatasetPtr make_icartoon(const ConfigNode& node, Open open) {
  const auto c = read_common(node, {}, open);
  if (open == Open::kKeys) return nullptr;
  Items items;
  const char* fmt_ = "path<TAB>label";
  for (const auto& l : read_list(c.list, "\t")) {
    ListDataset::Item it;
    it.path = join_image_path(c.image_root, field(l, 0, c.list, "image path", fmt_));
    it.label = parse_int(strip(field(l, 1, c.list, "label", fmt_)), c.list, l.line, "label");
    it.source = where(c.list, l.line);
    items.push_back(std::move(it));
  }
  return finish(std::move(items), false, open, c.list, c.image_root);
}

// CompCars: `path label`, optional bbox crop from label_root/<stem>.txt (last line `x1 y1 x2 y2`).
DatasetPtr make_compcars(const ConfigNode& node, Open open) {
  const auto c = read_common(node, {"label_root", "bbox_crop"}, open);
  const bool bbox = node.get<bool>("bbox_crop", false);
  std::string label_root;
  if (bbox) {
    label_root = node.require<std::string>("label_root");
    if (open != Open::kKeys) check_dir(node, "label_root", label_root);
  }
  if (open == Open::kKeys) return nullptr;
  Items items;
  const char* fmt_ = "path label";
  for (const auto& l : read_list(c.list, "")) {
    ListDataset::Item it;
    const auto& rel = field(l, 0, c.list, "image path", fmt_);
    it.path = join_image_path(c.image_root, rel);
    it.label = parse_int(field(l, 1, c.list, "label", fmt_), c.list, l.line, "label");
    it.source = where(c.list, l.line);
    if (bbox) {
      // PaddleClas: l[0].split('.')[0] + '.txt'
      const std::string box_file = join_image_path(label_root, rel.substr(0, rel.find('.')) + ".txt");
      std::ifstream bf(box_file);
      if (!bf)
        throw Error(fmt::format("{}: bounding box file '{}' does not exist (bbox_crop: True)", it.source, box_file));
      std::string line, last;
      int n = 0, last_n = 0;
      while (std::getline(bf, line)) {
        ++n;
        if (!strip(line).empty()) {
          last = strip(line);
          last_n = n;
        }
      }
      const auto f = split_ws(last);
      if (f.size() != 4)
        throw Error(fmt::format("{}:{}: expected a bounding box `x1 y1 x2 y2` on the last line", box_file, last_n));
      BBox b;
      b.x1 = parse_coordinate(f[0], box_file, last_n, "x1");
      b.y1 = parse_coordinate(f[1], box_file, last_n, "y1");
      b.x2 = parse_coordinate(f[2], box_file, last_n, "x2");
      b.y2 = parse_coordinate(f[3], box_file, last_n, "y2");
      if (b.x2 <= b.x1 || b.y2 <= b.y1)
        throw Error(fmt::format("{}:{}: empty bounding box {} {} {} {}", box_file, last_n, b.x1, b.y1, b.x2, b.y2));
      it.box = b;
    }
    items.push_back(std::move(it));
  }
  return finish(std::move(items), false, open, c.list, c.image_root);
}

// Market1501 / MSMT17 / DukeMTMC: folder of *.jpg, pid and camera from the file name.
DatasetPtr make_person(const ConfigNode& node, Open open, const std::string& subdir, int max_cam) {
  node.check_keys(with(kCommonKeys, {"backend"}));
  const auto root = node.require<std::string>("image_root");
  const auto sub = node.require<std::string>("cls_label_path");
  if (node["backend"].defined() && node["backend"].as<std::string>() != "cv2" && node["backend"].as<std::string>() != "pil")
    node["backend"].fail("expected cv2 or pil, got '" + node["backend"].as<std::string>() + "'");
  if (open == Open::kKeys) return nullptr;
  const auto dir = join_image_path(join_image_path(root, subdir), sub);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    node["cls_label_path"].fail(fmt::format("'{}' is not available (expected image_root/{}/{})", dir, subdir, sub));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".jpg") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  const std::regex pattern(R"(([-\d]+)_c(\d+))");
  Items items;
  for (const auto& f : files) {
    const std::string name = fs::path(f).filename().string();
    std::smatch m;
    if (!std::regex_search(name, m, pattern))
      throw Error(fmt::format("{}: file name does not match `<pid>_c<camera>...`", f));
    // PaddleClas: int() of both groups (so `1-2_c1...` is an error, not pid 1).
    const int64_t pid = parse_int_at(m[1].str(), f, "person id");
    const int64_t cam = parse_int_at(m[2].str(), f, "camera id");
    if (pid == -1) continue;  // junk images
    if (cam < 1 || cam > max_cam)
      throw Error(fmt::format("{}: camera {} outside 1..{}", f, cam, max_cam));
    ListDataset::Item it;
    it.path = f;
    it.label = pid;
    it.camid = cam - 1;
    items.push_back(std::move(it));
  }
  if (sub.find("train") != std::string::npos) relabel(items);
  // listed from disk: present by construction
  return std::make_unique<ListDataset>(std::move(items), true);
}

// AdaFaceDataset (PaddleClas's face_dataset.py): `relative/path label` per line, whitespace separated, under
// root_dir; its transform list is `transform`.
DatasetPtr make_adaface(const ConfigNode& node, Open open) {
  node.check_keys({"name", "root_dir", "label_path", "transform"});
  const auto root = node.require<std::string>("root_dir");
  const auto list = node.require<std::string>("label_path");
  if (open == Open::kKeys) return nullptr;
  check_dir(node, "root_dir", root);
  std::error_code ec;
  if (!fs::is_regular_file(list, ec)) node["label_path"].fail(fmt::format("list file '{}' does not exist", list));
  Items items;
  for (const auto& l : read_list(list, "")) {
    const char* fmt_ = "relative/path.jpg label";
    ListDataset::Item it;
    it.path = join_image_path(root, field(l, 0, list, "image path", fmt_));
    it.label = parse_int(field(l, 1, list, "label", fmt_), list, l.line, "label");
    it.source = where(list, l.line);
    items.push_back(std::move(it));
  }
  return finish(std::move(items), false, open, list, root);
}

using DatasetRegistry = Registry<DatasetPtr, Open>;

const DatasetRegistry& dataset_registry() {
  static const DatasetRegistry reg = [] {
    DatasetRegistry r("dataset");
    r.add("VeriWild", make_veriwild);
    r.add("ImageNetDataset", make_imagenet);
    r.add("ClsDataset", make_imagenet);
    r.add("ShiTuRecDataset", make_imagenet);
    r.add("LogoDataset", make_logo);
    r.add("ICartoonDataset", make_icartoon);
    r.add("CompCars", make_compcars);
    r.add("AdaFaceDataset", make_adaface);
    r.add("FiveValidationDataset", [](const ConfigNode& n, Open open) -> DatasetPtr {
      if (open == Open::kKeys) return FiveValidationDataset::check_keys(n), nullptr;
      return make_five_validation_dataset(n, open == Open::kFiles);
    });
    r.add("Market1501", [](const ConfigNode& n, Open c) {
      return make_person(n, c, "market1501/Market-1501-v15.09.15", 6);
    });
    r.add("MSMT17", [](const ConfigNode& n, Open c) { return make_person(n, c, "msmt17/MSMT17_V1", 15); });
    r.add("DukeMTMC", [](const ConfigNode& n, Open c) { return make_person(n, c, "dukemtmc/DukeMTMC-reID", 8); });
    return r;
  }();
  return reg;
}

}  // namespace

std::unique_ptr<Dataset> create_dataset(const ConfigNode& node, bool check_files) {
  if (node.is_map() && node.has("batch_transform_ops"))
    node["batch_transform_ops"].fail("batch_transform_ops (Mixup/Cutmix batch operators) are not supported");
  return dataset_registry().create_named(node, check_files ? Open::kFiles : Open::kList);
}

void check_dataset_config(const ConfigNode& node) {
  if (node.is_map() && node.has("batch_transform_ops"))
    node["batch_transform_ops"].fail("batch_transform_ops (Mixup/Cutmix batch operators) are not supported");
  dataset_registry().create_named(node, Open::kKeys);
}

std::vector<std::string> dataset_names() { return dataset_registry().names(); }

}  // namespace featlearn
