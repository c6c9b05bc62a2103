// SPDX-License-Identifier: BSD-3-Clause
// ferry-mpi-bench: times the "mpi" backend (issue 13), one JSON object per metric, as ferry-bench.
//
//   Job of N:  mpirun -n 1 ferry-mpi-bench [options] : -n 2 ferry-mpi-worker
//   Spawn:     mpirun -n 1 ferry-mpi-bench [options]      (or run alone, as an MPI singleton)
//
// Modes (one per run):
//   (default)    round trip median and p90, "submit one by one, then get all" rate, map
//                chunksize 1000 rate, then the host's and the agents' CPU while idle
//   --ranks      item 2: every agent of the job as a worker; time to the first result, 20,000
//                tasks checked one by one, tasks per worker, the host's CPU during the run and
//                while idle, the agents' CPU while idle
//   --dead-rank  one slow task per worker, then SIGKILL the agent (rank) of one worker: time until
//                its future fails with ferry::TerminatedWorkerError (set FERRY_MPI_TIMEOUT_MS),
//                then small work and round trips on the ranks left
// Options: --workers N (default 2; 0 = every agent of the job), --roundtrips N (1000),
//   --submits N (20000), --map-inputs N (200000), --map-runs N (3), --tasks N (20000, --ranks),
//   --idle-seconds S (2), --timeout S (900: the whole run; past it the program exits 3).
//
// Every metric prints {"metric": ..., "value": ..., "unit": ..., "note": ...} on its own line; one
// that could not be measured prints "value": null and the error in its note, and the exit status
// is then 1. Wrong results are errors, never figures. The hub is a thread of this process, so the
// host's CPU (getrusage) is the hub's plus the pool's, whose own threads only wait here. An agent
// is found as the parent of its worker (/proc/<worker>/stat: this machine only); its CPU is the
// sum of its threads' run time (/proc/<pid>/task/*/schedstat, or utime+stime of /proc/<pid>/stat).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
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
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <ferry/ferry.hpp>
#include <ferry/mpi.hpp>

#include "math.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  std::string mode = "speed";
  std::size_t workers = 2;
  int roundtrips = 1000;
  int submits = 20'000;
  int map_inputs = 200'000;
  int map_runs = 3;
  int tasks = 20'000;
  double idle_seconds = 2;
  int timeout_s = 900;
};

bool failed = false;  // a metric could not be measured, or a result was wrong

// ---- output ---------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      std::array<char, 8> esc{};
      std::snprintf(esc.data(), esc.size(), "\\u%04x", static_cast<unsigned>(c));
      out += esc.data();
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), std::fabs(x) >= 1e6 ? "%.0f" : "%.6g", x);
  return buf.data();
}

void emit(const std::string& name, double value, const std::string& unit, const std::string& note) {
  std::cout << "{\"metric\": " << json_string(name) << ", \"value\": " << json_number(value)
            << ", \"unit\": " << json_string(unit) << ", \"note\": " << json_string(note) << "}"
            << std::endl;
}

void emit_failure(const std::vector<std::string>& names, const std::string& error) {
  failed = true;
  for (const auto& name : names)
    std::cout << "{\"metric\": " << json_string(name) << ", \"value\": null, \"unit\": \"\", \"note\": "
              << json_string("error: " + error) << "}" << std::endl;
}

/// Runs one measurement; if it throws, its metrics are printed as failures and the run goes on.
void measure(const std::vector<std::string>& names, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    emit_failure(names, e.what());
  }
}

std::string fmt(double x, int digits = 3) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%.*f", digits, x);
  return buf.data();
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("wrong result: " + what);
}

// ---- statistics -----------------------------------------------------------------------------

