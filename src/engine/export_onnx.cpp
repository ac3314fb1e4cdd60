// The ONNX model of `featlearn export` (docs/deploy.md, "ONNX export").
#include <featlearn/common/error.h>
#include <featlearn/deploy/onnx_export.h>
#include <featlearn/deploy/traced_graph.h>
#include <featlearn/engine/export_onnx.h>
#include <featlearn/model/pp_lcnet_v2.h>
#include <torch/torch.h>

#include <filesystem>

namespace featlearn {

OnnxExportInfo export_onnx(InferenceModel& m, const std::vector<int64_t>& image_shape, const std::string& dir) {
  if (image_shape.size() != 3) throw Error("ONNX export: Global.image_shape must be [C, H, W]");
  OnnxExportInfo info;
  info.reparameterized_blocks = re_parameterize_modules(*m.model);
  m.model->eval();
  torch::NoGradGuard no_grad;
  // The graph is traced on CPU (its constants become the ONNX initializers) and does not depend on the batch.
  const auto device = m.device;
  m.model->to(torch::kCPU);
  m.device = torch::kCPU;
  struct RestoreDevice {
    InferenceModel& m;
    c10::Device device;
    ~RestoreDevice() {
      m.model->to(device);
      m.device = device;
    }
  } restore{m, device};
  torch::manual_seed(0);
  const auto probe = torch::rand({2, image_shape[0], image_shape[1], image_shape[2]});
  auto fn = [&](const torch::Tensor& x) { return m.outputs(x); };
  auto graph = deploy::trace_frozen(fn, *m.model, probe);
  info.folded_batch_norms = deploy::fold_batch_norms(graph);
  deploy::OnnxExportOptions options;
  options.output_name = m.output_key == "logits" ? "logits" : "features";
  const auto backbone = m.spec.root()["Arch"]["Backbone"];
  options.doc = "featlearn inference model" +
                (backbone.defined() ? " (" + backbone.get<std::string>("name", "") + ")" : std::string());
  // Converted first: an operation without ONNX form is reported by name before anything else.
  const auto model = deploy::graph_to_onnx(*graph, options);
  {
    // The folded graph computes what the model computes (on a batch other than the traced one).
    const auto x = torch::rand({3, image_shape[0], image_shape[1], image_shape[2]});
    const auto eager = fn(x);
    torch::Tensor traced;
    try {
      traced = deploy::GraphRunner(graph)(x);
    } catch (const std::exception& e) {
      throw Error(std::string("ONNX export: the traced graph fails on a batch of 3 (traced with 2): it depends on the "
                              "batch size (") + e.what() + ")");
    }
    if (!eager.sizes().equals(traced.sizes()))
      throw Error("ONNX export: the traced graph depends on the batch size (write the model's reshapes with "
                  "x.size(0))");
    info.max_abs_diff = (eager - traced).abs().max().item<double>();
    if (!torch::allclose(eager, traced, 1e-4, 1e-5))
      throw Error("ONNX export: the traced graph differs from the model (max abs difference " +
                  std::to_string(info.max_abs_diff) + ")");
    info.output_dim = eager.size(1);
  }
  deploy::check_onnx(model);
  deploy::save_onnx(model, (std::filesystem::path(dir) / info.file).string());
  info.opset = deploy::kOnnxOpset;
  info.input_name = options.input_name;
  info.output_name = options.output_name;
  info.input_shape = image_shape;
  return info;
}

}  // namespace featlearn
