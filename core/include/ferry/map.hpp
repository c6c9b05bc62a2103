// SPDX-License-Identifier: BSD-3-Clause
// Maps: MapOptions, ferry::Indexed and ferry::Outcome, the stream Executor::imap returns, and the
// engine behind Executor::map, imap, imap_unordered and map_outcomes.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ferry/detail/deadline.hpp>
#include <ferry/detail/progress.hpp>
#include <ferry/errors.hpp>
#include <ferry/future.hpp>

namespace ferry {

/** @brief Options of Executor::map, imap, imap_unordered and map_outcomes. */
struct MapOptions {
  /// Inputs per message (and per worker call), as given; 0 = chosen: about four chunks per
  /// worker (from the input size and the pool size) for map and map_outcomes; imap and
  /// imap_unordered start with one input per chunk (one such chunk per worker) and make each
  /// round of chunks four times larger up to map's size, so that their first results come after
  /// one input's time rather than a chunk's.
  std::size_t chunksize = 0;
  /// The whole map's budget, counted from the call, as concurrent.futures' Executor.map: from
  /// the call to map or map_outcomes, and for imap and imap_unordered from the call that returns
  /// the stream (not from its first increment: time spent before iterating counts). When it runs
  /// out, the chunks not yet started are cancelled (running chunks are killed too with
  /// `kill_running`; without it they, and any queued behind them in a worker, run to their end)
  /// and TimeoutError is thrown, saying which (by imap's increment that meets it, which ends the
  /// stream). 0 or less = none; one too long for the clock (years, +infinity) = none. NaN is
  /// refused: std::invalid_argument from the call.
  std::chrono::duration<double> timeout{0};
  /// Called in the calling thread as inputs finish: (done, total), total 0 when the input range
  /// does not know its size.
  std::function<void(std::size_t done, std::size_t total)> on_progress;
  /// A progress bar on stderr when it is a terminal (the one `ferry map` draws).
  bool progress = false;
  /// Stops the map: queued chunks are cancelled, running ones killed with `kill_running`. map
  /// then throws CancelledError, imap and imap_unordered end, map_outcomes gives the inputs that
  /// did not run a CancelledError.
  std::stop_token stop;
  /// On timeout or stop, also kill the workers running chunks of this map (they are replaced).
  bool kill_running = false;
  /// Chunks sent and not yet consumed, at most; 0 = about two per worker for imap and
  /// imap_unordered (memory stays bounded however long the input), all at once for map and
  /// map_outcomes (their results are all kept anyway).
  std::size_t max_in_flight = 0;
};

/** @brief An element of Executor::imap_unordered: a result and the index of its input. */
template <class R>
struct Indexed {
  std::size_t index = 0;
  R value;
};

/**
@brief The outcome of one input of Executor::map_outcomes: its value, or the error that input
met (the analogue of `ferry map --keep-going`).
*/
template <class R>
class Outcome {
 public:
  Outcome(std::size_t i, R value) : index(i), value_(std::move(value)) {}
  Outcome(std::size_t i, std::exception_ptr error) : index(i), error_(std::move(error)) {}

  /// The index of the input, from 0 in input order.
  std::size_t index = 0;
  bool ok() const noexcept { return !error_; }
  /// The value; rethrows the error of a failed input.
  const R& value() const& {
    if (error_) std::rethrow_exception(error_);
    return *value_;
  }
  R&& value() && {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }
  /// The error (a ferry::Error naming this input), or nullptr.
  std::exception_ptr error() const noexcept { return error_; }

 private:
  std::optional<R> value_;
  std::exception_ptr error_;
};

namespace detail {

/// What MapRun's source made: a chunk, nothing yet (more will come: MapRun::wake() says when),
/// or nothing ever again.
enum class Produced { chunk, later, end };

/// A chunk of a map: inputs [first, first + count), their encoded arguments and their future.
template <class V>
struct MapChunk {
  std::size_t first = 0;
  std::uint32_t count = 0;
  Buffer args;                      // kept only when parts may be sent again (keep going)
  std::vector<std::uint32_t> ends;  // keep going: where each input's bytes end in `args`
  std::uint32_t prefix = 0;         // bytes of the shared arguments at the start of `args`
  Future<V> future;

