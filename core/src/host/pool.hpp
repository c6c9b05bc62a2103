// SPDX-License-Identifier: BSD-3-Clause
// The process pool behind ferry::Executor (mechanism; the reusable singleton is policy elsewhere).
//
// The data-flow picture is at the top of manager.cpp.
//
// Invariants (see docs/design.md):
//  * Calls on a worker run in send order and a worker answers each before starting the next, so
//    on death the oldest unanswered call is the one that was running; the rest never started and
//    go back to the front of the queue.
//  * Lock order: Worker::read_mu before Pool::mu_. States are completed (and callbacks run) with
//    no lock held.
//  * A clean worker exit is announced by a bye frame; anything else is a crash.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include <ferry/executor.hpp>
#include <ferry/detail/export.hpp>
#include <ferry/plugin_index.hpp>

#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "platform/debug.hpp"
#include "platform/spawn.hpp"

namespace ferry::detail {

/// A worker started by another launcher (ferry::mpi): how the pool watches, ends and reaps it.
class RemoteWorker {
 public:
  virtual ~RemoteWorker() = default;
  /// Readable once the worker has ended; status() then says how.
  virtual int exit_fd() const = 0;
  /// Ends it now (the pool's SIGKILL).
  virtual void kill() = 0;
  virtual ExitStatus status() = 0;
};

/// Starts workers elsewhere. A backend library registers one under a name (ExecutorOptions::backend).
class RemoteLauncher {
 public:
  virtual ~RemoteLauncher() = default;
  struct Launched {
    Fd channel;  // the pool's end of the worker's channel (frames as with a local worker)
    std::shared_ptr<RemoteWorker> worker;
  };
  /// A new worker running `ferry-worker <args>` with `env` overrides; nullopt and `why` when none
  /// can be started now.
  virtual std::optional<Launched> launch(const std::vector<std::string>& args,
                                         const std::vector<std::pair<std::string, std::string>>& env,
                                         std::string& why) = 0;
  /// Most workers it can run now (SIZE_MAX: no limit); may shrink as remote ranks die.
  virtual std::size_t capacity() const = 0;
};
using LauncherFactory = std::function<std::shared_ptr<RemoteLauncher>(const ExecutorOptions&)>;
/// Makes backend `name` available to ExecutorOptions::backend (called by ferry::mpi::enable()).
FERRY_INTERNAL_API void register_backend(const std::string& name, LauncherFactory factory);

/// The launcher of options.backend, or nullptr when no such backend is registered.
std::shared_ptr<RemoteLauncher> make_launcher(const ExecutorOptions& options);

/// More workers than this is a mistake (a typo in -j), not a pool: refused with invalid_argument.
inline constexpr std::size_t max_pool_size = 4096;

/// A task reference as sent to workers (one Define frame per worker, then its number).
struct RefEntry {
  protocol::Define define;
  Buffer frame;         // encoded define frame
  std::string display;  // task name for messages
  std::string version;  // identity of the library file when resolved; "" = not tracked
  std::uint64_t generation = 0;  // counts the versions of this library seen by the pool
};

struct Worker;

/// One submission (a single call, or a map chunk of `items` calls).
struct Call {
  std::uint64_t id = 0;
  std::shared_ptr<StateBase> state;
  std::shared_ptr<const RefEntry> ref;
  Buffer args;
  std::uint32_t items = 1;
  std::uint8_t flags = 0;  // task frame flags (JSON)
  unsigned retries = 0;
  Clock::duration deadline{0};  // 0 = none
  Clock::time_point started{};  // when it became the running call of its worker
  Worker* worker = nullptr;     // set while in flight (under Pool::mu_)
};

struct Worker {
  std::uint64_t serial = 0;
  pid_t pid = -1;  // a remote worker's pid arrives with its hello
  std::shared_ptr<RemoteWorker> remote;  // set when a backend launcher started it
  Fd sock;      // host end of the channel, non-blocking; EPOLLIN registration
  Fd sock_out;  // dup of sock: EPOLLOUT registration, armed only while the outbox is not empty
  Fd pidfd;
  Clock::time_point spawned{};

