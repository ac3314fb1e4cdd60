// CLIP vision transformers with PaddleClas's structure and names (see clip_vit.h).
#include <featlearn/model/clip_vit.h>

#include <featlearn/common/error.h>
#include <featlearn/model/param_attr.h>
#include <featlearn/model/pp_lcnet.h>

#include <torch/torch.h>

#include <cmath>

namespace featlearn {
namespace nn = torch::nn;

namespace clip_vit {

namespace {

void trunc_normal_02(torch::Tensor& t) {
  ParamInit init;
  init.name = "TruncatedNormal";
  init.std = 0.02;
  init.apply(t, 1.0, 1.0);
}

}  // namespace

torch::Tensor DropPathImpl::forward(const torch::Tensor& x) {
  if (p_ == 0.0 || !is_training()) return x;
  const double keep = 1.0 - p_;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const auto mask = torch::floor(keep + torch::rand(shape, x.options()));  // 1 with probability keep
  return x / keep * mask;
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t p) : patch(p) {
  proj = register_module("proj", nn::Conv2d(nn::Conv2dOptions(in_chans, embed_dim, p).stride(p).bias(false)));
}

torch::Tensor PatchEmbedImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  // PaddleClas pads the bottom and right edges with zeros up to a multiple of the patch.
  const int64_t ph = (patch - x.size(2) % patch) % patch, pw = (patch - x.size(3) % patch) % patch;
  const auto padded = ph || pw ? torch::constant_pad_nd(x, {0, pw, 0, ph}, 0.0) : x;
  return proj->forward(padded).flatten(2).transpose(1, 2);  // [B, N, D]
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t h, bool qkv_bias, std::optional<double> qk_scale,
                             double attn_drop_p, double proj_drop_p)
    : heads(h) {
  scale = qk_scale ? *qk_scale : std::pow(static_cast<double>(dim / h), -0.5);
  qkv = register_module("qkv", nn::Linear(nn::LinearOptions(dim, 3 * dim).bias(qkv_bias)));
  attn_drop = register_module("attn_drop", nn::Dropout(attn_drop_p));
  proj = register_module("proj", nn::Linear(dim, dim));
  proj_drop = register_module("proj_drop", nn::Dropout(proj_drop_p));
}

torch::Tensor AttentionImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  auto t = c.step(child_path(path, "qkv"), x, [&](const torch::Tensor& v) { return qkv->forward(v); });
  if (c.done()) return t;
  t = t.reshape({B, N, 3, heads, C / heads}).permute({2, 0, 3, 1, 4});  // [3, B, H, N, C/H]
  const auto q = t[0], k = t[1], v = t[2];
  auto attn = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1);  // [B, H, N, N]
  attn = c.step(child_path(path, "attn_drop"), attn, [&](const torch::Tensor& a) { return attn_drop->forward(a); });
  if (c.done()) return attn;
  auto y = torch::matmul(attn, v).transpose(1, 2).reshape({B, N, C});
  y = c.step(child_path(path, "proj"), y, [&](const torch::Tensor& a) { return proj->forward(a); });
  return c.step(child_path(path, "proj_drop"), y, [&](const torch::Tensor& a) { return proj_drop->forward(a); });
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double drop_p) {
  fc1 = register_module("fc1", nn::Linear(dim, hidden));
  register_module("act", nn::GELU());  // exact (erf) GELU, as paddle.nn.GELU; CLIP's QuickGELU is not used
  fc2 = register_module("fc2", nn::Linear(hidden, dim));
  drop = register_module("drop", nn::Dropout(drop_p));
}

torch::Tensor MlpImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto y = c.step(child_path(path, "fc1"), x, [&](const torch::Tensor& v) { return fc1->forward(v); });
  y = c.step(child_path(path, "act"), y, [](const torch::Tensor& v) { return torch::gelu(v); });
  // `drop` runs after fc1's activation and after fc2 (multi-use: not a stop layer).
  y = c.step(child_path(path, "drop"), y, [&](const torch::Tensor& v) { return drop->forward(v); });
  y = c.step(child_path(path, "fc2"), y, [&](const torch::Tensor& v) { return fc2->forward(v); });
  return c.step(child_path(path, "drop"), y, [&](const torch::Tensor& v) { return drop->forward(v); });
}

BlockImpl::BlockImpl(const CLIPViTOptions& o, double drop_path_p) {
  const int64_t d = o.embed_dim();
  norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({d}).eps(o.epsilon())));
  attn = register_module("attn", std::make_shared<AttentionImpl>(d, o.num_heads(), o.qkv_bias(), o.qk_scale(),
                                                                 o.attn_drop_rate(), o.drop_rate()));
  if (drop_path_p > 0) drop_path = register_module("drop_path", DropPath(drop_path_p).ptr());
  else drop_path = register_module("drop_path", nn::Identity().ptr());
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({d}).eps(o.epsilon())));
  mlp = register_module("mlp", std::make_shared<MlpImpl>(d, static_cast<int64_t>(static_cast<double>(d) * o.mlp_ratio()),
                                                         o.drop_rate()));
}

