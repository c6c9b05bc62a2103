// SPDX-License-Identifier: BSD-3-Clause
// A sandboxed executor's private directory (Sandbox::write empty): made under $TMPDIR only where
// no other user could swap it for one of theirs (the place and its way ours or root's, not
// writable by others unless sticky), else under /tmp; a directory found at its name that is not
// this user's with mode 0700 is refused by the workers; and at the end only the directory made
// is removed, never one put in its place.
//
// An audit reproduced the swap with two users: with TMPDIR a directory of the attacker's (0777),
// they renamed the victim's new directory away and put theirs at its name; the victim's tasks
// read their file, and the victim's teardown emptied their directory.
//
// A soak audit found the directory left for good, with what the tasks wrote, by every host that
// ended without destroying its executor (exit() with one alive, SIGKILL, abort): exit() now
// removes it, and the next sandboxed executor in the same place sweeps what a dead host left,
// never a live pool's (each holds a lock on its own), nor anything not ferry's.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <typeinfo>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "hostile.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr auto future_wait = 60s;
constexpr uid_t nobody = 65534;

ferry::SubmitOptions hostile() {
  ferry::SubmitOptions o;
  o.deadline = 30s;
  return o;
}

ferry::ExecutorOptions sandboxed(std::size_t workers = 2) {
  ferry::ExecutorOptions o{.max_workers = workers,
                           .plugin_dirs = {FERRY_TEST_PLUGIN_DIR},
                           .worker_path = FERRY_TEST_WORKER};
  o.sandbox.enabled = true;
  return o;
}

/// The future's value; a failed REQUIRE when it does not end in time or fails.
template <class T>
T value_of(const ferry::Future<T>& f) {
  REQUIRE_MESSAGE(static_cast<bool>(f.wait_for(future_wait)), "the task did not end in time");
  try {
    return f.get();
  } catch (const std::exception& e) {
    FAIL("the task failed: " << std::string(e.what()));
  }
  return T{};
}

/// The entries of `dir` named ferry-sandbox-*.
std::vector<fs::path> private_dirs_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("ferry-sandbox-", 0) == 0) out.push_back(entry.path());
  return out;
}

/// An executor made with TMPDIR = `base` (only while it is made: the private directory is made then).
void make_with_tmpdir(std::optional<ferry::Executor>& ex, const fs::path& base, std::size_t workers = 2) {
  support::ScopedEnv env("TMPDIR", base.string());
  ex.emplace(sandboxed(workers));
}

/// A sandboxed executor of one worker made with TMPDIR = `base`, and the one private directory
/// it made there.
fs::path make_one_private_dir(std::optional<ferry::Executor>& ex, const fs::path& base) {
  make_with_tmpdir(ex, base, 1);
  const std::vector<fs::path> made = private_dirs_in(base);
  REQUIRE(made.size() == 1);
  return made.front();
}

void write(const fs::path& file, const std::string& text) {
  std::FILE* f = std::fopen(file.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

/// Puts a directory of mode `mode` (owned by nobody as root, when `another_user`) at `dir`'s name,
/// holding a file `planted`, after moving `dir` to `moved_to`: what another user with write
/// access to the place could do between the directory's creation and a worker's start.
void swap_directory(const fs::path& dir, const fs::path& moved_to, mode_t mode, bool another_user) {
  fs::rename(dir, moved_to);
  fs::create_directory(dir);
  write(dir / "planted", "from mallory");
  if (another_user) {
    REQUIRE(::chown((dir / "planted").c_str(), nobody, nobody) == 0);
    REQUIRE(::chown(dir.c_str(), nobody, nobody) == 0);
  }
  REQUIRE(::chmod(dir.c_str(), mode) == 0);
}

/// Kills `ex`'s workers, and waits until the pool has seen their deaths: a call submitted before
/// then may go to a dead worker. Its next workers start checking the private directory anew.
void kill_workers_and_wait(ferry::Executor& ex) {
  const std::vector<int> old = ex.worker_pids();
  for (int pid : old) ::kill(pid, SIGKILL);
  REQUIRE(support::wait_until([&] {
    for (int pid : ex.worker_pids())
      if (std::find(old.begin(), old.end(), pid) != old.end()) return false;
    return true;
  }, 10s));
}

}  // namespace

namespace {
/// Whether `dir` was made to be swept (named "...-locked", its pool holding a lock): not on a
/// file system other machines may share, or one ferry does not know as local, where no
/// directory is locked nor swept (said in a MESSAGE, the test then ends).
bool locked_for_the_sweep(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.size() > 7 && name.compare(name.size() - 7, 7, "-locked") == 0) return true;
  MESSAGE("not checked: " << dir.parent_path() << " is on a file system where ferry locks and sweeps nothing");
  return false;
}
}  // namespace

