// PP-LCNetV2 with PaddleClas's structure and names, and re-parameterization (see pp_lcnet_v2.h).
#include <featlearn/model/pp_lcnet_v2.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

namespace featlearn {
namespace nn = torch::nn;

namespace pplcnet {

RepDepthwiseSeparableImpl::RepDepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride, int64_t dw_size,
                                                     bool split_pw, bool use_rep, bool use_se, bool use_shortcut)
    : use_rep_(use_rep),
      use_se_(use_se),
      split_pw_(split_pw),
      use_shortcut_(use_shortcut && stride == 1 && in == out),
      dw_size_(dw_size) {
  if (use_rep_) {
    paddle_nn::LayerList list;
    for (int64_t k = dw_size; k > 0; k -= 2) {
      if (k == 1 && stride != 1) continue;
      auto branch = std::make_shared<ConvBNLayerImpl>(in, in, k, stride, in, "");
      list->push_back(branch);
      branches_.push_back(branch);
    }
    register_module("dw_conv_list", list);
    fused_ = register_module(
        "dw_conv", nn::Conv2d(nn::Conv2dOptions(in, in, dw_size).stride(stride).padding((dw_size - 1) / 2).groups(in)));
  } else {
    register_module("dw_conv", std::make_shared<ConvBNLayerImpl>(in, in, dw_size, stride, in, "relu"));
  }
  register_module("act", nn::ReLU());
  if (use_se_) register_module("se", std::make_shared<SEModuleImpl>(in, 4, true));
  if (split_pw_) {
    const auto mid = static_cast<int64_t>(out * 0.5);
    register_module("pw_conv_1", std::make_shared<ConvBNLayerImpl>(in, mid, 1, 1, 1, "relu"));
    register_module("pw_conv_2", std::make_shared<ConvBNLayerImpl>(mid, out, 1, 1, 1, "relu"));
  } else {
    register_module("pw_conv", std::make_shared<ConvBNLayerImpl>(in, out, 1, 1, 1, "relu"));
  }
}

torch::Tensor RepDepthwiseSeparableImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  const auto children = named_children();  // current tree: the stop layer may have replaced some by Identity
  auto run_child = [&](const char* name, const torch::Tensor& in) {
    const std::string p = child_path(path, name);
    auto& child = *children[name];
    return c.step(p, in, [&](const torch::Tensor& t) { return run_module(child, t, c, p); });
  };
  auto identity = [](const torch::Tensor& t) { return t; };
  const std::string dw_path = child_path(path, "dw_conv");
  torch::Tensor y;
  if (use_rep_) {
    if (is_repped_ && children["dw_conv"]->as<nn::Conv2d>()) {
      y = c.step(dw_path, x, [&](const torch::Tensor& t) { return fused_->forward(t); });
    } else {
      // Training form: the sum of the branches. A stop inside the list outputs that branch.
      const std::string list_path = child_path(path, "dw_conv_list");
      auto& list = *children["dw_conv_list"];
      y = c.step(list_path, x, [&](const torch::Tensor& t) {
        torch::Tensor sum;
        for (const auto& item : list.named_children()) {
          const std::string p = child_path(list_path, item.key());
          auto& branch = *item.value();
          auto out = c.step(p, t, [&](const torch::Tensor& u) { return run_module(branch, u, c, p); });
          if (c.done()) return out;
          sum = sum.defined() ? sum + out : out;
        }
        return sum;
      });
      // The sum is what dw_conv computes once fused: a stop at dw_conv outputs it either way.
      y = c.step_always(dw_path, y, identity);
    }
    y = c.step(child_path(path, "act"), y, [](const torch::Tensor& t) { return torch::relu(t); });
  } else {
    y = run_child("dw_conv", x);
    // `act` is registered but unused here (dw_conv has its own ReLU): a stop at it outputs dw_conv's result.
    y = c.step_always(child_path(path, "act"), y, identity);
  }
  if (use_se_) y = run_child("se", y);
  if (split_pw_) {
    y = run_child("pw_conv_1", y);
    y = run_child("pw_conv_2", y);
  } else {
    y = run_child("pw_conv", y);
  }
  if (c.done() || !use_shortcut_) return y;
  return y + x;
}

void RepDepthwiseSeparableImpl::re_parameterize() {
  if (!use_rep_) return;
  torch::NoGradGuard ng;
  auto kernel = torch::zeros_like(fused_->weight);  // [C, 1, dw_size, dw_size]
  auto bias = torch::zeros_like(fused_->bias);      // [C]
  for (const auto& br : branches_) {
    const auto& bn = br->bn;
    const auto scale = bn->weight / (bn->running_var + bn->options.eps()).sqrt();  // γ / σ, [C]
    auto k = br->conv->weight * scale.reshape({-1, 1, 1, 1});
    const int64_t pad = (dw_size_ - k.size(-1)) / 2;
    if (pad > 0) k = torch::constant_pad_nd(k, {pad, pad, pad, pad}, 0);
    kernel += k;
    bias += bn->bias - bn->running_mean * scale;
  }
  fused_->weight.copy_(kernel);
  fused_->bias.copy_(bias);
  is_repped_ = true;
}

}  // namespace pplcnet

namespace {

// PaddleClas NET_CONFIG per stage: in_channels, kernel_size, split_pw, use_rep, use_se, use_shortcut.
struct LcnetV2Stage {
  int64_t in, kernel;
  bool split_pw, use_rep, use_se, use_shortcut;
};
constexpr LcnetV2Stage kLcnetV2Stages[] = {{64, 3, false, false, false, false},
                                           {128, 3, false, false, false, false},
                                           {256, 5, true, true, true, false},
                                           {512, 5, false, true, false, true}};

}  // namespace

