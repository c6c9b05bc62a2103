// SPDX-License-Identifier: BSD-3-Clause
// One worker as the host pool holds it: its process, its channel, its pipeline and where it is in
// its life. The pool's mutex guards everything but the reading side, which belongs to whoever
// holds the channel lease.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <ferry/backend.hpp>

#include "host/containment.hpp"
#include "host/dispatcher.hpp"
#include "host/poller.hpp"
#include "platform/fd.hpp"
#include "platform/symbolize.hpp"
#include "wire/channel.hpp"
#include "wire/protocol.hpp"

namespace ferry::detail {

struct WorkerSlot {
  /// Why the pool retired a worker; its exit is counted and traced as stopped for this reason.
  enum class Retired : std::uint8_t {
    no,
    shutdown,       // the executor shuts down
    resize,         // the pool shrank (Executor::resize, or a worker past max_workers)
    plugin_update,  // a plugin it loaded changed on disk
    killed,         // kill_workers: its calls failed; reported as a shutdown
    shared_memory,  // a sandboxed worker was given its budget of argument blocks (it may keep them)
    idle_cpu,       // it used its last call's cpu_time while idle (a thread that call left running)
    lowered_limits, // a sandboxed worker lowered to a call's own limits, and a call waits with higher ones
    idle,           // it said bye(idle_timeout) (said_idle): counted and traced as recycled "idle"
  };
  /// The name a trace gives a stop ("shutdown", "resize", "plugin_update", "shared_memory",
  /// "idle_cpu", "lowered_limits").
  static const char* stop_reason(Retired why) noexcept {
    switch (why) {
      case Retired::resize: return "resize";
      case Retired::plugin_update: return "plugin_update";
      case Retired::shared_memory: return "shared_memory";
      case Retired::idle_cpu: return "idle_cpu";
      case Retired::lowered_limits: return "lowered_limits";
      case Retired::idle: return "idle";
      case Retired::no:
      case Retired::shutdown:
      case Retired::killed: break;
    }
    return "shutdown";
  }

  /// Where a worker is in its life; it only moves forward. A worker may be retired before its
  /// hello (the pool shrank while it started): `greeted` records the hello apart from the phase.
  enum class Phase : std::uint8_t {
    starting,  // launched, no hello yet; gets no call until it said hello and ran its initializer
    ready,     // said hello
    retiring,  // takes no new work; told to shut down once idle
    stopping,  // told to shut down; killed if still alive at kill_at
    leaving,   // said bye: it exits cleanly, nothing more comes from it (an idle bye does not
               // end it: it is retired, and runs what it was sent before; said_idle)
    dead,      // reaped; being removed
  };

  WorkerSlot() = default;
  WorkerSlot(const WorkerSlot&) = delete;
  WorkerSlot& operator=(const WorkerSlot&) = delete;
  /// Closes the channel with close_channel: descriptors the worker sent and nobody read would be
  /// closed with it, and one of them could block the closing thread.
  ~WorkerSlot() {
    sock_out.reset();  // a dup: sock holds the socket still
    close_channel(sock.release());
  }

  std::uint64_t serial = 0;
  int pid = -1;  // 0 until its hello when the launcher cannot tell (a remote worker)
  const std::string* host = nullptr;  // its host name, from its hello, interned (Future::info())
  std::shared_ptr<LaunchedWorker> process;
  Fd sock;      // host end of the channel, non-blocking; the read registration
  Fd sock_out;  // dup of sock: the write registration, armed only while the outbox is not empty
  Fd exit_fd;   // dup of the process's exit descriptor: the exit registration
  MemoryCeilingWatch memory;  // a sandbox's memory cgroup, from the hello on: the memory registration
  Clock::time_point spawned{};
  std::uint64_t start_batch = 0;  // the manager's pass that started it (Manager::start_batch_)

  // ---- reading side: whoever holds the channel lease (read_mu) ----
  std::mutex read_mu;
  FrameReader reader{protocol::max_control_frame};
  // Malformed or contained frame, or a start failure: it is being killed, its bytes are dropped.
  // Set under the pool's mutex by whoever finds out, read by the lease holder: atomic.
  std::atomic<bool> discarding{false};

