// SPDX-License-Identifier: BSD-3-Clause
// The math plugin: small tasks used by the samples, the tests and the benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ferry/task.hpp>

namespace math {
/// A user type travelling by value: cereal's `serialize` member is all it needs.
struct Vec2 {
  double x = 0, y = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, y);
  }
  bool operator==(const Vec2&) const = default;
};
/// Length of v. Registered from its namespace, so the task is named "math::norm" (and, with its
/// plugin, "math:math::norm"): FERRY_TASK keeps the name as written.
FERRY_EXPORT double norm(Vec2 v);
}  // namespace math

FERRY_EXPORT int square(int x);
FERRY_EXPORT int add(int a, int b);
FERRY_EXPORT double sum(const std::vector<double>& values);
/// Throws std::invalid_argument("fail: <x>").
FERRY_EXPORT int fail(int x);
FERRY_EXPORT std::string greet(const std::string& name);
FERRY_EXPORT math::Vec2 scale(math::Vec2 v, double factor);
FERRY_EXPORT void noop();
/// Integer square root; throws std::domain_error("negative: <x>") for x < 0.
FERRY_EXPORT int checked_isqrt(int x);
/// The worker's pid: shows which worker ran a call.
FERRY_EXPORT int worker_pid();
/// Sleeps `ms` milliseconds (a task's own workload), then returns x.
FERRY_EXPORT int slow_identity(int x, int ms);
/// Size of a byte buffer: the large-argument benchmark.
FERRY_EXPORT std::size_t byte_count(const std::vector<char>& bytes);
/// Returns its argument: a large result.
FERRY_EXPORT std::vector<char> echo_bytes(const std::vector<char>& bytes);
FERRY_EXPORT std::vector<char> make_bytes(std::uint64_t n);  // n bytes of 'x'
FERRY_EXPORT std::uint64_t byte_sum(ferry::BytesView bytes);  // of the bytes as unsigned char
FERRY_EXPORT std::size_t view_size(ferry::BytesView bytes);   // without reading them
