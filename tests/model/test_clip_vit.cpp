// CLIP ViT (clip_vit.h): parameter counts computed by hand from the architecture, PaddleClas parameter names,
// parity of one block and of the whole network against torch's own layers (nn.MultiheadAttention, F.layer_norm;
// tests/fixtures/vit_fixtures.py), return_embed / return_mean_embed semantics, BackboneStopLayer, the
// GeneralRecognitionV2 backbone configs, multiply-accumulates, config errors.
#include <featlearn/model/clip_vit.h>
#include <featlearn/model/compute_count.h>
#include <featlearn/model/stop_layer.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/io/state_dict.h>

#include "../fixture_path.h"
#include "backbone_test_util.h"
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <string>

using namespace featlearn;
using featlearn::test::error_of;

namespace {

using Shape = std::vector<int64_t>;

// The fixture's tiny model: 32x32 images, 16x16 patches, D 64, 4 heads, 2 blocks, output_dim 16, 10 classes.
CLIPViTOptions tiny(bool return_embed, bool mean, bool drop_cls) {
  return CLIPViTOptions()
      .img_size(32).patch_size(16).embed_dim(64).depth(2).num_heads(4).output_dim(16).class_num(10)
      .return_embed(return_embed).return_mean_embed(mean).drop_cls_token(drop_cls);
}

std::map<std::string, torch::Tensor> load_map(const std::string& path) {
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : load_torch_state_dict(path)) m[k] = v;
  return m;
}

// The tiny model with the fixture's weights (every parameter must be in the file), in eval mode.
std::shared_ptr<CLIPViTImpl> tiny_with_weights(const CLIPViTOptions& o) {
  auto m = std::make_shared<CLIPViTImpl>(o);
  const auto sd = load_map(fixture("clip_vit_tiny_weights.pth"));
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters(true)) {
    auto it = sd.find(p.key());
    EXPECT_NE(it, sd.end()) << p.key();
    if (it != sd.end()) p.value().copy_(it->second);
  }
  m->eval();
  return m;
}

torch::Tensor run(const BackbonePtr& m, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return m->forward(x);
}

int64_t count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

BackbonePtr build(const std::string& backbone_yaml, const std::string& stop = "") {
  return featlearn::test::backbone_from_yaml(backbone_yaml, stop);
}

}  // namespace

// By hand: pos_embed (N + 1)·D, cls_token D, proj D·512, patch conv 3·p²·D (no bias), ln_pre and norm 2·D each,
// and per block 12·D² + 13·D (norm1/norm2 4·D, qkv 3·D² + 3·D, attn proj D² + D, fc1 4·D² + 4·D, fc2 4·D² + D).
// The GeneralRecognitionV2 configs' Backbone and BackboneStopLayer; 64x64 images keep the test fast (a 4x4 grid,
// pos_embed resized).
TEST(CLIPViT, ParameterCountsByHandAndGeneralRecognitionV2Backbones) {
  // ViT-B/16 at 224: N = 196, D = 768: 151,296 + 768 + 393,216 + 589,824 + 2·1,536 + 12 · 7,087,872.
  auto base = build("{name: CLIP_vit_base_patch16_224, pretrained: False, return_embed: True, return_mean_embed: True}",
                    "flatten");
  EXPECT_EQ(count(*base), 86192640);  // ≈ 86M, ViT-B/16's published size
  EXPECT_EQ(featlearn::test::output_shape(base, 64, 2), (Shape{2, 512}));
  // ViT-B/32 without return_embed: N = 49 and fc_head Linear(768, 7); return_mean_embed needs return_embed
  // (PaddleClas: `return_mean_embed and return_embed`), so the output is the logits.
  auto cls = build("{name: CLIP_vit_base_patch32_224, return_mean_embed: True, class_num: 7}");
  EXPECT_EQ(count(*cls), 50 * 768 + 768 + 393216 + 3 * 32 * 32 * 768 + 2 * 1536 + 12 * 7087872 + 7 * 768 + 7);
  EXPECT_EQ(featlearn::test::output_shape(cls, 64, 2), (Shape{2, 7}));
  // ViT-L/14 at 224: N = 256, D = 1024, 24 blocks of 12,596,224 = 303,704,064 in all (≈ 304M). Built with one
  // block here (the options are CLIP_vit_large_patch14_224's otherwise).
  const auto large = clip_vit_options("CLIP_vit_large_patch14_224");
  EXPECT_EQ(large.depth(), 24);
  EXPECT_EQ(large.num_heads(), 16);
  EXPECT_FALSE(large.drop_cls_token());
  CLIPViTImpl one(CLIPViTOptions(large).depth(1).return_embed(true));
  EXPECT_EQ(count(one), 263168 + 1024 + 524288 + 602112 + 2 * 2048 + 12596224);
  EXPECT_EQ(263168 + 1024 + 524288 + 602112 + 2 * 2048 + 24 * 12596224, 303704064);
}

