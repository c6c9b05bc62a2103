// SPDX-License-Identifier: BSD-3-Clause
// Durations and sizes as ferry's messages print them (see format.hpp).
#include "platform/format.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

namespace ferry::detail {

namespace {

/// "1.5", or "2" when the tenths are zero.
std::string tenths_text(std::uint64_t tenths) {
  std::string s = std::to_string(tenths / 10);
  if (tenths % 10 != 0) s += "." + std::to_string(tenths % 10);
  return s;
}

/// n / unit rounded to the nearest tenth (counted in tenths), and to the nearest whole: neither
/// computes n * 10 or n + unit / 2, which overflow near the top of the range.
std::uint64_t rounded_tenths(std::uint64_t n, std::uint64_t unit) {
  return n / unit * 10 + (n % unit * 10 + unit / 2) / unit;
}
std::uint64_t rounded(std::uint64_t n, std::uint64_t unit) {
  return n / unit + (n % unit >= unit - unit / 2 ? 1 : 0);
}

/// "3 min 2 s", or "3 min" when the smaller part is zero.
std::string two_parts(std::uint64_t total, std::uint64_t per_big, const char* big,
                      const char* small) {
  std::string s = std::to_string(total / per_big) + " " + big;
  if (total % per_big != 0) s += " " + std::to_string(total % per_big) + " " + small;
  return s;
}

}  // namespace

std::string format_duration(std::chrono::nanoseconds d) {
  const auto count = d.count();
  if (count == 0) return "0 s";
  // Unsigned magnitude: -nanoseconds::min() does not fit the signed type.
  const std::uint64_t n = count < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(count)
                                    : static_cast<std::uint64_t>(count);
  const std::string sign = count < 0 ? "-" : "";

  // Below a minute: the first unit in which the rounded value stays under 1000 (60 for
  // seconds), with one decimal below 10. Rounding may carry into the next unit: 999.97 ms is 1 s.
  struct Unit {
    std::uint64_t ns;
    const char* name;
    std::uint64_t next;
  };
  static constexpr Unit units[] = {
      {1, "ns", 1000}, {1000, "µs", 1000}, {1000000, "ms", 1000}, {1000000000, "s", 60}};
  for (const auto& u : units) {
    if (n / u.ns >= u.next) continue;  // also keeps the tenths below from overflowing
    if (std::uint64_t t = rounded_tenths(n, u.ns); t < 100)
      return sign + tenths_text(t) + " " + u.name;
    if (std::uint64_t w = rounded(n, u.ns); w < u.next)
      return sign + std::to_string(w) + " " + u.name;
  }
  constexpr std::uint64_t second = 1000000000, minute = 60 * second, hour = 60 * minute;
  if (std::uint64_t s = rounded(n, second); s < 3600) return sign + two_parts(s, 60, "min", "s");
  if (std::uint64_t m = rounded(n, minute); m < 24 * 60) return sign + two_parts(m, 60, "h", "min");
  return sign + two_parts(rounded(n, hour), 24, "d", "h");
}

std::string format_size(std::uint64_t bytes) {
  if (bytes == 1) return "1 byte";
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned u = 0;
  while (u + 1 < std::size(units) && (bytes >> (10 * (u + 2))) != 0) ++u;
  const unsigned shift = 10 * (u + 1);
  const std::uint64_t whole = bytes >> shift;
  const std::uint64_t rest = bytes & ((std::uint64_t{1} << shift) - 1);
  const std::string unit = std::string(" ") + units[u];
  if (rest == 0) return std::to_string(whole) + unit;
  // Rounded down, so that a size just under a limit never prints as the limit. rest * 10 fits:
  // rest < 2^60 even for EiB.
  const std::uint64_t tenth = (rest * 10) >> shift;
  const bool exact_tenth = ((rest * 10) & ((std::uint64_t{1} << shift) - 1)) == 0;
  std::string text = whole < 10 ? tenths_text(whole * 10 + tenth) : std::to_string(whole);
  if (whole < 10 && exact_tenth) return text + unit;
  return text + unit + " (" + std::to_string(bytes) + " bytes)";
}

std::string cut_text(std::string text, std::size_t limit) {
  if (text.size() <= limit) return text;
  std::size_t n = limit;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  const std::size_t cut = text.size() - n;
  text.resize(n);
  return text + "... (" + std::to_string(cut) + " bytes more)";
}

std::size_t utf8_length(std::string_view s, std::size_t i) noexcept {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = at(0);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size() || at(1) < lo || at(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((at(k) & 0xC0) != 0x80) return 0;
  return n;
}

bool escaped_on_terminal(std::string_view s, std::size_t i, std::size_t n) noexcept {
  // The bidirectional controls are Unicode's Bidi_Control property: shown as they are, they
  // display a name or a message in another order than its bytes ("Trojan Source").
  if (n < 2 || i + n > s.size()) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + i);
  if (n == 2) return (p[0] == 0xC2 && p[1] < 0xA0) || (p[0] == 0xD8 && p[1] == 0x9C);
  if (n != 3 || p[0] != 0xE2) return false;
  if (p[1] == 0x80) return p[2] == 0x8E || p[2] == 0x8F || (p[2] >= 0xA8 && p[2] <= 0xAE);
  return p[1] == 0x81 && p[2] >= 0xA6 && p[2] <= 0xA9;
}

std::size_t terminal_text_into(char* out, std::size_t cap, std::string_view text,
                               std::string_view newline, std::size_t* used, bool escape_backslash) noexcept {
  std::size_t at = 0, i = 0;
  auto put = [&](const char* p, std::size_t n) {
    if (at + n > cap) return false;
    std::memcpy(out + at, p, n);
    at += n;
    return true;
  };
  while (i < text.size()) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data() + i);
    const unsigned char c = bytes[0];
    std::size_t n = utf8_length(text, i);
    bool ok;
    if (c == '\n') {
      ok = put(newline.data(), newline.size());
    } else if (c == '\\' && escape_backslash) {
      ok = put("\\\\", 2);
    } else if (n == 0 || (n == 1 && ((c < 0x20 && c != '\t') || c == 0x7F)) || escaped_on_terminal(text, i, n)) {
      // Each byte as \xNN, a whole character or none (a malformed sequence: its bytes one by one).
      if (n == 0) n = 1;
      ok = at + 4 * n <= cap;
      for (std::size_t k = 0; ok && k < n; ++k) {
        char hex[5];
        std::snprintf(hex, sizeof hex, "\\x%02x", bytes[k]);
        put(hex, 4);
      }
    } else {
      ok = put(text.data() + i, n);
    }
    if (!ok) break;
    i += n;
  }
  if (used) *used = i;
  return at;
}

