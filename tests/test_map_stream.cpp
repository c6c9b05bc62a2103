// SPDX-License-Identifier: BSD-3-Clause
// imap, imap_unordered, map_outcomes, MapOptions (timeout, progress, stop, max_in_flight), constant
// extra arguments, and the input index every map error names.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

std::vector<int> iota_vector(int n, int from = 0) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("Imap.returns_results_in_input_order") {
  ferry::Executor ex(support::options(2));
  auto inputs = iota_vector(500, -250);
  std::vector<int> expected;
  for (int x : inputs) expected.push_back(x * x);
  for (std::size_t chunk : {1, 7, 1000}) {
    CAPTURE(chunk);
    std::vector<int> got;
    for (int r : ex.imap(square, inputs, {.chunksize = chunk})) got.push_back(r);
    CHECK(got == expected);
  }
  static_assert(std::ranges::input_range<decltype(ex.imap(square, inputs))>);
}

TEST_CASE("Imap.pulls_inputs_lazily_from_an_unbounded_range") {
  ferry::Executor ex(support::options(2));
  std::atomic<int> pulled{0};
  auto inputs = std::views::iota(0) | std::views::transform([&](int x) {
                  ++pulled;
                  return x;
                });
  int seen = 0;
  for (int r : ex.imap(square, inputs, {.chunksize = 10, .max_in_flight = 3})) {
    CHECK(r == seen * seen);
    if (++seen == 100) break;
  }
  CHECK(seen == 100);
  // At most max_in_flight chunks beyond what was consumed were ever pulled.
  CHECK(pulled.load() <= 100 + 3 * 10 + 10);
}

TEST_CASE("Imap.by_name") {
  ferry::Executor ex(support::options(2));
  std::vector<int> got;
  for (int r : ex.imap<int>("square", std::vector<int>{1, 2, 3})) got.push_back(r);
  CHECK(got == std::vector<int>{1, 4, 9});
}

TEST_CASE("Imap.the_first_result_comes_after_one_input_not_a_chunk") {
  // imap's default chunk was map's (about four per worker): over 64 inputs on 2 workers, the
  // first result waited for inputs 0 to 7 together. Each input here but the first is held by a
  // file of its own: the first result comes while they all are (Python's imap sends chunks of
  // one). Later chunks grow toward map's size: 1000 short inputs still travel in few calls.
  ferry::Executor ex(support::options(2));
  support::TempDir dir;  // removed (the inputs released) before the executor waits for its workers
  std::vector<std::pair<int, std::string>> inputs;
  for (int i = 0; i < 64; ++i) {
    const auto hold = dir.path / ("hold-" + std::to_string(i));
    if (i > 0) std::ofstream(hold).put('x');
    inputs.emplace_back(i, hold.string());
  }
  // Without the fix, the first increment would wait for input 1's release: it times out instead.
  auto stream = ex.imap(value_after_hold, inputs, {.timeout = 15s});
  auto it = stream.begin();
  REQUIRE(it != stream.end());
  CHECK(*it == 0);
  CHECK(ex.stats().completed == 1);  // the chunk of input 0 alone; the rest is held
  for (int i = 1; i < 64; ++i) std::filesystem::remove(inputs[static_cast<std::size_t>(i)].second);
  std::vector<int> got{*it};
  for (++it; it != stream.end(); ++it) got.push_back(*it);
  CHECK(got == iota_vector(64));

  const auto before = ex.stats().completed;
  const auto many = iota_vector(1000);
  std::vector<int> squares;
  for (int r : ex.imap(square, many)) squares.push_back(r);
  REQUIRE(squares.size() == 1000);
  CHECK(squares[999] == 999 * 999);
  // map's rule gives 8 chunks of 125; the ramp's rounds of 1, 4, 16 and 64 inputs add about one
  // chunk per worker each.
  CHECK(ex.stats().completed - before <= 8 + 2 * 4);
}

TEST_CASE("ImapUnordered.yields_every_input_once_with_its_index") {
  ferry::Executor ex(support::options(2));
  auto inputs = iota_vector(300);
  std::set<std::size_t> indices;
  for (ferry::Indexed<int> r : ex.imap_unordered(square, inputs, {.chunksize = 7})) {
    CHECK(r.value == static_cast<int>(r.index * r.index));
    CHECK(indices.insert(r.index).second);
  }
  CHECK(indices.size() == 300);
  CHECK(*indices.rbegin() == 299);
  std::size_t n = 0;
  for (auto r : ex.imap_unordered<int>("square", std::vector<int>{5, 6})) n += static_cast<std::size_t>(r.value);
  CHECK(n == 61);
}

