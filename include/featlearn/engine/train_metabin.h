// The MetaBIN training loop (Global.train_mode: metabin; PaddleClas's train_metabin; docs/architecture.md,
// "MetaBIN"). The Trainer builds the model, Loss.Train, DataLoader.Train and the optimizers as for any run and
// hands each iteration to MetaBinLoop::step(); evaluation, logging and checkpoints stay the Trainer's.
//
// One iteration:
//   warmup      on the run's very first iteration only: Global.warmup_iter − 1 basic updates first, each on
//               a fresh DataLoader.Train batch (the schedules do not move).
//   basic       phase general (batch norms update their running statistics), Loss.Basic, step optimizer 0,
//               clip every gate to [0, 1], clear optimizer 0's gradients (the gates keep theirs).
//   meta split  a DataLoader.Metalearning.Train batch is split by camera: a permutation of the meta set's
//               distinct cameras is drawn, its first ⌊D/2⌋ cameras are the meta-train domains, the others
//               meta-test. When either part is empty the meta loader starts its next epoch and the split is
//               drawn again, once (as PaddleClas; a second failure is an error).
//   meta-train  phase hold (batch statistics, running statistics untouched), Loss.MetaTrain, clear optimizer
//               1 (the gates), backward without a step: the gates now hold the meta-train gradient.
//   meta-test   phase hold with the virtual gate step (model/metabin.h) at lr_gate = lr(optimizer 1) ·
//               lr(optimizer 2), Loss.MetaTest; clear optimizer 1, backward, step optimizer 1 only, clip the
//               gates, clear optimizers 0 and 1. Optimizer 2 only provides its schedule (PaddleClas's Cyclic).
//   then every schedule advances one iteration.
// Loss terms are logged as train_<term>, mtrain_<term>, mtest_<term>; the logged total is the basic loss.
//
// Config (besides the usual sections): Global.warmup_iter (required, >= 1), Loss.Basic, Loss.MetaTrain,
// Loss.MetaTest (required; losses without parameters), DataLoader.Metalearning.Train (required), exactly three
// optimizers, Arch a RecModel with a MetaBIN backbone and a MetaBNNeck. Loss.Train is built and checked as in
// PaddleClas, and not used by the loop.
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/loader.h>
#include <featlearn/loss/loss.h>
#include <featlearn/model/arch.h>
#include <featlearn/model/metabin.h>
#include <featlearn/optim/optimizer.h>

#include <torch/serialize/archive.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

// True when the config's Global.train_mode is metabin.
bool is_metabin_run(const ConfigNode& root);

// The optimizer whose schedule gives the gate step's second factor (OptimizerSet::create's schedule_only).
constexpr size_t kMetaBinCyclicOptimizer = 2;

// The meta-train domains of split number `draw`: the first ⌊D/2⌋ of a permutation of `domains` (the distinct
// cameras) drawn from (seed, draw).
std::vector<int64_t> meta_train_domains(const std::vector<int64_t>& domains, uint64_t seed, int64_t draw);

// (meta-train part, meta-test part) of `batch`: the samples whose camera is in `mtrain_domains`, and the others,
// each in batch order; nullopt when either part is empty.
std::optional<std::pair<Batch, Batch>> split_meta_batch(const Batch& batch, const std::vector<int64_t>& mtrain_domains);

class MetaBinLoop {
 public:
  // `root`: the config root; `train_loader`: DataLoader.Train (read from its stream position, see position()).
  // Builds Loss.Basic / MetaTrain / MetaTest and DataLoader.Metalearning.Train and checks model and optimizers;
  // throws ConfigError naming the key.
  MetaBinLoop(const ConfigNode& root, ArchModelImpl& model, OptimizerSet& optimizer, DataLoader& train_loader,
              const LoaderContext& ctx, torch::Device device);
  ~MetaBinLoop();

  struct StepResult {
    std::vector<std::pair<std::string, double>> terms;  // train_*, mtrain_*, mtest_* (unweighted terms)
    double total = 0;                                   // the basic loss
    int64_t images = 0;                                 // of the basic batch
    double lr = 0;                                      // optimizer 0's lr of this iteration
  };
  // One iteration (with the warmup when it is the run's first), then OptimizerSet::advance().
  StepResult step();

  // The phases (step() runs them; public for tests). The batches are moved to the device.
  CombinedLossImpl::Result basic_update(const Batch& batch);
  std::pair<CombinedLossImpl::Result, CombinedLossImpl::Result> meta_update(const Batch& mtrain, const Batch& mtest);
  // The meta-test phase: hold, inside update, lr_gate = lr(optimizer 1) · lr(optimizer 2) at this iteration.
  MetaBinOpt meta_test_opt() const;

  // Where the loop stands; saved in checkpoints so that a resumed run continues exactly.
  struct Position {
    int64_t train_batches = 0;  // DataLoader.Train batches consumed (its stream of epochs)
    int64_t meta_batches = 0;   // DataLoader.Metalearning.Train batches consumed
    int64_t splits = 0;         // meta splits drawn
    bool warmup_done = false;
  };
  const Position& position() const { return pos_; }
  // Into / from the optimizer's archive (key "metabin_state"); load() refuses a checkpoint without it.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  Batch next_train();
  std::pair<Batch, Batch> next_meta();
  void set_phase(const MetaBinOpt& opt);
  void clip_gates();
  CombinedLossImpl::Result run_loss(CombinedLoss& loss, const Batch& batch);

  ArchModelImpl& model_;
  OptimizerSet& optimizer_;
  DataLoader& train_loader_;
  std::unique_ptr<DataLoader> meta_loader_;
  torch::Device device_;
  uint64_t seed_ = 0;
  int64_t warmup_iter_ = 1;
  CombinedLoss basic_{nullptr}, mtrain_{nullptr}, mtest_{nullptr};
  std::vector<MetaLearnable*> meta_modules_;
  std::vector<BINGateImpl*> gates_;
  std::vector<int64_t> domains_;  // distinct cameras of the meta set, sorted
  Position pos_;
  bool train_started_ = false, meta_started_ = false;  // the loaders are positioned at pos_
};

}  // namespace featlearn
