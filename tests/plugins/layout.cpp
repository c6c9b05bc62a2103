// SPDX-License-Identifier: BSD-3-Clause
// User types as this plugin defines them, against which test_layout's host defines some of them
// otherwise under the same names (a host and a plugin built from two versions of a header).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cereal/types/memory.hpp>
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
// On another type than the host's (std::int16_t): cereal writes two bytes either way.
enum class Mode : std::uint16_t { off, on };
/// As the host defines it: a pimpl whose save reads through its pointer, marked layout_by_name.
struct Handle {
  std::unique_ptr<std::int32_t> impl;
  template <class Archive>
  void save(Archive& ar) const {
    ar(*impl);
  }
  template <class Archive>
  void load(Archive& ar) {
    impl = std::make_unique<std::int32_t>();
    ar(*impl);
  }
};
}  // namespace layout_test
template <>
struct ferry::layout_by_name<layout_test::Handle> : std::true_type {};

double point_x(layout_test::Point p) { return p.x; }
std::string tagged_label(layout_test::Tagged t) { return std::to_string(t.id) + ":" + t.label; }
std::size_t corner_count(layout_test::Shape s) { return s.corners.size(); }
int mode_value(layout_test::Mode m) { return static_cast<int>(m); }
std::int32_t handle_value(layout_test::Handle h) { return *h.impl + 1; }
FERRY_TASK(point_x);
FERRY_TASK(mode_value);
FERRY_TASK(handle_value);
FERRY_TASK(tagged_label);
FERRY_TASK(corner_count);
