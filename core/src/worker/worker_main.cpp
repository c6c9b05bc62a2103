// SPDX-License-Identifier: BSD-3-Clause
// Worker loop: read frame → resolve task (cached) → check fingerprint → invoke → write result.
//
// A result is written before the next task starts, so when a worker dies the host knows exactly
// which task was running (the oldest unanswered one) and that the ones after it never started.
// Clean exits (shutdown, idle timeout, recycling) are always announced with a bye frame. A
// recycling worker decides before it answers its last call, and that answer says so
// (protocol::flag_last): the host knows nothing sent behind it was read.
// An idle timeout is said, not acted on: the worker goes on reading, runs the tasks the host had
// sent before it read the bye, and exits when the host tells it to (shutdown) or goes (EOF).
#include "worker/worker_main.hpp"

#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <ferry/ferry.hpp>

#include "wire/channel.hpp"
#include "plugins/library_cache.hpp"
#include "platform/debug.hpp"
#include "platform/format.hpp"
#include "wire/failure.hpp"
#include "wire/protocol.hpp"
#include "wire/ring.hpp"
#include "wire/shm.hpp"
#include "worker/containment.hpp"
#include "worker/stack_capture.hpp"

namespace ferry::detail {

namespace {

using protocol::WorkerExit;

std::size_t resident_bytes() {
  // /proc/self/statm: size resident shared text lib data dt (pages)
  int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long size = 0, resident = 0;
  if (std::sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// Descriptors open in this process (entries of /proc/self/fd), SIZE_MAX when even that
/// directory cannot be opened: the process has none left.
std::size_t open_descriptors() {
  int fd = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    ::close(fd);
    return SIZE_MAX;
  }
  std::size_t n = 0;
  while (dirent* e = ::readdir(dir))
    if (e->d_name[0] != '.') ++n;
  ::closedir(dir);
  return n - 1;  // not the one reading the directory
}

/// The lowest free descriptor number, -1 when there is none. One fcntl: cheap enough for every
/// task. Descriptors a task leaves open push it up (holes aside), so it is the first sign of a
/// leak; open_descriptors() then counts.
int lowest_free_descriptor(int any_open_fd) {
  int fd = ::fcntl(any_open_fd, F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) ::close(fd);
  return fd;
}

/// How many more descriptors than after its first task a worker may hold before it is recycled:
/// half of what its limit left it then, at least 64 (a task that keeps a few files or a
/// connection pool open is not a leak).
std::size_t descriptor_allowance(std::size_t baseline) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1 << 20;
  std::size_t limit = static_cast<std::size_t>(rl.rlim_cur);
  return std::max<std::size_t>(64, limit > baseline ? (limit - baseline) / 2 : 0);
}

/// CLOCK_REALTIME in ns since the epoch (vDSO: tens of ns).
std::uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

/// One getrusage (a system call, ~0.4 µs on these VMs): the CPU time this thread used so far (user
/// + system, in ns) and the process's peak RSS so far (ru_maxrss is process-wide even for
/// RUSAGE_THREAD: the high-water mark of its memory, in bytes).
struct Usage {
  std::uint64_t cpu_ns = 0;
  std::uint64_t max_rss = 0;
  static Usage now() {
    rusage ru{};
    if (::getrusage(RUSAGE_THREAD, &ru) != 0) return {};
    auto ns = [](const timeval& tv) {
      return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(tv.tv_usec) * 1000u;
    };
    return {ns(ru.ru_utime) + ns(ru.ru_stime), static_cast<std::uint64_t>(ru.ru_maxrss) * 1024u};
  }
};

struct Ref {
  protocol::Define define;
  const TaskRecordHeader* record = nullptr;
};

/// The task's signature as its plugin spells it (the text after the name in the record).
std::string signature_of(const TaskRecordHeader* rec) {
  const char* text = reinterpret_cast<const char*>(rec + 1);
  return std::string(text + rec->name_size + 1, rec->signature_size);
}

class WorkerLoop {
 public:
  explicit WorkerLoop(const WorkerConfig& config)
      : config_(config), reader_(config.max_frame_bytes) {
    if (config_.containment) limits_ = config_.containment->executor_limits();
    if (in_) reader_.set_descriptor_source(config_.fd);  // a shared payload's memfd
  }

  /// errno of the send whose failure ended the loop with io_error (0 if none was recorded).
  int send_errno() const noexcept { return send_errno_; }

