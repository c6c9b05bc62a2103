// SPDX-License-Identifier: BSD-3-Clause
// Shared state behind ferry::Future: raw result bytes or an error, decoded on get().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <ferry/detail/type_name.hpp>
#include <ferry/errors.hpp>
#include <ferry/detail/codec.hpp>
#include <ferry/detail/deadline.hpp>
#include <ferry/detail/export.hpp>
#include <ferry/task_info.hpp>

namespace ferry::detail {

class StateBase;

/// The first input of a submission that is not a map chunk.
inline constexpr std::size_t no_input = static_cast<std::size_t>(-1);
/// Task frame flag: the arguments begin with shared trailing arguments (protocol::flag_shared_args).
inline constexpr std::uint8_t shared_args_flag = 8;

/// For a catch (...) block: the what() of the exception being handled, or, for one not derived
/// from std::exception (`throw 0`), its type, in the words the worker uses for its own stages.
/// Rethrows a thread cancellation's unwinding.
FERRY_API std::string current_exception_reason();

/// How a call ran, as the host records it when the call ends (Future::info()): numbers and a
/// pointer, so that recording it costs the thread completing the call no allocation and no
/// reference count (the task's identity is attached to the state at submit, see attach()).
struct RunRecord {
  bool ran = false;                  // false: never reached a worker
  const std::string* host = nullptr; // the worker's host name, interned for the process's life
  int pid = 0;
  unsigned attempts = 0;
  std::int64_t submitted_ns = 0;  // system_clock, since the epoch
  std::int64_t started_ns = 0;
  std::int64_t finished_ns = 0;
  std::int64_t cpu_ns = 0;
  std::uint64_t max_rss = 0;

  /// `identity`: the fields naming the task (the task reference's), or null.
  TaskInfo to_info(const TaskInfo* identity) const {
    auto at = [](std::int64_t ns) {
      return std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
    };
    TaskInfo info = identity ? *identity : TaskInfo{};
    info.worker_pid = pid;
    if (host) info.worker_host = *host;
    info.submitted = at(submitted_ns);
    info.started = at(started_ns);
    info.finished = at(finished_ns);
    info.cpu_time = std::chrono::nanoseconds(cpu_ns);
    info.max_rss = static_cast<std::size_t>(max_rss);
    info.attempts = attempts;
    return info;
  }
};

/// Wakes a thread waiting on many futures (ferry::wait, as_completed, the map engine): a state it
/// watches (StateBase::watch) pushes the number the waiter gave it when it completes.
struct Notifier {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::size_t> completed;  // the waiters' numbers, in completion order
  bool woken = false;                 // detail::MapRun::wake()
  /// Called instead, in the completing thread, when set before the first watch (when_any).
  std::function<void(std::size_t)> on_notify;

  void notify(std::size_t number) {
    if (on_notify) {
      on_notify(number);
      return;
    }
    {
      std::lock_guard lock(mu);
      completed.push_back(number);
    }
    cv.notify_all();
  }
};

/// How the thread asking can count on a pending state to complete (StateOwner::progress).
enum class Progress {
  /// Another thread completes it (the executor's manager thread, or a thread reading its worker's
  /// channel): blocking is safe.
  elsewhere,
  /// This thread is the executor's own (its manager thread, running a callback): nobody else reads
  /// the call's worker for it, but this thread can, in StateOwner::wait.
  here,
  /// This thread is the executor's own, and only that thread's work could finish the call (still
  /// queued, or its worker dead): it will not complete while this thread waits.
  never,
};

/// The executor side of a pending state: helps a waiting thread (it may read the result off the
/// worker's channel itself) and cancels. Held weakly: a state outlives its executor.
class FERRY_API StateOwner {
 public:
  virtual ~StateOwner() = default;
  /// Returns when the state is ready or the deadline passed, or, on the executor's own thread,
  /// at once when nothing but that thread could finish the call (then, without a deadline, it
  /// throws std::logic_error: the thread would wait for itself).
  virtual void wait(StateBase& state, std::optional<Clock::time_point> deadline) = 0;
  /// How the calling thread can count on `state` to complete (see Progress).
  virtual Progress progress(StateBase& state) = 0;
  virtual bool cancel(StateBase& state, bool kill_running) = 0;
  /// True in a child of fork(): the owner's calls complete in the parent, never here; wait()
  /// then fails the state at once.
  virtual bool forked() const noexcept = 0;
};

class FERRY_API StateBase {
 public:
  StateBase() = default;
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;
  virtual ~StateBase() = default;

