// SPDX-License-Identifier: BSD-3-Clause
// A rank that breaks ferry's MPI protocol, for test_mpi: neither the host nor an agent may end or
// hang because another rank of the job sends what it cannot read (a rank that is not ferry, a
// ferry of another version, a corrupted message). Prints what it saw; exits 0 when all went as
// the test expects.
//   mpi_hostile agent <kind>   beside a ferry host (rank 0), in place of a ferry-mpi-worker:
//       ready    its hello cannot be read
//       unversioned  the hello of a ferry-mpi-worker before MPI protocol 1 (a pid and a host name,
//                no versions): refused at its hello, naming this host's versions
//       version  a hello of MPI protocol 0 (ferry 0.0.1): refused at its hello, naming both
//       silent   no hello and no heartbeat: it reads what the host sends until told to leave,
//                as a rank stuck before its hello would; the host must not wait for it to shut
//                its executor down, nor in MPI_Finalize: told to leave with a quit that says no
//                rank was lost, it joins no MPI_Finalize (stays until the host has ended, as a
//                stuck rank would), so the host's would wait for it
//       nohello  heartbeats, and never a hello: refused at the peer timeout (a hello is an agent's
//                first word; heartbeats before it are no sign of life)
//       library  a good hello, then a request for a library that names none
//       exited   a good hello, then, when told to start a worker, an exit report that cannot be
//                read
//       unoffered  a good hello, then a request for the bytes of a library never offered to it
//                (a well-formed key): the host must send no bytes
//       huge     a good hello, then a message of 3 GiB + 1 MiB, more than MPI can count in an int
//                (from 1 MiB of memory: a datatype that repeats one block with a stride of 0)
//       stalled  a good hello, then the head of a frame of 1 MiB in chunks of 64 KiB, one chunk,
//                and heartbeats only: the host must not count them as signs of life
//       frozen   a good hello, then a message of 4 MiB, and no MPI call until the host (the
//                ferry_test_mpi_host its launcher started beside it) has ended, at most 60 s
//                (over TCP its bytes move only while the sender calls MPI), then it exits without
//                a word: the host's hub must not wait for them (a blocking receive froze it, and
//                the honest agent left)
//       held     a good hello, the head of a frame it never sends, then 5,000 small messages,
//                held behind it: refused at once past the host's cap, not after the stall limit
//       vast     a good hello, then the head of a frame of 1 PiB: refused at once (the host
//                mapped what a head announced)
//       drip     a good hello, the head of a frame of 1 MiB, then a chunk of 1 byte every
//                300 ms: chunks dropped are no sign of life (they kept the rank alive for good)
//       deaf     a good hello, then no answer to a start nor to a stop: refused once the stop
//                went unanswered for its grace (the host waited for the worker's end for good);
//                its executor's shutdown must not wait for that grace (the worker never said
//                hello: it has no calls), nor the host's MPI_Finalize for this rank (as silent)
//       late_hello  honest but slow: its hello only once the host, heard once (it creates the
//                file $FERRY_TEST_MPI_STARTED.heard then), has stopped heartbeating (three periods
//                without a message, 750 ms: the host is leaving, ferry::mpi::finalize), as a
//                hello still on its way when an executor is made and shut down at once; the host
//                must wait for it (up to 2 s) rather than count this rank as lost
//       late_end  honest but slow: a good hello, and when told to stop the worker it was told to
//                start (and did not: it never says hello), the report of its end only once the
//                host has stopped heartbeating, as after an ordinary shutdown soon after a start;
//                it creates the file $FERRY_TEST_MPI_STARTED when the start comes (the host
//                waits for it before it shuts down)
//       escaped_hello  a hello whose host name and reason it cannot serve carry escape sequences
//                (a window title, a screen clear, colours): refused at its hello; the host's
//                errors must show them as text
//       escaped_exit  a good hello whose host name carries escape sequences, then the answer to
//                every start a worker that could not start, its reason carrying escape sequences
//     then waits to be told to leave, and prints "hostile <kind>: told to leave (<body>)" (and
//     how long after its hello); exits 3 if that does not come within 60 s, 1 if the host sent
//     it a library's bytes. Spawned by a ferry host (FERRY_MPI_WORKER naming a script that runs
//     `mpi_hostile agent <kind>`), it speaks to its parent instead of rank 0 of its job.
//   mpi_hostile host           as rank 0 of `mpirun -n 1 mpi_hostile host : -n 1 ferry-mpi-worker`:
//     welcomes the agent as a host of its MPI protocol, offers it a library whose content key climbs out of its cache ("../../escape"),
//     then that library's bytes, a body that cannot be read, and a start message that cannot be
//     read. The agent must ask for nothing, stay up, and answer the start as a worker that could
//     not start; then it is told to leave. Prints "ok hostile host".
//   mpi_hostile host version   the same, a host of MPI protocol 0 (ferry 0.0.1): the agent's hello
//     must carry its versions, and it must answer a start as a worker that could not start,
//     naming both versions; then it is told to leave. Prints "ok hostile host version".
#include <mpi.h>
#include <poll.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "processes.hpp"
#include "wire.hpp"

