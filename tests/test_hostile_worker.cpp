// SPDX-License-Identifier: BSD-3-Clause
// A worker turned against its host: task code runs inside the worker, so it can write anything on
// the channel (fd 3) and touch every descriptor the worker received. Whatever it does, the host
// must not crash, hang or grow; the call it hurt gets a typed error and the pool goes on.
// Hostile tasks come from tests/plugins/hostile_worker.cpp; a worker that breaks the protocol
// itself is tests/support/fake_worker.cpp (ExecutorOptions::worker_path, FERRY_FAKE_MODE).
#include <doctest/doctest.h>

#include <dirent.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <numeric>
#include <vector>

#include <ferry/ferry.hpp>

#include "hostile_worker.hpp"
#include "math.hpp"
#include "support/fixture.hpp"
#include "support/trace_file.hpp"

namespace {

/// The sum of `bytes` as unsigned chars: what byte_sum must answer.
std::uint64_t sum_of(const std::vector<char>& bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), std::uint64_t{0},
                         [](std::uint64_t s, char c) { return s + static_cast<unsigned char>(c); });
}

/// An executor of one fake worker (support/fake_worker.cpp) misbehaving as `mode` says.
ferry::ExecutorOptions fake(const std::string& mode) {
  ferry::ExecutorOptions o = support::options(1);
  o.worker_path = FERRY_TEST_FAKE_WORKER;
  o.env["FERRY_FAKE_MODE"] = mode;
  return o;
}

/// `hurt` ends within `within` with a TerminatedWorkerError whose message names `reason`: its
/// worker broke the protocol and is gone.
void check_killed_for(ferry::Future<int>& hurt, const std::string& reason,
                      std::chrono::seconds within = std::chrono::seconds(10)) {
  REQUIRE(hurt.wait_for(within));
  std::string outcome;
  try {
    outcome = "returned " + std::to_string(hurt.get());
  } catch (const ferry::TerminatedWorkerError& e) {
    outcome = std::string("TerminatedWorkerError: ") + e.what();
  } catch (const std::exception& e) {
    outcome = std::string("other: ") + e.what();
  }
  CHECK_MESSAGE(outcome.find("TerminatedWorkerError: ") == 0, outcome);
  CHECK_MESSAGE(outcome.find(reason) != std::string::npos, outcome);
}

/// The peak resident memory of this process, in KiB (VmHWM of /proc/self/status).
long peak_resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

/// Starts a new peak: the current resident size becomes VmHWM. False where the kernel refuses.
bool reset_peak_resident() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

int open_descriptors() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

}  // namespace

TEST_CASE("HostileWorker.truncated_argument_memfd_does_not_crash_the_host") {
  // A task that shrank the memfd of its (shared-memory) arguments, or any block of the host it
  // found through /proc/<host>/fd, made the host's next large submit die of SIGBUS: the block is
  // reused, and encoding into it wrote past its new end.
  ferry::Executor ex(support::options(1));
  const std::vector<char> big(4 << 20, 1);
  // The task returns the blocks it found << 32 | the attempts that worked: it must have found
  // some (else "nothing worked" says nothing), and nothing it tried may work.
  auto check_attack = [&](const std::vector<char>& data) {
    const std::uint64_t r = ex.submit(attack_argument_memfds, data).get();
    CHECK((r >> 32) > 0);                // blocks found
    CHECK((r & 0xffffffffu) == 0);       // attempts that worked
  };
  check_attack(big);
  // Later large arguments reuse that block; they arrive whole and unaltered.
  for (char fill : {2, 3}) {
    std::vector<char> again(4 << 20, fill);
    CHECK(ex.submit(byte_sum, ferry::BytesView(again.data(), again.size())).get() == sum_of(again));
    check_attack(again);
  }
}

