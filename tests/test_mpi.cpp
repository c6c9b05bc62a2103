// SPDX-License-Identifier: BSD-3-Clause
// The MPI backend, end to end: real mpirun jobs of 3 ranks over loopback (and a singleton), each
// running tests/support/mpi_host.cpp, which checks what it sees and prints "ok <scenario>".
#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "support/trace_file.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Run {
  int status = -1;  ///< exit status, 128 + signal, or -1 when it had to be killed
  std::string out;  ///< stdout and stderr
};

/// What every job here needs: root is allowed, 3 ranks on 2 cores, loopback only, a rank that
/// dies does not take the job down, and a generous heartbeat deadline (a loaded 2-core CI machine
/// must not look like a dead rank; the tests of dead ranks set 3 s).
std::map<std::string, std::string> job_environment() {
  return {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
          {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
          {"OMPI_MCA_rmaps_base_oversubscribe", "1"},
          {"OMPI_MCA_btl", "self,vader,tcp"},
          {"OMPI_MCA_btl_tcp_if_include", "lo"},
          {"OMPI_MCA_oob_tcp_if_include", "lo"},
          {"OMPI_MCA_orte_enable_recovery", "1"},
          {"FERRY_MPI_TIMEOUT_MS", "10000"},
          {"FERRY_WORKER", FERRY_TEST_WORKER}};
}

/// Runs a program with `extra` added to the environment (a value "" unsets); kills its process
/// group if it is not done within `limit`.
Run run(const std::vector<std::string>& args, const std::map<std::string, std::string>& extra,
        std::chrono::seconds limit = std::chrono::seconds(120)) {
  std::map<std::string, std::string> env = job_environment();
  for (const auto& [k, v] : extra) env[k] = v;
  support::TempDir dir;
  const pid_t pid =
      support::spawn(args, dir.path, {.env = env, .stderr_to_stdout = true, .process_group = true}).pid;

  Run r;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  pollfd p{pidfd, POLLIN, 0};
  int ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(limit).count()));
  ::close(pidfd);
  if (ready <= 0) ::kill(-pid, SIGKILL);  // the job hung: take down mpirun and its ranks
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::kill(-pid, SIGKILL);  // ranks left behind, if any
  if (ready > 0) r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = support::read_file(dir.path / "stdout");
  return r;
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

/// `mpirun -n 3 host <scenario>`: rank 0 is the host, ranks 1 and 2 serve it.
Run world(const std::string& scenario, std::vector<std::string> more = {},
          const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> args = {FERRY_TEST_MPIEXEC, "-n", "3", FERRY_TEST_MPI_HOST, scenario,
                                   FERRY_TEST_PLUGIN_DIR};
  args.insert(args.end(), more.begin(), more.end());
  return run(args, env);
}

/// `mpirun -n 1 host <scenario> ... : -n <agents> ferry-mpi-worker`: the host and agents started
/// side by side, as on a cluster; ranks declared dead after 3 s of silence.
Run side_by_side(const std::string& scenario, int agents, std::vector<std::string> more = {},
                 std::chrono::seconds limit = std::chrono::seconds(120),
                 std::map<std::string, std::string> env = {}) {
  std::vector<std::string> args = {FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, scenario,
                                   FERRY_TEST_PLUGIN_DIR};
  args.insert(args.end(), more.begin(), more.end());
  args.insert(args.end(), {":", "-n", std::to_string(agents), FERRY_TEST_MPI_AGENT});
  env.emplace("FERRY_MPI_TIMEOUT_MS", "3000");
  return run(args, env, limit);
}

/// The scenario printed "ok <scenario>" and the job exited 0.
void check_ok(const Run& r, const std::string& scenario) {
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(contains(r.out, "ok " + scenario));
}

fs::path scratch_dir(const std::string& name) {
  fs::path d = fs::path(FERRY_TEST_BINARY_DIR) / "mpi-scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<fs::path> shipped(const fs::path& cache) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(cache / "shipped", ec))
    if (e.path().extension() == ".so") out.push_back(e.path());
  return out;
}

}  // namespace

TEST_CASE("Mpi.world.submit_map_errors_and_shutdown") { check_ok(world("basics"), "basics"); }

TEST_CASE("Mpi.world.killed_rank_fails_its_task_and_the_rest_keeps_working") {
  // The job then ends by itself: the host tells the surviving agent that a rank was lost, and it
  // leaves without MPI_Finalize, whose fence the dead rank would never join (it used to wait
  // there for good, now and then, until the test's deadline killed the job). The scenario takes
  // about 20 s (a 15 s task must finish on the surviving rank); 60 s leaves room for a loaded
  // machine, and a job that outlives it is killed, and fails here.
  Run r = side_by_side("killed_rank", 2, {"1"}, std::chrono::seconds(60));  // the pool shrinks to the one rank left
  INFO(r.out);
  CHECK(contains(r.out, "ok killed_rank"));
  CHECK(contains(r.out, "stopped answering"));
  CHECK(r.status == 0);  // ended by itself (-1: killed at the deadline)
}

TEST_CASE("Mpi.world.killed_rank_over_tcp_fails_its_task_and_the_rest_keeps_working") {
  // The same over TCP alone (the other jobs here use shared memory between their ranks): ferry
  // progresses TCP from its own loops, without Open MPI's progress thread, and a dead TCP peer
  // must not stop the rest: the task on the lost rank fails, the other completes, a map and 500
  // calls one by one run on the rank left. How fast they run is measured, not asserted (Open MPI's
  // 10 ms tick after a TCP peer died made each call ~12 ms): `ferry-mpi-bench --dead-rank` over
  // `self,tcp` in bench/mpi_compare.py.
  Run r = side_by_side("killed_rank", 2, {"1"}, std::chrono::seconds(60), {{"OMPI_MCA_btl", "self,tcp"}});
  INFO(r.out);
  CHECK(contains(r.out, "ok killed_rank"));
  CHECK(contains(r.out, "stopped answering"));
  CHECK(r.status == 0);
}

TEST_CASE("Mpi.world.no_rank_left_fails_new_work_with_broken_pool") {
  Run r = side_by_side("last_rank_killed", 1, {}, std::chrono::seconds(60));
  INFO(r.out);
  CHECK(contains(r.out, "ok last_rank_killed"));
  CHECK(r.status == 0);  // ended by itself
}

TEST_CASE("Mpi.world.agents_wait_for_a_host_that_makes_its_executor_late") {
  // The host works for 5 s before it makes its executor, past the 3 s heartbeat deadline. The
  // hub started with the first executor: the agents, up since the job began, heard nothing for
  // the deadline and left, and every call failed with BrokenProcessPool ("every remote rank of
  // the job has died"). serve() starts it at rank 0 now. One program, and agents beside it.
  SUBCASE("one program") { check_ok(world("late_executor", {}, {{"FERRY_MPI_TIMEOUT_MS", "3000"}}), "late_executor"); }
  SUBCASE("agents beside it") { check_ok(side_by_side("late_executor", 2), "late_executor"); }
}

