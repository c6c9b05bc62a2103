// SPDX-License-Identifier: BSD-3-Clause
// The public API at its edges: an imap stream that outlives its executor, waits polled again and
// again (nothing may pile up on the futures), timeouts too long for the clock (a thousand years,
// +infinity, seconds::max(): wait that long, never "give up at once"), NaN timeouts, and when an
// imap's timeout starts.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <vector>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr auto thousand_years = std::chrono::hours(24 * 365 * 1000);

/// Futures that complete only when the test says so (no worker involved): local states.
struct LocalFutures {
  std::vector<std::shared_ptr<ferry::detail::State<int>>> states;
  std::vector<ferry::Future<int>> futures;
  explicit LocalFutures(int n) {
    for (int i = 0; i < n; ++i) {
      states.push_back(ferry::detail::make_local_state<int>());
      futures.emplace_back(states.back());
    }
  }
  /// Callbacks and watchers waiting on the futures, all together.
  std::size_t waiters() const {
    std::size_t n = 0;
    for (const auto& s : states) n += s->waiters();
    return n;
  }
};

/// How many workers of `ex` went for being idle.
std::size_t idle_exits(const ferry::Executor& ex) {
  auto stats = ex.stats();
  auto it = stats.recycled_by_reason.find("idle");
  return it == stats.recycled_by_reason.end() ? 0 : it->second;
}

}  // namespace

// ---- 1. an imap stream that outlives its executor ---------------------------------------------

TEST_CASE("Imap.a_stream_that_outlives_its_executor_ends_with_BrokenProcessPool") {
  auto ex = std::make_unique<ferry::Executor>(support::options(1));
  auto s = ex->imap(square, std::views::iota(0, 1000), {.chunksize = 1, .max_in_flight = 2});
  auto it = s.begin();
  REQUIRE(*it == 0);
  ++it;
  REQUIRE(*it == 1);
  ex.reset();  // waits for what was sent; the stream lives on
  // What had been sent before comes back, in order; the next chunk cannot be sent: the stream
  // ends with the error of a submit after shutdown, and never touches the gone executor.
  int next = 2;
  bool broken = false;
  try {
    for (++it; it != s.end(); ++it) {
      CHECK(*it == next * next);
      ++next;
    }
  } catch (const ferry::BrokenProcessPool&) {
    broken = true;
  }
  CHECK(broken);
  CHECK(next < 1000);
  CHECK(it == s.end());  // the error ended the stream
}

namespace {

/// A stream of square over 0..39 from a reusable executor, which get_reusable_executor then
/// replaces `replacements` times, each one replaced destroyed once replaced (its last handle
/// dropped); the stream goes on. How many results it gave, in order.
int results_across_replacements(int replacements) {
  auto current = ferry::get_reusable_executor(support::options(1));
  auto s = current->imap(square, std::views::iota(0, 40), {.chunksize = 1, .max_in_flight = 2});
  auto it = s.begin();
  REQUIRE(*it == 0);
  for (int generation = 1; generation <= replacements; ++generation) {
    auto options = support::options(1);
    options.env = {{"FERRY_TEST_EDGES", std::to_string(generation)}};
    auto next = ferry::get_reusable_executor(options);  // replaces the current one
    REQUIRE(next.get() != current.get());
    current = std::move(next);  // the one replaced is destroyed, its stream is not
  }
  int next = 1;
  for (++it; it != s.end(); ++it) {
    CHECK(*it == next * next);
    ++next;
  }
  return next;
}

}  // namespace

TEST_CASE("Imap.a_stream_of_a_replaced_reusable_executor_goes_on_with_its_replacement") {
  CHECK(results_across_replacements(1) == 40);
}

TEST_CASE("Imap.a_stream_follows_every_replacement_of_a_reusable_executor") {
  // It forwarded to the replacement it was first given only: once that one was replaced too and
  // gone, the stream ended with BrokenProcessPool though a newer executor was there.
  CHECK(results_across_replacements(2) == 40);
}