torch::Tensor BlockImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto dp = [&](const torch::Tensor& t) {
    if (auto* m = drop_path->as<DropPath>()) return m->forward(t);
    return t;
  };
  const std::string dp_path = child_path(path, "drop_path");
  auto h = c.step(child_path(path, "norm1"), x, [&](const torch::Tensor& t) { return norm1->forward(t); });
  h = c.step(child_path(path, "attn"), h, [&](const torch::Tensor& t) { return attn->run(t, c, child_path(path, "attn")); });
  h = c.step(dp_path, h, dp);
  if (c.done()) return h;
  const auto y = x + h;
  auto m = c.step(child_path(path, "norm2"), y, [&](const torch::Tensor& t) { return norm2->forward(t); });
  m = c.step(child_path(path, "mlp"), m, [&](const torch::Tensor& t) { return mlp->run(t, c, child_path(path, "mlp")); });
  if (c.done()) return m;
  return y + c.step(dp_path, m, dp);
}

HeadImpl::HeadImpl(int64_t dim, int64_t class_num) {
  fc_head = register_module("fc_head", nn::Linear(dim, class_num));
}

}  // namespace clip_vit

CLIPViTImpl::CLIPViTImpl(CLIPViTOptions o) : options_(std::move(o)) {
  const auto& op = options_;
  FL_ASSERT(op.embed_dim() % op.num_heads() == 0, "embed_dim must be a multiple of num_heads");
  const int64_t d = op.embed_dim(), grid = op.img_size() / op.patch_size();
  pos_embed = register_parameter("pos_embed", torch::zeros({1, grid * grid + 1, d}));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, d}));
  proj = register_parameter("proj", std::pow(static_cast<double>(d), -0.5) * torch::randn({d, op.output_dim()}));
  patch_embed_ = register_module("patch_embed", std::make_shared<clip_vit::PatchEmbedImpl>(op.in_chans(), d, op.patch_size()));
  ln_pre_ = register_module("ln_pre", nn::LayerNorm(nn::LayerNormOptions({d}).eps(1e-5)));
  pos_drop_ = register_module("pos_drop", nn::Dropout(op.drop_rate()));
  paddle_nn::LayerList blocks;
  for (int64_t i = 0; i < op.depth(); ++i) {
    const double dpr = op.depth() > 1 ? op.drop_path_rate() * static_cast<double>(i) / static_cast<double>(op.depth() - 1)
                                      : 0.0;  // numpy linspace(0, rate, depth)
    blocks->push_back(std::make_shared<clip_vit::BlockImpl>(op, dpr));
    const std::string p = "blocks." + std::to_string(i);
    multi_use_.insert(p + ".drop_path");
    multi_use_.insert(p + ".mlp.drop");
  }
  register_module("blocks", blocks);
  norm_ = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({d}).eps(op.epsilon())));
  if (op.return_embed()) register_module("head", nn::Identity());
  else head_ = register_module("head", std::make_shared<clip_vit::HeadImpl>(d, op.class_num()));

  torch::NoGradGuard ng;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* fc = m->as<nn::Linear>()) {
      clip_vit::trunc_normal_02(fc->weight);
      if (fc->bias.defined()) fc->bias.zero_();
    } else if (auto* ln = m->as<nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    } else if (auto* cv = m->as<nn::Conv2d>()) {  // Paddle's Conv2D default
      nn::init::kaiming_normal_(cv->weight, 0.0, torch::kFanIn, torch::kReLU);
    }
  }
  clip_vit::trunc_normal_02(pos_embed);
  clip_vit::trunc_normal_02(cls_token);
  if (head_ && op.head_init_scale() != 1.0) {
    head_->fc_head->weight.mul_(op.head_init_scale());
    head_->fc_head->bias.mul_(op.head_init_scale());
  }
}

