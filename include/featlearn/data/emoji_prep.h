// Emoji-4vendor ReID benchmark preparation (protocol: shared/benchmarks/emoji-reid.md).
// The same emoji (an identity) drawn by four vendors, each vendor acting as a camera:
//   camid 0 google    emoji-datasource-google@16.0.0   package/img/google/64/*.png
//   camid 1 twitter   emoji-datasource-twitter@16.0.0  package/img/twitter/64/*.png
//   camid 2 joypixels emojione-assets@4.5.0            package/png/64/*.png
//   camid 3 openmoji  openmoji@17.0.0                  package/color/svg/*.svg (rsvg-convert -w 64 -h 64)
// Output: <out>/images/<vendor>/<key>.png (64x64 RGB over white), train_list.txt and test_list.txt
// (`path label camid`, ordered by identity then vendor), and a done-marker so a rerun is instant.
// External programs: npm (fetch), tar (extract), rsvg-convert (librsvg2-bin, rasterize).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace featlearn {

struct EmojiPrepOptions {
  std::string out_dir = "dataset/emoji_reid";   // images/ and the two lists go here
  std::string cache_dir = "dataset/.npm_cache"; // npm tarballs and their extracted image folders
  int jobs = 0;                                 // parallel rsvg-convert / image workers; 0 = all cores
  bool verbose = true;                          // progress lines on stderr
};

struct EmojiPrepSummary {
  int64_t identities = 0;
  int64_t train_images = 0, train_ids = 0;
  int64_t test_images = 0, test_ids = 0;
};

// Fetches, extracts, rasterizes, composites and writes the benchmark. Idempotent: tarballs, extracted
// folders and images already present are reused; with the done-marker present and every listed image on
// disk it returns at once. Throws featlearn::Error when npm/tar/rsvg-convert fail or are missing.
EmojiPrepSummary prepare_emoji_reid(const EmojiPrepOptions& options);

// ---- Pure helpers (unit-tested) ----

struct EmojiVendor {
  const char* name;      // folder name under images/ ("google")
  const char* package;   // npm package name
  const char* version;   // pinned version
  const char* image_dir; // folder inside the tarball holding the images
  const char* extension; // ".png" or ".svg"
};
// The four vendors in camid order.
const std::array<EmojiVendor, 4>& emoji_vendors();

// Identity key of an image file stem: lower-cased, split on '-', `fe0f` components dropped, re-joined
// with '-' ("263A-FE0F" -> "263a", "1F468-200D-1F469" -> "1f468-200d-1f469").
std::string emoji_identity_key(const std::string& file_stem);
// The split rule: train iff zlib crc32(key as UTF-8 bytes) is even.
bool emoji_is_train(const std::string& key);
// One list line without the newline: "images/<vendor>/<key>.png <label> <camid>".
std::string emoji_list_line(const std::string& vendor, const std::string& key, int64_t label, int camid);

struct EmojiLists {
  std::vector<std::string> identities;  // keys present in every vendor, sorted; global label = index
  std::vector<std::string> train_lines; // labels relabelled 0..C-1 in global label order
  std::vector<std::string> test_lines;  // global labels
  EmojiPrepSummary summary;
};
// Builds the split and both lists from each vendor's identity keys (one vector per vendor, camid order;
// duplicates allowed).
EmojiLists build_emoji_lists(const std::vector<std::vector<std::string>>& keys_per_vendor);

// Composites an 8-bit image over opaque white and returns 8-bit BGR. Accepts 1 (gray), 3 (BGR) or 4
// (BGRA) channels. Uses Pillow's Image.alpha_composite integer arithmetic (7 extra bits, rounded /255),
// so pixels equal the reference implementation's exactly.
cv::Mat emoji_composite_over_white(const cv::Mat& image);

}  // namespace featlearn
