// SPDX-License-Identifier: BSD-3-Clause
// Remote stack traces (issue 14): TaskError::remote_stack() is where the task's exception was
// thrown, TerminatedWorkerError::remote_stack() where its worker took a fatal signal; both are
// symbolized in the host from raw addresses, and a worker's garbage stack is a ProtocolError.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "crash.hpp"
#include "platform/symbolize.hpp"
#include "support/fixture.hpp"
#include "wire/failure.hpp"
#include "wire/stack.hpp"

using namespace ferry::detail;
using ferry::detail::protocol::BodyReader;
using ferry::detail::protocol::BodyWriter;
using ferry::detail::protocol::ProtocolError;

namespace {

template <class E, class F>
E caught(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  FAIL("expected exception was not thrown");
  throw std::logic_error("unreachable");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The first line of a stack.
std::string first_frame(const std::string& stack) { return stack.substr(0, stack.find('\n')); }
/// The first frame neither in libstdc++ nor a function of namespace std (inlined or not, as the
/// build's optimisation decides).
std::string first_frame_outside_std(const std::string& stack) {
  std::istringstream in(stack);
  for (std::string line; std::getline(in, line);) {
    auto name = line.find_first_not_of(' ', line.find(' '));
    if (contains(line, "libstdc++") || line.compare(name, 5, "std::") == 0) continue;
    return line;
  }
  return {};
}

}  // namespace

TEST_CASE("RemoteStack.task_error_names_the_throwing_function") {
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TaskError>([&] { ex.submit(throw_in_named_function, 3).get(); });
  CHECK(e.remote_type() == "std::invalid_argument");
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
  // Frame #0 is the function that threw, then the task that called it, in the crash plugin.
  CHECK(first_frame(stack).rfind("#0  ferry_test_named_thrower(int)", 0) == 0);
  CHECK(contains(first_frame(stack), "(" + std::filesystem::path(FERRY_TEST_CRASH_PLUGIN).filename().string() + ")"));
  CHECK(contains(stack, "throw_in_named_function(int)"));
#ifdef FERRY_TEST_DEBUG_INFO
  CHECK(contains(first_frame(stack), "crash.cpp:"));
#endif
  // Below the task's entry point runs only the worker loop: summed up in one line.
  CHECK(contains(stack, "ferry::detail::invoke<"));
  CHECK(contains(stack, "of the worker loop"));
  // what() stays one short line; the same text on every call.
  CHECK_FALSE(contains(e.what(), "#0"));
  CHECK(&e.remote_stack() == &stack);
  CHECK(ex.submit(throw_in_named_function, -1).get() == 0);  // and the pool goes on
}

TEST_CASE("RemoteStack.inlined_functions_are_frames_of_their_own") {
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TaskError>([&] { ex.submit(throw_in_inlined_function, 3).get(); });
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
  const std::string plugin = std::filesystem::path(FERRY_TEST_CRASH_PLUGIN).filename().string();
  std::istringstream lines(stack);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
#ifdef FERRY_TEST_DEBUG_INFO
  // The inlined function where it threw, marked inlined, then the task at the line that called it.
  CHECK(first.rfind("#0  ferry_test_inlined_thrower(int) at ", 0) == 0);
  CHECK(contains(first, "crash.cpp:"));
  CHECK(contains(first, "(" + plugin + ", inlined)"));
  CHECK(second.rfind("#1  throw_in_inlined_function(int)", 0) == 0);
  CHECK(contains(second, "crash.cpp:"));
  CHECK(contains(second, "(" + plugin + ")"));
  // Each its own line: the call site is not where the inlined function threw.
  CHECK(first.substr(first.find(" at ")) != second.substr(second.find(" at ")));
#else
  // Without DWARF only the symbol table speaks: the function the code was inlined into.
  CHECK(first.rfind("#0  throw_in_inlined_function(int)", 0) == 0);
#endif
  CHECK(contains(stack, "of the worker loop"));
}

TEST_CASE("RemoteStack.task_error_is_the_last_throw_not_a_caught_one") {
  ferry::Executor ex(support::options(1));
  // A runtime_error thrown and caught inside, then out_of_range from vector::at (libstdc++).
  auto e = caught<ferry::TaskError>([&] { ex.submit(throw_after_caught, 0).get(); });
  CHECK(e.remote_type() == "std::out_of_range");
  CAPTURE(e.remote_stack());
  // Frame #0 is in libstdc++ (its throwing helper; named only where libstdc++ has symbols), then
  // the task's own frame.
  CHECK(contains(first_frame(e.remote_stack()), "libstdc++"));
  // The first frame outside the standard library (vector::at is inlined or not) is the task's.
  CHECK(first_frame_outside_std(e.remote_stack()).find("throw_after_caught(int)") != std::string::npos);
  // `throw 42`: any type has a stack.
  auto i = caught<ferry::TaskError>([&] { ex.submit(throw_int, 1).get(); });
  CHECK(first_frame(i.remote_stack()).rfind("#0  throw_int(int)", 0) == 0);
}

TEST_CASE("RemoteStack.inlined_calls_inside_inlined_calls_are_each_a_frame") {
  // vector::at, inlined into the task, inlines _M_range_check, which throws: three frames, each
  // at its own line. Only the innermost inlined call was shown, and the task's frame then had
  // the line of the call inside at() (stl_vector.h), not its own.
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TaskError>([&] { ex.submit(throw_after_caught, 0).get(); });
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
#ifdef FERRY_TEST_DEBUG_INFO
  CHECK(contains(stack, "std::vector<int, std::allocator<int> >::at(unsigned long)"));
  const std::string task = first_frame_outside_std(stack);
  CHECK(contains(task, "throw_after_caught(int) at "));
  CHECK(contains(task, "crash.cpp:"));
#else
  MESSAGE("needs the crash plugin's debug information");
#endif
}

TEST_CASE("RemoteStack.tasks_that_succeed_are_unchanged") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(throw_in_named_function, -5).get() == -4);
  // Throws caught inside the task: it still returns its value (the cost is in docs/benchmarks.md).
  long long ns_per_throw = -1;
  CHECK_NOTHROW(ns_per_throw = ex.submit(throw_and_catch, 100).get());
  CHECK(ns_per_throw > 0);  // the 100 throws ran
  CHECK(ex.submit(throw_in_named_function, -1).get() == 0);
}

