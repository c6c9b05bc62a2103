// SPDX-License-Identifier: BSD-3-Clause
// Containment (issue 12), tried by the hostile plugin: with ferry::Sandbox the network, exec,
// ptrace and files outside the allowed paths are out of a task's reach; with ferry::Limits memory,
// CPU time, processes, descriptors and file sizes are bounded; without them, the documented
// defaults hold (everything works, as for any process). Every worker's descendants end with it,
// whatever the options. And whatever a task does, the host and the other tasks are never
// affected: after each hostile task a normal task still returns its value and max_workers workers
// are still usable.
//
// Every wait has a deadline and every hostile task a SubmitOptions::deadline, so that a missing
// containment fails a case instead of hanging it; and no case allocates and touches more than
// 2 GB or forks more than 12,000 processes even when the limit it tests is missing.
#include <arpa/inet.h>
#include <cxxabi.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

// Only the hostile plugin is linked; math and crash tasks are submitted by name or TaskRef.
#include "hostile.hpp"
#include "platform/containment.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "support/sanitizer.hpp"
#include "wrap/wrap_compiler.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

static_assert(std::is_base_of_v<ferry::TerminatedWorkerError, ferry::ResourceLimitError>);
static_assert(std::is_base_of_v<ferry::TerminatedWorkerError, ferry::SandboxViolationError>);

constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
constexpr std::uint64_t GiB = std::uint64_t{1} << 30;

// ---- waiting, never sleeping -------------------------------------------------------------------

/// Polls `pred` until it holds or `timeout` passes; true if it held.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 2s) {
  return support::wait_until(pred, timeout);
}

/// The issue's promise: a worker's descendants are gone within 2 s of its end (6 s under a
/// sanitizer).
using support::descendants_end_within;

/// A hostile task's budget: generous, so that only a missing containment reaches it (then the
/// future fails with TimeoutError and the case fails, instead of hanging).
constexpr auto hostile_deadline = 30s;
/// How long a test waits for any future: past the deadline above.
constexpr auto future_wait = 60s;

ferry::SubmitOptions hostile(ferry::Limits limits = {}) {
  ferry::SubmitOptions o;
  o.deadline = hostile_deadline;
  o.limits = limits;
  return o;
}

/// A readable name of type T ("ferry::SandboxViolationError").
std::string type_name(const std::type_info& type) {
  int status = 0;
  char* text = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  std::string name = status == 0 && text ? text : type.name();
  std::free(text);
  return name;
}

/// The future's value, or a failed REQUIRE when it does not end in time or fails.
template <class T>
T value_of(const ferry::Future<T>& f) {
  REQUIRE_MESSAGE(static_cast<bool>(f.wait_for(future_wait)), "the task did not end in time");
  try {
    return f.get();
  } catch (const std::exception& e) {
    FAIL("the task failed: " << type_name(typeid(e)) << ": " << std::string(e.what()));
  }
  throw std::logic_error("unreachable");
}

/// The error `E` the future ends with; an empty optional (and a failed check saying what happened
/// instead) when it returns a value, fails otherwise, or does not end in time.
template <class E, class T>
std::optional<E> failure_of(const ferry::Future<T>& f) {
  const std::string expected = type_name(typeid(E));
  if (!f.wait_for(future_wait)) {
    FAIL_CHECK("the task did not end within " << future_wait.count() << " s; expected " << expected);
    return std::nullopt;
  }
  try {
    auto value = f.get();
    FAIL_CHECK("the task returned " << value << "; expected " << expected);
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL_CHECK("expected " << expected << ", got " << type_name(typeid(e)) << ": " << std::string(e.what()));
  } catch (...) {
    FAIL_CHECK("expected " << expected << ", got something that is not a std::exception");
  }
  return std::nullopt;
}

// ---- processes ---------------------------------------------------------------------------------

/// The state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), or 0 when there is none.
char state_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() ? line[close + 2] : 0;
}

/// Gone means ended: reaped, or a zombie. A killed process's last step is its parent's wait(),
/// for an orphan init's, which ferry does not control: this VM's init reaps slowly (300 orphans
/// exiting at once took it 1.1 s to reap, December), so counting zombies as alive made the 2 s
/// promise below fail under load with every process of a fork bomb already dead.
bool gone(pid_t pid) {
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  char state = state_of(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

/// Every process under `roots` (children, grandchildren, ...), not the roots themselves.
std::vector<pid_t> descendants_of(const std::vector<int>& roots) {
  std::map<pid_t, std::vector<pid_t>> children;
  for (const auto& [pid, p] : support::processes()) children[p.parent].push_back(pid);
  std::vector<pid_t> out;
  std::vector<pid_t> pending(roots.begin(), roots.end());
  std::set<pid_t> seen(pending.begin(), pending.end());
  while (!pending.empty()) {
    pid_t p = pending.back();
    pending.pop_back();
    for (pid_t c : children[p])
      if (seen.insert(c).second) {
        out.push_back(c);
        pending.push_back(c);
      }
  }
  return out;
}

bool all_gone(const std::vector<pid_t>& pids) {
  return std::all_of(pids.begin(), pids.end(), gone);
}

std::size_t count_left(const std::vector<pid_t>& pids) {
  return static_cast<std::size_t>(std::count_if(pids.begin(), pids.end(), [](pid_t p) { return !gone(p); }));
}

using support::KillLeftovers;

/// A child of the test that pause()s: a ptrace target. Forked before any executor (no threads).
struct PausedChild {
  pid_t pid = -1;
  PausedChild() {
    pid = ::fork();
    if (pid == 0) {
      for (;;) ::pause();
    }
    REQUIRE(pid > 0);
  }
  ~PausedChild() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  PausedChild(const PausedChild&) = delete;
  PausedChild& operator=(const PausedChild&) = delete;
};

/// A TCP socket listening on a free loopback port: what connect_loopback connects to.
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port = ntohs(address.sin_port);
  }
  /// Whether a connection arrived (accepted and closed) within `timeout`.
  bool accepted_within(std::chrono::milliseconds timeout) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return false;
    ::close(c);
    return true;
  }
  ~Listener() {
    if (fd >= 0) ::close(fd);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
};

/// Keeps one worker busy, deterministically: its task (read_file) blocks opening a FIFO until the
/// test opens the other end, then reads until the test closes it. The other worker takes what
/// comes next. Declare it after the executor (destroyed first: its task ends).
struct Blocker {
  support::TempDir dir;
  fs::path fifo;
  int write_fd = -1;
  ferry::Future<std::string> task;
  Blocker() {
    fifo = dir.path / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  }
  /// Submits the blocking task and returns once it runs (its worker opened the FIFO).
  void hold(ferry::Executor& ex) {
    task = ex.submit_with(hostile(), read_file, fifo.string());
    // O_NONBLOCK: opening for writing fails (ENXIO) until the task has the FIFO open for reading.
    REQUIRE_MESSAGE(eventually(
                        [&] {
                          write_fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                          return write_fd >= 0;
                        },
                        30s),
                    "the blocking task did not start");
  }
  /// Lets the task end; its value.
  std::string release() {
    if (write_fd >= 0) {
      (void)!::write(write_fd, "released", 8);
      ::close(write_fd);
      write_fd = -1;
    }
    REQUIRE(static_cast<bool>(task.wait_for(60s)));
    return task.get();
  }
  ~Blocker() {
    if (write_fd >= 0) ::close(write_fd);
  }
  Blocker(const Blocker&) = delete;
  Blocker& operator=(const Blocker&) = delete;
};

// ---- options -----------------------------------------------------------------------------------

/// Sets a seconds field whatever its type (a ferry::Duration or a count of seconds).
template <class Field>
void set_seconds(Field& field, int seconds) {
  if constexpr (std::is_arithmetic_v<Field>) {
    field = static_cast<Field>(seconds);
  } else {
    field = std::chrono::seconds(seconds);
  }
}

/// Two workers of the freshly built ferry-worker, with `limits` and `sandbox`.
ferry::ExecutorOptions contained(ferry::Limits limits = {}, ferry::Sandbox sandbox = {}) {
  return ferry::ExecutorOptions{.max_workers = 2,
                                .plugin_dirs = {FERRY_TEST_PLUGIN_DIR},
                                .worker_path = FERRY_TEST_WORKER,
                                .limits = std::move(limits),
                                .sandbox = std::move(sandbox)};
}

ferry::Sandbox sandbox_on() {
  ferry::Sandbox s;
  s.enabled = true;
  return s;
}

/// A sandbox's options with a memory ceiling of 128 MiB (a memory cgroup per worker); nullopt, and
/// a message that the test is skipped, where no memory cgroup can be made.
std::optional<ferry::ExecutorOptions> memory_ceiling_of_128_mib() {
  if (FERRY_TEST_SHADOW_MEMORY) {
    MESSAGE("skipped under a sanitizer (no memory limit there)");
    return std::nullopt;
  }
  if (!ferry::detail::containment_support().memory_cgroup) {
    MESSAGE("skipped: no memory cgroup here (" << ferry::detail::containment_support().memory << ")");
    return std::nullopt;
  }
  ferry::Limits limits;
  limits.memory = 128 * MiB;
  return contained(limits, sandbox_on());
}


ferry::ExecutorOptions sandboxed() { return contained({}, sandbox_on()); }

/// Waits until the pool has seen the death of each of `killed` (none is among its workers any
/// more): a task submitted before then may go to a worker already dead, and fail.
void wait_until_replaced(ferry::Executor& ex, const std::vector<int>& killed) {
  CHECK_MESSAGE(eventually(
                    [&] {
                      const std::vector<int> now = ex.worker_pids();
                      return std::none_of(killed.begin(), killed.end(), [&](int w) {
                        return std::find(now.begin(), now.end(), w) != now.end();
                      });
                    },
                    10s),
                "the pool did not notice its killed workers");
}

// ---- what every case checks after its hostile task ---------------------------------------------

/// The host and the other tasks are not affected: a normal task returns its value, and
/// max_workers normal tasks submitted at once all complete, each on a worker that is up.
void check_pool_is_healthy(ferry::Executor& ex) {
  INFO("after the hostile task, the pool must still work");
  auto one = ex.submit<int>("math:square", 12);
  REQUIRE(static_cast<bool>(one.wait_for(future_wait)));
  CHECK(one.get() == 144);
  std::vector<ferry::Future<int>> all;
  for (std::size_t i = 0; i < ex.max_workers(); ++i)
    all.push_back(ex.submit<int>("math:slow_identity", static_cast<int>(i), 100));
  for (std::size_t i = 0; i < all.size(); ++i) {
    REQUIRE(static_cast<bool>(all[i].wait_for(future_wait)));
    CHECK(all[i].get() == static_cast<int>(i));
  }
  CHECK(ex.max_workers() == 2);
  CHECK(eventually([&] { return ex.worker_pids().size() == ex.max_workers(); }, 10s));
  CHECK_FALSE(ex.is_broken());
}

/// A ResourceLimitError names its limit and value, in limit() / value() and in its message
/// ("... went past its memory limit of 256 MiB in worker 123 ...").
void check_limit_error(const ferry::ResourceLimitError& e, const std::string& task,
                       const std::string& limit, unsigned long long value,
                       const std::string& value_text) {
  const std::string what = e.what();
  INFO("what(): " << what);
  CHECK(e.task() == task);
  CHECK(e.limit() == limit);
  CHECK(e.value() == value);
  CHECK(e.pid() > 0);
  CHECK(what.find(limit + " limit of " + value_text) != std::string::npos);
  CHECK(what.find("replaced") != std::string::npos);
}

void check_violation(const ferry::SandboxViolationError& e, const std::string& task,
                     const std::string& operation) {
  const std::string what = e.what();
  INFO("what(): " << what);
  CHECK(e.task() == task);
  CHECK(e.operation() == operation);
  CHECK(e.pid() > 0);
  CHECK(what.find("sandbox denies: " + operation) != std::string::npos);
}

/// A file the host wrote, or "" when it cannot be read.
std::string host_read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void host_write(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

}  // namespace

// ================================================================================================
// The sandbox on: denied system calls end the task with SandboxViolationError, denied files fail
// inside the task with EACCES, what a task needs keeps working.
// ================================================================================================

TEST_CASE("Sandbox.socket_is_denied_and_named") {
  Listener listener;
  ferry::Executor ex(sandboxed());
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), connect_loopback, listener.port));
  if (e) check_violation(*e, "connect_loopback", "socket");
  CHECK_FALSE(listener.accepted_within(0ms));
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.exec_is_denied_and_named") {
  ferry::Executor ex(sandboxed());
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), exec_shell));
  if (e) check_violation(*e, "exec_shell", "execve");
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.an_initializer_that_breaks_the_sandbox_is_a_start_failure") {
  // Its violation was the error of the first call waiting behind it (a SandboxViolationError
  // naming no task), and every call after it started another worker to fail the same way.
  ferry::ExecutorOptions o = sandboxed();
  o.max_workers = 1;
  o.initializer = ferry::Call(exec_shell);
  ferry::Executor ex(o);
  auto e = failure_of<ferry::BrokenProcessPool>(ex.submit_with(hostile(), hostile_pid));
  if (e) {
    CHECK_MESSAGE(std::string(e->what()).find("was stopped by the sandbox while its initializer ran") !=
                      std::string::npos,
                  e->what());
  }
  // 3 start failures in a row, and the replacements started while the killed were reaped.
  CHECK(ex.stats().workers_started <= 6);
}

TEST_CASE("Sandbox.ptrace_is_denied_and_named") {
  SUBCASE("a child process of the test") {
    PausedChild target;
    ferry::Executor ex(sandboxed());
    auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), ptrace_pid, target.pid));
    if (e) check_violation(*e, "ptrace_pid", "ptrace");
    check_pool_is_healthy(ex);
  }
  SUBCASE("another worker of the same executor") {
    // The blocker's FIFO must be readable in the sandbox (if this case fails before release(),
    // the executor's destructor waits for the blocked task's deadline).
    Blocker blocker;
    ferry::Sandbox sandbox = sandbox_on();
    sandbox.read = {blocker.dir.path.string()};
    ferry::Executor ex(contained({}, sandbox));
    REQUIRE(ex.warm_up(30s));
    blocker.hold(ex);  // worker A is busy: what follows runs on worker B
    int b = value_of(ex.submit_with(hostile(), hostile_pid));
    std::vector<int> workers = ex.worker_pids();
    INFO("hostile_pid() said " << b << "; the executor has " << workers.size() << " workers");
    std::erase(workers, b);
    REQUIRE(workers.size() == 1);  // hostile_pid() is the global pid, as the host knows it
    const int a = workers.front();
    auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), ptrace_pid, a));  // B → A
    if (e) check_violation(*e, "ptrace_pid", "ptrace");
    CHECK(blocker.release() == "released");  // A was not disturbed
    check_pool_is_healthy(ex);
  }
}

