// SPDX-License-Identifier: BSD-3-Clause
// A host for the MPI tests, run under mpirun (or alone, as an MPI singleton). Every rank but 0
// serves as a node agent; rank 0 runs one scenario, checks what it sees, prints "ok <scenario>"
// at the end and exits 0; a failed check prints "FAILED: ..." and exits 1.
//   mpi_host <scenario> <plugin dir> [<workers after> | <scratch dir>]
//   basics       submit, map (small and chunked), threads submitting at once, a large argument,
//                a task exception, a crashed worker, shutdown; then workers recycled after each
//                task
//   killed_rank  SIGKILL the node agent (the rank) of a running task: TerminatedWorkerError
//                within the heartbeat deadline; the other ranks go on working, and the pool
//                has <workers after> workers afterwards (1 when the job's ranks are all there
//                is, 2 when a spawned agent is replaced)
//   last_rank_killed  the only agent of the job is killed: its task fails, and later work fails
//                with BrokenProcessPool instead of waiting for a rank that will never come
//   missing_agent  (run with FERRY_MPI_WORKER naming no file) work fails with BrokenProcessPool
//                naming the agent, at once rather than never
//   missing_worker  (run with FERRY_WORKER naming no file, or a file that cannot be run) work
//                fails with BrokenProcessPool naming the rank, its node and the path it tried
//   spawn_refused  (run as one rank under srun, whose PMIx server does not spawn) work fails with
//                BrokenProcessPool saying MPI_Comm_spawn failed, rather than waiting for an agent
//   host_killed  writes "<agent pid> <worker pid>" per worker to <scratch dir>/pids, then
//                SIGKILLs itself: the agents must notice, stop their workers and leave
//   suspended    every process of the job (but mpirun) is stopped (SIGSTOP) for 4.5 s, longer
//                than the heartbeat deadline (FERRY_MPI_TIMEOUT_MS=3000), while a task runs on
//                each rank, then continued (SIGCONT), as scontrol suspend/resume or ^Z and fg
//                would: both tasks complete, both ranks serve the tasks that follow, and the
//                workers are the same all along
//   spawn_slow   (a singleton host, with FERRY_MPI_WORKER an agent that takes seconds to start)
//                3 workers, each agent spawned while the ones before it wait: none leaves, the
//                same 3 workers serve all along
//   large        arguments and a result larger than one MPI message (2 GiB - 1) travel in chunks:
//                bytes over several chunks come back in order (two at once, one per rank: the
//                hub reassembles both), an argument of 2 GiB + 1 MiB is summed by a worker, a
//                result of 2 GiB + 1 MiB arrives whole; the same workers all along
//   ship         a plugin task and a FERRY_WRAP task from <scratch dir>/plugins, their bytes
//                shipped to the agents (run with FERRY_MPI_SHIP=always)
//   refused_rank (beside one tests/support/mpi_hostile.cpp agent rank and one ferry-mpi-worker)
//                the host refuses the rank that breaks the protocol instead of ending: every
//                task completes on the other rank, and the pool settles on that one worker
//   silent_rank  (beside one tests/support/mpi_hostile.cpp rank that never says hello, or whose
//                worker never does, and one ferry-mpi-worker) every task runs on the other rank,
//                and shutdown() returns within half the peer timeout (FERRY_MPI_TIMEOUT_MS): the
//                silent rank runs none of the executor's calls, and nothing waits for it; then
//                ferry::mpi::finalize() returns within 5 s (that rank joins no MPI_Finalize, whose
//                fence the host waited in for finalize's 10 s)
//   late_leave   (beside the tests/support/mpi_hostile.cpp ranks late_hello and late_end, honest
//                but slow; FERRY_TEST_MPI_STARTED names a file late_end creates when its start
//                comes, late_hello that name with ".heard" when it has heard the host) a worker
//                asked for, its start on late_end's rank, both files there, a shutdown at once
//                and ferry::mpi::finalize(): the host waits for late_hello's hello and late_end's
//                report of its worker's end, which come only once it is leaving, and tells both a
//                plain quit (peer-lost, when it counted them lost)
//   refused_spawn  (a singleton host, FERRY_MPI_WORKER a script running an agent the hub refuses
//                at its hello: another MPI protocol, or a malformed environment) the work fails
//                with BrokenProcessPool, printed as "refused: <what>", which must say the rank's
//                reason (it waited for agents spawned again and again until the handshake
//                timeout, and said only that)
//   ship_rewritten  (FERRY_MPI_SHIP=always, FERRY_CACHE_DIR) the versioned plugin
//                <scratch dir>/plugins/libversioned.so answers 1; <scratch dir>/v2 (the same
//                length) is written over it in place and its mtime set back: new calls answer 2
//                (the hub offered the agents the old content key, and they loaded the old bytes
//                from their cache)
//   ship_refused the same plugin task, with a cache directory others can write
//                (FERRY_CACHE_DIR): nothing is written there, and the task fails with a
//                PluginError saying it was not shipped and why
//   hostile_worker (with FERRY_WORKER the fake worker, FERRY_FAKE_MODE=shm_truncate) a result
//                in a memfd its worker can shrink is refused by the agent, which goes on;
//                shm_sparse: a memfd without the memory it claims; shm_socket: a descriptor
//                that is no memfd, whose last close would block the agent for an hour
//   hostile_ring (with FERRY_WORKER the fake worker, FERRY_FAKE_MODE=ring_head or ring_tail) a
//                worker that corrupts an index of its shared-memory rings is stopped by its agent;
//                the call fails with TerminatedWorkerError saying why, and the next ones run
//   partial_hang  (with FERRY_WORKER the fake worker, FERRY_FAKE_MODE=partial_hang, one agent,
//                FERRY_MPI_TIMEOUT_MS=3000) square(1)'s worker writes part of its result frame and
//                hangs: the call fails at its deadline (4 s, past the peer timeout) with
//                TimeoutError, not as a rank that stopped answering (its agent must not wait for
//                the rest of the frame), and the rank runs the next calls on a new worker
//   trace        tasks, a map and a failure with ExecutorOptions::trace = <scratch dir>/trace.json
//                (test_mpi reads the file: a track per rank, named by rank and host)
//   closed_channel  a task closes its worker's channel and sleeps for 30 s: its agent must not
//                wait for the worker's end (it did, for good) but kill it after its grace; the
//                call fails with TerminatedWorkerError saying why, within seconds, and the rank
//                goes on serving
//   ship_checked (run with FERRY_MPI_SHIP=always, FERRY_CACHE_DIR and FERRY_PIPELINE_DEPTH=4) the
//                hostile plugin at two paths, <scratch dir>/a and <scratch dir>/b (a link to the
//                first), both submitted before either runs: both load the agent's checked copy
//                in its cache, never the host's path as it is; a function of this executable
//                fails as one in the main program, its loader pointed at a path that says why,
//                not at this executable
//   search_path  the test plugin libsearch.so in <scratch dir>/mine twice: with its search path
//                (RUNPATH) there, and with it in <scratch dir>/open, which others can write (the
//                library it needs is in both). Only this rank allows unsafe plugins
//                (FERRY_ALLOW_UNSAFE_PLUGINS=1 from here on), so only the agents judge them: the
//                first runs, and the second is neither loaded at its path nor shipped (the copy
//                would read that directory too): its call fails
//   second_executor  a second executor made while the first holds every rank of the job fails
//                its work at once with BrokenProcessPool saying why (it waited for handshakes
//                that never came, 30 s), the first goes on, and once the first is shut down the
//                second runs on the ranks it freed
//   second_executor_after_a_shutdown_without_waiting  the first executor's two workers each run a
//                call held by a file when it is shut down without waiting (as get_reusable_executor
//                replaces one): a second executor made then gets its ranks as those calls end (its
//                worker was refused at once, and its work failed with BrokenProcessPool)
//   second_executor_given_some_ranks  a second executor of default size made while the first
//                holds one of the two ranks: warm_up() is done with the one rank left (it waited
//                for a worker it could not have until its timeout) and a map runs on it; once the
//                first is shut down, it runs two calls at once
//   late_executor  (a job of N, FERRY_MPI_TIMEOUT_MS=3000) the host works for 5 s, longer than
//                the heartbeat deadline, before it makes its executor, as a program reading its
//                input would: the agents wait for it (they took the host for gone and left, and
//                every call failed with BrokenProcessPool), and both ranks run its calls
//   worker_environment  a task reads the variables that make a process a rank of the job
//                (Open MPI's, PMIx's and PMI's, Slurm's task ids): its agent has them, its worker
//                none; a user's settings, the job's description and what ExecutorOptions::env
//                gives stay
//   library_path <scratch dir> filtered|as_given|spawned  a task reads its LD_LIBRARY_PATH, the
//                agent's (the job's) and then ExecutorOptions::env's: filtered, it holds only
//                trusted absolute directories (as a local worker's); as_given
//                (FERRY_ALLOW_UNSAFE_PLUGINS=1 in the job), it is as it was; then an executor with
//                allow_unsafe_plugins gets ExecutorOptions::env's as it was. spawned (a singleton
//                host): filtered, and the spawned agent's own LD_LIBRARY_PATH holds only trusted
//                absolute directories and it mapped no file of <scratch dir>/open
//   loader_environment <scratch dir> world|spawned|spawned_unset  what the loader and glibc load
//                code from (LD_PRELOAD, GCONV_PATH) naming <scratch dir>/open (others can write it)
//                and <scratch dir>/mine (theirs alone), each holding libplain.so: world, given by
//                ExecutorOptions::env, a worker keeps mine alone, and with allow_unsafe_plugins
//                both; spawned (a singleton host), in this process's environment (LD_PRELOAD
//                open's then mine's, GCONV_PATH open), the spawned agent starts with LD_PRELOAD,
//                LD_AUDIT and GCONV_PATH empty (judged here, on the host's node, they may not hold
//                on the agent's) and maps nothing of either; its worker gets mine's, judged by the
//                agent, and maps nothing of open; spawned_unset, as spawned, then (its launcher
//                started with LD_PRELOAD, GCONV_PATH, LD_LIBRARY_PATH=open and LD_ORIGIN_PATH=mine)
//                this process unsets them all and a second agent is spawned: it starts with none
//                of the launcher's (LD_LIBRARY_PATH and LD_ORIGIN_PATH /dev/null), and so does its
//                worker
//   recycled_results  (FERRY_MPI_RINGS as given) workers recycled after every call
//                (max_tasks_per_child = 1), each answering with a result of 900 KiB, more than the
//                hub's socket to the pool takes at once: every result arrives whole, one by one
//                and 8 in flight (the worker's end was reported before the rest of its result had
//                reached the pool, which failed the call as terminated with exit code 0)
//   refused_descriptors <inline|agents|rings>  every rank (before it serves) drops CAP_SYS_RESOURCE and
//                CAP_SYS_ADMIN, puts 100 descriptors in flight on a UNIX socket and lowers its
//                soft RLIMIT_NOFILE to 128: the kernel refuses every memfd the host and the
//                agents pass (ETOOMANYREFS; the workers, root again, are exempt). inline (run with
//                FERRY_MPI_RINGS=0): a 3 MiB argument and result travel inline instead, on the same
//                worker; agents (FERRY_MPI_RINGS=0), as inline but the host passes its memfds
//                (the agent is refused the argument's: the hub sends it in chunks); rings: the
//                worker cannot be given its rings, a start failure said so
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ferry/ferry.hpp>
#include <ferry/mpi.hpp>

