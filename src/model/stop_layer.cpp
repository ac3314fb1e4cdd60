// BackboneStopLayer, weight loading into backbones, and build_backbone (see stop_layer.h).
#include <featlearn/model/stop_layer.h>
#include <featlearn/model/batch_norm.h>

#include <featlearn/common/error.h>
#include <featlearn/io/pdparams.h>
#include <featlearn/io/state_dict.h>
#include <featlearn/model/paddle_names.h>
#include <featlearn/model/torchvision_mobilenet_v3.h>
#include <fmt/format.h>

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

namespace featlearn {
namespace nn = torch::nn;

std::string child_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

StopCursor::StopCursor(const StoppableBackboneImpl& b) : removed_(&b.removed()) {
  if (!b.stop_path().empty()) stop_ = &b.stop_path();
}

torch::Tensor StopCursor::step(const std::string& path, const torch::Tensor& x,
                               const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  if (done_) return x;
  if (removed_ && removed_->count(path)) return x;
  return step_always(path, x, f);
}

torch::Tensor StopCursor::step_always(const std::string& path, const torch::Tensor& x,
                                      const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  if (done_) return x;
  torch::Tensor y = f(x);
  if (stop_ && path == *stop_) done_ = true;
  return y;
}

torch::Tensor run_module(nn::Module& m, const torch::Tensor& x, StopCursor& c, const std::string& path) {
  if (auto* s = dynamic_cast<StagedModule*>(&m)) return s->run(x, c, path);
  if (dynamic_cast<nn::ModuleListImpl*>(&m) || dynamic_cast<nn::SequentialImpl*>(&m)) {
    // Containers run their children in order. named_children() sees modules replaced by replace_module();
    // Sequential::forward would not.
    torch::Tensor y = x;
    for (const auto& item : m.named_children()) {
      const std::string p = child_path(path, item.key());
      auto& child = *item.value();
      y = c.step(p, y, [&](const torch::Tensor& t) { return run_module(child, t, c, p); });
    }
    return y;
  }
  if (auto* t = m.as<nn::Conv2d>()) return t->forward(x);
  if (auto* t = m.as<BatchNorm2d>()) return t->forward(x);  // featlearn's first: it may be a SyncBN
  if (auto* t = m.as<nn::BatchNorm2d>()) return t->forward(x);
  if (auto* t = m.as<nn::ReLU>()) return t->forward(x);
  if (auto* t = m.as<nn::MaxPool2d>()) return t->forward(x);
  if (auto* t = m.as<nn::AvgPool2d>()) return t->forward(x);
  if (auto* t = m.as<nn::AdaptiveAvgPool2d>()) return t->forward(x);
  if (auto* t = m.as<nn::Flatten>()) return t->forward(x);
  if (auto* t = m.as<nn::Linear>()) return t->forward(x);
  if (auto* t = m.as<nn::Dropout>()) return t->forward(x);
  if (auto* t = m.as<nn::Identity>()) return t->forward(x);
  if (auto* t = m.as<Hardswish>()) return t->forward(x);
  if (auto* t = m.as<Hardsigmoid>()) return t->forward(x);
  FL_ASSERT(false, "run_module: cannot call module '" + path + "' of type " + m.name());
}

torch::Tensor StoppableBackboneImpl::forward(torch::Tensor x) { return forward_observed(std::move(x), nullptr); }

torch::Tensor StoppableBackboneImpl::forward_observed(
    torch::Tensor x, const std::function<void(const std::string&, const torch::Tensor&)>& observe) {
  StopCursor c(*this);
  for (const auto& item : named_children()) {
    const std::string& name = item.key();
    auto& child = *item.value();
    x = c.step(name, x, [&](const torch::Tensor& t) { return run_module(child, t, c, name); });
    if (observe) observe(name, x);
  }
  return x;
}

namespace {

// "torch::nn::Conv2dImpl" -> "Conv2d"; "featlearn::BottleneckImpl" -> "Bottleneck".
std::string short_type(const nn::Module& m) {
  std::string n = m.name();
  if (auto p = n.rfind("::"); p != std::string::npos) n = n.substr(p + 2);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, "Impl") == 0) n.resize(n.size() - 4);
  // Our ModuleLists play torch.nn.Sequential's role (run in order; LibTorch's Sequential cannot nest
  // modules with a non-Tensor forward), so they are shown and numbered as Sequential.
  if (n == "ModuleList") n = "Sequential";
  return n;
}