  bool ready() const noexcept { return done_.load(std::memory_order_acquire); }

  /// Callbacks and watchers of completed states, waiting for their turn in this thread: those of
  /// one batch (the pool sets every state of a batch first: a callback of one call that waited
  /// for another of the same batch found it unset, in the very thread that was to set it, and
  /// waited for ever), and those of states completed inside a callback (see complete()).
  class Deferred;

  /// What a thread is doing with completions (one per thread, in libferry: a program and
  /// libferry see the same). `deferred`: the innermost Deferred running in this thread, where a
  /// state completed inside one of its callbacks queues its own callbacks.
  struct ThisThread {
    Deferred* deferred = nullptr;
    /// The thread is an executor's own (its manager thread): a wait there may be for a call
    /// only this thread could finish (see wait_helping).
    bool runs_executor = false;
  };
  static ThisThread& this_thread() noexcept;

  /// What wait_helping ended with.
  enum class Helped {
    done,     ///< `done()` holds
    timeout,  ///< `until` passed
    stuck,    ///< (bounded) nothing left but calls only this thread could finish
  };
  /// A wait, in this thread, until `done()` for the states `roots` (and, for local states, those
  /// they follow: follow()), which may be of an executor whose own thread this is (its manager:
  /// a callback waits). Blocking there waited for ever for a call only this thread would send or
  /// read (ferry::wait, as_completed, when_all(...).get() in a then() callback). So it reads the
  /// results of the calls this thread can read itself (StateOwner::wait, in slices when there is
  /// more than one thing to watch), blocks (`block(until)`, which returns when something the
  /// caller watches completed, or at `until`) only while what is left completes elsewhere, and
  /// when nothing is left but calls only this thread could finish: returns `stuck` if `bounded`
  /// (the caller has a deadline, which waiting could not meet), else throws the executor's
  /// std::logic_error, as Future::get does there.
  template <class Done, class Block>
  static Helped wait_helping(const std::vector<StateBase*>& roots, Done&& done, Block&& block,
                             Clock::time_point until, bool bounded);

  /// A local state's sources, for a wait that must help them complete (wait_helping): then()'s
  /// future follows the one it continues, when_all's and when_any's theirs. Set before the state
  /// is shared. Held weakly: one gone has completed (a pending state is held by its executor or
  /// by the callbacks that will complete it), and a long chain frees its links as it completes.
  void follow(std::weak_ptr<StateBase> source) { follows_ = std::move(source); }
  void follow(std::vector<std::weak_ptr<StateBase>> sources) { follows_many_ = std::move(sources); }

  /// Completes with the worker's result bytes (those after `offset`); false if already completed.
  /// `run`: how the call ran (Future::info()), when it reached a worker. `later`: where its
  /// callbacks and watchers go instead of running now.
  bool set_payload(Buffer payload, std::size_t offset = 0, RunRecord* run = nullptr, Deferred* later = nullptr) {
    return complete(
        [&] {
          payload_ = std::move(payload);
          offset_ = offset;
          if (run) run_ = std::move(*run);
        },
        later);
  }
  /// Completes with an error; false if already completed.
  bool set_error(std::exception_ptr e, RunRecord* run = nullptr, Deferred* later = nullptr) {
    return complete(
        [&] {
          error_ = std::move(e);
          if (run) run_ = std::move(*run);
        },
        later);
  }

  /// True while the call is the one its worker runs (the pool marks it; see Future::running).
  bool running() const noexcept { return !ready() && running_.load(std::memory_order_relaxed); }
  /// The pool's: the call became, or stopped being, the running call of its worker.
  void set_running(bool running) noexcept { running_.store(running, std::memory_order_relaxed); }

  /// How the call ran, once ready; nullopt before, and when it never reached a worker.
  std::optional<TaskInfo> info() const {
    if (!ready() || !run_.ran) return std::nullopt;
    return run_.to_info(identity_.get());
  }