TEST_CASE("Sandbox.typing_into_the_terminal_is_denied_and_named") {
  // Workers share the host's stderr (a terminal, for `ferry run` in a shell): ioctl(TIOCSTI)
  // on it typed commands into the user's shell, run outside the sandbox. Trapped, its command
  // compared on the 32 bits the kernel reads (the task sets high bits too). If it were not, the
  // worst here is a newline typed into the terminal that runs the test.
  ferry::Executor ex(sandboxed());
  for (bool high_bits : {false, true}) {
    CAPTURE(high_bits);
    auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), type_into_terminal, 2, high_bits));
    if (e) check_violation(*e, "type_into_terminal", "ioctl");
  }
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.virtual_console_and_exclusive_terminal_commands_are_denied") {
  // On a virtual console KDSKBENT and friends remap keys (typing as TIOCSTI does), VT_ACTIVATE
  // switches consoles; TIOCEXCL locks the user out of their own terminal. Trapped whatever the
  // descriptor (here /dev/null, which would answer ENOTTY: harmless if they went through).
  ferry::Executor ex(sandboxed());
  for (int command : {0x4B33 /* KDGKBTYPE */, 0x4B49 /* KDSKBSENT */, 0x5606 /* VT_ACTIVATE */,
                      static_cast<int>(TIOCEXCL)}) {
    CAPTURE(command);
    auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), null_device_ioctl, command));
    if (e) check_violation(*e, "null_device_ioctl", "ioctl");
  }
  // Other commands reach the device as before.
  CHECK(value_of(ex.submit_with(hostile(), null_device_ioctl, static_cast<int>(TIOCGWINSZ))) == ENOTTY);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.another_process_limits_and_priority_are_out_of_reach") {
  // The kernel lets a process change the limits and priority of any process of its user: a task
  // set the host's RLIMIT_FSIZE to 0 (the host died of SIGXFSZ) and the guardian's
  // RLIMIT_NOFILE (its sweep found nothing to kill). Setting another process's limits is a
  // violation (reading them is not); setpriority on one fails with EPERM. The test process is
  // the other process here.
  const int self = static_cast<int>(::getpid());
  {
    ferry::Executor plain(support::options(1));
    CHECK(value_of(plain.submit_with(hostile(), limit_of, self, true)) == 0);
    CHECK(value_of(plain.submit_with(hostile(), renice_process, self)) == 0);
  }
  ferry::Executor ex(sandboxed());
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), limit_of, self, true));
  if (e) check_violation(*e, "limit_of", "prlimit64");
  CHECK(value_of(ex.submit_with(hostile(), limit_of, self, false)) == 0);  // reading: allowed
  CHECK(value_of(ex.submit_with(hostile(), limit_of, 0, true)) == 0);      // its own: allowed
  CHECK(value_of(ex.submit_with(hostile(), renice_process, self)) == EPERM);
  CHECK(value_of(ex.submit_with(hostile(), renice_process, 0)) == 0);
  check_pool_is_healthy(ex);
}

/// RLIMIT_RTPRIO and RLIMIT_NICE raised in this process (root) for as long as it lives, as a
/// desktop gives its audio group: false when they cannot be.
struct PriorityLimitsRaised {
  rlimit rtprio{}, nice{};
  bool raised = false;
  PriorityLimitsRaised() {
    ::getrlimit(RLIMIT_RTPRIO, &rtprio);
    ::getrlimit(RLIMIT_NICE, &nice);
    const rlimit high{20, 20};
    raised = ::setrlimit(RLIMIT_RTPRIO, &high) == 0 && ::setrlimit(RLIMIT_NICE, &high) == 0;
  }
  ~PriorityLimitsRaised() {
    ::setrlimit(RLIMIT_RTPRIO, &rtprio);
    ::setrlimit(RLIMIT_NICE, &nice);
  }
};

TEST_CASE("Sandbox.a_task_cannot_raise_its_own_scheduling_priority") {
  // A host allowed real-time priorities (RLIMIT_RTPRIO) passed them on to its sandboxed workers:
  // a task made itself SCHED_FIFO, ahead of every ordinary process of the machine on its CPU,
  // or took a nice value below the user's other processes (RLIMIT_NICE).
  PriorityLimitsRaised limits;
  if (!limits.raised) {
    MESSAGE("skipped: RLIMIT_RTPRIO and RLIMIT_NICE cannot be raised here");
    return;
  }
  ferry::Executor ex(sandboxed());
  const ferry::TaskRef raise_own_priority{.library = FERRY_TEST_CRASH_PLUGIN, .name = "raise_own_priority"};
  CHECK(value_of(ex.submit_with<int>(hostile(), raise_own_priority, 0)) == EPERM);
  CHECK(value_of(ex.submit_with<int>(hostile(), raise_own_priority, 1)) == EACCES);
  // Not in a sandbox: a task has its user's rights.
  ferry::Executor plain(contained());
  CHECK(value_of(plain.submit_with<int>(hostile(), raise_own_priority, 0)) == 0);
}

TEST_CASE("Sandbox.clone_makes_no_namespace_and_no_child_of_the_host") {
  // unshare and setns were trapped, clone with CLONE_NEWUSER (and the other CLONE_NEW* flags)
  // was not; with CLONE_PARENT the child was the host's (a zombie it never reaps, outside the
  // worker's cgroup). clone3's flags are in memory, out of a filter's sight: ENOSYS, and glibc
  // uses clone.
  ferry::Executor ex(sandboxed());
  for (int flags : {CLONE_NEWUSER, CLONE_NEWUSER | CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWPID, CLONE_PARENT}) {
    CAPTURE(flags);
    auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), clone_with_flags, flags));
    if (e) check_violation(*e, "clone_with_flags", "clone");
  }
  CHECK(value_of(ex.submit_with(hostile(), clone_with_flags, 0)) == 0);  // a plain fork
  CHECK(value_of(ex.submit_with(hostile(), clone3_child)) == ENOSYS);
  CHECK(value_of(ex.submit_with(hostile(), fork_until_refused, 3)) == 3);  // fork falls back
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.the_network_allows_ip_and_netlink_routing_sockets_only") {
  // `network` trapped only UNIX sockets' absence: every other family was allowed, AF_VSOCK to
  // the hypervisor (it answered), and AF_ALG, AF_TIPC, AF_RDS... where the kernel has them (an
  // audit). IP and netlink's routing protocol (name lookups) are what `network` means.
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.network = true;
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), socket_of_family, static_cast<long long>(AF_INET), static_cast<int>(SOCK_STREAM), 0)) == 0);
  const int v6 = value_of(ex.submit_with(hostile(), socket_of_family, static_cast<long long>(AF_INET6), static_cast<int>(SOCK_DGRAM), 0));
  CHECK((v6 == 0 || v6 == EAFNOSUPPORT));
  CHECK(value_of(ex.submit_with(hostile(), socket_of_family, static_cast<long long>(AF_NETLINK), static_cast<int>(SOCK_RAW),
                                static_cast<int>(NETLINK_ROUTE))) == 0);
  struct Denied {
    long long family;
    int type, protocol;
  };
  for (const Denied d : {Denied{AF_VSOCK, SOCK_STREAM, 0}, Denied{AF_PACKET, SOCK_DGRAM, 0}, Denied{AF_ALG, SOCK_SEQPACKET, 0},
                         Denied{AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT}, Denied{AF_MAX, SOCK_STREAM, 0},
                         Denied{1000, SOCK_STREAM, 0}, Denied{AF_INET | (1LL << 32), SOCK_STREAM, 0}}) {
    CAPTURE(d.family);
    CAPTURE(d.protocol);
    auto e = failure_of<ferry::SandboxViolationError>(
        ex.submit_with(hostile(), socket_of_family, d.family, d.type, d.protocol));
    if (e) check_violation(*e, "socket_of_family", "socket");
  }
  check_pool_is_healthy(ex);
  // Nor a pair of another family than AF_UNIX, network or not: making one runs the family's code
  // (TIPC makes working pairs; a review).
  for (bool network : {true, false}) {
    CAPTURE(network);
    sandbox.network = network;
    ferry::Executor pairs(contained({}, sandbox));
    for (long long family : {static_cast<long long>(AF_VSOCK), static_cast<long long>(AF_TIPC),
                             static_cast<long long>(AF_INET), AF_UNIX | (1LL << 32)}) {
      CAPTURE(family);
      auto e = failure_of<ferry::SandboxViolationError>(
          pairs.submit_with(hostile(), socket_pair_of_family, family, static_cast<int>(SOCK_STREAM)));
      if (e) check_violation(*e, "socket_pair_of_family", "socketpair");
    }
    CHECK(value_of(pairs.submit_with(hostile(), socket_pair_of_family, static_cast<long long>(AF_UNIX),
                                     static_cast<int>(SOCK_STREAM))) == 0);
    check_pool_is_healthy(pairs);
  }
}

TEST_CASE("Sandbox.unix_sockets_fail_with_EACCES_and_the_network_allowed_too") {
  // A UNIX socket reaches the user's local services (the session bus starts programs outside
  // the sandbox), network or not; a datagram socketpair can still send to any named socket.
  for (bool network : {false, true}) {
    CAPTURE(network);
    ferry::Sandbox sandbox = sandbox_on();
    sandbox.network = network;
    ferry::Executor ex(contained({}, sandbox));
    CHECK(value_of(ex.submit_with(hostile(), unix_socket, false)) == EACCES);
    // The family with high bits set: a UNIX socket to the kernel, refused (without the network
    // the trap on any other family catches it first).
    if (network) CHECK(value_of(ex.submit_with(hostile(), unix_socket, true)) == EACCES);
    // SOCK_RAW is a datagram pair to AF_UNIX too; stream and seqpacket pairs reach nothing.
    for (int type : {static_cast<int>(SOCK_DGRAM), SOCK_DGRAM | SOCK_NONBLOCK, static_cast<int>(SOCK_RAW)})
      CHECK(value_of(ex.submit_with(hostile(), unix_socket_pair, type)) == EACCES);
    CHECK(value_of(ex.submit_with(hostile(), unix_socket_pair, static_cast<int>(SOCK_STREAM))) == 0);
    CHECK(value_of(ex.submit_with(hostile(), unix_socket_pair, static_cast<int>(SOCK_SEQPACKET))) == 0);
    check_pool_is_healthy(ex);
  }
}

TEST_CASE("Sandbox.file_metadata_cannot_change") {
  // Landlock guards no metadata: a task made files it could only name world-writable or setuid
  // (as root: any file root owns). Every such call fails with EPERM, inside a write directory
  // too; the file keeps its mode, and without a sandbox the same calls go through.
  support::TempDir dir;
  const fs::path file = dir.path / "victim";
  host_write(file, "keep me");
  ::chmod(file.c_str(), 0600);
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.write = {dir.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  for (int how = 0; how <= 6; ++how) {
    CAPTURE(how);
    CHECK(value_of(ex.submit_with(hostile(), change_metadata, file.string(), how, 04777)) == EPERM);
  }
  // chattr's flags by ioctl, on a descriptor opened read-only.
  CHECK(value_of(ex.submit_with(hostile(), set_file_flags, file.string())) == EPERM);
  struct stat st{};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  check_pool_is_healthy(ex);
  ferry::Executor plain(support::options(1));
  CHECK(value_of(plain.submit_with(hostile(), change_metadata, file.string(), 0, 0640)) == 0);
  CHECK(value_of(plain.submit_with(hostile(), set_file_flags, file.string())) == 0);
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
}

TEST_CASE("Sandbox.no_file_is_made_setuid_or_setgid") {
  // Made setuid from the start in a write directory others can reach, a file would run as this
  // user outside the sandbox: EPERM. An ordinary mode goes through; openat2 (its mode in memory)
  // is ENOSYS.
  support::TempDir dir;
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.write = {dir.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  for (int how = 0; how <= 1; ++how) {
    CAPTURE(how);
    for (int mode : {04755, 02755}) {
      CAPTURE(mode);
      const fs::path file = dir.path / ("planted" + std::to_string(how) + "_" + std::to_string(mode));
      CHECK(value_of(ex.submit_with(hostile(), create_with_mode, file.string(), mode, how)) == EPERM);
      CHECK_FALSE(fs::exists(file));
    }
    const fs::path plain = dir.path / ("plain" + std::to_string(how));
    CHECK(value_of(ex.submit_with(hostile(), create_with_mode, plain.string(), 0644, how)) == 0);
    CHECK(fs::exists(plain));
  }
  CHECK(value_of(ex.submit_with(hostile(), create_with_mode, (dir.path / "two").string(), 0644, 2)) == ENOSYS);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.system_v_ipc_is_its_own") {
  // A task read and wrote another program's private (0600) System V segment of the same user:
  // a sandboxed worker has an IPC namespace of its own.
  key_t key = 0;
  int id = -1;
  for (key_t k = static_cast<key_t>(0x46520000 + (::getpid() & 0xffff)); id < 0 && k < 0x46530000 + 0xffff; ++k) {
    id = ::shmget(k, 4096, IPC_CREAT | IPC_EXCL | 0600);
    key = k;
  }
  REQUIRE(id >= 0);
  struct Remove {
    int id;
    ~Remove() { ::shmctl(id, IPC_RMID, nullptr); }
  } remove{id};
  {
    ferry::Executor plain(support::options(1));
    CHECK(value_of(plain.submit_with(hostile(), find_shared_segment, static_cast<int>(key))) == 0);
  }
  ferry::Executor ex(sandboxed());
  CHECK(value_of(ex.submit_with(hostile(), find_shared_segment, static_cast<int>(key))) == ENOENT);
  check_pool_is_healthy(ex);
}

/// Runs `task` on descriptor 2 in a sandboxed pool and in a plain one while the test's stderr is
/// a new pseudo-terminal, opened read-write as a shell opens its own: {sandboxed, plain} results.
template <class Task>
std::pair<int, int> on_a_terminal(Task task) {
  support::Pty pty;
  support::StderrTo on(pty.terminal);
  std::pair<int, int> results{-1, -1};
  {
    ferry::Executor ex(sandboxed());
    results.first = value_of(ex.submit_with(hostile(), task, STDERR_FILENO));
    ferry::Executor plain(support::options(1));
    results.second = value_of(plain.submit_with(hostile(), task, STDERR_FILENO));
  }
  return results;
}

TEST_CASE("Sandbox.the_terminal_it_shares_is_write_only") {
  // Workers write to the host's stderr, a terminal the shell opened read-write: a task could
  // read what the user types from it. A sandboxed worker holds a write-only description of the
  // same terminal (EBADF on read); without a sandbox the task reads it as any program could.
  auto [sandboxed_read, plain_read] = on_a_terminal(read_descriptor);
  CHECK(sandboxed_read == EBADF);
  CHECK(plain_read == EAGAIN);  // readable: nothing typed yet
}

TEST_CASE("Sandbox.the_terminal_it_shares_keeps_its_modes") {
  // A task turned echo and ^C off on the user's terminal, and they stayed off after the run:
  // every terminal a sandboxed task holds is the user's, so its setters fail with ENOTTY.
  auto [sandboxed_set, plain_set] = on_a_terminal(set_terminal_modes);
  CHECK(sandboxed_set == ENOTTY);
  CHECK(plain_set == 0);
}

TEST_CASE("Sandbox.reading_outside_the_allowed_paths_fails_in_the_task_with_EACCES") {
  // Not under /tmp, which a sandboxed worker replaces with its private directory (below).
  support::TempDir outside(FERRY_TEST_BINARY_DIR);
  host_write(outside.path / "secret", "not for the task");
  ferry::Executor ex(sandboxed());
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), read_file, (outside.path / "secret").string()));
  if (e) {
    INFO("remote: " << e->remote_type() << ": " << e->remote_message());
    CHECK(e->remote_type().find("system_error") != std::string::npos);
    CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  }
  // The host's /tmp is not there at all.
  support::TempDir in_tmp("/tmp");
  host_write(in_tmp.path / "secret", "not for the task");
  const std::string task_tmp = value_of(ex.submit_with(hostile(), temp_dir));
  if (task_tmp == fs::canonical("/tmp").string()) {
    auto hidden = failure_of<ferry::TaskError>(ex.submit_with(hostile(), read_file, (in_tmp.path / "secret").string()));
    if (hidden) CHECK(hidden->remote_message().find("No such file") != std::string::npos);
  } else {
    MESSAGE("the host's /tmp hidden: not checked, the worker has no private /tmp here (its "
            "temporary directory is '" << task_tmp << "')");
  }
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.watching_a_directory_outside_the_allowed_paths_fails") {
  // inotify reports the names made, opened and removed in a directory: outside the paths a task
  // may read, what the user does there is not the task's to see.
  support::TempDir outside(FERRY_TEST_BINARY_DIR);
  ferry::Executor ex(sandboxed());
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), watch_directory, outside.path.string()));
  REQUIRE(e);
  INFO("remote: " << e->remote_type() << ": " << e->remote_message());
  CHECK(e->remote_message().find("inotify") != std::string::npos);
  // Not sandboxed, the same task watches it.
  ferry::Executor plain(support::options(1));
  CHECK(value_of(plain.submit_with(hostile(), watch_directory, outside.path.string())) >= 1);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.a_task_finds_no_other_calls_arguments_in_its_shared_memory") {
  // Large arguments travel in memfd blocks the host recycles, for the whole process: a sandboxed
  // task mapped past its own arguments (mremap) and read an earlier call's, another executor's,
  // and kept its mapping to read later ones.
  constexpr std::size_t mib = std::size_t{1} << 20;
  ferry::Executor plain(support::options(1));
  auto boxed_options = sandboxed();
  boxed_options.max_workers = 1;
  ferry::Executor boxed(boxed_options);
  // A block full of another call's bytes, free for reuse, larger than the next arguments.
  CHECK(value_of(plain.submit_with(hostile(), sum_bytes, std::vector<char>(3 * mib, 'S'))) == 3 * mib * 'S');
  CHECK(value_of(boxed.submit_with(hostile(), foreign_bytes_in_argument_block, std::vector<char>(2 * mib, 0),
                                   std::uint64_t{3 * mib})) == 0);
  // A block it kept mapped (larger than any free one: made for it) is never written again.
  CHECK(value_of(boxed.submit_with(hostile(), keep_argument_block, std::vector<char>(4 * mib, 0))) >= 4 * mib);
  for (int i = 0; i < 2; ++i)
    CHECK(value_of(plain.submit_with(hostile(), sum_bytes, std::vector<char>(4 * mib, 'S'))) == 4 * mib * 'S');
  CHECK(value_of(boxed.submit_with(hostile(), kept_block_foreign_bytes)) == 0);
}

