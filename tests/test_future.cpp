// SPDX-License-Identifier: BSD-3-Clause
// Future<T>: get, wait, wait_for, ready, cancel, then; ferry::wait and ferry::as_completed.
#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

TEST_CASE("Future.get_and_ready") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(square, 4);
  CHECK(f.valid());
  CHECK(f.get() == 16);
  CHECK(f.ready());
  CHECK(f.get() == 16);  // get() may be called again
  auto copy = f;
  CHECK(copy.get() == 16);
  CHECK(copy.id() == f.id());
}

TEST_CASE("Future.default_constructed_has_no_state") {
  ferry::Future<int> f;
  CHECK_FALSE(f.valid());
  CHECK_FALSE(f.ready());
  CHECK_THROWS_AS(f.get(), std::future_error);
}

TEST_CASE("Future.wait_for_times_out_then_succeeds") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(slow_identity, 5, 300);
  auto status = f.wait_for(10ms);
  CHECK_FALSE(static_cast<bool>(status));
  CHECK(status == std::future_status::timeout);
  CHECK_FALSE(f.ready());
  CHECK(f.wait_for(10s) == std::future_status::ready);
  CHECK(f.ready());
  f.wait();
  CHECK(f.get() == 5);
}

TEST_CASE("Future.exception_is_null_on_success") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(square, 1).exception() == nullptr);
  CHECK(ex.submit(fail, 1).exception() != nullptr);
}

TEST_CASE("Future.then") {
  ferry::Executor ex(support::options(2));
  SUBCASE("with the value") {
    auto g = ex.submit(square, 3).then([](int v) { return v + 1; });
    CHECK(g.get() == 10);
  }
  SUBCASE("with the future") {
    auto g = ex.submit(fail, 3).then([](const ferry::Future<int>& f) {
      try {
        f.get();
        return std::string("no error");
      } catch (const ferry::TaskError& e) {
        return e.remote_type();
      }
    });
    CHECK(g.get() == "std::invalid_argument");
  }
  SUBCASE("an error skips a value continuation") {
    std::atomic<bool> ran{false};
    auto g = ex.submit(fail, 3).then([&](int v) {
      ran = true;
      return v;
    });
    CHECK_THROWS_AS(g.get(), ferry::TaskError);
    CHECK_FALSE(ran);
  }
  SUBCASE("a throwing continuation fails the next future") {
    auto g = ex.submit(square, 3).then([](int) -> int { throw std::out_of_range("nope"); });
    CHECK_THROWS_WITH_AS(g.get(), "nope", std::out_of_range);
  }
  SUBCASE("void tasks and void continuations chain") {
    std::atomic<int> calls{0};
    auto g = ex.submit(noop).then([&] { ++calls; }).then([&] {
      ++calls;
      return 5;
    });
    CHECK(g.get() == 5);
    CHECK(calls == 2);
  }
  SUBCASE("on a ready future runs at once, in this thread") {
    auto f = ex.submit(square, 2);
    f.wait();
    auto me = std::this_thread::get_id();
    std::thread::id ran_on;
    f.then([&](int) { ran_on = std::this_thread::get_id(); });
    CHECK(ran_on == me);
  }
}

TEST_CASE("Future.then.a_continuation_that_waits_for_an_unfinished_call_of_its_executor_fails") {
  // It runs on the manager thread, which sends queued calls and reads results: a get() there of a
  // call still queued stopped the executor for good, its destructor too. (One call at a time per
  // worker: a call pipelined to a worker is read by the waiting callback itself.)
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  auto f1 = ex.submit(slow_identity, 1, 300);
  auto f2 = ex.submit(slow_identity, 2, 300);
  auto g = f1.then([&](int v) { return ex.submit(slow_identity, v, 1).get(); });
  REQUIRE(g.wait_for(30s));
  CHECK_THROWS_WITH_AS(g.get(), doctest::Contains("would wait for itself"), std::logic_error);
  CHECK(f2.get() == 2);
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("Future.then.a_continuation_may_wait_for_a_call_another_thread_reads") {
  // The callback runs on the manager thread while this thread reads b's worker's channel in its
  // get(): b is finished by this thread (an early version of the check above threw here).
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(30s));
  for (int i = 0; i < 10; ++i) {
    auto b = ex.submit(slow_identity, 2, 100);
    auto a = ex.submit(slow_identity, 1, 20);
    auto c = a.then([b](int v) { return v + b.get(); });
    CHECK(b.get() == 2);
    REQUIRE(c.wait_for(30s));
    CHECK(c.get() == 3);
  }
}

