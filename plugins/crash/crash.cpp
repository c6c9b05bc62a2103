// SPDX-License-Identifier: BSD-3-Clause
// The crash plugin: every way a task can fail.
#include "crash.hpp"

#include <signal.h>
#include <sys/types.h>

#include <atomic>
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
int abort_task(int) { std::abort(); }
int exit_with(int code) { std::exit(code); }
int underscore_exit_zero(int) { ::_exit(0); }

namespace {
// Each frame keeps a buffer alive so the recursion cannot be turned into a loop.
__attribute__((noinline)) int recurse(int depth) {
  volatile char pad[1024];
  std::memset(const_cast<char*>(pad), depth & 0xff, sizeof pad);
  if (depth == 0) return pad[0];
  return recurse(depth - 1) + pad[depth % sizeof pad];
}
}  // namespace
int stack_overflow(int depth) { return recurse(depth); }

int leak(int megabytes) {
  std::size_t n = static_cast<std::size_t>(megabytes) << 20;
  char* p = static_cast<char*>(std::malloc(n));
  if (!p) return 0;
  std::memset(p, 1, n);  // touch every page: resident, not just reserved
  return megabytes;
}

int spin_forever(int x) {
  volatile int v = x;
  for (;;) v = v + 1;
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

namespace {
std::atomic<int> flag{0};
}
void init_flag() { flag = 1; }
int initialized() { return flag.load(); }
void init_throws() { throw std::logic_error("initializer refuses to run"); }

FERRY_TASK(take_faulty);
FERRY_TASK(make_faulty);
FERRY_TASK(throw_runtime_error);
FERRY_TASK(throw_int);
FERRY_TASK(segfault);
FERRY_TASK(abort_task);
FERRY_TASK(exit_with);
FERRY_TASK(underscore_exit_zero);
FERRY_TASK(stack_overflow);
FERRY_TASK(leak);
FERRY_TASK(spin_forever);
FERRY_TASK(kill_pid);
FERRY_TASK(kill_pids);
FERRY_TASK(getenv_task);
FERRY_TASK(init_flag);
FERRY_TASK(initialized);
FERRY_TASK(init_throws);
