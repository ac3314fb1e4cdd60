// PP-LCNet with PaddleClas's structure and names, and the Paddle-semantics layers it needs (see pp_lcnet.h).
#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/batch_norm.h>
#include <featlearn/model/pretrained.h>

#include <featlearn/common/error.h>
#include <featlearn/model/torchvision_mobilenet_v3.h>

#include <torch/torch.h>

#include <cmath>
#include <sstream>

namespace featlearn {
namespace nn = torch::nn;

// ---- paddle_nn --------------------------------------------------------------------------------------------

namespace paddle_nn {

DropoutImpl::DropoutImpl(double p) : p_(p) {
  FL_ASSERT(p >= 0 && p <= 1, "dropout probability out of [0, 1]");
}

torch::Tensor DropoutImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  if (!is_training()) return x * (1.0 - p_);
  if (p_ == 0) return x;
  // Kept with probability 1 - p, not rescaled (downscale_in_infer).
  return x * (torch::rand_like(x) >= p_).to(x.scalar_type());
}

torch::Tensor HardsigmoidImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  return torch::clamp(x * slope_ + offset_, 0.0, 1.0);
}

torch::Tensor SigmoidImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) { return torch::sigmoid(x); }
torch::Tensor TanhImpl::run(const torch::Tensor& x, StopCursor&, const std::string&) { return torch::tanh(x); }
torch::Tensor ReLU6Impl::run(const torch::Tensor& x, StopCursor&, const std::string&) {
  return torch::clamp(x, 0.0, 6.0);
}

}  // namespace paddle_nn

// ---- shared blocks ----------------------------------------------------------------------------------------

namespace pplcnet {

int64_t make_divisible(double v, int64_t divisor) {
  int64_t nv = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

torch::Tensor ChainedLayer::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  torch::Tensor y = x;
  for (const auto& item : named_children()) {  // sees modules replaced by the stop layer
    const std::string p = child_path(path, item.key());
    auto& child = *item.value();
    y = c.step(p, y, [&](const torch::Tensor& t) { return run_module(child, t, c, p); });
  }
  return y;
}

std::shared_ptr<nn::Module> make_activation(const std::string& act) {
  if (act == "hardswish") return std::make_shared<HardswishImpl>();
  if (act == "relu") return nn::ReLU().ptr();
  if (act == "relu6") return std::make_shared<paddle_nn::ReLU6Impl>();
  throw Error("unsupported activation '" + act + "' (valid: hardswish, relu, relu6)");
}

ConvBNLayerImpl::ConvBNLayerImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                                 const std::string& act) {
  conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                                                .stride(stride)
                                                .padding((kernel - 1) / 2)
                                                .groups(groups)
                                                .bias(false)));
  bn = register_module("bn", BatchNorm2d(out));  // Paddle BatchNorm2D: momentum 0.9 (= torch 0.1), eps 1e-5
  if (!act.empty()) register_module("act", make_activation(act));
}

SEModuleImpl::SEModuleImpl(int64_t channels, int64_t reduction, bool sigmoid_gate, double hardsigmoid_slope) {
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  register_module("conv1", nn::Conv2d(nn::Conv2dOptions(channels, channels / reduction, 1)));
  register_module("relu", nn::ReLU());
  register_module("conv2", nn::Conv2d(nn::Conv2dOptions(channels / reduction, channels, 1)));
  if (sigmoid_gate) register_module("hardsigmoid", paddle_nn::Sigmoid());
  else register_module("hardsigmoid", paddle_nn::Hardsigmoid(hardsigmoid_slope));
}

torch::Tensor SEModuleImpl::run(const torch::Tensor& x, StopCursor& c, const std::string& path) {
  auto gate = ChainedLayer::run(x, c, path);  // [N, C, 1, 1]
  if (c.done()) return gate;
  return x * gate;
}

DepthwiseSeparableImpl::DepthwiseSeparableImpl(int64_t in, int64_t out, int64_t stride, int64_t dw_size,
                                               bool use_se, const std::string& act) {
  register_module("dw_conv", std::make_shared<ConvBNLayerImpl>(in, in, dw_size, stride, in, act));
  if (use_se) register_module("se", std::make_shared<SEModuleImpl>(in, 4, false));
  register_module("pw_conv", std::make_shared<ConvBNLayerImpl>(in, out, 1, 1, 1, act));
}

TanhSuffixImpl::TanhSuffixImpl(std::shared_ptr<nn::Module> origin_layer) {
  register_module("origin_layer", std::move(origin_layer));
  register_module("tanh", paddle_nn::Tanh());
}

