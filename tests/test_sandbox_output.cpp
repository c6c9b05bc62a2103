// SPDX-License-Identifier: BSD-3-Clause
// What a sandboxed task prints, on its way to the host's terminal: the relay that copies a
// sandboxed worker's stdout and stderr shows its escape sequences escaped (OSC 52 wrote the
// user's clipboard, a query's answer was typed into the shell), colours and progress bars kept;
// into a file or a pipe the bytes go as the task wrote them.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "hostile.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr auto future_wait = 60s;

ferry::ExecutorOptions sandboxed() {
  ferry::ExecutorOptions o = support::options(1);
  o.sandbox.enabled = true;
  return o;
}

/// Runs write_text(2, text, cut) in a sandboxed pool of one worker (`o`), then ends the pool: the
/// bytes the task wrote (all of them, or the test fails).
void print_from_a_sandboxed_task(const std::string& text, std::uint64_t cut,
                                 const ferry::ExecutorOptions& o = sandboxed()) {
  std::uint64_t written = 0;
  {
    ferry::Executor boxed(o);
    ferry::SubmitOptions so;
    so.deadline = 30s;
    auto f = boxed.submit_with(so, write_text, STDERR_FILENO, text, cut);
    REQUIRE(static_cast<bool>(f.wait_for(future_wait)));
    written = f.get();
  }
  CHECK(written == text.size());
}

/// What reaches a terminal that is the host's stderr when a sandboxed task prints `text` (ending
/// in "done\n"), cut in two writes at `cut`.
std::string seen_on_a_terminal(const std::string& text, std::uint64_t cut,
                               const ferry::ExecutorOptions& o = sandboxed()) {
  support::Pty pty;
  std::string seen;
  {
    support::StderrTo on(pty.terminal);
    print_from_a_sandboxed_task(text, cut, o);
    on.restore();
    // The relay may still be writing when the pool has ended: read until the last line is in.
    CHECK(support::wait_until([&] {
      pty.read_into(seen);
      return seen.find("done") != std::string::npos;
    }));
  }
  return seen;
}

// OSC 52 sets the clipboard to "rm -rf ~"; ESC [ 6 n asks the terminal for its cursor (the
// answer arrives as typed input); the colour and the line erase are kept. Cut inside the OSC's
// introducer, so that the relay's first read ends with a lone ESC.
const std::string printed = "\x1b[32mok\x1b[0m \x1b]52;c;cm0gLXJmIH4K\x07 \x1b[6n\r\x1b[Kdone\n";
const std::size_t cut_at = printed.find("\x1b]") + 1;

/// `seen` without the CAN the relay writes before each write (ending any sequence left open).
std::string shown_text(std::string seen) {
  std::erase(seen, '\x18');
  return seen;
}

}  // namespace

TEST_CASE("SandboxOutput.escape_sequences_reach_the_hosts_terminal_escaped") {
  const std::string seen = seen_on_a_terminal(printed, cut_at);
  CAPTURE(seen);
  CHECK(seen.find("\x1b]") == std::string::npos);
  CHECK(seen.find("\x1b[6n") == std::string::npos);
  CHECK(seen.find("\\x1b]52;c;cm0gLXJmIH4K\\x07") != std::string::npos);
  CHECK(seen.find("\\x1b[6n") != std::string::npos);
  CHECK(seen.find("\x1b[32mok\x1b[0m") != std::string::npos);
  CHECK(seen.find("\x1b[Kdone") != std::string::npos);
}

TEST_CASE("SandboxOutput.bytes_past_ascii_follow_the_hosts_locale_not_the_tasks") {
  // The relay took the worker's environment for the terminal's: ExecutorOptions::env naming a
  // UTF-8 locale let U+009B (C2 9B) through to a host terminal in an 8-bit locale, where 0x9B is
  // CSI. The host's locale decides; the task's only names what the task itself uses.
  const std::string text = "caf\xc3\xa9 \xc2\x9b" "6n done\n";
  {
    support::ScopedEnv host_all("LC_ALL", "C");
    ferry::ExecutorOptions o = sandboxed();
    o.env["LC_ALL"] = "C.UTF-8";
    const std::string seen = shown_text(seen_on_a_terminal(text, text.size(), o));
    CAPTURE(seen);
    CHECK(seen.find("\xc2\x9b") == std::string::npos);
    CHECK(seen.find("caf\\xc3\\xa9 \\xc2\\x9b6n") != std::string::npos);
  }
  {
    support::ScopedEnv host_all("LC_ALL", "C.UTF-8");
    ferry::ExecutorOptions o = sandboxed();
    o.env["LC_ALL"] = "C";
    const std::string seen = shown_text(seen_on_a_terminal(text, text.size(), o));
    CAPTURE(seen);
    // A terminal in UTF-8: the letter is shown; U+009B, a C1 control, is escaped all the same.
    CHECK(seen.find("caf\xc3\xa9") != std::string::npos);
    CHECK(seen.find("\xc2\x9b") == std::string::npos);
  }
}

TEST_CASE("SandboxOutput.into_a_file_the_bytes_go_as_the_task_wrote_them") {
  // Not a terminal: a log keeps what the program wrote (a user asked for its output there).
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path log = dir.path / "host.log";
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  {
    support::StderrTo on(fd);
    print_from_a_sandboxed_task(printed, cut_at);
  }
  ::close(fd);
  CHECK(support::wait_until([&] { return support::read_file(log).find(printed) != std::string::npos; }));
}
