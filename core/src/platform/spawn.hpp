// SPDX-License-Identifier: BSD-3-Clause
// Starting and reaping worker processes: posix_spawn, pidfd, exit status. No signal handlers.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"

namespace ferry::detail {

struct SpawnedProcess {
  pid_t pid = -1;
  Fd pidfd;  // readable once the process exited; -1 on kernels without pidfd_open
};

/**
Starts `exe` with `args` (argv[1..]) and exactly `env`, the descriptor `channel_fd` as fd 3,
stdin from /dev/null, stdout and stderr shared with the host, and nothing else open. Signal mask and dispositions are reset to defaults, so
the host's own signal setup never leaks into workers.
@throws std::system_error (errno of the failed exec or spawn, e.g. ENOENT, EACCES).
*/
FERRY_INTERNAL_API SpawnedProcess spawn_process(const std::filesystem::path& exe,
                                                const std::vector<std::string>& args,
                                                const std::vector<std::string>& env,
                                                int channel_fd);

/// The environment of this process with `overrides` applied ("KEY=VALUE" strings).
FERRY_INTERNAL_API std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides);

/// How a process ended, from waitpid's status.
struct ExitStatus {
  bool known = false;   // false when the status could not be collected (e.g. SIGCHLD ignored)
  int signal = 0;       // terminating signal, 0 if it exited
  int exit_code = -1;   // exit code, -1 if signalled
  std::string detail;   // where and why, for a worker on another node ("rank 2 on node7 ...")
};

/// Reaps `pid` if it has exited (non-blocking); nullopt-like `known=false` when still running.
FERRY_INTERNAL_API bool try_reap(pid_t pid, ExitStatus& out);
/// Blocks until `pid` exits and reaps it.
FERRY_INTERNAL_API ExitStatus reap(pid_t pid);

/// `program` if it is an executable regular file; for a bare name (no slash), the first such file
/// of that name in $PATH. nullopt when there is none.
FERRY_INTERNAL_API std::optional<std::filesystem::path> find_program(
    const std::filesystem::path& program);

/// "SIGSEGV" etc.
FERRY_INTERNAL_API std::string signal_name(int sig);

}  // namespace ferry::detail