// PaddlePaddle's Layer name_scope: the class name in snake case (paddle's _convert_camel_to_snake), with the
// Paddle class names of torchvision's blocks.
std::string paddle_type(const std::string& type) {
  if (type == "Bottleneck") return "bottleneck_block";
  static const std::regex first_cap("(.)([A-Z][a-z]+)"), all_cap("([a-z])([A-Z])");
  std::string s = std::regex_replace(type, first_cap, "$1_$2");
  s = std::regex_replace(s, all_cap, "$1_$2");
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Preorder list of (path, module) without the root.
std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> modules_preorder(nn::Module& root) {
  std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> out;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) out.emplace_back(item.key(), item.value());
  return out;
}

int depth_of(const std::string& path) { return static_cast<int>(std::count(path.begin(), path.end(), '.')); }

// "layer1[0].conv1" -> "layer1.0.conv1".
std::string brackets_to_dots(const std::string& name) {
  std::string out;
  for (char ch : name) {
    if (ch == '[') out += '.';
    else if (ch != ']') out += ch;
  }
  return out;
}

std::string backbone_label(BackboneImpl& b) {
  if (auto* s = dynamic_cast<StoppableBackboneImpl*>(&b); s && !s->config_name.empty()) return s->config_name;
  return short_type(b);
}

}  // namespace

std::vector<StopLayerEntry> stop_layer_table(BackboneImpl& backbone) {
  auto* sb = dynamic_cast<StoppableBackboneImpl*>(&backbone);
  std::map<std::string, std::vector<std::string>> aliases_of;
  for (const auto& [alias, path] : backbone.stop_layer_aliases()) aliases_of[path].push_back(alias);
  std::map<std::string, int> counters;
  std::vector<StopLayerEntry> rows;
  for (const auto& [path, m] : modules_preorder(backbone)) {
    StopLayerEntry e;
    e.path = path;
    e.type = short_type(*m);
    const std::string pt = paddle_type(e.type);
    e.full_name = pt + "_" + std::to_string(counters[pt]++);
    e.depth = depth_of(path);
    if (auto it = aliases_of.find(path); it != aliases_of.end()) e.aliases = it->second;
    if (sb) {
      e.stoppable = sb->multi_use().count(path) == 0;
      for (const auto& r : sb->removed())
        if (path == r || path.rfind(r + ".", 0) == 0) e.removed = true;
    }
    rows.push_back(std::move(e));
  }
  return rows;
}

std::vector<std::string> stop_layer_names(BackboneImpl& backbone) {
  std::vector<std::string> names;
  for (const auto& e : stop_layer_table(backbone)) {
    if (!e.stoppable || e.removed) continue;
    names.push_back(e.path);
    names.push_back(e.full_name);
    names.insert(names.end(), e.aliases.begin(), e.aliases.end());
  }
  return names;
}

std::string resolve_stop_layer(BackboneImpl& backbone, const std::string& name) {
  const auto table = stop_layer_table(backbone);
  const auto aliases = backbone.stop_layer_aliases();
  const StopLayerEntry* hit = nullptr;
  auto find_path = [&](const std::string& p) -> const StopLayerEntry* {
    for (const auto& e : table)
      if (e.path == p) return &e;
    return nullptr;
  };
  hit = find_path(name);
  if (!hit) {  // alias, possibly as a prefix: blocks[3].conv1
    for (const auto& [alias, path] : aliases) {
      if (name == alias) hit = find_path(path);
      else if (name.size() > alias.size() && name.compare(0, alias.size(), alias) == 0 && name[alias.size()] == '.')
        hit = find_path(path + name.substr(alias.size()));
      if (hit) break;
    }
  }
  if (!hit)
    for (const auto& e : table)
      if (e.full_name == name) hit = &e;
  if (!hit) hit = find_path(brackets_to_dots(name));
  const std::string label = backbone_label(backbone);
  if (!hit) {
    std::vector<std::string> top;
    for (const auto& e : table)
      if (e.depth == 0) top.push_back(e.path);
    std::vector<std::string> alias_names;
    for (const auto& kv : aliases)
      if (kv.first.find('[') == std::string::npos) alias_names.push_back(kv.first);
    std::string nested = "layer1.0.conv1";
    for (const auto& e : table)
      if (e.depth == 2) {
        nested = e.path;
        break;
      }
    const std::string suggestion = did_you_mean(name, stop_layer_names(backbone));
    throw Error("unknown layer '" + name + "' in " + label + (suggestion.empty() ? "." : suggestion) +
                " Valid names: module paths (top level: " + join(top) + "; nested like " + nested + ")" +
                (alias_names.empty() ? std::string() : ", aliases (" + join(alias_names) + ", blocks[i])") +
                ", PaddleClas full names (e.g. " + table.front().full_name +
                ", adaptive_avg_pool2d_0); `featlearn describe -c CFG` lists them all");
  }
  if (!hit->stoppable)
    throw Error("layer '" + name + "' (" + hit->path + ") of " + label +
                " is called several times in forward and cannot be a stop layer; pick the conv/bn before it or "
                "the enclosing block");
  if (hit->removed) throw Error("layer '" + name + "' was already removed by an earlier stop layer");
  return hit->path;
}

