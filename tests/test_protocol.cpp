// SPDX-License-Identifier: BSD-3-Clause
// Wire protocol: frame headers, bounds-checked body reading, encode/decode round trips, bad frames.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "wire/channel.hpp"
#include "wire/failure.hpp"
#include "wire/protocol.hpp"
#include "support/fixture.hpp"

namespace {

namespace fs = std::filesystem;
using namespace ferry::detail;
using namespace ferry::detail::protocol;
using ferry::detail::Buffer;
using ferry::detail::Failure;
using ferry::detail::FailureKind;

std::array<char, header_size> header_bytes(std::uint8_t type, std::uint64_t size,
                                           std::uint8_t flags = 0) {
  std::array<char, header_size> h{};
  write_header(h.data(), static_cast<FrameType>(type), size, flags);
  return h;
}

/// Splits an encoded frame into its parsed header and its body bytes, checking the size field.
std::pair<FrameHeader, std::string> split_frame(const Buffer& frame, std::uint64_t payload = 0) {
  REQUIRE(frame.size() >= header_size);
  FrameHeader h = parse_header(frame.data(), default_max_frame);
  CHECK(h.size == frame.size() - header_size + payload);
  return {h, std::string(frame.view().substr(header_size))};
}

std::string bytes_of(std::initializer_list<unsigned> v) {
  std::string s;
  for (unsigned b : v) s.push_back(static_cast<char>(b));
  return s;
}

}  // namespace

// ---- headers ---------------------------------------------------------------------------------

TEST_CASE("Protocol.parse_header.accepts_good_header") {
  auto h = header_bytes(static_cast<std::uint8_t>(FrameType::task), 12345, 0x5a);
  FrameHeader parsed = parse_header(h.data(), default_max_frame);
  CHECK(parsed.type == FrameType::task);
  CHECK(parsed.flags == 0x5a);
  CHECK(parsed.size == 12345);
  // Little-endian layout: magic, type, flags, reserved, size.
  CHECK(static_cast<unsigned char>(h[0]) == 0x77);
  CHECK(static_cast<unsigned char>(h[1]) == 0xFE);
  CHECK(h[2] == 3);
  CHECK(static_cast<unsigned char>(h[3]) == 0x5a);
  CHECK(std::all_of(h.begin() + 4, h.begin() + 8, [](char c) { return c == 0; }));
}

TEST_CASE("Protocol.parse_header.accepts_every_known_type") {
  for (std::uint8_t t = 1; t <= max_frame_type; ++t) {
    CAPTURE(int{t});
    auto h = header_bytes(t, 0);
    CHECK(static_cast<std::uint8_t>(parse_header(h.data(), 0).type) == t);
  }
}

TEST_CASE("Protocol.parse_header.rejects_bad_magic") {
  auto h = header_bytes(1, 4);
  SUBCASE("first byte") { h[0] = 0x76; }
  SUBCASE("second byte") { h[1] = 0x00; }
  SUBCASE("byte swapped") {
    h[0] = static_cast<char>(0xFE);
    h[1] = 0x77;
  }
  CHECK_THROWS_WITH_AS(parse_header(h.data(), default_max_frame),
                       doctest::Contains("bad frame magic"), ProtocolError);
}

TEST_CASE("Protocol.parse_header.rejects_unknown_type") {
  std::uint8_t type = 0;
  SUBCASE("zero") { type = 0; }
  SUBCASE("one past the last") { type = max_frame_type + 1; }
  SUBCASE("255") { type = 255; }
  CAPTURE(int{type});
  auto h = header_bytes(1, 0);
  h[2] = static_cast<char>(type);
  const std::string expected = "unknown frame type " + std::to_string(type);
  CHECK_THROWS_WITH_AS(parse_header(h.data(), default_max_frame),
                       doctest::Contains(expected.c_str()), ProtocolError);
}

TEST_CASE("Protocol.parse_header.rejects_reserved_bits") {
  auto h = header_bytes(2, 8);
  std::size_t at = 4;
  SUBCASE("byte 4") { at = 4; }
  SUBCASE("byte 7") { at = 7; }
  h[at] = 0x01;
  CHECK_THROWS_WITH_AS(parse_header(h.data(), default_max_frame), doctest::Contains("reserved"),
                       ProtocolError);
}

TEST_CASE("Protocol.parse_header.rejects_body_over_limit") {
  SUBCASE("limit + 1") {
    auto h = header_bytes(4, 1001);
    CHECK_THROWS_WITH_AS(parse_header(h.data(), 1000), doctest::Contains("exceeds the limit of 1000"),
                         ProtocolError);
  }
  SUBCASE("exactly the limit is fine") {
    auto h = header_bytes(4, 1000);
    CHECK(parse_header(h.data(), 1000).size == 1000);
  }
  SUBCASE("control limit") {
    auto h = header_bytes(1, max_control_frame + 1);
    CHECK_THROWS_AS(parse_header(h.data(), max_control_frame), ProtocolError);
  }
  SUBCASE("u64 max") {
    auto h = header_bytes(3, ~std::uint64_t{0});
    CHECK_THROWS_AS(parse_header(h.data(), default_max_frame), ProtocolError);
  }
}

TEST_CASE("Protocol.write_header.round_trips") {
  const std::uint64_t sizes[] = {0, 1, 0xFFFF, 0x1'0000'0000ull, default_max_frame};
  for (std::uint8_t t = 1; t <= max_frame_type; ++t) {
    for (std::uint64_t size : sizes) {
      for (std::uint8_t flags : {std::uint8_t{0}, std::uint8_t{1}, std::uint8_t{0xFF}}) {
        CAPTURE(int{t});
        CAPTURE(size);
        CAPTURE(int{flags});
        auto h = header_bytes(t, size, flags);
        auto parsed = parse_header(h.data(), ~std::uint64_t{0});
        CHECK(static_cast<std::uint8_t>(parsed.type) == t);
        CHECK(parsed.size == size);
        CHECK(parsed.flags == flags);
        std::uint64_t raw = 0;
        std::memcpy(&raw, h.data() + 8, 8);
        CHECK(raw == size);
      }
    }
  }
}

