// SPDX-License-Identifier: BSD-3-Clause
// The one trust check (core/src/platform/trust.*) and the places that use it: plugins (index,
// TaskRef, `ferry list` and `ferry run` alike), the worker program, symbolic links.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <doctest/doctest.h>

#include "platform/trust.hpp"
#include "support/fixture.hpp"

namespace fs = std::filesystem;
using ferry::detail::trust_verdict;
using ferry::detail::untrusted_reason;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A private directory with a world-writable subdirectory and a safe one, each with a file.
struct Tree {
  support::TempDir root;
  fs::path open = root.path / "open";    // 0777
  fs::path safe = root.path / "safe";    // 0755
  Tree() {
    fs::create_directories(open);
    fs::create_directories(safe);
    fs::permissions(open, fs::perms(0777), fs::perm_options::replace);
    fs::permissions(safe, fs::perms(0755), fs::perm_options::replace);
  }
  fs::path file(const fs::path& dir, const std::string& name, fs::perms mode = fs::perms(0644)) {
    fs::path p = dir / name;
    std::ofstream(p) << "x";
    fs::permissions(p, mode, fs::perm_options::replace);
    return p;
  }
};

/// Copies a built plugin into `dir` (mode 0755).
fs::path install(const fs::path& from, const fs::path& dir, const std::string& name) {
  fs::path to = dir / name;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  fs::permissions(to, fs::perms(0755), fs::perm_options::replace);
  return to;
}

/// Runs a shell command; returns its exit status, with stdout and stderr in `out`.
int run(const std::string& command, std::string& out) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  out.clear();
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("Trust.private_file_under_sticky_tmp_is_trusted") {
  // TempDir lives in /tmp (root-owned, 1777): a sticky directory on the way is fine.
  Tree t;
  CHECK(untrusted_reason(t.file(t.safe, "lib.so")) == "");
  CHECK(untrusted_reason(t.safe) == "");
  CHECK(trust_verdict(t.file(t.safe, "lib2.so")));
}

TEST_CASE("Trust.writable_file_or_directory_on_the_way_is_refused") {
  Tree t;
  SUBCASE("a group-writable file") {
    auto f = t.file(t.safe, "lib.so", fs::perms(0664));
    auto v = trust_verdict(f);
    CHECK(v.at == f);
    CHECK(contains(v.why, "writable by group or others (mode 0664)"));
  }
  SUBCASE("a world-writable directory two levels up") {
    fs::create_directories(t.open / "deeper");
    fs::permissions(t.open / "deeper", fs::perms(0755), fs::perm_options::replace);
    auto f = t.file(t.open / "deeper", "lib.so");
    auto v = trust_verdict(f);
    CHECK(v.at == t.open);
    CHECK(contains(untrusted_reason(f), t.open.string() + " (on the way to " + f.string() + ")"));
  }
  SUBCASE("a sticky world-writable directory is fine on the way, not as the directory itself") {
    fs::path sticky = t.root.path / "sticky";
    fs::create_directories(sticky / "mine");
    fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
    fs::permissions(sticky / "mine", fs::perms(0700), fs::perm_options::replace);
    CHECK(untrusted_reason(t.file(sticky / "mine", "lib.so")) == "");
    CHECK(contains(untrusted_reason(sticky), "writable by group or others (mode 1777)"));
  }
  SUBCASE("missing") {
    CHECK(contains(untrusted_reason(t.safe / "nope.so"), "missing"));
  }
}

