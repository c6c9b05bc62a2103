// SPDX-License-Identifier: BSD-3-Clause
// Build-time tool: precompiles the FERRY_WRAP prelude into the directory given.
#include <exception>
#include <iostream>

#include "wrap/wrap_compiler.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: ferry_wrap_prelude DIR\n";
    return 64;
  }
  try {
    std::string header = ferry::detail::precompile_prelude(argv[1]);
    if (header.empty()) {
      std::cerr << "ferry_wrap_prelude: the prelude could not be precompiled (FERRY_DEBUG=1 says why);"
                   " FERRY_WRAP will compile without it\n";
      return 0;
    }
    std::cout << header << "\n";
  } catch (const std::exception& e) {
    std::cerr << "ferry_wrap_prelude: " << e.what() << "\n";
    return 0;  // not fatal for the build: wraps then precompile the prelude in their cache
  }
  return 0;
}
