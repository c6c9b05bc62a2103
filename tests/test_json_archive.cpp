// SPDX-License-Identifier: BSD-3-Clause
// ferry's JSON archive pair (detail/json_archive.hpp): cereal's JSON shapes for std and user types,
// whole strings, 64-bit integers as numbers, the nesting limit, typed errors; and the replay of
// the JSON fuzz corpus.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <algorithm>
#include <bitset>
#include <cmath>
#include <chrono>
#include <complex>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <cereal/types/bitset.hpp>
#include <ferry/task.hpp>

#include "fuzz/json_fuzz.hpp"
#include "support/fixture.hpp"
#include "support/sanitizer.hpp"

namespace {

namespace fd = ferry::detail;

// User types of each serialization style cereal supports.
struct Point {  // serialize, unnamed fields
  double x = 0, y = 0;
  template <class A>
  void serialize(A& ar) {
    ar(x, y);
  }
  bool operator==(const Point&) const = default;
};
struct Named {  // serialize, named fields, nested types
  std::string name;
  std::vector<Point> points;
  std::optional<int> weight;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(name), CEREAL_NVP(points), CEREAL_NVP(weight));
  }
  bool operator==(const Named&) const = default;
};
struct Split {  // save/load
  int a = 0;
  template <class A>
  void save(A& ar) const {
    ar(cereal::make_nvp("a", a), cereal::make_nvp("twice", 2 * a));
  }
  template <class A>
  void load(A& ar) {
    int twice = 0;
    ar(cereal::make_nvp("twice", twice), cereal::make_nvp("a", a));  // out of order on purpose
    if (twice != 2 * a) throw std::runtime_error("twice");
  }
  bool operator==(const Split&) const = default;
};
struct Celsius {  // save_minimal/load_minimal: a single value, no node
  double degrees = 0;
  template <class A>
  double save_minimal(const A&) const {
    return degrees;
  }
  template <class A>
  void load_minimal(const A&, const double& d) {
    degrees = d;
  }
  bool operator==(const Celsius&) const = default;
};
struct Derived : Point {  // a base class is a node of its own, as in cereal
  int z = 0;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::base_class<Point>(this), z);
  }
  bool operator==(const Derived&) const = default;
};
struct Versioned {
  int v = 0;
  template <class A>
  void serialize(A& ar, std::uint32_t version) {
    ar(v);
    if (version != 3) throw std::runtime_error("version");
  }
  bool operator==(const Versioned&) const = default;
};
enum class Colour : std::uint8_t { red = 1, blue = 200 };
struct Chain {  // as deep as its length
  std::unique_ptr<Chain> next;
  template <class A>
  void serialize(A& ar) {
    ar(next);
  }
};

}  // namespace

CEREAL_CLASS_VERSION(Versioned, 3);

namespace {

/// `value` through cereal's own JSON archive, made compact.
template <class T>
std::string cereal_json(const T& value) {
  std::ostringstream s;
  {
    cereal::JSONOutputArchive ar(s, cereal::JSONOutputArchive::Options::NoIndent());
    ar(value);
  }
  fd::json::Document doc;
  doc.Parse(s.str().c_str());
  fd::json::StringBuffer out;
  fd::json::Writer<fd::json::StringBuffer> w(out);
  doc.Accept(w);
  return std::string(out.GetString(), out.GetSize());
}

/// `value` through ferry's JSON archive.
template <class T>
std::string ferry_json(const T& value) {
  fd::JsonStringBuffer out;
  fd::JsonOutputArchive ar(out);
  ar(value);
  ar.finish();
  return std::string(out.GetString(), out.GetSize());
}

/// The value that `text` holds as "value0", through ferry's JSON archive over the text (the
/// worker's), which must fail as the archive over a document of it does, with the same message.
template <class T>
T from_json(std::string_view text) {
  std::string fixed, error;
  std::string_view checked = text;
  if (!fd::check_json_text(checked, fixed, error)) throw std::runtime_error(error);
  std::string document_error;
  try {
    fd::JsonDocument doc;
    REQUIRE(fd::parse_json(text, doc, error));
    fd::JsonInputArchive ar(doc);
    T value{};
    ar(value);
  } catch (const fd::JsonError& e) {
    document_error = e.what();
  }
  fd::JsonTextInputArchive ar(checked);
  T value{};
  try {
    ar(value);
  } catch (const fd::JsonError& e) {
    CHECK(e.what() == document_error);
    throw;
  }
  CHECK(document_error.empty());
  return value;
}

/// Both archives write the same JSON, and ferry's reads back both its own and cereal's.
template <class T>
void same_as_cereal(const T& value) {
  std::string ours = ferry_json(value);
  CAPTURE(ours);
  CHECK(ours == cereal_json(value));
  CHECK(from_json<T>(ours) == value);
  CHECK(from_json<T>(cereal_json(value)) == value);
}

}  // namespace