#include "crash.hpp"
#include "math.hpp"
#include "in_flight.hpp"

FERRY_WRAP(mpi_wrapped_triple,
int mpi_wrapped_triple(int x) { return 3 * x; })

namespace {

using Clock = std::chrono::steady_clock;

/// Defined in this executable, not in a plugin: a worker cannot run it (ship_checked).
int host_only_triple(int x) { return 3 * x; }

[[noreturn]] void fail(int line, const std::string& what) {
  std::cout << "FAILED: line " << line << ": " << what << std::endl;
  std::exit(1);
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) fail(__LINE__, #cond);   \
  } while (0)

/// Runs `f`; expects it to throw E.
template <class E, class F>
E expect_throw(int line, F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    fail(line, std::string("unexpected exception: ") + e.what());
  }
  fail(line, "no exception");
}

int parent_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  // pid (comm) state ppid ...: comm may hold spaces, so start after its closing parenthesis.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  char state = 0;
  int ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

ferry::ExecutorOptions mpi_options(const std::string& plugin_dir, std::size_t workers) {
  ferry::ExecutorOptions o;
  o.max_workers = workers;
  o.plugin_dirs = {plugin_dir};
  o.backend = "mpi";
  return o;
}

void basics(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  auto pids = ex.worker_pids();
  EXPECT(pids.size() == 2);
  for (int pid : pids) EXPECT(pid > 0 && pid != ::getpid());
  EXPECT(ex.submit(square, 7).get() == 49);
  EXPECT(ex.submit<std::string>("greet", std::string("mpi")).get() == "hello, mpi");

  std::vector<int> in(1000);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> want;
  for (int x : in) want.push_back(x * x);
  EXPECT(ex.map(square, in) == want);
  EXPECT(ex.map(square, in, {.chunksize = 1}) == want);

  // Threads submitting and waiting at once, one by one and in bursts: frames taken and handed
  // over in the pool's threads (one relays while the others write on their channels and read
  // them), every result its call's.
  {
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        try {
          for (int i = 0; i < 300; ++i) {
            int x = t * 1000 + i;
            if (ex.submit(square, x).get() != x * x) ++wrong;
          }
          std::vector<ferry::Future<int>> burst;
          for (int i = 0; i < 100; ++i) burst.push_back(ex.submit(square, t * 100 + i));
          for (int i = 0; i < 100; ++i)
            if (burst[static_cast<std::size_t>(i)].get() != (t * 100 + i) * (t * 100 + i)) ++wrong;
        } catch (const std::exception& e) {
          std::cout << "thread " << t << ": " << e.what() << std::endl;
          ++wrong;
        }
      });
    for (auto& th : threads) th.join();
    EXPECT(wrong == 0);
  }

  // Above the shared-memory threshold locally: inlined into the MPI message both ways.
  std::vector<char> big(8u << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31);
  EXPECT(ex.submit(echo_bytes, big).get() == big);

  auto task_error = expect_throw<ferry::TaskError>(__LINE__, [&] { ex.submit(::fail, 3).get(); });
  EXPECT(task_error.remote_type() == "std::invalid_argument");
  EXPECT(task_error.remote_message() == "fail: 3");

  // A worker that dies is reported exactly (its agent saw the signal) and replaced.
  auto died = expect_throw<ferry::TerminatedWorkerError>(__LINE__, [&] { ex.submit(segfault, 0).get(); });
  EXPECT(died.signal() == SIGSEGV);
  // Its crash report came through its agent too (with rings, written into the ring from the
  // signal handler).
  EXPECT(died.remote_stack().find("segfault") != std::string::npos);
  EXPECT(ex.submit(square, 9).get() == 81);
  // A child the task forked dies of a signal: the worker's handler runs in it, and must write
  // nothing into the worker's ring (its frames would be broken) nor end the worker.
  EXPECT(ex.submit(crash_in_child, 6).get() == 6);
  EXPECT(ex.submit(square, 5).get() == 25);

  ex.shutdown();
  expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { ex.submit(square, 1); });

  // Workers recycled after every task: each replacement waits for its rank to be free again.
  auto o = mpi_options(plugin_dir, 2);
  o.max_tasks_per_child = 1;
  ferry::Executor recycled(o);
  std::vector<int> few = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(recycled.map(square, few, {.chunksize = 1}) == std::vector<int>({1, 4, 9, 16, 25, 36, 49, 64}));
}