TEST_CASE("Trust.symbolic_links_are_checked_at_the_link_and_at_the_target") {
  Tree t;
  SUBCASE("a link in a world-writable directory to a safe file") {
    auto target = t.file(t.safe, "lib.so");
    fs::create_symlink(target, t.open / "lib.so");
    CHECK(trust_verdict(t.open / "lib.so").at == t.open);
  }
  SUBCASE("a link in a safe directory to a file in a world-writable one") {
    auto target = t.file(t.open, "lib.so");
    fs::create_symlink(target, t.safe / "lib.so");
    CHECK(trust_verdict(t.safe / "lib.so").at == t.open);
  }
  SUBCASE("a relative link that climbs out through ..") {
    auto target = t.file(t.open, "lib.so");
    fs::create_symlink("../open/lib.so", t.safe / "lib.so");
    CHECK(trust_verdict(t.safe / "lib.so").at == t.open);
    (void)target;
  }
  SUBCASE("a safe link to a safe file") {
    auto target = t.file(t.safe, "real.so");
    fs::create_symlink("real.so", t.safe / "lib.so");
    CHECK(untrusted_reason(t.safe / "lib.so") == "");
  }
  SUBCASE("a loop") {
    fs::create_symlink(t.safe / "b", t.safe / "a");
    fs::create_symlink(t.safe / "a", t.safe / "b");
    CHECK(contains(untrusted_reason(t.safe / "a"), "loop"));
  }
}

TEST_CASE("Trust.relative_paths_start_at_the_current_directory") {
  Tree t;
  t.file(t.safe, "lib.so");
  t.file(t.open, "lib.so");
  fs::path old = fs::current_path();
  fs::current_path(t.root.path);
  std::string safe = untrusted_reason("safe/lib.so");
  std::string open = untrusted_reason("./open/../open/lib.so");
  fs::current_path(old);
  CHECK(safe == "");
  CHECK(contains(open, "writable by group or others"));
}

TEST_CASE("Trust.a_file_of_another_user_is_refused") {
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot give a file to another user here");
    return;
  }
  Tree t;
  auto f = t.file(t.safe, "lib.so");
  REQUIRE(::chown(f.c_str(), 65534, 65534) == 0);
  CHECK(contains(untrusted_reason(f), "owned by uid 65534"));
  REQUIRE(::chown(t.safe.c_str(), 65534, 65534) == 0);
  REQUIRE(::chown(f.c_str(), 0, 0) == 0);
  CHECK(trust_verdict(f).at == t.safe);  // the directory's owner could swap the file
}

TEST_CASE("Trust.a_link_of_another_user_is_refused_even_to_a_safe_target") {
  // In a sticky directory (as /tmp) another user may own a link to our safe plugin directory:
  // it passes for ours when checked, and its owner points it at theirs before it is used.
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot give a link to another user here");
    return;
  }
  Tree t;
  fs::path sticky = t.root.path / "sticky";
  fs::create_directories(sticky);
  fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
  auto target = t.file(t.safe, "lib.so");
  fs::create_symlink(t.safe, sticky / "plugins");
  CHECK(untrusted_reason(sticky / "plugins" / "lib.so") == "");  // ours: fine
  REQUIRE(::lchown((sticky / "plugins").c_str(), 65534, 65534) == 0);
  auto v = trust_verdict(sticky / "plugins" / "lib.so");
  CHECK(v.at == sticky / "plugins");
  CHECK(contains(v.why, "a symbolic link owned by uid 65534"));
  CHECK(::lchown((sticky / "plugins").c_str(), 0, 0) == 0);  // root's links are trusted
  CHECK(untrusted_reason(sticky / "plugins" / "lib.so") == "");
  (void)target;
}

TEST_CASE("Trust.a_missing_file_is_fine_only_where_no_one_else_could_create_it") {
  // A TaskRef or worker path that does not exist yet is used later (loaded, spawned): in a
  // directory others can write, even a sticky one, another user could put a file there first.
  using ferry::detail::untrusted_reason_if_present;
  Tree t;
  fs::path sticky = t.root.path / "sticky";
  fs::create_directories(sticky);
  fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
  CHECK(untrusted_reason_if_present(t.safe / "nope.so") == "");
  CHECK(untrusted_reason_if_present(t.safe / "no" / "such" / "dir" / "lib.so") == "");
  CHECK(contains(untrusted_reason_if_present(sticky / "lib.so"), "another user could create it"));
  CHECK(contains(untrusted_reason_if_present(sticky / "a" / "b" / "lib.so"), "another user could create it"));
  CHECK(contains(untrusted_reason_if_present(t.open / "lib.so"), "writable by group or others"));
  // Present: the plain check.
  CHECK(untrusted_reason_if_present(t.file(t.safe, "lib.so")) == "");
  CHECK(contains(untrusted_reason_if_present(t.file(sticky, "lib.so", fs::perms(0666))), "writable"));
  // Through the index: a TaskRef to a missing library in a sticky directory is refused at once.
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_AS(ex.submit<int>(ferry::TaskRef{.library = (sticky / "libgone.so").string(), .name = "square"}, 3).get(),
                  ferry::PluginError);
}

