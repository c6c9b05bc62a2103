// SPDX-License-Identifier: BSD-3-Clause
// A plugin's file identity as a pool sees it: a plugin written in place with its size and
// modification time kept (new bytes of the same length, then the old mtime set back) is another
// version, so workers holding the old code are retired, and a crash it causes is said as such.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <vector>

#include <doctest/doctest.h>

#include "support/fixture.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::vector<char> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// `bytes` written into `file` in place (no truncation, the same inode), then the file's access
/// and modification times set back to `times`: what is left to see of the write is the change time.
void write_in_place_keeping_mtime(const fs::path& file, const std::vector<char>& bytes, const struct stat& times) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  const struct timespec kept[2] = {times.st_atim, times.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, file.c_str(), kept, 0) == 0);
}

std::int64_t ns(const struct timespec& t) { return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

/// Waits until the clock is past `file`'s change time by a coarse clock's tick (a jiffy), so that
/// a write now gets another change time.
void past_change_time(const fs::path& file) {
  REQUIRE(support::wait_until([&] {
    struct stat st {};
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    return ::stat(file.c_str(), &st) == 0 && ns(now) - ns(st.st_ctim) > 20'000'000;
  }));
}

/// Whether a thread of process `pid` is inside nanosleep (the crash plugin's wait_while_exists,
/// past its task's symbol lookup, which reads the file's symbol table: zeros written before it
/// made the call a PluginError, "has no task symbol", instead of the crash).
bool blocked_in_the_tasks_wait(int pid) {
  std::error_code ec;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(t.path() / "syscall");
    long nr = -1;
    if (in >> nr && (nr == SYS_clock_nanosleep || nr == SYS_nanosleep)) return true;
  }
  return false;
}

/// Whether the write left `file`'s size, mtime and inode as in `before` and moved its change time
/// (a file system with a coarse clock may stamp it with the same: nothing to show then).
bool only_the_change_time_moved(const fs::path& file, const struct stat& before) {
  struct stat after {};
  REQUIRE(::stat(file.c_str(), &after) == 0);
  REQUIRE(after.st_ino == before.st_ino);
  REQUIRE(after.st_size == before.st_size);
  REQUIRE(ns(after.st_mtim) == ns(before.st_mtim));
  return ns(after.st_ctim) != ns(before.st_ctim);
}

ferry::ExecutorOptions options_for(const fs::path& dir, std::size_t workers = 1) {
  auto o = support::options(workers);
  o.plugin_dirs = {dir};
  return o;
}

}  // namespace

TEST_CASE("Plugins.rewritten_in_place_with_size_and_mtime_kept_is_used_by_new_work_and_old_workers_retire") {
  // The pool's generation of a library followed its version (device, inode, size, mtime): a
  // plugin written in place with the same length and its mtime set back was read again by the
  // index but kept its generation, and the workers with the old code ran the new calls.
  support::TempDir dir;
  auto v1 = read_bytes(FERRY_TEST_VERSIONED_V1);
  auto v2 = read_bytes(FERRY_TEST_VERSIONED_V2);
  // Both of one length (zeros after an ELF file's last section are not read).
  const std::size_t size = std::max(v1.size(), v2.size());
  v1.resize(size, 0);
  v2.resize(size, 0);
  const fs::path plugin = dir.path / "libversioned.so";
  {
    const fs::path tmp = dir.path / "libversioned.so.tmp";
    std::ofstream(tmp, std::ios::binary).write(v1.data(), static_cast<std::streamsize>(v1.size()));
    fs::permissions(tmp, fs::perms(0755));
    fs::rename(tmp, plugin);
  }
  ferry::Executor ex(options_for(dir.path, 2));
  REQUIRE(ex.warm_up(10s));
  std::set<int> old_workers;
  for (int i = 0; i < 6; ++i) {
    CHECK(ex.submit<int>("plugin_version").get() == 1);
    old_workers.insert(ex.submit<int>("plugin_worker_pid").get());
  }
  struct stat before {};
  REQUIRE(::stat(plugin.c_str(), &before) == 0);
  past_change_time(plugin);
  write_in_place_keeping_mtime(plugin, v2, before);
  if (!only_the_change_time_moved(plugin, before)) {
    MESSAGE("this file system stamped the write with the change time before it: nothing to show");
    return;
  }
  for (int i = 0; i < 6; ++i) {
    const int pid = ex.submit<int>("plugin_worker_pid").get();
    CHECK_MESSAGE(old_workers.count(pid) == 0, "a worker with version 1 loaded ran work of the rewritten file");
    CHECK(ex.submit<int>("plugin_version").get() == 2);
  }
  // The retired workers exit; the pool is back to its size.
  CHECK(support::wait_until([&] {
    for (int pid : old_workers)
      if (support::alive(pid)) return false;
    return true;
  }));
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
}

