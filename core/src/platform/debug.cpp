// SPDX-License-Identifier: BSD-3-Clause
#include "platform/debug.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "platform/config.hpp"

namespace ferry::detail {

namespace {
// Read once when libferry is loaded, before any thread of ours exists (getenv must not race with
// an application's setenv).
const bool debug_enabled = Config::read().debug;
}  // namespace

std::string debug_line(int pid, std::string_view message) {
  std::string line = "[ferry " + std::to_string(pid) + "] ";
  line.reserve(line.size() + message.size() + 1);
  for (const char ch : message) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      line += "\n  ";
    } else if (c < 0x20 || c == 0x7F) {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      line += escaped;
    } else {
      line += ch;
    }
  }
  line += '\n';
  return line;
}

void debug_log(const char* fmt, ...) {
  if (!debug_enabled) return;
  char message[4096];  // at most 4 KiB of a message
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  std::string_view text(message, std::min(static_cast<std::size_t>(n), sizeof message - 1));
  std::string line = debug_line(static_cast<int>(::getpid()), text);
  if (static_cast<std::size_t>(n) > text.size()) line.insert(line.size() - 1, "...");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace ferry::detail
