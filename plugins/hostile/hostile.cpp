// SPDX-License-Identifier: BSD-3-Clause
// The hostile plugin: what a task could do to escape its worker (see hostile.hpp).
#include "hostile.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <linux/fs.h>
#include <spawn.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// The global pid of the calling process, or -1 (errno set). Async-signal-safe (for forked
/// children of a multi-threaded worker): only readlink and a hand-written parse.
int global_pid_or_minus_one() {
  char buf[32];
  ssize_t n = ::readlink("/proc/self", buf, sizeof buf - 1);
  if (n <= 0) return -1;
  int pid = 0;
  for (ssize_t i = 0; i < n; ++i) {
    if (buf[i] < '0' || buf[i] > '9') {
      errno = EINVAL;
      return -1;
    }
    pid = pid * 10 + (buf[i] - '0');
  }
  return pid;
}

/// waitpid, again after EINTR; throws on failure.
int wait_for_child(pid_t pid, int flags = 0) {
  int status = 0;
  while (::waitpid(pid, &status, flags) < 0)
    if (errno != EINTR) fail("waitpid " + std::to_string(pid));
  return status;
}

/// Writes all of `data` to `fd`; false on failure (errno set).
bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

/// Reads `fd` to its end; false on failure (errno set).
bool read_all(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return true;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

/// Keeps the compiler from eliding an allocation or the writes into it.
void escape(void* p) { asm volatile("" : : "r"(p) : "memory"); }

}  // namespace

int connect_loopback(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) fail("socket(AF_INET)");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) < 0) {
    int e = errno;
    ::close(s);
    errno = e;
    fail("connect 127.0.0.1:" + std::to_string(port));
  }
  ::close(s);
  return port;
}

bool write_file(std::string path, std::string text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("open " + path + " for writing");
  if (!write_all(fd, text.data(), text.size())) {
    int e = errno;
    ::close(fd);
    errno = e;
    fail("write " + path);
  }
  if (::close(fd) < 0) fail("close " + path);
  return true;
}

int watch_directory(std::string path) {
  // What happens in a directory (names made, opened, removed), as inotify reports it.
  int fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (fd < 0) fail("inotify_init1");
  const int watch = ::inotify_add_watch(fd, path.c_str(), IN_ALL_EVENTS);
  const int e = errno;
  ::close(fd);
  if (watch < 0) {
    errno = e;
    fail("inotify_add_watch " + path);
  }
  return watch;
}

std::string read_file(std::string path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path + " for reading");
  std::string text;
  if (!read_all(fd, text)) {
    int e = errno;
    ::close(fd);
    errno = e;
    fail("read " + path);
  }
  ::close(fd);
  return text;
}

/// A close-on-exec pipe, then fork(); throws (both ends closed) when either fails.
static pid_t fork_with_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) < 0) fail("pipe2");
  pid_t child = ::fork();
  if (child < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    errno = e;
    fail("fork");
  }
  return child;
}

int exec_shell() {
  // The child reports a failed execve through a close-on-exec pipe: EOF means the exec happened.
  int fds[2];
  pid_t child = fork_with_pipe(fds);
  if (child == 0) {
    ::close(fds[0]);
    ::execl("/bin/sh", "sh", "-c", "exit 7", static_cast<char*>(nullptr));
    int e = errno;
    (void)!::write(fds[1], &e, sizeof e);
    ::_exit(127);
  }
  ::close(fds[1]);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(fds[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(fds[0]);
  int status = wait_for_child(child);
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    errno = exec_errno;
    fail("execve /bin/sh");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

namespace {

/// A forked child's life: pause() until killed. The safety net of hostile.hpp: SIGALRM's default
/// action ends it in 30 s.
[[noreturn]] void pause_in_child() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGALRM, &dfl, nullptr);
  sigset_t alrm;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  ::sigprocmask(SIG_UNBLOCK, &alrm, nullptr);
  ::alarm(30);
  for (;;) ::pause();
}

/// Forks up to `n` pausing children; on a refused fork, throws or (`cope`) returns the count.
int fork_children(int n, bool cope) {
  int forked = 0;
  for (; forked < n; ++forked) {
    pid_t pid = ::fork();
    if (pid < 0 && cope) break;
    if (pid < 0) fail("fork (after " + std::to_string(forked) + " children)");
    if (pid == 0) pause_in_child();
  }
  return forked;
}

}  // namespace

int fork_bomb(int n) { return fork_children(n, false); }

int fork_until_refused(int n) { return fork_children(n, true); }

int fork_runners(int n) {
  timespec start{};
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("fork (after " + std::to_string(i) + " runners)");
    if (pid > 0) continue;
    ::setsid();
    for (;;) {
      timespec now{};
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec - start.tv_sec >= 30) ::_exit(0);  // the safety net
      const pid_t child = ::fork();
      if (child > 0) ::_exit(0);
      if (child < 0) ::usleep(1000);
    }
  }
  return n;
}

