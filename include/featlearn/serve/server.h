// `featlearn serve`: the HTTP/JSON retrieval service over one gallery index and (optionally) one model
// (docs/serve.md). Endpoints:
//   POST   /search?top_k=K&score_thres=T&hamming_radius=R   body: an image (Content-Type image/*) or
//                                                            {"vector": [...]} (application/json)
//          -> {"results": [{"id", "path", "label", "score"}, ...]} best first
//   POST   /items?label=L          body: an image, or {"vector": [...], "label": ...}  -> {"id": N}
//   GET    /items/{id}             -> {"id", "path", "label"}   (404 when unknown)
//   DELETE /items/{id}             -> {"removed": id}           (404 when unknown)
//   GET    /health                 -> {"status": "ok"}
//   GET    /stats                  -> items, model, index type, request counts, latency percentiles, batching
// Every error is a 4xx/5xx with {"error": "..."} naming the field at fault. Writes (POST/DELETE /items) need
// `Authorization: Bearer <token>` when a token file is given; a write answered 2xx is committed to the index
// database. Image requests are batched into one model forward pass (batcher.h).
#pragma once
#include <featlearn/engine/commands.h>
#include <featlearn/index/gallery_index.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace httplib {
class Server;
}

namespace featlearn {

class Embedder;

struct ServeOptions {
  std::string host = "127.0.0.1";  // a non-loopback address requires token_file
  int port = 8080;                 // 0: an ephemeral port (bind() returns it)
  std::string token_file;          // file holding the bearer token for writes ("" : writes are open)
  size_t max_body_bytes = 16 << 20;     // request body limit (413 above), after any Content-Encoding
  int64_t max_pixels = 4096 * 4096;     // decoded image limit (413 above), read from the image header
  int max_batch = 16;                   // images per model forward pass
  int max_wait_us = 2000;               // how long the first image of a batch waits for company
  int threads = 0;                      // request threads = connections served at once; 0: max(64, 8 * cores)
  int64_t snapshot_every = 1000;        // items written between background snapshots; 0: only at stop
  int timeout_s = 10;                   // socket read/write timeout (slow clients)
};

class Server {
 public:
  // `embedder` may be null (vector-only service: image requests are 400). `defaults` are the search
  // parameters a request does not give (IndexProcess return_k / score_thres / hamming_radius / ef_search /
  // nprobe). Throws Error for bad options: a non-loopback host without token_file, an empty or unreadable
  // token file, a model whose output dimension is not the index's.
  Server(std::shared_ptr<GalleryIndex> index, std::shared_ptr<Embedder> embedder, SearchOptions defaults,
         ServeOptions opt);
  ~Server();  // stop() and wait for run() to return
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and returns the port (the chosen one when opt.port is 0). Error when it cannot bind.
  int bind();
  // Serves until stop(); then answers the queued image jobs and saves a snapshot when the index is stale.
  // Calls bind() first when it was not called.
  void run();
  // Asks run() to return (callable from any thread, also before run(); idempotent).
  void stop();
  // The /stats document.
  std::string stats_json() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct ServeArgs {
  ConfigArgs cfg;         // -c inference config (+ -o overrides): model, preprocessing, IndexProcess
  std::string index_dir;  // --index-dir: vector-only service over an existing index (no -c)
  ServeOptions opt;
};

// Opens the index (writable), loads the model and checks it against the index, serves until SIGINT/SIGTERM,
// then stops gracefully and saves a snapshot. Returns the exit code; Error for user errors.
int cmd_serve(const ServeArgs& args);

}  // namespace featlearn
