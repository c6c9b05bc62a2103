// SPDX-License-Identifier: BSD-3-Clause
// A worker's containment, set up in ferry-worker itself before its hello: its descendants end
// with it, ferry::Limits hold while a task runs, and with a ferry::Sandbox the task cannot open
// the network, exec, ptrace or touch files outside the allowed paths. When a task goes past a
// limit or makes a denied system call, the worker says so in a contained frame
// (wire/protocol.hpp) and exits with WorkerExit::contained; the host turns that into a
// ResourceLimitError or SandboxViolationError and replaces the worker.
#pragma once

#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/export.hpp>

#include "wire/protocol.hpp"

namespace ferry::detail {

/// What the host asks for, from ferry-worker's command line:
///   --limits MEMORY,CPU_SECONDS,OPEN_FILES,PROCESSES,FILE_SIZE   (0 = none)
///   --sandbox FLAGS   (present = enabled; bits: 1 network allowed, 2 exec allowed, 4 best effort)
///   --read PATH, --write PATH   (repeatable; the host adds plugin directories, the FERRY_WRAP
///                                cache, the libraries it has loaded and Sandbox::read/write)
///   --private-tmp 1   (the one --write PATH is the executor's private directory: shown at /tmp,
///                      /var/tmp and /dev/shm too, in a mount namespace of the worker's own;
///                      refused, the worker not started, unless it is a directory of this
///                      user's of mode 0700 reached through no link)
///   --private-tmp-id DEV:INO   (that directory's device and inode as the host made it: any other
///                               directory at its name is refused too)
///   --terminal-utf8 0|1   (whether the host's terminal takes UTF-8, by the host's locale: the
///                          relay escapes bytes past ASCII to one that does not; absent, this
///                          process's environment says)
struct ContainmentConfig {
  protocol::TaskLimits limits;
  bool sandbox = false;
  bool network = false;
  bool exec = false;
  bool best_effort = false;
  bool private_tmp = false;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> private_tmp_id;  // device, inode
  std::optional<bool> terminal_utf8;
  std::vector<std::string> read;
  std::vector<std::string> write;
};

class FERRY_INTERNAL_API Containment {
 public:
  /// In the worker, before its hello. `channel_fd` is where contained frames go (from signal
  /// handlers too). Descendants are always contained: a guardian process ends them when the
  /// worker has gone (every process of the worker's pids cgroup as root, else of its own user
  /// namespace, else every process carrying the worker's FERRY_WORKER_TAG, the worker being
  /// their subreaper meanwhile).
  /// "" on success; else why it could not (the worker exits with WorkerExit::containment).
  std::string setup(const ContainmentConfig& config, int channel_fd);
  /// Before each task: the limits of this task (the executor's, or a limits frame's). In a
  /// sandbox a task's own limits (below the executor's) are made hard limits: RLIMIT_DATA,
  /// RLIMIT_NOFILE, RLIMIT_FSIZE (and RLIMIT_NPROC in the user namespace) with their hard values
  /// lowered, and pids.max written by the guardian, lower only. No task, and no later call, can
  /// raise them again: the host sends this worker only calls whose limits fit under them
  /// (Dispatcher::harden_limits); a lower memory, open_files or file_size lowers them further,
  /// and a processes limit, once lowered, is final.
  void begin_task(const protocol::TaskLimits& limits);
  /// After a task that failed: a limit that explains the failure (bad_alloc with a memory limit,
  /// a full descriptor table, a refused fork at the processes limit), else nullopt.
  std::optional<protocol::Contained> explain_failure(std::string_view exception_type,
                                                     std::string_view message);
  /// After a task that succeeded: whether a fork was refused by the pids cgroup since the last
  /// look (the task met its processes limit and coped). Reads the cgroup: the caller decides how
  /// often (once per burst of tasks, not once per task).
  bool fork_refused();
  /// On a clean exit: ends the children left behind (only needed without a pids cgroup; with
  /// one, the guardian ends every process of the worker's cgroup when the worker has gone).
  void finish();
  /// The executor's limits (--limits): those of every task until a limits frame says otherwise.
  const protocol::TaskLimits& executor_limits() const { return executor_limits_; }
  /// Whether the worker is in a memory cgroup of its own (a sandbox's memory ceiling).
  bool memory_cgroup() const noexcept { return !memory_cgroup_.empty(); }
  /// Whether that cgroup has met its limit: memory.failcnt or memory.memsw.failcnt is not 0, or
  /// reading them fails with ENOMEM (the read's buffer is charged to the full cgroup). A charge
  /// made in a system call (a write to a memfd or tmpfs, a socket's buffer: the channel's send
  /// fails with ENOBUFS) fails there instead of stopping in a page fault, and the kernel sends no
  /// OOM notification for it. When the channel then fails, this tells the host why
  /// (WorkerExit::memory_ceiling).
  bool memory_ceiling_met() const;
  /// What setup built ("pids cgroup, landlock ABI 7, seccomp, ..."), for FERRY_DEBUG and tests.
  const std::string& summary() const { return summary_; }

