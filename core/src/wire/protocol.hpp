// SPDX-License-Identifier: BSD-3-Clause
// Wire protocol between host and ferry-worker: frames, message bodies, limits, exit codes.
//
// Every frame is a 16-byte header {u16 magic, u8 type, u8 flags, u32 reserved, u64 body size}
// followed by the body. Bodies are little-endian fixed fields and u32-length-prefixed strings;
// argument and result bytes (cereal) are the tail of task and result bodies. A reader rejects a bad
// magic, an unknown type or a body larger than its limit before allocating anything.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <ferry/detail/buffer.hpp>
#include <ferry/detail/export.hpp>

namespace ferry::detail::protocol {

/// 2: a failed result carries a typed Failure (wire/failure.hpp); the result head has no item.
/// 3: contained and limits frames (containment, ferry::Limits and ferry::Sandbox).
/// 4: a failure ends with the stack where the task's exception was thrown; crashed frames
///    (remote stack traces, wire/stack.hpp).
///    Also in 4: the hello names the worker's host; a result head carries how the call ran (RunStats: its
///    start and end, CPU time, the worker's peak RSS); an init frame carries argument bytes.
/// 5: an init frame may carry flag_json: its arguments are a JSON line (ferry::Call::json).
/// 6: a worker says its initializer ran (an ok result for call 0, with nothing more) before it
///    runs any task: an initializer failure after that is a task's forgery.
/// 7: a define carries the layout of the signature's user types (detail/layout.hpp).
/// 8: a bye for the idle timeout does not end the worker: it runs the tasks sent before the host
///    read it, and exits when told to (shutdown, answered with a bye) or at the channel's end.
/// 9: a result may carry flag_last: its worker recycles and reads no task after it (its bye
///    comes next), so what the host sent behind that call was never read.
inline constexpr std::uint32_t version = 9;
inline constexpr std::uint16_t magic = 0xFE77;
inline constexpr std::size_t header_size = 16;
/// Default hard limit of a frame body; FERRY_MAX_FRAME_BYTES overrides it.
inline constexpr std::uint64_t default_max_frame = std::uint64_t{1} << 30;
/// Limit for frames a worker sends before it said hello, and for control frames.
inline constexpr std::uint64_t max_control_frame = 64 * 1024;

enum class FrameType : std::uint8_t {
  hello = 1,     // worker → host: protocol, abi, pid, ferry version
  define = 2,    // host → worker: a task reference, numbered
  task = 3,      // host → worker: call id, ref, items, argument bytes
  result = 4,    // worker → host: call id, status, result bytes or a Failure (wire/failure.hpp)
  bye = 5,       // worker → host: it exits cleanly now (reason); unanswered tasks never started
  shutdown = 6,  // host → worker: finish and exit
  init = 7,      // host → worker: run this ref (with arguments) once before anything else
  contained = 8,  // worker → host: the running task hit a limit or its sandbox; the worker exits
  limits = 9,     // host → worker: the limits of the tasks that follow
  crashed = 10,   // worker → host: it took a fatal signal here (wire/stack.hpp); it dies of it now
};
inline constexpr std::uint8_t max_frame_type = 10;

/// Task frame flags (header byte 3).
inline constexpr std::uint8_t flag_json = 1;        // arguments and results are JSON lines
inline constexpr std::uint8_t flag_keep_going = 2;  // JSON: a failing item's error is its result
// Task and result frames: the payload is in a memfd sent with the frame (SCM_RIGHTS); the body
// ends with its size (u64) instead of the bytes.
inline constexpr std::uint8_t flag_shm = 4;
// Task frames: the arguments begin with a u8 count N, then the values of the task's last N
// parameters, shared by every item of the chunk (Executor::map's constant extra arguments).
inline constexpr std::uint8_t flag_shared_args = 8;
// Result frames: the worker's last answer. It recycles (max_tasks_per_child, memory, descriptors,
// a refused fork) and decided so before it sent this: it reads no task after this call, and its
// bye comes next. A task can write such a frame only for its own running call (the host takes a
// result for that call alone): it settles that call, and the calls sent behind it go back to the
// queue only once its worker has ended (Pool::handle_bye).
inline constexpr std::uint8_t flag_last = 16;

/// Thrown on malformed bytes; the peer sending them is treated as broken.
class FERRY_INTERNAL_API ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown when this side could not take what the peer sent as it should: no descriptor left for
/// the memfd that came with a frame (the kernel dropped it), or no memory to map it. Not the
/// peer's fault: only the call it came with fails.
class FERRY_INTERNAL_API ShortOfResources : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FrameHeader {
  FrameType type;
  std::uint8_t flags;
  std::uint64_t size;
};

/// Validates and decodes a header; throws ProtocolError.
FERRY_INTERNAL_API FrameHeader parse_header(const char* bytes, std::uint64_t max_body);
FERRY_INTERNAL_API void write_header(char* out, FrameType type, std::uint64_t body_size,
                                     std::uint8_t flags = 0);

/// What follows a result head. Why a call failed is the Failure's kind, not the status: one list
/// of failure kinds, in wire/failure.hpp.
enum class ResultStatus : std::uint8_t {
  ok = 0,           // the result bytes (inline, or in a memfd with flag_shm)
  failed = 1,       // a Failure
  init_failed = 2,  // a Failure of the initializer (call 0); the worker exits after it
};
inline constexpr std::uint8_t max_result_status = 2;

enum class ByeReason : std::uint8_t {
  shutdown = 1,
  idle_timeout = 2,
  memory_growth = 3,
  max_tasks = 4,
  descriptor_growth = 5,  // a task left descriptors open: recycled before it starves the next
  process_limit = 6,      // a task's fork was refused at Limits::processes and the task went on
};
inline constexpr std::uint8_t max_bye_reason = 6;
FERRY_INTERNAL_API const char* bye_reason_name(ByeReason r) noexcept;

enum class RefKind : std::uint8_t { plugin = 0, main_program = 1 };

/// Exit codes of ferry-worker. A clean exit is always announced by a bye frame first.
enum class WorkerExit : int {
  clean = 0,
  usage = 64,           // bad command line
  host_gone = 65,       // the host died (channel EOF or parent changed)
  protocol_error = 66,  // the host sent bytes that are not ferry frames
  io_error = 67,        // the channel failed
  init_failed = 68,     // the initializer failed
  contained = 69,       // after a contained frame: a task hit a limit or its sandbox
  containment = 70,     // the containment asked for cannot be set up (the reason is on stderr)
  memory_ceiling = 71,  // the channel failed with the worker's memory cgroup at its limit
};
/// "protocol error", "host gone", ... or nullptr for codes ferry-worker never uses.
FERRY_INTERNAL_API const char* worker_exit_name(int code) noexcept;

// ---- bodies ----------------------------------------------------------------------------------

/// Body of a hello: u32 protocol · u32 abi · u32 pid · str ferry_version · str host.
struct Hello {
  std::uint32_t protocol = version;
  std::uint32_t abi = 0;
  std::int32_t pid = 0;
  std::string ferry_version;
  std::string host;  // the worker's host name (gethostname)
};

struct Define {
  std::uint32_t ref = 0;
  RefKind kind = RefKind::plugin;
  std::string library;   // absolute path
  std::string name;      // task name, or the function's name for a main-program function
  std::uint64_t fingerprint = 0;
  std::string signature;  // the host's expected signature text (for messages)
  std::string layout;     // what its user types serialize, as the host defines them (detail/layout.hpp)
};

/// What a contained frame reports. The limits' values are those of ferry::Limits' fields.
enum class ContainedKind : std::uint8_t {
  memory = 1,      // value: bytes
  cpu_time = 2,    // value: seconds
  open_files = 3,  // value: descriptors
  processes = 4,   // value: processes
  file_size = 5,   // value: bytes
  syscall = 6,     // value: the system call's number; name: its name
};
inline constexpr std::uint8_t max_contained_kind = 6;
/// "memory", "cpu_time", ... as ferry::Limits names them; "syscall" for a sandbox violation.
FERRY_INTERNAL_API const char* contained_kind_name(ContainedKind k) noexcept;

/// Body of a contained frame: u8 kind · u64 value · str name · str detail.
struct Contained {
  ContainedKind kind = ContainedKind::memory;
  std::uint64_t value = 0;
  std::string name;    // the system call for ContainedKind::syscall; else the limit's name
  std::string detail;  // what the task saw, e.g. "std::bad_alloc: ..." (may be empty)
};
inline constexpr std::size_t max_contained_text = 512;

/// Body of a limits frame: five u64, in ferry::Limits' order (memory bytes, cpu seconds, open
/// files, processes, file size bytes); 0 = no limit.
struct TaskLimits {
  std::uint64_t memory = 0, cpu_seconds = 0, open_files = 0, processes = 0, file_size = 0;
  bool operator==(const TaskLimits&) const = default;
};

struct TaskHead {
  std::uint64_t call = 0;
  std::uint32_t ref = 0;
  std::uint32_t items = 1;
};
inline constexpr std::size_t task_head_size = 16;

/// How a worker ran one call (ferry::TaskInfo), measured by the worker: wall-clock times in ns
/// since the epoch (its CLOCK_REALTIME), the CPU time of its thread over the call in ns
/// (getrusage RUSAGE_THREAD), and the process's peak RSS so far in bytes (ru_maxrss). 0 = not
/// measured (e.g. an error result the MPI relay writes for a call it could not carry).
struct RunStats {
  std::uint64_t started_ns = 0;
  std::uint64_t finished_ns = 0;
  std::uint64_t cpu_ns = 0;
  std::uint64_t max_rss = 0;
  bool operator==(const RunStats&) const = default;
};

/// u64 call, u8 status, 7 reserved bytes that must be 0 (where protocol 1 kept a failed item),
/// then the RunStats: u64 started_ns · u64 finished_ns · u64 cpu_ns · u64 max_rss.
struct ResultHead {
  std::uint64_t call = 0;
  ResultStatus status = ResultStatus::ok;
  RunStats stats;
};
inline constexpr std::size_t result_head_size = 48;
/// Where the RunStats start in a result body.
inline constexpr std::size_t result_stats_offset = 16;

/// Body of an init frame: u32 ref, then the initializer's argument bytes (to the end).
struct Init {
  std::uint32_t ref = 0;
  std::string_view args;  // into the frame's body
};

/// Appends fields to a body.
class BodyWriter {
 public:
  explicit BodyWriter(Buffer& out) : out_(out) {}
  BodyWriter& u8(std::uint8_t v) { return raw(&v, 1); }
  BodyWriter& u32(std::uint32_t v) { return raw(&v, 4); }
  BodyWriter& u64(std::uint64_t v) { return raw(&v, 8); }
  BodyWriter& str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    return raw(s.data(), s.size());
  }

