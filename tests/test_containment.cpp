// SPDX-License-Identifier: BSD-3-Clause
// The worker's containment at its own level: the probe, and Containment set up in forked children
// (which then act as a task would), and ferry-worker's containment options. The hostile tasks
// through an Executor are tests/test_sandbox.cpp's.
#include <fcntl.h>
#include <poll.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "platform/containment.hpp"
#include "platform/paths.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "worker/containment.hpp"
// Last: its Call is shadowed by a template parameter alias of the worker headers (-Wshadow).
#include "host/dispatcher.hpp"

namespace proto = ferry::detail::protocol;
using ferry::detail::Containment;
using ferry::detail::ContainmentConfig;

namespace {

/// A forked child running `body` (its return value is the exit code), and the test's end of a
/// socketpair that the child uses as its channel.
struct Child {
  pid_t pid = -1;
  int channel = -1;

  Child(const std::function<int(int channel)>& body) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(sv[0]);
      int code = 100;
      try {
        code = body(sv[1]);
      } catch (...) {
        code = 101;
      }
      _exit(code);
    }
    ::close(sv[1]);
    channel = sv[0];
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (channel >= 0) ::close(channel);
  }
  /// The exit code, or 128 + signal.
  int wait() {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  /// The next frame the child sent; REQUIREs one.
  ferry::detail::Frame frame() {
    ferry::detail::FrameReader reader(proto::max_control_frame);
    ferry::detail::Frame f;
    while (!reader.next(f)) REQUIRE(reader.fill(channel, 0) > 0);
    return f;
  }
};

/// Gone, or a zombie nobody reaped yet: either way it runs no more.
bool ended(pid_t pid) {
  char s = support::process_state(pid);
  return s == 0 || s == 'Z' || s == 'X';
}


using support::become_another_user;

/// In a child running a task: five forks of children that pause, which are then killed and
/// reaped. How many were forked, and how many refused with EAGAIN (a processes limit).
std::pair<int, int> fork_five() {
  std::vector<pid_t> children;
  int refused = 0;
  for (int i = 0; i < 5; ++i) {
    pid_t p = ::fork();
    if (p == 0) {
      for (;;) ::pause();
    }
    if (p > 0) children.push_back(p);
    else if (errno == EAGAIN) ++refused;
  }
  for (pid_t p : children) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  return {static_cast<int>(children.size()), refused};
}

/// Writes all of `v` to `fd` (the child's report to the test).
template <class T>
void report(int fd, const T& v) {
  REQUIRE(::write(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v));
}

/// Reads a `T` a child reported on `fd` (with report), waiting 20 s at most: a worker that never
/// reports (its setup failed) fails the case here rather than hanging it until ctest's timeout,
/// as a blocking read would while the test or another child still holds the pipe's write end.
template <class T>
T read_report(int fd) {
  pollfd p{fd, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, 20000);
  } while (ready < 0 && errno == EINTR);
  REQUIRE_MESSAGE(ready == 1, "nothing reported within 20 s");
  T v{};
  REQUIRE(::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v));
  return v;
}

/// Reads two pids reported on `fd`, one at a time (start_descendants writes both at once; two
/// processes may each write one), each within 20 s.
std::array<pid_t, 2> read_descendants(int fd) {
  std::array<pid_t, 2> pids{};
  for (pid_t& pid : pids) pid = read_report<pid_t>(fd);
  return pids;
}

using support::descendants_end_within;
using support::KillLeftovers;

}  // namespace

TEST_CASE("Containment.private_temp_dir.removal_follows_no_link") {
  // The sandbox's private directory is removed when the pool ends, while a task's descendant
  // may still run: a link it put in place of a subdirectory must be removed, never followed
  // into what it points at (std::filesystem::remove_all looks, then opens by name). This checks
  // what a removal does with links and depth; the race itself is closed by construction (each
  // directory opened relative to its parent with O_NOFOLLOW), not reproduced here.
  namespace fs = std::filesystem;
  support::TempDir scratch;
  const fs::path outside = scratch.path / "outside", top = scratch.path / "private";
  fs::create_directories(outside / "kept");
  std::ofstream(outside / "kept" / "file") << "the user's";
  fs::create_directories(top / "a" / "b");
  std::ofstream(top / "a" / "b" / "file") << "the task's";
  fs::create_directory_symlink(outside, top / "a" / "to_outside");
  fs::create_symlink(outside / "kept" / "file", top / "to_file");
  std::string why;
  CHECK(ferry::detail::remove_tree(top, why));
  CHECK(why.empty());
  CHECK_FALSE(fs::exists(fs::symlink_status(top)));
  CHECK(fs::exists(outside / "kept" / "file"));
  // Nothing there is no error.
  CHECK(ferry::detail::remove_tree(top, why));
}

namespace {

/// Makes a chain of `depth` directories named `name` in the directory open as `fd` (which it
/// closes), each opened relative to the one above (paths that deep are longer than PATH_MAX), as
/// a task would, and a file of `bytes` bytes at the bottom. False when a step failed.
bool make_chain(int fd, int depth, const char* name = "d", std::size_t bytes = 4096) {
  for (int i = 0; i < depth && fd >= 0; ++i) {
    if (::mkdirat(fd, name, 0700) != 0 && errno != EEXIST) break;
    const int next = ::openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    ::close(fd);
    fd = next;
    if (i + 1 == depth) {
      const int file = fd < 0 ? -1 : ::openat(fd, "bottom", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      const std::string data(bytes, 'x');
      const bool written = file >= 0 && ::write(file, data.data(), data.size()) == static_cast<ssize_t>(data.size());
      if (file >= 0) ::close(file);
      if (fd >= 0) ::close(fd);
      return written;
    }
  }
  if (fd >= 0) ::close(fd);
  return false;
}

}  // namespace

TEST_CASE("Containment.private_temp_dir.a_tree_of_any_depth_is_removed_with_few_descriptors") {
  // remove_tree stopped at 256 levels (one descriptor held per level): a sandboxed task that made
  // 257 with mkdirat and openat, a file of 50 MB at the bottom, left the pool's private directory
  // on disk after every run, up to the whole disk. Now a directory 16 levels down is moved to the
  // top and emptied from there. Removed here in a child whose descriptor table has room for 24
  // more than it holds: far fewer than the levels.
  namespace fs = std::filesystem;
  support::TempDir scratch;
  const fs::path top = scratch.path / "private";
  fs::create_directory(top);
  auto open_top = [&] { return ::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); };
  REQUIRE(make_chain(open_top(), 257, "d", 1 << 20));  // the reproduction's, with 1 MB
  REQUIRE(make_chain(open_top(), 2000, "e"));
  // Branches on the way down, and names at the top that the directories moved up would take.
  REQUIRE(make_chain(open_top(), 40, "f"));
  REQUIRE(make_chain(::open((top / "f/f/f/f/f/f/f/f/f/f/f/f/f/f/f/f/f/f/f/f").c_str(),
                            O_RDONLY | O_DIRECTORY | O_CLOEXEC), 100, "g"));
  for (int i = 0; i < 3; ++i) std::ofstream(top / (".ferry-removing-" + std::to_string(i))) << "taken";
  fs::create_directory(top / ".ferry-removing-3");
  std::ofstream(top / ".ferry-removing-3" / "file") << "taken";
  Child remover([&](int) {
    int highest = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) highest = std::max(highest, std::stoi(e.path().filename()));
    const rlimit few{static_cast<rlim_t>(highest + 24), static_cast<rlim_t>(highest + 24)};
    if (::setrlimit(RLIMIT_NOFILE, &few) != 0) return 1;
    std::string why;
    if (!ferry::detail::remove_tree(top, why)) {
      std::fprintf(stderr, "remove_tree: %s\n", why.c_str());
      return 2;
    }
    return 0;
  });
  CHECK(remover.wait() == 0);
  CHECK_FALSE(fs::exists(fs::symlink_status(top)));
}

