// The featlearn_fuzz program: one libFuzzer binary for every target in tests/fuzz (docs/testing.md). The target
// is chosen by the program name (build-san/fuzz/fuzz_<target> links to it) or by FEATLEARN_FUZZ_TARGET.
#include "fuzz_common.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <cxxabi.h>
#include <opencv2/core.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>

namespace fs = std::filesystem;

namespace featlearn::fuzz {

void config_init();
void config_run(const uint8_t*, size_t);
void lists_init();
void lists_run(const uint8_t*, size_t);
void image_init();
void image_run(const uint8_t*, size_t);
void image_write_seeds(const std::string&);
void ckpt_init();
void ckpt_run(const uint8_t*, size_t);
void ckpt_write_seeds(const std::string&);
void pth_init();
void pth_run(const uint8_t*, size_t);
void pdparams_init();
void pdparams_run(const uint8_t*, size_t);
void npy_init();
void npy_run(const uint8_t*, size_t);
void npy_write_seeds(const std::string&);
void index_init();
void index_run(const uint8_t*, size_t);
void index_write_seeds(const std::string&);
void serve_init();
void serve_run(const uint8_t*, size_t);

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"config", config_init, config_run, nullptr},
      {"lists", lists_init, lists_run, nullptr},
      {"image", image_init, image_run, image_write_seeds},
      {"ckpt", ckpt_init, ckpt_run, ckpt_write_seeds},
      {"pth", pth_init, pth_run, nullptr},
      {"pdparams", pdparams_init, pdparams_run, nullptr},
      {"npy", npy_init, npy_run, npy_write_seeds},
      {"index", index_init, index_run, index_write_seeds},
      {"serve", serve_init, serve_run, nullptr},
  };
  return t;
}

namespace {

std::atomic<size_t> g_used{0};

void charge(size_t n) {
  const size_t now = g_used.fetch_add(n) + n;
  if (now > kWorkBudgetBytes || n > kWorkBudgetBytes) throw BudgetExceeded{n};
}

// LibTorch's CPU allocator, counted.
struct CountingTorchAllocator : c10::Allocator {
  c10::Allocator* inner = nullptr;
  c10::DataPtr allocate(size_t n) const override {
    charge(n);
    return inner->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return inner->raw_deleter(); }
};

// OpenCV's default Mat allocator, counted (buffers keep their standard allocator for deallocation).
struct CountingMatAllocator : cv::MatAllocator {
  cv::MatAllocator* inner = cv::Mat::getStdAllocator();
  cv::UMatData* allocate(int dims, const int* sizes, int type, void* data, size_t* step, cv::AccessFlag flags,
                         cv::UMatUsageFlags usage) const override {
    if (!data) {
      size_t n = CV_ELEM_SIZE(type);
      for (int i = 0; i < dims; ++i) {
        const size_t s = static_cast<size_t>(sizes[i]);
        if (s != 0 && n > kWorkBudgetBytes / s) throw BudgetExceeded{n};
        n *= s;
      }
      charge(n);
    }
    return inner->allocate(dims, sizes, type, data, step, flags, usage);
  }
  bool allocate(cv::UMatData* u, cv::AccessFlag flags, cv::UMatUsageFlags usage) const override {
    return inner->allocate(u, flags, usage);
  }
  void deallocate(cv::UMatData* u) const override { inner->deallocate(u); }
};

const Target* g_target = nullptr;
std::string g_scratch;

}  // namespace

void install_budget() {
  static bool done = false;
  if (done) return;
  done = true;
  static CountingTorchAllocator torch_alloc;
  torch_alloc.inner = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&torch_alloc, /*priority=*/100);
  static CountingMatAllocator mat_alloc;
  cv::Mat::setDefaultAllocator(&mat_alloc);
  torch::set_num_threads(1);
  cv::setNumThreads(0);
}

void reset_budget() { g_used = 0; }

bool tracing() {
  static const bool on = std::getenv("FEATLEARN_FUZZ_TRACE") != nullptr;
  return on;
}

void trace_error(const char* what, const char* message) {
  if (tracing()) std::fprintf(stderr, "featlearn_fuzz: %s: user error: %.300s\n", what, message);
}