  /// The inputs [from, to) of this chunk as a chunk of their own (keep going), with the shared
  /// arguments ahead of them.
  MapChunk part(std::uint32_t from, std::uint32_t to) const {
    MapChunk p;
    p.first = first + from;
    p.count = to - from;
    p.prefix = prefix;
    std::uint32_t begin = from == 0 ? prefix : ends[from - 1];
    p.args.append(args.data(), prefix);
    p.args.append(args.data() + begin, ends[to - 1] - begin);
    for (std::uint32_t i = from; i < to; ++i) p.ends.push_back(ends[i] - begin + prefix);
    return p;
  }
};

/// How a failed map chunk's error concerns its inputs: one input's (the task threw, or its
/// arguments or result failed to travel), its worker's death (which input killed it is not
/// known), or the whole chunk's (cancelled, a plugin error...). The keep-going policy of
/// map_outcomes and `ferry map --keep-going`: the others of a failed input's chunk run again; the
/// inputs of a chunk whose worker died run again one by one; a chunk's error is every input's.
enum class ChunkFailure { input, worker, chunk };
struct ChunkFailed {
  ChunkFailure kind;
  std::size_t input = 0;  ///< ChunkFailure::input: the index of that input
};
inline ChunkFailed classify_chunk_failure(const std::exception_ptr& e, std::size_t first, std::size_t count) {
  auto one_input = [&](const Error& err) {
    auto i = err.input_index();
    return i && err.input_count() == 1 && *i >= first && *i < first + count ? ChunkFailed{ChunkFailure::input, *i}
                                                  : ChunkFailed{ChunkFailure::chunk};
  };
  try {
    std::rethrow_exception(e);
  } catch (const TerminatedWorkerError&) {
    return {ChunkFailure::worker};
  } catch (const TaskError& err) {
    return one_input(err);
  } catch (const SerializationError& err) {
    return one_input(err);
  } catch (...) {
    return {ChunkFailure::chunk};
  }
}

/**
@brief Runs the chunks of one map: makes them as needed (at most `limit` out), sends them, and
hands them back finished, in input order or in completion order. Timeout, stop and progress of
MapOptions are handled here, in the calling thread. A source that is fed from elsewhere (`ferry
map` reads its input in a thread of its own) answers Produced::later when it has nothing yet, and
calls wake() from any thread when it has.
*/
template <class V>
class MapRun {
 public:
  using Chunk = MapChunk<V>;
  /// Makes the next chunk (first, count, args).
  using Produce = std::function<Produced(Chunk&)>;
  /// Sends a chunk: sets its future (args may be moved out unless kept).
  using Send = std::function<void(Chunk&)>;

  MapRun(const MapOptions& options, std::size_t limit, bool ordered, std::size_t total,
         Produce produce, Send send, std::string unit = "items")
      : options_(options),
        limit_(limit ? limit : SIZE_MAX),
        ordered_(ordered),
        total_(total),
        produce_(std::move(produce)),
        send_(std::move(send)),
        bar_(options.progress && ::isatty(STDERR_FILENO) == 1,
             total ? std::optional<std::size_t>(total) : std::nullopt, std::move(unit)) {
    // Counted from here, the call that makes the map (or the stream), as concurrent.futures does.
    if (options_.timeout.count() > 0 || std::isnan(options_.timeout.count())) {
      auto at = deadline_after(options_.timeout);  // NaN: std::invalid_argument
      if (at != Clock::time_point::max()) deadline_ = at;
    }
  }
  MapRun(const MapRun&) = delete;
  MapRun& operator=(const MapRun&) = delete;
  ~MapRun() {
    // Abandoned early (an imap left before its end, an error): what has not started never will.
    for (auto& [seq, c] : flying_)
      if (!c.future.ready()) c.future.cancel();
  }

