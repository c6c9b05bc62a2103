// SPDX-License-Identifier: BSD-3-Clause
// Shared-memory rings between an MPI agent and its worker: each direction a byte stream (the
// same frames as on their socket) with one producer and one consumer. The socket stays: it
// carries descriptors (a shared payload's memfd, sent before the frame's bytes), the agent's
// doorbell and each side's end.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"

namespace ferry::detail {

/// The shared control words of one direction. Either process may write any of them (the worker
/// runs untrusted code): each side keeps its own index privately and only publishes it here.
struct alignas(64) RingControl {
  std::atomic<std::uint64_t> head;  // bytes written so far (the producer's)
  char pad0[56];
  std::atomic<std::uint64_t> tail;  // bytes read so far (the consumer's)
  char pad1[56];
  std::atomic<std::uint32_t> data_seq;          // bumped after bytes are written (a futex word)
  std::atomic<std::uint32_t> consumer_waiting;  // the consumer sleeps until data_seq moves
  std::atomic<std::uint32_t> space_seq;         // bumped after bytes are read (a futex word)
  std::atomic<std::uint32_t> producer_waiting;  // the producer sleeps until space_seq moves
  char pad2[48];
};

/// One direction, as one side sees it. Indices read from the shared words are checked before
/// use: a peer that scribbles on them makes write()/read() return -1 (corrupt), never an access
/// outside the ring.
class FERRY_INTERNAL_API Ring {
 public:
  Ring() = default;
  Ring(RingControl* control, char* data, std::size_t capacity) noexcept
      : control_(control), data_(data), capacity_(capacity) {}
  explicit operator bool() const noexcept { return control_ != nullptr; }

  /// Producer: copies what fits of `n` bytes; the count copied, or -1 when the consumer's index
  /// is impossible.
  long write(const char* p, std::size_t n) noexcept;
  /// Consumer: copies up to `n` bytes out; the count, or -1 when the producer's index is
  /// impossible.
  long read(char* p, std::size_t n) noexcept;
  /// Consumer: whether nothing is there to read (an impossible index counts as something: the
  /// next read says -1).
  bool empty() const noexcept;

  /// Producer, after writing: bumps the data word and wakes a consumer asleep on it (futex).
  void wake_consumer() noexcept;
  /// Consumer, after reading: bumps the space word and wakes a producer asleep on it (futex).
  void wake_producer() noexcept;
  /// Whether the other side says it sleeps (it then needs waking: futex or doorbell).
  bool consumer_waits() const noexcept;
  bool producer_waits() const noexcept;
  /// Consumer: sleeps (futex) until bytes come or `ms` pass; returns at once when some are
  /// there. Spurious returns are fine: callers look again.
  void wait_for_data(int ms) noexcept;
  /// Producer: sleeps until the consumer reads or `ms` pass; at once when there is room.
  void wait_for_space(int ms) noexcept;
  /// The flag without the sleep, for a side that sleeps elsewhere (the agent, in poll): set
  /// before the last look, cleared after the sleep.
  void set_consumer_waiting(bool on) noexcept;
  void set_producer_waiting(bool on) noexcept;
  /// Producer: whether a write would take a byte now (a corrupt index counts as room: the next
  /// write says -1).
  bool has_room() const noexcept;

 private:
  RingControl* control_ = nullptr;
  char* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::uint64_t mine_ = 0;  // this side's index: head for the producer, tail for the consumer
};

/// The mapping of both directions: [control to worker][data][control to agent][data], in a
/// memfd the agent creates and passes to its worker (`--rings 1`).
class FERRY_INTERNAL_API SharedRings {
 public:
  static constexpr std::size_t default_capacity = 256 * 1024;
  SharedRings() = default;
  /// A new memfd with both rings of `capacity` bytes each, mapped. @throws std::system_error
  static SharedRings create(std::size_t capacity = default_capacity);
  /// Maps the rings the agent created (the worker's side). @throws std::system_error, also when
  /// the memfd has not the size the rings need.
  static SharedRings map(int fd, std::size_t capacity = default_capacity);
  SharedRings(SharedRings&& o) noexcept;
  SharedRings& operator=(SharedRings&& o) noexcept;
  SharedRings(const SharedRings&) = delete;
  SharedRings& operator=(const SharedRings&) = delete;
  ~SharedRings();

  explicit operator bool() const noexcept { return base_ != nullptr; }
  int fd() const noexcept { return fd_.get(); }
  /// Closes this side's descriptor, keeping the mapping: once the worker has its copy, the agent's
  /// open memfd would let any process of the user open it through /proc/PID/fd and write frames
  /// into the rings (a socket cannot be opened that way).
  void drop_descriptor() noexcept { fd_.reset(); }
  /// Fresh views (own indices at 0) of each direction; take each once per side.
  Ring to_worker() const noexcept;
  Ring to_agent() const noexcept;
  static std::size_t map_size(std::size_t capacity) noexcept {
    return 2 * (sizeof(RingControl) + capacity);
  }

 private:
  Fd fd_;
  void* base_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace ferry::detail
