// The retrieval service (docs/serve.md). Request flow: httplib thread pool -> pre-routing (framing checks,
// timing) -> handler (parse, validate, then a vector search / index write directly, or an image job through
// the RequestBatcher) -> JSON. Every handler catches everything; httplib's exception and error handlers turn
// whatever is left (and httplib's own 4xx) into JSON errors.
#include <featlearn/common/error.h>
#include <featlearn/data/image_probe.h>
#include <featlearn/data/transforms.h>
#include <featlearn/index/embedder.h>
#include <featlearn/serve/batcher.h>
#include <featlearn/serve/requests.h>
#include <featlearn/serve/server.h>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>
#include <thread>

namespace featlearn {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kLatencyRing = 2048;       // recent latencies kept per endpoint
constexpr auto kJobTimeout = std::chrono::seconds(120);  // an image job not answered by then is a 503

[[noreturn]] void fail(int status, std::string message) { http_fail(status, std::move(message)); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply(res, status, json{{"error", message}});
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

// "image/png; charset=x" -> "image/png".
std::string media_type(const httplib::Request& req) { return media_type_of(req.get_header_value("Content-Type")); }

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// Constant-time comparison (the token must not leak through timing).
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

std::string read_token(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) throw Error(fmt::format("--token-file {}: cannot read it", file));
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string token = trim(ss.str());
  if (token.empty()) throw Error(fmt::format("--token-file {}: the file is empty; write the bearer token into it", file));
  for (unsigned char c : token)
    if (c < 0x21 || c == 0x7f)
      throw Error(fmt::format("--token-file {}: the token contains whitespace or control characters", file));
  return token;
}

// Request timing: stamped at pre-routing, read at post-routing (same thread for one request).
thread_local std::optional<Clock::time_point> t_request_start;

const std::vector<std::string>& endpoint_names() {
  static const std::vector<std::string> names = {"search", "items_add", "items_get", "items_delete",
                                                 "health", "stats", "other"};
  return names;
}

std::string endpoint_of(const std::string& method, const std::string& path) {
  const bool get = method == "GET" || method == "HEAD";
  if (path == "/search" && method == "POST") return "search";
  if (path == "/items" && method == "POST") return "items_add";
  if (path.rfind("/items/", 0) == 0 && get) return "items_get";
  if (path.rfind("/items/", 0) == 0 && method == "DELETE") return "items_delete";
  if (path == "/health" && get) return "health";
  if (path == "/stats" && get) return "stats";
  return "other";
}

// The methods each route answers (for 405 instead of 404).
std::string allowed_methods(const std::string& path) {
  if (path == "/search" || path == "/items") return "POST";
  if (path.rfind("/items/", 0) == 0) return "GET, DELETE";
  if (path == "/health" || path == "/stats") return "GET";
  return "";
}

// 404 for an unknown path, 405 (with Allow) for a known path and another method.
void reply_unknown_route(const httplib::Request& req, httplib::Response& res) {
  const std::string allowed = allowed_methods(req.path);
  if (!allowed.empty()) {
    res.set_header("Allow", allowed);
    reply_error(res, 405, fmt::format("method {} is not allowed on {} (use {})", req.method, req.path, allowed));
  } else {
    reply_error(res, 404, fmt::format("no route {} {} (see docs/serve.md)", req.method, req.path.substr(0, 200)));
  }
}

// httplib::Server leaves a socket that was bound but never served open; this closes it.
class HttpServer : public httplib::Server {
 public:
  ~HttpServer() override {
    const socket_t sock = svr_sock_.exchange(INVALID_SOCKET);
    if (sock != INVALID_SOCKET) ::close(sock);
  }
};

struct EndpointStats {
  int64_t total = 0;
  std::array<int64_t, 6> by_class{};  // [status / 100]
  std::vector<float> latencies_ms;   // ring of the most recent kLatencyRing
  size_t next = 0;
};

}  // namespace

