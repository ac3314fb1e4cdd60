#include <fcntl.h>
#include <unistd.h>

#include <featlearn/common/atomic_file.h>
#include <featlearn/common/error.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace featlearn {

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw Error(dir + ": cannot open directory to sync: " + errno_text());
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(tmp + ": cannot create: " + errno_text());
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string e = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(tmp + ": write failed: " + e);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error(tmp + ": cannot flush to disk: " + errno_text());
  }
  rename_into_place(tmp, path);
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string e = errno_text();
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(tmp + ": cannot flush to disk: " + e);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " into place: " + e);
  }
  fsync_directory(std::filesystem::path(path).parent_path().string());
}

void remove_stale_temp_files(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".tmp" || !e.is_regular_file(ec)) continue;
    std::filesystem::remove(e.path(), ec);
  }
}

}  // namespace featlearn
