// SPDX-License-Identifier: BSD-3-Clause
// A worker's containment (worker/containment.hpp): the guardian that ends its descendants, the
// limits of each task, and the sandbox (network namespace, Landlock, seccomp, no capabilities).
//
// Why not a PID namespace for the descendants: ferry-worker is the host's child, so it cannot be
// inside a namespace made after it started; it could only send its children into one
// (setns(CLONE_NEWPID)), and a process whose children go to another PID namespace than its own
// cannot create threads any more (clone(CLONE_THREAD) fails with EINVAL, checked on 6.18): every
// task using std::thread, OpenMP or a thread pool would fail. A cgroup has no such cost: as root,
// every worker gets a pids cgroup of its own, which its descendants cannot leave without write
// access to another cgroup (a sandboxed task has none: Landlock), and which the guardian empties
// with SIGKILL when the worker has gone. Not root, the worker makes a user namespace of its own
// (mapping its user to itself), which no descendant can leave, and the guardian, in it too, kills
// every other process of it. Without either, the worker is the subreaper of its descendants and
// tags their environment; the guardian sweeps the tagged ones (only those that exec'd show it).
#include "worker/containment.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "platform/containment.hpp"
#include "platform/debug.hpp"
#include "platform/fd.hpp"
#include "platform/format.hpp"
#include "plugins/load_dependencies.hpp"
#include "worker/sweep.hpp"

