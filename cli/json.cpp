// SPDX-License-Identifier: BSD-3-Clause
// JSON helpers of the ferry command: parse one value, write compact lines, argument objects.
#include "json.hpp"

#include <cstdio>
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
/// to an 8-bit terminal) becomes U+FFFD. Outside strings JSON text is ASCII without controls, so
/// every byte this changes is inside a string.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = detail::utf8_length(text, i);
    if (n == 0) {
      out += "\\ufffd";
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

std::string write(const rj::Value& value) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  value.Accept(writer);
  return printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

std::string quote(std::string_view s) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  detail::write_json_string(writer, s);
  return printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

void append_arguments(std::string& out, const rj::Value& array) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  writer.StartObject();
  rj::SizeType i = 0;
  for (const auto& element : array.GetArray()) {
    std::string key = "value" + std::to_string(i++);
    writer.Key(key.c_str(), static_cast<rj::SizeType>(key.size()));
    element.Accept(writer);
  }
  writer.EndObject();
  out.append(buffer.GetString(), buffer.GetSize());
}

std::optional<std::size_t> append_argument_object(std::string& out, const rj::Value& object,
                                                  std::string& error) {
  std::vector<const rj::Value*> values(object.MemberCount(), nullptr);
  for (const auto& m : object.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    std::size_t index = 0;
    bool ok = name.size() > 5 && name.size() <= 12 && name.substr(0, 5) == "value" &&
              name.find_first_not_of("0123456789", 5) == std::string_view::npos &&
              (name.size() == 6 || name[5] != '0');
    if (ok) index = std::stoul(std::string(name.substr(5)));
    if (!ok || index >= values.size() || values[index]) {
      error = "an object line holds the arguments as \"value0\", \"value1\", ... (each once, no "
              "gaps); found " + quote(name) + ". For an object argument, put it in an array: [{...}]";
      return std::nullopt;
    }
    values[index] = &m.value;
  }
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  writer.StartObject();
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::string key = "value" + std::to_string(i);
    writer.Key(key.c_str(), static_cast<rj::SizeType>(key.size()));
    values[i]->Accept(writer);
  }
  writer.EndObject();
  out.append(buffer.GetString(), buffer.GetSize());
  return values.size();
}

bool append_line_arguments(std::string& out, std::string_view line, std::optional<std::size_t> arity,
                           std::string_view task, std::string& error) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
    // Skipping it would shift every later output line against its input line.
    error = "blank line: each input line gives one output line (for a task without parameters, "
            "write [])";
    return false;
  }
  rj::Document doc;
  if (!parse(line, doc, error)) {
    error = "not valid JSON: " + error;
    return false;
  }
  auto takes = [&] {
    return "task '" + std::string(task) + "' takes " + std::to_string(*arity) +
           (*arity == 1 ? " argument" : " arguments");
  };
  if (doc.IsArray()) {
    if (arity && doc.Size() != *arity) {
      error = takes() + ", the line has " + std::to_string(doc.Size()) +
              (*arity == 1 ? " (wrap an array argument in an array: [[1, 2]])" : "");
      return false;
    }
    append_arguments(out, doc);
  } else if (doc.IsObject()) {
    std::string object;
    auto n = append_argument_object(object, doc, error);
    if (!n) return false;
    if (arity && *n != *arity) {
      error = takes() + ", the line has " + std::to_string(*n);
      return false;
    }
    out += object;
  } else {
    if (arity && *arity != 1) {
      error = takes() + ": give them as an array [a, b, ...]";
      return false;
    }
    // The line itself, now known to be one JSON value: writing the value again would cost a
    // second pass over a line that may be hundreds of megabytes.
    out += "{\"value0\":";
    out += line;
    out += '}';
  }
  out += '\n';
  return true;
}

std::string error_line(std::string_view type, std::string_view message, std::string_view stage) {
  rj::StringBuffer buffer;
  detail::write_json_error(buffer, type, message, stage);
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace ferry::cli::json