void trace_step(const char* what, double seconds) {
  if (tracing()) std::fprintf(stderr, "featlearn_fuzz: %-32s %8.1f ms  (%zu MiB counted)\n", what, seconds * 1e3, g_used.load() >> 20);
}

std::string demangled(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status), std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

void finding(const std::string& what, const std::string& type, const std::string& message) {
  std::fprintf(stderr, "\n==featlearn-fuzz== FINDING in %s: %s escaped (not featlearn::Error):\n%s\n", what.c_str(),
               type.c_str(), message.substr(0, 4000).c_str());
  std::fflush(stderr);
  std::abort();
}

const std::string& scratch_dir() {
  if (g_scratch.empty()) {
    const char* base = std::getenv("FEATLEARN_FUZZ_SCRATCH");
    fs::path root = base ? fs::path(base) : (fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path());
    g_scratch = (root / ("featlearn_fuzz_" + std::to_string(::getpid()))).string();
    fs::remove_all(g_scratch);
    fs::create_directories(g_scratch);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(g_scratch, ec);
    });
  }
  return g_scratch;
}

void reset_scratch() {
  const std::string& d = scratch_dir();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.path().filename().string().rfind("keep_", 0) != 0) fs::remove_all(e.path(), ec);
}

void write_file(const std::string& path, const void* data, size_t size) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) {
    std::fprintf(stderr, "featlearn_fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

bool try_write_file(const std::string& path, const std::string& s) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
  return static_cast<bool>(f);
}

std::vector<std::string> split_sections(const uint8_t* data, size_t size, const std::string& sep, size_t max_parts) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < max_parts) {
    const size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

}  // namespace featlearn::fuzz

// Allocation failure as on a machine without the memory. ASan's operator new aborts the process when the
// allocator refuses a size (max_allocation_size_mb, set by scripts/fuzz.sh); this program's operator new
// goes through malloc instead and throws std::bad_alloc, so what is under test is how featlearn handles a
// failed allocation (FAISS's reader, for one, allocates whatever size a damaged header gives).
namespace {
void* allocate_or_throw(size_t n) {
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* allocate_aligned_or_throw(size_t n, std::align_val_t a) {
  void* p = nullptr;
  if (posix_memalign(&p, std::max(sizeof(void*), static_cast<size_t>(a)), n ? n : 1) == 0) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t n) { return allocate_or_throw(n); }
void* operator new[](size_t n) { return allocate_or_throw(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void* operator new(size_t n, std::align_val_t a) { return allocate_aligned_or_throw(n, a); }
void* operator new[](size_t n, std::align_val_t a) { return allocate_aligned_or_throw(n, a); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  void* p = nullptr;
  return posix_memalign(&p, std::max(sizeof(void*), static_cast<size_t>(a)), n ? n : 1) == 0 ? p : nullptr;
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept { return operator new(n, a, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

using featlearn::fuzz::targets;

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string name;
  if (const char* env = std::getenv("FEATLEARN_FUZZ_TARGET")) {
    name = env;
  } else if (*argc > 0) {
    name = fs::path((*argv)[0]).filename().string();
    if (name.rfind("fuzz_", 0) == 0) name = name.substr(5);
  }
  for (const auto& t : targets())
    if (name == t.name) featlearn::fuzz::g_target = &t;
  if (!featlearn::fuzz::g_target) {
    std::string names;
    for (const auto& t : targets()) names += std::string(names.empty() ? "" : ", ") + t.name;
    std::fprintf(stderr, "featlearn_fuzz: unknown target '%s'; run it as fuzz_<target> or set FEATLEARN_FUZZ_TARGET (%s)\n",
                 name.c_str(), names.c_str());
    std::exit(2);
  }
  featlearn::fuzz::scratch_dir();
  if (const char* dir = std::getenv("FEATLEARN_FUZZ_WRITE_SEEDS")) {
    if (!featlearn::fuzz::g_target->write_seeds) {
      std::fprintf(stderr, "featlearn_fuzz: target '%s' has no generated seeds (they are written by hand)\n", name.c_str());
      std::exit(2);
    }
    fs::create_directories(dir);
    featlearn::fuzz::g_target->write_seeds(dir);
    std::exit(0);
  }
  featlearn::fuzz::install_budget();
  featlearn::fuzz::g_target->init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  featlearn::fuzz::reset_budget();
  featlearn::fuzz::g_target->run(data, size);
  return 0;
}