TEST_CASE("Future.then.a_continuation_finds_the_calls_of_its_batch_ready") {
  // Results read together are completed together: every future of the batch is ready before a
  // callback runs (one waiting for a later call of its batch waited for ever in the thread that
  // was to complete it).
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "8");
  ferry::Executor ex(support::options(1));
  for (int i = 0; i < 20; ++i) {
    auto f1 = ex.submit(slow_identity, 1, 5);
    auto f2 = ex.submit(square, 2);  // runs right after f1: its result follows f1's
    auto g = f1.then([f2](int v) { return v + f2.get(); });
    REQUIRE(g.wait_for(30s));
    CHECK(g.get() == 5);
  }
}

namespace {
/// What a wait inside a callback gave: "value N", "timeout" (a status: not ready), or the error it
/// threw, by kind: "logic_error: ...", "TimeoutError: ...", "other: ...".
std::string outcome_of_wait(const std::function<int()>& wait) {
  try {
    const int v = wait();
    return v < 0 ? std::string("timeout") : "value " + std::to_string(v);
  } catch (const ferry::TimeoutError& e) {
    return std::string("TimeoutError: ") + e.what();
  } catch (const std::logic_error& e) {
    return std::string("logic_error: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

using WaitFor = std::function<int(const ferry::Future<int>&)>;

/// Every way to wait for one future: its value, or -1 when a wait with a deadline ended without it.
std::vector<std::pair<std::string, WaitFor>> ways_to_wait() {
  using F = ferry::Future<int>;
  return {
      {"get", [](const F& f) { return f.get(); }},
      {"wait_for", [](const F& f) { return f.wait_for(30s) ? f.get() : -1; }},
      {"ferry::wait", [](const F& f) { return ferry::wait(std::vector{f}).done.at(0).get(); }},
      {"ferry::wait first_completed",
       [](const F& f) { return ferry::wait(std::vector{f}, ferry::Return::first_completed).done.at(0).get(); }},
      {"ferry::wait with a timeout",
       [](const F& f) {
         auto sets = ferry::wait(std::vector{f}, ferry::Return::all_completed, 30s);
         return sets.done.empty() ? -1 : sets.done[0].get();
       }},
      {"as_completed",
       [](const F& f) {
         int v = 0;
         for (const auto& g : ferry::as_completed(std::vector{f})) v += g.get();
         return v;
       }},
      {"as_completed with a timeout",
       [](const F& f) {
         int v = 0;
         for (const auto& g : ferry::as_completed(std::vector{f}, 30s)) v += g.get();
         return v;
       }},
      {"when_all", [](const F& f) { return ferry::when_all(std::vector{f}).get().at(0).get(); }},
      {"when_all of a tuple", [](const F& f) { return std::get<1>(ferry::when_all(f, f).get()).get(); }},
      {"when_all wait_for",
       [](const F& f) {
         auto all = ferry::when_all(std::vector{f});
         return all.wait_for(30s) ? all.get().at(0).get() : -1;
       }},
      {"when_any",
       [](const F& f) {
         auto any = ferry::when_any(std::vector{f}).get();
         return any.futures.at(any.index).get();
       }},
      {"then", [](const F& f) { return f.then([](int v) { return v; }).get(); }},
  };
}
}  // namespace

TEST_CASE("Future.then.a_continuation_may_wait_for_a_call_of_its_executor_with_any_waiting_helper") {
  // The callback runs on the manager thread. get() there reads a call already sent to a worker
  // itself; ferry::wait, as_completed and when_all/when_any(...).get() blocked the thread on a
  // condition variable for good instead: the executor froze, its destructor too. They all read
  // it now (StateBase::wait_helping).
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(30s));
  for (const auto& [name, wait_for] : ways_to_wait()) {
    CAPTURE(name);
    auto a = ex.submit(slow_identity, 1, 50);
    auto b = ex.submit(slow_identity, 2, 50);  // queued behind a, sent when a's result is read
    auto g = a.then([b, wait_for = wait_for](int) { return outcome_of_wait([&] { return wait_for(b); }); });
    REQUIRE(g.wait_for(30s));
    CHECK(g.get() == "value 2");
  }
}

TEST_CASE("Future.then.a_continuation_waiting_for_a_queued_call_of_its_executor_is_told_at_once") {
  // c waits in the host's queue behind b, which runs: only the manager thread, running the
  // callback, would send it. A wait without a deadline throws the logic_error get() throws; one
  // with a deadline ends at once as if it had passed (it stopped the executor until then); a map
  // there ends the same ways.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(30s));
  auto ways = ways_to_wait();
  ways.emplace_back("map", [&ex](const ferry::Future<int>&) { return ex.map(square, std::vector{1, 2, 3}).at(2); });
  ways.emplace_back("map with a timeout", [&ex](const ferry::Future<int>&) {
    return ex.map(square, std::vector{1, 2, 3}, {.timeout = 30s}).at(2);
  });
  ways.emplace_back("map_outcomes", [&ex](const ferry::Future<int>&) {
    return ex.map_outcomes(square, std::vector{1, 2, 3}, {.chunksize = 1}).at(2).value();
  });
  ways.emplace_back("imap_unordered with a timeout", [&ex](const ferry::Future<int>&) {
    int v = 0;
    for (auto r : ex.imap_unordered(square, std::vector{1, 2, 3}, {.timeout = 30s})) v += r.value;
    return v;
  });
  for (const auto& [name, wait_for] : ways) {
    CAPTURE(name);
    auto a = ex.submit(slow_identity, 1, 20);
    auto b = ex.submit(slow_identity, 2, 200);  // sent when a's result is read: runs during the callback
    auto c = ex.submit(square, 3);              // queued behind b
    auto g = a.then([c, wait_for = wait_for](int) { return outcome_of_wait([&] { return wait_for(c); }); });
    // Well before the waits' 30 s: they did not wait for their deadline.
    REQUIRE(g.wait_for(20s));
    const std::string got = g.get();
    CAPTURE(got);
    const bool bounded = name.find("timeout") != std::string::npos || name.find("wait_for") != std::string::npos;
    const bool throws_at_timeout = name.find("as_completed") != std::string::npos || name.find("map") != std::string::npos;
    if (!bounded) {
      CHECK(got.rfind("logic_error: ", 0) == 0);
      CHECK(got.find("would wait for itself") != std::string::npos);
    } else if (throws_at_timeout) {
      CHECK(got.rfind("TimeoutError: ", 0) == 0);
    } else {
      CHECK(got == "timeout");
    }
    CHECK(c.get() == 9);  // the executor goes on
  }
}

TEST_CASE("Future.then.a_continuation_waiting_on_futures_of_two_executors_checks_each") {
  // In a callback on ex's manager thread, a call of `other` is other's manager's to finish, even
  // queued: it is waited for; ex's own queued call c is not: once nothing else is left, the
  // waits are told (they blocked for good).
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  ferry::Executor other(support::options(1));
  REQUIRE(ex.warm_up(30s));
  REQUIRE(other.warm_up(30s));
  auto running = other.submit(slow_identity, 4, 100);
  auto q1 = other.submit(slow_identity, 5, 20);  // queued in other's host, behind `running`
  auto q2 = other.submit(slow_identity, 6, 20);
  auto a = ex.submit(slow_identity, 1, 20);
  auto b = ex.submit(slow_identity, 2, 300);
  auto c = ex.submit(square, 3);  // queued behind b
  auto g = a.then([=](int) {
    std::vector<std::string> out;
    out.push_back(outcome_of_wait([&] { return ferry::when_all(std::vector{running, q1}).get().at(1).get(); }));
    out.push_back(outcome_of_wait([&] {
      return ferry::wait(std::vector{q2, c}, ferry::Return::first_completed).done.at(0).get();
    }));
    out.push_back(outcome_of_wait([&] { return ferry::wait(std::vector{q2, c}).done.size() == 2 ? 0 : -1; }));
    return out;
  });
  REQUIRE(g.wait_for(30s));
  const auto out = g.get();
  REQUIRE(out.size() == 3);
  CHECK(out[0] == "value 5");
  CHECK(out[1] == "value 6");
  CHECK(out[2].find("would wait for itself") != std::string::npos);
  CHECK(c.get() == 9);
}

namespace {
constexpr int chain_links = 200'000;

/// `links` continuations chained on `root` (f = f.then(...) in a loop), each counting its call:
/// the last one's value is the number of links.
ferry::Future<int> chain_on(const ferry::Future<int>& root, int links, std::atomic<int>& calls) {
  // The first takes the future: a root that failed (cancelled) starts the count at 0 as well.
  ferry::Future<int> f = root.then([&calls](const ferry::Future<int>&) {
    ++calls;
    return 1;
  });
  for (int i = 1; i < links; ++i)
    f = f.then([&calls](int v) {
      ++calls;
      return v + 1;
    });
  return f;
}
}  // namespace

TEST_CASE("Future.then.a_chain_of_200000_links_completes") {
  // Each link's completion ran the next link's callbacks inside it: a chain of 50,000 overflowed
  // the 8 MiB stack of the thread completing its first future. Queued behind the running callback
  // instead (StateBase::Deferred), the chain runs in a loop, in order, each link once, whichever
  // path of the pool completes its first future.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(30s));
  support::HeldFile held;
  auto blocker = ex.submit(wait_while_exists, held.path.string());  // the worker, until released
  std::atomic<int> calls{0};
  std::mutex order_mu;
  std::vector<int> order;
  auto note = [&](int n) {
    std::lock_guard lock(order_mu);
    order.push_back(n);
  };
  SUBCASE("by the manager thread, with the callbacks of one future in their order") {
    auto root = ex.submit(square, 3);  // queued behind the blocker
    for (int n = 0; n < 3; ++n) root.then([&note, n](int) { note(n); });
    auto last = chain_on(root, chain_links, calls);
    root.then([&note](int) { note(3); });
    REQUIRE_FALSE(root.ready());
    held.release();
    REQUIRE(last.wait_for(60s));
    CHECK(last.get() == chain_links);
    CHECK(order == std::vector<int>{0, 1, 2, 3});
  }
  SUBCASE("by cancel() in this thread") {
    auto root = ex.submit(square, 3);
    auto last = chain_on(root, chain_links, calls);
    REQUIRE(root.cancel());
    REQUIRE(last.ready());
    CHECK(last.get() == chain_links);
    held.release();
  }
  SUBCASE("by shutdown({.kill_workers = true})") {
    auto root = ex.submit(square, 3);
    auto last = chain_on(root, chain_links, calls);
    ex.shutdown({.wait = true, .kill_workers = true});
    REQUIRE(last.ready());
    CHECK(last.get() == chain_links);
  }
  SUBCASE("by a callback of another executor, cancelling it") {
    auto root = ex.submit(square, 3);
    auto last = chain_on(root, chain_links, calls);
    ferry::Executor other(support::options(1));
    auto cancelled = other.submit(square, 2).then([root](int) { return root.cancel(); });
    REQUIRE(cancelled.wait_for(60s));
    CHECK(cancelled.get());
    REQUIRE(last.ready());
    CHECK(last.get() == chain_links);
    held.release();
  }
  CHECK(calls == chain_links);
}

TEST_CASE("Future.then.a_continuation_may_wait_for_one_queued_behind_it") {
  // A state completed inside a callback runs its callbacks once that callback returns; one that
  // waits for a continuation of it (here: the one setting z, queued behind the one waiting) runs
  // what its thread queued before it blocks, as each completion did at once before.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  ferry::Executor ex(support::options(1));
  for (int i = 0; i < 5; ++i) {
    auto x = ex.submit(slow_identity, 1, 20);
    auto y = x.then([](int v) { return v + 1; });
    auto z = y.then([](int v) { return v * 10; });
    auto w = x.then([z](int) { return z.get(); });
    REQUIRE(w.wait_for(30s));
    CHECK(w.get() == 20);
  }
}

TEST_CASE("Future.cancel") {
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto running = ex.submit(slow_identity, 1, 300);
  std::vector<ferry::Future<int>> queued;
  for (int i = 0; i < 12; ++i) queued.push_back(ex.submit(square, i));
  // The last one is still queued in the host: it can be cancelled, and never runs.
  CHECK(queued.back().cancel());
  CHECK(queued.back().ready());
  CHECK_THROWS_AS(queued.back().get(), ferry::CancelledError);
  CHECK(queued.back().cancel());  // cancelled already: true again, as concurrent.futures says
  // The running one cannot be cancelled without asking to kill it.
  CHECK_FALSE(running.cancel());
  CHECK(running.get() == 1);
  for (int i = 0; i < 11; ++i) CHECK(queued[i].get() == i * i);
  // A finished future cannot be cancelled.
  CHECK_FALSE(queued[0].cancel());
}

TEST_CASE("Future.cancel.a_kill_that_races_the_result_cancels_or_says_false") {
  // cancel({.kill_running = true}) on a call whose result is on its way (written by the worker,
  // or being read by the thread waiting in get()): either it says true and the future fails with
  // CancelledError, the result dropped, or it says false and the result stands, no worker killed.
  // It said true, then the value came (17 to 20 of 1,000 calls), each time killing a worker for
  // nothing. Here a thread kill-cancels each running call about when it ends.
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  constexpr std::size_t calls = 400;
  std::vector<ferry::Future<int>> fs;
  for (std::size_t i = 0; i < calls; ++i) fs.push_back(ex.submit(busy_for, 2));
  std::vector<char> said_true(calls, 0);  // the canceller's, read once it is joined
  std::atomic<bool> stop{false};
  std::thread canceller([&] {
    std::mt19937 random(1);
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    for (std::size_t k = 0; k < calls && !stop && std::chrono::steady_clock::now() < give_up;) {
      if (fs[k].ready()) {
        ++k;
        continue;
      }
      if (!fs[k].running()) {
        std::this_thread::yield();
        continue;
      }
      // Aimed at its end (2 ms of CPU time): some land before the result, some just after it.
      const auto at = std::chrono::steady_clock::now() + std::chrono::microseconds(1500 + random() % 1500);
      while (std::chrono::steady_clock::now() < at && !fs[k].ready()) {
      }
      if (fs[k].cancel({.kill_running = true})) said_true[k] = 1;
      ++k;
    }
  });
  for (auto& f : fs) CHECK(f.wait_for(30s));
  stop = true;
  canceller.join();
  std::size_t cancelled = 0, mismatches = 0;
  for (std::size_t i = 0; i < calls; ++i) {
    bool value = false;
    int got = 0;
    try {
      got = fs[i].get();
      value = true;
    } catch (const ferry::CancelledError&) {
    }
    if (value) CHECK(got == 2);
    if (said_true[i]) {
      ++cancelled;
      if (value || !fs[i].cancelled()) ++mismatches;
      // Asked again, a cancelled future says true (concurrent.futures).
      CHECK(fs[i].cancel({.kill_running = true}));
    } else {
      CHECK(value);  // no CancelledError without a cancel() that said so
    }
  }
  INFO("cancel() said true for " << cancelled << " calls, " << mismatches << " of them not cancelled");
  CHECK(mismatches == 0);
  CHECK(cancelled > 0);
  // One worker killed for each call cancelled, none for a result that was taken already (a
  // cancelled future is ready at once; its worker's death is counted once it is settled).
  CHECK(support::wait_until([&] { return ex.stats().workers_crashed >= cancelled; }));
  CHECK(ex.stats().workers_crashed == cancelled);
  CHECK(ex.stats().workers_killed == cancelled);
}

TEST_CASE("Future.wait_on_many") {
  ferry::Executor ex(support::options(2));
  SUBCASE("first_completed") {
    std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 2000), ex.submit(square, 3)};
    auto [done, not_done] = ferry::wait(fs, ferry::Return::first_completed);
    REQUIRE(done.size() == 1);
    CHECK(done[0].get() == 9);
    CHECK(not_done.size() == 1);
    fs[0].cancel({.kill_running = true});
  }
  SUBCASE("all_completed") {
    std::vector<ferry::Future<int>> fs;
    for (int i = 0; i < 5; ++i) fs.push_back(ex.submit(slow_identity, i, 10));
    auto [done, not_done] = ferry::wait(fs);
    CHECK(done.size() == 5);
    CHECK(not_done.empty());
  }
  SUBCASE("first_exception") {
    std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 2000), ex.submit(fail, 1)};
    auto [done, not_done] = ferry::wait(fs, ferry::Return::first_exception);
    REQUIRE(done.size() == 1);
    CHECK(done[0].exception() != nullptr);
    fs[0].cancel({.kill_running = true});
  }
  SUBCASE("timeout") {
    std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 2000)};
    auto [done, not_done] = ferry::wait(fs, ferry::Return::all_completed, 20ms);
    CHECK(done.empty());
    CHECK(not_done.size() == 1);
    fs[0].cancel({.kill_running = true});
  }
  SUBCASE("duplicates count once") {
    auto f = ex.submit(square, 2);
    auto [done, not_done] = ferry::wait(std::vector{f, f, f});
    CHECK(done.size() == 1);
  }
}

