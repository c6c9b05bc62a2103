// SPDX-License-Identifier: BSD-3-Clause
// The one trust check (core/src/platform/trust.*) and the places that use it: plugins (index,
// TaskRef, `ferry list` and `ferry run` alike), the worker program, symbolic links.
#include <dlfcn.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>

#include <doctest/doctest.h>

#include "host/resolver.hpp"
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
  SUBCASE("a world-writable file") {
    auto f = t.file(t.safe, "lib.so", fs::perms(0646));
    auto v = trust_verdict(f);
    CHECK(v.at == f);
    CHECK(contains(v.why, "writable by group or others (mode 0646)"));
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

TEST_CASE("Trust.a_main_program_path_another_user_could_have_made_is_not_loaded") {
  // A worker loads the host's executable only to say why a main-program function cannot run.
  // /proc/self/exe names a deleted one "PATH (deleted)": in a directory others can create entries
  // in, another user's library by that name ran in every worker. Such a path is replaced by one
  // in / that cannot load and says why.
  Tree t;
  fs::path sticky = t.root.path / "sticky";
  fs::create_directories(sticky);
  fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
  // Ours, or missing where nobody else can create it: sent as it is.
  auto mine = t.file(t.safe, "host", fs::perms(0755));
  CHECK(ferry::detail::main_program_to_load(mine.string()) == mine.string());
  const std::string gone = (t.safe / "host (deleted)").string();
  CHECK(ferry::detail::main_program_to_load(gone) == gone);
  // Missing where anyone may create it: not sent.
  const std::string open_gone = (sticky / "host (deleted)").string();
  std::string sent = ferry::detail::main_program_to_load(open_gone);
  CHECK(sent.rfind("/(not loaded: ", 0) == 0);
  CHECK(contains(sent, ")/host (deleted)"));
  if (::geteuid() == 0) {
    // Made there by another user: not sent either.
    auto planted = t.file(sticky, "host (deleted)");
    REQUIRE(::chown(planted.c_str(), 65534, 65534) == 0);
    sent = ferry::detail::main_program_to_load(planted.string());
    CHECK(sent.rfind("/(not loaded: ", 0) == 0);
    CHECK(contains(sent, "owned by uid 65534"));
  }
}

TEST_CASE("Trust.group_writable_is_fine_when_the_group_is_the_owners_alone") {
  // umask 002 with a group of one's own (Debian's default for users): what the user creates is
  // group-writable, and only they are in that group. Any other group is as good as others.
  if (::geteuid() != 0) {
    MESSAGE("not root: cannot give files to other groups here");
    return;
  }
  Tree t;
  fs::path dir = t.root.path / "shared";
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms(0775), fs::perm_options::replace);
  auto f = t.file(dir, "lib.so", fs::perms(0664));
  // root's group (gid 0) is root's alone on Debian: no member listed, no other account's primary
  // group. Checked here from the files themselves, as the premise of what follows.
  {
    std::ifstream group("/etc/group"), passwd("/etc/passwd");
    std::string line;
    while (std::getline(group, line))
      if (line.rfind("root:", 0) == 0) REQUIRE_MESSAGE(line.back() == ':', "root's group lists members: " << line);
    while (std::getline(passwd, line)) {
      auto a = line.find(':'), b = line.find(':', a + 1), c = line.find(':', b + 1), d = line.find(':', c + 1);
      if (line.substr(c + 1, d - c - 1) == "0")
        REQUIRE_MESSAGE(line.substr(b + 1, c - b - 1) == "0", "another account in group 0: " << line);
    }
  }
  CHECK(untrusted_reason(f) == "");
  CHECK(untrusted_reason(dir) == "");
  SUBCASE("a group that is not the owner's primary group (nogroup), or no group at all") {
    for (gid_t other : {gid_t{65534}, gid_t{424242}}) {
      CAPTURE(other);
      REQUIRE(::chown(f.c_str(), static_cast<uid_t>(-1), other) == 0);
      auto v = trust_verdict(f);
      CHECK(v.at == f);
      CHECK(contains(v.why, "writable by group or others (mode 0664; group " + std::to_string(other) +
                                " is not uid 0's own)"));
      REQUIRE(::chown(f.c_str(), static_cast<uid_t>(-1), 0) == 0);
      REQUIRE(::chown(dir.c_str(), static_cast<uid_t>(-1), other) == 0);
      CHECK(trust_verdict(f).at == dir);
      REQUIRE(::chown(dir.c_str(), static_cast<uid_t>(-1), 0) == 0);
    }
  }
  SUBCASE("writable by others too") {
    fs::permissions(f, fs::perms(0666), fs::perm_options::replace);
    CHECK(contains(untrusted_reason(f), "writable by group or others (mode 0666)"));
  }
  SUBCASE("the group has another member, or is another account's primary group") {
    // In a mount namespace of a child, /etc/group or /etc/passwd replaced by a copy that says so.
    struct Case {
      const char* file;
      std::string text;
    };
    for (const Case& c : {Case{"/etc/group", "root:x:0:nobody\n"},
                          Case{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nintruder:x:4242:0::/:/bin/sh\n"}}) {
      CAPTURE(c.file);
      fs::path copy = t.root.path / "copy";
      std::ofstream(copy) << c.text;
      pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount(copy.c_str(), c.file, nullptr, MS_BIND, nullptr) != 0)
          ::_exit(2);
        auto v = trust_verdict(f);
        ::_exit(v.at == dir && contains(v.why, "group 0 is not uid 0's own") ? 0 : 1);
      }
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);  // 2: no mount namespace here
    }
    CHECK(untrusted_reason(f) == "");  // the parent's view is unchanged
  }
}

