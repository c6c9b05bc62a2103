// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP: main-program functions compiled into cached plugins; the cache (private, shared by
// threads and processes, tamper-checked); build errors; options.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <set>
#include <thread>

#include <doctest/doctest.h>

#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "platform/spawn.hpp"
#include "wrap/wrap_compiler.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

FERRY_WRAP(twice,
int twice(int i, const std::vector<int>& /*args*/) { return 2 * i; })

FERRY_WRAP(hypotenuse,
double hypotenuse(double a, double b) { return std::sqrt(a * a + b * b); })

// Uses a macro: the body is recorded as written, so the wrap needs it passed as a flag.
#define FERRY_TEST_K 7
FERRY_WRAP(plus_k,
int plus_k(int x) { return x + FERRY_TEST_K; })

FERRY_WRAP(call_counter,
int call_counter() {
  static int calls = 0;  // one per worker process
  return ++calls;
})

FERRY_WRAP(words,
std::map<std::string, int> words(const std::vector<std::string>& in) {
  std::map<std::string, int> out;
  for (const auto& w : in) ++out[w];
  return out;
})

int host_helper(int x) { return x + 1; }  // lives in this program only

// Uses a function of the host program: the wrap cannot compile on its own.
FERRY_WRAP(uses_host_function,
int uses_host_function(int x) { return host_helper(x); })

// Declares it instead: compiles, but does not link into a plugin.
int host_helper_declared(int x);
int host_helper_declared(int x) { return x; }
FERRY_WRAP(links_to_host_function,
int links_to_host_function(int x) {
  int host_helper_declared(int);
  return host_helper_declared(x);
})

namespace {

/// The suite's shared wrap cache (its precompiled prelude is built once, by the first test).
fs::path shared_cache() { return fs::path(FERRY_TEST_BINARY_DIR) / "wrap-cache"; }

/// Points the wrap cache at `dir` for the scope.
struct CacheAt {
  support::ScopedEnv env;
  explicit CacheAt(const fs::path& dir) : env("FERRY_CACHE_DIR", dir.string()) {}
};

/// A fresh cache directory that shares the precompiled prelude of the suite's cache.
struct FreshCache {
  support::TempDir dir;
  fs::path path;
  /// At `leaf` in a directory of its own.
  explicit FreshCache(const std::string& leaf = "cache") : path(dir.path / leaf) {
    {
      CacheAt at(shared_cache());
      ferry::Executor ex(support::options(1));
      REQUIRE(ex.submit(twice, 1, std::vector<int>{}).get() == 2);  // the prelude exists now
      ferry::wait_for_wraps(120s);  // the executor's warm-up builds: done before the test counts
    }
    fs::create_directories(path);
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::replace);
    for (const auto& e : fs::directory_iterator(shared_cache())) {
      std::string name = e.path().filename().string();
      // Finished preludes only: another test process may be building one there right now.
      bool finished = name.ends_with(".hpp") || name.ends_with(".gch") || name.ends_with(".pch");
      if (name.rfind("prelude-", 0) == 0 && finished) {
        std::error_code ec;
        fs::create_hard_link(e.path(), path / e.path().filename(), ec);
        if (ec) fs::copy_file(e.path(), path / e.path().filename());
      }
    }
  }
};

std::vector<fs::path> entries(const fs::path& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    auto n = e.path().filename().string();
    if (n.rfind("wrap-", 0) == 0 && n.size() > suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(e.path());
  }
  return out;
}

/// The cache's plugin directory, the one part of it a sandboxed worker reads.
fs::path plugins_of(const fs::path& cache) { return ferry::detail::wrap_plugin_dir(cache); }

/// Runs a wrap host (another process) with this cache; returns its output. `prefix` is shell text
/// before the host's environment (a `cd`, more variables).
std::string run_wrap_host(const fs::path& cache, const char* host = FERRY_TEST_WRAP_HOST,
                          const std::string& umask = "022", const std::string& prefix = "") {
  std::string cmd = "umask " + umask + "; " + prefix + " FERRY_CACHE_DIR='" + cache.string() + "' '" + host + "' '" FERRY_TEST_WORKER "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  std::string out;
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  return out;
}

/// An executable shell script `name` in `dir` with `body`.
fs::path script(const fs::path& dir, const std::string& name, const std::string& body) {
  fs::path p = dir / name;
  std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
  fs::permissions(p, fs::perms(0755), fs::perm_options::replace);
  return p;
}

}  // namespace

TEST_CASE("Wrap.submit_and_map_like_a_registered_task") {
  CacheAt at(shared_cache());
  ferry::Executor ex(support::options(2));
  CHECK(twice(21, {}) == 42);  // still an ordinary function of the host
  CHECK(ex.submit(twice, 21, std::vector<int>{}).get() == 42);
  std::vector<int> big(1'000'000, 1);
  CHECK(ex.submit(twice, 21, big).get() == 42);
  CHECK(ex.submit(hypotenuse, 3.0, 4.0).get() == doctest::Approx(5.0));
  auto counts = ex.submit(words, std::vector<std::string>{"a", "b", "a"}).get();
  CHECK(counts == std::map<std::string, int>{{"a", 2}, {"b", 1}});
  std::vector<std::pair<int, std::vector<int>>> inputs = {{1, {}}, {2, {}}, {3, {}}};
  CHECK(ex.map(twice, inputs) == std::vector<int>{2, 4, 6});
}

TEST_CASE("Wrap.runs_in_a_sandboxed_worker") {
  // The sandbox lets a worker read the FERRY_WRAP cache's plugins (and nothing of this test's directory
  // besides): a wrapped function loads and runs there like a registered task.
  CacheAt at(shared_cache());
  auto options = support::options(1);
  options.sandbox.enabled = true;
  options.limits.memory = std::size_t{1} << 30;
  ferry::Executor ex(options);
  CHECK(ex.submit(twice, 21, std::vector<int>{}).get() == 42);
  std::vector<int> big(1'000'000, 1);  // over the shared-memory threshold
  CHECK(ex.submit(twice, 4, big).get() == 8);
}