TEST(CLIPViT, PaddleClasParameterNames) {
  CLIPViTImpl m(tiny(false, false, false));
  std::set<std::string> names;
  for (const auto& p : m.named_parameters(true)) names.insert(p.key());
  std::set<std::string> file;
  for (const auto& kv : load_map(fixture("clip_vit_tiny_weights.pth"))) file.insert(kv.first);
  EXPECT_EQ(names, file);  // pos_embed, cls_token, proj, patch_embed.proj.weight, ln_pre.*, blocks.i.*, norm.*, head.fc_head.*
  EXPECT_TRUE(names.count("blocks.1.attn.qkv.bias"));
  EXPECT_TRUE(names.count("blocks.0.mlp.fc2.weight"));
  EXPECT_FALSE(names.count("patch_embed.proj.bias"));
  EXPECT_EQ(m.proj.sizes(), (c10::IntArrayRef{64, 16}));
}

TEST(CLIPViT, BlockMatchesMultiheadAttentionReference) {
  auto m = tiny_with_weights(tiny(true, true, false));
  const auto io = load_map(fixture("clip_vit_tiny_io.pth"));
  auto* blocks = m->named_children()["blocks"]->as<torch::nn::ModuleList>();
  ASSERT_NE(blocks, nullptr);
  torch::NoGradGuard ng;
  auto& block = *(*blocks)[0]->as<clip_vit::BlockImpl>();
  const auto y = block.forward(io.at("block_in"));
  EXPECT_TRUE(torch::allclose(y, io.at("block_out"), 1e-4, 1e-5)) << (y - io.at("block_out")).abs().max();
}

TEST(CLIPViT, ForwardMatchesReferenceForEveryOutputForm) {
  const auto io = load_map(fixture("clip_vit_tiny_io.pth"));
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return a.sizes() == b.sizes() && torch::allclose(a, b, 1e-4, 1e-5);
  };
  const auto& img = io.at("image");
  // base_patch16 style: class token dropped, normalized, projected, averaged -> [2, 16].
  EXPECT_TRUE(close(run(tiny_with_weights(tiny(true, true, true)), img), io.at("embed_mean_base")));
  // return_embed without return_mean_embed: every token projected -> [2, 5, 16].
  EXPECT_TRUE(close(run(tiny_with_weights(tiny(true, false, false)), img), io.at("embed_tokens_large")));
  // Classification: class token (large) / mean of the normalized patch tokens (base) -> fc_head.
  EXPECT_TRUE(close(run(tiny_with_weights(tiny(false, false, false)), img), io.at("logits_large")));
  EXPECT_TRUE(close(run(tiny_with_weights(tiny(false, false, true)), img), io.at("logits_base")));
  // A 40x24 image: zero-padded to 48x32, a 3x2 grid, pos_embed resized bicubically.
  EXPECT_TRUE(close(run(tiny_with_weights(tiny(true, true, false)), io.at("image_odd")), io.at("embed_mean_odd_large")));
}

