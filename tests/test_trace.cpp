// SPDX-License-Identifier: BSD-3-Clause
// The trace file (issue 15, item 2): docs/trace-format.md, written as it goes and bounded, created
// without following a link, from the library, FERRY_TRACE and `ferry run/map --trace`.
#include <doctest/doctest.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "crash.hpp"
#include "host/trace.hpp"
#include "math.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "support/trace_file.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using support::arg_str;
using support::arg_u64;
using support::has_arg;
using support::read_file;
using support::read_trace;
using support::str;
using support::TraceFile;

namespace {

/// Whatever encodes it throws: a submission with it fails in the host, before the queue.
struct Unencodable {
  template <class Archive>
  void serialize(Archive&) {
    throw std::runtime_error("cannot encode this");
  }
};

ferry::ExecutorOptions traced(const fs::path& file, std::size_t workers = 2) {
  auto o = support::options(workers);
  o.trace = file;
  return o;
}

/// The regular files this process has open for writing (a trace is one, from the executor's
/// construction to its end), by the paths /proc shows, sorted, one a line. Not memfds: the pool's
/// shared-memory payloads keep some open between executors.
std::string files_open_for_writing() {
  std::multiset<std::string> paths;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const int flags = ::fcntl(std::stoi(e.path().filename().string()), F_GETFL);
    std::error_code ec;
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY) continue;
    std::string path = fs::read_symlink(e.path(), ec).string();
    if (path.rfind("/memfd:", 0) != 0) paths.insert(std::move(path));
  }
  std::string out;
  for (const auto& p : paths) out += p + "\n";
  return out;
}

/// What every trace holds, however it ended: "[" first, whole event lines, the header.
void check_well_formed(const TraceFile& t) {
  CHECK(t.opened);
  CHECK(t.bad_lines == 0);
  REQUIRE(t.events.size() >= 2);
  CHECK(str(*t.events[0], "name") == "process_name");
  CHECK(str(*t.events[1], "name") == "ferry");
  CHECK(arg_u64(*t.events[1], "version") == 1);
  CHECK(arg_str(*t.events[1], "backend") == "local");
  const auto pid = static_cast<std::uint64_t>((*t.events[0])["pid"].GetInt64());
  for (const auto& e : t.events) CHECK(static_cast<std::uint64_t>((*e)["pid"].GetInt64()) == pid);
}

/// A cleanly closed trace: a JSON array whose last event is the stats.
void check_closed(const TraceFile& t) {
  check_well_formed(t);
  CHECK(t.closed);
  CHECK_FALSE(t.partial_tail);
  CHECK(t.is_json_array());
  CHECK(str(*t.events.back(), "name") == "stats");
}

/// Every call has a queue begin, a queue end and exactly one ending: a slice on a named worker
/// track, or a `call ended` on track 0. Returns the endings by call id.
std::map<std::uint64_t, const support::rj::Value*> check_every_call_ends_once(const TraceFile& t) {
  std::set<std::uint64_t> named_tracks;
  for (const auto* m : t.named("thread_name", "M")) named_tracks.insert(support::tid(*m));
  std::map<std::uint64_t, int> begins, ends;
  std::map<std::uint64_t, double> begin_ts, end_ts;
  for (const auto* b : t.phase("b")) {
    ++begins[(*b)["id"].GetUint64()];
    begin_ts[(*b)["id"].GetUint64()] = support::ts(*b);
    CHECK(support::tid(*b) == 0);
  }
  for (const auto* e : t.phase("e")) {
    ++ends[(*e)["id"].GetUint64()];
    end_ts[(*e)["id"].GetUint64()] = support::ts(*e);
  }
  std::map<std::uint64_t, const support::rj::Value*> ending;
  std::map<std::uint64_t, int> endings;
  for (const auto* x : t.phase("X")) {
    const auto call = arg_u64(*x, "call");
    ++endings[call];
    ending[call] = x;
    CHECK(str(*x, "cat") == "task");
    CHECK(named_tracks.count(support::tid(*x)) == 1);
    CHECK((*x)["dur"].GetDouble() >= 0);
    CHECK(end_ts[call] == support::ts(*x));  // the queue wait ends where the slice starts
  }
  for (const auto* c : t.named("call ended", "i")) {
    const auto call = arg_u64(*c, "call");
    ++endings[call];
    ending[call] = c;
    CHECK(support::tid(*c) == 0);
    CHECK_FALSE(arg_str(*c, "error").empty());
    CHECK(end_ts[call] == support::ts(*c));
  }
  CHECK_FALSE(begins.empty());
  for (const auto& [call, n] : begins) {
    CAPTURE(call);
    CHECK(n == 1);
    CHECK(ends[call] == 1);
    CHECK(endings[call] == 1);
    CHECK(begin_ts[call] <= end_ts[call]);
  }
  CHECK(endings.size() == begins.size());
  return ending;
}

/// Slices of one worker track do not overlap: a worker runs one call at a time.
void check_tracks_run_one_call_at_a_time(const TraceFile& t) {
  std::map<std::uint64_t, std::vector<std::pair<double, double>>> by_track;
  for (const auto* x : t.phase("X"))
    by_track[support::tid(*x)].emplace_back(support::ts(*x), support::ts(*x) + (*x)["dur"].GetDouble());
  for (auto& [track, slices] : by_track) {
    std::sort(slices.begin(), slices.end());
    for (std::size_t i = 1; i < slices.size(); ++i) {
      CAPTURE(track);
      CHECK(slices[i].first >= slices[i - 1].second - 1.0);
    }
  }
}

const support::rj::Value* stats_event(const TraceFile& t) {
  auto s = t.named("stats", "i");
  return s.size() == 1 ? s.front() : nullptr;
}

std::size_t count_crashes(const TraceFile& t, const std::string& reason_part, const std::string& error) {
  std::size_t n = 0;
  for (const auto* c : t.named("worker crash", "i"))
    if (arg_str(*c, "reason").find(reason_part) != std::string::npos && arg_str(*c, "error") == error) ++n;
  return n;
}

std::size_t count_exits(const TraceFile& t, const std::string& reason) {
  std::size_t n = 0;
  for (const auto* c : t.named("worker exit", "i"))
    if (arg_str(*c, "reason") == reason) ++n;
  return n;
}

#ifdef FERRY_TEST_CLI
using Run = support::ProcessResult;

/// Runs the ferry command with the test's worker and plugins, its output in files of `dir`.
Run ferry_cli(std::vector<std::string> args, const fs::path& dir) {
  std::vector<std::string> all = {FERRY_TEST_CLI, "--plugin-dir", FERRY_TEST_PLUGIN_DIR, "--worker",
                                  FERRY_TEST_WORKER};
  all.insert(all.end(), args.begin(), args.end());
  return support::run(all, dir);
}
#endif

/// The wait status of `child` (a host of its own, forked) once it ended; -1 when it still ran
/// after 50 s, and was killed.
int status_of_child(pid_t child) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  REQUIRE(pidfd >= 0);
  pollfd p{pidfd, POLLIN, 0};
  const int ready = ::poll(&p, 1, 50000);
  ::close(pidfd);
  if (ready <= 0) ::kill(child, SIGKILL);
  int st = 0;
  ::waitpid(child, &st, 0);
  return ready > 0 ? st : -1;
}

}  // namespace

TEST_CASE("Trace.off_writes_nothing") {
  // Where a trace that should not be there would show: a file opened for writing while the
  // executor runs (wherever its path), or a file in the working directory or $TMPDIR (where a
  // relative or a default name would land), both made an empty directory of the test's own.
  support::TempDir dir;
  support::ScopedCwd cwd(dir.path);
  support::ScopedEnv tmp("TMPDIR", dir.path.string());
  const auto before = files_open_for_writing();
  ::unsetenv("FERRY_TRACE");
  {
    auto o = support::options(2);
    o.trace_max_bytes = 1;  // not checked without a trace
    ferry::Executor ex(o);
    CHECK(ex.submit(square, 3).get() == 9);
    CHECK(ex.map(square, std::vector<int>{1, 2, 3}) == std::vector<int>({1, 4, 9}));
    CHECK(files_open_for_writing() == before);
  }
  {
    support::ScopedEnv env("FERRY_TRACE", "");  // set but empty: off
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 3).get() == 9);
    CHECK(files_open_for_writing() == before);
  }
  CHECK(fs::is_empty(dir.path));
}

