// SPDX-License-Identifier: BSD-3-Clause
// What the dynamic loader and glibc load code from by the environment (LD_PRELOAD, LD_AUDIT,
// GCONV_PATH, LD_ORIGIN_PATH), reaching the workers and the wrap compiler: only what no other
// user could have planted (keep_trusted_loader_environment, platform/trust.*).
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "platform/containment.hpp"
#include "platform/trust.hpp"
#include "plugins/load_dependencies.hpp"
#include "support/fixture.hpp"
#include "support/sanitizer.hpp"
#include "wrap/wrap_compiler.hpp"

namespace fs = std::filesystem;

namespace {

#if FERRY_TEST_SHADOW_MEMORY
// Under ASan a worker started with anything in LD_PRELOAD stops at once ("ASan runtime does not
// come first in initial library list"): these tests preload on purpose. Set before any thread.
[[maybe_unused]] const bool preloading_under_asan = [] {
  const char* old = std::getenv("ASAN_OPTIONS");
  const std::string options = (old && *old ? std::string(old) + ":" : std::string()) + "verify_asan_link_order=0";
  return ::setenv("ASAN_OPTIONS", options.c_str(), 1) == 0;
}();
#endif

/// Places for the loader's files: `open`, a directory others can write and replace files in
/// (0777, not sticky), and `mine`, one only we can (0755); each holds a copy of a plain shared
/// library and a directory of iconv modules. `mine_open_d` is ours, but its gconv-modules.d
/// (which glibc reads too) is open to others.
struct LoaderPlaces {
  support::TempDir open_dir, mine_dir, mine_open_d_dir;
  fs::path open = open_dir.path, mine = mine_dir.path, mine_open_d = mine_open_d_dir.path;
  fs::path open_library = open / "libplain.so", mine_library = mine / "libplain.so";
  LoaderPlaces() {
    fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, open_library);
    fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, mine_library);
    fs::create_directories(mine_open_d / "gconv-modules.d");
    fs::permissions(open, fs::perms(0777), fs::perm_options::replace);
    fs::permissions(mine, fs::perms(0755), fs::perm_options::replace);
    fs::permissions(mine_open_d, fs::perms(0755), fs::perm_options::replace);
    fs::permissions(mine_open_d / "gconv-modules.d", fs::perms(0777), fs::perm_options::replace);
  }
  /// Each variable with what must go (relative, another user's, a token the loader expands) and
  /// what must stay (ours, absolute; a bare name, looked for where every needed library is).
  std::map<std::string, std::string> given() const {
    return {{"LD_PRELOAD", open_library.string() + " " + mine_library.string() + ":libm.so.6:lib/libplain.so:" +
                               (mine / "$LIB" / "libplain.so").string()},
            {"LD_AUDIT", ":" + open_library.string() + ":" + mine_library.string() + ":libplain.so"},
            {"GCONV_PATH", open.string() + ":" + mine_open_d.string() + "::gconv:" + mine.string()},
            {"LD_ORIGIN_PATH", mine.string()}};
  }
  std::string kept_preload() const { return mine_library.string() + ":libm.so.6"; }
  std::string kept_audit() const { return mine_library.string() + ":libplain.so"; }
  std::string kept_gconv() const { return mine.string(); }
};

/// Under a sanitizer a worker given LD_AUDIT ends with exit 127 before its hello: the cases that
/// give it are skipped there (said in a MESSAGE).
bool audit_runs_here() {
  if (!FERRY_TEST_SHADOW_MEMORY) return true;
  MESSAGE("skipped under a sanitizer: a worker given LD_AUDIT ends with exit 127 before its hello there");
  return false;
}

/// Whether a sandbox can be made here (Sandbox.* say why not).
bool sandbox_runs_here() {
  return ferry::detail::containment_missing(ferry::detail::containment_support(), true, false, false).empty();
}

std::string value_in(ferry::Executor& ex, const char* name) { return ex.submit(getenv_task, std::string(name)).get(); }