namespace {

using namespace ferry::mpi::detail;
namespace proto = ferry::detail::protocol;
using Clock = std::chrono::steady_clock;

MPI_Comm host_comm = MPI_COMM_WORLD;  // the host is rank 0 of it: the job's, or the parent's (spawned)
MPI_Request large_send = MPI_REQUEST_NULL;  // the huge message, moved along by next_message
bool drip = false;                          // next_message sends a 1-byte chunk every 300 ms
// A host name that would retitle a terminal's window and clear its screen (escaped_*).
const std::string escaped_host = "node\x1b]0;HOST-TITLE\x07\x1b[2J\nforged";

void send(const Buffer& b, int dest, int tag) {
  MPI_Send(b.data(), static_cast<int>(b.size()), MPI_BYTE, dest, tag, host_comm);
}

/// Sends `b` (which must outlive the send) without waiting for it. Once the host has refused
/// this rank it may end before this rank, slowed on a loaded machine, has sent all it meant to:
/// a blocking send with no shared-memory fragment left (the host no longer takes them), or queued
/// behind such a send, never returns, this rank never reads its quit, and the launcher waits for
/// it (a 90 s hang, once in ~6 runs beside another job).
void post(const Buffer& b, int dest, int tag) {
  MPI_Request r;
  MPI_Isend(b.data(), static_cast<int>(b.size()), MPI_BYTE, dest, tag, host_comm, &r);
  MPI_Request_free(&r);
}

Buffer garbage() {
  Buffer b;
  const char bytes[] = "\xff\xff\xff\x7f" "not a count of strings";
  b.append(bytes, sizeof bytes - 1);
  return b;
}

/// Heartbeats to `peer` until a message from it arrives (other than a heartbeat); false at the
/// deadline.
bool next_message(int peer, int& tag, Buffer& body, Clock::time_point deadline) {
  auto last_beat = Clock::time_point{};
  auto last_drop = Clock::time_point{};
  while (Clock::now() < deadline) {
    if (drip && Clock::now() - last_drop > std::chrono::milliseconds(300)) {
      static const Buffer byte(1);
      post(byte, peer, tag_frame_chunk);
      last_drop = Clock::now();
    }
    if (large_send != MPI_REQUEST_NULL) {
      int done = 0;
      MPI_Test(&large_send, &done, MPI_STATUS_IGNORE);
    }
    if (Clock::now() - last_beat > std::chrono::milliseconds(250)) {
      static const Buffer nothing;
      post(nothing, peer, tag_heartbeat);
      last_beat = Clock::now();
    }
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(peer, MPI_ANY_TAG, host_comm, &flag, &st);
    if (!flag) {
      ::sched_yield();  // MPI gives no descriptor to wait on: poll it, yielding the CPU
      continue;
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    body = Buffer(static_cast<std::size_t>(count));
    MPI_Recv(body.data(), count, MPI_BYTE, peer, st.MPI_TAG, host_comm, MPI_STATUS_IGNORE);
    if (st.MPI_TAG == tag_heartbeat) continue;
    tag = st.MPI_TAG;
    return true;
  }
  return false;
}

/// Waits, calling no MPI, until the host process of this job (a ferry_test_mpi_host started by
/// the same launcher as this rank) has ended; false when it is not found or outlives `limit`.
bool wait_for_host_end(std::chrono::seconds limit) {
  const pid_t launcher = ::getppid();
  pid_t host = 0;
  for (const auto& [pid, p] : support::processes()) {
    if (p.parent != launcher) continue;
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    std::string argv0;
    std::getline(cmdline, argv0, '\0');
    if (std::filesystem::path(argv0).filename() == "ferry_test_mpi_host") host = pid;
  }
  if (host == 0) return false;
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, host, 0));
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  const bool ended = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(limit).count())) == 1;
  ::close(fd);
  return ended;
}

