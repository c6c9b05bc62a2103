// SPDX-License-Identifier: BSD-3-Clause
// The trace file of an executor (ExecutorOptions::trace, FERRY_TRACE): Chrome Trace Event JSON, one
// event per line, in the format docs/trace-format.md fixes (the contract with `ferry report`).
//
// Cost: the threads that emit events (submitting threads, the thread that reads a worker's
// result, the manager) format each event's line into one in-memory buffer under the trace's own
// mutex; no file I/O and no wake-up happens on their path. One writer thread, started with the
// trace, writes the buffer in whole lines: 100 ms after the first line that found it empty, or at
// once when 512 KiB are waiting. So a killed host leaves a file of whole lines (but for at most one
// partial last line, if the kill lands in the middle of a write), missing at most the last
// 100 ms. Bounded: the file stops at `max_bytes`, with a last "trace truncated" event (and, when
// the executor shuts down, the closing "stats" line: room for both is kept).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <typeindex>

#include <ferry/detail/export.hpp>
#include <ferry/stats.hpp>

#include "platform/fd.hpp"

namespace ferry::detail {

class FERRY_INTERNAL_API Trace {
 public:
  using Clock = std::chrono::steady_clock;

  /// The smallest size cap (ExecutorOptions::trace_max_bytes) accepted.
  static constexpr std::uint64_t min_max_bytes = 16 * 1024;
  /// How many files FERRY_TRACE's path gives a process by default (from_environment): the last
  /// this many executors' traces are kept, at most this many times trace_max_bytes on disk.
  static constexpr unsigned default_files = 16;

  /// What the trace is of: the header's `ferry` metadata event.
  struct Header {
    std::string backend;
    std::size_t max_workers = 0;
  };

  /**
  Creates `path` (mode 0600; an existing file of this user is made 0600 and truncated) and writes
  the header.
  Refuses, with std::invalid_argument naming the path and why, a symbolic link at `path` (never
  followed, not even a dangling one: O_NOFOLLOW), anything but a regular file (a FIFO, a device),
  a file owned by another user, a file with other hard links (it would write into another
  name's content), a file this process has open already, but for another trace (its input,
  its output: it would be destroyed), and one it has mapped (a library it loaded). When another executor, of this process or another, is writing `path`, this
  one writes `stem.2.ext` (then .3, ...) instead: see path(). The file is locked (flock) for the
  trace's life: that is how another process's executor sees it is being written.
  `files` > 0 (from_environment): the numbering of FERRY_TRACE, which keeps at most `files` files
  of this process: see from_environment. 0: the rule of a path the program names.
  @throws NoFreeFile when `files` > 0 and executors of this process are writing all its files.
  */
  Trace(const std::filesystem::path& path, std::uint64_t max_bytes, const Header& header,
        unsigned files = 0);
  /// Every file FERRY_TRACE's numbering may write is being written (or used) by this process.
  struct NoFreeFile : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  /**
  The trace FERRY_TRACE asks for: as the constructor, but a path it refuses or cannot create is
  no error. FERRY_TRACE traces a program without touching its code, and a program that never
  asked for a trace must not fail for it (every executor's constructor threw, ending such a
  program in std::terminate): why is said on stderr, once per path, and the executor runs
  without a trace (null).
  Each trace of this process from one FERRY_TRACE path takes a name none before it took, open or
  closed: `path`, then `stem.2.ext`, `stem.3.ext`... (a program that made one executor after
  another, one per test, per request, kept only the last one's trace, each written over the one
  before), until the process has `files` of them: then each next trace writes over the oldest
  of them that no executor is writing, emptied first, as a log is rotated, so that the last
  `files` traces are kept and the disk used is bounded (a service making an executor per request
  filled it). A file is written over only if it is still the one this process wrote: the same
  file (device and inode, never through a link) beginning with the header this process wrote
  there; one that is not (removed, replaced, written by another process, a child of fork()
  included) is no longer counted, and a new name is taken instead. Said once on stderr when the
  first file is written over, and when all `files` are being written (that executor runs without
  a trace). A child of fork() counts its own files from none.
  @throws std::invalid_argument for a `max_bytes` under min_max_bytes (the program's option).
  */
  static std::unique_ptr<Trace> from_environment(const std::filesystem::path& path, std::uint64_t max_bytes,
                                                 const Header& header, unsigned files = default_files);
  /// Flushes what is buffered (the file then ends without its closing line, as after a crash),
  /// unless close() ran.
  ~Trace();
  Trace(const Trace&) = delete;
  Trace& operator=(const Trace&) = delete;

  /// The file written (the path asked for, or its numbered sibling).
  const std::filesystem::path& path() const noexcept { return path_; }

  /// Nanoseconds of the trace's timeline (since the executor started, steady clock).
  std::int64_t at(Clock::time_point t) const noexcept { return (t - start_).count(); }
  std::int64_t now() const noexcept { return at(Clock::now()); }
  /// A time of the system clock (nanoseconds since the epoch: what workers measure) on the
  /// trace's timeline. One offset for the whole trace, read when it started, so that the times one
  /// worker measured keep their order; the system clock may drift from the steady one meanwhile
  /// (the callers keep a slice between its call's submission and its result's arrival).
  std::int64_t from_unix(std::int64_t unix_ns) const noexcept { return unix_ns - start_unix_ns_; }

