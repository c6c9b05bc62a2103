// SPDX-License-Identifier: BSD-3-Clause
// Shared test helpers: executor options pointing at the build tree, waiting on conditions with a
// deadline (never sleeping to synchronise), and child-process accounting.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ferry/ferry.hpp>

#include "processes.hpp"
#include "sanitizer.hpp"

namespace support {

/// Set in a forked child of a test: LeakSanitizer's check at its exit is off (main.cpp).
extern bool leak_check_off;

using namespace std::chrono_literals;

/// How many times longer than in the optimised build an upper limit on what processes take (to
/// start, to be killed, to end) is under a sanitizer (FERRY_TEST_SHADOW_MEMORY): a process with
/// ASan's terabytes of shadow mappings takes long to set up and tear down, the more so on a
/// loaded 2-core machine.
inline constexpr int sanitizer_slowdown = FERRY_TEST_SHADOW_MEMORY ? 3 : 1;

/// `limit` in the optimised build, sanitizer_slowdown times it under a sanitizer.
constexpr std::chrono::milliseconds scaled(std::chrono::milliseconds limit) { return limit * sanitizer_slowdown; }

/// The promise: a worker's descendants are gone within 2 s of its end (6 s under a
/// sanitizer: hundreds of them on a loaded 2-core machine took more than 2 s).
inline constexpr std::chrono::milliseconds descendants_end_within = scaled(2s);

/// Options for an executor of `workers` running the freshly built worker and plugins.
inline ferry::ExecutorOptions options(std::size_t workers = 2) {
  ferry::ExecutorOptions o;
  o.max_workers = workers;
  o.worker_path = FERRY_TEST_WORKER;
  o.plugin_dirs = {FERRY_TEST_PLUGIN_DIR};
  return o;
}

/// Polls `pred` until it holds or `timeout` passes; true if it held.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(200));  // polling interval, not a sync
  }
  return true;
}

/// What `f` gave, as one line: "returned <its number>", or the error it threw, as
/// "PluginError: <what>", "SerializationError: <what>" or "other: <what>".
template <class F>
std::string outcome_of(F&& f) {
  try {
    return "returned " + std::to_string(f());
  } catch (const ferry::PluginError& e) {
    return std::string("PluginError: ") + e.what();
  } catch (const ferry::SerializationError& e) {
    return std::string("SerializationError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

/// Every descriptor this process can still open, taken (on /dev/null) but `spare` of them, until
/// release() or the scope's end: the process at its RLIMIT_NOFILE.
class DescriptorsTaken {
 public:
  explicit DescriptorsTaken(int spare = 0) {
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fds_.push_back(fd);
    for (int i = 0; i < spare && !fds_.empty(); ++i) {
      ::close(fds_.back());
      fds_.pop_back();
    }
  }
  DescriptorsTaken(const DescriptorsTaken&) = delete;
  DescriptorsTaken& operator=(const DescriptorsTaken&) = delete;
  ~DescriptorsTaken() { release(); }
  void release() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

 private:
  std::vector<int> fds_;
};

/// Runs `child` in a forked child of the test, which exits with what it returns (101 when it
/// throws, its message on stderr): through std::exit when `exit_handlers` (static destructors
/// and atexit run), else _exit. Returns that exit code; -1 when it did not end within `deadline`
/// (then it is killed), -2 when a signal ended it. Fails the test when fork fails. doctest's
/// checks do not cross a fork: a child says what went wrong by its code.
template <class F>
int exit_code_of_child(F&& child, std::chrono::milliseconds deadline, bool exit_handlers = false) {
  std::fflush(nullptr);  // nothing buffered is written twice
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 100;
    try {
      code = child();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 101;
    }
    leak_check_off = true;  // see main.cpp: not reliable without the parent's threads
    if (exit_handlers) std::exit(code);
    _exit(code);
  }
  int status = -1;
  if (!wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, deadline)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
}

/// In a forked child: as root, become nobody (65534), as an ordinary user's process runs (root
/// reads every file, so what an unreadable file does needs another user); already another user,
/// nothing to do. False when it could not.
inline bool become_another_user() {
  if (::geteuid() != 0) return true;
  const uid_t nobody = 65534;
  if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
      ::setresuid(nobody, nobody, nobody) != 0)
    return false;
  // An ordinary user's processes are dumpable; the change of credentials made this one not.
  ::prctl(PR_SET_DUMPABLE, 1);
  return true;
}

/// This process's cgroup v1 directory of `controller` ("pids", "memory"), where ferry makes its
/// workers' cgroups (in its "ferry" directory); "" when there is none.
inline std::string own_cgroup_v1(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    if (("," + line.substr(a + 1, b - a - 1) + ",").find("," + controller + ",") == std::string::npos) continue;
    std::string path = line.substr(b + 1);
    return "/sys/fs/cgroup/" + controller + (path == "/" ? "" : path);
  }
  return "";
}

