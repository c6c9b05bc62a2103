// SPDX-License-Identifier: BSD-3-Clause
// Executor::stats() (issue 15, item 1): calls by where they are and how they ended, workers by how
// they ended, bytes both ways (the socket and shared memory), uptime.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

/// Whatever encodes it throws: a submission with it fails in the host, before the queue.
struct Unencodable {
  template <class Archive>
  void serialize(Archive&) {
    throw std::runtime_error("cannot encode this");
  }
};

std::size_t count_of(const std::map<std::string, std::size_t>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

/// Every call is in one of four places once nothing is on its way.
void check_balanced(const ferry::ExecutorStats& s) {
  CHECK(s.submitted == s.queued + s.running + s.completed + s.failed);
  std::size_t by_type = 0;
  for (const auto& [type, n] : s.failed_by_type) by_type += n;
  CHECK(by_type == s.failed);
  // workers_alive is started minus the ends: no worker ends twice, none before it started.
  CHECK(s.workers_crashed + s.workers_recycled + s.workers_stopped <= s.workers_started);
  CHECK(s.workers_alive == s.workers_started - s.workers_crashed - s.workers_recycled - s.workers_stopped);
  std::size_t by_reason = 0;
  for (const auto& [reason, n] : s.recycled_by_reason) by_reason += n;
  CHECK(by_reason == s.workers_recycled);
}

}  // namespace

TEST_CASE("Stats.a_new_executor_counts_nothing") {
  ferry::Executor ex(support::options(2));
  auto s = ex.stats();
  CHECK(s.submitted == 0);
  CHECK(s.completed == 0);
  CHECK(s.failed == 0);
  CHECK(s.workers_started == 0);  // workers start with the first submit
  CHECK(s.bytes_sent == 0);
  CHECK(s.uptime.count() >= 0);
}

TEST_CASE("Stats.counts_completed_and_failed_by_type") {
  ferry::Executor ex(support::options(2));
  for (int i = 0; i < 5; ++i) CHECK(ex.submit(square, i).get() == i * i);
  CHECK_THROWS_AS(ex.submit(fail, 3).get(), ferry::TaskError);
  CHECK_THROWS_AS(ex.submit(fail, 4).get(), ferry::TaskError);
  CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
  CHECK_THROWS_AS(ex.submit<int>("no_such_task", 1).get(), ferry::PluginError);
  CHECK_THROWS_AS(ex.submit<int>("square", Unencodable{}).get(), ferry::SerializationError);
  // Counted before the future is ready: no wait needed after get().
  auto s = ex.stats();
  CHECK(s.submitted == 10);
  CHECK(s.completed == 5);
  CHECK(s.failed == 5);
  CHECK(count_of(s.failed_by_type, "SerializationError") == 1);
  CHECK(count_of(s.failed_by_type, "TaskError") == 2);
  CHECK(count_of(s.failed_by_type, "TerminatedWorkerError") == 1);
  CHECK(count_of(s.failed_by_type, "PluginError") == 1);
  CHECK(s.queued == 0);
  CHECK(s.running == 0);
  check_balanced(s);
}

TEST_CASE("Stats.a_map_chunk_is_one_call") {
  ferry::Executor ex(support::options(2));
  std::vector<int> in(1000);
  std::iota(in.begin(), in.end(), 0);
  CHECK(ex.map(square, in, {.chunksize = 100}).size() == 1000);
  CHECK(ex.stats().submitted == 10);
  CHECK(ex.map(square, in, {.chunksize = 1000}).size() == 1000);
  auto s = ex.stats();
  CHECK(s.submitted == 11);
  CHECK(s.completed == 11);
}

TEST_CASE("Stats.queued_and_running_while_busy") {
  ferry::Executor ex(support::options(1));
  auto first = ex.submit(slow_identity, 1, 400);
  std::vector<ferry::Future<int>> rest;
  for (int i = 0; i < 3; ++i) rest.push_back(ex.submit(square, i));
  REQUIRE(support::wait_until([&] { return first.running(); }));
  auto s = ex.stats();
  CHECK(s.running == 1);
  CHECK(s.queued == 3);  // behind it: in the host's queue or the worker's pipeline
  CHECK(s.submitted == 4);
  CHECK(first.get() == 1);
  for (auto& f : rest) f.get();
  s = ex.stats();
  CHECK(s.running == 0);
  CHECK(s.queued == 0);
  CHECK(s.completed == 4);
}