namespace {

/// A POSIX access ACL as the kernel stores it: owner rw, `named` (a user) with `perm`, the owning
/// group r, mask rw, others r.
std::string access_acl(std::uint32_t named, std::uint16_t perm) {
  std::string acl;
  auto u16 = [&](std::uint16_t v) { acl += static_cast<char>(v & 0xff), acl += static_cast<char>(v >> 8); };
  auto u32 = [&](std::uint32_t v) { u16(static_cast<std::uint16_t>(v & 0xffff)), u16(static_cast<std::uint16_t>(v >> 16)); };
  auto entry = [&](std::uint16_t tag, std::uint16_t p, std::uint32_t id) { u16(tag), u16(p), u32(id); };
  u32(2);
  entry(0x01, 6, 0xffffffff);  // the owner
  entry(0x02, perm, named);    // a named user
  entry(0x04, 4, 0xffffffff);  // the owning group
  entry(0x10, 6, 0xffffffff);  // the mask: the mode's group bits
  entry(0x20, 4, 0xffffffff);  // others
  return acl;
}

}  // namespace

TEST_CASE("Trust.group_bits_that_are_an_acl_mask_are_checked_against_the_acl") {
  // With an ACL, a file's group bits are its mask: 0664 and the owner's own group looked private
  // while a named user could write it (a directory shared with `setfacl -m u:bob:rwx`, whose
  // files inherit the entry). Judged by the ACL's entries.
  Tree t;
  auto f = t.file(t.safe, "lib.so", fs::perms(0644));
  const std::string writer = access_acl(65534, 6), reader = access_acl(65534, 4);
  if (::setxattr(f.c_str(), "system.posix_acl_access", writer.data(), writer.size(), 0) != 0) {
    MESSAGE("no POSIX ACLs here: " << std::strerror(errno));
    return;
  }
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0664);  // the mask shows as the group's bits
  auto v = trust_verdict(f);
  CHECK(v.at == f);
  CHECK(contains(v.why, "writable by user 65534 through its ACL (mode 0664)"));
  // This user (root here) or root named with write: allowed, as the owner is.
  const std::string self = access_acl(::geteuid(), 6);
  REQUIRE(::setxattr(f.c_str(), "system.posix_acl_access", self.data(), self.size(), 0) == 0);
  CHECK(untrusted_reason(f) == "");
  // A named user who may only read: as safe as without an ACL.
  REQUIRE(::setxattr(f.c_str(), "system.posix_acl_access", reader.data(), reader.size(), 0) == 0);
  CHECK(untrusted_reason(f) == "");
  // A directory on the way the same: what is in it could be replaced.
  REQUIRE(::setxattr(t.safe.c_str(), "system.posix_acl_access", writer.data(), writer.size(), 0) == 0);
  CHECK(trust_verdict(f).at == t.safe);
  REQUIRE(::removexattr(t.safe.c_str(), "system.posix_acl_access") == 0);
  fs::permissions(t.safe, fs::perms(0755), fs::perm_options::replace);
  CHECK(untrusted_reason(f) == "");
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
  // A path that ends in ".." leads to the directory it names: judged as the final one (a
  // private directory in the sticky one made /tmp/x/.. pass as trusted).
  fs::create_directories(sticky / "mine");
  fs::permissions(sticky / "mine", fs::perms(0755), fs::perm_options::replace);
  CHECK(contains(untrusted_reason(sticky / "mine" / ".."), "writable by group or others"));
  CHECK(contains(untrusted_reason_if_present(sticky / "mine" / ".." / "ferry-worker"), "another user could create it"));
  fs::create_directory_symlink(".", sticky / "mine" / "here");  // a link to "." ends where it is
  CHECK(contains(untrusted_reason(sticky / "mine" / "here" / ".."), "writable by group or others"));
  fs::create_directory_symlink(".", sticky / "dot");
  CHECK(contains(untrusted_reason(sticky / "dot"), "writable by group or others"));
  CHECK(untrusted_reason(t.safe / "sub" / "..") != "");  // missing on the way
  fs::create_directories(t.safe / "sub");
  CHECK(untrusted_reason(t.safe / "sub" / "..") == "");
  // Through the index: a TaskRef to a missing library in a sticky directory is refused at once.
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_AS(ex.submit<int>(ferry::TaskRef{.library = (sticky / "libgone.so").string(), .name = "square"}, 3).get(),
                  ferry::PluginError);
}

