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
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include <ferry/ferry.hpp>

#include "platform/format.hpp"
#include "platform/trust.hpp"
#include "host/pool.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {
constexpr std::uint64_t tag_read = 1, tag_write = 2, tag_pid = 3;
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

void Pool::wake() {
  std::uint64_t one = 1;
  ssize_t r = ::write(wake_fd_.get(), &one, sizeof one);
  (void)r;  // EAGAIN: the counter is already non-zero, the manager is woken anyway
}

std::shared_ptr<Worker> Pool::worker_by_serial(std::uint64_t serial) {
  std::lock_guard lock(mu_);
  auto it = workers_.find(serial);
  return it == workers_.end() ? nullptr : it->second;
}

void Pool::manager_loop() {
  manager_id_ = std::this_thread::get_id();
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 64, next_timeout_ms());
    if (n < 0 && errno != EINTR) debug_log("epoll_wait: %s", std::strerror(errno));
    for (int i = 0; i < n; ++i) {
      std::uint64_t tag = events[i].data.u64;
      if (tag == 0) {
        std::uint64_t v;
        while (::read(wake_fd_.get(), &v, sizeof v) > 0) {
        }
        continue;
      }
      auto w = worker_by_serial(tag >> 2);
      if (!w) continue;
      switch (tag & 3) {
        case tag_read: on_readable(w); break;
        case tag_write: on_writable(w); break;
        case tag_pid: on_exit(w); break;
        default: break;
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

void Pool::on_readable(const std::shared_ptr<Worker>& w) {
  std::unique_lock read_lock(w->read_mu, std::try_to_lock);
  if (!read_lock) return;  // a waiting thread reads it, and re-arms it when done
  Completions done;
  read_available(*w, done);
  arm_read(*w, true);
  read_lock.unlock();
  complete(done);
}

void Pool::on_writable(const std::shared_ptr<Worker>& w) {
  std::lock_guard lock(mu_);
  w->out_armed = false;
  flush_locked(*w);
}

void Pool::on_exit(const std::shared_ptr<Worker>& w) {
  Completions done;
  {
    // Results written before the death are still in the socket: deliver them first.
    std::lock_guard read_lock(w->read_mu);
    while (read_available(*w, done) && w->reader.partial()) {
    }
  }
  complete(done);
  ExitStatus st;
  if (w->remote) {
    st = w->remote->status();
  } else if (!try_reap(w->pid, st)) {
    st = reap(w->pid);  // pidfd readable: it has exited
  }
  OomCounts ooms = OomCounts::read();
  {
  std::lock_guard lock(mu_);
  w->dead = true;
  for (int fd : {w->sock.get(), w->sock_out.get(), w->pidfd.get()})
    if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  debug_log("worker %d exited: %s%s", w->pid, describe_exit(st).c_str(), w->bye ? " (announced)" : "");
  auto requeue = [&](std::size_t from) {
    for (std::size_t i = w->in_flight.size(); i > from; --i) {
      w->in_flight[i - 1]->worker = nullptr;
      queue_.push_front(w->in_flight[i - 1]);
    }
  };
  if (!w->hello && !w->bye && !w->kill_error && !shutdown_) {
    // Died before saying hello: nothing of ours ran on it. Retry elsewhere; give up after a few.
    requeue(0);
    ++startup_failures_;
    last_spawn_error_ = launcher_ ? "a worker ended before its handshake: " + describe_exit(st)
                                  : "ferry-worker " + worker_path_.string() + " (pid " +
                                        std::to_string(w->pid) + ") ended with " + describe_exit(st) +
                                        " before its handshake";
  } else if (w->bye || w->in_flight.empty()) {
    requeue(0);
  } else {
    auto running = w->in_flight.front();
    running->worker = nullptr;
    std::exception_ptr error = w->kill_error;
    if (!error && running->retries < options_.max_retries_on_worker_death) {
      ++running->retries;
      requeue(0);
    } else {
      if (!error) {
        bool oom = st.signal == SIGKILL && ooms.grew_since(oom_seen_);
        error = std::make_exception_ptr(TerminatedWorkerError(
            running->ref->display, w->pid, st.signal, st.exit_code, oom,
            "worker " + std::to_string(w->pid) + " ended with " + describe_exit(st)));
      }
      requeue(1);
      finish_locked(running, done);
      done.back().error = error;
    }
  }
  oom_seen_ = ooms;
  w->in_flight.clear();
  w->outbox.clear();
  workers_.erase(w->serial);
  dispatch_locked();
  changed_.notify_all();
  wake();
  }
  complete(done);
}

void Pool::kill_worker_locked(Worker& w, std::exception_ptr error_for_running_call) {
  if (w.dead) return;
  if (!w.kill_error) w.kill_error = std::move(error_for_running_call);
  w.retiring = true;
  debug_log("killing worker %d", w.pid);
  signal_kill(w);
}

void Pool::signal_kill(Worker& w) {
  if (w.remote) {
    w.remote->kill();
  } else if (w.pid > 0) {
    ::kill(w.pid, SIGKILL);
  }
}

void Pool::fail_queue_locked(std::exception_ptr error, Completions& done) {
  for (auto& c : queue_) {
    finish_locked(c, done);
    done.back().error = error;
  }
  queue_.clear();
}

bool Pool::finished_locked() const {
  return shutdown_ && workers_.empty() && outstanding_ == 0;
}

int Pool::next_timeout_ms() {
  std::lock_guard lock(mu_);
  auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (const auto& [_, w] : workers_) {
    next = std::min(next, w->kill_at);
    if (!w->hello && !w->dead && !w->handshake_killed)
      next = std::min(next, w->spawned + hello_timeout);
    if (!w->in_flight.empty()) {
      const auto& c = w->in_flight.front();
      if (c->deadline.count() > 0) next = std::min(next, c->started + c->deadline);
    }
  }
  if (next == Clock::time_point::max()) return -1;
  if (next <= now) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next - now).count());
}

