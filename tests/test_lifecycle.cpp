// SPDX-License-Identifier: BSD-3-Clause
// Worker lifecycle: idle timeout, recycling, initializer, resize, deadlines, cancelling running
// work, and many threads at once.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>

#include <ferry/backend.hpp>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"
#include "support/sanitizer.hpp"
#include "support/worker_spawn.hpp"
#include "support/trace_file.hpp"

using namespace std::chrono_literals;

extern char** environ;

namespace {
std::map<int, int> run_counts(const std::string& path) {
  std::map<int, int> c;
  std::ifstream in(path);
  int id;
  while (in >> id) ++c[id];
  return c;
}
}  // namespace

TEST_CASE("Lifecycle.idle_timeout_is_a_clean_exit") {
  auto o = support::options(2);
  o.idle_timeout = 50ms;
  ferry::Executor ex(o);
  for (int round = 0; round < 3; ++round) {
    std::vector<ferry::Future<int>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(square, i));
    for (int i = 0; i < 8; ++i) CHECK(fs[i].get() == i * i);  // no TerminatedWorkerError
    CHECK(support::wait_until([&] { return ex.worker_pids().empty(); }));
    CHECK(support::wait_until([] { return support::children().empty(); }));
  }
}

TEST_CASE("Lifecycle.memory_growth_recycles_after_the_task") {
  auto o = support::options(1);
  o.max_memory_growth = 48 << 20;
  ferry::Executor ex(o);
  std::set<int> pids;
  for (int i = 0; i < 8; ++i) {
    pids.insert(ex.submit(worker_pid).get());
    CHECK(ex.submit(leak, 20).get() == 20);  // finishes, reports, then the worker is recycled
  }
  // 20 MiB per call over a 48 MiB allowance: a new worker every three calls or so (every call
  // under a sanitizer, whose shadow memory multiplies the growth).
  CHECK(pids.size() >= 2);
  // Every new worker replaced one recycled for its memory (none crashed): each worker seen but
  // the last was recycled, the last one too when the last call pushed it over.
  // A recycled worker's end is counted when it is reaped, which may come after its replacement
  // answered: waited for.
  auto recycled = [&] {
    const auto stats = ex.stats();
    return stats.recycled_by_reason.count("memory") ? stats.recycled_by_reason.at("memory") : std::size_t{0};
  };
  CHECK(support::wait_until([&] { return recycled() >= pids.size() - 1; }));
  CHECK(recycled() <= pids.size());
  CHECK(ex.stats().workers_crashed == 0);
}

TEST_CASE("Lifecycle.memory_growth_counts_no_argument_that_is_gone") {
  // The growth is measured after the call, its arguments freed: measured as its result was
  // ready (the arguments alive, a protocol 9 draft), calls of 100 MiB arguments recycled 9 of 10
  // workers that kept nothing (a review).
  if (FERRY_TEST_SHADOW_MEMORY) {
    // The sanitizer's allocator keeps freed memory in quarantine (256 MiB): a freed 100 MiB
    // argument stays resident.
    MESSAGE("under a sanitizer freed memory stays resident a while: not tested here");
    return;
  }
  auto o = support::options(1);
  o.max_memory_growth = 64 << 20;
  ferry::Executor ex(o);
  const std::vector<char> small(1000, 's'), large(100 << 20, 'l');
  for (int i = 0; i < 6; ++i) {
    const auto& bytes = i % 2 == 0 ? small : large;
    CHECK(ex.submit(byte_count, bytes).get() == bytes.size());
  }
  const auto s = ex.stats();
  CHECK(s.workers_started == 1);
  CHECK(s.recycled_by_reason.count("memory") == 0);
}

TEST_CASE("Lifecycle.a_task_that_leaks_descriptors_does_not_poison_the_next") {
  ferry::Executor ex(support::options(1));
  int before = ex.submit(worker_pid).get();
  // Opens files until the worker has no descriptor left, and returns.
  CHECK(ex.submit(leak_descriptors, -1).get() > 0);
  // The next tasks are innocent: a task that opens a file, an argument that travels through
  // shared memory (a descriptor passed with the message), a plugin not loaded yet.
  CHECK(ex.submit(open_one_descriptor, 7).get() == 7);
  std::vector<double> big(1 << 18, 1.0);  // 2 MiB: above the shared-memory threshold
  CHECK(ex.submit(sum, big).get() == doctest::Approx(1 << 18));
  CHECK(ex.submit<int>("func_async", 21, std::vector<int>{}).get() == 42);  // the seed plugin
  CHECK(ex.submit(worker_pid).get() != before);  // it was recycled, announced (no crash)
}

TEST_CASE("Lifecycle.descriptors_leaked_little_by_little_recycle_before_they_run_out") {
  // Workers inherit this limit: 512 descriptors, so 100 more per call soon passes the allowance.
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, 512);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  struct Restore {
    rlimit limit;
    ~Restore() { ::setrlimit(RLIMIT_NOFILE, &limit); }
  } restore{old};
  ferry::Executor ex(support::options(1));
  std::set<int> pids;
  for (int i = 0; i < 40; ++i) {
    pids.insert(ex.submit(worker_pid).get());
    CHECK(ex.submit(leak_descriptors, 100).get() == 100);  // 4,000 in all: never EMFILE
    CHECK(ex.submit(open_one_descriptor, i).get() == i);
  }
  CHECK(pids.size() >= 2);
}

