// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target: bytes a peer could send on a channel, through FrameReader and every body
// decoder (handshake included). Anything but a ProtocolError or a clean "need more bytes" is a bug.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "wire/channel.hpp"
#include "wire/failure.hpp"
#include "wire/protocol.hpp"
#include "wire/stack.hpp"

namespace proto = ferry::detail::protocol;

namespace {
void decode_body(const ferry::detail::Frame& f) {
  switch (f.header.type) {
    case proto::FrameType::hello: proto::decode_hello(f.view()); break;
    case proto::FrameType::define: proto::decode_define(f.view()); break;
    case proto::FrameType::task: {
      proto::BodyReader r(f.view());
      proto::decode_task_head(r);
      break;
    }
    case proto::FrameType::result: {
      proto::BodyReader r(f.view());
      auto head = proto::decode_result_head(r);
      if (head.status != proto::ResultStatus::ok) {
        // The host turns whatever failure a worker reports into an error: any kind, any fields.
        const proto::Define ref{};
        auto failure = ferry::detail::decode_failure(r);
        ferry::detail::to_exception(failure, {"fuzzed", ref, 2, 1});
        ferry::detail::initializer_failed(failure, {"fuzzed", ref, 1, 1});
      }
      break;
    }
    case proto::FrameType::bye: proto::decode_bye(f.view()); break;
    case proto::FrameType::init: proto::decode_init(f.view()); break;
    case proto::FrameType::contained: proto::decode_contained(f.view()); break;
    case proto::FrameType::limits: proto::decode_limits(f.view()); break;
    case proto::FrameType::crashed: ferry::detail::decode_crashed(f.view()); break;
    case proto::FrameType::shutdown: break;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  ferry::detail::Fd writer(sv[0]), reader_fd(sv[1]);
  // The first byte picks the limit (as before and after the hello); the rest is the stream,
  // written in pieces so frames straddle reads.
  std::uint64_t limit = size > 0 && (data[0] & 1) ? proto::max_control_frame : (1u << 20);
  ferry::detail::FrameReader reader(limit);
  std::size_t at = size > 0 ? 1 : 0;
  while (at < size) {
    std::size_t piece = std::min<std::size_t>(size - at, 1 + data[at] % 97);
    if (::send(writer.get(), data + at, piece, MSG_NOSIGNAL) != static_cast<ssize_t>(piece)) std::abort();
    at += piece;
    try {
      while (reader.fill(reader_fd.get(), MSG_DONTWAIT) > 0) {
        ferry::detail::Frame f;
        while (reader.next(f)) {
          try {
            decode_body(f);
          } catch (const proto::ProtocolError&) {
          }
        }
      }
    } catch (const proto::ProtocolError&) {
      return 0;  // the stream is rejected: the host kills such a worker
    }
  }
  return 0;
}
