// SPDX-License-Identifier: BSD-3-Clause
// ferry's JSON archive pair (submit_json, the ferry command): cereal's JSON shapes, whole strings,
// 64-bit integers as numbers, a nesting limit, and errors that say what was expected where.
//
// Why not cereal's JSONInputArchive/JSONOutputArchive (issue 10 item 5, issue 16 item 4):
// - it builds strings from GetString() without the length, so "a\u0000b" arrives as "a";
// - it writes `long long` and `unsigned long long` as JSON strings but `std::int64_t` (`long`) as
//   numbers, although both have the signature i64;
// - its constructor parses with RapidJSON's recursive parser: a line of 200 KB of '[' overflows
//   the stack before anything can look at it;
// - a value of the wrong type is "rapidjson internal assertion failure: IsInt()".
// The shapes are cereal's, so that what worked keeps working: a value at the top level or in an
// object is named by its NVP, else "value0", "value1", ...; a SizeTag (sequences, maps) makes an
// array; maps are arrays of {"key", "value"}; std types come from cereal's own headers and user
// types keep their generic serialize/save/load. Written from cereal's documented behaviour, not
// from its code.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// cereal's JSON archive header first, although ferry no longer uses its archives: it configures
// RapidJSON (assertions throw, full-precision parsing, NaN and Infinity accepted and written), and
// every translation unit must see RapidJSON configured the same way. Debian's cereal uses the
// system's RapidJSON, upstream cereal its own copy (namespace CEREAL_RAPIDJSON_NAMESPACE).
#include <cereal/archives/json.hpp>
#if __has_include(<cereal/external/rapidjson/document.h>)
#include <cereal/external/rapidjson/document.h>
#include <cereal/external/rapidjson/error/en.h>
#include <cereal/external/rapidjson/stringbuffer.h>
#include <cereal/external/rapidjson/writer.h>
#else
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#endif
#ifdef CEREAL_RAPIDJSON_NAMESPACE
namespace ferry::detail::json = CEREAL_RAPIDJSON_NAMESPACE;
#else
namespace ferry::detail {
namespace json = RAPIDJSON_NAMESPACE;
}
#endif

#include <cereal/cereal.hpp>
#include <ferry/detail/type_name.hpp>

namespace ferry::detail {

/// RapidJSON's allocator, with std::bad_alloc where its CrtAllocator returns NULL: RapidJSON writes
/// through what its allocator returns, so a JSON result past a memory limit crashed the worker
/// (SIGSEGV in GenericStringBuffer::PutUnsafe) instead of failing as the limit it met.
class JsonAllocator {
 public:
  static const bool kNeedFree = true;
  void* Malloc(std::size_t size) {
    if (size == 0) return nullptr;
    void* p = std::malloc(size);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void* Realloc(void* original, std::size_t, std::size_t size) {
    if (size == 0) {
      std::free(original);
      return nullptr;
    }
    void* p = std::realloc(original, size);
    if (!p) throw std::bad_alloc();  // `original` is still valid, and still its owner's
    return p;
  }
  static void Free(void* p) noexcept { std::free(p); }
  bool operator==(const JsonAllocator&) const noexcept { return true; }
  bool operator!=(const JsonAllocator&) const noexcept { return false; }
};
/**
@brief UTF-8 as RapidJSON's reader writes it, but for the escapes `\udc80` to `\udcff`, which are
the bytes 0x80 to 0xFF: Python's surrogateescape, as the ferry command writes a byte that is not
part of UTF-8 (cli::json::printable). Read as RapidJSON reads them, a lone low surrogate's three
bytes (ED B2 80 to ED B3 BF), `ferry map`'s output given to it again handed a task those bytes
instead of the one it printed. A reader that has this as both its source and target encoding
copies the text's own bytes as they are (RapidJSON's Transcoder of an encoding to itself), so
only the escapes change; the other lone low surrogates (`\udc00` to `\udc7f`, `\udd00`...) keep
their three bytes, as Python refuses them.
*/
struct JsonUtf8 : json::UTF8<> {
  template <typename OutputStream>
  static void Encode(OutputStream& os, unsigned codepoint) {
    if (codepoint >= 0xDC80 && codepoint <= 0xDCFF)
      os.Put(static_cast<char>(codepoint - 0xDC00));
    else
      json::UTF8<>::Encode(os, codepoint);
  }
  template <typename OutputStream>
  static void EncodeUnsafe(OutputStream& os, unsigned codepoint) {
    if (codepoint >= 0xDC80 && codepoint <= 0xDCFF)
      json::PutUnsafe(os, static_cast<char>(codepoint - 0xDC00));
    else
      json::UTF8<>::EncodeUnsafe(os, codepoint);
  }
};

/// The RapidJSON types of the JSON entry point (plugins) and its archives, on JsonAllocator.
using JsonStringBuffer = json::GenericStringBuffer<json::UTF8<>, JsonAllocator>;
template <class Buffer>
using JsonWriterOf = json::Writer<Buffer, json::UTF8<>, json::UTF8<>, JsonAllocator>;
using JsonWriter = JsonWriterOf<JsonStringBuffer>;
using JsonDocument = json::GenericDocument<JsonUtf8, json::MemoryPoolAllocator<JsonAllocator>, JsonAllocator>;
using JsonValue = JsonDocument::ValueType;

/// JSON nested deeper than this is refused before anything recursive (RapidJSON's parser, its
/// writer, a Value's Accept) sees it: 512 levels are far more than arguments need, and cost a
/// recursive parser well under 1 MiB of stack.
inline constexpr std::size_t max_json_depth = 512;

/// A JSON value that does not fit: `where` is its path from the top ("value0[2].x", empty at the
/// top), `problem` what is wrong ("expected i32, found the string \"seven\"").
class JsonError : public cereal::Exception {
 public:
  JsonError(std::string where, std::string problem)
      : cereal::Exception(where.empty() ? problem : where + ": " + problem),
        where_(std::move(where)),
        problem_(std::move(problem)) {}
  const std::string& where() const noexcept { return where_; }
  const std::string& problem() const noexcept { return problem_; }