TEST_CASE("Sandbox.a_worker_given_its_budget_of_argument_blocks_is_replaced") {
  // Its task may keep every argument block it was given mapped (memory charged to the host):
  // past FERRY_SANDBOX_SHARED_BYTES of them (4 GiB by default, 8 MiB here) the worker is replaced
  // after its calls, stop reason "shared_memory".
  constexpr std::size_t mib = std::size_t{1} << 20;
  support::ScopedEnv budget("FERRY_SANDBOX_SHARED_BYTES", "8M");
  auto o = sandboxed();
  o.max_workers = 1;
  ferry::Executor boxed(o);
  const int first = value_of(boxed.submit_with(hostile(), hostile_pid));
  for (int i = 0; i < 2; ++i)  // 6 MiB given: within the budget
    CHECK(value_of(boxed.submit_with(hostile(), sum_bytes, std::vector<char>(3 * mib, 1))) == 3 * mib);
  CHECK(value_of(boxed.submit_with(hostile(), hostile_pid)) == first);
  CHECK(value_of(boxed.submit_with(hostile(), sum_bytes, std::vector<char>(3 * mib, 1))) == 3 * mib);  // 9 MiB
  CHECK(support::wait_until([&] { return boxed.stats().workers_stopped == 1; }, 10s));
  CHECK(value_of(boxed.submit_with(hostile(), hostile_pid)) != first);
  CHECK(boxed.stats().workers_crashed == 0);
}

TEST_CASE("Sandbox.a_worker_gets_none_of_the_hosts_secrets_in_its_environment") {
  // The host's environment holds the user's tokens and keys (a CI job's, a cloud tool's): a
  // sandboxed worker gets what a process needs to run, ferry's settings and ExecutorOptions::env.
  support::ScopedEnv secret("FERRY_TEST_LOOKALIKE_TOKEN", "not ferry's");
  support::ScopedEnv token("GITHUB_TOKEN_OF_A_TEST", "ghp_secret");
  support::ScopedEnv through_ssh("LC_TOKEN_OF_A_TEST", "ssh passes LC_* along");
  support::ScopedEnv lang("LC_ALL", "C.UTF-8");
  support::ScopedEnv proxy("https_proxy", "http://proxy.invalid:3128");
  auto o = sandboxed();
  o.env = {{"GIVEN_TO_IT", "yes"}};
  ferry::Executor boxed(o);
  auto value = [&](ferry::Executor& ex, const char* name) {
    return value_of(ex.submit_with(hostile(), environment_variable, std::string(name)));
  };
  CHECK(value(boxed, "GITHUB_TOKEN_OF_A_TEST") == "(unset)");
  CHECK(value(boxed, "GIVEN_TO_IT") == "yes");
  CHECK(value(boxed, "LC_ALL") == "C.UTF-8");
  CHECK(value(boxed, "PATH") != "(unset)");
  // Names, not prefixes: ferry's own variables, the locale's.
  CHECK(value(boxed, "FERRY_TEST_LOOKALIKE_TOKEN") == "(unset)");
  CHECK(value(boxed, "LC_TOKEN_OF_A_TEST") == "(unset)");
  CHECK(value(boxed, "https_proxy") == "(unset)");  // no network: no proxy
  auto with_network = sandboxed();
  with_network.sandbox.network = true;
  ferry::Executor online(with_network);
  CHECK(value(online, "https_proxy") == "http://proxy.invalid:3128");
  CHECK(value(online, "GITHUB_TOKEN_OF_A_TEST") == "(unset)");
  ferry::Executor plain(support::options(1));
  CHECK(value(plain, "GITHUB_TOKEN_OF_A_TEST") == "ghp_secret");  // not sandboxed: all of it
}

TEST_CASE("Sandbox.a_task_takes_none_of_its_users_inotify_instances") {
  // A user has 128 inotify instances in all (fs.inotify.max_user_instances): a task that held
  // them, useless to it in a sandbox (no watch can be added), left every other process of its
  // user (of root: systemd, udev) without one for as long as its worker lived.
  const ferry::TaskRef hold{.library = FERRY_TEST_CRASH_PLUGIN, .name = "hold_inotify_instances"};
  ferry::Executor ex(sandboxed());
  CHECK(value_of(ex.submit_with<int>(hostile(), hold, 1000)) == 0);
  const int mine = ::inotify_init1(IN_CLOEXEC);
  CHECK_MESSAGE(mine >= 0, "the test could not make an inotify instance: " << std::string(std::strerror(errno)));
  if (mine >= 0) ::close(mine);
  // Not sandboxed, the same task opens some (and its user's other processes may run short).
  ferry::Executor plain(support::options(1));
  CHECK(value_of(plain.submit_with<int>(hostile(), hold, 1)) == 1);
}

TEST_CASE("Sandbox.a_task_takes_none_of_the_machines_aio_events") {
  // Linux AIO contexts come from one pool for the whole machine (fs.aio-max-nr, 65536 events by
  // default): a task that set up one that size left every other process of the machine without
  // (io_setup failed with EAGAIN) while its worker lived.
  std::ifstream pool("/proc/sys/fs/aio-max-nr");
  long events = 0;
  if (!(pool >> events) || events <= 0) {
    MESSAGE("skipped: no fs.aio-max-nr here");
    return;
  }
  const ferry::TaskRef hold{.library = FERRY_TEST_CRASH_PLUGIN, .name = "hold_aio_events"};
  ferry::Executor ex(sandboxed());
  CHECK(value_of(ex.submit_with<int>(hostile(), hold, events)) == ENOSYS);
  unsigned long context = 0;
  const bool made = ::syscall(SYS_io_setup, 1, &context) == 0;
  const int why = errno;
  CHECK_MESSAGE(made, "the test could not set up an AIO context: " << std::string(std::strerror(why)));
  if (made) ::syscall(SYS_io_destroy, context);
  // Not sandboxed, the same task sets one up.
  ferry::Executor plain(support::options(1));
  CHECK(value_of(plain.submit_with<int>(hostile(), hold, 1L)) == 0);
}

TEST_CASE("Sandbox.a_task_takes_at_most_a_quarter_of_its_users_pending_signals") {
  // A user's pending signals (each POSIX timer holds one) are counted for the user as a whole,
  // against the RLIMIT_SIGPENDING of the process that asks: a task that took them all (96,000
  // timers here) left every other process of its user (as root, every daemon) unable to make a
  // timer or queue a real-time signal while its worker lived. (POSIX message queues, counted so
  // too, cannot be opened in a sandbox: Landlock guards their file system.)
  const ferry::TaskRef timers{.library = FERRY_TEST_CRASH_PLUGIN, .name = "hold_timers"};
  ferry::Executor ex(sandboxed());
  CHECK(value_of(ex.submit_with<int>(hostile(), timers, 1000000)) > 0);
  sigevent event{};
  event.sigev_notify = SIGEV_NONE;
  timer_t timer{};
  const bool made = ::timer_create(CLOCK_MONOTONIC, &event, &timer) == 0;
  const int why = errno;
  CHECK_MESSAGE(made, "the test could not make a timer: " << std::string(std::strerror(why)));
  if (made) ::timer_delete(timer);
}

TEST_CASE("Sandbox.a_task_holds_no_lease_nor_the_caches_locks_and_learns_no_interface") {
  // A read lease delayed everyone who opened the file for writing; a flock on a wrap cache's
  // lock file (the cache was readable; Sandbox::read may name it) stopped every build of that
  // entry; SIOCGIFCONF on the
  // channel listed the host's network interfaces.
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  host_write(dir.path / "shared.txt", "read by the task");
  host_write(dir.path / "wrap-x.lock", "");
  fs::permissions(dir.path / "wrap-x.lock", fs::perms(0200), fs::perm_options::replace);  // as ferry makes it
  auto o = sandboxed();
  o.sandbox.read = {dir.path};
  ferry::Executor boxed(o);
  ferry::Executor plain(support::options(1));
  const std::string shared = (dir.path / "shared.txt").string(), lock = (dir.path / "wrap-x.lock").string();
  CHECK(value_of(boxed.submit_with(hostile(), lease_file, shared)) == EPERM);
  CHECK(value_of(plain.submit_with(hostile(), lease_file, shared)) == 0);
  auto e = failure_of<ferry::TaskError>(boxed.submit_with(hostile(), lock_file, lock));
  REQUIRE(e);
  CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  if (::geteuid() == 0) {
    // Root opens a file whatever its mode: unsandboxed, the same task takes the lock, so the
    // refusal above is the sandbox's (it leaves a worker no capability), not the mode's alone.
    CHECK(value_of(plain.submit_with(hostile(), lock_file, lock)) == 0);
  } else {
    MESSAGE("lock file: not root, so an unsandboxed worker is refused by the mode as well: the "
            "refusal is not told apart from plain permissions");
  }
  CHECK(value_of(boxed.submit_with(hostile(), lock_file, shared)) == 0);  // a file it may read: its own business
  CHECK(value_of(boxed.submit_with(hostile(), channel_interface_count)) == -ENOTTY);
  CHECK(value_of(plain.submit_with(hostile(), channel_interface_count)) >= 1);
}

TEST_CASE("Sandbox.a_task_reads_the_wrap_caches_plugins_not_its_sources") {
  // The whole FERRY_WRAP cache was readable: a task read the wrapped sources and build logs of
  // the user's other programs. A worker reads only its plugin directory, made with the pool (a
  // rule needs it to exist; an executor's wraps are built after its workers start).
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path cache = dir.path / "cache";
  fs::create_directory(cache);
  fs::permissions(cache, fs::perms::owner_all, fs::perm_options::replace);
  host_write(cache / "wrap-k.cpp", "the user's other program");
  host_write(cache / "wrap-k.err", "its build log");
  support::ScopedEnv at("FERRY_CACHE_DIR", cache.string());
  ferry::Executor boxed(sandboxed());
  const fs::path plugins = ferry::detail::wrap_plugin_dir(cache);
  struct stat st {};
  REQUIRE(::stat(plugins.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  host_write(plugins / "wrap-k-0011223344556677.so", "a plugin built later");
  CHECK(value_of(boxed.submit_with(hostile(), read_file, (plugins / "wrap-k-0011223344556677.so").string())) ==
        "a plugin built later");
  for (const char* name : {"wrap-k.cpp", "wrap-k.err"}) {
    auto e = failure_of<ferry::TaskError>(boxed.submit_with(hostile(), read_file, (cache / name).string()));
    REQUIRE(e);
    CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  }
  ferry::Executor plain(support::options(1));
  CHECK(value_of(plain.submit_with(hostile(), read_file, (cache / "wrap-k.cpp").string())) == "the user's other program");
}

namespace {

/// `log` open for appending, made to start with "IMPORTANT\n"; closed with this.
struct ImportantLog {
  int fd;
  explicit ImportantLog(const fs::path& log) : fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) {
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "IMPORTANT\n", 10) == 10);
  }
  ~ImportantLog() { ::close(fd); }
  ImportantLog(const ImportantLog&) = delete;
  ImportantLog& operator=(const ImportantLog&) = delete;
};

/// This process's stderr, which workers inherit, pointed at `log` (which starts with
/// "IMPORTANT\n"), or at descriptor `fd` (the caller's, left open), until restore() or the end
/// of the scope.
struct StderrInto : support::StderrTo {
  explicit StderrInto(const fs::path& log) : StderrTo(ImportantLog(log).fd) {}
  explicit StderrInto(int fd) : StderrTo(fd) {}
};}  // namespace

TEST_CASE("Sandbox.a_task_cannot_truncate_or_overwrite_the_hosts_output") {
  // A worker shared the host's stderr description: a task truncated the user's log file, or
  // cleared O_APPEND and wrote over it. Its stdout and stderr are pipes now, copied by a relay.
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path log = dir.path / "host.log";
  StderrInto into(log);
  std::string done;
  {
    ferry::Executor boxed(sandboxed());
    auto f = boxed.submit_with(hostile(), attack_output);
    done = f.wait_for(future_wait) ? f.get() : "did not end";
  }
  into.restore();
  CHECK(done == "");
  CHECK(support::wait_until([&] { return support::read_file(log).find("from the task") != std::string::npos; }));
  CHECK(support::read_file(log).rfind("IMPORTANT\n", 0) == 0);
}

TEST_CASE("Sandbox.a_host_without_stdout_gives_its_workers_dev_null") {
  // A worker started with stdout or stderr closed took its cgroup's pids.max there (its first
  // open), and a task's printf wrote into it; in a sandbox, the output pipes' relay held a write
  // end of its own pipe for good.
  for (const bool sandbox : {false, true}) {
    CAPTURE(sandbox);
    const int code = support::exit_code_of_child(
        [&] {
          ::close(STDOUT_FILENO);
          ::close(STDERR_FILENO);
          ferry::Executor ex(sandbox ? sandboxed() : support::options(1));
          auto out = ex.submit_with(hostile(), descriptor_target, 1);
          auto err = ex.submit_with(hostile(), descriptor_target, 2);
          if (!out.wait_for(future_wait) || !err.wait_for(future_wait)) return 3;
          const std::string want = sandbox ? "pipe:" : "/dev/null";
          return out.get().starts_with(want) && err.get().starts_with(want) ? 0 : 1;
        },
        std::chrono::milliseconds(60000));
    CHECK(code == 0);
  }
}

TEST_CASE("Sandbox.a_tasks_output_into_the_hosts_file_stops_at_its_file_size_limit") {
  // The relay writes a worker's output into the host's file: at most Limits::file_size bytes, as
  // when the task wrote there itself (SIGXFSZ then). Whole lines of a flood, the rest dropped.
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path log = dir.path / "host.log";
  StderrInto into(log);
  std::uint64_t flooded = 0;
  {
    auto o = sandboxed();
    o.limits.file_size = 4096;
    ferry::Executor boxed(o);
    auto f = boxed.submit_with(hostile(), flood_output, STDERR_FILENO, std::uint64_t{256} << 10);
    flooded = f.wait_for(future_wait) ? f.get() : 0;
  }
  into.restore();
  CHECK(flooded == std::uint64_t{256} << 10);  // the task's writes all went through
  // Once the relay is gone (no process writes to the file any more), the file is final.
  auto writers = [&] {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::error_code ec;
      for (const char* out : {"/fd/1", "/fd/2"})
        n += fs::read_symlink(e.path().string() + out, ec) == log;
    }
    return n;
  };
  CHECK(support::wait_until([&] { return writers() == 0; }));
  CHECK(fs::file_size(log) == 10 + 4096);
  CHECK(support::read_file(log).rfind("IMPORTANT\n", 0) == 0);
}