  int run() {
    protocol::Hello hello{protocol::version, plugin_abi_version, static_cast<int>(::getpid()),
                          FERRY_VERSION_STRING, host_name()};
    if (!send(protocol::encode_hello(hello))) return static_cast<int>(WorkerExit::io_error);
    for (;;) {
      Frame f;
      try {
        int status = next_frame(f);
        if (status >= 0) return status;
        switch (f.header.type) {
          case protocol::FrameType::define: {
            auto d = protocol::decode_define(f.view());
            refs_[d.ref] = Ref{std::move(d), nullptr};
            break;
          }
          case protocol::FrameType::task:
            if (int exit = run_task(f); exit >= 0) return exit;
            if (leaving_) return bye(*leaving_);  // its answer said it was the last
            if (memory_grew()) {
              // Measured with the call's arguments gone. Nothing sent to it yet: it leaves now
              // (a call the host sends meanwhile crosses the bye, and counts once against that
              // call). A frame waits: the next call's answer is its last.
              if (!frames_waiting()) return bye(protocol::ByeReason::memory_growth);
              grown_ = true;
            }
            break;
          case protocol::FrameType::limits:
            // The limits of the tasks that follow, already merged with the executor's.
            limits_ = protocol::decode_limits(f.view());
            break;
          case protocol::FrameType::init:
            if (!run_initializer(protocol::decode_init(f.view()), f.header.flags))
              return static_cast<int>(WorkerExit::init_failed);
            if (init_reply_failed_) return static_cast<int>(WorkerExit::io_error);
            break;
          case protocol::FrameType::shutdown:
            return bye(protocol::ByeReason::shutdown);
          default:
            throw protocol::ProtocolError("unexpected frame type from host");
        }
      } catch (const protocol::ProtocolError& e) {
        debug_log("worker: protocol error: %s", e.what());
        return static_cast<int>(WorkerExit::protocol_error);
      }
      reader_.trim();
      if (result_.capacity() > (1 << 20)) result_ = Buffer();
    }
  }

 private:
  bool send(const Buffer& b, std::string_view payload = {}) {
    if (out_) return ring_send({b.view(), payload});
    return send_all(config_.fd, {b.view(), payload});
  }

  /// Into the ring to the agent, waiting for room as long as the agent is there; a descriptor
  /// (`pass`) goes first over the channel with a byte of its own (FrameReader::collect).
  bool ring_send(std::initializer_list<std::string_view> pieces, int pass = -1) {
    if (pass >= 0 && !send_all(config_.fd, {std::string_view("", 1)}, pass)) return false;
    for (std::string_view p : pieces) {
      while (!p.empty()) {
        long n = out_->write(p.data(), p.size());
        if (n < 0) {
          errno = EPROTO;
          return false;
        }
        if (n > 0) {
          p.remove_prefix(static_cast<std::size_t>(n));
          if (out_->consumer_waits()) ring_doorbell();
          continue;
        }
        out_->wait_for_space(ring_look_ms);
        if (agent_gone()) {
          errno = EPIPE;  // not what a doorbell left (ENOBUFS would read as a full memory cgroup)
          return false;
        }
      }
    }
    return true;
  }

  /// The agent sleeps in poll on the channel, not on a futex: a byte there wakes it (when it
  /// says it sleeps waiting for bytes from this worker, or for room in the ring to it).
  void ring_doorbell() {
    char bell = 0;
    (void)::send(config_.fd, &bell, 1, MSG_NOSIGNAL | MSG_DONTWAIT);  // full: it has bells to read
  }

