// k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
// CVPR 2017), following the conventions of PaddleClas's compute_re_ranking_dist. Unlike it (and the
// reid-strong-baseline code it copies), the (Q+G)² distance matrix is never stored: only each item's k1+1
// nearest neighbours, the sparse encodings V and their transpose are kept, and the final distances are
// produced per block of query rows. V and the Jaccard sums are kept in float32 (PaddleClas: float16).
#include "re_ranking.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace featlearn {
namespace detail {

namespace {
constexpr int64_t kRowBlock = 256;

// Sparse row as parallel arrays, columns ascending.
struct SparseRow {
  std::vector<int32_t> col;
  std::vector<float> val;
};
}  // namespace

ReRanker::ReRanker(const torch::Tensor& query, const torch::Tensor& gallery, const ReRankingParams& params)
    : params_(params) {
  num_query_ = query.size(0);
  num_gallery_ = gallery.size(0);
  num_all_ = num_query_ + num_gallery_;
  if (num_all_ > kMaxReRankingItems)
    throw Error("re_ranking: " + std::to_string(num_query_) + " queries + " + std::to_string(num_gallery_) +
                " gallery items exceed the limit of " + std::to_string(kMaxReRankingItems) +
                " (its cost grows with the square of the total); set Global.re_ranking: false or evaluate a "
                "smaller query/gallery set");
  if (params.k1 < 1 || params.k2 < 1) throw Error("re_ranking: k1 and k2 must be >= 1");
  const int64_t N = num_all_;
  all_ = torch::cat({query.detach().to(torch::kCPU, torch::kFloat), gallery.detach().to(torch::kCPU, torch::kFloat)})
             .contiguous();
  sqnorm_ = all_.pow(2).sum(1).contiguous();
  rowmax_.assign(static_cast<size_t>(N), 0.f);

  // 1. Each row's k1+1 nearest items (itself included) and its maximum distance.
  const int64_t kn = std::min<int64_t>(params.k1 + 1, N);
  std::vector<int32_t> rank(static_cast<size_t>(N * kn));
  for (int64_t b = 0; b < N; b += kRowBlock) {
    const int64_t e = std::min(N, b + kRowBlock);
    torch::Tensor d = torch::addmm(sqnorm_.unsqueeze(0), all_.slice(0, b, e), all_.t(), 1.0, -2.0)
                          .add_(sqnorm_.slice(0, b, e).unsqueeze(1));  // [rows, N]
    torch::Tensor mx = std::get<0>(d.max(1)).contiguous();
    std::memcpy(rowmax_.data() + b, mx.data_ptr<float>(), sizeof(float) * (e - b));
    torch::Tensor idx = std::get<1>(d.topk(kn, 1, /*largest=*/false, /*sorted=*/true)).to(torch::kInt).contiguous();
    std::memcpy(rank.data() + b * kn, idx.data_ptr<int32_t>(), sizeof(int32_t) * (e - b) * kn);
  }
  for (auto& m : rowmax_)
    if (!(m > 0.f)) m = 1.f;  // all items identical: avoid 0/0

  const float* feat = all_.data_ptr<float>();
  const float* sq = sqnorm_.data_ptr<float>();
  const int64_t D = all_.size(1);
  auto norm_dist = [&](int64_t p, int64_t x) {
    const float* a = feat + p * D;
    const float* c = feat + x * D;
    float dot = 0.f;
    for (int64_t i = 0; i < D; ++i) dot += a[i] * c[i];
    return (sq[p] + sq[x] - 2.f * dot) / rowmax_[p];
  };
  // R(p, k): the first k+1 neighbours of p that also hold p among their first k+1.
  auto reciprocal = [&](int64_t p, int64_t k) {
    std::vector<int32_t> out;
    const int64_t kk = std::min(k + 1, kn);
    for (int64_t i = 0; i < kk; ++i) {
      const int32_t c = rank[p * kn + i];
      const int32_t* back = rank.data() + static_cast<int64_t>(c) * kn;
      if (std::find(back, back + kk, static_cast<int32_t>(p)) != back + kk) out.push_back(c);
    }
    return out;
  };

  // 2. V[p] over R*(p): Gaussian weights of the normalized distance, summing to 1.
  const int64_t k_half = static_cast<int64_t>(std::nearbyint(params.k1 / 2.0));  // np.around: half to even
  std::vector<SparseRow> v(static_cast<size_t>(N));
  at::parallel_for(0, N, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      std::vector<int32_t> rp = reciprocal(p, params.k1);
      std::vector<int32_t> sorted_rp = rp;
      std::sort(sorted_rp.begin(), sorted_rp.end());
      std::vector<int32_t> expanded = rp;
      for (int32_t q : rp) {
        std::vector<int32_t> rq = reciprocal(q, k_half);
        std::sort(rq.begin(), rq.end());
        std::vector<int32_t> common;
        std::set_intersection(sorted_rp.begin(), sorted_rp.end(), rq.begin(), rq.end(), std::back_inserter(common));
        if (static_cast<double>(common.size()) > 2.0 / 3.0 * static_cast<double>(rq.size()))
          expanded.insert(expanded.end(), rq.begin(), rq.end());
      }
      std::sort(expanded.begin(), expanded.end());
      expanded.erase(std::unique(expanded.begin(), expanded.end()), expanded.end());
      SparseRow& row = v[p];
      row.col = expanded;
      row.val.resize(expanded.size());
      double sum = 0.0;
      for (size_t i = 0; i < expanded.size(); ++i) {
        row.val[i] = std::exp(-norm_dist(p, expanded[i]));
        sum += row.val[i];
      }
      for (auto& x : row.val) x = static_cast<float>(x / sum);
    }
  });

  // 3. Local query expansion: V'[p] = mean of V over p's k2 nearest items.
  std::vector<SparseRow> vq(static_cast<size_t>(N));
  const int64_t k2 = std::min(params.k2, kn);
  if (params.k2 > 1) {
    at::parallel_for(0, N, 16, [&](int64_t p0, int64_t p1) {
      std::vector<float> acc(static_cast<size_t>(N), 0.f);
      std::vector<int32_t> touched;
      for (int64_t p = p0; p < p1; ++p) {
        touched.clear();
        for (int64_t i = 0; i < k2; ++i) {
          const SparseRow& src = v[rank[p * kn + i]];
          for (size_t j = 0; j < src.col.size(); ++j) {
            if (acc[src.col[j]] == 0.f) touched.push_back(src.col[j]);
            acc[src.col[j]] += src.val[j];
          }
        }
        std::sort(touched.begin(), touched.end());
        SparseRow& row = vq[p];
        for (int32_t c : touched) {
          row.col.push_back(c);
          row.val.push_back(acc[c] / static_cast<float>(params.k2));
          acc[c] = 0.f;
        }
      }
    });
  } else {
    vq = std::move(v);
  }

  // 4. CSR of V' and of its transpose (which rows hold column j).
  v_ptr_.assign(static_cast<size_t>(N + 1), 0);
  t_ptr_.assign(static_cast<size_t>(N + 1), 0);
  for (int64_t p = 0; p < N; ++p) {
    v_ptr_[p + 1] = v_ptr_[p] + static_cast<int64_t>(vq[p].col.size());
    for (int32_t c : vq[p].col) ++t_ptr_[c + 1];
  }
  for (int64_t j = 0; j < N; ++j) t_ptr_[j + 1] += t_ptr_[j];
  v_col_.resize(v_ptr_[N]);
  v_val_.resize(v_ptr_[N]);
  t_row_.resize(v_ptr_[N]);
  t_val_.resize(v_ptr_[N]);
  std::vector<int64_t> fill(t_ptr_.begin(), t_ptr_.end() - 1);
  for (int64_t p = 0; p < N; ++p) {
    std::copy(vq[p].col.begin(), vq[p].col.end(), v_col_.begin() + v_ptr_[p]);
    std::copy(vq[p].val.begin(), vq[p].val.end(), v_val_.begin() + v_ptr_[p]);
    for (size_t i = 0; i < vq[p].col.size(); ++i) {
      const int64_t at = fill[vq[p].col[i]]++;
      t_row_[at] = static_cast<int32_t>(p);
      t_val_[at] = vq[p].val[i];
    }
  }
}

