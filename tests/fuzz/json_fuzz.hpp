// SPDX-License-Identifier: BSD-3-Clause
// One input of the JSON fuzzer (fuzz_json.cpp; test_json_archive replays the corpus): bytes
// through the code the worker runs for submit_json and `ferry run/map` (the JSON entry point:
// argument check, decoding into representative parameter types (as a document of the line would
// give them), encoding the result), and through the ferry command's line → argument-object
// conversion. Anything but an error reported the documented way (a status, an error line, `false`
// with a message) aborts.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include <ferry/task.hpp>

#include "../../cli/json.hpp"

namespace ferry::fuzz {

/// A user type with named fields of several kinds.
struct Record {
  std::string name;
  std::vector<long long> values;
  std::optional<double> weight;
  std::map<std::string, std::uint8_t> tags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(name), CEREAL_NVP(values), CEREAL_NVP(weight), CEREAL_NVP(tags));
  }
};
enum class Mode : std::int8_t { off = 0, on = 1 };
/// A recursive type: the text archive reads each level's children counted and skipped by the
/// levels above it, over its table of container ends.
struct Tree {
  int value = 0;
  std::vector<Tree> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(value), CEREAL_NVP(children));
  }
};

// Tasks of one parameter return it: their result line, read back as arguments, must give the
// same line again.
inline int echo_int(int x) { return x; }
inline unsigned long long echo_u64(unsigned long long x) { return x; }
inline std::string echo_text(const std::string& s) { return s; }
inline std::string echo_bytes(ferry::BytesView b) { return std::string(b.view()); }
inline Record echo_record(Record r) { return r; }
inline Tree echo_tree(Tree t) { return t; }
inline std::vector<std::variant<long long, std::string, bool>> echo_variants(
    std::vector<std::variant<long long, std::string, bool>> v) {
  return v;
}
inline std::tuple<float, char, std::optional<std::uint16_t>, Mode> echo_tuple(
    std::tuple<float, char, std::optional<std::uint16_t>, Mode> t) {
  return t;
}
/// The scalar types no other task reads alone: each integer width at its limits, long double (a
/// string of its digits), null.
inline std::tuple<bool, signed char, unsigned char, std::int16_t, std::uint32_t, std::int64_t, long double,
                  std::nullptr_t>
echo_scalars(std::tuple<bool, signed char, unsigned char, std::int16_t, std::uint32_t, std::int64_t, long double,
                        std::nullptr_t> t) {
  return t;
}
inline std::map<std::string, std::vector<double>> echo_map(std::map<std::string, std::vector<double>> m) {
  return m;
}
inline std::size_t two(std::pair<int, std::string> p, std::array<std::int8_t, 2> a) {
  return p.second.size() + static_cast<std::size_t>(a[0] != 0);
}
inline void nothing() {}

