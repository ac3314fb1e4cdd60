// DistillationModel through the engine, on generated images and tiny PP-LCNet models: pretrained_list and
// freeze_params_list in training (the frozen Teacher keeps its loaded weights; its batch-norm statistics move,
// as PaddleClas's), checkpoint names, retrieval eval and export use the infer_model_name model, describe, and
// the two PaddleClas distillation configs build with their losses.
#include <featlearn/data/loader.h>
#include <featlearn/engine/checkpoint.h>
#include <featlearn/engine/commands.h>
#include <featlearn/engine/inference_model.h>
#include <featlearn/engine/trainer.h>
#include <featlearn/loss/loss.h>
#include <featlearn/metric/retrieval.h>
#include <featlearn/model/distillation_model.h>
#include <featlearn/optim/optimizer.h>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace featlearn;

namespace {

// 4 ids x 3 images, each a colour per id plus a per-image stripe.
fs::path make_images(const fs::path& root) {
  fs::remove_all(root);
  fs::create_directories(root / "img");
  std::ofstream list(root / "list.txt");
  for (int id = 0; id < 4; ++id)
    for (int k = 0; k < 3; ++k) {
      cv::Mat img(20, 20, CV_8UC3, cv::Scalar(60 * id, 200 - 50 * id, 90));
      img.row(3 + 5 * k).setTo(cv::Scalar(255, 255, 255));
      const std::string rel = "img/" + std::to_string(id) + "_" + std::to_string(k) + ".png";
      cv::imwrite((root / rel).string(), img);
      list << rel << " " << id << "\n";
    }
  return root;
}

std::string rec_body(int embedding) {
  return "{name: RecModel, infer_output_key: features, Backbone: {name: PPLCNet_x0_25, class_expand: 16, "
         "dropout_prob: 0.0}, BackboneStopLayer: {name: flatten}, Neck: {name: FC, embedding_size: 16, class_num: " +
         std::to_string(embedding) + "}, Head: {name: ArcMargin, embedding_size: " + std::to_string(embedding) +
         ", class_num: 4, margin: 0.2, scale: 10}}";
}

std::string config_yaml(const fs::path& data, const fs::path& out, const std::string& teacher_ckpt) {
  const std::string set = R"(
      dataset:
        name: ImageNetDataset
        image_root: ")" + data.string() + R"("
        cls_label_path: ")" + (data / "list.txt").string() + R"("
        transform_ops:
          - DecodeImage: {to_rgb: True, channel_first: False}
          - ResizeImage: {size: 32}
          - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
      sampler: {name: DistributedBatchSampler, batch_size: 4, drop_last: False, shuffle: False}
      loader: {num_workers: 0})";
  return R"(Global:
  output_dir: ")" + out.string() + R"("
  device: cpu
  epochs: 1
  eval_during_train: False
  image_shape: [3, 32, 32]
  save_inference_dir: ")" + (out / "inference").string() + R"("
  eval_mode: retrieval
  seed: 7
Arch:
  name: DistillationModel
  infer_output_key: features
  infer_model_name: Student
  is_rec: True
  pretrained_list: [")" + teacher_ckpt + R"(", null]
  freeze_params_list: [True, False]
  models:
    - Teacher: )" + rec_body(8) + R"(
    - Student: )" + rec_body(6) + R"(
Loss:
  Train:
    - DistillationGTCELoss: {weight: 1.0, key: logits, model_names: [Student, Teacher]}
    - DistillationDMLLoss: {weight: 1.0, key: logits, model_name_pairs: [[Student, Teacher]]}
    - DistillationDistanceLoss: {weight: 1.0, key: backbone, model_name_pairs: [[Student, Teacher]]}
  Eval:
    - DistillationGTCELoss: {weight: 1.0, model_names: [Student]}
Optimizer:
  name: Momentum
  momentum: 0.9
  lr: {name: Constant, learning_rate: 0.05}
  regularizer: {name: L2, coeff: 0.001}
DataLoader:
  Train:)" + set + R"(
  Eval:
    Query:)" + set + R"(
    Gallery:)" + set + R"(
Metric:
  Eval:
    - mAP: {}
    - Recallk: {topk: [1, 2]}
)";
}

std::map<std::string, torch::Tensor> tensors_of(const torch::nn::Module& m, bool buffers) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : buffers ? m.named_buffers() : m.named_parameters()) out[kv.key()] = kv.value().detach().clone();
  return out;
}