  /// The next finished chunk; nullopt when every chunk was handed back, or the map was stopped
  /// (stopped() then says so). @throws TimeoutError past MapOptions::timeout.
  std::optional<Chunk> next() {
    for (;;) {
      if (options_.stop.stop_requested()) {
        // Once a stop is requested nothing more is handed back, finished or not.
        if (!stopped_) stop();
        return finish();
      }
      fill();
      if (flying_.empty()) {
        if (send_error_) {
          // What was sent before it has been handed back: now the chunk that could not be sent
          // fails the map (imap: this increment), once.
          bar_.clear();
          std::rethrow_exception(std::exchange(send_error_, nullptr));
        }
        if (exhausted_ || !later_) return finish();
        // Nothing out and the source has nothing yet: wait until it has.
        if (!wait_for([&] { return woken(); }, [&](Clock::time_point until) { wait_notifier(until); }))
          return finish();
        continue;
      }
      if (ordered_) {
        auto it = flying_.begin();
        if (!wakeable_) {
          if (!wait_for([&] { return it->second.future.ready(); },
                        [&](Clock::time_point until) {
                          if (until == Clock::time_point::max()) it->second.future.wait();
                          else it->second.future.wait_until(until);
                        }))
            return finish();
        } else {
          // Woken too when the source has more (it is sent while the head chunk runs).
          if (!wait_for([&] { return it->second.future.ready() || woken(); },
                        [&](Clock::time_point until) { wait_notifier(until); }))
            return finish();
          if (!it->second.future.ready()) continue;
        }
        Chunk c = std::move(it->second);
        flying_.erase(it);
        return c;
      }
      if (!wait_for(
              [&] {
                std::lock_guard lock(notifier_->mu);
                return !notifier_->completed.empty() || (wakeable_ && notifier_->woken);
              },
              [&](Clock::time_point until) { wait_notifier(until); }))
        return finish();
      std::uint64_t seq;
      {
        std::lock_guard lock(notifier_->mu);
        if (notifier_->completed.empty()) {  // woken: the source has more
          notifier_->woken = false;
          continue;
        }
        seq = notifier_->completed.front();
        notifier_->completed.pop_front();
      }
      auto it = flying_.find(seq);
      Chunk c = std::move(it->second);
      flying_.erase(it);
      return c;
    }
  }

  /// From any thread: the source has more to produce (a Produced::later is over).
  void wake() {
    {
      std::lock_guard lock(notifier_->mu);
      notifier_->woken = true;
    }
    notifier_->cv.notify_all();
  }

  /// The source may answer Produced::later: chunks then signal their completion so that next()
  /// can wait for either. Call before the first next().
  void set_wakeable() noexcept { wakeable_ = true; }

  /// The bar MapOptions::progress draws (a caller writing to the same terminal clears it first).
  ProgressBar& progress_bar() noexcept { return bar_; }

  /// Sends a chunk made by the caller (keep going: the parts of a failed chunk, again).
  void resend(Chunk c) { launch(std::move(c)); }

  /// Counts finished inputs for on_progress and the bar.
  void advance(std::size_t inputs) {
    done_ += inputs;
    if (options_.on_progress) options_.on_progress(done_, total_);
    bar_.update(done_);
  }

  /// After a failure: cancels every chunk out that has not started (and stops running ones with
  /// MapOptions::kill_running), and returns without waiting for them, as concurrent.futures'
  /// Executor.map cancels its pending futures and raises. What still runs ends in the pool in the
  /// background; its result goes with its future, which this run drops. map waited here for the
  /// running chunks (until its timeout): a long one held the failure back for its whole length.
  void cancel_all() {
    exhausted_ = true;
    for (auto& [seq, c] : flying_) c.future.cancel(CancelOptions{.kill_running = options_.kill_running});
  }

  bool stopped() const noexcept { return stopped_; }
  /// True once MapOptions::stop was requested, whether or not next() has seen it yet.
  bool stop_requested() const noexcept { return stopped_ || options_.stop.stop_requested(); }
  std::size_t done() const noexcept { return done_; }
  /// The chunks still out (after a stop, those map_outcomes reports as cancelled).
  std::map<std::uint64_t, Chunk>& remaining() noexcept { return flying_; }

 private:
  using Clock = std::chrono::steady_clock;

