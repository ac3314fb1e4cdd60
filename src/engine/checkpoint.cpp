#include <featlearn/common/atomic_file.h>
#include <featlearn/engine/checkpoint.h>

#include <ATen/CPUGeneratorImpl.h>
#include <featlearn/common/error.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

namespace featlearn {

namespace fs = std::filesystem;

std::string checkpoint_path(const std::string& prefix) {
  const std::string ext = ".ckpt";
  if (prefix.size() >= ext.size() && prefix.compare(prefix.size() - ext.size(), ext.size(), ext) == 0) return prefix;
  return prefix + ext;
}

namespace {
void write_tensors(torch::serialize::OutputArchive& ar, const std::string& group, const torch::nn::Module& m) {
  for (const auto& p : m.named_parameters(true)) ar.write(group + "." + p.key(), p.value().detach().cpu());
  for (const auto& b : m.named_buffers(true)) ar.write(group + "." + b.key(), b.value().detach().cpu(), true);
}

void read_tensors(torch::serialize::InputArchive& ar, const std::string& group, torch::nn::Module& m,
                  const std::string& file) {
  torch::NoGradGuard no_grad;
  auto restore = [&](const std::string& name, torch::Tensor& dst, bool is_buffer) {
    torch::Tensor src;
    if (!ar.try_read(group + "." + name, src, is_buffer))
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
}  // namespace

void save_checkpoint(const std::string& prefix, const torch::nn::Module& model, const torch::nn::Module* loss,
                     const std::function<void(torch::serialize::OutputArchive&)>& save_optimizer,
                     const CheckpointMeta& meta) {
  const std::string path = checkpoint_path(prefix);
  fs::create_directories(fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path());
  torch::serialize::OutputArchive ar;
  ar.write("format", c10::IValue(std::string("featlearn.checkpoint")));
  ar.write("format_version", c10::IValue(kCheckpointVersion));
  write_tensors(ar, "model", model);
  if (loss) write_tensors(ar, "loss", *loss);
  if (save_optimizer) {
    torch::serialize::OutputArchive opt;
    save_optimizer(opt);
    ar.write("optimizer", opt);
  }
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    ar.write("rng_state", gen.get_state(), true);
  }
  nlohmann::json j = {{"epoch", meta.epoch},           {"iteration", meta.iteration},
                      {"best_metric", meta.best_metric}, {"best_epoch", meta.best_epoch},
                      {"metric_name", meta.metric_name}};
  ar.write("meta", c10::IValue(j.dump()));
  ar.write("config", c10::IValue(meta.config_yaml));
  const std::string tmp = path + ".tmp";
  ar.save_to(tmp);
  rename_into_place(tmp, path);
}

LoadedCheckpoint load_checkpoint(const std::string& prefix, torch::nn::Module& model, torch::nn::Module* loss,
                                 const std::function<void(torch::serialize::InputArchive&)>& load_optimizer) {
  const std::string path = checkpoint_path(prefix);
  if (!fs::exists(path)) throw Error(path + ": checkpoint not found (pass the prefix, e.g. output/RecModel/latest)");
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
  } catch (const std::exception& e) {  // c10::Error, and TorchScript's errors for damaged code records
    throw Error(path + ": not a readable featlearn checkpoint (corrupt or foreign file)");
  }
  LoadedCheckpoint out;
  try {
    c10::IValue format, version, meta, config;
    if (!ar.try_read("format", format) || !format.isString() || format.toStringRef() != "featlearn.checkpoint")
      throw Error(path + ": not a featlearn checkpoint (no format header)");
    ar.read("format_version", version);
    if (!version.isInt() || version.toInt() < 1 || version.toInt() > kCheckpointVersion)
      throw Error(path + ": checkpoint format version " + (version.isInt() ? std::to_string(version.toInt()) : "?") +
                  " is not supported by this featlearn (supports 1.." + std::to_string(kCheckpointVersion) + ")");
    read_tensors(ar, "model", model, path);
    if (loss) read_tensors(ar, "loss", *loss, path);
    ar.read("meta", meta);
    ar.read("config", config);
    const auto j = nlohmann::json::parse(meta.toStringRef());
    out.meta.epoch = j.at("epoch");
    out.meta.iteration = j.at("iteration");
    out.meta.best_metric = j.at("best_metric");
    out.meta.best_epoch = j.at("best_epoch");
    out.meta.metric_name = j.at("metric_name");
    out.meta.config_yaml = config.toStringRef();
    if (load_optimizer) {
      torch::serialize::InputArchive opt;
      if (!ar.try_read("optimizer", opt)) throw Error(path + ": has no optimizer state (cannot resume from it)");
      load_optimizer(opt);
      out.has_optimizer = true;
      torch::Tensor rng;
      if (ar.try_read("rng_state", rng, true)) {
        auto gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng);
      }
    }
  } catch (const c10::Error& e) {
    throw Error(path + ": damaged checkpoint: " + e.what_without_backtrace());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": damaged checkpoint metadata: " + e.what());
  }
  return out;
}

}  // namespace featlearn
