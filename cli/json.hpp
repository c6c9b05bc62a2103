// SPDX-License-Identifier: BSD-3-Clause
// JSON for the ferry command: RapidJSON as ferry's JSON archive configures it, and the few helpers
// we need.
#pragma once

// The worker's own parsing rules (cereal's flags, the nesting limit): a line is read here exactly
// as the task's JSON entry point will read it.
#include <ferry/detail/json_archive.hpp>

#include <cstddef>
#include <optional>
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

/// `value` as compact JSON (one line).
std::string write(const rj::Value& value);

/// `s` as a JSON string literal.
std::string quote(std::string_view s);
/// JSON text made safe to print on a terminal and valid UTF-8: DEL, the C1 controls, the
/// bidirectional controls and the line and paragraph separators escaped (`\u007f`,
/// `\u0080`..`\u009f`, `\u202e`, ...: detail::escaped_on_terminal), a byte that is not part of a
/// UTF-8 character `\ufffd` (write and quote do this already).
std::string printable(std::string_view text);

/// Appends `{"value0":v0,"value1":v1,...}` for the elements of `array` to `out` (one line).
void append_arguments(std::string& out, const rj::Value& array);

/// Appends `{"value0":...,"value1":...}` for an object of argument members to `out`, members in
/// index order: the worker reads them by name, but sorted they read as fast as they can.
/// Returns the number of arguments, or nullopt with `error` when a member is not named value0,
/// value1, ... without gaps.
std::optional<std::size_t> append_argument_object(std::string& out, const rj::Value& object,
                                                  std::string& error);

/// One input line of `ferry map` as the argument object of task `task` (of `arity` parameters,
/// when known), appended to `out` with its '\n'. The line is an array of the arguments, an object
/// already in argument form, or the one argument of a one-parameter task. Returns false with
/// `error` for a blank line (which would break the line-for-line alignment of the output), a line
/// that is not JSON, or arguments that do not fit.
bool append_line_arguments(std::string& out, std::string_view line, std::optional<std::size_t> arity,
                           std::string_view task, std::string& error);

/// An error object line as the worker writes it for --keep-going.
std::string error_line(std::string_view type, std::string_view message, std::string_view stage);

}  // namespace ferry::cli::json
