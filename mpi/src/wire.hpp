// SPDX-License-Identifier: BSD-3-Clause
// What the host's MPI hub and the node agents say to each other: message tags and small bodies.
//
// Over MPI travel the very frames of the local backend, plus a few control messages. A frame
// whose payload is in shared memory (a memfd cannot cross nodes), or that is larger than one MPI
// message can carry, travels as its head (tag_frame_head) followed by its payload in chunks
// (tag_frame_chunk), sent from where the bytes are and received straight into a memfd on the
// other side, which hands it on as a shared-memory frame. Messages between two ranks on one
// communicator arrive in the order they were sent, which the code shipping relies on (an offer is
// sent before the define frame that needs it); the Receiver keeps that order per source while a
// frame's chunks arrive.
#pragma once

#include <sys/socket.h>

#include <ferry/detail/export.hpp>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ferry/detail/buffer.hpp>

#include "wire/channel.hpp"
#include "wire/protocol.hpp"

namespace ferry::mpi::detail {

using ferry::detail::Buffer;

enum Tag : int {
  tag_frames = 1,     // both ways: whole ferry frames
  tag_heartbeat = 2,  // both ways, every heartbeat period
  tag_start = 3,      // hub → agent: start a ferry-worker {arg count, args, NAME=value...,
                      // start_allow_unsafe if the executor allows unsafe plugins}
  tag_stop = 4,       // hub → agent: kill it
  tag_exited = 5,     // agent → hub: it ended {pid, signal, exit code, why or ""}
  tag_quit = 6,       // hub → agent: leave; {quit_peer_lost} when a rank of the job died
  tag_ready = 7,      // agent → hub: its hello {pid, host name, why it cannot serve or "",
                      // ferry version, MPI protocol} (hello_items: the places every version keeps)
  tag_lib_offer = 8,  // hub → agent: {path, content key}: the library the next frames need
  tag_lib_need = 9,   // agent → hub: {content key}: send its bytes
  tag_lib_data = 10,  // hub → agent: {content key, bytes}
  tag_frame_head = 11,   // both ways: a frame whose payload follows in chunks (see Sender)
  tag_frame_chunk = 12,  // both ways: the next chunk of that payload
  tag_detach = 13,       // hub → agent: leave Slurm's PMIx server now (see leave_pmix_server)
  tag_welcome = 14,      // hub → agent: {ferry version, MPI protocol}, the answer to every hello,
                         // before anything else the hub sends it but heartbeats
  // Never sent (MPI tags are not negative): what Receiver::next reports besides messages.
  tag_progress = -1,    // a chunk arrived, or a frame began: the source is alive; nothing to
                        // handle
  tag_frame_lost = -2,  // a frame whose payload did not arrive whole (no memory for it, or a
                        // chunk failed): the bytes are its head, for an error answer
  tag_pending = -3,     // a message held behind a frame still arriving, or a chunk whose bytes
                        // are still coming: no news of the source yet (is_news)
  tag_unreadable = -4,  // a message that could not be received (too large for MPI to count in
                        // an int, or no memory for it): consumed and dropped; the bytes say why.
                        // No ferry peer sends one
  tag_frame_stalled = -5,  // a frame none of whose chunks arrived for the stall limit: dropped
                           // with what it still owed, and what waited behind it comes out; the
                           // bytes are its head
};

/// Whether a report of Receiver::next shows that its source is alive. A message held behind a
/// frame that never completes must not: a peer that began a frame and stopped sending its bytes
/// would keep itself alive with the heartbeats held behind it, and its calls would wait forever.
/// Nor does a message that could not be read, or a frame given up on.
inline bool is_news(int tag) {
  return tag != tag_pending && tag != tag_unreadable && tag != tag_frame_stalled;
}

/// The version of what the hub and the agents say to each other (these tags and their bodies):
/// raised whenever a message changes, so that a host and an agent of two ferry builds that would
/// not understand each other tell it at the hello, naming both versions, rather than at the first
/// message one of them cannot read. Before it (ferry 0.1.0 until the thirty-second session) the
/// hello carried no version: an agent sends one since MPI protocol 1.
inline constexpr int mpi_protocol_version = 1;

/// Where the items of a hello (tag_ready) are: every version keeps these five places, so that any
/// two versions can tell each other apart (an older agent's hello has two or three items).
enum HelloItem : std::size_t {
  hello_pid = 0,
  hello_host = 1,
  hello_cannot_serve = 2,  // why the agent cannot serve (its FERRY_* environment), or ""
  hello_ferry_version = 3,
  hello_protocol = 4,
  hello_items = 5,
};

/// "MPI protocol P (ferry V)": how a hello or a welcome names its side's versions. What a peer
/// sent is cut to 64 bytes (it is repeated in errors).
inline std::string describe_protocol(std::string_view protocol, std::string_view ferry_version) {
  return "MPI protocol " + std::string(protocol.substr(0, 64)) + " (ferry " +
         std::string(ferry_version.substr(0, 64)) + ")";
}

/// In a start message, after the environment (an item without '=', which no variable is): the
/// executor allows unsafe plugins (ExecutorOptions::allow_unsafe_plugins, or the host's
/// FERRY_ALLOW_UNSAFE_PLUGINS), as a local launcher would for its workers; the agent's own
/// FERRY_ALLOW_UNSAFE_PLUGINS allows them too.
inline constexpr std::string_view start_allow_unsafe = "allow-unsafe-plugins";

/// In a quit message: the host lost a rank of the job (the agent must not call MPI_Finalize).
inline constexpr const char* quit_peer_lost = "peer-lost";

/// Heartbeat period, and how long a peer may stay silent before it is considered dead
/// (FERRY_MPI_TIMEOUT_MS, default 3000).
std::chrono::milliseconds heartbeat_period();
std::chrono::milliseconds peer_timeout();

/// Time during which this process's own loop did not run is no silence of its peers: a job
/// suspended as a whole (scontrol suspend, SIGSTOP of every process, ^Z) stops the peers too,
/// and on resume each side would otherwise find the other silent for the whole suspension and
/// give it up (every rank lost, the pool broken for good). A loop calls pass() at the start of
/// each pass; a gap since the previous one longer than heartbeat_period() (a normal pass, naps
/// included, takes at most milliseconds) is returned, and the loop moves its peers' last-heard
/// times (and its receives' stall clocks) forward by it. A peer stopped alone is still declared
/// dead after the timeout: this loop kept running then, and forgave nothing.
class LoopGap {
 public:
  std::chrono::steady_clock::duration pass(std::chrono::steady_clock::time_point now) {
    std::chrono::steady_clock::duration gap{};
    if (last_ != std::chrono::steady_clock::time_point{} && now - last_ > heartbeat_period()) gap = now - last_;
    last_ = now;
    return gap;
  }

