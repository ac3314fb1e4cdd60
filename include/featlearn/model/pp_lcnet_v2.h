// PP-LCNetV2 backbones with PaddleClas's structure, parameter names and semantics (docs/config.md,
// "Arch.Backbone"), including the re-parameterizable depthwise convolutions.
//
// Config names: PPLCNetV2_small (scale 0.75, depths 2-2-4-2), PPLCNetV2_base (1.0, 2-2-6-2), PPLCNetV2_large
//   (1.25, 2-2-8-2), PPLCNetV2_base_ShiTu (PP-ShiTu V2's variant of base: no ReLU after last_conv, which gains
//   a bias, and stride 1 in the two blocks of stages[3]). Keys: see PPLCNetV2Options and docs/config.md.
//
// Module tree (module paths are BackboneStopLayer names; `stages[3][1]` also works):
//   stem        Sequential: 0 ConvBNLayer (3 -> 32·s, stride 2, ReLU), 1 RepDepthwiseSeparable (-> 64·s)
//   stages      LayerList of 4 Sequential of RepDepthwiseSeparable; the first block of each has stride 2
//   avg_pool, last_conv (1x1 -> class_expand, no bias; ShiTu: bias), act (ReLU; ShiTu: Identity),
//   dropout (Paddle downscale_in_infer, p 0.2), flatten, fc
//
// RepDepthwiseSeparable (training form): with use_rep, the depthwise stage is the sum of ConvBNLayers without
// activation (`dw_conv_list`, kernels dw_size, dw_size-2, ..., 1; the 1x1 branch only at stride 1) followed by
// `act` (ReLU); `dw_conv` is the single depthwise conv (with bias) that re_parameterize() fills with the fused
// branches and that forward uses afterwards. PaddleClas's block has no identity-BN branch. Without use_rep,
// `dw_conv` is a ConvBNLayer with ReLU. Then optional `se` (SEModule with a sigmoid gate), `pw_conv` or
// `pw_conv_1` (-> out/2) + `pw_conv_2` (split_pw), and the shortcut (use_shortcut, stride 1, in == out).
#pragma once
#include <featlearn/model/pp_lcnet.h>

#include <memory>
#include <string>
#include <vector>

namespace featlearn {

namespace pplcnet {

class RepDepthwiseSeparableImpl : public StagedModule {
 public:
  RepDepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride, int64_t dw_size, bool split_pw, bool use_rep,
                            bool use_se, bool use_shortcut);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

  // PaddleClas re_parameterize: dw_conv := Σ over branches of (kernel · γ/σ zero-padded to dw_size, β − μ·γ/σ)
  // with σ = sqrt(running_var + eps), from the branches' current weights and running statistics; forward then
  // runs dw_conv instead of the branches (in train and eval alike, like PaddleClas). The branches keep their
  // parameters, so state dicts keep every PaddleClas name. Calling it again re-fuses. No-op without use_rep.
  void re_parameterize();
  bool use_rep() const { return use_rep_; }
  bool is_repped() const { return is_repped_; }

 private:
  bool use_rep_, use_se_, split_pw_, use_shortcut_;
  int64_t dw_size_;
  bool is_repped_ = false;
  std::vector<std::shared_ptr<ConvBNLayerImpl>> branches_;  // dw_conv_list
  torch::nn::Conv2d fused_{nullptr};                        // dw_conv with use_rep
};

}  // namespace pplcnet

struct PPLCNetV2Options {
  PPLCNetV2Options(double scale, std::vector<int64_t> depths) : scale_(scale), depths_(std::move(depths)) {}
  TORCH_ARG(double, scale);                 // width multiplier
  TORCH_ARG(std::vector<int64_t>, depths);  // blocks per stage (4 stages)
  TORCH_ARG(int64_t, class_num) = 1000;     // fc outputs
  TORCH_ARG(double, dropout_prob) = 0.2;    // the value PaddleClas's PPLCNetV2_* factories pass
  TORCH_ARG(bool, use_last_conv) = true;    // false: no last_conv/act/dropout, fc reads the pooled stages
  TORCH_ARG(int64_t, class_expand) = 1280;  // last_conv outputs
  TORCH_ARG(bool, shitu) = false;           // the PPLCNetV2_base_ShiTu changes (see above)
};

class PPLCNetV2Impl : public StoppableBackboneImpl {
 public:
  explicit PPLCNetV2Impl(PPLCNetV2Options options);
  const PPLCNetV2Options& options() const { return options_; }
  // Re-parameterizes every RepDepthwiseSeparable (PaddleClas does this when exporting, after loading the
  // weights and switching to eval); returns how many blocks were fused.
  int64_t re_parameterize();

 private:
  PPLCNetV2Options options_;
};
TORCH_MODULE(PPLCNetV2);

// re_parameterize() of every re-parameterizable block under `module` (a backbone, or a whole RecModel);
// returns the number of blocks fused, 0 when there are none (other backbones).
int64_t re_parameterize_modules(torch::nn::Module& module);

// Adds the PP-LCNetV2 names to backbone_registry() (called by register_builtin_backbones).
void register_pplcnet_v2_backbones();

}  // namespace featlearn
