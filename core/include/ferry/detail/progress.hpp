// SPDX-License-Identifier: BSD-3-Clause
// The progress bar of MapOptions::progress and `ferry map`: one line on stderr, redrawn in place
// at most 10 times a second.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/**
@brief done/total items, rate and ETA on one line of stderr, redrawn with '\r'. Disabled (every
call a no-op) unless constructed with `enabled`; the caller decides (isatty(2), --no-progress).
*/
class FERRY_API ProgressBar {
 public:
  /// `unit`: what is counted ("items", "lines").
  ProgressBar(bool enabled, std::optional<std::size_t> total, std::string unit = "items");
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const noexcept { return enabled_; }
  /// Redraws if the last frame is at least 100 ms old (or `force`).
  void update(std::size_t done, bool force = false);
  /// Draws the final state, then erases the line.
  void finish(std::size_t done);
  /// Erases the line (before an error message goes to stderr); the next update redraws it.
  void clear();

  /// The text of one frame (no '\r'), fitted to `columns`; exposed for its format.
  std::string frame(std::size_t done, double seconds, std::size_t columns) const;

 private:
  bool enabled_;
  std::optional<std::size_t> total_;
  std::string unit_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool drawn_ = false;
  std::size_t last_done_ = 0;
};

}  // namespace ferry::detail
