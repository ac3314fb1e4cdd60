// load_pdparams against files written with numpy + pickle the way paddle.save writes them
// (tests/fixtures/make_pdparams.py).
#include <featlearn/io/pdparams.h>

#include <featlearn/common/error.h>

#include <gtest/gtest.h>

#include "../fixture_path.h"
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <map>

using featlearn::Error;
using featlearn::is_pdparams_file;
using featlearn::load_pdparams;

namespace {

std::string error_of(const std::string& path) {
  try {
    load_pdparams(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const std::string& name, const std::string& part) {
  const std::string path = fixture("pdparams/" + name);
  const std::string msg = error_of(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(part), std::string::npos) << msg;
}

void check_cases(const std::string& name) {
  SCOPED_TRACE(name);
  const auto sd = load_pdparams(fixture("pdparams/" + name));
  std::map<std::string, torch::Tensor> m;
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) {
    m[k] = v;
    keys.push_back(k);
  }
  // File order kept; the names table is not a tensor.
  const std::vector<std::string> expected = {"f32", "fortran", "f64",    "f16",   "i64",  "i32",
                                             "u8",  "bool",    "scalar", "empty", "pair"};
  EXPECT_EQ(keys, expected);
  const auto base = torch::arange(6, torch::kFloat).reshape({2, 3});
  EXPECT_TRUE(torch::equal(m.at("f32"), base));
  EXPECT_TRUE(torch::equal(m.at("fortran"), base));  // Fortran-ordered bytes, same values
  EXPECT_TRUE(m.at("fortran").is_contiguous());
  EXPECT_EQ(m.at("f64").scalar_type(), torch::kDouble);
  EXPECT_DOUBLE_EQ(m.at("f64")[0].item<double>(), 1.0 / 3.0);
  EXPECT_EQ(m.at("f16").scalar_type(), torch::kHalf);
  EXPECT_FLOAT_EQ(m.at("f16")[2].item<float>(), 65504.f);
  EXPECT_FLOAT_EQ(m.at("f16")[1].item<float>(), -2.f);
  EXPECT_EQ(m.at("i64").scalar_type(), torch::kLong);
  EXPECT_EQ(m.at("i64")[0].item<int64_t>(), -3);
  EXPECT_EQ(m.at("i64")[1].item<int64_t>(), int64_t(1) << 40);
  EXPECT_TRUE(torch::equal(m.at("i32"), torch::tensor({-7, 9}, torch::kInt)));
  EXPECT_EQ(m.at("u8").scalar_type(), torch::kByte);
  EXPECT_EQ(m.at("u8")[1].item<int>(), 255);
  EXPECT_EQ(m.at("bool").scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(m.at("bool"), torch::tensor({true, false, true})));
  EXPECT_EQ(m.at("scalar").dim(), 0);
  EXPECT_FLOAT_EQ(m.at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(m.at("empty").sizes(), torch::IntArrayRef({0, 3}));
  EXPECT_TRUE(torch::equal(m.at("pair"), torch::tensor({1.5f, 2.5f})));  // paddle's (name, array) form
}

}  // namespace

TEST(Pdparams, ReadsDtypesAndLayoutsInProtocols2To4) {
  check_cases("reader_cases_p2.pdparams");  // bytes as _codecs.encode(str, 'latin1')
  check_cases("reader_cases_p3.pdparams");  // BINBYTES
  check_cases("reader_cases_p4.pdparams");  // FRAME, MEMOIZE, SHORT_BINBYTES
}

TEST(Pdparams, CorruptTruncatedAndForeignFilesAreErrorsNamingTheFile) {
  expect_error("truncated.pdparams", "truncated");
  expect_error("garbage.pdparams", "unsupported pickle opcode 0xff");
  expect_error("non_dict.pdparams", "the pickled object is a list, not a state dict");
  expect_error("evil.pdparams", "unsupported pickle global 'posix.system'");
  expect_error("object_array.pdparams", "dtype=object");
  expect_error("big_endian.pdparams", "big-endian");
  expect_error("not_array.pdparams", "the value of 'w' is a int, not an array");
  // A torch.save zip and a legacy torch file are not Paddle files.
  expect_error("../reader_cases.pth", "zip archive");
  expect_error("../reader_legacy.pth", "legacy torch.save");
  const std::string missing = fixture("pdparams") + "/no_such.pdparams";
  EXPECT_NE(error_of(missing).find("cannot open"), std::string::npos) << error_of(missing);
}

TEST(Pdparams, EveryTruncationIsAnErrorNotACrash) {
  std::ifstream in(fixture("pdparams/reader_cases_p4.pdparams"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string p = fixture("pdparams") + "/cut.tmp.pdparams";
  for (size_t keep = 0; keep < bytes.size(); ++keep) {
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(keep));
    EXPECT_NE(error_of(p), "(no error)") << keep;
  }
  std::remove(p.c_str());
}

TEST(Pdparams, DetectsPaddleFilesByNameOrContent) {
  EXPECT_TRUE(is_pdparams_file(fixture("pdparams/reader_cases_p4.pdparams")));
  EXPECT_FALSE(is_pdparams_file(fixture("reader_cases.pth")));   // zip
  EXPECT_FALSE(is_pdparams_file(fixture("reader_legacy.pth")));  // torch's magic number
  // A Paddle pickle under another name is recognized by its content.
  const std::string p = fixture("pdparams") + "/renamed.tmp.pkl";
  {
    std::ifstream in(fixture("pdparams/reader_cases_p4.pdparams"), std::ios::binary);
    std::ofstream(p, std::ios::binary) << in.rdbuf();
  }
  EXPECT_TRUE(is_pdparams_file(p));
  std::remove(p.c_str());
}