/// What worker `pid` has mapped from `dir` (its /proc maps lines naming a file there).
std::vector<std::string> mapped_from(int pid, const fs::path& dir) {
  std::vector<std::string> lines;
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(dir.string() + "/") != std::string::npos) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("LoaderEnv.a_workers_LD_PRELOAD_holds_only_libraries_nobody_else_could_plant") {
  // A worker's loader loads what LD_PRELOAD names before main(): a copy of a library in a
  // directory others can write (they could have replaced it) was loaded into every worker, as
  // was one named relative to the host's current directory.
  LoaderPlaces places;
  auto o = support::options(1);
  o.env = {{"LD_PRELOAD", places.given().at("LD_PRELOAD")}};
  ferry::Executor ex(o);
  CHECK(value_in(ex, "LD_PRELOAD") == places.kept_preload());
  const int worker = ex.worker_pids().at(0);
  CHECK(mapped_from(worker, places.open).empty());
  CHECK(mapped_from(worker, places.mine).size() > 0);  // the trusted one is loaded
}

TEST_CASE("LoaderEnv.the_hosts_own_LD_PRELOAD_reaches_a_worker_judged") {
  // The host's environment is what most workers get: its LD_PRELOAD reached them unfiltered.
  LoaderPlaces places;
  support::ScopedEnv preload("LD_PRELOAD", places.open_library.string() + ":" + places.mine_library.string());
  ferry::Executor ex(support::options(1));
  CHECK(value_in(ex, "LD_PRELOAD") == places.mine_library.string());
  CHECK(mapped_from(ex.worker_pids().at(0), places.open).empty());
  // Nothing kept: none at all, not an empty one.
  support::ScopedEnv only_open("LD_PRELOAD", places.open_library.string());
  ferry::Executor none(support::options(1));
  CHECK(value_in(none, "LD_PRELOAD") == "");
}

TEST_CASE("LoaderEnv.a_workers_LD_AUDIT_GCONV_PATH_and_LD_ORIGIN_PATH_hold_only_what_nobody_else_could_plant") {
  if (!audit_runs_here()) return;
  // LD_AUDIT names libraries the loader loads before the program (as LD_PRELOAD); GCONV_PATH
  // names directories whose configuration files name the iconv modules iconv_open loads;
  // LD_ORIGIN_PATH is the program's $ORIGIN where /proc/self/exe cannot be read.
  LoaderPlaces places;
  auto o = support::options(1);
  const auto given = places.given();
  o.env = {given.begin(), given.end()};
  o.env.erase("LD_PRELOAD");
  ferry::Executor ex(o);
  CHECK(value_in(ex, "LD_AUDIT") == places.kept_audit());
  CHECK(value_in(ex, "GCONV_PATH") == places.kept_gconv());
  CHECK(value_in(ex, "LD_ORIGIN_PATH") == "");
}

TEST_CASE("LoaderEnv.a_sandboxed_worker_gets_the_loaders_variables_judged") {
  if (!audit_runs_here()) return;
  // A sandbox keeps what a process needs to run, the loader's variables among them: judged as
  // without a sandbox (but GCONV_PATH, which it drops).
  if (!sandbox_runs_here()) return;
  LoaderPlaces places;
  auto o = support::options(1);
  o.sandbox.enabled = true;
  support::ScopedEnv audit("LD_AUDIT", places.given().at("LD_AUDIT"));
  support::ScopedEnv gconv("GCONV_PATH", places.given().at("GCONV_PATH"));
  support::ScopedEnv preload("LD_PRELOAD", places.open_library.string() + ":" + places.mine_library.string());
  ferry::Executor ex(o);
  CHECK(value_in(ex, "LD_PRELOAD") == places.mine_library.string());
  CHECK(value_in(ex, "LD_AUDIT") == places.kept_audit());
  CHECK(value_in(ex, "GCONV_PATH") == "");  // never in a sandbox (LoaderEnv.a_sandboxed_worker_gets_no_GCONV_PATH)
}

TEST_CASE("LoaderEnv.allow_unsafe_plugins_keeps_the_loaders_variables_as_given") {
  if (!audit_runs_here()) return;
  LoaderPlaces places;
  const auto given = places.given();
  auto o = support::options(1);
  o.env = {given.begin(), given.end()};
  o.env.erase("LD_AUDIT");  // a plain library is no audit module: the loader would say so on stderr
  o.allow_unsafe_plugins = true;
  ferry::Executor unsafe(o);
  CHECK(value_in(unsafe, "LD_PRELOAD") == given.at("LD_PRELOAD"));
  CHECK(value_in(unsafe, "GCONV_PATH") == given.at("GCONV_PATH"));
  CHECK(value_in(unsafe, "LD_ORIGIN_PATH") == given.at("LD_ORIGIN_PATH"));
  CHECK(mapped_from(unsafe.worker_pids().at(0), places.open).size() > 0);  // as the user asked
  // By the environment (FERRY_ALLOW_UNSAFE_PLUGINS=1) too.
  support::ScopedEnv allowed("FERRY_ALLOW_UNSAFE_PLUGINS", "1");
  o.allow_unsafe_plugins = false;
  o.env = {{"LD_AUDIT", given.at("LD_AUDIT")}};
  ferry::Executor by_environment(o);
  CHECK(value_in(by_environment, "LD_AUDIT") == given.at("LD_AUDIT"));
}

