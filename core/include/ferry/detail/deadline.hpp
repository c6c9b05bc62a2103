// SPDX-License-Identifier: BSD-3-Clause
// A user's timeout as a deadline on ferry's clock: the one conversion every wait uses, saturating
// where a plain `now + ceil<duration>(timeout)` would overflow.
#pragma once

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <type_traits>

namespace ferry::detail {

using Clock = std::chrono::steady_clock;

/**
@brief `from + timeout` on Clock, for any duration (integral or floating point, any period),
rounded up to the clock's tick and saturating: a timeout the clock cannot represent from `from`
(a thousand years, `seconds::max()`, `duration<double>` +infinity) gives `time_point::max()`,
which every wait of ferry treats as "no deadline". A timeout of zero or less gives `from` (the
deadline has passed: do not wait). A NaN timeout throws std::invalid_argument (as Python's
waits raise ValueError): it is a mistake, not a wait of some length.
*/
template <class Rep, class Period>
Clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout, Clock::time_point from) {
  using Exact = std::chrono::duration<long double, Clock::period>;
  if constexpr (std::is_floating_point_v<Rep>) {
    if (std::isnan(timeout.count())) throw std::invalid_argument("ferry: a timeout must not be NaN");
  }
  // In long double ticks: wide enough for any integer count and for infinity, so the comparison
  // itself cannot overflow (an integral duration in picoseconds or in years alike).
  const Exact wanted(timeout);
  if (!(wanted.count() > 0)) return from;
  const Exact room(Clock::time_point::max() - from);
  if (wanted >= room) return Clock::time_point::max();
  if constexpr (std::is_floating_point_v<Rep>) {
    // A decimal count of seconds is rarely exact in binary: 1e-9 is 1.0000000000000000622 ns, and
    // rounded up it became 2 ns (a deadline of 1 ns said "2 ns"). Within a millionth of a tick of a
    // whole tick, it is that tick.
    const long double whole = std::round(wanted.count());
    if (std::fabs(wanted.count() - whole) <= 1e-6L)
      return from + Clock::duration(static_cast<Clock::rep>(whole));
  }
  return from + std::chrono::ceil<Clock::duration>(wanted);
}

/// deadline_after(timeout, Clock::now()).
template <class Rep, class Period>
Clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) {
  return deadline_after(timeout, Clock::now());
}

/// A timeout as Clock's duration, saturating at `Clock::duration::max()` (deadline_after from the
/// clock's epoch): for an interface that takes a duration (a worker's idle time on its command
/// line).
template <class Rep, class Period>
Clock::duration clock_duration(std::chrono::duration<Rep, Period> timeout) {
  return deadline_after(timeout, Clock::time_point{}).time_since_epoch();
}

}  // namespace ferry::detail
