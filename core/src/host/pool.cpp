// SPDX-License-Identifier: BSD-3-Clause
// Pool: submission, dispatch, reading results (by any thread), waiting and cancelling.
// The data-flow picture is at the top of pool.hpp; the manager thread lives in manager.cpp.
#include "host/pool.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <utility>

#include <ferry/detail/deadline.hpp>
#include <ferry/ferry.hpp>

#include "host/local_launcher.hpp"
#include "platform/containment.hpp"
#include "platform/config.hpp"
#include "platform/format.hpp"
#include "wire/shm.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;
using protocol::ResultStatus;


namespace {
std::mutex backends_mu;
std::map<std::string, LauncherFactory>& backends() {
  static std::map<std::string, LauncherFactory> b;
  return b;
}
}  // namespace

std::shared_ptr<Launcher> make_launcher(const ExecutorOptions& options) {
  if (options.backend == "local") return std::make_shared<LocalLauncher>(options);
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

void ferry::register_backend(const std::string& name, LauncherFactory factory) {
  if (name == "local") throw std::invalid_argument("ferry: backend \"local\" is built in");
  std::lock_guard lock(detail::backends_mu);
  detail::backends()[name] = std::move(factory);
}

std::filesystem::path ferry::default_worker_path() { return detail::find_worker({}); }

namespace ferry::detail {

/// What the pool needs of a ferry::Call: the target it names, resolved like a submission's.
struct CallAccess {
  static Target target(const ferry::Call& c) {
    Target t;
    switch (c.kind_) {
      case ferry::Call::Kind::function: t.kind = Target::Kind::function; break;
      case ferry::Call::Kind::ref: t.kind = Target::Kind::ref; break;
      case ferry::Call::Kind::name:
      case ferry::Call::Kind::none: t.kind = Target::Kind::name; break;
    }
    t.function = c.function_;
    t.name = c.name_;
    t.library = c.library_;
    t.signature = c.signature_;
    t.fingerprint = c.fingerprint_;
    t.layout = c.layout_;
    return t;
  }
};

namespace {
/// Host names, one string each for the life of the process: a state (Future::info()) may outlive
/// its executor, and there are only as many as there are nodes.
/// Names are at most max_host_name bytes (handle_hello) and at most max_host_names are kept:
/// every hello of a worker (a task can write one on fd 3) once added its name here for good.
const std::string* intern_host_name(std::string name) {
  static std::mutex mu;
  static auto* names = new std::set<std::string>;  // never freed: states may ask during exit
  static const auto* too_many = new std::string("(one host name too many)");
  std::lock_guard lock(mu);
  if (names->size() >= max_host_names) {
    auto it = names->find(name);
    return it == names->end() ? too_many : &*it;
  }
  return &*names->insert(std::move(name)).first;
}

std::int64_t system_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Pool::Pool(ExecutorOptions options)
    : options_(std::move(options)), refs_(options_), dispatcher_(Config::read().pipeline_depth) {
  if (options_.idle_timeout.count() < 0)
    throw std::invalid_argument("ferry: ExecutorOptions::idle_timeout must not be negative");
  if (std::isnan(options_.idle_timeout.count()))
    throw std::invalid_argument("ferry: ExecutorOptions::idle_timeout must not be NaN");
  if (options_.initializer_timeout.count() < 0)
    throw std::invalid_argument("ferry: ExecutorOptions::initializer_timeout must not be negative");
  if (std::isnan(options_.initializer_timeout.count()))
    throw std::invalid_argument("ferry: ExecutorOptions::initializer_timeout must not be NaN");
  // A name holding '=' made a second entry beside the variable it starts with ("LD_PRELOAD=/x "
  // beside LD_PRELOAD): the trust check read the first, the loader the last.
  for (const auto& [name, value] : options_.env) {
    if (!environment_name(name))
      throw std::invalid_argument("ferry: ExecutorOptions::env: \"" + message_text(name) +
                                  "\" is no variable name (empty, or holding '=' or a NUL byte)");
    if (value.find('\0') != std::string::npos)
      throw std::invalid_argument("ferry: ExecutorOptions::env: the value of " + message_text(name) +
                                  " holds a NUL byte");
  }
  // Every FERRY_* variable, validated here: a malformed one stops the executor from starting.
  Config config = Config::read();
  config.validate();
  check_containment(options_);
  // Where the sandbox reads and writes, resolved once: a worker started after the application
  // changed its directory must get the same paths (and never_symbolize_under below knows them).
  // options_ keeps them as given (get_reusable_executor compares them).
  sandbox_ = options_.sandbox;
  for (auto* paths : {&sandbox_.read, &sandbox_.write})
    for (auto& p : *paths) p = resolved_path(p.string());
  limits_ = task_limits(options_.limits);
  // In a sandbox a call's own limits become its worker's hard limits: the dispatcher sends a
  // worker only calls that fit under what it was lowered to.
  if (options_.sandbox.enabled) dispatcher_.harden_limits(limits_);
  ExecutorOptions launch = options_;
  // A task that makes an executor of its own must not write this host's trace file from another
  // process (truncating it, interleaving lines): workers get FERRY_TRACE empty (off), unless the
  // options' env sets it.
  launch.env.emplace("FERRY_TRACE", "");
  if (options_.sandbox.enabled && options_.sandbox.write.empty()) {
    // Where a sandboxed task may write by default: a directory of the executor's own, as TMPDIR.
    sandbox_tmp_ = std::make_unique<PrivateTempDir>(true);
    launch.env["TMPDIR"] = sandbox_tmp_->path().string();
  }
  if (options_.sandbox.enabled) {
    sandbox_read_ = sandbox_read_paths(options_, sandbox_);
    // What a sandboxed task writes is the task's: never parsed by this unsandboxed host as a
    // module of a remote stack (a worker names the files of its stack itself).
    for (const auto& dir : sandbox_.write) never_symbolize_under(dir);
    // The private directory, by its own path and where the workers may show it (/tmp...: there
    // a task names a module of its own by a path at which this host finds a file of anyone's).
    // The workers decide with their own files added, so they show it at these or fewer.
    std::vector<std::string> task_writable;
    for (const auto& dir : sandbox_.write) task_writable.push_back(dir.string());
    if (sandbox_tmp_) {
      never_symbolize_under(sandbox_tmp_->path().string());
      task_writable.push_back(sandbox_tmp_->path().string());
      for (const auto& dir : temp_dirs_to_hide(sandbox_read_)) {
        never_symbolize_under(dir);
        task_writable.push_back(dir);
      }
    }
    // The loader searches LD_LIBRARY_PATH at every dlopen in a worker, before a plugin's RUNPATH:
    // none of it may be where a task writes (a library one call left there would be a later
    // plugin's dependency). The launcher then judges what is left as ever.
    const auto given = options_.env.find("LD_LIBRARY_PATH");
    const char* inherited = std::getenv("LD_LIBRARY_PATH");
    if (given != options_.env.end() || inherited)
      launch.env["LD_LIBRARY_PATH"] =
          search_path_outside(given != options_.env.end() ? given->second : inherited, task_writable);
  }
  launcher_ = make_launcher(launch);
  if (!launcher_)
    throw std::invalid_argument("ferry: backend '" + options_.backend +
                                "' is not available (for \"mpi\": build with FERRY_WITH_MPI, link "
                                "ferry::mpi and call ferry::mpi::enable())");
  dispatcher_.set_short_depth(launcher_->short_call_depth());
  max_workers_ = options_.max_workers ? options_.max_workers : cpu_count();
  // A backend with fewer places than asked (an MPI job of N ranks) runs as many as it can.
  if (launcher_->capacity() != SIZE_MAX &&
      (options_.max_workers == 0 || max_workers_ > launcher_->capacity()))
    max_workers_ = std::max<std::size_t>(1, launcher_->capacity());
  if (max_workers_ > max_pool_size)
    throw std::invalid_argument("ferry: max_workers " + std::to_string(max_workers_) +
                                " is more than ferry supports (" + std::to_string(max_pool_size) + ")");
  max_frame_ = config.max_frame_bytes;
  {
    // A payload under the shared-memory threshold travels inside one frame, behind its heads:
    // with a smaller frame limit, workers were killed for results of a few hundred KiB (a
    // "malformed frame"). The threshold in force is the one read when libferry loaded.
    const BlockAllocator* shm = large_block_allocator();
    const std::uint64_t threshold = shm ? shm->threshold : config.shm_threshold;
    constexpr std::uint64_t frame_heads = 8 * 1024;
    if (max_frame_ < threshold + frame_heads)
      throw std::invalid_argument("ferry: FERRY_MAX_FRAME_BYTES=" + std::to_string(max_frame_) +
                                  " must be at least FERRY_SHM_THRESHOLD (" + std::to_string(threshold) +
                                  ", as read when libferry loaded) + 8 KiB: payloads under the threshold "
                                  "travel inside a frame");
    // A worker with a memory limit cannot hold a frame much past it (what it sends inline is on its
    // heap, under RLIMIT_DATA; more goes in shared memory): its frames are kept to twice the
    // limit. A hostile task announced a result frame of 900 MiB and sent the same MiB again and
    // again, costing the host 900 MiB a worker, whatever limits.memory said (an audit). The
    // workers are told this limit (worker_args), so that theirs is the same.
    if (const std::uint64_t memory = options_.limits.memory; memory != 0 && memory < max_frame_) {
      const std::uint64_t capped = std::max<std::uint64_t>(threshold, 2 * memory) + frame_heads;
      frame_limited_by_memory_ = capped < max_frame_;
      max_frame_ = std::min(max_frame_, capped);
    }
  }
  sandbox_shared_budget_ = config.sandbox_shared_bytes;
  worker_spin_ = config.worker_spin;

  if (!options_.initializer.empty()) {
    // Resolved now: an unknown initializer, or one whose arguments do not match, is refused here.
    initializer_ = refs_.resolve(CallAccess::target(options_.initializer));
    initializer_frame_ = protocol::encode_init(initializer_->define.ref, options_.initializer.arguments(),
                                               options_.initializer.is_json() ? protocol::flag_json : 0);
    // They travel inside the init frame, never in shared memory: past the frame limit every
    // worker took it for a malformed frame and exited, and the pool broke with "protocol error
    // while its initializer ran".
    if (initializer_frame_.size() - protocol::header_size > max_frame_ && options_.backend == "local")
      throw std::invalid_argument("ferry: the initializer's arguments take " +
                                  format_size(options_.initializer.arguments().size()) +
                                  ", more than a frame holds (" + frame_limit_text() +
                                  "): they go to each worker in the message that starts it, never in shared "
                                  "memory; give it what a worker can load itself (a path), or raise " +
                                  (frame_limited_by_memory_ ? "limits.memory" : "FERRY_MAX_FRAME_BYTES"));
  }
  // Last: options refused above leave no trace file behind (nor truncate one). A trace file the
  // program names that cannot be written is an error; one FERRY_TRACE names is said on stderr and
  // left out.
  const Trace::Header header{options_.backend, max_workers_};
  if (!options_.trace.empty())
    trace_ = std::make_unique<Trace>(options_.trace, options_.trace_max_bytes, header);
  else if (!config.trace.empty())
    trace_ = Trace::from_environment(config.trace, options_.trace_max_bytes, header, config.trace_files);
  // Last, once nothing can refuse the pool: buffers too large for its frames get shared memory
  // however scarce descriptors are (process-wide, the smallest limit holds).
  note_frame_limit(max_frame_);
}

Pool::~Pool() = default;

namespace {
/// Pools of this process not yet destroyed. In a child of fork() the parent's count goes on (its
/// pools there are never destroyed), so the child keeps its blocks: forget_blocks_in_child
/// dropped the parent's at the fork.
std::atomic<std::size_t> live_pools{0};
}  // namespace

Pool::Counted::Counted() noexcept { live_pools.fetch_add(1, std::memory_order_relaxed); }

Pool::Counted::~Counted() {
  // The blocks kept for reuse held up to 512 MiB and 64 descriptors for good once a burst of
  // large arguments had passed, with no executor left to reuse them (an audit of what a
  // long-running host holds). A buffer still alive gives its block back later, kept then.
  if (live_pools.fetch_sub(1, std::memory_order_acq_rel) == 1) drop_kept_blocks();
}

void Pool::start() { manager_.start(shared_from_this()); }

// ---- submission ------------------------------------------------------------------------------

void Pool::submit(const Target& target, Buffer args, std::uint32_t items,
                  std::shared_ptr<StateBase> state, const SubmitOptions& options,
                  std::uint8_t frame_flags, std::size_t first_input) {
  if (forked()) [[unlikely]]
    std::rethrow_exception(forked_error());
  // Saturating: one too long for the clock is none (Lane::deadline), NaN std::invalid_argument.
  const Clock::duration deadline =
      options.deadline.count() == 0 ? Clock::duration::zero() : clock_duration(options.deadline);
  // As ExecutorOptions::limits (check_containment): the host measures cpu_time from /proc, which
  // knows no remote worker's pid (it sampled whatever local process had that number), and the
  // other limits need the local worker's containment.
  if (any_limit(task_limits(options.limits)) && options_.backend != "local")  // no string compare per submit
    throw std::invalid_argument("ferry: SubmitOptions::limits are supported by the \"local\" backend only, not by \"" +
                                options_.backend + "\"");
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    if (broken_) std::rethrow_exception(broken_);
  }
  std::shared_ptr<const RefEntry> ref;
  try {
    ref = refs_.resolve(target);
  } catch (const Error&) {
    // Resolution failures belong to this future only; the pool stays healthy.
    fail_submission(*state, target, std::current_exception());
    return;
  }
  if (args.fd() < 0 && args.size() > max_frame_ - protocol::task_head_size && options_.backend == "local") {
    // Arguments that got no shared memory (memfd_create refused by a seccomp profile, no
    // descriptor left) stay on the heap and go through the socket, in one frame: larger than
    // that, the worker took them for a malformed frame and exited, and the call failed with
    // TerminatedWorkerError, blamed on a worker that did nothing wrong. (An MPI hub reads frames
    // with a limit of its own.)
    fail_submission(*state, target,
                    std::make_exception_ptr(SerializationError(
                        SerializationStage::encode_arguments, ref->define.signature,
                        "arguments of " + format_size(args.size()) + " do not fit a frame (" + frame_limit_text() +
                            ") and no shared memory could be had for them (" +
                            why_no_shared_block() + ")",
                        ref->display)));
    return;
  }
  auto call = std::make_shared<Call>();
  call->ref = std::move(ref);
  call->args = std::move(args);
  call->items = std::max<std::uint32_t>(items, 1);
  call->flags = frame_flags;
  call->first_input = first_input;
  call->state = state;
  call->deadline = deadline;
  call->limits = merge_limits(limits_, options.limits);
  if (sandbox_.enabled) {
    // In a sandbox the executor's limits are hard: a task's own may only be lower (the worker
    // could not apply a higher one, and one above every worker's would fit none of them).
    auto at_most = [](std::uint64_t& own, std::uint64_t executor) {
      if (executor != 0 && own > executor) own = executor;
    };
    at_most(call->limits.memory, limits_.memory);
    at_most(call->limits.open_files, limits_.open_files);
    at_most(call->limits.processes, limits_.processes);
    at_most(call->limits.file_size, limits_.file_size);
    // The host's measure, per call: nothing to lower in the worker, but the executor's is a
    // ceiling in a sandbox too (a task's own 30 s ran past the executor's 1 s).
    at_most(call->limits.cpu_seconds, limits_.cpu_seconds);
  }
  call->submitted_ns = system_now_ns();
  bool need_spawn = false;
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    if (broken_) std::rethrow_exception(broken_);  // broke while the name was resolved
    call->id = next_call_++;
    state->attach(weak_from_this(), call->id, call->ref->display, call->ref->info);
    dispatcher_.submit(call);
    ++outstanding_;
    ++counts_.submitted;
    started_ = true;
    idle_exited_ = 0;
    startup_failures_ = 0;
    spawn_error_ = nullptr;
    need_spawn = holding_places_locked() < max_workers_;
    if (trace_) [[unlikely]]
      call->queued_at = Clock::now();  // before dispatch: a slice never starts before its queue wait
    dispatch_locked();
    if (trace_) [[unlikely]] {
      const std::int64_t ts = trace_->at(call->queued_at);
      Trace::Batch t(*trace_);
      t.queue_begin({call->id, call->ref->display}, ts);
      trace_counters_locked(t, ts);
    }
  }
  if (need_spawn) poller_.wake();
}

void Pool::fail_submission(StateBase& state, const Target& target, std::exception_ptr error) {
  state.attach({}, 0, target.name);
  if (forked()) [[unlikely]] {
    state.set_error(std::move(error));
    return;
  }
  {
    std::lock_guard lock(mu_);
    ++counts_.submitted;
    if (trace_) [[unlikely]] {
      // A call of its own in the trace (an id no pool call uses), ended at once.
      const Trace::CallRef call{next_call_++, target.name.empty() ? std::string_view("(unresolved function)")
                                                                  : std::string_view(target.name)};
      const std::int64_t ts = trace_->now();
      Trace::Batch t(*trace_);
      t.queue_begin(call, ts);
      t.call_ended(call, Trace::describe(error), ts);
    }
  }
  count_failed(error);
  state.set_error(std::move(error));
}

std::size_t Pool::holding_places_locked() const {
  std::size_t n = 0;
  for (const auto& [_, w] : workers_)
    if (w->holds_place()) ++n;
  return n;
}

void Pool::dispatch_locked() {
  // A broken pool runs nothing more from its queue: what comes back to it fails with the pool's
  // error at the next maintenance (Manager::check_startup_locked), whatever worker is still up.
  if (dispatcher_.queue_empty() || killed_ || broken_) return;
  auto& [open, sends, stale, touched] = scratch_;
  open.clear();
  stale.clear();
  touched.clear();
  for (auto& [_, w] : workers_)
    if (w->takes_calls()) open.push_back(&w->lane);
  // A call goes into a busy worker's pipeline only when every worker the pool is to have takes
  // calls. While one is starting (a cold start, a replacement), a call waits here for a worker to
  // free up or to start: pipelined, a quick call waited behind a long one while the new worker
  // stood idle (Sample.map_and_wait under load). Short calls cost a round trip each meanwhile.
  // The backend's places only when short of max_workers: for MPI it takes the hub's lock, and
  // a pool whose workers are all up dispatches at every result.
  const bool full = open.size() >= max_workers_ || open.size() >= launcher_->available();
  dispatcher_.assign(open, sends, stale, Clock::now(), full);
  bool wake = false;
  for (Lane* lane : stale) {
    // It runs another version of a plugin: retired (after its calls); a fresh worker replaces
    // it and loads the new version. Or, in a sandbox, it was lowered to a call's own limits and
    // the call waiting has higher ones, which it can never give (Dispatcher::harden_limits): a
    // fresh worker, at the executor's limits, takes that call.
    workers_.at(lane->serial)
        ->retire(lane->limits_too_low ? WorkerSlot::Retired::lowered_limits : WorkerSlot::Retired::plugin_update);
    wake = true;
  }
  for (auto& s : sends) {
    WorkerSlot& w = *workers_.at(s.lane->serial);
    Call& call = *s.call;
    if (s.define) send_locked(w, Buffer(call.ref->frame));
    if (!(call.limits == w.sent_limits)) {
      // This task's own limits (SubmitOptions::limits): they hold from this frame on.
      send_locked(w, protocol::encode_limits(call.limits));
      w.sent_limits = call.limits;
    }
    Buffer head;
    if (call.args.fd() >= 0) {
      // Large arguments were encoded straight into a memfd: the frame carries the descriptor
      // and the size; the worker maps them. The call keeps the memfd open until it completes.
      // The worker's task code can reach that descriptor: it gets a read-only one, of a block
      // it can neither shrink nor write (made once per call, kept for a re-dispatch).
      if (!call.peer_args && sandbox_.enabled) {
        // Its task may map past its arguments and keep the mapping: a block with nothing of
        // another call's beyond them, never written again here (arguments_for_sandboxed_peer).
        bool copied = false;
        call.peer_args = arguments_for_sandboxed_peer(call.args.fd(), call.args.data(), call.args.size(),
                                                      call.args.capacity(), copied);
        if (!copied) call.args.give_away();
        call.peer_bytes = copied ? call.args.size() : call.args.capacity();
      } else if (!call.peer_args) {
        call.peer_args = read_only_for_peer(call.args.fd());
      }
      if (sandbox_.enabled) {
        // Kept mapped (whole: reading its holes makes pages), each block stays in memory, the
        // host's cgroup's, as long as its worker: past a budget the worker is replaced after its
        // calls. Counted at every send (a call sent again after a crash goes to another worker).
        w.shared_given += call.peer_bytes;
        if (w.shared_given > sandbox_shared_budget_) {
          w.retire(WorkerSlot::Retired::shared_memory);
          wake = true;
        }
      }
      head = protocol::encode_shared_task({call.id, call.ref->define.ref, call.items}, call.args.size(), call.flags);
      counts_.bytes_sent += head.size() + call.args.size();
      w.outbox.push(std::move(head), call.peer_args ? call.peer_args.get() : call.args.fd(), s.call);
    } else {
      head = protocol::encode_task_head({call.id, call.ref->define.ref, call.items}, call.args.size(), call.flags);
      counts_.bytes_sent += head.size() + call.args.size();
      w.outbox.push(std::move(head));
      w.outbox.push_view(call.args.view(), s.call);
    }
    // The manager times the running call (deadline) and samples its CPU time (Limits::cpu_time).
    // A manager already ticking for CPU time finds it at its next tick: no wake-up per task.
    if (s.running && (call.deadline.count() > 0 || (call.limits.cpu_seconds && !cpu_ticking_))) wake = true;
    if (std::find(touched.begin(), touched.end(), &w) == touched.end()) touched.push_back(&w);
  }
  sends.clear();  // the calls stay alive in their lanes and outboxes
  for (WorkerSlot* w : touched) flush_locked(*w);
  if (wake) poller_.wake();
}

void Pool::send_locked(WorkerSlot& w, Buffer frame) {
  counts_.bytes_sent += frame.size();
  w.outbox.push(std::move(frame));
}

void Pool::flush_locked(WorkerSlot& w) {
  if (w.outbox.empty() || !w.alive()) return;
  // A relaying backend (MPI) may take a lone call's frames in this thread: no write here, no
  // read there. Frames behind other calls in flight are left on the channel, where its relay
  // finds them together and sends them as one message (what one-by-one submits need).
  if (w.lane.in_flight.size() <= 1 && w.outbox.views(offered_) && w.process->send(offered_)) {
    w.outbox.clear();
    return;
  }
  while (!w.outbox.flush(w.sock.get())) {
    const int err = errno;
    if (err == ETOOMANYREFS && send_inline_instead_locked(w)) continue;
    debug_log("worker %d: send failed: %s", w.pid, std::strerror(err));
    w.outbox.clear();
    w.channel_open = false;
    // The worker's end is closed: it is dying, and its exit registration reports the death.
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) return;
    // It lives on, and can be sent nothing: killed, not waited for (it waited for a call that
    // never came, and the host for a death that never came).
    w.violation = std::string("could not be sent a call (") + std::strerror(err) +
                  (err == ETOOMANYREFS ? ": this user's descriptors in flight on UNIX sockets are past the host's "
                                         "RLIMIT_NOFILE, and the call's arguments fit no frame"
                                       : "") +
                  ")";
    kill_worker_locked(w, nullptr);
    return;
  }
  if (!w.outbox.empty()) arm_write_locked(w);
}

