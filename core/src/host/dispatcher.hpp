// SPDX-License-Identifier: BSD-3-Clause
// Dispatch policy of the host pool: which call goes to which worker, and what happens to calls
// when a worker answers, leaves or dies. Pure bookkeeping: no syscalls, no locks (the pool calls
// it under its mutex), no processes; tests/test_dispatcher.cpp drives it directly.
//
// Invariants:
//  * A worker runs its calls in send order and answers each before starting the next, so the
//    front of a lane is the running call; on death it is the one that was running and the rest
//    never started: they go back to the front of the queue, in their order.
//  * Every call the dispatcher knows is in exactly one place: the queue or one lane.
//  * The front of a lane is marked running in its state (Future::running()) from when it
//    becomes the front until it leaves the lane; requeued calls are unmarked.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <ferry/detail/export.hpp>

#include "host/call.hpp"

namespace ferry::detail {

/// One worker's pipeline, as the dispatcher sees it.
struct FERRY_INTERNAL_API Lane {
  std::uint64_t serial = 0;                        // the worker it belongs to
  std::deque<std::shared_ptr<Call>> in_flight;     // sent, unanswered; the front one runs
  std::vector<bool> announced;                     // task references already defined on it
  std::unordered_map<std::string, std::uint64_t> libraries;  // library → newest generation sent
  Clock::time_point last_result{};
  /// Calls it may still be sent: ExecutorOptions::max_tasks_per_child (the worker leaves after
  /// that many), so none waits in a worker that will not run it. Calls queued behind another
  /// share that worker's process with it: a task may read them, answer for them, or leave
  /// threads that do; with max_tasks_per_child = 1 no call ever waits behind another.
  std::uint64_t calls_left = UINT64_MAX;
  /// Its worker runs the executor's initializer (Dispatcher::initialized ends it). The pool
  /// gives such a lane no call (WorkerSlot::takes_calls); one given to it would wait behind the
  /// initializer without running (no deadline, no CPU time counted, Future::running() false).
  bool initializing = false;
  /// In a sandbox, the limits its worker was lowered to by the calls sent to it: a call's own
  /// limits (SubmitOptions::limits) become the worker's hard limits, which neither that task nor
  /// a later call can raise (Dispatcher::harden_limits). nullopt: the executor's, as it started.
  std::optional<protocol::TaskLimits> lowered;
  /// Set by Dispatcher::assign with the lane listed in `stale`: it cannot run the queue's front
  /// call with that call's limits (they are above what it was lowered to), rather than another
  /// version of a plugin.
  bool limits_too_low = false;
  /// A call was sent to it (Dispatcher::fits: only a worker no call ran on is lowered to a
  /// task's own processes limit).
  bool used = false;

  bool idle() const noexcept { return in_flight.empty(); }
  /// The call the worker is running (the oldest unanswered one, once past its initializer), or
  /// nullptr.
  const Call* running() const noexcept {
    return in_flight.empty() || initializing ? nullptr : in_flight.front().get();
  }
  /// When the running call passes its deadline; time_point::max() when none.
  Clock::time_point deadline() const noexcept;
};

class FERRY_INTERNAL_API Dispatcher {
 public:
  /// `forced_depth`: FERRY_PIPELINE_DEPTH, 0 = adapt to the service time.
  explicit Dispatcher(std::size_t forced_depth = 0) : forced_depth_(forced_depth) {}

  /// A sandboxed pool: a call's limits are its worker's hard limits from the call on, which no
  /// later call can raise (worker/containment.cpp, Containment::begin_task). A lane then gets only
  /// calls whose limits fit under what it was lowered to (`fits`), preferring an idle lane, then
  /// one that needs no lowering. While the call at the queue's front waits for a lane it fits, the
  /// lanes it does not fit serve the calls behind it that fit them (assign); one of them that
  /// still idles is listed in `stale` with limits_too_low (the pool retires it and a fresh
  /// worker, at the executor's limits, comes), one per pass, and only while the pool has its
  /// size (`pipeline`); when no lane fits the front call, an idle lane is so listed, or, none
  /// idling, the first to idle. `executor`: the executor's limits, those of a fresh worker;
  /// every call's are at most these (Pool::submit).
  void harden_limits(const protocol::TaskLimits& executor) noexcept {
    hardening_ = true;
    executor_ = executor;
  }
  /// Whether `lane`'s worker can run a call with `limits`, each exactly as asked: always without
  /// harden_limits. With it: memory, open_files and file_size at most what the worker was lowered
  /// to (0, none, fits only under none); processes too while the worker holds the executor's (a
  /// lower one only on a lane no call was sent to), and once lowered exactly that value (its
  /// pids.max is written once and closed).
  bool fits(const Lane& lane, const protocol::TaskLimits& limits) const noexcept;

  /// How many short calls a lane holds (the backend's Launcher::short_call_depth), 1 to 64.
  void set_short_depth(std::size_t n) noexcept { short_depth_ = std::clamp<std::size_t>(n, 1, 64); }

  /// A new call: known from now on (find), queued at the back.
  void submit(std::shared_ptr<Call> call);
  /// An unfinished call, or nullptr.
  std::shared_ptr<Call> find(std::uint64_t id) const;
  /// Forgets a call that is being completed (it must be in neither the queue nor a lane).
  void forget(const Call& call) { calls_.erase(call.id); }

  bool queue_empty() const noexcept { return queue_.empty(); }
  std::size_t queued() const noexcept { return queue_.size(); }
  /// Calls known and not forgotten.
  std::size_t unfinished() const noexcept { return calls_.size(); }
  /// Lanes running a call (their front; the others wait behind it).
  std::size_t busy_lanes() const noexcept { return busy_; }