TEST_CASE("Wrap.cache_is_private_and_reused") {
  FreshCache cache;
  CacheAt at(cache.path);
  unsigned before = ferry::detail::wrap_compilations();
  {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(hypotenuse, 6.0, 8.0).get() == doctest::Approx(10.0));
  }
  CHECK(ferry::detail::wrap_compilations() >= before + 1);
  struct stat st {};
  REQUIRE(::stat(cache.path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  CHECK_FALSE(entries(plugins_of(cache.path), ".so").empty());
  CHECK_FALSE(entries(cache.path, ".sum").empty());
  // Its lock files are write-only: a sandboxed task given the cache to read (Sandbox::read; by
  // default it reads only plugins/) cannot open one to hold its lock (Sandbox.a_task_holds_no_lease_nor_the_caches_locks_and_learns_no_interface).
  const auto locks = entries(cache.path, ".lock");
  CHECK_FALSE(locks.empty());
  for (const auto& lock : locks) CHECK((fs::status(lock).permissions() & fs::perms::all) == fs::perms::owner_write);
  // Another process with the same cache compiles nothing.
  std::string first = run_wrap_host(cache.path);
  CHECK(first == "106 1\n");
  CHECK(run_wrap_host(cache.path) == "106 0\n");
}

TEST_CASE("Wrap.cache_works_under_a_group_writable_umask") {
  // umask 002 (Debian's default for users with a group of their own): the directories ferry
  // creates, and the entries it writes, must still be private, or the trust check refuses the
  // cache (it did: "writable by group or others (mode 0775)"), or every run rebuilds.
  FreshCache cache;
  fs::path dir = cache.path / "home" / ".cache" / "ferry";  // none of it exists yet
  CHECK(run_wrap_host(dir, FERRY_TEST_WRAP_HOST, "002") == "106 1\n");
  CHECK(run_wrap_host(dir, FERRY_TEST_WRAP_HOST, "002") == "106 0\n");  // reused, not rebuilt
  for (const fs::path& d : {cache.path / "home", cache.path / "home" / ".cache", dir}) {
    struct stat st {};
    REQUIRE(::stat(d.c_str(), &st) == 0);
    CHECK_MESSAGE((st.st_mode & 0777) == 0700, d);
  }
  for (const auto& e : fs::directory_iterator(dir)) {
    struct stat st {};
    REQUIRE(::stat(e.path().c_str(), &st) == 0);
    CHECK_MESSAGE((st.st_mode & 022) == 0, e.path());
  }
}

TEST_CASE("Wrap.the_compilers_environment_adds_no_include_directory") {
  // GCC reads an empty element of CPATH (`CPATH=$CPATH:/opt/x/include` with CPATH unset) as the
  // current directory, searched before the system's headers (checked by hand: `cd dir &&
  // CPATH=: g++` compiles dir/vector for <vector>): a host run in a shared directory would
  // compile another user's header into code its workers load, whenever a header is not in the
  // precompiled prelude. None of those variables reaches the compiler (include directories go in
  // WrapOptions::flags, part of the cache key).
  std::vector<std::string> env = {"PATH=/usr/bin", "CPATH=:", "C_INCLUDE_PATH=/tmp", "CPLUS_INCLUDE_PATH=/tmp",
                                  "OBJC_INCLUDE_PATH=/tmp", "OBJCPLUS_INCLUDE_PATH=/tmp", "LIBRARY_PATH=/tmp",
                                  "COMPILER_PATH=/tmp", "GCC_EXEC_PREFIX=/tmp/", "DEPENDENCIES_OUTPUT=/tmp/d",
                                  "SUNPRO_DEPENDENCIES=/tmp/d", "CCC_OVERRIDE_OPTIONS=+-I.", "LD_RUN_PATH=/tmp",
                                  "CC_PRINT_HEADERS_FILE=/tmp/h", "CC_LOG_DIAGNOSTICS_FILE=/tmp/l",
                                  "CC_PRINT_OPTIONS_FILE=/tmp/o", "CC_PRINT_PROC_STAT_FILE=/tmp/s",
                                  "HOME=/root", "CPATHX=kept", "LANG=C", "MAKE=/tmp/make", "MAKEFLAGS=-j", "MAKEFILES=/tmp/m", "GNUMAKEFLAGS=-j",
                                  "CCACHE_PREFIX=/tmp/p", "CCACHE_DIR=/tmp/shared"};
  // ccache's settings go too (CCACHE_PREFIX runs a program, a shared cache returns what others
  // stored), and ccache reads no configuration file (it is not run: its compiler is); lto-wrapper's $MAKE goes.
  CHECK(ferry::detail::compiler_environment(env) ==
        std::vector<std::string>{"PATH=/usr/bin", "HOME=/root", "CPATHX=kept", "LANG=C", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
}

TEST_CASE("Wrap.the_shipped_prelude_is_readable_by_every_user") {
  // Written 0600 by the build (and by an install as root), it was unreadable to every other user,
  // whose wraps all failed on it. The build tree ships it beside libferry as an install does.
  const fs::path dir = fs::path(FERRY_TEST_WORKER).parent_path().parent_path() / "share/ferry/wrap-prelude";
  int files = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("prelude-") || name.find(".tmp.") != std::string::npos ||
        !(name.ends_with(".hpp") || name.ends_with(".gch") || name.ends_with(".pch")))
      continue;
    struct stat st {};
    REQUIRE(::stat(e.path().c_str(), &st) == 0);
    CHECK_MESSAGE((st.st_mode & 0444) == 0444, e.path());
    CHECK_MESSAGE((st.st_mode & 022) == 0, e.path());
    ++files;
  }
  CHECK_MESSAGE(files >= 2, "no precompiled prelude in " << dir);
}

TEST_CASE("Wrap.the_compilers_PATH_holds_only_trusted_absolute_directories") {
  // gcc runs `as` and `ld` through PATH: with an empty element (the current directory), a
  // relative one or a directory others can write first, a host run in a shared directory ran
  // another user's assembler (checked by hand as nobody against root). Those elements go.
  support::TempDir open;
  fs::permissions(open.path, fs::perms(01777), fs::perm_options::replace);
  const std::string path = "PATH=:/usr/bin:.:bin:" + open.path.string() + ":/no/such/dir:/bin";
  CHECK(ferry::detail::compiler_environment({path, "LANG=C"}) ==
        std::vector<std::string>{"PATH=/usr/bin:/bin", "LANG=C", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
  // Nothing left: the system's directories, never an empty PATH (gcc reads that as "./").
  CHECK(ferry::detail::compiler_environment({"PATH="}) == std::vector<std::string>{"PATH=/usr/bin:/bin", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
  CHECK(ferry::detail::compiler_environment({"PATH=.:bin"}) == std::vector<std::string>{"PATH=/usr/bin:/bin", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
  // The same for the libraries the compiler's programs load; with none left, no variable.
  CHECK(ferry::detail::compiler_environment({"LD_LIBRARY_PATH=:" + open.path.string() + ":/usr/lib:lib"}) ==
        std::vector<std::string>{"LD_LIBRARY_PATH=/usr/lib", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
  CHECK(ferry::detail::compiler_environment({"LD_LIBRARY_PATH=:.", "LANG=C"}) == std::vector<std::string>{"LANG=C", "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"});
  // A private directory of this user's under a sticky one stays.
  fs::create_directories(open.path / "bin");
  fs::permissions(open.path / "bin", fs::perms(0755), fs::perm_options::replace);
  CHECK(ferry::detail::compiler_environment({"PATH=" + (open.path / "bin").string()}) ==
        (std::vector<std::string>{"PATH=" + (open.path / "bin").string(), "CCACHE_DISABLE=1", "CCACHE_CONFIGPATH=/dev/null"}));
}

TEST_CASE("Wrap.many_threads_one_build") {
  FreshCache cache;
  CacheAt at(cache.path);
  const ferry::detail::WrapSite* site = ferry::detail::find_wrap(reinterpret_cast<const void*>(&words));
  REQUIRE(site != nullptr);
  unsigned before = ferry::detail::wrap_compilations();
  std::vector<std::shared_future<ferry::detail::WrapBuild>> builds(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back([&, t] { builds[t] = ferry::detail::wrap_build(*site); });
  for (auto& th : threads) th.join();
  for (auto& b : builds) {
    REQUIRE(b.get().error == nullptr);
    CHECK(b.get().library == builds[0].get().library);
  }
  CHECK(ferry::detail::wrap_compilations() - before == 1);
  CHECK(entries(plugins_of(cache.path), ".so").size() == 1);
  // And through an executor, from many threads at once.
  ferry::Executor ex(support::options(2));
  std::atomic<int> wrong{0};
  threads.clear();
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      auto counts = ex.submit(words, std::vector<std::string>(t + 1, "x")).get();
      if (counts.at("x") != t + 1) ++wrong;
    });
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

TEST_CASE("Wrap.two_processes_race_to_one_build") {
  FreshCache cache;
  std::string a, b;
  std::thread ta([&] { a = run_wrap_host(cache.path); });
  std::thread tb([&] { b = run_wrap_host(cache.path); });
  ta.join();
  tb.join();
  // Both get the result; exactly one of them compiled, the other waited and loaded it.
  std::set<std::string> outcomes = {a, b};
  CHECK(outcomes == std::set<std::string>{"106 0\n", "106 1\n"});
  CHECK(entries(plugins_of(cache.path), ".so").size() == 1);
  for (const auto& e : fs::directory_iterator(cache.path))
    CHECK_MESSAGE(e.path().string().find(".tmp.") == std::string::npos, e.path());
}

TEST_CASE("Wrap.tampered_entry_is_rebuilt_not_loaded") {
  FreshCache cache;
  REQUIRE(run_wrap_host(cache.path) == "106 1\n");
  auto so = entries(plugins_of(cache.path), ".so");
  REQUIRE(so.size() == 1);
  {
    std::ofstream out(so[0], std::ios::binary | std::ios::app);
    out << "tampered";
  }
  CHECK(run_wrap_host(cache.path) == "106 1\n");  // rebuilt
  CHECK(run_wrap_host(cache.path) == "106 0\n");  // and trusted again
}

TEST_CASE("Wrap.statics_live_per_worker") {
  CacheAt at(shared_cache());
  auto o = support::options(1);
  o.max_tasks_per_child = 4;
  ferry::Executor ex(o);
  std::vector<int> counts;
  for (int i = 0; i < 8; ++i) counts.push_back(ex.submit(call_counter).get());
  // Each worker counts from 1; the recycled worker starts again.
  CHECK(counts == std::vector<int>{1, 2, 3, 4, 1, 2, 3, 4});
}

TEST_CASE("Wrap.body_using_the_host_program_is_unresolvable") {
  CacheAt at(shared_cache());
  ferry::Executor ex(support::options(1));
  SUBCASE("an unknown identifier") {
    try {
      ex.submit(uses_host_function, 1).get();
      FAIL("no error");
    } catch (const ferry::UnresolvableTaskError& e) {
      std::string what = e.what();
      CHECK(e.function() == "uses_host_function");
      CHECK(e.module().find("test_wrap.cpp:") != std::string::npos);
      CHECK(what.find("host_helper") != std::string::npos);
      CHECK(what.find("not declared") != std::string::npos);
    }
  }
  SUBCASE("a symbol only the host defines") {
    try {
      ex.submit(links_to_host_function, 1).get();
      FAIL("no error");
    } catch (const ferry::UnresolvableTaskError& e) {
      CHECK(std::string(e.what()).find("host_helper_declared") != std::string::npos);
    }
  }
  CHECK(ex.submit(twice, 4, std::vector<int>{}).get() == 8);  // the pool is fine
}

TEST_CASE("Wrap.no_compiler_says_which_and_how_to_fix") {
  FreshCache cache;
  CacheAt at(cache.path);
  support::ScopedEnv cxx("FERRY_CXX", "/nonexistent/bin/c++");
  ferry::Executor ex(support::options(1));
  try {
    ex.submit(hypotenuse, 1.0, 1.0).get();
    FAIL("no error");
  } catch (const ferry::UnresolvableTaskError& e) {
    std::string what = e.what();
    CHECK(what.find("/nonexistent/bin/c++") != std::string::npos);
    CHECK(what.find("FERRY_CXX") != std::string::npos);
  }
}

TEST_CASE("Wrap.unwritable_cache_says_which_and_how_to_fix") {
  support::TempDir dir;
  fs::path blocked = dir.path / "file-not-dir";
  std::ofstream(blocked) << "x";
  CacheAt at(blocked / "cache");
  ferry::Executor ex(support::options(1));
  try {
    ex.submit(hypotenuse, 2.0, 2.0).get();
    FAIL("no error");
  } catch (const ferry::UnresolvableTaskError& e) {
    std::string what = e.what();
    CHECK(what.find((blocked / "cache").string()) != std::string::npos);
    CHECK(what.find("FERRY_CACHE_DIR") != std::string::npos);
  }
}

TEST_CASE("Wrap.shared_cache_directory_is_refused") {
  support::TempDir dir;
  fs::path open_dir = dir.path / "cache";
  fs::create_directories(open_dir);
  fs::permissions(open_dir, fs::perms::all, fs::perm_options::replace);  // 0777
  CacheAt at(open_dir);
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_WITH_AS(ex.submit(hypotenuse, 2.0, 2.0).get(), doctest::Contains("not private"),
                       ferry::UnresolvableTaskError);
}

TEST_CASE("Wrap.options_add_flags_includes_and_libraries") {
  CacheAt at(shared_cache());
  ferry::Executor ex(support::options(1));
  // Without the macro the body does not compile on its own...
  CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("FERRY_TEST_K"),
                       ferry::UnresolvableTaskError);
  // ...with it (and an extra header and library, to show the way), it does.
  ferry::set_wrap_options({.flags = {"-DFERRY_TEST_K=7"}, .includes = {"<cmath>"}, .libraries = {"-lm"}});
  auto o = ferry::wrap_options();
  CHECK(std::find(o.flags.begin(), o.flags.end(), "-DFERRY_TEST_K=7") != o.flags.end());
  CHECK(o.includes == std::vector<std::string>{"<cmath>"});
  CHECK(o.cache_dir == shared_cache());
  CHECK(ex.submit(plus_k, 1).get() == 8);
  {
    support::ScopedEnv flags("FERRY_WRAP_FLAGS", "-DFERRY_TEST_ENV=1  -O1");
    auto with_env = ferry::wrap_options();
    CHECK(with_env.flags.back() == "-O1");
  }
  ferry::set_wrap_options({});
}

TEST_CASE("Wrap.warm_up_builds_ahead") {
  FreshCache cache;
  CacheAt at(cache.path);
  ferry::warm_up_wraps();
  // Some of the wraps above cannot build, on purpose: false, once every build ended. A timeout
  // says false too, but only at its deadline: told apart by the time it took.
  const auto began = std::chrono::steady_clock::now();
  CHECK(ferry::wait_for_wraps(120s) == false);
  CHECK_MESSAGE(std::chrono::steady_clock::now() - began < 120s, "wait_for_wraps timed out: the builds did not end");
  CHECK(entries(cache.path, ".err").size() == 3);  // plus_k (no flag), uses_host_function, links_to_host_function
  CHECK_FALSE(entries(plugins_of(cache.path), ".so").empty());
  unsigned before = ferry::detail::wrap_compilations();
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(call_counter).get() == 1);
  CHECK(ferry::detail::wrap_compilations() == before);  // nothing left to compile
}

TEST_CASE("Wrap.a_failed_build_is_remembered_not_recompiled") {
  FreshCache cache;
  std::string first = run_wrap_host(cache.path, FERRY_TEST_WRAP_FAIL_HOST);
  REQUIRE(first.rfind("error 1\n", 0) == 0);  // compiled once, and failed
  CHECK(first.find("FERRY_TEST_HOST_ONLY_K") != std::string::npos);
  CHECK_FALSE(entries(cache.path, ".err").empty());
  // Another process: the same error at once, from the cache, without running the compiler.
  std::string second = run_wrap_host(cache.path, FERRY_TEST_WRAP_FAIL_HOST);
  CHECK(second.rfind("error 0\n", 0) == 0);
  CHECK(second.substr(second.find('\n')) == first.substr(first.find('\n')));
}

namespace {

/// Runs the wrap host whose wrap needs FERRY_TEST_HOST_ONLY_K, in `cwd`, with these wrap flags.
std::string run_header_host(const fs::path& cache, const fs::path& cwd, const std::string& flags) {
  return run_wrap_host(cache, FERRY_TEST_WRAP_FAIL_HOST, "022", "cd '" + cwd.string() + "' && FERRY_WRAP_FLAGS='" + flags + "'");
}

/// Writes a header defining FERRY_TEST_HOST_ONLY_K as `k` (nothing with `k` empty), guarded as
/// headers are (a guarded header baked into a precompiled prelude was skipped after an edit), and
/// waits until its status change is a quarter of a second old: one that changed while a build ran
/// (or 100 ms before) is recorded as changed, and the next run builds again.
void write_k_header(const fs::path& file, const std::string& k) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << "#ifndef FERRY_TEST_K_HPP\n#define FERRY_TEST_K_HPP\n"
                      << (k.empty() ? std::string("// no K here\n") : "#define FERRY_TEST_HOST_ONLY_K " + k + "\n")
                      << "#endif\n";
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  const auto changed = std::chrono::system_clock::time_point(std::chrono::seconds(st.st_ctim.tv_sec) +
                                                             std::chrono::nanoseconds(st.st_ctim.tv_nsec));
  REQUIRE(support::wait_until([&] { return std::chrono::system_clock::now() > changed + 250ms; }));
}

}  // namespace

TEST_CASE("Wrap.a_header_that_changed_is_compiled_again") {
  // The cache key covers the body, flags and compiler, not the headers the body includes: the
  // entry remembers what its build read, and is used only while those files hold the same bytes.
  FreshCache cache;
  support::TempDir root;
  const fs::path k = root.path / "k.hpp";
  const std::string flags = "-include " + k.string();
  write_k_header(k, "10");
  CHECK(run_header_host(cache.path, root.path, flags) == "11 1\n");
  CHECK(run_header_host(cache.path, root.path, flags) == "11 0\n");  // from the cache
  const auto first = entries(plugins_of(cache.path), ".so");
  REQUIRE(first.size() == 1);
  const std::string first_bytes = support::read_file(first[0]);
  write_k_header(k, "20");  // the same size
  CHECK(run_header_host(cache.path, root.path, flags) == "21 1\n");
  CHECK(run_header_host(cache.path, root.path, flags) == "21 0\n");
  fs::last_write_time(k, fs::file_time_type::clock::now() - 1h);  // touched: the bytes decide
  CHECK(run_header_host(cache.path, root.path, flags) == "21 0\n");
  // The earlier plugin is still there as it was: an executor that started on it may start more
  // workers, which must not load other code.
  CHECK(entries(plugins_of(cache.path), ".so").size() == 2);
  CHECK(support::read_file(first[0]) == first_bytes);
}

TEST_CASE("Wrap.a_remembered_failure_is_compiled_again_once_a_header_it_read_changed") {
  FreshCache cache;
  support::TempDir root;
  const fs::path k = root.path / "k.hpp";
  const std::string flags = "-include " + k.string();
  write_k_header(k, "");
  std::string first = run_header_host(cache.path, root.path, flags);
  CHECK(first.rfind("error 1\n", 0) == 0);
  CHECK(run_header_host(cache.path, root.path, flags).rfind("error 0\n", 0) == 0);  // remembered
  write_k_header(k, "3");  // fixed
  CHECK(run_header_host(cache.path, root.path, flags) == "4 1\n");
  CHECK(run_header_host(cache.path, root.path, flags) == "4 0\n");
  CHECK(entries(cache.path, ".err").empty());  // the old failure is gone with its headers
}

TEST_CASE("Wrap.a_failed_link_is_remembered_only_when_every_library_was_found") {
  // A library that is not found is listed nowhere (bfd and lld write no list then, gold lists
  // what it found): such a failure is not remembered. One whose libraries were all found (a
  // symbol only the host has) is, with what the linker read.
  FreshCache cache;
  support::TempDir root;
  {
    const fs::path k = root.path / "host_only" / "k.hpp";
    fs::create_directories(k.parent_path());
    std::ofstream(root.path / "host_only" / "decl.hpp") << "int ferry_test_host_only();\n";
    write_k_header(k, "ferry_test_host_only()");  // after the other: both settled
    const std::string flags = "-include " + (root.path / "host_only" / "decl.hpp").string() + " -include " + k.string();
    const std::string first = run_header_host(cache.path, root.path, flags);
    CHECK(first.rfind("error 1\n", 0) == 0);
    CHECK(first.find("ferry_test_host_only") != std::string::npos);
    CHECK(run_header_host(cache.path, root.path, flags).rfind("error 0\n", 0) == 0);  // remembered
  }
  const fs::path k = root.path / "k.hpp", lib = root.path / "lib";
  write_k_header(k, "5");
  fs::create_directories(lib);
  std::vector<std::string> linkers = {""};
  if (fs::exists("/usr/bin/ld.gold")) linkers.push_back("-fuse-ld=gold");
  for (const auto& linker : linkers) {
    for (const bool by_path : {false, true}) {
      CAPTURE(linker);
      CAPTURE(by_path);
      const std::string name = "ferrymissing" + std::to_string(linker.size()) + (by_path ? "p" : "");
      const fs::path file = lib / ("lib" + name + ".so");
      const std::string flags = "-include " + k.string() + " " + linker + " -L" + lib.string() + " " +
                                (by_path ? file.string() : "-l" + name);
      CHECK(run_header_host(cache.path, root.path, flags).rfind("error 1\n", 0) == 0);
      CHECK(run_header_host(cache.path, root.path, flags).rfind("error 1\n", 0) == 0);  // tried again
      fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, file);
      CHECK(run_header_host(cache.path, root.path, flags) == "6 1\n");
    }
  }
}

TEST_CASE("Wrap.relative_flags_build_one_plugin_per_directory") {
  // `-I inc` names another header in each directory: hosts in two directories must neither share
  // one plugin nor rebuild each other's, whatever their order.
  FreshCache cache;
  support::TempDir root;
  const fs::path a = root.path / "a", b = root.path / "b";
  write_k_header(a / "inc" / "k.hpp", "100");
  write_k_header(b / "inc" / "k.hpp", "200");
  const std::string flags = "-Iinc -include inc/k.hpp";
  CHECK(run_header_host(cache.path, a, flags) == "101 1\n");
  CHECK(run_header_host(cache.path, b, flags) == "201 1\n");
  CHECK(run_header_host(cache.path, a, flags) == "101 0\n");
  CHECK(run_header_host(cache.path, b, flags) == "201 0\n");
  CHECK(entries(plugins_of(cache.path), ".so").size() == 2);
  // Absolute names are everyone's: another directory takes the same entry.
  const std::string absolute = "-include " + (a / "inc" / "k.hpp").string();
  CHECK(run_header_host(cache.path, a, absolute) == "101 1\n");
  CHECK(run_header_host(cache.path, b, absolute) == "101 0\n");
  // A relative directory that holds nothing in the first (the header is found in the next, by
  // its absolute name) still makes the entry that directory's: in the second it holds one.
  const fs::path c = root.path / "c", shared = root.path / "shared";
  fs::create_directories(c);
  write_k_header(shared / "k.hpp", "300");
  const std::string mixed = "-Iinc -I" + shared.string() + " -include k.hpp";
  CHECK(run_header_host(cache.path, c, mixed) == "301 1\n");
  CHECK(run_header_host(cache.path, b, mixed) == "201 1\n");
}

TEST_CASE("Wrap.background_builds_never_delay_exit") {
  // A compiler that never finishes: the host's executor starts a build in the background and
  // the host returns at once. It must exit at once too, and the compiler must not outlive it.
  FreshCache cache;
  support::TempDir bin;
  fs::path pid_file = bin.path / "compiler.pid";
  fs::path cxx = script(bin.path, "hanging-c++", "echo $$ > '" + pid_file.string() + "'\nexec sleep 600");
  // The host returns once the compiler runs (it writes its pid): then the compiler is mid-build.
  std::string cmd = "FERRY_CXX='" + cxx.string() + "' FERRY_CACHE_DIR='" + cache.path.string() +
                    "' timeout 120 '" FERRY_TEST_WRAP_HOST "' '" FERRY_TEST_WORKER "' exit '" +
                    pid_file.string() + "' >/dev/null";
  auto started = std::chrono::steady_clock::now();
  int status = std::system(cmd.c_str());
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // not 124: timeout did not have to kill it
  CHECK(took < 60s);                // it did not wait for the build (which would take 300 s)
  // The compiler it had started is gone: killed at exit, not left to run on.
  REQUIRE(fs::exists(pid_file));
  pid_t pid = 0;
  std::ifstream(pid_file) >> pid;
  REQUIRE(pid > 0);
  CHECK(support::wait_until([&] { return !support::alive(pid); }, 5000ms));
  for (const auto& e : fs::directory_iterator(cache.path))
    CHECK_MESSAGE(e.path().string().find(".tmp.") == std::string::npos, e.path());
}

namespace {

/// What the build of a wrapped function of this file, with the options in effect now, ended with:
/// "" when it built, else its error's message. Built alone: no executor, whose warm-up would build
/// every other wrap of this file too.
std::string build_error(const void* function) {
  const auto* site = ferry::detail::find_wrap(function);
  REQUIRE(site);
  const ferry::detail::WrapBuild b = ferry::detail::wrap_build(*site).get();
  if (!b.error) return {};
  try {
    std::rethrow_exception(b.error);
  } catch (const std::exception& e) {
    return e.what();
  }
}

/// Every file below `dir` whose name has `part` in it.
std::vector<fs::path> files_named(const fs::path& dir, const std::string& part) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path());
  return out;
}

/// Shell text for a fake compiler: answers the linker probe (-Wl,--help) as GNU ld does, fails
/// the prelude's build, and runs `body` for the wrap's build.
std::string fake_compiler(const std::string& body) {
  return "case \"$*\" in *-Wl,--help*) echo '  --dependency-file=FILE'; exit 0;; *c++-header*) exit 1;; esac\n" + body;
}

}  // namespace

TEST_CASE("Wrap.a_compiler_that_times_out_leaves_no_process") {
  // A build that times out kills the compiler and every process it started (cc1plus went on
  // running behind a killed driver, for ever on a blocked input, writing into the cache), and
  // leaves none of their temporary files (ccXXXX.s, *.tmp.*) in the cache.
  support::TempDir bin, cache;
  const fs::path child_pid = bin.path / "child.pid";
  const fs::path cxx = script(bin.path, "stuck-c++",
                              fake_compiler("sleep 600 &\necho $! > '" + child_pid.string() +
                                            "'\necho unfinished > \"$TMPDIR/ccSTUCK$$.s\"\nwait"));
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  support::ScopedEnv timeout("FERRY_WRAP_TIMEOUT", "3");  // time enough for a shell to start, under load
  CacheAt at(cache.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CHECK(what.find("did not finish within 3 s") != std::string::npos);
  REQUIRE(fs::exists(child_pid));
  pid_t pid = 0;
  std::ifstream(child_pid) >> pid;
  REQUIRE(pid > 0);
  CHECK_MESSAGE(support::wait_until([&] { return !support::alive(pid); }, 5000ms), "the compiler's child runs on");
  if (support::alive(pid)) ::kill(pid, SIGKILL);
  for (const char* part : {".tmp.", "scratch", "ccSTUCK"})
    for (const auto& f : files_named(cache.path, part)) FAIL_CHECK("left in the cache: " << f);
}

TEST_CASE("Wrap.a_hanging_compiler_costs_one_timeout") {
  // A compiler that never finishes: the first wrap's build stops it after FERRY_WRAP_TIMEOUT,
  // and every other build of the process fails at once with the same reason (each waited for the
  // prelude's build, then for the linker probe's, one after the other: N x 300 s + 60 s), saying
  // that the compiler did not finish, not that the linker's list could not be told.
  support::TempDir bin, cache;
  const fs::path calls = bin.path / "calls";
  const fs::path cxx = script(bin.path, "hanging-c++", "echo \"$*\" >> '" + calls.string() + "'\nexec sleep 600");
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  support::ScopedEnv timeout("FERRY_WRAP_TIMEOUT", "3");  // time enough for a shell to start, under load
  CacheAt at(cache.path / "c");
  std::vector<std::shared_future<ferry::detail::WrapBuild>> builds;
  for (const void* f : {reinterpret_cast<const void*>(&twice), reinterpret_cast<const void*>(&hypotenuse),
                        reinterpret_cast<const void*>(&call_counter)})
    builds.push_back(ferry::detail::wrap_build(*ferry::detail::find_wrap(f)));
  for (auto& b : builds) {
    REQUIRE(b.get().error);
    try {
      std::rethrow_exception(b.get().error);
    } catch (const ferry::UnresolvableTaskError& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("did not finish within 3 s") != std::string::npos);
      CHECK(what.find("FERRY_WRAP_TIMEOUT") != std::string::npos);
      CHECK(what.find("cannot tell whether the linker") == std::string::npos);
    }
  }
  const std::string ran = support::read_file(calls);
  CAPTURE(ran);
  CHECK(std::count(ran.begin(), ran.end(), '\n') == 1);  // one compiler run, one timeout
}

TEST_CASE("Wrap.a_build_lock_held_by_a_stopped_process_fails_the_wrap_naming_it") {
  // Another process holds the build lock and is stopped (^Z, a debugger): the wrap waits for it
  // at most FERRY_WRAP_TIMEOUT, then fails naming the lock file (it waited in flock for ever,
  // and so did every other process).
  support::TempDir bin, cache;
  const fs::path pid_file = bin.path / "compiler.pid";
  const fs::path cxx = script(bin.path, "hanging-c++", "echo $$ > '" + pid_file.string() + "'\nexec sleep 600");
  const fs::path dir = cache.path / "c";
  // The other process: a wrap host whose build (its prelude's first) hangs in the compiler,
  // holding the prelude's lock, with the default timeout.
  const pid_t host = ::fork();
  REQUIRE(host >= 0);
  if (host == 0) {
    ::setenv("FERRY_CXX", cxx.c_str(), 1);
    ::setenv("FERRY_CACHE_DIR", dir.c_str(), 1);
    ::unsetenv("FERRY_WRAP_TIMEOUT");
    const std::string never = (bin.path / "never").string();
    ::execl(FERRY_TEST_WRAP_HOST, FERRY_TEST_WRAP_HOST, FERRY_TEST_WORKER, "exit", never.c_str(), nullptr);
    ::_exit(127);
  }
  pid_t compiler_pid = 0;
  struct Cleanup {  // also when a REQUIRE below ends the test: the host and its compiler hold the lock
    pid_t host;
    pid_t& compiler;
    ~Cleanup() {
      ::kill(host, SIGKILL);
      if (compiler > 0) ::kill(compiler, SIGKILL);
      int status = 0;
      ::waitpid(host, &status, 0);
    }
  } cleanup{host, compiler_pid};
  REQUIRE(support::wait_until([&] { return (std::ifstream(pid_file) >> compiler_pid) && compiler_pid > 0; }, 20000ms));
  ::kill(host, SIGSTOP);
  {
    support::ScopedEnv compiler("FERRY_CXX", cxx.string());
    support::ScopedEnv timeout("FERRY_WRAP_TIMEOUT", "1");
    CacheAt at(dir);
    auto build = ferry::detail::wrap_build(*ferry::detail::find_wrap(reinterpret_cast<const void*>(&twice)));
    const bool ended = build.wait_for(30s) == std::future_status::ready;
    CHECK_MESSAGE(ended, "the build still waits for the lock");
    if (ended) {
      REQUIRE(build.get().error);
      try {
        std::rethrow_exception(build.get().error);
      } catch (const ferry::UnresolvableTaskError& e) {
        const std::string what = e.what();
        CAPTURE(what);
        CHECK(what.find("held the lock " + dir.string() + "/prelude-") != std::string::npos);
        CHECK(what.find(".lock for 2 s") != std::string::npos);  // twice the compile timeout
      }
    }
  }
}

TEST_CASE("Wrap.a_full_cache_file_system_shows_the_compilers_words") {
  // The compiler's output went to a log file in the cache: on a full file system it was lost
  // ("Compiler said:" and nothing), with advice about the host's symbols that had nothing to do
  // with it. The fake compiler cannot write a file either (RLIMIT_FSIZE 0, as a full disk: its
  // writes fail), and says so on its stderr.
  support::TempDir bin, cache;
  const fs::path cxx = script(bin.path, "full-disk-c++",
                              fake_compiler("trap '' XFSZ\nulimit -f 0\n"
                                            "echo 'cc1plus: fatal error: writing ccFULL.s: No space left on device' >&2\nexit 1"));
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  CacheAt at(cache.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find("could not be compiled into a plugin") != std::string::npos);
  CHECK(what.find("No space left on device") != std::string::npos);
  CHECK(what.find("must only use what it declares") == std::string::npos);
}

TEST_CASE("Wrap.a_full_cache_file_system_is_named_as_the_reason_not_another_user") {
  // GNU ld exits 0 when its dependency list cannot be written whole: on a cache file system
  // with 288 KiB (of a wrap's 300) the wrap failed as "refusing what the compiler read: the
  // linker's list ... cannot be parsed (a header or library another user could have changed)".
  // The fake compiler writes a plugin and a list cut short, fills the file system and exits 0.
  if (::geteuid() != 0) {
    MESSAGE("needs root to mount a small file system: skipped");
    return;
  }
  support::TempDir bin, small;
  REQUIRE(::mount("none", small.path.c_str(), "tmpfs", 0, "size=1m,mode=0700") == 0);
  struct Unmount {
    const fs::path& at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{small.path};
  const fs::path cxx = script(bin.path, "cut-list-c++",
                              fake_compiler("for a; do case \"$prev\" in -o) out=$a;; -MF) list=$a;; esac; prev=$a\n"
                                            "case \"$a\" in *--dependency-file=*) linked=${a#*=};; esac; done\n"
                                            "echo plugin > \"$out\"\n: > \"$linked\"\nprintf '%s: /usr/incl\\\\' \"$out\" > \"$list\"\n"
                                            "cat /dev/zero > '" + (small.path / "filler").string() + "' 2>/dev/null\nexit 0"));
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  CacheAt at(small.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find(" is full (") != std::string::npos);
  CHECK(what.find("another user") == std::string::npos);
  // Full from the start: the wrap's source cannot be written, and the error says why (it said
  // "Set FERRY_CACHE_DIR to a writable directory" of the directory it had just written into).
  {
    std::ofstream rest(small.path / "rest", std::ios::binary);
    const std::string page(4096, '\0');
    while (rest.write(page.data(), static_cast<std::streamsize>(page.size())) && rest.flush()) {
    }
  }
  const std::string full = build_error(reinterpret_cast<const void*>(&hypotenuse));
  CAPTURE(full);
  CHECK(full.find("No space left on device") != std::string::npos);
}

TEST_CASE("Wrap.a_cached_wrap_is_used_when_the_current_directory_is_gone") {
  // The current directory was removed under the host: a wrap already in the cache, whose flags
  // name no relative path, is used (it failed: "the current directory cannot be read").
  const std::string first = run_wrap_host(shared_cache());
  REQUIRE((first == "106 1\n" || first == "106 0\n"));  // built now, or by an earlier test
  support::TempDir gone;
  const std::string there = "'" + gone.path.string() + "'";
  CHECK(run_wrap_host(shared_cache(), FERRY_TEST_WRAP_HOST, "022", "cd " + there + " && rmdir " + there + " &&") ==
        "106 0\n");
}

TEST_CASE("Wrap.FERRY_CXX_is_a_program_and_its_arguments_and_flags_are_split_as_a_shell_does") {
  // "ccache g++" and "g++ -O2" were refused as not found (design §9 says ccache works so), and
  // FERRY_WRAP_FLAGS='-DMSG="a b"' was split at the space inside the quotes.
  {
    support::ScopedEnv flags("FERRY_WRAP_FLAGS", "-DA=1 -DMSG=\"a b\" '-DQ=\"x y\"'  -O1");
    const auto o = ferry::wrap_options();
    REQUIRE(o.flags.size() >= 4);
    CHECK(std::vector<std::string>(o.flags.end() - 4, o.flags.end()) ==
          std::vector<std::string>{"-DA=1", "-DMSG=a b", "-DQ=\"x y\"", "-O1"});
  }
  {
    support::ScopedEnv flags("FERRY_WRAP_FLAGS", "-DMSG='a b");
    CHECK_THROWS_WITH_AS(ferry::Executor(support::options(1)), doctest::Contains("a quote is not closed"),
                         std::invalid_argument);
  }
  support::TempDir bin, cache;
  const fs::path calls = bin.path / "calls", ccache_calls = bin.path / "ccache-calls";
  // A ccache of its own, recording whether it is run (it must not be: its compiler runs instead),
  // and a compiler that records how it is run, then fails.
  const fs::path ccache = script(bin.path, "ccache", "echo \"$*\" >> '" + ccache_calls.string() + "'\nexit 1");
  const fs::path cxx = script(bin.path, "fake-c++",
                              "echo \"$*\" >> '" + calls.string() + "'\n" + fake_compiler("echo 'fake: no' >&2\nexit 1"));
  support::ScopedEnv compiler("FERRY_CXX", ccache.string() + " " + cxx.string() + " -DFROM_CXX=1");
  CacheAt at(cache.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find("fake: no") != std::string::npos);  // it ran, and failed
  const std::string ran = support::read_file(calls);
  CAPTURE(ran);
  CHECK(ran.find(" -DFROM_CXX=1 ") != std::string::npos);
  CHECK_FALSE(fs::exists(ccache_calls));
  // Its flags are judged as FERRY_WRAP_FLAGS are.
  support::ScopedEnv refused("FERRY_CXX", ccache.string() + " g++ -fplugin=/tmp/x.so");
  CHECK(build_error(reinterpret_cast<const void*>(&twice)).find("refusing a compiler flag: '-fplugin=/tmp/x.so'") !=
        std::string::npos);
}

TEST_CASE("Wrap.ccache_is_never_run_and_its_configuration_file_runs_nothing") {
  // Disabled, ccache still read its configuration file ($XDG_CONFIG_HOME or $HOME/.config): with
  // HOME=/tmp, another user's ccache.conf saying `prefix_command = their script` ran that script
  // as the host's user, with the wrap's compile as its arguments (found by an audit, as two users).
  // ferry now runs ccache's compiler itself: the one after it, or the one a masquerade link
  // (/usr/lib/ccache/g++ -> ccache) stands for.
  support::TempDir bin, masquerade, home, cache;
  const fs::path calls = bin.path / "calls", prefix_ran = home.path / "prefix-ran";
  const fs::path cxx = script(bin.path, "fake-c++",
                              "echo \"$*\" >> '" + calls.string() + "'\n" + fake_compiler("echo 'fake: no' >&2\nexit 1"));
  const fs::path prefix = script(home.path, "prefix", "echo ran >> '" + prefix_ran.string() + "'\nexec \"$@\"");
  fs::create_directories(home.path / "config" / "ccache");
  std::ofstream(home.path / "config" / "ccache" / "ccache.conf") << "prefix_command = " << prefix.string() << "\n";
  support::ScopedEnv config_home("XDG_CONFIG_HOME", (home.path / "config").string());
  support::ScopedEnv home_dir("HOME", home.path.string());
  CacheAt at(cache.path / "c");
  const auto real_ccache = ferry::detail::find_program("ccache");
  if (real_ccache) {
    support::ScopedEnv compiler("FERRY_CXX", real_ccache->string() + " " + cxx.string() + " -DPART=1");
    CHECK(build_error(reinterpret_cast<const void*>(&twice)).find("fake: no") != std::string::npos);
    CHECK_FALSE(fs::exists(prefix_ran));
    CHECK(fs::exists(calls));
  } else {
    MESSAGE("Debian's ccache is not installed: its configuration file is not tried");
  }
  // A masquerade link: the program of its name after it on PATH runs, not ccache.
  fs::remove(calls);
  const fs::path ccache = script(bin.path, "ccache", "echo ccache >> '" + prefix_ran.string() + "'\nexit 1");
  fs::create_symlink(ccache, masquerade.path / "fake-c++");
  const char* path = std::getenv("PATH");
  support::ScopedEnv search("PATH", masquerade.path.string() + ":" + bin.path.string() + ":" + (path ? path : ""));
  // (Flags of their own: a build that failed is not tried again with the same compiler and flags.)
  for (const std::string& given : {std::string("fake-c++ -DPART=2"), (masquerade.path / "fake-c++").string() + " -DPART=3"}) {
    CAPTURE(given);
    support::ScopedEnv compiler("FERRY_CXX", given);
    CHECK(build_error(reinterpret_cast<const void*>(&twice)).find("fake: no") != std::string::npos);
    CHECK_FALSE(fs::exists(prefix_ran));
    CHECK(fs::exists(calls));
    fs::remove(calls);
  }
  // ccache with no compiler after it, nor one behind it: said so.
  support::ScopedEnv alone("FERRY_CXX", ccache.string());
  CHECK(build_error(reinterpret_cast<const void*>(&twice)).find("is ccache with no compiler after it") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(prefix_ran));
}

TEST_CASE("Wrap.a_compiler_that_produces_nothing_says_so") {
  // FERRY_CXX=/bin/true: it exits 0 and writes nothing. That is not a refusal of what it read
  // ("the compiler's list ... cannot be parsed (a header or library another user could have
  // changed)"): there is no list, nor plugin.
  support::TempDir cache;
  const auto truth = ferry::detail::find_program("true");
  REQUIRE(truth);
  support::ScopedEnv compiler("FERRY_CXX", truth->string());
  CacheAt at(cache.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find("exited successfully but produced no plugin") != std::string::npos);
  CHECK(what.find("refusing") == std::string::npos);
}

TEST_CASE("Wrap.a_sanitizer_the_worker_cannot_run_is_refused") {
  // -fsanitize=address was taken, and every call of the plugin killed its worker ("ASan runtime
  // does not come first"): refused, saying why, unless ferry itself is built with it.
#if !defined(__SANITIZE_ADDRESS__)
  support::TempDir cache;
  CacheAt at(cache.path / "c");
  support::ScopedEnv flags("FERRY_WRAP_FLAGS", "-fsanitize=undefined,address");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find("refusing a compiler flag: '-fsanitize=undefined,address'") != std::string::npos);
  CHECK(what.find("AddressSanitizer") != std::string::npos);
  // Taken back by a later -fno-sanitize=, as the compiler takes it: not refused (the build goes
  // on, to this fake compiler's own failure).
  support::TempDir bin;
  support::ScopedEnv compiler(
      "FERRY_CXX", script(bin.path, "failing-c++", fake_compiler("echo 'the fake compiler fails' >&2\nexit 1")).string());
  support::ScopedEnv back("FERRY_WRAP_FLAGS", "-fsanitize=address -fno-sanitize=address");
  CacheAt elsewhere(cache.path / "d");
  const std::string taken_back = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(taken_back);
  CHECK(taken_back.find("refusing a compiler flag") == std::string::npos);
  CHECK(taken_back.find("the fake compiler fails") != std::string::npos);
#endif
}

TEST_CASE("Wrap.compiler_inherits_no_descriptor_of_the_host") {
  // The compiler runs while the host holds worker channels and the application's files, some of
  // them not close-on-exec: it must see only its stdin (/dev/null) and its log as stdout/stderr.
  FreshCache cache;
  CacheAt at(cache.path);
  // What each run of the fake compiler saw, one file per run: the executor's warm-up builds run
  // several compilers at once.
  support::TempDir bin, listings;
  fs::path cxx = script(bin.path, "listing-c++",
                        "ls -1 /proc/self/fd > '" + listings.path.string() + "/fds.$$'\nexit 1");
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  int leaky = ::fcntl(::open("/proc/self/status", O_RDONLY), F_DUPFD, 10);
  REQUIRE(leaky >= 10);
  REQUIRE((::fcntl(leaky, F_GETFD) & FD_CLOEXEC) == 0);
  {
    ferry::Executor ex(support::options(1));
    CHECK_THROWS_AS(ex.submit(hypotenuse, 1.0, 2.0).get(), ferry::UnresolvableTaskError);
    ferry::wait_for_wraps(120s);  // the warm-up builds ran this compiler too
  }
  ::close(leaky);
  int runs = 0;
  for (const auto& e : fs::directory_iterator(listings.path)) {
    std::ifstream in(e.path());
    std::string all, line;
    std::set<std::string> seen;
    while (std::getline(in, line)) {
      seen.insert(line);
      all += line + " ";
    }
    CAPTURE(all);
    // ls's own listing: stdin, stdout, stderr and the directory it reads.
    CHECK(seen == std::set<std::string>{"0", "1", "2", "3"});
    ++runs;
  }
  CHECK(runs >= 1);
}

TEST_CASE("Wrap.a_compiler_that_is_sccache_or_distcc_is_refused") {
  // They hand back objects from a cache others may fill, or compiled on another machine.
  FreshCache cache;
  CacheAt at(cache.path);
  support::TempDir bin;
  for (const char* wrapper : {"sccache", "distcc"}) {
    CAPTURE(wrapper);
    const fs::path program = script(bin.path, wrapper, "exec g++ \"$@\"");
    const fs::path cxx = bin.path / (std::string("g++-through-") + wrapper);
    fs::create_symlink(program, cxx);
    support::ScopedEnv use("FERRY_CXX", cxx.string());
    ferry::Executor ex(support::options(1));
    CHECK_THROWS_WITH_AS(ex.submit(twice, 1, std::vector<int>{}).get(), doctest::Contains(wrapper),
                         ferry::UnresolvableTaskError);
  }
}

TEST_CASE("Wrap.compiler_others_could_change_is_refused") {
  FreshCache cache;
  CacheAt at(cache.path);
  support::TempDir bin;
  fs::path open_dir = bin.path / "open";
  fs::create_directories(open_dir);
  fs::permissions(open_dir, fs::perms(0777), fs::perm_options::replace);
  fs::create_symlink(ferry::wrap_options().compiler, open_dir / "c++");
  support::ScopedEnv cxx("FERRY_CXX", (open_dir / "c++").string());
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_WITH_AS(ex.submit(hypotenuse, 3.0, 4.0).get(),
                       doctest::Contains("refusing to run the compiler"), ferry::UnresolvableTaskError);
}

TEST_CASE("Wrap.cache_keys_are_blake2b") {
  FreshCache cache;
  REQUIRE(run_wrap_host(cache.path) == "106 1\n");
  auto so = entries(plugins_of(cache.path), ".so");
  REQUIRE(so.size() == 1);
  std::string name = so[0].filename().string();  // wrap-<64 hex digits>-<16 of its content's>.so
  CHECK(name.size() == 5 + 64 + 1 + 16 + 3);
  std::string sum;
  std::ifstream(entries(cache.path, ".sum")[0]) >> sum;
  CHECK(sum.size() == 64);  // BLAKE2b-256 of the plugin's bytes
  CHECK(sum.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(name.substr(5 + 64 + 1, 16) == sum.substr(0, 16));
}

TEST_CASE("Wrap.plugins_have_no_json_entry_point") {
  // Built without it (most of a wrap's compile time): a JSON call says so instead of crashing.
  FreshCache cache;
  CacheAt at(cache.path);
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.submit(hypotenuse, 3.0, 4.0).get() == doctest::Approx(5.0));
  fs::path library;
  for (const auto& so : entries(plugins_of(cache.path), ".so")) {
    const std::string n = so.filename().string();  // wrap-<key>-<content>.so, from wrap-<key>.cpp
    std::ifstream cpp(cache.path / (n.substr(0, n.rfind('-')) + ".cpp"));
    std::string first;
    std::getline(cpp, first);
    if (first.find("FERRY_WRAP(hypotenuse)") != std::string::npos) library = so;
  }
  REQUIRE_FALSE(library.empty());
  CHECK_THROWS_WITH_AS(
      ex.submit_json(ferry::TaskRef{.library = library, .name = "hypotenuse"}, R"({"value0": 3.0, "value1": 4.0})").get(),
      doctest::Contains("no JSON entry point"), ferry::PluginError);
  CHECK(ex.submit(hypotenuse, 6.0, 8.0).get() == doctest::Approx(10.0));
  // Nor as an initializer with JSON arguments: the pool breaks, saying why.
  auto o = support::options(1);
  o.initializer = ferry::Call::json(ferry::TaskRef{.library = library, .name = "hypotenuse"},
                                    R"({"value0": 3.0, "value1": 4.0})");
  ferry::Executor with(o);
  try {
    auto f = with.submit(hypotenuse, 6.0, 8.0);
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("no JSON entry point"), ferry::BrokenProcessPool);
  } catch (const ferry::BrokenProcessPool& e) {
    CHECK(std::string(e.what()).find("no JSON entry point") != std::string::npos);
  }
}

namespace {

/// A directory others can write (0777; its name has a space, as the compiler's list of inputs
/// then escapes it) and a private one (0755), each with a header that defines FERRY_TEST_K.
struct HeaderDirs {
  support::TempDir root;
  fs::path open = root.path / "open dir";
  fs::path mine = root.path / "my dir";
  HeaderDirs() {
    for (const auto& [dir, mode] : {std::pair{open, 0777}, std::pair{mine, 0755}}) {
      fs::create_directories(dir);
      fs::permissions(dir, fs::perms(mode), fs::perm_options::replace);
      std::ofstream(dir / "k.hpp") << "#define FERRY_TEST_K 7\n";
      fs::permissions(dir / "k.hpp", fs::perms(0644), fs::perm_options::replace);
    }
  }
};

/// set_wrap_options for the scope.
struct WrapOptionsFor {
  explicit WrapOptionsFor(ferry::WrapOptions o) { ferry::set_wrap_options(std::move(o)); }
  ~WrapOptionsFor() { ferry::set_wrap_options({}); }
};

}  // namespace

TEST_CASE("Wrap.a_header_another_user_could_change_is_refused") {
  // The compiler lists every file it read (-MD); each must pass the trust check before the
  // plugin is published. Here the directory named by -I is private, and the header is found in a
  // subdirectory of it that others can write: only the list shows it.
  FreshCache cache;
  CacheAt at(cache.path);
  HeaderDirs dirs;
  fs::create_directories(dirs.mine / "sub");
  fs::permissions(dirs.mine / "sub", fs::perms(0777), fs::perm_options::replace);
  std::ofstream(dirs.mine / "sub" / "k.hpp") << "#define FERRY_TEST_K 7\n";
  ferry::Executor ex(support::options(1));
  {
    WrapOptionsFor o({.flags = {"-I" + dirs.mine.string()}, .includes = {"<sub/k.hpp>"}});
    const std::string said = "refusing what the compiler read: " + (dirs.mine / "sub").string() + " (on the way to " +
                             (dirs.mine / "sub" / "k.hpp").string() + ") is writable by group or others";
    CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains(said.c_str()), ferry::UnresolvableTaskError);
  }
  {
    // Named by -include, or in a directory -I names: judged before the compiler runs too.
    WrapOptionsFor o({.flags = {"-include", (dirs.open / "k.hpp").string()}});
    CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("writable by group or others"),
                         ferry::UnresolvableTaskError);
  }
  {
    WrapOptionsFor o({.flags = {"-I" + dirs.open.string()}, .includes = {"\"k.hpp\""}});
    CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("writable by group or others"),
                         ferry::UnresolvableTaskError);
  }
  {
    // The same header in a private directory is compiled in.
    WrapOptionsFor o({.flags = {"-include", (dirs.mine / "k.hpp").string()}});
    CHECK(ex.submit(plus_k, 1).get() == 8);
  }
  CHECK(entries(cache.path, ".d.tmp").empty());  // the lists are not left behind
}

