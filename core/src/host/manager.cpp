// SPDX-License-Identifier: BSD-3-Clause
// The manager thread: the slow paths. Spawns and respawns workers, reads channels nobody waits
// on, flushes outboxes, reaps dead workers and decides what their calls get, enforces deadlines,
// resizes and shuts down. (Mirrors loky's _ExecutorManagerThread, without breaking the pool.)
//
//  submitting thread                 worker channel (socketpair)            ferry-worker
//  ─────────────────                 ───────────────────────────            ────────────
//  submit() ─ resolve TaskRef ─┐
//           encode args        ├─ mu_: queue_ → dispatch_locked() ─ outbox ──▶ read frame
//                              │       (idle worker? write now,                resolve (cached)
//                              │        from this very thread)                 invoke, encode
//  get() ─ spin, then read ◀───┼──────────────────── result frame ◀─────────── write result
//          this worker's       │  (read_mu: whoever holds it reads the
//          channel itself      │   channel; completions run unlocked)
//                              │
//  manager thread (epoll) ─────┘  reads channels nobody waits on, flushes outboxes (EPOLLOUT),
//                                 spawns/respawns (PR_SET_PDEATHSIG needs a long-lived thread),
//                                 reaps via pidfd, deadlines, resize, shutdown.
//
// The hot path (submit → worker → result → get) involves no hand-off to this thread; the
// invariants are listed at the top of pool.hpp.
#include <fcntl.h>
#include <signal.h>

#include <algorithm>
#include <fstream>

#include <ferry/ferry.hpp>

#include "host/pool.hpp"
#include "platform/format.hpp"