  std::mutex read_mu;  // whoever holds it reads the channel (manager or a waiting thread)
  FrameReader reader{protocol::max_control_frame};  // under read_mu
  bool garbage = false;  // it sent a malformed frame: it is being killed, its bytes are dropped

  // ---- under Pool::mu_ ----
  Outbox outbox;
  std::vector<bool> announced;  // ref ids already defined on this worker
  std::unordered_map<std::string, std::uint64_t> libraries;  // path → generation sent to it
  std::deque<std::shared_ptr<Call>> in_flight;
  bool hello = false;
  bool retiring = false;       // takes no new work; told to shut down once idle
  bool shutdown_sent = false;
  bool bye = false;            // announced a clean exit
  protocol::ByeReason bye_reason{};
  bool eof = false;
  bool dead = false;           // reaped; being removed
  bool out_armed = false;
  bool handshake_killed = false;  // killed for not saying hello in time
  Clock::time_point kill_at = Clock::time_point::max();  // SIGKILL if still alive then
  std::exception_ptr kill_error;  // what the running call gets when we killed the worker
  Clock::time_point last_result{};
};

/// OOM-kill counters: of this process's memory cgroup (v2 memory.events or v1
/// memory.oom_control) and of the whole system (/proc/vmstat); -1 when unknown.
struct OomCounts {
  long cgroup = -1;
  long system = -1;
  static OomCounts read();
  /// True when a counter known in both grew: a SIGKILL in between was most likely the OOM killer.
  bool grew_since(const OomCounts& before) const;
};

/// A completed state and what completes it; run with no lock held.
struct Completion {
  std::shared_ptr<StateBase> state;
  Buffer payload;
  std::size_t offset = 0;
  std::exception_ptr error;
};
using Completions = std::vector<Completion>;

class Pool final : public StateOwner, public std::enable_shared_from_this<Pool> {
 public:
  explicit Pool(ExecutorOptions options);
  ~Pool() override;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// Starts the manager thread (after construction: it holds a shared_ptr to the pool).
  void start();

  void submit(const Target& target, Buffer args, std::uint32_t items,
              std::shared_ptr<StateBase> state, const SubmitOptions& options,
              std::uint8_t frame_flags = 0);
  void shutdown(const ShutdownOptions& options);
  void resize(std::size_t max_workers);
  bool warm_up(Clock::duration timeout);

  std::size_t max_workers() const;
  const ExecutorOptions& options() const noexcept { return options_; }
  std::vector<int> worker_pids() const;
  bool is_shutdown() const;
  /// Non-null once the pool cannot run tasks any more (e.g. its initializer fails).
  std::exception_ptr broken() const;

  // StateOwner
  void wait(StateBase& state, std::optional<Clock::time_point> deadline) override;
  bool cancel(StateBase& state, bool kill_running) override;

 private:
  // ---- submission (pool.cpp) ----
  std::shared_ptr<const RefEntry> resolve(const Target& target);
  std::shared_ptr<const RefEntry> intern_ref(protocol::RefKind kind, const std::string& library,
                                             const std::string& name, std::uint64_t fingerprint,
                                             std::string_view signature, std::string display,
                                             std::string version = {});
  /// False when the worker has an older version of the call's library loaded (then it must be
  /// retired); a newer one runs older calls too (the old file is gone).
  static bool can_run(const Worker& w, const Call& call);
  void dispatch_locked();
  void send_locked(Worker& w, const std::shared_ptr<Call>& call);
  void flush_locked(Worker& w);
  std::size_t depth_locked() const;

  // ---- reading (pool.cpp) ----
  /// Reads what is available; returns false at EOF. Caller holds w.read_mu.
  bool read_available(Worker& w, Completions& done);
  void handle_frames(Worker& w, Completions& done);
  void handle_result(Worker& w, Frame& f, Completions& done);
  /// Kills a worker that sent bytes that are not ferry frames; its running call says why.
  void reject_garbage(Worker& w, const char* what);
  std::exception_ptr remote_error(const Call& call, const Worker& w, const protocol::ResultHead& h,
                                  const protocol::ErrorBody& e) const;
  void finish_locked(const std::shared_ptr<Call>& call, Completions& done);
  void complete(Completions& done);
  void arm_read(Worker& w, bool on);
  /// A waiting thread gives a worker's channel back to the manager (unlock, then re-arm).
  void release_channel(Worker& w, std::unique_lock<std::mutex>& read_lock);
  void arm_write_locked(Worker& w);

