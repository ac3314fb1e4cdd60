// Request parsing of the retrieval service (docs/serve.md), apart from the HTTP plumbing of server.cpp so it
// can be tested and fuzzed directly (tests/fuzz/fuzz_serve.cpp). Every function throws HttpError with the
// status to answer and a message naming the field at fault.
#pragma once
#include <featlearn/index/gallery_index.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace featlearn {

// A request error: status + message (the message names the field).
struct HttpError {
  int status;
  std::string message;
};

[[noreturn]] void http_fail(int status, std::string message);

// Query parameters as httplib parses them (httplib::Params).
using QueryParams = std::multimap<std::string, std::string>;

constexpr int64_t kMaxTopK = 1000;

// A whole decimal integer / a finite float (std::from_chars), nullopt otherwise.
std::optional<int64_t> parse_http_int(const std::string& s);
std::optional<float> parse_http_float(const std::string& s);

// A Content-Type header value -> its media type, lower case: "Image/PNG; charset=x" -> "image/png".
std::string media_type_of(const std::string& content_type);

// Every query parameter must be in `allowed` and given once (400 otherwise).
void check_query_params(const QueryParams& params, const std::vector<std::string>& allowed);

// POST /search: top_k (1..kMaxTopK), score_thres, hamming_radius over `defaults`.
SearchOptions parse_search_params(const QueryParams& params, SearchOptions defaults);
// POST /search with application/json: {"vector": [dim finite float32 numbers]}.
std::vector<float> parse_search_body(const std::string& body, int64_t dim);

// POST /items: the `label` query parameter (the only one allowed) into a new item.
NewItem parse_add_params(const QueryParams& params);
// POST /items with application/json: {"vector": [...], "label": string or integer, "extra": string}; completes
// `item` (from parse_add_params; a label both in the query and in the body is an error) and returns the vector.
std::vector<float> parse_add_body(const std::string& body, int64_t dim, bool label_in_query, NewItem* item);

// "/items/17" -> 17 (a non-negative integer after /items/; 400 otherwise).
int64_t parse_item_id(const std::string& path);

}  // namespace featlearn