std::uint64_t allocate(std::uint64_t bytes, bool touch) {
  std::unique_ptr<char[]> block(new char[static_cast<std::size_t>(bytes)]);
  escape(block.get());
  if (touch) {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    for (std::uint64_t i = 0; i < bytes; i += page) block[i] = 1;
    escape(block.get());
  }
  return bytes;
}

std::uint64_t share_memory(std::uint64_t bytes, int how) {
  const auto size = static_cast<std::size_t>(bytes);
  void* at = MAP_FAILED;
  pid_t child = -1;
  if (how == 3) {
    child = ::fork();
    if (child < 0) fail("fork");
    if (child == 0) pause_in_child();
    how = 0;
  }
  if (how == 0) {
    at = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  } else if (how == 1) {
    int fd = static_cast<int>(::syscall(SYS_memfd_create, "share_memory", 0u));
    if (fd < 0) fail("memfd_create");
    if (::ftruncate(fd, static_cast<off_t>(size)) == 0)
      at = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
  } else {
    int id = ::shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    if (id < 0) fail("shmget");
    at = ::shmat(id, nullptr, 0);
    ::shmctl(id, IPC_RMID, nullptr);  // gone once detached
    if (at == reinterpret_cast<void*>(-1)) at = MAP_FAILED;
  }
  if (at == MAP_FAILED) fail("mapping shared memory");
  auto* p = static_cast<volatile char*>(at);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  for (std::size_t i = 0; i < size; i += page) p[i] = 1;
  if (how == 2) ::shmdt(at);
  else ::munmap(at, size);
  if (child > 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  return bytes;
}

std::uint64_t write_shared(std::uint64_t bytes, bool keep) {
  int fd = static_cast<int>(::syscall(SYS_memfd_create, "write_shared", 0u));
  if (fd < 0) fail("memfd_create");
  static const std::string block(std::size_t{1} << 20, 'w');
  std::uint64_t written = 0;
  while (written < bytes) {
    ssize_t n = ::write(fd, block.data(), static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), bytes - written)));
    if (n <= 0) break;
    written += static_cast<std::uint64_t>(n);
  }
  if (!keep) ::close(fd);
  return written;
}

std::string bytes_result(std::uint64_t bytes) { return std::string(static_cast<std::size_t>(bytes), 'r'); }

std::string unfiltered_threads() {
  int all = 0, unfiltered = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream status(entry.path() / "status");
    ++all;
    bool filtered = false;
    for (std::string line; std::getline(status, line);)
      if (line.rfind("Seccomp:", 0) == 0) filtered = line.find('2') != std::string::npos;
    if (!filtered) ++unfiltered;
  }
  return std::to_string(unfiltered) + "/" + std::to_string(all);
}

int leak_files(int n) {
  for (int i = 0; i < n; ++i) {
    int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC, and never closed
    if (fd < 0) fail("open /dev/null (after " + std::to_string(i) + " descriptors)");
  }
  return n;
}