struct Server::Impl {
  std::shared_ptr<GalleryIndex> index;
  std::shared_ptr<Embedder> embedder;
  SearchOptions defaults;
  ServeOptions opt;
  std::string token;  // "" : writes are open
  std::string faiss_type;
  std::unique_ptr<httplib::Server> http;
  std::unique_ptr<RequestBatcher> batcher;
  Clock::time_point started = Clock::now();
  int bound_port = -1;

  // stop / run
  std::mutex run_mu;
  std::condition_variable run_cv;
  bool stop_requested = false;
  bool running = false;
  bool finished = false;

  // statistics
  mutable std::mutex stats_mu;
  std::map<std::string, EndpointStats> endpoints;

  // background snapshots
  mutable std::mutex snap_mu;
  std::condition_variable snap_cv;
  int64_t writes_since_snapshot = 0;
  int64_t snapshots_saved = 0;
  bool snap_stop = false;
  std::thread snap_thread;

  Impl(std::shared_ptr<GalleryIndex> idx, std::shared_ptr<Embedder> emb, SearchOptions d, ServeOptions o);
  ~Impl();

  void setup_routes();
  void record(const std::string& endpoint, int status, std::optional<double> ms);
  void on_write(int64_t n);
  void snapshot_loop();
  void shutdown_workers();

  // Reads the body through httplib's content reader, bounded by max_body_bytes (after decompression).
  std::string read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  void require_token(const httplib::Request& req) const;
  void require_model() const;
  torch::Tensor preprocess(const std::string& body) const;
  BatchJobResult run_job(BatchJob job, RequestBatcher::Ticket* ticket = nullptr) const;

  void handle_search(const httplib::Request& req, httplib::Response& res, const std::string& body);
  void handle_add(const httplib::Request& req, httplib::Response& res, const std::string& body);
  void handle_get(const httplib::Request& req, httplib::Response& res);
  void handle_delete(const httplib::Request& req, httplib::Response& res);
  std::string stats_json() const;
};

namespace {

// Runs a handler, turning every exception into a JSON error response.
template <class F>
void guarded(httplib::Response& res, F&& fn) {
  try {
    fn();
  } catch (const HttpError& e) {
    reply_error(res, e.status, e.message);
  } catch (const BadImageError& e) {
    reply_error(res, 400, std::string("body: ") + e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "featlearn serve: internal error: %s\n", e.what());
    reply_error(res, 500, std::string("internal error: ") + e.what());
  } catch (...) {
    std::fprintf(stderr, "featlearn serve: internal error (unknown exception)\n");
    reply_error(res, 500, "internal error");
  }
}

}  // namespace

