// SPDX-License-Identifier: BSD-3-Clause
// The crash plugin: every way a task can fail.
#include "crash.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <cstdlib>
#include <cstring>

int take_faulty(crash::Faulty f) { return f.value; }
crash::Faulty make_faulty(int stage, int action) {
  return {static_cast<crash::Stage>(stage), static_cast<crash::Action>(action), 7};
}
int throw_runtime_error(int x) { throw std::runtime_error("runtime error " + std::to_string(x)); }
int throw_int(int) { throw 42; }
int segfault(int) {
  std::raise(SIGSEGV);
  return 0;
}
int segfault_if(int x, int bad) {
  if (x == bad) std::raise(SIGSEGV);
  return x;
}
int abort_task(int) { std::abort(); }
int exit_with(int code) { std::exit(code); }
int underscore_exit_zero(int) { ::_exit(0); }

namespace {
// Each frame keeps a buffer alive so the recursion cannot be turned into a loop.
__attribute__((noinline)) int recurse(int depth) {
  volatile char pad[1024];
  // A plain loop, not memset: under ASan memset is an interceptor, which would be the frame that
  // overflows instead of recurse().
  for (auto& c : pad) c = static_cast<char>(depth & 0xff);
  if (depth == 0) return pad[0];
  return recurse(depth - 1) + pad[depth % sizeof pad];
}
}  // namespace
int stack_overflow(int depth) { return recurse(depth); }

namespace {
// Kept reachable, so the compiler cannot drop the allocation nor the writes.
std::vector<char*> leaked;
}  // namespace
int leak(int megabytes) {
  std::size_t n = static_cast<std::size_t>(megabytes) << 20;
  auto* p = static_cast<char*>(std::malloc(n));
  if (!p) return 0;
  std::memset(p, 1, n);  // touch every page: resident, not just reserved
  leaked.push_back(p);
  return megabytes;
}

int spin_forever(int x) {
  volatile int v = x;
  for (;;) v = v + 1;
}

int busy_for(int ms) {
  auto cpu_now = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
  };
  const long long until = cpu_now() + static_cast<long long>(ms) * 1000000LL;
  volatile unsigned v = 0;
  while (cpu_now() < until)
    for (int i = 0; i < 10000; ++i) v = v + 1;
  return ms;
}

int fail_or_busy(int ms) {
  if (ms < 0) throw std::runtime_error("fail_or_busy: failing at once");
  return busy_for(ms);
}

int value_after_hold(int x, const std::string& path) {
  if (x < 0) throw std::runtime_error("value_after_hold: failing at once");
  wait_while_exists(path);
  return x;
}

int kill_pid(int pid, int sig) { return ::kill(pid, sig); }
int kill_pids(const std::vector<int>& pids, int sig) {
  int n = 0;
  for (int pid : pids)
    if (pid != ::getpid() && ::kill(pid, sig) == 0) ++n;
  // Kill ourselves last, if we are in the list: siblings first, then this worker.
  for (int pid : pids)
    if (pid == ::getpid()) ::kill(pid, sig);
  return n;
}

std::string getenv_task(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? v : "";
}

int corrupt_channel(int kind) {
  unsigned char junk[64];
  for (unsigned i = 0; i < sizeof junk; ++i) junk[i] = static_cast<unsigned char>(i * 37 + 11);
  if (kind == 1 || kind == 2 || kind == 3) {
    // A well-formed header (magic 0xFE77, little endian) with a bad type or a huge size (3: 256 MiB,
    // under FERRY_MAX_FRAME_BYTES, past twice a 64 MiB memory limit).
    std::memset(junk, 0, 16);
    junk[0] = 0x77;
    junk[1] = 0xFE;
    junk[2] = kind == 2 ? 200 : 4;  // result frame, or no such type
    unsigned long long size = kind == 1 ? (1ull << 40) : kind == 3 ? (256ull << 20) : 8;
    std::memcpy(junk + 8, &size, 8);
  }
  ssize_t n = ::write(3, junk, sizeof junk);
  return static_cast<int>(n);
}

int record_run(const std::string& path, int id) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("record_run: cannot open " + path);
  std::string line = std::to_string(id) + "\n";
  ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size())) throw std::runtime_error("record_run: short write");
  return id;
}

int gated_throw(int id, const std::string& dir) {
  if (id < 0) return -id;
  // Waits (60 s at most) until the test opens the gate: DIR/go exists; then throws.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  const std::string go = dir + "/go";
  while (::access(go.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
    timespec tick{0, 1'000'000};
    ::nanosleep(&tick, nullptr);
  }
  record_run(dir + "/ran", id);
  throw std::runtime_error("gated " + std::to_string(id));
}

int record_then_segfault(const std::string& path, int id) {
  record_run(path, id);
  std::raise(SIGSEGV);
  return id;
}

int leak_descriptors(int count) {
  int n = 0;
  while (count < 0 || n < count) {
    int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC, and never closed
    if (fd < 0) break;
    ++n;
  }
  return n;
}

int open_one_descriptor(int x) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open /dev/null");
  ::close(fd);
  return x;
}

namespace {
std::atomic<int> flag{0};
}
void init_flag() { flag = 1; }
int initialized() { return flag.load(); }
void init_throws() { throw std::logic_error("initializer refuses to run"); }
void wait_while_exists(const std::string& path) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (::access(path.c_str(), F_OK) == 0 && std::chrono::steady_clock::now() < deadline) {
    timespec tick{0, 1'000'000};
    ::nanosleep(&tick, nullptr);
  }
}

