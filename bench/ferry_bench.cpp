// SPDX-License-Identifier: BSD-3-Clause
// ferry-bench: times ferry's hot paths and this machine's floors, one JSON object per metric.
//
//   ferry-bench [--quick] [--only NAME]... [--list]
//
// Every metric prints `{"metric": "...", "value": ..., "unit": "...", "note": "..."}` on its own
// line of stdout; a metric that could not be measured prints `"value": null` and the error in its
// note, and the exit status is then 1. Timings use std::chrono::steady_clock. Speed is measured
// here, never asserted: bench/compare.py puts these figures next to loky's from the same run.
#include <dlfcn.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ferry/ferry.hpp>

#include "crash.hpp"
#include "math.hpp"
#include "seed.hpp"

extern char** environ;

// A main-program function shipped by value (the FERRY_WRAP metrics).
FERRY_WRAP(bench_wrapped_square,
int bench_wrapped_square(int x) { return x * x; })

namespace {

using bench_clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t pool_size = 2;

/// Where `--trace` pools write their trace: one file in a private temporary directory, removed at
/// exit (each pool truncates it when it starts; two at once write trace.json and trace.2.json).
const std::filesystem::path& bench_trace_path() {
  // The directory's name outlives every static (never freed): the exit hook runs after statics
  // constructed later, such as `path` below, are gone.
  static const std::string* dir = [] {
    auto* d = new std::string((std::filesystem::temp_directory_path() / "ferry-bench-trace-XXXXXX").string());
    if (!::mkdtemp(d->data())) throw std::system_error(errno, std::generic_category(), "mkdtemp");
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return d;
  }();
  static const std::filesystem::path path = std::filesystem::path(*dir) / "trace.json";
  return path;
}

/// The executor options of every measured pool. `--contained` (FERRY_BENCH_CONTAINED=1, so that
/// re-executed children agree) adds limits and a sandbox: what containment costs is the
/// difference between a run with it and one without (bench/before_after.py puts them side by side).
/// FERRY_BENCH_CONTAINED=limits or =sandbox adds only one of them, to tell their costs apart, and
/// =limit:<name>[,<name>...] (memory, cpu_time, open_files, processes, file_size) some alone.
/// `--trace` (FERRY_BENCH_TRACE=1) makes every pool write a trace (ExecutorOptions::trace): what
/// tracing costs, the same way.
ferry::ExecutorOptions pool_options(std::size_t workers = pool_size) {
  ferry::ExecutorOptions o{.max_workers = workers};
  if (const char* t = std::getenv("FERRY_BENCH_TRACE"); t && std::string_view(t) == "1")
    o.trace = bench_trace_path();
  const char* c = std::getenv("FERRY_BENCH_CONTAINED");
  const std::string_view mode = c ? c : "";
  const ferry::Limits all{.memory = std::size_t{4} << 30,
                          .cpu_time = std::chrono::seconds(600),
                          .open_files = 4096,
                          .processes = 256,
                          .file_size = std::size_t{4} << 30};
  if (mode == "1" || mode == "limits") o.limits = all;
  // Some limits alone: limit:<name>[,<name>...] of memory, cpu_time, open_files, processes,
  // file_size.
  if (mode.rfind("limit:", 0) == 0) {
    const std::string names = "," + std::string(mode.substr(6)) + ",";
    auto has = [&](const char* name) { return names.find("," + std::string(name) + ",") != std::string::npos; };
    if (has("memory")) o.limits.memory = all.memory;
    if (has("cpu_time")) o.limits.cpu_time = all.cpu_time;
    if (has("open_files")) o.limits.open_files = all.open_files;
    if (has("processes")) o.limits.processes = all.processes;
    if (has("file_size")) o.limits.file_size = all.file_size;
  }
  if (mode == "1" || mode == "sandbox") o.sandbox = {.enabled = true};
  return o;
}

struct Options {
  bool quick = false;
};

struct Metric {
  std::string name;
  double value = 0;
  std::string unit;
  std::string note;
};

/// One measurement that yields one or more metrics (e.g. the round-trip median and p90).
struct Group {
  std::vector<std::string> names;
  std::function<std::vector<Metric>(const Options&)> run;
};

double ms_between(bench_clock::time_point a, bench_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double us_between(bench_clock::time_point a, bench_clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

/// Nearest-rank percentile (p in [0, 100]) of a non-empty sample.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) throw std::logic_error("percentile of an empty sample");
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

/// Median; for an even count, the mean of the two middle values.
double median(std::vector<double> v) {
  if (v.empty()) throw std::logic_error("median of an empty sample");
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt(double x, int digits = 3) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%.*f", digits, x);
  return buf.data();
}

/// "n=20, min 1.200, max 3.400": the spread of a sample, for a note.
std::string spread(const std::vector<double>& v, int digits = 3) {
  return "n=" + std::to_string(v.size()) + ", min " + fmt(*std::min_element(v.begin(), v.end()), digits) +
         ", max " + fmt(*std::max_element(v.begin(), v.end()), digits);
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          std::array<char, 8> esc{};
          std::snprintf(esc.data(), esc.size(), "\\u%04x", static_cast<unsigned>(c));
          out += esc.data();
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::array<char, 64> buf{};
  if (std::fabs(x) >= 1e6) {
    std::snprintf(buf.data(), buf.size(), "%.0f", x);
  } else {
    std::snprintf(buf.data(), buf.size(), "%.6g", x);
  }
  return buf.data();
}

void print_metric(const Metric& m) {
  std::cout << "{\"metric\": " << json_string(m.name) << ", \"value\": " << json_number(m.value)
            << ", \"unit\": " << json_string(m.unit) << ", \"note\": " << json_string(m.note)
            << "}\n"
            << std::flush;
}

void print_failure(const std::string& name, const std::string& error) {
  std::cout << "{\"metric\": " << json_string(name) << ", \"value\": null, \"unit\": \"\", "
            << "\"note\": " << json_string("error: " + error) << "}\n"
            << std::flush;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("wrong result: " + what);
}

/// Reads exactly n bytes; false on EOF or error (the peer left).
bool read_full(int fd, char* p, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

/// Writes exactly n bytes to socket fd; false on error (a peer gone is EPIPE, not SIGPIPE).
bool write_full(int fd, const char* p, std::size_t n) {
  std::size_t put = 0;
  while (put < n) {
    ssize_t r = ::send(fd, p + put, n - put, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    put += static_cast<std::size_t>(r);
  }
  return true;
}

/// Warm pool: every worker up (hello), and each has run a math and a crash-plugin task, so both
/// plugins are loaded everywhere before anything is timed.
void warm_pool(ferry::Executor& ex) {
  if (!ex.warm_up(30s)) throw std::runtime_error("warm_up: workers not up within 30 s");
  for (int attempt = 0; attempt < 50; ++attempt) {
    // Concurrent submissions go to the least-loaded worker: one to each of the two.
    auto a = ex.submit(worker_pid);
    auto b = ex.submit(worker_pid);
    auto c = ex.submit(initialized);
    auto d = ex.submit(initialized);
    int pa = a.get(), pb = b.get();
    c.get();
    d.get();
    if (pa != pb) return;
  }
  throw std::runtime_error("warm_pool: tasks never reached both workers");
}

// ---- cold start -------------------------------------------------------------------------------

/// The re-executed child: process start -> pool of 2 -> first result -> "ok".
int cold_child() {
  try {
    ferry::Executor ex(pool_options());
    int v = ex.submit(square, 3).get();
    if (v != 9) {
      std::cerr << "cold child: square(3) = " << v << "\n";
      return 1;
    }
    std::cout << "ok\n" << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cold child: " << e.what() << "\n";
    return 1;
  }
}

/// Milliseconds from just before spawning `/proc/self/exe --cold-child` to its "ok" line.
double time_cold_child() {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw_errno("pipe2");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::string arg0 = "/proc/self/exe", arg1 = "--cold-child";
  std::array<char*, 3> argv{arg0.data(), arg1.data(), nullptr};
  pid_t pid = -1;
  auto t0 = bench_clock::now();
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    errno = rc;
    throw_errno("posix_spawn /proc/self/exe");
  }
  std::string seen;
  bool ok = false;
  bool timed_out = false;
  bench_clock::time_point t1;
  while (!ok) {
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, 60'000);
    if (n == 0) {
      timed_out = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    std::array<char, 256> buf{};
    ssize_t r = ::read(fds[0], buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    seen.append(buf.data(), static_cast<std::size_t>(r));
    if (seen.find("ok\n") != std::string::npos) {
      t1 = bench_clock::now();
      ok = true;
    }
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) throw std::runtime_error("cold child printed no \"ok\" within 60 s");
  if (!ok) throw std::runtime_error("cold child ended without \"ok\" (output: \"" + seen + "\")");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("cold child printed ok but did not exit cleanly (status " +
                             std::to_string(status) + ")");
  return ms_between(t0, t1);
}

std::vector<Metric> bench_cold_start(const Options& o) {
  int n = o.quick ? 5 : 20;
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) ms.push_back(time_cold_child());
  return {{"cold_start_ms", median(ms), "ms",
           "median: spawn of /proc/self/exe --cold-child -> Executor(2 workers) -> square(3) -> "
           "\"ok\" read; " + spread(ms)}};
}

// ---- round trip and throughput ------------------------------------------------------------

std::vector<Metric> bench_roundtrip(const Options&) {
  const int warm = 200, n = 2000;
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  for (int i = 0; i < warm; ++i) check(ex.submit(square, i).get() == i * i, "square warm-up");
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    int x = i % 1000;
    auto t0 = bench_clock::now();
    int v = ex.submit(square, x).get();
    auto t1 = bench_clock::now();
    check(v == x * x, "square");
    us.push_back(us_between(t0, t1));
  }
  std::string note = "sequential submit(square, i).get() on a warm pool of 2, " +
                     std::to_string(warm) + " warm-up calls; " + spread(us) + ", p10 " +
                     fmt(percentile(us, 10)) + ", p99 " + fmt(percentile(us, 99));
  return {{"roundtrip_us_median", median(us), "us", note},
          {"roundtrip_us_p90", percentile(us, 90), "us", note}};
}

std::vector<int> make_inputs(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i % 1000;  // square stays in int
  return v;
}

long long sum_of_squares(const std::vector<int>& in) {
  long long s = 0;
  for (int x : in) s += static_cast<long long>(x) * x;
  return s;
}

/// `n` calls of square submitted one by one with `submit(ex, x)`, then all got: the metric
/// `name`, described as `what`.
template <class Submit>
std::vector<Metric> submit_then_get_all(ferry::Executor& ex, const Options& o, const char* name, const std::string& what,
                                        Submit submit) {
  const int n = o.quick ? 10'000 : 100'000;
  auto inputs = make_inputs(n);
  warm_pool(ex);
  std::vector<ferry::Future<int>> futures;
  futures.reserve(inputs.size());
  auto t0 = bench_clock::now();
  for (int x : inputs) futures.push_back(submit(ex, x));
  auto t_submitted = bench_clock::now();
  long long sum = 0;
  for (auto& f : futures) sum += f.get();
  auto t1 = bench_clock::now();
  check(sum == sum_of_squares(inputs), std::string("sum of squares, ") + name);
  double s = ms_between(t0, t1) / 1000;
  return {{name, n / s, "tasks/s",
           std::to_string(n) + " " + what + " one by one, then get() all; total " + fmt(s * 1000, 1) +
               " ms, of which submitting " + fmt(ms_between(t0, t_submitted), 1) + " ms" +
               (o.quick ? " (--quick: 10k tasks)" : "")}};
}

std::vector<Metric> bench_submit_all(const Options& o) {
  ferry::Executor ex(pool_options());
  return submit_then_get_all(ex, o, "submit_100k_tasks_per_s", "submit(square, i)",
                             [](ferry::Executor& e, int x) { return e.submit(square, x); });
}

/// The same by name ("square" of the math plugin): the lookup and trust check of a name, which a
/// submission by function does not pay.
std::vector<Metric> bench_submit_by_name(const Options& o) {
  // The math plugin's directory, where the linked `square` comes from.
  Dl_info info{};
  check(::dladdr(reinterpret_cast<const void*>(&square), &info) != 0 && info.dli_fname, "the math plugin's path");
  ferry::ExecutorOptions options = pool_options();
  options.plugin_dirs = {std::filesystem::absolute(info.dli_fname).parent_path()};
  ferry::Executor ex(options);
  check(ex.submit<int>("square", 3).get() == 9, "square by name");
  return submit_then_get_all(ex, o, "submit_100k_by_name_tasks_per_s", "submit<int>(\"square\", i)",
                             [](ferry::Executor& e, int x) { return e.submit<int>("square", x); });
}

/// Tasks per second of `runs` passes of `pass(ex, inputs)` over `n` short inputs on one warm pool
/// of 2. What a pass returns is checked once its time is taken: `sum_of(result)` must be the sum
/// of the inputs' squares.
template <class Pass, class SumOf>
std::vector<double> rates_of_passes(int n, int runs, const std::string& what, Pass pass, SumOf sum_of) {
  auto inputs = make_inputs(n);
  const long long expect = sum_of_squares(inputs);
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    auto t0 = bench_clock::now();
    auto result = pass(ex, inputs);
    auto t1 = bench_clock::now();
    check(sum_of(result, inputs.size()) == expect, what + " sum");
    rates.push_back(n / (ms_between(t0, t1) / 1000));
  }
  return rates;
}

std::vector<Metric> bench_map(const Options& o, std::size_t chunksize) {
  const int n = o.quick && chunksize == 1 ? 10'000 : 100'000;
  const int runs = chunksize == 1 ? 1 : (o.quick ? 3 : 5);
  auto rates = rates_of_passes(
      n, runs, "map",
      [&](ferry::Executor& ex, const std::vector<int>& inputs) {
        return ex.map(square, inputs, {.chunksize = chunksize});
      },
      [](const std::vector<int>& out, std::size_t size) {
        check(out.size() == size, "map size");
        return std::accumulate(out.begin(), out.end(), 0LL);
      });
  std::string name = chunksize == 1 ? "map_chunk1_tasks_per_s" : "map_chunk1000_tasks_per_s";
  std::string note = "map(square, " + std::to_string(n) + " ints, chunksize " +
                     std::to_string(chunksize) + ")";
  note += runs > 1 ? ", median over runs; " + spread(rates, 0) : ", one run";
  if (o.quick && chunksize == 1) note += " (--quick: 10k inputs)";
  return {{name, median(rates), "tasks/s", note}};
}

/// imap over `n` short inputs without a chunksize, consumed to the end: what the default chunks
/// cost when tasks are short (its first chunks hold one input each, then grow to map's size).
std::vector<Metric> bench_imap_default(const Options& o, int n, const std::string& name) {
  auto rates = rates_of_passes(
      n, o.quick ? 3 : 5, "imap",
      [](ferry::Executor& ex, const std::vector<int>& inputs) {
        std::pair<long long, std::size_t> sum_and_count{0, 0};
        for (int v : ex.imap(square, inputs)) {
          sum_and_count.first += v;
          ++sum_and_count.second;
        }
        return sum_and_count;
      },
      [](const std::pair<long long, std::size_t>& got, std::size_t size) {
        check(got.second == size, "imap size");
        return got.first;
      });
  return {{name, median(rates), "tasks/s",
           "imap(square, " + std::to_string(n) + " ints), default chunksize, consumed to the end, median over runs; " +
               spread(rates, 0)}};
}

/// How soon imap's first result comes when tasks are slow: 200 inputs of 5 ms (slow_identity) on
/// a pool of 2, default chunksize, from the call to the first value.
std::vector<Metric> bench_imap_first_result(const Options& o) {
  const int runs = o.quick ? 3 : 7;
  std::vector<std::pair<int, int>> inputs;
  for (int i = 0; i < 200; ++i) inputs.emplace_back(i, 5);
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    auto t0 = bench_clock::now();
    auto stream = ex.imap(slow_identity, inputs);
    auto it = stream.begin();
    auto t1 = bench_clock::now();
    check(it != stream.end() && *it == 0, "imap's first result");
    ms.push_back(ms_between(t0, t1));
    for (++it; it != stream.end(); ++it) {
    }  // the rest too: the next run starts on idle workers
  }
  return {{"imap_first_result_ms", median(ms), "ms",
           "imap(slow_identity, 200 inputs of 5 ms), default chunksize: the call to the first value, median; " +
               spread(ms)}};
}

// ---- large arguments --------------------------------------------------------------------------

std::vector<Metric> bench_vector(const Options& o) {
  const int n = o.quick ? 5 : 20;
  std::vector<int> big(1'000'000);
  std::iota(big.begin(), big.end(), 0);
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  for (int i = 0; i < 2; ++i) check(ex.submit(func_async, 21, big).get() == 42, "func_async warm-up");
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = bench_clock::now();
    int v = ex.submit(func_async, 21, big).get();
    auto t1 = bench_clock::now();
    check(v == 42, "func_async");
    ms.push_back(ms_between(t0, t1));
  }
  return {{"vector_1m_ms", median(ms), "ms",
           "submit(func_async, 21, vector<int>(1e6)).get(), median; " + spread(ms)}};
}

/// One byte-buffer argument per call: into the task's own std::vector<char> (decoded, a copy), or
/// as a ferry::BytesView (the task sees the shared memory the host encoded into; not read).
std::vector<Metric> bench_bytes(std::size_t bytes, const std::string& name, int n, bool view) {
  std::vector<char> buf(bytes, 'x');
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  auto call = [&] { return view ? ex.submit(view_size, buf).get() : ex.submit(byte_count, buf).get(); };
  check(call() == bytes, "bytes warm-up");
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = bench_clock::now();
    std::size_t v = call();
    auto t1 = bench_clock::now();
    check(v == bytes, "bytes");
    ms.push_back(ms_between(t0, t1));
  }
  double med = median(ms);
  double mb_s = static_cast<double>(bytes) / 1e6 / (med / 1000);
  std::string what = view ? "submit(view_size, vector<char>(" + std::to_string(bytes) +
                                ")).get(): a ferry::BytesView parameter, mapped in the worker, not read"
                          : "submit(byte_count, vector<char>(" + std::to_string(bytes) +
                                ")).get(): decoded into the task's own vector<char>";
  return {{name, med, "ms", what + ", median = " + fmt(mb_s, 0) + " MB/s; " + spread(ms)}};
}

