// SPDX-License-Identifier: BSD-3-Clause
// Executor: submission by function, by name and by TaskRef; sizes; shutdown; the worker binary.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "seed.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {
/// Runs `body` against executors of 1, 2 and 4 workers, each a subcase.
template <class F>
void for_pool_sizes(F&& body) {
  for (std::size_t n : {1, 2, 4}) {
    DOCTEST_SUBCASE((std::to_string(n) + " workers").c_str()) {
      ferry::Executor ex(support::options(n));
      body(ex, n);
    }
  }
}
}  // namespace

TEST_CASE("Executor.submit.returns_value") {
  for_pool_sizes([](ferry::Executor& ex, std::size_t) {
    CHECK(ex.submit(square, 7).get() == 49);
    CHECK(ex.submit(add, 2, 40).get() == 42);
    CHECK(ex.submit(sum, std::vector<double>{1.5, 2.5, 3}).get() == doctest::Approx(7.0));
    CHECK(ex.submit(greet, std::string("ferry")).get() == "hello, ferry");
    CHECK(ex.submit(greet, "literal").get() == "hello, literal");
    CHECK(ex.submit(scale, math::Vec2{1, 2}, 3.0).get() == math::Vec2{3, 6});
    ex.submit(noop).get();
  });
}

TEST_CASE("Executor.submit.many_tasks_all_correct") {
  for_pool_sizes([](ferry::Executor& ex, std::size_t) {
    std::vector<ferry::Future<int>> fs;
    for (int i = 0; i < 500; ++i) fs.push_back(ex.submit(square, i));
    for (int i = 0; i < 500; ++i) REQUIRE(fs[i].get() == i * i);
  });
}

TEST_CASE("Executor.submit.uses_every_worker") {
  for_pool_sizes([](ferry::Executor& ex, std::size_t n) {
    REQUIRE(ex.warm_up(10s));
    const auto live = ex.worker_pids();
    REQUIRE(live.size() == n);
    // Calls that hold their worker until the gate opens, as many as workers: `running` (one per
    // busy worker: a worker runs one call at a time) reaches n only when each worker holds one,
    // whatever the timing. Then each call names the worker that ran it.
    support::TempDir gate;
    std::vector<ferry::Future<int>> fs;
    for (std::size_t i = 0; i < n; ++i) fs.push_back(ex.submit(gated_throw, static_cast<int>(i), gate.path.string()));
    CHECK(support::wait_until([&] { return ex.stats().running == n; }, 10s));
    std::ofstream(gate.path / "go") << "go";
    std::set<int> pids;
    for (auto& f : fs) {
      CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("gated"), ferry::TaskError);  // its way out
      REQUIRE(f.info());
      pids.insert(f.info()->worker_pid);
    }
    CHECK(pids.size() == n);
    CHECK(pids == std::set<int>(live.begin(), live.end()));
  });
}

TEST_CASE("Executor.submit.by_name") {
  for_pool_sizes([](ferry::Executor& ex, std::size_t) {
    CHECK(ex.submit<int>("square", 9).get() == 81);
    CHECK(ex.submit<int>("math.square", 9).get() == 81);
    CHECK(ex.submit<int>("math:square", 9).get() == 81);
    CHECK(ex.submit<std::string>("greet", "name").get() == "hello, name");
    CHECK(ex.submit<double>("sum", std::vector<double>{1, 2}).get() == doctest::Approx(3.0));
    CHECK(ex.submit<int>(std::string_view("add"), 1, 2).get() == 3);
  });
}

TEST_CASE("Executor.submit.by_task_ref") {
  ferry::Executor ex(support::options(2));
  CHECK(ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_MATH_PLUGIN, .name = "square"}, 6).get() == 36);
  // A relative path is taken from the host's working directory.
  auto rel = std::filesystem::relative(FERRY_TEST_MATH_PLUGIN);
  CHECK(ex.submit<int>(ferry::TaskRef{.library = rel, .name = "add"}, 6, 1).get() == 7);
}

TEST_CASE("Executor.submit.by_name_through_FERRY_PLUGIN_PATH") {
  support::ScopedEnv env("FERRY_PLUGIN_PATH", std::string("/nonexistent:") + FERRY_TEST_PLUGIN_DIR);
  auto o = support::options(1);
  o.plugin_dirs.clear();
  ferry::Executor ex(o);
  CHECK(ex.submit<int>("square", 12).get() == 144);
}