 private:
  BodyWriter& raw(const void* p, std::size_t n) {
    out_.append(p, n);
    return *this;
  }
  Buffer& out_;
};

/// Reads fields of a body; any overrun throws ProtocolError.
class FERRY_INTERNAL_API BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  std::uint8_t u8();
  std::uint32_t u32();
  std::uint64_t u64();
  std::string str();
  std::string_view rest() noexcept { return body_.substr(at_); }
  void expect_end() const;

 private:
  void need(std::size_t n) const;
  std::string_view body_;
  std::size_t at_ = 0;
};

/// Frame = header + body in one buffer, ready to send (payload bytes may follow separately).
FERRY_INTERNAL_API Buffer frame(FrameType type, const Buffer& body, std::uint64_t payload_size = 0,
                                std::uint8_t flags = 0);

FERRY_INTERNAL_API Buffer encode_hello(const Hello& h);
FERRY_INTERNAL_API Hello decode_hello(std::string_view body);
FERRY_INTERNAL_API Buffer encode_define(const Define& d);
FERRY_INTERNAL_API Define decode_define(std::string_view body);
/// Header + task head; the argument bytes (size `args_size`) are sent right after.
FERRY_INTERNAL_API Buffer encode_task_head(const TaskHead& t, std::uint64_t args_size,
                                           std::uint8_t flags = 0);