Server::Impl::Impl(std::shared_ptr<GalleryIndex> idx, std::shared_ptr<Embedder> emb, SearchOptions d, ServeOptions o)
    : index(std::move(idx)), embedder(std::move(emb)), defaults(d), opt(std::move(o)) {
  if (!index) throw Error("serve: no index");
  if (opt.port < 0 || opt.port > 65535) throw Error(fmt::format("--port {}: must be 0..65535", opt.port));
  if (opt.max_batch < 1 || opt.max_batch > 1024)
    throw Error(fmt::format("--max-batch {}: must be 1..1024", opt.max_batch));
  if (opt.max_wait_us < 0 || opt.max_wait_us > 1000000)
    throw Error(fmt::format("--max-wait-us {}: must be 0..1000000", opt.max_wait_us));
  if (opt.threads < 0 || opt.threads > 1024) throw Error(fmt::format("--threads {}: must be 0..1024", opt.threads));
  if (opt.max_body_bytes < 1) throw Error("--max-body-bytes: must be at least 1");
  if (opt.max_pixels < 1) throw Error("--max-pixels: must be at least 1");
  if (opt.snapshot_every < 0) throw Error("--snapshot-every: must be >= 0");
  if (opt.timeout_s < 1) throw Error("timeout_s: must be at least 1 second");
  if (defaults.top_k < 1 || defaults.top_k > kMaxTopK)
    throw Error(fmt::format("IndexProcess.return_k {}: must be 1..{}", defaults.top_k, kMaxTopK));
  if (!opt.token_file.empty()) token = read_token(opt.token_file);
  if (!is_loopback(opt.host) && token.empty())
    throw Error(fmt::format("serve: binding '{}' exposes the service beyond this machine, and anyone who can reach "
                            "it could add and remove items; give --token-file FILE (writes then need "
                            "'Authorization: Bearer <token>') or bind 127.0.0.1",
                            opt.host));
  if (embedder && embedder->dim() != index->spec().dim)
    throw Error(fmt::format("serve: the model outputs {}-d features but the index {} holds {}-d vectors",
                            embedder->dim(), index->dir(), index->spec().dim));
  faiss_type = index->faiss_type();

  for (const auto& n : endpoint_names()) endpoints[n];
  if (embedder) {
    auto e = embedder;
    batcher = std::make_unique<RequestBatcher>([e](const torch::Tensor& x) { return e->embed(x); }, index.get(),
                                               opt.max_batch, opt.max_wait_us,
                                               [this](int64_t n) { on_write(n); });
  }
  http = std::make_unique<HttpServer>();
  const size_t threads = opt.threads > 0 ? static_cast<size_t>(opt.threads)
                                         : std::max<size_t>(64, 8 * std::max(1u, std::thread::hardware_concurrency()));
  http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http->set_read_timeout(opt.timeout_s, 0);
  http->set_write_timeout(opt.timeout_s, 0);
  http->set_keep_alive_timeout(5);
  // A kept-alive connection holds its pool thread: cycle connections so more clients than threads are served
  // in turn (threads defaults to at least 64 connections at once).
  http->set_keep_alive_max_count(20);
  http->set_tcp_nodelay(true);
  http->set_payload_max_length(opt.max_body_bytes);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a second service bind the same
  // port silently (the kernel would then split requests between them).
  http->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  setup_routes();
  snap_thread = std::thread([this] { snapshot_loop(); });
}

Server::Impl::~Impl() { shutdown_workers(); }

void Server::Impl::shutdown_workers() {
  if (batcher) batcher->stop();
  {
    std::lock_guard<std::mutex> lk(snap_mu);
    snap_stop = true;
  }
  snap_cv.notify_all();
  if (snap_thread.joinable()) snap_thread.join();
}

void Server::Impl::record(const std::string& endpoint, int status, std::optional<double> ms) {
  std::lock_guard<std::mutex> lk(stats_mu);
  auto& e = endpoints[endpoint];
  e.total += 1;
  e.by_class[std::clamp(status / 100, 0, 5)] += 1;
  if (ms) {
    if (e.latencies_ms.size() < kLatencyRing) {
      e.latencies_ms.push_back(static_cast<float>(*ms));
    } else {
      e.latencies_ms[e.next] = static_cast<float>(*ms);
      e.next = (e.next + 1) % kLatencyRing;
    }
  }
}

void Server::Impl::on_write(int64_t n) {
  {
    std::lock_guard<std::mutex> lk(snap_mu);
    writes_since_snapshot += n;
  }
  snap_cv.notify_all();
}

void Server::Impl::snapshot_loop() {
  std::unique_lock<std::mutex> lk(snap_mu);
  for (;;) {
    snap_cv.wait(lk, [&] { return snap_stop || (opt.snapshot_every > 0 && writes_since_snapshot >= opt.snapshot_every); });
    if (snap_stop) return;
    writes_since_snapshot = 0;
    lk.unlock();
    try {
      if (index->snapshot_stale()) {
        index->save_snapshot();
        lk.lock();
        snapshots_saved += 1;
        lk.unlock();
      }
    } catch (const std::exception& e) {
      // The database stays the truth; a failed snapshot only makes the next start replay more.
      std::fprintf(stderr, "featlearn serve: background snapshot failed: %s\n", e.what());
    }
    lk.lock();
  }
}

