// SPDX-License-Identifier: BSD-3-Clause
// JSON for the ferry command: RapidJSON as cereal configures it, and the few helpers we need.
#pragma once

// cereal's JSON archive first: it configures RapidJSON (assertions throw, full-precision parsing,
// NaN/Infinity accepted) before including it, and every translation unit must see RapidJSON with
// the same configuration. cereal bundles RapidJSON under its own prefix upstream; Debian's
// libcereal-dev uses the system's rapidjson-dev instead.
#include <cereal/archives/json.hpp>

#if __has_include(<cereal/external/rapidjson/document.h>)
#include <cereal/external/rapidjson/document.h>
#include <cereal/external/rapidjson/error/en.h>
#include <cereal/external/rapidjson/stringbuffer.h>
#include <cereal/external/rapidjson/writer.h>
namespace ferry::cli::rj {
using namespace CEREAL_RAPIDJSON_NAMESPACE;
}
#else
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
namespace ferry::cli::rj {
using namespace RAPIDJSON_NAMESPACE;
}
#endif

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ferry::cli::json {

/// Parses `text` as exactly one JSON value (cereal's parse flags). On failure returns false and
/// sets `error` to RapidJSON's message with the offset, e.g. "Invalid value. (at offset 0)".
bool parse(std::string_view text, rj::Document& doc, std::string& error);

/// `value` as compact JSON (one line).
std::string write(const rj::Value& value);

/// `s` as a JSON string literal.
std::string quote(std::string_view s);

/// Appends `{"value0":v0,"value1":v1,...}` for the elements of `array` to `out` (one line).
void append_arguments(std::string& out, const rj::Value& array);

/// Appends `{"value0":...,"value1":...}` for an object of argument members to `out`, members in
/// index order: cereal's JSON archive reads them by position, not by name, so
/// {"value1": 2, "value0": 1} would otherwise swap the arguments. Returns the number of
/// arguments, or nullopt with `error` when a member is not named value0, value1, ... without gaps.
std::optional<std::size_t> append_argument_object(std::string& out, const rj::Value& object,
                                                  std::string& error);

/// An error object line as the worker writes it for --keep-going.
std::string error_line(std::string_view type, std::string_view message, std::string_view stage);

}  // namespace ferry::cli::json