TEST_CASE("JsonArchive.writes_and_reads_cereal_shapes") {
  same_as_cereal(42);
  same_as_cereal(-7);
  same_as_cereal(true);
  same_as_cereal('A');
  same_as_cereal(std::uint8_t{250});
  same_as_cereal(std::int16_t{-300});
  same_as_cereal(4000000000u);
  same_as_cereal(std::int64_t{-9223372036854775807 - 1});
  same_as_cereal(std::uint64_t{18446744073709551615u});
  same_as_cereal(2.5);
  same_as_cereal(0.1f);
  same_as_cereal(1e300);
  same_as_cereal(std::string("text with \"quotes\" and \\ and é"));
  same_as_cereal(std::vector<int>{1, 2, 3});
  same_as_cereal(std::vector<int>{});
  same_as_cereal(std::vector<std::string>{"a", "", "b"});
  same_as_cereal(std::vector<bool>{true, false});
  same_as_cereal(std::vector<char>{'x', 0, 'y'});
  same_as_cereal(std::vector<std::vector<double>>{{1.5}, {}, {2, 3}});
  same_as_cereal(std::deque<int>{4, 5});
  same_as_cereal(std::list<std::string>{"l"});
  same_as_cereal(std::set<int>{3, 1});
  same_as_cereal(std::map<std::string, int>{{"one", 1}, {"two", 2}});
  same_as_cereal(std::map<int, std::vector<double>>{{1, {0.5}}});
  same_as_cereal(std::unordered_map<std::string, bool>{{"k", true}});
  same_as_cereal(std::pair<int, std::string>{1, "p"});
  same_as_cereal(std::tuple<int, double, std::string>{1, 2.0, "t"});
  same_as_cereal(std::tuple<>{});
  same_as_cereal(std::array<int, 3>{7, 8, 9});
  same_as_cereal(std::optional<int>{});
  same_as_cereal(std::optional<int>{5});
  same_as_cereal(std::variant<int, std::string>{std::string("v")});
  same_as_cereal(std::complex<double>{1, -1});
  same_as_cereal(std::chrono::milliseconds{1500});
  same_as_cereal(std::bitset<10>{0x2A5});
  same_as_cereal(Colour::blue);
  same_as_cereal(Point{1, 2});
  same_as_cereal(Named{"n", {{1, 2}, {3, 4}}, 7});
  same_as_cereal(Named{});
  same_as_cereal(Split{21});
  same_as_cereal(Celsius{36.6});
  same_as_cereal(std::vector<Celsius>{{1}, {2}});
  Derived d;
  d.x = 1;
  d.y = 2;
  d.z = 3;
  same_as_cereal(d);
  same_as_cereal(Versioned{4});
  same_as_cereal(ferry::BytesView(std::string_view("bytes")));
  same_as_cereal(0.1L);

  // Smart pointers: cereal's ids, a shared object written once.
  auto shared = std::make_shared<int>(9);
  std::pair<std::shared_ptr<int>, std::shared_ptr<int>> twice{shared, shared};
  CHECK(ferry_json(twice) == cereal_json(twice));
  auto back = from_json<decltype(twice)>(ferry_json(twice));
  REQUIRE(back.first);
  CHECK(*back.first == 9);
  CHECK(back.first == back.second);
  auto unique = std::make_unique<std::string>("u");
  CHECK(ferry_json(unique) == cereal_json(unique));
  CHECK(*from_json<std::unique_ptr<std::string>>(ferry_json(unique)) == "u");
  CHECK(ferry_json(std::unique_ptr<int>()) == cereal_json(std::unique_ptr<int>()));
}

TEST_CASE("JsonArchive.differs_from_cereal_only_where_cereal_is_wrong") {
  SUBCASE("64-bit integers of every spelling are numbers") {
    CHECK(cereal_json(123LL) == R"({"value0":"123"})");  // why ferry has its own archive
    CHECK(ferry_json(123LL) == R"({"value0":123})");
    CHECK(ferry_json(18446744073709551615ULL) == R"({"value0":18446744073709551615})");
    CHECK(ferry_json(std::vector<long long>{-1, 2}) == R"({"value0":[-1,2]})");
    CHECK(from_json<unsigned long long>(R"({"value0": 18446744073709551615})") == 18446744073709551615ULL);
    CHECK(from_json<long long>(R"({"value0": -9223372036854775808})") == -9223372036854775807LL - 1);
  }
  SUBCASE("strings keep \\u0000") {
    std::string nul("a\0b", 3);
    CHECK(ferry_json(nul) == R"({"value0":"a\u0000b"})");
    CHECK(from_json<std::string>(R"({"value0": "a\u0000b"})") == nul);
    CHECK(from_json<std::map<std::string, std::string>>(R"({"value0": [{"key": "\u0000", "value": "x\u0000"}]})") ==
          std::map<std::string, std::string>{{std::string(1, '\0'), std::string("x\0", 2)}});
    CHECK(from_json<ferry::BytesView>(R"({"value0": "\u0000\u0001"})").size() == 2);
  }
  SUBCASE("nothing saved is an empty object") {
    fd::JsonStringBuffer out;
    fd::JsonOutputArchive ar(out);
    ar.finish();
    CHECK(std::string(out.GetString()) == "{}");
  }
}

TEST_CASE("JsonArchive.reads_members_by_name_in_any_order_and_ignores_extra_ones") {
  CHECK(from_json<Named>(R"({"value0": {"weight": {"nullopt": false, "data": 1}, "extra": [], "points": [], "name": "x"}})") ==
        Named{"x", {}, 1});
  // Unnamed values are read in order, from an object or an array.
  CHECK(from_json<Point>(R"({"value0": {"a": 1, "b": 2}})") == Point{1, 2});
  CHECK(from_json<Point>(R"({"value0": [1, 2]})") == Point{1, 2});
}

TEST_CASE("JsonArchive.unnamed_fields_are_read_by_the_names_they_are_written_with") {
  // ar(x, y) writes {"value0": x, "value1": y}; given back in another order, they were read in
  // order: value0 = 2, value1 = 1, a wrong value and no error.
  CHECK(from_json<Point>(R"({"value0": {"value1": 2, "value0": 1}})") == Point{1, 2});
  CHECK(from_json<Point>(R"({"value0": {"value1": 2, "z": 9, "value0": 1}})") == Point{1, 2});
  CHECK(from_json<std::vector<Point>>(R"({"value0": [{"value1": 4, "value0": 3}]})") == std::vector<Point>{{3, 4}});
  // An object that names one of them must name each: "a" is not value0.
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {"a": 1, "value1": 2}})"),
                       R"(value0.value0: expected f64, found nothing (no member "value0" in an object of 2 members))",
                       fd::JsonError);
  // Without such names, in order, as cereal reads them.
  CHECK(from_json<Point>(R"({"value0": {"y": 1, "x": 2}})") == Point{1, 2});
}

