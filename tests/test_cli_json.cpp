// SPDX-License-Identifier: BSD-3-Clause
// The ferry command's JSON conversions (cli/json.cpp), which read a text once and write it as they
// read it, without a document of it: each must write what a document of the text wrote, and say
// what it said.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/json_fuzz.hpp"

namespace {

namespace json = ferry::cli::json;
using ferry::fuzz::check_cli_against_documents;

/// `text` converted as an argument line for `arity`: the line written, or the error.
std::string line_of(std::string text, std::optional<std::size_t> arity = std::nullopt) {
  std::string out, error;
  if (!json::append_line_arguments(out, text, arity, "task", error)) return "error: " + error;
  return out;
}

/// `text` shown as a result line: what ferry prints, or the error.
std::string result_of(std::string text, json::Outcome* outcome = nullptr) {
  std::string out, error;
  json::Outcome got{};
  if (!json::append_result(out, text, got, error)) return "error: " + error;
  if (outcome) *outcome = got;
  return out;
}

const std::string deepest = std::string(ferry::detail::max_json_depth, '[') + std::string(ferry::detail::max_json_depth, ']');
const std::string too_deep = "[" + deepest + "]";

}  // namespace

TEST_CASE("CliJson.lines_and_results_read_as_a_document_of_them_reads_them") {
  // The streaming conversions against a document of each text (json_fuzz.hpp's reference: what the
  // command did before, at ten times the text's size): output, errors and their offsets.
  const std::vector<std::string> texts = {
      "[40, 2]", "[[1, 2, 3]]", " \t[ 1 ,\r 2 ] ", "[]", "{}", "7", "-0", "\"text\"", "true", "null",
      "[\"a\\u0000b\", \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\ud83d\\ude00\", \"\\u00e9\xc3\xa9\"]",
      "[1.5, 1e2, 1E-2, -0.0, 123456789012345678901234567890, 18446744073709551615, -9223372036854775808]",
      "[NaN, Infinity, -Infinity, Inf]", "[0.000000000000000000000000, 0e5, 1e-400]",
      "[184467440737095516155]", "[1e400]", "[0e400, x]",
      "{\"value0\": 1, \"value1\": [2]}", "{\"value1\": 2, \"value0\": {\"value1\": 1}}",
      "{\"value2\": 3, \"value0\": 1, \"value1\": 2}", "{\"value0\": 1, \"value0\": 2}",
      "{\"value0\": 1, \"value2\": 2}", "{\"value01\": 1}", "{\"valuex\": 1, \"value9\": 2}", "{\"\": 1}",
      "{\"value0\":1,\"value1\":2,\"value2\":3,\"x\":4}", "{\"value5\":1,\"value0\":2,\"x\":3}",
      "{\"x\":1,\"value0\":1,\"value0\":2}", "{\"value1\":1,\"value1\":2,\"value9999999\":3}",
      "{\"value2\":[1,{\"value0\":2}],\"value1\":\"\\u0000\",\"value0\":{}}",
      "{\"value0\":{\"error\":1}}", "{\"error\":{\"type\":\"t\",\"message\":\"m\\n\\u009b\",\"stage\":\"task\"}}",
      "{\"value0\":1,\"error\":2}", "{\"value0\":1,\"value0\":2}", "{\"x\":1}", "{\"value0\":\"\\u202e\xc2\x9b\x9b\"}",
      "[1, 2", "[1, 2]]", "{\"value0\" 1}", "{\"value0\": 1,}", "[1,]", "\"unterminated", "\"raw\x01\"", "[1] [2]",
      "nul", "[01]", "[1.]", "[.5]", "[\"\\x\"]", "[\"\\ud800\"]", "{1: 2}", std::string("[1, \0]", 6),
      "[\"\xff\"]", "\xef\xbb\xbf[1]", "[NaNe0]", deepest, too_deep, "[" + deepest + "",
      "{\"value0\": " + deepest + "}"};
  for (const std::string& text : texts) {
    CAPTURE(text);
    for (std::optional<std::size_t> arity : {std::optional<std::size_t>(), std::optional<std::size_t>(0),
                                             std::optional<std::size_t>(1), std::optional<std::size_t>(2),
                                             std::optional<std::size_t>(3)})
      check_cli_against_documents(text, arity);  // aborts on a difference, naming it
  }
}