namespace {

/// setsid_grandchild, and with `hide` the grandchild first makes itself undumpable.
int grandchild(bool hide) {
  int fds[2];
  pid_t child = fork_with_pipe(fds);
  if (child == 0) {
    ::close(fds[0]);
    if (::setsid() < 0) ::_exit(1);
    pid_t grandchild = ::fork();
    if (grandchild < 0) ::_exit(2);
    if (grandchild == 0) {
      // With bits above the 32 of prctl's int option, which the kernel ignores: a filter that
      // compares all 64 would let it through.
      if (hide) (void)::syscall(SYS_prctl, (1UL << 32) | PR_SET_DUMPABLE, 0UL);
      char text[16];
      int pid = global_pid_or_minus_one();
      int len = 0;
      if (pid > 0) {
        char digits[16];
        int d = 0;
        for (int p = pid; p > 0; p /= 10) digits[d++] = static_cast<char>('0' + p % 10);
        while (d > 0) text[len++] = digits[--d];
      }
      (void)write_all(fds[1], text, static_cast<std::size_t>(len));
      ::close(fds[1]);
      for (;;) ::pause();
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  bool read_ok = read_all(fds[0], text);  // EOF once the grandchild wrote its pid
  int e = errno;
  ::close(fds[0]);
  int status = wait_for_child(child);
  if (!read_ok) {
    errno = e;
    fail("read the grandchild's pid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("setsid_grandchild: the child failed (status " +
                             std::to_string(status) + ")");
  if (text.empty()) throw std::runtime_error("setsid_grandchild: the grandchild sent no pid");
  return std::stoi(text);
}

}  // namespace

int setsid_grandchild() { return grandchild(false); }

int hidden_grandchild() { return grandchild(true); }

int ptrace_pid(int pid) {
  if (::ptrace(PTRACE_ATTACH, pid, nullptr, nullptr) < 0)
    fail("ptrace(PTRACE_ATTACH, " + std::to_string(pid) + ")");
  int status = 0;
  while (::waitpid(pid, &status, __WALL) < 0) {
    if (errno == EINTR) continue;
    int e = errno;
    ::ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
    errno = e;
    fail("waitpid " + std::to_string(pid) + " after PTRACE_ATTACH");
  }
  if (::ptrace(PTRACE_DETACH, pid, nullptr, nullptr) < 0)
    fail("ptrace(PTRACE_DETACH, " + std::to_string(pid) + ")");
  return 0;
}

int type_into_terminal(int fd, bool high_bits) {
  const char c = '\n';
  // The kernel reads the command as an unsigned int: high bits must not slip past a filter.
  const unsigned long command = TIOCSTI | (high_bits ? 1UL << 32 : 0UL);
  return ::syscall(SYS_ioctl, fd, command, &c) == 0 ? 0 : errno;
}

int read_descriptor(int fd) {
  char c = 0;
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  const ssize_t n = ::read(fd, &c, 1);
  const int error = n < 0 ? errno : 0;
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags);
  return error;
}

int spin_cpu(int seconds) {
  auto cpu_ns = [] {
    timespec t{};
    if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) < 0) fail("clock_gettime");
    return static_cast<long long>(t.tv_sec) * 1'000'000'000LL + t.tv_nsec;
  };
  const long long start = cpu_ns();
  const long long budget = static_cast<long long>(seconds) * 1'000'000'000LL;
  volatile std::uint64_t x = 0;
  while (cpu_ns() - start < budget)
    for (int i = 0; i < 100000; ++i) x = x + static_cast<std::uint64_t>(i);
  return seconds;
}

std::uint64_t write_bytes(std::string path, std::uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("open " + path + " for writing");
  static const std::string chunk(65536, 'x');
  std::uint64_t written = 0;
  while (written < bytes) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), bytes - written));
    if (!write_all(fd, chunk.data(), n)) {
      int e = errno;
      ::close(fd);
      errno = e;
      fail("write " + path + " (after " + std::to_string(written) + " bytes)");
    }
    written += n;
  }
  if (::close(fd) < 0) fail("close " + path);
  return written;
}

int hostile_pid() {
  int pid = global_pid_or_minus_one();
  if (pid < 0) fail("readlink /proc/self");
  return pid;
}

int leave_spinning_thread(int seconds) {
  std::thread([seconds] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    volatile std::uint64_t x = 0;
    while (std::chrono::steady_clock::now() < end)
      for (int i = 0; i < 100000; ++i) x = x + static_cast<std::uint64_t>(i);
  }).detach();
  return hostile_pid();
}

std::string temp_dir() {
  const char* dir = std::getenv("TMPDIR");
  return dir ? dir : "";
}

