// SPDX-License-Identifier: BSD-3-Clause
// The host's half of containment (ferry::Limits, ferry::Sandbox): what a worker is told at
// launch, the private temporary directory of a sandboxed executor, the errors a contained task
// ends with, and the CPU time the manager samples. The worker's half is worker/containment.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>
#include <ferry/executor.hpp>

#include "platform/fd.hpp"
#include "wire/protocol.hpp"

namespace ferry::detail {

/// ferry::Limits as the wire carries them.
protocol::TaskLimits task_limits(const Limits& l);
/// `base` with every non-zero field of `over` in its place (SubmitOptions::limits).
protocol::TaskLimits merge_limits(const protocol::TaskLimits& base, const Limits& over);
bool any_limit(const protocol::TaskLimits& l);

/// Refuses options a pool cannot honour here: a sandbox or a processes limit this machine cannot
/// build (unless Sandbox::best_effort), or containment asked of a backend other than "local".
/// @throws ferry::Error or std::invalid_argument.
void check_containment(const ExecutorOptions& options);

/// Where a sandboxed executor without Sandbox::write makes its private directory (PrivateTempDir):
/// `base` is $TMPDIR when no other user could change what is made under it (untrusted_way_reason
/// of the place: a directory of theirs, one writable by others and not sticky, their link on the
/// way), else /tmp; `tmpdir_refused` says why $TMPDIR was passed over (empty when it was not set
/// or was taken). When /tmp fails that check too, `base` is empty and `error` says why (the
/// executor then refuses to start). For PrivateTempDir and `ferry info`.
struct PrivateDirPlace {
  std::filesystem::path base;
  std::string tmpdir_refused;
  std::string error;
};
FERRY_INTERNAL_API PrivateDirPlace private_dir_place();

/// A sandboxed executor's writable directory when Sandbox::write is empty: made 0700 under
/// $TMPDIR, or under /tmp when another user could change what is made under $TMPDIR
/// (untrusted_way_reason of the place: a directory of theirs, one writable by others and not
/// sticky, their link on the way; FERRY_DEBUG says so); ferry::Error when /tmp fails that check
/// too. Removed with everything in it when the object dies, if it is still the directory made
/// (changed()); else left as it is, and said on stderr. A worker checks
/// it too before it uses it (worker/containment.hpp).
///
/// A host that ends without destroying it: exit() (or quick_exit()) removes every one this
/// process made and still has (an exit handler; never in a child of fork(), whose copies are the
/// parent's), within 1 s for all of them: the workers still run then, and what a task keeps
/// writing is left, for the sweep below. What nothing in the host can handle (SIGKILL, abort, a power loss) the next one
/// made in the same place removes: each holds a flock on its directory for its life, taken
/// before the directory has its name (made as `.ferry-sandbox-XXXXXX`, locked, then renamed to
/// `ferry-sandbox-XXXXXX-locked`); a directory of that name, this user's, mode 0700, not a link,
/// that no process holds locked is a dead host's (sweep_stale_private_dirs).
class PrivateTempDir {
 public:
  PrivateTempDir() = default;
  explicit PrivateTempDir(bool make);
  PrivateTempDir(PrivateTempDir&& o) noexcept;
  PrivateTempDir& operator=(PrivateTempDir&&) = delete;
  ~PrivateTempDir();
  const std::filesystem::path& path() const noexcept { return path_; }
  /// "" while the directory at path() is the one made (same device and inode, ours, writable by
  /// no one else); else the path and what is there instead ("(owned by uid 65534, mode 0777)",
  /// "(another directory)", "(No such file or directory)"): a worker refuses it (exit 70), and
  /// the pool's start failure says why.
  std::string changed() const;
  /// The device and inode of the directory made (ferry-worker's --private-tmp-id).
  std::uint64_t dev() const noexcept { return dev_; }
  std::uint64_t ino() const noexcept { return ino_; }

  struct Live;  // its entry in the process's table of live directories (for exit)