TEST_CASE("JsonArchive.an_array_with_more_elements_than_its_type_reads_is_an_error") {
  // [1, 2, 3, 4] was a std::array<int, 3> of the first three, the 4 dropped with no error.
  CHECK_THROWS_WITH_AS((from_json<std::array<int, 3>>(R"({"value0": [1, 2, 3, 4]})")),
                       "value0: expected array<i32,3>, found an array of 4 elements (it holds 3 elements)", fd::JsonError);
  CHECK_THROWS_WITH_AS(from_json<std::vector<Point>>(R"({"value0": [[1, 2, 3]]})"),
                       "value0[0]: expected {anonymous}::Point, found an array of 3 elements (it holds 2 elements)", fd::JsonError);
  CHECK((from_json<std::array<int, 3>>(R"({"value0": [1, 2, 3]})")) == std::array<int, 3>{1, 2, 3});
}

TEST_CASE("JsonArchive.a_map_given_a_key_twice_is_an_error") {
  // cereal's load kept the first value and dropped the second, with no error: {1: 2}.
  CHECK_THROWS_WITH_AS((from_json<std::map<int, int>>(R"({"value0": [{"key": 1, "value": 2}, {"key": 1, "value": 3}]})")),
                       "value0: expected map<i32,i32> (each key once), found the key of [1] given before it",
                       fd::JsonError);
  CHECK_THROWS_WITH_AS((from_json<std::vector<std::unordered_map<std::string, int>>>(
                           R"({"value0": [[], [{"key": "k", "value": 1}, {"key": "j", "value": 2}, {"key": "k", "value": 3}]]})")),
                       "value0[1]: expected unordered_map<string,i32> (each key once), found the key of [2] given before it",
                       fd::JsonError);
  CHECK((from_json<std::map<int, int>>(R"({"value0": [{"key": 1, "value": 2}, {"key": 3, "value": 4}]})")) ==
        std::map<int, int>{{1, 2}, {3, 4}});
  CHECK((from_json<std::multimap<int, int>>(R"({"value0": [{"key": 1, "value": 2}, {"key": 1, "value": 3}]})")).size() == 2);
}

TEST_CASE("JsonArchive.an_object_that_names_a_member_twice_is_an_error") {
  // Which of the two counted depended on where it was: {"value1": 4, "value0": 3, "value1": 40}
  // was read as {3, 40} (the one at its place), {"value0": 3, "value1": 4, "value0": 30} as
  // {3, 4} (the first), and Python's json keeps the last.
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {"value1": 4, "value0": 3, "value1": 40}})"),
                       R"(value0: expected {anonymous}::Point (each member named once), found an object that names "value1" twice)",
                       fd::JsonError);
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {"value0": 3, "value1": 4, "value0": 30}})"),
                       R"(value0: expected {anonymous}::Point (each member named once), found an object that names "value0" twice)",
                       fd::JsonError);
  // Read in order, the second was ignored as an extra member.
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {"x": 3, "y": 4, "x": 5}})"),
                       R"(value0: expected {anonymous}::Point (each member named once), found an object that names "x" twice)",
                       fd::JsonError);
  // An escape spells the same name; past eight members the names are sorted to be compared;
  // names are cut as strings are in messages. (The top object's names are the arguments', which
  // read_json_arguments checks: Json.errors_without_keep_going.)
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {"\u0078": 3, "y": 4, "x": 5}})"),
                       R"(value0: expected {anonymous}::Point (each member named once), found an object that names "x" twice)",
                       fd::JsonError);
  std::string many = R"({"value0": {)";
  for (int i = 0; i < 20; ++i) many += "\"m" + std::to_string(i) + "\": 1, ";
  CHECK_THROWS_WITH_AS(from_json<Point>(many + R"("m7": 2}})"),
                       R"(value0: expected {anonymous}::Point (each member named once), found an object that names "m7" twice)",
                       fd::JsonError);
  CHECK(from_json<Point>(many + R"("m20": 2}})") == Point{1, 1});
  // Read to its end by its names in order, an object costs no pass over its names: a repeat
  // could only be read twice by name, and a second read of one name is a search.
  CHECK(from_json<Named>(R"({"value0": {"name": "x", "points": [], "weight": {"nullopt": true}}})") == Named{"x", {}, {}});
  CHECK_THROWS_WITH_AS(from_json<Named>(R"({"value0": {"name": "x", "points": [], "weight": {"nullopt": true}, "name": "y"}})"),
                       R"(value0: expected {anonymous}::Named (each member named once), found an object that names "name" twice)",
                       fd::JsonError);
  const std::string long_name(100, 'n');
  const std::string cut = R"(value0: expected {anonymous}::Point (each member named once), found an object that names ")" +
                          std::string(40, 'n') + R"("... twice)";
  CHECK_THROWS_WITH_AS(from_json<Point>(R"({"value0": {")" + long_name + R"(": 1, ")" + long_name + R"(": 2}})"),
                       cut.c_str(), fd::JsonError);
  // The same name in two objects is no repeat.
  CHECK(from_json<std::vector<Point>>(R"({"value0": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]})") ==
        std::vector<Point>{{1, 2}, {3, 4}});
}

TEST_CASE("JsonArchive.a_number_that_rounds_to_a_floats_largest_value_is_that_value") {
  // The shortest text of FLT_MAX is a little past it as a double: it was "out of its range".
  CHECK(from_json<float>(R"({"value0": 3.4028235e38})") == std::numeric_limits<float>::max());
  CHECK(from_json<float>(R"({"value0": -3.4028235e38})") == -std::numeric_limits<float>::max());
  CHECK_THROWS_WITH_AS(from_json<float>(R"({"value0": 3.4028236e38})"),
                       "value0: expected f32, found the number 3.4028236e38 (out of its range)", fd::JsonError);
}

