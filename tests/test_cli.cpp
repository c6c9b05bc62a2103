// SPDX-License-Identifier: BSD-3-Clause
// The ferry command, run as a real program: every subcommand, its output and its exit codes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/ferry.hpp>

#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "support/trace_file.hpp"

namespace {

namespace fs = std::filesystem;
using support::Child;
using support::read_file;
using support::wait_status;
using support::write_all;
using support::write_file;
using Result = support::ProcessResult;

struct Call {
  std::vector<std::string> args;
  std::string input;                          ///< stdin: a file holding this
  bool pipe = false;                          ///< stdin: a pipe instead, `input` written to it
  std::map<std::string, std::string> env;     ///< overrides; "" value unsets
  bool defaults = true;                       ///< prepend --plugin-dir and --worker
  std::optional<int> stderr_fd;               ///< stderr goes here instead of a file
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

/// The real `ferry` with `call`'s arguments.
std::vector<std::string> argv_of(const Call& call) {
  std::vector<std::string> argv = {FERRY_TEST_CLI};
  if (call.defaults)
    argv.insert(argv.end(), {"--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker", FERRY_TEST_WORKER});
  argv.insert(argv.end(), call.args.begin(), call.args.end());
  return argv;
}

/// stdin from a file or a pipe; the caller's environment minus what would make a run depend on
/// the machine, then `call`'s changes.
support::ChildOptions options_of(const Call& call) {
  support::ChildOptions o{.env = {{"FERRY_PLUGIN_PATH", ""}, {"FERRY_WORKER", ""}},
                          .input = call.input,
                          .pipe = call.pipe,
                          .stderr_fd = call.stderr_fd};
  for (const auto& [k, v] : call.env) o.env[k] = v;
  return o;
}

/// Spawns the real `ferry` with stdout/stderr into files of `dir` (read once it ended).
Child spawn(const Call& call, const fs::path& dir) {
  return support::spawn(argv_of(call), dir, options_of(call));
}

Result cli(const Call& call) {
  support::TempDir dir;
  return support::run(argv_of(call), dir.path, options_of(call));
}

Result cli(std::vector<std::string> args, std::string input = {}, bool pipe = false) {
  return cli(Call{.args = std::move(args), .input = std::move(input), .pipe = pipe});
}

/// The real `ferry` with `call`'s arguments, started by a shell that first applies `redirections`
/// ("<&-": stdin closed, ">&-": stdout closed, "2>&-"). Killed with its process group after
/// `limit` (a hang): status -1 then.
Result cli_redirected(const Call& call, const std::string& redirections,
                      std::chrono::seconds limit = std::chrono::seconds(60)) {
  support::TempDir dir;
  std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$@\" " + redirections, "sh"};
  for (auto& a : argv_of(call)) argv.push_back(std::move(a));
  support::ChildOptions options = options_of(call);
  options.process_group = true;
  Child child = support::spawn(argv, dir.path, options);
  int status = 0;
  const bool ended = support::wait_until(
      [&] { return ::waitpid(child.pid, &status, WNOHANG) == child.pid; }, limit);
  Result r;
  if (ended) {
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  } else {
    ::kill(-child.pid, SIGKILL);
    wait_status(child.pid);
  }
  r.out = read_file(dir.path / "stdout");
  r.err = read_file(dir.path / "stderr");
  return r;
}

/// Numbers 1..n, one per line.
std::string numbers(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) s += std::to_string(i) + "\n";
  return s;
}

}  // namespace

// ---- list --------------------------------------------------------------------------------------

TEST_CASE("Cli.list_shows_tasks_with_signature_and_plugin") {
  Result r = cli({"list"});
  CHECK(r.status == 0);
  bool found = false;
  for (const auto& line : lines_of(r.out)) {
    if (line.rfind("square ", 0) == 0) {
      found = true;
      CHECK(line.find("i32(i32)") != std::string::npos);
      CHECK(line.find("libmath.so") != std::string::npos);
    }
  }
  CHECK_MESSAGE(found, r.out);
  CHECK(r.out.find("scale") != std::string::npos);
  CHECK(r.out.find("math::Vec2(math::Vec2,f64)") != std::string::npos);
}

TEST_CASE("Cli.list_json_prints_one_object_per_task") {
  Result r = cli({"list", "--json"});
  CHECK(r.status == 0);
  auto lines = lines_of(r.out);
  REQUIRE(!lines.empty());
  for (const auto& l : lines) {
    CHECK(l.front() == '{');
    CHECK(l.back() == '}');
  }
  CHECK(r.out.find(R"x({"name":"square","signature":"i32(i32)","plugin":"math")x") != std::string::npos);
}

TEST_CASE("Cli.list_json_writes_a_path_that_is_no_utf8_as_its_bytes") {
  // A directory's or a file's name may be any bytes: written U+FFFD, the path could not be found
  // again from the JSON. Each byte that is no UTF-8 is \udcXX now (Python's surrogateescape:
  // json.loads, then os.fsencode, gives the path back); the table shows it as \xNN.
  support::TempDir dir;
  const fs::path plugins = dir.path / "plug\xff\xfe";
  fs::create_directory(plugins);
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, plugins / "lib\x80math.so");
  Result r = cli({"list", "--json", plugins.string()});
  CHECK(r.status == 0);
  CAPTURE(r.out);
  CHECK(r.out.find("\"library\":\"" + (dir.path / "plug\\udcff\\udcfe" / "lib\\udc80math.so").string() + "\"") !=
        std::string::npos);
  CHECK(r.out.find_first_of("\x80\xfe\xff") == std::string::npos);

  Result table = cli({"list", plugins.string()});
  CHECK(table.status == 0);
  CHECK(table.out.find("plug\\xff\\xfe/lib\\x80math.so") != std::string::npos);
}

TEST_CASE("Cli.list_reports_skipped_files_on_stderr") {
  support::TempDir dir;
  write_file(dir.path / "libnotaplugin.so", "not an ELF file");
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir.path / "libmath.so");
  Result r = cli({"list", dir.path.string()});
  CHECK(r.status == 0);
  CHECK(r.out.find("square") != std::string::npos);
  CHECK(r.out.find("func_async") == std::string::npos);  // only DIR, not the --plugin-dir
  CHECK(r.err.find("skipped") != std::string::npos);
  CHECK(r.err.find("libnotaplugin.so") != std::string::npos);

  Result missing = cli({"list", (dir.path / "nope").string()});
  CHECK(missing.status == 2);
}

// ---- run ---------------------------------------------------------------------------------------

TEST_CASE("Cli.run_prints_the_result_as_json") {
  CHECK(cli({"run", "add", "40", "2"}).out == "42\n");
  CHECK(cli({"run", "add", "-1", "-2"}).out == "-3\n");  // negative numbers are not options
  CHECK(cli({"run", "greet", "\"you\""}).out == "\"hello, you\"\n");
  CHECK(cli({"run", "sum", "[1, 2]"}).out == "3.0\n");
  CHECK(cli({"run", "sum", "[1.5,\n 2.5]"}).out == "4.0\n");  // a value over several lines
  CHECK(cli({"run", "scale", R"({"value0": 1, "value1": 2})", "3"}).out ==
        "{\"value0\":3.0,\"value1\":6.0}\n");
  CHECK(cli({"run", "math:square", "9"}).out == "81\n");
}

TEST_CASE("Cli.run_prints_no_terminal_controls") {
  // A result is a worker's word: RapidJSON escapes only what is below U+0020, so DEL, the C1
  // controls (U+009B is a CSI) and bytes that are no UTF-8 (0x9B is a CSI to an 8-bit terminal)
  // reached the terminal as they were. Escaped now, the line valid JSON in UTF-8.
  CHECK(cli({"run", "greet", "\"\\u009b2J\\u007f\""}).out == "\"hello, \\u009b2J\\u007f\"\n");
  // A byte that is no UTF-8 is \udcXX (Python's surrogateescape): the bytes can be read back.
  CHECK(cli({"run", "greet", "\"\x9b" "2J \xc3\xa9\xe2\x82\xac\""}).out == "\"hello, \\udc9b2J \xc3\xa9\xe2\x82\xac\"\n");
  CHECK(cli({"run", "greet", "\"\xc0\xaf\xed\xa0\x80\""}).out == "\"hello, \\udcc0\\udcaf\\udced\\udca0\\udc80\"\n");
}

TEST_CASE("Cli.a_byte_printed_as_a_surrogate_escape_reads_back_as_that_byte") {
  // \udcXX on input was the lone surrogate's three bytes (ED B3 BF for \udcff), so a line the
  // command printed, given to it again, handed the task other bytes than those it stood for.
  const Result once = cli({"run", "greet", "\"\x9b\xff\""});
  CHECK(once.out == "\"hello, \\udc9b\\udcff\"\n");
  CHECK(cli({"map", "greet"}, once.out).out == "\"hello, hello, \\udc9b\\udcff\"\n");
  CHECK(cli({"run", "greet", "\"\\udcff\""}).out == "\"hello, \\udcff\"\n");
  // Other lone low surrogates keep their three bytes, which are not UTF-8 either.
  CHECK(cli({"run", "greet", "\"\\udc7f\""}).out == "\"hello, \\udced\\udcb1\\udcbf\"\n");
}

TEST_CASE("Cli.run_void_task_and_raw") {
  Result r = cli({"run", "noop"});
  CHECK(r.status == 0);
  CHECK(r.out.empty());
  CHECK(cli({"run", "--raw", "noop"}).out == "{}\n");
  CHECK(cli({"run", "--raw", "add", "1", "1"}).out == "{\"value0\":2}\n");
}

TEST_CASE("Cli.run_global_options_after_the_subcommand") {
  Result r = cli(Call{.args = {"run", "--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker",
                                 FERRY_TEST_WORKER, "add", "1", "2"},
                        .defaults = false});
  CHECK(r.status == 0);
  CHECK(r.out == "3\n");
}

TEST_CASE("Cli.run_failing_task_exits_1_with_the_error") {
  Result r = cli({"run", "fail", "7"});
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("TaskError") != std::string::npos);
  CHECK(r.err.find("std::invalid_argument") != std::string::npos);
  CHECK(r.err.find("fail: 7") != std::string::npos);

  Result crash = cli({"run", "segfault", "1"});
  CHECK(crash.status == 1);
  CHECK(crash.err.find("TerminatedWorkerError") != std::string::npos);
  CHECK(crash.err.find("SIGSEGV") != std::string::npos);
}

TEST_CASE("Cli.errors_show_control_characters_as_escapes") {
  // What an error quotes (a task's message, a plugin's names, a file name) may carry terminal
  // escape sequences: they reach stderr as text. UTF-8 text stays as it is.
  Result r = cli({"run", "nope\x1b]0;owned\x07\xc2\x9b" "31m\x7f\xff-\xc3\xa9"});
  CHECK(r.status != 0);
  CHECK_MESSAGE(r.err.find("nope\\x1b]0;owned\\x07\\xc2\\x9b31m\\x7f\\xff-\xc3\xa9") != std::string::npos, r.err);
  for (char c : r.err) CHECK_MESSAGE((c == '\n' || (c >= 0x20 && c != 0x7f) || (c & 0x80)), r.err);
  CHECK(r.err.find("\xc2\x9b") == std::string::npos);
}

TEST_CASE("Cli.run_prints_the_remote_stack_of_a_failed_task") {
  // After the one-line error, always on stderr: where the task threw, or where its worker crashed.
  Result r = cli({"run", "throw_in_named_function", "3"});
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  auto at = r.err.find("remote stack (worker):\n  #0  ferry_test_named_thrower(int)");
  CHECK(at != std::string::npos);
  CHECK(r.err.find("TaskError") < at);  // the error first, then its stack

  Result crash = cli({"run", "segfault_in_named_function", "0"});
  CHECK(crash.status == 1);
  CHECK(crash.err.find("SIGSEGV") != std::string::npos);
  CHECK(crash.err.find("remote stack (worker):\n  #0  ferry_test_named_segfault(") != std::string::npos);

  // An error that has no remote stack prints none.
  CHECK(cli({"run", "no_such_task", "1"}).err.find("remote stack") == std::string::npos);
}

TEST_CASE("Cli.run_unknown_task_exits_3") {
  Result r = cli({"run", "no_such_task", "1"});
  CHECK(r.status == 3);
  CHECK(r.err.find("PluginError") != std::string::npos);
  CHECK(r.err.find("no_such_task") != std::string::npos);
}

TEST_CASE("Cli.run_bad_arguments_exit_2") {
  SUBCASE("not JSON") {
    Result r = cli({"run", "add", "1", "{oops"});
    CHECK(r.status == 2);
    CHECK(r.err.find("argument 2 is not valid JSON") != std::string::npos);
  }
  SUBCASE("a string without its quotes") {
    Result r = cli({"run", "greet", "you"});
    CHECK(r.status == 2);
    CHECK(r.err.find("quotes") != std::string::npos);
  }
  SUBCASE("wrong number of arguments") {
    Result r = cli({"run", "add", "1"});
    CHECK(r.status == 2);
    CHECK(r.err.find("takes 2 arguments") != std::string::npos);
  }
  SUBCASE("wrong type") {
    Result r = cli({"run", "square", "\"seven\""});
    CHECK(r.status == 2);
    CHECK(r.err.find("SerializationError") != std::string::npos);
  }
  SUBCASE("no task") {
    CHECK(cli({"run"}).status == 2);
  }
}

TEST_CASE("Cli.run.no_hint_to_put_dashes_before_args_that_follow_them") {
  // `ferry run square -- --help` said "put -- before ARGs starting with '-'" of an ARG that
  // followed --: an ARG for sure, and no unknown option.
  Result after = cli({"run", "square", "--", "--help"});
  CHECK(after.status == 2);
  CHECK_MESSAGE(after.err.find("argument 1 is not valid JSON") != std::string::npos, after.err);
  CHECK_MESSAGE(after.err.find("put --") == std::string::npos, after.err);
  CHECK_MESSAGE(after.err.find("unknown option") == std::string::npos, after.err);
  Result second = cli({"run", "add", "1", "--", "-x"});
  CHECK(second.status == 2);
  CHECK_MESSAGE(second.err.find("argument 2 is not valid JSON") != std::string::npos, second.err);
  CHECK_MESSAGE(second.err.find("put --") == std::string::npos, second.err);
  // Without --, the hint is still given.
  Result without = cli({"run", "square", "--help2"});
  CHECK(without.status == 2);
  CHECK_MESSAGE(without.err.find("(an unknown option? options go before TASK; put -- before ARGs starting with '-')") !=
                    std::string::npos,
                without.err);
}

TEST_CASE("Cli.run_without_a_worker_exits_4") {
  support::TempDir dir;
  Result r = cli(Call{.args = {"--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker",
                                 (dir.path / "no-worker").string(), "run", "add", "1", "2"},
                        .defaults = false});
  CHECK(r.status == 4);
  CHECK(r.err.find("BrokenProcessPool") != std::string::npos);
}

// ---- map ---------------------------------------------------------------------------------------