TEST_CASE("LoaderEnv.the_wrap_compilers_environment_holds_only_what_nobody_else_could_plant") {
  // gcc, cc1plus, as and ld each start with the compiler's environment: their loader loaded
  // what LD_PRELOAD and LD_AUDIT named, on the host's behalf (GCONV_PATH is dropped whole there).
  LoaderPlaces places;
  const auto given = places.given();
  std::vector<std::string> env;
  for (const auto& [name, value] : given) env.push_back(name + "=" + value);
  const auto kept = ferry::detail::compiler_environment(env);
  auto value_of = [&](const std::string& name) -> std::string {
    for (const auto& e : kept)
      if (e.starts_with(name + "=")) return e.substr(name.size() + 1);
    return "(unset)";
  };
  CHECK(value_of("LD_PRELOAD") == places.kept_preload());
  CHECK(value_of("LD_AUDIT") == places.kept_audit());
  CHECK(value_of("GCONV_PATH") == "(unset)");
  CHECK(value_of("LD_ORIGIN_PATH") == "(unset)");
}

TEST_CASE("LoaderEnv.a_preloaded_library_whose_own_search_path_others_can_write_is_left_out") {
  // A library of ours, in a directory of ours, whose RUNPATH names a directory others can write:
  // the loader looks there first for the library it needs, and loads theirs (as for a plugin,
  // dependency_verdict). One whose RUNPATH is its own directory is kept.
  LoaderPlaces places;
  auto copy_with_runpath = [](const fs::path& to, const fs::path& runpath) {
    return support::copy_with_strings(FERRY_TEST_RUNPATH_PLUGIN, to,
                                      {{FERRY_TEST_SEARCH_PATH_PLACEHOLDER, runpath.string()}});
  };
  const fs::path led_astray = copy_with_runpath(places.mine / "libled_astray.so", places.open);
  const fs::path at_home = copy_with_runpath(places.mine / "libat_home.so", places.mine);
  std::vector<std::string> env = {"LD_PRELOAD=" + led_astray.string() + ":" + at_home.string(),
                                  "LD_AUDIT=" + led_astray.string()};
  ferry::detail::keep_trusted_loader_environment(env, "test", ferry::detail::untrusted_search_directory,
                                                 ferry::detail::dependency_verdict);
  CHECK(env == std::vector<std::string>{"LD_PRELOAD=" + at_home.string()});
}

TEST_CASE("LoaderEnv.keep_trusted_loader_environment_names_the_variables_it_judged") {
  // The MPI hub can only set a spawned agent's variables, not remove them: it sets each one the
  // host had, removed ones to what loads nothing.
  LoaderPlaces places;
  std::vector<std::string> env = {"LD_PRELOAD=" + places.open_library.string(), "PATH=/usr/bin",
                                  "GCONV_PATH=" + places.mine.string()};
  const auto judged =
      ferry::detail::keep_trusted_loader_environment(env, "test", ferry::detail::untrusted_search_directory,
                                                     ferry::detail::dependency_verdict);
  CHECK(judged == std::vector<std::string>{"LD_PRELOAD", "GCONV_PATH"});
  CHECK(env == std::vector<std::string>{"PATH=/usr/bin", "GCONV_PATH=" + places.mine.string()});
}

namespace {

/// `name`'s value in `env`, or "(unset)".
std::string value_of(const std::vector<std::string>& env, const std::string& name) {
  for (const auto& e : env)
    if (e.starts_with(name + "=")) return e.substr(name.size() + 1);
  return "(unset)";
}

/// Makes `dir` and what is missing on its way below `mine`, each 0755 whatever the umask.
void make_mine(const fs::path& mine, const fs::path& dir) {
  fs::create_directories(dir);
  for (fs::path at = dir; at != mine && at.has_relative_path(); at = at.parent_path())
    fs::permissions(at, fs::perms(0755), fs::perm_options::replace);
}

std::vector<std::string> judged(std::vector<std::string> env) {
  ferry::detail::keep_trusted_loader_environment(env, "test", ferry::detail::untrusted_search_directory,
                                                 ferry::detail::dependency_verdict);
  return env;
}

}  // namespace

