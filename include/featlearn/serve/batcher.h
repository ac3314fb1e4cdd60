// Request batching for the service: concurrent image requests share one model forward pass.
//
// Request threads decode and preprocess their own image (in parallel) and submit the [C, H, W] tensor. One
// batcher thread takes up to max_batch waiting jobs, waiting at most max_wait_us after the first one arrived,
// stacks jobs of equal shape (a group per shape), runs `embed` once per group, then answers the whole batch
// with one GalleryIndex::search per distinct score threshold (top_k: the group's largest, each job's list
// cut to its own) and one GalleryIndex::add (one transaction) for all its add jobs. An exception from embed,
// search or add is delivered to every job it concerns; the batcher keeps running.
#pragma once
#include <featlearn/index/gallery_index.h>
#include <torch/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace featlearn {

struct BatchJobResult {
  std::vector<SearchHit> hits;  // search jobs: best first
  int64_t id = -1;              // add jobs: the new item's id
};

struct BatchJob {
  enum class Kind { kSearch, kAdd };
  Kind kind = Kind::kSearch;
  torch::Tensor image;   // [C, H, W] float32, preprocessed
  SearchOptions search;  // kSearch
  NewItem item;          // kAdd
};

struct BatcherStats {
  int64_t batches = 0;  // embed calls (one per shape group)
  int64_t images = 0;   // images embedded
  int64_t max_batch_seen = 0;
};

class RequestBatcher {
 public:
  // [N, C, H, W] -> [N, D] features.
  using EmbedFn = std::function<torch::Tensor(const torch::Tensor&)>;
  // Called after a successful add with the number of items added (for snapshot scheduling).
  using WriteFn = std::function<void(int64_t)>;

  // requires: index outlives the batcher; max_batch >= 1; max_wait_us >= 0.
  RequestBatcher(EmbedFn embed, GalleryIndex* index, int max_batch, int max_wait_us, WriteFn on_write = nullptr);
  ~RequestBatcher();  // stop()
  RequestBatcher(const RequestBatcher&) = delete;
  RequestBatcher& operator=(const RequestBatcher&) = delete;

  // A request about to decode an image announces itself: a batch waits (up to max_wait_us) only while some
  // announced request has not submitted yet, so a lone request is never delayed. The ticket is given back by
  // submit() or, when the decode fails, by its destructor.
  class Ticket {
   public:
    explicit Ticket(RequestBatcher* b = nullptr) : b_(b) {}
    Ticket(Ticket&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();

   private:
    friend class RequestBatcher;
    RequestBatcher* b_;
  };
  Ticket announce();

  // Queues a job (giving back `ticket` when given). After stop() the future holds an Error.
  std::future<BatchJobResult> submit(BatchJob job, Ticket* ticket = nullptr);
  // Answers the jobs already queued, then joins the thread. Idempotent.
  void stop();
  BatcherStats stats() const;

 private:
  struct Pending {
    BatchJob job;
    std::promise<BatchJobResult> done;
    std::chrono::steady_clock::time_point arrived;
  };
  void loop();
  void run_batch(std::vector<Pending>& batch);

  EmbedFn embed_;
  GalleryIndex* index_;
  WriteFn on_write_;
  int max_batch_;
  int max_wait_us_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  int64_t announced_ = 0;  // tickets out
  BatcherStats stats_;
  std::thread thread_;
};

}  // namespace featlearn