 private:
  std::string where_;
  std::string problem_;
};

/// What scan_json_text found in a JSON text, before any parser sees it.
struct JsonTextScan {
  enum class Problem { none, nul_byte, stray_byte, too_deep, bad_number };
  Problem problem = Problem::none;
  std::size_t offset = 0;  ///< where the problem starts
  /// A number RapidJSON would read wrong: parse_json writes it again.
  struct Number {
    std::size_t begin, end;  ///< offsets
    bool tiny;               ///< below 1 in magnitude: out of a double's range, it is a zero
  };
  std::vector<Number> numbers_to_rewrite;
};

/// One linear pass, no recursion, over what RapidJSON (1.1.0, Debian's) cannot be trusted with:
/// - nesting beyond `limit` levels (its parser, writer and Accept are recursive: 200 KB of '['
///   overflow the stack). String contents are skipped, so on the prefix a parser accepts, the
///   depth counted here is exactly the parser's;
/// - a NUL byte outside strings, which it takes for the end of the text ("7\0junk" would be 7);
/// - a byte of a UTF-8 byte order mark at the start, which it skips, each alone ("\xBB7" would
///   be 7): any byte above 0x7F outside strings is refused;
/// - NaN or Infinity followed by a fraction or an exponent ("NaNe0": a failed internal assertion;
///   "NaN.5" reads as 0.5);
/// - numbers its full-precision strtod gets wrong, each given to `number` in text order (a
///   JsonTextScan::Number; the overload without it lists them in `numbers_to_rewrite`): a zero
///   significand with an exponent or a long fraction ("0.000000000000000000000000" reads as
///   -2.19e-193: __builtin_clzll(0)); significant digits that start 18446744073709551615 and go
///   on with 5 to 9 (its rounding overflows the 64-bit significand to 0: the same); magnitudes
///   beyond 10^±300 ("0.<400 zeros>1" reads its table of powers of ten out of bounds: SIGSEGV).
template <class OnNumber>
JsonTextScan scan_json_text(std::string_view text, std::size_t limit, OnNumber&& number) {
  JsonTextScan scan;
  std::size_t depth = 0;
  const char* const begin = text.data();
  const char* const end = begin + text.size();
  auto fail = [&](JsonTextScan::Problem problem, const char* at) {
    scan.problem = problem;
    scan.offset = static_cast<std::size_t>(at - begin);
    return scan;
  };
  auto token_char = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
           c == '+' || c == '-';
  };
  auto digits = [&](const char* q) {
    while (q < end && *q >= '0' && *q <= '9') ++q;
    return q;
  };
  // Whether RapidJSON's strtod misreads a number of these digit runs and exponent (saturated):
  // a zero significand, a magnitude it indexes its table of powers of ten out of bounds with, or
  // significant digits that start with the 20 of 2^64 - 1 and go on with 5 to 9.
  auto misread = [](std::string_view int_part, std::string_view frac_part, long long exponent,
                    long long& magnitude) {
    std::size_t lead = int_part.find_first_not_of('0');
    magnitude = 0;  // the power of ten of the first significant digit
    if (lead != std::string_view::npos) {
      magnitude = static_cast<long long>(int_part.size() - lead) - 1 + exponent;
    } else if ((lead = frac_part.find_first_not_of('0')) != std::string_view::npos) {
      magnitude = -static_cast<long long>(lead) - 1 + exponent;
    } else {
      return true;  // all zeros
    }
    if (magnitude > 300 || magnitude < -300) return true;
    constexpr std::string_view max64 = "18446744073709551615";
    std::size_t matched = 0;
    bool leading = true;
    for (std::string_view part : {int_part, frac_part}) {
      for (char d : part) {
        if (leading && d == '0') continue;
        leading = false;
        if (matched == max64.size()) return d >= '5';
        if (d != max64[matched++]) return false;
      }
    }
    return false;
  };
  for (const char* p = begin; p < end; ++p) {
    const char c = *p;
    if (c == '"') {
      // To the closing quote: one that follows an even run of backslashes.
      for (;;) {
        p = static_cast<const char*>(std::memchr(p + 1, '"', static_cast<std::size_t>(end - p - 1)));
        if (!p) return scan;  // unterminated: the parser says so
        std::size_t backslashes = 0;
        while (p[-1 - static_cast<std::ptrdiff_t>(backslashes)] == '\\') ++backslashes;  // stops at the opening quote
        if (backslashes % 2 == 0) break;
      }
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return fail(JsonTextScan::Problem::too_deep, p);
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    } else if (c == '\0') {
      return fail(JsonTextScan::Problem::nul_byte, p);
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      return fail(JsonTextScan::Problem::stray_byte, p);
    } else if (token_char(c)) {
      const char* q = p + (c == '-' ? 1 : 0);
      if (q < end && (*q == 'N' || *q == 'I')) {
        // The parser reads NaN, Inf or Infinity, then goes on as if after digits.
        std::string_view rest(q, static_cast<std::size_t>(end - q));
        std::size_t n = rest.starts_with("NaN") ? 3 : rest.starts_with("Infinity") ? 8 : rest.starts_with("Inf") ? 3 : 0;
        if (n && n < rest.size() && (rest[n] == '.' || rest[n] == 'e' || rest[n] == 'E'))
          return fail(JsonTextScan::Problem::bad_number, p);
      } else if (q < end && *q >= '0' && *q <= '9') {
        // The number the parser reads: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
        const char* int_end = *q == '0' ? q + 1 : digits(q);
        std::string_view int_part(q, static_cast<std::size_t>(int_end - q)), frac_part;
        q = int_end;
        bool plain = true;  // an integer as written: RapidJSON's strtod does not see it
        if (q + 1 < end && *q == '.' && q[1] >= '0' && q[1] <= '9') {
          const char* f = digits(q + 1);
          frac_part = std::string_view(q + 1, static_cast<std::size_t>(f - q - 1));
          q = f;
          plain = false;
        }
        long long exponent = 0;
        if (q < end && (*q == 'e' || *q == 'E')) {
          const char* e = q + 1;
          bool negative = e < end && *e == '-';
          if (e < end && (*e == '+' || *e == '-')) ++e;
          if (e < end && *e >= '0' && *e <= '9') {
            for (q = e; q < end && *q >= '0' && *q <= '9'; ++q)
              exponent = std::min(exponent * 10 + (*q - '0'), 1'000'000'000LL);
            if (negative) exponent = -exponent;
            plain = false;
          }
        }
        // Integers beyond 64 bits go through the same strtod.
        long long magnitude = 0;
        if ((!plain || int_part.size() > 19) && misread(int_part, frac_part, exponent, magnitude))
          number(JsonTextScan::Number{static_cast<std::size_t>(p - begin), static_cast<std::size_t>(q - begin),
                                      magnitude < 0});
      }
      while (p + 1 < end && token_char(p[1])) ++p;  // the rest of the token is no new token
    }
  }
  return scan;
}

inline JsonTextScan scan_json_text(std::string_view text, std::size_t limit = max_json_depth) {
  std::vector<JsonTextScan::Number> numbers;
  JsonTextScan scan = scan_json_text(text, limit, [&](const JsonTextScan::Number& n) { numbers.push_back(n); });
  scan.numbers_to_rewrite = std::move(numbers);
  return scan;
}

/// The double nearest to `token` (a JSON number), written the shortest way as a double ("0.0",
/// not "0"), into `number`; false when it is too big for a double (`tiny`: the token's magnitude
/// is below 1, so out of range means zero, as RapidJSON reads it).
inline bool shortest_double_text(std::string_view token, bool tiny, std::string& number) {
  double d = 0;
  auto [stop, ec] = std::from_chars(token.data(), token.data() + token.size(), d);
  if (ec == std::errc::result_out_of_range && tiny) {
    d = token.starts_with('-') ? -0.0 : 0.0;
  } else if (ec != std::errc() || stop != token.data() + token.size()) {
    return false;
  }
  if (d == 0) {
    number = std::signbit(d) ? "-0.0" : "0.0";
    return true;
  }
  char out[40];
  number.assign(out, std::to_chars(out, out + sizeof out, d).ptr);
  if (number.find_first_of(".e") == std::string::npos)  // "184467440737095520000": an integer
    number.assign(out, std::to_chars(out, out + sizeof out, d, std::chars_format::scientific).ptr);
  if (auto e = number.find("e+"); e != std::string::npos) number.erase(e + 1, 1);
  return true;
}

/// `text` made ready for RapidJSON's parser with cereal's flags (full precision, NaN and
/// Infinity): false with `error` when scan_json_text finds what it cannot be given, else `text`
/// is what to parse, in `fixed` when a number had to be written again (`fixed` is left empty
/// otherwise). Errors read like RapidJSON's own, with the offset: "nested deeper than 512 levels
/// (at offset 512)". Numbers are written again as the scan finds them, not listed first: a line
/// of "0e1," costs its own size, not 24 bytes a number.
inline bool prepare_json_text(std::string_view& text, std::string& fixed, std::string& error) {
  auto at = [&](std::size_t offset) { return " (at offset " + std::to_string(offset) + ")"; };
  const std::string_view original = text;
  std::string number, number_error;  // the first number that cannot be written again
  JsonTextScan scan = scan_json_text(text, max_json_depth, [&](const JsonTextScan::Number& n) {
    if (!number_error.empty()) return;
    const auto [from, to, tiny] = n;
    if (fixed.empty()) fixed.assign(original);
    // Written again in place, then spaces: the same length, so that error offsets still point
    // into `text`. The shortest text of a double is never longer than a token that spells it.
    if (!shortest_double_text(original.substr(from, to - from), tiny, number)) {
      number_error = "Number too big to be stored in double." + at(from);
    } else if (number.size() > to - from) {
      number_error = "a number that cannot be read exactly" + at(from);
    } else {
      fixed.replace(from, number.size(), number);
      std::fill(fixed.begin() + static_cast<std::ptrdiff_t>(from + number.size()),
                fixed.begin() + static_cast<std::ptrdiff_t>(to), ' ');
    }
  });
  switch (scan.problem) {
    case JsonTextScan::Problem::none: break;
    case JsonTextScan::Problem::nul_byte:
      error = "a NUL byte, which JSON text cannot hold" + at(scan.offset);
      return false;
    case JsonTextScan::Problem::stray_byte:
      error = "a byte above 0x7F outside a string (a byte order mark?)" + at(scan.offset);
      return false;
    case JsonTextScan::Problem::too_deep:
      error = "nested deeper than " + std::to_string(max_json_depth) + " levels" + at(scan.offset);
      return false;
    case JsonTextScan::Problem::bad_number:
      error = "NaN or Infinity followed by more digits" + at(scan.offset);
      return false;
  }
  if (!number_error.empty()) {
    error = std::move(number_error);
    return false;
  }
  if (!fixed.empty()) text = fixed;
  return true;
}

/// RapidJSON's parse error as ferry's messages give it: "Invalid value. (at offset 0)".
inline std::string json_parse_error(json::ParseErrorCode code, std::size_t offset) {
  return std::string(json::GetParseError_En(code)) + " (at offset " + std::to_string(offset) + ")";
}

/// Parses `text` as exactly one JSON value, with cereal's flags (full precision, NaN and Infinity),
/// once scan_json_text found nothing RapidJSON mishandles (prepare_json_text). On failure returns
/// false and sets `error`, e.g. "Invalid value. (at offset 0)" or "nested deeper than 512 levels
/// (at offset 512)".
template <class Document>
bool parse_json(std::string_view text, Document& doc, std::string& error) {
  std::string fixed;  // rare: only when a number must be written again
  if (!prepare_json_text(text, fixed, error)) return false;
  // Document::Parse, but with RapidJSON's stream for UTF-8 text in memory whatever the document's
  // encoding (JsonUtf8's would be its generic stream, which reads a byte ahead: every error's
  // offset one past the text reader's).
  json::MemoryStream memory(text.data(), text.size());
  json::EncodedInputStream<json::UTF8<>, json::MemoryStream> in(memory);
  doc.template ParseStream<json::kParseDefaultFlags, typename Document::EncodingType>(in);
  if (!doc.HasParseError()) return true;
  error = json_parse_error(doc.GetParseError(), doc.GetErrorOffset());
  return false;
}

/// Appends `s` as a JSON string literal; "\u0000" and every other byte kept.
template <class Writer>
void write_json_string(Writer& w, std::string_view s) {
  if (s.size() > std::numeric_limits<json::SizeType>::max())
    throw JsonError({}, "a string of " + std::to_string(s.size()) + " bytes is longer than JSON strings "
                        "can be here (4 GiB)");
  w.String(s.data(), static_cast<json::SizeType>(s.size()));
}

/// `{"error": {"type", "message", "stage"}}`: the line of an item that failed, under keep-going
/// (written by the worker; by the ferry command for a line it cannot read).
template <class Buffer>
void write_json_error(Buffer& out, std::string_view type, std::string_view message, std::string_view stage) {
  JsonWriterOf<Buffer> w(out);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("type");
  write_json_string(w, type);
  w.Key("message");
  write_json_string(w, message);
  w.Key("stage");
  write_json_string(w, stage);
  w.EndObject();
  w.EndObject();
}

/// An array or object as an error message shows it: `an empty array`, `an object of 2 members`.
inline std::string describe_json_container(bool array, std::size_t size) {
  if (size == 0) return array ? "an empty array" : "an empty object";
  return std::string(array ? "an array of " : "an object of ") + std::to_string(size) +
         (array ? " element" : " member") + (size == 1 ? "" : "s");
}

/// A JSON value as an error message shows it: `the string "abc"`, `the number 2.5`, `an object of
/// 2 members`, `null`. Strings are cut after 40 bytes (at a UTF-8 character boundary).
template <class Value>
std::string describe_json(const Value& v) {
  auto text = [](auto&& write) {
    JsonStringBuffer out;
    JsonWriter w(out);
    write(w);
    return std::string(out.GetString(), out.GetSize());
  };
  switch (v.GetType()) {
    case json::kNullType: return "null";
    case json::kFalseType: return "false";
    case json::kTrueType: return "true";
    case json::kNumberType: return "the number " + text([&](auto& w) { v.Accept(w); });
    case json::kStringType: {
      constexpr std::size_t shown = 40;
      std::string_view s(v.GetString(), v.GetStringLength());
      bool cut = s.size() > shown;
      if (cut) {
        std::size_t n = shown;
        while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
        s = s.substr(0, n);
      }
      return "the string " + text([&](auto& w) { write_json_string(w, s); }) + (cut ? "..." : "");
    }
    case json::kArrayType: return describe_json_container(true, v.Size());
    case json::kObjectType: return describe_json_container(false, v.MemberCount());
  }
  return "a JSON value";
}

/// The label a type has in error messages: its signature text ("i32", "vector<string>").
template <class T>
constexpr std::string_view json_type_label() {
  return TypeName<std::remove_cv_t<T>>::value.view();
}

/// The label of a scalar type in error messages (json_type_label, and "null").
template <class T>
constexpr std::string_view json_scalar_label() {
  if constexpr (std::is_same_v<T, std::nullptr_t>) {
    return "null";
  } else {
    return json_type_label<T>();
  }
}

/// The rules both input archives read scalars by: `v` into `out`, or false with `why` empty (a
/// value of another type) or saying what is wrong ("out of its range", "not an integer").
inline bool json_to(const JsonValue& v, bool& out, std::string_view&) {
  if (!v.IsBool()) return false;
  out = v.GetBool();
  return true;
}
inline bool json_to(const JsonValue& v, std::nullptr_t&, std::string_view&) { return v.IsNull(); }
/// Integers must be JSON integers within the type's range, whatever its spelling.
template <class T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
bool json_to(const JsonValue& v, T& out, std::string_view& why) {
  static_assert(sizeof(T) <= 8, "ferry: integers wider than 64 bits cannot travel as JSON");
  // std::in_range would say this, but it does not take the character types.
  using Limits = std::numeric_limits<T>;
  if (v.IsInt64()) {
    std::int64_t x = v.GetInt64();
    bool fits = std::is_signed_v<T> ? x >= static_cast<std::int64_t>(Limits::min()) &&
                                          x <= static_cast<std::int64_t>(Limits::max())
                                    : x >= 0 && static_cast<std::uint64_t>(x) <=
                                                    static_cast<std::uint64_t>(Limits::max());
    if (!fits) return why = "out of its range", false;
    out = static_cast<T>(x);
  } else if (v.IsUint64()) {
    std::uint64_t x = v.GetUint64();
    if (x > static_cast<std::uint64_t>(Limits::max())) return why = "out of its range", false;
    out = static_cast<T>(x);
  } else {
    // A whole number past 64 bits (18446744073709551616, -9223372036854775809: it rounds to
    // -2^63) is read as a double. One an integer of 64 bits holds (1e19 for a u64) was written
    // as a double, as 1e2 was: it is not an integer.
    if (v.IsNumber()) {
      const double d = v.GetDouble();
      why = std::isfinite(d) && d == std::trunc(d) && (d >= 0x1p64 || d <= -0x1p63) ? "out of its range"
                                                                                     : "not an integer";
    }
    return false;
  }
  return true;
}
template <class T>
  requires std::is_floating_point_v<T>
bool json_to(const JsonValue& v, T& out, std::string_view& why) {
  if (v.IsNumber()) {
    double d = v.GetDouble();
    // Converting a finite double beyond the target's range is undefined behaviour. Less than half
    // a step past the largest value rounds to it, as the compiler reads a literal: 3.4028235e38,
    // the shortest text of FLT_MAX, was refused for a float.
    constexpr T largest = std::numeric_limits<T>::max();
    if (std::isfinite(d) && std::fabs(d) > static_cast<double>(largest)) {
      const double half_step = (static_cast<double>(largest) - static_cast<double>(std::nextafter(largest, T(0)))) / 2;
      if (std::fabs(d) - static_cast<double>(largest) >= half_step) return why = "out of its range", false;
      d = std::copysign(static_cast<double>(largest), d);
    }
    out = static_cast<T>(d);
  } else if (std::is_same_v<T, long double> && v.IsString()) {
    // What save_value(long double) writes.
    std::string s(v.GetString(), v.GetStringLength());
    char* end = nullptr;
    long double d = std::strtold(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) return why = "not a number", false;
    out = static_cast<T>(d);
  } else {
    return false;
  }
  return true;
}
/// What an input archive throws where the node it reads (`where` its path, `node` as
/// describe_json shows it) has no value to read: no member of the NVP's name `wanted`, or none
/// left (at member or element `index`).
inline JsonError json_no_member(const std::string& where, std::string_view wanted, std::string_view expected,
                                const std::string& node) {
  return JsonError(where.empty() ? std::string(wanted) : where + "." + std::string(wanted),
                   "expected " + std::string(expected) + ", found nothing (no member \"" + std::string(wanted) +
                       "\" in " + node + ")");
}
inline JsonError json_none_left(std::string where, bool object, std::size_t index, std::string_view expected,
                                const std::string& node) {
  std::string what = "expected " + std::string(expected);
  if (object) {
    what += " as its member " + std::to_string(index + 1);
  } else {
    where += "[" + std::to_string(index) + "]";
  }
  return JsonError(std::move(where), what + ", found nothing (" + node + ")");
}
/// Whether `name` is one an unnamed value is written under: "value" and its number among the
/// unnamed values of its object.
inline bool json_unnamed_value_name(std::string_view name) noexcept {
  constexpr std::string_view prefix = "value";
  if (!name.starts_with(prefix) || name.size() == prefix.size()) return false;
  return std::all_of(name.begin() + prefix.size(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}
/// An object read as a type must name each member once: readers disagree on which of two members
/// of one name counts (a lookup by name took the first, a read in order the one at its place, and
/// Python's json keeps the last), so a text could mean one thing to the program that checked it
/// and another to the task. `names` holds the object's member names, in any order (it is sorted);
/// the result is one that it holds twice, or nullptr.
inline const std::string_view* json_name_given_twice(std::vector<std::string_view>& names) {
  if (names.size() <= 8) {  // a type's few members: no sort
    for (std::size_t i = 1; i < names.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (names[i] == names[j]) return &names[i];
    return nullptr;
  }
  std::sort(names.begin(), names.end());
  auto twice = std::adjacent_find(names.begin(), names.end());
  return twice == names.end() ? nullptr : &*twice;
}
/// What an input archive throws for an object (`where` its path) that names `name` twice.
inline JsonError json_member_twice(std::string where, std::string_view expected, std::string_view name) {
  JsonValue v;  // shown as describe_json shows a string: "x", cut after 40 bytes
  v.SetString(json::StringRef(name.data(), static_cast<json::SizeType>(name.size())));
  std::string shown = describe_json(v);
  shown.erase(0, std::string_view("the string ").size());
  return JsonError(std::move(where), "expected " + std::string(expected) +
                                         " (each member named once), found an object that names " + shown + " twice");
}
/// What an input archive throws where an array holds more elements than the type read from it
/// (`where` its path, `node` as describe_json shows it): an extra element is input lost, never
/// ignored (a std::array<int, 3> read the first three of [1, 2, 3, 4]).
inline JsonError json_elements_left(std::string where, std::string_view expected, const std::string& node,
                                    std::size_t read) {
  return JsonError(std::move(where), "expected " + std::string(expected) + ", found " + node + " (it holds " +
                                         std::to_string(read) + (read == 1 ? " element)" : " elements)"));
}
/// The problem of a value that does not fit: "expected i32, found the string \"7\"".
inline std::string json_mismatch(std::string_view expected, const std::string& found, std::string_view why) {
  std::string problem = "expected " + std::string(expected) + ", found " + found;
  if (!why.empty()) problem += " (" + std::string(why) + ")";
  return problem;
}

/**
@brief RapidJSON's in-situ input over a JSON text that stays as it is. The reader's in-situ string
parsing hands each unescaped character to Put: appended to `out` when it is set (a string goes
from the text to where it is wanted, with no copy on the parser's stack), else only counted.
Past the end, Peek and Take give '\0' as MemoryStream's do, so that errors and their offsets are
a document's.
*/
struct JsonTextStream {
  using Ch = char;
  const char* src;
  const char* head;
  const char* tail;
  std::string* out = nullptr;
  std::size_t put = 0;
  Ch Peek() const { return src == tail ? '\0' : *src; }
  Ch Take() { return src == tail ? '\0' : *src++; }
  std::size_t Tell() const { return static_cast<std::size_t>(src - head); }
  Ch* PutBegin() {
    put = 0;
    if (out) out->clear();
    return nullptr;  // the handler takes the string from `out`
  }
  void Put(Ch c) {
    ++put;
    if (out) out->push_back(c);
  }
  std::size_t PutEnd(Ch*) { return put; }  // with the '\0' Put last
  void Flush() {}
};
/// The RapidJSON reader of JsonTextStream, on JsonAllocator, with cereal's flags in place.
using JsonTextReader = json::GenericReader<JsonUtf8, JsonUtf8, JsonAllocator>;
inline constexpr unsigned json_text_flags = json::kParseDefaultFlags | json::kParseInsituFlag;

/// parse_json's checks without its document: `text` (in `fixed` when a number had to be written
/// again) is exactly one JSON value, or false with parse_json's error at the same offset. The
/// parse costs the nesting's recursion and nothing a value.
inline bool check_json_text(std::string_view& text, std::string& fixed, std::string& error) {
  if (!prepare_json_text(text, fixed, error)) return false;
  JsonTextStream in{text.data(), text.data(), text.data() + text.size()};
  json::BaseReaderHandler<json::UTF8<>> nothing;
  JsonTextReader reader;
  const json::ParseResult result = reader.Parse<json_text_flags>(in, nothing);
  if (result) return true;
  error = json_parse_error(result.Code(), result.Offset());
  return false;
}

/// A JsonText's table of container ends holds an object or array when at least this many of its
/// bytes are its own, not inside a container the table holds: at most one entry (16 bytes) for
/// each 128 bytes of the text, and a container left out has fewer bytes of its own to scan.
inline constexpr std::size_t json_end_table_own_bytes = 128;

/**
@brief Positions in a JSON text that check_json_text accepted, read where it lies: values are
skipped by their brackets and quotes (nothing is checked again), scalars and names are read by
RapidJSON's reader one at a time, exactly as it read them into a document. A position is the
offset of a value's first byte, or of an object member's name; past the last member, of the
closing bracket.

A recursive type reads a container inside others once for each of them it counts (load_size)
or skips: scanned each time, text nested 250 levels deep would be read 250 times (design §18).
So an object or array is skipped by its brackets only when it ends within `own_bytes` / 4 bytes
(32), else by a table of ends, made in one pass over the whole text the first time a container
is longer. It holds each object or array with at least `own_bytes` (json_end_table_own_bytes)
bytes of its own, not inside a container it holds: one held is skipped by a lookup; one left
out is scanned over fewer than `own_bytes` bytes of its own, jumping over those held in it. The
table is allocated once at its most, text / `own_bytes` entries of 16 bytes (an eighth of the
text); where that cannot be allocated, containers are scanned whole, as without it.
*/
class JsonText {
 public:
  /// A container with `own_bytes` bytes of its own is held in the table of ends; no_end_table:
  /// no table, every container is scanned whole where it is skipped (for a text whose values
  /// are skipped once).
  explicit JsonText(std::string_view text, std::size_t own_bytes = json_end_table_own_bytes)
      : text_(text),
        own_bytes_(own_bytes),
        end_table_(own_bytes == no_end_table ? EndTable::unavailable : EndTable::not_made) {}
  static constexpr std::size_t no_end_table = std::numeric_limits<std::size_t>::max();

  char at(std::size_t p) const noexcept { return p < text_.size() ? text_[p] : '\0'; }
  bool opens(std::size_t p) const noexcept { return at(p) == '{' || at(p) == '['; }
  bool closes(std::size_t p) const noexcept { return at(p) == '}' || at(p) == ']'; }
  std::size_t skip_space(std::size_t p) const noexcept {
    while (p < text_.size() && (text_[p] == ' ' || text_[p] == '\t' || text_[p] == '\n' || text_[p] == '\r')) ++p;
    return p;
  }
  /// The first member of the object or array that opens at `open`, or its closing bracket.
  std::size_t first(std::size_t open) const noexcept { return skip_space(open + 1); }
  /// The member after the one at `member`, or the closing bracket.
  std::size_t after(std::size_t member, bool object) noexcept {
    return after_value(skip_value(object ? value_of(member) : member));
  }
  /// Where the next member (or the closing bracket) is, from just past a value.
  std::size_t after_value(std::size_t end) const noexcept {
    std::size_t p = skip_space(end);
    return at(p) == ',' ? skip_space(p + 1) : p;
  }
  /// The value of the object member whose name is at `name`.
  std::size_t value_of(std::size_t name) const noexcept {
    return skip_space(skip_space(skip_string(name)) + 1);  // past the ':'
  }
  /// Just past the value at `p`.
  std::size_t skip_value(std::size_t p) noexcept {
    if (at(p) == '"') return skip_string(p);
    if (opens(p)) return skip_container(p);
    while (p < text_.size() && token_char(text_[p])) ++p;  // a number, true, false, null, NaN...
    return p;
  }
  /// Just past the string that starts at `p`: past the first quote after an even run of
  /// backslashes (as scan_json_text finds it).
  std::size_t skip_string(std::size_t p) const noexcept {
    const char* const begin = text_.data();
    const char* q = begin + p;
    for (;;) {
      q = static_cast<const char*>(std::memchr(q + 1, '"', text_.size() - static_cast<std::size_t>(q + 1 - begin)));
      std::size_t backslashes = 0;
      while (q[-1 - static_cast<std::ptrdiff_t>(backslashes)] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return static_cast<std::size_t>(q - begin) + 1;
    }
  }
  /// The number of members of the object or array that opens at `open`.
  std::size_t count(std::size_t open) noexcept {
    const bool object = at(open) == '{';
    std::size_t n = 0;
    for (std::size_t p = first(open); !closes(p); p = after(p, object)) ++n;
    return n;
  }

  /// The scalar at `p` as a document holds it (a string's characters go to `string`, which
  /// `value` then refers to); returns the offset just past it.
  std::size_t scalar(std::size_t p, JsonValue& value, std::string& string) {
    // Two shortcuts that give what the reader gives: a string without escapes is its bytes (the
    // text was checked: no control characters; UTF-8 is not validated either way), and an
    // integer of up to 18 digits, whatever its event, has the flags of the same int64.
    if (at(p) == '"') {
      const std::size_t end = skip_string(p);
      const std::string_view raw = text_.substr(p + 1, end - p - 2);
      if (raw.find('\\') == std::string_view::npos) {
        string.assign(raw);
        value.SetString(json::StringRef(string.data(), static_cast<json::SizeType>(string.size())));
        return end;
      }
      string.reserve(raw.size() + 1);  // what Put appends, at most, and its '\0'
    } else {
      const char* const digits = text_.data() + p + (at(p) == '-' ? 1 : 0);
      const char* const end = text_.data() + text_.size();
      const char* q = digits;
      while (q < end && q - digits < 19 && *q >= '0' && *q <= '9') ++q;
      std::int64_t integer = 0;
      if (q > digits && q - digits <= 18 && (q == end || (*q != '.' && *q != 'e' && *q != 'E' && !(*q >= '0' && *q <= '9'))) &&
          std::from_chars(text_.data() + p, q, integer).ptr == q) {
        value.SetInt64(integer);
        return static_cast<std::size_t>(q - text_.data());
      }
    }
    JsonTextStream in{text_.data() + p, text_.data(), text_.data() + text_.size(), &string};
    ScalarHandler handler{value, string};
    reader_.Parse<json_text_flags | json::kParseStopWhenDoneFlag>(in, handler);
    return in.Tell();
  }
  /// The name of the member at `name`, unescaped: a view of the text, or of `scratch` when it
  /// has escapes.
  std::string_view name(std::size_t name, std::string& scratch) {
    const std::size_t end = skip_string(name);
    std::string_view raw = text_.substr(name + 1, end - name - 2);
    if (raw.find('\\') == std::string_view::npos) return raw;
    JsonValue ignored;
    scalar(name, ignored, scratch);
    return scratch;
  }
  /// The value at `p` as error messages show it (describe_json).
  std::string describe(std::size_t p) {
    if (opens(p)) return describe_json_container(at(p) == '[', count(p));
    JsonValue value;
    std::string string;
    scalar(p, value, string);
    return describe_json(value);
  }
  /// The containers the table of ends holds (none before a container longer than `own_bytes`
  /// is skipped, nor when it could not be allocated).
  std::size_t end_table_size() const noexcept { return ends_.size(); }

 private:
  /// An object or array the table holds: its opening bracket, and just past its closing one.
  struct End {
    std::size_t open, end;
  };
  enum class EndTable : unsigned char { not_made, made, unavailable };

  /// Just past the object or array that opens at `open`.
  std::size_t skip_container(std::size_t open) noexcept {
    std::size_t depth = 0;
    // Steps over the byte at `p` (over a string that starts there): true on the closing bracket.
    auto closes_at = [&](std::size_t& p) {
      const char c = text_[p];
      if (c == '"') {
        p = skip_string(p) - 1;
      } else if (c == '[' || c == '{') {
        ++depth;
      } else if ((c == ']' || c == '}') && --depth == 0) {
        return true;
      }
      return false;
    };
    // Most containers skipped are short: found by their brackets, without the table.
    std::size_t p = open;
    for (const std::size_t bound = open + std::min(own_bytes_ / 4, text_.size() - open); p < bound; ++p)
      if (closes_at(p)) return p + 1;
    if (end_table_ == EndTable::not_made) make_end_table();
    auto next = ends_.end();  // the first container held that opens at `p` or after
    if (end_table_ == EndTable::made) {
      next = std::lower_bound(ends_.begin(), ends_.end(), open, by_open);
      if (next != ends_.end() && next->open == open) return next->end;
      if (next != ends_.end() && next->open < p) {  // one held began in what was scanned: again, over it
        p = open;
        depth = 0;
      }
    }
    // Fewer than own_bytes_ bytes of its own: the rest by its brackets, over those held in it.
    for (; p < text_.size(); ++p) {
      if (next != ends_.end() && next->open == p) {
        p = next->end - 1;
        next = std::lower_bound(next + 1, ends_.end(), next->end, by_open);
      } else if (closes_at(p)) {
        return p + 1;
      }
    }
    return text_.size();  // never in a checked text
  }
  static bool by_open(const End& e, std::size_t at) noexcept { return e.open < at; }
  /// The table of ends, in one pass over the whole text: a container closing with at least
  /// own_bytes_ bytes not covered by those held inside it is held, and then covers all its bytes.
  void make_end_table() noexcept {
    struct Open {
      std::size_t at;
      std::size_t covered;  ///< its bytes inside containers the table holds
    };
    end_table_ = EndTable::unavailable;
    try {
      // Allocated once, at the most it can hold: each container held has own_bytes_ bytes that
      // are no other held container's own, and a container is at least 2 bytes.
      ends_.reserve(text_.size() / std::max<std::size_t>(own_bytes_, 2) + 1);
      std::vector<Open> opened;
      opened.reserve(max_json_depth + 1);  // the text was checked
      for (std::size_t p = 0; p < text_.size(); ++p) {
        const char c = text_[p];
        if (c == '"') {
          p = skip_string(p) - 1;
        } else if (c == '[' || c == '{') {
          opened.push_back({p, 0});
        } else if ((c == ']' || c == '}') && !opened.empty()) {
          const Open o = opened.back();
          opened.pop_back();
          const std::size_t span = p + 1 - o.at;
          std::size_t covered = o.covered;
          if (span - o.covered >= own_bytes_) {
            ends_.push_back({o.at, p + 1});
            covered = span;
          }
          if (!opened.empty()) opened.back().covered += covered;
        }
      }
      // Held as they close, found by where they open.
      std::sort(ends_.begin(), ends_.end(), [](const End& a, const End& b) { return a.open < b.open; });
      end_table_ = EndTable::made;
    } catch (const std::bad_alloc&) {
      std::vector<End>().swap(ends_);  // scanned whole, as without a table
    }
  }

  static bool token_char(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '+' ||
           c == '-';
  }
  /// Makes the value of one scalar event as a document's handler makes it.
  struct ScalarHandler {
    JsonValue& value;
    std::string& string;
    bool Null() { return value.SetNull(), true; }
    bool Bool(bool b) { return value.SetBool(b), true; }
    bool Int(int i) { return value.SetInt(i), true; }
    bool Uint(unsigned u) { return value.SetUint(u), true; }
    bool Int64(std::int64_t i) { return value.SetInt64(i), true; }
    bool Uint64(std::uint64_t u) { return value.SetUint64(u), true; }
    bool Double(double d) { return value.SetDouble(d), true; }
    bool RawNumber(const char*, json::SizeType, bool) { return false; }  // kParseNumbersAsStringsFlag only
    bool String(const char*, json::SizeType length, bool) {
      string.resize(length);  // drops the '\0' Put last
      value.SetString(json::StringRef(string.data(), length));
      return true;
    }
    // Scalars only: the archive enters objects and arrays itself.
    bool StartObject() { return false; }
    bool Key(const char*, json::SizeType, bool) { return false; }
    bool EndObject(json::SizeType) { return false; }
    bool StartArray() { return false; }
    bool EndArray(json::SizeType) { return false; }
  };

  std::string_view text_;
  std::size_t own_bytes_;
  std::vector<End> ends_;  ///< by `open`
  EndTable end_table_;
  JsonTextReader reader_;
};

/**
@brief Writes values as compact JSON, one document, in the shapes cereal's JSONOutputArchive
writes (see the file comment), into a RapidJSON StringBuffer. Call finish() after the last value.
*/
class JsonOutputArchive : public cereal::OutputArchive<JsonOutputArchive>,
                          public cereal::traits::TextArchive {
 public:
  explicit JsonOutputArchive(JsonStringBuffer& out)
      : cereal::OutputArchive<JsonOutputArchive>(this), writer_(out) {
    levels_.push_back({Node::start_object, 0});
  }
  JsonOutputArchive(const JsonOutputArchive&) = delete;
  JsonOutputArchive& operator=(const JsonOutputArchive&) = delete;

  /// Closes the top-level object or array ({} when nothing was saved).
  void finish() {
    while (!levels_.empty()) finish_node();
  }

  // The verbs the prologue, epilogue and save functions below use.

  /// A value that is an object or array of its own: it starts at its first member.
  void start_node() {
    write_name();
    if (levels_.size() >= max_json_depth)
      throw JsonError({}, "the value nests deeper than " + std::to_string(max_json_depth) + " levels");
    levels_.push_back({Node::start_object, 0});
  }
  void finish_node() {
    switch (levels_.back().node) {
      case Node::start_array: writer_.StartArray(); [[fallthrough]];
      case Node::in_array: writer_.EndArray(); break;
      case Node::start_object: writer_.StartObject(); [[fallthrough]];
      case Node::in_object: writer_.EndObject(); break;
    }
    levels_.pop_back();
  }
  /// The current node holds a sequence (a SizeTag): an array, its values unnamed.
  void make_array() noexcept { levels_.back().node = Node::start_array; }
  void set_next_name(const char* name) noexcept { next_name_ = name; }
  /// Opens the current node on its first value, and writes the next value's name in an object.
  void write_name() {
    Level& level = levels_.back();
    if (level.node == Node::start_array) {
      writer_.StartArray();
      level.node = Node::in_array;
    } else if (level.node == Node::start_object) {
      writer_.StartObject();
      level.node = Node::in_object;
    }
    if (level.node == Node::in_array) return;
    if (next_name_) {
      writer_.Key(next_name_);
      next_name_ = nullptr;
    } else {
      std::string name = "value" + std::to_string(level.counter++);
      writer_.Key(name.data(), static_cast<json::SizeType>(name.size()));
    }
  }

  void save_value(bool b) { writer_.Bool(b); }
  void save_value(std::nullptr_t) { writer_.Null(); }
  void save_value(std::string_view s) { write_json_string(writer_, s); }
  /// Every integer is a JSON number, whatever its spelling (`long long` too).
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  void save_value(T v) {
    static_assert(sizeof(T) <= 8, "ferry: integers wider than 64 bits cannot travel as JSON");
    if constexpr (std::is_signed_v<T>) {
      writer_.Int64(static_cast<std::int64_t>(v));
    } else {
      writer_.Uint64(static_cast<std::uint64_t>(v));
    }
  }
  void save_value(float f) { writer_.Double(static_cast<double>(f)); }
  void save_value(double d) { writer_.Double(d); }
  /// As cereal: a string of all its digits, which a double would lose.
  void save_value(long double d) {
    std::ostringstream s;
    s.precision(std::numeric_limits<long double>::max_digits10);
    s << d;
    save_value(std::string_view(s.str()));
  }

 private:
  enum class Node : unsigned char { start_object, in_object, start_array, in_array };
  struct Level {
    Node node;
    std::uint32_t counter;  ///< the next unnamed value's number
  };
  JsonWriter writer_;
  std::vector<Level> levels_;
  const char* next_name_ = nullptr;
};

/**
@brief Reads values from a parsed JSON document in the shapes JsonOutputArchive writes, as cereal's
JSONInputArchive reads them: by name when an NVP names the value (searching the object when it is
not the next member), else in order. A value that does not fit throws JsonError with its path.
The document must outlive the archive; parse it with parse_json (which bounds its nesting).
*/
class JsonInputArchive : public cereal::InputArchive<JsonInputArchive>,
                         public cereal::traits::TextArchive {
 public:
  explicit JsonInputArchive(const JsonValue& root)
      : cereal::InputArchive<JsonInputArchive>(this) {
    if (!root.IsObject() && !root.IsArray())
      throw JsonError({}, "expected an object or an array at the top, found " + describe_json(root));
    frames_.push_back(frame(root, "the top"));
  }
  JsonInputArchive(const JsonInputArchive&) = delete;
  JsonInputArchive& operator=(const JsonInputArchive&) = delete;

  // The verbs the prologue, epilogue and load functions below use.

  /// Enters the next value, an object or array, to read its members (`expected`: its type label).
  void start_node(std::string_view expected) {
    const JsonValue& v = next(expected);
    if (!v.IsObject() && !v.IsArray()) fail(expected, v);
    frames_.push_back(frame(v, expected));
  }
  void finish_node() {
    const Frame& done = frames_.back();
    if (!done.object && done.index < done.size)
      throw json_elements_left(path(frames_.size() - 1), done.expected, describe_json(*done.node), done.index);
    if (done.object && !(done.index == done.size && done.names_seen)) check_member_names();
    frames_.pop_back();
    ++frames_.back().index;
  }
  void set_next_name(const char* name) noexcept { next_name_ = name; }
  /// The number of elements of the node just entered, which must be an array.
  void load_size(cereal::size_type& size) {
    const Frame& f = frames_.back();
    if (f.object)  // reported at the node itself
      throw JsonError(path(frames_.size() - 1), "expected " + std::string(f.expected) +
                                                    " (a JSON array), found " + describe_json(*f.node));
    size = f.size;
  }
  /// The path of the node being read ("value0.table"), for errors its load functions find.
  std::string node_path() const { return path(frames_.size() - 1); }

  void load_value(std::string& s) {
    const JsonValue& v = next("string");
    if (!v.IsString()) fail("string", v);
    s.assign(v.GetString(), v.GetStringLength());
    advance();
  }
  /// Every other scalar: by json_to's rules.
  template <class T>
  void load_value(T& out) {
    constexpr std::string_view expected = json_scalar_label<T>();
    const JsonValue& v = next(expected);
    std::string_view why;
    if (!json_to(v, out, why)) fail(expected, v, why);
    advance();
  }

 private:
  struct Frame {
    const JsonValue* node;
    json::SizeType index;
    json::SizeType size;
    bool object;
    std::string_view expected;  ///< the type read from this node, for messages
    json::SizeType unnamed = 0;  ///< unnamed values read from this object so far
    signed char by_name = -1;    ///< whether its unnamed values are read by name (-1: not known yet)
    /// Each value read from this object so far was the member where reading stood, of the name
    /// asked for: read to its end, the object names each member once (no check_member_names).
    bool names_seen = true;
  };
  static Frame frame(const JsonValue& v, std::string_view expected) {
    return {&v, 0, v.IsObject() ? v.MemberCount() : v.Size(), v.IsObject(), expected};
  }
  /// Refuses the object being finished when it names a member twice (json_name_given_twice).
  /// Called where its members were not all read, each by its name where reading stood: an object
  /// read in order by its names costs no pass over them. The top object is not checked: its
  /// names are the arguments', which check_json_arguments checks.
  void check_member_names() {
    const Frame& f = frames_.back();
    if (f.size < 2) return;
    names_.clear();
    for (auto m = f.node->MemberBegin(); m != f.node->MemberEnd(); ++m)
      names_.emplace_back(m->name.GetString(), m->name.GetStringLength());
    if (const std::string_view* twice = json_name_given_twice(names_))
      throw json_member_twice(path(frames_.size() - 1), f.expected, *twice);
  }

  /// The value to read: the member an NVP names, else the next one in order. An unnamed value of
  /// an object was written as "value<k>" (k: its number among the object's unnamed values): in an
  /// object with a member of such a name, it is read by that name, wherever it is
  /// ({"value1": 2, "value0": 1} was read as value0 = 2, value1 = 1); in one without, in order,
  /// as cereal reads them ({"x": 1, "y": 2}).
  const JsonValue& next(std::string_view expected) {
    Frame& f = frames_.back();
    auto name_at = [&](json::SizeType i) {
      const JsonValue& n = f.node->MemberBegin()[i].name;
      return std::string_view(n.GetString(), n.GetStringLength());
    };
    const char* name = std::exchange(next_name_, nullptr);
    if (!name && f.object) {
      if (f.by_name < 0) {
        f.by_name = 0;
        for (json::SizeType i = 0; i < f.size && !f.by_name; ++i) f.by_name = json_unnamed_value_name(name_at(i));
      }
      unnamed_name_ = "value" + std::to_string(f.unnamed++);
      if (f.by_name) name = unnamed_name_.c_str();
      if (!name) f.names_seen = false;  // read where it stands, whatever its name
    }
    if (name) {
      std::string_view wanted(name);
      if (!f.object || f.index >= f.size || name_at(f.index) != wanted) {
        json::SizeType i = 0;
        while (f.object && i < f.size && name_at(i) != wanted) ++i;
        if (!f.object || i == f.size)
          throw json_no_member(path(frames_.size() - 1), wanted, expected, describe_json(*f.node));
        f.index = i;
        f.names_seen = false;
      }
    }
    if (f.index >= f.size)
      throw json_none_left(path(frames_.size() - 1), f.object, f.index, expected, describe_json(*f.node));
    return f.object ? f.node->MemberBegin()[f.index].value : (*f.node)[f.index];
  }
  void advance() noexcept { ++frames_.back().index; }

  /// The path of the value each of the first `depth` frames is at ("value0[2].x").
  std::string path(std::size_t depth) const {
    std::string out;
    for (std::size_t k = 0; k < depth && k < frames_.size(); ++k) {
      const Frame& f = frames_[k];
      if (f.index >= f.size) break;
      if (f.object) {
        const JsonValue& n = f.node->MemberBegin()[f.index].name;
        std::string_view name(n.GetString(), n.GetStringLength());
        if (!out.empty()) out += '.';
        out += name;
      } else {
        out += "[" + std::to_string(f.index) + "]";
      }
    }
    return out;
  }
  /// Throws the error for value `v` (the current one) where `expected` was wanted.
  [[noreturn]] void fail(std::string_view expected, const JsonValue& v, std::string_view why = {}) const {
    throw JsonError(path(frames_.size()), json_mismatch(expected, describe_json(v), why));
  }

  std::vector<Frame> frames_;
  const char* next_name_ = nullptr;
  std::string unnamed_name_;  ///< "value<k>" of the unnamed value being read from an object
  std::vector<std::string_view> names_;  ///< check_member_names's, kept for its capacity
};


/**
@brief JsonInputArchive over JSON text instead of a document: the same shapes, the same errors
with the same paths, read where the text lies. A document costs 16 bytes a value and its
parser's stack as much again (an 80 MB line of small numbers took 727 MiB in the worker); this
archive holds a frame per open object or array and, while a string is read, nothing but the
string it is read into. The text must be what check_json_text accepted, and outlive the archive.

An array's size is counted when it is read (load_size), an NVP not at the next member is searched
from the object's first member, and a node not read to its end is skipped to it: each steps over
the members of that object or array, and over a member that is an object or array by JsonText's
table of its end (`own_bytes`: JsonText's), not by a pass over it. A recursive type read from
text nested hundreds of levels deep costs about one pass, not one a level.
*/
class JsonTextInputArchive : public cereal::InputArchive<JsonTextInputArchive>,
                             public cereal::traits::TextArchive {
 public:
  explicit JsonTextInputArchive(std::string_view text, std::size_t own_bytes = json_end_table_own_bytes)
      : cereal::InputArchive<JsonTextInputArchive>(this), text_(text, own_bytes) {
    const std::size_t top = text_.skip_space(0);
    if (!text_.opens(top))
      throw JsonError({}, "expected an object or an array at the top, found " + text_.describe(top));
    frames_.push_back(frame(top, "the top"));
  }
  JsonTextInputArchive(const JsonTextInputArchive&) = delete;
  JsonTextInputArchive& operator=(const JsonTextInputArchive&) = delete;

  // The verbs of JsonInputArchive, for the same prologue, epilogue and load functions.

  void start_node(std::string_view expected) {
    const std::size_t v = next(expected);
    if (!text_.opens(v)) fail(expected, v);
    frames_.push_back(frame(v, expected));
  }
  void finish_node() {
    const Frame done = frames_.back();
    if (!done.object && !text_.closes(done.at))
      throw json_elements_left(path(frames_.size() - 1), done.expected, text_.describe(done.open), done.index);
    if (done.object && !(text_.closes(done.at) && done.names_seen)) check_member_names();
    frames_.pop_back();
    // Read to its closing bracket, it ends there; else (members left unread, or read by name
    // out of order) it is skipped from its start.
    advance(text_.closes(done.at) ? done.at + 1 : text_.skip_value(done.open));
  }
  void set_next_name(const char* name) noexcept { next_name_ = name; }
  void load_size(cereal::size_type& size) {
    const Frame& f = frames_.back();
    if (f.object)  // reported at the node itself
      throw JsonError(path(frames_.size() - 1), "expected " + std::string(f.expected) +
                                                    " (a JSON array), found " + text_.describe(f.open));
    size = text_.count(f.open);
  }
  /// The path of the node being read ("value0.table"), for errors its load functions find.
  std::string node_path() { return path(frames_.size() - 1); }

  void load_value(std::string& s) {
    const std::size_t v = next("string");
    if (text_.at(v) != '"') fail("string", v);
    JsonValue value;
    advance(text_.scalar(v, value, s));  // unescaped straight into `s`
  }
  template <class T>
  void load_value(T& out) {
    constexpr std::string_view expected = json_scalar_label<T>();
    const std::size_t v = next(expected);
    if (text_.opens(v)) fail(expected, v);
    JsonValue value;
    const std::size_t end = text_.scalar(v, value, scratch_);
    std::string_view why;
    if (!json_to(value, out, why))
      throw JsonError(path(frames_.size()), json_mismatch(expected, describe_json(value), why));
    advance(end);
  }

 private:
  struct Frame {
    std::size_t open;   ///< where the object or array starts
    std::size_t at;     ///< the member to read next (its name in an object), or the closing bracket
    std::size_t index;  ///< that member's number
    bool object;
    std::string_view expected;  ///< the type read from this node, for messages
    std::size_t unnamed = 0;    ///< unnamed values read from this object so far
    signed char by_name = -1;   ///< whether its unnamed values are read by name (-1: not known yet)
    bool names_seen = true;     ///< as JsonInputArchive::Frame's
  };
  Frame frame(std::size_t open, std::string_view expected) const {
    return {open, text_.first(open), 0, text_.at(open) == '{', expected};
  }
  /// As JsonInputArchive::check_member_names. A name with escapes is kept in `escaped_names_`,
  /// the others are views of the text.
  void check_member_names() {
    const Frame& f = frames_.back();
    names_.clear();
    escaped_names_.clear();
    for (std::size_t p = text_.first(f.open); !text_.closes(p); p = text_.after(p, true)) {
      std::string_view name = text_.name(p, scratch_);
      if (!name.empty() && name.data() == scratch_.data()) name = escaped_names_.emplace_back(name);
      names_.push_back(name);
    }
    if (const std::string_view* twice = json_name_given_twice(names_))
      throw json_member_twice(path(frames_.size() - 1), f.expected, *twice);
  }

  /// Where the value to read is: the member an NVP names, else the next one in order; an
  /// unnamed value of an object by its name "value<k>" when the object has a member of such a
  /// name (JsonInputArchive::next says why).
  std::size_t next(std::string_view expected) {
    Frame& f = frames_.back();
    const char* name = std::exchange(next_name_, nullptr);
    if (!name && f.object) {
      if (f.by_name < 0) {
        f.by_name = 0;
        for (std::size_t p = text_.first(f.open); !text_.closes(p) && !f.by_name; p = text_.after(p, true))
          f.by_name = json_unnamed_value_name(text_.name(p, scratch_));
      }
      unnamed_name_ = "value" + std::to_string(f.unnamed++);
      if (f.by_name) name = unnamed_name_.c_str();
      if (!name) f.names_seen = false;  // read where it stands, whatever its name
    }
    if (name) {
      std::string_view wanted(name);
      if (!f.object || text_.closes(f.at) || text_.name(f.at, scratch_) != wanted) {
        f.names_seen = false;
        // The first member of that name, as a document's FindMember.
        std::size_t i = 0, p = text_.first(f.open);
        while (f.object && !text_.closes(p) && text_.name(p, scratch_) != wanted) {
          p = text_.after(p, true);
          ++i;
        }
        if (!f.object || text_.closes(p))
          throw json_no_member(path(frames_.size() - 1), wanted, expected, text_.describe(f.open));
        f.at = p;
        f.index = i;
      }
    }
    if (text_.closes(f.at))
      throw json_none_left(path(frames_.size() - 1), f.object, f.index, expected, text_.describe(f.open));
    return f.object ? text_.value_of(f.at) : f.at;
  }
  /// The current member was read, and its value ends at `end`.
  void advance(std::size_t end) noexcept {
    Frame& f = frames_.back();
    f.at = text_.after_value(end);
    ++f.index;
  }

  /// The path of the value each of the first `depth` frames is at ("value0[2].x").
  std::string path(std::size_t depth) {
    std::string out, name;
    for (std::size_t k = 0; k < depth && k < frames_.size(); ++k) {
      const Frame& f = frames_[k];
      if (text_.closes(f.at)) break;
      if (f.object) {
        if (!out.empty()) out += '.';
        out += text_.name(f.at, name);
      } else {
        out += "[" + std::to_string(f.index) + "]";
      }
    }
    return out;
  }
  /// Throws the error for the value at `v` (the current one) where `expected` was wanted.
  [[noreturn]] void fail(std::string_view expected, std::size_t v) {
    throw JsonError(path(frames_.size()), json_mismatch(expected, text_.describe(v), {}));
  }

  JsonText text_;
  std::vector<Frame> frames_;
  std::string scratch_;  ///< names with escapes, and strings read where no string is wanted
  const char* next_name_ = nullptr;
  std::string unnamed_name_;  ///< "value<k>" of the unnamed value being read from an object
  std::vector<std::string_view> names_;   ///< check_member_names's, kept for their capacity
  std::deque<std::string> escaped_names_;
};

}  // namespace ferry::detail

// Polymorphic types registered with CEREAL_REGISTER_TYPE get bindings for these archives, and
// save_minimal/load_minimal pairs are matched across them.
CEREAL_REGISTER_ARCHIVE(ferry::detail::JsonOutputArchive)
CEREAL_REGISTER_ARCHIVE(ferry::detail::JsonInputArchive)
CEREAL_REGISTER_ARCHIVE(ferry::detail::JsonTextInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(ferry::detail::JsonInputArchive, ferry::detail::JsonOutputArchive)
// The text archive reads what JsonOutputArchive writes too (the macro would name a second input
// archive for it, which cereal's traits do not ask for).
namespace cereal::traits::detail {
template <>
struct get_output_from_input<ferry::detail::JsonTextInputArchive> {
  using type = ferry::detail::JsonOutputArchive;
};
}  // namespace cereal::traits::detail

namespace ferry::detail {

// Values written as one JSON scalar: numbers, booleans, strings, null.
template <class T>
inline constexpr bool is_json_scalar_v = std::is_arithmetic_v<T> || std::is_same_v<T, std::nullptr_t>;
template <class Traits, class Alloc>
inline constexpr bool is_json_scalar_v<std::basic_string<char, Traits, Alloc>> = true;

// What wraps a value without being one: a name, a size tag, deferred data.
template <class T>
inline constexpr bool is_json_wrapper_v = false;
template <class T>
inline constexpr bool is_json_wrapper_v<cereal::NameValuePair<T>> = true;
template <class T>
inline constexpr bool is_json_wrapper_v<cereal::SizeTag<T>> = true;
template <class T>
inline constexpr bool is_json_wrapper_v<cereal::DeferredData<T>> = true;

// Which values are nodes of their own (objects or arrays): cereal's rule, everything but scalars,
// wrappers and types with a minimal (single-value) serialization for this archive.
template <class T, class Archive, template <class, class> class HasMinimal>
concept JsonNode = !is_json_scalar_v<T> && !is_json_wrapper_v<T> &&
                   !cereal::traits::has_minimal_base_class_serialization<T, HasMinimal, Archive>::value &&
                   !HasMinimal<T, Archive>::value;
template <class T>
concept JsonOutputNode = JsonNode<T, JsonOutputArchive, cereal::traits::has_minimal_output_serialization>;
/// The two input archives, which the same functions below read with.
template <class A>
concept JsonReadingArchive = std::is_same_v<A, JsonInputArchive> || std::is_same_v<A, JsonTextInputArchive>;
template <class T, class A>
concept JsonInputNode = JsonReadingArchive<A> && JsonNode<T, A, cereal::traits::has_minimal_input_serialization>;

// cereal calls prologue(ar, value) before and epilogue(ar, value) after each value; these
// overloads are more specialised than cereal's do-nothing defaults, which wrappers keep.
template <JsonOutputNode T>
void prologue(JsonOutputArchive& ar, const T&) {
  ar.start_node();
}
template <JsonOutputNode T>
void epilogue(JsonOutputArchive& ar, const T&) {
  ar.finish_node();
}
template <class A, class T>
  requires JsonInputNode<T, A>
void prologue(A& ar, const T&) {
  ar.start_node(json_type_label<T>());
}
template <class A, class T>
  requires JsonInputNode<T, A>
void epilogue(A& ar, const T&) {
  ar.finish_node();
}
// A scalar is named (in an object) when it is written; read, it needs nothing first.
template <class T>
  requires is_json_scalar_v<T>
void prologue(JsonOutputArchive& ar, const T&) {
  ar.write_name();
}

// A size tag (a sequence's length) is not written: it makes its node an array.
template <class T>
void prologue(JsonOutputArchive& ar, const cereal::SizeTag<T>&) {
  ar.make_array();
}

// The values themselves.
template <class T>
void save(JsonOutputArchive& ar, const cereal::NameValuePair<T>& nvp) {
  ar.set_next_name(nvp.name);
  ar(nvp.value);
}
template <JsonReadingArchive A, class T>
void load(A& ar, cereal::NameValuePair<T>& nvp) {
  ar.set_next_name(nvp.name);
  ar(nvp.value);
}
template <class T>
  requires std::is_arithmetic_v<T>
void save(JsonOutputArchive& ar, const T& v) {
  ar.save_value(v);
}
template <JsonReadingArchive A, class T>
  requires std::is_arithmetic_v<T>
void load(A& ar, T& v) {
  ar.load_value(v);
}
template <class Traits, class Alloc>
void save(JsonOutputArchive& ar, const std::basic_string<char, Traits, Alloc>& s) {
  ar.save_value(std::string_view(s.data(), s.size()));
}
template <JsonReadingArchive A, class Traits, class Alloc>
void load(A& ar, std::basic_string<char, Traits, Alloc>& s) {
  if constexpr (std::is_same_v<std::basic_string<char, Traits, Alloc>, std::string>) {
    ar.load_value(s);
  } else {
    std::string plain;
    ar.load_value(plain);
    s.assign(plain.data(), plain.size());
  }
}
inline void save(JsonOutputArchive& ar, const std::nullptr_t& n) { ar.save_value(n); }
template <JsonReadingArchive A>
void load(A& ar, std::nullptr_t& n) {
  ar.load_value(n);
}
template <class T>
void save(JsonOutputArchive&, const cereal::SizeTag<T>&) {}
template <JsonReadingArchive A, class T>
void load(A& ar, cereal::SizeTag<T>& tag) {
  cereal::size_type n = 0;
  ar.load_size(n);
  tag.size = static_cast<std::remove_reference_t<T>>(n);
}

/// A map with unique keys whose JSON gives a key twice is an error: cereal's load keeps the first
/// and drops the second's value ([{"key": 1, "value": 2}, {"key": 1, "value": 3}] was {1: 2}).
template <class A, class Map>
void load_unique_keys(A& ar, Map& map) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  map.clear();
  for (cereal::size_type i = 0; i < n; ++i) {
    typename Map::key_type key{};
    typename Map::mapped_type value{};
    ar(cereal::make_map_item(key, value));
    if (!map.emplace(std::move(key), std::move(value)).second)
      throw JsonError(ar.node_path(), "expected " + std::string(json_type_label<Map>()) +
                                          " (each key once), found the key of [" + std::to_string(i) +
                                          "] given before it");
  }
}
template <JsonReadingArchive A, class K, class V, class C, class Al>
void load(A& ar, std::map<K, V, C, Al>& map) {
  load_unique_keys(ar, map);
}
template <JsonReadingArchive A, class K, class V, class H, class E, class Al>
void load(A& ar, std::unordered_map<K, V, H, E, Al>& map) {
  load_unique_keys(ar, map);
}

}  // namespace ferry::detail
