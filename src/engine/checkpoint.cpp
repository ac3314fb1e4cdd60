#include <featlearn/common/atomic_file.h>
#include <featlearn/engine/checkpoint.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/storage_context.h>
#include <featlearn/common/error.h>
#include <featlearn/engine/checksum.h>
#include <featlearn/model/arch.h>
#include <featlearn/model/stop_layer.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <sstream>

namespace featlearn {

namespace fs = std::filesystem;

std::string checkpoint_path(const std::string& prefix) {
  const std::string ext = ".ckpt";
  if (prefix.size() >= ext.size() && prefix.compare(prefix.size() - ext.size(), ext.size(), ext) == 0) return prefix;
  return prefix + ext;
}

namespace {
// Every record written, with the checksum of its content; stored as the `checksums` JSON record.
struct Writer {
  torch::serialize::OutputArchive ar;
  nlohmann::json sums = nlohmann::json::object();
  void tensor(const std::string& key, const torch::Tensor& t, bool is_buffer) {
    auto c = t.detach().cpu();
    ar.write(key, c, is_buffer);
    sums[key] = tensor_checksum(c);
  }
  void text(const std::string& key, const std::string& s) {
    ar.write(key, c10::IValue(s));
    sums[key] = hex64(checksum64(s.data(), s.size()));
  }
  void module(const std::string& group, const torch::nn::Module& m) {
    for (const auto& p : m.named_parameters(true)) tensor(group + "." + p.key(), p.value(), false);
    for (const auto& b : m.named_buffers(true)) tensor(group + "." + b.key(), b.value(), true);
  }
};

// LibTorch's archive reader takes a tensor's sizes, strides and offset from the file without checking them
// against its storage, and every later use of such a tensor reads out of bounds: each tensor of an archive
// (and of its sub-archives and containers) is checked before anything reads one.
bool fits_storage(const torch::Tensor& t) {
  if (!t.defined() || t.numel() == 0 || !t.has_storage()) return true;
  int64_t last = t.storage_offset(), bytes = 0;
  if (last < 0) return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t span = 0;
    if (t.stride(d) < 0 || __builtin_mul_overflow(t.size(d) - 1, t.stride(d), &span) ||
        __builtin_add_overflow(last, span, &last))
      return false;
  }
  if (__builtin_mul_overflow(last + 1, static_cast<int64_t>(t.element_size()), &bytes)) return false;
  return static_cast<size_t>(bytes) <= t.storage().nbytes();
}

void check_value(const c10::IValue& v, const std::string& file, const std::string& key, int depth) {
  if (depth > 64) throw Error(file + ": damaged checkpoint: '" + key + "' nests too deeply");
  if (v.isTensor()) {
    if (!fits_storage(v.toTensor()))
      throw Error(file + ": damaged checkpoint: tensor '" + key + "' does not fit its data");
  } else if (v.isList()) {
    for (const auto& x : v.toListRef()) check_value(x, file, key, depth + 1);
  } else if (v.isTuple()) {
    for (const auto& x : v.toTupleRef().elements()) check_value(x, file, key, depth + 1);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) check_value(kv.value(), file, key, depth + 1);
  } else if (v.isObject()) {
    for (const auto& x : v.toObjectRef().slots()) check_value(x, file, key, depth + 1);
  }
}

// A tensor's storage is sized by the element count its pickle declares, while its bytes are the zip record of
// that storage, which can be shorter in a damaged file: fits_storage alone would pass a view past the record.
// So each archive of the file (`data`, `constants`) is unpickled once with every storage taken from its record
// at the record's real size, and each tensor is checked against that.
// The TorchScript source LibTorch's archive carries (code/__torch__.py) is parsed by load_from, and LibTorch's
// parser can crash on damaged source (found by the ckpt fuzz target). A featlearn checkpoint's source is the
// one class LibTorch writes for an archive: its parameter and buffer lists and attribute annotations. Any
// other line, or any other source record, makes the file refused before LibTorch parses it.
void check_code_records(const std::string& path) {
  static const std::regex line(
      R"(class Module\(Module\):|  __(parameters|buffers)__ = \[[^\]\n]*\]|)"
      R"(  __annotations__\["[^"\\\n]*"\] = Tensor|  [A-Za-z_][A-Za-z0-9_]* : [A-Za-z_][A-Za-z0-9_\[\], ]*|)");
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const auto& name : reader.getAllRecords()) {
      if (name.rfind("code/", 0) != 0) continue;
      if (name == "code/__torch__.py.debug_pkl") continue;  // read only when a script fails, never run
      if (name != "code/__torch__.py")
        throw Error(path + ": not a featlearn checkpoint (unexpected TorchScript record '" + name + "')");
      auto rec = reader.getRecord(name);
      const std::string text(static_cast<const char*>(std::get<0>(rec).get()), std::get<1>(rec));
      std::istringstream in(text);
      int n = 0;
      for (std::string l; std::getline(in, l);)
        if (!std::regex_match(l, line))
          throw Error(fmt::format("{}: damaged checkpoint: line {} of its code/__torch__.py record is not what "
                                  "featlearn writes", path, n + 1));
        else
          ++n;
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
    throw Error(path + ": not a readable featlearn checkpoint (corrupt or foreign file)");
  }
}

