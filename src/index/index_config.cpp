// The PP-ShiTu inference config (keys and defaults: include/featlearn/index/index_config.h, docs/index.md).
#include <featlearn/index/index_config.h>
#include <fmt/format.h>

namespace featlearn {

namespace {

// Detection keys: featlearn embeds whole images, so a config that asks for a detector is refused.
void refuse_detection(const ConfigNode& node, const std::string& key) {
  const auto v = node[key];
  if (!v.defined()) return;
  v.fail("featlearn searches whole images (no main-body detector); set it to null or remove it");
}

IndexProcessConfig parse_index_process(const ConfigNode& n) {
  IndexProcessConfig c;
  c.node = n;
  if (!n.defined()) throw ConfigError("the config has no IndexProcess section (index_dir, index_method, dist_type, ...)");
  n.check_keys({"index_method", "dist_type", "embedding_size", "batch_size", "index_dir", "image_root", "data_file",
                "delimiter", "index_operation", "return_k", "score_thres", "hamming_radius", "ef_construction",
                "ef_search", "nlist", "nprobe", "on_bad_image", "remove_by"});
  c.index_method = n.get<std::string>("index_method", c.index_method);
  c.dist_type = n.get<std::string>("dist_type", c.dist_type);
  try {
    c.metric = parse_index_metric(c.dist_type, n["dist_type"].where());
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  c.embedding_size = n.get<int64_t>("embedding_size", 0);
  if (n["embedding_size"].defined() && c.embedding_size <= 0) n["embedding_size"].fail("must be positive");
  c.batch_size = n.get<int64_t>("batch_size", c.batch_size);
  if (c.batch_size <= 0) n["batch_size"].fail("must be positive");
  c.index_dir = n.require<std::string>("index_dir");
  c.image_root = n.get<std::string>("image_root", "");
  c.data_file = n.get<std::string>("data_file", "");
  c.delimiter = n.get<std::string>("delimiter", c.delimiter);
  if (c.delimiter.empty()) n["delimiter"].fail("must not be empty");
  c.index_operation = n.get<std::string>("index_operation", c.index_operation);
  if (c.index_operation != "new" && c.index_operation != "append" && c.index_operation != "remove")
    n["index_operation"].fail("must be new, append or remove, got '" + c.index_operation + "'");
  c.remove_by = n.get<std::string>("remove_by", c.remove_by);
  if (c.remove_by != "line" && c.remove_by != "id" && c.remove_by != "label")
    n["remove_by"].fail("must be line, id or label, got '" + c.remove_by + "'");
  const auto bad = n.get<std::string>("on_bad_image", "error");
  if (bad != "error" && bad != "skip") n["on_bad_image"].fail("must be error or skip, got '" + bad + "'");
  c.skip_bad_images = bad == "skip";
  c.ef_construction = n.get<int64_t>("ef_construction", c.ef_construction);
  if (c.ef_construction <= 0) n["ef_construction"].fail("must be positive");
  c.nlist = n.get<int64_t>("nlist", 0);
  if (c.nlist < 0) n["nlist"].fail("must be >= 0 (0: PaddleClas's rule, gallery size / 8)");
  c.search.top_k = n.get<int64_t>("return_k", c.search.top_k);
  if (c.search.top_k <= 0) n["return_k"].fail("must be positive");
  if (n["score_thres"].defined()) c.search.score_thres = n["score_thres"].as<float>();
  if (n["hamming_radius"].defined()) c.search.hamming_radius = n["hamming_radius"].as<float>();
  c.search.ef_search = n.get<int64_t>("ef_search", c.search.ef_search);
  if (c.search.ef_search <= 0) n["ef_search"].fail("must be positive");
  c.search.nprobe = n.get<int64_t>("nprobe", c.search.nprobe);
  if (c.search.nprobe <= 0) n["nprobe"].fail("must be positive");
  return c;
}

}  // namespace

InferenceConfig InferenceConfig::parse(const ConfigNode& root) {
  InferenceConfig c;
  c.root = root;
  root.check_keys({"Global", "RecPreProcess", "RecPostProcess", "IndexProcess", "DetPreProcess", "DetPostProcess"});
  refuse_detection(root, "DetPreProcess");
  refuse_detection(root, "DetPostProcess");
  const auto g = root["Global"];
  if (g.defined()) {
    g.check_keys({"rec_inference_model_dir", "batch_size", "use_gpu", "cpu_num_threads", "infer_imgs",
                  "enable_mkldnn", "ir_optim", "use_tensorrt", "use_fp16", "gpu_mem", "enable_profile",
                  "enable_benchmark", "det_inference_model_dir", "threshold", "max_det_results", "labe_list",
                  "rec_nms_thresold", "image_shape"});
    for (const char* k : {"det_inference_model_dir", "threshold", "max_det_results", "labe_list", "rec_nms_thresold",
                          "image_shape"})
      refuse_detection(g, k);
    c.model_dir = g.get<std::string>("rec_inference_model_dir", "");
    c.query_batch_size = g.get<int64_t>("batch_size", 1);
    if (c.query_batch_size <= 0) g["batch_size"].fail("must be positive");
    c.use_gpu = g.get<bool>("use_gpu", false);
    c.cpu_num_threads = g.get<int>("cpu_num_threads", 0);
    if (c.cpu_num_threads < 0) g["cpu_num_threads"].fail("must be >= 0 (0: all cores)");
    for (const char* k : {"enable_mkldnn", "ir_optim", "enable_profile", "enable_benchmark"})
      if (g[k].defined()) (void)g[k].as<bool>();
    if (g["gpu_mem"].defined()) (void)g["gpu_mem"].as<int64_t>();
    for (const char* k : {"use_tensorrt", "use_fp16"})
      if (g.get<bool>(k, false))
        fmt::print(stderr, "warning: {}: featlearn runs the model in fp32 LibTorch; {} has no effect\n",
                   g[k].where(), k);
  }
  const auto pre = root["RecPreProcess"];
  if (pre.defined()) {
    pre.check_keys({"transform_ops"});
    c.transform_ops = pre["transform_ops"];
  }
  if (root["RecPostProcess"].defined())
    root["RecPostProcess"].fail("featlearn applies the exported model's own feature post-processing "
                                "(Global.feature_normalize / feature_binarize at export); set RecPostProcess: null");
  c.index = parse_index_process(root["IndexProcess"]);
  return c;
}

}  // namespace featlearn