TEST_CASE("Cli.map_from_a_file") {
  support::TempDir dir;
  write_file(dir.path / "in.jsonl", "[40, 2]\n{\"value0\": 3, \"value1\": 4}\n[-1, 1]\n");
  Result r = cli({"map", "add", (dir.path / "in.jsonl").string()});
  CHECK(r.status == 0);
  CHECK(r.out == "42\n7\n0\n");
  CHECK(r.err.empty());

  // Argument objects are taken by member name, in any order.
  write_file(dir.path / "objects.jsonl",
             "{\"value1\": [], \"value0\": 21}\n{\"value0\": 1, \"value2\": []}\n");
  Result objects = cli({"map", "--keep-going", "func_async", (dir.path / "objects.jsonl").string()});
  CHECK(objects.status == 1);
  auto out = lines_of(objects.out);
  REQUIRE(out.size() == 2);
  CHECK(out[0] == "42");  // func_async(21, {}): the int is value0 wherever it stands
  CHECK(out[1].find("found \\\"value2\\\"") != std::string::npos);
  CHECK(objects.err.empty());
}

TEST_CASE("Cli.map_from_stdin") {
  for (bool pipe : {false, true}) {
    CAPTURE(pipe);
    Result r = cli({"map", "square"}, "1\n2\n3\n", pipe);
    CHECK(r.status == 0);
    CHECK(r.out == "1\n4\n9\n");
    CHECK(cli({"map", "sum"}, "[[1, 2]]\n[[0.5]]\n", pipe).out == "3.0\n0.5\n");
    CHECK(cli({"map", "noop"}, "[]\n[]\n", pipe).out == "null\nnull\n");
    CHECK(cli({"map", "add", "-"}, "[1, 2]\n", pipe).out == "3\n");
  }
}

TEST_CASE("Cli.map_streams_results_before_the_input_ends") {
  // A slow producer: the next line is written only once the previous result came out.
  support::TempDir dir;
  Child child = spawn(Call{.args = {"map", "square"}, .pipe = true}, dir.path);
  auto output = [&] { return read_file(dir.path / "stdout"); };
  REQUIRE(write_all(child.stdin_fd, "3\n"));
  CHECK(support::wait_until([&] { return output() == "9\n"; }, std::chrono::seconds(30)));
  REQUIRE(write_all(child.stdin_fd, "4\n"));
  CHECK(support::wait_until([&] { return output() == "9\n16\n"; }, std::chrono::seconds(30)));
  ::close(child.stdin_fd);
  CHECK(wait_status(child.pid) == 0);
  CHECK(output() == "9\n16\n");
}

TEST_CASE("Cli.map_keeps_input_order_over_small_chunks") {
  // Lines with 3 ms of work every 7th make chunks finish out of order on two workers.
  const int n = 1200;
  std::string input, expected;
  for (int i = 0; i < n; ++i) {
    input += "[" + std::to_string(i) + ", " + (i % 7 == 0 ? "3" : "0") + "]\n";
    expected += std::to_string(i) + "\n";
  }
  SUBCASE("stdin, a pipe") {
    Result r = cli({"map", "-j", "2", "--chunksize", "5", "slow_identity"}, input, /*pipe=*/true);
    CHECK(r.status == 0);
    CHECK(r.out == expected);
  }
  SUBCASE("file, default chunks") {
    support::TempDir dir;
    write_file(dir.path / "in.jsonl", input);
    Result r = cli({"-j", "2", "map", "slow_identity", (dir.path / "in.jsonl").string()});
    CHECK(r.status == 0);
    CHECK(r.out == expected);
  }
}

TEST_CASE("Cli.map_keep_going_writes_error_lines_and_exits_1") {
  Result r = cli({"map", "--keep-going", "--chunksize", "2", "checked_isqrt"},
                   "4\n-1\n\"nine\"\n16\nnot json\n[1, 2]\n9\n");
  CHECK(r.status == 1);
  auto out = lines_of(r.out);
  REQUIRE(out.size() == 7);
  CHECK(out[0] == "2");
  CHECK(out[1].rfind("{\"error\":", 0) == 0);
  CHECK(out[1].find("std::domain_error") != std::string::npos);
  CHECK(out[1].find("negative: -1") != std::string::npos);
  CHECK(out[2].find("\"stage\":\"decode_arguments\"") != std::string::npos);
  CHECK(out[3] == "4");
  CHECK(out[4].find("not valid JSON") != std::string::npos);
  CHECK(out[5].find("takes 1 argument") != std::string::npos);
  CHECK(out[6] == "3");
}

TEST_CASE("Cli.map_keep_going_reruns_a_crashed_chunk_line_by_line") {
  // One line kills its worker: the other lines of its chunk still get their results.
#if defined(__SANITIZE_THREAD__)
  // A stack overflow inside ThreadSanitizer's runtime deadlocks the worker's crash handler (seen:
  // stuck in __tsan::TraceSwitch, the test timed out): TSan's limit, not ferry's.
  MESSAGE("skipped under ThreadSanitizer");
  return;
#endif
  Result r = cli({"map", "--keep-going", "--chunksize", "4", "stack_overflow"},
                   "1\n2\n" + std::to_string(1 << 20) + "\n3\n");
  CHECK(r.status == 1);
  auto out = lines_of(r.out);
  REQUIRE(out.size() == 4);
  // stack_overflow(d) returns 0 + 1 + ... + d (each frame adds its depth).
  CHECK(out[0] == "1");
  CHECK(out[1] == "3");
  CHECK(out[2].rfind("{\"error\":", 0) == 0);
  CHECK(out[2].find("TerminatedWorkerError") != std::string::npos);
  CHECK(out[2].find("SIGSEGV") != std::string::npos);
  CHECK(out[3] == "6");
}

TEST_CASE("Cli.map_without_keep_going_stops_at_the_first_failure") {
  // Chunks of one line: the lines before the failing one are printed, nothing after it.
  std::string input = "1\n4\n-9\n" + numbers(1000);
  Result r = cli({"map", "-j", "2", "--chunksize", "1", "checked_isqrt"}, input);
  CHECK(r.status == 1);
  CHECK(r.out == "1\n2\n");
  CHECK(r.err.find("line 3") != std::string::npos);
  CHECK(r.err.find("negative: -9") != std::string::npos);

  Result bad = cli({"map", "square"}, "1\n2\n{nope\n4\n");
  CHECK(bad.status == 2);
  CHECK(bad.out == "1\n4\n");
  CHECK(bad.err.find("line 3: not valid JSON") != std::string::npos);

  CHECK(cli({"map", "no_such_task"}, "1\n").status == 3);
}

TEST_CASE("Cli.map_stops_at_a_failure_while_its_input_stays_open") {
  // The reading thread is blocked on an open, silent pipe when the run stops: it is cancelled.
  support::TempDir dir;
  Child child = spawn(Call{.args = {"map", "--chunksize", "1", "checked_isqrt"}, .pipe = true}, dir.path);
  REQUIRE(write_all(child.stdin_fd, "4\n-9\n"));
  CHECK(wait_status(child.pid) == 1);  // without closing stdin
  ::close(child.stdin_fd);
  CHECK(read_file(dir.path / "stdout") == "2\n");
  CHECK(read_file(dir.path / "stderr").find("negative: -9") != std::string::npos);
}

TEST_CASE("Cli.map_timeout_cancels_what_is_left") {
  // One worker: line 3 sleeps a minute, line 4 waits behind it. The timeout kills the one and
  // cancels the other; the results before them are written.
  Result r = cli({"map", "-j", "1", "--chunksize", "1", "--timeout", "1", "slow_identity"},
                 "[1, 0]\n[2, 0]\n[3, 60000]\n[4, 0]\n");
  CHECK(r.status == 1);
  CHECK(r.out == "1\n2\n");
  CHECK(r.err.find("TimeoutError") != std::string::npos);
  CHECK(r.err.find("within its timeout of 1") != std::string::npos);
  CHECK(cli({"map", "--timeout", "0", "square"}, "1\n").status == 2);
}

TEST_CASE("Cli.map.timeout_bounds_the_wait_for_a_silent_pipe") {
  // Without --chunksize the lines a pipe has are read ahead (to size the chunks) before the map
  // starts; that wait was unbounded, and the timeout counted only after it: a pipe silent for an
  // hour ran an hour, and one that then ended gave exit status 0. Here the write end stays open
  // and silent (after nothing, a part of a line, or a line) until the command has ended. After a
  // line the map runs with what is left of the timeout: its error still names the whole.
  for (const std::string written : {"", "4", "4\n"}) {
    CAPTURE(written);
    support::TempDir dir;
    Child child = spawn(Call{.args = {"map", "--timeout", "1", "square"}, .pipe = true}, dir.path);
    if (!written.empty()) REQUIRE(write_all(child.stdin_fd, written));
    int status = 0;
    const bool ended = support::wait_until(
        [&] { return ::waitpid(child.pid, &status, WNOHANG) == child.pid; }, std::chrono::seconds(30));
    ::close(child.stdin_fd);
    // Not ended: it still waits for its input, which ends now.
    const int code = !ended ? wait_status(child.pid)
                     : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    CHECK_MESSAGE(ended, "ferry map --timeout 1 still ran 30 s later, its input pipe open and silent");
    CHECK(code == 1);
    const std::string err = read_file(dir.path / "stderr");
    CHECK_MESSAGE(err.find("TimeoutError") != std::string::npos, err);
    CHECK_MESSAGE(err.find("within its timeout of 1 s") != std::string::npos, err);
    CHECK(read_file(dir.path / "stdout") == (written == "4\n" ? "16\n" : ""));
  }
}

TEST_CASE("Cli.map.timeout_bounds_the_wait_for_a_fifos_writer") {
  // FILE a named pipe that no one opens for writing: opening it waited for a writer, without a
  // limit, before the timeout was looked at.
  support::TempDir dir;
  const fs::path fifo = dir.path / "in.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  Child child = spawn(Call{.args = {"map", "--timeout", "1", "square", fifo.string()}}, dir.path);
  int status = 0;
  const bool ended = support::wait_until(
      [&] { return ::waitpid(child.pid, &status, WNOHANG) == child.pid; }, std::chrono::seconds(30));
  if (!ended) {
    ::kill(child.pid, SIGKILL);
    wait_status(child.pid);
  }
  REQUIRE_MESSAGE(ended, "ferry map --timeout 1 still waited 30 s later for a writer of its FIFO");
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  const std::string err = read_file(dir.path / "stderr");
  CHECK_MESSAGE(err.find("within its timeout of 1 s") != std::string::npos, err);

  // A writer that comes is read as before (this open waits for ferry's).
  support::TempDir second;
  Child reader = spawn(Call{.args = {"map", "--timeout", "30", "square", fifo.string()}}, second.path);
  const int w = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(w >= 0);
  CHECK(write_all(w, "3\n4\n"));
  ::close(w);
  CHECK(wait_status(reader.pid) == 0);
  CHECK(read_file(second.path / "stdout") == "9\n16\n");
}

TEST_CASE("Cli.map.an_infinite_timeout_is_none") {
  // `--timeout inf` was refused with a range of 300 digits (CLI11's PositiveNumber), and NaN was
  // let through to the library. A timeout too long for the clock is none, as MapOptions takes it.
  for (const std::string t : {"inf", "infinity", "1e300", "1e400", "0.5e3"}) {
    CAPTURE(t);
    Result r = cli({"map", "--timeout", t, "square"}, "1\n2\n");
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(r.out == "1\n4\n");
  }
  Result init = cli({"run", "--initializer", "load_model", "--initarg", "\"cli\"", "--initarg", "3",
                     "--initializer-timeout", "inf", "predict", "3.0"});
  CHECK_MESSAGE(init.status == 0, init.err);
  CHECK(init.out == "5.5\n");
  // NaN, 0, negatives and text stay usage errors, said in a line.
  for (const std::string t : {"nan", "-nan", "0", "-1", "-inf", "soon", "1s", "1e-400"}) {
    for (const std::string option : {"--timeout", "--initializer-timeout"}) {
      CAPTURE(t);
      CAPTURE(option);
      Result r = option == "--timeout"
                     ? cli({"map", option, t, "square"}, "1\n")
                     : cli({"run", "--initializer", "load_model", option, t, "predict", "3.0"});
      CHECK(r.status == 2);
      CHECK(r.out.empty());
      CHECK_MESSAGE(r.err.find(option + ": '" + t + "' is not ") != std::string::npos, r.err);
      CHECK_MESSAGE(r.err.size() < 200, r.err);
    }
  }
}