  /// Whether the channel says the agent is gone (EOF or an error). Descriptors found are kept
  /// for the frames that announce them.
  bool agent_gone() {
    ssize_t n = reader_.collect(config_.fd, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

  /// next_frame, from the ring: read what is there, else sleep on the ring's futex (a system call
  /// less each way than the channel's poll and recvmsg, and the agent's write wakes it at once),
  /// looking at the channel now and then for the agent's end.
  int next_ring_frame(Frame& f) {
    const bool idle_limit = config_.idle_timeout.count() > 0;
    const auto idle_until = deadline_after(config_.idle_timeout);  // saturating: never overflows
    for (;;) {
      if (reader_.next(f)) return -1;
      ssize_t n = reader_.fill([this](char* into, std::size_t k) { return static_cast<ssize_t>(in_->read(into, k)); });
      if (n < 0) throw protocol::ProtocolError("the ring from the agent is corrupt");
      if (n > 0) {
        if (in_->producer_waits()) ring_doorbell();
        continue;
      }
      usage_fresh_ = false;  // waiting: what this thread spends now is no call's
      int ms = ring_look_ms;
      if (idle_limit && !said_idle_ && !reader_.partial()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(idle_until - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          say_idle();
          continue;
        }
        ms = static_cast<int>(std::min<long long>(ms, left.count() + 1));
      }
      in_->wait_for_data(ms);
      if (in_->empty() && agent_gone()) return static_cast<int>(WorkerExit::host_gone);
    }
  }

  int bye(protocol::ByeReason reason) {
    send(protocol::encode_bye(reason));
    return static_cast<int>(WorkerExit::clean);
  }

  /// Its idle time is up: says so once, and goes on reading without an idle limit. The host may
  /// have sent a task before it read the bye (it sent it after this worker's hello, or its last
  /// result, and a loaded host can take longer than the idle time): that task is run and answered
  /// as any other. The host sends no more, and once this worker's calls are answered, tells it to
  /// shut down. Leaving at once handed such a task back to the host, which cannot tell an honest
  /// bye over a call from a task's forgery of one, and a call crossed by three such byes failed
  /// (Pool::handle_bye, max_handed_back).
  void say_idle() {
    said_idle_ = true;
    send(protocol::encode_bye(protocol::ByeReason::idle_timeout));  // failed: the host is gone (EOF next)
  }

  /// -1 with a frame in `f`, or an exit code.
  int next_frame(Frame& f) {
    if (in_) return next_ring_frame(f);
    for (;;) {
      if (reader_.next(f)) return -1;
      ssize_t n = -1;
      bool would_block = true;
      // Busy-poll briefly: on these VMs waking a blocked process on another vCPU costs ~75 µs,
      // more than the whole round trip when the host sends the next task right away.
      if (config_.spin.count() > 0) {
        auto spin_until = std::chrono::steady_clock::now() + config_.spin;
        for (;;) {
          n = reader_.fill(config_.fd, MSG_DONTWAIT);
          if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            would_block = false;
            break;
          }
          usage_fresh_ = false;  // waiting: what this thread spends now is no call's
          if (std::chrono::steady_clock::now() >= spin_until) break;
          // When the host shares our vCPU, spinning would starve the very thread that is about
          // to send the next task: yield (a no-op when nothing else wants this vCPU).
          ::sched_yield();
        }
      }
      if (would_block) {
        usage_fresh_ = false;
        // Wait in poll(POLLIN), not in a blocking recvmsg: a Unix socket has one wait queue for
        // both directions, and a reader blocked in recvmsg is woken each time the peer consumes
        // what this worker wrote (write space), finds nothing and sleeps again. That spurious
        // wake-up is a pair of context switches on the very vCPU where the peer is reading our
        // result (the MPI agent: docs/benchmarks.md). poll's wait filters wake-ups by event.
        const bool idle_limit = config_.idle_timeout.count() > 0 && !said_idle_ && !reader_.partial();
        // poll takes an int of milliseconds (24.8 days at most): a longer idle time is waited
        // for in several polls, up to a deadline that saturates instead of overflowing.
        auto idle_until = idle_limit ? deadline_after(config_.idle_timeout) : Clock::time_point::max();
        pollfd p{config_.fd, POLLIN, 0};
        for (;;) {
          int wait_ms = -1;
          if (idle_until != Clock::time_point::max()) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(idle_until - Clock::now()).count();
            if (left <= 0) {
              say_idle();
              idle_until = Clock::time_point::max();  // waits on, for a task or the host's word
              continue;
            }
            wait_ms = static_cast<int>(std::min<long long>(left, INT_MAX));
          }
          int r = ::poll(&p, 1, wait_ms);
          if (r > 0 || (r < 0 && errno != EINTR)) break;
          // 0: a slice of a long idle time ended, or the idle time itself (the next turn says).
        }
        n = reader_.fill(config_.fd, 0);
      }
      if (n == 0) return static_cast<int>(WorkerExit::host_gone);
      if (n < 0) return static_cast<int>(WorkerExit::io_error);
    }
  }

  /// Sends why `call` failed; a task's failure carries how the call ran (begin_measure()).
  bool reply_failure(std::uint64_t call, const Failure& why,
                     protocol::ResultStatus status = protocol::ResultStatus::failed) {
    Buffer out = encode_failure(call, why, status);
    if (status == protocol::ResultStatus::failed) {
      end_measure();
      protocol::stamp_result_stats(out, stats_);
      decide_leaving();
      if (leaving_) protocol::mark_last_answer(out);
    }
    return send(out);
  }

  /// Resolves a reference; nullptr with `why` set on failure.
  /// resolve, and for a frame flagged JSON a record with the JSON entry point: FERRY_WRAP plugins
  /// are built without it (it costs most of their compile time, and they are submitted by
  /// function, never as JSON).
  const TaskRecordHeader* resolve_entry(Ref& ref, std::uint8_t frame_flags, Failure& why) {
    const TaskRecordHeader* rec = resolve(ref, why);
    if (rec && (frame_flags & protocol::flag_json) && !rec->invoke_json) {
      why = Failure::no_json_entry(ref.define.library);
      return nullptr;
    }
    return rec;
  }

  const TaskRecordHeader* resolve(Ref& ref, Failure& why) {
    if (ref.record) return ref.record;
    const auto& d = ref.define;
    if (d.kind == protocol::RefKind::main_program) {
      // Really try: loading the host's executable is what fails, and its message is the reason.
      Failure load;
      why = Failure::main_program(d.library, libs_.load(d.library, load) != nullptr
                                                 ? "the executable exports no ferry task for this function"
                                                 : load.message);
      return nullptr;
    }
    const TaskRecordHeader* rec = libs_.find(d.library, d.name, why);
    if (!rec) return nullptr;
    if (d.fingerprint != 0 && rec->fingerprint != d.fingerprint) {
      why = Failure::signature_mismatch(d.library, signature_of(rec));
      return nullptr;
    }
    // The same signature text, but a user type in it defined otherwise (named alike, fields
    // reordered or changed): its values would be read as wrong ones.
    if (d.fingerprint != 0) {
      std::string_view plugin_layout = rec->layout ? rec->layout() : "";
      if (plugin_layout != d.layout) {
        why = Failure::signature_mismatch(d.library, signature_of(rec),
                                          plugin_layout.empty() ? "(no user type)" : std::string(plugin_layout));
        return nullptr;
      }
    }
    ref.record = rec;
    return rec;
  }