bool Pool::send_inline_instead_locked(WorkerSlot& w) {
  // The kernel refused to pass a shared argument's memfd (ETOOMANYREFS): the user has more
  // descriptors in flight on UNIX sockets than this process's RLIMIT_NOFILE, which a task can
  // bring about by sending descriptors into a socket nobody reads (its worker keeps it while it
  // lives). Nothing of that frame went, and the call it carries (the only frames sent with a
  // descriptor) goes inline when it fits a frame: the call waited for good (an audit).
  std::shared_ptr<const void> keep = w.outbox.unsent_passing_front();
  // Its owner is one of this worker's calls in flight (dispatch_locked): found there, not cast.
  const Call* call = nullptr;
  for (const auto& c : w.lane.in_flight)
    if (c.get() == keep.get()) call = c.get();
  if (!call || protocol::task_head_size + call->args.size() > max_frame_) return false;
  debug_log("worker %d: its arguments' memfd could not be passed (%s): %zu bytes sent inline", w.pid,
            std::strerror(ETOOMANYREFS), call->args.size());
  Buffer head = protocol::encode_task_head({call->id, call->ref->define.ref, call->items}, call->args.size(), call->flags);
  w.outbox.replace_front(std::move(head), call->args.view(), std::move(keep));
  return true;
}