TEST_CASE("Containment.private_temp_dir.directories_without_their_owners_rights_are_removed") {
  // A sandboxed task cannot chmod, but mkdir gives a directory the mode it asks for: one of mode
  // 0300 takes files by name that its owner (the host, not root) cannot list, and stayed on disk.
  // Its owner may give it back its rights: remove_tree does (through an O_PATH descriptor of the
  // directory itself, never by a name a link could take), and for a directory it may read but
  // not change (0500), too. As root, in a child that becomes nobody: root needs no rights.
  namespace fs = std::filesystem;
  support::TempDir scratch;
  const fs::path top = scratch.path / "private";
  fs::create_directory(top);
  if (::geteuid() == 0)  // nobody's, and the directory it is in (where it is removed from)
    for (const fs::path& p : {scratch.path, top}) REQUIRE(::chown(p.c_str(), 65534, 65534) == 0);
  Child remover([&](int) {
    if (!become_another_user()) return 1;
    if (::mkdir((top / "unlisted").c_str(), 0300) != 0) return 2;
    std::ofstream((top / "unlisted" / "file").string()) << "by name";
    if (::mkdir((top / "unlisted" / "none").c_str(), 0) != 0) return 3;
    if (::mkdir((top / "read_only").c_str(), 0700) != 0) return 4;
    std::ofstream((top / "read_only" / "file").string()) << "kept in";
    if (::chmod((top / "read_only").c_str(), 0500) != 0) return 5;
    std::string why;
    if (!ferry::detail::remove_tree(top, why)) {
      std::fprintf(stderr, "remove_tree: %s\n", why.c_str());
      return 6;
    }
    return 0;
  });
  CHECK(remover.wait() == 0);
  CHECK_FALSE(fs::exists(fs::symlink_status(top)));
}

TEST_CASE("Containment.probe.reports_this_machine") {
  const auto& s = ferry::detail::containment_support();
  CHECK(&s == &ferry::detail::containment_support());  // probed once
  CHECK(s.landlock_abi >= 1);
  CHECK(s.pid_namespace);
  CHECK(s.network_namespace);
  CHECK(s.seccomp);
  if (s.root) {
    CHECK(s.pids_cgroup);
    CHECK(s.descendants == "pids cgroup");
    CHECK(s.processes == "pids cgroup");
  }
  CHECK(ferry::detail::containment_missing(s, true, false, true) == "");
}

TEST_CASE("Containment.probe.says_what_is_missing") {
  ferry::detail::ContainmentSupport none;
  none.processes = "none";
  std::string why = ferry::detail::containment_missing(none, true, false, true);
  CHECK(why.find("Landlock is not available") != std::string::npos);
  CHECK(why.find("seccomp") != std::string::npos);
  CHECK(why.find("network namespace") != std::string::npos);
  CHECK(why.find("processes limit") != std::string::npos);
  CHECK(ferry::detail::containment_missing(none, false, false, false) == "");
  // The network allowed: no network namespace needed, an IPC one still.
  CHECK(ferry::detail::containment_missing(none, true, true, false).find("network") == std::string::npos);
  CHECK(ferry::detail::containment_missing(none, true, true, false).find("IPC namespace") != std::string::npos);
  // Landlock before ABI 6 keeps no signal in: a task could kill every process of its user.
  ferry::detail::ContainmentSupport old_kernel;
  old_kernel.landlock_abi = 5;
  old_kernel.seccomp = true;
  old_kernel.network_namespace = true;
  CHECK(ferry::detail::containment_missing(old_kernel, true, false, false).find("Landlock ABI 6") != std::string::npos);
  CHECK(ferry::detail::containment_missing(old_kernel, false, false, false) == "");
  old_kernel.landlock_abi = 6;
  CHECK(ferry::detail::containment_missing(old_kernel, true, false, false) == "");
}

TEST_CASE("Containment.descendants.end_with_a_killed_worker") {
  int pids[2];
  REQUIRE(::pipe2(pids, O_CLOEXEC) == 0);
  Child worker([&](int channel) {
    Containment c;
    if (!c.setup({}, channel).empty()) return 1;
    // A task's child that leaves the session, and its own child: both must end with the worker.
    pid_t child = ::fork();
    if (child == 0) {
      ::setsid();
      pid_t grandchild = ::fork();
      if (grandchild == 0) {
        for (;;) ::pause();
      }
      report(pids[1], grandchild);
      for (;;) ::pause();
    }
    report(pids[1], child);
    for (;;) ::pause();
  });
  ::close(pids[1]);
  // In either order: the worker and its child each report one. Both killed at the end if the
  // guardian missed them (a paused one held ctest's output open until its timeout).
  const auto descendants = read_descendants(pids[0]);
  ::close(pids[0]);
  KillLeftovers leftovers;
  leftovers.add({descendants[0], descendants[1]});
  pid_t worker_pid = worker.pid;
  CHECK(!ended(descendants[0]));
  CHECK(!ended(descendants[1]));
  ::kill(worker.pid, SIGKILL);
  CHECK(worker.wait() == 128 + SIGKILL);
  CHECK(support::wait_until([&] { return ended(descendants[0]) && ended(descendants[1]); },
                            descendants_end_within));
  if (ferry::detail::containment_support().pids_cgroup && std::filesystem::exists("/sys/fs/cgroup/pids")) {
    // ...and the guardian removed the worker's cgroup.
    const std::string base = support::own_cgroup_v1("pids") + "/ferry";
    CHECK(support::wait_until([&] { return support::worker_cgroups(base, worker_pid).empty(); }, descendants_end_within));
  }
}

/// The guardian of worker `worker`: the ferry-guardian process whose descriptor 0 is a pidfd of
/// it; 0 when there is none.
pid_t guardian_of(pid_t worker) {
  for (const auto& entry : support::processes()) {
    const std::string proc = "/proc/" + std::to_string(entry.first);
    if (support::read_file(proc + "/comm") != "ferry-guardian\n") continue;
    if (support::read_file(proc + "/fdinfo/0").find("Pid:\t" + std::to_string(worker) + "\n") != std::string::npos)
      return entry.first;
  }
  return 0;
}

TEST_CASE("Containment.descendants.a_guardian_at_work_spares_a_later_worker_of_the_same_pid") {
  // A worker's cgroup was named by its pid alone: a guardian still emptying the cgroup of a worker
  // that ended (stopped here, slow on a loaded machine) found a later worker given the same pid in
  // it, and killed it. The kernel hands out a chosen pid next when told (ns_last_pid, as root).
  if (!ferry::detail::containment_support().pids_cgroup || support::own_cgroup_v1("pids").empty() ||
      ::access("/proc/sys/kernel/ns_last_pid", W_OK) != 0) {
    MESSAGE("skipped: needs a pids cgroup per worker (cgroup v1) and ns_last_pid (root)");
    return;
  }
  auto set_up_and_wait = [](int ready) {
    return [ready](int channel) {
      Containment c;
      if (!c.setup({}, channel).empty()) return 1;
      report(ready, ::getpid());
      for (;;) ::pause();
    };
  };
  int ready[2];
  REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
  auto first = std::make_unique<Child>(set_up_and_wait(ready[1]));
  pid_t said = read_report<pid_t>(ready[0]);
  const pid_t reused = first->pid;
  pid_t guardian = 0;
  REQUIRE(support::wait_until([&] { return (guardian = guardian_of(reused)) != 0; }, std::chrono::seconds(5)));
  REQUIRE(::kill(guardian, SIGSTOP) == 0);
  struct Resume {  // on a failed REQUIRE too
    pid_t pid;
    ~Resume() {
      if (pid > 0) ::kill(pid, SIGCONT);
    }
  } resume{guardian};
  REQUIRE(::kill(reused, SIGKILL) == 0);
  CHECK(first->wait() == 128 + SIGKILL);  // reaped: its pid is free
  first.reset();
  // The next worker gets the same pid (another process may take it first: tried again). On a
  // machine busy forking (builds beside the suite under ASan), 50 tries were not enough once:
  // then nothing can be shown, and the test says so rather than fail.
  std::unique_ptr<Child> second;
  for (int attempt = 0; attempt < 500 && !second; ++attempt) {
    std::ofstream("/proc/sys/kernel/ns_last_pid") << reused - 1 << std::flush;
    second = std::make_unique<Child>(set_up_and_wait(ready[1]));
    if (second->pid != reused) second.reset();
  }
  if (!second) {
    MESSAGE("skipped: pid " << reused << " was not given out again in 500 tries (a machine busy forking)");
    ::close(ready[0]);
    ::close(ready[1]);
    return;
  }
  // Its cgroup made and joined (the tries that got another pid may have said theirs first).
  do {
    said = read_report<pid_t>(ready[0]);
  } while (said != reused);
  ::close(ready[0]);
  ::close(ready[1]);
  // The first worker's guardian goes on, empties and removes that worker's cgroup, and ends.
  REQUIRE(::kill(guardian, SIGCONT) == 0);
  resume.pid = 0;
  CHECK(support::wait_until([&] { return ended(guardian); }, std::chrono::seconds(10)));
  CHECK_MESSAGE(!ended(second->pid), "the first worker's guardian killed the second");
  CHECK(support::worker_cgroups(support::own_cgroup_v1("pids") + "/ferry", reused).size() == 1);  // the second's
}

