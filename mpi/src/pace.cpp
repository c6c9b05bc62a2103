// SPDX-License-Identifier: BSD-3-Clause
// Adaptive pacing of the MPI hub's and agents' loops (pace.hpp).
#include "pace.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>

#include "platform/config.hpp"

namespace ferry::mpi::detail {

Pace::Pace() : spin_(ferry::detail::Config::read().mpi_spin) {}

bool Pace::wait(pollfd* fds, nfds_t count, std::chrono::microseconds longest) {
  auto now = Clock::now();
  if (!spin_off_ && (now - last_active_ < spin_ || now < expect_until_)) {
    // Other ranks, the workers and the host's threads may share this CPU: let them run.
    ::sched_yield();
    return false;
  }
  const auto us = std::min(nap_, longest).count();
  timespec ts{static_cast<time_t>(us / 1'000'000), static_cast<long>(us % 1'000'000) * 1000};
  int r = ::ppoll(fds, count, &ts, nullptr);
  if (r > 0) {
    active();  // a descriptor is ready: what follows is likely more work
  } else {
    nap_ = std::min(nap_ * 2, cap(Clock::now()));
  }
  return true;
}

}  // namespace ferry::mpi::detail