TEST_CASE("Mpi.agent.without_a_host_says_so_and_leaves") {
  // ferry-mpi-worker run alone (an MPI singleton) or as rank 0 of its job is in the host's place:
  // it took its own hello and heartbeats for a host's and served nobody for good (alone it never
  // ended; with mpirun -n 2 the other rank left after the deadline, saying nothing, and rank 0
  // stayed). It says why and leaves at once; the other rank says it heard from no host.
  SUBCASE("alone") {
    Run r = run({FERRY_TEST_MPI_AGENT}, {}, std::chrono::seconds(60));
    INFO(r.out);
    CHECK(r.status == 64);
    CHECK(contains(r.out, "no ferry host to serve: this process is rank 0 of a job of 1"));
  }
  SUBCASE("every rank") {
    Run r = run({FERRY_TEST_MPIEXEC, "-n", "2", FERRY_TEST_MPI_AGENT}, {{"FERRY_MPI_TIMEOUT_MS", "3000"}},
                std::chrono::seconds(60));
    INFO(r.out);
    CHECK(r.status >= 0);  // ended by itself (-1: killed at the deadline; mpirun under recovery exits 0)
    CHECK(contains(r.out, "no ferry host to serve: this process is rank 0 of a job of 2"));
    CHECK(contains(r.out, "no ferry host answered within"));
  }
}

TEST_CASE("Mpi.agent.a_malformed_environment_on_a_rank_is_refused_saying_why") {
  // FERRY_MPI_RINGS=2 on rank 1 only: the host refuses such a value in its own environment, and
  // the agent used its default in its place, saying nothing. It says why it cannot serve, the
  // host refuses that rank with the reason, and the work runs on the other rank.
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR,
               ":", "-n", "1", "env", "FERRY_MPI_RINGS=2", FERRY_TEST_MPI_AGENT, ":", "-n", "1", FERRY_TEST_MPI_AGENT},
              {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
  INFO(r.out);
  CHECK(contains(r.out, "ok refused_rank"));
  CHECK(contains(r.out, "cannot serve: ferry: malformed environment: FERRY_MPI_RINGS='2': not 0 or 1"));
  CHECK(r.status == 0);
}

TEST_CASE("Mpi.world.no_rank_left_names_the_last_ranks_reason") {
  // Every agent refuses to serve (FERRY_MPI_TIMEOUT_MS='30s' is malformed): the work failed with
  // "every remote rank of the job has died" and nothing more, the reason only on the agents'
  // stderr (the ranks were refused before they were given a worker, so no pool heard of them).
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR, ":", "-n",
               "2", "env", "FERRY_MPI_TIMEOUT_MS=30s", FERRY_TEST_MPI_AGENT},
              {}, std::chrono::seconds(90));
  INFO(r.out);
  // From the pool when it heard of the rank, else from the hub: the same words either way.
  CHECK(contains(r.out, "every remote rank of the job has died; the last lost: MPI rank "));
  CHECK(contains(r.out, "FERRY_MPI_TIMEOUT_MS='30s': not a whole number"));
}

namespace {

/// Rank 1 is the hostile rank of `kind`, rank 2 an honest agent: the host refuses rank 1 and
/// runs everything on rank 2 (tests/support/mpi_host.cpp, refused_rank). Returns how long after
/// its hello the hostile rank was told to leave, in ms (-1 when it was not).
long refused_after(const std::string& kind, std::map<std::string, std::string> env = {}) {
  env.emplace("FERRY_MPI_TIMEOUT_MS", "3000");
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR,
               ":", "-n", "1", FERRY_TEST_MPI_HOSTILE, "agent", kind, ":", "-n", "1", FERRY_TEST_MPI_AGENT},
              env, std::chrono::seconds(90));
  INFO(r.out);
  CHECK(contains(r.out, "ok refused_rank"));
  CHECK(contains(r.out, "hostile " + kind + ": told to leave (peer-lost)"));
  CHECK(r.status == 0);
  auto end = r.out.find(" ms after its hello");
  if (end == std::string::npos) return -1;
  auto at = r.out.rfind("told ", end);
  return at == std::string::npos ? -1 : std::strtol(r.out.c_str() + at + std::strlen("told "), nullptr, 10);
}

}  // namespace

TEST_CASE("Mpi.world.a_rank_that_breaks_the_protocol_is_refused_and_the_host_goes_on") {
  // Rank 1 is not a ferry agent of this version: what it sends cannot be read (its hello, a
  // library request, its report of a worker's end, a message of more than 2 GiB - 1 bytes, which
  // MPI cannot count in an int), asks for a library it was not offered, or begins a frame and
  // sends no more of it than one chunk, then only heartbeats (held behind the frame, they are no
  // sign of life). The host must not end (an exception out of its hub's thread would), and must
  // not wait for that rank: it is declared dead, told to leave, and the work runs on rank 2.
  for (const std::string kind : {"ready", "library", "exited", "unoffered", "huge", "stalled"}) {
    CAPTURE(kind);
    // Told to leave when refused, as a rank lost to the job (peer-lost: no MPI_Finalize).
    long ms = refused_after(kind);
    if (kind == "stalled") {
      // Refused once nothing of its frame came for the peer timeout (3 s), not after the test's
      // 60 s (its held heartbeats used to keep it alive for good).
      CHECK(ms >= 3000);
      CHECK(ms < 15000);
    }
  }
}

TEST_CASE("Mpi.world.what_a_rank_says_reaches_the_hosts_errors_as_text") {
  // A rank's host name, the reason it cannot serve and its report of a worker that could not
  // start reached BrokenProcessPool::what() as they were: escape sequences that retitle the
  // window, clear the screen or forge a line of a terminal or log printing it. Shown as text now
  // (\x1b, as TerminatedWorkerError shows a detail). The job's only agent is the hostile rank:
  // the work fails (refused_spawn prints what() after "refused: ").
  for (const std::string kind : {"escaped_hello", "escaped_exit"}) {
    CAPTURE(kind);
    Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_spawn", FERRY_TEST_PLUGIN_DIR, ":", "-n",
                 "1", FERRY_TEST_MPI_HOSTILE, "agent", kind},
                {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
    INFO(r.out);
    CHECK(contains(r.out, "ok refused_spawn"));
    const auto at = r.out.find("refused: ");
    REQUIRE(at != std::string::npos);
    const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
    CHECK(contains(line, "MPI rank 1 on node\\x1b]0;HOST-TITLE\\x07\\x1b[2J\\x0aforged"));
    if (kind == "escaped_hello")
      CHECK(contains(line, "cannot serve: \\x1b[31mred\\x1b[0m\\x1b]0;SERVE-TITLE\\x07\\x9b2J"));
    if (kind == "escaped_exit") CHECK(contains(line, "\\x1b]0;EXIT-TITLE\\x07\\x1b[2Jcannot run it"));
    CHECK(line.find('\x1b') == std::string::npos);
    CHECK(line.find('\x07') == std::string::npos);
    CHECK(line.find('\x9b') == std::string::npos);
  }
}

TEST_CASE("Mpi.world.an_agent_of_another_mpi_protocol_is_refused_naming_both_versions") {
  // The hello carried no version: an agent of another ferry was served until the first message
  // one side could not read, and the error named neither version. The only agent of the job is
  // the hostile rank (a hello of MPI protocol 0, or the hello of an agent before versions): it is
  // refused at its hello, told to leave, and the work fails saying why.
  for (const std::string kind : {"version", "unversioned"}) {
    CAPTURE(kind);
    Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR, ":", "-n",
                 "1", FERRY_TEST_MPI_HOSTILE, "agent", kind},
                {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(60));
    INFO(r.out);
    CHECK(contains(r.out, "hostile " + kind + ": told to leave (peer-lost)"));
    const std::string ours = "this host MPI protocol 1 (ferry ";
    if (kind == "version")
      CHECK(contains(r.out, "MPI rank 1 on hostile (agent pid 12345) speaks MPI protocol 0 (ferry 0.0.1), " + ours));
    else
      CHECK(contains(r.out, "MPI rank 1 on hostile (agent pid 12345) says no MPI protocol version (a "
                            "ferry-mpi-worker older than MPI protocol 1), " + ours));
    CHECK(contains(r.out, "every rank must run the ferry-mpi-worker of the host's ferry version"));
  }
}

