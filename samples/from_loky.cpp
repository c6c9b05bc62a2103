// SPDX-License-Identifier: BSD-3-Clause
// docs/from-loky.md, compiled: the ferry spelling of each loky / joblib / concurrent.futures call
// the page lists, with the Python call above it, so that the page cannot drift from the API. The
// sections follow the page's tables (Waiting on many comes before Futures here, Errors before
// Shutting down: the test reads the output in this order).
//
// Every result is checked: a wrong one ends the program at once, before the last line, which the
// test (Sample.from_loky in samples/CMakeLists.txt) looks for.
#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // segfault, spin_forever, getenv_task, take_faulty, init_flag, initialized
#include "math.hpp"   // square, add, fail, slow_identity, scale, math::Vec2

namespace {

/// Ends the program, saying what was wrong, unless `ok`.
void check(bool ok, const char* what) {
  if (ok) return;
  std::cout.flush();
  std::cerr << "from_loky: wrong result: " << what << "\n";
  std::_Exit(1);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// ferry has no coroutine type of its own: any C++20 coroutine can co_await a ferry::Future. The
/// least one: it starts at once, runs to its end and hands its result to a std::future.
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

// async def square_plus_one(x): return await asyncio.wrap_future(ex.submit(square, x)) + 1
Eager<int> square_plus_one(ferry::Executor& ex, int x) {
  ferry::Future<int> f = ex.submit(square, x);
  int y = co_await f;  // resumes in the thread that completed f (at once if f is ready)
  co_return y + 1;
}

}  // namespace

// A function of this program (Python: of __main__): no worker can load it.
int cube_here(int x) { return x * x * x; }

// loky's wrap_non_picklable_objects(cube): the function's source is compiled into a cached plugin.
FERRY_WRAP(cube, int cube(int x) { return x * x * x; })

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  std::cout << std::boolalpha;

  // ======== Executors ===========================================================================

  // LOKY_MAX_CPU_COUNT=1: FERRY_MAX_CPU_COUNT=1 (in the environment: each call reads it; set here
  // before any thread starts, as setenv requires)
  ::setenv("FERRY_MAX_CPU_COUNT", "1", 1);
  check(ferry::cpu_count() == 1, "cpu_count() under FERRY_MAX_CPU_COUNT=1");
  ::unsetenv("FERRY_MAX_CPU_COUNT");

  // executor = loky.get_reusable_executor(max_workers=2, timeout=10, initializer=init_flag,
  //                                       env={"OMP_NUM_THREADS": "1"})
  // (memory leak detection on; concurrent.futures: max_tasks_per_child=1000)
  ferry::ExecutorOptions options{.max_workers = 2,
                                 .idle_timeout = 10s,
                                 .max_memory_growth = 300 << 20,
                                 .max_tasks_per_child = 1000,
                                 .initializer = "init_flag",
                                 .env = {{"OMP_NUM_THREADS", "1"}}};
  // The plugin directory, the first argument (the test gives the build's): where the initializer
  // "init_flag" and the tasks named by a string below are found, before $FERRY_PLUGIN_PATH.
  const std::filesystem::path plugins = argc > 1 ? argv[1] : "";
  if (!plugins.empty()) options.plugin_dirs = {plugins};
  std::shared_ptr<ferry::Executor> executor = ferry::get_reusable_executor(options);
  std::cout << "initializer ran: " << executor->submit(initialized).get() << "\n";
  check(ferry::get_reusable_executor(options) == executor, "equal options reuse the executor");
  check(executor->submit(getenv_task, "OMP_NUM_THREADS").get() == "1", "the workers' env");

  std::vector<int> xs(10);  // range(10)
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<ferry::Future<int>> submitted;
  {
    // with ProcessPoolExecutor(max_workers=4) as ex:
    ferry::Executor ex({.max_workers = 4});
    // joblib.Parallel(n_jobs=4)(joblib.delayed(square)(x) for x in xs)
    auto r = ex.map(square, xs);
    check(r.size() == 10 && r[9] == 81, "joblib's Parallel as a map");
    for (int x : xs) submitted.push_back(ex.submit(square, x));
    // ex._resize(2) (loky, private): queued and running work is neither lost nor run twice
    ex.resize(2);
    check(ex.max_workers() == 2, "resize");
  }  // ~Executor() runs shutdown({.wait = true})
  for (int x : xs) {
    const ferry::Future<int>& s = submitted[static_cast<std::size_t>(x)];
    check(s.ready() && s.get() == x * x, "the work of a scope, across a resize");
  }
  std::cout << "with: " << submitted.size() << " results, resized to 2 on the way\n";

