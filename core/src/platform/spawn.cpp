// SPDX-License-Identifier: BSD-3-Clause
// posix_spawn with a clean descriptor table and default signal state; reaping by pid.
#include "platform/spawn.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string_view>
#include <system_error>

#include "platform/config.hpp"

extern char** environ;

namespace ferry::detail {

namespace {
struct FileActions {
  posix_spawn_file_actions_t fa;
  FileActions() { posix_spawn_file_actions_init(&fa); }
  ~FileActions() { posix_spawn_file_actions_destroy(&fa); }
};
struct SpawnAttr {
  posix_spawnattr_t attr;
  SpawnAttr() { posix_spawnattr_init(&attr); }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
};

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}
}  // namespace

SpawnedProcess spawn_process(const std::filesystem::path& exe, const std::vector<std::string>& args,
                             const std::vector<std::string>& env, int channel_fd,
                             const std::filesystem::path& output, const std::filesystem::path& cwd,
                             int output_fd) {
  FileActions fa;
  SpawnAttr sa;
  constexpr int child_fd = 3;
  // dup2 onto itself would keep FD_CLOEXEC; the channel is never fd 3 in the host because stdio
  // is 0-2 and the socketpair is created after, but guard anyway.
  if (channel_fd == child_fd) {
    int moved = ::fcntl(channel_fd, F_DUPFD_CLOEXEC, 10);
    if (moved < 0) throw std::system_error(errno, std::generic_category(), "dup channel");
    Fd guard(moved);
    return spawn_process(exe, args, env, moved, output, cwd, output_fd);
  }
  // A task must not read the host's input: stdin is /dev/null; stdout and stderr are shared, so
  // what a task prints shows up where the host's output goes (as with loky; a sandboxed worker
  // puts pipes in their place, copied there by a relay: worker/containment.cpp).
  int rc = cwd.empty() ? 0 : posix_spawn_file_actions_addchdir_np(&fa.fa, cwd.c_str());
  if (rc == 0) rc = posix_spawn_file_actions_addopen(&fa.fa, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0 && !output.empty()) {
    rc = posix_spawn_file_actions_addopen(&fa.fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa.fa, 1, 2);
  } else if (rc == 0 && output_fd >= 0) {
    rc = posix_spawn_file_actions_adddup2(&fa.fa, output_fd, 1);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa.fa, output_fd, 2);
  }
  if (rc == 0 && channel_fd >= 0) rc = posix_spawn_file_actions_adddup2(&fa.fa, channel_fd, child_fd);
  // A host started with stdout or stderr closed: the child's is /dev/null, not what the worker
  // opens first there (its cgroup's pids.max took it, and a task's printf wrote into that), nor the
  // channel when the socketpair took the place (after its move to 3 above). A descriptor of the
  // host's that closes at exec (a socketpair's end there) is closed in the child too.
  for (int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (rc == 0 && output.empty() && output_fd < 0 && (fd == channel_fd || flags < 0 || (flags & FD_CLOEXEC)))
      rc = posix_spawn_file_actions_addopen(&fa.fa, fd, "/dev/null", O_WRONLY, 0);
  }
  // Everything else of ours (other workers' channels, the application's files, whether or not
  // they are close-on-exec) stays out: closefrom, not trust in O_CLOEXEC everywhere (libuv).
  if (rc == 0)
    rc = posix_spawn_file_actions_addclosefrom_np(&fa.fa, channel_fd >= 0 ? child_fd + 1 : child_fd);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawn file actions");

  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&sa.attr, &none);
  posix_spawnattr_setsigdefault(&sa.attr, &all);
  posix_spawnattr_setflags(&sa.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::string path = exe.string();
  std::vector<char*> argv;
  argv.push_back(path.data());
  std::vector<std::string> args_copy = args;
  for (auto& a : args_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  // glibc's posix_spawn reports a failed exec (ENOENT, EACCES, ENOEXEC) as its return value.
  rc = ::posix_spawn(&pid, path.c_str(), &fa.fa, &sa.attr, argv.data(), envp.data());
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawn " + path);
  SpawnedProcess p;
  p.pid = pid;
  p.pidfd = Fd(pidfd_open(pid));
  if (!p.pidfd) p.pidfd_error = errno;
  return p;
}

bool environment_name(std::string_view name) noexcept {
  return !name.empty() && name.find_first_of(std::string_view("=\0", 2)) == std::string_view::npos;
}

std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    vars[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& [k, v] : overrides)
    if (environment_name(k) && v.find('\0') == std::string::npos) vars[k] = v;
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& [k, v] : vars) out.push_back(k + "=" + v);
  return out;
}

namespace {
ExitStatus decode(int status) {
  ExitStatus s;
  s.known = true;
  if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    s.exit_code = WEXITSTATUS(status);
  }
  return s;
}
}  // namespace

