// SPDX-License-Identifier: BSD-3-Clause
// Times calls that carry their own limits (SubmitOptions::limits) in a sandbox, where a call's
// own limits become its worker's hard limits and a later call with higher ones needs another
// worker (docs/design.md §15). One sandboxed worker, warmed up, per case; each case prints its
// calls, the time per call and the workers it started:
//   executor's     every call with the executor's limits (none here)
//   same own       every call with the same own limits (lowered once, then kept)
//   alternating    own limits and the executor's in turn, each call waited for
//   alternating, submitted at once   the same, every call submitted before the first is waited for
//   bursts, submitted at once        nine calls with their own limits, then one with the
//                                    executor's, and again, every call submitted at once
// Command (docs/benchmarks.md):
//   cmake --build --preset default --target ferry_own_limits   (FERRY_BUILD_BENCH=ON)
//   build/default/bin/ferry-own-limits [CALLS] [WORKERS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include <ferry/ferry.hpp>

#include "math.hpp"

namespace {

enum class Mix { executors, same_own, alternating, bursts };

ferry::SubmitOptions options_for(Mix mix, int i) {
  ferry::SubmitOptions o;
  if (mix == Mix::same_own || (mix == Mix::alternating && i % 2 == 0) || (mix == Mix::bursts && i % 10 != 9)) {
    o.limits.memory = std::size_t{1} << 30;
    o.limits.open_files = 1024;
  }
  return o;
}

void run_case(const char* name, Mix mix, bool at_once, int calls, std::size_t workers) {
  ferry::ExecutorOptions eo{.max_workers = workers};
  eo.sandbox.enabled = true;
  ferry::Executor ex(eo);
  if (!ex.warm_up(std::chrono::seconds(30))) {
    std::printf("%-34s  no worker started\n", name);
    return;
  }
  const std::size_t started_before = ex.stats().workers_started;
  const auto t0 = std::chrono::steady_clock::now();
  if (at_once) {
    std::vector<ferry::Future<int>> fs;
    fs.reserve(static_cast<std::size_t>(calls));
    for (int i = 0; i < calls; ++i) fs.push_back(ex.submit_with(options_for(mix, i), square, i));
    for (int i = 0; i < calls; ++i)
      if (fs[static_cast<std::size_t>(i)].get() != i * i) std::abort();
  } else {
    for (int i = 0; i < calls; ++i)
      if (ex.submit_with(options_for(mix, i), square, i).get() != i * i) std::abort();
  }
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  const std::size_t started = ex.stats().workers_started - started_before;
  std::printf("%-34s  %5d calls  %9.1f us/call  %4zu workers started\n", name, calls, us / calls, started);
}

}  // namespace

int main(int argc, char** argv) try {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::size_t workers = argc > 2 ? static_cast<std::size_t>(std::atoi(argv[2])) : 1;
  if (calls <= 0 || workers == 0) {
    std::fprintf(stderr, "usage: %s [CALLS] [WORKERS]\n", argv[0]);
    return 2;
  }
  std::printf("sandboxed pool of %zu worker(s); own limits: memory 1 GiB, open_files 1024\n", workers);
  run_case("executor's", Mix::executors, false, calls, workers);
  run_case("same own", Mix::same_own, false, calls, workers);
  run_case("alternating", Mix::alternating, false, calls, workers);
  run_case("alternating, submitted at once", Mix::alternating, true, calls, workers);
  run_case("bursts, submitted at once", Mix::bursts, true, calls, workers);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ferry-own-limits: %s\n", e.what());
  return 1;
}