[[noreturn]] inline void broken(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "json fuzz invariant broken: %s: %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

struct Call {
  detail::InvokeStatus status;
  std::string out;
};

/// Fn's JSON entry point on `lines`, as the worker calls it.
template <auto Fn>
Call invoke(std::string_view lines, std::uint32_t items, bool keep_going) {
  std::stringbuf result, error;
  detail::InvokeContext ctx{};
  ctx.args = lines.data();
  ctx.args_size = lines.size();
  ctx.items = items;
  ctx.flags = keep_going ? detail::invoke_keep_going : 0;
  ctx.result = &result;
  ctx.error = &error;
  detail::invoke_json<Fn>(ctx);
  if (ctx.status != detail::InvokeStatus::ok && error.str().find('\0') == std::string::npos)
    broken("a failure without \"type\\0message\"", error.str());
  return {ctx.status, result.str()};
}

/// Every output line is one compact JSON object: a result {"value0": ...} / {}, or an error.
inline std::size_t check_output(std::string_view out) {
  std::size_t lines = 0;
  while (!out.empty()) {
    auto nl = out.find('\n');
    if (nl == std::string_view::npos) broken("an output line without its newline", out);
    detail::json::Document doc;
    std::string error;
    if (!detail::parse_json(out.substr(0, nl), doc, error) || !doc.IsObject())
      broken("an output line that is not a JSON object", out.substr(0, nl));
    out.remove_prefix(nl + 1);
    ++lines;
  }
  return lines;
}

/// What the worker's decoding of a line of arguments must give, made the slow way: a document of
/// the line, checked and read by JsonInputArchive (the worker did this until it cost ten times
/// the line; detail::read_json_arguments reads the text where it lies).
template <class Tuple, std::size_t... I>
void document_json_arguments(std::string_view line, Tuple& args, std::index_sequence<I...> arguments) {
  constexpr std::size_t arity = sizeof...(I);
  if (arity == 0 && line.find_first_not_of(" \t\r") == std::string_view::npos) return;
  detail::JsonDocument doc;
  std::string error;
  if (!detail::parse_json(line, doc, error)) throw detail::JsonError({}, "arguments are not valid JSON: " + error);
  detail::check_json_arguments(doc, arity);
  detail::JsonInputArchive ar(doc);
  detail::read_json_argument_values(ar, args, arguments);
}

/// Fn's arguments read from `line` as the worker reads them and through a document: the same
/// values (written as JSON), or the same exception with the same message.
template <auto Fn>
void check_arguments_against_document(std::string_view line) {
  using Task = detail::TaskCall<Fn>;
  auto outcome = [&](auto read) {
    typename Task::Args args;
    try {
      read(args);
      detail::JsonStringBuffer out;
      detail::JsonOutputArchive ar(out);
      ar(args);
      ar.finish();
      return std::string(out.GetString(), out.GetSize());
    } catch (const std::exception& e) {
      return std::string(typeid(e).name()) + ": " + e.what();
    }
  };
  const auto sequence = std::make_index_sequence<Task::arity>{};
  const std::string text = outcome([&](auto& args) { detail::read_json_arguments(line, args, sequence); });
  const std::string document = outcome([&](auto& args) { document_json_arguments(line, args, sequence); });
  if (text != document)
    broken("arguments read otherwise than through a document", std::string(line) + " -> " + text + " / " + document);
}

/// `text` as the lines of one call to Fn, one by one and as a chunk with keep-going; for a
/// task of one parameter, a result must read back as the same result. Each line's arguments
/// read as through a document.
template <auto Fn>
void run_task(std::string_view text, std::uint32_t items) {
  std::string_view rest = text;
  for (std::uint32_t item = 0; item < items; ++item) {
    const auto nl = rest.find('\n');
    check_arguments_against_document<Fn>(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
  }
  Call chunk = invoke<Fn>(text, items, /*keep_going=*/true);
  if (chunk.status != detail::InvokeStatus::ok) broken("a keep-going chunk failed as a whole", text);
  if (check_output(chunk.out) != items) broken("a keep-going chunk lost lines", chunk.out);

  Call first = invoke<Fn>(text, 1, /*keep_going=*/false);
  if (first.status != detail::InvokeStatus::ok) return;
  if (check_output(first.out) != 1) broken("one item, not one line", first.out);
  if constexpr (detail::FunctionTraits<decltype(Fn)>::arity == 1) {
    Call again = invoke<Fn>(first.out, 1, false);
    if (again.status != detail::InvokeStatus::ok || again.out != first.out)
      broken("a result that does not read back as itself", first.out + " -> " + again.out);
  }
}

/// What the ferry command's conversion of a line must write, made the slow way: a document of the
/// line, written again (a document's Accept makes the calls the streaming conversion makes as it
/// reads), with the same checks and errors in the same order. The command made this document
/// itself until it cost ten times the line (cli::json::append_line_arguments).
inline bool document_line_arguments(std::string& out, std::string_view line, std::optional<std::size_t> arity,
                                    std::string_view task, std::string& error) {
  namespace rj = detail::json;
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
    error = "blank line: each input line gives one output line (for a task without parameters, "
            "write [])";
    return false;
  }
  rj::GenericDocument<detail::JsonUtf8> doc;  // \udc80 to \udcff are bytes, as the command reads them
  if (!detail::parse_json(line, doc, error)) {
    error = "not valid JSON: " + error;
    return false;
  }
  auto takes = [&] {
    return "task '" + std::string(task) + "' takes " + std::to_string(*arity) +
           (*arity == 1 ? " argument" : " arguments");
  };
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> writer(buffer);
  writer.StartObject();
  auto key = [&](std::size_t i) {
    const std::string name = "value" + std::to_string(i);
    writer.Key(name.c_str(), static_cast<rj::SizeType>(name.size()));
  };
  if (doc.IsArray()) {
    if (arity && doc.Size() != *arity) {
      error = takes() + ", the line has " + std::to_string(doc.Size()) +
              (*arity == 1 ? " (wrap an array argument in an array: [[1, 2]])" : "");
      return false;
    }
    for (rj::SizeType i = 0; i < doc.Size(); ++i) {
      key(i);
      doc[i].Accept(writer);
    }
  } else if (doc.IsObject()) {
    std::vector<const decltype(doc)::ValueType*> values(doc.MemberCount(), nullptr);
    // By index: clang in C++20 finds RapidJSON's iterator comparisons ambiguous.
    for (rj::SizeType k = 0; k < doc.MemberCount(); ++k) {
      const auto& m = *(doc.MemberBegin() + k);
      std::string_view name(m.name.GetString(), m.name.GetStringLength());
      bool ok = name.size() > 5 && name.size() <= 12 && name.substr(0, 5) == "value" &&
                name.find_first_not_of("0123456789", 5) == std::string_view::npos &&
                (name.size() == 6 || name[5] != '0');
      std::size_t index = ok ? std::stoul(std::string(name.substr(5))) : 0;
      if (!ok || index >= values.size() || values[index]) {
        error = "an object line holds the arguments as \"value0\", \"value1\", ... (each once, no "
                "gaps); found " + cli::json::quote(name) + ". For an object argument, put it in an array: [{...}]";
        return false;
      }
      values[index] = &m.value;
    }
    if (arity && values.size() != *arity) {
      error = takes() + ", the line has " + std::to_string(values.size());
      return false;
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
      key(i);
      values[i]->Accept(writer);
    }
  } else {
    if (arity && *arity != 1) {
      error = takes() + ": give them as an array [a, b, ...]";
      return false;
    }
    key(0);
    doc.Accept(writer);
  }
  writer.EndObject();
  out.append(buffer.GetString(), buffer.GetSize());
  out += '\n';
  return true;
}

/// What the ferry command must print of a worker's result line, made the slow way (a document):
/// the "value0" member's value, null without one, the whole object with an "error" member.
inline std::optional<std::string> document_result(std::string_view result, cli::json::Outcome& outcome) {
  detail::json::GenericDocument<detail::JsonUtf8> doc;
  std::string error;
  if (!detail::parse_json(result, doc, error) || !doc.IsObject()) return std::nullopt;
  if (doc.HasMember("error")) {
    outcome = cli::json::Outcome::error;
    return cli::json::write(doc);
  }
  if (!doc.HasMember("value0")) {
    outcome = cli::json::Outcome::none;
    return std::string("null");
  }
  outcome = cli::json::Outcome::value;
  return cli::json::write(doc["value0"]);  // the first member of that name
}

/// The streaming conversions of the ferry command give what a document of the text gives: the
/// same output, or the same error (and `out` as it was). `text` is read as an argument line for
/// `arity` and as a result line.
inline void check_cli_against_documents(std::string_view text, std::optional<std::size_t> arity) {
  std::string out = "kept\n", error, expected_out = "kept\n", expected_error, copy(text);
  const bool ok = cli::json::append_line_arguments(out, copy, arity, "task", error);
  const bool expected = document_line_arguments(expected_out, text, arity, "task", expected_error);
  if (ok != expected || out != expected_out || (!ok && error != expected_error))
    broken("a line converted otherwise than through a document",
           std::string(text) + " -> " + out + error + " / " + expected_out + expected_error);

  cli::json::Outcome outcome{}, expected_outcome{};
  std::string shown = "kept";
  copy = text;
  const bool read = cli::json::append_result(shown, copy, outcome, error);
  const std::optional<std::string> reference = document_result(text, expected_outcome);
  if (read != reference.has_value() || (read && (shown != "kept" + *reference || outcome != expected_outcome)) ||
      (!read && shown != "kept"))
    broken("a result line shown otherwise than through a document", std::string(text) + " -> " + shown);
}

/// The ferry command's conversion of each line, for tasks of unknown, 0, 1 and 2 parameters: an
/// argument line it produces must pass the worker's argument check, and run.
inline void run_cli_lines(std::string_view text) {
  while (true) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    for (std::optional<std::size_t> arity : {std::optional<std::size_t>(), std::optional<std::size_t>(0),
                                             std::optional<std::size_t>(1), std::optional<std::size_t>(2)}) {
      check_cli_against_documents(line, arity);
      std::string out, error, copy(line);  // read in place
      if (!cli::json::append_line_arguments(out, copy, arity, "task", error)) {
        if (error.empty()) broken("a refused line without a reason", line);
        continue;
      }
      if (out.empty() || out.back() != '\n' || out.find('\n') != out.size() - 1)
        broken("an argument line that is not one line", out);
      detail::JsonDocument doc;
      std::string parse_error;
      if (!detail::parse_json(std::string_view(out).substr(0, out.size() - 1), doc, parse_error))
        broken("an argument line that does not parse", out);
      std::size_t n = arity ? *arity : doc.MemberCount();
      try {
        detail::check_json_arguments(doc, n);
      } catch (const detail::JsonError& e) {
        broken("an argument line the worker refuses", out + e.what());
      }
      if (n == 0) run_task<&nothing>(out, 1);
      if (n == 1) run_task<&echo_int>(out, 1);
      if (n == 2) run_task<&two>(out, 1);
    }
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

/// One fuzz input: its lines through every task above, and through the command's conversion.
inline void json_one_input(std::string_view text) {
  std::uint32_t items = 1;
  for (char c : text) items += c == '\n';
  if (items > 16) items = 16;
  run_task<&echo_int>(text, items);
  run_task<&echo_u64>(text, items);
  run_task<&echo_text>(text, items);
  run_task<&echo_bytes>(text, items);
  run_task<&echo_record>(text, items);
  run_task<&echo_tree>(text, items);
  run_task<&echo_variants>(text, items);
  run_task<&echo_tuple>(text, items);
  run_task<&echo_scalars>(text, items);
  run_task<&echo_map>(text, items);
  run_task<&two>(text, items);
  run_task<&nothing>(text, items);
  run_cli_lines(text);
}

}  // namespace ferry::fuzz
