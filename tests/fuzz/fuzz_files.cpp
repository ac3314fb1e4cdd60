// Targets `ckpt`, `pth`, `pdparams` and `npy`: the binary files featlearn reads (docs/testing.md).
//   ckpt  a .ckpt checkpoint, loaded as `featlearn train` resumes (model + CenterLoss + optimizer state + RNG
//         state, engine/checkpoint.h) and as Global.pretrained_model loads (model only).
//   pth   a torch.save'd state dict (io/state_dict.h: zip or legacy pickle).
//   pdparams  a paddle.save'd state dict (io/pdparams.h: a pickle of numpy arrays).
//   npy   a .npy array (io/npy.h).
// The input is the file itself. Seeds: FEATLEARN_FUZZ_WRITE_SEEDS (fuzz_main.cpp) for ckpt and npy,
// tests/fuzz/make_pth_seeds.py for pth.
#include "fuzz_common.h"

#include <featlearn/config/config.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/io/npy.h>
#include <featlearn/io/pdparams.h>
#include <featlearn/io/state_dict.h>
#include <featlearn/loss/loss.h>
#include <featlearn/optim/optimizer.h>

#include <torch/torch.h>

#include <cstring>
#include <memory>

namespace featlearn::fuzz {
namespace files_target {

// A small stand-in for RecModel: parameters and buffers (BatchNorm running stats), as a checkpoint holds them.
struct TinyModelImpl : torch::nn::Module {
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  TinyModelImpl() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    bn = register_module("bn", torch::nn::BatchNorm1d(2));
  }
};
TORCH_MODULE(TinyModel);

struct Resumable {
  TinyModel model;
  CombinedLoss loss{nullptr};
  std::unique_ptr<OptimizerSet> optimizer;
};
std::unique_ptr<Resumable> g_run;

const char* const kLossYaml = "Train:\n  - CenterLoss: {weight: 1.0, num_classes: 4, feat_dim: 3}\n";
const char* const kOptimizerYaml =
    "Optimizer:\n"
    "  - Momentum: {scope: RecModel, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.1}}\n"
    "  - Adam: {scope: CenterLoss, lr: {learning_rate: 0.01}}\n";

std::unique_ptr<Resumable> make_run() {
  auto r = std::make_unique<Resumable>();
  r->loss = CombinedLoss(Config::from_string(kLossYaml, "loss.yaml")["Train"]);
  ParameterScopes scopes;
  scopes.emplace_back("RecModel", named_parameters_of(*r->model));
  scopes.emplace_back("CenterLoss", named_parameters_of(*r->loss->loss("CenterLoss")));
  r->optimizer = OptimizerSet::create(Config::from_string(kOptimizerYaml, "optimizer.yaml")["Optimizer"], scopes, 2, 3);
  return r;
}

void touch(const torch::Tensor& t) {
  // A copy in instrumented code: ASan checks every byte of the returned tensor.
  if (!t.defined() || !t.is_contiguous()) finding("reader", "a non-contiguous or undefined tensor", "");
  std::vector<char> copy(t.numel() * t.element_size());
  if (!copy.empty()) std::memcpy(copy.data(), t.data_ptr(), copy.size());
}

}  // namespace files_target

void ckpt_init() { files_target::g_run = files_target::make_run(); }

void ckpt_run(const uint8_t* data, size_t size) {
  using namespace files_target;
  reset_scratch();
  const std::string path = scratch_dir() + "/fuzz.ckpt";
  write_file(path, data, size);
  auto& r = *g_run;
  expect_user_errors("load_checkpoint (resume)", [&] {
    load_checkpoint(path, *r.model, r.loss.ptr().get(),
                    [&](torch::serialize::InputArchive& ar) { r.optimizer->load(ar); });
  });
  expect_user_errors("load_checkpoint (pretrained_model)", [&] { load_checkpoint(path, *r.model, nullptr, nullptr); });
}

void ckpt_write_seeds(const std::string& dir) {
  using namespace files_target;
  auto r = make_run();
  // One training step, so the optimizer state holds momentum buffers and Adam moments.
  auto x = torch::randn({4, 3});
  auto labels = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  auto f = r->model->bn(r->model->fc(x));
  ModelOutput out;
  out.features = out.backbone = x;
  auto loss = f.pow(2).sum() + r->loss->loss("CenterLoss")->forward(out, labels);
  r->optimizer->zero_grad();
  loss.backward();
  r->optimizer->step();
  CheckpointMeta meta;
  meta.epoch = 1;
  meta.iteration = 1;
  meta.metric_name = "recall1";
  meta.config_yaml = "Global: {epochs: 3}\n";
  save_checkpoint(dir + "/resume.ckpt", *r->model, r->loss.ptr().get(),
                  [&](torch::serialize::OutputArchive& ar) { r->optimizer->save(ar); }, meta);
  save_checkpoint(dir + "/weights_only.ckpt", *r->model, nullptr, nullptr, meta);
}

void pth_init() {}

void pth_run(const uint8_t* data, size_t size) {
  using namespace files_target;
  reset_scratch();
  const std::string path = scratch_dir() + "/fuzz.pth";
  write_file(path, data, size);
  expect_user_errors("load_torch_state_dict", [&] {
    for (const auto& kv : load_torch_state_dict(path)) touch(kv.second);
  });
}

void pdparams_init() {}

void pdparams_run(const uint8_t* data, size_t size) {
  using namespace files_target;
  reset_scratch();
  const std::string path = scratch_dir() + "/fuzz.pdparams";
  write_file(path, data, size);
  expect_user_errors("load_pdparams", [&] {
    for (const auto& kv : load_pdparams(path)) touch(kv.second);
  });
}

void npy_init() {}

void npy_run(const uint8_t* data, size_t size) {
  using namespace files_target;
  reset_scratch();
  const std::string path = scratch_dir() + "/fuzz.npy";
  write_file(path, data, size);
  expect_user_errors("load_npy", [&] { touch(load_npy(path)); });
}

void npy_write_seeds(const std::string& dir) {
  save_npy(dir + "/features_f4.npy", torch::arange(12, torch::kFloat32).reshape({3, 4}));
  save_npy(dir + "/labels_i8.npy", torch::arange(5, torch::kInt64));
  save_npy(dir + "/scalar_f4.npy", torch::tensor(1.5f));
  save_npy(dir + "/empty_f4.npy", torch::zeros({0, 4}));
}

}  // namespace featlearn::fuzz
