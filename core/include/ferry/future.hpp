// SPDX-License-Identifier: BSD-3-Clause
// ferry::Future<T> (co_await-able), ferry::wait and ferry::as_completed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#include <ferry/detail/deadline.hpp>
#include <ferry/detail/state.hpp>
#include <ferry/errors.hpp>
#include <ferry/task_info.hpp>

namespace ferry {

/**
@brief Outcome of Future::wait_for / wait_until: true when the future is ready; also compares
with std::future_status.
*/
class WaitStatus {
 public:
  constexpr explicit WaitStatus(bool ready) noexcept : ready_(ready) {}
  constexpr explicit operator bool() const noexcept { return ready_; }
  constexpr operator std::future_status() const noexcept {  // NOLINT: implicit on purpose
    return ready_ ? std::future_status::ready : std::future_status::timeout;
  }
  friend constexpr bool operator==(WaitStatus a, std::future_status b) noexcept {
    return static_cast<std::future_status>(a) == b;
  }

 private:
  bool ready_;
};

/** @brief How Future::cancel treats a task that already runs. */
struct CancelOptions {
  /// Also stop a running task by killing its worker (the pool respawns it); the future then fails
  /// with CancelledError. Without it, only a task still queued in the host can be cancelled.
  bool kill_running = false;
};

template <class T>
class Future;

namespace detail {
template <class T>
class FutureAwaiter;
struct FutureAccess;

template <class T>
struct FutureValue {
  using type = T;
};
template <class F, class T>
auto continuation_result() {
  if constexpr (std::is_invocable_v<F, Future<T>>) {
    return std::type_identity<std::invoke_result_t<F, Future<T>>>{};
  } else if constexpr (std::is_void_v<T>) {
    return std::type_identity<std::invoke_result_t<F>>{};
  } else {
    return std::type_identity<std::invoke_result_t<F, T>>{};
  }
}
}  // namespace detail

/**
@brief Handle to the result of a task. Copyable; all copies share one state.

Thread-safety: every member may be called from any thread, concurrently.
*/
template <class T>
class Future {
 public:
  using value_type = T;

  Future() = default;
  explicit Future(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  /// True unless default-constructed.
  bool valid() const noexcept { return state_ != nullptr; }

  /**
  @brief Waits and returns the result (by value, decoded from the worker's bytes on each call).
  A value made in the host (a then() callback's) is copied out; one that cannot be copied is
  moved out by the first get(), continuation or co_await that takes it.
  @throws TaskError, TerminatedWorkerError, SerializationError, PluginError, UnresolvableTaskError,
  CancelledError, TimeoutError (task deadline), BrokenProcessPool: whatever ended the task.
  std::future_error (future_already_retrieved) for a move-only value made in the host that was
  taken already.
  */
  T get() const { return state().get(); }

  /// Blocks until the future is ready.
  void wait() const { state().wait(); }

  /// Blocks until ready or `timeout` passed; the returned status is true when ready. Any
  /// duration: one too long for the clock (`seconds::max()`, a `duration<double>` of +infinity)
  /// waits as long as it takes, zero or less does not wait. In a callback on the executor's own
  /// thread, for a call of that executor only that thread could finish, it returns a timeout at
  /// once (see then()). @throws std::invalid_argument for a NaN timeout.
  template <class Rep, class Period>
  WaitStatus wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::deadline_after(timeout));
  }
  /// As wait_for, until a time point of std::chrono::steady_clock (in any unit: one past what the
  /// clock's nanoseconds can hold waits as long as it takes).
  template <class Duration>
  WaitStatus wait_until(std::chrono::time_point<detail::Clock, Duration> deadline) const {
    if constexpr (std::is_same_v<Duration, detail::Clock::duration>) {
      return WaitStatus(state().wait_until(deadline));
    } else {
      return WaitStatus(state().wait_until(
          detail::deadline_after(deadline.time_since_epoch(), detail::Clock::time_point{})));
    }
  }

  /// True once the task ended (with a value or an error). Never blocks.
  bool ready() const noexcept { return state_ && state_->ready(); }