// ---- worker start ---------------------------------------------------------------------------

std::vector<Metric> bench_spawn(const Options& o) {
  const int n = o.quick ? 5 : 30;
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    ferry::Executor ex(pool_options(1));
    auto t0 = bench_clock::now();
    if (!ex.warm_up(30s)) throw std::runtime_error("warm_up: the worker is not up within 30 s");
    ms.push_back(ms_between(t0, bench_clock::now()));
  }
  return {{"worker_spawn_ms", median(ms), "ms",
           "Executor of 1 -> warm_up() returns: spawn, containment set-up, handshake; median; " +
               spread(ms)}};
}

// ---- crashes ----------------------------------------------------------------------------------

std::vector<Metric> bench_crash(const Options& o) {
  const int n = o.quick ? 3 : 30;  // bimodal (teardown vs scheduling): enough samples for a stable median
  ferry::Executor ex(pool_options());
  std::vector<double> death_ms, next_ms;
  std::string signal;
  for (int i = 0; i < n; ++i) {
    warm_pool(ex);
    auto t0 = bench_clock::now();
    auto f = ex.submit(segfault, 1);
    bench_clock::time_point t1;
    try {
      f.get();
      throw std::runtime_error("segfault(1) returned instead of failing");
    } catch (const ferry::TerminatedWorkerError& e) {
      t1 = bench_clock::now();
      signal = e.signal_name();
    }
    int v = ex.submit(square, 2).get();
    auto t2 = bench_clock::now();
    check(v == 4, "square after crash");
    death_ms.push_back(ms_between(t0, t1));
    next_ms.push_back(ms_between(t1, t2));
  }
  // With a pool of one, the next result needs the respawned worker: the whole recovery.
  ferry::Executor single({.max_workers = 1});
  std::vector<double> respawn_ms;
  for (int i = 0; i < n; ++i) {
    if (!single.warm_up(30s)) throw std::runtime_error("warm_up: worker not up within 30 s");
    single.submit(initialized).get();
    try {
      single.submit(segfault, 1).get();
      throw std::runtime_error("segfault(1) returned instead of failing");
    } catch (const ferry::TerminatedWorkerError&) {
    }
    auto t1 = bench_clock::now();
    int v = single.submit(square, 2).get();
    respawn_ms.push_back(ms_between(t1, bench_clock::now()));
    check(v == 4, "square after crash (pool of 1)");
  }
  return {{"death_to_failure_ms", median(death_ms), "ms",
           "submit(segfault, 1) on a warm pool -> get() throws TerminatedWorkerError (" + signal +
               "), median; " + spread(death_ms)},
          {"crash_to_next_result_ms", median(next_ms), "ms",
           "that failure -> submit(square, 2).get() returns on the same executor (pool of 2: the "
           "surviving worker answers), median; " + spread(next_ms)},
          {"crash_to_respawned_result_ms", median(respawn_ms), "ms",
           "pool of 1: the failure -> submit(square, 2).get() returns from the respawned worker "
           "(spawn, handshake, plugin load), median; " + spread(respawn_ms)}};
}

