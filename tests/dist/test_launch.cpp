// `featlearn launch` (docs/distributed.md, "Launching"): argument checks, the workers' torchrun environment (read
// from /proc/<pid>/environ of the real workers), line relaying with rank prefixes, fail-fast on a failing or
// killed worker, restarts, signal forwarding and two launch invocations forming one two-node run.
#include <featlearn/common/error.h>
#include <featlearn/dist/launch.h>

#include "../error_of.h"
#include "process_util.h"
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn;
using Clock = std::chrono::steady_clock;
using featlearn::test::error_of;

namespace {

std::string exe() { return std::string(FEATLEARN_BINARY_DIR) + "/featlearn"; }

// A fresh directory, removed with everything in it at the end of the test.
struct Scratch {
  explicit Scratch(const std::string& name)
      : path(fs::temp_directory_path() / ("featlearn_launch_" + std::to_string(getpid())) / name) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
    fs::remove(path.parent_path(), ec);  // only when empty
  }
  fs::path path;
};

// 4 ids x 2 images of 16 x 16 and a training config over them (ResNet18, batches of 8, no evaluation).
fs::path make_config(const fs::path& dir, int epochs, const std::string& list_name = "list.txt") {
  fs::create_directories(dir / "img");
  std::ofstream list(dir / "list.txt");
  for (int id = 0; id < 4; ++id)
    for (int k = 0; k < 2; ++k) {
      cv::Mat img(16, 16, CV_8UC3, cv::Scalar(60 * id, 200 - 40 * id + 10 * k, 100 + 30 * k));
      const std::string rel = "img/" + std::to_string(id) + "_" + std::to_string(k) + ".png";
      cv::imwrite((dir / rel).string(), img);
      list << rel << " " << id << " " << k << "\n";
    }
  const std::string ops =
      "[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: 16}}, "
      "{NormalizeImage: {scale: 0.00392157, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}}]";
  const fs::path cfg = dir / "train.yaml";
  std::ofstream(cfg) << "Global:\n  output_dir: " << (dir / "out").string() << "\n  epochs: " << epochs
                     << "\n  eval_during_train: False\n  print_batch_step: 1\n  image_shape: [3, 16, 16]\n"
                        "  seed: 5\n  save_interval: 1\n"
                        "Arch:\n  name: RecModel\n  Backbone: {name: ResNet18}\n  BackboneStopLayer: {name: flatten}\n"
                        "  Neck: {name: FC, embedding_size: 512, class_num: 8}\n"
                        "  Head: {name: FC, embedding_size: 8, class_num: 4}\n"
                        "Loss:\n  Train:\n    - CELoss: {weight: 1.0}\n"
                        "Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.01}}\n"
                        "DataLoader:\n  Train:\n    dataset: {name: VeriWild, image_root: "
                     << dir.string() << ", cls_label_path: " << (dir / list_name).string()
                     << ", transform_ops: " << ops
                     << "}\n    sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: True, shuffle: "
                        "True}\n";
  return cfg;
}

// A featlearn process with its stdout and stderr collected by a thread.
class Program {
 public:
  explicit Program(const std::vector<std::string>& args, const std::map<std::string, std::string>& env_set = {}) {
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) throw std::runtime_error("pipe");
    std::vector<std::string> argv = {exe()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e, key = kv.substr(0, kv.find('='));
      // The test's own environment must not leak torchrun variables or a thread count into the launch.
      if (key == "OMP_NUM_THREADS" || key == "FEATLEARN_RESUME_LATEST" || key == "RANK" || key == "WORLD_SIZE" ||
          key == "LOCAL_RANK" || key == "LOCAL_WORLD_SIZE" || env_set.count(key))
        continue;
      env.push_back(kv);
    }
    for (const auto& [k, v] : env_set) env.push_back(k + "=" + v);
    std::vector<char*> c_argv, c_env;
    for (auto& s : argv) c_argv.push_back(s.data());
    for (auto& s : env) c_env.push_back(s.data());
    c_argv.push_back(nullptr);
    c_env.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
      execve(c_argv[0], c_argv.data(), c_env.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    reader_ = std::thread([this, o = out[0], e = err[0]] { read_all(o, e); });
  }
  ~Program() {
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }
  pid_t pid() const { return pid_; }