int make_directory(std::string path) { return ::mkdir(path.c_str(), 0700) == 0 ? 0 : errno; }

int remove_directory(std::string path) { return ::rmdir(path.c_str()) == 0 ? 0 : errno; }

int make_symlink(std::string target, std::string path) {
  return ::symlink(target.c_str(), path.c_str()) == 0 ? 0 : errno;
}

int make_node(std::string path, char kind) {
  mode_t type = 0;
  dev_t device = 0;
  switch (kind) {
    case 'f': type = S_IFIFO; break;
    case 's': type = S_IFSOCK; break;
    case 'c': type = S_IFCHR, device = ::makedev(1, 3); break;
    default: throw std::invalid_argument(std::string("make_node: no kind ") + kind);
  }
  return ::mknod(path.c_str(), type | 0600, device) == 0 ? 0 : errno;
}

int rename_whiteout(std::string from, std::string to) {
  // A file of its own at `from`, renamed to `to` leaving a whiteout (a character device 0:0) in
  // its place; the file is removed again when the rename is refused. 0, or the rename's errno.
  const int fd = ::open(from.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail("open " + from);
  ::close(fd);
  if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_WHITEOUT) == 0) return 0;
  const int e = errno;
  ::unlink(from.c_str());
  return e;
}

std::string tmpfile_round_trip(std::string text) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::tmpfile(), &std::fclose);
  if (!f) fail("tmpfile");
  if (std::fwrite(text.data(), 1, text.size(), f.get()) != text.size() || std::fflush(f.get()) != 0)
    fail("fwrite to tmpfile");
  std::rewind(f.get());
  std::string back(text.size(), '\0');
  back.resize(std::fread(back.data(), 1, back.size(), f.get()));
  return back;
}

std::string posix_shm_round_trip(std::string name, std::string text) {
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fail("shm_open " + name);
  const std::size_t size = text.size() + 1;
  void* map = ::ftruncate(fd, static_cast<off_t>(size)) == 0
                  ? ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
  const int error = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    ::shm_unlink(name.c_str());
    errno = error;
    fail("mapping " + name);
  }
  std::memcpy(map, text.c_str(), size);
  std::string back(static_cast<const char*>(map));
  ::munmap(map, size);
  if (::shm_unlink(name.c_str()) != 0) fail("shm_unlink " + name);
  return back;
}

std::uint64_t sum_bytes(std::vector<char> data) {
  std::uint64_t sum = 0;
  for (char c : data) sum += static_cast<unsigned char>(c);
  return sum;
}

std::uint64_t flood_output(int fd, std::uint64_t bytes) {
  std::string line(63, 'x');
  line += '\n';
  std::uint64_t written = 0;
  while (written < bytes) {
    const ssize_t w = ::write(fd, line.data(), line.size());
    if (w <= 0) break;
    written += static_cast<std::uint64_t>(w);
  }
  return written;
}

std::uint64_t write_text(int fd, std::string text, std::uint64_t cut) {
  cut = std::min<std::uint64_t>(cut, text.size());
  std::uint64_t written = 0;
  if (write_all(fd, text.data(), cut)) written = cut;
  if (written == cut && write_all(fd, text.data() + cut, text.size() - cut)) written = text.size();
  return written;
}

std::string descriptor_target(int fd) {
  char target[4096];
  const ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
  return n < 0 ? std::string("(closed)") : std::string(target, static_cast<std::size_t>(n));
}

std::string attack_output() {
  std::string done;
  if (::ftruncate(STDERR_FILENO, 0) == 0) done += "truncated ";
  const int flags = ::fcntl(STDERR_FILENO, F_GETFL);
  if (flags >= 0 && ::fcntl(STDERR_FILENO, F_SETFL, flags & ~O_APPEND) == 0 && ::pwrite(STDERR_FILENO, "PWNED", 5, 0) == 5)
    done += "overwritten ";
  static constexpr char line[] = "from the task\n";
  if (::write(STDERR_FILENO, line, sizeof line - 1) != static_cast<ssize_t>(sizeof line - 1)) done += "no output";
  return done;
}

std::string environment_variable(std::string name) {
  const char* value = std::getenv(name.c_str());
  return value ? value : "(unset)";
}