// ---- 2. waits polled again and again ----------------------------------------------------------

TEST_CASE("Futures.wait.polling_does_not_grow_memory") {
  LocalFutures pending(200);
  for (int poll = 0; poll < 1000; ++poll) {
    auto [done, not_done] = ferry::wait(pending.futures, ferry::Return::first_completed, 1us);
    REQUIRE(done.empty());
  }
  // Each wait took back what it registered: nothing is left to grow, nor to run at completion.
  CHECK(pending.waiters() == 0);
  // And the waits still work: one completion from another thread wakes a waiter up.
  std::thread completer([&] { pending.states[7]->set_value(7); });
  auto [done, not_done] = ferry::wait(pending.futures, ferry::Return::first_completed, 30s);
  completer.join();
  REQUIRE(done.size() == 1);
  CHECK(done[0].get() == 7);
  CHECK(not_done.size() == 199);
  CHECK(pending.waiters() == 0);
}

TEST_CASE("Futures.wait.polling_an_executors_queue_leaves_nothing_behind") {
  ferry::Executor ex(support::options(1));
  std::vector<ferry::Future<int>> fs{ex.submit(slow_identity, 0, 30000)};  // holds the worker
  for (int i = 0; i < 50; ++i) fs.push_back(ex.submit(square, i));        // queued behind it
  for (int poll = 0; poll < 500; ++poll) ferry::wait(fs, ferry::Return::first_completed, 1us);
  std::size_t left = 0;
  for (const auto& f : fs) left += f.id()->waiters();
  CHECK(left == 0);
  ex.shutdown({.wait = true, .kill_workers = true});
}

TEST_CASE("Futures.when_any.in_a_loop_leaves_nothing_on_the_others") {
  // A then() on every future, kept until each completed: when_any over the futures still
  // pending, in a loop, grew in time and memory with the square of their number (1,500: 225 MB).
  LocalFutures all(300);
  std::vector<ferry::Future<int>> pending = all.futures;
  for (int round = 0; round < 300; ++round) {
    auto any = ferry::when_any(pending);
    REQUIRE(all.waiters() == pending.size());  // one watch on each pending future, until decided
    all.states[static_cast<std::size_t>(round)]->set_value(round);
    REQUIRE(any.ready());
    auto r = any.get();
    CHECK(r.futures[r.index].get() == round);
    pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(r.index));
    REQUIRE(all.waiters() == 0);
  }
}

TEST_CASE("Futures.as_completed.leaves_nothing_behind_once_destroyed") {
  LocalFutures pending(50);
  pending.states[3]->set_value(3);
  for (int round = 0; round < 100; ++round) {
    auto range = ferry::as_completed(pending.futures, 1us);
    auto it = range.begin();
    REQUIRE(it->get() == 3);
    if (round == 0) CHECK(pending.waiters() > 0);  // what the check below sees go
    CHECK_THROWS_AS(++it, ferry::TimeoutError);
  }
  CHECK(pending.waiters() == 0);
}

// ---- 3. timeouts too long for the clock, and NaN -----------------------------------------------

