// SPDX-License-Identifier: BSD-3-Clause
// The host's MPI hub: one thread that owns every MPI call of the host. It starts node agents
// (MPI_Comm_spawn, or the other ranks of an `mpirun -n N` job), relays each pool worker's frames
// to its agent and back, ships plugins the agents do not have, and watches heartbeats: MPI blocks
// forever on a dead peer, so every call here is non-blocking and silence past the timeout is
// death.
//
//  Pool ── socketpair ── hub thread ══ MPI ══ agent (rank r) ── socketpair ── ferry-worker
//          (frames)       relays,                relays, starts/reaps the
//                         heartbeats,            worker, caches shipped plugins
//                         ships plugins
//
// A pool thread waiting for a result relays in its own thread when it can (relay_in_waiter), and
// frames of up to 64 KiB without a descriptor then skip the socketpair both ways (to_pool,
// take_from_pool), in channel order.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/sockios.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string_view>
#include <thread>

#include <ferry/backend.hpp>
#include <ferry/ferry.hpp>
#include <ferry/mpi.hpp>

#include "platform/config.hpp"
#include "platform/format.hpp"
#include "platform/trust.hpp"
#include "platform/debug.hpp"
#include "platform/spawn.hpp"
#include "plugins/load_dependencies.hpp"
#include "agent.hpp"
#include "pace.hpp"
#include "wire.hpp"

namespace ferry::mpi::detail {

namespace fs = std::filesystem;
namespace proto = ferry::detail::protocol;
using Clock = std::chrono::steady_clock;
using ferry::detail::ExitStatus;
using ferry::detail::Fd;

namespace {

/// Ends a nap of the hub's loop (an eventfd the hub polls; the hub lives until exit).
void signal_event(int fd) {
  std::uint64_t one = 1;
  ssize_t r = ::write(fd, &one, sizeof one);
  (void)r;
}

/// Whether the peer has read every byte written on this Unix stream socket (SIOCOUTQ counts what
/// was sent and is not read yet).
bool peer_read_all(int fd) {
  int n = 0;
  return ::ioctl(fd, SIOCOUTQ, &n) == 0 && n == 0;
}

/// Whether nothing waits to be read on this socket.
bool nothing_to_read(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 && n == 0;
}

// The hub's relay, run by a thread of the pool waiting for a result (Slot::relay) instead of the
// hub's thread, and the pool's frames taken in the pool's thread (Slot::send); defined with the
// Hub below.
class Slot;
void relay_in_waiter(Slot& waiting, std::string& frames);
void waiter_stopped();
bool take_from_pool(Slot& s, std::span<const std::string_view> pieces);

/// A pool worker served by an agent: the hub's end of the pool's channel, and how it ended.
class Slot final : public ferry::LaunchedWorker {
 public:
  Slot(int hub_wake, std::uint64_t executor)
      : owner(executor), hub_wake_(hub_wake), exit_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  int pid() const override { return 0; }  // on another node: its hello tells it
  // Set when an agent takes it, before its worker starts: known by the time the hello arrives.
  int rank() const override { return rank_.load(std::memory_order_acquire); }
  void set_rank(int r) { rank_.store(r, std::memory_order_release); }
  int exit_fd() const override { return exit_.get(); }
  void kill() override {
    kill_requested = true;
    signal_event(hub_wake_);
  }
  ExitStatus status() override {
    std::lock_guard lock(mu);
    return status_;
  }
  void relay_and_hand_over(std::string& frames) override { relay_in_waiter(*this, frames); }
  bool send(std::span<const std::string_view> pieces) override { return take_from_pool(*this, pieces); }
  void relay_stopped() override { waiter_stopped(); }
  /// Whether finish() ran (any thread).
  bool has_ended() {
    std::lock_guard lock(mu);
    return ended;
  }
  /// Records the end once; wakes the pool.
  void finish(ExitStatus st) {
    {
      std::lock_guard lock(mu);
      if (ended) return;
      ended = true;
      status_ = std::move(st);
    }
    signal_event(exit_.get());
  }

  /// Whether its worker is on its way out, so that its rank will be free (hub thread): told to
  /// stop, or sent the pool's shutdown frame (its executor shuts down, or shrinks).
  bool leaving() const {
    return shutdown_sent || stop_sent || told_to_stop != Clock::time_point{} ||
           kill_requested.load(std::memory_order_relaxed);
  }

  const std::uint64_t owner;  // the executor it belongs to (Launcher::owner_)
  Fd channel;  // hub's end
  FrameForwarder from_pool;
  ferry::detail::Outbox to_pool;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;
  // The host's LD_PRELOAD, LD_AUDIT and GCONV_PATH when its executor was made (those env does not
  // name): sent in spawn mode only, where the agent's own are empty (agent_loader_environment).
  std::vector<std::pair<std::string, std::string>> host_loader;
  bool allow_unsafe = false;  // its executor allows unsafe plugins (start_allow_unsafe)
  std::atomic<bool> kill_requested{false};
  std::size_t agent = SIZE_MAX;  // in Hub::agents_, once an agent took it (relay lock)
  bool started = false;  // start sent to its agent
  bool stop_sent = false;
  Clock::time_point told_to_stop{};  // the first tag_stop sent for it (hub thread), or none
  bool ended = false;
  bool shutdown_sent = false;  // the pool's shutdown frame went to its worker (hub thread)
  bool heard = false;  // a frame of its worker came (its first is its hello; to_pool, hub thread)
  // Its end is decided and waits for to_pool to reach the pool's channel (Hub::end_slot, hub
  // thread): nothing more is relayed to its pool.
  bool ending = false;
  std::mutex mu;

 private:
  int hub_wake_;
  ExitStatus status_;
  Fd exit_;
  std::atomic<int> rank_{-1};
};

struct Agent {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  std::size_t index = 0;  // in Hub::agents_ (the hub's epoll set names agents by it)
  bool watched = false;   // its worker's channel is in the hub's epoll set
  bool ready = false;
  bool alive = true;
  int pid = 0;
  std::string host;
  std::shared_ptr<Slot> slot;
  Clock::time_point last_heard = Clock::now();
  Clock::time_point last_sent = Clock::now();
  std::map<std::string, std::string> offered;  // library path → content key offered
  // Content key → a library path offered with it, and how many offers of it the agent may still
  // ask the bytes for (tag_lib_need): each offer is answered once at most, and only with what
  // was offered to this agent.
  std::map<std::string, std::pair<std::string, int>> awaited;
};

/// $FERRY_MPI_WORKER, else the agent installed with this libferry-mpi (relative to it: the build
/// tree mirrors the install tree, so no build path is compiled in).
fs::path agent_path() {
  if (auto v = ferry::detail::Config::read().mpi_worker; !v.empty()) return v;
  Dl_info info{};
  if (::dladdr(reinterpret_cast<const void*>(&agent_path), &info) && info.dli_fname) {
    fs::path candidate = fs::path(info.dli_fname).parent_path() / FERRY_MPI_AGENT_RELATIVE_PATH;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return fs::weakly_canonical(candidate, ec);
  }
  return "ferry-mpi-worker";
}

/// The MPI_Info key of MPI_Comm_spawn whose value ("NAME=value" lines) Open MPI puts into the
/// spawned processes' environment over their launcher's: "env" in Open MPI 4, which Open MPI 5
/// still reads but calls deprecated (saying so at each spawn) for "PMIX_ENVAR".
#if defined(OMPI_MAJOR_VERSION) && OMPI_MAJOR_VERSION >= 5
constexpr const char* agent_environment_key = "PMIX_ENVAR";
#else
constexpr const char* agent_environment_key = "env";
#endif

/// What a spawned agent's loader and glibc load code from ("NAME=value" lines for
/// agent_environment_key), or "" to leave its environment as its launcher has it. Every one of
/// LD_LIBRARY_PATH, LD_PRELOAD, LD_AUDIT, GCONV_PATH and LD_ORIGIN_PATH has a line, whether this
/// process holds it now or not: the launcher (the singleton's orted, or mpirun) keeps the
/// environment of MPI's start, so a variable this process unset since (a preloaded tool removes
/// itself from LD_PRELOAD) reached the agent as the launcher had it, unjudged. The key can set a
/// variable, not remove it:
///  - LD_LIBRARY_PATH: what a worker's keeps (keep_trusted_loader_environment with
///    untrusted_search_directory, as the agent's worker_environment and the local launcher), or
///    /dev/null when nothing is kept or this process has none, which names no directory and never
///    will: an empty value was no better, since mpirun --prefix P (or an Open MPI built to act so
///    by default) puts P/lib before the value with a colon, and P/lib: ends in an empty element,
///    the agent's working directory (the agent's filter of its workers' search path leaves
///    /dev/null out: others can write it). The agent may need it (MPI's own libraries); its
///    directories are judged here, on this node, and what the agent loaded is judged again on
///    its own (untrusted_loaded_library);
///  - LD_ORIGIN_PATH: /dev/null (never kept; a directory, so not empty: $ORIGIN would be "");
///  - LD_PRELOAD, LD_AUDIT and GCONV_PATH: empty, which glibc reads as no entry (/dev/null would
///    be a file to preload, refused with an error at every start). The agent needs none of them,
///    and the files they name were judged on this node while the agent may run on another (a
///    missing file nobody else can create here, under a directory of ours in /tmp, may be one
///    another user can create there). Its workers get this process's values from the start
///    message (Slot::host_loader), judged by the agent on its node (worker_environment).
/// Unsafe plugins allowed by this process's environment (FERRY_ALLOW_UNSAFE_PLUGINS): left as
/// they are. An agent serves any executor's workers, so an executor's allow_unsafe_plugins does
/// not decide it.
std::string agent_loader_environment() {
  if (ferry::detail::unsafe_allowed_by_environment()) return {};
  std::vector<std::string> env = ferry::detail::merged_environment({});
  std::erase_if(env, [](const std::string& e) { return !e.starts_with("LD_LIBRARY_PATH="); });
  ferry::detail::keep_trusted_loader_environment(env, "mpi hub: a spawned agent's environment",
                                                 ferry::detail::untrusted_search_directory,
                                                 ferry::detail::dependency_verdict);
  // Kept entries hold no control character (keep_trusted_loader_environment): one line each.
  return (env.empty() ? std::string("LD_LIBRARY_PATH=/dev/null") : env.front()) +
         "\nLD_ORIGIN_PATH=/dev/null\nLD_PRELOAD=\nLD_AUDIT=\nGCONV_PATH=";
}

/// The variables whose values a spawned agent's workers get from the host (the start message,
/// judged by the agent), where the agent's own are set empty (agent_loader_environment).
constexpr const char* host_loader_variables[] = {"LD_PRELOAD", "LD_AUDIT", "GCONV_PATH"};

class Hub {
 public:
  static Hub& instance() {
    static Hub* hub = new Hub();  // lives until exit: MPI cannot be initialised twice
    return *hub;
  }