TEST_CASE("JsonArchive.a_surrogate_escape_of_a_byte_is_that_byte") {
  // The ferry command writes a byte that is not UTF-8 as \udcXX (Python's surrogateescape); read
  // back, it was the lone surrogate's three bytes (\udcff: ED B3 BF), so a line of `ferry map`'s
  // output given to it again handed the task other bytes than those it printed.
  auto both = [](std::string_view text) {
    fd::JsonDocument doc;
    std::string error;
    REQUIRE(fd::parse_json(text, doc, error));
    fd::JsonInputArchive from_document(doc);
    std::vector<std::string> by_document;
    from_document(by_document);
    const auto by_text = from_json<std::vector<std::string>>(text);
    CHECK(by_text == by_document);
    return by_text;
  };
  CHECK(both(R"({"value0": ["a\udc80\udcFFb", "\udcff"]})") == std::vector<std::string>{"a\x80\xff" "b", "\xff"});
  // Only \udc80 to \udcff are bytes: other lone low surrogates, surrogate pairs, the text's own
  // bytes (however ill-formed) and an escaped backslash before "udcff" stay as they were.
  CHECK(both(R"({"value0": ["\udc7f\udd00"]})").at(0) == "\xed\xb1\xbf\xed\xb4\x80");
  CHECK(both(R"({"value0": ["\ud83d\ude00"]})").at(0) == "\xf0\x9f\x98\x80");
  CHECK(both("{\"value0\": [\"\xed\xb3\xbf\xff\"]}").at(0) == "\xed\xb3\xbf\xff");
  CHECK(both(R"({"value0": ["\\udcff"]})").at(0) == "\\udcff");
  // A member's name is read the same way: "\udcff" finds the member named by that byte.
  fd::JsonDocument doc;
  std::string error;
  REQUIRE(fd::parse_json(R"({"k\udcff": 1})", doc, error));
  CHECK(doc.HasMember("k\xff"));
}

TEST_CASE("JsonArchive.errors_say_where_what_was_expected_and_what_was_found") {
  auto error_of = [](auto type_tag, std::string_view text) {
    try {
      from_json<typename decltype(type_tag)::type>(text);
    } catch (const fd::JsonError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using std::type_identity;
  CHECK(error_of(type_identity<int>{}, R"({"value0": "7"})") == R"(value0: expected i32, found the string "7")");
  CHECK(error_of(type_identity<std::uint8_t>{}, R"({"value0": 256})") ==
        "value0: expected u8, found the number 256 (out of its range)");
  CHECK(error_of(type_identity<unsigned>{}, R"({"value0": -1})") ==
        "value0: expected u32, found the number -1 (out of its range)");
  // Whole numbers past 64 bits are read as doubles: they were "not an integer".
  CHECK(error_of(type_identity<std::uint64_t>{}, R"({"value0": 18446744073709551616})") ==
        "value0: expected u64, found the number 18446744073709553000.0 (out of its range)");
  CHECK(error_of(type_identity<std::int64_t>{}, R"({"value0": -9223372036854775809})") ==
        "value0: expected i64, found the number -9223372036854776000.0 (out of its range)");
  CHECK(error_of(type_identity<std::int64_t>{}, R"({"value0": 2.5})") ==
        "value0: expected i64, found the number 2.5 (not an integer)");
  // A whole number written as a double that an integer of 64 bits could hold is no more an
  // integer than 1e2 is: it is not "out of its range" (1e19 and 1.8e19 fit a u64; it said so).
  CHECK(error_of(type_identity<std::uint64_t>{}, R"({"value0": 1e19})") ==
        "value0: expected u64, found the number 10000000000000000000.0 (not an integer)");
  CHECK(error_of(type_identity<std::uint64_t>{}, R"({"value0": 18000000000000000000.0})") ==
        "value0: expected u64, found the number 18000000000000000000.0 (not an integer)");
  CHECK(error_of(type_identity<std::int64_t>{}, R"({"value0": 1e2})") ==
        "value0: expected i64, found the number 100.0 (not an integer)");
  CHECK(error_of(type_identity<float>{}, R"({"value0": 1e300})") ==
        "value0: expected f32, found the number 1e300 (out of its range)");
  CHECK(error_of(type_identity<bool>{}, R"({"value0": 1})") == "value0: expected bool, found the number 1");
  CHECK(error_of(type_identity<std::string>{}, R"({"value0": null})") == "value0: expected string, found null");
  CHECK(error_of(type_identity<std::vector<int>>{}, R"({"value0": [1, [2]]})") ==
        "value0[1]: expected i32, found an array of 1 element");
  CHECK(error_of(type_identity<std::vector<int>>{}, R"({"value0": 3})") ==
        "value0: expected vector<i32>, found the number 3");
  CHECK(error_of(type_identity<Named>{}, R"({"value0": {"name": "n", "points": [{"x": 1}]}})") ==
        "value0.points[0]: expected f64 as its member 2, found nothing (an object of 1 member)");
  CHECK(error_of(type_identity<Named>{}, R"({"value0": {"points": []}})") ==
        R"(value0.name: expected string, found nothing (no member "name" in an object of 1 member))");
  CHECK(error_of(type_identity<std::map<std::string, int>>{}, R"({"value0": [{"key": "k", "value": "v"}]})") ==
        R"(value0[0].value: expected i32, found the string "v")");
  CHECK(error_of(type_identity<int>{}, R"({"value0": ")" + std::string(100, 'x') + "\"}") ==
        R"(value0: expected i32, found the string ")" + std::string(40, 'x') + "\"...");
  CHECK(error_of(type_identity<int>{}, "[]") == "[0]: expected i32, found nothing (an empty array)");
  CHECK_THROWS_WITH_AS(fd::JsonInputArchive(fd::JsonValue(3)), "expected an object or an array at the top, found the number 3",
                       fd::JsonError);
  CHECK_THROWS_WITH_AS(fd::JsonTextInputArchive(" 3"), "expected an object or an array at the top, found the number 3",
                       fd::JsonError);
}

