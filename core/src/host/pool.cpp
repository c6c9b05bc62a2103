// SPDX-License-Identifier: BSD-3-Clause
// Pool: submission, dispatch, reading results (by any thread), waiting and cancelling.
// The data-flow picture is at the top of pool.hpp; the manager thread lives in manager.cpp.
#include "host/pool.hpp"

#include <dlfcn.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include <ferry/ferry.hpp>

#include "platform/config.hpp"
#include "platform/paths.hpp"
#include "platform/trust.hpp"
#include "host/resolver.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;
using protocol::ResultStatus;


/// Where ferry-worker is: the option, $FERRY_WORKER, the one installed with this libferry (found
/// relative to libferry's own file: the build tree mirrors the install tree, so no build-tree
/// path is compiled in), then $PATH. Whichever is chosen must pass the trust check before it
/// runs (spawn_one).
fs::path find_worker(const fs::path& configured) {
  if (!configured.empty()) return configured;
  if (auto env = Config::read().worker; !env.empty()) return env;
  std::vector<fs::path> candidates;
  if (auto dir = library_directory(); !dir.empty()) candidates.push_back(dir / FERRY_WORKER_RELATIVE_PATH);
  if (auto on_path = find_program("ferry-worker")) candidates.push_back(*on_path);
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(c, ec) && ::access(c.c_str(), X_OK) == 0)
      return fs::weakly_canonical(c, ec);
  }
  return candidates.empty() ? fs::path("ferry-worker") : candidates.front();
}

namespace {
std::mutex backends_mu;
std::map<std::string, LauncherFactory>& backends() {
  static std::map<std::string, LauncherFactory> b;
  return b;
}
}  // namespace

void register_backend(const std::string& name, LauncherFactory factory) {
  std::lock_guard lock(backends_mu);
  backends()[name] = std::move(factory);
}

std::shared_ptr<RemoteLauncher> make_launcher(const ExecutorOptions& options) {
  LauncherFactory f;
  {
    std::lock_guard lock(backends_mu);
    auto it = backends().find(options.backend);
    if (it == backends().end()) return nullptr;
    f = it->second;
  }
  return f(options);
}

}  // namespace ferry::detail

std::filesystem::path ferry::default_worker_path() { return detail::find_worker({}); }

namespace ferry::detail {

Pool::Pool(ExecutorOptions options) : options_(std::move(options)) {
  if (options_.idle_timeout.count() < 0)
    throw std::invalid_argument("ferry: ExecutorOptions::idle_timeout must not be negative");
  if (options_.backend != "local") {
    launcher_ = make_launcher(options_);
    if (!launcher_)
      throw std::invalid_argument("ferry: backend '" + options_.backend +
                                  "' is not available (for \"mpi\": build with FERRY_WITH_MPI, link "
                                  "ferry::mpi and call ferry::mpi::enable())");
  }
  // Every FERRY_* variable, validated here: a malformed one stops the executor from starting.
  Config config = Config::read();
  config.validate();
  max_workers_ = options_.max_workers ? options_.max_workers : cpu_count();
  if (launcher_ && launcher_->capacity() != SIZE_MAX &&
      (options_.max_workers == 0 || max_workers_ > launcher_->capacity()))
    max_workers_ = std::max<std::size_t>(1, launcher_->capacity());
  if (max_workers_ > max_pool_size)
    throw std::invalid_argument("ferry: max_workers " + std::to_string(max_workers_) +
                                " is more than ferry supports (" + std::to_string(max_pool_size) + ")");
  allow_unsafe_ = options_.allow_unsafe_plugins;
  worker_path_ = find_worker(options_.worker_path);
  if (config.allow_unsafe_plugins) allow_unsafe_ = true;
  std::vector<std::pair<std::string, std::string>> env(options_.env.begin(), options_.env.end());
  // Workers decode large arguments into fresh allocations: let glibc back them with transparent
  // huge pages (one fault per 2 MiB, not per 4 KiB page), unless GLIBC_TUNABLES says otherwise.
  if (!options_.env.count("GLIBC_TUNABLES")) {
    const char* t = std::getenv("GLIBC_TUNABLES");
    std::string tunables = t ? t : "";
    if (tunables.find("glibc.malloc.hugetlb") == std::string::npos)
      env.emplace_back("GLIBC_TUNABLES",
                       (tunables.empty() ? "" : tunables + ":") + "glibc.malloc.hugetlb=1");
  }
  worker_env_ = merged_environment(env);
  max_frame_ = config.max_frame_bytes;
  worker_spin_ = config.worker_spin;
  forced_depth_ = config.pipeline_depth;

  epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_ || !wake_fd_) throw std::system_error(errno, std::generic_category(), "ferry: epoll");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev);

  oom_seen_ = OomCounts::read();
  index_ = std::make_unique<PluginIndex>(PluginIndex::search_path(options_.plugin_dirs),
                                         PluginIndexOptions{options_.allow_unsafe_plugins});
  if (!options_.initializer.empty()) {
    Target t{.kind = Target::Kind::name, .name = options_.initializer};
    t.signature = Signature<void>::text.view();
    t.fingerprint = Signature<void>::fingerprint;
    initializer_ = resolve(t);
  }
}

