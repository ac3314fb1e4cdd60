// c10d collectives of 2 processes on 127.0.0.1 (docs/distributed.md): each case starts tests/dist/tools/
// dist_worker twice with the torchrun environment; the worker compares with a 1-process reference itself.
#include "process_util.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace featlearn::test;

namespace {

// Runs `dist_worker <scenario>` as ranks 0 and 1; returns both logs after checking both exited 0.
std::vector<std::string> run_pair(const std::string& scenario) {
  const auto dir = fs::temp_directory_path() / ("featlearn_dist_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const int port = free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < 2; ++r) {
    logs.push_back((dir / (scenario + "_" + std::to_string(r) + ".log")).string());
    pids.push_back(spawn({FEATLEARN_DIST_WORKER, scenario}, rank_env(r, 2, port), logs.back()));
  }
  std::vector<std::string> out;
  for (int r = 0; r < 2; ++r) {
    const int rc = wait_for(pids[static_cast<size_t>(r)], 120);
    out.push_back(read_text(logs[static_cast<size_t>(r)]));
    EXPECT_EQ(rc, 0) << "rank " << r << ":\n" << out.back();
  }
  return out;
}

}  // namespace

// One step's gradients averaged over 2 processes (half the batch each, SyncBN) equal the 1-process gradients
// of the whole batch (plain BatchNorm) within 1e-5, and so do the BatchNorm running statistics.
TEST(Collectives, AveragedGradientsWithSyncBnEqualOneProcessOfTheWholeBatch) {
  for (const auto& log : run_pair("grads")) {
    EXPECT_NE(log.find("OK gradients"), std::string::npos) << log;
    EXPECT_NE(log.find("OK overlapped gradients"), std::string::npos) << log;
    EXPECT_NE(log.find("OK running statistics"), std::string::npos) << log;
  }
}

TEST(Collectives, AllGatherRowsKeepsRankOrderWithUnequalCounts) {
  for (const auto& log : run_pair("collectives")) {
    EXPECT_NE(log.find("OK all_gather_rows: 3 rows"), std::string::npos) << log;
    EXPECT_NE(log.find("OK all_reduce_sum"), std::string::npos) << log;
  }
}
