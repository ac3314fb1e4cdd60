// Error types shared by every area.
//  - featlearn::Error: a user error (bad config, list file, image, checkpoint). The message says what, where
//    and how to fix. Programs catch it at main, print it and exit non-zero.
//  - FL_ASSERT: an internal invariant; failing it is a featlearn bug, never a user mistake.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace featlearn {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Levenshtein distance, used to suggest the nearest valid name.
size_t edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word` if it is close enough to be a plausible typo, else "".
std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates);
// "did you mean X?" or "" (with a leading "; ").
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

[[noreturn]] void internal_assert_fail(const char* cond, const char* file, int line, const std::string& msg);

}  // namespace featlearn

#define FL_ASSERT(cond, msg)                                                   \
  do {                                                                         \
    if (!(cond)) ::featlearn::internal_assert_fail(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)