namespace ferry::detail {

namespace {

using protocol::Contained;
using protocol::ContainedKind;

constexpr int exit_contained = static_cast<int>(protocol::WorkerExit::contained);

// ASan and TSan reserve terabytes of shadow memory, private and writable: under RLIMIT_DATA they
// can map nothing and the worker dies at its next allocation. Sanitizer builds (the asan and tsan
// test presets) leave memory unlimited; test_sandbox does not check the memory limit there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool memory_limit_works = false;
#else
constexpr bool memory_limit_works = true;
#endif

// ---- what the signal handlers read (set before the handlers are installed) ------------------

int g_channel = -1;
volatile std::uint64_t g_file_size_limit = 0;

/// The system calls the seccomp filter traps, by number, for the SIGSYS handler: libseccomp's
/// resolver allocates, which a signal handler must not.
struct TrappedCall {
  int number;
  char name[24];
};
TrappedCall g_trapped[64];
int g_trapped_count = 0;
std::uint32_t g_native_arch = 0;

void write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

/// Says what the task did on the channel, then exits: async-signal-safe throughout.
[[noreturn]] void report_and_exit(ContainedKind kind, std::uint64_t value, const char* name,
                                  const char* detail) noexcept {
  char frame[2 * protocol::max_contained_text + 64];
  std::size_t n = protocol::encode_contained_into(frame, sizeof frame, kind, value, name, detail);
  if (n > 0 && g_channel >= 0) write_all(g_channel, frame, n);
  _exit(exit_contained);
}

void on_sigxfsz(int) {
  report_and_exit(ContainedKind::file_size, g_file_size_limit, "file_size",
                  "a write went past the file size limit");
}

void on_sigsys(int, siginfo_t* info, void*) {
  int number = info->si_syscall;
  const char* name = "unknown system call";
  for (int i = 0; i < g_trapped_count; ++i)
    if (g_trapped[i].number == number) name = g_trapped[i].name;
  // The filter also traps every call made through another architecture's ABI (int 0x80).
  if (info->si_arch != g_native_arch) name = "foreign architecture";
  report_and_exit(ContainedKind::syscall, static_cast<std::uint64_t>(number), name,
                  "denied by the sandbox");
}

// ---- small file helpers ----------------------------------------------------------------------

/// Threads of this process: the pids cgroup and RLIMIT_NPROC count each as a process, so they
/// are the worker's own share of a processes limit (one, or more under a sanitizer, whose
/// background thread runs from the start).
int own_threads() {
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return 1;
  int n = 0;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return std::max(n, 1);
}

bool write_file(const std::string& path, std::string_view text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string directory_of(std::string path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos || slash == 0 ? std::string("/") : path.substr(0, slash);
}

/// Whether two paths are the same directory (cgroup hierarchies mounted together show one
/// directory under two names).
bool same_directory(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return !a.empty() && !b.empty() && ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// ---- the guardian ----------------------------------------------------------------------------

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

void pause_ms(int ms) { ::poll(nullptr, 0, ms); }

/// SIGKILL to every pid of a list of decimal pids, each followed by white space (cgroup.procs,
/// /proc/.../children). A last number without it may be the start of a pid that did not fit in
/// the buffer the list was read into: it is left alone (a SIGKILL to pid 12 for 12345).
void kill_listed(char* list) {
  for (char* p = list; *p;) {
    char* next = nullptr;
    long pid = std::strtol(p, &next, 10);
    if (next == p || *next == '\0') break;
    if (pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);
    p = next;
  }
}

/// SIGKILLs every child of this process (of any of its threads); true when it had one.
bool kill_children() {
  DIR* tasks = ::opendir("/proc/self/task");
  if (!tasks) return false;
  bool found = false;
  static char list[1 << 16];
  while (dirent* e = ::readdir(tasks)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    char path[300];
    std::snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
    if (read_small(path, list, sizeof list) <= 0) continue;
    found = true;
    kill_listed(list);
  }
  ::closedir(tasks);
  return found;
}

/// SIGKILLs every process of the cgroup until none is left (a process may fork while the list is
/// read: repeat), at most one second.
void empty_cgroup(const std::string& dir) {
  // cgroup v2 has a switch for exactly this.
  write_file(dir + "/cgroup.kill", "1");
  std::string procs = dir + "/cgroup.procs";
  for (std::int64_t end = now_ms() + 1000; now_ms() < end;) {
    char buf[8192];
    if (read_small(procs.c_str(), buf, sizeof buf) <= 0) return;  // empty (or gone)
    kill_listed(buf);
    pause_ms(2);
  }
}

/// How long the guardian's sweep may go on finding processes to end (worker/sweep.hpp): it stops
/// earlier, after two rounds that found none left to end.
constexpr std::int64_t sweep_limit_ms = 30000;

/// A sandboxed worker's request to the guardian: the value to write into its pids.max (a task's
/// own processes limit plus the worker's own; pids_unlimited: "max"). The answer: 0, or errno.
constexpr std::uint64_t pids_unlimited = UINT64_MAX;

/// The most requests the guardian serves a worker. The worker makes two at most in its life: the
/// executor's processes limit at setup (none without one), and a task's own lower limit, which
/// the host sends only to a worker no call has run on yet (Dispatcher::fits); after that the
/// value never changes (begin_task asks only for another one). Every message counts, whoever
/// sent it: a task that flooded requests kept the guardian, which no cpu_time limit measures,
/// busy opening and writing pids.max for as long as it liked (an audit: 2.3 s of the guardian's
/// CPU in 4.6 s).
constexpr int max_pids_requests = 2;

/// Writes `value` into the pids.max of the cgroup the worker is in (`cgroup`, or its "task"
/// child under a ceiling) for the worker, if it is at most what was written before (`written`):
/// the worker's descriptor is the task's too, so a request may come from a task, which may only
/// lower its limit. The value written already is not written again. 0, or errno.
int write_pids_max_for_worker(const std::string& cgroup, std::uint64_t value, std::uint64_t& written) {
  if (value > written) return EPERM;
  if (value == written) return 0;
  const std::string dir = ::access((cgroup + "/task").c_str(), F_OK) == 0 ? cgroup + "/task" : cgroup;
  const std::string text = value == pids_unlimited ? "max" : std::to_string(value);
  const int fd = ::open((dir + "/pids.max").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int e = errno;
  ::close(fd);
  if (!ok) return e == 0 ? EIO : e;
  written = value;
  return 0;
}

/// A request to the guardian for the worker's pids.max, and its answer (0 or an errno), matched by
/// `sequence`: a task holding the worker's end may send requests too, and leave their answers
/// for the worker to find.
struct PidsRequest {
  std::uint64_t value;
  std::uint64_t sequence;
};
struct PidsAnswer {
  std::int32_t code;
  std::uint64_t sequence;
};

/// The guardian's life: wait for the worker to end (pidfd at descriptor 0), then end what it
/// left behind, and the cgroup. Meanwhile, with `requests` (a sandbox with a pids cgroup), it
/// writes the worker's pids.max as asked, lower only (write_pids_max_for_worker).
[[noreturn]] void guardian_main(const std::string& cgroup, const std::string& tag,
                                bool user_namespace, const std::string& memory_cgroup,
                                const std::string& cpu_cgroup, pid_t relay, int relay_pidfd, int requests) {
  ::prctl(PR_SET_NAME, "ferry-guardian");
  // Out of the worker's session and process group: a ^C or a kill of the worker's group must not
  // end the guardian before it has cleaned up.
  ::setsid();
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  std::uint64_t written = pids_unlimited;  // a new cgroup's pids.max
  int served = 0;                          // messages read on `requests` (max_pids_requests)
  pollfd p[2] = {{0, POLLIN, 0}, {requests, POLLIN, 0}};
  for (;;) {
    if (::poll(p, requests >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[0].revents != 0) break;  // the worker ended
    if (requests < 0 || p[1].revents == 0) continue;
    PidsRequest request{};
    const ssize_t n = ::recv(requests, &request, sizeof request, MSG_DONTWAIT);
    bool stop = n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
    if (n == sizeof request) {
      PidsAnswer answer{};  // its padding too: no byte of the guardian's stack goes out
      answer.code = write_pids_max_for_worker(cgroup, request.value, written);
      answer.sequence = request.sequence;
      // Never waits: a peer that does not read its answers (a task's child flooding requests,
      // the worker's end inherited) would block the guardian in send() for good, and with it the
      // end of whatever the task started. Such a peer is no worker waiting for an answer: the
      // guardian stops serving (the worker's next request fails, and it exits 70).
      stop = ::send(requests, &answer, sizeof answer, MSG_NOSIGNAL | MSG_DONTWAIT) != sizeof answer;
    }
    // Past what a worker asks in its life, nothing more is served (after this one's answer): a
    // later request of the worker's fails, and it exits 70.
    if (n > 0 && ++served >= max_pids_requests) stop = true;
    if (stop) {
      ::close(requests);  // the worker closed it, it broke, its answers go unread, or it asked enough
      requests = -1;
      p[1].fd = -1;
    }
  }
  if (!cgroup.empty()) {
    // The worker's cgroup, and the one inside it where the worker went under a ceiling
    // (join_cgroup): v1 lists and kills the members of each apart.
    for (const std::string& dir : {cgroup + "/task", cgroup}) {
      if (::access(dir.c_str(), F_OK) != 0) continue;
      empty_cgroup(dir);
      // rmdir fails with EBUSY until the last member has been reaped by its parent.
      for (std::int64_t end = now_ms() + 1000; ::rmdir(dir.c_str()) != 0 && errno == EBUSY && now_ms() < end;)
        pause_ms(2);
    }
  }
  if (!memory_cgroup.empty()) {
    // Its members are the worker's descendants (those of the pids cgroup too, when there is
    // one): a process stopped at the full cgroup ends with a SIGKILL as well.
    empty_cgroup(memory_cgroup);
    for (std::int64_t end = now_ms() + 5000;
         ::rmdir(memory_cgroup.c_str()) != 0 && errno == EBUSY && now_ms() < end;)
      pause_ms(2);
  }
  if (!cpu_cgroup.empty()) {
    // The same processes as the pids cgroup's, ended above (members still there: ended now).
    empty_cgroup(cpu_cgroup);
    for (std::int64_t end = now_ms() + 1000; ::rmdir(cpu_cgroup.c_str()) != 0 && errno == EBUSY && now_ms() < end;)
      pause_ms(2);
  }
  // Without a cgroup: every process of the worker's user namespace (no process can leave one;
  // only the worker's descendants, this guardian and the relay are in it), else every process
  // whose environment carries the worker's tag. The relay is spared while it lives: once it is
  // gone, a task's process may hold its pid.
  const auto relay_alive = [&] {
    pollfd ended{relay_pidfd, POLLIN, 0};
    return relay_pidfd >= 0 && ::poll(&ended, 1, 0) == 0;
  };
  if (user_namespace) {
    struct stat own{};
    if (::stat("/proc/self/ns/user", &own) == 0) {
      sweep_descendants([&](pid_t pid, int pidfd) { return in_user_namespace(pid, pidfd, own.st_dev, own.st_ino); },
                        relay, relay_alive, sweep_limit_ms);
    }
  }
  if (!tag.empty()) {
    const std::string needle = "FERRY_WORKER_TAG=" + tag;
    sweep_descendants([&](pid_t pid, int pidfd) { return environment_holds(pid, pidfd, needle.c_str()); },
                      relay, relay_alive, sweep_limit_ms);
  }
  _exit(0);
}

/// Writes `n` bytes of `data` to `fd`, waiting while it is full (a non-blocking description of
/// the host's); false when it takes no more (its reader gone, the file-size limit met). To a
/// `terminal` (at most PIPE_BUF bytes), every write() begins with CAN, a retry after a partial
/// one too, which ends any sequence left open before it (another relay's write that the kernel
/// cut short on a non-blocking terminal, where terminal_cut cannot choose the cut: an ESC there
/// and "[6n" here made a query).
bool relay_write(int fd, const char* data, std::size_t n, bool terminal = false) {
  char with_can[PIPE_BUF + 1];
  const std::size_t can = terminal ? 1 : 0;
  while (n > 0) {
    if (terminal) {
      with_can[0] = '\x18';
      std::memcpy(with_can + 1, data, n);
    }
    const ssize_t w = ::write(fd, terminal ? with_can : data, n + can);
    if (w > 0) {
      const auto done = static_cast<std::size_t>(w) - std::min(can, static_cast<std::size_t>(w));
      data += done;
      n -= done;
    } else if (w < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      (void)::poll(&p, 1, -1);
    } else if (w == 0 || errno != EINTR) {
      return false;
    }
  }
  return true;
}

/// Copies what arrives on descriptors 3 and 4 (a sandboxed worker's stdout and stderr pipes) to
/// 1 and 2 (the host's stdout and stderr) until every writer of both is gone: the worker and its
/// descendants, which the guardian ends. A task that shared the host's own descriptions could
/// truncate the user's log file (ftruncate, or pwrite after clearing O_APPEND) or make a shared
/// pipe non-blocking under the host; it holds only its end of a pipe now. Each write is at most
/// PIPE_BUF bytes, cut after a newline where there is one (a write to a pipe that size is whole:
/// two workers' lines stay whole). `file_size`: the executor's limit, which a task's output met
/// (SIGXFSZ) when it wrote the host's file itself: at most that many bytes go into a regular file
/// through each stream (counted here: a log already longer than that still gets them). What
/// cannot be written (the reader gone, the limit met) is read and dropped, so no writer waits for
/// ever. To a terminal, a task's output is shown by terminal_output_into: its escape sequences
/// would otherwise reach the user's terminal (OSC 52 writes the clipboard), colours excepted, and
/// with `ascii_only` (the host's terminal not in UTF-8) every byte past ASCII; a
/// write to a terminal is never cut inside a kept sequence or a character (terminal_cut).
[[noreturn]] void relay_main(std::uint64_t file_size, bool ascii_only) {
  ::prctl(PR_SET_NAME, "ferry-relay");
  ::setsid();
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  pollfd p[2] = {{3, POLLIN, 0}, {4, POLLIN, 0}};
  bool writable[2] = {true, true};
  std::uint64_t room[2] = {UINT64_MAX, UINT64_MAX};
  bool terminal[2] = {false, false};
  TerminalOutput shown_as[2];
  for (int i = 0; i < 2; ++i) {
    if (struct stat st {}; file_size != 0 && ::fstat(i + 1, &st) == 0 && S_ISREG(st.st_mode)) room[i] = file_size;
    terminal[i] = ::isatty(i + 1) == 1;
    shown_as[i].ascii_only = ascii_only;
  }
  // To a terminal, what a task prints goes through terminal_output_into (its controls escaped);
  // the bytes of a character or sequence cut by a read wait in held[i] for the next one.
  constexpr std::size_t read_size = 1 << 16;
  static char buffer[terminal_sequence_max + read_size];
  static char shown[5 * sizeof buffer + terminal_sgr_max + 4];
  char held[2][terminal_sequence_max];
  std::size_t held_size[2] = {0, 0};
  auto pass = [&](int i, const char* data, std::size_t size) {
    for (std::size_t at = 0; writable[i] && at < size;) {
      std::size_t piece = std::min<std::size_t>(PIPE_BUF, size - at);
      if (at + piece < size) {
        if (const void* nl = ::memrchr(data + at, '\n', piece))
          piece = static_cast<const char*>(nl) - (data + at) + 1;
        else if (terminal[i])  // not inside a kept sequence another relay's bytes could complete
          piece = terminal_cut(std::string_view(data + at, size - at), piece);
      }
      piece = static_cast<std::size_t>(std::min<std::uint64_t>(piece, room[i]));
      writable[i] = piece > 0 && relay_write(i + 1, data + at, piece, terminal[i]);
      if (room[i] != UINT64_MAX) room[i] -= piece;
      at += piece;
    }
  };
  while (p[0].fd >= 0 || p[1].fd >= 0) {
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      std::memcpy(buffer, held[i], held_size[i]);
      const ssize_t n = ::read(p[i].fd, buffer + held_size[i], read_size);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      const std::size_t size = held_size[i] + static_cast<std::size_t>(std::max<ssize_t>(n, 0));
      if (!terminal[i]) {
        pass(i, buffer, size);
      } else {
        // In slices whose output fits one write: each write ends in the default colours (what
        // another worker or the host prints between two writes is not in the task's colours).
        constexpr std::size_t slice = (PIPE_BUF - terminal_sgr_max - 8) / 5;
        std::size_t from = 0;
        for (;;) {
          const std::size_t part = std::min(slice, size - from);
          const bool last = from + part == size;
          std::size_t used = 0;
          pass(i, shown,
               terminal_output_into(shown, std::string_view(buffer + from, part), last && n <= 0, &used, shown_as[i]));
          from += used;
          if (last) break;
        }
        held_size[i] = size - from;
        std::memcpy(held[i], buffer + from, held_size[i]);
      }
      if (n <= 0) {
        ::close(p[i].fd);
        p[i].fd = -1;  // poll skips it
      }
    }
  }
  _exit(0);
}

// ---- Landlock, by raw system calls (no library in Debian 12, and headers of Linux 6.1) -------

constexpr std::uint64_t ll_execute = 1ull << 0, ll_write_file = 1ull << 1,
                        ll_read_file = 1ull << 2, ll_read_dir = 1ull << 3,
                        ll_make_char = 1ull << 6, ll_make_sock = 1ull << 9, ll_make_fifo = 1ull << 10,
                        ll_make_block = 1ull << 11, ll_make_sym = 1ull << 12,
                        ll_truncate = 1ull << 14, ll_ioctl_dev = 1ull << 15;
/// What a task may not make even where it writes: what it left there reached, through the program
/// that read or wrote the file afterwards, beyond what the sandbox lets it touch. A link named
/// any file of the user (a host truncating its output truncated the link's target); a FIFO
/// blocked the host's open for good; a device node (root) opened a driver. UNIX sockets are denied
/// by the filter anyway.
constexpr std::uint64_t ll_make_special = ll_make_char | ll_make_sock | ll_make_fifo | ll_make_block | ll_make_sym;
constexpr std::uint64_t ll_net_bind_tcp = 1ull << 0, ll_net_connect_tcp = 1ull << 1;
constexpr std::uint64_t ll_scope_abstract_unix = 1ull << 0, ll_scope_signal = 1ull << 1;

struct LandlockRulesetAttr {
  std::uint64_t handled_access_fs, handled_access_net, scoped;
};
struct __attribute__((packed)) LandlockPathBeneath {
  std::uint64_t allowed_access;
  std::int32_t parent_fd;
};

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

/// Every file system right the running ABI knows (a right it does not know is EINVAL).
std::uint64_t landlock_fs_rights(int abi) {
  if (abi >= 5) return (1ull << 16) - 1;  // + IOCTL_DEV (ABI 5); ABI 6 and 7 add no FS right
  if (abi >= 3) return (1ull << 15) - 1;  // + TRUNCATE
  if (abi >= 2) return (1ull << 14) - 1;  // + REFER
  return (1ull << 13) - 1;
}

/// The rights that apply to a file (not a directory): a rule on a file with others is EINVAL.
std::uint64_t landlock_file_rights(int abi) {
  std::uint64_t r = ll_execute | ll_write_file | ll_read_file;
  if (abi >= 3) r |= ll_truncate;
  if (abi >= 5) r |= ll_ioctl_dev;
  return r;
}

class Landlock {
 public:
  Landlock(int abi, bool network) : abi_(abi) {
    LandlockRulesetAttr attr{landlock_fs_rights(abi), 0, 0};
    std::size_t size = 8;
    if (abi >= 4) {
      // Handled with no rule: no TCP bind or connect (the network namespace already has no
      // route out; this holds even where that namespace could not be made).
      if (!network) attr.handled_access_net = ll_net_bind_tcp | ll_net_connect_tcp;
      size = 16;
    }
    if (abi >= 6) {
      // No signal to a process outside the sandbox (the host, other workers, the guardian) and
      // no connection to an abstract UNIX socket made outside it.
      attr.scoped = ll_scope_abstract_unix | ll_scope_signal;
      size = 24;
    }
    fd_ = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, size, 0));
  }
  ~Landlock() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::uint64_t all() const { return landlock_fs_rights(abi_); }

  /// Allows `rights` beneath `path` (a directory) or on it (a file); a missing path is skipped.
  /// `exact`: the host's paths (--read, --write), resolved by the host before any task ran, so a
  /// link anywhere on the way now was put there since, by a task that could write a directory on
  /// the way (a write path holding another, or the private directory shown at /tmp): it would
  /// point this rule at whatever it liked for every later worker. Such a path gets no rule.
  void allow(const std::string& path, std::uint64_t rights, bool exact = false) {
    int target = exact ? open_without_links(path) : ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (target < 0) {
      if (errno == ELOOP) debug_log("worker: no landlock rule on %s: a link on the way", path.c_str());
      return;
    }
    allow_opened(target, rights, path);
    ::close(target);
  }
  /// As allow, on what `target` (a descriptor, left open) names; `path` names it in the log.
  void allow_opened(int target, std::uint64_t rights, const std::string& path) {
    struct stat st{};
    if (::fstat(target, &st) == 0 && !S_ISDIR(st.st_mode)) rights &= landlock_file_rights(abi_);
    LandlockPathBeneath rule{rights & all(), target};
    if (::syscall(SYS_landlock_add_rule, fd_, 1 /* PATH_BENEATH */, &rule, 0) != 0)
      debug_log("worker: landlock rule on %s: %s", path.c_str(), std::strerror(errno));
  }
  bool restrict_self() { return ::syscall(SYS_landlock_restrict_self, fd_, 0) == 0; }

 private:
  static int open_without_links(const std::string& path) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
    if (fd >= 0 || errno != ENOSYS) return fd;
    return ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);  // before Linux 5.6: the last one
  }

