// SPDX-License-Identifier: BSD-3-Clause
// The plugin index when an allocation fails part way through a scan, or a directory's listing
// does: a binary of its own, as it replaces the global operator new to make the Nth allocation
// throw, and readdir to fail after N entries.
#include <doctest/doctest.h>

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <ferry/errors.hpp>
#include <ferry/plugin_index.hpp>

#include "support/fixture.hpp"

namespace {

/// > 0: the allocation that brings it to 0 throws std::bad_alloc; otherwise none does.
std::atomic<long> fail_in{0};

}  // namespace

void* operator new(std::size_t size) {
  if (fail_in.load(std::memory_order_relaxed) > 0 && fail_in.fetch_sub(1, std::memory_order_relaxed) == 1)
    throw std::bad_alloc();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// The nothrow forms (std::stable_sort's temporary buffer) too: left to the sanitizer's, what they
// allocate was given back to free() by the delete below (ASan: alloc-dealloc-mismatch).
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(size);
  } catch (...) {
    return nullptr;
  }
}
// What the operator new above returns comes from malloc: GCC's -Wmismatched-new-delete cannot see
// that through the replacement.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

/// >= 0: readdir gives this many more entries, then fails once with EMFILE (a listing cut short
/// by this process's want of descriptors, as getdents may be by its want of memory); otherwise it
/// is libc's. The scans of these tests run on the test's thread.
int entries_before_failure = -1;
/// When set: the names readdir gave.
std::vector<std::string>* names_listed = nullptr;

}  // namespace

namespace {

/// When set: the next readlink of a path whose last component is `name` first makes `dir` open
/// to others (0777): a way changed by its owner while a scan judges a directory's files.
struct OpenOnReadlink {
  std::string name;
  std::string dir;
};
OpenOnReadlink* open_on_readlink = nullptr;

}  // namespace

// The trust walk reads links with readlink: this one, the executable's.
extern "C" ssize_t readlink(const char* path, char* buf, size_t size) {
  using Readlink = ssize_t (*)(const char*, char*, size_t);
  static const auto real = reinterpret_cast<Readlink>(::dlsym(RTLD_NEXT, "readlink"));
  if (OpenOnReadlink* o = open_on_readlink) {
    const std::string_view p(path);
    if (p.size() > o->name.size() && p.ends_with("/" + o->name)) {
      open_on_readlink = nullptr;
      ::chmod(o->dir.c_str(), 0777);
    }
  }
  return real(path, buf, size);
}

// libstdc++'s directory_iterator reads its directory with readdir: this one, the executable's.
extern "C" struct dirent* readdir(DIR* dir) {
  using Readdir = struct dirent* (*)(DIR*);
  static const auto real = reinterpret_cast<Readdir>(::dlsym(RTLD_NEXT, "readdir"));
  if (entries_before_failure == 0) {
    entries_before_failure = -1;
    errno = EMFILE;
    return nullptr;
  }
  if (entries_before_failure > 0) --entries_before_failure;
  struct dirent* entry = real(dir);
  if (entry && names_listed) names_listed->push_back(entry->d_name);
  return entry;
}

namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary) << text;
  fs::permissions(file, fs::perms(0644));
}

std::int64_t ctime_ns(const fs::path& f) {
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  return std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
}

std::int64_t realtime_ns() {
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

}  // namespace

