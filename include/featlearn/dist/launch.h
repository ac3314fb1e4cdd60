// `featlearn launch`: the local multi-process launcher of distributed training (docs/distributed.md,
// "Launching"). Starts nproc_per_node workers, each running this featlearn program with the worker command
// and the torchrun environment, relays their output line by line with a rank prefix, stops them all when one
// fails (fail-fast), restarts them from the latest checkpoint up to max_restarts times and forwards Ctrl-C /
// SIGTERM.
#pragma once
#include <string>
#include <vector>

namespace featlearn {

struct LaunchArgs {
  int nnodes = 1;                          // --nnodes: launch invocations (machines) in the run, >= 1
  int node_rank = 0;                       // --node-rank: this invocation's index, 0 <= node_rank < nnodes
  std::string master_addr = "127.0.0.1";   // --master-addr: host of rank 0 (the rendezvous store)
  int master_port = 29500;                 // --master-port: 1..65535
  int nproc_per_node = 1;                  // --nproc-per-node: workers started here, >= 1
  int max_restarts = 0;                    // --max-restarts: restarts of all workers after a failure, >= 0
  double stop_grace_s = 10;                // --stop-grace-s: SIGTERM/SIGINT -> SIGKILL delay when stopping workers
  // The featlearn subcommand and its arguments (everything after `--`): train, eval, describe or bench-data.
  std::vector<std::string> command;
  // Arguments CLI11 did not recognise before `--` (reported as an error naming them).
  std::vector<std::string> unexpected;
};

// The subcommands a worker may run. train and eval are the distributed ones; describe and bench-data only
// read, so K copies are harmless (and show what each rank sees). Commands that write one shared output
// (export, extract, index, prepare-emoji), bind a port (serve) or recurse (launch) are refused.
const std::vector<std::string>& launch_worker_commands();

// Throws featlearn::Error naming the option for an invalid value (K >= 1, N >= 1, 0 <= R < N, port range,
// a worker command from launch_worker_commands(), nothing unrecognised before `--`).
void validate(const LaunchArgs& args);

// Runs the workers to completion. Returns 0 when every worker exited 0; the failing worker's exit status
// (128 + signal number when it was killed) when one failed and no restart was left; 130 / 143 after the
// launcher received SIGINT / SIGTERM. Throws featlearn::Error for invalid arguments (validate) and when a
// worker cannot be started.
int cmd_launch(const LaunchArgs& args);

// Splits argv at the first "--" when the subcommand (argv[1]) is `launch`: returns the arguments after it and
// sets argc to the position of the "--" (the launcher's own options stay for CLI11). Other subcommands: {}.
std::vector<std::string> take_launch_command(int& argc, char** argv);

// LibTorch intra-op threads for this process: OMP_NUM_THREADS when it is a positive integer, else the cores
// divided by LOCAL_WORLD_SIZE (1 without it), at least 1. `featlearn launch` sets OMP_NUM_THREADS to
// threads_per_worker(K) unless the user has set it.
int threads_per_process();
// max(1, cores / nproc).
int threads_per_worker(int nproc);

}  // namespace featlearn