  /// Runs a resolved record; false with `why` set on failure. Results land in result_. With a
  /// `call`, a successful result is sent from inside the entry point, before the arguments are
  /// destroyed (`sent` then says whether sending worked); without, nothing is sent.
  bool invoke(const TaskRecordHeader* rec, std::string_view args, std::uint32_t items,
              std::uint8_t frame_flags, Failure& why, std::optional<std::uint64_t> call = std::nullopt) {
    // A block left by a call whose result was never sent (a chunk that failed after its first
    // results went into shared memory) is not this call's: kept, it carried the next result,
    // and a void task's empty one went as a shared payload of 0 bytes, which the host refuses
    // (the worker was killed for a malformed frame). Released, it waits in the block cache.
    if (result_.fd() >= 0) result_ = Buffer();
    result_.clear();
    error_.clear();
    BufferWriter rw(result_), ew(error_);
    std::uint32_t flags = (frame_flags & protocol::flag_keep_going) ? invoke_keep_going : 0;
    if ((frame_flags & protocol::flag_shared_args) && !(frame_flags & protocol::flag_json)) {
      // The count of shared trailing arguments leads the arguments.
      std::uint32_t shared = args.empty() ? 0 : static_cast<unsigned char>(args.front());
      if (!args.empty()) args.remove_prefix(1);
      flags |= shared << invoke_shared_shift;
    }
    InvokeContext ctx{args.data(), args.size(), items, 0, InvokeStatus::ok, flags, &rw, &ew};
    if (call) {
      delivery_ = Delivery{*call, false, false, 0};
      ctx.deliver = [](InvokeContext& c) noexcept {
        auto* self = static_cast<WorkerLoop*>(c.worker);
        self->delivery_.sent = true;
        self->delivery_.ok = self->send_result(self->delivery_.call);
        if (!self->delivery_.ok) self->delivery_.error = errno;
      };
      ctx.worker = this;
    }
    forget_throws();  // a throw recorded before this call is not this task's
    ((frame_flags & protocol::flag_json) ? rec->invoke_json : rec->invoke)(ctx);
    if (call && !delivery_.sent && ctx.status == InvokeStatus::ok) {
      // An entry point that returned without delivering (no item ran): send now.
      delivery_.sent = true;
      delivery_.ok = send_result(*call);
      if (!delivery_.ok) delivery_.error = errno;
    }
    if (ctx.status == InvokeStatus::ok && call && delivery_.too_large != 0) {
      // Worded here, not in send_result: that runs inside the entry point's noexcept delivery,
      // where an allocation that fails would end the worker.
      why = Failure::in_stage(InvokeStatus::encode_result_failed, items - 1, "std::length_error",
                              "a result of " + format_size(delivery_.too_large) + " does not fit a frame (" +
                                  format_size(config_.max_frame_bytes) +
                                  ": FERRY_MAX_FRAME_BYTES, or twice the executor's limits.memory when it is set) and " +
                                  (delivery_.pass_refused
                                       ? std::string("its shared memory could not be passed to the host (") +
                                             std::strerror(ETOOMANYREFS) +
                                             ": this user's descriptors in flight on UNIX sockets are past the "
                                             "worker's RLIMIT_NOFILE)"
                                       : "no shared memory could be had for it (" + why_no_shared_block() + ")"),
                              signature_of(rec));
      return false;
    }
    if (ctx.status == InvokeStatus::ok) return true;
    std::string_view e = error_.view();  // "<exception type>\0<what>"
    auto nul = e.find('\0');
    why = Failure::in_stage(ctx.status, ctx.failed_item, std::string(e.substr(0, nul)),
                            nul == std::string_view::npos ? std::string() : std::string(e.substr(nul + 1)),
                            signature_of(rec));
    // Where the exception was thrown: recorded by ferry-worker's __cxa_throw (remote stacks).
    if (why.kind == FailureKind::task_threw) why.stack = last_throw_stack(why.exception_type);
    return false;
  }