TEST_CASE("Sandbox.output_reaches_a_non_blocking_pipe_whole_and_in_whole_lines") {
  // The host's stderr a pipe made non-blocking (by a program that polls it): the relays of two
  // workers flooding it must wait while it is full (EAGAIN), not drop what follows, and write at
  // most PIPE_BUF bytes at a time, cut after a newline, so that their lines do not interleave.
  if (std::getenv("FERRY_DEBUG")) {
    MESSAGE("skipped under FERRY_DEBUG (its log lines go to the same stderr)");
    return;
  }
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  REQUIRE(::fcntl(p[1], F_SETFL, ::fcntl(p[1], F_GETFL) | O_NONBLOCK) == 0);
  constexpr std::uint64_t each = std::uint64_t{256} << 10;
  std::string got;
  std::vector<std::uint64_t> flooded;
  {
    StderrInto into(p[1]);
    ::close(p[1]);
    auto o = sandboxed();
    ferry::Executor boxed(o);
    std::vector<ferry::Future<std::uint64_t>> floods;
    for (int i = 0; i < 2; ++i) floods.push_back(boxed.submit_with(hostile(), flood_output, STDERR_FILENO, each));
    // Read while they write, until both floods are here or nothing more comes for 20 s.
    char buf[4096];
    for (;;) {
      pollfd in{p[0], POLLIN, 0};
      if (got.size() >= 2 * each || ::poll(&in, 1, 20'000) <= 0) break;
      const ssize_t n = ::read(p[0], buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    for (auto& f : floods) flooded.push_back(f.wait_for(future_wait) ? f.get() : 0);
    into.restore();
    ::close(p[0]);  // before the workers end: a relay left with a full pipe gets EPIPE, not a wait
  }
  CHECK(flooded == std::vector<std::uint64_t>{each, each});
  CHECK(got.size() == 2 * each);
  std::size_t broken = 0;
  for (std::size_t at = 0; at < got.size(); at += 64)
    broken += got.compare(at, 64, std::string(63, 'x') + "\n") != 0;
  CHECK(broken == 0);
}

TEST_CASE("Sandbox.options_a_pool_cannot_honour_are_refused") {
  // Another backend: containment is set up by the local launcher only.
  auto remote = sandboxed();
  remote.backend = "mpi";
  CHECK_THROWS_WITH_AS(ferry::Executor{remote}, doctest::Contains("\"local\" backend only"),
                       std::invalid_argument);
  auto limited = contained({.open_files = 64});
  limited.backend = "mpi";
  CHECK_THROWS_AS(ferry::Executor{limited}, std::invalid_argument);
  auto negative = contained({.cpu_time = std::chrono::seconds(-1)});
  CHECK_THROWS_WITH_AS(ferry::Executor{negative}, doctest::Contains("cpu_time must not be negative"),
                       std::invalid_argument);
}

TEST_CASE("Sandbox.FERRY_DEBUG_logs_the_denied_path") {
  support::TempDir outside(FERRY_TEST_BINARY_DIR);  // not under /tmp: hidden, not denied
  host_write(outside.path / "secret", "not for the task");
  const std::string secret = (outside.path / "secret").string();
  // A name with an escape sequence and a line of its own: shown escaped, indented.
  host_write(outside.path / "clear\x1b[2J\n[ferry 1] forged", "not for the task either");
  const std::string hostile_name = (outside.path / "clear\x1b[2J\n[ferry 1] forged").string();
  // The workers inherit this process's stderr: point it at a file while they run.
  support::TempDir logs;
  const fs::path log = logs.path / "stderr";
  int file = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(file >= 0);
  support::StderrTo into(file);
  ::close(file);
  {
    auto options = sandboxed();
    options.env["FERRY_DEBUG"] = "1";
    ferry::Executor ex(options);
    auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), read_file, secret));
    auto e2 = failure_of<ferry::TaskError>(ex.submit_with(hostile(), read_file, hostile_name));
    ex.shutdown();
  }
  into.restore();
  // A sandboxed worker's stderr reaches the file through its relay, which may still be copying.
  const std::string forged = "clear\\x1b[2J\n  [ferry 1] forged\") denied (EACCES)";
  CHECK(support::wait_until([&] { return support::read_file(log).find(forged) != std::string::npos; }));
  const std::string text = support::read_file(log);
  INFO("worker stderr:\n" << text);
  CHECK(text.find("sandbox: open(\"" + secret + "\") denied (EACCES)") != std::string::npos);
  // Shown as every debug line is (Debug.lines_show_control_characters_escaped).
  CHECK(text.find(forged) != std::string::npos);
  CHECK(text.find('\x1b') == std::string::npos);
}

TEST_CASE("Sandbox.writing_into_home_fails_in_the_task_with_EACCES") {
  support::TempDir home(FERRY_TEST_BINARY_DIR);  // not under /tmp: hidden, not denied
  auto options = sandboxed();
  options.env["HOME"] = home.path.string();
  ferry::Executor ex(options);
  const fs::path target = home.path / ".profile";
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), write_file, target.string(), std::string("evil")));
  if (e) {
    INFO("remote: " << e->remote_type() << ": " << e->remote_message());
    CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(target));
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.the_private_temp_dir_is_writable") {
  ferry::Executor ex(sandboxed());
  std::string dir = value_of(ex.submit_with(hostile(), temp_dir));
  REQUIRE_MESSAGE(!dir.empty(), "a sandboxed worker has $TMPDIR, its private temp dir");
  const std::string path = dir + "/scratch";
  CHECK(value_of(ex.submit_with(hostile(), write_file, path, std::string("scratch data"))));
  // Read back by a task (of whichever worker: each worker has its own temp dir, so only when the
  // same worker runs it is the file there; the write above is what must work).
  CHECK(value_of(ex.submit_with(hostile(), write_bytes, dir + "/big", std::uint64_t{4 * MiB})) == 4 * MiB);
  check_pool_is_healthy(ex);
}

/// The mount points of this process's namespace (/proc/self/mountinfo's fifth field).
std::multiset<std::string> mount_points() {
  std::ifstream in("/proc/self/mountinfo");
  std::multiset<std::string> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    out.insert(point);
  }
  return out;
}

TEST_CASE("Sandbox.temp_dirs_to_hide_spares_what_the_worker_reads") {
  using ferry::detail::temp_dirs_to_hide;
  auto has = [](const std::vector<std::string>& dirs, const fs::path& dir) {
    return std::find(dirs.begin(), dirs.end(), fs::canonical(dir).string()) != dirs.end();
  };
  const fs::path tmp = fs::canonical("/tmp");
  CHECK(has(temp_dirs_to_hide({}), tmp));
  CHECK(has(temp_dirs_to_hide({"/usr/lib"}), tmp));
  CHECK_FALSE(has(temp_dirs_to_hide({(tmp / "plugins/lib").string()}), tmp));
  CHECK_FALSE(has(temp_dirs_to_hide({tmp.string()}), tmp));
  CHECK(has(temp_dirs_to_hide({tmp.string() + "foo/lib"}), tmp));  // a sibling, not under it
  CHECK(temp_dirs_to_hide({"/"}).empty());
  if (fs::is_directory("/var/tmp")) {
    CHECK_FALSE(has(temp_dirs_to_hide({"/var"}), "/var/tmp"));
    CHECK(has(temp_dirs_to_hide({"/var"}), tmp) == (fs::canonical("/var/tmp").string().rfind("/var/", 0) != 0 ||
                                                   tmp.string().rfind("/var/", 0) != 0));
  }
  // Through a link: what it names is what counts.
  support::TempDir elsewhere;
  fs::create_directory_symlink(tmp, elsewhere.path / "to-tmp");
  CHECK_FALSE(has(temp_dirs_to_hide({(elsewhere.path / "to-tmp" / "x").string()}), tmp));
}

TEST_CASE("Sandbox.tmp_var_tmp_and_dev_shm_are_its_private_directory") {
  const fs::path tmp = fs::canonical("/tmp");
  const fs::path build = fs::canonical(FERRY_TEST_HOSTILE_PLUGIN).parent_path();
  if (std::mismatch(tmp.begin(), tmp.end(), build.begin(), build.end()).first == tmp.end()) {
    // The worker must keep reading its plugins there: it leaves /tmp as it is.
    MESSAGE("not checked: the build tree lies under /tmp");
    return;
  }
  const std::multiset<std::string> mounts = mount_points();
  support::TempDir base;  // the executor's $TMPDIR: its private directory is made in there
  std::optional<ferry::Executor> ex;
  {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ex.emplace(sandboxed());
  }
  fs::path private_dir;
  for (const auto& entry : fs::directory_iterator(base.path)) private_dir = entry.path();
  REQUIRE_MESSAGE(private_dir.filename().string().rfind("ferry-sandbox-", 0) == 0, private_dir);

  CHECK(value_of(ex->submit_with(hostile(), temp_dir)) == tmp.string());
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept in a tmpfile"))) == "kept in a tmpfile");
  const std::string name = "ferry-private-tmp-" + std::to_string(::getpid());
  CHECK(value_of(ex->submit_with(hostile(), write_file, "/tmp/" + name, std::string("in /tmp"))));
  CHECK(host_read(private_dir / name) == "in /tmp");
  CHECK_FALSE(fs::exists(tmp / name));
  if (fs::is_directory("/var/tmp") && fs::canonical("/var/tmp") != tmp) {
    CHECK(value_of(ex->submit_with(hostile(), write_file, "/var/tmp/" + name + "-var", std::string("in /var/tmp"))));
    CHECK(host_read(private_dir / (name + "-var")) == "in /var/tmp");
    CHECK_FALSE(fs::exists(fs::path("/var/tmp") / (name + "-var")));
  }
  if (fs::is_directory("/dev/shm") && fs::canonical("/dev/shm") != tmp) {
    // The same directory again, under another name: a file written there lands in it, not in
    // the real /dev/shm (where a POSIX shared memory round trip would work as well).
    CHECK(value_of(ex->submit_with(hostile(), write_file, "/dev/shm/" + name + "-dev-shm", std::string("in /dev/shm"))));
    CHECK(host_read(private_dir / (name + "-dev-shm")) == "in /dev/shm");
    CHECK_FALSE(fs::exists(fs::path("/dev/shm") / (name + "-dev-shm")));
    // POSIX shared memory, which lives there, works in it.
    CHECK(value_of(ex->submit_with(hostile(), posix_shm_round_trip, "/" + name + "-shm", std::string("shared"))) == "shared");
  } else {
    MESSAGE("/dev/shm not checked: it is missing or is /tmp");
  }
  // The host's namespace has no new mount (a bind mount made in a copy of it whose mounts were
  // still shared would have reached it).
  CHECK(mount_points() == mounts);
  check_pool_is_healthy(*ex);
}

/// Kills the pool's workers and waits until as many others replaced them.
void replace_workers(ferry::Executor& ex) {
  const std::vector<int> old = ex.worker_pids();
  for (int pid : old) ::kill(pid, SIGKILL);
  CHECK(support::wait_until([&] {
    const std::vector<int> now = ex.worker_pids();
    if (now.size() < old.size()) return false;
    for (int pid : now)
      if (std::find(old.begin(), old.end(), pid) != old.end()) return false;
    return true;
  }, 10s));
}

TEST_CASE("Sandbox.a_link_a_task_plants_in_its_tmp_gives_the_next_worker_nothing") {
  // The private directory lies under the host's /tmp; shown at /tmp, its own path names an entry
  // inside itself, which a task can make a link to anywhere: a rule made through that path gave
  // the next worker write access there.
  support::TempDir base("/tmp");
  support::TempDir victim(FERRY_TEST_BINARY_DIR);
  std::optional<ferry::Executor> ex;
  {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ex.emplace(sandboxed());
  }
  fs::path private_dir;
  for (const auto& entry : fs::directory_iterator(base.path)) private_dir = entry.path();
  REQUIRE(!private_dir.empty());
  if (value_of(ex->submit_with(hostile(), temp_dir)) != fs::canonical("/tmp").string()) {
    MESSAGE("not checked: the workers do not show their directory at /tmp here");
    return;
  }
  // Its own path, as the worker sees it now: /tmp/<base>/<private> inside the private directory.
  const fs::path inside = fs::path("/tmp") / base.path.filename();
  CHECK(value_of(ex->submit_with(hostile(), make_directory, inside.string())) == 0);
  // A task can make no link there now (Landlock), but one with Landlock missing can (best
  // effort): the test plants it where the task would have, for the rule's own defence.
  CHECK(value_of(ex->submit_with(hostile(), make_symlink, victim.path.string(),
                                 (inside / private_dir.filename()).string())) == EACCES);
  fs::create_directory_symlink(victim.path, private_dir / base.path.filename() / private_dir.filename());
  replace_workers(*ex);
  auto e = failure_of<ferry::TaskError>(
      ex->submit_with(hostile(), write_file, (victim.path / "planted").string(), std::string("x")));
  if (e) CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  CHECK_FALSE(fs::exists(victim.path / "planted"));
  check_pool_is_healthy(*ex);
}

TEST_CASE("Sandbox.a_write_path_a_task_replaces_with_a_link_gives_the_next_worker_nothing") {
  // Sandbox::write names a directory and one inside it: the task may replace the inner one with
  // a link, and the next worker's rule for it followed the link.
  support::TempDir out(FERRY_TEST_BINARY_DIR);
  support::TempDir victim(FERRY_TEST_BINARY_DIR);
  fs::create_directory(out.path / "inner");
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.write = {out.path.string(), (out.path / "inner").string()};
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), remove_directory, (out.path / "inner").string())) == 0);
  // Planted by the test where the task would have, as above.
  CHECK(value_of(ex.submit_with(hostile(), make_symlink, victim.path.string(), (out.path / "inner").string())) == EACCES);
  fs::create_directory_symlink(victim.path, out.path / "inner");
  replace_workers(ex);
  auto e = failure_of<ferry::TaskError>(
      ex.submit_with(hostile(), write_file, (victim.path / "planted").string(), std::string("x")));
  if (e) CHECK(e->remote_message().find("Permission denied") != std::string::npos);
  CHECK_FALSE(fs::exists(victim.path / "planted"));
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.a_task_makes_no_link_fifo_or_device_in_its_write_directories") {
  // A link a task left in Sandbox::write reached, through the host that read or wrote the file
  // afterwards, any file of the user (a host truncating its output file truncated the one the
  // link named); a FIFO blocked that host's open for good.
  support::TempDir out(FERRY_TEST_BINARY_DIR);
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.write = {out.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), make_symlink, std::string("/etc/passwd"), (out.path / "link").string())) == EACCES);
  CHECK(value_of(ex.submit_with(hostile(), make_node, (out.path / "fifo").string(), 'f')) == EACCES);
  CHECK(value_of(ex.submit_with(hostile(), make_node, (out.path / "socket").string(), 's')) == EACCES);
  CHECK(value_of(ex.submit_with(hostile(), make_node, (out.path / "device").string(), 'c')) == EACCES);
  // Nor the whiteout a rename can leave (a device 0:0), which Landlock does not see.
  CHECK(value_of(ex.submit_with(hostile(), rename_whiteout, (out.path / "renamed").string(),
                                (out.path / "whiteout").string())) == EPERM);
  CHECK(fs::is_empty(out.path));
  // Files and directories it makes as before.
  CHECK(value_of(ex.submit_with(hostile(), make_directory, (out.path / "dir").string())) == 0);
  CHECK(value_of(ex.submit_with(hostile(), write_file, (out.path / "dir" / "file").string(), std::string("x"))));
  CHECK(support::read_file(out.path / "dir" / "file") == "x");
  // Nor in the private directory shown at /tmp.
  ferry::Executor tmp(sandboxed());
  const std::string dir = value_of(tmp.submit_with(hostile(), temp_dir));
  CHECK(value_of(tmp.submit_with(hostile(), make_symlink, std::string("/etc/passwd"), dir + "/link")) == EACCES);
  CHECK(value_of(tmp.submit_with(hostile(), make_node, dir + "/fifo", 'f')) == EACCES);
  CHECK(value_of(tmp.submit_with(hostile(), rename_whiteout, dir + "/renamed", dir + "/whiteout")) == EPERM);
  CHECK(value_of(tmp.submit_with(hostile(), tmpfile_round_trip, std::string("y"))) == "y");
}

