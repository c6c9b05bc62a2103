// SPDX-License-Identifier: BSD-3-Clause
// A host with FERRY_WRAP functions, for tests that need separate processes sharing one wrap cache:
//   wrap_host <worker>          submits a wrapped function; prints "<result> <compilations>"
//   wrap_host <worker> exit FILE  starts an executor (which starts the builds in the background),
//                               waits (at most 60 s) until FILE exists (the test's compiler
//                               writes it once it runs), and returns; prints "exiting"
// Built twice: with FERRY_TEST_WRAP_FAIL, its only wrapped function does not compile unless the
// wrap flags (FERRY_WRAP_FLAGS) include a header that defines FERRY_TEST_HOST_ONLY_K, and
//   wrap_fail_host <worker>     submits it; prints "error <compilations>", then the message, or
//                               "<result of f(1)> <compilations>" when it compiled
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>
#include <string_view>
#include <vector>

#include <ferry/ferry.hpp>

#include "wrap/wrap_compiler.hpp"

#ifndef FERRY_TEST_WRAP_FAIL
FERRY_WRAP(wrapped_sum_plus,
long wrapped_sum_plus(const std::vector<int>& v, long k) {
  long s = k;
  for (int x : v) s += x;
  return s;
})
#else
// The host defines the macro, so the host compiles the body; the wrap build does not have it.
#define FERRY_TEST_HOST_ONLY_K 3
FERRY_WRAP(wrapped_does_not_compile,
int wrapped_does_not_compile(int x) { return x + FERRY_TEST_HOST_ONLY_K; })
#endif

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string_view mode = argc > 2 ? argv[2] : "";
  ferry::ExecutorOptions o;
  o.max_workers = 1;
  o.worker_path = argv[1];
  try {
    ferry::Executor ex(o);
    if (mode == "exit") {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (argc > 3 && !std::filesystem::exists(argv[3]) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a file, not syncing
      std::cout << "exiting" << std::endl;
      return 0;
    }
#ifdef FERRY_TEST_WRAP_FAIL
    try {
      const int r = ex.submit(wrapped_does_not_compile, 1).get();
      std::cout << r << ' ' << ferry::detail::wrap_compilations() << std::endl;
    } catch (const ferry::UnresolvableTaskError& e) {
      std::cout << "error " << ferry::detail::wrap_compilations() << "\n" << e.what() << std::endl;
    }
#else
    long r = ex.submit(wrapped_sum_plus, std::vector<int>{1, 2, 3}, 100L).get();
    std::cout << r << ' ' << ferry::detail::wrap_compilations() << std::endl;
#endif
  } catch (const std::exception& e) {
    std::cout << "error " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