TEST_CASE("Trust.plugin_directory_of_links_is_refused_by_the_index") {
  // A 0777 directory whose entries are symbolic links to safe plugins: once accepted.
  Tree t;
  fs::path real = install(FERRY_TEST_MATH_PLUGIN, t.safe, "libmath.so");
  fs::create_symlink(real, t.open / "libmath.so");
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  ferry::PluginIndex index({t.open});
  CHECK_THROWS_WITH_AS(index.find("square"), doctest::Contains("writable by group or others"),
                       ferry::PluginError);
  CHECK(index.tasks().empty());
  auto skipped = index.skipped();
  REQUIRE(skipped.size() == 1);
  CHECK(contains(skipped[0].reason, "refused"));
  CHECK(contains(skipped[0].reason, t.open.string()));
  ferry::PluginIndex allowed({t.open}, ferry::PluginIndexOptions{.allow_unsafe = true});
  CHECK(allowed.find("square").plugin == "math");
}

TEST_CASE("Trust.task_ref_through_a_link_in_an_open_directory_is_refused") {
  Tree t;
  fs::path real = install(FERRY_TEST_MATH_PLUGIN, t.safe, "libmath.so");
  fs::create_symlink(real, t.open / "libmath.so");
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_WITH_AS(
      ex.submit<int>(ferry::TaskRef{.library = t.open / "libmath.so", .name = "square"}, 3).get(),
      doctest::Contains("writable by group or others"), ferry::PluginError);
  CHECK(ex.submit<int>(ferry::TaskRef{.library = real, .name = "square"}, 3).get() == 9);
}

TEST_CASE("Trust.worker_program_in_an_open_directory_is_not_run") {
  Tree t;
  fs::path worker = install(FERRY_TEST_WORKER, t.open, "ferry-worker");
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  auto o = support::options(1);
  o.worker_path = worker;
  ferry::Executor ex(o);
  CHECK_THROWS_WITH_AS(ex.submit<int>("square", 3).get(), doctest::Contains("refusing to run it"),
                       ferry::BrokenProcessPool);
  o.allow_unsafe_plugins = true;
  ferry::Executor allowed(o);
  CHECK(allowed.submit<int>("square", 3).get() == 9);
}

TEST_CASE("Trust.ferry_list_and_ferry_run_give_the_same_verdict") {
  Tree t;
  install(FERRY_TEST_MATH_PLUGIN, t.open, "libmath.so");
  std::string out;
  std::string env = "FERRY_ALLOW_UNSAFE_PLUGINS=0 FERRY_PLUGIN_PATH= FERRY_WORKER='" FERRY_TEST_WORKER "' ";
  // list: the task is not offered, and stderr says why the file is refused.
  CHECK(run(env + "'" FERRY_TEST_CLI "' list '" + t.open.string() + "'", out) == 0);
  CHECK_FALSE(contains(out, "square"));
  CHECK(contains(out, "refused"));
  CHECK(contains(out, "writable by group or others"));
  // run: refused for the same reason (exit 3, a PluginError).
  CHECK(run(env + "'" FERRY_TEST_CLI "' run --plugin-dir '" + t.open.string() + "' square 3", out) == 3);
  CHECK(contains(out, "writable by group or others"));
  // Fixed: both accept it.
  fs::permissions(t.open, fs::perms(0755), fs::perm_options::replace);
  CHECK(run(env + "'" FERRY_TEST_CLI "' list '" + t.open.string() + "'", out) == 0);
  CHECK(contains(out, "square"));
  CHECK(run(env + "'" FERRY_TEST_CLI "' run --plugin-dir '" + t.open.string() + "' square 3", out) == 0);
  CHECK(contains(out, "9"));
}