namespace {
/// One worker running slow_identity(1, ms), then a call that fails and one that can still be
/// cancelled: with a pipeline depth of 1, both wait in the host's queue.
struct BehindARunningTask {
  support::ScopedEnv depth{"FERRY_PIPELINE_DEPTH", "1"};
  ferry::Executor ex{support::options(1)};
  ferry::Future<int> running, failing, queued;
  explicit BehindARunningTask(int ms) {
    REQUIRE(ex.warm_up(10s));
    running = ex.submit(slow_identity, 1, ms);
    failing = ex.submit(fail, 1);
    queued = ex.submit(square, 2);
  }
};
}  // namespace

TEST_CASE("Future.wait.first_exception_ignores_cancelled") {
  // concurrent.futures' FIRST_EXCEPTION returns on the first future that failed and was not
  // cancelled: a cancelled future is done, but it is no reason to return.
  BehindARunningTask t(300);
  auto& [depth, ex, running, failing, cancelled] = t;
  REQUIRE(cancelled.cancel());
  SUBCASE("alone, it is no reason to return") {
    auto [done, not_done] =
        ferry::wait(std::vector{running, cancelled}, ferry::Return::first_exception);
    CHECK(not_done.empty());
    CHECK(done.size() == 2);
    CHECK(running.get() == 1);
  }
  SUBCASE("the next failure is") {
    auto last = ex.submit(slow_identity, 3, 5000);
    auto [done, not_done] =
        ferry::wait(std::vector{cancelled, failing, last}, ferry::Return::first_exception);
    CHECK(done.size() == 2);
    REQUIRE(not_done.size() == 1);
    CHECK(not_done[0].id() == last.id());
    CHECK_THROWS_AS(failing.get(), ferry::TaskError);
    last.cancel({.kill_running = true});
  }
}

