// BackboneStopLayer: truncate a backbone after a named sub-layer (PaddleClas TheseusLayer.stop_after).
//
// Semantics: the backbone's output becomes the output of the named layer. Every module registered after it in
// preorder (at each nesting level; not its ancestors, not its descendants) is replaced by an Identity in its
// parent, so its parameters leave parameters()/named_parameters()/state dicts.
//
// Accepted names (see stop_layer_names()):
//  - module paths as printed by named_modules(): `layer1.0.conv1`, `features.3.block.1` (also `layer1[0].conv1`)
//  - backbone aliases (BackboneImpl::stop_layer_aliases()), e.g. for ResNet: `stem`, `max_pool`, `blocks`,
//    `avg_pool`, `flatten`, `fc`, and `blocks[i]` = the i-th residual block across layer1..layer4, usable as a
//    prefix: `blocks[3].conv1`
//  - PaddleClas layer full names `<type>_<k>`: the k-th module of that Paddle type in preorder, e.g.
//    `conv2d_0`, `batch_norm2d_3`, `re_lu_0`, `max_pool2d_0`, `adaptive_avg_pool2d_0`, `flatten_0`,
//    `linear_0`, `bottleneck_block_2`, `basic_block_0`, `sequential_1`
//
// Implementation contract for backbones: LibTorch's replace_module() does not update typed member holders, and
// Sequential::forward keeps calling the replaced module. So truncatable backbones derive from
// StoppableBackboneImpl and run their children through a StopCursor, which skips removed modules and stops
// after the stop layer. Children are registered in execution order.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <featlearn/config/config.h>
#include <featlearn/model/module_base.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

namespace featlearn {

class StoppableBackboneImpl;

// Walks one forward pass; remembers whether the stop layer has already produced the output.
class StopCursor {
 public:
  StopCursor() = default;  // no stop layer, nothing removed
  explicit StopCursor(const StoppableBackboneImpl& backbone);

  bool done() const { return done_; }
  // Runs `f(x)` as the module at `path` unless the stop layer has been passed (returns x) or the module was
  // removed (identity: returns x). Marks the cursor done when `path` is the stop layer.
  torch::Tensor step(const std::string& path, const torch::Tensor& x,
                     const std::function<torch::Tensor(const torch::Tensor&)>& f);
  // Like step() but runs `f` even when the module was removed: for parameter-free modules that are registered
  // after a layer they run before (e.g. torchvision SqueezeExcitation's activation, registered after fc2).
  torch::Tensor step_always(const std::string& path, const torch::Tensor& x,
                            const std::function<torch::Tensor(const torch::Tensor&)>& f);

 private:
  const std::string* stop_ = nullptr;
  const std::set<std::string>* removed_ = nullptr;
  bool done_ = false;
};

// "a.b" from ("a", "b"); "b" from ("", "b").
std::string child_path(const std::string& prefix, const std::string& name);

// A module whose forward can be interrupted by a StopCursor (residual blocks, squeeze-excitation, ...).
class StagedModule : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  // `path` is this module's path inside the backbone.
  virtual torch::Tensor run(const torch::Tensor& x, StopCursor& cursor, const std::string& path) = 0;
  torch::Tensor forward(const torch::Tensor& x) {
    StopCursor c;
    return run(x, c, "");
  }
};

// Runs any child module through the cursor: StagedModule -> run(); ModuleList/Sequential -> each child in
// order; known
// parameter-free/leaf LibTorch modules -> forward(). Throws for a module type it cannot call.
torch::Tensor run_module(torch::nn::Module& m, const torch::Tensor& x, StopCursor& cursor, const std::string& path);

// Base of the builtin backbones: forward() runs the registered children in order through a StopCursor.
class StoppableBackboneImpl : public BackboneImpl {
 public:
  using BackboneImpl::BackboneImpl;
  torch::Tensor forward(torch::Tensor x) override;
  // Calls `observe(name, output)` after each top-level child (for `describe`). Default: the children in
  // registration order; a backbone whose forward is not a chain of its children (CLIPViT) overrides it.
  virtual torch::Tensor forward_observed(
      torch::Tensor x, const std::function<void(const std::string&, const torch::Tensor&)>& observe);

  const std::string& stop_path() const { return stop_path_; }       // "" when not truncated
  const std::set<std::string>& removed() const { return removed_; }  // module paths replaced by Identity
  // Modules called more than once per forward (e.g. the shared ReLU of a torchvision residual block): they
  // cannot be a stop layer. Filled by the backbone's constructor.
  const std::set<std::string>& multi_use() const { return multi_use_; }

  // `pretrained` config value: a weights path, or "" (random init). Loaded by build_backbone() after the stop
  // layer is applied.
  std::string pretrained_path;
  // Config name (e.g. "ResNet50") and the torchvision weight file it matches (for messages).
  std::string config_name, torchvision_file;

 protected:
  std::set<std::string> multi_use_;

 private:
  friend void apply_stop_layer(BackboneImpl&, const std::string&);
  std::string stop_path_;
  std::set<std::string> removed_;
};

// One row of the stop-layer table (describe).
struct StopLayerEntry {
  std::string path;       // "layer1.0.conv1"
  std::string type;       // "Conv2d"
  std::string full_name;  // PaddleClas full name, "conv2d_1"
  std::vector<std::string> aliases;
  int depth = 0;          // 0 for top-level children
  bool stoppable = true;  // false for multi-use modules
  bool removed = false;   // already replaced by Identity
};
std::vector<StopLayerEntry> stop_layer_table(BackboneImpl& backbone);
// Every name accepted as BackboneStopLayer.name (paths, aliases, full names).
std::vector<std::string> stop_layer_names(BackboneImpl& backbone);
// The module path a stop-layer name resolves to; throws Error listing valid names for an unknown one.
std::string resolve_stop_layer(BackboneImpl& backbone, const std::string& name);

// Truncates `backbone` after the layer `name` (see above). Requires a StoppableBackboneImpl and no previous
// truncation. Throws Error (unknown name, multi-use module, unsupported backbone).
void apply_stop_layer(BackboneImpl& backbone, const std::string& name);

// Copies the weights file `path` into `root` (a backbone, a RecModel, ...): every parameter and buffer must be
// present with the same shape; keys of modules removed by a stop layer are ignored; any other extra key is an
// error. The file is a torch.save state dict (featlearn names), or a Paddle .pdparams (is_pdparams_file:
// PaddleClas names, mapped and transposed by PaddleNames; num_batches_tracked keeps its value); as in
// PaddleClas, `path` may omit the .pdparams suffix. Errors start
// with `where`, call the model `label`, name every missing / unexpected / mis-shaped tensor (both shapes) and,
// for torch files, suggest `torch_hint` (a torchvision file name; may be empty).
void load_module_weights(torch::nn::Module& root, const std::string& path, const std::string& where,
                         const std::string& label, const std::string& torch_hint);

// load_module_weights for a backbone. `what` (may be empty) prefixes messages.
void load_backbone_weights(BackboneImpl& backbone, const std::string& path, const std::string& what);

// Builds Arch.Backbone from the registry, applies Arch.BackboneStopLayer (when defined; keys: name) and loads
// `pretrained` weights. Errors name the config key and line.
// `image_shape` (Global.image_shape, C x H x W; may be empty) shapes the probe that checks
// BackboneStopLayer.output_dim.
BackbonePtr build_backbone(const ConfigNode& backbone_node, const ConfigNode& stop_layer_node,
                           const std::vector<int64_t>& image_shape = {});

}  // namespace featlearn
