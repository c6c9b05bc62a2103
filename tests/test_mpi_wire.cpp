// SPDX-License-Identifier: BSD-3-Clause
// mpi/src/wire.cpp on its own: payloads sent in chunks and reassembled in order (MPI singleton).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <mpi.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "wire.hpp"
#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "support/fixture.hpp"

namespace {

namespace proto = ferry::detail::protocol;
using ferry::detail::Buffer;
using namespace ferry::mpi::detail;

/// MPI for this test process: a singleton (each test case runs in a process of its own).
MPI_Comm self() {
  static bool ready = [] {
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    ::setenv("OMPI_MCA_btl", "self,vader,tcp", 0);
    ::setenv("OMPI_MCA_btl_tcp_if_include", "lo", 0);
    ::setenv("OMPI_MCA_oob_tcp_if_include", "lo", 0);
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    std::atexit([] { MPI_Finalize(); });
    return true;
  }();
  (void)ready;
  return MPI_COMM_SELF;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 13 + (i >> 8) + seed);
  return s;
}

/// A whole inline task frame for call `call` with argument bytes `args`.
Buffer task_frame(std::uint64_t call, const std::string& args) {
  Buffer b = proto::encode_task_head({call, 1, 1}, args.size());
  b.append(args.data(), args.size());
  return b;
}

Buffer bytes_of(const std::string& s) {
  Buffer b;
  b.append(s.data(), s.size());
  return b;
}

/// An OutFrame sent apart from its payload, as FrameForwarder makes them.
OutFrame chunked_task(std::uint64_t call, const std::string& args) {
  auto keep = std::make_shared<std::string>(args);
  OutFrame f;
  f.bytes = proto::encode_shared_task({call, 1, 1}, args.size());
  f.payload = *keep;
  f.keep = keep;
  return f;
}

struct Message {
  int tag = 0;
  std::string bytes;
  std::shared_ptr<SharedBytes> payload;
};

/// What `r` gives for `comm` until `count` messages came out (progress reports skipped) or
/// `looks` calls found nothing, sending what `s` still has.
std::vector<Message> receive(Receiver& r, Sender& s, MPI_Comm comm, std::size_t count,
                             int looks = 5'000'000) {
  std::vector<Message> got;
  for (int idle = 0; got.size() < count && idle < looks;) {
    s.progress();
    int source = -1, tag = 0;
    Buffer bytes;
    if (!r.next(comm, source, tag, bytes)) {
      ++idle;
      continue;
    }
    idle = 0;
    CHECK(source == 0);
    if (tag == tag_progress || tag == tag_pending) {
      CHECK(bytes.empty());
      continue;
    }
    got.push_back({tag, std::string(bytes.view()), r.take_payload()});
  }
  while (!s.progress()) {
  }
  return got;
}

std::uint64_t call_of_head(const std::string& frame) {
  proto::BodyReader r(std::string_view(frame).substr(proto::header_size));
  return proto::decode_task_head(r).call;
}

