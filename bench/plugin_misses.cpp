// SPDX-License-Identifier: BSD-3-Clause
// Times a PluginIndex's lookups that miss in one process: the first (which scans twice when the
// index is empty), then each later one (one rescan each). docs/benchmarks.md, "A lookup that
// misses in a large plugin directory", has the directories and the commands:
//   cmake --build --preset default --target ferry_plugin_misses   (FERRY_BUILD_BENCH=ON)
//   build/default/bin/ferry-plugin-misses DIR [MISSES]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <ferry/errors.hpp>
#include <ferry/plugin_index.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [MISSES]\n", argv[0]);
    return 2;
  }
  ferry::PluginIndex index({argv[1]});
  const int misses = argc > 2 ? std::atoi(argv[2]) : 5;
  for (int i = 0; i < misses; ++i) {
    const auto start = std::chrono::steady_clock::now();
    try {
      index.find("no_such_task");
    } catch (const ferry::PluginError&) {
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("miss %d: %.3f s\n", i, s);
  }
}
