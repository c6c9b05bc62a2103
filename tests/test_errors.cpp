// SPDX-License-Identifier: BSD-3-Clause
// The error table of DESIGN §2: each failure is typed, carries its facts, fails only its future,
// and leaves the same executor working.
#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "plain_library.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {
// A plain function of this test program (the host's main program): it cannot reach a worker.
int local_triple(int x) { return 3 * x; }

void still_works(ferry::Executor& ex) { CHECK(ex.submit(square, 7).get() == 49); }

template <class E, class F>
E caught(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  FAIL("expected exception was not thrown");
  throw std::logic_error("unreachable");
}
}  // namespace

TEST_CASE("Errors.task_error_carries_type_message_task_and_pid") {
  ferry::Executor ex(support::options(2));
  auto e = caught<ferry::TaskError>([&] { ex.submit(fail, 3).get(); });
  CHECK(e.remote_type() == "std::invalid_argument");
  CHECK(e.remote_message() == "fail: 3");
  CHECK(e.task() == "fail");
  CHECK(e.pid() > 0);
  CHECK(e.pid() != ::getpid());
  std::string what = e.what();
  CHECK(what.find("std::invalid_argument") != std::string::npos);
  CHECK(what.find("fail: 3") != std::string::npos);
  CHECK(what.find("'fail'") != std::string::npos);
  CHECK(what.find(std::to_string(e.pid())) != std::string::npos);
  const ferry::Error& base = e;  // every ferry error is a ferry::Error
  CHECK(std::string(base.what()) == what);
  still_works(ex);
}

TEST_CASE("Errors.task_error_for_a_non_std_exception") {
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::TaskError>([&] { ex.submit(throw_int, 1).get(); });
  CHECK(e.remote_type() == "int");
  CHECK(e.remote_message().find("not derived from std::exception") != std::string::npos);
  still_works(ex);
}

TEST_CASE("Errors.serialization_on_each_side") {
  using crash::Action;
  using crash::Stage;
  ferry::Executor ex(support::options(2));
  SUBCASE("encoding arguments in the host") {
    auto f = ex.submit(take_faulty, crash::Faulty{Stage::host_encode, Action::throw_error, 1});
    auto e = caught<ferry::SerializationError>([&] { f.get(); });
    CHECK(e.stage() == ferry::SerializationStage::encode_arguments);
    CHECK(std::string(e.side()) == "host");
    CHECK(e.reason().find("failing on purpose while encoding") != std::string::npos);
    CHECK(e.type().find("crash::Faulty") != std::string::npos);
  }
  SUBCASE("decoding arguments in the worker") {
    auto f = ex.submit(take_faulty, crash::Faulty{Stage::worker_decode, Action::throw_error, 1});
    auto e = caught<ferry::SerializationError>([&] { f.get(); });
    CHECK(e.stage() == ferry::SerializationStage::decode_arguments);
    CHECK(std::string(e.side()) == "worker");
    CHECK(e.reason().find("failing on purpose while decoding") != std::string::npos);
    CHECK(e.task() == "take_faulty");
  }
  SUBCASE("encoding the result in the worker") {
    auto f = ex.submit(make_faulty, static_cast<int>(Stage::worker_encode),
                       static_cast<int>(Action::throw_error));
    auto e = caught<ferry::SerializationError>([&] { f.get(); });
    CHECK(e.stage() == ferry::SerializationStage::encode_result);
    CHECK(std::string(e.side()) == "worker");
  }
  SUBCASE("decoding the result in the host") {
    auto f = ex.submit(make_faulty, static_cast<int>(Stage::host_decode),
                       static_cast<int>(Action::throw_error));
    auto e = caught<ferry::SerializationError>([&] { f.get(); });
    CHECK(e.stage() == ferry::SerializationStage::decode_result);
    CHECK(std::string(e.side()) == "host");
    CHECK(e.type().find("crash::Faulty") != std::string::npos);
  }
  still_works(ex);
}