  /// -1 when the loop goes on, else the worker's exit code.
  int run_task(Frame& f) {
    protocol::BodyReader r(f.view());
    auto head = protocol::decode_task_head(r);
    begin_measure();
    auto it = refs_.find(head.ref);
    if (it == refs_.end()) throw protocol::ProtocolError("task uses an undefined reference");
    ++tasks_done_;  // this one, counted when its answer decides whether it is the last
    leaving_.reset();
    leaving_decided_ = false;
    Failure why;
    // The task's limits before its plugin is resolved: a plugin loaded for it (and its static
    // initialisers) is the task's, and was loaded under the limits of the task before (a task
    // given 1 GiB could not load its plugin under the executor's 1 MiB).
    if (config_.containment) config_.containment->begin_task(limits_);
    const TaskRecordHeader* rec = resolve_entry(it->second, f.header.flags, why);
    bool ok = false;
    if (rec) {
      if (f.header.flags & protocol::flag_shm) {
        // Large arguments: mapped from the host's memfd (read-only) and decoded in place. The
        // result goes back before they are unmapped (it is sent before the arguments die); the
        // host may then reuse that memory, which nothing here reads any more.
        Buffer args;
        try {
          args = protocol::decode_shared_payload(r, f.fd.release(), f.fd_lost);
          ok = invoke(rec, args.view(), head.items, f.header.flags, why, head.call);
        } catch (const protocol::ShortOfResources& e) {
          // This worker's own want (a task left its descriptors open, or mapped its memory): the
          // call's arguments fail to arrive, as arguments that cannot be decoded (a limit that
          // explains it is reported below). It was an exit as for a malformed frame.
          why = Failure::in_stage(InvokeStatus::decode_arguments_failed, 0, "ferry::detail::protocol::ShortOfResources",
                                  std::string("the worker could not receive the arguments: ") + e.what(),
                                  signature_of(rec));
        }
      } else {
        ok = invoke(rec, r.rest(), head.items, f.header.flags, why, head.call);
      }
    }
    if (rec && !ok && config_.containment) {
      // A limit that explains the failure is reported instead of the failure: the host replaces
      // a worker that went past its limits.
      if (auto hit = config_.containment->explain_failure(why.exception_type, why.message)) {
        send(protocol::encode_contained(*hit));
        return static_cast<int>(WorkerExit::contained);
      }
    }
    int io_error = static_cast<int>(WorkerExit::io_error);
    if (!ok) {
      if (reply_failure(head.call, why)) return -1;
      send_errno_ = errno;
      return io_error;
    }
    if (!delivery_.ok) send_errno_ = delivery_.error;
    return delivery_.ok ? -1 : io_error;
  }

  /// How this call runs (ferry::TaskInfo): its wall-clock start, and this thread's CPU time so
  /// far. With calls pipelined back to back (the next frame was already here), the reading taken
  /// when the previous call ended still holds: one getrusage per call instead of two, and only
  /// the loop's bookkeeping between the two calls (a few µs) counts toward the later one. After
  /// waiting for a frame (spinning or blocked), a fresh reading: the wait is no call's.
  void begin_measure() {
    stats_ = {};
    stats_.started_ns = realtime_ns();
    cpu_at_start_ = usage_fresh_ ? usage_.cpu_ns : Usage::now().cpu_ns;
  }
  /// The call's result is encoded (or it failed): its end, CPU time and the peak RSS so far.
  void end_measure() {
    usage_ = Usage::now();
    usage_fresh_ = true;
    stats_.finished_ns = realtime_ns();
    stats_.cpu_ns = usage_.cpu_ns > cpu_at_start_ ? usage_.cpu_ns - cpu_at_start_ : 0;
    stats_.max_rss = usage_.max_rss;
  }

  static std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return {};
    return name;
  }

  /// Sends result_ as the successful result of `call`, marked when it is the worker's last.
  bool send_result(std::uint64_t call) {
    end_measure();
    decide_leaving();
    if (result_.fd() >= 0) {
      // A large result was encoded straight into a memfd: send the descriptor, not the bytes. The
      // memory now belongs to the host; this worker drops its mapping.
      Buffer out = protocol::encode_shared_result(call, result_.size(), stats_);
      if (leaving_) protocol::mark_last_answer(out);
      seal_for_peer(result_.fd());  // the host maps only a block nobody can shrink
      bool ok = out_ ? ring_send({out.view()}, result_.fd()) : send_all(config_.fd, {out.view()}, result_.fd());
      if (!ok && errno == ETOOMANYREFS) {
        // The kernel refused to pass the memfd: this user has more descriptors in flight on UNIX
        // sockets than this process's RLIMIT_NOFILE (a task of another worker can hold them).
        // Nothing went (the descriptor travels with the first byte): the bytes go inline when
        // they fit a frame, else the call fails saying why. It ended the worker (exit 67).
        delivery_.pass_refused = true;
        ok = send_inline_result(call);
      }
      result_.give_away();
      result_ = Buffer();
      return ok;
    }
    // No shared memory was to be had for a result too large for a frame (memfd_create refused
    // by a seccomp profile, no descriptor left): see send_inline_result.
    return send_inline_result(call);
  }

  /// Sends result_'s bytes in the frame of `call`'s result. One that does not fit a frame is not
  /// sent (the host killed this worker for a malformed frame): invoke() fails the call instead.
  bool send_inline_result(std::uint64_t call) {
    if (result_.size() > config_.max_frame_bytes - protocol::result_head_size) {
      delivery_.too_large = result_.size();
      return true;
    }
    Buffer out = protocol::encode_result_head({call, protocol::ResultStatus::ok, stats_}, result_.size());
    if (leaving_) protocol::mark_last_answer(out);
    return send(out, result_.view());
  }

  /// Runs the initializer with its arguments (ferry::Call), its result dropped.
  bool run_initializer(const protocol::Init& init, std::uint8_t frame_flags) {
    auto it = refs_.find(init.ref);
    if (it == refs_.end()) throw protocol::ProtocolError("init uses an undefined reference");
    Failure why;
    const TaskRecordHeader* rec = resolve_entry(it->second, frame_flags, why);
    // What it returns (a JSON task may return a value) is dropped, as concurrent.futures does.
    if (rec && invoke(rec, init.args, 1, frame_flags & protocol::flag_json, why)) {
      // Said before any task runs: an initializer failure the host receives after this is a
      // task's forgery (a task can write frames on the channel), never the initializer's.
      if (!send(protocol::encode_result_head({0, protocol::ResultStatus::ok, {}}, 0))) {
        // The host would wait for this reply for good (the worker is not "up" until it comes).
        send_errno_ = errno;
        init_reply_failed_ = true;
      }
      return true;
    }
    // Tell the host why, then exit: a worker whose initializer failed must not run tasks.
    reply_failure(0, why, protocol::ResultStatus::init_failed);
    return false;
  }