TEST_CASE("Wrap.a_library_another_user_could_change_is_not_linked_in") {
  // The linker lists what it read (--dependency-file): a library it finds through -l in a private
  // -L directory, but which others can write, could be theirs. (A library named by path, or a -L
  // directory others can write, is refused before the compiler runs.)
  FreshCache cache;
  CacheAt at(cache.path);
  HeaderDirs dirs;
  fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, dirs.mine / "libplain.so");
  fs::permissions(dirs.mine / "libplain.so", fs::perms(0666), fs::perm_options::replace);
  ferry::Executor ex(support::options(1));
  {
    WrapOptionsFor o({.flags = {"-DFERRY_TEST_K=7"}, .libraries = {"-L" + dirs.mine.string(), "-lplain"}});
    const std::string said = "refusing what the compiler read: " + (dirs.mine / "libplain.so").string() +
                             " is writable by group or others";
    CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains(said.c_str()), ferry::UnresolvableTaskError);
  }
  fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, dirs.open / "libplain.so");
  WrapOptionsFor o({.flags = {"-DFERRY_TEST_K=7"}, .libraries = {(dirs.open / "libplain.so").string()}});
  CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("refusing a compiler flag"),
                       ferry::UnresolvableTaskError);
}

TEST_CASE("Wrap.a_flag_naming_a_program_or_plugin_others_could_change_is_refused") {
  // The compiler runs programs from a -B directory, loads -fplugin= into itself, reads -specs=
  // (which can change what it runs), runs -wrapper and a linker by path, and the linker loads
  // -plugin: none of them is in the compiler's list of inputs, so each is judged before it runs.
  FreshCache cache;
  CacheAt at(cache.path);
  HeaderDirs dirs;
  for (const char* name : {"p.so", "specs", "w", "ld"}) std::ofstream(dirs.open / name) << "\n";
  const std::string open = dirs.open.string();
  ferry::Executor ex(support::options(1));
  ferry::wait_for_wraps(120s);  // the executor's warm-up builds
  const unsigned before = ferry::detail::wrap_compilations();
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"-B" + open + "/"}, {"-B", open}, {"-B" + open + "/x86_64-linux-gnu-"},
        {"-fplugin=" + open + "/p.so"}, {"-specs=" + open + "/specs"}, {"-wrapper", open + "/w,-v"},
        {"-fuse-ld=" + open + "/ld"}, {"--ld-path=" + open + "/ld"}, {"-Wl,-plugin," + open + "/p.so"},
        {"-Wl,--plugin=" + open + "/p.so"}, {"-Xlinker", "-plugin", "-Xlinker", open + "/p.so"},
        {"@" + open + "/specs"}}) {
    CAPTURE(flags);
    auto with_k = flags;
    with_k.push_back("-DFERRY_TEST_K=7");
    WrapOptionsFor o({.flags = with_k});
    CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("refusing a compiler flag"),
                         ferry::UnresolvableTaskError);
  }
  CHECK(ferry::detail::wrap_compilations() == before);  // refused before the compiler ran
}

