// The retrieval service over real HTTP on 127.0.0.1 (ephemeral ports): vector search against a brute-force
// ranking, add/get/delete, every bad input's status and JSON error, the token rule, concurrency, snapshots,
// and (with a tiny exported ResNet18) image search/add with request batching and the pixel limit.
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/index/embedder.h>
#include <featlearn/index/gallery_index.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/serve/batcher.h>
#include <featlearn/serve/server.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

namespace fs = std::filesystem;
using json = nlohmann::json;
using featlearn::BatchJob;
using featlearn::BatchJobResult;
using featlearn::Embedder;
using featlearn::GalleryIndex;
using featlearn::IndexMetric;
using featlearn::IndexSpec;
using featlearn::NewItem;
using featlearn::RequestBatcher;
using featlearn::SearchOptions;
using featlearn::Server;
using featlearn::ServeOptions;

namespace {

constexpr int64_t kDim = 8;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("featlearn_serve_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Removed at scope exit (declare it before the index that lives in it).
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(temp_dir(name)) {}
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  operator const fs::path&() const { return path; }
};

// 6 known vectors (deterministic), labels "l0".."l5", paths "img/<i>.jpg".
std::vector<float> known_vectors(int n) {
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n * kDim));
  for (auto& x : v) x = g(rng);
  return v;
}

std::shared_ptr<GalleryIndex> make_vector_index(const fs::path& dir, int n = 6) {
  IndexSpec spec;
  spec.index_method = "Flat";
  spec.metric = IndexMetric::kInnerProduct;
  spec.dim = kDim;
  std::vector<NewItem> items;
  for (int i = 0; i < n; ++i) items.push_back({"img/" + std::to_string(i) + ".jpg", "l" + std::to_string(i), ""});
  const auto v = known_vectors(n);
  return std::shared_ptr<GalleryIndex>(GalleryIndex::create(dir.string(), spec, items, v.data()));
}

// A Server running in its own thread on an ephemeral port.
struct Running {
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = -1;
  std::string run_error;

  Running(std::shared_ptr<GalleryIndex> index, std::shared_ptr<Embedder> emb, SearchOptions defaults,
          ServeOptions opt) {
    opt.port = 0;
    server = std::make_unique<Server>(std::move(index), std::move(emb), defaults, opt);
    port = server->bind();
    thread = std::thread([this] {
      try {
        server->run();
      } catch (const std::exception& e) {
        run_error = e.what();
      }
    });
  }
  ~Running() { stop(); }
  void stop() {
    if (!thread.joinable()) return;
    server->stop();
    thread.join();
    EXPECT_EQ(run_error, "");
  }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
    c->set_read_timeout(60, 0);
    c->set_connection_timeout(5, 0);
    c->set_keep_alive(true);  // one connection for all requests: errors must leave it in step
    return c;
  }
};

std::string vec_json(const std::vector<float>& v) { return json{{"vector", v}}.dump(); }

json body_of(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return json();
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << r->body;
  try {
    return json::parse(r->body);
  } catch (const std::exception&) {
    ADD_FAILURE() << "not JSON: " << r->body;
    return json();
  }
}

// Status `status` and a JSON {"error": "..."} containing `needle`.
void expect_error(const httplib::Result& r, int status, const std::string& needle, const std::string& what) {
  ASSERT_TRUE(r) << what << ": no response (" << httplib::to_string(r.error()) << ")";
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  const json j = body_of(r);
  ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_string()) << what << ": " << r->body;
  EXPECT_NE(j["error"].get<std::string>().find(needle), std::string::npos)
      << what << ": error '" << j["error"].get<std::string>() << "' does not mention '" << needle << "'";
}

// The ids of the items created from rows 0..n-1 (looked up by their paths, not assumed).
std::vector<int64_t> row_ids(const GalleryIndex& index, const std::string& prefix, const std::string& ext, int n) {
  std::vector<int64_t> ids;
  for (int i = 0; i < n; ++i) {
    const auto found = index.ids_with_path(prefix + std::to_string(i) + ext);
    EXPECT_EQ(found.size(), 1u) << i;
    ids.push_back(found.empty() ? -1 : found[0]);
  }
  return ids;
}

