// SPDX-License-Identifier: BSD-3-Clause
// Capturing the worker's stacks: at each throw (for TaskError::remote_stack) and in the fatal
// signal handler (for TerminatedWorkerError::remote_stack). Boost.Stacktrace's safe_dump_to
// collects the return addresses (_Unwind_Backtrace; with glibc 2.35+ and GCC 12 it finds unwind
// tables through _dl_find_object, which takes no lock: fit for a signal handler).
#include "worker/stack_capture.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include <unwind.h>

#include <boost/stacktrace/safe_dump_to.hpp>

#include <ferry/detail/invoke.hpp>

#include "wire/ring.hpp"
#include "wire/stack.hpp"

namespace ferry::detail {

namespace {

using NativeFrame = const void*;  // what safe_dump_to writes: return addresses

/// Frames collected above the ones kept: the capture's own (hook, note_throw, handler, trampoline).
constexpr std::size_t spare_frames = 16;

/// From `frames` (count `n`), the addresses from the first equal to `from` on (all of them when
/// none is), at most max_stack_frames, into `out`. Returns how many.
std::size_t keep_from(const NativeFrame* frames, std::size_t n, const void* from, std::uint64_t* out) noexcept {
  std::size_t first = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (frames[i] == from) {
      first = i;
      break;
    }
  std::size_t count = 0;
  for (std::size_t i = first; i < n && count < max_stack_frames; ++i)
    out[count++] = reinterpret_cast<std::uintptr_t>(frames[i]);
  return count;
}

// ---- throws ------------------------------------------------------------------------------------

struct ThrowRecord {
  const std::type_info* type = nullptr;
  std::size_t count = 0;
  std::uint64_t pcs[max_stack_frames];
};
thread_local ThrowRecord t_last_throw;

/// /proc/self/maps, whole.
std::string read_maps() {
  std::string text;
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// ---- crashes -----------------------------------------------------------------------------------
// Everything the handler touches is static: it must not allocate. The big buffers are in .bss:
// no memory is used until a crash writes them.

/// The crash handler's walk of the stack: its first frames, and a ring of its last ones, so that
/// a stack deeper than max_stack_frames (a stack overflow) still shows where it began.
constexpr std::size_t outer_frames = 14;
struct Walk {
  NativeFrame* first;
  std::size_t first_cap;
  std::size_t total = 0;  // frames seen
  NativeFrame last[outer_frames];
};

_Unwind_Reason_Code walk_step(_Unwind_Context* context, void* arg) {
  auto* w = static_cast<Walk*>(arg);
  const auto ip = reinterpret_cast<NativeFrame>(_Unwind_GetIP(context));
  if (!ip) return _URC_END_OF_STACK;
  if (w->total < w->first_cap) w->first[w->total] = ip;
  w->last[w->total % outer_frames] = ip;
  ++w->total;
  // Bounded: a corrupt stack could chain without end (an 8 MiB stack of 32-byte frames is 262,144).
  return w->total < (1u << 22) ? _URC_NO_REASON : _URC_END_OF_STACK;
}

int g_channel = -1;
Ring* g_ring = nullptr;  // the frame goes there when set (the channel then carries the doorbell)
pid_t g_ring_owner = 0;  // the worker: a process its task forked must not write into its ring
std::atomic<long> g_crashing{0};  // the thread reporting a crash (0: none)
alignas(16) char g_alt_stack[64 * 1024];
NativeFrame g_frames[max_stack_frames + spare_frames + 1];
std::uint64_t g_pcs[max_stack_frames];
char g_maps[256 * 1024];  // /proc/self/maps; a longer one is cut, its last modules unnamed
char g_selected[max_stack_maps];
char g_frame[protocol::header_size + 24 + 8 * max_stack_frames + 4 + max_stack_maps];

constexpr int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP};

const void* interrupted_pc(void* context) noexcept {
  auto* uc = static_cast<ucontext_t*>(context);
  if (!uc) return nullptr;
#if defined(__x86_64__)
  return reinterpret_cast<const void*>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return reinterpret_cast<const void*>(uc->uc_mcontext.pc);
#else
  return nullptr;
#endif
}

void write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

std::size_t read_into(const char* path, char* buf, std::size_t cap) noexcept {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t total = 0;
  while (total < cap) {
    ssize_t n = ::read(fd, buf + total, cap - total);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return total;
}

void on_crash(int sig, siginfo_t* info, void* context) {
  // One report per process: a second thread that crashes meanwhile waits for the first to end it.
  // The reporting thread itself crashing in here (a corrupt stack, say) dies of that signal.
  const long self = ::syscall(SYS_gettid);
  long expected = 0;
  if (!g_crashing.compare_exchange_strong(expected, self)) {
    if (expected == self) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(sig, &dfl, nullptr);
      ::raise(sig);
      return;
    }
    for (;;) ::pause();
  }
  const int saved_errno = errno;
  // _Unwind_Backtrace, as safe_dump_to, but seeing the whole stack: its last frames are kept too.
  static Walk walk;
  walk = Walk{g_frames, sizeof g_frames / sizeof g_frames[0], 0, {}};
  _Unwind_Backtrace(&walk_step, &walk);
  const std::size_t n = walk.total < walk.first_cap ? walk.total : walk.first_cap;
  const void* pc = interrupted_pc(context);
  // The stack starts at the interrupted instruction: the handler's frames and the kernel's
  // trampoline are dropped. If unwinding did not cross the signal frame, that address alone.
  std::size_t count = 0;
  std::size_t at = n;
  for (std::size_t i = 0; i < n && at == n; ++i)
    if (g_frames[i] == pc) at = i;
  if (at < n && walk.total - at > max_stack_frames) {
    // Deeper than a stack travels: its innermost frames, the gap (stack_gap and the number of
    // frames left out), then its outermost, where the task called what overflowed.
    const std::size_t inner = max_stack_frames - 2 - outer_frames;
    count = keep_from(g_frames, at + inner < n ? at + inner : n, pc, g_pcs);
    const std::size_t left_out = walk.total - at - count - outer_frames;
    g_pcs[count++] = stack_gap;
    g_pcs[count++] = left_out;
    for (std::size_t k = walk.total - outer_frames; k < walk.total; ++k)
      g_pcs[count++] = reinterpret_cast<std::uintptr_t>(walk.last[k % outer_frames]);
  } else if (at < n) {
    count = keep_from(g_frames, n, pc, g_pcs);
  } else if (pc) {
    g_pcs[count++] = reinterpret_cast<std::uintptr_t>(pc);
  }
  std::size_t maps = read_into("/proc/self/maps", g_maps, sizeof g_maps);
  std::size_t selected = select_modules(g_maps, maps, g_pcs, count, g_selected, sizeof g_selected);
  const bool faulted = sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL;
  std::uint64_t fault = faulted && info ? reinterpret_cast<std::uintptr_t>(info->si_addr) : 0;
  std::size_t size = encode_crashed_into(g_frame, sizeof g_frame, static_cast<std::uint32_t>(::getpid()),
                                         static_cast<std::uint32_t>(sig), fault, g_pcs, count,
                                         g_selected, selected);
  if (g_ring && ::getpid() != g_ring_owner) {
    // A child the task forked shares the mapping but not the worker's index: its write would
    // land in the middle of the worker's frames. The host ignores such a crash anyway.
  } else if (size > 0 && g_ring) {
    // Lock-free: memcpy and atomics. Room is made by the agent, which reads while its worker
    // works; waited for a bounded time (yielding: the agent may share this vCPU).
    std::size_t sent = 0;
    for (int tries = 0; sent < size && tries < 100000; ++tries) {
      long wrote = g_ring->write(g_frame + sent, size - sent);
      if (wrote < 0) break;
      sent += static_cast<std::size_t>(wrote);
      if (wrote == 0) ::sched_yield();
    }
    if (g_ring->consumer_waits() && g_channel >= 0) {
      char bell = 0;
      (void)::send(g_channel, &bell, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  } else if (size > 0 && g_channel >= 0) {
    write_all(g_channel, g_frame, size);
  }
  // SA_RESETHAND put the default action back: raised again, the signal is pending until this
  // handler returns, and then ends the process as it would have (core dump, exit status).
  ::raise(sig);
  errno = saved_errno;
}

}  // namespace

void note_throw(const std::type_info* type, const void* thrower) noexcept {
  NativeFrame frames[max_stack_frames + spare_frames + 1];
  std::size_t n = boost::stacktrace::safe_dump_to(0, frames, sizeof frames);
  if (n > 0) --n;
  ThrowRecord& r = t_last_throw;
  r.type = type;
  r.count = keep_from(frames, n, thrower, r.pcs);
}

void forget_throws() noexcept { t_last_throw.count = 0; }

RawStack last_throw_stack(std::string_view type) {
  RawStack s;
  const ThrowRecord& r = t_last_throw;
  if (r.count == 0 || !r.type || demangle(r.type->name()) != type) return s;
  s.pcs.assign(r.pcs, r.pcs + r.count);
  std::string maps = read_maps();
  s.maps.resize(max_stack_maps);
  s.maps.resize(select_modules(maps.data(), maps.size(), s.pcs.data(), s.pcs.size(), s.maps.data(),
                               s.maps.size()));
  return s;
}

void install_crash_reporter(int channel_fd, Ring* ring) noexcept {
  g_channel = channel_fd;
  g_ring = ring;
  g_ring_owner = ::getpid();
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_crash;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : crash_signals) ::sigaction(sig, &sa, nullptr);
}

}  // namespace ferry::detail