  /// How many calls a worker holds at once now. Short calls: several, so that a worker never
  /// waits for its next one; long calls: one, so that no call waits behind another while a
  /// worker idles.
  std::size_t depth() const noexcept;
  /// Recent service time of one call (µs), for how long a waiting thread spins.
  double service_us() const noexcept { return service_ema_us_; }

  /// One call given to a lane: the pool writes the frames. `define`: the lane has not seen the
  /// call's task reference yet. `running`: the call runs now (its deadline starts).
  struct Send {
    Lane* lane;
    std::shared_ptr<Call> call;
    bool define;
    bool running;
  };
  /// Gives queued calls, in queue order, to the least loaded of `open` lanes, at most depth()
  /// each, and lists them in `sends` (cleared first; the caller keeps the vectors, so that the
  /// hot path allocates nothing). In a sandbox, calls behind a front call that waits may go
  /// first to lanes that front call does not fit (harden_limits). A lane that has an older
  /// version of a call's library loaded gets nothing and is listed in `stale` (the pool retires
  /// it: a fresh worker loads the new version). `pipeline` false: one call per lane, whatever depth() says (the pool has a worker
  /// on its way, and a call waits for it rather than behind another call).
  void assign(std::span<Lane* const> open, std::vector<Send>& sends, std::vector<Lane*>& stale,
              Clock::time_point now, bool pipeline = true);

  /// The worker of `lane` ran its initializer: the front call starts running now.
  void initialized(Lane& lane, Clock::time_point now);

  /// The answer to call `id` arrived on `lane`: the call, out of the lane, or nullptr when it is
  /// not the lane's running call (a protocol error: answers come in send order). The lane's
  /// next call starts running now.
  std::shared_ptr<Call> answered(Lane& lane, std::uint64_t id, Clock::time_point now);

  /// Calls of `lane` from position `from` on go back to the front of the queue, in order (a
  /// worker that said bye never read them; a dead one never started them).
  void requeue(Lane& lane, std::size_t from = 0);
  /// The running call of a lane whose worker died, out of the lane (nullptr when idle).
  std::shared_ptr<Call> take_running(Lane& lane);
  /// Every call of the lane, out of it, in order.
  std::vector<std::shared_ptr<Call>> take_all(Lane& lane);
  /// Every queued call, out of the queue, in order.
  std::vector<std::shared_ptr<Call>> take_queue();
  /// Takes a queued call out of the queue (cancel); false when it is not queued.
  bool unqueue(const std::shared_ptr<Call>& call);

 private:
  static bool can_run(const Lane& lane, const Call& call);
  /// Whether sending a call with `limits` to `lane` lowers its worker's limits.
  bool lowers(const Lane& lane, const protocol::TaskLimits& limits) const noexcept;
  /// Whether `lane` is a better choice than `than` for a call with `limits` (both fit it, both
  /// have room): an idle one, then one that keeps its limits, then the least loaded.
  bool better(const Lane& lane, const Lane& than, const protocol::TaskLimits& limits) const noexcept;
  /// An idle lane of `open`, not in `stale`, that cannot run a call with `limits` and takes calls
  /// (past its initializer, calls left), or nullptr: the first that none of the calls behind the
  /// queue's front fits either (fits_behind), else the first.
  Lane* idle_unfit(std::span<Lane* const> open, const std::vector<Lane*>& stale,
                   const protocol::TaskLimits& limits) const noexcept;
  /// Whether one of the calls behind the queue's front (at most behind_window) fits `lane`.
  bool fits_behind(const Lane& lane) const noexcept;
  /// The lane of `open` that `call` goes to (it fits, has room below `limit` and calls left), or
  /// nullptr. A lane that has an older version of its plugin is listed in `stale`. With
  /// `reserved_for` (the queue's front call, waiting): only a lane that front call does not fit.
  Lane* choose(std::span<Lane* const> open, std::vector<Lane*>& stale, const Call& call, std::size_t limit,
               const Call* reserved_for = nullptr) const;
  /// `call` is sent to `lane` now (listed in `sends`).
  void give(Lane& lane, std::shared_ptr<Call> call, std::vector<Send>& sends, Clock::time_point now);
  /// In a sandbox, while the queue's front call waits for a lane it fits: calls behind it (at
  /// most behind_window of them) go to the lanes it does not fit, each to one that fits it.
  void serve_behind(std::span<Lane* const> open, std::vector<Send>& sends, std::vector<Lane*>& stale,
                    Clock::time_point now, std::size_t limit);
  /// How far behind the front serve_behind looks: each dispatch pass while the front waits pays
  /// for it, and a queue of a million calls none of which fits must not cost a million checks.
  static constexpr std::size_t behind_window = 64;
  bool hardening_ = false;
  protocol::TaskLimits executor_;

  std::deque<std::shared_ptr<Call>> queue_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Call>> calls_;  // every unfinished call
  std::size_t forced_depth_;
  std::size_t short_depth_ = 8;
  /// Counts `lane` in busy_ as it is after `change` (it was counted as it was before).
  template <class Change>
  void recount(const Lane& lane, Change&& change);

  std::size_t busy_ = 0;  // lanes whose running() is not null (ExecutorStats::running)
  // Recent per-call service time, which sizes the pipeline; unknown at first: assume long calls.
  double service_ema_us_ = 5000.0;
};

}  // namespace ferry::detail
