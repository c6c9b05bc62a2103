// SPDX-License-Identifier: BSD-3-Clause
// Plugin directories seen through an executor: plugins dropped in or replaced while the host runs,
// refused plugins, and what workers do about a replaced plugin.
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <set>

#include <doctest/doctest.h>

#include "support/fixture.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {
/// Copies `from` to `dir/name` atomically (copy aside, then rename), as a package manager would.
void install(const fs::path& from, const fs::path& dir, const std::string& name) {
  fs::path tmp = dir / (name + ".tmp");
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, dir / name);
}

ferry::ExecutorOptions options_for(const fs::path& dir, std::size_t workers = 1) {
  auto o = support::options(workers);
  o.plugin_dirs = {dir};
  return o;
}
}  // namespace

TEST_CASE("Plugins.dropped_in_while_the_host_runs") {
  support::TempDir dir;
  ferry::Executor ex(options_for(dir.path));
  CHECK_THROWS_AS(ex.submit<int>("plugin_version").get(), ferry::PluginError);
  install(FERRY_TEST_VERSIONED_V1, dir.path, "libversioned.so");
  CHECK(ex.submit<int>("plugin_version").get() == 1);  // found on the next lookup, no restart
}

TEST_CASE("Plugins.replaced_file_is_used_by_new_work_and_old_workers_retire") {
  support::TempDir dir;
  install(FERRY_TEST_VERSIONED_V1, dir.path, "libversioned.so");
  ferry::Executor ex(options_for(dir.path, 2));
  REQUIRE(ex.warm_up(10s));
  std::set<int> old_workers;
  for (int i = 0; i < 6; ++i) {
    CHECK(ex.submit<int>("plugin_version").get() == 1);
    old_workers.insert(ex.submit<int>("plugin_worker_pid").get());
  }
  install(FERRY_TEST_VERSIONED_V2, dir.path, "libversioned.so");
  for (int i = 0; i < 6; ++i) {
    CHECK(ex.submit<int>("plugin_version").get() == 2);
    int pid = ex.submit<int>("plugin_worker_pid").get();
    CHECK_MESSAGE(old_workers.count(pid) == 0, "a worker with version 1 loaded ran version-2 work");
  }
  // The retired workers exit, cleanly; the pool is back to its size.
  CHECK(support::wait_until([&] {
    for (int pid : old_workers)
      if (support::alive(pid)) return false;
    return true;
  }));
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
  // Through an explicit TaskRef too.
  install(FERRY_TEST_VERSIONED_V1, dir.path, "libversioned.so");
  CHECK(ex.submit<int>(ferry::TaskRef{.library = dir.path / "libversioned.so", .name = "plugin_version"}).get() == 1);
}

TEST_CASE("Plugins.unsafe_plugins_are_refused_unless_allowed") {
  support::TempDir dir;
  install(FERRY_TEST_VERSIONED_V1, dir.path, "libversioned.so");
  ::chmod((dir.path / "libversioned.so").c_str(), 0666);
  {
    ferry::Executor ex(options_for(dir.path));
    CHECK_THROWS_WITH_AS(ex.submit<int>("plugin_version").get(),
                         doctest::Contains("writable by group or others"), ferry::PluginError);
    CHECK_THROWS_WITH_AS(
        ex.submit<int>(ferry::TaskRef{.library = dir.path / "libversioned.so", .name = "plugin_version"}).get(),
        doctest::Contains("allow_unsafe_plugins"), ferry::PluginError);
  }
  auto o = options_for(dir.path);
  o.allow_unsafe_plugins = true;
  ferry::Executor ex(o);
  CHECK(ex.submit<int>("plugin_version").get() == 1);
}

TEST_CASE("Plugins.a_relative_task_ref_is_the_current_directorys_at_each_submission") {
  // A TaskRef's library is made absolute against the current directory of its submission: after a
  // chdir, the same relative path is another file (it was taken as the first one's for a second).
  support::TempDir a, b;
  install(FERRY_TEST_VERSIONED_V1, a.path, "libversioned.so");
  install(FERRY_TEST_VERSIONED_V2, b.path, "libversioned.so");
  const fs::path before = fs::current_path();
  struct Back {
    fs::path to;
    ~Back() { fs::current_path(to); }
  } back{before};
  ferry::Executor ex(support::options(1));
  fs::current_path(a.path);
  for (int i = 0; i < 3; ++i)
    CHECK(ex.submit<int>(ferry::TaskRef{.library = "libversioned.so", .name = "plugin_version"}).get() == 1);
  fs::current_path(b.path);
  CHECK(ex.submit<int>(ferry::TaskRef{.library = "libversioned.so", .name = "plugin_version"}).get() == 2);
}

TEST_CASE("Plugins.one_rewritten_in_place_while_loaded_is_named_in_the_crash") {
  // `cp new.so plugins/libx.so` rewrites the file a worker has mapped: the worker dies of SIGBUS
  // (the file's pages are gone) or runs the new bytes at the old offsets, and the error said only
  // "SIGBUS". It says which plugin was rewritten and how to install one instead.
  support::TempDir dir;
  install(FERRY_TEST_CRASH_PLUGIN, dir.path, "libcrash.so");
  const fs::path plugin = dir.path / "libcrash.so";
  const fs::path hold = dir.path / "hold";
  std::ofstream(hold).put('x');
  ferry::Executor ex(options_for(dir.path));
  // Loaded by the worker first, so that what follows runs in its mapping.
  REQUIRE(ex.submit<int>(ferry::TaskRef{.library = plugin, .name = "initialized"}).get() == 0);
  auto f = ex.submit<void>(ferry::TaskRef{.library = plugin, .name = "wait_while_exists"}, hold.string());
  REQUIRE(support::wait_until([&] { return f.running(); }));
  fs::resize_file(plugin, 0);  // in place, as cp's O_TRUNC: same file, no bytes
  try {
    f.get();
    FAIL("the task returned");
  } catch (const ferry::TerminatedWorkerError& e) {
    CHECK(e.signal() == SIGBUS);
    CHECK_MESSAGE(std::string(e.what()).find("its plugin " + plugin.string() + " was rewritten in place while loaded") !=
                      std::string::npos,
                  e.what());
  }
  // An ordinary crash says nothing of the kind.
  auto crash = ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_CRASH_PLUGIN, .name = "segfault"}, 1);
  try {
    crash.get();
    FAIL("segfault returned");
  } catch (const ferry::TerminatedWorkerError& e) {
    CHECK(std::string(e.what()).find("rewritten in place") == std::string::npos);
  }
}
