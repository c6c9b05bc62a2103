// SPDX-License-Identifier: BSD-3-Clause
// A host built against an installed ferry: no worker path, no environment variable needed.
#include <iostream>

#include <ferry/ferry.hpp>

#include "external.hpp"

int main() {
  ferry::Executor ex({.max_workers = 1});
  std::cout << "triple(14) = " << ex.submit(triple, 14).get() << "\n";
  std::cout << "shout = " << ex.submit(shout, std::string("ferry")).get() << "\n";
}