TEST_CASE("Trace.every_call_has_one_slice_or_call_ended") {
  support::TempDir dir;
  const fs::path file = dir.path / "run.json";
  // One call per worker at a time: the call cancelled below waits in the host's queue.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");
  {
    ferry::Executor ex(traced(file, 2));
    std::vector<ferry::Future<int>> fs;
    for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(square, i));
    std::vector<int> in(100);
    std::iota(in.begin(), in.end(), 0);
    CHECK(ex.map(square, in, {.chunksize = 30}).size() == 100);  // 4 chunks
    CHECK_THROWS_AS(ex.submit(fail, 3).get(), ferry::TaskError);
    CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
    CHECK_THROWS_AS(ex.submit<int>("no_such_task", 1).get(), ferry::PluginError);
    CHECK_THROWS_AS(ex.submit<int>("square", Unencodable{}).get(), ferry::SerializationError);
    // A call cancelled in the queue never reaches a worker.
    ex.resize(1);
    auto busy = ex.submit(slow_identity, 1, 300);
    auto waiting = ex.submit(square, 5);
    REQUIRE(support::wait_until([&] { return busy.running(); }));
    CHECK(waiting.cancel());
    CHECK(busy.get() == 1);
    for (auto& f : fs) f.get();
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  auto ending = check_every_call_ends_once(t);
  check_tracks_run_one_call_at_a_time(t);
  CHECK(ending.size() == 20 + 4 + 4 + 2);

  std::size_t squares = 0, chunks = 0;
  for (const auto* x : t.named("square", "X")) {
    ++squares;
    CHECK(arg_u64(*x, "arg_bytes") > 0);
    CHECK(arg_u64(*x, "result_bytes") > 0);
    CHECK_FALSE(has_arg(*x, "error"));
    if (has_arg(*x, "first_input")) {
      ++chunks;
      CHECK(arg_u64(*x, "first_input") % 30 == 0);
      CHECK(arg_u64(*x, "items") == (arg_u64(*x, "first_input") == 90 ? 10 : 30));
    } else {
      CHECK(arg_u64(*x, "items") == 1);
    }
  }
  CHECK(chunks == 4);
  CHECK(squares == 20 + 4);  // the cancelled one ended on track 0
  auto failed = t.named("fail", "X");
  REQUIRE(failed.size() == 1);
  CHECK(arg_str(*failed[0], "error") == "TaskError");
  CHECK(arg_str(*failed[0], "message").find("fail: 3") != std::string::npos);
  auto crashed = t.named("segfault", "X");
  REQUIRE(crashed.size() == 1);
  CHECK(arg_str(*crashed[0], "error") == "TerminatedWorkerError");
  std::map<std::string, int> ended_by;
  for (const auto* c : t.named("call ended", "i")) ++ended_by[arg_str(*c, "error")];
  CHECK(ended_by["PluginError"] == 1);
  CHECK(ended_by["SerializationError"] == 1);
  CHECK(ended_by["CancelledError"] == 1);
  CHECK(t.named("no_such_task", "b").size() == 1);

  const auto* stats = stats_event(t);
  REQUIRE(stats);
  CHECK(arg_u64(*stats, "submitted") == 30);
  CHECK(arg_u64(*stats, "completed") == 25);
  CHECK(arg_u64(*stats, "failed") == 5);
  CHECK((*stats)["args"]["failed_by_type"]["TaskError"].GetUint64() == 1);
  CHECK((*stats)["args"]["failed_by_type"]["SerializationError"].GetUint64() == 1);
  CHECK((*stats)["args"]["recycled_by_reason"].IsObject());
  CHECK(arg_u64(*stats, "workers_alive") == 0);
  CHECK(arg_u64(*stats, "bytes_sent") > 0);
  CHECK((*stats)["args"]["uptime"].IsNumber());
  // The pool counters came back to rest.
  auto counters = t.named("pool", "C");
  REQUIRE_FALSE(counters.empty());
  CHECK(arg_u64(*counters.back(), "queued") == 0);
  CHECK(arg_u64(*counters.back(), "running") == 0);
  CHECK(arg_u64(*counters.back(), "workers") == 0);
}

TEST_CASE("Trace.one_track_per_worker_named_and_started") {
  support::TempDir dir;
  const fs::path file = dir.path / "t.json";
  std::vector<int> pids;
  {
    ferry::Executor ex(traced(file, 2));
    CHECK(ex.warm_up());
    pids = ex.worker_pids();
    CHECK(ex.submit(square, 2).get() == 4);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  auto names = t.named("thread_name", "M");
  auto starts = t.named("worker start", "i");
  REQUIRE(names.size() == 2);
  REQUIRE(starts.size() == 2);
  std::set<std::uint64_t> tracks;
  for (const auto* s : starts) {
    tracks.insert(support::tid(*s));
    const int pid = static_cast<int>(arg_u64(*s, "pid"));
    CHECK(std::find(pids.begin(), pids.end(), pid) != pids.end());
    CHECK_FALSE(arg_str(*s, "host").empty());
    CHECK_FALSE(has_arg(*s, "rank"));  // local workers have none
  }
  CHECK(tracks == std::set<std::uint64_t>({1, 2}));
  for (const auto* n : names) CHECK(arg_str(*n, "name").rfind("worker ", 0) == 0);
  CHECK(count_exits(t, "shutdown") == 2);
}

TEST_CASE("Trace.worker_crash_is_an_instant_with_its_reason") {
  support::TempDir dir;
  const fs::path file = dir.path / "crash.json";
  {
    ferry::Executor ex(traced(file, 1));
    CHECK_THROWS_AS(ex.submit(segfault, 1).get(), ferry::TerminatedWorkerError);
    CHECK_THROWS_AS(ex.submit(exit_with, 3).get(), ferry::TerminatedWorkerError);
    CHECK_THROWS_AS(ex.submit_with({.deadline = 100ms}, spin_forever, 1).get(), ferry::TimeoutError);
    CHECK(ex.submit(square, 4).get() == 16);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  check_every_call_ends_once(t);
  CHECK(count_crashes(t, "signal 11 (SIGSEGV)", "TerminatedWorkerError") == 1);
  CHECK(count_crashes(t, "exit status 3", "TerminatedWorkerError") == 1);
  CHECK(count_crashes(t, "killed by the host", "TimeoutError") == 1);
  // Each crash is on the track of the worker whose slice it ended, at the slice's end.
  for (const char* task : {"segfault", "exit_with", "spin_forever"}) {
    CAPTURE(task);
    auto x = t.named(task, "X");
    REQUIRE(x.size() == 1);
    bool found = false;
    for (const auto* c : t.named("worker crash", "i"))
      found = found || (support::tid(*c) == support::tid(*x[0]) &&
                        support::ts(*c) + 0.002 >= support::ts(*x[0]) + (*x[0])["dur"].GetDouble());
    CHECK(found);
  }
  // Four workers: three crashed, the fourth ran the square and stopped at shutdown. Each has its
  // named track; a worker whose death the host saw before it read its hello has no `worker start`
  // instant (its track is named with its crash, as docs/trace-format.md says), so under load one
  // of the crashed three may lack it.
  CHECK(t.named("thread_name", "M").size() == 4);
  CHECK(t.named("worker start", "i").size() >= 1);
  CHECK(t.named("worker start", "i").size() <= 4);
  CHECK(count_exits(t, "shutdown") == 1);
  const auto* stats = stats_event(t);
  REQUIRE(stats);
  CHECK(arg_u64(*stats, "workers_crashed") == 3);
  CHECK(arg_u64(*stats, "workers_killed") == 1);  // the deadline's
  CHECK(arg_u64(*stats, "workers_started") == 4);
}

TEST_CASE("Trace.a_call_sent_again_after_a_death_has_one_slice") {
  support::TempDir dir;
  const fs::path file = dir.path / "retried.json";
  {
    auto o = traced(file, 1);
    o.max_retries_on_worker_death = 1;
    ferry::Executor ex(o);
    // It crashes its worker both times: the first death sends it again, the second fails it.
    CHECK_THROWS_AS(ex.submit(record_then_segfault, (dir.path / "runs").string(), 7).get(),
                    ferry::TerminatedWorkerError);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  check_every_call_ends_once(t);
  auto slices = t.named("record_then_segfault", "X");
  REQUIRE(slices.size() == 1);
  CHECK(arg_str(*slices[0], "error") == "TerminatedWorkerError");
  // Two crashes: the first gave its task no error (it ran again), the second the one it failed with.
  auto crashes = t.named("worker crash", "i");
  REQUIRE(crashes.size() == 2);
  CHECK_FALSE(has_arg(*crashes[0], "error"));
  CHECK(arg_str(*crashes[1], "error") == "TerminatedWorkerError");
  CHECK(support::tid(*slices[0]) == support::tid(*crashes[1]));
}

TEST_CASE("Trace.worker_exits_carry_their_reason") {
  support::TempDir dir;
  SUBCASE("tasks") {
    const fs::path file = dir.path / "tasks.json";
    {
      auto o = traced(file, 1);
      o.max_tasks_per_child = 1;
      ferry::Executor ex(o);
      for (int i = 0; i < 3; ++i) CHECK(ex.submit(square, i).get() == i * i);
      CHECK(support::wait_until([&] { return ex.stats().workers_recycled == 3; }));
    }
    TraceFile t = read_trace(file);
    check_closed(t);
    CHECK(count_exits(t, "tasks") == 3);
    CHECK(t.named("worker crash", "i").empty());
  }
  SUBCASE("idle") {
    const fs::path file = dir.path / "idle.json";
    {
      auto o = traced(file, 1);
      o.idle_timeout = 50ms;
      ferry::Executor ex(o);
      CHECK(ex.submit(square, 2).get() == 4);
      CHECK(support::wait_until([&] { return ex.stats().workers_recycled == 1; }));
    }
    TraceFile t = read_trace(file);
    check_closed(t);
    CHECK(count_exits(t, "idle") == 1);
  }
  SUBCASE("resize") {
    const fs::path file = dir.path / "resize.json";
    {
      ferry::Executor ex(traced(file, 2));
      CHECK(ex.warm_up());
      ex.resize(1);
      CHECK(support::wait_until([&] { return ex.stats().workers_stopped == 1; }));
    }
    TraceFile t = read_trace(file);
    check_closed(t);
    CHECK(count_exits(t, "resize") == 1);
    CHECK(count_exits(t, "shutdown") == 1);
  }
  SUBCASE("plugin_update") {
    // A worker that loaded version 1 of a plugin is stopped once version 2 replaces the file.
    const fs::path file = dir.path / "update.json";
    const fs::path plugins = dir.path / "plugins";
    fs::create_directory(plugins);
    auto install = [&](const char* from) {
      fs::copy_file(from, plugins / "libversioned.so.tmp", fs::copy_options::overwrite_existing);
      fs::rename(plugins / "libversioned.so.tmp", plugins / "libversioned.so");
    };
    install(FERRY_TEST_VERSIONED_V1);
    {
      auto o = traced(file, 1);
      o.plugin_dirs = {plugins};
      ferry::Executor ex(o);
      CHECK(ex.submit<int>("plugin_version").get() == 1);
      install(FERRY_TEST_VERSIONED_V2);
      CHECK(ex.submit<int>("plugin_version").get() == 2);
      CHECK(support::wait_until([&] { return ex.stats().workers_stopped == 1; }));
    }
    TraceFile t = read_trace(file);
    check_closed(t);
    CHECK(count_exits(t, "plugin_update") == 1);
    CHECK(count_exits(t, "shutdown") == 1);
    CHECK(t.named("worker crash", "i").empty());
  }
}

TEST_CASE("Trace.crashed_host_leaves_a_loadable_file") {
  support::TempDir dir;
  const fs::path file = dir.path / "killed.json";
  // A host of its own, forked before any executor exists in this (single-threaded) test process:
  // it works until its trace holds finished slices, then SIGKILLs itself in the middle of more.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      ferry::Executor ex(traced(file, 2));
      std::vector<ferry::Future<int>> fs;
      for (int round = 0; round < 100000; ++round) {
        for (int i = 0; i < 50; ++i) fs.push_back(ex.submit(slow_identity, i, 1));
        for (auto& f : fs) f.get();
        fs.clear();
        if (round >= 2 && read_file(file).find("\"ph\":\"X\"") != std::string::npos) {
          for (int i = 0; i < 50; ++i) fs.push_back(ex.submit(slow_identity, i, 20));
          ::raise(SIGKILL);
        }
      }
    } catch (...) {
    }
    ::_exit(3);
  }
  const int st = status_of_child(child);
  REQUIRE(st != -1);
  REQUIRE(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);

  TraceFile t = read_trace(file);
  check_well_formed(t);  // every complete line parses
  CHECK_FALSE(t.closed);
  CHECK(t.named("stats").empty());
  CHECK_FALSE(t.phase("X").empty());
  // What viewers do with such a file: drop a partial last line and close the array.
  std::string text = t.text.substr(0, t.text.rfind('\n') + 1);
  REQUIRE(text.size() >= 2);
  text.erase(text.size() - 2);  // the last event's ",\n"
  text += "\n]";
  support::rj::Document d;
  d.Parse(text.c_str(), text.size());
  CHECK_FALSE(d.HasParseError());
}

TEST_CASE("Trace.exit_writes_out_what_the_writer_held") {
  // The writer gathers lines for up to 100 ms: a program that called exit() with an executor not
  // destroyed (left to the end, or shut down with wait = false) lost them, and a short run's trace
  // held its header and no call. A host of its own, forked as in crashed_host_leaves_a_loadable_file.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (the child exits with its executor running, on purpose, which it reports as a thread leak, exit 66)");
  return;
#endif
  support::TempDir dir;
  const fs::path file = dir.path / "exited.json";
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 3;
    try {
      auto* ex = new ferry::Executor(traced(file, 1));  // never destroyed
      if (ex->submit(square, 7).get() == 49) code = 0;
      ex->shutdown({.wait = false});
    } catch (...) {
    }
    std::exit(code);
  }
  const int st = status_of_child(child);
  REQUIRE(st != -1);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  TraceFile t = read_trace(file);
  check_well_formed(t);
  CHECK(t.named("square", "X").size() == 1);
  CHECK(t.named("square", "b").size() == 1);
}

