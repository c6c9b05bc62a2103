// SPDX-License-Identifier: BSD-3-Clause
#include "result_types.hpp"

#include <algorithm>

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
result_types::BinaryOnly binary_only_twice(result_types::BinaryOnly b) { return {2 * b.value}; }
std::int32_t sum_binary_only(std::vector<result_types::BinaryOnly> values, std::optional<result_types::BinaryOnly> extra,
                             std::unique_ptr<result_types::BinaryOnly> boxed) {
  std::int32_t sum = (extra ? extra->value : 0) + (boxed ? boxed->value : 0);
  for (const auto& v : values) sum += v.value;
  return sum;
}
result_types::Raw reversed_raw(result_types::Raw r) {
  std::reverse(r.bytes.begin(), r.bytes.end());
  return r;
}

FERRY_TASK(boxed);
FERRY_TASK(boxes);
FERRY_TASK(const_label);
FERRY_TASK(length_of);
FERRY_TASK(view_byte_count);
FERRY_TASK(count_values);
FERRY_TASK(length_plus_twice);
// Types only cereal's binary archive carries: these have no JSON entry point.
FERRY_TASK(binary_only_twice);
FERRY_TASK(sum_binary_only);
FERRY_TASK(reversed_raw);
