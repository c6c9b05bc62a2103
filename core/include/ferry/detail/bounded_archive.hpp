// SPDX-License-Identifier: BSD-3-Clause
// The archive the host decodes results with: cereal's binary format, and a worker's bytes
// distrusted (issue: a hostile worker must not crash its host).
#pragma once

#include <cstdint>
#include <memory>
#include <streambuf>
#include <string>
#include <type_traits>

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>

namespace ferry::detail {

/// Elements a container may announce beyond the bytes left to read: those of a type that
/// serializes to nothing (an empty struct). Past it, the host refuses the value.
inline constexpr std::uint64_t unbacked_elements = 1024;

/**
@brief cereal's binary input archive for what a worker sends its host (results): the same bytes,
read the same way, with one check more. cereal sizes a vector or a string from the element count
it reads (resized and zero-filled, then read), so eight bytes of a hostile worker's result could
make the host allocate and touch gigabytes. Here a count must be backed by the bytes left in the
message (every element takes at least one, past the first unbacked_elements), else decoding throws
cereal::Exception, which the future reports as a SerializationError. Types that load only through
cereal::BinaryInputArchive itself (a non-template load) are decoded with that, unchecked.
*/
class BoundedInputArchive
    : public cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit BoundedInputArchive(std::istream& stream)
      : cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision>(this),
        buffer_(*stream.rdbuf()) {}

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

 private:
  std::streambuf& buffer_;
};

template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
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
