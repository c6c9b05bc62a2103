// SPDX-License-Identifier: BSD-3-Clause
// The process pool behind ferry::Executor (mechanism; the reusable singleton is policy elsewhere).
//
// A facade over parts that each own one thing: the Dispatcher (which call goes where), the
// WorkerSlots (one worker each: its phase, channel and lease), the Poller (the manager's epoll
// set) and a Launcher (where workers run: local, or a backend such as ferry::mpi). The data-flow
// picture is at the top of manager.cpp.
//
// Invariants (see docs/design.md):
//  * Dispatch order and requeue-on-death: see dispatcher.hpp.
//  * Lock order: WorkerSlot::read_mu (the channel lease) before Pool::mu_. States are completed
//    (and callbacks run) with no lock held.
//  * A clean worker exit is announced by a bye frame; anything else is a crash.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include <ferry/backend.hpp>
#include <ferry/executor.hpp>
#include <ferry/detail/export.hpp>
#include <ferry/plugin_index.hpp>
#include <ferry/stats.hpp>

#include "host/call.hpp"
#include "host/containment.hpp"
#include "host/dispatcher.hpp"
#include "host/manager.hpp"
#include "host/poller.hpp"
#include "host/task_refs.hpp"
#include "host/trace.hpp"
#include "host/worker_slot.hpp"
#include "wire/failure.hpp"
#include "wire/stack.hpp"
#include "platform/debug.hpp"
#include "platform/spawn.hpp"
#include "wire/protocol.hpp"

namespace ferry::detail {

/// The launcher of options.backend ("local" is built in), or nullptr when no such backend is
/// registered.
std::shared_ptr<Launcher> make_launcher(const ExecutorOptions& options);

/// More workers than this is a mistake (a typo in -j), not a pool: refused with invalid_argument.
inline constexpr std::size_t max_pool_size = 4096;

/// The longest host name a hello may carry (a DNS name), and how many names a process keeps
/// (Future::info() names the host of each call, and may outlive its executor).
inline constexpr std::size_t max_host_name = 255;
inline constexpr std::size_t max_host_names = 4096;

/// A worker that said bye exits at once; one still there after this is killed.
inline constexpr auto bye_grace = std::chrono::seconds(1);
/// How many times a call may be handed back by a bye while it was its worker's running call
/// (Pool::handle_bye); once more and that worker is taken to have run it and died. A recycling
/// worker's bye counts against nothing: its last answer said it was the last (protocol::flag_last),
/// and what it was sent behind that answer goes back to the queue when its end is seen.
inline constexpr unsigned max_handed_back = 2;

class Pool final : public StateOwner, public std::enable_shared_from_this<Pool> {
 public:
  explicit Pool(ExecutorOptions options);
  ~Pool() override;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// Starts the manager thread (after construction: it holds a shared_ptr to the pool).
  void start();

  void submit(const Target& target, Buffer args, std::uint32_t items,
              std::shared_ptr<StateBase> state, const SubmitOptions& options,
              std::uint8_t frame_flags = 0, std::size_t first_input = no_input);
  /// A submission that fails before it reaches the queue (its task cannot be resolved, its
  /// arguments cannot be encoded): counted as submitted and failed, traced as a call that ended at
  /// once, and `state` fails with `error`.
  void fail_submission(StateBase& state, const Target& target, std::exception_ptr error);
  void shutdown(const ShutdownOptions& options);
  void resize(std::size_t max_workers);
  /// Until every worker said hello or `deadline` (time_point::max(): no deadline).
  bool warm_up(Clock::time_point deadline);

  std::size_t max_workers() const;
  const ExecutorOptions& options() const noexcept { return options_; }
  std::vector<int> worker_pids() const;
  bool is_shutdown() const;
  /// Non-null once the pool cannot run tasks any more (e.g. its initializer fails).
  std::exception_ptr broken() const;
  /// Executor::stats(): counters under mu_ and a few atomics; no call or worker is walked.
  ExecutorStats stats() const;