  // The wait status, or -1 when the program did not end within `timeout` (it is then killed).
  int wait(std::chrono::seconds timeout) {
    const auto end = Clock::now() + timeout;
    int st = 0;
    while (waitpid(pid_, &st, WNOHANG) == 0) {
      if (Clock::now() > end) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        reaped_ = true;
        reader_.join();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    reaped_ = true;
    reader_.join();
    return st;
  }
  std::string out() {
    std::lock_guard<std::mutex> lock(mu_);
    return out_;
  }
  std::string err() {
    std::lock_guard<std::mutex> lock(mu_);
    return err_;
  }

 private:
  void read_all(int o, int e) {
    pollfd fds[2] = {{o, POLLIN, 0}, {e, POLLIN, 0}};
    int open = 2;
    while (open > 0) {
      if (poll(fds, 2, -1) < 0) break;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[4096];
        const ssize_t n = read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open;
          continue;
        }
        std::lock_guard<std::mutex> lock(mu_);
        (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
      }
    }
  }
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::string out_, err_;
};

int exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : -1; }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::map<std::string, std::string> environ_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::map<std::string, std::string> env;
  for (std::string kv; std::getline(in, kv, '\0');) {
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(close_paren + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid == parent && state != "Z") out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

// The launcher's workers once each has executed featlearn (its environment then has LOCAL_RANK), keyed by RANK.
std::map<int, pid_t> wait_for_workers(pid_t launcher, size_t n, std::chrono::seconds timeout) {
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    std::map<int, pid_t> ranks;
    for (pid_t c : children_of(launcher)) {
      const auto env = environ_of(c);
      if (env.count("LOCAL_RANK") && env.count("RANK")) ranks[std::stoi(env.at("RANK"))] = c;
    }
    if (ranks.size() == n) return ranks;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return {};
}

std::string port() { return std::to_string(featlearn::test::free_port()); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

LaunchArgs args_for(std::vector<std::string> command) {
  LaunchArgs a;
  a.nproc_per_node = 2;
  a.command = std::move(command);
  return a;
}

}  // namespace

TEST(Launch, ValidationNamesTheOption) {
  EXPECT_NO_THROW(validate(args_for({"train", "-c", "x.yaml"})));
  EXPECT_NO_THROW(validate(args_for({"eval", "-c", "x.yaml"})));
  auto check = [](LaunchArgs a, const std::string& part) {
    const std::string e = error_of([&] { validate(a); });
    EXPECT_TRUE(contains(e, part)) << "expected \"" << part << "\" in: " << e;
  };
  LaunchArgs a = args_for({"train"});
  a.nproc_per_node = 0;
  check(a, "--nproc-per-node 0: must be at least 1");
  a = args_for({"train"});
  a.nnodes = 0;
  check(a, "--nnodes 0: must be at least 1");
  a = args_for({"train"});
  a.nnodes = 2;
  a.node_rank = 2;
  check(a, "--node-rank 2: must be in 0..1 (--nnodes 2)");
  a.node_rank = -1;
  check(a, "--node-rank -1");
  a = args_for({"train"});
  a.master_port = 0;
  check(a, "--master-port 0: must be in 1..65535");
  a.master_port = 65536;
  check(a, "--master-port 65536");
  a = args_for({"train"});
  a.max_restarts = -1;
  check(a, "--max-restarts -1");
  a = args_for({"train"});
  a.stop_grace_s = -1;
  check(a, "--stop-grace-s");
  check(args_for({}), "no worker command after `--`");
  check(args_for({"launch", "--nproc-per-node", "2", "--", "train"}), "cannot be `launch`");
  check(args_for({"-c", "x.yaml"}), "starts with the option -c");
  check(args_for({"export", "-c", "x.yaml"}), "`export` is not a distributed command: 2 copies would write the same");
  check(args_for({"serve", "-c", "x.yaml"}), "bind the same port");
  check(args_for({"trian", "-c", "x.yaml"}), "unknown worker command `trian`; did you mean train?");
  a = args_for({"train"});
  a.unexpected = {"train", "-c"};
  check(a, "unexpected arguments before `--`: train -c");
}

TEST(Launch, TakeLaunchCommandSplitsAtTheFirstSeparator) {
  std::vector<std::string> s = {"featlearn", "launch", "--nproc-per-node", "2", "--", "train", "-c", "a", "--", "b"};
  std::vector<char*> argv;
  for (auto& x : s) argv.push_back(x.data());
  int argc = static_cast<int>(argv.size());
  EXPECT_EQ(take_launch_command(argc, argv.data()), (std::vector<std::string>{"train", "-c", "a", "--", "b"}));
  EXPECT_EQ(argc, 4);
  // Only for `launch`.
  std::vector<std::string> t = {"featlearn", "train", "-c", "a", "--", "b"};
  std::vector<char*> targv;
  for (auto& x : t) targv.push_back(x.data());
  int targc = static_cast<int>(targv.size());
  EXPECT_TRUE(take_launch_command(targc, targv.data()).empty());
  EXPECT_EQ(targc, 6);
}

TEST(Launch, ThreadsPerProcessFollowsOmpNumThreadsThenLocalWorldSize) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsetenv("OMP_NUM_THREADS");
  unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(threads_per_process(), static_cast<int>(cores));
  setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(threads_per_process(), std::max(1, static_cast<int>(cores) / 2));
  setenv("LOCAL_WORLD_SIZE", "100000", 1);
  EXPECT_EQ(threads_per_process(), 1);
  setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(threads_per_process(), 3);
  setenv("OMP_NUM_THREADS", "5,2", 1);  // an OpenMP list: its first level
  EXPECT_EQ(threads_per_process(), 5);
  setenv("OMP_NUM_THREADS", "zero", 1);  // not a count: ignored
  EXPECT_EQ(threads_per_process(), 1);
  unsetenv("OMP_NUM_THREADS");
  unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(threads_per_worker(1), static_cast<int>(cores));
  EXPECT_EQ(threads_per_worker(static_cast<int>(cores) + 1), 1);
}