TEST_CASE("Wrap.a_precompiled_header_beside_a_users_header_is_never_used") {
  // gcc takes `k.hpp.gch` in place of `k.hpp` for the first -include or #include before any
  // token (clang for the first -include), and lists neither in -MD: a review's reproduction
  // published a plugin built from another user's precompiled header. ferry's prelude is the
  // first -include of every build now, so the header itself is read, listed and judged.
  FreshCache cache;
  CacheAt at(cache.path);
  support::TempDir root;
  const fs::path mine = root.path / "mine", sub = mine / "sub";
  fs::create_directories(sub);
  fs::permissions(mine, fs::perms(0755), fs::perm_options::replace);
  fs::permissions(sub, fs::perms(0777), fs::perm_options::replace);
  std::ofstream(sub / "k.hpp") << "#define FERRY_TEST_K 7\n";
  std::ofstream(root.path / "evil.hpp") << "#define FERRY_TEST_K 1000\n";
  std::ofstream(root.path / "use.cpp") << "int use() { return FERRY_TEST_K; }\n";
  // Built with the wraps' own flags (anyone can read them from ps).
  const auto o = ferry::wrap_options();
  std::string cxx = "'" + o.compiler.string() + "' -std=c++20 -fPIC -fvisibility=hidden -DBOOST_DLL_USE_STD_FS -DFERRY_DETAIL_NO_JSON_ENTRY";
  for (const auto& f : o.flags) cxx += " '" + f + "'";
  std::string out;
  const std::string build = cxx + " -x c++-header '" + (root.path / "evil.hpp").string() + "' -o '" + (sub / "k.hpp.gch").string() + "' 2>&1";
  REQUIRE(std::system(build.c_str()) == 0);
  // The precondition: with that header first, the compiler takes the precompiled one.
  const std::string probe = cxx + " -I'" + mine.string() + "' -include sub/k.hpp -H -fsyntax-only '" +
                            (root.path / "use.cpp").string() + "' 2>&1 | grep -q '^! .*k.hpp.gch'";
  if (std::system(probe.c_str()) != 0) {
    MESSAGE("this compiler does not take the planted precompiled header: nothing to show");
    return;
  }
  ferry::Executor ex(support::options(1));
  ferry::wait_for_wraps(120s);
  WrapOptionsFor w({.flags = {"-I" + mine.string(), "-include", "sub/k.hpp"}});
  CHECK_THROWS_WITH_AS(ex.submit(plus_k, 1).get(), doctest::Contains("refusing what the compiler read"),
                       ferry::UnresolvableTaskError);
}