TEST_CASE("SandboxTmpdir.a_tmpdir_others_could_swap_in_is_not_used") {
  support::TempDir base;
  const bool root = ::geteuid() == 0;
  SUBCASE("ours, writable by others") { REQUIRE(::chmod(base.path.c_str(), 0777) == 0); }
  SUBCASE("another user's, writable by them") {
    if (!root) {
      MESSAGE("not root: no directory of another user's to try");
      return;
    }
    REQUIRE(::chown(base.path.c_str(), nobody, nobody) == 0);
    REQUIRE(::chmod(base.path.c_str(), 0777) == 0);
  }
  SUBCASE("another user's, sticky (its owner still removes what is in it)") {
    if (!root) {
      MESSAGE("not root: no directory of another user's to try");
      return;
    }
    REQUIRE(::chown(base.path.c_str(), nobody, nobody) == 0);
    REQUIRE(::chmod(base.path.c_str(), 01777) == 0);
  }
  SUBCASE("missing") { fs::remove(base.path); }
  std::optional<ferry::Executor> ex;
  make_with_tmpdir(ex, base.path);
  // Made elsewhere (/tmp), and the tasks have a temporary directory as ever.
  if (fs::exists(base.path)) CHECK(private_dirs_in(base.path).empty());
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
}

TEST_CASE("SandboxTmpdir.a_tmpdir_of_ours_or_a_sticky_one_is_used") {
  support::TempDir base;
  SUBCASE("ours, private") {}
  SUBCASE("ours, sticky and writable by others") { REQUIRE(::chmod(base.path.c_str(), 01777) == 0); }
  {
    std::optional<ferry::Executor> ex;
    make_with_tmpdir(ex, base.path);
    CHECK(private_dirs_in(base.path).size() == 1);
    CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
  }
  CHECK(private_dirs_in(base.path).empty());  // removed at the end
}

TEST_CASE("SandboxTmpdir.a_swapped_private_directory_is_refused_by_the_workers_and_left_as_it_is") {
  // The swap is made by the test between the first worker's start and its replacement's.
  const bool root = ::geteuid() == 0;
  mode_t mode = 0777;
  bool another_user = false;
  SUBCASE("another user's (as root), or open to others") { another_user = root; }
  SUBCASE("ours, 0700: only its device and inode tell") { mode = 0700; }
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  const fs::path dir = make_one_private_dir(ex, base.path);
  // Where the tasks see it (/tmp, shown there, or its own path).
  const std::string seen = value_of(ex->submit_with(hostile(), temp_dir));
  swap_directory(dir, base.path / "moved-away", mode, another_user);
  kill_workers_and_wait(*ex);
  auto f = ex->submit_with(hostile(), read_file, seen + "/planted");
  REQUIRE_MESSAGE(static_cast<bool>(f.wait_for(future_wait)), "the call did not end");
  try {
    const std::string got = f.get();
    FAIL_CHECK("a task read the planted file: " << got);
  } catch (const ferry::BrokenProcessPool& e) {
    // Why, not only the worker's exit status (its reason was on its stderr alone).
    CHECK_MESSAGE(std::string(e.what()).find("the sandbox's private directory " + dir.string()) != std::string::npos,
                  e.what());
    CHECK_MESSAGE(std::string(e.what()).find("is not the one ferry made") != std::string::npos, e.what());
  } catch (const std::exception& e) {
    FAIL_CHECK("expected BrokenProcessPool (no worker could start): " << typeid(e).name() << ": " << std::string(e.what()));
  }
  ex.reset();
  // The planted directory is left as it is; the one made, moved away, too (it is no longer at
  // the name ferry removes).
  CHECK(support::read_file(dir / "planted") == "from mallory");
  CHECK(fs::is_directory(base.path / "moved-away"));
}

