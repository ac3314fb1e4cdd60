// Shared by the loss tests: a central-difference gradient check in double.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>

namespace featlearn {

// Central differences vs autograd, in double.
inline void expect_gradients_match(const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x0,
                                   double tol = 1e-6) {
  torch::Tensor x = x0.clone().set_requires_grad(true);
  torch::Tensor y = f(x);
  ASSERT_EQ(y.numel(), 1);
  y.backward();
  const torch::Tensor g = x.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g.abs().max().item<double>(), 1e-8) << "gradient is zero: the check would prove nothing";
  torch::NoGradGuard no_grad;
  const double h = 1e-6;
  torch::Tensor flat = x0.clone().reshape({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double v = flat[i].item<double>();
    flat[i] = v + h;
    const double up = f(flat.view(x0.sizes())).item<double>();
    flat[i] = v - h;
    const double down = f(flat.view(x0.sizes())).item<double>();
    flat[i] = v;
    const double numeric = (up - down) / (2 * h);
    const double analytic = g.reshape({-1})[i].item<double>();
    EXPECT_NEAR(analytic, numeric, tol * std::max(1.0, std::abs(numeric))) << "element " << i;
  }
}

}  // namespace featlearn