TEST_CASE("Wrap.a_prelude_that_read_a_file_others_could_change_is_not_kept") {
  // A wrap that uses the precompiled prelude lists none of the headers inside it: the prelude's
  // own build is judged from its list, and not kept when it read such a file. Here `-I mine`
  // puts a `numeric` others can write before the system's, which the prelude includes.
  FreshCache cache;
  CacheAt at(cache.path);
  support::TempDir root;
  const fs::path mine = root.path / "mine";
  fs::create_directories(mine);
  fs::permissions(mine, fs::perms(0755), fs::perm_options::replace);
  fs::path system_numeric;
  for (const auto& e : fs::directory_iterator("/usr/include/c++"))
    if (fs::exists(e.path() / "numeric")) system_numeric = e.path() / "numeric";
  REQUIRE_FALSE(system_numeric.empty());
  fs::copy_file(system_numeric, mine / "numeric");
  fs::permissions(mine / "numeric", fs::perms(0666), fs::perm_options::replace);
  auto preludes = [&] {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(cache.path)) {
      const std::string name = e.path().filename().string();
      n += name.starts_with("prelude-") && (name.ends_with(".gch") || name.ends_with(".pch"));
    }
    return n;
  };
  const std::size_t before = preludes();
  WrapOptionsFor w({.flags = {"-I" + mine.string()}});
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_WITH_AS(ex.submit(twice, 1, std::vector<int>{}).get(), doctest::Contains("refusing what the compiler read"),
                       ferry::UnresolvableTaskError);
  ferry::wait_for_wraps(120s);
  CHECK(preludes() == before);
}