TEST_CASE("Mpi.world.shutdown_does_not_wait_for_a_rank_that_never_says_hello") {
  // The peer timeout is 20 s. silent: rank 1 joins the job and says nothing (no hello, no
  // heartbeat), as a rank stuck before its hello would. The hub gave it a worker all the same,
  // which never started, and shutdown waited for that worker's end until the rank was declared
  // dead (20 s). deaf: rank 1 says hello and ignores the start and the stop, so its worker never
  // says hello; shutdown waited for the stop's grace (twice the peer timeout). Either way the
  // host's shutdown returns within 10 s, and the job ends.
  // Leaving MPI neither: such a rank may be stuck, and joins no MPI_Finalize (these stay out of
  // it until the host has ended). It counted as alive, so the host sent it a plain quit and
  // waited in MPI_Finalize's fence for ferry::mpi::finalize()'s 10 s; now it counts as lost (told
  // peer-lost, as every rank then), nobody finalises, and finalize() returns within 5 s.
  for (const std::string kind : {"silent", "deaf"}) {
    CAPTURE(kind);
    Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "silent_rank", FERRY_TEST_PLUGIN_DIR, ":", "-n",
                 "1", FERRY_TEST_MPI_HOSTILE, "agent", kind, ":", "-n", "1", FERRY_TEST_MPI_AGENT},
                {{"FERRY_MPI_TIMEOUT_MS", "20000"}}, std::chrono::seconds(90));
    INFO(r.out);
    CHECK(contains(r.out, "ok silent_rank"));
    CHECK(contains(r.out, "hostile " + kind + ": told to leave (peer-lost)"));
    CHECK(r.status == 0);
  }
}

TEST_CASE("Mpi.world.a_slow_honest_rank_is_not_counted_lost_when_the_host_leaves") {
  // At ferry::mpi::finalize() the hub counts as lost a rank that said no hello, or did not report
  // the end of a worker stopped before its hello (it may be stuck, and would hold MPI_Finalize's
  // fence), and tells every rank peer-lost. It did so at once: a hello still on its way, or the
  // end of a worker stopped just before (a shutdown soon after a start), made an honest rank
  // lost, and nobody finalised. It waits up to 2 s for them now. late_hello says hello and
  // late_end reports its worker's end only once the host has stopped heartbeating (it is
  // leaving): both must be told a plain quit.
  const fs::path scratch = scratch_dir("late_leave");
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "late_leave", FERRY_TEST_PLUGIN_DIR, ":", "-n",
               "1", FERRY_TEST_MPI_HOSTILE, "agent", "late_hello", ":", "-n", "1", FERRY_TEST_MPI_HOSTILE, "agent",
               "late_end"},
              {{"FERRY_MPI_TIMEOUT_MS", "20000"}, {"FERRY_TEST_MPI_STARTED", (scratch / "started").string()}},
              std::chrono::seconds(90));
  INFO(r.out);
  CHECK(contains(r.out, "ok late_leave"));
  CHECK(contains(r.out, "hostile late_end: reported its worker's end"));
  CHECK(contains(r.out, "hostile late_hello: told to leave ()"));
  CHECK(contains(r.out, "hostile late_end: told to leave ()"));
  CHECK(r.status == 0);
}

TEST_CASE("Mpi.agent.a_host_of_another_mpi_protocol_is_not_served_and_the_agent_says_why") {
  // Rank 0 welcomes the agent as a host of MPI protocol 0 (ferry 0.0.1), then asks for a worker:
  // the agent's hello carries its versions, it says on stderr why it cannot serve, answers the
  // start as a worker that could not start naming both versions, and leaves when told.
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOSTILE, "host", "version", ":", "-n", "1",
               FERRY_TEST_MPI_AGENT},
              {}, std::chrono::seconds(60));
  INFO(r.out);
  CHECK(contains(r.out, "ok hostile host version"));
  CHECK(contains(r.out, "cannot serve this host: the host speaks MPI protocol 0 (ferry 0.0.1), this agent MPI "
                        "protocol 1 (ferry "));
  CHECK(r.status >= 0);  // ended by itself
}

TEST_CASE("Mpi.world.a_rank_that_holds_the_hub_up_is_refused_and_the_host_goes_on") {
  // What one rank can make the hub hold or wait for is bounded: messages held behind a frame it
  // never sends (count and bytes), the payload its frame heads announce (each was mapped at
  // once), chunks that are dropped (they counted as signs of life), and the end of a worker it
  // was told to stop (the pool waited for it for good).
  SUBCASE("held") { CHECK(refused_after("held") < 2500); }
  SUBCASE("vast") { CHECK(refused_after("vast") < 2500); }
  SUBCASE("drip") {
    long ms = refused_after("drip");
    CHECK(ms >= 3000);  // the stall limit
    CHECK(ms < 15000);
  }
  SUBCASE("deaf") { CHECK(refused_after("deaf") > 0); }
  // A rank that only heartbeats and never says hello stayed in the job for good (a worker the
  // hub gave it never started): refused once no hello came for the peer timeout (3 s).
  SUBCASE("nohello") {
    long ms = refused_after("nohello");
    CHECK(ms >= 3000);
    CHECK(ms < 15000);
  }
}

TEST_CASE("Mpi.world.a_rank_that_stops_in_the_middle_of_a_message_does_not_freeze_the_hub") {
  // Over TCP a message's bytes past the eager limit move only while its sender calls MPI: the
  // hub's blocking receive waited for the 4 MiB of a rank that stopped calling it (here until
  // the host ended), sent no heartbeats meanwhile, and the honest agent left ("host is gone").
  // The hub receives without waiting and goes on; the frozen rank, silent, is declared dead at
  // the peer timeout (or refused when the message's bytes do not come within the stall limit
  // and the time 4 MiB take at 1 MiB/s, whichever comes first).
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR,
               ":", "-n", "1", FERRY_TEST_MPI_HOSTILE, "agent", "frozen", ":", "-n", "1", FERRY_TEST_MPI_AGENT},
              {{"FERRY_MPI_TIMEOUT_MS", "3000"}, {"OMPI_MCA_btl", "self,tcp"}}, std::chrono::seconds(90));
  INFO(r.out);
  CHECK(contains(r.out, "ok refused_rank"));
  CHECK(contains(r.out, "hostile frozen: left after the host ended"));
  CHECK(r.status == 0);
}

TEST_CASE("Mpi.world.an_agent_refuses_a_result_its_worker_could_still_shrink") {
  // MPI sends a result from the worker's memfd as it is: truncated meanwhile, that read would be
  // the agent's SIGBUS. A memfd not sealed against shrinking is refused, the call fails, and the
  // agent and its worker go on.
  // The memfd comes with a byte of its own on the channel, its frame through the ring (and
  // with FERRY_MPI_RINGS=0 both over the channel).
  for (const char* rings : {"1", "0"}) {
    CAPTURE(rings);
    Run r = side_by_side("hostile_worker", 1, {}, std::chrono::seconds(60),
                         {{"FERRY_WORKER", FERRY_TEST_FAKE_WORKER},
                          {"FERRY_FAKE_MODE", "shm_truncate"},
                          {"FERRY_MPI_RINGS", rings}});
    INFO(r.out);
    CHECK(contains(r.out, "ok hostile_worker"));
    CHECK(r.status == 0);
  }
}