std::string Server::Impl::read_body(const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& reader) {
  // Past the limit the rest is read and dropped (up to kDrainBytes more), so a keep-alive connection stays in
  // step; a body longer still is cut off (httplib 0.11 cannot close the connection from a handler).
  constexpr size_t kDrainBytes = 64 << 20;
  std::string body;
  bool over = false;
  size_t dropped = 0;
  const bool ok = reader([&](const char* data, size_t n) {
    if (!over && body.size() + n <= opt.max_body_bytes) {
      body.append(data, n);
      return true;
    }
    if (!over) {
      over = true;
      body.clear();
      body.shrink_to_fit();
    }
    dropped += n;
    return dropped <= kDrainBytes;
  });
  if (over || res.status == 413)
    fail(413, fmt::format("body: larger than the limit of {} bytes (max_body_bytes)", opt.max_body_bytes));
  if (!ok) {
    if (res.status == 415) fail(415, "Content-Encoding: not supported (send gzip, br or an unencoded body)");
    fail(400, "body: could not be read (cut short, bad chunked encoding or bad Content-Encoding)");
  }
  (void)req;
  return body;
}

void Server::Impl::require_token(const httplib::Request& req) const {
  if (token.empty()) return;
  const std::string h = trim(req.get_header_value("Authorization"));
  if (h.empty()) fail(401, "Authorization: missing; writes need the header 'Authorization: Bearer <token>'");
  if (h.size() < 7 || lower(h.substr(0, 7)) != "bearer ")
    fail(401, "Authorization: expected 'Bearer <token>'");
  if (!same_secret(trim(h.substr(7)), token)) fail(401, "Authorization: wrong token");
}

void Server::Impl::require_model() const {
  if (!embedder)
    fail(400, "body: this service has no model (started with --index-dir): send a JSON body "
              "{\"vector\": [...]}, or start it with -c and Global.rec_inference_model_dir");
}

torch::Tensor Server::Impl::preprocess(const std::string& body) const {
  if (body.empty()) fail(400, "body: empty (send the image file as the request body)");
  const auto probe = probe_image(body.data(), body.size());
  if (!probe)
    fail(415, fmt::format("body: not a recognized image (send {}) or a cut-short header", probed_formats()));
  if (probe->pixels() > opt.max_pixels)
    fail(413, fmt::format("body: a {}x{} {} image ({} pixels) is over the limit of {} pixels (max_pixels)",
                          probe->width, probe->height, probe->format, probe->pixels(), opt.max_pixels));
  return embedder->preprocess_bytes(body.data(), body.size(), fmt::format("upload ({} bytes)", body.size()));
}

BatchJobResult Server::Impl::run_job(BatchJob job, RequestBatcher::Ticket* ticket) const {
  auto fut = batcher->submit(std::move(job), ticket);
  if (fut.wait_for(kJobTimeout) != std::future_status::ready)
    fail(503, "the model did not answer in time; try again later");
  return fut.get();
}

void Server::Impl::handle_search(const httplib::Request& req, httplib::Response& res, const std::string& body) {
  const SearchOptions so = parse_search_params(req.params, defaults);
  const std::string type = media_type(req);
  std::vector<SearchHit> hits;
  if (type == "application/json") {
    const auto v = parse_search_body(body, index->spec().dim);
    hits = index->search(v.data(), 1, so).at(0);
  } else if (type.rfind("image/", 0) == 0) {
    require_model();
    BatchJob job;
    job.kind = BatchJob::Kind::kSearch;
    auto ticket = batcher->announce();
    job.image = preprocess(body);
    job.search = so;
    hits = run_job(std::move(job), &ticket).hits;
  } else {
    fail(415, fmt::format("Content-Type: '{}' is not accepted; send an image (image/png, image/jpeg, ...) or "
                          "application/json",
                          req.get_header_value("Content-Type").substr(0, 80)));
  }
  json results = json::array();
  for (const auto& h : hits)
    results.push_back({{"id", h.id}, {"path", h.path}, {"label", h.label}, {"score", h.score}});
  reply(res, 200, json{{"results", std::move(results)}});
}