  int abi_;
  int fd_ = -1;
};

void libferry_anchor() {}

// ---- seccomp ---------------------------------------------------------------------------------

/// An `int` argument of a system call is compared on its low 32 bits: the kernel reads only those
/// (libseccomp compares all 64, so `prctl((1UL << 32) | option, ...)` would match no rule).
constexpr std::uint64_t int_bits = 0xffffffffu;

/// Trapped in every sandbox: what reaches out of the process (ptrace, process_vm_*, pidfd_getfd),
/// changes the system or the namespaces, or is a large kernel attack surface few tasks need.
constexpr const char* always_denied[] = {
    "ptrace",        "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount",         "umount2",          "pivot_root",        "chroot",
    "setns",         "unshare",          "bpf",               "perf_event_open",
    "keyctl",        "add_key",          "request_key",       "kexec_load",
    "kexec_file_load", "init_module",    "finit_module",      "delete_module",
    "reboot",        "swapon",           "swapoff",           "acct",
    "quotactl",      "io_uring_setup",   "io_uring_enter",    "io_uring_register",
    "userfaultfd",   "name_to_handle_at", "open_by_handle_at", "syslog",
    "fsopen",        "fsmount",          "move_mount",        "open_tree",
    "fsconfig",      "fspick",           "mount_setattr"};

/// A system call by name, and its number where this libseccomp does not know the name (calls
/// newer than it: numbered alike on every architecture since Linux 5.1), or -1.
struct NamedCall {
  const char* name;
  int number_if_unknown;
};

/// Changes to a file's metadata fail with EPERM, inside the allowed directories too: Landlock
/// guards none of them, and a task could make any file its user owns world-writable or setuid
/// (a root host's: any file root owns, /etc/shadow or a shell), change its times or its extended
/// attributes, in any directory it can name. EPERM, not a violation: copying a file copies its
/// mode, and a task may cope with that failing.
constexpr NamedCall metadata_calls[] = {
    {"chmod", -1},        {"fchmod", -1},     {"fchmodat", -1},     {"fchmodat2", 452},
    {"chown", -1},        {"fchown", -1},     {"lchown", -1},       {"fchownat", -1},
    {"utime", -1},        {"utimes", -1},     {"utimensat", -1},    {"futimesat", -1},
    {"setxattr", -1},     {"lsetxattr", -1},  {"fsetxattr", -1},    {"setxattrat", 463},
    {"removexattr", -1},  {"lremovexattr", -1}, {"fremovexattr", -1}, {"removexattrat", 466},
    {"file_setattr", 469}};

/// clone(2) flags a task may not use: the CLONE_NEW* ones (unshare and setns are trapped too; a
/// user namespace of its own would open the kernel's namespaced-root surface, nf_tables and the
/// like, to it), and CLONE_PARENT, which made the child the host's: a zombie the host never reaps,
/// outside the worker's cgroup or namespace, alive after a clean exit in subreaper mode. glibc's
/// fork, threads and posix_spawn use none of them. CLONE_NEWTIME is left out: on clone(2) its bit
/// is part of the exit signal.
constexpr unsigned long denied_clone_flags[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                                CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                                CLONE_NEWNET, CLONE_PARENT};

/// Changes of a file's attributes by ioctl on any descriptor a task can open, even read-only (the
/// flags of chattr: sync, noatime, nodump; the inode's version; fs-verity, which makes a file
/// read-only for good): EPERM with the metadata calls. Direction and size are part of each number.
constexpr unsigned long attribute_ioctls[] = {
    FS_IOC_SETFLAGS,   FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR, FS_IOC_SETVERSION, FS_IOC32_SETVERSION,
    0x40086604ul /* EXT4_IOC_SETVERSION */, FS_IOC_ENABLE_VERITY};

/// Terminal commands that change the terminal, never a task's own: Landlock lets a task open no
/// terminal, so every one it holds is the user's (stdout, stderr, the controlling terminal).
/// Its modes (echo off, ^C no longer a signal: they outlived the run), its size, flow and line
/// state, its modem lines: ENOTTY, as from a descriptor that is no terminal. Reading them stays.
/// TCSETS2 and friends name struct termios2 (44 bytes), whose header cannot be included beside
/// glibc's termios: their numbers on x86-64 and arm64, whose ioctl encoding is the generic one.
constexpr unsigned long terminal_setters[] = {
    TCSETS,  TCSETSW, TCSETSF, TCSETA,   TCSETAW, TCSETAF,  0x402C542Bul, 0x402C542Cul, 0x402C542Dul,
    TIOCSWINSZ, TCFLSH, TCXONC, TIOCSBRK, TIOCCBRK, TIOCMSET, TIOCMBIS,
    TIOCMBIC, TIOCSSOFTCAR, TIOCSLCKTRMIOS, TIOCSSERIAL};

std::string load_seccomp(bool network, bool exec) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return "seccomp_init failed";
  std::string why;
  g_trapped_count = 0;
  g_native_arch = seccomp_arch_native();
  // The name a trapped call is reported by (once per number).
  auto name_trapped = [&](int nr, const char* name) {
    if (nr < 0) return;  // libseccomp's pseudo-calls (not on this architecture): nothing to name
    for (int i = 0; i < g_trapped_count; ++i)
      if (g_trapped[i].number == nr) return;
    if (g_trapped_count < static_cast<int>(std::size(g_trapped))) {
      TrappedCall& t = g_trapped[g_trapped_count++];
      t.number = nr;
      std::snprintf(t.name, sizeof t.name, "%s", name);
    }
  };
  // Adds one rule (its conditions all hold); a call unknown to this libseccomp and without a
  // number is skipped.
  auto rule = [&](std::uint32_t action, NamedCall call, std::initializer_list<scmp_arg_cmp> when = {}) {
    int nr = seccomp_syscall_resolve_name(call.name);
    if (nr == __NR_SCMP_ERROR) nr = call.number_if_unknown;
    if (nr == -1) return;
    int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(when.size()), when.begin());
    if (rc != 0 && why.empty()) why = std::string("seccomp rule for ") + call.name + ": " + std::strerror(-rc);
    if (action == SCMP_ACT_TRAP) name_trapped(nr, call.name);
  };
  auto deny = [&](const char* name) { rule(SCMP_ACT_TRAP, {name, -1}); };
  seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP);
  for (const char* name : always_denied) deny(name);
  // Sockets. Without the network every family but AF_UNIX is a violation. A UNIX socket fails
  // with EACCES, network or not: glibc's getpwuid, getgrnam, ... first try nscd through one (and
  // go on when that fails), so trapping it would end every task that asks who a user is; and the
  // user's local services listen on them (the session bus would start programs outside the
  // sandbox). A socketpair reaches nothing outside, but a datagram one can still send to any
  // named socket (sendto with an address): EACCES too.
  // The family is an int: the EACCES rule looks at the low 32 bits only (AF_UNIX with high bits
  // set is a UNIX socket to the kernel); the trap compares all 64 and so fails closed.
  if (!network) rule(SCMP_ACT_TRAP, {"socket", -1}, {SCMP_A0(SCMP_CMP_NE, AF_UNIX)});
  // With the network: IP and netlink's routing protocol (what name lookups use), no other family.
  // VSOCK reached the hypervisor, and AF_ALG, AF_TIPC, AF_RDS and the like are as much kernel
  // surface as bpf or io_uring (an audit). A family past what this build knows, or with high bits
  // set (all 64 compared), is a violation (AF_UNIX so is refused by the rule above).
  if (network) {
    rule(SCMP_ACT_TRAP, {"socket", -1}, {SCMP_A0(SCMP_CMP_GE, AF_MAX)});
    for (int family = 0; family < AF_MAX; ++family)
      if (family != AF_UNIX && family != AF_INET && family != AF_INET6 && family != AF_NETLINK)
        rule(SCMP_ACT_TRAP, {"socket", -1}, {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))});
    rule(SCMP_ACT_TRAP, {"socket", -1},
         {SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_NE, NETLINK_ROUTE)});
  }
  rule(SCMP_ACT_ERRNO(EACCES), {"socket", -1}, {SCMP_A0(SCMP_CMP_MASKED_EQ, int_bits, AF_UNIX)});
  // A socketpair of any family but AF_UNIX, network or not: creating one loads the family's module
  // and runs its code, as socket() does (TIPC makes working pairs); all 64 bits compared.
  rule(SCMP_ACT_TRAP, {"socketpair", -1}, {SCMP_A0(SCMP_CMP_NE, AF_UNIX)});
  // The type's low four bits, other than SOCK_STREAM and SOCK_SEQPACKET: SOCK_RAW is a datagram
  // pair to AF_UNIX too.
  for (unsigned long type = 0; type < 16; ++type)
    if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
      rule(SCMP_ACT_ERRNO(EACCES), {"socketpair", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, type)});
  if (!exec) {
    deny("execve");
    deny("execveat");
  }
  for (const NamedCall& call : metadata_calls) rule(SCMP_ACT_ERRNO(EPERM), call);
  // Watching a directory or file reports the names made, opened, read and removed there, and
  // Landlock does not guard it: a task watched any directory its user may read (the home, ~/.ssh),
  // outside the paths it may open. No filter can tell which path a watch names, so none is set:
  // EACCES, as for a directory the user cannot read (and fanotify, EPERM, as without privilege).
  rule(SCMP_ACT_ERRNO(EACCES), {"inotify_add_watch", -1});
  // Nor an instance, useless without a watch: a user has 128 in all (max_user_instances), and a
  // task that held them left every other process of its user (of root: systemd, udev) without
  // one while its worker lived. EMFILE, as when that limit is met.
  rule(SCMP_ACT_ERRNO(EMFILE), {"inotify_init", -1});
  rule(SCMP_ACT_ERRNO(EMFILE), {"inotify_init1", -1});
  // Linux AIO contexts come from one pool for the whole machine (fs.aio-max-nr): a task that set
  // up one of 65536 events left every other process without (io_setup: EAGAIN) while its worker
  // lived. ENOSYS, as on a kernel built without AIO (libaio's users fall back; glibc's POSIX AIO
  // uses threads). io_uring is trapped above.
  rule(SCMP_ACT_ERRNO(ENOSYS), {"io_setup", -1});
  // A lease on a file the task may read delays everyone who opens it for writing (up to
  // lease-break-time, again and again): EPERM, as for a file one does not own.
  rule(SCMP_ACT_ERRNO(EPERM), {"fcntl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits, F_SETLEASE)});
  // Socket ioctls (0x89xx: SIOCGIFCONF, SIOCGIFADDR...) answer for the namespace the socket was
  // made in: on the channel, the host's, whose interfaces and addresses a worker without the
  // network is not to learn. ENOTTY, as for a descriptor that is no socket.
  if (!network)
    rule(SCMP_ACT_ERRNO(ENOTTY), {"ioctl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits & ~0xfful, 0x8900)});
  rule(SCMP_ACT_ERRNO(EPERM), {"fanotify_init", -1});
  rule(SCMP_ACT_ERRNO(EPERM), {"fanotify_mark", -1});
  for (unsigned long command : attribute_ioctls)
    rule(SCMP_ACT_ERRNO(EPERM), {"ioctl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits, command)});
  // Nor a file made setuid or setgid from the start (open with O_CREAT, creat, mknod): planted in
  // a write directory others can reach, it would run as this user outside the sandbox. The mode
  // is the argument after the flags (creat, mknod: after the path); openat2 carries it in memory:
  // ENOSYS, and glibc's open() never uses it.
  for (unsigned long bit : {static_cast<unsigned long>(S_ISUID), static_cast<unsigned long>(S_ISGID)}) {
    rule(SCMP_ACT_ERRNO(EPERM), {"open", -1}, {SCMP_A2(SCMP_CMP_MASKED_EQ, bit, bit)});
    rule(SCMP_ACT_ERRNO(EPERM), {"openat", -1}, {SCMP_A3(SCMP_CMP_MASKED_EQ, bit, bit)});
    rule(SCMP_ACT_ERRNO(EPERM), {"creat", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, bit, bit)});
    rule(SCMP_ACT_ERRNO(EPERM), {"mknod", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, bit, bit)});
    rule(SCMP_ACT_ERRNO(EPERM), {"mknodat", -1}, {SCMP_A2(SCMP_CMP_MASKED_EQ, bit, bit)});
  }
  rule(SCMP_ACT_ERRNO(ENOSYS), {"openat2", 437});
  // Nor a whiteout: renameat2 with RENAME_WHITEOUT leaves a character device 0:0 at the old name,
  // which Landlock's right to make devices does not cover (a task made one in its private
  // directory; an audit). EPERM, as a kernel before 5.8 answered a caller without CAP_MKNOD.
  rule(SCMP_ACT_ERRNO(EPERM), {"renameat2", -1},
       {SCMP_A4(SCMP_CMP_MASKED_EQ, RENAME_WHITEOUT, RENAME_WHITEOUT)});
  for (unsigned long flag : denied_clone_flags)
    rule(SCMP_ACT_TRAP, {"clone", -1}, {SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)});
  // clone3 passes its flags in memory, which a filter cannot read: ENOSYS, and glibc falls back
  // to clone (threads, fork, posix_spawn), where the flags are seen.
  rule(SCMP_ACT_ERRNO(ENOSYS), {"clone3", -1});
  // Calls that name another process by pid and which the kernel allows on the uid alone (Landlock
  // scopes signals and ptrace, not these). prlimit64 setting the limits of anyone but the caller
  // is a violation: it set the host's RLIMIT_FSIZE to 0 (the host died of SIGXFSZ at its next
  // write) or the guardian's RLIMIT_NOFILE (it could not look for what to kill); reading them
  // stays allowed, setting its own only as pid 0 (glibc's setrlimit; a filter cannot tell the
  // caller's pid from another's). Priorities and scheduling policies of another process (or
  // a process group, or every process of the user) fail with EPERM, and so do those of the
  // task's own threads named by thread id (glibc's pthread_setschedparam): the filter cannot tell
  // a thread of the worker from another process. CPU affinity stays allowed (thread pools pin
  // their threads by thread id).
  rule(SCMP_ACT_TRAP, {"prlimit64", -1}, {SCMP_A0(SCMP_CMP_NE, 0), SCMP_A2(SCMP_CMP_NE, 0)});
  rule(SCMP_ACT_ERRNO(EPERM), {"setpriority", -1}, {SCMP_A0(SCMP_CMP_NE, PRIO_PROCESS)});
  rule(SCMP_ACT_ERRNO(EPERM), {"setpriority", -1}, {SCMP_A1(SCMP_CMP_NE, 0)});
  rule(SCMP_ACT_ERRNO(EPERM), {"ioprio_set", -1}, {SCMP_A0(SCMP_CMP_NE, 1 /* IOPRIO_WHO_PROCESS */)});
  rule(SCMP_ACT_ERRNO(EPERM), {"ioprio_set", -1}, {SCMP_A1(SCMP_CMP_NE, 0)});
  for (const char* name : {"sched_setscheduler", "sched_setparam", "sched_setattr"})
    rule(SCMP_ACT_ERRNO(EPERM), {name, -1}, {SCMP_A0(SCMP_CMP_NE, 0)});
  // Workers share the host's terminal (stdout, stderr, their controlling terminal): TIOCSTI
  // would type commands into the user's shell, outside the sandbox, and TIOCLINUX (selection
  // paste) likewise; TIOCSPGRP would take the terminal's foreground (its keystrokes) from the
  // shell, TIOCSCTTY steal it as a controlling terminal, TIOCSETD change its line discipline,
  // TIOCCONS redirect the console to it, TIOCEXCL keep the user from opening it again. On a
  // virtual console the KD* and VT_* commands (0x4Bxx, 0x56xx, without size or direction bits)
  // remap its keys (typing as TIOCSTI does), switch consoles or turn the keyboard off. The
  // command is an unsigned int to the kernel: compared on those bits.
  for (unsigned long command : {TIOCSTI, TIOCLINUX, TIOCSPGRP, TIOCSCTTY, TIOCSETD, TIOCCONS, TIOCEXCL})
    rule(SCMP_ACT_TRAP, {"ioctl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits, command)});
  for (unsigned long group : {0x4B00ul, 0x5600ul})
    rule(SCMP_ACT_TRAP, {"ioctl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits & ~0xfful, group)});
  for (unsigned long command : terminal_setters)
    rule(SCMP_ACT_ERRNO(ENOTTY), {"ioctl", -1}, {SCMP_A1(SCMP_CMP_MASKED_EQ, int_bits, command)});
  // A task must not take SIGSYS away from the handler that reports what it tried: setting it
  // fails with EPERM (reading the action, a NULL new one, stays allowed). Not a violation:
  // glibc's posix_spawn, popen and system set every handled signal back to its default in the
  // child before its exec, and a trap there killed the child (an exec resets the handler anyway).
  rule(SCMP_ACT_ERRNO(EPERM), {"rt_sigaction", -1},
       {SCMP_A0(SCMP_CMP_MASKED_EQ, int_bits, SIGSYS), SCMP_A1(SCMP_CMP_NE, 0)});
  if (why.empty()) {
    int rc = seccomp_load(ctx);
    if (rc != 0) why = std::string("seccomp_load: ") + std::strerror(-rc);
  }
  seccomp_release(ctx);
  return why;
}

/// Without root, the guardian finds the worker's descendants by /proc/PID/ns/user, which the
/// kernel keeps from it for a process that made itself undumpable: that takes CAP_SYS_PTRACE over
/// the user namespace the process's memory belongs to, and for a process the worker forked that
/// is the one the worker was started in, not its own. prctl(PR_SET_DUMPABLE, 0) therefore fails
/// with EPERM in the worker and everything it starts. Holding CAP_SYS_ADMIN in its new user
/// namespace, the worker installs the filter without no_new_privs. The 32-bit calls of the
/// machine are filtered too; those of another architecture fail with ENOSYS.
std::string keep_descendants_visible() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return "seccomp_init failed";
  seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
  seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
  std::uint32_t native = seccomp_arch_native();
  int rc = native == SCMP_ARCH_X86_64 ? seccomp_arch_add(ctx, SCMP_ARCH_X86)
           : native == SCMP_ARCH_AARCH64 ? seccomp_arch_add(ctx, SCMP_ARCH_ARM)
                                         : 0;
  if (rc == -EEXIST) rc = 0;
  if (rc == 0)
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 2,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, int_bits, PR_SET_DUMPABLE), SCMP_A1(SCMP_CMP_EQ, 0));
  if (rc == 0) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return rc == 0 ? "" : std::string("seccomp filter for PR_SET_DUMPABLE: ") + std::strerror(-rc);
}

bool drop_capabilities() {
  // The bounding set first (needs CAP_SETPCAP, gone after capset): no exec can bring them back.
  for (int cap = 0; cap < 64; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL) break;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  return ::syscall(SYS_capset, &header, data) == 0;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

int resource_of(int r) {
  static constexpr int ids[] = {RLIMIT_DATA, RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_NPROC};
  return ids[r];
}

bool contains(std::string_view text, std::string_view word) {
  return text.find(word) != std::string_view::npos;
}

}  // namespace

// ---- setup -----------------------------------------------------------------------------------

std::string Containment::enter_user_namespace() {
  // Maps this user to itself: nothing changes for file access, and the worker may then make
  // namespaces (network), and RLIMIT_NPROC counts only the processes of this namespace.
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER) != 0) return errno_text("unshare(CLONE_NEWUSER)");
  char map[64];
  std::snprintf(map, sizeof map, "%u %u 1", uid, uid);
  if (!write_file("/proc/self/uid_map", map)) return errno_text("/proc/self/uid_map");
  write_file("/proc/self/setgroups", "deny");  // needed before gid_map as non-root
  std::snprintf(map, sizeof map, "%u %u 1", gid, gid);
  if (!write_file("/proc/self/gid_map", map)) return errno_text("/proc/self/gid_map");
  user_namespace_ = true;
  if (std::string why = keep_descendants_visible(); !why.empty())
    debug_log("worker: an undumpable descendant could outlive the worker: %s", why.c_str());
  return "";
}

std::string Containment::make_cgroup() {
  std::string parent = pids_cgroup_parent();
  if (parent.empty()) return "";
  std::string base = parent + "/ferry";
  bool v2 = ::access((parent + "/cgroup.subtree_control").c_str(), F_OK) == 0;
  // cgroup v2: the controller must be enabled on the way down.
  if (v2 && !write_file(parent + "/cgroup.subtree_control", "+pids")) return "";
  if (::mkdir(base.c_str(), 0755) != 0 && errno != EEXIST) return "";
  if (v2 && !write_file(base + "/cgroup.subtree_control", "+pids")) return "";
  // Not named by pid alone: a guardian still emptying the cgroup of an earlier worker with this
  // pid must not find this one's under that name.
  remove_stale_worker_cgroups(base);
  std::string dir = base + "/" + name_;
  if (::mkdir(dir.c_str(), 0755) != 0) return "";
  return dir;
}

std::string Containment::make_cpu_cgroup() {
  const std::string parent = cpuacct_cgroup_parent();
  if (parent.empty()) return "";
  const std::string base = parent + "/ferry";
  if (::mkdir(base.c_str(), 0755) != 0 && errno != EEXIST) return "";
  remove_stale_worker_cgroups(base);
  const std::string dir = base + "/" + name_;
  if (::mkdir(dir.c_str(), 0755) != 0) return "";
  return dir;
}

/// The worker's memory cgroup (a sandbox's memory ceiling, as root on cgroup v1): `limit` bytes for
/// everything the worker and what it starts are charged, shared memory and memfds included,
/// which RLIMIT_DATA does not count. The host, outside the cgroup, watches it after the hello
/// (host/containment.hpp, MemoryCeilingWatch) and only then turns its OOM killer off: a task that
/// fills it stops in its page fault and the host, told by the kernel, ends the call with
/// ResourceLimitError. Until then (or if the host cannot watch it) the kernel's OOM killer acts,
/// so a full cgroup never stops a worker that nobody watches. `dir` is in memory_cgroups_base().
/// "" on success, else why not (the directory is then removed).
std::string Containment::make_memory_cgroup(const std::string& dir, std::uint64_t limit) {
  const std::string base = directory_of(dir);  // <parent>/ferry, shared by the host's workers
  if (::mkdir(base.c_str(), 0755) != 0 && errno != EEXIST) return errno_text(("mkdir " + base).c_str());
  remove_stale_worker_cgroups(base);
  if (::mkdir(dir.c_str(), 0755) != 0 && !(errno == EEXIST && same_directory(dir, cgroup_)))
    return errno_text(("mkdir " + dir).c_str());  // (memory and pids mounted together: made)
  const std::string bytes = std::to_string(limit);
  // Swap: none for this cgroup's own reclaim, and where swap is accounted, memory and swap
  // together; without either, the task's pages past the limit would go to swap instead.
  bool ok = write_file(dir + "/memory.limit_in_bytes", bytes) && write_file(dir + "/memory.swappiness", "0");
  if (ok && ::access((dir + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0)
    ok = write_file(dir + "/memory.memsw.limit_in_bytes", bytes);
  if (!ok) {
    std::string why = errno_text(("setting up " + dir).c_str());
    if (!same_directory(dir, cgroup_)) ::rmdir(dir.c_str());
    return why;
  }
  memory_cgroup_ = dir;
  // Opened now: after Landlock the worker could not open them any more.
  memory_failcnt_fd_[0] = ::open((dir + "/memory.failcnt").c_str(), O_RDONLY | O_CLOEXEC);
  memory_failcnt_fd_[1] = ::open((dir + "/memory.memsw.failcnt").c_str(), O_RDONLY | O_CLOEXEC);
  return "";
}

bool Containment::memory_ceiling_met() const {
  for (int fd : memory_failcnt_fd_) {
    char buf[32];
    if (fd < 0) continue;
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    // The read needs a buffer the kernel charges to this cgroup: when it is full, ENOMEM.
    if (n < 0 && errno == ENOMEM) return true;
    if (n <= 0) continue;
    buf[n] = '\0';
    if (std::strtoull(buf, nullptr, 10) > 0) return true;
  }
  return false;
}

bool Containment::join_cgroup(std::uint64_t ceiling) {
  // Descriptors kept open: after Landlock the worker could not open these files any more. Its
  // task can write them too (the same process): with a ceiling (a sandbox's processes limit, which
  // a task may only lower), the worker's cgroup gets that limit, written once and never opened
  // again, and the worker goes into a cgroup inside it ("task") whose pids.max it keeps for each
  // task's own limit. A task that writes "max" there still meets the ceiling.
  std::string dir = cgroup_;
  if (ceiling != 0) {
    const bool v2 = ::access((cgroup_ + "/cgroup.subtree_control").c_str(), F_OK) == 0;
    if (v2 && !write_file(cgroup_ + "/cgroup.subtree_control", "+pids")) return false;
    dir = cgroup_ + "/task";
    if (::mkdir(dir.c_str(), 0755) != 0) return false;
    // v1 counts a refused fork in the forking cgroup only, v2 in the one whose limit it met and
    // those above: both files are read.
    ceiling_events_fd_ = ::open((cgroup_ + "/pids.events").c_str(), O_RDONLY | O_CLOEXEC);
  }
  // In a sandbox the guardian writes it (start_guardian): no descriptor of it here to copy.
  if (guardian_requests_ < 0) pids_max_fd_ = ::open((dir + "/pids.max").c_str(), O_WRONLY | O_CLOEXEC);
  pids_events_fd_ = ::open((dir + "/pids.events").c_str(), O_RDONLY | O_CLOEXEC);
  if (!write_file(dir + "/cgroup.procs", std::to_string(::getpid()))) return false;
  own_processes_ = own_threads();  // the guardian is not in the cgroup
  if (ceiling != 0 && !write_file(cgroup_ + "/pids.max", std::to_string(ceiling + static_cast<std::uint64_t>(own_processes_))))
    return false;
  return true;
}

std::string Containment::start_guardian(bool relay_output, std::uint64_t file_size, bool ascii_only) {
  pid_t worker = ::getpid();
  // A sandboxed worker's stdout and stderr become pipes, read by a relay (relay_main). Their ends
  // are kept at 10 and above: with the host's stdout or stderr closed, pipe2 would hand out 1 or 2,
  // and a relay holding a write end of its own pipe would never see its end.
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  auto close_pipes = [&] {
    for (int fd : {out[0], out[1], err[0], err[1]})
      if (fd >= 0) ::close(fd);
  };
  if (relay_output) {
    for (int* ends : {out, err}) {
      int made[2];
      if (::pipe2(made, O_CLOEXEC) != 0) {
        const std::string why = errno_text("pipe2");
        close_pipes();
        return why;
      }
      std::string why;
      for (int k = 0; k < 2; ++k) {
        ends[k] = ::fcntl(made[k], F_DUPFD_CLOEXEC, 10);
        if (ends[k] < 0 && why.empty()) why = errno_text("fcntl(F_DUPFD_CLOEXEC)");  // before close sets errno
        ::close(made[k]);
      }
      if (!why.empty()) {
        close_pipes();
        return why;
      }
    }
  }
  // In a sandbox with a pids cgroup, the guardian writes the worker's pids.max for a task's own
  // processes limit (set_processes): a descriptor of it kept in the worker was the task's too,
  // and code that ran in the worker before the limit was lowered (an earlier call, the
  // executor's initializer) could keep a copy and write "max" for a later call (20 forks under
  // an own limit of 5). Asked over this pair (its ends at 10 and above, like the pipes'); it
  // writes lower values only, so a task that asks too can only lower its own limit.
  int requests[2] = {-1, -1};
  if (harden_ && !cgroup_.empty()) {
    int made[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, made) != 0) {
      const std::string why = errno_text("socketpair");
      close_pipes();
      return why;
    }
    for (int k = 0; k < 2; ++k) {
      requests[k] = ::fcntl(made[k], F_DUPFD_CLOEXEC, 10);
      ::close(made[k]);
    }
    if (requests[0] < 0 || requests[1] < 0) {
      const std::string why = errno_text("fcntl(F_DUPFD_CLOEXEC)");
      for (int fd : requests)
        if (fd >= 0) ::close(fd);
      close_pipes();
      return why;
    }
  }
  auto close_requests = [&](int k) {
    if (requests[k] >= 0) ::close(requests[k]);
    requests[k] = -1;
  };
  // W forks H, H forks the relay R and the guardian G and exits: neither is the worker's child,
  // so a task's wait(-1) never sees them, and neither is in the worker's cgroup (W joins it
  // afterwards).
  pid_t h = ::fork();
  if (h < 0) {
    const std::string why = errno_text("fork");
    close_pipes();
    close_requests(0);
    close_requests(1);
    return why;
  }
  if (h == 0) {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, worker, 0));
    if (pidfd < 0) _exit(1);
    pid_t r = 0;
    int relay_pidfd = -1;
    if (relay_output) {
      r = ::fork();
      if (r < 0) _exit(1);
      if (r == 0) {
        // The host's stdout and stderr stay at 1 and 2; the pipes' read ends go to 3 and 4 (from
        // 10 and above: neither move overwrites the other), nothing else stays open.
        if (::dup2(out[0], 3) < 0 || ::dup2(err[0], 4) < 0) _exit(1);
        ::close(STDIN_FILENO);
        ::syscall(SYS_close_range, 5u, ~0u, 0u);
        relay_main(file_size, ascii_only);
      }
      relay_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, r, 0));
      if (relay_pidfd < 0) _exit(1);
    }
    pid_t g = ::fork();
    if (g < 0) _exit(1);
    if (g == 0) {
      // Nothing of the worker's: not the channel (the host's EOF when the worker dies), not its
      // stdout or stderr (whoever reads them until EOF). The relay's pidfd at 1, the requests'
      // end after it.
      const int at = relay_pidfd >= 0 ? 2 : 1;
      if (::dup2(pidfd, 0) < 0 || (relay_pidfd >= 0 && ::dup2(relay_pidfd, 1) < 0)) _exit(1);
      if (requests[1] >= 0 && ::dup2(requests[1], at) < 0) _exit(1);
      ::syscall(SYS_close_range, static_cast<unsigned>(requests[1] >= 0 ? at + 1 : at), ~0u, 0u);
      guardian_main(cgroup_, tag_, user_namespace_, memory_cgroup_, cpu_cgroup_, r, relay_pidfd >= 0 ? 1 : -1,
                    requests[1] >= 0 ? at : -1);
    }
    _exit(0);
  }
  int status = 0;
  while (::waitpid(h, &status, 0) < 0 && errno == EINTR) {
  }
  // The guardian's end is the guardian's alone: here a task could read the requests.
  close_requests(1);
  guardian_requests_ = requests[0];
  bool relayed = false;
  if (relay_output) {
    // A terminal's output is line-buffered by stdio: on a pipe it would wait for a full buffer.
    const bool terminal = ::isatty(STDOUT_FILENO);
    relayed = ::dup2(out[1], STDOUT_FILENO) >= 0 && ::dup2(err[1], STDERR_FILENO) >= 0;
    close_pipes();
    if (relayed && terminal) std::setvbuf(stdout, nullptr, _IOLBF, 0);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "the guardian process could not start";
  if (relay_output && !relayed) return errno_text("dup2 of the output pipes");
  return "";
}