void Pool::arm_write_locked(WorkerSlot& w) {
  if (w.write_armed || !w.alive()) return;
  if (poller_.arm(w.sock_out.get(), w.serial, Poller::Tag::write, true)) w.write_armed = true;
}

// ---- reading ---------------------------------------------------------------------------------

bool Pool::read_available(WorkerSlot& w, Completions& done, bool* drained) {
  for (int round = 0; round < 64; ++round) {
    ssize_t n;
    if (w.discarding) {
      // With the descriptors that come along: a plain recv leaves them to the kernel to close
      // here, and a lingering socket's close would stop this thread.
      n = discard_received(w.sock.get(), 4096, MSG_DONTWAIT);
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
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (drained) *drained = true;
      return true;
    }
    std::lock_guard lock(mu_);
    if (w.channel_open) {
      w.channel_open = false;
      // A live process that closed its channel is killed after a grace period; normally its
      // exit registration reports the death first.
      w.kill_at = std::min(w.kill_at, Clock::now() + std::chrono::seconds(1));
      poller_.wake();
    }
    return false;
  }
  return true;
}

void Pool::take_relayed(WorkerSlot& w, std::string& frames, Completions& done) {
  if (!w.discarding) {
    if (w.reader.feed(frames)) {
      handle_frames(w, done);
    } else {
      // A backend may hand over whole frames only once the pool has read all it wrote before.
      reject_garbage(w, "its backend handed over frames in the middle of one");
    }
  }
  frames.clear();
}

void Pool::handle_frames(WorkerSlot& w, Completions& done) {
  Frame f;
  for (;;) {
    try {
      if (!w.reader.next(f)) return;
      switch (f.header.type) {
        case protocol::FrameType::hello: handle_hello(w, f); break;
        case protocol::FrameType::result: handle_result(w, f, done); break;
        case protocol::FrameType::bye: handle_bye(w, f); break;
        case protocol::FrameType::contained: handle_contained(w, f); break;
        case protocol::FrameType::crashed: handle_crashed(w, f); break;
        default: throw protocol::ProtocolError("unexpected frame type from worker");
      }
      if (w.discarding) return;  // it is being killed: nothing it sent after counts
    } catch (const protocol::ProtocolError& e) {
      reject_garbage(w, e.what(), /*in_order=*/true);
      return;
    }
  }
}

bool Pool::memory_ceiling() const {
  return options_.sandbox.enabled && options_.limits.memory != 0 && containment_support().memory_cgroup;
}

const char* Pool::worker_path_advice() const noexcept {
  return options_.backend == "local" ? detail::worker_path_advice : "";
}