// ---- body reader -----------------------------------------------------------------------------

TEST_CASE("Protocol.BodyReader.reads_fields_in_order") {
  Buffer b;
  BodyWriter(b).u8(0xAB).u32(0xDEADBEEF).u64(0x0123456789ABCDEFull).str("hello").str("");
  CHECK(b.size() == 1 + 4 + 8 + 4 + 5 + 4);
  BodyReader r(b.view());
  CHECK(r.u8() == 0xAB);
  CHECK(r.u32() == 0xDEADBEEF);
  CHECK(r.u64() == 0x0123456789ABCDEFull);
  CHECK(r.str() == "hello");
  CHECK(r.str().empty());
  CHECK(r.rest().empty());
  CHECK_NOTHROW(r.expect_end());
}

TEST_CASE("Protocol.BodyReader.truncation_throws") {
  SUBCASE("u8 of nothing") {
    BodyReader r(std::string_view{});
    CHECK_THROWS_WITH_AS(r.u8(), doctest::Contains("truncated frame body"), ProtocolError);
  }
  SUBCASE("u32 of 3 bytes") {
    std::string s(3, '\x01');
    BodyReader r(s);
    CHECK_THROWS_WITH_AS(r.u32(), doctest::Contains("need 4 bytes at offset 0 of 3"), ProtocolError);
  }
  SUBCASE("u64 of 7 bytes") {
    std::string s(7, '\x01');
    BodyReader r(s);
    CHECK_THROWS_AS(r.u64(), ProtocolError);
  }
  SUBCASE("u64 after a u8 leaves 7") {
    std::string s(8, '\x01');
    BodyReader r(s);
    CHECK(r.u8() == 1);
    CHECK_THROWS_WITH_AS(r.u64(), doctest::Contains("need 8 bytes at offset 1 of 8"), ProtocolError);
  }
  SUBCASE("str length larger than the rest") {
    Buffer b;
    BodyWriter(b).u32(10);
    b.append("abc", 3);
    BodyReader r(b.view());
    CHECK_THROWS_WITH_AS(r.str(), doctest::Contains("need 10 bytes at offset 4 of 7"), ProtocolError);
  }
  SUBCASE("str length u32 max") {
    Buffer b;
    BodyWriter(b).u32(0xFFFFFFFFu).u64(0);
    BodyReader r(b.view());
    CHECK_THROWS_AS(r.str(), ProtocolError);
  }
  SUBCASE("str length prefix itself truncated") {
    std::string s = bytes_of({5, 0});
    BodyReader r(s);
    CHECK_THROWS_AS(r.str(), ProtocolError);
  }
}

TEST_CASE("Protocol.BodyReader.expect_end_rejects_trailing_bytes") {
  Buffer b;
  BodyWriter(b).u32(7).u8(1).u8(2);
  BodyReader r(b.view());
  CHECK(r.u32() == 7);
  CHECK_THROWS_WITH_AS(r.expect_end(), doctest::Contains("2 bytes of unexpected trailing data"),
                       ProtocolError);
  CHECK(r.rest().size() == 2);
  CHECK(r.u8() == 1);
  CHECK_THROWS_AS(r.expect_end(), ProtocolError);
  CHECK(r.u8() == 2);
  CHECK_NOTHROW(r.expect_end());
}

// ---- message bodies --------------------------------------------------------------------------

TEST_CASE("Protocol.hello.round_trips") {
  Hello h;
  h.protocol = version;
  h.abi = 42;
  h.pid = -17;  // negative values survive the u32 on the wire
  h.ferry_version = "0.1.0-test";
  h.host = "node-7.cluster";
  auto [head, body] = split_frame(encode_hello(h));
  CHECK(head.type == FrameType::hello);
  Hello d = decode_hello(body);
  CHECK(d.protocol == version);
  CHECK(d.abi == 42);
  CHECK(d.pid == -17);
  CHECK(d.ferry_version == "0.1.0-test");
  CHECK(d.host == "node-7.cluster");

  SUBCASE("trailing byte rejected") { CHECK_THROWS_AS(decode_hello(body + "x"), ProtocolError); }
  SUBCASE("truncated rejected") {
    CHECK_THROWS_AS(decode_hello(body.substr(0, body.size() - 1)), ProtocolError);
  }
  SUBCASE("another protocol's hello is read up to its version, for the host's message") {
    // Protocol 3 had no host name: its hello must reach the version check, not be garbage.
    Buffer old;
    BodyWriter(old).u32(3).u32(42).u32(17).str("0.0.9");
    Hello o = decode_hello(old.view());
    CHECK(o.protocol == 3);
    CHECK(o.ferry_version == "0.0.9");
    CHECK(o.host.empty());
  }
}

TEST_CASE("Protocol.define.round_trips") {
  Define d;
  d.ref = 9;
  d.library = "/opt/plugins/libmath.so";
  d.name = "math.square";
  d.fingerprint = 0xFEEDFACECAFEBEEFull;
  d.signature = "f64(geo::Point)";
  d.layout = "geo::Point{x:f64,y:f64}";
  SUBCASE("plugin") { d.kind = RefKind::plugin; }
  SUBCASE("main program") { d.kind = RefKind::main_program; }
  auto [head, body] = split_frame(encode_define(d));
  CHECK(head.type == FrameType::define);
  Define got = decode_define(body);
  CHECK(got.ref == 9);
  CHECK(got.kind == d.kind);
  CHECK(got.library == d.library);
  CHECK(got.name == d.name);
  CHECK(got.fingerprint == d.fingerprint);
  CHECK(got.signature == d.signature);
  CHECK(got.layout == d.layout);
}

