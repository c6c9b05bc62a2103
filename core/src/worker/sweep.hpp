// SPDX-License-Identifier: BSD-3-Clause
// The guardian's sweep (worker/containment.cpp, guardian_main): where no cgroup holds a worker's
// descendants, finds them in /proc and ends them, fast-forking ones included.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace ferry::detail {

/// Ends every live process `member` names, with SIGKILL, until two rounds in a row end none that
/// a round before had not already been sent a SIGKILL, or `limit_ms` has passed.
///
/// A round is a walk of /proc in pid order that probes each process as soon as it is listed, and,
/// between every few entries and at its end, a probe of every pid allocated since the last look
/// (/proc/sys/kernel/ns_last_pid): a process that forks and exits in a loop has a new pid every
/// ~100 us, always the newest, and a listing read in one go (as readdir does) names only processes
/// that are gone by the time each is looked at.
///
/// A probe opens a pidfd first and signals through it: `member(pid, pidfd)` decides on the process
/// the pidfd holds (what it reads under /proc/<pid> was that process if it is still alive after
/// the call: the probe checks), never on a later one given the same pid. `spared` (0: none) is
/// never signalled while `spared_alive()` says it lives.
struct SweepOutcome {
  int rounds = 0;
  int killed = 0;         // SIGKILLs sent
  bool gave_up = false;   // limit_ms passed with members still being found
};
SweepOutcome sweep_descendants(const std::function<bool(pid_t pid, int pidfd)>& member, pid_t spared,
                               const std::function<bool()>& spared_alive, std::int64_t limit_ms);

/// Whether the process `pidfd` holds (pid `pid`) is in the user namespace whose /proc/self/ns/user
/// is (`dev`, `ino`), or in one nested in it. The kernel shows a process's namespace only to who
/// may ptrace-read it: a process of another user, or an undumpable one, is not ours.
bool in_user_namespace(pid_t pid, int pidfd, dev_t dev, ino_t ino);

/// Whether the environment of the process `pidfd` holds (pid `pid`), as /proc shows it (as it was
/// at its last exec), has the entry `needle` ("NAME=value").
bool environment_holds(pid_t pid, int pidfd, const char* needle);

/// Up to `cap - 1` bytes of a file, NUL-terminated; -1 when it cannot be read.
ssize_t read_small(const char* path, char* buf, std::size_t cap);

}  // namespace ferry::detail
