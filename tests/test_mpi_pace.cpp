// SPDX-License-Identifier: BSD-3-Clause
// mpi/src/pace.cpp on its own: how long the MPI hub's and agents' loops nap between looks.
#include <doctest/doctest.h>

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>

#include "pace.hpp"

namespace {

using ferry::mpi::detail::Pace;
using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

/// A Pace that never spins (FERRY_MPI_SPIN_US=0): every wait() naps.
Pace napping() {
  ::setenv("FERRY_MPI_SPIN_US", "0", 1);
  Pace p;
  ::unsetenv("FERRY_MPI_SPIN_US");
  return p;
}

}  // namespace

TEST_CASE("MpiPace.naps_double_up_to_the_longest_nap_while_work_is_recent") {
  Pace pace = napping();
  REQUIRE(pace.spin_window() == microseconds(0));
  auto start = Clock::now();  // before active(): quiet_after counts from no later than this
  pace.active();
  CHECK(pace.next_nap() == Pace::first_nap);
  microseconds want = Pace::first_nap;
  for (int i = 0; i < 8; ++i) {
    CHECK(pace.wait(nullptr, 0));  // napped
    want = std::min(want * 2, Pace::longest_nap);
    // A machine so loaded that these few milliseconds took quiet_after may already nap longer.
    if (Clock::now() - start >= Pace::quiet_after) {
      MESSAGE("only " << i << " of 8 doublings checked: the machine took quiet_after ("
                      << std::chrono::duration_cast<std::chrono::milliseconds>(Pace::quiet_after).count()
                      << " ms) for them, after which naps may be longer");
      break;
    }
    CHECK(pace.next_nap() == want);
  }
}

TEST_CASE("MpiPace.a_quiet_loop_naps_longer_after_a_while") {
  // Each timed wake-up costs a VM tens of µs of CPU: quiet for quiet_after, naps reach
  // longest_quiet_nap (and not before).
  Pace pace = napping();
  auto start = Clock::now();
  pace.active();
  auto deadline = start + std::chrono::seconds(10);
  while (pace.next_nap() <= Pace::longest_nap && Clock::now() < deadline) pace.wait(nullptr, 0);
  REQUIRE(pace.next_nap() > Pace::longest_nap);
  CHECK(Clock::now() - start >= Pace::quiet_after);
  while (pace.next_nap() < Pace::longest_quiet_nap && Clock::now() < deadline) pace.wait(nullptr, 0);
  CHECK(pace.next_nap() == Pace::longest_quiet_nap);
  pace.wait(nullptr, 0);
  CHECK(pace.next_nap() == Pace::longest_quiet_nap);  // no further
}

TEST_CASE("MpiPace.a_ready_descriptor_ends_the_nap_and_starts_over") {
  Pace pace = napping();
  pace.active();
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (pace.next_nap() < Pace::longest_quiet_nap && Clock::now() < deadline)
    pace.wait(nullptr, 0, microseconds(1));  // naps of 1 µs: quiet soon, in real time
  REQUIRE(pace.next_nap() == Pace::longest_quiet_nap);
  int p[2];
  REQUIRE(::pipe(p) == 0);
  REQUIRE(::write(p[1], "x", 1) == 1);
  pollfd fd{p[0], POLLIN, 0};
  CHECK(pace.wait(&fd, 1));
  CHECK((fd.revents & POLLIN) != 0);
  CHECK(pace.next_nap() == Pace::first_nap);
  ::close(p[0]);
  ::close(p[1]);
}

TEST_CASE("MpiPace.while_another_thread_looks_it_naps_at_once_and_is_never_quiet") {
  // The hub's thread while a waiting thread relays: no spinning, but naps short enough that the
  // first one after the waiting thread leaves is not a quiet spell's (at most longest_nap).
  ::setenv("FERRY_MPI_SPIN_US", "1000000", 1);  // a spin window of 1 s
  Pace pace;
  ::unsetenv("FERRY_MPI_SPIN_US");
  pace.active();
  pace.idle();
  CHECK(pace.wait(nullptr, 0, microseconds(1)));  // napped, inside the spin window
  auto until = Clock::now() + Pace::quiet_after * 2;
  while (Clock::now() < until) {
    pace.idle();
    pace.wait(nullptr, 0, microseconds(1));
  }
  CHECK(pace.next_nap() == Pace::longest_nap);
  pace.active();
  CHECK_FALSE(pace.wait(nullptr, 0));  // active again: it spins (yields) in its window
}

TEST_CASE("MpiPace.an_expected_answer_keeps_it_spinning_past_the_window_and_no_longer") {
  // The hub after relaying a task: it looks for the agent's answer without napping until the
  // expectation ends, even when the last activity is older than the spin window.
  ::setenv("FERRY_MPI_SPIN_US", "1", 1);  // a spin window of 1 µs: over at once
  Pace pace;
  ::unsetenv("FERRY_MPI_SPIN_US");
  REQUIRE(pace.expect_window() == microseconds(Pace::expect_window_factor));
  pace.active();
  auto until = Clock::now() + std::chrono::milliseconds(20);
  pace.expect(until);
  pace.expect(Clock::now());  // an earlier end does not shorten it
  int yields = 0;
  while (Clock::now() < until - std::chrono::milliseconds(1)) {
    bool napped = pace.wait(nullptr, 0, microseconds(1));
    if (Clock::now() < until) {  // decided before `until`: it must have spun
      CHECK_FALSE(napped);
      ++yields;
    }
  }
  CHECK(yields > 0);
  while (Clock::now() < until) {
  }
  CHECK(pace.wait(nullptr, 0, microseconds(1)));  // expectation over, window over: it naps
}

TEST_CASE("MpiPace.a_loop_that_never_spins_ignores_expectations") {
  Pace pace = napping();
  pace.expect(Clock::now() + std::chrono::seconds(10));
  CHECK(pace.wait(nullptr, 0, microseconds(1)));
}
