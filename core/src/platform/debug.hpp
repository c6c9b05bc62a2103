// SPDX-License-Identifier: BSD-3-Clause
// FERRY_DEBUG=1: one line per event on stderr, "[ferry <pid>] ...". Read once, through Config.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

FERRY_INTERNAL_API void debug_log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

/// One line of the debug log, "[ferry <pid>] message\n", into `out` (at most `cap` bytes, the
/// message cut with "..." to fit); returns its length. Messages carry what workers and tasks said
/// (a sandbox's report, a protocol error's detail, a path): shown as terminal_text shows text
/// (format.hpp), a newline starting a line indented two spaces, so that no such text moves the
/// terminal's cursor, starts an escape sequence or forges a line of the log. Allocates nothing
/// (an interposed open() writes one).
FERRY_INTERNAL_API std::size_t debug_line_into(char* out, std::size_t cap, int pid, std::string_view message) noexcept;
/// What vsnprintf/snprintf wrote into `buf` (`cap` bytes) when it returned `n`: the text, its
/// last three bytes "..." when it did not fit; empty when n < 0.
FERRY_INTERNAL_API std::string_view formatted_text(char* buf, std::size_t cap, int n) noexcept;
/// debug_line_into as a string.
FERRY_INTERNAL_API std::string debug_line(int pid, std::string_view message);

}  // namespace ferry::detail