TEST_CASE("Containment.descendants.a_new_worker_removes_the_empty_cgroups_of_workers_that_are_gone") {
  // Named apart, cgroups a guardian could not remove are no longer taken over by a later worker of
  // the same pid: the next worker removes those of its PID namespace whose pid has no process
  // (empty ones only). In another PID namespace a pid names another process: left alone.
  const std::string own = support::own_cgroup_v1("pids");
  const std::string base = own + "/ferry";
  if (!ferry::detail::containment_support().pids_cgroup || own.empty() || !std::filesystem::is_directory(base)) {
    MESSAGE("skipped: needs a pids cgroup per worker (root, cgroup v1)");
    return;
  }
  pid_t gone = ::fork();
  if (gone == 0) _exit(0);
  REQUIRE(::waitpid(gone, nullptr, 0) == gone);
  const std::string ns = std::filesystem::read_symlink("/proc/self/ns/pid").string();  // pid:[N]
  const std::string id = ns.substr(ns.find('[') + 1, ns.find(']') - ns.find('[') - 1);
  const std::string stale = base + "/" + std::to_string(gone) + "." + id + ".0123456789abcdef";
  const std::string live = base + "/" + std::to_string(::getpid()) + "." + id + ".0123456789abcdef";
  const std::string other_namespace = base + "/" + std::to_string(gone) + ".1.0123456789abcdef";
  REQUIRE(::mkdir(stale.c_str(), 0755) == 0);
  REQUIRE(::mkdir(live.c_str(), 0755) == 0);
  REQUIRE(::mkdir(other_namespace.c_str(), 0755) == 0);
  Child worker([](int channel) {
    Containment c;
    return c.setup({}, channel).empty() ? 0 : 1;
  });
  CHECK(worker.wait() == 0);
  CHECK_FALSE(std::filesystem::exists(stale));
  CHECK(std::filesystem::exists(live));  // its pid has a process: perhaps its worker's
  CHECK(std::filesystem::exists(other_namespace));
  for (const auto& dir : {stale, live, other_namespace}) ::rmdir(dir.c_str());
}

TEST_CASE("Containment.descendants.guardian_is_not_a_child_and_threads_still_start") {
  Child worker([](int channel) {
    Containment c;
    if (!c.setup({}, channel).empty()) return 1;
    // A task's wait(-1) must not find the guardian.
    if (::waitpid(-1, nullptr, WNOHANG) != -1 || errno != ECHILD) return 2;
    // Threads: what a PID namespace for the children would have broken (EINVAL).
    bool ran = false;
    std::thread t([&] { ran = true; });
    t.join();
    if (!ran) return 3;
    pid_t p = ::fork();
    if (p == 0) _exit(7);
    int status = 0;
    if (::waitpid(p, &status, 0) != p || WEXITSTATUS(status) != 7) return 4;
    return 0;
  });
  CHECK(worker.wait() == 0);
}

TEST_CASE("Containment.limits.file_size_past_its_limit_is_reported") {
  support::TempDir made_dir;
  REQUIRE(std::filesystem::is_directory(made_dir.path));
  const auto dir = made_dir.path;
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.limits.file_size = 4096;
    if (!c.setup(config, channel).empty()) return 1;
    int fd = ::open((dir / "big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    std::vector<char> bytes(8192, 'x');
    (void)!::write(fd, bytes.data(), 4096);
    (void)!::write(fd, bytes.data(), 4096);  // SIGXFSZ: the handler reports and exits
    return 2;
  });
  auto f = worker.frame();
  REQUIRE(f.header.type == proto::FrameType::contained);
  auto c = proto::decode_contained(f.view());
  CHECK(c.kind == proto::ContainedKind::file_size);
  CHECK(c.value == 4096);
  CHECK(worker.wait() == static_cast<int>(proto::WorkerExit::contained));
  std::filesystem::remove_all(dir);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitizer_shadow_memory = true;
#else
constexpr bool sanitizer_shadow_memory = false;
#endif
#if defined(__SANITIZE_THREAD__)
constexpr bool tsan = true;
#else
constexpr bool tsan = false;
#endif

TEST_CASE("Containment.limits.explain_failures_by_the_limit_in_force") {
  Child worker([](int channel) {
    Containment c;
    if (!c.setup({}, channel).empty()) return 1;
    // No limit: a bad_alloc is the task's own business.
    c.begin_task({});
    if (c.explain_failure("std::bad_alloc", "std::bad_alloc")) return 2;
    proto::TaskLimits limits;
    limits.memory = 256u << 20;
    limits.open_files = 64;
    c.begin_task(limits);
    rlimit rl{};
    ::getrlimit(RLIMIT_DATA, &rl);
    // Sanitizer builds leave memory unlimited (their shadow memory cannot live under RLIMIT_DATA).
    if (!sanitizer_shadow_memory && rl.rlim_cur != limits.memory) return 3;
    auto m = c.explain_failure("std::bad_alloc", "std::bad_alloc");
    if (!m || m->kind != proto::ContainedKind::memory || m->value != limits.memory ||
        m->detail != "std::bad_alloc: std::bad_alloc")
      return 4;
    // A full descriptor table.
    std::vector<int> fds;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fds.push_back(fd);
    if (errno != EMFILE) return 5;
    auto o = c.explain_failure("std::runtime_error", "cannot open");
    if (!o || o->kind != proto::ContainedKind::open_files || o->value != 64) return 6;
    for (int fd : fds) ::close(fd);
    // Its files closed on the way out, the task still said why.
    auto o2 = c.explain_failure("std::system_error", std::strerror(EMFILE));
    if (!o2 || o2->kind != proto::ContainedKind::open_files) return 7;
    if (c.explain_failure("std::runtime_error", "a plain failure")) return 8;
    // Back to no limit: what the worker started with.
    c.begin_task({});
    ::getrlimit(RLIMIT_DATA, &rl);
    return rl.rlim_cur == RLIM_INFINITY ? 0 : 9;
  });
  CHECK(worker.wait() == 0);
}

namespace {

/// A call with `limits`, queued in `d` (Dispatcher::assign reads its reference and limits).
std::shared_ptr<ferry::detail::Call> queue_call(ferry::detail::Dispatcher& d, std::uint64_t id,
                                                const proto::TaskLimits& limits) {
  static const auto ref = std::make_shared<ferry::detail::RefEntry>();
  auto c = std::make_shared<ferry::detail::Call>();
  c->id = id;
  c->ref = ref;
  c->limits = limits;
  d.submit(c);
  return c;
}

}  // namespace

TEST_CASE("Containment.lowered_limits.a_sandboxed_lane_takes_only_calls_that_fit_under_them") {
  // In a sandbox a call's own limits are its worker's hard limits from then on: the dispatcher
  // gives that worker no call with higher ones, and retires it when such a call waits for it.
  using ferry::detail::Dispatcher;
  using ferry::detail::Lane;
  const proto::TaskLimits executor{.open_files = 4096};
  const proto::TaskLimits own{.open_files = 64};
  const proto::TaskLimits lower{.open_files = 32};
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  const auto now = ferry::detail::Clock::now();

  Dispatcher d(4);
  d.harden_limits(executor);
  Lane a{.serial = 1}, b{.serial = 2};
  auto c1 = queue_call(d, 1, own);
  d.assign(std::vector<Lane*>{&a}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  CHECK(a.lowered == own);  // at send time
  // The same limits, and lower ones, fit (each call with its own); then no higher one.
  CHECK(d.fits(a, own));
  CHECK(d.fits(a, lower));
  CHECK_FALSE(d.fits(a, executor));
  CHECK(d.fits(b, executor));
  // Both idle: a call with a's limits goes to a, which needs no lowering for it.
  (void)d.answered(a, c1->id, now);
  queue_call(d, 2, own);
  d.assign(std::vector<Lane*>{&b, &a}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].lane == &a);
  CHECK_FALSE(b.lowered.has_value());
  // A call with the executor's limits: b takes it; a is not retired for it.
  queue_call(d, 3, executor);
  d.assign(std::vector<Lane*>{&a, &b}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].lane == &b);
  CHECK(stale.empty());
  // Only a, then: the call waits for it to idle (a lane retired busy leaves after its calls, for
  // good behind one that hangs), then it is retired (limits_too_low), the call stays queued for
  // a fresh worker.
  queue_call(d, 4, executor);
  d.assign(std::vector<Lane*>{&a}, sends, stale, now);
  CHECK(sends.empty());
  CHECK(stale.empty());
  REQUIRE(d.answered(a, 2, now) != nullptr);
  d.assign(std::vector<Lane*>{&a}, sends, stale, now);
  CHECK(sends.empty());
  REQUIRE(stale.size() == 1);
  CHECK(stale[0] == &a);
  CHECK(a.limits_too_low);
  CHECK(d.queued() == 1);
  // Not while a worker is on its way (pipeline false): it fits every call.
  Lane c{.serial = 3, .lowered = own};
  stale.clear();
  d.assign(std::vector<Lane*>{&c}, sends, stale, now, false);
  CHECK(stale.empty());
  CHECK(sends.empty());
  // A fresh lane takes it.
  Lane fresh{.serial = 4};
  d.assign(std::vector<Lane*>{&fresh}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].lane == &fresh);

  // A call that fits only a busy lane while a lowered one idles: not pipelined behind the busy
  // one (for good behind a call that hangs; an unsandboxed pool runs it on the idle one), the
  // idle lane is retired and the call waits for the first free lane.
  {
    Dispatcher e(4);
    e.harden_limits(executor);
    Lane lowered{.serial = 10, .lowered = own}, busy{.serial = 11};
    queue_call(e, 20, executor);
    e.assign(std::vector<Lane*>{&busy}, sends, stale, now);
    REQUIRE(sends.size() == 1);
    REQUIRE_FALSE(busy.idle());
    stale.clear();
    queue_call(e, 21, executor);
    e.assign(std::vector<Lane*>{&lowered, &busy}, sends, stale, now);
    CHECK(sends.empty());
    REQUIRE(stale.size() == 1);
    CHECK(stale[0] == &lowered);
    CHECK(lowered.limits_too_low);
    CHECK(busy.in_flight.size() == 1);
    CHECK(e.queued() == 1);
    stale.clear();
  }

  // processes: once lowered (pids.max written and closed), only the same value.
  Dispatcher p(4);
  p.harden_limits(proto::TaskLimits{.processes = 64});
  Lane l{.serial = 5};
  CHECK(p.fits(l, proto::TaskLimits{.processes = 8}));
  // Lowered only on a lane no call was sent to: an earlier call could keep a copy of pids.max's
  // descriptor (dup, a child) and write "max" for the lowered one.
  Lane ran{.serial = 7};
  queue_call(p, 30, proto::TaskLimits{.processes = 64});
  p.assign(std::vector<Lane*>{&ran}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  CHECK(ran.used);
  CHECK_FALSE(p.fits(ran, proto::TaskLimits{.processes = 8}));
  CHECK(p.fits(ran, proto::TaskLimits{.processes = 64}));
  l.lowered = proto::TaskLimits{.processes = 8};
  CHECK(p.fits(l, proto::TaskLimits{.processes = 8}));
  CHECK_FALSE(p.fits(l, proto::TaskLimits{.processes = 4}));
  CHECK_FALSE(p.fits(l, proto::TaskLimits{.processes = 64}));

  // Without a sandbox (no harden_limits) every call fits every lane: limits there are soft.
  Dispatcher open_pool(4);
  Lane m{.serial = 6, .lowered = own};
  CHECK(open_pool.fits(m, executor));
}

