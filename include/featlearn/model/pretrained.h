// `Arch.Backbone.pretrained` (docs/config.md, "Pretrained weights"): False, a path, True (the backbone's recorded
// download) or a URL, resolved to a local file in the weights cache (docs/file-formats.md, "Weights cache").
#pragma once
#include <featlearn/config/config.h>

#include <string>
#include <vector>

namespace featlearn {

// Where a published weights file comes from: torchvision's (with the SHA-256 prefix its file name carries) or
// PaddleClas's MODEL_URLS (PaddleClas publishes no checksums; the server's Content-Length is checked).
struct PretrainedSource {
  const char* file;    // e.g. "resnet50-0676ba61.pth", "PPLCNet_x2_5_pretrained.pdparams"
  const char* url;     // the full URL, ending in `file`
  const char* sha256;  // hex SHA-256 or a prefix of it; "" when none is published
};
// Every recorded source (one table, src/model/pretrained.cpp).
const std::vector<PretrainedSource>& pretrained_sources();
// The source of `file`. PaddleClas's use_ssld variant "X_ssld_pretrained.pdparams" of a recorded
// "X_pretrained.pdparams" is found too (same directory, PaddleClas's naming rule). False when neither is recorded.
bool find_pretrained_source(const std::string& file, std::string* url, std::string* sha256);

// $FEATLEARN_HOME/weights (default ~/.cache/featlearn/weights).
std::string weights_cache_dir();

// The `pretrained` key of a backbone node:
//  - absent, null or False: "" (random initialization);
//  - True: downloads `weights_file` from its recorded source (find_pretrained_source) into the cache, or reuses
//    the cached file; fails when `weights_file` is "" (no published weights) or the download fails;
//  - an http(s) URL, optionally pinned with "#sha256=<hex>": downloads it into the cache the same way;
//  - anything else: that path, returned as is (the weights loader opens it).
// $FEATLEARN_WEIGHTS_MIRROR replaces the scheme and host of both kinds of URL. `what` names the file a path
// should point to in messages ("a torchvision .pth weights file"). Errors name the key with its file:line.
std::string resolve_pretrained(const ConfigNode& node, const std::string& weights_file, const std::string& what);

// A download that resolve_pretrained skipped under a DeferWeightDownloads.
struct DeferredWeights {
  std::string key;   // "Arch.Backbone.pretrained"
  std::string url;   // after $FEATLEARN_WEIGHTS_MIRROR
  std::string path;  // where it would be cached
};
// While alive, resolve_pretrained on this thread does not download: an uncached file resolves to "" (random
// initialization) and is listed in deferred(). A cached file is still returned. For `featlearn describe`, which
// shows the model without needing its weights.
class DeferWeightDownloads {
 public:
  DeferWeightDownloads();
  ~DeferWeightDownloads();
  DeferWeightDownloads(const DeferWeightDownloads&) = delete;
  DeferWeightDownloads& operator=(const DeferWeightDownloads&) = delete;
  const std::vector<DeferredWeights>& deferred() const { return deferred_; }

 private:
  friend std::string resolve_pretrained(const ConfigNode&, const std::string&, const std::string&);
  std::vector<DeferredWeights> deferred_;
  DeferWeightDownloads* previous_;
};

}  // namespace featlearn