  /// Blocks until ready; lets the owning executor help (read the result itself). On an
  /// executor's own thread, throws std::logic_error rather than wait for a call of that executor
  /// only this thread could finish (see wait_helping).
  void wait() {
    if (ready() || run_deferred_until_ready()) return;
    if (auto owner = owner_.lock()) {
      owner->wait(*this, std::nullopt);
    } else if (follows() && this_thread().runs_executor) {
      // then(), when_all, when_any: what completes this state may be this thread's to read.
      wait_helping({this}, [&] { return ready(); }, [&](Clock::time_point until) { block_until(until); },
                   Clock::time_point::max(), false);
    }
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return ready(); });
  }
  /// Blocks until ready or the deadline; true if ready. On an executor's own thread, returns
  /// false at once when what it waits for is a call of that executor only this thread could
  /// finish: waiting to the deadline would only have stopped the executor until then.
  bool wait_until(Clock::time_point deadline) {
    if (ready() || run_deferred_until_ready()) return true;
    if (auto owner = owner_.lock()) {
      owner->wait(*this, deadline);
      if (!ready() && this_thread().runs_executor && owner->progress(*this) == Progress::never) return false;
    } else if (follows() && this_thread().runs_executor) {
      return wait_helping({this}, [&] { return ready(); },
                          [&](Clock::time_point until) { block_until(until); }, deadline,
                          true) == Helped::done;
    }
    return block_until(deadline);
  }
  /// Blocks until ready or the deadline, on the state alone (nobody helped); true if ready.
  bool block_until(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    if (deadline == Clock::time_point::max()) {  // no deadline: as wait() (no far time computed)
      cv_.wait(lock, [&] { return ready(); });
      return true;
    }
    return cv_.wait_until(lock, deadline, [&] { return ready(); });
  }

  /// Runs cb once the state is ready: now, in this thread, if it already is; otherwise in the
  /// thread that completes it. Callbacks must not block for long.
  void add_callback(std::function<void()> cb) {
    fail_if_orphaned();
    {
      std::lock_guard lock(mu_);
      if (!ready()) {
        callbacks_.push_back(std::move(cb));
        return;
      }
    }
    cb();
  }

  /// Tells `n` (pushes `number`) once the state is ready: now, in this thread, if it already is.
  /// Cheaper than a then() callback (an entry in a vector, no state, no std::function) and undone
  /// by unwatch(): a waiter that gives up (ferry::wait past its timeout, an as_completed
  /// abandoned) leaves nothing behind, however often it polls. The notifier is held weakly: a
  /// waiter gone without unwatch costs its entry only until the state completes.
  void watch(const std::shared_ptr<Notifier>& n, std::size_t number) {
    fail_if_orphaned();
    {
      std::lock_guard lock(mu_);
      if (!ready()) {
        watchers_.push_back(Watcher{n, number});
        return;
      }
    }
    n->notify(number);
  }
  /// Forgets what watch(n, number) registered, if the state did not complete since.
  void unwatch(const std::shared_ptr<Notifier>& n, std::size_t number) noexcept {
    std::lock_guard lock(mu_);
    for (auto it = watchers_.begin(); it != watchers_.end(); ++it) {
      if (it->number == number && !it->notifier.owner_before(n) && !n.owner_before(it->notifier)) {
        *it = std::move(watchers_.back());
        watchers_.pop_back();
        return;
      }
    }
  }
  /// How many callbacks and watchers wait for the state to complete (the tests' view that repeated
  /// waits leave nothing behind).
  std::size_t waiters() const {
    std::lock_guard lock(mu_);
    return callbacks_.size() + watchers_.size();
  }

  /// Stores cb to run once the state is ready, in the thread that completes it, and returns true;
  /// returns false without storing it when the state is ready already (the caller goes on at once:
  /// a coroutine's await_suspend).
  bool add_callback_unless_ready(std::function<void()> cb) {
    fail_if_orphaned();
    std::lock_guard lock(mu_);
    if (ready()) return false;
    callbacks_.push_back(std::move(cb));
    return true;
  }

  /// Asks the owner to cancel; true if it did, now or before (the state then ends with
  /// CancelledError), false if it would not (the call runs, or its result was taken already).
  ///
  /// The owner decides under its own lock, where it also decides what ends the call: it marks the
  /// state (agree_cancel) before anything can complete it, and from then on whatever ends the call
  /// ends it with CancelledError (a result on its way is dropped). So a true answer and the
  /// future's end never disagree, and a future asked again after it agreed says true, as
  /// concurrent.futures' Future.cancel does for a cancelled future. shutdown({.kill_workers =
  /// true}) also fails work with CancelledError, but nobody cancelled those futures: they are
  /// failures, as loky's ShutdownExecutorError is one.
  bool cancel(bool kill_running) {
    if (cancel_agreed()) return true;
    if (ready()) return false;
    auto owner = owner_.lock();
    if (!owner) return false;
    return owner->cancel(*this, kill_running);
  }
  /// The owner's, under its lock, when it agrees to cancel, before it completes the state.
  void agree_cancel() noexcept { cancel_agreed_.store(true, std::memory_order_release); }
  /// True once the owner agreed to cancel (the state ends, or ended, with CancelledError).
  bool cancel_agreed() const noexcept { return cancel_agreed_.load(std::memory_order_acquire); }

  /// True once ready() and ended by a cancel() (see cancel): not by another failure.
  bool cancelled() const noexcept { return ready() && cancel_agreed(); }

  /// Called by the executor before the state is shared. `identity`: the task reference's fields
  /// for info() (taken here, on the submitting thread, which holds that reference already).
  void attach(std::weak_ptr<StateOwner> owner, std::uint64_t call_id, std::string task,
              std::shared_ptr<const TaskInfo> identity = nullptr) {
    owner_ = std::move(owner);
    call_id_ = call_id;
    task_ = std::move(task);
    identity_ = std::move(identity);
  }
  std::uint64_t call_id() const noexcept { return call_id_; }
  const std::string& task() const noexcept { return task_; }

  /// Valid once ready().
  const std::exception_ptr& error() const noexcept { return error_; }
  std::string_view payload() const noexcept { return payload_.view().substr(offset_); }

 protected:
  template <class F>
  bool complete(F&& fill, Deferred* later = nullptr) {
    std::vector<std::function<void()>> callbacks;
    std::vector<Watcher> watchers;
    {
      std::lock_guard lock(mu_);
      if (ready()) return false;
      fill();
      done_.store(true, std::memory_order_release);
      callbacks.swap(callbacks_);
      watchers.swap(watchers_);
    }
    cv_.notify_all();
    if (watchers.empty() && callbacks.empty()) return true;
    if (later) {
      defer(*later, watchers, callbacks);
      return true;
    }
    // Inside a callback in this thread (a then() continuation setting its future, when_all's last
    // arrival, when_any's notification): queued behind it, run by the completion that runs that
    // callback, once it returns. Running them here nested one completion in the next: a chain of
    // 50,000 then() overflowed the stack of the thread completing its first future.
    if (Deferred* running = this_thread().deferred) {
      defer(*running, watchers, callbacks);
      return true;
    }
    run_outermost(watchers, callbacks);
    return true;
  }

  /// Runs the callbacks that completions in this thread queued (Deferred), oldest first, until
  /// this state is ready; true if it is. A wait inside a callback does so before it blocks: what
  /// it waits for may be a continuation queued behind it (it would have run already when each
  /// completion ran its callbacks at once, nested).
  bool run_deferred_until_ready() noexcept;
  /// Runs the oldest callback entry this thread queued, from its innermost queue that has one;
  /// false when there is none.
  static bool run_one_deferred() noexcept;

  struct Watcher {
    std::weak_ptr<Notifier> notifier;
    std::size_t number;
  };

  /// Hands them to `later` (defined after Deferred).
  static void defer(Deferred& later, std::vector<Watcher>& watchers,
                    std::vector<std::function<void()>>& callbacks) noexcept;
  /// Runs them as the outermost completion in this thread: those that completions inside them
  /// queue run after them, in order (defined after Deferred).
  static void run_outermost(std::vector<Watcher>& watchers, std::vector<std::function<void()>>& callbacks) noexcept;

  static void run_callbacks(std::vector<Watcher>& watchers, std::vector<std::function<void()>>& callbacks) noexcept {
    for (auto& w : watchers) {
      try {
        if (auto n = w.notifier.lock()) n->notify(w.number);
      } catch (...) {
        // As for a callback below: the completing thread goes on (only an allocation can fail).
      }
    }
    for (auto& cb : callbacks) {
      try {
        cb();
      } catch (...) {
        // A failing callback must not take the completing thread (often the manager) down with
        // it, nor stop the other callbacks: as loky's Future._invoke_callbacks.
      }
    }
  }

 private:
  /// A call submitted before the process forked completes in the parent; in the child nothing
  /// would ever complete its state. Fails it there (the owner's wait() does) before a callback or
  /// a watcher is registered on it: then(), when_all, ferry::wait, as_completed and co_await in a
  /// child are told at once instead of waiting for ever.
  void fail_if_orphaned() {
    if (ready()) return;
    if (auto owner = owner_.lock(); owner && owner->forked()) owner->wait(*this, std::nullopt);
  }
  std::atomic<bool> done_{false};
  std::atomic<bool> running_{false};
  std::atomic<bool> cancel_agreed_{false};  // agree_cancel(): set before the state completes
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Buffer payload_;
  std::size_t offset_ = 0;
  std::exception_ptr error_;
  RunRecord run_;                 // set with the result, published by done_
  std::vector<std::function<void()>> callbacks_;
  std::vector<Watcher> watchers_;  // watch(): waiters on many futures
  bool follows() const noexcept { return !follows_.expired() || !follows_many_.empty(); }

  std::weak_ptr<StateOwner> owner_;
  std::weak_ptr<StateBase> follows_;                  // follow(): then()'s source
  std::vector<std::weak_ptr<StateBase>> follows_many_;  // follow(): when_all's, when_any's
  std::uint64_t call_id_ = 0;
  std::string task_;
  std::shared_ptr<const TaskInfo> identity_;
};

