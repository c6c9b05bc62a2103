// SPDX-License-Identifier: BSD-3-Clause
// A worker's containment, set up in ferry-worker itself before its hello: its descendants end
// with it, ferry::Limits hold while a task runs, and with a ferry::Sandbox the task cannot open
// the network, exec, ptrace or touch files outside the allowed paths. When a task goes past a
// limit or makes a denied system call, the worker says so in a contained frame
// (wire/protocol.hpp) and exits with WorkerExit::contained; the host turns that into a
// ResourceLimitError or SandboxViolationError and replaces the worker.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire/protocol.hpp"

namespace ferry::detail {

/// What the host asks for, from ferry-worker's command line:
///   --limits MEMORY,CPU_SECONDS,OPEN_FILES,PROCESSES,FILE_SIZE   (0 = none)
///   --sandbox FLAGS   (present = enabled; bits: 1 network allowed, 2 exec allowed, 4 best effort)
///   --read PATH, --write PATH   (repeatable; the host adds plugin directories, the FERRY_WRAP
///                                cache, the libraries it has loaded and Sandbox::read/write)
struct ContainmentConfig {
  protocol::TaskLimits limits;
  bool sandbox = false;
  bool network = false;
  bool exec = false;
  bool best_effort = false;
  std::vector<std::string> read;
  std::vector<std::string> write;
};

class Containment {
 public:
  /// In the worker, before its hello. `channel_fd` is where contained frames go (from signal
  /// handlers too). Descendants are always contained (PID namespace, else subreaper and sweep).
  /// "" on success; else why it could not (the worker exits with WorkerExit::containment).
  std::string setup(const ContainmentConfig& config, int channel_fd);
  /// Before each task: the limits of this task (the executor's, or a limits frame's).
  void begin_task(const protocol::TaskLimits& limits);
  /// After a task that failed: a limit that explains the failure (bad_alloc with a memory limit,
  /// a full descriptor table, a refused fork at the processes limit), else nullopt.
  std::optional<protocol::Contained> explain_failure(std::string_view exception_type,
                                                     std::string_view message);
  /// After every task: a limit hit on the way even if the task coped (a fork refused by the pids
  /// cgroup), else nullopt.
  std::optional<protocol::Contained> check_after_task();
};

}  // namespace ferry::detail