  /**
  @brief Cancels the task: true if it had not started (it will never run), or, with
  `kill_running`, if it was running and its worker was killed. The future then fails with
  CancelledError, always: a result that was on its way when the worker was killed is dropped.
  False when it already finished, or what ends it was already decided (its result was read, its
  deadline or a limit is killing its worker), even if the future is not ready yet: then no worker
  is killed for it and the future ends with that outcome. False too for a running task without
  `kill_running`, and for one waiting behind another in its worker's pipeline. True again,
  whatever the options, for a future a cancel() already succeeded on (as concurrent.futures'
  Future.cancel for a cancelled future).
  */
  bool cancel(CancelOptions options = {}) const { return state().cancel(options.kill_running); }

  /**
  @brief True once the future ended because cancel() succeeded on it (concurrent.futures'
  Future.cancelled). Futures failed by `shutdown({.kill_workers = true})` also hold a
  CancelledError but were not cancelled: false for them. Never blocks.
  */
  bool cancelled() const noexcept { return state_ && state_->cancelled(); }

  /**
  @brief True while the task runs (concurrent.futures' Future.running): from when its call became
  the one its worker runs (sent to the worker, every earlier call there answered) until it ends.
  False while it waits in the host's queue or pipelined behind another call of its worker, and
  once ready; false for futures made by then(), when_all() and when_any(). The host's view: a
  result on its way counts as still running. Never blocks (one atomic load).
  */
  bool running() const noexcept { return state_ && state_->running(); }

  /**
  @brief How the call ran, once the future is ready: which worker (pid, host), when it was
  submitted, started and finished, its CPU time, the worker's peak RSS, how many attempts (see
  TaskInfo). nullopt until ready, and for a future whose call never reached a worker (cancelled
  or failed before it was sent, ended by `shutdown({.kill_workers = true})`), and for futures made
  by then(), when_all() and when_any(). For a map chunk or a submit_json of several items, one
  TaskInfo covers the whole chunk. Never blocks.
  */
  std::optional<TaskInfo> info() const { return state_ ? state_->info() : std::nullopt; }

  /**
  @brief `co_await future` in any C++20 coroutine: suspends until the future is ready, then gives
  get()'s value or throws its error.

  Where the coroutine resumes: not at all suspended when the future is ready already (it goes on
  in its own thread); otherwise in the thread that completes the future, as then() callbacks run:
  usually ferry's manager thread, or a thread blocked in get()/wait() on another call of the same
  worker (it reads that worker's results itself), or a thread calling cancel() or shutdown(). Code
  after the co_await therefore runs on ferry's completion path until the coroutine's next
  suspension: keep it short and never block there (a blocking get() or shutdown() on the manager
  thread stalls every worker's results); to go on elsewhere, co_await your own scheduler next. The
  coroutine must stay alive while suspended (destroying its frame then is undefined behaviour, as
  with any awaitable). Thread-safe; the awaiter holds its own copy of the future.
  @code
  my_task<int> twice(ferry::Executor& ex, int x) {
    int y = co_await ex.submit(square, x);
    co_return 2 * y;
  }
  @endcode
  */
  detail::FutureAwaiter<T> operator co_await() const noexcept { return detail::FutureAwaiter<T>(*this); }

  /// Waits, then returns the stored error, or nullptr if the task succeeded.
  std::exception_ptr exception() const {
    wait();
    return state_->error();
  }

