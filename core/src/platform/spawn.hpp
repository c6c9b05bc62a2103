// SPDX-License-Identifier: BSD-3-Clause
// Starting and reaping processes: posix_spawn, pidfd, exit status, $PATH. No signal handlers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/backend.hpp>
#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"
#include "platform/signals.hpp"  // how an ExitStatus's signal is named

namespace ferry::detail {

struct SpawnedProcess {
  pid_t pid = -1;
  Fd pidfd;  // readable once the process exited; -1 when pidfd_open failed (see pidfd_error)
  int pidfd_error = 0;  // why pidfd_open failed (ENOSYS: no such call; EMFILE: no descriptor left)
};

/**
Starts `exe` with `args` (argv[1..]) and exactly `env`: ferry's one way of starting a process
(workers, MPI agents' workers, the FERRY_WRAP compiler). stdin is /dev/null; the descriptor
`channel_fd` (if not -1) becomes fd 3; stdout and stderr are shared with this process, or both go
to the file `output` (created 0600, truncated) when it is given; nothing else is open. It starts
in `cwd` when one is given (before `output` is opened), else in this process's current directory.
With `output_fd` (not -1, and no `output`), stdout and stderr are that descriptor instead (a pipe's
write end, say). It stays in this process's process group: a ^C at the terminal reaches it too
(kill_process_tree ends it and what it started otherwise).
Signal mask and dispositions are reset to defaults, so the host's own signal setup never leaks
into children.
@throws std::system_error (errno of the failed exec or spawn, e.g. ENOENT, EACCES).
*/
FERRY_INTERNAL_API SpawnedProcess spawn_process(const std::filesystem::path& exe,
                                                const std::vector<std::string>& args,
                                                const std::vector<std::string>& env, int channel_fd,
                                                const std::filesystem::path& output = {},
                                                const std::filesystem::path& cwd = {},
                                                int output_fd = -1);

/// Stops `root` and every process descending from it (SIGSTOP first, so that none forks
/// meanwhile; found through /proc/PID/task/TID/children), then kills them all (SIGKILL): a
/// compiler driver killed alone left its cc1plus running. `root` must be a child of this process
/// not reaped yet (its pid cannot be another's). At most 4,096 processes.
void kill_process_tree(pid_t root) noexcept;

/// Whether `name` can be an environment variable's: not empty, no '=' and no NUL. "A=B" given as
/// a name made a second entry "A=B...=value" beside A's own: a check read the first, the loader
/// the last (an unjudged LD_PRELOAD).
bool environment_name(std::string_view name) noexcept;
/// The environment of this process with `overrides` applied ("KEY=VALUE" strings), one entry per
/// name. An override whose name is not environment_name, or whose value holds a NUL, is left out
/// (ExecutorOptions::env refuses them when the executor is made).
FERRY_INTERNAL_API std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides);

/// How a process ended, from waitpid's status.
using ExitStatus = ferry::WorkerExit;

/// Reaps `pid` if it has exited (non-blocking); nullopt-like `known=false` when still running.
FERRY_INTERNAL_API bool try_reap(pid_t pid, ExitStatus& out);
/// Blocks until `pid` exits and reaps it.
FERRY_INTERNAL_API ExitStatus reap(pid_t pid);

/// What /proc/<pid>/stat says of a process: its command name (field 2, which may hold spaces and
/// parentheses) and the fields after it, from the state on ("S 1234 ..."). nullopt when it
/// cannot be read.
struct ProcStat {
  std::string comm;
  std::string fields;
};
std::optional<ProcStat> read_proc_stat(long pid);

/// Reaps the ended helpers of ferry's workers (their guardian and output relay, which the worker
/// detaches: orphans, they become this process's children when it is PID 1 of its namespace, a
/// container's program without an init, or a child subreaper) that are this process's zombies.
/// Nothing else of its children is touched. Does nothing unless this process is such a reaper.
void reap_orphaned_helpers() noexcept;

/// Whether `file` is a regular file this process may execute (a relative path is taken from the
/// working directory, as posix_spawn takes it).
FERRY_INTERNAL_API bool is_executable_file(const std::filesystem::path& file);
/// `program` if it is an executable regular file; for a bare name (no slash), the first such file
/// of that name in $PATH. nullopt when there is none. ferry's only $PATH search.
FERRY_INTERNAL_API std::optional<std::filesystem::path> find_program(
    const std::filesystem::path& program);
/// A program and its arguments given as one setting (FERRY_CXX: "ccache g++", "g++ -O2"): the
/// whole value when it names a program (a path with spaces), else its words as a shell splits
/// them (split_shell_words); the whole value, alone, when it cannot be split. Never empty.
FERRY_INTERNAL_API std::vector<std::string> command_words(const std::string& given);

/// How many times this process's line has forked since libferry was loaded: 0 in the process
/// that loaded it, one more in each child of a fork() (a pthread_atfork handler; a child made by
/// clone() without fork semantics is not counted). An object that owns threads and channels
/// remembers the value it was made with: in a child, its threads do not exist and its channels
/// are its parent's. Not exported.
std::uint64_t fork_generation() noexcept;

}  // namespace ferry::detail
