// SPDX-License-Identifier: BSD-3-Clause
// Tasks whose signatures a call accepts and a submission must accept too (tests/test_task_types.cpp):
// a result that can only be moved, a result declared const, and parameters reached by an
// implicit conversion.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <cereal/types/memory.hpp>
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
