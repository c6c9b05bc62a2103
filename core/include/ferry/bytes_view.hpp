// SPDX-License-Identifier: BSD-3-Clause
// BytesView: a task parameter that receives bytes without copying them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>

#include <ferry/detail/streams.hpp>

namespace ferry {

namespace detail {
class BoundedInputArchive;  // detail/bounded_archive.hpp: how the host reads a worker's results
/// The element type of a range that std::ranges::data accepts (a contiguous one). Spelt with the
/// range access of <iterator> rather than <ranges>' concepts: <ranges> would add about 3,800
/// lines to every plugin's translation unit for this one constructor.
template <class R>
using contiguous_element_t =
    std::remove_cvref_t<decltype(*std::ranges::data(std::declval<const R&>()))>;
}  // namespace detail

/**
@brief Read-only bytes that travel like a `std::vector<char>` or `std::string` (same encoding),
but arrive in a task without a copy: as a task parameter, a BytesView points straight into the
argument message, which above FERRY_SHM_THRESHOLD is the shared memory the host encoded it into.
It is valid for the duration of the call; copy what must outlive it.

The host passes any contiguous range of bytes (`std::vector<char>`, `std::string`,
`std::array<unsigned char, N>`, `std::span<const std::byte>`...) or a string literal (its bytes up
to the NUL; a `const char*` converts explicitly only), which is encoded (one copy, into the shared
memory) when submitted:
@code
std::uint64_t checksum(ferry::BytesView data);  // FERRY_TASK(checksum) in a plugin
ex.submit(checksum, big_vector).get();           // by function: converted for you
ex.submit<std::uint64_t>("checksum", ferry::BytesView(big_vector)).get();  // by name
@endcode
A task may not return one to the host (the view would outlive the message it points into: a
static_assert says so); return `std::vector<char>` or `std::string`. Through the JSON interface
(`ferry run`) it is a JSON string, which the view holds a copy of.
*/
class BytesView {
 public:
  BytesView() = default;
  BytesView(const void* data, std::size_t size) noexcept
      : data_(static_cast<const char*>(data)), size_(size) {}
  BytesView(std::string_view s) noexcept : data_(s.data()), size_(s.size()) {}  // NOLINT: implicit
  /// A string literal's bytes, without its NUL: those of a char array up to its first NUL, never
  /// past its end (`ex.submit(checksum, "text")` sends four bytes).
  template <std::size_t N>
  BytesView(const char (&s)[N]) noexcept  // NOLINT: implicit, as std::string_view from a literal
      : data_(s), size_(std::min(std::string_view(s, N).find('\0'), N)) {}
  /// A C string's bytes, without its NUL (none for a null pointer). Explicit: the bytes end at
  /// the first NUL, wherever that is, which a pointer to a byte buffer does not mean.
  explicit BytesView(const char* s) noexcept : data_(s), size_(s ? std::strlen(s) : 0) {}
  BytesView(std::nullptr_t) = delete;  // as std::string_view's (C++23)
  /// Any contiguous range of 1-byte elements (char, unsigned char, std::byte, ...).
  template <class R>
    requires(requires(const R& r) {
      std::ranges::data(r);
      std::ranges::size(r);
    } && sizeof(detail::contiguous_element_t<R>) == 1 &&
             std::is_trivially_copyable_v<detail::contiguous_element_t<R>> &&
             !std::is_array_v<R> && !std::is_same_v<std::remove_cvref_t<R>, BytesView>)
  BytesView(const R& range) noexcept  // NOLINT: implicit, as std::string_view from std::string
      : data_(reinterpret_cast<const char*>(std::ranges::data(range))), size_(std::ranges::size(range)) {}

  const char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const char* begin() const noexcept { return data_; }
  const char* end() const noexcept { return data_ + size_; }
  char operator[](std::size_t i) const noexcept { return data_[i]; }
  std::string_view view() const noexcept { return {data_, size_}; }

  /// Holds its own copy (what a non-binary archive decodes into).
  static BytesView owning(std::string bytes) {
    auto keep = std::make_shared<const std::string>(std::move(bytes));
    BytesView v(keep->data(), keep->size());
    v.owned_ = std::move(keep);
    return v;
  }

  friend bool operator==(const BytesView& a, const BytesView& b) noexcept { return a.view() == b.view(); }

 private:
  const char* data_ = nullptr;
  std::size_t size_ = 0;
  std::shared_ptr<const std::string> owned_;
};

// Binary archive: the size, then the bytes, exactly as std::vector<char> and std::string write them.
template <class Archive>
  requires std::is_same_v<Archive, cereal::BinaryOutputArchive>
void save(Archive& ar, const BytesView& v) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
  ar(cereal::binary_data(v.data(), v.size()));
}

template <class Archive>
  requires std::is_same_v<Archive, cereal::BinaryInputArchive> ||
           std::is_same_v<Archive, detail::BoundedInputArchive>
void load(Archive& ar, BytesView& v) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  // In place when the archive reads from this thread's current MemoryReader: the size it just
  // read must be the last bytes that reader handed out. Never in a result (the host's archive):
  // the value would point into a message freed with its future.
  if (auto* reader = detail::MemoryReader::current();
      !std::is_same_v<Archive, detail::BoundedInputArchive> && reader && reader->just_read(&n, sizeof n)) {
    const char* p = reader->take(static_cast<std::size_t>(n));
    if (!p) throw cereal::Exception("BytesView of " + std::to_string(n) + " bytes: the data is truncated");
    v = BytesView(p, static_cast<std::size_t>(n));
    return;
  }
  std::string copy(static_cast<std::size_t>(n), '\0');
  ar(cereal::binary_data(copy.data(), copy.size()));
  v = BytesView::owning(std::move(copy));
}

// Text archives (JSON: `ferry run`, submit_json): a plain string, held by the view.
template <class Archive>
  requires(!std::is_same_v<Archive, cereal::BinaryOutputArchive>)
std::string save_minimal(const Archive&, const BytesView& v) {
  return std::string(v.view());
}

template <class Archive>
  requires(!std::is_same_v<Archive, cereal::BinaryInputArchive> &&
           !std::is_same_v<Archive, detail::BoundedInputArchive>)
void load_minimal(const Archive&, BytesView& v, const std::string& s) {
  v = BytesView::owning(s);
}

namespace detail {
/// What a host waits for must own its bytes: a BytesView would point into a freed message.
template <class R>
constexpr void require_owning_result() {
  static_assert(!std::is_same_v<std::remove_cvref_t<R>, BytesView>,
                "ferry: a task cannot return a ferry::BytesView to the host (it would point into a "
                "message that is gone): return std::vector<char> or std::string");
}
}  // namespace detail

}  // namespace ferry
