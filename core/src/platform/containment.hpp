// SPDX-License-Identifier: BSD-3-Clause
// What this machine offers to contain a worker (ferry::Limits, ferry::Sandbox, and the rule that
// a worker's descendants end with it), probed once per process. The host refuses a sandbox it
// cannot build (unless best effort); `ferry info` prints the same facts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

struct ContainmentSupport {
  bool root = false;               // effective uid 0 (pids cgroups; RLIMIT_NPROC does not bind root)
  bool user_namespaces = false;    // this process can create a user namespace
  bool pid_namespace = false;      // PID namespaces can be made (not used: see "descendants")
  bool network_namespace = false;  // a worker can have a network namespace of its own
  int landlock_abi = 0;            // 0: no Landlock
  bool seccomp = false;            // seccomp-bpf filters
  bool pids_cgroup = false;        // a pids cgroup can be made per worker (processes limit as root)
  bool memory_cgroup = false;      // a memory cgroup can be made per worker (a sandbox's ceiling, root)
  /// How a worker's descendants end with it: "pids cgroup", "user namespace" or
  /// "subreaper and sweep".
  std::string descendants;
  /// How Limits::processes is enforced: "pids cgroup", "RLIMIT_NPROC in a user namespace", "none".
  std::string processes;
  /// How Limits::memory is enforced: "RLIMIT_DATA, and in a sandbox a memory cgroup" or
  /// "RLIMIT_DATA (private memory only)".
  std::string memory;
};

/// Where a worker's pids cgroup goes (as root): the pids cgroup of this process (v1), or the
/// root of a v2 hierarchy when this process is in it; "" when there is none. Not exported.
std::string pids_cgroup_parent();

/// Where a sandboxed worker's memory cgroup goes (as root): the memory cgroup of this process
/// (cgroup v1); "" when there is none or it cannot be written. Not exported.
std::string memory_cgroup_parent();
/// Where sandboxed workers make their memory cgroups: memory_cgroup_parent()/ferry; "" without
/// a parent. Read once (the host asks at every worker's hello, under its pool's lock).
std::string memory_cgroups_base();
/// Where a worker's cpuacct cgroup goes (as root, cgroup v1): the cpuacct cgroup of this process
/// (mounted alone or with cpu); "" when there is none or it cannot be written. Not exported.
std::string cpuacct_cgroup_parent();
/// The CPU time (ns) that process `pid`'s own worker cgroup has counted: its cpuacct cgroup's
/// cpuacct.usage (v1), or its pids cgroup's cpu.stat (v2). The worker's and every descendant's,
/// those that have ended included. nullopt when `pid` is in no cgroup of its own.
std::optional<std::uint64_t> worker_cgroup_cpu_ns(int pid);
/// A new name for a worker's own cgroups (pids, memory) in <parent>/ferry, and for its tag:
/// "<pid>.<pid namespace inode>.<16 random hex digits>" (without random bytes, the time since
/// boot in ns). Not the pid alone, nor the pid and its start time (which counts in ticks of
/// 10 ms): a guardian still cleaning up after a worker that ended must never find a later worker
/// given the same pid under the name it empties.
std::string new_worker_cgroup_name();
/// Whether `dir` is one of worker `pid`'s cgroups in `base`: <base>/<pid>.<...>.
bool is_worker_cgroup(const std::string& dir, const std::string& base, int pid);
/// Removes the cgroups in `base` (<parent>/ferry) of workers of this PID namespace whose pid has
/// no process any more, when they are empty: left by a guardian that could not finish. One that
/// still has processes (a guardian still at work empties it), whose pid was given to another
/// process since, or of another PID namespace, stays.
void remove_stale_worker_cgroups(const std::string& base);
/// The cgroup v1 memory directory process `pid` is in now; "" when it cannot be told.
std::string memory_cgroup_of_process(int pid);

/// Why a sandbox cannot be made with Landlock ABI `abi` (1 to 5): signal scoping came with ABI 6.
/// Not exported (the worker and containment_missing).
std::string landlock_scope_missing(int abi);

/// The shared temporary directories (/tmp, /var/tmp, /dev/shm), each by its real path and once,
/// that a sandbox may show its private directory at without hiding any of `needed` (what the
/// worker must still reach by path: what it reads, its own files): none of `needed` lies at or
/// under one, nor is one inside a `needed` directory. The worker decides, with its own files.
FERRY_INTERNAL_API std::vector<std::string> temp_dirs_to_hide(const std::vector<std::string>& needed);

/// The Landlock ABI the running kernel offers; 0 when none.
int landlock_abi();

/// The facts of this machine for this process (probed on first call, then cached; thread-safe).
FERRY_INTERNAL_API const ContainmentSupport& containment_support();

/// Why a sandbox (`sandbox`, with the network off unless `network`) and a processes limit
/// (`processes_limit`) cannot be built here: "" when they can. Best effort asks nothing of this.
FERRY_INTERNAL_API std::string containment_missing(const ContainmentSupport& s, bool sandbox,
                                                   bool network, bool processes_limit);

}  // namespace ferry::detail
