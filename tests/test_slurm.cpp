// SPDX-License-Identifier: BSD-3-Clause
// The MPI backend under a real Slurm: the hosts of tests/support/mpi_host.cpp run by srun, sbatch
// and salloc on the one-node cluster that `make slurm` (.ci/slurm-up) brings up. The commands are
// the README's, word for word. A test skips, saying why, when no Slurm answers here; with
// FERRY_REQUIRE_SLURM=1 (set by `make test` once it brought the cluster up) it fails instead.
#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/child_process.hpp"
#include "support/fixture.hpp"

extern char** environ;  // NOLINT: POSIX

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Run {
  int status = -1;  ///< exit status, 128 + signal, or -1 when it had to be stopped at the deadline
  std::string out;  ///< stdout and stderr
};

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

/// `name` as the shell would find it on PATH; empty when it is not there.
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0 && fs::is_regular_file(p)) return p.string();
  }
  return {};
}

/// Each test's jobs carry this name, so that a job left at the deadline can be cancelled.
std::string job_name() { return "ferry-test-" + std::to_string(::getpid()); }

/// The environment of every job. Documented in the README: root is allowed to run Open MPI, and
/// 3 processes share this node's 2 CPUs. For the tests only: the built worker, a heartbeat
/// deadline a loaded machine cannot miss, and the job's name and time limit (Slurm ends a job
/// the test lost track of).
std::map<std::string, std::string> job_environment() {
  const std::string name = job_name();
  return {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
          {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
          {"OMPI_MCA_rmaps_base_oversubscribe", "1"},
          {"FERRY_WORKER", FERRY_TEST_WORKER},
          {"FERRY_MPI_TIMEOUT_MS", "10000"},
          {"SLURM_JOB_NAME", name},
          {"SBATCH_JOB_NAME", name},
          {"SLURM_TIMELIMIT", "3"},
          {"SALLOC_TIMELIMIT", "3"},
          {"SBATCH_TIMELIMIT", "3"}};
}

/// Cancels what Slurm still runs for this test: jobs of its name, and the allocations salloc
/// reported in `out` (salloc reads no job name from the environment).
void cancel_jobs(const std::string& out) {
  std::string scancel = on_path("scancel");
  if (scancel.empty()) return;
  // Two calls: given job ids and a name, scancel cancels only the jobs that match both.
  std::vector<std::vector<std::string>> calls = {{scancel, "--name=" + job_name()}};
  static const std::regex granted("Granted job allocation ([0-9]+)");
  for (std::sregex_iterator it(out.begin(), out.end(), granted), end; it != end; ++it) {
    if (calls.size() == 1) calls.push_back({scancel});
    calls.back().push_back((*it)[1].str());
  }
  for (auto& args : calls) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0) ::waitpid(pid, nullptr, 0);
  }
}

/// Pids of every descendant of `root` (children first found, then theirs), from /proc.
std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line) || line.rfind(')') == std::string::npos) continue;
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    children.emplace(ppid, static_cast<pid_t>(std::stol(name)));
  }
  std::vector<pid_t> out = {root};
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto [from, to] = children.equal_range(out[i]);
    for (auto it = from; it != to; ++it) out.push_back(it->second);
  }
  out.erase(out.begin());
  return out;
}

/// Ends what is left of a job started as `pid`: its Slurm jobs, then every process under it
/// (salloc and mpirun start their children in process groups of their own).
void tear_down(pid_t pid, const fs::path& out) {
  cancel_jobs(support::read_file(out));
  auto rest = descendants(pid);
  ::kill(pid, SIGKILL);
  for (pid_t p : rest) ::kill(p, SIGKILL);
}