  /// Tells the agents to leave and finalises MPI if the hub initialised it; waits for that at
  /// most `limit`. Later launches fail. Idempotent.
  void stop(std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    if (!initialised_) return;  // never started
    if (init_error_.empty()) init_error_ = "ferry's MPI backend was stopped (ferry::mpi::finalize)";
    quit_ = true;
    signal_event(wake_.get());
    stopped_cv_.wait_for(lock, limit, [&] { return stopped_; });
  }

  /// Starts the hub's thread (MPI initialised, heartbeats to the agents of a job of N) if it has
  /// not started. Later launches use it.
  void start() { ensure_started(); }

  /// How many workers can run: in world mode (the other ranks of this job are the agents) the
  /// agents still alive; in spawn mode (a job of one, agents spawned as needed) no limit.
  std::size_t capacity() {
    ensure_started();
    std::lock_guard lock(mu_);
    return world_mode_ ? alive_agents_ : SIZE_MAX;
  }

  /// The last rank declared dead and why ("" when none has been).
  std::string last_death() {
    std::lock_guard lock(mu_);
    return last_death_;
  }

  /// How many workers executor `owner` can have now: in world mode the ranks alive but those
  /// another executor's workers hold (not on their way out); at least one while a rank lives, so
  /// that a worker asked for when every rank is held is refused saying so (assign_waiting).
  /// Counting every live rank for every executor, a second executor given some ranks asked for
  /// workers the first's ranks could not give: each waited for a rank until the pool's handshake
  /// timeout gave it up and was asked for again, and warm_up() waited for them to its timeout.
  std::size_t available(std::uint64_t owner) {
    ensure_started();
    std::lock_guard lock(mu_);
    if (!world_mode_) return SIZE_MAX;
    if (alive_agents_ == 0) return 0;
    std::size_t held = 0;
    for (const auto& h : holders_) {
      if (h.owner == owner || h.leaving || owners_leaving_.count(h.owner)) continue;
      // Ended since the hub last looked: its rank is free (its pool may ask before the hub's
      // thread notes it).
      auto slot = h.slot.lock();
      if (slot && !slot->has_ended()) ++held;
    }
    return std::max<std::size_t>(1, alive_agents_ - std::min(held, alive_agents_));
  }

  /// Executor `owner` shut down (any thread): its workers' ranks will free up.
  void owner_leaving(std::uint64_t owner) {
    std::lock_guard lock(mu_);
    owners_leaving_.insert(owner);
  }

  /// A worker for the executor `owner` (Launcher::owner_).
  std::optional<ferry::Launcher::Launched> launch(
      const std::vector<std::string>& args,
      const std::vector<std::pair<std::string, std::string>>& env,
      const std::vector<std::pair<std::string, std::string>>& host_loader, bool allow_unsafe, std::uint64_t owner,
      std::string& why) {
    ensure_started();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      why = std::string("socketpair: ") + std::strerror(errno);
      return std::nullopt;
    }
    auto slot = std::make_shared<Slot>(wake_.get(), owner);
    slot->channel = Fd(sv[1]);
    ::fcntl(sv[1], F_SETFL, ::fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    slot->args = args;
    slot->env = env;
    slot->host_loader = host_loader;
    slot->allow_unsafe = allow_unsafe;
    {
      std::lock_guard lock(mu_);
      if (!init_error_.empty()) {
        why = init_error_;
        ::close(sv[0]);
        return std::nullopt;
      }
      waiting_.push_back(slot);
    }
    signal_event(wake_.get());
    return ferry::Launcher::Launched{sv[0], slot};
  }

 private:
  Hub() = default;

  void ensure_started() {
    std::unique_lock lock(mu_);
    if (launched_) {
      started_cv_.wait(lock, [&] { return initialised_; });
      return;
    }
    launched_ = true;
    std::thread([this] {
      ::pthread_setname_np(::pthread_self(), "ferry-mpi-hub");
      run();
    }).detach();
    started_cv_.wait(lock, [&] { return initialised_; });
    // Executors made after this point are destroyed before this runs (atexit order).
    std::atexit([] { ferry::mpi::finalize(); });
  }

  void run() {
    int ready = 0;
    MPI_Initialized(&ready);
    int provided = MPI_THREAD_SINGLE;
    if (!ready) {
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      ferry_initialised_mpi() = true;
    } else {
      MPI_Query_thread(&provided);
    }
    // A waiting thread may relay (relay_in_waiter) when MPI may be called from any thread, one at
    // a time: the relay lock keeps them one at a time.
    waiters_relay_ = provided >= MPI_THREAD_SERIALIZED;
    // MPI_Finalize waits for every rank of the job: the host's ranks must take part, or the
    // agents can wait in theirs for good.
    owns_mpi_ = ferry_initialised_mpi();
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // Started by srun, the ranks are clients of Slurm's PMIx server, which kills the whole step
    // when one is lost. Agents that left that server (tag_detach) can die alone; the price is
    // MPI_Finalize, whose fence needs them: only when ferry finalises MPI itself.
    detach_ = size > 1 && owns_mpi_ && under_slurm_pmix();
    {
      std::lock_guard lock(mu_);
      world_mode_ = size > 1;
      if (world_mode_ && rank != 0)
        init_error_ = "ferry's MPI host must be rank 0 (the other ranks serve: ferry::mpi::serve)";
      // A host spawned as a ferry host's agent (FERRY_MPI_WORKER naming a program that does not
      // call serve()) spawns no agents: each would be that program again, spawning its own.
      MPI_Comm parent = MPI_COMM_NULL;
      MPI_Comm_get_parent(&parent);
      if (!world_mode_ && parent != MPI_COMM_NULL && spawned_by_a_ferry_host())
        init_error_ = "this process was started by MPI_Comm_spawn (is FERRY_MPI_WORKER a program of yours? it must "
                      "name ferry-mpi-worker, or a program that calls ferry::mpi::serve() first thing in main()): "
                      "a ferry host spawned by another MPI process spawns no agents of its own";
      if (world_mode_) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        for (int r = 1; r < size; ++r) agents_.push_back(Agent{MPI_COMM_WORLD, r, agents_.size()});
        alive_agents_ = agents_.size();
      }
      initialised_ = true;
    }
    started_cv_.notify_all();
    loop();
  }