TEST_CASE("Executor.submit.large_argument") {
  ferry::Executor ex(support::options(1));
  std::vector<int> big(1'000'000);
  std::iota(big.begin(), big.end(), 0);
  CHECK(ex.submit(func_async, 21, big).get() == 42);
  std::vector<double> values(2'000'000, 0.5);
  CHECK(ex.submit(sum, values).get() == doctest::Approx(1'000'000.0));
}

TEST_CASE("Executor.submit.from_many_threads") {
  ferry::Executor ex(support::options(2));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i)
        if (ex.submit(add, t, i).get() != t + i) ++wrong;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

TEST_CASE("Executor.submit.from_a_callback") {
  ferry::Executor ex(support::options(2));
  auto chained = ex.submit(square, 3).then([&](int v) { return ex.submit(square, v).get(); });
  CHECK(chained.get() == 81);
}

TEST_CASE("Executor.env_reaches_the_workers") {
  auto o = support::options(1);
  o.env = {{"FERRY_TEST_VARIABLE", "from the host"}};
  ferry::Executor ex(o);
  CHECK(ex.submit(getenv_task, std::string("FERRY_TEST_VARIABLE")).get() == "from the host");
}

TEST_CASE("Executor.a_workers_LD_LIBRARY_PATH_holds_only_trusted_absolute_directories") {
  // The worker's loader reads LD_LIBRARY_PATH: an empty element (a common ":$LD_LIBRARY_PATH"
  // slip) or a relative one is the host's current directory when a worker starts, and a directory
  // others can write loads their library into every worker. Those elements go.
  support::TempDir open;
  std::filesystem::permissions(open.path, std::filesystem::perms(01777), std::filesystem::perm_options::replace);
  auto o = support::options(1);
  o.env = {{"LD_LIBRARY_PATH", ":" + open.path.string() + ":/usr/lib:lib"}};
  ferry::Executor ex(o);
  CHECK(ex.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get() == "/usr/lib");
  // With unsafe plugins allowed, as the user asked.
  o.allow_unsafe_plugins = true;
  ferry::Executor unsafe(o);
  CHECK(unsafe.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get() == ":" + open.path.string() + ":/usr/lib:lib");
}

TEST_CASE("Executor.a_workers_LD_LIBRARY_PATH_leaves_out_a_directory_whose_capability_subdirectory_is_open") {
  // The loader tries tls/, x86_64/, glibc-hwcaps/x86-64-v3/... in each directory before the
  // directory itself: one of them open to others is as good as the directory being open.
  support::TempDir mine, other;
  std::filesystem::create_directories(mine.path / "tls");
  std::filesystem::permissions(mine.path, std::filesystem::perms(0755), std::filesystem::perm_options::replace);
  std::filesystem::permissions(mine.path / "tls", std::filesystem::perms(0777), std::filesystem::perm_options::replace);
  std::filesystem::permissions(other.path, std::filesystem::perms(0755), std::filesystem::perm_options::replace);
  auto o = support::options(1);
  o.env = {{"LD_LIBRARY_PATH", mine.path.string() + ":" + other.path.string()}};
  ferry::Executor ex(o);
  CHECK(ex.submit(getenv_task, std::string("LD_LIBRARY_PATH")).get() == other.path.string());
}

TEST_CASE("Executor.max_workers_zero_means_cpu_count") {
  auto o = support::options(0);
  ferry::Executor ex(o);
  CHECK(ex.max_workers() == ferry::cpu_count());
  CHECK(ex.submit(square, 2).get() == 4);
}

TEST_CASE("Executor.absurd_sizes_are_refused") {
  auto o = support::options(1'000'000);
  CHECK_THROWS_AS(ferry::Executor{o}, std::invalid_argument);
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_AS(ex.resize(1'000'000), std::invalid_argument);
  CHECK_THROWS_AS(ex.resize(0), std::invalid_argument);
}

TEST_CASE("Executor.shutdown.wait_completes_everything_submitted") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(slow_identity, i, 30));
  ex.shutdown({.wait = true});
  for (int i = 0; i < 6; ++i) {
    REQUIRE(fs[i].ready());
    CHECK(fs[i].get() == i);
  }
  CHECK(support::children().empty());
}