TEST_CASE("Stats.cancelled_calls_fail_as_CancelledError") {
  ferry::Executor ex(support::options(1));
  auto busy = ex.submit(slow_identity, 1, 300);
  auto waiting = ex.submit(square, 2);
  REQUIRE(support::wait_until([&] { return busy.running(); }));
  REQUIRE(waiting.cancel());
  busy.get();
  auto s = ex.stats();
  CHECK(count_of(s.failed_by_type, "CancelledError") == 1);
  CHECK(s.completed == 1);
  check_balanced(s);
}

TEST_CASE("Stats.workers_started_crashed_and_stopped") {
  ferry::Executor ex(support::options(2));
  CHECK(ex.warm_up());
  CHECK(ex.stats().workers_started == 2);
  CHECK(ex.stats().workers_alive == 2);
  CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
  CHECK_THROWS_AS(ex.submit(exit_with, 3).get(), ferry::TerminatedWorkerError);
  // Each crashed worker is replaced.
  REQUIRE(support::wait_until([&] { return ex.stats().workers_started == 4 && ex.stats().workers_alive == 2; }));
  CHECK(ex.stats().workers_crashed == 2);
  CHECK(ex.stats().workers_killed == 0);
  ex.shutdown();
  auto s = ex.stats();
  CHECK(s.workers_alive == 0);
  CHECK(s.workers_stopped == 2);  // told to exit at shutdown
  CHECK(s.workers_recycled == 0);
  check_balanced(s);
}

TEST_CASE("Stats.workers_killed_as_asked_are_told_apart_from_crashes") {
  // A deadline, a kill-cancel and shutdown(kill_workers) end workers ferry was asked to end:
  // counted in workers_crashed (nothing said goodbye) and in workers_killed, which no crash is.
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_AS(ex.submit_with({.deadline = 50ms}, spin_forever, 1).get(), ferry::TimeoutError);
  auto spinning = ex.submit(spin_forever, 2);
  REQUIRE(support::wait_until([&] { return spinning.running(); }));
  REQUIRE(spinning.cancel({.kill_running = true}));
  CHECK_THROWS_AS(spinning.get(), ferry::CancelledError);
  CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
  auto last = ex.submit(spin_forever, 3);
  REQUIRE(support::wait_until([&] { return last.running(); }));
  ex.shutdown({.wait = true, .kill_workers = true});
  auto s = ex.stats();
  CHECK(s.workers_crashed == 4);
  CHECK(s.workers_killed == 3);
  check_balanced(s);
}

TEST_CASE("Stats.a_kill_cancelled_call_is_not_running_while_its_worker_dies") {
  // A kill-cancel ends the future at once, but the call stays in its worker's lane until the
  // death is settled (on the manager thread): stats() counted it as running meanwhile. Here the
  // manager thread is held in a callback, so the death cannot be settled before stats() reads.
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  support::HeldFile held;
  auto hold = ex.submit(value_after_hold, 1, held.path.string());
  REQUIRE(support::wait_until([&] { return hold.running(); }));
  std::atomic<bool> in_callback{false}, release{false};
  auto quick = ex.submit(square, 2).then([&](int v) {
    in_callback = true;
    support::wait_until([&] { return release.load(); }, 30s);
    return v;
  });
  REQUIRE(support::wait_until([&] { return in_callback.load(); }));
  REQUIRE(hold.cancel({.kill_running = true}));
  const auto s = ex.stats();
  CHECK(s.running == 0);
  CHECK(s.queued == 0);
  check_balanced(s);  // counted as failed (CancelledError) already: not running as well
  release = true;
  CHECK(quick.get() == 4);
  CHECK_THROWS_AS(hold.get(), ferry::CancelledError);
  check_balanced(ex.stats());
}

