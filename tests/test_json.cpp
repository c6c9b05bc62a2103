// SPDX-License-Identifier: BSD-3-Clause
// The JSON entry point (cereal's JSON archive), which the ferry command uses: any task, user types
// included, one JSON object per call and per line.
#include <doctest/doctest.h>

#include "math.hpp"
#include "support/fixture.hpp"

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
  }
  SUBCASE("unknown task") {
    CHECK_THROWS_AS(ex.submit_json("no_such_task", "{}").get(), ferry::PluginError);
  }
  CHECK(ex.submit_json("square", R"({"value0": 3})").get() == "{\"value0\":9}\n");
}