TEST_CASE("Trace.cap_writes_trace_truncated") {
  support::TempDir dir;
  const fs::path file = dir.path / "capped.json";
  const std::uint64_t cap = 16 * 1024;
  {
    auto o = traced(file, 2);
    o.trace_max_bytes = cap;
    ferry::Executor ex(o);
    std::vector<int> in(500);
    std::iota(in.begin(), in.end(), 0);
    CHECK(ex.map(square, in, {.chunksize = 1}).size() == 500);  // about 500 bytes per call traced
    CHECK(ex.stats().completed == 500);
  }
  CHECK(fs::file_size(file) <= cap);
  TraceFile t = read_trace(file);
  check_closed(t);
  auto truncated = t.named("trace truncated", "i");
  REQUIRE(truncated.size() == 1);
  CHECK(arg_u64(*truncated[0], "max_bytes") == cap);
  // Nothing after it but the closing stats.
  REQUIRE(t.events.size() >= 2);
  CHECK(str(*t.events[t.events.size() - 2], "name") == "trace truncated");
  CHECK(arg_u64(*t.events.back(), "completed") == 500);

  auto o = support::options(1);
  o.trace = dir.path / "tiny.json";
  o.trace_max_bytes = 1000;
  CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
}

TEST_CASE("Trace.refuses_a_symlink_at_the_path") {
  support::TempDir dir;
  const fs::path victim = dir.path / "victim.txt";
  { std::ofstream(victim) << "precious"; }
  auto refused = [&](const fs::path& path, const std::string& why) {
    CAPTURE(path);
    try {
      ferry::Executor ex(traced(path, 1));
      FAIL("the executor wrote a trace to ", path);
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      CHECK(what.find(path.string()) != std::string::npos);
      CHECK(what.find(why) != std::string::npos);
    }
  };
  // A link another user could have planted in /tmp: to a file, and a dangling one (which an
  // O_CREAT that follows links would create at its target).
  fs::create_symlink(victim, dir.path / "link.json");
  refused(dir.path / "link.json", "symbolic link");
  fs::create_symlink(dir.path / "created-through-the-link", dir.path / "dangling.json");
  refused(dir.path / "dangling.json", "symbolic link");
  CHECK_FALSE(fs::exists(dir.path / "created-through-the-link"));
  // Another name of the victim's content.
  fs::create_hard_link(victim, dir.path / "hard.json");
  refused(dir.path / "hard.json", "hard links");
  // Not a file.
  REQUIRE(::mkfifo((dir.path / "fifo.json").c_str(), 0600) == 0);
  refused(dir.path / "fifo.json", "not a regular file");
  refused(dir.path / "no-such-dir" / "t.json", "missing");
  CHECK(read_file(victim) == "precious");
  if (::geteuid() == 0) {
    // Another user's link on the way (as root can make one): the write went wherever it pointed.
    fs::create_directories(dir.path / "elsewhere");
    { std::ofstream(dir.path / "elsewhere" / "x.json") << "precious"; }
    fs::create_symlink(dir.path / "elsewhere", dir.path / "theirs");
    REQUIRE(::lchown((dir.path / "theirs").c_str(), 65534, 65534) == 0);
    refused(dir.path / "theirs" / "x.json", "symbolic link owned by uid 65534");
    CHECK(read_file(dir.path / "elsewhere" / "x.json") == "precious");
  } else {
    MESSAGE("another user's link on the way: skipped (needs root to make one)");
  }
  {
    // A directory on the way others can write (not sticky): they could swap it for a link.
    fs::create_directories(dir.path / "open");
    fs::permissions(dir.path / "open", fs::perms(0777), fs::perm_options::replace);
    refused(dir.path / "open" / "x.json", "writable by group or others");
  }

  // A file of ours is truncated and written; a new one is private.
  const fs::path mine = dir.path / "mine.json";
  { std::ofstream(mine) << std::string(100000, 'x'); }
  { ferry::Executor ex(traced(mine, 1)); }
  check_closed(read_trace(mine));
  { ferry::Executor ex(traced(dir.path / "new.json", 1)); }
  struct stat st {};
  REQUIRE(::stat((dir.path / "new.json").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("Trace.an_existing_file_is_made_private") {
  // The trace holds task names and messages: a file of ours written over is mode 0600 like a new
  // one, whatever it was (it kept its mode: a world-readable and writable file stayed so, a
  // setuid one stayed setuid).
  support::TempDir dir;
  for (const mode_t mode : {mode_t{0666}, mode_t{04755}, mode_t{0200}}) {
    CAPTURE(mode);
    const fs::path file = dir.path / ("existing-" + std::to_string(mode) + ".json");
    support::write_file(file, "old content");
    REQUIRE(::chmod(file.c_str(), mode) == 0);
    {
      ferry::Executor ex(traced(file, 1));
      CHECK(ex.submit(square, 3).get() == 9);
    }
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    check_closed(read_trace(file));
  }
}

TEST_CASE("Trace.kill_workers_shutdown_still_ends_the_file") {
  // shutdown({.kill_workers = true}) with a call running on each worker and one in the queue: the
  // calls that ran are in the file, the killed and the cancelled calls end there (CancelledError),
  // the workers' deaths are marked, and the file is closed as at any shutdown.
  support::TempDir dir;
  const fs::path file = dir.path / "killed_workers.json";
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "1");  // the third slow call waits in the queue
  {
    ferry::Executor ex(traced(file, 2));
    for (int i = 0; i < 4; ++i) CHECK(ex.submit(square, i).get() == i * i);
    auto a = ex.submit(slow_identity, 1, 60000);
    auto b = ex.submit(slow_identity, 2, 60000);
    auto queued = ex.submit(square, 7);
    REQUIRE(support::wait_until([&] { return a.running() && b.running(); }));
    ex.shutdown({.wait = true, .kill_workers = true});
    CHECK_THROWS_AS(a.get(), ferry::CancelledError);
    CHECK_THROWS_AS(b.get(), ferry::CancelledError);
    CHECK_THROWS_AS(queued.get(), ferry::CancelledError);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  auto ending = check_every_call_ends_once(t);
  CHECK(ending.size() == 4 + 3);
  auto squares = t.named("square", "X");
  CHECK(squares.size() == 4);
  for (const auto* x : squares) CHECK_FALSE(has_arg(*x, "error"));
  // The running calls: a slice each, ended by the kill.
  auto killed = t.named("slow_identity", "X");
  REQUIRE(killed.size() == 2);
  for (const auto* x : killed) {
    CHECK(arg_str(*x, "error") == "CancelledError");
    CHECK(arg_str(*x, "message").find("kill_workers=true") != std::string::npos);
  }
  // The queued call never reached a worker.
  auto ended = t.named("call ended", "i");
  REQUIRE(ended.size() == 1);
  CHECK(arg_str(*ended[0], "task") == "square");
  CHECK(arg_str(*ended[0], "error") == "CancelledError");
  CHECK(count_crashes(t, "killed by the host", "") == 2);
  CHECK(t.named("worker exit", "i").empty());
  const auto* stats = stats_event(t);
  REQUIRE(stats);
  CHECK(arg_u64(*stats, "submitted") == 7);
  CHECK(arg_u64(*stats, "completed") == 4);
  CHECK(arg_u64(*stats, "failed") == 3);
  CHECK((*stats)["args"]["failed_by_type"]["CancelledError"].GetUint64() == 3);
  CHECK(arg_u64(*stats, "workers_alive") == 0);
  CHECK(arg_u64(*stats, "workers_crashed") == 2);
  CHECK(arg_u64(*stats, "workers_killed") == 2);
}

TEST_CASE("Trace.unopenable_path_is_refused_at_construction") {
  // The trace's directory cannot exist (its name is a regular file's): the executor is not made
  // (std::invalid_argument from its constructor, with the path and the system's reason), and
  // the path is not left claimed. (From FERRY_TRACE it is made, without a trace: the next test.)
  support::TempDir dir;
  const fs::path not_a_dir = dir.path / "not-a-dir";
  support::write_file(not_a_dir, "a file");
  const fs::path path = not_a_dir / "t.json";
  // Found on the way to it, before any open.
  const std::string message = "ferry: refusing to write the trace to " + path.string() + ": " + not_a_dir.string() +
                              " (on the way to " + path.string() + ") is not a directory";
  auto refused = [&](const ferry::ExecutorOptions& o) {
    try {
      ferry::Executor ex(o);
      FAIL("the executor was made without its trace ", path);
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == message);
    }
  };
  refused(traced(path, 1));
  CHECK(read_file(not_a_dir) == "a file");
#ifdef FERRY_TEST_CLI
  Run r = ferry_cli({"run", "--trace", path.string(), "add", "1", "2"}, dir.path);
  CHECK(r.status == 2);  // a usage error, before anything ran
  CHECK(r.out.empty());
  // Behind the command's own prefix, without the library's "ferry: ".
  CHECK_MESSAGE(r.err.find("ferry run: invalid argument: " + message.substr(7)) != std::string::npos, r.err);
#endif
  // Once the directory exists, the same path is written as given: a claim the failures had left
  // would make this executor write t.2.json instead.
  fs::remove(not_a_dir);
  fs::create_directory(not_a_dir);
  {
    ferry::Executor ex(traced(path, 1));
    CHECK(ex.submit(square, 2).get() == 4);
  }
  check_closed(read_trace(path));
  CHECK_FALSE(fs::exists(not_a_dir / "t.2.json"));
}

namespace {
/// What this process writes on stderr (its descriptor 2) in the scope, read by text().
class StderrCapture {
 public:
  explicit StderrCapture(const fs::path& file) : file_(file) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(saved_ >= 0);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  std::string text() {
    restore();
    return read_file(file_);
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  fs::path file_;
  int saved_ = -1;
};
}  // namespace

TEST_CASE("Trace.unwritable_FERRY_TRACE_warns_and_runs_without_a_trace") {
  // FERRY_TRACE traces a program without touching its code: a path it cannot write made every
  // executor's constructor throw, ending a program that never asked for a trace. Now the executor
  // runs without a trace, and stderr says why once (per path, however many executors); an
  // ExecutorOptions::trace that cannot be written is still refused (the test above).
  support::TempDir dir;
  const fs::path not_a_dir = dir.path / "not-a-dir";
  support::write_file(not_a_dir, "a file");
  const fs::path path = not_a_dir / "t.json";
  support::ScopedEnv env("FERRY_TRACE", path.string());
  std::string said;
  {
    StderrCapture capture(dir.path / "stderr");
    for (int i = 0; i < 2; ++i) {
      ferry::Executor ex(support::options(1));
      CHECK(ex.submit(square, 3).get() == 9);
    }
    said = capture.text();
  }
  INFO(said);
  CHECK(said == "ferry: FERRY_TRACE is ignored: refusing to write the trace to " + path.string() + ": " +
                    not_a_dir.string() + " (on the way to " + path.string() +
                    ") is not a directory (the program runs without a trace)\n");
  CHECK(read_file(not_a_dir) == "a file");
  // A trace_max_bytes too small is the program's own mistake: refused as ever.
  auto o = support::options(1);
  o.trace_max_bytes = 1000;
  CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
#ifdef FERRY_TEST_CLI
  // The command runs too: FERRY_TRACE is not its --trace.
  Run r = ferry_cli({"run", "add", "1", "2"}, dir.path);
  CHECK(r.status == 0);
  CHECK(r.out == "3\n");
  CHECK_MESSAGE(r.err.find("FERRY_TRACE is ignored") != std::string::npos, r.err);
#endif
}

TEST_CASE("Trace.a_refused_FERRY_TRACE_path_is_not_passed_over_by_later_executors") {
  // The process claims FERRY_TRACE's numbers as it claims names: a refusal of the path itself
  // (here a link) gives the number back, so the next executor is refused there too, not written
  // at NAME.2.EXT: the path named is the user's, and a refusal of it ends the trace.
  support::TempDir dir;
  const fs::path path = dir.path / "t.json";
  fs::create_symlink(dir.path / "elsewhere.json", path);
  support::ScopedEnv env("FERRY_TRACE", path.string());
  {
    StderrCapture capture(dir.path / "stderr");
    for (int i = 0; i < 2; ++i) {
      ferry::Executor ex(support::options(1));
      CHECK(ex.submit(square, 3).get() == 9);
    }
  }
  CHECK_FALSE(fs::exists(dir.path / "t.2.json"));
  CHECK_FALSE(fs::exists(dir.path / "elsewhere.json"));
}

namespace {
std::atomic<int> file_size_signals{0};
void count_file_size_signal(int) { file_size_signals.fetch_add(1, std::memory_order_relaxed); }

/// A file-size limit (RLIMIT_FSIZE) on this process for the scope: a write past it writes what
/// fits, and the next fails with EFBIG and raises SIGXFSZ, counted here instead of ending the
/// process. Set it once the workers run: a worker started under it would inherit it.
struct FileSizeLimit {
  rlimit saved{};
  struct sigaction saved_action {};
  explicit FileSizeLimit(rlim_t bytes) {
    file_size_signals = 0;
    struct sigaction count {};
    count.sa_handler = count_file_size_signal;
    sigemptyset(&count.sa_mask);
    REQUIRE(::sigaction(SIGXFSZ, &count, &saved_action) == 0);
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    rlimit small = saved;
    small.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::sigaction(SIGXFSZ, &saved_action, nullptr);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
};
}  // namespace

TEST_CASE("Trace.write_failure_ends_the_file_and_the_pool_goes_on") {
  // A write of the trace that fails mid-run, as on a full disk (here: past a file-size limit):
  // the calls still run, the executor shuts down, and the writer tries no further write. The
  // file is cut back to its last whole line (it ended in the middle of one, which no viewer
  // loads) and ends with `trace truncated` saying why, then `]`.
  support::TempDir dir;
  const fs::path file = dir.path / "full.json";
  constexpr rlim_t limit = 16 * 1024;
  std::vector<int> in(300);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> out;
  int late = 0;
  ferry::ExecutorStats stats;
  int failed_writes = 0;
  bool failed = false;
  std::string said;
  {
    ferry::Executor ex(traced(file, 2));
    REQUIRE(ex.warm_up());  // both workers up before the limit, so neither inherits it
    {
      StderrCapture capture(dir.path / "stderr");
      FileSizeLimit full(limit);
      out = ex.map(square, in, {.chunksize = 1});  // some 500 bytes of trace a call: past the limit
      // The writer met the limit (within its flush period of 100 ms)...
      failed = support::wait_until([] { return file_size_signals.load() >= 1; });
      // ...and the pool goes on: more calls, their events, the closing stats.
      late = ex.submit(square, 12).get();
      ex.shutdown();
      stats = ex.stats();
      failed_writes = file_size_signals.load();
      said = capture.text();
    }
  }
  REQUIRE(failed);
  CHECK(said == "ferry: writing the trace " + file.string() + " failed: " + std::strerror(EFBIG) +
                    " (the trace ends there; the program goes on)\n");
  std::vector<int> expected(in.size());
  std::transform(in.begin(), in.end(), expected.begin(), [](int x) { return x * x; });
  CHECK(out == expected);
  CHECK(late == 144);
  CHECK(stats.completed == 301);
  CHECK(stats.failed == 0);
  CHECK(failed_writes == 1);  // one write failed; none was tried after it (but the ending's)
  CHECK(fs::file_size(file) <= limit);
  TraceFile t = read_trace(file);
  check_well_formed(t);
  CHECK_FALSE(t.partial_tail);
  CHECK(t.closed);
  CHECK(t.is_json_array());
  CHECK(t.named("stats").empty());
  CHECK(t.events.size() > 3);  // events of the run, not only the header
  auto truncated = t.named("trace truncated", "i");
  REQUIRE(truncated.size() == 1);
  CHECK(arg_str(*truncated[0], "error") == std::strerror(EFBIG));
  CHECK(str(*t.events.back(), "name") == "trace truncated");
}

TEST_CASE("Trace.a_first_write_that_fails_is_said_on_stderr") {
  // No room even for the header (a full disk; here a file-size limit of 0): the file stays empty,
  // which no viewer opens, and nothing said why. The program still runs.
  support::TempDir dir;
  const fs::path file = dir.path / "empty.json";
  // Stderr into a pipe: the limit holds for a file it would go to as well.
  int ends[2];
  REQUIRE(::pipe2(ends, O_CLOEXEC | O_NONBLOCK) == 0);
  std::fflush(stderr);
  const int saved = ::dup(2);
  REQUIRE(saved >= 0);
  ::dup2(ends[1], 2);
  std::optional<ferry::Executor> ex;
  {
    FileSizeLimit full(0);
    ex.emplace(traced(file, 1));  // its workers start at the first call, without the limit
  }
  ::dup2(saved, 2);
  ::close(saved);
  ::close(ends[1]);
  std::string said(4096, '\0');
  const ssize_t n = ::read(ends[0], said.data(), said.size());
  ::close(ends[0]);
  said.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  CHECK(ex->submit(square, 5).get() == 25);
  ex.reset();
  CHECK(said == "ferry: writing the trace " + file.string() + " failed: " + std::strerror(EFBIG) +
                    " (the trace ends there; the program goes on)\n");
  CHECK(fs::file_size(file) == 0);
}

TEST_CASE("Trace.strings_are_escaped_and_valid_utf8") {
  support::TempDir dir;
  const fs::path file = dir.path / "strings.json";
  // A task name that is no task: it travels into the trace as the call's name and in the
  // PluginError's message. Quotes, a backslash, control bytes, bytes that are not UTF-8 (a lone
  // continuation byte, an overlong '/', a surrogate), and good UTF-8.
  const std::string name = "q\"uote\\back\nline\x01\x80\xc0\xaf\xed\xa0\x80-\xc3\xa9t\xc3\xa9";
  {
    ferry::Executor ex(traced(file, 1));
    CHECK_THROWS_AS(ex.submit<int>(name, 1).get(), ferry::PluginError);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  support::rj::Document d;
  d.Parse<support::rj::kParseValidateEncodingFlag>(t.text.c_str(), t.text.size());
  CHECK_FALSE(d.HasParseError());
  auto ended = t.named("call ended", "i");
  REQUIRE(ended.size() == 1);
  const std::string shown = arg_str(*ended[0], "task");
  CHECK(shown.rfind("q\"uote\\back\nline\x01", 0) == 0);
  CHECK(shown.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD for each bad byte
  CHECK(shown.find("-\xc3\xa9t\xc3\xa9") != std::string::npos);  // good UTF-8 kept
}

TEST_CASE("Trace.strings_hold_no_raw_terminal_controls") {
  // `cat` or `tail -f` of a trace shows its strings on a terminal: DEL, a C1 control (U+009B is
  // a CSI), the bidirectional controls and the line and paragraph separators are written as
  // \uXXXX, the text the same once parsed.
  support::TempDir dir;
  const fs::path file = dir.path / "controls.json";
  const std::string name = "del\x7f csi\xc2\x9b osc\xc2\x9d alm\xd8\x9c lrm\xe2\x80\x8e rlo\xe2\x80\xae "
                           "ls\xe2\x80\xa8 ps\xe2\x80\xa9 fsi\xe2\x81\xa8 pdi\xe2\x81\xa9 \xc2\xa0\xc3\xa9";
  {
    ferry::Executor ex(traced(file, 1));
    CHECK_THROWS_AS(ex.submit<int>(name, 1).get(), ferry::PluginError);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  for (const std::string raw : {"\x7f", "\xc2\x9b", "\xc2\x9d", "\xd8\x9c", "\xe2\x80\x8e", "\xe2\x80\xae",
                                "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x81\xa8", "\xe2\x81\xa9"})
    CHECK(t.text.find(raw) == std::string::npos);
  for (const char* escaped : {"del\\u007f", "csi\\u009b", "osc\\u009d", "alm\\u061c", "lrm\\u200e", "rlo\\u202e",
                              "ls\\u2028", "ps\\u2029", "fsi\\u2068", "pdi\\u2069"})
    CHECK(t.text.find(escaped) != std::string::npos);
  support::rj::Document d;
  d.Parse<support::rj::kParseValidateEncodingFlag>(t.text.c_str(), t.text.size());
  CHECK_FALSE(d.HasParseError());
  auto ended = t.named("call ended", "i");
  REQUIRE(ended.size() == 1);
  CHECK(arg_str(*ended[0], "task") == name);  // the same text, and U+00A0 and U+00E9 as they were
}

TEST_CASE("Trace.counters_keep_the_end_of_a_burst_of_submissions") {
  // Twenty calls submitted within a millisecond: the first was written (queued 1), the other
  // nineteen held back, and the next counters were those after the first result, so the queue
  // never showed more than 19 calls waiting, nor the 20 that were.
  support::TempDir dir;
  const fs::path file = dir.path / "burst.json";
  {
    ferry::Executor ex(traced(file, 1));
    std::vector<ferry::Future<int>> calls;
    for (int i = 0; i < 20; ++i) calls.push_back(ex.submit(slow_identity, i, 5));
    for (auto& c : calls) c.get();
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  std::uint64_t peak = 0;
  for (const auto* c : t.named("pool", "C")) peak = std::max(peak, arg_u64(*c, "queued") + arg_u64(*c, "running"));
  CHECK(peak == 20);
}

TEST_CASE("Trace.a_worker_is_counted_when_it_says_hello") {
  // The pool's counters were written only with a call's events: a worker that started and ran
  // nothing was never counted, and the report's workers line rose at the first result.
  support::TempDir dir;
  const fs::path file = dir.path / "idle.json";
  {
    ferry::Executor ex(traced(file, 1));
    REQUIRE(ex.warm_up(std::chrono::seconds(30)));
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  std::uint64_t workers = 0;
  for (const auto* c : t.named("pool", "C")) workers = std::max(workers, arg_u64(*c, "workers"));
  CHECK(workers == 1);
}

TEST_CASE("Trace.task_names_are_cut_at_4_KiB") {
  // A name submitted that is no task may be anything (a service's request): written whole three
  // times, a 17 MiB one made an event that `ferry report` refuses, and with it the whole trace.
  support::TempDir dir;
  const fs::path file = dir.path / "long.json";
  const std::string name = "no_such_task_" + std::string(20000, 'n');
  {
    ferry::Executor ex(traced(file, 1));
    CHECK_THROWS_AS(ex.submit<int>(name, 1).get(), ferry::PluginError);
    CHECK(ex.submit(square, 3).get() == 9);
  }
  TraceFile t = read_trace(file);
  check_closed(t);
  auto ended = t.named("call ended", "i");
  REQUIRE(ended.size() == 1);
  const std::string shown = arg_str(*ended[0], "task");
  CHECK(shown == name.substr(0, 4096) + "...");
  std::size_t cut = 0;
  for (const char* phase : {"b", "e"}) {
    for (const auto* e : t.phase(phase)) {
      if (str(*e, "name") == "square") continue;
      CHECK(str(*e, "name") == shown);
      ++cut;
    }
  }
  CHECK(cut == 2);
  CHECK(t.named("square", "X").size() == 1);  // a real task's name as it is
}

TEST_CASE("Trace.a_file_the_program_has_open_is_refused_and_left_as_it_was") {
  // Its input, its output, its log: `ferry map --trace in.jsonl task in.jsonl` emptied the input
  // it had opened and mapped nothing.
  support::TempDir dir;
  const fs::path file = dir.path / "in.jsonl";
  { std::ofstream(file) << "1\n2\n"; }
  fs::permissions(file, fs::perms(0644));
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  std::string what;
  try {
    ferry::Executor ex(traced(file, 1));
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK(what == "ferry: refusing to write the trace to " + file.string() + ": this program has it open already "
                "(descriptor " + std::to_string(fd) + "): writing the trace would destroy it");
  CHECK(read_file(file) == "1\n2\n");
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);  // not even made private
  {
    // From FERRY_TRACE: said on stderr, and the program runs without a trace.
    support::ScopedEnv env("FERRY_TRACE", file.string());
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 4).get() == 16);
  }
  CHECK(read_file(file) == "1\n2\n");
  ::close(fd);
  {
    ferry::Executor ex(traced(file, 1));  // closed: written over, as any file of the user's
    CHECK(ex.submit(square, 5).get() == 25);
  }
  check_closed(read_trace(file));
}

TEST_CASE("Trace.a_file_the_program_has_mapped_is_refused_and_left_as_it_was") {
  // A library the program loaded (libferry.so of a build tree, FERRY_TRACE set to it by a slip)
  // holds no descriptor: it was emptied, lost on disk, and the program died of SIGBUS at its next
  // page of it. A file mapped by hand, its descriptor closed, stands for it.
  support::TempDir dir;
  const fs::path file = dir.path / "libmapped.so";
  const std::string content(8192, 'x');
  support::write_file(file, content);
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  void* map = ::mmap(nullptr, content.size(), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  REQUIRE(map != MAP_FAILED);
  std::string what;
  try {
    ferry::Executor ex(traced(file, 1));
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK(what == "ferry: refusing to write the trace to " + file.string() +
                    ": this program has it mapped (a library it loaded, or a file it maps): writing the trace "
                    "would destroy it");
  {
    support::ScopedEnv env("FERRY_TRACE", file.string());
    ferry::Executor ex(support::options(1));  // said on stderr; no trace
    CHECK(ex.submit(square, 4).get() == 16);
  }
  REQUIRE(read_file(file) == content);  // else reading the mapping below would raise SIGBUS
  CHECK(static_cast<const char*>(map)[content.size() - 1] == 'x');
  ::munmap(map, content.size());
  // Unmapped, it is a file like any other.
  {
    ferry::Executor ex(traced(file, 1));
    CHECK(ex.submit(square, 5).get() == 25);
  }
  check_closed(read_trace(file));
}

TEST_CASE("Trace.a_library_the_program_loaded_is_refused_where_proc_is_not_mounted") {
  // The mapped-file check read /proc/self/maps only: where /proc is not mounted (a chroot, a
  // container without it) or its device differs from stat's, a library the program loaded was
  // emptied as a trace and the program died of SIGBUS at its next page of it. A child of its own,
  // in a mount namespace of its own where /proc is an empty tmpfs, loads a copy of a plugin.
  support::TempDir dir;
  const fs::path lib = dir.path / "libloaded.so";
  fs::copy_file(FERRY_TEST_SEED_PLUGIN, lib);
  const std::string content = read_file(lib);
  constexpr int refused = 0, not_refused = 1, other = 2, no_namespace = 3;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Root may make a mount namespace; anyone else, where allowed, with a user namespace that
    // maps them to root in it (files keep their owner: the trace's owner check still passes).
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWNS) != 0) {
      if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) ::_exit(no_namespace);
      support::write_file("/proc/self/setgroups", "deny");
      support::write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1");
      support::write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
    }
    // Private first: nothing mounted here may reach the namespace the tests run in.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("none", "/proc", "tmpfs", 0, nullptr) != 0 || fs::exists("/proc/self/maps"))
      ::_exit(no_namespace);
    if (!::dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL)) ::_exit(other);
    try {
      ferry::Executor ex(traced(lib, 1));
    } catch (const std::invalid_argument& e) {
      ::_exit(std::string(e.what()).find("this program has it mapped") != std::string::npos ? refused : other);
    } catch (...) {
    }
    ::_exit(not_refused);  // the copy written over: it may not even get here
  }
  const int st = status_of_child(child);
  REQUIRE(st != -1);
  if (WIFEXITED(st) && WEXITSTATUS(st) == no_namespace) {
    MESSAGE("no mount namespace for this user: not tested");
    return;
  }
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == refused);
  CHECK(read_file(lib) == content);
}

TEST_CASE("Trace.FERRY_TRACE_and_the_option_which_wins") {
  support::TempDir dir;
  const fs::path from_env = dir.path / "env.json", from_option = dir.path / "option.json";
  support::ScopedEnv env("FERRY_TRACE", from_env.string());
  {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 2).get() == 4);
  }
  check_closed(read_trace(from_env));
  fs::remove(from_env);
  {
    ferry::Executor ex(traced(from_option, 1));
    CHECK(ex.submit(square, 2).get() == 4);
  }
  check_closed(read_trace(from_option));
  CHECK_FALSE(fs::exists(from_env));
}

TEST_CASE("Trace.FERRY_TRACE_gives_each_later_executor_its_own_file") {
  // A program that makes one executor after another (one per test, per request) kept only the
  // last one's trace: each wrote FERRY_TRACE's path over. Each takes the next name, as a second
  // executor writing it at once does: seq.json, seq.2.json, seq.3.json...
  support::TempDir dir;
  const fs::path file = dir.path / "seq.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const auto calls_in = [](const fs::path& p) {
    TraceFile t = read_trace(p);
    check_closed(t);
    return t.named("square", "X").size();
  };
  for (int n = 1; n <= 3; ++n) {
    ferry::Executor ex(support::options(1));
    for (int i = 0; i < n; ++i) CHECK(ex.submit(square, i).get() == i * i);
  }
  CHECK(calls_in(file) == 1);
  CHECK(calls_in(dir.path / "seq.2.json") == 2);
  CHECK(calls_in(dir.path / "seq.3.json") == 3);
  // Two at once, then one more: each its own name still, none taken again.
  {
    ferry::Executor a(support::options(1));
    ferry::Executor b(support::options(1));
    CHECK(a.submit(square, 4).get() == 16);
  }
  { ferry::Executor c(support::options(1)); }
  CHECK(calls_in(dir.path / "seq.4.json") == 1);
  CHECK(calls_in(dir.path / "seq.5.json") == 0);
  CHECK(calls_in(dir.path / "seq.6.json") == 0);
  CHECK_FALSE(fs::exists(dir.path / "seq.7.json"));
  // A path the program names is its choice: the next executor given it writes it over, as before.
  const fs::path named = dir.path / "named.json";
  for (int n = 1; n <= 2; ++n) {
    ferry::Executor ex(traced(named, 1));
    for (int i = 0; i < n; ++i) CHECK(ex.submit(square, i).get() == i * i);
  }
  CHECK(calls_in(named) == 2);
  CHECK_FALSE(fs::exists(dir.path / "named.2.json"));
}