TEST_CASE("HostileWorker.truncated_result_memfd_does_not_crash_the_host") {
  // The worker truncated the memfd of a result after sending it: get() read the mapping and the
  // host died of SIGBUS. An unsealed memfd is refused when it arrives.
  ferry::Executor ex(fake("shm_truncate"));
  auto hurt = ex.submit(square, 1);
  REQUIRE(hurt.wait_for(std::chrono::seconds(10)));
  // The fake worker truncates that memfd when its next task arrives (a new worker if the host
  // killed it); then the first result is read.
  CHECK(ex.submit(square, 2).get() == 4);
  check_killed_for(hurt, "not sealed against shrinking");
}

TEST_CASE("HostileWorker.shared_result_must_be_a_sealed_memfd") {
  // A regular file (a FUSE one could end under the mapping at will) or an empty payload: the
  // call fails as from a worker that broke the protocol, and the next call runs.
  // A sparse memfd of a terabyte: the host would fill it with zero pages as it maps and reads
  // it (its memory, the worker's cost nothing); refused for the memory it lacks.
  for (const char* mode : {"shm_file", "shm_empty", "shm_sparse"}) {
    CAPTURE(mode);
    ferry::Executor ex(fake(mode));
    auto hurt = ex.submit(square, 1);
    check_killed_for(hurt, "malformed frame");
    CHECK(ex.submit(square, 3).get() == 9);
  }
}

