// SPDX-License-Identifier: BSD-3-Clause
// The transport's byte buffer (heap below a threshold, a memfd above it) and the streambuf cereal
// writes into. Host and worker side: a plugin's entry points never touch a Buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <streambuf>
#include <string_view>
#include <utility>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// Where large buffers come from: shared memory (a memfd), so that a large argument or result
/// is encoded straight into memory the peer maps, instead of being copied through the socket.
/// libferry provides it (hosts and workers link it); code without libferry (a plugin on its own)
/// sees none and uses the heap. A block's pages are allocated when first written, not when the
/// block is made (issue 10): capacity beyond what is written costs address space only, and a
/// large append goes through `write`.
struct BlockAllocator {
  std::size_t threshold;  ///< buffers that grow to this size move to shared memory
  /// A block of at least `n` bytes: its address, capacity and memfd. A fresh block has no pages
  /// yet; a recycled one keeps its resident pages.
  char* (*allocate)(std::size_t n, std::size_t& capacity, int& fd);
  /// Grows a block in place or by moving it (the new part has no pages yet); returns the new address.
  char* (*grow)(char* data, std::size_t old_capacity, std::size_t n, std::size_t& capacity, int fd);
  /// Releases a block: kept for reuse, unless it was given to a peer (then unmapped and closed).
  void (*release)(char* data, std::size_t capacity, int fd, bool given_away);
  /// Allocates the pages of [from, to) of a mapped block in one call, for bytes about to be
  /// written through the mapping (one call instead of one fault per 4 KiB page).
  void (*populate)(char* data, std::size_t from, std::size_t to);
  /// Copies `n` bytes to offset `at` of a block. A block too large to be recycled gets them with
  /// write(2) on its memfd: its fresh pages are allocated and filled in one go, where a store
  /// through the mapping would have the kernel zero each page first, and no page tables are set
  /// up in this process. Others are filled through the mapping, so that their next use is a
  /// plain memcpy. Throws std::bad_alloc when the memory cannot be had.
  void (*write)(char* data, std::size_t capacity, int fd, std::size_t at, const void* bytes,
                std::size_t n);
};
/// The allocator in effect; weak, so that a library without libferry links (and gets nullptr).
FERRY_API __attribute__((weak)) const BlockAllocator* large_block_allocator() noexcept;