TEST_CASE("Imap.an_error_ends_the_stream_at_its_input") {
  ferry::Executor ex(support::options(2));
  std::vector<int> inputs = {4, 9, -1, 16};
  std::vector<int> got;
  try {
    for (int r : ex.imap(checked_isqrt, inputs, {.chunksize = 1})) got.push_back(r);
    FAIL("imap did not throw");
  } catch (const ferry::TaskError& e) {
    REQUIRE(e.input_index().has_value());
    CHECK(*e.input_index() == 2);
    CHECK(contains(e.what(), "(input 2)"));
  }
  CHECK(got == std::vector<int>{2, 3});
}

TEST_CASE("Map.errors_name_their_input_index") {
  ferry::Executor ex(support::options(2));
  auto inputs = iota_vector(2000);
  inputs[1500] = -7;
  try {
    ex.map(checked_isqrt, inputs, {.chunksize = 1000});
    FAIL("map did not throw");
  } catch (const ferry::TaskError& e) {
    REQUIRE(e.input_index().has_value());
    CHECK(*e.input_index() == 1500);
    CHECK(contains(e.what(), "(input 1500)"));
    CHECK_FALSE(contains(e.what(), "map chunk"));
  }
  // A plain submission names no input.
  try {
    ex.submit(checked_isqrt, -1).get();
    FAIL("no error");
  } catch (const ferry::TaskError& e) {
    CHECK_FALSE(e.input_index().has_value());
  }
}

TEST_CASE("MapOutcomes.keeps_going_and_reports_each_input") {
  ferry::Executor ex(support::options(2));
  std::vector<int> inputs = {4, -1, 9, 16, -2, 25, 36, -3, 49};
  for (std::size_t chunk : {1, 4, 100}) {
    CAPTURE(chunk);
    auto out = ex.map_outcomes(checked_isqrt, inputs, {.chunksize = chunk});
    REQUIRE(out.size() == inputs.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
      CAPTURE(i);
      CHECK(out[i].index == i);
      if (inputs[i] < 0) {
        REQUIRE_FALSE(out[i].ok());
        try {
          std::rethrow_exception(out[i].error());
        } catch (const ferry::TaskError& e) {
          CHECK(e.remote_message() == "negative: " + std::to_string(inputs[i]));
          CHECK(e.input_index() == i);
        }
        CHECK_THROWS_AS(out[i].value(), ferry::TaskError);
      } else {
        REQUIRE(out[i].ok());
        CHECK(out[i].value() * out[i].value() == inputs[i]);
      }
    }
  }
}

TEST_CASE("MapOutcomes.an_input_that_cannot_be_encoded_leaves_the_others_their_own_values") {
  // A chunk's values are its inputs first, first + 1, ...: an input that could not be encoded was
  // left out of its chunk, and the inputs after it in that chunk took the indices before theirs
  // (input 13 got 14's value, 16 had no outcome, 13 had two). One at a chunk's start shifted its
  // chunk the same way.
  ferry::Executor ex(support::options(2));
  using crash::Action, crash::Stage;
  std::vector<crash::Faulty> inputs;
  for (int i = 0; i < 20; ++i)
    inputs.emplace_back(Stage::host_encode, i == 8 || i == 13 ? Action::throw_error : Action::none, i);
  for (std::size_t chunksize : {1, 3, 4, 20}) {
    CAPTURE(chunksize);
    auto out = ex.map_outcomes(take_faulty, inputs, {.chunksize = chunksize});
    REQUIRE(out.size() == 20);
    for (std::size_t i = 0; i < out.size(); ++i) {
      CAPTURE(i);
      CHECK(out[i].index == i);
      if (i == 8 || i == 13) {
        CHECK_THROWS_AS(out[i].value(), ferry::SerializationError);
      } else {
        CHECK(out[i].ok());
        if (out[i].ok()) CHECK(out[i].value() == static_cast<int>(i));
      }
    }
  }
}