TEST_CASE("Future.cancelled") {
  BehindARunningTask t(5000);
  auto& [depth, ex, running, failing, queued] = t;
  CHECK_FALSE(queued.cancelled());
  REQUIRE(queued.cancel());
  CHECK(queued.cancelled());
  CHECK_THROWS_AS(queued.get(), ferry::CancelledError);
  // A refused cancel() leaves no mark.
  CHECK_FALSE(running.cancel());
  CHECK_FALSE(running.cancelled());
  // Stopping a running task is a cancellation too.
  REQUIRE(running.cancel({.kill_running = true}));
  CHECK_THROWS_AS(running.get(), ferry::CancelledError);
  CHECK(running.cancelled());
  CHECK_THROWS_AS(failing.get(), ferry::TaskError);
  CHECK_FALSE(failing.cancelled());
  // shutdown(kill_workers) fails pending work with CancelledError, but nobody cancelled those
  // futures: they count as failures (loky's ShutdownExecutorError), and first_exception returns
  // on them while another executor's task still runs.
  ferry::Executor other(support::options(1));
  auto elsewhere = other.submit(slow_identity, 4, 5000);
  auto slow = ex.submit(slow_identity, 2, 5000);
  auto behind = ex.submit(square, 3);
  ex.shutdown({.wait = false, .kill_workers = true});
  CHECK_THROWS_AS(behind.get(), ferry::CancelledError);
  CHECK_FALSE(behind.cancelled());
  CHECK_FALSE(slow.cancelled());
  auto [done, not_done] =
      ferry::wait(std::vector{elsewhere, behind}, ferry::Return::first_exception);
  CHECK(done.size() == 1);
  CHECK(not_done.size() == 1);
  elsewhere.cancel({.kill_running = true});
}