  void spawn_agent() {
    MPI_Comm inter = MPI_COMM_NULL;
    int error = 0;
    std::string path = agent_path().string();
    // Open MPI 4.1 blocks forever in MPI_Comm_spawn of a program that does not exist: check first.
    // A bare name is looked up on PATH here, and what is checked below and spawned is the file
    // found (absolute), not a name another lookup could resolve elsewhere.
    auto found = ferry::detail::find_program(path);
    if (!found) {
      std::lock_guard lock(mu_);
      spawn_failure_ = "cannot start ferry's MPI node agent: " + path +
                       " is not an executable file (set FERRY_MPI_WORKER to ferry-mpi-worker)";
      return;
    }
    std::error_code ec;
    if (fs::path absolute = fs::absolute(*found, ec); !ec) path = absolute.string();
    if (std::string why = ferry::detail::untrusted_reason(path); !why.empty() && !ferry::detail::unsafe_allowed_by_environment()) {
      std::lock_guard lock(mu_);
      spawn_failure_ = "refusing to start ferry's MPI node agent: " + why +
                       " (fix the permissions, or set FERRY_ALLOW_UNSAFE_PLUGINS=1)";
      return;
    }
    MPI_Info info;
    MPI_Info_create(&info);
    // The agent's own loader reads the LD_LIBRARY_PATH and LD_PRELOAD its launcher (mpirun, or
    // the singleton's orted, started with this process's environment) gives it: an empty or
    // relative element (the directory it starts in, this process's) or a file or directory
    // another user can write loaded their library into the agent, as our user. It gets what its
    // workers keep (agent_loader_environment).
    const std::string agent_env = agent_loader_environment();
    if (!agent_env.empty()) MPI_Info_set(info, agent_environment_key, agent_env.c_str());
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    char* spawn_argv[] = {const_cast<char*>(spawned_agent_argument), nullptr};
    int rc = MPI_Comm_spawn(path.c_str(), spawn_argv, 1, info, 0, MPI_COMM_SELF, &inter, &error);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS || error != MPI_SUCCESS) {
      std::lock_guard lock(mu_);
      spawn_failure_ = "MPI_Comm_spawn of " + path + " failed (code " + std::to_string(rc) + ")";
      return;
    }
    MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
    agents_.push_back(Agent{inter, 0, agents_.size()});
    std::lock_guard lock(mu_);
    spawn_failure_.clear();
  }

  /// A rank that said hello and runs no worker. One that has not said hello yet gets none: a
  /// rank that joined the job and never said it was given a worker all the same, which never
  /// started; the pool gave it up at its handshake timeout (10 s), and its shutdown waited for
  /// that worker's end until the rank was declared dead at the peer timeout.
  Agent* free_agent() {
    for (auto& a : agents_)
      if (a.alive && a.ready && !a.slot) return &a;
    return nullptr;
  }

  /// Whether a rank of the job will be free for `s` (world mode, every rank taken): one runs a
  /// worker of its own executor (the pool asks for no more workers than there are ranks, so it
  /// replaces one that is leaving: recycled after max_tasks_per_child, or stopping) or a worker
  /// on its way out. Ranks that another executor's workers hold are freed only when that
  /// executor lets them go: a second executor's worker waited for one, the pool gave it up at
  /// its handshake timeout (10 s), and after three the second executor's work failed, 30 s on,
  /// saying nothing of why.
  /// An executor that shut down without waiting (shutdown(wait=false), or replaced by
  /// get_reusable_executor) frees its ranks too: its workers leave as their calls end. Before it
  /// sent them its shutdown frame (after those calls), a new executor's worker was refused at once.
  /// A rank that has not said hello yet will be free once it does (or is refused, at the peer
  /// timeout at the latest: judge_silence).
  bool rank_will_free_up(const Slot& s, const std::set<std::uint64_t>& owners_leaving) const {
    return std::any_of(agents_.begin(), agents_.end(), [&](const Agent& a) {
      if (a.alive && !a.ready && !a.slot) return true;
      return a.alive && a.slot &&
             (a.slot->owner == s.owner || a.slot->leaving() || owners_leaving.count(a.slot->owner));
    });
  }


  void assign_waiting() {
    std::set<std::uint64_t> owners_leaving;
    {
      std::lock_guard lock(mu_);
      while (!waiting_.empty()) {
        unassigned_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      // Executors shut down that hold no rank and wait for none are forgotten: at most as many
      // entries as executors with a worker on a rank.
      std::erase_if(owners_leaving_, [&](std::uint64_t owner) {
        auto holds = [&](const std::shared_ptr<Slot>& s) { return s && s->owner == owner; };
        return std::none_of(agents_.begin(), agents_.end(), [&](const Agent& a) { return holds(a.slot); }) &&
               std::none_of(unassigned_.begin(), unassigned_.end(), holds);
      });
      owners_leaving = owners_leaving_;
    }
    if (unassigned_.empty()) return;
    std::size_t free = 0, alive = 0;
    for (auto& a : agents_) {
      alive += a.alive;
      if (a.alive && !a.slot) ++free;
    }
    // One spawn per agent: each gets a world of its own, so one's death touches no other. At most
    // one per pass: MPI_Comm_spawn blocks this thread until the agent is up (0.4 s here, seconds
    // for an agent slow to start), and the agents already running must be sent their heartbeats
    // and be read between spawns, or they take the host for gone and leave. The slots left wait
    // for the next passes.
    if (free < unassigned_.size() && !world_mode_) spawn_agent();
    bool spawn_failed = false;
    if (!world_mode_) {
      std::lock_guard lock(mu_);
      spawn_failed = !spawn_failure_.empty();
    }
    std::deque<std::shared_ptr<Slot>> still;
    for (auto& s : unassigned_) {
      if (s->kill_requested) {
        ExitStatus st;
        st.detail = "stopped before an MPI rank was free to run it";
        s->finish(st);
      } else if (Agent* a = free_agent()) {
        a->slot = s;
        s->agent = a->index;
        s->set_rank(a->rank);
      } else if (world_mode_ && alive > 0 && rank_will_free_up(*s, owners_leaving)) {
        still.push_back(s);  // wait for it
      } else if (world_mode_ && alive > 0) {
        ExitStatus st;
        st.detail = "no MPI rank (every rank of this job runs a worker of another executor of this process: "
                    "shut that executor down first; a job serves one executor at a time)";
        s->finish(st);
      } else if (!world_mode_ && !spawn_failed) {
        still.push_back(s);  // its agent is spawned at a later pass
      } else {
        ExitStatus st;
        std::lock_guard lock(mu_);
        // In a job of N, the last rank's reason, as its pool would have heard it had this worker
        // been given to that rank: a rank refused at its hello gets no worker (free_agent).
        st.detail = !spawn_failure_.empty()        ? spawn_failure_
                    : world_mode_ && !last_death_.empty() ? last_death_
                    : world_mode_                  ? "every MPI rank of the job has died"
                                                   : "no MPI rank is free to run another worker";
        s->finish(st);
      }
    }
    unassigned_.swap(still);
  }

  /// The workers on ranks, as available() reads them (hub thread, after assignments): whose they
  /// are and whether they are leaving (what only the hub's thread reads).
  void note_holders() {
    holders_spare_.clear();
    for (const auto& a : agents_)
      if (a.alive && a.slot) holders_spare_.push_back({a.slot, a.slot->owner, a.slot->leaving()});
    std::lock_guard lock(mu_);
    holders_.swap(holders_spare_);
  }

  void start_if_ready(Agent& a) {
    auto& s = *a.slot;
    if (s.started || !a.ready) return;
    std::vector<std::string> items = {std::to_string(s.args.size())};
    items.insert(items.end(), s.args.begin(), s.args.end());
    for (const auto& [k, v] : s.env) items.push_back(k + "=" + v);
    // A spawned agent's own are empty: its worker gets the host's, judged by the agent on its
    // node as if given. In world mode the agents have the job's, as the host does.
    if (!world_mode_)
      for (const auto& [k, v] : s.host_loader) items.push_back(k + "=" + v);
    if (s.allow_unsafe) items.emplace_back(start_allow_unsafe);
    sender_.send(pack_strings(items), a.rank, tag_start, a.comm);
    s.started = true;
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: what a pass leaves unread is reported again
    ev.data.u64 = a.index;
    a.watched = ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.channel.get(), &ev) == 0;
  }