TEST_CASE("Sandbox.private_tmp_reaches_no_shared_mount_of_the_host") {
  // Where / is a shared mount (systemd makes it so), a worker's copy of the namespace would pass
  // its mounts back unless it made its own private first. This machine shares none: a child of
  // the test makes them shared in a namespace of its own, then runs the pool there.
  if (::geteuid() != 0) {
    MESSAGE("not root: no mount namespace for the test to share its mounts in");
    return;
  }
  const int code = support::exit_code_of_child([] {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_SHARED, nullptr) != 0) return 2;
    const std::multiset<std::string> before = mount_points();
    ferry::Executor ex(sandboxed());
    auto f = ex.submit_with(hostile(), tmpfile_round_trip, std::string("x"));
    if (!f.wait_for(future_wait) || f.get() != "x") return 3;
    return mount_points() != before ? 4 : 0;
  }, 60s);
  CHECK_MESSAGE(code == 0, "step " << code << " failed (2: sharing the mounts, 3: the task, 4: a mount came back, "
                                           "101: an exception, -1: no end)");
}

TEST_CASE("Sandbox.tmp_stays_when_the_worker_reads_under_it") {
  // A directory to read under /tmp (plugins built there, say): hiding /tmp would hide it.
  support::TempDir dir("/tmp");
  const fs::path in = fs::canonical(dir.path);
  host_write(in / "input.txt", "under /tmp");
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.read = {in.string()};
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), read_file, (in / "input.txt").string())) == "under /tmp");
  CHECK(value_of(ex.submit_with(hostile(), temp_dir)) != fs::canonical("/tmp").string());
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.write_dirs_are_writable") {
  support::TempDir out;
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.write = {out.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), write_file, (out.path / "result.txt").string(), std::string("written by the task"))));
  CHECK(host_read(out.path / "result.txt") == "written by the task");
  CHECK(value_of(ex.submit_with(hostile(), read_file, (out.path / "result.txt").string())) == "written by the task");
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.read_dirs_are_readable") {
  support::TempDir in;
  host_write(in.path / "input.txt", "given to the task");
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.read = {in.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), read_file, (in.path / "input.txt").string())) == "given to the task");
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.plugins_keep_loading") {
  ferry::Executor ex(sandboxed());
  // By function pointer (the library this test linked), by name from the plugin directory (the
  // math plugin, loaded only now, after the sandbox is up), by plugin-qualified name, by TaskRef.
  CHECK(value_of(ex.submit_with(hostile(), hostile_pid)) > 0);
  CHECK(value_of(ex.submit<int>("math:square", 9)) == 81);
  CHECK(value_of(ex.submit<int>("hostile:hostile_pid")) > 0);
  ferry::TaskRef ref{.library = FERRY_TEST_HOSTILE_PLUGIN, .name = "exec_shell"};
  // A TaskRef to a plugin file loads it; the task itself is then denied as usual.
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with<int>(hostile(), ref));
  if (e) check_violation(*e, "exec_shell", "execve");
  ferry::TaskRef crash_ref{.library = FERRY_TEST_CRASH_PLUGIN, .name = "open_one_descriptor"};
  CHECK(value_of(ex.submit<int>(crash_ref, 5)) == 5);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.shared_memory_arguments_keep_working") {
  ferry::Executor ex(sandboxed());
  const std::size_t n = 3 * MiB + 17;  // over the 1 MiB threshold: a memfd passed to the worker
  std::vector<char> big(n, 3);
  CHECK(value_of(ex.submit_with(hostile(), sum_bytes, big)) == 3 * std::uint64_t{n});
  std::vector<char> small(1000, 2);
  CHECK(value_of(ex.submit_with(hostile(), sum_bytes, small)) == 2000);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.network_true_allows_the_loopback") {
  Listener listener;
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.network = true;
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), connect_loopback, listener.port)) == listener.port);
  CHECK(listener.accepted_within(2000ms));
  // What name lookups read is readable then (and only then).
  if (fs::exists("/etc/services")) {
    CHECK_FALSE(value_of(ex.submit_with(hostile(), read_file, std::string("/etc/services"))).empty());
    ferry::Executor closed(sandboxed());
    CHECK(failure_of<ferry::TaskError>(closed.submit_with(hostile(), read_file, std::string("/etc/services"))).has_value());
  }
  // exec is still denied.
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), exec_shell));
  if (e) check_violation(*e, "exec_shell", "execve");
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.exec_true_allows_exec") {
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.exec = true;
  ferry::Executor ex(contained({}, sandbox));
  CHECK(value_of(ex.submit_with(hostile(), exec_shell)) == 7);
  // posix_spawn and system set SIGSYS back to its default in the child: that must not kill it.
  CHECK(value_of(ex.submit_with(hostile(), spawn_and_system)) == 30);
  // The network is still denied.
  Listener listener;
  auto e = failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), connect_loopback, listener.port));
  if (e) check_violation(*e, "connect_loopback", "socket");
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.violations_in_a_row_keep_the_pool_at_its_size") {
  PausedChild target;
  Listener listener;
  ferry::Executor ex(sandboxed());
  // While the violations happen, a normal task on the other worker is not disturbed.
  auto bystander = ex.submit<int>("math:slow_identity", 42, 500);
  for (int round = 0; round < 2; ++round) {
    CHECK(failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), connect_loopback, listener.port)).has_value());
    CHECK(failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), exec_shell)).has_value());
    CHECK(failure_of<ferry::SandboxViolationError>(ex.submit_with(hostile(), ptrace_pid, target.pid)).has_value());
  }
  CHECK(value_of(bystander) == 42);
  check_pool_is_healthy(ex);
  // Each violation ended its worker on purpose: recycled for "sandbox" in the stats, not crashed.
  CHECK(support::wait_until([&] {
    auto s = ex.stats();
    auto it = s.recycled_by_reason.find("sandbox");
    return it != s.recycled_by_reason.end() && it->second == 6;
  }));
  CHECK(ex.stats().workers_crashed == 0);
}

// ================================================================================================
// Limits on: going past one ends the task with ResourceLimitError naming it, the worker is
// replaced, the pool keeps its size.
// ================================================================================================

TEST_CASE("Limits.memory_stops_an_allocation_with_ResourceLimitError") {
#if FERRY_TEST_SHADOW_MEMORY
  // Not under AddressSanitizer (nor ThreadSanitizer): the memory limit is RLIMIT_DATA, and the
  // sanitizer maps terabytes of shadow memory at startup, which RLIMIT_DATA counts: under any
  // sane limit, every allocation of the worker would fail. The only case guarded so.
  MESSAGE("skipped under a sanitizer (RLIMIT_DATA cannot hold its shadow memory)");
#else
  ferry::Limits limits;
  limits.memory = 256 * MiB;
  ferry::Executor ex(contained(limits));
  // Touched: a missing limit costs 1 GiB of real memory, no more.
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), allocate, 1 * GiB, true));
  if (e) check_limit_error(*e, "allocate", "memory", 256 * MiB, "256 MiB");
  // Under the limit, allocations work.
  CHECK(value_of(ex.submit_with(hostile(), allocate, 16 * MiB, true)) == 16 * MiB);
  check_pool_is_healthy(ex);
#endif
}

TEST_CASE("Limits.memory_stops_a_large_json_result_with_ResourceLimitError") {
#if FERRY_TEST_SHADOW_MEMORY
  MESSAGE("skipped under a sanitizer (no memory limit there)");
#else
  // The JSON entry point writes its line with RapidJSON, whose allocator returned NULL past the
  // limit and was written through: the worker died of SIGSEGV (TerminatedWorkerError).
  ferry::Limits limits;
  limits.memory = 128 * MiB;
  ferry::Executor ex(contained(limits));
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_json("hostile:bytes_result", "{\"value0\": 20971520}"));
  if (e) CHECK(e->limit() == "memory");
  CHECK(value_of(ex.submit_json("hostile:bytes_result", "{\"value0\": 1048576}")).size() > 1048576);
  check_pool_is_healthy(ex);
#endif
}

TEST_CASE("Sandbox.an_initializer_that_fills_the_memory_cgroup_is_a_start_failure") {
  auto options = memory_ceiling_of_128_mib();
  if (!options) return;
  ferry::ExecutorOptions o = *options;
  o.max_workers = 1;
  SUBCASE("in a page fault") {
    // Every worker's initializer maps and touches 1 GiB of shared memory under a ceiling of
    // 128 MiB: the first call got ResourceLimitError for a task that never ran, and the pool went
    // on starting workers for each call.
    o.initializer = ferry::Call(share_memory, std::uint64_t{1 * GiB}, 0);
    ferry::Executor ex(o);
    auto e = failure_of<ferry::BrokenProcessPool>(ex.submit_with(hostile(), hostile_pid));
    if (e) CHECK_MESSAGE(std::string(e->what()).find("while its initializer ran") != std::string::npos, e->what());
    CHECK(ex.stats().workers_started <= 4);
  }
  SUBCASE("in a system call: the call ends, at the ceiling, never hangs") {
    // A write to a memfd, kept: its reply cannot be sent (ENOBUFS in the full cgroup), and the
    // worker must not wait for tasks the host never gives a worker whose initializer has not
    // answered: it exits (71, its memory cgroup full), a start failure. (A reply that still fits
    // leaves a worker whose first call meets the ceiling: ResourceLimitError.)
    // Not covered here: that the worker exits right after the failed reply. Its next read fails
    // as well here, which ends it with the same exit code 71 (the code comes from the failed
    // reply's errno), so this subcase passes without that exit too; the exit matters for a
    // channel that could still be read, which no test makes.
    o.initializer = ferry::Call(write_shared, std::uint64_t{1 * GiB}, true);
    ferry::Executor ex(o);
    auto f = ex.submit_with(hostile(), hostile_pid);
    REQUIRE_MESSAGE(static_cast<bool>(f.wait_for(future_wait)), "the call did not end: the pool hung");
    try {
      f.get();
      FAIL_CHECK("the call returned a value");
    } catch (const ferry::BrokenProcessPool& e) {
      const std::string what = e.what();
      CHECK_MESSAGE(what.find("while its initializer ran") != std::string::npos, what);
      CHECK_MESSAGE(what.find("memory cgroup") != std::string::npos, what);  // the ceiling, named
    } catch (const ferry::ResourceLimitError& e) {
      MESSAGE("the initializer's reply fitted: its worker's first call met the ceiling");
      CHECK(e.limit() == "memory");
    }
  }
}

TEST_CASE("Sandbox.memory_filled_in_a_system_call_ends_the_call_with_ResourceLimitError") {
  auto options = memory_ceiling_of_128_mib();
  if (!options) return;
  // write() to a memfd is charged in the system call: at the ceiling it fails with ENOMEM, and the
  // kernel sends no OOM notification. A task that copes and lets the memory go keeps its value; one
  // that keeps it leaves the cgroup full, the worker's reply failed, and the call ended with
  // TerminatedWorkerError ("exited with code 67") instead of the limit it met.
  ferry::Executor ex(*options);
  const std::uint64_t written = value_of(ex.submit_with(hostile(), write_shared, std::uint64_t{1 * GiB}, false));
  CHECK(written > 0);
  CHECK(written < 128 * MiB);
  // A reply that still fits the full cgroup goes through (design §15): the kernel may have
  // reclaimed a page (the worker's file pages) meanwhile, as under make test's load once in a
  // run. Each round ends with the limit or, so, its value; the limit at least once.
  int limits_met = 0;
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    auto f = ex.submit_with(hostile(), write_shared, std::uint64_t{1 * GiB}, true);
    REQUIRE(f.wait_for(future_wait));
    try {
      const std::uint64_t kept = f.get();
      MESSAGE("round " << round << ": the reply fitted (" << kept << " bytes kept)");
      CHECK(kept < 128 * MiB);
    } catch (const ferry::ResourceLimitError& e) {
      ++limits_met;
      check_limit_error(e, "write_shared", "memory", 128 * MiB, "128 MiB");
    }  // any other error fails the case (TerminatedWorkerError, exit 67, before)
  }
  CHECK(limits_met >= 1);
  check_pool_is_healthy(ex);
}

TEST_CASE("Sandbox.every_thread_of_a_sandboxed_worker_is_under_its_filter") {
#if FERRY_TEST_SHADOW_MEMORY
  MESSAGE("skipped under a sanitizer (its own threads start before the sandbox)");
#else
  // The seccomp filter, Landlock and the dropped capabilities bind the thread that set them up and
  // those it starts afterwards: a thread of the worker that ran before would be outside the
  // sandbox, in the task's reach (the same memory).
  ferry::Executor ex(sandboxed());
  const std::string threads = value_of(ex.submit_with(hostile(), unfiltered_threads));
  CHECK_MESSAGE(threads.rfind("0/", 0) == 0, "threads without the filter / all: " << threads);
  // "0/0" would be a task that saw no thread at all (not even its own): /proc unreadable.
  const auto slash = threads.find('/');
  REQUIRE_MESSAGE(slash != std::string::npos, threads);
  CHECK_MESSAGE(std::atoi(threads.c_str() + slash + 1) >= 1, "threads without the filter / all: " << threads);
#endif
}

TEST_CASE("Sandbox.memory_limit_counts_shared_memory_where_a_memory_cgroup_can_be_made") {
  auto options = memory_ceiling_of_128_mib();
  if (!options) return;
  // RLIMIT_DATA counts private memory only: shared anonymous memory, a memfd and a System V
  // segment went past it unseen. The sandbox's memory cgroup counts them all. Each task touches
  // 1 GiB at most when the ceiling is missing. The fourth forks first: a watcher inside the
  // cgroup stopped with the task at its first copy-on-write page, and the call never ended.
  ferry::Executor ex(*options);
  std::vector<int> ended;
  for (int how : {0, 1, 2, 3}) {
    INFO("share_memory how " << how);
    auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), share_memory, 1 * GiB, how));
    if (e) {
      check_limit_error(*e, "share_memory", "memory", 128 * MiB, "128 MiB");
      CHECK(std::string(e->what()).find("memory cgroup") != std::string::npos);
      ended.push_back(e->pid());
    }
  }
  // Under the ceiling, shared memory works.
  CHECK(value_of(ex.submit_with(hostile(), share_memory, 16 * MiB, 0)) == 16 * MiB);
  // Large results do not stay charged to the worker that made them: in shared memory, the pages
  // of a result the host holds (a future not read yet) stayed in the worker's cgroup. Six results
  // of 16 MiB held, then 90 MiB of a task's own under 128 MiB.
  std::vector<ferry::Future<std::string>> held;
  for (int i = 0; i < 6; ++i) held.push_back(ex.submit_with(hostile(), bytes_result, 16 * MiB));
  for (auto& f : held) REQUIRE(static_cast<bool>(f.wait_for(future_wait)));
  CHECK(value_of(ex.submit_with(hostile(), allocate, 90 * MiB, true)) == 90 * MiB);
  for (auto& f : held) CHECK(value_of(f).size() == 16 * MiB);
  check_pool_is_healthy(ex);
  // The guardian of each worker that ended removed its memory cgroup
  // (<own memory cgroup>/ferry/<pid>.<pid namespace>.<random>).
  const std::string parent = support::own_cgroup_v1("memory");
  REQUIRE_FALSE(parent.empty());
  for (int pid : ended) {
    const fs::path base = fs::path(parent) / "ferry";
    CHECK_MESSAGE(eventually([&] { return support::worker_cgroups(base, pid).empty(); }, 10s),
                  "a memory cgroup of worker " << pid << " is still in " << base);
  }
}

