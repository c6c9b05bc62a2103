// SPDX-License-Identifier: BSD-3-Clause
// The launcher seam (<ferry/backend.hpp>) as a third party sees it: a backend written here with
// public headers and POSIX only, registered under a name, runs an executor's workers.
#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/backend.hpp>
#include <ferry/ferry.hpp>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"
#include "support/worker_spawn.hpp"

extern char** environ;

namespace {

/// A worker this test started: ferry-worker with its channel as descriptor 3.
class ChildWorker : public ferry::LaunchedWorker {
 public:
  ChildWorker(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  ~ChildWorker() override { ::close(pidfd_); }
  int pid() const override { return pid_; }
  int exit_fd() const override { return pidfd_; }
  void kill() override { ::kill(pid_, SIGKILL); }
  ferry::WorkerExit status() override {
    int st = 0;
    ferry::WorkerExit e;
    if (::waitpid(pid_, &st, 0) != pid_) return e;
    e.known = true;
    if (WIFSIGNALED(st)) e.signal = WTERMSIG(st);
    if (WIFEXITED(st)) e.exit_code = WEXITSTATUS(st);
    return e;
  }

 private:
  pid_t pid_;
  int pidfd_;
};

struct Counters {
  std::atomic<int> launches{0};
  std::atomic<int> refusals{0};
  // Each launch first waits until the worker launched before it has said hello on its channel: a
  // start as slow as a worker's own, whatever the machine's speed (100 ms at most: the pool may
  // have read that hello already).
  bool after_previous_hello = false;
};

/// What a relaying backend's workers do with the pool's hooks (as the MPI backend's do).
struct Relays {
  bool take = false;              // send(): take the frames, and write them on the channel itself
  std::atomic<int> taken{0};      // offers taken
  std::atomic<bool> poison{false};  // relay_and_hand_over(): hand over bytes that are no frame, once
  std::atomic<int> poisoned{0};
};

/// A ChildWorker whose backend relays, with the public hooks only.
class RelayingWorker final : public ChildWorker {
 public:
  /// `channel` is the pool's end (the pool owns it, and offers frames only while it is open).
  RelayingWorker(pid_t pid, int pidfd, int channel, std::shared_ptr<Relays> relays)
      : ChildWorker(pid, pidfd), channel_(channel), relays_(std::move(relays)) {}
  void relay_and_hand_over(std::string& frames) override {
    if (relays_->poison.exchange(false)) {
      frames.append(16, '\xff');
      ++relays_->poisoned;
    }
  }
  bool send(std::span<const std::string_view> pieces) override {
    if (!relays_->take) return false;
    for (std::string_view p : pieces) {
      while (!p.empty()) {
        ssize_t n = ::send(channel_, p.data(), p.size(), MSG_NOSIGNAL);
        if (n <= 0) return true;  // the worker is gone: its death is reported by its exit
        p.remove_prefix(static_cast<std::size_t>(n));
      }
    }
    ++relays_->taken;
    return true;
  }

 private:
  int channel_;
  std::shared_ptr<Relays> relays_;
};

/// Starts ferry-worker on this machine, at most `capacity` at a time; refuses after `budget`
/// launches.
class TestLauncher final : public ferry::Launcher {
 public:
  TestLauncher(std::shared_ptr<Counters> counters, std::size_t capacity, int budget,
               std::shared_ptr<Relays> relays = nullptr)
      : counters_(std::move(counters)), capacity_(capacity), budget_(budget), relays_(std::move(relays)) {}

  std::optional<Launched> launch(const std::vector<std::string>& args, std::string& why) override {
    if (counters_->launches >= budget_) {
      ++counters_->refusals;
      why = "the test's node budget is spent";
      return std::nullopt;
    }
    if (counters_->after_previous_hello && previous_channel_ >= 0) {
      pollfd hello{previous_channel_, POLLIN, 0};  // the pool reads it later: only looked at here
      ::poll(&hello, 1, 100);
    }
    auto w = support::spawn_worker(FERRY_TEST_WORKER, args, why);
    if (!w) return std::nullopt;
    ++counters_->launches;
    previous_channel_ = w->channel;
    if (relays_) return Launched{w->channel, std::make_shared<RelayingWorker>(w->pid, w->pidfd, w->channel, relays_)};
    return Launched{w->channel, std::make_shared<ChildWorker>(w->pid, w->pidfd)};
  }
  std::size_t capacity() const override { return capacity_; }
  std::string program() const override { return "ferry-worker (test backend)"; }
  std::exception_ptr start_failure(const std::string& why) const override {
    return std::make_exception_ptr(ferry::BrokenProcessPool("test backend: " + why));
  }