void Pool::handle_hello(WorkerSlot& w, const Frame& f) {
  auto h = protocol::decode_hello(f.view());
  std::lock_guard lock(mu_);
  // Read by a waiting thread after the manager gave it up (its hello timeout): a start failure
  // whatever it says now.
  if (w.failed_start) return;
  // One per worker. A second one (a task can write it) used to be taken as the first: the
  // running call was left to hang, and each one's host name was kept for good.
  if (w.greeted) throw protocol::ProtocolError("a second hello");
  count_received_locked(f);
  if (h.protocol != protocol::version || h.abi != plugin_abi_version) {
    kill_worker_locked(w, nullptr);
    // Said when its death is settled (a start-up failure), instead of "ended with SIGKILL".
    w.violation = "speaks protocol " + std::to_string(h.protocol) + "/ABI " + std::to_string(h.abi) +
                  " (ferry " + h.ferry_version + "), this host protocol " +
                  std::to_string(protocol::version) + "/ABI " + std::to_string(plugin_abi_version) +
                  worker_path_advice();
    w.discarding = true;
    return;
  }
  if (h.host.size() > max_host_name) {
    // gethostname() gives at most HOST_NAME_MAX (64) bytes, a DNS name 255: not a ferry-worker.
    // Not started, as one of another protocol is not (its death is a start-up failure).
    kill_worker_locked(w, nullptr);
    w.violation = "said hello with a host name of " + std::to_string(h.host.size()) +
                  " bytes (at most " + std::to_string(max_host_name) + ")";
    w.discarding = true;  // a result behind the hello in the same read is not taken either
    return;
  }
  w.greeted = true;
  // Its initializer runs from now on (ExecutorOptions::initializer_timeout; saturated: one too
  // long for the clock is none).
  if (w.lane.initializing && options_.initializer_timeout.count() > 0) {
    w.initializer_due = detail::deadline_after(options_.initializer_timeout, Clock::now());
    poller_.wake();  // the manager times it (a waiting thread may have read this hello)
  }
  w.host = intern_host_name(std::move(h.host));
  w.advance(WorkerSlot::Phase::ready);
  if (w.pid <= 0) w.pid = h.pid;  // a remote worker's pid is only known now
  // A sandbox's memory ceiling: the worker made its cgroup before its hello (a local worker:
  // containment needs the local backend). Its initializer may run already: until the watch is
  // set, the kernel's OOM killer acts in the cgroup.
  if (memory_ceiling()) {
    w.memory = MemoryCeilingWatch::of(w.pid);
    // The OOM killer goes off only once someone polls for the notification: else a full cgroup
    // would stop its task for good.
    if (w.memory.event && !(poller_.add(w.memory.event.get(), w.serial, Poller::Tag::memory) &&
                            w.memory.stop_oom_killer())) {
      poller_.remove(w.memory.event.get());
      w.memory = MemoryCeilingWatch{};
    }
  }
  if (!initializer_) startup_failures_ = start_failures_in_a_row_ = 0;  // else once its initializer ran
  w.reader.set_limit(max_frame_);
  changed_.notify_all();
  if (trace_) {
    const std::int64_t ts = trace_->now();
    Trace::Batch t(*trace_);
    t.worker_start(w.serial, w.pid, *w.host, w.process->rank(), ts);
    trace_counters_locked(t, ts);  // its worker counted now, not at the next call's event
  }
  if (!w.lane.initializing) dispatch_locked();  // its first calls (WorkerSlot::takes_calls)
}

std::string Pool::frame_limit_text() const {
  return frame_limited_by_memory_ ? format_size(max_frame_) + ": twice limits.memory"
                                  : "FERRY_MAX_FRAME_BYTES " + format_size(max_frame_);
}

void Pool::handle_bye(WorkerSlot& w, const Frame& f) {
  auto reason = protocol::decode_bye(f.view());
  std::lock_guard lock(mu_);
  // Killed meanwhile (its running call cancelled): the calls it holds settle with its death; a
  // bye must not send the cancelled one to run elsewhere.
  if (w.discarding) return;
  count_received_locked(f);
  debug_log("worker %d: bye (%s)", w.pid, protocol::bye_reason_name(reason));
  if (w.said_last) {
    // The bye its last answer announced. What is in flight was sent behind that answer and is
    // not to be read: it goes back to the queue, uncounted, once the worker's end is seen
    // (Manager::on_exit, w.bye), not now: a worker whose task forged the mark reads on, and a
    // call sent elsewhere at once ran twice, side by side (a review: 29 of 40 trials). A frame
    // after this bye is a lie (handle_result), and the end then settles the running call as a
    // death's.
    if (!w.bye) w.bye = reason;
    w.kill_at = std::min(w.kill_at, Clock::now() + bye_grace);
    poller_.wake();
    return;
  }
  if (reason == protocol::ByeReason::idle_timeout && w.greeted && !w.lane.initializing) {
    // Its idle time is up, and it says so without leaving (protocol 8): it gets no more calls,
    // runs those sent before this was read (they crossed the bye: the host sent a call after
    // the worker's hello, or its last result, later than its idle time) and is told to exit once
    // they are answered (Manager::stop_retired_locked), as a worker retired by a resize. Nothing
    // is handed back, so an honest bye loses no call and a forged one (a task can write the
    // frame) only retires its worker once that task returns: no call runs twice, no worker is
    // started for it. Its calls in flight are its own: a death settles them as a crash.
    if (w.said_idle) return;  // said once by ferry-worker: another is a task's
    w.said_idle = true;
    if (w.accepts_work()) ++idle_exited_;  // its place: not filled again until work comes
    w.retire(WorkerSlot::Retired::idle);
    poller_.wake();  // stop_retired_locked tells it to exit if it runs nothing
    return;
  }
  // Any other bye ends the worker. ferry-worker says it told to shut down (nothing in flight),
  // recycling right after an answer that said it was its last (flag_last, above), or, its
  // memory grown, right after an answer with nothing sent to it that it could see. A call in
  // flight now was sent to a worker that had said no such thing:
  // it may have read it, and a task can write the frame on fd 3 (a worker that says bye over its
  // running call again and again made one submit start 1523 workers in 5 s; review). It runs
  // elsewhere, and the third bye over the same call: that worker is taken to have run it and
  // died, and the call settles as for a crash (retries count). Before protocol 9 a bye read
  // right after any answer was taken as a recycling worker's and counted apart (12 more): a
  // task writing one as its call's first act ran that call 15 times.
  if (Call* running = w.lane.idle() ? nullptr : w.lane.in_flight.front().get();
      running && ++running->handed_back > max_handed_back) {
    w.violation = "it said bye instead of answering its running call, which " +
                  std::to_string(running->handed_back - 1) +
                  " workers before it had handed back the same way";
    kill_worker_locked(w, nullptr);
    w.discarding = true;
    return;
  }
  w.advance(WorkerSlot::Phase::leaving);
  w.bye = reason;  // after an idle one (said_idle): its answer to the shutdown, or a recycling
  // It exits now; one that does not (its task wrote the bye) is not waited for forever.
  w.kill_at = std::min(w.kill_at, Clock::now() + bye_grace);
  if (reason == protocol::ByeReason::idle_timeout) ++idle_exited_;
  // What is still in flight runs elsewhere (a running call counted above).
  dispatcher_.requeue(w.lane);
  dispatch_locked();
  poller_.wake();
}

void Pool::handle_contained(WorkerSlot& w, const Frame& f) {
  auto c = protocol::decode_contained(f.view());
  // Whatever follows is void: a task's child that hit the sandbox writes this frame, and the
  // worker may then answer the call itself (with the child's exit status) before it is killed.
  w.discarding = true;
  std::lock_guard lock(mu_);
  count_received_locked(f);
  debug_log("worker %d: contained: %s %s (%llu) %s", w.pid, protocol::contained_kind_name(c.kind),
            c.name.c_str(), static_cast<unsigned long long>(c.value), c.detail.c_str());
  // The worker exits after saying it; killing it too covers a frame written by a task's forked
  // child (which inherits the worker's handlers and channel) while the worker itself lives on.
  if (!w.greeted || w.lane.initializing) {
    // Its start or its initializer did it: a start failure, not the error of a call waiting
    // behind it.
    fail_start_locked(w, std::string("was stopped by the sandbox ") +
                             (w.greeted ? "while its initializer ran: " : "before its handshake: ") +
                             protocol::contained_kind_name(c.kind) + " " + c.name);
    return;
  }
  const Call* running = w.lane.running();
  kill_worker_locked(w, contained_error(c, running ? running->ref->display : std::string(), w.pid));
}

void Pool::fail_start_locked(WorkerSlot& w, std::string why) {
  w.violation = std::move(why);
  w.failed_start = true;
  // An initializer's success still unread (a memory ceiling met just after it) must not start
  // the calls of a worker given up as a start failure.
  w.discarding = true;
  kill_worker_locked(w, nullptr);
}

void Pool::handle_crashed(WorkerSlot& w, const Frame& f) {
  Crashed c = decode_crashed(f.view());
  // The worker's own crash says so once, and each process its task forks may crash once; past
  // that many, a task writing the frame on its channel again and again (ignored as another
  // process's, or taken as its own and overwritten) cost the host nothing locally, but through
  // the MPI hub, which relays faster than the pool reads, it grew the hub's memory without end.
  if (++w.crash_reports > max_crash_reports)
    throw protocol::ProtocolError("more than " + std::to_string(max_crash_reports) + " crash reports");
  // A process the task forked inherits the handler and the channel: its crash is not the worker's.
  // (w.pid is the worker's pid as the host knows it; a remote worker's is its hello's.)
  if (w.pid > 0 && c.pid != static_cast<std::uint32_t>(w.pid)) {
    debug_log("worker %d: crashed frame of process %u (a child of its task), ignored", w.pid, c.pid);
    return;
  }
  // Symbolized only if someone asks (RemoteStack): a crash loop costs no symbolization.
  auto stack = std::make_shared<const RemoteStack>(std::move(c.stack), true);
  std::lock_guard lock(mu_);
  count_received_locked(f);
  debug_log("worker %d: crashed: signal %u at 0x%llx", w.pid, c.signal,
            static_cast<unsigned long long>(c.fault_address));
  w.crash_signal = static_cast<int>(c.signal);
  w.crash_stack = std::move(stack);
}

