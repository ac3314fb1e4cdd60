// TensorBoard event files: CRC-32C test vectors, the TFRecord framing by hand, and every record read back by
// an independent reader (python3-protobuf on the same .proto, python3-crc32c) (docs/file-formats.md).
#include <featlearn/report/event_writer.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using featlearn::EventWriter;

namespace {
fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("featlearn_test_report_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  return d;
}

std::string run(const std::string& cmd, int* rc) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p.get())) > 0) out.append(buf.data(), n);
  *rc = pclose(p.release());
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST(EventWriter, Crc32cMatchesPublishedTestVectors) {
  // The check value of CRC-32C, and the all-zero / all-0xff vectors of RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(featlearn::crc32c("123456789", 9), 0xE3069283u);
  const std::vector<uint8_t> zeros(32, 0), ones(32, 0xff);
  EXPECT_EQ(featlearn::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(featlearn::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  // masked = rotate right by 15, plus 0xa282ead8.
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(featlearn::masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(EventWriter, FirstRecordIsTheFileVersionInTfRecordFraming) {
  const auto dir = scratch("framing");
  std::string path;
  {
    EventWriter w(dir.string());
    path = w.path();
  }
  EXPECT_EQ(fs::path(path).parent_path(), dir);
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  const std::string data = read_all(path);
  ASSERT_GE(data.size(), 16u);
  uint64_t len = 0;
  std::memcpy(&len, data.data(), 8);
  ASSERT_EQ(data.size(), 16 + len);  // exactly one record
  uint32_t len_crc = 0, data_crc = 0;
  std::memcpy(&len_crc, data.data() + 8, 4);
  std::memcpy(&data_crc, data.data() + 12 + len, 4);
  EXPECT_EQ(len_crc, featlearn::masked_crc32c(data.data(), 8));
  EXPECT_EQ(data_crc, featlearn::masked_crc32c(data.data() + 12, len));
  // Event.file_version is field 3, length-delimited (tag byte 0x1a), after wall_time (field 1, 64-bit, 0x09).
  const std::string body = data.substr(12, len);
  EXPECT_EQ(static_cast<uint8_t>(body[0]), 0x09);
  EXPECT_NE(body.find(std::string("\x1a\x0d") + "brain.Event:2"), std::string::npos);
  fs::remove_all(dir);
}

TEST(EventWriter, IndependentReaderSeesEveryScalarWithItsStepAndWallTime) {
  const auto dir = scratch("reader");
  std::string path;
  {
    EventWriter w(dir.string());
    path = w.path();
    w.scalar("train/loss", 1.5, 1, 1700000000.25);
    w.scalar("train/lr", 0.01, 1, 1700000000.5);
    w.scalar("eval/recall1", 0.875, 10, 1700000100.0);
    w.flush();
  }
  int rc = 0;
  const std::string out = run("/usr/bin/python3 " FEATLEARN_SOURCE_DIR "/tests/report/read_events.py '" + path +
                                  "' " FEATLEARN_SOURCE_DIR "/proto 2>&1",
                              &rc);
  ASSERT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::vector<std::string> recs;
  for (std::string l; std::getline(lines, l);) recs.push_back(l);
  ASSERT_EQ(recs.size(), 4u) << out;
  EXPECT_NE(recs[0].find("\"file_version\": \"brain.Event:2\""), std::string::npos) << recs[0];
  EXPECT_EQ(recs[1], R"({"wall_time": 1700000000.25, "step": 1, "values": [["train/loss", 1.5]]})");
  // simple_value is a float32: 0.01 reads back as 0.009999999776482582.
  EXPECT_EQ(recs[2], R"({"wall_time": 1700000000.5, "step": 1, "values": [["train/lr", 0.009999999776482582]]})");
  EXPECT_EQ(recs[3], R"({"wall_time": 1700000100.0, "step": 10, "values": [["eval/recall1", 0.875]]})");
  fs::remove_all(dir);
}

TEST(EventWriter, ACutFileIsDetectedByTheReaderAndUnwritableDirectoryIsNamed) {
  const auto dir = scratch("cut");
  std::string path;
  {
    EventWriter w(dir.string());
    path = w.path();
    w.scalar("train/loss", 2.0, 1, 1.0);
  }
  const std::string data = read_all(path);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size() - 3));
  }
  int rc = 0;
  const std::string out =
      run("/usr/bin/python3 " FEATLEARN_SOURCE_DIR "/tests/report/read_events.py '" + path + "' " FEATLEARN_SOURCE_DIR
          "/proto 2>&1",
          &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("truncated record"), std::string::npos) << out;
  try {
    EventWriter w("/proc/featlearn_no_such_dir/tb");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/featlearn_no_such_dir/tb"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}
