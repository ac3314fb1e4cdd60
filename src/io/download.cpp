// Weights download into the cache (docs/file-formats.md, "Weights cache"), on cpp-httplib's client; SHA-256 from
// OpenSSL's EVP.
#include <featlearn/io/download.h>

#include <featlearn/common/atomic_file.h>
#include <featlearn/common/error.h>

#include <httplib.h>
#include <openssl/evp.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

namespace featlearn {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct UrlParts {
  std::string origin;  // "https://host[:port]"
  std::string target;  // "/path?query" (at least "/")
};

UrlParts split_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw Error("'" + url + "' is not a URL (expected http:// or https://)");
  const std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    throw Error("'" + url + "': unsupported scheme " + scheme + " (expected http:// or https://)");
  const auto host_begin = scheme_end + 3;
  auto path_begin = url.find_first_of("/?", host_begin);
  if (path_begin == std::string::npos) path_begin = url.size();
  if (path_begin == host_begin) throw Error("'" + url + "' has no host");
  UrlParts p{url.substr(0, path_begin), url.substr(path_begin)};
  if (p.target.empty() || p.target[0] != '/') p.target = "/" + p.target;
  if (auto hash = p.target.find('#'); hash != std::string::npos) p.target.resize(hash);
  return p;
}

// A Location header resolved against the URL that answered with it.
std::string resolve_location(const std::string& base, const std::string& location) {
  if (location.find("://") != std::string::npos) return location;
  const UrlParts b = split_url(base);
  if (!location.empty() && location[0] == '/') return b.origin + location;
  std::string dir = b.target.substr(0, b.target.find('?'));
  dir.resize(dir.rfind('/') + 1);
  return b.origin + dir + location;
}

std::string mib(int64_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

// Progress on stderr (DownloadOptions::progress).
class ProgressLine {
 public:
  ProgressLine(bool enabled, std::string name, int64_t start)
      : enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1), name_(std::move(name)), start_bytes_(start) {}

  void update(int64_t done, int64_t total, bool final = false) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
    if (!final && since_draw < (tty_ ? 0.1 : 10.0)) return;
    last_draw_ = now;
    const double secs = std::max(1e-3, std::chrono::duration<double>(now - start_).count());
    std::string line = fmt::format("{}: {}", name_, mib(done));
    if (total > 0) line += fmt::format(" / {} ({:.0f}%)", mib(total), 100.0 * done / total);
    line += fmt::format(", {}/s", mib(static_cast<int64_t>((done - start_bytes_) / secs)));
    if (tty_)
      std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
    else
      std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  }

 private:
  bool enabled_, tty_;
  std::string name_;
  int64_t start_bytes_;
  Clock::time_point start_ = Clock::now(), last_draw_{};
};

// Holds an exclusive flock() on `path` (created if missing) for its lifetime. The lock file is left in place:
// removing it while another process waits on it would let a third one lock a new file at the same path.
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create the lock file " + path + ": " + std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd_);
      throw Error("cannot lock " + path + ": " + std::strerror(e));
    }
  }
  ~FileLock() { ::close(fd_); }  // closing releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

struct Failure {
  std::string why;
};

// "bytes 100-199/1000" -> first byte 100 and total 1000 (-1 when "*").
bool parse_content_range(const std::string& v, int64_t* first, int64_t* total) {
  long long a = 0, b = 0;
  char tail[32] = {0};
  if (std::sscanf(v.c_str(), "bytes %lld-%lld/%31s", &a, &b, tail) != 3) return false;
  *first = a;
  *total = tail[0] == '*' ? -1 : std::atoll(tail);
  return true;
}

