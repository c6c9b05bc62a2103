// SPDX-License-Identifier: BSD-3-Clause
// Channel plumbing: owned descriptors, an incremental frame reader, a non-blocking outbox.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include <ferry/detail/buffer.hpp>
#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"
#include "wire/protocol.hpp"
#include "wire/ring.hpp"

namespace ferry::detail {

/// One decoded frame: its header, its body bytes, and the memfd of a shared payload (flag_shm).
struct Frame {
  protocol::FrameHeader header{};
  Buffer body;
  Fd fd;
  // flag_shm: its memfd was dropped by the kernel, which had no room for it in this process
  // (EMFILE, ENFILE): the peer did nothing wrong, the frame's call fails (ShortOfResources).
  bool fd_lost = false;
  std::string_view view() const noexcept { return body.view(); }
};

/// Reads frames off a stream socket as bytes arrive. Bodies above `direct_threshold` are read
/// straight into their own buffer (no second copy), which grows as their bytes arrive; nothing
/// larger than the limit is allocated.
class FERRY_INTERNAL_API FrameReader {
 public:
  static constexpr std::size_t direct_threshold = 64 * 1024;
  /// A large body's storage grows by at most max(what arrived, this) at a time: memory follows
  /// the bytes received, not the size announced.
  static constexpr std::size_t large_step = std::size_t{1} << 20;

  explicit FrameReader(std::uint64_t max_body) : max_body_(max_body) {}
  void set_limit(std::uint64_t max_body) noexcept { max_body_ = max_body; }

  /// One recvmsg(2) with `flags`: > 0 bytes read, 0 at EOF, -1 with errno set (EAGAIN
  /// included). Descriptors passed with the bytes are kept for the frames that announce them.
  ssize_t fill(int fd, int flags);
  /// As fill, the bytes from `read(into, n)` (> 0 bytes given, 0 none now, -1 an error) instead
  /// of a socket: a shared-memory ring (wire/ring.hpp).
  ssize_t fill(const std::function<ssize_t(char*, std::size_t)>& read);
  /// When the bytes come from a ring, descriptors still come over the socket, each with a byte
  /// of its own sent before the frame that announces it: one recvmsg(2) of `fd` with `flags`
  /// keeping the descriptors and dropping the bytes (carriers, doorbells). As fill: > 0, 0 at
  /// EOF, -1 with errno. At most `max` bytes (1: exactly one carrier, the rest left queued).
  ssize_t collect(int fd, int flags, std::size_t max = 256);
  /// Where a frame that announces a descriptor not yet received looks for it (collect, without
  /// waiting): the socket of a ring's channel. -1 (the default): the descriptors come with the
  /// bytes, and a frame without one is a protocol error at once.
  void set_descriptor_source(int fd) noexcept { descriptor_source_ = fd; }
  /// The oldest descriptor received and not claimed by a frame (empty if none).
  Fd take_descriptor() {
    if (fds_.empty()) return Fd();
    Fd fd = std::move(fds_.front().fd);
    fds_.pop_front();
    return fd;
  }
  /// Whole frames that came another way than the socket (a relay in this thread; `pieces`
  /// joined), read as if they had come next on it. False, and nothing taken, while part of a
  /// frame is buffered.
  bool feed(std::span<const std::string_view> pieces) {
    if (partial()) return false;
    for (std::string_view p : pieces) staging_.append(p.data(), p.size());
    return true;
  }
  bool feed(std::string_view bytes) { return feed(std::span<const std::string_view>(&bytes, 1)); }
  /// Pops the next complete frame. @throws protocol::ProtocolError on a malformed header.
  bool next(Frame& out);
  /// True when bytes of an incomplete frame are buffered.
  bool partial() const noexcept { return large_ || staging_.size() > start_; }
  /// Returns memory kept after a large frame.
  void trim();