TEST_CASE("RemoteStack.terminated_worker_names_the_crashing_function") {
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(segfault_in_named_function, 0LL).get(); });
  CHECK(e.signal() == SIGSEGV);
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
  // Frame #0 is the faulting instruction itself.
  CHECK(first_frame(stack).rfind("#0  ferry_test_named_segfault(int volatile*)", 0) == 0);
  CHECK(contains(stack, "segfault_in_named_function(long long)"));
#ifdef FERRY_TEST_DEBUG_INFO
  CHECK(contains(first_frame(stack), "crash.cpp:"));
#endif
  CHECK_FALSE(contains(e.what(), "#0"));
  CHECK(ex.submit(throw_in_named_function, -1).get() == 0);
}

TEST_CASE("RemoteStack.terminated_worker_on_abort_and_stack_overflow") {
  ferry::Executor ex(support::options(1));
  SUBCASE("abort") {
    auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(abort_task, 1).get(); });
    CHECK(e.signal() == SIGABRT);
    CAPTURE(e.remote_stack());
    CHECK(contains(e.remote_stack(), "abort"));
    CHECK(contains(e.remote_stack(), "abort_task(int)"));
  }
  SUBCASE("raise(SIGSEGV)") {
    auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(segfault, 1).get(); });
    CAPTURE(e.remote_stack());
    CHECK(contains(e.remote_stack(), "segfault(int)"));
  }
  SUBCASE("stack overflow: reported from the alternate signal stack") {
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer's runtime cannot take a stack overflow inside itself: the crash handler's
    // first instrumented call waits for a lock the overflowed runtime code holds (seen: a worker
    // stuck in __tsan::TraceSwitch), or the first frame is TSan's. Not a ferry path.
    MESSAGE("skipped under ThreadSanitizer");
    return;
#endif
    auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(stack_overflow, 1 << 20).get(); });
    CHECK(e.signal() == SIGSEGV);
    CAPTURE(e.remote_stack());
    CHECK(contains(first_frame(e.remote_stack()), "recurse(int)"));
  }
  CHECK(ex.submit(throw_in_named_function, -1).get() == 0);
}

TEST_CASE("RemoteStack.killed_worker_has_none") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(throw_in_named_function, -1).get() == 0);
  auto pids = ex.worker_pids();
  REQUIRE(pids.size() == 1);
  auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(kill_pid, pids[0], SIGKILL).get(); });
  CHECK(e.signal() == SIGKILL);
  CHECK(e.remote_stack().empty());
}

// ---- the wire -------------------------------------------------------------------------------------