void Pool::maintain(Completions& done) {
  std::size_t to_spawn = 0;
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    for (auto& [_, w] : workers_) {
      if (w->dead) continue;
      if (now >= w->kill_at) {
        signal_kill(*w);
        w->kill_at = Clock::time_point::max();
      }
      if (!w->in_flight.empty() && !w->kill_error) {
        const auto& c = w->in_flight.front();
        if (c->deadline.count() > 0 && now >= c->started + c->deadline) {
          kill_worker_locked(
              *w, std::make_exception_ptr(TimeoutError(
                      "task '" + c->ref->display + "' exceeded its deadline of " +
                      detail::format_duration(c->deadline) + ": worker " +
                      std::to_string(w->pid) + " was killed")));
        }
      }
    }
    if (shutdown_ && queue_.empty()) {
      for (auto& [_, w] : workers_)
        if (w->in_flight.empty()) w->retiring = true;
    }
    for (auto& [_, w] : workers_) {
      if (w->retiring && w->in_flight.empty() && !w->shutdown_sent && !w->dead && !w->bye) {
        w->outbox.push(protocol::frame(protocol::FrameType::shutdown, Buffer()));
        w->shutdown_sent = true;
        w->kill_at = std::min(w->kill_at, now + shutdown_grace);
        flush_locked(*w);
      }
    }
    bool any_up = std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) {
      return kv.second->hello && !kv.second->dead;
    });
    if (startup_failures_ >= max_startup_failures) {
      if (!any_up) {
        spawn_error_ = start_failure(last_spawn_error_);
        started_ = false;  // no retry until the next submit
      }
      startup_failures_ = 0;
    }
    if (launcher_ && launcher_->capacity() == 0 && active_locked() == 0 && !queue_.empty())
      fail_queue_locked(start_failure("every remote rank of the job has died"), done);
    // Once workers cannot be started, calls coming back from dying half-started workers fail too.
    if (spawn_error_ && !any_up) fail_queue_locked(spawn_error_, done);
    for (auto& [_, w] : workers_) {
      if (!w->hello && !w->dead && !w->handshake_killed && now >= w->spawned + hello_timeout) {
        last_spawn_error_ = "ferry-worker " + worker_path_.string() + " (pid " +
                            std::to_string(w->pid) + ") did not complete its handshake within " +
                            detail::format_duration(hello_timeout);
        signal_kill(*w);
        w->handshake_killed = true;
      }
    }
    bool busy = !queue_.empty() ||
                std::any_of(workers_.begin(), workers_.end(),
                            [](const auto& kv) { return !kv.second->in_flight.empty(); });
    // After shutdown, work already submitted still gets workers (shutdown(wait=false) completes).
    if (!broken_ && !killed_ && started_ && (!shutdown_ || busy)) {
      std::size_t desired = busy ? max_workers_ : max_workers_ - std::min(idle_exited_, max_workers_);
      // A backend that lost nodes cannot run as many workers as asked.
      if (launcher_) desired = std::min(desired, launcher_->capacity());
      std::size_t active = active_locked();
      if (active < desired) to_spawn = desired - active;
    }
    if (finished_locked()) {
      finished_ = true;
      changed_.notify_all();
      return;
    }
  }
  if (to_spawn == 0) return;
  for (std::size_t i = 0; i < to_spawn; ++i) spawn_one(done);
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

