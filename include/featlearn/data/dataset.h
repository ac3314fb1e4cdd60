// Datasets: list files or image folders -> (image path, label, camera id), with PaddleClas semantics.
//
// Registered names (DataLoader.<set>.dataset.name):
//   VeriWild         `relative/path.jpg label [camid]` per line, whitespace separated. Keys: image_root,
//                    cls_label_path, relabel (false), backend (cv2|pil; decoding always uses OpenCV).
//   ImageNetDataset  `path<delimiter>label` (delimiter default " "), relabel (false). Also ClsDataset,
//                    ShiTuRecDataset (PaddleClas aliases).
//   LogoDataset      tab separated, header row starting with `image_id` skipped, label = column 1 - 1,
//                    path = column 3.
//   ICartoonDataset  `path\tlabel`.
//   Market1501, MSMT17, DukeMTMC
//                    every *.jpg under image_root/<market1501/Market-1501-v15.09.15|msmt17/MSMT17_V1|
//                    dukemtmc/DukeMTMC-reID>/<cls_label_path>; pid and camera parsed from the file name
//                    (`0002_c1s1_000451_03.jpg` -> pid 2, camid 0 (cameras count from 1 in names)); pid -1
//                    (junk) skipped; pids relabelled 0..P-1 (in increasing pid order) when cls_label_path
//                    contains "train".
//   CompCars         `path label`; bbox_crop (false) crops each image to the last line `x1 y1 x2 y2` of
//                    label_root/<path stem>.txt.
//   AdaFaceDataset   `path label` per line, whitespace separated; keys root_dir, label_path, transform (its
//                    transform list, instead of transform_ops).
//   FiveValidationDataset  the five face-verification sets as decoded float images (data/face_dataset.h).
// Every other dataset also accepts transform_ops (read by the loader).
//
// Relabel maps the distinct labels, in increasing order, to 0..C-1. Blank lines are skipped. List errors name
// file:line; images missing on disk are reported up front with their count and the first few paths.
#pragma once
#include <featlearn/config/config.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

// Pixel box [x1, x2) x [y1, y2) in the decoded image.
struct BBox {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual int64_t label(size_t i) const = 0;
  virtual int64_t camid(size_t i) const = 0;               // -1 when absent
  virtual const std::string& path(size_t i) const = 0;     // full image path
  virtual std::string source(size_t i) const = 0;          // "list.txt:LINE" for messages (or the path)
  // Crop applied right after decoding (CompCars bbox_crop); nullopt for none.
  virtual std::optional<BBox> crop_box(size_t /*i*/) const { return std::nullopt; }
  virtual bool has_camids() const = 0;
  // Datasets that hold decoded images (FiveValidationDataset) return image i as CHW float32; the loader uses
  // it as is (no decoding, no transform ops). nullopt for datasets of image files.
  struct MemoryImage {
    const float* data = nullptr;  // [channels, height, width], valid while the dataset lives
    int channels = 0, height = 0, width = 0;
  };
  virtual std::optional<MemoryImage> memory_image(size_t /*i*/) const { return std::nullopt; }
  int64_t num_classes() const;  // max label + 1 (0 when empty)
};

// A dataset held in memory as parallel arrays; every built-in dataset is one.
class ListDataset : public Dataset {
 public:
  struct Item {
    std::string path;    // full path
    int64_t label = 0;
    int64_t camid = -1;
    std::string source;  // "file:line" or empty (then the path is the source)
    std::optional<BBox> box;
  };
  explicit ListDataset(std::vector<Item> items, bool has_camids);
  size_t size() const override { return items_.size(); }
  int64_t label(size_t i) const override { return items_[i].label; }
  int64_t camid(size_t i) const override { return items_[i].camid; }
  const std::string& path(size_t i) const override { return items_[i].path; }
  std::string source(size_t i) const override;
  std::optional<BBox> crop_box(size_t i) const override { return items_[i].box; }
  bool has_camids() const override { return has_camids_; }
  const std::vector<Item>& items() const { return items_; }

 private:
  std::vector<Item> items_;
  bool has_camids_;
};

// Builds the dataset named by node["name"] from a `dataset:` node. Throws ConfigError / Error.
// `check_files` (default true) stats every image path up front.
std::unique_ptr<Dataset> create_dataset(const ConfigNode& node, bool check_files = true);
// The same node's checks without opening anything: the name, every key, and the values that need no file
// (`featlearn check` and every command's whole-config check; docs/config.md, "Checking a config").
void check_dataset_config(const ConfigNode& node);
std::vector<std::string> dataset_names();

// "root" + "rel" with os.path.join semantics (an absolute `rel` wins).
std::string join_image_path(const std::string& root, const std::string& rel);

}  // namespace featlearn
