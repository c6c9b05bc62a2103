// SPDX-License-Identifier: BSD-3-Clause
// The worker loop run in-process over a socketpair, driven frame by frame as a host would.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include <doctest/doctest.h>

#include "wire/channel.hpp"
#include "math.hpp"
#include "model.hpp"
#include "wire/failure.hpp"
#include "wire/protocol.hpp"
#include "wire/ring.hpp"
#include "support/fixture.hpp"
#include "worker/worker_main.hpp"

namespace proto = ferry::detail::protocol;
using ferry::detail::Buffer;
using ferry::detail::Failure;
using ferry::detail::FailureKind;
using ferry::detail::Frame;

namespace {

/// A worker loop on a thread, and the host end of its channel.
struct InProcessWorker {
  int host = -1;
  std::future<int> exit_code;
  ferry::detail::FrameReader reader{proto::default_max_frame};
  // With rings (an MPI agent's worker): frames go through them, the socket carries the rest.
  ferry::detail::SharedRings rings;
  ferry::detail::Ring worker_in, worker_out, host_out, host_in;

  enum class Via { socket, rings };
  explicit InProcessWorker(ferry::detail::WorkerConfig config = {}, Via via = Via::socket) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    host = sv[0];
    config.fd = sv[1];
    config.spin = std::chrono::microseconds(0);
    if (via == Via::rings) {
      rings = ferry::detail::SharedRings::create();
      worker_in = rings.to_worker();
      worker_out = rings.to_agent();
      host_out = rings.to_worker();
      host_in = rings.to_agent();
      config.ring_in = &worker_in;
      config.ring_out = &worker_out;
    }
    exit_code = std::async(std::launch::async, [config] {
      int code = ferry::detail::run_worker(config);
      ::close(config.fd);
      return code;
    });
    Frame hello = read_frame();
    REQUIRE(hello.header.type == proto::FrameType::hello);
    auto h = proto::decode_hello(hello.view());
    CHECK(h.protocol == proto::version);
    CHECK(h.pid == ::getpid());
    CHECK(h.abi == ferry::detail::plugin_abi_version);
  }
  ~InProcessWorker() {
    if (host >= 0) ::close(host);
    if (exit_code.valid()) exit_code.wait();
  }

  void send(const Buffer& b, std::string_view payload = {}) {
    if (rings) {
      for (std::string_view p : {b.view(), payload}) REQUIRE(host_out.write(p.data(), p.size()) == static_cast<long>(p.size()));
      host_out.wake_consumer();
      return;
    }
    REQUIRE(ferry::detail::send_all(host, {b.view(), payload}));
  }
  /// For a frame the worker may already have left before: false when it could not be sent.
  bool try_send(const Buffer& b, std::string_view payload = {}) {
    return ferry::detail::send_all(host, {b.view(), payload});
  }
  /// `layout`: the signature's (detail/layout.hpp), which the worker compares with the plugin's
  /// for a signature of user types.
  void define(std::uint32_t ref, const std::string& library, const std::string& name,
              std::uint64_t fingerprint, proto::RefKind kind = proto::RefKind::plugin,
              std::string layout = {}) {
    send(proto::encode_define({ref, kind, library, name, fingerprint, "host-signature", std::move(layout)}));
  }
  template <class... A>
  void task(std::uint64_t call, std::uint32_t ref, std::uint32_t items, const A&... args) {
    Buffer b;
    if constexpr (sizeof...(A) > 0) ferry::detail::encode_values(b, args...);
    send(proto::encode_task_head({call, ref, items}, b.size()), b.view());
  }
  Frame read_frame() {
    Frame f;
    while (!reader.next(f)) {
      if (rings) {
        auto read = [this](char* p, std::size_t k) { return static_cast<ssize_t>(host_in.read(p, k)); };
        REQUIRE(support::wait_until([&] { return !host_in.empty(); }));
        REQUIRE(reader.fill(read) > 0);
        continue;
      }
      ssize_t n = reader.fill(host, 0);
      REQUIRE(n > 0);
    }
    return f;
  }
  /// Reads a result frame: head, and the rest of the body (its header's flags in result_flags).
  std::pair<proto::ResultHead, std::string> result() {
    Frame f = read_frame();
    REQUIRE(f.header.type == proto::FrameType::result);
    result_flags = f.header.flags;
    proto::BodyReader r(f.view());
    auto head = proto::decode_result_head(r);
    return {head, std::string(r.rest())};
  }
  int finish() { return exit_code.get(); }
  std::uint8_t result_flags = 0;  // of the last result()
};

