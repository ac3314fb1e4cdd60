// Face verification accuracy (Global.eval_mode: adaface) with PaddleClas's protocol
// (ppcls/engine/evaluation/adaface.py, the LFW protocol): docs/architecture.md, "Training and evaluation".
//
// Per set, pairs are images (2p, 2p+1) with issame[p]. dist[p] = squared L2 distance of the pair's features
// (the caller L2-normalizes them). The pairs are split into `folds` (10) contiguous folds as sklearn's
// KFold(shuffle=False) does: the first P mod folds folds get one pair more. For each fold the threshold t among
// 0, 0.01, ..., 3.99 (np.arange(0, 4, 0.01)) with the highest accuracy on the other folds (the first such t)
// is chosen and the fold's accuracy at t measured, accuracy = (TP + TN) / pairs with "same" predicted for
// dist < t. A set's accuracy and best threshold are the means over its folds.
// Distances are computed in double (PaddleClas: float32 numpy); only distances within float32 rounding of a
// threshold can be classified differently.
#pragma once
#include <featlearn/metric/retrieval.h>

#include <torch/types.h>

#include <string>
#include <vector>

namespace featlearn {

struct VerificationAccuracy {
  double accuracy = 0;        // mean over folds
  double best_threshold = 0;  // mean over folds
};

// dist [P] squared distances, issame [P]; requires P >= folds (sklearn's KFold refuses fewer samples).
VerificationAccuracy verification_accuracy(const std::vector<double>& dist, const std::vector<bool>& issame,
                                           int folds = 10);

// features [N, D] (L2-normalized; image 2p and 2p+1 form pair p within a set, in dataset order), issame [N]
// (one per image, equal within a pair), set_of [N] (0..set_names.size()-1). Returns, as PaddleClas names them,
// all_test_acc (the mean of the sets' accuracies; first, the value best_model follows) and per set present, in
// set order: <set>_test_acc, <set>_test_best_threshold, <set>_num_test_samples (its number of images).
MetricValues evaluate_face_verification(const torch::Tensor& features, const std::vector<int64_t>& issame,
                                        const std::vector<int>& set_of, const std::vector<std::string>& set_names,
                                        int folds = 10);

}  // namespace featlearn