std::string strings_of(const Buffer& body) {
  std::string out;
  if (body.size() == 0) return out;
  for (const auto& s : unpack_strings(body.view())) out += (out.empty() ? "" : ",") + s;
  return out;
}

/// A message of 3 GiB + 1 MiB to `dest`: one block of 1 MiB, repeated with a stride of 0.
void send_huge(int dest, int tag) {
  static std::vector<char> block(std::size_t{1} << 20, 'x');
  MPI_Datatype mib, many;
  MPI_Type_contiguous(1 << 20, MPI_BYTE, &mib);
  MPI_Type_create_hvector(3 * 1024 + 1, 1, 0, mib, &many);
  MPI_Type_commit(&many);
  MPI_Isend(block.data(), 1, many, dest, tag, host_comm, &large_send);
  MPI_Type_free(&many);  // MPI keeps what the send needs
  MPI_Type_free(&mib);
}

/// The file $FERRY_TEST_MPI_STARTED names, with `suffix`, created (the late kinds say where they
/// are; the host waits for it).
void say_where(const char* suffix) {
  const char* started = std::getenv("FERRY_TEST_MPI_STARTED");
  std::ofstream(std::string(started ? started : "late") + suffix).put('x');
}

/// The host's next message into `st` and `body`, if one is there; else yields the CPU, false.
bool receive_from_host(MPI_Status& st, Buffer& body) {
  int flag = 0;
  MPI_Iprobe(0, MPI_ANY_TAG, host_comm, &flag, &st);
  if (!flag) {
    ::sched_yield();
    return false;
  }
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  body = Buffer(static_cast<std::size_t>(count));
  MPI_Recv(body.data(), count, MPI_BYTE, 0, st.MPI_TAG, host_comm, MPI_STATUS_IGNORE);
  return true;
}

/// For the late kinds: heartbeats to the host and reads what it sends until it has sent nothing
/// for three heartbeat periods (750 ms: it is leaving, its hub's thread heartbeats no more), or
/// until a quit (true, in `quit`: it did not wait for this rank). The silence counts from `heard`
/// (the host's last message), or from its first heartbeat when none came yet: a host slow to
/// start (a loaded machine) is not one leaving. With `first`, creates that file with ".heard"
/// when the first heartbeat comes. False at the deadline.
bool until_the_host_leaves(Buffer& quit, bool& quitted, Clock::time_point deadline,
                           Clock::time_point heard = Clock::time_point::max(), bool first = false) {
  auto last_heard = heard, last_beat = Clock::time_point{};
  quitted = false;
  while (Clock::now() < deadline) {
    if (Clock::now() - last_beat > std::chrono::milliseconds(250)) {
      static const Buffer nothing;
      post(nothing, 0, tag_heartbeat);
      last_beat = Clock::now();
    }
    if (last_heard != Clock::time_point::max() && Clock::now() - last_heard > std::chrono::milliseconds(750))
      return true;
    MPI_Status st;
    Buffer body;
    if (!receive_from_host(st, body)) continue;
    if (st.MPI_TAG == tag_heartbeat && first && last_heard == Clock::time_point::max()) say_where(".heard");
    if (st.MPI_TAG == tag_heartbeat) last_heard = Clock::now();
    if (st.MPI_TAG == tag_quit) {
      quit = std::move(body);
      quitted = true;
      return true;
    }
  }
  return false;
}