void check_records(caffe2::serialize::PyTorchStreamReader& reader, const std::string& file) {
  const auto records = reader.getAllRecords();
  for (const std::string archive : {"data", "constants"}) {
    if (!reader.hasRecord(archive + ".pkl")) continue;
    auto storages = std::make_shared<torch::jit::DeserializationStorageContext>();
    const std::string prefix = archive + "/";
    for (const auto& name : records) {
      if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) continue;
      auto rec = reader.getRecord(name);
      storages->addStorage(name.substr(prefix.size()),
                           c10::Storage(c10::Storage::use_byte_size_t(), std::get<1>(rec), std::move(std::get<0>(rec)),
                                        /*allocator=*/nullptr, /*resizable=*/false));
    }
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    auto resolve = [cu](const c10::QualifiedName& name) {
      auto cls = cu->get_class(name);
      if (!cls) {
        cls = c10::ClassType::create(name, cu);
        cu->register_type(cls);
      }
      return c10::StrongTypePtr(cu, cls);
    };
    // Each object keeps its pickled state in one slot: only the tensors in it matter here.
    auto state_only = [](const c10::StrongTypePtr& type, c10::IValue state) {
      auto obj = c10::ivalue::Object::create(type, 1);
      obj->setSlot(0, std::move(state));
      return obj;
    };
    const c10::IValue v = torch::jit::readArchiveAndTensors(archive, "", "", resolve, state_only, c10::Device(c10::kCPU),
                                                            reader, torch::jit::Unpickler::defaultTypeParser, storages);
    check_value(v, file, archive, 0);
  }
}

void check_tensors(torch::serialize::InputArchive& ar, const std::string& file, const std::string& prefix = "",
                   int depth = 0) {
  if (depth > 16) throw Error(file + ": damaged checkpoint: archives nest too deeply");
  for (const auto& key : ar.keys()) {
    torch::serialize::InputArchive sub;
    c10::IValue v;
    if (ar.try_read(key, v) && !v.isObject()) check_value(v, file, prefix + key, 0);
    else if (ar.try_read(key, sub)) check_tensors(sub, file, prefix + key + ".", depth + 1);
  }
}

// Reads records and checks each against the recorded checksum (format version >= 2).
struct Reader {
  torch::serialize::InputArchive ar;
  std::string file;
  nlohmann::json sums;  // null for version 1 files (no checksums)
  void verify(const std::string& key, const std::string& actual) const {
    if (sums.is_null()) return;
    const auto it = sums.find(key);
    if (it == sums.end() || !it->is_string() || it->get<std::string>() != actual)
      throw Error(file + ": '" + key + "' is corrupt (its checksum does not match the one recorded when the file "
                  "was written): the file was damaged after it was saved; use another checkpoint");
  }
  bool tensor(const std::string& key, torch::Tensor& out, bool is_buffer) {
    if (!ar.try_read(key, out, is_buffer)) return false;
    // The read tensor takes sizes and strides from the file (see fits_storage): check again before any use.
    if (!fits_storage(out)) throw Error(file + ": damaged checkpoint: tensor '" + key + "' does not fit its data");
    verify(key, tensor_checksum(out));
    return true;
  }
  std::string text(const std::string& key) {
    c10::IValue v;
    if (!ar.try_read(key, v) || !v.isString()) throw Error(file + ": damaged checkpoint: no '" + key + "' record");
    const std::string s = v.toStringRef();
    verify(key, hex64(checksum64(s.data(), s.size())));
    return s;
  }
  void module(const std::string& group, torch::nn::Module& m) {
    torch::NoGradGuard no_grad;
    auto restore = [&](const std::string& name, torch::Tensor& dst, bool is_buffer) {
      torch::Tensor src;
      if (!tensor(group + "." + name, src, is_buffer))
        throw Error(file + ": has no tensor '" + group + "." + name +
                    "' (the checkpoint was written for a different model/loss configuration)");
      if (src.sizes() != dst.sizes())
        throw Error(file + ": shape mismatch for '" + group + "." + name + "': checkpoint " +
                    c10::str(src.sizes()) + " vs model " + c10::str(dst.sizes()) +
                    " (check Arch / Loss settings such as class_num and embedding_size)");
      dst.copy_(src.to(dst.device(), dst.scalar_type()));
    };
    for (auto& p : m.named_parameters(true)) restore(p.key(), p.value(), false);
    for (auto& b : m.named_buffers(true)) restore(b.key(), b.value(), true);
  }
};