TEST_CASE("Protocol.define.rejects_bad_ref_kind") {
  Define d;
  d.ref = 1;
  d.library = "lib";
  d.name = "n";
  auto [head, body] = split_frame(encode_define(d));
  body[4] = 2;  // the kind byte follows the u32 ref
  CHECK_THROWS_WITH_AS(decode_define(body), doctest::Contains("unknown task reference kind 2"),
                       ProtocolError);
  body[4] = static_cast<char>(0xFF);
  CHECK_THROWS_AS(decode_define(body), ProtocolError);
  body[4] = 1;
  CHECK(decode_define(body).kind == RefKind::main_program);
}

TEST_CASE("Protocol.task_head.round_trips") {
  TaskHead t;
  t.call = 0x1122334455667788ull;
  t.ref = 77;
  t.items = 1000;
  const std::string args = "argument bytes";
  Buffer f = encode_task_head(t, args.size());
  CHECK(f.size() == header_size + task_head_size);
  auto [head, body] = split_frame(f, args.size());
  CHECK(head.type == FrameType::task);
  CHECK(body.size() == task_head_size);
  std::string full = body + args;
  BodyReader r(full);
  TaskHead got = decode_task_head(r);
  CHECK(got.call == t.call);
  CHECK(got.ref == 77);
  CHECK(got.items == 1000);
  CHECK(r.rest() == args);
}

TEST_CASE("Protocol.task_head.rejects_zero_items") {
  Buffer b;
  BodyWriter(b).u64(1).u32(2).u32(0);
  BodyReader r(b.view());
  CHECK_THROWS_WITH_AS(decode_task_head(r), doctest::Contains("zero items"), ProtocolError);
}

TEST_CASE("Protocol.task_head.rejects_truncated") {
  Buffer b;
  BodyWriter(b).u64(1).u32(2);
  BodyReader r(b.view());
  CHECK_THROWS_AS(decode_task_head(r), ProtocolError);
}