TEST_CASE("LoaderEnv.an_entry_holding_a_control_character_is_left_out") {
  // A missing file in a directory of ours is one nobody else can create, so kept: with a newline
  // in its name, the MPI hub's "NAME=value" lines for a spawned agent (one MPI_Info value) got a
  // line of their own, setting LD_PRELOAD to the open library, never judged. Any variable, any
  // caller: the wrap compiler's PATH too.
  LoaderPlaces places;
  make_mine(places.mine, places.mine / "lib\r");
  make_mine(places.mine, places.mine / "bin\x1b");
  const std::string injected = "\nLD_PRELOAD=" + places.open_library.string();
  const auto env = judged({"LD_PRELOAD=" + (places.mine / "x.so").string() + injected + ":" + places.mine_library.string(),
                           "LD_AUDIT=" + (places.mine / "a.so").string() + "\tb",
                           "LD_LIBRARY_PATH=" + (places.mine / "lib\r").string() + ":" + places.mine.string()});
  CHECK(value_of(env, "LD_PRELOAD") == places.mine_library.string());
  CHECK(value_of(env, "LD_AUDIT") == "(unset)");
  CHECK(value_of(env, "LD_LIBRARY_PATH") == places.mine.string());
  const auto compiler = ferry::detail::compiler_environment({"PATH=" + (places.mine / "bin\x1b").string() + ":/usr/bin"});
  CHECK(value_of(compiler, "PATH") == "/usr/bin");
}

TEST_CASE("LoaderEnv.LD_LIBRARY_PATH_is_split_where_the_loader_splits_it_and_its_tokens_are_refused") {
  // glibc's rtld splits LD_LIBRARY_PATH at ';' as well as ':', and expands $ORIGIN, $LIB and
  // $PLATFORM in it. "mine/x;open" named as one directory (which exists, ours: made here) passed
  // whole, and the loader then searched mine/x and open; "mine/$LIB" was judged as a directory
  // of that name, the loader searched mine/lib (or lib64, lib/<multiarch>).
  LoaderPlaces places;
  const fs::path split = places.mine / ("x;" + places.open.string());
  make_mine(places.mine, split);
  make_mine(places.mine, places.mine / "$LIB");
  const std::string split_one = (places.mine / "x").string() + ";" + places.open.string();
  REQUIRE(split.string() == split_one);
  const auto env = judged({"LD_LIBRARY_PATH=" + split_one + ":" + (places.mine / "$LIB").string() + ":" +
                           places.mine.string()});
  CHECK(value_of(env, "LD_LIBRARY_PATH") == places.mine.string());
  // PATH is split at ':' alone (execvp), each directory as written: the same directory is kept.
  const auto compiler = ferry::detail::compiler_environment({"PATH=" + split_one + ":/usr/bin"});
  CHECK(value_of(compiler, "PATH") == split_one + ":/usr/bin");
}

TEST_CASE("LoaderEnv.a_GCONV_PATH_directory_with_a_conf_file_others_can_write_is_left_out") {
  // glibc reads every *.conf file of gconv-modules.d: one others can write lets them add a
  // module line, which iconv_open then loads. The directory, gconv-modules and gconv-modules.d
  // were judged, not those files.
  LoaderPlaces places;
  make_mine(places.mine, places.mine / "gconv-modules.d");
  std::ofstream(places.mine / "gconv-modules.d" / "extra.conf") << "# nothing\n";
  std::ofstream(places.mine / "gconv-modules.d" / "notes.txt") << "not read by glibc\n";
  fs::permissions(places.mine / "gconv-modules.d" / "extra.conf", fs::perms(0644), fs::perm_options::replace);
  fs::permissions(places.mine / "gconv-modules.d" / "notes.txt", fs::perms(0666), fs::perm_options::replace);
  CHECK(value_of(judged({"GCONV_PATH=" + places.mine.string()}), "GCONV_PATH") == places.mine.string());
  fs::permissions(places.mine / "gconv-modules.d" / "extra.conf", fs::perms(0666), fs::perm_options::replace);
  CHECK(value_of(judged({"GCONV_PATH=" + places.mine.string()}), "GCONV_PATH") == "(unset)");
}