/// A copy of the crash plugin in a directory of its own, loaded by a one-worker executor whose
/// worker is blocked in the plugin's wait_while_exists (until `hold` goes): `before` is the file as
/// it was, its change time in the past, when the task started.
struct BlockedInThePlugin {
  support::TempDir dir;
  fs::path plugin = dir.path / "libcrash.so";
  fs::path hold = dir.path / "hold";
  std::optional<ferry::Executor> ex;
  std::optional<ferry::Future<void>> f;
  struct stat before {};
  int worker = -1;

  BlockedInThePlugin() {
    fs::copy_file(FERRY_TEST_CRASH_PLUGIN, plugin);
    fs::permissions(plugin, fs::perms(0755), fs::perm_options::replace);
    std::ofstream(hold).put('x');
    ex.emplace(options_for(dir.path));
    REQUIRE(ex->submit<int>(ferry::TaskRef{.library = plugin, .name = "initialized"}).get() == 0);
    REQUIRE(::stat(plugin.c_str(), &before) == 0);
    past_change_time(plugin);
    f = ex->submit<void>(ferry::TaskRef{.library = plugin, .name = "wait_while_exists"}, hold.string());
    REQUIRE(support::wait_until([&] {
      if (!f->running()) return false;
      for (int pid : ex->worker_pids())
        if (blocked_in_the_tasks_wait(pid)) worker = pid;
      return worker > 0;
    }));
  }
};

TEST_CASE("Plugins.rewritten_in_place_with_size_and_mtime_kept_while_loaded_is_named_in_the_crash") {
  // The crash note compared the version (no change time) of the file then and now: zeros written
  // over the code a worker runs, the length and mtime kept, killed it with no word of the file.
  BlockedInThePlugin b;
  const fs::path& plugin = b.plugin;
  const struct stat& before = b.before;
  ferry::Future<void>& f = *b.f;
  // The worker's loop returns from each nanosleep into the plugin's code: zeros there now.
  write_in_place_keeping_mtime(plugin, std::vector<char>(static_cast<std::size_t>(before.st_size), 0), before);
  const bool moved = only_the_change_time_moved(plugin, before);
  // Should the worker live on, the task ends rather than the test's time.
  if (!f.wait_for(20s)) fs::remove(b.hold);
  try {
    f.get();
    FAIL("the task returned");
  } catch (const ferry::TerminatedWorkerError& e) {
    if (!moved) {
      MESSAGE("this file system stamped the write with the change time before it: nothing to show");
      return;
    }
    CHECK_MESSAGE(std::string(e.what()).find("its plugin " + plugin.string() + " was rewritten in place while loaded") !=
                      std::string::npos,
                  e.what());
  }
}

TEST_CASE("Plugins.a_chmod_of_a_loaded_plugin_is_not_called_a_rewrite_alone_in_the_crash") {
  // A chmod, chown or new hard link moves the change time as a write that keeps the size and mtime
  // does: a worker that crashed after its plugin was chmod-ed was said to have had its plugin
  // "rewritten in place", which it was not.
  BlockedInThePlugin b;
  const fs::path& plugin = b.plugin;
  ferry::Future<void>& f = *b.f;
  fs::permissions(plugin, fs::perms(0750), fs::perm_options::replace);
  const bool moved = only_the_change_time_moved(plugin, b.before);
  REQUIRE(::kill(b.worker, SIGSEGV) == 0);  // the crash the note is given to
  try {
    f.get();
    FAIL("the task returned");
  } catch (const ferry::TerminatedWorkerError& e) {
    if (!moved) {
      MESSAGE("this file system stamped the chmod with the change time before it: nothing to show");
      return;
    }
    CHECK_MESSAGE(std::string(e.what()).find("its plugin " + plugin.string() +
                                             " was rewritten in place while loaded, or only its attributes changed") !=
                      std::string::npos,
                  e.what());
  }
}
