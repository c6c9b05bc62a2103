// SPDX-License-Identifier: BSD-3-Clause
// Channel plumbing over real socketpairs: FrameReader, Outbox, send_all and Fd.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "support/fixture.hpp"

namespace {

using namespace ferry::detail;
using ferry::detail::Buffer;
namespace protocol = ferry::detail::protocol;

struct Pair {
  Fd a, b;
  Pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    a = Fd(sv[0]);
    b = Fd(sv[1]);
  }
};

/// A frame of `type` whose body is `body`.
std::string frame_bytes(protocol::FrameType type, const std::string& body) {
  std::string f(protocol::header_size, '\0');
  protocol::write_header(f.data(), type, body.size());
  return f + body;
}

/// Deterministic, position-dependent bytes: a shifted or dropped byte shows.
std::string pattern(std::size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

/// Fills (blocking) until a frame is complete.
Frame read_frame(FrameReader& r, int fd) {
  Frame f;
  while (!r.next(f)) {
    ssize_t n = r.fill(fd, 0);
    REQUIRE(n > 0);
  }
  return f;
}

/// Reads exactly `n` bytes (blocking).
std::string read_exact(int fd, std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    ssize_t r = ::recv(fd, out.data() + have, n - have, 0);
    REQUIRE(r > 0);
    have += static_cast<std::size_t>(r);
  }
  return out;
}

/// Reads what is available now, without blocking.
std::string read_available(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r <= 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

struct Pipe {
  Fd read, write;
  Pipe() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    read = Fd(p[0]);
    write = Fd(p[1]);
  }
};

/// A memfd of one page: the only kind of descriptor a FrameReader keeps.
struct Memfd {
  Fd fd;
  Memfd() : fd(::memfd_create("test-channel", MFD_CLOEXEC)) {
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), 4096) == 0);
  }
};

/// A result frame announcing a 5-byte payload in shared memory (the descriptor travels apart).
Buffer shared_result_frame() {
  return protocol::encode_shared_result(1, 5);
}

/// A descriptor received with a frame is the memfd it was sent from: `c` written through it is
/// read through `m`.
void check_reaches(const Fd& received, const Memfd& m, char c) {
  REQUIRE(::pwrite(received.get(), &c, 1, 0) == 1);
  char got = 0;
  CHECK(::pread(m.fd.get(), &got, 1, 0) == 1);
  CHECK(got == c);
}

}  // namespace

// ---- FrameReader -----------------------------------------------------------------------------