std::optional<ProcStat> read_proc_stat(long pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  // "pid (comm) state ppid ...": the last ')' ends the command name.
  const std::string_view line(buf, static_cast<std::size_t>(n));
  const auto open_paren = line.find('('), close_paren = line.rfind(')');
  if (open_paren == std::string_view::npos || close_paren == std::string_view::npos || close_paren < open_paren)
    return std::nullopt;
  return ProcStat{std::string(line.substr(open_paren + 1, close_paren - open_paren - 1)),
                  std::string(line.substr(close_paren + 1))};
}

void kill_process_tree(pid_t root) noexcept {
  constexpr std::size_t max_processes = 4096;
  pid_t found[max_processes];
  std::size_t count = 0;
  found[count++] = root;
  for (std::size_t i = 0; i < count; ++i) {
    ::kill(found[i], SIGSTOP);  // forks no more: its children are all there to read
    char dir[64];
    std::snprintf(dir, sizeof dir, "/proc/%d/task", static_cast<int>(found[i]));
    DIR* tasks = ::opendir(dir);
    if (!tasks) continue;
    while (const dirent* t = ::readdir(tasks)) {
      if (t->d_name[0] == '.') continue;
      char file[384];
      std::snprintf(file, sizeof file, "%s/%s/children", dir, t->d_name);
      const int fd = ::open(file, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      char text[4096];
      const ssize_t n = ::read(fd, text, sizeof text - 1);
      ::close(fd);
      if (n <= 0) continue;
      text[n] = '\0';
      for (char* at = text; *at && count < max_processes;) {
        char* end = nullptr;
        const long pid = std::strtol(at, &end, 10);
        if (end == at) break;
        at = end;
        if (pid > 0 && std::find(found, found + count, static_cast<pid_t>(pid)) == found + count)
          found[count++] = static_cast<pid_t>(pid);
      }
    }
    ::closedir(tasks);
  }
  for (std::size_t i = 0; i < count; ++i) ::kill(found[i], SIGKILL);
}

void reap_orphaned_helpers() noexcept {
  int subreaper = 0;
  const pid_t self = ::getpid();
  if (self != 1 && (::prctl(PR_GET_CHILD_SUBREAPER, &subreaper) != 0 || subreaper == 0)) return;
  DIR* proc = ::opendir("/proc");
  if (!proc) return;
  while (const dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::optional<ProcStat> st;
    try {
      st = read_proc_stat(pid);
    } catch (...) {  // std::bad_alloc: nothing reaped this time
      break;
    }
    if (!st || (st->comm != "ferry-guardian" && st->comm != "ferry-relay")) continue;
    char state = 0;
    long parent = 0;
    if (std::sscanf(st->fields.c_str(), " %c %ld", &state, &parent) != 2) continue;
    if (state != 'Z' || parent != self) continue;
    int status = 0;
    ::waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
  }
  ::closedir(proc);
}

bool try_reap(pid_t pid, ExitStatus& out) {
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (r < 0) {
    out = ExitStatus{};  // ECHILD: reaped elsewhere (SIGCHLD ignored by the application)
    return true;
  }
  out = decode(status);
  return true;
}

ExitStatus reap(pid_t pid) {
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ExitStatus{};
  return decode(status);
}

bool is_executable_file(const std::filesystem::path& file) {
  std::error_code ec;
  return std::filesystem::is_regular_file(file, ec) && ::access(file.c_str(), X_OK) == 0;
}

std::optional<std::filesystem::path> find_program(const std::filesystem::path& program) {
  if (program.empty()) return std::nullopt;
  if (program.has_parent_path())
    return is_executable_file(program) ? std::optional(program) : std::nullopt;
  const char* path = std::getenv("PATH");
  for (std::string_view rest = path ? path : ""; !rest.empty();) {
    auto colon = rest.find(':');
    std::string_view dir = rest.substr(0, colon);
    if (!dir.empty() && is_executable_file(std::filesystem::path(dir) / program))
      return std::filesystem::path(dir) / program;
    rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon + 1);
  }
  return std::nullopt;
}

std::vector<std::string> command_words(const std::string& given) {
  if (!find_program(given))
    if (auto split = split_shell_words(given); split && !split->empty()) return std::move(*split);
  return {given};
}

namespace {

std::atomic<std::uint64_t> forks{0};

void forked_child() noexcept { forks.fetch_add(1, std::memory_order_relaxed); }

/// Registered when libferry is loaded, before any object that needs it can exist.
const int fork_handler_registered = ::pthread_atfork(nullptr, nullptr, &forked_child);

}  // namespace

std::uint64_t fork_generation() noexcept {
  (void)fork_handler_registered;
  return forks.load(std::memory_order_relaxed);
}

}  // namespace ferry::detail
