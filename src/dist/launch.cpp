// `featlearn launch` (docs/distributed.md, "Launching"). One thread does everything: it forks the workers,
// polls their stdout/stderr pipes and a self-pipe fed by the signal handlers (SIGCHLD, SIGINT, SIGTERM), relays
// whole lines and reaps the workers. A single writer means relayed lines never interleave mid-line.
#include <featlearn/dist/launch.h>

#include <featlearn/common/error.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

extern char** environ;

namespace featlearn {

namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this without a newline is relayed in pieces (bounds the launcher's memory).
constexpr size_t kMaxLine = 1 << 20;
// After the last worker exited, output still buffered in pipes held open by a worker's own children is
// waited for this long.
constexpr auto kDrainAfterExit = std::chrono::seconds(2);

int g_signal_pipe_write = -1;

extern "C" void on_launcher_signal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  ssize_t ignored = write(g_signal_pipe_write, &b, 1);
  (void)ignored;
  errno = saved;
}

constexpr int kHandled[] = {SIGINT, SIGTERM, SIGCHLD};

// Installs the self-pipe handlers (and ignores SIGPIPE, so a closed launcher stdout does not kill it) for the
// lifetime of a launch; restores the previous dispositions after.
class SignalScope {
 public:
  SignalScope() {
    if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0)
      throw Error(fmt::format("featlearn launch: pipe: {}", strerror(errno)));
    g_signal_pipe_write = fds_[1];
    struct sigaction sa {};
    sa.sa_handler = on_launcher_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kHandled); ++i) sigaction(kHandled[i], &sa, &old_[i]);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~SignalScope() {
    for (size_t i = 0; i < std::size(kHandled); ++i) sigaction(kHandled[i], &old_[i], nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
    g_signal_pipe_write = -1;
    close(fds_[0]);
    close(fds_[1]);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_[std::size(kHandled)] {};
  struct sigaction old_pipe_ {};
};

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the launcher's own stdout/stderr is gone: drop the output, keep supervising
    done += static_cast<size_t>(n);
  }
}

struct Stream {
  int fd = -1;
  std::string pending;  // bytes after the last newline
};

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int wait_status = 0;
  Stream out, err;
  std::string last_error_line;   // last stderr line starting with "error:"
  std::string last_stderr_line;  // last non-empty stderr line
};

// The rank prefix and the error-line bookkeeping of one relayed line.
void relay_line(Worker& w, bool is_err, std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (is_err && !line.empty()) {
    w.last_stderr_line = line;
    if (line.rfind("error:", 0) == 0) w.last_error_line = line;
  }
  std::string text = w.rank == 0 ? std::string() : fmt::format("[rank {}] ", w.rank);
  text += line;
  text += '\n';
  write_all(is_err ? STDERR_FILENO : STDOUT_FILENO, text);
}

// Reads what is available; relays complete lines; at EOF the partial last line, then closes the pipe.
void pump(Worker& w, bool is_err) {
  Stream& s = is_err ? w.err : w.out;
  char buf[1 << 16];
  const ssize_t n = read(s.fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    if (!s.pending.empty()) relay_line(w, is_err, std::move(s.pending));
    s.pending.clear();
    close(s.fd);
    s.fd = -1;
    return;
  }
  s.pending.append(buf, static_cast<size_t>(n));
  size_t start = 0;
  for (size_t nl; (nl = s.pending.find('\n', start)) != std::string::npos; start = nl + 1)
    relay_line(w, is_err, s.pending.substr(start, nl - start));
  s.pending.erase(0, start);
  while (s.pending.size() >= kMaxLine) {
    relay_line(w, is_err, s.pending.substr(0, kMaxLine));
    s.pending.erase(0, kMaxLine);
  }
}

std::string status_text(int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    return fmt::format("killed by signal {} ({})", sig, strsignal(sig));
  }
  return fmt::format("exit status {}", WEXITSTATUS(wait_status));
}

bool failed(int wait_status) { return !(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0); }