namespace ferry::detail {

namespace {
constexpr auto shutdown_grace = std::chrono::seconds(5);
constexpr unsigned max_startup_failures = 3;
constexpr auto hello_timeout = std::chrono::seconds(10);

std::string describe_exit(const ExitStatus& st) {
  if (!st.detail.empty()) return st.detail;
  if (!st.known) return "an unknown status (reaped elsewhere)";
  if (st.signal) return "signal " + signal_name(st.signal);
  std::string s = "exit code " + std::to_string(st.exit_code);
  if (const char* name = protocol::worker_exit_name(st.exit_code); name && st.exit_code != 0)
    s += std::string(" (") + name + ")";
  return s;
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

void Pool::start() {
  auto self = shared_from_this();
  manager_ = std::thread([self] { self->manager_loop(); });
}

Pool::SlotPtr Pool::worker_by_serial(std::uint64_t serial) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(serial);
  return it == workers_.end() ? nullptr : it->second;
}

// ---- the loop: events, then maintenance ----------------------------------------------------------

void Pool::manager_loop() {
  manager_id_ = std::this_thread::get_id();
  Poller::Event events[64];
  for (;;) {
    int n = poller_.wait(events, 64, next_timeout_ms());
    for (int i = 0; i < n; ++i) {
      auto w = worker_by_serial(events[i].serial);
      if (!w) continue;
      switch (events[i].tag) {
        case Poller::Tag::read: on_readable(w); break;
        case Poller::Tag::write: on_writable(w); break;
        case Poller::Tag::exit: on_exit(w); break;
        case Poller::Tag::wake: break;  // consumed by the poller
      }
    }
    Completions done;
    maintain(done);
    complete(done);
    std::lock_guard lock(mu_);
    if (finished_) break;
  }
  debug_log("manager: finished");
}

void Pool::on_readable(const SlotPtr& w) {
  auto lease = ChannelLease::after_event(*w, poller_);
  if (!lease) return;  // a waiting thread reads it, and re-arms it when done
  Completions done;
  read_available(*w, done);
  lease.release();
  complete(done);
}

void Pool::on_writable(const SlotPtr& w) {
  std::lock_guard lock(mu_);
  w->write_armed = false;
  flush_locked(*w);
}

void Pool::on_exit(const SlotPtr& w) {
  Completions done;
  {
    // Results written before the death are still in the socket: deliver them first.
    auto lease = ChannelLease::after_death(*w, poller_);
    while (read_available(*w, done) && w->reader.partial()) {
    }
  }
  complete(done);
  ExitStatus st = w->process->status();
  OomCounts ooms = OomCounts::read();
  {
    std::lock_guard lock(mu_);
    w->advance(WorkerSlot::Phase::dead);
    for (int fd : {w->sock.get(), w->sock_out.get(), w->exit_fd.get()}) poller_.remove(fd);
    debug_log("worker %d exited: %s%s", w->pid, describe_exit(st).c_str(), w->bye ? " (announced)" : "");
    settle_dead_worker_locked(*w, st, ooms, done);
    oom_seen_ = ooms;
    w->outbox.clear();
    workers_.erase(w->serial);
    dispatch_locked();
    changed_.notify_all();
    poller_.wake();
  }
  complete(done);
}

void Pool::settle_dead_worker_locked(WorkerSlot& w, const ExitStatus& st, const OomCounts& ooms,
                                     Completions& done) {
  if (!w.greeted && !w.bye && !w.kill_error && !shutdown_) {
    // Died before saying hello: nothing of ours ran on it. Retry elsewhere; give up after a few.
    dispatcher_.requeue(w.lane);
    ++startup_failures_;
    last_spawn_error_ = w.describe(*launcher_) + " ended with " + describe_exit(st) + " before its handshake";
    return;
  }
  if (w.bye || w.lane.idle()) {
    dispatcher_.requeue(w.lane);
    return;
  }
  Call& running = *w.lane.in_flight.front();
  std::exception_ptr error = w.kill_error;
  if (!error && running.retries < options_.max_retries_on_worker_death) {
    ++running.retries;
    dispatcher_.requeue(w.lane);
    return;
  }
  if (!error) {
    bool oom = st.signal == SIGKILL && ooms.grew_since(oom_seen_);
    error = std::make_exception_ptr(TerminatedWorkerError(
        running.ref->display, w.pid, st.signal, st.exit_code, oom,
        "worker " + std::to_string(w.pid) + " ended with " + describe_exit(st)));
  }
  // The rest never started: back to the front of the queue.
  dispatcher_.requeue(w.lane, 1);
  finish_locked(dispatcher_.take_running(w.lane), done, error);
}

void Pool::kill_worker_locked(WorkerSlot& w, std::exception_ptr error_for_running_call) {
  if (!w.alive()) return;
  if (!w.kill_error) w.kill_error = std::move(error_for_running_call);
  w.retire();
  debug_log("killing worker %d", w.pid);
  signal_kill_locked(w);
}

void Pool::signal_kill_locked(WorkerSlot& w) {
  w.kill_sent = true;
  w.process->kill();
}

void Pool::fail_queue_locked(std::exception_ptr error, Completions& done) {
  for (auto& c : dispatcher_.take_queue()) finish_locked(c, done, error);
}

bool Pool::finished_locked() const {
  return shutdown_ && workers_.empty() && outstanding_ == 0;
}

int Pool::next_timeout_ms() {
  std::lock_guard lock(mu_);
  auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (const auto& [_, w] : workers_) {
    next = std::min({next, w->kill_at, w->lane.deadline()});
    if (w->awaiting_hello()) next = std::min(next, w->spawned + hello_timeout);
  }
  if (next == Clock::time_point::max()) return -1;
  if (next <= now) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next - now).count());
}

// ---- maintain(): the phases ----------------------------------------------------------------------

void Pool::maintain(Completions& done) {
  std::size_t to_start = 0;
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    enforce_timers_locked(now);
    stop_retired_locked(now);
    check_startup_locked(now, done);
    to_start = workers_to_start_locked();
    if (finished_locked()) {
      finished_ = true;
      changed_.notify_all();
      return;
    }
  }
  start_workers(to_start, done);
}

/// Kills what is overdue: workers past their kill time, running calls past their deadline, and
/// workers that did not say hello in time.
void Pool::enforce_timers_locked(Clock::time_point now) {
  for (auto& [_, w] : workers_) {
    if (!w->alive()) continue;
    if (now >= w->kill_at) {
      signal_kill_locked(*w);
      w->kill_at = Clock::time_point::max();
    }
    if (!w->kill_error && now >= w->lane.deadline()) {
      const Call& c = *w->lane.running();
      kill_worker_locked(*w, std::make_exception_ptr(TimeoutError(
                                 "task '" + c.ref->display + "' exceeded its deadline of " +
                                 detail::format_duration(c.deadline) + ": worker " +
                                 std::to_string(w->pid) + " was killed")));
    }
    if (w->awaiting_hello() && now >= w->spawned + hello_timeout) {
      last_spawn_error_ = w->describe(*launcher_) + " did not complete its handshake within " +
                          detail::format_duration(hello_timeout);
      signal_kill_locked(*w);
    }
  }
}