// Normalized `infer_output_key` features of `model` over the eval list, as an independent extraction.
torch::Tensor features_of(RecModelImpl& model, const Config& cfg) {
  auto loader = DataLoader::create(cfg["DataLoader"]["Eval"]["Query"], LoaderContext{});
  loader->start_epoch(0);
  torch::NoGradGuard ng;
  model.eval();
  std::vector<torch::Tensor> f;
  while (auto b = loader->next()) f.push_back(model.forward(b->images).features);
  return torch::nn::functional::normalize(torch::cat(f), torch::nn::functional::NormalizeFuncOptions().dim(1));
}

}  // namespace

TEST(Distillation, TrainFrozenTeacherEvalAndExportUseTheStudent) {
  const fs::path base = fs::temp_directory_path() / ("featlearn_distill_" + std::to_string(getpid()));
  fs::remove_all(base);
  const fs::path data = make_images(base / "data");
  // The Teacher's own checkpoint (a RecModel's), for pretrained_list.
  const auto teacher_cfg = Config::from_string("Arch: " + rec_body(8) + "\n", "teacher.yaml");
  torch::manual_seed(99);
  RecModel teacher(teacher_cfg["Arch"], std::vector<int64_t>{3, 32, 32});
  const std::string teacher_ckpt = (base / "teacher").string();
  save_checkpoint(teacher_ckpt, *teacher, nullptr, nullptr, CheckpointMeta{});
  const auto teacher_params = tensors_of(*teacher, false), teacher_buffers = tensors_of(*teacher, true);

  const fs::path cfg_path = base / "distill.yaml";
  std::ofstream(cfg_path) << config_yaml(data, base / "out", teacher_ckpt);
  const Config cfg = Config::load(cfg_path.string());

  // The Student's initial weights: the trainer seeds with Global.seed before building the model.
  torch::manual_seed(7);
  auto initial = build_arch(cfg["Arch"], {3, 32, 32});
  const auto student_initial = tensors_of(*std::dynamic_pointer_cast<DistillationModelImpl>(initial)->model("Student"), false);
  {
    Trainer t(cfg, Trainer::Mode::kTrain);
    t.train();
  }
  const std::string latest = (base / "out" / "DistillationModel" / "latest").string();
  auto trained = std::dynamic_pointer_cast<DistillationModelImpl>(build_arch(cfg["Arch"], {3, 32, 32}));
  load_checkpoint(latest, *trained, nullptr, nullptr);  // strict: the names are Teacher.* / Student.*
  // Frozen Teacher: exactly the pretrained_list weights (no gradient, no weight decay); its batch-norm
  // running statistics were updated in training mode.
  for (const auto& [name, value] : tensors_of(*trained->model("Teacher"), false))
    EXPECT_TRUE(torch::equal(value, teacher_params.at(name))) << name;
  bool bn_moved = false;
  for (const auto& [name, value] : tensors_of(*trained->model("Teacher"), true))
    if (name.find("running_mean") != std::string::npos) bn_moved |= !torch::equal(value, teacher_buffers.at(name));
  EXPECT_TRUE(bn_moved);
  // The Student trained: its head (which only the losses' gradients move) changed.
  const auto student_now = tensors_of(*trained->model("Student"), false);
  EXPECT_FALSE(torch::equal(student_now.at("head.weight"), student_initial.at("head.weight")));
  EXPECT_FALSE(torch::equal(student_now.at("backbone.conv1.conv.weight"), student_initial.at("backbone.conv1.conv.weight")));

  // Retrieval eval scores the Student's features (an independent extraction and evaluate_retrieval).
  auto eval_cfg = cfg;
  eval_cfg.apply_override("Global.pretrained_model=" + latest);
  Trainer evaluator(eval_cfg, Trainer::Mode::kEval);
  const auto values = evaluator.evaluate();
  const auto metrics = MetricSet::create(cfg["Metric"]["Eval"]);
  auto labels = torch::tensor({0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3}, torch::kLong);
  auto score = [&](const torch::Tensor& f) {
    return evaluate_retrieval(metrics, f, labels, {}, f, labels, {}, RetrievalOptions{});
  };
  const auto student_values = score(features_of(*trained->model("Student"), cfg));
  const auto teacher_values = score(features_of(*trained->model("Teacher"), cfg));
  ASSERT_EQ(values.size(), student_values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(values[i].first, student_values[i].first);
    EXPECT_NEAR(values[i].second, student_values[i].second, 1e-6) << values[i].first;
  }
  EXPECT_NE(values[0].second, teacher_values[0].second) << "Teacher and Student score alike: the test proves nothing";

  // Export writes the Student alone (a RecModel without Head), and its embedding is the Student's.
  ASSERT_EQ(cmd_export(ConfigArgs{cfg_path.string(), {"Global.pretrained_model=" + latest}}), 0);
  auto exported = InferenceModel::load((base / "out" / "inference").string());
  const auto spec = exported.spec.root()["Arch"];
  EXPECT_EQ(spec.require<std::string>("name"), "RecModel");
  EXPECT_FALSE(spec["Head"].defined());
  EXPECT_EQ(spec.require<std::string>("infer_output_key"), "features");
  torch::manual_seed(3);
  const auto x = torch::rand({2, 3, 32, 32});
  const auto embedded = exported.embed(x);
  EXPECT_EQ(embedded.sizes(), torch::IntArrayRef({2, 6}));  // the Student's width (the Teacher's is 8)
  torch::NoGradGuard ng;
  trained->eval();
  const auto expected = torch::nn::functional::normalize(trained->model("Student")->forward(x).features,
                                                         torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_TRUE(torch::allclose(embedded, expected, 1e-5, 1e-6));

  // describe shows both models.
  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_describe(ConfigArgs{cfg_path.string(), {}}), 0);
  const std::string described = testing::internal::GetCapturedStdout();
  EXPECT_NE(described.find("Arch: DistillationModel  models: Teacher, Student  infer_model_name: Student"),
            std::string::npos) << described;
  EXPECT_NE(described.find("==== model Teacher (Arch.models[0], frozen, weights from " + teacher_ckpt), std::string::npos)
      << described;
  EXPECT_NE(described.find("==== model Student (Arch.models[1], trainable, evaluated and exported"), std::string::npos);
  EXPECT_NE(described.find("features: [N,8]"), std::string::npos);
  EXPECT_NE(described.find("features: [N,6]"), std::string::npos);
  fs::remove_all(base);
}

