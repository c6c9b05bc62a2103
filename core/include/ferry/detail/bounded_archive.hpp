// SPDX-License-Identifier: BSD-3-Clause
// The archive the host decodes results with: cereal's binary format, and a worker's bytes
// distrusted (issue: a hostile worker must not crash its host).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <streambuf>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/memory.hpp>

namespace ferry::detail {

/// Elements a container may announce beyond the bytes left to read: those of a type that
/// serializes to nothing (an empty struct). Past it, the host refuses the value.
inline constexpr std::uint64_t unbacked_elements = 1024;
/// Values nested in values (a tree of a recursive type): past it the host refuses the result
/// rather than run out of stack in the thread that decodes it.
inline constexpr int max_result_depth = 512;
/// Keys of an unordered container in one bucket: honest keys with any decent hash never get
/// near it; keys chosen to collide would make each insertion scan them all (quadratic time).
inline constexpr std::size_t max_bucket_keys = 512;

/**
@brief cereal's binary input archive for what a worker sends its host (results): the same bytes,
read the same way, with checks more, each failing with cereal::Exception (a SerializationError from
the future). cereal sizes a vector or a string from the element count it reads (resized and
zero-filled, then read), so eight bytes of a hostile worker's result could make the host allocate
and touch gigabytes. Here a count must be backed by the bytes left in the message (every element
takes at least one, past the first unbacked_elements; a vector of numbers, all its bytes);
every element made is charged against one memory budget per result (charge): a vector is
reserved whole when that takes at most 16 times the bytes left and the budget covers it, else
it grows as its elements are read, like deques, lists and unordered containers; values nest at
most max_result_depth deep, a bucket holds at most max_bucket_keys unique keys, a bool is 0 or 1,
and two pointers never share an object (getSharedPointer).
A type that loads only through cereal::BinaryInputArchive itself (a non-template load) is decoded
with that, unchecked (ResultArchive). Two limits: a type holding such a type inside its template
serialize no longer compiles as a result (give the inner type a template load), and a polymorphic
type is found only if it was registered (CEREAL_REGISTER_TYPE) where this header was included
(every ferry header that submits includes it).
*/
class BoundedInputArchive
    : public cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit BoundedInputArchive(std::istream& stream)
      : cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision>(this),
        buffer_(*stream.rdbuf()),
        budget_(16 * remaining() + (std::uint64_t{64} << 20)) {}

  /// As cereal::BinaryInputArchive::loadBinary: `size` bytes, or cereal::Exception.
  void loadBinary(void* data, std::size_t size) {
    auto got = static_cast<std::size_t>(buffer_.sgetn(static_cast<char*>(data), static_cast<std::streamsize>(size)));
    if (got != size)
      throw cereal::Exception("Failed to read " + std::to_string(size) + " bytes from input stream! Read " +
                              std::to_string(got));
  }
  /// Bytes not read yet (all of the message is in the stream's buffer).
  std::uint64_t remaining() {
    std::streamsize n = buffer_.in_avail();
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
  }

  /// Hides cereal's: a result's pointers never share an object. cereal would hand the object
  /// first loaded under an id to any later shared_ptr naming that id, whatever its type (a
  /// shared_ptr<B> pointing at an A), and a pointer may name the object still being loaded (a
  /// cycle that leaks).
  std::shared_ptr<void> getSharedPointer(std::uint32_t) {
    throw cereal::Exception("a result whose pointers share an object (refused: they could be of different types)");
  }

  /// One value deeper; cereal::Exception past max_result_depth.
  void enter() {
    if (++depth_ > max_result_depth)
      throw cereal::Exception("a result nested more than " + std::to_string(max_result_depth) + " levels deep");
  }
  void leave() noexcept { --depth_; }

