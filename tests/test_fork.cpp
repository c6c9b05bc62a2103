// SPDX-License-Identifier: BSD-3-Clause
// A process that forks while it has executors: the child's copies are not its own (their threads
// are not there, their workers answer the parent). The child must be able to exit, must get a
// clear error instead of the parent's results, and may make executors of its own; the parent
// goes on as if nothing happened. Each child reports by its exit code (doctest's checks do not
// cross a fork).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <ferry/when.hpp>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

/// Runs `child` in a forked child that exits through std::exit (static destructors run: a
/// reusable executor's among them); its exit code, or -1 when it hung.
template <class F>
int in_child(F&& child) {
  return support::exit_code_of_child(std::forward<F>(child), 20s, true);
}

bool says_fork(const ferry::BrokenProcessPool& e) {
  return std::string(e.what()).find("is a fork") != std::string::npos;
}

}  // namespace

TEST_CASE("Fork.a_child_exits_without_waiting_for_the_parents_executors") {
  // ~Executor in the child waited for the parent's manager thread, which is not there: for ever.
  auto reusable = ferry::get_reusable_executor(support::options(1));
  REQUIRE(reusable->submit(square, 3).get() == 9);
  auto local = std::make_unique<ferry::Executor>(support::options(1));
  REQUIRE(local->submit(square, 4).get() == 16);
  CHECK(in_child([&] {
          local.reset();
          reusable.reset();
          return 0;  // and the process-wide one at exit
        }) == 0);
  // The parent's executors are untouched.
  CHECK(local->submit(square, 5).get() == 25);
  CHECK(reusable->submit(square, 6).get() == 36);
}

TEST_CASE("Fork.a_child_gets_an_error_not_the_parents_results") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.submit(square, 2).get() == 4);  // a worker is up
  auto pending = ex.submit(busy_for, 300);   // its result is the parent's
  const int code = in_child([&]() -> int {
    // Waiting for a future of the parent's: an error at once, not a read of the parent's channel.
    try {
      pending.get();
      return 1;
    } catch (const ferry::BrokenProcessPool& e) {
      if (!says_fork(e)) return 2;
    }
    try {
      ex.submit(square, 4);
      return 3;
    } catch (const ferry::BrokenProcessPool& e) {
      if (!says_fork(e)) return 4;
    }
    if (!ex.is_broken()) return 5;
    if (!ex.worker_pids().empty()) return 9;  // the parent's, not the child's
    if (ex.stats().submitted < 2) return 10;  // a snapshot of the parent's counters
    if (pending.cancel()) return 6;
    try {
      ex.resize(2);
      return 7;
    } catch (const ferry::BrokenProcessPool&) {
    }
    // An executor of its own works.
    ferry::Executor own(support::options(1));
    if (own.submit(square, 7).get() != 49) return 8;
    return 0;
  });
  CHECK_MESSAGE(code == 0, "step " << code << " failed in the child (-1: it hung)");
  // The parent's call came back to the parent, and its worker was left alone.
  CHECK(pending.get() == 300);
  CHECK(ex.submit(square, 9).get() == 81);
  CHECK(ex.stats().workers_crashed == 0);
}

TEST_CASE("Fork.a_childs_reusable_executor_is_its_own") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
  auto parents = ferry::get_reusable_executor(support::options(1));
  REQUIRE(parents->submit(square, 3).get() == 9);
  const int code = in_child([&]() -> int {
    auto mine = ferry::get_reusable_executor(support::options(1));
    if (mine == parents) return 1;
    if (mine->submit(square, 8).get() != 64) return 2;
    return 0;
  });
  CHECK_MESSAGE(code == 0, "step " << code << " failed in the child (-1: it hung)");
  CHECK(parents->submit(square, 4).get() == 16);
  CHECK(ferry::get_reusable_executor(support::options(1)) == parents);
}

