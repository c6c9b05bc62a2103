// SPDX-License-Identifier: BSD-3-Clause
// The progress bar of MapOptions::progress and `ferry map`: frame text, throttled redraws, clearing.
#include <ferry/detail/progress.hpp>

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

namespace ferry::detail {

namespace {

std::size_t terminal_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::string clock_text(double seconds) {
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

void write_stderr(const std::string& s) {
  // Straight to the descriptor: stderr is unbuffered anyway, and one write keeps a frame whole.
  std::size_t at = 0;
  while (at < s.size()) {
    ssize_t n = ::write(STDERR_FILENO, s.data() + at, s.size() - at);
    if (n <= 0) return;  // a terminal that went away: the bar is cosmetic
    at += static_cast<std::size_t>(n);
  }
}

}  // namespace

ProgressBar::ProgressBar(bool enabled, std::optional<std::size_t> total, std::string unit)
    : enabled_(enabled), total_(total), unit_(std::move(unit)), start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { clear(); }

std::string ProgressBar::frame(std::size_t done, double seconds, std::size_t columns) const {
  double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  char rate_text[32];
  std::snprintf(rate_text, sizeof rate_text, rate < 10 ? "%.1f" : "%.0f", rate);
  std::string text;
  if (total_) {
    std::size_t total = *total_;
    unsigned percent = total ? static_cast<unsigned>(100.0 * static_cast<double>(done) /
                                                     static_cast<double>(total))
                             : 100;
    std::string eta = done >= total ? clock_text(0)
                      : rate > 0    ? clock_text(static_cast<double>(total - done) / rate)
                                    : std::string("--:--");
    text = std::to_string(done) + "/" + std::to_string(total) + " " + unit_ + "  " +
           std::to_string(percent) + "%  " + rate_text + " " + unit_ + "/s  ETA " + eta;
    // A bar in front when the terminal is wide enough; the line never wraps (that would break
    // the in-place redraw).
    constexpr std::size_t width = 30;
    if (columns > text.size() + width + 3) {
      std::size_t filled =
          total ? static_cast<std::size_t>(static_cast<double>(width) * static_cast<double>(done) /
                                           static_cast<double>(total))
                : width;
      if (filled > width) filled = width;
      text = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] " + text;
    }
  } else {
    text = std::to_string(done) + " " + unit_ + "  " + rate_text + " " + unit_ + "/s";
  }
  if (columns > 1 && text.size() > columns - 1) text.resize(columns - 1);
  return text;
}

void ProgressBar::update(std::size_t done, bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  // At most 10 frames a second, also when the line was cleared meanwhile (results written to
  // the same terminal): then the bar is back at the next tick.
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  last_done_ = done;
  drawn_ = true;
  double seconds = std::chrono::duration<double>(now - start_).count();
  // "\x1b[K" erases what a longer previous frame left to the right.
  write_stderr("\r" + frame(done, seconds, terminal_columns()) + "\x1b[K");
}

void ProgressBar::finish(std::size_t done) {
  if (!enabled_) return;
  // The final count is always shown before the line goes, unless it is already on screen.
  if (!drawn_ || last_done_ != done) update(done, /*force=*/true);
  clear();
}

void ProgressBar::clear() {
  if (!enabled_ || !drawn_) return;
  write_stderr("\r\x1b[K");
  drawn_ = false;
}

}  // namespace ferry::detail