void Pool::reject_garbage(WorkerSlot& w, const char* what, bool in_order) {
  std::lock_guard lock(mu_);
  debug_log("worker %d: protocol error: %s", w.pid, what);
  w.discarding = true;  // drop whatever else it sends until it is dead
  // Only a frame read in order is known to come before the initializer's success: bytes a
  // receive refused (descriptors no frame announced) may hold that success, glued to what a
  // task sent after it, and the call waiting behind it is then the one to blame.
  if (in_order && (!w.greeted || w.lane.initializing)) {
    // Before its hello: a start failure saying why (it was "ended with SIGKILL before its
    // handshake", or "while its initializer ran" when the executor has one).
    fail_start_locked(w, std::string("sent a malformed frame ") +
                             (w.greeted ? "while its initializer ran (" : "before its handshake (") + what + ")");
    return;
  }
  const Call* running = w.lane.running();
  kill_worker_locked(w, std::make_exception_ptr(TerminatedWorkerError(
                            running ? running->ref->display : std::string(), w.pid, SIGKILL, -1, false,
                            std::string("killed by ferry: it sent a malformed frame (") + what + ")")));
}

void Pool::handle_result(WorkerSlot& w, Frame& f, Completions& done) {
  protocol::BodyReader r(f.view());
  auto head = protocol::decode_result_head(r);
  std::optional<Buffer> shared;
  std::string not_received;  // why this process could not take the result it sent
  if (head.status == ResultStatus::ok && (f.header.flags & protocol::flag_shm)) {
    // A large result in the worker's memfd: the state maps it (read-only) and decodes in place.
    try {
      shared = protocol::decode_shared_payload(r, f.fd.release(), f.fd_lost);
    } catch (const protocol::ShortOfResources& e) {
      // The host's own want (descriptors, memory): the worker sent it right and goes on; that
      // call fails. It was killed for "a malformed frame", and its call retried or blamed on it.
      not_received = e.what();
    }
  }
  // What the worker sent for this call: its result bytes, or its failure's.
  const std::uint64_t result_bytes = shared ? shared->size() : f.body.size() - protocol::result_head_size;
  std::lock_guard lock(mu_);
  // Given up as a start failure (its initializer's time, say) while a waiting thread read this:
  // its initializer's success must not start its calls, nor reset the pool's start failures.
  // Or its running call was cancelled meanwhile (Pool::cancel): the result is dropped, the call
  // ends as cancelled when the worker's death is settled.
  if (w.failed_start || w.discarding) return;
  count_received_locked(f);
  if (shared) counts_.bytes_received += shared->size();
  if (head.status == ResultStatus::init_failed) {
    if (!initializer_) throw protocol::ProtocolError("initializer failure from a worker given none");
    // ferry-worker runs the initializer before any task, says when it succeeded (an ok result
    // for call 0) and exits when it fails: a failure after that, or naming a call, comes from a
    // task (which can write it on fd 3), and it used to break the whole executor. It breaks
    // only that worker's protocol.
    if (!w.lane.initializing) throw protocol::ProtocolError("initializer failure after the worker's initializer ran");
    if (head.call != 0) throw protocol::ProtocolError("initializer failure naming a call");
    broken_ = initializer_failed(decode_failure(r), {initializer_->display, initializer_->define, 1, w.pid});
    changed_.notify_all();  // warm_up
    // It exits now, and takes no more work meanwhile: calls another worker hands back before its
    // exit is seen went to it, and failed as if it had run them (TerminatedWorkerError).
    w.advance(WorkerSlot::Phase::leaving);
    w.kill_at = std::min(w.kill_at, Clock::now() + bye_grace);
    // No respawn loop: the calls that cannot run now fail with the initializer's error.
    auto never_ran = dispatcher_.take_all(w.lane);
    for (auto& c : never_ran) finish_locked(c, done, broken_);
    if (trace_ && !never_ran.empty()) trace_ended_locked(never_ran, broken_);
    fail_queue_locked(broken_, done);
    return;
  }
  if (head.call == 0) {
    // Its initializer ran: said once, before any result, by a worker given one.
    if (!initializer_) throw protocol::ProtocolError("an initializer's success from a worker given none");
    if (!w.lane.initializing) throw protocol::ProtocolError("an initializer's success said twice");
    if (head.status != ResultStatus::ok || shared || !r.rest().empty())
      throw protocol::ProtocolError("a result for call 0 that is not an initializer's success");
    startup_failures_ = start_failures_in_a_row_ = 0;
    dispatcher_.initialized(w.lane, Clock::now());
    dispatch_locked();  // its first calls: they waited in the queue (WorkerSlot::takes_calls)
    changed_.notify_all();  // warm_up
    return;
  }
  if (w.lane.initializing) throw protocol::ProtocolError("a result before its initializer ran");
  if (w.bye) {
    // ferry-worker sends nothing after a bye that ends it: the bye, or this, is a task's. Its
    // running call is no longer taken as never read (see handle_bye).
    w.bye.reset();
    throw protocol::ProtocolError("a result after its bye");
  }
  auto now = Clock::now();
  auto call = dispatcher_.answered(w.lane, head.call, now);
  if (!call) throw protocol::ProtocolError("result for a call it is not running");
  if (f.header.flags & protocol::flag_last) {
    // Its last answer: it recycles, reads nothing more, and says bye next (protocol 9). Nothing
    // more is sent here; what was sent behind this call runs elsewhere, uncounted, once the
    // worker has ended (handle_bye). Only the running call can be answered, so a task that
    // writes such a frame settles its own call with it, and its worker, which reads on, is
    // killed for the frames that follow (a result after its bye) or at bye_grace.
    w.said_last = true;
    w.advance(WorkerSlot::Phase::leaving);
    w.kill_at = std::min(w.kill_at, now + bye_grace);  // one that neither says bye nor exits
    poller_.wake();
  }
  // What it may use until its next call, measured from the next sample: a call run between two
  // samples is not charged to its idle time.
  w.idle_cpu_limit = call->limits.cpu_seconds;
  w.cpu_call = 0;
  if (w.lane.calls_left == 0 && w.lane.idle()) {
    // Its last call (max_tasks_per_child): its bye comes next, and its place goes to a new worker
    // now. One that neither says it nor exits (a task that answered for itself, then blocked)
    // held its place for good: nothing else would be sent to it, nor end it.
    w.advance(WorkerSlot::Phase::leaving);
    w.kill_at = std::min(w.kill_at, now + bye_grace);
    poller_.wake();
  }
  if (const Call* next = w.lane.running();
      next && (next->deadline.count() > 0 || (next->limits.cpu_seconds && !cpu_ticking_))) {
    poller_.wake();  // the manager times the running call, or samples its CPU time
  } else if (!next && w.idle_cpu_limit && !cpu_ticking_) {
    poller_.wake();  // the manager samples its CPU time while it idles
  } else if (w.lane.idle() && w.phase == WorkerSlot::Phase::retiring) {
    poller_.wake();  // the manager tells it to exit now that it is idle
  }
  std::exception_ptr lost;
  if (!not_received.empty())
    lost = std::make_exception_ptr(SerializationError(SerializationStage::decode_result, call->ref->define.signature,
                                                      "the host could not receive the result: " + not_received,
                                                      call->ref->display));
  Completion& c = finish_locked(call, done, lost);
  c.run = run_record(*call, w, head.stats);
  if (lost) {
    // Its error is set: no payload.
  } else if (shared) {
    c.payload = std::move(*shared);
  } else if (head.status == ResultStatus::ok) {
    // The state takes the frame's own buffer: result bytes are never copied on the host.
    c.payload = std::move(f.body);
    c.offset = protocol::result_head_size;
  } else {
    c.error = remote_error(*call, w, decode_failure(r));
  }
  dispatch_locked();
  if (trace_) [[unlikely]]
    trace_ran_locked(*call, w, &head.stats, result_bytes, c.error, now);
}

Completion& Pool::finish_locked(const std::shared_ptr<Call>& call, Completions& done, std::exception_ptr error) {
  dispatcher_.forget(*call);
  return completion_locked(*call, done, std::move(error));
}

Completion& Pool::completion_locked(Call& call, Completions& done, std::exception_ptr error) {
  // A copy per call: the same error may end many (with_inputs).
  if (error && call.first_input != no_input) error = with_inputs(error, call.first_input, call.items);
  done.push_back(Completion{call.state, Buffer(), 0, std::move(error)});
  return done.back();
}

std::exception_ptr Pool::remote_error(const Call& call, const WorkerSlot& w, const Failure& why) const {
  auto error = to_exception(why, {call.ref->display, call.ref->define, call.items, w.pid,
                                  call.first_input != no_input});
  // The worker says which item of the chunk failed at which stage: that input is named (one past
  // the chunk is not: its word names no input of this call, and the chunk's are named instead).
  if (call.first_input != no_input && failed_at_item(why.kind))
    error = why.item < call.items ? with_inputs(error, call.first_input + why.item, 1)
                                  : with_inputs(error, call.first_input, call.items);
  return error;
}

