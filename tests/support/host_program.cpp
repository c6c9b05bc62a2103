// SPDX-License-Identifier: BSD-3-Clause
// A host for tests that need one in another process: starts an executor, prints its workers'
// pids on one line, then runs what argv[1] asks.
//   host_program <worker> <plugin dir> wait         block until stdin closes (or it is killed)
//   host_program <worker> <plugin dir> exit-busy <record file>
//                                                 leave main while a slow task still runs on
//                                                 each worker, with record_run calls (the crash
//                                                 plugin: each appends its id to <record file>)
//                                                 queued behind them; exits 4 if one of those had
//                                                 already run when main returned
//   host_program <worker> <plugin dir> shm-threshold
//                                                 print libferry's shared-memory threshold (as
//                                                 FERRY_SHM_THRESHOLD set it when it loaded)
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include <ferry/ferry.hpp>

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) return 2;
  ferry::ExecutorOptions o;
  o.max_workers = 2;
  o.worker_path = argv[1];
  o.plugin_dirs = {argv[2]};
  static ferry::Executor ex(o);
  if (!ex.warm_up()) return 3;
  for (int pid : ex.worker_pids()) std::cout << pid << ' ';
  std::cout << std::endl;
  std::string mode = argv[3];
  if (mode == "shm-threshold") {
    std::cout << ferry::detail::large_block_allocator()->threshold << std::endl;
    return 0;
  }
  if (mode == "wait") {
    char c;
    while (::read(0, &c, 1) > 0) {
    }
    return 0;
  }
  if (mode == "exit-busy" && argc == 5) {
    const std::string record = argv[4];
    // One slow call per worker, then the recorded calls behind them: none can run before main
    // returns (unless a slow call is over by then, which exit code 4 tells).
    std::vector<ferry::Future<int>> slow, recorded;
    for (int i = 0; i < 2; ++i) slow.push_back(ex.submit<int>("slow_identity", 7, 500));
    for (int id = 1; id <= 4; ++id) recorded.push_back(ex.submit<int>("record_run", record, id));
    for (const auto& f : slow)
      if (f.ready()) return 4;
    for (const auto& f : recorded)
      if (f.ready()) return 4;
    return 0;  // the static executor's destructor waits for them
  }
  return 2;
}
