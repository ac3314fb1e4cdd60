// Atomic file writes: readers see the old file or the new one, never a partial one, even after kill -9 or a
// power loss (the data and the directory entry are fsync()ed).
#pragma once
#include <cstddef>
#include <string>

namespace featlearn {

// Writes `size` bytes to `path` via `path.tmp` + fsync + rename + fsync of the directory. Throws Error.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
// For files written by another library (a LibTorch archive): fsync `tmp`, rename it to `path`, fsync the
// directory. Throws Error (and removes `tmp`) on failure.
void rename_into_place(const std::string& tmp, const std::string& path);
// Removes the `*.tmp` files that an interrupted write_file_atomic / rename_into_place left in `dir` (not
// recursive). Call only while no other writer uses `dir`.
void remove_stale_temp_files(const std::string& dir);
// fsync() of a directory (after a rename into it). Throws Error.
void fsync_directory(const std::string& dir);

}  // namespace featlearn
