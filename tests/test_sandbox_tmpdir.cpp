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
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <typeinfo>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
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