TEST_CASE("HostileWorker.a_descriptor_whose_close_blocks_does_not_stop_the_host") {
  // A worker may send any descriptor with a frame. One whose last close waits (a TCP socket with
  // an hour of SO_LINGER and unread data) stopped the host's reading thread for that hour when it
  // was refused and closed there. Now only a memfd is kept; anything else is closed on a thread of
  // its own, and the call fails as from a worker that broke the protocol.
  ferry::Executor ex(fake("shm_socket"));
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "not in a memfd");
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("HostileWorker.descriptors_past_four_in_one_message_do_not_stop_the_host") {
  // A 4-descriptor control buffer: the kernel closed the fifth inside recvmsg, in the host's
  // reading thread, and a lingering socket there stopped it for an hour. Every descriptor one
  // message can carry is received now; the result (the first, a sealed memfd) is read, the
  // socket closed on a thread of its own.
  ferry::Executor ex(fake("shm_five"));
  auto f = ex.submit(square, 1);
  REQUIRE(f.wait_for(std::chrono::seconds(10)));
  CHECK(f.get() == 1);
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("HostileWorker.shared_results_keep_no_descriptor_open") {
  // Each result in shared memory kept its memfd open in the host as long as the result lived:
  // a few thousand held results and the host was out of descriptors.
  ferry::Executor ex(fake("shm_sealed"));
  CHECK(ex.submit(square, 5).get() == 25);  // the worker is up
  const int before = open_descriptors();
  std::vector<ferry::Future<int>> held;
  for (int i = 0; i < 200; ++i) held.push_back(ex.submit(square, i));
  for (auto& f : held) f.wait();
  CHECK(open_descriptors() < before + 20);
  for (int i = 0; i < 200; ++i) CHECK(held[static_cast<std::size_t>(i)].get() == i * i);
}

TEST_CASE("HostileWorker.bye_over_a_running_call_is_no_respawn_loop") {
  // A worker that says bye instead of answering, and stays: its call was handed to a new worker,
  // which did the same, without end (one submit started 1523 workers in 5 s), and shutdown(wait)
  // never returned, as nothing killed a worker that had said bye.
  ferry::ExecutorOptions o = fake("bye_running");
  o.max_retries_on_worker_death = 1;
  ferry::Executor ex(o);
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "said bye", std::chrono::seconds(30));
  // Handed back twice, then a crash, retried once: a crash again. Six workers at most.
  CHECK(ex.stats().workers_started <= 6);
  CHECK(ex.submit(square, 3).get() == 9);
  ex.shutdown();  // returns: a worker that said bye and stayed is killed
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("HostileWorker.recycle_byes_crossed_by_calls_fail_none") {
  // Workers that recycle after every call (max_memory_growth and a leaking task): a call the
  // host pipelined behind a result, or sent as soon as it read it, crossed the bye and was
  // handed back; handed back a third time it failed ("said bye instead of answering its running
  // call"), though it never ran: about 1 in 4,000 calls in bursts of 100. A recycling worker's
  // last answer says it is the last (protocol 9): what was sent behind it goes back to the queue
  // uncounted. The fake marks its answers as ferry-worker does (unmarked, a call must be pipelined
  // behind three answers in a row to fail, which this machine's timing rarely gives: the bye
  // counted against a call that ran is HostileWorker.a_task_that_says_bye_first_...).
  ferry::ExecutorOptions o = fake("recycle_each");
  o.max_workers = 2;
  ferry::Executor ex(o);
  std::vector<ferry::Future<int>> fs;
  constexpr int calls = 300;
  for (int i = 0; i < calls; ++i) fs.push_back(ex.submit(square, i % 7 + 2));
  int failed = 0;
  for (int i = 0; i < calls; ++i) {
    REQUIRE(fs[static_cast<std::size_t>(i)].wait_for(std::chrono::seconds(60)));
    try {
      CHECK(fs[static_cast<std::size_t>(i)].get() == (i % 7 + 2) * (i % 7 + 2));
    } catch (const ferry::Error& e) {
      if (++failed == 1) MESSAGE(e.what());
    }
  }
  CHECK(failed == 0);
  // One worker per call: each answered one and left, none was taken for dead.
  const ferry::ExecutorStats s = ex.stats();
  CHECK(s.workers_crashed == 0);
  CHECK(s.workers_started <= static_cast<std::size_t>(calls) + 2);
}

TEST_CASE("HostileWorker.a_task_that_says_bye_first_runs_its_call_three_times_at_most") {
  // A task that writes a bye as its call's first act, on a worker that had just answered another
  // call: a bye read right after any answer was taken as a recycling worker's and counted apart
  // (up to 12 more), so the call ran up to 15 times, a worker started for each run. Only a bye
  // after an answer marked as the last is a recycling worker's now: this one counts, and the
  // third over the same call settles it as a crash.
  support::TempDir dir;
  const std::string runs = (dir.path / "runs").string();
  ferry::ExecutorOptions o = fake("bye_first");
  o.env["FERRY_FAKE_RUNS"] = runs;
  o.max_workers = 2;
  o.max_retries_on_worker_death = 0;
  ferry::Executor ex(o);
  // Both workers answer calls first, so the hostile call is read right after an answer.
  std::vector<ferry::Future<int>> before;
  for (int i = 0; i < 40; ++i) before.push_back(ex.submit(square, 2));
  for (auto& f : before) CHECK(f.get() == 4);
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(square, i == 5 ? 1 : 3));
  for (int i = 0; i < 40; ++i) {
    auto& f = fs[static_cast<std::size_t>(i)];
    if (i == 5) {
      check_killed_for(f, "said bye", std::chrono::seconds(30));
    } else {
      REQUIRE(f.wait_for(std::chrono::seconds(30)));
      CHECK(f.get() == 9);
    }
  }
  // Read by three workers: two byes handed it back, the third was taken for its death.
  std::error_code ec;
  const auto ran = std::filesystem::file_size(runs, ec);
  CHECK_FALSE(ec);
  CHECK(ran == 3);
}