/// A growable byte buffer that does not zero what it allocates (a received 80 MB frame is written
/// once, by recv, not twice). Past BlockAllocator::threshold it lives in shared memory: `fd()`
/// then names a memfd holding its bytes, which can be handed to another process. It may also be
/// a read-only mapping of a peer's memfd (`map_shared`).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(const Buffer& o) { append(o.data(), o.size()); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) {
      size_ = 0;
      append(o.data(), o.size());  // a mapped buffer becomes one of ours first (grow_to)
    }
    return *this;
  }
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)), fd_(std::exchange(o.fd_, -1)),
        kind_(std::exchange(o.kind_, Kind::heap)), given_away_(std::exchange(o.given_away_, false)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
      fd_ = std::exchange(o.fd_, -1);
      kind_ = std::exchange(o.kind_, Kind::heap);
      given_away_ = std::exchange(o.given_away_, false);
    }
    return *this;
  }
  ~Buffer() { release(); }

  /// A read-only view of `size` (> 0) bytes of a peer's memfd (taking ownership of `fd`, closed
  /// once mapped). Throws std::runtime_error unless `fd` is a memfd sealed against shrinking.
  FERRY_INTERNAL_API static Buffer map_shared(int fd, std::size_t size);

  char* data() noexcept { return data_; }
  const char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  std::string_view view() const noexcept { return {data_, size_}; }
  /// The memfd holding the bytes, or -1 for a heap buffer.
  int fd() const noexcept { return fd_; }
  /// The bytes were handed to another process: never reuse this block's memory.
  void give_away() noexcept { given_away_ = true; }

  /// Room for `n` bytes; those past size() are about to be written through data(), so a block in
  /// shared memory gets their pages now.
  void reserve(std::size_t n) { grow_to(n, true); }
  /// Grows or shrinks the size; new bytes are uninitialised.
  void resize(std::size_t n) {
    reserve(n);
    size_ = n;
  }
  void append(const void* p, std::size_t n) {
    if (n == 0) return;
    if (n >= write_through_bytes && append_through_fd(p, n)) return;
    reserve(size_ + n);
    std::memcpy(data_ + size_, p, n);
    size_ += n;
  }
  /// append() of a few bytes (a number in a map chunk): a copy and nothing else when they fit.
  void append_small(const void* p, std::size_t n) {
    if (kind_ != Kind::mapped && size_ + n <= capacity_) {
      std::memcpy(data_ + size_, p, n);
      size_ += n;
    } else {
      append(p, n);
    }
  }
  /// Appends of this many bytes or more to a buffer in shared memory go through
  /// BlockAllocator::write, which picks how to fill the pages.
  static constexpr std::size_t write_through_bytes = std::size_t{256} << 10;
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
    std::memmove(data_, data_ + n, size_ - n);
    size_ -= n;
  }

 private:
  enum class Kind : unsigned char { heap, shared, mapped };
  void release() noexcept;

  static const BlockAllocator* shared_allocator() noexcept {
    return large_block_allocator ? large_block_allocator() : nullptr;
  }
  /// Capacity for at least `n` bytes: geometric for appends that creep up (amortised), exactly
  /// `n` for a jump (one 2 GB value must not reserve 3 GB). With `populate`, a block in shared
  /// memory gets the pages of [size(), n) at once.
  void grow_to(std::size_t n, bool populate) {
    if (kind_ == Kind::mapped) {
      // A peer's read-only memory: its bytes move to a buffer of ours, and the mapping goes
      // (an append or a copy assigned into it freed the mapping with delete[] and wrote past it).
      Buffer own;
      own.reserve(std::max(n, size_));
      own.append(data_, size_);
      *this = std::move(own);
      return;
    }
    if (n <= capacity_) return;
    std::size_t cap = std::max(n, capacity_ ? capacity_ + capacity_ / 2 + 64 : std::size_t{256});
    const BlockAllocator* shared = shared_allocator();
    if (kind_ == Kind::shared) {
      data_ = shared->grow(data_, capacity_, cap, capacity_, fd_);
    } else if (shared && cap >= shared->threshold && kind_ == Kind::heap) {
      std::size_t got = 0;
      int fd = -1;
      char* next = shared->allocate(cap, got, fd);
      if (!next) return grow_on_heap(cap);
      if (size_) shared->write(next, got, fd, 0, data_, size_);
      delete[] data_;
      data_ = next;
      capacity_ = got;
      fd_ = fd;
      kind_ = Kind::shared;
    } else {
      return grow_on_heap(cap);
    }
    if (populate && n > size_) shared->populate(data_, size_, n);
  }
  void grow_on_heap(std::size_t cap) {
    char* next = new char[cap];
    if (size_) std::memcpy(next, data_, size_);
    delete[] data_;
    data_ = next;
    capacity_ = cap;
  }
  /// A large append to a buffer that is (or now moves) in shared memory, by
  /// BlockAllocator::write: a 2 GB value is written once into fresh pages instead of the kernel
  /// zeroing them first (issue 10). False when the buffer stays on the heap.
  bool append_through_fd(const void* p, std::size_t n) {
    const BlockAllocator* shared = shared_allocator();
    if (!shared || kind_ == Kind::mapped) return false;
    if (kind_ == Kind::heap && size_ + n < shared->threshold) return false;
    grow_to(size_ + n, false);
    if (kind_ != Kind::shared) return false;  // no shared memory to be had: the heap it is
    shared->write(data_, capacity_, fd_, size_, p, n);
    size_ += n;
    return true;
  }

  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  int fd_ = -1;
  Kind kind_ = Kind::heap;
  bool given_away_ = false;
};

/// Unmaps and closes a peer's memfd mapping (libferry; weak for the same reason).
FERRY_API __attribute__((weak)) void unmap_shared(char* data, std::size_t capacity,
                                                   int fd) noexcept;

inline void Buffer::release() noexcept {
  switch (kind_) {
    case Kind::heap: delete[] data_; break;
    case Kind::shared: large_block_allocator()->release(data_, capacity_, fd_, given_away_); break;
    case Kind::mapped: unmap_shared(data_, capacity_, fd_); break;
  }
  data_ = nullptr;
  capacity_ = size_ = 0;
  fd_ = -1;
  kind_ = Kind::heap;
}

/// std::streambuf that appends to a Buffer: what cereal writes into.
class BufferWriter final : public std::streambuf {
 public:
  explicit BufferWriter(Buffer& b) : buffer_(&b) {}

 protected:
  // cereal writes every value through sputn; keep the common case (room left) short.
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n <= 0) return 0;  // an empty vector hands over a null pointer
    auto len = static_cast<std::size_t>(n);
    std::size_t size = buffer_->size();
    if (size + len <= buffer_->capacity() && len < Buffer::write_through_bytes) {
      std::memcpy(buffer_->data() + size, s, len);
      buffer_->resize(size + len);
    } else {
      buffer_->append(s, len);
    }
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

}  // namespace ferry::detail
