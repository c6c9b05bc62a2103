// SPDX-License-Identifier: BSD-3-Clause
#include "platform/debug.hpp"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "platform/config.hpp"
#include "platform/format.hpp"

namespace ferry::detail {

namespace {
// Read once when libferry is loaded, before any thread of ours exists (getenv must not race with
// an application's setenv).
const bool debug_enabled = Config::read().debug;
}  // namespace

std::size_t debug_line_into(char* out, std::size_t cap, int pid, std::string_view message) noexcept {
  if (cap < 64) return 0;
  int n = std::snprintf(out, cap, "[ferry %d] ", pid);
  std::size_t at = n > 0 ? static_cast<std::size_t>(n) : 0;
  std::size_t used = 0;
  at += terminal_text_into(out + at, cap - at - 4, message, "\n  ", &used);  // room for "...\n"
  if (used < message.size()) {
    std::memcpy(out + at, "...", 3);
    at += 3;
  }
  out[at++] = '\n';
  return at;
}

std::string debug_line(int pid, std::string_view message) {
  std::string out(64 + 4 * message.size() + 3 * 16, '\0');
  out.resize(debug_line_into(out.data(), out.size(), pid, message));
  return out;
}

std::string_view formatted_text(char* buf, std::size_t cap, int n) noexcept {
  if (n < 0 || cap == 0) return {};
  if (static_cast<std::size_t>(n) >= cap) {
    if (cap >= 4) std::memcpy(buf + cap - 4, "...", 3);
    return {buf, cap - 1};
  }
  return {buf, static_cast<std::size_t>(n)};
}

void debug_log(const char* fmt, ...) {
  if (!debug_enabled) return;
  char message[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  std::string_view text = formatted_text(message, sizeof message, n);
  char line[4 * sizeof message + 64];
  std::size_t size = debug_line_into(line, sizeof line, static_cast<int>(::getpid()), text);
  std::fwrite(line, 1, size, stderr);
}

}  // namespace ferry::detail
