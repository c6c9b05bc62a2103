// SPDX-License-Identifier: BSD-3-Clause
#include "host/dispatcher.hpp"

#include <algorithm>

namespace ferry::detail {

namespace {
/// Future::running(): a call runs from when it is the front of its lane, past its worker's
/// initializer, until it leaves the lane.
void mark_running(Call& call, bool running) noexcept {
  if (call.state) call.state->set_running(running);
}

/// The lane's front call starts running now.
void start_front(Lane& lane, Clock::time_point now) noexcept {
  Call& front = *lane.in_flight.front();
  front.started = now;
  mark_running(front, true);
}
}  // namespace

template <class Change>
void Dispatcher::recount(const Lane& lane, Change&& change) {
  const bool before = lane.running() != nullptr;
  change();
  const bool after = lane.running() != nullptr;
  if (before != after) after ? ++busy_ : --busy_;
}

Clock::time_point Lane::deadline() const noexcept {
  const Call* c = running();
  if (!c || c->deadline.count() <= 0) return Clock::time_point::max();
  // Saturating: a deadline past the clock's end (SubmitOptions::deadline of centuries) is none.
  if (c->deadline >= Clock::time_point::max() - c->started) return Clock::time_point::max();
  return c->started + c->deadline;
}

void Dispatcher::submit(std::shared_ptr<Call> call) {
  calls_.emplace(call->id, call);
  queue_.push_back(std::move(call));
}

std::shared_ptr<Call> Dispatcher::find(std::uint64_t id) const {
  auto it = calls_.find(id);
  return it == calls_.end() ? nullptr : it->second;
}

std::size_t Dispatcher::depth() const noexcept {
  if (forced_depth_) return forced_depth_;
  if (service_ema_us_ < 200) return short_depth_;
  if (service_ema_us_ < 2000) return 2;
  return 1;
}

bool Dispatcher::can_run(const Lane& lane, const Call& call) {
  // A newer version runs older calls too (the old file is gone); an older one must not run new
  // calls: it is retired.
  const RefEntry& ref = *call.ref;
  if (ref.version.empty()) return true;
  auto it = lane.libraries.find(ref.define.library);
  return it == lane.libraries.end() || it->second >= ref.generation;
}

namespace {
/// A limit `want` holds exactly on a worker whose hard limit is `have` (0: none on either side).
bool fits_under(std::uint64_t want, std::uint64_t have) noexcept {
  return have == 0 || (want != 0 && want <= have);
}
}  // namespace

bool Dispatcher::fits(const Lane& lane, const protocol::TaskLimits& limits) const noexcept {
  if (!hardening_) return true;
  const protocol::TaskLimits& have = lane.lowered ? *lane.lowered : executor_;
  if (!fits_under(limits.memory, have.memory) || !fits_under(limits.open_files, have.open_files) ||
      !fits_under(limits.file_size, have.file_size))
    return false;
  // cpu_time is the host's measure, per call: any fits.
  if (have.processes != executor_.processes) return limits.processes == have.processes;
  // Only a worker no call ran on yet is lowered so: whatever an earlier call left running would
  // count against the lowered limit. (Its guardian writes pids.max, lower only: no copy of a
  // descriptor can raise it again.)
  if (limits.processes != have.processes && lane.used) return false;
  return fits_under(limits.processes, have.processes);
}

bool Dispatcher::lowers(const Lane& lane, const protocol::TaskLimits& limits) const noexcept {
  if (!hardening_) return false;
  const protocol::TaskLimits& have = lane.lowered ? *lane.lowered : executor_;
  return limits.memory != have.memory || limits.open_files != have.open_files ||
         limits.file_size != have.file_size || limits.processes != have.processes;
}

bool Dispatcher::better(const Lane& lane, const Lane& than, const protocol::TaskLimits& limits) const noexcept {
  // An idle lane first: the call runs at once rather than behind another. Then, in a sandbox, one
  // that keeps its limits (a worker lowered for this call cannot take a later call with higher
  // ones: a busy lane at the executor's limits is not lowered while another that fits the call
  // without lowering has room; an idle one is, rather than have the call wait). Then the least
  // loaded.
  if (lane.idle() != than.idle()) return lane.idle();
  if (hardening_) {
    const bool lowers_lane = lowers(lane, limits), lowers_than = lowers(than, limits);
    if (lowers_lane != lowers_than) return !lowers_lane;
  }
  return lane.in_flight.size() < than.in_flight.size();
}

Lane* Dispatcher::idle_unfit(std::span<Lane* const> open, const std::vector<Lane*>& stale,
                             const protocol::TaskLimits& limits) const noexcept {
  // The lane retired is one the calls right behind have no use for, when there is one: retiring
  // the first in order could take the only lane lowered to what they ask, and the next of them
  // then waited for a fresh worker too.
  Lane* first = nullptr;
  for (Lane* lane : open) {
    if (!lane->idle() || lane->initializing || lane->calls_left == 0 || fits(*lane, limits) ||
        std::find(stale.begin(), stale.end(), lane) != stale.end())
      continue;
    if (!fits_behind(*lane)) return lane;
    if (!first) first = lane;
  }
  return first;
}

bool Dispatcher::fits_behind(const Lane& lane) const noexcept {
  if (queue_.empty()) return false;
  std::size_t looked = 0;
  for (auto it = std::next(queue_.begin()); it != queue_.end() && looked < behind_window; ++it, ++looked)
    if (fits(lane, (*it)->limits)) return true;
  return false;
}

Lane* Dispatcher::choose(std::span<Lane* const> open, std::vector<Lane*>& stale, const Call& call,
                         std::size_t limit, const Call* reserved_for) const {
  Lane* best = nullptr;
  for (Lane* lane : open) {
    if (std::find(stale.begin(), stale.end(), lane) != stale.end()) continue;
    if (!can_run(*lane, call)) {
      // The queue's front: the lane is listed (retired). A call behind it just does not go there.
      if (!reserved_for) stale.push_back(lane);
      continue;
    }
    if (reserved_for && fits(*lane, reserved_for->limits)) continue;
    if (lane->in_flight.size() >= limit || lane->calls_left == 0 || !fits(*lane, call.limits)) continue;
    if (!best || better(*lane, *best, call.limits)) best = lane;
  }
  return best;
}

void Dispatcher::give(Lane& lane, std::shared_ptr<Call> call, std::vector<Send>& sends, Clock::time_point now) {
  const RefEntry& ref = *call->ref;
  if (!ref.version.empty()) {
    auto& generation = lane.libraries[ref.define.library];
    generation = std::max(generation, ref.generation);
  }
  std::uint32_t id = ref.define.ref;
  if (lane.announced.size() <= id) lane.announced.resize(id + 1, false);
  bool define = !lane.announced[id];
  lane.announced[id] = true;
  const bool running = lane.in_flight.empty() && !lane.initializing;
  call->lane = &lane;
  // From this call on its worker holds the call's limits as hard limits (what fits a lane is
  // decided here, at send time: calls are pipelined behind others).
  if (hardening_ && lowers(lane, call->limits)) lane.lowered = call->limits;
  lane.used = true;
  if (lane.calls_left != UINT64_MAX) --lane.calls_left;
  recount(lane, [&] { lane.in_flight.push_back(call); });
  if (running) start_front(lane, now);
  sends.push_back(Send{&lane, std::move(call), define, running});
}

void Dispatcher::serve_behind(std::span<Lane* const> open, std::vector<Send>& sends, std::vector<Lane*>& stale,
                              Clock::time_point now, std::size_t limit) {
  const Call& front = *queue_.front();
  std::size_t looked = 0;
  for (auto it = std::next(queue_.begin()); it != queue_.end() && looked < behind_window; ++looked) {
    Lane* lane = choose(open, stale, **it, limit, &front);
    if (!lane) {
      ++it;
      continue;
    }
    auto call = std::move(*it);
    it = queue_.erase(it);
    give(*lane, std::move(call), sends, now);
  }
}

void Dispatcher::assign(std::span<Lane* const> open, std::vector<Send>& sends, std::vector<Lane*>& stale,
                        Clock::time_point now, bool pipeline) {
  sends.clear();
  const std::size_t limit = pipeline ? depth() : 1;
  while (!queue_.empty()) {
    const Call& next = *queue_.front();
    Lane* best = choose(open, stale, next, limit);
    if (hardening_ && (!best || !best->idle())) {
      // In a sandbox, the call at the front waits: in the queue, or behind a busy lane's calls.
      bool fits_some = false, unfit_some = false;
      for (const Lane* lane : open) {
        if (std::find(stale.begin(), stale.end(), lane) != stale.end()) continue;
        if (fits(*lane, next.limits))
          fits_some = true;
        else
          unfit_some = true;
      }
      if (!fits_some) {
        // While the pool is short of its size (`pipeline` false) a fresh worker is on its way:
        // it fits every call, and the lanes serve the calls behind meanwhile.
        if (!pipeline) {
          if (unfit_some) serve_behind(open, sends, stale, now, limit);
          break;
        }
        // Else no lane will ever fit it (each was lowered below its limits): one is retired, and
        // a fresh worker, at the executor's limits, takes it; the pool, short of its size until
        // then, retires nothing more. An idle one, stopped at once. When none idles the call
        // waits for the first that does (each answer comes back here), and no call behind it is
        // sent meanwhile, so that one will: a lane retired busy leaves after
        // its calls, and behind one that hangs the pool would stay short for good, nothing more
        // retired and nothing started, while the other lanes idle. Retiring every lane the call
        // did not fit restarted the whole pool for one call with the executor's limits after a
        // burst of calls with their own had lowered every lane.
        if (Lane* idle = idle_unfit(open, stale, next.limits)) {
          idle->limits_too_low = true;
          stale.push_back(idle);
        }
        break;
      }
      if (unfit_some) {
        // A lane that does not fit it serves the calls behind it that fit, rather than idle:
        // the call waits only for lanes it fits (a fresh worker on its way, a busy lane) and
        // takes the first of them that frees up, before any call behind it.
        serve_behind(open, sends, stale, now, limit);
        // A lane it does not fit that still idles (no call near the front fits it either) is
        // retired, one per call, and the pool, short of its size until its replacement is up,
        // holds the call for the first free lane that fits, the fresh worker or a busy one. Not
        // waiting behind the busy lane, which could be for good behind a call that hangs (where
        // an unsandboxed pool runs it at once on the idle worker). Retiring an idle lane
        // whenever a call waited, rather than give it the calls behind (bench/own_limits.cpp:
        // 2 workers, alternating limits submitted at once), started 24-34 workers for 200 calls.
        if (pipeline) {
          if (Lane* idle = idle_unfit(open, stale, next.limits)) {
            idle->limits_too_low = true;
            stale.push_back(idle);
            break;
          }
        }
      }
    }
    if (!best) break;
    auto call = std::move(queue_.front());
    queue_.pop_front();
    give(*best, std::move(call), sends, now);
  }
}

std::shared_ptr<Call> Dispatcher::answered(Lane& lane, std::uint64_t id, Clock::time_point now) {
  // Only the running call: a worker answers in send order (one call at a time; a call behind
  // the running one is never cancelled in the worker, only the running one, by killing it). A
  // result for a call behind it was taken, and restarted the running call's deadline.
  if (lane.in_flight.empty() || lane.in_flight.front()->id != id) return nullptr;
  std::shared_ptr<Call> call;
  recount(lane, [&] {
    call = std::move(lane.in_flight.front());
    lane.in_flight.pop_front();
  });
  call->lane = nullptr;
  // Service time: from when the call started running, or from the previous answer when it
  // was pipelined behind it (it then started the moment that one ended).
  auto began = std::max(call->started, lane.last_result);
  double us = std::chrono::duration<double, std::micro>(now - began).count();
  service_ema_us_ = 0.8 * service_ema_us_ + 0.2 * us;
  lane.last_result = now;
  if (!lane.in_flight.empty()) start_front(lane, now);
  return call;
}

void Dispatcher::initialized(Lane& lane, Clock::time_point now) {
  if (!lane.initializing) return;
  recount(lane, [&] { lane.initializing = false; });
  // Its last answer is now: the service time of the first call counts from here.
  lane.last_result = now;
  if (!lane.in_flight.empty()) start_front(lane, now);
}

void Dispatcher::requeue(Lane& lane, std::size_t from) {
  const std::size_t keep = std::min(from, lane.in_flight.size());
  recount(lane, [&] {
    for (std::size_t i = lane.in_flight.size(); i > keep; --i) {
      lane.in_flight[i - 1]->lane = nullptr;
      mark_running(*lane.in_flight[i - 1], false);  // a dead worker's call, retried: queued again
      queue_.push_front(std::move(lane.in_flight[i - 1]));
    }
    lane.in_flight.resize(keep);
  });
}

std::shared_ptr<Call> Dispatcher::take_running(Lane& lane) {
  if (lane.in_flight.empty()) return nullptr;
  std::shared_ptr<Call> call;
  recount(lane, [&] {
    call = std::move(lane.in_flight.front());
    lane.in_flight.pop_front();
  });
  call->lane = nullptr;
  return call;
}

std::vector<std::shared_ptr<Call>> Dispatcher::take_all(Lane& lane) {
  std::vector<std::shared_ptr<Call>> out;
  recount(lane, [&] {
    out.assign(std::make_move_iterator(lane.in_flight.begin()), std::make_move_iterator(lane.in_flight.end()));
    lane.in_flight.clear();
  });
  for (auto& c : out) c->lane = nullptr;
  return out;
}

std::vector<std::shared_ptr<Call>> Dispatcher::take_queue() {
  std::vector<std::shared_ptr<Call>> out(std::make_move_iterator(queue_.begin()),
                                         std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

bool Dispatcher::unqueue(const std::shared_ptr<Call>& call) {
  auto it = std::find(queue_.begin(), queue_.end(), call);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

}  // namespace ferry::detail