namespace {

/// The mapping of this call's arguments in shared memory (a "ferry-buffer" memfd in
/// /proc/self/maps) of at least `bytes` bytes: its start and length, or {nullptr, 0}.
std::pair<char*, std::size_t> argument_mapping(std::size_t bytes) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("ferry-buffer") == std::string::npos) continue;
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && hi - lo >= bytes)
      return {reinterpret_cast<char*>(lo), hi - lo};
  }
  return {nullptr, 0};
}

/// Bytes other than zero in [from, to) of `p`, page by page through a pipe: a page past the end
/// of the file behind the mapping is an EFAULT there (and the count stops), not a SIGBUS.
std::uint64_t nonzero_bytes(const char* p, std::size_t from, std::size_t to) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail("pipe2");
  std::uint64_t found = 0;
  char page[4096];
  for (std::size_t at = 0; at < to; at += sizeof page) {
    const std::size_t n = std::min(sizeof page, to - at);
    if (::write(pipe_fds[1], p + at, n) != static_cast<ssize_t>(n)) break;  // past the file's end
    if (::read(pipe_fds[0], page, n) != static_cast<ssize_t>(n)) break;
    for (std::size_t i = 0; i < n; ++i) found += at + i >= from && page[i] != 0;
  }
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  return found;
}

char* g_kept_block = nullptr;
std::size_t g_kept_length = 0;

}  // namespace

std::uint64_t foreign_bytes_in_argument_block(std::vector<char> zeros, std::uint64_t span) {
  auto [start, length] = argument_mapping(zeros.size());
  if (!start) fail("no mapping of the arguments");
  // The same pages, mapped again and further: as far as the block goes.
  void* again = ::mremap(start, 0, span, MREMAP_MAYMOVE);
  if (again == MAP_FAILED) fail("mremap");
  // Past the arguments (their length fields and the span are not zero; 64 bytes of slack).
  const std::uint64_t found = nonzero_bytes(static_cast<char*>(again), zeros.size() + 64, span);
  ::munmap(again, span);
  (void)length;
  return found;
}

std::uint64_t keep_argument_block(std::vector<char> zeros) {
  auto [start, length] = argument_mapping(zeros.size());
  if (!start) fail("no mapping of the arguments");
  void* kept = ::mremap(start, 0, length, MREMAP_MAYMOVE);
  if (kept == MAP_FAILED) fail("mremap");
  g_kept_block = static_cast<char*>(kept);
  g_kept_length = length;
  return length;
}

std::uint64_t kept_block_foreign_bytes() {
  if (!g_kept_block) fail("no block kept");
  return nonzero_bytes(g_kept_block, 64, g_kept_length);
}

namespace {

/// The worker's channel to the host: its command line names it, "--fd N" (NUL-separated).
int channel_descriptor() {
  std::string args = read_file("/proc/self/cmdline");
  int fd = -1;
  for (std::size_t at = 0; at < args.size();) {
    std::size_t end = args.find('\0', at);
    if (end == std::string::npos) end = args.size();
    if (args.compare(at, end - at, "--fd") == 0 && end + 1 < args.size()) fd = std::atoi(args.c_str() + end + 1);
    at = end + 1;
  }
  if (fd < 0) throw std::runtime_error("no --fd in the worker's command line");
  return fd;
}

}  // namespace

int channel_interface_count() {
  ifreq requests[16];
  ifconf conf{};
  conf.ifc_len = sizeof requests;
  conf.ifc_req = requests;
  if (::ioctl(channel_descriptor(), SIOCGIFCONF, &conf) != 0) return -errno;
  return conf.ifc_len / static_cast<int>(sizeof(ifreq));
}

int lock_file(std::string path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path + " for reading");
  const int rc = ::flock(fd, LOCK_EX | LOCK_NB);
  const int e = errno;
  ::close(fd);
  return rc == 0 ? 0 : e;
}

int lease_file(std::string path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path + " for reading");
  const int rc = ::fcntl(fd, F_SETLEASE, F_RDLCK);
  const int e = errno;
  ::close(fd);  // the lease goes with it
  return rc == 0 ? 0 : e;
}