// The environment of one worker: the launcher's own, with the torchrun variables replaced.
std::vector<std::string> worker_environment(const LaunchArgs& a, int local_rank, bool resume, bool user_threads) {
  const std::vector<std::pair<std::string, std::string>> set = {
      {"RANK", std::to_string(a.node_rank * a.nproc_per_node + local_rank)},
      {"WORLD_SIZE", std::to_string(a.nnodes * a.nproc_per_node)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(a.nproc_per_node)},
      {"MASTER_ADDR", a.master_addr},
      {"MASTER_PORT", std::to_string(a.master_port)},
  };
  std::vector<std::pair<std::string, std::string>> extra;
  if (!user_threads) extra.emplace_back("OMP_NUM_THREADS", std::to_string(threads_per_worker(a.nproc_per_node)));
  if (resume) extra.emplace_back("FEATLEARN_RESUME_LATEST", "1");
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    auto same = [&](const auto& p) { return p.first == key; };
    if (std::any_of(set.begin(), set.end(), same) || std::any_of(extra.begin(), extra.end(), same)) continue;
    env.push_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// fork + execve of /proc/self/exe. Everything the child needs is prepared before the fork: between fork and
// execve the child only makes async-signal-safe calls. Each worker gets its own process group (a terminal's
// Ctrl-C reaches only the launcher, which forwards it once) and dies with the launcher (PR_SET_PDEATHSIG).
pid_t spawn(std::vector<std::string> argv, std::vector<std::string> env, int out_fd, int err_fd) {
  std::vector<char*> c_argv = c_strings(argv), c_env = c_strings(env);
  static const char kExe[] = "/proc/self/exe";
  static const char kExecFailed[] = "error: featlearn launch: cannot execute /proc/self/exe\n";
  const pid_t parent = getpid();
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);  // no launcher handler may run in the child
  const pid_t pid = fork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig : kHandled) sigaction(sig, &dfl, nullptr);
    sigaction(SIGPIPE, &dfl, nullptr);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);  // the launcher died before prctl
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    sigprocmask(SIG_SETMASK, &old, nullptr);
    execve(kExe, c_argv.data(), c_env.data());
    ssize_t ignored = write(STDERR_FILENO, kExecFailed, sizeof kExecFailed - 1);
    (void)ignored;
    _exit(127);
  }
  const int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw Error(fmt::format("featlearn launch: cannot start a worker: fork: {}", strerror(fork_errno)));
  return pid;
}

struct AttemptResult {
  int interrupted_by = 0;       // SIGINT / SIGTERM received by the launcher
  std::optional<Worker> failed;  // the first worker that failed on its own
};

void signal_running(std::vector<Worker>& workers, int sig) {
  for (auto& w : workers)
    if (w.running) kill(w.pid, sig);
}

// One run of all the workers, until every worker has exited (and its output is relayed).
AttemptResult run_attempt(const LaunchArgs& a, bool resume, bool user_threads, int signal_fd) {
  std::vector<Worker> workers(static_cast<size_t>(a.nproc_per_node));
  AttemptResult result;
  std::optional<Clock::time_point> kill_at;  // when stopping: SIGKILL for the workers still running then
  bool killed = false;

  auto stop_all = [&](int sig) {
    signal_running(workers, sig);
    if (!kill_at) kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.stop_grace_s * 1000));
  };

  std::vector<std::string> argv = {"featlearn"};
  argv.insert(argv.end(), a.command.begin(), a.command.end());
  for (int i = 0; i < a.nproc_per_node; ++i) {
    Worker& w = workers[static_cast<size_t>(i)];
    w.rank = a.node_rank * a.nproc_per_node + i;
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      const std::string why = strerror(errno);
      stop_all(SIGKILL);
      for (auto& v : workers)
        if (v.running) waitpid(v.pid, nullptr, 0);
      throw Error(fmt::format("featlearn launch: cannot start worker {}: pipe: {}", i, why));
    }
    try {
      w.pid = spawn(argv, worker_environment(a, i, resume, user_threads), out[1], err[1]);
    } catch (...) {
      for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
      stop_all(SIGKILL);
      for (auto& v : workers)
        if (v.running) waitpid(v.pid, nullptr, 0);
      throw;
    }
    close(out[1]);
    close(err[1]);
    w.running = true;
    w.out.fd = out[0];
    w.err.fd = err[0];
  }

  std::optional<Clock::time_point> drain_until;
  for (;;) {
    // Reap first: a worker may have exited before the SIGCHLD byte is read. Of several failures seen at once,
    // a worker killed by a signal is reported before one that exited with an error (typically the others'
    // collective failing because that worker vanished), then the lowest rank.
    Worker* first_failure = nullptr;
    for (auto& w : workers) {
      if (!w.running) continue;
      int st = 0;
      const pid_t r = waitpid(w.pid, &st, WNOHANG);
      if (r != w.pid) continue;
      w.running = false;
      w.wait_status = st;
      if (failed(st) && (!first_failure || (WIFSIGNALED(st) && !WIFSIGNALED(first_failure->wait_status))))
        first_failure = &w;
    }
    if (first_failure && !result.failed && !result.interrupted_by && !kill_at) {
      result.failed = *first_failure;  // its output is completed below, before the report
      stop_all(SIGTERM);
    }
    const bool any_running = std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.running; });
    const bool any_open =
        std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.out.fd >= 0 || w.err.fd >= 0; });
    if (!any_running && !drain_until) drain_until = Clock::now() + kDrainAfterExit;
    if (!any_running && (!any_open || Clock::now() >= *drain_until)) break;
    if (kill_at && !killed && any_running && Clock::now() >= *kill_at) {
      signal_running(workers, SIGKILL);
      killed = true;
    }

    std::vector<pollfd> fds = {{signal_fd, POLLIN, 0}};
    std::vector<std::pair<Worker*, bool>> owners = {{nullptr, false}};
    for (auto& w : workers) {
      if (w.out.fd >= 0) fds.push_back({w.out.fd, POLLIN, 0}), owners.emplace_back(&w, false);
      if (w.err.fd >= 0) fds.push_back({w.err.fd, POLLIN, 0}), owners.emplace_back(&w, true);
    }
    auto deadline = Clock::now() + std::chrono::seconds(1);  // also a safety net for a lost SIGCHLD
    if (kill_at && !killed) deadline = std::min(deadline, *kill_at);
    if (drain_until) deadline = std::min(deadline, *drain_until);
    const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const int n = poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(0, wait_ms) + 1));
    if (n < 0 && errno != EINTR) throw Error(fmt::format("featlearn launch: poll: {}", strerror(errno)));
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      unsigned char sigs[64];
      const ssize_t got = read(signal_fd, sigs, sizeof sigs);
      for (ssize_t i = 0; i < got; ++i) {
        const int sig = sigs[i];
        if (sig != SIGINT && sig != SIGTERM) continue;  // SIGCHLD: reaped at the top of the loop
        if (result.interrupted_by) {
          signal_running(workers, SIGKILL);  // a second Ctrl-C / SIGTERM: no more waiting
          killed = true;
          continue;
        }
        result.interrupted_by = sig;
        signal_running(workers, sig);
        kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.stop_grace_s * 1000));
      }
    }
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) pump(*owners[i].first, owners[i].second);
  }
  for (auto& w : workers) {
    for (Stream* s : {&w.out, &w.err}) {
      if (s->fd < 0) continue;
      if (!s->pending.empty()) relay_line(w, s == &w.err, std::move(s->pending));
      close(s->fd);
      s->fd = -1;
    }
    if (result.failed && result.failed->rank == w.rank) {
      result.failed->last_error_line = w.last_error_line;
      result.failed->last_stderr_line = w.last_stderr_line;
    }
  }
  return result;
}