TEST(CLIPViT, StopLayersAndFlatten) {
  const auto img = torch::randn({2, 3, 32, 32});
  auto full = tiny_with_weights(tiny(true, true, true));
  const auto want = run(full, img);
  // GeneralRecognitionV2's `flatten` names the head: nothing is removed, the output is the mean embedding.
  auto flat = tiny_with_weights(tiny(true, true, true));
  apply_stop_layer(*flat, "flatten");
  EXPECT_EQ(flat->stop_path(), "head");
  EXPECT_TRUE(flat->removed().empty());
  EXPECT_TRUE(torch::equal(run(flat, img), want));
  auto shape_at = [&](const std::string& stop) {
    auto m = tiny_with_weights(tiny(true, true, true));
    apply_stop_layer(*m, stop);
    return run(m, img).sizes().vec();
  };
  EXPECT_EQ(shape_at("patch_embed"), (Shape{2, 4, 64}));
  EXPECT_EQ(shape_at("blocks"), (Shape{2, 5, 64}));
  EXPECT_EQ(shape_at("blocks[0].attn.qkv"), (Shape{2, 5, 192}));
  EXPECT_EQ(shape_at("norm"), (Shape{2, 4, 64}));  // the class token dropped, not projected
  EXPECT_EQ(shape_at("layer_norm_0"), (Shape{2, 5, 64}));  // ln_pre by its Paddle full name
  CLIPViTImpl m(tiny(true, true, true));
  EXPECT_NE(error_of([&] { apply_stop_layer(m, "blocks.0.mlp.drop"); }).find("called several times"), std::string::npos);
}

TEST(CLIPViT, TrainingDropPathAndDropout) {
  auto m = std::make_shared<CLIPViTImpl>(tiny(true, false, false).drop_path_rate(0.9999));
  // linspace(0, rate, depth): block 0 has none (Identity), block 1 drops its residual branches.
  auto* blocks = m->named_children()["blocks"]->as<torch::nn::ModuleList>();
  EXPECT_NE((*blocks)[0]->as<clip_vit::BlockImpl>()->drop_path->as<torch::nn::Identity>(), nullptr);
  clip_vit::DropPath dp(0.5);
  dp->train();
  torch::manual_seed(3);
  const auto x = torch::ones({64, 3, 2});
  const auto y = dp->forward(x);
  // Each sample is all 0 or all 1 / (1 - p) = 2.
  const auto per_sample = y.flatten(1);
  EXPECT_TRUE(torch::equal(per_sample.amin(1), per_sample.amax(1)));
  EXPECT_TRUE(((per_sample == 0) | (per_sample == 2)).all().item<bool>());
  EXPECT_GT((per_sample.select(1, 0) == 0).sum().item<int64_t>(), 10);
  dp->eval();
  EXPECT_TRUE(torch::equal(dp->forward(x), x));
}

TEST(CLIPViT, ComputeCountByHand) {
  // Tiny base-style model on 1x3x32x32: patch conv 4·64 outputs x 3·16·16; per block and token the linears
  // qkv 64·192 + proj 64·64 + fc1 64·256 + fc2 256·64 = 49,152, 5 tokens, 2 blocks; attention products
  // 2 · 5·5·64 per block; proj 4 tokens x 64 x 16.
  CLIPViTImpl m(tiny(true, true, true));
  m.eval();
  torch::NoGradGuard ng;
  const auto c = count_compute(m, [&] { m.forward(torch::zeros({1, 3, 32, 32})); });
  EXPECT_EQ(c.conv_macs, 256 * 768);
  EXPECT_EQ(c.conv_bias, 0);
  EXPECT_EQ(c.linear_macs, 49152 * 5 * 2);
  EXPECT_EQ(c.matmul_macs, 2 * 3200 + 4 * 64 * 16);
  EXPECT_EQ(c.paddle_flops(), 196608 + 491520);
}

TEST(CLIPViT, ConfigErrors) {
  auto err = [](const std::string& yaml) { return error_of([&] { build(yaml); }); };
  EXPECT_NE(err("{name: CLIP_vit_base_patch16_224, use_fused_attn: True}").find("use_fused_attn"), std::string::npos);
  EXPECT_NE(err("{name: CLIP_vit_base_patch16_224, class_num: 0}").find("class_num"), std::string::npos);
  EXPECT_NE(err("{name: CLIP_vit_large_patch14_224, pretrained: True}").find("CLIP_vit_large_patch14_224.pdparams"),
            std::string::npos);
  EXPECT_NE(err("{name: CLIP_vit_base_patch16_224, drop_path_rate: 1.5}").find("drop_path_rate"), std::string::npos);
}
