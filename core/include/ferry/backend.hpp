// SPDX-License-Identifier: BSD-3-Clause
// Where an executor's workers run: the launcher interface. The local backend (the default)
// spawns ferry-worker on this machine; ferry::mpi implements it on the ranks of an MPI job. A
// pool treats every backend the same way: it gets a socket speaking ferry's frames and a handle
// to watch, end and reap the process behind it.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry {

struct ExecutorOptions;

/// How a worker process ended.
struct WorkerExit {
  bool known = false;   ///< false when the status could not be collected (e.g. SIGCHLD ignored)
  int signal = 0;       ///< terminating signal, 0 if it exited
  int exit_code = -1;   ///< exit code, -1 if signalled
  std::string detail;   ///< where and why, for a worker on another node ("rank 2 on node7 ...")
};

/// One worker process started by a Launcher.
class LaunchedWorker {
 public:
  virtual ~LaunchedWorker() = default;
  /// Its process id when known at launch; 0 when only its hello tells it (a remote worker).
  virtual int pid() const = 0;
  /// A descriptor that becomes readable once the worker has ended (a pidfd for a local one);
  /// owned by this object.
  virtual int exit_fd() const = 0;
  /// Ends it now (SIGKILL for a local worker).
  virtual void kill() = 0;
  /// How it ended; called once exit_fd() is readable.
  virtual WorkerExit status() = 0;
  /// The MPI rank (or a place of another backend) it runs on, -1 when there is none (a local
  /// worker); asked once the worker's hello has arrived. Names its track in a trace
  /// (ExecutorOptions::trace): "rank R @ HOST (pid PID)".
  virtual int rank() const { return -1; }
  /// A thread waiting for this worker's frames spins on its channel and calls this before each
  /// look: a backend that relays the channel through a thread of its own (ferry::mpi's hub) may
  /// move frames now, in the caller's thread, instead of handing them to that thread and back
  /// (each hand-off between threads costs a wake-up or a turn of the scheduler). Must not block;
  /// may do nothing (the default).
  virtual void relay() {}
  /// What the pool calls instead of relay(): the same, and frames for the pool that it relays now
  /// may be appended to `frames` instead of being written on the channel (whole frames, none
  /// carrying a descriptor, and only when the pool has read every byte written on the channel
  /// before them: the pool reads them before it reads the channel again), saving a write and a
  /// read. The default calls relay() and hands over nothing.
  virtual void relay_and_hand_over(std::string& frames) {
    (void)frames;
    relay();
  }
  /// Frames for the worker (`pieces` joined), offered before the pool writes them on the channel
  /// when the worker has at most one call in flight (a lone call, whose latency matters and which
  /// nothing could be batched with; or frames of no call, such as shutdown), none carrying a
  /// descriptor: a relaying backend may take them in the caller's thread, after everything
  /// written on the channel before. They may begin in the middle of a frame whose start was
  /// written on the channel: a backend that takes them must check. True when taken (the pool then
  /// does not write them). Called with the pool's lock held: must not wait for another thread or
  /// process, and must not call back into the pool. The default takes nothing.
  virtual bool send(std::span<const std::string_view> pieces) {
    (void)pieces;
    return false;
  }
  /// The waiting thread stops spinning and is about to block on the channel: what relay() did,
  /// the backend's own thread must do again. Does nothing by default.
  virtual void relay_stopped() {}
};

/// Starts worker processes for one executor.
class Launcher {
 public:
  virtual ~Launcher() = default;
  struct Launched {
    int channel = -1;  ///< the pool's end of the worker's stream socket; the pool owns it
    std::shared_ptr<LaunchedWorker> worker;
  };
  /// A new worker: `ferry-worker --fd N <args>`, where N is the worker's end of the channel in
  /// the worker process (the local backend also passes `--parent <host pid>`, so that a worker
  /// exits with its host), with the environment of the executor's options (given to the
  /// factory). nullopt and `why` when none can be started now.
  virtual std::optional<Launched> launch(const std::vector<std::string>& args, std::string& why) = 0;
  /// Most workers it can run now (SIZE_MAX: no limit); may shrink (remote ranks die).
  virtual std::size_t capacity() const = 0;
  /// Of capacity(), how many workers this launcher's executor can have now: fewer when it shares
  /// its places with other executors that hold some (an MPI job's ranks running another
  /// executor's workers). The pool starts no more than that, and counts itself full at that many.
  /// capacity() by default.
  virtual std::size_t available() const { return capacity(); }
  /// What it runs, for messages: "ferry-worker /usr/bin/ferry-worker".
  virtual std::string program() const = 0;
  /// The BrokenProcessPool that fails waiting calls when no worker can be started.
  virtual std::exception_ptr start_failure(const std::string& why) const = 0;
  /// How many short calls (under 200 µs each) one of its workers holds at once, 1 to 64: enough
  /// that its next call is already there when one ends, however long a result takes to reach the
  /// host and the next call to reach the worker. 8 suits a local socket; a backend whose frames
  /// cross relays (ferry::mpi: the hub, MPI, a node agent) needs more. FERRY_PIPELINE_DEPTH,
  /// when set, overrides it.
  virtual std::size_t short_call_depth() const { return 8; }
  /// The executor shut down (any way, each time it is asked to): its workers leave as their calls
  /// end. A backend whose places are shared with other executors (ferry::mpi: the ranks of a job)
  /// may have another executor's new worker wait for one of them rather than fail at once.
  virtual void shutting_down() {}
};

using LauncherFactory = std::function<std::shared_ptr<Launcher>(const ExecutorOptions&)>;

/// Makes backend `name` available to ExecutorOptions::backend ("local" is built in; ferry::mpi
/// registers "mpi"). Registering a name again replaces its factory.
FERRY_API void register_backend(const std::string& name, LauncherFactory factory);

}  // namespace ferry