TEST_CASE("LoaderEnv.a_sandboxed_worker_gets_no_GCONV_PATH") {
  if (!audit_runs_here()) return;
  // glibc reads GCONV_PATH at iconv_open, in the worker's own mount namespace, where /tmp,
  // /var/tmp and /dev/shm are the sandbox's private directory that tasks write: a directory
  // judged on the host's /tmp (as `mine` here) is read from that one. Dropped, given or not;
  // LD_AUDIT stays (the loader reads it at exec, before the worker enters its namespace).
  if (!sandbox_runs_here()) return;
  LoaderPlaces places;
  support::ScopedEnv gconv("GCONV_PATH", places.mine.string());
  auto o = support::options(1);
  o.sandbox.enabled = true;
  ferry::Executor ex(o);
  CHECK(value_in(ex, "GCONV_PATH") == "");
  o.env = {{"GCONV_PATH", places.mine.string()}, {"LD_AUDIT", places.mine_library.string()}};
  ferry::Executor given(o);
  CHECK(value_in(given, "GCONV_PATH") == "");
  CHECK(value_in(given, "LD_AUDIT") == places.mine_library.string());
}

TEST_CASE("LoaderEnv.a_sandboxed_workers_LD_LIBRARY_PATH_holds_no_directory_a_task_can_write") {
  // A directory of ours under /tmp passes the trust check on the host, but a sandboxed worker
  // sees its private directory at /tmp, which tasks write: one call could leave libdep.so there,
  // and the loader, which searches LD_LIBRARY_PATH at every dlopen before a plugin's RUNPATH,
  // would give it to a later plugin. So could a directory of Sandbox::write.
  if (!sandbox_runs_here()) return;
  support::TempDir in_tmp("/tmp"), elsewhere(FERRY_TEST_BINARY_DIR), written(FERRY_TEST_BINARY_DIR);
  auto o = support::options(1);
  o.sandbox.enabled = true;
  o.env = {{"LD_LIBRARY_PATH", in_tmp.path.string() + ":" + elsewhere.path.string()}};
  {
    ferry::Executor ex(o);
    CHECK(value_in(ex, "LD_LIBRARY_PATH") == elsewhere.path.string());
  }
  o.sandbox.write = {written.path};
  o.env = {{"LD_LIBRARY_PATH", written.path.string() + ";" + elsewhere.path.string()}};
  ferry::Executor with_write(o);
  CHECK(value_in(with_write, "LD_LIBRARY_PATH") == elsewhere.path.string());
  // Without a sandbox both are the user's, and kept.
  auto plain = support::options(1);
  plain.env = {{"LD_LIBRARY_PATH", in_tmp.path.string() + ":" + elsewhere.path.string()}};
  ferry::Executor unsandboxed(plain);
  CHECK(value_in(unsandboxed, "LD_LIBRARY_PATH") == in_tmp.path.string() + ":" + elsewhere.path.string());
}

TEST_CASE("LoaderEnv.a_sandboxed_workers_LD_LIBRARY_PATH_holds_no_directory_with_one_a_task_can_write_inside") {
  // The loader searches an entry's capability subdirectories before the entry itself
  // (glibc-hwcaps/x86-64-v3, and before glibc 2.37 tls, x86_64, haswell...): a Sandbox::write
  // path there is where one call would leave a library that a later plugin's dlopen takes. Any
  // directory inside the entry counts (the names differ by glibc and CPU).
  if (!sandbox_runs_here()) return;
  support::TempDir holding(FERRY_TEST_BINARY_DIR), elsewhere(FERRY_TEST_BINARY_DIR);
  auto o = support::options(1);
  o.sandbox.enabled = true;
  o.env = {{"LD_LIBRARY_PATH", holding.path.string() + ":" + elsewhere.path.string()}};
  for (const std::string inside : {"glibc-hwcaps/x86-64-v3", "tls", "x86_64", "cache"}) {
    CAPTURE(inside);
    const fs::path written = holding.path / inside;
    fs::create_directories(written);
    o.sandbox.write = {written};
    ferry::Executor ex(o);
    CHECK(value_in(ex, "LD_LIBRARY_PATH") == elsewhere.path.string());
  }
  // A write path beside the entries, in neither, leaves them.
  support::TempDir beside(FERRY_TEST_BINARY_DIR);
  o.sandbox.write = {beside.path};
  ferry::Executor ex(o);
  CHECK(value_in(ex, "LD_LIBRARY_PATH") == holding.path.string() + ":" + elsewhere.path.string());
}