/// Retires idle workers once the pool is shut down and nothing is queued, and tells retired idle
/// workers to exit (killed if they are still there after the grace period).
void Pool::stop_retired_locked(Clock::time_point now) {
  if (shutdown_ && dispatcher_.queue_empty()) {
    for (auto& [_, w] : workers_)
      if (w->lane.idle()) w->retire();
  }
  for (auto& [_, w] : workers_) {
    if (!w->due_to_stop()) continue;
    w->outbox.push(protocol::frame(protocol::FrameType::shutdown, Buffer()));
    w->advance(WorkerSlot::Phase::stopping);
    w->kill_at = std::min(w->kill_at, now + shutdown_grace);
    flush_locked(*w);
  }
}

/// Gives up on starting workers after repeated failures, and fails what waits when no worker
/// can run it (workers cannot be started; every rank of a backend is gone).
void Pool::check_startup_locked(Clock::time_point, Completions& done) {
  bool any_up = std::any_of(workers_.begin(), workers_.end(),
                            [](const auto& kv) { return kv.second->greeted && kv.second->alive(); });
  if (startup_failures_ >= max_startup_failures) {
    if (!any_up) {
      spawn_error_ = launcher_->start_failure(last_spawn_error_);
      started_ = false;  // no retry until the next submit
    }
    startup_failures_ = 0;
  }
  if (launcher_->capacity() == 0 && holding_places_locked() == 0 && !dispatcher_.queue_empty())
    fail_queue_locked(launcher_->start_failure("every remote rank of the job has died"), done);
  // Once workers cannot be started, calls coming back from dying half-started workers fail too.
  if (spawn_error_ && !any_up) fail_queue_locked(spawn_error_, done);
}

std::size_t Pool::workers_to_start_locked() const {
  bool busy = !dispatcher_.queue_empty() ||
              std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) { return !kv.second->lane.idle(); });
  // After shutdown, work already submitted still gets workers (shutdown(wait=false) completes).
  if (broken_ || killed_ || !started_ || (shutdown_ && !busy)) return 0;
  std::size_t desired = busy ? max_workers_ : max_workers_ - std::min(idle_exited_, max_workers_);
  // A backend that lost nodes cannot run as many workers as asked.
  desired = std::min(desired, launcher_->capacity());
  std::size_t active = holding_places_locked();
  return active < desired ? desired - active : 0;
}

void Pool::start_workers(std::size_t n, Completions& done) {
  if (n == 0) return;
  for (std::size_t i = 0; i < n; ++i) start_one(done);
  // Tasks go out right away, before the workers' hello: start-up overlaps their transfer. All
  // new workers are registered first, so that the queue is spread over all of them.
  std::lock_guard lock(mu_);
  dispatch_locked();
}

std::vector<std::string> Pool::worker_args() const {
  std::vector<std::string> args = {"--spin-us", std::to_string(worker_spin_.count()),
                                   "--max-frame-bytes", std::to_string(max_frame_)};
  if (options_.idle_timeout.count() > 0) {
    auto ms = std::max<long long>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(options_.idle_timeout).count());
    args.insert(args.end(), {"--idle-timeout-ms", std::to_string(ms)});
  }
  if (options_.max_memory_growth > 0)
    args.insert(args.end(), {"--max-memory-growth", std::to_string(options_.max_memory_growth)});
  if (options_.max_tasks_per_child > 0)
    args.insert(args.end(), {"--max-tasks", std::to_string(options_.max_tasks_per_child)});
  return args;
}

void Pool::start_one(Completions& done) {
  std::string why;
  auto launched = launcher_->launch(worker_args(), why);
  if (!launched) {
    // Nothing can run without a worker: fail what waits, unless another worker is alive.
    std::lock_guard lock(mu_);
    last_spawn_error_ = why;
    debug_log("starting a worker failed: %s", why.c_str());
    if (holding_places_locked() == 0) {
      spawn_error_ = launcher_->start_failure(why);
      fail_queue_locked(spawn_error_, done);
      started_ = false;
    }
    return;
  }
  auto w = std::make_shared<WorkerSlot>();
  w->process = std::move(launched->worker);
  w->pid = w->process->pid();
  w->sock = Fd(launched->channel);
  ::fcntl(w->sock.get(), F_SETFL, ::fcntl(w->sock.get(), F_GETFL) | O_NONBLOCK);
  w->exit_fd = Fd(::fcntl(w->process->exit_fd(), F_DUPFD_CLOEXEC, 0));
  register_worker(w);
}

