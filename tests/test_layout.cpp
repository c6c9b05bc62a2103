// SPDX-License-Identifier: BSD-3-Clause
// Layouts (detail/layout.hpp): what a signature's user types serialize, and the worker's refusal of
// a task whose plugin defines a user type otherwise than the host under the same name.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <cereal/types/base_class.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/memory.hpp>
#include <ferry/detail/layout.hpp>
#include <ferry/executor.hpp>

#include "support/fixture.hpp"

namespace layout_unit {
/// A pimpl whose save reads through its pointer: run on a default-constructed object, it
/// dereferences a null pointer (which the layout archive would only bind, never read: `saves`
/// counts the runs).
struct Pimpl {
  std::unique_ptr<std::int32_t> impl;
  static inline int saves = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ++saves;
    ar(*impl);
  }
  template <class Archive>
  void load(Archive& ar) {
    impl = std::make_unique<std::int32_t>();
    ar(*impl);
  }
};
}  // namespace layout_unit
template <>
struct ferry::layout_by_name<layout_unit::Pimpl> : std::true_type {};

namespace layout_unit {
struct Plain {
  double a = 0;
  std::int32_t b = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b);
  }
};
struct Named {
  double x = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(x));
  }
};
struct Node {
  std::int32_t value = 0;
  std::vector<Node> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
};
struct SaveLoad {
  std::int32_t v = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(v);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(v);
  }
};
struct Minimal {
  std::int32_t v = 0;
  template <class Archive>
  std::string save_minimal(const Archive&) const {
    return std::to_string(v);
  }
  template <class Archive>
  void load_minimal(const Archive&, const std::string& s) {
    v = std::stoi(s);
  }
};
struct Base {
  std::int32_t b = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(b);
  }
};
struct Derived : Base {
  double d = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::base_class<Base>(this), d);
  }
};
struct Versioned {
  std::int32_t v = 0;
  template <class Archive>
  void serialize(Archive& ar, std::uint32_t) {
    ar(v);
  }
};
struct Throws {
  Throws() { throw std::runtime_error("no default value"); }
  std::int32_t v = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(v);
  }
};
struct External {
  std::int32_t v = 0;
};
template <class Archive>
void serialize(Archive& ar, External& e) {
  ar(e.v);
}
struct InCereal {
  std::int32_t v = 0;
};
struct Blob {
  std::vector<char> data;
  template <class Archive>
  void save(Archive& ar) const {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(data.size())));
    ar(cereal::binary_data(data.data(), data.size()));
  }
  template <class Archive>
  void load(Archive&) {}
};
enum class Colour : std::uint8_t { red, green };
enum class OnInt { a, b };
enum class Small : std::int16_t { a, b };
enum Unscoped { first, second };
struct HasModes {
  Small small = Small::a;
  OnInt on_int = OnInt::a;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(small, on_int);
  }
};
struct Library {
  std::chrono::milliseconds wait{};
  std::vector<std::chrono::seconds> waits;
  std::unique_ptr<Plain> plain;
  Colour colour = Colour::red;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(wait, waits, plain, colour);
  }
};
struct Wide {
  std::int32_t v = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    for (int i = 0; i < 2000; ++i) ar(v);
  }
};
}  // namespace layout_unit

namespace cereal {
template <class Archive>
void serialize(Archive& ar, layout_unit::InCereal& e) {
  ar(e.v);
}
}  // namespace cereal

// As the host defines them. The layout plugin (tests/plugins/layout.cpp) has Point's members in
// the other order, and Tagged and Shape alike (but its Shape holds its own Point).
namespace layout_test {
struct Point {
  double y = 0, x = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(y), CEREAL_NVP(x));
  }
};
struct Tagged {
  std::int32_t id = 0;
  std::string label;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, label);
  }
};
struct Shape {
  std::vector<Point> corners;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(corners));
  }
};
// The plugin's is on std::uint16_t.
enum class Mode : std::int16_t { off, on };
/// As the plugin defines it: a pimpl whose save reads through its pointer, marked layout_by_name.
struct Handle {
  std::unique_ptr<std::int32_t> impl;
  template <class Archive>
  void save(Archive& ar) const {
    ar(*impl);
  }
  template <class Archive>
  void load(Archive& ar) {
    impl = std::make_unique<std::int32_t>();
    ar(*impl);
  }
};
}  // namespace layout_test
template <>
struct ferry::layout_by_name<layout_test::Handle> : std::true_type {};

