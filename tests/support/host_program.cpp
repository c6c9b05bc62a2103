// SPDX-License-Identifier: BSD-3-Clause
// A host for tests that need one in another process: starts an executor, prints its workers'
// pids on one line, then runs what argv[1] asks.
//   host_program <worker> <plugin dir> wait         block until stdin closes (or it is killed)
//   host_program <worker> <plugin dir> exit-busy    leave main while a task still runs
#include <unistd.h>

#include <iostream>

#include <ferry/ferry.hpp>

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  ferry::ExecutorOptions o;
  o.max_workers = 2;
  o.worker_path = argv[1];
  o.plugin_dirs = {argv[2]};
  static ferry::Executor ex(o);
  if (!ex.warm_up()) return 3;
  for (int pid : ex.worker_pids()) std::cout << pid << ' ';
  std::cout << std::endl;
  std::string mode = argv[3];
  if (mode == "wait") {
    char c;
    while (::read(0, &c, 1) > 0) {
    }
    return 0;
  }
  if (mode == "exit-busy") {
    auto f = ex.submit<int>("slow_identity", 7, 200);
    return 0;  // the static executor's destructor waits for f
  }
  return 2;
}
