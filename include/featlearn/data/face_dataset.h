// FiveValidationDataset: PaddleClas's face-verification evaluation set (face_dataset.py), the files it reads
// (docs/file-formats.md, "Face verification sets").
//
// Config (DataLoader.Eval.dataset):
//   name: FiveValidationDataset
//   val_data_path         directory with, for each set S of agedb_30, cfp_fp, lfw, cplfw, calfw (in this order):
//                         S_list.npy (bool [P]: pair p is the same person) and S/memfile/mem_file.dat with its
//                         mem_file.dat.conf (the set's images, 2P of them: pair p is images 2p, 2p+1)
//   concat_mem_file_name  the five sets' images concatenated in that order: a raw C-order array described by
//                         <concat_mem_file_name>.conf, JSON {"shape": [N, C, H, W], "dtype": "float32"}
//                         (numpy.memmap's files). The images are used as stored (already normalized, CHW):
//                         the set takes no transforms, as in PaddleClas.
// Image i has label = its pair's issame (0/1) and belongs to set set_of(i). The concatenated file is mapped
// into memory, not read.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/dataset.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace featlearn {

class FiveValidationDataset : public Dataset {
 public:
  // Set names in PaddleClas's order; set_of() indexes this list.
  static const std::array<std::string, 5>& set_names();

  // Reads and checks the files (shapes, dtypes, sizes, pair counts); errors name the file and key.
  explicit FiveValidationDataset(const ConfigNode& node);
  // Its keys and values, opening nothing (check_dataset_config).
  static void check_keys(const ConfigNode& node);
  ~FiveValidationDataset() override;

  size_t size() const override { return labels_.size(); }
  int64_t label(size_t i) const override { return labels_[i]; }
  int64_t camid(size_t) const override { return -1; }
  const std::string& path(size_t) const override { return concat_path_; }
  std::string source(size_t i) const override;
  bool has_camids() const override { return false; }
  std::optional<MemoryImage> memory_image(size_t i) const override;

  int set_of(size_t i) const { return sets_[i]; }

 private:
  struct Mapping;
  std::unique_ptr<Mapping> map_;
  std::string concat_path_;
  std::vector<int64_t> labels_;
  std::vector<int> sets_;
  int channels_ = 0, height_ = 0, width_ = 0;
};

// Registry factory (dataset.cpp).
std::unique_ptr<Dataset> make_five_validation_dataset(const ConfigNode& node, bool check_files);

}  // namespace featlearn