 private:
  std::chrono::steady_clock::time_point last_{};
};

/// Open MPI's TCP transport writes to the socket of a peer that may have died, and a write to a
/// closed socket raises SIGPIPE, which by default ends the process: a rank's death would take the
/// process talking to it down too. Sets SIGPIPE to ignored when it is at its default (a handler
/// the program installed is left alone); writes then fail with EPIPE, which MPI reports.
void ignore_sigpipe();

/// Open MPI settings a ferry process needs, set in the environment before MPI_Init unless the user
/// set them, and SIGPIPE ignored (above):
/// - mpi_event_tick_rate=1: TCP is progressed from ferry's own loops (no progress thread: see
///   below), and Open MPI 4.1 then looks at its TCP sockets only every 10 ms (the default tick)
///   once a TCP peer has died (its count of the event loop's users drops to 0): every message to
///   the ranks left took ~12 ms (map at chunksize 1000, one rank killed, btl self,tcp: 84 k/s
///   against 21 M/s with this setting). 1 µs: at every progress call, as while no peer died;
/// - btl_tcp_progress_thread=0 (Open MPI's default, set so that an environment asking for the
///   thread is the user's choice): a thread of Open MPI's own reads the TCP sockets and each
///   message wakes it, two wake-ups per round trip: 67-101 µs per round trip over TCP against
///   40-53 without it (docs/benchmarks.md). So ferry's loops move TCP's bytes themselves, and
///   keep looking while a large message moves (Sender::moving, Receiver::receiving). The first
///   MPI backend set it to 1 against a spin inside MPI_Iprobe after a TCP peer died, which no
///   longer happens: over self,tcp, agents, single ranks and hosts were killed in both modes by
///   hand, and test_mpi kills ranks and hosts over TCP alone (docs/benchmarks.md);
/// - orte_enable_recovery=1: a rank that dies does not end the job. Read by the runtime this
///   process starts itself (a singleton); under mpirun it must be given to mpirun.
/// - mpi_yield_when_idle=0: ferry paces its loops itself (pace.hpp). Open MPI turns yielding on
///   by itself in an oversubscribed job, and then every probe that finds nothing calls
///   sched_yield(): twice the turns of the spin loops, one more per idle look (measured: submit
///   one by one 68-73 k/s with it, 105-110 k/s without).
FERRY_INTERNAL_API void prepare_mpi_environment();

/// Whether ferry initialised MPI in this process (serve() or the hub), and so must finalise it.
std::atomic<bool>& ferry_initialised_mpi();

/// Whether Slurm started this process directly (`srun --mpi=pmix`): its PMIx server is Slurm's
/// step daemon (namespace "slurm.pmix.<job>.<step>"), not mpirun's.
bool under_slurm_pmix();

/// Ends this process's session with its PMIx server (PMIx_Finalize on the libpmix that Open MPI
/// loaded), after which MPI point-to-point with peers already reached keeps working, but nothing
/// that needs the server does (MPI_Finalize's fence, spawn, a first contact with a new peer).
/// Why: Slurm's mpi/pmix plugin kills the whole step when a PMIx client is lost (its error
/// handler, whatever --kill-on-bad-exit says), and a client that finalised is not lost when it
/// dies. "" when done, else why not.
std::string leave_pmix_server();

/// Strings in a body: u32 count, then u32-length-prefixed strings.
Buffer pack_strings(const std::vector<std::string>& items);
std::vector<std::string> unpack_strings(std::string_view body);

/// Content key of a file: its BLAKE2b key (platform/hash.hpp), hex; "" if unreadable or not a
/// regular file.
std::string content_key(const std::filesystem::path& file);
/// Whether `key` has the form of a content key (64 lowercase hex digits). An agent names files
/// in its cache by the keys the host sends: anything else ("../x") is refused before it is
/// used in a path.
bool is_content_key(std::string_view key);

/// MPI counts bytes in an int: the largest message is 2 GiB - 1. A frame larger than that goes in
/// chunks.
constexpr std::size_t max_message_bytes = 0x7fffffff;
/// The size of a chunk of a payload. Small enough that a chunk arrives well within the heartbeat
/// deadline on a slow network (heartbeats queue behind the chunks; each chunk that arrives
/// counts as news from its sender), large enough that the per-message cost does not matter.
constexpr std::size_t default_chunk_bytes = std::size_t{64} << 20;

/// Bytes in a memfd, mapped here: where a payload that arrives in chunks is received, then handed
/// to a worker or to the pool with its descriptor (as a local host hands large arguments to its
/// workers); or a peer's memfd, mapped read-only to be sent from. No call here touches all the
/// pages at once (2 GiB of them take seconds, and the hub's and agents' loops must keep their
/// heartbeats going): they are allocated a chunk at a time (reserve), or read by MPI as it sends.
class SharedBytes {
 public:
  /// A memfd of `n` bytes mapped writable, its pages not allocated yet; nullptr when not even
  /// that can be had.
  static std::shared_ptr<SharedBytes> create(std::size_t n);
  /// `n` bytes of a peer's memfd `fd` (taken over), mapped read-only. Throws std::runtime_error
  /// (and closes `fd`) when it is not a memfd sealed against shrinking, is smaller, or cannot be
  /// mapped.
  static std::shared_ptr<SharedBytes> map(int fd, std::size_t n);
  SharedBytes(const SharedBytes&) = delete;
  SharedBytes& operator=(const SharedBytes&) = delete;
  ~SharedBytes();
  /// Allocates the pages of [at, at + n) (fallocate): false when the memory cannot be had, where
  /// MPI's store into the mapping would have raised SIGBUS.
  bool reserve(std::size_t at, std::size_t n);
  char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept { return {data_, size_}; }
  int fd() const noexcept { return fd_; }

