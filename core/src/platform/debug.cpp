// SPDX-License-Identifier: BSD-3-Clause
#include "platform/debug.hpp"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>

#include "platform/config.hpp"

namespace ferry::detail {

namespace {
// Read once when libferry is loaded, before any thread of ours exists (getenv must not race with
// an application's setenv).
const bool debug_enabled = Config::read().debug;
}  // namespace

void debug_log(const char* fmt, ...) {
  if (!debug_enabled) return;
  std::fprintf(stderr, "[ferry %d] ", static_cast<int>(::getpid()));
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

}  // namespace ferry::detail