torch::Tensor ReRanker::rows(int64_t begin, int64_t end) const {
  FL_ASSERT(0 <= begin && begin <= end && end <= num_query_, "ReRanker::rows out of range");
  const int64_t Q = num_query_, G = num_gallery_;
  const float lambda = static_cast<float>(params_.lambda);
  // Original distance of the query rows to the gallery, normalized by each row's maximum.
  torch::Tensor d = torch::addmm(sqnorm_.slice(0, Q).unsqueeze(0), all_.slice(0, begin, end),
                                 all_.slice(0, Q).t(), 1.0, -2.0)
                        .add_(sqnorm_.slice(0, begin, end).unsqueeze(1))
                        .contiguous();  // [b, G]
  torch::Tensor out = torch::zeros({end - begin, G}, torch::kFloat);
  float* dp = d.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(begin, end, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* o = op + (p - begin) * G;  // sum_min over gallery columns
      for (int64_t i = v_ptr_[p]; i < v_ptr_[p + 1]; ++i) {
        const int32_t gj = v_col_[i];
        const float vp = v_val_[i];
        for (int64_t t = t_ptr_[gj]; t < t_ptr_[gj + 1]; ++t) {
          const int64_t gi = t_row_[t];
          if (gi >= Q) o[gi - Q] += std::min(vp, t_val_[t]);
        }
      }
      const float* dr = dp + (p - begin) * G;
      const float inv_max = 1.f / rowmax_[p];
      for (int64_t j = 0; j < G; ++j) {
        const float jaccard = 1.f - o[j] / (2.f - o[j]);
        o[j] = (1.f - lambda) * jaccard + lambda * dr[j] * inv_max;
      }
    }
  });
  return out;
}

}  // namespace detail

torch::Tensor re_ranking_distance(const torch::Tensor& query_feats, const torch::Tensor& gallery_feats,
                                  const ReRankingParams& params) {
  if (!query_feats.defined() || !gallery_feats.defined() || query_feats.dim() != 2 || gallery_feats.dim() != 2 ||
      query_feats.size(1) != gallery_feats.size(1))
    throw Error("re_ranking: expected query [Q, D] and gallery [G, D] features of the same dimension");
  detail::ReRanker rr(query_feats, gallery_feats, params);
  return rr.rows(0, query_feats.size(0));
}

}  // namespace featlearn