void paddle_init(nn::Module& root) {
  torch::NoGradGuard ng;
  for (auto& m : root.modules(/*include_self=*/false)) {  // the roots themselves hold no parameters
    if (auto* cv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(cv->weight, 0.0, torch::kFanIn, torch::kReLU);  // std sqrt(2 / fan_in)
      if (cv->bias.defined()) nn::init::zeros_(cv->bias);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<nn::Linear>()) {
      nn::init::xavier_uniform_(fc->weight);
      if (fc->bias.defined()) nn::init::zeros_(fc->bias);
    }
  }
}

std::string read_pretrained(const ConfigNode& node, const std::string& paddle_file) {
  return resolve_pretrained(node, paddle_file, "a state dict");
}

void refuse_return_options(const ConfigNode& node) {
  for (const char* key : {"return_patterns", "return_stages"})
    if (node[key].defined())
      node[key].fail(std::string(key) +
                     " makes a PaddleClas backbone return a dict of stage outputs, which RecModel cannot take; "
                     "use BackboneStopLayer to choose the backbone output (or set it to null)");
}

}  // namespace pplcnet

// ---- PPLCNet ----------------------------------------------------------------------------------------------

namespace {

// PaddleClas NET_CONFIG: per block {kernel, in, out, stride, use_se} at scale 1.
struct LcnetBlock {
  int64_t kernel, in, out, stride;
  bool se;
};
const std::vector<std::vector<LcnetBlock>>& lcnet_stages() {
  static const std::vector<std::vector<LcnetBlock>> kStages = {
      {{3, 16, 32, 1, false}},                                                           // blocks2
      {{3, 32, 64, 2, false}, {3, 64, 64, 1, false}},                                    // blocks3
      {{3, 64, 128, 2, false}, {3, 128, 128, 1, false}},                                 // blocks4
      {{3, 128, 256, 2, false}, {5, 256, 256, 1, false}, {5, 256, 256, 1, false},        // blocks5
       {5, 256, 256, 1, false}, {5, 256, 256, 1, false}, {5, 256, 256, 1, false}},
      {{5, 256, 512, 2, true}, {5, 512, 512, 1, true}}};                                 // blocks6
  return kStages;
}

}  // namespace