TEST_CASE("Channel.FrameReader.reads_one_small_frame") {
  Pair p;
  Buffer bye = protocol::encode_bye(protocol::ByeReason::idle_timeout);
  REQUIRE(send_all(p.a.get(), {bye.view()}));
  FrameReader r(protocol::max_control_frame);
  Frame f;
  CHECK_FALSE(r.next(f));
  CHECK_FALSE(r.partial());
  CHECK(r.fill(p.b.get(), 0) == static_cast<ssize_t>(bye.size()));
  REQUIRE(r.next(f));
  CHECK(f.header.type == protocol::FrameType::bye);
  CHECK(f.header.size == 1);
  CHECK(protocol::decode_bye(f.view()) == protocol::ByeReason::idle_timeout);
  CHECK_FALSE(r.next(f));
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.reads_several_frames_from_one_write") {
  Pair p;
  std::string all = frame_bytes(protocol::FrameType::define, "first") +
                    frame_bytes(protocol::FrameType::shutdown, "") +
                    frame_bytes(protocol::FrameType::task, pattern(3000));
  REQUIRE(::send(p.a.get(), all.data(), all.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(all.size()));
  FrameReader r(protocol::max_control_frame);
  Frame f1 = read_frame(r, p.b.get());
  CHECK(f1.header.type == protocol::FrameType::define);
  CHECK(f1.view() == "first");
  // The rest is already buffered: no more reads are needed.
  Frame f2;
  REQUIRE(r.next(f2));
  CHECK(f2.header.type == protocol::FrameType::shutdown);
  CHECK(f2.body.empty());
  Frame f3;
  REQUIRE(r.next(f3));
  CHECK(f3.header.type == protocol::FrameType::task);
  CHECK(f3.view() == pattern(3000));
  CHECK_FALSE(r.next(f3));
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.reassembles_a_frame_sent_byte_by_byte") {
  Pair p;
  std::string body;
  SUBCASE("small body") { body = "body of a frame split in single bytes"; }
  SUBCASE("empty body") { body = ""; }
  std::string bytes = frame_bytes(protocol::FrameType::result, body) +
                      frame_bytes(protocol::FrameType::init, "\x01\x02\x03\x04");
  FrameReader r(protocol::max_control_frame);
  std::vector<Frame> got;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    REQUIRE(::send(p.a.get(), &bytes[i], 1, MSG_NOSIGNAL) == 1);
    REQUIRE(r.fill(p.b.get(), 0) == 1);
    Frame f;
    while (r.next(f)) got.push_back(std::move(f));
    const std::size_t first_end = protocol::header_size + body.size();
    if (i + 1 < first_end) {
      CHECK(got.empty());
      CHECK(r.partial());
    } else if (i + 1 == first_end) {
      CHECK(got.size() == 1);
      CHECK_FALSE(r.partial());
    } else if (i + 1 < bytes.size()) {
      CHECK(got.size() == 1);
      CHECK(r.partial());
    }
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0].header.type == protocol::FrameType::result);
  CHECK(got[0].view() == body);
  CHECK(got[1].header.type == protocol::FrameType::init);
  CHECK(protocol::decode_init(got[1].view()).ref == 0x04030201u);
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.reads_a_large_frame_intact") {
  std::size_t size = 0;
  SUBCASE("5 MiB") { size = 5u << 20; }
  SUBCASE("just over the direct threshold") { size = FrameReader::direct_threshold + 1; }
  SUBCASE("exactly the direct threshold") { size = FrameReader::direct_threshold; }
  CAPTURE(size);
  Pair p;
  const std::string body = pattern(size, 7);
  Buffer head(protocol::header_size);
  protocol::write_header(head.data(), protocol::FrameType::task, body.size());
  Buffer after = protocol::encode_bye(protocol::ByeReason::shutdown);
  bool sent = false;
  std::thread writer([&] {
    sent = send_all(p.a.get(), {head.view(), body, after.view()});
  });
  FrameReader r(protocol::default_max_frame);
  Frame f;
  bool saw_partial = false;
  while (!r.next(f)) {
    saw_partial = saw_partial || r.partial();
    ssize_t n = r.fill(p.b.get(), 0);
    REQUIRE(n > 0);
  }
  writer.join();
  CHECK(sent);
  CHECK(saw_partial);
  CHECK(f.header.type == protocol::FrameType::task);
  REQUIRE(f.body.size() == size);
  CHECK(f.view() == body);
  // The frame after the large one is read normally.
  Frame next = read_frame(r, p.b.get());
  CHECK(next.header.type == protocol::FrameType::bye);
  CHECK(protocol::decode_bye(next.view()) == protocol::ByeReason::shutdown);
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.eof_returns_zero") {
  Pair p;
  FrameReader r(protocol::max_control_frame);
  SUBCASE("nothing sent") {}
  SUBCASE("after a partial header") {
    std::string part = frame_bytes(protocol::FrameType::hello, "x").substr(0, 5);
    REQUIRE(send_all(p.a.get(), {part}));
    REQUIRE(r.fill(p.b.get(), 0) == 5);
    CHECK(r.partial());
  }
  p.a.reset();
  CHECK(r.fill(p.b.get(), 0) == 0);
  Frame f;
  CHECK_FALSE(r.next(f));
}