TEST_CASE("Wrap.a_header_the_prelude_read_that_changed_rebuilds_the_prelude_and_the_wrap") {
  // gcc lists none of the files a precompiled header holds in a wrap's list: the prelude keeps
  // its own record, checked before each use, and each wrap's record holds it too. Here `-I mine`
  // puts a `numeric` before the system's (which the prelude includes) that defines the constant.
  FreshCache cache;
  support::TempDir root;
  const fs::path mine = root.path / "mine";
  fs::create_directories(mine);
  fs::permissions(mine, fs::perms(0755), fs::perm_options::replace);
  std::ofstream(mine / "numeric") << "#include_next <numeric>\n#include \"k.hpp\"\n";
  auto numeric = [&](int k) { write_k_header(mine / "k.hpp", std::to_string(k)); };
  numeric(10);
  const std::string flags = "-I" + mine.string();
  CHECK(run_header_host(cache.path, root.path, flags) == "11 1\n");
  CHECK(run_header_host(cache.path, root.path, flags) == "11 0\n");
  numeric(20);
  CHECK(run_header_host(cache.path, root.path, flags) == "21 1\n");
  CHECK(run_header_host(cache.path, root.path, flags) == "21 0\n");
}

TEST_CASE("Wrap.builds_and_reuses_its_prelude_with_clang") {
  // clang records in a precompiled header the name of the header it was made from: the cache's
  // prelude, built from a header under a temporary name then renamed, was refused, and with
  // FERRY_CXX=clang++ every wrap failed ("could not find file ... referenced by AST file").
  auto clang = ferry::detail::find_program("clang++");
  if (!clang) {
    MESSAGE("no clang++ here");
    return;
  }
  support::TempDir root;
  const fs::path cache = root.path / "cache";
  CacheAt at(cache);
  support::ScopedEnv cxx("FERRY_CXX", clang->string());
  {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(hypotenuse, 3.0, 4.0).get() == doctest::Approx(5.0));
    ferry::wait_for_wraps(240s);
  }
  bool pch = false;
  for (const auto& e : fs::directory_iterator(cache)) pch |= e.path().extension() == ".pch";
  CHECK(pch);
  // A later process's wraps use it (a fresh entry: another body, so compiled again).
  ferry::Executor again(support::options(1));
  CHECK(again.submit(twice, 4, std::vector<int>{}).get() == 8);
}