  /// Whether the call ending is this worker's last, and why (leaving_): decided once, before its
  /// answer goes out, so that answer can say so (protocol::flag_last) and the host knows that
  /// what it sent behind it was never read. Without that mark a bye right after an answer could
  /// be a task's, written as its call's first act, and the host had to count it against that
  /// call (a recycling worker's honest byes failed calls that never ran, Pool::handle_bye).
  /// Runs inside the entry point's delivery, the call's arguments alive: memory is measured after
  /// the call instead (memory_grew), where they count for nothing (a review: calls of 100 MiB
  /// arguments recycled workers that kept nothing). Anything thrown means no recycling.
  void decide_leaving() noexcept {
    if (std::exchange(leaving_decided_, true)) return;
    try {
      leaving_ = recycle_reason();
    } catch (...) {
      leaving_.reset();
    }
  }

  /// Why the worker should be replaced after the call ending (tasks_done_ counts it), if it should.
  std::optional<protocol::ByeReason> recycle_reason() {
    if (grown_) return protocol::ByeReason::memory_growth;  // seen after the call before
    if (config_.max_tasks > 0 && tasks_done_ >= config_.max_tasks) return protocol::ByeReason::max_tasks;
    if (config_.containment && fork_check_due() && config_.containment->fork_refused()) {
      // A task met its processes limit and went on: what it left running counts against the
      // next task's limit, so a fresh worker takes over.
      return protocol::ByeReason::process_limit;
    }
    if (descriptors_leaked()) return protocol::ByeReason::descriptor_growth;
    return std::nullopt;
  }

  /// After a call, its arguments and result gone: whether the resident size grew past
  /// max_memory_growth since the first call (the baseline, taken then).
  bool memory_grew() {
    if (config_.max_memory_growth == 0) return false;
    const std::size_t rss = resident_bytes();
    if (baseline_rss_ == 0) {
      baseline_rss_ = rss;
      return false;
    }
    return rss > baseline_rss_ && rss - baseline_rss_ > config_.max_memory_growth;
  }

  /// Whether bytes from the host wait to be read (a call pipelined behind the one that ended).
  bool frames_waiting() {
    if (reader_.partial()) return true;
    if (in_) return !in_->empty();
    pollfd p{config_.fd, POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;  // an error too: the next read says what it is
  }

  /// Whether to look for forks refused at the processes limit after this task: reading the
  /// cgroup costs about a microsecond, a tenth of a short task's round trip, so a burst of
  /// pipelined tasks is checked every 64 tasks and whenever the worker is about to wait for more.
  bool fork_check_due() {
    if (++unchecked_tasks_ < 64 && reader_.partial()) return false;
    unchecked_tasks_ = 0;
    return true;
  }

  /// The result of the running call, sent from inside the task's entry point.
  struct Delivery {
    std::uint64_t call = 0;
    bool sent = false;
    bool ok = false;
    int error = 0;  // errno of a failed send
    std::size_t too_large = 0;  // bytes of a result not sent because it fits no frame (send_result)
    bool pass_refused = false;  // its memfd could not be passed either (ETOOMANYREFS)
  };

  /// Whether the tasks left so many descriptors open that the next task could starve (EMFILE in
  /// an innocent task, or in this loop receiving a shared-memory argument or loading a plugin).
  bool descriptors_leaked() {
    int lowest = lowest_free_descriptor(config_.fd);
    if (lowest < 0) return true;  // none left at all
    if (fd_baseline_count_ == 0) {
      fd_baseline_count_ = open_descriptors();
      fd_last_lowest_ = lowest;
      fd_allowance_ = descriptor_allowance(fd_baseline_count_);
      return false;
    }
    if (lowest <= fd_last_lowest_ + 32) return false;
    std::size_t now = open_descriptors();
    if (now == SIZE_MAX || now > fd_baseline_count_ + fd_allowance_) return true;
    fd_last_lowest_ = lowest;  // counted: look again only once it moves on by as much
    return false;
  }

  WorkerConfig config_;
  Delivery delivery_;
  int send_errno_ = 0;              // errno of the send whose failure ends the loop (io_error)
  bool init_reply_failed_ = false;  // the initializer ran, its reply could not be sent
  bool said_idle_ = false;  // said bye(idle_timeout): waits without an idle limit (say_idle)
  std::optional<protocol::ByeReason> leaving_;  // the call ending is its last (decide_leaving)
  bool leaving_decided_ = false;
  bool grown_ = false;  // past max_memory_growth after a call, with a frame waiting: the next call is the last
  protocol::RunStats stats_;       // of the call running or just ended
  Usage usage_;                    // taken when the last call ended
  bool usage_fresh_ = false;       // nothing but the loop's bookkeeping ran since usage_
  std::uint64_t cpu_at_start_ = 0;
  std::size_t fd_baseline_count_ = 0;  // descriptors open after the first task
  int fd_last_lowest_ = 0;             // lowest free descriptor when last counted
  std::size_t fd_allowance_ = 0;
  FrameReader reader_;
  Ring* in_ = config_.ring_in;    // from the agent, or none
  Ring* out_ = config_.ring_out;  // to the agent, or none
  // How long the worker sleeps on a ring before it looks at the channel for the agent's end (the
  // agent's death also ends it by PR_SET_PDEATHSIG).
  static constexpr int ring_look_ms = 250;
  LibraryCache libs_;
  std::unordered_map<std::uint32_t, Ref> refs_;
  Buffer result_, error_;
  std::size_t tasks_done_ = 0;
  std::size_t unchecked_tasks_ = 0;  // tasks since fork_refused() was last asked
  std::size_t baseline_rss_ = 0;
  protocol::TaskLimits limits_;  // of the next task
};

void on_terminal_signal(int) {}

/// A ^C or a hang-up at the terminal reaches every process of the host's process group, workers
/// included. The host decides what it means: a program that handles it goes on with its calls
/// running (it may cancel or shut down), one that does not dies of it and takes its workers with
/// it (PR_SET_PDEATHSIG). So the worker catches them and does nothing. A handler, not SIG_IGN:
/// an exec puts a handled signal back to its default, so a program a task starts still gets
/// them (SIG_IGN would be inherited); SA_RESTART keeps most interrupted system calls going.
void outlive_terminal_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_terminal_signal;
  sa.sa_flags = SA_RESTART;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGHUP}) {
    struct sigaction old {};
    // Ignored when the worker started (nohup): left so.
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) ::sigaction(sig, &sa, nullptr);
  }
}

