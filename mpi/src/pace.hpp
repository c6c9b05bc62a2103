// SPDX-License-Identifier: BSD-3-Clause
// When the MPI hub and the node agents look for work again. MPI gives no descriptor to wait on
// (shared memory completes messages behind MPI_Iprobe's back, TCP only inside MPI calls), so a
// loop that must answer within microseconds polls; one that polls forever burns a core.
#pragma once

#include <poll.h>

#include <chrono>

namespace ferry::mpi::detail {

/// Adaptive pacing: spin (yielding the CPU to anything else runnable) for a short window after
/// the last activity, then nap in ppoll() on the loop's descriptors, the nap doubling from
/// `first_nap` up to `longest_nap`, and up to `longest_quiet_nap` once nothing has happened for
/// `quiet_after`. Activity on a descriptor ends a nap at once; an MPI message is seen at the next
/// look, so it waits at most one nap. docs/benchmarks.md has the measurements behind the defaults
/// (FERRY_MPI_SPIN_US sets the window; 0 never spins).
class Pace {
 public:
  using Clock = std::chrono::steady_clock;

  static constexpr std::chrono::microseconds first_nap{50};
  static constexpr std::chrono::microseconds longest_nap{2000};
  /// Each timed wake-up costs a virtual machine tens of µs of CPU (39 µs on the test machine in
  /// December: 2 ms naps alone were 1.8 % of a core), so a loop quiet for this long naps longer:
  /// up to longest_quiet_nap, the wait of the first MPI message after a quiet spell.
  static constexpr std::chrono::milliseconds quiet_after{100};
  static constexpr std::chrono::microseconds longest_quiet_nap{8000};

  Pace();

  /// Something happened: keep spinning for the whole window from now.
  void active() noexcept {
    last_active_ = Clock::now();
    nap_ = first_nap;
    spin_off_ = false;
  }

  /// An answer is expected from a peer MPI gives no descriptor for (the hub relayed a task to an
  /// agent): keep spinning until `until`, however long ago the last activity was. Without it, a
  /// host whose waiting thread does not relay (it blocks: after slow tasks it expects slow ones)
  /// and an agent fell into step, each seeing the other's message only after a nap: 4-8 ms per
  /// call of 50 µs (docs/benchmarks.md). Ignored when the loop never spins (spin window 0).
  /// Called when no other thread looks: a live expectation also ends idle().
  void expect(Clock::time_point until) noexcept {
    if (spin_.count() == 0) return;
    if (until > expect_until_) expect_until_ = until;
    if (expect_until_ > Clock::now()) spin_off_ = false;
  }

  /// How long a relay waits for an answer without napping: expect_window_factor spin windows.
  static constexpr int expect_window_factor = 4;
  std::chrono::microseconds expect_window() const noexcept { return spin_ * expect_window_factor; }

  /// Another thread does the looking for now (the hub's relay run by a waiting thread): the next
  /// wait() naps, however recent the last activity. That thread's looking is activity: naps do
  /// not grow past longest_nap meanwhile (the first nap after it must not be a quiet one).
  void idle() noexcept {
    last_active_ = Clock::now();
    spin_off_ = true;
  }

  /// Waits before the next look: a yield inside the spin window, else a nap on `fds` (which may
  /// be empty; negative descriptors are ignored, as poll does) of at most `longest`. True when it
  /// napped (`fds` then hold what ppoll() returned), false when it yielded.
  bool wait(pollfd* fds, nfds_t count, std::chrono::microseconds longest = longest_quiet_nap);

  std::chrono::microseconds spin_window() const noexcept { return spin_; }

  /// How long the next wait() naps, if it naps (before its `longest`).
  std::chrono::microseconds next_nap() const noexcept { return nap_; }

 private:
  /// The longest nap now: longer once the loop has been quiet for quiet_after.
  std::chrono::microseconds cap(Clock::time_point now) const noexcept {
    return now - last_active_ >= spin_ + quiet_after ? longest_quiet_nap : longest_nap;
  }

  std::chrono::microseconds spin_;
  std::chrono::microseconds nap_ = first_nap;
  Clock::time_point last_active_ = Clock::now();
  bool spin_off_ = false;  // idle(): nap even inside the spin window, until active()
  Clock::time_point expect_until_{};  // expect(): spin until then
};

}  // namespace ferry::mpi::detail
