// SPDX-License-Identifier: BSD-3-Clause
// Failures are typed and fail only their own future: a task that throws, a worker that crashes.
// The pool respawns the worker and keeps going.
#include <iostream>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // plugins/crash: tasks that fail in every way
#include "math.hpp"

int main() {
  ferry::Executor ex({.max_workers = 2});

  try {
    ex.submit(fail, 3).get();
  } catch (const ferry::TaskError& e) {
    std::cout << "TaskError: " << e.remote_type() << ": " << e.remote_message() << "\n";
  }

  auto healthy = ex.submit(slow_identity, 1, 100);  // runs on the other worker
  try {
    ex.submit(segfault, 0).get();
  } catch (const ferry::TerminatedWorkerError& e) {
    std::cout << "TerminatedWorkerError: " << e.signal_name() << " in task " << e.task() << "\n";
  }
  std::cout << "the other task still returns " << healthy.get() << "\n";
  std::cout << "and the pool still works: square(4) = " << ex.submit(square, 4).get() << "\n";
}