  /// Memory that elements about to be made take: all of a result's together may take 16 times
  /// its bytes plus 64 MiB (an element of few bytes can be large in memory: an empty optional of
  /// a large array).
  void charge(std::uint64_t bytes) {
    if (!try_charge(1, bytes)) throw cereal::Exception("a result that would take far more memory than its bytes");
  }
  /// As charge for `count` elements of `size` bytes each, but says false (and charges nothing)
  /// when the budget does not cover them all.
  bool try_charge(std::uint64_t count, std::uint64_t size) noexcept {
    if (size != 0 && count > budget_ / size) return false;
    budget_ -= count * size;
    return true;
  }

 private:
  std::streambuf& buffer_;
  std::uint64_t budget_;
  int depth_ = 0;
};

/// Whether a value of type T may hold values of its own type, and so count for the depth: not
/// numbers, enums, strings, nor cereal's wrappers of a size or of raw bytes (each value loads
/// through several of these: counting them cost a string about 10 % of its decoding). Nor what
/// only ever wraps one value that counts itself when it may nest: a member's name (cereal's
/// name-value pair), a smart pointer and cereal's wrapper of it. A type can hold itself only
/// through a class, which counts, so the stack each level takes stays bounded by the type's
/// own shape: a linked list of nodes with named members took six levels a node (85 nodes made
/// 512), now one (about 180 bytes of stack a node optimised, 1.4 KiB in the ASan build).
template <class T>
inline constexpr bool may_nest = !std::is_arithmetic_v<T> && !std::is_enum_v<T>;
template <class C, class Tr, class A>
inline constexpr bool may_nest<std::basic_string<C, Tr, A>> = false;
template <class T>
inline constexpr bool may_nest<cereal::SizeTag<T>> = false;
template <class T>
inline constexpr bool may_nest<cereal::BinaryData<T>> = false;
template <class T>
inline constexpr bool may_nest<cereal::NameValuePair<T>> = false;
template <class T>
inline constexpr bool may_nest<cereal::memory_detail::PtrWrapper<T>> = false;
template <class T, class D>
inline constexpr bool may_nest<std::unique_ptr<T, D>> = false;
template <class T>
inline constexpr bool may_nest<std::shared_ptr<T>> = false;
template <class T>
inline constexpr bool may_nest<std::weak_ptr<T>> = false;

template <class T>
void prologue(BoundedInputArchive& ar, const T&) {
  if constexpr (may_nest<T>) ar.enter();
}
template <class T>
void epilogue(BoundedInputArchive& ar, const T&) {
  if constexpr (may_nest<T>) ar.leave();
}

template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
}

/// A bool is one byte, 0 or 1: any other value would be undefined behaviour once in a bool.
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, bool& t) {
  unsigned char byte = 0;
  ar.loadBinary(&byte, 1);
  if (byte > 1) throw cereal::Exception("a bool of value " + std::to_string(byte));
  t = byte == 1;
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  const std::uint64_t left = ar.remaining();
  if (static_cast<std::uint64_t>(t.size) > left + unbacked_elements)
    throw cereal::Exception("a container of " + std::to_string(static_cast<std::uint64_t>(t.size)) +
                            " elements with " + std::to_string(left) + " bytes left to read");
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::BinaryData<T>& t) {
  ar.loadBinary(t.data, static_cast<std::size_t>(t.size));
}

// Containers cereal resizes to the announced count before reading a single element: a count
// backed by a byte each could still ask for count × sizeof(T) (a vector of 1 MiB arrays). These
// grow as their elements are read instead, so memory follows the bytes actually decoded.
// Same wire format as cereal's.

/// `n` elements appended to `c` one by one, each read in place; each charged unless `charged`
/// (all of them were, at once).
template <class Container>
void load_growing(BoundedInputArchive& ar, Container& c, cereal::size_type n, bool charged = false) {
  c.clear();
  for (cereal::size_type i = 0; i < n; ++i) {
    if (!charged) ar.charge(sizeof(typename Container::value_type));
    c.emplace_back();
    ar(c.back());
  }
}