TEST_CASE("Stats.recycled_workers_by_reason") {
  SUBCASE("tasks") {
    auto o = support::options(1);
    o.max_tasks_per_child = 1;
    ferry::Executor ex(o);
    for (int i = 0; i < 3; ++i) CHECK(ex.submit(square, i).get() == i * i);
    CHECK(support::wait_until([&] { return count_of(ex.stats().recycled_by_reason, "tasks") >= 3; }));
    CHECK(ex.stats().workers_crashed == 0);
  }
  SUBCASE("idle") {
    auto o = support::options(2);
    o.idle_timeout = 50ms;
    ferry::Executor ex(o);
    CHECK(ex.submit(square, 3).get() == 9);
    CHECK(support::wait_until([&] { return count_of(ex.stats().recycled_by_reason, "idle") == 2; }));
    CHECK(ex.stats().workers_alive == 0);
  }
  SUBCASE("memory") {
    auto o = support::options(1);
    o.max_memory_growth = 16 << 20;
    ferry::Executor ex(o);
    CHECK(ex.submit(leak, 1).get() == 1);  // the baseline is taken after the first task
    CHECK(ex.submit(leak, 64).get() == 64);
    CHECK(support::wait_until([&] { return count_of(ex.stats().recycled_by_reason, "memory") >= 1; }));
  }
  SUBCASE("limit") {
    // A task past its CPU time: the host kills its worker (ResourceLimitError) and replaces it.
    auto o = support::options(1);
    o.limits.cpu_time = std::chrono::seconds(1);
    ferry::Executor ex(o);
    CHECK_THROWS_AS(ex.submit(busy_for, 30000).get(), ferry::ResourceLimitError);
    CHECK(support::wait_until([&] { return count_of(ex.stats().recycled_by_reason, "limit") == 1; }));
    CHECK(ex.stats().workers_crashed == 0);
    CHECK(count_of(ex.stats().failed_by_type, "ResourceLimitError") == 1);
  }
  SUBCASE("resize is a stop") {
    ferry::Executor ex(support::options(2));
    CHECK(ex.warm_up());
    ex.resize(1);
    CHECK(support::wait_until([&] { return ex.stats().workers_stopped == 1 && ex.stats().workers_alive == 1; }));
    CHECK(ex.stats().workers_recycled == 0);
  }
}

TEST_CASE("Stats.bytes_over_shared_memory_are_counted") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(square, 1).get() == 1);
  auto before = ex.stats();
  CHECK(before.bytes_sent > 0);
  CHECK(before.bytes_received > 0);
  // 4 MiB each way: above FERRY_SHM_THRESHOLD (1 MiB), so both travel in a memfd.
  const std::size_t big = std::size_t{4} << 20;
  CHECK(ex.submit(echo_bytes, std::vector<char>(big, 'x')).get().size() == big);
  auto after = ex.stats();
  CHECK(after.bytes_sent - before.bytes_sent >= big);
  CHECK(after.bytes_sent - before.bytes_sent < big + 4096);
  CHECK(after.bytes_received - before.bytes_received >= big);
  CHECK(after.bytes_received - before.bytes_received < big + 4096);
}

TEST_CASE("Stats.read_in_a_loop_while_work_runs_counts_no_call_twice") {
  ferry::Executor ex(support::options(2));
  std::vector<int> in(20000);
  std::iota(in.begin(), in.end(), 0);
  std::atomic<bool> done{false};
  std::size_t reads = 0, inconsistent = 0;
  std::thread reader([&] {
    while (!done) {
      auto s = ex.stats();
      if (s.queued + s.running + s.completed + s.failed > s.submitted) ++inconsistent;
      ++reads;
    }
  });
  CHECK(ex.map(square, in, {.chunksize = 1}).size() == in.size());
  done = true;
  reader.join();
  CHECK(reads > 0);
  CHECK(inconsistent == 0);  // a call is never counted twice
  auto s = ex.stats();
  CHECK(s.submitted == in.size());
  CHECK(s.completed == in.size());
}
