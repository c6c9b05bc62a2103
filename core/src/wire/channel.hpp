// SPDX-License-Identifier: BSD-3-Clause
// Channel plumbing: owned descriptors, an incremental frame reader, a non-blocking outbox.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
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

namespace ferry::detail {

/// One decoded frame: its header, its body bytes, and the memfd of a shared payload (flag_shm).
struct Frame {
  protocol::FrameHeader header{};
  Buffer body;
  Fd fd;
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
  std::deque<Fd> fds_;  // received with the bytes, not yet claimed by a frame
  ssize_t receive(int fd, char* into, std::size_t n, int flags);
  void claim_fd(Frame& out);
};

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
  void clear() noexcept {
    pieces_.clear();
    offset_ = 0;
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
