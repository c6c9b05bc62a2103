// SPDX-License-Identifier: BSD-3-Clause
// Executor::map: ordered results, chunking, tuples, errors in input order.
#include <list>
#include <numeric>
#include <ranges>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include "math.hpp"
#include "support/fixture.hpp"

TEST_CASE("Map.returns_results_in_input_order") {
  std::vector<int> inputs(1000);
  std::iota(inputs.begin(), inputs.end(), -500);
  std::vector<int> expected;
  for (int x : inputs) expected.push_back(x * x);
  for (std::size_t n : {1, 2, 4}) {
    DOCTEST_SUBCASE((std::to_string(n) + " workers").c_str()) {
      ferry::Executor ex(support::options(n));
      for (std::size_t chunk : {0, 1, 7, 1000, 5000}) {
        CAPTURE(chunk);
        CHECK(ex.map(square, inputs, {.chunksize = chunk}) == expected);
      }
    }
  }
}

TEST_CASE("Map.empty_input") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.map(square, std::vector<int>{}).empty());
}

TEST_CASE("Map.any_input_range") {
  ferry::Executor ex(support::options(2));
  std::list<int> l = {3, 1, 2};
  CHECK(ex.map(square, l) == std::vector<int>{9, 1, 4});
  std::set<int> s = {3, 1, 2};
  CHECK(ex.map(square, s, {.chunksize = 2}) == std::vector<int>{1, 4, 9});
}

TEST_CASE("Map.takes_views_that_cannot_be_iterated_as_const") {
  // map and map_outcomes took `const Range&`: a view whose begin() is not const (views::filter
  // and drop_while cache it, an istream view reads as it goes) did not compile (150 lines from
  // executor.hpp), where imap took it. Lvalues, rvalues and const containers all work.
  ferry::Executor ex(support::options(2));
  auto is_even = [](int i) { return i % 2 == 0; };
  auto evens = std::views::iota(0, 10) | std::views::filter(is_even);
  const std::vector<int> squares{0, 4, 16, 36, 64};
  CHECK(ex.map(square, evens) == squares);
  CHECK(ex.map(square, evens, {.chunksize = 2}) == squares);  // iterated again: a forward view
  CHECK(ex.map<int>("square", evens) == squares);
  CHECK(ex.map(square, std::views::iota(0, 10) | std::views::filter(is_even)) == squares);
  std::vector<int> values;
  for (const auto& o : ex.map_outcomes(square, evens, {.chunksize = 3})) values.push_back(o.value());
  CHECK(values == squares);
  CHECK(ex.map_outcomes<int>("square", evens).size() == 5);
  auto from_three = std::views::iota(0, 6) | std::views::drop_while([](int i) { return i < 3; });
  CHECK(ex.map(square, from_three) == std::vector<int>{9, 16, 25});
  std::istringstream text("1 2 3");
  auto numbers = std::views::istream<int>(text);  // an input view: read once
  CHECK(ex.map(square, numbers) == std::vector<int>{1, 4, 9});
  std::vector<std::tuple<>> empties(3);
  ex.map(noop, empties | std::views::filter([](const auto&) { return true; }));
  // Containers are read where they are, not moved from.
  std::vector<int> mine{1, 2};
  CHECK(ex.map(square, mine) == std::vector<int>{1, 4});
  CHECK(mine == std::vector<int>{1, 2});
  const std::vector<int> fixed{3};
  CHECK(ex.map(square, fixed) == std::vector<int>{9});
}

TEST_CASE("Map.tuples_for_several_parameters") {
  ferry::Executor ex(support::options(2));
  std::vector<std::pair<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}};
  CHECK(ex.map(add, pairs) == std::vector<int>{3, 7, 11});
  std::vector<std::tuple<int, int>> tuples = {{10, 1}, {20, 2}};
  CHECK(ex.map(add, tuples, {.chunksize = 1}) == std::vector<int>{11, 22});
}

TEST_CASE("Map.by_name") {
  ferry::Executor ex(support::options(2));
  CHECK(ex.map<int>("square", std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
  CHECK(ex.map<int>("add", std::vector<std::pair<int, int>>{{1, 1}, {2, 2}}) == std::vector<int>{2, 4});
}

TEST_CASE("Map.void_task_waits_for_all") {
  ferry::Executor ex(support::options(2));
  std::vector<std::tuple<>> empties(50);
  // noop takes no argument: a range of empty tuples calls it once per element.
  static_assert(std::is_void_v<decltype(ex.map(noop, empties))>);
  ex.map(noop, empties, {.chunksize = 8});
  CHECK(ex.stats().completed == 7);  // 50 inputs in chunks of 8, every one back before map returned
}

TEST_CASE("Map.first_error_in_input_order_is_rethrown") {
  ferry::Executor ex(support::options(2));
  std::vector<int> inputs = {4, 9, -1, 16, -2, 25};
  for (std::size_t chunk : {1, 2, 6}) {
    CAPTURE(chunk);
    try {
      ex.map(checked_isqrt, inputs, {.chunksize = chunk});
      FAIL("map did not throw");
    } catch (const ferry::TaskError& e) {
      CHECK(e.remote_type() == "std::domain_error");
      CHECK(e.remote_message() == "negative: -1");
    }
    // The executor keeps working.
    CHECK(ex.map(checked_isqrt, std::vector<int>{4, 9}) == std::vector<int>{2, 3});
  }
}

TEST_CASE("Map.a_chunk_travels_as_one_call") {
  ferry::Executor ex(support::options(2));
  std::vector<std::tuple<>> calls(64);
  auto pids = ex.map(worker_pid, calls, {.chunksize = 64});
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 1);
}