// Expected search result by brute force: (id, inner product), best first.
std::vector<std::pair<int64_t, float>> brute_force(const std::vector<float>& base, const std::vector<int64_t>& ids,
                                                   const std::vector<float>& q) {
  std::vector<std::pair<int64_t, float>> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    float s = 0;
    for (int64_t d = 0; d < kDim; ++d) s += base[i * kDim + d] * q[d];
    out.push_back({ids[i], s});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

// Sends raw bytes and returns the first response (headers + Content-Length body). The write side stays open:
// httplib does not answer a client that has half-closed its connection.
std::string raw_http(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (;;) {
    const size_t head_end = out.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      size_t len = 0;
      const size_t cl = out.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end) len = std::stoul(out.substr(cl + 16));
      if (out.size() >= head_end + 4 + len) break;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace

// ---- batcher ------------------------------------------------------------------------------------------

namespace {
// A fake model: features = the image's first kDim values (images are [2, 2, 2] or [8, 1, 1]).
torch::Tensor fake_embed(const torch::Tensor& x, std::atomic<int>* calls) {
  if (calls) ++*calls;
  return x.flatten(1).slice(1, 0, kDim).contiguous();
}
torch::Tensor image_of(const std::vector<float>& v, std::vector<int64_t> shape = {2, 2, 2}) {
  return torch::from_blob(const_cast<float*>(v.data()), {kDim}, torch::kFloat32).clone().view(shape);
}
}  // namespace

TEST(Batcher, ConcurrentJobsShareOneForwardPassAndGetTheirOwnResults) {
  const TempDir dir("batcher");
  auto index = make_vector_index(dir);
  const auto base = known_vectors(6);
  const auto ids = row_ids(*index, "img/", ".jpg", 6);
  std::atomic<int> calls{0};
  RequestBatcher b([&](const torch::Tensor& x) { return fake_embed(x, &calls); }, index.get(), 6,
                   /*max_wait_us=*/2000000);
  std::vector<std::future<BatchJobResult>> futs;
  // Six requests announce themselves (as the service's handlers do before decoding), then submit.
  std::vector<RequestBatcher::Ticket> tickets;
  for (int i = 0; i < 6; ++i) tickets.push_back(b.announce());
  for (int i = 0; i < 6; ++i) {
    BatchJob j;
    j.image = image_of(std::vector<float>(base.begin() + i * kDim, base.begin() + (i + 1) * kDim));
    j.search.top_k = 1 + i % 3;  // different top_k: one search at the largest, each list cut to its own
    futs.push_back(b.submit(std::move(j), &tickets[static_cast<size_t>(i)]));
  }
  for (int i = 0; i < 6; ++i) {
    const auto r = futs[i].get();
    const std::vector<float> q(base.begin() + i * kDim, base.begin() + (i + 1) * kDim);
    const auto expect = brute_force(base, ids, q);
    ASSERT_EQ(r.hits.size(), static_cast<size_t>(1 + i % 3));
    for (size_t k = 0; k < r.hits.size(); ++k) {
      EXPECT_EQ(r.hits[k].id, expect[k].first);
      EXPECT_NEAR(r.hits[k].score, expect[k].second, 1e-4);
    }
  }
  EXPECT_EQ(calls.load(), 1);  // max_batch reached: one forward pass, long before max_wait
  EXPECT_EQ(b.stats().batches, 1);
  EXPECT_EQ(b.stats().images, 6);
}

TEST(Batcher, ALoneRequestDoesNotWaitForCompany) {
  const TempDir dir("batcher_lone");
  auto index = make_vector_index(dir);
  std::atomic<int> calls{0};
  // A minute of allowed waiting: the lone job must still be answered at once, since nobody else announced.
  RequestBatcher b([&](const torch::Tensor& x) { return fake_embed(x, &calls); }, index.get(), 8,
                   /*max_wait_us=*/60000000);
  BatchJob j;
  j.image = image_of(known_vectors(1));
  auto fut = b.submit(std::move(j));
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_EQ(calls.load(), 1);
  // A request that announced itself and then failed to decode gives its ticket back: no wait for it either.
  { auto t = b.announce(); }
  BatchJob j2;
  j2.image = image_of(known_vectors(1));
  auto fut2 = b.submit(std::move(j2));
  ASSERT_EQ(fut2.wait_for(std::chrono::seconds(20)), std::future_status::ready);
}

TEST(Batcher, GroupsByShapeAddsInOneTransactionAndCarriesErrors) {
  const TempDir dir("batcher2");
  auto index = make_vector_index(dir);
  std::atomic<int> calls{0};
  std::atomic<int64_t> written{0};
  RequestBatcher b([&](const torch::Tensor& x) { return fake_embed(x, &calls); }, index.get(), 8, 300000,
                   [&](int64_t n) { written += n; });
  std::vector<float> v(kDim, 0.f);
  std::vector<std::future<BatchJobResult>> futs;
  std::vector<RequestBatcher::Ticket> tickets;  // four requests on their way: one batch
  for (int i = 0; i < 4; ++i) tickets.push_back(b.announce());
  for (int i = 0; i < 4; ++i) {
    v[i] = 10.f;
    BatchJob j;
    j.kind = BatchJob::Kind::kAdd;
    j.image = image_of(v, i % 2 ? std::vector<int64_t>{8, 1, 1} : std::vector<int64_t>{2, 2, 2});
    j.item.label = "new" + std::to_string(i);
    futs.push_back(b.submit(std::move(j), &tickets[static_cast<size_t>(i)]));
    v[i] = 0.f;
  }
  std::vector<int64_t> ids;
  for (auto& f : futs) ids.push_back(f.get().id);
  EXPECT_EQ(calls.load(), 2);  // two shapes, two forward passes
  EXPECT_EQ(written.load(), 4);
  EXPECT_EQ(index->size(), 10);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(index->get(ids[i])) << ids[i];
    EXPECT_EQ(index->get(ids[i])->label, "new" + std::to_string(i));
    EXPECT_EQ(index->get(ids[i])->path, "");
  }

  // A failing model fails each job of its batch, and the batcher goes on.
  RequestBatcher bad([](const torch::Tensor&) -> torch::Tensor { throw featlearn::Error("model exploded"); },
                     index.get(), 4, 1000);
  BatchJob j;
  j.image = image_of(v);
  auto f = bad.submit(j);
  try {
    f.get();
    ADD_FAILURE() << "no error";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model exploded"), std::string::npos);
  }
  // Wrong feature width is an error naming both sizes, not a bad read.
  RequestBatcher narrow([](const torch::Tensor& x) { return x.flatten(1).slice(1, 0, 3).contiguous(); }, index.get(), 4, 0);
  try {
    narrow.submit(j).get();
    ADD_FAILURE() << "no error";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("8-d"), std::string::npos) << e.what();
  }
  narrow.stop();
  EXPECT_THROW(narrow.submit(j).get(), featlearn::Error);  // after stop
}