TEST_CASE("JsonArchive.nesting_is_bounded_before_any_recursion") {
  using Problem = fd::JsonTextScan::Problem;
  std::string error;
  fd::json::Document doc;
  // Within the limit, and brackets inside strings do not count.
  std::string ok = std::string(fd::max_json_depth, '[') + "\"[[[{{{\\\"[[\"" + std::string(fd::max_json_depth, ']');
  CHECK(fd::scan_json_text(ok).problem == Problem::none);
  CHECK(fd::parse_json(ok, doc, error));
  // One more level: refused where it starts, with no recursion at all (200 KB would overflow).
  std::string deep = std::string(fd::max_json_depth + 1, '[') + std::string(fd::max_json_depth + 1, ']');
  CHECK(fd::scan_json_text(deep).problem == Problem::too_deep);
  CHECK(fd::scan_json_text(deep).offset == fd::max_json_depth);
  CHECK_FALSE(fd::parse_json(std::string(200'000, '{'), doc, error));
  CHECK(error == "nested deeper than 512 levels (at offset 512)");
  // An escaped quote does not end a string; an escaped backslash before a quote does.
  CHECK(fd::scan_json_text(R"(["\"[[", "\\", [[]]])", 2).offset == 16);
  CHECK(fd::scan_json_text(R"(["\\\"[[["])", 1).problem == Problem::none);

  // The writer refuses to nest deeper than a reader would accept.
  std::vector<std::vector<std::vector<int>>> three{{{1}}};
  CHECK(ferry_json(three) == R"({"value0":[[[1]]]})");
  Chain head;
  Chain* tail = &head;
  for (std::size_t i = 0; i < fd::max_json_depth; ++i) {
    tail->next = std::make_unique<Chain>();
    tail = tail->next.get();
  }
  CHECK_THROWS_WITH_AS(ferry_json(head), doctest::Contains("nests deeper than 512 levels"), fd::JsonError);
}

TEST_CASE("JsonArchive.parse_guards_against_what_rapidjson_gets_wrong") {
  // Found by the fuzzer (fuzz_json) in Debian's RapidJSON 1.1.0.
  fd::json::Document doc;
  std::string error;
  SUBCASE("a NUL byte would end the text: \"7\\0garbage\" was 7, and a line copied as is broke") {
    CHECK_FALSE(fd::parse_json(std::string_view("7\0garbage", 9), doc, error));
    CHECK(error == "a NUL byte, which JSON text cannot hold (at offset 1)");
    CHECK(fd::parse_json(R"(["\u0000"])", doc, error));  // escaped, it is a character
  }
  SUBCASE("it skips the bytes of a byte order mark, each alone: \"\\xBB7\" was 7") {
    for (const char* bad : {"\xBB" "7", "\xEF\xBB\xBF" "7", "[1, \xC3\xA9]"}) {
      CAPTURE(bad);
      CHECK_FALSE(fd::parse_json(bad, doc, error));
      CHECK(error.find("a byte above 0x7F outside a string") == 0);
    }
    CHECK(fd::parse_json("\"\xC3\xA9\"", doc, error));  // in a string, UTF-8 is text
  }
  SUBCASE("NaN or Infinity run into a fraction or exponent: an assertion, or garbage") {
    for (const char* bad : {"NaNe00", "[1, -Infinity.5]", "Infe1", "{\"a\": NaN.5}"}) {
      CAPTURE(bad);
      CHECK_FALSE(fd::parse_json(bad, doc, error));
      CHECK(error.find("NaN or Infinity followed by more digits") == 0);
    }
    CHECK(fd::parse_json("[NaN, -Infinity, Inf]", doc, error));
  }
  SUBCASE("numbers its strtod gets wrong are read exactly (zeros read as -2.19e-193)") {
    REQUIRE(fd::parse_json("[0.000000000000000000000000, -0e400, 0E-99999, 0.0, 0, 1e-400, 10.000000000000000000000000]",
                           doc, error));
    CHECK(doc[0].IsDouble());
    CHECK(doc[0].GetDouble() == 0.0);
    CHECK(std::signbit(doc[1].GetDouble()));
    CHECK(doc[1].GetDouble() == 0.0);
    CHECK(doc[2].GetDouble() == 0.0);
    CHECK(doc[3].GetDouble() == 0.0);
    CHECK(doc[4].IsInt());
    CHECK(doc[5].GetDouble() == 0.0);
    CHECK(doc[6].GetDouble() == 10.0);
    // Digits that start like 2^64 - 1 and round up overflowed its 64-bit significand to 0.
    REQUIRE(fd::parse_json("[184467440737095516155, -1.84467440737095516155e3, 18446744073709551615]", doc, error));
    CHECK(doc[0].GetDouble() == 184467440737095516155.0);
    CHECK(doc[1].GetDouble() == -1.84467440737095516155e3);
    CHECK(doc[2].GetUint64() == 18446744073709551615u);  // an integer as before
    // Magnitudes beyond 10^300 indexed its table of powers of ten out of bounds (SIGSEGV).
    std::string tiny = "[0." + std::string(400, '0') + "1, 5e-324, 1e308, 1e-301]";
    REQUIRE(fd::parse_json(tiny, doc, error));
    CHECK(doc[0].GetDouble() == 0.0);
    CHECK(doc[1].GetDouble() == 5e-324);
    CHECK(doc[2].GetDouble() == 1e308);
    CHECK(doc[3].GetDouble() == 1e-301);
    CHECK_FALSE(fd::parse_json("[1" + std::string(120, '8') + "e308]", doc, error));
    CHECK(error == "Number too big to be stored in double. (at offset 1)");
    // Rewritten in place: an error after one still points into the text as given.
    CHECK_FALSE(fd::parse_json("[0e400, x]", doc, error));
    CHECK(error == "Invalid value. (at offset 8)");
  }
}

TEST_CASE("JsonArchive.numbers_are_written_again_as_the_scan_finds_them") {
  // They were listed first, 24 bytes each: a line of "0e1," (4 bytes a number) cost six times
  // its size before it was parsed. Each is written again into one copy as the scan finds it.
  std::string many = "[0e1";
  for (int i = 0; i < 100000; ++i) many += ",0e1";
  many += "]";
  std::string_view text = many;
  std::string fixed, error;
  REQUIRE(fd::prepare_json_text(text, fixed, error));
  CHECK(text.data() == fixed.data());
  CHECK(fixed.size() == many.size());
  fd::json::Document doc;
  REQUIRE(fd::parse_json(many, doc, error));
  CHECK(doc.Size() == 100001);
  CHECK(doc[100000].GetDouble() == 0.0);
  // Text with nothing to write again is parsed where it is.
  std::string_view plain = "[1, 2.5]";
  fixed.clear();
  REQUIRE(fd::prepare_json_text(plain, fixed, error));
  CHECK(fixed.empty());
  CHECK(plain == "[1, 2.5]");
  // The first number that cannot be written again is the error, unless the scan found worse
  // further on (the order of checks is as it was).
  fixed.clear();
  const std::string two = "[0e1, 1" + std::string(400, '0') + ", 1" + std::string(400, '0') + "]";
  std::string_view two_bad = two;
  CHECK_FALSE(fd::prepare_json_text(two_bad, fixed, error));
  CHECK(error == "Number too big to be stored in double. (at offset 6)");
  const std::string deep = "[1" + std::string(400, '0') + ", " + std::string(fd::max_json_depth, '[');
  std::string_view bad_then_deep = deep;
  fixed.clear();
  CHECK_FALSE(fd::prepare_json_text(bad_then_deep, fixed, error));
  CHECK(error == "nested deeper than 512 levels (at offset " + std::to_string(403 + fd::max_json_depth) + ")");
}

TEST_CASE("JsonArchive.replays_the_fuzz_corpus") {
  // Seeds and any input the fuzzer ever crashed on (tests/data/fuzz/json/crash-*): each must go
  // through the worker's and the CLI's JSON code without a crash or a broken invariant.
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(FERRY_TEST_DATA_DIR) / "fuzz" / "json";
  std::size_t replayed = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(entry.path().string());
    ferry::fuzz::json_one_input(bytes);
    ++replayed;
  }
  CHECK(replayed >= 5);
}

// ---- The text archive's table of container ends ----

namespace {

struct Tree {  // recursive, its members by name
  int value = 0;
  std::vector<Tree> children;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(value), CEREAL_NVP(children));
  }
};
struct Nest {  // recursive, an array of itself: [[...]]
  std::vector<Nest> inner;
  template <class A>
  void serialize(A& ar) {
    ar(inner);
  }
};
struct Expr {  // recursive through a variant: {"v": {"index": 2, "data": [...]}}
  std::variant<long long, std::string, std::vector<Expr>> v;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(v));
  }
};

