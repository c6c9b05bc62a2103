// SPDX-License-Identifier: BSD-3-Clause
// Future::info() (which worker, when, CPU time, peak RSS, attempts) and Future::running().
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

std::string this_host() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec);
}

}  // namespace

TEST_CASE("Future.info.reports_worker_and_times") {
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto before = std::chrono::system_clock::now();
  auto f = ex.submit(square, 7);
  REQUIRE(f.get() == 49);
  auto after = std::chrono::system_clock::now();
  auto info = f.info();
  REQUIRE(info.has_value());
  auto pids = ex.worker_pids();
  CHECK(std::find(pids.begin(), pids.end(), info->worker_pid) != pids.end());
  CHECK(info->worker_host == this_host());
  // One machine, one clock: submitted (host) <= started <= finished (worker) <= after (host).
  CHECK(before <= info->submitted);
  CHECK(info->submitted <= info->started);
  CHECK(info->started <= info->finished);
  CHECK(info->finished <= after);
  CHECK(info->cpu_time >= 0ns);
  CHECK(info->cpu_time <= info->finished - info->started + 1ms);  // µs-resolution CPU clock
  CHECK(info->max_rss > 0);
  CHECK(info->attempts == 1);
  // The identity of the task reference it was sent as.
  CHECK(info->name == "square");
  CHECK(info->signature == "i32(i32)");
  CHECK(info->fingerprint == ferry::detail::Signature<int, int>::fingerprint);
  CHECK(same_file(info->library, FERRY_TEST_MATH_PLUGIN));
  // Every copy of the future sees the same.
  auto copy = f;
  CHECK(copy.info()->worker_pid == info->worker_pid);
}

TEST_CASE("Future.info.is_empty_until_ready") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(slow_identity, 1, 500);
  CHECK_FALSE(f.info().has_value());  // half a second before it can be ready
  f.wait();
  CHECK(f.info().has_value());
  CHECK_FALSE(ferry::Future<int>().info().has_value());
}

TEST_CASE("Future.info.cpu_time_is_the_task_s") {
  ferry::Executor ex(support::options(1));
  auto busy = ex.submit(busy_for, 150);
  REQUIRE(busy.get() == 150);
  auto info = busy.info();
  REQUIRE(info);
  CHECK(info->cpu_time >= 150ms);
  CHECK(info->cpu_time < 150ms + 2s);  // generous: a loaded VM, but nothing like the idle time
  CHECK(info->finished - info->started >= 150ms);
  // A sleeping task uses wall time, not CPU time.
  auto sleeping = ex.submit(slow_identity, 1, 200);
  REQUIRE(sleeping.get() == 1);
  CHECK(sleeping.info()->cpu_time < 100ms);
  CHECK(sleeping.info()->finished - sleeping.info()->started >= 200ms);
}

TEST_CASE("Future.info.max_rss_is_the_worker_s_high_water_mark") {
  ferry::Executor ex(support::options(1));
  auto small = ex.submit(square, 2);
  small.wait();
  auto grown = ex.submit(leak, 128);  // 128 MiB, touched
  REQUIRE(grown.get() == 128);
  REQUIRE(small.info());
  REQUIRE(grown.info());
  CHECK(grown.info()->worker_pid == small.info()->worker_pid);
  // The mark before the task may hold memory freed since (the sanitizers' start-up does), so the
  // 128 MiB show as at least half of them above it.
  CHECK(grown.info()->max_rss >= small.info()->max_rss + (64u << 20));
  // A high-water mark of the worker: a later small task still reports it.
  auto later = ex.submit(square, 3);
  later.wait();
  CHECK(later.info()->max_rss >= grown.info()->max_rss);
}

TEST_CASE("Future.info.a_failed_task_has_it_too") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(fail, 3);
  CHECK_THROWS_AS(f.get(), ferry::TaskError);
  auto info = f.info();
  REQUIRE(info);
  CHECK(info->worker_pid > 0);
  CHECK(info->name == "fail");
  CHECK(info->started <= info->finished);
  CHECK(info->started.time_since_epoch().count() > 0);
  CHECK(info->attempts == 1);
}

TEST_CASE("Future.info.a_crashed_task_has_the_host_s_view") {
  SUBCASE("no retry") {
    ferry::Executor ex(support::options(1));
    REQUIRE(ex.warm_up(10s));
    auto pids = ex.worker_pids();
    auto f = ex.submit(segfault, 1);
    CHECK_THROWS_AS(f.get(), ferry::TerminatedWorkerError);
    auto info = f.info();
    REQUIRE(info);
    CHECK(info->worker_pid == pids.at(0));
    CHECK(info->worker_host == this_host());
    CHECK(info->cpu_time == 0ns);  // the worker could not say
    CHECK(info->max_rss == 0);
    CHECK(info->submitted <= info->started + 1ms);  // steady clock carried over to the system's
    CHECK(info->started <= info->finished);
    CHECK(info->attempts == 1);
  }
  SUBCASE("retried once") {
    auto o = support::options(1);
    o.max_retries_on_worker_death = 1;
    ferry::Executor ex(o);
    auto f = ex.submit(segfault, 1);
    CHECK_THROWS_AS(f.get(), ferry::TerminatedWorkerError);
    REQUIRE(f.info());
    CHECK(f.info()->attempts == 2);
  }
}