TEST_CASE("Mpi.world.an_agent_refuses_a_result_with_less_memory_than_it_claims") {
  // A sparse memfd of 1 TiB, sealed: it cost the worker nothing, the agent would read (and the
  // hub allocate) all of it. Refused at the agent; the call fails, agent and worker go on.
  Run r = side_by_side("hostile_worker", 1, {}, std::chrono::seconds(60),
                       {{"FERRY_WORKER", FERRY_TEST_FAKE_WORKER}, {"FERRY_FAKE_MODE", "shm_sparse"}});
  INFO(r.out);
  CHECK(contains(r.out, "ok hostile_worker"));
  CHECK(r.status == 0);
}

TEST_CASE("Mpi.world.an_agent_is_not_stopped_by_a_descriptor_whose_close_blocks") {
  // A worker sends a TCP socket with an hour of SO_LINGER and unread data as its result's
  // payload: the agent refused it and closed it on its only thread, which then slept for the
  // hour (no heartbeats: the rank was declared dead, and the job never ended). Now only a memfd
  // is kept and anything else is closed on a thread of its own. Over the rings and the socket.
  for (const char* rings : {"1", "0"}) {
    CAPTURE(rings);
    Run r = side_by_side("hostile_worker", 1, {}, std::chrono::seconds(60),
                         {{"FERRY_WORKER", FERRY_TEST_FAKE_WORKER},
                          {"FERRY_FAKE_MODE", "shm_socket"},
                          {"FERRY_MPI_RINGS", rings}});
    INFO(r.out);
    CHECK(contains(r.out, "ok hostile_worker"));
    CHECK(r.status == 0);
  }
}

TEST_CASE("Mpi.world.an_agent_stops_a_worker_that_closes_its_channel_and_goes_on_serving") {
  // A task shuts down and closes its worker's channel, then sleeps 30 s. The agent used to wait
  // for the worker's end right there: no heartbeats, no quit read, a job that never ended. Now it
  // kills the worker after a grace of 1 s, the call fails saying why, the rank serves on, and
  // the job ends by itself. Over the rings and over the socket alone.
  for (const char* rings : {"1", "0"}) {
    CAPTURE(rings);
    Run r = side_by_side("closed_channel", 1, {}, std::chrono::seconds(60), {{"FERRY_MPI_RINGS", rings}});
    INFO(r.out);
    CHECK(contains(r.out, "ok closed_channel"));
    CHECK(r.status == 0);
  }
}

TEST_CASE("Mpi.world.an_agent_is_not_held_by_a_worker_that_writes_half_a_frame_and_hangs") {
  // The agent reads its worker's frames without waiting: a worker that wrote part of a frame and
  // hangs holds its call (until the call's deadline, here 4 s), as a hung local worker does, and
  // not its agent, which heartbeats meanwhile (a rank silent for the 3 s peer timeout would fail
  // the call as one that stopped answering), kills it when told, and serves the next calls.
  // Through the rings, and through the socket alone.
  for (const std::string rings : {"1", "0"}) {
    CAPTURE(rings);
    check_ok(side_by_side("partial_hang", 1, {}, std::chrono::seconds(60),
                          {{"FERRY_WORKER", FERRY_TEST_FAKE_WORKER},
                           {"FERRY_FAKE_MODE", "partial_hang"},
                           {"FERRY_MPI_RINGS", rings}}),
             "partial_hang");
  }
}

TEST_CASE("Mpi.world.an_agent_stops_a_worker_that_corrupts_their_rings") {
  // The rings' indices live in memory the worker (and its tasks) can write: one pushed past what
  // was written makes the agent stop the worker and report why; it never reads or writes outside
  // the ring.
  for (const char* mode : {"ring_head", "ring_tail"}) {
    CAPTURE(mode);
    Run r = side_by_side("hostile_ring", 1, {}, std::chrono::seconds(60),
                         {{"FERRY_WORKER", FERRY_TEST_FAKE_WORKER}, {"FERRY_FAKE_MODE", mode}});
    INFO(r.out);
    CHECK(contains(r.out, "ok hostile_ring"));
    CHECK(r.status == 0);
  }
}

TEST_CASE("Mpi.world.an_agent_drops_what_it_cannot_read_and_stays_in_its_cache") {
  // Rank 0 is not a ferry host: it offers a library whose content key climbs out of the agent's
  // cache, sends bytes for it, a body that cannot be read, and a start message that cannot be
  // read. The agent asks for nothing, writes nothing outside its cache, stays up, and answers
  // the start as a worker that could not start; then it leaves when told.
  fs::path scratch = scratch_dir("hostile_host");
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOSTILE, "host", ":", "-n", "1",
               FERRY_TEST_MPI_AGENT},
              {{"FERRY_CACHE_DIR", (scratch / "cache").string()}}, std::chrono::seconds(60));
  INFO(r.out);
  CHECK(contains(r.out, "ok hostile host"));
  CHECK(r.status == 0);
  std::vector<fs::path> outside;
  for (const auto& e : fs::recursive_directory_iterator(scratch))
    if (e.path().filename().string().find("escape") != std::string::npos) outside.push_back(e.path());
  CHECK(outside.empty());
}

TEST_CASE("Mpi.world.arguments_and_results_over_2_GiB_travel_chunked") {
  // Memory on this one machine, at most: the host's argument and its encoding, the agent's copy
  // (which the worker maps), then for the result the worker's value and encoding, the hub's copy
  // and the decoded result: about 6 GiB for 2 GiB.
  check_ok(world("large"), "large");
}

TEST_CASE("Mpi.world.arguments_and_results_over_2_GiB_travel_chunked_over_tcp") {
  // The same over TCP alone, where ferry's loops move the bytes (no progress thread of Open
  // MPI's): every chunk both ways arrives, in order. How fast is measured, not asserted (the
  // scenario prints it; docs/benchmarks.md).
  check_ok(world("large", {}, {{"OMPI_MCA_btl", "self,tcp"}}), "large");
}

TEST_CASE("Mpi.world.heartbeats_go_on_while_a_frame_over_2_GiB_arrives") {
  // Over shared memory each 64 MiB chunk is copied inside the receive that matches it, and one
  // pass of a loop took every chunk there was: 2 GiB took the agent's pass 3.5 s and the hub's
  // 2.9 s here, with no heartbeat sent meanwhile, so with a 1.5 s deadline the host declared the
  // receiving agent dead (and on a loaded machine the 10 s of the other tests passed too: the
  // agents left in the middle of the result, and the host's reads of it failed with EFAULT).
  check_ok(world("large", {}, {{"FERRY_MPI_TIMEOUT_MS", "1500"}}), "large");
}

TEST_CASE("Mpi.world.results_above_the_eager_limit_from_two_ranks_at_once_over_tcp") {
  // Over TCP (as across nodes) a rank's message above the eager limit is still being received
  // when the next source's arrives: its buffer must stay where MPI writes it.
  check_ok(world("many_results", {}, {{"OMPI_MCA_btl", "self,tcp"}}), "many_results");
}

TEST_CASE("Mpi.world.a_result_larger_than_the_pools_socket_takes_arrives_before_its_workers_end") {
  // A worker recycled after each call (max_tasks_per_child = 1) answers with 900 KiB and exits:
  // what of the result the hub's socket to the pool could not take at once waited in the hub,
  // which reported the worker's end at once and dropped it; the pool failed the call
  // ("terminated: it exited with code 0"), 12 of 20 here. Through the rings and the socket alone.
  for (const char* rings : {"1", "0"}) {
    CAPTURE(rings);
    check_ok(side_by_side("recycled_results", 1, {}, std::chrono::seconds(90), {{"FERRY_MPI_RINGS", rings}}),
             "recycled_results");
  }
}