bool parse_number(const char* s, unsigned long long& out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(s, &end, 10);
  return errno == 0 && end && *end == '\0';
}

constexpr const char* usage_text =
    "usage: ferry-worker [--fd N] [--parent PID] [--idle-timeout-ms MS] [--max-memory-growth BYTES]\n"
    "                    [--max-tasks N] [--spin-us US] [--max-frame-bytes BYTES] [--rings 0|1]\n"
    "                    [--limits MEMORY,CPU_SECONDS,OPEN_FILES,PROCESSES,FILE_SIZE]\n"
    "                    [--sandbox FLAGS] [--read PATH]... [--write PATH]... [--private-tmp 0|1]\n"
    "                    [--private-tmp-id DEV:INO] [--terminal-utf8 0|1]\n"
    "       ferry-worker --version\n"
    "Runs ferry tasks sent by a host over the socket at descriptor N (default 3). Started by\n"
    "libferry; not meant to be run by hand. --sandbox FLAGS: 1 network allowed, 2 exec allowed,\n"
    "4 best effort.\n";

/// "MEMORY,CPU,NOFILE,NPROC,FSIZE": five numbers, 0 = none.
bool parse_limits(const char* s, protocol::TaskLimits& out) {
  std::uint64_t* fields[] = {&out.memory, &out.cpu_seconds, &out.open_files, &out.processes,
                             &out.file_size};
  for (int i = 0; i < 5; ++i) {
    char* end = nullptr;
    errno = 0;
    if (!s || *s < '0' || *s > '9') return false;
    *fields[i] = std::strtoull(s, &end, 10);
    if (errno != 0 || *end != (i < 4 ? ',' : '\0')) return false;
    s = end + 1;
  }
  return true;
}

}  // namespace

int run_worker(const WorkerConfig& config) {
  WorkerLoop loop(config);
  int code = loop.run();
  // The reply could not be sent for want of memory (ENOBUFS: a socket's buffer is charged too)
  // and the memory cgroup met its limit: a charge in a system call (a write to a memfd or tmpfs)
  // sends no notification, so the exit code says it, since nothing more can be written.
  if (code == static_cast<int>(WorkerExit::io_error) && config.containment &&
      (loop.send_errno() == ENOBUFS || loop.send_errno() == ENOMEM) && config.containment->memory_ceiling_met())
    code = static_cast<int>(WorkerExit::memory_ceiling);
  return code;
}

/// The rings' memfd, the first byte on the channel; "" or why not.
std::string receive_rings(int fd, SharedRings& rings) {
  FrameReader carrier(0);
  ssize_t n;
  do {
    n = carrier.collect(fd, 0, 1);  // the one byte: what follows is the loop's
  } while (n < 0 && errno == EINTR);
  try {
    Fd memfd = n > 0 ? carrier.take_descriptor() : Fd();
    if (!memfd) return "no rings on the channel";
    rings = SharedRings::map(memfd.get());
  } catch (const std::exception& e) {
    return std::string("cannot map the rings: ") + e.what();
  }
  return {};
}