  /// In a child of fork(): the pool's threads are not there and its channels are the parent's.
  /// The child's copy of the pool then refuses work, completes its futures with forked_error()
  /// instead of reading the parent's workers' results, and shuts down without waiting (nor
  /// locking: a thread of the parent may have held mu_ when it forked).
  bool forked() const noexcept override { return fork_generation() != fork_generation_; }
  /// Whether its sandboxed workers each have a memory cgroup at the executor's memory limit (a
  /// memory ceiling, design §15): a sandbox, a memory limit, and memory cgroups to be had here.
  bool memory_ceiling() const;

  // StateOwner
  void wait(StateBase& state, std::optional<Clock::time_point> deadline) override;
  Progress progress(StateBase& state) override;
  /// wait()'s work: reads the call's worker's channel until the state is ready (or the deadline).
  /// False when another thread reads that channel and `on_manager` (the caller looks again);
  /// on_manager without a deadline, throws std::logic_error when nothing but the manager could
  /// finish the call (with one, returns true at once).
  /// `needs_manager`: set when only this pool's manager thread can finish the call now (it is
  /// queued, or its worker has gone).
  bool read_own_result(StateBase& state, std::optional<Clock::time_point> deadline, bool on_manager,
                       bool* needs_manager = nullptr);
  /// Called by the manager thread when it starts: a wait of this thread for another pool's call
  /// is then one of a manager (ManagersWaiting in pool.cpp).
  void managed_on_this_thread() const noexcept;
  bool cancel(StateBase& state, bool kill_running) override;

 private:
  friend class Manager;  // the slow paths, on the manager thread: host/manager.hpp
  std::exception_ptr forked_error() const;
  /// The process's exit waits for one more pool finishing in the background (its shutdown(wait)
  /// could not wait), until its manager thread says exit_waits_for_one_less().
  static void exit_waits_for_one_more();
  /// Crashed frames one worker may send (handle_crashed): its own, and its task's children's.
  static constexpr std::uint32_t max_crash_reports = 1024;
  static void exit_waits_for_one_less() noexcept;
  /// `m` locked, except in a forked child (a snapshot of the parent's state is read as it is).
  std::unique_lock<std::mutex> lock_unless_forked(std::mutex& m) const;
  const std::uint64_t fork_generation_ = fork_generation();
  const int owner_pid_ = static_cast<int>(::getpid());
  using SlotPtr = std::shared_ptr<WorkerSlot>;

  // ---- submission (pool.cpp) ----
  /// Hands queued calls to workers (Dispatcher::assign) and writes their frames.
  void dispatch_locked();
  void flush_locked(WorkerSlot& w);
  void arm_write_locked(WorkerSlot& w);

  // ---- reading (pool.cpp) ----
  /// Reads what is available (at most 64 reads); returns false at EOF. `drained`, if given, is
  /// set when the socket had no more bytes (EAGAIN). Caller holds the channel lease.
  bool read_available(WorkerSlot& w, Completions& done, bool* drained = nullptr);
  void handle_frames(WorkerSlot& w, Completions& done);
  /// Frames a relaying backend handed over (LaunchedWorker::relay_and_hand_over), read as the
  /// next on the channel. Caller holds the channel lease.
  void take_relayed(WorkerSlot& w, std::string& frames, Completions& done);
  void handle_hello(WorkerSlot& w, const Frame& f);
  void handle_result(WorkerSlot& w, Frame& f, Completions& done);
  void handle_bye(WorkerSlot& w, const Frame& f);
  /// After a flush refused a shared argument's descriptor (ETOOMANYREFS): its call's frame goes
  /// inline instead; false when it does not fit a frame.
  bool send_inline_instead_locked(WorkerSlot& w);
  /// The running task hit a limit or its sandbox: it fails with that, the worker is replaced.
  void handle_contained(WorkerSlot& w, const Frame& f);
  /// It took a fatal signal: the stack is kept for the TerminatedWorkerError its death brings.
  void handle_crashed(WorkerSlot& w, const Frame& f);
  /// Kills a worker that sent bytes that are not ferry frames; its running call says why.
  /// `in_order`: the bad frame was read after every frame before it was handled (a frame before
  /// the initializer's success makes it a start failure).
  void reject_garbage(WorkerSlot& w, const char* what, bool in_order = false);
  /// Kills a worker whose initializer did what ends a worker (`why`, completing "worker N ..."):
  /// a start failure (Manager::settle_dead_worker_locked), not an error of the calls sent to it.
  void fail_start_locked(WorkerSlot& w, std::string why);
  std::exception_ptr remote_error(const Call& call, const WorkerSlot& w, const Failure& why) const;
  /// How `call` ran on `w` (Future::info()): the worker's measurements, or where it sent none
  /// (it died, or an error result it did not write), the host's view of the call's start and end.
  RunRecord run_record(const Call& call, const WorkerSlot& w, const protocol::RunStats& stats) const;
  /// Ends `call` (forgotten by the dispatcher); its state completes with `error`, or with the
  /// payload the caller puts into the completion.
  Completion& finish_locked(const std::shared_ptr<Call>& call, Completions& done,
                            std::exception_ptr error = nullptr);
  /// The completion of `call`'s state alone (the dispatcher still knows the call).
  Completion& completion_locked(Call& call, Completions& done, std::exception_ptr error);
  void complete(Completions& done);

