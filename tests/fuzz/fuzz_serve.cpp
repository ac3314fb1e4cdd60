// Target `serve`: the request parsing of the service's endpoints (include/featlearn/serve/requests.h), then
// what the handler does with the parsed request on a small 8-d Flat index (docs/testing.md).
//
// Input: one selector byte (0 POST /search, 1 POST /items, 2 GET /items/{id}, 3 DELETE /items/{id}; larger
// values wrap around), then three lines and the body:
//   line 1: the raw query string (`top_k=3&label=x`, percent-decoded by httplib as for a real request), or
//           for GET/DELETE the path after /items/
//   line 2: the Content-Type header value
//   line 3: the Content-Length header value (checked as the pre-routing handler checks it)
//   rest:   the body (JSON, or image bytes for image/* types)
#include "fuzz_common.h"

#include <featlearn/config/config.h>
#include <featlearn/data/image_probe.h>
#include <featlearn/data/transforms.h>
#include <featlearn/index/gallery_index.h>
#include <featlearn/serve/requests.h>
#include <featlearn/serve/server.h>

#include <httplib.h>

#include <memory>

namespace featlearn::fuzz {
namespace serve_target {

constexpr int64_t kDim = 8;
// Decoded images are capped below ServeOptions::max_pixels (4096 x 4096) to keep one input in milliseconds.
constexpr int64_t kMaxPixels = 1 << 20;

std::unique_ptr<GalleryIndex> g_index;
std::unique_ptr<TransformPipeline> g_preprocess;

std::string line_at(const std::string& s, size_t* pos) {
  const size_t end = s.find('\n', *pos);
  std::string out = s.substr(*pos, end == std::string::npos ? std::string::npos : end - *pos);
  *pos = end == std::string::npos ? s.size() : end + 1;
  return out;
}

void image_body(const std::string& body) {
  if (body.empty()) return;
  const auto probe = probe_image(body.data(), body.size());
  if (!probe || probe->pixels() > kMaxPixels) return;  // 415 / 413 before anything is decoded
  cv::Mat img = g_preprocess->decode_bytes(body.data(), body.size(), "upload");
  Rng rng(0);
  g_preprocess->apply(img, rng);
  std::vector<float> chw(img.total() * static_cast<size_t>(img.channels()));
  hwc_to_chw_float(img, chw.data());
}

void handle(int endpoint, const std::string& query, const std::string& content_type, const std::string& body) {
  QueryParams params;
  const bool item_path = endpoint == 2 || endpoint == 3;
  if (!item_path) httplib::detail::parse_query_text(query, params);
  const std::string type = media_type_of(content_type);
  switch (endpoint) {
    case 0: {
      SearchOptions defaults;
      const SearchOptions so = parse_search_params(params, defaults);
      if (type == "application/json") {
        const auto v = parse_search_body(body, kDim);
        (void)g_index->search(v.data(), 1, so);
      } else if (type.rfind("image/", 0) == 0) {
        image_body(body);
      }
      break;
    }
    case 1: {
      NewItem item = parse_add_params(params);
      if (type == "application/json") {
        const auto v = parse_add_body(body, kDim, params.count("label") > 0, &item);
        const auto ids = g_index->add({item}, v.data());
        const auto meta = g_index->get(ids.at(0));
        if (!meta || meta->label != item.label || meta->extra != item.extra)
          finding("POST /items", "an item that does not read back as written", item.label);
        g_index->remove(ids);
      } else if (type.rfind("image/", 0) == 0) {
        image_body(body);
      }
      break;
    }
    default: {
      const int64_t id = parse_item_id("/items/" + query);
      if (endpoint == 2) (void)g_index->get(id);
      break;
    }
  }
}

}  // namespace serve_target

void serve_init() {
  using namespace serve_target;
  IndexSpec spec;
  spec.index_method = "Flat";
  spec.dim = kDim;
  std::vector<float> vectors(16 * kDim);
  std::vector<NewItem> items;
  for (size_t i = 0; i < vectors.size(); ++i) vectors[i] = static_cast<float>((i * 31) % 17) / 17.0f;
  for (int i = 0; i < 16; ++i) items.push_back({"img" + std::to_string(i) + ".jpg", std::to_string(i % 4), ""});
  g_index = GalleryIndex::create(scratch_dir() + "/keep_serve_index", spec, items, vectors.data());
  const Config ops = Config::from_string(
      "transform_ops:\n  - DecodeImage: {to_rgb: True}\n  - ResizeImage: {resize_short: 36}\n"
      "  - CropImage: {size: 32}\n  - NormalizeImage: {scale: 1.0/255.0, order: ''}\n",
      "preprocess.yaml");
  g_preprocess = std::make_unique<TransformPipeline>(TransformPipeline::create(ops["transform_ops"]));
}

void serve_run(const uint8_t* data, size_t size) {
  using namespace serve_target;
  if (size == 0) return;
  const int endpoint = data[0] % 4;
  const std::string s(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t pos = 0;
  const std::string query = line_at(s, &pos);
  const std::string content_type = line_at(s, &pos);
  const std::string content_length = line_at(s, &pos);
  const std::string body = s.substr(pos);
  (void)parse_http_int(content_length);
  // The handler answers an HttpError (4xx) or a user error; anything else escaping is a finding.
  expect_user_errors("request", [&] {
    try {
      handle(endpoint, query, content_type, body);
    } catch (const HttpError& e) {
      if (e.status < 400 || e.status > 499) finding("request", "an HttpError outside 4xx", e.message);
    }
  });
}

}  // namespace featlearn::fuzz
