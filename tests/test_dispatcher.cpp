// SPDX-License-Identifier: BSD-3-Clause
// The host pool's dispatch policy, driven directly: no processes, no sockets, no threads.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "host/dispatcher.hpp"

namespace {

using namespace ferry::detail;
using namespace std::chrono_literals;

std::shared_ptr<RefEntry> ref(std::uint32_t id, std::string library = "libm.so", std::string version = {},
                              std::uint64_t generation = 0) {
  auto r = std::make_shared<RefEntry>();
  r->define.ref = id;
  r->define.library = std::move(library);
  r->display = "task" + std::to_string(id);
  r->version = std::move(version);
  r->generation = generation;
  return r;
}

struct Fixture {
  Dispatcher d;
  std::uint64_t next = 1;
  std::shared_ptr<RefEntry> square = ref(0);
  Clock::time_point t0 = Clock::now();

  explicit Fixture(std::size_t depth = 0) : d(depth) {}

  std::shared_ptr<Call> submit(std::shared_ptr<const RefEntry> r = nullptr, Clock::duration deadline = {}) {
    auto c = std::make_shared<Call>();
    c->id = next++;
    c->ref = r ? std::move(r) : square;
    c->deadline = deadline;
    d.submit(c);
    return c;
  }
  std::vector<Dispatcher::Send> assign(std::vector<Lane*> open, Clock::time_point at = {}) {
    std::vector<Dispatcher::Send> sends;
    std::vector<Lane*> stale;
    d.assign(open, sends, stale, at == Clock::time_point{} ? t0 : at);
    REQUIRE(stale.empty());
    return sends;
  }
  /// `n` calls, one at a time on `lane`, each answered `each` after it was sent; the time after.
  Clock::time_point run_one_by_one(Lane& lane, Clock::time_point now, int n, Clock::duration each) {
    for (int i = 0; i < n; ++i) {
      auto c = submit();
      assign({&lane}, now);
      now += each;
      REQUIRE(d.answered(lane, c->id, now) == c);
    }
    return now;
  }
};

std::vector<std::uint64_t> ids(const std::deque<std::shared_ptr<Call>>& calls) {
  std::vector<std::uint64_t> out;
  for (const auto& c : calls) out.push_back(c->id);
  return out;
}

}  // namespace

TEST_CASE("Dispatcher.assign.spreads_calls_over_the_least_loaded_lanes_in_queue_order") {
  Fixture f(2);  // two calls per worker at most
  Lane a{.serial = 1}, b{.serial = 2};
  for (int i = 0; i < 5; ++i) f.submit();
  auto sends = f.assign({&a, &b});
  REQUIRE(sends.size() == 4);  // 2 lanes × depth 2; the fifth waits
  CHECK(ids(a.in_flight) == std::vector<std::uint64_t>{1, 3});
  CHECK(ids(b.in_flight) == std::vector<std::uint64_t>{2, 4});
  CHECK(f.d.queued() == 1);
  // The first call of each lane runs (its deadline clock starts); the rest wait behind it.
  CHECK(sends[0].running);
  CHECK(sends[1].running);
  CHECK_FALSE(sends[2].running);
  CHECK(a.in_flight.front()->lane == &a);
  CHECK(a.in_flight.front()->started == f.t0);
}

TEST_CASE("Dispatcher.assign.a_lane_gets_no_more_calls_than_its_worker_will_run") {
  // max_tasks_per_child: the worker leaves after that many. A call queued behind them waited in a
  // process that would not run it, beside a task that could read it (and answer for it).
  Fixture f(8);
  Lane a{.serial = 1, .calls_left = 1}, b{.serial = 2, .calls_left = 2};
  for (int i = 0; i < 5; ++i) f.submit();
  auto sends = f.assign({&a, &b});
  REQUIRE(sends.size() == 3);
  CHECK(ids(a.in_flight) == std::vector<std::uint64_t>{1});
  CHECK(ids(b.in_flight) == std::vector<std::uint64_t>{2, 3});
  CHECK(a.calls_left == 0);
  CHECK(b.calls_left == 0);
  CHECK(f.d.queued() == 2);  // for the workers that replace them
  REQUIRE(f.d.answered(a, 1, f.t0) != nullptr);
  CHECK(f.assign({&a, &b}).empty());
  Lane c{.serial = 3};  // no bound
  CHECK(f.assign({&c}).size() == 2);
  CHECK(c.calls_left == UINT64_MAX);
}