constexpr std::uint64_t square_fp = ferry::detail::Signature<int, int>::fingerprint;

Failure failure_of(const std::string& rest) {
  proto::BodyReader r(rest);
  return ferry::detail::decode_failure(r);
}

}  // namespace

TEST_CASE("WorkerLoop.hello_then_result") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.task(11, 0, 1, 7);
  auto [head, rest] = w.result();
  CHECK(head.call == 11);
  CHECK(head.status == proto::ResultStatus::ok);
  CHECK(ferry::detail::decode_value<int>(rest) == 49);
}

TEST_CASE("WorkerLoop.chunk_returns_every_item") {
  InProcessWorker w;
  w.define(3, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  Buffer args;
  ferry::detail::encode_values(args, 1, 2, 3);
  w.send(proto::encode_task_head({5, 3, 3}, args.size()), args.view());
  auto [head, rest] = w.result();
  REQUIRE(head.status == proto::ResultStatus::ok);
  ferry::detail::MemoryReader reader(rest.data(), rest.size());
  std::istream is(&reader);
  ferry::InputArchive ar(is);
  int a, b, c;
  ar(a, b, c);
  CHECK(a == 1);
  CHECK(b == 4);
  CHECK(c == 9);
  CHECK(reader.remaining() == 0);
}

TEST_CASE("WorkerLoop.task_exception_reports_type_and_message") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "fail", square_fp);
  w.task(1, 0, 1, 3);
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::task_threw);
  CHECK(e.exception_type == "std::invalid_argument");
  CHECK(e.message == "fail: 3");
  CHECK(e.item == 0);
  // The worker keeps serving after a task threw.
  w.define(1, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.task(2, 1, 1, 5);
  auto [h2, r2] = w.result();
  CHECK(h2.status == proto::ResultStatus::ok);
  CHECK(ferry::detail::decode_value<int>(r2) == 25);
}

TEST_CASE("WorkerLoop.failing_item_of_a_chunk_is_named") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "checked_isqrt", square_fp);
  Buffer args;
  ferry::detail::encode_values(args, 16, -4, 9);
  w.send(proto::encode_task_head({6, 0, 3}, args.size()), args.view());
  auto [head, rest] = w.result();
  CHECK(head.call == 6);
  CHECK(head.status == proto::ResultStatus::failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::task_threw);
  CHECK(e.item == 1);
  CHECK(e.exception_type == "std::domain_error");
}

TEST_CASE("WorkerLoop.fingerprint_is_checked_before_the_call") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "square", ferry::detail::Signature<double, int>::fingerprint);
  w.task(1, 0, 1, 7);
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::signature_mismatch);
  CHECK(e.signature == "i32(i32)");  // the plugin's own signature (the host knows its own)
  CHECK(e.library == FERRY_TEST_MATH_PLUGIN);
}

