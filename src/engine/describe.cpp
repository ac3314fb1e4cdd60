// `featlearn describe -c CFG [-o ...]`: the RecModel's (each DistillationModel model's) module tree with every BackboneStopLayer name, the
// output shape of each top-level backbone stage for Global.image_shape, parameter counts, multiply-accumulates and the
// feature shape.
#include <featlearn/engine/commands.h>
#include <featlearn/engine/global_config.h>

#include <featlearn/config/config.h>
#include <featlearn/model/compute_count.h>
#include <featlearn/model/distillation_model.h>
#include <featlearn/model/pretrained.h>
#include <featlearn/engine/config_check.h>
#include <featlearn/model/rec_model.h>
#include <featlearn/model/stop_layer.h>

#include <torch/torch.h>

#include <fmt/format.h>

#include <iostream>

namespace featlearn {
namespace {

// "[N,2048,1,1]": the batch dimension is shown as N.
std::string batch_shape(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "") + (d == 0 ? std::string("N") : std::to_string(t.size(d)));
  return s + "]";
}

std::string thousands(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

int64_t count(const std::vector<torch::Tensor>& params, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : params)
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

std::string first_line(std::string s) {
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

std::string type_name(const torch::nn::Module& m) {
  std::string n = m.name();
  if (auto p = n.rfind("::"); p != std::string::npos) n = n.substr(p + 2);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, "Impl") == 0) n.resize(n.size() - 4);
  return n;
}

void describe_rec_model(RecModelImpl& model, const ConfigNode& arch, const std::vector<int64_t>& image_shape);

}  // namespace

int cmd_describe(const ConfigArgs& args) {
  Config cfg = Config::load(args.config);
  cfg.apply_overrides(args.overrides);
  const ConfigNode root = cfg.root();
  check_config(root, ConfigUse::kDescribe);
  const ConfigNode arch = root["Arch"];
  std::vector<int64_t> image_shape = {3, 224, 224};
  if (root["Global"].defined() && root["Global"]["image_shape"].defined())
    image_shape = root["Global"]["image_shape"].as<std::vector<int64_t>>();
  if (image_shape.size() != 3) root["Global"]["image_shape"].fail("expected [C, H, W]");

  torch::manual_seed(0);
  DeferWeightDownloads no_downloads;  // describe shows the model; uncached pretrained weights are not fetched
  ArchModelPtr built = build_arch(arch, image_shape);
  built->eval();
  std::cout << "config: " << cfg.file() << "\n";
  for (const auto& d : no_downloads.deferred())
    std::cout << d.key << ": not downloaded by describe (shown with random weights); train/eval download " << d.url
              << " to " << d.path << "\n";
  const auto* distill = dynamic_cast<const DistillationModelImpl*>(built.get());
  if (!distill) {
    describe_rec_model(built->infer_model(), arch, image_shape);
    return 0;
  }
  // A DistillationModel: its models, then each model as a RecModel is shown.
  std::cout << "Arch: DistillationModel  models: " << join(distill->model_names())
            << "  infer_model_name: " << distill->infer_model_name() << "  infer output: " << distill->infer_output_key()
            << (distill->infer_add_softmax() ? " + softmax" : "") << "  is_rec: " << (distill->is_rec() ? "True" : "False")
            << "\n";
  for (size_t i = 0; i < arch["models"].size(); ++i) {
    const auto [name, node] = arch["models"].at(i).single_entry();
    std::string pretrained;
    for (const auto& [m, prefix] : distill->pretrained())
      if (m == name) pretrained = ", weights from " + prefix;
    std::cout << "\n==== model " << name << " (Arch.models[" << i << "]"
              << (distill->frozen(name) ? ", frozen" : ", trainable") << pretrained
              << (name == distill->infer_model_name() ? ", evaluated and exported" : "") << "; parameter names "
              << name << ".*) ====\n";
    describe_rec_model(*distill->model(name), node, image_shape);
  }
  const auto all = built->parameters();
  std::cout << "\nDistillationModel parameters: " << thousands(count(all, false)) << " total, "
            << thousands(count(all, true)) << " trainable\n";
  return 0;
}