/// A quit that says no rank was lost: the host calls MPI_Finalize, whose fence needs this rank. A
/// rank really stuck would never join it: this one stays out of it until the host has ended (the
/// host's MPI_Finalize waited up to ferry::mpi::finalize's 10 s), then leaves.
[[noreturn]] void stay_stuck(const std::string& kind) {
  std::cout << "hostile " << kind << ": joins no MPI_Finalize" << std::endl;
  std::cout << (wait_for_host_end(std::chrono::seconds(60)) ? "hostile " + kind + ": left after the host ended"
                                                             : "hostile " + kind + ": the host did not end")
            << std::endl;
  std::_Exit(0);
}

/// The silent kind: sends nothing; reads the host's messages until its quit.
int silent(Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    MPI_Status st;
    Buffer body;
    if (!receive_from_host(st, body)) continue;
    if (st.MPI_TAG != tag_quit) continue;
    std::cout << "hostile silent: told to leave (" << strings_of(body) << ")" << std::endl;
    if (body.size() == 0) stay_stuck("silent");
    return 0;
  }
  std::cout << "hostile silent: never told to leave" << std::endl;
  return 3;
}

int agent(const std::string& kind) {
  if (kind == "silent") return silent(Clock::now() + std::chrono::seconds(60));
  // A hello of this MPI protocol, from a ferry version of its own.
  auto hello = pack_strings({"12345", "hostile", "", "hostile", std::to_string(mpi_protocol_version)});
  auto began = Clock::now();
  if (kind == "ready") {
    send(garbage(), 0, tag_ready);
  } else if (kind == "unversioned") {
    send(pack_strings({"12345", "hostile"}), 0, tag_ready);
  } else if (kind == "version") {
    send(pack_strings({"12345", "hostile", "", "0.0.1", "0"}), 0, tag_ready);
  } else if (kind == "escaped_hello") {
    send(pack_strings({"12345", escaped_host, "\x1b[31mred\x1b[0m\x1b]0;SERVE-TITLE\x07\x9b" "2J", "hostile",
                       std::to_string(mpi_protocol_version)}),
         0, tag_ready);
  } else if (kind == "escaped_exit") {
    send(pack_strings({"12345", escaped_host, "", "hostile", std::to_string(mpi_protocol_version)}), 0, tag_ready);
  } else if (kind == "nohello") {
    // Only the heartbeats of next_message.
  } else if (kind == "late_hello") {
    Buffer quit;
    bool quitted = false;
    if (!until_the_host_leaves(quit, quitted, Clock::now() + std::chrono::seconds(60), Clock::time_point::max(), true)) {
      std::cout << "hostile late_hello: the host never left" << std::endl;
      return 3;
    }
    if (quitted) {
      std::cout << "hostile late_hello: told to leave (" << strings_of(quit) << ") before its hello" << std::endl;
      return 0;  // peer-lost: no MPI_Finalize
    }
    send(hello, 0, tag_ready);
  } else {
    send(hello, 0, tag_ready);
    if (kind == "library") send(pack_strings({}), 0, tag_lib_need);
    if (kind == "unoffered") send(pack_strings({std::string(64, 'a')}), 0, tag_lib_need);
    if (kind == "huge") send_huge(0, tag_frames);
    auto send_head = [](std::uint64_t size) {
      Buffer head = proto::encode_shared_result(1, size);
      proto::BodyWriter(head).u64(64 << 10);  // the chunk size
      send(head, 0, tag_frame_head);
    };
    if (kind == "stalled") {
      send_head(std::uint64_t{1} << 20);
      send(Buffer(std::size_t{64} << 10), 0, tag_frame_chunk);  // the first of 16
    }
    if (kind == "frozen") {
      static Buffer big(std::size_t{4} << 20);
      MPI_Isend(big.data(), static_cast<int>(big.size()), MPI_BYTE, 0, tag_frames, host_comm, &large_send);
      // Calls no MPI (its bytes stay here) until the host is gone; its TCP connection is not
      // what MPI expects any more after that: it leaves at once.
      std::cout << (wait_for_host_end(std::chrono::seconds(60)) ? "hostile frozen: left after the host ended"
                                                                 : "hostile frozen: the host did not end")
                << std::endl;
      std::_Exit(0);
    }
    if (kind == "held") {
      send_head(std::uint64_t{1} << 20);
      static const Buffer empty = pack_strings({});
      for (int i = 0; i < 5000; ++i) post(empty, 0, tag_lib_need);
    }
    if (kind == "vast") send_head(std::uint64_t{1} << 50);
    if (kind == "drip") {
      send_head(std::uint64_t{1} << 20);
      drip = true;
    }
  }
  auto deadline = Clock::now() + std::chrono::seconds(60);
  int tag = 0;
  Buffer body;
  while (next_message(0, tag, body, deadline)) {
    if (tag == tag_start && kind == "exited") send(garbage(), 0, tag_exited);
    if (tag == tag_start && kind == "escaped_exit")
      send(pack_strings({"-1", "0", "0", "\x1b]0;EXIT-TITLE\x07\x1b[2Jcannot run it"}), 0, tag_exited);
    if (tag == tag_start && kind == "late_end") say_where("");
    if (tag == tag_stop && kind == "late_end") {
      Buffer quit;
      bool quitted = false;
      if (!until_the_host_leaves(quit, quitted, deadline, Clock::now())) break;
      if (quitted) {
        tag = tag_quit;
        body = std::move(quit);
      } else {
        // The end of a worker killed before its hello (as an agent reports it).
        send(pack_strings({"12346", "9", "0", ""}), 0, tag_exited);
        std::cout << "hostile late_end: reported its worker's end" << std::endl;
        continue;
      }
    }
    if (tag == tag_lib_data) {
      std::cout << "hostile " << kind << ": FAILED: the host sent the bytes of a library it did not offer" << std::endl;
      return 1;
    }
    if (tag == tag_quit) {
      auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began);
      std::cout << "hostile " << kind << ": told to leave (" << strings_of(body) << ")" << std::endl;
      std::cout << "hostile " << kind << ": told " << took.count() << " ms after its hello" << std::endl;
      // A quit that says no rank was lost (the host leaves before it refused this rank): the host
      // calls MPI_Finalize, whose fence needs this rank (deaf, as a stuck rank, joins none). Else
      // the host declared it dead, and calls none.
      if (body.size() == 0 && kind == "deaf") stay_stuck(kind);
      if (body.size() == 0) MPI_Finalize();
      return 0;
    }
  }
  std::cout << "hostile " << kind << ": never told to leave" << std::endl;
  return 3;
}