  // ---- stats and trace (pool.cpp) ----
  /// Counts each completion as completed or failed, before its state is set (so that a thread
  /// back from get() sees its call counted).
  void count_outcomes(const Completions& done);
  void count_failed(const std::exception_ptr& error);
  void count_received_locked(const Frame& f) { counts_.bytes_received += protocol::header_size + f.body.size(); }
  /// Queues a control frame (define, limits, init, shutdown) to a worker, counting its bytes.
  void send_locked(WorkerSlot& w, Buffer frame);
  /// A call that reached `w` ended: its slice, timed by the worker's clock when `stats` has its
  /// measurements, else by the host's view (from when it became the running call until `now`).
  void trace_ran_locked(const Call& call, const WorkerSlot& w, const protocol::RunStats* stats,
                        std::uint64_t result_bytes, const std::exception_ptr& error, Clock::time_point now);
  /// Calls that never ran on a worker ended with `error`.
  void trace_ended_locked(const std::vector<std::shared_ptr<Call>>& calls, const std::exception_ptr& error);
  void trace_counters_locked(Trace::Batch& t, std::int64_t ts) const;
  /// Calls running now: the busy lanes' fronts, but for those a kill-cancel ended.
  std::size_t running_locked() const noexcept { return dispatcher_.busy_lanes() - ended_in_lanes_; }
  /// A kill-cancelled call leaves its lane (its worker's death settled, or a shutdown that kills).
  void forget_ended_locked(const Call& call) {
    dispatcher_.forget(call);
    --ended_in_lanes_;
  }

  // ---- workers and control (pool.cpp) ----
  void fail_queue_locked(std::exception_ptr error, Completions& done);
  void kill_worker_locked(WorkerSlot& w, std::exception_ptr error_for_running_call);
  void signal_kill_locked(WorkerSlot& w);
  bool finished_locked() const;
  std::size_t holding_places_locked() const;

  /// Counts the process's pools; the last one's end drops the shared-memory blocks kept for
  /// reuse (drop_kept_blocks). First, so destroyed last: after the calls whose blocks went back.
  struct Counted {
    Counted() noexcept;
    ~Counted();
    Counted(const Counted&) = delete;
    Counted& operator=(const Counted&) = delete;
  };
  Counted counted_;
  ExecutorOptions options_;
  TaskRefs refs_;
  std::uint64_t max_frame_;
  bool frame_limited_by_memory_ = false;  // max_frame_ is twice limits.memory, not FERRY_MAX_FRAME_BYTES
  /// The frame limit as an error message names it: "FERRY_MAX_FRAME_BYTES 1 GiB", or for a
  /// memory-limited executor "128 MiB: twice limits.memory".
  std::string frame_limit_text() const;
  // Bytes of argument blocks a sandboxed worker is given before it is replaced (after its calls):
  // its task may keep every block mapped (arguments_for_sandboxed_peer). FERRY_SANDBOX_SHARED_BYTES.
  std::uint64_t sandbox_shared_budget_ = 0;
  std::chrono::microseconds worker_spin_;
  std::shared_ptr<Launcher> launcher_;
  protocol::TaskLimits limits_;                   // the executor's (ExecutorOptions::limits)
  std::unique_ptr<PrivateTempDir> sandbox_tmp_;  // a sandbox's writable directory, if it needs one
  Sandbox sandbox_;  // options_.sandbox with its paths resolved at construction (resolved_path)
  std::vector<std::string> sandbox_read_;  // sandbox_read_paths at construction