TEST_CASE("MapOutcomes.a_worker_death_fails_only_its_input") {
  ferry::Executor ex(support::options(2));
  auto inputs = iota_vector(20);
  // segfault_if(x, 13): input 13 kills its worker; the rest of its chunk runs again.
  auto out = ex.map_outcomes(segfault_if, inputs, {.chunksize = 5}, 13);
  REQUIRE(out.size() == 20);
  for (std::size_t i = 0; i < out.size(); ++i) {
    CAPTURE(i);
    if (i == 13) {
      REQUIRE_FALSE(out[i].ok());
      try {
        std::rethrow_exception(out[i].error());
      } catch (const ferry::TerminatedWorkerError& e) {
        CHECK(e.input_index() == 13);
      }
    } else {
      REQUIRE(out[i].ok());
      CHECK(out[i].value() == static_cast<int>(i));
    }
  }
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("Map.constant_extra_arguments_follow_each_input") {
  ferry::Executor ex(support::options(2));
  CHECK(ex.map(add, std::vector<int>{1, 2, 3}, {.chunksize = 2}, 10) == std::vector<int>{11, 12, 13});
  CHECK(ex.map<int>("add", std::vector<int>{1, 2}, {}, 100) == std::vector<int>{101, 102});
  auto scaled = ex.map(scale, std::vector<math::Vec2>{{1, 2}, {3, 4}}, {}, 2.0);
  CHECK(scaled[1].x == 6.0);
  CHECK(scaled[1].y == 8.0);
  std::vector<int> got;
  for (int r : ex.imap(add, std::vector<int>{5, 6}, {}, -5)) got.push_back(r);
  CHECK(got == std::vector<int>{0, 1});
  auto out = ex.map_outcomes(add, std::vector<int>{1}, {}, 1);
  CHECK(out.at(0).value() == 2);
}

TEST_CASE("MapOptions.timeout_cancels_the_rest_with_TimeoutError") {
  ferry::Executor ex(support::options(2));
  std::vector<std::pair<int, int>> slow;
  for (int i = 0; i < 40; ++i) slow.emplace_back(i, 100);
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(ex.map(slow_identity, slow, {.chunksize = 1, .timeout = 300ms}), ferry::TimeoutError);
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // not the 2 s the map would take
  // The rest was cancelled, not run (a map that ran everything completes 40).
  const auto stats = ex.stats();
  CHECK(stats.completed < 20);
  CHECK(stats.failed_by_type.count("CancelledError") == 1);
  CHECK(ex.submit(square, 4).get() == 16);
}

TEST_CASE("MapOptions.a_timeout_names_its_duration_and_what_became_of_the_chunks_out") {
  // It read "within its timeout of 0.300000 s ... the rest was cancelled" while the chunks running
  // (no kill_running) went on: the duration is spelt as every message spells one (§6), and each
  // chunk out is named for what happened to it.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");  // a chunk on a worker is the running one
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(30s));
  std::vector<std::pair<int, int>> slow;
  for (int i = 0; i < 40; ++i) slow.emplace_back(i, 200);  // at 300 ms, the second pair runs
  auto what = [&](bool kill_running) {
    try {
      ex.map(slow_identity, slow, {.chunksize = 1, .timeout = 300ms, .kill_running = kill_running});
    } catch (const ferry::TimeoutError& e) {
      return std::string(e.what());
    }
    return std::string("no TimeoutError");
  };
  SUBCASE("running chunks left to finish") {
    const std::string w = what(false);
    CAPTURE(w);
    CHECK(w.find("within its timeout of 300 ms: ") != std::string::npos);
    CHECK(w.find(" of 40 inputs were done; of the chunks still out, ") != std::string::npos);
    CHECK(w.find("not yet started and cancelled") != std::string::npos);
    CHECK(w.find("already on a worker and left to finish (MapOptions::kill_running stops running chunks)") !=
          std::string::npos);
    CHECK(w.find("stopped") == std::string::npos);
    CHECK(w.find("the rest was cancelled") == std::string::npos);
  }
  SUBCASE("running chunks stopped with kill_running") {
    const std::string w = what(true);
    CAPTURE(w);
    CHECK(w.find("within its timeout of 300 ms: ") != std::string::npos);
    CHECK(w.find("not yet started and cancelled") != std::string::npos);
    CHECK(w.find("running and stopped (") != std::string::npos);
  }
  CHECK(ex.submit(square, 4).get() == 16);
}