int64_t cuda_devices() { return torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0; }
}  // namespace

void save_checkpoint(const std::string& prefix, const torch::nn::Module& model, const torch::nn::Module* loss,
                     const std::function<void(torch::serialize::OutputArchive&)>& save_optimizer,
                     const CheckpointMeta& meta) {
  const std::string path = checkpoint_path(prefix);
  fs::create_directories(fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path());
  Writer w;
  w.ar.write("format", c10::IValue(std::string("featlearn.checkpoint")));
  w.ar.write("format_version", c10::IValue(kCheckpointVersion));
  w.module("model", model);
  if (loss) w.module("loss", *loss);
  if (save_optimizer) {
    // The optimizer state is one serialized archive stored as bytes, so one checksum covers all of it.
    torch::serialize::OutputArchive opt;
    save_optimizer(opt);
    std::string bytes;
    opt.save_to([&](const void* data, size_t n) {
      bytes.append(static_cast<const char*>(data), n);
      return n;
    });
    w.tensor("optimizer_state",
             torch::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, torch::kUInt8).clone(), true);
  }
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    w.tensor("rng_state", gen.get_state(), true);
  }
  for (size_t r = 0; r < meta.rank_rng_states.size(); ++r)
    w.tensor("rng_state.rank" + std::to_string(r + 1), meta.rank_rng_states[r], true);
  const int64_t ndev = cuda_devices();
  for (int64_t d = 0; d < ndev; ++d) {
    auto gen = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    w.tensor("cuda_rng_state." + std::to_string(d), gen.get_state(), true);
  }
  nlohmann::json j = {{"epoch", meta.epoch},           {"iteration", meta.iteration},
                      {"best_metric", meta.best_metric}, {"best_epoch", meta.best_epoch},
                      {"metric_name", meta.metric_name}, {"eval_pending", meta.eval_pending},
                      {"cuda_devices", ndev},         {"world_size", meta.world_size}};
  w.text("meta", j.dump());
  w.text("config", meta.config_yaml);
  w.ar.write("checksums", c10::IValue(w.sums.dump()));
  const std::string tmp = path + ".tmp";
  w.ar.save_to(tmp);
  rename_into_place(tmp, path);
}

std::string paddle_checkpoint_file(const std::string& prefix) {
  const std::string ext = ".pdparams";
  if (prefix.size() >= ext.size() && prefix.compare(prefix.size() - ext.size(), ext.size(), ext) == 0) return prefix;
  if (!fs::exists(checkpoint_path(prefix)) && fs::exists(prefix + ext)) return prefix + ext;
  return "";
}

std::string checkpoint_config(const std::string& prefix) {
  if (!paddle_checkpoint_file(prefix).empty()) return "";
  const std::string path = checkpoint_path(prefix);
  if (!fs::exists(path)) return "";
  try {
    check_code_records(path);
    Reader r;
    r.file = path;
    r.ar.load_from(path);
    c10::IValue sums;
    if (r.ar.try_read("checksums", sums) && sums.isString()) r.sums = nlohmann::json::parse(sums.toStringRef());
    return r.text("config");
  } catch (const std::exception&) {
    return "";  // load_checkpoint reports what is wrong with the file
  }
}