namespace {
const char* const sample_maps =
    "55d0c0000000-55d0c0001000 r--p 00000000 08:01 11 /opt/bin/ferry-worker\n"
    "55d0c0001000-55d0c0005000 r-xp 00001000 08:01 11 /opt/bin/ferry-worker\n"
    "55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]\n"
    "7f0000000000-7f0000001000 r--p 00000000 08:01 22 /opt/plugins/libp.so\n"
    "7f0000001000-7f0000003000 r-xp 00001000 08:01 22 /opt/plugins/libp.so\n"
    "7f0000003000-7f0000004000 rw-p 00000000 00:00 0\n"
    "7f1000000000-7f1000100000 r-xp 00000000 08:01 33 /usr/lib/libc.so.6\n";

/// A failure body after the result head, with `stack` bytes written by `write_stack`.
template <class F>
std::string failure_body(F&& write_stack) {
  Buffer b;
  BodyWriter w(b);
  w.u8(static_cast<std::uint8_t>(FailureKind::task_threw)).u32(0).u32(0).str("T").str("m").str("").str("");
  write_stack(w);
  return std::string(b.view());
}

Failure decode(const std::string& body) {
  BodyReader r(body);
  return decode_failure(r);
}
}  // namespace

TEST_CASE("RemoteStack.wire.selects_whole_modules_of_the_addresses") {
  std::uint64_t pcs[] = {0x7f0000001234, 0x12};  // in libp.so; in nothing
  char out[1024];
  std::size_t n = select_modules(sample_maps, std::strlen(sample_maps), pcs, 2, out, sizeof out);
  CHECK(std::string(out, n) ==
        "7f0000000000-7f0000001000 r--p 00000000 08:01 22 /opt/plugins/libp.so\n"
        "7f0000001000-7f0000003000 r-xp 00001000 08:01 22 /opt/plugins/libp.so\n");
  // A module that does not fit is left out whole, never cut.
  CHECK(select_modules(sample_maps, std::strlen(sample_maps), pcs, 2, out, 100) == 0);
  MapsLine m;
  CHECK(parse_maps_line("7f1000000000-7f1000100000 r-xp 00000000 08:01 33 /usr/lib/libc.so.6", m));
  CHECK(m.path == "/usr/lib/libc.so.6");
  CHECK(m.start == 0x7f1000000000);
  CHECK(parse_maps_line("7f0000003000-7f0000004000 rw-p 00000000 00:00 0", m));
  CHECK(m.path.empty());
  CHECK_FALSE(parse_maps_line("7f0000003000-7f0000001000 rw-p 00000000 00:00 0", m));  // start > end
  CHECK_FALSE(parse_maps_line("not a maps line", m));
}

TEST_CASE("RemoteStack.wire.a_maps_line_cut_short_is_left_out") {
  // The crash handler reads /proc/self/maps into a buffer of fixed size: a longer map ends in a
  // line cut short, whose path may be the start of another file's, symbolized in its place.
  const std::string maps =
      "7f0000000000-7f0000001000 r-xp 00000000 08:01 22 /opt/plugins/libp.so\n"
      "7f2000000000-7f2000001000 r-xp 00000000 08:01 23 /opt/plugins/libq.so.1";  // of libq.so.12
  std::uint64_t pcs[] = {0x7f0000000100, 0x7f2000000100};
  char out[1024];
  std::size_t n = select_modules(maps.data(), maps.size(), pcs, 2, out, sizeof out);
  CHECK(std::string(out, n) == "7f0000000000-7f0000001000 r-xp 00000000 08:01 22 /opt/plugins/libp.so\n");
  CHECK(select_modules(maps.data(), maps.find('\n'), pcs, 2, out, sizeof out) == 0);  // no whole line
}

TEST_CASE("RemoteStack.wire.failure_stack_round_trips") {
  Failure f = Failure::in_stage(InvokeStatus::task_threw, 0, "std::runtime_error", "x", "i32(i32)");
  f.stack.pcs = {0x7f0000001234, 0x55d0c0001100};
  f.stack.maps = sample_maps;
  f.stack.maps.erase(f.stack.maps.find("55d0c1000000"));  // file lines only, as a worker sends
  Buffer frame = encode_failure(9, f);
  BodyReader r(std::string_view(frame.data() + protocol::header_size, frame.size() - protocol::header_size));
  protocol::decode_result_head(r);
  Failure got = decode_failure(r);
  CHECK(got.stack.pcs == f.stack.pcs);
  CHECK(got.stack.maps == f.stack.maps);
}