/// A queue of completed states' callbacks and watchers, run in order by one thread. Either a batch
/// (Pool::complete sets every state of the results it read together, then runs their callbacks
/// when its Deferred ends), or the queue of the outermost completion running in a thread
/// (complete()). While it runs it is the thread's innermost: a state completed by one of its
/// callbacks (a then() continuation's future) appends its own callbacks here, to run after the
/// running one returns, instead of running them nested inside it. So a chain of continuations
/// completes in a loop, at a constant stack depth, however long (it completed recursively and
/// overflowed the stack from about 50,000 links). A batch run inside a callback (a cancel() or a
/// get() there completes calls of a pool) is a queue of its own, run there: the pool's mark that
/// a completion is under way (Completing) covers its callbacks.
class StateBase::Deferred {
 public:
  Deferred() = default;
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;
  ~Deferred() { run(); }

  /// Runs what was queued, in order (each state's watchers, then its callbacks, as complete()
  /// did), and what they queue in turn, until nothing is left.
  void run() noexcept {
    if (head_ == held_.size() || running_) return;
    ThisThread& here = this_thread();
    outer_ = here.deferred;
    here.deferred = this;
    running_ = true;
    while (run_one()) {
    }
    running_ = false;
    here.deferred = outer_;
  }

 private:
  friend class StateBase;
  using Entry = std::pair<std::vector<Watcher>, std::vector<std::function<void()>>>;