// ---- FERRY_WRAP -------------------------------------------------------------------------------

/// A fresh private directory for a wrap cache (removed at scope exit).
struct TempCache {
  std::string path;
  TempCache() {
    std::string tmpl = "/tmp/ferry-bench-cache-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp");
    path = tmpl;
  }
  ~TempCache() {
    std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0) std::cerr << "ferry-bench: could not remove " << path << "\n";
  }
};

/// The child: times the first submit().get() of the wrapped function and of a registered task in
/// a fresh process, with the wrap cache given; prints "<wrapped us> <registered us>".
int wrap_child(const char* cache) {
  try {
    ::setenv("FERRY_CACHE_DIR", cache, 1);
    ferry::Executor ex({.max_workers = 1});
    if (!ex.warm_up(30s)) throw std::runtime_error("worker not up");
    ex.submit(initialized).get();  // the crash plugin: loaded, not timed
    auto t0 = bench_clock::now();
    int a = ex.submit(bench_wrapped_square, 7).get();
    auto t1 = bench_clock::now();
    int b = ex.submit(square, 7).get();
    auto t2 = bench_clock::now();
    if (a != 49 || b != 49) throw std::runtime_error("wrong results");
    std::cout << us_between(t0, t1) << " " << us_between(t1, t2) << "\n" << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "wrap child: " << e.what() << "\n";
    return 1;
  }
}

