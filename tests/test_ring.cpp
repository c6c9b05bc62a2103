// SPDX-License-Identifier: BSD-3-Clause
// The shared-memory rings between an MPI agent and its worker (core/src/wire/ring.*): order and
// wrap-around, indices a hostile peer corrupted, the seals, waits woken from another process,
// and frames with descriptors through Outbox and FrameReader as the agent and worker use them.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "support/fixture.hpp"
#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "wire/ring.hpp"

namespace {

using namespace ferry::detail;
constexpr std::size_t capacity = 4096;

/// The control words of the direction to the worker, as a peer that maps the memfd itself
/// reaches them.
RingControl* control_to_worker(const SharedRings& r) {
  return static_cast<RingControl*>(::mmap(nullptr, SharedRings::map_size(capacity), PROT_READ | PROT_WRITE,
                                          MAP_SHARED, r.fd(), 0));
}

std::string pattern(std::size_t n, char seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

std::string read_all(Ring& r, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    long k = r.read(out.data() + got, n - got);
    REQUIRE(k > 0);
    got += static_cast<std::size_t>(k);
  }
  return out;
}

}  // namespace

TEST_CASE("Ring.bytes_come_out_in_order_across_the_wrap") {
  SharedRings rings = SharedRings::create(capacity);
  Ring producer = rings.to_worker(), consumer = rings.to_worker();
  CHECK(consumer.empty());
  for (int round = 0; round < 5; ++round) {
    std::string sent = pattern(3000, static_cast<char>(round));  // 5 × 3000 crosses the end 3 times
    CHECK(producer.write(sent.data(), sent.size()) == 3000);
    CHECK_FALSE(consumer.empty());
    CHECK(read_all(consumer, sent.size()) == sent);
    CHECK(consumer.empty());
  }
  // The two directions are apart.
  Ring other = rings.to_agent();
  CHECK(other.empty());
}

TEST_CASE("Ring.a_full_ring_takes_what_fits_and_then_nothing") {
  SharedRings rings = SharedRings::create(capacity);
  Ring producer = rings.to_agent(), consumer = rings.to_agent();
  std::string big = pattern(capacity + 100, 'a');
  CHECK(producer.write(big.data(), big.size()) == static_cast<long>(capacity));
  CHECK_FALSE(producer.has_room());
  CHECK(producer.write(big.data(), 1) == 0);
  CHECK(read_all(consumer, 10) == big.substr(0, 10));
  CHECK(producer.has_room());
  CHECK(producer.write(big.data() + capacity, 100) == 10);
  CHECK(read_all(consumer, capacity) == big.substr(10, capacity - 10) + big.substr(capacity, 10));
}

TEST_CASE("Ring.corrupt_indices_are_refused_never_followed") {
  SharedRings rings = SharedRings::create(capacity);
  RingControl* to_worker = control_to_worker(rings);
  REQUIRE(to_worker != MAP_FAILED);
  Ring producer = rings.to_worker(), consumer = rings.to_worker();
  char buf[64];
  SUBCASE("a head past what was written: the reader says -1") {
    to_worker->head.store(capacity + 1);
    CHECK_FALSE(consumer.empty());
    CHECK(consumer.read(buf, sizeof buf) == -1);
  }
  SUBCASE("a head behind the reader (a huge unsigned distance)") {
    CHECK(producer.write("abc", 3) == 3);
    CHECK(read_all(consumer, 3) == "abc");
    to_worker->head.store(1);
    CHECK(consumer.read(buf, sizeof buf) == -1);
  }
  SUBCASE("a tail past what was written: the writer says -1") {
    to_worker->tail.store(5);
    CHECK(producer.write("abc", 3) == -1);
  }
  SUBCASE("a tail more than a ring behind") {
    CHECK(producer.write(pattern(capacity, 'x').data(), capacity) == static_cast<long>(capacity));
    to_worker->tail.store(0);
    CHECK(producer.write("a", 1) == 0);  // full, not corrupt: exactly a ring behind
    to_worker->tail.store(std::uint64_t{0} - 1);
    CHECK(producer.write("a", 1) == -1);
  }
  ::munmap(to_worker, SharedRings::map_size(capacity));
}

TEST_CASE("Ring.the_memfd_cannot_be_shrunk_and_is_mapped_only_at_its_size") {
  SharedRings rings = SharedRings::create(capacity);
  // A worker that shrank it would make the agent's next touch a SIGBUS.
  CHECK(::ftruncate(rings.fd(), 0) != 0);
  CHECK(::ftruncate(rings.fd(), static_cast<off_t>(SharedRings::map_size(capacity)) * 2) != 0);
  CHECK((::fcntl(rings.fd(), F_GET_SEALS) & F_SEAL_SEAL) != 0);
  CHECK_NOTHROW(SharedRings::map(rings.fd(), capacity));
  CHECK_THROWS_AS(SharedRings::map(rings.fd(), capacity * 2), std::system_error);
}