/// An agent's answer to a start it must refuse: pid -1, and a reason containing `why`.
bool refused_start(const Buffer& body, const std::string& why) {
  auto items = unpack_strings(body.view());
  std::cout << "the agent answered the start: " << strings_of(body) << std::endl;
  if (items.size() != 4 || items[0] != "-1" || items[3].find(why) == std::string::npos) {
    std::cout << "FAILED: not the answer to a start it could not serve (" << why << ")" << std::endl;
    return false;
  }
  return true;
}

/// A host of MPI protocol 0 (ferry 0.0.1): the agent must not serve it, and must say why.
int host_of_another_version() {
  auto deadline = Clock::now() + std::chrono::seconds(60);
  int tag = 0;
  Buffer body;
  if (!next_message(1, tag, body, deadline) || tag != tag_ready) {
    std::cout << "FAILED: no hello from the agent" << std::endl;
    return 1;
  }
  auto hello = unpack_strings(body.view());
  std::cout << "the agent's hello: " << strings_of(body) << std::endl;
  if (hello.size() < 5 || hello[4] != std::to_string(mpi_protocol_version) || hello[3].empty()) {
    std::cout << "FAILED: the agent's hello carries no versions" << std::endl;
    return 1;
  }
  send(pack_strings({"0.0.1", "0"}), 1, tag_welcome);
  send(pack_strings({"0"}), 1, tag_start);
  bool answered = false;
  while (!answered && next_message(1, tag, body, deadline)) {
    if (tag != tag_exited) continue;
    if (!refused_start(body, "the host speaks MPI protocol 0 (ferry 0.0.1), this agent MPI protocol " +
                                 std::to_string(mpi_protocol_version)))
      return 1;
    answered = true;
  }
  if (!answered) {
    std::cout << "FAILED: the agent did not answer the start" << std::endl;
    return 1;
  }
  send(pack_strings({quit_peer_lost}), 1, tag_quit);
  std::cout << "ok hostile host version" << std::endl;
  return 0;  // without MPI_Finalize, as after a refused rank (peer-lost)
}

