// SPDX-License-Identifier: BSD-3-Clause
// A worker turned against its host: task code runs inside the worker, so it can write anything on
// the channel (fd 3) and touch every descriptor the worker received. Whatever it does, the host
// must not crash, hang or grow; the call it hurt gets a typed error and the pool goes on.
// Hostile tasks come from tests/plugins/hostile_worker.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include <ferry/ferry.hpp>

#include "hostile_worker.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

namespace {

/// The sum of `bytes` as unsigned chars: what byte_sum must answer.
std::uint64_t sum_of(const std::vector<char>& bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), std::uint64_t{0},
                         [](std::uint64_t s, char c) { return s + static_cast<unsigned char>(c); });
}

}  // namespace

TEST_CASE("HostileWorker.truncated_argument_memfd_does_not_crash_the_host") {
  // A task that shrank the memfd of its (shared-memory) arguments, or any block of the host it
  // found through /proc/<host>/fd, made the host's next large submit die of SIGBUS: the block is
  // reused, and encoding into it wrote past its new end.
  ferry::Executor ex(support::options(1));
  const std::vector<char> big(4 << 20, 1);
  CHECK(ex.submit(attack_argument_memfds, big).get() == 0);  // nothing it tried worked
  // Later large arguments reuse that block; they arrive whole and unaltered.
  for (char fill : {2, 3}) {
    std::vector<char> again(4 << 20, fill);
    CHECK(ex.submit(byte_sum, ferry::BytesView(again.data(), again.size())).get() == sum_of(again));
    CHECK(ex.submit(attack_argument_memfds, again).get() == 0);
  }
}