std::pair<double, double> run_wrap_child(const std::string& cache) {
  // Through the shell: /proc/self/exe would name the shell, so resolve our own path first.
  std::array<char, 4096> self{};
  ssize_t len = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (len <= 0) throw_errno("readlink /proc/self/exe");
  std::string cmd = "'" + std::string(self.data(), static_cast<std::size_t>(len)) + "' --wrap-child '" + cache + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw_errno("popen");
  double wrapped = -1, registered = -1;
  if (std::fscanf(p, "%lf %lf", &wrapped, &registered) != 2) wrapped = -1;
  int status = ::pclose(p);
  if (wrapped < 0 || status != 0) throw std::runtime_error("wrap child failed (status " + std::to_string(status) + ")");
  return {wrapped, registered};
}

std::vector<Metric> bench_wrap_cold(const Options& o) {
  int n = o.quick ? 2 : 5;
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    TempCache cache;  // empty: the wrapped function is compiled (the prelude is precompiled)
    ms.push_back(run_wrap_child(cache.path).first / 1000);
  }
  return {{"wrap_cold_compile_ms", median(ms), "ms",
           "first submit(wrapped, 7).get() in a fresh process with an empty wrap cache: compile "
           "with the precompiled prelude, load, call; median; " + spread(ms)}};
}