 private:
  enum Resource { data, nofile, fsize, nproc, resources };
  std::string make_cgroup();
  bool join_cgroup(std::uint64_t ceiling);
  std::string make_memory_cgroup(const std::string& dir, std::uint64_t limit);
  /// As root on cgroup v1: the worker's cpuacct cgroup, <cpuacct_cgroup_parent()>/ferry/<name_>,
  /// where the host measures cpu_time (worker_cgroup_cpu_ns); "" when it cannot be made (the host
  /// then measures the worker alone). On cgroup v2 its pids cgroup counts CPU time itself.
  std::string make_cpu_cgroup();
  /// The guardian, and with `relay_output` (a sandbox) the relay of stdout and stderr, which
  /// writes at most `file_size` bytes into a file (0: no limit), as the task would have.
  std::string start_guardian(bool relay_output, std::uint64_t file_size, bool ascii_only);
  std::string enter_user_namespace();
  std::string build_sandbox(const ContainmentConfig& config);
  /// `made`: the directory as check_private_dir saw it; one found at its name now that is not it
  /// is refused (`refused` says why, nothing is shown).
  std::vector<std::string> show_private_tmp(const std::string& dir, const struct stat& made,
                                            std::vector<std::string> needed, std::string& refused);
  /// The soft limit `value` (0: as the worker started); in a sandbox a value that is not 0 is the
  /// hard limit too.
  void set_limit(Resource r, std::uint64_t value);
  void set_processes(std::uint64_t value);
  std::uint64_t cgroup_refusals() const;

  protocol::TaskLimits executor_limits_;
  protocol::TaskLimits current_;        // what the last begin_task applied
  rlimit start_[resources]{};           // as the worker started (0 = back to these)
  rlim_t soft_[resources]{};            // the soft limits in force
  rlim_t hard_[resources]{};            // the hard limits in force (lowered by a task's own, in a sandbox)
  bool harden_ = false;                 // a sandbox: a task's own limits are hard limits
  bool root_ = false;
  bool user_namespace_ = false;         // the worker made one (non-root): RLIMIT_NPROC binds in it
  std::string cgroup_;                  // the worker's pids cgroup, "" without one
  std::string memory_cgroup_;           // a sandbox's memory ceiling, "" without one
  std::string cpu_cgroup_;              // where cpu_time is measured (root, v1), "" without one
  // pids.max and pids.events of the cgroup the worker is in (with a ceiling: its "task" child),
  // and pids.events of the worker's cgroup over it (-1 without a ceiling). In a sandbox pids.max
  // is never open here (the guardian writes it: guardian_requests_); were it, it would be closed
  // once a task's own processes limit is written (-1 then: the task could write it).
  int pids_max_fd_ = -1, pids_events_fd_ = -1, ceiling_events_fd_ = -1;
  // In a sandbox with a pids cgroup: the socket on which the guardian is asked to write pids.max
  // (start_guardian), which then is never open here (pids_max_fd_ -1).
  int guardian_requests_ = -1;
  std::uint64_t pids_requests_ = 0;  // the sequence of the last request to the guardian
  int memory_failcnt_fd_[2] = {-1, -1};  // memory.failcnt, memory.memsw.failcnt of memory_cgroup_
  std::uint64_t refusals_ = 0;          // "max" count of pids.events when the task began
  int own_processes_ = 1;               // the worker's own threads (guardian, relay) a limit counts
  int channel_ = -1;
  std::string tag_;                     // FERRY_WORKER_TAG without a cgroup
  std::string name_;                    // of its cgroups, and its tag: new_worker_cgroup_name()
  std::string summary_;
};

}  // namespace ferry::detail
