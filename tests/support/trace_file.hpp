// SPDX-License-Identifier: BSD-3-Clause
// Reads a trace file (docs/trace-format.md) line by line, as `ferry report` and the viewers do:
// each complete line after "[" is one JSON event followed by a comma (none after the closing
// stats line), "]" closes a cleanly ended file, and a partial last line is left out.
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/json_archive.hpp>

namespace support {

namespace rj = ferry::detail::json;

struct TraceFile {
  std::string text;                                   ///< the whole file
  bool opened = false;                                ///< its first line is "["
  bool closed = false;                                ///< its last line is "]"
  bool partial_tail = false;                          ///< it ends in the middle of a line
  std::size_t bad_lines = 0;                          ///< complete lines that are not an event
  std::vector<std::unique_ptr<rj::Document>> events;  ///< the complete lines, in file order

  /// Every event with this `name` (and this `ph`, unless empty).
  std::vector<const rj::Value*> named(std::string_view name, std::string_view ph = {}) const {
    std::vector<const rj::Value*> out;
    for (const auto& e : events) {
      if (!e->IsObject() || !e->HasMember("name") || !(*e)["name"].IsString()) continue;
      if (std::string_view((*e)["name"].GetString()) != name) continue;
      if (!ph.empty() && std::string_view((*e)["ph"].GetString()) != ph) continue;
      out.push_back(e.get());
    }
    return out;
  }
  /// Every event of this phase ("X", "b", "i", ...).
  std::vector<const rj::Value*> phase(std::string_view ph) const {
    std::vector<const rj::Value*> out;
    for (const auto& e : events)
      if (e->IsObject() && e->HasMember("ph") && std::string_view((*e)["ph"].GetString()) == ph)
        out.push_back(e.get());
    return out;
  }
  /// The whole file parses as one JSON array (a cleanly closed file must).
  bool is_json_array() const {
    rj::Document d;
    d.Parse(text.c_str(), text.size());
    return !d.HasParseError() && d.IsArray();
  }
};

inline std::string str(const rj::Value& v, const char* key) {
  return v.IsObject() && v.HasMember(key) && v[key].IsString() ? v[key].GetString() : std::string();
}
inline std::string arg_str(const rj::Value& v, const char* key) {
  return v.HasMember("args") ? str(v["args"], key) : std::string();
}
inline std::uint64_t arg_u64(const rj::Value& v, const char* key) {
  if (!v.HasMember("args") || !v["args"].HasMember(key) || !v["args"][key].IsUint64()) return UINT64_MAX;
  return v["args"][key].GetUint64();
}
inline bool has_arg(const rj::Value& v, const char* key) {
  return v.HasMember("args") && v["args"].IsObject() && v["args"].HasMember(key);
}
inline std::uint64_t tid(const rj::Value& v) { return v["tid"].GetUint64(); }
inline double ts(const rj::Value& v) { return v["ts"].GetDouble(); }

inline TraceFile read_trace(const std::filesystem::path& path) {
  TraceFile t;
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  t.text = s.str();
  std::string_view rest = t.text;
  bool first = true;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    if (nl == std::string_view::npos) {
      t.partial_tail = true;  // a kill in the middle of a write: dropped, as ferry report does
      break;
    }
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
    if (first) {
      t.opened = line == "[";
      first = false;
      continue;
    }
    if (line == "]") {
      t.closed = true;
      continue;
    }
    if (!line.empty() && line.back() == ',') line.remove_suffix(1);
    auto doc = std::make_unique<rj::Document>();
    doc->Parse(line.data(), line.size());
    if (doc->HasParseError() || !doc->IsObject() || !doc->HasMember("ph") || !doc->HasMember("pid")) {
      ++t.bad_lines;
      continue;
    }
    t.events.push_back(std::move(doc));
  }
  return t;
}

}  // namespace support