torch::Tensor CLIPViTImpl::forward_observed(
    torch::Tensor x, const std::function<void(const std::string&, const torch::Tensor&)>& observe) {
  StopCursor c(*this);
  const auto& op = options_;
  auto seen = [&](const char* name, const torch::Tensor& t) {
    if (observe) observe(name, t);
  };
  const int64_t B = x.size(0);
  const int64_t gh = (x.size(2) + op.patch_size() - 1) / op.patch_size(), gw = (x.size(3) + op.patch_size() - 1) / op.patch_size();
  x = c.step("patch_embed", x, [&](const torch::Tensor& t) { return patch_embed_->run(t, c, "patch_embed"); });
  seen("patch_embed", x);
  if (!c.done()) {
    x = torch::cat({cls_token.expand({B, -1, -1}), x}, 1);
    const int64_t grid = op.img_size() / op.patch_size();
    torch::Tensor pos = pos_embed;
    if (gh != grid || gw != grid) {  // PaddleClas's resize_pos_embed: bicubic, align_corners false
      const int64_t d = pos_embed.size(2);
      auto w = pos_embed.slice(1, 1).reshape({1, grid, grid, d}).permute({0, 3, 1, 2});
      w = torch::nn::functional::interpolate(
          w, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{gh, gw}).mode(torch::kBicubic).align_corners(false));
      pos = torch::cat({pos_embed.slice(1, 0, 1), w.flatten(2).transpose(1, 2)}, 1);
    }
    x = x + pos;
  }
  x = c.step("ln_pre", x, [&](const torch::Tensor& t) { return ln_pre_->forward(t); });
  seen("ln_pre", x);
  x = c.step("pos_drop", x, [&](const torch::Tensor& t) { return pos_drop_->forward(t); });
  seen("pos_drop", x);
  x = c.step("blocks", x, [&](const torch::Tensor& t) { return run_module(*named_children()["blocks"], t, c, "blocks"); });
  seen("blocks", x);
  x = c.step("norm", x, [&](const torch::Tensor& t) {
    const auto tokens = op.drop_cls_token() ? t.slice(1, 1) : t;  // [B, T, D]
    if (op.return_embed()) return norm_->forward(tokens);
    // One vector per image: the class token; base_patch16 has dropped it, so the mean of its normalized patch
    // tokens (PaddleClas takes the first patch token there: docs/paddleclas-differences.md).
    if (op.drop_cls_token()) return norm_->forward(tokens).mean(1);
    return norm_->forward(tokens.select(1, 0));
  });
  seen("norm", x);
  x = c.step("head", x, [&](const torch::Tensor& t) {
    if (head_) return head_->fc_head->forward(t);  // [B, class_num]
    auto e = torch::matmul(t, proj);               // [B, T, output_dim]
    return op.return_mean_embed() ? e.mean(1) : e;
  });
  seen("head", x);
  return x;
}

// ---- registration -----------------------------------------------------------------------------------------

CLIPViTOptions clip_vit_options(const std::string& name) {
  CLIPViTOptions o;
  if (name == "CLIP_vit_base_patch32_224") o.patch_size(32);
  else if (name == "CLIP_vit_base_patch16_224") o.patch_size(16).drop_cls_token(true);
  else if (name == "CLIP_vit_large_patch14_224" || name == "CLIP_vit_large_patch14_336")
    o.patch_size(14).embed_dim(1024).depth(24).num_heads(16).img_size(name.back() == '6' ? 336 : 224);
  else throw Error("unknown CLIP ViT '" + name + "'");
  return o;
}

namespace {

BackbonePtr make_clip_vit(const ConfigNode& node, const std::string& name) {
  node.check_keys({"name", "pretrained", "use_ssld", "return_embed", "return_mean_embed", "class_num", "output_dim",
                   "in_chans", "qk_scale", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_init_scale"});
  (void)node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  CLIPViTOptions o = clip_vit_options(name);
  o.return_embed(node.get<bool>("return_embed", false));
  // PaddleClas: return_mean_embed and return_embed.
  o.return_mean_embed(node.get<bool>("return_mean_embed", false) && o.return_embed());
  o.class_num(node.get<int64_t>("class_num", 1000));
  o.output_dim(node.get<int64_t>("output_dim", 512));
  o.in_chans(node.get<int64_t>("in_chans", 3));
  if (auto s = node.optional<double>("qk_scale")) {
    if (!(*s > 0)) node["qk_scale"].fail("must be positive (or null for head_dim^-0.5)");
    o.qk_scale(*s);
  }
  o.drop_rate(node.get<double>("drop_rate", 0.0));
  o.attn_drop_rate(node.get<double>("attn_drop_rate", 0.0));
  o.drop_path_rate(node.get<double>("drop_path_rate", 0.0));
  o.head_init_scale(node.get<double>("head_init_scale", 0.001));
  if (o.output_dim() <= 0) node["output_dim"].fail("must be positive");
  if (o.in_chans() <= 0) node["in_chans"].fail("must be positive");
  if (!o.return_embed() && o.class_num() <= 0)
    node["class_num"].fail("must be positive without return_embed (PaddleClas would return one number per image)");
  for (const char* k : {"drop_rate", "attn_drop_rate", "drop_path_rate"}) {
    const double p = node.get<double>(k, 0.0);
    if (!(p >= 0 && p < 1)) node[k].fail("must be in [0, 1)");
  }
  const std::string pretrained = pplcnet::read_pretrained(node, name + ".pdparams");  // errors before the build
  auto m = std::make_shared<CLIPViTImpl>(o);
  m->config_name = name;
  m->pretrained_path = pretrained;
  return m;
}

}  // namespace

void register_clip_vit_backbones() {
  for (const char* n : {"CLIP_vit_base_patch32_224", "CLIP_vit_base_patch16_224", "CLIP_vit_large_patch14_224",
                        "CLIP_vit_large_patch14_336"}) {
    const std::string name = n;
    backbone_registry().add(name, [name](const ConfigNode& node) -> BackbonePtr { return make_clip_vit(node, name); });
  }
}

}  // namespace featlearn
