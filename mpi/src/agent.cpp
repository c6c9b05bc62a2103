// SPDX-License-Identifier: BSD-3-Clause
// The node agent: an MPI rank that runs ordinary ferry-workers for the host's hub. It relays
// frames between MPI and its worker's channel, starts the worker when asked and reports how it
// ended (so a crash is reported exactly, and fast), keeps shipped plugins in a private cache
// checked by content, and leaves when the host stops answering.
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <ferry/ferry.hpp>
#include <ferry/mpi.hpp>

#include "agent.hpp"
#include "platform/config.hpp"
#include "platform/trust.hpp"
#include "plugins/load_dependencies.hpp"
#include "platform/debug.hpp"
#include "platform/format.hpp"
#include "platform/spawn.hpp"
#include "wrap/wrap_compiler.hpp"
#include "pace.hpp"
#include "wire.hpp"
#include "wire/ring.hpp"

namespace ferry::mpi::detail {

namespace fs = std::filesystem;
namespace proto = ferry::detail::protocol;
using Clock = std::chrono::steady_clock;
using ferry::detail::Fd;

namespace {

/// Where shipped libraries are kept: $FERRY_CACHE_DIR/shipped, created private (0700, missing
/// parents too). Nothing is written there unless it passes the trust check (`why` says why not):
/// in a directory another user can change, a file written could be swapped before it is loaded,
/// or a link planted where it is written.
fs::path shipped_cache_dir(std::string& why) {
  fs::path dir = ferry::detail::default_cache_dir() / "shipped";
  std::error_code ec;
  std::string unsafe;
  if (!ferry::detail::create_private_directories(dir, ec, &unsafe)) {
    why = unsafe.empty() ? "cannot create " + dir.string() + " (" + ec.message() + ")" : unsafe;
  } else if (!ferry::detail::unsafe_allowed_by_environment()) {
    why = ferry::detail::untrusted_reason(dir);
  }
  if (!why.empty()) ferry::detail::debug_log("mpi agent: shipping nothing into the cache: %s", why.c_str());
  return dir;
}

/// Writes `bytes` into a new file `file` (mode 0700), never through a link or over a file that
/// is there already.
bool write_new_file(const fs::path& file, std::string_view bytes) {
  Fd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700));
  return fd && ferry::detail::write_all(fd.get(), bytes);
}

/// Whether a worker here may load `file`: no other user could have planted or changed it (the
/// trust check, unless FERRY_ALLOW_UNSAFE_PLUGINS says otherwise), and its content has `key`.
/// The check comes first: what is at the host's path on this node may be anything, and hashing
/// a FIFO or a link to /dev/zero planted there would wait for good (the hash reads regular files
/// only, without waiting, besides).
bool usable(const fs::path& file, const std::string& key) {
  if (!ferry::detail::unsafe_allowed_by_environment()) {
    std::string why = ferry::detail::untrusted_reason(file);
    // What its own RUNPATH makes this node's loader read too.
    if (why.empty()) why = ferry::detail::dependency_verdict(file).why;
    if (!why.empty()) {
      ferry::detail::debug_log("mpi agent: not using %s: %s", file.c_str(), why.c_str());
      return false;
    }
  }
  return content_key(file) == key;
}

/// A path that cannot load and says why, in place of a library this node must not load: in `/`,
/// where only root creates entries. The worker's loader fails on it, and its message (naming
/// this path) reaches the host.
std::string unloadable(const std::string& why, const std::string& name) {
  return "/(not shipped: " + why + ")/" + name;
}

