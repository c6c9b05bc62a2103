// SPDX-License-Identifier: BSD-3-Clause
// How arguments and results travel: cereal's binary archive, with cereal's support for the std
// types included, and the check that a type can travel. The transport (buffers, streams, the
// encoder) is in detail/: buffer.hpp, streams.hpp, codec.hpp.
#pragma once

#include <type_traits>

#include <cereal/archives/binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/bitset.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

namespace ferry {

/** @brief The archive pair every argument and result goes through. */
using OutputArchive = cereal::BinaryOutputArchive;
using InputArchive = cereal::BinaryInputArchive;

/** @brief True when T can travel as a task argument or result. */
template <class T>
inline constexpr bool is_serializable_v =
    std::is_void_v<T> ||
    (cereal::traits::is_output_serializable<std::remove_cvref_t<T>, OutputArchive>::value &&
     cereal::traits::is_input_serializable<std::remove_cvref_t<T>, InputArchive>::value &&
     std::is_default_constructible_v<std::remove_cvref_t<T>>);

/**
@brief Specialise as std::true_type for a user type whose members must not be looked into: one
whose save cannot run on a default-constructed object (a pimpl whose save reads through its null
pointer would crash the process where the layout is recorded). Its layout is then its name only,
"Name{named}", not compared member by member (nor the user types reached only through it).
Specialise it at global scope right after the type's definition, in the header the host and the
plugin share, so that every translation unit sees it (this header declares it; <ferry/task.hpp>
and <ferry/ferry.hpp> include it). A type with a class version is never looked into anyway.
@code
template <> struct ferry::layout_by_name<geo::Mesh> : std::true_type {};
@endcode
*/
template <class T>
struct layout_by_name : std::false_type {};

/**
@brief Specialise as std::true_type for a user type that only cereal's binary archive can carry:
one whose template `serialize` writes `cereal::binary_data`, say. A FERRY_TASK whose arguments or
result hold it gets no JSON entry point (`ferry run`, Executor::submit_json): the plugin compiles,
the task is submitted by function, and a JSON call fails with a PluginError saying it has none.
A type whose save and load are written for cereal::BinaryOutputArchive and
cereal::BinaryInputArchive themselves (not templates) needs no mark: that is seen, through
standard containers, pairs, tuples, optionals, variants, arrays and smart pointers too. Specialise
it where layout_by_name would be (below the type, in the header the plugin includes).
@code
template <> struct ferry::binary_only<geo::Blob> : std::true_type {};
@endcode
*/
template <class T>
struct binary_only : std::false_type {};

namespace detail {

/// States the fix at compile time (cereal's habit) when a type cannot travel.
template <class T>
constexpr void require_serializable() {
  static_assert(is_serializable_v<T>,
                "ferry: a task argument or result type cannot be serialized. Give the type a "
                "member `template <class Archive> void serialize(Archive& ar) { ar(field1, "
                "field2); }` (or load/save), make it default-constructible, or include the cereal "
                "header for the std type (e.g. <cereal/types/stack.hpp>). Raw pointers and "
                "references to host memory cannot travel to another process.");
}

}  // namespace detail
}  // namespace ferry

#include <ferry/bytes_view.hpp>  // travels like std::string, arrives without a copy