std::string Containment::setup(const ContainmentConfig& config, int channel_fd) {
  auto t0 = std::chrono::steady_clock::now();
  channel_ = channel_fd;
  executor_limits_ = config.limits;
  g_channel = channel_fd;
  root_ = ::geteuid() == 0;
  for (int r = 0; r < resources; ++r) {
    ::getrlimit(resource_of(r), &start_[r]);
    soft_[r] = start_[r].rlim_cur;
    hard_[r] = start_[r].rlim_max;
  }
  harden_ = config.sandbox;
  std::string built;
  auto note = [&](const std::string& what) {
    if (!built.empty()) built += ", ";
    built += what;
  };

  // 1. Descendants end with the worker: as root, its pids cgroup; else its user namespace (no
  // process can leave one); else, the worker is their subreaper, and the guardian sweeps those
  // whose environment holds the worker's tag (which /proc shows only for processes that exec'd:
  // the weakest of the three).
  name_ = new_worker_cgroup_name();
  if (root_) cgroup_ = make_cgroup();
  if (cgroup_.empty() && !root_) {
    if (std::string why = enter_user_namespace(); !why.empty())
      debug_log("worker: no user namespace: %s", why.c_str());
    else
      // and its guardian (and a sandbox's relay), for RLIMIT_NPROC in the namespace
      own_processes_ = own_threads() + (config.sandbox ? 2 : 1);
  }
  if (cgroup_.empty() && !user_namespace_) {
    tag_ = name_;  // names this process and no later one
    ::setenv("FERRY_WORKER_TAG", tag_.c_str(), 1);
  }
  // A sandbox's memory limit is a ceiling on all the memory the worker is charged, not only the
  // private memory RLIMIT_DATA counts, where a memory cgroup can be made (root, cgroup v1; the
  // host probed the same, and watches the cgroup). Not made: refused unless best effort.
  if (config.sandbox && config.limits.memory != 0 && memory_limit_works && root_) {
    const std::string base = memory_cgroups_base();  // "": no memory cgroup to nest in
    const std::string dir = base.empty() ? "" : base + "/" + name_;
    if (std::string why = dir.empty() ? "" : make_memory_cgroup(dir, config.limits.memory); !why.empty()) {
      if (!config.best_effort) return "memory cgroup: " + why;
      debug_log("worker: no memory cgroup: %s", why.c_str());
    }
  }
  // As root, a cpuacct cgroup of its own: the host measures cpu_time there, the CPU time of the
  // worker and of every process it started (a task's children spun for as long as the pool
  // lived, its worker idle, under a cpu_time of 1 s), those that ended included.
  if (root_) cpu_cgroup_ = make_cpu_cgroup();
  // The relay writes to the host's terminal: the host's locale, not the task's environment
  // (ExecutorOptions::env may name another), says whether it takes UTF-8.
  const bool ascii_only = !config.terminal_utf8.value_or(utf8_locale());
  if (std::string why = start_guardian(config.sandbox, config.limits.file_size, ascii_only); !why.empty()) {
    // Nobody would remove them.
    if (!cpu_cgroup_.empty()) ::rmdir(cpu_cgroup_.c_str());
    if (!memory_cgroup_.empty()) ::rmdir(memory_cgroup_.c_str());
    if (!cgroup_.empty()) ::rmdir(cgroup_.c_str());
    return why;
  }
  if (!cpu_cgroup_.empty()) {
    // Not joined: the host measures the worker alone, as without one (the guardian removes it).
    if (write_file(cpu_cgroup_ + "/cgroup.procs", std::to_string(::getpid())))
      note("cpuacct cgroup " + cpu_cgroup_);
    else
      debug_log("worker: not in %s: %s", cpu_cgroup_.c_str(), std::strerror(errno));
  }
  if (!memory_cgroup_.empty()) {
    if (!write_file(memory_cgroup_ + "/cgroup.procs", std::to_string(::getpid())))
      return errno_text(("joining " + memory_cgroup_).c_str());
    note("memory cgroup " + memory_cgroup_);
  }
  if (!cgroup_.empty()) {
    if (!join_cgroup(config.sandbox ? config.limits.processes : 0))
      return errno_text(("joining " + cgroup_).c_str());
    note("pids cgroup " + cgroup_);
  } else if (user_namespace_) {
    note("user namespace");
  } else {
    // Orphans come back to the worker rather than to init (finish() ends them on a clean exit).
    // Only now: the guardian, orphaned when its parent exited, must not become our child.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    note("subreaper and sweep");
  }

  // 2. A user namespace, when not root and something needs one (and the one above failed). Tried
  // again rather than taken as failed: what matters here is the outcome. A sandbox always makes
  // namespaces (IPC; network unless allowed), a right that comes from one: it refuses to run
  // without one, and the retry gives the reason to report.
  if (!root_ && !user_namespace_ && (config.sandbox || config.limits.processes > 0)) {
    if (std::string why = enter_user_namespace(); !why.empty()) {
      if (config.sandbox && !config.best_effort) return why;
      debug_log("worker: no user namespace: %s", why.c_str());
    } else {
      own_processes_ = own_threads();  // the guardian, started before it, is outside it
      note("user namespace");
    }
  }

  // 3. Limits. In a sandbox, the hard limits become the executor's: the task cannot raise them
  // again, so a task's own limits (a limits frame) can only be lower than the executor's.
  if (config.sandbox) {
    const std::uint64_t values[] = {memory_limit_works ? config.limits.memory : 0, config.limits.open_files,
                                    config.limits.file_size,
                                    user_namespace_ && config.limits.processes != 0
                                        ? config.limits.processes + own_processes_
                                        : 0};
    for (int r = 0; r < resources; ++r) {
      if (values[r] == 0 || (start_[r].rlim_max != RLIM_INFINITY && start_[r].rlim_max < values[r]))
        continue;
      rlimit rl{static_cast<rlim_t>(values[r]), static_cast<rlim_t>(values[r])};
      if (::setrlimit(resource_of(r), &rl) == 0) {
        start_[r] = rl;
        soft_[r] = rl.rlim_cur;
        hard_[r] = rl.rlim_max;
      }
    }
    // No real-time scheduling and no nice value below the host's: a host allowed them
    // (RLIMIT_RTPRIO, RLIMIT_NICE, as desktops give their audio group) passed them on, and a task
    // made itself SCHED_FIFO, ahead of every ordinary process of the machine on its CPU. The
    // capabilities that would bypass these are dropped with the sandbox, and no task can raise
    // a hard limit again.
    const rlimit none{0, 0};
    ::setrlimit(RLIMIT_RTPRIO, &none);
    ::setrlimit(RLIMIT_NICE, &none);
    // A user's pending signals (each POSIX timer holds one) are counted for the user as a whole,
    // against the limit of the process that asks: a task made 96,000 timers, and no other process
    // of its user (as root, every daemon) could make one or queue a real-time signal while its
    // worker lived. A quarter of the host's limit: the executor's workers together stop there.
    if (rlimit pending{}; ::getrlimit(RLIMIT_SIGPENDING, &pending) == 0) {
      const rlim_t share = pending.rlim_max == RLIM_INFINITY ? 4096 : pending.rlim_max / 4;
      const rlimit lower{std::min(pending.rlim_cur, share), share};
      ::setrlimit(RLIMIT_SIGPENDING, &lower);
    }
  }
  struct sigaction sa{};
  sa.sa_handler = on_sigxfsz;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGXFSZ, &sa, nullptr);
  begin_task(config.limits);

  // 4. The sandbox.
  if (config.sandbox) {
    if (std::string why = build_sandbox(config); !why.empty()) return why;
    note(summary_);
  }
  summary_ = built;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  debug_log("worker: containment in %lld us: %s", static_cast<long long>(us.count()), summary_.c_str());
  return "";
}