TEST_CASE("Cli.map_progress_bar_on_a_terminal") {
  support::TempDir dir;
  write_file(dir.path / "in.jsonl", numbers(3000));
  auto on_pty = [&](std::vector<std::string> extra) {
    int master = -1, slave = -1;
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = 120;
    REQUIRE(::openpty(&master, &slave, nullptr, nullptr, &ws) == 0);
    std::vector<std::string> args = {"map", "-j", "2", "--chunksize", "10", "square",
                                     (dir.path / "in.jsonl").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    support::TempDir io;
    pid_t pid = spawn(Call{.args = args, .stderr_fd = slave}, io.path).pid;
    ::close(slave);
    // Everything written to the terminal, until the last holder of its slave side (ferry and
    // its workers) is gone: then read() fails with EIO.
    std::string screen;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(master, buf, sizeof buf);
      if (n > 0) {
        screen.append(buf, static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    ::close(master);
    CHECK(wait_status(pid) == 0);
    CHECK(lines_of(read_file(io.path / "stdout")).size() == 3000);
    return screen;
  };

  std::string screen = on_pty({});
  CHECK(screen.find("lines/s") != std::string::npos);
  CHECK(screen.find("ETA") != std::string::npos);
  CHECK(screen.find("3000/3000 lines") != std::string::npos);
  CHECK(screen.find("100%") != std::string::npos);
  // Redrawn in place, and erased at the end.
  CHECK(screen.front() == '\r');
  CHECK(screen.find('\n') == std::string::npos);
  REQUIRE(screen.size() >= 4);
  CHECK(screen.substr(screen.size() - 4) == "\r\x1b[K");

  CHECK(on_pty({"--no-progress"}).empty());
}

TEST_CASE("Cli.map_no_progress_bar_when_stderr_is_not_a_terminal") {
  support::TempDir dir;
  write_file(dir.path / "in.jsonl", numbers(500));
  Result r = cli({"map", "--chunksize", "10", "square", (dir.path / "in.jsonl").string()});
  CHECK(r.status == 0);
  CHECK(lines_of(r.out).size() == 500);
  CHECK(r.err.empty());
}

// ---- hostile JSON (issue 10 item 5) ------------------------------------------------------------

TEST_CASE("Cli.run_refuses_json_nested_too_deep") {
  // RapidJSON's recursive parser overflowed ferry's stack on this (SIGSEGV). An argument cannot
  // be longer than 128 KiB (MAX_ARG_STRLEN), which 8 MiB of stack survives: ferry gets 1 MiB.
  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_STACK, &saved) == 0);
  rlimit small = saved;
  small.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 1 << 20);
  REQUIRE(::setrlimit(RLIMIT_STACK, &small) == 0);  // inherited by the ferry started next
  Result r = cli({"run", "square", std::string(130'000, '[')});
  ::setrlimit(RLIMIT_STACK, &saved);
  CHECK(r.status == 2);
  CHECK(r.err.find("argument 1 is not valid JSON: nested deeper than 512 levels (at offset 512)") !=
        std::string::npos);
  CHECK(r.err.size() < 1000);  // the argument is not echoed whole
  Result inside = cli({"run", "add", "1", "[" + std::string(130'000, '{')});
  CHECK(inside.status == 2);
  CHECK(inside.err.find("argument 2 is not valid JSON: nested deeper") != std::string::npos);
}

TEST_CASE("Cli.run.an_argument_as_deep_as_the_limit_is_refused_at_its_own_offset") {
  // An argument travels inside {"value0": ...}, one level more: 512 levels passed ferry's check
  // and the worker refused them, at an offset in the wrapped line (SerializationError).
  auto nested = [](std::size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  Result r = cli({"run", "sum", nested(512)});
  CHECK(r.status == 2);
  CHECK_MESSAGE(r.err.find("argument 1 is not valid JSON: nested deeper than 511 levels") != std::string::npos,
                r.err);
  CHECK(r.err.find("(at offset 511)") != std::string::npos);
  CHECK(r.err.find("SerializationError") == std::string::npos);
  // 511 levels reach the task (which wants numbers, not arrays).
  Result fits = cli({"run", "sum", nested(511)});
  CHECK(fits.status == 2);
  CHECK(fits.err.find("expected f64, found an array") != std::string::npos);
  // An --initarg travels the same way.
  Result init = cli({"run", "--initializer", "load_model", "--initarg", nested(512), "--initarg", "1",
                     "predict", "1.0"});
  CHECK(init.status == 2);
  CHECK_MESSAGE(init.err.find("--initarg 1 is not valid JSON: nested deeper than 511 levels") != std::string::npos,
                init.err);
}

TEST_CASE("Cli.map_refuses_json_nested_too_deep") {
  std::string deep = std::string(200'000, '[') + "\n";
  Result r = cli({"map", "square"}, "1\n" + deep + "3\n");
  CHECK(r.status == 2);
  CHECK(r.out == "1\n");
  CHECK(r.err.find("line 2: not valid JSON: nested deeper than 512 levels") != std::string::npos);

  Result going = cli({"map", "--keep-going", "square"}, "1\n" + deep + "3\n");
  CHECK(going.status == 1);
  auto out = lines_of(going.out);
  REQUIRE(out.size() == 3);
  CHECK(out[0] == "1");
  CHECK(out[1].find("nested deeper than 512 levels") != std::string::npos);
  CHECK(out[1].find("\"stage\":\"read_input\"") != std::string::npos);
  CHECK(out[2] == "9");
}

TEST_CASE("Cli.map_blank_lines_are_errors_that_keep_lines_aligned") {
  const std::string input = "[40, 2]\n\n[1, 1]\n   \n[2, 2]\n";
  Result r = cli({"map", "add"}, input);
  CHECK(r.status == 2);
  CHECK(r.out == "42\n");
  CHECK(r.err.find("line 2: blank line") != std::string::npos);

  // Under --keep-going, output line N still answers input line N.
  for (bool pipe : {false, true}) {
    CAPTURE(pipe);
    Result going = cli({"map", "--keep-going", "add"}, input, pipe);
    CHECK(going.status == 1);
    auto out = lines_of(going.out);
    REQUIRE(out.size() == 5);
    CHECK(out[0] == "42");
    CHECK(out[1].rfind("{\"error\":", 0) == 0);
    CHECK(out[1].find("line 2: blank line") != std::string::npos);
    CHECK(out[1].find("\"stage\":\"read_input\"") != std::string::npos);
    CHECK(out[2] == "2");
    CHECK(out[3].find("line 4: blank line") != std::string::npos);
    CHECK(out[4] == "4");
  }
  // A task without parameters takes [] per line.
  CHECK(cli({"map", "noop"}, "[]\n[]\n").out == "null\nnull\n");

  std::string help = cli(Call{.args = {"map", "--help"}, .defaults = false}).out;
  std::replace(help.begin(), help.end(), '\n', ' ');
  CHECK(help.find("skipped") == std::string::npos);
  CHECK(help.find("a blank line is an error") != std::string::npos);
}

TEST_CASE("Cli.strings_keep_nul_characters") {
  CHECK(cli({"run", "greet", R"("a\u0000b")"}).out == "\"hello, a\\u0000b\"\n");
  CHECK(cli({"map", "greet"}, "\"\\u0000\"\n[\"x\\u0000\"]\n").out ==
        "\"hello, \\u0000\"\n\"hello, x\\u0000\"\n");
  CHECK(cli({"run", "byte_sum", R"("\u0001\u0000\u0002")"}).out == "3\n");
}

TEST_CASE("Cli.type_errors_name_the_argument_its_type_and_what_was_found") {
  Result r = cli({"run", "add", "1", "\"two\""});
  CHECK(r.status == 2);
  CHECK(r.err.find(R"(argument 2 (i32): expected i32, found the string "two")") != std::string::npos);
  CHECK(r.err.find("rapidjson") == std::string::npos);

  Result m = cli({"map", "--keep-going", "scale"}, "[{\"value0\": 1, \"value1\": \"y\"}, 2]\n[[1, 2], 3]\n");
  CHECK(m.status == 1);
  auto out = lines_of(m.out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].find(R"(argument 1 (math::Vec2), at value0.value1: expected f64, found the string \"y\")") !=
        std::string::npos);
  CHECK(out[0].find("\"stage\":\"decode_arguments\"") != std::string::npos);
  CHECK(out[1] == "{\"value0\":3.0,\"value1\":6.0}");
}

namespace {
/// CPU seconds (user + system) `ferry map TASK FILE` used, with its exit status.
std::pair<double, int> map_cpu_seconds(const std::string& task, const fs::path& file) {
  support::TempDir dir;
  Child child = spawn(Call{.args = {"map", "-j", "1", task, file.string()}}, dir.path);
  int status = 0;
  rusage usage{};
  while (::wait4(child.pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return {seconds(usage.ru_utime) + seconds(usage.ru_stime), WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}
}  // namespace

TEST_CASE("Cli.map_reads_a_long_line_in_linear_time") {
  // Each read of 64 KiB rescanned the line from its start: a 100 MB line took 21 s, 1 GB hung.
  // Four times the line must cost about four times the CPU, not sixteen (a ratio, so that a
  // slower build or machine does not matter).
  support::TempDir dir;
  auto line_file = [&](std::size_t bytes) {
    fs::path p = dir.path / ("line" + std::to_string(bytes));
    write_file(p, "\"" + std::string(bytes, 'x') + "\"\n");
    return p;
  };
  auto [small, small_status] = map_cpu_seconds("view_size", line_file(16u << 20));
  auto [large, large_status] = map_cpu_seconds("view_size", line_file(64u << 20));
  CHECK(small_status == 0);
  CHECK(large_status == 0);
  CAPTURE(small);
  CAPTURE(large);
  CHECK(large < 8 * small + 0.5);
}

namespace {
/// Whether `pid` ends within `timeout`, and its exit status then (128 + signal); killed if not.
std::optional<int> exit_within(pid_t pid, std::chrono::seconds timeout) {
  int status = 0;
  if (!support::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return std::nullopt;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
}  // namespace

TEST_CASE("Cli.map.a_line_over_the_cap_is_a_typed_error") {
  // No cap: a line was held whole however long it grew (/dev/zero: std::bad_alloc, "internal
  // error", or the OOM killer). Now a line past --max-line-bytes is an input error naming it.
  const std::string at_cap = "\"" + std::string(1022, 'x') + "\"";  // 1024 bytes: taken
  const std::string input = at_cap + "\n\"" + std::string(300'000, 'y') + "\"\n\"z\"\n";
  for (bool pipe : {false, true}) {
    CAPTURE(pipe);
    Result r = cli({"map", "--max-line-bytes", "1K", "view_size"}, input, pipe);
    CHECK(r.status == 2);
    CHECK(r.out == "1022\n");
    CHECK_MESSAGE(r.err.find("line 2: longer than 1 KiB (--max-line-bytes)") != std::string::npos, r.err);

    // Under --keep-going it is an error line, and the rest of it is not taken for more lines.
    Result going = cli({"map", "--keep-going", "--max-line-bytes", "1K", "view_size"}, input, pipe);
    CHECK(going.status == 1);
    auto out = lines_of(going.out);
    REQUIRE(out.size() == 3);
    CHECK(out[0] == "1022");
    CHECK(out[1].find("line 2: longer than 1 KiB (--max-line-bytes)") != std::string::npos);
    CHECK(out[1].find("\"stage\":\"read_input\"") != std::string::npos);
    CHECK(out[2] == "1");
  }
}

TEST_CASE("Cli.map.the_line_cap_defaults_to_the_largest_message") {
  Result r = cli(Call{.args = {"map", "view_size"},
                      .input = "\"a\"\n\"" + std::string(100'000, 'b') + "\"\n",
                      .env = {{"FERRY_MAX_FRAME_BYTES", "64K"}, {"FERRY_SHM_THRESHOLD", "16K"}}});
  CHECK(r.status == 2);
  CHECK(r.out == "1\n");
  CHECK_MESSAGE(r.err.find("line 2: longer than 64 KiB (--max-line-bytes)") != std::string::npos, r.err);
}

TEST_CASE("Cli.map.a_line_without_end_is_refused_while_it_is_read") {
  // A line that never ends (a pipe that is never closed, /dev/zero) is refused once it is past
  // the cap, not when it ends.
  support::TempDir dir;
  Child child = spawn(Call{.args = {"map", "view_size"}, .pipe = true,
                           .env = {{"FERRY_MAX_FRAME_BYTES", "64K"}, {"FERRY_SHM_THRESHOLD", "16K"}}},
                      dir.path);
  sigset_t pipe_signal, saved;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_signal, &saved);
  write_all(child.stdin_fd, "\"" + std::string(1 << 20, 'x'));  // ferry may stop reading: EPIPE
  const timespec now{};
  ::sigtimedwait(&pipe_signal, nullptr, &now);  // the SIGPIPE of that EPIPE, if any, is taken
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  CHECK(exit_within(child.pid, std::chrono::seconds(60)) == 2);  // the pipe still open
  ::close(child.stdin_fd);
  CHECK(read_file(dir.path / "stderr").find("line 1: longer than 64 KiB") != std::string::npos);
}

namespace {
/// The `items` of every call of `task` in the trace at `path`.
std::vector<std::uint64_t> call_items(const fs::path& path, const char* task) {
  const support::TraceFile trace = support::read_trace(path);
  std::vector<std::uint64_t> out;
  for (const auto* e : trace.named(task, "X")) out.push_back(support::arg_u64(*e, "items"));
  return out;
}

/// `count` lines, each a JSON string of `bytes` bytes with its quotes.
std::string string_lines(std::size_t count, std::size_t bytes) {
  std::string line = "\"" + std::string(bytes - 2, 'x') + "\"\n", out;
  for (std::size_t i = 0; i < count; ++i) out += line;
  return out;
}
}  // namespace

TEST_CASE("Cli.map.a_chunk_closes_at_its_byte_budget") {
  // Chunks were bounded in lines only: 1024 lines of 1 MB made a chunk of 1 GB, and the chunks
  // waiting and in flight ~20 GB. A chunk now also closes at --chunk-bytes of arguments (4 MiB).
  support::TempDir dir;
  auto items = [&](const std::string& input, std::vector<std::string> options) {
    write_file(dir.path / "in.jsonl", input);
    const fs::path trace = dir.path / "trace.json";
    std::vector<std::string> args = {"map", "-j", "1", "--chunksize", "1024", "--trace", trace.string()};
    args.insert(args.end(), options.begin(), options.end());
    args.insert(args.end(), {"view_size", (dir.path / "in.jsonl").string()});
    Result r = cli(args);
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(lines_of(r.out).size() == static_cast<std::size_t>(std::count(input.begin(), input.end(), '\n')));
    return call_items(trace, "view_size");
  };
  // {"value0":"x...x"}: 1013 bytes and a newline a line; 8 lines are 8112 bytes, the 9th passes 8K.
  auto small = items(string_lines(200, 1002), {"--chunk-bytes", "8K"});
  CAPTURE(small.size());
  CHECK(small.size() >= 23);
  for (auto n : small) CHECK(n <= 9);
  CHECK(std::accumulate(small.begin(), small.end(), std::uint64_t{0}) == 200);
  // The default: 4 lines of 1 MiB pass 4 MiB.
  auto large = items(string_lines(12, 1 << 20), {});
  CHECK(large == std::vector<std::uint64_t>{4, 4, 4});
}

TEST_CASE("Cli.map.a_pipe_is_read_ahead_within_the_byte_budget") {
  // Of a pipe, up to four chunks of 1024 lines per worker were read ahead, whatever their size.
  // Now the read-ahead stops at the byte budget (2 * workers + 2 chunks of --chunk-bytes: 16 KiB
  // here): the total of this input, read ahead whole before, is then unknown, and the progress
  // bar says "600 lines", not "600/600 lines". The pipe is full and closed before ferry starts.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const std::string input = string_lines(600, 99);  // 60,000 bytes: within a pipe's 64 KiB
  REQUIRE(write_all(fds[1], input));
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFD, 0);  // inherited: ferry reads it as /dev/fd/N
  int master = -1, slave = -1;
  winsize ws{};
  ws.ws_row = 24;
  ws.ws_col = 120;
  REQUIRE(::openpty(&master, &slave, nullptr, nullptr, &ws) == 0);
  support::TempDir io;
  pid_t pid = spawn(Call{.args = {"map", "-j", "1", "--chunk-bytes", "4K", "view_size",
                                  "/dev/fd/" + std::to_string(fds[0])},
                         .stderr_fd = slave},
                    io.path)
                  .pid;
  ::close(slave);
  ::close(fds[0]);
  std::string screen;
  char buf[4096];
  for (;;) {  // until ferry and its workers are gone (EIO)
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) {
      screen.append(buf, static_cast<std::size_t>(n));
    } else if (!(n < 0 && errno == EINTR)) {
      break;
    }
  }
  ::close(master);
  CHECK(wait_status(pid) == 0);
  CHECK(lines_of(read_file(io.path / "stdout")).size() == 600);
  CAPTURE(screen);
  CHECK(screen.find("600 lines") != std::string::npos);
  CHECK(screen.find("/600") == std::string::npos);
}

TEST_CASE("Cli.map.a_closed_stdin_is_an_input_error") {
  // `ferry map square <&-` hung for ever: the input stayed descriptor 0, closed, and the input
  // reader's eventfd took that free number, so the map waited on its own wake-up descriptor.
  Result r = cli_redirected(Call{.args = {"map", "--no-progress", "square"}}, "<&-");
  CHECK_MESSAGE(r.status == 2, r.err);
  CHECK(r.out.empty());
  CHECK_MESSAGE(r.err.find("ferry map: cannot read the input: standard input is closed") != std::string::npos,
                r.err);
  // Nor through a name of it (it read the /dev/null put in its place: no line, exit status 0).
  Result named = cli_redirected(Call{.args = {"map", "--no-progress", "square", "/dev/stdin"}}, "<&-");
  CHECK_MESSAGE(named.status == 2, named.err);
  CHECK(named.err.find("standard input is closed") != std::string::npos);
  // With a FILE, or for run, which reads no input, a closed stdin does not matter.
  support::TempDir dir;
  write_file(dir.path / "in.jsonl", "1\n2\n");
  Result file = cli_redirected(Call{.args = {"map", "square", (dir.path / "in.jsonl").string()}}, "<&-");
  CHECK_MESSAGE(file.status == 0, file.err);
  CHECK(file.out == "1\n4\n");
  Result run = cli_redirected(Call{.args = {"run", "add", "1", "2"}}, "<&-");
  CHECK_MESSAGE(run.status == 0, run.err);
  CHECK(run.out == "3\n");
  // Nor does a closed stderr: the results and the exit status are the same.
  Result quiet = cli_redirected(Call{.args = {"map", "square", (dir.path / "in.jsonl").string()}}, "<&- 2>&-");
  CHECK(quiet.status == 0);
  CHECK(quiet.out == "1\n4\n");
  CHECK(cli_redirected(Call{.args = {"run", "fail", "7"}}, "2>&-").status == 1);
}

TEST_CASE("Cli.map.refuses_an_input_that_is_its_output") {
  // `ferry map square in.jsonl >> in.jsonl` read its own results back as input lines: over
  // 300,000 lines it never ended (51 million lines after 30 s, until the disk is full); over these
  // 2,000 it wrote results into its input. Refused, as cat refuses it, whether the file is FILE or
  // stdin, and left as it was.
  support::TempDir dir;
  const fs::path in = dir.path / "in.jsonl";
  const std::string lines = numbers(2000);
  write_file(in, lines);
  const std::string quoted = "'" + in.string() + "'";
  for (const auto& [args, redirections] :
       {std::pair<std::vector<std::string>, std::string>{{"map", "--no-progress", "square", in.string()}, ">>" + quoted},
        {{"map", "--no-progress", "square"}, "<" + quoted + " >>" + quoted},
        {{"map", "--no-progress", "square", "-"}, "<>" + quoted + " >&0"}}) {
    CAPTURE(redirections);
    Result r = cli_redirected(Call{.args = args}, redirections, std::chrono::seconds(10));
    CHECK(r.status == 2);
    CHECK(r.err.find("is also the output (stdout)") != std::string::npos);
    CHECK(read_file(in) == lines);
  }
  // Another file, and a pipe, are not refused.
  Result other = cli_redirected(Call{.args = {"map", "--no-progress", "square", in.string()}},
                                ">>'" + (dir.path / "out.jsonl").string() + "'");
  CHECK(other.status == 0);
  CHECK(lines_of(read_file(dir.path / "out.jsonl")).size() == 2000);
}

TEST_CASE("Cli.a_librarys_invalid_argument_says_ferry_once") {
  // libferry's std::invalid_argument messages start "ferry: ", and the command printed them after
  // its own prefix: "ferry map: invalid argument: ferry: refusing to write the trace to ...".
  support::TempDir dir;
  const fs::path in = dir.path / "in.jsonl";
  write_file(in, "1\n2\n");
  Result trace = cli({"map", "--no-progress", "--trace", in.string(), "square", in.string()});
  CHECK(trace.status == 2);
  CHECK_MESSAGE(trace.err.starts_with("ferry map: invalid argument: refusing to write the trace to "), trace.err);
  Result env = cli(Call{.args = {"run", "add", "1", "2"}, .env = {{"FERRY_PIPELINE_DEPTH", "65"}}});
  CHECK(env.status == 2);
  CHECK_MESSAGE(env.err.starts_with("ferry run: invalid argument: malformed environment: FERRY_PIPELINE_DEPTH='65'"),
                env.err);
}

// ---- info and cache ----------------------------------------------------------------------------

TEST_CASE("Cli.info_shows_version_cpus_worker_and_paths") {
  support::TempDir cache;
  Result r = cli(Call{.args = {"info"}, .env = {{"FERRY_CACHE_DIR", cache.path.string()}}});
  CHECK(r.status == 0);
  CHECK(r.out.find(ferry::version()) != std::string::npos);
  bool cpus = false;
  for (const auto& l : lines_of(r.out))
    if (l.rfind("cpu_count", 0) == 0)
      cpus = l.find(" " + std::to_string(ferry::cpu_count())) != std::string::npos;
  CHECK_MESSAGE(cpus, r.out);
  CHECK(r.out.find(FERRY_TEST_WORKER) != std::string::npos);
  CHECK(r.out.find("missing") == std::string::npos);
  CHECK(r.out.find(FERRY_TEST_PLUGIN_DIR) != std::string::npos);
  CHECK(r.out.find(cache.path.string()) != std::string::npos);

  Result json = cli(Call{.args = {"info", "--json"}, .env = {{"FERRY_CACHE_DIR", cache.path.string()}}});
  CHECK(json.status == 0);
  CHECK(json.out.find("\"cpu_count\":" + std::to_string(ferry::cpu_count())) != std::string::npos);
  CHECK(json.out.find(std::string("\"version\":\"") + ferry::version() + "\"") != std::string::npos);
  CHECK(json.out.find("\"exists\":true") != std::string::npos);

  Result missing = cli(Call{.args = {"--worker", "/nonexistent/ferry-worker", "info"}, .defaults = false});
  CHECK(missing.out.find("missing") != std::string::npos);
}

TEST_CASE("Cli.info_finds_the_wrap_compiler_on_path_as_wrap_does") {
  // A bare FERRY_CXX is looked up in $PATH (platform/spawn's find_program, FERRY_WRAP's own
  // search): the first executable file of that name, skipping one that is not executable.
  support::TempDir a, b;
  const std::string name = "ferry-test-cxx";
  write_file(a.path / name, "#!/bin/sh\n");  // not executable: skipped
  write_file(b.path / name, "#!/bin/sh\n");
  fs::permissions(b.path / name, fs::perms(0755), fs::perm_options::replace);
  const std::string path = a.path.string() + ":" + b.path.string() + ":" + std::getenv("PATH");
  Result found = cli(Call{.args = {"info", "--json"}, .env = {{"FERRY_CXX", name}, {"PATH", path}}});
  CHECK(found.status == 0);
  CHECK(found.out.find("\"compiler_path\":\"" + (b.path / name).string() + "\"") != std::string::npos);

  Result missing = cli(Call{.args = {"info"}, .env = {{"FERRY_CXX", name}}});
  CHECK(missing.status == 0);
  bool not_found = false;
  for (const auto& l : lines_of(missing.out))
    if (l.rfind("wrap compiler", 0) == 0) not_found = l.find("(not found)") != std::string::npos;
  CHECK_MESSAGE(not_found, missing.out);
}

TEST_CASE("Cli.info.finds_a_compiler_given_with_its_arguments") {
  // FERRY_CXX may be a program and its arguments ('g++ -O2', 'ccache g++'), and FERRY_WRAP runs
  // its first word: `ferry info` looked the whole value up as one program name and said
  // "(not found)" of a compiler that wraps use.
  support::TempDir dir;
  const fs::path compiler = dir.path / "ferry-test-cxx";
  write_file(compiler, "#!/bin/sh\n");
  fs::permissions(compiler, fs::perms(0755), fs::perm_options::replace);
  const std::string path = dir.path.string() + ":" + std::getenv("PATH");
  Result r = cli(Call{.args = {"info"}, .env = {{"FERRY_CXX", "ferry-test-cxx -O2"}, {"PATH", path}}});
  CHECK(r.status == 0);
  std::string line;
  for (const auto& l : lines_of(r.out))
    if (l.rfind("wrap compiler", 0) == 0) line = l;
  CHECK_MESSAGE(line.find("ferry-test-cxx -O2  (" + compiler.string() + ")") != std::string::npos, r.out);
  Result json = cli(Call{.args = {"info", "--json"}, .env = {{"FERRY_CXX", "ferry-test-cxx -O2"}, {"PATH", path}}});
  CHECK_MESSAGE(json.out.find("\"compiler_path\":\"" + compiler.string() + "\"") != std::string::npos, json.out);
}

TEST_CASE("Cli.cache_list_reads_no_fifo_and_prints_no_escapes") {
  // The cache directory named may be anyone's: a FIFO for a generated source hung `cache list`
  // (opened and read without end), and a first line carrying an escape sequence reached the
  // terminal. The source is read only if it is a regular file, 4 KiB at most; names are text.
  support::TempDir cache;
  const fs::path& d = cache.path;
  fs::create_directory(d / "plugins");
  const std::string aa(16, 'a'), bb(16, 'b');  // content keys
  write_file(d / "plugins" / ("wrap-" + aa + ".so"), "x");
  REQUIRE(::mkfifo((d / ("wrap-" + aa + ".cpp")).c_str(), 0600) == 0);
  write_file(d / "plugins" / ("wrap-" + bb + ".so"), "x");
  write_file(d / ("wrap-" + bb + ".cpp"), "// Generated by ferry for FERRY_WRAP(f\x1b]0;owned\x07) at h.cpp:1.\n");
  Result list = cli({"cache", "list", "--cache-dir", d.string()});
  CHECK(list.status == 0);
  CHECK(list.out.find("wrap-" + aa + ".so") != std::string::npos);
  CHECK(list.out.find("f\\x1b]0;owned\\x07") != std::string::npos);
  CHECK(list.out.find('\x1b') == std::string::npos);
  // A newline in a file name would fake a line of the listing.
  write_file(d / "plugins" / ("wrap-" + aa + "-\nwrap-forged.so"), "x");
  list = cli({"cache", "list", "--cache-dir", d.string()});
  CHECK(list.out.find("wrap-" + aa + "-\\x0awrap-forged.so") != std::string::npos);
  CHECK(list.out.find("\nwrap-forged") == std::string::npos);
}

TEST_CASE("Cli.cache_list_and_clear_touch_only_ferry_files") {
  support::TempDir cache;
  const fs::path& d = cache.path;
  // The plugins in a directory of their own, which a sandboxed worker may read (the rest holds
  // the user's wrapped sources).
  fs::create_directory(d / "plugins");
  write_file(d / "plugins" / "wrap-0123456789abcdef-00112233aabbccdd.so", std::string(3000, 'x'));  // its content's name
  write_file(d / "plugins" / "mine.so", "mine");
  write_file(d / "wrap-00000000000000000a-00112233aabbccdd.so", "old");  // an older ferry's plugin: a file, no entry
  write_file(d / "wrap-0123456789abcdef.cpp",
             "// Generated by ferry for FERRY_WRAP(twice) at host.cpp:12.\nint twice(int);\n");
  write_file(d / "wrap-0123456789abcdef.sum", "0 3000");
  write_file(d / "wrap-0123456789abcdef.lock", "");
  write_file(d / "prelude-0123456789abcdef99ff.hpp", "#pragma once\n");
  write_file(d / "prelude-0123456789abcdef99ff.hpp.gch", std::string(5000, 'p'));
  write_file(d / "notes.txt", "mine");
  fs::create_directory(d / "wrap-not-a-file");

  Result list = cli({"cache", "list", "--cache-dir", d.string()});
  CHECK(list.status == 0);
  CHECK(list.out.find("wrap-0123456789abcdef-00112233aabbccdd.so") != std::string::npos);
  CHECK(list.out.find("2.9 KiB") != std::string::npos);
  CHECK(list.out.find("twice") != std::string::npos);
  CHECK(list.out.find("host.cpp:12") != std::string::npos);
  CHECK(list.out.find("prelude-0123456789abcdef99ff.hpp.gch") != std::string::npos);
  CHECK(list.out.find("4.9 KiB") != std::string::npos);
  CHECK(list.out.find("notes.txt") == std::string::npos);
  CHECK(list.out.find("mine.so") == std::string::npos);
  CHECK(list.out.find("wrap-00000000000000000a-") == std::string::npos);
  CHECK(list.out.find("1 entry, 1 prelude; 7 ferry files") != std::string::npos);

  // The default directory is FERRY_CACHE_DIR's, as for FERRY_WRAP.
  Result by_env = cli(Call{.args = {"cache", "list"}, .env = {{"FERRY_CACHE_DIR", d.string()}}});
  CHECK(by_env.out.find("wrap-0123456789abcdef-00112233aabbccdd.so") != std::string::npos);

  // A build whose program was killed leaves its compiler's scratch directory.
  // (Of a pid no process has: one of a live process is a build under way, left alone.)
  fs::create_directory(d / "wrap-scratch.999999999.1");
  write_file(d / "wrap-scratch.999999999.1" / "ccAbCdEf.s", "asm");
  Result clear = cli(Call{.args = {"cache", "clear"}, .env = {{"FERRY_CACHE_DIR", d.string()}}});
  CHECK(clear.status == 0);
  CHECK(clear.out.find("removed 7 files and 1 scratch directory") != std::string::npos);
  CHECK(clear.out.find("freed 7.9 KiB") != std::string::npos);  // 3000 + 77 + 6 + 13 + 5000 + 3 bytes
  std::vector<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(d)) left.push_back(fs::relative(e.path(), d).string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"notes.txt", "plugins", "plugins/mine.so", "wrap-not-a-file"});

  Result empty = cli({"cache", "list", "--cache-dir", d.string()});
  CHECK(empty.status == 0);
  CHECK(empty.out.find("0 entries") != std::string::npos);
}

TEST_CASE("Cli.cache_clear_leaves_the_files_of_a_build_under_way") {
  // `ferry cache clear` while a compiler ran removed its source, its temporaries and its scratch
  // directory (TMPDIR): the build failed ("Cannot create temporary file"), and that failure was
  // remembered in the cache. The files of an entry whose lock a process holds stay, and so does
  // the scratch directory of a live process.
  support::TempDir cache;
  const fs::path& d = cache.path;
  const std::string busy(64, 'b'), idle(64, 'c');
  const std::vector<std::string> building = {"wrap-" + busy + ".cpp", "wrap-" + busy + ".lock",
                                             "wrap-" + busy + ".so.tmp.1.0", "wrap-" + busy + ".so.tmp.1.0.d"};
  for (const auto& name : building) write_file(d / name, "x");
  for (const auto& name : {"wrap-" + idle + ".cpp", "wrap-" + idle + ".lock", "wrap-" + idle + ".sum"})
    write_file(d / name, "x");
  ::chmod((d / ("wrap-" + busy + ".lock")).c_str(), 0200);  // as ferry makes it
  const int held = ::open((d / ("wrap-" + busy + ".lock")).c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX) == 0);
  const fs::path live = d / ("wrap-scratch." + std::to_string(::getpid()) + ".7");
  fs::create_directory(live);
  write_file(live / "ccLIVE.s", "asm");
  // A process that has ended: its scratch directory is a killed build's.
  const pid_t gone = ::fork();
  REQUIRE(gone >= 0);
  if (gone == 0) _exit(0);
  REQUIRE(::waitpid(gone, nullptr, 0) == gone);
  const fs::path dead = d / ("wrap-scratch." + std::to_string(gone) + ".1");
  fs::create_directory(dead);
  Result clear = cli({"cache", "clear", "--cache-dir", d.string()});
  ::close(held);
  CHECK(clear.status == 0);
  CAPTURE(clear.out);
  CHECK(clear.out.find("removed 3 files and 1 scratch directory") != std::string::npos);
  CHECK(clear.out.find("left 5 of builds under way") != std::string::npos);
  for (const auto& name : building) CHECK_MESSAGE(fs::exists(d / name), name);
  CHECK(fs::exists(live / "ccLIVE.s"));
  CHECK_FALSE(fs::exists(dead));
  CHECK_FALSE(fs::exists(d / ("wrap-" + idle + ".cpp")));
  // Its build over (the lock let go), the next clear removes them.
  Result again = cli({"cache", "clear", "--cache-dir", d.string()});
  CHECK(again.out.find("removed 4 files") != std::string::npos);
}

TEST_CASE("Cli.cache_clear_leaves_a_users_files_named_like_ferrys") {
  // ferry's files are named by a content key (wrap-<64 hex digits>...): `ferry cache clear
  // --cache-dir .` in a directory of the user's removed every wrap-* and prelude-* file there.
  support::TempDir cache;
  const fs::path& d = cache.path;
  const std::string key(64, 'e');
  const std::vector<std::string> users = {"wrap-up.md", "prelude-to-chapter-2.txt", "wrap-", "prelude-",
                                          "wrap-cafe.txt", "wrap-" + key + "x.txt", "wrap-" + std::string(15, 'a') + ".cpp"};
  for (const auto& name : users) write_file(d / name, "mine");
  const std::vector<std::string> ferrys = {"wrap-" + key + ".cpp", "wrap-" + key + ".sum", "wrap-" + key + ".err",
                                           "prelude-" + key + ".hpp", "prelude-" + key + ".hpp.gch",
                                           "wrap-" + key + ".so.tmp.123.4"};
  for (const auto& name : ferrys) write_file(d / name, "x");
  Result clear = cli({"cache", "clear", "--cache-dir", d.string()});
  CHECK(clear.status == 0);
  CHECK(clear.out.find("removed " + std::to_string(ferrys.size()) + " files") != std::string::npos);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  std::vector<std::string> expected = users;
  std::sort(expected.begin(), expected.end());
  CHECK(left == expected);
}

TEST_CASE("Cli.cache_clear_refuses_a_directory_another_user_can_change") {
  // HOME=/tmp: the default cache is another user's directory, in which a scratch directory being
  // emptied could be swapped for a link into the user's files. FERRY_WRAP does not use such a
  // directory; `ferry cache clear` removed from it all the same (an audit).
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to make another user's directory");
    return;
  }
  support::TempDir top;
  const fs::path d = top.path / "theirs";
  fs::create_directory(d);
  const std::string key(64, 'e');
  write_file(d / ("wrap-" + key + ".cpp"), "x");
  fs::create_directory(d / "wrap-scratch.1.1");
  write_file(d / "wrap-scratch.1.1" / "ccAbCdEf.s", "asm");
  REQUIRE(::chown(d.c_str(), 65534, 65534) == 0);
  fs::permissions(d, fs::perms(0777), fs::perm_options::replace);
  Result clear = cli({"cache", "clear", "--cache-dir", d.string()});
  CHECK(clear.status == 1);
  CHECK_MESSAGE(clear.err.find("ferry cache clear: refusing to clear " + d.string() + ": ") == 0, clear.err);
  CHECK(fs::exists(d / ("wrap-" + key + ".cpp")));
  CHECK(fs::exists(d / "wrap-scratch.1.1" / "ccAbCdEf.s"));
}

// ---- what reaches the terminal -----------------------------------------------------------------

namespace {
/// An escape sequence (retitle the window), a C1 CSI in UTF-8, and a newline that would fake a
/// line of the output.
const std::string hostile = "\x1b]0;owned\x07\xc2\x9b" "31m\nforged";
/// `text` carries none of `hostile`'s controls, and shows them as \xNN.
void check_shown_as_text(const std::string& text) {
  CAPTURE(text);
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\x07') == std::string::npos);
  CHECK(text.find("\xc2\x9b") == std::string::npos);
  CHECK(text.find("\nforged") == std::string::npos);
  CHECK(text.find("\\x1b]0;owned\\x07\\xc2\\x9b31m\\x0aforged") != std::string::npos);
}
}  // namespace

TEST_CASE("Cli.cache.the_directory_name_is_shown_as_text") {
  // The directory ($FERRY_CACHE_DIR, $XDG_CACHE_HOME, --cache-dir) was printed as it was.
  support::TempDir root;
  const fs::path dir = root.path / ("cache" + hostile);
  Result list = cli({"cache", "list", "--cache-dir", dir.string()});  // no such directory yet
  CHECK(list.status == 0);
  check_shown_as_text(list.out);
  Result clear = cli({"cache", "clear", "--cache-dir", dir.string()});
  CHECK(clear.status == 0);
  check_shown_as_text(clear.out);

  fs::create_directory(dir);
  write_file(dir / ("wrap-" + std::string(64, 'a') + ".so"), "x");
  list = cli({"cache", "list", "--cache-dir", dir.string()});
  CHECK(list.status == 0);
  check_shown_as_text(list.out);
  clear = cli({"cache", "clear", "--cache-dir", dir.string()});
  CHECK(clear.status == 0);
  CHECK(clear.out.find("removed 1 files") != std::string::npos);
  check_shown_as_text(clear.out);
}

TEST_CASE("Cli.report.the_output_name_is_shown_as_text") {
  // `ferry report *.trace` printed the page's name, the trace's with .html, as it was.
  support::TempDir dir;
  const fs::path trace = dir.path / ("run" + hostile + ".trace");
  REQUIRE(cli({"run", "--trace", trace.string(), "add", "1", "2"}).status == 0);
  Result r = cli({"report", trace.string()});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(fs::exists(dir.path / ("run" + hostile + ".html")));
  check_shown_as_text(r.out);
}

TEST_CASE("Cli.report.a_numbered_trace_without_extension_gets_a_page_of_its_own") {
  // FERRY_TRACE=DIR/trace names an executor's files trace, trace.2, trace.3...: the page of
  // trace.2 was trace.html (".2" taken for the extension), over the page of trace.
  support::TempDir dir;
  const fs::path first = dir.path / "trace", second = dir.path / "trace.2";
  REQUIRE(cli({"run", "--trace", first.string(), "add", "1", "2"}).status == 0);
  REQUIRE(cli({"run", "--trace", second.string(), "add", "3", "4"}).status == 0);
  Result r = cli({"report", first.string()});
  CHECK_MESSAGE(r.status == 0, r.err);
  r = cli({"report", second.string()});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(fs::exists(dir.path / "trace.html"));
  CHECK(fs::exists(dir.path / "trace.2.html"));
  // A numbered trace with an extension keeps its number: run.2.json gives run.2.html.
  REQUIRE(cli({"run", "--trace", (dir.path / "run.2.json").string(), "add", "1", "2"}).status == 0);
  r = cli({"report", (dir.path / "run.2.json").string()});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(fs::exists(dir.path / "run.2.html"));
}

TEST_CASE("Cli.info.environment_values_are_shown_as_text") {
  // Paths and flags from the environment reached the terminal as they were, in the text and in
  // the JSON (RapidJSON escapes only what is below U+0020).
  support::TempDir root;
  const std::string cache = (root.path / ("cache" + hostile)).string();
  const std::map<std::string, std::string> env = {{"FERRY_CACHE_DIR", cache},
                                                  {"FERRY_WRAP_FLAGS", "-O1 " + hostile}};
  Result text = cli(Call{.args = {"info"}, .env = env});
  CHECK(text.status == 0);
  check_shown_as_text(text.out);

  Result json = cli(Call{.args = {"info", "--json"}, .env = env});
  CHECK(json.status == 0);
  CAPTURE(json.out);
  CHECK(json.out.find("\xc2\x9b") == std::string::npos);
  CHECK(json.out.find("\\u009b") != std::string::npos);
  support::rj::Document doc;
  doc.Parse(json.out.c_str(), json.out.size());
  REQUIRE(!doc.HasParseError());
  CHECK(std::string(doc["wrap"]["cache_dir"].GetString()) == cache);  // the same text, escaped
}

TEST_CASE("Cli.usage_errors_are_shown_as_text") {
  // CLI11's messages quote the value given, and the unexpected arguments were printed as given.
  Result size = cli({"run", "--memory", "1" + hostile, "add", "1", "2"});
  CHECK(size.status == 2);
  check_shown_as_text(size.err);
  Result extra = cli({"info", "x" + hostile});
  CHECK(extra.status == 2);
  CHECK(extra.err.find("unexpected arguments") != std::string::npos);
  check_shown_as_text(extra.err);
}

TEST_CASE("Cli.errors_are_one_line_whatever_they_quote") {
  // `ferry run "$(printf 'nosuch\nferry run: TaskError: forged')" 1` printed a second line of its
  // own making: an error quoted a name, a path, an argument or a task's message with its newline.
  // Each error is one line now, a newline in it \x0a (the remote stack follows on lines of its own),
  // but for the task's own message, whose lines follow indented (next test).
  const std::string forged = "nosuch\nferry run: TaskError: forged";
  Result name = cli({"run", forged, "1"});
  CHECK(name.status == 3);
  CHECK_MESSAGE(name.err.find("'nosuch\\x0aferry run: TaskError: forged'") != std::string::npos, name.err);
  CHECK(lines_of(name.err).size() == 1);
  check_shown_as_text(cli({"run", "nosuch" + hostile, "1"}).err);

  Result argument = cli({"run", "add", "1\nferry run: forged", "2"});  // JSON, then more
  CHECK(argument.status == 2);
  CHECK_MESSAGE(lines_of(argument.err).size() == 1, argument.err);
  CHECK(argument.err.find("1\\x0aferry run: forged") != std::string::npos);

  support::TempDir root;
  // A task's message quoting its argument: its lines are the task's, indented under the error.
  std::string path_json = "\"";
  for (char c : (root.path / ("none" + hostile) / "x").string())
    path_json += c == '\x1b' ? "\\u001b" : c == '\x07' ? "\\u0007" : c == '\n' ? "\\n" : std::string(1, c);
  Result task = cli({"run", "record_run", path_json + "\"", "1"});
  CHECK(task.status == 1);
  CHECK(task.err.find("TaskError") != std::string::npos);
  CHECK(task.err.find("\\x1b]0;owned\\x07\\xc2\\x9b31m\n    forged") != std::string::npos);
  CHECK(task.err.find("\nforged") == std::string::npos);
  CHECK(task.err.find('\x1b') == std::string::npos);

  const std::string missing = (root.path / ("none" + hostile)).string();
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"map", "square", missing},
           {"list", missing},
           {"report", missing},
           {"run", "--initializer", "nosuch" + hostile, "add", "1", "2"}}) {
    CAPTURE(args);
    Result r = cli(args);
    CHECK(r.status != 0);
    CHECK(lines_of(r.err).size() == 1);
    check_shown_as_text(r.err);
  }

  // The plugin column of `ferry list`, and the files it skips, on one line each.
  const fs::path dir = root.path / ("plugins" + hostile);
  fs::create_directory(dir);
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir / "libmath.so");
  write_file(dir / "libjunk.so", "not an ELF file");
  Result list = cli({"list", dir.string()});
  CHECK(list.status == 0);
  check_shown_as_text(list.out);
  check_shown_as_text(list.err);
  CHECK(lines_of(list.err).size() == 1);
}

TEST_CASE("Cli.a_tasks_message_of_several_lines_is_shown_as_lines") {
  // A task's message of several lines (a parser's list of problems) was one line with \x0a at
  // each break. Its lines follow the error line now, each indented so that none passes for a line
  // of ferry's own; a break at its end shows nothing; other controls stay escaped. In JSON
  // (map --keep-going) the message is JSON's string, on the one line of its object.
  support::TempDir root;
  // record_run's message quotes the path it could not open.
  const std::string missing = (root.path / "none").string() + "/a";
  auto argument = [&](std::string_view forged) {
    return "\"" + missing + "\\nferry " + std::string(forged) + ": TaskError: forged\\n\\tb\\u001b[2J\\n\"";
  };
  // The error line, the message's other lines indented, then the remote stack.
  auto check_shown = [&](const Result& r, const std::string& first, const std::string& forged) {
    CHECK(r.status == 1);
    auto lines = lines_of(r.err);
    REQUIRE_MESSAGE(lines.size() >= 4, r.err);
    CHECK(lines[0].starts_with(first + "TaskError: task 'record_run' raised std::runtime_error in worker "));
    CHECK(lines[0].ends_with("cannot open " + missing));
    CHECK(lines[1] == "    ferry " + forged + ": TaskError: forged");
    CHECK(lines[2] == "    \tb\\x1b[2J");
    CHECK(lines[3] == "remote stack (worker):");
  };
  check_shown(cli({"run", "record_run", argument("run"), "1"}), "ferry run: ", "run");
  check_shown(cli({"map", "record_run"}, "[" + argument("map") + ", 1]\n"), "ferry map: line 1: ", "map");

  Result keep_going = cli({"map", "--keep-going", "record_run"}, "[" + argument("map") + ", 1]\n");
  CHECK(keep_going.status == 1);
  CHECK(keep_going.out == "{\"error\":{\"type\":\"std::runtime_error\",\"message\":\"record_run: cannot open " +
                              missing + "\\nferry map: TaskError: forged\\n\\tb\\u001B[2J\\n\",\"stage\":\"task\"}}\n");
}

TEST_CASE("Cli.an_initializers_message_of_several_lines_is_shown_as_lines") {
  // It reached the command inside BrokenProcessPool's message only, shown on one line with \x0a
  // at each break and without the initializer's remote stack. The pool's error has the
  // initializer's TaskError as its cause (nested) now: shown as a task's message is.
  support::TempDir root;
  const std::string missing = (root.path / "none").string() + "/a";
  Result r = cli({"run", "--initializer", "record_run", "--initarg",
                  "\"" + missing + "\\nferry run: forged\\n\\tb\\u001b[2J\"", "--initarg", "1", "add", "1", "2"});
  CHECK(r.status == 4);
  auto lines = lines_of(r.err);
  REQUIRE_MESSAGE(lines.size() >= 4, r.err);
  CHECK(lines[0].starts_with("ferry run: BrokenProcessPool: initializer 'record_run' failed in worker "));
  CHECK(lines[0].ends_with("cannot open " + missing));
  CHECK(lines[1] == "    ferry run: forged");
  CHECK(lines[2] == "    \tb\\x1b[2J");
  CHECK(lines[3] == "remote stack (worker):");
}

TEST_CASE("Cli.names_show_backslashes_and_bidirectional_controls_escaped") {
  // A backslash in a name was shown as itself, so a name could spell "\x0a" and pass for one
  // holding a newline; a bidirectional control (U+202E, U+2066) was shown as it is and made the
  // terminal show what follows it reversed or moved.
  const std::string name = "nosuch\\x0a\xe2\x80\xae" "gnp.exe\xe2\x81\xa6";
  Result r = cli({"run", name, "1"});
  CHECK(r.status == 3);
  CHECK_MESSAGE(r.err.find("'nosuch\\\\x0a\\xe2\\x80\\xaegnp.exe\\xe2\\x81\\xa6'") != std::string::npos, r.err);
  CHECK(r.err.find("\xe2\x80\xae") == std::string::npos);

  support::TempDir root;
  const fs::path dir = root.path / ("plugins\\x1b\xe2\x80\xae");
  fs::create_directory(dir);
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, dir / "libmath.so");
  Result list = cli({"list", dir.string()});
  CHECK(list.status == 0);
  CHECK_MESSAGE(list.out.find("plugins\\\\x1b\\xe2\\x80\\xae/libmath.so") != std::string::npos, list.out);
  CHECK(list.out.find("\xe2\x80\xae") == std::string::npos);
  // As JSON (list --json, a result) they are JSON escapes: the text is the same, its look safe.
  Result json = cli({"list", "--json", dir.string()});
  CHECK_MESSAGE(json.out.find("plugins\\\\x1b\\u202e/libmath.so") != std::string::npos, json.out);
  CHECK(cli({"run", "greet", "\"\xe2\x80\xae\xe2\x81\xa9\xe2\x80\xa8\\\\\""}).out ==
        "\"hello, \\u202e\\u2069\\u2028\\\\\"\n");
}

namespace {
/// Every subcommand that writes to stdout, with what they read made in `data` (an input, a trace).
std::vector<std::vector<std::string>> writing_commands(const fs::path& data) {
  write_file(data / "in.jsonl", "1\n2\n");
  const fs::path trace = data / "run.trace";
  REQUIRE(cli({"run", "--trace", trace.string(), "add", "1", "2"}).status == 0);
  return {
      {"run", "add", "40", "2"},
      {"run", "--raw", "add", "40", "2"},
      {"list"},
      {"list", "--json"},
      {"info"},
      {"info", "--json"},
      {"cache", "list", "--cache-dir", (data / "cache").string()},
      {"cache", "clear", "--cache-dir", (data / "cache").string()},
      {"map", "square", (data / "in.jsonl").string()},
      {"report", trace.string(), "-o", (data / "run.html").string()},
  };
}
}  // namespace

TEST_CASE("Cli.lost_output_is_an_error") {
  // `ferry run add 40 2 > /dev/full`, list, info and cache exited 0: the failed write was never
  // looked at. Every subcommand now checks its output at the end, as map and report did.
  if (!fs::exists("/dev/full")) {
    MESSAGE("skipped: no /dev/full");
    return;
  }
  support::TempDir data;
  const auto commands = writing_commands(data.path);
  for (const auto& args : commands) {
    CAPTURE(args);
    support::TempDir dir;
    fs::create_symlink("/dev/full", dir.path / "stdout");  // spawn opens it for stdout: ENOSPC
    Child child = spawn(Call{.args = args}, dir.path);
    CHECK(wait_status(child.pid) == 1);
    const std::string err = read_file(dir.path / "stderr");
    CHECK_MESSAGE(err.find("cannot write the output: No space left on device") != std::string::npos, err);
  }
}

TEST_CASE("Cli.a_closed_stdout_is_lost_output") {
  // `ferry run add 1 2 >&-` exited 0, its result written to /dev/null (the executor puts it on
  // a closed descriptor 1); list and map said "Bad file descriptor". Every subcommand that
  // writes to stdout now fails as on a full disk, exit status 1.
  support::TempDir data;
  const auto commands = writing_commands(data.path);
  for (const auto& args : commands) {
    CAPTURE(args);
    Result r = cli_redirected(Call{.args = args}, ">&-");
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("cannot write the output: Bad file descriptor") != std::string::npos, r.err);
  }
  Result page = cli_redirected(Call{.args = {"report", (data.path / "run.trace").string(), "-o", "-"}}, ">&-");
  CHECK(page.status == 1);
  CHECK_MESSAGE(page.err.find("cannot write the report to stdout: Bad file descriptor") != std::string::npos,
                page.err);
  // A void task writes nothing: nothing is lost (as with a full disk).
  Result noop = cli_redirected(Call{.args = {"run", "noop"}}, ">&-");
  CHECK_MESSAGE(noop.status == 0, noop.err);
  // A task's error still reaches stderr.
  Result chatty = cli_redirected(Call{.args = {"run", "fail", "7"}}, ">&-");
  CHECK(chatty.status == 1);
  CHECK(chatty.err.find("TaskError") != std::string::npos);
}

TEST_CASE("Cli.map.stops_at_its_first_lost_output") {
  // It ran the whole input (an hour's map on a full disk) before saying the output was lost.
  if (!fs::exists("/dev/full")) {
    MESSAGE("skipped: no /dev/full");
    return;
  }
  support::TempDir dir;
  std::string input;
  // 6 s on one worker, twice the limit below; under a sanitizer both are sanitizer_slowdown
  // times as long.
  for (int i = 0; i < 40 * support::sanitizer_slowdown; ++i) input += "[" + std::to_string(i) + ", 150]\n";
  write_file(dir.path / "in.jsonl", input);
  fs::create_symlink("/dev/full", dir.path / "stdout");
  const auto start = std::chrono::steady_clock::now();
  Child child = spawn(Call{.args = {"map", "-j", "1", "--chunksize", "1", "--no-progress", "slow_identity",
                                    (dir.path / "in.jsonl").string()}},
                      dir.path);
  CHECK(wait_status(child.pid) == 1);
  CHECK(std::chrono::steady_clock::now() - start < support::scaled(std::chrono::seconds(3)));
  const std::string err = read_file(dir.path / "stderr");
  CHECK_MESSAGE(err.find("cannot write the output: No space left on device") != std::string::npos, err);
}

namespace {

/// `ferry` with `call`'s arguments, its stdout a pipe whose open file description is
/// non-blocking (O_NONBLOCK, as a process sharing the pipe or the terminal may set it: Node.js,
/// some ssh or multiplexer set-ups), of `pipe_bytes` (0: the system's default). Nothing is read
/// until the pipe is full (no room for a write: poll on a write end of it says so) or the command
/// ended: a write to the full pipe fails with EAGAIN, the reader has not caught up yet. Then all
/// is read to the end. Status -1 when neither came within a minute.
Result cli_to_a_nonblocking_pipe(const Call& call, int pipe_bytes = 0) {
  support::TempDir dir;
  int fds[2] = {-1, -1};
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  if (pipe_bytes) REQUIRE(::fcntl(fds[1], F_SETPIPE_SZ, pipe_bytes) >= pipe_bytes);
  const int flags = ::fcntl(fds[1], F_GETFL);
  REQUIRE(flags >= 0);
  REQUIRE(::fcntl(fds[1], F_SETFL, flags | O_NONBLOCK) == 0);
  support::ChildOptions options = options_of(call);
  options.stdout_fd = fds[1];
  Child child = support::spawn(argv_of(call), dir.path, options);
  int status = 0;
  bool ended = false;
  const bool full_or_ended = support::wait_until(
      [&] {
        if (::waitpid(child.pid, &status, WNOHANG) == child.pid) return ended = true;
        pollfd writable{fds[1], POLLOUT, 0};
        return ::poll(&writable, 1, 0) == 0;
      },
      std::chrono::seconds(60));
  CHECK_MESSAGE(full_or_ended, "the pipe never filled and the command did not end");
  // The flag is the description's: the command left it as it was (others may rely on it).
  CHECK((::fcntl(fds[1], F_GETFL) & O_NONBLOCK) != 0);
  ::close(fds[1]);
  Result r;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (ended) {
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  } else {
    r.status = wait_status(child.pid);
  }
  r.err = read_file(dir.path / "stderr");
  return r;
}

}  // namespace

TEST_CASE("Cli.map_writes_everything_to_a_nonblocking_stdout") {
  // A full pipe is no failed write: map stopped with "cannot write the output: Resource
  // temporarily unavailable", its output cut after the first 64 KiB or so.
  support::TempDir dir;
  const int n = 30000;  // about 280 KB of results, four times what the pipe holds
  std::string expected;
  for (long long i = 1; i <= n; ++i) expected += std::to_string(i * i) + "\n";
  write_file(dir.path / "in.jsonl", numbers(n));
  Result r = cli_to_a_nonblocking_pipe(Call{.args = {"map", "square", (dir.path / "in.jsonl").string()}});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.empty());
  CHECK(lines_of(r.out).size() == static_cast<std::size_t>(n));
  CHECK(r.out == expected);
}

TEST_CASE("Cli.run_writes_a_large_result_to_a_nonblocking_stdout") {
  // One result of 400 KB: run stopped after 64 KiB (the pipe's capacity), exit status 1.
  const std::size_t n = 100000;
  std::string expected = "[";
  for (std::size_t i = 0; i < n; ++i) expected += i ? ",120" : "120";
  expected += "]\n";
  Result r = cli_to_a_nonblocking_pipe(Call{.args = {"run", "make_bytes", std::to_string(n)}});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.empty());
  CHECK(r.out.size() == expected.size());
  CHECK(r.out == expected);
}

TEST_CASE("Cli.listings_pages_and_help_are_written_whole_to_a_nonblocking_stdout") {
  // Through a pipe of one page, each of these fills it: each is written as it is to a file.
  support::TempDir data;
  const fs::path trace = data.path / "run.trace";
  REQUIRE(cli({"run", "--trace", trace.string(), "add", "1", "2"}).status == 0);
  const std::vector<Call> calls = {
      {.args = {"list"}},
      {.args = {"list", "--json"}},
      {.args = {"report", trace.string(), "-o", "-"}},
      {.args = {"map", "--help"}, .defaults = false},
      {.args = {"run", "--help"}, .defaults = false},
  };
  // A page's nonce is new every time: the same here.
  const std::regex nonce("nonce(-|=\")[0-9a-f]{32}");
  auto same_nonce = [&](const std::string& text) { return std::regex_replace(text, nonce, "nonce$1N"); };
  for (const auto& call : calls) {
    CAPTURE(call.args);
    Result whole = cli(call);
    REQUIRE(whole.status == 0);
    REQUIRE(whole.out.size() > 4096);
    Result r = cli_to_a_nonblocking_pipe(call, 4096);
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(r.out.size() == whole.out.size());
    CHECK(same_nonce(r.out) == same_nonce(whole.out));
  }
}

// ---- containment -------------------------------------------------------------------------------

namespace {

/// A stand-in ferry-worker that writes its command line, one argument per line, to a file and
/// exits 1 (so ferry ends with BrokenProcessPool): what ferry asked of its workers, seen without
/// enforcing anything.
struct ArgsWorker {
  support::TempDir dir;
  fs::path program = dir.path / "ferry-worker";
  fs::path file = dir.path / "args";

  ArgsWorker() {
    write_file(program, "#!/bin/sh\nprintf '%s\\n' \"$@\" > '" + file.string() + "'\nexit 1\n");
    fs::permissions(program, fs::perms(0755), fs::perm_options::replace);
  }
  bool started() const { return fs::exists(file); }
  std::vector<std::string> args() const { return lines_of(read_file(file)); }
  /// The values following each `flag` in the worker's arguments.
  std::vector<std::string> values(std::string_view flag) const {
    std::vector<std::string> out, a = args();
    for (std::size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == flag) out.push_back(a[i + 1]);
    return out;
  }
  /// ferry with this worker: `args` after the global options, `input` on stdin.
  Result run(std::vector<std::string> args, std::string input = {}) const {
    std::vector<std::string> all = {"--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker",
                                    program.string()};
    all.insert(all.end(), args.begin(), args.end());
    return cli(Call{.args = all, .input = std::move(input), .defaults = false});
  }
};

/// `args` for `ferry run` or `ferry map` of the task add (map reads [1, 2] on stdin, one worker).
std::vector<std::string> add_command(const std::string& command, std::vector<std::string> options) {
  std::vector<std::string> args = {command};
  if (command == "map") args.insert(args.end(), {"-j", "1"});
  args.insert(args.end(), options.begin(), options.end());
  args.push_back("add");
  if (command == "run") args.insert(args.end(), {"1", "2"});
  return args;
}

}  // namespace

TEST_CASE("Cli.run.sandbox_options_reach_the_executor") {
  support::TempDir readable, also_readable, writable;
  for (std::string command : {"run", "map"}) {
    CAPTURE(command);
    {
      // The repeatable --read and --write take one DIR each: TASK after them stays TASK.
      ArgsWorker worker;
      Result r = worker.run(add_command(command, {"--sandbox", "--allow-network", "--allow-exec",
                                                  "--best-effort", "--read", readable.path.string(),
                                                  "--read", also_readable.path.string(), "--write",
                                                  writable.path.string(), "--memory", "64M", "--cpu",
                                                  "2m", "--open-files", "100", "--processes", "8",
                                                  "--file-size", "1G"}),
                            "[1, 2]\n");
      CHECK_MESSAGE(r.status == 4, r.err);  // the stand-in worker never says hello
      CHECK(r.err.find("BrokenProcessPool") != std::string::npos);
      REQUIRE_MESSAGE(worker.started(), r.err);
      CHECK(worker.values("--limits") ==
            std::vector<std::string>{"67108864,120,100,8,1073741824"});
      CHECK(worker.values("--sandbox") == std::vector<std::string>{"7"});  // network, exec, best effort
      auto read = worker.values("--read");
      CHECK(std::count(read.begin(), read.end(), readable.path.string()) == 1);
      CHECK(std::count(read.begin(), read.end(), also_readable.path.string()) == 1);
      CHECK(worker.values("--write") == std::vector<std::string>{writable.path.string()});
    }
    {
      // Sandbox flags off by default; a relative --read is made absolute.
      ArgsWorker worker;
      Result r = worker.run(add_command(command, {"--sandbox", "--best-effort", "--read", "."}),
                            "[1, 2]\n");
      REQUIRE_MESSAGE(worker.started(), r.err);
      CHECK(worker.values("--sandbox") == std::vector<std::string>{"4"});
      auto read = worker.values("--read");
      CHECK(std::count(read.begin(), read.end(), fs::current_path().string()) == 1);
    }
    {
      // Nothing asked: no containment arguments at all.
      ArgsWorker worker;
      Result r = worker.run(add_command(command, {}), "[1, 2]\n");
      REQUIRE_MESSAGE(worker.started(), r.err);
      CHECK(worker.values("--limits").empty());
      CHECK(worker.values("--sandbox").empty());
      CHECK(worker.values("--read").empty());
    }
  }
}

TEST_CASE("Cli.run.sizes_and_durations_are_parsed") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--memory", "123"}, "123,0,0,0,0"},
      {{"--memory", "1024K"}, "1048576,0,0,0,0"},
      {{"--memory", "512M"}, "536870912,0,0,0,0"},
      {{"--memory", "2G"}, "2147483648,0,0,0,0"},
      {{"--memory", "1T"}, "1099511627776,0,0,0,0"},
      {{"--memory", "3k"}, "3072,0,0,0,0"},
      {{"--memory", "1KiB"}, "1024,0,0,0,0"},
      {{"--memory", "5MiB"}, "5242880,0,0,0,0"},
      {{"--memory", "4GiB"}, "4294967296,0,0,0,0"},
      {{"--cpu", "45"}, "0,45,0,0,0"},
      {{"--cpu", "10s"}, "0,10,0,0,0"},
      {{"--cpu", "2m"}, "0,120,0,0,0"},
      {{"--cpu", "1h"}, "0,3600,0,0,0"},
      {{"--open-files", "64"}, "0,0,64,0,0"},
      {{"--file-size", "10M"}, "0,0,0,0,10485760"},
      {{"--memory", "1G", "--cpu", "1s", "--open-files", "32", "--file-size", "1"},
       "1073741824,1,32,0,1"},
  };
  for (const auto& [options, limits] : cases) {
    CAPTURE(options.front());
    CAPTURE(options[1]);
    ArgsWorker worker;
    Result r = worker.run(add_command("run", options));
    REQUIRE_MESSAGE(worker.started(), r.err);
    CHECK(worker.values("--limits") == std::vector<std::string>{limits});
  }
}