// One pass of the transfer of `url` into `part` (resuming what is there). Returns when `part` holds the whole
// body; throws Failure otherwise (what was received stays in `part`).
void transfer(const std::string& first_url, const std::string& part, const DownloadOptions& o) {
  std::string url = first_url;
  bool restarted_after_416 = false;
  for (int hop = 0;; ++hop) {
    if (hop > o.max_redirects) throw Failure{fmt::format("more than {} redirects", o.max_redirects)};
    std::error_code ec;
    const int64_t have = fs::exists(part) ? static_cast<int64_t>(fs::file_size(part, ec)) : 0;
    const UrlParts u = split_url(url);
    httplib::Client cli(u.origin);
    cli.set_connection_timeout(o.connect_timeout_s, 0);
    cli.set_read_timeout(o.read_timeout_s, 0);
    cli.set_write_timeout(o.read_timeout_s, 0);
    // The exact bytes: with a compressed transfer neither Content-Length nor a Range offset would count them.
    cli.set_decompress(false);
    httplib::Headers headers{{"Accept-Encoding", "identity"}};
    if (have > 0) headers.emplace("Range", "bytes=" + std::to_string(have) + "-");

    int status = 0;
    std::string location, refusal, reason;
    int64_t done = 0, total = -1;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(nullptr, &std::fclose);
    std::unique_ptr<ProgressLine> progress;
    bool write_failed = false;
    auto on_response = [&](const httplib::Response& r) {
      status = r.status;
      reason = r.reason;
      if (status >= 300 && status < 400 && r.has_header("Location")) {
        location = r.get_header_value("Location");
        return false;  // follow it (below), ignoring this body
      }
      const int64_t length =
          r.has_header("Content-Length") ? std::atoll(r.get_header_value("Content-Length").c_str()) : -1;
      if (status == 206) {
        int64_t first = -1;
        if (!parse_content_range(r.get_header_value("Content-Range"), &first, &total) || first != have) {
          refusal = "the server answered the resume request (Range: bytes=" + std::to_string(have) +
                    "-) with Content-Range '" + r.get_header_value("Content-Range") + "'";
          return false;
        }
        if (total < 0 && length >= 0) total = have + length;
        done = have;
        out.reset(std::fopen(part.c_str(), "ab"));
      } else if (status == 200) {  // the whole file (a server that ignores Range also answers 200)
        total = length;
        out.reset(std::fopen(part.c_str(), "wb"));
      } else {
        return false;
      }
      if (!out) {
        refusal = "cannot write " + part + ": " + std::strerror(errno);
        return false;
      }
      progress = std::make_unique<ProgressLine>(o.progress, url_file_name(url), done);
      return true;
    };
    auto on_data = [&](const char* data, size_t n) {
      if (std::fwrite(data, 1, n, out.get()) != n) {
        write_failed = true;
        return false;
      }
      done += static_cast<int64_t>(n);
      progress->update(done, total);
      return true;
    };
    const httplib::Result res = cli.Get(u.target, headers, on_response, on_data);
    if (out && std::fflush(out.get()) != 0) write_failed = true;
    out.reset();
    if (write_failed) throw Failure{"cannot write " + part + " (disk full?)"};
    if (!refusal.empty()) throw Failure{refusal};
    if (!location.empty()) {
      url = resolve_location(url, location);
      continue;
    }
    if (status == 416 && have > 0 && !restarted_after_416) {  // a stale or complete .part: start over
      fs::remove(part, ec);
      restarted_after_416 = true;
      --hop;
      continue;
    }
    if (status != 0 && status != 200 && status != 206)
      throw Failure{fmt::format("HTTP status {}{}", status, reason.empty() ? "" : " " + reason)};
    if (!res) {
      if (progress) progress->update(done, total, true);
      const httplib::Error err = res.error();
      const std::string why =
          err == httplib::Error::Connection
              ? fmt::format("cannot connect to {} (Connection error: offline, unknown host, refused, or no answer "
                            "within {} s)",
                            u.origin, o.connect_timeout_s)
          : err == httplib::Error::Read ? std::string("the connection broke while reading (Read error)")
                                        : httplib::to_string(err) + " error";
      throw Failure{why + (done > 0 ? fmt::format(" after {} of {} (kept in {}; the "
                                                                              "next run resumes it)",
                                                                              mib(done), total > 0 ? mib(total) : "?",
                                                                              part)
                                                                : std::string())};
    }
    if (progress) progress->update(done, total, true);
    if (total >= 0 && done != total)
      throw Failure{fmt::format("the transfer stopped after {} of {} bytes (kept in {}; the next run resumes it)",
                                done, total, part)};
    return;
  }
}

bool is_hex(const std::string& s) {
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + " to compute its SHA-256");
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL: cannot start SHA-256");
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw Error("error while reading " + path);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &n);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