Pool::~Pool() {
  if (manager_.joinable()) {
    if (std::this_thread::get_id() == manager_.get_id()) {
      manager_.detach();
    } else {
      manager_.join();
    }
  }
}

// ---- submission ------------------------------------------------------------------------------

std::shared_ptr<const RefEntry> Pool::intern_ref(protocol::RefKind kind, const std::string& library,
                                                 const std::string& name, std::uint64_t fingerprint,
                                                 std::string_view signature, std::string display,
                                                 std::string version) {
  std::lock_guard lock(refs_mu_);
  auto key = std::make_tuple(static_cast<int>(kind), library, name, fingerprint, version);
  if (auto it = refs_.find(key); it != refs_.end()) return it->second;
  auto e = std::make_shared<RefEntry>();
  e->define = protocol::Define{next_ref_++, kind, library, name, fingerprint, std::string(signature)};
  e->frame = protocol::encode_define(e->define);
  e->display = std::move(display);
  if (!version.empty()) {
    auto& [seen, generation] = library_versions_[library];
    if (seen != version) {
      seen = version;
      ++generation;
    }
    e->generation = generation;
  }
  e->version = std::move(version);
  refs_.emplace(key, e);
  return e;
}

std::shared_ptr<const RefEntry> Pool::resolve(const Target& t) {
  switch (t.kind) {
    case Target::Kind::function: {
      FunctionTask f = resolve_function(t.function);
      switch (f.kind) {
        case FunctionTask::Kind::plugin:
          return intern_ref(protocol::RefKind::plugin, f.library, f.name, t.fingerprint,
                            t.signature, f.name);
        case FunctionTask::Kind::main_program:
          // Sent anyway: the worker really tries to load the executable, and its loader's
          // message becomes the UnresolvableTaskError (DESIGN §1).
          return intern_ref(protocol::RefKind::main_program, f.library,
                            f.name.empty() ? "(unnamed function)" : f.name, t.fingerprint,
                            t.signature, f.name.empty() ? "(unnamed function)" : f.name);
        case FunctionTask::Kind::foreign:
          throw UnresolvableTaskError::not_a_task(f.name, f.library);
        case FunctionTask::Kind::unavailable:
          std::rethrow_exception(f.error);
      }
      break;
    }
    case Target::Kind::name: {
      TaskInfo info = index_->find(t.name);
      // Fingerprint 0: JSON arguments, whose types the worker's JSON decoding checks.
      if (t.fingerprint != 0 && info.fingerprint != t.fingerprint)
        throw PluginError::signature_mismatch(info.library.string(), info.name, info.signature,
                                              std::string(t.signature));
      return intern_ref(protocol::RefKind::plugin, info.library.string(), info.name,
                        t.fingerprint, t.signature, t.name, info.version);
    }
    case Target::Kind::ref: {
      std::error_code ec;
      fs::path lib = fs::absolute(t.library, ec);
      if (ec) lib = t.library;
      lib = lib.lexically_normal();
      if (!allow_unsafe_) PluginIndex::check_safe(lib);
      return intern_ref(protocol::RefKind::plugin, lib.string(), t.name, t.fingerprint,
                        t.signature, t.name, PluginIndex::file_version(lib));
    }
  }
  throw std::logic_error("unreachable");
}