/// Whether the environment variable `name` makes a process a rank of this MPI job: the agent's
/// own place in it, or the way into the job's runtime. A worker inherited them all from its
/// agent: a task (or a library choosing a GPU or a seed by rank) took itself for that rank, and
/// an MPI_Init in the worker tried to join the job as the agent's rank and failed ("getting local
/// rank failed"); without them it starts a job of its own (a singleton). These are what Open
/// MPI 4.1's launcher (ORTE, schizo/ompi) and its PMIx server set for each process they start,
/// and what a PMI-1/PMI-2 launcher (srun --mpi=pmi2) does: the rank's identity (its rank, local
/// rank, the job's size and layout, its session directory, its command line), the server's
/// address and the client's credentials (every PMIX_ variable but PMIx's own MCA settings), and
/// the settings that forbid a process to start alone (ess=^singleton, pmix=^...). Slurm's task
/// ids (SLURM_PROCID, SLURM_LOCALID, SLURM_TASK_PID) too: libraries pick a GPU or a global rank
/// by them. What describes the job and the node (SLURM_JOB_ID, SLURM_CPUS_ON_NODE, the nodes)
/// is true of the worker too and stays, as do the user's settings (OMPI_MCA_btl...).
bool names_a_rank(std::string_view name) {
  static constexpr std::string_view prefixes[] = {"PMIX_", "PMI_", "OMPI_COMM_WORLD_", "OMPI_WORLD_"};
  static constexpr std::string_view names[] = {
      "OMPI_UNIVERSE_SIZE", "OMPI_NUM_APP_CTX", "OMPI_FIRST_RANKS", "OMPI_APP_CTX_NUM_PROCS",
      "OMPI_FILE_LOCATION", "OMPI_ARGV", "OMPI_COMMAND", "OMPI_MCA_ess", "OMPI_MCA_ess_base_jobid",
      "OMPI_MCA_ess_base_vpid", "OMPI_MCA_pmix", "OMPI_MCA_orte_ess_name", "OMPI_MCA_orte_ess_num_procs",
      "OMPI_MCA_orte_ess_node_rank", "OMPI_MCA_orte_hnp_uri", "OMPI_MCA_orte_local_daemon_uri",
      "OMPI_MCA_orte_launch", "OMPI_MCA_orte_app_num", "OMPI_MCA_orte_num_nodes", "OMPI_MCA_orte_num_restarts",
      "OMPI_MCA_orte_do_not_barrier", "OMPI_MCA_orte_precondition_transports",
      "OMPI_MCA_orte_jobfam_session_dir", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_TASK_PID"};
  if (name.starts_with("PMIX_MCA_")) return false;  // PMIx's settings, not its connection
  return std::any_of(std::begin(prefixes), std::end(prefixes), [&](std::string_view p) { return name.starts_with(p); }) ||
         std::find(std::begin(names), std::end(names), name) != std::end(names);
}

/// The worker's environment: this agent's, without what makes it a rank of the job
/// (names_a_rank), with what the host gave (ExecutorOptions::env, FERRY_WORKER) on top: a
/// variable the user gives by name is theirs to give. What its loader and glibc load code from
/// (LD_LIBRARY_PATH, LD_PRELOAD, LD_AUDIT, GCONV_PATH: the agent's, or those the host gave; a
/// spawned agent's own LD_PRELOAD, LD_AUDIT and GCONV_PATH are empty, and the host sends its
/// values with each start, judged here, on this node, as given ones) keeps
/// only what the local backend keeps for its workers (LocalLauncher,
/// keep_trusted_loader_environment): an empty or relative element is the directory the worker
/// starts in, and a file or directory another user can write (or whose capability
/// subdirectories they can) loads their code into every worker; with unsafe plugins allowed
/// (`allow_unsafe`: by the executor, or by this agent's FERRY_ALLOW_UNSAFE_PLUGINS), each is
/// kept as it is.
std::vector<std::string> worker_environment(const std::vector<std::pair<std::string, std::string>>& given,
                                            bool allow_unsafe) {
  std::vector<std::string> env = ferry::detail::merged_environment(given);
  std::erase_if(env, [&](const std::string& entry) {
    const std::string_view name = std::string_view(entry).substr(0, entry.find('='));
    return names_a_rank(name) &&
           std::none_of(given.begin(), given.end(), [&](const auto& kv) { return kv.first == name; });
  });
  if (!allow_unsafe)
    ferry::detail::keep_trusted_loader_environment(env, "mpi agent: workers' environment",
                                                   ferry::detail::untrusted_search_directory,
                                                   ferry::detail::dependency_verdict);
  return env;
}

/// Why this process must not serve: a library it loaded (at its start, or since: MPI_Init's
/// components and what they need) is a file another user could have planted or changed (the
/// trust check refuses it: it, or a directory on its way, is theirs or writable by others), as
/// one found through an LD_LIBRARY_PATH element such as another user's directory, or an empty or
/// relative element while the working directory is one; "" when every one passes (a file of ours
/// in a sticky directory passes: nobody else could have put it there). A spawned agent is given
/// a filtered LD_LIBRARY_PATH and no LD_PRELOAD (hub.cpp, agent_loader_environment), but an agent
/// that the job's own launcher starts (mpirun -n 1 host : -n N ferry-mpi-worker, srun) has the
/// job's, which ferry does not choose, and its loader has read it before main(): too late to
/// keep such a library out, so the rank refuses to serve (its hello says why) rather than run
/// the host's workers from a process another user may have entered. The objects are those the loader lists
/// (dl_iterate_phdr); a name without '/' (the vDSO) is no file.
std::string untrusted_loaded_library() {
  std::vector<std::string> names;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) {
        if (info->dlpi_name && std::strchr(info->dlpi_name, '/'))
          static_cast<std::vector<std::string>*>(out)->emplace_back(info->dlpi_name);
        return 0;
      },
      &names);
  for (const auto& name : names) {
    std::error_code ec;
    const fs::path file = fs::absolute(name, ec);
    std::string why = ec ? "its path cannot be made absolute" : ferry::detail::untrusted_reason(file);
    if (why.empty()) continue;
    // What named it to the loader, most likely (a RUNPATH's is the trust check's word above).
    const char* search = std::getenv("LD_LIBRARY_PATH");
    const char* preload = std::getenv("LD_PRELOAD");
    return "it loaded " + name + ", which another user could have planted: " + why + " (its LD_LIBRARY_PATH is '" +
           (search ? search : "") + "'" + (preload ? std::string(", its LD_PRELOAD '") + preload + "'" : std::string()) +
           ": start the job with only trusted absolute directories there, or set FERRY_ALLOW_UNSAFE_PLUGINS=1)";
  }
  return {};
}

/// How long a worker that closed its channel may go on running before its agent kills it: as
/// long as the host's own pool gives a local worker in that case (core/src/host/pool.cpp).
constexpr std::chrono::seconds closed_channel_grace{1};

struct Child {
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  /// The channel may hold descriptors the worker sent and nobody read; its last close would close
  /// them, which could block this thread (a lingering socket): close_channel drops them first.
  ~Child() { ferry::detail::close_channel(sock.release()); }

  pid_t pid = -1;
  Fd pidfd;
  Fd sock;
  FrameForwarder from_worker;
  ferry::detail::Outbox to_worker;
  std::string why;  // set when the agent stopped it, for the host's error
  // When its channel read end-of-file while the process went on (a task closed or shut down the
  // descriptor): it is killed after closed_channel_grace. The socket is not watched any more.
  std::optional<Clock::time_point> closed_at;
  bool killed = false;  // SIGKILL sent for that; its end is reported when it is reaped
  bool reaped = false;  // its pid is free again (kill_child)
  // Frames to and from the worker go through shared-memory rings unless FERRY_MPI_RINGS=0; the
  // socket then carries descriptors, doorbells and the worker's end (wire/ring.hpp).
  ferry::detail::SharedRings rings;
  ferry::detail::Ring to_ring, from_ring;
  // The largest frame body it reads (its --max-frame-bytes): a payload whose memfd the kernel
  // refused to pass goes inline up to that (flush_to_worker).
  std::uint64_t max_frame = ferry::detail::Config::read().max_frame_bytes;
};

class Agent {
 public:
  Agent(MPI_Comm comm, int host) : comm_(comm), host_(host) { receiver_.only_from(host); }

