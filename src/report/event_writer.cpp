// TensorBoard event file writer (docs/file-formats.md, "TensorBoard event files").
#include <crcutil/generic_crc.h>
#include <featlearn/common/error.h>
#include <featlearn/report/event_writer.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "proto/tensorboard_event.pb.h"

namespace featlearn {

namespace {
using Crc32cTable = crcutil::GenericCrc<uint64_t, uint64_t, uint64_t, 4>;
const Crc32cTable& crc32c_table() {
  static const Crc32cTable table(0x82f63b78, 32, /*canonical=*/true);
  return table;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  return static_cast<uint32_t>(crc32c_table().CrcDefault(data, size, 0));
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create the TensorBoard log directory: " + ec.message());
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == 0) std::strcpy(host, "localhost");
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now_seconds())) +
                                         "." + host + "." + std::to_string(getpid()) + ".featlearn"))
              .string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw Error(path_ + ": cannot create the TensorBoard event file: " + std::strerror(errno));
  tensorboard::Event e;
  e.set_wall_time(now_seconds());
  e.set_file_version("brain.Event:2");
  write_record(e.SerializeAsString());
  flush();
}

void EventWriter::scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  tensorboard::Event e;
  e.set_wall_time(wall_time < 0 ? now_seconds() : wall_time);
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(e.SerializeAsString());
}

void EventWriter::write_record(const std::string& data) {
  // The TFRecord fields are little-endian; featlearn builds only for little-endian hosts (x86-64, aarch64).
  const uint64_t len = data.size();
  char header[12];
  std::memcpy(header, &len, 8);
  const uint32_t len_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &len_crc, 4);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  std::string record(header, 12);
  record += data;
  record.append(reinterpret_cast<const char*>(&data_crc), 4);
  out_.write(record.data(), static_cast<std::streamsize>(record.size()));
  if (!out_) throw Error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
}

void EventWriter::flush() {
  out_.flush();
  if (!out_) throw Error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
}

}  // namespace featlearn