TEST_CASE("PluginIndex.scan.a_scan_cut_short_by_a_failed_allocation_leaves_the_index_whole") {
  // The scan moves the last scan's records (files that are no plugin, their verdicts' texts) over
  // as it goes: cut short by an exception, the index kept them half moved, and the next scan
  // numbered verdicts past the end of their texts (heap corruption; wrong lines in skipped()).
  support::TempDir dir;
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir.path / "libmath.so");
  fs::permissions(dir.path / "libmath.so", fs::perms(0755));
  write_text(dir.path / "liba.so", "not a library\n");
  write_text(dir.path / "libc.so", "");
  write_text(dir.path / "libd.so", "not a library either\n");
  // Records are kept from one scan to the next only for files changed 2 s before it.
  REQUIRE(support::wait_until(
      [&] {
        for (const char* f : {"libmath.so", "liba.so", "libc.so", "libd.so"})
          if (realtime_ns() - ctime_ns(dir.path / f) < 2'200'000'000) return false;
        return true;
      },
      std::chrono::seconds(10)));
  ferry::PluginIndex reference({dir.path});
  CHECK(reference.find("add").signature == "i32(i32,i32)");
  const auto expected = reference.skipped();
  REQUIRE(expected.size() == 3);

  // Each try in a child: libstdc++'s directory_iterator, noexcept with an error_code, ends the
  // process (std::terminate, SIGABRT) when its own allocation fails; such a try shows nothing
  // and is passed over. Any other end is the index's: 0 it answered as a fresh one after an
  // allocation failed in its scan, 1 a miss that ran whole, 3 it answered otherwise.
  enum : int { cut_short_and_whole = 0, ran_whole = 1, answered_otherwise = 3 };
  int cut_short = 0, in_the_library = 0;
  bool completed = false;
  for (long n = 1; !completed && n < 20'000; ++n) {
    CAPTURE(n);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::signal(SIGABRT, SIG_DFL);  // not doctest's report of a crash, from the child
      int code = answered_otherwise;
      try {
        ferry::PluginIndex index({dir.path});
        if (index.find("add").signature != "i32(i32,i32)") ::_exit(answered_otherwise);
        bool whole = false;
        fail_in = n;  // the nth allocation of a miss, which scans again
        try {
          index.find("nosuch");
        } catch (const std::bad_alloc&) {
        } catch (const ferry::PluginError&) {
          whole = fail_in.load() > 0;  // no allocation failed
        }
        fail_in = 0;
        bool same = index.find("add").signature == "i32(i32,i32)";
        const auto skipped = index.skipped();
        same = same && skipped.size() == expected.size();
        for (std::size_t i = 0; same && i < skipped.size(); ++i)
          same = skipped[i].path == expected[i].path && skipped[i].reason == expected[i].reason;
        code = !same ? answered_otherwise : whole ? ran_whole : cut_short_and_whole;
      } catch (...) {
        code = answered_otherwise;
      }
      ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) {
      ++in_the_library;
      continue;
    }
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) != answered_otherwise);
    if (WEXITSTATUS(status) == cut_short_and_whole) ++cut_short;
    completed = WEXITSTATUS(status) == ran_whole;
  }
  CHECK(completed);
  CHECK(cut_short > 0);
  MESSAGE(cut_short << " scans cut short by a failed allocation, " << in_the_library
                    << " ended by the standard library's own noexcept");
}