LoadedCheckpoint load_checkpoint(const std::string& prefix, torch::nn::Module& model, torch::nn::Module* loss,
                                 const std::function<void(torch::serialize::InputArchive&)>& load_optimizer,
                                 int rank) {
  if (const std::string pd = paddle_checkpoint_file(prefix); !pd.empty()) {
    if (load_optimizer)
      throw Error(pd + ": a PaddleClas checkpoint: featlearn reads its model weights (.pdparams) but not Paddle's "
                  "optimizer state (.pdopt), so it cannot resume from it; load the weights with "
                  "Global.pretrained_model=" + prefix + " and start a new run (Global.checkpoints=null)");
    if (!fs::exists(pd)) throw Error(pd + ": weights file not found");
    auto* arch = dynamic_cast<ArchModelImpl*>(&model);
    load_module_weights(model, pd, pd, arch ? arch->arch_name() : std::string("the model"), "");
    LoadedCheckpoint out;
    out.path = pd;
    return out;
  }
  const std::string path = checkpoint_path(prefix);
  if (!fs::exists(path)) throw Error(path + ": checkpoint not found (pass the prefix, e.g. output/RecModel/latest)");
  check_code_records(path);
  Reader r;
  r.file = path;
  try {
    r.ar.load_from(path);
  } catch (const std::exception& e) {  // c10::Error, and TorchScript's errors for damaged code records
    throw Error(path + ": not a readable featlearn checkpoint (corrupt or foreign file)");
  }
  LoadedCheckpoint out;
  out.path = path;
  try {
    {
      caffe2::serialize::PyTorchStreamReader reader(path);
      check_records(reader, path);
    }
    check_tensors(r.ar, path);
    c10::IValue format, version;
    if (!r.ar.try_read("format", format) || !format.isString() || format.toStringRef() != "featlearn.checkpoint")
      throw Error(path + ": not a featlearn checkpoint (no format header)");
    r.ar.read("format_version", version);
    if (!version.isInt() || version.toInt() < 1 || version.toInt() > kCheckpointVersion)
      throw Error(path + ": checkpoint format version " + (version.isInt() ? std::to_string(version.toInt()) : "?") +
                  " is not supported by this featlearn (supports 1.." + std::to_string(kCheckpointVersion) + ")");
    const int64_t v = version.toInt();
    if (v >= 2) {
      c10::IValue sums;
      if (!r.ar.try_read("checksums", sums) || !sums.isString())
        throw Error(path + ": damaged checkpoint: no 'checksums' record");
      r.sums = nlohmann::json::parse(sums.toStringRef());
      if (!r.sums.is_object()) throw Error(path + ": damaged checkpoint: 'checksums' is not a map");
    }
    r.module("model", model);
    if (loss) r.module("loss", *loss);
    const auto j = nlohmann::json::parse(r.text("meta"));
    out.meta.epoch = j.at("epoch");
    out.meta.iteration = j.at("iteration");
    out.meta.best_metric = j.at("best_metric");
    out.meta.best_epoch = j.at("best_epoch");
    out.meta.metric_name = j.at("metric_name");
    out.meta.eval_pending = j.value("eval_pending", false);
    out.meta.world_size = j.value("world_size", static_cast<int64_t>(1));
    out.meta.config_yaml = r.text("config");
    if (load_optimizer) {
      torch::serialize::InputArchive opt;
      if (v >= 2) {
        torch::Tensor bytes;
        if (!r.tensor("optimizer_state", bytes, true))
          throw Error(path + ": has no optimizer state (cannot resume from it)");
        bytes = bytes.contiguous();
        {
          std::istringstream blob(std::string(static_cast<const char*>(bytes.data_ptr()),
                                              static_cast<size_t>(bytes.numel())));
          caffe2::serialize::PyTorchStreamReader reader(&blob);
          check_records(reader, path + " (optimizer state)");
        }
        opt.load_from(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
      } else if (!r.ar.try_read("optimizer", opt)) {
        throw Error(path + ": has no optimizer state (cannot resume from it)");
      }
      check_tensors(opt, path, "optimizer.");
      load_optimizer(opt);
      out.has_optimizer = true;
      torch::Tensor rng;
      const std::string rng_key = rank == 0 ? "rng_state" : "rng_state.rank" + std::to_string(rank);
      if (r.tensor(rng_key, rng, true)) {
        auto gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng);
        out.rng_restored = true;
      }
      // CUDA generators: restored for the devices both runs have; a different count is reported.
      const int64_t saved = j.value("cuda_devices", static_cast<int64_t>(0)), now = cuda_devices();
      for (int64_t d = 0; d < std::min(saved, now); ++d) {
        torch::Tensor state;
        if (!r.tensor("cuda_rng_state." + std::to_string(d), state, true))
          throw Error(path + ": damaged checkpoint: no 'cuda_rng_state." + std::to_string(d) + "' record");
        auto gen = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d)));
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(state);
      }
      if (saved != now)
        fmt::print(stderr,
                   "warning: {} was written with {} CUDA device(s) and this run has {}: random streams on the "
                   "devices not in both runs start fresh, so the resumed run is not bit-identical\n",
                   path, saved, now);
    }
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(path + ": damaged checkpoint: " + e.what_without_backtrace());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": damaged checkpoint metadata: " + e.what());
  } catch (const std::exception& e) {  // TorchScript's errors for a damaged optimizer archive
    std::string msg = e.what();
    throw Error(path + ": damaged checkpoint: " + msg.substr(0, msg.find('\n')));
  }
  return out;
}

}  // namespace featlearn
