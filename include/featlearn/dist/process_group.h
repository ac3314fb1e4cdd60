// Multi-process training on LibTorch's c10d (docs/distributed.md): the torchrun environment, one process
// group per run (Gloo for CPU tensors, NCCL for CUDA ones where LibTorch has it), and the collectives the
// trainer uses — parameter broadcast, bucketed gradient averaging, all-gather of evaluation rows, SyncBN
// statistics. A run without WORLD_SIZE (or with WORLD_SIZE=1) has no group and every call is a no-op.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace featlearn {

// The torchrun environment variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT). Absent variables mean a 1-process run.
struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Throws featlearn::Error naming the variable for a malformed or inconsistent value.
  static DistEnv from_environment();
};

class ProcessGroup {
 public:
  // The run's group; rank 0 hosts the TCPStore rendezvous at master_addr:master_port. `timeout` bounds the
  // rendezvous and every collective (Global.dist_timeout): a rank that died or hangs makes the others fail
  // with an error naming the operation instead of waiting forever. `cuda` selects NCCL (error when this
  // LibTorch has none).
  ProcessGroup(const DistEnv& env, std::chrono::milliseconds timeout, bool cuda);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const std::string& backend() const { return backend_; }

  // In place, over all ranks.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // The same, started and not waited for: wait() on the result before reading the tensor. Collectives must be
  // started in the same order on every rank.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(std::vector<torch::Tensor>& tensors);
  void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
  // Rows of `local` ([n_r, ...], n_r may differ per rank) from every rank, concatenated in rank order.
  torch::Tensor all_gather_rows(const torch::Tensor& local);
  void barrier();

 private:
  DistEnv env_;
  std::string backend_;
  std::chrono::milliseconds timeout_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The process's group while a distributed run is active (null otherwise); set by DistributedRun.
ProcessGroup* current_process_group();

// Owns the group for the lifetime of a run and makes it current.
class DistributedRun {
 public:
  // No group (and nothing to do) when env.world_size == 1.
  DistributedRun(const DistEnv& env, std::chrono::milliseconds timeout, bool cuda);
  ~DistributedRun();
  ProcessGroup* group() { return group_.get(); }

 private:
  std::unique_ptr<ProcessGroup> group_;
};

// Parameters and buffers of `module` set to rank 0's (at start and after a resume).
void broadcast_module(ProcessGroup& pg, torch::nn::Module& module);
// Gradient averaging overlapped with the backward pass, as DistributedDataParallel does (docs/distributed.md,
// "What each step does"): the parameters are split into buckets of about `bucket_bytes` in reverse order (the
// order backward produces their gradients); a hook on each parameter copies its gradient into its bucket, and a
// full bucket's all-reduce starts while backward goes on. finish() after backward() starts the buckets not yet
// complete (parameters without a gradient in this step count as zeros), waits for all of them and writes the
// averaged gradients into .grad.
class GradientReducer {
 public:
  GradientReducer(ProcessGroup& pg, std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  // After backward(): returns the seconds spent waiting for communication still running.
  double finish();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Sum over ranks that gradients flow through (its backward is again a sum over ranks): SyncBatchNorm's
// batch statistics. Identity without a current group.
torch::Tensor differentiable_all_reduce_sum(const torch::Tensor& x);

}  // namespace featlearn
