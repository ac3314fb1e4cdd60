#include <featlearn/common/error.h>
#include <featlearn/serve/batcher.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <map>
#include <tuple>

namespace featlearn {

RequestBatcher::RequestBatcher(EmbedFn embed, GalleryIndex* index, int max_batch, int max_wait_us, WriteFn on_write)
    : embed_(std::move(embed)),
      index_(index),
      on_write_(std::move(on_write)),
      max_batch_(max_batch),
      max_wait_us_(max_wait_us) {
  FL_ASSERT(embed_ && index_, "RequestBatcher needs an embed function and an index");
  if (max_batch_ < 1) throw Error(fmt::format("max_batch must be >= 1 (got {})", max_batch_));
  if (max_wait_us_ < 0) throw Error(fmt::format("max_wait_us must be >= 0 (got {})", max_wait_us_));
  thread_ = std::thread([this] { loop(); });
}

RequestBatcher::~RequestBatcher() { stop(); }

RequestBatcher::Ticket::~Ticket() {
  if (!b_) return;
  {
    std::lock_guard<std::mutex> lk(b_->mu_);
    --b_->announced_;
  }
  b_->cv_.notify_one();
}

RequestBatcher::Ticket RequestBatcher::announce() {
  std::lock_guard<std::mutex> lk(mu_);
  ++announced_;
  return Ticket(this);
}

std::future<BatchJobResult> RequestBatcher::submit(BatchJob job, Ticket* ticket) {
  Pending p{std::move(job), {}, std::chrono::steady_clock::now()};
  auto fut = p.done.get_future();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (ticket && ticket->b_ == this) {
      --announced_;
      ticket->b_ = nullptr;
    }
    if (stopping_) {
      p.done.set_exception(std::make_exception_ptr(Error("the service is shutting down")));
      return fut;
    }
    queue_.push_back(std::move(p));
  }
  cv_.notify_one();
  return fut;
}

void RequestBatcher::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

BatcherStats RequestBatcher::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void RequestBatcher::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left to answer
    // Wait for more jobs, at most max_wait_us after the first one arrived, and only while announced requests
    // are still decoding (nothing else can join this batch).
    const auto deadline = queue_.front().arrived + std::chrono::microseconds(max_wait_us_);
    cv_.wait_until(lk, deadline, [&] {
      return stopping_ || queue_.size() >= static_cast<size_t>(max_batch_) || announced_ <= 0;
    });
    std::vector<Pending> batch;
    while (!queue_.empty() && batch.size() < static_cast<size_t>(max_batch_)) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lk.unlock();
    try {
      run_batch(batch);
    } catch (...) {
      // run_batch answers its jobs itself; this only guards against a failure while doing so.
      for (auto& p : batch) {
        try {
          p.done.set_exception(std::current_exception());
        } catch (const std::future_error&) {
          // already answered
        }
      }
    }
    lk.lock();
  }
}

void RequestBatcher::run_batch(std::vector<Pending>& batch) {
  const size_t n = batch.size();
  std::vector<torch::Tensor> feats(n);   // [D] per job
  std::vector<std::exception_ptr> errors(n);

  // One forward pass per input shape (normally one: the preprocessing fixes the shape).
  std::map<std::vector<int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < n; ++i) groups[batch[i].job.image.sizes().vec()].push_back(i);
  const int64_t dim = index_->spec().dim;
  for (const auto& g : groups) {
    try {
      std::vector<torch::Tensor> images;
      images.reserve(g.second.size());
      for (size_t i : g.second) images.push_back(batch[i].job.image);
      const auto out = embed_(torch::stack(images)).to(torch::kCPU, torch::kFloat32).contiguous();  // [N, D]
      const auto rows = static_cast<int64_t>(g.second.size());
      if (out.dim() != 2 || out.size(0) != rows || out.size(1) != dim)
        throw Error(fmt::format("the model returned features of shape {} for {} images; the index holds {}-d vectors",
                                c10::str(out.sizes()), rows, dim));
      for (size_t k = 0; k < g.second.size(); ++k) feats[g.second[k]] = out[static_cast<int64_t>(k)];
      std::lock_guard<std::mutex> lk(mu_);
      stats_.batches += 1;
      stats_.images += rows;
      stats_.max_batch_seen = std::max(stats_.max_batch_seen, rows);
    } catch (...) {
      for (size_t i : g.second) errors[i] = std::current_exception();
    }
  }

  // Searches: one index search per distinct set of thresholds/parameters, at the largest top_k.
  using Key = std::tuple<std::optional<float>, std::optional<float>, int64_t, int64_t, bool>;
  std::map<Key, std::vector<size_t>> searches;
  std::vector<size_t> adds;
  for (size_t i = 0; i < n; ++i) {
    if (errors[i]) continue;
    const auto& j = batch[i].job;
    if (j.kind == BatchJob::Kind::kAdd) {
      adds.push_back(i);
    } else {
      const auto& o = j.search;
      searches[Key{o.score_thres, o.hamming_radius, o.ef_search, o.nprobe, o.exact}].push_back(i);
    }
  }
  for (const auto& s : searches) {
    try {
      SearchOptions opt = batch[s.second.front()].job.search;
      std::vector<torch::Tensor> rows;
      for (size_t i : s.second) {
        opt.top_k = std::max(opt.top_k, batch[i].job.search.top_k);
        rows.push_back(feats[i]);
      }
      const auto q = torch::stack(rows).contiguous();  // [nq, D]
      auto hits = index_->search(q.data_ptr<float>(), q.size(0), opt);
      FL_ASSERT(hits.size() == s.second.size(), "search returned a list per query");
      for (size_t k = 0; k < s.second.size(); ++k) {
        auto& h = hits[k];
        const auto want = static_cast<size_t>(batch[s.second[k]].job.search.top_k);
        if (h.size() > want) h.resize(want);
        batch[s.second[k]].done.set_value(BatchJobResult{std::move(h), -1});
      }
    } catch (...) {
      for (size_t i : s.second) errors[i] = std::current_exception();
    }
  }
  if (!adds.empty()) {
    try {
      std::vector<NewItem> items;
      std::vector<torch::Tensor> rows;
      for (size_t i : adds) {
        items.push_back(batch[i].job.item);
        rows.push_back(feats[i]);
      }
      const auto v = torch::stack(rows).contiguous();
      const auto ids = index_->add(items, v.data_ptr<float>());
      FL_ASSERT(ids.size() == adds.size(), "add returned an id per item");
      if (on_write_) on_write_(static_cast<int64_t>(ids.size()));
      for (size_t k = 0; k < adds.size(); ++k) batch[adds[k]].done.set_value(BatchJobResult{{}, ids[k]});
    } catch (...) {
      for (size_t i : adds) errors[i] = std::current_exception();
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i]) continue;
    try {
      batch[i].done.set_exception(errors[i]);
    } catch (const std::future_error&) {
      // answered before a later step of its group failed
    }
  }
}

}  // namespace featlearn