TEST_CASE("Containment.lowered_limits.a_call_no_lane_fits_retires_one_lane_not_all") {
  // A burst of calls with their own limits lowered every lane: a call with the executor's then
  // retired them all, and the pool restarted whole for it. One lane is retired, an idle one, and
  // none more while its replacement comes (pipeline false); when none idles, the first to idle.
  using ferry::detail::Dispatcher;
  using ferry::detail::Lane;
  const proto::TaskLimits executor{.open_files = 4096};
  const proto::TaskLimits own{.open_files = 64};
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  const auto now = ferry::detail::Clock::now();
  {
    Dispatcher d(4);
    d.harden_limits(executor);
    Lane a{.serial = 1, .lowered = own}, b{.serial = 2, .lowered = own}, c{.serial = 3, .lowered = own};
    queue_call(d, 1, executor);
    d.assign(std::vector<Lane*>{&a, &b, &c}, sends, stale, now);
    CHECK(sends.empty());
    REQUIRE(stale.size() == 1);
    CHECK(stale[0]->limits_too_low);
    CHECK(d.queued() == 1);
    // Its replacement on its way: nothing more.
    stale.clear();
    d.assign(std::vector<Lane*>{&b, &c}, sends, stale, now, false);
    CHECK(stale.empty());
    CHECK_FALSE(b.limits_too_low);
    CHECK_FALSE(c.limits_too_low);
  }
  {
    // Both lanes busy with calls of their own limits: none retired until one idles.
    Dispatcher d(4);
    d.harden_limits(executor);
    Lane a{.serial = 1}, b{.serial = 2};
    queue_call(d, 1, own);
    queue_call(d, 2, own);
    d.assign(std::vector<Lane*>{&a, &b}, sends, stale, now);
    REQUIRE(sends.size() == 2);
    CHECK(sends[0].lane != sends[1].lane);  // an idle lane before one that keeps its limits
    REQUIRE(a.lowered == own);
    REQUIRE(b.lowered == own);
    queue_call(d, 3, executor);
    d.assign(std::vector<Lane*>{&a, &b}, sends, stale, now);
    CHECK(sends.empty());
    CHECK(stale.empty());
    REQUIRE(d.answered(b, b.in_flight.front()->id, now) != nullptr);
    d.assign(std::vector<Lane*>{&a, &b}, sends, stale, now);
    REQUIRE(stale.size() == 1);
    CHECK(stale[0] == &b);
    CHECK_FALSE(a.limits_too_low);
  }
}

TEST_CASE("Containment.lowered_limits.lanes_a_waiting_call_does_not_fit_serve_the_calls_behind_it") {
  // A call with the executor's limits waits for the one lane that fits it (busy); the lane
  // lowered to other calls' own limits idled meanwhile, and was retired (a worker start each
  // time, 24-30 for 200 alternating calls on 2 workers). It runs the calls behind that fit it;
  // once none is left it is retired, so that the waiting call never waits for good behind a
  // call that hangs while it idles.
  using ferry::detail::Dispatcher;
  using ferry::detail::Lane;
  const proto::TaskLimits executor{.open_files = 4096};
  const proto::TaskLimits own{.open_files = 64};
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  const auto now = ferry::detail::Clock::now();
  Dispatcher d(1);  // long calls: one per lane
  d.harden_limits(executor);
  Lane low{.serial = 1, .lowered = own}, busy{.serial = 2};
  auto running = queue_call(d, 1, executor);
  d.assign(std::vector<Lane*>{&busy}, sends, stale, now);
  REQUIRE(sends.size() == 1);
  auto waiting = queue_call(d, 2, executor);
  auto behind1 = queue_call(d, 3, own);
  auto behind2 = queue_call(d, 4, own);
  d.assign(std::vector<Lane*>{&low, &busy}, sends, stale, now);
  CHECK(stale.empty());
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].call == behind1);
  CHECK(sends[0].lane == &low);
  CHECK(d.queued() == 2);
  REQUIRE(d.answered(low, behind1->id, now) != nullptr);
  d.assign(std::vector<Lane*>{&low, &busy}, sends, stale, now);
  CHECK(stale.empty());
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].call == behind2);
  // Nothing behind fits it any more: retired, the waiting call holds for the first free lane.
  REQUIRE(d.answered(low, behind2->id, now) != nullptr);
  d.assign(std::vector<Lane*>{&low, &busy}, sends, stale, now);
  CHECK(sends.empty());
  REQUIRE(stale.size() == 1);
  CHECK(stale[0] == &low);
  CHECK(low.limits_too_low);
  // The busy lane frees up first: the waiting call goes before any call behind it.
  queue_call(d, 5, executor);
  REQUIRE(d.answered(busy, running->id, now) != nullptr);
  stale.clear();
  d.assign(std::vector<Lane*>{&busy}, sends, stale, now, false);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].call == waiting);
}