TEST_CASE("Protocol.result_head.round_trips") {
  for (std::uint8_t st = 0; st <= max_result_status; ++st) {
    CAPTURE(int{st});
    ResultHead h;
    h.call = 123456789012ull + st;
    h.status = static_cast<ResultStatus>(st);
    h.stats = {1'700'000'000'000'000'000ull, 1'700'000'000'123'456'789ull, 42'000, 1ull << 33};
    Buffer f = encode_result_head(h, 99);
    CHECK(f.size() == header_size + result_head_size);
    auto [head, body] = split_frame(f, 99);
    CHECK(head.type == FrameType::result);
    BodyReader r(body);
    ResultHead got = decode_result_head(r);
    CHECK(got.call == h.call);
    CHECK(got.status == h.status);
    CHECK(got.stats == h.stats);
    CHECK_NOTHROW(r.expect_end());
  }
}

TEST_CASE("Protocol.result_head.stamp_result_stats_fills_an_encoded_failure") {
  // The worker encodes a failure first, then writes how the call ran into its head.
  Buffer f = ferry::detail::encode_failure(9, ferry::detail::Failure::library_missing("/x/lib.so"));
  RunStats stats{10, 20, 5, 4096};
  stamp_result_stats(f, stats);
  auto [head, body] = split_frame(f);
  BodyReader r(body);
  ResultHead got = decode_result_head(r);
  CHECK(got.call == 9);
  CHECK(got.status == ResultStatus::failed);
  CHECK(got.stats == stats);
  CHECK(ferry::detail::decode_failure(r).library == "/x/lib.so");
  Buffer not_a_result = encode_bye(ByeReason::shutdown);
  CHECK_THROWS_AS(stamp_result_stats(not_a_result, stats), ProtocolError);
}

TEST_CASE("Protocol.result_head.rejects_unknown_status") {
  ResultHead h;
  h.call = 5;
  auto [head, body] = split_frame(encode_result_head(h, 0));
  body[8] = static_cast<char>(max_result_status + 1);  // the status byte follows the u64 call
  BodyReader r(body);
  const std::string expected = "unknown result status " + std::to_string(max_result_status + 1);
  CHECK_THROWS_WITH_AS(decode_result_head(r), doctest::Contains(expected.c_str()), ProtocolError);
  body[8] = static_cast<char>(0xFF);
  BodyReader r2(body);
  CHECK_THROWS_AS(decode_result_head(r2), ProtocolError);
}

TEST_CASE("Protocol.result_head.rejects_reserved_bytes") {
  // Where protocol 1 put a failed item: a peer speaking it is refused, not misread.
  auto [head, body] = split_frame(encode_result_head({5, ResultStatus::failed}, 0));
  std::size_t at = 9;
  SUBCASE("byte after the status") { at = 9; }
  SUBCASE("last byte") { at = result_stats_offset - 1; }
  body[at] = 1;
  BodyReader r(body);
  CHECK_THROWS_WITH_AS(decode_result_head(r), doctest::Contains("reserved"), ProtocolError);
}

namespace {

/// A memfd holding `bytes`, as a peer would pass with a shared-memory frame: sealed against
/// shrinking unless `sealed` is false.
int memfd_with(const std::string& bytes, bool sealed = true) {
  int fd = ::memfd_create("ferry-test-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  if (sealed) REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
  return fd;
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

}  // namespace

TEST_CASE("Protocol.shared_task.round_trips") {
  const std::string args = "arguments that live in a memfd";
  TaskHead t{0x0102030405060708ull, 12, 3};
  Buffer f = encode_shared_task(t, args.size(), flag_json);
  auto [head, body] = split_frame(f);
  CHECK(head.type == FrameType::task);
  CHECK(head.flags == (flag_json | flag_shm));
  CHECK(body.size() == task_head_size + shared_size_bytes);
  BodyReader r(body);
  TaskHead got = decode_task_head(r);
  CHECK(got.call == t.call);
  CHECK(got.ref == 12);
  CHECK(got.items == 3);
  Buffer payload = decode_shared_payload(r, memfd_with(args));
  CHECK(payload.view() == args);
}

TEST_CASE("Protocol.shared_result.round_trips") {
  const std::string result(100000, 'r');
  const RunStats stats{100, 200, 50, 1 << 20};
  Buffer f = encode_shared_result(77, result.size(), stats);
  auto [head, body] = split_frame(f);
  CHECK(head.type == FrameType::result);
  CHECK(head.flags == flag_shm);
  CHECK(body.size() == result_head_size + shared_size_bytes);
  BodyReader r(body);
  ResultHead got = decode_result_head(r);
  CHECK(got.call == 77);
  CHECK(got.status == ResultStatus::ok);
  CHECK(got.stats == stats);
  Buffer payload = decode_shared_payload(r, memfd_with(result));
  CHECK(payload.size() == result.size());
  CHECK(payload.view() == result);
}

TEST_CASE("Protocol.shared_payload.rejects_bad_frames_and_closes_the_descriptor") {
  const std::string bytes = "12345";
  Buffer f = encode_shared_result(1, bytes.size());
  auto [head, body] = split_frame(f);
  std::string frame_body = body;
  int fd = -1;
  SUBCASE("memfd smaller than announced") {
    fd = memfd_with("1234");
  }
  SUBCASE("trailing byte after the size") {
    frame_body += "x";
    fd = memfd_with(bytes);
  }
  SUBCASE("size missing") {
    frame_body.resize(result_head_size);
    fd = memfd_with(bytes);
  }
  SUBCASE("memfd not sealed against shrinking") {
    fd = memfd_with(bytes, false);
  }
  SUBCASE("not a memfd") {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    ::close(p[1]);
    fd = p[0];
  }
  SUBCASE("empty payload") {
    Buffer empty = encode_shared_result(1, 0);
    frame_body = std::string(split_frame(empty).second);
    fd = memfd_with("");
  }
  BodyReader r(frame_body);
  decode_result_head(r);
  CHECK_THROWS_AS(decode_shared_payload(r, fd), ProtocolError);
  CHECK_FALSE(is_open(fd));  // taken over: a rejected frame leaks no descriptor
}

TEST_CASE("Protocol.shared_payload.rejects_a_missing_descriptor") {
  Buffer f = encode_shared_task({1, 2, 1}, 5);
  auto [head, body] = split_frame(f);
  BodyReader r(body);
  decode_task_head(r);
  CHECK_THROWS_WITH_AS(decode_shared_payload(r, -1), doctest::Contains("without its descriptor"),
                       ProtocolError);
}

// ---- failures (wire/failure.hpp) --------------------------------------------------------------

namespace {

/// Every kind, with each field the kind uses set to something recognisable.
std::vector<Failure> one_failure_of_each_kind() {
  return {
      Failure::in_stage(ferry::detail::InvokeStatus::decode_arguments_failed, 2, "cereal::Exception",
                        "Failed to read 4 bytes from input stream! Read 0", "string(string)"),
      Failure::in_stage(ferry::detail::InvokeStatus::task_threw, 0, "std::invalid_argument",
                        std::string("with a NUL\0inside", 17), "i32(i32)"),
      Failure::in_stage(ferry::detail::InvokeStatus::encode_result_failed, 1, "Unencodable",
                        "no", "u(i32)"),
      Failure::library_missing("/opt/plugins/libgone.so"),
      Failure::library_unloadable("/opt/plugins/libbad.so", "undefined symbol: frob"),
      Failure::symbol_missing("/opt/plugins/libmath.so", "undefined symbol: ferry_task:cube"),
      Failure::not_a_plugin("/usr/lib/libz.so", "symbol ferry_task:cube is not a ferry task record"),
      Failure::abi_mismatch("/opt/plugins/libold.so", 7),
      Failure::signature_mismatch("/opt/plugins/libmath.so", "f64(f64)"),
      Failure::main_program("/usr/bin/host", "cannot dynamically load position-independent executable"),
      Failure::no_json_entry("/home/u/.cache/ferry/wrap-ab.so"),
  };
}

Failure decode_failure_frame(const Buffer& frame, ResultStatus expected_status, std::uint64_t call) {
  auto [head, body] = split_frame(frame);
  CHECK(head.type == FrameType::result);
  BodyReader r(body);
  ResultHead h = decode_result_head(r);
  CHECK(h.status == expected_status);
  CHECK(h.call == call);
  return decode_failure(r);
}

template <class E>
std::string message_of(const std::exception_ptr& p) {
  try {
    std::rethrow_exception(p);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("wrong exception type: " << e.what());
  }
  return {};
}

}  // namespace

TEST_CASE("Protocol.failure.round_trips_every_kind") {
  auto all = one_failure_of_each_kind();
  REQUIRE(all.size() == max_failure_kind);
  for (std::size_t i = 0; i < all.size(); ++i) {
    const Failure& f = all[i];
    CAPTURE(int(f.kind));
    CHECK(static_cast<std::size_t>(f.kind) == i + 1);  // each kind once, in wire order
    for (ResultStatus st : {ResultStatus::failed, ResultStatus::init_failed}) {
      Failure got = decode_failure_frame(encode_failure(40 + i, f, st), st, 40 + i);
      CHECK(got.kind == f.kind);
      CHECK(got.item == f.item);
      CHECK(got.plugin_abi == f.plugin_abi);
      CHECK(got.exception_type == f.exception_type);
      CHECK(got.message == f.message);
      CHECK(got.library == f.library);
      CHECK(got.signature == f.signature);
    }
  }
  CHECK(all[1].message.size() == 17);
  CHECK(all[7].plugin_abi == 7);
}

TEST_CASE("Protocol.failure.long_texts_are_cut") {
  // A failure's text is the worker's word, copied into what() and the error's fields: a message
  // of a gigabyte cost the host a few. Kept: 64 KiB of message, 16 KiB of the rest, cut at a
  // character, saying how much more there was.
  std::string message(ferry::detail::max_failure_message - 1, 'm');
  message += "\xc3\xa9";  // é across the limit: cut before it
  message += std::string(1000, 'x');
  Failure f = Failure::in_stage(ferry::detail::InvokeStatus::task_threw, 0, std::string(20000, 't'), message, "");
  Failure got = decode_failure_frame(encode_failure(5, f), ResultStatus::failed, 5);
  CHECK(got.message == std::string(ferry::detail::max_failure_message - 1, 'm') + "... (1002 bytes more)");
  CHECK(got.exception_type ==
        std::string(ferry::detail::max_failure_name, 't') + "... (" + std::to_string(20000 - ferry::detail::max_failure_name) + " bytes more)");
  // Short texts are as they were sent.
  Failure small = decode_failure_frame(encode_failure(6, Failure::library_missing("/x/lib.so")), ResultStatus::failed, 6);
  CHECK(small.library == "/x/lib.so");
}

TEST_CASE("Protocol.failure.rejects_bad_bodies") {
  Buffer frame = encode_failure(3, Failure::abi_mismatch("/x/lib.so", 9));
  auto [head, body] = split_frame(frame);
  std::string tail = body.substr(result_head_size);
  auto decode = [](const std::string& bytes) {
    BodyReader r(bytes);
    return decode_failure(r);
  };
  CHECK(decode(tail).plugin_abi == 9);
  SUBCASE("kind 0") {
    tail[0] = 0;
    CHECK_THROWS_WITH_AS(decode(tail), doctest::Contains("unknown failure kind 0"), ProtocolError);
  }
  SUBCASE("kind past the last") {
    tail[0] = static_cast<char>(max_failure_kind + 1);
    CHECK_THROWS_WITH_AS(decode(tail), doctest::Contains("unknown failure kind"), ProtocolError);
  }
  SUBCASE("truncated") { CHECK_THROWS_AS(decode(tail.substr(0, tail.size() - 1)), ProtocolError); }
  SUBCASE("trailing byte") { CHECK_THROWS_AS(decode(tail + "!"), ProtocolError); }
  SUBCASE("protocol 1 error body (three strings)") {
    Buffer old;
    BodyWriter(old).str("std::invalid_argument").str("fail: 3").str("i32(i32)");
    CHECK_THROWS_AS(decode(std::string(old.view())), ProtocolError);
  }
}

TEST_CASE("Protocol.failure.to_exception_builds_the_documented_error") {
  Define ref;
  ref.name = "cube";
  ref.signature = "i32(i32)";  // what the host submitted
  const ferry::detail::FailureContext one{"math:cube", ref, 1, 4242};
  const ferry::detail::FailureContext chunk{"math:cube", ref, 8, 4242};
  auto all = one_failure_of_each_kind();
  auto of = [&](FailureKind k) { return all[static_cast<std::size_t>(k) - 1]; };
  auto has = [](const std::string& what, const std::string& part) {
    CAPTURE(what);
    CHECK(what.find(part) != std::string::npos);
  };

  SUBCASE("the task threw") {
    auto e = message_of<ferry::TaskError>(to_exception(of(FailureKind::task_threw), one));
    has(e, "math:cube");
    has(e, "std::invalid_argument");
    has(e, "4242");
    CHECK(e.find("map chunk") == std::string::npos);
    try {
      std::rethrow_exception(to_exception(of(FailureKind::task_threw), chunk));
    } catch (const ferry::TaskError& t) {
      CHECK(t.task() == "math:cube (item 0 of the call's 8)");
      CHECK(t.remote_type() == "std::invalid_argument");
      CHECK(t.pid() == 4242);
    }
    // An item past the call's names none: the worker's word for it is no item of the call.
    auto past = of(FailureKind::task_threw);
    past.item = 4000000000u;
    try {
      std::rethrow_exception(to_exception(past, chunk));
    } catch (const ferry::TaskError& t) {
      CHECK(t.task() == "math:cube");
    }
  }
  SUBCASE("serialization stages") {
    for (auto [kind, stage] : {std::pair{FailureKind::decode_arguments, ferry::SerializationStage::decode_arguments},
                               std::pair{FailureKind::encode_result, ferry::SerializationStage::encode_result}}) {
      try {
        std::rethrow_exception(to_exception(of(kind), chunk));
        FAIL("no exception");
      } catch (const ferry::SerializationError& s) {
        CHECK(s.stage() == stage);
        CHECK(std::string(s.side()) == "worker");
        CHECK(s.type() == of(kind).signature);
        CHECK(s.task() == "math:cube");
        has(s.reason(), of(kind).exception_type + ": " + of(kind).message);
        has(s.reason(), "(item " + std::to_string(of(kind).item) + " of the call's 8)");
      }
    }
  }
  SUBCASE("plugin problems name the path and the symbol") {
    has(message_of<ferry::PluginError>(to_exception(of(FailureKind::library_missing), one)),
        "/opt/plugins/libgone.so");
    auto unloadable = message_of<ferry::PluginError>(to_exception(of(FailureKind::library_unloadable), one));
    has(unloadable, "/opt/plugins/libbad.so");
    has(unloadable, "undefined symbol: frob");
    auto symbol = message_of<ferry::PluginError>(to_exception(of(FailureKind::symbol_missing), one));
    has(symbol, "ferry_task:cube");
    has(message_of<ferry::PluginError>(to_exception(of(FailureKind::not_a_plugin), one)), "/usr/lib/libz.so");
    auto json = message_of<ferry::PluginError>(to_exception(of(FailureKind::no_json_entry), one));
    has(json, "no JSON entry point");
    has(json, "'cube'");
  }
  SUBCASE("ABI and signature mismatches carry both sides") {
    auto abi = message_of<ferry::PluginError>(to_exception(of(FailureKind::abi_mismatch), one));
    has(abi, "ABI 7");
    has(abi, std::to_string(ferry::detail::plugin_abi_version));
    auto sig = message_of<ferry::PluginError>(to_exception(of(FailureKind::signature_mismatch), one));
    has(sig, "f64(f64)");  // the plugin's
    has(sig, "i32(i32)");  // the host's, from its own reference
    // Signatures alike, layouts not: the plugin's layout in the failure, the host's in its reference.
    Define point = ref;
    point.layout = "geo::Point{y:f64,x:f64}";
    auto layout = message_of<ferry::PluginError>(to_exception(
        Failure::signature_mismatch("/opt/plugins/libgeo.so", "f64(geo::Point)", "geo::Point{x:f64,y:f64}"),
        {"geo:norm", point, 1, 4242}));
    has(layout, "geo::Point{x:f64,y:f64}");
    has(layout, "geo::Point{y:f64,x:f64}");
    has(layout, "f64(geo::Point)");
  }
  SUBCASE("a main-program function is unresolvable") {
    // The executable as the host's own reference names it (an MPI agent points its worker at a
    // path that cannot load, and the failure names that one).
    Define program = ref;
    program.kind = ferry::detail::protocol::RefKind::main_program;
    program.library = "/usr/bin/host";
    Failure f = of(FailureKind::main_program);
    f.library = "/(not shipped: the host's main program is not loaded on another node)/host";
    try {
      std::rethrow_exception(to_exception(f, {"math:cube", program, 1, 4242}));
      FAIL("no exception");
    } catch (const ferry::UnresolvableTaskError& u) {
      CHECK(u.function() == "cube");
      CHECK(u.module() == "/usr/bin/host");
      has(u.what(), "position-independent");
      has(u.what(), "FERRY_WRAP");
    }
  }
  SUBCASE("a failed initializer breaks the pool") {
    auto threw = message_of<ferry::BrokenProcessPool>(initializer_failed(of(FailureKind::task_threw), one));
    has(threw, "initializer 'math:cube' failed in worker 4242: std::invalid_argument: with a NUL");
    auto missing = message_of<ferry::BrokenProcessPool>(initializer_failed(of(FailureKind::library_missing), one));
    has(missing, "initializer 'math:cube' failed in worker 4242: ");
    has(missing, "/opt/plugins/libgone.so");
  }
  SUBCASE("what a worker says reaches what() as text, and the task's bytes stay in the error") {
    // A hostile task's exception type and message, or a worker's loader message, went into
    // what() as sent: a host printing it sent the escape sequences (a window title, OSC 52's
    // clipboard write) to its terminal or log.
    const std::string esc = "\x1b]52;c;eA==\x07\xc2\x9b" "2J\xe2\x80\xae";
    const std::string shown = "\\x1b]52;c;eA==\\x07\\xc2\\x9b2J\\xe2\\x80\\xae";
    auto no_controls = [](const std::string& what) {
      CAPTURE(what);
      CHECK(what.find('\x1b') == std::string::npos);
      CHECK(what.find('\x07') == std::string::npos);
      CHECK(what.find("\xc2\x9b") == std::string::npos);
      CHECK(what.find("\xe2\x80\xae") == std::string::npos);
    };
    Failure threw = of(FailureKind::task_threw);
    threw.exception_type = "Evil" + esc;
    threw.message = "two" + esc + "\nlines C:\\dir";
    try {
      std::rethrow_exception(to_exception(threw, one));
    } catch (const ferry::TaskError& t) {
      no_controls(t.what());
      has(t.what(), "raised Evil" + shown + " in worker 4242: two" + shown + "\nlines C:\\dir");
      CHECK(t.remote_type() == threw.exception_type);  // the bytes as the task sent them
      CHECK(t.remote_message() == threw.message);
    }
    Failure loader = of(FailureKind::library_unloadable);
    loader.message = "undefined symbol: frob" + esc;
    loader.library = "/opt/plugins/lib" + esc + ".so";
    no_controls(message_of<ferry::PluginError>(to_exception(loader, one)));
    has(message_of<ferry::PluginError>(to_exception(loader, one)), "frob" + shown);
    no_controls(message_of<ferry::BrokenProcessPool>(initializer_failed(threw, one)));
    Failure stage = of(FailureKind::decode_arguments);
    stage.exception_type += esc;
    no_controls(message_of<ferry::SerializationError>(to_exception(stage, one)));
    no_controls(ferry::ResourceLimitError("t", 1, "memory", 1 << 20, "std::bad_alloc: " + esc).what());
    no_controls(ferry::SandboxViolationError("t", 1, "socket" + esc, esc).what());
    no_controls(ferry::TerminatedWorkerError("t", 1, 9, -1, false, "rank 2 on node" + esc).what());
  }
  SUBCASE("its cause is the initializer's own error, nested") {
    // The message was all the pool's error had of it: a caller could not reach the initializer's
    // message as it was thrown (its lines), its type or its remote stack.
    auto cause = [](const std::exception_ptr& broken) -> std::exception_ptr {
      try {
        std::rethrow_exception(broken);
      } catch (const ferry::BrokenProcessPool& e) {
        try {
          std::rethrow_if_nested(e);
        } catch (...) {
          return std::current_exception();
        }
      }
      return nullptr;
    };
    Failure threw = of(FailureKind::task_threw);
    threw.message = "two\nlines";
    try {
      std::rethrow_exception(cause(initializer_failed(threw, one)));
    } catch (const ferry::TaskError& t) {
      CHECK(t.remote_message() == "two\nlines");
      CHECK(t.remote_type() == threw.exception_type);
    } catch (...) {
      FAIL("the cause is no TaskError");
    }
    has(message_of<ferry::PluginError>(cause(initializer_failed(of(FailureKind::library_missing), one))),
        "/opt/plugins/libgone.so");
  }
}

TEST_CASE("Protocol.failure.stages_map_one_to_one") {
  using ferry::detail::InvokeStatus;
  CHECK_FALSE(ferry::detail::failure_kind_of(InvokeStatus::ok));
  for (InvokeStatus s : {InvokeStatus::decode_arguments_failed, InvokeStatus::task_threw,
                         InvokeStatus::encode_result_failed}) {
    CAPTURE(int(s));
    auto kind = ferry::detail::failure_kind_of(s);
    REQUIRE(kind);
    CHECK(ferry::detail::is_call_stage(*kind));
    CHECK(Failure::in_stage(s, 0, "t", "m", "sig").kind == *kind);
  }
  CHECK_FALSE(ferry::detail::is_call_stage(FailureKind::library_missing));
  CHECK_FALSE(ferry::detail::serialization_stage_of(FailureKind::task_threw));
}

TEST_CASE("Protocol.bye.round_trips") {
  for (std::uint8_t v = 1; v <= max_bye_reason; ++v) {
    CAPTURE(int{v});
    auto [head, body] = split_frame(encode_bye(static_cast<ByeReason>(v)));
    CHECK(head.type == FrameType::bye);
    CHECK(body.size() == 1);
    CHECK(decode_bye(body) == static_cast<ByeReason>(v));
    CHECK(std::string(bye_reason_name(static_cast<ByeReason>(v))) != "unknown");
  }
  CHECK(std::string(bye_reason_name(ByeReason::max_tasks)) == "max tasks per child");
}

TEST_CASE("Protocol.bye.rejects_bad_reason") {
  SUBCASE("0") {
    CHECK_THROWS_WITH_AS(decode_bye(bytes_of({0})), doctest::Contains("unknown bye reason 0"),
                         ProtocolError);
  }
  SUBCASE("7") {  // one past the last reason (process_limit = 6)
    CHECK_THROWS_WITH_AS(decode_bye(bytes_of({7})), doctest::Contains("unknown bye reason 7"),
                         ProtocolError);
  }
  SUBCASE("empty") { CHECK_THROWS_AS(decode_bye(""), ProtocolError); }
  SUBCASE("trailing byte") { CHECK_THROWS_AS(decode_bye(bytes_of({1, 0})), ProtocolError); }
}

TEST_CASE("Protocol.init.round_trips") {
  for (std::uint32_t ref : {0u, 1u, 0xFFFFFFFFu}) {
    auto [head, body] = split_frame(encode_init(ref));
    CHECK(head.type == FrameType::init);
    CHECK(body.size() == 4);
    CHECK(decode_init(body).ref == ref);
    CHECK(decode_init(body).args.empty());
  }
  // With the initializer's arguments (ferry::Call): the bytes after the ref, whatever they are.
  const std::string args("\x05\0\0\0\0\0\0\0hello", 13);
  auto [head, body] = split_frame(encode_init(7, args));
  CHECK(body.size() == 4 + args.size());
  CHECK(decode_init(body).ref == 7);
  CHECK(decode_init(body).args == args);
  CHECK_THROWS_AS(decode_init(bytes_of({1, 0, 0})), ProtocolError);
}

TEST_CASE("Protocol.contained.round_trips_every_kind") {
  for (std::uint8_t k = 1; k <= max_contained_kind; ++k) {
    CAPTURE(int{k});
    Contained c{static_cast<ContainedKind>(k), 0x1122334455667788ull, "socket", "std::bad_alloc: x"};
    Buffer frame = encode_contained(c);
    auto [head, body] = split_frame(frame);
    CHECK(head.type == FrameType::contained);
    Contained d = decode_contained(body);
    CHECK(d.kind == c.kind);
    CHECK(d.value == c.value);
    CHECK(d.name == c.name);
    CHECK(d.detail == c.detail);
    CHECK(std::string(contained_kind_name(c.kind)) != "unknown");
    // The signal handlers' encoder writes the very same bytes, without allocating.
    char out[2048];
    std::size_t n = encode_contained_into(out, sizeof out, c.kind, c.value, "socket", "std::bad_alloc: x");
    CHECK(std::string_view(out, n) == frame.view());
    CHECK(encode_contained_into(out, 20, c.kind, c.value, "socket", "") == 0);  // too small
  }
  CHECK(std::string(contained_kind_name(ContainedKind::cpu_time)) == "cpu_time");
}

TEST_CASE("Protocol.contained.rejects_bad_bodies") {
  Contained c{ContainedKind::memory, 1, "memory", ""};
  auto [head, body] = split_frame(encode_contained(c));
  std::string good(body);
  std::string bad_kind = good;
  bad_kind[0] = 0;
  CHECK_THROWS_WITH_AS(decode_contained(bad_kind), doctest::Contains("unknown contained kind 0"), ProtocolError);
  bad_kind[0] = static_cast<char>(max_contained_kind + 1);
  CHECK_THROWS_AS(decode_contained(bad_kind), ProtocolError);
  CHECK_THROWS_AS(decode_contained(good.substr(0, good.size() - 1)), ProtocolError);
  CHECK_THROWS_AS(decode_contained(good + "x"), ProtocolError);
  // Text is cut at max_contained_text by both encoders, and longer text is refused.
  std::string long_text(max_contained_text + 10, 'a');
  Contained cut = decode_contained(split_frame(encode_contained({ContainedKind::syscall, 41, long_text, long_text})).second);
  CHECK(cut.name.size() == max_contained_text);
  char out[4096];
  std::size_t n = encode_contained_into(out, sizeof out, ContainedKind::syscall, 41, long_text.c_str(), nullptr);
  CHECK(decode_contained(std::string_view(out + header_size, n - header_size)).name.size() == max_contained_text);
}

TEST_CASE("Protocol.limits.round_trips") {
  TaskLimits l{1ull << 40, 7, 1024, 50, 1ull << 20};
  auto [head, body] = split_frame(encode_limits(l));
  CHECK(head.type == FrameType::limits);
  CHECK(body.size() == 40);
  CHECK(decode_limits(body) == l);
  CHECK(decode_limits(split_frame(encode_limits({})).second) == TaskLimits{});
  CHECK_THROWS_AS(decode_limits(std::string(body).substr(0, 39)), ProtocolError);
  CHECK_THROWS_AS(decode_limits(std::string(body) + "x"), ProtocolError);
}

TEST_CASE("Protocol.worker_exit_name.names_every_exit_code") {
  CHECK(std::string(worker_exit_name(0)) == "clean exit");
  CHECK(std::string(worker_exit_name(64)).find("bad command line") != std::string::npos);
  CHECK(std::string(worker_exit_name(66)).find("protocol error") != std::string::npos);
  CHECK(worker_exit_name(1) == nullptr);
  CHECK(std::string(worker_exit_name(69)).find("limits or sandbox") != std::string::npos);
  CHECK(std::string(worker_exit_name(70)).find("cannot set up") != std::string::npos);
  CHECK(std::string(worker_exit_name(71)).find("memory cgroup was full") != std::string::npos);
  CHECK(worker_exit_name(72) == nullptr);
}

// ---- regression corpus -----------------------------------------------------------------------
// tests/data/frames/ holds malformed byte streams, one per file, named for what is wrong with them:
// a truncated header, bad magic (including an ELF header), unknown types 0/11/255, reserved bits,
// sizes of 2^64-1, 2^40 and just over 1 GiB, bodies shorter than announced (small and large), a
// good frame followed by a bad one, random bytes. Add a file here for every bad stream found.

namespace {

struct Outcome {
  bool threw = false;
  std::size_t frames = 0;
  std::size_t bodies_rejected = 0;  // frames whose body the decoder of their type refused
};

/// Decodes a frame's body as its receiver would (tests/fuzz/fuzz_frames.cpp does the same).
void decode_body(const Frame& f) {
  switch (f.header.type) {
    case FrameType::hello: decode_hello(f.view()); break;
    case FrameType::define: decode_define(f.view()); break;
    case FrameType::task: {
      BodyReader r(f.view());
      decode_task_head(r);
      break;
    }
    case FrameType::result: {
      BodyReader r(f.view());
      if (decode_result_head(r).status != ResultStatus::ok) decode_failure(r);
      break;
    }
    case FrameType::bye: decode_bye(f.view()); break;
    case FrameType::init: decode_init(f.view()); break;
    case FrameType::contained: decode_contained(f.view()); break;
    case FrameType::limits: decode_limits(f.view()); break;
    case FrameType::crashed: ferry::detail::decode_crashed(f.view()); break;
    case FrameType::shutdown: break;
  }
}

/// Feeds `bytes` through a socketpair into a FrameReader with `limit`, reading to EOF.
Outcome feed(const std::string& bytes, std::uint64_t limit) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Fd reader_end(sv[0]);
  {
    Fd writer_end(sv[1]);
    REQUIRE(send_all(writer_end.get(), {bytes}));
  }  // closed: the reader sees EOF after the bytes
  FrameReader reader(limit);
  Outcome out;
  Frame f;
  for (;;) {
    try {
      while (reader.next(f)) {
        ++out.frames;
        try {
          decode_body(f);
        } catch (const ProtocolError&) {
          ++out.bodies_rejected;
        }
      }
    } catch (const ProtocolError&) {
      out.threw = true;
      return out;
    }
    ssize_t n = reader.fill(reader_end.get(), 0);
    REQUIRE(n >= 0);
    if (n == 0) return out;
  }
}

}  // namespace

TEST_CASE("Protocol.FrameReader.survives_malformed_frame_corpus") {
  const fs::path dir = fs::path(FERRY_TEST_DATA_DIR) / "frames";
  REQUIRE(fs::is_directory(dir));
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 5);
  std::size_t threw = 0;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (std::uint64_t limit : {max_control_frame, default_max_frame}) {
      CAPTURE(file.filename().string());
      CAPTURE(limit);
      Outcome o = feed(bytes, limit);
      CHECK((o.threw || o.frames == 0));
      threw += o.threw ? 1 : 0;
    }
  }
  // The corpus holds headers that must be rejected: some files do throw.
  CHECK(threw > 0);
}

