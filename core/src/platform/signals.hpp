// SPDX-License-Identifier: BSD-3-Clause
// Names of signals, one way for every message ferry writes ("SIGSEGV", "signal 77").
#pragma once

#include <string>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// "SIGSEGV" etc.; "signal N" for a number the C library has no name for.
FERRY_INTERNAL_API std::string signal_name(int sig);

}  // namespace ferry::detail
