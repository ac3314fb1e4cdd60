// Emoji-4vendor preparation: the pure rules of the protocol (no network, no external programs).
#include <featlearn/common/error.h>
#include <featlearn/data/emoji_prep.h>

#include <gtest/gtest.h>

#include <opencv2/core.hpp>

#include <filesystem>
#include <fstream>

namespace featlearn {
namespace {

TEST(EmojiPrep, IdentityKeyLowerCasesAndDropsFe0f) {
  EXPECT_EQ(emoji_identity_key("1F468-200D-1F469"), "1f468-200d-1f469");
  EXPECT_EQ(emoji_identity_key("263a-fe0f"), "263a");
  EXPECT_EQ(emoji_identity_key("263A-FE0F"), "263a");
  EXPECT_EQ(emoji_identity_key("0023-FE0F-20E3"), "0023-20e3");
  EXPECT_EQ(emoji_identity_key("1f441-fe0f-200d-1f5e8-fe0f"), "1f441-200d-1f5e8");
  EXPECT_EQ(emoji_identity_key("FE0F-263a"), "263a");
  EXPECT_EQ(emoji_identity_key("1f600"), "1f600");
  EXPECT_EQ(emoji_identity_key("fe0f"), "");
  // Like Python's str.split('-'): empty components are kept.
  EXPECT_EQ(emoji_identity_key("a--B"), "a--b");
  // Only whole components are dropped.
  EXPECT_EQ(emoji_identity_key("fe0f0-1fe0f"), "fe0f0-1fe0f");
}

TEST(EmojiPrep, SplitIsZlibCrc32Parity) {
  // Expected parities from Python's zlib.crc32(key.encode()).
  EXPECT_FALSE(emoji_is_train("1f468-200d-1f469"));  // 3984762669
  EXPECT_TRUE(emoji_is_train("263a"));               // 2505982698
  EXPECT_FALSE(emoji_is_train("1f600"));             // 2639745417
  EXPECT_TRUE(emoji_is_train("0023-20e3"));          // 279283330
  EXPECT_TRUE(emoji_is_train("1f44d-1f3fd"));        // 894625792
  EXPECT_TRUE(emoji_is_train(""));                   // 0
  EXPECT_FALSE(emoji_is_train("a"));                 // 3904355907
}

TEST(EmojiPrep, ListLineIsVeriWildFormat) {
  EXPECT_EQ(emoji_list_line("google", "263a", 944, 0), "images/google/263a.png 944 0");
  EXPECT_EQ(emoji_list_line("openmoji", "0023-20e3", 0, 3), "images/openmoji/0023-20e3.png 0 3");
}

TEST(EmojiPrep, VendorsInCamidOrder) {
  const auto& v = emoji_vendors();
  EXPECT_STREQ(v[0].name, "google");
  EXPECT_STREQ(v[1].name, "twitter");
  EXPECT_STREQ(v[2].name, "joypixels");
  EXPECT_STREQ(v[3].name, "openmoji");
  EXPECT_STREQ(v[2].package, "emojione-assets");
  EXPECT_STREQ(v[3].version, "17.0.0");
}

TEST(EmojiPrep, ListsKeepCommonKeysSortedAndRelabelTrain) {
  // Keys: 0023-20e3 (train), 1f44d-1f3fd (train), 1f600 (test), 263a (train); "only-google" and
  // "no-openmoji" are missing from some vendor and must be dropped. Duplicates are harmless.
  std::vector<std::vector<std::string>> keys = {
      {"263a", "1f600", "only-google", "0023-20e3", "1f44d-1f3fd", "no-openmoji"},
      {"1f600", "263a", "0023-20e3", "1f44d-1f3fd", "no-openmoji", "263a"},
      {"0023-20e3", "263a", "1f44d-1f3fd", "1f600", "no-openmoji"},
      {"1f44d-1f3fd", "1f600", "263a", "0023-20e3"},
  };
  EmojiLists lists = build_emoji_lists(keys);
  EXPECT_EQ(lists.identities, (std::vector<std::string>{"0023-20e3", "1f44d-1f3fd", "1f600", "263a"}));
  const std::vector<std::string> train = {
      "images/google/0023-20e3.png 0 0",   "images/twitter/0023-20e3.png 0 1",
      "images/joypixels/0023-20e3.png 0 2", "images/openmoji/0023-20e3.png 0 3",
      "images/google/1f44d-1f3fd.png 1 0", "images/twitter/1f44d-1f3fd.png 1 1",
      "images/joypixels/1f44d-1f3fd.png 1 2", "images/openmoji/1f44d-1f3fd.png 1 3",
      "images/google/263a.png 2 0",        "images/twitter/263a.png 2 1",
      "images/joypixels/263a.png 2 2",     "images/openmoji/263a.png 2 3",
  };
  const std::vector<std::string> test = {
      "images/google/1f600.png 2 0", "images/twitter/1f600.png 2 1",  // global label 2 kept
      "images/joypixels/1f600.png 2 2", "images/openmoji/1f600.png 2 3",
  };
  EXPECT_EQ(lists.train_lines, train);
  EXPECT_EQ(lists.test_lines, test);
  EXPECT_EQ(lists.summary.identities, 4);
  EXPECT_EQ(lists.summary.train_images, 12);
  EXPECT_EQ(lists.summary.train_ids, 3);
  EXPECT_EQ(lists.summary.test_images, 4);
  EXPECT_EQ(lists.summary.test_ids, 1);
}

TEST(EmojiPrep, CompositeMatchesPillowAlphaComposite) {
  // RGBA pixels and Pillow 9.4's Image.alpha_composite(white, im).convert("RGB") results.
  const int rgba[6][4] = {{200, 100, 0, 128}, {10, 20, 30, 1}, {255, 0, 77, 254},
                          {1, 2, 3, 0},       {9, 8, 7, 255},  {0, 0, 0, 127}};
  const int rgb[6][3] = {{227, 177, 127}, {254, 254, 254}, {255, 1, 78}, {255, 255, 255}, {9, 8, 7}, {128, 128, 128}};
  cv::Mat bgra(1, 6, CV_8UC4);
  for (int i = 0; i < 6; ++i)
    bgra.at<cv::Vec4b>(0, i) = cv::Vec4b(rgba[i][2], rgba[i][1], rgba[i][0], rgba[i][3]);
  cv::Mat out = emoji_composite_over_white(bgra);
  ASSERT_EQ(out.type(), CV_8UC3);
  for (int i = 0; i < 6; ++i) {
    const cv::Vec3b p = out.at<cv::Vec3b>(0, i);
    EXPECT_EQ(p[2], rgb[i][0]) << "pixel " << i;
    EXPECT_EQ(p[1], rgb[i][1]) << "pixel " << i;
    EXPECT_EQ(p[0], rgb[i][2]) << "pixel " << i;
  }
}

TEST(EmojiPrep, CompositeOpaqueInputsAndErrors) {
  cv::Mat gray(2, 2, CV_8UC1, cv::Scalar(42));
  cv::Mat g = emoji_composite_over_white(gray);
  ASSERT_EQ(g.type(), CV_8UC3);
  EXPECT_EQ(g.at<cv::Vec3b>(1, 1), cv::Vec3b(42, 42, 42));
  cv::Mat bgr(1, 1, CV_8UC3, cv::Scalar(1, 2, 3));
  EXPECT_EQ(emoji_composite_over_white(bgr).at<cv::Vec3b>(0, 0), cv::Vec3b(1, 2, 3));
  cv::Mat f(1, 1, CV_32FC4);
  try {
    emoji_composite_over_white(f);
    FAIL() << "expected featlearn::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("8-bit"), std::string::npos) << e.what();
  }
}

TEST(EmojiPrep, CompletedOutputIsReusedWithoutNetwork) {
  // A done-marker plus lists whose images exist: prepare_emoji_reid returns the recorded counts without
  // running npm (the cache folder does not even exist).
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(FEATLEARN_BINARY_DIR) / "test_emoji_prep_reuse";
  fs::remove_all(dir);
  fs::create_directories(dir / "images/google");
  std::ofstream(dir / "images/google/263a.png") << "x";
  std::ofstream(dir / "images/google/1f600.png") << "x";
  std::ofstream(dir / "train_list.txt") << "images/google/263a.png 0 0\n";
  std::ofstream(dir / "test_list.txt") << "images/google/1f600.png 2 0\n";
  std::ofstream(dir / ".emoji_prep_done") << "featlearn-emoji-prep 1\nidentities 2\ntrain_images 1\n"
                                             "train_ids 1\ntest_images 1\ntest_ids 1\n";
  EmojiPrepOptions o;
  o.out_dir = dir.string();
  o.cache_dir = (dir / "no_cache").string();
  o.verbose = false;
  EmojiPrepSummary s = prepare_emoji_reid(o);
  EXPECT_EQ(s.identities, 2);
  EXPECT_EQ(s.train_images, 1);
  EXPECT_EQ(s.test_ids, 1);
  EXPECT_FALSE(fs::exists(dir / "no_cache"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace featlearn