TEST_CASE("CliJson.an_argument_line_is_the_arguments_object") {
  CHECK(line_of("[40, 2]", 2) == "{\"value0\":40,\"value1\":2}\n");
  CHECK(line_of("[[1, 2]]", 1) == "{\"value0\":[1,2]}\n");
  CHECK(line_of("  \"a\\u0000\\nb\"  ", 1) == "{\"value0\":\"a\\u0000\\nb\"}\n");  // written again, not copied
  CHECK(line_of("{\"value1\": \"b\", \"value0\": [\"a\"]}", 2) == "{\"value0\":[\"a\"],\"value1\":\"b\"}\n");
  CHECK(line_of("{\"value1\": 1, \"value2\": 2, \"value0\": 0}") == "{\"value0\":0,\"value1\":1,\"value2\":2}\n");
  CHECK(line_of("[]", 0) == "{}\n");
  CHECK(line_of("[0e5, 0.00000000000000000000]", 2) == "{\"value0\":0.0,\"value1\":0.0}\n");
  // Refused: what the line holds is said, as before.
  CHECK(line_of("[1, 2, 3]", 2) == "error: task 'task' takes 2 arguments, the line has 3");
  CHECK(line_of("[1, 2]", 1) ==
        "error: task 'task' takes 1 argument, the line has 2 (wrap an array argument in an array: [[1, 2]])");
  CHECK(line_of("7", 2) == "error: task 'task' takes 2 arguments: give them as an array [a, b, ...]");
  CHECK(line_of("{\"value0\": 1, \"value0\": 2}") ==
        "error: an object line holds the arguments as \"value0\", \"value1\", ... (each once, no gaps); found "
        "\"value0\". For an object argument, put it in an array: [{...}]");
  CHECK(line_of("{\"value0\": 1, \"value01\": 2, \"value5\": 3}").find("found \"value01\"") != std::string::npos);
  CHECK(line_of("{\"value0\": 1, \"value5\": 2}").find("found \"value5\"") != std::string::npos);
  CHECK(line_of("[1, 2") == "error: not valid JSON: Missing a comma or ']' after an array element. (at offset 5)");
  CHECK(line_of("  ").starts_with("error: blank line"));
  CHECK(line_of(too_deep) == "error: not valid JSON: nested deeper than 512 levels (at offset 512)");
  CHECK(line_of(deepest) == "{\"value0\":" + deepest.substr(1, deepest.size() - 2) + "}\n");
  // Many more elements than the task takes: refused, once the whole line was read.
  std::string many = "[1";
  for (int i = 0; i < 100000; ++i) many += ",1";
  CHECK(line_of(many + "]", 2) == "error: task 'task' takes 2 arguments, the line has 100001");
  CHECK(line_of(many + ",x]", 2).starts_with("error: not valid JSON: Invalid value."));
}

TEST_CASE("CliJson.an_argument_line_is_appended_or_leaves_the_output_as_it_was") {
  std::string out = "{\"value0\":1}\n", error;
  std::string good = "[2]", bad = "[3, x]", wrong = "[4, 5]";
  CHECK(json::append_line_arguments(out, good, 1, "task", error));
  CHECK_FALSE(json::append_line_arguments(out, bad, 1, "task", error));
  CHECK_FALSE(json::append_line_arguments(out, wrong, 1, "task", error));
  CHECK(out == "{\"value0\":1}\n{\"value0\":2}\n");
}

TEST_CASE("CliJson.a_result_line_is_shown_as_its_value") {
  json::Outcome outcome{};
  CHECK(result_of("{\"value0\":[1,2.5,\"x\"]}", &outcome) == "[1,2.5,\"x\"]");
  CHECK(outcome == json::Outcome::value);
  CHECK(result_of("{}", &outcome) == "null");
  CHECK(outcome == json::Outcome::none);
  CHECK(result_of("{\"value0\":null}", &outcome) == "null");
  CHECK(outcome == json::Outcome::value);
  CHECK(result_of("{\"error\":{\"type\":\"t\",\"message\":\"two\\nlines\",\"stage\":\"task\"}}", &outcome) ==
        "{\"error\":{\"type\":\"t\",\"message\":\"two\\nlines\",\"stage\":\"task\"}}");
  CHECK(outcome == json::Outcome::error);
  // The first "value0" of the object itself, not one inside it.
  CHECK(result_of("{\"x\":{\"value0\":1},\"value0\":2,\"value0\":3}") == "2");
  // Printable: the controls a terminal acts on are escaped, a byte that is no UTF-8 is \udcXX.
  CHECK(result_of("{\"value0\":\"\\u009b2J \xc2\x9b \xe2\x80\xae \x9b \xc3\xa9 \\u007f\"}") ==
        "\"\\u009b2J \\u009b \\u202e \\udc9b \xc3\xa9 \\u007f\"");
  CHECK(result_of("[1]") == "error: another value");
  CHECK(result_of("{\"value0\":1") == "error: Missing a comma or '}' after an object member. (at offset 11)");
  CHECK(result_of("{\"value0\":" + deepest + "}").starts_with("error: nested deeper than 512 levels"));
  std::string out = "kept", error, bad = "{";
  CHECK_FALSE(json::append_result(out, bad, outcome, error));
  CHECK(out == "kept");
}