TEST_CASE("WorkerLoop.plugin_errors") {
  InProcessWorker w;
  SUBCASE("missing library") {
    w.define(0, "/nonexistent/libnothing.so", "square", square_fp);
    w.task(1, 0, 1, 7);
    auto [head, rest] = w.result();
    CHECK(head.status == proto::ResultStatus::failed);
    auto e = failure_of(rest);
    CHECK(e.kind == FailureKind::library_missing);
    CHECK(e.library == "/nonexistent/libnothing.so");
  }
  SUBCASE("missing task") {
    w.define(0, FERRY_TEST_MATH_PLUGIN, "no_such_task", square_fp);
    w.task(1, 0, 1, 7);
    auto [head, rest] = w.result();
    CHECK(head.status == proto::ResultStatus::failed);
    auto e = failure_of(rest);
    CHECK(e.kind == FailureKind::symbol_missing);
    CHECK(e.message.find("ferry_task:no_such_task") != std::string::npos);
  }
  SUBCASE("unloadable library") {
    w.define(0, FERRY_TEST_UNLOADABLE_PLUGIN, "needs_missing", square_fp);
    w.task(1, 0, 1, 7);
    auto [head, rest] = w.result();
    CHECK(head.status == proto::ResultStatus::failed);
    auto e = failure_of(rest);
    CHECK(e.kind == FailureKind::library_unloadable);
    CHECK(e.message.find("ferry_test_symbol_nobody_defines") != std::string::npos);
  }
}

TEST_CASE("WorkerLoop.main_program_function_is_unresolvable") {
  InProcessWorker w;
  // Another PIE executable stands for the host's (this process could load itself).
  w.define(0, FERRY_TEST_WORKER, "local_function()", square_fp, proto::RefKind::main_program);
  w.task(1, 0, 1, 7);
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::main_program);
  CHECK(e.library == FERRY_TEST_WORKER);
  CHECK(e.message.find("cannot dynamically load position-independent executable") != std::string::npos);
}

TEST_CASE("WorkerLoop.argument_decoding_failure_is_reported") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "greet", 0);  // fingerprint 0: not checked
  w.task(1, 0, 1, 7);  // an int where a string is expected
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::decode_arguments);
  CHECK(e.signature == "string(string)");
}

TEST_CASE("WorkerLoop.shutdown_says_bye_and_exits_clean") {
  InProcessWorker w;
  w.send(proto::frame(proto::FrameType::shutdown, Buffer()));
  Frame f = w.read_frame();
  CHECK(f.header.type == proto::FrameType::bye);
  CHECK(proto::decode_bye(f.view()) == proto::ByeReason::shutdown);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::clean));
}

TEST_CASE("WorkerLoop.eof_means_host_gone") {
  InProcessWorker w;
  ::shutdown(w.host, SHUT_WR);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::host_gone));
}

TEST_CASE("WorkerLoop.garbage_is_a_protocol_error") {
  InProcessWorker w;
  SUBCASE("bad magic") {
    std::string junk(32, 'x');
    REQUIRE(ferry::detail::send_all(w.host, {junk}));
  }
  SUBCASE("task before its define") { w.task(1, 42, 1, 7); }
  SUBCASE("oversized frame") {
    char header[proto::header_size];
    proto::write_header(header, proto::FrameType::task, std::uint64_t{1} << 40);
    REQUIRE(ferry::detail::send_all(w.host, {std::string_view(header, sizeof header)}));
  }
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::protocol_error));
}

namespace {
/// After its idle bye the worker stays: a task the host sent before it read the bye (as a loaded
/// host does when its first call follows the hello later than the idle time) is run and answered,
/// and the worker exits when told to, saying bye again.
void idle_bye_then_the_task_that_crossed_it(InProcessWorker& w) {
  Frame f = w.read_frame();
  CHECK(f.header.type == proto::FrameType::bye);
  CHECK(proto::decode_bye(f.view()) == proto::ByeReason::idle_timeout);
  w.define(0, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.task(1, 0, 1, 6);
  auto [head, rest] = w.result();  // run and answered after the bye, by the worker that said it
  CHECK(head.call == 1);
  CHECK(head.status == proto::ResultStatus::ok);
  CHECK(ferry::detail::decode_value<int>(rest) == 36);
  w.send(proto::frame(proto::FrameType::shutdown, Buffer()));
  Frame last = w.read_frame();  // no second idle bye: one said is enough
  CHECK(last.header.type == proto::FrameType::bye);
  CHECK(proto::decode_bye(last.view()) == proto::ByeReason::shutdown);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::clean));
}
}  // namespace