TEST_CASE("Deadline.saturates_instead_of_overflowing") {
  using ferry::detail::deadline_after;
  const auto from = Clock::now();
  const auto max = Clock::time_point::max();
  CHECK(deadline_after(thousand_years, from) == max);
  CHECK(deadline_after(std::chrono::seconds::max(), from) == max);
  CHECK(deadline_after(std::chrono::hours::max(), from) == max);
  CHECK(deadline_after(std::chrono::duration<double>(inf), from) == max);
  CHECK(deadline_after(std::chrono::duration<double>(1e300), from) == max);
  CHECK(deadline_after(std::chrono::nanoseconds::max(), from) == max);
  CHECK(deadline_after(1ns, max - 1ns) == max);
  // Nothing to wait for: the deadline is now.
  CHECK(deadline_after(0s, from) == from);
  CHECK(deadline_after(-5s, from) == from);
  CHECK(deadline_after(std::chrono::seconds::min(), from) == from);
  CHECK(deadline_after(std::chrono::duration<double>(-inf), from) == from);
  // Ordinary timeouts are exact, rounded up to the clock's tick.
  CHECK(deadline_after(1s, from) == from + 1s);
  CHECK(deadline_after(250ms, from) == from + 250ms);
  CHECK(deadline_after(std::chrono::duration<double>(0.5), from) == from + 500ms);
  CHECK(deadline_after(std::chrono::duration<double, std::nano>(1.5), from) == from + 2ns);
  // Seconds in binary floating point, off by less than a millionth of a tick: not rounded up.
  CHECK(deadline_after(std::chrono::duration<double>(1e-9), from) == from + 1ns);
  CHECK(deadline_after(std::chrono::duration<double>(0.1), from) == from + 100ms);
  CHECK(deadline_after(std::chrono::duration<double>(1e-3), from) == from + 1ms);
  CHECK(deadline_after(std::chrono::duration<float>(0.3f), from) > from + 300ms);  // 0.300000012 s
  CHECK(deadline_after(std::chrono::duration<std::int64_t, std::pico>(1), from) == from + 1ns);
  CHECK(deadline_after(std::chrono::duration<std::int64_t, std::pico>::max(), from) ==
        from + std::chrono::ceil<Clock::duration>(std::chrono::duration<std::int64_t, std::pico>::max()));
  CHECK_THROWS_AS(deadline_after(std::chrono::duration<double>(not_a_number), from), std::invalid_argument);
  CHECK(ferry::detail::clock_duration(std::chrono::duration<double>(inf)) == Clock::duration::max());
  CHECK(ferry::detail::clock_duration(2s) == 2s);
}

TEST_CASE("Futures.wait_for.a_timeout_too_long_for_the_clock_waits_until_ready") {
  ferry::Executor ex(support::options(2));
  SUBCASE("seconds::max()") {
    auto f = ex.submit(slow_identity, 1, 200);
    CHECK(f.wait_for(std::chrono::seconds::max()) == std::future_status::ready);
    CHECK(f.get() == 1);
  }
  SUBCASE("a thousand years") {
    auto f = ex.submit(slow_identity, 2, 200);
    CHECK(f.wait_for(thousand_years) == std::future_status::ready);
  }
  SUBCASE("+infinity") {
    auto f = ex.submit(slow_identity, 3, 200);
    CHECK(f.wait_for(std::chrono::duration<double>(inf)) == std::future_status::ready);
  }
  SUBCASE("wait_until the end of a clock in hours") {
    auto f = ex.submit(slow_identity, 4, 200);
    CHECK(f.wait_until(std::chrono::time_point<Clock, std::chrono::hours>::max()) ==
          std::future_status::ready);
  }
}

TEST_CASE("Futures.wait.a_timeout_too_long_for_the_clock_waits_until_satisfied") {
  ferry::Executor ex(support::options(2));
  SUBCASE("wait, a thousand years") {
    std::vector<ferry::Future<int>> fs{ex.submit(slow_identity, 1, 200), ex.submit(slow_identity, 2, 200)};
    auto [done, not_done] = ferry::wait(fs, ferry::Return::all_completed, thousand_years);
    CHECK(done.size() == 2);
    CHECK(not_done.empty());
  }
  SUBCASE("wait, +infinity") {
    std::vector<ferry::Future<int>> fs{ex.submit(slow_identity, 1, 200)};
    auto [done, not_done] =
        ferry::wait(fs, ferry::Return::all_completed, std::chrono::duration<double>(inf));
    CHECK(done.size() == 1);
  }
  SUBCASE("as_completed, +infinity") {
    std::vector<ferry::Future<int>> fs{ex.submit(slow_identity, 1, 200), ex.submit(slow_identity, 2, 300)};
    int n = 0;
    for (const auto& f : ferry::as_completed(fs, std::chrono::duration<double>(inf))) n += f.get();
    CHECK(n == 3);
  }
}