TEST_CASE("Errors.plugin_errors") {
  ferry::Executor ex(support::options(2));
  SUBCASE("missing file") {
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = "/nonexistent/libgone.so", .name = "square"}, 1).get();
    });
    CHECK(e.path() == "/nonexistent/libgone.so");
    CHECK(e.symbol() == "ferry_task:square");
    CHECK(std::string(e.what()).find("/nonexistent/libgone.so") != std::string::npos);
  }
  SUBCASE("not a shared library") {
    support::TempDir dir;
    auto file = dir.path / "libtext.so";
    std::ofstream(file) << "this is not an ELF file";
    auto e = caught<ferry::PluginError>(
        [&] { ex.submit<int>(ferry::TaskRef{.library = file, .name = "square"}, 1).get(); });
    CHECK(e.path() == file.string());
    CHECK_FALSE(e.loader_message().empty());
  }
  SUBCASE("not a ferry plugin") {
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_PLAIN_LIBRARY, .name = "plain_triple"}, 1).get();
    });
    CHECK(e.symbol() == "ferry_task:plain_triple");
    CHECK(e.path() == FERRY_TEST_PLAIN_LIBRARY);
  }
  SUBCASE("unloadable plugin: the loader's own message") {
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_UNLOADABLE_PLUGIN, .name = "needs_missing"}, 1).get();
    });
    CHECK(e.loader_message().find("undefined symbol") != std::string::npos);
    CHECK(e.loader_message().find("ferry_test_symbol_nobody_defines") != std::string::npos);
  }
  SUBCASE("task not found by name") {
    auto e = caught<ferry::PluginError>([&] { ex.submit<int>("no_such_task", 1).get(); });
    CHECK(std::string(e.what()).find(FERRY_TEST_PLUGIN_DIR) != std::string::npos);
  }
  SUBCASE("a name no task has, of 100 KB, is cut in the message") {
    // `ferry run <100 KB name>` printed a 100 KB error line: a name submitted may be anything.
    const std::string name(100'000, 'n');
    auto e = caught<ferry::PluginError>([&] { ex.submit<int>(name, 1).get(); });
    const std::string what = e.what();
    CHECK(what.size() < 5'000);
    CHECK(what.find("(95904 bytes more)") != std::string::npos);
    CHECK(what.find(FERRY_TEST_PLUGIN_DIR) != std::string::npos);
    CHECK(e.symbol() == "ferry_task:" + name);  // whole where a program reads it
  }
  SUBCASE("signature mismatch by name, found in the host") {
    auto e = caught<ferry::PluginError>([&] { ex.submit<double>("square", 7).get(); });
    std::string what = e.what();
    CHECK(what.find("i32(i32)") != std::string::npos);
    CHECK(what.find("f64(i32)") != std::string::npos);
  }
  SUBCASE("signature mismatch by TaskRef, found in the worker") {
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_MATH_PLUGIN, .name = "square"}, 7.5).get();
    });
    std::string what = e.what();
    CHECK(what.find("i32(i32)") != std::string::npos);
    CHECK(what.find("i32(f64)") != std::string::npos);
  }
  still_works(ex);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool memory_limit_applies = false;  // sanitizer builds leave RLIMIT_DATA unset
#else
constexpr bool memory_limit_applies = true;
#endif

TEST_CASE("Errors.a_plugin_that_cannot_load_under_the_memory_limit_names_the_limit") {
  // `ferry run --memory 1M add 1 2` said only "...libmath.so: failed to map segment from shared
  // object": nothing named the limit the worker loaded the plugin under.
  if (!memory_limit_applies) {
    MESSAGE("skipped: sanitizer builds leave RLIMIT_DATA unset");
    return;
  }
  auto options = support::options(1);
  options.limits.memory = 1u << 20;
  ferry::Executor ex(options);
  auto e = caught<ferry::PluginError>([&] {
    ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_MATH_PLUGIN, .name = "square"}, 3).get();
  });
  const std::string what = e.what();
  CHECK(e.path() == FERRY_TEST_MATH_PLUGIN);
  CHECK(what.find("memory limit of 1 MiB was in force while it loaded") != std::string::npos);
  CHECK(e.loader_message().find("memory limit of 1 MiB") != std::string::npos);
}

TEST_CASE("Errors.a_plugin_loads_under_the_limits_of_the_task_it_is_loaded_for") {
  // The worker loaded a task's plugin before it applied the task's own limits: under the limits
  // of its previous task (the executor's for its first), so a task given 1 GiB failed to load
  // its plugin under the executor's 1 MiB, and one given 1 MiB loaded its plugin without limit.
  if (!memory_limit_applies) {
    MESSAGE("skipped: sanitizer builds leave RLIMIT_DATA unset");
    return;
  }
  const ferry::TaskRef square_ref{.library = FERRY_TEST_MATH_PLUGIN, .name = "square"};
  {
    auto options = support::options(1);
    options.limits.memory = 1u << 20;
    ferry::Executor ex(options);
    CHECK(ex.submit_with<int>({.limits = {.memory = std::size_t{1} << 30}}, square_ref, 3).get() == 9);
  }
  {
    ferry::Executor ex(support::options(1));
    auto e = caught<ferry::PluginError>([&] { ex.submit_with<int>({.limits = {.memory = 1u << 20}}, square_ref, 3).get(); });
    CHECK(std::string(e.what()).find("memory limit of 1 MiB was in force while it loaded") != std::string::npos);
  }
}

TEST_CASE("Errors.a_plugin_load_failure_blames_no_memory_limit_without_one_or_a_memory_cause") {
  SUBCASE("no limit") {
    ferry::Executor ex(support::options(1));
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_UNLOADABLE_PLUGIN, .name = "needs_missing"}, 1).get();
    });
    CHECK(std::string(e.what()).find("memory limit") == std::string::npos);
  }
  SUBCASE("a limit, and an undefined symbol") {
    auto options = support::options(1);
    options.limits.memory = std::size_t{1} << 30;
    ferry::Executor ex(options);
    auto e = caught<ferry::PluginError>([&] {
      ex.submit<int>(ferry::TaskRef{.library = FERRY_TEST_UNLOADABLE_PLUGIN, .name = "needs_missing"}, 1).get();
    });
    CHECK(e.loader_message().find("undefined symbol") != std::string::npos);
    CHECK(std::string(e.what()).find("memory limit") == std::string::npos);
    still_works(ex);
  }
}