/// The cgroups in `base` (a cgroup's "ferry" directory) named for worker `pid`:
/// "<pid>.<pid namespace>.<random>" (platform/containment.hpp, new_worker_cgroup_name).
inline std::vector<std::filesystem::path> worker_cgroups(const std::filesystem::path& base, int pid) {
  std::vector<std::filesystem::path> out;
  const std::string prefix = std::to_string(pid) + ".";
  std::error_code ec;
  for (std::filesystem::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind(prefix, 0) == 0) out.push_back(it->path());
  return out;
}

/// State letter of a process ('Z' zombie, 'R', 'S', ...), or 0 if it does not exist.
inline char process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return 0;
  return line[close + 2];
}

/// Pids of this process's children, with their state.
inline std::vector<std::pair<pid_t, char>> children() {
  std::vector<std::pair<pid_t, char>> out;
  for (const auto& [pid, p] : processes())
    if (p.parent == ::getpid()) out.emplace_back(pid, p.state);
  return out;
}

inline std::size_t zombies() {
  std::size_t n = 0;
  for (auto& [pid, state] : children())
    if (state == 'Z') ++n;
  return n;
}

/// Open descriptors of this process.
inline std::size_t open_fds() {
  std::size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

inline bool alive(pid_t pid) {
  char s = process_state(pid);
  return s != 0 && s != 'Z';
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), or 0: tells a process from a later
/// one that reuses its pid.
inline unsigned long long start_time(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // After the comm: state is field 3, starttime field 22.
  for (int i = 3; i < 22; ++i) rest >> field;
  unsigned long long t = 0;
  rest >> t;
  return t;
}

/// SIGKILLs, at scope exit (a failed REQUIRE's too), what a case started and a missing
/// containment would leave behind: a paused process that outlives the test holds ctest's output
/// open until its timeout. Only the very process added: it is held by a pidfd taken when added
/// (by its start time where there is no pidfd), so that one that ended, was reaped, and whose pid
/// went to another process meanwhile (forks beside the suite) is never the one killed. Add a pid
/// while its process is known to run (just reported, not yet told to end).
class KillLeftovers {
 public:
  KillLeftovers() = default;
  KillLeftovers(const KillLeftovers&) = delete;
  KillLeftovers& operator=(const KillLeftovers&) = delete;
  void add(pid_t pid) {
    if (pid <= 0) return;
    Held h{pid, -1, 0};
#ifdef SYS_pidfd_open
    h.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (h.pidfd < 0 && errno == ESRCH) return;  // already gone
#endif
    if (h.pidfd < 0 && (h.start = start_time(pid)) == 0) return;
    held_.push_back(h);
  }
  void add(const std::vector<pid_t>& pids) {
    for (pid_t p : pids) add(p);
  }
  ~KillLeftovers() {
    for (const Held& h : held_) {
      if (h.pidfd >= 0) {
#ifdef SYS_pidfd_send_signal
        ::syscall(SYS_pidfd_send_signal, h.pidfd, SIGKILL, nullptr, 0);
#endif
        ::close(h.pidfd);
      } else if (start_time(h.pid) == h.start) {
        ::kill(h.pid, SIGKILL);
      }
    }
  }

 private:
  struct Held {
    pid_t pid;
    int pidfd;
    unsigned long long start;
  };
  std::vector<Held> held_;
};

/// A fresh private directory, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() : TempDir(std::filesystem::temp_directory_path()) {}
  /// In `base` ("/tmp" itself, say, whatever $TMPDIR says).
  explicit TempDir(const std::filesystem::path& base) {
    std::string tmpl = (base / "ferry-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    path = p ? p : tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

/// A file that exists until the scope ends or release() is called: the crash plugin's
/// wait_while_exists(path), as a task or an initializer, holds its worker until then.
struct HeldFile {
  TempDir dir;
  std::filesystem::path path = dir.path / "hold";
  HeldFile() { std::ofstream(path).put('x'); }
  ~HeldFile() { release(); }
  HeldFile(const HeldFile&) = delete;
  HeldFile& operator=(const HeldFile&) = delete;
  void release() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

/// A copy of `from` at `to` (mode 0755) where each placeholder, a NUL-terminated string in the
/// file, reads its value instead, padded with NULs (a test plugin's search path, say). Throws
/// when a placeholder is missing or shorter than its value.
inline std::filesystem::path copy_with_strings(const std::filesystem::path& from, const std::filesystem::path& to,
                                               const std::vector<std::pair<std::string, std::string>>& strings) {
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& [placeholder, value] : strings) {
    const auto at = bytes.find(placeholder + '\0');
    if (at == std::string::npos || value.size() > placeholder.size())
      throw std::runtime_error("copy_with_strings: no room for '" + value + "' in " + from.string());
    bytes.replace(at, placeholder.size(), value + std::string(placeholder.size() - value.size(), '\0'));
  }
  std::ofstream(to, std::ios::binary | std::ios::trunc) << bytes;
  std::filesystem::permissions(to, std::filesystem::perms(0755), std::filesystem::perm_options::replace);
  return to;
}

/// Sets an environment variable for the scope.
struct ScopedEnv {
  std::string name;
  std::string old;
  bool had;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) {
    const char* v = std::getenv(name.c_str());
    had = v != nullptr;
    if (had) old = v;
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had) {
      ::setenv(name.c_str(), old.c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
};

/// Makes `dir` the working directory for the scope (of the whole process: for a test case that
/// runs alone in its process, as ctest runs them).
struct ScopedCwd {
  std::filesystem::path old = std::filesystem::current_path();
  explicit ScopedCwd(const std::filesystem::path& dir) { std::filesystem::current_path(dir); }
  ~ScopedCwd() {
    std::error_code ec;
    std::filesystem::current_path(old, ec);
  }
  ScopedCwd(const ScopedCwd&) = delete;
  ScopedCwd& operator=(const ScopedCwd&) = delete;
};

/// The process's stderr on descriptor `fd` (the caller's, left open) until restore() or the end
/// of the scope: what workers inherit, and a sandbox's relay writes to.
struct StderrTo {
  int saved = ::dup(STDERR_FILENO);
  explicit StderrTo(int fd) {
    if (saved < 0 || ::dup2(fd, STDERR_FILENO) != STDERR_FILENO) throw std::runtime_error("StderrTo: dup failed");
  }
  void restore() {
    if (saved < 0) return;
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    saved = -1;
  }
  ~StderrTo() { restore(); }
  StderrTo(const StderrTo&) = delete;
  StderrTo& operator=(const StderrTo&) = delete;
};

/// A pseudo-terminal: programs write to `terminal`; the test reads `master` (non-blocking).
struct Pty {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  int terminal = -1;
  Pty() {
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0 ||
        (terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 ||
        ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK) != 0) {
      close_both();
      throw std::runtime_error("Pty: no pseudo-terminal");
    }
  }
  /// Appends what the terminal has shown since the last call to `seen`.
  void read_into(std::string& seen) const {
    char buffer[4096];
    for (ssize_t n; (n = ::read(master, buffer, sizeof buffer)) > 0;) seen.append(buffer, static_cast<std::size_t>(n));
  }
  ~Pty() { close_both(); }
  Pty(const Pty&) = delete;
  Pty& operator=(const Pty&) = delete;

 private:
  void close_both() {
    if (terminal >= 0) ::close(terminal);
    if (master >= 0) ::close(master);
  }
};

}  // namespace support
