// SPDX-License-Identifier: BSD-3-Clause
// The signatures a task may have, taken as a call of it takes them: a result that can only be
// moved, a result declared const, arguments converted implicitly (and never explicitly: the
// compile_fail tests Serialization.submit_refuses_explicit_conversions,
// Serialization.map_refuses_explicit_conversions and Initializer.call_refuses_explicit_conversions).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <doctest/doctest.h>

#include "result_types.hpp"
#include "support/fixture.hpp"

TEST_CASE("TaskTypes.copyable_value_looks_into_standard_containers") {
  // std::is_copy_constructible says yes for all of these; only the first two can be copied.
  static_assert(ferry::detail::copyable_value<std::vector<int>>());
  static_assert(ferry::detail::copyable_value<std::map<int, std::string>>());
  static_assert(!ferry::detail::copyable_value<std::vector<std::unique_ptr<int>>>());
  static_assert(!ferry::detail::copyable_value<std::vector<std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::map<int, std::unique_ptr<int>>>());
  static_assert(!ferry::detail::copyable_value<std::unique_ptr<int>>());
  static_assert(!ferry::detail::copyable_value<std::map<int, std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::pair<int, std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::tuple<std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::optional<std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::variant<int, std::vector<std::unique_ptr<int>>>>());
  static_assert(!ferry::detail::copyable_value<std::array<std::vector<std::unique_ptr<int>>, 2>>());
  static_assert(ferry::detail::copyable_value<std::string>());
  static_assert(ferry::detail::copyable_value<std::pair<const int, std::optional<std::string>>>());
  static_assert(ferry::detail::copyable_value<std::variant<int, std::vector<double>>>());
  static_assert(ferry::detail::copyable_value<std::filesystem::path>());
  CHECK(true);
}

TEST_CASE("TaskTypes.a_move_only_result_comes_back_from_submit") {
  ferry::Executor ex(support::options(1));
  ferry::Future<std::unique_ptr<int>> f = ex.submit(boxed, 7);
  std::unique_ptr<int> first = f.get();
  REQUIRE(first);
  CHECK(*first == 7);
  // A worker's result is decoded anew by each get(): a second box, from a copy of the future too.
  std::unique_ptr<int> second = ferry::Future<std::unique_ptr<int>>(f).get();
  REQUIRE(second);
  CHECK(*second == 7);
  CHECK(second.get() != first.get());
  // By reference, with the result type given.
  CHECK(*ex.submit<std::unique_ptr<int>>(ferry::TaskRef{FERRY_TEST_RESULT_TYPES_PLUGIN, "boxed"}, 8).get() == 8);
}