void killed_rank(const std::string& plugin_dir, std::size_t workers_after) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  auto pids = ex.worker_pids();
  EXPECT(pids.size() == 2);
  // One long task per worker, then the node agent (the rank) of the first worker is killed.
  auto a = ex.submit(slow_identity, 1, 15'000);
  auto b = ex.submit(slow_identity, 2, 15'000);
  int agent = parent_of(pids[0]);
  EXPECT(agent > 1);
  auto killed = Clock::now();
  EXPECT(::kill(agent, SIGKILL) == 0);
  // The task on the killed rank fails by the deadline; which one it is depends on dispatch.
  auto deadline = killed + std::chrono::seconds(30);
  ferry::Future<int>* lost = nullptr;
  while (!lost && Clock::now() < deadline) {
    for (auto* f : {&a, &b})
      if (f->wait_for(std::chrono::milliseconds(20))) lost = f;
  }
  EXPECT(lost != nullptr);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
  auto e = expect_throw<ferry::TerminatedWorkerError>(__LINE__, [&] { lost->get(); });
  EXPECT(std::string(e.what()).find("MPI rank") != std::string::npos);
  std::cout << "rank loss reported after " << took.count() << " ms: " << e.what() << std::endl;
  // The other rank keeps working: its task completes, and new work runs there.
  auto* kept = lost == &a ? &b : &a;
  EXPECT(kept->get() == (lost == &a ? 2 : 1));
  std::vector<int> in = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(ex.map(square, in) == std::vector<int>({1, 4, 9, 16, 25, 36, 49, 64}));
  // Calls one at a time on what is left: each is a message to a rank and one back.
  auto calls = Clock::now();
  for (int i = 0; i < 500; ++i) EXPECT(ex.submit(square, i).get() == i * i);
  auto calls_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - calls);
  std::cout << "500 calls one by one after the loss took " << calls_ms.count() << " ms" << std::endl;
  EXPECT(ex.warm_up());
  auto after = ex.worker_pids();
  EXPECT(after.size() == workers_after);
  EXPECT(std::find(after.begin(), after.end(), pids[0]) == after.end());  // the lost one is gone
  ex.shutdown({.wait = false, .kill_workers = true});
}

void refused_rank(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  std::vector<ferry::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(ex.submit(square, i));
  // A task sent to the refused rank's worker never started there (it never said hello): it runs
  // on the other rank instead.
  for (int i = 0; i < 20; ++i) EXPECT(futures[static_cast<std::size_t>(i)].get() == i * i);
  // All the workers the job has ranks for are up only once the hostile rank is refused: it
  // never starts one.
  EXPECT(ex.warm_up(std::chrono::seconds(30)));
  EXPECT(ex.worker_pids().size() == 1);
  std::vector<int> in = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(ex.map(square, in) == std::vector<int>({1, 4, 9, 16, 25, 36, 49, 64}));
}

void silent_rank(const std::string& plugin_dir) {
  const char* timeout = std::getenv("FERRY_MPI_TIMEOUT_MS");
  const long timeout_ms = timeout ? std::strtol(timeout, nullptr, 10) : 0;
  EXPECT(timeout_ms >= 10'000);  // the test gives one longer than the handshake timeout
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  std::vector<ferry::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(ex.submit(square, i));
  for (int i = 0; i < 20; ++i) EXPECT(futures[static_cast<std::size_t>(i)].get() == i * i);
  // The silent rank has no calls: shutting down must not wait for it to say hello, nor for it to
  // be declared dead at the peer timeout.
  const auto began = Clock::now();
  auto shutdown = std::async(std::launch::async, [&] { ex.shutdown(); });
  const bool in_time = shutdown.wait_for(std::chrono::milliseconds(timeout_ms / 2)) == std::future_status::ready;
  shutdown.wait();
  std::cout << "shutdown took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count() << " ms"
            << std::endl;
  EXPECT(in_time);
  // Nor does leaving MPI: the silent rank joins no MPI_Finalize (tests/support/mpi_hostile.cpp),
  // whose fence the host waited in for finalize()'s 10 s; it counts as lost now, and nobody
  // finalises. At most the 2 s given to the quit messages.
  const auto leaving = Clock::now();
  ferry::mpi::finalize();
  const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - leaving).count();
  std::cout << "finalize took " << left_ms << " ms" << std::endl;
  EXPECT(left_ms < 5000);
}

/// Beside the hostile ranks late_hello (its hello comes only once the host is leaving) and
/// late_end (it reports the end of a worker stopped before its hello only then): a worker asked
/// for, its start on late_end's rank, then a shutdown and ferry::mpi::finalize() at once. Both
/// ranks are honest, only slow: the host must wait for them (up to 2 s) and tell them a plain
/// quit, not count them lost (test_mpi reads what they were told).
void late_leave(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto f = ex.submit(square, 3);
  // late_end creates it when the start reaches it (test_mpi names a file of a fresh directory),
  // late_hello the same name with ".heard" when the host's first heartbeat reaches it.
  const char* started = std::getenv("FERRY_TEST_MPI_STARTED");
  EXPECT(started != nullptr);
  const auto until = Clock::now() + std::chrono::seconds(30);
  const std::string heard = std::string(started) + ".heard";  // late_hello heard the host
  while (!(std::filesystem::exists(started) && std::filesystem::exists(heard)) && Clock::now() < until)
    std::this_thread::yield();
  EXPECT(std::filesystem::exists(started));
  EXPECT(std::filesystem::exists(heard));
  ex.shutdown({.wait = false, .kill_workers = true});
  ferry::mpi::finalize();
}