TEST_CASE("Channel.FrameReader.fill_without_data_would_block") {
  Pair p;
  FrameReader r(protocol::max_control_frame);
  errno = 0;
  CHECK(r.fill(p.b.get(), MSG_DONTWAIT) == -1);
  CHECK((errno == EAGAIN || errno == EWOULDBLOCK));
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.limit_rejects_big_header_before_allocating") {
  Pair p;
  SUBCASE("over a small limit") {
    FrameReader r(1024);
    char h[protocol::header_size];
    protocol::write_header(h, protocol::FrameType::result, 1025);
    REQUIRE(send_all(p.a.get(), {std::string_view(h, sizeof h)}));
    REQUIRE(r.fill(p.b.get(), 0) == static_cast<ssize_t>(sizeof h));
    Frame f;
    CHECK_THROWS_WITH_AS(r.next(f),
                         doctest::Contains("frame of 1 KiB (1025 bytes) exceeds the limit of 1 KiB"),
                         protocol::ProtocolError);
  }
  SUBCASE("a terabyte under the default limit is refused, not allocated") {
    FrameReader r(protocol::default_max_frame);
    char h[protocol::header_size];
    protocol::write_header(h, protocol::FrameType::result, std::uint64_t{1} << 40);
    REQUIRE(send_all(p.a.get(), {std::string_view(h, sizeof h), "some body bytes"}));
    REQUIRE(r.fill(p.b.get(), 0) > 0);
    Frame f;
    // A std::bad_alloc here would mean the reader tried to allocate before checking.
    CHECK_THROWS_AS(r.next(f), protocol::ProtocolError);
  }
  SUBCASE("at the limit a large body waits for its bytes") {
    const std::size_t limit = 256 * 1024;
    FrameReader r(limit);
    char h[protocol::header_size];
    protocol::write_header(h, protocol::FrameType::task, limit);
    const std::string first = pattern(1000, 3);
    REQUIRE(send_all(p.a.get(), {std::string_view(h, sizeof h), first}));
    REQUIRE(r.fill(p.b.get(), 0) > 0);
    Frame f;
    CHECK_FALSE(r.next(f));
    CHECK(r.partial());
    const std::string rest = pattern(limit - first.size(), 4);
    std::thread writer([&] { CHECK(send_all(p.a.get(), {rest})); });
    Frame got = read_frame(r, p.b.get());
    writer.join();
    CHECK(got.body.size() == limit);
    CHECK(got.view() == first + rest);
    CHECK_FALSE(r.partial());
  }
  SUBCASE("set_limit applies to the next header") {
    FrameReader r(protocol::max_control_frame);
    r.set_limit(10);
    std::string bytes = frame_bytes(protocol::FrameType::define, std::string(11, 'x'));
    REQUIRE(send_all(p.a.get(), {bytes}));
    REQUIRE(r.fill(p.b.get(), 0) > 0);
    Frame f;
    CHECK_THROWS_AS(r.next(f), protocol::ProtocolError);
    r.set_limit(11);
    REQUIRE(r.next(f));
    CHECK(f.view() == std::string(11, 'x'));
  }
}

TEST_CASE("Channel.FrameReader.trim_keeps_pending_bytes") {
  Pair p;
  FrameReader r(protocol::default_max_frame);
  // A large frame first, so that there is memory to give back.
  const std::string big = pattern(3u << 20, 9);
  std::string big_frame = frame_bytes(protocol::FrameType::result, big);
  std::thread writer([&] { CHECK(send_all(p.a.get(), {big_frame})); });
  Frame f = read_frame(r, p.b.get());
  writer.join();
  CHECK(f.view() == big);
  r.trim();
  CHECK_FALSE(r.partial());

  // Half a small frame, trim, then the other half: nothing is lost.
  std::string small = frame_bytes(protocol::FrameType::define, "after trim");
  const std::size_t half = small.size() / 2;
  REQUIRE(send_all(p.a.get(), {std::string_view(small).substr(0, half)}));
  REQUIRE(r.fill(p.b.get(), 0) == static_cast<ssize_t>(half));
  CHECK_FALSE(r.next(f));
  r.trim();
  CHECK(r.partial());
  REQUIRE(send_all(p.a.get(), {std::string_view(small).substr(half)}));
  Frame g = read_frame(r, p.b.get());
  CHECK(g.header.type == protocol::FrameType::define);
  CHECK(g.view() == "after trim");
  r.trim();
  CHECK_FALSE(r.partial());

  // Trim in the middle of a large frame keeps its bytes too.
  const std::string big2 = pattern(200 * 1024, 11);
  std::string big2_frame = frame_bytes(protocol::FrameType::result, big2);
  REQUIRE(send_all(p.a.get(), {std::string_view(big2_frame).substr(0, 1000)}));
  REQUIRE(r.fill(p.b.get(), 0) > 0);
  CHECK_FALSE(r.next(f));
  r.trim();
  CHECK(r.partial());
  std::thread writer2([&] { CHECK(send_all(p.a.get(), {std::string_view(big2_frame).substr(1000)})); });
  Frame h = read_frame(r, p.b.get());
  writer2.join();
  CHECK(h.view() == big2);
}

