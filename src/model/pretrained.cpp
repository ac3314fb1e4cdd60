// `pretrained` resolution and the table of published weights (include/featlearn/model/pretrained.h).
#include <featlearn/model/pretrained.h>

#include <featlearn/common/error.h>
#include <featlearn/io/download.h>

#include <filesystem>

namespace featlearn {
namespace {

thread_local DeferWeightDownloads* g_deferral = nullptr;

bool is_http_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

}  // namespace

const std::vector<PretrainedSource>& pretrained_sources() {
  static const std::vector<PretrainedSource> table = {
    // torchvision (torchvision.models): the file name carries the first 8 hex digits of its SHA-256.
    {"resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd"},
    {"resnet34-b627a593.pth", "https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593"},
    {"resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth", "0676ba61"},
    {"resnet101-63fe2227.pth", "https://download.pytorch.org/models/resnet101-63fe2227.pth", "63fe2227"},
    {"resnet152-394f9c45.pth", "https://download.pytorch.org/models/resnet152-394f9c45.pth", "394f9c45"},
    {"resnet50-19c8e357.pth", "https://download.pytorch.org/models/resnet50-19c8e357.pth", "19c8e357"},
    {"mobilenet_v3_small-047dcff4.pth", "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth", "047dcff4"},
    {"mobilenet_v3_large-8738ca79.pth", "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth", "8738ca79"},
    // PaddleClas (ppcls/arch/backbone/*: MODEL_URLS); no published checksums.
    {"MobileNetV1_x0_25_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV1_x0_25_pretrained.pdparams", ""},
    {"MobileNetV1_x0_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV1_x0_5_pretrained.pdparams", ""},
    {"MobileNetV1_x0_75_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV1_x0_75_pretrained.pdparams", ""},
    {"MobileNetV1_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV1_pretrained.pdparams", ""},
    {"MobileNetV3_small_x0_35_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_small_x0_35_pretrained.pdparams", ""},
    {"MobileNetV3_small_x0_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_small_x0_5_pretrained.pdparams", ""},
    {"MobileNetV3_small_x0_75_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_small_x0_75_pretrained.pdparams", ""},
    {"MobileNetV3_small_x1_0_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_small_x1_0_pretrained.pdparams", ""},
    {"MobileNetV3_small_x1_25_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_small_x1_25_pretrained.pdparams", ""},
    {"MobileNetV3_large_x0_35_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_large_x0_35_pretrained.pdparams", ""},
    {"MobileNetV3_large_x0_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_large_x0_5_pretrained.pdparams", ""},
    {"MobileNetV3_large_x0_75_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_large_x0_75_pretrained.pdparams", ""},
    {"MobileNetV3_large_x1_0_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_large_x1_0_pretrained.pdparams", ""},
    {"MobileNetV3_large_x1_25_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/MobileNetV3_large_x1_25_pretrained.pdparams", ""},
    {"PPLCNet_x0_25_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x0_25_pretrained.pdparams", ""},
    {"PPLCNet_x0_35_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x0_35_pretrained.pdparams", ""},
    {"PPLCNet_x0_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x0_5_pretrained.pdparams", ""},
    {"PPLCNet_x0_75_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x0_75_pretrained.pdparams", ""},
    {"PPLCNet_x1_0_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x1_0_pretrained.pdparams", ""},
    {"PPLCNet_x1_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x1_5_pretrained.pdparams", ""},
    {"PPLCNet_x2_0_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x2_0_pretrained.pdparams", ""},
    {"PPLCNet_x2_5_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNet_x2_5_pretrained.pdparams", ""},
    {"PPLCNetV2_small_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNetV2_small_pretrained.pdparams", ""},
    {"PPLCNetV2_base_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNetV2_base_pretrained.pdparams", ""},
    {"PPLCNetV2_large_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/PPLCNetV2_large_pretrained.pdparams", ""},
    {"ResNet50_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/ResNet50_pretrained.pdparams", ""},
    {"ResNet50_vd_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/ResNet50_vd_pretrained.pdparams", ""},
    {"VGG11_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/VGG11_pretrained.pdparams", ""},
    {"VGG13_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/VGG13_pretrained.pdparams", ""},
    {"VGG16_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/VGG16_pretrained.pdparams", ""},
    {"VGG19_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/VGG19_pretrained.pdparams", ""},
    {"AlexNet_pretrained.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/AlexNet_pretrained.pdparams", ""},
    {"CLIP_vit_base_patch32_224.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/foundation_models/CLIP_vit_base_patch32_224.pdparams", ""},
    {"CLIP_vit_base_patch16_224.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/foundation_models/CLIP_vit_base_patch16_224.pdparams", ""},
    {"CLIP_vit_large_patch14_336.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/foundation_models/CLIP_vit_large_patch14_336.pdparams", ""},
    {"CLIP_vit_large_patch14_224.pdparams", "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/foundation_models/CLIP_vit_large_patch14_224.pdparams", ""},
  };
  return table;
}

bool find_pretrained_source(const std::string& file, std::string* url, std::string* sha256) {
  for (const auto& s : pretrained_sources())
    if (file == s.file) {
      *url = s.url;
      *sha256 = s.sha256;
      return true;
    }
  // PaddleClas's use_ssld: "X_pretrained" -> "X_ssld_pretrained", next to X's file.
  const std::string ssld = "_ssld_pretrained";
  const auto at = file.find(ssld);
  if (at == std::string::npos) return false;
  const std::string base = file.substr(0, at) + "_pretrained" + file.substr(at + ssld.size());
  for (const auto& s : pretrained_sources())
    if (base == s.file) {
      const std::string u = s.url;
      *url = u.substr(0, u.size() - base.size()) + file;
      sha256->clear();
      return true;
    }
  return false;
}

std::string weights_cache_dir() { return (std::filesystem::path(featlearn_home()) / "weights").string(); }

std::string resolve_pretrained(const ConfigNode& node, const std::string& weights_file, const std::string& what) {
  const ConfigNode p = node["pretrained"];
  if (!p.defined()) return "";
  if (!p.is_scalar()) p.fail("expected False, True, an http(s) URL or a path to " + what);
  std::string url, sha256;
  bool flag = false;
  if (YAML::convert<bool>::decode(p.yaml(), flag)) {
    if (!flag) return "";
    if (weights_file.empty())
      p.fail("pretrained: True: no published weights are recorded for " + node["name"].as<std::string>() +
             ". Set `pretrained: /path/to/weights` to " + what +
             " with this backbone's parameter names, or use pretrained: False for random initialization");
    const bool known = find_pretrained_source(weights_file, &url, &sha256);
    FL_ASSERT(known, "no recorded download URL for " + weights_file + " (src/model/pretrained.cpp)");
  } else {
    const std::string value = p.as<std::string>();
    if (value.empty()) p.fail("empty weights path");
    if (!is_http_url(value)) return value;
    try {
      url = split_sha256_fragment(value, &sha256);
    } catch (const Error& e) {
      p.fail(e.what());
    }
  }
  std::string dest, file;
  try {
    url = apply_weights_mirror(url);
    file = url_file_name(url);
    dest = (std::filesystem::path(weights_cache_dir()) / file).string();
  } catch (const Error& e) {
    p.fail(e.what());
  }
  if (g_deferral && !std::filesystem::exists(dest)) {
    g_deferral->deferred_.push_back({p.path(), url, dest});
    return "";
  }
  DownloadOptions opts;
  opts.sha256 = sha256;
  try {
    download_file(url, dest, opts);  // returns at once when cached (after the checksum check)
  } catch (const Error& e) {
    p.fail(std::string(e.what()) + ", or set `pretrained: /path/to/" + file +
           "` (pretrained: False for random initialization)");
  }
  return dest;
}

DeferWeightDownloads::DeferWeightDownloads() : previous_(g_deferral) { g_deferral = this; }
DeferWeightDownloads::~DeferWeightDownloads() { g_deferral = previous_; }

}  // namespace featlearn
