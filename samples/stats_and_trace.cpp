// SPDX-License-Identifier: BSD-3-Clause
// See what the pool did: Executor::stats() while it works, and a trace file to open in Perfetto.
//   stats_and_trace [TRACE_FILE]     (default: a file in a fresh temporary directory)
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // segfault
#include "math.hpp"   // square, fail

int main(int argc, char** argv) {
  std::filesystem::path trace;
  if (argc > 1) {
    trace = argv[1];
  } else {
    std::string dir = (std::filesystem::temp_directory_path() / "ferry-trace-XXXXXX").string();
    if (!::mkdtemp(dir.data())) return 1;
    trace = std::filesystem::path(dir) / "trace.json";
  }
  {
    // Or, without touching the code: FERRY_TRACE=trace.json ./program
    ferry::Executor ex({.max_workers = 2, .trace = trace});
    std::vector<int> inputs(10000);
    std::iota(inputs.begin(), inputs.end(), 0);
    ex.map(square, inputs, {.chunksize = 500});  // 20 calls: one per chunk
    try {
      ex.submit(fail, 3).get();
    } catch (const ferry::TaskError&) {
    }
    try {
      ex.submit(segfault, 1).get();
    } catch (const ferry::TerminatedWorkerError&) {
    }

    ferry::ExecutorStats s = ex.stats();  // cheap: fine in a monitoring loop
    std::cout << "calls: " << s.submitted << " submitted, " << s.completed << " completed, " << s.failed
              << " failed (TaskError " << s.failed_by_type["TaskError"] << ", TerminatedWorkerError "
              << s.failed_by_type["TerminatedWorkerError"] << "), " << s.queued << " queued, " << s.running
              << " running\n"
              << "workers: " << s.workers_started << " started, " << s.workers_crashed << " crashed, "
              << s.workers_alive << " alive\n"
              << "bytes: " << s.bytes_sent << " sent, " << s.bytes_received << " received, in "
              << s.uptime.count() << " s\n";
  }  // the executor shuts down: the trace ends with the stats and `]`

  std::ifstream in(trace);
  std::size_t lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  std::cout << "trace: " << trace.string() << ", " << lines
            << " lines: open it at ui.perfetto.dev (Open trace file) or chrome://tracing\n";
  if (argc <= 1) std::filesystem::remove_all(trace.parent_path());
}
