// SPDX-License-Identifier: BSD-3-Clause
// Running untrusted code: one executor with resource limits and a sandbox. Each hostile task is
// stopped with its own typed error, its worker is replaced, and the pool goes on.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <ferry/ferry.hpp>

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc < 2) {
    std::cerr << "usage: sandbox PLUGIN_DIR (where the hostile and math plugins are)\n";
    return 2;
  }
  ferry::Executor ex({.max_workers = 2,
                      .plugin_dirs = {argv[1]},
                      .limits = {.memory = 256 << 20, .cpu_time = 2s, .processes = 32},
                      .sandbox = {.enabled = true}});

  auto report = [](const char* what, auto&& run) {
    try {
      run();
      std::cout << what << ": not stopped\n";
    } catch (const ferry::ResourceLimitError& e) {
      std::cout << what << ": ResourceLimitError " << e.limit() << " (" << e.value() << ")\n";
    } catch (const ferry::SandboxViolationError& e) {
      std::cout << what << ": SandboxViolationError " << e.operation() << "\n";
    } catch (const ferry::TaskError& e) {
      std::cout << what << ": TaskError " << e.remote_message() << "\n";
    }
  };
  report("allocate 1 GiB", [&] { ex.submit<std::uint64_t>("allocate", std::uint64_t{1} << 30, true).get(); });
  report("spin 10 s", [&] { ex.submit<int>("spin_cpu", 10).get(); });
  report("fork 1000", [&] { ex.submit<int>("fork_bomb", 1000).get(); });
  report("connect 127.0.0.1:9", [&] { ex.submit<int>("connect_loopback", 9).get(); });
  report("exec /bin/sh", [&] { ex.submit<int>("exec_shell").get(); });
  // Files outside what the sandbox allows fail inside the task, as ordinary code expects (here
  // one in the current directory).
  char dir[] = "ferry-sample-XXXXXX";
  if (!::mkdtemp(dir)) return 1;
  const std::string secret = (std::filesystem::absolute(dir) / "secret").string();
  std::ofstream(secret) << "not for tasks\n";
  report("read a file outside", [&] { ex.submit<std::string>("read_file", secret).get(); });
  std::filesystem::remove_all(dir);
  // The private temporary directory is writable: $TMPDIR in the worker, which shows it at /tmp.
  std::string tmp = ex.submit<std::string>("temp_dir").get();
  std::cout << "write into $TMPDIR: " << ex.submit<bool>("write_file", tmp + "/note", std::string("ok")).get()
            << "\n";
  std::cout << "after all that, square(7) = " << ex.submit<int>("math:square", 7).get() << "\n";
}
