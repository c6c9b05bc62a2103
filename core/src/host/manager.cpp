// SPDX-License-Identifier: BSD-3-Clause
// The manager thread: the slow paths. Starts and restarts workers, reads channels nobody waits
// on, flushes outboxes, reaps dead workers and decides what their calls get, enforces deadlines,
// retires and stops workers. (Mirrors loky's _ExecutorManagerThread, without breaking the pool.)
//
//  submitting thread                 worker channel (socketpair)            ferry-worker
//  ─────────────────                 ───────────────────────────            ────────────
//  submit() ─ resolve TaskRef ─┐
//           encode args        ├─ mu_: Dispatcher → dispatch_locked() ─ outbox ─▶ read frame
//                              │       (idle worker? write now,                resolve (cached)
//                              │        from this very thread)                 invoke, encode
//  get() ─ spin, then read ◀───┼──────────────────── result frame ◀─────────── write result
//          this worker's       │  (ChannelLease: whoever holds it reads
//          channel itself      │   the channel; completions run unlocked)
//                              │
//  Manager thread (Poller) ────┘  reads channels nobody waits on, flushes outboxes (EPOLLOUT),
//                                 starts workers through the Launcher (PR_SET_PDEATHSIG needs
//                                 a long-lived thread), reaps, deadlines, retires, stops.
//
// The hot path (submit → worker → result → get) involves no hand-off to this thread; the
// invariants are listed at the top of pool.hpp.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include <ferry/ferry.hpp>

#include "host/pool.hpp"
#include "platform/format.hpp"
#include "platform/signals.hpp"
#include "platform/spawn.hpp"

namespace ferry::detail {

namespace {
constexpr auto shutdown_grace = std::chrono::seconds(5);
constexpr unsigned max_startup_failures = 3;
constexpr auto hello_timeout = std::chrono::seconds(10);
constexpr auto cpu_sample_period = std::chrono::milliseconds(100);
/// How long one pass of the manager's loop starts workers before it reads their channels again.
constexpr auto start_pass_budget = std::chrono::milliseconds(50);
/// How long the pool waits to start a worker again after a start failed while others run (the
/// host out of descriptors or processes), unless a worker ends first.
constexpr auto start_retry_delay = std::chrono::seconds(1);

std::string describe_exit(const ExitStatus& st) {
  if (!st.detail.empty()) return st.detail;
  if (!st.known) return "an unknown status (reaped elsewhere)";
  if (st.signal) return "signal " + signal_name(st.signal);
  std::string s = "exit code " + std::to_string(st.exit_code);
  if (const char* name = protocol::worker_exit_name(st.exit_code); name && st.exit_code != 0)
    s += std::string(" (") + name + ")";
  return s;
}

/// Why a worker that did not say bye is gone, for the error that fails the queue when no place
/// is left (Manager::last_loss_): the backend's own words when it gave them (they name the
/// rank), else the program, its pid and how it ended.
std::string lost_worker_reason(const WorkerSlot& w, const ExitStatus& st, const Launcher& launcher) {
  if (!st.detail.empty()) return st.detail;
  return w.describe(launcher) + (w.violation.empty() ? " ended with " + describe_exit(st) : " " + w.violation);
}

/// When the library of a call whose worker crashed is the same file (device and inode) as when
/// the call's task was resolved but with another size, modification or change time: it was rewritten in
/// place (`cp` over it) while the worker had it mapped, which then read the new bytes, or past
/// the file's new end (SIGBUS). Said with the crash; "" otherwise (a plugin replaced by a rename
/// is another file: workers keep the old one, and are retired).
std::string overwritten_plugin_note(const RefEntry& ref) {
  if (ref.version.empty()) return {};
  const std::string now = PluginIndex::file_version(ref.define.library);
  auto file_of = [](const std::string& version) {  // "dev:ino:size:mtime": "dev:ino:"
    const std::size_t dev = version.find(':');
    const std::size_t ino = dev == std::string::npos ? dev : version.find(':', dev + 1);
    return ino == std::string::npos ? std::string() : version.substr(0, ino + 1);
  };
  if (now.empty() || now == ref.version || file_of(now).empty() || file_of(now) != file_of(ref.version))
    return {};
  // "...:size:mtime:ctime": with the size and modification time kept, only the change time moved,
  // which a chmod, chown or new hard link does as well as a write that kept both.
  auto without_ctime = [](const std::string& version) { return version.substr(0, version.rfind(':')); };
  const bool attributes_only = without_ctime(now) == without_ctime(ref.version);
  if (attributes_only)
    return "; its plugin " + ref.define.library +
           " was rewritten in place while loaded, or only its attributes changed (same size and "
           "modification time, another change time: a chmod, chown or new hard link does that too); if "
           "it was rewritten, install a new version as a new file: install(1), or copy then mv";
  return "; its plugin " + ref.define.library +
         " was rewritten in place while loaded (install a new version as a new file: install(1), or "
         "copy then mv; cp over it breaks the workers that have it mapped)";
}

}  // namespace

namespace {
long read_counter(const std::string& file, const std::string& name) {
  std::ifstream in(file);
  std::string key;
  long value;
  while (in >> key >> value)
    if (key == name) return value;
  return -1;
}
}  // namespace

OomCounts OomCounts::read() {
  OomCounts c;
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line) && c.cgroup < 0) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    std::string path = line.substr(b + 1);
    if (controllers == ",,") {  // cgroup v2, unified or hybrid mount
      for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
        c.cgroup = read_counter(root + path + "/memory.events", "oom_kill");
        if (c.cgroup >= 0) break;
      }
    } else if (controllers.find(",memory,") != std::string::npos) {  // cgroup v1
      c.cgroup = read_counter("/sys/fs/cgroup/memory" + path + "/memory.oom_control", "oom_kill");
    }
  }
  c.system = read_counter("/proc/vmstat", "oom_kill");
  return c;
}