TEST_CASE("Future.info.is_empty_for_futures_that_never_ran") {
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto running = ex.submit(slow_identity, 1, 300);
  auto queued = ex.submit(square, 2);
  auto more = ex.submit(square, 3);
  REQUIRE(more.cancel());
  CHECK(more.cancelled());
  CHECK_FALSE(more.info().has_value());
  auto next = running.then([](int v) { return v + 1; });
  CHECK(next.get() == 2);
  CHECK_FALSE(next.info().has_value());
  CHECK(queued.get() == 4);
  CHECK(queued.info().has_value());
  // Failed before reaching a worker: a task no plugin has.
  auto unknown = ex.submit<int>("no_such_task_anywhere", 1);
  CHECK_THROWS_AS(unknown.get(), ferry::PluginError);
  CHECK_FALSE(unknown.info().has_value());
  // A main-program function does reach a worker (which really tries to load the executable):
  // the worker's answer has its info.
  auto unresolvable = ex.submit(+[](int x) { return x; }, 1);
  CHECK_THROWS_AS(unresolvable.get(), ferry::UnresolvableTaskError);
  CHECK(unresolvable.info().has_value());
}

TEST_CASE("Future.info.covers_a_whole_json_chunk") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit_json("square", "{\"value0\": 2}\n{\"value0\": 3}\n", 2);
  CHECK(f.get() == "{\"value0\":4}\n{\"value0\":9}\n");
  REQUIRE(f.info());
  CHECK(f.info()->name == "square");
  CHECK(f.info()->attempts == 1);
}

TEST_CASE("Future.running.only_while_its_worker_runs_it") {
  // Several calls in flight per worker, so that one is pipelined behind the running one.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "2");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto first = ex.submit(spin_forever, 1);
  auto second = ex.submit(square, 5);  // pipelined behind it, on the same worker
  auto third = ex.submit(square, 6);   // in the host's queue
  CHECK(first.running());
  CHECK_FALSE(second.running());
  CHECK_FALSE(third.running());
  CHECK_FALSE(first.ready());
  REQUIRE(first.cancel({.kill_running = true}));
  CHECK_THROWS_AS(first.get(), ferry::CancelledError);
  CHECK_FALSE(first.running());  // ready: no longer running
  CHECK(second.get() == 25);
  CHECK(third.get() == 36);
  CHECK_FALSE(second.running());
  CHECK_FALSE(ferry::Future<int>().running());
}

TEST_CASE("Future.running.becomes_true_when_the_call_ahead_ends") {
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto first = ex.submit(slow_identity, 1, 300);
  auto second = ex.submit(spin_forever, 2);  // waits in the host's queue while first runs
  CHECK(first.running());
  CHECK_FALSE(second.running());
  CHECK(first.get() == 1);
  CHECK(support::wait_until([&] { return second.running(); }));
  REQUIRE(second.cancel({.kill_running = true}));
  CHECK_THROWS_AS(second.get(), ferry::CancelledError);
  CHECK_FALSE(second.running());
}

TEST_CASE("Future.running.false_after_a_retry_puts_it_back_in_the_queue") {
  // The worker that replaces the crashed one waits in its initializer while `hold` exists: the
  // call, back in the queue or sent to that worker behind its initializer, is looked at before it
  // runs again.
  support::TempDir dir;
  const auto hold = dir.path / "hold";
  auto o = support::options(1);
  o.max_retries_on_worker_death = 1;
  o.initializer = ferry::Call(wait_while_exists, hold.string());
  ferry::Executor ex(o);
  REQUIRE(ex.warm_up(10s));
  std::ofstream(hold).put('x');
  struct Release {
    std::filesystem::path file;
    ~Release() { std::filesystem::remove(file); }  // whatever fails: ~Executor must not wait 60 s
  } release{hold};
  auto f = ex.submit(segfault, 1);
  REQUIRE(support::wait_until([&] { return ex.stats().workers_crashed == 1; }));
  CHECK_FALSE(f.ready());
  CHECK_FALSE(f.running());
  std::filesystem::remove(hold);
  CHECK_THROWS_AS(f.get(), ferry::TerminatedWorkerError);  // its retry crashed too
  CHECK(ex.stats().workers_crashed == 2);
  CHECK_FALSE(f.running());
}