TEST_CASE("RemoteStack.wire.garbage_stack_is_a_protocol_error") {
  CHECK(decode(failure_body([](BodyWriter& w) { w.u32(0).str(""); })).stack.empty());
  SUBCASE("more frames than the limit") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) {
                      w.u32(max_stack_frames + 1);
                      for (std::size_t i = 0; i <= max_stack_frames; ++i) w.u64(i);
                      w.str("");
                    })),
                    ProtocolError);
  }
  SUBCASE("a count larger than the addresses sent") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) { w.u32(3).u64(1).u64(2); })), ProtocolError);
  }
  SUBCASE("a huge count") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) { w.u32(0xFFFFFFFF); })), ProtocolError);
  }
  SUBCASE("maps text that is not maps lines") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) { w.u32(1).u64(1).str("\x01\xff garbage"); })),
                    ProtocolError);
  }
  SUBCASE("maps of an anonymous mapping") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) {
                      w.u32(1).u64(1).str("7f0000003000-7f0000004000 rw-p 00000000 00:00 0");
                    })),
                    ProtocolError);
  }
  SUBCASE("maps text over the limit") {
    std::string big;
    while (big.size() <= max_stack_maps) big += "7f0000000000-7f0000001000 r--p 00000000 08:01 22 /x\n";
    CHECK_THROWS_AS(decode(failure_body([&](BodyWriter& w) { w.u32(0).str(big); })), ProtocolError);
  }
  SUBCASE("no stack at all (a protocol 3 body)") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter&) {})), ProtocolError);
  }
  SUBCASE("a trailing byte") {
    CHECK_THROWS_AS(decode(failure_body([](BodyWriter& w) { w.u32(0).str("").u8(0); })), ProtocolError);
  }
  SUBCASE("crashed frames") {
    Crashed c{1234, SIGSEGV, 0, {}};
    Buffer good = encode_crashed(c);
    std::string body(good.data() + protocol::header_size, good.size() - protocol::header_size);
    CHECK(decode_crashed(body).pid == 1234);
    std::string no_signal = body;
    std::memset(no_signal.data() + 4, 0, 4);
    CHECK_THROWS_AS(decode_crashed(no_signal), ProtocolError);
    CHECK_THROWS_AS(decode_crashed(body.substr(0, body.size() - 1)), ProtocolError);
    CHECK_THROWS_AS(decode_crashed(body + "x"), ProtocolError);
  }
}

TEST_CASE("RemoteStack.wire.crashed_frame_from_the_handler_encoder") {
  // The signal handler's encoder (no allocation) writes exactly what encode_crashed does.
  Crashed c{77, SIGBUS, 0xdead, {{0x7f0000001234, 0x7f0000002000}, {}}};
  c.stack.maps = "7f0000000000-7f0000001000 r--p 00000000 08:01 22 /opt/plugins/libp.so\n";
  Buffer expected = encode_crashed(c);
  char out[4096];
  std::size_t n = encode_crashed_into(out, sizeof out, c.pid, c.signal, c.fault_address, c.stack.pcs.data(),
                                      c.stack.pcs.size(), c.stack.maps.data(), c.stack.maps.size());
  CHECK(std::string(out, n) == std::string(expected.view()));
  CHECK(encode_crashed_into(out, 20, c.pid, c.signal, 0, nullptr, 0, nullptr, 0) == 0);  // too small
  Crashed got = decode_crashed(std::string_view(out + protocol::header_size, n - protocol::header_size));
  CHECK(got.signal == SIGBUS);
  CHECK(got.fault_address == 0xdead);
  CHECK(got.stack.pcs == c.stack.pcs);
}