namespace {

using ferry::detail::layout_text;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

ferry::TaskRef layout_task(const char* name) { return {.library = FERRY_TEST_LAYOUT_PLUGIN, .name = name}; }

}  // namespace

TEST_CASE("Layout.text.names_no_type_of_a_signature_without_user_types") {
  CHECK(layout_text<double, std::vector<std::int32_t>, std::map<std::string, double>>().empty());
  CHECK(layout_text<void>().empty());
}

TEST_CASE("Layout.text.lists_a_user_types_members_as_its_serialize_gives_them") {
  CHECK(layout_text<layout_unit::Plain>() == "layout_unit::Plain{f64,i32}");
  CHECK(layout_text<layout_unit::Named>() == "layout_unit::Named{x:f64}");
  CHECK(layout_text<layout_unit::SaveLoad>() == "layout_unit::SaveLoad{i32}");
  CHECK(layout_text<layout_unit::Minimal>() == "layout_unit::Minimal{=string}");
  CHECK(layout_text<layout_unit::External>() == "layout_unit::External{i32}");
  CHECK(layout_text<layout_unit::InCereal>() == "layout_unit::InCereal{i32}");
  CHECK(layout_text<layout_unit::Blob>() == "layout_unit::Blob{size,bytes}");
}

TEST_CASE("Layout.text.follows_user_types_through_containers_members_and_bases_once_each") {
  CHECK(layout_text<std::map<std::string, layout_unit::Plain>>() == "layout_unit::Plain{f64,i32}");
  CHECK(layout_text<double, layout_unit::Plain, std::vector<layout_unit::Plain>>() ==
        "layout_unit::Plain{f64,i32}");
  CHECK(layout_text<layout_unit::Node>() == "layout_unit::Node{i32,vector<layout_unit::Node>}");
  CHECK(layout_text<layout_unit::Derived>() ==
        "layout_unit::Derived{base layout_unit::Base,f64};layout_unit::Base{i32}");
}

TEST_CASE("Layout.text.writes_a_library_type_named_by_the_compiler_as_not_compared") {
  // g++ and clang spell std::chrono::milliseconds differently ("long int" and "long"): a member
  // named so made a plugin built by the other compiler refused. An enum's name is its own.
  CHECK(layout_text<layout_unit::Library>() ==
        "layout_unit::Library{_,_,_,layout_unit::Colour};layout_unit::Colour{=u8}");
}

TEST_CASE("Layout.text.describes_an_enum_by_the_type_cereal_writes_unless_int") {
  // Not in the layout, an enum on std::uint16_t in the plugin and std::int16_t in the host ran
  // the task with 65534 for -2 (Layout.worker.refuses_an_enum_on_another_type).
  CHECK(layout_text<layout_unit::Small>() == "layout_unit::Small{=i16}");
  // An unscoped enum without a fixed type: whichever type the compiler chose (unsigned here).
  using UnscopedOn = std::underlying_type_t<layout_unit::Unscoped>;
  CHECK(layout_text<layout_unit::Unscoped>() ==
        "layout_unit::Unscoped{=" + std::string(std::is_signed_v<UnscopedOn> ? "i" : "u") + "32}");
  CHECK(layout_text<std::vector<layout_unit::Small>, layout_unit::Small>() == "layout_unit::Small{=i16}");
  CHECK(layout_text<layout_unit::HasModes>() ==
        "layout_unit::HasModes{layout_unit::Small,layout_unit::OnInt};layout_unit::Small{=i16}");
  // On int (an enum class's own), and the library's enums: named only, as before.
  CHECK(layout_text<layout_unit::OnInt>().empty());
  CHECK(layout_text<std::byte>().empty());
}