TEST_CASE("Protocol.FrameReader.corpus_expectations") {
  const fs::path dir = fs::path(FERRY_TEST_DATA_DIR) / "frames";
  auto read = [&](const char* name) {
    std::ifstream in(dir / name, std::ios::binary);
    REQUIRE(in);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  CHECK(feed(read("bad_magic.bin"), default_max_frame).threw);
  CHECK(feed(read("huge_size.bin"), default_max_frame).threw);
  CHECK(feed(read("size_2_pow_40.bin"), default_max_frame).threw);
  CHECK(feed(read("size_just_over_1GiB.bin"), default_max_frame).threw);
  CHECK(feed(read("reserved_bits.bin"), default_max_frame).threw);
  CHECK(feed(read("unknown_type_0.bin"), default_max_frame).threw);
  CHECK(feed(read("unknown_type_11.bin"), default_max_frame).threw);
  CHECK(feed(read("truncated_large_body.bin"), max_control_frame).threw);
  Outcome t = feed(read("truncated_header.bin"), default_max_frame);
  CHECK_FALSE(t.threw);
  CHECK(t.frames == 0);
  Outcome tb = feed(read("truncated_large_body.bin"), default_max_frame);
  CHECK_FALSE(tb.threw);
  CHECK(tb.frames == 0);
  Outcome g = feed(read("good_then_bad_magic.bin"), default_max_frame);
  CHECK(g.threw);
  CHECK(g.frames == 1);
}

TEST_CASE("Protocol.FrameReader.replays_the_fuzz_corpus") {
  // Seeds and any input the fuzzer ever crashed on (tests/data/fuzz/frames/crash-*): each must be
  // read to EOF or rejected with ProtocolError, and every frame's body decoded or rejected.
  const fs::path dir = fs::path(FERRY_TEST_DATA_DIR) / "fuzz" / "frames";
  REQUIRE(fs::is_directory(dir));
  std::size_t files = 0, clean = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) continue;
    CAPTURE(e.path().filename().string());
    // The first byte is the fuzzer's limit selector, as in tests/fuzz/fuzz_frames.cpp.
    std::uint64_t limit = (bytes[0] & 1) ? max_control_frame : (1u << 20);
    Outcome o = feed(bytes.substr(1), limit);
    ++files;
    if (o.frames > 0 && !o.threw) ++clean;
    // A seed stands for what a peer of this protocol sends: every body of it decodes.
    if (e.path().filename().string().rfind("crash-", 0) != 0) CHECK(o.bodies_rejected == 0);
  }
  CHECK(files >= 4);
  CHECK(clean >= 4);  // the seeds are well-formed streams: every one of them reads cleanly
}
