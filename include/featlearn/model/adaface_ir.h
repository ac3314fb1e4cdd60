// AdaFace IR / IR-SE backbones (face recognition ResNets) with PaddleClas's structure, parameter names and
// semantics (docs/config.md, "Arch.Backbone"). The output is the [N, 512] embedding.
//
// Config names (PaddleClas's registered set): AdaFace_IR_18, AdaFace_IR_34, AdaFace_IR_50, AdaFace_IR_101,
//   AdaFace_IR_152, AdaFace_IR_SE_50, AdaFace_IR_SE_101, AdaFace_IR_SE_152, AdaFace_IR_SE_200.
// Keys: name, input_size ([112, 112] default, or [224, 224]); PaddleClas's factories take nothing else.
//
// Module tree (module paths are BackboneStopLayer names, `body[3]` works too):
//   input_layer   Sequential {0 Conv2d 3x3 3 -> 64, stride 1, no bias; 1 BatchNorm2d; 2 PReLU(64)}
//   body          Sequential of units, the first of each stage with stride 2 (widths 64, 128, 256, 512; 256 ..
//                 2048 for 152 / 200 layers). A unit: {shortcut_layer: MaxPool2d(1, stride) when the width stays,
//                 else Sequential {0 Conv2d 1x1 stride, 1 BatchNorm2d}; res_layer: Sequential (below)};
//                 output res_layer(x) + shortcut_layer(x).
//                 BasicBlockIR (18 .. 101 layers): {0 BN, 1 conv 3x3, 2 BN, 3 PReLU, 4 conv 3x3 stride, 5 BN}
//                 BottleneckIR (152, 200; r = width / 4): {0 BN, 1 conv 1x1 -> r, 2 BN, 3 PReLU, 4 conv 3x3,
//                   5 BN, 6 PReLU, 7 conv 1x1 stride -> width, 8 BN}
//                 IR_SE: res_layer gains `se_block` last: SELayer {avg_pool, fc1 1x1 conv C -> C/16, relu, fc2
//                   1x1 conv -> C, sigmoid} (no biases), x · gate
//   output_layer  Sequential {0 BatchNorm2d(C); 1 Dropout(0.4) (Paddle upscale_in_train = torch's); 2 Flatten;
//                 3 Linear(C·7·7 for input_size 112, C·14·14 for 224 -> 512); 4 BatchNorm1d(512) with weight
//                 fixed at 1 and bias at 0 (Paddle weight_attr / bias_attr False: present, requires_grad false)}
// PaddleClas registers output_layer before body (its __init__ order); featlearn registers the three in execution
// order, so a stop at `body` returns the body's output (PaddleClas's stop_after("body") would leave output_layer
// in place) and Paddle full names count output_layer's layers after body's.
// PReLU's parameter is `weight` (Paddle: `_weight`), as BatchNorm statistics are running_mean / running_var.
// Initialization as PaddleClas: convs and the Linear KaimingNormal (SE fc1 Xavier uniform), Linear bias 0,
// BatchNorm 1 / 0, PReLU 0.25.
#pragma once
#include <torch/arg.h>
#include <torch/nn/pimpl.h>

#include <featlearn/model/pp_lcnet.h>
#include <featlearn/model/stop_layer.h>

#include <string>
#include <vector>

namespace featlearn {

namespace adaface {

// paddle.nn.Sequential: children in order, through the cursor (also the PReLU and BatchNorm1d leaves that
// run_module does not know).
class SequentialImpl : public StagedModule {
 public:
  // Registers `m` under the next index ("0", "1", ...).
  void push_back(std::shared_ptr<torch::nn::Module> m);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};

// SELayer(channels, reduction 16): x · sigmoid(fc2(relu(fc1(avg_pool(x))))).
class SELayerImpl : public pplcnet::ChainedLayer {
 public:
  SELayerImpl(int64_t channels, int64_t reduction);
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;
};

// A body unit: shortcut_layer, res_layer; res + shortcut. The four PaddleClas classes below differ in res_layer.
class IRUnit : public StagedModule {
 public:
  torch::Tensor run(const torch::Tensor& x, StopCursor& c, const std::string& path) override;

 protected:
  IRUnit(int64_t in, int64_t depth, int64_t stride);
  void set_res_layer(std::shared_ptr<SequentialImpl> res, int64_t depth, bool se);
};

class BasicBlockIRImpl : public IRUnit {
 public:
  BasicBlockIRImpl(int64_t in, int64_t depth, int64_t stride, bool se = false);
};
class BasicBlockIRSEImpl : public BasicBlockIRImpl {
 public:
  BasicBlockIRSEImpl(int64_t in, int64_t depth, int64_t stride) : BasicBlockIRImpl(in, depth, stride, true) {}
};
class BottleneckIRImpl : public IRUnit {
 public:
  BottleneckIRImpl(int64_t in, int64_t depth, int64_t stride, bool se = false);
};
class BottleneckIRSEImpl : public BottleneckIRImpl {
 public:
  BottleneckIRSEImpl(int64_t in, int64_t depth, int64_t stride) : BottleneckIRImpl(in, depth, stride, true) {}
};

}  // namespace adaface

struct AdaFaceIROptions {
  explicit AdaFaceIROptions(int64_t num_layers = 18) : num_layers_(num_layers) {}
  TORCH_ARG(int64_t, num_layers);       // 18, 34, 50, 100, 152 or 200 (AdaFace_IR_101 is 100)
  TORCH_ARG(bool, se) = false;          // IR_SE: SELayer in every unit
  TORCH_ARG(int64_t, input_size) = 112; // 112 or 224: the Linear reads a 7x7 or 14x14 map
};

class AdaFaceIRImpl : public StoppableBackboneImpl {
 public:
  explicit AdaFaceIRImpl(AdaFaceIROptions options);
  const AdaFaceIROptions& options() const { return options_; }

 private:
  AdaFaceIROptions options_;
};
TORCH_MODULE(AdaFaceIR);

// Adds the AdaFace names to backbone_registry() (called by register_builtin_backbones).
void register_adaface_backbones();

}  // namespace featlearn
