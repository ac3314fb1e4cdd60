// Request parsing of the retrieval service (docs/serve.md; see requests.h).
#include <featlearn/common/error.h>
#include <featlearn/serve/requests.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

namespace featlearn {

using json = nlohmann::json;

void http_fail(int status, std::string message) { throw HttpError{status, std::move(message)}; }

namespace {

constexpr int kMaxJsonDepth = 8;             // bodies nest 2 levels; deeper input is refused before parsing
constexpr size_t kMaxLabelBytes = 1024;
// A JSON body holds one vector and short strings: more than this is refused before parsing (a parsed JSON
// array costs ~16 bytes per element, so a 16 MiB body of zeros would otherwise take ~128 MiB per request).
constexpr size_t kJsonSlackBytes = 32 << 10;
constexpr size_t kJsonBytesPerValue = 64;

std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 4;
    if (extra == 4 || s.size() - i < extra + 1) return false;
    for (size_t k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += extra + 1;
  }
  return true;
}

// Nesting depth of a JSON text (brackets outside strings), stopping early past `limit`. nlohmann's parser
// is iterative, but destroying a very deep value recurses: deep input is refused before it is parsed.
int json_depth(const std::string& s, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

json parse_json_object(const std::string& body, int64_t dim) {
  const size_t limit = kJsonSlackBytes + kJsonBytesPerValue * static_cast<size_t>(dim);
  if (body.size() > limit)
    http_fail(413, fmt::format("body: a JSON body of {} bytes is too large for one {}-d vector (at most {} bytes)",
                          body.size(), dim, limit));
  if (json_depth(body, kMaxJsonDepth) > kMaxJsonDepth)
    http_fail(400, fmt::format("malformed JSON body: nested deeper than {} levels", kMaxJsonDepth));
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    http_fail(400, std::string("malformed JSON body: ") + e.what());
  }
  if (!j.is_object()) http_fail(400, "malformed JSON body: expected an object such as {\"vector\": [...]}");
  return j;
}

void check_keys(const json& j, const std::vector<std::string>& allowed) {
  for (const auto& kv : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end())
      http_fail(400, fmt::format("unknown field '{}' in the JSON body (allowed: {}){}", kv.key(), join(allowed),
                            did_you_mean(kv.key(), allowed)));
  }
}

// body["vector"] -> dim float32s, finite.
std::vector<float> parse_vector(const json& j, int64_t dim) {
  if (!j.contains("vector")) http_fail(400, "vector: missing (the JSON body must hold {\"vector\": [numbers]})");
  const auto& v = j["vector"];
  if (!v.is_array()) http_fail(400, "vector: must be an array of numbers");
  if (static_cast<int64_t>(v.size()) != dim)
    http_fail(400, fmt::format("vector: expected {} values (the index dimension), got {}", dim, v.size()));
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number()) http_fail(400, fmt::format("vector[{}]: not a number ({})", i, json_text(v[i]).substr(0, 40)));
    const double d = v[i].get<double>();
    const float f = static_cast<float>(d);
    if (!std::isfinite(d) || !std::isfinite(f)) http_fail(400, fmt::format("vector[{}]: not a finite float32 value", i));
    out[i] = f;
  }
  return out;
}

// A stored text field (label, extra): bounded, printable, UTF-8 (it is written back into JSON and lists).
std::string check_text(const std::string& value, const char* field) {
  if (value.size() > kMaxLabelBytes) http_fail(400, fmt::format("{}: longer than {} bytes", field, kMaxLabelBytes));
  for (unsigned char c : value)
    if (c < 0x20 || c == 0x7f) http_fail(400, fmt::format("{}: control characters (tab, newline, ...) are not allowed", field));
  if (!valid_utf8(value)) http_fail(400, fmt::format("{}: not valid UTF-8", field));
  return value;
}

}  // namespace

std::string media_type_of(const std::string& content_type) {
  std::string t = content_type.substr(0, content_type.find(';'));
  const char* ws = " \t\r\n\f\v";
  const size_t a = t.find_first_not_of(ws);
  t = a == std::string::npos ? std::string() : t.substr(a, t.find_last_not_of(ws) - a + 1);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}

