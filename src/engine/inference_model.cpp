// InferenceModel's CPU path through an optimized frozen graph (docs/deploy.md, "Fast extraction").
#include <featlearn/deploy/cpu_graph.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/engine/trainer.h>

#include <cstdlib>
#include <mutex>

namespace featlearn {

namespace {
bool eager_requested() {
  const char* v = std::getenv("FEATLEARN_EAGER");
  return v && *v && std::string(v) != "0";
}
}  // namespace

std::optional<torch::Tensor> InferenceModel::embed_with_cpu_graph(const torch::Tensor& images) {
  if (!device.is_cpu() || !images.device().is_cpu() || eager_requested()) return std::nullopt;
  std::shared_ptr<deploy::FrozenForward> graph;
  {
    // Guards the lazy creation only (embed may be called from several threads); FrozenForward locks itself.
    static std::mutex create_mutex;
    std::lock_guard<std::mutex> lock(create_mutex);
    if (!cpu_graph) {
      // The traced part is the model's forward; the postprocessing after it (softmax, normalize, binarize)
      // runs eager, so that the graph is checked against the eager forward on continuous values.
      RecModel m = model;
      const std::string key = output_key;
      cpu_graph = std::make_shared<deploy::FrozenForward>(
          [m, key](const torch::Tensor& x) { return m.ptr()->forward(x).get(key).flatten(1).to(torch::kFloat32); },
          *model);
    }
    graph = cpu_graph;
  }
  torch::NoGradGuard no_grad;
  auto out = (*graph)(images);
  // The same steps as outputs() after the forward.
  if (add_softmax) out = torch::softmax(out, 1);
  if (output_key != "logits") out = postprocess_features(out, feature_normalize, feature_binarize);
  return out;
}

}  // namespace featlearn
