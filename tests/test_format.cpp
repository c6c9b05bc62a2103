// SPDX-License-Identifier: BSD-3-Clause
// The duration and size formatter every ferry message uses (issue 16: "0.200000 s").
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "platform/format.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::detail::format_duration;
using ferry::detail::format_size;

constexpr std::uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024;

/// Each value and the text it must format to.
template <class T, class Format>
void check_all(Format format, std::initializer_list<std::pair<T, const char*>> cases) {
  for (const auto& [value, text] : cases) {
    CAPTURE(text);
    CHECK(format(value) == std::string(text));
  }
}
void durations(std::initializer_list<std::pair<std::chrono::nanoseconds, const char*>> cases) {
  check_all<std::chrono::nanoseconds>(format_duration, cases);
}
void sizes(std::initializer_list<std::pair<std::uint64_t, const char*>> cases) {
  check_all<std::uint64_t>(format_size, cases);
}

}  // namespace

TEST_CASE("Format.duration.picks_a_readable_unit") {
  durations({{200ms, "200 ms"}, {1500ms, "1.5 s"}, {182s, "3 min 2 s"}, {850ns, "850 ns"},
             {12us, "12 µs"}, {42s, "42 s"}, {2h + 5min, "2 h 5 min"}, {76h, "3 d 4 h"}});
}

TEST_CASE("Format.duration.one_decimal_below_ten_and_none_when_zero") {
  durations({{2s, "2 s"}, {2500us, "2.5 ms"}, {9900ms, "9.9 s"}, {12300ms, "12 s"},
             {3min, "3 min"}, {1h, "1 h"}, {24h, "1 d"}});
}