  /// Its worker's channel leaves the epoll set (before the slot goes: its descriptor closes then).
  void unwatch(Agent& a) {
    if (!a.watched) return;
    a.watched = false;
    if (a.slot) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, a.slot->channel.get(), nullptr);
  }

  /// The library a define frame names, offered to the agent first (once per content).
  void offer_library(Agent& a, const OutFrame& frame) {
    std::string_view body = frame.bytes.view().substr(proto::header_size);
    proto::Define d;
    try {
      d = proto::decode_define(body);
    } catch (const proto::ProtocolError&) {
      return;
    }
    if (d.kind != proto::RefKind::plugin) return;
    std::string key = key_of(d.library);
    if (key.empty() || a.offered[d.library] == key) return;
    a.offered[d.library] = key;
    auto& [path, offers] = a.awaited[key];
    path = d.library;
    ++offers;
    sender_.send(pack_strings({d.library, key}), a.rank, tag_lib_offer, a.comm);
  }

  std::string key_of(const std::string& path) {
    // The identity the pool's generations use, ctime included: keyed by inode, size and mtime, a
    // plugin written in place with its size and mtime kept was retired on the host and offered
    // again to no agent, whose fresh workers loaded the old bytes from its cache.
    std::string stamp = PluginIndex::file_version(path);
    if (stamp.empty()) return {};
    auto& known = keys_[path];
    if (known.first != stamp) known = {stamp, content_key(path)};
    return known.second;
  }

  /// The bytes of a library offered to `a`, which it asks for (tag_lib_need). Only a key offered
  /// to that agent and not asked for since is answered, once: any other request breaks the
  /// protocol (ProtocolError: the rank is refused), as an honest agent asks once per offer. The
  /// answer is empty (the agent's worker reports the library as missing) when the file cannot
  /// be read whole now, or is too large for one MPI message.
  void send_library(Agent& a, const std::string& key) {
    if (!is_content_key(key)) throw proto::ProtocolError("a library request without a content key");
    auto it = a.awaited.find(key);
    if (it == a.awaited.end())
      throw proto::ProtocolError("a request for a library that was not offered to it, or was sent already");
    std::string path = it->second.first;
    if (--it->second.second == 0) a.awaited.erase(it);
    std::string bytes;
    if (!read_library(path, bytes)) bytes.clear();
    sender_.send(pack_strings({key, bytes}), a.rank, tag_lib_data, a.comm);
  }

  /// Reads a library to ship: a regular file (opened without waiting, as a FIFO would make it)
  /// small enough that the answer fits one MPI message, whose count is an int.
  static bool read_library(const std::string& path, std::string& bytes) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    // The key, the bytes and their lengths and count (pack_strings) must fit too.
    constexpr std::size_t room = max_message_bytes - 4096;
    if (static_cast<std::uint64_t>(st.st_size) > room) {
      ferry::detail::debug_log("mpi hub: not shipping %s: %s is more than one MPI message carries",
                               path.c_str(), ferry::detail::format_size(static_cast<std::uint64_t>(st.st_size)).c_str());
      return false;
    }
    bytes.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < bytes.size()) {
      ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;  // shrank meanwhile: the agent's check of the key would fail anyway
      got += static_cast<std::size_t>(n);
    }
    return true;
  }

  Agent* agent_of(MPI_Comm comm, int rank) {
    for (auto& a : agents_)
      if (a.comm == comm && a.rank == rank) return &a;
    return nullptr;
  }

  /// A message from an agent. One the hub cannot read (a rank that is not a ferry-mpi-worker of
  /// this version, or a corrupted message) must not end the host: that rank is refused.
  void handle(Agent& a, int tag, Buffer& bytes) {
    try {
      handle_message(a, tag, bytes);
    } catch (const std::exception& e) {
      refuse(a, "sent a message the host cannot read (tag " + std::to_string(tag) + ": " + e.what() +
                    "; is it a ferry-mpi-worker of this version?)");
    }
  }

  static std::string stalled_frame_reason() {
    return "began a frame and stopped sending its bytes (none for the stall limit, at least " +
           ferry::detail::format_duration(peer_timeout()) + ")";
  }

  /// Declares a rank that broke the protocol dead, and tells it to leave: its messages are not
  /// read again, and whatever it runs is stopped (a ferry agent stops its worker on quit).
  void refuse(Agent& a, const std::string& why) {
    declare_dead(a, why);
    sender_.send(pack_strings({quit_peer_lost}), a.rank, tag_quit, a.comm);
    sender_.abandon(a.comm, a.rank);  // a rank that breaks the protocol may not read it either
  }

  /// A rank refused at its hello holds no worker (free_agent gives none before a hello). In spawn
  /// mode it was spawned for a worker waiting now: that worker fails with the reason, which its
  /// pool then gives as a start failure (and paces its next try); it waited for the next spawn,
  /// refused the same way, until the pool's handshake timeout, which named neither version. A
  /// rank that had said hello before was not spawned for a waiting worker: the worker it served
  /// ends with it (declare_dead), and one waiting for another spawn goes on waiting.
  void refuse_at_hello(Agent& a, const std::string& why) {
    const std::string said = where(a) + " " + ferry::detail::message_text(why);
    const bool said_hello_before = a.ready;
    refuse(a, why);
    if (world_mode_ || said_hello_before || unassigned_.empty()) return;
    ExitStatus st;
    st.detail = said;
    unassigned_.front()->finish(st);
    unassigned_.pop_front();
  }

  /// Ends `s` with `st` once what was relayed for its pool before (its outbox, to_pool) is on the
  /// pool's channel: the pool reads the channel when it learns of the end, and only what reached
  /// it (Manager::on_exit). A result larger than the socket takes at once was left in the outbox
  /// by a worker that exited right after answering (recycled: max_tasks_per_child), and its call
  /// failed ("terminated: it exited with code 0"), or ran again with retries. The frames go on
  /// draining (drain_ended, the nap's POLLOUT) until none is left, the channel fails (the pool
  /// closed it), or drain_limit() passes without the pool taking them all. Idempotent. The
  /// caller frees the rank (a.slot) as it did: the worker's end is its agent's, not the pool's.
  void end_slot(const std::shared_ptr<Slot>& s, ExitStatus st) {
    if (s->ending || s->ended) return;
    if (!s->to_pool.empty() && flush_pool(*s) && !s->to_pool.empty()) {
      s->ending = true;
      ending_.push_back({s, std::move(st), Clock::now() + drain_limit()});
      return;
    }
    s->to_pool.clear();
    s->finish(std::move(st));
  }

  /// How long the frames of an ended worker may wait for its pool to read them: a pool reads its
  /// channels as long as it waits for the worker's end, so this bounds only a pool that does not.
  static std::chrono::milliseconds drain_limit() { return stop_grace(); }

  /// The ended workers' frames still on their way to the pool (end_slot), moved on; those sent
  /// (or that cannot be) have their end reported. True if one ended.
  bool drain_ended() {
    if (ending_.empty()) return false;
    const auto now = Clock::now();
    return std::erase_if(ending_, [&](Ending& e) {
             Slot& s = *e.slot;
             if (flush_pool(s) && !s.to_pool.empty() && now < e.until) return false;
             s.to_pool.clear();
             s.finish(std::move(e.status));
             return true;
           }) > 0;
  }

  void handle_message(Agent& a, int tag, Buffer& bytes) {
    // A message held behind a frame that never completes is no sign of life (is_news), nor is
    // anything before the hello (an agent's first message): a rank that only heartbeats would
    // stay in the job for good, neither serving nor refused.
    if (is_news(tag) && (a.ready || tag == tag_ready)) a.last_heard = Clock::now();
    switch (tag) {
      case tag_unreadable:
        // What no ferry agent sends (over 2 GiB, too many frames at once), or what the host had
        // no memory for: the rank's calls cannot go on either way.
        refuse(a, "sent a message the host could not take (" + std::string(bytes.view()) + ")");
        break;
      case tag_frame_stalled:
        refuse(a, stalled_frame_reason());
        break;
      case tag_ready: {
        auto items = unpack_strings(bytes.view());
        if (items.size() >= 2) {
          a.pid = std::atoi(items[0].c_str());
          // As the pool's own: a host name is at most 255 bytes (a rank's word repeated in
          // every error about it), shown as text on one line (message_text: a rank's escape
          // sequences reached what() as they were, and any terminal that printed it).
          a.host = ferry::detail::message_text(items[1].substr(0, 255), "\\x0a");
        }
        // The host's versions, first: an agent of another MPI protocol says why it cannot serve
        // on its own stderr, and answers a start with it (a host that does not refuse it).
        sender_.send(pack_strings({FERRY_VERSION_STRING, std::to_string(mpi_protocol_version)}), a.rank, tag_welcome,
                     a.comm);
        // The agent leaves once this arrives, when both ways between it and the host are
        // connected: nothing more between them needs the PMIx server.
        if (detach_) sender_.send(Buffer(), a.rank, tag_detach, a.comm);
        // An agent of another MPI protocol, refused naming both versions (what else it says may
        // mean something else in its version): it used to be served until the first message one
        // side could not read, which named neither version.
        if (std::string why = protocol_mismatch(items); !why.empty()) {
          refuse_at_hello(a, why);
          break;
        }
        // Why it cannot serve (its FERRY_* environment is malformed): refused with that reason,
        // which its worker's calls and the pool's errors then carry; given no worker.
        if (!items[hello_cannot_serve].empty()) {
          refuse_at_hello(a,
                          "cannot serve: " + ferry::detail::message_text(items[hello_cannot_serve].substr(0, 4096)));
          break;
        }
        a.ready = true;
        break;
      }
      case tag_frames:
        to_pool(a, std::move(bytes), receiver_.take_payload());
        break;
      case tag_frame_lost:
        // A result that did not arrive whole: the pool gets an error result instead.
        to_pool(a, unrelayed_answer(bytes.view(), lost_reason("the host")), nullptr);
        break;
      case tag_exited:
        if (a.slot) {
          auto items = unpack_strings(bytes.view());
          ExitStatus st;
          st.known = true;
          if (items.size() >= 3) {
            st.signal = std::atoi(items[1].c_str());
            st.exit_code = std::atoi(items[2].c_str());
          }
          if (items.size() >= 4) st.detail = ferry::detail::message_text(items[3]);  // the rank's words, as text
          // Not started at all (pid -1): said with where, since the reason (a ferry-worker
          // missing at the path it tried) is that node's.
          if (!items.empty() && items[0] == "-1")
            st.detail = "no process (" + where(a) + ": " +
                        (st.detail.empty() ? std::string("its agent could not start it") : st.detail) + ")";
          unwatch(a);
          end_slot(a.slot, std::move(st));  // after what it sent before its end
          a.slot.reset();  // the agent can host a new worker
        }
        break;
      case tag_lib_need: {
        auto items = unpack_strings(bytes.view());
        if (items.size() != 1) throw proto::ProtocolError("a library request names no library");
        send_library(a, items[0]);
        break;
      }
      default:
        break;
    }
  }

  /// Why an agent whose hello is `items` cannot serve this host, in the words of the local
  /// backend's refusal of a worker of another protocol ("speaks protocol 7/ABI 3 (ferry 0.1.0),
  /// this host protocol 8/ABI 3"), or "" when it speaks this host's MPI protocol. Its ferry
  /// version alone differing is no reason: the protocol says what the two sides can read.
  static std::string protocol_mismatch(const std::vector<std::string>& items) {
    const std::string ours = describe_protocol(std::to_string(mpi_protocol_version), FERRY_VERSION_STRING);
    const std::string advice = ": every rank must run the ferry-mpi-worker of the host's ferry version";
    if (items.size() < hello_items)
      return "says no MPI protocol version (a ferry-mpi-worker older than MPI protocol 1), this host " + ours + advice;
    if (items[hello_protocol] != std::to_string(mpi_protocol_version))
      return "speaks " +
             describe_protocol(ferry::detail::message_text(items[hello_protocol].substr(0, 64), "\\x0a"),
                               ferry::detail::message_text(items[hello_ferry_version].substr(0, 64), "\\x0a")) +
             ", this host " + ours + advice;
    return {};
  }

  /// A frame from the agent, for its worker's pool: with its payload's memfd when it came in
  /// chunks (a shared-memory frame, as a local worker sends a large result).
  void to_pool(Agent& a, Buffer frame, std::shared_ptr<SharedBytes> payload) {
    if (!a.slot || a.slot->ending || a.slot->ended || frame.empty()) return;
    a.slot->heard = true;
    int fd = payload ? payload->fd() : -1;
    // Relayed by the pool's thread that waits for this worker: handed to it (it reads them as the
    // next frames on the channel, before reading the channel again), when the pool has read all
    // that was written on the channel before and no descriptor must travel with it.
    if (a.slot.get() == waiting_slot_ && fd < 0 && frame.size() <= handed_frame_bytes &&
        a.slot->to_pool.empty() && peer_read_all(a.slot->channel.get())) {
      handed_->append(frame.data(), frame.size());
      return;
    }
    if (payload) {
      push_passed(a.slot->to_pool, std::move(frame), std::move(payload));
    } else {
      a.slot->to_pool.push(std::move(frame));
    }
    if (!flush_pool(*a.slot)) a.slot->to_pool.clear();
  }

  /// Sends what waits for `s`'s pool (Outbox::flush: false on a hard error, errno set). The kernel
  /// can refuse to pass a result's memfd into the pool's channel (ETOOMANYREFS: this user's
  /// descriptors in flight on UNIX sockets past the host's RLIMIT_NOFILE, which a task can bring
  /// about): the result then goes inline when it fits the pool's frames, else its call is
  /// answered with why (before, the failed flush dropped that result and every frame behind it,
  /// and the call waited for good).
  static bool flush_pool(Slot& s) {
    for (;;) {
      if (s.to_pool.flush(s.channel.get())) return true;
      if (errno != ETOOMANYREFS) return false;
      const std::uint64_t max_body = pool_frame_limit(s);
      Buffer refused;
      if (send_inline_instead(s.to_pool, max_body, refused)) continue;
      Buffer answer;
      if (!refused.empty()) answer = unrelayed_answer(refused.view(), refused_reason("the host's pool", refused, max_body));
      if (answer.empty()) {
        errno = ETOOMANYREFS;
        return false;
      }
      s.to_pool.replace_front(std::move(answer), {}, nullptr);
    }
  }

  /// The largest frame body `s`'s pool reads: its workers' --max-frame-bytes (the pool's limit).
  static std::uint64_t pool_frame_limit(const Slot& s) {
    for (std::size_t i = 0; i + 1 < s.args.size(); ++i)
      if (s.args[i] == "--max-frame-bytes") return std::strtoull(s.args[i + 1].c_str(), nullptr, 10);
    return ferry::detail::Config::read().max_frame_bytes;
  }

  /// "MPI rank R on HOST (agent pid P)": an agent as errors about it name it (what it has said
  /// of itself so far).
  static std::string where(const Agent& a) {
    return "MPI rank " + std::to_string(a.rank) + (a.host.empty() ? "" : " on " + a.host) +
           (a.pid ? " (agent pid " + std::to_string(a.pid) + ")" : "");
  }

  void declare_dead(Agent& a, const std::string& why) {
    if (!a.alive) return;
    a.alive = false;
    receiver_.forget(a.comm, a.rank);
    sender_.abandon(a.comm, a.rank);
    {
      std::lock_guard lock(mu_);
      if (world_mode_ && alive_agents_ > 0) --alive_agents_;
      last_death_ = where(a) + " " + ferry::detail::message_text(why);
    }
    if (a.slot) {
      ExitStatus st;
      st.detail = where(a) + " " + ferry::detail::message_text(why);
      unwatch(a);
      end_slot(a.slot, std::move(st));  // what it answered before it was lost reaches the pool first
      a.slot.reset();
    }
  }

  /// After stop(): agents told to leave (sends completed, or given up on after 2 s), MPI finalised
  /// if the hub initialised it.
  void leave() {
    {
      std::lock_guard lock(mu_);
      for (auto& s : waiting_) unassigned_.push_back(std::move(s));
      waiting_.clear();
    }
    for (auto& s : unassigned_) {
      ExitStatus st;
      st.detail = "ferry's MPI backend was stopped";
      s->finish(st);
    }
    unassigned_.clear();
    // A rank that never said hello, or one told to stop a worker that never said hello (its end
    // settled without the agent's report: send_stop), may be stuck: MPI_Finalize's fence would
    // wait for it, the host up to stop()'s limit (10 s), the other agents up to their watchdog's.
    // It counts as lost, as the peer timeout or the stop grace would have made it had the
    // executor's shutdown waited for them: told to leave with peer-lost, as every other rank
    // then, and nobody finalises. Not before their messages had a moment to come: a hello still
    // on its way (an executor made and shut down at once) or the end of a worker stopped before
    // its hello (an ordinary shutdown soon after a start) made an honest rank lost, and the job
    // ended without MPI_Finalize (a review). Up to 2 s for them, looking all along.
    auto outstanding = [this] {
      return std::any_of(agents_.begin(), agents_.end(), [](const Agent& a) {
        return a.alive && (!a.ready || (a.slot && !a.slot->heard && a.slot->told_to_stop != Clock::time_point{}));
      });
    };
    for (const auto until = Clock::now() + std::chrono::seconds(2); outstanding() && Clock::now() < until;) {
      bool busy = false;
      try {
        busy = relay_pass();
      } catch (const std::exception& e) {
        ferry::detail::debug_log("mpi hub: a pass while leaving failed: %s", e.what());
      }
      if (!busy) nap(false, std::chrono::microseconds(1000));
    }
    for (auto& a : agents_) {
      if (!a.alive) continue;
      if (!a.ready)
        refuse(a, "had said no hello when the host left");
      else if (a.slot && !a.slot->heard && a.slot->told_to_stop != Clock::time_point{})
        refuse(a, "had not reported the end of a worker that never said hello when the host left");
    }
    bool all_alive = std::all_of(agents_.begin(), agents_.end(), [](const Agent& a) { return a.alive; });
    for (auto& a : agents_) {
      if (!a.alive) continue;
      if (a.slot) {
        ExitStatus st;
        st.detail = "ferry's MPI backend was stopped";
        unwatch(a);
        end_slot(a.slot, std::move(st));
        a.slot.reset();
      }
      // In a job of N, a rank lost is a rank that never joins MPI_Finalize's fence: the agents
      // must leave without it. Spawned agents each have a job of their own.
      bool lost = world_mode_ && !all_alive;
      sender_.send(lost ? pack_strings({quit_peer_lost}) : Buffer(), a.rank, tag_quit, a.comm);
    }
    // Sends to ranks declared dead never complete: only the others are waited for.
    auto deadline = Clock::now() + std::chrono::seconds(2);
    // Looking all along: without Open MPI's progress thread, TCP moves bytes only in MPI calls.
    for (sender_.progress(); sender_.sending() > 0 && Clock::now() < deadline; sender_.progress())
      ::sched_yield();
    // Frames of ended workers still on their way to their pools, within the same 2 s; then their
    // ends are reported whatever is left.
    for (drain_ended(); !ending_.empty() && Clock::now() < deadline; drain_ended()) {
      fds_.clear();
      for (auto& e : ending_) fds_.push_back({e.slot->channel.get(), POLLOUT, 0});
      ::poll(fds_.data(), fds_.size(), 1);
    }
    for (auto& e : ending_) {
      e.slot->to_pool.clear();
      e.slot->finish(std::move(e.status));
    }
    ending_.clear();
    // Finalize is collective with every connected process: with a dead peer it can block, and
    // the process is leaving anyway.
    if (detach_) {
      // The agents left the PMIx server, so MPI_Finalize's fence would wait for them for good;
      // the host leaves it too, so that its exit is not a lost client either.
      std::string why = leave_pmix_server();
      if (!why.empty()) ferry::detail::debug_log("mpi hub: leaving Slurm's PMIx server: %s", why.c_str());
    } else if (owns_mpi_ && all_alive) {
      MPI_Finalize();
    }
    std::lock_guard lock(mu_);
    stopped_ = true;
    stopped_cv_.notify_all();
  }

  /// What only the hub's thread does, under the relay lock: new workers to places, start
  /// messages, heartbeats, deadlines.
  void maintain() {
    assign_waiting();
    note_holders();
    auto now = Clock::now();
    for (auto& a : agents_) {
      if (!a.alive) continue;
      if (now - a.last_sent >= heartbeat_period()) {
        sender_.send(Buffer(), a.rank, tag_heartbeat, a.comm);
        a.last_sent = now;
      }
      if (a.slot && a.slot->told_to_stop != Clock::time_point{} && now - a.slot->told_to_stop > stop_grace()) {
        refuse(a, "did not report the end of its worker within " + ferry::detail::format_duration(stop_grace()) +
                      " of being told to stop it");
        continue;
      }
      if (a.slot) start_if_ready(a);
    }
  }

  /// The ranks silent for the peer timeout at `began` (when this pass of the hub's thread began),
  /// judged after relay_pass() read what they sent: a stall of the hub's thread (a long spawn, a
  /// busy machine) must not make it declare dead a rank whose heartbeats wait unread.
  void judge_silence(Clock::time_point began) {
    for (auto& a : agents_) {
      if (!a.alive || began - a.last_heard <= peer_timeout()) continue;
      // Messages held behind a frame of its that stopped arriving: it is alive, and broke the
      // protocol (refused, told to leave). Else it said nothing at all: dead.
      if (receiver_.holding(a.comm, a.rank)) {
        refuse(a, stalled_frame_reason());
      } else if (!a.ready) {
        // No hello: not a ferry-mpi-worker, or one stuck before it. Told to leave, in case it
        // hears (one that sent nothing at all was declared dead here before).
        refuse(a, "said no hello within the peer timeout (" + ferry::detail::format_duration(peer_timeout()) +
                      "; FERRY_MPI_TIMEOUT_MS): is it a ferry-mpi-worker?");
      } else {
        declare_dead(a, "stopped answering (no heartbeat for " + ferry::detail::format_duration(peer_timeout()) + ")");
      }
    }
  }

  /// The hub's thread did not run for `gap` (LoopGap: the job suspended, or the thread held up):
  /// no rank was heard meanwhile, and none is held silent for it.
  void forgive(Clock::duration gap, Clock::time_point now) {
    for (auto& a : agents_)
      if (a.alive) a.last_heard = std::min(a.last_heard + gap, now);
    receiver_.forgive(gap);
    ferry::detail::debug_log("mpi hub: the hub's thread did not run for %lld ms: not counted as the ranks' silence",
                             static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(gap).count()));
  }

  /// One pass of the relay, under the relay lock: the pool's frames to the agents, the agents'
  /// messages to the pool. Run by the hub's thread, or by a pool thread waiting for a result
  /// (relay_in_waiter). True if anything moved. Its cost does not grow with the number of agents
  /// but for a few loads per agent: one epoll_wait says which channels have frames, one probe per
  /// communicator finds the messages.
  bool relay_pass(bool for_waiter = false) {
    bool busy = false;
    for (auto& a : agents_) {
      if (!a.alive || !a.slot) continue;
      Slot& s = *a.slot;
      if (s.kill_requested.load(std::memory_order_relaxed) && s.kill_requested.exchange(false))
        send_stop(a);
      if (!s.to_pool.empty() && !flush_pool(s)) s.to_pool.clear();
    }
    busy = drain_ended() || busy;
    for (;;) {
      int n = ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), 0);
      for (int i = 0; i < n; ++i) busy = pump_pool(agents_[events_[static_cast<std::size_t>(i)].data.u64]) || busy;
      if (n < static_cast<int>(events_.size())) break;
    }
    // Every communicator the agents use: the world, or each spawned group.
    comms_.clear();
    for (auto& a : agents_)
      if (a.alive && std::find(comms_.begin(), comms_.end(), a.comm) == comms_.end())
        comms_.push_back(a.comm);
    const auto budget_ends = Clock::now() + receive_budget;
    for (MPI_Comm c : comms_) {
      int source = 0, tag = 0;
      Buffer bytes;
      // A pass takes at most max_messages_per_pass of a communicator, and after the first for at
      // most receive_budget in all: a rank that sends as fast as the hub reads, or chunks each
      // copied as it is received, must not keep it from maintain() (heartbeats, deadlines,
      // refusals).
      for (std::size_t taken = 0; taken < max_messages_per_pass && (taken == 0 || Clock::now() < budget_ends) &&
                                  receiver_.next(c, source, tag, bytes);
           ++taken) {
        // A rank declared dead is not heard again (its late messages are received and dropped).
        if (Agent* a = agent_of(c, source); a && a->alive) handle(*a, tag, bytes);
        busy = busy || tag != tag_heartbeat;  // heartbeats start no spin window
        // A waiting thread goes to read what it may have been waiting for; what else came is
        // for its next pass, or the hub's thread.
        if (for_waiter && tag == tag_frames) return true;
      }
      // Stopped by the budget, messages may be left: the heartbeats waiting behind them are
      // taken now, or a rank would seem silent while another streams chunks.
      if (Clock::now() >= budget_ends)
        for (std::size_t taken = 0; taken < max_messages_per_pass && receiver_.next_heartbeat(c, source); ++taken)
          if (Agent* a = agent_of(c, source); a && a->alive && a->ready) a->last_heard = Clock::now();
    }
    sender_.progress();
    // Bytes still moving (a large frame either way): keep looking, or TCP moves them one socket
    // buffer per nap.
    auto now = Clock::now();
    return busy || sender_.moving(now) || receiver_.receiving(now);
  }

  /// What the pool wrote on this agent's worker's channel, to the agent: every frame read in one
  /// message (FrameBatch). True if anything moved.
  bool pump_pool(Agent& a) {
    if (!a.alive || !a.slot || !a.watched) return false;
    Slot& s = *a.slot;
    if (!s.started || s.stop_sent) return false;  // stopping: its agent reports the end
    return from_pool(a, [&] { return s.from_pool.pump(s.channel.get(), frames_, answers_); });
  }

  /// The pool's frames for this agent's worker, read by `read` (into frames_ and answers_; false
  /// when the pool closed the channel), to the agent. True if anything moved.
  template <class Read>
  bool from_pool(Agent& a, Read read) {
    Slot& s = *a.slot;
    frames_.clear();
    answers_.clear();
    bool open = true;
    try {
      open = read();
    } catch (const std::exception& e) {
      give_up_relaying(a, e);  // not a frame the hub can relay: this worker cannot go on
      return true;
    }
    bool busy = !answers_.empty() || !frames_.empty();
    for (auto& b : answers_) s.to_pool.push(std::move(b));  // tasks that could not be relayed
    for (auto& f : frames_) {
      if (f.type() == proto::FrameType::shutdown) s.shutdown_sent = true;  // its rank will be free
      if (f.type() == proto::FrameType::define) {
        batch_.flush(sender_, a.rank, a.comm);  // the offer goes before the define
        offer_library(a, f);
      }
      batch_.add(std::move(f), sender_, a.rank, a.comm);
    }
    batch_.flush(sender_, a.rank, a.comm);
    if (!frames_.empty()) answer_expected_until_ = Clock::now() + pace_.expect_window();
    if (!open) {
      stop_worker(a);  // the pool dropped this worker (shutdown or kill)
      busy = true;
    }
    if (!s.to_pool.empty() && !flush_pool(s)) s.to_pool.clear();
    return busy;
  }

  /// The agent is told to stop its worker, and reports its end; the channel is read no more.
  void stop_worker(Agent& a) {
    a.slot->stop_sent = true;
    unwatch(a);
    send_stop(a);
  }

  /// Tells the agent to kill its worker. It answers with the worker's end (tag_exited); one that
  /// does not within stop_grace() is refused (maintain): the pool learns of a killed worker's end
  /// only from that answer, and a rank that heartbeats and ignores the stop held the worker's
  /// calls, a task's deadline and the pool's shutdown for good.
  void send_stop(Agent& a) {
    // Before its start went out the agent has no worker to stop, nor an end to report.
    if (a.slot->started && a.slot->told_to_stop == Clock::time_point{}) a.slot->told_to_stop = Clock::now();
    // A worker that never said hello has no calls: its pool need not wait for the agent's report
    // (a shutdown waited the stop grace for a rank that ignored the start and the stop). Its end
    // is settled now, with no detail (the pool's own reason stands: its handshake timeout); the
    // rank stays taken until the agent reports the end, or is refused after the grace.
    if (a.slot->started && !a.slot->heard) a.slot->finish(ExitStatus{});
    sender_.send(Buffer(), a.rank, tag_stop, a.comm);
  }

  /// How long an agent may take to report the end of a worker it was told to stop: the kill and
  /// the reap, and a slow link's round trip.
  static std::chrono::milliseconds stop_grace() {
    return std::max<std::chrono::milliseconds>(2 * peer_timeout(), std::chrono::seconds(5));
  }

  /// The pool's frames for this agent's worker cannot be relayed (`e` says why): the worker ends
  /// and the pool hears why.
  void give_up_relaying(Agent& a, const std::exception& e) {
    ExitStatus st;
    st.detail = std::string("not relayed to MPI rank ") + std::to_string(a.rank) + ": " + e.what();
    end_slot(a.slot, std::move(st));  // after what its agent relayed before
    stop_worker(a);
  }

 public:
  /// A pool thread waiting for a result relays, unless the hub's thread (or another waiter) is at
  /// it: the frames then go from the waiting thread to MPI and back without a hand-off to the
  /// hub's thread. Frames for `waiting`'s pool may be appended to `frames` (to_pool). Never
  /// blocks, never throws: what was handed over stays in `frames`.
  void relay_in_waiter(Slot& waiting, std::string& frames) {
    if (!waiters_relay_) return;
    std::unique_lock lock(relay_mu_, std::try_to_lock);
    if (!lock || leaving_) return;
    relayed_at_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    waiting_slot_ = &waiting;
    handed_ = &frames;
    try {
      relay_pass(true);
    } catch (const std::exception& e) {
      // Out of memory, most likely; the hub's thread tries again at its next pass.
      ferry::detail::debug_log("mpi hub: a relay pass in a waiting thread failed: %s", e.what());
    }
    waiting_slot_ = nullptr;
    handed_ = nullptr;
  }

  /// Frames the pool would write on `s`'s channel, taken in the pool's thread and sent to the
  /// agent now (no write there, no read here), unless the hub's thread (or a waiter) is relaying:
  /// false then, and the pool writes them. Whatever the pool wrote on the channel before is read
  /// first; if some is left unread, these must follow it on the channel (false). Never blocks;
  /// called with the pool's lock held (the hub never takes it).
  bool take_from_pool(Slot& s, std::span<const std::string_view> pieces) {
    if (!waiters_relay_) return false;
    std::size_t bytes = 0;
    for (std::string_view p : pieces) bytes += p.size();
    if (bytes > handed_frame_bytes) return false;  // the channel reads a large body in place
    std::unique_lock lock(relay_mu_, std::try_to_lock);
    if (!lock || leaving_ || s.agent >= agents_.size() || agents_[s.agent].slot.get() != &s) return false;
    Agent& a = agents_[s.agent];
    try {
      pump_pool(a);
      if (!a.alive || !a.watched || !s.started || s.stop_sent || s.from_pool.partial() ||
          !nothing_to_read(s.channel.get()))
        return false;
      from_pool(a, [&] {
        s.from_pool.take(pieces, frames_, answers_);
        return true;
      });
      sender_.progress();
    } catch (const std::exception& e) {
      // Taken or not, the frames cannot be written again (the agent may have some): this worker
      // ends, and its calls fail, rather than run twice.
      try {
        give_up_relaying(a, e);
      } catch (const std::exception& again) {
        ferry::detail::debug_log("mpi hub: cannot tell rank %d to stop its worker: %s", a.rank, again.what());
      }
      return true;
    }
    // A lone call went to MPI without touching the channel, which would have ended a nap of the
    // hub's thread: unless a waiting thread relays, wake it, so that it looks for the answer
    // without waiting out a nap (for a caller that never waits in get(): then(), as_completed).
    if (!waiter_relays(Clock::now())) signal_event(wake_.get());
    return true;
  }

  /// The waiting thread stops relaying and blocks: the hub's thread takes over at once.
  void waiter_stopped() {
    if (!waiters_relay_) return;
    relayed_at_.store(0, std::memory_order_relaxed);
    signal_event(wake_.get());
  }

 private:
  /// Whether a waiting thread relayed within the spin window: the hub's thread then leaves the
  /// relay to it and naps (it would only take turns on the CPU with the threads it serves).
  bool waiter_relays(Clock::time_point now) const {
    auto at = relayed_at_.load(std::memory_order_relaxed);
    return at != 0 && now - Clock::time_point(Clock::duration(at)) < pace_.spin_window();
  }

  void loop() {
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (quit_) break;
      }
      bool busy;
      Clock::time_point expected;
      {
        std::lock_guard relay(relay_mu_);
        const auto began = Clock::now();
        try {
          if (auto gap = loop_gap_.pass(began); gap != Clock::duration::zero()) forgive(gap, began);
          maintain();
          busy = relay_pass();
          judge_silence(began);
        } catch (const std::exception& e) {
          // Out of memory, most likely (what an agent sends that the hub cannot read refuses that
          // agent, in handle()): the host must not end for it. The next pass tries again.
          ferry::detail::debug_log("mpi hub: a pass of the hub's thread failed: %s", e.what());
          busy = false;
        }
        expected = answer_expected_until_;
      }
      if (waiter_relays(Clock::now())) {
        pace_.idle();
        nap(false, pace_.spin_window());
        continue;
      }
      pace_.expect(expected);  // frames went to an agent: its answer comes by MPI
      if (busy) {
        pace_.active();
      } else {
        nap(true);
      }
    }
    std::lock_guard relay(relay_mu_);
    leaving_ = true;
    leave();
  }

  /// Nothing to do: waits for a launch, a kill or quit, and (`channels`) the pool's channels
  /// (descriptors end the wait at once) or the next look for MPI messages (Pace). While a waiting
  /// thread relays, the hub's thread does not watch the channels: that thread reads them.
  void nap(bool channels, std::chrono::microseconds longest = Pace::longest_quiet_nap) {
    fds_.clear();
    fds_.push_back({wake_.get(), POLLIN, 0});
    if (channels) {
      fds_.push_back({epoll_.get(), POLLIN, 0});  // readable when a channel in it is
      // Frames the pool's channel could not take yet, also those of a worker told to stop (its
      // channel no longer watched) or ended (end_slot). Under the relay lock (a waiting thread's
      // pass changes the slots and ending_), which leave(), the one caller holding it, holds.
      std::unique_lock relay(relay_mu_, std::defer_lock);
      if (!leaving_) relay.lock();
      for (auto& a : agents_)
        if (a.alive && a.slot && !a.slot->to_pool.empty()) fds_.push_back({a.slot->channel.get(), POLLOUT, 0});
      for (auto& e : ending_) fds_.push_back({e.slot->channel.get(), POLLOUT, 0});
    }
    pace_.wait(fds_.data(), fds_.size(), longest);
    if (fds_[0].revents & POLLIN) {
      std::uint64_t v;
      while (::read(wake_.get(), &v, sizeof v) > 0) {
      }
    }
  }

  std::mutex mu_;
  std::condition_variable started_cv_, stopped_cv_;
  LoopGap loop_gap_;  // the hub's thread's passes (forgive)
  bool launched_ = false;
  bool quit_ = false;
  bool stopped_ = false;
  bool owns_mpi_ = false;
  bool detach_ = false;  // the agents leave Slurm's PMIx server once ready (run())
  bool initialised_ = false;
  bool world_mode_ = false;
  std::string init_error_;
  std::string spawn_failure_;
  std::size_t alive_agents_ = 0;
  // The last rank declared dead, and why ("MPI rank 2 on node7 (agent pid P) cannot serve: ..."),
  // for the error that fails the pools' queues once no rank is left: a rank refused before it was
  // given a worker reached no pool, and its reason only its own stderr showed. Under mu_.
  std::string last_death_;
  std::deque<std::shared_ptr<Slot>> waiting_;
  Fd wake_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};  // launch(), Slot::kill() and stop() end a nap
  std::atomic<bool> waiters_relay_{false};  // MPI may be called from the pool's threads (set before they run)
  std::atomic<Clock::rep> relayed_at_{0};  // when a waiting thread last relayed; 0: it stopped
  // Below: the hub thread only, or whoever holds relay_mu_ (a waiting thread, relay_pass).
  std::mutex relay_mu_;
  bool leaving_ = false;
  Clock::time_point answer_expected_until_{};  // frames went to an agent: spin until then for its answer
  Slot* waiting_slot_ = nullptr;  // relay_in_waiter: the waiting thread's worker
  std::string* handed_ = nullptr;  // and where its frames go (to_pool)
  // Frames up to this size skip the channel (larger ones are read there in place).
  static constexpr std::size_t handed_frame_bytes = ferry::detail::FrameReader::direct_threshold;
  static constexpr std::size_t max_messages_per_pass = 4096;
  Pace pace_;
  std::vector<pollfd> fds_;
  std::vector<MPI_Comm> comms_;
  Fd epoll_{::epoll_create1(EPOLL_CLOEXEC)};  // the started workers' channels (pool side)
  std::array<epoll_event, 64> events_{};
  std::vector<OutFrame> frames_;
  std::vector<Buffer> answers_;
  FrameBatch batch_;
  std::vector<Agent> agents_;
  std::deque<std::shared_ptr<Slot>> unassigned_;  // launched, waiting for a free rank
  struct Ending {
    std::shared_ptr<Slot> slot;
    ExitStatus status;         // its end, reported once its frames reached the pool
    Clock::time_point until;   // or at this time (drain_limit)
  };
  std::vector<Ending> ending_;  // ended workers whose frames are still on their way (end_slot)
  std::set<std::uint64_t> owners_leaving_;        // executors shut down (mu_; owner_leaving)
  struct Holder {
    std::weak_ptr<Slot> slot;
    std::uint64_t owner = 0;
    bool leaving = false;
  };
  std::vector<Holder> holders_;        // the workers on ranks (mu_; note_holders)
  std::vector<Holder> holders_spare_;  // the hub's thread's next holders_
  Sender sender_;
  Receiver receiver_;
  std::map<std::string, std::pair<std::string, std::string>> keys_;  // path → (stamp, key)
};