 private:
  std::filesystem::path path_;
  std::uint64_t dev_ = 0, ino_ = 0;  // of the directory made
  Fd lock_;                          // the directory, flocked (LOCK_SH) while it lives; O_CLOEXEC
  std::unique_ptr<Live> live_;
};

/// Removes the private directories in `base` that their hosts left when they died without
/// removing them (SIGKILL, abort...): each one named `ferry-sandbox-XXXXXX-locked` that is a
/// directory (not a link), this user's, mode 0700, and that no process holds locked (LOCK_EX |
/// LOCK_NB succeeds), with remove_tree. Never a live pool's, of any process or PID namespace (its
/// lock), nor one of an older ferry (named `ferry-sandbox-XXXXXX`, which held no lock). Stops
/// at `deadline`, wherever it is (reading `base`, inside a tree): what is left, still named so
/// and unlocked, is a later sweep's. Returns how many it removed. PrivateTempDir calls it once
/// its own directory is made and locked, with a budget of 500 ms.
std::size_t sweep_stale_private_dirs(const std::filesystem::path& base, std::chrono::steady_clock::time_point deadline);

/// `p` absolute and with every link resolved (std::filesystem::weakly_canonical): the form in
/// which a sandbox's paths reach its worker, resolved when the pool is made, before any task ran.
/// The worker refuses a path with a link on the way (a task that can write a directory on it may
/// have put one there since, to point the next worker's rule anywhere).
std::string resolved_path(const std::string& p);

/// What a sandboxed worker may read: Sandbox::read, the plugin directories, the FERRY_WRAP cache's
/// plugins (wrap_plugin_dir, made if missing) and every shared library loaded in this process now
/// (so that a plugin the host loaded can be loaded by the worker); resolved (resolved_path). The
/// pool computes it once.
std::vector<std::string> sandbox_read_paths(const ExecutorOptions& options, const Sandbox& sandbox);

/// `search_path` (LD_LIBRARY_PATH's value, split at ':' and ';' as the loader splits it) without
/// the entries at or under one of `task_writable` (a sandbox's write paths, its private
/// directory and the places it is shown at), nor those with one of them inside (the loader
/// searches an entry's capability subdirectories too: glibc-hwcaps/<level>, tls, x86_64...): the
/// loader searches it at every dlopen in the worker, before a plugin's RUNPATH, so a library one
/// call put there would be loaded by a later plugin's. Each entry left out is logged under
/// FERRY_DEBUG.
std::string search_path_outside(std::string_view search_path, const std::vector<std::string>& task_writable);

/// The containment part of ferry-worker's command line (worker/containment.hpp reads it): the
/// executor's limits, and with a sandbox its flags and the paths it may read (`read`, from
/// sandbox_read_paths, and the libraries loaded since, outside the writable paths) and write
/// (with `private_tmp`, "--private-tmp 1" and its "--private-tmp-id DEV:INO": the worker shows
/// that directory at the shared temporary directories too, temp_dirs_to_hide, and refuses any
/// other directory at its name). `sandbox` is the executor's, its paths
/// resolved once (Pool::sandbox_), as `private_tmp` is.
std::vector<std::string> containment_args(const ExecutorOptions& options, const Sandbox& sandbox,
                                          const PrivateTempDir* private_tmp,
                                          const std::vector<std::string>& read);

/// The error a task ends with when its worker reported `c` (a contained frame).
std::exception_ptr contained_error(const protocol::Contained& c, const std::string& task, int pid);
/// The error for a worker that died of `signal` without a contained frame, when the executor's
/// containment explains it (SIGXFSZ with a file size limit, SIGSYS in a sandbox); else nullptr.
std::exception_ptr containment_death(int signal, const protocol::TaskLimits& limits, bool sandbox,
                                     const std::string& task, int pid);

/// The error of a call whose worker's memory cgroup (the sandbox's memory ceiling, `ceiling`
/// bytes) was full; `how` adds how that was told ("" for the kernel's notification).
std::exception_ptr memory_ceiling_error(const std::string& task, int pid, std::uint64_t ceiling,
                                        const std::string& how);

/// A sandboxed worker's memory ceiling, watched from the host (worker/containment.cpp makes the
/// cgroup, <memory_cgroups_base()>/<pid>.<pid namespace>.<random>, and joins it): the kernel's
/// OOM notification for it, an eventfd registered through cgroup.event_control, and its
/// memory.oom_control to tell a full cgroup from its removal (which notifies too). The watcher is
/// outside the cgroup: inside, a thread stopped with the task at its first page fault (a forked
/// task's copy-on-write stack).
struct MemoryCeilingWatch {
  Fd event;    // readable: look at the cgroup (reached())
  Fd control;  // memory.oom_control, read at each notification
  /// Registers for worker `pid`'s cgroup; empty (`event` invalid) when it is in none of its own,
  /// or the registration failed (logged). The kernel's OOM killer is still on in it.
  static MemoryCeilingWatch of(int pid);
  /// Once `event` is polled: turns the cgroup's OOM killer off. False when it could not.
  bool stop_oom_killer();
  /// After `event` was readable: consumes the notification; true when the cgroup is out of
  /// memory (its task stopped at the ceiling).
  bool reached();
};

/// CPU time (user + system) of worker `pid` in clock ticks: where it has a cgroup of its own (root),
/// of everything in that cgroup (its descendants too, ended or not: worker_cgroup_cpu_ns), else
/// of the process alone; UINT64_MAX when it cannot be read.
std::uint64_t cpu_ticks(int pid);
/// Clock ticks per second.
std::uint64_t ticks_per_second();

}  // namespace ferry::detail
