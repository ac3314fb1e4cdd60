// Emoji-4vendor ReID benchmark preparation; see include/featlearn/data/emoji_prep.h and
// shared/benchmarks/emoji-reid.md. npm, tar and rsvg-convert are run as programs (no library for them
// in our dependency set); decoding, compositing and encoding use OpenCV.
#include <featlearn/common/atomic_file.h>
#include <featlearn/data/emoji_prep.h>

#include <featlearn/common/error.h>

#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace fs = std::filesystem;

namespace featlearn {
namespace {

constexpr int kEmojiSize = 64;
constexpr const char* kDoneMarker = ".emoji_prep_done";
constexpr const char* kDoneFormat = "featlearn-emoji-prep 1";
constexpr const char* kExtractedMarker = ".featlearn_extracted";

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// Runs `sh -c command`; returns the exit status (128 + signal when killed, -1 when sh could not start).
int run_shell(const std::string& command) {
  int status = std::system(command.c_str());
  if (status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

bool have_program(const std::string& name) {
  return run_shell("command -v " + shell_quote(name) + " >/dev/null 2>&1") == 0;
}

void require_program(const std::string& name, const std::string& hint) {
  if (!have_program(name)) throw Error("prepare-emoji: `" + name + "` not found on PATH; " + hint);
}

// Readers never see a partial file (common/atomic_file.h).
void write_file_atomic(const fs::path& path, const std::string& text) {
  featlearn::write_file_atomic(path.string(), text);
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string summary_text(const EmojiPrepSummary& s) {
  std::ostringstream o;
  o << kDoneFormat << "\n"
    << "identities " << s.identities << "\n"
    << "train_images " << s.train_images << "\n"
    << "train_ids " << s.train_ids << "\n"
    << "test_images " << s.test_images << "\n"
    << "test_ids " << s.test_ids << "\n";
  return o.str();
}

// The fast path: the done-marker parses and every image named by both lists exists.
bool read_complete_output(const fs::path& out, EmojiPrepSummary* summary) {
  std::ifstream m(out / kDoneMarker);
  if (!m) return false;
  std::string header;
  if (!std::getline(m, header) || header != kDoneFormat) return false;
  std::map<std::string, int64_t> v;
  std::string k;
  int64_t x;
  while (m >> k >> x) v[k] = x;
  for (const char* key : {"identities", "train_images", "train_ids", "test_images", "test_ids"})
    if (!v.count(key)) return false;
  EmojiPrepSummary s{v["identities"], v["train_images"], v["train_ids"], v["test_images"], v["test_ids"]};
  auto check_list = [&](const char* name, int64_t expected_lines) {
    std::ifstream f(out / name);
    if (!f) return false;
    std::string line;
    int64_t n = 0;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      ++n;
      if (!fs::exists(out / line.substr(0, line.find(' ')))) return false;
    }
    return n == expected_lines;
  };
  if (!check_list("train_list.txt", s.train_images) || !check_list("test_list.txt", s.test_images)) return false;
  *summary = s;
  return true;
}

// npm pack NAME@VERSION into the cache (skipped when the tarball is there). Packs into a scratch folder
// and renames, so an interrupted download never leaves a truncated tarball under the final name.
fs::path fetch_tarball(const EmojiVendor& v, const fs::path& cache, bool verbose) {
  fs::path tgz = cache / (std::string(v.package) + "-" + v.version + ".tgz");
  if (fs::exists(tgz)) return tgz;
  const std::string spec = std::string(v.package) + "@" + v.version;
  if (verbose) std::cerr << "prepare-emoji: npm pack " << spec << "\n";
  fs::path scratch = cache / (std::string(".pack-") + v.name);
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  int rc = run_shell("cd " + shell_quote(scratch.string()) + " && npm pack --silent " + shell_quote(spec) +
                     " >/dev/null");
  fs::path packed = scratch / tgz.filename();
  if (rc != 0 || !fs::exists(packed)) {
    fs::remove_all(scratch);
    throw Error("prepare-emoji: npm pack " + spec + " failed (exit " + std::to_string(rc) +
                "): is the npm registry reachable? (or place " + tgz.filename().string() + " in " +
                cache.string() + " by hand)");
  }
  fs::rename(packed, tgz);
  fs::remove_all(scratch);
  return tgz;
}

// Extracts only the vendor's image folder into cache/<vendor>/ (skipped when done before).
fs::path extract_images(const EmojiVendor& v, const fs::path& tgz, const fs::path& cache, bool verbose) {
  fs::path dir = cache / v.name;
  fs::path images = dir / v.image_dir;
  if (fs::exists(dir / kExtractedMarker) && fs::is_directory(images)) return images;
  if (verbose) std::cerr << "prepare-emoji: extracting " << v.image_dir << " from " << tgz.filename().string() << "\n";
  fs::remove_all(dir);
  fs::create_directories(dir);
  int rc = run_shell("tar -xzf " + shell_quote(tgz.string()) + " -C " + shell_quote(dir.string()) + " " +
                     shell_quote(v.image_dir));
  if (rc != 0 || !fs::is_directory(images)) {
    throw Error("prepare-emoji: extracting " + std::string(v.image_dir) + " from " + tgz.string() +
                " failed (tar exit " + std::to_string(rc) + "); delete the tarball to download it again");
  }
  write_file_atomic(dir / kExtractedMarker, "ok\n");
  return images;
}

// key -> source file for one vendor. Should two files give the same key, the smaller file name wins
// (deterministic; the pinned versions have no such collision).
std::map<std::string, fs::path> vendor_sources(const EmojiVendor& v, const fs::path& images, bool verbose) {
  std::map<std::string, fs::path> out;
  for (const auto& e : fs::directory_iterator(images)) {
    if (!e.is_regular_file() || e.path().extension() != v.extension) continue;
    std::string key = emoji_identity_key(e.path().stem().string());
    auto it = out.find(key);
    if (it == out.end()) {
      out.emplace(key, e.path());
    } else {
      if (verbose)
        std::cerr << "prepare-emoji: warning: " << v.name << ": " << it->second.filename().string() << " and "
                  << e.path().filename().string() << " share the key " << key << "\n";
      if (e.path().filename() < it->second.filename()) it->second = e.path();
    }
  }
  return out;
}

// Runs fn(i) for i in [0, n) on `jobs` threads; rethrows the first exception after all threads end.
template <typename Fn>
void parallel_for(size_t n, int jobs, Fn fn) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::exception_ptr first;
  auto worker = [&] {
    for (;;) {
      size_t i = next++;
      if (i >= n) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
        next = n;  // stop the others early
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < jobs; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

// Rasterizes SVGs with rsvg-convert, `jobs` shell scripts at once (one sh per chunk, not per file).
void rasterize_svgs(const std::vector<std::pair<fs::path, fs::path>>& svg_to_png, const fs::path& scratch,
                    int jobs) {
  if (svg_to_png.empty()) return;
  const size_t chunks = std::min<size_t>(svg_to_png.size(), static_cast<size_t>(jobs) * 4);
  std::vector<fs::path> scripts;
  for (size_t c = 0; c < chunks; ++c) {
    std::string text = "set -u\n";
    for (size_t i = c; i < svg_to_png.size(); i += chunks) {
      const auto& [svg, png] = svg_to_png[i];
      text += "rsvg-convert -w " + std::to_string(kEmojiSize) + " -h " + std::to_string(kEmojiSize) + " -o " +
              shell_quote(png.string()) + " " + shell_quote(svg.string()) +
              " || { echo " + shell_quote("rsvg-convert failed on " + svg.string()) + " >&2; exit 1; }\n";
    }
    scripts.push_back(scratch / ("rasterize_" + std::to_string(c) + ".sh"));
    write_file_atomic(scripts.back(), text);
  }
  parallel_for(scripts.size(), jobs, [&](size_t c) {
    int rc = run_shell("sh " + shell_quote(scripts[c].string()));
    if (rc != 0)
      throw Error("prepare-emoji: rasterizing SVGs failed (script " + scripts[c].string() + ", exit " +
                  std::to_string(rc) + "); see the message above");
  });
}

// Decodes, composites over white, resizes to 64x64 if needed and writes a PNG atomically.
void write_emoji_image(const fs::path& src, const fs::path& dst) {
  cv::Mat img = cv::imread(src.string(), cv::IMREAD_UNCHANGED);
  if (img.empty()) throw Error("prepare-emoji: cannot decode image " + src.string() + " (corrupt download?)");
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  if (img.depth() != CV_8U)
    throw Error("prepare-emoji: unsupported pixel depth in " + src.string() + " (expected 8- or 16-bit)");
  cv::Mat rgb = emoji_composite_over_white(img);
  if (rgb.rows != kEmojiSize || rgb.cols != kEmojiSize) {
    // Compositing first makes the resize of opaque pixels (no colour bleeding from transparent ones).
    // Pillow's bicubic differs slightly from OpenCV's; the pinned sources are all 64x64 already.
    int interp = (rgb.rows > kEmojiSize || rgb.cols > kEmojiSize) ? cv::INTER_AREA : cv::INTER_CUBIC;
    cv::resize(rgb, rgb, cv::Size(kEmojiSize, kEmojiSize), 0, 0, interp);
  }
  std::vector<uchar> png;
  if (!cv::imencode(".png", rgb, png)) throw Error("prepare-emoji: PNG encoding failed for " + dst.string());
  write_file_atomic(dst, std::string(png.begin(), png.end()));
}

}  // namespace

const std::array<EmojiVendor, 4>& emoji_vendors() {
  static const std::array<EmojiVendor, 4> vendors = {{
      {"google", "emoji-datasource-google", "16.0.0", "package/img/google/64", ".png"},
      {"twitter", "emoji-datasource-twitter", "16.0.0", "package/img/twitter/64", ".png"},
      {"joypixels", "emojione-assets", "4.5.0", "package/png/64", ".png"},
      {"openmoji", "openmoji", "17.0.0", "package/color/svg", ".svg"},
  }};
  return vendors;
}

std::string emoji_identity_key(const std::string& file_stem) {
  std::string key;
  bool first = true;
  size_t start = 0;
  for (;;) {
    size_t end = file_stem.find('-', start);
    std::string part = file_stem.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::transform(part.begin(), part.end(), part.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (part != "fe0f") {
      if (!first) key += '-';
      key += part;
      first = false;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return key;
}

bool emoji_is_train(const std::string& key) {
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(key.data()), static_cast<uInt>(key.size()));
  return crc % 2 == 0;
}

std::string emoji_list_line(const std::string& vendor, const std::string& key, int64_t label, int camid) {
  return "images/" + vendor + "/" + key + ".png " + std::to_string(label) + " " + std::to_string(camid);
}

EmojiLists build_emoji_lists(const std::vector<std::vector<std::string>>& keys_per_vendor) {
  const auto& vendors = emoji_vendors();
  FL_ASSERT(keys_per_vendor.size() == vendors.size(), "one key list per vendor");
  std::set<std::string> common(keys_per_vendor[0].begin(), keys_per_vendor[0].end());
  for (size_t v = 1; v < keys_per_vendor.size(); ++v) {
    std::set<std::string> present(keys_per_vendor[v].begin(), keys_per_vendor[v].end());
    std::set<std::string> kept;
    for (const auto& k : common)
      if (present.count(k)) kept.insert(k);
    common.swap(kept);
  }
  EmojiLists out;
  out.identities.assign(common.begin(), common.end());  // std::set: sorted by byte order, like Python's sorted()
  int64_t train_label = 0;
  for (size_t label = 0; label < out.identities.size(); ++label) {
    const std::string& key = out.identities[label];
    const bool train = emoji_is_train(key);
    for (size_t cam = 0; cam < vendors.size(); ++cam) {
      if (train)
        out.train_lines.push_back(emoji_list_line(vendors[cam].name, key, train_label, static_cast<int>(cam)));
      else
        out.test_lines.push_back(
            emoji_list_line(vendors[cam].name, key, static_cast<int64_t>(label), static_cast<int>(cam)));
    }
    if (train) ++train_label;  // relabel 0..C-1 in increasing global label order
    (train ? out.summary.train_ids : out.summary.test_ids) += 1;
  }
  out.summary.identities = static_cast<int64_t>(out.identities.size());
  out.summary.train_images = static_cast<int64_t>(out.train_lines.size());
  out.summary.test_images = static_cast<int64_t>(out.test_lines.size());
  return out;
}

cv::Mat emoji_composite_over_white(const cv::Mat& image) {
  if (image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3 && image.channels() != 4))
    throw Error("emoji_composite_over_white: expected an 8-bit gray, BGR or BGRA image");
  if (image.channels() == 1) {
    cv::Mat bgr;
    cv::cvtColor(image, bgr, cv::COLOR_GRAY2BGR);
    return bgr;
  }
  if (image.channels() == 3) return image.clone();
  // Pillow's ImagingAlphaComposite with an opaque white destination, same integer steps so the result is
  // bit-identical: coefficients carry 7 extra bits, and x/255 is computed as ((x >> 8) + x) >> 8 after
  // adding half.
  constexpr uint32_t kBits = 7;
  constexpr uint32_t dst_c = 255, dst_a = 255;
  auto div255 = [](uint32_t x) { return ((x >> 8) + x) >> 8; };
  cv::Mat out(image.rows, image.cols, CV_8UC3);
  for (int y = 0; y < image.rows; ++y) {
    const uchar* s = image.ptr<uchar>(y);
    uchar* o = out.ptr<uchar>(y);
    for (int x = 0; x < image.cols; ++x, s += 4, o += 3) {
      const uint32_t a = s[3];
      if (a == 0) {
        o[0] = o[1] = o[2] = static_cast<uchar>(dst_c);
        continue;
      }
      const uint32_t blend = dst_a * (255 - a);
      const uint32_t outa255 = a * 255 + blend;
      const uint32_t coef1 = a * 255 * 255 * (1u << kBits) / outa255;
      const uint32_t coef2 = 255 * (1u << kBits) - coef1;
      for (int c = 0; c < 3; ++c) {
        const uint32_t t = s[c] * coef1 + dst_c * coef2;
        o[c] = static_cast<uchar>(div255(t + (0x80u << kBits)) >> kBits);
      }
    }
  }
  return out;
}

EmojiPrepSummary prepare_emoji_reid(const EmojiPrepOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(options.out_dir), cache(options.cache_dir);
  const bool verbose = options.verbose;
  int jobs = options.jobs > 0 ? options.jobs : static_cast<int>(std::thread::hardware_concurrency());
  jobs = std::max(jobs, 1);

  EmojiPrepSummary done;
  if (read_complete_output(out, &done)) {
    if (verbose) std::cerr << "prepare-emoji: " << out.string() << " is complete (" << kDoneMarker << ")\n";
    return done;
  }

  require_program("npm", "install Node.js/npm (Debian: apt-get install npm)");
  require_program("tar", "install tar");
  require_program("rsvg-convert", "install librsvg2-bin (scripts/setup.sh does)");
  try {
    fs::create_directories(cache);
    fs::create_directories(out);
  } catch (const fs::filesystem_error& e) {
    throw Error(std::string("prepare-emoji: cannot create the output/cache folders: ") + e.what());
  }

  const auto& vendors = emoji_vendors();
  std::vector<std::map<std::string, fs::path>> sources;
  std::vector<std::vector<std::string>> keys;
  for (const auto& v : vendors) {
    fs::path tgz = fetch_tarball(v, cache, verbose);
    fs::path images = extract_images(v, tgz, cache, verbose);
    sources.push_back(vendor_sources(v, images, verbose));
    keys.emplace_back();
    for (const auto& [k, p] : sources.back()) keys.back().push_back(k);
  }
  EmojiLists lists = build_emoji_lists(keys);
  if (lists.identities.empty())
    throw Error("prepare-emoji: no identity is present in all four vendors; are the tarballs in " +
                cache.string() + " the pinned versions? Delete them to download again");

  // Images still missing (a rerun after an interruption only does the rest).
  struct Todo {
    fs::path src, dst;
  };
  std::vector<Todo> todo;
  std::vector<std::pair<fs::path, fs::path>> svgs;
  const fs::path scratch = out / ".prep_tmp";
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  for (const auto& v : vendors) fs::create_directories(out / "images" / v.name);
  for (const auto& key : lists.identities) {
    for (size_t cam = 0; cam < vendors.size(); ++cam) {
      fs::path dst = out / "images" / vendors[cam].name / (key + ".png");
      if (fs::exists(dst)) continue;
      fs::path src = sources[cam].at(key);
      if (src.extension() == ".svg") {
        fs::path raster = scratch / (key + ".png");
        svgs.emplace_back(src, raster);
        src = raster;
      }
      todo.push_back({src, dst});
    }
  }
  if (verbose && !svgs.empty())
    std::cerr << "prepare-emoji: rasterizing " << svgs.size() << " SVGs (" << jobs << " jobs)\n";
  rasterize_svgs(svgs, scratch, jobs);
  if (verbose && !todo.empty()) std::cerr << "prepare-emoji: writing " << todo.size() << " images\n";
  parallel_for(todo.size(), jobs, [&](size_t i) { write_emoji_image(todo[i].src, todo[i].dst); });
  fs::remove_all(scratch);

  write_file_atomic(out / "train_list.txt", join_lines(lists.train_lines));
  write_file_atomic(out / "test_list.txt", join_lines(lists.test_lines));
  write_file_atomic(out / kDoneMarker, summary_text(lists.summary));
  if (verbose) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cerr << "prepare-emoji: done in " << static_cast<int>(s * 10) / 10.0 << " s\n";
  }
  return lists.summary;
}

}  // namespace featlearn