TEST_CASE("Trace.a_numbered_name_that_is_refused_is_passed_over") {
  // A numbered name is ferry's choice: one that is refused (another user's seq.2.json in /tmp; a
  // link stands for it) made every later FERRY_TRACE executor of the process try it again and run
  // without a trace, and a second executor given the path as its option throw. The next name is
  // taken instead, and the link's target is left as it was.
  support::TempDir dir;
  const fs::path target = dir.path / "target.txt";
  support::write_file(target, "keep");
  const auto calls_in = [](const fs::path& p) {
    TraceFile t = read_trace(p);
    check_closed(t);
    return t.named("square", "X").size();
  };
  {
    const fs::path file = dir.path / "seq.json";
    fs::create_symlink(target, dir.path / "seq.2.json");
    support::ScopedEnv env("FERRY_TRACE", file.string());
    for (int n = 1; n <= 3; ++n) {
      ferry::Executor ex(support::options(1));
      for (int i = 0; i < n; ++i) CHECK(ex.submit(square, i).get() == i * i);
    }
    CHECK(calls_in(file) == 1);
    CHECK(calls_in(dir.path / "seq.3.json") == 2);
    CHECK(calls_in(dir.path / "seq.4.json") == 3);
  }
  {
    const fs::path named = dir.path / "named.json";
    fs::create_symlink(target, dir.path / "named.2.json");
    std::optional<ferry::Executor> a, b;
    a.emplace(traced(named, 1));
    CHECK_NOTHROW(b.emplace(traced(named, 1)));
    if (b) CHECK(b->submit(square, 3).get() == 9);
    a.reset();
    b.reset();
    CHECK(calls_in(named) == 0);
    CHECK(calls_in(dir.path / "named.3.json") == 1);
  }
  CHECK(read_file(target) == "keep");
  // The path the program names is still refused, not passed over.
  fs::create_symlink(target, dir.path / "link.json");
  CHECK_THROWS_AS(ferry::Executor(traced(dir.path / "link.json", 1)), std::invalid_argument);
  CHECK_FALSE(fs::exists(dir.path / "link.2.json"));
}