TEST_CASE("Futures.nan_timeouts_are_refused") {
  LocalFutures pending(2);
  const std::chrono::duration<double> nan_seconds(not_a_number);
  CHECK_THROWS_AS(pending.futures[0].wait_for(nan_seconds), std::invalid_argument);
  CHECK_THROWS_AS(ferry::wait(pending.futures, ferry::Return::all_completed, nan_seconds),
                  std::invalid_argument);
  CHECK_THROWS_AS(ferry::as_completed(pending.futures, nan_seconds), std::invalid_argument);
  CHECK(pending.waiters() == 0);
  CHECK_THROWS_AS(ferry::Executor([] {
                    auto o = support::options(1);
                    o.idle_timeout = ferry::Duration(not_a_number);
                    return o;
                  }()),
                  std::invalid_argument);
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_AS(ex.warm_up(nan_seconds), std::invalid_argument);
  CHECK_THROWS_AS(ex.map(square, std::vector<int>{1, 2}, {.timeout = nan_seconds}), std::invalid_argument);
  CHECK_THROWS_AS(ex.submit_with({.deadline = nan_seconds}, square, 3), std::invalid_argument);
  CHECK_THROWS_AS(ferry::wait_for_wraps(nan_seconds), std::invalid_argument);
}

TEST_CASE("Map.a_timeout_too_long_for_the_clock_is_no_timeout") {
  ferry::Executor ex(support::options(2));
  std::vector<int> inputs(4, 7);
  SUBCASE("a thousand years") {
    auto r = ex.map(slow_identity, inputs, {.chunksize = 1, .timeout = thousand_years}, 50);
    CHECK(r == inputs);
  }
  SUBCASE("+infinity") {
    auto r = ex.map(slow_identity, inputs, {.chunksize = 1, .timeout = std::chrono::duration<double>(inf)}, 50);
    CHECK(r == inputs);
  }
  SUBCASE("imap, +infinity") {
    int n = 0;
    for (int v : ex.imap(slow_identity, inputs, {.chunksize = 1, .timeout = std::chrono::duration<double>(inf)}, 50))
      n += v;
    CHECK(n == 28);
  }
}

TEST_CASE("Executor.warm_up_with_a_timeout_too_long_for_the_clock_waits_for_the_workers") {
  ferry::Executor ex(support::options(2));
  SUBCASE("a thousand years") { CHECK(ex.warm_up(thousand_years)); }
  SUBCASE("+infinity") { CHECK(ex.warm_up(ferry::Duration(inf))); }
  CHECK(ex.worker_pids().size() == 2);
}

TEST_CASE("Executor.an_idle_timeout_too_long_for_the_clock_never_recycles") {
  auto options = support::options(1);
  SUBCASE("+infinity") { options.idle_timeout = ferry::Duration(inf); }
  SUBCASE("a thousand years") { options.idle_timeout = thousand_years; }
  ferry::Executor ex(options);
  const int pid = ex.submit(worker_pid).get();
  // A worker told a tiny idle time goes within milliseconds: give it 300 to show it stays.
  CHECK_FALSE(support::wait_until([&] { return idle_exits(ex) > 0; }, 300ms));
  CHECK(ex.submit(worker_pid).get() == pid);
}

TEST_CASE("Executor.an_idle_timeout_past_an_int_of_milliseconds_is_kept") {
  // 2^32 + 50 ms (49.7 days): cast to an int for poll it was 50 ms.
  auto options = support::options(1);
  options.idle_timeout = std::chrono::milliseconds((std::int64_t{1} << 32) + 50);
  ferry::Executor ex(options);
  const int pid = ex.submit(worker_pid).get();
  CHECK_FALSE(support::wait_until([&] { return idle_exits(ex) > 0; }, 300ms));
  CHECK(ex.submit(worker_pid).get() == pid);
}