void Pool::spawn_one(Completions& done) {
  if (launcher_) {
    spawn_remote(done);
    return;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    std::lock_guard lock(mu_);
    last_spawn_error_ = std::string("socketpair: ") + std::strerror(errno);
    ++startup_failures_;
    return;
  }
  Fd host(sv[0]), child(sv[1]);
  ::fcntl(host.get(), F_SETFL, ::fcntl(host.get(), F_GETFL) | O_NONBLOCK);
  std::vector<std::string> args = worker_args();
  args.insert(args.begin(), {"--fd", "3", "--parent", std::to_string(::getpid())});

  // Nothing can run without a worker: fail what waits, unless another worker is alive.
  auto cannot_start = [&](const std::string& why) {
    std::lock_guard lock(mu_);
    last_spawn_error_ = why;
    debug_log("spawn failed: %s", why.c_str());
    if (active_locked() == 0) {
      spawn_error_ = std::make_exception_ptr(BrokenProcessPool::spawn_failed(worker_path_.string(), why));
      fail_queue_locked(spawn_error_, done);
      started_ = false;
    }
  };
  // The program ferry runs for the user must be one no other user could have planted (a missing
  // one is posix_spawn's ENOENT below).
  std::error_code ec;
  if (!allow_unsafe_ && fs::exists(worker_path_, ec)) {
    if (std::string why = untrusted_reason(worker_path_); !why.empty()) {
      cannot_start("refusing to run it: " + why +
                   " (fix the permissions, or set allow_unsafe_plugins / FERRY_ALLOW_UNSAFE_PLUGINS=1)");
      return;
    }
  }
  SpawnedProcess p;
  try {
    p = spawn_process(worker_path_, args, worker_env_, child.get());
  } catch (const std::system_error& e) {
    cannot_start(e.code().message());
    return;
  }
  child.reset();
  if (!p.pidfd) {
    // Without pidfd (Linux < 5.3) deaths could not be told apart from a closed channel.
    ::kill(p.pid, SIGKILL);
    reap(p.pid);
    std::lock_guard lock(mu_);
    last_spawn_error_ = "pidfd_open is not available (ferry needs Linux 5.3 or later)";
    fail_queue_locked(std::make_exception_ptr(BrokenProcessPool::spawn_failed(
                          worker_path_.string(), last_spawn_error_)),
                      done);
    started_ = false;
    return;
  }
  auto w = std::make_shared<Worker>();
  w->pid = p.pid;
  w->pidfd = std::move(p.pidfd);
  w->sock = std::move(host);
  register_worker(w);
}

std::exception_ptr Pool::start_failure(const std::string& why) const {
  if (!launcher_) return std::make_exception_ptr(BrokenProcessPool::spawn_failed(worker_path_.string(), why));
  return std::make_exception_ptr(
      BrokenProcessPool("cannot start worker processes (backend \"" + options_.backend + "\"): " + why));
}

