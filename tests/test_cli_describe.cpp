// SPDX-License-Identifier: BSD-3-Clause
// How the ferry command turns an error into what it shows (cli/common.cpp: describe, report), run
// in this process against a real pool: what describing a failure costs before any of it is shown.
#include <doctest/doctest.h>

#include <exception>
#include <filesystem>
#include <string>

#include <ferry/ferry.hpp>

#include "../cli/commands.hpp"
#include "platform/symbolize.hpp"
#include "support/fixture.hpp"

namespace {

namespace fs = std::filesystem;
using ferry::cli::describe;
using ferry::cli::Failure;
using ferry::detail::symbolize_lookups;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// The error `f.get()` throws.
template <typename T>
std::exception_ptr error_of(ferry::Future<T> f) {
  try {
    f.get();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

}  // namespace

TEST_CASE("CliDescribe.a_remote_stack_is_symbolized_when_shown_not_when_described") {
  // map --keep-going describes every failing line and prints no stack; describe() asked each
  // error for its stack, and the first stack of each module read that module (~65 ms). A copy of
  // the crash plugin, a file no lookup has seen, so that symbolizing it must look something up.
  support::TempDir dir(FERRY_TEST_BINARY_DIR);
  const fs::path plugin = dir.path / "libcrash_copy.so";
  fs::copy_file(FERRY_TEST_CRASH_PLUGIN, plugin);
  auto options = support::options(1);
  options.plugin_dirs = {dir.path};
  std::string type, frame;
  std::exception_ptr error;

  SUBCASE("a task that threw") {
    ferry::Executor ex(options);
    error = error_of(ex.submit<int>(ferry::TaskRef{.library = plugin.string(), .name = "throw_in_named_function"}, 1));
    type = "TaskError";
    frame = "ferry_test_named_thrower(int)";
  }
  SUBCASE("a worker that crashed") {
    ferry::Executor ex(options);
    error = error_of(ex.submit<int>(ferry::TaskRef{.library = plugin.string(), .name = "segfault_in_named_function"},
                                    0LL));
    type = "TerminatedWorkerError";
    frame = "ferry_test_named_segfault(";
  }
  SUBCASE("an initializer that threw: the pool's error holds its TaskError") {
    options.initializer = "init_throws";
    ferry::Executor ex(options);
    error = error_of(ex.submit<int>(ferry::TaskRef{.library = plugin.string(), .name = "throw_in_named_function"}, 1));
    type = "BrokenProcessPool";
    frame = "init_throws()";
  }
  REQUIRE(error);
  const std::size_t before = symbolize_lookups();
  const Failure failure = describe(error);
  CHECK(failure.type == type);
  CHECK(symbolize_lookups() == before);  // described: nothing looked up
  const std::string stack = ferry::cli::remote_stack(failure);
  CAPTURE(stack);
  CHECK(contains(stack, frame));
  CHECK(symbolize_lookups() > before);  // shown: looked up then
}

TEST_CASE("CliDescribe.an_error_without_a_remote_stack_has_none") {
  const Failure failure = describe(std::make_exception_ptr(ferry::CancelledError("cancelled")));
  CHECK(failure.type == "CancelledError");
  CHECK_FALSE(failure.stack_of);
  CHECK(ferry::cli::remote_stack(failure).empty());
}
