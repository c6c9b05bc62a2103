// SPDX-License-Identifier: BSD-3-Clause
// The streams cereal's binary archive reads and writes through: an in-place reader of a byte
// range, and a per-thread stream leased for one encoding or decoding. Used on both sides of the
// plugin boundary: by the entry points FERRY_TASK generates, and by the host and the worker.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <istream>
#include <optional>
#include <ostream>
#include <streambuf>

namespace ferry::detail {

/// std::streambuf reading a byte range in place: what cereal reads from. The reader most recently
/// made on a thread, and still alive, is that thread's current() one: the one the binary archive
/// in scope reads from, which lets BytesView point into the bytes instead of copying them.
class MemoryReader final : public std::streambuf {
 public:
  MemoryReader(const char* data, std::size_t size) : previous_(current()) {
    char* p = const_cast<char*>(data);  // NOLINT: get area is never written through
    setg(p, p, p + size);
    current() = this;
  }
  ~MemoryReader() override { current() = previous_; }
  MemoryReader(const MemoryReader&) = delete;
  MemoryReader& operator=(const MemoryReader&) = delete;

  std::size_t consumed() const noexcept { return static_cast<std::size_t>(gptr() - eback()); }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
  /// The next `n` bytes, in place, and skips them; nullptr when fewer are left.
  const char* take(std::size_t n) noexcept {
    if (n > remaining()) return nullptr;
    const char* p = gptr();
    advance(static_cast<std::streamsize>(n));
    return p;
  }
  /// Whether the last bytes handed out by a read are `n` bytes equal to `bytes`, ending here.
  bool just_read(const void* bytes, std::size_t n) const noexcept {
    return last_end_ == gptr() && consumed() >= n && std::memcmp(gptr() - n, bytes, n) == 0;
  }
  static MemoryReader*& current() noexcept {
    thread_local MemoryReader* reader = nullptr;
    return reader;
  }

 protected:
  // cereal reads every value through sgetn: one bounded copy, no generic loop.
  std::streamsize xsgetn(char* s, std::streamsize n) override {
    std::streamsize take = std::min<std::streamsize>(n, egptr() - gptr());
    if (take <= 0) return 0;
    std::memcpy(s, gptr(), static_cast<std::size_t>(take));
    advance(take);
    last_end_ = gptr();
    return take;
  }

 private:
  // gbump takes an int: advance in steps, so that reads past 2 GiB work too.
  void advance(std::streamsize n) {
    for (std::streamsize left = n; left > 0;) {
      int step = static_cast<int>(std::min<std::streamsize>(left, 1 << 30));
      gbump(step);
      left -= step;
    }
  }
  MemoryReader* previous_;
  const char* last_end_ = nullptr;
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

}  // namespace ferry::detail