TEST_CASE("Cli.run.bad_sizes_and_durations_are_usage_errors") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--memory", "12X"},   {"--memory", "0"},      {"--memory", "-1"},  {"--memory", "1.5G"},
      {"--memory", "M"},     {"--memory", "10KB"},   {"--memory", "1 G"}, {"--memory", ""},
      {"--memory", "99999999999T"},                  {"--memory", "99999999999999999999"},
      {"--file-size", "1Q"}, {"--file-size", "0K"},  {"--cpu", "0"},      {"--cpu", "1.5s"},
      {"--cpu", "10ms"},     {"--cpu", "2d"},        {"--cpu", "-5"},     {"--cpu", "s"},
      {"--cpu", "0m"},       {"--open-files", "0"},  {"--open-files", "ten"},
      {"--processes", "3x"}, {"--processes", "-2"},
  };
  for (const auto& [option, value] : cases) {
    CAPTURE(option);
    CAPTURE(value);
    for (std::string command : {"run", "map"}) {
      ArgsWorker worker;
      Result r = worker.run(add_command(command, {option, value}), "[1, 2]\n");
      CHECK(r.status == 2);
      CHECK(r.err.find(option + ":") != std::string::npos);
      CHECK_MESSAGE(r.err.find("'" + value + "'") != std::string::npos, r.err);
      CHECK(!worker.started());  // refused before any worker starts
    }
  }
  // The messages say what is expected.
  ArgsWorker worker;
  CHECK(worker.run(add_command("run", {"--memory", "1.5G"})).err.find("K, M, G or T") !=
        std::string::npos);
  CHECK(worker.run(add_command("run", {"--cpu", "10ms"})).err.find("s, m or h") !=
        std::string::npos);
  CHECK(worker.run(add_command("run", {"--memory", "0"})).err.find("leave the option out") !=
        std::string::npos);
}

