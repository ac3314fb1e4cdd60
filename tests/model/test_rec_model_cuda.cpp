// RecModel on CUDA (runs where LibTorch sees a GPU; skipped elsewhere): eval features match the CPU model and
// a training step with the seed recipe's head runs and changes the weights.
#include <featlearn/config/config.h>
#include <featlearn/model/rec_model.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace featlearn;

namespace {
const char* kArch = R"(Arch:
  name: RecModel
  Backbone: {name: ResNet18, pretrained: False}
  BackboneStopLayer: {name: avg_pool}
  Neck: {name: VehicleNeck, in_channels: 512, out_channels: 64}
  Head: {name: ArcMargin, embedding_size: 64, class_num: 10, margin: 0.15, scale: 32}
)";
}

TEST(RecModelCuda, MatchesCpuAndTrains) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto cfg = Config::from_string(kArch, "cuda.yaml");
  torch::manual_seed(0);
  RecModel cpu(cfg["Arch"]);
  RecModel gpu(cfg["Arch"]);
  {
    torch::NoGradGuard ng;
    auto src = cpu->named_parameters();
    for (auto& p : gpu->named_parameters()) p.value().copy_(src[p.key()]);
    auto srcb = cpu->named_buffers();
    for (auto& b : gpu->named_buffers()) b.value().copy_(srcb[b.key()]);
  }
  gpu->to(torch::kCUDA);
  cpu->eval();
  gpu->eval();
  auto x = torch::randn({4, 3, 64, 64});
  {
    torch::NoGradGuard ng;
    auto fc = cpu->forward(x).features;
    auto fg = gpu->forward(x.cuda()).features.cpu();
    EXPECT_LT((fc - fg).abs().max().item<double>(), 1e-2 * (1 + fc.abs().max().item<double>()));
  }
  gpu->train();
  auto labels = torch::tensor({0, 0, 1, 1}, torch::kInt64).cuda();
  auto out = gpu->forward(x.cuda(), labels);
  ASSERT_EQ(out.logits.device().type(), torch::kCUDA);
  auto loss = torch::nn::functional::cross_entropy(out.logits, labels);
  torch::optim::SGD opt(gpu->parameters(), torch::optim::SGDOptions(0.1));
  auto before = gpu->named_parameters()["head.weight"].detach().clone();
  opt.zero_grad();
  loss.backward();
  opt.step();
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_GT((gpu->named_parameters()["head.weight"].detach() - before).abs().max().item<double>(), 0.0);
}