TEST_CASE("Limits.cpu_time_stops_a_spinning_task_with_ResourceLimitError") {
  ferry::Limits limits;
  set_seconds(limits.cpu_time, 1);
  ferry::Executor ex(contained(limits));
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), spin_cpu, 5));
  if (e) check_limit_error(*e, "spin_cpu", "cpu_time", 1, "1 s of CPU time");
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.a_tasks_own_cpu_time_in_a_sandbox_is_at_most_the_executors") {
  // In a sandbox a task's own limits may only be lower than the executor's: its own cpu_time of
  // 30 s was honoured past the executor's 1 s.
  ferry::Limits limits;
  set_seconds(limits.cpu_time, 1);
  ferry::Executor ex(contained(limits, sandbox_on()));
  ferry::Limits own;
  set_seconds(own.cpu_time, 30);
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(own), spin_cpu, 5));
  if (e) check_limit_error(*e, "spin_cpu", "cpu_time", 1, "1 s of CPU time");
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.a_thread_a_task_leaves_spinning_ends_its_idle_worker") {
  // cpu_time was measured only while a call ran: a task that returned at once and left a thread
  // spinning used a CPU without bound while its worker idled (a review's used 4.6 s in 5 s). Its
  // worker is held to that call's limit between calls, and retired past it.
  ferry::Limits limits;
  set_seconds(limits.cpu_time, 1);
  auto o = contained(limits);
  o.max_workers = 1;
  ferry::Executor ex(o);
  const int pid = value_of(ex.submit_with(hostile(), leave_spinning_thread, 60));
  CHECK_MESSAGE(eventually(
                    [&] {
                      const std::vector<int> now = ex.worker_pids();
                      return std::find(now.begin(), now.end(), pid) == now.end();
                    },
                    20s),
                "worker " << pid << " still idles with a thread spinning");
  CHECK(ex.stats().workers_stopped == 1);
  CHECK(ex.stats().workers_crashed == 0);
  CHECK(value_of(ex.submit_with(hostile(), hostile_pid)) != pid);  // a fresh worker, no call blamed
}

/// Skips (true, with a message) where a worker's descendants' CPU time cannot be measured: only a
/// worker with a cgroup of its own (root) has it counted.
bool children_cpu_time_unmeasured() {
  if (ferry::detail::containment_support().root) return false;
  MESSAGE("skipped: not root (a task's child processes count against cpu_time only in the worker's cgroup)");
  return true;
}

TEST_CASE("Limits.cpu_time_counts_the_child_processes_a_task_waits_for") {
  // The worker's own CPU time was the measure: a task that forked children to spin and waited
  // for them used no CPU of its own, and ran for as long as it liked under a cpu_time of 1 s.
  if (children_cpu_time_unmeasured()) return;
  ferry::Limits limits;
  set_seconds(limits.cpu_time, 1);
  limits.processes = 16;
  ferry::Executor ex(contained(limits, sandbox_on()));
  const ferry::TaskRef spin_in_children{.library = FERRY_TEST_CRASH_PLUGIN, .name = "spin_in_children"};
  // Each child ends itself after 20 s: a missing limit returns their pids then.
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with<std::vector<int>>(hostile(), spin_in_children, 2, 20, true));
  if (e) check_limit_error(*e, "spin_in_children", "cpu_time", 1, "1 s of CPU time");
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.cpu_time_counts_the_child_processes_a_task_leaves_running") {
  // Children left spinning when the task returned ran on while their worker idled: the idle
  // worker is held to its last call's cpu_time, children included, and retired past it (its
  // guardian then ends them).
  if (children_cpu_time_unmeasured()) return;
  ferry::Limits limits;
  set_seconds(limits.cpu_time, 1);
  limits.processes = 16;
  auto o = contained(limits, sandbox_on());
  o.max_workers = 1;
  ferry::Executor ex(o);
  const ferry::TaskRef spin_in_children{.library = FERRY_TEST_CRASH_PLUGIN, .name = "spin_in_children"};
  KillLeftovers leftovers;
  const std::vector<int> children = value_of(ex.submit_with<std::vector<int>>(hostile(), spin_in_children, 2, 30, false));
  leftovers.add(std::vector<pid_t>(children.begin(), children.end()));
  REQUIRE(children.size() == 2);
  CHECK_MESSAGE(eventually([&] { return all_gone(std::vector<pid_t>(children.begin(), children.end())); }, 15s),
                "the children the task left spinning still run");
  CHECK(ex.stats().workers_crashed == 0);
  CHECK(ex.submit<int>("math:square", 12).get() == 144);
}

TEST_CASE("Limits.cpu_time_too_long_for_the_tick_count_is_no_limit") {
  // 2^62 s times 100 ticks a second wrapped to 0 ticks: the call was killed at its first sample.
  ferry::Executor ex(contained({.cpu_time = std::chrono::seconds(std::int64_t{1} << 62)}));
  CHECK(value_of(ex.submit_with(hostile(), spin_cpu, 1)) == 1);
}

TEST_CASE("Limits.processes_stops_a_fork_bomb_with_ResourceLimitError") {
  ferry::Limits limits;
  limits.processes = 32;
  ferry::Executor ex(contained(limits));
  // 1000: a missing limit leaves 1000 pausing processes (each ends itself within 30 s; this case
  // kills those it finds under the workers).
  KillLeftovers leftovers;
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), fork_bomb, 1000));
  leftovers.add(descendants_of(ex.worker_pids()));
  if (e) check_limit_error(*e, "fork_bomb", "processes", 32, "32");
  // Under the limit, forking works.
  CHECK(value_of(ex.submit_with(hostile(), exec_shell)) == 7);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.processes_in_a_sandbox_hold_when_a_task_writes_its_cgroup") {
  // As root the worker keeps its pids cgroup's pids.max open to set each task's limit, and the
  // task (the same process) wrote "max" through that descriptor: 20 forks of 20 under a limit of
  // 5. In a sandbox the executor's limit is a ceiling on the cgroup above, which nothing in the
  // worker holds open, and the cgroup's own pids.max is written by the guardian (a task's own
  // limit): the task finds no descriptor to write.
  if (ferry::detail::containment_support().processes != "pids cgroup") {
    MESSAGE("skipped: processes are limited by " << ferry::detail::containment_support().processes
                                                 << " here, not by a pids cgroup");
    return;
  }
  ferry::Limits limits;
  limits.processes = 5;
  ferry::Executor ex(contained(limits, sandbox_on()));
  REQUIRE(ex.warm_up(30s));
  const std::vector<int> before = ex.worker_pids();
  KillLeftovers leftovers;
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), raise_pids_max_and_fork, 20));
  leftovers.add(descendants_of(before));
  if (e) CHECK_MESSAGE(e->remote_message().find("no writable pids.max") != std::string::npos, e->what());
  // And what a task forks is still held by the ceiling.
  const int forked = value_of(ex.submit_with(hostile(), fork_until_refused, 20));
  leftovers.add(descendants_of(ex.worker_pids()));
  CHECK(forked >= 1);
  CHECK(forked <= 5);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.a_tasks_own_processes_limit_in_a_sandbox_holds_when_it_writes_its_cgroup") {
  // A task's own processes limit (SubmitOptions::limits) was written into the pids.max the
  // worker kept open for it, and the task (the same process) wrote "max" there: 20 forks of 20
  // under its own limit of 5, the executor having none. In a sandbox the worker now closes that
  // descriptor once it wrote a task's own limit; the task tries every way to it it can name.
  if (ferry::detail::containment_support().processes != "pids cgroup") {
    MESSAGE("skipped: processes are limited by " << ferry::detail::containment_support().processes
                                                 << " here, not by a pids cgroup");
    return;
  }
  ferry::Executor ex(contained({}, sandbox_on()));
  REQUIRE(ex.warm_up(30s));
  const std::vector<int> before = ex.worker_pids();
  KillLeftovers leftovers;
  ferry::Limits own;
  own.processes = 5;
  const int forked = value_of(ex.submit_with(hostile(own), loosen_pids_max_and_fork, 20));
  leftovers.add(descendants_of(before));
  CHECK(forked >= 1);
  CHECK(forked <= 5);
  // A call with the executor's limits (no processes limit) is not held to the task's.
  CHECK(value_of(ex.submit_with(hostile(), fork_until_refused, 10)) == 10);
  leftovers.add(descendants_of(ex.worker_pids()));
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.a_tasks_own_memory_limit_in_a_sandbox_holds_when_it_raises_its_soft_limit") {
#if FERRY_TEST_SHADOW_MEMORY
  MESSAGE("skipped under a sanitizer (no memory limit there)");
#else
  // A task's own memory limit was a soft RLIMIT_DATA under the executor's hard one (here none):
  // the task raised it back with setrlimit and allocated 512 MiB under its own limit of 64 MiB.
  // In a sandbox it is the hard limit too.
  ferry::Executor ex(contained({}, sandbox_on()));
  ferry::Limits own;
  own.memory = 64 * MiB;
  auto e = failure_of<ferry::ResourceLimitError>(
      ex.submit_with(hostile(own), raise_memory_limit_and_allocate, 512 * MiB));
  if (e) check_limit_error(*e, "raise_memory_limit_and_allocate", "memory", 64 * MiB, "64 MiB");
  // A call with the executor's limits (none) is not held to the task's.
  CHECK(value_of(ex.submit_with(hostile(), allocate, 256 * MiB, true)) == 256 * MiB);
  check_pool_is_healthy(ex);
#endif
}

/// The pid of the worker that ran `f` (Future::info()), after its value was checked.
template <class T>
int worker_of(const ferry::Future<T>& f) {
  REQUIRE(f.info());
  return f.info()->worker_pid;
}

TEST_CASE("Limits.a_sandboxed_worker_lowered_to_a_tasks_own_limits_runs_no_call_above_them") {
  // In a sandbox a task's own limits are its worker's hard limits from then on: no later call can
  // raise them. A call with higher limits (the executor's, or a higher own) must run on another
  // worker, with its own; one with the same limits may stay (a batch costs no worker start each).
  // One worker, so that every call would meet the lowered one; calls sent one by one, then
  // pipelined (the choice is made when a call is sent, behind others).
  auto options = contained({}, sandbox_on());
  options.max_workers = 1;
  SUBCASE("open_files") {
    ferry::Executor ex(options);
    ferry::Limits own;
    own.open_files = 64;
    auto a = ex.submit_with(hostile(own), leak_files, 8);
    CHECK(value_of(a) == 8);
    auto b = ex.submit_with(hostile(own), leak_files, 8);
    CHECK(value_of(b) == 8);
    CHECK(worker_of(b) == worker_of(a));
    // A higher limit of its own, then the executor's (none: the worker's as it started), each
    // on a worker that can give it (the tasks leave their descriptors open).
    ferry::Limits higher;
    higher.open_files = 400;
    auto c = ex.submit_with(hostile(higher), leak_files, 100);
    CHECK(value_of(c) == 100);
    CHECK(worker_of(c) != worker_of(a));
    auto d = ex.submit_with(hostile(), leak_files, 500);
    CHECK(value_of(d) == 500);
    CHECK(worker_of(d) != worker_of(c));
    // A lower one holds on a worker that held a higher one.
    ferry::Limits lower;
    lower.open_files = 32;
    auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(lower), leak_files, 100));
    if (e) CHECK(e->value() == 32);
    CHECK(eventually([&] { return ex.worker_pids().size() == 1; }, 10s));
    CHECK(ex.stats().workers_crashed == 0);
  }
#if !FERRY_TEST_SHADOW_MEMORY
  SUBCASE("memory") {
    ferry::Executor ex(options);
    ferry::Limits own;
    own.memory = 64 * MiB;
    auto a = ex.submit_with(hostile(own), allocate, 16 * MiB, true);
    CHECK(value_of(a) == 16 * MiB);
    auto b = ex.submit_with(hostile(own), allocate, 16 * MiB, true);
    CHECK(value_of(b) == 16 * MiB);
    CHECK(worker_of(b) == worker_of(a));
    auto c = ex.submit_with(hostile(), allocate, 256 * MiB, true);
    CHECK(value_of(c) == 256 * MiB);
    CHECK(worker_of(c) != worker_of(a));
    ferry::Limits lower, higher;
    lower.memory = 32 * MiB;
    higher.memory = 192 * MiB;
    CHECK(value_of(ex.submit_with(hostile(lower), allocate, 8 * MiB, true)) == 8 * MiB);
    CHECK(value_of(ex.submit_with(hostile(higher), allocate, 96 * MiB, true)) == 96 * MiB);
    CHECK(eventually([&] { return ex.worker_pids().size() == 1; }, 10s));
    CHECK(ex.stats().workers_crashed == 0);
  }
  SUBCASE("memory, pipelined") {
    // Four calls in flight per worker: each is sent behind the others.
    support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "4");
    ferry::Executor ex(options);
    ferry::Limits own;
    own.memory = 64 * MiB;
    // Alternating: every call with its own limits, none lost.
    std::vector<ferry::Future<std::uint64_t>> mixed;
    for (int i = 0; i < 8; ++i)
      mixed.push_back(i % 2 == 0 ? ex.submit_with(hostile(own), allocate, 16 * MiB, true)
                                 : ex.submit_with(hostile(), allocate, 128 * MiB, true));
    for (int i = 0; i < 8; ++i) CHECK(value_of(mixed[i]) == (i % 2 == 0 ? 16 * MiB : 128 * MiB));
    // And the lowered limit holds for its own calls.
    auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(own), allocate, 128 * MiB, true));
    if (e) CHECK(e->value() == 64 * MiB);
    CHECK(eventually([&] { return ex.worker_pids().size() == 1; }, 10s));
    CHECK(ex.stats().workers_crashed == 0);
  }
#endif
}

TEST_CASE("Limits.calls_that_wait_for_a_worker_above_a_lowered_one_complete_at_shutdown") {
  // Calls with the executor's limits queued behind calls that lowered the only worker wait for a
  // fresh one; a shutdown that waits still runs them all, and with max_tasks_per_child each
  // worker's last call is still its own.
  auto options = contained({}, sandbox_on());
  options.max_workers = 1;
  SUBCASE("plain") {}
  SUBCASE("max_tasks_per_child") { options.max_tasks_per_child = 3; }
  ferry::Executor ex(options);
  ferry::Limits own;
  own.open_files = 64;
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 6; ++i)
    // (Those with their own limit open nothing: a worker lowered after a call that left its 100
    // descriptors open would refuse a new one.)
    fs.push_back(i % 3 == 2 ? ex.submit_with(hostile(), leak_files, 100) : ex.submit_with(hostile(own), leak_files, 0));
  ex.shutdown({.wait = true});
  for (int i = 0; i < 6; ++i) CHECK(value_of(fs[static_cast<std::size_t>(i)]) == (i % 3 == 2 ? 100 : 0));
  CHECK(ex.stats().workers_crashed == 0);
}

/// A sandboxed pool of two workers, both up, whose first worker runs a call of `first` limits
/// that the test holds (a FIFO: read_file blocks until the test opens its other end) while the
/// second runs one of `second`; both have returned when it returns. Each worker is then lowered
/// to those limits where they are a call's own.
struct TwoLoweredWorkers {
  support::TempDir dir;
  fs::path fifo = dir.path / "fifo";
  std::unique_ptr<ferry::Executor> ex;
  TwoLoweredWorkers(const ferry::Limits& first, const ferry::Limits& second) {
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    ferry::Sandbox sandbox = sandbox_on();
    sandbox.read = {dir.path.string()};
    ex = std::make_unique<ferry::Executor>(contained({}, sandbox));
    REQUIRE(ex->warm_up(30s));
    auto held = ex->submit_with(hostile(first), read_file, fifo.string());
    int write_fd = -1;
    REQUIRE_MESSAGE(eventually(
                        [&] {
                          write_fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                          return write_fd >= 0;
                        },
                        30s),
                    "the held call did not start");
    auto other = ex->submit_with(hostile(second), hostile_pid);
    const bool other_ended = static_cast<bool>(other.wait_for(future_wait));
    (void)!::write(write_fd, "released", 8);
    ::close(write_fd);
    REQUIRE(other_ended);
    CHECK(value_of(held) == "released");
    CHECK(worker_of(held) != worker_of(other));
    REQUIRE(ex->stats().workers_started == 2);
  }
};

TEST_CASE("Limits.a_call_that_fits_no_lowered_worker_replaces_one_not_every_one") {
  // A burst of calls with their own limits lowered both workers of a sandboxed pool: a call with
  // the executor's limits then retired both, and the pool restarted whole for one call. One
  // worker is replaced; the other, still lowered, is kept for calls of its limits.
  ferry::Limits own;
  own.open_files = 64;
  TwoLoweredWorkers pool(own, own);
  ferry::Executor& ex = *pool.ex;
  auto call = ex.submit_with(hostile(), hostile_pid);
  const int ran_on = value_of(call);
  CHECK(ran_on == worker_of(call));
  REQUIRE(ex.warm_up(30s));
  // Every worker retired has ended (and is counted): two left, the lowered one and a fresh one.
  REQUIRE(eventually([&] { return ex.stats().workers_alive == 2; }, 10s));
  const ferry::ExecutorStats stats = ex.stats();
  CHECK(stats.workers_started == 3);
  CHECK(stats.workers_stopped == 1);
  CHECK(stats.workers_crashed == 0);
}