TEST_CASE("Lifecycle.max_tasks_per_child") {
  auto o = support::options(1);
  o.max_tasks_per_child = 3;
  ferry::Executor ex(o);
  std::vector<int> pids;
  for (int i = 0; i < 9; ++i) pids.push_back(ex.submit(worker_pid).get());
  for (int i = 0; i < 9; ++i) CHECK(pids[i] == pids[i / 3 * 3]);
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 3);
}

TEST_CASE("Lifecycle.max_tasks_per_child_holds_for_calls_submitted_at_once") {
  // Calls queued at once are pipelined (8 deep here), but never beyond what a worker will run:
  // each worker gets its two, none is sent to one that leaves (Dispatcher's lane budget). Calls
  // sent past it waited there (beside a task that could read them) and were handed back at its
  // bye: sent twice or more, which bytes_sent shows.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "8");
  auto o = support::options(1);
  o.max_tasks_per_child = 2;
  auto run = [&](int calls) {
    ferry::Executor ex(o);
    std::vector<ferry::Future<int>> futures;
    for (int i = 0; i < calls; ++i) futures.push_back(ex.submit(worker_pid));
    std::map<int, int> calls_per_worker;
    for (auto& f : futures) ++calls_per_worker[f.get()];
    CHECK(calls_per_worker.size() == static_cast<std::size_t>(calls / 2));
    for (const auto& [pid, n] : calls_per_worker) CHECK_MESSAGE(n == 2, pid);
    CHECK(support::wait_until([&] { return ex.stats().recycled_by_reason["tasks"] == static_cast<std::size_t>(calls / 2); }));
    CHECK(ex.stats().workers_crashed == 0);
    return ex.stats().bytes_sent;  // its task reference and its two calls, per worker
  };
  const std::uint64_t one_worker = run(2);
  CHECK(run(30) == 15 * one_worker);
}

TEST_CASE("Lifecycle.initializer_runs_in_every_new_worker") {
  auto o = support::options(2);
  o.initializer = "init_flag";
  ferry::Executor ex(o);
  for (int i = 0; i < 6; ++i) CHECK(ex.submit(initialized).get() == 1);
  // A replacement worker is initialised too.
  CHECK_THROWS_AS(ex.submit(segfault, 0).get(), ferry::TerminatedWorkerError);
  for (int i = 0; i < 6; ++i) CHECK(ex.submit(initialized).get() == 1);
  // Without it, the flag is not set.
  ferry::Executor plain(support::options(1));
  CHECK(plain.submit(initialized).get() == 0);
}

TEST_CASE("Lifecycle.failing_initializer_breaks_the_pool_without_a_respawn_loop") {
  auto o = support::options(2);
  o.initializer = "init_throws";
  ferry::Executor ex(o);
  std::vector<ferry::Future<int>> fs;
  fs.push_back(ex.submit(square, 0));  // no worker can have failed yet
  for (int i = 1; i < 4; ++i) {
    try {
      fs.push_back(ex.submit(square, i));
    } catch (const ferry::BrokenProcessPool& e) {
      // Once the initializer has failed, submit itself refuses: also a clear error.
      CHECK(std::string(e.what()).find("initializer refuses to run") != std::string::npos);
    }
  }
  for (auto& f : fs) {
    CHECK(f.wait_for(10s));
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("initializer refuses to run"),
                         ferry::BrokenProcessPool);
  }
  CHECK(ex.is_broken());
  CHECK_THROWS_AS(ex.submit(square, 1), ferry::BrokenProcessPool);
  CHECK(support::wait_until([] { return support::children().empty(); }));
  // No respawn loop: each of the two workers started once at most, and none is started later.
  CHECK(ex.stats().workers_started <= 2);
  // Counted as ended by the manager once it has seen the exit, which may follow the reaping.
  CHECK(support::wait_until([&] { return ex.stats().workers_alive == 0; }, 10s));
  // The reusable executor replaces a broken one, even for the same options.
  auto reusable = ferry::get_reusable_executor(o);
  CHECK_THROWS_AS(reusable->submit(square, 1).get(), ferry::BrokenProcessPool);
  REQUIRE(support::wait_until([&] { return reusable->is_broken(); }, 10s));
  CHECK(reusable->stats().workers_started <= 2);
  auto again = ferry::get_reusable_executor(o);
  CHECK(again != reusable);  // the options are the same: replaced because it was broken
  CHECK_THROWS_WITH_AS(again->submit(square, 2).get(), doctest::Contains("initializer refuses to run"),
                       ferry::BrokenProcessPool);
  auto fresh = ferry::get_reusable_executor(support::options(1));
  CHECK(fresh != again);
  CHECK(fresh->submit(square, 3).get() == 9);
}