TEST_CASE("Channel.FrameReader.fed_frames_are_read_as_the_next_on_the_channel") {
  // Frames a relay hands over in this process (LaunchedWorker::relay) come between what was read
  // off the socket before and what is read after.
  Pair p;
  FrameReader r(protocol::default_max_frame);
  REQUIRE(send_all(p.a.get(), {frame_bytes(protocol::FrameType::define, "from the socket")}));
  Frame f = read_frame(r, p.b.get());
  CHECK(f.view() == "from the socket");
  const std::string one = frame_bytes(protocol::FrameType::result, "handed one");
  const std::string two = frame_bytes(protocol::FrameType::result, "handed two");
  const std::string_view head = std::string_view(two).substr(0, protocol::header_size);
  const std::string_view body = std::string_view(two).substr(protocol::header_size);
  const std::string_view pieces[] = {one, head, body};  // joined, as an Outbox's views are
  REQUIRE(send_all(p.a.get(), {frame_bytes(protocol::FrameType::bye, "after")}));
  REQUIRE(r.feed(pieces));
  CHECK(read_frame(r, p.b.get()).view() == "handed one");
  CHECK(read_frame(r, p.b.get()).view() == "handed two");
  CHECK(read_frame(r, p.b.get()).view() == "after");
  CHECK_FALSE(r.partial());
}

TEST_CASE("Channel.FrameReader.feed_is_refused_in_the_middle_of_a_frame") {
  Pair p;
  FrameReader r(protocol::default_max_frame);
  const std::string small = frame_bytes(protocol::FrameType::define, "split in two");
  SUBCASE("a small frame") {
    REQUIRE(send_all(p.a.get(), {std::string_view(small).substr(0, 7)}));
    REQUIRE(r.fill(p.b.get(), 0) == 7);
    CHECK_FALSE(r.feed(frame_bytes(protocol::FrameType::result, "too early")));
    REQUIRE(send_all(p.a.get(), {std::string_view(small).substr(7)}));
    Frame f = read_frame(r, p.b.get());
    CHECK(f.view() == "split in two");  // nothing of the refused bytes in it
  }
  SUBCASE("a large frame, read straight into its own buffer") {
    const std::string big = frame_bytes(protocol::FrameType::result, pattern(300 * 1024, 5));
    REQUIRE(send_all(p.a.get(), {std::string_view(big).substr(0, 1000)}));
    REQUIRE(r.fill(p.b.get(), 0) > 0);
    Frame f;
    CHECK_FALSE(r.next(f));
    CHECK_FALSE(r.feed(small));
    std::thread writer([&] { CHECK(send_all(p.a.get(), {std::string_view(big).substr(1000)})); });
    f = read_frame(r, p.b.get());
    writer.join();
    CHECK(f.body.size() == big.size() - protocol::header_size);
  }
  CHECK_FALSE(r.partial());
  REQUIRE(r.feed(small));
  Frame g;
  REQUIRE(r.next(g));
  CHECK(g.view() == "split in two");
}