namespace {
/// A time a worker measured (what it says: a task can write any number on fd 3), kept where the
/// arithmetic on it cannot overflow: at most 2^62 ns since the epoch (the year 2116).
std::int64_t worker_ns(std::uint64_t v) noexcept {
  return static_cast<std::int64_t>(std::min<std::uint64_t>(v, std::uint64_t{1} << 62));
}
}  // namespace

RunRecord Pool::run_record(const Call& call, const WorkerSlot& w, const protocol::RunStats& stats) const {
  RunRecord r;
  r.ran = true;
  r.host = w.host;
  r.pid = w.pid;
  r.attempts = call.retries + 1;
  r.submitted_ns = call.submitted_ns;
  if (stats.started_ns != 0) {
    r.started_ns = worker_ns(stats.started_ns);
    r.finished_ns = worker_ns(stats.finished_ns);
    r.cpu_ns = worker_ns(stats.cpu_ns);
    r.max_rss = stats.max_rss;
  } else {
    // Nothing measured: the host's view. Its start is on the steady clock; the difference to now
    // carries it over to the system clock.
    r.finished_ns = system_now_ns();
    r.started_ns = r.finished_ns;
    if (call.started != Clock::time_point{})
      r.started_ns -= std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - call.started).count();
  }
  return r;
}

namespace {

/// The pools whose completions this thread is running, as a chain through the callers' stack
/// frames (innermost first): a callback may shut one down (or destroy its executor), and must not
/// wait for the very completions it runs inside. Nothing allocated, no thread-exit destructor.
struct Completing {
  explicit Completing(const Pool* p) : pool(p), outer(innermost) { innermost = this; }
  ~Completing() { innermost = outer; }
  Completing(const Completing&) = delete;
  Completing& operator=(const Completing&) = delete;

  static bool running(const Pool* p) noexcept {
    for (const Completing* c = innermost; c; c = c->outer)
      if (c->pool == p) return true;
    return false;
  }

  const Pool* pool;
  Completing* outer;
  static thread_local Completing* innermost;
};
thread_local Completing* Completing::innermost = nullptr;

/// Pools whose shutdown(wait) could not wait (it was called inside a completion: a callback
/// destroying its executor) and whose manager thread has not finished yet. The process's exit
/// waits for them as ~Executor would have: their calls complete and their trace ends whole.
std::atomic<unsigned> finishing_in_background{0};

void wait_for_background_pools() noexcept {
  // exit() inside a callback: the pool it completes may be one of them, and could not finish.
  if (Completing::innermost) return;
  for (unsigned n = finishing_in_background.load(); n != 0; n = finishing_in_background.load())
    finishing_in_background.wait(n);
}

/// A forked child has none of the parent's manager threads to wait for.
void forget_background_pools() noexcept { finishing_in_background.store(0); }
const int fork_handler_registered = ::pthread_atfork(nullptr, nullptr, &forget_background_pools);

}  // namespace

void Pool::exit_waits_for_one_more() {
  (void)fork_handler_registered;
  static const int registered = std::atexit(&wait_for_background_pools);
  if (registered != 0) return;  // the exit cannot wait: nothing to count
  finishing_in_background.fetch_add(1);
}

void Pool::exit_waits_for_one_less() noexcept {
  finishing_in_background.fetch_sub(1);
  finishing_in_background.notify_all();
}

void Pool::complete(Completions& done) {
  if (done.empty()) return;
  Completing mark(this);
  count_outcomes(done);
  {
    // Every state of the batch is set before any callback runs: one that waits for another call
    // of the batch finds it done (it waited for ever in the thread that was to set it).
    StateBase::Deferred later;
    for (auto& c : done) {
      RunRecord* run = c.run.ran ? &c.run : nullptr;
      if (c.error) {
        c.state->set_error(c.error, run, &later);
      } else {
        c.state->set_payload(std::move(c.payload), c.offset, run, &later);
      }
    }
  }
  std::size_t n = done.size();
  done.clear();
  std::lock_guard lock(mu_);
  outstanding_ -= std::min(outstanding_, n);
  if (shutdown_ && outstanding_ == 0) poller_.wake();
  changed_.notify_all();
}

// ---- waiting and cancelling ------------------------------------------------------------------

namespace {

/// The pool whose manager thread this is, if it is one.
thread_local const Pool* managed_here = nullptr;

/// Manager threads waiting, in a callback or continuation, for another pool's call that only that
/// pool's manager can finish now (queued there): the waiter's pool -> the pool it waits on. Two
/// executors whose callbacks each waited for a call of the other hung for good, each manager
/// waiting for the other to send its call (an audit: every run with two callbacks each). The
/// manager whose wait closes a cycle is told (std::logic_error) instead: its callback ends, its
/// manager goes on, and the others' waits end. As the rule for a wait on the executor's own
/// queued call, it reads the calls' state when the wait begins: another thread reading one of
/// those pools' workers (a get() of a call behind) sends queued calls too, and could have ended
/// the cycle in time: the wait then fails where it would have completed (a review's case).
class ManagersWaiting {
 public:
  ManagersWaiting() = default;
  ManagersWaiting(const ManagersWaiting&) = delete;
  ManagersWaiting& operator=(const ManagersWaiting&) = delete;
  ~ManagersWaiting() { leave(); }
  /// `waiter`'s manager waits for a call of `on` that `on`'s manager must finish; throws when
  /// `on`'s manager waits, directly or through others, for `waiter`'s.
  void enter(const Pool* waiter, const Pool* on, const std::string& task) {
    if (entered_) return;
    std::lock_guard lock(mu());
    auto& edges = waits();
    // A manager may wait in a callback run by a wait of its own (nested): several edges from one
    // pool, each its own entry. Every pool reachable from `on` is looked at once.
    std::vector<const Pool*> next{on}, seen;
    while (!next.empty()) {
      const Pool* p = next.back();
      next.pop_back();
      if (p == waiter)
        throw std::logic_error("ferry: a callback or then() continuation of one executor waits for call '" + task +
                               "' of another executor, whose own callback waits, directly or through others, for "
                               "a call of the first: each executor's thread waits for the other's. Chain the calls "
                               "with then(), or wait outside callbacks");
      if (std::find(seen.begin(), seen.end(), p) != seen.end()) continue;
      seen.push_back(p);
      for (auto [it, end] = edges.equal_range(p); it != end; ++it) next.push_back(it->second);
    }
    edge_ = edges.emplace(waiter, on);
    entered_ = true;
  }
  void leave() noexcept {
    if (!entered_) return;
    std::lock_guard lock(mu());
    waits().erase(edge_);
    entered_ = false;
  }

 private:
  static std::mutex& mu() {
    static std::mutex* m = new std::mutex;  // never destroyed: a manager may wait during exit
    return *m;
  }
  using Edges = std::multimap<const Pool*, const Pool*>;
  static Edges& waits() {
    static auto* w = new Edges;
    return *w;
  }
  Edges::iterator edge_;  // while entered_
  bool entered_ = false;
};

}  // namespace

void Pool::managed_on_this_thread() const noexcept { managed_here = this; }

void Pool::wait(StateBase& state, std::optional<Clock::time_point> deadline) {
  if (forked()) [[unlikely]] {
    // Its result would come to the parent, on the parent's channel.
    state.set_error(forked_error());
    return;
  }
  // A callback or a then() continuation runs on the manager thread, which sends queued calls,
  // reads results and handles dead workers: a wait there for a call only it could finish stopped
  // the whole executor for good (and its destructor with it). Told instead (read_own_result); a
  // wait with a deadline returns at once (StateBase::wait_until then does not block either:
  // progress() says never), where it stopped the executor until its deadline to no avail. A call
  // whose worker's channel another thread reads is finished by that thread, or read here once it
  // lets go.
  const bool on_manager = manager_.on_this_thread();
  // Another pool's manager, in a callback, waiting for good: it waits here, where a wait that
  // closes a cycle of managers is told (ManagersWaiting).
  const Pool* const other_manager = !deadline && managed_here && managed_here != this ? managed_here : nullptr;
  ManagersWaiting waiting;
  for (;;) {
    bool needs_manager = false;
    const bool here_done = read_own_result(state, deadline, on_manager, &needs_manager);
    if (here_done && !(other_manager && needs_manager && !state.ready())) return;
    // Entered only while this pool's manager must act: a call sent meanwhile (a submit on another
    // thread dispatched it) is read here, and this wait no longer holds anyone.
    if (other_manager && needs_manager) {
      waiting.enter(other_manager, this, state.task());
    } else {
      waiting.leave();
    }
    auto until = Clock::now() + std::chrono::milliseconds(1);
    if (deadline) until = std::min(until, *deadline);
    if (state.block_until(until)) return;
    if (deadline && Clock::now() >= *deadline) return;
  }
}

Progress Pool::progress(StateBase& state) {
  if (forked()) return Progress::here;  // wait() fails it at once
  if (!manager_.on_this_thread()) return Progress::elsewhere;
  std::lock_guard lock(mu_);
  auto call = dispatcher_.find(state.call_id());
  if (!call) return Progress::elsewhere;  // finished: the thread that took it completes it
  if (!call->lane) return Progress::never;  // queued: the manager sends it
  auto wit = workers_.find(call->lane->serial);
  if (wit == workers_.end() || !wit->second->alive() || !wit->second->channel_open) return Progress::never;
  return Progress::here;  // read by wait() on this thread, or by the thread reading its channel
}

