// What a training run prints and appends to output_dir/metrics.jsonl (docs/architecture.md, "Training and
// evaluation"): per-step progress lines (with ips and eta), per-epoch averages, evaluation results and the
// run-start record. Kept out of Trainer::train so the loop shows only the training itself.
#pragma once
#include <featlearn/engine/global_config.h>
#include <featlearn/metric/retrieval.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace featlearn {

class EventWriter;

class TrainLog {
 public:
  using Clock = std::chrono::steady_clock;
  // `metrics_path` empty: nothing is appended to a file (evaluation-only runs).
  TrainLog(const GlobalConfig& g, const std::string& metrics_path);
  ~TrainLog();

  // Also writes every step's loss terms, total loss, lr and images/s, each epoch's averages and every
  // evaluation's metrics as TensorBoard scalars into `dir` (docs/report.md, "Training curves").
  void enable_tensorboard(const std::string& dir);

  void record(const nlohmann::json& j);
  // Nothing printed (the other ranks of a multi-process run: rank 0 reports).
  void set_quiet(bool quiet) { quiet_ = quiet; }
  // Sets the span of the run for the eta (epochs first_epoch..last_epoch of iters_per_epoch batches).
  void plan(int64_t first_epoch, int64_t last_epoch, int64_t iters_per_epoch);
  void begin_epoch(int64_t epoch);
  // After each optimizer step: the loss terms and total of that batch, its images and its compute time.
  void step(double lr, const std::vector<std::pair<std::string, double>>& terms, double total, int64_t images,
            double compute_seconds);
  void end_epoch();
  // `label` (e.g. the checkpoint an evaluation-only run read) replaces "Epoch N" in the printed line.
  void eval(int64_t epoch, const MetricValues& values, double seconds, const std::string& label = "");
  // Prints the end-to-end throughput of the run.
  void done() const;

 private:
  const GlobalConfig& g_;
  std::ofstream file_;
  std::unique_ptr<EventWriter> tb_;
  bool tty_ = false, quiet_ = false;
  int64_t first_epoch_ = 1, last_epoch_ = 1, iters_ = 1;
  Clock::time_point run_start_ = Clock::now();
  int64_t images_done_ = 0;
  double compute_seconds_ = 0;
  // The epoch in progress.
  int64_t epoch_ = 0, it_ = 0, epoch_images_ = 0, window_images_ = 0, window_steps_ = 0;
  Clock::time_point epoch_start_, tick_;
  double window_seconds_ = 0, window_reader_ = 0, total_sum_ = 0;  // the print window's step and wait times
  std::vector<std::pair<std::string, double>> sums_;
};

std::string format_duration(double seconds);

}  // namespace featlearn