TEST(Launch, CommandLineErrors) {
  ASSERT_TRUE(fs::exists(exe())) << exe();
  {
    Program p({"launch", "--nproc-per-node", "2", "train", "-c", "x.yaml"});
    const int st = p.wait(std::chrono::seconds(60));
    EXPECT_EQ(exit_code(st), 2);
    EXPECT_TRUE(contains(p.err(), "error: featlearn launch: unexpected arguments before `--`: train -c x.yaml"))
        << p.err();
  }
  {
    Program p({"launch", "--nproc-per-node", "2", "--master-port", "70000", "--", "train", "-c", "x.yaml"});
    EXPECT_EQ(exit_code(p.wait(std::chrono::seconds(60))), 2);
    EXPECT_TRUE(contains(p.err(), "--master-port 70000: must be in 1..65535")) << p.err();
  }
  {
    Program p({"launch", "--", "train"});  // --nproc-per-node is required (CLI11)
    EXPECT_NE(exit_code(p.wait(std::chrono::seconds(60))), 0);
    EXPECT_TRUE(contains(p.err() + p.out(), "--nproc-per-node")) << p.err() << p.out();
  }
}

// Every line of both workers arrives whole: rank 1's lines, prefix removed, are exactly rank 0's (the same
// describe output), which are exactly what describe prints without the launcher.
TEST(Launch, RelaysWholeLinesWithRankPrefixes) {
  const Scratch scratch("relay");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1);
  Program plain({"describe", "-c", cfg.string()});
  ASSERT_EQ(exit_code(plain.wait(std::chrono::seconds(60))), 0) << plain.err();
  const auto expected = lines(plain.out());
  ASSERT_GT(expected.size(), 10u);

  Program p({"launch", "--nproc-per-node", "2", "--master-port", port(), "--", "describe", "-c",
             cfg.string()});
  ASSERT_EQ(exit_code(p.wait(std::chrono::seconds(60))), 0) << p.err();
  std::vector<std::string> rank0, rank1;
  for (const auto& l : lines(p.out())) {
    if (l.rfind("[rank 1] ", 0) == 0)
      rank1.push_back(l.substr(9));
    else
      rank0.push_back(l);
  }
  EXPECT_EQ(rank0, expected);
  EXPECT_EQ(rank1, expected);
  EXPECT_TRUE(contains(p.err(), "featlearn launch: 2 workers (ranks 0-1 of WORLD_SIZE 2)")) << p.err();
}

