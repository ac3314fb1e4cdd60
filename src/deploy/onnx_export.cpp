// A traced frozen graph converted node by node to ONNX opset 11 (docs/deploy.md, "ONNX export").
#include <featlearn/common/atomic_file.h>
#include <featlearn/common/error.h>
#include <featlearn/deploy/onnx_export.h>
#include <featlearn/deploy/traced_graph.h>
#include <onnx/checker.h>
#include <torch/csrc/jit/ir/constants.h>

#include <cmath>
#include <optional>
#include <unordered_map>
#include <vector>

namespace featlearn::deploy {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// An integer of the graph: a constant, or dimension `dim` of a runtime tensor (aten::size).
struct IntExpr {
  std::optional<int64_t> constant;
  const Value* tensor = nullptr;
  int64_t dim = 0;
};

std::vector<int64_t> static_sizes(const Value* v) {
  const auto t = v->type()->cast<c10::TensorType>();
  if (!t) return {};
  const auto s = t->sizes().concrete_sizes();
  return s ? *s : std::vector<int64_t>{};
}

class Converter {
 public:
  Converter(const torch::jit::Graph& graph, const OnnxExportOptions& options) : graph_(graph), options_(options) {}

  onnx::ModelProto run() {
    onnx::ModelProto model;
    model.set_ir_version(onnx::IR_VERSION);
    model.set_producer_name("featlearn");
    if (!options_.doc.empty()) model.set_doc_string(options_.doc);
    auto* opset = model.add_opset_import();
    opset->set_domain("");
    opset->set_version(kOnnxOpset);
    g_ = model.mutable_graph();
    g_->set_name(options_.graph_name);

    if (graph_.inputs().size() != 1 || graph_.outputs().size() != 1)
      throw Error("ONNX export: the traced graph must have one input and one output");
    const Value* in = graph_.inputs()[0];
    const auto in_sizes = static_sizes(in);
    if (in_sizes.size() != 4) throw Error("ONNX export: the traced input must be a [N, C, H, W] tensor with known sizes");
    names_[in] = options_.input_name;
    add_value_info(g_->add_input(), options_.input_name, in_sizes);

    for (const Node* node : graph_.nodes()) convert(node);

    const Value* out = graph_.outputs()[0];
    const auto it = names_.find(out);
    if (it == names_.end() || produced_.count(it->second) == 0)
      throw Error("ONNX export: the graph output is not computed from the input");
    rename(it->second, options_.output_name);
    const auto out_sizes = static_sizes(out);
    if (out_sizes.empty()) throw Error("ONNX export: the traced output has no known sizes");
    add_value_info(g_->add_output(), options_.output_name, out_sizes);
    return model;
  }

 private:
  const torch::jit::Graph& graph_;
  const OnnxExportOptions& options_;
  onnx::GraphProto* g_ = nullptr;
  std::unordered_map<const Value*, std::string> names_;            // runtime tensors and emitted constants
  std::unordered_map<const Value*, IntExpr> ints_;                 // aten::size results
  std::unordered_map<const Value*, std::vector<IntExpr>> int_lists_;
  std::unordered_map<const Value*, std::vector<const Value*>> tensor_lists_;
  std::unordered_map<std::string, int> used_names_;
  std::unordered_map<std::string, bool> produced_;                 // names that are node outputs
  const Node* node_ = nullptr;                                     // the node being converted

