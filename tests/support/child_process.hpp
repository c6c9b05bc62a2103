// SPDX-License-Identifier: BSD-3-Clause
// Running a program as a child of the test: posix_spawn with stdin from /dev/null, a file or a
// pipe, stdout and stderr into files of a directory (read back once it ended), the environment
// changed per run; and the small file helpers that go with it.
#pragma once

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;  // NOLINT: POSIX

namespace support {

/// The whole content of a file ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Replaces the content of a file with `text`.
inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

/// This process's environment with `changes` applied (a value replaces; "" unsets), as
/// NAME=VALUE strings.
inline std::vector<std::string> environment(const std::map<std::string, std::string>& changes) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (auto eq = kv.find('='); eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : changes) {
    if (v.empty()) {
      vars.erase(k);
    } else {
      vars[k] = v;
    }
  }
  std::vector<std::string> out;
  for (const auto& [k, v] : vars) out.push_back(k + "=" + v);
  return out;
}

/// How a child is started (spawn). Its stdout goes to `dir`/stdout unless `stdout_fd` is given.
struct ChildOptions {
  std::map<std::string, std::string> env;  ///< changes to this process's environment; "" unsets
  /// stdin: a file `dir`/stdin holding this (with `pipe`: written to the pipe by run()); none:
  /// /dev/null.
  std::optional<std::string> input;
  bool pipe = false;                ///< stdin: a pipe whose write end is Child::stdin_fd
  std::optional<int> stdout_fd;     ///< stdout: this descriptor instead of `dir`/stdout
  std::optional<int> stderr_fd;     ///< stderr: this descriptor instead of `dir`/stderr
  bool stderr_to_stdout = false;    ///< stderr: the same file as stdout
  bool process_group = false;       ///< in a process group of its own (for kill(-pid, ...))
};

/// A started child: its pid and, with ChildOptions::pipe, the write end of its stdin.
struct Child {
  pid_t pid = -1;
  int stdin_fd = -1;
};

/// Starts `argv` (argv[0] searched on PATH when it has no '/') with its output in files of `dir`.
inline Child spawn(const std::vector<std::string>& argv, const std::filesystem::path& dir,
                   const ChildOptions& options = {}) {
  REQUIRE(!argv.empty());
  std::vector<std::string> env_strings = environment(options.env);
  std::vector<std::string> argv_copy = argv;
  std::vector<char*> args, envp;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  const std::filesystem::path in = dir / "stdin", out = dir / "stdout", err = dir / "stderr";
  int pipe_fds[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (options.pipe) {
    // Close-on-exec: the child keeps only its dup on fd 0, so it sees the end of input.
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      posix_spawn_file_actions_destroy(&fa);
      FAIL("pipe2: " << std::strerror(errno));
    }
    posix_spawn_file_actions_adddup2(&fa, pipe_fds[0], 0);
  } else if (options.input) {
    write_file(in, *options.input);
    posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  if (options.stdout_fd) {
    posix_spawn_file_actions_adddup2(&fa, *options.stdout_fd, 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  if (options.stderr_fd) {
    posix_spawn_file_actions_adddup2(&fa, *options.stderr_fd, 2);
  } else if (options.stderr_to_stdout) {
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (options.process_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (options.pipe) ::close(pipe_fds[0]);
  if (rc != 0 && options.pipe) ::close(pipe_fds[1]);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << argv[0] << ": " << std::strerror(rc));
  return {pid, pipe_fds[1]};
}

/// Waits for `pid`: its exit status, 128 + the signal that ended it, or -1 when it cannot be
/// waited for (not a child, already reaped): never a made-up 0.
inline int wait_status(pid_t pid) {
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (r != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// Writes all of `text` to `fd`; false once the reader is gone (EPIPE, where SIGPIPE is blocked).
inline bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// How a child ended, and what it wrote.
struct ProcessResult {
  int status = -1;  ///< exit status, or 128 + signal
  std::string out;  ///< empty when stdout went elsewhere (ChildOptions::stdout_fd)
  std::string err;  ///< empty when stderr went elsewhere (ChildOptions::stderr_fd, stderr_to_stdout)
};

/// Runs `argv` to its end (spawn, then wait): with ChildOptions::pipe, `input` is written to its
/// stdin from a thread of its own, which stops early if the child stops reading.
inline ProcessResult run(const std::vector<std::string>& argv, const std::filesystem::path& dir,
                         const ChildOptions& options = {}) {
  Child child = spawn(argv, dir, options);
  std::thread writer;
  if (options.pipe) {
    writer = std::thread([fd = child.stdin_fd, input = options.input.value_or(std::string())] {
      sigset_t pipe_signal;
      sigemptyset(&pipe_signal);
      sigaddset(&pipe_signal, SIGPIPE);
      ::pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
      write_all(fd, input);  // the child may stop reading early: that is not an error here
      ::close(fd);
    });
  }
  ProcessResult r;
  r.status = wait_status(child.pid);
  if (writer.joinable()) writer.join();
  r.out = read_file(dir / "stdout");
  if (!options.stderr_fd && !options.stderr_to_stdout) r.err = read_file(dir / "stderr");
  return r;
}

}  // namespace support