TEST_CASE("SandboxTmpdir.a_private_directory_its_user_made_readable_is_still_used_and_removed") {
  // The user may chmod the directory (a task cannot: chmod fails in a sandbox): 0750 or 0755 is
  // still no one else's to write. It was refused unless exactly 0700, and every new worker then
  // failed to start. Writable by others it is refused.
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  const fs::path made = make_one_private_dir(ex, base.path);
  CHECK_FALSE(value_of(ex->submit_with(hostile(), temp_dir)).empty());  // its first worker started
  REQUIRE(::chmod(made.c_str(), 0755) == 0);
  kill_workers_and_wait(*ex);
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
  ex.reset();
  CHECK_FALSE(fs::exists(made));

  std::optional<ferry::Executor> open;
  const fs::path made2 = make_one_private_dir(open, base.path);
  CHECK_FALSE(value_of(open->submit_with(hostile(), temp_dir)).empty());
  REQUIRE(::chmod(made2.c_str(), 0777) == 0);
  kill_workers_and_wait(*open);
  auto f = open->submit_with(hostile(), temp_dir);
  REQUIRE(static_cast<bool>(f.wait_for(future_wait)));
  CHECK_THROWS_AS(f.get(), ferry::BrokenProcessPool);
  open.reset();
  CHECK(fs::exists(made2));  // not the one made any more: left as it is
  ::chmod(made2.c_str(), 0700);
  fs::remove_all(made2);
}

TEST_CASE("SandboxTmpdir.teardown_removes_only_the_directory_it_made") {
  // A directory of ours, 0700, put at the name after the workers started: the teardown leaves it.
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  const fs::path made = make_one_private_dir(ex, base.path);
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
  swap_directory(made, base.path / "moved-away", 0700, false);
  ex.reset();
  CHECK(support::read_file(made / "planted") == "from mallory");
}

TEST_CASE("SandboxTmpdir.the_private_directory_not_shown_at_tmp_is_writable_through_its_checked_descriptor") {
  // Reading `/` keeps every shared temporary directory visible (temp_dirs_to_hide): the private
  // directory is then shown nowhere, and its Landlock rule is made on the descriptor the worker
  // checked.
  ferry::ExecutorOptions o = sandboxed(1);
  o.sandbox.read = {"/"};
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ex.emplace(o);
  }
  const std::vector<fs::path> made = private_dirs_in(base.path);
  REQUIRE(made.size() == 1);
  const std::string seen = value_of(ex->submit_with(hostile(), temp_dir));
  CHECK(fs::path(seen) == fs::canonical(made.front()));
  CHECK(value_of(ex->submit_with(hostile(), write_file, seen + "/out", std::string("written"))));
  CHECK(support::read_file(made.front() / "out") == "written");
}

namespace {

/// A file `name` written by a task into the private directory of `ex` (where the task sees it).
bool task_writes(ferry::Executor& ex, const std::string& name, const std::string& text) {
  const std::string seen = ex.submit_with(hostile(), temp_dir).get();
  return ex.submit_with(hostile(), write_file, seen + "/" + name, text).get();
}

/// A child's exit code for what went wrong in it before it ended as asked.
int check_in_child(bool ok, int code) { return ok ? 0 : code; }

/// Waits until `fd` has a byte to read (or its writer is gone); false when `deadline` passed.
bool readable_within(int fd, std::chrono::milliseconds deadline) {
  pollfd p{fd, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, static_cast<int>(deadline.count()));
  } while (n < 0 && errno == EINTR);
  return n == 1;
}

}  // namespace

