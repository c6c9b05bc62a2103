// SPDX-License-Identifier: BSD-3-Clause
// A ferry-worker started on a socket pair, as the local backend starts one, for the test backends
// (tests/test_backend.cpp, tests/test_lifecycle.cpp) that implement ferry::Launcher themselves.
#pragma once

#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace support {

/// A worker started by spawn_worker: the host's end of its channel and the process.
struct SpawnedWorker {
  int channel = -1;
  pid_t pid = -1;
  int pidfd = -1;
};

/// Starts `program` (a ferry-worker) with its channel on descriptor 3 and `args` after the usual
/// ones. Called on the pool's manager thread by a test backend's launch(): a failure is `why`
/// and nullopt, never a doctest assertion (whose exception would go into the manager).
inline std::optional<SpawnedWorker> spawn_worker(const char* program, const std::vector<std::string>& args,
                                                 std::string& why) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    why = std::string("socketpair: ") + std::strerror(errno);
    return std::nullopt;
  }
  std::vector<std::string> argv = {program, "--fd", "3", "--parent", std::to_string(::getpid())};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears close-on-exec
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, program, &fa, nullptr, cargv.data(), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    why = std::string("posix_spawn failed: ") + std::strerror(rc);
    return std::nullopt;
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    why = std::string("pidfd_open: ") + std::strerror(errno);
    ::close(sv[0]);  // the worker sees its channel end and exits
    ::waitpid(pid, nullptr, 0);
    return std::nullopt;
  }
  return SpawnedWorker{sv[0], pid, pidfd};
}

}  // namespace support
