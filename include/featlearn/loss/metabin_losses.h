// MetaBIN's losses (PaddleClas ppcls/loss/metabinloss.py; docs/architecture.md, "MetaBIN"), registered in
// loss_registry() by register_metabin_losses():
//
//   CELossForMetaBIN {epsilon, reduction (mean|sum)}: cross entropy on `logits` with the label smoothing of
//       MetaBIN: the true class gets 1 − ε, every other class ε/(C − 1) (PaddleClas scales ε by C/(C − 1)
//       before Paddle's label_smooth). ε null or outside (0, 1): no smoothing (as CELoss). Needs C ≥ 2.
//   TripletLossForMetaBIN {margin (1), normalize_feature (False), feature_from ("feature": required in
//       practice, backbone|neck|features)}: batch-hard triplet on d = sqrt(max(‖a‖² + ‖b‖² − 2a·b, 1e-12)):
//       mean(relu(d_ap − d_an + margin)), d_ap the farthest same-label sample (itself included), d_an the
//       nearest other-label one (+inf without any: the row adds 0).
//   IntraDomainScatterLoss {normalize_feature, feature_from (both required)}: for each domain present (sorted),
//       the mean cosine similarity (a·b / (‖a‖‖b‖ + 1e-8)) between the domain's mean feature and each of its
//       features; the loss is the mean over domains.
//   InterDomainShuffleLoss {normalize_feature (True), feature_from ("features")}: positives = the sample
//       itself and every sample of another domain, negatives = other labels of the same domain; hardest of each
//       as above; loss = mean(log(1 + exp(d_ap − d_an))) computed as written (Paddle's soft_margin_loss); when
//       that overflows to +inf, mean(relu(d_ap − d_an + 0.3)) instead, as PaddleClas.
// normalize_feature divides each row by (‖x‖ + 1e-12).
//
// The two domain losses need each sample's domain (camera) id, which the LossImpl interface does not carry: the
// MetaBIN loop passes them with set_batch_domains() before each forward (set_metabin_domains() does it for a
// whole CombinedLoss); without them forward throws an Error that says so.
#pragma once
#include <featlearn/loss/loss.h>

#include <torch/types.h>

#include <optional>
#include <string>

namespace featlearn {

// Plain functions. features [N, D], labels / domains [N] (or [N, 1]) integer ids, logits [N, C].
torch::Tensor ce_loss_for_metabin(const torch::Tensor& logits, const torch::Tensor& labels,
                                  std::optional<double> epsilon, const std::string& reduction = "mean");
torch::Tensor triplet_loss_for_metabin(const torch::Tensor& features, const torch::Tensor& labels, double margin,
                                       bool normalize_feature);
torch::Tensor intra_domain_scatter_loss(const torch::Tensor& features, const torch::Tensor& domains,
                                        bool normalize_feature);
torch::Tensor inter_domain_shuffle_loss(const torch::Tensor& features, const torch::Tensor& labels,
                                        const torch::Tensor& domains, bool normalize_feature);

// A loss that also reads the batch's domain ids.
class DomainLossImpl : public LossImpl {
 public:
  // [N] domain ids of the next forward's batch (kept until replaced).
  void set_batch_domains(torch::Tensor domains) { domains_ = std::move(domains); }

 protected:
  const torch::Tensor& domains(const std::string& loss) const;

 private:
  torch::Tensor domains_;
};

// Gives `domains` to every DomainLossImpl of `losses` (a CombinedLoss or any module holding losses).
void set_metabin_domains(torch::nn::Module& losses, const torch::Tensor& domains);

void register_metabin_losses();

}  // namespace featlearn
