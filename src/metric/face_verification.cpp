// Face verification accuracy with PaddleClas's 10-fold threshold search (face_verification.h).
#include <featlearn/metric/face_verification.h>

#include <featlearn/common/error.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <numeric>

namespace featlearn {

namespace {

constexpr int kThresholds = 400;  // np.arange(0, 4, 0.01): element i is exactly i * 0.01

double accuracy_at(double threshold, const std::vector<double>& dist, const std::vector<bool>& issame,
                   const std::vector<size_t>& pairs) {
  size_t correct = 0;
  for (size_t p : pairs) correct += (dist[p] < threshold) == issame[p];
  return static_cast<double>(correct) / static_cast<double>(pairs.size());
}

}  // namespace

VerificationAccuracy verification_accuracy(const std::vector<double>& dist, const std::vector<bool>& issame,
                                           int folds) {
  FL_ASSERT(dist.size() == issame.size(), "dist and issame differ in length");
  const size_t n = dist.size();
  if (folds < 2 || n < static_cast<size_t>(folds))
    throw Error(fmt::format("face verification needs at least {} pairs per set for its {}-fold threshold search, "
                            "got {}", folds, folds, n));
  VerificationAccuracy out;
  size_t start = 0;
  for (int f = 0; f < folds; ++f) {
    const size_t len = n / folds + (static_cast<size_t>(f) < n % folds ? 1 : 0);  // sklearn KFold sizes
    std::vector<size_t> train, test;
    for (size_t p = 0; p < n; ++p) (p >= start && p < start + len ? test : train).push_back(p);
    start += len;
    int best = 0;
    double best_acc = -1;
    for (int t = 0; t < kThresholds; ++t) {
      const double acc = accuracy_at(t * 0.01, dist, issame, train);
      if (acc > best_acc) best_acc = acc, best = t;  // np.argmax: the first maximum
    }
    out.accuracy += accuracy_at(best * 0.01, dist, issame, test);
    out.best_threshold += best * 0.01;
  }
  out.accuracy /= folds;
  out.best_threshold /= folds;
  return out;
}

MetricValues evaluate_face_verification(const torch::Tensor& features, const std::vector<int64_t>& issame,
                                        const std::vector<int>& set_of, const std::vector<std::string>& set_names,
                                        int folds) {
  FL_ASSERT(features.dim() == 2 && static_cast<size_t>(features.size(0)) == issame.size() &&
                issame.size() == set_of.size(),
            "features, issame and set_of differ in length");
  const auto f = features.to(torch::kCPU, torch::kDouble).contiguous();
  MetricValues per_set;
  double sum = 0;
  int present = 0;
  for (size_t s = 0; s < set_names.size(); ++s) {
    std::vector<int64_t> rows;
    for (size_t i = 0; i < set_of.size(); ++i)
      if (set_of[i] == static_cast<int>(s)) rows.push_back(static_cast<int64_t>(i));
    if (rows.empty()) continue;
    if (rows.size() % 2 != 0)
      throw Error(fmt::format("face verification set {} has an odd number of images ({})", set_names[s], rows.size()));
    const auto idx = torch::tensor(rows, torch::kLong);
    const auto x = f.index_select(0, idx);
    using torch::indexing::Slice;
    const auto d = (x.index({Slice(0, torch::indexing::None, 2)}) - x.index({Slice(1, torch::indexing::None, 2)}))
                       .pow(2)
                       .sum(1)
                       .contiguous();
    std::vector<double> dist(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
    std::vector<bool> same;
    for (size_t k = 0; k < rows.size(); k += 2) same.push_back(issame[static_cast<size_t>(rows[k])] != 0);
    const auto r = verification_accuracy(dist, same, folds);
    per_set.emplace_back(set_names[s] + "_test_acc", r.accuracy);
    per_set.emplace_back(set_names[s] + "_test_best_threshold", r.best_threshold);
    per_set.emplace_back(set_names[s] + "_num_test_samples", static_cast<double>(rows.size()));
    sum += r.accuracy;
    ++present;
  }
  if (present == 0) throw Error("face verification: no image to evaluate");
  MetricValues out = {{"all_test_acc", sum / present}};
  out.insert(out.end(), per_set.begin(), per_set.end());
  return out;
}

}  // namespace featlearn
