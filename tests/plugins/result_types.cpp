// SPDX-License-Identifier: BSD-3-Clause
#include "result_types.hpp"

#include <cereal/types/string.hpp>

std::unique_ptr<int> boxed(int v) { return std::make_unique<int>(v); }
Boxes boxes(int n) {
  Boxes b;
  for (int i = 0; i < n; ++i) b.items.push_back(std::make_unique<int>(i));
  return b;
}
const std::string const_label(int v) { return "#" + std::to_string(v); }
std::size_t count_values(std::vector<int> values) { return values.size(); }
std::size_t length_of(const std::string& text) { return text.size(); }
std::size_t view_byte_count(ferry::BytesView data) { return data.size(); }
double length_plus_twice(std::string text, double x) { return static_cast<double>(text.size()) + 2 * x; }

FERRY_TASK(boxed);
FERRY_TASK(boxes);
FERRY_TASK(const_label);
FERRY_TASK(length_of);
FERRY_TASK(view_byte_count);
FERRY_TASK(count_values);
FERRY_TASK(length_plus_twice);