int close_channel_and_wait(int seconds) {
  const int fd = channel_descriptor();
  ::shutdown(fd, SHUT_RDWR);  // its end for every copy of the descriptor, then this one
  ::close(fd);
  timespec left{seconds, 0};
  while (::nanosleep(&left, &left) < 0 && errno == EINTR) {
  }
  return seconds;
}

std::string library_path() {
  Dl_info info{};
  if (!::dladdr(reinterpret_cast<const void*>(&library_path), &info) || !info.dli_fname)
    throw std::runtime_error("library_path: dladdr found no library");
  return info.dli_fname;
}

int limit_of(int pid, bool set) {
  rlimit now{};
  if (::prlimit(pid, RLIMIT_CORE, nullptr, &now) != 0) fail("prlimit " + std::to_string(pid));
  if (set && ::prlimit(pid, RLIMIT_CORE, &now, nullptr) != 0) fail("prlimit " + std::to_string(pid) + " (set)");
  return 0;
}

int renice_process(int pid) {
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(pid));
  if (errno != 0) return errno;
  return ::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), nice) == 0 ? 0 : errno;
}

int clone_with_flags(int flags) {
  const long child = ::syscall(SYS_clone, static_cast<unsigned long>(static_cast<unsigned>(flags)) | SIGCHLD,
                               nullptr, nullptr, nullptr, nullptr);
  if (child < 0) return errno;
  if (child == 0) ::_exit(0);
  wait_for_child(static_cast<pid_t>(child));
  return 0;
}

int clone3_child() {
  struct {
    std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
  } args{};
  args.exit_signal = SIGCHLD;
  const long child = ::syscall(435 /* clone3 */, &args, sizeof args);
  if (child < 0) return errno;
  if (child == 0) ::_exit(0);
  wait_for_child(static_cast<pid_t>(child));
  return 0;
}