TEST_CASE("MapOptions.kill_running_stops_the_running_chunks_of_a_failed_map") {
  // After the first failure map throws without waiting for what runs
  // (Map.a_failure_is_thrown_while_other_chunks_still_run); with kill_running, what runs is
  // stopped too (its worker is killed and replaced), not left to run its 20 s.
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(30s));
  CHECK_THROWS_AS(ex.map(fail_or_busy, std::vector<int>{-1, 20'000}, {.chunksize = 1, .kill_running = true}),
                  ferry::TaskError);
  CHECK(support::wait_until([&] { return ex.stats().running == 0; }, 10000ms));
  CHECK(ex.submit(square, 4).get() == 16);
}

TEST_CASE("Map.a_failure_is_thrown_while_other_chunks_still_run") {
  // concurrent.futures' Executor.map raises a failed input's error when the iteration reaches it
  // and cancels the futures not started, without waiting for those running. map waited for its
  // running chunks before it threw: here for the held inputs, until they were released. It
  // throws at once now; what runs ends in the background and its results are dropped. From a
  // then() callback on the manager thread as well.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");  // a chunk on a worker is the running one
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(30s));
  support::HeldFile hold;
  // Input 0 fails at once; the others wait while the file exists.
  const std::vector<int> inputs{-1, 1, 2, 3, 4, 5, 6, 7};
  bool held = false;  // whether the inputs were still held when map threw
  auto map_with_a_failure = [&] {
    std::string what = "no error";
    try {
      ex.map(value_after_hold, inputs, {.chunksize = 1}, hold.path.string());
    } catch (const ferry::TaskError& e) {
      what = e.what();
    }
    held = std::filesystem::exists(hold.path);
    return what;
  };
  {
    // A map that waits for the held inputs is let go at 10 s (the test fails, it does not hang).
    std::jthread let_go([&](std::stop_token stop) {
      std::mutex mu;
      std::condition_variable_any cv;
      std::unique_lock lock(mu);
      cv.wait_for(lock, stop, 10s, [] { return false; });
      if (!stop.stop_requested()) hold.release();
    });
    std::string what;
    SUBCASE("in the calling thread") { what = map_with_a_failure(); }
    SUBCASE("in a then() callback on the manager thread") {
      auto g = ex.submit(square, 2).then([&](int) { return map_with_a_failure(); });
      REQUIRE(g.wait_for(30s));
      what = g.get();
    }
    CAPTURE(what);
    CHECK(what.find("value_after_hold: failing at once") != std::string::npos);
    CHECK(what.find("(input 0)") != std::string::npos);
    CHECK(held);
    CHECK(ex.stats().running >= 1);  // the held inputs run on
  }
  hold.release();
  REQUIRE(support::wait_until([&] { return ex.stats().running == 0 && ex.stats().queued == 0; }, 30000ms));
  const auto stats = ex.stats();
  CHECK(stats.failed_by_type.count("CancelledError") == 1);  // those not started were cancelled
  CHECK(stats.workers_alive == 2);
  CHECK(ex.map(value_after_hold, std::vector<int>{1, 2}, {}, hold.path.string()) == std::vector<int>{1, 2});
}

TEST_CASE("Imap.a_result_that_cannot_be_decoded_ends_the_stream") {
  // The stream went on after a result's load() threw: past the chunk's values (an out-of-bounds
  // read) and skipping what followed.
  ferry::Executor ex(support::options(2));
  using crash::Action, crash::Stage;
  std::vector<std::pair<int, int>> inputs(8, {static_cast<int>(Stage::host_decode), static_cast<int>(Action::none)});
  inputs[3].second = static_cast<int>(Action::throw_error);
  for (int unordered = 0; unordered < 2; ++unordered) {
    CAPTURE(unordered);
    std::size_t before_error = 0, after_error = 0;
    bool failed = false;
    auto count = [&](auto&& stream) {
      for (auto it = stream.begin(); it != stream.end();) {
        (failed ? after_error : before_error) += 1;
        try {
          ++it;
        } catch (const ferry::SerializationError& e) {
          failed = true;
          CHECK(e.input_index() == 3);
        }
      }
    };
    if (unordered) {
      count(ex.imap_unordered(make_faulty, inputs, {.chunksize = 1}));
    } else {
      count(ex.imap(make_faulty, inputs, {.chunksize = 1}));
    }
    CHECK(failed);
    CHECK(after_error == 0);
    if (!unordered) CHECK(before_error == 3);
  }
}

