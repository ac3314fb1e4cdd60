// Registers the builtin backbones in backbone_registry() (explicit registration, see docs/architecture.md).
#include <featlearn/model/adaface_ir.h>
#include <featlearn/model/alexnet.h>
#include <featlearn/model/mobilenet_v1.h>
#include <featlearn/model/clip_vit.h>
#include <featlearn/model/mobilenet_v3.h>
#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/pp_lcnet_v2.h>
#include <featlearn/model/pretrained.h>
#include <featlearn/model/resnet.h>
#include <featlearn/model/torchvision_mobilenet_v3.h>
#include <featlearn/model/vgg.h>

#include <featlearn/common/error.h>

#include <torch/torch.h>

namespace featlearn {
namespace {

void check_data_format(const ConfigNode& node) {
  const auto f = node.optional<std::string>("data_format");
  if (f && *f != "NCHW") node["data_format"].fail("only data_format: NCHW is supported (got " + *f + ")");
}

void add_resnet(const std::string& name, const std::string& tv_file) {
  backbone_registry().add(name, [name, tv_file](const ConfigNode& node) -> BackbonePtr {
    node.check_keys({"name", "pretrained", "class_num", "input_image_channel", "data_format", "stem_act"});
    check_data_format(node);
    auto opts = resnet_options(name);
    // PaddleClas `stem_act`: "relu" (default) or null for no activation after the stem.
    if (node.has("stem_act")) {
      const auto act = node["stem_act"];
      if (act.defined() && act.as<std::string>() != "relu")
        act.fail("supported values are relu and null (no activation after the stem)");
      opts.stem_act(act.defined());
    }
    opts.class_num(node.get<int64_t>("class_num", 1000));
    opts.in_channels(node.get<int64_t>("input_image_channel", 3));
    if (opts.class_num() <= 0) node["class_num"].fail("must be positive");
    if (opts.in_channels() <= 0) node["input_image_channel"].fail("must be positive");
    auto m = std::make_shared<ResNetImpl>(opts);
    m->config_name = name;
    m->torchvision_file = tv_file;
    m->pretrained_path = resolve_pretrained(node, tv_file, "a torchvision .pth weights file");
    return m;
  });
}

void add_mobilenet(const std::string& name, bool large, const std::string& tv_file) {
  backbone_registry().add(name, [name, large, tv_file](const ConfigNode& node) -> BackbonePtr {
    node.check_keys({"name", "pretrained", "class_num", "dropout_prob", "class_expand"});
    TorchvisionMobileNetV3Options opts(large);
    opts.class_num(node.get<int64_t>("class_num", 1000));
    opts.dropout_prob(node.get<double>("dropout_prob", 0.2));
    opts.class_expand(node.get<int64_t>("class_expand", 0));
    if (opts.class_num() <= 0) node["class_num"].fail("must be positive");
    if (opts.dropout_prob() < 0 || opts.dropout_prob() >= 1) node["dropout_prob"].fail("must be in [0, 1)");
    auto m = std::make_shared<TorchvisionMobileNetV3Impl>(opts);
    m->config_name = name;
    m->torchvision_file = tv_file;
    m->pretrained_path = resolve_pretrained(node, tv_file, "a torchvision .pth weights file");
    return m;
  });
}

}  // namespace

void register_builtin_backbones() {
  static const bool done = [] {
    add_resnet("ResNet18", "resnet18-f37072fd.pth");
    add_resnet("ResNet34", "resnet34-b627a593.pth");
    add_resnet("ResNet50", "resnet50-0676ba61.pth");
    add_resnet("ResNet101", "resnet101-63fe2227.pth");
    add_resnet("ResNet152", "resnet152-394f9c45.pth");
    add_resnet("ResNet50_vd", "ResNet50_vd_pretrained.pdparams");  // PaddleClas's (model/pretrained.h)
    add_resnet("ResNet50_last_stage_stride1", "resnet50-0676ba61.pth");
    // metric_learning/xbm_resnet50.yaml starts from torchvision's v1 ResNet50 weights (converted for Paddle).
    add_resnet("ResNet50_adaptive_max_pool2d", "resnet50-19c8e357.pth");
    // torchvision's MobileNetV3 structure; the PaddleClas names build PaddleClas's (mobilenet_v3.h).
    add_mobilenet("TorchvisionMobileNetV3_small_x1_0", false, "mobilenet_v3_small-047dcff4.pth");
    add_mobilenet("TorchvisionMobileNetV3_large_x1_0", true, "mobilenet_v3_large-8738ca79.pth");
    register_mobilenet_v3_backbones();  // MobileNetV3_small|large_x0_35 ... x1_25 (PaddleClas)
    register_pplcnet_backbones();     // PPLCNet_x0_25 ... PPLCNet_x2_5, PPLCNetBaseNet, PPLCNet_x2_5_Tanh
    register_pplcnet_v2_backbones();  // PPLCNetV2_small|base|large, PPLCNetV2_base_ShiTu
    register_mobilenet_v1_backbones();  // MobileNetV1, MobileNetV1_x0_25|x0_5|x0_75
    register_vgg_backbones();           // VGG11, VGG13, VGG16, VGG19, VGG19Sigmoid
    register_adaface_backbones();       // AdaFace_IR_18 ... AdaFace_IR_SE_200
    register_clip_vit_backbones();      // CLIP_vit_base_patch16_224, CLIP_vit_large_patch14_224, ...
    register_alexnet_backbone();        // AlexNet
    return true;
  }();
  (void)done;
}

}  // namespace featlearn
