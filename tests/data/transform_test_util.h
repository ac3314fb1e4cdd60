// Helpers shared by the transform tests (test_transforms, test_pil_ops, test_vision_transforms, test_autoaugment).
#pragma once
#include <featlearn/config/config.h>
#include <featlearn/data/transforms.h>

#include <opencv2/core.hpp>

#include "../error_of.h"

#include <functional>
#include <string>
#include <vector>

namespace featlearn::test {

// A pipeline from `yaml`, the items of a transform_ops list (file name "ops.yaml" in messages); `pil_input` as
// TransformPipeline::create.
inline TransformPipeline pipeline(const std::string& yaml, bool pil_input = false) {
  static std::vector<Config> keep;  // ConfigNodes refer to the config's file name
  keep.push_back(Config::from_string("ops:\n" + yaml, "ops.yaml"));
  return TransformPipeline::create(keep.back()["ops"], pil_input);
}

// Same size, type and pixels.
inline bool same(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return false;
  cv::Mat d;
  cv::absdiff(a, b, d);
  return cv::countNonZero(d.reshape(1)) == 0;
}

}  // namespace featlearn::test