TEST_CASE("Limits.shrinking_a_sandboxed_pool_retires_the_worker_lowered_to_a_tasks_own_limits_first") {
  // resize() retired the least busy worker, whichever it was: with one lowered to a call's own
  // limits and one not, both idle, it kept the lowered one, and the next call with the executor's
  // limits retired it and started another. The lowered one goes; that call runs at once.
  ferry::Limits own;
  own.open_files = 64;
  TwoLoweredWorkers pool({}, own);  // the first worker keeps the executor's limits
  ferry::Executor& ex = *pool.ex;
  const std::vector<int> before = ex.worker_pids();
  ex.resize(1);
  auto call = ex.submit_with(hostile(), hostile_pid);
  const int ran_on = value_of(call);
  CHECK(ran_on == worker_of(call));
  CHECK(std::find(before.begin(), before.end(), worker_of(call)) != before.end());
  REQUIRE(eventually([&] { return ex.stats().workers_alive == 1; }, 10s));
  const ferry::ExecutorStats stats = ex.stats();
  CHECK(stats.workers_started == 2);
  CHECK(stats.workers_stopped == 1);
  CHECK(stats.workers_crashed == 0);
}

TEST_CASE("Limits.a_call_waiting_for_a_busy_worker_runs_on_a_fresh_one_while_a_lowered_one_idles") {
  // A sandboxed worker lowered to a call's own limits idles, the other is busy (held until the
  // end): a call with the executor's limits must not wait behind the busy one (for good behind a
  // call that hangs; an unsandboxed pool would run it on the idle worker). No call queued behind
  // it fits the lowered one: that one is replaced, and the fresh worker runs the waiting call
  // (3825fd7, kept when a waiting call stopped retiring every lane it does not fit).
  support::TempDir dir;
  const fs::path fifo = dir.path / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  ferry::Sandbox sandbox = sandbox_on();
  sandbox.read = {dir.path.string()};
  ferry::Executor ex(contained({}, sandbox));
  REQUIRE(ex.warm_up(30s));
  ferry::Limits own;
  own.open_files = 64;
  auto lowering = ex.submit_with(hostile(own), hostile_pid);
  const int lowered = value_of(lowering);
  auto held = ex.submit_with(hostile(), read_file, fifo.string());
  int write_fd = -1;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        write_fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                        return write_fd >= 0;
                      },
                      30s),
                  "the held call did not start");
  auto waiting = ex.submit_with(hostile(), hostile_pid);
  const int ran_waiting = value_of(waiting);
  CHECK_FALSE(held.ready());  // it did not wait for the held call
  (void)!::write(write_fd, "released", 8);
  ::close(write_fd);
  CHECK(value_of(held) == "released");
  CHECK(ran_waiting != lowered);
  CHECK(ran_waiting != worker_of(held));
  CHECK(ex.stats().workers_started == 3);
}

TEST_CASE("Limits.processes_a_task_that_copes_keeps_its_value_and_its_worker_is_replaced") {
  // A task whose fork is refused at the limit and that goes on (returns normally) keeps its
  // value; its worker then leaves (what the task left running would count against the next
  // task's limit), with no other call blamed, and a fresh worker takes its place.
  ferry::Limits limits;
  limits.processes = 8;
  ferry::Executor ex(contained(limits));
  REQUIRE(ex.warm_up(30s));
  const std::vector<int> before = ex.worker_pids();
  KillLeftovers leftovers;
  int forked = value_of(ex.submit_with(hostile(), fork_until_refused, 1000));
  std::vector<pid_t> children = descendants_of(before);
  leftovers.add(children);
  CHECK(forked >= 1);
  CHECK(forked <= 8);
  CHECK_MESSAGE(eventually([&] {
                  auto now = ex.worker_pids();
                  return std::any_of(before.begin(), before.end(), [&](int p) {
                    return std::find(now.begin(), now.end(), p) == now.end();
                  });
                }, 10s),
                "the worker whose task met its processes limit is still in the pool");
  CHECK_MESSAGE(eventually([&] { return all_gone(children); }, descendants_end_within),
                count_left(children) << " of " << children.size() << " forked processes outlived their worker");
  // The next task has the whole limit again.
  CHECK(value_of(ex.submit_with(hostile(), fork_until_refused, 4)) == 4);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.open_files_stops_a_descriptor_leak_with_ResourceLimitError") {
  ferry::Limits limits;
  limits.open_files = 64;
  ferry::Executor ex(contained(limits));
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), leak_files, 1000));
  if (e) check_limit_error(*e, "leak_files", "open_files", 64, "64");
  // Under the limit, opening files works.
  CHECK(value_of(ex.submit_with(hostile(), leak_files, 10)) == 10);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.file_size_stops_a_write_with_ResourceLimitError") {
  support::TempDir dir;
  ferry::Limits limits;
  limits.file_size = 1 * MiB;
  ferry::Executor ex(contained(limits));
  auto e = failure_of<ferry::ResourceLimitError>(
      ex.submit_with(hostile(), write_bytes, (dir.path / "big").string(), std::uint64_t{8 * MiB}));
  if (e) check_limit_error(*e, "write_bytes", "file_size", 1 * MiB, "1 MiB");
  // No byte past the limit reached the file.
  std::error_code ec;
  auto size = fs::file_size(dir.path / "big", ec);
  if (!ec) CHECK(size <= 1 * MiB);
  // Under the limit, writing works.
  CHECK(value_of(ex.submit_with(hostile(), write_bytes, (dir.path / "small").string(), std::uint64_t{256 * 1024})) ==
        256 * 1024);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.submit_options_limits_tighten_the_executors_for_one_task") {
  ferry::Limits executor_limits;
  executor_limits.open_files = 4096;
  ferry::Executor ex(contained(executor_limits));
  ferry::Limits tighter;
  tighter.open_files = 64;
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(tighter), leak_files, 500));
  if (e) check_limit_error(*e, "leak_files", "open_files", 64, "64");
  // The next task has the executor's limit again: 500 fit under 4096.
  CHECK(value_of(ex.submit_with(hostile(), leak_files, 500)) == 500);
  // And the executor's limit holds.
  auto again = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), leak_files, 5000));
  if (again) check_limit_error(*again, "leak_files", "open_files", 4096, "4096");
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.submit_options_limits_loosen_the_executors_for_one_task") {
  support::TempDir dir;
  ferry::Limits executor_limits;
  executor_limits.file_size = 1 * MiB;
  ferry::Executor ex(contained(executor_limits));
  ferry::Limits looser;
  looser.file_size = 16 * MiB;
  const std::string path = (dir.path / "out").string();
  CHECK(value_of(ex.submit_with(hostile(looser), write_bytes, path, std::uint64_t{4 * MiB})) == 4 * MiB);
  // Without the override, the executor's limit holds.
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), write_bytes, path, std::uint64_t{4 * MiB}));
  if (e) check_limit_error(*e, "write_bytes", "file_size", 1 * MiB, "1 MiB");
  // A zero field keeps the executor's: an override of another limit does not lift this one.
  ferry::Limits other;
  other.open_files = 1000;
  auto kept = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(other), write_bytes, path, std::uint64_t{4 * MiB}));
  if (kept) check_limit_error(*kept, "write_bytes", "file_size", 1 * MiB, "1 MiB");
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.violations_in_a_row_keep_the_pool_at_its_size") {
  support::TempDir dir;
  ferry::Limits limits;
  limits.open_files = 64;
  limits.processes = 32;
  limits.file_size = 1 * MiB;
  ferry::Executor ex(contained(limits));
  KillLeftovers leftovers;
  // While the violations happen, a normal task on the other worker is not disturbed.
  auto bystander = ex.submit<int>("math:slow_identity", 42, 500);
  for (int round = 0; round < 2; ++round) {
    CHECK(failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), leak_files, 1000)).has_value());
    CHECK(failure_of<ferry::ResourceLimitError>(
        ex.submit_with(hostile(), write_bytes, (dir.path / "f").string(), std::uint64_t{4 * MiB})).has_value());
    CHECK(failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), fork_bomb, 200)).has_value());
    leftovers.add(descendants_of(ex.worker_pids()));  // none, unless the limit is missing
  }
  CHECK(value_of(bystander) == 42);
  check_pool_is_healthy(ex);
}

TEST_CASE("Limits.errors_name_the_limit_and_its_value") {
  struct Row {
    const char* limit;
    unsigned long long value;
    const char* text;
  };
  for (const Row& r : {Row{"memory", 256 * MiB, "memory limit of 256 MiB"},
                       Row{"file_size", 1 * MiB, "file_size limit of 1 MiB"},
                       Row{"cpu_time", 2, "cpu_time limit of 2 s of CPU time"},
                       Row{"open_files", 64, "open_files limit of 64"},
                       Row{"processes", 32, "processes limit of 32"}}) {
    ferry::ResourceLimitError e("hog", 1234, r.limit, r.value);
    const std::string what = e.what();
    INFO(what);
    CHECK(e.limit() == r.limit);
    CHECK(e.value() == r.value);
    CHECK(e.task() == "hog");
    CHECK(e.pid() == 1234);
    CHECK(what.find(r.text) != std::string::npos);
    CHECK(what.find("1234") != std::string::npos);
    const ferry::TerminatedWorkerError& base = e;  // caught as a dead worker, too
    CHECK(base.pid() == 1234);
  }
  ferry::SandboxViolationError v("spy", 99, "socket");
  CHECK(v.operation() == "socket");
  CHECK(std::string(v.what()).find("sandbox denies: socket") != std::string::npos);
}

// ================================================================================================
// Limits and sandbox off: the documented default is a worker like any process.
// ================================================================================================

TEST_CASE("Defaults.socket_works_without_a_sandbox") {
  Listener listener;
  ferry::Executor ex(contained());
  CHECK(value_of(ex.submit_with(hostile(), connect_loopback, listener.port)) == listener.port);
  CHECK(listener.accepted_within(2000ms));
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.exec_works_without_a_sandbox") {
  ferry::Executor ex(contained());
  CHECK(value_of(ex.submit_with(hostile(), exec_shell)) == 7);
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.ptrace_works_without_a_sandbox") {
  PausedChild target;
  ferry::Executor ex(contained());
  CHECK(value_of(ex.submit_with(hostile(), ptrace_pid, target.pid)) == 0);
  // Detached, the target runs on (stopped or traced, it would show 't' or 'T').
  CHECK(eventually([&] { char s = support::process_state(target.pid); return s == 'S' || s == 'R'; }));
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.home_and_other_files_are_writable_and_readable_without_a_sandbox") {
  support::TempDir home;
  support::TempDir elsewhere;
  host_write(elsewhere.path / "data", "readable");
  auto options = contained();
  options.env["HOME"] = home.path.string();
  ferry::Executor ex(options);
  CHECK(value_of(ex.submit_with(hostile(), write_file, (home.path / "note").string(), std::string("in home"))));
  CHECK(host_read(home.path / "note") == "in home");
  CHECK(value_of(ex.submit_with(hostile(), read_file, (elsewhere.path / "data").string())) == "readable");
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.fork_bomb_of_hundreds_works_and_ends_with_the_worker") {
  ferry::Executor ex(contained());
  REQUIRE(ex.warm_up(30s));
  const std::vector<int> workers = ex.worker_pids();
  REQUIRE(workers.size() == 2);
  CHECK(value_of(ex.submit_with(hostile(), fork_bomb, 300)) == 300);
  std::vector<pid_t> bomb = descendants_of(workers);
  KillLeftovers leftovers;
  leftovers.add(bomb);
  CHECK(bomb.size() >= 300);
  for (int w : workers) ::kill(w, SIGKILL);
  CHECK_MESSAGE(eventually([&] { return all_gone(bomb); }, descendants_end_within),
                count_left(bomb) << " of " << bomb.size() << " forked processes outlived their worker");
  wait_until_replaced(ex, workers);
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.new_of_64_GB_fails_with_bad_alloc") {
#if FERRY_TEST_SHADOW_MEMORY
  // Not under AddressSanitizer (nor ThreadSanitizer): the sanitizer's operator new reports an
  // allocation it cannot map as a fatal "out of memory" error (even with
  // allocator_may_return_null=1) instead of throwing std::bad_alloc, so the worker dies.
  MESSAGE("skipped under a sanitizer (its operator new aborts instead of throwing bad_alloc)");
#else
  // This machine: vm.overcommit_memory = 0 (heuristic), 24 GiB of RAM and no swap: a single
  // mapping of 64 GB is refused at once, so `new` throws. Never touched: without the refusal the
  // task would only reserve address space.
  std::string overcommit = host_read("/proc/sys/vm/overcommit_memory");
  INFO("vm.overcommit_memory = " << overcommit);
  if (overcommit.rfind("0", 0) != 0) {
    MESSAGE("skipped: vm.overcommit_memory is not 0 here, so a 64 GB reservation may succeed");
    return;
  }
  ferry::Executor ex(contained());
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), allocate, 64 * GiB, false));
  if (e) {
    INFO("remote: " << e->remote_type() << ": " << e->remote_message());
    CHECK(e->remote_type().find("bad_alloc") != std::string::npos);
    CHECK(e->task() == "allocate");
  }
  check_pool_is_healthy(ex);
#endif
}

TEST_CASE("Defaults.leaking_descriptors_ends_with_EMFILE_and_the_worker_is_recycled") {
  rlimit nofile{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &nofile) == 0);
  INFO("soft RLIMIT_NOFILE = " << nofile.rlim_cur);
  REQUIRE(nofile.rlim_cur < 100000);  // else the leak would not reach EMFILE
  ferry::Executor ex(contained());
  auto e = failure_of<ferry::TaskError>(ex.submit_with(hostile(), leak_files, 100000));
  if (e) {
    INFO("remote: " << e->remote_type() << ": " << e->remote_message());
    CHECK(e->remote_message().find("Too many open files") != std::string::npos);
    // It opened up to the soft limit (less the descriptors the worker already had).
    CHECK(e->remote_message().find("after ") != std::string::npos);
    // The worker, left without descriptors, is replaced.
    const int pid = e->pid();
    CHECK_MESSAGE(eventually([&] { return gone(pid); }, 10s), "worker " << pid << " was not recycled");
  }
  check_pool_is_healthy(ex);
}

TEST_CASE("Defaults.cpu_memory_and_file_sizes_are_unbounded_without_limits") {
  support::TempDir dir;
  ferry::Executor ex(contained());
  CHECK(value_of(ex.submit_with(hostile(), spin_cpu, 2)) == 2);
  CHECK(value_of(ex.submit_with(hostile(), allocate, 512 * MiB, true)) == 512 * MiB);
  CHECK(value_of(ex.submit_with(hostile(), write_bytes, (dir.path / "big").string(), std::uint64_t{16 * MiB})) ==
        16 * MiB);
  CHECK(fs::file_size(dir.path / "big") == 16 * MiB);
  std::vector<char> big(3 * MiB, 1);
  CHECK(value_of(ex.submit_with(hostile(), sum_bytes, big)) == 3 * MiB);
  check_pool_is_healthy(ex);
}

// ================================================================================================
// Descendants: sandboxed or not, whatever a worker started ends with it, within 2 s.
// ================================================================================================

namespace {

/// A setsid() grandchild of a worker of `ex` (global pid), checked alive (unless its worker may
/// already have ended: `may_be_gone`), and registered for cleanup.
pid_t grandchild_of_a_worker(ferry::Executor& ex, KillLeftovers& leftovers, bool may_be_gone = false) {
  int pid = value_of(ex.submit_with(hostile(), setsid_grandchild));
  REQUIRE(pid > 0);
  leftovers.add(pid);
  if (!may_be_gone)
    CHECK_MESSAGE(support::alive(pid), "the grandchild's pid " << pid << " is not a live process");
  return pid;
}

/// SIGKILLs every worker of `ex`; returns their pids.
std::vector<int> kill_every_worker(ferry::Executor& ex) {
  const std::vector<int> workers = ex.worker_pids();
  REQUIRE(!workers.empty());
  for (int w : workers) ::kill(w, SIGKILL);
  return workers;
}

}  // namespace