  int run() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    // Its versions at places every version keeps (HelloItem): a host of another MPI protocol
    // refuses this rank naming both, before anything it could not read.
    std::vector<std::string> hello = {std::to_string(::getpid()), name, "", FERRY_VERSION_STRING,
                                      std::to_string(mpi_protocol_version)};
    // A malformed FERRY_* variable here (FERRY_MPI_TIMEOUT_MS=30s): the host refuses it in its own
    // environment, and this rank used the defaults in its place, saying nothing. It says so, and
    // the host refuses this rank with that reason (a third item of its hello); then it is told to
    // leave.
    try {
      ferry::detail::Config::read().validate();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ferry-mpi-worker (pid %d on %s): cannot serve: %s\n", static_cast<int>(::getpid()), name,
                   e.what());
      hello[hello_cannot_serve] = e.what();
    }
    if (hello[hello_cannot_serve].empty() && !ferry::detail::unsafe_allowed_by_environment()) {
      if (std::string why = untrusted_loaded_library(); !why.empty()) {
        std::fprintf(stderr, "ferry-mpi-worker (pid %d on %s): cannot serve: %s\n", static_cast<int>(::getpid()),
                     name, why.c_str());
        hello[hello_cannot_serve] = why;
      }
    }
    sender_.send(pack_strings(hello), host_, tag_ready, comm_);
    last_heard_ = last_sent_ = Clock::now();
    for (;;) {
      auto now = Clock::now();
      if (auto gap = loop_gap_.pass(now); gap != Clock::duration::zero()) {
        // This rank was stopped (the job suspended) or its loop held up: not the host's silence.
        last_heard_ = std::min(last_heard_ + gap, now);
        receiver_.forgive(gap);
        ferry::detail::debug_log("mpi agent: the loop did not run for %lld ms: not counted as the host's silence",
                                 static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(gap).count()));
      }
      if (now - last_sent_ >= heartbeat_period()) {
        sender_.send(Buffer(), host_, tag_heartbeat, comm_);
        last_sent_ = now;
      }
      bool busy = false;
      try {
        if (std::optional<int> code = pass(now, busy)) return *code;
      } catch (const std::exception& e) {
        // Out of memory, most likely: the rank must not end for it (its worker and the host
        // would not hear why). The next pass tries again.
        ferry::detail::debug_log("mpi agent: a pass failed: %s", e.what());
        busy = false;
      }
      if (busy) {
        pace_.active();
      } else {
        // The worker's channel and its end wake the agent at once; the host's messages are seen
        // at the next look. A channel the worker closed is not watched: it would always be
        // readable (end-of-file), and the nap would spin.
        const bool open = child_ && !child_->closed_at;
        short out = open && !child_->rings && !child_->to_worker.empty() ? POLLOUT : 0;
        pollfd p[2] = {{open ? child_->sock.get() : -1, static_cast<short>(POLLIN | out), 0},
                       {child_ ? child_->pidfd.get() : -1, POLLIN, 0}};
        // With rings, the worker rings the channel when it writes into a ring while the agent
        // says it sleeps, or when it reads from a full one the agent waits to write into.
        const bool rings = child_ && child_->rings;
        if (rings) {
          child_->from_ring.set_consumer_waiting(true);
          child_->to_ring.set_producer_waiting(!child_->to_worker.empty());
        }
        bool ready = rings && (!child_->from_ring.empty() ||
                               (!child_->to_worker.empty() && child_->to_ring.has_room()));
        bool napped = !ready && pace_.wait(p, 2);
        if (rings) {
          child_->from_ring.set_consumer_waiting(false);
          child_->to_ring.set_producer_waiting(false);
          child_bell_ = p[0].revents != 0;
        }
        if (p[1].revents & POLLIN) child_ended_ = true;
        // Nothing from the worker during a nap: the next pass need not read its channel.
        child_quiet_ = napped && !p[0].revents && !p[1].revents && !out;
      }
    }
  }

 private:
  /// One pass of the loop begun at `now`: the host's messages, the worker's frames, sends. Sets
  /// `busy` when anything happened; returns the agent's exit code when it must leave.
  std::optional<int> pass(Clock::time_point now, bool& busy) {
    int source = 0, tag = 0;
    Buffer bytes;
    // For at most receive_budget: the heartbeat goes out between passes (run()).
    const auto budget_ends = Clock::now() + receive_budget;
    while (Clock::now() < budget_ends && receiver_.next(comm_, source, tag, bytes)) {
      // A heartbeat is no sign of work to come: it must not start a spin window (idle, one
      // every 250 ms cost 0.2 % of a core in spinning).
      busy = busy || tag != tag_heartbeat;
      if (source != host_) continue;
      if (is_news(tag)) {
        last_heard_ = Clock::now();
        heard_from_host_ = true;
      }
      if (tag == tag_quit) return quit(bytes);
      handle(tag, bytes);
    }
    // The host's silence is judged after its messages were read, against the time this pass
    // began: a frame of the host's whose bytes stopped for as long has just been given up
    // (tag_frame_stalled, same limit), and what it sent after that frame came out and counted.
    // A host of another MPI protocol that did not tell this rank to leave (one that checks
    // versions refuses it at its hello, and says quit at once): it leaves after the peer timeout
    // rather than stay in the job for good, answering each start with why (handle_message).
    if (!mismatch_.empty() && now - mismatch_at_ > peer_timeout()) {
      may_finalize_ = false;
      return static_cast<int>(proto::WorkerExit::protocol_error);
    }
    if (now - last_heard_ > peer_timeout()) {
      stop_child();
      may_finalize_ = false;
      say_host_gone();
      return static_cast<int>(proto::WorkerExit::host_gone);
    }
    if (gave_work_) {
      // Frames just went to the worker, which shares a vCPU with this loop more often than not:
      // let it run now rather than after the rest of this pass and the start of the next, so
      // that the read below may find its result already. Measured (docs/benchmarks.md): the
      // round trip's median 26.9 µs against 29.4 (ten interleaved runs each).
      gave_work_ = false;
      ::sched_yield();
    }
    // After a quiet nap the worker's channel need not be read; but a worker whose channel is
    // closed is watched by the clock (its grace), and by its pidfd only.
    if (child_ && (!child_quiet_ || child_->closed_at)) {
      bool look = child_ended_ || now - last_reap_look_ >= reap_look_period;
      if (look) {
        last_reap_look_ = now;
        child_ended_ = false;
      }
      busy |= pump_child(look);
    }
    child_quiet_ = false;
    sender_.progress();
    // Bytes still moving to or from the host (a large frame): keep looking, or TCP moves them
    // one socket buffer per nap.
    busy |= sender_.moving(now) || receiver_.receiving(now);
    return std::nullopt;
  }

  /// Why this rank leaves without being told, on its standard error (mpirun and srun show it;
  /// the exit status alone, 65, said nothing): the host went silent, or never spoke at all, which
  /// is a job whose rank 0 is no ferry host, or a host that has not started ferry's MPI backend.
  void say_host_gone() const {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    const std::string limit = ferry::detail::format_duration(peer_timeout());
    if (heard_from_host_) {
      std::fprintf(stderr, "ferry-mpi-worker (pid %d on %s): the ferry host stopped answering (nothing for %s): "
                   "its worker stopped, leaving\n", static_cast<int>(::getpid()), name, limit.c_str());
    } else {
      std::fprintf(stderr, "ferry-mpi-worker (pid %d on %s): no ferry host answered within %s (FERRY_MPI_TIMEOUT_MS): "
                   "rank 0 of the job must be a program that starts ferry's MPI backend (ferry::mpi::serve() "
                   "first thing in main(), or an Executor with backend \"mpi\"), as in "
                   "mpirun -n 1 ./host : -n N ferry-mpi-worker; leaving\n",
                   static_cast<int>(::getpid()), name, limit.c_str());
    }
  }

  /// The host says leave: the worker is stopped, pending sends get 2 s.
  int quit(const Buffer& bytes) {
    stop_child();
    // The host lost another rank of this job: MPI_Finalize's fence could wait for it for
    // good (quit_peer_lost).
    std::vector<std::string> items;
    try {
      if (!bytes.empty()) items = unpack_strings(bytes.view());
    } catch (const proto::ProtocolError&) {
      items = {quit_peer_lost};  // unreadable: leave without a fence that could hang
    }
    may_finalize_ = !detached_ && std::find(items.begin(), items.end(), quit_peer_lost) == items.end();
    // Let pending sends finish, for at most 2 s: the host may be leaving too.
    auto deadline = Clock::now() + std::chrono::seconds(2);
    // Looking all along: without Open MPI's progress thread TCP moves bytes only in MPI calls.
    while (!sender_.progress() && Clock::now() < deadline) ::sched_yield();
    // Sends still pending: the host is gone, and MPI_Finalize could wait for it forever.
    if (sender_.pending() != 0) {
      may_finalize_ = false;
      return static_cast<int>(proto::WorkerExit::host_gone);
    }
    return mismatch_.empty() ? 0 : static_cast<int>(proto::WorkerExit::protocol_error);
  }

  /// A message from the host. One the agent cannot read (a host of another ferry version, or a
  /// corrupted message) is dropped rather than ending the rank; a start it cannot read is
  /// answered as a worker that could not start, so the host's pool hears why.
  void handle(int tag, Buffer& bytes) {
    try {
      handle_message(tag, bytes);
    } catch (const std::exception& e) {
      std::string why = "the host's message could not be read (tag " + std::to_string(tag) + ": " +
                        e.what() + ")";
      ferry::detail::debug_log("mpi agent: %s", why.c_str());
      if (tag == tag_start) report_exit(-1, 0, 127, why);
    }
  }

  void handle_message(int tag, Buffer& bytes) {
    switch (tag) {
      case tag_welcome: welcomed(unpack_strings(bytes.view())); break;
      case tag_start:
        // A host that sent no welcome first is of a ferry before MPI protocol 1.
        if (!welcomed_)
          cannot_serve("the host said no MPI protocol version (a ferry host older than MPI protocol 1), this agent " +
                       describe_protocol(std::to_string(mpi_protocol_version), FERRY_VERSION_STRING));
        // Not served: its pool hears why, as of a worker that could not start here.
        if (!mismatch_.empty()) {
          report_exit(-1, 0, 127, mismatch_);
          break;
        }
        start_child(unpack_strings(bytes.view()));
        break;
      case tag_stop:
        if (child_) kill_child();
        break;
      case tag_frames: {
        auto payload = receiver_.take_payload();
        if (payload) {
          held_.push_back(Held{std::move(bytes), std::move(payload)});  // a chunked frame's head
        } else {
          try {
            for (auto& f : split_frames(std::move(bytes))) held_.push_back(Held{std::move(f), nullptr});
          } catch (const proto::ProtocolError& e) {
            ferry::detail::debug_log("mpi agent: dropped a message from the host: %s", e.what());
          }
        }
        release_frames();
        break;
      }
      case tag_frame_lost:
      case tag_frame_stalled:  // the host began it and stopped sending its bytes
        answer_lost(bytes);
        break;
      case tag_unreadable:
        ferry::detail::debug_log("mpi agent: dropped a message from the host: %.*s",
                                 static_cast<int>(bytes.size()), bytes.data());
        break;
      case tag_lib_offer: offered(unpack_strings(bytes.view())); break;
      case tag_lib_data: received_library(unpack_strings(bytes.view())); break;
      case tag_detach:
        // The host will not call MPI_Finalize (its fence would need this rank): this process
        // leaves without it whatever happens, and may now die without Slurm ending the step.
        detached_ = true;
        if (std::string why = leave_pmix_server(); !why.empty())
          ferry::detail::debug_log("mpi agent: leaving Slurm's PMIx server: %s", why.c_str());
        break;
      default: break;
    }
  }

  /// The host's versions (tag_welcome, its answer to the hello): one of another MPI protocol is
  /// not served.
  void welcomed(const std::vector<std::string>& items) {
    welcomed_ = true;
    const std::string theirs = items.size() >= 2 ? items[1] : std::string("?");
    if (theirs == std::to_string(mpi_protocol_version)) return;
    cannot_serve("the host speaks " + describe_protocol(theirs, items.empty() ? "?" : items[0]) + ", this agent " +
                 describe_protocol(std::to_string(mpi_protocol_version), FERRY_VERSION_STRING));
  }

  /// This rank cannot serve its host (`why`: their versions differ): said once on stderr; starts
  /// are answered with it, and the rank leaves when told to, or after the peer timeout.
  void cannot_serve(const std::string& why) {
    if (!mismatch_.empty()) return;
    mismatch_ = why + ": every rank must run the ferry-mpi-worker of the host's ferry version";
    mismatch_at_ = Clock::now();
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    std::fprintf(stderr, "ferry-mpi-worker (pid %d on %s): cannot serve this host: %s; leaving\n",
                 static_cast<int>(::getpid()), name, mismatch_.c_str());
  }

  /// Arguments that did not arrive whole: their task is answered with an error.
  void answer_lost(const Buffer& head) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    Buffer answer = unrelayed_answer(head.view(), lost_reason(std::string("node ") + name));
    if (!answer.empty()) sender_.send(std::move(answer), host_, tag_frames, comm_);
  }

  void start_child(const std::vector<std::string>& items) {
    stop_child();
    held_.clear();
    std::size_t nargs = items.empty() ? 0 : std::strtoul(items[0].c_str(), nullptr, 10);
    static const bool use_rings = ferry::detail::Config::read().mpi_rings;
    std::vector<std::string> args = {"--fd", "3", "--parent", std::to_string(::getpid())};
    if (use_rings) args.insert(args.end(), {"--rings", "1"});
    std::vector<std::pair<std::string, std::string>> env;
    bool allow_unsafe = ferry::detail::unsafe_allowed_by_environment();
    for (std::size_t i = 1; i < items.size(); ++i) {
      if (i <= nargs) {
        args.push_back(items[i]);
        // A local worker polls its channel for a while after each result before it blocks
        // (FERRY_WORKER_SPIN_US), so that the host's next task finds it awake. Here the agent
        // already polls (it must: MPI has no descriptor to wait on), on the same vCPU as its
        // worker more often than not, and two pollers there take turns of several µs each:
        // measured, the round trip was 49-60 µs with the worker polling and 38-42 µs with it
        // blocked, woken by the agent's write (docs/benchmarks.md). So it blocks.
        if (i > 1 && items[i - 1] == "--spin-us") args.back() = "0";
      } else if (auto eq = items[i].find('='); eq != std::string::npos) {
        env.emplace_back(items[i].substr(0, eq), items[i].substr(eq + 1));
      } else if (items[i] == start_allow_unsafe) {
        allow_unsafe = true;  // the executor's choice, as its local launcher's
      }
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      report_exit(-1, 0, 127, std::string("cannot make its channel: socketpair: ") + std::strerror(errno));
      return;
    }
    Fd mine(sv[0]), theirs(sv[1]);
    fs::path worker;
    // Every worker it could not start is reported with why and the path it tried (pid -1): the
    // host adds this rank and its node, which the user of a job of many nodes needs to know.
    try {
      worker = ferry::default_worker_path();
      for (const auto& [k, v] : env)
        if (k == "FERRY_WORKER") worker = v;  // the host's ExecutorOptions::worker_path
      ferry::detail::SharedRings rings;
      if (use_rings) rings = ferry::detail::SharedRings::create();
      if (!allow_unsafe) {
        // As the local backend: a missing one is posix_spawn's ENOENT below, said as a path to
        // fix (unless another user could create it meanwhile).
        if (std::string why = ferry::detail::untrusted_reason_if_present(worker); !why.empty()) {
          report_exit(-1, 0, 127, "refusing to run " + worker.string() + ": " + why);
          return;
        }
      }
      auto p = ferry::detail::spawn_process(worker, args, worker_environment(env, allow_unsafe), theirs.get());
      child_.emplace();
      for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--max-frame-bytes") child_->max_frame = std::strtoull(args[i + 1].c_str(), nullptr, 10);
      child_->pid = p.pid;
      child_->pidfd = std::move(p.pidfd);
      child_->sock = std::move(mine);
      if (use_rings) {
        // The rings' memfd is the channel's first byte (sealed: the worker cannot shrink it
        // under this process's mapping).
        child_->rings = std::move(rings);
        child_->to_ring = child_->rings.to_worker();
        child_->from_ring = child_->rings.to_agent();
        child_->from_worker.set_descriptor_source(child_->sock.get());
        if (!ferry::detail::send_all(child_->sock.get(), {std::string_view("", 1)}, child_->rings.fd())) {
          // It waits for that byte for good (the agent's end stays open): a start failure, said.
          // ETOOMANYREFS: this user's descriptors in flight on UNIX sockets are past the agent's
          // RLIMIT_NOFILE, which a task of another worker can bring about.
          const int err = errno;
          std::string why = std::string("its MPI agent could not pass it its rings (") + std::strerror(err) +
                            (err == ETOOMANYREFS ? ": this user's descriptors in flight on UNIX sockets are past the "
                                                   "agent's RLIMIT_NOFILE; FERRY_MPI_RINGS=0 does without them"
                                                 : "") +
                            ")";
          stop_child();
          report_exit(-1, 0, 127, why);
          return;
        }
        child_->rings.drop_descriptor();  // the mapping stays; nothing can open the memfd again
      }
      ::fcntl(child_->sock.get(), F_SETFL, ::fcntl(child_->sock.get(), F_GETFL) | O_NONBLOCK);
    } catch (const std::system_error& e) {
      // posix_spawn's failures that say the path is wrong (missing, not executable, not a
      // program), as the local backend judges them; others (no memory, no process left) are
      // this node's limits, said as they are.
      const int code = e.code().value();
      const bool wrong_path = code == ENOENT || code == EACCES || code == ENOEXEC || code == ENOTDIR ||
                              code == ELOOP || code == EISDIR;
      report_exit(-1, 0, 127,
                  "cannot run " + worker.string() + ": " +
                      (wrong_path ? e.code().message() + "; set ExecutorOptions::worker_path or FERRY_WORKER to "
                                                         "a ferry-worker of that node"
                                  : std::string(e.what())));
    } catch (const std::exception& e) {
      report_exit(-1, 0, 127, "cannot run " + worker.string() + ": " + e.what());
    }
  }

  /// SIGKILL to the worker through its pidfd: once it is reaped (pump_child relays what it left
  /// in its ring after try_reap, and garbage there ends here) its pid may be another process's.
  void kill_child() {
    if (child_->pidfd) {
      ::syscall(SYS_pidfd_send_signal, child_->pidfd.get(), SIGKILL, nullptr, 0);
    } else if (!child_->reaped) {
      ::kill(child_->pid, SIGKILL);
    }
  }

  void stop_child() {
    if (!child_) return;
    kill_child();
    ferry::detail::reap(child_->pid);
    child_.reset();
  }

  void report_exit(pid_t pid, int sig, int code, const std::string& why = {}) {
    sender_.send(pack_strings({std::to_string(pid), std::to_string(sig), std::to_string(code), why}),
                 host_, tag_exited, comm_);
  }

  /// Reads the worker's channel and sends what it wrote to the host, every frame read in this
  /// pass in one message (FrameBatch). False once the channel is closed (a closed channel is not
  /// read again; with rings, the ring still is).
  bool relay_child(bool& moved, bool look_at_channel = true) {
    std::vector<OutFrame> frames;
    bool open = !child_->closed_at;
    std::vector<Buffer> nothing_back;  // a worker sends no task frames
    try {
      if (child_->rings) {
        auto& ring = child_->from_ring;
        if (!child_->from_worker.pump([&ring](char* p, std::size_t n) { return static_cast<ssize_t>(ring.read(p, n)); },
                                      frames, nothing_back))
          throw proto::ProtocolError("its ring to the agent is corrupt");
        if (ring.producer_waits()) ring.wake_producer();
        // The channel holds doorbells (dropped), descriptors (kept for the frames that announce
        // them) and the worker's end: looked at after a nap it woke, else now and then.
        if (open && (look_at_channel || child_bell_)) {
          child_bell_ = false;
          ssize_t n = child_->from_worker.collect(child_->sock.get());
          open = !(n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR));
        }
      } else if (open) {
        open = child_->from_worker.pump(child_->sock.get(), frames, nothing_back);
      }
    } catch (const std::exception& e) {
      // Garbage from the worker: it is killed, its end reported with the reason.
      open = false;
      child_->why = std::string("its MPI agent stopped it: ") + e.what();
      kill_child();
      child_->killed = true;
    }
    moved = moved || !frames.empty();
    for (auto& f : frames) batch_.add(std::move(f), sender_, host_, comm_);
    batch_.flush(sender_, host_, comm_);
    return open;
  }

  /// Relays the worker's frames to the host and notices its end. True if anything happened.
  /// Its end shows as the channel's end (the worker holds the only other end; the channel is
  /// close-on-exec in it), or else, rarely, as its pidfd: that is looked at only now and then
  /// (`look_at_end`), a wait system call per pass costing as much as the relay itself.
  ///
  /// The channel's end is not the process's: a task can close or shut down the descriptor and go
  /// on running. Waiting for it there (a blocking waitpid) stopped the agent for good: no
  /// heartbeats, no quit read, a job that never ended. So the agent asks without waiting, goes
  /// on, and kills a worker still running closed_channel_grace after its channel closed, as the
  /// host's pool does with a local worker; its end is reported with the reason.
  bool pump_child(bool look_at_end) {
    bool moved = false;
    // Its frames wait in the ring (or the channel) while MPI has not sent what was read before:
    // a worker writing faster than the link to the host carries them filled the agent's memory
    // with sends (Sender::max_buffered). A full ring makes the worker wait; its end is still
    // seen through its pidfd.
    const bool hold_back = sender_.buffered() > Sender::max_buffered;
    bool open = hold_back ? !child_->closed_at : relay_child(moved, look_at_end);
    if (!child_->to_worker.empty() && !flush_to_worker()) child_->to_worker.clear();
    ferry::detail::ExitStatus st;
    bool ended = false;
    if (!open) {
      ended = ferry::detail::try_reap(child_->pid, st);
      auto now = Clock::now();
      if (!ended && !child_->closed_at) {
        child_->closed_at = now;  // on its way out, most likely: its pidfd says when
        moved = true;
      } else if (!ended && !child_->killed && now - *child_->closed_at >= closed_channel_grace) {
        if (child_->why.empty())
          child_->why = "its MPI agent stopped it: it closed its channel to the agent and went on running";
        kill_child();
        child_->killed = true;
      }
    } else if (look_at_end) {
      ended = ferry::detail::try_reap(child_->pid, st);
    }
    if (ended) {
      child_->reaped = true;
      // Last frames it wrote before it died go first (with rings, also after its channel closed).
      for (int i = 0; i < 64; ++i) {
        bool more = false;
        relay_child(more);
        if (!more) break;
      }
      report_exit(child_->pid, st.signal, st.exit_code, child_->why);
      child_.reset();
    }
    return moved || ended;
  }

  /// The host offers a library: use our own copy if it has the same content, else a cached one,
  /// else ask for its bytes (once per key: several paths may have the same content, a link and
  /// its target, or a copy). Frames wait until every offered library is here.
  void offered(const std::vector<std::string>& items) {
    if (items.size() != 2 || !is_content_key(items[1]))
      throw proto::ProtocolError("a library offer without a content key");
    const std::string& path = items[0];
    const std::string& key = items[1];
    // What this path was settled as, or waited for, belongs to its content before this offer.
    local_.erase(path);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      it->second.erase(path);
      it = it->second.empty() ? waiting_.erase(it) : std::next(it);  // its bytes are dropped when they come
    }
    static const bool ship_always = ferry::detail::Config::read().mpi_ship_always;
    if (!ship_always && usable(path, key)) {
      local_[path] = path;
      return;
    }
    fs::path cached = cache_ / (key + ".so");
    if (usable(cached, key)) {
      local_[path] = cached.string();
      return;
    }
    auto& paths = waiting_[key];
    bool asked = !paths.empty();
    paths.insert(path);
    if (!asked) sender_.send(pack_strings({key}), host_, tag_lib_need, comm_);
  }

  void received_library(const std::vector<std::string>& items) {
    if (items.size() != 2 || !is_content_key(items[0]))
      throw proto::ProtocolError("library bytes without a content key");
    const std::string& key = items[0];  // names files in the cache: checked above
    auto it = waiting_.find(key);
    if (it == waiting_.end()) return;
    std::set<std::string> paths = std::move(it->second);
    waiting_.erase(it);
    fs::path cached = cache_ / (key + ".so");
    fs::path tmp = cache_ / (key + ".so.tmp." + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove(tmp, ec);  // a leftover of an earlier agent of this pid
    // Checked before it is ever loaded. Bytes that do not match their key are dropped, and the
    // worker is pointed at the cache's file, removed: it reports the library as missing. Never
    // at the host's path: this node's file there failed the check in offered().
    std::string here;
    if (!cache_refused_.empty()) {
      // Not even the cache's file name: another user may have put a file there.
      here = unloadable(cache_refused_, key + ".so");
    } else {
      if (!items[1].empty() && write_new_file(tmp, items[1]) && usable(tmp, key)) {
        fs::rename(tmp, cached, ec);
      } else {
        fs::remove(tmp, ec);
        fs::remove(cached, ec);  // it failed its check in offered()
      }
      here = cached.string();
    }
    for (const auto& path : paths) local_[path] = here;  // every path offered with this content
    release_frames();
  }

  /// Passes held frames to the worker, in order, once no library is awaited.
  void release_frames() {
    if (!waiting_.empty() || !child_) return;
    while (!held_.empty()) {
      Buffer frame = std::move(held_.front().frame);
      std::shared_ptr<SharedBytes> payload = std::move(held_.front().payload);
      held_.pop_front();
      if (frame.size() > proto::header_size &&
          static_cast<proto::FrameType>(frame.data()[2]) == proto::FrameType::define) {
        if (!settle_define(frame)) continue;
      }
      // A payload that came in chunks: the worker maps its memfd, as from a local host.
      if (payload) {
        push_passed(child_->to_worker, std::move(frame), std::move(payload));
      } else {
        child_->to_worker.push(std::move(frame));
      }
      gave_work_ = true;
    }
    if (!flush_to_worker()) child_->to_worker.clear();
  }

  /// Points a define frame at what this node may load: the library's settled path here (its own
  /// file, checked, or the cache's), else a path that cannot load and says why. Never the host's
  /// path unchecked: a plugin never offered (the host could not hash its file) or whose offer
  /// was lost would have the worker load whatever file is at that path on this node, and the
  /// host's main program likewise (the worker loads it to report why it cannot run its
  /// function; the loader's message then names this path, and the host still reports the
  /// function as defined in the main program). False when the frame cannot be read: it is
  /// dropped, not passed on as it is.
  bool settle_define(Buffer& frame) {
    proto::Define d;
    try {
      d = proto::decode_define(frame.view().substr(proto::header_size));
    } catch (const proto::ProtocolError& e) {
      ferry::detail::debug_log("mpi agent: dropped a define frame it cannot read: %s", e.what());
      return false;
    }
    std::string here;
    const std::string name = fs::path(d.library).filename().string();
    if (d.kind == proto::RefKind::main_program) {
      here = unloadable("the host's main program is not loaded on another node", name);
    } else if (auto it = local_.find(d.library); it != local_.end()) {
      here = it->second;
    } else {
      here = unloadable("the host offered no content key for it", name);
    }
    if (here != d.library) {
      d.library = std::move(here);
      frame = proto::encode_define(d);
    }
    return true;
  }

  /// Sends what is queued for the worker, through the rings or the channel. False on a hard
  /// error (the worker gone, or its ring corrupt): what is queued is then dropped, and a worker
  /// that may live on is killed, its end reported with the reason.
  bool flush_to_worker() {
    // A worker whose channel is closed gets nothing more: it is about to end, or be killed.
    if (child_->closed_at) return true;
    for (;;) {
      if (child_->rings ? child_->to_worker.flush(child_->to_ring, child_->sock.get())
                        : child_->to_worker.flush(child_->sock.get()))
        return true;
      const int err = errno;
      std::string why;
      if (err == ETOOMANYREFS) {
        // The kernel refused to pass a payload's memfd: this user's descriptors in flight on UNIX
        // sockets are past the agent's RLIMIT_NOFILE (a task can bring that about). Nothing of
        // that frame went: its bytes go inline when they fit the worker's frames. The worker
        // was killed with no reason (rings) or left waiting for the frames dropped (a call that
        // never ended).
        Buffer refused;
        if (send_inline_instead(child_->to_worker, child_->max_frame, refused)) continue;
        if (!refused.empty()) {
          // That call fails saying why; the frames behind it cannot be taken out of the queue,
          // so the worker goes too (its running call fails with the reason below).
          Buffer answer = unrelayed_answer(refused.view(), refused_reason("its worker", refused, child_->max_frame));
          if (!answer.empty()) sender_.send(std::move(answer), host_, tag_frames, comm_);
        }
        why = "its MPI agent stopped it: it could not pass it a call's shared memory (" +
              std::string(std::strerror(err)) +
              ": this user's descriptors in flight on UNIX sockets are past the agent's RLIMIT_NOFILE)";
      } else if (err == EPROTO) {
        // A worker alive behind a ring it broke would wait for frames that never come.
        why = "its MPI agent stopped it: its ring from the agent is corrupt";
      } else if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
        // Its end is closed: it is ending, and its end is seen (pump_child); with rings, killed
        // as before (a carrier's end says nothing of the ring's).
        if (!child_->rings) return false;
      } else {
        why = std::string("its MPI agent stopped it: it could not send it frames (") + std::strerror(err) + ")";
      }
      // A worker left alive with its frames dropped would wait for them for good, and its calls
      // with it: it is stopped, and its end reported with the reason (the host fails its calls).
      if (child_->why.empty()) child_->why = std::move(why);
      kill_child();
      child_->killed = true;
      return false;
    }
  }

  MPI_Comm comm_;
  int host_;
  Sender sender_;
  Receiver receiver_;
  std::optional<Child> child_;
  struct Held {
    Buffer frame;
    std::shared_ptr<SharedBytes> payload;  // of a frame that came in chunks (its head has flag_shm)
  };
  std::deque<Held> held_;
  bool gave_work_ = false;  // release_frames wrote frames for the worker in this pass
  std::map<std::string, std::set<std::string>> waiting_;  // content key → host paths offered with it
  std::map<std::string, std::string> local_;    // host path → path here
  std::string cache_refused_;  // why nothing is written into the cache ("" when it is private)
  fs::path cache_ = shipped_cache_dir(cache_refused_);
  Clock::time_point last_heard_, last_sent_;
  bool heard_from_host_ = false;  // anything from the host yet (say_host_gone)
  bool welcomed_ = false;         // the host's versions arrived (tag_welcome)
  std::string mismatch_;          // why this rank cannot serve its host (cannot_serve), or ""
  Clock::time_point mismatch_at_{};
  LoopGap loop_gap_;
  Pace pace_;
  FrameBatch batch_;
  // How often a spinning agent asks whether its worker ended though its channel is open.
  static constexpr std::chrono::milliseconds reap_look_period{1};
  Clock::time_point last_reap_look_{};
  bool child_bell_ = false;   // the last nap was woken by its channel (rings: a doorbell, its end)
  bool child_ended_ = false;  // its pidfd was seen readable in a nap
  bool child_quiet_ = false;  // the last nap saw nothing on its channel

 public:
  /// Whether MPI_Finalize can be called: the host said quit and every rank it knew is alive.
  bool may_finalize_ = false;
  /// Left Slurm's PMIx server (tag_detach): no MPI_Finalize, whatever else happens.
  bool detached_ = false;
};