int unix_socket(bool high_bits) {
  // The kernel reads the family as an int: high bits must not slip past a filter.
  const unsigned long family = AF_UNIX | (high_bits ? 1UL << 32 : 0UL);
  const int fd = static_cast<int>(::syscall(SYS_socket, family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int socket_of_family(long long family, int type, int protocol) {
  // Any family, as the kernel reads it (an int: high bits too), with any protocol.
  const int fd = static_cast<int>(::syscall(SYS_socket, static_cast<unsigned long>(family), type | SOCK_CLOEXEC, protocol));
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int socket_pair_of_family(long long family, int type) {
  int fds[2];
  if (::syscall(SYS_socketpair, static_cast<unsigned long>(family), type | SOCK_CLOEXEC, 0, fds) != 0) return errno;
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}

int unix_socket_pair(int type) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) return errno;
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}

int change_metadata(std::string path, int how, int mode) {
  long rc = -1;
  switch (how) {
    case 0: rc = ::chmod(path.c_str(), static_cast<mode_t>(mode)); break;
    case 1: {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("open " + path);
      rc = ::fchmod(fd, static_cast<mode_t>(mode));
      const int e = errno;
      ::close(fd);
      errno = e;
      break;
    }
    case 2: rc = ::syscall(452 /* fchmodat2 */, AT_FDCWD, path.c_str(), mode, 0); break;
    case 3: rc = ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0); break;
    case 4: rc = ::setxattr(path.c_str(), "user.ferry", "x", 1, 0); break;
    case 5: {
      struct {
        std::uint64_t value;
        std::uint32_t size, flags;
      } args{reinterpret_cast<std::uint64_t>("x"), 1, 0};
      rc = ::syscall(463 /* setxattrat */, AT_FDCWD, path.c_str(), 0, "user.ferry", &args, sizeof args);
      break;
    }
    case 6: rc = ::chown(path.c_str(), ::getuid(), ::getgid()); break;
    default: throw std::invalid_argument("change_metadata: no call " + std::to_string(how));
  }
  return rc == 0 ? 0 : errno;
}

int raise_pids_max_and_fork(int n) {
  // A descriptor of the worker's is a pids cgroup's pids.max: write "max" through it.
  bool raised = false;
  for (int fd = 0; fd < 1024 && !raised; ++fd) {
    char link[256];
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t len = ::readlink(self.c_str(), link, sizeof link - 1);
    if (len <= 0) continue;
    const std::string target(link, static_cast<std::size_t>(len));
    if (target.size() >= 9 && target.compare(target.size() - 9, 9, "/pids.max") == 0)
      raised = ::pwrite(fd, "max", 3, 0) == 3;
  }
  if (!raised) throw std::runtime_error("raise_pids_max_and_fork: no writable pids.max among the descriptors");
  return fork_until_refused(n);
}

int loosen_pids_max_and_fork(int n) {
  auto write_max = [](const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)!::pwrite(fd, "max", 3, 0);
    ::close(fd);
  };
  auto ends_with = [](const std::string& text, const std::string& tail) {
    return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (int fd = 0; fd < 1024; ++fd) {
    char link[512];
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t len = ::readlink(self.c_str(), link, sizeof link - 1);
    if (len <= 0) continue;
    const std::string target(link, static_cast<std::size_t>(len));
    if (ends_with(target, "/pids.max")) {
      (void)!::pwrite(fd, "max", 3, 0);
      write_max(self);
    } else if (ends_with(target, "/pids.events")) {
      write_max(target.substr(0, target.size() - 6) + "max");  // ".../pids." + "max"
    }
  }
  // Its cgroup by path: "N:pids:/path" on v1, "0::/path" on v2.
  std::ifstream cgroups("/proc/self/cgroup");
  for (std::string line; std::getline(cgroups, line);) {
    const auto colon = line.find(':'), second = line.find(':', colon + 1);
    if (colon == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(colon + 1, second - colon - 1);
    const std::string path = line.substr(second + 1);
    const std::string dir = controllers == "pids" ? "/sys/fs/cgroup/pids" + path
                            : controllers.empty()  ? "/sys/fs/cgroup" + path
                                                   : "";
    if (dir.empty()) continue;
    write_max(dir + "/pids.max");
    // Or out of it: into the cgroup above, and the root one.
    for (const std::string& above : {dir.substr(0, dir.rfind('/')), std::string("/sys/fs/cgroup/pids")}) {
      const int fd = ::open((above + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) continue;
      const std::string pid = std::to_string(::getpid());
      (void)!::write(fd, pid.data(), pid.size());
      ::close(fd);
    }
  }
  rlimit nproc{};
  if (::getrlimit(RLIMIT_NPROC, &nproc) == 0) {
    nproc.rlim_cur = nproc.rlim_max;
    ::setrlimit(RLIMIT_NPROC, &nproc);
  }
  return fork_until_refused(n);
}

std::uint64_t raise_memory_limit_and_allocate(std::uint64_t bytes) {
  rlimit data{};
  if (::getrlimit(RLIMIT_DATA, &data) == 0) {
    data.rlim_cur = data.rlim_max;
    ::setrlimit(RLIMIT_DATA, &data);
  }
  return allocate(bytes, true);
}

int create_with_mode(std::string path, int mode, int how) {
  long rc = -1;
  switch (how) {
    case 0: rc = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, static_cast<mode_t>(mode)); break;
    case 1: rc = ::mknod(path.c_str(), S_IFREG | static_cast<mode_t>(mode), 0); break;
    case 2: {
      struct {
        std::uint64_t flags, mode, resolve;
      } how2{static_cast<std::uint64_t>(O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC), static_cast<std::uint64_t>(mode), 0};
      rc = ::syscall(437 /* openat2 */, AT_FDCWD, path.c_str(), &how2, sizeof how2);
      break;
    }
    default: throw std::invalid_argument("create_with_mode: no call " + std::to_string(how));
  }
  if (rc < 0) return errno;
  if (how != 1) ::close(static_cast<int>(rc));
  return 0;
}

int set_file_flags(std::string path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path);
  long flags = 0;
  const int rc = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 ? ::ioctl(fd, FS_IOC_SETFLAGS, &flags) : -1;
  const int e = errno;
  ::close(fd);
  return rc == 0 ? 0 : e;
}

int set_terminal_modes(int fd) {
  termios modes{};
  if (::tcgetattr(fd, &modes) != 0) return errno;
  if (::tcsetattr(fd, TCSANOW, &modes) != 0) return errno;
  winsize size{};
  if (::ioctl(fd, TIOCGWINSZ, &size) != 0) return errno;
  return ::ioctl(fd, TIOCSWINSZ, &size) == 0 ? 0 : errno;
}

int spawn_and_system() {
  pid_t child = -1;
  char name[] = "true";
  char* argv[] = {name, nullptr};
  if (int e = ::posix_spawn(&child, "/bin/true", nullptr, nullptr, argv, environ); e != 0)
    throw std::system_error(e, std::generic_category(), "posix_spawn /bin/true");
  const int spawned = wait_for_child(child);
  const int shell = std::system("exit 3");
  if (!WIFEXITED(spawned) || !WIFEXITED(shell))
    throw std::runtime_error("spawn_and_system: a child did not exit (" + std::to_string(spawned) + ", " +
                             std::to_string(shell) + ")");
  return WEXITSTATUS(spawned) * 100 + WEXITSTATUS(shell) * 10;
}

int find_shared_segment(int key) {
  return ::shmget(static_cast<key_t>(key), 0, 0) >= 0 ? 0 : errno;
}

int null_device_ioctl(int command) {
  const int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) fail("open /dev/null");
  int value = 0;
  const long rc = ::syscall(SYS_ioctl, fd, static_cast<unsigned long>(static_cast<unsigned>(command)), &value);
  const int e = errno;
  ::close(fd);
  return rc == 0 ? 0 : e;
}