  void fill() {
    while (!exhausted_ && flying_.size() < limit_ && !options_.stop.stop_requested()) {
      Chunk c;
      Produced p;
      try {
        p = produce_(c);
      } catch (...) {
        // An input that cannot be encoded, or the input range's own error: thrown in input order
        // too, once the chunks before it are handed back (it was thrown at once, and their
        // results were lost).
        exhausted_ = true;
        if (flying_.empty()) throw;
        send_error_ = std::current_exception();
        break;
      }
      later_ = p == Produced::later;
      if (p == Produced::end) exhausted_ = true;
      if (p != Produced::chunk) break;
      try {
        launch(std::move(c));
      } catch (...) {
        // The executor cannot take it (shut down, broken, or gone while an imap lives on): the
        // chunks already out are handed back first, then next() throws this, in input order.
        exhausted_ = true;
        if (flying_.empty()) throw;
        send_error_ = std::current_exception();
        break;
      }
    }
  }

  /// Whether wake() was called since the last look (and forgets it).
  bool woken() {
    std::lock_guard lock(notifier_->mu);
    return std::exchange(notifier_->woken, false);
  }

  void wait_notifier(Clock::time_point until) {
    std::unique_lock lock(notifier_->mu);
    notifier_->cv.wait_until(lock, until, [&] { return !notifier_->completed.empty() || notifier_->woken; });
    // In input order a completion only wakes the wait up: the head chunk's future says whether it
    // was the one awaited.
    if (ordered_) notifier_->completed.clear();
  }

  void launch(Chunk c) {
    send_(c);
    std::uint64_t seq = next_seq_++;
    if (!ordered_ || wakeable_) {
      // Completion order: each chunk says when it is done (held weakly: a chunk abandoned with
      // the run keeps only an entry until it ends).
      FutureAccess::state(c.future)->watch(notifier_, static_cast<std::size_t>(seq));
    }
    flying_.emplace(seq, std::move(c));
  }

  /// Waits until `ready()`, in slices when a stop or a deadline must be watched; false when
  /// stopped. @throws TimeoutError
  template <class Ready, class WaitUntil>
  bool wait_for(Ready ready, WaitUntil wait_until) {
    const bool watch_stop = options_.stop.stop_possible();
    // A map in a callback on an executor's own thread (its manager): the chunks may be calls only
    // this thread can read, or send (see Future::then): waited for as Future::get waits there.
    const bool helping = StateBase::this_thread().runs_executor;
    while (!ready()) {
      if (watch_stop && options_.stop.stop_requested()) {
        stop();
        return false;
      }
      auto now = Clock::now();
      if (deadline_ && now >= *deadline_) timeout();
      auto until = Clock::time_point::max();
      if (watch_stop) until = now + std::chrono::milliseconds(20);
      if (deadline_) until = std::min(until, *deadline_);
      if (helping) {
        // In input order the head chunk is awaited; else any. Stuck with a timeout: it cannot be
        // met, and ends the map now (without one, wait_helping throws std::logic_error).
        std::vector<StateBase*> roots;
        if (ordered_ && !wakeable_ && !flying_.empty()) {
          roots.push_back(FutureAccess::state(flying_.begin()->second.future).get());
        } else {
          for (auto& [seq, c] : flying_) roots.push_back(FutureAccess::state(c.future).get());
        }
        if (StateBase::wait_helping(roots, ready, wait_until, until, deadline_.has_value()) ==
            StateBase::Helped::stuck)
          timeout();
        continue;
      }
      wait_until(until);
    }
    return true;
  }

  void stop() {
    stopped_ = true;
    cancel_all();
  }

  [[noreturn]] void timeout() {
    exhausted_ = true;
    // Counted as it goes, for a message that says what became of each chunk out: cancel() takes
    // back a chunk still queued in the host; a running one only with kill_running (its worker is
    // killed); one queued behind another in a worker's pipeline not at all.
    std::size_t cancelled = 0, stopped = 0, left = 0;
    for (auto& [seq, c] : flying_) {
      if (c.future.ready()) continue;  // finished, not yet handed back
      const bool was_running = c.future.running();
      if (c.future.cancel(CancelOptions{.kill_running = options_.kill_running})) {
        ++(was_running ? stopped : cancelled);
      } else if (!c.future.ready()) {
        ++left;
      }
    }
    bar_.clear();
    throw TimeoutError::map_timeout(std::chrono::round<std::chrono::nanoseconds>(options_.timeout), done_,
                                    total_, cancelled, stopped, left, options_.kill_running);
  }

