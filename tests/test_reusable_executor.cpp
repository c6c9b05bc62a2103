// SPDX-License-Identifier: BSD-3-Clause
// get_reusable_executor: reuse, resize, replace (loky semantics), from many threads.
#include <atomic>
#include <thread>

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