// ---- HTTP, vector-only --------------------------------------------------------------------------------

class VectorServe : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    index_ = make_vector_index(dir_);
    base_ = known_vectors(6);
    ids_ = row_ids(*index_, "img/", ".jpg", 6);
  }
  void TearDown() override {
    index_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  int row_of(int64_t id) const {
    return static_cast<int>(std::find(ids_.begin(), ids_.end(), id) - ids_.begin());
  }
  ServeOptions options() const {
    ServeOptions o;
    o.max_body_bytes = 64 << 10;
    o.threads = 4;
    return o;
  }
  std::vector<float> row(int i) const { return {base_.begin() + i * kDim, base_.begin() + (i + 1) * kDim}; }
  fs::path dir_;
  std::shared_ptr<GalleryIndex> index_;
  std::vector<float> base_;
  std::vector<int64_t> ids_;  // id of row i
};

TEST_F(VectorServe, VectorSearchIsTheExactRanking) {
  Running srv(index_, nullptr, SearchOptions{}, options());
  auto cli = srv.client();
  {
    auto r = cli->Get("/health");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(body_of(r), json({{"status", "ok"}}));
  }
  const std::vector<float> q = {0.3f, -1.2f, 0.5f, 2.0f, -0.1f, 0.7f, 1.1f, -0.4f};
  const auto expect = brute_force(base_, ids_, q);
  auto r = cli->Post("/search?top_k=6", vec_json(q), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = body_of(r);
  ASSERT_EQ(j["results"].size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    const auto& h = j["results"][k];
    EXPECT_EQ(h["id"].get<int64_t>(), expect[k].first) << k;
    EXPECT_NEAR(h["score"].get<float>(), expect[k].second, 1e-4);
    EXPECT_EQ(h["label"], "l" + std::to_string(row_of(expect[k].first)));
    EXPECT_EQ(h["path"], "img/" + std::to_string(row_of(expect[k].first)) + ".jpg");
  }
  // Default top_k (5), explicit top_k, and score_thres (IP: keep score >= thres).
  EXPECT_EQ(body_of(cli->Post("/search", vec_json(q), "application/json"))["results"].size(), 5u);
  EXPECT_EQ(body_of(cli->Post("/search?top_k=2", vec_json(q), "application/json"))["results"].size(), 2u);
  const float thres = (expect[1].second + expect[2].second) / 2;
  const json t = body_of(cli->Post("/search?top_k=6&score_thres=" + std::to_string(thres), vec_json(q),
                                   "application/json; charset=utf-8"));
  ASSERT_EQ(t["results"].size(), 2u);
  EXPECT_EQ(t["results"][0]["id"].get<int64_t>(), expect[0].first);
  EXPECT_EQ(t["results"][1]["id"].get<int64_t>(), expect[1].first);
}

TEST_F(VectorServe, AddGetDeleteAndStats) {
  Running srv(index_, nullptr, SearchOptions{}, options());
  auto cli = srv.client();
  const std::vector<float> v = {5, 5, 5, 5, 5, 5, 5, 5};
  auto r = cli->Post("/items", json{{"vector", v}, {"label", "cat"}}.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const int64_t id = body_of(r)["id"].get<int64_t>();
  EXPECT_EQ(body_of(cli->Get("/stats"))["items"], 7);

  // Durable: the committed item is visible to a separate reader of the directory.
  {
    auto reader = GalleryIndex::open(dir_.string(), /*writable=*/false);
    ASSERT_TRUE(reader->get(id));
    EXPECT_EQ(reader->get(id)->label, "cat");
  }
  const json g = body_of(cli->Get("/items/" + std::to_string(id)));
  EXPECT_EQ(g, json({{"id", id}, {"path", ""}, {"label", "cat"}}));
  const json s = body_of(cli->Post("/search?top_k=1", vec_json(v), "application/json"));
  ASSERT_EQ(s["results"].size(), 1u);
  EXPECT_EQ(s["results"][0]["id"].get<int64_t>(), id);
  // Integer labels are kept as text; the query form works too.
  const json g2 = body_of(cli->Post("/items", json{{"vector", v}, {"label", 42}}.dump(), "application/json"));
  EXPECT_EQ(body_of(cli->Get("/items/" + std::to_string(g2["id"].get<int64_t>())))["label"], "42");
  const json g3 = body_of(cli->Post("/items?label=dog", vec_json(v), "application/json"));
  EXPECT_EQ(body_of(cli->Get("/items/" + std::to_string(g3["id"].get<int64_t>())))["label"], "dog");

  auto d = cli->Delete("/items/" + std::to_string(id));  // no body, no Content-Length
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 200);
  EXPECT_EQ(body_of(d), json({{"removed", id}}));
  expect_error(cli->Get("/items/" + std::to_string(id)), 404, std::to_string(id), "get after delete");
  expect_error(cli->Delete("/items/" + std::to_string(id)), 404, std::to_string(id), "delete twice");
  const json s2 = body_of(cli->Post("/search?top_k=10", vec_json(v), "application/json"));
  for (const auto& h : s2["results"]) EXPECT_NE(h["id"].get<int64_t>(), id);
  EXPECT_EQ(s2["results"].size(), 8u);

  const json st = body_of(cli->Get("/stats"));
  EXPECT_EQ(st["items"], 8);
  EXPECT_EQ(st["dim"], kDim);
  EXPECT_EQ(st["metric"], "IP");
  EXPECT_NE(st["index_type"].get<std::string>().find("Flat"), std::string::npos) << st["index_type"];
  EXPECT_EQ(st["model_fingerprint"], "");
  EXPECT_EQ(st["requests"]["search"]["total"].get<int64_t>(), 2);
  EXPECT_EQ(st["requests"]["search"]["status"]["2xx"].get<int64_t>(), st["requests"]["search"]["total"].get<int64_t>());
  EXPECT_GE(st["requests"]["items_get"]["status"]["4xx"].get<int64_t>(), 1);
  EXPECT_EQ(st["requests"]["items_delete"]["total"].get<int64_t>(), 2);
  for (const char* p : {"p50", "p90", "p99"}) {
    ASSERT_TRUE(st["requests"]["search"]["latency_ms"][p].is_number()) << st.dump();
    EXPECT_GE(st["requests"]["search"]["latency_ms"][p].get<double>(), 0.0);
  }
  EXPECT_LE(st["requests"]["search"]["latency_ms"]["p50"].get<double>(),
            st["requests"]["search"]["latency_ms"]["p99"].get<double>());
  EXPECT_TRUE(st["requests"]["health"]["latency_ms"]["p50"].is_null());  // no samples yet
  EXPECT_EQ(st["batching"]["batches"], 0);

  // Graceful stop saves the snapshot.
  EXPECT_TRUE(index_->snapshot_stale());
  cli.reset();  // an idle keep-alive connection would hold the stop for the keep-alive timeout
  srv.stop();
  EXPECT_FALSE(index_->snapshot_stale());
}

TEST_F(VectorServe, BadInputsGetTheRightStatusAndNameTheField) {
  auto opt = options();
  opt.max_body_bytes = 4096;
  Running srv(index_, nullptr, SearchOptions{}, opt);
  auto cli = srv.client();
  const std::string ok = vec_json(row(0));
  const std::string J = "application/json";
  expect_error(cli->Post("/search", "{\"vector\": [1, 2", J), 400, "malformed JSON", "truncated JSON");
  expect_error(cli->Post("/search", "[1,2,3]", J), 400, "object", "JSON array body");
  expect_error(cli->Post("/search", "", J), 400, "malformed JSON", "empty JSON body");
  expect_error(cli->Post("/search", "{}", J), 400, "vector", "missing vector");
  expect_error(cli->Post("/search", "{\"vector\": 3}", J), 400, "vector", "scalar vector");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,\"x\",4,5,6,7,8]}", J), 400, "vector[2]", "string element");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,null,4,5,6,7,8]}", J), 400, "vector[2]", "null element");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,3,4,5,6,7,NaN]}", J), 400, "malformed JSON", "NaN");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,3,4,5,6,7,1e39]}", J), 400, "vector[7]", "float overflow");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,3]}", J), 400, "expected 8 values", "wrong dimension");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,3]}", J), 400, "got 3", "wrong dimension");
  expect_error(cli->Post("/search", "{\"vector\": [1,2,3,4,5,6,7,8], \"vectr\": 1}", J), 400, "vectr", "unknown key");
  expect_error(cli->Post("/search", std::string(2000, '[') + std::string(2000, ']'), J), 400, "nested", "deep JSON");
  for (const std::string k : {"0", "1001", "abc", "3x", "-2", "", "1.5"})
    expect_error(cli->Post("/search?top_k=" + k, ok, J), 400, "top_k", "top_k=" + k);
  for (const std::string t : {"abc", "nan", "inf", "1e99", ""})
    expect_error(cli->Post("/search?score_thres=" + t, ok, J), 400, "score_thres", "score_thres=" + t);
  expect_error(cli->Post("/search?top_k=2&top_k=3", ok, J), 400, "top_k", "repeated top_k");
  expect_error(cli->Post("/search?topk=3", ok, J), 400, "did you mean top_k", "misspelt parameter");
  expect_error(cli->Post("/search", "\x89PNG\r\n\x1a\n....", "image/png"), 400, "no model", "image on vector-only");
  expect_error(cli->Post("/items", "\x89PNG\r\n\x1a\n....", "image/jpeg"), 400, "no model", "image add on vector-only");
  expect_error(cli->Post("/search", ok, "text/plain"), 415, "Content-Type", "text/plain");
  expect_error(cli->Post("/search", ok, "application/octet-stream"), 415, "Content-Type", "octet-stream");
  expect_error(cli->Post("/search", std::string(5000, ' ') + ok, J), 413, "max_body_bytes", "body over the limit");
  {
    // Under max_body_bytes but far more JSON than one 8-d vector needs: refused before parsing.
    auto big_opt = options();
    Running big(index_, nullptr, SearchOptions{}, big_opt);
    auto c = big.client();
    std::string many = "{\"vector\": [" + std::string(40000, ' ') + "1,2,3,4,5,6,7,8]}";
    expect_error(c->Post("/search", many, J), 413, "JSON body", "oversized JSON");
    auto fine = c->Post("/search", ok, J);
    ASSERT_TRUE(fine);
    EXPECT_EQ(fine->status, 200);
  }
  {
    // Chunked (no Content-Length) over the limit, and the decompressed size counts for a gzip body.
    size_t sent = 0;
    auto r = cli->Post(
        "/search",
        [&](size_t, httplib::DataSink& sink) {
          const std::string chunk(1000, ' ');
          if (sent < 20000) {
            sink.write(chunk.data(), chunk.size());
            sent += chunk.size();
          } else {
            sink.done();
          }
          return true;
        },
        J);
    expect_error(r, 413, "max_body_bytes", "chunked body over the limit");
  }
  expect_error(cli->Post("/items", "{\"vector\": [1,2,3,4,5,6,7,8], \"path\": \"/etc/passwd\"}", J), 400, "path",
               "client-given path");
  expect_error(cli->Post("/items", json{{"vector", row(1)}, {"label", "a\tb"}}.dump(), J), 400, "label",
               "control char label");
  expect_error(cli->Post("/items", json{{"vector", row(1)}, {"label", std::string(2000, 'x')}}.dump(), J), 400,
               "label", "long label");
  expect_error(cli->Post("/items", json{{"vector", row(1)}, {"label", 1.5}}.dump(), J), 400, "label", "float label");
  expect_error(cli->Post("/items?label=x", json{{"vector", row(1)}, {"label", "y"}}.dump(), J), 400, "label",
               "label twice");
  expect_error(cli->Post("/items?label=%FF%FE", ok, J), 400, "UTF-8", "invalid UTF-8 label");
  expect_error(cli->Get("/items/999"), 404, "999", "unknown id");
  expect_error(cli->Delete("/items/999"), 404, "999", "delete unknown id");
  expect_error(cli->Get("/items/abc"), 400, "id", "non-numeric id");
  expect_error(cli->Get("/items/-3"), 400, "id", "negative id");
  expect_error(cli->Get("/items/99999999999999999999999"), 400, "id", "id overflow");
  expect_error(cli->Get("/nope"), 404, "no route", "unknown GET route");
  expect_error(cli->Post("/nope", ok, J), 404, "no route", "unknown POST route");
  expect_error(cli->Delete("/items"), 405, "POST", "DELETE /items");
  expect_error(cli->Delete("/nope"), 404, "no route", "DELETE /nope");
  expect_error(cli->Get("/search"), 405, "POST", "GET /search");
  expect_error(cli->Put("/items", ok, J), 405, "PUT", "PUT /items");
  // Nothing above changed the index.
  EXPECT_EQ(index_->size(), 6);
  EXPECT_EQ(body_of(cli->Post("/search", ok, J))["results"][0]["id"], ids_[0]);

  // Raw protocol garbage gets a JSON 400 and the service keeps serving.
  const std::string garbage = raw_http(srv.port, "NOT HTTP AT ALL\r\n\r\n");
  EXPECT_NE(garbage.find("400"), std::string::npos) << garbage;
  EXPECT_NE(garbage.find("{\"error\""), std::string::npos) << garbage;
  const std::string bad_len =
      raw_http(srv.port, "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Content-Length: abc\r\n\r\n{}");
  EXPECT_NE(bad_len.find("400"), std::string::npos) << bad_len;
  const std::string no_len =
      raw_http(srv.port, "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n");
  EXPECT_NE(no_len.find("411"), std::string::npos) << no_len;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string del = raw_http(srv.port, "DELETE /items/12345 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(del.find("404"), std::string::npos) << del;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3)) << "DELETE without a body waited";
  auto r = cli->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(VectorServe, TokenGuardsWritesOnly) {
  const fs::path tok = dir_ / "token";
  std::ofstream(tok) << "  s3cret-token\n";
  auto opt = options();
  opt.token_file = tok.string();
  Running srv(index_, nullptr, SearchOptions{}, opt);
  auto cli = srv.client();
  const std::string body = vec_json(row(2));
  const std::string J = "application/json";
  expect_error(cli->Post("/items", body, J), 401, "Authorization", "add without token");
  expect_error(cli->Post("/items", {{"Authorization", "Bearer wrong"}}, body, J), 401, "wrong token", "wrong token");
  expect_error(cli->Post("/items", {{"Authorization", "Basic czNjcmV0LXRva2Vu"}}, body, J), 401, "Bearer", "basic");
  const std::string item = "/items/" + std::to_string(ids_[1]);
  expect_error(cli->Delete(item), 401, "Authorization", "delete without token");
  expect_error(cli->Delete(item, {{"Authorization", "Bearer s3cret-tokenX"}}), 401, "wrong", "longer token");
  EXPECT_EQ(index_->size(), 6);
  const httplib::Headers auth = {{"Authorization", "Bearer s3cret-token"}};
  auto r = cli->Post("/items", auth, body, J);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto d = cli->Delete(item, auth);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 200) << d->body;
  EXPECT_EQ(index_->size(), 6);
  // Reads need no token.
  auto s = cli->Post("/search", body, J);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200);
}