  /**
  @brief Runs `f` once this future is ready, and returns a future of what `f` returns.

  `f` takes either the ready Future<T> (and may call get() on it) or the value T (then an error of
  this future skips `f` and passes on to the returned future). It runs in the thread that
  completes this future (often ferry's manager thread), or at once if already ready; it must not
  block for long. An exception thrown by `f` fails the returned future. A wait in `f`, on the
  manager thread, for another call of the same executor (get(), wait(), exception(), ferry::wait,
  as_completed, when_all(...).get(), when_any(...).get(), map...) reads that call's result itself
  when it is on a worker; when only that thread could finish it (still queued, or its worker
  dead) a wait without a deadline throws std::logic_error rather than stop the executor, and one
  with a deadline ends at once as if it had passed. The futures of one batch of results are all
  ready before any callback runs; a future completed inside a callback runs its own callbacks
  after that callback returns (a chain of then() of any length completes in a loop).
  @code
  auto g = ex->submit(square, 3).then([](int v) { return v + 1; });  // g.get() == 10
  @endcode
  */
  template <class F>
  auto then(F&& f) const {
    using U = typename decltype(detail::continuation_result<std::decay_t<F>, T>())::type;
    auto next = detail::make_local_state<U>();
    next->follow(state_);  // a wait for `next` on this executor's own thread helps this one
    Future<T> self = *this;
    state().add_callback([self, next, fn = std::forward<F>(f)]() mutable {
      try {
        if constexpr (std::is_invocable_v<std::decay_t<F>, Future<T>>) {
          if constexpr (std::is_void_v<U>) {
            fn(self);
            next->set_done();
          } else {
            next->set_value(fn(self));
          }
        } else if constexpr (std::is_void_v<T>) {
          self.get();
          if constexpr (std::is_void_v<U>) {
            fn();
            next->set_done();
          } else {
            next->set_value(fn());
          }
        } else {
          if constexpr (std::is_void_v<U>) {
            fn(self.get());
            next->set_done();
          } else {
            next->set_value(fn(self.get()));
          }
        }
      } catch (...) {
        next->set_error(std::current_exception());
      }
    });
    return Future<U>(std::move(next));
  }

  /// Identity of the shared state (for de-duplication in wait / as_completed).
  const detail::StateBase* id() const noexcept { return state_.get(); }

 private:
  friend class detail::FutureAwaiter<T>;
  friend struct detail::FutureAccess;
  detail::State<T>& state() const {
    if (!state_) throw std::future_error(std::future_errc::no_state);
    return *state_;
  }
  std::shared_ptr<detail::State<T>> state_;
};

namespace detail {
/// What `co_await future` uses (see Future::operator co_await).
template <class T>
class FutureAwaiter {
 public:
  explicit FutureAwaiter(Future<T> f) noexcept : f_(std::move(f)) {}
  /// Ready (or no state: get() throws at once): no suspension.
  bool await_ready() const noexcept { return !f_.valid() || f_.ready(); }
  /// Stores the resumption; false (resume now, in this thread) when the future became ready since
  /// await_ready: the coroutine is never resumed from inside its own await_suspend.
  bool await_suspend(std::coroutine_handle<> h) {
    return f_.state().add_callback_unless_ready([h] { h.resume(); });
  }
  T await_resume() const { return f_.get(); }

 private:
  Future<T> f_;
};
}  // namespace detail

/** @brief When ferry::wait returns, as concurrent.futures' FIRST_COMPLETED etc. */
enum class Return {
  first_completed,  ///< as soon as one future is ready
  first_exception,  ///< as soon as one future failed and was not cancelled, or all are ready
  all_completed,    ///< when all are ready
};

/** @brief What ferry::wait returns: the futures split into ready and not ready. */
template <class T>
struct WaitSets {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {
/// The state behind a future, for ferry's own waits.
struct FutureAccess {
  template <class T>
  static const std::shared_ptr<State<T>>& state(const Future<T>& f) noexcept {
    return f.state_;
  }
};

/// `fs` without duplicates, in order. A default-constructed future throws std::future_error
/// (no_state), as when_all and when_any do: it was left out unseen (wait said nothing of it).
template <class T>
std::vector<Future<T>> distinct(const std::vector<Future<T>>& fs) {
  std::vector<Future<T>> out;
  std::set<const StateBase*> seen;
  for (const auto& f : fs) {
    if (!f.valid()) throw std::future_error(std::future_errc::no_state);
    if (seen.insert(f.id()).second) out.push_back(f);
  }
  return out;
}

/// A notifier that every future of `fs` (valid ones) tells when it completes, future i with its
/// index i (at once for those ready already), for as long as the Watch lives: its destructor
/// takes the registrations back, so waiting again and again (ferry::wait polled with a short
/// timeout) leaves nothing on the futures.
class Watch {
 public:
  template <class T>
  explicit Watch(const std::vector<Future<T>>& fs) : notifier_(std::make_shared<Notifier>()) {
    states_.reserve(fs.size());
    try {
      for (std::size_t i = 0; i < fs.size(); ++i) {
        states_.push_back(FutureAccess::state(fs[i]));
        states_.back()->watch(notifier_, i);
      }
    } catch (...) {
      unwatch_all();
      throw;
    }
  }
  ~Watch() { unwatch_all(); }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;
  Watch(Watch&& other) noexcept
      : states_(std::exchange(other.states_, {})), notifier_(std::move(other.notifier_)) {}
  Watch& operator=(Watch&& other) noexcept {
    if (this != &other) {
      unwatch_all();
      states_ = std::exchange(other.states_, {});
      notifier_ = std::move(other.notifier_);
    }
    return *this;
  }