TEST_CASE("Mpi.world.descriptors_the_kernel_will_not_pass_leave_the_bytes_to_go_inline") {
  // A task can fill its user's count of descriptors in flight on UNIX sockets; past a process's
  // soft RLIMIT_NOFILE the kernel then refuses every descriptor it passes (ETOOMANYREFS), unless
  // it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN. Every rank drops those and holds 100 in flight
  // under a limit of 128 (refused_descriptors). Without rings the agent dropped the frames of a
  // large argument (its worker waited for good, and the call), and the hub a large result and
  // what was queued behind it: both go inline now (agents: only the agents refused, so that the
  // argument reaches them in chunks, a memfd to pass). With rings the worker waited for its rings'
  // memfd for good: a start failure, said.
  const Run r = world("refused_descriptors", {"inline"}, {{"FERRY_MPI_RINGS", "0"}});
  if (contains(r.out, "not set up")) {
    MESSAGE("no capability to drop here, or RLIMIT_NOFILE under 512: not tested here");
    return;
  }
  check_ok(r, "refused_descriptors");
  check_ok(world("refused_descriptors", {"agents"}, {{"FERRY_MPI_RINGS", "0"}}), "refused_descriptors");
  check_ok(world("refused_descriptors", {"rings"}, {{"FERRY_MPI_RINGS", "1"}}), "refused_descriptors");
}

TEST_CASE("Mpi.world.the_job_survives_a_suspension_longer_than_the_heartbeat_deadline") {
  // The scenario stops every process of the job but mpirun (host, agents, workers) for 4.5 s, with
  // ranks declared dead after 3 s of silence (side_by_side): each side's clock ran on while it
  // was stopped, and on resume the agents left (the host gone) and the host gave both ranks up.
  check_ok(side_by_side("suspended", 2, {}, std::chrono::seconds(90)), "suspended");
}

/// The host SIGKILLs itself while a task runs on each of its 2 agents (over `btl`): the agents
/// must give up on it, stop their workers and leave.
void killed_host_case(const std::string& name, const std::string& btl) {
  fs::path scratch = scratch_dir(name);
  auto started = Clock::now();
  Run r = side_by_side("host_killed", 2, {scratch.string()}, std::chrono::seconds(60), {{"OMPI_MCA_btl", btl}});
  INFO(r.out);
  CHECK(r.status != -1);  // the job ended by itself: the agents left
  // Well before the 60 s task would have ended: the agents gave up on the host.
  CHECK(Clock::now() - started < std::chrono::seconds(30));
  std::ifstream in(scratch / "pids");
  int agent = 0, worker = 0, n = 0;
  while (in >> agent >> worker) {
    ++n;
    CHECK(::kill(agent, 0) != 0);   // gone (mpirun reaped it)
    CHECK(::kill(worker, 0) != 0);  // stopped by its agent, not orphaned
  }
  CHECK(n == 2);
}

TEST_CASE("Mpi.world.killed_host_makes_agents_stop_their_workers_and_leave") {
  killed_host_case("host_killed", "self,vader,tcp");
}

TEST_CASE("Mpi.world.killed_host_over_tcp_makes_agents_stop_their_workers_and_leave") {
  // Over TCP alone the agents' MPI calls meet a dead TCP peer (the first MPI backend turned Open
  // MPI's progress thread on against a spin inside MPI_Iprobe then; ferry's loops progress TCP
  // themselves now).
  killed_host_case("host_killed_tcp", "self,tcp");
}

TEST_CASE("Mpi.world.a_second_executor_while_the_first_holds_every_rank_fails_at_once") {
  // It got no rank, waited for handshakes that never came, and failed only after three 10 s
  // handshake timeouts, saying nothing of why.
  check_ok(world("second_executor"), "second_executor");
}

TEST_CASE("Mpi.world.a_second_executor_gets_the_ranks_of_one_shut_down_without_waiting") {
  // The first's workers still ran their calls, so their ranks were not marked as leaving: the
  // second executor's worker was refused at once, and its work failed with BrokenProcessPool.
  check_ok(world("second_executor_after_a_shutdown_without_waiting"), "second_executor_after_a_shutdown_without_waiting");
}

TEST_CASE("Mpi.world.a_second_executor_given_some_ranks_asks_for_no_more") {
  // The hub's capacity counted every live rank for every executor: the second asked for a worker
  // the first's held rank could not give, which waited for it until the handshake timeout gave it
  // up and was asked for again; warm_up() waited for it to its timeout.
  check_ok(world("second_executor_given_some_ranks"), "second_executor_given_some_ranks");
}

namespace {

/// What srun adds for a task of its step (PMI-2's wire, Slurm's task ids), and what a user sets
/// on a node and for the job: the worker_environment scenario reads them in a worker.
const std::map<std::string, std::string> rank_and_user_variables = {
    {"PMI_RANK", "1"},          {"PMI_SIZE", "3"},       {"PMI_FD", "9"},
    {"SLURM_PROCID", "1"},      {"SLURM_LOCALID", "1"},  {"SLURM_JOB_NAME", "kept"},
    {"FERRY_TEST_NODE_SETTING", "kept"}};

}  // namespace

TEST_CASE("Mpi.world.a_worker_is_no_rank_of_the_job") {
  // An agent's worker inherited the agent's identity in the job (OMPI_COMM_WORLD_RANK,
  // PMIX_RANK, the PMIx server's address...): a task or a library reading them took itself for
  // that rank, and an MPI_Init in the worker tried to join the job as that rank, and failed.
  check_ok(world("worker_environment", {}, rank_and_user_variables), "worker_environment");
}

TEST_CASE("Mpi.spawn.a_worker_is_no_rank_of_the_job") {
  // The same under spawned agents (a singleton host): each agent is rank 0 of a job of its own.
  check_ok(run({FERRY_TEST_MPI_HOST, "worker_environment", FERRY_TEST_PLUGIN_DIR}, rank_and_user_variables),
           "worker_environment");
}

namespace {

/// For the library_path scenario: `open`, a directory others can write (sticky, as /tmp), and
/// `mine`, whose tls/ (a directory the loader tries first) others can write. The job's
/// LD_LIBRARY_PATH, which the agents inherit, puts an empty element and `open` first.
std::map<std::string, std::string> library_path_job(const fs::path& scratch, bool unsafe) {
  fs::create_directories(scratch / "open");
  fs::create_directories(scratch / "mine" / "tls");
  fs::permissions(scratch / "open", fs::perms(01777), fs::perm_options::replace);
  fs::permissions(scratch / "mine", fs::perms(0755), fs::perm_options::replace);
  fs::permissions(scratch / "mine" / "tls", fs::perms(0777), fs::perm_options::replace);
  std::map<std::string, std::string> env = {{"LD_LIBRARY_PATH", ":" + (scratch / "open").string() + ":/usr/lib"}};
  if (unsafe) env.emplace("FERRY_ALLOW_UNSAFE_PLUGINS", "1");
  return env;
}

}  // namespace

TEST_CASE("Mpi.world.a_workers_LD_LIBRARY_PATH_holds_only_trusted_absolute_directories") {
  // The agent passed its workers LD_LIBRARY_PATH as it was, its own and ExecutorOptions::env's:
  // an empty element (the directory the worker starts in) or another user's directory loaded
  // their library into every worker, where a local worker's keeps trusted directories only. An
  // executor with allow_unsafe_plugins gets it as given, as a local one (the agents were not told).
  fs::path scratch = scratch_dir("library_path");
  check_ok(world("library_path", {scratch.string(), "filtered"}, library_path_job(scratch, false)), "library_path");
  // With unsafe plugins allowed (in the agents' environment), as it was.
  check_ok(world("library_path", {scratch.string(), "as_given"}, library_path_job(scratch, true)), "library_path");
}