void refused_spawn(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto f = ex.submit(square, 3);
  EXPECT(f.wait_for(std::chrono::seconds(60)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { f.get(); });
  std::cout << "refused: " << e.what() << std::endl;
}

/// Writes `bytes` over `file` in place (the same inode, no truncation), then sets its access and
/// modification times back to `before`'s: only its change time says it was written.
void write_in_place_keeping_mtime(const std::string& file, const std::string& bytes, const struct stat& before) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  EXPECT(fd >= 0);
  EXPECT(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  const struct timespec kept[2] = {before.st_atim, before.st_mtim};
  EXPECT(::utimensat(AT_FDCWD, file.c_str(), kept, 0) == 0);
}

std::int64_t ns(const struct timespec& t) { return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

void ship_rewritten(const std::string& scratch) {
  const std::string plugin = scratch + "/plugins/libversioned.so";
  std::string v2;
  {
    std::ifstream in(scratch + "/v2", std::ios::binary);
    v2.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ferry::Executor ex(mpi_options(scratch + "/plugins", 1));
  EXPECT(ex.submit<int>("plugin_version").get() == 1);
  struct stat before {};
  EXPECT(::stat(plugin.c_str(), &before) == 0);
  EXPECT(static_cast<std::size_t>(before.st_size) == v2.size());
  // Past the file's change time by a coarse clock's tick, so that the write gets another.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (ns(now) - ns(before.st_ctim) > 20'000'000) break;
    EXPECT(Clock::now() < deadline);
    std::this_thread::yield();
  }
  write_in_place_keeping_mtime(plugin, v2, before);
  struct stat after {};
  EXPECT(::stat(plugin.c_str(), &after) == 0);
  EXPECT(after.st_ino == before.st_ino && after.st_size == before.st_size && ns(after.st_mtim) == ns(before.st_mtim));
  if (ns(after.st_ctim) == ns(before.st_ctim)) {
    std::cout << "this file system stamped the write with the change time before it: nothing to show" << std::endl;
    return;
  }
  // The pool retires the worker that has version 1 (the file's identity moved with its change
  // time); its next worker is offered the new content.
  for (int i = 0; i < 4; ++i) EXPECT(ex.submit<int>("plugin_version").get() == 2);
  ex.shutdown();
}

void last_rank_killed(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  EXPECT(ex.warm_up());
  auto running = ex.submit(slow_identity, 1, 60'000);
  EXPECT(::kill(parent_of(ex.worker_pids().at(0)), SIGKILL) == 0);
  EXPECT(running.wait_for(std::chrono::seconds(30)));
  expect_throw<ferry::TerminatedWorkerError>(__LINE__, [&] { running.get(); });
  auto later = ex.submit(square, 2);
  EXPECT(later.wait_for(std::chrono::seconds(30)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { later.get(); });
  EXPECT(std::string(e.what()).find("every remote rank of the job has died") != std::string::npos);
  ex.shutdown({.wait = false, .kill_workers = true});
}

void late_executor(const std::string& plugin_dir) {
  // The program's own work before it needs workers, for longer than the agents wait for a silent
  // host (their FERRY_MPI_TIMEOUT_MS, which the test sets, plus 2 s): not synchronisation, the
  // case itself. Nothing the host could wait on says that time has passed on the agents' side.
  const char* timeout = std::getenv("FERRY_MPI_TIMEOUT_MS");
  const long timeout_ms = timeout ? std::strtol(timeout, nullptr, 10) : 0;
  EXPECT(timeout_ms > 0 && timeout_ms <= 10'000);  // the test gives one, short
  std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms + 2000));
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  EXPECT(ex.worker_pids().size() == 2);
  std::vector<ferry::Future<int>> calls;
  for (int i = 0; i < 20; ++i) calls.push_back(ex.submit(square, i));
  for (int i = 0; i < 20; ++i) EXPECT(calls[static_cast<std::size_t>(i)].get() == i * i);
  ex.shutdown();
}

void missing_agent(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto f = ex.submit(square, 3);
  EXPECT(f.wait_for(std::chrono::seconds(30)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { f.get(); });
  EXPECT(std::string(e.what()).find("FERRY_MPI_WORKER") != std::string::npos);
  std::cout << "missing agent: " << e.what() << std::endl;
}

void missing_worker(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto f = ex.submit(square, 3);
  EXPECT(f.wait_for(std::chrono::seconds(30)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { f.get(); });
  std::cout << "missing worker: " << e.what() << std::endl;
  const std::string what = e.what();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  // Rank 1 or 2 of the job of 3; on one machine, the agents' node is this one.
  EXPECT(what.find(std::string("MPI rank 1 on ") + host) != std::string::npos ||
         what.find(std::string("MPI rank 2 on ") + host) != std::string::npos);
  EXPECT(what.find(std::getenv("FERRY_WORKER")) != std::string::npos);
}

void spawn_refused(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto f = ex.submit(square, 3);
  EXPECT(f.wait_for(std::chrono::seconds(60)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { f.get(); });
  EXPECT(std::string(e.what()).find("MPI_Comm_spawn") != std::string::npos);
  std::cout << "spawn refused: " << e.what() << std::endl;
}

void host_killed(const std::string& plugin_dir, const std::string& scratch) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  auto pending = ex.submit(slow_identity, 1, 60'000);  // a worker busy when the host dies
  {
    std::ofstream out(scratch + "/pids");
    for (int pid : ex.worker_pids()) out << parent_of(pid) << " " << pid << "\n";
  }
  ::kill(::getpid(), SIGKILL);
}

void suspended(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  auto workers = ex.worker_pids();
  EXPECT(workers.size() == 2);
  auto a = ex.submit(slow_identity, 1, 1'000);  // one running on each rank while the job is stopped
  auto b = ex.submit(slow_identity, 2, 1'000);
  // mpirun puts each rank in a process group of its own (its worker in its agent's): the groups
  // of this rank and of both agents. A process outside them stops them all, this one included,
  // and continues them after a fixed time: the length of the stop is the point (longer than the
  // 3 s deadline), so the helper sleeps for it. Only async-signal-safe calls after fork().
  std::vector<pid_t> groups = {::getpgrp()};
  for (int w : workers) groups.push_back(::getpgid(parent_of(w)));
  for (pid_t g : groups) EXPECT(g > 1);
  const pid_t helper = ::fork();
  EXPECT(helper >= 0);
  if (helper == 0) {
    ::setsid();
    for (pid_t g : groups) ::kill(-g, SIGSTOP);
    timespec stop{4, 500'000'000};
    while (::nanosleep(&stop, &stop) != 0) {
    }
    for (pid_t g : groups) ::kill(-g, SIGCONT);
    ::_exit(0);
  }
  int st = 0;
  EXPECT(::waitpid(helper, &st, 0) == helper && WIFEXITED(st));  // returns once continued
  EXPECT(a.get() == 1);
  EXPECT(b.get() == 2);
  // Both ranks still serve: two tasks at once run on both workers.
  auto c = ex.submit(slow_identity, 3, 300);
  auto d = ex.submit(slow_identity, 4, 300);
  EXPECT(c.get() == 3);
  EXPECT(d.get() == 4);
  std::vector<int> in = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(ex.map(square, in) == std::vector<int>({1, 4, 9, 16, 25, 36, 49, 64}));
  EXPECT(ex.worker_pids() == workers);  // no rank was given up
  ex.shutdown();
}

void spawn_slow(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 3));
  EXPECT(ex.warm_up(std::chrono::seconds(60)));
  auto workers = ex.worker_pids();
  EXPECT(workers.size() == 3);
  std::vector<int> in = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(ex.map(square, in) == std::vector<int>({1, 4, 9, 16, 25, 36, 49, 64}));
  EXPECT(ex.worker_pids() == workers);  // no agent left, none replaced
  EXPECT(ex.stats().workers_started == 3);
  ex.shutdown();
}

/// A byte that depends on its position, also across 64 KiB blocks: misplaced chunks show.
char pattern_byte(std::uint64_t i) { return static_cast<char>(i * 7 + (i >> 16)); }

/// Results above Open MPI's eager limit from both ranks at once, many in flight: each rank's
/// stream of messages was kept in a vector whose growth copied the buffers that MPI was still
/// receiving into (the host crashed in malloc over TCP).
void many_results(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  for (int round = 0; round < 3; ++round) {
    std::vector<ferry::Future<std::vector<char>>> results;
    for (int i = 0; i < 40; ++i) results.push_back(ex.submit(make_bytes, std::uint64_t{300000} + i));
    for (int i = 0; i < 40; ++i) {
      std::vector<char> back = results[i].get();
      EXPECT(back.size() == std::size_t{300000} + i);
      EXPECT(std::all_of(back.begin(), back.end(), [](char c) { return c == 'x'; }));
    }
  }
  ex.shutdown();
}

/// Workers that leave after each call, each answering with more than the hub's socket to the
/// pool takes at once: the worker's end must reach the pool after its result, as locally.
void recycled_results(const std::string& plugin_dir) {
  auto o = mpi_options(plugin_dir, 1);
  o.max_tasks_per_child = 1;
  ferry::Executor ex(o);
  const std::uint64_t size = 900 * 1024;
  int failed = 0;
  std::string first;
  auto check = [&](ferry::Future<std::vector<char>>& f) {
    try {
      std::vector<char> back = f.get();
      if (back.size() != size || !std::all_of(back.begin(), back.end(), [](char c) { return c == 'x'; }))
        throw std::runtime_error("a wrong result");
    } catch (const std::exception& e) {
      if (failed++ == 0) first = e.what();
    }
  };
  for (int i = 0; i < 20; ++i) {
    auto f = ex.submit(make_bytes, size);
    check(f);
  }
  std::vector<ferry::Future<std::vector<char>>> burst;
  for (int i = 0; i < 8; ++i) burst.push_back(ex.submit(make_bytes, size));
  for (auto& f : burst) check(f);
  if (failed) std::cout << failed << " of 28 failed, the first: " << first << std::endl;
  EXPECT(failed == 0);
  ex.shutdown();
}

void large(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 2));
  EXPECT(ex.warm_up());
  auto workers = ex.worker_pids();
  EXPECT(workers.size() == 2);

  // Several chunks (64 MiB each) and a short last one, both ways, compared byte for byte; two at
  // once, so that the chunks of two ranks arrive interleaved (when the pool gives them to both).
  {
    std::vector<char> one((std::size_t{200} << 20) + 12345), two(one.size() - 1000);
    for (std::size_t i = 0; i < one.size(); ++i) one[i] = pattern_byte(i);
    for (std::size_t i = 0; i < two.size(); ++i) two[i] = pattern_byte(i + 3);
    auto a = ex.submit(echo_bytes, one);
    auto b = ex.submit(echo_bytes, two);
    EXPECT(a.get() == one);
    EXPECT(b.get() == two);
  }

  const std::uint64_t over = (std::uint64_t{2} << 30) + (std::uint64_t{1} << 20);  // 2 GiB + 1 MiB
  auto started = Clock::now();
  ferry::Future<std::uint64_t> sum;
  std::uint64_t want = 0;
  {
    std::vector<char> huge(over);
    for (std::uint64_t i = 0; i < over; ++i) {
      huge[i] = pattern_byte(i);
      want += static_cast<unsigned char>(huge[i]);
    }
    // Encoded when submitted: the vector can go before the task has run (less memory at once).
    sum = ex.submit(byte_sum, ferry::BytesView(huge));
  }
  EXPECT(sum.get() == want);
  auto took_in = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);

  started = Clock::now();
  {
    std::vector<char> back = ex.submit(make_bytes, over).get();
    EXPECT(back.size() == over);
    EXPECT(std::all_of(back.begin(), back.end(), [](char c) { return c == 'x'; }));
  }
  auto took_out = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  std::cout << "2 GiB + 1 MiB: argument summed in " << took_in.count() << " ms, result back in "
            << took_out.count() << " ms" << std::endl;

  EXPECT(ex.submit(square, 6).get() == 36);
  EXPECT(ex.worker_pids() == workers);  // the same workers all along
  ex.shutdown();
}

void ship(const std::string& scratch) {
  ferry::Executor ex(mpi_options(scratch + "/plugins", 2));
  EXPECT(ex.submit<int>("add", 20, 22).get() == 42);
  EXPECT(ex.submit(mpi_wrapped_triple, 14).get() == 42);
  std::vector<int> in = {1, 2, 3};
  EXPECT(ex.map(mpi_wrapped_triple, in) == std::vector<int>({3, 6, 9}));
  ex.shutdown();
}

void ship_refused(const std::string& scratch) {
  ferry::Executor ex(mpi_options(scratch + "/plugins", 2));
  auto e = expect_throw<ferry::PluginError>(__LINE__, [&] { ex.submit<int>("add", 20, 22).get(); });
  std::cout << "refused: " << e.what() << std::endl;
  EXPECT(std::string(e.what()).find("not shipped") != std::string::npos);
  ex.shutdown();
}

void hostile_worker(const std::string& plugin_dir) {
  // Run with FERRY_WORKER naming tests/support/fake_worker.cpp, FERRY_FAKE_MODE=shm_truncate:
  // square(1) is answered in a memfd its worker may still shrink (it does, at its next task);
  // shm_sparse: in a sealed memfd of 1 TiB with no page behind it, which the agent would read
  // and the hub allocate.
  const std::string mode = std::getenv("FERRY_FAKE_MODE") ? std::getenv("FERRY_FAKE_MODE") : "";
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  auto e = expect_throw<ferry::Error>(__LINE__, [&] { ex.submit(square, 1).get(); });
  std::cout << "refused: " << e.what() << std::endl;
  const char* why = mode == "shm_sparse" ? "memory behind it" : mode == "shm_socket" ? "not in a memfd" : "sealed";
  EXPECT(std::string(e.what()).find(why) != std::string::npos);
  EXPECT(ex.submit(square, 3).get() == 9);  // the agent is still there
  EXPECT(ex.submit(square, 4).get() == 16);
}

void hostile_ring(const std::string& plugin_dir) {
  // ring_head: square(1) is answered by a corrupt head. ring_tail: square(1) is answered, then
  // the worker corrupts the tail its agent writes against, and the next task cannot be written.
  const std::string mode = std::getenv("FERRY_FAKE_MODE") ? std::getenv("FERRY_FAKE_MODE") : "";
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  if (mode == "ring_tail") EXPECT(ex.submit(square, 1).get() == 1);
  auto e = expect_throw<ferry::TerminatedWorkerError>(__LINE__, [&] { ex.submit(square, mode == "ring_tail" ? 2 : 1).get(); });
  std::cout << "stopped: " << e.what() << std::endl;
  EXPECT(std::string(e.what()).find(mode == "ring_tail" ? "its ring from the agent is corrupt"
                                                        : "its ring to the agent is corrupt") != std::string::npos);
  EXPECT(ex.submit(square, 3).get() == 9);  // a new worker on the same agent
  EXPECT(ex.submit(square, 4).get() == 16);
}

void partial_hang(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  EXPECT(ex.submit(square, 2).get() == 4);
  auto e = expect_throw<ferry::TimeoutError>(
      __LINE__, [&] { ex.submit_with({.deadline = std::chrono::seconds(4)}, square, 1).get(); });
  std::cout << "timed out: " << e.what() << std::endl;
  EXPECT(ex.submit(square, 3).get() == 9);
  EXPECT(ex.submit(square, 4).get() == 16);
  ex.shutdown();
}

void closed_channel(const std::string& plugin_dir) {
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  EXPECT(ex.submit(square, 2).get() == 4);
  auto started = Clock::now();
  auto e = expect_throw<ferry::TerminatedWorkerError>(
      __LINE__, [&] { ex.submit<int>("close_channel_and_wait", 30).get(); });
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  std::cout << "stopped after " << took.count() << " ms: " << e.what() << std::endl;
  EXPECT(std::string(e.what()).find("closed its channel to the agent and went on running") != std::string::npos);
  // The grace is 1 s; the task would sleep 30 s, and the host's deadline for a silent rank is 3 s.
  EXPECT(took < std::chrono::seconds(20));
  EXPECT(ex.submit(square, 3).get() == 9);  // a new worker on the same rank
  EXPECT(ex.submit(square, 4).get() == 16);
  ex.shutdown();
}

void ship_checked(const std::string& scratch) {
  const char* cache = std::getenv("FERRY_CACHE_DIR");
  EXPECT(cache != nullptr);
  const std::string shipped = std::string(cache) + "/shipped/";
  ferry::Executor ex(mpi_options(scratch + "/a", 1));
  const ferry::TaskRef a{scratch + "/a/libhostile.so", "library_path"};
  const ferry::TaskRef b{scratch + "/b/libhostile.so", "library_path"};
  // One worker, both calls at once: the second path's offer (same content) reaches the agent
  // while the first still waits for the bytes.
  auto from_a = ex.submit<std::string>(a);
  auto from_b = ex.submit<std::string>(b);
  const std::string loaded_a = from_a.get(), loaded_b = from_b.get();
  std::cout << "loaded " << loaded_a << " and " << loaded_b << std::endl;
  EXPECT(loaded_a.rfind(shipped, 0) == 0);
  EXPECT(loaded_b == loaded_a);

  auto e = expect_throw<ferry::UnresolvableTaskError>(__LINE__, [&] { ex.submit(host_only_triple, 2).get(); });
  std::cout << "main program: " << e.what() << std::endl;
  EXPECT(std::string(e.what()).find("main program") != std::string::npos);
  // The error names the host's executable, and the worker never opened it: its loader found no
  // such file (the agent pointed it at a path that cannot load), where the executable itself
  // would have said it cannot load a position-independent executable.
  EXPECT(e.module().find("ferry_test_mpi_host") != std::string::npos);
  EXPECT(std::string(e.what()).find("no such file") != std::string::npos);
  EXPECT(ex.submit<std::string>(b).get() == loaded_a);  // the worker goes on
  ex.shutdown();
}

void trace(const std::string& plugin_dir, const std::string& scratch) {
  auto o = mpi_options(plugin_dir, 2);
  o.trace = scratch + "/trace.json";
  ferry::Executor ex(o);
  EXPECT(ex.warm_up());
  EXPECT(ex.submit(square, 7).get() == 49);
  std::vector<int> in = {1, 2, 3, 4, 5, 6};
  EXPECT(ex.map(square, in, {.chunksize = 2}) == std::vector<int>({1, 4, 9, 16, 25, 36}));
  expect_throw<ferry::TaskError>(__LINE__, [&] { ex.submit(::fail, 3).get(); });  // math.hpp's task, not fail() above
  auto s = ex.stats();
  EXPECT(s.submitted == 5);
  EXPECT(s.completed == 4);
  EXPECT(s.failed == 1);
  EXPECT(s.workers_started == 2);
  EXPECT(s.bytes_received > 0);
  ex.shutdown();
}

void second_executor(const std::string& plugin_dir) {
  ferry::Executor first(mpi_options(plugin_dir, 2));
  EXPECT(first.warm_up());
  ferry::Executor second(mpi_options(plugin_dir, 1));
  auto started = Clock::now();
  auto f = second.submit(square, 3);
  EXPECT(f.wait_for(std::chrono::seconds(60)));
  auto e = expect_throw<ferry::BrokenProcessPool>(__LINE__, [&] { f.get(); });
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  std::cout << "second executor failed after " << took.count() << " ms: " << e.what() << std::endl;
  EXPECT(std::string(e.what()).find("another executor of this process") != std::string::npos);
  EXPECT(took < std::chrono::seconds(8));  // not one handshake timeout (10 s), let alone three
  EXPECT(first.submit(square, 4).get() == 16);  // the first goes on
  first.shutdown();
  EXPECT(second.submit(square, 5).get() == 25);  // on a rank the first freed
  second.shutdown();
}

void second_executor_after_a_shutdown_without_waiting(const std::string& plugin_dir) {
  const std::string hold =
      (std::filesystem::temp_directory_path() / ("ferry-mpi-hold-" + std::to_string(::getpid()))).string();
  std::ofstream(hold).put('x');
  auto first = std::make_unique<ferry::Executor>(mpi_options(plugin_dir, 2));
  EXPECT(first->warm_up());
  auto a = first->submit(value_after_hold, 1, hold);
  auto b = first->submit(value_after_hold, 2, hold);
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (!(a.running() && b.running()) && Clock::now() < until) std::this_thread::yield();
  EXPECT(a.running() && b.running());
  first->shutdown({.wait = false});
  ferry::Executor second(mpi_options(plugin_dir, 1));
  auto f = second.submit(square, 3);
  // Refused, it failed within a few hundred ms (three start failures 50 and 100 ms apart); it
  // waits for a rank now, and none is free while the first's calls run.
  EXPECT(!f.wait_for(std::chrono::seconds(3)));
  ::unlink(hold.c_str());  // the first's calls end, and its workers leave
  EXPECT(a.get() == 1);
  EXPECT(b.get() == 2);
  EXPECT(f.get() == 9);
  second.shutdown();
  first.reset();
}

void second_executor_given_some_ranks(const std::string& plugin_dir) {
  auto first = std::make_unique<ferry::Executor>(mpi_options(plugin_dir, 1));
  EXPECT(first->warm_up());
  ferry::Executor second(mpi_options(plugin_dir, 0));  // as many as the job has ranks: two
  auto started = Clock::now();
  EXPECT(second.warm_up(std::chrono::seconds(30)));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  std::cout << "second executor warmed up in " << took.count() << " ms" << std::endl;
  EXPECT(took < std::chrono::seconds(8));  // not a handshake timeout (10 s)
  std::vector<int> in(40);
  std::iota(in.begin(), in.end(), 0);
  auto out = second.map(square, in);
  for (int i = 0; i < 40; ++i) EXPECT(out[static_cast<std::size_t>(i)] == i * i);
  auto s = second.stats();
  EXPECT(s.workers_started == 1);  // none asked for and given up
  EXPECT(first->submit(square, 4).get() == 16);  // the first goes on
  first->shutdown();
  first.reset();
  const std::string hold =
      (std::filesystem::temp_directory_path() / ("ferry-mpi-hold-" + std::to_string(::getpid()))).string();
  std::ofstream(hold).put('x');
  auto a = second.submit(value_after_hold, 1, hold);
  auto b = second.submit(value_after_hold, 2, hold);
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (!(a.running() && b.running()) && Clock::now() < until) std::this_thread::yield();
  EXPECT(a.running() && b.running());  // on both ranks
  ::unlink(hold.c_str());
  EXPECT(a.get() == 1);
  EXPECT(b.get() == 2);
  second.shutdown();
}

/// The environment a process was started with (/proc/PID/environ), as "\nNAME=value\n..." so
/// that "\nNAME=" finds a variable.
std::string start_environment(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string all = "\n", entry;
  while (std::getline(in, entry, '\0')) all += entry + "\n";
  return all;
}

void worker_environment(const std::string& plugin_dir) {
  auto o = mpi_options(plugin_dir, 1);
  o.env = {{"PMIX_RANK", "chosen by the host"}};
  ferry::Executor ex(o);
  EXPECT(ex.warm_up());
  auto getenv_in_worker = [&](const std::string& name) { return ex.submit(getenv_task, name).get(); };
  // What its launcher gave the agent (test_mpi adds PMI's and Slurm's task variables to the job's
  // environment, as srun would): the rank's identity and the way to its job's runtime.
  const std::string agent = start_environment(parent_of(ex.worker_pids().at(0)));
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_NAMESPACE", "PMIX_SERVER_URI2"})
    if (agent.find(std::string("\n") + name + "=") == std::string::npos) fail(__LINE__, std::string("the agent has no ") + name);
  for (const char* name :
       {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
        "OMPI_COMM_WORLD_NODE_RANK", "OMPI_UNIVERSE_SIZE", "OMPI_FILE_LOCATION", "OMPI_MCA_ess", "OMPI_MCA_ess_base_jobid",
        "OMPI_MCA_ess_base_vpid", "OMPI_MCA_pmix", "OMPI_MCA_orte_hnp_uri", "OMPI_MCA_orte_local_daemon_uri",
        "OMPI_MCA_orte_ess_num_procs", "OMPI_MCA_orte_launch", "PMIX_NAMESPACE", "PMIX_ID", "PMIX_SERVER_URI2",
        "PMIX_SERVER_URI21", "PMIX_SERVER_URI3", "PMIX_SERVER_URI4", "PMIX_SERVER_URI41", "PMIX_SERVER_TMPDIR",
        "PMIX_SECURITY_MODE", "PMI_RANK", "PMI_SIZE", "PMI_FD", "SLURM_PROCID", "SLURM_LOCALID"}) {
    const std::string value = getenv_in_worker(name);
    if (!value.empty()) fail(__LINE__, std::string("the worker has ") + name + "=" + value);
  }
  EXPECT(getenv_in_worker("PMIX_RANK") == "chosen by the host");      // ExecutorOptions::env
  EXPECT(getenv_in_worker("OMPI_MCA_btl") == std::getenv("OMPI_MCA_btl"));  // the user's settings
  EXPECT(getenv_in_worker("FERRY_TEST_NODE_SETTING") == "kept");
  EXPECT(getenv_in_worker("SLURM_JOB_NAME") == "kept");  // the job's description
  ex.shutdown();
}

void search_path(const std::string& scratch) {
  ::setenv("FERRY_ALLOW_UNSAFE_PLUGINS", "1", 1);  // this rank's: the agents are past serve()
  ferry::Executor ex(mpi_options(scratch + "/mine", 1));
  const ferry::TaskRef private_search{.library = scratch + "/mine/libsearch.so", .name = "triple_elsewhere"};
  EXPECT(ex.submit<int>(private_search, 7).get() == 21);
  const ferry::TaskRef open_search{.library = scratch + "/mine/libopen.so", .name = "triple_elsewhere"};
  auto e = expect_throw<ferry::Error>(__LINE__, [&] { ex.submit<int>(open_search, 7).get(); });
  std::cout << "refused: " << e.what() << std::endl;
  EXPECT(ex.submit<int>(private_search, 8).get() == 24);  // the rank goes on
  ex.shutdown();
}

/// The elements of a colon-separated search path, empty ones included.
std::vector<std::string> path_elements(const std::string& value) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t colon = value.find(':', start);
    out.push_back(value.substr(start, colon - start));
    if (colon == std::string::npos) return out;
    start = colon + 1;
  }
}

/// A worker's LD_LIBRARY_PATH, from the agent's own (the job's: `scratch`/open, a directory others
/// can write, after an empty element) and from ExecutorOptions::env (the same, `scratch`/mine,
/// whose tls/ others can write, and a relative "lib"). `filtered`: what the local backend keeps,
/// /usr/lib and what the launcher put before it, nothing empty, relative or open; else
/// (FERRY_ALLOW_UNSAFE_PLUGINS=1 in the job) each as it was. Then an executor with
/// allow_unsafe_plugins gets ExecutorOptions::env's as it was, either way.
void library_path(const std::string& plugin_dir, const std::string& scratch, bool filtered, bool spawned) {
  const std::string open = scratch + "/open", mine = scratch + "/mine";
  // What the hub reads for a spawned agent's LD_LIBRARY_PATH is this process's environment when
  // it spawns: FERRY_TEST_HOST_LD_LIBRARY_PATH puts one there of which nothing is kept (the job's,
  // which mpirun --prefix gave <prefix>/lib, stays the launcher's). /usr/lib is required where it
  // is named.
  if (const char* host = std::getenv("FERRY_TEST_HOST_LD_LIBRARY_PATH")) ::setenv("LD_LIBRARY_PATH", host, 1);
  const char* job = std::getenv("LD_LIBRARY_PATH");
  const auto job_elements = path_elements(job ? job : "");
  const bool usr_lib = std::find(job_elements.begin(), job_elements.end(), "/usr/lib") != job_elements.end();
  auto check = [&](const std::string& value, int line, const char* whose = "worker") {
    std::cout << "a " << whose << "'s LD_LIBRARY_PATH: '" << value << "'" << std::endl;
    const auto elements = path_elements(value);
    if (usr_lib && std::find(elements.begin(), elements.end(), "/usr/lib") == elements.end()) fail(line, "no /usr/lib");
    for (const auto& e : elements)
      if (e.empty() || e.front() != '/' || e == open || e == mine) fail(line, std::string("the ") + whose + " has '" + e + "'");
  };
  {
    ferry::Executor ex(mpi_options(plugin_dir, 1));
    const std::string inherited = ex.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get();
    if (filtered) {
      check(inherited, __LINE__);
    } else {
      EXPECT(inherited.find(":" + open + ":/usr/lib") != std::string::npos);
    }
    if (spawned) {
      // The agent itself (spawned: its environment is its launcher's, this process's, but for
      // what the hub sets): its loader had only trusted absolute directories, and loaded nothing
      // from `open` (test_mpi put a copy of libferry.so.0 there, which this process loaded).
      const int agent = parent_of(ex.worker_pids().at(0));
      const std::string env = start_environment(agent);
      const auto at = env.find("\nLD_LIBRARY_PATH=");
      EXPECT(at != std::string::npos);
      const auto from = at + std::string("\nLD_LIBRARY_PATH=").size();
      check(env.substr(from, env.find('\n', from) - from), __LINE__, "spawned agent");
      std::ifstream maps("/proc/" + std::to_string(agent) + "/maps");
      for (std::string line; std::getline(maps, line);)
        if (line.find(open + "/") != std::string::npos) fail(__LINE__, "the spawned agent mapped " + line);
    }
    ex.shutdown();
  }
  auto o = mpi_options(plugin_dir, 1);
  const std::string given = ":" + open + ":" + mine + ":/usr/lib:lib";
  o.env = {{"LD_LIBRARY_PATH", given}};
  ferry::Executor ex(o);
  const std::string value = ex.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get();
  if (filtered) {
    check(value, __LINE__);
    EXPECT(value == "/usr/lib");  // as given, nothing of the agent's
  } else {
    EXPECT(value == given);
  }
  ex.shutdown();
  // An executor that allows unsafe plugins gets it as given, as a local one does, whatever the
  // agents' environment says.
  o.allow_unsafe_plugins = true;
  ferry::Executor unsafe(o);
  EXPECT(unsafe.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get() == given);
  unsafe.shutdown();
}

/// The loader_environment scenario (see the list at the top).
void loader_environment(const std::string& plugin_dir, const std::string& scratch, bool spawned, bool unset) {
  const std::string open = scratch + "/open", mine = scratch + "/mine";
  const std::string preload = open + "/libplain.so:" + mine + "/libplain.so";
  auto mapped_from = [&](int pid, const std::string& dir) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    for (std::string line; std::getline(maps, line);)
      if (line.find(dir + "/") != std::string::npos) return true;
    return false;
  };
  auto mapped_open = [&](int pid) { return mapped_from(pid, open); };
  auto o = mpi_options(plugin_dir, 1);
  // Spawned, test_mpi starts this process with LD_PRELOAD=`preload` and GCONV_PATH=`open`: its
  // launcher (the singleton's orted, started when MPI is) has them, and so its agents.
  const char* own = std::getenv("LD_PRELOAD");
  if (spawned) EXPECT(own && own == preload);
  if (!spawned) o.env = {{"LD_PRELOAD", preload}, {"GCONV_PATH", open + ":" + mine}};
  {
    ferry::Executor ex(o);
    EXPECT(ex.submit(getenv_task, std::string("LD_PRELOAD")).get() == mine + "/libplain.so");
    EXPECT(ex.submit(getenv_task, std::string("GCONV_PATH")).get() == (spawned ? "" : mine));
    const int worker = ex.worker_pids().at(0);
    EXPECT(!mapped_open(worker));
    EXPECT(mapped_from(worker, mine));  // the judged preload reached it
    if (spawned) {
      // The agent preloads nothing: what the host's LD_PRELOAD names was judged on the host's
      // node, and the agent may run on another. Its worker got the host's from the start
      // message, judged by the agent (on its own node).
      const int agent = parent_of(worker);
      const std::string env = start_environment(agent);
      for (const char* set_empty : {"\nLD_PRELOAD=\n", "\nLD_AUDIT=\n", "\nGCONV_PATH=\n"})
        EXPECT(env.find(set_empty) != std::string::npos);  // set, to no entry: the key cannot remove it
      EXPECT(env.find("\nLD_ORIGIN_PATH=/dev/null\n") != std::string::npos);
      EXPECT(!mapped_open(agent));
      EXPECT(!mapped_from(agent, mine));
      if (unset) {
        // Preloaded tools remove themselves from LD_PRELOAD after they start: the launcher (the
        // singleton's orted, started with MPI) keeps what this process had then. An agent
        // spawned now (this executor's one is busy) gets none of it.
        for (const char* name : {"LD_PRELOAD", "GCONV_PATH", "LD_LIBRARY_PATH", "LD_ORIGIN_PATH"}) ::unsetenv(name);
        ferry::Executor after(mpi_options(plugin_dir, 1));
        EXPECT(after.submit(getenv_task, std::string("LD_PRELOAD")).get() == "");
        EXPECT(after.submit(getenv_task, std::string("GCONV_PATH")).get() == "");
        const int second = after.worker_pids().at(0);
        const int second_agent = parent_of(second);
        EXPECT(second_agent != agent);
        const std::string second_env = start_environment(second_agent);
        for (const char* line : {"\nLD_PRELOAD=\n", "\nLD_AUDIT=\n", "\nGCONV_PATH=\n", "\nLD_LIBRARY_PATH=/dev/null\n",
                                 "\nLD_ORIGIN_PATH=/dev/null\n"})
          if (second_env.find(line) == std::string::npos) fail(__LINE__, std::string("the second agent has no") + line);
        EXPECT(!mapped_open(second_agent) && !mapped_open(second));
        EXPECT(!mapped_from(second_agent, mine) && !mapped_from(second, mine));
        after.shutdown();
      }
    }
    ex.shutdown();
  }
  if (spawned) return;
  // An executor that allows unsafe plugins gets them as given, as a local one does.
  o.allow_unsafe_plugins = true;
  ferry::Executor unsafe(o);
  EXPECT(unsafe.submit(getenv_task, std::string("LD_PRELOAD")).get() == preload);
  EXPECT(mapped_open(unsafe.worker_pids().at(0)));
  unsafe.shutdown();
}

