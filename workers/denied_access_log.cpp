// SPDX-License-Identifier: BSD-3-Clause
// FERRY_DEBUG's record of what a sandbox refused. Landlock makes a file outside the allowed
// paths fail inside the task with EACCES, as ordinary code expects, and the kernel tells no one
// else. With FERRY_DEBUG set, a sandboxed worker says which path it was: this executable defines
// the libc calls that open files (exported, so that they come before libc's for every plugin),
// calls libc's own, and logs an EACCES. Calls libc makes internally, and raw system calls, are
// not seen: a convenience for finding a missing Sandbox::read entry, not an audit log.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "platform/config.hpp"
#include "platform/debug.hpp"

namespace {

/// FERRY_DEBUG is set and this process runs under no_new_privs (set by the sandbox, which a
/// worker without one never sets): decided at the first failed call, then cached. Reading the
/// configuration may open files itself: those calls do not decide (nor recurse).
bool logging() {
  static std::atomic<int> state{-1};
  int s = state.load(std::memory_order_relaxed);
  if (s >= 0) return s == 1;
  static thread_local bool deciding = false;
  if (deciding) return false;
  deciding = true;
  bool on = ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 && ferry::detail::Config::read().debug;
  deciding = false;
  state.store(on ? 1 : 0, std::memory_order_relaxed);
  return on;
}

void note(const char* call, const char* path, int error) {
  if (error != EACCES || !logging()) return;
  // No allocation here: a task may call open() from a signal handler (it is async-signal-safe)
  // while the heap's lock is held; and little stack (a signal handler's may be small).
  char message[512];
  int n = std::snprintf(message, sizeof message,
                        "sandbox: %s(\"%s\") denied (EACCES): not among the paths the sandbox lets this "
                        "worker %s (Sandbox::read / Sandbox::write)",
                        call, path ? path : "",
                        std::strchr(call, 'w') || std::strcmp(call, "mkdir") == 0 ? "write" : "use");
  if (n > 0) {
    // The path is the task's: shown as every debug line is (control characters escaped).
    char line[4 * sizeof message + 64];
    std::size_t size = ferry::detail::debug_line_into(line, sizeof line, static_cast<int>(::getpid()),
                                                      ferry::detail::formatted_text(message, sizeof message, n));
    (void)!::write(STDERR_FILENO, line, size);
  }
  errno = error;
}

template <class F>
F next(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? static_cast<mode_t>(va_arg(ap, unsigned)) : 0;
}

/// fopen's mode says whether it writes.
const char* fopen_call(const char* mode) { return mode && std::strpbrk(mode, "wa+") ? "fopen(write)" : "fopen"; }

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static auto real = next<int (*)(const char*, int, ...)>("open");
  int fd = real(path, flags, mode);
  if (fd < 0) note((flags & O_ACCMODE) != O_RDONLY ? "open(write)" : "open", path, errno);
  return fd;
}

int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static auto real = next<int (*)(const char*, int, ...)>("open64");
  int fd = real(path, flags, mode);
  if (fd < 0) note((flags & O_ACCMODE) != O_RDONLY ? "open(write)" : "open", path, errno);
  return fd;
}

int openat(int dir, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static auto real = next<int (*)(int, const char*, int, ...)>("openat");
  int fd = real(dir, path, flags, mode);
  if (fd < 0) note((flags & O_ACCMODE) != O_RDONLY ? "openat(write)" : "openat", path, errno);
  return fd;
}

int openat64(int dir, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static auto real = next<int (*)(int, const char*, int, ...)>("openat64");
  int fd = real(dir, path, flags, mode);
  if (fd < 0) note((flags & O_ACCMODE) != O_RDONLY ? "openat(write)" : "openat", path, errno);
  return fd;
}

FILE* fopen(const char* path, const char* mode) {
  static auto real = next<FILE* (*)(const char*, const char*)>("fopen");
  FILE* f = real(path, mode);
  if (!f) note(fopen_call(mode), path, errno);
  return f;
}

FILE* fopen64(const char* path, const char* mode) {
  static auto real = next<FILE* (*)(const char*, const char*)>("fopen64");
  FILE* f = real(path, mode);
  if (!f) note(fopen_call(mode), path, errno);
  return f;
}

DIR* opendir(const char* path) {
  static auto real = next<DIR* (*)(const char*)>("opendir");
  DIR* d = real(path);
  if (!d) note("opendir", path, errno);
  return d;
}

int mkdir(const char* path, mode_t mode) {
  static auto real = next<int (*)(const char*, mode_t)>("mkdir");
  int r = real(path, mode);
  if (r < 0) note("mkdir", path, errno);
  return r;
}

}  // extern "C"
