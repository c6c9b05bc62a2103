// SPDX-License-Identifier: BSD-3-Clause
// User types as this plugin defines them, against which test_layout's host defines some of them
// otherwise under the same names (a host and a plugin built from two versions of a header).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <ferry/task.hpp>

namespace layout_test {
struct Point {
  double x = 0, y = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(x), CEREAL_NVP(y));
  }
};
struct Tagged {
  std::int32_t id = 0;
  std::string label;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, label);
  }
};
struct Shape {
  std::vector<Point> corners;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(corners));
  }
};
}  // namespace layout_test

double point_x(layout_test::Point p) { return p.x; }
std::string tagged_label(layout_test::Tagged t) { return std::to_string(t.id) + ":" + t.label; }
std::size_t corner_count(layout_test::Shape s) { return s.corners.size(); }
FERRY_TASK(point_x);
FERRY_TASK(tagged_label);
FERRY_TASK(corner_count);
