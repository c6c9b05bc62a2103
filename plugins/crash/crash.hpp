// SPDX-License-Identifier: BSD-3-Clause
// The crash plugin: faults at every stage of a task's round trip, for loky's crash matrix.
//
// `Faulty` misbehaves when it is encoded or decoded, at the stage it is told to: an argument
// carries its fault to the worker's decoding, a result carries it back to the host's decoding.
#pragma once

#include <csignal>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <ferry/task.hpp>

namespace crash {

enum class Action : int {
  none = 0,
  throw_error = 1,    // throws std::runtime_error
  segfault = 2,       // raises SIGSEGV
  exit_zero = 3,      // _exit(0)
  abort = 4,          // std::abort()
  throw_int = 5,      // `throw 0`: not a std::exception (loky: sys.exit() in a reducer)
};

/// worker_destroy: when an argument decoded in the worker is destroyed, after the task returned
/// (only for arguments: a result decoded in the host would fault the host).
enum class Stage : int {
  host_encode = 0, worker_decode = 1, worker_encode = 2, host_decode = 3, worker_destroy = 4
};

/// Runs `action` (never in the host unless it is a throw: the tests run in the host).
inline void act(Action action, const char* where) {
  switch (action) {
    case Action::none: return;
    case Action::throw_error: throw std::runtime_error(std::string("Faulty: failing on purpose while ") + where);
    case Action::segfault: std::raise(SIGSEGV); return;
    case Action::exit_zero: ::_exit(0);
    case Action::abort: std::abort();
    case Action::throw_int: throw 0;
  }
}

/// A value whose encoding or decoding fails at `stage` with `action`.
struct Faulty {
  Stage stage = Stage::host_encode;
  Action action = Action::none;
  int value = 0;

  template <class Archive>
  void save(Archive& ar) const {
    if (stage == Stage::host_encode || stage == Stage::worker_encode) act(action, "encoding");
    ar(static_cast<int>(stage), static_cast<int>(action), value);
  }
  template <class Archive>
  void load(Archive& ar) {
    int s = 0, a = 0;
    ar(s, a, value);
    stage = static_cast<Stage>(s);
    action = static_cast<Action>(a);
    decoded = true;
    if (stage == Stage::worker_decode || stage == Stage::host_decode) act(action, "decoding");
  }

  Faulty() = default;
  Faulty(Stage s, Action a, int v) : stage(s), action(a), value(v) {}
  // A copy was not decoded: only the decoded object itself faults when destroyed (the task's
  // by-value parameter is a copy, destroyed before the result is sent).
  Faulty(const Faulty& o) : stage(o.stage), action(o.action), value(o.value) {}
  Faulty& operator=(const Faulty& o) {
    stage = o.stage;
    action = o.action;
    value = o.value;
    return *this;
  }
  ~Faulty() {
    // A destructor must not throw: only the faults that end the process apply here.
    if (decoded && stage == Stage::worker_destroy && action != Action::throw_error &&
        action != Action::throw_int)
      act(action, "destroying");
  }

  bool decoded = false;  // made by decoding (so, for an argument, in the worker)
};

}  // namespace crash

