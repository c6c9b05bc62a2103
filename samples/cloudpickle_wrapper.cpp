// SPDX-License-Identifier: BSD-3-Clause
// The seed example: loky's "Serialization of un-picklable objects" (cloudpickle_wrapper.py),
// ferry-ified. A registered plugin task travels by reference (library path + task name); a plain
// function of this main program cannot reach a worker, like a function of __main__ under
// LOKY_PICKLER=pickle, and fails with UnresolvableTaskError while the pool keeps working; wrapped
// with FERRY_WRAP it travels by value, like loky's wrap_non_picklable_objects.
#include <chrono>
#include <iostream>
#include <numeric>
#include <vector>

#include <ferry/ferry.hpp>

#include "seed.hpp"  // func_async, registered with FERRY_TASK in the seed plugin

// Defined in the main program: a worker cannot load this executable to find it.
int func_async_local(int i, const std::vector<int>& /*args*/) { return 2 * i; }

// The same, wrapped: its source is compiled into a cached plugin, which travels by path + name.
FERRY_WRAP(func_async_wrapped,
int func_async_wrapped(int i, const std::vector<int>& /*args*/) { return 2 * i; })

int main() {
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };

  // loky: executor = get_reusable_executor(max_workers=1); executor.submit(func_async, 21)
  auto executor = ferry::get_reusable_executor({.max_workers = 1});
  std::cout << "func_async(21) = " << executor->submit(func_async, 21, std::vector<int>{}).get()
            << "\n";

  // The same task with a large argument: it travels as cereal's binary encoding of the vector.
  std::vector<int> large_list(1'000'000);
  std::iota(large_list.begin(), large_list.end(), 0);
  auto t0 = clock::now();
  int r = executor->submit(func_async, 21, large_list).get();
  std::cout << "func_async(21, large_list) = " << r << " in " << ms(clock::now() - t0) << " ms\n";

  // A function of the main program: the worker really tries to load this executable, and fails.
  try {
    executor->submit(func_async_local, 21, large_list).get();
  } catch (const ferry::UnresolvableTaskError& e) {
    std::cout << "UnresolvableTaskError: " << e.what() << "\n";
  }

  // The pool is still healthy: no broken pool, nothing to recreate.
  std::cout << "after the failure, func_async(21) = "
            << executor->submit(func_async, 21, std::vector<int>{}).get() << "\n";

  // loky's wrap_non_picklable_objects: the wrapped function is shipped by value. The first call
  // compiles it (the executor started that in the background); later calls, and later runs of
  // this program, find the plugin in the cache ($FERRY_CACHE_DIR, else ~/.cache/ferry).
  t0 = clock::now();
  int first = executor->submit(func_async_wrapped, 21, large_list).get();
  auto first_ms = ms(clock::now() - t0);
  t0 = clock::now();
  int cached = executor->submit(func_async_wrapped, 21, large_list).get();
  std::cout << "func_async_wrapped(21, large_list) = " << first << " first call " << first_ms
            << " ms (compiles, unless an earlier run cached it), then " << cached << " in "
            << ms(clock::now() - t0) << " ms (cached)\n";

  // As loky's example warns about side effects of wrapping, in C++ terms: the wrapped body is
  // compiled on its own, so it sees only what it declares or includes (never this program's
  // globals, types or helpers: that is an UnresolvableTaskError naming the compiler's complaint),
  // and its function-local statics live once per worker process, not in the host.
  return 0;
}