TEST_CASE("Wrap.a_relative_cache_directory_is_the_one_of_the_current_directory_at_each_use") {
  // set_wrap_options({.cache_dir = "relative"}) kept the plugin's path relative: after a chdir the
  // host looked for it under the new directory ("plugin relative/plugins/wrap-....so does not
  // exist"), and would have loaded whatever file of that name it found there, never checked
  // against the entry's hash. It is made absolute when the options are read, as
  // FERRY_CACHE_DIR is.
  support::TempDir first, second;
  fs::permissions(first.path, fs::perms::owner_all, fs::perm_options::replace);
  fs::permissions(second.path, fs::perms::owner_all, fs::perm_options::replace);
  WrapOptionsFor relative({.cache_dir = "wrap-cache"});
  {
    support::ScopedCwd in(first.path);
    CHECK(ferry::wrap_options().cache_dir == first.path / "wrap-cache");
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(hypotenuse, 3.0, 4.0).get() == 5.0);
  }
  support::ScopedCwd in(second.path);
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(hypotenuse, 6.0, 8.0).get() == 10.0);
  CHECK(fs::exists(second.path / "wrap-cache"));
}

namespace {

/// The build of a wrapped function of this file with the options in effect now (built alone).
ferry::detail::WrapBuild build_of(const void* function) {
  const auto* site = ferry::detail::find_wrap(function);
  REQUIRE(site);
  return ferry::detail::wrap_build(*site).get();
}

/// The message of `error`, "" for none.
std::string message_of(const std::exception_ptr& error) {
  if (!error) return {};
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "?";
}

/// Functions registered by hand (FERRY_WRAP's registration, with a site a test chooses); the
/// host's own definitions do not matter.
std::string where_am_i() { return "host"; }
int lined_a() { return 0; }
int lined_b() { return 0; }

ferry::detail::WrapSite site_of(const void* function, const char* name, const char* source, const char* file, int line) {
  return {function, name, source, file, line, "int()", 1};
}

/// Writes a line into the FIFO `fifo` (waiting for its reader).
void write_line_to(const fs::path& fifo) {
  const int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!::write(fd, "\n", 1);
  ::close(fd);
}

}  // namespace

TEST_CASE("Wrap.a_forked_child_builds_what_its_parent_was_building") {
  // fork() while a wrap was building: the child inherited the build's future, whose thread it
  // does not have, and the locks that thread held (the prelude's): its first submission of the
  // wrap waited for ever. A child keeps only the builds that had ended, and its own locks.
  support::TempDir bin, cache;
  const fs::path hold = bin.path / "hold", started = bin.path / "started", gate = bin.path / "gate";
  REQUIRE(::mkfifo(gate.c_str(), 0600) == 0);
  std::ofstream(hold) << "x";
  // Every build fails at once, but the parent's first, held in the prelude's compile until the
  // test lets it go.
  const fs::path cxx = script(bin.path, "held-c++",
                              "case \"$*\" in *-Wl,--help*) echo '  --dependency-file=FILE'; exit 0;; esac\n"
                              "if [ -e '" + hold.string() + "' ]; then : > '" + started.string() + "'; read line < '" +
                                  gate.string() + "'; fi\nexit 1");
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  CacheAt at(cache.path / "c");
  const void* function = reinterpret_cast<const void*>(&twice);
  auto parents = ferry::detail::wrap_build(*ferry::detail::find_wrap(function));
  struct Release {
    fs::path fifo;
    ~Release() { write_line_to(fifo); }
  } release{gate};
  REQUIRE(support::wait_until([&] { return fs::exists(started); }, 60000ms));
  fs::remove(hold);
  const int code = support::exit_code_of_child(
      [&] {
        // The parent's compiler let go (its build of the entry holds the entry's lock, which
        // the child's waits for, as another process's would).
        write_line_to(gate);
        auto f = ferry::detail::wrap_build(*ferry::detail::find_wrap(function));
        if (f.wait_for(30s) != std::future_status::ready) return 1;  // the parent's, never to end
        return f.get().error ? 0 : 2;  // the fake compiler's failure: an answer
      },
      60000ms);
  CHECK(code == 0);
  release.fifo.clear();
  CHECK(parents.wait_for(60s) == std::future_status::ready);
}

TEST_CASE("Wrap.a_missing_header_is_looked_for_again_by_the_same_process") {
  // A compile that stops at a missing header is not remembered (README): it was, though, for the
  // rest of the process, which failed on after the header was created.
  FreshCache cache;
  CacheAt at(cache.path);
  support::TempDir inc;
  const fs::path later = inc.path / "later_k.hpp";
  WrapOptionsFor o({.flags = {"-include", later.string()}});
  const std::string first = build_error(reinterpret_cast<const void*>(&plus_k));
  CAPTURE(first);
  CHECK(first.find("later_k.hpp") != std::string::npos);
  CHECK(entries(cache.path, ".err").empty());
  std::ofstream(later) << "#define FERRY_TEST_K 7\n";
  CHECK(build_error(reinterpret_cast<const void*>(&plus_k)) == "");
}

TEST_CASE("Wrap.a_plugin_removed_from_the_cache_is_built_again") {
  // `ferry cache clear` under a live host: its next submission named the removed plugin, and the
  // workers failed to load it ("plugin ... does not exist").
  FreshCache cache;
  CacheAt at(cache.path);
  const auto first = build_of(reinterpret_cast<const void*>(&twice));
  REQUIRE(message_of(first.error) == "");
  for (const auto* part : {"wrap-"})
    for (const auto& f : files_named(cache.path, part)) fs::remove(f);
  REQUIRE_FALSE(fs::exists(first.library));
  const auto second = build_of(reinterpret_cast<const void*>(&twice));
  CHECK(message_of(second.error) == "");
  CHECK(fs::exists(second.library));
}

TEST_CASE("Wrap.a_failure_whose_source_went_meanwhile_is_not_remembered") {
  // `ferry cache clear` during a compile removed the build's source and scratch directory: the
  // compiler's failure ("cannot create temporary file") was written to the entry's .err, and
  // every later run failed at once with it.
  support::TempDir bin, cache;
  const fs::path cxx = script(bin.path, "cleared-c++",
                              fake_compiler("case \"$*\" in *-fsyntax-only*) exit 1;; esac\n"
                                            "for a; do case \"$prev\" in -MF) list=$a;; esac\n"
                                            "case \"$a\" in *.cpp) src=$a;; esac; prev=$a; done\n"
                                            "printf 'x.o: /usr/include/stdio.h\\n' > \"$list\"\nrm -f \"$src\"\n"
                                            "echo 'x.cpp:1: error: cannot create temporary file' >&2\nexit 1"));
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  CacheAt at(cache.path / "c");
  const std::string what = build_error(reinterpret_cast<const void*>(&twice));
  CAPTURE(what);
  CHECK(what.find("cannot create temporary file") != std::string::npos);
  CHECK(entries(cache.path / "c", ".err").empty());
}

TEST_CASE("Wrap.the_same_body_at_another_line_is_another_entry") {
  // The generated source's #line gives __LINE__ and __FILE__ the host's place, which the cache key
  // left out: a body moved down its file ran with its old line, and another program's build of
  // the same text (and its failure) was used.
  FreshCache cache;
  CacheAt at(cache.path);
  const char* source = "int lined() { return __LINE__; }";
  const auto a = ferry::detail::wrap_build(site_of(reinterpret_cast<const void*>(&lined_a), "lined", source, "same.cpp", 10)).get();
  const auto b = ferry::detail::wrap_build(site_of(reinterpret_cast<const void*>(&lined_b), "lined", source, "same.cpp", 20)).get();
  REQUIRE(message_of(a.error) == "");
  REQUIRE(message_of(b.error) == "");
  CHECK(a.library != b.library);
}

TEST_CASE("Wrap.a_source_path_with_a_quote_a_backslash_or_a_newline_is_escaped") {
  // The host's file name went into the generated #line as it is: a `"`, a `\` or a newline in it
  // broke every wrap of that file. And a function registered again at its address (a library
  // unloaded, another loaded where it was) is the new body, not the first one's plugin.
  FreshCache cache;
  CacheAt at(cache.path);
  const void* function = reinterpret_cast<const void*>(&where_am_i);
  const char* odd = "odd\"dir\\x\ny.cpp";
  ferry::detail::register_wrap({function, "where_am_i", "std::string where_am_i() { return __FILE__; }", odd, 5,
                                ferry::detail::WrapSignature<&where_am_i>::text.data,
                                ferry::detail::WrapSignature<&where_am_i>::fingerprint});
  const auto first = build_of(function);
  CHECK(message_of(first.error) == "");
  std::string second_source = "std::string where_am_i() { return \"second\"; }";
  ferry::detail::register_wrap({function, "where_am_i", second_source.c_str(), "plain.cpp", 7,
                                ferry::detail::WrapSignature<&where_am_i>::text.data,
                                ferry::detail::WrapSignature<&where_am_i>::fingerprint});
  second_source.assign(second_source.size(), 'x');  // the registry keeps its own copy
  CHECK(std::string(ferry::detail::find_wrap(function)->source).find("second") != std::string::npos);
  const auto second = build_of(function);
  CHECK(message_of(second.error) == "");
  CHECK(second.library != first.library);
}

