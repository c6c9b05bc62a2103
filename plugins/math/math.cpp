// SPDX-License-Identifier: BSD-3-Clause
// The math plugin: square, add, sum, a task that throws, and a few more.
#include "math.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <thread>

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
double sum(const std::vector<double>& values) { return std::accumulate(values.begin(), values.end(), 0.0); }
int fail(int x) { throw std::invalid_argument("fail: " + std::to_string(x)); }
std::string greet(const std::string& name) { return "hello, " + name; }
math::Vec2 scale(math::Vec2 v, double factor) { return {v.x * factor, v.y * factor}; }
double math::norm(Vec2 v) { return std::hypot(v.x, v.y); }
int checked_isqrt(int x) {
  if (x < 0) throw std::domain_error("negative: " + std::to_string(x));
  int r = 0;
  while ((r + 1) * (r + 1) <= x) ++r;
  return r;
}
void noop() {}
int worker_pid() { return static_cast<int>(::getpid()); }
int slow_identity(int x, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return x;
}
std::size_t byte_count(const std::vector<char>& bytes) { return bytes.size(); }
std::vector<char> echo_bytes(const std::vector<char>& bytes) { return bytes; }
std::vector<char> make_bytes(std::uint64_t n) { return std::vector<char>(n, 'x'); }
std::uint64_t byte_sum(ferry::BytesView bytes) {
  std::uint64_t sum = 0;
  for (char c : bytes) sum += static_cast<unsigned char>(c);
  return sum;
}
std::size_t view_size(ferry::BytesView bytes) { return bytes.size(); }

FERRY_TASK(square);
FERRY_TASK_AS(square, "math.square");
FERRY_TASK(add);
FERRY_TASK(sum);
FERRY_TASK(fail);
FERRY_TASK(greet);
FERRY_TASK(scale);
FERRY_TASK(math::norm);
FERRY_TASK(checked_isqrt);
FERRY_TASK(noop);
FERRY_TASK(worker_pid);
FERRY_TASK(slow_identity);
FERRY_TASK(byte_count);
FERRY_TASK(echo_bytes);
FERRY_TASK(make_bytes);
FERRY_TASK(byte_sum);
FERRY_TASK(view_size);