  static void add_value_info(onnx::ValueInfoProto* vi, const std::string& name, const std::vector<int64_t>& sizes) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    auto* shape = tt->mutable_shape();
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto* d = shape->add_dim();
      if (i == 0) d->set_dim_param("N");
      else d->set_dim_value(sizes[i]);
    }
  }

  std::string fresh(std::string base) {
    for (auto& c : base)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.') c = '_';
    const int n = used_names_[base]++;
    return n == 0 && base != options_.input_name && base != options_.output_name ? base
                                                                                  : base + "_" + std::to_string(n);
  }

  void rename(const std::string& from, const std::string& to) {
    for (auto& n : *g_->mutable_node()) {
      for (auto& s : *n.mutable_input())
        if (s == from) s = to;
      for (auto& s : *n.mutable_output())
        if (s == from) s = to;
    }
  }

  [[noreturn]] void fail(const std::string& why) const {
    const std::string module = module_of(node_);
    throw Error("ONNX export: " + std::string(node_->kind().toQualString()) +
                (module.empty() ? "" : " (module '" + module + "')") + ": " + why +
                " (docs/deploy.md lists the operations the ONNX exporter converts; export with --no-onnx to write "
                "the LibTorch model only)");
  }

  // --- operands -------------------------------------------------------------------------------------------
  static bool is_constant(const Value* v) { return v->node()->kind() == c10::prim::Constant; }
  c10::IValue constant(const Value* v) const {
    const auto iv = torch::jit::toIValue(v);
    if (!iv) fail("expected a constant operand (input '" + v->debugName() + "' is computed at run time)");
    return *iv;
  }
  bool is_none(const Value* v) const { return is_constant(v) && constant(v).isNone(); }
  int64_t int_of(const Value* v) const {
    const auto iv = constant(v);
    if (!iv.isInt()) fail("expected a constant integer operand");
    return iv.toInt();
  }
  double number_of(const Value* v) const {
    const auto iv = constant(v);
    if (iv.isDouble()) return iv.toDouble();
    if (iv.isInt()) return static_cast<double>(iv.toInt());
    if (iv.isBool()) return iv.toBool() ? 1.0 : 0.0;
    fail("expected a constant number operand");
  }
  bool bool_of(const Value* v) const {
    const auto iv = constant(v);
    if (!iv.isBool()) fail("expected a constant bool operand");
    return iv.toBool();
  }
  std::vector<int64_t> ints_of(const Value* v) const {
    const auto iv = constant(v);
    if (iv.isIntList()) return iv.toIntVector();
    if (iv.isInt()) return {iv.toInt()};
    fail("expected a constant integer list operand");
  }

  std::string initializer(const torch::Tensor& value, const std::string& base) {
    torch::Tensor t = value.detach().to(torch::kCPU).contiguous();
    auto* init = g_->add_initializer();
    const std::string name = fresh(base);
    init->set_name(name);
    for (const auto s : t.sizes()) init->add_dims(s);
    if (t.scalar_type() == torch::kLong) {
      init->set_data_type(onnx::TensorProto::INT64);
    } else if (t.is_floating_point()) {
      t = t.to(torch::kFloat32);
      init->set_data_type(onnx::TensorProto::FLOAT);
    } else {
      fail("constant of type " + std::string(c10::toString(t.scalar_type())) + " has no ONNX form here");
    }
    init->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
    return name;
  }
  std::string scalar(double v) { return initializer(torch::tensor({static_cast<float>(v)}), "scalar"); }
  std::string int64s(const std::vector<int64_t>& v) {
    return initializer(torch::tensor(v, torch::kLong), "shape");
  }

  // The ONNX name of a tensor operand: a runtime value, or a constant tensor / number as an initializer.
  std::string tensor(const Value* v) {
    const auto it = names_.find(v);
    if (it != names_.end()) return it->second;
    if (!is_constant(v)) fail("input '" + v->debugName() + "' comes from an operation that was not converted");
    const auto iv = constant(v);
    std::string name;
    if (iv.isTensor()) name = initializer(iv.toTensor(), v->hasDebugName() ? v->debugNameBase() : "const");
    else if (iv.isDouble() || iv.isInt()) name = scalar(number_of(v));
    else fail("constant operand of kind " + iv.tagKind() + " has no ONNX tensor form");
    names_[v] = name;
    return name;
  }

  onnx::NodeProto* emit(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(fresh(op));
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) {
      n->add_output(o);
      produced_[o] = true;
    }
    return n;
  }
  // An op with one output, a fresh name: returns the output name.
  std::string emit1(const std::string& op, const std::vector<std::string>& inputs, onnx::NodeProto** node = nullptr) {
    const std::string out = fresh(op + "_out");
    auto* n = emit(op, inputs, {out});
    if (node) *node = n;
    return out;
  }
  // The node's output `i` is ONNX value `name`.
  void bind(const std::string& name, size_t i = 0) { names_[node_->output(i)] = name; }
  // The node's output is computed by `op` on `inputs`.
  onnx::NodeProto* output(const std::string& op, const std::vector<std::string>& inputs) {
    onnx::NodeProto* n = nullptr;
    bind(emit1(op, inputs, &n));
    return n;
  }

  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (const auto x : v) a->add_ints(x);
  }

  // 2-D pooling / convolution pads [top, left, bottom, right] from PyTorch's symmetric [h, w].
  std::vector<int64_t> pads2d(std::vector<int64_t> p) const {
    if (p.size() == 1) p = {p[0], p[0]};
    if (p.size() != 2) fail("expected 2-D padding");
    return {p[0], p[1], p[0], p[1]};
  }
  std::vector<int64_t> pair(std::vector<int64_t> v, const std::vector<int64_t>& if_empty) const {
    if (v.empty()) return if_empty;
    if (v.size() == 1) return {v[0], v[0]};
    if (v.size() != 2) fail("expected a 2-D window");
    return v;
  }

  // --- conversion --------------------------------------------------------------------------------------------
  void convert(const Node* node) {
    node_ = node;
    const std::string kind = node->kind().toQualString();
    auto in = [&](size_t i) { return node->input(i); };
    auto unary = [&](const std::string& op) { output(op, {tensor(in(0))}); };

    if (kind == "prim::Constant") return;  // emitted where used
    if (kind == "prim::ListConstruct") {
      const auto& elem = node->output()->type()->expectRef<c10::ListType>().getElementType();
      if (elem->kind() == c10::TypeKind::TensorType) {
        auto& list = tensor_lists_[node->output()];
        for (const auto* v : node->inputs()) list.push_back(v);
      } else if (elem->kind() == c10::TypeKind::IntType) {
        auto& list = int_lists_[node->output()];
        for (const auto* v : node->inputs()) list.push_back(int_expr(v));
      } else {
        fail("list of " + elem->str() + " has no ONNX form here");
      }
      return;
    }
    if (kind == "aten::size") {
      const auto sizes = static_sizes(in(0));
      int64_t d = int_of(in(1));
      if (d < 0) d += static_cast<int64_t>(sizes.size());
      ints_[node->output()] = IntExpr{std::nullopt, in(0), d};
      return;
    }
    if (kind == "prim::NumToTensor" || kind == "aten::Int" || kind == "aten::ScalarImplicit") {
      if (ints_.count(in(0))) {
        ints_[node->output()] = ints_.at(in(0));
        return;
      }
      fail("integer computed at run time has no ONNX form here");
    }

    if (kind == "aten::_convolution" || kind == "aten::conv2d") return convolution(node, kind == "aten::_convolution");
    if (kind == "aten::addmm") {
      // Gemm(x, W, bias, transB=1) with the constant W = m2ᵀ in Linear's [out, in] layout: the form OpenCV's
      // importer reads (it takes a Gemm without transB for transB=1).
      const std::string b = is_constant(in(2)) && constant(in(2)).isTensor()
                                ? initializer(constant(in(2)).toTensor().t(), "gemm_weight")
                                : emit1("Transpose", {tensor(in(2))});
      auto* n = output("Gemm", {tensor(in(1)), b, tensor(in(0))});
      attr(n, "transB", int64_t{1});
      const double beta = number_of(in(3)), alpha = number_of(in(4));
      if (beta != 1.0) attr(n, "beta", static_cast<float>(beta));
      if (alpha != 1.0) attr(n, "alpha", static_cast<float>(alpha));
      return;
    }
    if (kind == "aten::linear") {
      if (static_sizes(in(0)).size() != 2) fail("linear on a tensor that is not [N, C]");
      std::vector<std::string> ins{tensor(in(0)), tensor(in(1))};
      if (!is_none(in(2))) ins.push_back(tensor(in(2)));
      attr(output("Gemm", ins), "transB", int64_t{1});
      return;
    }
    if (kind == "aten::matmul" || kind == "aten::mm") return unary_binary("MatMul");
    if (kind == "aten::t") {
      attr(output("Transpose", {tensor(in(0))}), "perm", std::vector<int64_t>{1, 0});
      return;
    }

    if (kind == "aten::relu") return unary("Relu");
    if (kind == "aten::sigmoid") return unary("Sigmoid");
    if (kind == "aten::tanh") return unary("Tanh");
    if (kind == "aten::sign") return unary("Sign");
    if (kind == "aten::abs") return unary("Abs");
    if (kind == "aten::neg") return unary("Neg");
    if (kind == "aten::exp") return unary("Exp");
    if (kind == "aten::sqrt") return unary("Sqrt");
    if (kind == "aten::floor") return unary("Floor");
    if (kind == "aten::round") {
      if (node->inputs().size() > 1) fail("round with decimals");
      return unary("Round");  // both round halves to even
    }
    if (kind == "aten::trunc") {
      // ONNX has no Trunc: sign(x)·floor(|x|).
      const std::string x = tensor(in(0));
      output("Mul", {emit1("Sign", {x}), emit1("Floor", {emit1("Abs", {x})})});
      return;
    }
    if (kind == "aten::hardsigmoid") {
      // HardSigmoid(alpha, beta) = clip(alpha·x + beta, 0, 1); PyTorch's is x/6 + 1/2.
      auto* n = output("HardSigmoid", {tensor(in(0))});
      attr(n, "alpha", 1.0f / 6.0f);
      attr(n, "beta", 0.5f);
      return;
    }
    if (kind == "aten::hardswish") {
      // HardSwish is opset 14: x · HardSigmoid(x) with PyTorch's slope 1/6.
      const std::string x = tensor(in(0));
      onnx::NodeProto* hs = nullptr;
      const std::string gate = emit1("HardSigmoid", {x}, &hs);
      attr(hs, "alpha", 1.0f / 6.0f);
      attr(hs, "beta", 0.5f);
      output("Mul", {x, gate});
      return;
    }
    if (kind == "aten::silu") {
      const std::string x = tensor(in(0));
      output("Mul", {x, emit1("Sigmoid", {x})});
      return;
    }
    if (kind == "aten::gelu") return gelu(node);
    if (kind == "aten::leaky_relu") {
      attr(output("LeakyRelu", {tensor(in(0))}), "alpha", static_cast<float>(number_of(in(1))));
      return;
    }
    // Clamps from Relu / HardSigmoid: OpenCV 4.6's importer reads Clip only in its opset-6 attribute form and Max
    // / Min only between two computed tensors.
    if (kind == "aten::hardtanh") return clamp(tensor(in(0)), number_of(in(1)), number_of(in(2)));
    if (kind == "aten::relu6") return clamp(tensor(in(0)), 0.0, 6.0);
    if (kind == "aten::clamp") return clamp(tensor(in(0)), clip_bound(in(1)), clip_bound(in(2)));
    if (kind == "aten::clamp_min") return clamp(tensor(in(0)), clip_bound(in(1)), std::nullopt);
    if (kind == "aten::clamp_max") return clamp(tensor(in(0)), std::nullopt, clip_bound(in(1)));

    if (kind == "aten::add" || kind == "aten::sub") {
      std::string b = tensor(in(1));
      if (node->inputs().size() > 2) {
        const double alpha = number_of(in(2));
        if (alpha != 1.0) b = emit1("Mul", {b, scalar(alpha)});
      }
      output(kind == "aten::add" ? "Add" : "Sub", {tensor(in(0)), b});
      return;
    }
    if (kind == "aten::rsub") {
      std::string a = tensor(in(0));
      if (node->inputs().size() > 2 && number_of(in(2)) != 1.0) a = emit1("Mul", {a, scalar(number_of(in(2)))});
      output("Sub", {tensor(in(1)), a});
      return;
    }
    if (kind == "aten::mul") {
      // A [N, C, 1, 1] gate times [N, C, H, W] (squeeze-and-excitation): the gate is repeated to H x W first
      // (nearest Resize, an exact copy), because OpenCV 4.6 does not broadcast two computed tensors.
      const auto a = static_sizes(in(0)), b = static_sizes(in(1));
      if (!is_constant(in(0)) && !is_constant(in(1)) && a.size() == 4 && b.size() == 4 && a != b) {
        const bool b_gate = b[2] == 1 && b[3] == 1 && a[1] == b[1];
        const bool a_gate = a[2] == 1 && a[3] == 1 && a[1] == b[1];
        if (b_gate || a_gate) {
          const auto& full = b_gate ? a : b;
          const std::string gate = tensor(b_gate ? in(1) : in(0)), x = tensor(b_gate ? in(0) : in(1));
          onnx::NodeProto* r = nullptr;
          const std::string repeated =
              emit1("Resize", {gate, initializer(torch::zeros({0}), "roi"),
                               initializer(torch::tensor({1.0f, 1.0f, static_cast<float>(full[2]),
                                                          static_cast<float>(full[3])}), "scales")}, &r);
          auto* mode = r->add_attribute();
          mode->set_name("mode");
          mode->set_type(onnx::AttributeProto::STRING);
          mode->set_s("nearest");
          output("Mul", {x, repeated});
          return;
        }
      }
      return unary_binary("Mul");
    }
    if (kind == "aten::div") {
      if (node->inputs().size() > 2 && !is_none(in(2))) fail("div with a rounding mode");
      return unary_binary("Div");
    }
    if (kind == "aten::eq") return unary_binary("Equal");
    if (kind == "aten::where") {
      if (node->inputs().size() != 3) fail("where with one operand");
      output("Where", {tensor(in(0)), tensor(in(1)), tensor(in(2))});
      return;
    }
    if (kind == "aten::expand_as") return expand_as(node);

    if (kind == "aten::max_pool2d") {
      const auto k = pair(ints_of(in(1)), {});
      auto* n = output("MaxPool", {tensor(in(0))});
      attr(n, "kernel_shape", k);
      attr(n, "strides", pair(ints_of(in(2)), k));
      attr(n, "pads", pads2d(ints_of(in(3))));
      const auto dil = pair(ints_of(in(4)), {1, 1});
      if (dil != std::vector<int64_t>{1, 1}) attr(n, "dilations", dil);
      if (bool_of(in(5))) attr(n, "ceil_mode", int64_t{1});
      return;
    }
    if (kind == "aten::avg_pool2d") {
      const auto k = pair(ints_of(in(1)), {});
      const auto pads = pads2d(ints_of(in(3)));
      const bool ceil = bool_of(in(4)), include_pad = bool_of(in(5));
      if (node->inputs().size() > 6 && !is_none(in(6))) fail("avg_pool2d with divisor_override");
      const bool padded = pads != std::vector<int64_t>{0, 0, 0, 0};
      // Without padding both count_include_pad modes divide by the in-bounds window (PyTorch does not count a
      // ceil_mode overhang); with padding and ceil_mode PyTorch's divisor counts the padding but not the
      // overhang, which ONNX's count_include_pad cannot say.
      if (padded && ceil && include_pad) fail("avg_pool2d with padding, ceil_mode and count_include_pad");
      auto* n = output("AveragePool", {tensor(in(0))});
      attr(n, "kernel_shape", k);
      attr(n, "strides", pair(ints_of(in(2)), k));
      attr(n, "pads", pads);
      if (ceil) attr(n, "ceil_mode", int64_t{1});
      if (padded && include_pad) attr(n, "count_include_pad", int64_t{1});
      return;
    }
    if (kind == "aten::adaptive_avg_pool2d" || kind == "aten::adaptive_max_pool2d") return adaptive_pool(node);
    if (kind == "aten::mean" || kind == "aten::sum") return reduce(node, kind == "aten::mean" ? "ReduceMean" : "ReduceSum");
    if (kind == "aten::norm" || kind == "aten::linalg_vector_norm") return norm(node);
    if (kind == "aten::softmax") {
      const auto sizes = static_sizes(in(0));
      int64_t d = int_of(in(1));
      if (d < 0) d += static_cast<int64_t>(sizes.size());
      // Opset 11's Softmax normalizes over all axes from `axis` on: PyTorch's only for the last axis.
      if (sizes.empty() || d != static_cast<int64_t>(sizes.size()) - 1) fail("softmax over an axis that is not the last");
      attr(output("Softmax", {tensor(in(0))}), "axis", d);
      return;
    }
    if (kind == "aten::flatten") return flatten(node);
    if (kind == "aten::reshape" || kind == "aten::view") return reshape(node, in(1));
    if (kind == "aten::cat") {
      const auto it = tensor_lists_.find(in(0));
      if (it == tensor_lists_.end()) fail("cat of a list that is not built in the graph");
      std::vector<std::string> ins;
      for (const auto* v : it->second) ins.push_back(tensor(v));
      int64_t d = int_of(in(1));
      if (d < 0) d += static_cast<int64_t>(static_sizes(node->output()).size());
      attr(output("Concat", ins), "axis", d);
      return;
    }
    if (kind == "aten::batch_norm") return batch_norm(node);
    if (kind == "aten::dropout" || kind == "aten::feature_dropout" || kind == "aten::alpha_dropout") {
      if (bool_of(in(2))) fail("dropout in training mode (export a model in eval mode)");
      return bind(tensor(in(0)));
    }
    if (kind == "aten::contiguous" || kind == "aten::detach" || kind == "aten::clone") return bind(tensor(in(0)));
    if (kind == "aten::to" || kind == "aten::type_as") {
      const auto t = node->output()->type()->cast<c10::TensorType>();
      if (!t || t->scalarType() != c10::kFloat) fail("conversion to a type other than float32");
      return bind(tensor(in(0)));
    }
    fail("this operation has no ONNX form in featlearn's exporter");
  }

  IntExpr int_expr(const Value* v) const {
    const auto it = ints_.find(v);
    if (it != ints_.end()) return it->second;
    return IntExpr{int_of(v)};
  }

  std::optional<double> clip_bound(const Value* v) const {
    if (is_none(v)) return std::nullopt;
    if (is_constant(v) && !constant(v).isTensor()) return number_of(v);
    if (is_constant(v) && constant(v).toTensor().numel() == 1) return constant(v).toTensor().item<double>();
    fail("clamp with a tensor bound");
  }
  // clamp(x, 0, 1) = HardSigmoid(x; 1, 0) and clamp(x, 0) = Relu(x) exactly; other bounds c as
  // Relu(x − c) + c and c − Relu(c − x), exact up to the rounding of the subtraction (|error| ≤ ulp(|c|)).
  void clamp(std::string x, std::optional<double> lo, std::optional<double> hi) {
    if (lo && hi && *lo == 0.0 && *hi == 1.0) {
      onnx::NodeProto* n = nullptr;
      bind(emit1("HardSigmoid", {x}, &n));
      attr(n, "alpha", 1.0f);
      attr(n, "beta", 0.0f);
      return;
    }
    if (lo) {
      if (*lo == 0.0) x = emit1("Relu", {x});
      else x = emit1("Add", {emit1("Relu", {emit1("Add", {x, scalar(-*lo)})}), scalar(*lo)});
    }
    if (hi) {
      const std::string r = emit1("Relu", {emit1("Add", {emit1("Mul", {x, scalar(-1.0)}), scalar(*hi)})});
      x = emit1("Add", {emit1("Mul", {r, scalar(-1.0)}), scalar(*hi)});
    }
    bind(x);
  }

  void unary_binary(const std::string& op) { output(op, {tensor(node_->input(0)), tensor(node_->input(1))}); }

  void convolution(const Node* node, bool full) {
    // _convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups, ...);
    // conv2d(input, weight, bias, stride, padding, dilation, groups).
    if (full && bool_of(node->input(6))) fail("transposed convolution");
    const Value* w = node->input(1);
    const auto wt = constant(w);
    if (!wt.isTensor() || wt.toTensor().dim() != 4) fail("convolution whose weight is not a constant 4-D tensor");
    if (!full && !constant(node->input(4)).isIntList()) fail("convolution with string padding");
    std::vector<std::string> ins{tensor(node->input(0)), tensor(w)};
    if (!is_none(node->input(2))) ins.push_back(tensor(node->input(2)));
    auto* n = output("Conv", ins);
    const auto ws = wt.toTensor().sizes();
    attr(n, "kernel_shape", std::vector<int64_t>{ws[2], ws[3]});
    attr(n, "strides", pair(ints_of(node->input(3)), {1, 1}));
    attr(n, "pads", pads2d(ints_of(node->input(4))));
    attr(n, "dilations", pair(ints_of(node->input(5)), {1, 1}));
    attr(n, "group", int_of(node->input(full ? 8 : 6)));
  }

  void gelu(const Node* node) {
    std::string approximate = "none";
    if (node->inputs().size() > 1) approximate = constant(node->input(1)).toStringRef();
    const std::string x = tensor(node->input(0));
    if (approximate == "none") {
      // 0.5·x·(1 + erf(x/√2))
      const std::string e = emit1("Erf", {emit1("Div", {x, scalar(std::sqrt(2.0))})});
      output("Mul", {emit1("Mul", {x, scalar(0.5)}), emit1("Add", {e, scalar(1.0)})});
    } else if (approximate == "tanh") {
      // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
      const std::string x3 = emit1("Mul", {x, emit1("Mul", {x, x})});
      const std::string inner = emit1("Mul", {emit1("Add", {x, emit1("Mul", {x3, scalar(0.044715)})}),
                                              scalar(std::sqrt(2.0 / M_PI))});
      output("Mul", {emit1("Mul", {x, scalar(0.5)}), emit1("Add", {emit1("Tanh", {inner}), scalar(1.0)})});
    } else {
      fail("gelu with approximate='" + approximate + "'");
    }
  }

  void expand_as(const Node* node) {
    const Value* target = node->input(1);
    const auto from = static_sizes(node->input(0)), to = static_sizes(target);
    if (from.size() == 2 && to.size() == 2 && from[1] == 1) {
      // [N, 1] -> [N, D] (the norm of F.normalize) as a product with a row of ones: exact, and the form OpenCV
      // 4.6 reads (it does not broadcast a [N, 1] divisor).
      auto* n = output("Gemm", {tensor(node->input(0)), initializer(torch::ones({to[1], 1}), "ones")});
      attr(n, "transB", int64_t{1});
      return;
    }
    // x.expand_as(y) feeding elementwise operations with y is broadcasting: the expansion is dropped.
    for (const auto& use : node->output()->uses()) {
      const std::string k = use.user->kind().toQualString();
      const bool elementwise = k == "aten::div" || k == "aten::mul" || k == "aten::add" || k == "aten::sub";
      const Value* other = use.user->input(use.offset == 0 ? 1 : 0);
      if (!elementwise || use.offset > 1 || other != target)
        fail("expand_as whose result is not only broadcast against its target");
    }
    bind(tensor(node->input(0)));
  }

  void adaptive_pool(const Node* node) {
    const bool avg = node->kind().toQualString() == std::string("aten::adaptive_avg_pool2d");
    if (!avg && node->outputs().size() > 1 && node->output(1)->hasUses()) fail("adaptive_max_pool2d indices");
    const auto out = pair(ints_of(node->input(1)), {});
    if (out == std::vector<int64_t>{1, 1}) {
      output(avg ? "GlobalAveragePool" : "GlobalMaxPool", {tensor(node->input(0))});
      return;
    }
    const auto sizes = static_sizes(node->input(0));
    if (sizes.size() != 4 || sizes[2] % out[0] != 0 || sizes[3] % out[1] != 0)
      fail("adaptive pooling to " + std::to_string(out[0]) + "x" + std::to_string(out[1]) +
           " is expressible only as a fixed window when the input size is a multiple of it");
    const std::vector<int64_t> k{sizes[2] / out[0], sizes[3] / out[1]};
    auto* n = output(avg ? "AveragePool" : "MaxPool", {tensor(node->input(0))});
    attr(n, "kernel_shape", k);
    attr(n, "strides", k);
  }

  std::vector<int64_t> axes(const Value* dims, const Value* x) const {
    auto a = ints_of(dims);
    const auto rank = static_cast<int64_t>(static_sizes(x).size());
    for (auto& d : a)
      if (d < 0) d += rank;
    if (a.empty()) fail("reduction over all axes would include the batch");
    for (const auto d : a)
      if (d == 0) fail("reduction over the batch axis");
    return a;
  }

  void reduce(const Node* node, const std::string& op) {
    // mean/sum(x, dims, keepdim, dtype)
    if (node->inputs().size() < 3) fail("reduction over all axes would include the batch");
    if (node->inputs().size() > 3 && !is_none(node->input(3))) fail("reduction with a dtype");
    const auto a = axes(node->input(1), node->input(0));
    const bool keep = bool_of(node->input(2));
    if (op == "ReduceMean" && keep && static_sizes(node->input(0)).size() == 4 && a == std::vector<int64_t>{2, 3}) {
      output("GlobalAveragePool", {tensor(node->input(0))});
      return;
    }
    auto* n = output(op, {tensor(node->input(0))});
    attr(n, "axes", a);
    attr(n, "keepdims", int64_t{keep ? 1 : 0});
  }

  void norm(const Node* node) {
    // norm(x, p, dim, keepdim) / linalg_vector_norm(x, ord, dim, keepdim, dtype)
    if (node->inputs().size() < 4) fail("norm over all axes would include the batch");
    if (node->inputs().size() > 4 && !is_none(node->input(4))) fail("norm with a dtype");
    const double p = number_of(node->input(1));
    if (p != 2.0 && p != 1.0) fail("norm with p other than 1 or 2");
    const auto sizes = static_sizes(node->input(0));
    if (sizes.size() == 2 && bool_of(node->input(3)) && axes(node->input(2), node->input(0)) == std::vector<int64_t>{1}) {
      // The norm of [N, D] features (F.normalize) as a product with a column of ones, the form OpenCV 4.6 reads
      // (its ReduceL2 loses a dynamic batch): sqrt((x·x) 1) or |x| 1.
      const std::string x = tensor(node->input(0));
      const std::string terms = p == 2.0 ? emit1("Mul", {x, x}) : emit1("Abs", {x});
      onnx::NodeProto* gemm = nullptr;
      const std::string sum = emit1("Gemm", {terms, initializer(torch::ones({1, sizes[1]}), "ones")}, &gemm);
      attr(gemm, "transB", int64_t{1});
      if (p == 2.0) output("Sqrt", {sum});
      else bind(sum);
      return;
    }
    auto* n = output(p == 2.0 ? "ReduceL2" : "ReduceL1", {tensor(node->input(0))});
    attr(n, "axes", axes(node->input(2), node->input(0)));
    attr(n, "keepdims", int64_t{bool_of(node->input(3)) ? 1 : 0});
  }

  void flatten(const Node* node) {
    const auto sizes = static_sizes(node->input(0));
    const auto rank = static_cast<int64_t>(sizes.size());
    if (rank == 0) fail("flatten of a tensor without known sizes");
    int64_t s = int_of(node->input(1)), e = int_of(node->input(2));
    if (s < 0) s += rank;
    if (e < 0) e += rank;
    if (s == e) return bind(tensor(node->input(0)));
    if (s == 1 && e == rank - 1) {
      attr(output("Flatten", {tensor(node->input(0))}), "axis", int64_t{1});
      return;
    }
    if (s == 0) fail("flatten over the batch axis");
    // Other ranges: a reshape keeping the batch (0 = copy the input's dimension) and the static sizes.
    std::vector<int64_t> shape{0};
    for (int64_t i = 1; i < s; ++i) shape.push_back(sizes[i]);
    int64_t p = 1;
    for (int64_t i = s; i <= e; ++i) p *= sizes[i];
    shape.push_back(p);
    for (int64_t i = e + 1; i < rank; ++i) shape.push_back(sizes[i]);
    output("Reshape", {tensor(node->input(0)), int64s(shape)});
  }

  void reshape(const Node* node, const Value* shape_value) {
    const Value* x = node->input(0);
    const auto in_sizes = static_sizes(x);
    std::vector<IntExpr> shape;
    if (int_lists_.count(shape_value)) shape = int_lists_.at(shape_value);
    else
      for (const auto d : ints_of(shape_value)) shape.push_back(IntExpr{d});
    if (shape.empty() || in_sizes.empty()) fail("reshape of a tensor without known sizes");
    // The batch must stay symbolic: position 0 is x.size(0) (ONNX 0 copies it) or -1 with static other sizes.
    std::vector<int64_t> onnx_shape;
    for (size_t i = 0; i < shape.size(); ++i) {
      const auto& e = shape[i];
      if (!e.constant) {
        const auto src = static_sizes(e.tensor);
        if (i < in_sizes.size() && e.dim == static_cast<int64_t>(i) && (i > 0 || e.dim == 0)) {
          onnx_shape.push_back(0);
          continue;
        }
        if (e.dim > 0 && e.dim < static_cast<int64_t>(src.size())) {
          onnx_shape.push_back(src[e.dim]);  // a non-batch dimension: static
          continue;
        }
        fail("reshape to a size computed from the batch");
      }
      if (i == 0 && *e.constant != -1)
        fail("reshape with a fixed batch size " + std::to_string(*e.constant) +
             " (write x.reshape({x.size(0), ...}) so the batch stays dynamic)");
      onnx_shape.push_back(*e.constant);
    }
    if (onnx_shape[0] == -1)
      for (size_t i = 1; i < onnx_shape.size(); ++i)
        if (onnx_shape[i] == -1) fail("reshape with two unknown sizes");
    output("Reshape", {tensor(x), int64s(onnx_shape)});
  }

  void batch_norm(const Node* node) {
    // batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
    if (bool_of(node->input(5))) fail("batch_norm in training mode (export a model in eval mode)");
    const auto mean = constant(node->input(3)), var = constant(node->input(4));
    if (!mean.isTensor() || !var.isTensor()) fail("batch_norm without running statistics");
    const auto c = mean.toTensor().numel();
    const std::string w = is_none(node->input(1)) ? initializer(torch::ones({c}), "bn_scale") : tensor(node->input(1));
    const std::string b = is_none(node->input(2)) ? initializer(torch::zeros({c}), "bn_bias") : tensor(node->input(2));
    auto* n = output("BatchNormalization", {tensor(node->input(0)), w, b, tensor(node->input(3)), tensor(node->input(4))});
    attr(n, "epsilon", static_cast<float>(number_of(node->input(7))));
  }
};

}  // namespace

onnx::ModelProto graph_to_onnx(const torch::jit::Graph& graph, const OnnxExportOptions& options) {
  return Converter(graph, options).run();
}

void check_onnx(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw Error(std::string("ONNX export: onnx::checker rejects the model: ") + e.what());
  }
}

void save_onnx(const onnx::ModelProto& model, const std::string& path) {
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error(path + ": cannot serialize the ONNX model");
  write_file_atomic(path, bytes);
}

}  // namespace featlearn::deploy
