// Reader for PyTorch state dicts written by `torch.save(model.state_dict(), path)` — the format of
// torchvision's published weight files.
//
// Why our own reader: LibTorch 1.13's torch::pickle_load aborts on the collections.OrderedDict that
// state_dict() returns. The file is a zip archive (read with caffe2's PyTorchStreamReader) holding
// `<archive>/data.pkl` (a pickle) and one raw little-endian record `<archive>/data/<key>` per storage. We
// interpret only the small pickle subset a state dict uses, and only a whitelist of globals
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter,
// torch.*Storage), so a file cannot run code. The pre-1.6 non-zip ("legacy") torch.save format is also read.
#pragma once
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace featlearn {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Requires: `path` is a file written by torch.save of a dict (dict or OrderedDict) whose values are tensors
// (a {"state_dict": {...}} or {"model": {...}} wrapper is unwrapped).
// Ensures: the (name, tensor) pairs in file order; each tensor is a fresh contiguous CPU tensor of the saved
// dtype (float, double, half, bfloat16, int64, int32, int16, int8, uint8, bool), storage offsets and strides
// (views) honoured.
// Throws featlearn::Error naming the file for a missing, corrupt, truncated or foreign file and for pickle
// content outside the supported subset — never aborts.
NamedTensors load_torch_state_dict(const std::string& path);

}  // namespace featlearn