bool Pool::read_own_result(StateBase& state, std::optional<Clock::time_point> deadline, bool on_manager,
                           bool* needs_manager) {
  auto cannot_finish = [&] {
    if (needs_manager) *needs_manager = true;
    if (on_manager && !deadline && !state.ready())
      throw std::logic_error("ferry: a callback or then() continuation of this executor waits for its call '" +
                             state.task() +
                             "', which has not finished: the executor's own thread runs the callback, and would "
                             "wait for itself. Chain the call with then(), or wait outside callbacks");
    return true;
  };
  SlotPtr w;
  double service_us;
  {
    std::lock_guard lock(mu_);
    auto call = dispatcher_.find(state.call_id());
    if (!call) return true;  // finished: the thread that took it completes it
    if (!call->lane) return cannot_finish();
    auto wit = workers_.find(call->lane->serial);
    if (wit == workers_.end() || !wit->second->alive() || !wit->second->channel_open) return cannot_finish();
    w = wit->second;
    service_us = dispatcher_.service_us();
  }
  // Read our own result off the channel instead of waiting for the manager to do it and wake
  // us: on these VMs each cross-vCPU wake-up costs ~75 µs, the price of the whole round trip.
  auto lease = ChannelLease::for_waiter(*w, poller_);
  if (!lease) return !on_manager;  // someone else reads this channel; they will complete us
  auto spin = std::chrono::microseconds(
      service_us < 500 ? static_cast<long>(std::min(3 * service_us, 300.0)) : 0);
  auto spin_until = Clock::now() + spin;
  Completions done;
  std::string relayed;
  while (!state.ready()) {
    // A relaying backend (MPI) moves this worker's frames in this thread, and may hand over
    // those for us instead of writing them on the channel: they come before what is on it.
    w->process->relay_and_hand_over(relayed);
    if (!relayed.empty()) take_relayed(*w, relayed, done);
    bool alive = read_available(*w, done);
    if (!done.empty()) {
      // Completions run callbacks: never with the channel held (a callback may wait on another
      // call of this very worker).
      lease.release();
      complete(done);
      if (state.ready()) return true;
      if (!lease.retake()) return !on_manager;
      continue;
    }
    if (!alive) break;
    auto now = Clock::now();
    if (deadline && now >= *deadline) break;
    if (now < spin_until) {
      ::sched_yield();  // the worker may share this vCPU: let it run
      continue;
    }
    w->process->relay_stopped();
    pollfd p[2] = {{w->sock.get(), POLLIN, 0}, {w->exit_fd.get(), POLLIN, 0}};
    int timeout = -1;
    if (deadline) {
      // Clamped: a far deadline (time_point::max()) must not overflow into a short timeout.
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(*deadline - now).count();
      timeout = static_cast<int>(std::min<decltype(ms)>(ms, 60'000));
    }
    int r = ::poll(p, w->exit_fd ? 2 : 1, timeout);
    if (r < 0 && errno != EINTR) break;
    if (r > 0 && (p[1].revents & POLLIN) && !(p[0].revents & (POLLIN | POLLHUP))) break;
  }
  lease.release();
  complete(done);
  return cannot_finish();  // its worker died: the manager would fail or retry the call
}

bool Pool::cancel(StateBase& state, bool kill_running) {
  if (forked()) return false;
  Completions done;
  {
    std::lock_guard lock(mu_);
    // Another cancel() agreed while this one waited for the lock: the call ends with its
    // CancelledError (a queued one is no longer found).
    if (state.cancel_agreed()) return true;
    auto call = dispatcher_.find(state.call_id());
    // Finished: whoever took its outcome (the manager or a thread waiting in get() reading its
    // result, its worker's death settled, a shutdown that kills) did so under this lock, and
    // completes the state with it.
    if (!call) return false;
    if (!call->lane) {
      if (!dispatcher_.unqueue(call)) return false;
      state.agree_cancel();
      auto error = std::make_exception_ptr(
          CancelledError("task '" + call->ref->display + "' was cancelled before it started"));
      finish_locked(call, done, error);
      if (trace_) trace_ended_locked({call}, error);
    } else {
      WorkerSlot& w = *workers_.at(call->lane->serial);
      // A call queued behind another in the worker's pipeline cannot be taken back without
      // killing the innocent running one: only the running call can be stopped. (A worker gets
      // calls once started and past its initializer: its front call runs.)
      const Call* front = w.lane.in_flight.empty() ? nullptr : w.lane.in_flight.front().get();
      if (!kill_running || front != call.get()) return false;
      // Its worker is being killed already for what the call did (its deadline, a limit, a
      // malformed frame): the call ends with that error, not as cancelled.
      if (w.kill_error) return false;
      state.agree_cancel();
      // Nothing the worker sends from now on counts (kill_worker_locked marks it discarding),
      // this call's result included: it may be in the socket already, or read by a thread (the
      // manager, or one waiting in get()) that has not handed it over yet (handle_result looks
      // under this lock). Taken, it ended a call cancel() had said true for with its value, and
      // the worker was killed for nothing.
      w.killed_as_asked = true;
      kill_worker_locked(w, std::make_exception_ptr(CancelledError(
                                "task '" + call->ref->display + "' was cancelled while running: its worker " +
                                std::to_string(w.pid) + " was killed")));
      // The future ends now, as concurrent.futures' does when cancel() says true: it waited for
      // the worker's death to be settled (cancelled() and ready() false, running() true for a
      // while after the true answer). The call stays in its lane until then, which settles the
      // worker's other calls and the trace's slice, and completes nothing more.
      completion_locked(*call, done, w.kill_error).run = run_record(*call, w, {});
      call->completed = true;
      ++ended_in_lanes_;
    }
  }
  complete(done);
  return true;
}

// ---- stats and trace --------------------------------------------------------------------------

void Pool::count_outcomes(const Completions& done) {
  std::size_t ok = 0;
  for (const auto& c : done) {
    if (c.error) {
      count_failed(c.error);
    } else {
      ++ok;
    }
  }
  if (ok) completed_.fetch_add(ok, std::memory_order_release);
}

void Pool::count_failed(const std::exception_ptr& error) {
  const auto type = Trace::error_type(error);  // a rethrow: failures only
  {
    std::lock_guard lock(failures_mu_);
    if (auto it = failed_by_type_.find(type); it != failed_by_type_.end()) {
      ++failed_;
      ++it->second.count;
      return;
    }
  }
  std::string name = Trace::error_type_name(type);  // a type's first failure: demangled unlocked
  std::lock_guard lock(failures_mu_);
  ++failed_;
  auto& entry = failed_by_type_[type];
  if (entry.name.empty()) entry.name = std::move(name);
  ++entry.count;
}

ExecutorStats Pool::stats() const {
  ExecutorStats s;
  // The ends first: a call leaves the dispatcher (queued, running) under mu_ before it is counted
  // as completed or failed, so reading in this order never counts a call twice; it may count one
  // in neither for a moment (ExecutorStats says so).
  s.completed = completed_.load(std::memory_order_acquire);
  {
    const auto lock = lock_unless_forked(failures_mu_);
    s.failed = failed_;
    for (const auto& [type, failed] : failed_by_type_) s.failed_by_type[failed.name] += failed.count;
  }
  {
    const auto lock = lock_unless_forked(mu_);
    s.submitted = counts_.submitted;
    // A kill-cancelled call is in its lane until its worker's death is settled: counted as
    // failed already, neither running nor queued.
    s.running = running_locked();
    s.queued = dispatcher_.unfinished() - dispatcher_.busy_lanes();
    s.workers_alive = counts_.workers_alive();
    s.workers_started = counts_.workers_started;
    s.workers_crashed = counts_.workers_crashed;
    s.workers_killed = counts_.workers_killed;
    s.workers_recycled = counts_.workers_recycled;
    s.recycled_by_reason = counts_.recycled_by_reason;
    s.workers_stopped = counts_.workers_stopped;
    s.bytes_sent = counts_.bytes_sent;
    s.bytes_received = counts_.bytes_received;
  }
  s.uptime = Clock::now() - created_;
  return s;
}

void Pool::trace_counters_locked(Trace::Batch& t, std::int64_t ts) const {
  t.counters(dispatcher_.unfinished() - dispatcher_.busy_lanes(), running_locked(), counts_.workers_alive(), ts);
}

void Pool::trace_ran_locked(const Call& call, const WorkerSlot& w, const protocol::RunStats* stats,
                            std::uint64_t result_bytes, const std::exception_ptr& error, Clock::time_point now) {
  Trace::Slice s;
  s.tid = w.serial;
  s.items = call.items;
  s.first_input = call.first_input;  // no_input is SIZE_MAX: "not a map chunk" in both
  s.arg_bytes = call.args.size();
  s.result_bytes = result_bytes;
  const std::int64_t queued = trace_->at(call.queued_at);
  const std::int64_t read = trace_->at(now);
  if (stats && stats->started_ns != 0) {
    // The worker's own times (its system clock); on another node with another clock they may not
    // fit the host's view: the slice is then moved to end when the host read the result.
    s.start = trace_->from_unix(worker_ns(stats->started_ns));
    s.end = trace_->from_unix(worker_ns(stats->finished_ns));
    if (s.end > read) {
      s.start -= s.end - read;
      s.end = read;
    }
  } else {
    // Nothing measured (it died, or was killed): from when it became the running call.
    s.start = call.started != Clock::time_point{} ? trace_->at(call.started) : read;
    s.end = read;
  }
  s.start = std::max(s.start, queued);
  s.end = std::max(s.end, s.start);
  std::optional<Trace::ErrorText> text;
  if (error) text = Trace::describe(error);
  Trace::Batch t(*trace_);
  t.slice({call.id, call.ref->display}, s, text ? &*text : nullptr);
  trace_counters_locked(t, read);
}

void Pool::trace_ended_locked(const std::vector<std::shared_ptr<Call>>& calls, const std::exception_ptr& error) {
  const Trace::ErrorText text = Trace::describe(error);  // once for all: a queue may be long
  const std::int64_t ts = trace_->now();
  Trace::Batch t(*trace_);
  for (const auto& c : calls) t.call_ended({c->id, c->ref->display}, text, ts);
  trace_counters_locked(t, ts);
}

// ---- workers and control ---------------------------------------------------------------------

void Pool::kill_worker_locked(WorkerSlot& w, std::exception_ptr error_for_running_call) {
  if (!w.alive()) return;
  // A kill that blames the running call (its deadline, a limit, the sandbox, a cancel): nothing
  // the worker sends from now on counts. A result read after the decision was taken, and the
  // error then went to the call the worker ran when its death was settled: the next of its
  // pipeline, which had not done it. That call goes back to the queue instead.
  if (error_for_running_call) w.discarding = true;
  if (!w.kill_error) w.kill_error = std::move(error_for_running_call);
  w.retire(WorkerSlot::Retired::killed);
  debug_log("killing worker %d", w.pid);
  signal_kill_locked(w);
}

void Pool::signal_kill_locked(WorkerSlot& w) {
  w.kill_sent = true;
  w.process->kill();
}

void Pool::fail_queue_locked(std::exception_ptr error, Completions& done) {
  auto calls = dispatcher_.take_queue();
  for (auto& c : calls) finish_locked(c, done, error);
  if (trace_ && !calls.empty()) trace_ended_locked(calls, error);
}

bool Pool::finished_locked() const {
  return shutdown_ && workers_.empty() && outstanding_ == 0;
}

void Pool::shutdown(const ShutdownOptions& options) {
  // A forked child's copy: nothing of it runs here to wait for, and its workers are the parent's.
  if (forked()) return;
  // Alive until this returns: a callback it completes (cancel_futures, kill_workers) may destroy
  // the executor, leaving the manager thread the last owner, which freed the pool at its end
  // while this thread still waited on it.
  const std::shared_ptr<Pool> self = shared_from_this();
  launcher_->shutting_down();  // with no lock of the pool held: it may take the backend's own
  Completions done;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    changed_.notify_all();  // warm_up
    if (options.cancel_futures && !killed_) {
      // Only the queue: a call written to a worker behind its running one cannot be taken back
      // (Pool::cancel), and runs.
      auto calls = dispatcher_.take_queue();
      for (auto& c : calls) {
        if (c->state) c->state->agree_cancel();
        auto error = std::make_exception_ptr(CancelledError(
            "task '" + c->ref->display + "' was cancelled before it started: the executor was shut down with "
                                         "cancel_futures=true"));
        finish_locked(c, done, error);
        if (trace_) trace_ended_locked({c}, error);
      }
    }
    if (options.kill_workers && !killed_) {
      killed_ = true;
      auto error = std::make_exception_ptr(CancelledError(
          "ferry: the executor was shut down with kill_workers=true before this task completed"));
      fail_queue_locked(error, done);
      const auto now = Clock::now();
      for (auto& [_, w] : workers_) {
        auto calls = dispatcher_.take_all(w->lane);
        for (auto& c : calls) {
          if (c->completed) {
            forget_ended_locked(*c);  // kill-cancelled: its future ended with that
          } else {
            finish_locked(c, done, error);
          }
        }
        if (trace_ && !calls.empty()) {
          // The first was running on the worker (its slice ends now), unless the worker was
          // still in its initializer; the rest never started.
          const bool ran = !w->lane.initializing;
          if (ran) trace_ran_locked(*calls.front(), *w, nullptr, 0, error, now);
          trace_ended_locked({calls.begin() + (ran ? 1 : 0), calls.end()}, error);
        }
        if (w->alive()) w->killed_as_asked = true;
        kill_worker_locked(*w, nullptr);
      }
    }
  }
  complete(done);
  poller_.wake();
  // From a callback (on the manager thread, or any thread completing this pool's calls: a get()
  // reads its own result, cancel() completes a queued call) the pool finishes in the background:
  // waiting there would wait for the completion that runs the callback.
  if (!options.wait) return;
  if (manager_.on_this_thread() || Completing::running(this)) {
    std::lock_guard lock(mu_);
    // Counted once, and only while the manager thread still has to read the mark (it does under
    // mu_, when it sees finished_).
    if (!finished_ && !exit_waits_) {
      exit_waits_for_one_more();
      exit_waits_ = true;
    }
    return;
  }
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return finished_; });
  lock.unlock();
  manager_.join();
}

