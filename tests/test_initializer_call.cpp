// SPDX-License-Identifier: BSD-3-Clause
// ExecutorOptions::initializer = ferry::Call(fn or name, args...): worker-local state set up once.
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "model.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {

/// Whatever encodes it throws: a Call refuses it at once.
struct Unencodable {
  int x = 0;
  template <class Archive>
  void serialize(Archive&) {
    throw std::runtime_error("cannot encode this");
  }
};

/// Asks every worker of `ex` (warmed up) for its model, until each has answered.
std::map<int, model::Description> models_of(ferry::Executor& ex, std::size_t workers) {
  std::map<int, model::Description> seen;
  support::wait_until([&] {
    std::vector<ferry::Future<model::Description>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(describe_model));
    for (auto& f : fs) {
      auto d = f.get();
      seen[d.pid] = d;
    }
    return seen.size() >= workers;
  });
  return seen;
}

/// Both workers of `ex` loaded model `name` of `size` weights, once each (however many tasks they
/// ran).
void check_each_worker_loaded(ferry::Executor& ex, const std::string& name, std::size_t size) {
  REQUIRE(ex.warm_up(10s));
  auto models = models_of(ex, 2);
  REQUIRE(models.size() == 2);
  for (auto& [pid, d] : models) {
    CAPTURE(pid);
    CHECK(d.name == name);
    CHECK(d.size == size);
    CHECK(d.loads == 1);
  }
}

/// A task submitted to `ex`, whose initializer fails, ends with BrokenProcessPool saying `why`,
/// and the pool is broken.
void check_broken_by_its_initializer(ferry::Executor& ex, const std::string& why) {
  try {
    auto f = ex.submit(predict, 1.0);
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains(why.c_str()), ferry::BrokenProcessPool);
  } catch (const ferry::BrokenProcessPool& e) {
    // The initializer may have failed before this submit: submit itself refuses then.
    CHECK(std::string(e.what()).find(why) != std::string::npos);
  }
  CHECK(support::wait_until([&] { return ex.is_broken(); }));
}

}  // namespace

TEST_CASE("Initializer.call_by_function_runs_once_per_worker_with_its_arguments") {
  auto o = support::options(2);
  o.initializer = ferry::Call(load_model, "linear", 3);
  ferry::Executor ex(o);
  check_each_worker_loaded(ex, "linear", 3);
  // The tasks use the worker-local model: 1 + x/2 + x²/3 at x = 3.
  CHECK(ex.submit(predict, 3.0).get() == doctest::Approx(5.5));
}

TEST_CASE("Initializer.call_by_name_with_arguments") {
  auto o = support::options(1);
  o.initializer = ferry::Call("load_model", "constant", 1);  // the C string travels as std::string
  ferry::Executor ex(o);
  CHECK(ex.submit(predict, 10.0).get() == doctest::Approx(1.0));
  auto d = ex.submit(describe_model).get();
  CHECK(d.name == "constant");
  CHECK(d.loads == 1);
}

TEST_CASE("Initializer.call_by_task_ref_with_arguments") {
  auto o = support::options(1);
  o.initializer = ferry::Call(ferry::TaskRef{.library = FERRY_TEST_MODEL_PLUGIN, .name = "load_model"},
                              std::string("by-ref"), 2);
  ferry::Executor ex(o);
  CHECK(ex.submit(describe_model).get().name == "by-ref");
}

TEST_CASE("Initializer.a_respawned_worker_runs_it_again") {
  auto o = support::options(1);
  o.initializer = ferry::Call(load_model, "linear", 2);
  ferry::Executor ex(o);
  auto first = ex.submit(describe_model).get();
  CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
  auto second = ex.submit(describe_model).get();
  CHECK(second.pid != first.pid);
  CHECK(second.loads == 1);
  CHECK(second.name == "linear");
}

TEST_CASE("Initializer.a_plain_task_name_still_works") {
  auto o = support::options(1);
  SUBCASE("C string") { o.initializer = "init_flag"; }
  SUBCASE("std::string") { o.initializer = std::string("init_flag"); }
  SUBCASE("function") { o.initializer = init_flag; }
  ferry::Executor ex(o);
  CHECK(ex.submit(initialized).get() == 1);
  CHECK_FALSE(ferry::ExecutorOptions{}.initializer);  // none by default
}