int host() {
  auto deadline = Clock::now() + std::chrono::seconds(60);
  int tag = 0;
  Buffer body;
  if (!next_message(1, tag, body, deadline) || tag != tag_ready) {
    std::cout << "FAILED: no hello from the agent" << std::endl;
    return 1;
  }
  send(pack_strings({"hostile", std::to_string(mpi_protocol_version)}), 1, tag_welcome);
  send(pack_strings({"/nonexistent/libescape.so", "../../escape"}), 1, tag_lib_offer);
  send(pack_strings({"../../escape", "\x7f" "ELF not really"}), 1, tag_lib_data);
  send(garbage(), 1, tag_lib_data);
  send(garbage(), 1, tag_lib_offer);
  send(garbage(), 1, tag_start);
  // One source's messages arrive in order: anything the agent did about the messages before the
  // start arrives before its answer to the start.
  bool answered = false;
  while (!answered && next_message(1, tag, body, deadline)) {
    if (tag == tag_lib_need) {
      std::cout << "FAILED: the agent asked for a library named by an invalid key: " << strings_of(body) << std::endl;
      return 1;
    }
    if (tag == tag_exited) {
      if (!refused_start(body, "could not be read")) return 1;
      answered = true;
    }
  }
  if (!answered) {
    std::cout << "FAILED: the agent did not answer the start" << std::endl;
    return 1;
  }
  send(Buffer(), 1, tag_quit);
  MPI_Finalize();
  std::cout << "ok hostile host" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  // Spawned by a ferry host: its parent is the host.
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL) {
    host_comm = parent;
    MPI_Comm_set_errhandler(host_comm, MPI_ERRORS_RETURN);
  }
  std::string role = argc > 1 ? argv[1] : "";
  if (role == "agent" && argc == 3) return agent(argv[2]);
  if (role == "host" && argc == 2) return host();
  if (role == "host" && argc == 3 && std::string(argv[2]) == "version") return host_of_another_version();
  std::cerr << "usage: mpi_hostile agent ready|unversioned|version|silent|nohello|library|exited|unoffered|huge|stalled|frozen|"
               "held|vast|drip|deaf|late_hello|late_end|escaped_hello|escaped_exit | mpi_hostile host [version]\n";
  return 2;
}
