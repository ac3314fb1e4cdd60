// download_file (io/download.h) against an in-process cpp-httplib server on 127.0.0.1: caching, resume of a cut
// transfer, checksum/size verification, HTTP errors, refused connections, redirects, concurrent callers.
#include <featlearn/common/error.h>
#include <featlearn/io/download.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// 300 KiB of deterministic bytes (several reads of the client's buffer).
std::string payload() {
  std::string s(300 * 1024, '\0');
  uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

// A server on 127.0.0.1 at a free port, answering in a background thread.
class LocalServer {
 public:
  LocalServer() {
    port_ = srv.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { srv.listen_after_bind(); });
    while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // stop() needs it
  }
  ~LocalServer() {
    srv.stop();
    thread_.join();
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  int port() const { return port_; }
  httplib::Server srv;
  std::atomic<int> requests{0};

 private:
  int port_ = 0;
  std::thread thread_;
};

class Download : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("featlearn_download_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static DownloadOptions quiet() {
    DownloadOptions o;
    o.progress = false;
    o.connect_timeout_s = 5;
    o.read_timeout_s = 5;
    return o;
  }
  fs::path dir_;
};

}  // namespace

TEST(Sha256, KnownVectors) {
  const auto dir = fs::temp_directory_path() / ("featlearn_sha_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  write_all((dir / "abc").string(), "abc");  // FIPS 180-2 test vector
  EXPECT_EQ(sha256_file((dir / "abc").string()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  write_all((dir / "empty").string(), "");
  EXPECT_EQ(sha256_file((dir / "empty").string()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  fs::remove_all(dir);
  EXPECT_NE(error_of([&] { sha256_file((dir / "abc").string()); }).find("cannot open"), std::string::npos);
}

TEST(DownloadUrls, MirrorFragmentAndFileName) {
  ::setenv("FEATLEARN_WEIGHTS_MIRROR", "http://127.0.0.1:8080/", 1);
  EXPECT_EQ(apply_weights_mirror("https://download.pytorch.org/models/resnet18-f37072fd.pth"),
            "http://127.0.0.1:8080/models/resnet18-f37072fd.pth");
  ::setenv("FEATLEARN_WEIGHTS_MIRROR", "https://mirror.lan/pub", 1);
  EXPECT_EQ(apply_weights_mirror("https://host:99/a/b.pdparams"), "https://mirror.lan/pub/a/b.pdparams");
  ::setenv("FEATLEARN_WEIGHTS_MIRROR", "ftp://x", 1);
  EXPECT_NE(error_of([] { apply_weights_mirror("https://h/a"); }).find("unsupported scheme ftp"), std::string::npos);
  ::unsetenv("FEATLEARN_WEIGHTS_MIRROR");
  EXPECT_EQ(apply_weights_mirror("https://h/a/b.pth"), "https://h/a/b.pth");

  std::string sha;
  EXPECT_EQ(split_sha256_fragment("https://h/w.pth", &sha), "https://h/w.pth");
  EXPECT_EQ(sha, "");
  EXPECT_EQ(split_sha256_fragment("https://h/w.pth#sha256=ABCDEF12", &sha), "https://h/w.pth");
  EXPECT_EQ(sha, "abcdef12");
  EXPECT_NE(error_of([&] { split_sha256_fragment("https://h/w.pth#sha256=abc", &sha); }).find("8 to 64 hex"),
            std::string::npos);
  EXPECT_NE(error_of([&] { split_sha256_fragment("https://h/w.pth#sha256=zzzzzzzz", &sha); }).find("8 to 64 hex"),
            std::string::npos);

  EXPECT_EQ(url_file_name("https://h/dir/w.pdparams?x=1"), "w.pdparams");
  EXPECT_NE(error_of([] { url_file_name("https://h/dir/"); }).find("does not end in a file name"), std::string::npos);

  ::setenv("FEATLEARN_HOME", "/some/where", 1);
  EXPECT_EQ(featlearn_home(), "/some/where");
  ::unsetenv("FEATLEARN_HOME");
  const char* home = std::getenv("HOME");
  if (home) EXPECT_EQ(featlearn_home(), std::string(home) + "/.cache/featlearn");
}

TEST_F(Download, CachesAndReusesWithoutNetwork) {
  LocalServer s;
  const std::string data = payload();
  std::string encoding;
  s.srv.Get("/w/file.bin", [&](const httplib::Request& req, httplib::Response& res) {
    ++s.requests;
    encoding = req.get_header_value("Accept-Encoding");
    res.set_content(data, "application/octet-stream");
  });
  const std::string dest = path("cache/weights/file.bin");  // directories are created
  DownloadOptions o = quiet();
  o.size = static_cast<int64_t>(data.size());
  download_file(s.url("/w/file.bin"), dest, o);
  EXPECT_EQ(s.requests.load(), 1);
  EXPECT_EQ(encoding, "identity");  // no compressed transfer: lengths and Range offsets count the file's bytes
  EXPECT_EQ(read_all(dest), data);
  EXPECT_FALSE(fs::exists(dest + ".part"));
  // The second call finds the file and does not contact the server (stopped here: any request would fail).
  s.srv.stop();
  download_file(s.url("/w/file.bin"), dest, o);
  EXPECT_EQ(s.requests.load(), 1);
  EXPECT_EQ(read_all(dest), data);
}

TEST_F(Download, ResumesACutTransferWithRange) {
  LocalServer s;
  const std::string data = payload();
  const size_t cut = 100 * 1024;
  std::mutex mu;
  std::vector<std::string> ranges;
  s.srv.Get("/w/file.bin", [&](const httplib::Request& req, httplib::Response& res) {
    const int n = ++s.requests;
    {
      std::lock_guard<std::mutex> lock(mu);
      ranges.push_back(req.get_header_value("Range"));
    }
    if (n == 1) {  // announces the whole size, sends `cut` bytes and drops the connection
      res.set_content_provider(data.size(), "application/octet-stream",
                               [&](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset >= cut) return false;
                                 sink.write(data.data() + offset, cut - offset);
                                 return true;
                               });
    } else {
      res.set_content(data, "application/octet-stream");  // cpp-httplib answers a Range with 206
    }
  });
  const std::string dest = path("file.bin");
  const std::string msg = error_of([&] { download_file(s.url("/w/file.bin"), dest, quiet()); });
  EXPECT_NE(msg.find("download of " + s.url("/w/file.bin") + " failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resumes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("put it at " + dest), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dest));
  ASSERT_TRUE(fs::exists(dest + ".part"));
  const auto have = fs::file_size(dest + ".part");
  EXPECT_GT(have, 0u);
  EXPECT_LE(have, cut);

  write_all(path("src.bin"), data);
  DownloadOptions o = quiet();
  o.sha256 = sha256_file(path("src.bin"));  // the check runs over the resumed file as a whole
  download_file(s.url("/w/file.bin"), dest, o);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=" + std::to_string(have) + "-");
  EXPECT_EQ(read_all(dest), data);  // byte-identical
  EXPECT_FALSE(fs::exists(dest + ".part"));
}

TEST_F(Download, RestartsWhenTheServerIgnoresRange) {
  // A server that ignores Range and answers 200 with the whole file (cpp-httplib's server always honours Range,
  // so this one is a plain socket answering one request).
  const std::string data = payload();
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string request;
  std::thread server([&] {
    const int c = ::accept(lfd, nullptr, nullptr);
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(data.size()) +
                              "\r\nConnection: close\r\n\r\n" + data;
    for (size_t off = 0; off < reply.size();) {
      const ssize_t n = ::write(c, reply.data() + off, reply.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(c);
  });
  const std::string dest = path("file.bin");
  write_all(dest + ".part", "stale bytes of some other file");
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/w/file.bin";
  const std::string msg = error_of([&] { download_file(url, dest, quiet()); });
  server.join();
  ::close(lfd);
  EXPECT_EQ(msg, "(no error)");
  EXPECT_NE(request.find("Range: bytes=30-"), std::string::npos) << request;
  EXPECT_EQ(read_all(dest), data);  // restarted: the stale bytes are gone
}

TEST_F(Download, ChecksumAndSizeMismatchLeaveNothing) {
  LocalServer s;
  const std::string data = payload();
  s.srv.Get("/w/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(data, "application/octet-stream");
  });
  const std::string src = path("src.bin");
  write_all(src, data);
  const std::string actual = sha256_file(src);
  const std::string dest = path("file.bin");

  DownloadOptions o = quiet();
  o.sha256 = "00000000";
  std::string msg = error_of([&] { download_file(s.url("/w/file.bin"), dest, o); });
  EXPECT_NE(msg.find(s.url("/w/file.bin")), std::string::npos) << msg;
  EXPECT_NE(msg.find("SHA-256 mismatch, expected 00000000... but the file has " + actual), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dest + ".part"));

  o.sha256 = "";
  o.size = 5;
  msg = error_of([&] { download_file(s.url("/w/file.bin"), dest, o); });
  EXPECT_NE(msg.find(std::to_string(data.size()) + " bytes, 5 expected"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dest + ".part"));

  o.size = -1;
  o.sha256 = actual.substr(0, 8);  // a torchvision-style prefix
  download_file(s.url("/w/file.bin"), dest, o);
  EXPECT_EQ(read_all(dest), data);
  fs::remove(dest);
  o.sha256 = actual;  // all 64 digits
  download_file(s.url("/w/file.bin"), dest, o);
  EXPECT_EQ(read_all(dest), data);
  // A cached file that does not match is reported and kept (it may have been put there by hand).
  o.sha256 = "11111111";
  msg = error_of([&] { download_file(s.url("/w/file.bin"), dest, o); });
  EXPECT_NE(msg.find("the cached " + dest + " (for " + s.url("/w/file.bin") + ") does not match: SHA-256 mismatch"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("delete it to download it again"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(dest));
}

TEST_F(Download, HttpErrorNamesUrlAndStatus) {
  LocalServer s;
  const std::string dest = path("missing.pth");
  const std::string msg = error_of([&] { download_file(s.url("/w/missing.pth"), dest, quiet()); });
  EXPECT_NE(msg.find("download of " + s.url("/w/missing.pth") + " failed: HTTP status 404"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("put it at " + dest), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dest + ".part"));
}

TEST_F(Download, RefusedConnectionSaysWhereToPutTheFile) {
  int port = 0;
  {
    LocalServer s;
    port = s.port();
  }  // closed: connections to it are refused
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/w/r18.pth";
  const std::string dest = path("r18.pth");
  const std::string msg = error_of([&] { download_file(url, dest, quiet()); });
  EXPECT_NE(msg.find("download of " + url + " failed: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("Connection"), std::string::npos) << msg;
  EXPECT_NE(msg.find("download it yourself and put it at " + dest), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dest));
}

TEST_F(Download, FollowsRedirects) {
  LocalServer s;
  const std::string data = payload();
  s.srv.Get("/w/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(data, "application/octet-stream");
  });
  s.srv.Get("/old/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    res.set_redirect("/w/file.bin", 302);  // absolute path
  });
  s.srv.Get("/older/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    res.set_redirect(s.url("/old/file.bin"), 301);  // full URL
  });
  s.srv.Get("/loop", [&](const httplib::Request&, httplib::Response& res) { res.set_redirect("/loop", 307); });
  download_file(s.url("/older/file.bin"), path("file.bin"), quiet());
  EXPECT_EQ(read_all(path("file.bin")), data);
  const std::string msg = error_of([&] { download_file(s.url("/loop"), path("loop"), quiet()); });
  EXPECT_NE(msg.find("more than 10 redirects"), std::string::npos) << msg;
}

TEST_F(Download, ConcurrentCallersDownloadOnce) {
  LocalServer s;
  const std::string data = payload();
  s.srv.Get("/w/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    ++s.requests;
    // Slow enough that the second caller arrives while the first one holds the lock.
    res.set_content_provider(data.size(), "application/octet-stream",
                             [&](size_t offset, size_t length, httplib::DataSink& sink) {
                               std::this_thread::sleep_for(std::chrono::milliseconds(20));
                               sink.write(data.data() + offset, std::min<size_t>(length, 64 * 1024));
                               return true;
                             });
  });
  const std::string dest = path("file.bin");
  std::vector<std::thread> callers;
  std::vector<std::string> errors(3);
  for (int i = 0; i < 3; ++i)
    callers.emplace_back([&, i] { errors[i] = error_of([&] { download_file(s.url("/w/file.bin"), dest, quiet()); }); });
  for (auto& t : callers) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "(no error)");
  EXPECT_EQ(s.requests.load(), 1);
  EXPECT_EQ(read_all(dest), data);
}

// HTTPS through OpenSSL: the server's certificate is verified against the system's trust store (here
// SSL_CERT_FILE, which OpenSSL's default verify paths read): refused while untrusted, downloaded once trusted.
TEST_F(Download, HttpsVerifiesTheServerCertificate) {
  const std::string cert = path("cert.pem"), key = path("key.pem");
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
                          "subjectAltName=IP:127.0.0.1 -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "the openssl program is needed to make a test certificate";
  httplib::SSLServer srv(cert.c_str(), key.c_str());
  ASSERT_TRUE(srv.is_valid());
  const std::string data = payload();
  srv.Get("/w/file.bin", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(data, "application/octet-stream");
  });
  const int port = srv.bind_to_any_port("127.0.0.1");
  std::thread t([&] { srv.listen_after_bind(); });
  while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::string url = "https://127.0.0.1:" + std::to_string(port) + "/w/file.bin";

  const std::string msg = error_of([&] { download_file(url, path("file.bin"), quiet()); });
  EXPECT_NE(msg.find("download of " + url + " failed: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("SSL"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path("file.bin")));

  ::setenv("SSL_CERT_FILE", cert.c_str(), 1);
  const std::string ok = error_of([&] { download_file(url, path("file.bin"), quiet()); });
  ::unsetenv("SSL_CERT_FILE");
  srv.stop();
  t.join();
  EXPECT_EQ(ok, "(no error)");
  EXPECT_EQ(read_all(path("file.bin")), data);
}
