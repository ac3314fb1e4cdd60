// kill -9 at random moments of create / add / remove / snapshot (tests/index/tools/crash_writer.cpp), many
// times: the index always opens, FAISS and the database agree, and the item count is the one before or after
// the operation in flight (applied whole or not at all), with every stored vector intact.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <featlearn/index/gallery_index.h>

#include "tools/crash_vectors.h"
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn;


namespace {

// Runs the writer for `ms` milliseconds, kills it with SIGKILL and returns what it printed.
std::string run_and_kill(const std::string& dir, const std::string& method, uint64_t seed, int ms) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    const std::string s = std::to_string(seed);
    execl(FEATLEARN_CRASH_WRITER, FEATLEARN_CRASH_WRITER, dir.c_str(), method.c_str(), s.c_str(), nullptr);
    _exit(127);
  }
  close(fds[1]);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  kill(pid, SIGKILL);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << out;
  return out;
}

}  // namespace

TEST(CrashSafety, KillNineAtRandomPointsNeverBreaksTheIndex) {
  std::mt19937 rng(2024);
  int kills = 0, mid_operation = 0;
  for (const std::string method : {"Flat", "HNSW32", "IVF"}) {
    const fs::path dir = fs::temp_directory_path() / ("featlearn_crash_" + method);
    fs::remove_all(dir);
    for (int round = 0; round < 14; ++round) {
      const int ms = round == 0 ? 150 : static_cast<int>(20 + rng() % 400);
      const std::string out = run_and_kill(dir.string(), method, rng(), ms);
      ++kills;
      // The count before the operation in flight and the count it would leave.
      int64_t before = -1, after = -1;
      bool in_flight = false;
      std::istringstream in(out);
      std::string word;
      int64_t value = 0;
      while (in >> word >> value) {
        if (word == "start" || word == "ack") {
          before = value;
          in_flight = false;
        } else if (word == "begin") {
          after = value;
          in_flight = true;
        }
      }
      if (before < 0 && !in_flight) continue;  // killed before it did anything
      mid_operation += in_flight;
      SCOPED_TRACE(method + " round " + std::to_string(round) + " output:\n" + out);
      std::unique_ptr<GalleryIndex> idx;
      try {
        idx = GalleryIndex::open(dir.string(), true);  // the dead writer's lock is gone
      } catch (const Error& e) {
        // Killed inside the very first build, before it committed: no index yet, said as such (before the
        // database file was made: "no gallery.db"; after: "first build was interrupted"); the next round's
        // writer builds it again.
        const std::string msg = e.what();
        ASSERT_TRUE(msg.find("first build was interrupted") != std::string::npos ||
                    msg.find("no gallery.db") != std::string::npos)
            << msg;
        ASSERT_TRUE(in_flight && before == 0) << e.what();
        continue;
      }
      const auto info = idx->info();
      ASSERT_TRUE(info.consistent) << info.problem;
      const int64_t n = idx->size();
      if (in_flight)
        EXPECT_TRUE(n == before || n == after) << n << " items; before " << before << ", after " << after;
      else
        EXPECT_EQ(n, before);
      for (const auto id : idx->ids()) {
        const auto meta = idx->get(id);
        ASSERT_TRUE(meta.has_value());
        EXPECT_EQ(idx->vector(id), vector_for_key(std::stoll(meta->path.substr(1)))) << meta->path;
      }
      // Every stored vector is found by search (the FAISS side holds it).
      SearchOptions opt;
      opt.top_k = 1;
      opt.ef_search = 64;
      opt.nprobe = 4;
      const auto ids = idx->ids();
      for (size_t i = 0; i < ids.size(); i += 7) {
        const auto v = idx->vector(ids[i]);
        const auto hits = idx->search(v.data(), 1, opt)[0];
        ASSERT_EQ(hits.size(), 1u);
        if (method == "Flat") EXPECT_EQ(hits[0].id, ids[i]);
      }
    }
  }
  EXPECT_GE(kills, 40);
  std::cout << kills << " kills, " << mid_operation << " in the middle of an operation\n";
}

// What a first build killed before its commit leaves (a database file without tables): open() says so, and a
// new build over it succeeds.
TEST(CrashSafety, InterruptedFirstBuildIsReportedAndRebuilt) {
  const fs::path dir = fs::temp_directory_path() / ("featlearn_crash_first_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "gallery.db").close();  // an empty SQLite database, as the killed build's open made it
  try {
    GalleryIndex::open(dir.string(), true);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("first build was interrupted before it committed"), std::string::npos)
        << e.what();
  }
  IndexSpec spec;
  spec.index_method = "Flat";
  spec.dim = 8;
  std::vector<NewItem> items = {{"a", "0", ""}, {"b", "1", ""}};
  std::vector<float> v(16, 0.25f);
  v[8] = 1.0f;
  auto idx = GalleryIndex::create(dir.string(), spec, items, v.data());
  EXPECT_EQ(idx->size(), 2);
  idx.reset();
  EXPECT_EQ(GalleryIndex::open(dir.string(), false)->size(), 2);
  fs::remove_all(dir);
}
