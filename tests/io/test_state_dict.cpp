// load_torch_state_dict against files written by Debian's python3-torch (tests/fixtures/make_fixtures.py).
#include <featlearn/io/state_dict.h>

#include <featlearn/common/error.h>

#include <gtest/gtest.h>

#include "../fixture_path.h"
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

namespace fs = std::filesystem;
using featlearn::Error;
using featlearn::load_torch_state_dict;

namespace {

std::map<std::string, torch::Tensor> load_map(const std::string& path) {
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : load_torch_state_dict(path)) m[k] = v;
  return m;
}

std::string error_of(const std::string& path) {
  try {
    load_torch_state_dict(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

fs::path temp_file(const std::string& name) { return fs::temp_directory_path() / ("featlearn_sd_" + name); }

void check_cases(const std::map<std::string, torch::Tensor>& m) {
  ASSERT_EQ(m.count("view"), 1u);
  EXPECT_TRUE(torch::equal(m.at("base"), torch::arange(24, torch::kFloat).reshape({4, 6})));
  // base[1:3, 2:5]: storage offset 8, strides (6, 1).
  EXPECT_TRUE(torch::equal(m.at("view"), torch::tensor({{8.f, 9.f, 10.f}, {14.f, 15.f, 16.f}})));
  EXPECT_TRUE(torch::equal(m.at("transposed"), torch::arange(24, torch::kFloat).reshape({4, 6}).t()));
  EXPECT_TRUE(m.at("transposed").is_contiguous());
  EXPECT_EQ(m.at("i64").scalar_type(), torch::kLong);
  EXPECT_EQ(m.at("i64")[0].item<int64_t>(), -3);
  EXPECT_EQ(m.at("i64")[1].item<int64_t>(), int64_t(1) << 40);
  EXPECT_EQ(m.at("i64")[2].item<int64_t>(), 7);
  EXPECT_TRUE(torch::equal(m.at("i32"), torch::tensor({-7, 9}, torch::kInt)));
  EXPECT_EQ(m.at("u8").scalar_type(), torch::kByte);
  EXPECT_EQ(m.at("u8")[1].item<int>(), 255);
  EXPECT_EQ(m.at("bool").scalar_type(), torch::kBool);
  EXPECT_TRUE(m.at("bool")[0].item<bool>());
  EXPECT_FALSE(m.at("bool")[1].item<bool>());
  EXPECT_EQ(m.at("f64").scalar_type(), torch::kDouble);
  EXPECT_DOUBLE_EQ(m.at("f64")[0].item<double>(), 1.0 / 3.0);
  EXPECT_EQ(m.at("f16").scalar_type(), torch::kHalf);
  EXPECT_FLOAT_EQ(m.at("f16")[2].item<float>(), 65504.f);
  EXPECT_FLOAT_EQ(m.at("f16")[1].item<float>(), -2.f);
  EXPECT_EQ(m.at("scalar").dim(), 0);
  EXPECT_FLOAT_EQ(m.at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(m.at("empty").sizes(), torch::IntArrayRef({0, 3}));
}

}  // namespace

TEST(StateDict, ReadsViewsOffsetsAndDtypes) { check_cases(load_map(fixture("reader_cases.pth"))); }

TEST(StateDict, ReadsLegacyNonZipFormat) { check_cases(load_map(fixture("reader_legacy.pth"))); }

TEST(StateDict, ReadsPickleProtocol4) { check_cases(load_map(fixture("reader_proto4.pth"))); }

TEST(StateDict, ReadsOrderedDictWithMetadataInOrder) {
  const auto sd = load_torch_state_dict(fixture("reader_module.pth"));
  std::vector<std::string> keys;
  for (const auto& kv : sd) keys.push_back(kv.first);
  const std::vector<std::string> expected = {"0.weight",          "0.bias",           "1.weight", "1.bias",
                                             "1.running_mean",    "1.running_var",    "1.num_batches_tracked"};
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(sd[0].second.sizes(), torch::IntArrayRef({3, 2, 1, 1}));
  EXPECT_TRUE(torch::equal(sd[2].second, torch::ones({3})));   // BN weight init
  EXPECT_TRUE(torch::equal(sd[5].second, torch::ones({3})));   // running_var init
  EXPECT_EQ(sd[6].second.scalar_type(), torch::kLong);
  EXPECT_EQ(sd[6].second.dim(), 0);
  EXPECT_EQ(sd[6].second.item<int64_t>(), 0);
}

TEST(StateDict, TruncatedFileIsAnError) {
  std::ifstream in(fixture("reader_cases.pth"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 100u);
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t(10)}) {
    const auto p = temp_file("truncated.pth");
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(keep));
    const std::string msg = error_of(p.string());
    EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    EXPECT_NE(msg, "(no error)");
  }
  // Legacy format truncated inside the storage bytes.
  std::ifstream lin(fixture("reader_legacy.pth"), std::ios::binary);
  std::string lbytes((std::istreambuf_iterator<char>(lin)), std::istreambuf_iterator<char>());
  const auto p = temp_file("truncated_legacy.pth");
  std::ofstream(p, std::ios::binary).write(lbytes.data(), static_cast<std::streamsize>(lbytes.size() - 5));
  EXPECT_NE(error_of(p.string()).find("truncated"), std::string::npos) << error_of(p.string());
}

TEST(StateDict, ForeignFilesAreErrors) {
  const auto txt = temp_file("text.pth");
  std::ofstream(txt) << "hello, I am a text file\n";
  std::string msg = error_of(txt.string());
  EXPECT_NE(msg.find(txt.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a PyTorch file"), std::string::npos) << msg;

  msg = error_of(fixture("foreign.zip"));
  EXPECT_NE(msg.find("foreign.zip"), std::string::npos) << msg;
  EXPECT_NE(msg, "(no error)");

  msg = error_of(fixture("evil.pth"));
  EXPECT_NE(msg.find("unsupported pickle global"), std::string::npos) << msg;
  EXPECT_NE(msg.find("system"), std::string::npos) << msg;

  msg = error_of(temp_file("does_not_exist.pth").string());
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;

  // A pickle (not torch.save's legacy magic) and a garbage-opcode pickle.
  const auto pk = temp_file("plain.pkl");
  std::ofstream(pk, std::ios::binary) << std::string("\x80\x02}q\x00.", 6);
  msg = error_of(pk.string());
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
}

TEST(StateDict, UnsupportedOpcodeIsAnError) {
  const std::string msg = error_of(fixture("bad_opcode.pth"));
  EXPECT_NE(msg.find("bad_opcode.pth"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported pickle opcode 0x8f"), std::string::npos) << msg;
}

TEST(StateDict, CorruptedZipIsAnError) {
  // One flipped byte inside data.pkl: the zip CRC (or the pickle parser) rejects it, never an abort.
  std::ifstream in(fixture("reader_module.pth"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto pos = bytes.find(std::string("\x80\x02" "ccollections", 13));
  ASSERT_NE(pos, std::string::npos);
  bytes[pos + 2] = '\x8f';
  const auto p = temp_file("flipped.pth");
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const std::string msg = error_of(p.string());
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
  EXPECT_NE(msg, "(no error)");
}
