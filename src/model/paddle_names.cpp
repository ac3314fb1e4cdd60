// Paddle -> featlearn tensor names (see paddle_names.h; the table is documented in docs/file-formats.md).
#include <featlearn/model/paddle_names.h>

#include <featlearn/model/resnet.h>

#include <torch/torch.h>

namespace featlearn {
namespace {

std::string join_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// (featlearn path, Paddle path) of every conv / bn of a PaddleClas ResNet (legendary_models/resnet.py),
// for featlearn's torchvision-structured ResNet with the same options.
void add_resnet(const ResNetImpl& net, const std::string& at, std::vector<std::pair<std::string, std::string>>* out) {
  const ResNetOptions& o = net.options();
  auto add = [&](const std::string& f, const std::string& p) { out->emplace_back(join_path(at, f), join_path(at, p)); };
  if (o.deep_stem()) {  // featlearn stem: [conv, bn, act] x 3
    for (int i = 0; i < 3; ++i) {
      add("stem." + std::to_string(3 * i), "stem." + std::to_string(i) + ".conv");
      add("stem." + std::to_string(3 * i + 1), "stem." + std::to_string(i) + ".bn");
    }
  } else {
    add("conv1", "stem.0.conv");
    add("bn1", "stem.0.bn");
  }
  const int convs = o.bottleneck() ? 3 : 2;
  int k = 0;
  for (size_t s = 0; s < o.layers().size(); ++s) {
    for (int64_t b = 0; b < o.layers()[s]; ++b, ++k) {
      const std::string f = "layer" + std::to_string(s + 1) + "." + std::to_string(b);
      const std::string p = "blocks." + std::to_string(k);
      for (int j = 0; j < convs; ++j) {
        add(f + ".conv" + std::to_string(j + 1), p + ".conv" + std::to_string(j) + ".conv");
        add(f + ".bn" + std::to_string(j + 1), p + ".conv" + std::to_string(j) + ".bn");
      }
      // featlearn's shortcut: [AvgPool2d,] conv, bn; the pool is there for vd blocks that stride.
      const int64_t stride = b != 0 ? 1 : (s == 0 ? 1 : (s == 3 ? o.last_stride() : 2));
      const int c = o.avg_down() && stride > 1 ? 1 : 0;
      add(f + ".downsample." + std::to_string(c), p + ".short.conv");
      add(f + ".downsample." + std::to_string(c + 1), p + ".short.bn");
    }
  }
}

// Maps the module part of `name` (everything before the last '.') with `table`; `from` selects the column.
std::string map_module(const std::string& module, const std::vector<std::pair<std::string, std::string>>& table,
                       bool to_featlearn) {
  for (const auto& row : table) {
    const std::string& from = to_featlearn ? row.second : row.first;
    if (module == from) return to_featlearn ? row.first : row.second;
  }
  return module;
}

std::pair<std::string, std::string> split_leaf(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

}  // namespace

PaddleNames::PaddleNames(torch::nn::Module& root) {
  for (const auto& item : root.named_modules("", /*include_self=*/true)) {
    if (auto* net = dynamic_cast<const ResNetImpl*>(item.value().get())) add_resnet(*net, item.key(), &modules_);
    if (auto* fc = item.value()->as<torch::nn::Linear>()) {
      (void)fc;
      linear_weights_.insert(join_path(item.key(), "weight"));
    }
  }
}

std::string PaddleNames::to_featlearn(const std::string& paddle_name) const {
  auto [module, leaf] = split_leaf(paddle_name);
  if (leaf == "_mean") leaf = "running_mean";
  else if (leaf == "_variance") leaf = "running_var";
  return join_path(map_module(module, modules_, true), leaf);
}

std::string PaddleNames::to_paddle(const std::string& featlearn_name) const {
  auto [module, leaf] = split_leaf(featlearn_name);
  if (leaf == "running_mean") leaf = "_mean";
  else if (leaf == "running_var") leaf = "_variance";
  return join_path(map_module(module, modules_, false), leaf);
}

}  // namespace featlearn
