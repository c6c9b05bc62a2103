// SPDX-License-Identifier: BSD-3-Clause
// The ferry command's streams (cli/common.cpp: output, isolate_stdio), in a forked child of the
// test whose stdout is a pipe the test reads.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "../cli/commands.hpp"
#include "support/fixture.hpp"

namespace {

/// Everything `fd` gives until its writers are gone.
std::string read_all(int fd) {
  std::string text;
  char buf[256];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  return text;
}

}  // namespace

TEST_CASE("CliStdio.output_after_isolate_stdio_writes_the_moved_stdout") {
  // isolate_stdio points descriptor 1 at stderr (where a task's prints go): output() still named
  // descriptor 1, so a result written through it after the move went to stderr.
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  const int code = support::exit_code_of_child(
      [&] {
        const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0 || ::dup2(pipe_fds[1], STDOUT_FILENO) < 0 || ::dup2(null, STDERR_FILENO) < 0) return 2;
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        std::fputs("before\n", ferry::cli::output());  // the stream is made on descriptor 1
        ferry::cli::Stdio io = ferry::cli::isolate_stdio(/*take_stdin=*/false);
        if (io.out_fd < 0) return 3;
        if (ferry::cli::output() != io.out) return 4;
        // Called again: the same streams (moving descriptor 1, stderr by then, made it the results').
        ferry::cli::Stdio again = ferry::cli::isolate_stdio(/*take_stdin=*/false);
        if (again.out != io.out || again.out_fd != io.out_fd || ferry::cli::output() != io.out) return 6;
        std::fputs("after\n", ferry::cli::output());
        return std::fflush(ferry::cli::output()) == 0 ? 0 : 5;
      },
      std::chrono::seconds(20));
  ::close(pipe_fds[1]);
  const std::string text = read_all(pipe_fds[0]);
  ::close(pipe_fds[0]);
  CHECK(code == 0);
  CHECK(text == "before\nafter\n");
}