/// The table thresholds the text archive is tried with: every container held (0 to 2), a few
/// bytes, the default, and no table at all.
const std::size_t own_bytes_tried[] = {0, 1, 2, 3, 5, 8, 13, 40, fd::json_end_table_own_bytes,
                                       fd::JsonText::no_end_table};

/// `text` read as a T by the text archive with each table threshold, and through a document:
/// the same value (written again), or the same error.
template <class T>
void reads_as_through_a_document(std::string_view text) {
  std::string fixed, error;
  std::string_view checked = text;
  REQUIRE_MESSAGE(fd::check_json_text(checked, fixed, error), error);
  auto outcome = [&](auto read) {
    T value{};
    try {
      read(value);
      return ferry_json(value);
    } catch (const fd::JsonError& e) {
      return std::string("error: ") + e.what();
    }
  };
  fd::JsonDocument doc;
  REQUIRE(fd::parse_json(text, doc, error));
  const std::string expected = outcome([&](T& value) {
    fd::JsonInputArchive ar(doc);
    ar(value);
  });
  for (std::size_t own_bytes : own_bytes_tried) {
    CAPTURE(own_bytes);
    const std::string got = outcome([&](T& value) {
      fd::JsonTextInputArchive ar(checked, own_bytes);
      ar(value);
    });
    CHECK_MESSAGE(got == expected, "text: " << got.substr(0, 300) << "\ndocument: " << expected.substr(0, 300));
  }
}

/// Where each object or array of `text` opens, in text order (strings skipped).
std::vector<std::size_t> container_openings(std::string_view text) {
  fd::JsonText json(text, fd::JsonText::no_end_table);
  std::vector<std::size_t> opens;
  for (std::size_t p = 0; p < text.size(); ++p) {
    if (text[p] == '"') {
      p = json.skip_string(p) - 1;
    } else if (text[p] == '[' || text[p] == '{') {
      opens.push_back(p);
    }
  }
  return opens;
}

