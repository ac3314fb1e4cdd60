// TensorBoard event files (docs/file-formats.md, "TensorBoard event files"): `Event` protocol buffers
// (proto/tensorboard_event.proto, compiled with Debian's protobuf) in TFRecord framing:
//   uint64 length (little-endian) | uint32 masked CRC-32C of the 8 length bytes | data | uint32 masked CRC-32C of data
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The first record is the file_version event.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace featlearn {

// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78) of `size` bytes, computed with Debian's crcutil.
uint32_t crc32c(const void* data, size_t size);
// TFRecord's masking of a CRC (so that a CRC of data that contains CRCs stays well distributed).
uint32_t masked_crc32c(const void* data, size_t size);

class EventWriter {
 public:
  // Creates `dir` and a new file `dir/events.out.tfevents.<unix seconds>.<host>.<pid>.featlearn` (a new one
  // per run: TensorBoard reads every file of a directory as one run, in order of the events' wall times),
  // and writes the file_version record. Throws Error naming the path.
  explicit EventWriter(const std::string& dir);
  // A scalar summary (Summary.Value.simple_value) at `step`, stamped with `wall_time` (seconds since the
  // Unix epoch; < 0: now).
  void scalar(const std::string& tag, double value, int64_t step, double wall_time = -1);
  // Records are written whole; flush() hands them to the OS so that a running TensorBoard sees them. A
  // kill leaves at most a truncated last record, which TensorBoard's reader skips.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

}  // namespace featlearn