std::string failure_text(const Worker& w) {
  std::string text = fmt::format("rank {} failed ({})", w.rank, status_text(w.wait_status));
  if (!w.last_error_line.empty())
    text += ": " + w.last_error_line;
  else if (!w.last_stderr_line.empty())
    text += fmt::format("; its last stderr line: \"{}\"", w.last_stderr_line);
  return text;
}

int parse_positive(const char* v) {
  if (!v || !*v) return 0;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || x < 1 || x > (1 << 20)) return 0;
  if (*end != '\0' && *end != ',') return 0;  // OpenMP allows a list ("4,2"): its first entry
  return static_cast<int>(x);
}

int cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace

int threads_per_worker(int nproc) { return std::max(1, cores() / std::max(1, nproc)); }

int threads_per_process() {
  if (const int omp = parse_positive(std::getenv("OMP_NUM_THREADS"))) return omp;
  const int local = parse_positive(std::getenv("LOCAL_WORLD_SIZE"));
  return threads_per_worker(local > 0 ? local : 1);
}

const std::vector<std::string>& launch_worker_commands() {
  static const std::vector<std::string> names = {"train", "eval", "describe", "bench-data"};
  return names;
}

void validate(const LaunchArgs& a) {
  if (!a.unexpected.empty())
    throw Error(fmt::format("featlearn launch: unexpected arguments before `--`: {}; the worker command goes after "
                            "`--`, e.g. featlearn launch --nproc-per-node 2 -- train -c config.yaml",
                            join(a.unexpected, " ")));
  if (a.nproc_per_node < 1)
    throw Error(fmt::format("featlearn launch: --nproc-per-node {}: must be at least 1", a.nproc_per_node));
  if (a.nnodes < 1) throw Error(fmt::format("featlearn launch: --nnodes {}: must be at least 1", a.nnodes));
  if (a.node_rank < 0 || a.node_rank >= a.nnodes)
    throw Error(fmt::format("featlearn launch: --node-rank {}: must be in 0..{} (--nnodes {})", a.node_rank,
                            a.nnodes - 1, a.nnodes));
  if (static_cast<int64_t>(a.nnodes) * a.nproc_per_node > (1 << 20))
    throw Error(fmt::format("featlearn launch: --nnodes {} x --nproc-per-node {}: more than {} workers", a.nnodes,
                            a.nproc_per_node, 1 << 20));
  if (a.master_port < 1 || a.master_port > 65535)
    throw Error(fmt::format("featlearn launch: --master-port {}: must be in 1..65535", a.master_port));
  if (a.master_addr.empty()) throw Error("featlearn launch: --master-addr is empty");
  if (a.max_restarts < 0)
    throw Error(fmt::format("featlearn launch: --max-restarts {}: must be at least 0", a.max_restarts));
  if (!(a.stop_grace_s >= 0) || !std::isfinite(a.stop_grace_s))
    throw Error(fmt::format("featlearn launch: --stop-grace-s {}: must be a number of seconds >= 0", a.stop_grace_s));
  const auto& valid = launch_worker_commands();
  if (a.command.empty())
    throw Error("featlearn launch: no worker command after `--`, e.g. featlearn launch --nproc-per-node 2 -- train "
                "-c config.yaml (worker commands: " + join(valid) + ")");
  const std::string& sub = a.command.front();
  if (sub == "launch")
    throw Error("featlearn launch: the worker command cannot be `launch` (a launcher inside a launcher); give the "
                "featlearn subcommand directly: -- train -c config.yaml");
  if (std::find(valid.begin(), valid.end(), sub) != valid.end()) return;
  if (!sub.empty() && sub[0] == '-')
    throw Error(fmt::format("featlearn launch: the worker command starts with the option {}; it must start with a "
                            "featlearn subcommand ({}), e.g. -- train -c config.yaml", sub, join(valid)));
  const std::vector<std::string> single = {"export", "extract", "index", "serve", "prepare-emoji"};
  if (std::find(single.begin(), single.end(), sub) != single.end())
    throw Error(fmt::format("featlearn launch: `{}` is not a distributed command: {} copies would {}; run it once "
                            "without launch (worker commands: {})",
                            sub, a.nproc_per_node * a.nnodes,
                            sub == "serve" ? "bind the same port" : "write the same output", join(valid)));
  throw Error(fmt::format("featlearn launch: unknown worker command `{}`{} (worker commands: {})", sub,
                          did_you_mean(sub, valid), join(valid)));
}

