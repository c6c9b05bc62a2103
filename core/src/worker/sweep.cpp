// SPDX-License-Identifier: BSD-3-Clause
// The guardian's sweep (worker/sweep.hpp): finds a worker's descendants in /proc and ends them.
//
// Why it is built this way. A task can start "runners": processes that fork and exit in a loop, a
// new pid every ~100 us each. The first sweep read all of /proc (readdir: one getdents of 32 KiB)
// and then looked at each process named there (open, fstat, NS_GET_PARENT): by the time it came
// to a runner, that runner had forked and gone, and its child had a pid the listing did not
// hold; it gave up after 1 s, and with the pool under a CPU quota (50 % of a core) 30 of 30
// runners outlived the pool by minutes. The kernel facts this sweep relies on (checked on 6.18):
//
// - pids are allocated cyclically, each new one just above the last (ns_last_pid, readable by
//   anyone; also the last field of /proc/loadavg), wrapping at pid_max: a runner's newest process
//   has one of the newest pids. Probing every pid allocated since the last look is cheap
//   (pidfd_open of a pid nobody has: ESRCH, 0.2 us) and finds it where it is.
// - copy_process() ends a fork whose parent has a fatal signal pending ("Let kill terminate
//   clone/fork in the middle"), under the tasklist lock, just before it attaches the child to its
//   pid: a SIGKILL either ends the fork in progress, or the child was already attached (listed in
//   /proc, pidfd_open opens it) when it came. That child has a higher pid, which a probe in pid
//   order meets after its parent's. A SIGSTOP first would not help: a stop is not fatal, the fork
//   it meets completes, and the child runs on.
// - pidfd_open fails for a pid whose process is not attached yet (EINVAL) and for none (ESRCH).
// - /proc's getdents lists thread-group leaders in pid order from where the last call stopped:
//   with a small buffer, each process is looked at right after it is listed.
// - A pid is not reused while its process (even a zombie) holds it: a pidfd opened first, and
//   found still open on a live process after /proc/<pid> was read, says what was read was about
//   it; the SIGKILL goes through that pidfd. A process of someone else that took the pid of a
//   descendant meanwhile is never signalled.
#include "worker/sweep.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace ferry::detail {

namespace {

// <linux/pidfd.h> of Linux 6.11 (Debian 12 has 6.1's headers): the user namespace of the process
// a pidfd holds, opened as a descriptor. ENOTTY on older kernels.
constexpr unsigned long pidfd_get_user_namespace = _IO(0xFF, 9);

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

/// Whether the process a pidfd holds has exited (readable then; a zombie has).
bool exited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

/// A pid written in decimal and nothing else (a /proc entry's name), or 0.
pid_t parse_pid(const char* s) {
  if (*s < '1' || *s > '9') return 0;
  long v = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9' || v > 100000000) return 0;
    v = v * 10 + (*s - '0');
  }
  return static_cast<pid_t>(v);
}

/// How many of the newest pids the first chase looks at.
constexpr int recent_pids = 1024;

class Sweep {
 public:
  Sweep(const std::function<bool(pid_t, int)>& member, pid_t spared, const std::function<bool()>& spared_alive)
      : member_(member), spared_(spared), spared_alive_(spared_alive), self_(::getpid()) {
    proc_ = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    newest_fd_ = ::open("/proc/sys/kernel/ns_last_pid", O_RDONLY | O_CLOEXEC);
    if (newest_fd_ < 0) {  // without CONFIG_CHECKPOINT_RESTORE
      newest_fd_ = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
      loadavg_ = true;
    }
    char text[32];
    if (read_small("/proc/sys/kernel/pid_max", text, sizeof text) > 0 && std::atol(text) > 1)
      pid_max_ = static_cast<pid_t>(std::atol(text));
    // The first chase looks at the newest pids (a runner's current process is among them): before
    // the first walk of /proc, what is forked while it walks is the chase's.
    const pid_t newest = newest_pid();
    cursor_ = 0;
    if (newest > 0) {
      cursor_ = newest;
      for (int n = 1; n < recent_pids && n < pid_max_ / 2; ++n) cursor_ = before(cursor_);
    }
  }
  ~Sweep() {
    if (proc_ >= 0) ::close(proc_);
    if (newest_fd_ >= 0) ::close(newest_fd_);
  }
  Sweep(const Sweep&) = delete;
  Sweep& operator=(const Sweep&) = delete;

  /// One walk of /proc, chasing the newest pids as it goes; how many processes it sent a SIGKILL
  /// that the round before had not (the others are dying, or stuck in the kernel).
  int round() {
    previous_.assign(current_.begin(), current_.end());
    std::sort(previous_.begin(), previous_.end());
    current_.clear();
    fresh_ = 0;
    chase();
    walk_proc();
    chase();
    return fresh_;
  }
  int killed() const { return killed_; }

 private:
  void probe(pid_t pid) {
    if (pid <= 0 || pid == self_ || (pid == spared_ && spared_alive_())) return;
    if (current_.count(pid) != 0) return;  // sent one in this round: dying
    const int pidfd = open_pidfd(pid);
    if (pidfd < 0) return;
    // Exited (a zombie, or after the member check: what it read under /proc/<pid> may then be
    // another process's, the pid given again): gone anyway.
    if (member_(pid, pidfd) && !exited(pidfd) &&
        ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0) {
      ++killed_;
      current_.insert(pid);
      if (!std::binary_search(previous_.begin(), previous_.end(), pid)) ++fresh_;
    }
    ::close(pidfd);
  }