TEST_CASE("Lifecycle.calls_a_worker_held_when_the_pool_broke_still_complete") {
  // The initializer works in the first worker and fails in a later one (a transient condition);
  // the healthy worker then dies with calls in its pipeline. They came back to a queue nothing
  // would run or fail any more: their futures never completed, and ~Executor waited for ever.
  support::TempDir dir;
  const auto gate = dir.path / "gate";
  std::filesystem::create_directory(gate);
  auto o = support::options(1);
  o.initializer = ferry::Call(record_run, (gate / "log").string(), 1);  // fails without `gate`
  ferry::Executor ex(o);
  for (int i = 0; i < 50; ++i) REQUIRE(ex.submit(square, i).get() == i * i);  // short: pipelined
  std::filesystem::remove_all(gate);
  std::vector<ferry::Future<int>> fs;
  fs.push_back(ex.submit(gated_throw, 1, dir.path.string()));  // runs until dir/go exists
  fs.push_back(ex.submit(segfault, 0));                        // then kills its worker
  for (int i = 0; i < 5; ++i) fs.push_back(ex.submit(square, i));
  // Sent to the one worker behind the running call as they were submitted (the calls before
  // them were short): when the pool breaks, they are not in its queue.
  REQUIRE(support::wait_until([&] { return ex.stats().running == 1; }, 10s));
  ex.resize(2);  // the second worker's initializer fails: the pool breaks
  REQUIRE(support::wait_until([&] { return ex.is_broken(); }, 10s));
  std::ofstream(dir.path / "go") << "go";
  for (auto& f : fs) CHECK_MESSAGE(f.wait_for(10s), "a future never completed");
  CHECK_THROWS_AS(fs[0].get(), ferry::TaskError);
  CHECK_THROWS_AS(fs[1].get(), ferry::TerminatedWorkerError);
  for (std::size_t i = 2; i < fs.size(); ++i) CHECK_THROWS_AS(fs[i].get(), ferry::BrokenProcessPool);
}

TEST_CASE("Lifecycle.unknown_initializer_is_refused_at_construction") {
  auto o = support::options(1);
  o.initializer = "no_such_initializer";
  CHECK_THROWS_AS(ferry::Executor{o}, ferry::PluginError);
}

TEST_CASE("Lifecycle.resize_loses_and_duplicates_nothing") {
  support::TempDir dir;
  std::string log = (dir.path / "runs").string();
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 60; ++i) {
    fs.push_back(ex.submit(record_run, log, i));
    if (i == 10) ex.resize(4);
    if (i == 25) ex.resize(1);
    if (i == 40) ex.resize(3);
  }
  for (int i = 0; i < 60; ++i) CHECK(fs[i].get() == i);
  auto counts = run_counts(log);
  CHECK(counts.size() == 60);
  for (auto [id, n] : counts) CHECK_MESSAGE(n == 1, "call " << id << " ran " << n << " times");
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 3; }));
}

TEST_CASE("Lifecycle.deadline_kills_the_worker_with_TimeoutError") {
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  auto t0 = std::chrono::steady_clock::now();
  auto f = ex.submit_with({.deadline = 200ms}, spin_forever, 1);
  auto ok = ex.submit_with({.deadline = 5s}, square, 4);
  CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("exceeded its deadline of 200 ms"),
                       ferry::TimeoutError);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= 200ms);
  CHECK(took < support::scaled(2s));
  CHECK(ok.get() == 16);
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
  CHECK(ex.submit(square, 5).get() == 25);
}

TEST_CASE("Lifecycle.deadline_counts_from_the_start_of_the_call") {
  // Queued behind a 300 ms call on the only worker: a 200 ms deadline is not spent waiting.
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto first = ex.submit(slow_identity, 1, 300);
  auto second = ex.submit_with({.deadline = 200ms}, slow_identity, 2, 50);
  CHECK(first.get() == 1);
  CHECK(second.get() == 2);
}

TEST_CASE("Lifecycle.a_call_waits_for_its_worker_to_start_before_its_deadline_counts") {
  // Calls were written to a worker before its hello, and their deadline, running() and cancel()
  // counted from that write: a 200 ms deadline failed a quick call given to a worker that took
  // longer to start (TimeoutError), and a call waiting for it could not be cancelled. Here a
  // script stands in for a slow start: it runs ferry-worker once the file is gone, and not
  // before 600 ms.
  support::HeldFile held;
  const auto script = held.dir.path / "worker.sh";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\nsleep 0.6\nwhile [ -e '" << held.path.string() << "' ]; do sleep 0.01; done\nexec '"
        << FERRY_TEST_WORKER << "' \"$@\"\n";
  }
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  auto o = support::options(1);
  o.worker_path = script;
  ferry::Executor ex(o);
  auto timed = ex.submit_with({.deadline = 200ms}, square, 3);
  auto other = ex.submit(square, 4);
  REQUIRE(support::wait_until([&] { return ex.stats().workers_alive == 1; }));
  CHECK_FALSE(timed.running());
  CHECK(other.cancel());  // waiting for a worker: taken back without killing one
  held.release();
  CHECK(timed.get() == 9);
  CHECK_THROWS_WITH_AS(other.get(), doctest::Contains("before it started"), ferry::CancelledError);
  const auto s = ex.stats();
  CHECK(s.workers_started == 1);
  CHECK(s.workers_crashed == 0);
}

TEST_CASE("Lifecycle.a_call_waits_for_a_starting_worker_rather_than_behind_a_running_call") {
  // A pool of 2 whose second worker was still starting: the first one, busy with a long call,
  // took a quick call into its pipeline (the service time of short calls before had set the
  // depth to 8), and that call waited for the long one instead of running on the second worker
  // once it was up (Sample.map_and_wait under CI load: "first done: 1"). Here the first start
  // runs ferry-worker at once; every later one waits until the file is gone.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "4");
  support::HeldFile second_start;
  support::HeldFile long_call;
  const auto script = second_start.dir.path / "worker.sh";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\nif ! mkdir '" << (second_start.dir.path / "first").string() << "' 2>/dev/null; then\n"
        << "  while [ -e '" << second_start.path.string() << "' ]; do sleep 0.01; done\nfi\nexec '"
        << FERRY_TEST_WORKER << "' \"$@\"\n";
  }
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  auto o = support::options(2);
  o.worker_path = script;
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 2).get() == 4);
  auto slow = ex.submit(value_after_hold, 1, long_call.path.string());
  REQUIRE(support::wait_until([&] { return slow.running(); }));
  auto quick = ex.submit(square, 5);
  second_start.release();
  const bool quick_first = support::wait_until([&] { return quick.ready(); });
  CHECK(quick_first);
  CHECK_FALSE(slow.ready());
  long_call.release();
  CHECK(slow.get() == 1);
  CHECK(quick.get() == 25);
}