namespace {

/// The executor's private directory (--private-tmp), opened without following a link on the way
/// (the host resolved its path): "" when it is a directory of this user's that no one else can
/// write (made 0700: the user may chmod it since, a task cannot), as the host made it (the same
/// device and inode as `made_as`, when the host said), and `seen`
/// is its identity and `opened` an O_PATH descriptor of it; else why it is refused. The place it
/// is made in is one no other user can change (host/containment.cpp), but a directory someone
/// put at its name since (theirs, or one open to others) would hand them the tasks' files, or
/// the tasks theirs.
std::string check_private_dir(const std::string& dir,
                              const std::optional<std::pair<std::uint64_t, std::uint64_t>>& made_as,
                              struct stat& seen, Fd& opened) {
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, dir.c_str(), &how, sizeof how));
  // A kernel without openat2, or a container's seccomp profile older than it (EPERM) or that
  // answers otherwise: the last component without links; the device and inode then tell.
  if (fd < 0 && (errno == ENOSYS || errno == EPERM || errno == EINVAL || errno == E2BIG))
    fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  const std::string what = "the sandbox's private directory " + dir;
  if (fd < 0) return errno_text(what.c_str());
  opened = Fd(fd);
  if (::fstat(fd, &seen) != 0) return errno_text(what.c_str());
  if (seen.st_uid != ::geteuid() || (seen.st_mode & 022) != 0) {
    char text[192];
    std::snprintf(text, sizeof text, " is not the one ferry made (owned by uid %u, mode %04o; ferry "
                  "made it uid %u's, writable by no one else): refused", static_cast<unsigned>(seen.st_uid),
                  static_cast<unsigned>(seen.st_mode & 07777), static_cast<unsigned>(::geteuid()));
    return what + text;
  }
  if (made_as && (seen.st_dev != made_as->first || seen.st_ino != made_as->second))
    return what + " is not the one ferry made (another directory at its name): refused";
  return "";
}

}  // namespace