  /// Every process /proc lists, in pid order, each probed right after it is listed (a few at a
  /// time), and the newest pids after each batch.
  void walk_proc() {
    if (proc_ < 0 || ::lseek(proc_, 0, SEEK_SET) != 0) return;
    alignas(8) char buf[512];  // 16 pid entries; /proc's other names are short
    for (;;) {
      const long n = ::syscall(SYS_getdents64, proc_, buf, sizeof buf);
      if (n <= 0) return;
      for (long at = 0; at < n;) {
        const auto* d = reinterpret_cast<const dirent64*>(buf + at);  // the raw call's record
        at += d->d_reclen;
        probe(parse_pid(d->d_name));
      }
      chase();
    }
  }

  /// Every pid allocated since the last look, newest first: of a runner's processes, only the
  /// newest can still fork (those before it have forked and are exiting), and under a CPU quota
  /// shared with hundreds of them, each probe is long in coming. A child attached after its pid
  /// was probed and before its parent's SIGKILL is met by the next walk.
  void chase() {
    const pid_t newest = newest_pid();
    if (newest <= 0) return;
    if (cursor_ <= 0) {
      cursor_ = after(newest);
      return;
    }
    if (cursor_ == after(newest)) return;  // none since
    const pid_t oldest = cursor_;
    cursor_ = after(newest);
    // At most one lap: the pids wrap at pid_max (and ns_last_pid can be written, by CRIU).
    pid_t pid = newest;
    for (pid_t n = 0; n < pid_max_; ++n, pid = before(pid)) {
      probe(pid);
      if (pid == oldest) break;
    }
  }

  pid_t after(pid_t pid) const { return pid + 1 >= pid_max_ ? 1 : pid + 1; }
  pid_t before(pid_t pid) const { return pid <= 1 ? pid_max_ - 1 : pid - 1; }

  /// The last pid allocated in this PID namespace, or 0.
  pid_t newest_pid() {
    if (newest_fd_ < 0) return 0;
    char text[128];
    const ssize_t n = ::pread(newest_fd_, text, sizeof text - 1, 0);
    if (n <= 0) return 0;
    text[n] = '\0';
    const char* number = text;
    if (loadavg_) {  // "0.82 16.04 49.37 1/129 22083\n"
      const char* space = std::strrchr(text, ' ');
      if (!space) return 0;
      number = space + 1;
    }
    return static_cast<pid_t>(std::atol(number));
  }

  const std::function<bool(pid_t, int)>& member_;
  const pid_t spared_;
  const std::function<bool()>& spared_alive_;
  const pid_t self_;
  int proc_ = -1;
  int newest_fd_ = -1;
  bool loadavg_ = false;
  pid_t pid_max_ = 4194304;  // PID_MAX_LIMIT on 64-bit machines
  pid_t cursor_ = 0;         // the oldest pid the next chase probes
  int killed_ = 0;
  int fresh_ = 0;
  std::vector<pid_t> previous_;         // sent a SIGKILL in the round before (sorted)
  std::unordered_set<pid_t> current_;  // in this one
};

}  // namespace

SweepOutcome sweep_descendants(const std::function<bool(pid_t, int)>& member, pid_t spared,
                               const std::function<bool()>& spared_alive, std::int64_t limit_ms) {
  SweepOutcome out;
  Sweep sweep(member, spared, spared_alive);
  const std::int64_t end = now_ms() + limit_ms;
  // Two quiet rounds: a runner that wrapped past pid_max below the walk's position in one round
  // is met by the next.
  for (int quiet = 0; quiet < 2;) {
    quiet = sweep.round() == 0 ? quiet + 1 : 0;
    ++out.rounds;
    if (quiet < 2 && now_ms() >= end) {
      out.gave_up = true;
      break;
    }
  }
  out.killed = sweep.killed();
  return out;
}

ssize_t read_small(const char* path, char* buf, std::size_t cap) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf + total, cap - 1 - static_cast<std::size_t>(total));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += n;
    if (static_cast<std::size_t>(total) >= cap - 1) break;
  }
  ::close(fd);
  buf[total] = '\0';
  return total;
}

bool in_user_namespace(pid_t pid, int pidfd, dev_t dev, ino_t ino) {
  static bool by_pidfd = true;  // PIDFD_GET_USER_NAMESPACE: Linux 6.11
  int fd = -1;
  if (by_pidfd) {
    fd = ::ioctl(pidfd, pidfd_get_user_namespace, 0);
    if (fd < 0 && errno != ENOTTY) return false;  // EACCES, EPERM: not ours to see; ESRCH: gone
    if (fd < 0) by_pidfd = false;
  }
  if (!by_pidfd) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/ns/user", static_cast<int>(pid));
    fd = ::open(path, O_RDONLY | O_CLOEXEC);  // fails for what is not ours to see
  }
  // Up the chain of parents: a namespace nested in ours counts (NS_GET_PARENT fails with EPERM
  // once outside ours; 32 levels at most).
  bool ours = false;
  for (int depth = 0; fd >= 0 && depth < 33; ++depth) {
    struct stat st{};
    if (::fstat(fd, &st) == 0 && st.st_ino == ino && st.st_dev == dev) {
      ours = true;
      break;
    }
    const int parent = ::ioctl(fd, NS_GET_PARENT);
    ::close(fd);
    fd = parent;
  }
  if (fd >= 0) ::close(fd);
  return ours;
}

bool environment_holds(pid_t pid, int /*pidfd*/, const char* needle) {
  static char env[1 << 16];
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/environ", static_cast<int>(pid));
  const ssize_t n = read_small(path, env, sizeof env);
  // Entries are NUL-separated: compare each whole entry.
  for (ssize_t i = 0; i < n;) {
    const std::size_t len = std::strlen(env + i);
    if (std::string_view(env + i, len) == needle) return true;
    i += static_cast<ssize_t>(len) + 1;
  }
  return false;
}

}  // namespace ferry::detail