TEST_CASE("Containment.limits.processes_refused_by_the_pids_cgroup") {
  if (!ferry::detail::containment_support().pids_cgroup) {
    MESSAGE("skipped: no pids cgroup can be made here (Limits::processes is enforced by "
            << ferry::detail::containment_support().processes << ")");
    return;
  }
  Child worker([](int channel) {
    Containment c;
    if (!c.setup({}, channel).empty()) return 1;
    proto::TaskLimits limits;
    limits.processes = 2;
    c.begin_task(limits);
    auto [forked, refused] = fork_five();
    // Under TSan each child starts a thread of its own, which the cgroup counts too, racing
    // with the next fork: fewer children may fit.
    if (tsan ? forked == 0 || forked > 2 || refused != 5 - forked : forked != 2 || refused != 3)
      return 2;
    // The task coped, the limit was still hit.
    if (!c.fork_refused()) return 3;
    c.begin_task(limits);
    if (c.fork_refused()) return 4;  // nothing new
    return 0;
  });
  CHECK(worker.wait() == 0);
}

TEST_CASE("Containment.lowered_limits.code_run_before_a_tasks_own_processes_limit_cannot_raise_it") {
  // A sandboxed worker kept its pids.max open for a task's own processes limit, and closed it
  // once written: code that ran in the worker before (the executor's initializer, an earlier
  // call) could keep a copy (dup) and write "max" for a later task (20 forks under an own limit
  // of 5 after an initializer that kept one). The guardian writes pids.max now, lower only; the
  // worker holds no descriptor of it, and asking the guardian for more is refused.
  if (!ferry::detail::containment_support().pids_cgroup) {
    MESSAGE("skipped: no pids cgroup can be made here (Limits::processes is enforced by "
            << ferry::detail::containment_support().processes << ")");
    return;
  }
  std::uint64_t ceiling = 0;
  SUBCASE("the executor without a processes limit") {}
  SUBCASE("the executor with one (a ceiling above the worker's cgroup)") { ceiling = 64; }
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    config.limits.processes = ceiling;
    if (!c.setup(config, channel).empty()) return 1;
    c.begin_task(config.limits);
    // Before the task with its own limit: a copy of every pids.max this process holds.
    std::vector<int> copies;
    for (int fd = 0; fd < 1024; ++fd) {
      char link[512];
      const std::string self = "/proc/self/fd/" + std::to_string(fd);
      const ssize_t len = ::readlink(self.c_str(), link, sizeof link - 1);
      const std::string target(link, len > 0 ? static_cast<std::size_t>(len) : 0);
      if (target.size() >= 9 && target.compare(target.size() - 9, 9, "/pids.max") == 0)
        copies.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 900));
    }
    proto::TaskLimits own;
    own.processes = 2;
    c.begin_task(own);
    // The task: "max" through every copy, and asked of whatever listens on this process's
    // packet sockets (the guardian's requests among them).
    for (int fd : copies) (void)!::pwrite(fd, "max", 3, 0);
    for (int fd = 0; fd < 1024; ++fd) {
      int type = 0;
      socklen_t size = sizeof type;
      if (fd == channel || ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) != 0 || type != SOCK_SEQPACKET)
        continue;
      // The guardian's request: {value, sequence}; its answer {code, sequence} (16 bytes each).
      const std::uint64_t unlimited[2] = {UINT64_MAX, 1};
      std::uint64_t answer[2] = {};
      if (::send(fd, unlimited, sizeof unlimited, MSG_NOSIGNAL) == sizeof unlimited)
        (void)!::recv(fd, answer, sizeof answer, 0);
    }
    auto [forked, refused] = fork_five();
    if (tsan ? forked == 0 || forked > 2 : forked != 2) return 10 + forked;
    return copies.empty() ? 0 : 20;
  });
  CHECK(worker.wait() == 0);
}

/// In a contained worker: its descriptor of the guardian's requests socket (the one seqpacket
/// socket beside `channel`), or -1.
static int guardian_requests(int channel) {
  int requests = -1;
  for (int fd = 0; fd < 1024; ++fd) {
    int type = 0;
    socklen_t size = sizeof type;
    if (fd != channel && ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_SEQPACKET)
      requests = fd;
  }
  return requests;
}

TEST_CASE("Containment.lowered_limits.a_task_that_floods_the_guardian_cannot_keep_its_children_alive") {
  // A task's child inherited the worker's end of the guardian's socket and sent requests without
  // reading the answers: the guardian blocked in send() for good, never saw the worker end, and
  // what the task started outlived the worker, the executor and the host. It answers without
  // waiting now, and stops serving a peer that does not read.
  if (!ferry::detail::containment_support().pids_cgroup) {
    MESSAGE("skipped: no pids cgroup can be made here");
    return;
  }
  int report[2];
  REQUIRE(::pipe2(report, O_CLOEXEC) == 0);
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    if (!c.setup(config, channel).empty()) return 1;
    c.begin_task(config.limits);
    const int requests = guardian_requests(channel);
    if (requests < 0) return 2;
    const pid_t child = ::fork();
    if (child == 0) {
      // Requests until the guardian takes no more: its end closed (now), or its queue full while
      // it waits for us to read (before); then say who we are and stay.
      const std::uint64_t request[2] = {UINT64_MAX, 0};
      for (int quiet = 0; quiet < 3;) {
        if (::send(requests, request, sizeof request, MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof request) continue;
        if (errno != EAGAIN) break;
        pollfd p{requests, POLLOUT, 0};
        if (::poll(&p, 1, 200) == 0) ++quiet;
      }
      const pid_t me[2] = {::getpid(), ::getpid()};  // one for the worker, one for the test
      (void)!::write(report[1], me, sizeof me);
      for (;;) ::pause();
    }
    pid_t reported = 0;
    ::close(report[1]);
    return ::read(report[0], &reported, sizeof reported) == sizeof reported ? 0 : 3;
  });
  ::close(report[1]);
  const pid_t child = read_report<pid_t>(report[0]);
  ::close(report[0]);
  KillLeftovers leftovers;  // if the guardian missed it
  leftovers.add(child);
  CHECK(worker.wait() == 0);
  // The worker has ended: its guardian ends what the task left, the flooding child among them.
  CHECK_MESSAGE(support::wait_until([&] { return ended(child); }, std::chrono::milliseconds(10000)),
                "the task's child " << child << " outlived its worker");
}

TEST_CASE("Containment.lowered_limits.the_guardian_serves_a_worker_two_requests_at_most") {
  // A task can reach the worker's end of the guardian's socket: it flooded requests, and the
  // guardian opened and wrote pids.max for each, CPU time that no cpu_time limit counts (2.3 s
  // of the guardian's in 4.6 s; an audit). A worker asks twice at most in its life (the
  // executor's processes limit at setup, a task's own lower one before any call ran on it): the
  // guardian answers two messages, then closes its end.
  if (!ferry::detail::containment_support().pids_cgroup) {
    MESSAGE("skipped: no pids cgroup can be made here");
    return;
  }
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    config.limits.processes = 16;  // the first request, at setup
    if (!c.setup(config, channel).empty()) return 1;
    const int requests = guardian_requests(channel);
    if (requests < 0) return 2;
    int answers = 0;
    for (std::uint64_t i = 0; i < 1000; ++i) {
      const std::uint64_t request[2] = {UINT64_MAX, 1000000 + i};
      if (::send(requests, request, sizeof request, MSG_NOSIGNAL) != sizeof request) break;
      pollfd p{requests, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return 3;  // neither an answer nor the guardian's end
      char answer[16];
      if (::recv(requests, answer, sizeof answer, 0) <= 0) break;
      ++answers;
    }
    return 10 + std::min(answers, 100);
  });
  CHECK_MESSAGE(worker.wait() == 10 + 1, "exit 10 + the answers the flood got (1: the second request's), "
                                         "1-3: setup, no socket, no answer nor end");
}