TEST_F(VectorServe, StartupRulesForHostAndToken) {
  auto opt = options();
  opt.host = "0.0.0.0";
  try {
    Server s(index_, nullptr, SearchOptions{}, opt);
    ADD_FAILURE() << "non-loopback without a token was accepted";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--token-file"), std::string::npos) << e.what();
  }
  const fs::path empty = dir_ / "empty_token";
  std::ofstream(empty) << " \n";
  opt.token_file = empty.string();
  try {
    Server s(index_, nullptr, SearchOptions{}, opt);
    ADD_FAILURE() << "an empty token file was accepted";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
  opt.token_file = (dir_ / "missing").string();
  EXPECT_THROW(Server(index_, nullptr, SearchOptions{}, opt), featlearn::Error);
  const fs::path good = dir_ / "token";
  std::ofstream(good) << "abc";
  opt.token_file = good.string();
  EXPECT_NO_THROW(Server(index_, nullptr, SearchOptions{}, opt));
  opt = options();
  opt.max_batch = 0;
  EXPECT_THROW(Server(index_, nullptr, SearchOptions{}, opt), featlearn::Error);
  // A server bound but never run releases its port.
  int port = -1;
  {
    auto o = options();
    o.port = 0;
    Server a(index_, nullptr, SearchOptions{}, o);
    port = a.bind();
  }
  {
    auto o = options();
    o.port = port;
    Server b(index_, nullptr, SearchOptions{}, o);
    EXPECT_EQ(b.bind(), port);
  }
  // A port in use is a clear error.
  Running first(index_, nullptr, SearchOptions{}, options());
  auto second_opt = options();
  second_opt.port = first.port;
  Server second(index_, nullptr, SearchOptions{}, second_opt);
  try {
    second.bind();
    ADD_FAILURE() << "bound a port in use";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(first.port)), std::string::npos) << e.what();
  }
}