void Server::Impl::handle_add(const httplib::Request& req, httplib::Response& res, const std::string& body) {
  require_token(req);
  NewItem item = parse_add_params(req.params);  // path stays "": nothing a client sends names a server-side file
  const std::string type = media_type(req);
  int64_t id = -1;
  if (type == "application/json") {
    const auto v = parse_add_body(body, index->spec().dim, req.has_param("label"), &item);
    id = index->add({item}, v.data()).at(0);
    on_write(1);
  } else if (type.rfind("image/", 0) == 0) {
    require_model();
    BatchJob job;
    job.kind = BatchJob::Kind::kAdd;
    auto ticket = batcher->announce();
    job.image = preprocess(body);
    job.item = item;
    id = run_job(std::move(job), &ticket).id;
  } else {
    fail(415, fmt::format("Content-Type: '{}' is not accepted; send an image (image/png, image/jpeg, ...) or "
                          "application/json",
                          req.get_header_value("Content-Type").substr(0, 80)));
  }
  reply(res, 200, json{{"id", id}});
}

void Server::Impl::handle_get(const httplib::Request& req, httplib::Response& res) {
  check_query_params(req.params, {});
  const int64_t id = parse_item_id(req.path);
  const auto meta = index->get(id);
  if (!meta) fail(404, fmt::format("id: no item {}", id));
  reply(res, 200, json{{"id", meta->id}, {"path", meta->path}, {"label", meta->label}});
}

void Server::Impl::handle_delete(const httplib::Request& req, httplib::Response& res) {
  require_token(req);
  check_query_params(req.params, {});
  if (req.path.rfind("/items/", 0) != 0) return reply_unknown_route(req, res);
  const int64_t id = parse_item_id(req.path);
  if (index->remove({id}) == 0) fail(404, fmt::format("id: no item {}", id));
  on_write(1);
  reply(res, 200, json{{"removed", id}});
}

std::string Server::Impl::stats_json() const {
  const IndexSpec& spec = index->spec();
  json requests = json::object();
  {
    std::lock_guard<std::mutex> lk(stats_mu);
    for (const auto& kv : endpoints) {
      const auto& e = kv.second;
      json classes = json::object();
      for (int c = 1; c <= 5; ++c) classes[fmt::format("{}xx", c)] = e.by_class[c];
      json lat = json::object();
      std::vector<float> sorted = e.latencies_ms;
      std::sort(sorted.begin(), sorted.end());
      for (const auto& p : std::vector<std::pair<const char*, double>>{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}}) {
        if (sorted.empty()) {
          lat[p.first] = nullptr;
        } else {  // nearest rank
          const auto rank = static_cast<size_t>(std::ceil(p.second * static_cast<double>(sorted.size())));
          lat[p.first] = sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
        }
      }
      lat["samples"] = sorted.size();
      requests[kv.first] = {{"total", e.total}, {"status", classes}, {"latency_ms", lat}};
    }
  }
  json batching = {{"enabled", batcher != nullptr}, {"max_batch", opt.max_batch}, {"max_wait_us", opt.max_wait_us}};
  if (batcher) {
    const auto b = batcher->stats();
    batching["batches"] = b.batches;
    batching["images"] = b.images;
    batching["mean_batch_size"] = b.batches ? static_cast<double>(b.images) / static_cast<double>(b.batches) : 0.0;
    batching["max_batch_size"] = b.max_batch_seen;
  } else {
    batching["batches"] = 0;
    batching["images"] = 0;
    batching["mean_batch_size"] = 0.0;
    batching["max_batch_size"] = 0;
  }
  int64_t pending_writes = 0, saved = 0;
  {
    std::lock_guard<std::mutex> lk(snap_mu);
    pending_writes = writes_since_snapshot;
    saved = snapshots_saved;
  }
  const json j = {
      {"items", index->size()},
      {"model_fingerprint", embedder ? embedder->fingerprint() : spec.model_fingerprint},
      {"model", embedder != nullptr},
      {"index_type", fmt::format("{} ({})", spec.index_method, faiss_type)},
      {"index_method", spec.index_method},
      {"faiss_type", faiss_type},
      {"metric", index_metric_name(spec.metric)},
      {"dim", spec.dim},
      {"uptime_s", std::chrono::duration<double>(Clock::now() - started).count()},
      {"requests", requests},
      {"batching", batching},
      {"snapshot", {{"stale", index->snapshot_stale()}, {"writes_since_last", pending_writes},
                    {"saved_in_background", saved}, {"every", opt.snapshot_every}}},
  };
  return dump(j);
}