std::vector<Metric> bench_wrap_cached(const Options& o) {
  TempCache cache;
  run_wrap_child(cache.path);  // fills the cache
  int n = o.quick ? 3 : 10;
  std::vector<double> first;
  for (int i = 0; i < n; ++i) {
    auto [wrapped, registered] = run_wrap_child(cache.path);
    first.push_back(wrapped - registered);
  }
  // Steady state in one process: round trips of the wrapped function against the registered one.
  ::setenv("FERRY_CACHE_DIR", cache.path.c_str(), 1);
  ferry::Executor ex({.max_workers = 1});
  if (!ex.warm_up(30s)) throw std::runtime_error("worker not up");
  ex.submit(bench_wrapped_square, 1).get();
  ex.submit(square, 1).get();
  const int calls = o.quick ? 500 : 3000;
  std::vector<double> wrapped, registered;
  for (int i = 0; i < calls; ++i) {
    auto t0 = bench_clock::now();
    ex.submit(bench_wrapped_square, i % 1000).get();
    auto t1 = bench_clock::now();
    ex.submit(square, i % 1000).get();
    auto t2 = bench_clock::now();
    wrapped.push_back(us_between(t0, t1));
    registered.push_back(us_between(t1, t2));
  }
  ::unsetenv("FERRY_CACHE_DIR");
  double steady = median(wrapped) - median(registered);
  return {{"wrap_first_submit_overhead_us", median(first), "us",
           "fresh process, warm wrap cache: first submit().get() of the wrapped function minus "
           "that of a registered task (cache lookup + content check); median; " + spread(first)},
          {"wrap_submit_overhead_us", steady, "us",
           "same process, after the first call: median round trip of the wrapped function (" +
               fmt(median(wrapped)) + " us) minus the registered one's (" + fmt(median(registered)) + " us)"}};
}

// ---- memory -----------------------------------------------------------------------------------

long vm_rss_kb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  throw std::runtime_error("no VmRSS for pid " + std::to_string(pid));
}

std::vector<Metric> bench_rss(const Options&) {
  ferry::Executor ex(pool_options());
  warm_pool(ex);
  auto inputs = make_inputs(100);
  std::vector<ferry::Future<int>> fs;
  for (int x : inputs) fs.push_back(ex.submit(square, x));
  long long sum = 0;
  for (auto& f : fs) sum += f.get();
  check(sum == sum_of_squares(inputs), "sum of squares");
  auto pids = ex.worker_pids();
  if (pids.empty()) throw std::runtime_error("no workers");
  long max_kb = 0;
  std::string each;
  for (int pid : pids) {
    long kb = vm_rss_kb(pid);
    max_kb = std::max(max_kb, kb);
    each += (each.empty() ? "" : ", ") + std::to_string(kb);
  }
  return {{"idle_worker_rss_kb", static_cast<double>(max_kb), "kB",
           "max VmRSS of the " + std::to_string(pids.size()) +
               " workers after 100 tasks on a warm pool; each: " + each + " kB"}};
}

// ---- a 2 GB argument, first and repeated (issue 10) -------------------------------------------

/// The child: a fresh process (nothing recycled, nothing warm from earlier metrics) with a pool of
/// 2 submits byte_count(vector<char>(bytes)) `calls` times; prints the milliseconds of each call,
/// then the host's VmRSS growth in kB over the calls (what the host kept: blocks over 512 MiB are
/// never recycled, so this stays near 0).
int large_child(std::size_t bytes, int calls) {
  try {
    std::vector<char> buf(bytes, 'x');
    ferry::Executor ex(pool_options());
    warm_pool(ex);
    long rss0 = vm_rss_kb(static_cast<int>(::getpid()));
    for (int i = 0; i < calls; ++i) {
      auto t0 = bench_clock::now();
      std::size_t v = ex.submit(byte_count, buf).get();
      auto t1 = bench_clock::now();
      if (v != bytes) throw std::runtime_error("byte_count returned " + std::to_string(v));
      std::cout << ms_between(t0, t1) << " ";
    }
    std::cout << vm_rss_kb(static_cast<int>(::getpid())) - rss0 << "\n" << std::flush;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "large child: " << e.what() << "\n";
    return 1;
  }
}

/// Runs `ferry-bench --large-child bytes calls`; returns its call times (ms) and RSS growth (kB).
std::pair<std::vector<double>, double> run_large_child(std::size_t bytes, int calls) {
  std::array<char, 4096> self{};
  ssize_t len = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (len <= 0) throw_errno("readlink /proc/self/exe");
  std::string cmd = "'" + std::string(self.data(), static_cast<std::size_t>(len)) + "' --large-child " +
                    std::to_string(bytes) + " " + std::to_string(calls);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw_errno("popen");
  std::vector<double> ms;
  double v = 0;
  while (std::fscanf(p, "%lf", &v) == 1) ms.push_back(v);
  int status = ::pclose(p);
  if (status != 0 || ms.size() != static_cast<std::size_t>(calls) + 1)
    throw std::runtime_error("large child failed (status " + std::to_string(status) + ")");
  double rss_kb = ms.back();
  ms.pop_back();
  return {ms, rss_kb};
}

