// SPDX-License-Identifier: BSD-3-Clause
// FERRY_DEBUG=1: one line per event on stderr, "[ferry <pid>] ...". Read once, through Config.
#pragma once

#include <ferry/detail/export.hpp>

namespace ferry::detail {

FERRY_INTERNAL_API void debug_log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace ferry::detail