TEST_F(VectorServe, ConcurrentClientsAllSucceed) {
  auto opt = options();
  opt.snapshot_every = 3;  // background snapshots while serving
  Running srv(index_, nullptr, SearchOptions{}, opt);
  std::atomic<int> ok{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto cli = srv.client();
      for (int k = 0; k < 25; ++k) {
        const int i = (t + k) % 6;
        auto r = cli->Post("/search?top_k=1", vec_json(row(i)), "application/json");
        if (r && r->status == 200 && json::parse(r->body)["results"].size() == 1) ++ok;
        else ++wrong;
        if (k % 10 == 0) {  // a few writes in between
          auto a = cli->Post("/items?label=t" + std::to_string(t), vec_json(std::vector<float>(kDim, 0.01f)),
                             "application/json");
          if (!a || a->status != 200) ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 200);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(index_->size(), 6 + 8 * 3);
  auto cli = srv.client();
  json st;
  for (int i = 0; i < 100; ++i) {  // the background snapshot thread runs asynchronously
    st = body_of(cli->Get("/stats"));
    if (st["snapshot"]["saved_in_background"].get<int64_t>() >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(st["snapshot"]["saved_in_background"].get<int64_t>(), 1) << st.dump();
  EXPECT_EQ(st["requests"]["search"]["total"].get<int64_t>(), 200);
}

// ---- HTTP with a tiny exported model ------------------------------------------------------------------

namespace {

// A randomly initialised ResNet18 -> 8-d VehicleNeck at 24x24, exported with featlearn export.
std::string export_tiny_model(const fs::path& dir) {
  const std::string cfg = R"(
Global:
  device: cpu
  image_shape: [3, 24, 24]
  save_inference_dir: ")" + (dir / "inference").string() + R"("
Arch:
  name: RecModel
  infer_output_key: features
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: avg_pool}
  Neck: {name: VehicleNeck, in_channels: 512, out_channels: 8}
DataLoader:
  Eval:
    dataset:
      name: ImageNetDataset  # export reads the transforms; the whole config is checked (the list is not read)
      image_root: ")" + dir.string() + R"("
      cls_label_path: ")" + (dir / "unused.txt").string() + R"("
      transform_ops:
        - DecodeImage: {to_rgb: True, channel_first: False}
        - ResizeImage: {size: 24}
        - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
)";
  const fs::path cfg_path = dir / "tiny.yaml";
  std::ofstream(cfg_path) << cfg;
  torch::manual_seed(5);
  featlearn::RecModel m(featlearn::Config::from_string(cfg, "tiny.yaml")["Arch"]);
  featlearn::save_checkpoint((dir / "random").string(), *m, nullptr, nullptr, featlearn::CheckpointMeta{});
  featlearn::ConfigArgs args{cfg_path.string(), {"Global.pretrained_model=" + (dir / "random").string()}};
  EXPECT_EQ(featlearn::cmd_export(args), 0);
  return (dir / "inference").string();
}

// Random-noise images (distinct features even from an untrained model).
std::vector<uchar> noise_png(int seed, int w = 20, int h = 20) {
  cv::Mat img(h, w, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(img, cv::RNG::UNIFORM, 0, 256);
  std::vector<uchar> buf;
  cv::imencode(".png", img, buf);
  return buf;
}

std::string as_string(const std::vector<uchar>& b) { return {b.begin(), b.end()}; }

}  // namespace

class ImageServe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(temp_dir("image"));
    model_dir_ = new std::string(export_tiny_model(*root_));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
    delete model_dir_;
  }
  void SetUp() override {
    embedder_ = std::make_shared<Embedder>(*model_dir_, featlearn::ConfigNode{});
    ASSERT_EQ(embedder_->dim(), kDim);
    const fs::path dir = *root_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir);
    IndexSpec spec;
    spec.index_method = "Flat";
    spec.metric = IndexMetric::kInnerProduct;
    spec.dim = kDim;
    spec.model_fingerprint = embedder_->fingerprint();
    spec.model_dir = *model_dir_;
    spec.preprocess_yaml = embedder_->preprocess_yaml();
    std::vector<NewItem> items;
    std::vector<torch::Tensor> images;
    for (int i = 0; i < 8; ++i) {
      const auto png = noise_png(i);
      images.push_back(embedder_->preprocess_bytes(png.data(), png.size(), "gallery " + std::to_string(i)));
      items.push_back({"g/" + std::to_string(i) + ".png", "c" + std::to_string(i), ""});
    }
    const auto feats = embedder_->embed(torch::stack(images)).contiguous();
    index_ = std::shared_ptr<GalleryIndex>(GalleryIndex::create(dir.string(), spec, items, feats.data_ptr<float>()));
    index_->check_model(embedder_->fingerprint(), embedder_->dim(), embedder_->preprocess_yaml(), *model_dir_);
  }
  static fs::path* root_;
  static std::string* model_dir_;
  std::shared_ptr<Embedder> embedder_;
  std::shared_ptr<GalleryIndex> index_;
};
fs::path* ImageServe::root_ = nullptr;
std::string* ImageServe::model_dir_ = nullptr;