int worker_main(int argc, char** argv) {
  WorkerConfig config;
  bool rings_wanted = false;
  ContainmentConfig contain;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--version") {
      std::printf("ferry-worker %s (protocol %u, plugin ABI %u)\n", FERRY_VERSION_STRING,
                  protocol::version, plugin_abi_version);
      return 0;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(usage_text, stdout);
      return 0;
    }
    if (a == "--read" || a == "--write") {
      if (i + 1 >= argc) {
        std::fputs(usage_text, stderr);
        return static_cast<int>(WorkerExit::usage);
      }
      (a == "--read" ? contain.read : contain.write).emplace_back(argv[++i]);
      continue;
    }
    if (a == "--private-tmp-id") {  // DEV:INO
      std::uint64_t dev = 0, ino = 0;
      int end = 0;
      if (i + 1 >= argc || std::sscanf(argv[i + 1], "%" SCNu64 ":%" SCNu64 "%n", &dev, &ino, &end) != 2 ||
          argv[i + 1][end] != '\0') {
        std::fputs(usage_text, stderr);
        return static_cast<int>(WorkerExit::usage);
      }
      contain.private_tmp_id.emplace(dev, ino);
      ++i;
      continue;
    }
    if (a == "--limits") {
      if (i + 1 >= argc || !parse_limits(argv[i + 1], contain.limits)) {
        std::fputs(usage_text, stderr);
        return static_cast<int>(WorkerExit::usage);
      }
      ++i;
      continue;
    }
    unsigned long long v = 0;
    if (i + 1 >= argc || !parse_number(argv[i + 1], v)) {
      std::fputs(usage_text, stderr);
      return static_cast<int>(WorkerExit::usage);
    }
    ++i;
    if (a == "--fd") config.fd = static_cast<int>(v);
    else if (a == "--parent") config.parent = static_cast<int>(v);
    else if (a == "--idle-timeout-ms")
      config.idle_timeout = std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(
          std::min<unsigned long long>(v, static_cast<unsigned long long>(std::chrono::milliseconds::max().count()))));
    else if (a == "--max-memory-growth") config.max_memory_growth = v;
    else if (a == "--max-tasks") config.max_tasks = v;
    else if (a == "--spin-us") config.spin = std::chrono::microseconds(v);
    else if (a == "--max-frame-bytes") config.max_frame_bytes = v;
    else if (a == "--rings") rings_wanted = v != 0;
    else if (a == "--private-tmp") contain.private_tmp = v != 0;
    else if (a == "--terminal-utf8") contain.terminal_utf8 = v != 0;
    else if (a == "--sandbox") {
      contain.sandbox = true;
      contain.network = v & 1;
      contain.exec = v & 2;
      contain.best_effort = v & 4;
    } else {
      std::fputs(usage_text, stderr);
      return static_cast<int>(WorkerExit::usage);
    }
  }
  if (config.parent > 0) {
    // Die with the host. PDEATHSIG covers a host that dies while a task runs; EOF on the channel
    // covers the rest. The getppid check closes the race with a host that died before prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != config.parent) return static_cast<int>(WorkerExit::host_gone);
  }
  // With --rings 1 (an MPI agent's worker) the channel's first byte carries the memfd of the
  // shared-memory rings (wire/ring.hpp); the frames then go through them.
  SharedRings rings;
  Ring ring_in, ring_out;
  if (rings_wanted) {
    std::string why = receive_rings(config.fd, rings);
    if (!why.empty()) {
      std::fprintf(stderr, "ferry-worker: %s\n", why.c_str());
      return static_cast<int>(WorkerExit::io_error);
    }
    ring_in = rings.to_worker();
    ring_out = rings.to_agent();
    config.ring_in = &ring_in;
    config.ring_out = &ring_out;
  }
  if (::fcntl(config.fd, F_GETFD) < 0) {
    std::fprintf(stderr, "ferry-worker: descriptor %d is not open\n", config.fd);
    return static_cast<int>(WorkerExit::usage);
  }
  // Processes a task starts must not inherit the channel.
  ::fcntl(config.fd, F_SETFD, FD_CLOEXEC);
  // Before the hello, while the worker is single-threaded (unshare and seccomp need that).
  Containment containment;
  if (std::string why = containment.setup(contain, config.fd); !why.empty()) {
    std::fprintf(stderr, "ferry-worker: containment: %s\n", why.c_str());
    return static_cast<int>(WorkerExit::containment);
  }
  config.containment = &containment;
  // Large results on the heap, sent through the channel, up to half a frame: in a memfd, their
  // pages stay charged to the worker's memory cgroup while the host holds the result. Beyond
  // that, only shared memory can carry them (the host refuses a frame past its limit).
  if (containment.memory_cgroup()) set_shared_block_floor(static_cast<std::size_t>(config.max_frame_bytes / 2));
  // After the containment (whose guardian must not inherit it): a fatal signal sends a crashed
  // frame with the stack (TerminatedWorkerError::remote_stack).
  install_crash_reporter(config.fd, config.ring_out);
  outlive_terminal_signals();
  int code = run_worker(config);
  containment.finish();
  if (contain.sandbox) {
    // No exit handlers in a sandbox: what they would do may be denied there (LeakSanitizer's
    // check at exit ptraces the process from a child of its own, which the filter traps, and
    // then waits for it forever). Nothing of a worker needs them: its results are sent.
    std::fflush(nullptr);
    ::_exit(code);
  }
  return code;
}

}  // namespace ferry::detail