TEST_CASE("Channel.FrameReader.a_large_body_announced_but_not_sent_waits_for_its_bytes") {
  // 900 MiB announced (within the limit), 200 KiB sent: the reader takes them and asks for more,
  // and "no more now" is not an end. (What it allocates meanwhile, the bytes that came and not
  // the size announced, HostileWorker.announced_size_alone_allocates_nothing measures.)
  Pair p;
  FrameReader r(protocol::default_max_frame);
  std::string head(protocol::header_size, '\0');
  protocol::write_header(head.data(), protocol::FrameType::result, std::uint64_t{900} << 20);
  const std::string some = pattern(200 * 1024, 3);
  std::thread writer([&] { CHECK(send_all(p.a.get(), {head, some})); });
  std::size_t got = 0;
  Frame f;
  while (got < head.size() + some.size()) {
    ssize_t n = r.fill(p.b.get(), 0);
    REQUIRE(n > 0);
    got += static_cast<std::size_t>(n);
    CHECK_FALSE(r.next(f));
  }
  writer.join();
  CHECK(r.partial());
  REQUIRE(::fcntl(p.b.get(), F_SETFL, ::fcntl(p.b.get(), F_GETFL) | O_NONBLOCK) == 0);
  const ssize_t n = r.fill(p.b.get(), 0);
  const int error = errno;
  CHECK(n < 0);  // nothing more: EAGAIN, not an end
  CHECK(error == EAGAIN);
  CHECK(r.partial());
}

// ---- Outbox ----------------------------------------------------------------------------------

TEST_CASE("Channel.Outbox.sends_owned_and_viewed_pieces_in_order") {
  Pair p;
  Outbox out;
  CHECK(out.empty());
  auto owned = [](const std::string& s) {
    Buffer b;
    b.append(s.data(), s.size());
    return b;
  };
  auto keep1 = std::make_shared<std::string>("<viewed one>");
  auto keep2 = std::make_shared<std::string>(pattern(5000, 5));
  std::weak_ptr<std::string> watch1 = keep1, watch2 = keep2;
  out.push(owned("[owned one]"));
  out.push_view(*keep1, keep1);
  out.push(Buffer());  // empty pieces are dropped
  out.push_view({}, nullptr);
  out.push(owned("[owned two]"));
  out.push_view(*keep2, keep2);
  out.push(owned("[end]"));
  const std::string expected = "[owned one]<viewed one>[owned two]" + *keep2 + "[end]";
  keep1.reset();
  keep2.reset();
  CHECK_FALSE(watch1.expired());  // the outbox keeps viewed bytes alive until sent
  CHECK_FALSE(out.empty());
  CHECK(out.flush(p.a.get()));
  CHECK(out.empty());
  CHECK(watch1.expired());
  CHECK(watch2.expired());
  CHECK(read_exact(p.b.get(), expected.size()) == expected);
  CHECK(read_available(p.b.get()).empty());
}

TEST_CASE("Channel.Outbox.many_pieces_beyond_one_sendmsg") {
  Pair p;
  Outbox out;
  std::string expected;
  for (int i = 0; i < 200; ++i) {  // more pieces than one sendmsg takes
    std::string s = "<" + std::to_string(i) + ">";
    expected += s;
    if (i % 2) {
      Buffer b;
      b.append(s.data(), s.size());
      out.push(std::move(b));
    } else {
      auto keep = std::make_shared<std::string>(s);
      out.push_view(*keep, keep);
    }
  }
  CHECK(out.flush(p.a.get()));
  CHECK(out.empty());
  CHECK(read_exact(p.b.get(), expected.size()) == expected);
}

TEST_CASE("Channel.Outbox.partial_write_resumes_after_peer_drains") {
  Pair p;
  REQUIRE(::fcntl(p.a.get(), F_SETFL, ::fcntl(p.a.get(), F_GETFL) | O_NONBLOCK) == 0);
  Outbox out;
  const std::string a = pattern(3u << 20, 21), b = pattern(5u << 20, 22);
  Buffer first;
  first.append(a.data(), a.size());
  out.push(std::move(first));
  auto keep = std::make_shared<std::string>(b);
  out.push_view(*keep, keep);
  out.push(protocol::encode_bye(protocol::ByeReason::max_tasks));
  std::string expected = a + b + std::string(protocol::encode_bye(protocol::ByeReason::max_tasks).view());

  // The peer does not read: the socket takes what fits and flush reports no error.
  CHECK(out.flush(p.a.get()));
  CHECK_FALSE(out.empty());
  std::string received = read_available(p.b.get());
  CHECK(received.size() > 0);
  CHECK(received.size() < expected.size());

  // The peer drains; flush continues exactly where it stopped.
  int rounds = 0;
  while (!out.empty()) {
    REQUIRE(++rounds < 100000);
    CHECK(out.flush(p.a.get()));
    pollfd pf{p.b.get(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 10000) == 1);
    received += read_available(p.b.get());
  }
  received += read_available(p.b.get());
  CHECK(rounds > 0);
  REQUIRE(received.size() == expected.size());
  CHECK(received == expected);
}