  Notifier& notifier() const noexcept { return *notifier_; }

 private:
  void unwatch_all() noexcept {
    for (std::size_t i = 0; i < states_.size(); ++i) states_[i]->unwatch(notifier_, i);
    states_.clear();
  }

  std::vector<std::shared_ptr<StateBase>> states_;  // states_[i] pushes i
  std::shared_ptr<Notifier> notifier_;
};
}  // namespace detail

/**
@brief Waits on many futures, as concurrent.futures.wait: returns when `when` is satisfied or the
timeout passed, with the futures split into done and not_done (duplicates counted once). A
timeout too long for the clock (years, +infinity) is no timeout; zero or less only looks. Cheap
to poll with a short timeout: nothing it registers on the futures outlives the call. In a
callback on an executor's own thread it waits as Future::get does there (see Future::then):
it reads the results of that executor's calls itself, and when `when` cannot be met but by calls
only that thread could finish, it returns at once with a timeout, else throws std::logic_error.
@throws std::invalid_argument for a NaN timeout; std::future_error (no_state) when a future is
default-constructed (as when_all, when_any).
@code
auto [done, not_done] = ferry::wait(futures, ferry::Return::first_completed);
@endcode
*/
template <class T>
WaitSets<T> wait(const std::vector<Future<T>>& futures, Return when = Return::all_completed,
                 std::optional<std::chrono::duration<double>> timeout = std::nullopt) {
  auto fs = detail::distinct(futures);
  const auto deadline = timeout ? detail::deadline_after(*timeout) : detail::Clock::time_point::max();
  const bool bounded = deadline != detail::Clock::time_point::max();
  auto satisfied = [&] {
    std::size_t ready = 0;
    for (const auto& f : fs) {
      if (!f.ready()) continue;
      ++ready;
      if (when == Return::first_completed) return true;
      // As concurrent.futures: a cancelled future is done, but no reason to return.
      if (when == Return::first_exception && f.exception() && !f.cancelled()) return true;
    }
    return ready == fs.size();
  };
  if (!satisfied()) {
    detail::Watch watch(fs);
    auto& n = watch.notifier();
    if (detail::StateBase::this_thread().runs_executor) {
      // An executor's own thread (a callback): it may have to read the results itself, and must
      // not block for a call only it could send or read (Future::then).
      std::vector<detail::StateBase*> roots;
      for (const auto& f : fs) roots.push_back(detail::FutureAccess::state(f).get());
      detail::StateBase::wait_helping(
          roots, satisfied,
          [&](detail::Clock::time_point until) {
            std::unique_lock lock(n.mu);
            auto woken = [&] { return !n.completed.empty(); };
            if (until == detail::Clock::time_point::max()) {
              n.cv.wait(lock, woken);
            } else {
              n.cv.wait_until(lock, until, woken);
            }
            n.completed.clear();  // only a wake-up: satisfied() looks at the futures themselves
          },
          deadline, bounded);  // stuck (bounded): ends as at its deadline, which waiting could not meet
    } else {
      std::unique_lock lock(n.mu);
      while (!satisfied()) {
        if (bounded) {
          if (n.cv.wait_until(lock, deadline) == std::cv_status::timeout && !satisfied()) break;
        } else {
          n.cv.wait(lock);
        }
        n.completed.clear();  // only a wake-up here: satisfied() looks at the futures themselves
      }
    }
  }
  WaitSets<T> out;
  for (auto& f : fs) (f.ready() ? out.done : out.not_done).push_back(f);
  return out;
}

/**
@brief Iterates over futures in the order they complete, as concurrent.futures.as_completed.
Duplicates are yielded once. With a timeout (counted from the call; one too long for the clock is
none), incrementing past the deadline throws TimeoutError. What it registers on the futures is
taken back when it is destroyed. In a callback on an executor's own thread it waits as
Future::get does there (see Future::then); an increment that could only be met by calls that
thread alone could finish throws std::logic_error, or, with a timeout, TimeoutError at once.
@throws std::invalid_argument for a NaN timeout; std::future_error (no_state) when a future is
default-constructed (as when_all, when_any), from as_completed() itself.
@code
for (ferry::Future<int> f : ferry::as_completed(futures)) use(f.get());
@endcode
*/
template <class T>
class AsCompleted {
 public:
  AsCompleted(const std::vector<Future<T>>& futures,
              std::optional<std::chrono::duration<double>> timeout)
      : futures_(detail::distinct(futures)),
        deadline_(timeout ? detail::deadline_after(*timeout) : detail::Clock::time_point::max()),
        bounded_(deadline_ != detail::Clock::time_point::max()),
        watch_(futures_) {}

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Future<T>;
    using difference_type = std::ptrdiff_t;
    using pointer = const Future<T>*;
    using reference = const Future<T>&;