namespace {

/// The length of a kept CSI sequence (SGR or EL) at in[i] (an ESC), 0 when there is none, or
/// SIZE_MAX when `in` ends before it could be told.
std::size_t kept_sequence(std::string_view in, std::size_t i) noexcept {
  std::size_t j = i + 1;
  if (j == in.size()) return SIZE_MAX;
  if (in[j] != '[') return 0;
  for (++j; j < in.size() && j - i < terminal_sequence_max; ++j) {
    const char c = in[j];
    if (c == 'm') return j + 1 - i;
    if (c == 'K') return (j == i + 2 || (j == i + 3 && in[i + 2] >= '0' && in[i + 2] <= '2')) ? j + 1 - i : 0;
    if (!((c >= '0' && c <= '9') || c == ';' || c == ':')) return 0;
  }
  return j == in.size() && j - i < terminal_sequence_max ? SIZE_MAX : 0;
}

/// Whether in[i..] is the start of a UTF-8 character that the end of `in` cut: a lead byte
/// whose continuation bytes so far are all there is (utf8_length says whether it is whole).
bool cut_character(std::string_view in, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(in[i]);
  const std::size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || i + n <= in.size()) return false;
  for (std::size_t k = i + 1; k < in.size(); ++k)
    if ((static_cast<unsigned char>(in[k]) & 0xC0) != 0x80) return false;
  return true;
}

}  // namespace