TEST_CASE("SandboxTmpdir.a_host_that_calls_exit_with_a_live_executor_leaves_no_private_directory") {
  // std::exit() runs no destructor of what lives on the stack: the directory was left for good.
  support::TempDir base;
  bool reusable = false, quick = false;
  SUBCASE("an executor on main's stack") {}
  SUBCASE("a get_reusable_executor() handle in a local") { reusable = true; }
  SUBCASE("std::quick_exit") { quick = true; }
  const int code = support::exit_code_of_child([&] {
    support::ScopedEnv env("TMPDIR", base.path.string());
    std::shared_ptr<ferry::Executor> shared;
    std::optional<ferry::Executor> local;
    if (reusable) {
      shared = ferry::get_reusable_executor(sandboxed(1));
    } else {
      local.emplace(sandboxed(1));
    }
    ferry::Executor& ex = reusable ? *shared : *local;
    if (private_dirs_in(base.path).size() != 1) return 2;
    if (!task_writes(ex, "left", "by a task")) return 3;
    if (quick) std::quick_exit(0);
    std::exit(0);
  }, 60s);
  CHECK(code == 0);
  CHECK(private_dirs_in(base.path).empty());
}

TEST_CASE("SandboxTmpdir.a_forked_child_never_removes_its_parents_private_directory") {
  // The child has a copy of the parent's executor (and of the exit handler's table): neither its
  // exit nor its copy's destruction may take the directory the parent's workers use.
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  const fs::path dir = make_one_private_dir(ex, base.path);
  REQUIRE(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
  bool destroy = false;
  SUBCASE("the child exits") {}
  SUBCASE("the child destroys its copy, then exits") { destroy = true; }
  CHECK(support::exit_code_of_child([&] {
          if (destroy) ex.reset();
          return 0;
        }, 20s, true) == 0);
  CHECK(fs::is_directory(dir));
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("still"))) == "still");
}