/// refused_descriptors: makes the kernel refuse every descriptor this process passes on a UNIX
/// socket (ETOOMANYREFS), as a task holding descriptors in flight can: the user's descriptors in
/// flight past this process's soft RLIMIT_NOFILE, without the capabilities that exempt it. Every
/// rank does it (100 each). False when it cannot be set up here.
bool refuse_passed_descriptors() {
  __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[2] = {};
  if (::syscall(SYS_capget, &head, caps) != 0) return false;
  caps[0].effective &= ~((1u << CAP_SYS_RESOURCE) | (1u << CAP_SYS_ADMIN));
  if (::syscall(SYS_capset, &head, caps) != 0) return false;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur < 512) return false;
  if (!support::hold_descriptors_in_flight(100)) return false;
  lim.rlim_cur = 128;
  return ::setrlimit(RLIMIT_NOFILE, &lim) == 0;
}

void refused_descriptors(const std::string& plugin_dir, const std::string& mode, bool set_up) {
  if (!set_up) {
    std::cout << "not set up: no capability to drop or RLIMIT_NOFILE under 512" << std::endl;
    return;
  }
  ferry::Executor ex(mpi_options(plugin_dir, 1));
  std::vector<char> big(std::size_t{3} << 20);  // past FERRY_SHM_THRESHOLD: a memfd each way
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = pattern_byte(i);
  auto f = ex.submit(echo_bytes, big);
  if (!f.wait_for(std::chrono::seconds(40))) {
    std::cout << "FAILED: the call waited for good" << std::endl;
    std::_Exit(1);  // its executor would wait too
  }
  if (mode == "rings") {
    std::string what;
    try {
      f.get();
    } catch (const std::exception& e) {
      what = e.what();
    }
    std::cout << "refused: " << what << std::endl;
    EXPECT(what.find("could not pass it its rings") != std::string::npos);
    ex.shutdown();
    return;
  }
  EXPECT(f.get() == big);
  auto pid = ex.worker_pids();
  for (int i = 0; i < 3; ++i) EXPECT(ex.submit(echo_bytes, big).get() == big);
  EXPECT(ex.worker_pids() == pid);  // nothing killed on the way
  ex.shutdown();
}

}  // namespace