  void take(std::vector<Watcher>& watchers, std::vector<std::function<void()>>& callbacks) noexcept {
    if (watchers.empty() && callbacks.empty()) return;
    try {
      held_.emplace_back(std::move(watchers), std::move(callbacks));
    } catch (...) {
      StateBase::run_callbacks(watchers, callbacks);  // no memory to hold them: now, not never
    }
  }
  /// Runs the oldest entry; false when none is left. Moved out first: running it may queue more
  /// (the vector grows) or run the next entries itself (run_deferred_until_ready).
  bool run_one() noexcept {
    if (head_ == held_.size()) return false;
    Entry e = std::move(held_[head_++]);
    if (head_ == held_.size()) {
      // Empty again: reused from the start, so that a chain (one entry queued as one runs) keeps
      // one entry's room.
      held_.clear();
      head_ = 0;
    }
    StateBase::run_callbacks(e.first, e.second);
    return true;
  }

  std::vector<Entry> held_;
  std::size_t head_ = 0;        // held_[head_...] are still to run
  bool running_ = false;
  Deferred* outer_ = nullptr;   // the thread's innermost one before this one ran
};

inline void StateBase::defer(Deferred& later, std::vector<Watcher>& watchers,
                             std::vector<std::function<void()>>& callbacks) noexcept {
  later.take(watchers, callbacks);
}