TEST_CASE("Executor.shutdown.without_wait_still_completes") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(slow_identity, i, 30));
  ex.shutdown({.wait = false});
  CHECK_THROWS_AS(ex.submit(square, 1), ferry::BrokenProcessPool);
  for (int i = 0; i < 6; ++i) CHECK(fs[i].get() == i);
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("Executor.shutdown.kill_workers_ends_every_future_quickly") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(spin_forever, i));
  REQUIRE(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
  auto t0 = std::chrono::steady_clock::now();
  ex.shutdown({.wait = true, .kill_workers = true});
  CHECK(std::chrono::steady_clock::now() - t0 < support::scaled(1s));
  for (auto& f : fs) {
    REQUIRE(f.ready());
    CHECK_THROWS_AS(f.get(), ferry::CancelledError);
  }
  CHECK(support::children().empty());
}

TEST_CASE("Executor.shutdown.cancel_futures_cancels_what_has_not_started") {
  // Python's shutdown(cancel_futures=True): the calls not started end cancelled, the running
  // one finishes, and the wait is for it only.
  support::HeldFile held;
  ferry::Executor ex(support::options(1));
  auto running = ex.submit(value_after_hold, 7, held.path.string());
  std::vector<ferry::Future<int>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(ex.submit(square, i));
  REQUIRE(support::wait_until([&] { return running.running(); }));
  ex.shutdown({.wait = false, .cancel_futures = true});
  for (auto& f : waiting) {
    REQUIRE(f.ready());
    CHECK(f.cancelled());
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("cancel_futures"), ferry::CancelledError);
  }
  CHECK_FALSE(running.ready());
  CHECK_FALSE(running.cancelled());
  held.release();
  CHECK(running.get() == 7);
  auto s = ex.stats();
  CHECK(s.completed == 1);
  CHECK(s.failed == 5);
  CHECK(s.workers_crashed == 0);
  CHECK_THROWS_AS(ex.submit(square, 1), ferry::BrokenProcessPool);
}

TEST_CASE("Executor.shutdown.is_idempotent_and_submit_after_throws") {
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit(square, 2).get() == 4);
  ex.shutdown();
  ex.shutdown();
  CHECK(ex.is_shutdown());
  CHECK_THROWS_AS(ex.submit(square, 2), ferry::BrokenProcessPool);
  CHECK_THROWS_WITH_AS(ex.submit<int>("square", 2), doctest::Contains("after shutdown"),
                       ferry::BrokenProcessPool);
}

TEST_CASE("Executor.destructor_waits_for_submitted_work") {
  std::vector<ferry::Future<int>> fs;
  {
    ferry::Executor ex(support::options(2));
    for (int i = 0; i < 4; ++i) fs.push_back(ex.submit(slow_identity, i, 20));
  }
  for (int i = 0; i < 4; ++i) {
    REQUIRE(fs[i].ready());
    CHECK(fs[i].get() == i);
  }
  CHECK(support::children().empty());
}

TEST_CASE("Executor.worker_binary_problems_give_BrokenProcessPool") {
  support::TempDir dir;
  auto o = support::options(1);
  SUBCASE("missing") { o.worker_path = dir.path / "no-such-worker"; }
  SUBCASE("not executable") {
    o.worker_path = dir.path / "data";
    std::ofstream(o.worker_path) << "not a program";
    ::chmod(o.worker_path.c_str(), 0644);
  }
  SUBCASE("not a ferry worker") { o.worker_path = "/bin/true"; }
  ferry::Executor ex(o);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto f = ex.submit(square, 2);
    CHECK(f.wait_for(10s));
    // Named, with where to set another one.
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains(o.worker_path.c_str()), ferry::BrokenProcessPool);
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("Set ExecutorOptions::worker_path or FERRY_WORKER"),
                         ferry::BrokenProcessPool);
  }
  CHECK(support::wait_until([] { return support::zombies() == 0; }));
}

TEST_CASE("Executor.worker_found_through_FERRY_WORKER") {
  support::ScopedEnv env("FERRY_WORKER", FERRY_TEST_WORKER);
  auto o = support::options(1);
  o.worker_path.clear();
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 5).get() == 25);
}

TEST_CASE("Executor.worker_found_next_to_libferry") {
  // The build tree mirrors the install tree (lib/ and bin/), so no path is needed at all.
  auto o = support::options(1);
  o.worker_path.clear();
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 5).get() == 25);
}