TEST_CASE("HostileWorker.a_forged_last_answer_runs_no_call_twice") {
  // A task can write its own call's result marked as its worker's last (flag_last): the calls
  // sent behind it went back to the queue at once, while its worker, which never meant to leave,
  // read and ran them too (a review: 29 of 40 calls behind ran twice, side by side). They go back
  // only once that worker has ended; here its next frame (its own answer again) is a lie and
  // ends it, and the call behind settles as its running call.
  support::TempDir dir;
  const std::string runs = (dir.path / "runs").string();
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "4");  // the second call is sent behind the first
  ferry::ExecutorOptions o = fake("forge_last");
  o.env["FERRY_FAKE_RUNS"] = runs;
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 2).get() == 4);  // its worker is up
  auto forged = ex.submit(square, 1);
  auto behind = ex.submit(square, 3);
  REQUIRE(forged.wait_for(std::chrono::seconds(10)));
  CHECK(forged.get() == 1);  // the task's own answer
  REQUIRE(behind.wait_for(std::chrono::seconds(10)));
  // Run once, by the worker that read it (which then fails it); never sent to another meanwhile.
  std::error_code ec;
  CHECK(std::filesystem::file_size(runs, ec) == 1);
  CHECK_FALSE(ec);
}

TEST_CASE("HostileWorker.an_idle_bye_crossed_by_a_call_hands_nothing_back") {
  // A worker's idle time ran out just as the host sent it a call (a loaded host took longer than
  // the idle time from the worker's hello to its first call): the bye handed the call back, the
  // worker's answer was a result for a call it was not running, and the third such bye over the
  // same call failed it ("said bye instead of answering its running call"): 5 healthy calls in
  // 12,000 at a 1 ms idle timeout. The fake says that bye before every answer, in order: the
  // call is answered by the worker it was sent to, which is then told to exit. Whether the bye
  // is honest or a task's, nothing runs twice and one worker is started per call at most.
  ferry::ExecutorOptions o = fake("idle_crossed");
  ferry::Executor ex(o);
  constexpr int calls = 4;
  for (int i = 0; i < calls; ++i) {
    auto f = ex.submit(square, 1);
    REQUIRE(f.wait_for(std::chrono::seconds(10)));
    CHECK(f.get() == 1);
  }
  // Told to exit once its call was answered: no worker stays, none was killed or lost.
  CHECK(support::wait_until([] { return support::children().empty(); }));
  CHECK(support::wait_until([&] {
    auto s = ex.stats();
    auto idle = s.recycled_by_reason.find("idle");
    return idle != s.recycled_by_reason.end() && idle->second == static_cast<std::size_t>(calls);
  }));
  const ferry::ExecutorStats s = ex.stats();
  CHECK(s.workers_started == static_cast<std::size_t>(calls));
  CHECK(s.workers_crashed == 0);
  CHECK(s.workers_stopped == 0);
  CHECK(s.failed == 0);
  // Calls in flight behind the one that crossed the bye are answered by that worker too.
  std::vector<ferry::Future<int>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(square, i == 0 ? 1 : i));
  for (int i = 0; i < 6; ++i) {
    REQUIRE(fs[static_cast<std::size_t>(i)].wait_for(std::chrono::seconds(10)));
    CHECK(fs[static_cast<std::size_t>(i)].get() == (i == 0 ? 1 : i * i));
  }
  CHECK(ex.stats().workers_crashed == 0);
  ex.shutdown();
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("HostileWorker.a_forged_idle_bye_does_not_take_its_worker_out_of_the_pools_size") {
  // A task wrote bye(idle_timeout) on the channel and ran on: its worker, retired, no longer
  // counted, and the next queued call got a new one, whose task did the same (20 calls ran at
  // once on a pool of 2). It holds its place while it runs what crossed the bye.
  ferry::ExecutorOptions o = fake("idle_running");
  o.max_workers = 2;
  ferry::Executor ex(o);
  std::vector<ferry::Future<int>> held;
  for (int i = 0; i < 6; ++i) held.push_back(ex.submit(square, i));
  CHECK(support::wait_until([&] { return ex.stats().workers_started >= 2; }));
  // Wait for a third worker as long as a replacement takes to start many times over: none comes.
  CHECK_FALSE(support::wait_until([&] { return ex.stats().workers_started > 2; }, std::chrono::milliseconds(3000)));
  CHECK(support::children().size() <= 2);
  ex.shutdown({.wait = true, .kill_workers = true});
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("HostileWorker.a_death_after_an_idle_bye_settles_the_running_call_as_a_crash") {
  // A worker that said its idle time was up runs the calls that crossed the bye: if it dies
  // then, its running call ran on it (a task can write the bye, then crash its worker), and is
  // retried and failed as for any crash, not handed to worker after worker for nothing.
  ferry::ExecutorOptions o = fake("idle_then_die");
  o.max_retries_on_worker_death = 1;
  ferry::Executor ex(o);
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "exit code 1", std::chrono::seconds(30));
  CHECK(ex.stats().workers_started == 2);  // the call's worker, and its retry's
  CHECK(ex.submit(square, 3).get() == 9);
  ex.shutdown();
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("HostileWorker.a_worker_that_stays_after_its_last_call_gives_up_its_place") {
  // max_tasks_per_child: a worker that answered its last call but neither said bye nor exited (a
  // task can answer for itself on fd 3, then block) held its place for good: nothing more was
  // sent to it, nothing ended it, and the calls behind waited for ever.
  ferry::ExecutorOptions o = fake("answer_then_stay");
  o.max_tasks_per_child = 1;
  ferry::Executor ex(o);
  for (int i = 2; i < 5; ++i) {
    auto f = ex.submit(square, i);
    REQUIRE(f.wait_for(std::chrono::seconds(10)));
    CHECK(f.get() == i * i);
  }
  ex.shutdown();
  CHECK(support::wait_until([] { return support::children().empty(); }));
}

TEST_CASE("HostileWorker.partial_frame_then_death_does_not_stall_the_manager") {
  // The worker wrote part of a frame and died while a process it forked kept the channel open:
  // the manager read EAGAIN (no EOF) and tried again, at 100 % CPU, until that process ended.
  ferry::Executor ex(fake("partial_die"));
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "exited with code 1");
  CHECK(ex.submit(square, 2).get() == 4);
}