  {
    // ProcessPoolExecutor(max_workers=None), context="loky"
    ferry::Executor all_cpus({.max_workers = 0, .backend = "local"});
    check(all_cpus.max_workers() == ferry::cpu_count(), "max_workers = 0 is cpu_count()");
  }

  {
    // ProcessPoolExecutor(max_workers=1, initializer=fail, initargs=(1,)): fail(1) throws, so the
    // pool is broken (samples/initializer.cpp has an initializer that sets up worker state).
    ferry::Executor broken({.max_workers = 1, .initializer = ferry::Call(fail, 1)});
    std::string why;
    try {
      broken.submit(square, 1).get();
    } catch (const ferry::BrokenProcessPool& e) {
      why = e.what();
    }
    check(contains(why, "initializer 'fail'") && contains(why, "fail: 1"), "a failing initializer");
    std::cout << "BrokenProcessPool: " << why << "\n";
  }

  // a type that travels (job_reducers / copyreg): a `serialize` member, as math::Vec2 has
  check(executor->submit(scale, math::Vec2{1.5, -2}, 2.0).get() == math::Vec2{3, -4}, "Vec2");

  // ======== Submitting ==========================================================================

  // executor.submit(square, 7).result()
  std::cout << "submit: " << executor->submit(square, 7).get() << "\n";

  // executor.submit(fn, 7) with fn looked up by name: in the plugin directories, by its task
  // name, "plugin:task", or the plugin's file and the task's name
  int by_name = executor->submit<int>("square", 7).get();
  int by_plugin = executor->submit<int>("math:square", 7).get();
  int by_ref =
      executor->submit<int>(ferry::TaskRef{.library = plugins / "libmath.so", .name = "square"}, 7)
          .get();
  check(by_name == 49 && by_plugin == 49 && by_ref == 49, "submit by name");

  // executor.submit(wrap_non_picklable_objects(cube), 3): FERRY_WRAP above
  check(executor->submit(cube, 3).get() == 27, "a FERRY_WRAP function");

  // list(executor.map(square, range(10), chunksize=4))
  std::vector<int> squares = executor->map(square, xs, {.chunksize = 4});
  // list(executor.map(add, [1, 3], [2, 4])): one range of tuples or pairs, not one per parameter
  std::vector<int> sums = executor->map(add, std::vector<std::pair<int, int>>{{1, 2}, {3, 4}});
  std::cout << "map: " << squares.back() << ", " << sums.back() << "\n";
  // list(executor.map(functools.partial(add, b=100), xs)): constant trailing arguments
  std::vector<int> plus_100 = executor->map(add, xs, {}, 100);
  check(plus_100.front() == 100 && plus_100.back() == 109, "map with a constant extra argument");

  // executor.map(square, xs, timeout=5), and for imap; per task (no Python equivalent), a deadline
  check(executor->map(square, xs, {.timeout = 5s}) == squares, "map with a timeout");
  int imap_total = 0;
  for (int v : executor->imap(square, xs, {.timeout = 5s})) imap_total += v;
  check(imap_total == 285, "imap with a timeout");
  check(executor->submit_with({.deadline = 5s}, square, 7).get() == 49, "submit_with a deadline");

  // Parallel(return_as="generator")(delayed(square)(x) for x in xs): lazily, in input order
  std::vector<int> in_order;
  for (int v : executor->imap(square, xs)) in_order.push_back(v);
  check(in_order == squares, "imap as joblib's generator");
  // Parallel(return_as="generator_unordered")(delayed(square)(x) for x in xs): as they complete
  int unordered_total = 0;
  for (const ferry::Indexed<int>& r : executor->imap_unordered(square, xs)) {
    check(r.value == static_cast<int>(r.index * r.index), "imap_unordered gives each result with its input's index");
    unordered_total += r.value;
  }
  check(unordered_total == 285, "imap_unordered as joblib's generator_unordered");

  // for f in as_completed(fs): f.result() (concurrent.futures, no timeout)
  std::vector<ferry::Future<int>> futures;
  for (int x : xs) futures.push_back(executor->submit(square, x));
  int total = 0;
  for (auto& f : ferry::as_completed(futures)) total += f.get();
  check(total == 285, "as_completed without a timeout");

  // ======== Waiting on many =====================================================================