class Launcher final : public ferry::Launcher {
 public:
  explicit Launcher(const ExecutorOptions& options)
      : env_(options.env.begin(), options.env.end()),
        // As LocalLauncher decides: its agents' checks of the worker they start follow it.
        allow_unsafe_(options.allow_unsafe_plugins || ferry::detail::unsafe_allowed_by_environment()) {
    // The agent starts ferry-worker itself: the one configured here, if any.
    if (!options.worker_path.empty()) env_.emplace_back("FERRY_WORKER", options.worker_path.string());
    // As a local launcher takes them, when the executor is made (Slot::host_loader).
    for (const char* name : host_loader_variables)
      if (const char* value = std::getenv(name); value && !options.env.count(name))
        host_loader_.emplace_back(name, value);
  }
  std::optional<Launched> launch(const std::vector<std::string>& args, std::string& why) override {
    return Hub::instance().launch(args, env_, host_loader_, allow_unsafe_, owner_, why);
  }
  std::size_t capacity() const override { return Hub::instance().capacity(); }
  std::size_t available() const override { return Hub::instance().available(owner_); }
  std::string program() const override { return "ferry-worker on an MPI rank"; }
  std::exception_ptr start_failure(const std::string& why) const override {
    // The last rank the hub lost, unless the pool's reason already says it (a rank that held a
    // worker: the pool heard its end): a rank refused before it was given a worker, or one that
    // died between workers, reached no pool.
    // Only once no rank is left: an older loss named in another failure pointed at the wrong rank.
    const std::string last = Hub::instance().capacity() == 0 ? Hub::instance().last_death() : std::string();
    const bool said = last.empty() || why.find(last) != std::string::npos;
    // What ranks said (their host names, why they cannot serve, a worker's end) shown as text, as
    // TerminatedWorkerError shows a detail: escape sequences reached what() as they were.
    return std::make_exception_ptr(BrokenProcessPool(ferry::detail::message_text(
        "cannot start worker processes (backend \"mpi\"): " + why +
        (said ? std::string() : "; the last lost: " + last))));
  }
  /// A result crosses the agent, MPI and the hub before the host sees it (a round trip of about
  /// 30-60 µs on the test machine against 15-20 µs for a local worker): with 8 short calls in
  /// flight the worker waited. Measured (docs/benchmarks.md, "Where an MPI round trip goes"):
  /// submitting one by one ran 40-70 % faster with 16 or 32 than with 8 (64 no better); with 16
  /// ranks on 2 vCPUs, 32 made the rate swing 26-76 k tasks/s from run to run (a rank that waits
  /// for the CPU holds 32 calls), 16 held 65-75 k.
  std::size_t short_call_depth() const override { return 16; }
  void shutting_down() override { Hub::instance().owner_leaving(owner_); }