void Pool::resize(std::size_t n) {
  if (n == 0) throw std::invalid_argument("ferry: max_workers must be greater than 0");
  if (n > max_pool_size)
    throw std::invalid_argument("ferry: max_workers " + std::to_string(n) +
                                " is more than ferry supports (" + std::to_string(max_pool_size) + ")");
  if (forked()) std::rethrow_exception(forked_error());
  std::lock_guard lock(mu_);
  if (shutdown_) throw BrokenProcessPool::shut_down();
  max_workers_ = n;
  std::vector<WorkerSlot*> active;
  for (auto& [_, w] : workers_)
    if (w->accepts_work()) active.push_back(w.get());
  if (active.size() > n) {
    // Retire the least busy; their in-flight calls finish first, then they are told to exit. In
    // a sandbox, those lowered to a call's own limits before any other (Lane::lowered: they can
    // take no call above them, where the workers kept take every call): keeping one, the next
    // call with the executor's limits retired it and started another.
    std::stable_sort(active.begin(), active.end(), [](WorkerSlot* a, WorkerSlot* b) {
      if (a->lane.lowered.has_value() != b->lane.lowered.has_value()) return a->lane.lowered.has_value();
      return a->lane.in_flight.size() < b->lane.in_flight.size();
    });
    for (std::size_t i = 0; i < active.size() - n; ++i) active[i]->retire(WorkerSlot::Retired::resize);
  }
  changed_.notify_all();  // warm_up counts up to max_workers
  poller_.wake();
}

bool Pool::warm_up(Clock::time_point deadline) {
  if (forked()) std::rethrow_exception(forked_error());
  {
    std::lock_guard lock(mu_);
    if (shutdown_) throw BrokenProcessPool::shut_down();
    started_ = true;
    idle_exited_ = 0;
  }
  poller_.wake();
  std::unique_lock lock(mu_);
  auto all_up = [&] {
    // Up and past the initializer: ready to run a call.
    auto up = std::count_if(workers_.begin(), workers_.end(),
                            [](const auto& kv) { return kv.second->up() && !kv.second->lane.initializing; });
    // A remote backend may have fewer places than max_workers (an MPI job that lost a rank, or
    // whose other ranks another executor holds).
    return static_cast<std::size_t>(up) >= std::min(max_workers_, launcher_->available());
  };
  // An initializer that failed broke the pool, starting workers failed (started_ false again:
  // initializers that end their workers too) or the pool shut down: no more workers will be up.
  auto done = [&] { return broken_ || shutdown_ || (spawn_error_ && !started_) || all_up(); };
  if (manager_.on_this_thread() && !done()) {
    // A callback: the thread that starts the workers is this one.
    if (deadline == Clock::time_point::max())
      throw std::logic_error("ferry: warm_up() without a timeout inside a callback or then() continuation of "
                             "this executor would wait for itself: its own thread starts the workers");
    return false;
  }
  if (deadline == Clock::time_point::max()) {
    changed_.wait(lock, done);
  } else {
    changed_.wait_until(lock, deadline, done);
  }
  return !broken_ && !shutdown_ && all_up();
}

std::size_t Pool::max_workers() const {
  if (forked()) return max_workers_;  // no lock: a thread of the parent may have held it
  std::lock_guard lock(mu_);
  return max_workers_;
}

std::vector<int> Pool::worker_pids() const {
  if (forked()) return {};  // they are the parent's workers, not this process's
  std::lock_guard lock(mu_);
  std::vector<int> out;
  for (const auto& [_, w] : workers_)
    if (w->greeted && w->alive()) out.push_back(w->pid);
  return out;
}

bool Pool::is_shutdown() const {
  if (forked()) return shutdown_;  // no lock: a thread of the parent may have held it
  std::lock_guard lock(mu_);
  return shutdown_;
}

std::exception_ptr Pool::broken() const {
  if (forked()) return forked_error();
  std::lock_guard lock(mu_);
  return broken_;
}

std::unique_lock<std::mutex> Pool::lock_unless_forked(std::mutex& m) const {
  // In a forked child nothing else of the pool runs, and a thread of the parent may have held it.
  return forked() ? std::unique_lock<std::mutex>(m, std::defer_lock) : std::unique_lock<std::mutex>(m);
}

std::exception_ptr Pool::forked_error() const {
  return std::make_exception_ptr(BrokenProcessPool(
      "ferry: this executor belongs to process " + std::to_string(owner_pid_) + ", of which this process (" +
      std::to_string(::getpid()) + ") is a fork: its workers answer the parent only (make a new Executor here)"));
}

}  // namespace ferry::detail