  {
    // done, not_done = wait(fs) (ALL_COMPLETED, no timeout)
    auto [done, not_done] = ferry::wait(futures);
    check(done.size() == futures.size() && not_done.empty(), "wait for all");
  }
  // done, not_done = wait(fs, return_when=FIRST_COMPLETED)
  std::vector<ferry::Future<int>> fs = {executor->submit(slow_identity, 1, 300),
                                        executor->submit(square, 5)};
  auto [done, not_done] = ferry::wait(fs, ferry::Return::first_completed);
  // wait(fs, timeout=5) (ALL_COMPLETED)
  auto all = ferry::wait(fs, ferry::Return::all_completed, 5s);
  std::cout << "wait: first done " << done.front().get() << ", then " << all.done.size()
            << " done\n";
  // for f in as_completed(fs, timeout=5): f.result()
  for (const auto& f : ferry::as_completed(fs, 5s))
    std::cout << "as_completed: " << f.get() << "\n";

  // wait(fs, return_when=FIRST_EXCEPTION)
  std::vector<ferry::Future<int>> failing = {executor->submit(slow_identity, 2, 300),
                                             executor->submit(fail, 3)};
  auto first_error = ferry::wait(failing, ferry::Return::first_exception);
  check(std::any_of(first_error.done.begin(), first_error.done.end(),
                    [](const ferry::Future<int>& f) { return f.exception() != nullptr; }),
        "wait for the first exception");

  // asyncio.gather(*fs, return_exceptions=True): a future of the futures, each with its outcome
  std::vector<ferry::Future<int>> gathered = ferry::when_all(failing).get();
  check(gathered[0].get() == 2 && gathered[1].exception() != nullptr, "when_all");

  // wait(fs, return_when=FIRST_COMPLETED), as a future: the index of one that is ready, and all
  std::vector<ferry::Future<int>> racing = {executor->submit(slow_identity, 4, 300),
                                            executor->submit(square, 6)};
  ferry::WhenAnyResult<int> any = ferry::when_any(racing).get();
  check(any.index < 2 && any.futures[any.index].ready(), "when_any");
  std::cout << "when_any: index " << any.index << " ready first, of " << any.futures.size() << "\n";

  // ======== Futures =============================================================================

  // f.result(timeout=5), f.done(), f.exception(), f.add_done_callback(cb)
  ferry::Future<int> f = executor->submit(square, 6);
  if (f.wait_for(5s)) std::cout << "result: " << f.get() << ", done: " << f.ready() << "\n";
  std::exception_ptr error = executor->submit(fail, 1).exception();
  ferry::Future<int> next = executor->submit(square, 3).then([](int v) { return v + 1; });
  std::cout << "exception: " << (error != nullptr) << ", then: " << next.get() << "\n";

  // (none; Ray: ray.util.state.get_task()): how f ran, once it is ready
  std::optional<ferry::TaskInfo> info = f.info();
  check(info && info->name == "square" && info->worker_pid > 0 && info->attempts == 1,
        "info()");
  std::cout << "info: square ran in worker " << info->worker_pid << "\n";

  // await asyncio.wrap_future(f), in a coroutine (square_plus_one above)
  check(square_plus_one(*executor, 4).result.get() == 17, "co_await");

  // f.running(), f.cancel(), f.cancelled(): cancel() is true for a task not started yet (false
  // for one that ended); ferry can also stop a running one
  check(!f.cancel(), "cancel() of a finished task");
  ferry::Executor one({.max_workers = 1});
  check(one.warm_up(), "warm_up");  // its worker is up and idle: a submit runs at once
  ferry::Future<int> spin = one.submit(spin_forever, 1);
  check(spin.running(), "running() of a task its worker runs");
  bool cancelled = spin.cancel({.kill_running = true});
  spin.wait();  // a running task ends when its worker is gone
  check(!spin.running(), "running() once ended");
  std::cout << "cancel: " << cancelled << ", cancelled(): " << spin.cancelled() << "\n";

  // ======== Errors ==============================================================================

  // The task raised: TaskError carries the remote type and message, the task, the worker and
  // where it threw.
  try {
    executor->submit(fail, 2).get();
  } catch (const ferry::TaskError& e) {
    std::cout << "TaskError: " << e.remote_type() << ": " << e.remote_message() << "\n";
    check(e.task() == "fail" && e.pid() > 0 && contains(e.remote_stack(), "fail(int)"),
          "TaskError's task, pid and stack");
  }
  // loky: TerminatedWorkerError, and the pool is broken. ferry: only this future fails.
  try {
    executor->submit(segfault, 0).get();
  } catch (const ferry::TerminatedWorkerError& e) {
    std::cout << "TerminatedWorkerError: " << e.signal_name() << "\n";
    check(e.exit_code() == -1 && !e.oom_killed() && contains(e.remote_stack(), "segfault(int)"),
          "TerminatedWorkerError's exit code, OOM flag and stack");
  }
  std::cout << "the pool still works: " << executor->submit(square, 4).get() << "\n";