TEST_CASE("Dispatcher.assign.without_pipelining_a_lane_gets_one_call") {
  // The pool has a worker on its way: a call waits for it rather than behind a running call.
  Fixture f(8);
  Lane a{.serial = 1}, b{.serial = 2};
  for (int i = 0; i < 4; ++i) f.submit();
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  f.d.assign(std::vector<Lane*>{&a, &b}, sends, stale, f.t0, false);
  CHECK(sends.size() == 2);
  CHECK(ids(a.in_flight) == std::vector<std::uint64_t>{1});
  CHECK(ids(b.in_flight) == std::vector<std::uint64_t>{2});
  CHECK(f.d.queued() == 2);
  f.d.assign(std::vector<Lane*>{&a, &b}, sends, stale, f.t0, false);
  CHECK(sends.empty());  // both busy
  f.d.assign(std::vector<Lane*>{&a, &b}, sends, stale, f.t0);
  CHECK(sends.size() == 2);  // the pool is whole again: behind the running calls
  CHECK(f.d.queued() == 0);
}

TEST_CASE("Dispatcher.assign.defines_a_task_reference_once_per_lane") {
  Fixture f(8);
  Lane a{.serial = 1};
  auto other = ref(3);
  f.submit();
  f.submit();
  f.submit(other);
  auto sends = f.assign({&a});
  REQUIRE(sends.size() == 3);
  CHECK(sends[0].define);
  CHECK_FALSE(sends[1].define);
  CHECK(sends[2].define);  // another reference: defined before its first call
  REQUIRE(a.announced.size() == 4);
  CHECK(a.announced[0]);
  CHECK(a.announced[3]);
}

TEST_CASE("Dispatcher.depth.follows_the_service_time") {
  Fixture f;
  Lane a{.serial = 1};
  CHECK(f.d.depth() == 1);  // unknown at first: assume long calls, one at a time
  // Calls of 50 µs: the estimate falls, and the pipeline deepens so the worker never waits.
  auto now = f.run_one_by_one(a, f.t0, 40, 50us);
  CHECK(f.d.service_us() < 200);
  CHECK(f.d.depth() == 8);
  // Long calls again: back to one at a time.
  f.run_one_by_one(a, now, 40, 20ms);
  CHECK(f.d.depth() == 1);
  Fixture forced(3);
  CHECK(forced.d.depth() == 3);
}

TEST_CASE("Dispatcher.depth.short_calls_take_the_backends_depth") {
  // A backend whose results take longer to come back (Launcher::short_call_depth: ferry::mpi has
  // 16) keeps more short calls in flight.
  Fixture f;
  f.d.set_short_depth(32);
  Lane a{.serial = 1};
  auto now = f.run_one_by_one(a, f.t0, 40, 50us);
  CHECK(f.d.depth() == 32);
  for (int i = 0; i < 40; ++i) f.submit();
  f.assign({&a}, now);
  CHECK(a.in_flight.size() == 32);  // the other 8 wait in the queue
  CHECK(f.d.queued() == 8);
  f.d.set_short_depth(1000);
  CHECK(f.d.depth() == 64);  // clamped
  f.d.set_short_depth(0);
  CHECK(f.d.depth() == 1);
  Fixture forced(3);  // FERRY_PIPELINE_DEPTH wins
  forced.d.set_short_depth(32);
  CHECK(forced.d.depth() == 3);
}

TEST_CASE("Dispatcher.answered.starts_the_next_call_and_rejects_unknown_and_out_of_order_ids") {
  Fixture f(2);
  Lane a{.serial = 1};
  auto c1 = f.submit(nullptr, 1s);
  auto c2 = f.submit(nullptr, 5s);
  f.assign({&a});
  CHECK(a.deadline() == f.t0 + 1s);
  auto later = f.t0 + 300ms;
  CHECK(f.d.answered(a, 999, later) == nullptr);  // a result for a call not sent to it
  // Nor one for the call behind the running one (answers come in send order): it used to be
  // taken, and the running call's deadline started again.
  CHECK(f.d.answered(a, c2->id, later) == nullptr);
  CHECK(a.running() == c1.get());
  CHECK(a.deadline() == f.t0 + 1s);
  CHECK(f.d.answered(a, c1->id, later) == c1);
  CHECK(c1->lane == nullptr);
  // The next call runs from the moment the previous one ended: its deadline counts from then.
  CHECK(c2->started == later);
  CHECK(a.deadline() == later + 5s);
  CHECK(f.d.answered(a, c2->id, later) == c2);
  CHECK(a.deadline() == Clock::time_point::max());
}