TEST_CASE("Mpi.spawn.a_workers_LD_LIBRARY_PATH_holds_only_trusted_absolute_directories") {
  // The same under a spawned agent (a singleton host), the audit's case. The agent itself was
  // started with the host's LD_LIBRARY_PATH as it was (its launcher's, the singleton's orted's,
  // is the host's): its loader read the empty element and `open` first, and loaded the copy of
  // libferry.so.0 put there (as the host did). The hub gives it what a worker keeps.
  fs::path scratch = scratch_dir("library_path_spawn");
  auto env = library_path_job(scratch, false);
  const fs::path libferry = fs::canonical(fs::path(FERRY_TEST_MPI_AGENT).parent_path() / ".." / "lib" / "libferry.so.0");
  fs::copy_file(libferry, scratch / "open" / "libferry.so.0");
  check_ok(run({FERRY_TEST_MPI_HOST, "library_path", FERRY_TEST_PLUGIN_DIR, scratch.string(), "spawned"}, env),
           "library_path");
  // Nothing of the host's kept (the host sets its own to ':open' before its executor), under
  // mpirun --prefix (Open MPI's own installation): Open MPI puts <prefix>/lib and a colon before
  // the value the hub gives, and the empty value given then became '<prefix>/lib:', whose empty
  // element is the agent's working directory. It gives /dev/null.
  const fs::path prefix = fs::canonical(FERRY_TEST_MPIEXEC).parent_path().parent_path();
  env["FERRY_TEST_HOST_LD_LIBRARY_PATH"] = ":" + (scratch / "open").string();
  check_ok(run({FERRY_TEST_MPIEXEC, "--prefix", prefix.string(), "-n", "1", FERRY_TEST_MPI_HOST, "library_path",
                FERRY_TEST_PLUGIN_DIR, scratch.string(), "spawned"},
               env),
           "library_path");
}

namespace {

/// For the loader_environment scenario: `open` (others can write it, and replace what is in it:
/// not sticky) and `mine`, each with a copy of the plain library.
fs::path loader_places(const std::string& name) {
  fs::path scratch = scratch_dir(name);
  for (const char* dir : {"open", "mine"}) {
    fs::create_directories(scratch / dir);
    fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, scratch / dir / "libplain.so");
  }
  fs::permissions(scratch / "open", fs::perms(0777), fs::perm_options::replace);
  fs::permissions(scratch / "mine", fs::perms(0755), fs::perm_options::replace);
  return scratch;
}

}  // namespace

TEST_CASE("Mpi.world.a_workers_LD_PRELOAD_and_GCONV_PATH_hold_only_what_nobody_else_could_plant") {
  // The agent passed its workers LD_PRELOAD and GCONV_PATH as given: a library in a directory
  // others can write was loaded into every worker. Judged as a local worker's (LoaderEnv.*).
  fs::path scratch = loader_places("loader_environment");
  check_ok(world("loader_environment", {scratch.string(), "world"}), "loader_environment");
}

TEST_CASE("Mpi.spawn.an_agent_starts_with_only_the_hosts_LD_PRELOAD_and_GCONV_PATH_nobody_else_could_plant") {
  // A spawned agent's launcher (the singleton's orted) has the host's environment: its loader
  // preloaded the library in `open`, before the agent's own check of what it loaded (which
  // refuses to serve, but after that library's load-time code ran). The hub set what it kept,
  // judged on the host's node; the agent may run on another, where a missing file that is safe
  // here may be one others can create. The agent now gets none (LD_PRELOAD, LD_AUDIT, GCONV_PATH
  // empty), and its worker the host's, judged by the agent.
  fs::path scratch = loader_places("loader_environment_spawn");
  const std::string preload = (scratch / "open" / "libplain.so").string() + ":" + (scratch / "mine" / "libplain.so").string();
  check_ok(run({FERRY_TEST_MPI_HOST, "loader_environment", FERRY_TEST_PLUGIN_DIR, scratch.string(), "spawned"},
               {{"LD_PRELOAD", preload}, {"GCONV_PATH", (scratch / "open").string()}}),
           "loader_environment");
}

TEST_CASE("Mpi.spawn.an_agent_spawned_after_the_host_unset_its_loader_variables_gets_none_of_its_launchers") {
  // The hub gave a spawned agent a line only for a variable the host held at the spawn; the
  // launcher keeps the environment of MPI's start, so after the host unset LD_PRELOAD (as a
  // preloaded tool does) the agent got the launcher's, unjudged. Every variable has a line now.
  fs::path scratch = loader_places("loader_environment_unset");
  const std::string preload = (scratch / "open" / "libplain.so").string() + ":" + (scratch / "mine" / "libplain.so").string();
  check_ok(run({FERRY_TEST_MPI_HOST, "loader_environment", FERRY_TEST_PLUGIN_DIR, scratch.string(), "spawned_unset"},
               {{"LD_PRELOAD", preload},
                {"GCONV_PATH", (scratch / "open").string()},
                {"LD_LIBRARY_PATH", (scratch / "open").string()},
                {"LD_ORIGIN_PATH", (scratch / "mine").string()}}),
           "loader_environment");
}

TEST_CASE("Mpi.world.an_agent_that_loaded_a_library_another_user_could_plant_does_not_serve") {
  // Started by the job's launcher beside the host (mpirun -n 1 host : -n 1 ferry-mpi-worker),
  // the agent has the job's LD_LIBRARY_PATH, which ferry does not choose, and its loader read it
  // before main(): with `shared` (others can write it, and replace what is in it: not sticky)
  // first, it loaded the copy of libferry.so.0 there, and served. It refuses to serve, saying
  // which library and why; the host refuses that rank with the reason and the work runs on the
  // other agent, whose LD_LIBRARY_PATH is the job's. FERRY_ALLOW_UNSAFE_PLUGINS=1 on that rank
  // lets it serve. (A file of ours in a sticky directory such as /tmp is one nobody else could
  // have planted or changed: the check judges the files loaded, not the search path.)
  fs::path scratch = scratch_dir("library_path_agent");
  fs::create_directories(scratch / "shared");
  fs::permissions(scratch / "shared", fs::perms(0777), fs::perm_options::replace);
  const fs::path libferry = fs::canonical(fs::path(FERRY_TEST_MPI_AGENT).parent_path() / ".." / "lib" / "libferry.so.0");
  fs::copy_file(libferry, scratch / "shared" / "libferry.so.0");
  const std::string planted = "LD_LIBRARY_PATH=" + (scratch / "shared").string() + ":/usr/lib";
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "refused_rank", FERRY_TEST_PLUGIN_DIR, ":", "-n",
               "1", "env", planted, FERRY_TEST_MPI_AGENT, ":", "-n", "1", FERRY_TEST_MPI_AGENT},
              {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
  INFO(r.out);
  CHECK(contains(r.out, "ok refused_rank"));
  CHECK(contains(r.out, "cannot serve: it loaded " + (scratch / "shared" / "libferry.so.0").string() +
                            ", which another user could have planted"));
  CHECK(r.status == 0);
  Run allowed = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR, ":", "-n",
                     "2", "env", planted, "FERRY_ALLOW_UNSAFE_PLUGINS=1", FERRY_TEST_MPI_AGENT},
                    {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
  check_ok(allowed, "basics");
}

TEST_CASE("Mpi.spawn.workers_started_with_comm_spawn") {
  check_ok(run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR}, {}), "basics");
}

TEST_CASE("Mpi.spawn.singleton_host") {
  check_ok(run({FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR}, {}), "basics");
}

