// SPDX-License-Identifier: BSD-3-Clause
// The manager's epoll set: every registration carries a worker serial and one of five tags.
#pragma once

#include <cstdint>

#include "platform/fd.hpp"

namespace ferry::detail {

class Poller {
 public:
  /// What a registration watches. The wake-up eventfd has serial 0.
  enum class Tag : std::uint8_t {
    wake = 0,   // the eventfd other threads write to wake the manager
    read = 1,   // a worker's channel is readable (EPOLLONESHOT: see ChannelLease)
    write = 2,  // a worker's channel has room again (armed only while its outbox is not empty)
    exit = 3,   // a worker has ended (its pidfd, or the launcher's exit descriptor)
    memory = 4, // a sandboxed worker's memory cgroup notified (host/containment.hpp)
  };
  struct Event {
    std::uint64_t serial = 0;
    Tag tag = Tag::wake;
  };

  /// @throws std::system_error when epoll or the eventfd cannot be created.
  Poller();

  /// Registers `fd` for worker `serial`. The channel's read and write registrations start
  /// disarmed unless `armed`. False (logged) when epoll refused it.
  bool add(int fd, std::uint64_t serial, Tag tag, bool armed = true);
  /// Re-arms a one-shot read or write registration (`on`), or disarms it.
  bool arm(int fd, std::uint64_t serial, Tag tag, bool on);
  void remove(int fd);

  /// Wakes the thread in wait() (async-signal-safe, never blocks).
  void wake();
  /// Waits up to `timeout_ms` (-1: no limit) and fills `out`; wake-ups are consumed here and
  /// not reported. Returns how many events were stored.
  int wait(Event* out, int max, int timeout_ms);

 private:
  static std::uint32_t events_of(Tag tag, bool on);
  Fd epoll_;
  Fd wake_fd_;
};

}  // namespace ferry::detail