// Outside any namespace and never inlined: remote stacks name them (tests/test_remote_stack.cpp).
__attribute__((noinline)) int ferry_test_named_thrower(int x) {
  if (x >= 0) throw std::invalid_argument("thrown by ferry_test_named_thrower(" + std::to_string(x) + ")");
  return x;
}
// Not instrumented by UBSan (the asan preset): the store must fault, not be reported as UB.
__attribute__((noinline, no_sanitize("undefined"))) int ferry_test_named_segfault(volatile int* p) {
  *p = 1;  // faults for the addresses the tests pass (0)
  return *p;
}
int throw_in_named_function(int x) { return ferry_test_named_thrower(x) + 1; }
// Always inlined, at every optimisation level: a remote stack shows it as a frame of its own.
__attribute__((always_inline)) inline int ferry_test_inlined_thrower(int x) {
  if (x >= 0) throw std::invalid_argument("thrown by ferry_test_inlined_thrower(" + std::to_string(x) + ")");
  return x;
}
int throw_in_inlined_function(int x) { return ferry_test_inlined_thrower(x) * 2; }
int segfault_in_named_function(long long address) {
  return ferry_test_named_segfault(reinterpret_cast<volatile int*>(static_cast<std::intptr_t>(address))) + 1;
}
long long throw_and_catch(int n) {
  auto t0 = std::chrono::steady_clock::now();
  int caught = 0;
  for (int i = 0; i < n; ++i) {
    try {
      throw std::runtime_error("caught");
    } catch (const std::runtime_error&) {
      ++caught;
    }
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  return caught > 0 ? ns / caught : 0;
}
int throw_after_caught(int x) {
  try {
    throw std::runtime_error("caught inside");
  } catch (const std::runtime_error&) {
  }
  std::vector<int> v(1);
  return v.at(static_cast<std::size_t>(x) + 5);
}

int crash_in_child(int x) {
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    volatile int* p = nullptr;
    *p = x;
    ::_exit(1);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  // Time for whatever the child's crash handler wrote to be read on the other side before this
  // result follows it (an MPI agent reading its ring), so that a stray write shows.
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while (std::chrono::steady_clock::now() < until) ::sched_yield();
  return x;
}

std::vector<int> spin_in_children(int n, int seconds, bool wait) {
  std::vector<int> children;
  for (int i = 0; i < n; ++i) {
    pid_t child = ::fork();
    if (child < 0) throw std::runtime_error("fork failed");
    if (child == 0) {
      ::setsid();
      ::alarm(static_cast<unsigned>(seconds));
      volatile unsigned v = 0;
      for (;;) v = v + 1;
    }
    children.push_back(child);
  }
  if (wait)
    for (int child : children)
      while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
      }
  return children;
}

int raise_own_priority(int how) {
  if (how == 0) {
    sched_param fifo{};
    fifo.sched_priority = 1;
    if (::sched_setscheduler(0, SCHED_FIFO, &fifo) != 0) return errno;
    sched_param other{};
    ::sched_setscheduler(0, SCHED_OTHER, &other);
    return 0;
  }
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, 0);
  if (::setpriority(PRIO_PROCESS, 0, nice - 1) != 0) return errno;
  ::setpriority(PRIO_PROCESS, 0, nice);
  return 0;
}

int hold_inotify_instances(int n) {
  int opened = 0;
  while (opened < n && ::inotify_init1(IN_CLOEXEC) >= 0) ++opened;
  return opened;
}

int hold_aio_events(long events) {
  unsigned long context = 0;
  return ::syscall(SYS_io_setup, events, &context) == 0 ? 0 : errno;
}

int hold_timers(int n) {
  int made = 0;
  sigevent event{};
  event.sigev_notify = SIGEV_SIGNAL;
  event.sigev_signo = SIGRTMIN;
  for (timer_t timer{}; made < n && ::timer_create(CLOCK_MONOTONIC, &event, &timer) == 0;) ++made;
  return made;
}

int interrupt_in_child() {
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    ::execl("/bin/sh", "sh", "-c", "kill -INT $$; exit 7", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFSIGNALED(status) ? WTERMSIG(status) : 100 + WEXITSTATUS(status);
}

FERRY_TASK(take_faulty);
FERRY_TASK(make_faulty);
FERRY_TASK(throw_runtime_error);
FERRY_TASK(throw_int);
FERRY_TASK(segfault);
FERRY_TASK(segfault_if);
FERRY_TASK(abort_task);
FERRY_TASK(exit_with);
FERRY_TASK(underscore_exit_zero);
FERRY_TASK(stack_overflow);
FERRY_TASK(leak);
FERRY_TASK(spin_forever);
FERRY_TASK(busy_for);
FERRY_TASK(fail_or_busy);
FERRY_TASK(value_after_hold);
FERRY_TASK(kill_pid);
FERRY_TASK(kill_pids);
FERRY_TASK(getenv_task);
FERRY_TASK(corrupt_channel);
FERRY_TASK(record_run);
FERRY_TASK(record_then_segfault);
FERRY_TASK(gated_throw);
FERRY_TASK(leak_descriptors);
FERRY_TASK(open_one_descriptor);
FERRY_TASK(init_flag);
FERRY_TASK(initialized);
FERRY_TASK(init_throws);
FERRY_TASK(wait_while_exists);
FERRY_TASK(throw_in_named_function);
FERRY_TASK(throw_in_inlined_function);
FERRY_TASK(segfault_in_named_function);
FERRY_TASK(throw_and_catch);
FERRY_TASK(throw_after_caught);
FERRY_TASK(crash_in_child);
FERRY_TASK(interrupt_in_child);
FERRY_TASK(spin_in_children);
FERRY_TASK(raise_own_priority);
FERRY_TASK(hold_inotify_instances);
FERRY_TASK(hold_aio_events);
FERRY_TASK(hold_timers);