TEST_CASE("Lifecycle.a_result_raced_by_its_deadline_does_not_hand_the_kill_to_the_next_call") {
  // A call killed for its deadline whose result the worker wrote just then: the result was
  // taken (the call had a value), and the TimeoutError went to the call behind it in the
  // worker's pipeline, which was running when the death was settled and had not overrun
  // anything. Each timed call sleeps as long as its deadline, with a quick one behind it.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "2");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  int timed_out = 0;
  for (int i = 0; i < 150; ++i) {
    auto timed = ex.submit_with({.deadline = 20ms}, slow_identity, i, 20);
    auto innocent = ex.submit(square, i);
    try {
      const int value = timed.get();
      CHECK(value == i);
    } catch (const ferry::TimeoutError&) {
      ++timed_out;
    }
    CHECK_NOTHROW(CHECK(innocent.get() == i * i));
  }
  MESSAGE(timed_out << " of 150 timed calls timed out");
}

TEST_CASE("Lifecycle.cancel_a_running_task_kills_its_worker") {
  ferry::Executor ex(support::options(2));
  REQUIRE(ex.warm_up(10s));
  auto f = ex.submit(spin_forever, 1);
  auto other = ex.submit(slow_identity, 3, 100);
  CHECK_FALSE(f.cancel());  // running: not without kill_running
  CHECK(f.cancel({.kill_running = true}));
  // Ended at once, as concurrent.futures' future is when cancel() says true (it waited for the
  // worker's death to be settled).
  CHECK(f.ready());
  CHECK(f.cancelled());
  CHECK_FALSE(f.running());
  CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("cancelled while running"), ferry::CancelledError);
  CHECK(other.get() == 3);
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
  CHECK(ex.submit(square, 2).get() == 4);
}

TEST_CASE("Lifecycle.callbacks_that_submit") {
  // loky's test_submit_from_callback: chains of callbacks, each submitting the next step.
  ferry::Executor ex(support::options(2));
  std::atomic<int> steps{0};
  std::promise<void> finished;
  std::function<void(int)> step = [&](int left) {
    if (left == 0) {
      finished.set_value();
      return;
    }
    ex.submit(square, left).then([&, left](int) {
      ++steps;
      step(left - 1);
    });
  };
  step(100);
  CHECK(finished.get_future().wait_for(20s) == std::future_status::ready);
  CHECK(steps == 100);
}

TEST_CASE("Lifecycle.a_callback_may_shut_down_its_executor_on_any_thread") {
  // The callbacks of calls that shutdown({.kill_workers}) fails run on the thread calling it; one
  // that shuts the executor down with wait=true waited for the completion it ran inside.
  support::TempDir gate;  // never opened: the call runs until it is killed
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(gated_throw, 1, gate.path.string());
  std::atomic<bool> returned{false};
  auto g = f.then([&](const ferry::Future<int>&) {
    ex.shutdown();  // wait = true
    returned = true;
  });
  REQUIRE(support::wait_until([&] { return ex.stats().running == 1; }, 10s));
  std::thread killer([&] { ex.shutdown({.wait = false, .kill_workers = true}); });
  const bool ok = support::wait_until([&] { return returned.load(); }, 10s);
  if (!ok) std::_Exit(1);  // deadlocked: nothing here can end the killer thread
  killer.join();
  CHECK(f.wait_for(10s));
  CHECK_THROWS_AS(f.get(), ferry::CancelledError);
}

TEST_CASE("Lifecycle.a_callback_may_destroy_its_executor_inside_cancel") {
  // cancel() fails a queued call on the calling thread, which runs its callbacks: one that
  // destroys the executor (~Executor is shutdown with wait=true) waited for itself.
  support::TempDir gate;
  auto ex = std::make_unique<ferry::Executor>(support::options(1));
  auto blocker = ex->submit(gated_throw, 1, gate.path.string());
  std::vector<ferry::Future<int>> behind;
  for (int i = 0; i < 100; ++i) behind.push_back(ex->submit(square, i));  // past any pipeline
  auto last = behind.back();
  std::atomic<bool> destroyed{false};
  auto after = last.then([&](const ferry::Future<int>&) {
    ex.reset();
    destroyed = true;
  });
  std::atomic<bool> cancelled{false};
  std::thread canceller([&] { cancelled = last.cancel(); });
  const bool ok = support::wait_until([&] { return destroyed.load(); }, 10s);
  if (!ok) std::_Exit(1);  // deadlocked
  canceller.join();
  CHECK(cancelled);
  // The pool finishes in the background: everything else still completes.
  std::ofstream(gate.path / "go") << "go";
  CHECK(blocker.wait_for(20s));
  CHECK_THROWS_AS(blocker.get(), ferry::TaskError);
  for (int i = 0; i < 99; ++i) {
    REQUIRE(behind[i].wait_for(20s));
    CHECK(behind[i].get() == i * i);
  }
}