void Server::Impl::setup_routes() {
  using httplib::ContentReader;
  using httplib::Request;
  using httplib::Response;
  auto& s = *http;

  s.set_pre_routing_handler([this](const Request& req, Response& res) {
    t_request_start = Clock::now();
    const bool with_body = req.method == "POST" || req.method == "DELETE" || req.method == "PUT" || req.method == "PATCH";
    if (!with_body && req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, POST, DELETE");
      reply_error(res, 405, fmt::format("method {} is not supported", req.method.substr(0, 20)));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!with_body) return httplib::Server::HandlerResponse::Unhandled;
    // Body framing: httplib 0.11 reads a body without Content-Length until the connection closes (a DELETE
    // from curl would wait for the read timeout), so such requests are answered here, before any read.
    const bool has_te = req.has_header("Transfer-Encoding");
    if (has_te && lower(trim(req.get_header_value("Transfer-Encoding"))) != "chunked") {
      reply_error(res, 400, "Transfer-Encoding: only chunked is supported");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Content-Length")) {
      const auto n = parse_http_int(trim(req.get_header_value("Content-Length")));
      if (!n || *n < 0) {
        reply_error(res, 400, "Content-Length: not a number");
        return httplib::Server::HandlerResponse::Handled;
      }
    } else if (!has_te) {
      if (req.method == "DELETE") {
        guarded(res, [&] { handle_delete(req, res); });
      } else if (req.method != "POST") {
        reply_unknown_route(req, res);
      } else {
        reply_error(res, 411, "Content-Length: required (send the body with a Content-Length)");
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  s.Post("/search", [this](const Request& req, Response& res, const ContentReader& reader) {
    guarded(res, [&] { handle_search(req, res, read_body(req, res, reader)); });
  });
  s.Post("/items", [this](const Request& req, Response& res, const ContentReader& reader) {
    guarded(res, [&] { handle_add(req, res, read_body(req, res, reader)); });
  });
  s.Delete(R"(/items/[^/]*)", [this](const Request& req, Response& res, const ContentReader& reader) {
    guarded(res, [&] {
      read_body(req, res, reader);  // drained (and ignored) so the connection stays in step
      handle_delete(req, res);
    });
  });
  // Unknown POST/DELETE routes still have their body read within the limit before the 404/405.
  const auto unknown_with_body = [this](const Request& req, Response& res, const ContentReader& reader) {
    guarded(res, [&] {
      read_body(req, res, reader);
      reply_unknown_route(req, res);
    });
  };
  s.Post(".*", unknown_with_body);
  s.Delete(".*", unknown_with_body);
  s.Put(".*", unknown_with_body);
  s.Patch(".*", unknown_with_body);
  s.Get("/health", [](const Request&, Response& res) { reply(res, 200, json{{"status", "ok"}}); });
  s.Get("/stats", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      check_query_params(req.params, {});
      res.status = 200;
      res.set_content(stats_json(), "application/json");
    });
  });
  s.Get(R"(/items/[^/]*)", [this](const Request& req, Response& res) { guarded(res, [&] { handle_get(req, res); }); });

  s.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "featlearn serve: internal error: %s\n", what.c_str());
    reply_error(res, 500, "internal error: " + what);
  });
  // httplib's own errors (unknown GET route, 413 on Content-Length, malformed request line, ...) get JSON
  // bodies too; responses that already have one are left alone.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    switch (res.status) {
      case 404: reply_unknown_route(req, res); break;
      case 413:
        reply_error(res, 413, fmt::format("body: larger than the limit of {} bytes (max_body_bytes)", opt.max_body_bytes));
        break;
      case 414: reply_error(res, 414, "the request URI is too long"); break;
      case 400: reply_error(res, 400, "malformed HTTP request"); break;
      default: reply_error(res, res.status, fmt::format("HTTP error {}", res.status)); break;
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  // Counted when the response is ready, before it is sent (a logger runs after the send, so a client could
  // read /stats before its previous request was counted).
  s.set_post_routing_handler([this](const Request& req, Response& res) {
    std::optional<double> ms;
    if (t_request_start) ms = std::chrono::duration<double, std::milli>(Clock::now() - *t_request_start).count();
    t_request_start.reset();
    record(endpoint_of(req.method, req.path), res.status, ms);
  });
}

