// SPDX-License-Identifier: BSD-3-Clause
// JSON helpers of the ferry command: parse one value, write compact lines; argument lines and
// result lines converted as they are read, without a document of them.
#include "json.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "platform/format.hpp"

namespace ferry::cli::json {

bool parse(std::string_view text, rj::Document& doc, std::string& error) {
  // The worker's parser (detail::parse_json): the nesting is checked before RapidJSON's recursive
  // parser runs (a line of 200 KB of '[' crashed ferry with SIGSEGV, issue 10), and the flags are
  // cereal's. Trailing text is an error.
  return detail::parse_json(text, doc, error);
}


/// JSON text made safe to print on a terminal, and valid UTF-8: RapidJSON escapes only the
/// characters below U+0020, so DEL and what detail::escaped_on_terminal lists (the C1 controls,
/// U+0080 to U+009F: U+009B is a CSI that starts an escape sequence; the bidirectional controls,
/// which show the text after them in another order; the line and paragraph separators) are
/// escaped here, and a byte that is not part of a well-formed UTF-8 character (a raw 0x9B is CSI
/// to an 8-bit terminal) is written \udcXX, XX its value (0x80 to 0xFF: ASCII is always UTF-8).
/// That is Python's surrogateescape (os.fsdecode): a path or a string of any bytes comes back
/// whole, json.loads(line) then .encode("utf-8", "surrogateescape"); U+FFFD, as it was, lost
/// them. Valid UTF-8 never holds a surrogate, so no text is read back as another. Outside strings
/// JSON text is ASCII without controls, so every byte this changes is inside a string.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = detail::utf8_length(text, i);
    if (n == 0) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\udc%02x", static_cast<unsigned char>(text[i]));
      out += escaped;
      ++i;
      continue;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == 0x7F || detail::escaped_on_terminal(text, i, n)) {
      // Two or three bytes here (U+0080..U+2069): the code point from their low bits.
      unsigned code = n == 1 ? c : n == 2 ? c & 0x1Fu : c & 0x0Fu;
      for (std::size_t k = 1; k < n; ++k) code = code << 6 | (static_cast<unsigned char>(text[i + k]) & 0x3Fu);
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", code);
      out += escaped;
    } else {
      out.append(text.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string quote(std::string_view s) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  detail::write_json_string(writer, s);
  return printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

namespace {

/// A RapidJSON output stream that appends to a string: what a writer writes goes where it is
/// wanted, with no StringBuffer to copy it out of.
struct StringOutput {
  using Ch = char;
  std::string* out;
  void Put(char c) { out->push_back(c); }
  void Flush() {}
};
using Writer = rj::Writer<StringOutput, rj::UTF8<>, rj::UTF8<>, detail::JsonAllocator>;

/// RapidJSON's in-situ input over text of a known length: strings are unescaped where they lie
/// (the parser copies none onto its stack: a string of 80 MB cost 80 MB more), and past the end
/// Peek and Take give '\0' as MemoryStream's do, so that errors and their offsets are the same.
struct InPlaceStream {
  using Ch = char;
  char* src;
  char* const head;
  char* const tail;
  char* dst = nullptr;
  Ch Peek() const { return src == tail ? '\0' : *src; }
  Ch Take() { return src == tail ? '\0' : *src++; }
  std::size_t Tell() const { return static_cast<std::size_t>(src - head); }
  Ch* PutBegin() { return dst = src; }
  void Put(Ch c) { *dst++ = c; }  // behind src: unescaped text is never longer than its source
  std::size_t PutEnd(Ch* begin) { return static_cast<std::size_t>(dst - begin); }
  void Flush() {}
};

/**
A JSON text's parse events written again by a Writer into a string: the same compact text as
parsing it into a document and writing that (Accept makes the same calls), without the document.
A document costs 16 bytes a value and its parser's stack as much again: an array of small numbers
took about ten times its text (an 80 MB line of `ferry map` peaked at 823 MB, now 169 MB). What a
transcoder holds besides its output is, with read(), the string being read, copied onto the
parser's stack; read_in_place() copies none.

Derived classes (CRTP, as RapidJSON calls its handler's members by name) are told where values
begin and end (`depth` 0 is the root) and of each key, and may change what an array or object is
written as (`open`, `close`). None of them stops the parse: an error in the text comes first, as
it did with a document, whatever the handler thinks of what came before it.
*/
template <class Derived>
class Transcoder {
 public:
  explicit Transcoder(std::string& out) : output_{&out}, writer_(output_) {}

  bool Null() { return scalar([&] { return writer_.Null(); }); }
  bool Bool(bool b) { return scalar([&] { return writer_.Bool(b); }); }
  bool Int(int i) { return scalar([&] { return writer_.Int(i); }); }
  bool Uint(unsigned u) { return scalar([&] { return writer_.Uint(u); }); }
  bool Int64(std::int64_t i) { return scalar([&] { return writer_.Int64(i); }); }
  bool Uint64(std::uint64_t u) { return scalar([&] { return writer_.Uint64(u); }); }
  bool Double(double d) { return scalar([&] { return writer_.Double(d); }); }
  bool RawNumber(const char*, rj::SizeType, bool) { return false; }  // kParseNumbersAsStringsFlag only
  bool String(const char* s, rj::SizeType n, bool) { return scalar([&] { return writer_.String(s, n); }); }
  bool StartObject() { return start(false); }
  bool Key(const char* s, rj::SizeType n, bool) {
    self().key(depth_, std::string_view(s, n));
    return !writing_ || writer_.Key(s, n);
  }
  bool EndObject(rj::SizeType n) { return finish(false, n); }
  bool StartArray() { return start(true); }
  bool EndArray(rj::SizeType n) { return finish(true, n); }

  /// Reads `text` as exactly one JSON value, as json::parse reads it into a document: the same
  /// checks first (detail::prepare_json_text: nesting, NUL bytes, numbers RapidJSON misreads),
  /// the same flags, the same errors with their offsets.
  bool read(std::string_view text, std::string& error) {
    std::string fixed;
    if (!detail::prepare_json_text(text, fixed, error)) return false;
    rj::MemoryStream memory(text.data(), text.size());
    rj::EncodedInputStream<rj::UTF8<>, rj::MemoryStream> in(memory);
    return parse<rj::kParseDefaultFlags>(in, error);
  }
  /// read(), in place: `text` is left changed (its strings unescaped where they were).
  bool read_in_place(std::span<char> text, std::string& error) {
    std::string fixed;
    std::string_view view(text.data(), text.size());
    if (!detail::prepare_json_text(view, fixed, error)) return false;
    char* const at = fixed.empty() ? text.data() : fixed.data();  // `fixed` is a copy: as mutable
    InPlaceStream in{at, at, at + view.size()};
    return parse<rj::kParseDefaultFlags | rj::kParseInsituFlag>(in, error);
  }

  // What Derived may replace.
  void begin(std::size_t /*depth*/) {}
  void end(std::size_t /*depth*/) {}
  void key(std::size_t /*depth*/, std::string_view /*name*/) {}
  bool open(bool array) { return array ? writer_.StartArray() : writer_.StartObject(); }
  bool close(bool array, rj::SizeType n) { return array ? writer_.EndArray(n) : writer_.EndObject(n); }

 protected:
  Derived& self() { return static_cast<Derived&>(*this); }
  /// Stops writing, for an output already known to be refused: the parse goes on (its errors
  /// come first), the text written so far is the caller's to drop.
  void stop_writing() { writing_ = false; }

  StringOutput output_;
  Writer writer_;
  std::size_t depth_ = 0;
  bool writing_ = true;

 private:
  template <unsigned flags, class Stream>
  bool parse(Stream& in, std::string& error) {
    detail::JsonTextReader reader;  // \udc80 to \udcff are bytes, as printable() writes them
    const rj::ParseResult result = reader.Parse<flags>(in, self());
    if (result) return true;
    error = std::string(rj::GetParseError_En(result.Code())) + " (at offset " + std::to_string(result.Offset()) + ")";
    return false;
  }
  template <class Write>
  bool scalar(Write write) {
    self().begin(depth_);
    if (writing_ && !write()) return false;
    self().end(depth_);
    return true;
  }
  bool start(bool array) {
    self().begin(depth_);
    ++depth_;
    return !writing_ || self().open(array);
  }
  bool finish(bool array, rj::SizeType n) {
    if (writing_ && !self().close(array, n)) return false;
    self().end(--depth_);
    return true;
  }
};

/// One JSON value written again as it is.
class PlainValue : public Transcoder<PlainValue> {
 public:
  using Transcoder::Transcoder;
};

/// "value" and `index`, without allocating: a key of the arguments' object.
std::string_view argument_key(std::size_t index, char (&buffer)[32]) {
  std::memcpy(buffer, "value", 5);
  const auto end = std::to_chars(buffer + 5, buffer + sizeof buffer, index).ptr;
  return std::string_view(buffer, static_cast<std::size_t>(end - buffer));
}

/// The index of an argument's key ("value0", "value1", ...: no leading zero, at most 12
/// characters), or nullopt.
std::optional<std::size_t> argument_index(std::string_view name) {
  const bool ok = name.size() > 5 && name.size() <= 12 && name.substr(0, 5) == "value" &&
                  name.find_first_not_of("0123456789", 5) == std::string_view::npos &&
                  (name.size() == 6 || name[5] != '0');
  if (!ok) return std::nullopt;
  std::size_t index = 0;
  std::from_chars(name.data() + 5, name.data() + name.size(), index);
  return index;
}

/**
An input line of `ferry map` as the arguments' object, written as it is read: an array's elements
get the keys "value0", "value1", ...; an object's members keep theirs, checked once the line is
read (each "valueN" once, no gaps) and put in index order when they are not; any other value
becomes "value0". `Root` is known before reading, from the line's first character.
*/
class ArgumentLine : public Transcoder<ArgumentLine> {
 public:
  enum class Root { scalar, array, object };

  ArgumentLine(std::string& out, Root root, std::optional<std::size_t> arity)
      : Transcoder(out), root_(root), arity_(arity) {
    if (root_ == Root::scalar) {
      writer_.StartObject();
      writer_.Key("value0", 6);
    }
  }

  void begin(std::size_t depth) {
    if (depth != 1) return;
    if (root_ == Root::array) {
      ++count_;
      // More elements than the task's parameters: refused once read, so not written (the keys
      // of a line of many small values would make it several times longer).
      if (arity_ && count_ > *arity_) stop_writing();
      if (!writing_) return;
      char buffer[32];
      const std::string_view key = argument_key(count_ - 1, buffer);
      writer_.Key(key.data(), static_cast<rj::SizeType>(key.size()));
    } else if (root_ == Root::object && writing_) {
      values_.push_back({output_.out->size() + 1, 0});  // after the writer's ':'
    }
  }
  void end(std::size_t depth) {
    if (depth == 1 && root_ == Root::object && writing_) values_.back().second = output_.out->size();
  }
  void key(std::size_t depth, std::string_view name) {
    if (depth != 1) return;
    ++count_;
    // Past the task's parameters, or past a member that is certainly at fault, the line is
    // refused: nothing more is written or kept of it but what finds the first member at fault.
    if ((arity_ && count_ > *arity_) || at_fault_) {
      stop_writing();
      values_ = {};
    }
    if (at_fault_) return;
    const std::optional<std::size_t> index = argument_index(name);
    indices_.push_back(index ? static_cast<std::uint32_t>(*index) : no_index);  // at most 9,999,999
    if (!index) {
      first_bad_name_ = quote(name);
      at_fault_ = true;
    } else {
      if (*index >= seen_.size()) seen_.resize(*index + 1);
      at_fault_ = seen_[*index];
      seen_[*index] = true;
    }
  }
  bool open(bool array) {
    // The root array is the arguments' object; the root of a scalar line, its "value0".
    if (array && depth_ == 1 && root_ == Root::array) return writer_.StartObject();
    return Transcoder::open(array);
  }
  bool close(bool array, rj::SizeType n) {
    if (array && depth_ == 1 && root_ == Root::array) return writer_.EndObject(n);
    return Transcoder::close(array, n);
  }

  /// After a read that succeeded: the line's number of arguments, or nullopt with `error` when an
  /// object's members are not "value0", "value1", ... each once and without gaps. An object's
  /// members are put in index order in the output from `start`.
  std::optional<std::size_t> count(std::size_t start, std::string& error) {
    if (root_ == Root::scalar) {
      writer_.EndObject();
      return 1;
    }
    if (root_ == Root::array) return count_;
    // The first member at fault, in the line's order, as a document's members were checked: a
    // name that is no "valueN", an index past the members' count, or one seen before.
    std::vector<bool> seen(count_);
    bool ordered = true;
    for (std::size_t i = 0; i < indices_.size(); ++i) {
      const std::uint32_t index = indices_[i];
      if (index == no_index || index >= count_ || seen[index]) {
        error = "an object line holds the arguments as \"value0\", \"value1\", ... (each once, no "
                "gaps); found " + (index == no_index ? first_bad_name_ : "\"value" + std::to_string(index) + "\"") +
                ". For an object argument, put it in an array: [{...}]";
        return std::nullopt;
      }
      seen[index] = true;
      ordered = ordered && index == i;
    }
    if (!writing_) return count_;  // more than the task takes: refused by the caller
    if (!ordered) {
      // The worker reads members by name, but in order they read as fast as they can.
      std::string& out = *output_.out;
      std::vector<std::pair<std::size_t, std::size_t>> by_index(count_);
      for (std::size_t i = 0; i < count_; ++i) by_index[indices_[i]] = values_[i];
      std::string sorted = "{";
      for (std::size_t i = 0; i < count_; ++i) {
        char buffer[32];
        if (i > 0) sorted += ',';
        sorted += '"';
        sorted += argument_key(i, buffer);
        sorted += "\":";
        sorted.append(out, by_index[i].first, by_index[i].second - by_index[i].first);
      }
      sorted += '}';
      out.replace(start, std::string::npos, sorted);
    }
    return count_;
  }

 private:
  static constexpr std::uint32_t no_index = static_cast<std::uint32_t>(-1);
  const Root root_;
  const std::optional<std::size_t> arity_;
  std::size_t count_ = 0;  ///< elements of an array, members of an object
  // Of an object's members, in the line's order, up to the first certainly at fault: the index
  // each name gives (no_index: none), and while it is written, where its value lies in the
  // output. Four bytes a member kept, or 20 while written (a member takes 6 bytes or more).
  std::vector<std::uint32_t> indices_;
  std::vector<std::pair<std::size_t, std::size_t>> values_;
  std::vector<bool> seen_;      ///< indices met so far
  bool at_fault_ = false;       ///< a member certainly at fault was met: the line is refused
  std::string first_bad_name_;  ///< quoted, for the error
};

/**
A worker's result line ({"value0": RESULT}, {} for a void task, or {"error": {...}}) as `ferry`
prints it: RESULT, null, or the error object whole. Written whole as it is read, keeping where
the first "value0" member's value lies, then cut to it.
*/
class ResultLine : public Transcoder<ResultLine> {
 public:
  using Transcoder::Transcoder;

  bool StartObject() {
    if (depth_ == 0) object_ = true;
    return Transcoder::StartObject();
  }
  void key(std::size_t depth, std::string_view name) {
    if (depth != 1) return;
    if (name == "error") failed_ = true;
    in_value_ = !value_end_ && name == "value0";
  }
  void begin(std::size_t depth) {
    if (depth == 1 && in_value_) value_begin_ = output_.out->size() + 1;  // after the writer's ':'
  }
  void end(std::size_t depth) {
    if (depth == 1 && in_value_) {
      value_end_ = output_.out->size();
      in_value_ = false;
    }
  }

  bool object() const { return object_; }
  /// Cuts what was written from `start` down to the output line: the value, null, or all of it.
  Outcome cut(std::size_t start) {
    std::string& out = *output_.out;
    if (failed_) return Outcome::error;
    if (!value_end_) {
      out.resize(start);
      out += "null";
      return Outcome::none;
    }
    out.resize(value_end_);
    out.erase(start, value_begin_ - start);
    return Outcome::value;
  }

 private:
  bool object_ = false, failed_ = false, in_value_ = false;
  std::size_t value_begin_ = 0, value_end_ = 0;  ///< value_end_ 0: no "value0" yet
};

}  // namespace

void make_printable(std::string& text, std::size_t from) {
  // Most text needs nothing: it is kept where it is; else from its first change on, rewritten.
  std::size_t i = from;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F) {
      ++i;
      continue;
    }
    const std::size_t n = detail::utf8_length(text, i);
    if (n == 0 || c == 0x7F || detail::escaped_on_terminal(text, i, n)) break;
    i += n;
  }
  if (i == text.size()) return;
  std::string tail = printable(std::string_view(text).substr(i));
  text.resize(i);
  text += tail;
}

