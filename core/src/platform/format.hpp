// SPDX-License-Identifier: BSD-3-Clause
// The one way ferry's messages spell a duration ("200 ms") or a size ("64 KiB"), and the one
// UTF-8 check of text that ferry writes out (a trace, ferry report's page).
//
// Issue 16: a deadline of 200 ms read "0.200000 s", and each message formatted numbers its own
// way. Every message that names a duration or a size goes through these two functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// A duration in the largest unit that keeps it readable: "850 ns", "12 µs", "200 ms", "1.5 s",
/// "42 s", "3 min 2 s", "2 h 5 min", "3 d 4 h". Below ten units one decimal is kept ("1.5 s"),
/// dropped when it is zero ("2 s"); values are rounded to what is shown ("999.97 ms" is "1 s").
/// Negative durations get a leading '-'.
FERRY_INTERNAL_API std::string format_duration(std::chrono::nanoseconds d);

/// A size in binary units: "1 byte", "512 bytes", "64 KiB", "1.5 GiB". A figure that is not
/// exact is followed by the exact count, so that a size never looks equal to a limit it exceeds:
/// "1.2 MiB (1300000 bytes)". Approximations round down ("1.9 GiB", never "2 GiB", for 2 GiB - 1).
FERRY_INTERNAL_API std::string format_size(std::uint64_t bytes);

/// `text` cut to at most `limit` bytes (at a UTF-8 character's start), followed by how much was
/// left out: "... (N bytes more)". Unchanged when it fits.
std::string cut_text(std::string text, std::size_t limit);

/// Length of the well-formed UTF-8 sequence at s[i] (Unicode's table 3-7: no overlong forms, no
/// surrogates, nothing past U+10FFFF), or 0 when there is none. i < s.size().
FERRY_INTERNAL_API std::size_t utf8_length(std::string_view s, std::size_t i) noexcept;

/// Whether the well-formed UTF-8 character of `n` bytes at s[i] (utf8_length) must not reach a
/// terminal as it is although it is no C0 control: a C1 control (U+0080..U+009F: U+009B is a
/// CSI), a bidirectional control (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069: it
/// reorders what follows it on screen) or the line or paragraph separator (U+2028, U+2029).
FERRY_INTERNAL_API bool escaped_on_terminal(std::string_view s, std::size_t i, std::size_t n) noexcept;

/// `text` as a terminal may show it: what a task, a worker or a file name says may carry escape
/// sequences (retitle the window, rewrite what was printed, or with TIOCSTI-like replies type
/// into the shell). Control characters but tab, DEL, the characters of escaped_on_terminal and
/// bytes not part of a well-formed UTF-8 character come out as \xNN, one per byte; a backslash
/// as \\ (unless not `escape_backslash`), so that text cannot pass for an escape ("\x0a" typed
/// is "\\x0a" shown); a newline as
/// `newline`; other UTF-8 as it is. At most `cap` bytes go into `out` (never part of a piece);
/// returns how many, and sets `*used` (if given) to the bytes of `text` shown. Allocates
/// nothing: an interposed open() calls it (debug_line_into).
FERRY_INTERNAL_API std::size_t terminal_text_into(char* out, std::size_t cap, std::string_view text,
                                                  std::string_view newline, std::size_t* used = nullptr,
                                                  bool escape_backslash = true) noexcept;
/// terminal_text_into into a string, a newline shown as `newline` (kept by default).
FERRY_INTERNAL_API std::string terminal_text(std::string_view text, std::string_view newline = "\n");
/// A program's output on its way to a terminal (a sandbox's relay copies a task's stdout and
/// stderr so when the host's are terminals): what a task prints cannot drive the terminal (OSC 52
/// writes the user's clipboard, OSC 8 makes links, others retitle the window, query it or
/// rewrite the screen), yet its lines, colours and progress bars show. Kept as they are: text
/// (well-formed UTF-8 but the characters of escaped_on_terminal, backslashes included; with
/// `ascii_only`, for a terminal that is not in UTF-8, no byte past ASCII: U+201D is E2 80 9D, and
/// 0x9D is OSC to an 8-bit terminal), newline, tab, carriage return and backspace, and two kinds
/// of CSI sequence of at most `terminal_sequence_max` bytes: SGR (ESC [ digits, ';' or ':' m:
/// colours and styles) and EL (ESC [ 0, 1 or 2 K: erasing the line). Any other control byte, a
/// malformed byte and a character of escaped_on_terminal come out as \xNN, one per byte, an ESC
/// that starts no kept sequence among them (what followed it shows as text). After an SGR other
/// than a reset, the next newline and the end of each call's output are preceded by ESC [ 0 m,
/// and the next call's output begins with the SGRs still in force: a task's colours (black on
/// black, concealed) hide nothing the host or another worker prints between two of its writes,
/// nor the user's prompt after it.
inline constexpr std::size_t terminal_sequence_max = 32;
inline constexpr std::size_t terminal_sgr_max = 64;  // the SGRs in force that are kept
struct TerminalOutput {
  bool ascii_only = false;  // escape every byte past ASCII
  bool coloured = false;    // an SGR passed since the last reset (kept from call to call)
  char sgr[terminal_sgr_max] = {};  // the SGRs since then (the last alone when they do not fit)
  std::size_t sgr_size = 0;
};
/// Writes `in` shown for a terminal to `out`: at most 5 x `in.size()` + `terminal_sgr_max` + 4
/// bytes; returns how many. Unless `end`, a character or kept sequence cut by the end of `in` is left for the next
/// call with the bytes that follow: `*used` is set to the bytes of `in` consumed (at least
/// `in.size()` - `terminal_sequence_max`). Allocates nothing (a relay runs it in a child forked
/// from a worker).
FERRY_INTERNAL_API std::size_t terminal_output_into(char* out, std::string_view in, bool end, std::size_t* used,
                                                    TerminalOutput& state) noexcept;
/// Where to cut `shown` (terminal_output_into's output) at or before `at_most` so that no kept
/// sequence or UTF-8 character is split between two writes: another writer's bytes between them
/// (a second worker's relay on the same terminal) would complete an ESC left at the end of the
/// first, "[6n" being text to its own filter. At least `at_most` - `terminal_sequence_max`.
FERRY_INTERNAL_API std::size_t terminal_cut(std::string_view shown, std::size_t at_most) noexcept;
/// Whether the locale this process's environment names (LC_ALL, else LC_CTYPE, else LANG, as
/// setlocale reads them) is UTF-8, as a terminal it writes to is taken to be: one in another
/// (8-bit) locale reads bytes 0x80 to 0x9F of UTF-8 text as C1 controls (0x9B is CSI). "C",
/// "POSIX", unset or no codeset ("en_US": Latin-1) are not UTF-8. Allocates nothing.
FERRY_INTERNAL_API bool utf8_locale() noexcept;

/// What a worker or task said, as an error's what() carries it: terminal_text, but a backslash
/// and a newline as they are (a message of several lines stays so; what() is for reading, the
/// exact bytes are the error's remote_message(), remote_type(), detail). A task cannot make a
/// host that prints what() send escape sequences to its terminal or log.
/// (A newline as `newline` when given: "\\x0a" keeps a text on one line.)
FERRY_INTERNAL_API std::string message_text(std::string_view text, std::string_view newline = "\n");

}  // namespace ferry::detail