TEST_CASE("RemoteStack.symbolize.hostile_maps_do_not_hang_or_crash_the_host") {
  // Well-formed lines naming what is not an ELF file, a directory, a FIFO (opening one for
  // reading would block), a missing file: frames stay unnamed, nothing blocks.
  namespace fs = std::filesystem;
  support::TempDir scratch;  // mkdtemp: not a predictable name another user could make first
  const fs::path dir = scratch.path;
  REQUIRE(fs::is_directory(dir));
  fs::path fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Nothing named is opened, only looked at (O_PATH): opening a device runs its driver (a
  // watchdog armed, a serial line reset), opening a FIFO releases its writers. The kernel
  // reports every open but an O_PATH one to inotify.
  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  REQUIRE(watch >= 0);
  REQUIRE(::inotify_add_watch(watch, fifo.c_str(), IN_OPEN) >= 0);
  RawStack s;
  s.pcs = {0x1000, 0x7f0000000100, 0x7f1000000100, 0x7f2000000100, 0x7f3000000100, 0};
  s.maps = "7f0000000000-7f0000001000 r-xp 00000000 08:01 1 /dev/zero\n"
           "7f1000000000-7f1000001000 r-xp 00000000 08:01 1 " + dir.string() + "\n"
           "7f2000000000-7f2000001000 r-xp 00000000 08:01 1 " + fifo.string() + "\n"
           "7f3000000000-7f3000001000 r-xp 00000000 08:01 1 /no/such/file.so\n";
  std::string text = symbolize(s, true);
  CAPTURE(text);
  CHECK(contains(text, "#0  ?? (0x1000, no module)"));
  CHECK(contains(text, "#5  ??"));
  char event[4096];
  CHECK(::read(watch, event, sizeof event) < 0);  // no IN_OPEN: EAGAIN
  ::close(watch);
  // Symbolizing this test program's own stack works as it does for a worker's.
  RemoteStack ready("#0  given"), lazy(RawStack{}, false);
  CHECK(ready.text() == "#0  given");
  CHECK(lazy.text().empty());
}

namespace {

/// This process's maps lines of the crash plugin (linked into this test), with its path replaced
/// by `as`, and the address of its task throw_in_named_function.
RawStack crash_plugin_stack(const std::string& as) {
  namespace fs = std::filesystem;
  const std::string real = fs::canonical(FERRY_TEST_CRASH_PLUGIN).string();
  std::ifstream maps("/proc/self/maps");
  RawStack s;
  for (std::string line; std::getline(maps, line);) {
    auto at = line.find(real);
    if (at == std::string::npos || at + real.size() != line.size()) continue;
    s.maps += line.substr(0, at) + as + "\n";
  }
  s.pcs = {reinterpret_cast<std::uint64_t>(&throw_in_named_function)};
  return s;
}

}  // namespace

TEST_CASE("RemoteStack.symbolize.a_plugins_names_are_shown_as_text_one_frame_a_line") {
  // A plugin's symbol and debug names are its author's bytes: a function named with an escape
  // sequence and a newline made a host that printed remote_stack() retitle its terminal, and
  // showed a line of the plugin's making as a frame of its own (`#1  ... (libc.so.6)`).
  namespace fs = std::filesystem;
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const std::string name = "throw_in_named_function";
  const std::string evil = "throw\x1b]0;owned\x07\nforged!";
  REQUIRE(evil.size() == name.size());
  std::ifstream in(FERRY_TEST_CRASH_PLUGIN, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t replaced = 0;
  for (std::size_t at = 0; (at = bytes.find(name, at)) != std::string::npos; at += evil.size(), ++replaced)
    bytes.replace(at, name.size(), evil);
  REQUIRE(replaced > 0);
  const fs::path copy = dir.path / "lib\x1b[2Jcopy.so";
  std::ofstream(copy, std::ios::binary) << bytes;
  const std::string text = symbolize(crash_plugin_stack(copy.string()), true);
  CAPTURE(text);
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\x07') == std::string::npos);
  CHECK(contains(text, "throw\\x1b]0;owned\\x07\\x0aforged!"));
  CHECK(contains(text, "lib\\x1b[2Jcopy.so"));
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) CHECK_MESSAGE(line.rfind("forged", 0) != 0, line);
}

TEST_CASE("RemoteStack.symbolize.reads_nothing_a_sandboxed_worker_could_write") {
  // A sandboxed task writes only in its pool's writable directories; a worker names the files of
  // its stack itself. So a file there, named in a stack, could be built to attack the host's DWARF
  // reader: the host does not read it.
  namespace fs = std::filesystem;
  // Not under /tmp: a sandboxed pool's workers show their private directory there, and this
  // process then reads no module under it either.
  support::TempDir elsewhere(FERRY_TEST_BINARY_DIR);
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, elsewhere.path / "copy.so");
  CHECK(contains(symbolize(crash_plugin_stack((elsewhere.path / "copy.so").string()), true),
                 "throw_in_named_function(int)"));

  auto o = support::options(1);
  o.sandbox.enabled = true;
  // The private directory the pool makes for its sandbox, in the $TMPDIR it starts with.
  support::TempDir base;
  std::optional<ferry::Executor> ex;
  {
    support::ScopedEnv env("TMPDIR", base.path.string());
    ex.emplace(o);
  }
  fs::path tmp;
  for (const auto& entry : fs::directory_iterator(base.path)) tmp = entry.path();
  REQUIRE(fs::is_directory(tmp));
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, tmp / "evil.so");
  // Where the workers show that directory (/tmp), a task names a module of its own by a path at
  // which this host finds a file of anyone's: not read either.
  const fs::path shown =
      ex->submit<std::string>(ferry::TaskRef{.library = FERRY_TEST_HOSTILE_PLUGIN, .name = "temp_dir"}).get();
  if (shown == fs::canonical("/tmp")) {
    support::TempDir host_tmp("/tmp");
    fs::copy_file(FERRY_TEST_CRASH_PLUGIN, host_tmp.path / "planted.so");
    CHECK_FALSE(contains(symbolize(crash_plugin_stack((host_tmp.path / "planted.so").string()), true),
                         "throw_in_named_function"));
  } else {
    MESSAGE("a module planted at the path the workers show as /tmp: skipped (they show " << shown.string() << ")");
  }
  std::string text = symbolize(crash_plugin_stack((tmp / "evil.so").string()), true);
  CAPTURE(text);
  CHECK_FALSE(contains(text, "throw_in_named_function"));
  CHECK(contains(text, "no module"));
  // Nor through a link to it from elsewhere, nor by a path with ".." in it.
  fs::create_symlink(tmp / "evil.so", elsewhere.path / "link.so");
  CHECK_FALSE(contains(symbolize(crash_plugin_stack((elsewhere.path / "link.so").string()), true),
                       "throw_in_named_function"));
  CHECK_FALSE(contains(symbolize(crash_plugin_stack((tmp / ".." / tmp.filename() / "evil.so").string()), true),
                       "throw_in_named_function"));
  // A single writable file (Sandbox::write may name one).
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, elsewhere.path / "writable.so");
  ferry::detail::never_symbolize_under((elsewhere.path / "writable.so").string());
  CHECK_FALSE(contains(symbolize(crash_plugin_stack((elsewhere.path / "writable.so").string()), true),
                       "throw_in_named_function"));
  // What lies elsewhere is read as before.
  CHECK(contains(symbolize(crash_plugin_stack((elsewhere.path / "copy.so").string()), true),
                 "throw_in_named_function(int)"));
}