TEST_CASE("PluginIndex.skipped.a_listing_cut_short_says_only_what_it_listed") {
  // A directory whose listing ends part way for this process's want of descriptors or memory:
  // what the last scan found of the files it did not list is kept (their tasks are still found),
  // but skipped() said their old verdicts as if this scan had seen them, and nothing of the
  // listing cut short. It says the directory was listed in part, and each file it listed once.
  support::TempDir dir;
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir.path / "libmath.so");
  fs::permissions(dir.path / "libmath.so", fs::perms(0755));
  const std::vector<std::string> texts = {"liba.so", "libb.so", "libc.so", "libd.so", "libe.so", "libf.so"};
  for (const auto& t : texts) write_text(dir.path / t, "not a library\n");
  ferry::PluginIndex index({dir.path});
  CHECK(index.find("add").signature == "i32(i32,i32)");
  REQUIRE(index.skipped().size() == texts.size());

  // Nine entries with "." and "..": four given, so at least three of the files are not listed.
  std::vector<std::string> listed;
  names_listed = &listed;
  entries_before_failure = 4;
  std::string missed = "(no PluginError)";
  try {
    index.find("nosuch");
  } catch (const ferry::PluginError& e) {
    missed = e.what();
  }
  names_listed = nullptr;
  entries_before_failure = -1;
  CHECK(missed.find("cannot tell which plugin provides task 'nosuch'") != std::string::npos);
  CHECK(missed.find("Too many open files") != std::string::npos);
  const auto unlisted_text = std::count_if(texts.begin(), texts.end(), [&](const std::string& t) {
    return std::find(listed.begin(), listed.end(), t) == listed.end();
  });
  REQUIRE(unlisted_text > 0);

  const auto skipped = index.skipped();
  std::string all_said;
  for (const auto& s : skipped) all_said += s.path.string() + ": " + s.reason + "\n";
  CAPTURE(all_said);
  REQUIRE(!skipped.empty());
  CHECK(skipped[0].path == dir.path);
  CHECK(skipped[0].reason.find("cannot read directory: Too many open files (its listing was cut short") == 0);
  std::set<fs::path> said;
  for (std::size_t i = 1; i < skipped.size(); ++i) {
    const std::string name = skipped[i].path.filename().string();
    CAPTURE(name);
    CHECK(said.insert(skipped[i].path).second);                                // once
    CHECK(std::find(listed.begin(), listed.end(), name) != listed.end());  // and listed
  }
  // What it did not list is kept: the plugin's task is found whether the plugin was listed or not.
  CHECK(index.find("add").signature == "i32(i32,i32)");
  // Listed whole again: each file said once, with its verdict.
  try {
    index.find("nosuch");
  } catch (const ferry::PluginError&) {
  }
  CHECK(index.skipped().size() == texts.size());
}

TEST_CASE("PluginIndex.scan.a_way_changed_while_a_directory_is_judged_is_seen_before_its_plugins_are_offered") {
  // A scan walks a plugin directory's way once and each plugin's on from the directory. Its way
  // opened to others while the files are judged (here: as the last one, a link, is read) is
  // seen when the way is walked again after them: every plugin judged before is judged again,
  // walked whole. A plugin judged on from the directory before the change, or a link whose
  // target's way does not pass through the directory's, would have been offered.
  support::TempDir top;
  const fs::path way = top.path / "way";
  const fs::path dir = way / "plugins";
  const fs::path kept = top.path / "kept";
  fs::create_directories(dir);
  fs::create_directory(kept);
  for (const fs::path& d : {way, dir, kept}) fs::permissions(d, fs::perms(0755));
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir / "liba.so");
  fs::permissions(dir / "liba.so", fs::perms(0755));
  fs::copy_file(FERRY_TEST_SEED_PLUGIN, kept / "libs.so");
  fs::permissions(kept / "libs.so", fs::perms(0755));
  fs::create_symlink("../../kept/libs.so", dir / "libzz.so");  // judged last; its target is out of the way
  ferry::PluginIndex index({dir});
  const auto has = [](const std::vector<ferry::TaskInfo>& tasks, const std::string& name) {
    return std::any_of(tasks.begin(), tasks.end(), [&](const ferry::TaskInfo& t) { return t.name == name; });
  };
  const auto trusted = index.tasks();
  CHECK(has(trusted, "add"));
  CHECK(has(trusted, "func_async"));

  OpenOnReadlink change{"libzz.so", way.string()};
  open_on_readlink = &change;
  const auto tasks = index.tasks();
  open_on_readlink = nullptr;
  struct stat st {};
  REQUIRE(::stat(way.c_str(), &st) == 0);
  fs::permissions(way, fs::perms(0755));
  REQUIRE((st.st_mode & 0777) == 0777);  // the change was made during the scan
  CHECK(!has(tasks, "add"));
  CHECK(!has(tasks, "func_async"));
  const auto skipped = index.skipped();
  std::string all_said;
  for (const auto& s : skipped) all_said += s.path.string() + ": " + s.reason + "\n";
  CAPTURE(all_said);
  REQUIRE(skipped.size() == 2);
  for (const auto& s : skipped) CHECK(s.reason.find("refused: " + fs::canonical(way).string() + " (on the way") == 0);
  CHECK(has(index.tasks(), "add"));  // closed again
}
