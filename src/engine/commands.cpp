// train / eval / export / extract sub-commands.
#include <featlearn/common/atomic_file.h>
#include <featlearn/data/loader.h>
#include <featlearn/data/sampler.h>
#include <featlearn/data/transforms.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/config_check.h>
#include <featlearn/engine/export_onnx.h>
#include <featlearn/engine/global_config.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/io/npy.h>
#include <featlearn/model/distillation_model.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

namespace featlearn {

namespace fs = std::filesystem;

namespace {
Config load_config(const ConfigArgs& args) {
  Config c = Config::load(args.config);
  c.apply_overrides(args.overrides);
  return c;
}

// --print-config: the resolved config on stdout (training also writes it to output_dir/config.yaml).
void print_config(const ConfigArgs& args, const Config& c) {
  if (!args.print_config) return;
  // In a multi-process run rank 0 prints it for all (docs/distributed.md).
  if (const char* rank = std::getenv("RANK"); rank && *rank && std::string(rank) != "0") return;
  fmt::print("---- resolved config ({}) ----\n{}\n------------------------------\n", c.file(), c.dump());
}

// A YAML node in flow form on one line (`{name: FC, class_num: 50}`).
std::string flow_yaml(const YAML::Node& n) {
  YAML::Emitter e;
  e.SetMapFormat(YAML::Flow);
  e.SetSeqFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

// Leaf paths where two YAML trees differ, as "path: A vs B" (values in flow form).
void differences(const YAML::Node& a, const YAML::Node& b, const std::string& path, std::vector<std::string>* out) {
  auto flow = [](const YAML::Node& n) -> std::string {
    return !n.IsDefined() || n.IsNull() ? "(absent)" : flow_yaml(n);
  };
  if (a.IsMap() && b.IsMap()) {
    std::set<std::string> keys;
    for (const auto& kv : a) keys.insert(kv.first.as<std::string>());
    for (const auto& kv : b) keys.insert(kv.first.as<std::string>());
    for (const auto& k : keys) differences(a[k], b[k], path + "." + k, out);
    return;
  }
  const std::string fa = flow(a), fb = flow(b);
  if (fa != fb) out->push_back(fmt::format("{} ({} in the config, {} in the checkpoint)", path, fa, fb));
}
}  // namespace

Config load_config_for_weights(const ConfigArgs& args, ConfigUse use) {
  Config c = load_config(args);
  check_config(c.root(), use);
  const auto g = GlobalConfig::parse(c.root()["Global"]);
  if (!g.pretrained_model) return c;
  const std::string stored = checkpoint_config(*g.pretrained_model);
  if (stored.empty()) return c;
  YAML::Node arch;
  try {
    arch = YAML::Load(stored)["Arch"];
  } catch (const YAML::Exception&) {
    return c;
  }
  if (!arch.IsDefined() || !arch.IsMap()) return c;
  std::vector<std::string> diff;
  differences(c.root()["Arch"].yaml(), arch, "Arch", &diff);
  if (diff.empty()) return c;
  // The model as trained (the checkpoint's resolved Arch), with this command line's own -o overrides on top.
  Config adopted = Config::load(args.config);
  adopted.apply_overrides({"Arch=" + flow_yaml(arch)});
  adopted.apply_overrides(args.overrides);
  std::vector<std::string> kept;
  differences(adopted.root()["Arch"].yaml(), arch, "Arch", &kept);
  fmt::print("note: the model is built from the Arch stored in {} (as trained), which differs from {} in: {}{}\n",
             checkpoint_path(*g.pretrained_model), args.config, fmt::join(diff, "; "),
             kept.empty() ? "" : fmt::format(". Kept from this command's -o: {}", fmt::join(kept, "; ")));
  check_config(adopted.root(), use);
  return adopted;
}

namespace {

// The Eval preprocessing that extract should apply: DataLoader.Eval(.Query).dataset.transform_ops.
YAML::Node eval_transform_ops(const ConfigNode& root) {
  auto ops = eval_sections(root["DataLoader"]["Eval"]).first["dataset"]["transform_ops"];
  if (!ops.defined())
    root.fail("export needs DataLoader.Eval (Query) dataset.transform_ops to record the inference preprocessing");
  return YAML::Clone(ops.yaml());
}
}  // namespace

int cmd_check(const ConfigArgs& args) {
  Config c = load_config(args);
  print_config(args, c);
  check_config(c.root(), ConfigUse::kCheck);
  std::vector<std::string> ready, not_ready;
  for (const auto& [command, missing] : config_commands(c.root()))
    (missing.empty() ? ready : not_ready).push_back(missing.empty() ? command : command + ": " + missing);
  fmt::print("ok: {} (every section, key, name and value checked; no list, image or weights file opened)\n",
             args.config);
  fmt::print("ready for: {}\n", fmt::join(ready, ", "));
  for (const auto& n : not_ready) fmt::print("not for {}\n", n);
  return 0;
}

int cmd_train(const ConfigArgs& args) {
  Config c = load_config(args);
  print_config(args, c);
  Trainer t(c, Trainer::Mode::kTrain);
  auto last = t.train();
  if (!last.empty()) t.report(last);
  return 0;
}

int cmd_eval(const ConfigArgs& args) {
  Config c = load_config_for_weights(args, ConfigUse::kEval);
  print_config(args, c);
  Trainer t(c, Trainer::Mode::kEval);
  t.report(t.evaluate());
  return 0;
}

int cmd_export(const ConfigArgs& args, bool write_onnx) {
  Config c = load_config_for_weights(args, ConfigUse::kExport);
  print_config(args, c);
  const auto root = c.root();
  const auto g = GlobalConfig::parse(root["Global"]);
  if (!g.pretrained_model)
    root["Global"].fail("export needs Global.pretrained_model (e.g. -o Global.pretrained_model=output/RecModel/best_model)");
  const auto device = resolve_device(g.device, root["Global"]["device"]);
  // Build the model as trained, load its weights, then write it without the Head (unless logits are exported).
  // Of a DistillationModel only the infer_model_name model is exported, with the DistillationModel's
  // infer_output_key / infer_add_softmax (as PaddleClas's export).
  ArchModelPtr trained_arch = build_arch(root["Arch"], g.image_shape);
  const std::string weights_file = load_checkpoint(*g.pretrained_model, *trained_arch, nullptr, nullptr).path;
  RecModelImpl* trained = &trained_arch->infer_model();
  const auto* distill = dynamic_cast<const DistillationModelImpl*>(trained_arch.get());

  YAML::Node arch = YAML::Clone(infer_arch_node(root["Arch"]).yaml());
  const std::string key = trained_arch->infer_output_key();
  if (distill) {
    arch["infer_output_key"] = key;
    arch["infer_add_softmax"] = trained_arch->infer_add_softmax();
  }
  if (key != "logits") arch.remove("Head");
  if (arch["Backbone"] && arch["Backbone"]["pretrained"]) arch["Backbone"].remove("pretrained");
  YAML::Node spec;
  spec["format"] = "featlearn.inference";
  spec["format_version"] = kInferenceFormatVersion;
  spec["Arch"] = arch;
  spec["image_shape"] = g.image_shape;
  spec["feature_normalize"] = g.feature_normalize;
  spec["feature_binarize"] = g.feature_binarize;
  spec["transform_ops"] = eval_transform_ops(root);
  spec["device"] = g.device;
  Config spec_cfg = Config::from_string(YAML::Dump(spec), "inference.yaml");

  RecModel exported(spec_cfg["Arch"], g.image_shape);
  {
    // Copy the weights the exported model keeps (everything but the Head when it is dropped).
    torch::NoGradGuard no_grad;
    auto src = trained->named_parameters(true);
    auto src_buffers = trained->named_buffers(true);
    for (auto& p : exported->named_parameters(true)) p.value().copy_(src[p.key()]);
    for (auto& b : exported->named_buffers(true)) b.value().copy_(src_buffers[b.key()]);
  }
  {
    // The exported model runs on Global.device and gives the trained model's output there.
    torch::NoGradGuard no_grad;
    trained->to(device);
    exported->to(device);
    trained->eval();
    exported->eval();
    const auto probe = torch::rand({2, g.image_shape[0], g.image_shape[1], g.image_shape[2]},
                                   torch::TensorOptions().device(device));
    const auto a = trained->forward(probe).get(key), b = exported->forward(probe).get(key);
    if (!torch::allclose(a, b, 1e-5, 1e-6))
      throw Error("export: the exported model's '" + key + "' output differs from the trained model's on " +
                  g.device + " (max abs difference " + std::to_string((a - b).abs().max().item<double>()) + ")");
  }
  const fs::path dir = g.save_inference_dir;
  fs::create_directories(dir);
  CheckpointMeta meta;
  meta.config_yaml = YAML::Dump(spec);
  save_checkpoint((dir / "inference").string(), *exported, nullptr, nullptr, meta);
  // The ONNX model (docs/deploy.md, "ONNX export"): an architecture it cannot express fails the export
  // unless --no-onnx; then no model.onnx is left from an earlier export either.
  std::optional<OnnxExportInfo> onnx;
  if (write_onnx) {
    InferenceModel im{spec_cfg};
    im.model = exported;
    im.device = device;
    im.output_key = key;
    im.add_softmax = exported->infer_add_softmax();
    im.feature_normalize = g.feature_normalize;
    im.feature_binarize = g.feature_binarize;
    onnx = export_onnx(im, g.image_shape, dir.string());
    spec["onnx"] = onnx->file;
    spec["onnx_opset"] = onnx->opset;
    spec["onnx_input"] = onnx->input_name;
    YAML::Node in_shape(YAML::NodeType::Sequence), out_shape(YAML::NodeType::Sequence);
    in_shape.push_back("N");
    for (const auto d : onnx->input_shape) in_shape.push_back(d);
    out_shape.push_back("N");
    out_shape.push_back(onnx->output_dim);
    in_shape.SetStyle(YAML::EmitterStyle::Flow);
    out_shape.SetStyle(YAML::EmitterStyle::Flow);
    spec["onnx_input_shape"] = in_shape;
    spec["onnx_output"] = onnx->output_name;
    spec["onnx_output_shape"] = out_shape;
    spec_cfg = Config::from_string(YAML::Dump(spec), "inference.yaml");
  } else {
    std::error_code ec;
    fs::remove(dir / "model.onnx", ec);
  }
  spec_cfg.save((dir / "inference.yaml").string());
  int64_t nparams = 0;
  for (const auto& p : exported->parameters()) nparams += p.numel();
  fmt::print("Exported {}{} ({} parameters, output '{}'{}, checked on {}) to {}\n", weights_file,
             distill ? " model " + distill->infer_model_name() : "", nparams, key,
             trained_arch->infer_add_softmax() ? " + softmax" : "", g.device, dir.string());
  if (onnx)
    fmt::print("Wrote {} (ONNX opset {}, input '{}' [N, {}] float32, output '{}' [N, {}]; {} BatchNorm folded{})\n",
               (dir / onnx->file).string(), onnx->opset, onnx->input_name, fmt::join(onnx->input_shape, ", "),
               onnx->output_name, onnx->output_dim, onnx->folded_batch_norms,
               onnx->reparameterized_blocks ? fmt::format(", {} blocks re-parameterized", onnx->reparameterized_blocks)
                                            : std::string());
  else
    fmt::print("No ONNX model written (--no-onnx)\n");
  return 0;
}

InferenceModel InferenceModel::load(const std::string& dir, const std::string& device) {
  const std::string yaml_path = (fs::path(dir) / "inference.yaml").string();
  if (!fs::exists(yaml_path)) throw Error(dir + ": not an exported featlearn model (no inference.yaml; run featlearn export)");
  InferenceModel m{Config::load(yaml_path)};
  const auto root = m.spec.root();
  root.check_keys({"format", "format_version", "Arch", "image_shape", "feature_normalize", "feature_binarize",
                   "transform_ops", "device", "onnx", "onnx_opset", "onnx_input", "onnx_input_shape", "onnx_output",
                   "onnx_output_shape"});
  // The ONNX keys describe model.onnx for other runtimes (docs/file-formats.md); featlearn runs the LibTorch
  // weights, so it only checks that the file they name is there.
  if (root.has("onnx")) {
    const auto onnx_file = root.require<std::string>("onnx");
    if (!fs::exists(fs::path(dir) / onnx_file))
      root["onnx"].fail(onnx_file + " is missing from " + dir + " (re-run featlearn export)");
    root.require<int64_t>("onnx_opset");
  }
  if (root.get<std::string>("format", "") != "featlearn.inference") root.fail("not a featlearn inference spec");
  const auto version = root.require<int64_t>("format_version");
  if (version < 1 || version > kInferenceFormatVersion)
    root["format_version"].fail(fmt::format("inference format version {} is not supported (this featlearn reads 1..{})",
                                            version, kInferenceFormatVersion));
  const auto shape = root["image_shape"].defined() ? root["image_shape"].as<std::vector<int64_t>>()
                                                   : std::vector<int64_t>{};
  m.model = RecModel(root["Arch"], shape);
  load_checkpoint((fs::path(dir) / "inference").string(), *m.model, nullptr, nullptr);
  // The device: the caller's choice, else the one the model was exported for (inference.yaml `device`).
  const std::string dev = !device.empty() ? device : root.get<std::string>("device", "cpu");
  if (dev != "cpu" && dev != "gpu") root["device"].fail("expected cpu or gpu, got '" + dev + "'");
  m.device = resolve_device(dev, root["device"]);
  m.model->to(m.device);
  m.model->eval();
  m.output_key = m.model->infer_output_key();
  m.add_softmax = m.model->infer_add_softmax();
  m.feature_normalize = root.get<bool>("feature_normalize", true);
  m.feature_binarize = root.get<std::string>("feature_binarize", "");
  return m;
}

torch::Tensor InferenceModel::outputs(const torch::Tensor& images) const {
  auto out = model.ptr()->forward(images).get(output_key).flatten(1).to(torch::kFloat32);
  if (add_softmax) out = torch::softmax(out, 1);
  if (output_key != "logits") out = postprocess_features(out, feature_normalize, feature_binarize);
  return out;
}

torch::Tensor InferenceModel::embed(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  if (auto out = embed_with_cpu_graph(images)) return *out;
  return outputs(images.to(device)).to(torch::kCPU);
}

namespace {
// extract's --list: one image per line, `path [label [camid]]` separated by whitespace (a bare path list is an
// unlabeled gallery). Empty lines are skipped. Every line must have the same number of fields.
struct ExtractList {
  std::vector<ListDataset::Item> items;
  std::vector<std::string> rel_paths;
  bool labels = false, camids = false;
};
ExtractList read_extract_list(const ExtractArgs& args) {
  std::ifstream in(args.list);
  if (!in) throw Error(fmt::format("extract --list {}: cannot open the file", args.list));
  ExtractList out;
  size_t fields_per_line = 0;
  int64_t first_line = 0;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream ss(line);
    std::vector<std::string> f;
    for (std::string w; ss >> w;) f.push_back(w);
    if (f.empty()) continue;
    const std::string where = fmt::format("extract --list {}:{}", args.list, n);
    if (f.size() > 3) throw Error(fmt::format("{}: expected `path [label [camid]]`, got {} fields", where, f.size()));
    if (fields_per_line == 0) {
      fields_per_line = f.size();
      first_line = n;
    } else if (f.size() != fields_per_line) {
      throw Error(fmt::format("{}: {} field(s), but line {} has {}: give every line the same columns "
                              "(`path`, `path label` or `path label camid`)", where, f.size(), first_line, fields_per_line));
    }
    auto integer = [&](const std::string& v, const char* what) {
      try {
        size_t used = 0;
        const long long x = std::stoll(v, &used);
        if (used == v.size()) return static_cast<int64_t>(x);
      } catch (const std::exception&) {
      }
      throw Error(fmt::format("{}: the {} '{}' is not an integer (`path [label [camid]]`; paths with spaces are not "
                              "supported)", where, what, v));
    };
    ListDataset::Item it;
    it.path = join_image_path(args.image_root, f[0]);
    it.label = f.size() >= 2 ? integer(f[1], "label") : -1;
    it.camid = f.size() >= 3 ? integer(f[2], "camera id") : -1;
    it.source = where.substr(std::string("extract --list ").size());
    out.items.push_back(std::move(it));
    out.rel_paths.push_back(f[0]);
  }
  if (out.items.empty()) throw Error(fmt::format("extract --list {}: no images listed", args.list));
  out.labels = fields_per_line >= 2;
  out.camids = fields_per_line >= 3;
  return out;
}
}  // namespace

int cmd_extract(const ExtractArgs& args) {
  if (!args.device.empty() && args.device != "cpu" && args.device != "gpu")
    throw Error("extract --device: expected cpu or gpu, got '" + args.device + "'");
  if (args.device == "gpu" && !torch::cuda::is_available())
    throw Error("extract --device gpu: LibTorch sees no CUDA device (use --device cpu)");
  if (args.batch_size <= 0) throw Error("extract --batch-size must be positive");
  if (args.workers < 0) throw Error("extract --workers must be >= 0");
  if (!fs::is_directory(args.image_root))
    throw Error(fmt::format("extract --image-root {}: not a directory", args.image_root));
  auto m = InferenceModel::load(args.model_dir, args.device);
  ExtractList list = read_extract_list(args);
  auto dataset = std::make_shared<ListDataset>(list.items, list.camids);
  for (const auto& it : list.items)
    if (!fs::is_regular_file(it.path))
      throw Error(fmt::format("{}: image '{}' does not exist (paths are relative to --image-root {})", it.source,
                              it.path, args.image_root));
  auto pipeline = std::make_shared<TransformPipeline>(
      TransformPipeline::create(m.spec.root()["transform_ops"], /*pil_input=*/false));
  YAML::Node sampler;
  sampler["name"] = "DistributedBatchSampler";
  sampler["batch_size"] = args.batch_size;
  sampler["drop_last"] = false;
  sampler["shuffle"] = false;
  Config sc = Config::from_string(YAML::Dump(sampler), "<extract --batch-size>");
  std::shared_ptr<const BatchSampler> batches(create_sampler(sc.root(), *dataset, ShardInfo{}).release());
  LoaderOptions opt;
  opt.num_workers = args.workers;
  DataLoader loader(dataset, pipeline, batches, opt, LoaderContext{});
  loader.start_epoch(0);
  std::vector<torch::Tensor> feats, indices;
  // Steady-state throughput: from the end of the first batch (model warm-up, the CPU graph's trace) to the end.
  std::chrono::steady_clock::time_point after_first;
  int64_t after_first_images = 0, done = 0;
  const int64_t total = static_cast<int64_t>(list.items.size());
  while (auto b = loader.next()) {
    feats.push_back(m.embed(b->images));
    indices.push_back(b->indices);
    done += b->images.size(0);
    if (feats.size() == 1) after_first = std::chrono::steady_clock::now();
    else after_first_images += b->images.size(0);
    if (isatty(fileno(stderr))) fmt::print(stderr, "\rextract: {}/{} images", done, total);
  }
  if (isatty(fileno(stderr))) fmt::print(stderr, "\n");
  if (after_first_images > 0) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - after_first).count();
    fmt::print("Extraction after the first batch: {} images in {:.3f} s ({:.1f} images/s)\n", after_first_images, s,
               after_first_images / s);
  }
  auto f = torch::cat(feats);
  const auto order = torch::cat(indices);
  save_npy(args.out, f);
  // Side files next to the features: <stem>_meta.jsonl (one row per feature row), and the label / camera arrays.
  const fs::path lp(args.out);
  const auto side = [&](const std::string& suffix) { return (lp.parent_path() / (lp.stem().string() + suffix)).string(); };
  std::string meta;
  const int64_t* idx = order.data_ptr<int64_t>();
  std::vector<int64_t> labels, camids;
  for (int64_t r = 0; r < order.size(0); ++r) {
    const auto& it = list.items[static_cast<size_t>(idx[r])];
    nlohmann::json j;
    j["path"] = list.rel_paths[static_cast<size_t>(idx[r])];
    j["label"] = list.labels ? nlohmann::json(it.label) : nlohmann::json();
    j["camid"] = list.camids ? nlohmann::json(it.camid) : nlohmann::json();
    meta += j.dump() + "\n";
    labels.push_back(it.label);
    camids.push_back(it.camid);
  }
  write_file_atomic(side("_meta.jsonl"), meta);
  std::string extra;
  if (list.labels) {
    save_npy(side("_labels.npy"), torch::tensor(labels, torch::kInt64));
    extra += ", " + side("_labels.npy");
  }
  if (list.camids) {
    save_npy(side("_camids.npy"), torch::tensor(camids, torch::kInt64));
    extra += ", " + side("_camids.npy");
  }
  const std::string form = !m.feature_binarize.empty()
                               ? fmt::format("binarized ({}) after L2 normalization", m.feature_binarize)
                               : m.output_key == "logits" ? (m.add_softmax ? "softmax probabilities" : "logits")
                               : m.feature_normalize ? "L2-normalized (cosine similarity = dot product)"
                                                     : "not normalized (feature_normalize: False)";
  fmt::print("Wrote {} features of dimension {} to {}: {}. Rows: {}{}\n", f.size(0), f.size(1), args.out, form,
             side("_meta.jsonl"), extra);
  return 0;
}

}  // namespace featlearn