/// The first submission of a 2 GB argument in a process, and the ones after it (issue 10: an
/// outside tester saw 7-13 s for the first 2.2 GB against 2 s for the second; see
/// bench/analysis.md). Each child is a fresh process; medians over children (first) and over all
/// later calls.
std::vector<Metric> bench_bytes_2gb(const Options& o) {
  constexpr std::size_t bytes = 2'000'000'000;
  const int children = o.quick ? 1 : 3, calls = o.quick ? 2 : 3;
  std::vector<double> first, repeat, rss;
  for (int c = 0; c < children; ++c) {
    auto [ms, rss_kb] = run_large_child(bytes, calls);
    first.push_back(ms.front());
    repeat.insert(repeat.end(), ms.begin() + 1, ms.end());
    rss.push_back(rss_kb);
  }
  auto rate = [&](double ms) { return fmt(static_cast<double>(bytes) / 1e6 / (ms / 1000), 0) + " MB/s"; };
  std::string what = "submit(byte_count, vector<char>(2000000000)).get() on a warm pool of 2 in a fresh "
                     "process (ferry-bench --large-child), decoded into the task's own vector<char>";
  std::string kept = "; host VmRSS growth over the calls, max " +
                     fmt(*std::max_element(rss.begin(), rss.end()) / 1024, 0) + " MiB";
  return {{"bytes_2gb_first_ms", median(first), "ms",
           what + ": the first call of each process, median = " + rate(median(first)) + "; " +
               spread(first, 0) + kept},
          {"bytes_2gb_repeat_ms", median(repeat), "ms",
           what + ": the calls after the first, median = " + rate(median(repeat)) + "; " +
               spread(repeat, 0) + kept}};
}

// ---- floors -----------------------------------------------------------------------------------

struct ForkedPeer {
  int fd = -1;
  pid_t pid = -1;
  ForkedPeer() = default;
  ForkedPeer(const ForkedPeer&) = delete;
  ForkedPeer& operator=(const ForkedPeer&) = delete;
  ~ForkedPeer() {
    if (fd >= 0) ::close(fd);  // the child sees EOF and exits
    if (pid > 0) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
};

/// Forks a child that runs `body(fd)` on its end of a socketpair, then _exits.
void fork_peer(ForkedPeer& peer, const std::function<void(int)>& body) {
  std::array<int, 2> sv{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.data()) != 0) throw_errno("socketpair");
  std::cout.flush();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::close(sv[0]);
    body(sv[1]);
    ::_exit(0);
  }
  ::close(sv[1]);
  peer.fd = sv[0];
  peer.pid = pid;
}

/// While alive, pins this process (and the children it forks) to the vCPU it runs on now.
class PinToCurrentCpu {
 public:
  PinToCurrentCpu() {
    if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0) throw_errno("sched_getaffinity");
    cpu_ = ::sched_getcpu();
    if (cpu_ < 0) throw_errno("sched_getcpu");
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu_, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) throw_errno("sched_setaffinity");
  }
  ~PinToCurrentCpu() { ::sched_setaffinity(0, sizeof saved_, &saved_); }
  PinToCurrentCpu(const PinToCurrentCpu&) = delete;
  PinToCurrentCpu& operator=(const PinToCurrentCpu&) = delete;
  int cpu() const { return cpu_; }

 private:
  cpu_set_t saved_{};
  int cpu_ = -1;
};

/// A floor measured over several trials, each with a fresh forked peer: the first with both
/// processes pinned to one vCPU, the others unpinned (the scheduler then chooses, per pair and for
/// the pair's life, whether both share a vCPU or each must wake the other across vCPUs). The floor
/// is the lowest trial median: the cheapest way this machine can do the transfer.
struct Trials {
  std::vector<double> medians;
  std::string detail;
};

Trials run_trials(int unpinned, const std::function<std::vector<double>()>& trial, int digits) {
  Trials t;
  for (int i = 0; i < 1 + unpinned; ++i) {
    std::vector<double> samples;
    std::string label;
    if (i == 0) {
      PinToCurrentCpu pin;
      samples = trial();
      label = "pinned to vCPU " + std::to_string(pin.cpu());
    } else {
      samples = trial();
      label = "unpinned";
    }
    t.medians.push_back(median(samples));
    t.detail += (t.detail.empty() ? "" : "; ") + label + " " + fmt(t.medians.back(), digits) +
                " (p90 " + fmt(percentile(samples, 90), digits) + ")";
  }
  return t;
}

std::vector<Metric> bench_floor_pingpong(const Options& o) {
  const int warm = 200, n = o.quick ? 2000 : 5000;
  auto trial = [&] {
    ForkedPeer peer;
    fork_peer(peer, [](int fd) {
      std::array<char, 8> b{};
      while (read_full(fd, b.data(), b.size()))
        if (!write_full(fd, b.data(), b.size())) return;
    });
    std::array<char, 8> msg{'p', 'i', 'n', 'g', 'p', 'o', 'n', 'g'};
    std::vector<double> us;
    us.reserve(n);
    for (int i = 0; i < warm + n; ++i) {
      auto t0 = bench_clock::now();
      if (!write_full(peer.fd, msg.data(), msg.size()) ||
          !read_full(peer.fd, msg.data(), msg.size()))
        throw std::runtime_error("ping-pong peer went away");
      auto t1 = bench_clock::now();
      if (i >= warm) us.push_back(us_between(t0, t1));
    }
    return us;
  };
  Trials t = run_trials(o.quick ? 2 : 4, trial, 2);
  return {{"floor_pingpong_us", *std::min_element(t.medians.begin(), t.medians.end()), "us",
           "blocking 8-byte round trip over a socketpair to a forked child; lowest median of " +
               std::to_string(t.medians.size()) + " trials of " + std::to_string(n) +
               " round trips (after " + std::to_string(warm) + " warm-up), one child each: " +
               t.detail}};
}

std::vector<Metric> bench_floor_socketpair(const Options& o, std::size_t bytes,
                                           const std::string& name, int n) {
  // The receive buffer is mapped before the fork and touched by the child once, then reused:
  // the floor is the transport alone, without page faults on a fresh buffer.
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) throw_errno("mmap");
  std::vector<char> src(bytes, 'x');
  auto trial = [&] {
    ForkedPeer peer;
    fork_peer(peer, [map, bytes](int fd) {
      char* dst = static_cast<char*>(map);
      std::memset(dst, 0, bytes);
      char ack = 'k';
      while (read_full(fd, dst, bytes))
        if (!write_full(fd, &ack, 1)) return;
    });
    std::vector<double> ms;
    for (int i = 0; i < n + 1; ++i) {  // the first transfer is a warm-up
      auto t0 = bench_clock::now();
      char ack = 0;
      if (!write_full(peer.fd, src.data(), bytes) || !read_full(peer.fd, &ack, 1))
        throw std::runtime_error("bulk peer went away");
      auto t1 = bench_clock::now();
      if (i > 0) ms.push_back(ms_between(t0, t1));
    }
    return ms;
  };
  Trials t;
  try {
    t = run_trials(o.quick ? 1 : 2, trial, 3);
  } catch (...) {
    ::munmap(map, bytes);
    throw;
  }
  ::munmap(map, bytes);
  double best = *std::min_element(t.medians.begin(), t.medians.end());
  return {{name, best, "ms",
           "write " + std::to_string(bytes) + " bytes to a forked child over a socketpair, child "
           "reads all into a reused buffer and answers 1 byte; lowest median of " +
               std::to_string(t.medians.size()) + " trials of " + std::to_string(n) +
               " transfers, one child each = " +
               fmt(static_cast<double>(bytes) / 1e6 / (best / 1000), 0) + " MB/s: " + t.detail}};
}