std::string Containment::build_sandbox(const ContainmentConfig& config) {
  std::string built;
  auto note = [&](const std::string& what) {
    if (!built.empty()) built += ", ";
    built += what;
  };
  auto missing = [&](const std::string& why) -> bool {
    if (config.best_effort) {
      debug_log("worker: sandbox without it (best effort): %s", why.c_str());
      return false;
    }
    return true;
  };
  if (!config.network) {
    if (::unshare(CLONE_NEWNET) == 0) {
      note("network namespace");
    } else if (missing(errno_text("unshare(CLONE_NEWNET)"))) {
      return errno_text("unshare(CLONE_NEWNET)");
    }
  }
  // System V IPC and POSIX message queues of its own, network or not: Landlock guards neither,
  // and a task read and wrote another program's private shared-memory segment (0600, same user)
  // and took messages from its queue. Made with the same right as the network namespace.
  if (::unshare(CLONE_NEWIPC) == 0) {
    note("IPC namespace");
  } else if (missing(errno_text("unshare(CLONE_NEWIPC)"))) {
    return errno_text("unshare(CLONE_NEWIPC)");
  }
  // The worker's own files, read by path from here on (its executable's directory, libferry's).
  std::vector<std::string> own;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) own.push_back(directory_of(std::string(exe, static_cast<std::size_t>(n))));
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&libferry_anchor), &info) != 0 && info.dli_fname)
    own.push_back(directory_of(info.dli_fname));
  std::vector<std::string> write = config.write;
  std::vector<std::string> task_writable = config.write;  // and where the private directory is shown
  Fd private_dir;  // the private directory checked, while it is its own rule's (not shown)
  if (config.private_tmp && write.size() == 1) {
    // Checked first, best effort or not: this is not a kernel feature missing.
    struct stat made{};
    if (std::string why = check_private_dir(write.front(), config.private_tmp_id, made, private_dir); !why.empty()) return why;
    std::vector<std::string> needed = config.read;
    needed.insert(needed.end(), own.begin(), own.end());
    std::string refused;
    std::vector<std::string> shown = show_private_tmp(write.front(), made, std::move(needed), refused);
    if (!refused.empty()) return refused;
    for (const auto& dir : shown) note("private " + dir);
    task_writable.insert(task_writable.end(), shown.begin(), shown.end());
    // Then its rule goes through the directories it is shown at (mount points no task can
    // replace), never through its own path: under /tmp, that path now names an entry inside the
    // private directory, which a task can make a link to anywhere for the next worker's rule.
    if (!shown.empty()) {
      write = std::move(shown);
      private_dir = Fd();
    }
  }
  // The loader searches this namespace: a plugin's search path the host judged on its own file
  // system may lead here into a place a task writes (/var/tmp is the private directory now).
  // Every plugin this worker loads is judged against these first (LibraryCache::load).
  set_task_writable_places(task_writable);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_text("PR_SET_NO_NEW_PRIVS");

  // Landlock.
  int abi = landlock_abi();
  if (abi == 0) {
    if (missing("Landlock is not available")) return "Landlock is not available (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)";
  } else {
    // Below ABI 6 nothing keeps a task's signals in: kill(-1, SIGKILL) would end every process
    // of the user (of root, as root), the host first. Best effort runs without.
    if (abi < 6 && missing(landlock_scope_missing(abi))) return landlock_scope_missing(abi);
    Landlock ll(abi, config.network);
    if (!ll.ok()) {
      if (missing(errno_text("landlock_create_ruleset"))) return errno_text("landlock_create_ruleset");
    } else {
      const std::uint64_t read = ll_read_file | ll_read_dir | ll_execute;
      for (const char* p : {"/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/ld.so.conf",
                            "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf",
                            "/etc/passwd", "/etc/group", "/etc/hosts", "/usr/share/zoneinfo",
                            "/dev/zero", "/dev/urandom", "/dev/random", "/sys/devices/system/cpu",
                            "/proc/cpuinfo", "/proc/meminfo"})
        ll.allow(p, read);
      // What name lookups and TLS read when the network is allowed (resolver, services, address
      // selection, CA certificates: /etc/ssl/certs links into /usr/share).
      if (config.network)
        for (const char* p : {"/etc/resolv.conf", "/etc/host.conf", "/etc/services", "/etc/protocols",
                              "/etc/gai.conf", "/etc/ssl/certs", "/etc/pki/tls/certs", "/etc/pki/ca-trust/extracted",
                              "/etc/ca-certificates/extracted"})
          ll.allow(p, read);
      ll.allow("/dev/null", ll.all());
      // The worker's own /proc entry (its descriptors, statm): /proc/self resolves to it.
      ll.allow("/proc/" + std::to_string(::getpid()), read);
      for (const auto& p : own) ll.allow(p, read);
      for (const auto& p : config.read) ll.allow(p, read, true);
      if (private_dir) {
        // The private directory not shown: the one checked, by its descriptor (its path could
        // name another directory by now).
        ll.allow_opened(private_dir.get(), ll.all() & ~ll_make_special, write.front());
      } else {
        for (const auto& p : write) ll.allow(p, ll.all() & ~ll_make_special, true);
      }
      if (!ll.restrict_self()) {
        if (missing(errno_text("landlock_restrict_self"))) return errno_text("landlock_restrict_self");
      } else {
        note("Landlock ABI " + std::to_string(abi));
      }
    }
  }

  // seccomp, after Landlock (whose system calls it leaves alone anyway). The SIGSYS handler is
  // installed first: a trapped call then always finds it.
  struct sigaction sa{};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGSYS, &sa, nullptr);
  if (std::string why = load_seccomp(config.network, config.exec); !why.empty()) {
    if (missing(why)) return why;
  } else {
    note("seccomp");
  }

  // Last: no capability left (root, or the worker's user namespace), none an exec could regain.
  if (root_ || user_namespace_) {
    if (drop_capabilities()) note("no capabilities");
    else if (missing(errno_text("capset"))) return errno_text("capset");
  }
  summary_ = built;
  return "";
}

