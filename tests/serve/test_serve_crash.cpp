// A write the service answered 2xx is durable: `featlearn serve` is killed with SIGKILL while clients add and
// delete items, several times; every acknowledged add is then in the index with its exact vector, every
// acknowledged delete is gone, and the index is consistent.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <featlearn/index/gallery_index.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(s);
  return port;
}

std::vector<float> random_vector(std::mt19937& rng) {
  std::normal_distribution<float> g;
  std::vector<float> v(8);
  for (auto& x : v) x = g(rng);
  return v;
}

}  // namespace

TEST(ServeCrash, AcknowledgedWritesSurviveKillNine) {
  const fs::path dir = fs::temp_directory_path() / "featlearn_serve_crash";
  fs::remove_all(dir);
  {
    std::mt19937 rng(1);
    std::vector<float> v;
    std::vector<NewItem> items;
    for (int i = 0; i < 20; ++i) {
      auto x = random_vector(rng);
      v.insert(v.end(), x.begin(), x.end());
      items.push_back({"", "seed", ""});
    }
    IndexSpec s;
    s.index_method = "HNSW32";
    s.dim = 8;
    GalleryIndex::create(dir.string(), s, items, v.data());
  }
  const std::string exe = std::string(FEATLEARN_BINARY_DIR) + "/featlearn";
  ASSERT_TRUE(fs::exists(exe)) << exe;
  std::map<int64_t, std::vector<float>> added;  // acknowledged adds still expected
  std::set<int64_t> deleted;                     // acknowledged deletes
  std::mt19937 master(7);
  for (int round = 0; round < 5; ++round) {
    const int port = free_port();
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string p = std::to_string(port);
      execl(exe.c_str(), exe.c_str(), "serve", "--index-dir", dir.c_str(), "--port", p.c_str(), nullptr);
      _exit(127);
    }
    httplib::Client probe("127.0.0.1", port);
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {
      auto r = probe.Get("/health");
      up = r && r->status == 200;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(up) << "featlearn serve did not come up on port " << port;
    std::mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&, t] {
        std::mt19937 rng(static_cast<uint32_t>(round * 100 + t));
        httplib::Client c("127.0.0.1", port);
        c.set_connection_timeout(1);
        c.set_read_timeout(2);
        while (!stop) {
          if (rng() % 4 == 0) {
            int64_t victim = -1;
            {
              std::lock_guard<std::mutex> l(mu);
              // Taken out of the expectations first: a delete without an answer may or may not have happened.
              if (!added.empty()) {
                auto it = std::next(added.begin(), static_cast<long>(rng() % added.size()));
                victim = it->first;
                added.erase(it);
              }
            }
            if (victim < 0) continue;
            auto r = c.Delete(("/items/" + std::to_string(victim)).c_str());
            if (r && r->status == 200) {
              std::lock_guard<std::mutex> l(mu);
              deleted.insert(victim);
            }
          } else {
            const auto v = random_vector(rng);
            const nlohmann::json body{{"vector", v}, {"label", "t" + std::to_string(t)}};
            auto r = c.Post("/items", body.dump(), "application/json");
            if (r && r->status == 200) {
              const auto id = nlohmann::json::parse(r->body).at("id").get<int64_t>();
              std::lock_guard<std::mutex> l(mu);
              added[id] = v;
            }
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + master() % 600));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    stop = true;
    for (auto& c : clients) c.join();
    auto idx = GalleryIndex::open(dir.string(), true);
    const auto info = idx->info();
    ASSERT_TRUE(info.consistent) << info.problem;
    for (const auto& [id, v] : added) {
      ASSERT_TRUE(idx->get(id).has_value()) << "acknowledged item " << id << " lost in round " << round;
      EXPECT_EQ(idx->vector(id), v) << id;
    }
    for (const auto id : deleted) EXPECT_FALSE(idx->get(id).has_value()) << "acknowledged delete " << id;
  }
  EXPECT_GT(added.size(), 20u);
  EXPECT_GT(deleted.size(), 5u);
}