// A plain loss on a DistillationModel fails at startup with the loss's config line.
TEST(Distillation, SingleModelLossOnDistillationModelIsAConfigError) {
  const fs::path base = fs::temp_directory_path() / ("featlearn_distill_err_" + std::to_string(getpid()));
  fs::remove_all(base);
  const fs::path data = make_images(base / "data");
  auto cfg = Config::from_string(config_yaml(data, base / "out", "unused"), "distill.yaml");
  cfg.apply_override("Arch.pretrained_list=null");
  cfg.apply_override("Loss.Train=[{CELoss: {weight: 1.0}}]");
  try {
    Trainer t(cfg, Trainer::Mode::kTrain);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CELoss reads a single model's output, but Arch is a DistillationModel"),
              std::string::npos) << e.what();
  }
  fs::remove_all(base);
}

// The PaddleClas dml / udml configs (copies under configs/) build: model, losses against the model, optimizer.
// Heads are cut to 10 classes and images to 32 px to keep the test small.
TEST(Distillation, PaddleClasDmlAndUdmlConfigsBuildAndStep) {
  for (const std::string rel : {"GeneralRecognition/GeneralRecognition_PPLCNet_x2_5_dml.yaml",
                                "GeneralRecognition/GeneralRecognition_PPLCNet_x2_5_udml.yaml"}) {
    SCOPED_TRACE(rel);
    auto cfg = Config::load(std::string(FEATLEARN_SOURCE_DIR) + "/configs/" + rel);
    for (const std::string m : {"0.Teacher", "1.Student"}) {
      cfg.apply_override("Arch.models." + m + ".Backbone.pretrained=False");
      cfg.apply_override("Arch.models." + m + ".Head.class_num=10");
    }
    const auto root = cfg.root();
    auto model = build_arch(root["Arch"], {3, 32, 32});
    CombinedLoss train_loss(root["Loss"]["Train"]);
    train_loss->check_models(model->model_names());
    CombinedLoss eval_loss(root["Loss"]["Eval"]);
    eval_loss->check_models(model->model_names());
    auto opt = OptimizerSet::create(root["Optimizer"], {{model->arch_name(), named_parameters_of(*model)}}, 10, 100);
    model->train();
    const auto labels = torch::tensor({1, 3}, torch::kLong);
    const auto r = train_loss->forward(model->forward(torch::randn({2, 3, 32, 32}), labels), labels);
    EXPECT_EQ(r.terms.size(), rel.find("udml") != std::string::npos ? 4u : 3u);
    EXPECT_TRUE(std::isfinite(r.total.item<double>()));
    opt->zero_grad();
    r.total.backward();
    opt->step();
  }
}