// ---------------------------------------------------------------------------------------------------------

Server::Server(std::shared_ptr<GalleryIndex> index, std::shared_ptr<Embedder> embedder, SearchOptions defaults,
               ServeOptions opt)
    : impl_(std::make_unique<Impl>(std::move(index), std::move(embedder), defaults, std::move(opt))) {}

Server::~Server() {
  stop();
  std::unique_lock<std::mutex> lk(impl_->run_mu);
  impl_->run_cv.wait(lk, [&] { return !impl_->running; });
}

int Server::bind() {
  auto& I = *impl_;
  if (I.bound_port >= 0) return I.bound_port;
  int port = -1;
  if (I.opt.port == 0) {
    port = I.http->bind_to_any_port(I.opt.host);
  } else if (I.http->bind_to_port(I.opt.host, I.opt.port)) {
    port = I.opt.port;
  }
  if (port < 0)
    throw Error(fmt::format("serve: cannot bind {}:{} (port in use, or not an address of this machine?)", I.opt.host,
                            I.opt.port));
  I.bound_port = port;
  return port;
}

void Server::run() {
  auto& I = *impl_;
  bind();
  {
    std::lock_guard<std::mutex> lk(I.run_mu);
    if (I.running || I.finished) throw Error("serve: Server::run() called twice");
    I.running = true;
  }
  bool listening_done = false;
  std::thread listener([&] {
    I.http->listen_after_bind();
    std::lock_guard<std::mutex> lk(I.run_mu);
    listening_done = true;
    I.run_cv.notify_all();
  });
  {
    // httplib's stop() does nothing before listen has started: repeat it until the listener has returned.
    std::unique_lock<std::mutex> lk(I.run_mu);
    I.run_cv.wait(lk, [&] { return I.stop_requested || listening_done; });
    while (!listening_done) {
      lk.unlock();
      I.http->stop();
      lk.lock();
      I.run_cv.wait_for(lk, std::chrono::milliseconds(20), [&] { return listening_done; });
    }
  }
  listener.join();  // the thread pool has finished every request by now
  I.shutdown_workers();
  try {
    if (I.index->snapshot_stale()) I.index->save_snapshot();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "featlearn serve: snapshot at stop failed (the database is intact): %s\n", e.what());
  }
  std::lock_guard<std::mutex> lk(I.run_mu);
  I.running = false;
  I.finished = true;
  I.run_cv.notify_all();
}

void Server::stop() {
  std::lock_guard<std::mutex> lk(impl_->run_mu);
  impl_->stop_requested = true;
  impl_->run_cv.notify_all();
}

std::string Server::stats_json() const { return impl_->stats_json(); }

}  // namespace featlearn
