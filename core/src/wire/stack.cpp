// SPDX-License-Identifier: BSD-3-Clause
// Stacks on the wire: the stack codec and the crashed frame, whose encoder runs in a signal
// handler (no allocation, no locks, no exceptions).
#include "wire/stack.hpp"

#include <cstring>

namespace ferry::detail {

void encode_stack(protocol::BodyWriter& w, const RawStack& s) {
  std::size_t n = s.pcs.size() < max_stack_frames ? s.pcs.size() : max_stack_frames;
  w.u32(static_cast<std::uint32_t>(n));
  for (std::size_t i = 0; i < n; ++i) w.u64(s.pcs[i]);
  w.str(std::string_view(s.maps).substr(0, max_stack_maps));
}

RawStack decode_stack(protocol::BodyReader& r) {
  RawStack s;
  std::uint32_t n = r.u32();
  if (n > max_stack_frames)
    throw protocol::ProtocolError("stack of " + std::to_string(n) + " frames (at most " +
                                  std::to_string(max_stack_frames) + ")");
  s.pcs.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) s.pcs.push_back(r.u64());
  s.maps = r.str();
  if (s.maps.size() > max_stack_maps)
    throw protocol::ProtocolError("stack module map of " + std::to_string(s.maps.size()) +
                                  " bytes (at most " + std::to_string(max_stack_maps) + ")");
  std::string_view text(s.maps);
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    std::string_view line = text.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    MapsLine m;
    if (!parse_maps_line(line, m) || m.path.empty() || m.path[0] != '/')
      throw protocol::ProtocolError("stack module map holds a line that is not a file mapping");
    at = nl == std::string_view::npos ? text.size() : nl + 1;
  }
  return s;
}

std::size_t encode_crashed_into(char* out, std::size_t cap, std::uint32_t pid, std::uint32_t signal,
                                std::uint64_t fault_address, const std::uint64_t* pcs,
                                std::size_t count, const char* maps, std::size_t maps_size) noexcept {
  if (count > max_stack_frames) count = max_stack_frames;
  if (maps_size > max_stack_maps) maps_size = 0;  // never cut a line: no names rather than wrong ones
  const std::uint64_t body = 4 + 4 + 8 + 4 + 8 * count + 4 + maps_size;
  if (cap < protocol::header_size + body) return 0;
  protocol::write_header(out, protocol::FrameType::crashed, body);
  char* p = out + protocol::header_size;
  auto put = [&p](const void* v, std::size_t n) {
    std::memcpy(p, v, n);
    p += n;
  };
  const auto n32 = static_cast<std::uint32_t>(count);
  const auto m32 = static_cast<std::uint32_t>(maps_size);
  put(&pid, 4);
  put(&signal, 4);
  put(&fault_address, 8);
  put(&n32, 4);
  for (std::size_t i = 0; i < count; ++i) put(&pcs[i], 8);
  put(&m32, 4);
  if (maps_size) put(maps, maps_size);
  return protocol::header_size + body;
}

Buffer encode_crashed(const Crashed& c) {
  Buffer b;
  protocol::BodyWriter w(b);
  w.u32(c.pid).u32(c.signal).u64(c.fault_address);
  encode_stack(w, c.stack);
  return protocol::frame(protocol::FrameType::crashed, b);
}

Crashed decode_crashed(std::string_view body) {
  protocol::BodyReader r(body);
  Crashed c;
  c.pid = r.u32();
  c.signal = r.u32();
  if (c.signal == 0 || c.signal >= 65)
    throw protocol::ProtocolError("crashed frame names signal " + std::to_string(c.signal));
  c.fault_address = r.u64();
  c.stack = decode_stack(r);
  r.expect_end();
  return c;
}

}  // namespace ferry::detail