TEST_CASE("HostileWorker.announced_size_alone_allocates_nothing") {
  // A result announced at 768 MiB (within FERRY_MAX_FRAME_BYTES) with 1 MiB sent: the host
  // allocated and touched the whole announced size when the header arrived, so 16 bytes from a
  // task (which a memory limit on its worker does not bound) cost the host 768 MiB. Memory now
  // follows the bytes that arrive.
  REQUIRE(reset_peak_resident());
  const long before = peak_resident_kib();
  REQUIRE(before > 0);
  ferry::Executor ex(fake("claim_huge"));
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "exited with code 1");
  const long grown_mib = (peak_resident_kib() - before) / 1024;
  CHECK_MESSAGE(grown_mib < 128, "the host's peak resident memory grew by " << grown_mib << " MiB");
  CHECK(ex.submit(square, 2).get() == 4);
}

TEST_CASE("HostileWorker.crash_reports_without_end_are_a_protocol_error") {
  // Reports of another process's crash are ignored (a task's forked child inherits the handler
  // and the channel), but not without end: through the MPI hub, which relays them faster than
  // the pool reads, they grew the hub's memory for good.
  ferry::Executor ex(fake("crash_flood"));
  CHECK(ex.submit(square, 3).get() == 9);
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "more than 1024 crash reports");
  CHECK(ex.submit(square, 4).get() == 16);  // a new worker
}

TEST_CASE("HostileWorker.second_hello_is_a_protocol_error") {
  // A second hello was taken as the first: the running call was never answered, and each
  // hello's host name (1 MiB each in the review) stayed in the host for good.
  ferry::Executor ex(fake("hello_again"));
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "second hello");
  CHECK(ex.submit(square, 2).get() == 4);
}

namespace {
/// What a pool of one fake worker in `mode` says when it cannot start one: the message of the
/// BrokenProcessPool its first call fails with ("" if the call ran).
std::string start_failure(const std::string& mode) {
  ferry::Executor ex(fake(mode));
  try {
    ex.submit(square, 2).get();
  } catch (const ferry::BrokenProcessPool& e) {
    return e.what();
  }
  return {};
}
}  // namespace

