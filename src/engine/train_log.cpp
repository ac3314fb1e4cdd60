#include "train_log.h"

#include <featlearn/report/event_writer.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace featlearn {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

TrainLog::TrainLog(const GlobalConfig& g, const std::string& metrics_path) : g_(g), tty_(isatty(STDOUT_FILENO)) {
  if (!metrics_path.empty()) file_.open(metrics_path, std::ios::app);
}

TrainLog::~TrainLog() = default;

void TrainLog::enable_tensorboard(const std::string& dir) { tb_ = std::make_unique<EventWriter>(dir); }

void TrainLog::record(const nlohmann::json& j) {
  if (!file_.is_open()) return;
  file_ << j.dump() << "\n";
  file_.flush();
}

void TrainLog::plan(int64_t first_epoch, int64_t last_epoch, int64_t iters_per_epoch) {
  first_epoch_ = first_epoch;
  last_epoch_ = last_epoch;
  iters_ = iters_per_epoch;
  run_start_ = Clock::now();
}

void TrainLog::begin_epoch(int64_t epoch) {
  epoch_ = epoch;
  it_ = epoch_images_ = window_images_ = window_steps_ = 0;
  window_seconds_ = window_reader_ = total_sum_ = 0;
  sums_.clear();
  epoch_start_ = tick_ = Clock::now();
}

void TrainLog::step(double lr, const std::vector<std::pair<std::string, double>>& terms, double total,
                    int64_t images, double compute_seconds) {
  ++it_;
  const auto now = Clock::now();
  compute_seconds_ += compute_seconds;
  epoch_images_ += images;
  images_done_ += images;
  window_images_ += images;
  const double step_seconds = std::chrono::duration<double>(now - tick_).count();
  window_seconds_ += step_seconds;
  // PaddleClas's reader_cost: the part of the step spent waiting for the batch (the rest is compute).
  window_reader_ += std::max(0.0, step_seconds - compute_seconds);
  ++window_steps_;
  tick_ = now;
  const bool print = it_ % g_.print_batch_step == 0 || it_ == iters_;
  if (tb_) {
    const int64_t global_step = (epoch_ - 1) * iters_ + it_;
    tb_->scalar("train/loss", total, global_step);
    for (const auto& t : terms) tb_->scalar("train/" + t.first, t.second, global_step);
    tb_->scalar("train/lr", lr, global_step);
    if (step_seconds > 0) tb_->scalar("train/ips", images / step_seconds, global_step);
    if (print) tb_->flush();
  }
  if (sums_.empty())
    for (const auto& t : terms) sums_.emplace_back(t.first, 0.0);
  for (size_t k = 0; k < terms.size() && k < sums_.size(); ++k) sums_[k].second += terms[k].second;
  total_sum_ += total;

  if (quiet_ || (!print && !tty_)) return;
  const double ips = window_seconds_ > 0 ? window_images_ / window_seconds_ : 0.0;
  const double elapsed = std::chrono::duration<double>(now - run_start_).count();
  const int64_t done = (epoch_ - first_epoch_) * iters_ + it_;
  const int64_t left = (last_epoch_ - first_epoch_ + 1) * iters_ - done;
  const double eta = done > 0 ? elapsed / done * left : -1;
  std::string line = fmt::format("[Train][Epoch {}/{}][Iter {}/{}] lr: {:.5f}", epoch_, g_.epochs, it_, iters_, lr);
  for (const auto& t : terms) line += fmt::format(", {}: {:.5f}", t.first, t.second);
  const double steps = static_cast<double>(std::max<int64_t>(window_steps_, 1));
  const double batch_cost = window_seconds_ / steps, reader_cost = window_reader_ / steps;
  line += fmt::format(", loss: {:.5f}, batch_cost: {:.4f} s, reader_cost: {:.4f} s, ips: {:.1f} images/s, eta: {}",
                      total, batch_cost, reader_cost, ips, format_duration(eta));
  if (tty_) {
    fmt::print("\r{:<140}", line);
    if (print) fmt::print("\n");
  } else {
    fmt::print("{}\n", line);
  }
  std::fflush(stdout);
  if (!print) return;
  nlohmann::json j = {{"phase", "train"}, {"epoch", epoch_}, {"iter", it_}, {"global_step", (epoch_ - 1) * iters_ + it_},
                      {"lr", lr}, {"loss", total}, {"ips", ips}, {"batch_cost", batch_cost},
                      {"reader_cost", reader_cost}};
  for (const auto& t : terms) j[t.first] = t.second;
  record(j);
  window_images_ = window_steps_ = 0;
  window_seconds_ = window_reader_ = 0;
}

void TrainLog::end_epoch() {
  const double secs = std::chrono::duration<double>(Clock::now() - epoch_start_).count();
  const double n = static_cast<double>(std::max<int64_t>(it_, 1));
  const double ips = epoch_images_ / std::max(secs, 1e-9);
  std::string summary = fmt::format("[Train][Epoch {}/{}][Avg]", epoch_, g_.epochs);
  for (const auto& kv : sums_) summary += fmt::format(" {}: {:.5f},", kv.first, kv.second / n);
  summary += fmt::format(" loss: {:.5f}, {:.1f} images/s, epoch time {}", total_sum_ / n, ips, format_duration(secs));
  if (!quiet_) fmt::print("{}\n", summary);
  std::fflush(stdout);
  nlohmann::json j = {{"phase", "train_epoch"}, {"epoch", epoch_}, {"loss", total_sum_ / n}, {"ips", ips},
                      {"seconds", secs}};
  for (const auto& kv : sums_) j[kv.first] = kv.second / n;
  record(j);
  if (tb_) {
    const int64_t global_step = epoch_ * iters_;
    tb_->scalar("epoch/loss", total_sum_ / n, global_step);
    for (const auto& kv : sums_) tb_->scalar("epoch/" + kv.first, kv.second / n, global_step);
    tb_->scalar("epoch/ips", ips, global_step);
    tb_->flush();
  }
}

void TrainLog::eval(int64_t epoch, const MetricValues& values, double seconds, const std::string& label) {
  std::string line = label.empty() ? fmt::format("[Eval][Epoch {}]", epoch) : fmt::format("[Eval][{}]", label);
  for (const auto& kv : values) line += fmt::format(" {}: {:.5f},", kv.first, kv.second);
  if (!quiet_) fmt::print("{} time {:.1f}s\n", line, seconds);
  std::fflush(stdout);
  nlohmann::json j = {{"phase", "eval"}, {"epoch", epoch}, {"seconds", seconds}};
  for (const auto& kv : values) j[kv.first] = kv.second;
  record(j);
  if (tb_) {
    // On the training curves' axis: the global step at the end of the evaluated epoch.
    for (const auto& kv : values) tb_->scalar("eval/" + kv.first, kv.second, epoch * iters_);
    tb_->flush();
  }
}

void TrainLog::done() const {
  if (images_done_ == 0 || quiet_) return;
  const double wall = std::chrono::duration<double>(Clock::now() - run_start_).count();
  fmt::print("[Train] done: {} images in {}: {:.1f} images/s end to end ({:.1f} images/s in model compute)\n",
             images_done_, format_duration(wall), images_done_ / std::max(wall, 1e-9),
             images_done_ / std::max(compute_seconds_, 1e-9));
}

}  // namespace featlearn
