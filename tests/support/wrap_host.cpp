// SPDX-License-Identifier: BSD-3-Clause
// A host with a FERRY_WRAP function, for tests that need separate processes sharing one wrap cache:
//   wrap_host <worker>    submits the wrapped function; prints "<result> <compilations>"
#include <iostream>
#include <vector>

#include <ferry/ferry.hpp>

#include "wrap_compiler.hpp"

FERRY_WRAP(wrapped_sum_plus,
long wrapped_sum_plus(const std::vector<int>& v, long k) {
  long s = k;
  for (int x : v) s += x;
  return s;
})

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ferry::ExecutorOptions o;
  o.max_workers = 1;
  o.worker_path = argv[1];
  try {
    ferry::Executor ex(o);
    long r = ex.submit(wrapped_sum_plus, std::vector<int>{1, 2, 3}, 100L).get();
    std::cout << r << ' ' << ferry::detail::wrap_compilations() << std::endl;
  } catch (const std::exception& e) {
    std::cout << "error " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
