// SPDX-License-Identifier: BSD-3-Clause
// ferry::Executor: the public face of Pool.
#include <ferry/ferry.hpp>
#include <ferry/wrap.hpp>

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "api/json_chunk.hpp"
#include "host/pool.hpp"
#include "platform/fd.hpp"
#include "wire/protocol.hpp"

static_assert(ferry::detail::shared_args_flag == ferry::detail::protocol::flag_shared_args);

namespace ferry {

const char* version() noexcept { return FERRY_VERSION_STRING; }

namespace detail {
std::string current_exception_reason() {
  try {
    throw;
  } catch (abi::__forced_unwind&) {
    throw;  // a cancelled thread must keep unwinding
  } catch (...) {
    // The worker's own description ("<type>\0<what>"), so both sides word a `throw 0` alike.
    std::stringbuf described;
    describe_current_exception(described);
    std::string text = described.str();
    auto nul = text.find('\0');
    return nul == std::string::npos ? text : text.substr(nul + 1);
  }
}
}  // namespace detail

/// An executor as its map chunks reach it (Executor::chunk_sender): an imap stream holds the link
/// and may outlive the executor, whose destructor cuts it (under `mu`, so no chunk is being sent
/// through it meanwhile) before shutting the pool down.
struct detail::ExecutorLink {
  std::shared_mutex mu;
  Executor* executor = nullptr;  // null once the executor is being destroyed
  // The link of the one get_reusable_executor replaced it with, if any: a stream follows the
  // links to the executor that is there now, however many were replaced since (each link is a
  // few words; an executor is not kept alive by it).
  std::shared_ptr<ExecutorLink> next;
};

Executor::Executor(ExecutorOptions options)
    : pool_((detail::keep_standard_descriptors_open(), std::make_shared<detail::Pool>(std::move(options)))),
      link_(std::make_shared<detail::ExecutorLink>()) {
  link_->executor = this;
  pool_->start();
  // FERRY_WRAP functions start compiling now, in the background: the first submit need not wait.
  warm_up_wraps();
}

/// A reusable executor's link to the one get_reusable_executor replaced it with (loky 3.5 #632:
/// a thread that resolved the executor just before another call replaced it submits to the
/// replacement instead of failing).
///
/// The race it closes: a submission checks `replaced`, finds it false, and hands its call to the
/// pool while hand_over shuts that pool down; the pool would throw BrokenProcessPool. So a
/// submission to the own pool runs under `mu` shared, and hand_over sets `replaced`, then takes
/// `mu` exclusively before shutting the pool down: every submission either saw the flag
/// (forwards) or is finished (was accepted). Submissions that see the flag take no lock at all,
/// so a stream of them cannot starve hand_over.
struct detail::Succession {
  std::shared_mutex mu;
  std::atomic<bool> replaced{false};
  std::shared_ptr<Executor> next;  // written once, before `replaced` (release)
};

Executor::~Executor() {
  try {
    // Streams still alive send nowhere from now on (or to this executor's replacement). In a
    // forked child without the lock (a thread of the parent may have held it; the child's own
    // threads are its own, and none of them can be sending through a copy of the parent's).
    std::unique_lock lock(link_->mu, std::defer_lock);
    if (!pool_->forked()) lock.lock();
    link_->executor = nullptr;
    if (auto r = replacement()) link_->next = r->link_;
    // Not held while waiting: a map or imap in a callback (on the manager thread, which the wait
    // below needs) sends its next chunk under this lock, and the destructor waited for good.
    if (lock.owns_lock()) lock.unlock();
    pool_->shutdown({.wait = true, .kill_workers = false});
  } catch (...) {
    // Destructors are noexcept; shutdown only throws on allocation failure.
  }
}

void Executor::submit_linked(detail::ExecutorLink& link, const detail::Target& target,
                             detail::Buffer args, std::uint32_t items,
                             std::shared_ptr<detail::StateBase> state, std::uint8_t frame_flags,
                             std::size_t first_input) {
  std::shared_ptr<detail::ExecutorLink> held;  // the link looked at, past the stream's own
  for (detail::ExecutorLink* at = &link; at;) {
    std::shared_ptr<detail::ExecutorLink> next;
    {
      // Held while the chunk is submitted: nothing under it may run a user's callback (one that
      // destroyed the executor would wait for this lock on this thread). It holds today because
      // the chunk's state gets its future, and so any callback, only after this returns.
      std::shared_lock lock(at->mu);
      if (at->executor) {
        at->executor->submit_encoded(target, std::move(args), items, std::move(state), SubmitOptions{},
                                     frame_flags, first_input);
        return;
      }
      next = at->next;
    }
    held = std::move(next);  // after the lock: `at` may be the link `held` kept alive
    at = held.get();
  }
  throw BrokenProcessPool::shut_down();
}

void Executor::submit_encoded(const detail::Target& target, detail::Buffer args,
                              std::uint32_t items, std::shared_ptr<detail::StateBase> state,
                              const SubmitOptions& options, std::uint8_t frame_flags,
                              std::size_t first_input) {
  // In a child of fork() the pool fails the call at once; a lock of the succession that a thread
  // of the parent held when it forked is held for good here.
  if (!succession_ || pool_->forked()) {
    pool_->submit(target, std::move(args), items, std::move(state), options, frame_flags, first_input);
    return;
  }
  std::shared_ptr<Executor> next = replacement();
  if (!next) {
    std::shared_lock lock(succession_->mu);
    next = replacement();  // hand_over may have run before we took the lock
    if (!next) {
      pool_->submit(target, std::move(args), items, std::move(state), options, frame_flags, first_input);
      return;
    }
  }
  // The replacement checks again: it may have been replaced (or shut down) meanwhile.
  next->submit_encoded(target, std::move(args), items, std::move(state), options, frame_flags,
                       first_input);
}

void Executor::make_reusable() { succession_ = std::make_unique<detail::Succession>(); }

void Executor::hand_over(std::shared_ptr<Executor> next) {
  succession_->next = std::move(next);
  succession_->replaced.store(true, std::memory_order_release);
  // Wait for the submissions that did not see the flag: they are accepted by this pool, which
  // then completes them in the background like any work pending at shutdown. (Not in a child of
  // fork(): a parent's thread may have held the lock when it forked, for good here.)
  if (!pool_->forked()) {
    std::unique_lock lock(succession_->mu);
  }
  pool_->shutdown({.wait = false, .kill_workers = false});
}

std::shared_ptr<Executor> Executor::replacement() const {
  if (!succession_ || !succession_->replaced.load(std::memory_order_acquire) || pool_->broken())
    return nullptr;
  // loky submits to the current executor: skip those that were replaced in turn, even broken.
  std::shared_ptr<Executor> next = succession_->next;
  while (next->succession_->replaced.load(std::memory_order_acquire))
    next = next->succession_->next;
  return next;
}

namespace {
/// The first input of the JSON chunk detail::submit_json_chunk submits on this thread: it calls
/// submit_json, whose submit_json_to takes it (no_input otherwise). The public header gives
/// submit_json no such parameter.
thread_local std::size_t json_chunk_first_input = detail::no_input;

/// The lines of a submit_json text: one per newline, and the text after the last one (a final
/// newline ends the last line; an empty text is one blank line, the arguments of a task without
/// parameters).
std::size_t json_lines_in(std::string_view text) {
  const auto newlines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  return newlines + (text.empty() || text.back() != '\n' ? 1 : 0);
}
}  // namespace

Future<std::string> Executor::submit_json_to(detail::Target target, std::string lines,
                                             std::uint32_t items, bool keep_going) {
  const std::size_t first_input = std::exchange(json_chunk_first_input, detail::no_input);
  // The worker reads `items` lines and nothing past them: more were dropped unseen (the default
  // items = 1 with two lines returned the first's result alone), fewer failed there with "The
  // document is empty". A caller's mistake, refused before anything is sent.
  if (const std::size_t given = json_lines_in(lines); given != items) {
    throw std::invalid_argument("ferry: submit_json: the text holds " + std::to_string(given) +
                                (given == 1 ? " line" : " lines") + ", but items is " + std::to_string(items) +
                                " (one JSON object of arguments per line, one final newline allowed)");
  }
  target.signature = "(JSON arguments)";
  target.fingerprint = 0;  // the worker's JSON decoding checks the types
  auto state = std::make_shared<detail::State<std::string>>(0, /*raw=*/true);
  detail::Buffer args;
  args.append(lines.data(), lines.size());
  std::uint8_t flags = detail::protocol::flag_json | (keep_going ? detail::protocol::flag_keep_going : 0);
  submit_encoded(target, std::move(args), items, state, SubmitOptions{}, flags, first_input);
  return Future<std::string>(std::move(state));
}

Future<std::string> detail::submit_json_chunk(Executor& executor, const TaskRef& task, std::string lines,
                                              std::uint32_t items, bool keep_going, std::size_t first_input) {
  json_chunk_first_input = first_input;
  struct Reset {
    ~Reset() { json_chunk_first_input = detail::no_input; }  // also when submit_json threw first
  } reset;
  return executor.submit_json(task, std::move(lines), items, keep_going);
}

Future<std::string> Executor::submit_json(std::string_view task, std::string lines,
                                          std::uint32_t items, bool keep_going) {
  return submit_json_to(detail::Target::by_name(std::string(task)),
                        std::move(lines), items, keep_going);
}

Future<std::string> Executor::submit_json(const TaskRef& ref, std::string lines,
                                          std::uint32_t items, bool keep_going) {
  return submit_json_to(
      detail::Target::by_ref(ref.name, ref.library),
      std::move(lines), items, keep_going);
}

void Executor::fail_encoding(detail::StateBase& state, const detail::Target& target,
                             std::string reason) {
  if (auto next = replacement()) return next->fail_encoding(state, target, std::move(reason));
  if (pool_->is_shutdown()) throw BrokenProcessPool::shut_down();
  pool_->fail_submission(state, target,
                         std::make_exception_ptr(SerializationError(SerializationStage::encode_arguments,
                                                                    std::string(target.signature),
                                                                    std::move(reason), target.name)));
}

std::size_t Executor::default_chunksize(std::size_t total) const {
  if (auto next = replacement()) return next->default_chunksize(total);  // it runs the chunks
  // About four chunks per worker: few messages, still some balance between workers.
  if (total == 0) return 16;
  std::size_t per = 4 * pool_->max_workers();
  return std::clamp<std::size_t>((total + per - 1) / per, 1, 4096);
}

void Executor::shutdown(ShutdownOptions options) { pool_->shutdown(options); }
void Executor::resize(std::size_t max_workers) { pool_->resize(max_workers); }
bool Executor::warm_up(Duration timeout) {
  // Saturating: one too long for the clock waits as long as it takes; NaN std::invalid_argument.
  return pool_->warm_up(detail::deadline_after(timeout));
}
std::size_t Executor::max_workers() const { return pool_->max_workers(); }
const ExecutorOptions& Executor::options() const { return pool_->options(); }
std::vector<int> Executor::worker_pids() const { return pool_->worker_pids(); }
bool Executor::is_shutdown() const { return pool_->is_shutdown(); }
bool Executor::is_broken() const { return pool_->broken() != nullptr; }
ExecutorStats Executor::stats() const { return pool_->stats(); }

}  // namespace ferry