TEST(Launch, FailingWorkerIsNamedWithItsError) {
  const Scratch scratch("fail");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1, "missing_list.txt");
  const auto t0 = Clock::now();
  Program p({"launch", "--nproc-per-node", "2", "--master-port", port(), "--", "train", "-c",
             cfg.string()});
  const int st = p.wait(std::chrono::seconds(90));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(60));
  EXPECT_EQ(exit_code(st), 2) << p.err();
  // err() returns a copy: one copy for every check (iterators of two copies must not be mixed).
  const std::string err = p.err();
  const std::regex report(R"(error: featlearn launch: rank [01] failed \(exit status 2\): error: .*missing_list\.txt)");
  EXPECT_TRUE(std::regex_search(err, report)) << err;
  // One report, after the workers' own (relayed) error lines.
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n') > 1, true) << err;
  EXPECT_EQ(err.find("error: featlearn launch:"), err.rfind("error: featlearn launch:")) << err;
  EXPECT_LT(err.find("missing_list.txt"), err.find("error: featlearn launch:")) << err;
}

TEST(Launch, RestartsAreCountedAndEndWithTheLastFailure) {
  const Scratch scratch("restarts");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1, "missing_list.txt");
  Program p({"launch", "--nproc-per-node", "1", "--max-restarts", "2", "--master-port", port(),
             "--", "train", "-c", cfg.string()});
  EXPECT_EQ(exit_code(p.wait(std::chrono::seconds(120))), 2) << p.err();
  const std::string err = p.err();
  EXPECT_TRUE(contains(err, "featlearn launch: rank 0 failed (exit status 2): error: ")) << err;
  EXPECT_TRUE(contains(err, "; restart 1 of 2 from the latest checkpoint\n")) << err;
  EXPECT_TRUE(contains(err, "; restart 2 of 2 from the latest checkpoint\n")) << err;
  EXPECT_FALSE(contains(err, "restart 3")) << err;
  EXPECT_TRUE(contains(err, "the other workers were stopped (after 2 restarts)")) << err;
}

// The workers' environment, then fail-fast: rank 1 killed with SIGKILL stops rank 0 and ends the launch with a
// report naming rank 1 and the signal.
TEST(Launch, KilledWorkerStopsTheOthers) {
  const Scratch scratch("kill");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1000);
  const std::string master_port = port();
  Program p({"launch", "--nproc-per-node", "2", "--master-port", master_port, "--", "train", "-c",
             cfg.string()});
  const auto workers = wait_for_workers(p.pid(), 2, std::chrono::seconds(60));
  ASSERT_EQ(workers.size(), 2u) << p.err();
  for (const auto& [rank, pid] : workers) {
    const auto env = environ_of(pid);
    EXPECT_EQ(env.at("LOCAL_RANK"), std::to_string(rank));
    EXPECT_EQ(env.at("WORLD_SIZE"), "2");
    EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "2");
    EXPECT_EQ(env.at("MASTER_ADDR"), "127.0.0.1");
    EXPECT_EQ(env.at("MASTER_PORT"), master_port);
    EXPECT_EQ(env.at("OMP_NUM_THREADS"), std::to_string(threads_per_worker(2)));
    EXPECT_EQ(env.count("FEATLEARN_RESUME_LATEST"), 0u);
    EXPECT_NE(getpgid(pid), getpgid(p.pid()));  // a terminal's Ctrl-C reaches only the launcher
  }
  const auto t0 = Clock::now();
  ASSERT_EQ(kill(workers.at(1), SIGKILL), 0);
  const int st = p.wait(std::chrono::seconds(90));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(60));
  EXPECT_EQ(exit_code(st), 128 + SIGKILL) << p.err();
  EXPECT_TRUE(contains(p.err(), "error: featlearn launch: rank 1 failed (killed by signal 9")) << p.err();
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(workers.at(0)))) << "rank 0 still running";
}