FERRY_INTERNAL_API TaskHead decode_task_head(BodyReader& r);
/// Header + result head; for ok, the result bytes (size `payload_size`) are sent right after.
FERRY_INTERNAL_API Buffer encode_result_head(const ResultHead& h, std::uint64_t payload_size);
FERRY_INTERNAL_API ResultHead decode_result_head(BodyReader& r);
/// Writes `stats` into a whole result frame encoded already (header, then head), e.g. one
/// encode_failure built. @throws ProtocolError when `frame` is not a result frame.
FERRY_INTERNAL_API void stamp_result_stats(Buffer& frame, const RunStats& stats);
/// Marks a whole result frame encoded already as its worker's last answer (flag_last).
inline void mark_last_answer(Buffer& frame) {
  if (frame.size() < header_size || static_cast<FrameType>(frame.data()[2]) != FrameType::result)
    throw ProtocolError("mark_last_answer: not a result frame");
  frame.data()[3] = static_cast<char>(static_cast<std::uint8_t>(frame.data()[3]) | flag_last);
}

// Shared-memory frames (flag_shm): the payload is in a memfd that travels with the frame's first
// byte (SCM_RIGHTS), and the body is the usual head followed by the payload's size, always its
// last 8 bytes (the MPI relay, which cannot pass a memfd, replaces them with the bytes).
inline constexpr std::size_t shared_size_bytes = 8;
/// A whole task frame for arguments of `args_size` bytes in a memfd.
FERRY_INTERNAL_API Buffer encode_shared_task(const TaskHead& t, std::uint64_t args_size, std::uint8_t flags = 0);
/// A whole ok result frame for result bytes of `result_size` in a memfd.
FERRY_INTERNAL_API Buffer encode_shared_result(std::uint64_t call, std::uint64_t result_size,
                                               const RunStats& stats = {});
