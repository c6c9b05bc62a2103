// SPDX-License-Identifier: BSD-3-Clause
// co_await on a Future (with a minimal coroutine type of the test's own), when_all and when_any.
#include <atomic>
#include <coroutine>
#include <exception>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

/// The least a coroutine type can be: it starts at once, runs to its end, and hands its result
/// (or exception) to a std::future. Nothing ferry-specific: co_await works with any coroutine.
template <class T>
struct Eager {
  struct promise_type {
    std::promise<T> result;
    Eager get_return_object() { return Eager{result.get_future()}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_value(T v) { result.set_value(std::move(v)); }
    void unhandled_exception() { result.set_exception(std::current_exception()); }
  };
  std::future<T> result;
};

Eager<int> square_plus_one(ferry::Executor& ex, int x) {
  int y = co_await ex.submit(square, x);
  co_return y + 1;
}

Eager<std::string> catch_remote(ferry::Executor& ex) {
  try {
    co_await ex.submit(fail, 4);
    co_return "no error";
  } catch (const ferry::TaskError& e) {
    co_return e.remote_type();
  }
}

Eager<int> sum_of_squares(ferry::Executor& ex, int n) {
  int total = 0;
  for (int i = 0; i < n; ++i) total += co_await ex.submit(square, i);
  co_return total;
}

Eager<std::thread::id> thread_after(ferry::Future<int> f) {
  co_await f;
  co_return std::this_thread::get_id();
}

Eager<int> await_void(ferry::Executor& ex) {
  co_await ex.submit(noop);
  co_return 7;
}

}  // namespace

TEST_CASE("Future.co_await.gives_the_value") {
  ferry::Executor ex(support::options(2));
  auto r = square_plus_one(ex, 6);
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() == 37);
}

TEST_CASE("Future.co_await.throws_the_error_in_the_coroutine") {
  ferry::Executor ex(support::options(1));
  auto r = catch_remote(ex);
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() == "std::invalid_argument");
}

TEST_CASE("Future.co_await.many_in_a_row") {
  ferry::Executor ex(support::options(2));
  auto r = sum_of_squares(ex, 100);
  REQUIRE(r.result.wait_for(30s) == std::future_status::ready);
  CHECK(r.result.get() == 328350);  // sum of i^2 for i < 100
}

TEST_CASE("Future.co_await.of_a_void_future") {
  ferry::Executor ex(support::options(1));
  auto r = await_void(ex);
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() == 7);
}

TEST_CASE("Future.co_await.a_ready_future_does_not_suspend") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(square, 3);
  f.wait();
  auto r = thread_after(f);
  // Never suspended: the coroutine ran to its end inside the call, on this thread.
  REQUIRE(r.result.wait_for(0s) == std::future_status::ready);
  CHECK(r.result.get() == std::this_thread::get_id());
}

TEST_CASE("Future.co_await.resumes_in_the_thread_that_completes_the_future") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(slow_identity, 1, 200);
  auto r = thread_after(f);
  // This thread does not wait on the ferry future: the manager thread reads the result and
  // completes it, and the coroutine goes on there.
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() != std::this_thread::get_id());
  SUBCASE("or a thread blocked in get() on it") {
    auto g = ex.submit(slow_identity, 2, 200);
    auto r2 = thread_after(g);
    CHECK(g.get() == 2);  // this thread reads the worker's channel and completes g itself
    REQUIRE(r2.result.wait_for(10s) == std::future_status::ready);
    CHECK(r2.result.get() == std::this_thread::get_id());
  }
}

TEST_CASE("When.all.holds_every_future_in_order") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(slow_identity, i, i % 3));
  auto all = ferry::when_all(fs);
  auto got = all.get();
  REQUIRE(got.size() == 20);
  for (int i = 0; i < 20; ++i) {
    CHECK(got[i].ready());
    CHECK(got[i].id() == fs[i].id());
    CHECK(got[i].get() == i);
  }
  CHECK_FALSE(all.info().has_value());  // a composition, not a call
}

TEST_CASE("When.all.errors_stay_in_their_futures") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs = {ex.submit(square, 2), ex.submit(fail, 1), ex.submit(square, 3)};
  auto got = ferry::when_all(fs).get();  // never throws itself
  CHECK(got[0].get() == 4);
  CHECK_THROWS_AS(got[1].get(), ferry::TaskError);
  CHECK(got[2].get() == 9);
}

TEST_CASE("When.all.empty_and_ready_inputs_are_ready_at_once") {
  ferry::Executor ex(support::options(1));
  auto none = ferry::when_all(std::vector<ferry::Future<int>>{});
  CHECK(none.ready());
  CHECK(none.get().empty());
  auto f = ex.submit(square, 5);
  f.wait();
  auto all = ferry::when_all(std::vector<ferry::Future<int>>{f, f});  // duplicates are fine
  CHECK(all.ready());
  CHECK(all.get().size() == 2);
}