inline void StateBase::run_outermost(std::vector<Watcher>& watchers,
                                     std::vector<std::function<void()>>& callbacks) noexcept {
  // Its own callbacks first, then what they queued: the queue costs an allocation only when a
  // callback completes another state.
  Deferred queue;
  ThisThread& here = this_thread();
  queue.outer_ = here.deferred;  // null: this is the outermost
  here.deferred = &queue;
  queue.running_ = true;
  run_callbacks(watchers, callbacks);
  while (queue.run_one()) {
  }
  queue.running_ = false;
  here.deferred = queue.outer_;
}

inline bool StateBase::run_one_deferred() noexcept {
  // From the innermost queue that has one: what an entry queues goes to the innermost, which is
  // looked at again first.
  for (Deferred* d = this_thread().deferred; d; d = d->outer_)
    if (d->run_one()) return true;
  return false;
}

inline bool StateBase::run_deferred_until_ready() noexcept {
  while (!ready() && run_one_deferred()) {
  }
  return ready();
}

template <class Done, class Block>
StateBase::Helped StateBase::wait_helping(const std::vector<StateBase*>& roots, Done&& done, Block&& block,
                                          Clock::time_point until, bool bounded) {
  // A slice of reading one call's worker when other things are to be watched too.
  constexpr auto slice = std::chrono::milliseconds(1);
  // The roots are the caller's to keep alive; the states reached through them are kept in `path`.
  using Leaf = std::pair<StateBase*, std::shared_ptr<StateOwner>>;
  std::vector<Leaf> here, never;
  std::vector<std::shared_ptr<StateBase>> path;
  std::unordered_set<const StateBase*> seen;  // a future given twice, or reached by two ways
  for (;;) {
    while (!done() && run_one_deferred()) {
    }
    if (done()) return Helped::done;
    // The pending calls behind the roots, and how each can complete. A state gone, a local state
    // that follows nothing, and one whose sources are all ready complete elsewhere (or by this
    // thread's queue, run above).
    here.clear();
    never.clear();
    path.clear();
    seen.clear();
    std::size_t elsewhere = 0;
    std::vector<StateBase*> todo(roots.begin(), roots.end());
    while (!todo.empty()) {
      StateBase* s = todo.back();
      todo.pop_back();
      if (s->ready() || !seen.insert(s).second) continue;
      if (auto owner = s->owner_.lock()) {
        switch (owner->progress(*s)) {
          case Progress::here: here.emplace_back(s, std::move(owner)); break;
          case Progress::never: never.emplace_back(s, std::move(owner)); break;
          case Progress::elsewhere: ++elsewhere; break;
        }
        continue;
      }
      std::size_t before = todo.size();
      if (auto source = s->follows_.lock()) {
        todo.push_back(source.get());
        path.push_back(std::move(source));
      }
      for (const auto& weak : s->follows_many_)
        if (auto source = weak.lock()) {
          todo.push_back(source.get());
          path.push_back(std::move(source));
        }
      if (todo.size() == before) ++elsewhere;
    }
    if (here.empty() && never.empty()) {
      // Nothing waits for this thread: a wait as anywhere else.
      if (Clock::now() >= until) return Helped::timeout;
      block(until);
      continue;
    }
    if (here.empty() && elsewhere == 0) {
      // Only calls this thread would have to send or read, while it waits: never.
      if (bounded) return Helped::stuck;
      never.front().second->wait(*never.front().first, std::nullopt);  // throws std::logic_error
      continue;  // it moved meanwhile (another thread's wait sent it, or it ended)
    }
    if (Clock::now() >= until) return Helped::timeout;
    if (here.empty()) {
      block(until);  // what completes elsewhere may be enough (first_completed, when_any)
      continue;
    }
    const bool alone = here.size() == 1 && elsewhere == 0;
    for (auto& [state, owner] : here) {
      const auto end = alone ? until : std::min(until, Clock::now() + slice);
      owner->wait(*state, end == Clock::time_point::max() ? std::nullopt : std::optional(end));
      if (done()) return Helped::done;
    }
  }
}

template <class T>
constexpr bool copyable_value();

/// copyable_value of every type of a pack.
template <class... T>
constexpr bool copyable_values() {
  return (copyable_value<T>() && ...);
}

