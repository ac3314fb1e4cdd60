// InferenceModel::embed on the CPU through the optimized frozen graph equals the eager forward
// (docs/deploy.md, "Fast extraction").
#include <featlearn/deploy/cpu_graph.h>
#include <featlearn/engine/inference_model.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <thread>

using namespace featlearn;

namespace {

// An InferenceModel as InferenceModel::load builds it, from an Arch YAML, with random weights and non-trivial
// BatchNorm statistics (so that folding them changes the weights).
InferenceModel make_model(const std::string& arch_yaml, std::vector<int64_t> shape, bool normalize = true,
                          const std::string& binarize = "") {
  torch::manual_seed(7);
  InferenceModel m{Config::from_string(arch_yaml, "arch.yaml")};
  m.model = RecModel(m.spec.root()["Arch"], shape);
  {
    torch::NoGradGuard ng;
    for (auto& b : m.model->named_buffers(true)) {
      if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    }
    for (auto& p : m.model->named_parameters(true))
      if (p.key().find("bn") != std::string::npos || p.key().find("norm") != std::string::npos)
        p.value().uniform_(0.5, 1.5);
  }
  m.model->eval();
  m.output_key = m.model->infer_output_key();
  m.add_softmax = m.model->infer_add_softmax();
  m.feature_normalize = normalize;
  m.feature_binarize = binarize;
  return m;
}

torch::Tensor eager_embed(InferenceModel& m, const torch::Tensor& x) {
  setenv("FEATLEARN_EAGER", "1", 1);
  auto out = m.embed(x);
  unsetenv("FEATLEARN_EAGER");
  return out;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

const char* kResNet18 =
    "Arch: {name: RecModel, Backbone: {name: ResNet18, pretrained: False}, BackboneStopLayer: {name: flatten},"
    " Neck: {name: FC, embedding_size: 512, class_num: 16}}\n";

}  // namespace

TEST(FastExtraction, ResNet18EqualsEagerForSeveralBatchSizesAndShapes) {
  auto m = make_model(kResNet18, {3, 32, 32});
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 3, 32, 32}, {4, 3, 32, 32}, {3, 3, 48, 40}}) {
    const auto x = torch::randn(shape);
    const auto fast = m.embed(x);
    ASSERT_TRUE(m.cpu_graph);
    EXPECT_TRUE(m.cpu_graph->uses_graph(x)) << x.sizes();
    EXPECT_LE(max_diff(fast, eager_embed(m, x)), 1e-5) << x.sizes();
    EXPECT_EQ(fast.size(1), 16);
  }
}

TEST(FastExtraction, PPLCNetEqualsEager) {
  auto m = make_model(
      "Arch: {name: RecModel, Backbone: {name: PPLCNet_x0_25, pretrained: False},"
      " BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 1280, class_num: 8}}\n",
      {3, 32, 32});
  const auto x = torch::randn({2, 3, 32, 32});
  const auto fast = m.embed(x);
  EXPECT_TRUE(m.cpu_graph->uses_graph(x));
  EXPECT_LE(max_diff(fast, eager_embed(m, x)), 1e-5);
}

TEST(FastExtraction, BNNeckEqualsEager) {
  auto m = make_model(
      "Arch: {name: RecModel, Backbone: {name: ResNet18, pretrained: False}, BackboneStopLayer: {name: flatten},"
      " Neck: {name: BNNeck, num_features: 512}}\n",
      {3, 32, 32});
  const auto x = torch::randn({3, 3, 32, 32});
  const auto fast = m.embed(x);
  EXPECT_TRUE(m.cpu_graph->uses_graph(x));
  EXPECT_LE(max_diff(fast, eager_embed(m, x)), 1e-5);
}

TEST(FastExtraction, SoftmaxLogitsEqualEager) {
  auto m = make_model(
      "Arch: {name: RecModel, infer_output_key: logits, infer_add_softmax: True,"
      " Backbone: {name: ResNet18, pretrained: False}, BackboneStopLayer: {name: flatten},"
      " Neck: {name: FC, embedding_size: 512, class_num: 16}, Head: {name: FC, embedding_size: 16, class_num: 5}}\n",
      {3, 32, 32});
  ASSERT_EQ(m.output_key, "logits");
  ASSERT_TRUE(m.add_softmax);
  const auto x = torch::randn({2, 3, 32, 32});
  const auto fast = m.embed(x);
  EXPECT_EQ(fast.size(1), 5);
  EXPECT_LE(max_diff(fast.sum(1), torch::ones({2})), 1e-5);  // softmaxed
  EXPECT_LE(max_diff(fast, eager_embed(m, x)), 1e-5);
}

TEST(FastExtraction, BinarizedFeaturesEqualEager) {
  for (const std::string binarize : {"sign", "round"}) {
    auto m = make_model(kResNet18, {3, 32, 32}, /*normalize=*/true, binarize);
    const auto x = torch::randn({4, 3, 32, 32});
    const auto fast = m.embed(x);
    EXPECT_EQ(fast.abs().min().item<float>(), 1.0f) << binarize;  // every value is +-1
    EXPECT_EQ(max_diff(fast, eager_embed(m, x)), 0.0) << binarize;
  }
}

TEST(FastExtraction, ConcurrentCallsFromFourThreadsEqualEager) {
  auto m = make_model(kResNet18, {3, 32, 32});
  std::vector<torch::Tensor> inputs, want, got(4);
  for (int i = 0; i < 4; ++i) {
    inputs.push_back(torch::randn({1 + i, 3, 32, 32}));
    want.push_back(eager_embed(m, inputs.back()));
  }
  EXPECT_FALSE(m.cpu_graph);  // FEATLEARN_EAGER=1 built no graph
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 2; ++rep) got[i] = m.embed(inputs[i]);
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_LE(max_diff(got[i], want[i]), 1e-5) << i;
  EXPECT_TRUE(m.cpu_graph->uses_graph(inputs[0]));
}