 private:
  SharedBytes(int fd, char* data, std::size_t size) : fd_(fd), data_(data), size_(size) {}
  int fd_;
  char* data_;
  std::size_t size_;
};

/// A frame on its way to MPI. Without a payload, `bytes` is the whole frame (one tag_frames
/// message). With one, `bytes` is its head as a shared-memory frame (flag_shm; the body is the
/// task or result head and ends with the payload's size) and `payload` the bytes, which `keep`
/// keeps alive: a mapping of the peer's memfd, or the body of a frame read inline.
struct OutFrame {
  Buffer bytes;
  std::string_view payload;
  std::shared_ptr<const void> keep;
  bool chunked() const noexcept { return static_cast<bool>(keep); }
  ferry::detail::protocol::FrameType type() const noexcept {
    return static_cast<ferry::detail::protocol::FrameType>(bytes.size() > 2 ? bytes.data()[2] : 0);
  }
};

/// Reads whole frames off a socket and makes each an OutFrame: a shared-memory frame keeps its
/// payload where it is (the memfd, mapped read-only: SharedBytes::map); an inline task or result
/// frame larger than
/// `largest_message` is split into head and payload the same way. Returns false when the socket
/// is closed.
class FrameForwarder {
 public:
  /// `max_frame`: the largest inline frame read (FERRY_MAX_FRAME_BYTES, as the pool's own limit).
  explicit FrameForwarder(std::uint64_t max_frame = default_max_frame(),
                          std::size_t largest_message = max_message_bytes)
      : reader_(max_frame), largest_message_(largest_message) {}
  /// Non-blocking: reads what is there (see short_read); frames ready to send are appended to `out`. A frame whose
  /// payload cannot be mapped is not sent: a task frame is answered with an error result appended
  /// to `back` (for the side it came from), a result frame is replaced in `out` by an error
  /// result. An inline frame other than a task or a result above `largest_message` throws
  /// ProtocolError.
  bool pump(int fd, std::vector<OutFrame>& out, std::vector<Buffer>& back);
  /// As pump, the bytes from `read` (> 0 bytes, 0 none now, -1 corrupt: a shared-memory ring);
  /// descriptors from `set_descriptor_source`. False when `read` says -1.
  bool pump(const std::function<ssize_t(char*, std::size_t)>& read, std::vector<OutFrame>& out,
            std::vector<Buffer>& back);
  /// FrameReader::collect and set_descriptor_source, for frames that come from a ring.
  ssize_t collect(int fd) { return reader_.collect(fd, MSG_DONTWAIT); }
  void set_descriptor_source(int fd) noexcept { reader_.set_descriptor_source(fd); }
  /// As pump, for whole frames handed over in this process (`pieces` joined) instead of read
  /// from the socket: they come after what was read. @throws ProtocolError while part of a frame
  /// read from the socket is buffered (check partial() first).
  void take(std::span<const std::string_view> pieces, std::vector<OutFrame>& out, std::vector<Buffer>& back);
  /// True when part of a frame read from the socket is buffered.
  bool partial() const noexcept { return reader_.partial(); }