TEST_CASE("Future.cancel.a_cancelled_future_says_true_again") {
  // As concurrent.futures' Future.cancel: true for a future already cancelled, whichever way
  // (a queued call taken back, then asked with kill_running; a running call killed, asked twice).
  BehindARunningTask t(5000);
  auto& [depth, ex, running, failing, queued] = t;
  REQUIRE(queued.cancel());
  CHECK(queued.cancel());
  CHECK(queued.cancel({.kill_running = true}));
  REQUIRE(running.cancel({.kill_running = true}));
  CHECK(running.cancel({.kill_running = true}));
  CHECK(running.cancel());
  CHECK_THROWS_AS(running.get(), ferry::CancelledError);
  CHECK(running.cancel({.kill_running = true}));
  CHECK(running.cancelled());
  CHECK_THROWS_AS(failing.get(), ferry::TaskError);
  CHECK_FALSE(failing.cancel());
  CHECK(ex.stats().workers_crashed == 1);
}

TEST_CASE("Future.as_completed") {
  ferry::Executor ex(support::options(2));
  SUBCASE("in completion order") {
    std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 400), ex.submit(square, 3)};
    std::vector<int> order;
    for (const auto& f : ferry::as_completed(fs)) order.push_back(f.get());
    CHECK(order == std::vector<int>{9, 1});
  }
  SUBCASE("duplicates once") {
    auto f = ex.submit(square, 2);
    int n = 0;
    for (const auto& g : ferry::as_completed(std::vector{f, f})) {
      CHECK(g.get() == 4);
      ++n;
    }
    CHECK(n == 1);
  }
  SUBCASE("timeout") {
    std::vector<ferry::Future<int>> fs = {ex.submit(square, 2), ex.submit(slow_identity, 1, 2000)};
    // The first is done before the range starts: the 100 ms are the second's alone (a cold pool
    // under a sanitizer on a loaded machine takes longer than that to answer the first).
    REQUIRE(fs[0].wait_for(30s));
    auto range = ferry::as_completed(fs, 100ms);
    auto it = range.begin();
    CHECK(it->get() == 4);
    CHECK_THROWS_AS(++it, ferry::TimeoutError);
    fs[1].cancel({.kill_running = true});
  }
}