/// How long MPI_Finalize may take before the agent leaves without it.
constexpr std::chrono::seconds finalize_limit{10};

}  // namespace

int run_agent(MPI_Comm comm, int host_rank, bool finalize) {
  ignore_sigpipe();  // a dead host is noticed by heartbeat, not by a signal
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  // Started by mpirun as rank 0, or run alone (an MPI singleton, rank 0 of 1): the host's place
  // is its own. It sent its hello and heartbeats to itself, took them for the host's, and served
  // nobody for good (alone: a process that never ended; as rank 0 of mpirun -n N ferry-mpi-worker,
  // the other ranks left after the timeout, exit status 65, and this one stayed).
  int inter = 0, me = -1, size = 0;
  if (MPI_Comm_test_inter(comm, &inter) == MPI_SUCCESS && !inter && MPI_Comm_rank(comm, &me) == MPI_SUCCESS &&
      me == host_rank) {
    MPI_Comm_size(comm, &size);
    std::fprintf(stderr,
                 "ferry-mpi-worker: no ferry host to serve: this process is rank %d of a job of %d, the host's "
                 "place. It is started beside a host program (mpirun -n 1 ./host : -n N ferry-mpi-worker), "
                 "or by one (spawned, FERRY_MPI_WORKER); it does nothing alone\n",
                 me, size);
    std::fflush(nullptr);
    // No MPI_Finalize: in a job of N its fence would wait for agents that wait for a host.
    if (finalize) ::_exit(static_cast<int>(proto::WorkerExit::usage));
    return static_cast<int>(proto::WorkerExit::usage);
  }
  int code = 0;
  bool may_finalize = false, detached = false;
  {
    Agent agent(comm, host_rank);
    code = agent.run();
    may_finalize = agent.may_finalize_;
    detached = agent.detached_;
  }
  if (!finalize) return code;
  if (!may_finalize) {
    // Open MPI's MPI_Finalize starts with a fence of every process of the job, and a rank that
    // died never joins it: the agent would wait there for good, and the job with it (seen under
    // load after a killed rank). The job runs with orte_enable_recovery, under which leaving
    // without MPI_Finalize is not an error. Under srun the agent may also have left Slurm's PMIx
    // server (tag_detach), and then the host does not finalise either.
    ferry::detail::debug_log("mpi agent: leaving without MPI_Finalize (%s)",
                             detached ? "it left Slurm's PMIx server" : "a rank of the job was lost, or the host is gone");
    std::fflush(nullptr);
    ::_exit(code);
  }
  // A fence that does not end (a peer lost that the host did not know of) ends the process.
  std::thread([code] {
    std::this_thread::sleep_for(finalize_limit);
    ferry::detail::debug_log("mpi agent: MPI_Finalize did not return within %lld s: leaving",
                             static_cast<long long>(finalize_limit.count()));
    std::fflush(nullptr);
    ::_exit(code);
  }).detach();
  MPI_Finalize();
  return code;
}

}  // namespace ferry::mpi::detail