TEST_CASE("Containment.sandbox.files_outside_the_allowed_paths_are_eacces") {
  support::TempDir made_allowed, made_other;
  REQUIRE(std::filesystem::is_directory(made_allowed.path));
  REQUIRE(std::filesystem::is_directory(made_other.path));
  const auto allowed = made_allowed.path, other = made_other.path;
  std::ofstream(other / "secret") << "no";
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    config.write = {allowed.string()};
    if (std::string why = c.setup(config, channel); !why.empty()) return 1;
    if (::open((other / "secret").c_str(), O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES) return 2;
    if (::open((other / "new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600) >= 0 || errno != EACCES)
      return 3;
    int fd = ::open((allowed / "mine").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, "ok", 2) != 2) return 4;
    ::close(fd);
    // What every program needs still opens.
    if (::open("/etc/ld.so.cache", O_RDONLY | O_CLOEXEC) < 0) return 5;
    if (::open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) return 6;  // (0644 on some machines)
    if (::open("/proc/self/statm", O_RDONLY | O_CLOEXEC) < 0) return 7;
    // No signal out of the sandbox (Landlock ABI 6): not even to the test.
    if (ferry::detail::containment_support().landlock_abi >= 6 &&
        (::kill(::getppid(), 0) == 0 || errno != EPERM))
      return 8;
    return 0;
  });
  CHECK(worker.wait() == 0);
  CHECK(std::filesystem::exists(allowed / "mine"));
  std::filesystem::remove_all(allowed);
  std::filesystem::remove_all(other);
}

namespace {

/// What a sandboxed child that makes the denied `call` says on its channel, after `checks` (whose
/// non-zero return is the child's exit instead); REQUIREs a contained frame of a system call, and
/// the child's exit for it.
proto::Contained denied_in_a_sandbox(const std::function<void()>& call,
                                     const std::function<int()>& checks = [] { return 0; }) {
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    if (!c.setup(config, channel).empty()) return 1;
    if (const int failed = checks()) return failed;
    call();
    return 3;
  });
  auto f = worker.frame();
  REQUIRE(f.header.type == proto::FrameType::contained);
  auto c = proto::decode_contained(f.view());
  CHECK(c.kind == proto::ContainedKind::syscall);
  CHECK(worker.wait() == static_cast<int>(proto::WorkerExit::contained));
  return c;
}

}  // namespace

TEST_CASE("Containment.sandbox.denied_calls_are_named_on_the_channel") {
  struct Case {
    const char* name;
    std::function<void()> call;
  };
  static char sh[] = "/bin/sh";
  Case cases[] = {
      {"socket", [] { ::socket(AF_INET, SOCK_STREAM, 0); }},
      {"execve", [] { char* argv[] = {sh, nullptr}; ::execve(sh, argv, environ); }},
      {"ptrace", [] { ::syscall(SYS_ptrace, 0 /* TRACEME */, 0, 0, 0); }},
  };
  for (const auto& k : cases) {
    const std::string name = k.name;
    CAPTURE(name);
    const auto c = denied_in_a_sandbox(k.call, [] {
      // Allowed: a socketpair reaches nothing outside.
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 2;
      // A UNIX socket is refused, not a violation: glibc's getpwuid tries nscd through one.
      if (::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) >= 0 || errno != EACCES) return 4;
      if (::getpwuid(::getuid()) == nullptr) return 5;
      return 0;
    });
    CHECK(c.name == k.name);
  }
}

TEST_CASE("Containment.sandbox.other_abis_io_uring_and_another_process_memory_are_denied") {
  // The filter is a deny list for the native ABI: a call through another one (int 0x80, the x32
  // numbers) must not reach the kernel unfiltered, and io_uring (whose operations no filter sees)
  // and process_vm_writev (another process's memory) are denied outright.
  struct Case {
    const char* name;  // as reported; "" for a number the filter names no call by
    long number;       // as reported
    std::function<void()> call;
  };
  std::vector<Case> cases = {
      {"io_uring_setup", SYS_io_uring_setup, [] {
         long params[16] = {};
         ::syscall(SYS_io_uring_setup, 1, params);
       }},
      {"process_vm_writev", SYS_process_vm_writev, [] { ::syscall(SYS_process_vm_writev, ::getppid(), nullptr, 0, nullptr, 0, 0); }},
  };
#if defined(__x86_64__)
  // A kernel without IA32 emulation (CONFIG_IA32_EMULATION off, or ia32_emulation=0) ends
  // `int $0x80` with SIGSEGV before any filter sees it: nothing to deny there.
  const auto i386_getpid = [] {
    long ret = 20;
    asm volatile("int $0x80" : "+a"(ret) : : "memory");
    return ret;
  };
  const bool ia32 = support::exit_code_of_child(
                        [&] {
                          ::signal(SIGSEGV, SIG_DFL);  // not doctest's report of a crash
                          return i386_getpid() == ::getpid() ? 0 : 1;
                        },
                        std::chrono::seconds(10)) == 0;
  if (ia32)
    cases.push_back({"foreign architecture", 20 /* i386 getpid */, [&] { (void)i386_getpid(); }});
  else
    MESSAGE("this kernel runs no i386 system call (int $0x80 ends with SIGSEGV): that case is left out");
  cases.push_back({"", 0x40000000L | SYS_getpid /* x32 */, [] { ::syscall(0x40000000L | SYS_getpid); }});
#endif
  for (const auto& k : cases) {
    const long number = k.number;
    CAPTURE(number);
    const auto c = denied_in_a_sandbox(k.call);
    CHECK(c.value == static_cast<std::uint64_t>(k.number));
    if (*k.name) CHECK(c.name == k.name);
  }
}

TEST_CASE("Containment.sandbox.no_signal_reaches_a_process_outside_it") {
  // Landlock's signal scope: kill, and SIGIO through F_SETOWN on a descriptor the host writes to,
  // reach no process outside the sandbox (here the test, the worker's parent, as the host is).
  // Signal 0 for kill; for SIGIO, a signal the test ignores while the channel becomes readable.
  struct sigaction ignore {}, before {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGURG, &ignore, &before);
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    if (!c.setup(config, channel).empty()) return 1;
    if (::kill(::getppid(), 0) == 0 || errno != EPERM) return 2;
    // The F_SETOWN itself is allowed (a process may name any owner); the signal is not sent.
    if (::fcntl(channel, F_SETOWN, ::getppid()) != 0 || ::fcntl(channel, F_SETSIG, SIGURG) != 0 ||
        ::fcntl(channel, F_SETFL, ::fcntl(channel, F_GETFL) | O_ASYNC) != 0)
      return 4;
    const char ready = 'r';
    if (::write(channel, &ready, 1) != 1) return 5;
    char go = 0;
    if (::read(channel, &go, 1) != 1) return 6;
    return 0;
  });
  char ready = 0;
  REQUIRE(::read(worker.channel, &ready, 1) == 1);
  siginfo_t info{};
  sigset_t urg;
  sigemptyset(&urg);
  sigaddset(&urg, SIGURG);
  ::sigprocmask(SIG_BLOCK, &urg, nullptr);
  REQUIRE(::write(worker.channel, "g", 1) == 1);
  CHECK(worker.wait() == 0);
  const timespec none{0, 0};
  CHECK_MESSAGE(::sigtimedwait(&urg, &info, &none) < 0, "the worker's SIGIO reached the test");
  ::sigprocmask(SIG_UNBLOCK, &urg, nullptr);
  ::sigaction(SIGURG, &before, nullptr);
}

TEST_CASE("Containment.sandbox.the_sigsys_handler_cannot_be_taken_away") {
  // Setting SIGSYS's action fails with EPERM (not a trap: glibc's posix_spawn resets every
  // handled signal in its child before the exec, which a trap killed), its signal number with
  // bits above its 32 too (the kernel ignores them); the handler stays, and the next denied call
  // is still reported. The system call itself: a sanitizer's signal() keeps the handler in its
  // own table.
  Child worker([&](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    if (!c.setup(config, channel).empty()) return 1;
    struct {  // the kernel's layout, not glibc's struct sigaction
      void (*handler)(int);
      unsigned long flags;
      void (*restorer)();
      unsigned long mask;
    } ignore{SIG_IGN, 0, nullptr, 0}, now{};
    for (unsigned long high : {0UL, 1UL << 32}) {
      if (::syscall(SYS_rt_sigaction, high | SIGSYS, &ignore, nullptr, sizeof ignore.mask) == 0) return 2;
      if (errno != EPERM) return 3;
    }
    if (::syscall(SYS_rt_sigaction, SIGSYS, nullptr, &now, sizeof now.mask) != 0) return 4;
    if (now.handler == SIG_IGN || now.handler == SIG_DFL) return 5;
    ::socket(AF_INET, SOCK_STREAM, 0);
    return 6;
  });
  auto f = worker.frame();
  REQUIRE(f.header.type == proto::FrameType::contained);
  CHECK(proto::decode_contained(f.view()).name == "socket");
  CHECK(worker.wait() == static_cast<int>(proto::WorkerExit::contained));
}

