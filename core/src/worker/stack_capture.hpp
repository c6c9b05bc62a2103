// SPDX-License-Identifier: BSD-3-Clause
// The worker's side of remote stacks: where the task's exception was thrown (recorded at each
// throw by ferry-worker's __cxa_throw, workers/throw_hook.cpp) and where the worker took a fatal
// signal (a handler that sends a crashed frame, async-signal-safely, then dies of the signal).
// Both send raw addresses and the module map (wire/stack.hpp); the host symbolizes them.
#pragma once

#include <string_view>
#include <typeinfo>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

class Ring;
// Declared only: ferry-worker's __cxa_throw (workers/throw_hook.cpp) includes this header, and
// <memory>, which platform/symbolize.hpp needs, declares __cxa_throw otherwise than it does.
struct RawStack;  // platform/symbolize.hpp

/// Records the stack of a throw in this thread (the last one wins): its type, and the return
/// addresses from `thrower` (the throwing function's call of __cxa_throw) outwards. Called by
/// ferry-worker's __cxa_throw for every exception thrown in the worker, caught or not: it costs
/// one unwind of the stack per throw (a few microseconds), nothing when nothing is thrown.
FERRY_INTERNAL_API void note_throw(const std::type_info* type, const void* thrower) noexcept;

/// Before a task: the throws recorded so far are not the task's.
void forget_throws() noexcept;

/// After a task that failed with an exception of demangled type `type`: the stack of this thread's
/// last throw, if it threw that type (else empty: thrown in another thread and carried over by an
/// exception_ptr, say, or in a process without the __cxa_throw hook).
RawStack last_throw_stack(std::string_view type);

/// Once, in ferry-worker: on SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or SIGTRAP, a handler (on an
/// alternate stack, so that a stack overflow is reported too) writes a crashed frame to
/// `channel_fd` (or into `ring`, the worker's shared-memory ring to its MPI agent, ringing the
/// agent's doorbell on `channel_fd`) and the process then dies of the signal as it would have
/// without it.
void install_crash_reporter(int channel_fd, Ring* ring = nullptr) noexcept;

}  // namespace ferry::detail