  Poller poller_;

  mutable std::mutex mu_;
  std::condition_variable changed_;  // shutdown waiters, warm_up
  std::map<std::uint64_t, SlotPtr> workers_;
  Dispatcher dispatcher_;
  struct Scratch {  // dispatch_locked's vectors, kept so that dispatching allocates nothing
    std::vector<Lane*> open;
    std::vector<Dispatcher::Send> sends;
    std::vector<Lane*> stale;
    std::vector<WorkerSlot*> touched;
  } scratch_;
  std::vector<std::string_view> offered_;  // flush_locked: an outbox offered to its backend
  std::size_t max_workers_;
  std::size_t outstanding_ = 0;  // calls submitted and not yet completed
  // Kill-cancelled calls still in their lane: their futures ended (counted as failed), their
  // worker's death is not settled yet. Not running (stats, trace counters).
  std::size_t ended_in_lanes_ = 0;
  std::uint64_t next_call_ = 1;
  std::uint64_t next_serial_ = 1;
  bool started_ = false;          // first submit or warm_up happened
  std::size_t idle_exited_ = 0;   // workers gone for idle timeout, not replaced until work comes
  bool shutdown_ = false;
  bool killed_ = false;
  bool finished_ = false;         // manager loop ended
  bool exit_waits_ = false;       // shutdown(wait) inside a completion: see exit_waits_for_one_more
  bool cpu_ticking_ = false;      // the manager's next wake-up samples CPU time (Limits::cpu_time)
  unsigned startup_failures_ = 0; // consecutive workers that died before hello
  // The same, reset only by a worker's successful start (not by a submit, nor by the pool going
  // on with other workers): how long the manager waits before starting the next one.
  unsigned start_failures_in_a_row_ = 0;
  std::string last_spawn_error_;
  /// What a start failure that may be the worker program's adds: where to set it (the local
  /// backend; another one's workers are its own programs).
  const char* worker_path_advice() const noexcept;
  std::exception_ptr broken_;
  std::exception_ptr spawn_error_;  // workers cannot be started; cleared by the next submit

  // ExecutorStats: counters since the pool was made (see stats()).
  const Clock::time_point created_ = Clock::now();
  struct Counts {  // under mu_
    std::size_t submitted = 0;
    // Every started worker ends once, as one of crashed, recycled or stopped (count_end_locked).
    std::size_t workers_started = 0, workers_crashed = 0, workers_killed = 0, workers_recycled = 0, workers_stopped = 0;
    std::size_t workers_alive() const noexcept {
      return workers_started - workers_crashed - workers_recycled - workers_stopped;
    }
    std::map<std::string, std::size_t> recycled_by_reason;
    std::uint64_t bytes_sent = 0, bytes_received = 0;
  } counts_;
  // Counted when states complete, outside mu_ (Pool::complete runs with no lock held).
  std::atomic<std::size_t> completed_{0};
  mutable std::mutex failures_mu_;  // failed_ and failed_by_type_ change together
  std::size_t failed_ = 0;
  struct FailedType {
    std::string name;  // as ExecutorStats names it: demangled once, when first seen
    std::size_t count = 0;
  };
  // By the exception's dynamic type (a type_info of libferry or of a loaded library: never
  // unloaded while the pool lives).
  std::unordered_map<std::type_index, FailedType> failed_by_type_;
  std::unique_ptr<Trace> trace_;  // ExecutorOptions::trace or FERRY_TRACE; null: no trace

  std::shared_ptr<const RefEntry> initializer_;  // ExecutorOptions::initializer, resolved
  Buffer initializer_frame_;                     // its init frame, with its arguments
  Manager manager_{*this};  // last: its thread stops before the state it uses is destroyed
};


}  // namespace ferry::detail