TEST_CASE("Cli.run.read_without_sandbox_is_a_usage_error") {
  support::TempDir dir;
  const std::vector<std::vector<std::string>> cases = {{"--read", dir.path.string()},
                                                       {"--write", dir.path.string()},
                                                       {"--allow-network"},
                                                       {"--allow-exec"},
                                                       {"--best-effort"}};
  for (const auto& options : cases) {
    CAPTURE(options.front());
    for (std::string command : {"run", "map"}) {
      ArgsWorker worker;
      Result r = worker.run(add_command(command, options), "[1, 2]\n");
      CHECK(r.status == 2);
      CHECK_MESSAGE(r.err.find(options.front() + " needs --sandbox") != std::string::npos, r.err);
      CHECK(!worker.started());
      // ...and with --sandbox the same options are accepted.
      std::vector<std::string> with = options;
      with.insert(with.begin(), "--sandbox");
      if (options.front() != "--best-effort") with.push_back("--best-effort");
      ArgsWorker accepted;
      Result ok = accepted.run(add_command(command, with), "[1, 2]\n");
      CHECK_MESSAGE(accepted.started(), ok.err);
    }
  }
  // A path that does not exist is refused too, by name.
  ArgsWorker worker;
  Result r = worker.run(add_command("run", {"--sandbox", "--read", (dir.path / "nope").string()}));
  CHECK(r.status == 2);
  CHECK(r.err.find("--read: no such file or directory") != std::string::npos);
  CHECK(!worker.started());
}

