// SPDX-License-Identifier: BSD-3-Clause
// The manager thread of a pool: the slow paths. Its loop is three verbs: wait for events (the
// Poller), handle them (a channel readable or writable, a worker ended), maintain (timers, retired
// workers, start-up failures, starting workers). The hot path never goes through it.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "host/call.hpp"
#include "host/worker_slot.hpp"
#include "platform/spawn.hpp"

namespace ferry::detail {

class Pool;

/// OOM-kill counters: of this process's memory cgroup (v2 memory.events or v1
/// memory.oom_control) and of the whole system (/proc/vmstat); -1 when unknown.
struct OomCounts {
  long cgroup = -1;
  long system = -1;
  static OomCounts read();
  /// True when a counter known in both grew: a SIGKILL in between was most likely the OOM killer.
  bool grew_since(const OomCounts& before) const;
};

class Manager {
 public:
  explicit Manager(Pool& pool) : p_(pool), oom_seen_(OomCounts::read()) {}
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  /// Joins the thread, or detaches it when the last reference to the pool is dropped by the
  /// manager thread itself.
  ~Manager();

  /// Starts the thread; it keeps `pool` alive until its loop ends.
  void start(std::shared_ptr<Pool> pool);
  bool on_this_thread() const noexcept { return std::this_thread::get_id() == id_; }
  /// Waits for the loop to end (it ends once the pool is shut down and empty).
  void join();

 private:
  using SlotPtr = std::shared_ptr<WorkerSlot>;

  /// The loop; true when the process's exit waits for it (Pool::exit_waits_for_one_more).
  bool run();
  // Events.
  void on_readable(const SlotPtr& w);
  void on_writable(const SlotPtr& w);
  void on_exit(const SlotPtr& w);
  /// A sandboxed worker's memory cgroup notified: out of memory, the worker is killed (its
  /// running call ends with ResourceLimitError("memory")).
  void on_memory_ceiling(const SlotPtr& w);
  /// What the running call of a dead worker gets, and what happens to the rest of its calls.
  /// Returns the error its running call got (nullptr: none, or sent again).
  std::exception_ptr settle_dead_worker_locked(WorkerSlot& w, const ExitStatus& st, const OomCounts& ooms,
                                               Completions& done);
  /// For a worker that exited "cannot set up its containment" before its hello (70): ": the
  /// sandbox's private directory ... is not the one ferry made" when the host sees that, else
  /// where the worker said why; "" for any other end.
  std::string containment_reason(const ExitStatus& st) const;
  /// Counts how a worker ended (ExecutorStats), and writes it in the trace: `given` is what its
  /// running call got.
  void count_end_locked(WorkerSlot& w, const ExitStatus& st, const std::exception_ptr& given);
  // maintain(): after each round of events, in phases (as libuv's uv_run).
  void maintain(Completions& done);
  void enforce_timers_locked(Clock::time_point now);
  void enforce_cpu_time_locked(WorkerSlot& w, Clock::time_point now);
  void stop_retired_locked(Clock::time_point now);
  void check_startup_locked(Clock::time_point now, Completions& done);
  /// The pool gave up starting workers: the next submit starts one at once.
  void given_up_locked();
  std::size_t workers_to_start_locked() const;
  void start_workers(std::size_t n, Completions& done);
  /// Starts one worker; false when it could not be started.
  bool start_one(Completions& done);
  bool queue_waits_for_a_hello() const;
  /// Adds a started worker to the pool: poller registrations, initializer, dispatch.
  void register_worker(const SlotPtr& w);
  std::vector<std::string> worker_args() const;
  SlotPtr worker_by_serial(std::uint64_t serial);
  int next_timeout_ms();

  Pool& p_;
  std::thread thread_;
  std::atomic<std::thread::id> id_{};
  std::mutex join_mu_;
  OomCounts oom_seen_;  // the counters at the last worker death: a SIGKILL since is an OOM kill?
  // No worker is started before then (a start failed while others ran); manager thread only.
  Clock::time_point start_again_at_{};
  // Workers started together count as one batch; the latest batch a start failure came from:
  // a worker of that batch or an earlier one that is still on its way keeps the pool from
  // giving up (check_startup_locked). Manager thread only.
  std::uint64_t start_batch_ = 0;
  std::uint64_t latest_failed_batch_ = 0;
  // The last start_workers stopped at its time budget with workers still to start: the loop
  // comes back at once (no wait), and the next pass goes on with the same batch.
  bool starting_more_ = false;
  // Why the pool last lost a worker or a place: a death the worker did not announce (in the
  // backend's words when it gave some: "MPI rank 2 on node7 (agent pid P) stopped answering"), or
  // a launch the backend refused. The error that fails the queue once no place is left carries
  // it: "every remote rank of the job has died" alone named no rank and no reason, which only
  // the agents' stderr showed. Manager thread only.
  std::string last_loss_;
};

}  // namespace ferry::detail