TEST_CASE("When.all.of_different_types") {
  ferry::Executor ex(support::options(2));
  auto both = ferry::when_all(ex.submit(square, 4), ex.submit(greet, std::string("ferry")));
  auto [a, b] = both.get();
  CHECK(a.get() == 16);
  CHECK(b.get() == "hello, ferry");
}

TEST_CASE("When.all.default_constructed_future_is_refused") {
  std::vector<ferry::Future<int>> fs(1);
  CHECK_THROWS_AS(ferry::when_all(fs), std::future_error);
  CHECK_THROWS_AS(ferry::when_any(fs), std::future_error);
}

TEST_CASE("When.wait_and_as_completed_refuse_a_default_constructed_future_as_when_all_does") {
  // ferry::wait and as_completed left it out unseen (2 in: done 1, not_done 0; as_completed
  // yielded 1), where when_all and when_any throw: the same input, the same error now.
  ferry::Executor ex(support::options(1));
  std::vector<ferry::Future<int>> fs{ex.submit(square, 3), ferry::Future<int>{}};
  auto no_state = [](auto&& call) {
    try {
      call();
    } catch (const std::future_error& e) {
      return e.code() == std::future_errc::no_state;
    }
    return false;
  };
  CHECK(no_state([&] { ferry::when_all(fs); }));
  CHECK(no_state([&] { ferry::when_any(fs); }));
  CHECK(no_state([&] { ferry::wait(fs); }));
  CHECK(no_state([&] { ferry::wait(fs, ferry::Return::first_completed, 0s); }));
  CHECK(no_state([&] { ferry::as_completed(fs); }));
  CHECK(no_state([&] { ferry::as_completed(fs, 0s); }));
  std::vector<ferry::Future<int>> only_none(1);
  CHECK(no_state([&] { ferry::wait(only_none); }));
  CHECK(no_state([&] { ferry::as_completed(only_none); }));
  // The valid one is untouched: it is waited for as before.
  CHECK(fs[0].get() == 9);
  auto [done, not_done] = ferry::wait(std::vector<ferry::Future<int>>{fs[0], fs[0]});
  CHECK(done.size() == 1);
  CHECK(not_done.empty());
}

namespace {
Eager<int> total_of(ferry::Executor& ex, int n) {
  std::vector<ferry::Future<int>> fs;
  for (int i = 1; i <= n; ++i) fs.push_back(ex.submit(square, i));
  int total = 0;
  for (auto& f : co_await ferry::when_all(fs)) total += f.get();
  co_return total;
}

Eager<int> first_of(ferry::Executor& ex) {
  std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 2000), ex.submit(square, 5)};
  auto any = co_await ferry::when_any(fs);
  int v = any.futures[any.index].get();
  any.futures[0].cancel({.kill_running = true});
  co_return v;
}
}  // namespace

TEST_CASE("When.all.co_await") {
  ferry::Executor ex(support::options(2));
  auto r = total_of(ex, 10);
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() == 385);
}

TEST_CASE("When.any.the_first_ready_one") {
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  std::vector<ferry::Future<int>> fs = {ex.submit(spin_forever, 0), ex.submit(square, 7)};
  auto any = ferry::when_any(fs).get();
  CHECK(any.index == 1);
  REQUIRE(any.futures.size() == 2);
  CHECK(any.futures[1].get() == 49);
  CHECK_FALSE(any.futures[0].ready());  // the others go on
  CHECK(any.futures[0].cancel({.kill_running = true}));
}

TEST_CASE("When.any.a_failure_counts_as_ready") {
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  std::vector<ferry::Future<int>> fs = {ex.submit(spin_forever, 0), ex.submit(fail, 1)};
  auto any = ferry::when_any(fs).get();
  CHECK(any.index == 1);
  CHECK_THROWS_AS(any.futures[1].get(), ferry::TaskError);
  fs[0].cancel({.kill_running = true});
}

TEST_CASE("When.any.empty_and_ready_inputs") {
  auto none = ferry::when_any(std::vector<ferry::Future<int>>{}).get();
  CHECK(none.index == ferry::WhenAnyResult<int>::npos);
  CHECK(none.futures.empty());
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(square, 2);
  f.wait();
  auto g = ex.submit(slow_identity, 3, 100);
  auto any = ferry::when_any(std::vector<ferry::Future<int>>{g, f});
  CHECK(any.ready());  // f was ready: at once
  CHECK(any.get().index == 1);
  CHECK(g.get() == 3);
}

TEST_CASE("When.any.co_await") {
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  auto r = first_of(ex);
  REQUIRE(r.result.wait_for(10s) == std::future_status::ready);
  CHECK(r.result.get() == 25);
}