// A user's OMP_NUM_THREADS is kept; restarted workers get FEATLEARN_RESUME_LATEST=1; SIGTERM to the launcher is
// forwarded and it exits 143.
TEST(Launch, RestartedWorkersGetResumeLatestAndSigtermIsForwarded) {
  const Scratch scratch("restart_env");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1000);
  Program p({"launch", "--nproc-per-node", "1", "--max-restarts", "1", "--master-port", port(),
             "--", "train", "-c", cfg.string()},
            {{"OMP_NUM_THREADS", "1"}});
  auto first = wait_for_workers(p.pid(), 1, std::chrono::seconds(60));
  ASSERT_EQ(first.size(), 1u) << p.err();
  EXPECT_EQ(environ_of(first.at(0)).at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(environ_of(first.at(0)).count("FEATLEARN_RESUME_LATEST"), 0u);
  ASSERT_EQ(kill(first.at(0), SIGKILL), 0);
  std::map<int, pid_t> second;
  const auto end = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < end) {
    second = wait_for_workers(p.pid(), 1, std::chrono::seconds(5));
    if (!second.empty() && second.at(0) != first.at(0)) break;
  }
  ASSERT_EQ(second.size(), 1u) << p.err();
  ASSERT_NE(second.at(0), first.at(0)) << p.err();
  const auto env = environ_of(second.at(0));
  EXPECT_EQ(env.at("FEATLEARN_RESUME_LATEST"), "1");
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "1");
  EXPECT_TRUE(contains(p.err(), "featlearn launch: rank 0 failed (killed by signal 9 (Killed)); restart 1 of 1 from "
                                "the latest checkpoint"))
      << p.err();
  ASSERT_EQ(kill(p.pid(), SIGTERM), 0);  // forwarded; the launcher ends with 128 + SIGTERM
  EXPECT_EQ(exit_code(p.wait(std::chrono::seconds(60))), 128 + SIGTERM) << p.err();
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(second.at(0))));
}