TEST_CASE("SandboxTmpdir.a_killed_hosts_private_directory_is_removed_by_the_next_sandboxed_executor_there") {
  support::TempDir base, outside;
  write(outside.path / "kept", "the user's");
  const int code = support::exit_code_of_child([&] {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ferry::Executor ex(sandboxed(1));
    if (!task_writes(ex, "left", "by a task")) return 3;
    ::kill(::getpid(), SIGKILL);
    return 4;
  }, 60s);
  REQUIRE(code == -2);  // killed: no handler ran
  const std::vector<fs::path> left = private_dirs_in(base.path);
  REQUIRE(left.size() == 1);
  CHECK(support::read_file(left.front() / "left") == "by a task");
  if (!locked_for_the_sweep(left.front())) return;
  // A link in it (as a task's descendant could have put there without a sandbox's rules) is
  // removed, never followed.
  fs::create_directory_symlink(outside.path, left.front() / "link");
  std::optional<ferry::Executor> next;
  make_with_tmpdir(next, base.path, 1);
  const std::vector<fs::path> now = private_dirs_in(base.path);
  CHECK(now.size() == 1);  // the new one's
  CHECK_FALSE(fs::exists(fs::symlink_status(left.front())));
  CHECK(support::read_file(outside.path / "kept") == "the user's");
  CHECK(value_of(next->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
}

TEST_CASE("SandboxTmpdir.a_live_pools_private_directory_is_never_swept") {
  support::TempDir base;
  SUBCASE("another executor of this process") {
    std::optional<ferry::Executor> first, second;
    const fs::path dir = make_one_private_dir(first, base.path);
    REQUIRE(task_writes(*first, "mine", "first"));
    make_with_tmpdir(second, base.path, 1);
    CHECK(private_dirs_in(base.path).size() == 2);
    CHECK(support::read_file(dir / "mine") == "first");
    CHECK(value_of(first->submit_with(hostile(), read_file, value_of(first->submit_with(hostile(), temp_dir)) +
                                                                 "/mine")) == "first");
  }
  SUBCASE("an executor of another process") {
    int ready[2], go[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Only its own ends: a parent that leaves early closes go[1], and its read sees EOF.
      ::close(ready[0]);
      ::close(go[1]);
      int code = 100;
      try {
        support::ScopedEnv env("TMPDIR", base.path.string());
        ferry::Executor ex(sandboxed(1));
        code = check_in_child(task_writes(ex, "theirs", "other process"), 3);
        char c = 'r';
        if (code == 0 && ::write(ready[1], &c, 1) != 1) code = 4;
        if (code == 0 && ::read(go[0], &c, 1) != 1) code = 5;  // the parent swept meanwhile
        const std::string seen = ex.submit_with(hostile(), temp_dir).get();
        if (code == 0 && ex.submit_with(hostile(), read_file, seen + "/theirs").get() != "other process") code = 6;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        code = 101;
      }
      support::leak_check_off = true;
      _exit(code);
    }
    ::close(ready[1]);
    ::close(go[0]);
    // On every way out (a failed REQUIRE, a throw): go[1] closed (the child's read ends), the
    // child killed and reaped unless it was, so that it never outlives the case.
    struct Cleanup {
      pid_t pid;
      int go_write, ready_read;
      bool reaped = false;
      void close_go() {
        if (go_write >= 0) ::close(go_write);
        go_write = -1;
      }
      ~Cleanup() {
        close_go();
        ::close(ready_read);
        if (!reaped) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
        }
      }
    } cleanup{pid, go[1], ready[0]};
    CHECK(readable_within(ready[0], 60s));
    std::optional<ferry::Executor> here;
    make_with_tmpdir(here, base.path, 1);
    CHECK(private_dirs_in(base.path).size() == 2);
    char c = 'g';
    CHECK(::write(go[1], &c, 1) == 1);
    cleanup.close_go();
    int status = 0;
    REQUIRE(support::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 60s));
    cleanup.reaped = true;
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("SandboxTmpdir.a_dead_hosts_forked_child_does_not_keep_its_directory_from_the_sweep") {
  // A child of fork() shares its parent's open files, and with them the lock: a daemon the host
  // forked kept a killed host's directory locked, so never swept, for as long as it lived.
  support::TempDir base;
  int hold[2], told[2];
  REQUIRE(::pipe2(hold, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(told, O_CLOEXEC) == 0);
  const int code = support::exit_code_of_child([&] {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ferry::Executor ex(sandboxed(1));
    if (!task_writes(ex, "left", "by a task")) return 3;
    const pid_t daemon = ::fork();
    if (daemon < 0) return 4;
    if (daemon == 0) {
      ::close(hold[1]);
      ::close(told[1]);
      char c;
      while (::read(hold[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    if (::write(told[1], &daemon, sizeof daemon) != sizeof daemon) return 5;
    ::kill(::getpid(), SIGKILL);
    return 6;
  }, 60s);
  ::close(hold[0]);
  ::close(told[1]);
  pid_t daemon = -1;
  CHECK(::read(told[0], &daemon, sizeof daemon) == sizeof daemon);
  ::close(told[0]);
  CHECK(code == -2);
  const std::vector<fs::path> left = private_dirs_in(base.path);
  CHECK(left.size() == 1);
  if (std::all_of(left.begin(), left.end(), locked_for_the_sweep)) {
    std::optional<ferry::Executor> next;
    make_with_tmpdir(next, base.path, 1);
    for (const auto& dir : left) CHECK_FALSE(fs::exists(fs::symlink_status(dir)));
  }
  ::close(hold[1]);  // the daemon ends
  if (daemon > 0) ::waitpid(daemon, nullptr, 0);  // where this test is its subreaper; else ECHILD
}

TEST_CASE("SandboxTmpdir.a_sweep_leaves_what_is_not_a_dead_hosts_private_directory_of_ours") {
  support::TempDir base, outside;
  write(outside.path / "kept", "the user's");
  REQUIRE(::chmod(outside.path.c_str(), 0700) == 0);
  std::vector<fs::path> others;
  auto dir_with_file = [&](const std::string& name, mode_t mode) {
    const fs::path d = base.path / name;
    fs::create_directory(d);
    write(d / "kept", "not ferry's");
    REQUIRE(::chmod(d.c_str(), mode) == 0);
    others.push_back(d);
    return d;
  };
  // A link of the name, to a directory of ours that looks like one (0700, unlocked).
  fs::create_directory_symlink(outside.path, base.path / "ferry-sandbox-AAAAAA-locked");
  others.push_back(base.path / "ferry-sandbox-AAAAAA-locked");
  write(base.path / "ferry-sandbox-BBBBBB-locked", "a file");  // not a directory
  others.push_back(base.path / "ferry-sandbox-BBBBBB-locked");
  dir_with_file("ferry-sandbox-CCCCCC-locked", 0755);  // not as ferry makes them
  dir_with_file("ferry-sandbox-DDDDDD", 0700);         // an older ferry's, which held no lock
  dir_with_file(".ferry-sandbox-EEEEEE", 0700);        // being made (not locked yet)
  dir_with_file("ferry-sandbox-FFFFFF-lockedx", 0700); // another name
  if (::geteuid() == 0) {
    const fs::path theirs = dir_with_file("ferry-sandbox-GGGGGG-locked", 0700);  // another user's
    REQUIRE(::chown((theirs / "kept").c_str(), nobody, nobody) == 0);
    REQUIRE(::chown(theirs.c_str(), nobody, nobody) == 0);
  }
  std::optional<ferry::Executor> ex;
  make_with_tmpdir(ex, base.path, 1);
  for (const auto& p : others) CHECK_MESSAGE(fs::exists(fs::symlink_status(p)), p);
  for (const auto& p : others)
    if (fs::is_directory(fs::symlink_status(p))) CHECK_MESSAGE(support::read_file(p / "kept") == "not ferry's", p);
  CHECK(support::read_file(outside.path / "kept") == "the user's");
  ex.reset();
  for (const auto& p : others)  // the executor removed only its own
    CHECK_MESSAGE(fs::exists(fs::symlink_status(p)), p);
}

TEST_CASE("SandboxTmpdir.exit_removes_the_directory_only_after_the_calls_it_waits_for") {
  // A pool shut down from a callback finishes in the background, and exit() waits for its calls
  // (Pool::exit_waits_for_one_more). The directory's exit handler, registered at the first
  // sandboxed pool, ran before that wait whenever a pool had been shut down so earlier: the
  // calls still queued found their directory gone. (Run alone, as ctest runs each case: the
  // handlers are registered once per process.)
  support::TempDir base;
  int told[2];
  REQUIRE(::pipe2(told, O_CLOEXEC) == 0);
  const int code = support::exit_code_of_child([&] {
    std::atomic<bool> plain_shut{false}, shut{false};
    ferry::Executor plain(support::options(1));
    plain.submit_with(hostile(), hostile_pid).then([&](ferry::Future<int>) {
      plain.shutdown();  // from a callback: in the background, and exit() waits for it
      plain_shut = true;
    });
    if (!support::wait_until([&] { return plain_shut.load(); }, 30s)) return 2;
    support::ScopedEnv env("TMPDIR", base.path.string());
    ferry::Executor ex(sandboxed(1));
    auto first = ex.submit_with(hostile(), hostile_pid);
    ex.submit_with(hostile(), spin_cpu, 1);  // still running when exit() is called
    ex.submit_with(hostile(), tmpfile_round_trip, std::string("kept")).then([&](ferry::Future<std::string> f) {
      char c = 'e';
      try {
        c = f.get() == "kept" ? 'y' : 'n';
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
      }
      (void)::write(told[1], &c, 1);
    });
    first.then([&](ferry::Future<int>) {
      ex.shutdown();
      shut = true;
    });
    if (!support::wait_until([&] { return shut.load(); }, 30s)) return 3;
    std::exit(0);
  }, 60s);
  ::close(told[1]);
  CHECK(code == 0);
  char c = 0;
  CHECK(::read(told[0], &c, 1) == 1);
  ::close(told[0]);
  CHECK(c == 'y');  // the last call had its directory
  CHECK(private_dirs_in(base.path).empty());  // and it went after
}

namespace {

/// Directories a writer keeps waiting in its tree: a pass of remove_tree over them lasts long
/// enough that the writer adds some before it ends, so the tree is never empty when remove_tree
/// tries to remove its top; and the writer's disk use stays bounded.
constexpr nlink_t writer_backlog = 1000;

/// Keeps the calling thread on one CPU, the first this process may use; at nice 19 when
/// `behind`. The writer and the thread removing its tree share that CPU, the writer ahead: left
/// to two CPUs, remove_tree kept up with a writer as fast as it, the tree's backlog drained, and
/// in one of the writer's stalls the tree was empty and removed: the old remove_tree ended after
/// 1 to 11 s, as often as not (seen on tmpfs and ext4). Ahead, the writer keeps its backlog for
/// as long as it runs (30 s each time against the old code), as a task in a worker process
/// with a CPU of its own can while exit() removes its directory.
void share_first_cpu(bool behind) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    (void)::sched_setaffinity(0, sizeof one, &one);  // this thread only
    break;
  }
  if (behind) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);  // this thread only
}

/// Makes empty directories in `dir` ("d0", "d1"...) until `stop` (never, when null), counting
/// them in `made`, keeping about writer_backlog of them there (by `dir`'s link count; without
/// one, as many as it can): what a task, or what it left running, does when it writes without
/// end in its private directory. Directories, which cost remove_tree several calls each and
/// their maker one (remove_tree caught up with a writer of files at once, on two CPUs). Goes on
/// (failing) once `dir` is gone.
void keep_making_directories(fs::path dir, std::atomic<bool>* stop, std::atomic<std::uint64_t>* made) {
  share_first_cpu(false);
  const int at = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // With its backlog full it waits for the remover to take a directory out (or move one), at most
  // 100 ms at a time so that `stop` is seen.
  const int removed = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (removed >= 0) (void)::inotify_add_watch(removed, dir.c_str(), IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF);
  char name[32];
  for (std::uint64_t i = 0; !(stop && stop->load(std::memory_order_relaxed));) {
    struct stat st {};
    if (::fstat(at, &st) == 0 && st.st_nlink >= 2 && st.st_nlink - 2 >= writer_backlog) {
      pollfd p{removed, POLLIN, 0};
      if (::poll(&p, removed >= 0 ? 1 : 0, 100) > 0) {
        alignas(inotify_event) char events[4096];
        while (::read(removed, events, sizeof events) > 0) {
        }
      }
      continue;
    }
    std::snprintf(name, sizeof name, "d%llu", static_cast<unsigned long long>(i++));
    if (::mkdirat(at, name, 0700) == 0) made->fetch_add(1, std::memory_order_relaxed);
  }
  if (removed >= 0) ::close(removed);
  if (at >= 0) ::close(at);
}

/// Makes sandboxed executors of one worker in `base`, each sweeping it, until `gone` is no
/// more (false when it is still there after `deadline`); the last one stays in `ex`.
bool swept_by_later_pools(std::optional<ferry::Executor>& ex, const fs::path& base, const fs::path& gone,
                          std::chrono::milliseconds deadline) {
  return support::wait_until([&] {
    ex.reset();
    make_with_tmpdir(ex, base, 1);
    return !fs::exists(fs::symlink_status(gone));
  }, deadline);
}

}  // namespace

TEST_CASE("SandboxTmpdir.exit_ends_soon_while_something_still_writes_in_the_private_directory") {
  // At exit() the workers still run (they end with the host), and a task that kept making files
  // in its private directory kept the exit handler's remove_tree at it for 30 s: exit() took
  // 30 s. It now gives this process's directories 1 s, and what is left is a dead host's, swept
  // by the next sandboxed pool there. A thread of the host writes there, as a task (or what it
  // left running) would, with no sandbox between it and the test's count.
  support::TempDir base;
  // The child writes the time it calls exit() (steady_clock is the system's monotonic clock, the
  // same in both processes) into a pipe read once it has ended. No thread waits for it in this
  // process: a thread still starting when the child was forked held ASan's allocator lock in the
  // child, whose pool then never started (seen under make asan).
  int told[2];
  REQUIRE(::pipe2(told, O_CLOEXEC) == 0);
  const int code = support::exit_code_of_child([&] {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ferry::Executor ex(sandboxed(1));  // on main's stack: exit() runs no destructor of it
    if (!task_writes(ex, "left", "by a task")) return 3;
    const std::vector<fs::path> dirs = private_dirs_in(base.path);
    if (dirs.size() != 1) return 2;
    static std::atomic<std::uint64_t> made{0};
    std::thread(keep_making_directories, dirs.front(), nullptr, &made).detach();
    if (!support::wait_until([&] { return made.load() >= writer_backlog; }, 30s)) return 4;
    const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    if (::write(told[1], &now, sizeof now) != sizeof now) return 5;
    share_first_cpu(true);  // exit() removes the directory from this thread
    std::exit(0);
  }, 60s);
  const auto ended = std::chrono::steady_clock::now();
  ::close(told[1]);  // the read below ends at once if the child never wrote
  std::optional<std::chrono::steady_clock::time_point> exit_called;
  std::int64_t at = 0;
  if (::read(told[0], &at, sizeof at) == sizeof at)
    exit_called = std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(at));
  ::close(told[0]);
  CHECK(code == 0);
  REQUIRE(exit_called.has_value());
  // Not a speed test: exit() must not wait for a writer that never stops (30 s before).
  CHECK(ended - *exit_called < 10s);
  const std::vector<fs::path> left = private_dirs_in(base.path);
  CHECK(left.size() <= 1);
  if (left.empty() || !locked_for_the_sweep(left.front())) return;
  std::optional<ferry::Executor> next;
  CHECK(swept_by_later_pools(next, base.path, left.front(), 60s));
}

TEST_CASE("SandboxTmpdir.a_sweep_keeps_to_its_budget_over_a_dead_hosts_directory_still_being_added_to") {
  // The sweep runs in the executor's constructor, over the whole place, and had no total budget:
  // a dead host's tree still being added to (by what its tasks left running), or a huge one, kept
  // remove_tree at it for 30 s, and the constructor waited. It now stops after 500 ms; later
  // pools go on with what is left. (A huge tree that nothing adds to would need as long to make
  // here as the old sweep took to remove it: the writer stands for both.)
  support::TempDir base;
  const fs::path stale = base.path / "ferry-sandbox-SSSSSS-locked";  // as a killed host leaves it
  fs::create_directory(stale);
  REQUIRE(::chmod(stale.c_str(), 0700) == 0);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> made{0};
  std::thread writer(keep_making_directories, stale, &stop, &made);
  const bool writing = support::wait_until([&] { return made.load() >= writer_backlog; }, 30s);
  const auto started = std::chrono::steady_clock::now();
  std::optional<ferry::Executor> ex;
  std::string failed;
  if (writing) {
    // Made (and the place swept) by a thread behind the writer on its CPU; the pool's threads
    // and workers keep that CPU and niceness (this pool is replaced by the next one below).
    std::thread maker([&] {
      share_first_cpu(true);
      try {
        support::ScopedEnv env("TMPDIR", base.path.string());
        ex.emplace(sandboxed(1));
      } catch (const std::exception& e) {
        failed = e.what();
      }
    });
    maker.join();
  }
  const auto took = std::chrono::steady_clock::now() - started;
  stop = true;
  writer.join();
  REQUIRE(writing);
  REQUIRE_MESSAGE(failed.empty(), failed);
  // Not a speed test: the constructor must not wait for a writer that never stops (30 s before).
  CHECK(took < 10s);
  std::vector<fs::path> own = private_dirs_in(base.path);
  own.erase(std::remove(own.begin(), own.end(), stale), own.end());
  REQUIRE(own.size() == 1);
  if (!locked_for_the_sweep(own.front())) return;
  CHECK(swept_by_later_pools(ex, base.path, stale, 60s));
  CHECK(value_of(ex->submit_with(hostile(), tmpfile_round_trip, std::string("kept"))) == "kept");
}