  /// What a call is, for its events.
  struct CallRef {
    std::uint64_t id = 0;
    std::string_view task;
  };
  /// How a call that reached a worker ran: its slice on the worker's track.
  struct Slice {
    std::uint64_t tid = 0;  // the worker's track
    std::int64_t start = 0, end = 0;  // trace ns
    std::uint32_t items = 1;
    std::size_t first_input = SIZE_MAX;  // SIZE_MAX: not a map chunk
    std::uint64_t arg_bytes = 0, result_bytes = 0;
  };
  /// An error as the trace shows it: the ferry type without its namespace, and what().
  struct ErrorText {
    std::string type;
    std::string message;
  };
  /// The type and message of `error` (rethrown and caught; for failures only).
  static ErrorText describe(const std::exception_ptr& error);
  /// The dynamic type of `error` (a rethrow), typeid(void) when it is not a std::exception: what
  /// ExecutorStats::failed_by_type counts by, named only when asked (error_type_name).
  static std::type_index error_type(const std::exception_ptr& error);
  /// The name ErrorText::type gives that type: demangled, without "ferry::"; "unknown" for void.
  static std::string error_type_name(std::type_index type);

  /**
  The events of one moment, formatted under the trace's mutex, which it holds for its life: group
  the lines of one event (a slice and its queue end, a counter change) in one Batch. Cheap when
  nothing is written (closed or truncated).
  */
  class Batch {
   public:
    explicit Batch(Trace& t);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    /// A call was submitted: its queue wait begins (`b`, track 0).
    void queue_begin(const CallRef& call, std::int64_t ts);
    /// A call ran on a worker: the end of its queue wait at the slice's start (`e`), and its slice
    /// (`X`), with `error` if it failed.
    void slice(const CallRef& call, const Slice& s, const ErrorText* error);
    /// A call that never ran on a worker ended (`e` and the `call ended` instant, track 0).
    void call_ended(const CallRef& call, const ErrorText& error, std::int64_t ts);
    /// A worker said hello: its track's name and the `worker start` instant. `rank` < 0: local.
    void worker_start(std::uint64_t tid, int pid, std::string_view host, int rank, std::int64_t ts);
    /// A worker that died before its hello: its track is named after what is known.
    void name_track(std::uint64_t tid, int pid, int rank);
    /// A worker ended on purpose (`reason`: idle, memory, tasks, shutdown, resize, ...).
    void worker_exit(std::uint64_t tid, std::string_view reason, std::int64_t ts);
    /// A worker died; `error`: the error type its running call got ("" when it ran none).
    void worker_crash(std::uint64_t tid, std::string_view reason, std::string_view error, std::int64_t ts);
    /// The `pool` counters, when they changed, at most once per millisecond (a change inside the
    /// millisecond is written, at its own time, by a later call, or by close()).
    void counters(std::size_t queued, std::size_t running, std::size_t workers, std::int64_t ts);

   private:
    /// Appends the lines `format` writes, if they fit under the cap.
    template <class Format>
    void emit(std::int64_t ts, Format&& format);
    Trace& t_;
    std::unique_lock<std::mutex> lock_;
    std::size_t size_before_;
  };

  /// Ends the file: the last pending counters, the `stats` event, `]`; waits for the writer.
  /// Later events are dropped. Idempotent.
  void close(const ExecutorStats& stats);

  /// Writes what the writer has not yet, now (at exit(): what it gathers would be lost).
  void write_out_now();

 private:
  /// Counts `bytes` more into the file if they fit under the cap, keeping room for the closing
  /// lines; false when they do not.
  bool fits(std::size_t bytes);
  /// The cap is reached: writes `trace truncated`; nothing more is accepted.
  void truncate(std::int64_t ts);
  void run_writer();
  void write_out(const std::string& bytes);
  /// After a write that stopped `done` bytes into `bytes` with `error`: cuts the file back to its
  /// last whole line and ends it with `trace truncated` and `]` where they fit.
  void end_after_failed_write(const std::string& bytes, std::size_t done, int error);

  std::filesystem::path path_;
  std::string registered_;  // the key of path_ among the paths this process writes
  Fd fd_;
  int fork_slot_ = -1;  // where a child of fork() finds fd_ to close (trace.cpp: fork_closed)
  void* live_ = nullptr;  // the table of traces exit() writes out (trace.cpp: LiveTraces)
  /// Leaves that table: before fd_ is closed.
  void leave_live_table() noexcept;
  const pid_t pid_;
  const Clock::time_point start_;
  const std::int64_t start_unix_ns_;  // the system clock when start_ was read
  const std::uint64_t max_bytes_;

  std::mutex io_mu_;              // held while lines are taken from pending_ and written; before mu_
  std::mutex mu_;
  std::condition_variable wake_;
  std::string pending_;          // whole lines, not yet written
  std::string spare_;            // the writer's buffer until its thread starts
  std::uint64_t accepted_ = 0;   // bytes of the file once pending_ is written
  bool truncated_ = false;
  bool closed_ = false;
  bool stop_ = false;
  bool write_failed_ = false;    // writer only
  std::uint64_t written_ = 0;    // writer only: bytes in the file (whole lines)
  struct Counters {
    std::size_t queued = 0, running = 0, workers = 0;
    bool operator==(const Counters&) const = default;
  };
  Counters written_counters_;     // the last written
  Counters latest_counters_;      // the last reported
  std::int64_t latest_at_ = 0;    // when they were
  std::int64_t counters_at_ = INT64_MIN / 2;  // when the last were written
  std::thread writer_;
};

}  // namespace ferry::detail