/// Runs a program with `extra` added to job_environment() (a value "" unsets), in a process group
/// of its own, its output in `dir`. Past `limit` the job is torn down. With `done` given, the job
/// is also torn down `grace` after its output first shows `done`, if it has not ended by then.
Run run(const std::vector<std::string>& args, const fs::path& dir,
        const std::map<std::string, std::string>& extra = {}, std::chrono::seconds limit = 120s,
        const std::string& done = {}, std::chrono::seconds grace = 0s) {
  std::map<std::string, std::string> env = job_environment();
  for (const auto& [k, v] : extra) env[k] = v;
  const fs::path out = dir / "stdout";
  const pid_t pid =
      support::spawn(args, dir, {.env = env, .stderr_to_stdout = true, .process_group = true}).pid;

  Run r;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  auto deadline = std::chrono::steady_clock::now() + limit;
  bool ended = false, seen = done.empty();
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    pollfd p{pidfd, POLLIN, 0};
    ended = ::poll(&p, 1, 100) > 0;
    if (!seen && contains(support::read_file(out), done)) {
      seen = true;
      deadline = std::min(deadline, std::chrono::steady_clock::now() + grace);
    }
  }
  ::close(pidfd);
  if (!ended) tear_down(pid, out);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::kill(-pid, SIGKILL);  // processes left behind in the group, if any
  if (ended) r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = support::read_file(out);
  return r;
}

/// Whether this test can run: srun, sbatch, salloc and sinfo on PATH and a node that takes jobs.
/// If not, the test is skipped with a message, or fails when FERRY_REQUIRE_SLURM=1.
bool slurm_answers(const fs::path& dir) {
  std::string why;
  for (const char* program : {"sinfo", "srun", "sbatch", "salloc", "scancel"})
    if (why.empty() && on_path(program).empty()) why = std::string(program) + " is not on PATH";
  if (why.empty()) {
    Run r = run({on_path("sinfo"), "-h", "-N", "-o", "%N %T"}, dir, {}, 30s);
    static const std::regex usable(R"(^\S+ (idle|mixed|allocated|completing)$)", std::regex::multiline);
    if (r.status == -1)
      why = "sinfo did not answer within 30 s: " + r.out;
    else if (r.status != 0)
      why = "sinfo failed (exit status " + std::to_string(r.status) + "): " + r.out;
    else if (!std::regex_search(r.out, usable))
      why = "no node takes jobs: " + r.out;
  }
  if (why.empty()) return true;
  const char* require = std::getenv("FERRY_REQUIRE_SLURM");
  if (require && std::string(require) == "1") {
    FAIL("FERRY_REQUIRE_SLURM=1 but Slurm does not answer here: " << why);
  }
  MESSAGE("skipped: no Slurm here (" << why << "); `make slurm` brings one up as root");
  return false;
}

/// The scenario printed "ok <scenario>" and the job exited 0.
void check_ok(const Run& r, const std::string& scenario) {
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(contains(r.out, "ok " + scenario));
}

}  // namespace

TEST_CASE("Slurm.job_of_n_under_srun") {
  // Rank 0 is the host, ranks 1 and 2 (started by slurmd, wired up by PMIx) serve it.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  check_ok(run({on_path("srun"), "--mpi=pmix", "-O", "-n", "3", FERRY_TEST_MPI_HOST, "basics",
                FERRY_TEST_PLUGIN_DIR},
               dir.path),
           "basics");
}

TEST_CASE("Slurm.sbatch_wait_runs_the_job") {
  // The same job of 3, as a batch script: sbatch --wait returns when it ended, with its status.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  fs::path script = dir.path / "job.sh";
  {
    std::ofstream s(script);
    s << "#!/bin/sh\nsrun --mpi=pmix -n 3 " << FERRY_TEST_MPI_HOST << " basics " << FERRY_TEST_PLUGIN_DIR << "\n";
  }
  fs::permissions(script, fs::perms::owner_all);
  fs::path job_out = dir.path / "job.out";
  Run r = run({on_path("sbatch"), "--wait", "-O", "-n", "3", "-o", job_out.string(), script.string()}, dir.path);
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(contains(r.out, "Submitted batch job"));
  std::string out = support::read_file(job_out);
  INFO(out);
  CHECK(contains(out, "ok basics"));
}