TEST_CASE("Cli.run.memory_limit_still_runs_a_normal_task") {
  // Limits are passed to the workers; that they are enforced is test_containment's business.
  Result r = cli({"run", "--memory", "64M", "add", "40", "2"});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == "42\n");
  Result all = cli({"run", "--memory", "256M", "--cpu", "1m", "--open-files", "256", "--file-size",
                    "16M", "add", "1", "1"});
  CHECK_MESSAGE(all.status == 0, all.err);
  CHECK(all.out == "2\n");
  Result map = cli({"map", "--memory", "256M", "--cpu", "30s", "square"}, "1\n2\n3\n");
  CHECK_MESSAGE(map.status == 0, map.err);
  CHECK(map.out == "1\n4\n9\n");
}

TEST_CASE("Cli.run.best_effort_sandbox_still_runs_a_normal_task") {
  Result r = cli({"run", "--sandbox", "--best-effort", "add", "40", "2"});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == "42\n");
  Result map = cli({"map", "--sandbox", "--best-effort", "square"}, "1\n2\n3\n");
  CHECK_MESSAGE(map.status == 0, map.err);
  CHECK(map.out == "1\n4\n9\n");
}

TEST_CASE("Cli.info.json_has_the_containment_keys") {
  Result json = cli({"info", "--json"});
  CHECK(json.status == 0);
  const std::string keys[][2] = {{"descendants", "\"[^\"]+\""},
                                 {"processes", "\"[^\"]+\""},
                                 {"memory", "\"[^\"]+\""},
                                 {"landlock_abi", "[0-9]+"},
                                 {"seccomp", "(true|false)"},
                                 {"user_namespaces", "(true|false)"},
                                 {"network_namespace", "(true|false)"},
                                 {"pids_cgroup", "(true|false)"},
                                 {"memory_cgroup", "(true|false)"},
                                 {"root", "(true|false)"}};
  std::smatch section;
  REQUIRE_MESSAGE(std::regex_search(json.out, section, std::regex("\"containment\":\\{[^{}]*\\}")),
                  json.out);
  const std::string containment = section.str();
  for (const auto& [key, value] : keys)
    CHECK_MESSAGE(std::regex_search(containment, std::regex("[{,]\"" + key + "\":" + value + "[,}]")),
                  key);

  // The text has the section, a line per fact.
  Result text = cli({"info"});
  CHECK(text.status == 0);
  const std::string facts[] = {"descendants", "processes limit", "memory limit", "Landlock ABI",
                               "seccomp", "user namespaces", "network namespace", "pids cgroup",
                               "memory cgroup", "root"};
  auto lines = lines_of(text.out);
  auto start = std::find(lines.begin(), lines.end(), "containment");
  REQUIRE_MESSAGE(start != lines.end(), text.out);
  for (const auto& f : facts)
    CHECK_MESSAGE(std::any_of(start, lines.end(),
                              [&](const std::string& l) { return l.rfind("  " + f + " ", 0) == 0; }),
                  f);
}