TEST_CASE("Containment.sandbox.network_and_exec_when_allowed") {
  Child worker([](int channel) {
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    config.network = true;
    config.exec = true;
    if (!c.setup(config, channel).empty()) return 1;
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 2;
    ::close(s);
    pid_t p = ::fork();
    if (p == 0) {
      ::execl("/bin/true", "true", static_cast<char*>(nullptr));
      _exit(50);
    }
    int status = 0;
    ::waitpid(p, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 3;
  });
  CHECK(worker.wait() == 0);
}

namespace {

/// ferry-worker with `args`; returns its exit code, and the first frame it sent in `first`.
/// As another user (become_another_user): 126 when that user cannot run the program here.
int run_worker_program(const std::vector<std::string>& args, proto::FrameType* first,
                       const std::function<void(int host, int worker_pid)>& then = {},
                       bool another_user = false) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(sv[1], 3);
    if (another_user && !become_another_user()) _exit(125);
    if (::access(FERRY_TEST_WORKER, X_OK) != 0) _exit(126);
    std::vector<char*> argv{const_cast<char*>(FERRY_TEST_WORKER), const_cast<char*>("--fd"),
                            const_cast<char*>("3")};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(FERRY_TEST_WORKER, argv.data());
    _exit(127);
  }
  ::close(sv[1]);
  ferry::detail::FrameReader reader(proto::default_max_frame);
  ferry::detail::Frame f;
  bool got = false;
  for (;;) {
    if (reader.next(f)) {
      got = true;
      break;
    }
    if (reader.fill(sv[0], 0) <= 0) break;
  }
  if (got && first) *first = f.header.type;
  if (got && then) then(sv[0], f.header.type == proto::FrameType::hello ? proto::decode_hello(f.view()).pid : -1);
  ::close(sv[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("Containment.worker_program.parses_its_options") {
  proto::FrameType first{};
  CHECK(run_worker_program({"--limits", "1,2,3"}, nullptr) == static_cast<int>(proto::WorkerExit::usage));
  CHECK(run_worker_program({"--limits", "1,2,3,4,x"}, nullptr) == static_cast<int>(proto::WorkerExit::usage));
  CHECK(run_worker_program({"--read"}, nullptr) == static_cast<int>(proto::WorkerExit::usage));
  support::TempDir made_dir;
  REQUIRE(std::filesystem::is_directory(made_dir.path));
  const auto dir = made_dir.path;
  // Sandboxed, limited: it says hello, then exits cleanly when the host closes the channel.
  int code = run_worker_program({"--limits", "1073741824,5,256,16,1048576", "--sandbox", "0", "--read",
                                 FERRY_TEST_PLUGIN_DIR, "--write", dir.string(), "--read", "/nonexistent"},
                                &first);
  CHECK(first == proto::FrameType::hello);
  CHECK(code == static_cast<int>(proto::WorkerExit::host_gone));
  std::filesystem::remove_all(dir);
}

TEST_CASE("Containment.worker_program.runs_a_plugin_task_in_its_sandbox") {
  // As this test's user, and as an ordinary user (the worker then builds a user namespace).
  for (bool another_user : {false, true}) {
    CAPTURE(another_user);
    proto::FrameType first{};
    int code = run_worker_program(
        {"--sandbox", "0", "--read", FERRY_TEST_PLUGIN_DIR, "--limits", "0,0,0,0,0"}, &first,
        [](int host, int) {
          using ferry::detail::Buffer;
          Buffer args;
          ferry::detail::encode_values(args, 7);
          // limits frame first: the tasks that follow get these.
          proto::TaskLimits l;
          l.open_files = 200;
          REQUIRE(ferry::detail::send_all(host, {proto::encode_limits(l).view()}));
          REQUIRE(ferry::detail::send_all(
              host, {proto::encode_define({0, proto::RefKind::plugin, FERRY_TEST_MATH_PLUGIN, "square",
                                           ferry::detail::Signature<int, int>::fingerprint, "sig"})
                         .view()}));
          Buffer head = proto::encode_task_head({1, 0, 1}, args.size());
          REQUIRE(ferry::detail::send_all(host, {head.view(), args.view()}));
          ferry::detail::FrameReader reader(proto::default_max_frame);
          ferry::detail::Frame f;
          while (!reader.next(f)) REQUIRE(reader.fill(host, 0) > 0);
          REQUIRE(f.header.type == proto::FrameType::result);
          proto::BodyReader r(f.view());
          auto h = proto::decode_result_head(r);
          CHECK(h.status == proto::ResultStatus::ok);
          CHECK(ferry::detail::decode_value<int>(r.rest()) == 49);
        },
        another_user);
    if (code == 126 && another_user) {
      MESSAGE("nobody cannot run the build's ferry-worker here (a private build directory)");
      continue;
    }
    CHECK(first == proto::FrameType::hello);
    CHECK(code == static_cast<int>(proto::WorkerExit::host_gone));
  }
}

TEST_CASE("Containment.worker_program.file_size_signal_is_a_contained_frame") {
  // A task's write past RLIMIT_FSIZE raises SIGXFSZ in the worker; here the task sends it itself.
  proto::FrameType first{};
  int code = run_worker_program(
      {"--sandbox", "0", "--read", FERRY_TEST_PLUGIN_DIR, "--limits", "0,0,0,0,65536"}, &first,
      [](int host, int pid) {
        using ferry::detail::Buffer;
        REQUIRE(pid > 0);
        Buffer args;
        ferry::detail::encode_values(args, pid, static_cast<int>(SIGXFSZ));
        REQUIRE(ferry::detail::send_all(
            host, {proto::encode_define({0, proto::RefKind::plugin, FERRY_TEST_CRASH_PLUGIN, "kill_pid",
                                         ferry::detail::Signature<int, int, int>::fingerprint, "sig"})
                       .view()}));
        Buffer head = proto::encode_task_head({1, 0, 1}, args.size());
        REQUIRE(ferry::detail::send_all(host, {head.view(), args.view()}));
        ferry::detail::FrameReader reader(proto::default_max_frame);
        ferry::detail::Frame f;
        while (!reader.next(f)) REQUIRE(reader.fill(host, 0) > 0);
        REQUIRE(f.header.type == proto::FrameType::contained);
        auto c = proto::decode_contained(f.view());
        CHECK(c.kind == proto::ContainedKind::file_size);
        CHECK(c.value == 65536);
        CHECK(c.name == "file_size");
      });
  CHECK(first == proto::FrameType::hello);
  CHECK(code == static_cast<int>(proto::WorkerExit::contained));
}

// ---- Without root: the user namespace ----------------------------------------------------------
// Users rarely run as root: their workers end their descendants through a user namespace, and
// limit processes with RLIMIT_NPROC inside it. As root, a child becomes nobody first.

namespace {

/// How a task's child tries to hide from the guardian: not at all, or undumpable by prctl, or by
/// prctl with bits above the 32 of its `int` option (which the kernel ignores).
enum class Hide { no, prctl, prctl_high_bits };

/// A child of the task that leaves the session and forks a grandchild; both pause, or the
/// grandchild execs `exec` when given. The child reports both pids to `report_fd`, its own first,
/// in one write: a pipe keeps a write of that size whole, so the order read is the order written
/// (the worker once wrote the child's pid while the child wrote the grandchild's, and the two
/// came in either order), and two of these reporting on one pipe do not interleave.
void start_descendants(int report_fd, const char* exec = nullptr, Hide hide = Hide::no) {
  pid_t child = ::fork();
  if (child == 0) {
    ::setsid();
    if (hide == Hide::prctl) ::prctl(PR_SET_DUMPABLE, 0);
    if (hide == Hide::prctl_high_bits) ::syscall(SYS_prctl, (1UL << 32) | PR_SET_DUMPABLE, 0UL);
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      if (exec) ::execl(exec, exec, "1000", static_cast<char*>(nullptr));
      for (;;) ::pause();
    }
    report(report_fd, std::array<pid_t, 2>{::getpid(), grandchild});
    for (;;) ::pause();
  }
  REQUIRE(child > 0);
}

}  // namespace

TEST_CASE("Containment.unprivileged.descendants_end_with_a_killed_worker") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (its process is multithreaded even in a child of fork(), so unshare(CLONE_NEWUSER) fails with EINVAL and an ordinary user gets no user namespace)");
  return;
#endif
  for (Hide hide : {Hide::no, Hide::prctl, Hide::prctl_high_bits}) {
    // The task's child tries to make itself undumpable, which would keep /proc/PID/ns/user
    // from other processes of its user.
    CAPTURE(static_cast<int>(hide));
    int pipe_fds[2], summary[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(summary, O_CLOEXEC) == 0);
    Child worker([&](int channel) {
      if (!become_another_user()) return 1;
      Containment c;
      if (!c.setup({}, channel).empty()) return 2;
      REQUIRE(::write(summary[1], c.summary().data(), c.summary().size()) > 0);
      ::close(summary[1]);
      start_descendants(pipe_fds[1], nullptr, hide);
      for (;;) ::pause();
    });
    ::close(pipe_fds[1]);
    ::close(summary[1]);
    char text[256] = {};
    REQUIRE(::read(summary[0], text, sizeof text - 1) > 0);
    ::close(summary[0]);
    CHECK(std::string(text).find("user namespace") != std::string::npos);
    auto d = read_descendants(pipe_fds[0]);
    ::close(pipe_fds[0]);
    KillLeftovers leftovers;  // what the guardian missed, if it did
    leftovers.add({d[0], d[1]});
    CHECK(!ended(d[0]));
    CHECK(!ended(d[1]));
    ::kill(worker.pid, SIGKILL);
    CHECK(worker.wait() == 128 + SIGKILL);
    CHECK(support::wait_until([&] { return ended(d[0]) && ended(d[1]); }, descendants_end_within));
  }
}

TEST_CASE("Containment.unprivileged.processes_limit_holds_in_the_user_namespace") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (its process is multithreaded even in a child of fork(), so unshare(CLONE_NEWUSER) fails with EINVAL and an ordinary user gets no user namespace)");
  return;
#endif
  Child worker([](int channel) {
    if (!become_another_user()) return 1;
    Containment c;
    if (!c.setup({}, channel).empty()) return 2;
    proto::TaskLimits limits;
    limits.processes = 2;
    c.begin_task(limits);
    auto [forked, refused] = fork_five();
    if (tsan ? forked == 0 || forked > 2 : forked != 2 || refused != 3) return 3;
    // Explained as the limit, after a failure.
    auto m = c.explain_failure("std::system_error", std::strerror(EAGAIN));
    if (!m || m->kind != proto::ContainedKind::processes || m->value != 2) return 4;
    // Lifted again: forks succeed.
    c.begin_task({});
    for (int i = 0; i < 4; ++i) {
      pid_t p = ::fork();
      if (p == 0) _exit(0);
      if (p < 0) return 5;
      ::waitpid(p, nullptr, 0);
    }
    return 0;
  });
  CHECK(worker.wait() == 0);
}

