// SPDX-License-Identifier: BSD-3-Clause
// An owned file descriptor.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

namespace ferry::detail {

/// Owned file descriptor (closed on destruction; EINTR on close is not retried, as on Linux).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// Closes `fd` on a thread of its own (started at the first call, then kept), never blocking the
/// caller. For a descriptor a peer sent, or a socket that may still hold ones it sent: the last
/// close of a TCP socket with SO_LINGER and unread data waits out the linger time, of a FUSE file
/// its server's FLUSH; either could stop the thread that reads a worker for ever. What waits to be
/// closed while that thread is stuck stays open; at exit the kernel closes it (a lingering socket
/// then lingers in the background). Not exported: wire/channel.cpp is its only user.
void close_in_background(int fd) noexcept;

/// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed. A host started with them
/// closed gave them to the pool's own descriptors (its epoll, a worker's channel): what it then
/// wrote to stderr (FERRY_DEBUG's log too) went into a worker's channel, which the worker took
/// for a protocol error, and the host died of SIGPIPE at its next write. Called before an
/// executor makes any descriptor.
void keep_standard_descriptors_open() noexcept;

/// Writes all of `bytes` to a blocking descriptor (EINTR retried); false on an error.
inline bool write_all(int fd, std::string_view bytes) {
  for (std::size_t at = 0; at < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace ferry::detail