TEST_CASE("Ring.a_sleeping_consumer_in_another_process_is_woken_by_a_write") {
  SharedRings rings = SharedRings::create(capacity);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    SharedRings mine = SharedRings::map(rings.fd(), capacity);
    Ring in = mine.to_worker(), out = mine.to_agent();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    char c = 0;
    while (in.read(&c, 1) == 0 && std::chrono::steady_clock::now() < until) in.wait_for_data(20000);
    // Answer, then wait for room in a ring the parent filled (its read wakes this one: a sleep
    // that lasts the whole wait means no wake-up came, and fails).
    std::string fill(capacity, 'f');
    long n = out.write(fill.data(), fill.size());
    const auto asleep = std::chrono::steady_clock::now();
    while (!out.has_room() && std::chrono::steady_clock::now() < until) out.wait_for_space(20000);
    const bool woken = std::chrono::steady_clock::now() - asleep < std::chrono::seconds(10);
    long m = out.write(&c, 1);
    ::_exit(c == 'w' && n == static_cast<long>(capacity) && m == 1 && woken ? 0 : 1);
  }
  Ring to_child = rings.to_worker(), from_child = rings.to_agent();
  // The child says it sleeps before the write, so the write must wake it (else 20 s, a failure).
  CHECK(support::wait_until([&] { return to_child.consumer_waits(); }, std::chrono::seconds(10)));
  CHECK(to_child.write("w", 1) == 1);
  to_child.wake_consumer();
  std::string got;
  CHECK(support::wait_until([&] { return !from_child.empty(); }, std::chrono::seconds(10)));
  CHECK(support::wait_until([&] { return from_child.producer_waits(); }, std::chrono::seconds(10)));
  got += read_all(from_child, 100);
  from_child.wake_producer();
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(got == std::string(100, 'f'));
}

TEST_CASE("Ring.frames_and_their_descriptors_travel_as_the_agent_sends_them") {
  // Outbox::flush(ring, socket) sends a piece's descriptor first, with a byte of its own; the
  // reader takes the bytes from the ring and finds the descriptor on the socket when the frame
  // that announces it is read.
  SharedRings rings = SharedRings::create(capacity);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Fd agent(sv[0]), worker(sv[1]);
  Ring out = rings.to_worker(), in = rings.to_worker();
  Fd memfd(::memfd_create("payload", MFD_CLOEXEC));
  REQUIRE(memfd);
  Outbox box;
  box.push(protocol::encode_bye(protocol::ByeReason::shutdown));
  Buffer shared = protocol::encode_shared_result(7, 0);
  box.push(std::move(shared), memfd.get());
  std::string large = pattern(3 * capacity, 'L');  // a frame larger than the ring
  Buffer head = protocol::encode_result_head({8, protocol::ResultStatus::ok, {}}, large.size());
  box.push(std::move(head));
  box.push_view(large, nullptr);
  FrameReader reader(protocol::default_max_frame);
  reader.set_descriptor_source(worker.get());
  std::vector<Frame> frames;
  for (int i = 0; i < 100 && frames.size() < 3; ++i) {
    REQUIRE(box.flush(out, agent.get()));
    ssize_t n;
    while ((n = reader.fill([&in](char* p, std::size_t k) { return static_cast<ssize_t>(in.read(p, k)); })) > 0) {
      Frame f;
      while (reader.next(f)) frames.push_back(std::move(f));
    }
    REQUIRE(n == 0);
  }
  CHECK(box.empty());
  REQUIRE(frames.size() == 3);
  CHECK(frames[0].header.type == protocol::FrameType::bye);
  CHECK_FALSE(frames[0].fd);
  CHECK(frames[1].header.type == protocol::FrameType::result);
  CHECK(frames[1].fd);
  CHECK(frames[2].body.size() > large.size());
  CHECK(frames[2].view().substr(frames[2].body.size() - large.size()) == large);
}

TEST_CASE("Ring.a_frame_announcing_a_descriptor_never_sent_is_a_protocol_error") {
  SharedRings rings = SharedRings::create(capacity);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Fd agent(sv[0]), worker(sv[1]);
  Ring out = rings.to_worker(), in = rings.to_worker();
  Buffer shared = protocol::encode_shared_result(7, 0);
  REQUIRE(out.write(shared.data(), shared.size()) == static_cast<long>(shared.size()));
  // Bytes on the socket, but no descriptor with them (a doorbell).
  REQUIRE(::send(agent.get(), "", 1, 0) == 1);
  FrameReader reader(protocol::default_max_frame);
  reader.set_descriptor_source(worker.get());
  REQUIRE(reader.fill([&in](char* p, std::size_t k) { return static_cast<ssize_t>(in.read(p, k)); }) > 0);
  Frame f;
  CHECK_THROWS_AS(reader.next(f), protocol::ProtocolError);
}