std::vector<std::string> Containment::show_private_tmp(const std::string& dir, const struct stat& made,
                                                       std::vector<std::string> needed, std::string& refused) {
  // glibc's tmpfile() writes in /tmp whatever $TMPDIR says, POSIX shared memory and semaphores
  // live in /dev/shm, and much code names /tmp itself: in a sandbox these failed with EACCES. In a
  // mount namespace of the worker's own, the executor's private directory is shown there (where
  // that hides nothing the worker must read). The task cannot mount (seccomp), so it cannot undo
  // this. Not needed for safety (Landlock already keeps the real ones out of reach): when it
  // cannot be done the worker goes on without, as before.
  const std::vector<std::string> targets = temp_dirs_to_hide(needed);
  if (targets.empty()) return {};
  std::vector<std::string> shown;
  if (::unshare(CLONE_NEWNS) != 0) {
    debug_log("worker: no private /tmp: unshare(CLONE_NEWNS): %s", std::strerror(errno));
    return {};
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    // Never mount in a copy whose mounts are still shared: it would reach the host's namespace.
    debug_log("worker: no private /tmp: making the mounts private: %s", std::strerror(errno));
    return {};
  }
  // By descriptor, opened in the new namespace (a bind mount's source must be one of its
  // mounts): `dir` itself usually lies under /tmp, hidden once /tmp is mounted over.
  const int source = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (source < 0) {
    debug_log("worker: no private /tmp: %s: %s", dir.c_str(), std::strerror(errno));
    return {};
  }
  // The directory checked before (check_private_dir), not one put at its name since.
  struct stat st{};
  if (::fstat(source, &st) != 0 || st.st_dev != made.st_dev || st.st_ino != made.st_ino) {
    ::close(source);
    refused = "the sandbox's private directory " + dir + " was replaced while the worker started: refused";
    return {};
  }
  const std::string from = "/proc/self/fd/" + std::to_string(source);
  for (const auto& target : targets) {
    if (::mount(from.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) == 0)
      shown.push_back(target);
    else
      debug_log("worker: no private %s: %s", target.c_str(), std::strerror(errno));
  }
  ::close(source);
  if (!shown.empty()) ::setenv("TMPDIR", shown.front().c_str(), 1);
  return shown;
}

