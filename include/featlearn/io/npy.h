// NumPy .npy writer/reader (format version 1.0) for float32 / int64 tensors. Written by hand because it is a
// 10-line header format and none of the project's dependencies writes it.
#pragma once
#include <torch/types.h>

#include <string>

namespace featlearn {

// Writes a contiguous CPU float32 or int64 tensor atomically (temp file + rename).
void save_npy(const std::string& path, const torch::Tensor& tensor);
// Reads a little-endian C-order float32 / int64 / bool .npy; throws featlearn::Error naming the file otherwise.
torch::Tensor load_npy(const std::string& path);

}  // namespace featlearn