/// True when a T can be copied, for a value made in the host (then()). std::is_copy_constructible
/// says yes for a standard container of a move-only type (its copy constructor is not
/// constrained), and so for a pair, tuple, optional or variant holding one, whose copy then fails
/// to compile: the elements of a standard container (one with an allocator) and the members of
/// those are looked at too. A user type holding such a container says yes too: delete its copy
/// constructor.
template <class T>
constexpr bool copyable_value() {
  if constexpr (!std::is_copy_constructible_v<T>) {
    return false;
  } else if constexpr (requires { typename T::allocator_type; typename T::value_type; }) {
    using E = std::remove_cv_t<typename T::value_type>;
    if constexpr (std::is_same_v<E, T>) {
      return true;
    } else {
      return copyable_value<E>();
    }
  } else if constexpr (requires { typename std::tuple_size<T>::type; }) {
    // pair, tuple, array
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return copyable_values<std::remove_cv_t<std::tuple_element_t<I, T>>...>();
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (requires { typename std::variant_size<T>::type; }) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return copyable_values<std::remove_cv_t<std::variant_alternative_t<I, T>>...>();
    }(std::make_index_sequence<std::variant_size_v<T>>{});
  } else if constexpr (requires { typename T::value_type; requires std::is_same_v<T, std::optional<typename T::value_type>>; }) {
    return copyable_value<std::remove_cv_t<typename T::value_type>>();
  } else {
    return true;
  }
}

/// Tag of a state that only ever holds a local value (make_local_state).
struct LocalState {};

/// Typed state: decodes the payload as one T, or, for a map chunk (chunk_items > 0, T a vector),
/// as chunk_items values written one after another; or holds a local value set by a continuation.
template <class T>
class State final : public StateBase {
 public:
  /// A worker's result. `raw`: the payload is the result itself (JSON text), not a cereal
  /// encoding (T = std::string). `first_input`: a map chunk's first input, which its decoding
  /// errors count from (Error::input_index).
  explicit State(std::uint32_t chunk_items = 0, bool raw = false, std::size_t first_input = no_input)
      : items_(chunk_items), raw_(raw), first_input_(first_input) {
    // Only this constructor names decode(), so only states of worker results instantiate it: a
    // local state may hold a type that cannot travel (when_all's vector of futures).
    if constexpr (!std::is_void_v<T>) decode_ = &State::decode;
  }
  /// A local value only (then(), when_all(), when_any()): never decodes. Only this constructor
  /// names take_local(), so only states of values made in the host copy (or move) one out: a
  /// worker's result of a type copyable_value() cannot see through still compiles.
  explicit State(LocalState) : items_(0), raw_(false) {
    if constexpr (!std::is_void_v<T>) take_local_ = &State::take_local;
  }

  T get() {
    wait();
    if (error()) std::rethrow_exception(error());
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      if (local_ && take_local_) return (this->*take_local_)();
      if (!decode_) throw std::logic_error("ferry: a local future state without a value");
      return (this->*decode_)();
    }
  }

  /// A map chunk's values read one after another until the one that cannot be decoded: those of
  /// the inputs before it (map_outcomes keeps them instead of running those inputs again; the
  /// bytes after a value that failed cannot be read). Empty when there is no such payload.
  T values_before_failure() requires(!std::is_void_v<T>);

  template <class U = T>
  bool set_value(U&& v) requires(!std::is_void_v<T>) {
    return complete([&] { local_.emplace(std::forward<U>(v)); });
  }
  bool set_done() requires std::is_void_v<T> {
    return complete([] {});
  }

 private:
  using Local = std::conditional_t<std::is_void_v<T>, bool, T>;

  T decode() requires(!std::is_void_v<T>);

  /// The value made in the host: a copy, or, for a type that cannot be copied, the value itself,
  /// moved out by the first call (as a std::future's): later ones throw std::future_error. A
  /// worker's result is decoded anew by every get() instead.
  T take_local() requires(!std::is_void_v<T>) {
    if constexpr (copyable_value<T>()) {
      return *local_;
    } else {
      if (local_taken_.exchange(true)) throw std::future_error(std::future_errc::future_already_retrieved);
      return std::move(*local_);
    }
  }

  std::uint32_t items_;
  bool raw_;
  std::size_t first_input_ = no_input;
  std::optional<Local> local_;
  std::atomic<bool> local_taken_{false};
  T (State::*decode_)() = nullptr;
  T (State::*take_local_)() = nullptr;
};