TEST_CASE("Map.a_result_that_cannot_be_decoded_names_its_input") {
  // A result's load() that throws in the host names the input whose value it was reading.
  ferry::Executor ex(support::options(2));
  using crash::Action, crash::Stage;
  std::vector<std::pair<int, int>> inputs(12, {static_cast<int>(Stage::host_decode), static_cast<int>(Action::none)});
  inputs[6].second = static_cast<int>(Action::throw_error);
  try {
    ex.map(make_faulty, inputs, {.chunksize = 4});
    FAIL("map did not throw");
  } catch (const ferry::SerializationError& e) {
    CHECK(e.stage() == ferry::SerializationStage::decode_result);
    CHECK(e.input_index() == 6);
    CHECK(e.input_count() == 1);
    CHECK(contains(e.what(), "(input 6)"));
  }
}

TEST_CASE("MapOutcomes.a_result_that_cannot_be_decoded_fails_its_input_only") {
  // An undecodable value was thrown out of map_outcomes, which is to give every input its outcome.
  ferry::Executor ex(support::options(2));
  using crash::Action, crash::Stage;
  std::vector<std::pair<int, int>> inputs(12, {static_cast<int>(Stage::host_decode), static_cast<int>(Action::none)});
  inputs[6].second = static_cast<int>(Action::throw_error);
  inputs[11].second = static_cast<int>(Action::throw_int);
  for (std::size_t chunk : {1, 4}) {
    CAPTURE(chunk);
    const std::size_t calls_before = ex.stats().submitted;
    auto out = ex.map_outcomes(make_faulty, inputs, {.chunksize = chunk});
    REQUIRE(out.size() == inputs.size());
    // Chunks of 4: inputs 4-7, with 6 undecodable, keep 4 and 5 and run 7 again; 8-11 keep 8-10.
    // Every input before an undecodable one ran again (side effects twice): 6 calls.
    CHECK(ex.stats().submitted - calls_before == (chunk == 1 ? 12 : 4));
    for (std::size_t i = 0; i < out.size(); ++i) {
      CAPTURE(i);
      CHECK(out[i].index == i);
      if (i == 6 || i == 11) {
        REQUIRE_FALSE(out[i].ok());
        try {
          std::rethrow_exception(out[i].error());
        } catch (const ferry::SerializationError& e) {
          CHECK(e.input_index() == i);
        }
      } else {
        REQUIRE(out[i].ok());
        CHECK(out[i].value().stage == Stage::host_decode);
      }
    }
  }
}

TEST_CASE("MapOutcomes.what_on_progress_throws_ends_it") {
  // A throw from on_progress was taken for the chunk's decoding error: its inputs were recorded
  // a second time, as failed, and the map went on.
  ferry::Executor ex(support::options(2));
  bool thrown = false;
  auto once = [&](std::size_t, std::size_t) {
    if (!thrown) {
      thrown = true;
      throw std::runtime_error("enough");
    }
  };
  CHECK_THROWS_WITH_AS(ex.map_outcomes(square, iota_vector(40), {.chunksize = 4, .on_progress = once}), "enough",
                       std::runtime_error);
}

TEST_CASE("Imap.an_input_that_cannot_be_encoded_fails_after_the_inputs_before_it") {
  // Its encoding error was thrown as soon as it was met, eight inputs ahead of the stream: the
  // results of the inputs before it, sent and run, were lost.
  ferry::Executor ex(support::options(2));
  using crash::Action, crash::Stage;
  std::vector<crash::Faulty> inputs;
  for (int i = 0; i < 20; ++i) inputs.emplace_back(Stage::host_encode, Action::none, i);
  inputs[13].action = Action::throw_error;
  std::vector<int> got;
  try {
    for (int r : ex.imap(take_faulty, inputs, {.chunksize = 1, .max_in_flight = 8})) got.push_back(r);
    FAIL("imap did not throw");
  } catch (const ferry::SerializationError&) {
  }
  CHECK(got == iota_vector(13));
}