void check_query_params(const QueryParams& params, const std::vector<std::string>& allowed) {
  std::set<std::string> seen;
  for (const auto& kv : params) {
    if (std::find(allowed.begin(), allowed.end(), kv.first) == allowed.end())
      http_fail(400, fmt::format("unknown query parameter '{}' (allowed: {}){}", kv.first,
                            allowed.empty() ? std::string("none") : join(allowed), did_you_mean(kv.first, allowed)));
    if (!seen.insert(kv.first).second) http_fail(400, fmt::format("{}: given more than once", kv.first));
  }
}

std::optional<int64_t> parse_http_int(const std::string& s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<float> parse_http_float(const std::string& s) {
  float v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

namespace {
bool has(const QueryParams& p, const char* key) { return p.find(key) != p.end(); }
const std::string& value(const QueryParams& p, const char* key) { return p.find(key)->second; }
}  // namespace

SearchOptions parse_search_params(const QueryParams& params, SearchOptions opt) {
  check_query_params(params, {"top_k", "score_thres", "hamming_radius"});
  if (has(params, "top_k")) {
    const auto& s = value(params, "top_k");
    const auto k = parse_http_int(s);
    if (!k || *k < 1 || *k > kMaxTopK)
      http_fail(400, fmt::format("top_k: must be an integer in 1..{} (got '{}')", kMaxTopK, s.substr(0, 40)));
    opt.top_k = *k;
  }
  if (has(params, "score_thres")) {
    const auto& s = value(params, "score_thres");
    const auto t = parse_http_float(s);
    if (!t) http_fail(400, fmt::format("score_thres: must be a finite number (got '{}')", s.substr(0, 40)));
    opt.score_thres = *t;
  }
  if (has(params, "hamming_radius")) {
    const auto& s = value(params, "hamming_radius");
    const auto r = parse_http_float(s);
    if (!r || *r < 0) http_fail(400, fmt::format("hamming_radius: must be a number >= 0 (got '{}')", s.substr(0, 40)));
    opt.hamming_radius = *r;
  }
  return opt;
}

std::vector<float> parse_search_body(const std::string& body, int64_t dim) {
  const json j = parse_json_object(body, dim);
  check_keys(j, {"vector"});
  return parse_vector(j, dim);
}

NewItem parse_add_params(const QueryParams& params) {
  check_query_params(params, {"label"});
  NewItem item;
  if (has(params, "label")) item.label = check_text(value(params, "label"), "label");
  return item;
}

std::vector<float> parse_add_body(const std::string& body, int64_t dim, bool label_in_query, NewItem* item) {
  const json j = parse_json_object(body, dim);
  check_keys(j, {"vector", "label", "extra"});
  if (j.contains("label")) {
    if (label_in_query) http_fail(400, "label: given both in the query and in the JSON body");
    const auto& l = j["label"];
    if (l.is_string()) item->label = check_text(l.get<std::string>(), "label");
    else if (l.is_number_integer()) item->label = std::to_string(l.get<int64_t>());
    else http_fail(400, "label: must be a string or an integer");
  }
  if (j.contains("extra")) {
    if (!j["extra"].is_string()) http_fail(400, "extra: must be a string");
    item->extra = check_text(j["extra"].get<std::string>(), "extra");
  }
  return parse_vector(j, dim);
}

int64_t parse_item_id(const std::string& path) {
  const std::string prefix = "/items/";
  if (path.rfind(prefix, 0) != 0) http_fail(400, fmt::format("id: '{}' is not an item path /items/<id>", path.substr(0, 40)));
  const std::string s = path.substr(prefix.size());
  const auto id = parse_http_int(s);
  if (!id || *id < 0) http_fail(400, fmt::format("id: '{}' is not an item id (a non-negative integer)", s.substr(0, 40)));
  return *id;
}

}  // namespace featlearn