bool OomCounts::grew_since(const OomCounts& before) const {
  return (cgroup >= 0 && before.cgroup >= 0 && cgroup > before.cgroup) ||
         (system >= 0 && before.system >= 0 && system > before.system);
}

Manager::~Manager() {
  if (!thread_.joinable()) return;
  // The thread holds the pool: when its loop drops the last reference, the pool (and this) is
  // destroyed on that very thread, which cannot join itself.
  if (std::this_thread::get_id() == thread_.get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

void Manager::start(std::shared_ptr<Pool> pool) {
  thread_ = std::thread([this, pool = std::move(pool)]() mutable {
    ::pthread_setname_np(::pthread_self(), "ferry-manager");  // as ps -L, top -H and gdb show it
    const bool exit_waits = run();
    pool.reset();  // may destroy the pool, and this, here (see ~Manager)
    if (exit_waits) Pool::exit_waits_for_one_less();
  });
}

void Manager::join() {
  std::lock_guard lock(join_mu_);
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

Manager::SlotPtr Manager::worker_by_serial(std::uint64_t serial) {
  std::lock_guard lock(p_.mu_);
  auto it = p_.workers_.find(serial);
  return it == p_.workers_.end() ? nullptr : it->second;
}

// ---- the loop: events, then maintenance ----------------------------------------------------------

bool Manager::run() {
  id_ = std::this_thread::get_id();
  p_.managed_on_this_thread();
  // A wait in a callback here may be for a call only this thread sends or reads (wait_helping).
  StateBase::this_thread().runs_executor = true;
  bool exit_waits = false;
  Poller::Event events[64];
  for (;;) {
    int n = p_.poller_.wait(events, 64, next_timeout_ms());
    for (int i = 0; i < n; ++i) {
      auto w = worker_by_serial(events[i].serial);
      if (!w) continue;
      switch (events[i].tag) {
        case Poller::Tag::read: on_readable(w); break;
        case Poller::Tag::write: on_writable(w); break;
        case Poller::Tag::exit: on_exit(w); break;
        case Poller::Tag::memory: on_memory_ceiling(w); break;
        case Poller::Tag::wake: break;  // consumed by the poller
      }
    }
    Completions done;
    maintain(done);
    p_.complete(done);
    std::lock_guard lock(p_.mu_);
    if (p_.finished_) {
      exit_waits = p_.exit_waits_;
      break;
    }
  }
  // Every call has ended and every worker was reaped: the trace's last line is final.
  if (p_.trace_) p_.trace_->close(p_.stats());
  reap_orphaned_helpers();  // those of the last workers that ended by now
  debug_log("manager: finished");
  return exit_waits;
}

void Manager::on_readable(const SlotPtr& w) {
  auto lease = ChannelLease::after_event(*w, p_.poller_);
  if (!lease) return;  // a waiting thread reads it, and re-arms it when done
  Completions done;
  p_.read_available(*w, done);
  lease.release();
  p_.complete(done);
}

void Manager::on_writable(const SlotPtr& w) {
  std::lock_guard lock(p_.mu_);
  w->write_armed = false;
  p_.flush_locked(*w);
}

void Manager::on_memory_ceiling(const SlotPtr& w) {
  // What the worker wrote before its cgroup filled is read first (its tasks are stopped at the
  // ceiling and write nothing more): a call it answered is not the one blamed, the next is.
  // Unless a waiting thread reads the channel: it takes what is there.
  if (auto lease = ChannelLease::after_event(*w, p_.poller_)) {
    Completions done;
    p_.read_available(*w, done);
    lease.release();
    p_.complete(done);
  }
  std::lock_guard lock(p_.mu_);
  if (!w->memory.event || !w->memory.reached() || !w->alive()) return;
  // Its task (or what the task started) stopped at the sandbox's ceiling: the worker cannot go
  // on, whether a call runs or not (a process a task left behind may be what filled it).
  if (!w->greeted || w->lane.initializing) {
    // Its initializer filled it: a start failure (settle_dead_worker_locked), as a crash there
    // is, not the first call's error; a pool whose every worker does so gives up.
    p_.fail_start_locked(*w, std::string("filled its memory cgroup (the sandbox's ceiling) ") +
                                 (w->greeted ? "while its initializer ran" : "before its handshake"));
    return;
  }
  const Call* c = w->lane.running();
  const std::uint64_t ceiling = p_.options_.limits.memory;
  p_.kill_worker_locked(*w, c ? memory_ceiling_error(c->ref->display, w->pid, ceiling, "") : nullptr);
}

void Manager::on_exit(const SlotPtr& w) {
  Completions done;
  {
    // Results written before the death are still in the socket: deliver them first.
    auto lease = ChannelLease::after_death(*w, p_.poller_);
    // Everything it wrote is in the socket now: read until the socket is empty (EAGAIN) or
    // closed, once. The rest of a frame it was writing never comes, and waiting for it spun
    // forever when a process it forked still held the channel (no EOF, only EAGAIN). Bounded
    // too: such a process may keep writing. The partial frame goes with the slot.
    bool drained = false;
    for (int reads = 0; reads < 64 && !drained && p_.read_available(*w, done, &drained); ++reads) {
    }
  }
  p_.complete(done);
  ExitStatus st = w->process->status();
  OomCounts ooms = OomCounts::read();
  {
    std::lock_guard lock(p_.mu_);
    w->advance(WorkerSlot::Phase::dead);
    start_again_at_ = {};  // its descriptors are free: a worker may start now
    for (int fd : {w->sock.get(), w->sock_out.get(), w->exit_fd.get(), w->memory.event.get()})
      p_.poller_.remove(fd);
    debug_log("worker %d exited: %s%s", w->pid, describe_exit(st).c_str(), w->bye ? " (announced)" : "");
    if (!w->bye) last_loss_ = lost_worker_reason(*w, st, *p_.launcher_);
    std::exception_ptr given = settle_dead_worker_locked(*w, st, ooms, done);
    count_end_locked(*w, st, given);
    oom_seen_ = ooms;
    w->outbox.clear();
    p_.workers_.erase(w->serial);
    p_.dispatch_locked();
    p_.changed_.notify_all();
    p_.poller_.wake();
  }
  p_.complete(done);
  // A host that is PID 1 (a container's program) or a subreaper inherits the helpers that ended
  // with earlier workers: one zombie per worker started, until a pids limit stopped the pool.
  // Those of this worker, which end after it, at the next worker's end or the pool's.
  reap_orphaned_helpers();
}

std::string Manager::containment_reason(const ExitStatus& st) const {
  if (!st.known || st.signal != 0 || st.exit_code != static_cast<int>(protocol::WorkerExit::containment)) return "";
  // The one reason the host can see for itself: the sandbox's private directory is not the one
  // it made (another at its name: every worker refuses it). Else the worker said why on stderr.
  if (p_.sandbox_tmp_)
    if (const std::string why = p_.sandbox_tmp_->changed(); !why.empty())
      return ": the sandbox's private directory " + why + " is not the one ferry made";
  return " (ferry-worker said why on its stderr)";
}

std::exception_ptr Manager::settle_dead_worker_locked(WorkerSlot& w, const ExitStatus& st, const OomCounts& ooms,
                                                      Completions& done) {
  // Ended while its initializer ran (a crash, an _exit, the kernel's OOM killer, or ferry killed
  // it for what its initializer did: a full memory cgroup, the sandbox, a frame out of protocol,
  // a closed channel), even during a shutdown: no call of ours ran on it. A failure of every
  // worker's start, not of the first call it was given; and an idle pool respawned such workers
  // without end (hundreds a second). Unless ferry killed it for its first call (cancelled, or
  // bytes out of order that may be a task's, after a success not read yet): that call's error.
  const bool in_initializer = w.greeted && w.lane.initializing;
  // (Before its hello during a shutdown only if ferry did not kill it: shutdown(kill_workers).)
  // And whatever ferry gave up as a start failure (fail_start_locked: its hello or initializer
  // timed out, a malformed frame or the sandbox before its hello), during a shutdown too.
  if (((!w.greeted && (!p_.shutdown_ || !w.kill_sent)) || in_initializer || w.failed_start) && !w.bye &&
      !w.kill_error) {
    // Died before saying hello: nothing of ours ran on it. Retry elsewhere; give up after a few.
    p_.dispatcher_.requeue(w.lane);
    ++p_.startup_failures_;
    latest_failed_batch_ = std::max(latest_failed_batch_, w.start_batch);
    // The next start waits 50 ms, then twice as long after each failure in a row (5 s at most):
    // replacements started at once failed together while one worker was still on its way (a
    // process limit the first worker fitted in), and the pool gave up before it said hello.
    const unsigned n = std::min(++p_.start_failures_in_a_row_, 8u);
    start_again_at_ = std::max(start_again_at_, Clock::now() + std::min<Clock::duration>(
                                                                 std::chrono::milliseconds(50) * (1u << (n - 1)),
                                                                 std::chrono::seconds(5)));
    // A program that exits on its own before its hello may not be a ferry-worker at all
    // (/bin/true), or another version (a bad command line); a ferry-worker's own reason (it cannot
    // set up its containment), or a signal, is more likely the machine's.
    const bool program_at_fault =
        !in_initializer && st.known && st.signal == 0 &&
        (st.exit_code == static_cast<int>(protocol::WorkerExit::clean) ||
         st.exit_code == static_cast<int>(protocol::WorkerExit::usage) || !protocol::worker_exit_name(st.exit_code));
    p_.last_spawn_error_ =
        w.describe(*p_.launcher_) +
        (w.violation.empty() ? " ended with " + describe_exit(st) +
                                   (in_initializer ? " while its initializer ran" : " before its handshake") +
                                   (program_at_fault ? p_.worker_path_advice() : containment_reason(st))
                             : " " + w.violation);
    return nullptr;
  }
  if (w.bye || w.lane.idle()) {
    p_.dispatcher_.requeue(w.lane);
    return nullptr;
  }
  Call& running = *w.lane.in_flight.front();
  std::exception_ptr error = w.kill_error;
  // A limit or the sandbox explains the death: the task would hit it again, no retry.
  if (!error)
    error = containment_death(st.signal, running.limits, p_.options_.sandbox.enabled,
                              running.ref->display, w.pid);
  // Only where a memory ceiling can be: elsewhere 71 is a task's own exit (EX_OSERR).
  if (!error && st.exit_code == static_cast<int>(protocol::WorkerExit::memory_ceiling) && p_.memory_ceiling())
    error = memory_ceiling_error(running.ref->display, w.pid, p_.options_.limits.memory,
                                 "its reply could not be written");
  if (!error && running.retries < p_.options_.max_retries_on_worker_death) {
    // Sent again: its one slice in a trace will be the attempt that ends it.
    ++running.retries;
    p_.dispatcher_.requeue(w.lane);
    return nullptr;
  }
  if (!error) {
    bool oom = st.signal == SIGKILL && ooms.grew_since(oom_seen_);
    // The stack its crash handler sent, if it died of that very signal. When the status is not
    // known (the program reaped the worker itself: SIGCHLD ignored, a waitpid(-1) handler), the
    // signal its crash handler reported, with its stack.
    const int signal = st.known ? st.signal : w.crash_signal;
    auto stack = signal != 0 && signal == w.crash_signal ? w.crash_stack : nullptr;
    std::string how = "worker " + std::to_string(w.pid) + " ended with " + describe_exit(st);
    if (!st.known && w.crash_signal)
      how += ", after its crash handler reported signal " + std::to_string(w.crash_signal) + " (" +
             signal_name(w.crash_signal) + ")";
    if (signal == SIGBUS || signal == SIGSEGV || signal == SIGILL) how += overwritten_plugin_note(*running.ref);
    error = std::make_exception_ptr(TerminatedWorkerError(running.ref->display, w.pid, signal, st.exit_code, oom,
                                                          w.violation.empty() ? how : "killed by ferry: " + w.violation,
                                                          std::move(stack)));
  }
  // The rest never started: back to the front of the queue.
  p_.dispatcher_.requeue(w.lane, 1);
  auto call = p_.dispatcher_.take_running(w.lane);
  if (call->completed) {
    p_.forget_ended_locked(*call);  // a kill-cancel ended its future already
  } else {
    p_.finish_locked(call, done, error).run = p_.run_record(*call, w, {});
  }
  if (p_.trace_) p_.trace_ran_locked(*call, w, nullptr, 0, error, Clock::now());
  return error;
}

namespace {
/// Why a worker that did not say bye ended, as the trace says it.
std::string crash_reason(const WorkerSlot& w, const ExitStatus& st) {
  if (!st.detail.empty()) return st.detail;  // a backend's words: "MPI rank 2 on node7 ..."
  if (w.kill_sent && (st.signal == SIGKILL || !st.known)) return "killed by the host";
  if (!st.known) return "an unknown status (reaped elsewhere)";
  if (st.signal) return "signal " + std::to_string(st.signal) + " (" + signal_name(st.signal) + ")";
  std::string s = "exit status " + std::to_string(st.exit_code);
  if (const char* name = protocol::worker_exit_name(st.exit_code); name && st.exit_code != 0)
    s += std::string(" (") + name + ")";
  return s;
}

/// The recycle reason of a bye (ExecutorStats::recycled_by_reason), or nullptr for a stop.
const char* recycle_reason(protocol::ByeReason bye) {
  switch (bye) {
    case protocol::ByeReason::idle_timeout: return "idle";
    case protocol::ByeReason::memory_growth: return "memory";
    case protocol::ByeReason::max_tasks: return "tasks";
    case protocol::ByeReason::descriptor_growth: return "descriptors";
    case protocol::ByeReason::process_limit: return "process_limit";
    case protocol::ByeReason::shutdown: return nullptr;
  }
  return nullptr;
}

/// The recycle reason of a worker ferry ended on purpose, its task past a limit or outside the
/// sandbox (`given`: what its call got), or nullptr.
const char* contained_reason(const std::exception_ptr& given) {
  if (!given) return nullptr;
  try {
    std::rethrow_exception(given);
  } catch (const ResourceLimitError&) {
    return "limit";
  } catch (const SandboxViolationError&) {
    return "sandbox";
  } catch (...) {
  }
  return nullptr;
}
}  // namespace

void Manager::count_end_locked(WorkerSlot& w, const ExitStatus& st, const std::exception_ptr& given) {
  auto& counts = p_.counts_;
  // Recycled (to be replaced, or idle), stopped (told to exit), or crashed.
  const char* recycled = nullptr;
  const char* stopped = nullptr;
  if (w.bye) {
    recycled = recycle_reason(*w.bye);
    // It said its idle time was up, and exited when told to (or recycled itself after a call
    // that crossed that bye, for that reason).
    if (!recycled && w.said_idle) recycled = "idle";
    if (!recycled) stopped = WorkerSlot::stop_reason(w.retired_for);
  } else {
    recycled = contained_reason(given);
  }
  if (recycled) {
    ++counts.workers_recycled;
    ++counts.recycled_by_reason[recycled];
  } else if (stopped) {
    ++counts.workers_stopped;
  } else {
    ++counts.workers_crashed;
    if (w.killed_as_asked) ++counts.workers_killed;
  }
  if (!p_.trace_) return;
  const std::int64_t ts = p_.trace_->now();
  Trace::Batch t(*p_.trace_);
  if (!w.greeted) t.name_track(w.serial, w.pid, w.process->rank());  // no hello named it
  if (recycled || stopped) {
    t.worker_exit(w.serial, recycled ? recycled : stopped, ts);
  } else {
    t.worker_crash(w.serial, crash_reason(w, st), given ? Trace::describe(given).type : std::string(), ts);
  }
  p_.trace_counters_locked(t, ts);
}

namespace {
/// The CPU time limit the worker is held to now, in seconds (0: none): its running call's, or
/// while it idles in service, its last call's (Manager::enforce_cpu_time_locked).
std::uint64_t cpu_limit_now(const WorkerSlot& w) {
  if (const Call* c = w.lane.running()) return c->limits.cpu_seconds;
  return w.phase < WorkerSlot::Phase::retiring ? w.idle_cpu_limit : 0;
}
}  // namespace

namespace {
/// Its initializer runs and may yet overrun its time: nothing else has ended it.
bool initializer_may_overrun(const WorkerSlot& w) {
  return w.lane.initializing && w.greeted && w.alive() && !w.kill_sent && !w.failed_start;
}
}  // namespace

int Manager::next_timeout_ms() {
  std::lock_guard lock(p_.mu_);
  auto now = Clock::now();
  auto next = Clock::time_point::max();
  p_.cpu_ticking_ = false;
  for (const auto& [_, w] : p_.workers_) {
    next = std::min({next, w->kill_at, w->lane.deadline()});
    // A running call with a CPU time limit, or an idle worker whose last call had one: its
    // worker's CPU time is sampled every 100 ms.
    if (cpu_limit_now(*w) && w->alive() && w->pid > 0) {
      next = std::min(next, std::max(now, w->cpu_sample_at));
      p_.cpu_ticking_ = true;
    }
    if (w->awaiting_hello()) next = std::min(next, w->spawned + hello_timeout);
    if (initializer_may_overrun(*w)) next = std::min(next, w->initializer_due);
  }
  if (start_again_at_ > now) next = std::min(next, start_again_at_);
  if (starting_more_) next = now;  // the rest of a start, after the events that came meanwhile
  if (next == Clock::time_point::max()) return -1;
  if (next <= now) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next - now).count());
}

// ---- maintain(): the phases ----------------------------------------------------------------------

void Manager::maintain(Completions& done) {
  std::size_t to_start = 0;
  {
    std::lock_guard lock(p_.mu_);
    auto now = Clock::now();
    enforce_timers_locked(now);
    stop_retired_locked(now);
    check_startup_locked(now, done);
    to_start = workers_to_start_locked();
    if (p_.finished_locked()) {
      p_.finished_ = true;
      p_.changed_.notify_all();
      return;
    }
  }
  start_workers(to_start, done);
}

/// Kills what is overdue: workers past their kill time, running calls past their deadline, and
/// workers that did not say hello in time.
void Manager::enforce_timers_locked(Clock::time_point now) {
  for (auto& [_, w] : p_.workers_) {
    if (!w->alive()) continue;
    if (now >= w->kill_at) {
      p_.signal_kill_locked(*w);
      w->kill_at = Clock::time_point::max();
    }
    enforce_cpu_time_locked(*w, now);
    if (!w->kill_error && now >= w->lane.deadline()) {
      const Call& c = *w->lane.running();
      w->killed_as_asked = true;
      p_.kill_worker_locked(*w, std::make_exception_ptr(TimeoutError(
                                 "task '" + c.ref->display + "' exceeded its deadline of " +
                                 detail::format_duration(c.deadline) + ": worker " +
                                 std::to_string(w->pid) + " was killed")));
    }
    if (initializer_may_overrun(*w) && now >= w->initializer_due) {
      p_.fail_start_locked(*w, "did not finish its initializer within " +
                                   detail::format_duration(detail::clock_duration(p_.options_.initializer_timeout)));
      continue;
    }
    if (w->awaiting_hello() && now >= w->spawned + hello_timeout) {
      // A start failure whatever it sends now: a hello read after the kill (its death drains the
      // channel) made it a worker that had run the calls handed to it, which were blamed on it
      // (TerminatedWorkerError) instead of going back to the queue.
      p_.fail_start_locked(*w, "did not complete its handshake within " + detail::format_duration(hello_timeout) +
                                   p_.worker_path_advice());
    }
  }
}

/// Limits::cpu_time, measured by the host from /proc (a task cannot raise or hide it, as it
/// could an rlimit of its own process): the worker's CPU ticks since its running call was first
/// seen running, sampled once per cpu_sample_period. A call is measured from its first sample, so
/// it may use up to one period more than its limit before the check, and up to one more before
/// the kill; short calls come and go between samples without a read of /proc each.
///
/// Between calls, the worker is held to the limit of the last call it ran: a task that returned
/// at once and left a thread spinning used a CPU without bound while its worker idled (found by a
/// review). Past it, the worker is retired (Retired::idle_cpu; no call is blamed) and replaced at
/// once. A thread left running while the next call runs counts against that call.
void Manager::enforce_cpu_time_locked(WorkerSlot& w, Clock::time_point now) {
  const Call* c = w.lane.running();
  const std::uint64_t limit = cpu_limit_now(w);
  if (!limit || w.kill_error || w.pid <= 0) return;
  if (now < w.cpu_sample_at) return;
  w.cpu_sample_at = now + cpu_sample_period;
  std::uint64_t ticks = cpu_ticks(w.pid);
  if (ticks == UINT64_MAX) return;  // gone: its exit is reported
  if (const std::uint64_t measured = c ? c->id : WorkerSlot::cpu_idle; w.cpu_call != measured) {
    w.cpu_call = measured;
    w.cpu_base = ticks;
    return;
  }
  // A limit past what the tick count can hold (centuries) is no limit: the product would wrap.
  if (limit > UINT64_MAX / ticks_per_second()) return;
  if (ticks - w.cpu_base <= limit * ticks_per_second()) return;
  if (!c) {
    debug_log("worker %d used %llu s of CPU time while idle, past its last call's cpu_time: retired", w.pid,
              static_cast<unsigned long long>((ticks - w.cpu_base) / ticks_per_second()));
    w.retire(WorkerSlot::Retired::idle_cpu);
    return;
  }
  p_.kill_worker_locked(w, std::make_exception_ptr(ResourceLimitError(
                               c->ref->display, w.pid, "cpu_time", c->limits.cpu_seconds,
                               "it used " + std::to_string((ticks - w.cpu_base) / ticks_per_second()) +
                                   " s of CPU time")));
}

/// Retires idle workers once the pool is shut down and nothing is queued, and tells retired idle
/// workers to exit (killed if they are still there after the grace period).
void Manager::stop_retired_locked(Clock::time_point now) {
  if (p_.shutdown_ && p_.dispatcher_.queue_empty()) {
    for (auto& [_, w] : p_.workers_)
      if (w->lane.idle()) w->retire(WorkerSlot::Retired::shutdown);
  }
  for (auto& [_, w] : p_.workers_) {
    if (!w->due_to_stop()) continue;
    p_.send_locked(*w, protocol::frame(protocol::FrameType::shutdown, Buffer()));
    w->advance(WorkerSlot::Phase::stopping);
    w->kill_at = std::min(w->kill_at, now + shutdown_grace);
    p_.flush_locked(*w);
  }
}

/// Gives up on starting workers after repeated failures, and fails what waits when no worker
/// can run it (workers cannot be started; every rank of a backend is gone).
void Manager::given_up_locked() {
  // The next submit starts afresh, at once: it waited out the backoff of the failures before
  // (seconds per submit to a pool whose workers cannot start).
  start_again_at_ = {};
  p_.start_failures_in_a_row_ = 0;
}

void Manager::check_startup_locked(Clock::time_point, Completions& done) {
  // Up: greeted, and with an initializer, past it (one still in it may yet fail as the others).
  bool any_up = std::any_of(p_.workers_.begin(), p_.workers_.end(), [&](const auto& kv) {
    return kv.second->greeted && kv.second->alive() && !kv.second->lane.initializing;
  });
  // A worker started with those that failed (or before them) and still on its way may yet start:
  // workers started together under a process limit that only the first fitted in failed at
  // once, and the pool gave up before that one said hello. One started after them (their
  // replacement) does not count: a respawn loop would never end.
  bool on_its_way = std::any_of(p_.workers_.begin(), p_.workers_.end(), [&](const auto& kv) {
    const WorkerSlot& w = *kv.second;
    return w.alive() && !w.kill_sent && w.holds_place() && w.start_batch <= latest_failed_batch_ &&
           (!w.greeted || w.lane.initializing);
  });
  if (p_.startup_failures_ >= max_startup_failures && (any_up || !on_its_way)) {
    if (!any_up) {
      p_.spawn_error_ = p_.launcher_->start_failure(p_.last_spawn_error_);
      p_.started_ = false;  // no retry until the next submit
      p_.changed_.notify_all();  // warm_up
      given_up_locked();
    }
    p_.startup_failures_ = 0;
  }
  if (p_.launcher_->capacity() == 0 && p_.holding_places_locked() == 0 && !p_.dispatcher_.queue_empty())
    p_.fail_queue_locked(p_.launcher_->start_failure("every remote rank of the job has died" +
                                                     (last_loss_.empty() ? std::string() : "; the last lost: " + last_loss_)),
                         done);
  // Once workers cannot be started, calls coming back from dying half-started workers fail too.
  if (p_.spawn_error_ && !any_up) p_.fail_queue_locked(p_.spawn_error_, done);
  // A broken pool starts no worker: calls that come back to the queue after it broke (from a
  // worker that died or was recycled with calls in its pipeline) fail as the queue did then.
  if (p_.broken_) p_.fail_queue_locked(p_.broken_, done);
}

std::size_t Manager::workers_to_start_locked() const {
  // A worker that said its idle time was up runs the calls that crossed that bye itself: they
  // need no replacement (one started for them idled, and at the next call there were two).
  bool busy = !p_.dispatcher_.queue_empty() ||
              std::any_of(p_.workers_.begin(), p_.workers_.end(),
                          [](const auto& kv) { return !kv.second->lane.idle() && !kv.second->said_idle; });
  // After shutdown, work already submitted still gets workers (shutdown(wait=false) completes),
  // as long as some of it waits for one: a worker told to stop while another ran its call was
  // replaced, and during a program's exit (an executor finishing in the background) the new one
  // died before its hello, was replaced again, and so on, a core busy until the call ended.
  if (p_.broken_ || p_.killed_ || !p_.started_ || (p_.shutdown_ && p_.dispatcher_.queue_empty())) return 0;
  if (Clock::now() < start_again_at_) return 0;  // a start failed while other workers run
  // Failures enough to give up, held back by a worker of their batch still on its way
  // (check_startup_locked): none is started meanwhile, so no replacement keeps that going.
  if (p_.startup_failures_ >= max_startup_failures) return 0;
  std::size_t desired = busy ? p_.max_workers_ : p_.max_workers_ - std::min(p_.idle_exited_, p_.max_workers_);
  // A backend that lost nodes, or whose places other executors hold, cannot run as many workers
  // as asked.
  desired = std::min(desired, p_.launcher_->available());
  std::size_t active = p_.holding_places_locked();
  return active < desired ? desired - active : 0;
}

/// Calls wait and no worker can take them yet: each start is followed by a read of what came
/// (a worker gets calls at its hello). A cold start spawned every worker before it read the first
/// one's hello: the first call waited for the last spawn (a pool of 2: 5.5 ms to the first result,
/// twice as long).
bool Manager::queue_waits_for_a_hello() const {
  std::lock_guard lock(p_.mu_);
  if (p_.dispatcher_.queue_empty()) return false;
  return std::none_of(p_.workers_.begin(), p_.workers_.end(), [](const auto& kv) { return kv.second->takes_calls(); });
}

void Manager::start_workers(std::size_t n, Completions& done) {
  if (n == 0) {
    starting_more_ = false;
    return;
  }
  if (!starting_more_) ++start_batch_;
  starting_more_ = false;
  // After a failure the others would fail the same way: they wait for start_again_at_. A pass
  // starts workers for at most start_pass_budget, then the loop reads what came meanwhile and
  // comes back: starting 3,000 workers took 21 s here, during which no hello was read, and the
  // hello timeout then killed every worker that had waited 10 s with its hello unread.
  const auto until = Clock::now() + start_pass_budget;
  for (std::size_t i = 0; i < n && start_one(done); ++i) {
    if (i + 1 < n && (Clock::now() >= until || queue_waits_for_a_hello())) {
      starting_more_ = true;
      break;
    }
  }
  // The new workers get calls at their hello (WorkerSlot::takes_calls); what the queue holds
  // meanwhile goes to the workers already up.
  std::lock_guard lock(p_.mu_);
  p_.dispatch_locked();
}

std::vector<std::string> Manager::worker_args() const {
  std::vector<std::string> args = {"--spin-us", std::to_string(p_.worker_spin_.count()),
                                   "--max-frame-bytes", std::to_string(p_.max_frame_)};
  auto contain = containment_args(p_.options_, p_.sandbox_, p_.sandbox_tmp_.get(),
                                  p_.sandbox_read_);
  args.insert(args.end(), contain.begin(), contain.end());
  // A sandboxed worker's output reaches the host's terminal through its relay: the host's locale
  // says whether that terminal takes UTF-8, whatever ExecutorOptions::env gives the task.
  if (p_.options_.sandbox.enabled) args.insert(args.end(), {"--terminal-utf8", utf8_locale() ? "1" : "0"});
  if (p_.options_.idle_timeout.count() > 0) {
    // Saturated (a plain cast of +infinity or of a thousand years is garbage, here 1 ms): an idle
    // time too long for the clock is no idle timeout at all.
    const Clock::duration idle = clock_duration(p_.options_.idle_timeout);
    if (idle != Clock::duration::max()) {
      auto ms = std::max<long long>(1, std::chrono::duration_cast<std::chrono::milliseconds>(idle).count());
      args.insert(args.end(), {"--idle-timeout-ms", std::to_string(ms)});
    }
  }
  if (p_.options_.max_memory_growth > 0)
    args.insert(args.end(), {"--max-memory-growth", std::to_string(p_.options_.max_memory_growth)});
  if (p_.options_.max_tasks_per_child > 0)
    args.insert(args.end(), {"--max-tasks", std::to_string(p_.options_.max_tasks_per_child)});
  return args;
}

bool Manager::start_one(Completions& done) {
  std::string why;
  auto launched = p_.launcher_->launch(worker_args(), why);
  Fd exit_fd, sock_out;
  if (launched) {
    // The poller's own descriptors for its end and its channel's writes: without them its death
    // or its writability would go unseen (a host at its RLIMIT_NOFILE).
    int error = 0;
    exit_fd = Fd(::fcntl(launched->worker->exit_fd(), F_DUPFD_CLOEXEC, 0));
    if (!exit_fd) error = errno;
    sock_out = Fd(::fcntl(launched->channel, F_DUPFD_CLOEXEC, 0));
    if (!sock_out && !error) error = errno;
    if (error) {
      why = std::string("the host has no descriptor left for a worker (") + std::strerror(error) +
            "): raise RLIMIT_NOFILE (ulimit -n) or lower max_workers";
      launched->worker->kill();
      (void)launched->worker->status();  // reaped: no zombie per attempt
      ::close(launched->channel);
      launched.reset();
    }
  }
  if (!launched) {
    // Nothing can run without a worker: fail what waits, unless another worker is alive. With
    // one, the pool runs on the workers it has (a host whose descriptor limit allows fewer than
    // max_workers: these failures counted as workers dying before their hello, and the pool
    // failed its queue while the workers it had started were on their way), and tries again
    // later, or when a worker ends and gives back its descriptors.
    std::lock_guard lock(p_.mu_);
    p_.last_spawn_error_ = why;
    last_loss_ = why;
    debug_log("starting a worker failed: %s", why.c_str());
    if (p_.holding_places_locked() == 0) {
      p_.spawn_error_ = p_.launcher_->start_failure(why);
      p_.fail_queue_locked(p_.spawn_error_, done);
      p_.started_ = false;
      p_.changed_.notify_all();  // warm_up
      given_up_locked();
    } else {
      start_again_at_ = std::max(start_again_at_, Clock::now() + start_retry_delay);
    }
    return false;
  }
  auto w = std::make_shared<WorkerSlot>();
  w->process = std::move(launched->worker);
  w->pid = w->process->pid();
  w->sock = Fd(launched->channel);
  ::fcntl(w->sock.get(), F_SETFL, ::fcntl(w->sock.get(), F_GETFL) | O_NONBLOCK);
  w->exit_fd = std::move(exit_fd);
  w->sock_out = std::move(sock_out);
  register_worker(w);
  return true;
}

void Manager::register_worker(const SlotPtr& w) {
  w->spawned = Clock::now();
  w->start_batch = start_batch_;
  std::lock_guard lock(p_.mu_);
  w->sent_limits = p_.limits_;  // given on its command line
  w->serial = p_.next_serial_++;  // also its track in a trace: 1, 2, ... in start order
  ++p_.counts_.workers_started;
  w->lane.serial = w->serial;
  if (p_.options_.max_tasks_per_child > 0) w->lane.calls_left = p_.options_.max_tasks_per_child;
  p_.poller_.add(w->sock.get(), w->serial, Poller::Tag::read);
  p_.poller_.add(w->sock_out.get(), w->serial, Poller::Tag::write, false);
  p_.poller_.add(w->exit_fd.get(), w->serial, Poller::Tag::exit);
  debug_log("spawned worker %d", w->pid);
  if (p_.initializer_) {
    w->lane.initializing = true;  // until it says its initializer ran
    std::uint32_t ref = p_.initializer_->define.ref;
    w->lane.announced.resize(ref + 1, false);
    w->lane.announced[ref] = true;
    p_.send_locked(*w, Buffer(p_.initializer_->frame));
    p_.send_locked(*w, Buffer(p_.initializer_frame_));
  }
  // The pool may have been resized while this worker was being started: a worker beyond the
  // size is retired at once instead of being counted.
  if (p_.holding_places_locked() >= p_.max_workers_) w->retire(WorkerSlot::Retired::resize);
  p_.workers_.emplace(w->serial, w);
  p_.flush_locked(*w);
  if (w->phase == WorkerSlot::Phase::retiring) p_.poller_.wake();
}

}  // namespace ferry::detail