TEST_CASE("Cli.info.names_where_the_private_directory_is_made_and_why_not_under_TMPDIR") {
  // A $TMPDIR another user could change is passed over for /tmp (the sandbox's private directory
  // could be swapped there): said only under FERRY_DEBUG before, so a user whose TMPDIR was not
  // taken could not tell why.
  support::TempDir own, open;
  fs::permissions(own.path, fs::perms(0700), fs::perm_options::replace);
  fs::permissions(open.path, fs::perms(0777), fs::perm_options::replace);  // not sticky
  auto line_of = [](const Result& r) {
    for (const auto& l : lines_of(r.out))
      if (l.rfind("  private directory ", 0) == 0) return l;
    return std::string();
  };
  Result taken = cli(Call{.args = {"info"}, .env = {{"TMPDIR", own.path.string()}}});
  CHECK(taken.status == 0);
  CHECK_MESSAGE(line_of(taken) == "  private directory  " + own.path.string(), taken.out);
  Result passed_over = cli(Call{.args = {"info"}, .env = {{"TMPDIR", open.path.string()}}});
  const std::string line = line_of(passed_over);
  CHECK_MESSAGE(line.rfind("  private directory  /tmp  (not $TMPDIR " + open.path.string() + ": ", 0) == 0,
                passed_over.out);
  CHECK_MESSAGE(line.find("writable") != std::string::npos, line);

  Result json = cli(Call{.args = {"info", "--json"}, .env = {{"TMPDIR", open.path.string()}}});
  CHECK(json.status == 0);
  CHECK_MESSAGE(std::regex_search(json.out, std::regex("\"private_directory\":\\{\"base\":\"/tmp\","
                                                       "\"tmpdir_refused\":\"[^\"]+\",\"error\":null\\}")),
                json.out);
  Result own_json = cli(Call{.args = {"info", "--json"}, .env = {{"TMPDIR", own.path.string()}}});
  CHECK_MESSAGE(own_json.out.find("\"private_directory\":{\"base\":\"" + own.path.string() +
                                  "\",\"tmpdir_refused\":null,\"error\":null}") != std::string::npos,
                own_json.out);
}

// ---- --initializer -----------------------------------------------------------------------------

TEST_CASE("Cli.run.initializer_sets_up_the_workers_state") {
  // The model plugin: load_model(name, size) once per worker, predict(x) uses the model.
  Result r = cli({"run", "--initializer", "load_model", "--initarg", "\"cli\"", "--initarg", "3", "predict", "3.0"});
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == "5.5\n");
  // Without it, the task says no model was loaded.
  Result none = cli({"run", "predict", "3.0"});
  CHECK(none.status == 1);
  CHECK(none.err.find("no model loaded") != std::string::npos);
}

TEST_CASE("Cli.map.initializer_runs_once_in_every_worker") {
  Result r = cli({"map", "-j", "2", "--chunksize", "1", "--no-progress", "--initializer", "load_model",
                  "--initarg", "\"mapped\"", "--initarg", "2", "describe_model"},
                 [] {
                   std::string empty_arrays;  // describe_model takes no argument: [] per line
                   for (int i = 0; i < 40; ++i) empty_arrays += "[]\n";
                   return empty_arrays;
                 }());
  REQUIRE_MESSAGE(r.status == 0, r.err);
  auto lines = lines_of(r.out);
  CHECK(lines.size() == 40);
  // model::Description {pid, name, size, loads}: the model each worker loaded, once.
  for (const auto& l : lines) {
    CAPTURE(l);
    CHECK(l.find(R"("value1":"mapped","value2":2,"value3":1})") != std::string::npos);
  }
}

TEST_CASE("Cli.run.initializer_errors") {
  SUBCASE("an argument short: a usage error naming the signature") {
    Result r = cli({"run", "--initializer", "load_model", "--initarg", "\"x\"", "predict", "1.0"});
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.err.find("initializer 'load_model' takes 2 arguments (void(string,i32)), got 1") !=
                      std::string::npos,
                  r.err);
  }
  SUBCASE("an --initarg that is not JSON") {
    Result r = cli({"run", "--initializer", "load_model", "--initarg", "x", "--initarg", "1", "predict", "1.0"});
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.err.find("--initarg 1 is not valid JSON") != std::string::npos, r.err);
  }
  SUBCASE("--initarg without --initializer") {
    Result r = cli({"run", "--initarg", "1", "predict", "1.0"});
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.err.find("--initarg needs --initializer") != std::string::npos, r.err);
  }
  SUBCASE("--initializer-timeout without --initializer") {
    Result r = cli({"run", "--initializer-timeout", "1", "predict", "1.0"});
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.err.find("--initializer-timeout needs --initializer") != std::string::npos, r.err);
  }
  SUBCASE("an initializer past its --initializer-timeout: the pool could not start a worker") {
    support::TempDir dir;
    const auto hold = dir.path / "hold";
    std::ofstream(hold).put('x');
    Result r = cli({"run", "--initializer", "wait_while_exists", "--initarg", "\"" + hold.string() + "\"",
                    "--initializer-timeout", "0.2", "busy_for", "1"});
    std::filesystem::remove(hold);
    CHECK(r.status == 4);
    CHECK_MESSAGE(r.err.find("did not finish its initializer within 200 ms") != std::string::npos, r.err);
  }
  SUBCASE("no such initializer") {
    Result r = cli({"map", "--initializer", "nope", "square"}, numbers(3));
    CHECK(r.status == 3);
    CHECK_MESSAGE(r.err.find("'nope'") != std::string::npos, r.err);
  }
  SUBCASE("an argument of the wrong type: the worker's decoding refuses it") {
    Result r = cli({"run", "--initializer", "load_model", "--initarg", "1", "--initarg", "2", "predict", "1.0"});
    CHECK(r.status == 4);
    CHECK_MESSAGE(r.err.find("BrokenProcessPool") != std::string::npos, r.err);
    CHECK(r.err.find("load_model") != std::string::npos);
  }
  SUBCASE("an initializer that fails: no task runs") {
    Result r = cli({"map", "--initializer", "load_model", "--initarg", "\"\"", "--initarg", "3", "predict"},
                   numbers(3));
    CHECK(r.status == 4);
    CHECK_MESSAGE(r.err.find("the model needs a name") != std::string::npos, r.err);
    // The pool's failure, not the first line's: "ferry map: line 1: BrokenProcessPool" blamed it.
    CHECK_MESSAGE(r.err.starts_with("ferry map: BrokenProcessPool: "), r.err);
    CHECK(r.out.empty());
  }
}

// ---- help and usage ----------------------------------------------------------------------------