  /// FERRY_MAX_FRAME_BYTES of this process.
  static std::uint64_t default_max_frame();
  /// A read shorter than this ends a pump (the socket is likely empty: a stream socket gives what
  /// it holds, up to what is asked); a caller that needs every byte now pumps again.
  static constexpr std::size_t short_read = 4096;

 private:
  /// The frames read whole so far, to `out` (or `back`), as pump says.
  void forward_ready(std::vector<OutFrame>& out, std::vector<Buffer>& back);
  ferry::detail::FrameReader reader_;
  std::size_t largest_message_;
};

/// Encodes a frame (header + body) as bytes, inline (flag_shm cleared).
Buffer frame_bytes(const ferry::detail::Frame& f);

/// The largest batch of whole frames sent as one tag_frames message (FrameBatch); a frame larger
/// than this goes alone.
constexpr std::size_t batch_bytes = std::size_t{1} << 20;

/// Whole frames bound for one peer, sent as few tag_frames messages as possible: one MPI message
/// carries every frame the relay read in one pass (up to batch_bytes), where a message per frame
/// cost the sender an MPI_Isend and the receiver a probe and a receive each. A chunked frame
/// (OutFrame::chunked) is never batched: the frames before it are sent first, so the order holds.
class FrameBatch {
 public:
  /// Sends `frame` now (chunked) or adds it to the batch (sending the batch first when it would
  /// grow past batch_bytes).
  void add(OutFrame frame, class Sender& sender, int dest, MPI_Comm comm);
  /// Sends what is batched.
  void flush(class Sender& sender, int dest, MPI_Comm comm);

