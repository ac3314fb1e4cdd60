// Shared pieces of the fuzz targets (docs/testing.md).
//
// A target feeds one input to a parser the way the program would and returns. What counts as a finding:
// a crash, a hang, a sanitizer report, or an exception that escapes as anything other than featlearn::Error
// (the project's user-error type; FL_ASSERT's std::logic_error and LibTorch's c10::Error are findings too).
// expect_user_errors() enforces the last rule by aborting with the exception's type and message.
//
// Work budget: a legal config or file may ask for a lot of memory (ResizeImage size 100000, class_num 10^9,
// a 16384x16384 PNG). Those are not bugs, but they would make one input take seconds or gigabytes, so every
// LibTorch tensor and OpenCV Mat allocation of one input is counted; past kWorkBudgetBytes the allocation
// throws BudgetExceeded (not a std::exception, so product code does not turn it into a featlearn::Error) and
// the input ends as "too big", not as a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace featlearn::fuzz {

// Thrown by the counting allocators; deliberately not derived from std::exception.
struct BudgetExceeded {
  size_t requested;
};

constexpr size_t kWorkBudgetBytes = size_t(64) << 20;

// Installs the counting allocators (once per process) and sets LibTorch to one thread.
void install_budget();
// Starts a new input: the budget is counted from zero again.
void reset_budget();

// Aborts (a finding) with `what`, the exception type and message.
[[noreturn]] void finding(const std::string& what, const std::string& type, const std::string& message);

// Runs `fn`; featlearn::Error and BudgetExceeded are expected outcomes, any other exception is a finding.
template <class F>
bool expect_user_errors(const char* what, F&& fn);

// A per-process scratch directory (tmpfs when available), emptied by reset_scratch() except for the entries
// whose names start with "keep_" (what a target's init prepared).
const std::string& scratch_dir();
void reset_scratch();
void write_file(const std::string& path, const void* data, size_t size);
inline void write_file(const std::string& path, const std::string& s) { write_file(path, s.data(), s.size()); }
// Like write_file, but returns false instead of aborting (for paths taken from the input).
bool try_write_file(const std::string& path, const std::string& s);

// Splits `data` at each occurrence of `sep` (at most `max_parts` parts; the last holds the rest).
std::vector<std::string> split_sections(const uint8_t* data, size_t size, const std::string& sep, size_t max_parts);

// The targets. Each target's init runs once (LLVMFuzzerInitialize), run once per input. write_seeds (may be
// null) writes generated seed inputs into a directory (FEATLEARN_FUZZ_WRITE_SEEDS=DIR, docs/testing.md).
struct Target {
  const char* name;
  void (*init)();
  void (*run)(const uint8_t* data, size_t size);
  void (*write_seeds)(const std::string& dir);
};
const std::vector<Target>& targets();

}  // namespace featlearn::fuzz

// ---------------------------------------------------------------------------------------------------------------
#include <featlearn/common/error.h>

#include <chrono>
#include <exception>
#include <typeinfo>

namespace featlearn::fuzz {

std::string demangled(const std::type_info& t);

// FEATLEARN_FUZZ_TRACE=1: each step's time and the user error that ended it, on stderr.
void trace_step(const char* what, double seconds);
void trace_error(const char* what, const char* message);

template <class F>
bool expect_user_errors(const char* what, F&& fn) {
  struct Timer {
    const char* what;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~Timer() { trace_step(what, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  } timer{what};
  try {
    fn();
    return true;
  } catch (const BudgetExceeded& e) {
    trace_error(what, "over the work budget");
  } catch (const featlearn::Error& e) {
    trace_error(what, e.what());
  } catch (const std::exception& e) {
    finding(what, demangled(typeid(e)), e.what());
  } catch (...) {
    finding(what, "a non-std exception", "");
  }
  return false;
}

}  // namespace featlearn::fuzz
