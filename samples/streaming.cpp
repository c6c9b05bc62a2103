// SPDX-License-Identifier: BSD-3-Clause
// Streaming maps and maps that keep going (issue 14): imap over an endless input, imap_unordered,
// map_outcomes with the index of each failed input, a constant extra argument, progress and stop.
#include <iostream>
#include <ranges>
#include <stop_token>
#include <vector>

#include <ferry/ferry.hpp>

#include "math.hpp"

int main() {
  ferry::Executor ex({.max_workers = 2});

  // joblib's return_as="generator": results in input order, inputs pulled lazily. The input never
  // ends; at most max_in_flight chunks are out, and leaving the loop cancels the rest.
  long long total = 0;
  std::size_t seen = 0;
  for (int sq : ex.imap(square, std::views::iota(1), {.chunksize = 50})) {
    total += sq;
    if (++seen == 1000) break;
  }
  std::cout << "imap: the first 1000 squares sum to " << total << "\n";

  // joblib's return_as="generator_unordered", concurrent.futures' as_completed over a map: each
  // result with the index of its input, as they finish. A constant trailing argument (the
  // milliseconds of slow_identity) travels once per chunk, not once per input.
  std::vector<int> inputs = {0, 1, 2, 3, 4, 5};
  std::size_t sum_of_indices = 0;
  for (const ferry::Indexed<int>& r : ex.imap_unordered(slow_identity, inputs, {.chunksize = 1}, 20)) {
    sum_of_indices += r.index;
    total += r.value;
  }
  std::cout << "imap_unordered: 6 results, indices sum to " << sum_of_indices << "\n";

  // `ferry map --keep-going` in C++: every input gets its value or its own error; the others go on.
  std::vector<int> numbers = {16, -4, 81, -1, 100};
  std::size_t progress_calls = 0;
  ferry::MapOptions keep_going;
  keep_going.chunksize = 2;
  keep_going.on_progress = [&](std::size_t, std::size_t) { ++progress_calls; };
  for (const ferry::Outcome<int>& o : ex.map_outcomes(checked_isqrt, numbers, keep_going)) {
    if (o.ok()) {
      std::cout << "input " << o.index << ": " << o.value() << "\n";
    } else {
      try {
        std::rethrow_exception(o.error());
      } catch (const ferry::Error& e) {
        std::cout << "input " << o.index << " failed (input_index " << e.input_index().value_or(99)
                  << "): " << e.what() << "\n";
      }
    }
  }
  std::cout << "on_progress was called " << (progress_calls > 0 ? "as inputs finished" : "never") << "\n";

  // Stopping a map from elsewhere (here, from its own progress callback): what is queued is
  // cancelled; map throws CancelledError.
  std::stop_source stop;
  ferry::MapOptions stoppable;
  stoppable.chunksize = 1;
  stoppable.stop = stop.get_token();
  stoppable.on_progress = [&](std::size_t done, std::size_t) {
    if (done == 3) stop.request_stop();
  };
  try {
    ex.map(slow_identity, std::vector<int>(100, 7), stoppable, 10);
  } catch (const ferry::CancelledError& e) {
    std::cout << "stopped: " << e.what() << "\n";
  }
}
