#include <featlearn/engine/checksum.h>

#include <featlearn/common/error.h>
#include <fmt/format.h>
#include <xxhash.h>

#include <fstream>

namespace featlearn {

uint64_t checksum64(const void* data, size_t size) { return XXH64(data, size, 0); }

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

std::string tensor_checksum(const torch::Tensor& t) {
  const auto c = t.detach().cpu().contiguous();
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  const std::string head = std::string(c10::toString(c.scalar_type())) + c10::str(c.sizes());
  XXH64_update(st, head.data(), head.size());
  XXH64_update(st, c.data_ptr(), c.numel() * c.element_size());
  const auto h = XXH64_digest(st);
  XXH64_freeState(st);
  return hex64(h);
}

std::string file_fingerprint(const std::vector<std::string>& paths) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  std::vector<char> buf(1 << 20);
  for (const auto& p : paths) {
    std::ifstream f(p, std::ios::binary);
    if (!f) {
      XXH64_freeState(st);
      throw Error(p + ": cannot read (needed for the model fingerprint)");
    }
    while (f) {
      f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      XXH64_update(st, buf.data(), static_cast<size_t>(f.gcount()));
    }
  }
  const auto h = XXH64_digest(st);
  XXH64_freeState(st);
  return fmt::format("{:016x}", h);
}

}  // namespace featlearn