void apply_stop_layer(BackboneImpl& backbone, const std::string& name) {
  auto* sb = dynamic_cast<StoppableBackboneImpl*>(&backbone);
  if (!sb) throw Error("backbone " + short_type(backbone) + " does not support BackboneStopLayer");
  if (!sb->stop_path_.empty())
    throw Error("the backbone is already truncated after '" + sb->stop_path_ + "'");
  const std::string path = resolve_stop_layer(backbone, name);
  // At each level of the path, every child registered after the one on the path becomes an Identity.
  nn::Module* parent = &backbone;
  std::string prefix;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    bool after = false;
    std::shared_ptr<nn::Module> next;
    std::vector<std::string> later;
    for (const auto& item : parent->named_children()) {
      if (after) later.push_back(item.key());
      if (item.key() == part) {
        after = true;
        next = item.value();
      }
    }
    FL_ASSERT(next, "stop layer path component '" + part + "' not found");
    for (const auto& n : later) {
      parent->replace_module(n, nn::Identity());
      sb->removed_.insert(child_path(prefix, n));
    }
    prefix = child_path(prefix, part);
    parent = next.get();
  }
  sb->stop_path_ = path;
}

void load_module_weights(torch::nn::Module& root, const std::string& path_arg, const std::string& where,
                         const std::string& label, const std::string& torch_hint) {
  // PaddleClas appends .pdparams to a pretrained path without it; so does featlearn when only that file exists.
  const std::string path = !std::filesystem::exists(path_arg) && std::filesystem::exists(path_arg + ".pdparams")
                               ? path_arg + ".pdparams"
                               : path_arg;
  const bool paddle = is_pdparams_file(path);
  const NamedTensors sd = paddle ? load_pdparams(path) : load_torch_state_dict(path);
  const PaddleNames names(root);
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : root.named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : root.named_buffers(true)) targets[b.key()] = b.value();

  // Modules removed by a stop layer (anywhere in the tree): their tensors in the file are skipped.
  std::vector<std::string> removed;
  for (const auto& item : root.named_modules("", /*include_self=*/true))
    if (auto* sb = dynamic_cast<const StoppableBackboneImpl*>(item.value().get()))
      for (const auto& r : sb->removed()) removed.push_back(child_path(item.key(), r));
  auto is_removed = [&](const std::string& key) {
    for (const auto& r : removed)
      if (key.rfind(r + ".", 0) == 0) return true;
    return false;
  };
  auto shape = [](const torch::Tensor& t) {
    std::string s = "[";
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "") + std::to_string(t.size(d));
    return s + "]";
  };
  std::vector<std::string> unexpected;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  std::set<std::string> seen;
  for (const auto& [file_key, file_tensor] : sd) {
    const std::string key = paddle ? names.to_featlearn(file_key) : file_key;
    auto it = targets.find(key);
    if (it == targets.end()) {
      if (!is_removed(key)) unexpected.push_back(key == file_key ? key : file_key + " (as " + key + ")");
      continue;
    }
    torch::Tensor t = file_tensor;
    std::string origin;  // how the file's tensor became `t`, for messages
    if (paddle && key != file_key) origin = " (Paddle '" + file_key + "')";
    if (paddle && names.transposed(key) && t.dim() == 2) {
      origin = " (Paddle '" + file_key + "' " + shape(t) + " [in, out], transposed)";
      t = t.t().contiguous();
    }
    if (!it->second.sizes().equals(t.sizes()))
      throw Error(where + ": parameter '" + key + "'" + origin + " has shape " + shape(t) + " in the file but " +
                  shape(it->second) + " in " + label +
                  (key.rfind("fc.", 0) == 0 || key.rfind("classifier.", 0) == 0
                       ? " (set Arch.Backbone.class_num to the file's class count, or stop before it with "
                         "BackboneStopLayer)"
                       : " (is the file for another architecture?)"));
    seen.insert(key);
    copies.emplace_back(it->second, t);
  }
  std::vector<std::string> missing;
  for (const auto& kv : targets) {
    if (seen.count(kv.first)) continue;
    const std::string& k = kv.first;
    const std::string counter = "num_batches_tracked";
    if (paddle && k.size() >= counter.size() && k.compare(k.size() - counter.size(), counter.size(), counter) == 0)
      continue;  // Paddle keeps no BatchNorm step counter
    const std::string pk = paddle ? names.to_paddle(k) : k;
    missing.push_back(pk == k ? k : k + " (Paddle " + pk + ")");
  }
  auto first = [](std::vector<std::string> v) {
    const size_t n = v.size();
    if (n > 6) {
      v.resize(6);
      v.push_back("... (" + std::to_string(n) + " in all)");
    }
    return join(v);
  };
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = where + " does not match " + label + ":";
    if (!missing.empty()) msg += " missing " + first(missing) + ";";
    if (!unexpected.empty()) msg += " unexpected " + first(unexpected) + ";";
    if (paddle)
      msg += " expected a Paddle state dict of PaddleClas's " + label +
             " (names mapped as in docs/file-formats.md, \"Paddle .pdparams\")";
    else
      msg += " expected a torchvision-format state dict" + (torch_hint.empty() ? "" : " such as " + torch_hint);
    throw Error(msg);
  }
  torch::NoGradGuard ng;
  for (auto& [dst, src] : copies) dst.copy_(src.to(dst.scalar_type()));
}