TEST_CASE("Wrap.a_flag_and_a_library_of_the_same_text_are_two_builds") {
  // The process's map of builds named them by their flags, includes and libraries run together:
  // {flags: x} and {libraries: x} were one build.
  FreshCache cache;
  CacheAt at(cache.path);
  std::string as_flag, as_library;
  {
    WrapOptionsFor o({.flags = {"-Wl,-O1"}});
    as_flag = build_of(reinterpret_cast<const void*>(&twice)).library;
  }
  {
    WrapOptionsFor o({.libraries = {"-Wl,-O1"}});
    as_library = build_of(reinterpret_cast<const void*>(&twice)).library;
  }
  REQUIRE_FALSE(as_flag.empty());
  REQUIRE_FALSE(as_library.empty());
  CHECK(as_flag != as_library);
}

TEST_CASE("Wrap.a_cache_directory_with_a_comma_in_its_name_works") {
  // gcc splits -Wl,--dependency-file=<path> at its commas: every wrap failed ("the linker produced
  // no dependency list"), and ld wrote a file outside the cache.
  FreshCache cache("a,b");
  CacheAt at(cache.path);
  CHECK(build_error(reinterpret_cast<const void*>(&twice)) == "");
  std::vector<std::string> outside;
  for (const auto& e : fs::directory_iterator(cache.dir.path))
    if (e.path() != cache.path) outside.push_back(e.path().filename().string());
  CHECK(outside.empty());
}

TEST_CASE("Wrap.the_cache_keeps_the_preludes_used_last") {
  // Each prelude is about 110 MB, one per compiler, flag set and version of ferry's headers: the
  // cache kept every one until `ferry cache clear`. Here, five made by hand (the precompiled
  // header's bytes do not matter to the removal), each used a minute after the one before (its
  // lock file's time), the last one just built.
  support::TempDir cache;
  const auto key = [](int i) { return std::string(64, static_cast<char>('a' + i)); };
  const auto named = [&](int i, const char* suffix) { return cache.path / ("prelude-" + key(i) + suffix); };
  const auto now = fs::file_time_type::clock::now();
  for (int i = 0; i < 5; ++i) {
    for (const char* suffix : {".hpp", ".hpp.gch", ".hpp.inputs", ".lock"}) std::ofstream(named(i, suffix)) << "x";
    fs::last_write_time(named(i, ".lock"), now - std::chrono::minutes(10 - i));
  }
  std::ofstream(cache.path / "prelude-notes.txt") << "the user's";  // not a name the cache gives
  // A wrap's compiler reads prelude 1 (its build holds the lock shared): it stays.
  const int held = ::open(named(1, ".lock").c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_SH) == 0);
  // Three kept: the new one (4) and the two used last (3, 2); 0 goes, 1 is in use.
  CHECK(ferry::detail::remove_old_preludes(cache.path, key(4), 3) == 1);
  for (const char* suffix : {".hpp", ".hpp.gch", ".hpp.inputs", ".lock"}) {
    CAPTURE(suffix);
    CHECK(!fs::exists(named(0, suffix)));
    for (int i = 1; i < 5; ++i) CHECK(fs::exists(named(i, suffix)));
  }
  CHECK(fs::exists(cache.path / "prelude-notes.txt"));
  // Let go, it goes at the next pass.
  ::close(held);
  CHECK(ferry::detail::remove_old_preludes(cache.path, key(4), 3) == 1);
  CHECK(!fs::exists(named(1, ".hpp.gch")));
  CHECK(fs::exists(named(2, ".hpp.gch")));
  // One kept: only the new one.
  CHECK(ferry::detail::remove_old_preludes(cache.path, key(4), 1) == 2);
  CHECK(fs::exists(named(4, ".hpp.gch")));
  CHECK(!fs::exists(named(3, ".hpp.gch")));
  CHECK(!fs::exists(named(2, ".hpp.gch")));
}

TEST_CASE("Wrap.a_cache_on_a_noexec_file_system_is_refused") {
  // No plugin can be loaded from it: every run compiled, then failed "failed to map segment".
  if (::geteuid() != 0) {
    MESSAGE("needs root to mount a file system: skipped");
    return;
  }
  support::TempDir mount_point;
  REQUIRE(::mount("none", mount_point.path.c_str(), "tmpfs", MS_NOEXEC, "size=400m,mode=0700") == 0);
  struct Unmount {
    const fs::path& at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{mount_point.path};
  // The directory is judged before anything is compiled into it: it needs no prelude (copies of
  // the suite's, one of about 110 MB for each version of the headers the build directory has
  // seen, once filled this file system).
  const fs::path cache = mount_point.path / "cache";
  fs::create_directories(cache);
  fs::permissions(cache, fs::perms::owner_all, fs::perm_options::replace);
  std::string what;
  {
    CacheAt at(cache);
    what = build_error(reinterpret_cast<const void*>(&twice));
  }
  CAPTURE(what);
  CHECK(what.find("noexec") != std::string::npos);
  CHECK(what.find("FERRY_CACHE_DIR") != std::string::npos);
}

TEST_CASE("Wrap.a_build_keeps_the_timeout_of_the_thread_that_asked") {
  // Build threads read FERRY_WRAP_TIMEOUT (getenv) while the application may change its
  // environment: design §9 says they never read it. Changed after the build was asked for, it
  // is not the build's.
  support::TempDir bin, cache;
  const fs::path started = bin.path / "started", gate = bin.path / "gate", never = bin.path / "never";
  REQUIRE(::mkfifo(gate.c_str(), 0600) == 0);
  REQUIRE(::mkfifo(never.c_str(), 0600) == 0);
  // The prelude's compile waits for the test, then fails; the wrap's never ends.
  const fs::path cxx = script(bin.path, "slow-c++",
                              "case \"$*\" in *-Wl,--help*) echo '  --dependency-file=FILE'; exit 0;;\n"
                              "*c++-header*) : > '" + started.string() + "'; read line < '" + gate.string() +
                                  "'; exit 1;; esac\nread line < '" + never.string() + "'");
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  support::ScopedEnv asked("FERRY_WRAP_TIMEOUT", "4");
  CacheAt at(cache.path / "c");
  auto build = ferry::detail::wrap_build(*ferry::detail::find_wrap(reinterpret_cast<const void*>(&twice)));
  REQUIRE(support::wait_until([&] { return fs::exists(started); }, 60000ms));
  support::ScopedEnv later("FERRY_WRAP_TIMEOUT", "9");
  write_line_to(gate);
  REQUIRE(build.wait_for(60s) == std::future_status::ready);
  const std::string what = message_of(build.get().error);
  CAPTURE(what);
  CHECK(what.find("did not finish within 4 s") != std::string::npos);
}

TEST_CASE("Wrap.a_refused_cache_directory_is_refused_once_per_process") {
  // A refusal of the cache directory itself (not private, noexec, cannot be made) was not kept:
  // every submission set up, started a thread and hashed again, to fail the same way.
  support::TempDir dir;
  const fs::path open_dir = dir.path / "cache";
  fs::create_directories(open_dir);
  fs::permissions(open_dir, fs::perms::all, fs::perm_options::replace);  // 0777
  CacheAt at(open_dir);
  const auto* site = ferry::detail::find_wrap(reinterpret_cast<const void*>(&hypotenuse));
  REQUIRE(site);
  const auto first = ferry::detail::wrap_build(*site).get();
  REQUIRE(first.error);
  CHECK(message_of(first.error).find("not private") != std::string::npos);
  const auto second = ferry::detail::wrap_build(*site).get();
  CHECK(second.error == first.error);  // the same build, kept: not set up again
}

TEST_CASE("Wrap.cache_clear_during_a_compile_leaves_the_prelude_it_includes") {
  // `ferry cache clear` during a wrap's compile removed the cache's precompiled prelude, which the
  // compile includes (its lock was let go once the prelude was built): the compile failed on a
  // missing -include. The fake compiler "precompiles" the prelude, then stops in the wrap's
  // compile until the test lets it go, and says whether the prelude it includes is still there.
#ifndef FERRY_TEST_CLI
  MESSAGE("no ferry command in this build: skipped");
#else
  support::TempDir bin, cache;
  const fs::path started = bin.path / "started", go = bin.path / "go";
  REQUIRE(::mkfifo(go.c_str(), 0600) == 0);
  const fs::path cxx = script(
      bin.path, "pausing-c++",
      "case \"$*\" in *-Wl,--help*) echo '  --dependency-file=FILE'; exit 0;; esac\n"
      "for a; do case \"$prev\" in -o) out=$a;; -MF) list=$a;; -include) inc=$a;; esac; prev=$a; done\n"
      "case \"$*\" in *c++-header*) echo pch > \"$out\"; printf 'x.o: /usr/include/stdio.h\\n' > \"$list\"; exit 0;; esac\n"
      "if [ ! -e '" + started.string() + "' ]; then : > '" + started.string() + "'; read line < '" + go.string() + "'; fi\n"
      "printf 'x.o: /usr/include/stdio.h\\n' > \"$list\"\n"
      "if [ -e \"$inc\" ] && [ -e \"$inc.gch\" ]; then echo 'x.cpp:1: error: compiled with the prelude' >&2\n"
      "else echo \"x.cpp:1: error: $inc: No such file or directory\" >&2; fi\nexit 1");
  support::ScopedEnv compiler("FERRY_CXX", cxx.string());
  support::ScopedEnv timeout("FERRY_WRAP_TIMEOUT", "60");
  const fs::path dir = cache.path / "c";
  CacheAt at(dir);
  auto build = ferry::detail::wrap_build(*ferry::detail::find_wrap(reinterpret_cast<const void*>(&twice)));
  struct Release {  // the compiler, also when a REQUIRE below ends the test
    const fs::path& go;
    void operator()() const {
      const int fd = ::open(go.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // ENXIO: no reader left
      if (fd >= 0) {
        (void)!::write(fd, "go\n", 3);
        ::close(fd);
      }
    }
    ~Release() { (*this)(); }
  } release{go};
  REQUIRE(support::wait_until([&] { return fs::exists(started); }, 60000ms));
  const std::string cmd = "'" FERRY_TEST_CLI "' cache clear --cache-dir '" + dir.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string cleared;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) cleared += buf;
  ::pclose(p);
  CAPTURE(cleared);
  CHECK(cleared.find("of builds under way") != std::string::npos);
  release();
  REQUIRE(build.wait_for(60s) == std::future_status::ready);
  const std::string what = message_of(build.get().error);
  CAPTURE(what);
  CHECK(what.find("compiled with the prelude") != std::string::npos);
#endif
}