 private:
  std::uint64_t max_body_;
  Buffer staging_;
  std::size_t start_ = 0;
  bool large_ = false;
  protocol::FrameHeader large_header_{};
  Buffer large_body_;
  std::size_t large_have_ = 0;
  struct Received {
    Fd fd;              // empty: not a memfd (refused), or lost
    bool lost = false;  // dropped by the kernel: no room for it in this process
  };
  std::deque<Received> fds_;  // received with the bytes, not yet claimed by a frame
  int descriptor_source_ = -1;
  ssize_t receive(int fd, char* into, std::size_t n, int flags);
  void claim_fd(Frame& out);
};

/// Receives and drops at most `max` bytes queued on `fd` (one recvmsg with `flags`): for a
/// channel whose bytes no longer matter. Every descriptor that came with them is closed where
/// closing cannot stop this thread (a memfd here, anything else by close_in_background), and as
/// many as one message can carry are received (those that do not fit the control buffer are
/// closed by the kernel inside recvmsg). As recv: > 0, 0 at EOF, -1 with errno.
ssize_t discard_received(int fd, std::size_t max, int flags);  // not exported: the pool

/// Closes the channel to a peer: shuts it down (the peer, or a process it forked holding its end,
/// can queue nothing more), drops what is queued with discard_received, then closes it. Its close
/// then releases no descriptor the peer sent, so it cannot block (a TCP socket with SO_LINGER and
/// unread data waits out the linger time when its last descriptor is closed).
FERRY_INTERNAL_API void close_channel(int fd) noexcept;

/// Blocking send of every piece, in order (worker side); `pass` (a descriptor, or -1) travels with
/// the first byte. False on error, errno set.
FERRY_INTERNAL_API bool send_all(int fd, std::initializer_list<std::string_view> pieces,
                                 int pass = -1);

/// Outgoing bytes of one channel, sent without blocking (host side). Argument bytes are sent
/// from where they are (`push_view`), never copied on their way to the socket.
class FERRY_INTERNAL_API Outbox {
 public:
  /// `pass`: a descriptor sent with the first byte of `b` (the memfd of a shared payload); it
  /// must stay open until sent (its owner is kept alive by a later push_view or by the caller).
  void push(Buffer b, int pass = -1, std::shared_ptr<const void> keep = {}) {
    if (b.empty()) return;
    pieces_.emplace_back();
    pieces_.back().owned = std::move(b);
    pieces_.back().view = pieces_.back().owned.view();
    pieces_.back().pass = pass;
    pieces_.back().keep = std::move(keep);
  }
  /// Queues `bytes` without copying; `keep` keeps them alive until they are sent.
  void push_view(std::string_view bytes, std::shared_ptr<const void> keep) {
    if (bytes.empty()) return;
    pieces_.push_back(Piece{Buffer(), bytes, std::move(keep), -1});
  }
  bool empty() const noexcept { return pieces_.empty(); }
  /// Views of everything queued, for a hand-over without the socket (LaunchedWorker::send):
  /// false when a piece is partly sent or carries a descriptor (those take the socket).
  bool views(std::vector<std::string_view>& out) const;
  /// Sends what the socket accepts now. False on a hard error (peer gone), errno set.
  bool flush(int fd);
  /// Writes what fits into `ring` and wakes its consumer; a piece's descriptor goes first over
  /// `socket` with a byte of its own (FrameReader::collect). False on a hard error (a corrupt
  /// ring, the peer gone), errno set.
  bool flush(Ring& ring, int socket);
  void clear() noexcept {
    pieces_.clear();
    offset_ = 0;
  }
  /// What keeps the first piece alive, when nothing of it is sent yet and it carries a
  /// descriptor (a shared payload's frame), else null: its sender may send it another way
  /// (replace_front) after a flush the kernel refused for that descriptor.
  std::shared_ptr<const void> unsent_passing_front() const {
    if (pieces_.empty() || offset_ != 0 || pieces_.front().pass < 0) return {};
    return pieces_.front().keep;
  }
  /// Replaces the first piece (unsent_passing_front) with `head` followed by `bytes`, kept alive
  /// by `keep`.
  void replace_front(Buffer head, std::string_view bytes, std::shared_ptr<const void> keep) {
    pieces_.pop_front();
    offset_ = 0;
    if (!bytes.empty()) pieces_.push_front(Piece{Buffer(), bytes, keep, -1});
    Piece h;
    h.owned = std::move(head);
    h.view = h.owned.view();
    h.keep = std::move(keep);
    pieces_.push_front(std::move(h));
  }

 private:
  struct Piece {
    Buffer owned;
    std::string_view view;
    std::shared_ptr<const void> keep;
    int pass = -1;  // descriptor to send with this piece's first byte; -1 once sent
  };
  std::deque<Piece> pieces_;
  std::size_t offset_ = 0;
};

}  // namespace ferry::detail