double median(std::vector<double> v) {
  if (v.empty()) throw std::logic_error("median of an empty sample");
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Nearest-rank percentile, p in [0, 100].
double percentile(std::vector<double> v, double p) {
  if (v.empty()) throw std::logic_error("percentile of an empty sample");
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- processes and CPU time -----------------------------------------------------------------

/// Fields of /proc/<pid>/stat after the command (which may hold spaces): state is [0], ppid [1].
std::vector<std::string> stat_fields(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  auto close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> out;
  for (std::string f; rest >> f;) out.push_back(f);
  return out;
}

int parent_of(int pid) {
  auto f = stat_fields(pid);
  return f.size() > 1 ? std::atoi(f[1].c_str()) : 0;
}

/// CPU seconds this process has used, every thread (the hub's included).
double self_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// CPU seconds process `pid` has used, all its threads; negative when it cannot be read.
double process_cpu_seconds(int pid) {
  const fs::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  double ns = 0;
  bool any = false;
  for (const auto& t : fs::directory_iterator(tasks, ec)) {
    std::ifstream in(t.path() / "schedstat");
    double run_ns = 0;
    if (in >> run_ns) {
      ns += run_ns;
      any = true;
    }
  }
  if (any) return ns / 1e9;
  // No schedstat (a kernel without CONFIG_SCHED_INFO): utime + stime, in clock ticks.
  auto f = stat_fields(pid);
  if (f.size() < 13) return -1;
  return (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// The agents (ranks) running the pool's workers: each worker's parent.
std::vector<int> agents_of(const std::vector<int>& workers) {
  std::vector<int> out;
  for (int w : workers) {
    int p = parent_of(w);
    if (p > 1) out.push_back(p);
  }
  return out;
}

/// Idle CPU over `seconds` with nothing submitted: the host's, each agent's and each worker's,
/// as percent of one core.
void measure_idle(ferry::Executor& ex, double seconds) {
  measure({"idle_host_cpu_percent", "idle_agent_cpu_percent_max", "idle_worker_cpu_percent_max"}, [&] {
    auto workers = ex.worker_pids();
    auto agents = agents_of(workers);
    if (agents.size() != workers.size())
      throw std::runtime_error("the agent (parent) of a worker was not found in /proc: are the ranks on another machine?");
    std::this_thread::sleep_for(200ms);  // let the last replies settle
    std::vector<double> a0, w0;
    for (int p : agents) a0.push_back(process_cpu_seconds(p));
    for (int p : workers) w0.push_back(process_cpu_seconds(p));
    double h0 = self_cpu_seconds();
    auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    double wall = ms_since(t0) / 1000;
    double host = (self_cpu_seconds() - h0) / wall * 100;
    auto percents = [&](const std::vector<int>& pids, const std::vector<double>& before, std::string& note) {
      std::vector<double> out;
      for (std::size_t i = 0; i < pids.size(); ++i) {
        double now = process_cpu_seconds(pids[i]);
        if (now < 0 || before[i] < 0)
          throw std::runtime_error("process " + std::to_string(pids[i]) + " ended during the idle window");
        out.push_back((now - before[i]) / wall * 100);
        note += (i ? ", " : "") + std::to_string(pids[i]) + ": " + fmt(out.back(), 2) + " %";
      }
      return out;
    };
    std::string agent_note, worker_note;
    auto agent_pc = percents(agents, a0, agent_note);
    auto worker_pc = percents(workers, w0, worker_note);
    std::string window = fmt(wall, 2) + " s idle after the work, nothing submitted";
    emit("idle_host_cpu_percent", host, "% of a core",
         "host process (the hub is one of its threads), user+sys from getrusage over " + window);
    emit("idle_agent_cpu_percent_max", *std::max_element(agent_pc.begin(), agent_pc.end()), "% of a core",
         "max over the " + std::to_string(agents.size()) +
             " agents (ferry-mpi-worker, found as the workers' parents) over " + window + "; each: " + agent_note);
    emit("idle_worker_cpu_percent_max", *std::max_element(worker_pc.begin(), worker_pc.end()), "% of a core",
         "max over the ferry-workers the agents run, over " + window + "; each: " + worker_note);
  });
}

// ---- the pool -------------------------------------------------------------------------------

ferry::ExecutorOptions mpi_options(std::size_t workers) {
  ferry::ExecutorOptions o;
  o.max_workers = workers;  // 0: every agent of the job (the pool asks the backend how many)
  o.backend = "mpi";
  return o;
}

/// Every worker up and each has run square, so the math plugin is loaded everywhere.
void warm(ferry::Executor& ex) {
  if (!ex.warm_up(120s)) throw std::runtime_error("warm_up: the workers were not all up within 120 s");
  std::size_t n = ex.worker_pids().size();
  for (int round = 0; round < 20; ++round) {
    std::vector<ferry::Future<int>> fs;
    for (std::size_t i = 0; i < 4 * n; ++i) fs.push_back(ex.submit(square, static_cast<int>(i)));
    for (std::size_t i = 0; i < fs.size(); ++i) check(fs[i].get() == static_cast<int>(i * i), "square warm-up");
  }
}

std::vector<int> make_inputs(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i % 1000;
  return v;
}

long long sum_of_squares(const std::vector<int>& in) {
  long long s = 0;
  for (int x : in) s += static_cast<long long>(x) * x;
  return s;
}

/// The transport Open MPI was told to use, for the notes.
std::string setting() {
  const char* btl = std::getenv("OMPI_MCA_btl");
  return std::string("btl ") + (btl ? btl : "(Open MPI's choice)");
}

// ---- speed (item 1) -------------------------------------------------------------------------

void speed(const Options& o) {
  ferry::Executor ex(mpi_options(o.workers));
  warm(ex);
  const std::string pool = "pool of " + std::to_string(ex.worker_pids().size()) + " on MPI ranks, " + setting();

  measure({"roundtrip_us_median", "roundtrip_us_p90"}, [&] {
    for (int i = 0; i < 100; ++i) check(ex.submit(square, i).get() == i * i, "square warm-up");
    std::vector<double> us;
    for (int i = 0; i < o.roundtrips; ++i) {
      int x = i % 1000;
      auto t0 = Clock::now();
      int v = ex.submit(square, x).get();
      us.push_back(ms_since(t0) * 1000);
      check(v == x * x, "square");
    }
    std::string note = "submit(square, i).get(), one at a time, " + std::to_string(o.roundtrips) +
                       " after 100 warm-up calls; " + pool + "; min " + fmt(*std::min_element(us.begin(), us.end())) +
                       ", p10 " + fmt(percentile(us, 10)) + ", p99 " + fmt(percentile(us, 99)) + ", max " +
                       fmt(*std::max_element(us.begin(), us.end()));
    emit("roundtrip_us_median", median(us), "us", note);
    emit("roundtrip_us_p90", percentile(us, 90), "us", note);
  });

  measure({"submit_tasks_per_s"}, [&] {
    auto inputs = make_inputs(o.submits);
    std::vector<ferry::Future<int>> futures;
    futures.reserve(inputs.size());
    auto t0 = Clock::now();
    for (int x : inputs) futures.push_back(ex.submit(square, x));
    double submitted = ms_since(t0);
    long long sum = 0;
    for (std::size_t i = 0; i < futures.size(); ++i) {
      int v = futures[i].get();
      check(v == inputs[i] * inputs[i], "square of task " + std::to_string(i));
      sum += v;
    }
    double total = ms_since(t0);
    check(sum == sum_of_squares(inputs), "sum of squares");
    emit("submit_tasks_per_s", o.submits / (total / 1000), "tasks/s",
         std::to_string(o.submits) + " submit(square, i) one by one, then get() all in order; total " +
             fmt(total, 1) + " ms, of which submitting " + fmt(submitted, 1) + " ms; " + pool);
  });

  measure({"map_chunk1000_tasks_per_s"}, [&] {
    auto inputs = make_inputs(o.map_inputs);
    const long long expect = sum_of_squares(inputs);
    std::vector<double> rates;
    for (int r = 0; r < o.map_runs; ++r) {
      auto t0 = Clock::now();
      std::vector<int> out = ex.map(square, inputs, {.chunksize = 1000});
      double ms = ms_since(t0);
      check(out.size() == inputs.size(), "map size");
      for (std::size_t i = 0; i < out.size(); ++i) check(out[i] == inputs[i] * inputs[i], "map element");
      check(std::accumulate(out.begin(), out.end(), 0LL) == expect, "map sum");
      rates.push_back(o.map_inputs / (ms / 1000));
    }
    std::string each;
    for (double r : rates) each += (each.empty() ? "" : ", ") + fmt(r, 0);
    emit("map_chunk1000_tasks_per_s", median(rates), "tasks/s",
         "map(square, " + std::to_string(o.map_inputs) + " ints, chunksize 1000), median of " +
             std::to_string(o.map_runs) + " runs (" + each + "); " + pool);
  });

  measure_idle(ex, o.idle_seconds);
  ex.shutdown();
}

// ---- many ranks (item 2) --------------------------------------------------------------------

void ranks(const Options& o) {
  auto created = Clock::now();
  ferry::Executor ex(mpi_options(o.workers));
  int first = 0;
  measure({"first_result_ms"}, [&] {
    first = ex.submit(square, 12).get();
    check(first == 144, "first square");
    emit("first_result_ms", ms_since(created), "ms",
         "Executor constructed (MPI initialised by the hub on first use) -> submit(square, 12).get()");
  });
  if (first != 144) return;
  measure({"all_workers_up_ms"}, [&] {
    if (!ex.warm_up(300s)) throw std::runtime_error("warm_up: the workers were not all up within 300 s");
    emit("all_workers_up_ms", ms_since(created), "ms",
         "Executor constructed -> warm_up() true: every worker has said hello (" +
             std::to_string(ex.worker_pids().size()) + " workers)");
  });
  const auto workers = ex.worker_pids();
  emit("workers", static_cast<double>(workers.size()), "workers",
       "the pool's workers after warm_up (max_workers " +
           (o.workers ? std::to_string(o.workers) : std::string("0: one per agent of the job")) + "); " + setting());

  measure({"tasks_per_s", "host_cpu_s", "host_cpu_us_per_task", "host_cpu_percent", "results_wrong",
           "tasks_per_worker_min", "tasks_per_worker_max"},
          [&] {
    // Even tasks: square(i % 1000), checked exactly. Odd tasks: worker_pid(), which must be one of
    // the pool's workers; they tell how the work was spread.
    const int n = o.tasks;
    std::vector<ferry::Future<int>> futures;
    futures.reserve(static_cast<std::size_t>(n));
    double cpu0 = self_cpu_seconds();
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i)
      futures.push_back(i % 2 == 0 ? ex.submit(square, i % 1000) : ex.submit(worker_pid));
    std::map<int, long> per_worker;
    for (int w : workers) per_worker[w] = 0;
    long wrong = 0;
    std::string first_wrong;
    for (int i = 0; i < n; ++i) {
      std::string what;
      try {
        int v = futures[static_cast<std::size_t>(i)].get();
        if (i % 2 == 0) {
          if (v != (i % 1000) * (i % 1000)) what = "square(" + std::to_string(i % 1000) + ") = " + std::to_string(v);
        } else if (auto it = per_worker.find(v); it != per_worker.end()) {
          ++it->second;
        } else {
          what = "worker_pid() = " + std::to_string(v) + ", not a worker of the pool";
        }
      } catch (const std::exception& e) {
        what = std::string("failed: ") + e.what();
      }
      if (!what.empty() && wrong++ == 0) first_wrong = "task " + std::to_string(i) + ": " + what;
    }
    double wall = ms_since(t0) / 1000;
    double cpu = self_cpu_seconds() - cpu0;
    auto after = ex.worker_pids();
    std::string note = std::to_string(n) + " tasks submitted one by one, then got in order; " +
                       std::to_string(workers.size()) + " workers; " + fmt(wall, 2) + " s";
    emit("tasks_per_s", n / wall, "tasks/s", note);
    emit("host_cpu_s", cpu, "s", "host process user+sys (hub thread included) during the run; " + note);
    emit("host_cpu_us_per_task", cpu / n * 1e6, "us", "host CPU during the run / tasks; " + note);
    emit("host_cpu_percent", cpu / wall * 100, "% of a core", "host CPU during the run / its wall time; " + note);
    std::string spread;
    long lo = -1, hi = 0;
    for (const auto& [pid, count] : per_worker) {
      spread += (spread.empty() ? "" : ", ") + std::to_string(count);
      lo = lo < 0 ? count : std::min(lo, count);
      hi = std::max(hi, count);
    }
    std::string bal = "of the " + std::to_string(n / 2) + " worker_pid() tasks (every other one), per worker: " +
                      spread + " (even share " + fmt(static_cast<double>(n / 2) / static_cast<double>(workers.size()), 0) + ")";
    emit("tasks_per_worker_min", static_cast<double>(lo), "tasks", bal);
    emit("tasks_per_worker_max", static_cast<double>(hi), "tasks", bal);
    if (after != workers) note += "; the pool's workers changed during the run";
    emit("results_wrong", static_cast<double>(wrong), "results",
         "results not as expected (wrong value, failed future, pid of no worker); " +
             (wrong ? first_wrong : std::string("none")) + "; " + note);
    if (wrong) failed = true;
  });

  measure_idle(ex, o.idle_seconds);
  ex.shutdown();
}

// ---- dead rank (item 2) ---------------------------------------------------------------------

void dead_rank(const Options& o) {
  measure({"dead_rank_detect_ms", "dead_rank_rest_ms", "dead_rank_after_roundtrip_us"}, [&] {
    ferry::Executor ex(mpi_options(o.workers));
    if (!ex.warm_up(300s)) throw std::runtime_error("warm_up: the workers were not all up within 300 s");
    auto workers = ex.worker_pids();
    if (workers.size() < 2) throw std::runtime_error("needs at least 2 workers (one to lose, one to go on)");
    // One slow task per worker: concurrent submissions go to the least-loaded worker.
    std::vector<ferry::Future<int>> slow;
    for (std::size_t i = 0; i < workers.size(); ++i) slow.push_back(ex.submit(slow_identity, static_cast<int>(i), 60'000));
    std::this_thread::sleep_for(300ms);  // every task has reached its worker
    int agent = parent_of(workers[0]);
    if (agent <= 1) throw std::runtime_error("the agent of worker " + std::to_string(workers[0]) + " was not found");
    auto killed = Clock::now();
    if (::kill(agent, SIGKILL) != 0) throw std::runtime_error("kill(" + std::to_string(agent) + "): " + std::strerror(errno));
    auto [done, pending] = ferry::wait(slow, ferry::Return::first_completed, std::chrono::duration<double>(60));
    double ms = ms_since(killed);
    if (done.empty()) throw std::runtime_error("no task failed within 60 s of killing agent " + std::to_string(agent));
    std::string what;
    try {
      done.front().get();
      throw std::runtime_error("a slow task returned instead of failing");
    } catch (const ferry::TerminatedWorkerError& e) {
      what = e.what();
    }
    const char* t = std::getenv("FERRY_MPI_TIMEOUT_MS");
    emit("dead_rank_detect_ms", ms, "ms",
         "SIGKILL of the agent (pid " + std::to_string(agent) + ") of a worker running slow_identity -> its future "
         "fails with TerminatedWorkerError; FERRY_MPI_TIMEOUT_MS=" + (t ? t : std::string("unset (3000)")) + ", " +
             std::to_string(workers.size()) + " workers; error: " + what);
    // The other ranks go on: their slow tasks are cancelled (their workers killed and replaced on
    // the same ranks), and small work still runs.
    for (auto& f : pending) f.cancel({.kill_running = true});
    auto t_rest = Clock::now();
    std::vector<int> in(100);
    std::iota(in.begin(), in.end(), 0);
    auto out = ex.map(square, in, {.chunksize = 1});
    for (int x : in) check(out[static_cast<std::size_t>(x)] == x * x, "square after the loss");
    emit("dead_rank_rest_ms", ms_since(t_rest), "ms",
         "the other slow tasks cancelled (kill_running: their workers are replaced) -> map(square, 100 ints, "
         "chunksize 1) done on the ranks left, every result right");
    // And the round trip on the ranks left: a dead peer must not slow the transport down for the
    // others (Open MPI 4.1's TCP did, to one look every 10 ms, before mpi_event_tick_rate=1).
    std::vector<double> us;
    for (int i = 0; i < 1000; ++i) {
      auto t0 = Clock::now();
      int v = ex.submit(square, i).get();
      us.push_back(ms_since(t0) * 1000);
      check(v == i * i, "square after the loss");
    }
    emit("dead_rank_after_roundtrip_us", median(us), "us",
         "then submit(square, i).get(), one at a time, 1000 on the ranks left, median; " + setting() + "; p90 " +
             fmt(percentile(us, 90)) + ", max " + fmt(*std::max_element(us.begin(), us.end())));
    ex.shutdown({.wait = false, .kill_workers = true});
  });
}

// ---- main -----------------------------------------------------------------------------------

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "ferry-mpi-bench: " << why << "\n"
            << "usage: ferry-mpi-bench [--ranks | --dead-rank] [--workers N] [--roundtrips N] [--submits N]\n"
            << "         [--map-inputs N] [--map-runs N] [--tasks N] [--idle-seconds S] [--timeout S]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto number = [&]() -> double {
      if (i + 1 >= argc) usage(a + " needs a value");
      char* end = nullptr;
      double v = std::strtod(argv[++i], &end);
      if (!end || *end || v < 0) usage("bad value for " + a + ": " + argv[i]);
      return v;
    };
    if (a == "--ranks") {
      o.mode = "ranks";
      o.workers = 0;
    } else if (a == "--dead-rank") {
      o.mode = "dead-rank";
      o.workers = 0;
    } else if (a == "--workers") {
      o.workers = static_cast<std::size_t>(number());
    } else if (a == "--roundtrips") {
      o.roundtrips = std::max(1, static_cast<int>(number()));
    } else if (a == "--submits") {
      o.submits = std::max(1, static_cast<int>(number()));
    } else if (a == "--map-inputs") {
      o.map_inputs = std::max(1, static_cast<int>(number()));
    } else if (a == "--map-runs") {
      o.map_runs = std::max(1, static_cast<int>(number()));
    } else if (a == "--tasks") {
      o.tasks = std::max(2, static_cast<int>(number()));
    } else if (a == "--idle-seconds") {
      o.idle_seconds = number();
    } else if (a == "--timeout") {
      o.timeout_s = std::max(1, static_cast<int>(number()));
    } else {
      usage("unknown argument " + a);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::mpi::serve(argc, argv);  // `mpirun -n N ferry-mpi-bench`: ranks 1.. are agents
  Options o = parse(argc, argv);
  ferry::mpi::enable();
  // A hang (a rank that never answers, a lost reply) must end the run, not the caller's patience:
  // exiting non-zero makes mpirun end the whole job.
  std::thread([limit = o.timeout_s] {
    std::this_thread::sleep_for(std::chrono::seconds(limit));
    std::cout << "{\"metric\": \"timeout\", \"value\": null, \"unit\": \"\", \"note\": \"error: ferry-mpi-bench did not finish within "
              << limit << " s\"}" << std::endl;
    std::_Exit(3);
  }).detach();
  try {
    if (o.mode == "ranks") {
      ranks(o);
    } else if (o.mode == "dead-rank") {
      dead_rank(o);
    } else {
      speed(o);
    }
  } catch (const std::exception& e) {
    // The executor itself could not be made or shut down.
    emit_failure({"executor"}, e.what());
  }
  ferry::mpi::finalize();
  return failed ? 1 : 0;
}
