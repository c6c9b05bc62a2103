// SPDX-License-Identifier: BSD-3-Clause
// Host and worker side of serialization: values encoded into a Buffer, decoded from bytes.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <ferry/detail/bounded_archive.hpp>
#include <ferry/detail/buffer.hpp>
#include <ferry/detail/streams.hpp>
#include <ferry/serialization.hpp>

namespace ferry::detail {

/// A number that cereal's binary archive writes as its bytes in memory (sizeof(T) of them, this
/// machine's order): ferry may copy such values in bulk and the bytes stay exactly cereal's. Not
/// bool (one byte that must be 0 or 1 to read back) and not long double (padding bytes).
template <class T>
concept raw_arithmetic = std::is_arithmetic_v<T> && !std::is_same_v<T, bool> &&
                         !std::is_same_v<T, long double>;

/// Appends the binary encoding of every value to `out`.
template <class... Ts>
void encode_values(Buffer& out, const Ts&... values) {
  if constexpr (sizeof...(Ts) > 0) {
    BufferWriter writer(out);
    OutputStreamLease os(&writer);
    OutputArchive ar(*os);
    ar(values...);
  }
}

/// Encodes many values into one buffer through one archive: a map chunk costs one stream and one
/// archive, not one per element. Not movable (the stream points into it).
class Encoder {
 public:
  Encoder() : writer_(buffer_), os_(&writer_), ar_(os_) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  template <class... Ts>
  void operator()(const Ts&... values) {
    if constexpr (sizeof...(Ts) > 0) ar_(values...);
  }
  /// Bytes written so far (the stream writes straight into the buffer).
  std::size_t size() const noexcept { return buffer_.size(); }
  /// Appends one number as cereal's binary archive writes it (its bytes, as in memory) without
  /// going through the archive and its stream: a map over numbers encodes a chunk of 1000 in a
  /// fraction of the time (docs/benchmarks.md).
  template <class P>
    requires raw_arithmetic<P>
  void arithmetic(P v) {
    buffer_.append_small(&v, sizeof v);
  }
  /// Room for `n` more bytes.
  void reserve(std::size_t n) { buffer_.reserve(buffer_.size() + n); }
  /// Appends one raw byte (a count ahead of the values).
  void byte(std::uint8_t b) { buffer_.append(reinterpret_cast<const char*>(&b), 1); }
  /// Appends bytes encoded elsewhere.
  void raw(const Buffer& bytes) { buffer_.append(bytes.data(), bytes.size()); }
  /// Drops what was written after `size` (a value whose encoding threw half-way).
  void truncate(std::size_t size) { buffer_.resize(size); }
  /// The bytes so far; the encoder must not be used afterwards.
  Buffer take() { return std::move(buffer_); }

 private:
  Buffer buffer_;
  BufferWriter writer_;
  std::ostream os_;
  OutputArchive ar_;
};

/// Decodes one T from the bytes (a worker's: with ResultArchive, which checks container sizes
/// against the bytes left); throws cereal::Exception (or the type's own) on bad bytes, and when
/// bytes are left over.
template <class T>
T decode_value(std::string_view bytes) {
  MemoryReader reader(bytes.data(), bytes.size());
  InputStreamLease is(&reader);
  ResultArchive<T> ar(*is);
  T value{};
  ar(value);
  if (reader.remaining() != 0)
    throw cereal::Exception("trailing bytes after the value: " + std::to_string(reader.remaining()));
  return value;
}

}  // namespace ferry::detail
