// Test helper for tests/index/test_crash_safety.cpp: applies random index operations to DIR forever, printing
// "start C" (items when it began), then per operation "begin E" (items expected after it) and "ack C" (after
// it returned), flushed, so the test can kill -9 it at any moment and check what the index holds.
//   index_crash_writer DIR METHOD SEED
#include <unistd.h>

#include <featlearn/index/gallery_index.h>

#include "crash_vectors.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

using namespace featlearn;

namespace {

void say(const std::string& s) {
  const std::string line = s + "\n";
  (void)!::write(1, line.data(), line.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  const std::string dir = argv[1], method = argv[2];
  std::mt19937_64 rng(std::stoull(argv[3]));
  IndexSpec spec;
  spec.index_method = method;
  spec.dim = kCrashDim;
  spec.nlist = 4;
  int64_t next_key = 0;
  auto make = [&](int64_t n, std::vector<NewItem>* items, std::vector<float>* vecs) {
    for (int64_t i = 0; i < n; ++i, ++next_key) {
      items->push_back({"k" + std::to_string(next_key), "l" + std::to_string(next_key % 5), ""});
      auto v = vector_for_key(next_key);
      vecs->insert(vecs->end(), v.begin(), v.end());
    }
  };
  try {
    std::unique_ptr<GalleryIndex> idx;
    bool built = std::filesystem::exists(std::filesystem::path(dir) / "gallery.db");
    if (built) {
      try {
        idx = GalleryIndex::open(dir, true);
      } catch (const Error& e) {
        // An earlier writer was killed inside the first build: build again, as a user would be told to.
        if (std::string(e.what()).find("first build was interrupted") == std::string::npos) throw;
        built = false;
      }
    }
    if (built) {
      for (const auto id : idx->ids()) next_key = std::max<int64_t>(next_key, std::stoll(idx->get(id)->path.substr(1)) + 1);
      next_key += 100000;  // keys never repeat, also after a killed add whose keys were never committed
    } else {
      std::vector<NewItem> items;
      std::vector<float> v;
      make(50, &items, &v);
      say("start 0");
      say("begin 50");
      idx = GalleryIndex::create(dir, spec, items, v.data());
      say("ack 50");
    }
    say("start " + std::to_string(idx->size()));
    while (true) {
      const auto r = rng() % 20;
      const int64_t count = idx->size();
      if (r < 11) {
        std::vector<NewItem> items;
        std::vector<float> v;
        make(1 + static_cast<int64_t>(rng() % 40), &items, &v);
        say("begin " + std::to_string(count + static_cast<int64_t>(items.size())));
        idx->add(items, v.data());
      } else if (r < 17 && count > 10) {
        auto ids = idx->ids();
        std::shuffle(ids.begin(), ids.end(), rng);
        ids.resize(1 + rng() % 15);
        say("begin " + std::to_string(count - static_cast<int64_t>(ids.size())));
        idx->remove(ids);
      } else if (r < 19) {
        say("begin " + std::to_string(count));
        idx->save_snapshot();
      } else {
        std::vector<NewItem> items;
        std::vector<float> v;
        make(30, &items, &v);
        say("begin 30");
        idx.reset();
        idx = GalleryIndex::create(dir, spec, items, v.data());
      }
      say("ack " + std::to_string(idx->size()));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash_writer: %s\n", e.what());
    return 1;
  }
}