  // ---- under the pool's mutex ----
  Phase phase = Phase::starting;
  bool greeted = false;       // its hello arrived
  bool channel_open = true;   // false once the channel failed or reached EOF
  bool write_armed = false;
  bool kill_sent = false;     // SIGKILL (or the backend's kill) was sent
  bool failed_start = false;  // killed by ferry for what its initializer did: a start failure
  // Killed as asked: its call's deadline, cancel({.kill_running}), shutdown({.kill_workers})
  // (ExecutorStats::workers_killed).
  bool killed_as_asked = false;
  // A bye that ends it: it exits now, and what it was sent and has not answered was never read.
  std::optional<protocol::ByeReason> bye;
  // Its last answer said so (protocol::flag_last): it gets nothing more, and what it was sent
  // behind that answer goes back to the queue, uncounted, when its end is seen (Pool::handle_bye).
  bool said_last = false;
  // It said bye(idle_timeout): retired (Retired::idle), it runs and answers the calls sent before
  // that bye was read, and is told to exit once they are answered; its exit is recycled "idle"
  // (its bye then is the answer, "shutdown"). Its calls in flight are its own, as a running
  // worker's: nothing handed back, and a death settles them as a crash (Pool::handle_bye).
  bool said_idle = false;
  // Why the pool retired it: a worker told to exit says bye "shutdown" whatever the reason, and
  // its exit is reported with this one (stop_reason()).
  Retired retired_for = Retired::no;
  Lane lane;
  Outbox outbox;
  Clock::time_point kill_at = Clock::time_point::max();  // killed if still alive then
  // A start failure if its initializer still runs then (ExecutorOptions::initializer_timeout).
  Clock::time_point initializer_due = Clock::time_point::max();
  std::exception_ptr kill_error;  // what its running call gets when ferry killed it
  // Why ferry killed it when its running call settles as for a crash (retried under
  // max_retries_on_worker_death): named in the TerminatedWorkerError the call gets at last.
  std::string violation;
  // Its crashed frame: the stack where it took `crash_signal` (TerminatedWorkerError::remote_stack).
  int crash_signal = 0;
  std::shared_ptr<const RemoteStack> crash_stack;
  std::uint32_t crash_reports = 0;  // crashed frames read (Pool::max_crash_reports)
  // Bytes of argument blocks given to it in a sandbox, which its task may keep mapped after the
  // call (Pool::sandbox_shared_budget_, FERRY_SANDBOX_SHARED_BYTES).
  std::uint64_t shared_given = 0;
  protocol::TaskLimits sent_limits;  // the limits its next task runs under (args, limits frames)
  // CPU time of the running call, sampled by the manager (Limits::cpu_time): the call measured,
  // the worker's CPU ticks when it was first seen running, and when the next sample is due (one
  // per period, not one per pass of the manager: reading /proc for every task halved the rate of
  // short tasks). While it idles, the same against the CPU time limit of the last call it ran
  // (idle_cpu_limit, 0: none; cpu_call is then cpu_idle): a thread that call left spinning used a
  // CPU without bound while no call ran.
  std::uint64_t cpu_call = 0;
  std::uint64_t cpu_base = 0;
  Clock::time_point cpu_sample_at{};
  std::uint64_t idle_cpu_limit = 0;
  static constexpr std::uint64_t cpu_idle = UINT64_MAX;

  /// In service: not retired, its channel open (resize counts these).
  bool accepts_work() const noexcept { return phase <= Phase::ready && channel_open; }
  /// Gets new calls: in service, past its hello and its initializer. A call written to a worker
  /// still starting counted its deadline, CPU time and running() from the write (a deadline
  /// shorter than a start failed the call, and the next one on a replacement), and only killing
  /// the worker took it back; queued, it can be cancelled.
  bool takes_calls() const noexcept { return accepts_work() && greeted && !lane.initializing; }
  /// Counts toward the pool's size: a worker whose channel just closed keeps its place until it
  /// is reaped (and replaced).
  /// A start failure holds its place until its death is settled (which sets the start backoff):
  /// a replacement started at once went ahead of that backoff.
  /// One that said its idle bye holds it while it runs the calls that crossed the bye: a task
  /// can write that bye and run on, and each such call took a worker out of the count (20 calls
  /// ran at once on a pool of 2).
  bool holds_place() const noexcept {
    return phase <= Phase::ready || (failed_start && alive()) || (said_idle && alive() && !lane.idle());
  }
  /// Started and in service.
  bool up() const noexcept { return greeted && phase <= Phase::ready; }
  bool alive() const noexcept { return phase != Phase::dead; }
  /// Its handshake is still due (the hello timeout applies).
  bool awaiting_hello() const noexcept { return !greeted && alive() && !kill_sent; }
  /// Retired, idle and not yet told: time to send it the shutdown frame.
  bool due_to_stop() const noexcept { return phase == Phase::retiring && lane.idle(); }

  void retire(Retired why) noexcept {
    if (phase >= Phase::retiring) return;
    phase = Phase::retiring;
    retired_for = why;
  }
  void advance(Phase to) noexcept {
    if (phase < to) phase = to;
  }
  /// "ferry-worker /path (pid 42)" for messages.
  std::string describe(const Launcher& launcher) const;
};

/**
The rule for reading a worker's channel, written once. One reader at a time holds the slot's
read_mu: the manager thread when epoll reports the channel readable, or a thread waiting for its
own result, which reads the result itself instead of being woken by the manager (on these VMs a
cross-vCPU wake-up costs about the whole round trip). The read registration is one-shot, so an
event disarms it; a waiter disarms it when it takes the channel. Whoever lets go unlocks, then
re-arms: the manager drops an event for a channel someone holds, so arming before unlocking could
leave a result unread in a disarmed channel.
*/
class ChannelLease {
 public:
  /// The manager after a read event. Empty when a waiting thread holds the channel (that thread
  /// re-arms it when done).
  static ChannelLease after_event(WorkerSlot& w, Poller& poller);
  /// A thread waiting for its own result. Empty when someone else reads the channel (they will
  /// complete the call).
  static ChannelLease for_waiter(WorkerSlot& w, Poller& poller);
  /// The manager once the worker has died: waits for the channel, to deliver what it wrote
  /// before its death; the registration is removed after that, so it is not re-armed.
  static ChannelLease after_death(WorkerSlot& w, Poller& poller);

  ChannelLease(ChannelLease&&) noexcept = default;
  ChannelLease& operator=(ChannelLease&&) = delete;
  ~ChannelLease() { release(); }

  explicit operator bool() const noexcept { return lock_.owns_lock(); }
  /// Unlocks, then re-arms the read registration.
  void release();
  /// A waiter takes the channel again after running completions (released meanwhile: a
  /// callback may wait on another call of the same worker); false when someone else took it.
  bool retake();

 private:
  ChannelLease(WorkerSlot& w, Poller& poller, bool rearm) : w_(&w), poller_(&poller), rearm_(rearm) {}
  void disarm();
  WorkerSlot* w_;
  Poller* poller_;
  bool rearm_;
  std::unique_lock<std::mutex> lock_;
};

}  // namespace ferry::detail
