// CLIP vision transformers with PaddleClas's structure, parameter names and semantics
// (ppcls foundation_vit VisionTransformer with the CLIP settings; docs/config.md, "Arch.Backbone").
//
// Config names: CLIP_vit_base_patch32_224, CLIP_vit_base_patch16_224, CLIP_vit_large_patch14_224,
//   CLIP_vit_large_patch14_336. Keys: see register_clip_vit_backbones() / docs/config.md.
//
// Module tree and forward (module paths are BackboneStopLayer names):
//   (parameters) pos_embed [1, 1 + N, D], cls_token [1, 1, D], proj [D, output_dim]
//   patch_embed  PatchEmbed {proj: Conv2d(in_chans, D, patch, stride patch, no bias)}: the image is zero-padded
//                at the bottom/right to a multiple of the patch, -> tokens [B, N, D]
//                then cls_token is prepended and pos_embed added (bicubically resized when the patch grid is
//                not img_size / patch)
//   ln_pre       LayerNorm(D) (CLIP's "layer norm before the encoder")
//   pos_drop     Dropout(drop_rate)
//   blocks       LayerList of Block {norm1, attn (Attention {qkv (bias), attn_drop, proj, proj_drop}),
//                drop_path, norm2, mlp (Mlp {fc1, act (exact GELU), fc2, drop})}:
//                x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x))); 4·D MLP width
//   norm         LayerNorm(D). CLIP_vit_base_patch16_224 first drops the class token (PaddleClas's
//                remove_cls_token_in_forward).
//                return_embed: every token; else one vector per image (see `head`)
//   head         return_embed: Identity, then tokens @ proj -> [B, T, output_dim], averaged over the tokens
//                with return_mean_embed -> [B, output_dim]. Else Head {fc_head: Linear(D, class_num)} on the
//                class token (base_patch16: the mean of the normalized patch tokens), -> [B, class_num]
// `flatten` (GeneralRecognitionV2's BackboneStopLayer) names `head`: PaddleClas's ViT has no flatten layer, so
// its stop_after("flatten") changes nothing; here it keeps the whole network too.
// LayerNorm epsilon 1e-5. Initialization as PaddleClas: Linear weights truncated normal (std 0.02, cut at
// ±2 std), biases 0; LayerNorm 1 / 0; pos_embed and cls_token truncated normal 0.02; the patch conv Paddle's
// default N(0, sqrt(2 / fan_in)); proj D^-0.5 · N(0, 1); fc_head scaled by head_init_scale.
#pragma once
#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/stop_layer.h>

#include <optional>
#include <string>

namespace featlearn {

struct CLIPViTOptions {
  TORCH_ARG(int64_t, img_size) = 224;     // the size pos_embed is made for
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(int64_t, embed_dim) = 768;    // D
  TORCH_ARG(int64_t, depth) = 12;         // blocks
  TORCH_ARG(int64_t, num_heads) = 12;
  TORCH_ARG(double, mlp_ratio) = 4.0;     // MLP width int(D · mlp_ratio)
  TORCH_ARG(int64_t, output_dim) = 512;   // proj columns
  TORCH_ARG(int64_t, class_num) = 1000;   // fc_head outputs (without return_embed)
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(std::optional<double>, qk_scale) = std::nullopt;  // default head_dim^-0.5
  TORCH_ARG(double, drop_rate) = 0.0;       // pos_drop, attention proj_drop, Mlp drop
  TORCH_ARG(double, attn_drop_rate) = 0.0;
  TORCH_ARG(double, drop_path_rate) = 0.0;  // stochastic depth, linspace(0, rate, depth) over the blocks
  TORCH_ARG(double, epsilon) = 1e-5;        // LayerNorm epsilon
  TORCH_ARG(double, head_init_scale) = 0.001;
  TORCH_ARG(bool, return_embed) = false;
  TORCH_ARG(bool, return_mean_embed) = false;  // only with return_embed
  TORCH_ARG(bool, drop_cls_token) = false;     // CLIP_vit_base_patch16_224 (remove_cls_token_in_forward)
};

namespace clip_vit {

// PaddleClas's DropPath: in training each sample's residual branch is zeroed with probability p, kept ones
// divided by 1 - p; identity in eval.
class DropPathImpl : public torch::nn::Module {
 public:
  explicit DropPathImpl(double p) : p_(p) {}
  torch::Tensor forward(const torch::Tensor& x);

 private:
  double p_;
};
TORCH_MODULE(DropPath);

class PatchEmbedImpl : public StagedModule {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch);
  // [B, C, H, W] -> [B, ceil(H/p)·ceil(W/p), D]
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  torch::nn::Conv2d proj{nullptr};
  int64_t patch;
};

class AttentionImpl : public StagedModule {
 public:
  AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, std::optional<double> qk_scale, double attn_drop,
                double proj_drop);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::Dropout attn_drop{nullptr}, proj_drop{nullptr};
  int64_t heads;
  double scale;
};

class MlpImpl : public StagedModule {
 public:
  MlpImpl(int64_t dim, int64_t hidden, double drop);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};

class BlockImpl : public StagedModule {
 public:
  BlockImpl(const CLIPViTOptions& o, double drop_path);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<AttentionImpl> attn;
  std::shared_ptr<MlpImpl> mlp;
  std::shared_ptr<torch::nn::Module> drop_path;  // DropPath, or Identity when its rate is 0
};

// PaddleClas's ViT Head without fc_norm (CLIP): fc_head.
class HeadImpl : public torch::nn::Module {
 public:
  HeadImpl(int64_t dim, int64_t class_num);
  torch::nn::Linear fc_head{nullptr};
};

}  // namespace clip_vit

class CLIPViTImpl : public StoppableBackboneImpl {
 public:
  explicit CLIPViTImpl(CLIPViTOptions options);
  torch::Tensor forward_observed(
      torch::Tensor x, const std::function<void(const std::string&, const torch::Tensor&)>& observe) override;
  std::map<std::string, std::string> stop_layer_aliases() const override { return {{"flatten", "head"}}; }
  const CLIPViTOptions& options() const { return options_; }

  torch::Tensor pos_embed, cls_token, proj;

 private:
  CLIPViTOptions options_;
  std::shared_ptr<clip_vit::PatchEmbedImpl> patch_embed_;
  torch::nn::LayerNorm ln_pre_{nullptr}, norm_{nullptr};
  torch::nn::Dropout pos_drop_{nullptr};
  std::shared_ptr<clip_vit::HeadImpl> head_;  // nullptr with return_embed
};
TORCH_MODULE(CLIPViT);

// The options of a CLIP config name (CLIP_vit_base_patch16_224, ...); throws Error for another name.
CLIPViTOptions clip_vit_options(const std::string& name);

// Adds the CLIP_vit_* names to backbone_registry() (called by register_builtin_backbones).
void register_clip_vit_backbones();

}  // namespace featlearn