namespace {
// One RecModel (Arch or an Arch.models entry `arch`): module tree, stage shapes, outputs, parameter counts.
void describe_rec_model(RecModelImpl& model, const ConfigNode& arch, const std::vector<int64_t>& image_shape) {
  auto backbone = model.backbone();
  auto* stoppable = dynamic_cast<StoppableBackboneImpl*>(backbone.get());
  const std::string bb_name =
      stoppable && !stoppable->config_name.empty() ? stoppable->config_name : type_name(*backbone);

  std::cout << "Arch: RecModel  Backbone: " << bb_name;
  if (stoppable && !stoppable->stop_path().empty())
    std::cout << "  BackboneStopLayer: " << arch["BackboneStopLayer"].get<std::string>("name", "")
              << " (module " << stoppable->stop_path() << ")";
  std::cout << "\n\nbackbone module tree — names usable as BackboneStopLayer.name: module path, PaddleClas full "
               "name, alias\n";
  std::cout << fmt::format("  {:<36} {:<20} {:<26} {}\n", "path", "type", "full name", "alias");
  for (const auto& e : stop_layer_table(*backbone)) {
    std::string note;
    if (e.removed) note = "(removed by BackboneStopLayer)";
    else if (!e.stoppable) note = "(called several times; not a stop layer)";
    else if (stoppable && e.path == stoppable->stop_path()) note = "<- stop layer";
    std::string aliases;
    for (const auto& a : e.aliases) aliases += (aliases.empty() ? "" : ", ") + a;
    std::cout << fmt::format("  {:<36} {:<20} {:<26} {}{}{}\n", std::string(2 * e.depth, ' ') + e.path, e.type,
                             e.removed ? std::string("-") : e.full_name, aliases, aliases.empty() || note.empty() ? "" : "  ", note);
  }

  torch::NoGradGuard ng;
  const torch::Tensor x = torch::zeros({1, image_shape[0], image_shape[1], image_shape[2]});
  std::cout << "\nbackbone stages for input [N," << image_shape[0] << "," << image_shape[1] << ","
            << image_shape[2] << "]:\n";
  torch::Tensor bb_out;
  if (stoppable) {
    bb_out = stoppable->forward_observed(x, [&](const std::string& name, const torch::Tensor& y) {
      const bool removed = stoppable->removed().count(name) > 0;
      std::cout << fmt::format("  {:<12} {}{}\n", name, removed ? std::string("(removed)") : batch_shape(y),
                               name == stoppable->stop_path() ? "  <- stop layer" : "");
    });
  } else {
    bb_out = backbone->forward(x);
  }
  std::cout << "backbone: " << batch_shape(bb_out) << "\n";
  torch::Tensor features = bb_out;
  if (auto neck = model.neck()) {
    features = neck->forward(bb_out);
    std::cout << "neck (" << arch["Neck"].get<std::string>("name", "?") << "): " << batch_shape(features) << "\n";
  }
  std::cout << "features: " << batch_shape(features) << "\n";
  if (auto head = model.head()) {
    const torch::Tensor head_in = model.head_feature_from() == "backbone" ? bb_out : features;
    const std::string label = "logits (" + arch["Head"].get<std::string>("name", "?") + ", from " +
                              model.head_feature_from() + "): ";
    std::string shape;
    try {
      shape = batch_shape(head->forward(head_in, {}));
    } catch (const std::exception& e) {
      shape = "the Head cannot take " + batch_shape(head_in) +
              " (check Arch.Head.embedding_size / the Neck): " + first_line(e.what());
    }
    std::cout << label << shape << "\n";
  }
  std::cout << "infer output: " << model.infer_output_key() << (model.infer_add_softmax() ? " + softmax" : "")
            << "\n";

  const auto all = model.parameters();
  std::cout << "\nparameters: " << thousands(count(all, false)) << " total, " << thousands(count(all, true))
            << " trainable (backbone " << thousands(count(backbone->parameters(), false));
  if (model.neck()) std::cout << ", neck " << thousands(count(model.neck()->parameters(), false));
  if (model.head()) std::cout << ", head " << thousands(count(model.head()->parameters(), false));
  std::cout << ")\n";

  // One image of Global.image_shape through the whole model (eval); counting conventions: compute_count.h.
  const ComputeCount mac = count_compute(model, [&] { model.forward(x); });
  auto giga = [](int64_t n) { return fmt::format("{:.3f}G", static_cast<double>(n) / 1e9); };
  std::cout << "multiply-accumulates per [1," << image_shape[0] << "," << image_shape[1] << "," << image_shape[2]
            << "] image: " << thousands(mac.macs()) << " (" << giga(mac.macs()) << "; conv " << thousands(mac.conv_macs)
            << ", linear " << thousands(mac.linear_macs) << ", matmul " << thousands(mac.matmul_macs) << ")\n";
  std::cout << "FLOPs as PaddleClas publishes them (paddle.flops: conv + bias, linear, 2 x batch-norm elements, "
               "average pooling): "
            << thousands(mac.paddle_flops()) << " (" << giga(mac.paddle_flops()) << ")\n";
}

}  // namespace

}  // namespace featlearn
