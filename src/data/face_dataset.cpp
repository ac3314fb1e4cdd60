// FiveValidationDataset (face_dataset.h): numpy.memmap files as PaddleClas reads them.
#include <featlearn/data/face_dataset.h>
#include <featlearn/io/npy.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace featlearn {

namespace {

// <file>.conf of a numpy.memmap: {"shape": [...], "dtype": "float32"}; the .dat must hold exactly that array.
std::vector<int64_t> read_memmap_shape(const std::string& file) {
  const std::string conf = file + ".conf";
  std::ifstream in(conf);
  if (!in) throw Error(fmt::format("'{}' does not exist (the numpy.memmap description of '{}')", conf, file));
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", conf, e.what()));
  }
  if (!j.is_object() || !j.contains("shape") || !j["shape"].is_array() || !j.contains("dtype") ||
      !j["dtype"].is_string())
    throw Error(fmt::format("{}: expected {{\"shape\": [N, C, H, W], \"dtype\": \"float32\"}}", conf));
  const std::string dtype = j["dtype"];
  if (dtype != "float32" && dtype != "<f4" && dtype != "f4" && dtype != "=f4")
    throw Error(fmt::format("{}: dtype '{}' is not float32 (the images are fed to the model as stored)", conf, dtype));
  std::vector<int64_t> shape;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (int64_t(1) << 31))
      throw Error(fmt::format("{}: shape {} is not a list of positive sizes", conf, j["shape"].dump()));
    shape.push_back(d.get<int64_t>());
  }
  if (shape.size() != 4) throw Error(fmt::format("{}: shape {} is not [N, C, H, W]", conf, j["shape"].dump()));
  std::error_code ec;
  const auto bytes = fs::file_size(file, ec);
  if (ec) throw Error(fmt::format("'{}' does not exist (described by '{}')", file, conf));
  const uint64_t want = static_cast<uint64_t>(shape[0]) * shape[1] * shape[2] * shape[3] * sizeof(float);
  if (bytes != want)
    throw Error(fmt::format("'{}' holds {} bytes but its shape {} in '{}' needs {}", file, bytes,
                            j["shape"].dump(), conf, want));
  return shape;
}

}  // namespace

// A read-only memory map of the concatenated images.
struct FiveValidationDataset::Mapping {
  void* addr = MAP_FAILED;
  size_t length = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) munmap(addr, length);
  }
};

const std::array<std::string, 5>& FiveValidationDataset::set_names() {
  static const std::array<std::string, 5> names = {"agedb_30", "cfp_fp", "lfw", "cplfw", "calfw"};
  return names;
}

void FiveValidationDataset::check_keys(const ConfigNode& node) {
  node.check_keys({"name", "val_data_path", "concat_mem_file_name"});
  (void)node.require<std::string>("val_data_path");
  (void)node.require<std::string>("concat_mem_file_name");
}

FiveValidationDataset::FiveValidationDataset(const ConfigNode& node) : map_(std::make_unique<Mapping>()) {
  check_keys(node);
  const auto dir = node.require<std::string>("val_data_path");
  concat_path_ = node.require<std::string>("concat_mem_file_name");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) node["val_data_path"].fail(fmt::format("'{}' is not a directory", dir));

  std::vector<int64_t> image_shape;  // [C, H, W] of every set
  for (size_t s = 0; s < set_names().size(); ++s) {
    const std::string& name = set_names()[s];
    const std::string list = (fs::path(dir) / (name + "_list.npy")).string();
    const std::string mem = (fs::path(dir) / name / "memfile" / "mem_file.dat").string();
    if (!fs::is_regular_file(list, ec))
      node["val_data_path"].fail(fmt::format("'{}' does not exist (the {} pairs' issame list)", list, name));
    torch::Tensor issame;
    try {
      issame = load_npy(list);
      if (issame.dim() != 1) throw Error(fmt::format("{}: expected a 1-D issame list, got {} dimensions", list, issame.dim()));
      issame = issame.to(torch::kLong);
      const auto shape = read_memmap_shape(mem);
      if (shape[0] != 2 * issame.numel())
        throw Error(fmt::format("'{}' holds {} images but '{}' lists {} pairs (2 images each)", mem, shape[0], list,
                                issame.numel()));
      const std::vector<int64_t> chw(shape.begin() + 1, shape.end());
      if (!image_shape.empty() && chw != image_shape)
        throw Error(fmt::format("'{}': images of {}x{}x{} but {} has {}x{}x{}", mem, chw[0], chw[1], chw[2],
                                set_names()[0], image_shape[0], image_shape[1], image_shape[2]));
      image_shape = chw;
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      node["val_data_path"].fail(e.what());
    }
    const auto* v = issame.data_ptr<int64_t>();
    for (int64_t p = 0; p < issame.numel(); ++p)
      for (int k = 0; k < 2; ++k) {  // PaddleClas duplicates issame to one label per image
        if (v[p] != 0 && v[p] != 1)
          node["val_data_path"].fail(fmt::format("{}: entry {} is {}, not a boolean", list, p, v[p]));
        labels_.push_back(v[p]);
        sets_.push_back(static_cast<int>(s));
      }
  }

  std::vector<int64_t> shape;
  try {
    shape = read_memmap_shape(concat_path_);
  } catch (const Error& e) {
    node["concat_mem_file_name"].fail(e.what());
  }
  if (shape[0] != static_cast<int64_t>(labels_.size()) || std::vector<int64_t>(shape.begin() + 1, shape.end()) != image_shape)
    node["concat_mem_file_name"].fail(fmt::format(
        "'{}' has shape [{}, {}, {}, {}] but the five sets hold {} images of {}x{}x{}", concat_path_, shape[0], shape[1],
        shape[2], shape[3], labels_.size(), image_shape[0], image_shape[1], image_shape[2]));
  channels_ = static_cast<int>(shape[1]);
  height_ = static_cast<int>(shape[2]);
  width_ = static_cast<int>(shape[3]);

  const int fd = ::open(concat_path_.c_str(), O_RDONLY);
  if (fd < 0) node["concat_mem_file_name"].fail(fmt::format("cannot open '{}': {}", concat_path_, std::strerror(errno)));
  map_->length = static_cast<size_t>(shape[0]) * channels_ * height_ * width_ * sizeof(float);
  map_->addr = ::mmap(nullptr, map_->length, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (map_->addr == MAP_FAILED)
    node["concat_mem_file_name"].fail(fmt::format("cannot map '{}': {}", concat_path_, std::strerror(err)));
}

FiveValidationDataset::~FiveValidationDataset() = default;

std::string FiveValidationDataset::source(size_t i) const {
  return fmt::format("{}[{}] ({})", concat_path_, i, set_names()[static_cast<size_t>(sets_[i])]);
}

std::optional<Dataset::MemoryImage> FiveValidationDataset::memory_image(size_t i) const {
  MemoryImage m;
  m.channels = channels_;
  m.height = height_;
  m.width = width_;
  m.data = static_cast<const float*>(map_->addr) + i * static_cast<size_t>(channels_) * height_ * width_;
  return m;
}

std::unique_ptr<Dataset> make_five_validation_dataset(const ConfigNode& node, bool /*check_files*/) {
  return std::make_unique<FiveValidationDataset>(node);
}

}  // namespace featlearn
