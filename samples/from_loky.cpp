// SPDX-License-Identifier: BSD-3-Clause
// docs/from-loky.md, compiled: the ferry spelling of each loky / joblib / concurrent.futures call
// the page lists, with the Python call above it, so that the page cannot drift from the API.
#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // segfault, init_flag, initialized
#include "math.hpp"   // square, add, fail, slow_identity

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  std::cout << std::boolalpha;

  // executor = loky.get_reusable_executor(max_workers=2, timeout=10, initializer=init_flag,
  //                                       env={"OMP_NUM_THREADS": "1"})
  // (memory leak detection on; concurrent.futures: max_tasks_per_child=1000)
  ferry::ExecutorOptions options{.max_workers = 2,
                                 .idle_timeout = 10s,
                                 .max_memory_growth = 300 << 20,
                                 .max_tasks_per_child = 1000,
                                 .initializer = "init_flag",
                                 .env = {{"OMP_NUM_THREADS", "1"}}};
  if (argc > 1) options.plugin_dirs = {argv[1]};  // where the initializer "init_flag" is found
  std::shared_ptr<ferry::Executor> executor = ferry::get_reusable_executor(options);
  std::cout << "initializer ran: " << executor->submit(initialized).get() << "\n";

  // executor.submit(square, 7).result()
  std::cout << "submit: " << executor->submit(square, 7).get() << "\n";

  // list(executor.map(square, range(10), chunksize=4))
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> squares = executor->map(square, xs, {.chunksize = 4});
  // list(executor.map(add, [1, 3], [2, 4])): one range of tuples or pairs, not one per parameter
  std::vector<int> sums = executor->map(add, std::vector<std::pair<int, int>>{{1, 2}, {3, 4}});
  // joblib.Parallel(n_jobs=2)(joblib.delayed(square)(x) for x in xs): a map
  std::cout << "map: " << squares.back() << ", " << sums.back() << "\n";

  // done, not_done = wait(fs, return_when=FIRST_COMPLETED)
  std::vector<ferry::Future<int>> fs = {executor->submit(slow_identity, 1, 300),
                                        executor->submit(square, 5)};
  auto [done, not_done] = ferry::wait(fs, ferry::Return::first_completed);
  // wait(fs, timeout=5, return_when=FIRST_EXCEPTION) / ALL_COMPLETED
  auto all = ferry::wait(fs, ferry::Return::all_completed, 5s);
  std::cout << "wait: first done " << done.front().get() << ", then " << all.done.size()
            << " done\n";
  // for f in as_completed(fs, timeout=5): f.result()
  for (const ferry::Future<int>& f : ferry::as_completed(fs, 5s))
    std::cout << "as_completed: " << f.get() << "\n";

  // f.result(timeout=5), f.done(), f.exception(), f.add_done_callback(cb)
  ferry::Future<int> f = executor->submit(square, 6);
  if (f.wait_for(5s)) std::cout << "result: " << f.get() << ", done: " << f.ready() << "\n";
  std::exception_ptr error = executor->submit(fail, 1).exception();
  ferry::Future<int> next = executor->submit(square, 3).then([](int v) { return v + 1; });
  std::cout << "exception: " << (error != nullptr) << ", then: " << next.get() << "\n";

  // f.cancel(): a task not started yet; ferry can also stop a running one
  ferry::Future<int> spin = executor->submit(spin_forever, 1);
  bool cancelled = spin.cancel({.kill_running = true});
  spin.wait();  // a running task ends when its worker is gone
  std::cout << "cancel: " << cancelled << ", cancelled(): " << spin.cancelled() << "\n";

  // The task raised: TaskError carries the remote type and message.
  try {
    executor->submit(fail, 2).get();
  } catch (const ferry::TaskError& e) {
    std::cout << "TaskError: " << e.remote_type() << ": " << e.remote_message() << "\n";
  }
  // loky: TerminatedWorkerError, and the pool is broken. ferry: only this future fails.
  try {
    executor->submit(segfault, 0).get();
  } catch (const ferry::TerminatedWorkerError& e) {
    std::cout << "TerminatedWorkerError: " << e.signal_name() << "\n";
  }
  std::cout << "the pool still works: " << executor->submit(square, 4).get() << "\n";

  // loky.cpu_count() (bounded by LOKY_MAX_CPU_COUNT): ferry::cpu_count() (FERRY_MAX_CPU_COUNT)
  std::cout << "cpu_count: " << (ferry::cpu_count() >= 1 ? "at least 1" : "none") << "\n";

  // executor.shutdown(wait=True); loky's kill_workers=True is {.kill_workers = true}
  executor->shutdown({.wait = true});
  try {
    executor->submit(square, 1);
  } catch (const ferry::BrokenProcessPool& e) {  // loky: ShutdownExecutorError
    std::cout << "after shutdown: BrokenProcessPool: " << e.what() << "\n";
  }
}
