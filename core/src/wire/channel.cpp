// SPDX-License-Identifier: BSD-3-Clause
// Channel plumbing: reading frames, sending without SIGPIPE, EINTR handled everywhere.
#include "wire/channel.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ferry::detail {

namespace {
constexpr std::size_t max_pending_fds = 16;

/// Room for one descriptor in a message's control data.
struct OneFd {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(int))];
};

/// Sends `fd` with `msg` (SCM_RIGHTS), if it is one; `control` must live until the sendmsg.
void attach_fd(msghdr& msg, OneFd& control, int fd) {
  if (fd < 0) return;
  msg.msg_control = control.bytes;
  msg.msg_controllen = sizeof control.bytes;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
}

/// Room for as many descriptors as one message can carry (SCM_MAX_FD): those that do not fit
/// the control buffer are closed by the kernel inside recvmsg, in the receiving thread, where a
/// close that waits (a lingering socket) would stop it.
constexpr std::size_t max_fds_per_message = 253;
struct Control {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(int) * max_fds_per_message)];
};

/// One recvmsg(2) of at most `n` bytes into `into` with every descriptor that came with them:
/// each one that is a memfd (a shmem file: it answers F_GET_SEALS, and its last close only frees
/// pages) goes to `keep`, anything else is closed by close_in_background and counted by `keep`
/// as -1. -1 with errno set, or the bytes read; `truncated` when the control data was cut.
template <class Keep>
ssize_t receive_with_descriptors(int fd, char* into, std::size_t n, int flags, Keep&& keep, bool& truncated) {
  iovec iov{into, n};
  Control control;
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t r;
  do {
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    r = ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  truncated = false;
  // A failed recvmsg leaves the control buffer as it was: parsing it would invent descriptors.
  if (r < 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (::fcntl(received, F_GET_SEALS) < 0) {
        close_in_background(received);
        received = -1;
      }
      keep(received);
    }
  }
  truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  return r;
}

}  // namespace

ssize_t discard_received(int fd, std::size_t max, int flags) {
  char sink[4096];
  bool truncated = false;
  return receive_with_descriptors(fd, sink, std::min(max, sizeof sink), flags,
                                  [](int received) {
                                    if (received >= 0) ::close(received);
                                  },
                                  truncated);
}