template <class T, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::vector<T, A>& v) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    // Numbers are their bytes, read at once: all of them must be there.
    if (static_cast<std::uint64_t>(n) > ar.remaining() / sizeof(T))
      throw cereal::Exception("a vector of " + std::to_string(static_cast<std::uint64_t>(n)) + " numbers with " +
                              std::to_string(ar.remaining()) + " bytes left to read");
    v.resize(static_cast<std::size_t>(n));
    ar(cereal::binary_data(v.data(), static_cast<std::size_t>(n) * sizeof(T)));
  } else {
    // Room for every element at once when that takes at most 16 times the bytes left (not the
    // budget's 64 MiB of slack: a few hostile bytes never reserve more than a few hundred), as
    // cereal does: no moves as the vector grows (a vector of 10,000 small structs decoded in
    // 1.37x cereal's time, 1.0x with this; docs/benchmarks.md). Reserved, not touched.
    const bool whole =
        static_cast<std::uint64_t>(n) <= 16 * ar.remaining() / sizeof(T) && ar.try_charge(n, sizeof(T));
    v.clear();
    v.reserve(static_cast<std::size_t>(whole ? n : std::min<cereal::size_type>(n, 64)));
    load_growing(ar, v, n, whole);
  }
}

template <class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::vector<bool, A>& v) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  v.clear();
  for (cereal::size_type i = 0; i < n; ++i) {
    bool b = false;
    ar(b);
    v.push_back(b);
  }
}

template <class T, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::deque<T, A>& d) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  load_growing(ar, d, n);
}

template <class T, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::list<T, A>& l) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  load_growing(ar, l, n);
}

/// An unordered container's elements, inserted as they are read (cereal reserves the announced
/// count first); with unique keys, none in a bucket of more than max_bucket_keys (a multi
/// container keeps equal keys in one bucket, and finds them there at once). `insert` reads one
/// element, inserts it and returns its key.
template <bool unique, class Container, class Insert>
void load_unordered(BoundedInputArchive& ar, Container& c, Insert insert) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  c.clear();
  for (cereal::size_type i = 0; i < n; ++i) {
    ar.charge(sizeof(typename Container::value_type) + 2 * sizeof(void*));
    const auto& key = insert();
    if (unique && c.bucket_size(c.bucket(key)) > max_bucket_keys)
      throw cereal::Exception("a result's keys collide in one bucket of its hash table");
  }
}

template <class K, class V, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::unordered_map<K, V, H, E, A>& m) {
  load_unordered<true>(ar, m, [&]() -> const K& {
    K k{};
    V v{};
    ar(cereal::make_map_item(k, v));
    return m.emplace(std::move(k), std::move(v)).first->first;
  });
}

template <class K, class V, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::unordered_multimap<K, V, H, E, A>& m) {
  load_unordered<false>(ar, m, [&]() -> const K& {
    K k{};
    V v{};
    ar(cereal::make_map_item(k, v));
    return m.emplace(std::move(k), std::move(v))->first;
  });
}

template <class K, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::unordered_set<K, H, E, A>& s) {
  load_unordered<true>(ar, s, [&]() -> const K& {
    K k{};
    ar(k);
    return *s.emplace(std::move(k)).first;
  });
}

template <class K, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::unordered_multiset<K, H, E, A>& s) {
  load_unordered<false>(ar, s, [&]() -> const K& {
    K k{};
    ar(k);
    return *s.emplace(std::move(k));
  });
}

/// Decodes with `Bounded` when T can be loaded by it, else with cereal's BinaryInputArchive.
template <class T>
using ResultArchive = std::conditional_t<cereal::traits::is_input_serializable<T, BoundedInputArchive>::value,
                                         BoundedInputArchive, cereal::BinaryInputArchive>;

}  // namespace ferry::detail

CEREAL_REGISTER_ARCHIVE(ferry::detail::BoundedInputArchive)

// What a save_minimal / load_minimal pair is checked against: the binary output archive.
namespace cereal::traits::detail {
template <>
struct get_output_from_input<ferry::detail::BoundedInputArchive> {
  using type = cereal::BinaryOutputArchive;
};
}  // namespace cereal::traits::detail