TEST_CASE("Slurm.spawn_mode_inside_an_allocation") {
  // mpirun -n 1 inside the allocation: every worker's agent comes from MPI_Comm_spawn, placed
  // in the allocation by Open MPI.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  check_ok(run({on_path("salloc"), "-O", "-n", "3", FERRY_TEST_MPIEXEC, "--mca", "orte_enable_recovery", "1",
                "-n", "1", FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR},
               dir.path),
           "basics");
}

TEST_CASE("Slurm.spawn_mode_singleton_host_inside_an_allocation") {
  // A plain run of the host inside the allocation: an MPI singleton, which spawns its agents.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  check_ok(run({on_path("salloc"), "-O", "-n", "3", FERRY_TEST_MPI_HOST, "basics", FERRY_TEST_PLUGIN_DIR},
               dir.path),
           "basics");
}

TEST_CASE("Slurm.spawn_mode_under_srun_fails_with_broken_pool") {
  // A job of one under srun has no agents to serve it and cannot spawn any: Slurm's PMIx plugin
  // does not implement spawn. Work fails at once, saying MPI_Comm_spawn failed.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  Run r = run({on_path("srun"), "--mpi=pmix", "-O", "-n", "1", FERRY_TEST_MPI_HOST, "spawn_refused",
               FERRY_TEST_PLUGIN_DIR},
              dir.path);
  check_ok(r, "spawn_refused");
}

TEST_CASE("Slurm.killed_rank_inside_an_allocation_fails_its_task_and_the_job_goes_on") {
  // The host and 2 agents by mpirun inside the allocation; the agent of a running task is
  // SIGKILLed: that task fails with TerminatedWorkerError, the other rank finishes its task and
  // takes new work, the host prints "ok", and the job ends by itself: the surviving agent, told
  // that a rank was lost, leaves without MPI_Finalize (whose fence the dead rank would never join:
  // it used to wait there for good now and then). A job still running 20 s after the host's "ok"
  // is torn down, and fails here.
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  Run r = run({on_path("salloc"), "-O", "-n", "3", FERRY_TEST_MPIEXEC, "--mca", "orte_enable_recovery", "1",
               "-n", "1", FERRY_TEST_MPI_HOST, "killed_rank", FERRY_TEST_PLUGIN_DIR, "1", ":", "-n", "2",
               FERRY_TEST_MPI_AGENT},
              dir.path, {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, 120s, "ok killed_rank", 20s);
  INFO(r.out);
  CHECK(contains(r.out, "ok killed_rank"));
  CHECK(contains(r.out, "stopped answering"));
  CHECK(r.status == 0);  // -1: still running 20 s after the host's ok, torn down
}

TEST_CASE("Slurm.killed_rank_under_srun_fails_its_task_and_the_step_goes_on") {
  // Under srun the ranks are PMIx clients of slurmstepd, and Slurm's mpi/pmix plugin kills the
  // whole step when one of them is lost, whatever --kill-on-bad-exit says. ferry's agents leave
  // that server once connected to the host (tag_detach), so the killed agent is no lost client:
  // its task fails with TerminatedWorkerError, the other rank goes on, the host prints "ok", and
  // the step ends by itself (srun's status is the killed rank's). Torn down 20 s after the "ok".
  support::TempDir dir;
  if (!slurm_answers(dir.path)) return;
  Run r = run({on_path("srun"), "--mpi=pmix", "--kill-on-bad-exit=0", "-O", "-n", "3", FERRY_TEST_MPI_HOST,
               "killed_rank", FERRY_TEST_PLUGIN_DIR, "1"},
              dir.path, {{"FERRY_MPI_TIMEOUT_MS", "3000"}}, 120s, "ok killed_rank", 20s);
  INFO(r.out);
  CHECK(contains(r.out, "ok killed_rank"));
  CHECK(contains(r.out, "stopped answering"));
  CHECK_FALSE(std::regex_search(r.out, std::regex("STEP [0-9.]+ ON \\S+ CANCELLED")));
  CHECK(r.status != -1);  // -1: still running 20 s after the host's ok, torn down
}