TEST_CASE("Mpi.spawn.a_host_program_named_as_the_agent_serves_as_one") {
  // FERRY_MPI_WORKER names the host program itself, which calls serve() first thing: spawned, it
  // is an agent of its parent. It went on as a host of its own and spawned agents of its own
  // (itself again), each spawning theirs (49 processes within 4 s), and the work failed.
  check_ok(run({FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR}, {{"FERRY_MPI_WORKER", FERRY_TEST_MPI_HOST}},
               std::chrono::seconds(60)),
           "basics");
}

TEST_CASE("Mpi.spawn.missing_agent_program_is_a_clear_error") {
  check_ok(run({FERRY_TEST_MPI_HOST, "missing_agent", FERRY_TEST_PLUGIN_DIR},
               {{"FERRY_MPI_WORKER", (fs::path(FERRY_TEST_BINARY_DIR) / "no-such-agent").string()}}),
           "missing_agent");
}

TEST_CASE("Mpi.world.a_worker_that_cannot_start_is_an_error_naming_its_rank_node_and_path") {
  // The agent's error said only that the worker ended with exit code 127 (or not even why it
  // refused one): in a job of many nodes, nobody could tell where ferry-worker was missing.
  fs::path scratch = scratch_dir("missing_worker");
  fs::path not_executable = scratch / "ferry-worker";
  std::ofstream(not_executable) << "not a program\n";
  fs::permissions(not_executable, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  for (const fs::path& worker : {scratch / "no-such-worker", not_executable}) {
    CAPTURE(worker);
    Run r = world("missing_worker", {}, {{"FERRY_WORKER", worker.string()}});
    check_ok(r, "missing_worker");
  }
}

TEST_CASE("Mpi.spawn.agent_named_without_a_directory_is_found_on_path") {
  // FERRY_MPI_WORKER=ferry-mpi-worker: looked up on PATH, checked and spawned as the file found
  // (it was checked as a file of the current directory, and refused as missing).
  const char* path = std::getenv("PATH");
  fs::path dir = fs::path(FERRY_TEST_MPI_AGENT).parent_path();
  check_ok(run({FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR},
               {{"FERRY_MPI_WORKER", fs::path(FERRY_TEST_MPI_AGENT).filename().string()},
                {"PATH", dir.string() + ":" + (path ? path : "/usr/bin:/bin")}}),
           "basics");
}

TEST_CASE("Mpi.spawn.agents_spawned_one_after_another_keep_hearing_the_host") {
  // An agent that takes 1.5 s to start (a slow shared file system, a cold node): the hub spawned
  // all three in one pass, blocked in each MPI_Comm_spawn, and the first agents heard nothing
  // from it for longer than the 3 s deadline: they left, and their workers were lost.
  fs::path scratch = scratch_dir("spawn_slow");
  fs::path agent = scratch / "slow-agent";
  {
    std::ofstream out(agent);
    out << "#!/bin/sh\nsleep 1.5\nexec " << FERRY_TEST_MPI_AGENT << " \"$@\"\n";
  }
  fs::permissions(agent, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
  Run r = run({FERRY_TEST_MPI_HOST, "spawn_slow", FERRY_TEST_PLUGIN_DIR},
              {{"FERRY_MPI_WORKER", agent.string()}, {"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
  check_ok(r, "spawn_slow");
}

namespace {

/// An agent program for FERRY_MPI_WORKER: a shell script running `line` (its arguments are "$@").
fs::path agent_script(const std::string& name, const std::string& line) {
  fs::path agent = scratch_dir(name) / "agent";
  std::ofstream(agent) << "#!/bin/sh\n" << line << "\n";
  fs::permissions(agent, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
  return agent;
}

}  // namespace

TEST_CASE("Mpi.spawn.an_agent_refused_at_its_hello_fails_its_worker_with_the_reason") {
  // A spawned agent refused at its hello gets no worker: the worker it was spawned for waited for
  // the next spawn, refused the same way, until the pool's handshake timeout (10 s, three times),
  // and the work failed saying only that the handshake did not come. It fails that worker with
  // the rank's reason, which the pool's error carries.
  struct Case {
    std::string name, line, reason;
  };
  for (const Case& c :
       {Case{"another MPI protocol", std::string("exec ") + FERRY_TEST_MPI_HOSTILE + " agent version",
             "MPI rank 0 on hostile (agent pid 12345) speaks MPI protocol 0 (ferry 0.0.1), this host MPI protocol 1"},
        Case{"a malformed environment", std::string("exec env FERRY_MPI_RINGS=2 ") + FERRY_TEST_MPI_AGENT + " \"$@\"",
             "cannot serve: ferry: malformed environment: FERRY_MPI_RINGS='2': not 0 or 1"}}) {
    CAPTURE(c.name);
    fs::path agent = agent_script("refused_spawn", c.line);
    Run r = run({FERRY_TEST_MPI_HOST, "refused_spawn", FERRY_TEST_PLUGIN_DIR},
                {{"FERRY_MPI_WORKER", agent.string()}, {"FERRY_MPI_TIMEOUT_MS", "3000"}}, std::chrono::seconds(90));
    INFO(r.out);
    CHECK(contains(r.out, "ok refused_spawn"));
    // The pool's error, one line: its start failures carry the reason.
    const auto at = r.out.find("refused: ");
    REQUIRE(at != std::string::npos);
    const std::string error = r.out.substr(at, r.out.find('\n', at) - at);
    CHECK(contains(error, "cannot start worker processes (backend \"mpi\")"));
    CHECK(contains(error, c.reason));
  }
}

TEST_CASE("Mpi.spawn.killed_agent_is_replaced") {
  // A new agent is spawned for the lost worker: two workers again.
  Run r = run({FERRY_TEST_MPIEXEC, "-n", "1", FERRY_TEST_MPI_HOST, "killed_rank", FERRY_TEST_PLUGIN_DIR, "2"},
              {{"FERRY_MPI_TIMEOUT_MS", "3000"}});
  INFO(r.out);
  CHECK(contains(r.out, "ok killed_rank"));
  CHECK(contains(r.out, "stopped answering"));
}

TEST_CASE("Mpi.ship.plugin_and_wrapped_task_travel_by_content") {
  fs::path scratch = scratch_dir("ship");
  fs::path plugin = scratch / "plugins" / fs::path(FERRY_TEST_MATH_PLUGIN).filename();
  fs::create_directories(plugin.parent_path());
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, plugin);
  std::map<std::string, std::string> env = {{"FERRY_MPI_SHIP", "always"},
                                            {"FERRY_CACHE_DIR", (scratch / "cache").string()}};
  Run r = world("ship", {scratch.string()}, env);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(contains(r.out, "ok ship"));

  // Both libraries arrived: the plugin byte for byte, and the wrapped task's library.
  auto files = shipped(scratch / "cache");
  CHECK(files.size() == 2);
  const std::string original = support::read_file(plugin);
  auto is_plugin = [&](const fs::path& f) { return support::read_file(f) == original; };
  CHECK(std::count_if(files.begin(), files.end(), is_plugin) == 1);
  for (const auto& f : files) CHECK((fs::status(f).permissions() & fs::perms::others_all) == fs::perms::none);


  // A corrupted cached copy is never loaded: it is checked, refused and shipped again.
  for (const auto& f : files) {
    std::ofstream out(f, std::ios::binary | std::ios::trunc);
    out << "not a library";
  }
  Run again = world("ship", {scratch.string()}, env);
  INFO(again.out);
  CHECK(again.status == 0);
  CHECK(contains(again.out, "ok ship"));
  auto now = shipped(scratch / "cache");
  CHECK(std::count_if(now.begin(), now.end(), is_plugin) == 1);
}

TEST_CASE("Mpi.ship.every_path_to_a_library_loads_the_checked_copy_never_the_hosts_path") {
  // Two paths to one content (a file and a link to it), offered to the agent while the first
  // waits for its bytes: the second offer used to replace the first, whose define then reached
  // the worker unchanged, which loaded the host's path on that node unchecked. Now both load the
  // checked copy in the agent's cache, and a function of the host's executable (a main program
  // no node but the host's may load) fails as one without its file being loaded.
  fs::path scratch = scratch_dir("ship_checked");
  const std::string name = fs::path(FERRY_TEST_HOSTILE_PLUGIN).filename().string();
  fs::create_directories(scratch / "a");
  fs::create_directories(scratch / "b");
  fs::copy_file(FERRY_TEST_HOSTILE_PLUGIN, scratch / "a" / name);
  fs::create_symlink(fs::path("..") / "a" / name, scratch / "b" / name);
  // Two calls in flight from the start (a new worker otherwise gets one until it answered): both
  // defines, each after its offer, reach the agent before it could have the bytes.
  Run r = world("ship_checked", {scratch.string()},
                {{"FERRY_MPI_SHIP", "always"},
                 {"FERRY_CACHE_DIR", (scratch / "cache").string()},
                 {"FERRY_PIPELINE_DEPTH", "4"}});
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(contains(r.out, "ok ship_checked"));
  CHECK(shipped(scratch / "cache").size() == 1);
}

TEST_CASE("Mpi.ship.a_plugin_rewritten_in_place_with_size_and_mtime_kept_is_shipped_again") {
  // The hub keyed a library's content by inode, size and mtime: written in place with those kept
  // (new bytes of the same length, the mtime set back), the host retired the workers that had it
  // but offered the agents the old content key, and their new workers loaded the old bytes from
  // the cache. Keyed by the pool's file identity (its change time), the new content is offered.
  fs::path scratch = scratch_dir("ship_rewritten");
  fs::create_directories(scratch / "plugins");
  std::string v1 = support::read_file(FERRY_TEST_VERSIONED_V1), v2 = support::read_file(FERRY_TEST_VERSIONED_V2);
  // One length (zeros after an ELF file's last section are not read).
  const std::size_t size = std::max(v1.size(), v2.size());
  v1.resize(size, '\0');
  v2.resize(size, '\0');
  std::ofstream(scratch / "plugins" / "libversioned.so", std::ios::binary) << v1;
  std::ofstream(scratch / "v2", std::ios::binary) << v2;
  fs::permissions(scratch / "plugins" / "libversioned.so", fs::perms(0755), fs::perm_options::replace);
  Run r = world("ship_rewritten", {scratch.string()},
                {{"FERRY_MPI_SHIP", "always"}, {"FERRY_CACHE_DIR", (scratch / "cache").string()}});
  check_ok(r, "ship_rewritten");
  if (contains(r.out, "nothing to show")) MESSAGE("this file system gave the write the change time before it");
  else CHECK(shipped(scratch / "cache").size() == 2);  // both versions, each by its content
}

TEST_CASE("Mpi.ship.nothing_is_written_into_a_cache_others_can_change") {
  // A shipped library written where another user can rename or plant entries could be swapped
  // before a worker loads it: the agent writes nothing there, and the task fails saying why.
  fs::path scratch = scratch_dir("ship_refused");
  fs::path plugin = scratch / "plugins" / fs::path(FERRY_TEST_MATH_PLUGIN).filename();
  fs::create_directories(plugin.parent_path());
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, plugin);
  fs::create_directories(scratch / "cache");
  fs::permissions(scratch / "cache", fs::perms(0777), fs::perm_options::replace);
  Run r = world("ship_refused", {scratch.string()},
                {{"FERRY_MPI_SHIP", "always"}, {"FERRY_CACHE_DIR", (scratch / "cache").string()}});
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(contains(r.out, "ok ship_refused"));
  CHECK(contains(r.out, "writable by group or others"));
  CHECK(shipped(scratch / "cache").empty());
}

TEST_CASE("Mpi.ship.an_agent_judges_the_search_path_of_a_plugin_at_the_hosts_path") {
  // On one node the host refuses such a plugin first: here the host allows unsafe plugins, so
  // the agent's own check is what stops it. Its RUNPATH names a directory others can write,
  // where the loader would take the library it needs (planted there or not).
  fs::path scratch = scratch_dir("search_path");
  const fs::path mine = scratch / "mine", open = scratch / "open";
  for (const auto& dir : {mine, open}) {
    fs::create_directories(dir);
    fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, dir / fs::path(FERRY_TEST_PLAIN_LIBRARY).filename());
  }
  fs::permissions(open, fs::perms(0777), fs::perm_options::replace);
  support::copy_with_strings(FERRY_TEST_RUNPATH_PLUGIN, mine / "libsearch.so",
                             {{FERRY_TEST_SEARCH_PATH_PLACEHOLDER, mine.string()}});
  support::copy_with_strings(FERRY_TEST_RUNPATH_PLUGIN, mine / "libopen.so",
                             {{FERRY_TEST_SEARCH_PATH_PLACEHOLDER, open.string()}});
  Run r = world("search_path", {scratch.string()},
                {{"FERRY_CACHE_DIR", (scratch / "cache").string()}, {"FERRY_DEBUG", "1"}});
  check_ok(r, "search_path");
  CHECK(contains(r.out, "mpi agent: not using " + (mine / "libopen.so").string()));
  CHECK(contains(r.out, "RUNPATH element '" + open.string() + "'"));
  CHECK(shipped(scratch / "cache").empty());  // its copy would read the same directory
}

TEST_CASE("Mpi.world.trace_has_a_track_per_rank_named_by_rank_and_host") {
  fs::path scratch = scratch_dir("trace");
  check_ok(world("trace", {scratch.string()}), "trace");
  support::TraceFile t = support::read_trace(scratch / "trace.json");
  CHECK(t.opened);
  CHECK(t.closed);
  CHECK(t.bad_lines == 0);
  CHECK(t.is_json_array());
  REQUIRE(t.events.size() > 2);
  CHECK(support::arg_str(*t.events[1], "backend") == "mpi");
  // Ranks 1 and 2 of the job of 3 are the agents: "rank R @ HOST (pid PID)".
  std::set<std::string> names;
  for (const auto* m : t.named("thread_name", "M")) names.insert(support::arg_str(*m, "name"));
  REQUIRE(names.size() == 2);
  std::set<std::uint64_t> ranks;
  for (const auto* start : t.named("worker start", "i")) {
    REQUIRE(support::has_arg(*start, "rank"));
    const auto rank = support::arg_u64(*start, "rank");
    ranks.insert(rank);
    const std::string host = support::arg_str(*start, "host");
    CHECK_FALSE(host.empty());
    const std::string name = "rank " + std::to_string(rank) + " @ " + host + " (pid " +
                             std::to_string(support::arg_u64(*start, "pid")) + ")";
    CHECK(names.count(name) == 1);
  }
  CHECK(ranks == std::set<std::uint64_t>({1, 2}));
  // One slice per call (a submit, three map chunks, a failure), on the ranks' tracks.
  auto slices = t.phase("X");
  CHECK(slices.size() == 5);
  for (const auto* x : slices) CHECK((support::tid(*x) == 1 || support::tid(*x) == 2));
  auto failed = t.named("fail", "X");
  REQUIRE(failed.size() == 1);
  CHECK(support::arg_str(*failed[0], "error") == "TaskError");
  CHECK(t.named("stats", "i").size() == 1);
}