/// Every object or array of `text`, skipped with each table threshold (first in text order, then
/// from the last), ends where a scan of its brackets ends it; the table holds at most one
/// container for each `own_bytes` bytes of the text.
void every_container_ends_where_its_brackets_do(std::string_view text) {
  std::string fixed, error;
  std::string_view checked = text;
  REQUIRE_MESSAGE(fd::check_json_text(checked, fixed, error), error);
  const std::vector<std::size_t> opens = container_openings(text);
  fd::JsonText scan(text, fd::JsonText::no_end_table);
  std::vector<std::size_t> ends;
  for (std::size_t p : opens) ends.push_back(scan.skip_value(p));
  for (std::size_t own_bytes : own_bytes_tried) {
    for (bool backwards : {false, true}) {
      CAPTURE(own_bytes);
      CAPTURE(backwards);
      fd::JsonText json(text, own_bytes);
      std::size_t wrong = 0, first_wrong = 0;
      for (std::size_t k = 0; k < opens.size(); ++k) {
        const std::size_t i = backwards ? opens.size() - 1 - k : k;
        if (json.skip_value(opens[i]) != ends[i] && wrong++ == 0) first_wrong = opens[i];
      }
      CHECK_MESSAGE(wrong == 0, wrong << " containers end elsewhere, the first opening at " << first_wrong);
      if (own_bytes != fd::JsonText::no_end_table)
        CHECK(json.end_table_size() <= text.size() / std::max<std::size_t>(own_bytes, 2) + 1);
    }
  }
}

/// A Tree's text, `depth` levels, with pseudo-random siblings, members in either order, members
/// no type reads (strings with brackets, quotes and backslashes, nested arrays and objects) and
/// spaces: the same text for the same seed.
std::string tree_text(std::minstd_rand& random, int depth) {
  auto chance = [&](int percent) { return static_cast<int>(random() % 100) < percent; };
  auto space = [&] { return chance(20) ? std::string(" \n\t\r").substr(random() % 4, 1 + random() % 2) : ""; };
  auto junk = [&] {
    static const char* const shapes[] = {R"("]}[{\"")", R"("\\")", R"([[], {"]": "["}, [[1, "x"]]])",
                                         R"({"a": {"b": [{"c": "}\\\""}]}})", "[1.5e3, -0, true, null]"};
    return std::string(shapes[random() % std::size(shapes)]);
  };
  std::function<std::string(int)> node = [&](int level) -> std::string {
    std::vector<std::string> members = {"\"value\":" + space() + std::to_string(random() % 1000)};
    std::string children = "[" + space();
    const int count = level <= 0 ? 0 : 1 + static_cast<int>(random() % 2);  // the first goes on down
    for (int i = 0; i < count; ++i) children += (i ? "," + space() : "") + node(level - 1 - (i > 0 ? depth : 0));
    members.push_back("\"children\":" + space() + children + "]");
    if (chance(30)) members.push_back("\"extra\":" + space() + junk());
    if (chance(50)) std::swap(members[0], members[1]);
    if (members.size() == 3 && chance(50)) std::swap(members[1], members[2]);
    std::string out = "{" + space();
    for (std::size_t i = 0; i < members.size(); ++i) out += (i ? "," + space() : "") + members[i];
    return out + space() + "}";
  };
  return node(depth);
}

}  // namespace

TEST_CASE("JsonArchive.end_table.a_recursive_type_over_deep_text_reads_as_through_a_document") {
  // What the table is for: each level counted or skipped by the level above it. The spine goes
  // `depth` levels down; siblings stay shallow, members come in either order, with extra ones.
  std::minstd_rand random(7);
  for (int depth : {0, 1, 5, 40, 200}) {
    CAPTURE(depth);
    const std::string tree = tree_text(random, depth);
    reads_as_through_a_document<Tree>("{\"value0\":" + tree + "}");
    every_container_ends_where_its_brackets_do(tree);
  }
  // Nested as deep as the check lets a line be: 511 levels of [[...]] inside the top's array.
  std::string deepest = "[" + std::string(fd::max_json_depth - 1, '[') + std::string(fd::max_json_depth - 1, ']') + "]";
  reads_as_through_a_document<Nest>(deepest);
  every_container_ends_where_its_brackets_do(deepest);
  // Wide at the bottom of a deep spine: the review's shape (a long line 250 levels deep).
  std::string wide = "{\"value0\":";
  for (int i = 0; i < 250; ++i) wide += "{\"children\":[";
  for (int i = 0; i < 2000; ++i) wide += (i ? "," : "") + std::string(R"({"value":1,"children":[]})");
  for (int i = 0; i < 250; ++i) wide += "],\"value\":2}";
  wide += "}";
  reads_as_through_a_document<Tree>(wide);
  // Through a variant, its members in either order.
  std::string expr = R"({"value0": {"v": {"index": 2, "data": [{"v": {"data": [)";
  for (int i = 0; i < 60; ++i) expr += R"({"v": {"index": 2, "data": [{"v": {"data": "s]", "index": 1}}, )";
  expr += R"({"v": {"index": 0, "data": 5}})";
  for (int i = 0; i < 60; ++i) expr += "]}}";
  expr += R"(], "index": 2}}]}}})";
  reads_as_through_a_document<Expr>(expr);
  every_container_ends_where_its_brackets_do(expr);
}

TEST_CASE("JsonArchive.end_table.errors_deep_inside_are_the_documents") {
  // A value of the wrong type, a member missing, a size where an object is: found 150 levels
  // down, after the table made the levels above it, with the document's path and words.
  std::string head, tail;
  for (int i = 0; i < 150; ++i) {
    head += R"({"children": [{"value": 1, "children": []}, )";
    tail += R"(], "value": 1})";
  }
  for (const char* bottom : {R"({"value": "seven", "children": []})", R"({"children": []})", R"({"value": 1, "children": {}})",
                             R"({"value": 1, "children": [[]]})", "[]"}) {
    CAPTURE(bottom);
    reads_as_through_a_document<Tree>("{\"value0\":" + head + bottom + tail + "}");
  }
  // Too deep for the check: refused before any archive or table, at the same offset as ever.
  std::string text = "{\"value0\":" + std::string(fd::max_json_depth, '[') + std::string(fd::max_json_depth, ']') + "}";
  std::string_view checked = text;
  std::string fixed, error;
  CHECK_FALSE(fd::check_json_text(checked, fixed, error));
  CHECK(error == "nested deeper than 512 levels (at offset " + std::to_string(10 + fd::max_json_depth - 1) + ")");
}

