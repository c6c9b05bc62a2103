// SPDX-License-Identifier: BSD-3-Clause
// The JSON entry point (cereal's JSON archive), which the ferry command uses: any task, user types
// included, one JSON object per call and per line.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "math.hpp"
#include "support/fixture.hpp"
#include "support/sanitizer.hpp"

TEST_CASE("Json.submit_runs_any_task") {
  ferry::Executor ex(support::options(2));
  CHECK(ex.submit_json("square", R"({"value0": 9})").get() == "{\"value0\":81}\n");
  CHECK(ex.submit_json("add", R"({"value0": 40, "value1": 2})").get() == "{\"value0\":42}\n");
  CHECK(ex.submit_json("greet", R"({"value0": "json"})").get() == "{\"value0\":\"hello, json\"}\n");
  CHECK(ex.submit_json("sum", R"({"value0": [1.5, 2.5]})").get() == "{\"value0\":4.0}\n");
  // A user type: its serialize() names the fields.
  CHECK(ex.submit_json("scale", R"({"value0": {"value0": 1, "value1": 2}, "value1": 3})").get() ==
        "{\"value0\":{\"value0\":3.0,\"value1\":6.0}}\n");
  CHECK(ex.submit_json("noop", "").get() == "{}\n");
  // A BytesView is a JSON string.
  CHECK(ex.submit_json("byte_sum", R"({"value0": "abc"})").get() == "{\"value0\":294}\n");
  CHECK(ex.submit_json(ferry::TaskRef{.library = FERRY_TEST_MATH_PLUGIN, .name = "add"},
                       R"({"value0": 1, "value1": 1})")
            .get() == "{\"value0\":2}\n");
}

TEST_CASE("Json.a_chunk_of_lines") {
  ferry::Executor ex(support::options(1));
  std::string lines = "{\"value0\": 1}\n{\"value0\": 2}\n{\"value0\": 3}\n";
  CHECK(ex.submit_json("square", lines, 3).get() == "{\"value0\":1}\n{\"value0\":4}\n{\"value0\":9}\n");
}

TEST_CASE("Json.submit_refuses_a_text_whose_lines_are_not_its_items") {
  // `items` lines were read and the rest dropped unseen: two lines with the default items = 1
  // gave the first one's result alone; too few failed in the worker with "The document is
  // empty". Now refused at once, before anything is sent, naming both numbers.
  ferry::Executor ex(support::options(1));
  auto refusal = [&](std::string text, std::uint32_t items, bool by_ref = false) -> std::string {
    try {
      if (by_ref) {
        ex.submit_json(ferry::TaskRef{.library = FERRY_TEST_MATH_PLUGIN, .name = "add"}, std::move(text), items);
      } else {
        ex.submit_json("add", std::move(text), items, /*keep_going=*/true);
      }
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  };
  const std::string a = R"({"value0": 40, "value1": 2})", b = R"({"value0": 1, "value1": 1})";
  std::string said = refusal(a + "\n" + b + "\n", 1);
  CHECK_MESSAGE(said.find("holds 2 lines") != std::string::npos, said);
  CHECK_MESSAGE(said.find("items is 1") != std::string::npos, said);
  said = refusal(a + "\n" + b, 1, /*by_ref=*/true);
  CHECK_MESSAGE(said.find("holds 2 lines") != std::string::npos, said);
  said = refusal(a + "\n\n", 1);  // a blank line is a line (of a task without parameters)
  CHECK_MESSAGE(said.find("holds 2 lines") != std::string::npos, said);
  said = refusal(a + "\n", 3);
  CHECK_MESSAGE(said.find("holds 1 line,") != std::string::npos, said);
  CHECK_MESSAGE(said.find("items is 3") != std::string::npos, said);
  said = refusal(a, 0);
  CHECK_MESSAGE(said.find("items is 0") != std::string::npos, said);
  CHECK(ex.stats().submitted == 0);

  // One final newline or none; the text of a task without parameters is its blank line.
  CHECK(ex.submit_json("add", a).get() == "{\"value0\":42}\n");
  CHECK(ex.submit_json("add", a + "\n").get() == "{\"value0\":42}\n");
  CHECK(ex.submit_json("add", a + "\n" + b, 2).get() == "{\"value0\":42}\n{\"value0\":2}\n");
  CHECK(ex.submit_json("add", a + "\n" + b + "\n", 2).get() == "{\"value0\":42}\n{\"value0\":2}\n");
  CHECK(ex.submit_json("noop", "\n").get() == "{}\n");
  CHECK(ex.submit_json("noop", "\n\n", 2).get() == "{}\n{}\n");
}

TEST_CASE("Json.keep_going_puts_each_error_on_its_line") {
  ferry::Executor ex(support::options(1));
  std::string lines = "{\"value0\": 4}\n{\"value0\": -1}\n{\"value0\": \"nine\"}\n{\"value0\": 16}\n";
  std::string out = ex.submit_json("checked_isqrt", lines, 4, /*keep_going=*/true).get();
  std::vector<std::string> got;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) got.push_back(l);
  REQUIRE(got.size() == 4);
  CHECK(got[0] == "{\"value0\":2}");
  CHECK(got[1].find("\"error\"") != std::string::npos);
  CHECK(got[1].find("std::domain_error") != std::string::npos);
  CHECK(got[1].find("negative: -1") != std::string::npos);
  CHECK(got[1].find("\"stage\":\"task\"") != std::string::npos);
  CHECK(got[2].find("\"stage\":\"decode_arguments\"") != std::string::npos);
  CHECK(got[3] == "{\"value0\":4}");
}

