// SPDX-License-Identifier: BSD-3-Clause
// JSON for the ferry command: RapidJSON as ferry's JSON archive configures it, and the few helpers
// we need.
#pragma once

// The worker's own parsing rules (cereal's flags, the nesting limit): a line is read here exactly
// as the task's JSON entry point will read it.
#include <ferry/detail/json_archive.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ferry::cli {
namespace rj = ferry::detail::json;
}

namespace ferry::cli::json {

/// Parses `text` as exactly one JSON value (cereal's parse flags, nesting at most
/// detail::max_json_depth). On failure returns false and sets `error` to RapidJSON's message with
/// the offset, e.g. "Invalid value. (at offset 0)", or "nested deeper than 512 levels (at offset 512)".
bool parse(std::string_view text, rj::Document& doc, std::string& error);

/// `value` (a value of any RapidJSON document) as compact JSON (one line), printable().
template <class Value>
std::string write(const Value& value);

/// `s` as a JSON string literal.
std::string quote(std::string_view s);
/// JSON text made safe to print on a terminal and valid UTF-8: DEL, the C1 controls, the
/// bidirectional controls and the line and paragraph separators escaped (`\u007f`,
/// `\u0080`..`\u009f`, `\u202e`, ...: detail::escaped_on_terminal), a byte that is not part of a
/// UTF-8 character `\udcXX` (XX its value, 80 to ff: Python's surrogateescape, which gives the
/// bytes back) (write and quote do this already).
std::string printable(std::string_view text);

/// Rewrites `text` from `from` on as printable() would, in place: nothing is copied when
/// nothing needs escaping.
void make_printable(std::string& text, std::size_t from);

/// Appends `text`, one JSON value, to `out` as compact JSON (as parse then write, with parse's
/// checks and errors, but without a document: about the value's own size in memory). On failure
/// `out` is as it was.
bool append_value(std::string& out, std::string_view text, std::string& error);

/// What a worker's result line holds: a "value0" member, none ({} of a void task), an "error" one.
enum class Outcome { value, none, error };

/// Appends what `ferry` prints of a worker's result line `result`, and says which `outcome` it
/// was: its "value0" member's value, `null` when there is none, or the whole line when it has an
/// "error" member; compact and printable (printable()), read without a document (about its own
/// size in memory: `result` is read in place, and left changed). False with `error` (and `out` as
/// it was) when `result` is not one JSON object.
bool append_result(std::string& out, std::span<char> result, Outcome& outcome, std::string& error);

/// One input line of `ferry map` as the argument object of task `task` (of `arity` parameters,
/// when known), appended to `out` with its '\n'. The line is an array of the arguments, an object
/// already in argument form, or the one argument of a one-parameter task. Returns false with
/// `error` for a blank line (which would break the line-for-line alignment of the output), a line
/// that is not JSON, or arguments that do not fit (`out` then as it was). The line is read once,
/// in place (it is left changed: its strings unescaped where they were), and written as it is
/// read: no document of it is made (a document of an array of small numbers is about ten times
/// its text), and the output is about the line's size.
bool append_line_arguments(std::string& out, std::span<char> line, std::optional<std::size_t> arity,
                           std::string_view task, std::string& error);

/// An error object line as the worker writes it for --keep-going, printable() (its message quotes
/// names).
std::string error_line(std::string_view type, std::string_view message, std::string_view stage);

template <class Value>
std::string write(const Value& value) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  value.Accept(writer);
  return printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

}  // namespace ferry::cli::json
