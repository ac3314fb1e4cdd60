// Global.pretrained_model / Global.checkpoints naming a PaddleClas checkpoint (<prefix>.pdparams): weights are
// loaded through the Paddle name mapping; resuming (optimizer state, .pdopt) is refused with a clear error.
#include <featlearn/engine/checkpoint.h>

#include <featlearn/common/error.h>
#include <featlearn/config/config.h>
#include <featlearn/model/rec_model.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../fixture_path.h"
#include <torch/torch.h>

#include <fstream>

using namespace featlearn;

namespace {

RecModel make_model() {
  static const char* kArch = R"(Arch:
  name: RecModel
  Backbone: {name: ResNet50}
  Neck: {name: FC, embedding_size: 2048, class_num: 512}
  Head: {name: ArcMargin, embedding_size: 512, class_num: 100}
)";
  auto cfg = Config::from_string(kArch, "test.yaml");
  return RecModel(cfg["Arch"]);
}

double wsum(const torch::Tensor& t) {
  const auto flat = t.detach().to(torch::kDouble).contiguous().flatten();
  return (flat * (torch::remainder(torch::arange(flat.numel(), torch::kDouble), 7) - 3)).sum().item<double>();
}

}  // namespace

TEST(PaddleCheckpoint, PrefixWithOrWithoutSuffixLoadsTheWeights) {
  const std::string file = fixture("pdparams/rec_resnet50_fc_arcmargin.pdparams");
  const std::string prefix = file.substr(0, file.size() - std::string(".pdparams").size());
  EXPECT_EQ(paddle_checkpoint_file(prefix), file);
  EXPECT_EQ(paddle_checkpoint_file(file), file);
  EXPECT_EQ(paddle_checkpoint_file(fixture("pdparams") + "/no_such_run"), "");  // a featlearn prefix

  std::ifstream in(fixture("pdparams/rec_resnet50_fc_arcmargin.expected.json"));
  const auto exp = nlohmann::json::parse(in);
  for (const std::string& p : {prefix, file}) {
    auto model = make_model();
    const auto loaded = load_checkpoint(p, *model, nullptr, nullptr);
    EXPECT_EQ(loaded.path, file);
    const auto params = model->named_parameters(true);
    for (const std::string name : {"neck.fc.weight", "head.weight", "backbone.layer4.2.bn3.weight"}) {
      const double want = exp.at(name).at("wsum").get<double>();
      EXPECT_NEAR(wsum(params[name]), want, 1e-5 * (1 + std::abs(want))) << name;
    }
  }
}

TEST(PaddleCheckpoint, ResumingFromAPaddleCheckpointIsRefused) {
  const std::string file = fixture("pdparams/rec_resnet50_fc_arcmargin.pdparams");
  auto model = make_model();
  try {
    load_checkpoint(file, *model, nullptr, [](torch::serialize::InputArchive&) {});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    EXPECT_NE(msg.find(".pdopt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Global.pretrained_model"), std::string::npos) << msg;
  }
}