TEST_CASE("Trust.a_plugin_the_host_loaded_from_an_open_directory_is_not_sent_to_workers") {
  // Submitted by function, a plugin the host has loaded travels by its path, and every worker
  // loads it by that path later (on demand, after a crash): in a directory others can write,
  // another user could replace it in between. Checked as a plugin found by name is.
  Tree t;
  fs::path copy = install(FERRY_TEST_MATH_PLUGIN, t.open, "libmath_open.so");
  void* handle = ::dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  REQUIRE_MESSAGE(handle, ::dlerror());
  auto square = reinterpret_cast<int (*)(int)>(::dlsym(handle, "_Z6squarei"));
  REQUIRE(reinterpret_cast<void*>(square) != nullptr);
  ferry::Executor ex(support::options(1));
  auto e = ex.submit(square, 3);
  try {
    e.get();
    FAIL("ran");
  } catch (const ferry::PluginError& error) {
    CHECK(contains(error.what(), "writable by group or others"));
  }
  // The same function from a private directory runs.
  fs::path safe = install(FERRY_TEST_MATH_PLUGIN, t.safe, "libmath_safe.so");
  void* safe_handle = ::dlopen(safe.c_str(), RTLD_NOW | RTLD_LOCAL);
  REQUIRE_MESSAGE(safe_handle, ::dlerror());
  auto safe_square = reinterpret_cast<int (*)(int)>(::dlsym(safe_handle, "_Z6squarei"));
  REQUIRE(reinterpret_cast<void*>(safe_square) != nullptr);
  CHECK(ex.submit(safe_square, 3).get() == 9);
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
  // Its RUNPATH is $ORIGIN/../lib, as installed: libferry beside the copy's directory.
  fs::create_directory_symlink(fs::path(FERRY_TEST_WORKER).parent_path().parent_path() / "lib",
                               t.root.path / "lib");
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

TEST_CASE("Trust.a_lookup_judges_the_plugin_directory_as_ferry_list_does") {
  // A sticky plugin directory (as /tmp) may be on a path's way, but what others add to a plugin
  // directory is taken as a plugin: `ferry list` refused it, a lookup took our own file in it.
  Tree t;
  fs::path sticky = t.root.path / "sticky";
  fs::create_directories(sticky);
  fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
  install(FERRY_TEST_MATH_PLUGIN, sticky, "libmath.so");
  // Named directly, and through a link to it (the link made the sticky directory one on the way).
  fs::create_symlink(sticky, t.root.path / "plugins");
  for (const fs::path& dir : {sticky, t.root.path / "plugins"}) {
    CAPTURE(dir);
    ferry::PluginIndex index({dir});
    try {
      index.find("square");
      FAIL("found");
    } catch (const ferry::PluginError& e) {
      CHECK(contains(e.what(), "writable by group or others (mode 1777)"));
    }
    CHECK_FALSE(trust_verdict(dir / "libmath.so", true));
  }
  // A link as the file's own name leads elsewhere: its target's way is judged as any way is.
  fs::create_directories(t.root.path / "mine");
  fs::permissions(t.root.path / "mine", fs::perms(0755), fs::perm_options::replace);
  fs::create_symlink(sticky / "libmath.so", t.root.path / "mine" / "libmath.so");
  CHECK(trust_verdict(t.root.path / "mine" / "libmath.so", true));
}

TEST_CASE("Trust.a_refused_plugin_makes_no_trusted_one_ambiguous") {
  // Another user's file in a shared directory on the search path that exports the same task:
  // the lookup failed as ambiguous (a denial of service by anyone who can write there). The
  // trusted plugin is taken; the refused one is named only when it is all there is.
  Tree t;
  install(FERRY_TEST_MATH_PLUGIN, t.safe, "libmath.so");
  install(FERRY_TEST_MATH_PLUGIN, t.open, "libmath_too.so");
  ferry::PluginIndex index({t.open, t.safe});
  CHECK(index.find("square").library == fs::canonical(t.safe / "libmath.so"));
  ferry::PluginIndex only_open({t.open});
  CHECK_THROWS_AS(only_open.find("square"), ferry::PluginError);
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

TEST_CASE("Trust.private_directories_are_not_made_through_another_users_link") {
  // FERRY_CACHE_DIR=/tmp/<their link>/sub/ferry: the directories were made wherever the link
  // pointed, before the cache's own check refused them.
  Tree t;
  std::error_code ec;
  CHECK(ferry::detail::create_private_directories(t.safe / "a" / "b", ec));
  CHECK(fs::is_directory(t.safe / "a" / "b"));
  CHECK((fs::status(t.safe / "a").permissions() & fs::perms::all) == fs::perms::owner_all);
  CHECK_FALSE(ferry::detail::create_private_directories(t.open / "c", ec));  // others could swap it
  CHECK_FALSE(fs::exists(t.open / "c"));
  if (::geteuid() != 0) {
    MESSAGE("another user's link: not checked, only root can make one");
    return;
  }
  fs::create_symlink(t.safe, t.root.path / "theirs");
  REQUIRE(::lchown((t.root.path / "theirs").c_str(), 65534, 65534) == 0);
  std::string why;
  CHECK_FALSE(ferry::detail::create_private_directories(t.root.path / "theirs" / "sub" / "ferry", ec, &why));
  CHECK(ec == std::errc::permission_denied);
  CHECK(contains(why, "a symbolic link owned by uid 65534"));
  CHECK_FALSE(fs::exists(t.safe / "sub"));
  CHECK(ferry::detail::untrusted_way_reason(t.root.path / "theirs" / "x") != "");
  CHECK(ferry::detail::untrusted_way_reason(t.root.path / "x") == "");  // not made yet: fine
}

TEST_CASE("Trust.a_plugin_opened_to_others_after_its_check_is_refused_within_a_second") {
  // A name or TaskRef checked less than a second ago is taken as it resolved then while its file
  // keeps its version (a submission by name paid a lookup and a trust walk each time); a plugin
  // directory opened to others meanwhile is refused at the next check.
  Tree t;
  install(FERRY_TEST_MATH_PLUGIN, t.safe, "libmath.so");
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  auto o = support::options(1);
  o.plugin_dirs = {t.safe};
  ferry::Executor ex(o);
  CHECK(ex.submit<int>("square", 3).get() == 9);
  CHECK(ex.submit<int>(ferry::TaskRef{.library = t.safe / "libmath.so", .name = "square"}, 4).get() == 16);
  fs::permissions(t.safe, fs::perms(0777), fs::perm_options::replace);
  // Both were last checked before this: each is refused within a second of it. 1.5 s of slack
  // for the calls that run meanwhile (each a round trip to the worker) on a loaded machine.
  const auto opened = std::chrono::steady_clock::now();
  const auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(opened + std::chrono::milliseconds(2500) -
                                                                 std::chrono::steady_clock::now());
  };
  auto refused = [&](auto target) {
    try {
      ex.submit<int>(target, 5).get();
      return false;
    } catch (const ferry::PluginError& e) {
      return contains(e.what(), "writable by group or others");
    }
  };
  CHECK(support::wait_until([&] { return refused(std::string("square")); }, left()));
  CHECK(support::wait_until([&] { return refused(ferry::TaskRef{.library = t.safe / "libmath.so", .name = "square"}); },
                            left()));
  // The plugin file itself opened to others: refused at once (its change time moved).
  fs::permissions(t.safe, fs::perms(0755), fs::perm_options::replace);
  CHECK(support::wait_until([&] { return !refused(std::string("square")); }, std::chrono::seconds(5)));
  fs::permissions(t.safe / "libmath.so", fs::perms(0777), fs::perm_options::replace);
  CHECK(refused(std::string("square")));
}
