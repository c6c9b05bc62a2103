// SPDX-License-Identifier: BSD-3-Clause
// The local backend: ferry-worker processes on this machine, started with posix_spawn.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ferry/backend.hpp>
#include <ferry/executor.hpp>

namespace ferry::detail {

/// The worker executable: `configured` if given, else the default search (see
/// ferry::default_worker_path).
std::filesystem::path find_worker(const std::filesystem::path& configured);

/// Appended to a reason a local worker could not start for when the program may be the wrong one
/// (not found, not executable, not a ferry-worker, another version): not to a process limit's,
/// a sandbox's or an initializer's.
inline constexpr const char* worker_path_advice =
    ". Set ExecutorOptions::worker_path or FERRY_WORKER to a ferry-worker executable";

class LocalLauncher final : public Launcher {
 public:
  /// Reads the environment now, on the thread that builds the executor: workers are spawned
  /// by the manager thread, and getenv must not race with an application's setenv.
  explicit LocalLauncher(const ExecutorOptions& options);

  std::optional<Launched> launch(const std::vector<std::string>& args, std::string& why) override;
  std::size_t capacity() const override { return SIZE_MAX; }
  std::string program() const override { return "ferry-worker " + worker_path_.string(); }
  std::exception_ptr start_failure(const std::string& why) const override;

 private:
  std::filesystem::path worker_path_;
  std::vector<std::string> env_;
  bool allow_unsafe_ = false;
};

}  // namespace ferry::detail