std::vector<std::string> take_launch_command(int& argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "launch") != 0) return {};
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") != 0) continue;
    std::vector<std::string> command(argv + i + 1, argv + argc);
    argc = i;
    return command;
  }
  return {};
}

int cmd_launch(const LaunchArgs& a) {
  validate(a);
  const bool user_threads = parse_positive(std::getenv("OMP_NUM_THREADS")) > 0;
  const char* resume_env = std::getenv("FEATLEARN_RESUME_LATEST");
  const bool user_resume = resume_env && std::strcmp(resume_env, "1") == 0;
  SignalScope signals;
  const int first = a.node_rank * a.nproc_per_node, last = first + a.nproc_per_node - 1;
  write_all(STDERR_FILENO,
            fmt::format("featlearn launch: {} worker{} (rank{} {}{} of WORLD_SIZE {}), MASTER_ADDR {} MASTER_PORT {}, "
                        "OMP_NUM_THREADS {}\n",
                        a.nproc_per_node, a.nproc_per_node == 1 ? "" : "s", first == last ? "" : "s", first,
                        first == last ? "" : fmt::format("-{}", last), a.nnodes * a.nproc_per_node, a.master_addr,
                        a.master_port,
                        user_threads ? std::getenv("OMP_NUM_THREADS")
                                     : std::to_string(threads_per_worker(a.nproc_per_node))));
  for (int restart = 0;; ++restart) {
    const AttemptResult r = run_attempt(a, user_resume || restart > 0, user_threads, signals.read_fd());
    if (r.interrupted_by) {
      write_all(STDERR_FILENO, fmt::format("featlearn launch: {} received; the workers were stopped\n",
                                           r.interrupted_by == SIGINT ? "SIGINT" : "SIGTERM"));
      return 128 + r.interrupted_by;
    }
    if (!r.failed) return 0;
    if (restart < a.max_restarts) {
      write_all(STDERR_FILENO, fmt::format("featlearn launch: {}; restart {} of {} from the latest checkpoint\n",
                                           failure_text(*r.failed), restart + 1, a.max_restarts));
      continue;
    }
    write_all(STDERR_FILENO,
              fmt::format("error: featlearn launch: {}; the other workers were stopped{}\n", failure_text(*r.failed),
                          a.max_restarts > 0 ? fmt::format(" (after {} restarts)", a.max_restarts) : ""));
    const int st = r.failed->wait_status;
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
  }
}

}  // namespace featlearn