  // "A task has failed to un-serialize" (loky: the pool is broken): only that future fails
  try {
    crash::Faulty undecodable(crash::Stage::worker_decode, crash::Action::throw_error, 1);
    executor->submit(take_faulty, undecodable).get();
    check(false, "an argument the worker cannot decode");
  } catch (const ferry::SerializationError& e) {
    std::cout << "SerializationError: " << e.what() << "\n";
    check(e.stage() == ferry::SerializationStage::decode_arguments &&
              std::string(e.side()) == "worker",
          "SerializationError's stage and side");
  }

  // AttributeError: Can't get attribute 'cube_here' on <module '__main__'>
  try {
    executor->submit(cube_here, 3).get();
    check(false, "a function of the main program");
  } catch (const ferry::UnresolvableTaskError& e) {
    std::cout << "UnresolvableTaskError: " << e.function() << "\n";
    check(contains(e.what(), "FERRY_WRAP"), "UnresolvableTaskError names the fixes");
  }

  // ModuleNotFoundError in the worker (here: a misspelt task name)
  try {
    executor->submit<int>("sqare", 7).get();
    check(false, "a misspelt task name");
  } catch (const ferry::PluginError& e) {
    std::cout << "PluginError: " << e.what() << "\n";
    check(contains(e.what(), "did you mean 'square'"), "PluginError's close names");
  }

  // CancelledError, TimeoutError
  try {
    spin.get();
    check(false, "a cancelled task");
  } catch (const ferry::CancelledError& e) {
    std::cout << "CancelledError: " << e.what() << "\n";
  }
  try {
    executor->submit_with({.deadline = 200ms}, spin_forever, 1).get();
    check(false, "a task past its deadline");
  } catch (const ferry::TimeoutError& e) {
    std::cout << "TimeoutError: " << e.what() << "\n";
  }

  // loky.cpu_count() (bounded by LOKY_MAX_CPU_COUNT): ferry::cpu_count() (FERRY_MAX_CPU_COUNT)
  std::cout << "cpu_count: " << (ferry::cpu_count() >= 1 ? "at least 1" : "none") << "\n";

  // ======== Shutting down =======================================================================

  {
    ferry::Executor ex({.max_workers = 1});
    ferry::Future<int> queued = ex.submit(square, 8);
    // ex.shutdown(wait=False): submitted work still completes in the background
    ex.shutdown({.wait = false});
    check(queued.get() == 64, "work submitted before shutdown(wait=False)");
  }
  {
    ferry::Executor ex({.max_workers = 1});
    ferry::Future<int> endless = ex.submit(spin_forever, 1);
    // ex.shutdown(kill_workers=True) (loky): every pending future fails with CancelledError
    ex.shutdown({.kill_workers = true});
    try {
      endless.get();
      check(false, "a task killed by shutdown(kill_workers=True)");
    } catch (const ferry::CancelledError& e) {
      std::cout << "kill_workers: CancelledError: " << e.what() << "\n";
    }
    check(!endless.cancelled(), "cancelled() is for cancel() only");
  }
  {
    ferry::Executor ex({.max_workers = 1});
    std::vector<ferry::Future<int>> pending;
    for (int x : xs) pending.push_back(ex.submit(square, x));
    // ex.shutdown(cancel_futures=True) (3.9): the calls not started yet are cancelled, running
    // ones (and those a worker holds behind its running call) complete
    ex.shutdown({.cancel_futures = true});
    int cancelled_now = 0;
    for (int x : xs) {
      const ferry::Future<int>& p = pending[static_cast<std::size_t>(x)];
      check(p.ready(), "every future is done after shutdown(cancel_futures=True)");
      if (p.cancelled()) ++cancelled_now;
      else check(p.get() == x * x, "a call not cancelled by shutdown(cancel_futures=True) completes");
    }
    std::cout << "cancel_futures: " << cancelled_now << " of " << xs.size() << " cancelled before they started\n";
  }

  // executor.shutdown(wait=True)
  executor->shutdown({.wait = true});
  // submit after shutdown: RuntimeError (loky: ShutdownExecutorError)
  try {
    executor->submit(square, 1);
  } catch (const ferry::BrokenProcessPool& e) {
    std::cout << "after shutdown: BrokenProcessPool: " << e.what() << "\n";
  }
}