 private:
  std::shared_ptr<Counters> counters_;
  std::size_t capacity_;
  int budget_;
  std::shared_ptr<Relays> relays_;
  int previous_channel_ = -1;  // the pool's end of the last worker's channel (the pool owns it)
};

ferry::ExecutorOptions options_for(const std::string& backend, std::size_t workers) {
  auto o = support::options(workers);
  o.backend = backend;
  return o;
}

}  // namespace

TEST_CASE("Backend.a_registered_launcher_runs_the_pool_and_caps_its_size") {
  auto counters = std::make_shared<Counters>();
  ferry::register_backend("test-capped", [counters](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, 1, 100);
  });
  ferry::Executor ex(options_for("test-capped", 2));
  CHECK(ex.max_workers() == 1);  // its capacity is one place
  CHECK(ex.submit(square, 7).get() == 49);
  std::vector<int> in = {1, 2, 3, 4};
  CHECK(ex.map(square, in) == std::vector<int>{1, 4, 9, 16});
  CHECK(counters->launches == 1);
  // The pid the launcher gave is the one the pool reports.
  auto pids = ex.worker_pids();
  REQUIRE(pids.size() == 1);
  CHECK(ex.submit(worker_pid).get() == pids[0]);
}

TEST_CASE("Backend.a_pool_reads_its_workers_hellos_while_it_starts_the_rest") {
  // The manager started every worker of a pool in one pass, reading nothing meanwhile: 3,000
  // local workers took 21 s here, and the hello timeout (10 s from each start) then killed every
  // worker whose hello sat unread, failing the calls handed to them (ferry map -j 3000 lost most
  // of its input). It starts workers for a bounded time, then reads, then starts the rest. Here
  // each of 40 launches waits for the hello of the worker before it: in one pass, the pool read
  // none of them until all 40 were started.
  auto counters = std::make_shared<Counters>();
  counters->after_previous_hello = true;
  ferry::register_backend("test-slow", [counters](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, 100, 100);
  });
  ferry::Executor ex(options_for("test-slow", 40));
  auto f = ex.submit(square, 3);  // busy: all 40 are wanted at once
  REQUIRE(support::wait_until([&] { return !ex.worker_pids().empty(); }, std::chrono::seconds(60)));
  CHECK(counters->launches < 40);
  CHECK(f.get() == 9);
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 40; }, std::chrono::seconds(60)));
}

TEST_CASE("Backend.a_death_is_reported_through_the_launchers_status_and_the_worker_replaced") {
  auto counters = std::make_shared<Counters>();
  ferry::register_backend("test-deaths", [counters](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, SIZE_MAX, 100);
  });
  ferry::Executor ex(options_for("test-deaths", 1));
  CHECK(ex.submit(square, 3).get() == 9);
  try {
    ex.submit(segfault, 1).get();
    FAIL("a segfault must fail its task");
  } catch (const ferry::TerminatedWorkerError& e) {
    CHECK(e.signal() == SIGSEGV);
  }
  CHECK(ex.submit(square, 4).get() == 16);  // from a worker the launcher started again
  CHECK(counters->launches == 2);
}