/// The bytes of a payload's memfd, read through the descriptor (what a worker maps).
std::string memfd_bytes(const SharedBytes& p) {
  std::string s(p.size(), '\0');
  CHECK(::pread(p.fd(), s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
  return s;
}

}  // namespace

TEST_CASE("Mpi.wire.a_content_key_is_64_lowercase_hex_digits") {
  const std::string key(64, 'a');
  CHECK(is_content_key(key));
  CHECK(is_content_key("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
  CHECK_FALSE(is_content_key(""));
  CHECK_FALSE(is_content_key(key.substr(1)));
  CHECK_FALSE(is_content_key(key + "a"));
  CHECK_FALSE(is_content_key("A" + key.substr(1)));       // not lowercase
  CHECK_FALSE(is_content_key("../" + key.substr(3)));     // a path, 64 characters long
  CHECK_FALSE(is_content_key(std::string(63, 'a') + '\0'));
}

TEST_CASE("Mpi.wire.a_content_key_is_read_from_regular_files_only") {
  // An agent hashes whatever is at the host's plugin path on its node: a FIFO there (no writer:
  // the open waited; a writer that writes nothing: the read did) or a link to /dev/zero (endless)
  // must not hang it. If it does, SIGALRM ends this test process, and the test fails.
  namespace fs = std::filesystem;
  // A directory of its own (mkdtemp): a predictable name in /tmp could be another user's by the
  // time the files below are written through it.
  support::TempDir scratch;
  const fs::path dir = scratch.path;
  REQUIRE(fs::is_directory(dir));
  {
    std::ofstream(dir / "plugin.so", std::ios::binary) << "some bytes";
    std::ofstream(dir / "same.so", std::ios::binary) << "some bytes";
    std::ofstream(dir / "other.so", std::ios::binary) << "other bytes";
  }
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  fs::create_symlink("/dev/zero", dir / "zero");
  fs::create_symlink(dir / "fifo", dir / "to-fifo");
  ::alarm(30);
  const std::string key = content_key(dir / "plugin.so");
  CHECK(is_content_key(key));
  CHECK(content_key(dir / "same.so") == key);
  CHECK(content_key(dir / "other.so") != key);
  CHECK(content_key(dir / "fifo").empty());
  CHECK(content_key(dir / "to-fifo").empty());
  CHECK(content_key(dir / "zero").empty());
  CHECK(content_key("/dev/zero").empty());
  CHECK(content_key(dir).empty());  // a directory
  CHECK(content_key(dir / "missing").empty());
  // A FIFO with a writer that never writes: the open did not wait, but a read would have.
  int writer = ::open((dir / "fifo").c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(writer >= 0);
  CHECK(content_key(dir / "fifo").empty());
  ::close(writer);
  ::alarm(0);
}

TEST_CASE("Mpi.wire.chunked_frames_come_out_whole_and_in_order") {
  MPI_Comm comm = self();
  Sender s;
  s.set_chunk_bytes(256 << 10);
  Receiver r;
  // 5 chunks, the last of 3 bytes; exactly 2.
  const std::string first = pattern((1 << 20) + 3, 1), second = pattern(512 << 10, 2);
  s.send(OutFrame{task_frame(1, "small"), {}, {}}, 0, tag_frames, comm);
  s.send(chunked_task(2, first), 0, tag_frames, comm);
  s.send(Buffer(), 0, tag_heartbeat, comm);  // held until the frame before it is complete
  s.send(chunked_task(3, second), 0, tag_frames, comm);
  s.send(OutFrame{task_frame(4, "last"), {}, {}}, 0, tag_frames, comm);

  auto got = receive(r, s, comm, 5);
  REQUIRE(got.size() == 5);
  CHECK(got[0].tag == tag_frames);
  CHECK(got[0].bytes == std::string(task_frame(1, "small").view()));
  CHECK_FALSE(got[0].payload);

  // A chunked frame: its head as a shared-memory frame, its bytes in a memfd of their own.
  CHECK(got[1].tag == tag_frames);
  CHECK(got[1].bytes == std::string(proto::encode_shared_task({2, 1, 1}, first.size()).view()));
  REQUIRE(got[1].payload);
  CHECK(got[1].payload->size() == first.size());
  CHECK(std::string(got[1].payload->data(), got[1].payload->size()) == first);
  CHECK(memfd_bytes(*got[1].payload) == first);

  CHECK(got[2].tag == tag_heartbeat);
  CHECK(got[3].tag == tag_frames);
  CHECK(call_of_head(got[3].bytes) == 3);
  REQUIRE(got[3].payload);
  CHECK(memfd_bytes(*got[3].payload) == second);
  CHECK(call_of_head(got[4].bytes) == 4);
  CHECK(r.arriving() == 0);

  int source = 0, tag = 0;
  Buffer bytes;
  CHECK_FALSE(r.next(comm, source, tag, bytes));
}

TEST_CASE("Mpi.wire.frame_without_memory_is_lost_and_what_follows_still_comes") {
  MPI_Comm comm = self();
  Sender s;
  s.set_chunk_bytes(4096);
  Receiver r([](std::size_t) { return std::shared_ptr<SharedBytes>(); });  // no memory at all
  s.send(chunked_task(7, pattern(20'000, 3)), 0, tag_frames, comm);
  s.send(OutFrame{task_frame(8, "after"), {}, {}}, 0, tag_frames, comm);

  auto got = receive(r, s, comm, 2);
  REQUIRE(got.size() == 2);
  // Its chunks were consumed (not left to match later receives); its head says which call it was.
  CHECK(got[0].tag == tag_frame_lost);
  CHECK(call_of_head(got[0].bytes) == 7);
  CHECK_FALSE(got[0].payload);
  CHECK(got[1].tag == tag_frames);
  CHECK(got[1].bytes == std::string(task_frame(8, "after").view()));

  // What the agent answers the host with: an error result for call 7.
  Buffer answer = unrelayed_answer(got[0].bytes, lost_reason("node n1"));
  REQUIRE(answer.size() > proto::header_size);
  auto h = proto::parse_header(answer.data(), UINT64_MAX);
  CHECK(h.type == proto::FrameType::result);
  proto::BodyReader br(answer.view().substr(proto::header_size));
  auto head = proto::decode_result_head(br);
  CHECK(head.call == 7);
  CHECK(head.status == proto::ResultStatus::failed);
  CHECK(std::string(answer.view()).find("did not arrive whole on node n1") != std::string::npos);
}

TEST_CASE("Mpi.wire.forgotten_source_drops_its_frame_and_stray_chunks") {
  MPI_Comm comm = self();
  Receiver r;
  // A head whose chunks do not come (the peer died after sending it).
  Buffer head = proto::encode_shared_task({9, 1, 1}, 5000);
  proto::BodyWriter(head).u64(1000);
  Sender s;
  s.send(std::move(head), 0, tag_frame_head, comm);
  s.send(bytes_of("held"), 0, tag_exited, comm);
  auto got = receive(r, s, comm, 1, 100'000);
  CHECK(got.empty());  // the message waits behind the frame (a heartbeat would not: it orders nothing)
  CHECK(r.arriving() == 1);

  r.forget(comm, 0);
  CHECK(r.arriving() == 0);
  CHECK(r.abandoned() == 0);  // no chunk of it was being received
  // A chunk that nothing waits for any more is dropped, reported as progress only.
  s.send(Buffer(std::size_t{1000}), 0, tag_frame_chunk, comm);
  s.send(Buffer(), 0, tag_heartbeat, comm);
  got = receive(r, s, comm, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].tag == tag_heartbeat);
  CHECK_FALSE(r.receiving(std::chrono::steady_clock::now()));

  // A frame it starts after it was forgotten (a rank declared dead is still sending) is dropped
  // whole: nothing waits for it, nothing keeps a loop looking, and what follows still comes.
  Buffer later = proto::encode_shared_task({10, 1, 1}, 1500);
  proto::BodyWriter(later).u64(1000);
  s.send(std::move(later), 0, tag_frame_head, comm);
  s.send(Buffer(std::size_t{1000}), 0, tag_frame_chunk, comm);
  s.send(Buffer(), 0, tag_heartbeat, comm);
  got = receive(r, s, comm, 1);
  CHECK(r.arriving() == 0);
  CHECK_FALSE(r.receiving(std::chrono::steady_clock::now()));
  REQUIRE(got.size() == 1);
  CHECK(got[0].tag == tag_heartbeat);
}

TEST_CASE("Mpi.wire.a_forgotten_source_has_its_whole_messages_dropped_unread") {
  // Nobody reads what a rank declared dead sends: each whole message was still received into a
  // buffer of its size and handed out (the hub then ignored it), so a hostile rank the host had
  // refused made it allocate as much as it sent (2.1 GB of RSS in an audit). Into scratch memory
  // now, as a message of a source not heard (only_from); its heartbeats still come out.
  MPI_Comm comm = self();
  Receiver r;
  Sender s;
  r.forget(comm, 0);
  s.send(Buffer(std::size_t{8} << 20), 0, tag_frames, comm);  // more than the 1 MiB of scratch
  s.send(bytes_of("late"), 0, tag_exited, comm);
  s.send(Buffer(), 0, tag_heartbeat, comm);
  auto got = receive(r, s, comm, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].tag == tag_heartbeat);
  CHECK(r.arriving() == 0);
  // A source not forgotten is read as before.
  Receiver fresh;
  s.send(bytes_of("read"), 0, tag_exited, comm);
  got = receive(fresh, s, comm, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].tag == tag_exited);
  CHECK(got[0].bytes == "read");
}

TEST_CASE("Mpi.wire.a_message_larger_than_an_int_counts_is_dropped_unread") {
  // MPI_Get_count gives MPI_UNDEFINED (negative) for more than 2 GiB - 1 bytes; a buffer of that
  // size cast to size_t asked for 2^64 bytes and threw out of the hub's loop, ending the host.
  // 3 GiB + 1 MiB sent from 1 MiB of memory: one block repeated with a stride of 0. The
  // Receiver consumes it without storing it, says so, and what follows still comes.
  MPI_Comm comm = self();
  std::vector<char> block(std::size_t{1} << 20, 'x');
  MPI_Datatype mib, many;
  REQUIRE(MPI_Type_contiguous(1 << 20, MPI_BYTE, &mib) == MPI_SUCCESS);
  REQUIRE(MPI_Type_create_hvector(3 * 1024 + 1, 1, 0, mib, &many) == MPI_SUCCESS);
  REQUIRE(MPI_Type_commit(&many) == MPI_SUCCESS);
  MPI_Request huge = MPI_REQUEST_NULL;
  REQUIRE(MPI_Isend(block.data(), 1, many, 0, tag_frames, comm, &huge) == MPI_SUCCESS);
  Sender s;
  s.send(Buffer(), 0, tag_heartbeat, comm);
  // A chunk of that size too, where a frame expects one: that frame is lost, not the process.
  Buffer head = proto::encode_shared_task({5, 1, 1}, 1000);
  proto::BodyWriter(head).u64(1000);
  s.send(std::move(head), 0, tag_frame_head, comm);
  MPI_Request huge_chunk = MPI_REQUEST_NULL;
  REQUIRE(MPI_Isend(block.data(), 1, many, 0, tag_frame_chunk, comm, &huge_chunk) == MPI_SUCCESS);

  Receiver r;
  r.set_stall_limit(std::chrono::milliseconds(200));
  std::vector<std::pair<int, std::string>> got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int sent = 0;
  auto count = [&](int t) { return std::count_if(got.begin(), got.end(), [&](const auto& g) { return g.first == t; }); };
  while ((count(tag_frame_stalled) < 1 || count(tag_heartbeat) < 2) && std::chrono::steady_clock::now() < deadline) {
    s.progress();
    for (MPI_Request* q : {&huge, &huge_chunk}) {
      int done = 0;
      if (*q != MPI_REQUEST_NULL) MPI_Test(q, &done, MPI_STATUS_IGNORE);
    }
    int source = -1, tag = 0;
    Buffer bytes;
    if (!r.next(comm, source, tag, bytes)) continue;
    if (tag == tag_progress || tag == tag_pending) continue;
    got.emplace_back(tag, std::string(bytes.view()));
    if (tag == tag_unreadable && ++sent == 2) s.send(Buffer(), 0, tag_heartbeat, comm);  // after both
  }
  REQUIRE(got.size() == 5);
  CHECK(got[0].first == tag_unreadable);
  CHECK(got[0].second.find("larger than MPI can count in an int") != std::string::npos);
  CHECK(got[1].first == tag_heartbeat);
  CHECK(got[2].first == tag_unreadable);  // the chunk, at once
  // The frame whose chunk that was cannot be whole: given up once nothing more came; the
  // heartbeat sent after both comes too, before or after it (heartbeats are never held).
  auto stalled = std::find_if(got.begin(), got.end(), [](const auto& g) { return g.first == tag_frame_stalled; });
  REQUIRE(stalled != got.end());
  CHECK(call_of_head(stalled->second) == 5);
  CHECK(count(tag_heartbeat) == 2);
  while (huge != MPI_REQUEST_NULL || huge_chunk != MPI_REQUEST_NULL) {
    int source = -1, tag = 0;
    Buffer bytes;
    r.next(comm, source, tag, bytes);
    for (MPI_Request* q : {&huge, &huge_chunk}) {
      int done = 0;
      if (*q != MPI_REQUEST_NULL) MPI_Test(q, &done, MPI_STATUS_IGNORE);
    }
  }
  MPI_Type_free(&many);
  MPI_Type_free(&mib);
}

TEST_CASE("Mpi.wire.a_frame_whose_chunks_stop_is_given_up_and_what_it_held_comes_out") {
  // A source that began a frame and stopped sending its bytes held every later message of its
  // own for good, heartbeats included, and those counted as signs of life. Held, they are no
  // news (tag_pending); after the stall limit without a chunk the frame is given up
  // (tag_frame_stalled), what waited behind it comes out, and the chunks it still owed are
  // dropped when they come rather than landing in a later frame. Heartbeats are never held (a
  // slow link's large frame must not make its peer look dead), and a frame head behind the
  // stalled frame does not restart its clock.
  MPI_Comm comm = self();
  Sender s;
  Receiver r;
  r.set_stall_limit(std::chrono::milliseconds(200));
  Buffer head = proto::encode_shared_task({1, 1, 1}, 3000);
  proto::BodyWriter(head).u64(1000);
  s.send(std::move(head), 0, tag_frame_head, comm);
  s.send(bytes_of(pattern(1000, 1)), 0, tag_frame_chunk, comm);
  s.send(bytes_of("held"), 0, tag_exited, comm);
  s.send(Buffer(), 0, tag_heartbeat, comm);

  std::vector<int> tags;
  std::string stalled;
  // Heads of new frames every 100 ms, half the stall limit, until the first frame is given up:
  // each used to restart the clock, and the first frame stayed for good.
  int heads = 0;
  const auto began = std::chrono::steady_clock::now();
  auto last_head = began;
  std::chrono::steady_clock::duration first_stall{};
  auto deadline = began + std::chrono::seconds(30);
  auto count = [&](int t) { return static_cast<int>(std::count(tags.begin(), tags.end(), t)); };
  while (std::chrono::steady_clock::now() < deadline && (count(tag_exited) == 0 || count(tag_frame_stalled) < heads + 1)) {
    s.progress();
    const auto now = std::chrono::steady_clock::now();
    if (count(tag_frame_stalled) == 0 && now - last_head > std::chrono::milliseconds(100)) {
      Buffer again = proto::encode_shared_task({static_cast<std::uint64_t>(10 + heads), 1, 1}, 1000);
      proto::BodyWriter(again).u64(1000);
      s.send(std::move(again), 0, tag_frame_head, comm);
      ++heads;
      last_head = now;
    }
    int source = -1, tag = 0;
    Buffer bytes;
    if (!r.next(comm, source, tag, bytes)) continue;
    tags.push_back(tag);
    if (tag == tag_frame_stalled && stalled.empty()) {
      stalled = std::string(bytes.view());
      first_stall = std::chrono::steady_clock::now() - began;
    }
  }
  REQUIRE(count(tag_exited) == 1);
  CHECK(count(tag_frame_stalled) == heads + 1);  // the heads' frames too, on the first one's clock
  CHECK(first_stall < std::chrono::seconds(2));
  auto heartbeat = std::find(tags.begin(), tags.end(), tag_heartbeat);
  auto held = std::find(tags.begin(), tags.end(), tag_pending);
  auto given_up = std::find(tags.begin(), tags.end(), tag_frame_stalled);
  CHECK(held != tags.end());  // the exited message, held: no news of the source
  CHECK_FALSE(is_news(tag_pending));
  REQUIRE(given_up != tags.end());
  CHECK(held < given_up);
  REQUIRE(heartbeat != tags.end());
  CHECK(heartbeat < given_up);  // not held
  CHECK(call_of_head(stalled) == 1);
  CHECK(r.arriving() == 0);

  // The chunks they owed come late, then a new frame: the late ones are dropped, the new frame
  // comes out whole.
  for (int i = 0; i < 2 + heads; ++i) s.send(Buffer(std::size_t{1000}), 0, tag_frame_chunk, comm);
  s.set_chunk_bytes(1000);
  const std::string args = pattern(2500, 7);
  s.send(chunked_task(2, args), 0, tag_frames, comm);
  auto got = receive(r, s, comm, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].tag == tag_frames);
  CHECK(call_of_head(got[0].bytes) == 2);
  REQUIRE(got[0].payload);
  CHECK(memfd_bytes(*got[0].payload) == args);
}

TEST_CASE("Mpi.wire.forwarder_sends_payloads_apart_from_where_they_are") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  ferry::detail::Fd mine(sv[0]), theirs(sv[1]);
  FrameForwarder forwarder(proto::default_max_frame, 4096);  // messages of at most 4 KiB here

  // A shared-memory task frame: the payload stays in the memfd (sealed against shrinking, as
  // ferry's blocks are), mapped.
  const std::string shared = pattern(6000, 4);
  auto memfd_of = [&](unsigned seals) {
    int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, shared.data(), shared.size()) == static_cast<ssize_t>(shared.size()));
    if (seals) REQUIRE(::fcntl(fd, F_ADD_SEALS, seals) == 0);
    return fd;
  };
  // First one its sender could still shrink under MPI's reads: answered with an error instead.
  Buffer unsealed_head = proto::encode_shared_task({9, 1, 1}, shared.size());
  int memfd = memfd_of(0);
  REQUIRE(ferry::detail::send_all(theirs.get(), {unsealed_head.view()}, memfd));
  ::close(memfd);
  Buffer shm_head = proto::encode_shared_task({1, 1, 1}, shared.size());
  memfd = memfd_of(F_SEAL_SHRINK);
  REQUIRE(ferry::detail::send_all(theirs.get(), {shm_head.view()}, memfd));
  ::close(memfd);
  // An inline task frame above the message size: split into head and payload.
  const std::string args = pattern(5000, 5);
  Buffer big = task_frame(2, args);
  // A small one, and an inline define frame above the size, which cannot be split.
  Buffer small = task_frame(3, "x");
  REQUIRE(ferry::detail::send_all(theirs.get(), {big.view(), small.view()}));

  std::vector<OutFrame> out;
  std::vector<Buffer> back;
  for (int i = 0; i < 100 && out.size() < 3; ++i) REQUIRE(forwarder.pump(mine.get(), out, back));
  REQUIRE(out.size() == 3);
  REQUIRE(back.size() == 1);  // the unsealed one's answer, for the side it came from
  proto::BodyReader answer(back[0].view().substr(proto::header_size));
  CHECK(proto::decode_result_head(answer).call == 9);

  CHECK(out[0].chunked());
  CHECK(out[0].type() == proto::FrameType::task);
  CHECK(std::string(out[0].bytes.view()) == std::string(shm_head.view()));
  CHECK(out[0].payload == shared);

  CHECK(out[1].chunked());
  CHECK(std::string(out[1].bytes.view()) ==
        std::string(proto::encode_shared_task({2, 1, 1}, args.size()).view()));
  CHECK(out[1].payload == args);

  CHECK_FALSE(out[2].chunked());
  CHECK(std::string(out[2].bytes.view()) == std::string(small.view()));

  proto::Define d;
  d.ref = 1;
  d.library = "/lib/" + std::string(5000, 'l');
  d.name = "task";
  Buffer define = proto::encode_define(d);
  REQUIRE(ferry::detail::send_all(theirs.get(), {define.view()}));
  out.clear();
  CHECK_THROWS_AS(
      [&] {
        for (int i = 0; i < 100; ++i) forwarder.pump(mine.get(), out, back);
      }(),
      proto::ProtocolError);
}

TEST_CASE("Mpi.wire.forwarder_takes_handed_frames_after_those_it_read") {
  // The pool's frames taken in the pool's thread (the hub's take_from_pool) follow those read off
  // the channel before, and are forwarded the same way (one above the message size is split).
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  ferry::detail::Fd mine(sv[0]), theirs(sv[1]);
  FrameForwarder forwarder(proto::default_max_frame, 4096);
  Buffer first = task_frame(1, "read off the socket");
  REQUIRE(ferry::detail::send_all(theirs.get(), {first.view()}));
  std::vector<OutFrame> out;
  std::vector<Buffer> back;
  for (int i = 0; i < 100 && out.empty(); ++i) REQUIRE(forwarder.pump(mine.get(), out, back));
  const std::string args = pattern(5000, 6);
  Buffer handed_small = task_frame(2, "x");
  Buffer handed_big = task_frame(3, args);
  const std::string_view pieces[] = {handed_small.view(), handed_big.view()};
  forwarder.take(pieces, out, back);
  REQUIRE(out.size() == 3);
  CHECK(back.empty());
  CHECK(std::string(out[0].bytes.view()) == std::string(first.view()));
  CHECK(std::string(out[1].bytes.view()) == std::string(handed_small.view()));
  CHECK(out[2].chunked());
  CHECK(out[2].payload == args);

  // Half a frame read off the socket: nothing may be handed over before its other half.
  Buffer split = task_frame(4, "split");
  REQUIRE(ferry::detail::send_all(theirs.get(), {split.view().substr(0, 10)}));
  out.clear();
  REQUIRE(forwarder.pump(mine.get(), out, back));
  CHECK(out.empty());
  CHECK(forwarder.partial());
  CHECK_THROWS_AS(forwarder.take(pieces, out, back), proto::ProtocolError);
  REQUIRE(ferry::detail::send_all(theirs.get(), {split.view().substr(10)}));
  for (int i = 0; i < 100 && out.empty(); ++i) REQUIRE(forwarder.pump(mine.get(), out, back));
  REQUIRE(out.size() == 1);
  CHECK(std::string(out[0].bytes.view()) == std::string(split.view()));
}

TEST_CASE("Mpi.wire.frames_of_a_pass_travel_in_one_message_and_split_back") {
  MPI_Comm comm = self();
  Sender s;
  s.set_chunk_bytes(256 << 10);
  Receiver r;
  FrameBatch batch;
  // Two small frames share a message; a chunked frame sends them first and goes alone; the small
  // frame after it starts a new message, sent by flush().
  batch.add(OutFrame{task_frame(1, "one"), {}, {}}, s, 0, comm);
  batch.add(OutFrame{task_frame(2, "two"), {}, {}}, s, 0, comm);
  const std::string big = pattern(600 << 10, 5);
  batch.add(chunked_task(3, big), s, 0, comm);
  batch.add(OutFrame{task_frame(4, "four"), {}, {}}, s, 0, comm);
  batch.flush(s, 0, comm);

  auto got = receive(r, s, comm, 3);
  REQUIRE(got.size() == 3);
  CHECK(got[0].bytes == std::string(task_frame(1, "one").view()) + std::string(task_frame(2, "two").view()));
  CHECK(got[1].payload);
  CHECK(call_of_head(got[1].bytes) == 3);
  CHECK(got[2].bytes == std::string(task_frame(4, "four").view()));

  Buffer message;
  message.append(got[0].bytes.data(), got[0].bytes.size());
  auto frames = split_frames(std::move(message));
  REQUIRE(frames.size() == 2);
  CHECK(call_of_head(std::string(frames[0].view())) == 1);
  CHECK(call_of_head(std::string(frames[1].view())) == 2);

  // Bytes that are not whole frames are refused, not passed on.
  Buffer cut;
  cut.append(got[0].bytes.data(), got[0].bytes.size() - 1);
  CHECK_THROWS_AS(split_frames(std::move(cut)), proto::ProtocolError);
}

TEST_CASE("Mpi.wire.a_running_send_keeps_loops_looking_until_its_peer_is_abandoned") {
  // Without Open MPI's progress thread a large message moves only inside MPI calls: the hub and
  // the agents keep looking while Sender::sending() says one runs, except to a peer declared dead.
  MPI_Comm comm = self();
  Sender s;
  const std::string big = pattern(8 << 20, 5);  // over any eager limit: it runs until received
  Buffer b;
  b.append(big.data(), big.size());
  s.send(std::move(b), 0, tag_frames, comm);
  CHECK_FALSE(s.progress());
  CHECK(s.sending() == 1);
  CHECK(s.buffered() == big.size());  // what an agent counts before it reads its worker again
  auto now = std::chrono::steady_clock::now();
  CHECK(s.moving(now));
  CHECK_FALSE(s.moving(now + transfer_stall));  // nothing moved for that long: stalled
  s.abandon(comm, 1);  // another peer: no change
  CHECK(s.sending() == 1);
  s.abandon(comm, 0);
  CHECK(s.sending() == 0);
  CHECK_FALSE(s.moving(now));
  CHECK(s.pending() == 1);  // still tested: MPI may use its buffer until it completes
  // Received after all: it completes and goes.
  std::string got(big.size(), '\0');
  REQUIRE(MPI_Recv(got.data(), static_cast<int>(got.size()), MPI_BYTE, 0, tag_frames, comm, MPI_STATUS_IGNORE) ==
          MPI_SUCCESS);
  for (int i = 0; i < 1'000'000 && !s.progress(); ++i) {
  }
  CHECK(s.pending() == 0);
  CHECK(s.sending() == 0);
  CHECK(s.buffered() == 0);
  CHECK(got == big);
}

TEST_CASE("Mpi.wire.a_receiver_that_hears_one_source_drops_the_others_unread") {
  // An agent hears its host alone. It took every rank's messages and ignored other sources'
  // once whole: another rank of the job sending it frame heads and chunks had it allocate their
  // payloads (up to the machine's memory; 0.5 GB in a minute by hand). Here this process is
  // rank 0 of a job of its own and hears rank 1: everything it sends itself is another's.
  MPI_Comm comm = self();
  Sender s;
  s.set_chunk_bytes(4096);
  static int allocations = 0;
  Receiver r([](std::size_t n) {
    ++allocations;
    return SharedBytes::create(n);
  });
  r.only_from(1);
  s.send(chunked_task(7, pattern(20'000, 3)), 0, tag_frames, comm);  // a head, then 5 chunks
  s.send(OutFrame{task_frame(8, "whole"), {}, {}}, 0, tag_frames, comm);
  auto got = receive(r, s, comm, 7, 200'000);
  CHECK(allocations == 0);
  CHECK(r.arriving() == 0);
  REQUIRE(got.size() == 7);
  for (const auto& m : got) {
    CHECK(m.tag == tag_unreadable);
    CHECK(m.bytes.find("from rank 0, which this process does not hear") != std::string::npos);
    CHECK_FALSE(m.payload);
  }
}