FERRY_TASK(limit_of);
FERRY_TASK(set_file_flags);
FERRY_TASK(set_terminal_modes);
FERRY_TASK(spawn_and_system);
FERRY_TASK(renice_process);
FERRY_TASK(clone_with_flags);
FERRY_TASK(clone3_child);
FERRY_TASK(unix_socket);
FERRY_TASK(unix_socket_pair);
FERRY_TASK(socket_of_family);
FERRY_TASK(socket_pair_of_family);
FERRY_TASK(change_metadata);
FERRY_TASK(find_shared_segment);
FERRY_TASK(create_with_mode);
FERRY_TASK(raise_pids_max_and_fork);
FERRY_TASK(loosen_pids_max_and_fork);
FERRY_TASK(raise_memory_limit_and_allocate);
FERRY_TASK(null_device_ioctl);
FERRY_TASK(connect_loopback);
FERRY_TASK(write_file);
FERRY_TASK(read_file);
FERRY_TASK(watch_directory);
FERRY_TASK(exec_shell);
FERRY_TASK(fork_bomb);
FERRY_TASK(fork_until_refused);
FERRY_TASK(fork_runners);
FERRY_TASK(allocate);
FERRY_TASK(share_memory);
FERRY_TASK(write_shared);
FERRY_TASK(bytes_result);
FERRY_TASK(unfiltered_threads);
FERRY_TASK(leak_files);
FERRY_TASK(setsid_grandchild);
FERRY_TASK(hidden_grandchild);
FERRY_TASK(ptrace_pid);
FERRY_TASK(type_into_terminal);
FERRY_TASK(read_descriptor);
FERRY_TASK(spin_cpu);
FERRY_TASK(leave_spinning_thread);
FERRY_TASK(write_bytes);
FERRY_TASK(hostile_pid);
FERRY_TASK(temp_dir);
FERRY_TASK(make_directory);
FERRY_TASK(remove_directory);
FERRY_TASK(make_symlink);
FERRY_TASK(make_node);
FERRY_TASK(rename_whiteout);
FERRY_TASK(tmpfile_round_trip);
FERRY_TASK(posix_shm_round_trip);
FERRY_TASK(sum_bytes);
FERRY_TASK(channel_interface_count);
FERRY_TASK(lock_file);
FERRY_TASK(lease_file);
FERRY_TASK(environment_variable);
FERRY_TASK(attack_output);
FERRY_TASK(descriptor_target);
FERRY_TASK(flood_output);
FERRY_TASK(write_text);
FERRY_TASK(foreign_bytes_in_argument_block);
FERRY_TASK(keep_argument_block);
FERRY_TASK(kept_block_foreign_bytes);
FERRY_TASK(close_channel_and_wait);
FERRY_TASK(library_path);