TEST_CASE("TaskTypes.a_result_whose_copy_would_not_compile_comes_back") {
  // std::is_copy_constructible<Boxes> is true, its copy would not compile: a worker's result is
  // never copied, so the future of one compiles and works.
  ferry::Executor ex(support::options(1));
  Boxes b = ex.submit(boxes, 3).get();
  REQUIRE(b.items.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(*b.items[static_cast<std::size_t>(i)] == i);
  std::vector<Boxes> mapped = ex.map(boxes, std::vector<int>{0, 2});
  REQUIRE(mapped.size() == 2);
  CHECK(mapped[0].items.empty());
  CHECK(*mapped[1].items[1] == 1);
}

TEST_CASE("TaskTypes.a_move_only_value_made_in_the_host_is_handed_out_once") {
  ferry::Executor ex(support::options(1));
  auto plus_one = ex.submit(boxed, 3).then([](std::unique_ptr<int> p) {
    *p += 1;
    return p;
  });
  std::unique_ptr<int> v = plus_one.get();
  REQUIRE(v);
  CHECK(*v == 4);
  // Moved out by the first get(), as std::future's value: a second one says so.
  try {
    (void)plus_one.get();
    FAIL("a second get() of a move-only value made in the host returned");
  } catch (const std::future_error& e) {
    CHECK(e.code() == std::future_errc::future_already_retrieved);
  }
  // A continuation that takes the future itself may get() it.
  auto via_future = ex.submit(boxed, 5).then([](ferry::Future<std::unique_ptr<int>> f) { return f.get(); });
  CHECK(*via_future.get() == 5);
  // An error still passes through.
  auto failing = ex.submit(boxed, 1).then([](std::unique_ptr<int>) -> std::unique_ptr<int> {
    throw std::runtime_error("no box");
  });
  CHECK_THROWS_WITH_AS(failing.get(), "no box", std::runtime_error);
}

TEST_CASE("TaskTypes.move_only_results_come_back_from_map_imap_and_map_outcomes") {
  ferry::Executor ex(support::options(2));
  const std::vector<int> inputs{1, 2, 3, 4, 5, 6, 7};
  std::vector<std::unique_ptr<int>> mapped = ex.map(boxed, inputs, {.chunksize = 3});
  REQUIRE(mapped.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) CHECK(*mapped[i] == inputs[i]);

  std::vector<int> streamed;
  for (std::unique_ptr<int>& p : ex.imap(boxed, inputs, {.chunksize = 2})) streamed.push_back(*p);
  CHECK(streamed == inputs);

  std::vector<int> unordered;
  for (auto&& item : ex.imap_unordered(boxed, inputs)) unordered.push_back(*item.value);
  std::sort(unordered.begin(), unordered.end());
  CHECK(unordered == inputs);

  auto outcomes = ex.map_outcomes(boxed, inputs);
  REQUIRE(outcomes.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) CHECK(*outcomes[i].value() == inputs[i]);
}

TEST_CASE("TaskTypes.a_const_result_is_received_as_its_value_type") {
  ferry::Executor ex(support::options(2));
  auto f = ex.submit(const_label, 12);
  static_assert(std::is_same_v<decltype(f), ferry::Future<std::string>>);
  CHECK(f.get() == "#12");
  CHECK(ex.submit<std::string>(ferry::TaskRef{FERRY_TEST_RESULT_TYPES_PLUGIN, "const_label"}, 13).get() == "#13");

  const std::vector<int> inputs{1, 2, 3};
  const std::vector<std::string> words{"#1", "#2", "#3"};
  std::vector<std::string> mapped = ex.map(const_label, inputs);
  CHECK(mapped == words);
  std::vector<std::string> streamed;
  for (const std::string& s : ex.imap(const_label, inputs)) streamed.push_back(s);
  CHECK(streamed == words);
  auto outcomes = ex.map_outcomes(const_label, inputs);
  REQUIRE(outcomes.size() == 3);
  CHECK(outcomes[2].value() == "#3");
}

TEST_CASE("TaskTypes.arguments_convert_as_a_call_of_the_task_would") {
  ferry::Executor ex(support::options(1));
  // A C string to std::string, an int to double: conversions a call makes implicitly.
  CHECK(ex.submit(length_plus_twice, "abc", 1).get() == doctest::Approx(5.0));
  CHECK(length_plus_twice("abc", 1) == doctest::Approx(5.0));
  // A std::vector from a braced list is the vector itself, built where the call is written.
  CHECK(ex.submit(count_values, std::vector<int>{5}).get() == 1u);
  // Map elements and constant extra arguments convert the same way.
  const std::vector<const char*> texts{"a", "bb", "ccc"};
  const std::vector<double> sums = ex.map(length_plus_twice, texts, {}, 1.5f);
  CHECK(sums == std::vector<double>{4.0, 5.0, 6.0});
  // To a parameter taken by const reference: converted into a value that lives until encoded.
  CHECK(ex.map(length_of, texts) == std::vector<std::size_t>{1, 2, 3});
  std::vector<std::size_t> streamed;
  for (std::size_t n : ex.imap(length_of, texts)) streamed.push_back(n);
  CHECK(streamed == std::vector<std::size_t>{1, 2, 3});
  CHECK(ex.submit(length_of, "four").get() == 4u);
  // A string literal is a BytesView of its bytes without the NUL; a char array's end at its
  // first NUL, never past the array; a pointer converts explicitly only, a null one never.
  static_assert(std::is_convertible_v<const char (&)[6], ferry::BytesView>);
  static_assert(!std::is_convertible_v<const char*, ferry::BytesView>);
  static_assert(!std::is_convertible_v<std::nullptr_t, ferry::BytesView>);
  static_assert(!std::is_constructible_v<ferry::BytesView, std::nullptr_t>);
  CHECK(view_byte_count("five!") == 5u);
  CHECK(ex.submit(view_byte_count, "five!").get() == 5u);
  char unterminated[3] = {'a', 'b', 'c'};
  CHECK(ex.submit(view_byte_count, unterminated).get() == 3u);
  const char* none = nullptr;
  CHECK(ex.submit(view_byte_count, ferry::BytesView(none)).get() == 0u);
}

namespace json_forms {
/// An abstract base, written through its registered derived types: neither archive finds a
/// serialization of its own for it.
struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
};
/// Saved by any archive, loaded by cereal's binary one only: a result can be written as JSON, an
/// argument cannot be read from it.
struct LoadsBinaryOnly {
  std::int32_t v = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(v);
  }
  void load(cereal::BinaryInputArchive& ar) { ar(v); }
};
}  // namespace json_forms