TEST_CASE("Descendants.end_when_the_worker_is_killed") {
  KillLeftovers leftovers;
  for (bool sandbox : {false, true}) {
    CAPTURE(sandbox);
    ferry::Executor ex(sandbox ? sandboxed() : contained());
    pid_t grandchild = grandchild_of_a_worker(ex, leftovers);
    const std::vector<int> killed = kill_every_worker(ex);  // SIGKILL: no chance to clean up
    CHECK_MESSAGE(eventually([&] { return gone(grandchild); }, descendants_end_within),
                  "grandchild " << grandchild << " outlived its SIGKILLed worker");
    wait_until_replaced(ex, killed);
    check_pool_is_healthy(ex);
  }
}

TEST_CASE("Descendants.end_with_shutdown_kill_workers") {
  KillLeftovers leftovers;
  for (bool sandbox : {false, true}) {
    CAPTURE(sandbox);
    ferry::Executor ex(sandbox ? sandboxed() : contained());
    pid_t grandchild = grandchild_of_a_worker(ex, leftovers);
    ex.shutdown({.wait = true, .kill_workers = true});
    CHECK_MESSAGE(eventually([&] { return gone(grandchild); }, descendants_end_within),
                  "grandchild " << grandchild << " outlived shutdown({.kill_workers = true})");
  }
}

TEST_CASE("Descendants.end_when_the_worker_exits") {
  KillLeftovers leftovers;
  for (bool sandbox : {false, true}) {
    CAPTURE(sandbox);
    ferry::Executor ex(sandbox ? sandboxed() : contained());
    pid_t grandchild = grandchild_of_a_worker(ex, leftovers);
    const std::vector<int> workers = ex.worker_pids();
    ex.shutdown({.wait = true});  // the workers exit cleanly
    CHECK(all_gone(std::vector<pid_t>(workers.begin(), workers.end())));
    CHECK_MESSAGE(eventually([&] { return gone(grandchild); }, descendants_end_within),
                  "grandchild " << grandchild << " outlived its worker's clean exit");
  }
}

TEST_CASE("Descendants.end_when_the_worker_is_recycled") {
  KillLeftovers leftovers;
  for (bool sandbox : {false, true}) {
    CAPTURE(sandbox);
    auto options = sandbox ? sandboxed() : contained();
    options.max_tasks_per_child = 1;  // the worker exits right after the task
    ferry::Executor ex(options);
    // The grandchild may be gone before the result is read: its worker exits after answering.
    pid_t grandchild = grandchild_of_a_worker(ex, leftovers, true);
    CHECK_MESSAGE(eventually([&] { return gone(grandchild); }, descendants_end_within),
                  "grandchild " << grandchild << " outlived its recycled worker");
    check_pool_is_healthy(ex);
  }
}

TEST_CASE("Descendants.end_when_the_worker_hits_a_limit") {
  KillLeftovers leftovers;
  ferry::Limits limits;
  limits.open_files = 64;
  ferry::Executor ex(contained(limits));
  REQUIRE(ex.warm_up(30s));
  Blocker blocker;
  blocker.hold(ex);  // worker A is busy: the grandchild and the leak both run on worker B
  pid_t grandchild = grandchild_of_a_worker(ex, leftovers);
  auto e = failure_of<ferry::ResourceLimitError>(ex.submit_with(hostile(), leak_files, 1000));
  REQUIRE(e.has_value());
  const int replaced = e->pid();
  CHECK_MESSAGE(eventually([&] { return gone(replaced); }, 10s), "worker " << replaced << " was not replaced");
  CHECK_MESSAGE(eventually([&] { return gone(grandchild); }, descendants_end_within),
                "grandchild " << grandchild << " outlived the worker that hit its limit");
  CHECK(blocker.release() == "released");  // worker A and its task were not disturbed
  check_pool_is_healthy(ex);
}

// ================================================================================================
// An ordinary user's pool: the same promises without root (each worker in a user namespace of its
// own, RLIMIT_NPROC in it). As root, a forked child of the test becomes nobody and runs the pool;
// a failure is told by the child's exit code (doctest's checks do not cross a fork).
// ================================================================================================

namespace {

/// In the forked child: become nobody, run a sandboxed pool with a processes limit against the
/// hostile plugin. 0 when every step held; 77 when nobody cannot reach the build here.
int run_pool_as_nobody(int port) {
  const uid_t nobody = 65534;
  if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
      ::setresuid(nobody, nobody, nobody) != 0)
    return 1;
  if (::access(FERRY_TEST_WORKER, X_OK) != 0 || ::access(FERRY_TEST_HOSTILE_PLUGIN, R_OK) != 0) return 77;
  auto say = [](const char* what) {
    std::fprintf(stderr, "as nobody: %s\n", what);
    return 0;
  };
  ferry::Limits limits;
  limits.processes = 32;
  ferry::Executor ex(contained(limits, sandbox_on()));
  auto ends = [](const auto& f) { return static_cast<bool>(f.wait_for(future_wait)); };
  // A task runs.
  auto pid = ex.submit_with(hostile(), hostile_pid);
  if (!ends(pid) || pid.get() <= 0) return say("a task did not run") + 2;
  // The network is a violation.
  try {
    auto f = ex.submit_with(hostile(), connect_loopback, port);
    if (!ends(f)) return say("connect_loopback did not end") + 3;
    f.get();
    return say("connect_loopback returned") + 3;
  } catch (const ferry::SandboxViolationError& e) {
    if (e.operation() != "socket") return say(e.what()) + 4;
  }
  // A fork bomb stops at the limit.
  try {
    auto f = ex.submit_with(hostile(), fork_bomb, 1000);
    if (!ends(f)) return say("fork_bomb did not end") + 5;
    f.get();
    return say("fork_bomb returned") + 5;
  } catch (const ferry::ResourceLimitError& e) {
    if (e.limit() != "processes" || e.value() != 32) return say(e.what()) + 6;
  }
  // What a task left running ends with its killed worker, also when it made itself undumpable.
  for (auto task : {setsid_grandchild, hidden_grandchild}) {
    auto g = ex.submit_with(hostile(), task);
    if (!ends(g)) return say("the grandchild's task did not end") + 7;
    pid_t grandchild = g.get();
    if (!support::alive(grandchild)) return say("no grandchild") + 8;
    const std::vector<int> killed = ex.worker_pids();
    for (int w : killed) ::kill(w, SIGKILL);
    if (!eventually([&] { return gone(grandchild); }, descendants_end_within)) {
      ::kill(grandchild, SIGKILL);
      return say("the grandchild outlived its killed worker") + 9;
    }
    // Replaced before the next task (which could otherwise go to a dead worker).
    if (!eventually([&] {
          for (int w : ex.worker_pids())
            if (std::find(killed.begin(), killed.end(), w) != killed.end()) return false;
          return true;
        }, 10s))
      return say("the killed workers were not replaced") + 11;
  }
  // And the pool goes on.
  auto again = ex.submit_with(hostile(), hostile_pid);
  if (!ends(again) || again.get() <= 0) return say("no task ran after the workers were killed") + 10;
  // Its private directory is /tmp too (mounted in the worker's user namespace).
  auto tmp = ex.submit_with(hostile(), tmpfile_round_trip, std::string("nobody's"));
  if (!ends(tmp) || tmp.get() != "nobody's") return say("tmpfile() failed") + 12;
  return 0;
}

}  // namespace

TEST_CASE("Unprivileged.an_ordinary_users_pool_is_contained") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (its process is multithreaded even in a child of fork(), so unshare(CLONE_NEWUSER) fails with EINVAL and an ordinary user gets no user namespace)");
  return;
#endif
  if (::geteuid() != 0) {
    MESSAGE("not root: every other case here runs as an ordinary user");
    return;
  }
  Listener listener;
  const int code = support::exit_code_of_child([&] { return run_pool_as_nobody(listener.port); }, 150s);
  REQUIRE(code >= 0);
  if (code == 77) {
    MESSAGE("nobody cannot reach this build (a private directory): not tested here");
    return;
  }
  CHECK_MESSAGE(code == 0, "step " << code << " failed (its stderr says why)");
  CHECK_FALSE(listener.accepted_within(0ms));
}

// ---- Fork runners, without a cgroup ------------------------------------------------------------

namespace {

/// cgroup v1 directories of the test's own, beside its process's: pids (pids.max bounds what a
/// hostile task forks, whatever the containment does), cpu (a quota) and freezer (ends whatever is
/// left: frozen, nothing forks while it is killed). Made as root; ok() is false where one cannot
/// be made (not root, cgroup v2 only). Their processes are ended and the directories removed at
/// scope exit.
class TestCgroups {
 public:
  explicit TestCgroups(const std::string& name) {
    for (const char* controller : {"pids", "cpu", "freezer"}) {
      const std::string own = support::own_cgroup_v1(controller);
      const std::string dir = own.empty() ? "" : own + "/" + name;
      if (dir.empty() || ::mkdir(dir.c_str(), 0755) != 0) {
        ok_ = false;
        continue;
      }
      made_.push_back(dir);
      if (std::string(controller) == "pids") pids_ = dir;
      if (std::string(controller) == "freezer") freezer_ = dir;
    }
  }
  ~TestCgroups() {
    end_all();
    for (const std::string& dir : made_)  // EBUSY until the last zombie is reaped (by init now)
      if (!support::wait_until([&] { return ::rmdir(dir.c_str()) == 0 || errno != EBUSY; }, 10s))
        MESSAGE("left behind (busy): " << dir);
  }
  TestCgroups(const TestCgroups&) = delete;
  TestCgroups& operator=(const TestCgroups&) = delete;

  bool ok() const { return ok_; }
  /// Writes `value` into `file` of the cgroup of `controller`.
  bool set(const std::string& controller, const std::string& file, const std::string& value) const {
    for (const std::string& dir : made_)
      if (dir.find("/" + controller + "/") != std::string::npos) {
        std::ofstream out(dir + "/" + file);
        out << value;
        out.flush();
        return static_cast<bool>(out);
      }
    return false;
  }
  /// Moves process `pid` into all three.
  bool join(pid_t pid) const {
    for (const std::string& dir : made_) {
      std::ofstream out(dir + "/cgroup.procs");
      out << pid;
      out.flush();
      if (!out) return false;
    }
    return true;
  }
  /// Processes in them (zombies included: pids.current).
  int processes() const { return static_cast<int>(pids_of(pids_).size()); }
  /// Processes in them that are not zombies.
  int live() const {
    int n = 0;
    for (pid_t pid : pids_of(pids_))
      if (!gone(pid)) ++n;
    return n;
  }
  /// Freezes them, SIGKILLs every process, thaws them (the processes then die; their parents
  /// reap them).
  void end_all() const {
    if (freezer_.empty() || pids_of(freezer_).empty()) return;
    const auto state = [&](const char* s) {
      std::ofstream(freezer_ + "/freezer.state") << s;
    };
    state("FROZEN");
    (void)support::wait_until([&] {
      std::ifstream in(freezer_ + "/freezer.state");
      std::string now;
      return std::getline(in, now) && now == "FROZEN";
    }, 5s);
    for (pid_t pid : pids_of(freezer_)) ::kill(pid, SIGKILL);
    state("THAWED");
  }

 private:
  static std::vector<pid_t> pids_of(const std::string& dir) {
    std::vector<pid_t> out;
    std::ifstream in(dir + "/cgroup.procs");
    for (pid_t pid; in >> pid;) out.push_back(pid);
    return out;
  }

  bool ok_ = true;
  std::vector<std::string> made_;
  std::string pids_, freezer_;
};

/// In a forked child (root), the subreaper of what follows: forks a pool process that joins
/// `cgroups`, becomes nobody, runs fork_runners(`runners`) in a sandboxed pool and ends the pool;
/// then waits up to `within` for no process of the cgroups to be left (reaping the orphans that
/// come to it), ends whatever is, and returns 0 when none was left, 10 when some were, 77 when
/// nobody cannot reach this build, another code when a step failed. Says how long it took on
/// stderr.
int runners_after_the_pool(const TestCgroups& cgroups, int runners, std::chrono::milliseconds within) {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 1;
  const pid_t pool = ::fork();
  if (pool < 0) return 1;
  if (pool == 0) {
    const uid_t nobody = 65534;
    if (!cgroups.join(::getpid())) _exit(2);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
        ::setresuid(nobody, nobody, nobody) != 0)
      _exit(2);
    if (::access(FERRY_TEST_WORKER, X_OK) != 0 || ::access(FERRY_TEST_HOSTILE_PLUGIN, R_OK) != 0) _exit(77);
    try {
      auto options = contained({}, sandbox_on());
      options.max_tasks_per_child = 1;
      options.max_workers = 1;
      ferry::Executor ex(options);
      auto started = ex.submit_with(hostile(), fork_runners, runners);
      if (!started.wait_for(future_wait) || started.get() != runners) _exit(3);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "the pool: %s\n", e.what());
      _exit(4);
    }  // the pool has ended: its workers have exited, their guardians sweep
    _exit(0);
  }
  int status = -1;
  const auto reap = [&] {
    int st = 0;
    for (pid_t p; (p = ::waitpid(-1, &st, WNOHANG)) > 0;)
      if (p == pool) status = st;
  };
  if (!support::wait_until([&] { reap(); return status != -1; }, 60s)) return 5;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return WIFEXITED(status) ? WEXITSTATUS(status) : 6;
  const auto ended = std::chrono::steady_clock::now();
  const bool none_left = support::wait_until([&] { reap(); return cgroups.live() == 0; }, within);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - ended);
  std::fprintf(stderr, "runners: %s %lld ms after the pool ended (%d processes still running)\n",
               none_left ? "none left" : "some left", static_cast<long long>(ms.count()), cgroups.live());
  cgroups.end_all();
  (void)support::wait_until([&] { reap(); return cgroups.processes() == 0; }, 10s);
  return none_left ? 0 : 10;
}

}  // namespace

TEST_CASE("Unprivileged.fork_runners_end_with_the_pool_under_a_cpu_quota") {
  // A task's runners (setsid, then fork and exit in a loop: a new pid every ~100 us) outlived an
  // ordinary user's pool: the guardian's sweep read /proc's whole listing first and looked at each
  // process after, by when each runner had gone and its child had a pid the listing did not hold,
  // and gave up after 1 s. With the pool under a CPU quota (a container, a Slurm job) 30 of 30
  // were still forking 40 s later. Here the pool runs as nobody (no pids cgroup: the user
  // namespace's sweep) in cgroups of the test's own: 20 % of a core for the pool, its guardians
  // and the runners together, at most 400 processes, and a freezer that ends what is left.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (its process is multithreaded even in a child of fork(), so unshare(CLONE_NEWUSER) fails with EINVAL and an ordinary user gets no user namespace)");
  return;
#endif
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot make the cgroups (a CPU quota, a bound on processes) here");
    return;
  }
  TestCgroups cgroups("ferry-test-runners-" + std::to_string(::getpid()));
  if (!cgroups.ok() || !cgroups.set("pids", "pids.max", "1000") ||
      !cgroups.set("cpu", "cpu.cfs_period_us", "100000") || !cgroups.set("cpu", "cpu.cfs_quota_us", "20000")) {
    MESSAGE("skipped: needs cgroup v1 pids, cpu and freezer hierarchies");
    return;
  }
  const int code = support::exit_code_of_child(
      [&] { return runners_after_the_pool(cgroups, 30, descendants_end_within); }, 90s);
  if (code == 77) {
    MESSAGE("nobody cannot reach this build (a private directory): not tested here");
    return;
  }
  CHECK_MESSAGE(code == 0, "code " << code << " (10: runners outlived the pool by "
                                   << descendants_end_within.count() << " ms; its stderr says more)");
}