void Pool::submit(const Target& target, Buffer args, std::uint32_t items,
                  std::shared_ptr<StateBase> state, const SubmitOptions& options,
                  std::uint8_t frame_flags) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    if (broken_) std::rethrow_exception(broken_);
  }
  std::shared_ptr<const RefEntry> ref;
  try {
    ref = resolve(target);
  } catch (const Error&) {
    // Resolution failures belong to this future only; the pool stays healthy.
    state->attach({}, 0, target.name);
    state->set_error(std::current_exception());
    return;
  }
  auto call = std::make_shared<Call>();
  call->ref = std::move(ref);
  call->args = std::move(args);
  call->items = std::max<std::uint32_t>(items, 1);
  call->flags = frame_flags;
  call->state = state;
  call->deadline = std::chrono::duration_cast<Clock::duration>(options.deadline);
  bool need_spawn = false;
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    call->id = next_call_++;
    state->attach(weak_from_this(), call->id, call->ref->display);
    calls_.emplace(call->id, call);
    queue_.push_back(call);
    ++outstanding_;
    started_ = true;
    idle_exited_ = 0;
    startup_failures_ = 0;
    spawn_error_ = nullptr;
    need_spawn = active_locked() < max_workers_;
    dispatch_locked();
  }
  if (need_spawn) wake();
}

std::size_t Pool::depth_locked() const {
  if (forced_depth_) return forced_depth_;
  // Short calls: keep several queued in the worker so it never waits for the next one. Long
  // calls: one at a time, so that no call waits behind another while a worker idles.
  if (service_ema_us_ < 200) return 8;
  if (service_ema_us_ < 2000) return 2;
  return 1;
}

std::size_t Pool::active_locked() const {
  // A worker whose channel just closed still holds its slot until it is reaped (and replaced).
  std::size_t n = 0;
  for (const auto& [_, w] : workers_)
    if (!w->retiring && !w->bye && !w->dead) ++n;
  return n;
}

void Pool::dispatch_locked() {
  if (queue_.empty() || killed_) return;
  std::size_t depth = depth_locked();
  std::vector<Worker*> touched;
  while (!queue_.empty()) {
    const Call& next = *queue_.front();
    Worker* best = nullptr;
    bool stale = false;
    for (auto& [_, w] : workers_) {
      if (w->retiring || w->bye || w->dead || w->eof) continue;
      if (!can_run(*w, next)) {
        // It runs another version of this plugin: retire it (after its calls); a fresh worker
        // replaces it and loads the new version.
        w->retiring = true;
        stale = true;
        continue;
      }
      if (w->in_flight.size() >= depth) continue;
      if (!best || w->in_flight.size() < best->in_flight.size()) best = w.get();
    }
    if (stale) wake();
    if (!best) break;
    auto call = std::move(queue_.front());
    queue_.pop_front();
    send_locked(*best, call);
    if (std::find(touched.begin(), touched.end(), best) == touched.end()) touched.push_back(best);
  }
  for (Worker* w : touched) flush_locked(*w);
}

bool Pool::can_run(const Worker& w, const Call& call) {
  const RefEntry& ref = *call.ref;
  if (ref.version.empty()) return true;
  auto it = w.libraries.find(ref.define.library);
  return it == w.libraries.end() || it->second >= ref.generation;
}