void close_channel(int fd) noexcept {
  if (fd < 0) return;
  // Shut down first: the peer (or a process it forked, which holds its end) can queue nothing
  // more, so what the loop below reads is all there is, and the close releases nothing.
  ::shutdown(fd, SHUT_RDWR);
  for (int i = 0; i < 4096 && discard_received(fd, 4096, MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(fd);
}

ssize_t FrameReader::receive(int fd, char* into, std::size_t n, int flags) {
  bool truncated = false;
  std::size_t came = 0;
  ssize_t r = receive_with_descriptors(fd, into, n, flags,
                                       [&](int received) {
                                         fds_.push_back(Received{Fd(received)});
                                         ++came;
                                       },
                                       truncated);
  if (r < 0) return r;
  // Only a memfd was kept; anything else took its place empty, so that the frame it came with
  // fails as one whose payload was refused.
  if (fds_.size() > max_pending_fds)
    throw protocol::ProtocolError("peer sent descriptors no frame announces");
  if (truncated) {
    // The control buffer holds what one message can carry (SCM_MAX_FD): cut, the kernel could
    // not install a descriptor here (this process at its RLIMIT_NOFILE) and dropped it and the
    // rest of its message. A ferry peer sends one descriptor per message, with the frame that
    // announces it: that frame's call fails. One that sent several in a message (some taken
    // here) cannot be paired with its frames any more.
    if (came > 0) throw protocol::ProtocolError("peer sent several descriptors in one message");
    fds_.push_back(Received{Fd(), true});
  }
  return r;
}

ssize_t FrameReader::collect(int fd, int flags, std::size_t max) {
  char scratch[256];
  return receive(fd, scratch, std::min(max, sizeof scratch), flags);
}

void FrameReader::claim_fd(Frame& out) {
  out.fd.reset();
  out.fd_lost = false;
  if (!(out.header.flags & protocol::flag_shm)) return;
  // Sent before the frame's bytes: on the socket by now, unless the peer did not send it (a
  // peer that keeps writing bytes without one is not read for ever).
  for (int i = 0; i < 64 && fds_.empty() && descriptor_source_ >= 0; ++i)
    if (collect(descriptor_source_, MSG_DONTWAIT) <= 0) break;
  if (fds_.empty()) throw protocol::ProtocolError("shared-payload frame without its descriptor");
  out.fd = std::move(fds_.front().fd);
  out.fd_lost = fds_.front().lost;
  fds_.pop_front();
  if (!out.fd && !out.fd_lost) throw protocol::ProtocolError("shared payload is not in a memfd");
}

ssize_t FrameReader::fill(int fd, int flags) {
  return fill([&](char* into, std::size_t n) { return receive(fd, into, n, flags); });
}

ssize_t FrameReader::fill(const std::function<ssize_t(char*, std::size_t)>& read) {
  ssize_t n;
  if (large_) {
    // Room for what comes next, grown as the bytes arrive (twice what has come, 1 MiB at least):
    // the size a header announces costs the reader nothing until the bytes are there, so a peer
    // that announces 1 GiB and sends 16 bytes cannot make this process allocate 1 GiB.
    const std::size_t want = static_cast<std::size_t>(large_header_.size);
    if (large_body_.capacity() == large_have_)
      large_body_.reserve(std::min(want, large_have_ + std::max(large_have_, large_step)));
    std::size_t room = std::min(large_body_.capacity(), want) - large_have_;
    n = read(large_body_.data() + large_have_, room);
    if (n > 0) {
      large_have_ += static_cast<std::size_t>(n);
      large_body_.resize(large_have_);
    }
    return n;
  }
  if (start_ > 0 && (start_ == staging_.size() || start_ > 32 * 1024)) {
    staging_.consume(start_);
    start_ = 0;
  }
  constexpr std::size_t chunk = 64 * 1024;
  std::size_t old = staging_.size();
  staging_.resize(old + chunk);
  try {
    n = read(staging_.data() + old, chunk);
  } catch (...) {
    staging_.resize(old);
    throw;
  }
  staging_.resize(old + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
  return n;
}

bool FrameReader::next(Frame& out) {
  if (large_) {
    if (large_have_ < large_header_.size) return false;
    out.header = large_header_;
    out.body = std::move(large_body_);
    large_body_ = Buffer();
    large_ = false;
    large_have_ = 0;
    claim_fd(out);
    return true;
  }
  std::size_t avail = staging_.size() - start_;
  if (avail < protocol::header_size) return false;
  const char* at = staging_.data() + start_;
  protocol::FrameHeader h = protocol::parse_header(at, max_body_);
  std::size_t have = avail - protocol::header_size;
  if (have >= h.size) {
    out.header = h;
    out.body.clear();
    out.body.append(at + protocol::header_size, h.size);
    start_ += protocol::header_size + h.size;
    claim_fd(out);
    return true;
  }
  if (h.size > direct_threshold) {
    // Switch to reading this body straight into its own buffer.
    large_ = true;
    large_header_ = h;
    large_body_ = Buffer();
    large_body_.append(at + protocol::header_size, have);
    large_have_ = have;
    start_ = staging_.size();
  }
  return false;
}

void FrameReader::trim() {
  if (!large_ && start_ == staging_.size()) {
    staging_.clear();
    start_ = 0;
  }
  staging_.shrink_to(256 * 1024);
}

bool Outbox::views(std::vector<std::string_view>& out) const {
  out.clear();
  if (offset_ != 0) return false;
  for (const auto& p : pieces_) {
    if (p.pass >= 0) return false;
    out.push_back(p.view);
  }
  return true;
}

bool send_all(int fd, std::initializer_list<std::string_view> pieces, int pass) {
  constexpr std::size_t max_iov = 8;
  // Batches of at most max_iov pieces (any number may be passed), each sent completely in order.
  for (auto next = pieces.begin(); next != pieces.end();) {
    iovec iov[max_iov];
    std::size_t count = 0;
    for (; next != pieces.end() && count < max_iov; ++next) {
      if (next->empty()) continue;
      iov[count].iov_base = const_cast<char*>(next->data());  // NOLINT: sendmsg does not write
      iov[count].iov_len = next->size();
      ++count;
    }
    iovec* first = iov;
    while (count > 0) {
      msghdr msg{};
      msg.msg_iov = first;
      msg.msg_iovlen = count;
      OneFd control;
      attach_fd(msg, control, pass);
      ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      pass = -1;  // it went with the first byte
      auto left = static_cast<std::size_t>(n);
      while (count > 0 && left >= first->iov_len) {
        left -= first->iov_len;
        ++first;
        --count;
      }
      if (count > 0) {
        first->iov_base = static_cast<char*>(first->iov_base) + left;
        first->iov_len -= left;
      }
    }
  }
  return true;
}

bool Outbox::flush(Ring& ring, int socket) {
  bool wrote = false;
  while (!pieces_.empty()) {
    Piece& piece = pieces_.front();
    if (piece.pass >= 0) {
      char carrier = 0;
      iovec iov{&carrier, 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      OneFd control;
      attach_fd(msg, control, piece.pass);
      ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) return false;
      piece.pass = -1;
    }
    long n = ring.write(piece.view.data() + offset_, piece.view.size() - offset_);
    if (n < 0) {
      errno = EPROTO;
      return false;
    }
    if (n == 0) break;
    wrote = true;
    offset_ += static_cast<std::size_t>(n);
    if (offset_ == piece.view.size()) {
      pieces_.pop_front();
      offset_ = 0;
    }
  }
  if (wrote) ring.wake_consumer();
  return true;
}

bool Outbox::flush(int fd) {
  while (!pieces_.empty()) {
    constexpr std::size_t max_iov = 64;
    iovec iov[max_iov];
    std::size_t count = 0;
    // A descriptor travels with the first byte of its piece: a sendmsg starts at that piece and
    // stops before the next piece that carries one.
    for (auto it = pieces_.begin(); it != pieces_.end() && count < max_iov; ++it, ++count) {
      if (count > 0 && it->pass >= 0) break;
      std::size_t skip = count == 0 ? offset_ : 0;
      iov[count].iov_base = const_cast<char*>(it->view.data()) + skip;  // NOLINT: not written
      iov[count].iov_len = it->view.size() - skip;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    OneFd control;
    attach_fd(msg, control, pieces_.front().pass);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    if (n > 0) pieces_.front().pass = -1;  // sent with the first byte
    auto left = static_cast<std::size_t>(n);
    while (!pieces_.empty() && left >= pieces_.front().view.size() - offset_) {
      left -= pieces_.front().view.size() - offset_;
      pieces_.pop_front();
      offset_ = 0;
    }
    offset_ += left;
  }
  return true;
}

}  // namespace ferry::detail