 private:
  Buffer bytes_;
};

/// The whole frames of a tag_frames message, one Buffer each. Throws ProtocolError when the bytes
/// are not whole frames.
std::vector<Buffer> split_frames(Buffer message);

/// The error result that answers a task frame, or replaces a result frame, whose payload could
/// not travel: the host reports it as SerializationError (decode_arguments for a task,
/// encode_result for a result). `frame` is the frame or its head; empty for other frame types.
Buffer unrelayed_answer(std::string_view frame, const std::string& why);

/// Why a frame reported as tag_frame_lost did not arrive, on `where` ("the host", "node n7").
std::string lost_reason(const std::string& where);

/// A shared-memory frame queued for a local peer with its payload's memfd (push_passed): what
/// keeps the memfd open, and what its sender needs to send the frame inline instead.
struct PassedPayload {
  Buffer head;  // the frame's head: flag_shm, its body ending with the payload's size
  std::shared_ptr<SharedBytes> bytes;
};

/// Queues a shared-memory frame (`head`, flag_shm) on `out`, its payload's memfd passed with its
/// first byte. Every descriptor an outbox given to send_inline_instead carries must come so.
void push_passed(ferry::detail::Outbox& out, Buffer head, std::shared_ptr<SharedBytes> payload);

/// After a flush of `out` the kernel refused for its first frame's memfd (ETOOMANYREFS: this
/// user's descriptors in flight on UNIX sockets are past this process's soft RLIMIT_NOFILE, which
/// a task can bring about by sending copies into a socket nobody reads): nothing of that frame
/// went. When its body with the payload inline fits `max_body` (its receiver's frame limit), it is
/// replaced by that inline frame, sent from where the payload is: true. Else false, and
/// `refused` is that frame's head (its sender answers its call instead), or empty when the first
/// frame carries no descriptor of push_passed's.
bool send_inline_instead(ferry::detail::Outbox& out, std::uint64_t max_body, Buffer& refused);

/// Why the payload of `refused` (send_inline_instead) did not go to `whom` ("its worker", "the
/// host's pool"), for the error answer of its call.
std::string refused_reason(const std::string& whom, const Buffer& refused, std::uint64_t max_body);

/// How long a running transfer keeps the hub's and the agents' loops looking without any of its
/// messages completing (Sender::moving, Receiver::receiving): a 64 MiB chunk moves well within it
/// at 64 MB/s or more; a peer that stopped reading costs at most this much spinning.
constexpr std::chrono::seconds transfer_stall{1};

/// How long one pass of the hub's or an agent's loop goes on taking messages (at least one of
/// each communicator): heartbeats go out between passes, and over shared memory a chunk's 64 MiB
/// are copied inside the receive that matches it. Taking every message there was, one pass took
/// all 33 chunks of a 2 GiB frame (2.9 s at the hub, 3.5 s at an agent, here; over 10 s on a
/// loaded machine) with no heartbeat sent meanwhile, and the peer took the silent side for gone:
/// the host declared the receiving agent dead, or the agents left in the middle of a result.
constexpr std::chrono::milliseconds receive_budget{100};

/// Non-blocking sends whose buffers live until MPI is done with them.
class Sender {
 public:
  void send(Buffer bytes, int dest, int tag, MPI_Comm comm);
  /// A whole frame as one message of `tag`; a chunked one as its head (tag_frame_head: the
  /// head, then the chunk size as u64) and its payload in chunks (tag_frame_chunk), sent from
  /// where the payload is.
  void send(OutFrame frame, int dest, int tag, MPI_Comm comm);
  /// Frees completed sends; true when none is pending.
  bool progress();
  std::size_t pending() const { return inflight_.size(); }
  /// Bytes of this process's memory held by sends still running (whole messages; a chunk is
  /// sent from where its payload already is): what a relay that reads faster than MPI sends
  /// piles up (an agent stops reading its worker past max_buffered).
  std::size_t buffered() const { return buffered_; }
  static constexpr std::size_t max_buffered = std::size_t{256} << 20;
  /// Sends still running to peers not abandoned.
  std::size_t sending() const { return inflight_.size() - abandoned_; }
  /// Whether a loop should keep looking (spinning) rather than nap: a send runs to a peer not
  /// abandoned, and one was posted or completed within transfer_stall. Without a progress thread
  /// of Open MPI's, TCP moves a large message's bytes only inside MPI calls: a loop that naps
  /// meanwhile moves them one socket buffer per nap (2 GiB over TCP took 14.4 s against 8.7 with
  /// Open MPI's thread; docs/benchmarks.md). A send that has not moved for transfer_stall (a
  /// stalled or dying peer, not yet declared dead) keeps no loop spinning.
  bool moving(std::chrono::steady_clock::time_point now) const {
    return sending() > 0 && now - last_moved_ < transfer_stall;
  }
  /// The sends to `dest` of `comm` (declared dead) may never complete: they are still tested
  /// (MPI may use their buffers until then) but keep no loop spinning.
  void abandon(MPI_Comm comm, int dest);
  /// The chunk size (tests use small ones).
  void set_chunk_bytes(std::size_t n) { chunk_bytes_ = n; }