TEST_F(ImageServe, ConcurrentImageSearchesAreBatchedAndEachGetsItsOwnAnswer) {
  ServeOptions opt;
  opt.max_batch = 8;
  opt.max_wait_us = 300000;  // generous: the 8 requests preprocess on 2 cores
  opt.threads = 8;
  Running srv(index_, embedder_, SearchOptions{}, opt);
  const auto ids = row_ids(*index_, "g/", ".png", 8);
  std::vector<json> answers(8);
  std::vector<int> statuses(8, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto cli = srv.client();
      auto r = cli->Post("/search?top_k=3", as_string(noise_png(i)), "image/png");
      if (!r) return;
      statuses[i] = r->status;
      answers[i] = json::parse(r->body);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(statuses[i], 200) << answers[i].dump();
    ASSERT_EQ(answers[i]["results"].size(), 3u);
    EXPECT_EQ(answers[i]["results"][0]["id"].get<int64_t>(), ids[i]) << answers[i].dump();  // itself first
    EXPECT_NEAR(answers[i]["results"][0]["score"].get<float>(), 1.0f, 1e-3);
    EXPECT_EQ(answers[i]["results"][0]["label"], "c" + std::to_string(i));
  }
  const json st = json::parse(srv.server->stats_json());
  EXPECT_EQ(st["batching"]["images"], 8);
  EXPECT_LT(st["batching"]["batches"].get<int64_t>(), 8) << st["batching"].dump();
  EXPECT_GT(st["batching"]["mean_batch_size"].get<double>(), 1.0);
  EXPECT_GT(st["batching"]["max_batch_size"].get<int64_t>(), 1);
  EXPECT_EQ(st["model_fingerprint"], embedder_->fingerprint());

  // The JSON vector form works on a model-backed service too.
  const auto f = index_->vector(ids[3]);
  auto cli = srv.client();
  const json v = body_of(cli->Post("/search?top_k=1", vec_json(f), "application/json"));
  EXPECT_EQ(v["results"][0]["id"], ids[3]);
}