std::size_t terminal_output_into(char* out, std::string_view in, bool end, std::size_t* used,
                                 TerminalOutput& state) noexcept {
  static constexpr std::string_view reset = "\x1b[0m";
  std::size_t at = 0, i = 0;
  // The colours in force, restored before this call's first byte (the last call ended with a
  // reset so that nothing between two writes takes them).
  auto resume = [&] {
    if (at == 0 && state.coloured) {
      std::memcpy(out, state.sgr, state.sgr_size);
      at = state.sgr_size;
    }
  };
  auto escape = [&](std::size_t n) {
    resume();
    for (std::size_t k = 0; k < n; ++k) {
      static constexpr char hex[] = "0123456789abcdef";
      const auto b = static_cast<unsigned char>(in[i + k]);
      out[at++] = '\\';
      out[at++] = 'x';
      out[at++] = hex[b >> 4];
      out[at++] = hex[b & 15];
    }
  };
  auto copy = [&](const char* p, std::size_t n) {
    resume();
    std::memcpy(out + at, p, n);
    at += n;
  };
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    std::size_t n = 1;
    if (c == 0x1B) {
      const std::size_t kept = kept_sequence(in, i);
      if (kept == SIZE_MAX && !end) break;  // told by the bytes to come
      if (kept != 0 && kept != SIZE_MAX) {
        n = kept;
        copy(in.data() + i, n);
        if (in[i + n - 1] == 'm') {
          state.coloured = !(n == 3 || (n == 4 && in[i + 2] == '0'));
          if (!state.coloured) {
            state.sgr_size = 0;
          } else {
            if (state.sgr_size + n > terminal_sgr_max) state.sgr_size = 0;  // the last alone
            std::memcpy(state.sgr + state.sgr_size, in.data() + i, n);
            state.sgr_size += n;
          }
        }
      } else {
        escape(1);
      }
    } else if (c == '\n') {
      if (state.coloured) copy(reset.data(), reset.size());
      state.coloured = false;
      state.sgr_size = 0;
      copy("\n", 1);
    } else if (c < 0x20 || c == 0x7F) {
      if (c == '\t' || c == '\r' || c == '\b') copy(in.data() + i, 1); else escape(1);
    } else if (c < 0x80) {
      copy(in.data() + i, 1);
    } else if (n = utf8_length(in, i); n == 0) {
      if (!end && cut_character(in, i)) break;
      n = 1;
      escape(1);
    } else if (state.ascii_only || escaped_on_terminal(in, i, n)) {
      escape(n);
    } else {
      copy(in.data() + i, n);
    }
    i += n;
  }
  // Each call's output ends in the default colours; the stream's end forgets them.
  if (state.coloured && at > 0) {
    std::memcpy(out + at, reset.data(), reset.size());
    at += reset.size();
  }
  if (end && i == in.size()) {
    state.coloured = false;
    state.sgr_size = 0;
  }
  if (used) *used = i;
  return at;
}

std::size_t terminal_cut(std::string_view shown, std::size_t at_most) noexcept {
  if (at_most >= shown.size()) return shown.size();
  std::size_t cut = at_most;
  // A kept sequence is the only ESC in shown text: one that starts in the last bytes before the
  // cut and has not ended by it moves the cut before it.
  const std::size_t from = cut > terminal_sequence_max ? cut - terminal_sequence_max : 0;
  for (std::size_t k = cut; k-- > from;) {
    if (shown[k] != 0x1B) continue;
    if (shown.substr(k, cut - k).find_first_of("mK") == std::string_view::npos) cut = k;
    break;
  }
  // Nor a character: back over continuation bytes to its first.
  while (cut > 0 && (static_cast<unsigned char>(shown[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

std::string terminal_text(std::string_view text, std::string_view newline) {
  // \xNN at most per byte, or `newline` for one.
  std::string out(std::max<std::size_t>(4, newline.size()) * text.size(), '\0');
  out.resize(terminal_text_into(out.data(), out.size(), text, newline));
  return out;
}

std::string message_text(std::string_view text, std::string_view newline) {
  std::string out(std::max<std::size_t>(4, newline.size()) * text.size(), '\0');
  out.resize(terminal_text_into(out.data(), out.size(), text, newline, nullptr, false));
  return out;
}

bool utf8_locale() noexcept {
  const char* name = nullptr;
  for (const char* v : {"LC_ALL", "LC_CTYPE", "LANG"})
    if (const char* value = std::getenv(v); value && *value) {
      name = value;
      break;
    }
  if (!name) return false;
  const char* dot = std::strchr(name, '.');
  if (!dot) return false;
  // "UTF-8", "utf8", "UTF_8"... compared without allocating (a relay is a forked child).
  static constexpr char utf8[] = "utf8";
  std::size_t matched = 0;
  for (const char* p = dot + 1; *p && *p != '@'; ++p) {
    if (*p == '-' || *p == '_') continue;
    if (matched == 4 || std::tolower(static_cast<unsigned char>(*p)) != utf8[matched]) return false;
    ++matched;
  }
  return matched == 4;
}

}  // namespace ferry::detail