 private:
  struct InFlight {
    Buffer bytes;
    std::shared_ptr<const void> keep;  // what a chunk is sent from
    MPI_Request request;
    MPI_Comm comm = MPI_COMM_NULL;
    int dest = -1;
    bool abandoned = false;
  };
  void post(std::unique_ptr<InFlight> s, const char* data, std::size_t size, int dest, int tag,
            MPI_Comm comm);
  std::vector<std::unique_ptr<InFlight>> inflight_;
  std::size_t abandoned_ = 0;  // of inflight_
  std::size_t buffered_ = 0;   // bytes of inflight_
  std::chrono::steady_clock::time_point last_moved_{};  // a send posted or completed
  std::size_t chunk_bytes_ = default_chunk_bytes;
};

/// Receives the messages of a communicator, reassembling chunked frames. Every message is taken
/// with a matched probe (MPI_Improbe) and received without blocking (MPI_Imrecv; one whose bytes
/// are still coming waits in its source's order): a chunk goes straight
/// into its place in a SharedBytes, the chunks of a source going to its oldest frame still
/// expecting bytes (one source's messages are matched in the order it sent them). Whatever else
/// a source sends while one of its frames is arriving is held until that frame is complete, so
/// every source's messages come out in the order it sent them; sources do not wait for one
/// another.
class Receiver {
 public:
  using Allocate = std::shared_ptr<SharedBytes> (*)(std::size_t);
  explicit Receiver(Allocate allocate = &SharedBytes::create) : allocate_(allocate) {}
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;
  /// Chunk receives still running keep their memory for good (the process is leaving).
  ~Receiver();

