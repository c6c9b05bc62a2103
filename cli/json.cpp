// SPDX-License-Identifier: BSD-3-Clause
// JSON helpers of the ferry command: parse one value, write compact lines, argument objects.
#include "json.hpp"

#include <string>
#include <vector>

namespace ferry::cli::json {

bool parse(std::string_view text, rj::Document& doc, std::string& error) {
  // The default flags are cereal's (kParseFullPrecisionFlag | kParseNanAndInfFlag): a value is
  // read here exactly as the worker's JSON archive will read it. Trailing text is an error.
  doc.Parse(text.data(), text.size());
  if (!doc.HasParseError()) return true;
  error = std::string(rj::GetParseError_En(doc.GetParseError())) + " (at offset " +
          std::to_string(doc.GetErrorOffset()) + ")";
  return false;
}

std::string write(const rj::Value& value) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string quote(std::string_view s) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  writer.String(s.data(), static_cast<rj::SizeType>(s.size()));
  return std::string(buffer.GetString(), buffer.GetSize());
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
              "gaps); found \"" + std::string(name) + "\". For an object argument, put it in an "
              "array: [{...}]";
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

std::string error_line(std::string_view type, std::string_view message, std::string_view stage) {
  // Members in the order the worker writes them (ferry/task.hpp, invoke_json).
  return "{\"error\":{\"type\":" + quote(type) + ",\"message\":" + quote(message) +
         ",\"stage\":" + quote(stage) + "}}";
}

}  // namespace ferry::cli::json