TEST_CASE("Executor.no_zombies_and_no_leaked_descriptors") {
  auto fds = support::open_fds();
  {
    ferry::Executor ex(support::options(2));
    for (int i = 0; i < 20; ++i) CHECK(ex.submit(square, i).get() == i * i);
  }
  CHECK(support::children().empty());
  CHECK(support::open_fds() == fds);
}

TEST_CASE("Executor.warm_up_starts_every_worker") {
  ferry::Executor ex(support::options(3));
  CHECK(ex.worker_pids().empty());
  CHECK(ex.warm_up(10s));
  CHECK(ex.worker_pids().size() == 3);
}

TEST_CASE("Executor.resize_keeps_results_correct") {
  ferry::Executor ex(support::options(2));
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 40; ++i) {
    fs.push_back(ex.submit(slow_identity, i, 2));
    if (i == 10) ex.resize(4);
    if (i == 25) ex.resize(1);
  }
  for (int i = 0; i < 40; ++i) CHECK(fs[i].get() == i);
  CHECK(ex.max_workers() == 1);
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 1; }));
  CHECK_THROWS_AS(ex.resize(0), std::invalid_argument);
}

TEST_CASE("Executor.idle_timeout_workers_exit_and_come_back") {
  auto o = support::options(2);
  o.idle_timeout = 100ms;
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 3).get() == 9);
  CHECK(support::wait_until([&] { return ex.worker_pids().empty(); }));
  CHECK(support::wait_until([] { return support::children().empty(); }));
  CHECK(ex.submit(square, 4).get() == 16);
}

namespace {
/// Starts the test host with `mode`; returns its pid, its stdin's write end, and its workers.
struct HostProcess {
  pid_t pid = -1;
  int stdin_fd = -1;
  std::vector<int> workers;

  explicit HostProcess(const char* mode, const std::string& extra = {}) {
    int in[2], out[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execl(FERRY_TEST_HOST, FERRY_TEST_HOST, FERRY_TEST_WORKER, FERRY_TEST_PLUGIN_DIR, mode,
              extra.empty() ? static_cast<char*>(nullptr) : extra.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_fd = in[1];
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    std::istringstream is(line);
    int w;
    while (is >> w) workers.push_back(w);
  }
  ~HostProcess() {
    if (stdin_fd >= 0) ::close(stdin_fd);
  }
};
}  // namespace

TEST_CASE("Executor.workers_die_with_a_killed_host") {
  HostProcess host("wait");
  REQUIRE(host.workers.size() == 2);
  for (int w : host.workers) REQUIRE(support::alive(w));
  ::kill(host.pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(host.pid, &status, 0) == host.pid);
  CHECK(support::wait_until(
      [&] {
        for (int w : host.workers)
          if (support::alive(w)) return false;
        return true;
      },
      support::scaled(2000ms)));
}

TEST_CASE("Executor.static_executor_finishes_work_at_exit") {
  // The host leaves main with a slow call on each worker and four record_run calls queued behind
  // them (support/host_program.cpp): its static executor's destructor must run them all.
  support::TempDir dir;
  const auto record = dir.path / "runs";
  HostProcess host("exit-busy", record.string());
  REQUIRE(host.workers.size() == 2);
  int status = 0;
  REQUIRE(::waitpid(host.pid, &status, 0) == host.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 4: some work was over before main returned
  for (int w : host.workers) CHECK_FALSE(support::alive(w));
  std::ifstream in(record);
  std::multiset<int> ran;
  std::string seen;
  for (int id; in >> id;) {
    ran.insert(id);
    seen += std::to_string(id) + " ";
  }
  const std::multiset<int> each_once{1, 2, 3, 4};
  CHECK_MESSAGE(ran == each_once, "ran: " << seen);
}

TEST_CASE("Executor.its_threads_are_named") {
  // ps -L, top -H, gdb and /proc show a host's threads by name: ferry's had the program's, and
  // could not be told from its own (an audit of what a long-running host holds).
  support::TempDir dir;
  ferry::ExecutorOptions o = support::options(1);
  o.trace = (dir.path / "run.json").string();
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 3).get() == 9);
  std::multiset<std::string> names;
  std::string all;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.insert(name);
    all += name + " ";
  }
  CAPTURE(all);
  CHECK(names.count("ferry-manager") == 1);
  CHECK(names.count("ferry-trace") == 1);
}
