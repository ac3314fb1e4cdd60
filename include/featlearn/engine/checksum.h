// Content checksums (xxHash64) for the files featlearn writes (docs/architecture.md, "File formats").
#pragma once
#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace featlearn {

uint64_t checksum64(const void* data, size_t size);
// Over the tensor's dtype, shape and (contiguous, CPU) bytes, as 16 hex digits.
std::string tensor_checksum(const torch::Tensor& t);
std::string hex64(uint64_t v);
// xxHash64 over the concatenated contents of `paths`, as 16 hex digits. Throws Error naming an unreadable file.
std::string file_fingerprint(const std::vector<std::string>& paths);

}  // namespace featlearn