    iterator() = default;
    explicit iterator(AsCompleted* owner) : owner_(owner) { advance(); }
    reference operator*() const { return current_; }
    pointer operator->() const { return &current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& a, const iterator& b) { return a.owner_ == b.owner_; }

   private:
    void advance() {
      if (!owner_) return;
      auto next = owner_->next();
      if (next) {
        current_ = *next;
      } else {
        owner_ = nullptr;
      }
    }
    AsCompleted* owner_ = nullptr;
    Future<T> current_;
  };

  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  std::optional<Future<T>> next() {
    if (yielded_ == futures_.size()) return std::nullopt;
    auto& n = watch_.notifier();
    if (detail::StateBase::this_thread().runs_executor) {
      // An executor's own thread (a callback): see ferry::wait.
      std::vector<detail::StateBase*> roots;
      for (const auto& f : futures_) roots.push_back(detail::FutureAccess::state(f).get());
      auto some = [&] {
        std::lock_guard lock(n.mu);
        return !n.completed.empty();
      };
      auto helped = detail::StateBase::wait_helping(
          roots, some,
          [&](detail::Clock::time_point until) {
            std::unique_lock lock(n.mu);
            auto some_now = [&] { return !n.completed.empty(); };
            if (until == detail::Clock::time_point::max()) {
              n.cv.wait(lock, some_now);
            } else {
              n.cv.wait_until(lock, until, some_now);
            }
          },
          deadline_, bounded_);
      if (helped != detail::StateBase::Helped::done) throw timed_out(helped == detail::StateBase::Helped::stuck);
    }
    std::unique_lock lock(n.mu);
    while (n.completed.empty()) {
      if (bounded_) {
        if (n.cv.wait_until(lock, deadline_) == std::cv_status::timeout && n.completed.empty())
          throw timed_out();
      } else {
        n.cv.wait(lock);
      }
    }
    std::size_t i = n.completed.front();
    n.completed.pop_front();
    ++yielded_;
    return futures_[i];
  }

  /// `stuck`: before the deadline, which waiting could not meet (see Future::then).
  TimeoutError timed_out(bool stuck = false) const {
    return TimeoutError("as_completed: " + std::to_string(futures_.size() - yielded_) + " of " +
                        std::to_string(futures_.size()) + " futures were not ready before the timeout" +
                        (stuck ? std::string(" (they could not be: they are calls of the executor whose own thread "
                                             "waits for them here, in a callback)")
                               : std::string()));
  }

  std::vector<Future<T>> futures_;
  detail::Clock::time_point deadline_;
  bool bounded_;
  detail::Watch watch_;  // after futures_: made from them
  std::size_t yielded_ = 0;
};

/** @brief See AsCompleted. */
template <class T>
AsCompleted<T> as_completed(const std::vector<Future<T>>& futures,
                            std::optional<std::chrono::duration<double>> timeout = std::nullopt) {
  return AsCompleted<T>(futures, timeout);
}

}  // namespace ferry
