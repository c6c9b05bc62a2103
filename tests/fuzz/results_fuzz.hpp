// SPDX-License-Identifier: BSD-3-Clause
// One input of the results fuzzer (fuzz_results.cpp; test_serialization replays the corpus): bytes
// as a worker's result, decoded by the host (detail::decode_value, BoundedInputArchive) into
// representative result types. A decoding error must be a cereal::Exception; a crash, a sanitizer
// report (a bool that is not 0 or 1 is one), an allocation far beyond the input (libFuzzer's
// -malloc_limit_mb) or any other exception is a bug.
#pragma once

#include <array>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include <ferry/bytes_view.hpp>
#include <ferry/detail/codec.hpp>

namespace ferry::fuzz {

/// A user type with a template serialize.
struct Point {
  double x = 0, y = 0;
  std::string label;
  std::vector<bool> flags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, y, label, flags);
  }
};

/// A recursive type: how deep a result nests is the worker's choice.
struct Tree {
  std::vector<Tree> kids;
  std::optional<std::string> leaf;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(kids, leaf);
  }
};

template <class T>
void decode_one(std::string_view bytes) {
  static_assert(std::is_same_v<detail::ResultArchive<T>, detail::BoundedInputArchive>,
                "a type the fuzzer tries must be read with the checked archive");
  try {
    (void)detail::decode_value<T>(bytes);
  } catch (const cereal::Exception&) {
    // the documented failure: the future reports a SerializationError
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decoding threw %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

inline void results_one_input(std::string_view bytes) {
  decode_one<int>(bytes);
  decode_one<bool>(bytes);
  decode_one<std::string>(bytes);
  decode_one<BytesView>(bytes);
  decode_one<std::vector<std::string>>(bytes);
  decode_one<std::vector<double>>(bytes);
  decode_one<std::vector<bool>>(bytes);
  decode_one<std::vector<std::vector<std::vector<int>>>>(bytes);
  decode_one<std::vector<std::array<char, 4096>>>(bytes);
  decode_one<std::deque<std::optional<int>>>(bytes);
  decode_one<std::list<Point>>(bytes);
  decode_one<std::map<std::string, std::vector<int>>>(bytes);
  decode_one<std::unordered_map<int, std::string>>(bytes);
  decode_one<std::set<std::string>>(bytes);
  decode_one<std::tuple<std::string, std::variant<int, std::string, std::vector<Point>>, bool>>(bytes);
  decode_one<std::shared_ptr<std::string>>(bytes);
  decode_one<std::tuple<std::shared_ptr<std::string>, std::shared_ptr<std::vector<int>>>>(bytes);
  decode_one<Tree>(bytes);
  decode_one<std::unordered_set<std::string>>(bytes);
  decode_one<std::vector<std::optional<std::array<char, 65536>>>>(bytes);
}

}  // namespace ferry::fuzz