  /// The next message of `comm` if there is one (any source, any tag). A chunked frame comes out
  /// as tag_frames, `bytes` its head (flag_shm), once all of it is here: take_payload() then
  /// gives its bytes. Also tag_progress, tag_pending, tag_frame_lost, tag_unreadable and
  /// tag_frame_stalled (see Tag). A message whose size MPI cannot count in an int, or that there
  /// is no memory for, is received into scratch memory and dropped, and reported as
  /// tag_unreadable: no size a peer sends makes this throw.
  bool next(MPI_Comm comm, int& source, int& tag, Buffer& bytes);
  /// A heartbeat of `comm` taken ahead of the other messages (MPI matches by tag): a pass that
  /// stops at its receive_budget while one source streams chunks must still hear the others.
  /// False when there is none. One with bytes (no ferry peer sends that) is dropped unread.
  bool next_heartbeat(MPI_Comm comm, int& source);
  /// Hears `source` of every communicator alone: what another source sends is taken after it
  /// (never ahead of it) and dropped unread, into scratch memory (discard), reported as
  /// tag_unreadable with that source. An agent hears only its host: it received every rank's
  /// messages and ignored other sources' once they were whole, so another rank of the job that
  /// sent it frame heads and chunks had it allocate their payloads (up to the machine's memory,
  /// Receiver::max_arriving_bytes), and a flood of them took its passes ahead of its host's.
  void only_from(int source) { only_from_ = source; }
  /// The payload of the chunked frame next() returned last; null for any other message.
  std::shared_ptr<SharedBytes> take_payload() { return std::move(last_payload_); }
  /// Stops receiving for `source` of `comm` (declared dead): frames still arriving and the
  /// messages held behind them are dropped; frames it starts later and their chunks are received
  /// and dropped.
  void forget(MPI_Comm comm, int source);
  /// Chunked frames and whole messages of sources not forgotten that are not complete yet
  /// (receives of forgotten ones that still run are abandoned(), not counted here).
  std::size_t arriving() const;
  /// Whether a loop should keep looking rather than nap: a chunked frame is arriving (or a
  /// message is being received to be dropped), and a chunk of it was matched or completed within
  /// transfer_stall (see Sender::moving).
  bool receiving(std::chrono::steady_clock::time_point now) const {
    return (arriving() > 0 || !discards_.empty()) && now - last_moved_ < transfer_stall;
  }
  std::size_t abandoned() const { return abandoned_.size(); }
  /// Whether messages of `source` wait behind a frame of its still arriving: it sent them, so it
  /// was alive after it began that frame.
  bool holding(MPI_Comm comm, int source) const {
    for (const auto& s : streams_)
      if (s.comm == comm && s.source == source)
        for (const auto& in : s.queue)
          if (!in.chunked) return true;
    return false;
  }
  /// How long a source's frame may go without any chunk of it arriving (matched or completed)
  /// before it is given up (tag_frame_stalled). The peer timeout by default: a 64 MiB chunk
  /// arrives well within it.
  void set_stall_limit(std::chrono::milliseconds limit) { stall_limit_ = limit; }
  /// The loop did not run for `gap` (LoopGap): no chunk could have been seen meanwhile, so the
  /// frames arriving are not held stalled for it.
  void forgive(std::chrono::steady_clock::duration gap) {
    for (auto& s : streams_) s.last_chunk += gap;
  }