std::vector<Metric> bench_floor_memcpy(const Options&, std::size_t bytes, const std::string& name,
                                       int n) {
  std::vector<char> src(bytes, 'x'), dst(bytes, 0);
  std::vector<double> ms;
  for (int i = 0; i < n + 1; ++i) {
    src[static_cast<std::size_t>(i) % bytes] = static_cast<char>('a' + i % 26);
    auto t0 = bench_clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    asm volatile("" : : "r"(dst.data()) : "memory");
    auto t1 = bench_clock::now();
    if (i > 0) ms.push_back(ms_between(t0, t1));
  }
  double med = median(ms);
  return {{name, med, "ms",
           "memcpy of " + std::to_string(bytes) + " bytes between touched buffers, median = " +
               fmt(static_cast<double>(bytes) / 1e6 / (med / 1000), 0) + " MB/s; " + spread(ms)}};
}

// ---- driver -----------------------------------------------------------------------------------

/// A result type of several members, as a user's struct would be.
struct DecodePoint {
  double x = 0, y = 0;
  std::string tag;
  bool operator==(const DecodePoint&) const = default;
  template <class A>
  void serialize(A& ar) {
    ar(x, y, tag);
  }
};

/// Nanoseconds per decode of `bytes` as a T: the median of 7 batches, each long enough to time.
template <class T, class Decode>
double ns_per_decode(const ferry::detail::Buffer& bytes, int per_batch, Decode decode) {
  std::vector<double> batches;
  for (int b = 0; b < 7; ++b) {
    const auto t0 = bench_clock::now();
    for (int i = 0; i < per_batch; ++i) {
      T v = decode(std::string_view(bytes.data(), bytes.size()));
      asm volatile("" : : "r"(&v) : "memory");  // keep the decode
    }
    batches.push_back(std::chrono::duration<double, std::nano>(bench_clock::now() - t0).count() / per_batch);
  }
  return median(batches);
}

/// The host's result decoder (detail::BoundedInputArchive: sizes checked, containers grown as
/// read, a depth and memory budget) against cereal::BinaryInputArchive on the same bytes: what
/// distrusting a worker's result costs. One metric per shape, its checked time per decode; the
/// note has the plain archive's and the ratio.
template <class T>
Metric decode_metric(const std::string& name, const T& value, int per_batch) {
  ferry::detail::Buffer bytes;
  ferry::detail::encode_values(bytes, value);
  auto checked = [](std::string_view b) { return ferry::detail::decode_value<T>(b); };
  auto plain = [](std::string_view b) {
    ferry::detail::MemoryReader reader(b.data(), b.size());
    ferry::detail::InputStreamLease is(&reader);
    cereal::BinaryInputArchive ar(*is);
    T v{};
    ar(v);
    return v;
  };
  // Interleaved, twice each, the better of each kept: a shared VM's noise falls on both.
  double c = ns_per_decode<T>(bytes, per_batch, checked), p = ns_per_decode<T>(bytes, per_batch, plain);
  c = std::min(c, ns_per_decode<T>(bytes, per_batch, checked));
  p = std::min(p, ns_per_decode<T>(bytes, per_batch, plain));
  check(checked(std::string_view(bytes.data(), bytes.size())) == plain(std::string_view(bytes.data(), bytes.size())),
        name + ": both archives decode the same value");
  return {name, c / 1000.0, "us",
          "checked decoder " + fmt(c / 1000.0) + " us, cereal::BinaryInputArchive " + fmt(p / 1000.0) +
              " us (" + fmt(c / p) + "x), " + std::to_string(bytes.size()) + " bytes; best of two medians of 7 batches of " +
              std::to_string(per_batch)};
}