TEST_CASE("Lifecycle.a_callback_may_map_on_its_executor_while_it_is_destroyed") {
  // ~Executor held its streams' link locked while it waited for the work, and a map or imap in a
  // callback (on the manager thread, which that wait needs) sends each chunk under that lock:
  // the destructor waited for good (an audit: every run). The map now either completes or, past
  // the shutdown, fails with BrokenProcessPool; the destructor returns.
  for (const bool lazy : {false, true}) {
    CAPTURE(lazy);
    auto ex = std::make_unique<ferry::Executor>(support::options(2));
    ferry::Executor* e = ex.get();
    std::atomic<bool> mapping{false};
    auto sum = ex->submit(slow_identity, 0, 20).then([e, lazy, &mapping](int) -> long {
      mapping = true;
      std::vector<int> in(200, 3);
      try {
        long s = 0;
        if (lazy) {
          for (int v : e->imap(slow_identity, in, {.chunksize = 1}, 1)) s += v;
        } else {
          for (int v : e->map(slow_identity, in, {.chunksize = 1}, 1)) s += v;
        }
        return s;
      } catch (const ferry::BrokenProcessPool&) {
        return -1;
      }
    });
    REQUIRE(support::wait_until([&] { return mapping.load(); }, 20s));
    std::atomic<bool> destroyed{false};
    std::thread destroyer([&] {
      ex.reset();
      destroyed = true;
    });
    const bool ok = support::wait_until([&] { return destroyed.load(); }, 30s);
    if (!ok) std::_Exit(1);  // deadlocked: nothing here can end the destroyer thread
    destroyer.join();
    REQUIRE(sum.wait_for(10s));
    const long got = sum.get();
    CHECK((got == 600 || got == -1));
  }
}

TEST_CASE("Lifecycle.a_callback_may_destroy_its_executor_inside_its_shutdown") {
  // shutdown({.cancel_futures}) and shutdown({.kill_workers}) fail queued calls on the calling
  // thread, which runs their callbacks: one that destroyed the executor left the manager thread
  // the pool's last owner, which freed it at its end while shutdown still waited on it (an
  // audit: std::thread::join threw 'Invalid argument', std::terminate, in 3 of 5 runs of 300).
  // Repeated: the free and the waiting thread's last touch race (fewer rounds under a
  // sanitizer, whose worker starts are five times slower here). The running call lasts until
  // the callback removes its file (or the kill): the calls behind it stay queued until then.
  const int rounds = FERRY_TEST_SHADOW_MEMORY ? 60 : 300;
  support::TempDir dir;
  for (const bool kill : {false, true}) {
    CAPTURE(kill);
    for (int round = 0; round < rounds; ++round) {
      const std::string gate = (dir.path / ("gate-" + std::to_string(round))).string();
      std::ofstream(gate) << "wait";
      auto holder = std::make_shared<std::unique_ptr<ferry::Executor>>(
          std::make_unique<ferry::Executor>(support::options(1)));
      ferry::Executor* ex = holder->get();
      auto running = ex->submit(wait_while_exists, gate);
      std::vector<ferry::Future<int>> behind;
      for (int i = 0; i < 100; ++i) behind.push_back(ex->submit(square, i));  // past any pipeline
      auto queued = behind.back();
      REQUIRE(support::wait_until([&] { return running.running(); }, 20s));
      auto after = queued.then([holder, gate](const ferry::Future<int>&) {
        holder->reset();
        std::filesystem::remove(gate);
      });
      ex->shutdown({.wait = true, .kill_workers = kill, .cancel_futures = !kill});
      REQUIRE(after.wait_for(20s));
      CHECK_FALSE(*holder);
      CHECK_THROWS_AS(queued.get(), ferry::CancelledError);  // failed by the shutdown, on this thread
      REQUIRE(running.wait_for(20s));
      if (kill) {
        CHECK_THROWS_AS(running.get(), ferry::CancelledError);
      } else {
        CHECK_NOTHROW(running.get());
      }
    }
  }
}

TEST_CASE("Lifecycle.many_threads_submit_map_and_resize") {
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        auto ex = ferry::get_reusable_executor(support::options(1 + (t * 7 + round) % 4));
        std::vector<int> in(40);
        for (int i = 0; i < 40; ++i) in[i] = t * 1000 + round * 100 + i;
        auto out = ex->map(square, in, {.chunksize = 7});
        for (std::size_t i = 0; i < in.size(); ++i)
          if (out[i] != in[i] * in[i]) ++wrong;
        std::vector<ferry::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex->submit(add, t, i));
        for (int i = 0; i < 20; ++i)
          if (fs[i].get() != t + i) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