TEST_CASE("RemoteStack.symbolize.reads_no_file_another_user_could_change") {
  // libdwfl maps what it reads: another user's file, truncated while the host parses it, was a
  // SIGBUS in the host, and its bytes could be made to attack the DWARF reader. A worker names
  // the files of its stack itself, so a task can name anyone's.
  namespace fs = std::filesystem;
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, dir.path / "mine.so");
  CHECK(contains(symbolize(crash_plugin_stack((dir.path / "mine.so").string()), true), "throw_in_named_function"));
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, dir.path / "open.so");
  fs::permissions(dir.path / "open.so", fs::perms::others_write, fs::perm_options::add);
  CHECK_FALSE(contains(symbolize(crash_plugin_stack((dir.path / "open.so").string()), true),
                       "throw_in_named_function"));
  if (::geteuid() == 0) {  // only root can give a file away
    fs::copy_file(FERRY_TEST_CRASH_PLUGIN, dir.path / "theirs.so");
    REQUIRE(::chown((dir.path / "theirs.so").c_str(), 65534, 65534) == 0);
    CHECK_FALSE(contains(symbolize(crash_plugin_stack((dir.path / "theirs.so").string()), true),
                         "throw_in_named_function"));
  } else {
    MESSAGE("another user's file: skipped (needs root to give one away)");
  }
}