TEST_CASE("Json.errors_without_keep_going") {
  ferry::Executor ex(support::options(1));
  SUBCASE("the task throws") {
    CHECK_THROWS_WITH_AS(ex.submit_json("checked_isqrt", R"({"value0": -4})").get(),
                         doctest::Contains("negative: -4"), ferry::TaskError);
  }
  SUBCASE("wrong type") {
    CHECK_THROWS_AS(ex.submit_json("square", R"({"value0": "seven"})").get(), ferry::SerializationError);
  }
  SUBCASE("not JSON") {
    CHECK_THROWS_AS(ex.submit_json("square", "{value0: ").get(), ferry::SerializationError);
  }
  SUBCASE("arguments by name, not by position") {
    CHECK(ex.submit_json("add", R"({"value1": 2, "value0": 40})").get() == "{\"value0\":42}\n");
    CHECK_THROWS_WITH_AS(ex.submit_json("square", R"({"value0": 3, "value1": 99})").get(),
                         doctest::Contains("unexpected argument \"value1\""), ferry::SerializationError);
    CHECK_THROWS_WITH_AS(ex.submit_json("add", R"({"value0": 3})").get(),
                         doctest::Contains("takes 2 arguments, 1 given"), ferry::SerializationError);
    // Was "takes 2 arguments, 3 given", and for one taking three, the second value0 unread.
    CHECK_THROWS_WITH_AS(ex.submit_json("add", R"({"value0": 3, "value1": 4, "value0": 5})").get(),
                         doctest::Contains("argument \"value0\" is given twice"), ferry::SerializationError);
  }
  SUBCASE("unknown task") {
    CHECK_THROWS_AS(ex.submit_json("no_such_task", "{}").get(), ferry::PluginError);
  }
  CHECK(ex.submit_json("square", R"({"value0": 3})").get() == "{\"value0\":9}\n");
}

// ---- Hostile JSON (issue 10 item 5, issue 16 item 4) -------------------------------------------