// ---- per task --------------------------------------------------------------------------------

namespace {
/// In a sandbox the host takes a worker for one lowered to a task's own limits once it sent the
/// task: a limit that could not be set is no reason to run the task above it. The worker ends
/// (its call fails with TerminatedWorkerError, exit 70: "cannot set up its limits or sandbox").
[[noreturn]] void cannot_hold_own_limit(const std::string& what) {
  std::fprintf(stderr, "ferry-worker: containment: cannot hold a task's own limit: %s\n", what.c_str());
  std::fflush(stderr);
  ::_exit(static_cast<int>(protocol::WorkerExit::containment));
}
}  // namespace

void Containment::set_limit(Resource r, std::uint64_t value) {
  const rlim_t hard = hard_[r];
  rlim_t want = value == 0 ? start_[r].rlim_cur : static_cast<rlim_t>(value);
  if (hard != RLIM_INFINITY && want > hard) want = hard;
  // In a sandbox a task's own limit is its hard limit too: a soft one alone, the task raised it
  // back up to the hard one (the executor's) with setrlimit and allocated past its own. Lowering
  // a hard limit cannot be undone (raising one needs CAP_SYS_RESOURCE, dropped with the sandbox):
  // the host sends this worker no call with a higher limit afterwards (Dispatcher::fits).
  const rlim_t new_hard = harden_ && value != 0 ? want : hard;
  if (want == soft_[r] && new_hard == hard) return;
  rlimit rl{want, new_hard};
  if (::setrlimit(resource_of(r), &rl) == 0) {
    soft_[r] = want;
    hard_[r] = new_hard;
  } else {
    const std::string why = "setrlimit(" + std::to_string(resource_of(r)) + ", " + std::to_string(want) + "/" +
                            std::to_string(new_hard) + "): " + std::strerror(errno);
    if (harden_ && value != 0) cannot_hold_own_limit(why);  // fail closed (no test can make it fail)
    debug_log("worker: %s", why.c_str());
  }
}

void Containment::set_processes(std::uint64_t value) {
  if (guardian_requests_ >= 0) {
    // A sandbox: the guardian writes it, lower only (start_guardian). Nothing here to copy.
    const PidsRequest request{value == 0 ? pids_unlimited : value + static_cast<std::uint64_t>(own_processes_),
                              ++pids_requests_};
    // Answers to a task's own requests may wait on the socket: only ours counts (its sequence),
    // and within a deadline (a task's thread may read ours first, or the guardian may be gone).
    PidsAnswer answer{EIO, 0};
    bool answered = false;
    // No SIGPIPE if the guardian has gone: the limit is then not written, and the worker ends.
    if (::send(guardian_requests_, &request, sizeof request, MSG_NOSIGNAL) == sizeof request) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!answered) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        pollfd p{guardian_requests_, POLLIN, 0};
        const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        const ssize_t n = ::recv(guardian_requests_, &answer, sizeof answer, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n != sizeof answer) break;  // the guardian gone
        answered = answer.sequence == request.sequence;
      }
    }
    if (!answered || answer.code != 0)
      cannot_hold_own_limit(std::string("the guardian did not write pids.max: ") +
                            (!answered ? "no answer" : std::strerror(answer.code)));
    return;
  }
  if (pids_max_fd_ >= 0) {
    // The worker's own processes count too: the limit is on what the task starts.
    char text[32];
    int n = value == 0 ? std::snprintf(text, sizeof text, "max")
                       : std::snprintf(text, sizeof text, "%llu",
                                       static_cast<unsigned long long>(value + own_processes_));
    if (::pwrite(pids_max_fd_, text, static_cast<std::size_t>(n), 0) != n && harden_)
      cannot_hold_own_limit(std::string("writing pids.max: ") + std::strerror(errno));
    // In a sandbox a task's own limit is final: the task runs in this process, and wrote "max"
    // through the descriptor kept open (found by /proc/self/fd), forking past its own limit.
    // Closed, nothing of the task's reaches the file: Landlock refuses cgroupfs by path, also
    // through /proc/self/fd's links, and the worker can never write it again (the host sends it
    // only calls of the same processes limit: Dispatcher::fits).
    if (harden_ && value != executor_limits_.processes) {
      ::close(pids_max_fd_);
      pids_max_fd_ = -1;
    }
  } else if (user_namespace_) {
    set_limit(nproc, value == 0 ? 0 : value + own_processes_);
  } else if (!cgroup_.empty() && value != current_.processes) {
    // Closed after a task's own limit: the host sends no other value (Dispatcher::fits).
    if (harden_) cannot_hold_own_limit("pids.max is closed, and " + std::to_string(value) + " is another limit");
    debug_log("worker: pids.max closed: the processes limit %llu cannot be set",
              static_cast<unsigned long long>(value));
  }
}

std::uint64_t Containment::cgroup_refusals() const {
  // pids.events: "max N", N = forks refused by pids.max. Only ever compared with an earlier sum.
  std::uint64_t sum = 0;
  for (int fd : {pids_events_fd_, ceiling_events_fd_}) {
    char buf[64];
    ssize_t n = fd >= 0 ? ::pread(fd, buf, sizeof buf - 1, 0) : -1;
    if (n <= 0) continue;
    buf[n] = '\0';
    const char* p = std::strstr(buf, "max ");
    if (p) sum += std::strtoull(p + 4, nullptr, 10);
  }
  return sum;
}

void Containment::begin_task(const protocol::TaskLimits& limits) {
  // The hot path: the same limits as the task before cost nothing. The limits stay in force
  // between tasks too (the next task most often has the same ones).
  // The cgroup's refusal count needs no fresh read either: check_after_task read it after the
  // task before, and a worker that found it grown has gone.
  if (limits == current_) return;
  set_limit(data, memory_limit_works ? limits.memory : 0);
  set_limit(nofile, limits.open_files);
  g_file_size_limit = limits.file_size;
  set_limit(fsize, limits.file_size);
  if (limits.processes != current_.processes) set_processes(limits.processes);
  if (limits.processes != 0 && pids_events_fd_ >= 0) refusals_ = cgroup_refusals();
  current_ = limits;
}

std::optional<protocol::Contained> Containment::explain_failure(std::string_view exception_type,
                                                                std::string_view message) {
  std::string detail = std::string(exception_type) + ": " + std::string(message);
  if (current_.memory != 0 &&
      (contains(exception_type, "bad_alloc") || contains(message, std::strerror(ENOMEM))))
    return Contained{ContainedKind::memory, current_.memory, "memory", detail};
  if (current_.open_files != 0) {
    // The table is full now, or was (the task's own destructors may have closed its files).
    int lowest = ::fcntl(channel_, F_DUPFD_CLOEXEC, 0);
    if (lowest >= 0) ::close(lowest);
    if (lowest < 0 || static_cast<std::uint64_t>(lowest) + 1 >= current_.open_files ||
        contains(message, std::strerror(EMFILE)))
      return Contained{ContainedKind::open_files, current_.open_files, "open_files", detail};
  }
  if (current_.processes != 0) {
    // The cgroup counts the forks it refused; without one, a fork past RLIMIT_NPROC is EAGAIN
    // (which the task's message may quote).
    bool refused = pids_events_fd_ >= 0 ? cgroup_refusals() > refusals_
                                        : contains(message, std::strerror(EAGAIN));
    if (refused)
      return Contained{ContainedKind::processes, current_.processes, "processes", detail};
  }
  return std::nullopt;
}

bool Containment::fork_refused() {
  if (current_.processes == 0 || pids_events_fd_ < 0) return false;
  std::uint64_t now = cgroup_refusals();
  if (now <= refusals_) return false;
  refusals_ = now;
  return true;
}

void Containment::finish() {
  if (!cgroup_.empty() || user_namespace_) return;  // the guardian ends them
  // Subreaper: every orphan of the tasks is a child of the worker now, and so is every process
  // orphaned by the kills below. Repeat until no child is left (a zombie stays listed until it is
  // reaped; __WALL: also the children a task cloned with another exit signal), at most one second.
  // SIGCHLD back to its default first: ignored (a task may have set that), the kernel would reap
  // children by itself and a listed pid could be another process's by the time of its kill.
  ::signal(SIGCHLD, SIG_DFL);
  for (std::int64_t end = now_ms() + 1000; kill_children() && now_ms() < end;) {
    while (::waitpid(-1, nullptr, WNOHANG | __WALL) > 0) {
    }
    pause_ms(1);
  }
}

}  // namespace ferry::detail
