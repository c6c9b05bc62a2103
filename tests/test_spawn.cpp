// SPDX-License-Identifier: BSD-3-Clause
// Starting and reaping processes: exit codes, signals, fd 3, no leaked descriptors, environment.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "wire/channel.hpp"
#include "wire/protocol.hpp"
#include "platform/spawn.hpp"
#include "support/fixture.hpp"

namespace {

using namespace ferry::detail;

/// A child started with one end of a socketpair as its fd 3; `host` is the other end.
struct Child {
  SpawnedProcess proc;
  Fd host;
};

Child spawn_with_channel(const std::string& exe, const std::vector<std::string>& args,
                         const std::vector<std::string>& env = merged_environment({})) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Fd host(sv[0]);
  Fd child_end(sv[1]);
  Child c{spawn_process(exe, args, env, child_end.get()), std::move(host)};
  REQUIRE(c.proc.pid > 0);
  return c;  // child_end closes here: the host sees EOF once the child exits
}

Child sh(const std::string& script, const std::vector<std::string>& extra = {},
         const std::vector<std::string>& env = merged_environment({})) {
  std::vector<std::string> args{"-c", script};
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn_with_channel("/bin/sh", args, env);
}

/// Everything the child writes to fd 3, until it (and its children) closed it.
std::string read_to_eof(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

TEST_CASE("Spawn.exit_code_is_reaped") {
  Child c = sh("exit 3");
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.known);
  CHECK(s.exit_code == 3);
  CHECK(s.signal == 0);
}

TEST_CASE("Spawn.signal_is_reaped") {
  int sig = 0;
  SUBCASE("SIGSEGV") { sig = SIGSEGV; }
  SUBCASE("SIGKILL") { sig = SIGKILL; }
  SUBCASE("SIGTERM") { sig = SIGTERM; }
  CAPTURE(sig);
  Child c = sh("ulimit -c 0; kill -" + signal_name(sig).substr(3) + " $$; exit 9");
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.known);
  CHECK(s.signal == sig);
  CHECK(s.exit_code == -1);
}

TEST_CASE("Spawn.signal_state_is_reset") {
  // An ignored SIGTERM and a blocked SIGUSR1 in the host must not leak into the child.
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGTERM, &ignore, &old) == 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);
  Child c = sh("cat /proc/self/status >&3; kill -TERM $$; exit 7");
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGTERM, &old, nullptr);
  std::string status = read_to_eof(c.host.get());
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.signal == SIGTERM);
  auto line = [&](const std::string& key) {
    auto at = status.find("\n" + key + ":");
    REQUIRE(at != std::string::npos);
    auto begin = status.find_first_not_of(" \t", at + key.size() + 2);
    return status.substr(begin, status.find('\n', begin) - begin);
  };
  CHECK(line("SigBlk") == "0000000000000000");
  // Signals 1-31 are at their defaults; glibc's own real-time signals (32, 33) cannot be reset.
  CHECK((std::stoull(line("SigIgn"), nullptr, 16) & 0x7FFFFFFFull) == 0);
}

TEST_CASE("Spawn.channel_is_fd_3") {
  Child c = sh("printf 'hello from fd 3' >&3");
  CHECK(read_to_eof(c.host.get()) == "hello from fd 3");
  CHECK(reap(c.proc.pid).exit_code == 0);
}

TEST_CASE("Spawn.stdin_is_dev_null") {
  // A task must not read the host's input.
  Child c = sh("readlink /proc/self/fd/0 >&3");
  CHECK(read_to_eof(c.host.get()) == "/dev/null\n");
  CHECK(reap(c.proc.pid).exit_code == 0);
}