namespace {

unsigned long long ull_twice(unsigned long long x) { return 2 * x; }
long long ll_negate(long long x) { return -x; }
std::uint64_t u64_twice(std::uint64_t x) { return 2 * x; }
unsigned long long widen(std::uint32_t x) { return x; }
std::vector<unsigned long long> ull_list(std::vector<long long> v) {
  return std::vector<unsigned long long>(v.begin(), v.end());
}

/// Runs the JSON entry point of Fn in this process, as the worker does; throws the worker's
/// "type: message" when the call fails.
template <auto Fn>
std::string invoke_here(std::string_view lines, std::uint32_t items = 1) {
  std::stringbuf result, error;
  ferry::detail::InvokeContext ctx{};
  ctx.args = lines.data();
  ctx.args_size = lines.size();
  ctx.items = items;
  ctx.result = &result;
  ctx.error = &error;
  ferry::detail::invoke_json<Fn>(ctx);
  if (ctx.status != ferry::detail::InvokeStatus::ok) {
    std::string e = error.str();
    std::replace(e.begin(), e.end(), '\0', ':');
    throw std::runtime_error(e);
  }
  return result.str();
}

}  // namespace

TEST_CASE("Json.nesting_deeper_than_the_limit_is_a_serialization_error") {
  // RapidJSON's recursive parser overflowed the worker's stack on this (SIGSEGV).
  ferry::Executor ex(support::options(1));
  std::string deep = "{\"value0\": " + std::string(200'000, '[') + "}";
  CHECK_THROWS_WITH_AS(ex.submit_json("square", deep).get(), doctest::Contains("nested deeper than 512 levels"),
                       ferry::SerializationError);
  std::string lines = "{\"value0\": 2}\n" + deep + "\n{\"value0\": 3}\n";
  std::string out = ex.submit_json("square", lines, 3, /*keep_going=*/true).get();
  CHECK(out.rfind("{\"value0\":4}\n{\"error\":", 0) == 0);
  CHECK(out.find("nested deeper than 512 levels") != std::string::npos);
  CHECK(out.find("\"stage\":\"decode_arguments\"") != std::string::npos);
  CHECK(out.substr(out.size() - 13) == "{\"value0\":9}\n");
  // Within the limit, the same shape is an ordinary type error.
  std::string ok_depth = "{\"value0\": " + std::string(511, '[') + std::string(511, ']') + "}";
  CHECK_THROWS_WITH_AS(ex.submit_json("square", ok_depth).get(), doctest::Contains("expected i32"),
                       ferry::SerializationError);
  CHECK(ex.submit_json("square", R"({"value0": 5})").get() == "{\"value0\":25}\n");
}

TEST_CASE("Json.a_large_argument_is_decoded_where_its_line_lies") {
#if FERRY_TEST_SHADOW_MEMORY
  MESSAGE("skipped under a sanitizer (no memory limit there)");
#else
  // The worker parsed a call's line into a document first: 16 bytes a value and its parser's
  // stack as much again, so that a line of small numbers took about nine times its size (an
  // 80 MB line, 727 MiB). Read where it lies, a 32 MB line fits in a worker of 128 MiB with its
  // 8 MB vector; through a document it needed about 300 MB.
  ferry::ExecutorOptions o = support::options(1);
  o.limits.memory = std::size_t{128} << 20;
  ferry::Executor ex(o);
  constexpr std::size_t values = std::size_t{8} << 20;
  std::string line = "{\"value0\": [120";
  line.reserve(values * 4 + 16);
  for (std::size_t i = 1; i < values; ++i) line += ",120";
  line += "]}";
  CHECK(ex.submit_json("byte_count", line).get() == "{\"value0\":" + std::to_string(values) + "}\n");
  // Its errors are a document's: the last value is wrong, and said to be.
  line.replace(line.size() - 5, 3, "1.5");
  const std::string error = "at value0[" + std::to_string(values - 1) + "]: expected char, found the number 1.5 (not an integer)";
  CHECK_THROWS_WITH_AS(ex.submit_json("byte_count", line).get(), doctest::Contains(error.c_str()),
                       ferry::SerializationError);
#endif
}

TEST_CASE("Json.strings_keep_nul_characters") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit_json("greet", R"({"value0": "a\u0000b"})").get() ==
        "{\"value0\":\"hello, a\\u0000b\"}\n");
  // A BytesView is a string too: 1 + 0 + 2.
  CHECK(ex.submit_json("byte_sum", R"({"value0": "\u0001\u0000\u0002"})").get() == "{\"value0\":3}\n");
}