TEST_CASE("Channel.Outbox.views_offer_only_whole_pieces_without_descriptors") {
  // What a relaying backend may take in the pool's thread (LaunchedWorker::send): every piece,
  // in order, as long as none is partly sent and none carries a descriptor.
  Outbox out;
  std::vector<std::string_view> views = {"stale"};
  CHECK(out.views(views));
  CHECK(views.empty());
  auto keep = std::make_shared<std::string>("viewed bytes");
  out.push(protocol::encode_bye(protocol::ByeReason::shutdown));
  out.push_view(*keep, keep);
  REQUIRE(out.views(views));
  REQUIRE(views.size() == 2);
  CHECK(views[0] == protocol::encode_bye(protocol::ByeReason::shutdown).view());
  CHECK(views[1].data() == keep->data());  // not copied
  SUBCASE("a descriptor to pass") {
    Pipe pipe;
    out.push(shared_result_frame(), pipe.write.get());
    CHECK_FALSE(out.views(views));
  }
  SUBCASE("partly sent") {
    Pair p;
    REQUIRE(::fcntl(p.a.get(), F_SETFL, ::fcntl(p.a.get(), F_GETFL) | O_NONBLOCK) == 0);
    auto big = std::make_shared<std::string>(pattern(8u << 20, 4));
    out.push_view(*big, big);
    REQUIRE(out.flush(p.a.get()));  // the peer reads nothing: the socket takes what fits
    REQUIRE_FALSE(out.empty());
    CHECK_FALSE(out.views(views));
  }
}

TEST_CASE("Channel.Outbox.flush_after_peer_closed_fails_without_sigpipe") {
  Pair p;
  p.b.reset();
  Outbox out;
  out.push(protocol::encode_bye(protocol::ByeReason::shutdown));
  errno = 0;
  CHECK_FALSE(out.flush(p.a.get()));  // SIGPIPE would have killed the test process here
  CHECK(errno == EPIPE);
  // send_all must not raise SIGPIPE either.
  errno = 0;
  CHECK_FALSE(send_all(p.a.get(), {"bytes"}));
  CHECK(errno == EPIPE);
}

TEST_CASE("Channel.Outbox.clear_drops_everything") {
  Pair p;
  Outbox out;
  auto keep = std::make_shared<std::string>("view");
  std::weak_ptr<std::string> watch = keep;
  out.push_view(*keep, keep);
  keep.reset();
  out.clear();
  CHECK(out.empty());
  CHECK(watch.expired());
  CHECK(out.flush(p.a.get()));
  CHECK(read_available(p.b.get()).empty());
}

// ---- send_all --------------------------------------------------------------------------------