TEST_CASE("Dispatcher.death.running_call_is_taken_the_rest_requeued_first_in_order") {
  Fixture f(3);
  Lane a{.serial = 1}, b{.serial = 2};
  for (int i = 0; i < 6; ++i) f.submit();
  f.assign({&a});  // 1, 2, 3 on a; 4, 5, 6 queued
  REQUIRE(ids(a.in_flight) == std::vector<std::uint64_t>{1, 2, 3});
  f.d.requeue(a, 1);
  auto running = f.d.take_running(a);
  REQUIRE(running);
  CHECK(running->id == 1);
  CHECK(a.idle());
  // Calls that never started go back before everything queued, in their order.
  f.assign({&b});
  CHECK(ids(b.in_flight) == std::vector<std::uint64_t>{2, 3, 4});
  CHECK(f.d.queued() == 2);
  // Nothing lost, nothing twice: 1 was taken, 2-4 on b, 5-6 queued.
  CHECK(f.d.unfinished() == 6);
  f.d.forget(*running);
  CHECK(f.d.unfinished() == 5);
  CHECK(f.d.find(1) == nullptr);
  CHECK(f.d.find(5) != nullptr);
}

TEST_CASE("Dispatcher.bye.every_call_of_the_lane_runs_elsewhere") {
  Fixture f(4);
  Lane a{.serial = 1}, b{.serial = 2};
  for (int i = 0; i < 3; ++i) f.submit();
  f.assign({&a});
  f.d.requeue(a);  // the worker said bye: it never read them
  CHECK(a.idle());
  for (std::uint64_t id = 1; id <= 3; ++id) CHECK(f.d.find(id)->lane == nullptr);
  f.assign({&b});
  CHECK(ids(b.in_flight) == std::vector<std::uint64_t>{1, 2, 3});
}

TEST_CASE("Dispatcher.assign.a_lane_with_an_older_library_version_is_stale") {
  Fixture f(4);
  Lane a{.serial = 1}, b{.serial = 2};
  auto v1 = ref(0, "libp.so", "inode-1", 1);
  auto v2 = ref(1, "libp.so", "inode-2", 2);
  f.submit(v1);
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  f.d.assign(std::vector<Lane*>{&a}, sends, stale, f.t0);
  REQUIRE(stale.empty());
  CHECK(a.libraries.at("libp.so") == 1);
  // The plugin was rebuilt: a worker that loaded version 1 must not run calls of version 2.
  f.submit(v2);
  f.d.assign(std::vector<Lane*>{&a, &b}, sends, stale, f.t0);
  REQUIRE(stale.size() == 1);
  CHECK(stale[0] == &a);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].lane == &b);
  // A newer version runs older calls too (the old file is gone).
  f.submit(v1);
  stale.clear();
  f.d.assign(std::vector<Lane*>{&b}, sends, stale, f.t0);
  CHECK(stale.empty());
  CHECK(sends.size() == 1);
}

TEST_CASE("Dispatcher.cancel_and_failure_take_calls_out_of_the_queue") {
  Fixture f(1);
  Lane a{.serial = 1};
  auto c1 = f.submit();
  auto c2 = f.submit();
  auto c3 = f.submit();
  f.assign({&a});
  CHECK_FALSE(f.d.unqueue(c1));  // in flight: not in the queue
  CHECK(f.d.unqueue(c2));
  CHECK_FALSE(f.d.unqueue(c2));
  auto rest = f.d.take_queue();
  REQUIRE(rest.size() == 1);
  CHECK(rest[0] == c3);
  CHECK(f.d.queue_empty());
  auto all = f.d.take_all(a);
  REQUIRE(all.size() == 1);
  CHECK(all[0] == c1);
  CHECK(c1->lane == nullptr);
}

TEST_CASE("Dispatcher.assign.no_open_lane_leaves_the_queue_alone") {
  Fixture f;
  f.submit();
  CHECK(f.assign({}).empty());
  CHECK(f.d.queued() == 1);
}