TEST_CASE("Json.type_errors_name_the_argument_its_type_and_what_was_found") {
  ferry::Executor ex(support::options(1));
  SUBCASE("a scalar") {
    CHECK_THROWS_WITH_AS(ex.submit_json("add", R"({"value0": 1, "value1": "two"})").get(),
                         doctest::Contains(R"(argument 2 (i32): expected i32, found the string "two")"),
                         ferry::SerializationError);
  }
  SUBCASE("out of range, not an integer") {
    CHECK_THROWS_WITH_AS(ex.submit_json("square", R"({"value0": 3000000000})").get(),
                         doctest::Contains("argument 1 (i32): expected i32, found the number 3000000000 "
                                           "(out of its range)"),
                         ferry::SerializationError);
    CHECK_THROWS_WITH_AS(ex.submit_json("square", R"({"value0": 2.5})").get(),
                         doctest::Contains("found the number 2.5 (not an integer)"), ferry::SerializationError);
  }
  SUBCASE("inside a container and a struct") {
    CHECK_THROWS_WITH_AS(ex.submit_json("sum", R"({"value0": [1, 2, "x"]})").get(),
                         doctest::Contains(R"(argument 1 (vector<f64>), at value0[2]: expected f64, found the string "x")"),
                         ferry::SerializationError);
    CHECK_THROWS_WITH_AS(ex.submit_json("sum", R"({"value0": {"a": 1}})").get(),
                         doctest::Contains("argument 1 (vector<f64>): expected vector<f64> (a JSON array), "
                                           "found an object of 1 member"),
                         ferry::SerializationError);
    CHECK_THROWS_WITH_AS(
        ex.submit_json("scale", R"({"value0": {"value0": 1, "value1": null}, "value1": 2})").get(),
        doctest::Contains("argument 1 (math::Vec2), at value0.value1: expected f64, found null"),
        ferry::SerializationError);
    CHECK_THROWS_WITH_AS(ex.submit_json("scale", R"({"value0": [1], "value1": 2})").get(),
                         doctest::Contains("argument 1 (math::Vec2), at value0[1]: expected f64, found "
                                           "nothing (an array of 1 element)"),
                         ferry::SerializationError);
  }
  SUBCASE("the keep-going error line says the same") {
    std::string out = ex.submit_json("add", "{\"value0\": true, \"value1\": 1}\n", 1, true).get();
    CHECK(out.find(R"(argument 1 (i32): expected i32, found true)") != std::string::npos);
    CHECK(out.find("rapidjson") == std::string::npos);
  }
}

TEST_CASE("Json.integers_of_every_spelling_are_numbers") {
  // unsigned long long and std::uint64_t (unsigned long) share the signature u64: one rule.
  CHECK(invoke_here<&widen>(R"({"value0": 7})") == "{\"value0\":7}\n");  // was "7", a string
  CHECK(invoke_here<&ull_twice>(R"({"value0": 9223372036854775807})") == "{\"value0\":18446744073709551614}\n");
  CHECK(invoke_here<&u64_twice>(R"({"value0": 9223372036854775807})") == "{\"value0\":18446744073709551614}\n");
  CHECK(invoke_here<&ll_negate>(R"({"value0": 9223372036854775807})") == "{\"value0\":-9223372036854775807}\n");
  CHECK(invoke_here<&ull_list>(R"({"value0": [1, 2]})") == "{\"value0\":[1,2]}\n");
  CHECK_THROWS_WITH(invoke_here<&ull_twice>(R"({"value0": -1})"),
                    doctest::Contains("argument 1 (u64): expected u64, found the number -1 (out of its range)"));
  CHECK_THROWS_WITH(invoke_here<&ll_negate>(R"({"value0": "5"})"),
                    doctest::Contains(R"(argument 1 (i64): expected i64, found the string "5")"));
}