TEST_CASE("Cli.help_of_each_subcommand_is_complete") {
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{}, {"--plugin-dir", "-j,--workers", "--worker", "--version", "list", "run", "map", "info",
            "cache", "  3  plugin or task lookup error", "  4  the pool could not run",
            "the output could not be written", "cache clear could not remove a file",
            "report could not write the page"}},
      {{"list"}, {"DIR", "--json", "Exit status", "  1  the output could not be written"}},
      {{"run"}, {"TASK", "ARG", "--raw", "  1  a task failed", "or the output could not be written", "  2  usage error", "  3  ", "  4  ",
                 "--sandbox", "--allow-network", "--allow-exec", "--read DIR", "--write DIR",
                 "--best-effort", "--memory SIZE", "--cpu DURATION", "--open-files N",
                 "--processes N", "--file-size SIZE", "ResourceLimitError",
                 "SandboxViolationError", "--initializer TASK", "--initarg JSON",
                 "--initializer-timeout SECONDS"}},
      {{"map"}, {"TASK", "FILE", "-j,--workers", "--chunksize", "--chunk-bytes SIZE", "--max-line-bytes SIZE",
                 "--keep-going", "--no-progress",
                 "  1  a task failed", "  2  usage error", "  3  ", "  4  ", "--sandbox",
                 "--allow-network", "--allow-exec", "--read DIR", "--write DIR", "--best-effort",
                 "--memory SIZE", "--cpu DURATION", "--open-files N", "--processes N",
                 "--file-size SIZE", "ResourceLimitError", "SandboxViolationError",
                 "--initializer TASK", "--initarg JSON"}},
      {{"info"}, {"--json", "containment", "Landlock", "Exit status", "  1  the output could not be written"}},
      {{"cache"}, {"--cache-dir", "list", "clear", "Exit status"}},
      {{"cache", "list"}, {"--cache-dir", "Exit status", "  1  the output could not be written"}},
      {{"cache", "clear"}, {"--cache-dir", "wrap-<key>*", "Exit status",
                            "  1  a file could not be removed, or the output could not be written"}},
      {{"report"}, {"TRACE", "--output", "--max-slices", "  1  the report could not be written"}},
  };
  for (const auto& [command, expected] : cases) {
    std::vector<std::string> args = command;
    args.push_back("--help");
    Result r = cli(Call{.args = args, .defaults = false});
    CAPTURE(r.out);
    CHECK(r.status == 0);
    CHECK(r.out.find("Usage: ferry") != std::string::npos);
    for (const auto& e : expected) CHECK_MESSAGE(r.out.find(e) != std::string::npos, e);
  }
}

TEST_CASE("Cli.help_that_cannot_be_written_is_lost_output") {
  // `ferry --help > /dev/full` and `ferry map --help > /dev/full` exited 0: CLI11 prints the help
  // on std::cout, and nothing looked at whether it arrived.
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--help"}, "ferry: "},
      {{"map", "--help"}, "ferry map: "},
      {{"cache", "list", "--help"}, "ferry cache list: "},
      {{"--version"}, "ferry: "},
  };
  for (const auto& [args, who] : cases) {
    CAPTURE(args);
    if (fs::exists("/dev/full")) {
      support::TempDir dir;
      fs::create_symlink("/dev/full", dir.path / "stdout");
      Child child = spawn(Call{.args = args, .defaults = false}, dir.path);
      CHECK(wait_status(child.pid) == 1);
      const std::string err = read_file(dir.path / "stderr");
      CHECK_MESSAGE(err.find(who + "cannot write the output: No space left on device") != std::string::npos, err);
    }
    Result closed = cli_redirected(Call{.args = args, .defaults = false}, ">&-");
    CHECK(closed.status == 1);
    CHECK_MESSAGE(closed.err.find(who + "cannot write the output: Bad file descriptor") != std::string::npos,
                  closed.err);
  }
}

TEST_CASE("Cli.version_and_usage_errors") {
  Result v = cli(Call{.args = {"--version"}, .defaults = false});
  CHECK(v.status == 0);
  CHECK(v.out == std::string("ferry ") + ferry::version() + "\n");

  CHECK(cli(Call{.args = {}, .defaults = false}).status == 2);            // no subcommand
  CHECK(cli(Call{.args = {"frobnicate"}, .defaults = false}).status == 2);
  CHECK(cli({"map"}).status == 2);                                        // no TASK
  CHECK(cli({"map", "--chunksize", "0", "square"}).status == 2);
  CHECK(cli({"info", "extra"}).status == 2);
  Result unknown = cli({"list", "--bogus"});
  CHECK(unknown.status == 2);
  CHECK(unknown.err.find("--bogus") != std::string::npos);
}

TEST_CASE("Cli.an_unknown_subcommand_is_named") {
  // `ferry lsit` said only "A subcommand is required", as if none had been given.
  Result top = cli(Call{.args = {"lsit"}, .defaults = false});
  CHECK(top.status == 2);
  CHECK_MESSAGE(top.err.find("ferry: unknown subcommand 'lsit' (list, run, map, info, cache, report)") !=
                    std::string::npos,
                top.err);
  Result cache = cli(Call{.args = {"cache", "lsit"}, .defaults = false});
  CHECK(cache.status == 2);
  CHECK_MESSAGE(cache.err.find("ferry cache: unknown subcommand 'lsit' (list, clear)") != std::string::npos,
                cache.err);
  // Still the plain message when none was given.
  Result none = cli(Call{.args = {"cache"}, .defaults = false});
  CHECK(none.status == 2);
  CHECK(none.err.find("A subcommand is required") != std::string::npos);
}

TEST_CASE("Cli.a_worker_that_cannot_start_names_the_option_to_give") {
  // The library's advice named ExecutorOptions::worker_path, which a shell user has no way to set.
  Result r = cli(Call{.args = {"--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker", "/nonexistent/ferry-worker", "run",
                                "add", "1", "2"},
                      .defaults = false});
  CHECK(r.status == 4);
  CHECK_MESSAGE(r.err.find("Give --worker PATH or set FERRY_WORKER to a ferry-worker executable") != std::string::npos,
                r.err);
  CHECK(r.err.find("ExecutorOptions") == std::string::npos);
}

TEST_CASE("Cli.usage_errors_name_their_command") {
  // CLI11's own usage errors (an option it refuses, a missing argument) were printed as CLI11
  // words them, "TASK is required", "--memory: 'abc' is not a size...", and arguments nobody
  // takes as "ferry: unexpected arguments" whichever subcommand they were given to: every other
  // message of the command starts "ferry <command>: ".
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"run"}, "ferry run: TASK is required"},
      {{"map"}, "ferry map: TASK is required"},
      {{"report"}, "ferry report: TRACE is required"},
      {{"run", "--memory", "abc", "add", "1", "2"}, "ferry run: --memory: 'abc' is not a size"},
      {{"run", "--memory"}, "ferry run: --memory: 1 required SIZE missing"},
      {{"map", "--chunksize", "0", "square"}, "ferry map: --chunksize: '0' is not in the range 1 to 1048576"},
      {{"report", "--max-slices", "0", "t.json"}, "ferry report: --max-slices: '0' is not in the range 1 to "},
      {{"-j", "x", "list"}, "ferry list: --workers: 'x' is not a whole number (0 to 4096)"},
      {{"map", "-j", "-1", "square"}, "ferry map: --workers: '-1' is not a whole number (0 to 4096)"},
      {{"list", "--bogus"}, "ferry list: unexpected arguments: --bogus"},
      {{"info", "extra"}, "ferry info: unexpected arguments: extra"},
      {{"cache", "list", "--bogus"}, "ferry cache list: unexpected arguments: --bogus"},
      {{"cache"}, "ferry cache: A subcommand is required"},
      {{}, "ferry: A subcommand is required"},
      // What nobody took is named too: it was dropped without a word ("ferry --bogus" said only
      // that a subcommand is required).
      {{"--bogus"}, "ferry: A subcommand is required; unexpected arguments: --bogus"},
      {{"cache", "--bogus"}, "ferry cache: A subcommand is required; unexpected arguments: --bogus"},
      {{"run", "--bogus"}, "ferry run: TASK is required; unexpected arguments: --bogus"},
  };
  // run's ARGs are no unexpected arguments.
  Result with_args = cli({"run", "--memory", "abc", "add", "1", "2"});
  CHECK(with_args.status == 2);
  CHECK_MESSAGE(with_args.err.find("unexpected") == std::string::npos, with_args.err);
  for (const auto& [args, first] : cases) {
    CAPTURE(args);
    Result r = cli(Call{.args = args});
    CHECK(r.status == 2);
    const std::vector<std::string> lines = lines_of(r.err);
    REQUIRE(lines.size() == 2);
    CHECK_MESSAGE(lines[0].starts_with(first), lines[0]);
    CHECK(lines[1] == "Run with --help for more information.");
  }
}

TEST_CASE("Cli.map.starts_no_more_workers_than_chunks") {
  // `ferry map -j 8` of two lines started 8 workers (cpu_count() of them without -j: 128 for one
  // line on a large machine), each loading the plugin, for 2 calls.
  support::TempDir dir;
  write_file(dir.path / "in.jsonl", "1\n2\n");
  auto started = [&](std::vector<std::string> options, bool pipe = false) {
    const fs::path trace = dir.path / "trace.json";
    std::vector<std::string> args = {"map", "-j", "8", "--no-progress", "--trace", trace.string()};
    args.insert(args.end(), options.begin(), options.end());
    args.push_back("square");
    if (!pipe) args.push_back((dir.path / "in.jsonl").string());
    Result r = cli(args, pipe ? "1\n2\n" : "", pipe);
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(r.out == "1\n4\n");
    const support::TraceFile file = support::read_trace(trace);
    const auto stats = file.named("stats");
    REQUIRE(stats.size() == 1);
    return support::arg_u64(*stats.front(), "workers_started");
  };
  CHECK(started({}) == 2);                    // a line a chunk
  CHECK(started({"--chunksize", "2"}) == 1);  // one chunk
  // Of a pipe, the lines are counted when the input ends within what is read ahead.
  CHECK(started({}, /*pipe=*/true) == 2);
}

TEST_CASE("Cli.nan_and_infinity_are_written_and_read_as_cereal_writes_them") {
  // Not JSON (RFC 8259 has no such numbers) but cereal's archive and Python's json module: the
  // README says so, for users of strict parsers.
  Result inf = cli({"run", "sum", "[1e308, 1e308]"});
  CHECK(inf.status == 0);
  CHECK(inf.out == "Infinity\n");
  Result nan = cli({"map", "--no-progress", "sum"}, "[[Infinity, -Infinity]]\n[[-Infinity]]\n");
  CHECK(nan.status == 0);
  CHECK(nan.out == "NaN\n-Infinity\n");
}

TEST_CASE("Cli.list.a_plugin_dir_that_is_no_directory_is_a_usage_error") {
  // As `ferry list DIR` says: `--plugin-dir` with a typo listed an empty table, exit status 0.
  support::TempDir dir;
  Result missing = cli(Call{.args = {"--plugin-dir", (dir.path / "nope").string(), "list"}, .defaults = false});
  CHECK(missing.status == 2);
  CHECK_MESSAGE(missing.err.find("ferry list: not a directory: " + (dir.path / "nope").string()) != std::string::npos,
                missing.err);
  CHECK(missing.out.empty());
  // $FERRY_PLUGIN_PATH is a search path: a missing entry there is skipped and said, as before.
  Result path = cli(Call{.args = {"list"},
                         .env = {{"FERRY_PLUGIN_PATH", (dir.path / "nope").string() + ":" + FERRY_TEST_PLUGIN_DIR}},
                         .defaults = false});
  CHECK(path.status == 0);
  CHECK(path.out.find("square") != std::string::npos);
  CHECK(path.err.find("skipped") != std::string::npos);
}

TEST_CASE("Cli.list.a_plugin_dir_that_cannot_be_read_is_an_error") {
  // `ferry list DIR` of a directory its user cannot read printed an empty table with exit status
  // 0 (a script took it for a directory without plugins). Root reads every directory: as root,
  // a child becomes nobody, and the directory is root's, mode 0700.
  support::TempDir dir;        // nobody's: the child writes ferry's output there
  support::TempDir forbidden;  // root's (or, not as root, made unreadable)
  if (::geteuid() == 0) {
    REQUIRE(::chown(dir.path.c_str(), 65534, 65534) == 0);
  } else {
    REQUIRE(::chmod(forbidden.path.c_str(), 0) == 0);
  }
  const int code = support::exit_code_of_child(
      [&] {
        if (!support::become_another_user()) return 90;
        if (::access(FERRY_TEST_CLI, X_OK) != 0) return 77;
        Result r = support::run({FERRY_TEST_CLI, "list", forbidden.path.string()}, dir.path, options_of(Call{}));
        const std::string said = "ferry list: cannot read directory " + forbidden.path.string() + ": Permission denied";
        if (r.status == 2 && r.out.empty() && r.err.find(said) != std::string::npos) return 0;
        std::fprintf(stderr, "status %d, stdout: %s, stderr: %s\n", r.status, r.out.c_str(), r.err.c_str());
        return 1;
      },
      std::chrono::seconds(60));
  if (code == 77) {
    MESSAGE("nobody cannot run this build's ferry here (a private directory): not tested here");
    return;
  }
  CHECK_MESSAGE(code == 0, "child exit code " << code << " (its stderr says why)");
}

TEST_CASE("Cli.run_raw_prints_one_printable_json_object") {
  // --raw printed the worker's result line unchecked: a plugin's entry point writes its own line,
  // and what followed the object (an OSC 52 that sets the clipboard, a carriage return and text
  // over the line) reached the terminal; a plain task's string printed its C1 and bidirectional
  // controls and DEL raw. The line is one JSON object now, printable as every line ferry prints.
  Result r = cli({"run", "--raw", "greet", "\"\\u009d\\u202e\\u007f\""});
  CHECK(r.status == 0);
  CHECK(r.out == "{\"value0\":\"hello, \\u009d\\u202e\\u007f\"}\n");
  auto raw_task = [](const std::string& task) {
    return cli(Call{.args = {"--plugin-dir", FERRY_TEST_RAW_RESULT_DIR, "--worker", FERRY_TEST_WORKER, "run", "--raw", task},
                    .defaults = false});
  };
  // Text after the object: refused, quoted escaped on stderr, nothing on stdout.
  Result trailing = raw_task("trailing_escape");
  CHECK(trailing.status == 1);
  CHECK(trailing.out.empty());
  CHECK_MESSAGE(trailing.err.find("ferry run: the worker's result is not a JSON object (") != std::string::npos, trailing.err);
  CHECK_MESSAGE(trailing.err.find("\\x1b]52;c;") != std::string::npos, trailing.err);
  CHECK(trailing.err.find('\x1b') == std::string::npos);
  CHECK(trailing.err.find('\x07') == std::string::npos);
  CHECK(trailing.err.find('\r') == std::string::npos);
  // A JSON value that is no object: refused too.
  Result array = raw_task("array_line");
  CHECK(array.status == 1);
  CHECK(array.out.empty());
  CHECK_MESSAGE(array.err.find("the worker's result is not a JSON object (another value): [1,2]") != std::string::npos,
                array.err);
  // An object with a carriage return between its tokens: printed compact, without it.
  Result spaced = raw_task("spaced_line");
  CHECK_MESSAGE(spaced.status == 0, spaced.err);
  CHECK(spaced.out == "{\"value0\":\"x\"}\n");
}

TEST_CASE("Cli.run.a_hostile_exception_type_is_escaped_once") {
  // TaskError::what() shows a task's type and message as text (\x1b); the command escapes what it
  // prints: a hostile type showed as \\x1b. Type and message are put back as sent, then escaped
  // once; a backslash in the message is \\ as always, its lines indented.
  Result r = cli(Call{.args = {"--plugin-dir", FERRY_TEST_RAW_RESULT_DIR, "--worker", FERRY_TEST_WORKER, "run", "hostile_type"},
                      .defaults = false});
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("raised Evil\\x1b]0;owned\\x07 in worker ") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find(": two\\\\lines\n    second") != std::string::npos, r.err);
  CHECK(r.err.find('\x1b') == std::string::npos);
}