void Pool::send_locked(Worker& w, const std::shared_ptr<Call>& call) {
  std::uint32_t ref = call->ref->define.ref;
  if (!call->ref->version.empty()) {
    auto& generation = w.libraries[call->ref->define.library];
    generation = std::max(generation, call->ref->generation);
  }
  if (w.announced.size() <= ref) w.announced.resize(ref + 1, false);
  if (!w.announced[ref]) {
    w.outbox.push(Buffer(call->ref->frame));
    w.announced[ref] = true;
  }
  if (call->args.fd() >= 0) {
    // Large arguments were encoded straight into a memfd: the frame carries the descriptor and
    // the size; the worker maps them. The call keeps the memfd open until it completes.
    w.outbox.push(protocol::encode_shared_task({call->id, ref, call->items}, call->args.size(), call->flags),
                  call->args.fd(), call);
  } else {
    w.outbox.push(protocol::encode_task_head({call->id, ref, call->items}, call->args.size(), call->flags));
    w.outbox.push_view(call->args.view(), call);
  }
  call->worker = &w;
  if (w.in_flight.empty()) {
    call->started = Clock::now();
    if (call->deadline.count() > 0) wake();
  }
  w.in_flight.push_back(call);
}

void Pool::flush_locked(Worker& w) {
  if (w.outbox.empty() || w.dead) return;
  if (!w.outbox.flush(w.sock.get())) {
    // The worker's end is closed: it is dying. Its pidfd reports the death.
    debug_log("worker %d: send failed: %s", w.pid, std::strerror(errno));
    w.outbox.clear();
    w.eof = true;
    return;
  }
  if (!w.outbox.empty()) arm_write_locked(w);
}

void Pool::arm_write_locked(Worker& w) {
  if (w.out_armed || w.dead) return;
  epoll_event ev{};
  ev.events = EPOLLOUT | EPOLLONESHOT;
  ev.data.u64 = (w.serial << 2) | 2;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, w.sock_out.get(), &ev) == 0) w.out_armed = true;
}

void Pool::arm_read(Worker& w, bool on) {
  if (!w.sock) return;
  epoll_event ev{};
  ev.events = on ? (EPOLLIN | EPOLLRDHUP | EPOLLONESHOT) : EPOLLONESHOT;
  ev.data.u64 = (w.serial << 2) | 1;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, w.sock.get(), &ev);
}

// ---- reading ---------------------------------------------------------------------------------

