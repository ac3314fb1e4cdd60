// Path of a reference fixture written by tests/fixtures/make_fixtures.py (scripts/test.sh runs it before
// ctest); a missing file is reported as a test failure saying how to make it.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

inline std::string fixture(const std::string& name) {
  namespace fs = std::filesystem;
  const char* env = std::getenv("FEATLEARN_BINARY_DIR");
  const fs::path dir = fs::path(env ? env : FEATLEARN_BINARY_DIR) / "fixtures";
  const fs::path p = dir / name;
  if (!fs::exists(p))
    ADD_FAILURE() << "fixture " << p << " missing: run `python3 tests/fixtures/make_fixtures.py --out "
                  << dir.string() << "` (scripts/test.sh does it before ctest)";
  return p.string();
}