PPLCNetImpl::PPLCNetImpl(PPLCNetOptions o) : options_(std::move(o)) {
  using pplcnet::make_divisible;
  const double s = options_.scale();
  const auto& strides = options_.stride_list();
  FL_ASSERT(strides.size() == 5, "PPLCNet stride_list needs 5 entries");
  register_module("conv1", std::make_shared<pplcnet::ConvBNLayerImpl>(3, make_divisible(16 * s), 3, strides[0], 1,
                                                                      options_.act()));
  const auto& stages = lcnet_stages();
  for (size_t st = 0; st < stages.size(); ++st) {
    nn::ModuleList blocks;
    for (size_t i = 0; i < stages[st].size(); ++i) {
      const auto& b = stages[st][i];
      // stride_list[1..4] replace the first stride of blocks3..blocks6 (blocks2 keeps 1).
      const int64_t stride = (i == 0 && st > 0) ? strides[st] : b.stride;
      blocks->push_back(std::make_shared<pplcnet::DepthwiseSeparableImpl>(
          make_divisible(b.in * s), make_divisible(b.out * s), stride, b.kernel, b.se, options_.act()));
    }
    register_module("blocks" + std::to_string(st + 2), blocks);
  }
  register_module("avg_pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  const int64_t last_in = make_divisible(512 * s);
  if (options_.use_last_conv()) {
    register_module("last_conv", nn::Conv2d(nn::Conv2dOptions(last_in, options_.class_expand(), 1).bias(false)));
    register_module("act", pplcnet::make_activation(options_.act()));
    register_module("dropout", paddle_nn::Dropout(options_.dropout_prob()));
  }
  register_module("flatten", nn::Flatten());
  nn::Linear fc(options_.use_last_conv() ? options_.class_expand() : last_in, options_.class_num());
  if (options_.tanh()) register_module("fc", std::make_shared<pplcnet::TanhSuffixImpl>(fc.ptr()));
  else register_module("fc", fc);
  pplcnet::paddle_init(*this);
}

// ---- registration -----------------------------------------------------------------------------------------

namespace {

struct LcnetScale {
  const char* name;
  double scale;
};
constexpr LcnetScale kLcnetScales[] = {{"PPLCNet_x0_25", 0.25}, {"PPLCNet_x0_35", 0.35}, {"PPLCNet_x0_5", 0.5},
                                       {"PPLCNet_x0_75", 0.75}, {"PPLCNet_x1_0", 1.0},   {"PPLCNet_x1_5", 1.5},
                                       {"PPLCNet_x2_0", 2.0},   {"PPLCNet_x2_5", 2.5}};

// PaddleClas's pretrained file for a scale ("" when it publishes none).
std::string lcnet_weights_file(double scale, bool ssld) {
  for (const auto& e : kLcnetScales)
    if (std::abs(e.scale - scale) < 1e-9) return std::string(e.name) + (ssld ? "_ssld" : "") + "_pretrained.pdparams";
  return "";
}

// Reads the PPLCNet keys (docs/config.md, "Arch.Backbone") and builds the model.
BackbonePtr make_lcnet(const ConfigNode& node, const std::string& config_name, double scale, bool tanh,
                       bool scale_key) {
  std::vector<std::string> keys = {"name",         "pretrained",    "use_ssld", "class_num",    "dropout_prob",
                                   "class_expand", "use_last_conv", "stride_list", "act",       "lr_mult_list",
                                   "return_patterns", "return_stages"};
  if (scale_key) keys.push_back("scale");
  node.check_keys(keys);
  pplcnet::refuse_return_options(node);
  if (scale_key) {
    scale = node.get<double>("scale", 1.0);
    if (!(scale > 0)) node["scale"].fail("must be positive");
  }
  const bool ssld = node.get<bool>("use_ssld", false);  // only chooses PaddleClas's download
  PPLCNetOptions o(scale);
  o.tanh(tanh);
  o.class_num(node.get<int64_t>("class_num", 1000));
  if (o.class_num() <= 0) node["class_num"].fail("must be positive");
  o.dropout_prob(node.get<double>("dropout_prob", 0.2));
  if (o.dropout_prob() < 0 || o.dropout_prob() > 1) node["dropout_prob"].fail("must be in [0, 1]");
  o.class_expand(node.get<int64_t>("class_expand", 1280));
  if (o.class_expand() <= 0) node["class_expand"].fail("must be positive");
  o.use_last_conv(node.get<bool>("use_last_conv", true));
  if (node["stride_list"].defined()) {
    const auto sl = node["stride_list"].as<std::vector<int64_t>>();
    if (sl.size() != 5) node["stride_list"].fail("needs 5 strides (conv1, blocks3..blocks6), got " + std::to_string(sl.size()));
    for (auto v : sl)
      if (v < 1) node["stride_list"].fail("strides must be >= 1");
    o.stride_list(sl);
  }
  o.act(node.get<std::string>("act", "hardswish"));
  if (o.act() != "hardswish" && o.act() != "relu" && o.act() != "relu6")
    node["act"].fail("unsupported activation '" + o.act() + "' (valid: hardswish, relu, relu6)");
  if (node["lr_mult_list"].defined()) {
    const auto lr = node["lr_mult_list"].as<std::vector<double>>();
    if (lr.size() != 6) node["lr_mult_list"].fail("needs 6 values, got " + std::to_string(lr.size()));
    for (double v : lr)
      if (v != 1.0)
        node["lr_mult_list"].fail(
            "per-stage learning-rate multipliers are not supported yet; use 1.0 for every stage or remove the key");
  }
  auto m = std::make_shared<PPLCNetImpl>(o);
  m->config_name = config_name;
  m->pretrained_path = pplcnet::read_pretrained(node, lcnet_weights_file(scale, ssld));
  return m;
}

}  // namespace

void register_pplcnet_backbones() {
  for (const auto& e : kLcnetScales) {
    const std::string name = e.name;
    const double scale = e.scale;
    backbone_registry().add(name, [name, scale](const ConfigNode& node) -> BackbonePtr {
      return make_lcnet(node, name, scale, false, false);
    });
  }
  backbone_registry().add("PPLCNetBaseNet", [](const ConfigNode& node) -> BackbonePtr {
    return make_lcnet(node, "PPLCNetBaseNet", 1.0, false, true);
  });
  // PaddleClas loads PPLCNet_x2_5's weights into it before wrapping fc.
  backbone_registry().add("PPLCNet_x2_5_Tanh", [](const ConfigNode& node) -> BackbonePtr {
    return make_lcnet(node, "PPLCNet_x2_5_Tanh", 2.5, true, false);
  });
}

}  // namespace featlearn