namespace {
/// How many files FERRY_TRACE's path gives a process.
constexpr unsigned kept_files = ferry::detail::Trace::default_files;

/// The `k`th name of FERRY_TRACE=`file`: `file` itself, then stem.K.ext.
fs::path nth_name(const fs::path& file, unsigned k) {
  if (k == 1) return file;
  return file.parent_path() / (file.stem().string() + "." + std::to_string(k) + file.extension().string());
}

/// The header's `ferry` event of a trace.
const support::rj::Value& ferry_header(const TraceFile& t) {
  auto h = t.named("ferry", "M");
  REQUIRE(h.size() == 1);
  return *h.front();
}
}  // namespace

TEST_CASE("Trace.FERRY_TRACE_keeps_the_last_files_and_writes_over_the_oldest") {
  // A service that makes an executor per request filled the disk: each took a new name, up to
  // trace_max_bytes each, without end. The process keeps kept_files of them, then writes over the
  // oldest, emptied first (the first here was much longer than the one written over it), as a log
  // is rotated: the last executors' traces are kept. Said once on stderr.
  support::TempDir dir;
  const fs::path file = dir.path / "rot.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  std::string said;
  {
    StderrCapture capture(dir.path / "stderr");
    {
      ferry::Executor ex(support::options(1));
      for (int i = 0; i < 40; ++i) CHECK(ex.submit(square, i).get() == i * i);
    }
    for (unsigned k = 2; k <= n + 3; ++k) {
      ferry::Executor ex(support::options(1));
      CHECK(ex.submit(square, 2).get() == 4);
    }
    said = capture.text();
  }
  CHECK_FALSE(fs::exists(nth_name(file, n + 1)));
  std::set<std::uint64_t> runs;
  for (unsigned k = 1; k <= n; ++k) {
    CAPTURE(k);
    TraceFile t = read_trace(nth_name(file, k));
    check_closed(t);
    // The names wrap round; `sequence` tells the order: the first three hold the last three.
    CHECK(arg_u64(ferry_header(t), "sequence") == (k <= 3 ? n + k : k));
    CHECK(t.named("square", "X").size() == 1);
    CHECK(t.named("process_name", "M").size() == 1);
    CHECK((*t.events.at(0))["pid"].GetInt64() == ::getpid());
    runs.insert(arg_u64(ferry_header(t), "run_started_unix_us"));
  }
  // One run wrote them all: the files of another are told apart by it (and by `pid`).
  CHECK(runs.size() == 1);
  CHECK(said == "ferry: FERRY_TRACE has made its " + std::to_string(n) +
                    " files (FERRY_TRACE_FILES): each executor's trace now writes over the oldest of them, "
                    "starting with " + file.string() + " (the last " + std::to_string(n) + " traces are kept)\n");
}

