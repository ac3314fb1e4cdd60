// `pretrained: True` / a URL (model/pretrained.h) through the weights cache, served by an in-process cpp-httplib
// server via FEATLEARN_WEIGHTS_MIRROR; the recorded table; describe's deferral.
#include <featlearn/config/config.h>
#include <featlearn/io/download.h>
#include <featlearn/io/state_dict.h>
#include <featlearn/model/module_base.h>
#include <featlearn/model/pretrained.h>
#include <featlearn/model/stop_layer.h>

#include "../fixture_path.h"
#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace featlearn;
using featlearn::test::error_of;

namespace {

// Every test of this program that builds a backbone with `pretrained: True` (e.g. to check its error message)
// must neither download real weights nor write to ~/.cache: downloads go to a closed local port and the cache to
// a temporary directory. The tests below point the mirror at their own server and restore this afterwards.
const std::string kClosedMirror = "http://127.0.0.1:1";
const fs::path kTestHome = fs::temp_directory_path() / ("featlearn_test_home_" + std::to_string(::getpid()));
const bool kHermeticDownloads = [] {
  ::setenv("FEATLEARN_WEIGHTS_MIRROR", kClosedMirror.c_str(), 1);
  ::setenv("FEATLEARN_HOME", kTestHome.c_str(), 1);
  return true;
}();

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Serves files from memory on 127.0.0.1 and becomes FEATLEARN_WEIGHTS_MIRROR with a fresh FEATLEARN_HOME.
class MirrorServer {
 public:
  MirrorServer() {
    port_ = srv_.bind_to_any_port("127.0.0.1");
    srv_.Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      requested_.push_back(req.path);
      auto it = files_.find(req.path);
      if (it == files_.end()) {
        res.status = 404;
        return;
      }
      res.set_content(it->second, "application/octet-stream");
    });
    thread_ = std::thread([this] { srv_.listen_after_bind(); });
    while (!srv_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    home_ = kTestHome / ("case_" + std::to_string(++cases_));
    fs::remove_all(home_);
    ::setenv("FEATLEARN_WEIGHTS_MIRROR", origin().c_str(), 1);
    ::setenv("FEATLEARN_HOME", home_.c_str(), 1);
  }
  ~MirrorServer() {
    srv_.stop();
    thread_.join();
    fs::remove_all(home_);
    ::setenv("FEATLEARN_WEIGHTS_MIRROR", kClosedMirror.c_str(), 1);
    ::setenv("FEATLEARN_HOME", kTestHome.c_str(), 1);
  }
  std::string origin() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void serve(const std::string& path, const std::string& bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    files_[path] = bytes;
  }
  std::vector<std::string> requested() {
    std::lock_guard<std::mutex> lock(mu_);
    return requested_;
  }
  fs::path weights_dir() const { return home_ / "weights"; }

 private:
  static inline int cases_ = 0;
  httplib::Server srv_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, std::string> files_;
  std::vector<std::string> requested_;
  fs::path home_;
};

BackbonePtr build(const std::string& backbone_yaml) {
  auto cfg = Config::from_string("Arch:\n  Backbone: " + backbone_yaml + "\n", "test.yaml");
  return build_backbone(cfg["Arch"]["Backbone"], cfg["Arch"]["BackboneStopLayer"]);
}

std::string resolve(const std::string& backbone_yaml, const std::string& file) {
  auto cfg = Config::from_string("Arch:\n  Backbone: " + backbone_yaml + "\n", "test.yaml");
  return resolve_pretrained(cfg["Arch"]["Backbone"], file, "a state dict");
}

}  // namespace

TEST(PretrainedTable, UrlsEndInTheirFileAndChecksumsAreHex) {
  ASSERT_TRUE(kHermeticDownloads);
  std::set<std::string> files;
  for (const auto& s : pretrained_sources()) {
    SCOPED_TRACE(s.file);
    EXPECT_TRUE(files.insert(s.file).second) << "listed twice";
    const std::string url = s.url, sha = s.sha256;
    EXPECT_EQ(url_file_name(url), s.file);
    EXPECT_EQ(url.rfind("https://", 0), 0u);
    EXPECT_TRUE(sha.empty() || sha.size() >= 8) << sha;
    // torchvision's names carry their SHA-256 prefix: "<arch>-<8 hex>.pth".
    if (url.rfind("https://download.pytorch.org/", 0) == 0)
      EXPECT_NE(std::string(s.file).find("-" + sha + ".pth"), std::string::npos);
  }
  std::string url, sha;
  ASSERT_TRUE(find_pretrained_source("PPLCNet_x2_5_ssld_pretrained.pdparams", &url, &sha));
  EXPECT_EQ(url,
            "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
            "PPLCNet_x2_5_ssld_pretrained.pdparams");
  EXPECT_EQ(sha, "");
  ASSERT_TRUE(find_pretrained_source("resnet50-0676ba61.pth", &url, &sha));
  EXPECT_EQ(url, "https://download.pytorch.org/models/resnet50-0676ba61.pth");
  EXPECT_EQ(sha, "0676ba61");
  EXPECT_FALSE(find_pretrained_source("nothing.pth", &url, &sha));
}

