// SPDX-License-Identifier: BSD-3-Clause
// Starting and reaping worker processes: posix_spawn, pidfd, exit status. No signal handlers.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ferry/backend.hpp>

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
SpawnedProcess spawn_process(const std::filesystem::path& exe, const std::vector<std::string>& args,
                             const std::vector<std::string>& env, int channel_fd);

/// The environment of this process with `overrides` applied ("KEY=VALUE" strings).
std::vector<std::string> merged_environment(const std::vector<std::pair<std::string, std::string>>& overrides);

/// How a process ended, from waitpid's status.
using ExitStatus = ferry::WorkerExit;

/// Reaps `pid` if it has exited (non-blocking); nullopt-like `known=false` when still running.
bool try_reap(pid_t pid, ExitStatus& out);
/// Blocks until `pid` exits and reaps it.
ExitStatus reap(pid_t pid);

/// `program` if it is an executable regular file; for a bare name (no slash), the first such file
/// of that name in $PATH. nullopt when there is none.
std::optional<std::filesystem::path> find_program(const std::filesystem::path& program);

/// "SIGSEGV" etc.
std::string signal_name(int sig);

}  // namespace ferry::detail