TEST_CASE("Trace.FERRY_TRACE_does_not_write_over_the_file_of_an_executor_still_running") {
  // The oldest file is passed over while its executor runs, and when every file is being written
  // the next executor runs without a trace (said once), rather than take a file beyond the bound.
  support::TempDir dir;
  const fs::path file = dir.path / "live.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  std::optional<ferry::Executor> first;
  first.emplace(support::options(1));
  CHECK(first->submit(square, 1).get() == 1);
  for (unsigned k = 2; k <= n + 1; ++k) {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 2).get() == 4);
  }
  CHECK(arg_u64(ferry_header(read_trace(nth_name(file, 2))), "sequence") == n + 1);
  std::string said;
  {
    std::vector<std::unique_ptr<ferry::Executor>> running;
    for (unsigned k = 1; k < n; ++k) running.push_back(std::make_unique<ferry::Executor>(support::options(1)));
    StderrCapture capture(dir.path / "stderr");
    for (int i = 0; i < 2; ++i) {
      ferry::Executor untraced(support::options(1));
      CHECK(untraced.submit(square, 3).get() == 9);
    }
    said = capture.text();
  }
  CHECK(said == "ferry: FERRY_TRACE is ignored for an executor: all " + std::to_string(n) +
                    " of its files (FERRY_TRACE_FILES) are in use: executors of this program still running are "
                    "writing them (or the program has them open, or they could not be opened for now) (that "
                    "executor runs without a trace)\n");
  CHECK_FALSE(fs::exists(nth_name(file, n + 1)));
  CHECK(first->submit(square, 5).get() == 25);
  first.reset();
  TraceFile t = read_trace(file);
  check_closed(t);
  CHECK(arg_u64(ferry_header(t), "sequence") == 1);
  CHECK(t.named("square", "X").size() == 2);
}

