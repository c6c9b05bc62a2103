// SPDX-License-Identifier: BSD-3-Clause
// get_reusable_executor: reuse, resize, replace (loky semantics), from many threads.
#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

TEST_CASE("ReusableExecutor.same_options_same_executor") {
  auto a = ferry::get_reusable_executor(support::options(2));
  auto b = ferry::get_reusable_executor(support::options(2));
  CHECK(a == b);
  CHECK(a->submit(square, 3).get() == 9);
}

TEST_CASE("ReusableExecutor.only_max_workers_differs_resizes") {
  auto a = ferry::get_reusable_executor(support::options(2));
  REQUIRE(a->warm_up(10s));
  auto pids = a->worker_pids();
  auto b = ferry::get_reusable_executor(support::options(1));
  CHECK(a == b);
  CHECK(b->max_workers() == 1);
  CHECK(support::wait_until([&] { return b->worker_pids().size() == 1; }));
  // The survivor is one of the original workers.
  auto survivor = b->worker_pids().front();
  CHECK(std::find(pids.begin(), pids.end(), survivor) != pids.end());
  auto c = ferry::get_reusable_executor(support::options(3));
  CHECK(c == a);
  CHECK(c->submit(square, 4).get() == 16);
}

TEST_CASE("ReusableExecutor.other_options_replace") {
  auto a = ferry::get_reusable_executor(support::options(1));
  auto o = support::options(1);
  o.env = {{"X", "1"}};
  auto b = ferry::get_reusable_executor(o);
  CHECK(a != b);
  CHECK(a->is_shutdown());
  CHECK(b->submit(square, 5).get() == 25);
}

TEST_CASE("ReusableExecutor.shut_down_is_replaced") {
  auto a = ferry::get_reusable_executor(support::options(1));
  a->shutdown();
  auto b = ferry::get_reusable_executor(support::options(1));
  CHECK(a != b);
  CHECK(b->submit(square, 6).get() == 36);
}

TEST_CASE("ReusableExecutor.many_threads_varying_sizes") {
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        auto ex = ferry::get_reusable_executor(support::options(1 + (t + round) % 3));
        std::vector<int> in = {t, round, t + round};
        auto out = ex->map(square, in);
        for (std::size_t i = 0; i < in.size(); ++i)
          if (out[i] != in[i] * in[i]) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

namespace {
/// Options whose workers see FERRY_TEST_GENERATION=`name`: another name replaces the executor.
ferry::ExecutorOptions generation(const std::string& name) {
  auto o = support::options(1);
  o.env = {{"FERRY_TEST_GENERATION", name}};
  return o;
}
std::string generation_of(ferry::Executor& ex) {
  return ex.submit<std::string>("getenv_task", std::string("FERRY_TEST_GENERATION")).get();
}
}  // namespace

TEST_CASE("ReusableExecutor.replaced_handle_submits_to_the_replacement") {
  // loky 3.5: a thread that resolved the executor before another call replaced it submits to the
  // replacement instead of failing (loky's test_reusable_executor_submit_during_shutdown_race).
  auto a = ferry::get_reusable_executor(generation("a"));
  std::promise<void> replaced;
  std::thread holder([&, a] {
    replaced.get_future().wait();
    CHECK(generation_of(*a) == "b");
  });
  auto b = ferry::get_reusable_executor(generation("b"));
  replaced.set_value();
  holder.join();
  REQUIRE(a != b);
  // is_shutdown() speaks of the handle's own pool, which the replacement shut down.
  CHECK(a->is_shutdown());
  // Every way of submitting goes along: map, by name, JSON.
  CHECK(a->map(square, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
  CHECK(a->submit<int>("square", 5).get() == 25);
  CHECK(a->submit_json("square", R"({"value0": 3})").get() == "{\"value0\":9}\n");
  // shutdown() on the old handle ends only its own pool (already shut down), never the
  // replacement that others use.
  a->shutdown();
  CHECK_FALSE(b->is_shutdown());
  CHECK(b->submit(square, 7).get() == 49);
  // Replaced again: the oldest handle reaches the newest executor.
  auto c = ferry::get_reusable_executor(generation("c"));
  CHECK(generation_of(*a) == "c");
  CHECK(generation_of(*b) == "c");
}

TEST_CASE("ReusableExecutor.only_a_replaced_executor_forwards") {
  SUBCASE("an executor of one's own fails after shutdown") {
    ferry::Executor own(support::options(1));
    own.shutdown();
    CHECK_THROWS_AS(own.submit(square, 1), ferry::BrokenProcessPool);
    CHECK_THROWS_AS(own.map(square, std::vector<int>{1}), ferry::BrokenProcessPool);
  }
  SUBCASE("a reusable executor shut down and not replaced fails; once replaced it forwards") {
    auto a = ferry::get_reusable_executor(generation("shut"));
    a->shutdown();
    CHECK_THROWS_AS(a->submit(square, 1), ferry::BrokenProcessPool);
    auto b = ferry::get_reusable_executor(generation("shut"));
    REQUIRE(a != b);
    CHECK(a->submit(square, 2).get() == 4);
  }
  SUBCASE("a broken executor is not forwarded, as in loky") {
    auto o = generation("broken");
    o.initializer = "init_throws";
    auto a = ferry::get_reusable_executor(o);
    CHECK_THROWS_AS(a->submit(square, 1).get(), ferry::BrokenProcessPool);
    REQUIRE(support::wait_until([&] { return a->is_broken(); }));
    auto b = ferry::get_reusable_executor(generation("healthy"));
    REQUIRE(a != b);
    CHECK_THROWS_AS(a->submit(square, 1), ferry::BrokenProcessPool);
    CHECK(b->submit(square, 3).get() == 9);
  }
}

TEST_CASE("ReusableExecutor.many_threads_varying_options") {
  // Every call replaces the executor: submits on handles replaced meanwhile must still succeed
  // (loky's test_reusable_executor_submit_with_concurrent_env_changes).
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 4; ++round) {
        try {
          auto name = std::to_string(t) + "-" + std::to_string(round);
          auto ex = ferry::get_reusable_executor(generation(name));
          if (ex->submit(square, t + round).get() != (t + round) * (t + round)) ++wrong;
        } catch (const ferry::Error& e) {
          MESSAGE(e.what());
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(failed == 0);
}

TEST_CASE("ReusableExecutor.a_shutdown_from_another_thread_never_fails_the_call") {
  // A thread shuts the shared executor down between get_reusable_executor's check that it is
  // usable and its resize: the call threw BrokenProcessPool ("cannot submit new tasks after
  // shutdown") instead of replacing it, as it does one found shut down (loky replaces it too).
  std::atomic<bool> stop{false};
  std::thread closer([&] {
    while (!stop) ferry::get_reusable_executor(support::options(1))->shutdown({.wait = false});
  });
  std::string failure;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  for (int round = 0; failure.empty() && std::chrono::steady_clock::now() < deadline; ++round) {
    try {
      ferry::get_reusable_executor(support::options(1 + round % 2));
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  stop = true;
  closer.join();
  CHECK_MESSAGE(failure.empty(), failure);
  CHECK(ferry::get_reusable_executor(support::options(2))->submit(square, 8).get() == 64);
}
