// SPDX-License-Identifier: BSD-3-Clause
// Wire protocol encoders and bounds-checked decoders.
#include "wire/protocol.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "platform/format.hpp"

namespace ferry::detail::protocol {

FrameHeader parse_header(const char* bytes, std::uint64_t max_body) {
  std::uint16_t m;
  std::memcpy(&m, bytes, 2);
  if (m != magic) throw ProtocolError("bad frame magic (not a ferry frame)");
  auto type = static_cast<std::uint8_t>(bytes[2]);
  if (type == 0 || type > max_frame_type)
    throw ProtocolError("unknown frame type " + std::to_string(type));
  FrameHeader h{static_cast<FrameType>(type), static_cast<std::uint8_t>(bytes[3]), 0};
  std::uint32_t reserved;
  std::memcpy(&reserved, bytes + 4, 4);
  if (reserved != 0) throw ProtocolError("reserved frame header bits are set");
  std::memcpy(&h.size, bytes + 8, 8);
  if (h.size > max_body)
    throw ProtocolError("frame of " + format_size(h.size) + " exceeds the limit of " +
                        format_size(max_body));
  return h;
}

void write_header(char* out, FrameType type, std::uint64_t body_size, std::uint8_t flags) {
  std::memcpy(out, &magic, 2);
  out[2] = static_cast<char>(type);
  out[3] = static_cast<char>(flags);
  std::memset(out + 4, 0, 4);
  std::memcpy(out + 8, &body_size, 8);
}

const char* bye_reason_name(ByeReason r) noexcept {
  switch (r) {
    case ByeReason::shutdown: return "shutdown";
    case ByeReason::idle_timeout: return "idle timeout";
    case ByeReason::memory_growth: return "memory growth";
    case ByeReason::max_tasks: return "max tasks per child";
    case ByeReason::descriptor_growth: return "descriptor growth";
    case ByeReason::process_limit: return "processes limit met";
  }
  return "unknown";
}

const char* worker_exit_name(int code) noexcept {
  switch (static_cast<WorkerExit>(code)) {
    case WorkerExit::clean: return "clean exit";
    case WorkerExit::usage: return "ferry-worker: bad command line";
    case WorkerExit::host_gone: return "ferry-worker: host gone";
    case WorkerExit::protocol_error: return "ferry-worker: protocol error";
    case WorkerExit::io_error: return "ferry-worker: channel error";
    case WorkerExit::init_failed: return "ferry-worker: initializer failed";
    case WorkerExit::contained: return "ferry-worker: a task hit its limits or sandbox";
    case WorkerExit::containment: return "ferry-worker: cannot set up its limits or sandbox";
    case WorkerExit::memory_ceiling: return "ferry-worker: its memory cgroup was full";
  }
  return nullptr;
}

void BodyReader::need(std::size_t n) const {
  if (body_.size() - at_ < n)
    throw ProtocolError("truncated frame body: need " + format_size(n) + " at offset " +
                        std::to_string(at_) + " of " + format_size(body_.size()));
}
std::uint8_t BodyReader::u8() {
  need(1);
  return static_cast<std::uint8_t>(body_[at_++]);
}
std::uint32_t BodyReader::u32() {
  need(4);
  std::uint32_t v;
  std::memcpy(&v, body_.data() + at_, 4);
  at_ += 4;
  return v;
}
std::uint64_t BodyReader::u64() {
  need(8);
  std::uint64_t v;
  std::memcpy(&v, body_.data() + at_, 8);
  at_ += 8;
  return v;
}
std::string BodyReader::str() {
  std::uint32_t n = u32();
  need(n);
  std::string s(body_.substr(at_, n));
  at_ += n;
  return s;
}
void BodyReader::expect_end() const {
  if (at_ != body_.size())
    throw ProtocolError(format_size(body_.size() - at_) + " of unexpected trailing data in frame");
}

Buffer frame(FrameType type, const Buffer& body, std::uint64_t payload_size, std::uint8_t flags) {
  Buffer out(header_size);
  write_header(out.data(), type, body.size() + payload_size, flags);
  out.append(body.data(), body.size());
  return out;
}

Buffer encode_hello(const Hello& h) {
  Buffer b;
  BodyWriter(b)
      .u32(h.protocol)
      .u32(h.abi)
      .u32(static_cast<std::uint32_t>(h.pid))
      .str(h.ferry_version)
      .str(h.host);
  return frame(FrameType::hello, b);
}
Hello decode_hello(std::string_view body) {
  BodyReader r(body);
  Hello h;
  h.protocol = r.u32();
  h.abi = r.u32();
  h.pid = static_cast<std::int32_t>(r.u32());
  h.ferry_version = r.str();
  if (h.protocol != version) return h;  // another protocol's hello: the host refuses it by number
  h.host = r.str();
  r.expect_end();
  return h;
}

Buffer encode_define(const Define& d) {
  Buffer b;
  BodyWriter(b)
      .u32(d.ref)
      .u8(static_cast<std::uint8_t>(d.kind))
      .str(d.library)
      .str(d.name)
      .u64(d.fingerprint)
      .str(d.signature)
      .str(d.layout);
  return frame(FrameType::define, b);
}
Define decode_define(std::string_view body) {
  BodyReader r(body);
  Define d;
  d.ref = r.u32();
  std::uint8_t kind = r.u8();
  if (kind > static_cast<std::uint8_t>(RefKind::main_program))
    throw ProtocolError("unknown task reference kind " + std::to_string(kind));
  d.kind = static_cast<RefKind>(kind);
  d.library = r.str();
  d.name = r.str();
  d.fingerprint = r.u64();
  d.signature = r.str();
  d.layout = r.str();
  r.expect_end();
  return d;
}

Buffer encode_task_head(const TaskHead& t, std::uint64_t args_size, std::uint8_t flags) {
  Buffer b;
  BodyWriter(b).u64(t.call).u32(t.ref).u32(t.items);
  return frame(FrameType::task, b, args_size, flags);
}
TaskHead decode_task_head(BodyReader& r) {
  TaskHead t;
  t.call = r.u64();
  t.ref = r.u32();
  t.items = r.u32();
  if (t.items == 0) throw ProtocolError("task frame with zero items");
  return t;
}

namespace {
void write_result_head(Buffer& b, std::uint64_t call, ResultStatus status, const RunStats& s) {
  BodyWriter(b)
      .u64(call)
      .u8(static_cast<std::uint8_t>(status))
      .u8(0)
      .u8(0)
      .u8(0)
      .u32(0)
      .u64(s.started_ns)
      .u64(s.finished_ns)
      .u64(s.cpu_ns)
      .u64(s.max_rss);
}
}  // namespace

Buffer encode_result_head(const ResultHead& h, std::uint64_t payload_size) {
  Buffer b;
  write_result_head(b, h.call, h.status, h.stats);
  return frame(FrameType::result, b, payload_size);
}

void stamp_result_stats(Buffer& frame, const RunStats& stats) {
  if (frame.size() < header_size + result_head_size ||
      static_cast<FrameType>(frame.data()[2]) != FrameType::result)
    throw ProtocolError("stamp_result_stats: not a result frame");
  const std::uint64_t fields[] = {stats.started_ns, stats.finished_ns, stats.cpu_ns, stats.max_rss};
  std::memcpy(frame.data() + header_size + result_stats_offset, fields, sizeof fields);
}
ResultHead decode_result_head(BodyReader& r) {
  ResultHead h;
  h.call = r.u64();
  std::uint8_t status = r.u8();
  if (status > max_result_status)
    throw ProtocolError("unknown result status " + std::to_string(status));
  h.status = static_cast<ResultStatus>(status);
  std::uint32_t reserved = r.u8();
  reserved |= r.u8();
  reserved |= r.u8();
  reserved |= r.u32();
  if (reserved != 0) throw ProtocolError("reserved result head bytes are set");
  h.stats.started_ns = r.u64();
  h.stats.finished_ns = r.u64();
  h.stats.cpu_ns = r.u64();
  h.stats.max_rss = r.u64();
  return h;
}

Buffer encode_shared_task(const TaskHead& t, std::uint64_t args_size, std::uint8_t flags) {
  Buffer b;
  BodyWriter(b).u64(t.call).u32(t.ref).u32(t.items).u64(args_size);
  return frame(FrameType::task, b, 0, static_cast<std::uint8_t>(flags | flag_shm));
}

Buffer encode_shared_result(std::uint64_t call, std::uint64_t result_size, const RunStats& stats) {
  Buffer b;
  write_result_head(b, call, ResultStatus::ok, stats);
  BodyWriter(b).u64(result_size);
  return frame(FrameType::result, b, 0, flag_shm);
}

Buffer decode_shared_payload(BodyReader& r, int fd, bool fd_lost) {
  std::uint64_t size = 0;
  try {
    size = r.u64();
    r.expect_end();
  } catch (...) {
    if (fd >= 0) ::close(fd);
    throw;
  }
  if (fd_lost)
    throw ShortOfResources("its " + std::to_string(size) +
                           " bytes in shared memory could not be received: this process has no descriptor "
                           "left for them (" + std::strerror(EMFILE) + ")");
  if (fd < 0) throw ProtocolError("shared-payload frame without its descriptor");
  try {
    return Buffer::map_shared(fd, size);
  } catch (const std::system_error& e) {
    // mmap: the address space, the map count or RLIMIT_AS of this process, not the peer's bytes.
    if (e.code().value() == ENOMEM)
      throw ShortOfResources("its " + std::to_string(size) +
                             " bytes in shared memory could not be mapped: this process is out of memory "
                             "or address space");
    throw ProtocolError(e.what());
  } catch (const std::exception& e) {
    // A peer that announces more than it shared is as broken as one sending bad bytes.
    throw ProtocolError(e.what());
  }
}

Buffer encode_bye(ByeReason reason) {
  Buffer b;
  BodyWriter(b).u8(static_cast<std::uint8_t>(reason));
  return frame(FrameType::bye, b);
}
ByeReason decode_bye(std::string_view body) {
  BodyReader r(body);
  std::uint8_t v = r.u8();
  r.expect_end();
  if (v == 0 || v > max_bye_reason) throw ProtocolError("unknown bye reason " + std::to_string(v));
  return static_cast<ByeReason>(v);
}

Buffer encode_init(std::uint32_t ref, std::string_view args, std::uint8_t flags) {
  Buffer b;
  BodyWriter(b).u32(ref);
  b.append(args.data(), args.size());
  return frame(FrameType::init, b, 0, flags);
}
Init decode_init(std::string_view body) {
  BodyReader r(body);
  Init init;
  init.ref = r.u32();
  init.args = r.rest();
  return init;
}

const char* contained_kind_name(ContainedKind k) noexcept {
  switch (k) {
    case ContainedKind::memory: return "memory";
    case ContainedKind::cpu_time: return "cpu_time";
    case ContainedKind::open_files: return "open_files";
    case ContainedKind::processes: return "processes";
    case ContainedKind::file_size: return "file_size";
    case ContainedKind::syscall: return "syscall";
  }
  return "unknown";
}

namespace {
std::size_t bounded_length(const char* s) noexcept {
  std::size_t n = 0;
  while (s && n < max_contained_text && s[n]) ++n;
  return n;
}
}  // namespace

std::size_t encode_contained_into(char* out, std::size_t cap, ContainedKind kind, std::uint64_t value,
                                  const char* name, const char* detail) noexcept {
  const std::uint32_t name_size = static_cast<std::uint32_t>(bounded_length(name));
  const std::uint32_t detail_size = static_cast<std::uint32_t>(bounded_length(detail));
  const std::uint64_t body = 1 + 8 + 4 + name_size + 4 + detail_size;
  if (cap < header_size + body) return 0;
  write_header(out, FrameType::contained, body);
  char* p = out + header_size;
  *p++ = static_cast<char>(kind);
  std::memcpy(p, &value, 8);
  p += 8;
  std::memcpy(p, &name_size, 4);
  p += 4;
  if (name_size) std::memcpy(p, name, name_size);
  p += name_size;
  std::memcpy(p, &detail_size, 4);
  p += 4;
  if (detail_size) std::memcpy(p, detail, detail_size);
  return header_size + body;
}

Buffer encode_contained(const Contained& c) {
  Buffer b;
  BodyWriter(b)
      .u8(static_cast<std::uint8_t>(c.kind))
      .u64(c.value)
      .str(std::string_view(c.name).substr(0, max_contained_text))
      .str(std::string_view(c.detail).substr(0, max_contained_text));
  return frame(FrameType::contained, b);
}

Contained decode_contained(std::string_view body) {
  BodyReader r(body);
  Contained c;
  std::uint8_t kind = r.u8();
  if (kind == 0 || kind > max_contained_kind)
    throw ProtocolError("unknown contained kind " + std::to_string(kind));
  c.kind = static_cast<ContainedKind>(kind);
  c.value = r.u64();
  c.name = r.str();
  c.detail = r.str();
  r.expect_end();
  if (c.name.size() > max_contained_text || c.detail.size() > max_contained_text)
    throw ProtocolError("contained frame text too long");
  return c;
}

Buffer encode_limits(const TaskLimits& l) {
  Buffer b;
  BodyWriter(b).u64(l.memory).u64(l.cpu_seconds).u64(l.open_files).u64(l.processes).u64(l.file_size);
  return frame(FrameType::limits, b);
}

TaskLimits decode_limits(std::string_view body) {
  BodyReader r(body);
  TaskLimits l;
  l.memory = r.u64();
  l.cpu_seconds = r.u64();
  l.open_files = r.u64();
  l.processes = r.u64();
  l.file_size = r.u64();
  r.expect_end();
  return l;
}

}  // namespace ferry::detail::protocol
