// SPDX-License-Identifier: BSD-3-Clause
#include "platform/fd.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ferry::detail {

namespace {

struct Closer {
  std::mutex mu;
  std::condition_variable more;
  std::vector<int> fds;
  pid_t started_in = 0;  // the process whose thread closes them (a forked child has none)
};

// Never destroyed: the thread may be inside close() while static objects are torn down at exit.
Closer& closer() {
  static Closer* c = new Closer;
  return *c;
}

void close_loop(Closer& c) {
  std::unique_lock lock(c.mu);
  for (;;) {
    c.more.wait(lock, [&] { return !c.fds.empty(); });
    std::vector<int> now;
    now.swap(c.fds);
    lock.unlock();
    for (int fd : now) ::close(fd);
    lock.lock();
  }
}

}  // namespace

void keep_standard_descriptors_open() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // The lowest free descriptor: this one, as those below it are open now.
    const int opened = ::open("/dev/null", O_RDWR);
    if (opened >= 0 && opened != fd) ::close(opened);  // taken meanwhile by another thread
  }
}

void close_in_background(int fd) noexcept {
  if (fd < 0) return;
  Closer& c = closer();
  {
    std::lock_guard lock(c.mu);
    try {
      if (c.started_in != ::getpid()) {
        std::thread([&c] {
          ::pthread_setname_np(::pthread_self(), "ferry-closer");
          close_loop(c);
        }).detach();
        c.started_in = ::getpid();
      }
      c.fds.push_back(fd);
      fd = -1;
    } catch (...) {
      // No thread or no memory: closed here, outside the lock (this may block this caller only).
    }
  }
  if (fd >= 0) {
    ::close(fd);
    return;
  }
  c.more.notify_one();
}

}  // namespace ferry::detail
