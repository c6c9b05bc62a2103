// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP: a function of this program shipped by value (compiled once into a cached plugin),
// and the options that give a wrapped body its headers and macros.
#include <cmath>
#include <iostream>

#include <ferry/ferry.hpp>

FERRY_WRAP(hypotenuse,
double hypotenuse(double a, double b) { return std::sqrt(a * a + b * b); })

// The body is compiled on its own, as written: a macro it uses must be passed as a flag.
#define OFFSET 7
FERRY_WRAP(plus_offset,
int plus_offset(int x) { return x + OFFSET; })

int main() {
  ferry::set_wrap_options({.flags = {"-DOFFSET=7"}, .includes = {"<cmath>"}});
  ferry::Executor ex({.max_workers = 2});
  std::cout << "hypotenuse(3, 4) = " << ex.submit(hypotenuse, 3.0, 4.0).get() << "\n";
  std::cout << "in the host too: " << hypotenuse(6, 8) << "\n";
  std::cout << "plus_offset(35) = " << ex.submit(plus_offset, 35).get() << "\n";
}
