// SPDX-License-Identifier: BSD-3-Clause
// Tasks whose signatures a call accepts and a submission must accept too (tests/test_task_types.cpp):
// a result that can only be moved, a result declared const, parameters reached by an implicit
// conversion, and types only cereal's binary archive carries.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <cereal/archives/binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/vector.hpp>

#include <ferry/bytes_view.hpp>
#include <ferry/task.hpp>

/// A box holding `v`: a result that cannot be copied.
FERRY_EXPORT std::unique_ptr<int> boxed(int v);
/// Boxes of 0..n-1 in a struct std::is_copy_constructible calls copyable (its vector's copy
/// constructor is not constrained) though it is not.
struct Boxes {
  std::vector<std::unique_ptr<int>> items;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(items);
  }
};
FERRY_EXPORT Boxes boxes(int n);
/// `v` in words ("#v"), returned as a const value.
FERRY_EXPORT const std::string const_label(int v);
/// How many values `values` holds.
FERRY_EXPORT std::size_t count_values(std::vector<int> values);
/// `text`'s length: a parameter taken by const reference.
FERRY_EXPORT std::size_t length_of(const std::string& text);
/// How many bytes `data` holds: a ferry::BytesView, which a string literal converts to.
FERRY_EXPORT std::size_t view_byte_count(ferry::BytesView data);
/// `text`'s length and `x` doubled: a std::string and a double reached by implicit conversions.
FERRY_EXPORT double length_plus_twice(std::string text, double x);

namespace result_types {
/// Saved and loaded by functions written for cereal's binary archives themselves (no template):
/// FERRY_TASK sees it has no JSON form.
struct BinaryOnly {
  std::int32_t value = 0;
  void save(cereal::BinaryOutputArchive& ar) const { ar(value); }
  void load(cereal::BinaryInputArchive& ar) { ar(value); }
};
/// Four raw bytes through cereal::binary_data, which only binary archives take: a template
/// serialize, so marked ferry::binary_only below.
struct Raw {
  std::array<std::uint8_t, 4> bytes{};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::binary_data(bytes.data(), bytes.size()));
  }
};
}  // namespace result_types
template <>
struct ferry::binary_only<result_types::Raw> : std::true_type {};

/// `b` doubled.
FERRY_EXPORT result_types::BinaryOnly binary_only_twice(result_types::BinaryOnly b);
/// The sum of the values, held in standard types (a vector, an optional, a unique_ptr).
FERRY_EXPORT std::int32_t sum_binary_only(std::vector<result_types::BinaryOnly> values,
                                          std::optional<result_types::BinaryOnly> extra,
                                          std::unique_ptr<result_types::BinaryOnly> boxed);
/// `r`'s bytes in reverse order.
FERRY_EXPORT result_types::Raw reversed_raw(result_types::Raw r);
