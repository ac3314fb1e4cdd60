// optimize_for_cpu's passes and FrozenForward (docs/deploy.md, "Fast extraction") on a small conv net.
#include <featlearn/deploy/cpu_graph.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace featlearn::deploy;

namespace {

// conv-BN-ReLU, a residual add, then two linears on the pooled features: every pass has something to do.
struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d c1{nullptr}, c2{nullptr};
  torch::nn::BatchNorm2d b1{nullptr}, b2{nullptr};
  torch::nn::Linear l1{nullptr}, l2{nullptr};
  NetImpl() {
    c1 = register_module("c1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)));
    b1 = register_module("b1", torch::nn::BatchNorm2d(8));
    c2 = register_module("c2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1)));
    b2 = register_module("b2", torch::nn::BatchNorm2d(8));
    l1 = register_module("l1", torch::nn::Linear(8, 4));
    l2 = register_module("l2", torch::nn::Linear(8, 4));
    torch::NoGradGuard ng;
    for (auto* b : {&b1, &b2}) {
      (*b)->running_mean.uniform_(-0.3, 0.3);
      (*b)->running_var.uniform_(0.5, 2.0);
      (*b)->weight.uniform_(0.5, 1.5);
      (*b)->bias.uniform_(-0.2, 0.2);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = torch::relu(b1(c1(x)));
    y = torch::relu(b2(c2(y)) + y);
    y = torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
    return torch::cat({l1(y), l2(y)}, 1);
  }
};
TORCH_MODULE(Net);

CpuGraphOptions all_passes() {
  CpuGraphOptions o;
  o.conv_add_relu = o.concat_linear = o.linear_transpose = o.mkldnn = o.channels_last = true;
  return o;
}

}  // namespace

TEST(CpuGraph, EachPassKeepsTheOutput) {
  torch::manual_seed(3);
  Net net;
  net->eval();
  auto fn = [&](const torch::Tensor& x) { return net->forward(x); };
  const auto x = torch::randn({3, 3, 12, 10});
  torch::Tensor want;
  {
    torch::NoGradGuard ng;
    want = fn(x);
  }
  // [0] the defaults, [1] no pass, [2..4] one pass each without oneDNN, [5] oneDNN with channels_last input,
  // [6] every pass.
  std::vector<CpuGraphOptions> variants(7);
  for (int i = 1; i <= 4; ++i) variants[i].mkldnn = false;
  variants[1].fold_batch_norms = false;
  variants[2].conv_add_relu = true;
  variants[3].concat_linear = true;
  variants[4].linear_transpose = true;
  variants[5].channels_last = true;
  variants[6] = all_passes();
  for (size_t i = 0; i < variants.size(); ++i) {
    auto g = trace_frozen(fn, *net, x.slice(0, 0, 2));
    ASSERT_EQ(count_nodes(*g, "aten::batch_norm"), 2);
    ASSERT_EQ(count_nodes(*g, "aten::linear"), 0);
    optimize_for_cpu(g, variants[i]);
    EXPECT_EQ(count_nodes(*g, "aten::batch_norm"), variants[i].fold_batch_norms ? 0 : 2) << i;
    // The C++ tracer records a Linear as aten::addmm (its weight's transpose folded into a constant), not
    // aten::linear, so the two linear passes find nothing to rewrite (docs/deploy.md, "Fast extraction").
    if (i == 3 || i == 4) EXPECT_EQ(count_nodes(*g, "aten::addmm"), 2) << i;
    if (i == 0) EXPECT_GT(count_nodes(*g, "aten::to_mkldnn"), 0);
    GraphRunner run(g);
    const auto got = run(variants[i].channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5) << i;
  }
}

TEST(CpuGraph, FrozenForwardTracesOncePerShapeAndAnyBatchSize) {
  torch::manual_seed(4);
  Net net;
  net->eval();
  int calls = 0;
  FrozenForward fast([&](const torch::Tensor& x) { ++calls; return net->forward(x); }, *net, all_passes());
  torch::NoGradGuard ng;
  for (int64_t n : {1, 5, 2}) {
    const auto x = torch::randn({n, 3, 12, 10});
    EXPECT_LE((fast(x) - net->forward(x)).abs().max().item<double>(), 1e-5) << n;
  }
  EXPECT_EQ(calls, 2);  // the trace and the check, once for [3, 12, 10]
  EXPECT_TRUE(fast.uses_graph(torch::zeros({7, 3, 12, 10})));
  const auto other = torch::randn({2, 3, 9, 9});
  EXPECT_LE((fast(other) - net->forward(other)).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(calls, 4);
}

TEST(CpuGraph, FrozenForwardRunsEagerWhenTheTraceBakesInTheBatchSize) {
  torch::manual_seed(5);
  Net net;
  net->eval();
  // x.size(0) is a constant to the C++ tracer: the graph would always reshape to the traced batch size.
  auto fn = [&](const torch::Tensor& x) { return net->forward(x).reshape({x.size(0), -1}) * 2; };
  FrozenForward fast(fn, *net);
  const auto x = torch::randn({4, 3, 8, 8});
  EXPECT_FALSE(fast.uses_graph(x));
  torch::NoGradGuard ng;
  EXPECT_LE((fast(x) - fn(x)).abs().max().item<double>(), 0.0);
}