/// Returns its argument's value (the fault, if any, fires while decoding the argument).
FERRY_EXPORT int take_faulty(crash::Faulty f);
/// Returns a Faulty that fails when encoded (worker_encode) or decoded (host_decode).
FERRY_EXPORT crash::Faulty make_faulty(int stage, int action);
FERRY_EXPORT int throw_runtime_error(int x);
/// `throw 42`: not a std::exception.
FERRY_EXPORT int throw_int(int x);
FERRY_EXPORT int segfault(int x);
/// Segfaults when x == bad, else returns x (a map whose one input kills its worker).
FERRY_EXPORT int segfault_if(int x, int bad);
FERRY_EXPORT int abort_task(int x);
/// exit(code): runs atexit handlers, unlike _exit.
FERRY_EXPORT int exit_with(int code);
FERRY_EXPORT int underscore_exit_zero(int x);
FERRY_EXPORT int stack_overflow(int depth);
/// Allocates and touches `megabytes` MiB that are never freed.
FERRY_EXPORT int leak(int megabytes);
/// Spins forever (for deadlines, cancel and kill_workers).
FERRY_EXPORT int spin_forever(int x);
/// Keeps this thread busy until it has used `ms` milliseconds of CPU time, then returns `ms`.
FERRY_EXPORT int busy_for(int ms);
/// ms < 0: throws std::runtime_error at once; else busy_for(ms) (a map with one quick failure
/// and long inputs beside it).
FERRY_EXPORT int fail_or_busy(int ms);
/// x < 0: throws std::runtime_error at once. Else waits (60 s at most) while a file exists at
/// `path`, then returns x (a map whose inputs the test holds and releases).
FERRY_EXPORT int value_after_hold(int x, const std::string& path);
/// Sends `sig` to process `pid` (a sibling worker), then returns.
FERRY_EXPORT int kill_pid(int pid, int sig);
/// Kills every pid of the list (in order), then returns the number killed.
FERRY_EXPORT int kill_pids(const std::vector<int>& pids, int sig);
/// The value of environment variable `name` in the worker ("" when unset).
FERRY_EXPORT std::string getenv_task(const std::string& name);
/// Writes bytes that are not a valid frame to the worker's own channel (fd 3): 0 = junk, 1 = a
/// header announcing 2^40 bytes, 2 = a header of an unknown frame type. The host must kill it.
FERRY_EXPORT int corrupt_channel(int kind);
/// Appends "<id>\n" to the file at `path` (O_APPEND): shows how many times a task ran.
FERRY_EXPORT int record_run(const std::string& path, int id);
/// record_run, then a segfault: counts the attempts of a task that always crashes.
FERRY_EXPORT int record_then_segfault(const std::string& path, int id);
/// id < 0: returns -id at once. Else waits until DIR/go exists (60 s at most), appends id to
/// DIR/ran, and throws std::runtime_error("gated ID").
FERRY_EXPORT int gated_throw(int id, const std::string& dir);
/// Opens /dev/null `count` times (-1: until the process runs out of descriptors) and never closes
/// them; returns how many it opened.
FERRY_EXPORT int leak_descriptors(int count);
/// Opens and closes one descriptor: fails (std::system_error) when the process has none left.
FERRY_EXPORT int open_one_descriptor(int x);
/// Forks a child that dies of SIGSEGV (the worker's crash handler runs in it too), waits for it,
/// and returns x: the worker and its channel must not notice.
FERRY_EXPORT int crash_in_child(int x);
/// Forks `n` children that each leave the worker's session (setsid) and spin; returns their pids.
/// With `wait`, the task then waits for them, using no CPU of its own. A safety net: each child
/// ends after `seconds` of wall time (SIGALRM), so a missing cpu_time limit leaks them that long.
FERRY_EXPORT std::vector<int> spin_in_children(int n, int seconds, bool wait);
/// Raises this process's scheduling priority, then puts it back: `how` 0 makes it SCHED_FIFO
/// (priority 1), 1 lowers its nice value by one. Returns errno, 0 when it went through.
FERRY_EXPORT int raise_own_priority(int how);
/// Opens up to `n` inotify instances and keeps them open for the worker's life; returns how many
/// it opened (it stops at the first refusal).
FERRY_EXPORT int hold_inotify_instances(int n);
/// Sets up a Linux AIO context of `events` events (io_setup) and keeps it for the worker's life;
/// returns errno, 0 when it was made.
FERRY_EXPORT int hold_aio_events(long events);
/// Creates up to `n` POSIX timers (each holds one of its user's pending signals) and keeps them
/// for the worker's life; returns how many it made (it stops at the first refusal).
FERRY_EXPORT int hold_timers(int n);
/// Starts `/bin/sh`, which sends itself SIGINT and otherwise exits with 7: returns the signal
/// that ended it, or 100 + its exit status (107: SIGINT was ignored in it).
FERRY_EXPORT int interrupt_in_child();
/// An initializer: sets a process-wide flag that `initialized` reports.
FERRY_EXPORT void init_flag();
FERRY_EXPORT int initialized();
/// An initializer that always throws.
FERRY_EXPORT void init_throws();
/// An initializer that waits (60 s at most) while a file exists at `path`: a test holds the
/// workers started after it made the file.
FERRY_EXPORT void wait_while_exists(const std::string& path);

// ---- remote stacks (TaskError / TerminatedWorkerError::remote_stack) ----------------------------
/// Throws std::invalid_argument from ferry_test_named_thrower, a function of its own (never inlined).
FERRY_EXPORT int throw_in_named_function(int x);
/// As throw_in_named_function, through a function that is always inlined into it.
FERRY_EXPORT int throw_in_inlined_function(int x);
/// Writes through the address `address` (0: a null pointer) in ferry_test_named_segfault.
FERRY_EXPORT int segfault_in_named_function(long long address);
/// Throws and catches a std::runtime_error `n` times; returns the nanoseconds per throw.
FERRY_EXPORT long long throw_and_catch(int n);
/// Throws std::runtime_error, catches it, then throws std::out_of_range from a vector's at():
/// the stack is the last throw's (inside libstdc++), not the caught one's.
FERRY_EXPORT int throw_after_caught(int x);