TEST_CASE("Lifecycle.a_pool_finishing_in_the_background_finishes_before_the_process_exits") {
  // An executor destroyed inside a callback on its manager thread finishes in the background; the
  // process exiting then must neither crash nor cut its work short: its trace ends whole.
  support::TempDir dir;
  const auto file = dir.path / "run.json";
  static std::string hold;  // the slow call runs while this file exists; an exit handler removes it
  hold = (dir.path / "hold").string();
  std::ofstream(hold) << "hold";
  const std::string hold_quick = (dir.path / "hold-quick").string();
  std::ofstream(hold_quick) << "hold";
  const int code = support::exit_code_of_child(
      [&]() -> int {
        // A failure ends both calls first: the exit would otherwise wait for the slow one.
        auto give_up = [&](int why) {
          std::filesystem::remove(hold);
          std::filesystem::remove(hold_quick);
          return why;
        };
        auto o = support::options(2);
        o.trace = file;
        auto ex = std::make_shared<ferry::Executor>(o);
        if (!ex->warm_up(10s)) return give_up(3);
        // The slow call runs on one warm worker before the quick one (wait_while_exists) is
        // submitted, so that one goes to the other (the least loaded lane): the callback runs, and the process exits,
        // while the slow call still runs. (A call of fixed length could end first on a loaded
        // machine.)
        auto slow = ex->submit(value_after_hold, 7, hold);
        if (!support::wait_until([&] { return ex->stats().running == 1; }, 10s)) return give_up(4);
        auto* holder = new std::shared_ptr<ferry::Executor>(ex);
        std::atomic<bool> gone{false};
        // Held until its callback is attached and `ex` let go: a call already over when then()
        // is called runs the callback on this thread, where the last reference is then `ex`'s,
        // and ~Executor here waits for the slow call (the child hung until killed).
        ex->submit(wait_while_exists, hold_quick).then([holder, &gone](const ferry::Future<void>&) {
          delete holder;  // the last reference: ~Executor on the manager thread
          gone = true;
        });
        ex.reset();
        std::filesystem::remove(hold_quick);
        if (!support::wait_until([&] { return gone.load(); }, 10s)) return give_up(1);
        if (slow.ready()) return give_up(2);
        // Registered after the pool's own exit handling, so it runs first: the slow call ends
        // only once the process is exiting.
        std::atexit([] { std::filesystem::remove(hold); });
        return 0;  // std::exit while the pool still runs the slow call
      },
      30s, true);
  CHECK(code == 0);
  const support::TraceFile trace = support::read_trace(file);
  CHECK(trace.closed);
  CHECK(trace.is_json_array());
  // The call's slice is written when it ends (its queue wait "b" at submission names it too):
  // one, without an error.
  const auto slices = trace.named("value_after_hold", "X");
  REQUIRE(slices.size() == 1);
  CHECK_FALSE(support::has_arg(*slices[0], "error"));
  CHECK((*slices[0]).HasMember("dur"));
  // The stats line: both calls completed, none failed.
  const auto stats = trace.named("stats");
  REQUIRE(stats.size() == 1);
  CHECK(support::arg_u64(*stats[0], "completed") == 2);
  CHECK(support::arg_u64(*stats[0], "failed") == 0);
}

TEST_CASE("Lifecycle.a_host_short_of_descriptors_runs_on_the_workers_it_could_start") {
  // A descriptor limit that allows fewer workers than max_workers: a start that failed after its
  // process was spawned (no descriptor left for the pool's own copies) counted as a worker dying
  // before its hello, and the pool failed its queue with BrokenProcessPool while the workers it
  // had started were on their way; one that failed earlier (socketpair) was tried again at every
  // pass of the manager. The limits below end the descriptors at each step of a start.
  for (int room = 20; room < 28; ++room) {
    CAPTURE(room);
    const int code = support::exit_code_of_child(
        [room] {
          int open = 0;
          for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++open;
          rlimit limit{};
          if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1;
          limit.rlim_cur = static_cast<rlim_t>(open + room);  // room for a few workers, not 16
          if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 1;
          ferry::Executor ex(support::options(16));
          std::vector<int> in(2000);
          std::iota(in.begin(), in.end(), 0);
          auto out = ex.map(square, in, {.chunksize = 1});
          for (int i = 0; i < 2000; ++i)
            if (out[static_cast<std::size_t>(i)] != i * i) return 2;
          const auto workers = ex.worker_pids().size();
          if (workers < 1 || workers >= 16) return 3;
          return 0;
        },
        60s);
    CHECK_MESSAGE(code == 0, "1: rlimit, 101: the map threw (see stderr), 2: a wrong result, 3: the worker count");
  }
}

TEST_CASE("Lifecycle.workers_that_fail_to_start_together_leave_the_one_on_its_way") {
  // Workers started together under a limit only the first fits in (RLIMIT_NPROC: each worker
  // forks its guardian): the others fail before their hello, three at once, and the pool gave up
  // (BrokenProcessPool for everything) while the first was still on its way. Here a script
  // stands in: the first to start runs ferry-worker 300 ms later, the others exit at once.
  support::TempDir dir;
  const auto script = dir.path / "worker.sh";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << "if mkdir '" << (dir.path / "first").string() << "' 2>/dev/null; then\n"
        << "  sleep 0.3\n"
        << "  exec '" << FERRY_TEST_WORKER << "' \"$@\"\n"
        << "fi\n"
        << "exit 70\n";
  }
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  auto o = support::options(4);
  o.worker_path = script;
  ferry::Executor ex(o);
  std::vector<int> in(200);
  std::iota(in.begin(), in.end(), 0);
  auto out = ex.map(square, in, {.chunksize = 1});
  REQUIRE(out.size() == in.size());
  CHECK(out[199] == 199 * 199);
  CHECK(ex.worker_pids().size() == 1);
  const auto stats = ex.stats();
  CHECK(stats.workers_crashed >= 3);  // the others, and their replacements, spaced out
}