TEST_CASE("Trace.FERRY_TRACE_writes_over_only_the_files_it_wrote") {
  // A file is written over only if it is still the one this process wrote: never through a link
  // planted at its name (in a shared directory), nor a file put in its place, nor one written
  // since (another process's trace); none is created again. Each is left as it is and no longer
  // counted: the next executor takes a new name.
  support::TempDir dir;
  const fs::path file = dir.path / "own.json", target = dir.path / "target.txt";
  support::write_file(target, "keep");
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  for (unsigned k = 1; k <= n; ++k) ferry::Executor ex(support::options(1));
  fs::remove(nth_name(file, 1));
  fs::create_symlink(target, nth_name(file, 1));
  support::write_file(dir.path / "other", "another file\n");
  fs::rename(dir.path / "other", nth_name(file, 2));
  const std::string in_place = "[\n{\"ph\":\"M\",\"name\":\"another\"},\n";
  {
    std::fstream f(nth_name(file, 3), std::ios::in | std::ios::out | std::ios::binary);
    f << in_place;
  }
  const std::string third = read_file(nth_name(file, 3));
  fs::remove(nth_name(file, 4));
  // A second name given to the fifth: writing over it would change a file of another name.
  fs::create_hard_link(nth_name(file, 5), dir.path / "second-name");
  const std::string fifth_before = read_file(nth_name(file, 5));
  for (int i = 0; i < 6; ++i) {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, i).get() == i * i);
  }
  CHECK(read_file(target) == "keep");
  CHECK(read_file(nth_name(file, 5)) == fifth_before);
  CHECK(fs::is_symlink(nth_name(file, 1)));
  CHECK(read_file(nth_name(file, 2)) == "another file\n");
  CHECK(read_file(nth_name(file, 3)) == third);
  CHECK(third.rfind(in_place, 0) == 0);
  CHECK_FALSE(fs::exists(nth_name(file, 4)));
  for (unsigned k = n + 1; k <= n + 5; ++k) {
    CAPTURE(k);
    TraceFile t = read_trace(nth_name(file, k));
    check_closed(t);
    CHECK(arg_u64(ferry_header(t), "sequence") == k);
  }
  // Then the oldest that is still its own.
  TraceFile sixth = read_trace(nth_name(file, 6));
  check_closed(sixth);
  CHECK(arg_u64(ferry_header(sixth), "sequence") == n + 6);
  CHECK_FALSE(fs::exists(nth_name(file, n + 6)));
}

TEST_CASE("Trace.FERRY_TRACE_keeps_a_file_it_could_not_open_for_now") {
  // A file to write over that could not be opened for want of descriptors was taken for one no
  // longer the process's: forgotten, left on disk uncounted, and the next executor took a new
  // name past the bound. It is in use for now: passed over, and written over later.
  support::TempDir dir;
  const fs::path file = dir.path / "scarce.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  for (unsigned k = 1; k <= n; ++k) ferry::Executor ex(support::options(1));
  const ferry::detail::Trace::Header header{"local", 1};
  std::string said;
  {
    StderrCapture capture(dir.path / "stderr");
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    const int lowest_free = ::dup(0);
    REQUIRE(lowest_free >= 0);
    ::close(lowest_free);
    struct rlimit none = saved;
    none.rlim_cur = static_cast<rlim_t>(lowest_free);  // no open() succeeds
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &none) == 0);
    std::unique_ptr<ferry::detail::Trace> t;
    try {
      t = ferry::detail::Trace::from_environment(file, ferry::ExecutorOptions{}.trace_max_bytes, header, n);
    } catch (...) {
    }
    ::setrlimit(RLIMIT_NOFILE, &saved);
    CHECK_FALSE(t);
    said = capture.text();
  }
  CHECK(said.find("are in use") != std::string::npos);
  {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 3).get() == 9);
  }
  CHECK_FALSE(fs::exists(nth_name(file, n + 1)));
  TraceFile first = read_trace(file);
  check_closed(first);
  CHECK(arg_u64(ferry_header(first), "sequence") == n + 1);
}

TEST_CASE("Trace.FERRY_TRACE_keeps_its_bound_on_a_full_disk") {
  // A file whose header could not be written (a full disk; here a file-size limit of 0) no longer
  // began with the header the process had written, and was taken for another's: each later
  // executor left it and took a new name, without bound, while the disk stayed full.
  support::TempDir dir;
  const fs::path file = dir.path / "full.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  // Stderr into a pipe: the limit holds for a file it would go to as well.
  int ends[2];
  REQUIRE(::pipe2(ends, O_CLOEXEC | O_NONBLOCK) == 0);
  std::fflush(stderr);
  const int saved = ::dup(2);
  REQUIRE(saved >= 0);
  ::dup2(ends[1], 2);
  {
    FileSizeLimit full(0);
    for (unsigned k = 1; k <= n + 3; ++k) ferry::Executor ex(support::options(1));  // no call: no worker
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(ends[1]);
  std::string said;
  char buf[4096];
  for (ssize_t got; (got = ::read(ends[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<std::size_t>(got));
  ::close(ends[0]);
  INFO(said);
  for (unsigned k = 1; k <= n; ++k) CHECK(fs::exists(nth_name(file, k)));
  CHECK_FALSE(fs::exists(nth_name(file, n + 1)));
  CHECK(said.find("FERRY_TRACE has made its " + std::to_string(n) + " files") != std::string::npos);
  // Once there is room again, the oldest is written over with a whole trace.
  {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 4).get() == 16);
  }
  TraceFile t = read_trace(nth_name(file, 4));
  check_closed(t);
  CHECK(arg_u64(ferry_header(t), "sequence") == n + 4);
}

TEST_CASE("Trace.FERRY_TRACE_FILES_sets_how_many_files_are_kept") {
  support::TempDir dir;
  const fs::path file = dir.path / "few.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  support::ScopedEnv files("FERRY_TRACE_FILES", "2");
  std::string said;
  {
    StderrCapture capture(dir.path / "stderr");
    for (int i = 1; i <= 3; ++i) {
      ferry::Executor ex(support::options(1));
      CHECK(ex.submit(square, i).get() == i * i);
    }
    said = capture.text();
  }
  CHECK(arg_u64(ferry_header(read_trace(file)), "sequence") == 3);
  CHECK(arg_u64(ferry_header(read_trace(nth_name(file, 2))), "sequence") == 2);
  CHECK_FALSE(fs::exists(nth_name(file, 3)));
  CHECK(said.find("FERRY_TRACE has made its 2 files") != std::string::npos);
  // Out of its range: refused as every malformed FERRY_* variable is.
  support::ScopedEnv none("FERRY_TRACE_FILES", "0");
  CHECK_THROWS_AS(ferry::Executor(support::options(1)), std::invalid_argument);
}

TEST_CASE("Trace.a_child_of_fork_does_not_write_over_its_parents_FERRY_TRACE_files") {
  // The child of fork() inherits its parent's table of files: it took the parent's oldest,
  // closed, for one of its own and wrote it over. It counts its own, from none, on new names.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
  support::TempDir dir;
  const fs::path file = dir.path / "fork.json";
  support::ScopedEnv env("FERRY_TRACE", file.string());
  const unsigned n = kept_files;
  for (unsigned k = 1; k <= n; ++k) {
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit(square, 2).get() == 4);
  }
  const std::string parents_oldest = read_file(file);
  const int code = support::exit_code_of_child(
      [&] {
        ferry::Executor ex(support::options(1));
        return ex.submit(square, 3).get() == 9 ? 0 : 1;
      },
      30s);
  CHECK(code == 0);
  CHECK(read_file(file) == parents_oldest);
  TraceFile child = read_trace(nth_name(file, n + 1));
  check_closed(child);
  CHECK((*child.events.at(0))["pid"].GetInt64() != ::getpid());
  CHECK(arg_u64(ferry_header(child), "sequence") == 1);
  // The parent goes on with its own.
  { ferry::Executor ex(support::options(1)); }
  TraceFile parent = read_trace(file);
  check_closed(parent);
  CHECK((*parent.events.at(0))["pid"].GetInt64() == ::getpid());
  CHECK(arg_u64(ferry_header(parent), "sequence") == n + 1);
}

TEST_CASE("Trace.workers_do_not_inherit_FERRY_TRACE") {
  // An executor a task makes would otherwise write the host's file from another process.
  support::TempDir dir;
  support::ScopedEnv env("FERRY_TRACE", (dir.path / "host.json").string());
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(getenv_task, std::string("FERRY_TRACE")).get().empty());
}

TEST_CASE("Trace.two_executors_on_one_path_write_two_files") {
  support::TempDir dir;
  const fs::path file = dir.path / "both.json";
  {
    ferry::Executor a(traced(file, 1));
    ferry::Executor b(traced(file, 1));
    CHECK(a.submit(square, 2).get() == 4);
    CHECK(b.submit(square, 3).get() == 9);
  }
  check_closed(read_trace(file));
  check_closed(read_trace(dir.path / "both.2.json"));
  // Once both are closed, the path is free again.
  { ferry::Executor c(traced(file, 1)); }
  CHECK_FALSE(fs::exists(dir.path / "both.3.json"));
}