void Pool::register_worker(const SlotPtr& w) {
  w->sock_out = Fd(::fcntl(w->sock.get(), F_DUPFD_CLOEXEC, 0));
  w->spawned = Clock::now();
  std::lock_guard lock(mu_);
  w->serial = next_serial_++;
  w->lane.serial = w->serial;
  poller_.add(w->sock.get(), w->serial, Poller::Tag::read);
  poller_.add(w->sock_out.get(), w->serial, Poller::Tag::write, false);
  poller_.add(w->exit_fd.get(), w->serial, Poller::Tag::exit);
  debug_log("spawned worker %d", w->pid);
  if (initializer_) {
    std::uint32_t ref = initializer_->define.ref;
    w->lane.announced.resize(ref + 1, false);
    w->lane.announced[ref] = true;
    w->outbox.push(Buffer(initializer_->frame));
    w->outbox.push(protocol::encode_init(ref));
  }
  // The pool may have been resized while this worker was being started: a worker beyond the
  // size is retired at once instead of being counted.
  if (holding_places_locked() >= max_workers_) w->retire();
  workers_.emplace(w->serial, w);
  flush_locked(*w);
  if (w->phase == WorkerSlot::Phase::retiring) poller_.wake();
}

// ---- public control ----------------------------------------------------------------------------

void Pool::shutdown(const ShutdownOptions& options) {
  Completions done;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    if (options.kill_workers && !killed_) {
      killed_ = true;
      auto error = std::make_exception_ptr(CancelledError(
          "ferry: the executor was shut down with kill_workers=true before this task completed"));
      fail_queue_locked(error, done);
      for (auto& [_, w] : workers_) {
        for (auto& c : dispatcher_.take_all(w->lane)) finish_locked(c, done, error);
        kill_worker_locked(*w, nullptr);
      }
    }
  }
  complete(done);
  poller_.wake();
  if (!options.wait || std::this_thread::get_id() == manager_id_) return;
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return finished_; });
  lock.unlock();
  std::lock_guard join_lock(join_mu_);
  if (manager_.joinable() && std::this_thread::get_id() != manager_.get_id()) manager_.join();
}

void Pool::resize(std::size_t n) {
  if (n == 0) throw std::invalid_argument("ferry: max_workers must be greater than 0");
  if (n > max_pool_size)
    throw std::invalid_argument("ferry: max_workers " + std::to_string(n) +
                                " is more than ferry supports (" + std::to_string(max_pool_size) + ")");
  std::lock_guard lock(mu_);
  if (shutdown_) throw BrokenProcessPool::shut_down();
  max_workers_ = n;
  std::vector<WorkerSlot*> active;
  for (auto& [_, w] : workers_)
    if (w->accepts_work()) active.push_back(w.get());
  if (active.size() > n) {
    // Retire the least busy; their in-flight calls finish first, then they are told to exit.
    std::sort(active.begin(), active.end(), [](WorkerSlot* a, WorkerSlot* b) {
      return a->lane.in_flight.size() < b->lane.in_flight.size();
    });
    for (std::size_t i = 0; i < active.size() - n; ++i) active[i]->retire();
  }
  poller_.wake();
}

bool Pool::warm_up(Clock::duration timeout) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    started_ = true;
    idle_exited_ = 0;
  }
  poller_.wake();
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] {
    auto up = std::count_if(workers_.begin(), workers_.end(), [](const auto& kv) { return kv.second->up(); });
    // A remote backend may have fewer places than max_workers (an MPI job that lost a rank).
    return static_cast<std::size_t>(up) >= std::min(max_workers_, launcher_->capacity());
  });
}

std::size_t Pool::max_workers() const {
  std::lock_guard lock(mu_);
  return max_workers_;
}

std::vector<int> Pool::worker_pids() const {
  std::lock_guard lock(mu_);
  std::vector<int> out;
  for (const auto& [_, w] : workers_)
    if (w->greeted && w->alive()) out.push_back(w->pid);
  return out;
}

bool Pool::is_shutdown() const {
  std::lock_guard lock(mu_);
  return shutdown_;
}

std::exception_ptr Pool::broken() const {
  std::lock_guard lock(mu_);
  return broken_;
}

}  // namespace ferry::detail