TEST_CASE("Lifecycle.a_host_started_without_its_standard_descriptors_keeps_them_off_its_channels") {
  // Started with 0, 1 and 2 closed (a daemon, `prog <&- >&- 2>&-`): the pool's own descriptors
  // took them, what the program wrote to stderr went into a worker's channel (a protocol error),
  // and the host died of SIGPIPE at its next write.
  const int code = support::exit_code_of_child(
      [] {
        ::close(0);
        ::close(1);
        ::close(2);
        ferry::Executor ex(support::options(2));
        for (int round = 0; round < 5; ++round) {
          if (ex.submit(square, round).get() != round * round) return 2;
          static constexpr char line[] = "a warning the program prints\n";
          if (::write(1, line, sizeof line - 1) < 0 || ::write(2, line, sizeof line - 1) < 0) return 3;
        }
        return 0;
      },
      30s);
  CHECK_MESSAGE(code == 0, "-2: a signal (SIGPIPE), 101: a call failed, 2: a wrong result, 3: a write failed");
}

TEST_CASE("Lifecycle.a_relative_worker_path_is_taken_from_where_the_executor_was_made") {
  // It was looked up at each start: after a chdir, the next worker (a respawn) could not start,
  // or another program of that name ran.
  const int code = support::exit_code_of_child(
      [] {
        const std::filesystem::path worker = FERRY_TEST_WORKER;
        if (::chdir(worker.parent_path().parent_path().c_str()) != 0) return 1;
        auto o = support::options(1);
        o.worker_path = worker.parent_path().filename() / worker.filename();  // bin/ferry-worker
        ferry::Executor ex(o);
        if (ex.submit(square, 2).get() != 4) return 2;
        if (::chdir("/") != 0) return 1;
        ex.resize(2);  // a worker started after the chdir
        if (!ex.warm_up(std::chrono::seconds(5))) return 3;
        if (ex.submit(square, 3).get() != 9) return 4;
        return 0;
      },
      30s);
  CHECK_MESSAGE(code == 0, "3: the worker started after the chdir never came up");
}

TEST_CASE("Lifecycle.a_crash_is_named_when_the_program_reaps_its_children_itself") {
  // With SIGCHLD ignored (or a waitpid(-1) handler) the worker's exit status is lost: the crash
  // its handler reported (signal and stack) was dropped too.
  const int code = support::exit_code_of_child(
      [] {
        ::signal(SIGCHLD, SIG_IGN);
        ferry::Executor ex(support::options(1));
        try {
          ex.submit(segfault, 1).get();
          return 2;
        } catch (const ferry::TerminatedWorkerError& e) {
          if (e.signal() != SIGSEGV) return 3;
          if (e.remote_stack().empty()) return 4;
        }
        return ex.submit(square, 3).get() == 9 ? 0 : 5;
      },
      30s);
  CHECK_MESSAGE(code == 0, "3: no signal, 4: no stack, 5: the pool did not go on");
}

namespace {
/// Zombies whose parent is this process, named `comm`.
int zombie_children_named(const std::string& comm) {
  int found = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    long parent = 0;
    rest >> state >> parent;
    if (line.substr(open + 1, close - open - 1) == comm && state == 'Z' && parent == ::getpid()) ++found;
  }
  return found;
}
}  // namespace

TEST_CASE("Lifecycle.a_host_that_reaps_orphans_is_left_no_zombie_per_worker") {
  // A container's program is PID 1, and some programs are child subreapers: the guardian each
  // worker detaches became their child when it ended, and was never reaped (one zombie per
  // worker started; under a pids limit, the pool stopped starting workers).
  const int code = support::exit_code_of_child(
      [] {
        if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 1;
        auto o = support::options(1);
        o.max_tasks_per_child = 1;  // a new worker for every call
        {
          ferry::Executor ex(o);
          for (int i = 0; i < 30; ++i)
            if (ex.submit(square, i).get() != i * i) return 2;
        }
        const int zombies = zombie_children_named("ferry-guardian");
        std::fprintf(stderr, "zombie guardians: %d\n", zombies);
        return zombies <= 3 ? 0 : 3;  // those of the last workers, until another ends
      },
      60s);
  CHECK_MESSAGE(code == 0, "3: zombies left, one per worker");
}

TEST_CASE("Lifecycle.a_host_out_of_descriptors_is_not_told_its_task_is_no_task") {
  // The plugin of a function submitted could not be opened to find its task record (EMFILE):
  // the submit failed with UnresolvableTaskError "is not a ferry task. Fix: register it with
  // FERRY_TASK", about a function that is one.
  const int code = support::exit_code_of_child(
      [] {
        ferry::Executor ex(support::options(1));
        if (!ex.warm_up(std::chrono::seconds(10))) return 1;
        support::DescriptorsTaken held;
        const std::string what = support::outcome_of([&] { return ex.submit(add, 1, 2).get(); });
        held.release();
        std::fprintf(stderr, "%s\n", what.c_str());
        if (what.find("PluginError: cannot tell whether function") != 0) return 2;
        return ex.submit(add, 1, 2).get() == 3 ? 0 : 3;  // descriptors back: it is a task again
      },
      30s);
  CHECK_MESSAGE(code == 0, "2: the error was not the host's (see stderr), 3: the next submit failed");
}