int main(int argc, char** argv) {
  // Set up in every rank (in the agents' only for `agents`), before it serves as an agent
  // (refused_descriptors).
  bool refusing = false;
  if (argc == 4 && std::string(argv[1]) == "refused_descriptors") {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    refusing = (std::string(argv[3]) == "agents" && rank && std::string(rank) == "0") || refuse_passed_descriptors();
  }
  ferry::mpi::serve(argc, argv);
  ferry::mpi::enable();
  if (argc < 3) return 2;
  std::string scenario = argv[1];
  std::string plugin_dir = argv[2];
  try {
    if (scenario == "basics") {
      basics(plugin_dir);
    } else if (scenario == "killed_rank" && argc == 4) {
      killed_rank(plugin_dir, std::strtoul(argv[3], nullptr, 10));
    } else if (scenario == "refused_rank") {
      refused_rank(plugin_dir);
    } else if (scenario == "refused_spawn") {
      refused_spawn(plugin_dir);
    } else if (scenario == "ship_rewritten" && argc == 4) {
      ship_rewritten(argv[3]);
    } else if (scenario == "silent_rank") {
      silent_rank(plugin_dir);
    } else if (scenario == "late_leave") {
      late_leave(plugin_dir);
    } else if (scenario == "suspended") {
      suspended(plugin_dir);
    } else if (scenario == "spawn_slow") {
      spawn_slow(plugin_dir);
    } else if (scenario == "large") {
      large(plugin_dir);
    } else if (scenario == "many_results") {
      many_results(plugin_dir);
    } else if (scenario == "refused_descriptors" && argc == 4) {
      refused_descriptors(plugin_dir, argv[3], refusing);
    } else if (scenario == "recycled_results") {
      recycled_results(plugin_dir);
    } else if (scenario == "late_executor") {
      late_executor(plugin_dir);
    } else if (scenario == "missing_agent") {
      missing_agent(plugin_dir);
    } else if (scenario == "missing_worker") {
      missing_worker(plugin_dir);
    } else if (scenario == "spawn_refused") {
      spawn_refused(plugin_dir);
    } else if (scenario == "last_rank_killed") {
      last_rank_killed(plugin_dir);
    } else if (scenario == "host_killed" && argc == 4) {
      host_killed(plugin_dir, argv[3]);
    } else if (scenario == "ship" && argc == 4) {
      ship(argv[3]);
    } else if (scenario == "hostile_ring") {
      hostile_ring(plugin_dir);
    } else if (scenario == "hostile_worker") {
      hostile_worker(plugin_dir);
    } else if (scenario == "ship_refused" && argc == 4) {
      ship_refused(argv[3]);
    } else if (scenario == "trace" && argc == 4) {
      trace(plugin_dir, argv[3]);
    } else if (scenario == "partial_hang") {
      partial_hang(plugin_dir);
    } else if (scenario == "closed_channel") {
      closed_channel(plugin_dir);
    } else if (scenario == "ship_checked" && argc == 4) {
      ship_checked(argv[3]);
    } else if (scenario == "second_executor") {
      second_executor(plugin_dir);
    } else if (scenario == "second_executor_given_some_ranks") {
      second_executor_given_some_ranks(plugin_dir);
    } else if (scenario == "second_executor_after_a_shutdown_without_waiting") {
      second_executor_after_a_shutdown_without_waiting(plugin_dir);
    } else if (scenario == "worker_environment") {
      worker_environment(plugin_dir);
    } else if (scenario == "search_path" && argc == 4) {
      search_path(argv[3]);
    } else if (scenario == "library_path" && argc == 5) {
      library_path(plugin_dir, argv[3], std::string(argv[4]) != "as_given", std::string(argv[4]) == "spawned");
    } else if (scenario == "loader_environment" && argc == 5) {
      loader_environment(plugin_dir, argv[3], std::string(argv[4]).starts_with("spawned"),
                         std::string(argv[4]) == "spawned_unset");
    } else {
      return 2;
    }
  } catch (const std::exception& e) {
    fail(0, std::string("exception: ") + e.what());
  }
  std::cout << "ok " << scenario << std::endl;
  return 0;
}
