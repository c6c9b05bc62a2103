// SPDX-License-Identifier: BSD-3-Clause
// ferry-worker: runs tasks sent by a ferry host over the socket it inherits as fd 3.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "wire/protocol.hpp"
#include "worker/containment.hpp"
#include "worker/worker_main.hpp"

int main(int argc, char** argv) {
  // --private-tmp-id DEV:INO (host/containment.cpp's containment_args): the identity of the
  // executor's private directory, for the containment's check; the rest goes to worker_main.
  std::vector<char*> rest(argv, argv + argc);
  for (std::size_t i = 1; i < rest.size(); ++i) {
    if (std::strcmp(rest[i], "--private-tmp-id") != 0) continue;
    std::uint64_t dev = 0, ino = 0;
    int end = 0;
    if (i + 1 >= rest.size() ||
        std::sscanf(rest[i + 1], "%" SCNu64 ":%" SCNu64 "%n", &dev, &ino, &end) != 2 ||
        rest[i + 1][end] != '\0') {
      std::fputs("ferry-worker: --private-tmp-id takes DEV:INO\n", stderr);
      return static_cast<int>(ferry::detail::protocol::WorkerExit::usage);
    }
    ferry::detail::Containment::expect_private_dir(dev, ino);
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i), rest.begin() + static_cast<std::ptrdiff_t>(i) + 2);
    break;
  }
  rest.push_back(nullptr);
  return ferry::detail::worker_main(static_cast<int>(rest.size() - 1), rest.data());
}