TEST_CASE("Initializer.calls_compare_by_task_and_encoded_arguments") {
  using ferry::Call;
  CHECK(Call(load_model, "a", 1) == Call(load_model, "a", 1));
  CHECK(Call(load_model, "a", 1) != Call(load_model, "a", 2));
  CHECK(Call(load_model, "a", 1) != Call(load_model, "b", 1));
  CHECK(Call("load_model", "a", 1) == Call(std::string("load_model"), std::string("a"), 1));
  CHECK(Call("load_model", "a", 1) != Call(load_model, "a", 1));  // by name is not by function
  CHECK(Call("init_flag") == Call(std::string("init_flag")));
  CHECK(Call() == Call(""));
  CHECK(Call().empty());
  CHECK_FALSE(Call("init_flag").empty());
  CHECK(Call("init_flag").name() == "init_flag");
  CHECK(Call(load_model, "a", 1).signature() == "void(string,i32)");
  CHECK_FALSE(Call(load_model, "a", 1).arguments().empty());
  Call copy = Call(load_model, "a", 1);
  CHECK(copy == Call(load_model, "a", 1));
  // ExecutorOptions compare through it.
  auto a = support::options(2), b = support::options(2);
  a.initializer = Call(load_model, "a", 1);
  b.initializer = Call(load_model, "a", 1);
  CHECK(a == b);
  b.initializer = Call(load_model, "a", 5);
  CHECK_FALSE(a == b);
}

TEST_CASE("Initializer.the_reusable_executor_reuses_equal_calls") {
  auto o = support::options(1);
  o.initializer = ferry::Call(load_model, "linear", 2);
  auto first = ferry::get_reusable_executor(o);
  auto pid = first->submit(describe_model).get().pid;
  auto o2 = support::options(1);
  o2.initializer = ferry::Call(load_model, "linear", 2);
  auto again = ferry::get_reusable_executor(o2);
  CHECK(again == first);
  CHECK(again->submit(describe_model).get().pid == pid);
  o2.initializer = ferry::Call(load_model, "linear", 4);
  auto replaced = ferry::get_reusable_executor(o2);
  CHECK(replaced != first);
  CHECK(replaced->submit(describe_model).get().size == 4);
  replaced->shutdown();
}

TEST_CASE("Initializer.arguments_of_the_wrong_types_are_refused_at_construction") {
  auto o = support::options(1);
  o.initializer = ferry::Call("load_model", 1.5, 2);  // (f64, i32): the plugin's is (string, i32)
  CHECK_THROWS_WITH_AS(ferry::Executor{o}, doctest::Contains("void(string,i32)"), ferry::PluginError);
}

TEST_CASE("Initializer.a_failing_initializer_with_arguments_breaks_the_pool") {
  auto o = support::options(1);
  o.initializer = ferry::Call(load_model, "", 3);  // load_model refuses an empty name
  ferry::Executor ex(o);
  check_broken_by_its_initializer(ex, "the model needs a name");
}

TEST_CASE("Initializer.one_that_kills_its_worker_is_a_start_failure_not_a_respawn_loop") {
  // segfault(1) as the initializer: every worker dies in it, before any call ran. It used to be
  // the first call's TerminatedWorkerError, and an idle pool started hundreds of workers a second.
  auto o = support::options(1);
  o.initializer = ferry::Call(segfault, 1);
  ferry::Executor ex(o);
  auto f = ex.submit(busy_for, 0);
  CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("while its initializer ran"), ferry::BrokenProcessPool);
  // The pool stops starting workers until the next submission.
  const std::size_t started = ex.stats().workers_started;
  CHECK(started <= 4);
  CHECK_FALSE(support::wait_until([&] { return ex.stats().workers_started > started; }, 1s));
}

TEST_CASE("Initializer.unencodable_arguments_and_arguments_without_a_task") {
  CHECK_THROWS_WITH_AS(ferry::Call("load_model", Unencodable{}), doctest::Contains("cannot encode this"),
                       ferry::SerializationError);
  CHECK_THROWS_AS(ferry::Call("", 1), std::invalid_argument);
}

// ---- Call::json: the arguments as one JSON object (the `ferry` command's --initializer) -----

TEST_CASE("Initializer.json_call_by_name_and_by_task_ref") {
  auto o = support::options(2);
  SUBCASE("by name") { o.initializer = ferry::Call::json("load_model", R"({"value0": "from-json", "value1": 3})"); }
  SUBCASE("by TaskRef") {
    o.initializer = ferry::Call::json(ferry::TaskRef{.library = FERRY_TEST_MODEL_PLUGIN, .name = "load_model"},
                                      R"({"value0": "from-json", "value1": 3})");
  }
  CHECK(o.initializer.is_json());
  CHECK(o.initializer.signature() == "(JSON arguments)");
  ferry::Executor ex(o);
  check_each_worker_loaded(ex, "from-json", 3);
  CHECK(ex.submit(predict, 3.0).get() == doctest::Approx(5.5));
}