namespace ferry::mpi::detail {

bool spawned_by_a_ferry_host() {
  std::FILE* f = std::fopen("/proc/self/cmdline", "re");
  if (!f) return false;
  std::string all;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) all.append(buf, n);
  std::fclose(f);
  // NUL-separated arguments; the program's name (the first) is not one of them.
  std::size_t at = all.find('\0');
  while (at != std::string::npos && at + 1 < all.size()) {
    const std::size_t end = all.find('\0', at + 1);
    if (std::string_view(all).substr(at + 1, end == std::string::npos ? std::string::npos : end - at - 1) ==
        spawned_agent_argument)
      return true;
    at = end;
  }
  return false;
}

}  // namespace ferry::mpi::detail

namespace ferry::mpi {

void serve(int& argc, char**& argv) {
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready) {
    detail::prepare_mpi_environment();
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    detail::ferry_initialised_mpi() = true;  // rank 0's hub finalises it at exit
  }
  // Spawned by a ferry host (FERRY_MPI_WORKER names this program; the hub marks its spawns with
  // spawned_agent_argument): an agent of that host, as ferry-mpi-worker would be. It went on as a
  // host of its own, which spawned agents of its own (this program again), each spawning theirs:
  // 49 processes within 4 s here, and the first host's work failed. A program some other MPI
  // program spawned goes on as a host.
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL && detail::spawned_by_a_ferry_host()) std::exit(detail::run_agent(parent, 0, true));
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1 && rank != 0) std::exit(detail::run_agent(MPI_COMM_WORLD, 0, true));
  // Rank 0 of a job of N: the agents take the host for gone after FERRY_MPI_TIMEOUT_MS without a
  // word from it, counted from their start. The hub used to start with the first executor, so a
  // host that did anything longer first (reading its input) lost every rank, and its work failed
  // with BrokenProcessPool ("every remote rank of the job has died"). Its thread starts now, and
  // heartbeats from here on; only where MPI may be called from it while the program calls MPI too.
  if (size > 1) {
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (provided == MPI_THREAD_MULTIPLE) detail::start_hub();
  }
}

}  // namespace ferry::mpi