TEST_CASE("WorkerLoop.idle_timeout_says_bye_and_runs_what_crossed_it") {
  ferry::detail::WorkerConfig c;
  c.idle_timeout = std::chrono::milliseconds(30);
  InProcessWorker w(c);
  idle_bye_then_the_task_that_crossed_it(w);
}

TEST_CASE("WorkerLoop.after_its_idle_bye_the_channels_end_means_host_gone") {
  ferry::detail::WorkerConfig c;
  c.idle_timeout = std::chrono::milliseconds(30);
  InProcessWorker w(c);
  Frame f = w.read_frame();
  CHECK(proto::decode_bye(f.view()) == proto::ByeReason::idle_timeout);
  ::shutdown(w.host, SHUT_WR);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::host_gone));
}

TEST_CASE("WorkerLoop.max_tasks_recycles_after_the_result") {
  ferry::detail::WorkerConfig c;
  c.max_tasks = 2;
  InProcessWorker w(c);
  w.define(0, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.task(1, 0, 1, 2);
  w.task(2, 0, 1, 3);
  // Never started: the worker leaves after the second (it may be gone before this is sent).
  Buffer four;
  ferry::detail::encode_values(four, 4);
  w.try_send(proto::encode_task_head({3, 0, 1}, four.size()), four.view());
  CHECK(w.result().first.call == 1);
  CHECK((w.result_flags & proto::flag_last) == 0);
  CHECK(w.result().first.call == 2);
  // Its last answer says so: the host knows call 3, sent behind it, was never read.
  CHECK((w.result_flags & proto::flag_last) != 0);
  Frame f = w.read_frame();
  CHECK(f.header.type == proto::FrameType::bye);
  CHECK(proto::decode_bye(f.view()) == proto::ByeReason::max_tasks);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::clean));
}

TEST_CASE("WorkerLoop.a_failed_last_call_says_it_is_the_last") {
  // A recycling worker's last call failed: its failure carries the mark its bye relies on, as a
  // result would (without it the host counted the bye against the call sent behind).
  ferry::detail::WorkerConfig c;
  c.max_tasks = 1;
  InProcessWorker w(c);
  w.define(0, FERRY_TEST_MATH_PLUGIN, "fail", square_fp);
  w.task(1, 0, 1, 3);
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::failed);
  CHECK((w.result_flags & proto::flag_last) != 0);
  Frame f = w.read_frame();
  CHECK(f.header.type == proto::FrameType::bye);
  CHECK(proto::decode_bye(f.view()) == proto::ByeReason::max_tasks);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::clean));
}

TEST_CASE("WorkerLoop.initializer_failure_is_reported_and_exits") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_CRASH_PLUGIN, "init_throws", ferry::detail::Signature<void>::fingerprint);
  w.send(proto::encode_init(0));
  auto [head, rest] = w.result();
  CHECK(head.status == proto::ResultStatus::init_failed);
  auto e = failure_of(rest);
  CHECK(e.kind == FailureKind::task_threw);
  CHECK(e.exception_type == "std::logic_error");
  CHECK(e.message == "initializer refuses to run");
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::init_failed));
}

namespace {
std::uint64_t realtime_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}
}  // namespace