TEST_F(ImageServe, ImageAddAndBadImages) {
  ServeOptions opt;
  opt.max_pixels = 30 * 30;  // gallery images are 20x20
  opt.max_wait_us = 0;
  Running srv(index_, embedder_, SearchOptions{}, opt);
  auto cli = srv.client();
  const auto png = as_string(noise_png(100));
  auto r = cli->Post("/items?label=newcomer", png, "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const int64_t id = body_of(r)["id"].get<int64_t>();
  EXPECT_EQ(body_of(cli->Get("/items/" + std::to_string(id))),
            json({{"id", id}, {"path", ""}, {"label", "newcomer"}}));
  const json s = body_of(cli->Post("/search?top_k=1", png, "image/png"));
  EXPECT_EQ(s["results"][0]["id"].get<int64_t>(), id);
  EXPECT_EQ(index_->size(), 9);

  expect_error(cli->Post("/search", std::string("this is not an image at all"), "image/png"), 415, "body",
               "text as an image");
  expect_error(cli->Post("/search", png.substr(0, 60), "image/png"), 400, "body", "truncated PNG");
  expect_error(cli->Post("/search", as_string(noise_png(1, 40, 40)), "image/png"), 413, "max_pixels", "40x40 PNG");
  expect_error(cli->Post("/items", as_string(noise_png(1, 40, 40)), "image/png"), 413, "max_pixels", "40x40 add");
  std::vector<uchar> jpg;
  cv::imencode(".jpg", cv::Mat(31, 31, CV_8UC3, cv::Scalar(9, 9, 9)), jpg);
  expect_error(cli->Post("/search", as_string(jpg), "image/jpeg"), 413, "31x31", "31x31 JPEG");
  expect_error(cli->Post("/search", std::string(), "image/png"), 400, "empty", "empty image body");
  // A header claiming a huge image is refused before any decode.
  const std::string bomb("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\x01\x86\xa0\0\x01\x86\xa0\x08\x02\0\0\0\0\0\0\0", 33);
  expect_error(cli->Post("/search", bomb, "image/png"), 413, "max_pixels", "PNG bomb header");
  EXPECT_EQ(index_->size(), 9);
  auto h = cli->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(ImageServe, ModelMustMatchTheIndexDimension) {
  // A vector-only index of another width cannot be served with this model.
  const fs::path dir = *root_ / "other_dim";
  fs::remove_all(dir);
  IndexSpec spec;
  spec.index_method = "Flat";
  spec.dim = 4;
  const std::vector<float> v(4, 1.f);
  std::shared_ptr<GalleryIndex> idx(GalleryIndex::create(dir.string(), spec, {{"", "x", ""}}, v.data()));
  try {
    Server s(idx, embedder_, SearchOptions{}, ServeOptions{});
    ADD_FAILURE() << "accepted a 4-d index with an 8-d model";
  } catch (const featlearn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("8-d"), std::string::npos) << e.what();
  }
}