TEST_CASE("Containment.unprivileged.sandbox_builds_its_network_namespace") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (its process is multithreaded even in a child of fork(), so unshare(CLONE_NEWUSER) fails with EINVAL and an ordinary user gets no user namespace)");
  return;
#endif
  support::TempDir made_dir;
  REQUIRE(std::filesystem::is_directory(made_dir.path));
  const auto dir = made_dir.path;
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec);
  const std::filesystem::path outside = dir / "readable";
  std::ofstream(outside) << "anyone may read this";
  std::filesystem::permissions(outside, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                            std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  Child worker([&](int channel) {
    if (!become_another_user()) return 1;
    Containment c;
    ContainmentConfig config;
    config.sandbox = true;
    if (!c.setup(config, channel).empty()) return 2;
    const std::string& s = c.summary();
    if (s.find("user namespace") == std::string::npos || s.find("network namespace") == std::string::npos ||
        s.find("Landlock") == std::string::npos || s.find("seccomp") == std::string::npos)
      return 3;
    // Readable by anyone, outside what the sandbox allows: Landlock says no.
    if (::open(outside.c_str(), O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES) return 4;
    ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // a violation
    return 5;
  });
  auto f = worker.frame();
  REQUIRE(f.header.type == proto::FrameType::contained);
  CHECK(proto::decode_contained(f.view()).name == "socket");
  CHECK(worker.wait() == static_cast<int>(proto::WorkerExit::contained));
  std::filesystem::remove_all(dir);
}

// ---- Neither a pids cgroup nor a user namespace: subreaper and tag ----------------------------
// The last resort. As root, the child hides the cgroup file system in a mount namespace of its
// own (a root worker does not try a user namespace).

namespace {

/// In a forked child, as root: no cgroup file system to make a pids cgroup in. False when it
/// could not (not root, or no mount namespace).
bool hide_cgroups() {
  return ::geteuid() == 0 && ::unshare(CLONE_NEWNS) == 0 &&
         ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
         ::mount("none", "/sys/fs/cgroup", "tmpfs", 0, "size=4k") == 0;
}

/// A worker whose containment found no cgroup file system (hide_cgroups), running `task` (its
/// return value is the exit code; 1 and 2: the setup failed).
std::unique_ptr<Child> last_resort_worker(const std::function<int(Containment&)>& task) {
  return std::make_unique<Child>([task](int channel) {
    if (!hide_cgroups()) return 1;
    Containment c;
    if (!c.setup({}, channel).empty()) return 2;
    return task(c);
  });
}

}  // namespace

TEST_CASE("Containment.last_resort.tagged_descendants_end_with_a_killed_worker") {
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot take the cgroup file system away here");
    return;
  }
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  auto worker_process = last_resort_worker([&](Containment& c) {
    if (c.summary().find("subreaper") == std::string::npos) return 3;
    // The tag is in the environment of what the task's processes exec.
    start_descendants(pipe_fds[1], "/bin/sleep");
    for (;;) ::pause();
  });
  Child& worker = *worker_process;
  ::close(pipe_fds[1]);
  auto d = read_descendants(pipe_fds[0]);
  ::close(pipe_fds[0]);
  // Killed at the end: d[0] outlives the worker, and d[1] if the guardian missed it (a paused
  // process that held ctest's output open).
  KillLeftovers leftovers;
  leftovers.add({d[0], d[1]});
  // The grandchild has exec'd once its environment shows the tag.
  CHECK(support::wait_until([&] {
    std::ifstream in("/proc/" + std::to_string(d[1]) + "/environ");
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return env.find("FERRY_WORKER_TAG=") != std::string::npos;
  }));
  ::kill(worker.pid, SIGKILL);
  CHECK(worker.wait() == 128 + SIGKILL);
  CHECK(support::wait_until([&] { return ended(d[1]); }, descendants_end_within));
  // The child never exec'd: /proc shows no tag for it, it outlives a killed worker (the weakest
  // of the three ways, design §15).
  CHECK(!ended(d[0]));
}

TEST_CASE("Containment.last_resort.finish_ends_every_descendant") {
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot take the cgroup file system away here");
    return;
  }
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  auto worker_process = last_resort_worker([&](Containment& c) {
    int inner[2];
    if (::pipe2(inner, O_CLOEXEC) != 0) return 3;
    start_descendants(inner[1]);  // a child with a child of its own
    // And an orphan: its parent exits, it comes back to the worker (the subreaper).
    pid_t parent = ::fork();
    if (parent == 0) {
      start_descendants(inner[1]);
      _exit(0);
    }
    ::waitpid(parent, nullptr, 0);
    // All four started (and told the test) before the worker's clean exit.
    for (int i = 0; i < 2; ++i) report(pipe_fds[1], read_descendants(inner[0]));
    c.finish();
    return 0;
  });
  ::close(pipe_fds[1]);
  auto a = read_descendants(pipe_fds[0]);
  auto b = read_descendants(pipe_fds[0]);
  ::close(pipe_fds[0]);
  KillLeftovers leftovers;  // what finish() missed, if it did
  leftovers.add({a[0], a[1], b[0], b[1]});
  CHECK(worker_process->wait() == 0);
  for (pid_t p : {a[0], a[1], b[0], b[1]}) {
    CAPTURE(p);
    CHECK(support::wait_until([&] { return ended(p); }, descendants_end_within));
  }
}