std::string featlearn_home() {
  if (const char* h = std::getenv("FEATLEARN_HOME"); h && *h) return h;
  if (const char* home = std::getenv("HOME"); home && *home) return (fs::path(home) / ".cache" / "featlearn").string();
  throw Error("neither FEATLEARN_HOME nor HOME is set: set FEATLEARN_HOME to the directory for downloaded weights");
}

std::string apply_weights_mirror(const std::string& url) {
  const char* m = std::getenv("FEATLEARN_WEIGHTS_MIRROR");
  if (!m || !*m) return url;
  std::string mirror = m;
  while (!mirror.empty() && mirror.back() == '/') mirror.pop_back();
  split_url(mirror + "/");  // checks the variable's scheme
  const auto host_begin = url.find("://");
  if (host_begin == std::string::npos) return url;
  const auto path_begin = url.find('/', host_begin + 3);
  return mirror + (path_begin == std::string::npos ? std::string("/") : url.substr(path_begin));
}

std::string split_sha256_fragment(const std::string& url, std::string* sha256) {
  const auto pos = url.find("#sha256=");
  if (pos == std::string::npos) return url;
  const std::string hex = lower(url.substr(pos + 8));
  if (hex.size() < 8 || hex.size() > 64 || !is_hex(hex))
    throw Error("'" + url + "': #sha256= expects 8 to 64 hex digits of the file's SHA-256");
  *sha256 = hex;
  return url.substr(0, pos);
}

std::string url_file_name(const std::string& url) {
  std::string target = split_url(url).target;
  target.resize(target.find('?') == std::string::npos ? target.size() : target.find('?'));
  const std::string name = target.substr(target.rfind('/') + 1);
  if (name.empty() || name == "." || name == "..")
    throw Error("'" + url + "' does not end in a file name (expected .../<file>)");
  return name;
}

void download_file(const std::string& url, const std::string& dest, const DownloadOptions& o) {
  const std::string expected_sha = lower(o.sha256);
  FL_ASSERT(expected_sha.empty() || (expected_sha.size() >= 8 && expected_sha.size() <= 64 && is_hex(expected_sha)),
            "DownloadOptions::sha256 must be 8..64 hex digits");
  // "" when `path` has the expected size and checksum, else what differs.
  auto mismatch = [&](const std::string& path) -> std::string {
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(fs::file_size(path, ec));
    if (o.size >= 0 && size != o.size) return fmt::format("{} bytes, {} expected", size, o.size);
    if (expected_sha.empty()) return "";
    const std::string got = sha256_file(path);
    if (got.compare(0, expected_sha.size(), expected_sha) == 0) return "";
    return "SHA-256 mismatch, expected " + expected_sha + (expected_sha.size() < got.size() ? "..." : "") +
           " but the file has " + got;
  };
  // A cached file is used without network access; with a known checksum or size it is checked again (it may
  // have been put there by hand), but never deleted.
  auto use_cached = [&] {
    if (!fs::exists(dest)) return false;
    if (const std::string bad = mismatch(dest); !bad.empty())
      throw Error("the cached " + dest + " (for " + url + ") does not match: " + bad +
                  "; delete it to download it again");
    return true;
  };
  if (use_cached()) return;
  const std::string by_hand = "; download it yourself and put it at " + dest;
  std::error_code ec;
  const fs::path dir = fs::path(dest).parent_path();
  if (!dir.empty()) fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create the weights directory " + dir.string() + ": " + ec.message());

  FileLock lock(dest + ".lock");
  if (use_cached()) return;  // another process finished it while we waited
  const std::string part = dest + ".part";
  if (o.progress) std::fprintf(stderr, "Downloading %s to %s\n", url.c_str(), dest.c_str());
  try {
    split_url(url);
    transfer(url, part, o);
  } catch (const Failure& f) {
    throw Error("download of " + url + " failed: " + f.why + by_hand);
  } catch (const Error& e) {
    throw Error("download of " + url + " failed: " + e.what() + by_hand);
  }
  if (const std::string bad = mismatch(part); !bad.empty()) {
    fs::remove(part, ec);
    throw Error("download of " + url + " failed: " + bad + " (removed; a proxy or a changed file on the server?)" +
                by_hand);
  }
  rename_into_place(part, dest);
}

}  // namespace featlearn
