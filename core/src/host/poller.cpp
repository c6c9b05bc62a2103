// SPDX-License-Identifier: BSD-3-Clause
#include "host/poller.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "platform/debug.hpp"

namespace ferry::detail {

namespace {
/// A registration's epoll data: the worker's serial, the tag in the low three bits.
std::uint64_t key(std::uint64_t serial, Poller::Tag tag) {
  return (serial << 3) | static_cast<std::uint64_t>(tag);
}
}  // namespace

Poller::Poller()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_ || !wake_fd_) throw std::system_error(errno, std::generic_category(), "ferry: epoll");
  add(wake_fd_.get(), 0, Tag::wake);
}

std::uint32_t Poller::events_of(Tag tag, bool on) {
  switch (tag) {
    // One-shot: whoever gets the event owns the channel until it re-arms it (ChannelLease).
    case Tag::read: return on ? (EPOLLIN | EPOLLRDHUP | EPOLLONESHOT) : EPOLLONESHOT;
    case Tag::write: return on ? (EPOLLOUT | EPOLLONESHOT) : EPOLLONESHOT;
    case Tag::wake:
    case Tag::exit:
    case Tag::memory: return EPOLLIN;
  }
  return EPOLLIN;
}

bool Poller::add(int fd, std::uint64_t serial, Tag tag, bool armed) {
  epoll_event ev{};
  ev.events = events_of(tag, armed);
  ev.data.u64 = key(serial, tag);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0) return true;
  debug_log("epoll_ctl ADD %d: %s", fd, std::strerror(errno));
  return false;
}

bool Poller::arm(int fd, std::uint64_t serial, Tag tag, bool on) {
  epoll_event ev{};
  ev.events = events_of(tag, on);
  ev.data.u64 = key(serial, tag);
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Poller::remove(int fd) {
  if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void Poller::wake() {
  std::uint64_t one = 1;
  ssize_t r = ::write(wake_fd_.get(), &one, sizeof one);
  (void)r;  // EAGAIN: the counter is already non-zero, the waiter is woken anyway
}

int Poller::wait(Event* out, int max, int timeout_ms) {
  epoll_event events[64];
  int n = ::epoll_wait(epoll_.get(), events, std::min(max, 64), timeout_ms);
  if (n < 0) {
    if (errno != EINTR) debug_log("epoll_wait: %s", std::strerror(errno));
    return 0;
  }
  int stored = 0;
  for (int i = 0; i < n; ++i) {
    std::uint64_t k = events[i].data.u64;
    auto tag = static_cast<Tag>(k & 7);
    if (tag == Tag::wake) {
      std::uint64_t v;
      while (::read(wake_fd_.get(), &v, sizeof v) > 0) {
      }
      continue;
    }
    out[stored++] = Event{k >> 3, tag};
  }
  return stored;
}

}  // namespace ferry::detail