  // ---- manager (manager.cpp) ----
  void manager_loop();
  void wake();
  void on_readable(const std::shared_ptr<Worker>& w);
  void on_writable(const std::shared_ptr<Worker>& w);
  void on_exit(const std::shared_ptr<Worker>& w);
  void maintain(Completions& done);
  void spawn_one(Completions& done);
  void spawn_remote(Completions& done);
  /// BrokenProcessPool for workers that cannot be started: with the worker path and its fix for
  /// local workers, with the backend for remote ones.
  std::exception_ptr start_failure(const std::string& why) const;
  /// Adds a started worker to the pool: epoll registrations, initializer, dispatch.
  void register_worker(const std::shared_ptr<Worker>& w);
  void fail_queue_locked(std::exception_ptr error, Completions& done);
  void kill_worker_locked(Worker& w, std::exception_ptr error_for_running_call);
  /// SIGKILL for a local worker, the backend's kill for a remote one.
  static void signal_kill(Worker& w);
  std::vector<std::string> worker_args() const;
  std::shared_ptr<Worker> worker_by_serial(std::uint64_t serial);
  int next_timeout_ms();
  bool finished_locked() const;
  std::size_t active_locked() const;

  ExecutorOptions options_;
  bool allow_unsafe_ = false;  // options_.allow_unsafe_plugins or FERRY_ALLOW_UNSAFE_PLUGINS
  std::filesystem::path worker_path_;
  std::vector<std::string> worker_env_;
  std::uint64_t max_frame_;
  std::chrono::microseconds worker_spin_;
  std::size_t forced_depth_ = 0;  // FERRY_PIPELINE_DEPTH

  Fd epoll_;
  Fd wake_fd_;
  std::thread manager_;
  std::atomic<std::thread::id> manager_id_{};
  std::mutex join_mu_;

  mutable std::mutex mu_;
  std::condition_variable changed_;  // shutdown waiters, warm_up
  std::map<std::uint64_t, std::shared_ptr<Worker>> workers_;
  std::deque<std::shared_ptr<Call>> queue_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Call>> calls_;  // every unfinished call
  std::size_t max_workers_;
  std::size_t outstanding_ = 0;  // calls submitted and not yet completed
  std::uint64_t next_call_ = 1;
  std::uint64_t next_serial_ = 1;
  bool started_ = false;          // first submit or warm_up happened
  std::size_t idle_exited_ = 0;   // workers gone for idle timeout, not replaced until work comes
  bool shutdown_ = false;
  bool killed_ = false;
  bool finished_ = false;         // manager loop ended
  unsigned startup_failures_ = 0; // consecutive workers that died before hello
  std::string last_spawn_error_;
  std::exception_ptr broken_;
  std::exception_ptr spawn_error_;  // workers cannot be started; cleared by the next submit
  // Recent per-call service time, which sizes the pipeline; unknown at first: assume long calls.
  double service_ema_us_ = 5000.0;
  OomCounts oom_seen_;

  std::mutex refs_mu_;
  std::map<std::tuple<int, std::string, std::string, std::uint64_t, std::string>, std::shared_ptr<RefEntry>>
      refs_;
  std::uint32_t next_ref_ = 0;
  std::unordered_map<std::string, std::pair<std::string, std::uint64_t>> library_versions_;
  std::shared_ptr<const RefEntry> initializer_;

  std::unique_ptr<PluginIndex> index_;
  std::shared_ptr<RemoteLauncher> launcher_;  // null: local workers (posix_spawn)
};


/// The worker executable: `configured` if given, else the default search (see default_worker_path).
std::filesystem::path find_worker(const std::filesystem::path& configured);


}  // namespace ferry::detail