void load_backbone_weights(BackboneImpl& backbone, const std::string& path, const std::string& what) {
  auto* sb = dynamic_cast<StoppableBackboneImpl*>(&backbone);
  load_module_weights(backbone, path, what.empty() ? path : what + ": " + path, backbone_label(backbone),
                      sb ? sb->torchvision_file : "");
}

BackbonePtr build_backbone(const ConfigNode& backbone_node, const ConfigNode& stop_layer_node,
                           const std::vector<int64_t>& image_shape) {
  register_builtin_backbones();
  BackbonePtr bb = backbone_registry().create_named(backbone_node);
  if (stop_layer_node.defined()) {
    if (!stop_layer_node.is_map()) stop_layer_node.fail("expected a map with a 'name' key");
    stop_layer_node.check_keys({"name", "output_dim"});
    const std::string name = stop_layer_node.require<std::string>("name");
    try {
      apply_stop_layer(*bb, name);
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      stop_layer_node["name"].fail(e.what());
    }
    // PaddleClas configs may state the truncated backbone's width (`output_dim`, which PaddleClas itself never
    // reads); featlearn checks it with one small forward pass instead of ignoring it.
    if (auto dim = stop_layer_node.optional<int64_t>("output_dim")) {
      torch::NoGradGuard ng;
      const bool was_training = bb->is_training();
      bb->eval();
      // The probe has the shape training feeds: the backbone's input_image_channel (else image_shape's C) and
      // Global.image_shape's H x W (PaddleClas's default 3 x 224 x 224 when unknown). A stop layer before the
      // pooling makes the width depend on H x W.
      const bool shaped = image_shape.size() == 3;
      const int64_t c = backbone_node["input_image_channel"].defined()
                            ? backbone_node["input_image_channel"].as<int64_t>()
                            : (shaped ? image_shape[0] : 3);
      const int64_t h = shaped ? image_shape[1] : 224, w = shaped ? image_shape[2] : 224;
      int64_t width = 0;
      try {
        width = bb->forward(torch::zeros({1, c, h, w})).flatten(1).size(1);
      } catch (const c10::Error& e) {  // e.g. an image smaller than a kernel, or a non-positive size
        std::string msg = e.what_without_backtrace();
        msg = msg.substr(0, msg.find('\n'));
        stop_layer_node["output_dim"].fail(fmt::format("cannot be checked: the backbone does not run on a "
                                                       "{}x{}x{} image (Global.image_shape): {}", c, h, w, msg));
      }
      bb->train(was_training);
      if (width != *dim)
        stop_layer_node["output_dim"].fail("the backbone truncated after '" + name + "' outputs " +
                                           std::to_string(width) + " values per image, not " + std::to_string(*dim));
    }
  }
  auto* sb = dynamic_cast<StoppableBackboneImpl*>(bb.get());
  if (sb && !sb->pretrained_path.empty()) {
    try {
      load_backbone_weights(*bb, sb->pretrained_path, "");
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      backbone_node["pretrained"].fail(e.what());
    }
  }
  return bb;
}

}  // namespace featlearn