TEST_CASE("CliJson.a_value_is_written_again_compactly") {
  std::string out = "{\"value0\":", error;
  CHECK(json::append_value(out, " [ 1 , \"a\\u0000\" , {\"k\" : NaN} ] ", error));
  CHECK(out == "{\"value0\":[1,\"a\\u0000\",{\"k\":NaN}]");
  CHECK_FALSE(json::append_value(out, "[1,", error));
  CHECK(error == "Invalid value. (at offset 3)");
  CHECK(out == "{\"value0\":[1,\"a\\u0000\",{\"k\":NaN}]");
}

TEST_CASE("CliJson.printable_rewrites_in_place_only_what_needs_it") {
  std::string text = "keep \x9b {\"a\":\"\xc3\xa9\"}";
  json::make_printable(text, 7);  // from after the raw 0x9B: it stays
  CHECK(text == "keep \x9b {\"a\":\"\xc3\xa9\"}");
  json::make_printable(text, 0);
  CHECK(text == "keep \\udc9b {\"a\":\"\xc3\xa9\"}");
}

namespace {

/// The bytes of JSON string `quoted` (its quotes included) as Python's json.loads then
/// .encode("utf-8", "surrogateescape") gives them: \udc80 to \udcff are the bytes 0x80 to 0xFF.
/// Enough of JSON's escapes for what printable() writes; "?" for one it does not.
std::string surrogateescape_decoded(std::string_view quoted) {
  REQUIRE(quoted.size() >= 2);
  REQUIRE(quoted.front() == '"');
  REQUIRE(quoted.back() == '"');
  std::string out;
  for (std::size_t i = 1; i + 1 < quoted.size(); ++i) {
    if (quoted[i] != '\\') {
      out += quoted[i];
      continue;
    }
    const char e = quoted[++i];
    if (e == 'u') {
      const unsigned code = static_cast<unsigned>(std::stoul(std::string(quoted.substr(i + 1, 4)), nullptr, 16));
      i += 4;
      if (code >= 0xDC80 && code <= 0xDCFF) {
        out += static_cast<char>(code - 0xDC00);
      } else if (code < 0x80) {
        out += static_cast<char>(code);
      } else if (code < 0x800) {
        out += static_cast<char>(0xC0 | code >> 6);
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else {
        out += static_cast<char>(0xE0 | code >> 12);
        out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      }
    } else {
      static constexpr std::string_view from = "bfnrt\"\\/", to = "\b\f\n\r\t\"\\/";
      out += from.find(e) == std::string_view::npos ? '?' : to[from.find(e)];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("CliJson.bytes_that_are_no_utf8_are_written_so_that_they_can_be_read_back") {
  // A path (a plugin directory's, a file's) or a task's string may hold any bytes but '\0'. They
  // were written U+FFFD, and what they were was lost: written \udcXX now, Python's
  // surrogateescape (os.fsdecode), which json.loads and JSON.parse take.
  std::string every;
  for (int b = 1; b < 256; ++b) every += static_cast<char>(b);
  const std::string samples[] = {
      every,
      "dir\xff\xfe/lib\x80.so",
      "\xc0\xaf \xed\xa0\x80 \xe2\x82",  // overlong, a surrogate's bytes, a character cut short
      "\xf4\x90\x80\x80 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",  // past U+10FFFF; then UTF-8
      "\\udcff \\ufffd",  // text that reads like an escape: its backslash is escaped
  };
  for (const std::string& bytes : samples) {
    CAPTURE(bytes);
    const std::string quoted = json::quote(bytes);
    CAPTURE(quoted);
    CHECK(surrogateescape_decoded(quoted) == bytes);
    for (char c : quoted) CHECK(static_cast<unsigned char>(c) >= 0x20);  // no control; UTF-8 as it was
  }
  CHECK(json::quote("a\xff\xc3\xa9") == "\"a\\udcff\xc3\xa9\"");
  CHECK(json::printable("\x80\xff") == "\\udc80\\udcff");
  // The error line ferry map writes for a line it cannot read quotes the task's name, which the
  // plugin's file gives: printable too (it was written out as RapidJSON wrote it, raw bytes and all).
  CHECK(json::error_line("BadInput", "task 'x\xff\xc2\x9b' takes 2 arguments", "read_input") ==
        "{\"error\":{\"type\":\"BadInput\",\"message\":\"task 'x\\udcff\\u009b' takes 2 arguments\","
        "\"stage\":\"read_input\"}}");
}
