// SPDX-License-Identifier: BSD-3-Clause
// An initializer with arguments: every worker loads its "model" once, then every task uses it.
#include <iostream>
#include <map>
#include <vector>

#include <ferry/ferry.hpp>

#include "model.hpp"  // load_model (the initializer), predict, describe_model

int main() {
  // concurrent.futures: ProcessPoolExecutor(2, initializer=load_model, initargs=("poly", 4)).
  // The arguments are encoded once, here, and sent to each new worker with the initializer.
  ferry::Executor ex({.max_workers = 2, .initializer = ferry::Call(load_model, "poly", 4)});
  ex.warm_up();

  // The tasks find the model the initializer left in their worker: nothing is loaded per task.
  std::vector<double> xs = {0.0, 1.0, 2.0};
  std::vector<double> ys = ex.map(predict, xs);
  std::cout << "predict(0, 1, 2) = " << ys[0] << ", " << ys[1] << ", " << ys[2] << "\n";

  // Each worker loaded it exactly once, however many tasks it ran.
  std::map<int, model::Description> workers;
  for (int round = 0; round < 50 && workers.size() < 2; ++round) {
    std::vector<ferry::Future<model::Description>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(describe_model));
    for (auto& f : fs) {
      auto d = f.get();
      workers[d.pid] = d;
    }
  }
  for (const auto& [pid, d] : workers)
    std::cout << "worker: model '" << d.name << "' of " << d.size << " weights, loaded " << d.loads
              << " time(s)\n";

  // By name, from a plugin directory, works the same: ferry::Call("load_model", "poly", 4).
  // Options with equal calls compare equal, so get_reusable_executor reuses its executor.
  ferry::ExecutorOptions a{.initializer = ferry::Call(load_model, "poly", 4)};
  ferry::ExecutorOptions b{.initializer = ferry::Call(load_model, "poly", 4)};
  std::cout << "equal options: " << (a == b ? "yes" : "no") << "\n";
}