PPLCNetV2Impl::PPLCNetV2Impl(PPLCNetV2Options o) : options_(std::move(o)) {
  using pplcnet::make_divisible;
  using pplcnet::RepDepthwiseSeparableImpl;
  const double s = options_.scale();
  FL_ASSERT(options_.depths().size() == 4, "PPLCNetV2 needs 4 stage depths");
  nn::ModuleList stem;
  stem->push_back(std::make_shared<pplcnet::ConvBNLayerImpl>(3, make_divisible(32 * s), 3, 2, 1, "relu"));
  stem->push_back(std::make_shared<RepDepthwiseSeparableImpl>(make_divisible(32 * s), make_divisible(64 * s), 1, 3,
                                                              false, false, false, false));
  register_module("stem", stem);
  paddle_nn::LayerList stages;
  for (size_t st = 0; st < 4; ++st) {
    const auto& cfg = kLcnetV2Stages[st];
    nn::ModuleList blocks;
    for (int64_t i = 0; i < options_.depths()[st]; ++i) {
      int64_t stride = i == 0 ? 2 : 1;
      if (options_.shitu() && st == 3) stride = 1;  // ShiTu: stages[3][0] and [1] rebuilt with stride 1
      blocks->push_back(std::make_shared<RepDepthwiseSeparableImpl>(
          make_divisible((i == 0 ? cfg.in : cfg.in * 2) * s), make_divisible(cfg.in * 2 * s), stride, cfg.kernel,
          cfg.split_pw, cfg.use_rep, cfg.use_se, cfg.use_shortcut));
    }
    stages->push_back(blocks);
  }
  register_module("stages", stages);
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  const int64_t last_in = make_divisible(512 * 2 * s);
  if (options_.use_last_conv()) {
    register_module("last_conv",
                    nn::Conv2d(nn::Conv2dOptions(last_in, options_.class_expand(), 1).bias(options_.shitu())));
    if (options_.shitu()) register_module("act", nn::Identity());
    else register_module("act", nn::ReLU());
    register_module("dropout", paddle_nn::Dropout(options_.dropout_prob()));
  }
  register_module("flatten", nn::Flatten());
  register_module("fc", nn::Linear(options_.use_last_conv() ? options_.class_expand() : last_in, options_.class_num()));
  pplcnet::paddle_init(*this);
}

int64_t PPLCNetV2Impl::re_parameterize() { return re_parameterize_modules(*this); }

int64_t re_parameterize_modules(nn::Module& module) {
  int64_t n = 0;
  auto fuse = [&](nn::Module* m) {
    if (auto* b = dynamic_cast<pplcnet::RepDepthwiseSeparableImpl*>(m); b && b->use_rep()) {
      b->re_parameterize();
      ++n;
    }
  };
  fuse(&module);  // modules(true) would need `module` to be held by a shared_ptr
  for (const auto& m : module.modules(/*include_self=*/false)) fuse(m.get());
  return n;
}

namespace {

struct LcnetV2Variant {
  const char* name;
  double scale;
  int64_t depth3;  // blocks in stages[2]; the other stages have 2
  bool shitu;
  const char* weights;  // PaddleClas's pretrained file stem
};
constexpr LcnetV2Variant kLcnetV2Variants[] = {{"PPLCNetV2_small", 0.75, 4, false, "PPLCNetV2_small"},
                                               {"PPLCNetV2_base", 1.0, 6, false, "PPLCNetV2_base"},
                                               {"PPLCNetV2_large", 1.25, 8, false, "PPLCNetV2_large"},
                                               {"PPLCNetV2_base_ShiTu", 1.0, 6, true, "PPLCNetV2_base"}};

BackbonePtr make_lcnet_v2(const ConfigNode& node, const LcnetV2Variant& v) {
  node.check_keys({"name", "pretrained", "use_ssld", "class_num", "use_last_conv", "class_expand", "dropout_prob",
                   "return_patterns", "return_stages"});
  pplcnet::refuse_return_options(node);
  if (node["dropout_prob"].defined())
    node["dropout_prob"].fail("PaddleClas's " + std::string(v.name) +
                              " fixes dropout_prob at 0.2 (passing it there is a duplicate-argument error); remove "
                              "the key");
  const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  PPLCNetV2Options o(v.scale, {2, 2, v.depth3, 2});
  o.shitu(v.shitu);
  o.class_num(node.get<int64_t>("class_num", 1000));
  if (o.class_num() <= 0) node["class_num"].fail("must be positive");
  o.use_last_conv(node.get<bool>("use_last_conv", true));
  o.class_expand(node.get<int64_t>("class_expand", 1280));
  if (o.class_expand() <= 0) node["class_expand"].fail("must be positive");
  auto m = std::make_shared<PPLCNetV2Impl>(o);
  m->config_name = v.name;
  m->pretrained_path =
      pplcnet::read_pretrained(node, std::string(v.weights) + (ssld ? "_ssld" : "") + "_pretrained.pdparams");
  return m;
}

}  // namespace

void register_pplcnet_v2_backbones() {
  for (const auto& v : kLcnetV2Variants)
    backbone_registry().add(v.name, [v](const ConfigNode& node) -> BackbonePtr { return make_lcnet_v2(node, v); });
}

}  // namespace featlearn