 private:
  std::vector<std::pair<std::string, std::string>> env_;
  std::vector<std::pair<std::string, std::string>> host_loader_;
  bool allow_unsafe_;
  // Tells its workers from another executor's in the hub (one launcher per executor).
  const std::uint64_t owner_ = next_owner.fetch_add(1, std::memory_order_relaxed);
  static inline std::atomic<std::uint64_t> next_owner{1};
};

void relay_in_waiter(Slot& waiting, std::string& frames) { Hub::instance().relay_in_waiter(waiting, frames); }
bool take_from_pool(Slot& s, std::span<const std::string_view> pieces) {
  return Hub::instance().take_from_pool(s, pieces);
}
void waiter_stopped() { Hub::instance().waiter_stopped(); }

}  // namespace

void start_hub() { Hub::instance().start(); }

}  // namespace ferry::mpi::detail

namespace ferry::mpi {

void enable() {
  // Before the hub initialises MPI: settings without which a dead rank hangs or ends the host.
  // Once MPI runs they are read already, and serve() may have started the hub's thread (rank 0
  // of a job of N), which a setenv here would race with: only SIGPIPE then.
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (initialised)
    detail::ignore_sigpipe();
  else
    detail::prepare_mpi_environment();
  ferry::register_backend("mpi", [](const ExecutorOptions& options) {
    return std::make_shared<detail::Launcher>(options);
  });
}

}  // namespace ferry::mpi

namespace ferry::mpi {

void finalize() { detail::Hub::instance().stop(std::chrono::seconds(10)); }

}  // namespace ferry::mpi
