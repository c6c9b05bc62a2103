// SPDX-License-Identifier: BSD-3-Clause
// ferry::TaskInfo: what ferry knows of a task, from its plugin's manifest and from one run of it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ferry {

/**
@brief What ferry knows of a task: which task it is (the first seven fields, what a plugin's
manifest says: PluginIndex::find, PluginIndex::tasks, `ferry list`) and, for a Future, how its call
ran (the fields after them: Future::info()).

A PluginIndex entry leaves the run fields at their defaults. A Future::info() fills the run fields,
and of the identity fields `name`, `signature` (the host's, as sent), `fingerprint`, `library` and
`version` of the task reference the call was sent as; `abi` and `plugin` stay empty there.
@code
ferry::Future<int> f = ex.submit(square, 7);
f.wait();
if (auto info = f.info())
  std::cout << info->name << " ran in worker " << info->worker_pid << " on " << info->worker_host
            << " for " << info->cpu_time.count() << " ns of CPU time\n";
@endcode
*/
struct TaskInfo {
  std::string name;                ///< task name
  std::string signature;           ///< canonical signature text, e.g. "i32(i32)"
  std::uint64_t fingerprint = 0;   ///< hash of the signature
  std::uint32_t abi = 0;           ///< ferry plugin ABI the plugin was built against
  std::filesystem::path library;   ///< absolute path of the plugin
  std::string plugin;              ///< plugin name: file name without "lib" and ".so"
  std::string version;             ///< identity of the file read (device, inode, size, mtime, ctime)

  // ---- one run (Future::info()) ----------------------------------------------------------------
  /// The worker process that ran the call (its pid on its own node with the "mpi" backend).
  int worker_pid = 0;
  /// That worker's host name (gethostname), as it said in its handshake.
  std::string worker_host;
  /// When submit() accepted the call (the host's clock).
  std::chrono::system_clock::time_point submitted{};
  /// When the worker began the call, and when it had the result encoded (the worker's clock:
  /// another node's, with the "mpi" backend). For a call whose worker died or was killed: when the
  /// host saw it become the running call, and when the host learnt of the death.
  std::chrono::system_clock::time_point started{}, finished{};
  /// CPU time of the worker's thread over the call: decoding the arguments, the task, encoding the
  /// result (threads the task starts are not counted). 0 when the worker could not report it (it
  /// died).
  std::chrono::nanoseconds cpu_time{0};
  /// Peak resident set size of the worker process so far, in bytes (getrusage's ru_maxrss: a
  /// high-water mark over the worker's life, earlier calls included, not this call's alone). 0
  /// when the worker could not report it.
  std::size_t max_rss = 0;
  /// Times the call was sent to a worker: 1, plus one per retry after a worker died
  /// (ExecutorOptions::max_retries_on_worker_death).
  unsigned attempts = 0;
};

}  // namespace ferry