TEST_CASE("Backend.frames_a_backend_takes_in_the_pools_thread_are_not_written_again") {
  // LaunchedWorker::send: the backend takes a lone call's frames and delivers them itself (here
  // on the same channel). Were the pool to write them too, the worker would run calls twice and
  // answer calls the pool no longer has: the pool would refuse it as garbage.
  auto counters = std::make_shared<Counters>();
  auto relays = std::make_shared<Relays>();
  relays->take = true;
  ferry::register_backend("test-takes", [counters, relays](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, SIZE_MAX, 100, relays);
  });
  ferry::Executor ex(options_for("test-takes", 1));
  for (int i = 0; i < 200; ++i) CHECK(ex.submit(square, i).get() == i * i);
  std::vector<int> in(100);
  for (int i = 0; i < 100; ++i) in[static_cast<std::size_t>(i)] = i;
  auto out = ex.map(square, in, {.chunksize = 1});
  for (int i = 0; i < 100; ++i) CHECK(out[static_cast<std::size_t>(i)] == i * i);
  CHECK(relays->taken > 0);
  CHECK(counters->launches == 1);  // the same worker all along
}

TEST_CASE("Backend.bytes_a_backend_hands_over_that_are_no_frame_end_that_worker_not_the_pool") {
  // LaunchedWorker::relay_and_hand_over: what a backend hands over is read as the worker's next
  // frames, and checked as such. Garbage ends that worker (its call fails), and the pool goes on.
  auto counters = std::make_shared<Counters>();
  auto relays = std::make_shared<Relays>();
  ferry::register_backend("test-hands-garbage", [counters, relays](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, SIZE_MAX, 100, relays);
  });
  ferry::Executor ex(options_for("test-hands-garbage", 1));
  CHECK(ex.submit(square, 3).get() == 9);
  relays->poison = true;
  // The bytes go to the thread that waits in get() while it holds the worker's channel; a call
  // whose result another thread read first is never handed them: the next call is.
  std::string what;
  for (int i = 0; i < 50 && what.empty(); ++i) {
    try {
      int v = ex.submit(slow_identity, i, 20).get();
      CHECK(v == i);
    } catch (const ferry::TerminatedWorkerError& e) {
      what = e.what();
    }
  }
  CHECK(relays->poisoned == 1);
  CHECK(what.find("malformed frame") != std::string::npos);
  CHECK(ex.submit(square, 4).get() == 16);  // from a worker the launcher started again
  CHECK(counters->launches == 2);
}

TEST_CASE("Backend.no_worker_to_start_fails_with_the_launchers_error") {
  auto counters = std::make_shared<Counters>();
  ferry::register_backend("test-empty", [counters](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, SIZE_MAX, 0);
  });
  ferry::Executor ex(options_for("test-empty", 1));
  CHECK_THROWS_WITH_AS(ex.submit(square, 2).get(), doctest::Contains("test backend: the test's node budget is spent"),
                       ferry::BrokenProcessPool);
  CHECK(counters->refusals >= 1);
}

TEST_CASE("Backend.limits_are_refused_by_a_backend_other_than_local") {
  // The host measures cpu_time from /proc by the worker's pid, which names some other local
  // process for a worker elsewhere; the other limits need the local worker's containment. The
  // executor's were refused; a task's own (SubmitOptions::limits) went through.
  auto counters = std::make_shared<Counters>();
  ferry::register_backend("test-limits", [counters](const ferry::ExecutorOptions&) {
    return std::make_shared<TestLauncher>(counters, SIZE_MAX, 100);
  });
  auto o = options_for("test-limits", 1);
  o.limits.cpu_time = std::chrono::seconds(10);
  CHECK_THROWS_WITH_AS(ferry::Executor{o}, doctest::Contains("supported by the \"local\" backend only"),
                       std::invalid_argument);
  ferry::Executor ex(options_for("test-limits", 1));
  CHECK_THROWS_WITH_AS(ex.submit_with(ferry::SubmitOptions{.limits = {.cpu_time = std::chrono::seconds(10)}}, square, 2),
                       doctest::Contains("supported by the \"local\" backend only"), std::invalid_argument);
  CHECK(ex.submit_with(ferry::SubmitOptions{.deadline = std::chrono::seconds(30)}, square, 3).get() == 9);
}

TEST_CASE("Backend.names_that_cannot_be_registered") {
  CHECK_THROWS_AS(ferry::register_backend("local", nullptr), std::invalid_argument);
  ferry::ExecutorOptions o = support::options(1);
  o.backend = "nobody-registered-this";
  CHECK_THROWS_WITH_AS(ferry::Executor{o}, doctest::Contains("backend 'nobody-registered-this' is not available"),
                       std::invalid_argument);
}
