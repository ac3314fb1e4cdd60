#include <featlearn/engine/train_metabin.h>

#include <featlearn/common/error.h>
#include <featlearn/data/rng.h>
#include <featlearn/loss/metabin_losses.h>
#include <featlearn/model/rec_model.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <set>

namespace featlearn {

namespace {
constexpr int64_t kStateVersion = 1;
constexpr size_t kBasicOptimizer = 0, kGateOptimizer = 1;

Batch select(const Batch& b, const torch::Tensor& mask) {
  const auto idx = mask.nonzero().flatten();
  Batch out;
  out.images = b.images.index_select(0, idx);
  out.labels = b.labels.index_select(0, idx);
  out.camids = b.camids.index_select(0, idx);
  out.indices = b.indices.defined() ? b.indices.index_select(0, idx) : b.indices;
  return out;
}

// A MetaBIN loss section (Loss.Basic, ...): required, and without parameters (PaddleClas builds these losses
// anew at every update, so parameters could never be learned; docs/paddleclas-differences.md).
CombinedLoss loss_section(const ConfigNode& loss, const std::string& key, const ArchModelImpl& model) {
  if (!loss[key].defined())
    loss.fail("train_mode metabin needs Loss." + key + " (the losses of its " +
              (key == "Basic" ? "basic" : key == "MetaTrain" ? "meta-train" : "meta-test") + " update)");
  CombinedLoss l(loss[key]);
  l->check_models(model.model_names());
  if (!l->parameters().empty())
    loss[key].fail("a loss with parameters cannot be used with train_mode metabin (PaddleClas rebuilds the MetaBIN "
                   "losses at every update, so their parameters would never be trained)");
  return l;
}
}  // namespace

bool is_metabin_run(const ConfigNode& root) {
  const auto mode = root["Global"]["train_mode"];
  return mode.defined() && mode.as<std::string>() == "metabin";
}

std::vector<int64_t> meta_train_domains(const std::vector<int64_t>& domains, uint64_t seed, int64_t draw) {
  std::vector<int64_t> perm = domains;
  Rng rng(mix_seed({seed, static_cast<uint64_t>(draw), 0x4D42u}));
  rng.shuffle(perm);
  perm.resize(domains.size() / 2);
  return perm;
}

std::optional<std::pair<Batch, Batch>> split_meta_batch(const Batch& batch,
                                                        const std::vector<int64_t>& mtrain_domains) {
  auto in_mtrain = torch::zeros_like(batch.camids, torch::kBool);
  for (int64_t d : mtrain_domains) in_mtrain |= batch.camids == d;
  const int64_t n_mtrain = in_mtrain.sum().item<int64_t>();
  if (n_mtrain == 0 || n_mtrain == batch.camids.numel()) return std::nullopt;
  return std::make_pair(select(batch, in_mtrain), select(batch, in_mtrain.logical_not()));
}

MetaBinLoop::MetaBinLoop(const ConfigNode& root, ArchModelImpl& model, OptimizerSet& optimizer,
                         DataLoader& train_loader, const LoaderContext& ctx, torch::Device device)
    : model_(model), optimizer_(optimizer), train_loader_(train_loader), device_(device), seed_(ctx.seed) {
  const auto global = root["Global"];
  if (!global["warmup_iter"].defined())
    global.fail("train_mode metabin needs warmup_iter (basic updates on the first iteration, e.g. 10)");
  warmup_iter_ = global.require<int64_t>("warmup_iter");
  if (warmup_iter_ < 1) global["warmup_iter"].fail("must be >= 1 (1: no extra warmup updates)");

  // The model: a RecModel whose backbone has MetaBIN layers and whose neck is a MetaBNNeck (PaddleClas sets the
  // phase on both).
  auto* rec = dynamic_cast<RecModelImpl*>(&model);
  if (!rec) root["Arch"].fail("train_mode metabin trains a RecModel (with a MetaBIN backbone and a MetaBNNeck)");
  gates_ = bin_gates(*rec->backbone());
  if (gates_.empty())
    root["Arch"]["Backbone"].fail("train_mode metabin needs a backbone with MetaBIN layers (ResNet50_metabin)");
  if (!rec->neck() || !dynamic_cast<MetaLearnable*>(rec->neck().get()))
    root["Arch"].fail("train_mode metabin needs Arch.Neck: MetaBNNeck (its batch norm follows the MetaBIN phase)");
  meta_modules_ = meta_learnable_modules(model);

  if (optimizer.size() != 3)
    root["Optimizer"].fail(fmt::format(
        "train_mode metabin needs three optimizers (the model without the gates, the gates, and the schedule "
        "that scales the gates' inner step), got {}",
        optimizer.size()));

  const auto loss = root["Loss"];
  basic_ = loss_section(loss, "Basic", model);
  mtrain_ = loss_section(loss, "MetaTrain", model);
  mtest_ = loss_section(loss, "MetaTest", model);
  for (auto* l : {&basic_, &mtrain_, &mtest_}) (*l)->to(device_);

  const auto meta = root["DataLoader"]["Metalearning"];
  if (!meta.defined()) root["DataLoader"].fail("train_mode metabin needs DataLoader.Metalearning.Train");
  meta.check_keys({"Train"});
  if (!meta["Train"].defined()) meta.fail("missing Train (the meta-learning loader)");
  meta_loader_ = DataLoader::create(meta["Train"], ctx);
  if (meta_loader_->batches_per_epoch() <= 0)
    meta["Train"].fail("yields no batch per epoch (fewer images than batch_size with drop_last?)");
  const Dataset& ds = meta_loader_->dataset();
  if (!ds.has_camids())
    meta["Train"]["dataset"].fail("the meta-learning set needs camera ids (its domains)");
  std::set<int64_t> cams;
  for (size_t i = 0; i < ds.size(); ++i) cams.insert(ds.camid(i));
  domains_.assign(cams.begin(), cams.end());
  if (domains_.size() < 2)
    meta["Train"]["dataset"].fail(fmt::format(
        "train_mode metabin splits the meta batches by camera and needs at least 2 cameras, the set has {}",
        domains_.size()));
}

MetaBinLoop::~MetaBinLoop() = default;

Batch MetaBinLoop::next_train() {
  const int64_t len = train_loader_.batches_per_epoch();
  if (!train_started_ || pos_.train_batches % len == 0) {
    train_loader_.start_epoch(pos_.train_batches / len, pos_.train_batches % len);
    train_started_ = true;
  }
  auto b = train_loader_.next();
  FL_ASSERT(b, "the training loader ended before batches_per_epoch batches");
  ++pos_.train_batches;
  return std::move(*b);
}

std::pair<Batch, Batch> MetaBinLoop::next_meta() {
  const int64_t len = meta_loader_->batches_per_epoch();
  for (int attempt = 0;; ++attempt) {
    if (!meta_started_ || pos_.meta_batches % len == 0) {
      meta_loader_->start_epoch(pos_.meta_batches / len, pos_.meta_batches % len);
      meta_started_ = true;
    }
    auto b = meta_loader_->next();
    FL_ASSERT(b, "the meta-learning loader ended before batches_per_epoch batches");
    const int64_t at = pos_.meta_batches++;
    auto split = split_meta_batch(*b, meta_train_domains(domains_, seed_, pos_.splits++));
    if (split) return std::move(*split);
    if (attempt == 1)
      throw Error(fmt::format("train_mode metabin: two meta-learning batches in a row hold only meta-train or only "
                              "meta-test cameras (batch {} of the DataLoader.Metalearning.Train stream); its sampler "
                              "should put several cameras in every batch (DomainShuffleBatchSampler)",
                              at));
    // As PaddleClas: a fresh epoch of the meta loader, and the split drawn again.
    pos_.meta_batches = (at / len + 1) * len;
  }
}

void MetaBinLoop::set_phase(const MetaBinOpt& opt) {
  for (auto* m : meta_modules_) m->setup_opt(opt);
}

void MetaBinLoop::clip_gates() {
  for (auto* g : gates_) g->clip_gate();
}

MetaBinOpt MetaBinLoop::meta_test_opt() const {
  const auto lrs = optimizer_.current_lrs();
  MetaBinOpt opt;
  opt.bn_mode = MetaBinOpt::BnMode::kHold;
  opt.enable_inside_update = true;
  opt.lr_gate = lrs[kGateOptimizer] * lrs[kMetaBinCyclicOptimizer];
  return opt;
}

CombinedLossImpl::Result MetaBinLoop::run_loss(CombinedLoss& loss, const Batch& batch) {
  const auto labels = batch.labels.to(device_);
  set_metabin_domains(*loss, batch.camids.to(device_));
  const auto out = model_.forward(batch.images.to(device_), labels);
  return loss->forward(out, labels);
}

CombinedLossImpl::Result MetaBinLoop::basic_update(const Batch& batch) {
  set_phase(MetaBinOpt());  // general
  auto res = run_loss(basic_, batch);
  optimizer_.zero_grad_of(kBasicOptimizer);
  res.total.backward();
  optimizer_.step_of(kBasicOptimizer);
  clip_gates();
  optimizer_.zero_grad_of(kBasicOptimizer);
  for (auto* m : meta_modules_) m->reset_opt();
  return res;
}

std::pair<CombinedLossImpl::Result, CombinedLossImpl::Result> MetaBinLoop::meta_update(const Batch& mtrain,
                                                                                       const Batch& mtest) {
  MetaBinOpt hold;
  hold.bn_mode = MetaBinOpt::BnMode::kHold;
  set_phase(hold);
  auto train_res = run_loss(mtrain_, mtrain);
  optimizer_.zero_grad_of(kGateOptimizer);
  train_res.total.backward();  // the gates' meta-train gradient, read by the virtual step below

  set_phase(meta_test_opt());
  auto test_res = run_loss(mtest_, mtest);
  optimizer_.zero_grad_of(kGateOptimizer);
  test_res.total.backward();
  optimizer_.step_of(kGateOptimizer);
  clip_gates();
  optimizer_.zero_grad_of(kBasicOptimizer);
  optimizer_.zero_grad_of(kGateOptimizer);
  for (auto* m : meta_modules_) m->reset_opt();
  return {std::move(train_res), std::move(test_res)};
}

MetaBinLoop::StepResult MetaBinLoop::step() {
  Batch train = next_train();
  auto [mtrain, mtest] = next_meta();
  if (!pos_.warmup_done) {
    // The run's first iteration: the model (without the gates) is warmed up on warmup_iter − 1 more batches.
    for (int64_t i = 0; i + 1 < warmup_iter_; ++i) {
      basic_update(train);
      train = next_train();
    }
    pos_.warmup_done = true;
  }
  StepResult r;
  r.lr = optimizer_.current_lrs()[kBasicOptimizer];
  r.images = train.images.size(0);
  const auto basic = basic_update(train);
  const auto [meta_train, meta_test] = meta_update(mtrain, mtest);
  optimizer_.advance();
  for (const auto& [prefix, res] : {std::pair<const char*, const CombinedLossImpl::Result*>{"train_", &basic},
                                    {"mtrain_", &meta_train},
                                    {"mtest_", &meta_test}}) {
    for (const auto& t : res->terms) r.terms.emplace_back(prefix + t.first, t.second.item<double>());
    r.terms.emplace_back(std::string(prefix) + "loss", res->total.item<double>());
  }
  r.total = basic.total.item<double>();
  return r;
}

void MetaBinLoop::save(torch::serialize::OutputArchive& archive) const {
  archive.write("metabin_state", torch::tensor({kStateVersion, pos_.train_batches, pos_.meta_batches, pos_.splits,
                                                static_cast<int64_t>(pos_.warmup_done)},
                                               torch::kInt64));
}

void MetaBinLoop::load(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (!archive.try_read("metabin_state", t))
    throw Error("the checkpoint was not written by a train_mode: metabin run (it has no MetaBIN loop state); "
                "start a fresh run or load it as Global.pretrained_model");
  if (t.dim() != 1 || t.numel() < 1 || t.scalar_type() != torch::kInt64)
    throw Error("the checkpoint's MetaBIN loop state is damaged");
  const int64_t version = t[0].item<int64_t>();
  if (version != kStateVersion || t.numel() != 5)
    throw Error(fmt::format("the checkpoint's MetaBIN loop state has version {}; this featlearn reads version {}",
                            version, kStateVersion));
  const auto v = t.accessor<int64_t, 1>();
  if (v[1] < 0 || v[2] < 0 || v[3] < 0 || (v[4] != 0 && v[4] != 1))
    throw Error("the checkpoint's MetaBIN loop state is damaged");
  pos_.train_batches = v[1];
  pos_.meta_batches = v[2];
  pos_.splits = v[3];
  pos_.warmup_done = v[4] == 1;
  train_started_ = meta_started_ = false;
}

}  // namespace featlearn
