// SPDX-License-Identifier: BSD-3-Clause
#include "platform/signals.hpp"

#include <string.h>

namespace ferry::detail {

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  if (abbrev) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

}  // namespace ferry::detail
