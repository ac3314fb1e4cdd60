// The PP-ShiTu-style inference config that `featlearn index ...` and `featlearn serve` read (docs/index.md):
//
// Global:
//   rec_inference_model_dir  (required unless vector-only) a `featlearn export` directory
//   batch_size               images per forward pass when searching (default: IndexProcess.batch_size)
//   use_gpu (false)          run the model on CUDA when LibTorch has it (a warning and CPU otherwise)
//   cpu_num_threads (0)      LibTorch intra-op threads (0: all cores)
//   infer_imgs               accepted (PaddleClas's demo input); `index search --image` takes the query
//   enable_mkldnn, ir_optim, use_tensorrt, use_fp16, gpu_mem, enable_profile, enable_benchmark
//                            Paddle Inference engine options: accepted, no effect (LibTorch runs the model);
//                            use_tensorrt / use_fp16 true warn that featlearn runs fp32 LibTorch.
//   det_inference_model_dir, threshold, max_det_results, labe_list, rec_nms_thresold, image_shape and the
//   DetPreProcess / DetPostProcess sections: detection; an error unless null (featlearn searches whole images).
// RecPreProcess.transform_ops   replaces the exported model's preprocessing (default: the model's own)
// RecPostProcess                null (PaddleClas's rec configs); anything else is an error
// IndexProcess:
//   index_method (HNSW32)    HNSW<M> | IVF | IVF<nlist> | Flat | any FAISS factory string
//   dist_type (IP)           IP | L2 | hamming (hamming needs a model exported with Global.feature_binarize)
//   embedding_size           must equal the model's output dimension (bits for hamming)
//   batch_size (32)          images per forward pass when building
//   index_dir                (required) the index directory
//   image_root, data_file    the gallery list: `path<delimiter>label[<delimiter>...]` per line
//   delimiter ("\t")         field separator of data_file (" " splits on any whitespace run; others exactly)
//   index_operation (new)    new | append | remove
//   return_k (5), score_thres (none), hamming_radius (none)
//   ef_construction (40), ef_search (128), nlist (0: PaddleClas's rule), nprobe (16)
//   on_bad_image (error)     error | skip: a gallery image that cannot be read or decoded
//   remove_by (line)         remove: line (data_file lines, matched by path) | id (data_file holds ids) |
//                            label (data_file holds labels)
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/index/gallery_index.h>

#include <optional>
#include <string>

namespace featlearn {

struct IndexProcessConfig {
  std::string index_method = "HNSW32";
  IndexMetric metric = IndexMetric::kInnerProduct;
  std::string dist_type = "IP";
  int64_t embedding_size = 0;  // 0: not given (then the model's)
  int64_t batch_size = 32;
  std::string index_dir;
  std::string image_root;
  std::string data_file;
  std::string delimiter = "\t";
  std::string index_operation = "new";
  std::string remove_by = "line";
  bool skip_bad_images = false;
  int64_t ef_construction = 40;
  int64_t nlist = 0;
  SearchOptions search;  // return_k, score_thres, hamming_radius, ef_search, nprobe
  ConfigNode node;       // IndexProcess (for errors)
};

struct InferenceConfig {
  std::string model_dir;          // "" for a vector-only service
  ConfigNode transform_ops;       // RecPreProcess.transform_ops (undefined: the model's own)
  int64_t query_batch_size = 1;
  bool use_gpu = false;
  int cpu_num_threads = 0;
  IndexProcessConfig index;
  ConfigNode root;

  static InferenceConfig parse(const ConfigNode& root);
};

}  // namespace featlearn
