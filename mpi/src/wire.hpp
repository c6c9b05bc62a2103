// SPDX-License-Identifier: BSD-3-Clause
// What the host's MPI hub and the node agents say to each other: message tags and small bodies.
//
// Over MPI travel the very frames of the local backend (TAG_FRAMES: whole frames, payloads inline:
// a memfd cannot cross nodes), plus a few control messages. Messages between two ranks on one
// communicator arrive in the order they were sent, which the code shipping relies on (an offer is
// sent before the define frame that needs it).
#pragma once

#include <ferry/detail/export.hpp>
#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/buffer.hpp>

#include "wire/channel.hpp"
#include "wire/protocol.hpp"

namespace ferry::mpi::detail {

using ferry::detail::Buffer;

enum Tag : int {
  tag_frames = 1,     // both ways: whole ferry frames
  tag_heartbeat = 2,  // both ways, every heartbeat period
  tag_start = 3,      // hub → agent: start a ferry-worker (args and env)
  tag_stop = 4,       // hub → agent: kill it
  tag_exited = 5,     // agent → hub: it ended {pid, signal, exit code, why or ""}
  tag_quit = 6,       // hub → agent: leave
  tag_ready = 7,      // agent → hub: up {pid, host name}
  tag_lib_offer = 8,  // hub → agent: {path, content key}: the library the next frames need
  tag_lib_need = 9,   // agent → hub: {content key}: send its bytes
  tag_lib_data = 10,  // hub → agent: {content key, bytes}
};

/// Heartbeat period, and how long a peer may stay silent before it is considered dead
/// (FERRY_MPI_TIMEOUT_MS, default 3000).
std::chrono::milliseconds heartbeat_period();
std::chrono::milliseconds peer_timeout();

/// Open MPI's TCP transport writes to the socket of a peer that may have died, and a write to a
/// closed socket raises SIGPIPE, which by default ends the process: a rank's death would take the
/// process talking to it down too. Sets SIGPIPE to ignored when it is at its default (a handler
/// the program installed is left alone); writes then fail with EPIPE, which MPI reports.
void ignore_sigpipe();

/// Open MPI settings a ferry process needs, set in the environment before MPI_Init unless the user
/// set them, and SIGPIPE ignored (above):
/// - btl_tcp_progress_thread=1, TCP progressed by a thread of its own: without it, Open MPI 4.1
///   can spin forever inside MPI_Iprobe once a peer reached over TCP has died (seen with spawned
///   agents), and ferry's heartbeat deadline would never run;
/// - orte_enable_recovery=1: a rank that dies does not end the job. Read by the runtime this
///   process starts itself (a singleton); under mpirun it must be given to mpirun.
FERRY_INTERNAL_API void prepare_mpi_environment();

/// Whether ferry initialised MPI in this process (serve() or the hub), and so must finalise it.
std::atomic<bool>& ferry_initialised_mpi();

/// Strings in a body: u32 count, then u32-length-prefixed strings.
Buffer pack_strings(const std::vector<std::string>& items);
std::vector<std::string> unpack_strings(std::string_view body);

/// Content key of a file: its BLAKE2b key (platform/hash.hpp), hex; "" if unreadable.
std::string content_key(const std::filesystem::path& file);

/// MPI counts bytes in an int: the largest frame one message can carry is 2 GiB - 1.
constexpr std::size_t max_message_bytes = 0x7fffffff;

/// Reads whole frames off a socket and sends each to `dest` as tag_frames, payloads inline.
/// Returns false when the socket is closed.
class FrameForwarder {
 public:
  FrameForwarder() : reader_(ferry::detail::protocol::default_max_frame) {}
  /// Non-blocking: reads what is there; frames ready to send are appended to `out`. A frame
  /// above max_message_bytes (payload inlined) is not sent: a task frame is answered with an error
  /// result appended to `back` (for the side it came from), a result frame is replaced in `out`
  /// by an error result; anything else throws ProtocolError.
  bool pump(int fd, std::vector<Buffer>& out, std::vector<Buffer>& back);

 private:
  ferry::detail::FrameReader reader_;
};

/// Encodes a frame (header + body) as bytes.
Buffer frame_bytes(const ferry::detail::Frame& f);

/// Non-blocking sends whose buffers live until MPI is done with them.
class Sender {
 public:
  void send(Buffer bytes, int dest, int tag, MPI_Comm comm);
  /// Frees completed sends; true when none is pending.
  bool progress();
  std::size_t pending() const { return inflight_.size(); }

 private:
  struct InFlight {
    Buffer bytes;
    MPI_Request request;
  };
  std::vector<std::unique_ptr<InFlight>> inflight_;
};

/// Receives the next message from `comm` if one is there (any source, any tag).
bool try_receive(MPI_Comm comm, int& source, int& tag, Buffer& bytes);

}  // namespace ferry::mpi::detail