std::vector<Metric> bench_decode(const Options& o) {
  const int scale = o.quick ? 4 : 1;
  std::vector<std::string> strings;
  std::map<std::string, int> ordered;
  std::unordered_map<int, int> hashed;
  std::vector<DecodePoint> points;
  for (int i = 0; i < 10'000; ++i) {
    strings.push_back("element-" + std::to_string(i) + "-of-ten-k");
    ordered.emplace("key-" + std::to_string(i), i);
    hashed.emplace(i * 7919, i);
    points.push_back({i * 0.5, i * 0.25, "p" + std::to_string(i)});
  }
  return {
      decode_metric("decode_int_us", 42, 200'000 / scale),
      decode_metric("decode_string_1k_us", std::string(1024, 'x'), 100'000 / scale),
      decode_metric("decode_vector_double_1m_us", std::vector<double>(1'000'000, 1.5), 40 / scale),
      decode_metric("decode_vector_string_10k_us", strings, 200 / scale),
      decode_metric("decode_map_string_int_10k_us", ordered, 100 / scale),
      decode_metric("decode_unordered_map_10k_us", hashed, 200 / scale),
      decode_metric("decode_vector_struct_10k_us", points, 200 / scale),
  };
}

std::vector<Group> all_groups() {
  constexpr std::size_t mb8 = 8'000'000, mb80 = 80'000'000;
  return {
      {{"cold_start_ms"}, bench_cold_start},
      {{"roundtrip_us_median", "roundtrip_us_p90"}, bench_roundtrip},
      {{"submit_100k_tasks_per_s"}, bench_submit_all},
      {{"submit_100k_by_name_tasks_per_s"}, bench_submit_by_name},
      {{"map_chunk1_tasks_per_s"}, [](const Options& o) { return bench_map(o, 1); }},
      {{"map_chunk1000_tasks_per_s"}, [](const Options& o) { return bench_map(o, 1000); }},
      {{"imap_default_tasks_per_s"},
       [](const Options& o) { return bench_imap_default(o, 100'000, "imap_default_tasks_per_s"); }},
      {{"imap_default_10k_tasks_per_s"},
       [](const Options& o) { return bench_imap_default(o, 10'000, "imap_default_10k_tasks_per_s"); }},
      {{"imap_first_result_ms"}, bench_imap_first_result},
      {{"vector_1m_ms"}, bench_vector},
      {{"bytes_8mb_ms"},
       [](const Options& o) { return bench_bytes(mb8, "bytes_8mb_ms", o.quick ? 3 : 10, false); }},
      {{"bytes_80mb_ms"},
       [](const Options& o) { return bench_bytes(mb80, "bytes_80mb_ms", o.quick ? 2 : 5, false); }},
      {{"bytes_view_8mb_ms"},
       [](const Options& o) { return bench_bytes(mb8, "bytes_view_8mb_ms", o.quick ? 3 : 10, true); }},
      {{"bytes_view_80mb_ms"},
       [](const Options& o) { return bench_bytes(mb80, "bytes_view_80mb_ms", o.quick ? 2 : 5, true); }},
      {{"bytes_2gb_first_ms", "bytes_2gb_repeat_ms"}, bench_bytes_2gb},
      {{"worker_spawn_ms"}, bench_spawn},
      {{"death_to_failure_ms", "crash_to_next_result_ms", "crash_to_respawned_result_ms"}, bench_crash},
      {{"wrap_cold_compile_ms"}, bench_wrap_cold},
      {{"wrap_first_submit_overhead_us", "wrap_submit_overhead_us"}, bench_wrap_cached},
      {{"idle_worker_rss_kb"}, bench_rss},
      {{"decode_int_us", "decode_string_1k_us", "decode_vector_double_1m_us", "decode_vector_string_10k_us",
        "decode_map_string_int_10k_us", "decode_unordered_map_10k_us", "decode_vector_struct_10k_us"},
       bench_decode},
      {{"floor_pingpong_us"}, bench_floor_pingpong},
      {{"floor_socketpair_8mb_ms"},
       [](const Options& o) {
         return bench_floor_socketpair(o, mb8, "floor_socketpair_8mb_ms", o.quick ? 3 : 10);
       }},
      {{"floor_socketpair_80mb_ms"},
       [](const Options& o) {
         return bench_floor_socketpair(o, mb80, "floor_socketpair_80mb_ms", o.quick ? 2 : 5);
       }},
      {{"floor_memcpy_8mb_ms"},
       [](const Options& o) {
         return bench_floor_memcpy(o, mb8, "floor_memcpy_8mb_ms", o.quick ? 3 : 10);
       }},
      {{"floor_memcpy_80mb_ms"},
       [](const Options& o) {
         return bench_floor_memcpy(o, mb80, "floor_memcpy_80mb_ms", o.quick ? 2 : 5);
       }},
  };
}

void usage(std::ostream& os) {
  os << "usage: ferry-bench [--quick] [--contained] [--trace] [--only METRIC]... [--list]\n"
        "  --quick        fewer repetitions and smaller counts (a smoke run)\n"
        "  --only METRIC  run only the measurement that yields METRIC, print only METRIC\n"
        "                 (repeatable: the measurements of every METRIC given)\n"
        "  --contained    every pool with limits and a sandbox (what containment costs)\n"
        "  --trace        every pool writes a trace file (what tracing costs)\n"
        "  --list         print the metric names and exit\n"
        "Prints one JSON object per metric on stdout.\n";
}

int run(int argc, char** argv) {
  Options options;
  std::vector<std::string> only;
  auto wanted = [&](const std::string& name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--cold-child") return cold_child();
    if (a == "--wrap-child" && i + 1 < argc) return wrap_child(argv[i + 1]);
    if (a == "--large-child" && i + 2 < argc)
      return large_child(std::strtoull(argv[i + 1], nullptr, 10), std::atoi(argv[i + 2]));
    if (a == "--quick") {
      options.quick = true;
    } else if (a == "--contained") {
      ::setenv("FERRY_BENCH_CONTAINED", "1", 1);
    } else if (a == "--trace") {
      ::setenv("FERRY_BENCH_TRACE", "1", 1);
    } else if (a == "--only" && i + 1 < argc) {
      only.push_back(argv[++i]);
    } else if (a == "--list") {
      for (const auto& g : all_groups())
        for (const auto& n : g.names) std::cout << n << "\n";
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage(std::cout);
      return 0;
    } else {
      std::cerr << "ferry-bench: unknown argument '" << a << "'\n";
      usage(std::cerr);
      return 2;
    }
  }
  auto groups = all_groups();
  for (const auto& name : only) {
    bool known = std::any_of(groups.begin(), groups.end(), [&](const Group& g) {
      return std::find(g.names.begin(), g.names.end(), name) != g.names.end();
    });
    if (!known) {
      std::cerr << "ferry-bench: unknown metric '" << name << "' (see --list)\n";
      return 2;
    }
  }
  int status = 0;
  for (const auto& g : groups) {
    if (std::none_of(g.names.begin(), g.names.end(), wanted)) continue;
    try {
      for (const auto& m : g.run(options))
        if (wanted(m.name)) print_metric(m);
    } catch (const std::exception& e) {
      std::cerr << "ferry-bench: " << g.names.front() << ": " << e.what() << "\n";
      for (const auto& n : g.names)
        if (wanted(n)) print_failure(n, e.what());
      status = 1;
    }
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "ferry-bench: " << e.what() << "\n";
    return 1;
  } catch (...) {
    std::cerr << "ferry-bench: unknown exception\n";
    return 1;
  }
}
