// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP: a function of this program shipped by value (compiled once into a cached plugin),
// and the options that give a wrapped body its headers and macros.
#include <cmath>
#include <iostream>
#include <random>  // for estimate_pi: the host compiles wrapped bodies too (see main)

#include <ferry/ferry.hpp>

FERRY_WRAP(hypotenuse,
double hypotenuse(double a, double b) { return std::sqrt(a * a + b * b); })

// <random> is not in the prelude that every wrapped body gets: the body's plugin needs it in
// set_wrap_options' includes, and this file needs its #include above, because FERRY_WRAP also
// defines the function here, as written.
FERRY_WRAP(estimate_pi,
double estimate_pi(unsigned seed, int samples) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int inside = 0;
  for (int i = 0; i < samples; ++i) {
    double x = u(gen), y = u(gen);
    inside += x * x + y * y <= 1.0 ? 1 : 0;
  }
  return 4.0 * inside / samples;
})

// The body is compiled on its own, as written: a macro it uses must be passed as a flag.
#define OFFSET 7
FERRY_WRAP(plus_offset,
int plus_offset(int x) { return x + OFFSET; })

int main() {
  // Before the first Executor: making one starts building every wrapped function with the
  // options in effect then.
  ferry::set_wrap_options({.flags = {"-DOFFSET=7"}, .includes = {"<random>"}});
  ferry::Executor ex({.max_workers = 2});
  std::cout << "hypotenuse(3, 4) = " << ex.submit(hypotenuse, 3.0, 4.0).get() << "\n";
  std::cout << "in the host too: " << hypotenuse(6, 8) << "\n";
  double pi = ex.submit(estimate_pi, 1u, 100000).get();
  std::cout << "estimate_pi(1, 100000) = " << pi << ", the same in the host: "
            << (pi == estimate_pi(1u, 100000) ? "yes" : "no") << "\n";
  std::cout << "plus_offset(35) = " << ex.submit(plus_offset, 35).get() << "\n";
}