TEST_CASE("TaskTypes.a_json_form_is_refused_only_on_evidence_and_per_direction") {
  // A first version refused a JSON form to every class the JSON archives found nothing for (a
  // pointer to an abstract base lost the JSON entry point it had), and asked a result to be read
  // and an argument to be written too.
  using ferry::detail::has_json_form;
  static_assert(has_json_form<std::unique_ptr<json_forms::Shape>, true>());
  static_assert(has_json_form<std::shared_ptr<const json_forms::Shape>, false>());
  static_assert(has_json_form<json_forms::LoadsBinaryOnly, false>());
  static_assert(!has_json_form<json_forms::LoadsBinaryOnly, true>());
  static_assert(!has_json_form<std::map<int, std::vector<result_types::BinaryOnly>>, true>());
  static_assert(!has_json_form<std::unique_ptr<const result_types::BinaryOnly>, false>());
  static_assert(has_json_form<std::vector<std::string>, true>());
  CHECK(ferry::detail::has_json_entry<&length_plus_twice>());
}

TEST_CASE("TaskTypes.binary_only_types_travel_by_function_and_have_no_json_entry") {
  // FERRY_TASK compiled a JSON entry point for every task: the plugin did not compile with these
  // (no save or load for the JSON archives; cereal::binary_data in one).
  using result_types::BinaryOnly;
  using result_types::Raw;
  static_assert(!ferry::detail::has_json_entry<&binary_only_twice>());
  static_assert(!ferry::detail::has_json_entry<&sum_binary_only>());
  static_assert(!ferry::detail::has_json_entry<&reversed_raw>());
  static_assert(ferry::detail::has_json_entry<&length_plus_twice>());
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(binary_only_twice, BinaryOnly{21}).get().value == 42);
  CHECK(ex.submit(sum_binary_only, std::vector<BinaryOnly>{{1}, {2}}, BinaryOnly{4}, std::make_unique<BinaryOnly>(8))
            .get() == 15);
  CHECK(ex.submit(reversed_raw, Raw{{1, 2, 3, 4}}).get().bytes == std::array<std::uint8_t, 4>{4, 3, 2, 1});
  // As JSON: refused, saying why; a task of the same plugin with JSON types still runs so.
  const auto ref = [](const char* name) {
    return ferry::TaskRef{.library = FERRY_TEST_RESULT_TYPES_PLUGIN, .name = name};
  };
  for (const char* name : {"binary_only_twice", "reversed_raw"}) {
    CAPTURE(name);
    std::string what;
    try {
      ex.submit_json(ref(name), R"({"value0": {}})").get();
    } catch (const ferry::PluginError& e) {
      what = e.what();
    }
    CHECK(what.find("no JSON entry point") != std::string::npos);
    CHECK(what.find("ferry::binary_only") != std::string::npos);
  }
  CHECK(ex.submit_json(ref("length_plus_twice"), R"({"value0": "abc", "value1": 1.0})").get() ==
        "{\"value0\":5.0}\n");
}