bool append_value(std::string& out, std::string_view text, std::string& error) {
  const std::size_t start = out.size();
  PlainValue value(out);
  if (value.read(text, error)) return true;
  out.resize(start);
  return false;
}

bool append_result(std::string& out, std::span<char> result, Outcome& outcome, std::string& error) {
  const std::size_t start = out.size();
  // The result's size, about what is written (a result line is compact JSON already): one
  // allocation rather than a string that doubles as it grows, and holds its old copy meanwhile.
  out.reserve(start + result.size());
  ResultLine line(out);
  const bool read = line.read_in_place(result, error);
  if (!read || !line.object()) {
    out.resize(start);
    if (read) error = "another value";
    return false;
  }
  outcome = line.cut(start);
  make_printable(out, start);
  return true;
}

bool append_line_arguments(std::string& out, std::span<char> text, std::optional<std::size_t> arity,
                           std::string_view task, std::string& error) {
  const std::string_view line(text.data(), text.size());
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
    // Skipping it would shift every later output line against its input line.
    error = "blank line: each input line gives one output line (for a task without parameters, "
            "write [])";
    return false;
  }
  // What the value is, from its first character after the whitespace RapidJSON skips.
  const char first = line[std::min(line.find_first_not_of(" \t\r\n"), line.size() - 1)];
  const ArgumentLine::Root root = first == '[' ? ArgumentLine::Root::array
                                  : first == '{' ? ArgumentLine::Root::object
                                                 : ArgumentLine::Root::scalar;
  const std::size_t start = out.size();
  // About the line's size: one allocation for most lines, however long.
  out.reserve(start + line.size() + 16);
  ArgumentLine arguments(out, root, arity);
  std::optional<std::size_t> n;
  if (!arguments.read_in_place(text, error)) {
    error = "not valid JSON: " + error;
  } else if (n = arguments.count(start, error); n && arity && *n != *arity) {
    error = "task '" + std::string(task) + "' takes " + std::to_string(*arity) +
            (*arity == 1 ? " argument" : " arguments");
    if (root == ArgumentLine::Root::scalar) {
      error += ": give them as an array [a, b, ...]";
    } else {
      error += ", the line has " + std::to_string(*n);
      if (root == ArgumentLine::Root::array && *arity == 1) error += " (wrap an array argument in an array: [[1, 2]])";
    }
    n.reset();
  }
  if (!n) {
    out.resize(start);
    return false;
  }
  out += '\n';
  return true;
}

std::string error_line(std::string_view type, std::string_view message, std::string_view stage) {
  rj::StringBuffer buffer;
  detail::write_json_error(buffer, type, message, stage);
  // Printable as every other line: ferry map writes a line it could not read as this error
  // straight out, and its message quotes a task's name, which the plugin's file says.
  return printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

}  // namespace ferry::cli::json