TEST_CASE("Channel.send_all.sends_every_piece_in_order") {
  Pair p;
  SUBCASE("small pieces with empty ones") {
    CHECK(send_all(p.a.get(), {"ab", "", "cde", "", "f"}));
    CHECK(read_exact(p.b.get(), 6) == "abcdef");
  }
  SUBCASE("more pieces than one iovec batch") {
    CHECK(send_all(p.a.get(), {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"}));
    CHECK(read_exact(p.b.get(), 14) == "01234567891011");
  }
  SUBCASE("large pieces need several sendmsg calls") {
    const std::string x = pattern(2u << 20, 31), y = "middle", z = pattern(3u << 20, 32);
    std::string got;
    std::thread reader([&] { got = read_exact(p.b.get(), x.size() + y.size() + z.size()); });
    CHECK(send_all(p.a.get(), {x, y, z}));
    reader.join();
    CHECK(got == x + y + z);
  }
  SUBCASE("nothing at all") {
    CHECK(send_all(p.a.get(), {}));
    CHECK(send_all(p.a.get(), {"", ""}));
  }
  CHECK(read_available(p.b.get()).empty());
}

// ---- Fd --------------------------------------------------------------------------------------

TEST_CASE("Channel.Fd.closes_on_destruction") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  {
    Fd r(fds[0]);
    Fd w(fds[1]);
    CHECK(r.get() == fds[0]);
    CHECK(static_cast<bool>(r));
    CHECK(is_open(fds[0]));
  }
  CHECK_FALSE(is_open(fds[0]));
  CHECK_FALSE(is_open(fds[1]));
}

TEST_CASE("Channel.Fd.move_assign_closes_the_old_descriptor") {
  int x[2], y[2];
  REQUIRE(::pipe2(x, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(y, O_CLOEXEC) == 0);
  Fd keep_x1(x[1]), keep_y1(y[1]);
  Fd a(x[0]);
  Fd b(y[0]);
  a = std::move(b);
  CHECK_FALSE(is_open(x[0]));
  CHECK(is_open(y[0]));
  CHECK(a.get() == y[0]);
  CHECK(b.get() == -1);
  CHECK_FALSE(static_cast<bool>(b));

  SUBCASE("move construction transfers without closing") {
    Fd c(std::move(a));
    CHECK(c.get() == y[0]);
    CHECK(a.get() == -1);
    CHECK(is_open(y[0]));
  }
  SUBCASE("self move-assign keeps the descriptor") {
    Fd& alias = a;
    a = std::move(alias);
    CHECK(a.get() == y[0]);
    CHECK(is_open(y[0]));
  }
  SUBCASE("release gives up ownership") {
    int raw = a.release();
    CHECK(raw == y[0]);
    CHECK(a.get() == -1);
    CHECK(is_open(raw));
    ::close(raw);
  }
  SUBCASE("reset closes and adopts") {
    int z[2];
    REQUIRE(::pipe2(z, O_CLOEXEC) == 0);
    Fd keep_z1(z[1]);
    a.reset(z[0]);
    CHECK_FALSE(is_open(y[0]));
    CHECK(a.get() == z[0]);
    a.reset();
    CHECK_FALSE(is_open(z[0]));
    CHECK(a.get() == -1);
  }
}

// ---- descriptors with frames (shared payloads) ---------------------------------------------

TEST_CASE("Channel.descriptor_travels_with_its_frame") {
  Pair s;
  Memfd shared;
  Buffer plain = protocol::encode_bye(protocol::ByeReason::shutdown);
  REQUIRE(send_all(s.a.get(), {plain.view()}));
  REQUIRE(send_all(s.a.get(), {shared_result_frame().view()}, shared.fd.get()));
  FrameReader reader(protocol::default_max_frame);
  Frame first = read_frame(reader, s.b.get());
  Frame second = read_frame(reader, s.b.get());
  CHECK_FALSE(first.fd);
  REQUIRE(second.fd);
  check_reaches(second.fd, shared, 'x');
  CHECK((::fcntl(second.fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("Channel.a_descriptor_that_is_no_memfd_is_refused_and_closed") {
  // Only a memfd carries a payload, and only its last close is sure to be quick (a TCP socket
  // with SO_LINGER and unread data waits out the linger time). Anything else is closed on a
  // thread of its own as it arrives, and its frame fails.
  Pair s;
  Pipe pipe;
  REQUIRE(send_all(s.a.get(), {shared_result_frame().view()}, pipe.write.get()));
  pipe.write.reset();  // the reader's copy is the last write end now
  FrameReader reader(protocol::default_max_frame);
  REQUIRE(reader.fill(s.b.get(), 0) > 0);
  Frame f;
  CHECK_THROWS_WITH_AS(reader.next(f), "shared payload is not in a memfd", protocol::ProtocolError);
  // Closed by then or soon: the read end sees the last writer go.
  pollfd p{pipe.read.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 10'000) == 1);
  CHECK((p.revents & POLLHUP) != 0);
}

TEST_CASE("Channel.empty_reads_invent_no_descriptors") {
  // Regression: recvmsg failing with EAGAIN leaves the control buffer untouched; parsing it
  // anyway turned stale stack bytes into descriptors (closed later: someone else's files).
  Pair s;
  Memfd shared;
  REQUIRE(send_all(s.a.get(), {shared_result_frame().view()}, shared.fd.get()));
  FrameReader reader(protocol::default_max_frame);
  bool threw = false;
  int empty = 0;
  try {
    ssize_t n = reader.fill(s.b.get(), 0);  // leaves a descriptor in the control buffer's stack slot
    for (int i = 0; i < 64; ++i)
      if (reader.fill(s.b.get(), MSG_DONTWAIT) == -1) ++empty;
    REQUIRE(n > 0);
  } catch (const protocol::ProtocolError&) {
    threw = true;
  }
  CHECK_FALSE(threw);
  CHECK(empty == 64);
  Frame f;
  REQUIRE(reader.next(f));
  CHECK(f.fd);
  CHECK_FALSE(reader.next(f));
}

TEST_CASE("Channel.shared_frame_without_descriptor_is_rejected") {
  Pair s;
  REQUIRE(send_all(s.a.get(), {shared_result_frame().view()}));
  FrameReader reader(protocol::default_max_frame);
  REQUIRE(reader.fill(s.b.get(), 0) > 0);
  Frame f;
  CHECK_THROWS_AS(reader.next(f), protocol::ProtocolError);
}

TEST_CASE("Channel.a_descriptor_dropped_for_want_of_room_here_fails_its_frame_only") {
  // A reader at its RLIMIT_NOFILE: the kernel drops the memfd and cuts the control data
  // (MSG_CTRUNC). That was "peer sent too many descriptors" (a protocol error: the peer was
  // killed); the frame now says its descriptor was lost, and decoding it is ShortOfResources.
  Pair s;
  Memfd shared;
  REQUIRE(send_all(s.a.get(), {shared_result_frame().view()}, shared.fd.get()));
  Buffer plain = protocol::encode_bye(protocol::ByeReason::shutdown);
  REQUIRE(send_all(s.a.get(), {plain.view()}));
  FrameReader reader(protocol::default_max_frame);
  support::DescriptorsTaken held;
  ssize_t n = -1;
  std::string error;
  try {
    n = reader.fill(s.b.get(), 0);
  } catch (const std::exception& e) {
    error = e.what();
  }
  held.release();
  CHECK_MESSAGE(error.empty(), error);
  REQUIRE(n > 0);
  Frame f;
  REQUIRE(reader.next(f));
  CHECK_FALSE(f.fd);
  CHECK(f.fd_lost);
  protocol::BodyReader r(f.view());
  (void)protocol::decode_result_head(r);
  CHECK_THROWS_WITH_AS(protocol::decode_shared_payload(r, f.fd.release(), f.fd_lost),
                       doctest::Contains("could not be received: this process has no descriptor left"),
                       protocol::ShortOfResources);
  // What follows is read as usual.
  while (!reader.next(f)) REQUIRE(reader.fill(s.b.get(), 0) > 0);
  CHECK(f.header.type == protocol::FrameType::bye);
  CHECK_FALSE(f.fd_lost);
}

TEST_CASE("Channel.outbox_sends_each_descriptor_once_with_its_piece") {
  Pair s;
  Memfd p1, p2;
  Outbox out;
  out.push(protocol::encode_bye(protocol::ByeReason::shutdown));
  out.push(shared_result_frame(), p1.fd.get());
  out.push(shared_result_frame(), p2.fd.get());
  REQUIRE(out.flush(s.a.get()));
  CHECK(out.empty());
  FrameReader reader(protocol::default_max_frame);
  read_frame(reader, s.b.get());
  Frame second = read_frame(reader, s.b.get());
  Frame third = read_frame(reader, s.b.get());
  REQUIRE(second.fd);
  REQUIRE(third.fd);
  check_reaches(second.fd, p1, '1');
  check_reaches(third.fd, p2, '2');
}