TEST_CASE("HostileWorker.overlong_host_name_is_refused") {
  // No ferry-worker says hello with a host name of 300 bytes: it is not started, as one that
  // speaks another protocol is not.
  const std::string what = start_failure("long_host_name");
  CHECK_MESSAGE(what.find("host name of 300 bytes") != std::string::npos, what);
}

TEST_CASE("HostileWorker.another_protocol_is_named_in_the_error") {
  // The useful words ("speaks protocol N") were overwritten by the kill that follows them
  // ("ended with SIGKILL before its handshake").
  const std::string what = start_failure("old_protocol");
  CHECK_MESSAGE(what.find("speaks protocol") != std::string::npos, what);
  CHECK_MESSAGE(what.find("SIGKILL") == std::string::npos, what);
}

TEST_CASE("HostileWorker.garbage_before_the_hello_is_named_in_the_start_failure") {
  // It was "ended with signal SIGKILL before its handshake", and with an initializer "sent a
  // malformed frame while its initializer ran", which had not started.
  std::string what = start_failure("garbage_first");
  CHECK_MESSAGE(what.find("sent a malformed frame before its handshake") != std::string::npos, what);
  ferry::ExecutorOptions o = fake("garbage_first");
  o.initializer = ferry::Call(noop);
  ferry::Executor ex(o);
  try {
    ex.submit(square, 2).get();
    FAIL("the call ran");
  } catch (const ferry::BrokenProcessPool& e) {
    what = e.what();
  }
  CHECK_MESSAGE(what.find("sent a malformed frame before its handshake") != std::string::npos, what);
}

TEST_CASE("HostileWorker.late_initializer_failure_breaks_only_that_worker") {
  // An initializer failure was taken from any worker at any time: a task that wrote one after
  // its worker had answered calls made the executor broken for everyone (BrokenProcessPool).
  ferry::ExecutorOptions o = fake("init_failed");
  o.initializer = ferry::Call(noop);
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 2).get() == 4);  // the initializer ran: a call is answered
  auto hurt = ex.submit(square, 1);
  check_killed_for(hurt, "initializer failure after");
  CHECK_FALSE(ex.is_broken());
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("HostileWorker.initializer_failure_forged_by_a_first_task_breaks_only_that_worker") {
  // The first task a worker runs came before any answer: its forged initializer failure could
  // not be told from the real one, and broke the executor. The worker now says when its
  // initializer ran, so the forgery is a protocol error of that worker.
  ferry::ExecutorOptions o = fake("init_failed");
  o.initializer = ferry::Call(noop);
  o.max_workers = 1;
  ferry::Executor ex(o);
  auto hurt = ex.submit(square, 1);  // the fake writes an initializer failure for argument 1
  check_killed_for(hurt, "initializer failure after");
  CHECK_FALSE(ex.is_broken());
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("HostileWorker.an_initializers_word_out_of_place_is_a_protocol_error") {
  // The word that the initializer ran comes once, before any result, from a worker given one.
  SUBCASE("said twice: the running call's worker broke the protocol") {
    ferry::ExecutorOptions o = fake("init_ack_again");
    o.initializer = ferry::Call(noop);
    ferry::Executor ex(o);
    CHECK(ex.submit(square, 2).get() == 4);
    auto hurt = ex.submit(square, 1);
    check_killed_for(hurt, "said twice");
    CHECK_FALSE(ex.is_broken());
  }
  SUBCASE("never said: its worker failed to start, no call ran") {
    // A result before it: the worker never got past its initializer. A start failure, as an
    // initializer that crashes is (every worker does it: the pool gives up starting them).
    ferry::ExecutorOptions o = fake("no_init_ack");
    o.initializer = ferry::Call(noop);
    ferry::Executor ex(o);
    auto hurt = ex.submit(square, 1);
    REQUIRE(hurt.wait_for(std::chrono::seconds(10)));
    try {
      hurt.get();
      FAIL("no error");
    } catch (const ferry::BrokenProcessPool& e) {
      CHECK_MESSAGE(std::string(e.what()).find("while its initializer ran (a result before its initializer ran)") !=
                        std::string::npos,
                    e.what());
    }
    CHECK_FALSE(ex.is_broken());
  }
}

TEST_CASE("HostileWorker.answer_out_of_order_is_a_protocol_error") {
  // Two calls on the worker; it answers the one behind first and never the running one. That
  // answer was taken (restarting the running call's deadline), and the running call waited for
  // ever. A worker answers in send order: anything else is a protocol error.
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "2");
  ferry::Executor ex(fake("out_of_order"));
  auto running = ex.submit(square, 1);
  auto behind = ex.submit(square, 2);
  check_killed_for(running, "not running");
  CHECK(behind.get() == 4);  // requeued: run again by a new worker
}

