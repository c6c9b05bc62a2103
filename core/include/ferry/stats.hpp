// SPDX-License-Identifier: BSD-3-Clause
// ferry::ExecutorStats: what an executor's pool has done since it started (Executor::stats()).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace ferry {

/**
@brief Counters of one executor's pool since it started (Executor::stats()), and what it holds now.

A *call* is one unit the pool sends to a worker: one `submit` (or `submit_json`, whatever its number
of lines), or one chunk of a map (`map` of 1000 inputs with chunksize 100 is 10 calls; with
chunksize 1, 1000). A call that its worker's death sends again (`max_retries_on_worker_death`)
is still one call. A submission whose arguments could not be encoded is counted too: submitted,
and failed at once (its `SerializationError` in `failed_by_type`), though no worker saw it.

Every submitted call is in exactly one of four places: `queued`, `running`, `completed`, `failed`.
The fields are read one after another, not as one atomic snapshot: while calls complete, a call
may for a moment be counted in none of the last three (`submitted` is then larger than their sum
with `queued`); a call counts as completed or failed before its future is ready.

Workers: every worker process the pool started is either alive or ended in one of three ways:
`workers_started = workers_alive + workers_crashed + workers_recycled + workers_stopped`.
@code
ferry::ExecutorStats s = ex.stats();
std::printf("%zu done, %zu failed, %zu waiting\n", s.completed, s.failed, s.queued);
@endcode
*/
struct ExecutorStats {
  /// Calls handed to the pool (see above: one per submit, one per map chunk), including those it
  /// failed at once (an unknown task).
  std::size_t submitted = 0;
  /// Calls waiting to run: in the pool's queue (those waiting for a worker to start or to run
  /// its initializer included), or sent to a worker behind the call it runs.
  std::size_t queued = 0;
  /// Calls running now: the call each busy worker is running (Future::running() is true).
  std::size_t running = 0;
  /// Calls whose future got a value.
  std::size_t completed = 0;
  /// Calls whose future got an error, cancelled ones included (CancelledError).
  std::size_t failed = 0;
  /// `failed` by the error's type, without the namespace: "TaskError", "TerminatedWorkerError",
  /// "CancelledError", "TimeoutError", "ResourceLimitError", "PluginError", ...
  std::map<std::string, std::size_t> failed_by_type;

  /// Worker processes started and not yet ended (starting ones included). A worker being
  /// killed and its replacement both count until the first is reaped: for a moment one more
  /// than max_workers.
  std::size_t workers_alive = 0;
  /// Worker processes started, replacements included.
  std::size_t workers_started = 0;
  /// Workers that died without saying goodbye: a signal, an unexpected exit, killed by the host
  /// (a deadline, `cancel({.kill_running = true})`, `shutdown({.kill_workers = true})`, a
  /// malformed frame), a lost MPI rank, or a death before their handshake.
  std::size_t workers_crashed = 0;
  /// Of `workers_crashed`, those ferry killed because it was asked to: a call past its deadline
  /// (TimeoutError), `cancel({.kill_running = true})`, `shutdown({.kill_workers = true})`.
  /// `workers_crashed - workers_killed` are the workers that ended on their own or broke the
  /// protocol.
  std::size_t workers_killed = 0;
  /// Workers that ended so that a fresh one could replace them, or because they were idle.
  std::size_t workers_recycled = 0;
  /// `workers_recycled` by reason: "idle" (ExecutorOptions::idle_timeout), "memory"
  /// (max_memory_growth), "tasks" (max_tasks_per_child), "descriptors" (a task left descriptors
  /// open), "process_limit" (a task's process was refused at Limits::processes), "limit" (a task
  /// went past its Limits: ResourceLimitError), "sandbox" (SandboxViolationError).
  std::map<std::string, std::size_t> recycled_by_reason;
  /// Workers told to exit: at shutdown, by resize(), to load a changed plugin, in a sandbox once
  /// given more than 4 GiB of argument blocks (which its tasks could keep mapped), or once they
  /// used their last call's Limits::cpu_time while idle (a thread the call left running).
  std::size_t workers_stopped = 0;

  /// Bytes of every frame written to the workers (tasks, task references, initializers,
  /// limits, shutdown), a payload sent through shared memory (a memfd) included.
  std::uint64_t bytes_sent = 0;
  /// Bytes of every frame read from the workers (results, failures, handshakes), a payload
  /// received through shared memory included.
  std::uint64_t bytes_received = 0;

  /// Time since the executor was made.
  std::chrono::duration<double> uptime{0};
};

}  // namespace ferry