TEST_CASE("Spawn.channel_already_at_fd_3") {
  // spawn_process must cope with the host's channel being fd 3 itself.
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  // Move both ends out of the way first: one of them may have landed on fd 3.
  Fd host(::fcntl(sv[0], F_DUPFD_CLOEXEC, 20));
  Fd child_end(::fcntl(sv[1], F_DUPFD_CLOEXEC, 20));
  ::close(sv[0]);
  ::close(sv[1]);
  REQUIRE(host);
  REQUIRE(child_end);
  Fd parked;  // whatever held fd 3 before, restored at the end
  const int fd3_flags = ::fcntl(3, F_GETFD);
  if (fd3_flags >= 0) parked = Fd(::fcntl(3, F_DUPFD_CLOEXEC, 20));
  REQUIRE(::dup3(child_end.get(), 3, O_CLOEXEC) == 3);
  Fd three(3);
  child_end.reset();
  SpawnedProcess p = spawn_process("/bin/sh", {"-c", "printf ok >&3"}, merged_environment({}), 3);
  three.reset();
  if (parked) {  // fd 3 is the original again; the parked copy closes at scope exit
    REQUIRE(::dup3(parked.get(), 3, (fd3_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) == 3);
  }
  CHECK(read_to_eof(host.get()) == "ok");
  CHECK(reap(p.pid).exit_code == 0);
}

TEST_CASE("Spawn.a_full_descriptor_table_is_said_as_such_not_as_an_old_kernel") {
  // With every descriptor taken, the process starts (posix_spawn needs none here) and its pidfd
  // cannot be had: EMFILE, which the launcher used to report as "Linux < 5.3".
  const int code = support::exit_code_of_child(
      [] {
        rlimit few{64, 64};
        if (::setrlimit(RLIMIT_NOFILE, &few) != 0) return 1;
        while (::dup(0) >= 0 || errno == EINTR) {
        }
        if (errno != EMFILE) return 2;
        SpawnedProcess p = spawn_process("/bin/true", {}, merged_environment({}), 0);
        if (p.pid <= 0) return 3;
        const bool said = !p.pidfd && p.pidfd_error == EMFILE;
        ::waitpid(p.pid, nullptr, 0);
        return said ? 0 : 4;
      },
      std::chrono::seconds(20));
  CHECK(code == 0);
}

TEST_CASE("Spawn.no_other_descriptor_leaks") {
  // A descriptor opened without O_CLOEXEC would be inherited by a plain fork+exec.
  // (F_DUPFD moves them above fd 3, which the channel takes in the child anyway.)
  auto inheritable = [](int fd) {
    int high = ::fcntl(fd, F_DUPFD, 10);
    ::close(fd);
    REQUIRE(high >= 10);
    REQUIRE((::fcntl(high, F_GETFD) & FD_CLOEXEC) == 0);
    return high;
  };
  int leaky = inheritable(::open("/proc/self/status", O_RDONLY));
  Fd guard(leaky);
  int leaky_pipe[2];
  REQUIRE(::pipe(leaky_pipe) == 0);
  leaky_pipe[0] = inheritable(leaky_pipe[0]);
  leaky_pipe[1] = inheritable(leaky_pipe[1]);
  Fd g1(leaky_pipe[0]), g2(leaky_pipe[1]);
  // ls lists its own descriptors: stdin/stdout/stderr, the channel and the one it lists with.
  Child c = sh("ls -1 /proc/self/fd >&3");
  std::string out = read_to_eof(c.host.get());
  ExitStatus s = reap(c.proc.pid);
  REQUIRE(s.exit_code == 0);
  auto fds = split(out, '\n');
  CAPTURE(out);
  std::set<int> open;
  for (const auto& f : fds) open.insert(std::stoi(f));
  CHECK(open.count(0) == 1);
  CHECK(open.count(1) == 1);
  CHECK(open.count(2) == 1);
  CHECK(open.count(3) == 1);
  CHECK(open.count(leaky) == 0);
  CHECK(open.count(leaky_pipe[0]) == 0);
  CHECK(open.count(leaky_pipe[1]) == 0);
  // Exactly one more: the directory ls reads.
  CHECK(open.size() == 5);
  CHECK(*open.rbegin() == 4);
}

TEST_CASE("Spawn.output_file_without_a_channel_gets_stdio_only") {
  // How the FERRY_WRAP compiler runs: no channel, stdout and stderr into a log, nothing else open
  // (not even descriptors this process forgot to mark close-on-exec).
  int leaky = ::fcntl(::open("/proc/self/status", O_RDONLY), F_DUPFD, 10);
  REQUIRE(leaky >= 10);
  REQUIRE((::fcntl(leaky, F_GETFD) & FD_CLOEXEC) == 0);
  Fd guard(leaky);
  support::TempDir dir;
  auto log = dir.path / "out.log";
  SpawnedProcess p = spawn_process(
      "/bin/sh", {"-c", "ls -1 /proc/self/fd; echo to-stderr >&2; readlink /proc/self/fd/0"},
      merged_environment({}), -1, log);
  ExitStatus s = reap(p.pid);
  REQUIRE(s.exit_code == 0);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CAPTURE(text);
  auto lines = split(text, '\n');
  std::set<int> open;
  for (const auto& l : lines)
    if (!l.empty() && std::isdigit(static_cast<unsigned char>(l[0])) && l.find('/') == std::string::npos)
      open.insert(std::stoi(l));
  // stdio, and the directory ls reads (the lowest free number: 3, as nothing holds it).
  CHECK(open == std::set<int>{0, 1, 2, 3});
  CHECK(text.find("to-stderr\n") != std::string::npos);
  CHECK(text.find("/dev/null\n") != std::string::npos);
  struct stat st {};
  REQUIRE(::stat(log.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);  // a compiler's log may quote private sources
}

TEST_CASE("Spawn.environment_is_exactly_what_was_passed") {
  support::ScopedEnv inherited("FERRY_TEST_SPAWN_INHERITED", "from the host");
  support::ScopedEnv overridden("FERRY_TEST_SPAWN_OVERRIDDEN", "old value");
  auto env = merged_environment({{"FERRY_TEST_SPAWN_OVERRIDDEN", "new value"},
                                 {"FERRY_TEST_SPAWN_ADDED", "a=b c"}});
  CHECK(std::count(env.begin(), env.end(), "FERRY_TEST_SPAWN_INHERITED=from the host") == 1);
  CHECK(std::count(env.begin(), env.end(), "FERRY_TEST_SPAWN_OVERRIDDEN=new value") == 1);
  CHECK(std::count(env.begin(), env.end(), "FERRY_TEST_SPAWN_OVERRIDDEN=old value") == 0);
  CHECK(std::count(env.begin(), env.end(), "FERRY_TEST_SPAWN_ADDED=a=b c") == 1);
  CHECK(std::is_sorted(env.begin(), env.end()));

  SUBCASE("merged") {
    // The kernel's record of the shell's initial environment: what execve received.
    Child c = sh("cat /proc/$$/environ >&3", {}, env);
    std::string got = read_to_eof(c.host.get());
    CHECK(reap(c.proc.pid).exit_code == 0);
    CHECK(split(got, '\0') == env);
  }
  SUBCASE("minimal") {
    std::vector<std::string> minimal{"ONLY=this", "EMPTY="};
    Child c = sh("printf '%s|%s|%s' \"$ONLY\" \"${EMPTY-unset}\" \"${HOME-unset}\" >&3", {},
                 minimal);
    std::string got = read_to_eof(c.host.get());
    CHECK(reap(c.proc.pid).exit_code == 0);
    CHECK(got == "this||unset");
  }
}

TEST_CASE("Spawn.missing_executable_throws_enoent") {
  support::TempDir dir;
  try {
    spawn_with_channel((dir.path / "no-such-program").string(), {});
    FAIL("spawn_process did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
    CHECK(std::string(e.what()).find("no-such-program") != std::string::npos);
  }
}

TEST_CASE("Spawn.non_executable_file_throws_eacces") {
  support::TempDir dir;
  auto file = dir.path / "not-executable";
  {
    std::ofstream out(file);
    out << "#!/bin/sh\nexit 0\n";
  }
  REQUIRE(::chmod(file.c_str(), 0644) == 0);
  try {
    spawn_with_channel(file.string(), {});
    FAIL("spawn_process did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EACCES);
  }
}

TEST_CASE("Spawn.pidfd_and_try_reap_follow_the_process") {
  // The child blocks on its channel until the test lets it go.
  Child c = sh("read line <&3; exit 5");
  REQUIRE(c.proc.pidfd);
  pollfd p{c.proc.pidfd.get(), POLLIN, 0};
  CHECK(::poll(&p, 1, 0) == 0);
  ExitStatus s;
  CHECK_FALSE(try_reap(c.proc.pid, s));
  CHECK_FALSE(s.known);
  CHECK(support::alive(c.proc.pid));

  REQUIRE(::send(c.host.get(), "go\n", 3, MSG_NOSIGNAL) == 3);
  p.revents = 0;
  REQUIRE(::poll(&p, 1, 10000) == 1);
  CHECK((p.revents & POLLIN) != 0);
  // Readable pidfd: the process has exited, so a non-blocking reap succeeds now.
  REQUIRE(try_reap(c.proc.pid, s));
  CHECK(s.known);
  CHECK(s.exit_code == 5);
  CHECK(s.signal == 0);
  // Reaped once: a second try reports an unknown status instead of blocking or lying.
  ExitStatus again;
  CHECK(try_reap(c.proc.pid, again));
  CHECK_FALSE(again.known);
}

TEST_CASE("Spawn.reap_blocks_until_exit") {
  Child c = sh("read line <&3; exit 11");
  std::thread release([&] { ::send(c.host.get(), "\n", 1, MSG_NOSIGNAL); });
  ExitStatus s = reap(c.proc.pid);
  release.join();
  CHECK(s.known);
  CHECK(s.exit_code == 11);
}

TEST_CASE("Spawn.signal_name.names_signals") {
  CHECK(signal_name(SIGSEGV) == "SIGSEGV");
  CHECK(signal_name(SIGKILL) == "SIGKILL");
  CHECK(signal_name(SIGABRT) == "SIGABRT");
  CHECK(signal_name(SIGBUS) == "SIGBUS");
  CHECK(signal_name(1000) == "signal 1000");
}

TEST_CASE("Spawn.worker_version_exits_zero") {
  Child c = sh("exec \"$0\" --version >&3 2>&3", {FERRY_TEST_WORKER});
  std::string out = read_to_eof(c.host.get());
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.known);
  CHECK(s.exit_code == 0);
  CHECK(out.rfind("ferry-worker ", 0) == 0);
  CHECK(out.find("protocol " + std::to_string(protocol::version)) != std::string::npos);
}

TEST_CASE("Spawn.worker_bad_option_exits_usage") {
  std::vector<std::string> args;
  SUBCASE("unknown option") { args = {"--bogus"}; }
  SUBCASE("unknown option with a value") { args = {"--bogus", "1"}; }
  SUBCASE("non-numeric value") { args = {"--fd", "three"}; }
  SUBCASE("missing value") { args = {"--max-tasks"}; }
  std::vector<std::string> extra{FERRY_TEST_WORKER};
  extra.insert(extra.end(), args.begin(), args.end());
  Child c = sh("exec \"$0\" \"$@\" >&3 2>&3", extra);
  std::string out = read_to_eof(c.host.get());
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.known);
  CHECK(s.exit_code == static_cast<int>(protocol::WorkerExit::usage));
  CHECK(s.exit_code == 64);
  CHECK(out.find("usage: ferry-worker") != std::string::npos);
}

TEST_CASE("Spawn.worker_with_rings_refuses_a_channel_that_does_not_carry_them") {
  // `--rings 1` (an MPI agent's worker): the channel's first byte must carry a memfd of the
  // rings' size. Anything else ends the worker at once, before its hello.
  Child c = spawn_with_channel(FERRY_TEST_WORKER, {"--rings", "1"});
  SUBCASE("a byte without a descriptor") { REQUIRE(::send(c.host.get(), "x", 1, MSG_NOSIGNAL) == 1); }
  SUBCASE("a memfd of another size") {
    Fd memfd(::memfd_create("not-rings", MFD_CLOEXEC));
    REQUIRE(memfd);
    REQUIRE(::ftruncate(memfd.get(), 4096) == 0);
    REQUIRE(send_all(c.host.get(), {std::string_view("", 1)}, memfd.get()));
  }
  SUBCASE("the channel's end") { ::shutdown(c.host.get(), SHUT_WR); }
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.known);
  CHECK(s.exit_code == static_cast<int>(protocol::WorkerExit::io_error));
}

TEST_CASE("Spawn.worker_started_directly_says_hello_on_fd_3") {
  Child c = spawn_with_channel(FERRY_TEST_WORKER, {});
  // The first frame is a hello carrying the worker's own pid.
  std::string bytes;
  char buf[4096];
  while (bytes.size() < protocol::header_size ||
         bytes.size() < protocol::header_size +
                            protocol::parse_header(bytes.data(), protocol::max_control_frame).size) {
    ssize_t n = ::recv(c.host.get(), buf, sizeof buf, 0);
    REQUIRE(n > 0);
    bytes.append(buf, static_cast<std::size_t>(n));
  }
  auto h = protocol::parse_header(bytes.data(), protocol::max_control_frame);
  REQUIRE(h.type == protocol::FrameType::hello);
  auto hello = protocol::decode_hello(std::string_view(bytes).substr(protocol::header_size, h.size));
  CHECK(hello.pid == c.proc.pid);
  CHECK(hello.protocol == protocol::version);
  c.host.reset();  // EOF: the worker exits with "host gone"
  ExitStatus s = reap(c.proc.pid);
  CHECK(s.exit_code == static_cast<int>(protocol::WorkerExit::host_gone));
}
