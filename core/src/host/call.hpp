// SPDX-License-Identifier: BSD-3-Clause
// What the host pool moves around: task references, calls, and the completions that end them.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <ferry/detail/state.hpp>
#include <ferry/serialization.hpp>

#include "platform/fd.hpp"
#include "wire/protocol.hpp"

namespace ferry::detail {

/// A task reference as sent to workers (one Define frame per worker, then its number).
struct RefEntry {
  protocol::Define define;
  Buffer frame;         // encoded define frame
  std::string display;  // task name for messages
  std::string version;  // identity of the library file when resolved; "" = not tracked
  std::uint64_t generation = 0;  // counts the versions of this library seen by the pool
  std::shared_ptr<const TaskInfo> info;  // identity fields of Future::info(), shared by its states
};

struct Lane;

/// One submission (a single call, or a map chunk of `items` calls).
struct Call {
  std::uint64_t id = 0;
  std::shared_ptr<StateBase> state;
  std::shared_ptr<const RefEntry> ref;
  Buffer args;
  Fd peer_args;  // what a worker gets of args in shared memory: read-only (read_only_for_peer)
  std::uint64_t peer_bytes = 0;  // the size of that block, which a sandboxed task may map whole
  std::uint32_t items = 1;
  std::uint8_t flags = 0;  // task frame flags (JSON)
  std::size_t first_input = no_input;  // a map chunk's first input: its errors name their input
  unsigned retries = 0;
  unsigned handed_back = 0;  // times a bye came while it ran (Pool::handle_bye, max_handed_back)
  Clock::duration deadline{0};  // 0 = none
  protocol::TaskLimits limits;  // the executor's, with the submission's non-zero fields over them
  Clock::time_point started{};  // when it became the running call of its worker
  std::int64_t submitted_ns = 0;  // system_clock at submit (Future::info())
  Clock::time_point queued_at{};  // steady clock at submit, taken only when tracing
  Lane* lane = nullptr;         // the worker pipeline it was sent to, while in flight
  /// Its state was completed before the call left its lane: a kill-cancel ends the future at
  /// once (cancelled(), ready()), and the worker's death, settled later, completes nothing more.
  bool completed = false;
};

/// A completed state and what completes it; run with no lock held (completions run callbacks).
struct Completion {
  std::shared_ptr<StateBase> state;
  Buffer payload;
  std::size_t offset = 0;
  std::exception_ptr error;
  RunRecord run;  // how the call ran, when it reached a worker (Future::info())
};
using Completions = std::vector<Completion>;

}  // namespace ferry::detail