TEST_CASE("Submit.a_deadline_too_long_for_the_clock_is_none") {
  ferry::Executor ex(support::options(1));
  // Just below what the clock's nanoseconds hold: added to the moment the call starts, it
  // overflowed into the past, and the task was killed at once for exceeding it.
  CHECK(ex.submit_with({.deadline = ferry::Duration(9.2233720368e9)}, slow_identity, 5, 50).get() == 5);
  CHECK(ex.submit_with({.deadline = ferry::Duration(inf)}, slow_identity, 6, 50).get() == 6);
  CHECK(ex.submit_with({.deadline = thousand_years}, slow_identity, 7, 50).get() == 7);
  // An ordinary deadline still works.
  CHECK_THROWS_AS(ex.submit_with({.deadline = 100ms}, slow_identity, 8, 20000).get(), ferry::TimeoutError);
}

// ---- 4. when an imap's timeout starts ---------------------------------------------------------

TEST_CASE("Imap.timeout_counts_from_the_call_that_makes_the_stream") {
  // As concurrent.futures' Executor.map: the budget starts with the call, not with the first
  // increment. Nothing is sent before the iteration begins, so the stream's tasks are not what
  // runs out of time here: the time spent before iterating is. (As there, a result already in
  // is handed back past the deadline: the tasks take 50 ms, so that none is in when the first
  // increment looks; instant ones came back under ASan while the next chunks were being sent.)
  ferry::Executor ex(support::options(1));
  std::vector<std::pair<int, int>> inputs;
  for (int i = 0; i < 10; ++i) inputs.emplace_back(i, 50);
  auto s = ex.imap(slow_identity, inputs, {.timeout = 300ms});
  const auto made = Clock::now();
  ex.submit(slow_identity, 0, 500).get();  // the caller is busy elsewhere for longer than that
  REQUIRE(Clock::now() - made >= 300ms);
  bool timed_out = false;
  try {
    for (int v : s) (void)v;
  } catch (const ferry::TimeoutError&) {
    timed_out = true;
  }
  CHECK(timed_out);
}

TEST_CASE("Executor.env_names_that_are_no_variable_names_are_refused") {
  // A name holding '=' became a second entry beside the variable it starts with: {"LD_PRELOAD",
  // ""} and {"LD_PRELOAD=/dir/others/write/lib.so ", ""} gave the worker two LD_PRELOAD entries,
  // the trust check judged the first (empty) and the loader loaded the last, unjudged.
  const std::string with_nul("a\0b", 3);
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"LD_PRELOAD=/tmp/lib.so ", ""}, {"", "x"}, {with_nul, "x"}, {"FERRY_TEST_VALUE", with_nul}}) {
    auto o = support::options(1);
    o.env = {{"LD_PRELOAD", ""}, {name, value}};
    CAPTURE(name);
    CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
  }
  auto o = support::options(1);
  o.env = {{"FERRY_TEST_VALUE", "a=b=c"}};  // '=' in a value is a value
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("Future.then.continuations_of_two_executors_waiting_for_each_other_are_told_not_hung") {
  // Each executor's continuations wait for a call of the other: each manager thread waited for the
  // other to send its call, queued behind its worker's, and both executors hung for good (their
  // destructors too). The wait that closes the cycle fails with logic_error; the others complete.
  ferry::Executor a(support::options(1)), b(support::options(1));
  std::vector<ferry::Future<int>> out;
  for (int i = 0; i < 4; ++i) {
    out.push_back(a.submit(slow_identity, i, 1).then([&b](int v) { return b.submit(slow_identity, v, 1).get(); }));
    out.push_back(b.submit(slow_identity, i, 1).then([&a](int v) { return a.submit(slow_identity, v, 1).get(); }));
  }
  int values = 0, told = 0;
  for (auto& f : out) {
    REQUIRE(f.wait_for(60s));
    try {
      f.get();
      ++values;
    } catch (const std::logic_error& e) {
      CHECK(std::string(e.what()).find("each executor's thread waits for the other's") != std::string::npos);
      ++told;
    }
  }
  CHECK(values + told == 8);
  CHECK(values > 0);
  // Both go on.
  CHECK(a.submit(square, 3).get() == 9);
  CHECK(b.submit(square, 4).get() == 16);
}