// --nnodes 2 as two launch invocations on one machine: global ranks 0 and 1 of one WORLD_SIZE training together;
// Ctrl-C (SIGINT) to a launcher is forwarded and it exits 130. Node 1's output is all prefixed (describe: the
// training ranks other than 0 print nothing).
TEST(Launch, TwoNodesOnOneMachine) {
  const Scratch scratch("two_nodes");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 1000);
  {
    Program node1({"launch", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "1", "--", "describe", "-c",
                   cfg.string()});
    ASSERT_EQ(exit_code(node1.wait(std::chrono::seconds(60))), 0) << node1.err();
    const auto out = lines(node1.out());
    ASSERT_GT(out.size(), 10u);
    for (const auto& l : out) EXPECT_EQ(l.rfind("[rank 1] ", 0), 0u) << l;
    EXPECT_TRUE(contains(node1.err(), "featlearn launch: 1 worker (rank 1 of WORLD_SIZE 2)")) << node1.err();
  }
  const std::string master_port = port();
  Program node0({"launch", "--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1", "--master-port", master_port,
                 "--", "train", "-c", cfg.string()});
  Program node1({"launch", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "1", "--master-port", master_port,
                 "--", "train", "-c", cfg.string()});
  const auto w0 = wait_for_workers(node0.pid(), 1, std::chrono::seconds(60));
  const auto w1 = wait_for_workers(node1.pid(), 1, std::chrono::seconds(60));
  ASSERT_EQ(w0.size(), 1u) << node0.err();
  ASSERT_EQ(w1.size(), 1u) << node1.err();
  ASSERT_TRUE(w0.count(0)) << node0.err();
  ASSERT_TRUE(w1.count(1)) << node1.err();
  for (pid_t pid : {w0.at(0), w1.at(1)}) {
    const auto env = environ_of(pid);
    EXPECT_EQ(env.at("WORLD_SIZE"), "2");
    EXPECT_EQ(env.at("LOCAL_RANK"), "0");
    EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "1");
    EXPECT_EQ(env.at("MASTER_PORT"), master_port);
  }
  // The two ranks train together: rank 0 reports a 2-process run and its first step.
  const auto end = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < end && !contains(node0.out(), "[Train][Epoch 1/1000][Iter 1/"))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(contains(node0.out(), "[Train][Epoch 1/1000][Iter 1/")) << node0.out() << node0.err();
  EXPECT_TRUE(contains(node0.out(), "2 processes")) << node0.out();
  ASSERT_EQ(kill(node0.pid(), SIGINT), 0);
  ASSERT_EQ(kill(node1.pid(), SIGINT), 0);
  EXPECT_EQ(exit_code(node0.wait(std::chrono::seconds(60))), 130) << node0.err();
  EXPECT_EQ(exit_code(node1.wait(std::chrono::seconds(60))), 130) << node1.err();
  EXPECT_TRUE(contains(node0.err(), "featlearn launch: SIGINT received; the workers were stopped")) << node0.err();
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(w0.at(0))));
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(w1.at(1))));
}

// --max-restarts with the trainer's FEATLEARN_RESUME_LATEST: rank 1 killed after epoch 2's checkpoint, the run
// restarts, resumes from latest.ckpt (epochs 1 and 2 are not trained again) and finishes; the launch exits 0.
TEST(Launch, KilledRunRestartsFromTheLatestCheckpointAndFinishes) {
  const Scratch scratch("restart_finish");
  const fs::path& dir = scratch.path;
  const fs::path cfg = make_config(dir, 5);
  Program p({"launch", "--nproc-per-node", "2", "--max-restarts", "1", "--master-port",
             port(), "--", "train", "-c", cfg.string()});
  const auto workers = wait_for_workers(p.pid(), 2, std::chrono::seconds(60));
  ASSERT_EQ(workers.size(), 2u) << p.err();
  const auto end = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < end && !contains(p.out(), "[Train][Epoch 2] saved"))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(contains(p.out(), "[Train][Epoch 2] saved")) << p.out() << p.err();
  ASSERT_FALSE(contains(p.out(), "[Train][Epoch 5/5][Avg]")) << "the run ended before the kill";
  ASSERT_EQ(kill(workers.at(1), SIGKILL), 0);
  EXPECT_EQ(exit_code(p.wait(std::chrono::seconds(180))), 0) << p.out() << p.err();
  const std::string out = p.out(), err = p.err();
  EXPECT_TRUE(contains(err, "featlearn launch: rank 1 failed (killed by signal 9 (Killed)); restart 1 of 1 from the "
                            "latest checkpoint"))
      << err;
  EXPECT_TRUE(contains(out, "Restarted by featlearn launch: resuming from " +
                                (dir / "out" / "RecModel" / "latest.ckpt").string()))
      << out;
  auto count = [&](const std::string& part) {
    size_t n = 0;
    for (size_t at = out.find(part); at != std::string::npos; at = out.find(part, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("[Train][Epoch 1/5][Avg]"), 1u) << out;
  EXPECT_EQ(count("[Train][Epoch 2/5][Avg]"), 1u) << out;
  EXPECT_EQ(count("[Train][Epoch 5/5][Avg]"), 1u) << out;
  EXPECT_TRUE(fs::exists(dir / "out" / "RecModel" / "epoch_5.ckpt"));
}