  std::optional<Chunk> finish() {
    if (!stopped_) bar_.finish(done_);
    else bar_.clear();
    return std::nullopt;
  }

  const MapOptions& options_;
  std::size_t limit_;
  bool ordered_;
  std::size_t total_;
  Produce produce_;
  Send send_;
  ProgressBar bar_;
  std::optional<Clock::time_point> deadline_;
  std::exception_ptr send_error_;  // a chunk not made or not sent: thrown once those out are back
  std::map<std::uint64_t, Chunk> flying_;  // by sequence: input order for the chunks produced
  std::uint64_t next_seq_ = 0;
  std::shared_ptr<Notifier> notifier_ = std::make_shared<Notifier>();
  bool exhausted_ = false;
  bool later_ = false;     // the source's last answer was Produced::later
  bool wakeable_ = false;  // set_wakeable()
  bool stopped_ = false;
  std::size_t done_ = 0;
};

}  // namespace detail

/**
@brief The lazy range Executor::imap (of R, in input order) and imap_unordered (of Indexed<R>, in
completion order) return. An input range: iterate it once. Inputs are pulled and sent as the
iteration goes, at most MapOptions::max_in_flight chunks ahead. An error of an input is thrown by
the increment (or begin()) that reaches the chunk holding it (with chunksize 1: that very input),
and ends the stream (so does a result that cannot be decoded, or an on_progress that throws); so
do a TimeoutError (MapOptions::timeout, counted from the call that made the stream) and the error of a chunk the executor could not take: the stream may outlive its
executor, and once that is gone, the results sent before come back and the next increment throws
BrokenProcessPool. Leaving the stream early cancels the chunks not yet started.
*/
template <class R, bool Unordered>
class MapStream {
 public:
  using value_type = std::conditional_t<Unordered, Indexed<R>, R>;

  struct State {
    MapOptions options;
    std::unique_ptr<detail::MapRun<std::vector<R>>> run;
    std::vector<R> values;
    std::size_t first = 0, pos = 0;
    std::optional<value_type> current;  // imap_unordered: the element at pos
    bool done = false;

    void load() {
      for (;;) {
        std::optional<typename detail::MapRun<std::vector<R>>::Chunk> c;
        try {
          c = run->next();
        } catch (...) {
          done = true;  // a timeout, or the executor could not take a chunk: the stream ends
          throw;
        }
        if (!c) {
          done = true;
          return;
        }
        if (auto e = c->future.exception()) {
          done = true;
          std::rethrow_exception(e);
        }
        try {
          values = c->future.get();
          first = c->first;
          pos = 0;
          run->advance(c->count);
        } catch (...) {
          // A result a type's load() refused, or on_progress threw: the stream ends there (it
          // went on past its values, and skipped the chunk).
          done = true;
          values.clear();
          throw;
        }
        if (!values.empty()) break;
      }
      set_current();
    }
    void advance() {
      if (done) return;
      if (++pos < values.size()) return set_current();
      load();
    }
    void set_current() {
      if constexpr (Unordered) current.emplace(value_type{first + pos, std::move(values[pos])});
    }
    value_type& get() {
      if constexpr (Unordered) return *current;
      else return values[pos];
    }
  };

  class iterator {
   public:
    using value_type = MapStream::value_type;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;

    iterator() = default;
    explicit iterator(State* s) : s_(s) {}
    value_type& operator*() const { return s_->get(); }
    value_type* operator->() const { return &s_->get(); }
    iterator& operator++() {
      s_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.s_ || it.s_->done; }

   private:
    State* s_ = nullptr;
  };

  explicit MapStream(std::unique_ptr<State> state) : state_(std::move(state)) {}

  /// Starts the iteration (sends the first chunks and waits for the first result).
  iterator begin() {
    if (!started_) {
      started_ = true;
      state_->load();
    }
    return iterator(state_.get());
  }
  std::default_sentinel_t end() const noexcept { return {}; }
  /// True when the map ended because MapOptions::stop was requested.
  bool stopped() const noexcept { return state_->run->stopped(); }

 private:
  std::unique_ptr<State> state_;
  bool started_ = false;
};

}  // namespace ferry