TEST_CASE("Layout.text.says_what_it_cannot_look_into") {
  // A class version: its load may read either side's data, so the members are not compared.
  CHECK(layout_text<layout_unit::Versioned>() == "layout_unit::Versioned{versioned}");
  CHECK(layout_text<layout_unit::Throws>() == "layout_unit::Throws{?}");
}

TEST_CASE("Layout.text.of_a_type_marked_layout_by_name_is_its_name_only") {
  // Its save is never run on a default-constructed object (it would read through a null pointer).
  CHECK(layout_text<layout_unit::Pimpl>() == "layout_unit::Pimpl{named}");
  CHECK(layout_unit::Pimpl::saves == 0);
  CHECK(layout_text<std::vector<layout_unit::Pimpl>, layout_unit::Plain>() ==
        "layout_unit::Pimpl{named};layout_unit::Plain{f64,i32}");
}

TEST_CASE("Layout.text.of_more_than_4096_characters_is_its_hash") {
  const std::string text = layout_text<layout_unit::Wide>();
  REQUIRE(text.size() == 17);
  CHECK(text.front() == '#');
  CHECK(text.find_first_not_of("0123456789abcdef", 1) == std::string::npos);
  CHECK(text == layout_text<layout_unit::Wide>());
}

TEST_CASE("Layout.worker.refuses_a_struct_whose_members_the_plugin_orders_otherwise") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit<double>(layout_task("point_x"), layout_test::Point{.y = 2, .x = 1});
  try {
    // Without the check the task reads the host's y as its x: 2, not 1.
    double x = f.get();
    FAIL("the task ran and returned " << x);
  } catch (const ferry::PluginError& e) {
    const std::string what = e.what();
    CHECK(contains(what, "layout_test::Point{x:f64,y:f64}"));  // the plugin's
    CHECK(contains(what, "layout_test::Point{y:f64,x:f64}"));  // the host's
    CHECK(contains(what, "point_x"));
  }
  // The worker lives on: a task whose types agree runs.
  CHECK(ex.submit<std::string>(layout_task("tagged_label"), layout_test::Tagged{.id = 7, .label = "seven"}).get() ==
        "7:seven");
}

TEST_CASE("Layout.worker.refuses_an_enum_on_another_type") {
  ferry::Executor ex(support::options(1));
  try {
    int v = ex.submit<int>(layout_task("mode_value"), static_cast<layout_test::Mode>(-2)).get();
    FAIL("the task ran and read " << v);
  } catch (const ferry::PluginError& e) {
    const std::string what = e.what();
    CHECK(contains(what, "layout_test::Mode{=u16}"));  // the plugin's
    CHECK(contains(what, "layout_test::Mode{=i16}"));  // the host's
  }
}

TEST_CASE("Layout.worker.runs_a_type_both_sides_mark_layout_by_name") {
  // Neither side runs its save on a default-constructed object (it would read through a null
  // pointer); both write "layout_test::Handle{named}", so they agree, and the value travels.
  ferry::Executor ex(support::options(1));
  layout_test::Handle h;
  h.impl = std::make_unique<std::int32_t>(41);
  CHECK(ex.submit<std::int32_t>(layout_task("handle_value"), std::move(h)).get() == 42);
}

TEST_CASE("Layout.worker.compares_a_user_type_held_in_a_container") {
  ferry::Executor ex(support::options(1));
  layout_test::Shape shape;
  shape.corners.resize(3);
  CHECK_THROWS_WITH_AS(ex.submit<std::size_t>(layout_task("corner_count"), shape).get(),
                       doctest::Contains("layout_test::Point{x:f64,y:f64}"), ferry::PluginError);
}