TEST_CASE("Lifecycle.a_host_out_of_descriptors_is_not_told_no_plugin_provides_its_task") {
  // A submit by name in a host that had no descriptor left answered PluginError "no plugin
  // provides task", the plugin directory or each plugin's file being unreadable for the host's
  // own want of descriptors. `spare` descriptors are left free: none (the directory cannot be
  // opened) or one (the directory can, its plugins cannot).
  for (int spare : {0, 1}) {
    CAPTURE(spare);
    const int code = support::exit_code_of_child(
        [spare] {
          ferry::Executor ex(support::options(1));
          if (!ex.warm_up(std::chrono::seconds(10))) return 1;
          support::DescriptorsTaken held(spare);
          const std::string what = support::outcome_of([&] { return ex.submit<int>("square", 5).get(); });
          held.release();
          std::fprintf(stderr, "%s\n", what.c_str());
          if (what.find("PluginError: cannot tell which plugin provides task 'square'") != 0) return 2;
          if (what.find("Too many open files") == std::string::npos) return 3;
          return ex.submit<int>("square", 5).get() == 25 ? 0 : 4;  // descriptors back: found
        },
        30s);
    CHECK_MESSAGE(code == 0, "2, 3: the error was not the host's (see stderr), 4: the next submit failed");
  }
}

TEST_CASE("Lifecycle.a_task_found_by_name_before_the_host_ran_out_of_descriptors_is_still_found") {
  // What the index read before stays: a scan that could not read the directory or a plugin for
  // the host's want of descriptors dropped every task found before. Also for a directory named
  // with a trailing slash (its plugins' paths are spelt without it).
  for (const std::string slash : {"", "/"}) {
  CAPTURE(slash);
  const int code = support::exit_code_of_child(
      [&] {
        auto o = support::options(1);
        o.plugin_dirs = {std::string(FERRY_TEST_PLUGIN_DIR) + slash};
        ferry::Executor ex(o);
        if (ex.submit<int>("square", 3).get() != 9) return 1;
        support::DescriptorsTaken held;
        // A miss rescans the directory (which cannot be read now); square is still known.
        (void)support::outcome_of([&] { return ex.submit<int>("no_such_task_anywhere", 1).get(); });
        const std::string what = support::outcome_of([&] { return ex.submit<int>("square", 5).get(); });
        held.release();
        std::fprintf(stderr, "%s\n", what.c_str());
        return what == "returned 25" ? 0 : 2;
      },
      30s);
  CHECK_MESSAGE(code == 0, "2: square was not found with the descriptors all taken (see stderr)");
  }
}

namespace {

/// A backend of one place, as an MPI job of one agent rank: its worker is ferry-worker on this
/// machine, and once that worker has gone the place has gone with it (capacity 0), its end told
/// in the backend's words, as ferry::mpi tells a rank's.
class OnePlaceLauncher final : public ferry::Launcher {
 public:
  class Worker final : public ferry::LaunchedWorker {
   public:
    Worker(pid_t pid, int pidfd, std::shared_ptr<std::atomic<std::size_t>> places)
        : pid_(pid), pidfd_(pidfd), places_(std::move(places)) {}
    ~Worker() override { ::close(pidfd_); }
    int pid() const override { return pid_; }
    int exit_fd() const override { return pidfd_; }
    void kill() override { ::kill(pid_, SIGKILL); }
    ferry::WorkerExit status() override {
      int st = 0;
      ::waitpid(pid_, &st, 0);
      *places_ = 0;  // its rank has gone with it
      ferry::WorkerExit e;
      e.known = true;
      e.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
      e.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      e.detail = "rank 1 on node-a stopped answering (no heartbeat for 3 s)";
      return e;
    }

   private:
    pid_t pid_;
    int pidfd_;
    std::shared_ptr<std::atomic<std::size_t>> places_;
  };

  explicit OnePlaceLauncher(std::shared_ptr<std::atomic<std::size_t>> places) : places_(std::move(places)) {}
  std::optional<Launched> launch(const std::vector<std::string>& args, std::string& why) override {
    if (*places_ == 0) {
      why = "no place left";
      return std::nullopt;
    }
    auto w = support::spawn_worker(FERRY_TEST_WORKER, args, why);
    if (!w) return std::nullopt;
    return Launched{w->channel, std::make_shared<Worker>(w->pid, w->pidfd, places_)};
  }
  std::size_t capacity() const override { return *places_; }
  std::string program() const override { return "ferry-worker (one-place backend)"; }
  std::exception_ptr start_failure(const std::string& why) const override {
    return std::make_exception_ptr(ferry::BrokenProcessPool("one-place backend: " + why));
  }

 private:
  std::shared_ptr<std::atomic<std::size_t>> places_;
};

}  // namespace

TEST_CASE("Lifecycle.when_no_place_is_left_the_error_names_the_last_one_lost_and_why") {
  // ferry::mpi's job whose last rank died failed the queue with "every remote rank of the job has
  // died" alone: which rank, and why (it stopped answering, it refused to serve), only the agents'
  // stderr said. The pool keeps the last loss in the backend's words and says it.
  auto places = std::make_shared<std::atomic<std::size_t>>(1);
  ferry::register_backend("test-one-place", [places](const ferry::ExecutorOptions&) {
    return std::make_shared<OnePlaceLauncher>(places);
  });
  auto o = support::options(1);
  o.backend = "test-one-place";
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 3).get() == 9);
  const auto pids = ex.worker_pids();
  REQUIRE(pids.size() == 1);
  REQUIRE(::kill(pids[0], SIGKILL) == 0);
  REQUIRE(support::wait_until([&] { return ex.stats().workers_alive == 0 && *places == 0; }, 30s));
  CHECK_THROWS_WITH_AS(ex.submit(square, 2).get(),
                       doctest::Contains("every remote rank of the job has died; the last lost: rank 1 on node-a "
                                         "stopped answering (no heartbeat for 3 s)"),
                       ferry::BrokenProcessPool);
}