template <class T>
struct IsVector : std::false_type {};
template <class T, class A>
struct IsVector<std::vector<T, A>> : std::true_type {};

template <class T>
T State<T>::decode() requires(!std::is_void_v<T>) {
  std::string_view bytes = payload();
  if constexpr (std::is_same_v<T, std::string>)
    if (raw_) return std::string(bytes);
  // The input of a map chunk whose value was being read: its error names it, or the whole chunk's
  // inputs when the values read leave bytes over, or numbers do not fill the chunk's bytes (which
  // one is at fault is not known).
  std::size_t reading = 0, reading_count = items_;
  auto name_input = [&](Error& e) {
    if (first_input_ != no_input && !e.input_index()) e.set_input_index(first_input_ + reading, reading_count);
  };
  try {
    if constexpr (IsVector<T>::value) {
      if (items_ == 0) return decode_value<T>(bytes);
      // A map chunk: `items_` values written one after another by the worker.
      using R = typename T::value_type;
      if constexpr (raw_arithmetic<R>) {
        // Numbers: the chunk is their bytes one after another (cereal writes each as it is in
        // memory), copied at once. Any other size is the whole chunk's fault.
        if (bytes.size() == std::size_t{items_} * sizeof(R)) {
          T out(items_);
          if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
          return out;
        }
        throw cereal::Exception(std::to_string(items_) + " numbers of " + std::to_string(sizeof(R)) +
                                " bytes in a chunk of " + std::to_string(bytes.size()) + " bytes");
      }
      MemoryReader reader(bytes.data(), bytes.size());
      std::istream is(&reader);
      ResultArchive<R> ar(is);
      T out;
      out.reserve(items_);
      reading_count = 1;
      for (; reading < items_; ++reading) {
        R r{};
        ar(r);
        out.push_back(std::move(r));
      }
      reading = 0;
      reading_count = items_;
      if (reader.remaining() != 0)
        throw cereal::Exception("trailing bytes after the result: " +
                                std::to_string(reader.remaining()));
      return out;
    } else {
      return decode_value<T>(bytes);
    }
  } catch (const SerializationError& e) {
    // A copy is named: a load() may rethrow an error another future holds too.
    SerializationError named(e);
    name_input(named);
    throw named;
  } catch (const ferry::Error&) {
    throw;
  } catch (...) {
    // Anything a result type's load throws, `throw 0` included, is a SerializationError: get()
    // throws only ferry::Error (loky: a reducer's sys.exit() at result decoding).
    SerializationError e(SerializationStage::decode_result,
                         std::string(TypeName<std::remove_cvref_t<T>>::value.view()),
                         current_exception_reason(), task());
    name_input(e);
    throw e;
  }
}

template <class T>
T State<T>::values_before_failure() requires(!std::is_void_v<T>) {
  T out;
  if constexpr (IsVector<T>::value) {
    using R = typename T::value_type;
    // Numbers fail as a whole chunk (their bytes do not add up): nothing to keep.
    if constexpr (!raw_arithmetic<R>) {
      wait();
      if (error() || local_ || items_ == 0) return out;
      std::string_view bytes = payload();
      try {
        MemoryReader reader(bytes.data(), bytes.size());
        std::istream is(&reader);
        ResultArchive<R> ar(is);
        for (std::uint32_t i = 0; i < items_; ++i) {
          R r{};
          ar(r);
          out.push_back(std::move(r));
        }
      } catch (...) {
        // Where decode() failed too: what was read before is the answer.
      }
    }
  }
  return out;
}

/// The state of a worker's result (a map chunk of `chunk_items` values from input `first_input`
/// when not 0).
template <class T>
std::shared_ptr<State<T>> make_state(std::uint32_t chunk_items = 0, std::size_t first_input = no_input) {
  return std::make_shared<State<T>>(chunk_items, false, first_input);
}
/// The state of a value computed in the host (then(), when_all(), when_any()).
template <class T>
std::shared_ptr<State<T>> make_local_state() {
  return std::make_shared<State<T>>(LocalState{});
}

}  // namespace ferry::detail