TEST_CASE("WorkerLoop.a_result_says_how_the_call_ran") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.define(1, FERRY_TEST_MATH_PLUGIN, "fail", square_fp);
  for (std::uint32_t ref : {0u, 1u}) {
    CAPTURE(ref);
    auto before = realtime_ns();
    w.task(20 + ref, ref, 1, 7);
    auto [head, rest] = w.result();
    auto after = realtime_ns();
    CHECK(head.status == (ref == 0 ? proto::ResultStatus::ok : proto::ResultStatus::failed));
    CHECK(before <= head.stats.started_ns);
    CHECK(head.stats.started_ns <= head.stats.finished_ns);
    CHECK(head.stats.finished_ns <= after);
    CHECK(head.stats.cpu_ns <= after - before + 1'000'000);  // µs-resolution CPU clock
    CHECK(head.stats.max_rss > 0);
  }
}

TEST_CASE("WorkerLoop.the_initializer_gets_its_arguments") {
  InProcessWorker w;
  w.define(0, FERRY_TEST_MODEL_PLUGIN, "load_model",
           ferry::detail::Signature<void, std::string, int>::fingerprint);
  w.define(1, FERRY_TEST_MODEL_PLUGIN, "describe_model",
           ferry::detail::Signature<model::Description>::fingerprint, proto::RefKind::plugin,
           ferry::detail::signature_layout<model::Description>());
  Buffer args;
  ferry::detail::encode_values(args, std::string("in-process"), 5);
  w.send(proto::encode_init(0, args.view()));
  // It says the initializer ran (call 0, nothing more) before any task's result.
  auto [ack, nothing] = w.result();
  CHECK(ack.call == 0);
  CHECK(ack.status == proto::ResultStatus::ok);
  CHECK(nothing.empty());
  w.task(3, 1, 1);
  auto [head, rest] = w.result();
  REQUIRE(head.status == proto::ResultStatus::ok);
  auto d = ferry::detail::decode_value<model::Description>(rest);
  CHECK(d.name == "in-process");
  CHECK(d.size == 5);
}

TEST_CASE("WorkerLoop.rings.hello_result_and_shutdown") {
  // An MPI agent's worker (--rings 1): the same frames, through shared memory.
  InProcessWorker w({}, InProcessWorker::Via::rings);
  w.define(1, FERRY_TEST_MATH_PLUGIN, "square", square_fp);
  w.task(1, 1, 1, 7);
  auto [head, rest] = w.result();
  CHECK(head.call == 1);
  CHECK(head.status == proto::ResultStatus::ok);
  CHECK(ferry::detail::decode_value<int>(rest) == 49);
  w.send(proto::frame(proto::FrameType::shutdown, Buffer()));
  Frame f = w.read_frame();
  CHECK(f.header.type == proto::FrameType::bye);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::clean));
}

TEST_CASE("WorkerLoop.rings.the_channels_end_means_host_gone") {
  // Asleep on the ring, the worker still looks at its channel now and then.
  InProcessWorker w({}, InProcessWorker::Via::rings);
  ::shutdown(w.host, SHUT_WR);
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::host_gone));
}

TEST_CASE("WorkerLoop.rings.idle_timeout_says_bye_and_runs_what_crossed_it") {
  ferry::detail::WorkerConfig c;
  c.idle_timeout = std::chrono::milliseconds(30);
  InProcessWorker w(c, InProcessWorker::Via::rings);
  idle_bye_then_the_task_that_crossed_it(w);
}

TEST_CASE("WorkerLoop.rings.a_corrupt_ring_is_a_protocol_error") {
  InProcessWorker w({}, InProcessWorker::Via::rings);
  auto* control = static_cast<ferry::detail::RingControl*>(
      ::mmap(nullptr, ferry::detail::SharedRings::map_size(ferry::detail::SharedRings::default_capacity),
             PROT_READ | PROT_WRITE, MAP_SHARED, w.rings.fd(), 0));
  REQUIRE(control != MAP_FAILED);
  control->head.store(std::uint64_t{1} << 40);  // far past anything written
  w.host_out.wake_consumer();
  CHECK(w.finish() == static_cast<int>(proto::WorkerExit::protocol_error));
  ::munmap(control, ferry::detail::SharedRings::map_size(ferry::detail::SharedRings::default_capacity));
}
