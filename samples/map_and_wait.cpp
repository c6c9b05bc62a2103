// SPDX-License-Identifier: BSD-3-Clause
// map (ordered results, chunked messages) and waiting on many futures.
#include <iostream>
#include <numeric>
#include <vector>

#include <ferry/ferry.hpp>

#include "math.hpp"

int main() {
  ferry::Executor ex({.max_workers = 2});

  std::vector<int> inputs(10'000);
  std::iota(inputs.begin(), inputs.end(), 0);
  // 100 inputs per message and per worker call; results come back in input order.
  std::vector<int> squares = ex.map(square, inputs, {.chunksize = 100});
  std::cout << "map: " << squares.size() << " results, last " << squares.back() << "\n";

  // Several parameters: a range of tuples (or pairs).
  std::vector<std::pair<int, int>> pairs = {{1, 2}, {3, 4}};
  std::cout << "add over pairs: " << ex.map(add, pairs)[1] << "\n";

  // As concurrent.futures: wait for the first, iterate in completion order.
  std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 1000), ex.submit(square, 5)};
  auto [done, not_done] = ferry::wait(fs, ferry::Return::first_completed);
  std::cout << "first done: " << done.front().get() << "\n";
  for (const auto& f : ferry::as_completed(fs)) std::cout << "completed: " << f.get() << "\n";
}
