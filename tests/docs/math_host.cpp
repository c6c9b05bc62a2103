// SPDX-License-Identifier: BSD-3-Clause
// Readme.math_plugin.runs: the README's plugin example ("A plugin", built from the page as
// ferry_plugin_readme_math, file libreadme_math.so) run as the README says it runs: by function
// from a host that links it (FERRY_EXPORT), and by name from its directory, under each name the
// page gives its tasks ("square", "math.square", "math::norm", and "plugin:task").
#include <cmath>
#include <cstdlib>
#include <exception>
#include <iostream>

#include <ferry/ferry.hpp>

int square(int x);  // the plugin's FERRY_EXPORT function, linked

namespace {
int failures = 0;

template <class T>
void expect(const char* what, const T& got, const T& want) {
  std::cout << what << " = " << got << (got == want ? "" : "  WRONG") << "\n";
  if (!(got == want)) ++failures;
}
}  // namespace

int main() try {
  ferry::Executor ex({.max_workers = 1, .plugin_dirs = {FERRY_README_PLUGIN_DIR}});
  expect("submit(square, 7)", ex.submit(square, 7).get(), 49);
  expect("submit<int>(\"square\", 9)", ex.submit<int>("square", 9).get(), 81);
  expect("submit<int>(\"math.square\", 5)", ex.submit<int>("math.square", 5).get(), 25);
  expect("submit<int>(\"readme_math:square\", 4)", ex.submit<int>("readme_math:square", 4).get(), 16);
  expect("submit<double>(\"math::norm\", 3.0, 4.0)", ex.submit<double>("math::norm", 3.0, 4.0).get(), 5.0);
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
} catch (const std::exception& e) {
  std::cout << "failed: " << e.what() << "\n";
  return EXIT_FAILURE;
}