TEST_CASE("Initializer.json_calls_compare_by_their_text") {
  using ferry::Call;
  CHECK(Call::json("load_model", R"({"value0":"a","value1":1})") == Call::json("load_model", R"({"value0":"a","value1":1})"));
  CHECK(Call::json("load_model", R"({"value0":"a","value1":1})") != Call::json("load_model", R"({"value0":"a","value1":2})"));
  CHECK(Call::json("init_flag", "{}") != Call("init_flag"));  // JSON is not the binary archive
  CHECK_FALSE(Call("init_flag").is_json());
  CHECK_THROWS_AS(Call::json("", "{}"), std::invalid_argument);
  CHECK_THROWS_AS(Call::json(ferry::TaskRef{.library = FERRY_TEST_MODEL_PLUGIN}, "{}"), std::invalid_argument);
  // The worker reads one line: pretty-printed JSON is refused here, not half-read there.
  CHECK_THROWS_WITH_AS(Call::json("load_model", "{\n  \"value0\": \"a\",\n  \"value1\": 1\n}"),
                       doctest::Contains("one line"), std::invalid_argument);
}

TEST_CASE("Initializer.json_arguments_the_task_cannot_take_break_the_pool") {
  // The worker decodes them: the wrong type, or one argument short.
  for (const char* args : {R"({"value0": 1.5, "value1": 2})", R"({"value0": "x"})", "not json"}) {
    CAPTURE(args);
    auto o = support::options(1);
    o.initializer = ferry::Call::json("load_model", args);
    ferry::Executor ex(o);
    check_broken_by_its_initializer(ex, "load_model");
  }
}

TEST_CASE("Initializer.json_call_of_a_task_that_returns_a_value") {
  // Its value is dropped, as concurrent.futures drops an initializer's.
  auto o = support::options(1);
  o.initializer = ferry::Call::json("square", R"({"value0": 3})");  // the math plugin's: i32(i32)
  ferry::Executor ex(o);
  CHECK(ex.warm_up(30s));  // true only once the worker said its initializer ran
  CHECK(ex.submit(describe_model).get().loads == 0);
  CHECK_FALSE(ex.is_broken());
}

TEST_CASE("Initializer.a_calls_deadline_and_cpu_time_start_after_it") {
  // Calls submitted while the initializer runs wait for it: their clocks ran meanwhile (they
  // were written to the worker behind it), so a 1.5 s initializer failed a first call given a 500 ms deadline (TimeoutError) and charged
  // its CPU time to a call limited to 1 s (ResourceLimitError).
  auto o = support::options(1);
  o.initializer = ferry::Call(busy_for, 1500);
  ferry::Executor ex(o);
  auto timed = ex.submit_with({.deadline = 500ms}, busy_for, 3);
  auto limited = ex.submit_with({.limits = {.cpu_time = 1s}}, busy_for, 4);
  CHECK_FALSE(timed.running());  // behind the initializer
  CHECK(timed.get() == 3);
  CHECK(limited.get() == 4);
}

TEST_CASE("Initializer.warm_up_waits_for_it_and_stops_waiting_when_it_fails") {
  SUBCASE("it ran") {
    auto o = support::options(2);
    o.initializer = ferry::Call(busy_for, 700);
    ferry::Executor ex(o);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(ex.warm_up(30s));
    // 700 ms of CPU time each cannot take less than 700 ms.
    CHECK(std::chrono::steady_clock::now() - start >= 700ms);
    auto f = ex.submit_with({.deadline = 100ms}, busy_for, 5);
    CHECK(f.get() == 5);
  }
  SUBCASE("it ended its worker") {
    // A start failure (three in a row: the pool gives up starting workers), not a broken pool:
    // warm_up waited for its whole timeout.
    auto o = support::options(1);
    o.initializer = ferry::Call(segfault, 1);
    ferry::Executor ex(o);
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(ex.warm_up(ferry::Duration(std::chrono::hours(1))));
    CHECK(std::chrono::steady_clock::now() - start < 30s);
  }
  SUBCASE("it failed") {
    auto o = support::options(1);
    o.initializer = "init_throws";
    ferry::Executor ex(o);
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(ex.warm_up(60s));
    CHECK(std::chrono::steady_clock::now() - start < 30s);  // not the whole timeout
    CHECK(ex.is_broken());
  }
}

