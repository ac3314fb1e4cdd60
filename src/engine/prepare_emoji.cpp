// `featlearn prepare-emoji`: builds the Emoji-4vendor ReID benchmark (shared/benchmarks/emoji-reid.md).
#include <featlearn/data/emoji_prep.h>
#include <featlearn/engine/commands.h>

#include <chrono>
#include <cstdio>

namespace featlearn {

int cmd_prepare_emoji(const std::string& out_dir, const std::string& cache_dir) {
  EmojiPrepOptions options;
  options.out_dir = out_dir;
  options.cache_dir = cache_dir;
  const auto t0 = std::chrono::steady_clock::now();
  const EmojiPrepSummary s = prepare_emoji_reid(options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%lld identities in all 4 vendors; train %lld images / %lld ids; test %lld images / %lld ids\n",
              static_cast<long long>(s.identities), static_cast<long long>(s.train_images),
              static_cast<long long>(s.train_ids), static_cast<long long>(s.test_images),
              static_cast<long long>(s.test_ids));
  std::printf("lists: %s/train_list.txt, %s/test_list.txt (%.1f s)\n", out_dir.c_str(), out_dir.c_str(), seconds);
  return 0;
}

}  // namespace featlearn
