// ONNX export of a traced frozen inference graph (docs/deploy.md, "ONNX export"), built on ONNX's own protobuf
// classes and checked with onnx::checker.
#pragma once
#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstdint>
#include <string>

namespace featlearn::deploy {

// The opset the exporter writes: the ONNX operator forms that OpenCV 4.6's importer reads (ReduceSum with axes
// as an attribute, Clip with min/max inputs) and that ONNX Runtime runs.
constexpr int64_t kOnnxOpset = 11;

struct OnnxExportOptions {
  std::string input_name = "images";     // [N, C, H, W] float32, N symbolic ("N")
  std::string output_name = "features";  // [N, D] float32
  std::string graph_name = "featlearn_inference";
  std::string doc;                       // the model's doc_string (e.g. the architecture)
};

// Requires: `graph` from trace_frozen (optionally fold_batch_norms'd): one [N, C, H, W] float input, one
// output whose first dimension is the batch, traced with complete shapes.
// Ensures: an opset-kOnnxOpset model computing the graph's output from its input with a symbolic batch
// dimension "N", every constant tensor an initializer, and no Identity nodes; onnx::checker passes on it.
// Throws Error naming the aten operation and the module it comes from (module_of) for what has no ONNX form
// here (docs/deploy.md lists the supported operations).
onnx::ModelProto graph_to_onnx(const torch::jit::Graph& graph, const OnnxExportOptions& options = {});

// onnx::checker::check_model; throws Error with the checker's message.
void check_onnx(const onnx::ModelProto& model);

// Serializes `model` to `path` atomically (common/atomic_file.h). Throws Error.
void save_onnx(const onnx::ModelProto& model, const std::string& path);

}  // namespace featlearn::deploy