 private:
  /// Move-only: a receive may still be writing into `bytes` (a late whole message) or into
  /// `payload`, so a copy (and freeing the original) must never happen. Moves keep the buffers.
  struct Incoming {
    Incoming() = default;
    Incoming(Incoming&&) noexcept = default;
    Incoming& operator=(Incoming&&) noexcept = default;
    Incoming(const Incoming&) = delete;
    Incoming& operator=(const Incoming&) = delete;
    int tag = 0;
    Buffer bytes;                          // a whole message, or the head of a chunked frame
    bool chunked = false;
    bool late = false;  // a whole message whose receive had not completed when it was matched
    std::shared_ptr<SharedBytes> payload;  // where its chunks go
    std::uint64_t size = 0;                // of the payload
    std::uint64_t chunk = 0;               // the sender's chunk size
    std::uint64_t matched = 0;             // bytes whose chunks have been matched
    std::vector<MPI_Request> requests;     // chunk receives not seen complete
    bool draining = false;  // lost (no memory, a chunk failed): the rest is received and dropped
    bool stalled = false;   // no chunk of its source for the stall limit: given up
    std::chrono::steady_clock::time_point began;
    bool complete() const { return matched == size && requests.empty(); }
    /// Bytes it holds here: a whole message's (held, or still being received).
    std::uint64_t held_bytes() const { return chunked ? 0 : bytes.size(); }
  };
  struct Stream {
    MPI_Comm comm;
    int source;
    std::deque<Incoming> queue;  // in arrival order; the front is the oldest
    // Bytes of chunks that frames given up on (stalled) are still owed: when they come they are
    // dropped, so that they do not land in a later frame of this source.
    std::uint64_t owed = 0;
    std::chrono::steady_clock::time_point last_chunk;  // a frame began, a chunk matched or completed
    std::uint64_t held_bytes = 0;  // of the whole messages in queue (max_held_bytes)
    std::size_t held = 0;          // how many (max_held)
    std::uint64_t arriving_bytes = 0;  // payload sizes of its chunked frames in queue (max_arriving_bytes)
    /// A frame whose chunks are still coming, or a whole message whose bytes are.
    bool waiting() const {
      for (const auto& in : queue)
        if (!in.complete()) return true;
      return false;
    }
    /// How long the largest chunk of its frames still arriving takes at 1 MiB/s: on top of the
    /// stall limit, so that a slow or shared link is not taken for a stalled peer. A chunk as
    /// the frame still needs it, and at most ferry's own chunk size (64 MiB: about a minute):
    /// the sender's word on its chunks must not stretch the limit.
    std::chrono::milliseconds chunk_time() const {
      std::uint64_t chunk = 0;
      for (const auto& in : queue) {
        if (in.complete()) continue;
        // A whole message still being received counts as one chunk of its size, up to 2 GiB:
        // MPI says nothing of its progress before it is complete.
        chunk = std::max(chunk, in.chunked ? std::min({in.chunk, in.size - in.matched, std::uint64_t{default_chunk_bytes}})
                                           : in.held_bytes());
      }
      return std::chrono::milliseconds(chunk * 1000 / (std::uint64_t{1} << 20));
    }
  };
  /// The frame a head announces, its payload allocated; not chunked when the head is not a
  /// ferry peer's (dropped). `room`: the payload bytes its source may still have arriving; a
  /// larger payload sets `refused` to why.
  Incoming start_frame(int source, Buffer head, std::uint64_t room, std::string& refused);
  /// What next() reports (tag, bytes) for a whole message of `source` received complete (`in`):
  /// a frame head begins a frame; anything else comes out, or waits behind a frame of its source
  /// still arriving.
  void deliver(MPI_Comm comm, int source, Incoming in, int& tag, Buffer& bytes);
  Stream& stream_of(MPI_Comm comm, int source);
  /// Adds a message to its source's queue, counting what it holds.
  static void hold(Stream& s, Incoming in);
  /// Takes the front of a source's queue, uncounting it.
  static Incoming pop_front(Stream& s);
  /// Receives a chunk of `count` bytes into its frame, or drops it; returns what next() reports:
  /// tag_pending while its bytes are still coming (news once they are here) or when it was
  /// dropped, tag_progress when it was dropped as the chunk its lost frame expected.
  int receive_chunk(Stream* stream, MPI_Message& message, int count);
  /// Receives a matched message of `size` bytes into a scratch MiB that nobody reads (see the
  /// definition for why never a truncated receive), without waiting for its bytes.
  void discard(MPI_Message& message, MPI_Count size);
  static bool test(Incoming& in);
  void reap_abandoned();
  void reap_discards();

  Allocate allocate_;
  // Sources with a chunked frame arriving, or chunks owed. A deque: adding a source leaves the
  // others where they are (a vector's growth copied them, deque<Incoming> having no noexcept
  // move, and freed buffers that MPI was still receiving into: the host crashed over TCP), and
  // references to them stay good while a loop over them adds one (next(), deliver()).
  std::deque<Stream> streams_;
  std::vector<Incoming> abandoned_;  // forgotten or given up on, whose chunk receives still run
  std::vector<MPI_Request> discards_;  // receives of messages dropped unread, still running
  std::vector<std::pair<MPI_Comm, int>> forgotten_;  // their later frame heads open no stream
  std::chrono::steady_clock::time_point last_moved_{};  // a chunk matched or completed
  std::chrono::milliseconds stall_limit_ = peer_timeout();
  int only_from_ = MPI_ANY_SOURCE;  // only_from
  static constexpr std::size_t max_frames_arriving = 256;
  /// What one source may have held here behind a frame still arriving, or still being received
  /// as whole messages: past either, it is refused (tag_unreadable). An honest peer holds its
  /// pipeline's calls and results, each at most one inline frame.
  static constexpr std::size_t max_held = 4096;
  static constexpr std::uint64_t max_held_bytes = std::uint64_t{2} << 30;
  /// The payload bytes one source's frames may announce while they arrive: the machine's
  /// memory (a head maps its payload's size at once, charged to nothing until written: 105
  /// heads of up to 64 TiB took the host's whole address space).
  static std::uint64_t max_arriving_bytes();
  std::shared_ptr<SharedBytes> last_payload_;
};

}  // namespace ferry::mpi::detail