TEST_CASE("JsonArchive.end_table.holds_a_container_of_exactly_its_own_bytes_and_no_more_than_the_cap") {
  // Rows of exactly 128 bytes, ["xx...x"]: each held at 128, none at 129 (only the whole, whose
  // own bytes are all of it). Skipping one row makes the table of every row.
  auto rows = [](std::size_t count, std::size_t row_bytes) {
    const std::string row = "[\"" + std::string(row_bytes - 4, 'x') + "\"]";
    std::string text = "[";
    for (std::size_t i = 0; i < count; ++i) text += (i ? "," : "") + row;
    return text + "]";
  };
  const std::string text = rows(200, 128);
  struct Case {
    std::size_t own_bytes, held_after_a_row, held;
  };
  for (auto [own_bytes, held_after_a_row, held] : {Case{128, 201, 201}, {129, 1, 1}, {127, 201, 201}, {4000, 0, 1}}) {
    CAPTURE(own_bytes);
    fd::JsonText json(text, own_bytes);
    CHECK(json.skip_value(1) == 129);
    CHECK(json.end_table_size() == held_after_a_row);  // at 4000, found within a quarter of it: no table
    CHECK(json.count(0) == 200);
    CHECK(json.skip_value(0) == text.size());
    CHECK(json.end_table_size() == held);
    CHECK(json.end_table_size() <= text.size() / own_bytes + 1);
  }
  // At the cap: every row held with its own bytes and no more, the whole just over the line.
  const std::string full = rows(1000, 128);
  fd::JsonText json(full, 128);
  CHECK(json.skip_value(0) == full.size());
  CHECK(json.end_table_size() == 1001);
  CHECK(json.end_table_size() <= full.size() / 128);
  // Nested containers of few bytes each are held once they add up: one each 128 bytes of
  // [[[...]]], not one each level.
  const std::string chain = std::string(500, '[') + std::string(500, ']');
  fd::JsonText nested(chain, 128);
  CHECK(nested.skip_value(0) == chain.size());
  CHECK(nested.end_table_size() == chain.size() / 128);
  every_container_ends_where_its_brackets_do(chain);
  // Short containers alone make no table.
  const std::string short_ones = R"([[1, 2], {"a": [3]}, ")" + std::string(40, '[') + "\"]";
  fd::JsonText small(short_ones, 128);
  CHECK(small.skip_value(1) == 7);
  CHECK(small.skip_value(9) == 19);
  CHECK(small.skip_value(0) == short_ones.size());  // longer than 32 bytes: the table is made, and holds nothing
  CHECK(small.end_table_size() == 0);
}

TEST_CASE("JsonArchive.end_table.strings_brackets_and_escapes_at_every_offset") {
  // Hostile text for the scans and the table: strings of brackets and escaped quotes that end a
  // byte before, at, or after where a scan stops to look in the table; held containers that open
  // inside the bytes first scanned; left-out containers around held ones.
  for (std::size_t pad = 0; pad < 40; ++pad) {
    CAPTURE(pad);
    const std::string filler(pad, ' ');
    const std::string text = "[" + filler + R"("[\"]{\\",)" + filler + R"([{"k]": [[], "\\\\\"]"]}, )" +
                             std::string(pad % 7 + 1, '[') + std::string(pad % 7 + 1, ']') + "], " + filler +
                             R"({"a": [)" + std::string(pad, '[') + std::string(pad, ']') + R"(], "}": "{"}])";
    every_container_ends_where_its_brackets_do(text);
  }
  std::minstd_rand random(11);
  for (int i = 0; i < 20; ++i) every_container_ends_where_its_brackets_do(tree_text(random, 30));
}

TEST_CASE("JsonArchive.end_table.a_table_that_cannot_be_allocated_leaves_the_scans") {
  // The table is allocated at its most (text / 128 entries); where that fails (RLIMIT_DATA, a
  // memory limit), containers are scanned whole as without a table, and nothing is thrown.
  if (FERRY_TEST_SHADOW_MEMORY) {
    MESSAGE("skipped: no RLIMIT_DATA under a sanitizer's shadow memory");
    return;
  }
  const std::size_t rows = 1 << 17;  // 16 MiB of 128-byte rows (and commas): a table of 2 MiB
  const std::string row = "[\"" + std::string(124, 'x') + "\"],";
  std::string text(rows * row.size() + 1, ' ');
  text[0] = '[';
  for (std::size_t i = 0; i < rows; ++i) text.replace(1 + i * row.size(), row.size(), row);
  text.back() = ']';  // for the last row's comma
  const int code = support::exit_code_of_child(
      [&] {
        std::ifstream status("/proc/self/status");
        std::size_t data_kib = 0;
        for (std::string line; std::getline(status, line);)
          if (line.starts_with("VmData:")) data_kib = std::stoul(line.substr(7));
        if (data_kib == 0) return 2;
        const rlimit limit{(data_kib + 512) * 1024, (data_kib + 512) * 1024};
        if (::setrlimit(RLIMIT_DATA, &limit) != 0) return 3;
        fd::JsonText json(text, 128);
        if (json.skip_value(1) != 129 || json.skip_value(0) != text.size()) return 4;
        if (json.count(0) != rows) return 5;
        return json.end_table_size() == 0 ? 0 : 6;  // 6: the table fit after all
      },
      std::chrono::milliseconds(30000));
  CHECK(code == 0);
  // The control, after the child (a large block freed here would have moved malloc's threshold
  // for mapping a block of its own): allocated, the table holds every row.
  fd::JsonText json(text, 128);
  CHECK(json.skip_value(1) == 129);
  CHECK(json.end_table_size() == rows + 1);
}
