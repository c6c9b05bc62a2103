// SPDX-License-Identifier: BSD-3-Clause
// The worker loop: what ferry-worker runs, and what tests run in-process over a socketpair.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

class Ring;

class Containment;

struct WorkerConfig {
  int fd = 3;                                    // the channel
  int parent = 0;                                // host pid; 0 = do not watch the parent
  std::chrono::milliseconds idle_timeout{0};     // 0 = never
  std::size_t max_memory_growth = 0;             // bytes over the RSS after the first task; 0 = off
  std::size_t max_tasks = 0;                     // tasks before recycling; 0 = unlimited
  std::chrono::microseconds spin{50};            // busy-poll for the next frame after a result
  std::uint64_t max_frame_bytes = std::uint64_t{1} << 30;  // largest frame accepted (the host's limit)
  /// Set up by worker_main before the loop (worker/containment.hpp): the loop applies each task's
  /// limits and reports a limit that explains a failure. nullptr: none (in-process tests).
  Containment* containment = nullptr;
  /// The shared-memory rings to and from an MPI agent (`--rings`, wire/ring.hpp), or none: then
  /// every frame goes over the channel.
  Ring* ring_in = nullptr;
  Ring* ring_out = nullptr;
};

/// Runs the loop on an open channel; returns the process exit code (protocol::WorkerExit).
FERRY_INTERNAL_API int run_worker(const WorkerConfig& config);

/// `ferry-worker` entry point: parses the command line, arms the parent-death signal, runs.
FERRY_INTERNAL_API int worker_main(int argc, char** argv);

}  // namespace ferry::detail