void Pool::spawn_remote(Completions& done) {
  std::string why;
  std::vector<std::pair<std::string, std::string>> env(options_.env.begin(), options_.env.end());
  // The remote side starts ferry-worker itself: the one configured here, if any.
  if (!options_.worker_path.empty()) env.emplace_back("FERRY_WORKER", options_.worker_path.string());
  auto launched = launcher_->launch(worker_args(), env, why);
  if (!launched) {
    std::lock_guard lock(mu_);
    last_spawn_error_ = why;
    debug_log("remote launch failed: %s", why.c_str());
    if (active_locked() == 0) {
      spawn_error_ = start_failure(why);
      fail_queue_locked(spawn_error_, done);
      started_ = false;
    }
    return;
  }
  auto w = std::make_shared<Worker>();
  w->pid = 0;  // known at its hello
  w->remote = launched->worker;
  w->pidfd = Fd(::fcntl(w->remote->exit_fd(), F_DUPFD_CLOEXEC, 0));
  w->sock = std::move(launched->channel);
  ::fcntl(w->sock.get(), F_SETFL, ::fcntl(w->sock.get(), F_GETFL) | O_NONBLOCK);
  register_worker(w);
}

void Pool::register_worker(const std::shared_ptr<Worker>& w) {
  w->sock_out = Fd(::fcntl(w->sock.get(), F_DUPFD_CLOEXEC, 0));
  w->spawned = Clock::now();
  std::lock_guard lock(mu_);
  w->serial = next_serial_++;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = (w->serial << 2) | tag_read;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w->sock.get(), &ev);
  ev.events = EPOLLONESHOT;
  ev.data.u64 = (w->serial << 2) | tag_write;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w->sock_out.get(), &ev);
  ev.events = EPOLLIN;
  ev.data.u64 = (w->serial << 2) | tag_pid;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w->pidfd.get(), &ev);
  debug_log("spawned worker %d", w->pid);
  if (initializer_) {
    std::uint32_t ref = initializer_->define.ref;
    w->announced.resize(ref + 1, false);
    w->announced[ref] = true;
    w->outbox.push(Buffer(initializer_->frame));
    w->outbox.push(protocol::encode_init(ref));
  }
  // The pool may have been resized while this worker was being spawned: a
  // worker beyond the size is retired at once instead of being counted.
  if (active_locked() >= max_workers_) w->retiring = true;
  workers_.emplace(w->serial, w);
  flush_locked(*w);
  if (w->retiring) wake();
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
        for (auto& c : w->in_flight) {
          c->worker = nullptr;
          finish_locked(c, done);
          done.back().error = error;
        }
        w->in_flight.clear();
        kill_worker_locked(*w, nullptr);
      }
    }
  }
  complete(done);
  wake();
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
  std::vector<Worker*> active;
  for (auto& [_, w] : workers_)
    if (!w->retiring && !w->bye && !w->dead && !w->eof) active.push_back(w.get());
  if (active.size() > n) {
    // Retire the least busy; their in-flight calls finish first, then they are told to exit.
    std::sort(active.begin(), active.end(),
              [](Worker* a, Worker* b) { return a->in_flight.size() < b->in_flight.size(); });
    for (std::size_t i = 0; i < active.size() - n; ++i) active[i]->retiring = true;
  }
  wake();
}

bool Pool::warm_up(Clock::duration timeout) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    started_ = true;
    idle_exited_ = 0;
  }
  wake();
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] {
    std::size_t up = 0;
    for (const auto& [_, w] : workers_)
      if (w->hello && !w->retiring && !w->bye && !w->dead) ++up;
    // A remote backend may have fewer places than max_workers (an MPI job that lost a rank).
    std::size_t want = launcher_ ? std::min(max_workers_, launcher_->capacity()) : max_workers_;
    return up >= want;
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
    if (w->hello && !w->dead) out.push_back(w->pid);
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