/// After the head of a flag_shm frame: maps the payload of the frame's memfd `fd` (taken over,
/// closed on failure) read-only. The body must end with its size. @throws ProtocolError, also
/// when the memfd is smaller than announced, empty, not a memfd sealed against shrinking
/// (Buffer::map_shared), or cannot be mapped; ShortOfResources when `fd_lost` (Frame::fd_lost)
/// or this process has no memory to map it.
FERRY_INTERNAL_API Buffer decode_shared_payload(BodyReader& r, int fd, bool fd_lost = false);
FERRY_INTERNAL_API Buffer encode_bye(ByeReason reason);
FERRY_INTERNAL_API ByeReason decode_bye(std::string_view body);
/// A whole init frame: run reference `ref` with the encoded arguments `args` (with flag_json in
/// `flags`, a JSON line of them).
FERRY_INTERNAL_API Buffer encode_init(std::uint32_t ref, std::string_view args = {}, std::uint8_t flags = 0);
FERRY_INTERNAL_API Buffer encode_contained(const Contained& c);
/// A whole contained frame into `out` (capacity `cap`) without allocating, for signal handlers:
/// `name` and `detail` are cut at max_contained_text. Returns the frame's size (0 if cap is too small).
FERRY_INTERNAL_API std::size_t encode_contained_into(char* out, std::size_t cap, ContainedKind kind,
                                                     std::uint64_t value, const char* name,
                                                     const char* detail) noexcept;
FERRY_INTERNAL_API Contained decode_contained(std::string_view body);
FERRY_INTERNAL_API Buffer encode_limits(const TaskLimits& l);
FERRY_INTERNAL_API TaskLimits decode_limits(std::string_view body);
FERRY_INTERNAL_API Init decode_init(std::string_view body);

}  // namespace ferry::detail::protocol