TEST_CASE("Format.duration.rounding_carries_into_the_next_unit") {
  durations({{999'970us, "1 s"}, {999'600ns, "1 ms"}, {59'600ms, "1 min"}, {9'960ms, "10 s"},
             {3599'600ms, "1 h"}, {1'234'567ns, "1.2 ms"}});
}

TEST_CASE("Format.duration.zero_negative_and_extremes") {
  // The whole range of nanoseconds (about 292 years), without overflow.
  durations({{0s, "0 s"}, {-200ms, "-200 ms"}, {1ns, "1 ns"},
             {std::chrono::nanoseconds::max(), "106752 d"},
             {std::chrono::nanoseconds::min(), "-106752 d"}});
}

TEST_CASE("Format.size.exact_values_in_binary_units") {
  sizes({{0, "0 bytes"}, {1, "1 byte"}, {1023, "1023 bytes"}, {64 * KiB, "64 KiB"},
         {GiB + GiB / 2, "1.5 GiB"}, {MiB, "1 MiB"}, {2 * GiB, "2 GiB"},
         {std::uint64_t{1} << 60, "1 EiB"}});
}

TEST_CASE("Format.size.approximations_round_down_and_give_the_exact_count") {
  // Rounded down: just under a limit never prints as the limit.
  sizes({{1300000, "1.2 MiB (1300000 bytes)"},
         {2 * GiB - 1, "1.9 GiB (2147483647 bytes)"},
         {KiB + 1, "1 KiB (1025 bytes)"},
         {100 * MiB + 1, "100 MiB (104857601 bytes)"},
         {std::numeric_limits<std::uint64_t>::max(), "15 EiB (18446744073709551615 bytes)"}});
}

TEST_CASE("Format.utf8_length.well_formed_sequences_and_every_kind_of_bad_one") {
  using ferry::detail::utf8_length;
  using namespace std::string_view_literals;
  // Well formed: one to four bytes, at the edges of each range.
  CHECK(utf8_length("a"sv, 0) == 1);
  CHECK(utf8_length("\x7F"sv, 0) == 1);
  CHECK(utf8_length("\xC2\x80"sv, 0) == 2);          // U+0080
  CHECK(utf8_length("\xE2\x80\xA6"sv, 0) == 3);      // …
  CHECK(utf8_length("\xED\x9F\xBF"sv, 0) == 3);      // U+D7FF, just below the surrogates
  CHECK(utf8_length("\xF0\x90\x80\x80"sv, 0) == 4);  // U+10000
  CHECK(utf8_length("\xF4\x8F\xBF\xBF"sv, 0) == 4);  // U+10FFFF
  CHECK(utf8_length("x\xC3\xA9"sv, 1) == 2);         // at an offset
  // Bad: a lone continuation byte, overlong forms, surrogates, past U+10FFFF, cut short, a
  // continuation byte missing.
  CHECK(utf8_length("\x80"sv, 0) == 0);
  CHECK(utf8_length("\xC0\xAF"sv, 0) == 0);
  CHECK(utf8_length("\xC1\xBF"sv, 0) == 0);
  CHECK(utf8_length("\xE0\x9F\xBF"sv, 0) == 0);
  CHECK(utf8_length("\xF0\x8F\xBF\xBF"sv, 0) == 0);
  CHECK(utf8_length("\xED\xA0\x80"sv, 0) == 0);      // U+D800
  CHECK(utf8_length("\xF4\x90\x80\x80"sv, 0) == 0);  // U+110000
  CHECK(utf8_length("\xF5\x80\x80\x80"sv, 0) == 0);
  // Cut short by the view's end, with a valid continuation byte right after it in memory.
  CHECK(utf8_length(std::string_view("\xE2\x80\x80", 2), 0) == 0);
  CHECK(utf8_length(std::string_view("\xF0\x90\x80\x80", 3), 0) == 0);
  CHECK(utf8_length(std::string_view("\xC3\xA9", 1), 0) == 0);
  CHECK(utf8_length("\xFF"sv, 0) == 0);
  CHECK(utf8_length("\xE2\x28\xA1"sv, 0) == 0);
  CHECK(utf8_length("\xF0\x90\x80\x28"sv, 0) == 0);
}

TEST_CASE("Format.terminal_text.escapes_backslashes_and_bidirectional_controls") {
  using ferry::detail::terminal_text;
  // A backslash was shown as itself, so text could spell "\x0a" and pass for an escaped newline;
  // a bidirectional control (U+202E, U+2066) was shown as it is and reordered what followed it.
  CHECK(terminal_text("a\\x0ab") == "a\\\\x0ab");
  CHECK(terminal_text("\\") == "\\\\");
  CHECK(terminal_text("name\xe2\x80\xae" "txt.exe") == "name\\xe2\\x80\\xaetxt.exe");
  for (const char* bidi : {"\xd8\x9c", "\xe2\x80\x8e", "\xe2\x80\x8f", "\xe2\x80\xaa", "\xe2\x80\xab",
                           "\xe2\x80\xac", "\xe2\x80\xad", "\xe2\x80\xae", "\xe2\x81\xa6", "\xe2\x81\xa7",
                           "\xe2\x81\xa8", "\xe2\x81\xa9", "\xe2\x80\xa8", "\xe2\x80\xa9"}) {
    CAPTURE(bidi);
    const std::string shown = terminal_text(bidi);
    CHECK(shown.find(bidi) == std::string::npos);
    CHECK(shown.size() == 4 * std::string_view(bidi).size());
    CHECK(shown.starts_with("\\x"));
  }
  // Their neighbours are text: an en dash, a zero-width joiner (emoji), U+202F, U+2065, U+206A.
  for (const char* text : {"\xe2\x80\x93", "\xe2\x80\x8d", "\xe2\x80\xaf", "\xe2\x81\xa5", "\xe2\x81\xaa", "\xd8\x9b"}) {
    CAPTURE(text);
    CHECK(terminal_text(text) == text);
  }
  // A newline as asked: kept, or shown as given (an indented continuation line, an escape).
  CHECK(terminal_text("one\ntwo") == "one\ntwo");
  CHECK(terminal_text("one\ntwo", "\n    ") == "one\n    two");
  CHECK(terminal_text("\n\n\n", "\n      ") == "\n      \n      \n      ");  // longer than 4 a byte
  CHECK(terminal_text("a\nb", "\\x0a") == "a\\x0ab");
}

namespace {

/// terminal_output_into over `in` fed in pieces cut at each of `cuts` (a relay's reads), then
/// ended: what a terminal is sent.
std::string output_shown(std::string_view in, std::initializer_list<std::size_t> cuts = {},
                         bool ascii_only = false) {
  using ferry::detail::terminal_output_into;
  std::string out, pending;
  std::size_t from = 0;
  ferry::detail::TerminalOutput state;
  state.ascii_only = ascii_only;
  auto feed = [&](std::string_view piece, bool end) {
    pending += piece;
    std::string shown(5 * pending.size() + ferry::detail::terminal_sgr_max + 4, '\0');
    std::size_t used = 0;
    shown.resize(terminal_output_into(shown.data(), pending, end, &used, state));
    CHECK(used + ferry::detail::terminal_sequence_max >= pending.size());
    out += shown;
    pending.erase(0, used);
  };
  for (std::size_t cut : cuts) {
    feed(in.substr(from, cut - from), false);
    from = cut;
  }
  feed(in.substr(from), true);
  CHECK(pending.empty());
  return out;
}

}  // namespace

TEST_CASE("Format.terminal_output.keeps_text_lines_colours_and_progress_bars") {
  using namespace std::string_view_literals;
  for (std::string_view text : {"plain text\n"sv, "tab\there\r\n"sv, "back\bspace"sv, "a\\x1b stays\n"sv,
                                "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n"sv, "\x1b[31mred\x1b[0m\n"sv,
                                "\x1b[1;38;5;208mbold orange\x1b[m"sv, "\x1b[38:2:10:20:30mtrue colour\x1b[0m"sv,
                                "\r\x1b[K 42%"sv, "\r\x1b[2K 43%"sv, "\x1b[0K\x1b[1K"sv}) {
    CAPTURE(text);
    CHECK(output_shown(text) == text);
  }
}

TEST_CASE("Format.terminal_output.colours_end_with_their_line") {
  // A task's colours outlived its output: black on black, or concealed (SGR 8), hid the host's
  // next message and the user's prompt. A reset before the next newline, and at the end.
  CHECK(output_shown("\x1b[8mhidden\nshown\n") == "\x1b[8mhidden\x1b[0m\nshown\n");
  CHECK(output_shown("\x1b[30;40mblack") == "\x1b[30;40mblack\x1b[0m");
  CHECK(output_shown("\x1b[31mred\x1b[m\n") == "\x1b[31mred\x1b[m\n");  // reset already
  // Cut between reads, the state carries over.
  CHECK(output_shown("\x1b[31mred\nplain\n", {4, 9}) == "\x1b[31mred\x1b[0m\nplain\n");
  // Each read's output ends in the default colours (another worker's line, or the host's, may
  // come between two writes), and the next begins with those in force.
  CHECK(output_shown("\x1b[8m\x1b[31mhidden\nshown\n", {12}) ==
        "\x1b[8m\x1b[31mhid\x1b[0m" "\x1b[8m\x1b[31mden\x1b[0m\nshown\n");
}

TEST_CASE("Format.terminal_output.a_terminal_not_in_utf8_gets_no_byte_past_ascii") {
  // U+201D is E2 80 9D: to a terminal in an 8-bit character set, 0x9D is OSC (and 0x9B CSI,
  // 0x9C ST): "\u201d52;c;...\u201c" wrote the clipboard.
  CHECK(output_shown("\xe2\x80\x9d" "52;c;aGk=\xe2\x80\x9c", {}, true) == "\\xe2\\x80\\x9d52;c;aGk=\\xe2\\x80\\x9c");
  CHECK(output_shown("caf\xc3\xa9\n", {}, true) == "caf\\xc3\\xa9\n");
  CHECK(output_shown("caf\xc3\xa9\n") == "caf\xc3\xa9\n");  // UTF-8: as it is
}

TEST_CASE("Format.terminal_output.a_write_is_not_cut_inside_a_kept_sequence_or_character") {
  // Two workers' relays write to one terminal: an ESC ending one write and "[6n" (text to its
  // own relay) at the start of another's made a cursor query whose answer is typed input.
  using ferry::detail::terminal_cut;
  const std::string text = std::string(4095, 'x') + "\x1b[0mtail";
  CHECK(terminal_cut(text, 4096) == 4095);
  CHECK(terminal_cut(text, 4098) == 4095);  // ESC [ 0 before the cut, m after
  CHECK(terminal_cut(text, 4099) == 4099);  // after the sequence's end
  const std::string colour = std::string(4090, 'x') + "\x1b[38;5;208mtail";
  CHECK(terminal_cut(colour, 4096) == 4090);
  const std::string euro = std::string(4095, 'x') + "\xe2\x82\xac";
  CHECK(terminal_cut(euro, 4096) == 4095);
  CHECK(terminal_cut(euro, 4097) == 4095);
  CHECK(terminal_cut(euro, 4098) == 4098);
  CHECK(terminal_cut("short", 4096) == 5);
  // An escaped ESC is text: "\x1b[6n" shown as backslash, x, 1, b can be cut anywhere.
  const std::string escaped = std::string(4094, 'x') + "\\x1b[6n";
  CHECK(terminal_cut(escaped, 4096) == 4096);
}

TEST_CASE("Format.terminal_output.escapes_what_would_drive_the_terminal") {
  // OSC 52 (the clipboard), OSC 8 (a link), a title, a cursor move, a query (its answer is typed
  // into the shell), a mode switch, DCS, 8-bit CSI, BEL, DEL, bidirectional controls, bad bytes.
  CHECK(output_shown("\x1b]52;c;cm0gLXJmIH4K\x07") == "\\x1b]52;c;cm0gLXJmIH4K\\x07");
  CHECK(output_shown("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "\\x1b]8;;http://x\\x1b\\link\\x1b]8;;\\x1b\\");
  CHECK(output_shown("\x1b[2J\x1b[H") == "\\x1b[2J\\x1b[H");
  CHECK(output_shown("\x1b[6n\x1b[21t") == "\\x1b[6n\\x1b[21t");
  CHECK(output_shown("\x1b[?1049h") == "\\x1b[?1049h");
  CHECK(output_shown("\x1b[3K") == "\\x1b[3K");
  CHECK(output_shown("\x1bP$q\x1b\\") == "\\x1bP$q\\x1b\\");
  CHECK(output_shown("\xc2\x9b" "31m") == "\\xc2\\x9b31m");
  CHECK(output_shown("\x9b" "6n") == "\\x9b6n");
  CHECK(output_shown("bell\a\x7f") == "bell\\x07\\x7f");
  CHECK(output_shown("file\xe2\x80\xae" "txt.exe") == "file\\xe2\\x80\\xaetxt.exe");
  CHECK(output_shown(std::string_view("nul\0", 4)) == "nul\\x00");
  // A colour sequence longer than the longest kept is not one: its ESC is escaped.
  const std::string long_sgr = "\x1b[" + std::string(40, '1') + "m";
  CHECK(output_shown(long_sgr) == "\\x1b[" + std::string(40, '1') + "m");
}

TEST_CASE("Format.terminal_output.a_sequence_or_character_cut_between_reads_is_judged_whole") {
  // A relay reads what it gets: a colour or a character cut in two must not be escaped as two
  // halves, nor an OSC pass because its ESC ended one read.
  const std::string colour = "ab\x1b[31mred\x1b[0m\n";
  for (std::size_t cut = 1; cut < colour.size(); ++cut) {
    CAPTURE(cut);
    // A read that ends inside the red ends in the default colours, and the next restores red.
    std::string shown = output_shown(colour, {cut});
    for (std::size_t at; (at = shown.find("\x1b[0m\x1b[31m")) != std::string::npos;) shown.erase(at, 9);
    CHECK(shown == colour);
  }
  const std::string euro = "price \xe2\x82\xac\n";
  for (std::size_t cut = 1; cut < euro.size(); ++cut) {
    CAPTURE(cut);
    CHECK(output_shown(euro, {cut}) == euro);
  }
  const std::string osc = "x\x1b]52;c;AAAA\x07";
  for (std::size_t cut = 1; cut < osc.size(); ++cut) {
    CAPTURE(cut);
    CHECK(output_shown(osc, {cut}) == "x\\x1b]52;c;AAAA\\x07");
  }
  // At the end of the stream what is held is shown escaped: nothing waits for ever.
  CHECK(output_shown("\x1b") == "\\x1b");
  CHECK(output_shown("\x1b[31") == "\\x1b[31");
  CHECK(output_shown("\xe2\x82") == "\\xe2\\x82");
}