TEST_CASE("HostileWorker.times_a_worker_reports_cannot_overflow_the_host") {
  // A result's times are the worker's word (signed overflow in the trace's arithmetic, under
  // UBSan, before): they are kept within 2^62 ns, the call's info and the trace stay sane.
  support::TempDir dir;
  ferry::ExecutorOptions o = fake("huge_times");
  o.trace = (dir.path / "run.trace").string();
  ferry::Executor ex(o);
  auto f = ex.submit(square, 1);
  CHECK(f.get() == 1);
  auto info = f.info();
  REQUIRE(info);
  const auto limit = std::chrono::nanoseconds(std::int64_t{1} << 62);
  const auto zero = std::chrono::nanoseconds(0);  // UINT64_MAX taken as signed: -1 ns
  for (auto t : {std::chrono::nanoseconds(info->started.time_since_epoch()),
                 std::chrono::nanoseconds(info->finished.time_since_epoch()), info->cpu_time}) {
    CHECK(t >= zero);
    CHECK(t <= limit);
  }
  CHECK(ex.submit(square, 5).get() == 25);
  // The trace: each call's slice lies within the executor's life (ts from its start, in µs),
  // whatever times its worker reported.
  ex.shutdown();  // closes the trace: its stats line, then "]"
  const support::TraceFile trace = support::read_trace(dir.path / "run.trace");
  REQUIRE(trace.closed);
  CHECK(trace.bad_lines == 0);
  const auto stats = trace.named("stats");
  REQUIRE(stats.size() == 1);
  REQUIRE(support::has_arg(*stats[0], "uptime"));
  const double uptime_us = (*stats[0])["args"]["uptime"].GetDouble() * 1e6;
  const auto slices = trace.named("square", "X");
  CHECK(slices.size() == 2);
  for (const auto* slice : slices) {
    REQUIRE(slice->HasMember("dur"));
    const double ts = support::ts(*slice), dur = (*slice)["dur"].GetDouble();
    CAPTURE(ts);
    CAPTURE(dur);
    CHECK(ts >= 0);
    CHECK(dur >= 0);
    CHECK(ts + dur <= uptime_us + 1000);  // 1 ms for the rounding of both
  }
}

TEST_CASE("HostileWorker.a_failure_naming_an_item_past_its_chunk_names_the_chunk") {
  // A worker's failure named item 4000000000 of a chunk of 4: the error named input 4000000000,
  // which no input of the map has. The chunk's inputs are named instead.
  ferry::Executor ex(fake("item_past_the_call"));
  auto out = ex.map_outcomes(square, std::vector<int>{5, 6, 7, 1}, {.chunksize = 4});
  REQUIRE(out.size() == 4);
  for (std::size_t i = 0; i < out.size(); ++i) {
    CAPTURE(i);
    REQUIRE_FALSE(out[i].ok());
    try {
      std::rethrow_exception(out[i].error());
    } catch (const ferry::TaskError& e) {
      CHECK(e.input_index() == 0);
      CHECK(e.input_count() == 4);
      CHECK(std::string(e.what()).find("4000000000") == std::string::npos);
    }
  }
}