TEST_CASE("Dispatcher.running.marks_the_front_of_each_lane_only") {
  Fixture f(2);  // two calls in flight per lane
  Lane lane;
  std::vector<std::shared_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(f.submit());
    calls.back()->state = make_state<int>();
  }
  auto running = [&](std::size_t i) { return calls[i]->state->running(); };
  f.assign({&lane});
  CHECK(running(0));        // the front: the worker runs it
  CHECK_FALSE(running(1));  // pipelined behind it
  CHECK_FALSE(running(2));  // still queued
  f.d.answered(lane, calls[0]->id, f.t0 + 1ms);
  CHECK(running(1));        // the next one runs from the answer on
  f.assign({&lane});
  CHECK_FALSE(running(2));
  // Its worker died: the running call is retried, so it goes back to the queue, unmarked.
  f.d.requeue(lane);
  CHECK_FALSE(running(1));
  CHECK_FALSE(running(2));
}

TEST_CASE("Dispatcher.busy_lanes_counts_the_lanes_running_a_call") {
  // ExecutorStats::running is this count; queued is unfinished() minus it.
  Fixture f(2);
  Lane a{.serial = 1}, b{.serial = 2}, c{.serial = 3};
  for (int i = 0; i < 5; ++i) f.submit();
  CHECK(f.d.busy_lanes() == 0);
  f.assign({&a, &b});
  CHECK(f.d.busy_lanes() == 2);
  CHECK(f.d.unfinished() - f.d.busy_lanes() == 3);  // two behind their lane's front, one queued
  auto first = f.d.answered(a, 1, f.t0);
  REQUIRE(first);
  f.d.forget(*first);
  CHECK(f.d.busy_lanes() == 2);  // a runs its second call now
  auto second = f.d.answered(a, 3, f.t0);
  REQUIRE(second);
  f.d.forget(*second);
  CHECK(f.d.busy_lanes() == 1);
  // b's worker died: its running call is taken, the one behind goes back to the queue.
  f.d.requeue(b, 1);
  CHECK(f.d.busy_lanes() == 1);
  auto died = f.d.take_running(b);
  REQUIRE(died);
  f.d.forget(*died);
  CHECK(f.d.busy_lanes() == 0);
  f.assign({&c});
  CHECK(f.d.busy_lanes() == 1);
  f.d.requeue(c);  // a bye: everything back
  CHECK(f.d.busy_lanes() == 0);
  f.assign({&c});
  for (auto& call : f.d.take_all(c)) f.d.forget(*call);
  CHECK(f.d.busy_lanes() == 0);
  CHECK(f.d.unfinished() == f.d.queued());
}

TEST_CASE("Dispatcher.assign.retires_the_lowered_lane_the_calls_behind_have_no_use_for") {
  // Sandboxed, both workers lowered by calls with their own limits, both idle: the front call,
  // at the executor's limits, fits neither, so one is retired. The first in order was, though the
  // call right behind fits only that one: it then waited for a worker of its own as well.
  constexpr std::uint64_t mib = 1 << 20;
  Fixture f;
  f.d.harden_limits({.memory = 1024 * mib});
  Lane a{.serial = 1}, b{.serial = 2};
  a.lowered = protocol::TaskLimits{.memory = 100 * mib};
  b.lowered = protocol::TaskLimits{.memory = 50 * mib};
  a.used = b.used = true;
  f.submit()->limits = {.memory = 1024 * mib};
  f.submit()->limits = {.memory = 80 * mib};  // fits a only
  std::vector<Dispatcher::Send> sends;
  std::vector<Lane*> stale;
  std::vector<Lane*> open{&a, &b};
  f.d.assign(open, sends, stale, f.t0);
  CHECK(sends.empty());  // the front waits for the fresh worker; nothing passes it
  REQUIRE(stale.size() == 1);
  CHECK(stale[0] == &b);
  CHECK(b.limits_too_low);
  CHECK_FALSE(a.limits_too_low);
  // Lanes none of the calls behind fits either way: the first in order, as before.
  Fixture g;
  g.d.harden_limits({.memory = 1024 * mib});
  Lane c{.serial = 3}, d{.serial = 4};
  c.lowered = d.lowered = protocol::TaskLimits{.memory = 50 * mib};
  c.used = d.used = true;
  g.submit()->limits = {.memory = 1024 * mib};
  g.submit()->limits = {.memory = 80 * mib};
  stale.clear();
  open = {&c, &d};
  g.d.assign(open, sends, stale, g.t0);
  REQUIRE(stale.size() == 1);
  CHECK(stale[0] == &c);
}