TEST_CASE("Fork.waiting_on_many_of_the_parents_futures_ends_in_a_child") {
  // ferry::wait, as_completed, when_all, when_any and then() register on the futures and wait
  // to be told: in a child nothing ever told them (only get() failed at once).
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.submit(square, 2).get() == 4);
  std::vector<ferry::Future<int>> pending{ex.submit(busy_for, 1000), ex.submit(busy_for, 10)};
  const int code = in_child([&]() -> int {
    auto [done, not_done] = ferry::wait(pending);
    if (done.size() != 2 || !not_done.empty()) return 1;
    try {
      done[0].get();
      return 2;
    } catch (const ferry::BrokenProcessPool& e) {
      if (!says_fork(e)) return 3;
    }
    std::size_t yielded = 0;
    for (auto& f : ferry::as_completed(pending)) yielded += f.exception() ? 1 : 0;
    if (yielded != 2) return 4;
    if (ferry::when_all(pending).get().size() != 2) return 5;
    if (ferry::when_any(pending).get().index != 0) return 6;
    bool called = false;
    pending[1].then([&](const ferry::Future<int>&) { called = true; });
    if (!called) return 7;
    return 0;
  });
  CHECK_MESSAGE(code == 0, "step " << code << " failed in the child (-1: it hung)");
  // The parent's calls are the parent's.
  CHECK(pending[0].get() == 1000);
  CHECK(pending[1].get() == 10);
}

TEST_CASE("Fork.a_child_gets_a_reusable_executor_while_a_parents_thread_makes_one") {
  // A thread of the parent inside get_reusable_executor at the fork held its lock, for ever in
  // the child. The thread makes one executor after another (options that differ), so that most
  // forks find the lock held.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
#if defined(__SANITIZE_ADDRESS__)
  // Not under AddressSanitizer: GCC 12's allocator has no fork handler, and a lock of it the
  // parent's thread held at the fork leaves the child's first allocation in another thread
  // waiting for good (seen with gdb: the child's manager thread in SizeClassAllocator64). glibc's
  // malloc takes its locks around fork().
  MESSAGE("skipped under AddressSanitizer (its allocator's locks are not fork-safe)");
  return;
#endif
  std::atomic<bool> stop{false};
  std::atomic<int> made{0};
  std::thread churn([&] {
    for (int i = 0; !stop.load(); ++i) {
      auto o = support::options(1);
      o.idle_timeout = std::chrono::seconds(100 + i % 2);
      ferry::get_reusable_executor(o);
      made.fetch_add(1);
    }
  });
  // The churn is under way before the first fork.
  REQUIRE(support::wait_until([&] { return made.load() >= 2; }));
  int code = 0;
  for (int round = 0; round < 20 && code == 0; ++round) {
    code = support::exit_code_of_child(
        [&]() -> int {
          auto mine = ferry::get_reusable_executor(support::options(1));
          return mine->submit(square, 8).get() == 64 ? 0 : 1;
        },
        10s);
  }
  stop = true;
  churn.join();
  CHECK_MESSAGE(code == 0, "the child failed (-1: it hung)");
  // Executors were made all through the forks (one each time is the least for the lock to be
  // held at some fork; that it was is likely, not certain).
  CHECK(made.load() >= 20);
}

TEST_CASE("Fork.a_child_makes_a_traced_executor_while_a_parents_thread_claims_a_trace_path") {
  // A thread of the parent claiming or giving back a trace's path at the fork held the lock of
  // the process's trace paths, for ever in the child: its first executor with a trace waited for
  // good. The thread's path is long (its name is made absolute and normal twice under the lock)
  // and in a directory that does not exist (refused after the claim, outside the lock), so most
  // forks find the lock held.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
#if defined(__SANITIZE_ADDRESS__)
  MESSAGE("skipped under AddressSanitizer (its allocator's locks are not fork-safe)");
  return;
#endif
  support::TempDir dir;
  std::string long_way;
  for (int i = 0; i < 4000; ++i) long_way += "d/./../";
  const std::filesystem::path refused = dir.path / "missing" / long_way / "t.json";
  std::atomic<bool> stop{false};
  std::atomic<int> tried{0};
  std::thread churn([&] {
    auto o = support::options(1);
    o.trace = refused;
    while (!stop.load()) {
      try {
        ferry::Executor ex(o);
      } catch (const std::invalid_argument&) {
      }
      tried.fetch_add(1);
    }
  });
  REQUIRE(support::wait_until([&] { return tried.load() >= 2; }));
  int code = 0;
  for (int round = 0; round < 10 && code == 0; ++round) {
    const std::filesystem::path mine = dir.path / ("child-" + std::to_string(round) + ".json");
    code = support::exit_code_of_child(
        [&]() -> int {
          auto o = support::options(1);
          o.trace = mine;
          ferry::Executor ex(o);
          return ex.submit(square, 8).get() == 64 ? 0 : 1;
        },
        10s);
  }
  stop = true;
  churn.join();
  CHECK_MESSAGE(code == 0, "the child failed (-1: it hung)");
  CHECK(tried.load() >= 10);
}