namespace {
struct BadRecord : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// 0..99 through a transform whose function throws BadRecord at `bad`: the input range's own error.
auto throwing_at(int bad) {
  return std::views::iota(0, 100) | std::views::transform([bad](int i) {
           if (i == bad) throw BadRecord("bad record " + std::to_string(i));
           return i;
         });
}

std::vector<int> squares_below(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i * i);
  return v;
}
}  // namespace

TEST_CASE("Map.an_error_of_the_input_range_itself_propagates_unchanged") {
  // Reading an input (its iterator's dereference, here a transform's function) was inside the
  // encoder's try: the range's own exception became a SerializationError "encoding the arguments
  // in the host" (one thrown by the increment, a filter's predicate, passed unchanged). As
  // Python's map raises what the iterable raised, it propagates as it was thrown, from map, imap
  // and map_outcomes alike, once the chunks before it are back (the inputs read before it in its
  // chunk are sent and run: imap yields them first), and nothing is left running.
  ferry::Executor ex(support::options(2));
  auto nothing_left = [&] {
    const auto s = ex.stats();
    return s.queued == 0 && s.running == 0;
  };
  SUBCASE("map") {
    for (int bad : {0, 50, 55}) {
      CAPTURE(bad);
      CHECK_THROWS_WITH_AS(ex.map(square, throwing_at(bad), {.chunksize = 10}),
                           ("bad record " + std::to_string(bad)).c_str(), BadRecord);
      CHECK(nothing_left());
    }
  }
  SUBCASE("imap: the results before it, then it") {
    std::vector<int> got;
    CHECK_THROWS_WITH_AS(
        [&] {
          for (int r : ex.imap(square, throwing_at(55), {.chunksize = 10})) got.push_back(r);
        }(),
        "bad record 55", BadRecord);
    CHECK(got == squares_below(55));  // 50 to 54 too: read before it, in its chunk
    CHECK(nothing_left());
  }
  SUBCASE("imap_unordered") {
    std::set<std::size_t> indices;
    CHECK_THROWS_AS(
        [&] {
          for (auto r : ex.imap_unordered(square, throwing_at(55), {.chunksize = 10})) indices.insert(r.index);
        }(),
        BadRecord);
    CHECK(indices.size() == 55);
    CHECK(nothing_left());
  }
  SUBCASE("map_outcomes: ends the call, as Python's map") {
    // An input that cannot even be produced has no outcome: the call ends with its error.
    CHECK_THROWS_WITH_AS(ex.map_outcomes(square, throwing_at(55), {.chunksize = 10}), "bad record 55", BadRecord);
    CHECK(nothing_left());
  }
  SUBCASE("from the iterator's increment: a filter's predicate") {
    auto filtered = std::views::iota(0, 100) | std::views::filter([](int i) {
                      if (i == 55) throw BadRecord("bad record 55");
                      return true;
                    });
    CHECK_THROWS_WITH_AS(ex.map(square, filtered, {.chunksize = 10}), "bad record 55", BadRecord);
    CHECK_THROWS_WITH_AS(ex.map_outcomes(square, filtered, {.chunksize = 10}), "bad record 55", BadRecord);
  }
  SUBCASE("what the encoder throws is still a SerializationError") {
    using crash::Action, crash::Stage;
    auto faulty = std::views::iota(0, 20) | std::views::transform([](int i) {
                    return crash::Faulty(Stage::host_encode, i == 13 ? Action::throw_error : Action::none, i);
                  });
    CHECK_THROWS_AS(ex.map(take_faulty, faulty, {.chunksize = 4}), ferry::SerializationError);
    auto out = ex.map_outcomes(take_faulty, faulty, {.chunksize = 4});
    CHECK(std::any_of(out.begin(), out.end(), [](const auto& o) {
      return o.index == 13 && o.error() && [&] {
        try {
          std::rethrow_exception(o.error());
        } catch (const ferry::SerializationError&) {
          return true;
        } catch (...) {
          return false;
        }
      }();
    }));
  }
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("MapOptions.on_progress_reports_done_and_total") {
  ferry::Executor ex(support::options(2));
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  ex.map(square, iota_vector(100), {.chunksize = 10, .on_progress = [&](std::size_t done, std::size_t total) {
                                      calls.emplace_back(done, total);
                                    }});
  REQUIRE(calls.size() == 10);
  CHECK(calls.back() == std::pair<std::size_t, std::size_t>{100, 100});
  // An unsized range: total 0.
  std::size_t last_total = 1;
  for (int r : ex.imap(square, std::views::iota(0, 20) | std::views::filter([](int) { return true; }),
                       {.on_progress = [&](std::size_t, std::size_t total) { last_total = total; }}))
    (void)r;
  CHECK(last_total == 0);
}

TEST_CASE("MapOptions.stop_ends_an_imap_and_makes_map_throw") {
  ferry::Executor ex(support::options(2));
  std::stop_source source;
  int seen = 0;
  auto stream = ex.imap(square, std::views::iota(0), {.chunksize = 1, .stop = source.get_token()});
  for (int r : stream) {
    (void)r;
    if (++seen == 5) source.request_stop();
    REQUIRE(seen < 1000);
  }
  CHECK(stream.stopped());
  std::stop_source second;
  CHECK_THROWS_AS(ex.map(slow_identity, std::vector<std::pair<int, int>>(20, {1, 50}),
                         {.chunksize = 1,
                          .on_progress = [&](std::size_t, std::size_t) { second.request_stop(); },
                          .stop = second.get_token()}),
                  ferry::CancelledError);
  CHECK(ex.submit(square, 5).get() == 25);
}

TEST_CASE("MapOutcomes.after_a_stop_the_rest_is_cancelled") {
  ferry::Executor ex(support::options(2));
  std::stop_source source;
  auto out = ex.map_outcomes(slow_identity, std::vector<std::pair<int, int>>(30, {1, 30}),
                             {.chunksize = 1,
                              .on_progress = [&](std::size_t done, std::size_t) {
                                if (done == 3) source.request_stop();
                              },
                              .stop = source.get_token(),
                              .max_in_flight = 4});
  REQUIRE(out.size() == 30);
  std::size_t ok = 0, cancelled = 0;
  for (auto& o : out) {
    if (o.ok()) {
      ++ok;
      continue;
    }
    try {
      std::rethrow_exception(o.error());
    } catch (const ferry::CancelledError&) {
      ++cancelled;
    }
  }
  CHECK(ok >= 3);
  CHECK(ok + cancelled == 30);
  CHECK(cancelled > 0);
}

TEST_CASE("MapOutcomes.a_failure_after_a_stop_cancels_the_rest_of_its_chunk") {
  // One worker, chunks of two. The first chunk's progress requests the stop, then opens the gate:
  // input 2 throws only after the stop. Input 3, behind it in the same chunk, never ran; it is
  // not sent again (as a failed chunk's other inputs are), it is cancelled.
  ferry::Executor ex(support::options(1));
  support::TempDir dir;
  std::stop_source source;
  auto out = ex.map_outcomes(gated_throw, std::vector<int>{-1, -2, 5, 7},
                             {.chunksize = 2,
                              .on_progress =
                                  [&](std::size_t done, std::size_t) {
                                    if (done != 2) return;
                                    source.request_stop();
                                    std::ofstream(dir.path / "go").flush();
                                  },
                              .stop = source.get_token()},
                             dir.path.string());
  REQUIRE(out.size() == 4);
  CHECK(out[0].value() == 1);
  CHECK(out[1].value() == 2);
  REQUIRE_FALSE(out[2].ok());
  try {
    std::rethrow_exception(out[2].error());
  } catch (const ferry::TaskError& e) {
    CHECK(e.input_index() == 2);
    CHECK(std::string(e.what()).find("gated 5") != std::string::npos);
  }
  REQUIRE_FALSE(out[3].ok());
  CHECK_THROWS_AS(std::rethrow_exception(out[3].error()), ferry::CancelledError);
  std::ifstream ran(dir.path / "ran");
  CHECK(std::string(std::istreambuf_iterator<char>(ran), {}) == "5\n");  // 7 never ran
}

TEST_CASE("MapRun.a_source_fed_from_another_thread_wakes_it") {
  // The engine as `ferry map` uses it: the source answers `later` until a feeding thread has
  // pushed more, and wakes the engine; both orders deliver every input once.
  ferry::Executor ex(support::options(2));
  for (bool ordered : {true, false}) {
    CAPTURE(ordered);
    std::mutex mu;
    std::deque<int> fed;
    bool ended = false;
    ferry::MapOptions options;
    ferry::detail::MapRun<int> run(
        options, 4, ordered, 0,
        [&](ferry::detail::MapChunk<int>& c) {
          std::lock_guard lock(mu);
          if (fed.empty()) return ended ? ferry::detail::Produced::end : ferry::detail::Produced::later;
          c.first = static_cast<std::size_t>(fed.front());
          c.count = 1;
          fed.pop_front();
          return ferry::detail::Produced::chunk;
        },
        [&](ferry::detail::MapChunk<int>& c) { c.future = ex.submit(square, static_cast<int>(c.first)); });
    run.set_wakeable();
    std::thread feeder([&] {
      for (int i = 0; i < 50; ++i) {
        {
          std::lock_guard lock(mu);
          fed.push_back(i);
        }
        run.wake();
      }
      {
        std::lock_guard lock(mu);
        ended = true;
      }
      run.wake();
    });
    std::vector<std::size_t> seen;
    while (auto c = run.next()) {
      CHECK(c->future.get() == static_cast<int>(c->first * c->first));
      seen.push_back(c->first);
    }
    feeder.join();
    REQUIRE(seen.size() == 50);
    if (ordered) CHECK(std::is_sorted(seen.begin(), seen.end()));
    std::sort(seen.begin(), seen.end());
    CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
  }
}

TEST_CASE("MapOutcomes.each_chunk_ended_by_a_shutdown_names_its_own_inputs") {
  // shutdown({.kill_workers}) ends every chunk with one CancelledError: naming the inputs on that
  // one object gave every chunk the first chunk's ("(inputs 44 to 47)" on input 32's outcome),
  // and an imap resumed from input_index() skipped inputs. Each chunk's error names its own.
  ferry::Executor ex(support::options(1));
  std::vector<ferry::Outcome<int>> out;
  std::thread mapping([&] { out = ex.map_outcomes(spin_forever, iota_vector(24), {.chunksize = 4}); });
  REQUIRE(support::wait_until([&] { return ex.stats().running == 1; }));
  ex.shutdown({.wait = false, .kill_workers = true});
  mapping.join();
  REQUIRE(out.size() == 24);
  for (std::size_t i = 0; i < out.size(); ++i) {
    CAPTURE(i);
    REQUIRE_FALSE(out[i].ok());
    try {
      std::rethrow_exception(out[i].error());
    } catch (const ferry::CancelledError& e) {
      CHECK(e.input_index() == i / 4 * 4);
      CHECK(e.input_count() == 4);
      const std::string own = " (inputs " + std::to_string(i / 4 * 4) + " to " + std::to_string(i / 4 * 4 + 3) + ")";
      CHECK(std::string(e.what()).ends_with(own));
    }
  }
}

TEST_CASE("Errors.a_broken_pools_error_names_no_input_after_a_map") {
  // The error of a pool whose initializer failed ends every queued call, and submit throws it
  // afterwards: a map chunk's inputs written on it showed on every later plain submission.
  auto o = support::options(1);
  o.initializer = "init_throws";
  ferry::Executor ex(o);
  auto out = ex.map_outcomes(square, iota_vector(8), {.chunksize = 4});
  REQUIRE(out.size() == 8);
  for (std::size_t i = 0; i < out.size(); ++i) {
    CAPTURE(i);
    REQUIRE_FALSE(out[i].ok());
    try {
      std::rethrow_exception(out[i].error());
    } catch (const ferry::BrokenProcessPool& e) {
      REQUIRE(e.input_index());
      CHECK(*e.input_index() <= i);
      CHECK(i < *e.input_index() + e.input_count());
      // Its cause, the initializer's own error, is still nested in the copy.
      CHECK_THROWS_AS(std::rethrow_if_nested(e), ferry::TaskError);
    }
  }
  REQUIRE(ex.is_broken());
  try {
    ex.submit(square, 3).get();
    FAIL("a broken pool ran a call");
  } catch (const ferry::BrokenProcessPool& e) {
    CHECK_FALSE(e.input_index());
    CHECK(std::string(e.what()).find("(input") == std::string::npos);
  }
}