TEST_CASE("RemoteStack.symbolize.reads_no_file_without_a_directory_entry") {
  // A task can write an ELF file into a memfd, which no sandbox rule covers, and name it through
  // /proc/PID/fd/N, or through a link to that: the host reads neither.
  namespace fs = std::filesystem;
  int fd = ::memfd_create("crafted", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  {
    std::ifstream in(FERRY_TEST_CRASH_PLUGIN, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  }
  const std::string through_proc = "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd);
  // Not under /tmp: after a sandboxed pool in this process (reads_nothing_a_sandboxed_worker_could_write,
  // when the binary runs all its tests), no module under the directory its workers see as /tmp is read.
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  fs::create_symlink(through_proc, dir.path / "link.so");
  for (const std::string& path : {through_proc, "/proc/self/fd/" + std::to_string(fd), (dir.path / "link.so").string()}) {
    CAPTURE(path);
    std::string text = symbolize(crash_plugin_stack(path), true);
    CAPTURE(text);
    CHECK_FALSE(contains(text, "throw_in_named_function"));
  }
  ::close(fd);
  // Nor the file the host's stdin, stdout or stderr is: workers inherit those descriptors, and a
  // sandboxed task can write through them (here stdin, a copy of a plugin).
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, dir.path / "log.so");
  CHECK(contains(symbolize(crash_plugin_stack((dir.path / "log.so").string()), true), "throw_in_named_function"));
  int saved = ::dup(0);
  int log = ::open((dir.path / "log.so").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE((saved >= 0 && log >= 0 && ::dup2(log, 0) == 0));
  std::string as_stdin = symbolize(crash_plugin_stack((dir.path / "log.so").string()), true);
  ::dup2(saved, 0);
  ::close(saved);
  ::close(log);
  CHECK_FALSE(contains(as_stdin, "throw_in_named_function"));
}

// ---- many failures, long stacks, long names ---------------------------------------------------------

TEST_CASE("RemoteStack.a_failure_repeated_shares_one_stack") {
  // A map over many failing items made one stack per failure: a few KiB of module map each
  // (100,000 failures held hundreds of MB), and each symbolized again when shown (~0.1 s each).
  // The same failure in the same worker is now one stack, symbolized once.
  ferry::Executor ex(support::options(1));
  auto first = caught<ferry::TaskError>([&] { ex.submit(throw_in_named_function, 3).get(); });
  auto again = caught<ferry::TaskError>([&] { ex.submit(throw_in_named_function, 4).get(); });
  REQUIRE_FALSE(first.remote_stack().empty());
  CHECK(&first.remote_stack() == &again.remote_stack());
  auto outcomes = ex.map_outcomes(throw_in_named_function, std::vector<int>(200, 5), {.chunksize = 50});
  std::set<const std::string*> stacks;
  for (const auto& o : outcomes) {
    REQUIRE_FALSE(o.ok());
    try {
      std::rethrow_exception(o.error());
    } catch (const ferry::TaskError& e) {
      stacks.insert(&e.remote_stack());
    }
  }
  CHECK(stacks.size() <= 2);  // one per way into the task (a call, a chunk), not one per item
  CHECK(contains(**stacks.begin(), "throw_in_named_function(int)"));

  // Stacks of other addresses in the same modules share their module map.
  RawStack a = crash_plugin_stack("/x/libp.so"), b = a;
  b.pcs.push_back(b.pcs[0] + 1);
  auto sa = RemoteStack::make(a, false), sb = RemoteStack::make(b, false), sc = RemoteStack::make(a, true);
  CHECK(sa != sb);
  CHECK(sa != sc);  // exact_first is part of what a stack is
  CHECK(sa == RemoteStack::make(a, false));
  CHECK(sa->maps() == sb->maps());
  CHECK(*sa->maps() == a.maps);
}

TEST_CASE("RemoteStack.symbolize.a_recursion_is_said_once_then_counted") {
  // A stack overflow's stack is 64 times the same frame: shown once, then counted, and said to be
  // cut (only the innermost 64 addresses travel).
  RawStack s = crash_plugin_stack(std::filesystem::canonical(FERRY_TEST_CRASH_PLUGIN).string());
  const std::uint64_t call = s.pcs[0] + 1;  // as a return address: the lookup is of the byte before
  s.pcs.assign(max_stack_frames, call);
  std::string text = symbolize(s, false);
  CAPTURE(text);
  CHECK(first_frame(text).rfind("#0  throw_in_named_function(int)", 0) == 0);
  CHECK(contains(text, "\n    ... the frame above again, 63 more times (#1 to #63)\n"));
  CHECK(contains(text, "\n    ... the frames below were not recorded (a stack keeps its 64 innermost)"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 2);
  // A frame seen twice is simply shown twice; the numbering goes on after a summed-up run.
  s.pcs = {call, call, 0x10, call, call, call, 0x20};
  text = symbolize(s, false);
  CAPTURE(text);
  CHECK(contains(text, "\n#1  throw_in_named_function(int)"));
  CHECK(contains(text, "\n#2  ?? (0x10, no module)\n#3  throw_in_named_function(int)"));
  CHECK(contains(text, "\n    ... the frame above again, 2 more times (#4 to #5)\n#6  ?? (0x20, no module)"));
  CHECK_FALSE(contains(text, "not recorded"));
  // A crash's stack deeper than 64 addresses: its innermost, the gap, its outermost.
  s.pcs = {call, call, call, stack_gap, 8000, call, 0x20};
  text = symbolize(s, false);
  CAPTURE(text);
  CHECK(contains(text, "\n    ... the frame above again, 2 more times (#1 to #2)\n    ... 8000 frames not recorded\n"
                       "#3  throw_in_named_function(int)"));
  CHECK(contains(text, "\n#4  ?? (0x20, no module)"));
  // A worker's word: gaps anywhere, of any size, are only text.
  s.pcs.assign(max_stack_frames, stack_gap);
  s.pcs[2] = ~std::uint64_t{0};  // the count of the gap at [1] (a first address is a frame)
  text = symbolize(s, false);
  CAPTURE(text);
  CHECK(contains(text, "... 18446744073709551615 frames not recorded"));
  CHECK(std::count(text.begin(), text.end(), '\n') < 64);
}

TEST_CASE("RemoteStack.stack_overflow_shows_both_ends_of_its_stack") {
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (see terminated_worker_on_abort_and_stack_overflow)");
  return;
#endif
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(stack_overflow, 1 << 20).get(); });
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
  CHECK(contains(first_frame(stack), "recurse(int)"));
  CHECK(contains(stack, " more times (#"));
  CHECK(std::count(stack.begin(), stack.end(), '\n') < 16);
  // Its innermost frames, then how many were left out, then its outermost: where the task began
  // the recursion (the task itself was not recorded: a stack keeps 64 addresses).
  CHECK(contains(stack, " frames not recorded\n"));
  CHECK(contains(stack.substr(stack.find(" frames not recorded")), "stack_overflow(int)"));
  CHECK(contains(stack, "of the worker loop"));
}

namespace {

// A function whose demangled name is about 100 KB (its mangled name stays short: substitutions).
template <class A, class B>
struct Pair {};
template <int N>
struct Nested {
  using type = Pair<typename Nested<N - 1>::type, typename Nested<N - 1>::type>;
};
template <>
struct Nested<0> {
  using type = Pair<int, long>;
};
template <class T>
__attribute__((noinline)) int long_named(T) {
  return 1;
}
using LongType = Nested<12>::type;

/// This test program's maps lines and the address of long_named<LongType>.
RawStack long_named_stack() {
  namespace fs = std::filesystem;
  const std::string self = fs::canonical("/proc/self/exe").string();
  std::ifstream maps("/proc/self/maps");
  RawStack s;
  for (std::string line; std::getline(maps, line);)
    if (line.size() > self.size() && line.compare(line.size() - self.size(), self.size(), self) == 0)
      s.maps += line + "\n";
  int (*fn)(LongType) = &long_named<LongType>;
  s.pcs = {reinterpret_cast<std::uint64_t>(fn)};
  return s;
}

}  // namespace

TEST_CASE("RemoteStack.symbolize.long_names_are_cut") {
  // A module's symbol table can hold names of any length: each frame shows at most
  // max_frame_name bytes of a name, and says how much it left out.
  CHECK(long_named(LongType{}) == 1);
  std::string text = symbolize(long_named_stack(), true);
  CAPTURE(text.substr(0, 200));
  CHECK(first_frame(text).rfind("#0  int (anonymous namespace)::long_named<(anonymous namespace)::Pair<", 0) == 0);
  CHECK(contains(text, " bytes more)"));
  CHECK(text.size() < 2 * max_frame_name + 1024);
}

namespace {

/// `s` as a worker that loaded the same modules `delta` bytes higher would send it.
RawStack shifted(const RawStack& s, std::uint64_t delta) {
  RawStack out;
  std::istringstream lines(s.maps);
  for (std::string line; std::getline(lines, line);) {
    MapsLine m;
    REQUIRE(parse_maps_line(line, m));
    std::ostringstream moved;
    moved << std::hex << m.start + delta << '-' << m.end + delta << line.substr(line.find(' ')) << '\n';
    out.maps += moved.str();
  }
  for (std::uint64_t pc : s.pcs) out.pcs.push_back(pc + delta);
  return out;
}

}  // namespace

TEST_CASE("RemoteStack.symbolize.an_address_looked_up_once_is_not_looked_up_again") {
  // A crash loop: each new worker has its libraries elsewhere, and the same addresses in them.
  // libdw read a module's symbol table and debug information again for each stack (~65 ms):
  // `ferry map --keep-going` over lines that crash spent 90 % of its time there.
  namespace fs = std::filesystem;
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path plugin = dir.path / "plugin.so";
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, plugin);
  const RawStack s = crash_plugin_stack(plugin.string());
  const std::string first = symbolize(s, true);
  REQUIRE(contains(first, "throw_in_named_function(int)"));
  const std::size_t lookups = symbolize_lookups();
  CHECK(symbolize(shifted(s, 0x100000000), true) == first);
  CHECK(symbolize(s, true) == first);
  CHECK(symbolize_lookups() == lookups);
  // Another file at that path: looked up in it, never taken from what the old one said.
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, plugin, fs::copy_options::overwrite_existing);
  const std::string replaced = symbolize(s, true);
  CAPTURE(replaced);
  CHECK_FALSE(contains(replaced, "throw_in_named_function"));
  CHECK(symbolize_lookups() > lookups);
}

TEST_CASE("RemoteStack.a_stripped_plugin_still_leaves_out_the_worker_loop") {
  // A plugin without a symbol table: its frames are unnamed, the entry point too, so the worker
  // loop below it was shown frame by frame. It is summed up as before, at the loop's own frame.
  namespace fs = std::filesystem;
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path stripped = dir.path / "libstripped.so";
  const std::string command = "strip --strip-all -o '" + stripped.string() + "' '" FERRY_TEST_CRASH_PLUGIN "' 2>/dev/null";
  if (std::system(command.c_str()) != 0) {
    MESSAGE("no strip(1) here: skipped");
    return;
  }
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TaskError>([&] {
    ex.submit<int>(ferry::TaskRef{.library = stripped.string(), .name = "throw_in_named_function"}, 3).get();
  });
  const std::string& stack = e.remote_stack();
  CAPTURE(stack);
  CHECK(contains(stack, "(libstripped.so+0x"));
  CHECK(contains(stack, "of the worker loop"));
  CHECK_FALSE(contains(stack, "WorkerLoop"));
  CHECK_FALSE(contains(stack, "worker_main"));
}