bool Pool::read_available(Worker& w, Completions& done) {
  for (int round = 0; round < 64; ++round) {
    ssize_t n;
    if (w.garbage) {
      char sink[4096];
      do {
        n = ::recv(w.sock.get(), sink, sizeof sink, MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n > 0) continue;
    } else {
      try {
        n = w.reader.fill(w.sock.get(), MSG_DONTWAIT);
      } catch (const protocol::ProtocolError& e) {
        reject_garbage(w, e.what());
        continue;
      }
    }
    if (n > 0) {
      handle_frames(w, done);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    std::lock_guard lock(mu_);
    if (!w.eof) {
      w.eof = true;
      // A live process that closed its channel is killed after a grace period; normally the
      // pidfd reports the death first.
      w.kill_at = std::min(w.kill_at, Clock::now() + std::chrono::seconds(1));
      wake();
    }
    return false;
  }
  return true;
}

void Pool::handle_frames(Worker& w, Completions& done) {
  Frame f;
  for (;;) {
    try {
      if (!w.reader.next(f)) return;
      switch (f.header.type) {
        case protocol::FrameType::hello: {
          auto h = protocol::decode_hello(f.view());
          std::lock_guard lock(mu_);
          if (h.protocol != protocol::version || h.abi != plugin_abi_version) {
            kill_worker_locked(w, nullptr);
            last_spawn_error_ = "worker " + worker_path_.string() + " speaks protocol " +
                                std::to_string(h.protocol) + "/ABI " + std::to_string(h.abi) +
                                " (ferry " + h.ferry_version + "), this host protocol " +
                                std::to_string(protocol::version) + "/ABI " +
                                std::to_string(plugin_abi_version);
            return;
          }
          w.hello = true;
          if (w.remote) w.pid = h.pid;  // a remote worker's pid is only known now
          startup_failures_ = 0;
          w.reader.set_limit(max_frame_);
          changed_.notify_all();
          break;
        }
        case protocol::FrameType::result:
          handle_result(w, f, done);
          break;
        case protocol::FrameType::bye: {
          auto reason = protocol::decode_bye(f.view());
          std::lock_guard lock(mu_);
          debug_log("worker %d: bye (%s)", w.pid, protocol::bye_reason_name(reason));
          w.bye = true;
          w.bye_reason = reason;
          if (reason == protocol::ByeReason::idle_timeout) ++idle_exited_;
          // Everything still in flight was never read by the worker: run it elsewhere.
          for (auto it = w.in_flight.rbegin(); it != w.in_flight.rend(); ++it) {
            (*it)->worker = nullptr;
            queue_.push_front(*it);
          }
          w.in_flight.clear();
          dispatch_locked();
          wake();
          break;
        }
        default:
          throw protocol::ProtocolError("unexpected frame type from worker");
      }
    } catch (const protocol::ProtocolError& e) {
      reject_garbage(w, e.what());
      return;
    }
  }
}

void Pool::reject_garbage(Worker& w, const char* what) {
  std::lock_guard lock(mu_);
  debug_log("worker %d: protocol error: %s", w.pid, what);
  kill_worker_locked(w, std::make_exception_ptr(TerminatedWorkerError(
                            w.in_flight.empty() ? std::string() : w.in_flight.front()->ref->display,
                            w.pid, SIGKILL, -1, false,
                            std::string("killed by ferry: it sent a malformed frame (") + what + ")")));
  w.garbage = true;  // drop whatever else it sends until it is dead
}

void Pool::handle_result(Worker& w, Frame& f, Completions& done) {
  protocol::BodyReader r(f.view());
  auto head = protocol::decode_result_head(r);
  std::optional<Buffer> shared;
  if (head.status == ResultStatus::ok && (f.header.flags & protocol::flag_shm)) {
    // A large result in the worker's memfd: the state maps it (read-only) and decodes in place.
    shared = protocol::decode_shared_payload(r, f.fd.release());
  }
  std::lock_guard lock(mu_);
  if (head.status == ResultStatus::init_failed) {
    if (!initializer_) throw protocol::ProtocolError("initializer failure from a worker given none");
    broken_ = initializer_failed(decode_failure(r), {options_.initializer, initializer_->define, 1, w.pid});
    // No respawn loop: the calls that cannot run now fail with the initializer's error.
    for (auto& c : w.in_flight) {
      c->worker = nullptr;
      finish_locked(c, done);
      done.back().error = broken_;
    }
    w.in_flight.clear();
    fail_queue_locked(broken_, done);
    return;
  }
  auto it = std::find_if(w.in_flight.begin(), w.in_flight.end(),
                         [&](const auto& c) { return c->id == head.call; });
  if (it == w.in_flight.end()) throw protocol::ProtocolError("result for a call not sent to it");
  auto call = *it;
  w.in_flight.erase(it);
  call->worker = nullptr;
  auto now = Clock::now();
  auto began = std::max(call->started, w.last_result);
  double us = std::chrono::duration<double, std::micro>(now - began).count();
  service_ema_us_ = 0.8 * service_ema_us_ + 0.2 * us;
  w.last_result = now;
  if (!w.in_flight.empty()) {
    auto& next = w.in_flight.front();
    next->started = now;
    if (next->deadline.count() > 0) wake();  // the manager times the running call
  } else if (w.retiring) {
    wake();  // the manager tells it to exit now that it is idle
  }
  finish_locked(call, done);
  if (shared) {
    done.back().payload = std::move(*shared);
  } else if (head.status == ResultStatus::ok) {
    // The state takes the frame's own buffer: result bytes are never copied on the host.
    done.back().payload = std::move(f.body);
    done.back().offset = protocol::result_head_size;
  } else {
    done.back().error = remote_error(*call, w, decode_failure(r));
  }
  dispatch_locked();
}

void Pool::finish_locked(const std::shared_ptr<Call>& call, Completions& done) {
  calls_.erase(call->id);
  done.push_back(Completion{call->state, Buffer(), 0, nullptr});
}

std::exception_ptr Pool::remote_error(const Call& call, const Worker& w, const Failure& why) const {
  return to_exception(why, {call.ref->display, call.ref->define, call.items, w.pid});
}

void Pool::complete(Completions& done) {
  if (done.empty()) return;
  for (auto& c : done) {
    if (c.error) {
      c.state->set_error(c.error);
    } else {
      c.state->set_payload(std::move(c.payload), c.offset);
    }
  }
  std::size_t n = done.size();
  done.clear();
  std::lock_guard lock(mu_);
  outstanding_ -= std::min(outstanding_, n);
  if (shutdown_ && outstanding_ == 0) wake();
  changed_.notify_all();
}

// ---- waiting and cancelling ------------------------------------------------------------------

void Pool::wait(StateBase& state, std::optional<Clock::time_point> deadline) {
  std::shared_ptr<Worker> w;
  double ema;
  {
    std::lock_guard lock(mu_);
    auto it = calls_.find(state.call_id());
    if (it == calls_.end() || !it->second->worker) return;
    auto wit = workers_.find(it->second->worker->serial);
    if (wit == workers_.end() || wit->second->dead || wit->second->eof) return;
    w = wit->second;
    ema = service_ema_us_;
  }
  // Read our own result off the channel instead of waiting for the manager to do it and wake
  // us: on these VMs each cross-vCPU wake-up costs ~75 µs, the price of the whole round trip.
  std::unique_lock read_lock(w->read_mu, std::try_to_lock);
  if (!read_lock) return;  // someone else reads this channel; they will complete us
  arm_read(*w, false);
  auto spin = std::chrono::microseconds(ema < 500 ? static_cast<long>(std::min(3 * ema, 300.0)) : 0);
  auto spin_until = Clock::now() + spin;
  Completions done;
  while (!state.ready()) {
    bool alive = read_available(*w, done);
    if (!done.empty()) {
      // Completions run callbacks: never with the channel held (a callback may wait on another
      // call of this very worker).
      release_channel(*w, read_lock);
      complete(done);
      if (state.ready() || !read_lock.try_lock()) return;
      arm_read(*w, false);
      continue;
    }
    if (!alive) break;
    auto now = Clock::now();
    if (deadline && now >= *deadline) break;
    if (now < spin_until) {
      ::sched_yield();  // the worker may share this vCPU: let it run
      continue;
    }
    pollfd p[2] = {{w->sock.get(), POLLIN, 0}, {w->pidfd.get(), POLLIN, 0}};
    int timeout = -1;
    if (deadline)
      timeout = static_cast<int>(
          std::chrono::ceil<std::chrono::milliseconds>(*deadline - now).count());
    int r = ::poll(p, w->pidfd ? 2 : 1, timeout);
    if (r < 0 && errno != EINTR) break;
    if (r > 0 && (p[1].revents & POLLIN) && !(p[0].revents & (POLLIN | POLLHUP))) break;
  }
  release_channel(*w, read_lock);
  complete(done);
}

void Pool::release_channel(Worker& w, std::unique_lock<std::mutex>& read_lock) {
  // Unlock first, then re-arm: an event the manager sees while the lock is still held is
  // dropped (it only reads channels nobody else reads), so arming before unlocking could leave
  // the channel disarmed with a result in it and nobody to read it.
  read_lock.unlock();
  arm_read(w, true);
}

bool Pool::cancel(StateBase& state, bool kill_running) {
  Completions done;
  {
    std::lock_guard lock(mu_);
    auto it = calls_.find(state.call_id());
    if (it == calls_.end()) return false;
    auto call = it->second;
    if (!call->worker) {
      auto q = std::find(queue_.begin(), queue_.end(), call);
      if (q == queue_.end()) return false;
      queue_.erase(q);
      finish_locked(call, done);
      done.back().error = std::make_exception_ptr(
          CancelledError("task '" + call->ref->display + "' was cancelled before it started"));
    } else {
      Worker& w = *call->worker;
      // A call queued behind another in the worker's pipeline cannot be taken back without
      // killing the innocent running one: only the running call can be stopped.
      if (!kill_running || w.in_flight.empty() || w.in_flight.front() != call) return false;
      kill_worker_locked(w, std::make_exception_ptr(CancelledError(
                                "task '" + call->ref->display + "' was cancelled while running: its worker " +
                                std::to_string(w.pid) + " was killed")));
      return true;
    }
  }
  complete(done);
  return true;
}

}  // namespace ferry::detail
