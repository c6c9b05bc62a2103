// SPDX-License-Identifier: BSD-3-Clause
// How arguments and results travel: cereal's binary archive over ferry's own buffers.
#pragma once

#include <cstddef>
#include <cstring>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <streambuf>
#include <string_view>
#include <type_traits>
#include <utility>

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

/// A growable byte buffer that does not zero what it allocates (a received 80 MB frame is written
/// once, by recv, not twice).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(const Buffer& o) { append(o.data(), o.size()); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) {
      size_ = 0;
      append(o.data(), o.size());
    }
    return *this;
  }
  Buffer(Buffer&& o) noexcept
      : data_(std::move(o.data_)), size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    data_ = std::move(o.data_);
    size_ = std::exchange(o.size_, 0);
    capacity_ = std::exchange(o.capacity_, 0);
    return *this;
  }

  char* data() noexcept { return data_.get(); }
  const char* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  std::string_view view() const noexcept { return {data_.get(), size_}; }

  void reserve(std::size_t n) {
    if (n <= capacity_) return;
    std::size_t cap = capacity_ ? capacity_ : 256;
    while (cap < n) cap += cap / 2 + 64;
    std::unique_ptr<char[]> next(new char[cap]);
    if (size_) std::memcpy(next.get(), data_.get(), size_);
    data_ = std::move(next);
    capacity_ = cap;
  }
  /// Grows or shrinks the size; new bytes are uninitialised.
  void resize(std::size_t n) {
    reserve(n);
    size_ = n;
  }
  void append(const void* p, std::size_t n) {
    if (n == 0) return;
    reserve(size_ + n);
    std::memcpy(data_.get() + size_, p, n);
    size_ += n;
  }
  void clear() noexcept { size_ = 0; }
  /// Drops the storage when it is much larger than what is needed (after a big frame).
  void shrink_to(std::size_t keep) {
    if (capacity_ > keep && size_ <= keep) {
      Buffer b;
      b.append(data(), size_);
      *this = std::move(b);
    }
  }
  /// Removes the first n bytes.
  void consume(std::size_t n) noexcept {
    if (n >= size_) {
      size_ = 0;
      return;
    }
    std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n;
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

/// std::streambuf that appends to a Buffer: what cereal writes into.
class BufferWriter final : public std::streambuf {
 public:
  explicit BufferWriter(Buffer& b) : buffer_(&b) {}

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    buffer_->append(s, static_cast<std::size_t>(n));
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      char ch = traits_type::to_char_type(c);
      buffer_->append(&ch, 1);
    }
    return traits_type::not_eof(c);
  }

 private:
  Buffer* buffer_;
};

/// std::streambuf reading a byte range in place: what cereal reads from.
class MemoryReader final : public std::streambuf {
 public:
  MemoryReader(const char* data, std::size_t size) {
    char* p = const_cast<char*>(data);  // NOLINT: get area is never written through
    setg(p, p, p + size);
  }
  std::size_t consumed() const noexcept { return static_cast<std::size_t>(gptr() - eback()); }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
};

/// A stream of this thread pointed at a streambuf for the scope: constructing a std::ostream or
/// std::istream (its locale) costs more than encoding a small value, so each thread keeps one. A
/// nested use (a serialize() that itself encodes) gets a stream of its own.
template <class Stream>
class StreamLease {
 public:
  explicit StreamLease(std::streambuf* sb) {
    Slot& slot = tls();
    if (!slot.busy) {
      slot.busy = true;
      borrowed_ = true;
      stream_ = &slot.stream;
      stream_->rdbuf(sb);  // also clears the state flags
    } else {
      own_.emplace(sb);
      stream_ = &*own_;
    }
  }
  ~StreamLease() {
    if (borrowed_) {
      stream_->rdbuf(nullptr);
      tls().busy = false;
    }
  }
  StreamLease(const StreamLease&) = delete;
  StreamLease& operator=(const StreamLease&) = delete;
  Stream& operator*() noexcept { return *stream_; }

 private:
  struct Slot {
    Stream stream{nullptr};
    bool busy = false;
  };
  static Slot& tls() {
    thread_local Slot slot;
    return slot;
  }
  Stream* stream_ = nullptr;
  std::optional<Stream> own_;
  bool borrowed_ = false;
};
using OutputStreamLease = StreamLease<std::ostream>;
using InputStreamLease = StreamLease<std::istream>;

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
  /// The bytes so far; the encoder must not be used afterwards.
  Buffer take() { return std::move(buffer_); }

 private:
  Buffer buffer_;
  BufferWriter writer_;
  std::ostream os_;
  OutputArchive ar_;
};

/// Decodes one T from the bytes; throws cereal::Exception (or the type's own) on bad bytes, and
/// when bytes are left over.
template <class T>
T decode_value(std::string_view bytes) {
  MemoryReader reader(bytes.data(), bytes.size());
  InputStreamLease is(&reader);
  InputArchive ar(*is);
  T value{};
  ar(value);
  if (reader.remaining() != 0)
    throw cereal::Exception("trailing bytes after the value: " + std::to_string(reader.remaining()));
  return value;
}

}  // namespace detail
}  // namespace ferry
