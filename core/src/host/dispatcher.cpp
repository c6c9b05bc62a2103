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
  // Lowering processes closes the worker's pids.max descriptor, but an earlier call on it could
  // have kept a copy (dup, or a child that inherited it) to write "max" for a later one: only a
  // worker no call ran on yet is lowered so.
  if (limits.processes != have.processes && lane.used) return false;
  return fits_under(limits.processes, have.processes);
}

bool Dispatcher::lowers(const Lane& lane, const protocol::TaskLimits& limits) const noexcept {
  if (!hardening_) return false;
  const protocol::TaskLimits& have = lane.lowered ? *lane.lowered : executor_;
  return limits.memory != have.memory || limits.open_files != have.open_files ||
         limits.file_size != have.file_size || limits.processes != have.processes;
}

void Dispatcher::assign(std::span<Lane* const> open, std::vector<Send>& sends, std::vector<Lane*>& stale,
                        Clock::time_point now, bool pipeline) {
  sends.clear();
  const std::size_t limit = pipeline ? depth() : 1;
  while (!queue_.empty()) {
    const Call& next = *queue_.front();
    Lane* best = nullptr;
    for (Lane* lane : open) {
      if (std::find(stale.begin(), stale.end(), lane) != stale.end()) continue;
      if (!can_run(*lane, next)) {
        stale.push_back(lane);
        continue;
      }
      if (lane->in_flight.size() >= limit || lane->calls_left == 0 || !fits(*lane, next.limits)) continue;
      // The least loaded; among those, one that keeps its limits (a worker lowered for this
      // call cannot take a later call with higher ones).
      if (!best || lane->in_flight.size() < best->in_flight.size() ||
          (lane->in_flight.size() == best->in_flight.size() && hardening_ && lowers(*best, next.limits) &&
           !lowers(*lane, next.limits)))
        best = lane;
    }
    if (best && hardening_ && pipeline && !best->idle()) {
      // Every lane that fits is busy, and one that does not fit idles: the call would wait
      // behind a busy one (for good behind a call that hangs) where an unsandboxed pool runs it
      // at once. That idle lane is retired; the pool, short of its size, then holds the call for
      // the first free lane, a fresh worker or the busy one.
      const auto idle_unfit = std::find_if(open.begin(), open.end(), [&](Lane* lane) {
        return lane->idle() && !lane->initializing && lane->calls_left != 0 && !fits(*lane, next.limits) &&
               std::find(stale.begin(), stale.end(), lane) == stale.end();
      });
      if (idle_unfit != open.end()) {
        (*idle_unfit)->limits_too_low = true;
        stale.push_back(*idle_unfit);
        break;
      }
    }
    if (!best) {
      // No lane with room fits its limits. Lanes it never will fit are retired, and fresh
      // workers take the call: every one when no lane fits it; else, when calls are long, the
      // idle ones (it would wait for a busy lane that fits while they idle). With short calls
      // the call waits: a sandboxed worker's start (~4 ms here) costs more than the wait, and a
      // lowered worker still serves calls of its limits (bench/own_limits.cpp: 2 workers,
      // alternating limits submitted at once, retiring idle lanes at once started 33 workers
      // for 200 calls). Not while the pool is short of its size (`pipeline` false): a worker on
      // its way, at the executor's limits, fits every call.
      if (hardening_ && pipeline) {
        auto usable = [&](const Lane* lane) { return std::find(stale.begin(), stale.end(), lane) == stale.end(); };
        const bool some_fits =
            std::any_of(open.begin(), open.end(), [&](Lane* lane) { return usable(lane) && fits(*lane, next.limits); });
        for (Lane* lane : open)
          if (usable(lane) && !fits(*lane, next.limits) && (!some_fits || (lane->idle() && depth() == 1))) {
            lane->limits_too_low = true;
            stale.push_back(lane);
          }
      }
      break;
    }
    auto call = std::move(queue_.front());
    queue_.pop_front();
    const RefEntry& ref = *call->ref;
    if (!ref.version.empty()) {
      auto& generation = best->libraries[ref.define.library];
      generation = std::max(generation, ref.generation);
    }
    std::uint32_t id = ref.define.ref;
    if (best->announced.size() <= id) best->announced.resize(id + 1, false);
    bool define = !best->announced[id];
    best->announced[id] = true;
    const bool running = best->in_flight.empty() && !best->initializing;
    call->lane = best;
    // From this call on its worker holds the call's limits as hard limits (what fits a lane
    // is decided here, at send time: calls are pipelined behind others).
    if (hardening_ && lowers(*best, call->limits)) best->lowered = call->limits;
    best->used = true;
    if (best->calls_left != UINT64_MAX) --best->calls_left;
    recount(*best, [&] { best->in_flight.push_back(call); });
    if (running) start_front(*best, now);
    sends.push_back(Send{best, std::move(call), define, running});
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
