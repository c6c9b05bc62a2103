// SPDX-License-Identifier: BSD-3-Clause
// Worker lifecycle: idle timeout, recycling, an initializer, a per-task deadline, cancelling a
// running task, and resizing, on one executor.
#include <chrono>
#include <iostream>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // spin_forever, init_flag, initialized
#include "math.hpp"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  ferry::ExecutorOptions options{.max_workers = 2,
                                 .idle_timeout = 30s,          // idle workers exit, come back on demand
                                 .max_memory_growth = 512 << 20,  // recycled after the task that grew it
                                 .max_tasks_per_child = 1000,
                                 .initializer = "init_flag"};     // a task run once per new worker
  if (argc > 1) options.plugin_dirs = {argv[1]};  // where "init_flag" is found
  ferry::Executor ex(options);
  std::cout << "initializer ran: " << ex.submit(initialized).get() << "\n";

  auto f = ex.submit_with({.deadline = 200ms}, spin_forever, 1);  // TimeoutError after 200 ms
  try {
    f.get();
  } catch (const ferry::TimeoutError& e) {
    std::cout << "TimeoutError: " << e.what() << "\n";
  }

  auto g = ex.submit(spin_forever, 2);
  g.cancel({.kill_running = true});  // stops a running task: its worker is killed and replaced
  try {
    g.get();
  } catch (const ferry::CancelledError& e) {
    std::cout << "CancelledError: " << e.what() << "\n";
  }

  ex.resize(4);  // nothing lost, nothing run twice
  std::cout << "after resize: square(12) = " << ex.submit(square, 12).get() << "\n";
}