TEST_CASE("Errors.main_program_function_is_unresolvable") {
  ferry::Executor ex(support::options(1));
  auto f = ex.submit(local_triple, 2);
  auto e = caught<ferry::UnresolvableTaskError>([&] { f.get(); });
  std::string what = e.what();
  CHECK(e.function().find("local_triple") != std::string::npos);
  CHECK(e.module().find("test_errors") != std::string::npos);
  CHECK(e.detail().find("cannot dynamically load position-independent executable") != std::string::npos);
  CHECK(what.find("local_triple") != std::string::npos);
  CHECK(what.find("FERRY_TASK") != std::string::npos);
  CHECK(what.find("FERRY_WRAP") != std::string::npos);
  still_works(ex);
}

TEST_CASE("Errors.function_of_a_plain_library_is_unresolvable") {
  ferry::Executor ex(support::options(1));
  auto e = caught<ferry::UnresolvableTaskError>([&] { ex.submit(plain_triple, 2).get(); });
  CHECK(e.function().find("plain_triple") != std::string::npos);
  CHECK(e.module().find("ferry_test_plain_library") != std::string::npos);
  still_works(ex);
}

TEST_CASE("Errors.terminated_worker_names_task_pid_and_cause") {
  ferry::Executor ex(support::options(2));
  SUBCASE("signal") {
    auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(segfault, 1).get(); });
    CHECK(e.task() == "segfault");
    CHECK(e.signal() == SIGSEGV);
    CHECK(e.signal_name() == "SIGSEGV");
    CHECK(e.pid() > 0);
    CHECK(std::string(e.what()).find("SIGSEGV") != std::string::npos);
  }
  SUBCASE("exit code") {
    auto e = caught<ferry::TerminatedWorkerError>([&] { ex.submit(exit_with, 3).get(); });
    CHECK(e.task() == "exit_with");
    CHECK(e.signal() == 0);
    CHECK(e.exit_code() == 3);
    CHECK(std::string(e.what()).find("code 3") != std::string::npos);
  }
  SUBCASE("exit code of a sandbox's full memory cgroup, without one") {
    // 71 is what ferry-worker says when its memory cgroup was full; outside a sandbox with a
    // memory limit it can only be the task's own exit (EX_OSERR), not a ResourceLimitError.
    try {
      ex.submit(exit_with, 71).get();
      FAIL_CHECK("exit(71) returned a value");
    } catch (const ferry::ResourceLimitError& e) {
      FAIL_CHECK("taken for a limit: " << std::string(e.what()));
    } catch (const ferry::TerminatedWorkerError& e) {
      CHECK(e.exit_code() == 71);
    }
  }
  still_works(ex);
  CHECK(support::wait_until([&] { return ex.worker_pids().size() == 2; }));
  CHECK(support::wait_until([] { return support::zombies() == 0; }));
}

TEST_CASE("Errors.containment_errors_name_what_stopped_the_task") {
  ferry::ResourceLimitError memory("decode", 42, "memory", 512ull << 20, "std::bad_alloc: x");
  CHECK(memory.limit() == "memory");
  CHECK(memory.value() == (512ull << 20));
  CHECK(memory.task() == "decode");
  CHECK(memory.pid() == 42);
  CHECK(memory.signal() == 0);
  CHECK(std::string(memory.what()).find("memory limit of 512 MiB") != std::string::npos);
  CHECK(std::string(memory.what()).find("std::bad_alloc: x") != std::string::npos);
  CHECK(std::string(memory.what()).find("replaced") != std::string::npos);
  ferry::ResourceLimitError cpu("spin", 7, "cpu_time", 3);
  CHECK(std::string(cpu.what()).find("cpu_time limit of 3 s of CPU time") != std::string::npos);
  ferry::SandboxViolationError denied("fetch", 9, "socket");
  CHECK(denied.operation() == "socket");
  CHECK(std::string(denied.what()).find("denies: socket") != std::string::npos);
  // Both are terminated workers: code catching TerminatedWorkerError keeps working.
  const ferry::TerminatedWorkerError& base = denied;
  CHECK(base.task() == "fetch");
  CHECK(dynamic_cast<const ferry::Error*>(&base) != nullptr);
}

TEST_CASE("Errors.broken_pool_after_shutdown") {
  ferry::Executor ex(support::options(1));
  ex.shutdown();
  auto e = caught<ferry::BrokenProcessPool>([&] { ex.submit(square, 1); });
  CHECK(std::string(e.what()).find("shutdown") != std::string::npos);
}
