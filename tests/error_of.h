// The message of what a callable throws, for tests of error messages.
#pragma once
#include <exception>
#include <functional>
#include <string>

namespace featlearn::test {

// The message of the std::exception `f` throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace featlearn::test
