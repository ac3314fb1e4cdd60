// `featlearn export`'s ONNX model (docs/deploy.md, "ONNX export"): the inference computation of an exported
// model (InferenceModel::outputs) traced, BatchNorm-folded and written as model.onnx.
#pragma once
#include <featlearn/engine/inference_model.h>

#include <cstdint>
#include <string>
#include <vector>

namespace featlearn {

struct OnnxExportInfo {
  std::string file = "model.onnx";  // relative to the export directory
  int64_t opset = 0;
  std::string input_name, output_name;
  std::vector<int64_t> input_shape;  // [C, H, W] (the batch N is symbolic)
  int64_t output_dim = 0;            // D of the [N, D] output
  int64_t folded_batch_norms = 0;
  int64_t reparameterized_blocks = 0;
  double max_abs_diff = 0;           // traced graph vs eager outputs on the probe batch
};

// Requires: `m` loaded or built for export (eval mode). Re-parameterizes `m.model` where the architecture
// allows (PP-LCNetV2's RepDepthwiseSeparable, as PaddleClas's export does: m.model's forward then uses the
// fused convolutions), traces m.outputs on a [2, C, H, W] batch of `image_shape`, folds BatchNorm, converts to
// ONNX, checks it (onnx::checker) and writes `dir`/model.onnx atomically.
// Throws Error naming the operation and module that have no ONNX form (nothing is written then).
OnnxExportInfo export_onnx(InferenceModel& m, const std::vector<int64_t>& image_shape, const std::string& dir);

}  // namespace featlearn