TEST_CASE("Initializer.a_call_waiting_for_it_is_cancelled_without_a_kill") {
  // A call submitted while the initializer runs waits in the pool's queue: cancel() takes it
  // back. It was written to the worker behind the initializer, and only killing that worker
  // (cancel with kill_running) took it back, so a map's stop or timeout killed workers that had
  // not run a call.
  support::HeldFile held;
  const auto& hold = held.path;
  auto o = support::options(1);
  o.initializer = ferry::Call(wait_while_exists, hold.string());
  ferry::Executor ex(o);
  auto f = ex.submit(busy_for, 1);
  REQUIRE(support::wait_until([&] { return ex.worker_pids().size() == 1; }));
  const int pid = ex.worker_pids().front();
  CHECK_FALSE(f.running());
  CHECK(f.cancel());
  CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("before it started"), ferry::CancelledError);
  held.release();
  CHECK(ex.submit(busy_for, 2).get() == 2);
  CHECK(ex.worker_pids() == std::vector<int>{pid});
  CHECK(ex.stats().workers_crashed == 0);
}

TEST_CASE("Initializer.one_that_ends_its_worker_during_a_shutdown_is_still_a_start_failure") {
  // The call behind it was blamed (TerminatedWorkerError, a retry charged) once the executor was
  // shutting down.
  auto o = support::options(1);
  o.initializer = ferry::Call(segfault, 1);
  ferry::Executor ex(o);
  auto f = ex.submit(busy_for, 1);
  ex.shutdown({.wait = false});
  CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("while its initializer ran"), ferry::BrokenProcessPool);
}

TEST_CASE("Initializer.one_past_its_timeout_is_a_start_failure") {
  // An initializer that never ends held the pool for good: the calls behind it have no deadline
  // until it ends. With initializer_timeout its worker is killed as one whose initializer crashed.
  support::HeldFile held;
  const auto& hold = held.path;
  auto o = support::options(1);
  o.initializer = ferry::Call(wait_while_exists, hold.string());
  o.initializer_timeout = 300ms;
  SUBCASE("every time: the pool gives up") {
    ferry::Executor ex(o);
    const auto start = std::chrono::steady_clock::now();
    auto f = ex.submit_with({.deadline = 100ms}, busy_for, 1);
    try {
      f.get();
      FAIL("no error");
    } catch (const ferry::BrokenProcessPool& e) {
      const std::string what = e.what();
      CHECK_MESSAGE(what.find("did not finish its initializer within 300 ms") != std::string::npos, what);
      // Not the worker program's fault: no advice to set another (it was given every time).
      CHECK_MESSAGE(what.find("worker_path") == std::string::npos, what);
    }
    // Three workers of 300 ms each and the backoffs between them: each timed from its hello,
    // also when the waiting thread read that hello (the manager slept until the hello timeout,
    // 10 s after each start).
    CHECK(std::chrono::steady_clock::now() - start < 8s);
    CHECK(ex.stats().workers_started <= 4);
    CHECK_FALSE(ex.is_broken());  // a start failure: the next submit tries again
  }
  SUBCASE("once: its calls run on the next worker") {
    ferry::Executor ex(o);
    auto f = ex.submit(busy_for, 7);
    // The second worker is in its initializer (the first was killed 300 ms after its hello):
    // this one's initializer ends when the file is gone.
    REQUIRE(support::wait_until([&] { return ex.stats().workers_started >= 2; }));
    std::filesystem::remove(hold);
    CHECK(f.get() == 7);
    CHECK(ex.stats().workers_started <= 3);
  }
  SUBCASE("an initializer that ends in time is not touched") {
    o.initializer = ferry::Call(busy_for, 100);
    o.initializer_timeout = 20s;
    ferry::Executor ex(o);
    CHECK(ex.submit(busy_for, 3).get() == 3);
    CHECK(ex.stats().workers_started == 1);
  }
}

TEST_CASE("Initializer.timeout_negative_or_nan_is_refused") {
  auto o = support::options(1);
  o.initializer_timeout = ferry::Duration(-1);
  CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
  o.initializer_timeout = ferry::Duration(std::numeric_limits<double>::quiet_NaN());
  CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
  // Too long for the clock: no limit.
  o.initializer_timeout = ferry::Duration(std::numeric_limits<double>::infinity());
  o.initializer = ferry::Call(busy_for, 1);
  ferry::Executor ex(o);
  CHECK(ex.submit(busy_for, 2).get() == 2);
}