TEST_CASE("Trace.two_processes_on_one_path_write_two_files") {
  // Another process writing the path (FERRY_TRACE set for two programs run at once) is seen as
  // another executor of this one is: this process writes both.2.json, and never truncates or
  // writes the other's file (both wrote one file, mixed and mostly invalid). Its executors then
  // number on from there: the next writes both.3.json.
#if defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under ThreadSanitizer (it cannot start threads in a child of a multithreaded fork: the child dies, exit 66)");
  return;
#endif
  support::TempDir dir;
  const fs::path file = dir.path / "both.json";
  int opened[2], go[2];
  REQUIRE(::pipe2(opened, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  // Waits for a byte on `fd` for up to 30 s.
  auto byte_from = [](int fd) {
    pollfd p{fd, POLLIN, 0};
    char c;
    return ::poll(&p, 1, 30000) == 1 && ::read(fd, &c, 1) == 1;
  };
  int child_code = -3;
  std::thread other([&] {
    child_code = support::exit_code_of_child(
        [&] {
          ferry::Executor ex(traced(file, 1));
          if (::write(opened[1], "o", 1) != 1) return 2;
          if (!byte_from(go[0])) return 3;  // both run their calls at once
          for (int i = 0; i < 200; ++i)
            if (ex.submit(square, i).get() != i * i) return 4;
          return 0;
        },
        60s);
  });
  const bool child_opened = byte_from(opened[0]);
  {
    ferry::Executor a(traced(file, 1));
    ferry::Executor b(traced(file, 1));
    CHECK(::write(go[1], "g", 1) == 1);
    for (int i = 0; i < 200; ++i) {
      CHECK(a.submit(square, i).get() == i * i);
      CHECK(b.submit(square, i).get() == i * i);
    }
  }
  other.join();
  for (int fd : {opened[0], opened[1], go[0], go[1]}) ::close(fd);
  REQUIRE(child_opened);
  CHECK(child_code == 0);
  const auto pid_of = [](const TraceFile& t) { return (*t.events.at(0))["pid"].GetInt64(); };
  TraceFile child_trace = read_trace(file);
  check_closed(child_trace);
  CHECK(child_trace.named("square", "X").size() == 200);
  for (const std::string name : {"both.2.json", "both.3.json"}) {
    CAPTURE(name);
    TraceFile t = read_trace(dir.path / name);
    check_closed(t);
    CHECK(t.named("square", "X").size() == 200);
    CHECK(pid_of(t) == ::getpid());
  }
  CHECK(pid_of(child_trace) != ::getpid());
}

TEST_CASE("Trace.a_child_of_fork_does_not_keep_the_file_locked") {
  // The child inherited the trace's descriptor, and with it the file's lock, for its whole life:
  // with a long-lived child (a daemon, a pre-fork server), every later executor and run given
  // the path wrote NAME.2.EXT, though nothing wrote NAME any more.
  support::TempDir dir;
  const fs::path file = dir.path / "forked.json";
  int hold[2], ready[2];
  REQUIRE(::pipe2(hold, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
  pid_t child = -1;
  {
    ferry::Executor ex(traced(file, 1));
    CHECK(ex.submit(square, 2).get() == 4);
    child = ::fork();
    if (child == 0) {
      // Async-signal-safe calls only: this process has one thread of the parent's many. The
      // fork handlers have run by now: say so (until then the child holds the descriptor, as
      // any child of fork() does, and the parent must not go on before it ran).
      char c = 1;
      ::close(hold[1]);
      while (::write(ready[1], &c, 1) < 0 && errno == EINTR) {
      }
      while (::read(hold[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
    REQUIRE(child > 0);
    ::close(ready[1]);
    char c = 0;
    ssize_t n;
    while ((n = ::read(ready[0], &c, 1)) < 0 && errno == EINTR) {
    }
    ::close(ready[0]);
    REQUIRE(n == 1);
  }
  check_closed(read_trace(file));
  {
    ferry::Executor again(traced(file, 1));  // the child is still there
    CHECK(again.submit(square, 3).get() == 9);
  }
  ::close(hold[1]);
  ::close(hold[0]);
  int status = 0;
  CHECK(::waitpid(child, &status, 0) == child);
  CHECK_FALSE(fs::exists(dir.path / "forked.2.json"));
  TraceFile t = read_trace(file);
  check_closed(t);
  CHECK(t.named("square", "X").size() == 1);
}

TEST_CASE("Trace.reusable_executor_compares_the_trace_options") {
  support::TempDir dir;
  auto a = ferry::get_reusable_executor(traced(dir.path / "a.json", 1));
  auto same = ferry::get_reusable_executor(traced(dir.path / "a.json", 1));
  CHECK(a == same);
  auto other = ferry::get_reusable_executor(traced(dir.path / "b.json", 1));
  CHECK(other != a);
  auto o = traced(dir.path / "b.json", 1);
  o.trace_max_bytes = 1 << 20;
  auto capped = ferry::get_reusable_executor(o);
  CHECK(capped != other);
  CHECK(capped->submit(square, 5).get() == 25);
  capped->shutdown();
}

#ifdef FERRY_TEST_CLI
TEST_CASE("Trace.cli_run_and_map_write_a_trace") {
  support::TempDir dir;
  const fs::path run_trace = dir.path / "run.json", map_trace = dir.path / "map.json";
  Run r = ferry_cli({"run", "--trace", run_trace.string(), "add", "40", "2"}, dir.path);
  INFO(r.err);
  CHECK(r.status == 0);
  TraceFile t = read_trace(run_trace);
  check_closed(t);
  CHECK(t.named("add", "X").size() == 1);

  { std::ofstream(dir.path / "in.jsonl") << "1\n2\n3\n4\n"; }
  Run m = ferry_cli({"map", "-j", "2", "--chunksize", "2", "--trace", map_trace.string(), "square",
                     (dir.path / "in.jsonl").string()},
                    dir.path);
  INFO(m.err);
  CHECK(m.status == 0);
  TraceFile mt = read_trace(map_trace);
  check_closed(mt);
  CHECK(mt.named("square", "X").size() == 2);
  check_every_call_ends_once(mt);

  // A link at the path is a usage error, said clearly.
  fs::create_symlink(dir.path / "elsewhere", dir.path / "link.json");
  Run refused = ferry_cli({"run", "--trace", (dir.path / "link.json").string(), "add", "1", "2"}, dir.path);
  CHECK(refused.status == 2);
  CHECK(refused.err.find("symbolic link") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path / "elsewhere"));
}

TEST_CASE("Trace.cli_map_chunks_carry_their_first_input") {
  // `ferry map`'s chunks went through submit_json, which carries no first input: its trace (and
  // report) could not say where a chunk starts, though a chunk of Executor::map says it. The
  // index of the chunk's first line (its number - 1), as Executor::map's of its first input.
  support::TempDir dir;
  const auto firsts = [](const TraceFile& t, const std::string& task) {
    std::multiset<std::pair<std::uint64_t, std::uint64_t>> out;  // (first_input, items); -1: none
    for (const auto* x : t.named(task, "X"))
      out.emplace(has_arg(*x, "first_input") ? arg_u64(*x, "first_input") : UINT64_MAX, arg_u64(*x, "items"));
    return out;
  };
  using Set = std::multiset<std::pair<std::uint64_t, std::uint64_t>>;
  { std::ofstream(dir.path / "in.jsonl") << "1\n2\n3\n4\n5\n6\n7\n"; }
  const fs::path trace = dir.path / "map.json";
  Run m = ferry_cli({"map", "-j", "2", "--chunksize", "3", "--no-progress", "--trace", trace.string(), "square",
                     (dir.path / "in.jsonl").string()},
                    dir.path);
  INFO(m.err);
  CHECK(m.status == 0);
  CHECK(m.out == "1\n4\n9\n16\n25\n36\n49\n");
  TraceFile t = read_trace(trace);
  check_closed(t);
  CHECK(firsts(t, "square") == Set{{0, 3}, {3, 3}, {6, 1}});

  // --keep-going: a chunk that left out an unreadable line holds inputs that do not follow one
  // another, and has none; the next chunk has its own.
  { std::ofstream(dir.path / "gap.jsonl") << "1\n2\nnope\n4\n5\n6\n"; }
  const fs::path gap_trace = dir.path / "gap.json";
  Run g = ferry_cli({"map", "-j", "1", "--chunksize", "3", "--keep-going", "--no-progress", "--trace",
                     gap_trace.string(), "square", (dir.path / "gap.jsonl").string()},
                    dir.path);
  INFO(g.err);
  CHECK(g.status == 1);
  CHECK(firsts(read_trace(gap_trace), "square") == Set{{UINT64_MAX, 2}, {3, 3}});

#if !defined(__SANITIZE_THREAD__)  // a worker that segfaults: see Cli.map_keep_going_reruns_a_crashed_chunk_line_by_line
  // A chunk whose worker died runs again line by line: each line with its own first input.
  { std::ofstream(dir.path / "crash.jsonl") << "[1, 3]\n[2, 3]\n[3, 3]\n[4, 3]\n"; }
  const fs::path crash_trace = dir.path / "crash.json";
  Run c = ferry_cli({"map", "-j", "1", "--chunksize", "4", "--keep-going", "--no-progress", "--trace",
                     crash_trace.string(), "segfault_if", (dir.path / "crash.jsonl").string()},
                    dir.path);
  INFO(c.err);
  CHECK(c.status == 1);
  CHECK(c.out.rfind("1\n2\n{\"error\":", 0) == 0);
  CHECK(c.out.find("\n4\n") != std::string::npos);
  CHECK(firsts(read_trace(crash_trace), "segfault_if") == Set{{0, 4}, {0, 1}, {1, 1}, {2, 1}, {3, 1}});
#endif
}

TEST_CASE("Trace.cli_map_names_the_line_of_a_failed_input") {
  // With its first input, a chunk's error names the input at fault, counted from 0 as a map's:
  // `ferry map` says it as the line it is. Before, the line was the chunk's lines and the task
  // was named "checked_isqrt (item 2 of its map chunk)".
  support::TempDir dir;
  { std::ofstream(dir.path / "in.jsonl") << "1\n4\n-1\n9\n"; }
  Run m = ferry_cli({"map", "-j", "1", "--chunksize", "4", "--no-progress", "checked_isqrt",
                     (dir.path / "in.jsonl").string()},
                    dir.path);
  CHECK(m.status == 1);
  CHECK(m.out.empty());
  CHECK_MESSAGE(m.err.rfind("ferry map: line 3: TaskError: task 'checked_isqrt' raised std::domain_error in worker ", 0) == 0,
                m.err);
  CHECK_MESSAGE(m.err.find(": negative: -1\n") != std::string::npos, m.err);
  CHECK(m.err.find("(input") == std::string::npos);
  CHECK(m.err.find("map chunk") == std::string::npos);
}

TEST_CASE("Trace.cli_refuses_a_trace_over_its_own_input_or_output") {
  support::TempDir dir;
  const fs::path in = dir.path / "in.jsonl";
  { std::ofstream(in) << "1\n2\n3\n"; }
  // The input, given again as the trace by a slip of the keyboard: it was emptied, and the map
  // wrote nothing with status 0.
  Run m = ferry_cli({"map", "--trace", in.string(), "square", in.string()}, dir.path);
  CHECK(m.status == 2);
  CHECK(m.err.find("this program has it open already") != std::string::npos);
  CHECK(read_file(in) == "1\n2\n3\n");
  // Its standard output (support::run sends it to the file "stdout"): the trace and the results
  // were written into one file. (The command keeps its results' stdout on another descriptor.)
  Run r = ferry_cli({"run", "--trace", (dir.path / "stdout").string(), "add", "40", "2"}, dir.path);
  CHECK(r.status == 2);
  CHECK(r.err.find("this program has it open already") != std::string::npos);
}
#endif