// Each backbone that takes `pretrained` names a recorded file for True: the request reaches the mirror at the
// recorded path (404 there), and the error says which URL failed and where to put the file.
TEST(PretrainedTable, EveryBackboneWithPretrainedTrueHasARecordedUrl) {
  register_builtin_models();  // the registry is filled on first use: this test may run alone (ctest)
  ASSERT_GT(backbone_registry().names().size(), 20u);
  MirrorServer m;
  const std::map<std::string, std::string> expected = {
      {"ResNet50", "/models/resnet50-0676ba61.pth"},
      {"ResNet50_adaptive_max_pool2d", "/models/resnet50-19c8e357.pth"},
      {"TorchvisionMobileNetV3_small_x1_0", "/models/mobilenet_v3_small-047dcff4.pth"},
      {"ResNet50_vd", "/dygraph/legendary_models/ResNet50_vd_pretrained.pdparams"},
      {"ResNet50_metabin", "/dygraph/legendary_models/ResNet50_pretrained.pdparams"},
      {"MobileNetV3_large_x1_0", "/dygraph/legendary_models/MobileNetV3_large_x1_0_pretrained.pdparams"},
      {"PPLCNet_x2_5", "/dygraph/legendary_models/PPLCNet_x2_5_pretrained.pdparams"},
      {"PPLCNetV2_base_ShiTu", "/dygraph/legendary_models/PPLCNetV2_base_pretrained.pdparams"},
      {"MobileNetV1_x0_25", "/dygraph/legendary_models/MobileNetV1_x0_25_pretrained.pdparams"},
      {"VGG19Sigmoid", "/dygraph/legendary_models/VGG19_pretrained.pdparams"},
      {"AlexNet", "/dygraph/AlexNet_pretrained.pdparams"},
      {"CLIP_vit_base_patch16_224", "/dygraph/foundation_models/CLIP_vit_base_patch16_224.pdparams"}};
  size_t checked = 0;
  for (const auto& name : backbone_registry().names()) {
    if (name.rfind("AdaFace", 0) == 0) continue;  // PaddleClas's AdaFace factories take no `pretrained`
    // The large models are constructed before `pretrained` is read; their file names follow the same code paths.
    if (name == "ResNet101" || name == "ResNet152" || name.find("large_patch14") != std::string::npos) continue;
    SCOPED_TRACE(name);
    const std::string msg = error_of([&] { build("{name: " + name + ", pretrained: True}"); });
    EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
    EXPECT_NE(msg.find("download of " + m.origin() + "/"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HTTP status 404"), std::string::npos) << msg;
    EXPECT_NE(msg.find("put it at " + m.weights_dir().string() + "/"), std::string::npos) << msg;
    EXPECT_NE(msg.find("or set `pretrained: /path/to/"), std::string::npos) << msg;
    if (auto it = expected.find(name); it != expected.end()) {
      EXPECT_EQ(m.requested().back(), it->second);
      ++checked;
    }
  }
  EXPECT_EQ(checked, expected.size());
  // use_ssld follows PaddleClas's naming rule.
  error_of([&] { build("{name: PPLCNet_x0_25, pretrained: True, use_ssld: True}"); });
  EXPECT_EQ(m.requested().back(), "/dygraph/legendary_models/PPLCNet_x0_25_ssld_pretrained.pdparams");
  EXPECT_FALSE(fs::exists(m.weights_dir() / "PPLCNet_x0_25_ssld_pretrained.pdparams"));
}

TEST(Pretrained, FalsePathAndErrors) {
  EXPECT_EQ(resolve("{name: X}", "f.pth"), "");
  EXPECT_EQ(resolve("{name: X, pretrained: False}", "f.pth"), "");
  EXPECT_EQ(resolve("{name: X, pretrained: null}", "f.pth"), "");
  EXPECT_EQ(resolve("{name: X, pretrained: /a/b.pth}", "f.pth"), "/a/b.pth");
  std::string msg = error_of([] { resolve("{name: X, pretrained: [1]}", "f.pth"); });
  EXPECT_NE(msg.find("test.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected False, True, an http(s) URL or a path"), std::string::npos) << msg;
  msg = error_of([] { resolve("{name: X, pretrained: True}", ""); });
  EXPECT_NE(msg.find("no published weights are recorded for X"), std::string::npos) << msg;
  msg = error_of([] { resolve("{name: X, pretrained: \"http://h/w.pth#sha256=12\"}", ""); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("8 to 64 hex"), std::string::npos) << msg;
  // Offline (the closed mirror port): the message says what failed and where to put the file.
  msg = error_of([] { resolve("{name: X, pretrained: True}", "resnet18-f37072fd.pth"); });
  EXPECT_NE(msg.find("download of " + kClosedMirror + "/models/resnet18-f37072fd.pth failed"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("put it at " + (kTestHome / "weights" / "resnet18-f37072fd.pth").string()), std::string::npos)
      << msg;
}

// End to end: torchvision-format ResNet18 weights (the fixture) served as the recorded file. The recorded
// checksum prefix (f37072fd) is torchvision's, which the fixture does not have: True fails the check and leaves
// nothing in the cache; the same file as a URL pinned with its own #sha256= loads, and is reused from the cache.
TEST(Pretrained, ResNet18FixtureThroughTheCache) {
  MirrorServer m;
  const std::string fixture_path = fixture("resnet18_weights.pth");
  const std::string bytes = read_all(fixture_path);
  ASSERT_FALSE(bytes.empty());
  m.serve("/models/resnet18-f37072fd.pth", bytes);
  m.serve("/fixtures/resnet18_weights.pth", bytes);
  const std::string sha = sha256_file(fixture_path);

  std::string msg = error_of([] { build("{name: ResNet18, pretrained: True}"); });
  EXPECT_NE(msg.find("download of " + m.origin() + "/models/resnet18-f37072fd.pth failed: SHA-256 mismatch, "
                     "expected f37072fd... but the file has " + sha),
            std::string::npos)
      << msg;
  EXPECT_FALSE(fs::exists(m.weights_dir() / "resnet18-f37072fd.pth"));
  EXPECT_FALSE(fs::exists(m.weights_dir() / "resnet18-f37072fd.pth.part"));

  // A URL value (its host replaced by the mirror too), pinned with the fixture's checksum.
  const std::string yaml = "{name: ResNet18, pretrained: \"https://example.invalid/fixtures/resnet18_weights.pth#sha256=" +
                           sha + "\"}";
  auto bb = build(yaml);
  const fs::path cached = m.weights_dir() / "resnet18_weights.pth";
  EXPECT_EQ(read_all(cached.string()), bytes);
  std::map<std::string, torch::Tensor> sd;
  for (auto& [k, v] : load_torch_state_dict(fixture_path)) sd[k] = v;
  EXPECT_TRUE(torch::equal(bb->named_parameters()["layer4.1.conv2.weight"], sd.at("layer4.1.conv2.weight")));
  EXPECT_TRUE(torch::equal(bb->named_buffers()["bn1.running_var"], sd.at("bn1.running_var")));
  const size_t requests = m.requested().size();
  build(yaml);  // cached: no request
  EXPECT_EQ(m.requested().size(), requests);

  // A pin the cached file does not match is an error, without a request.
  msg = error_of([&] { build("{name: ResNet18, pretrained: \"http://h/fixtures/resnet18_weights.pth#sha256=deadbeef\"}"); });
  EXPECT_NE(msg.find("Arch.Backbone.pretrained"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not match: SHA-256 mismatch, expected deadbeef..."), std::string::npos) << msg;
  EXPECT_EQ(m.requested().size(), requests);
}

// featlearn describe: no download, random initialization, the skipped download listed.
TEST(Pretrained, DeferredDownloadsForDescribe) {
  MirrorServer m;
  DeferWeightDownloads defer;
  auto bb = build("{name: PPLCNet_x0_25, pretrained: True}");
  EXPECT_TRUE(m.requested().empty());
  ASSERT_EQ(defer.deferred().size(), 1u);
  EXPECT_EQ(defer.deferred()[0].key, "Arch.Backbone.pretrained");
  EXPECT_EQ(defer.deferred()[0].url, m.origin() + "/dygraph/legendary_models/PPLCNet_x0_25_pretrained.pdparams");
  EXPECT_EQ(defer.deferred()[0].path, (m.weights_dir() / "PPLCNet_x0_25_pretrained.pdparams").string());
}
