// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP's host side: the registry of wrapped functions and the compiler of their plugins.
#pragma once

#include <exception>
#include <future>
#include <cstddef>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>
#include <ferry/wrap.hpp>

namespace ferry::detail {

/// The wrapped function at `address`, or nullptr.
FERRY_INTERNAL_API const WrapSite* find_wrap(const void* address);

/// A built wrap plugin, or why it could not be built.
struct WrapBuild {
  std::string library;  // absolute path of the cached plugin
  std::string task;     // task name inside it
  std::exception_ptr error;
  /// Kept for the process: a success, or a failure remembered in the cache (a compile error with
  /// all it read) or one that would cost a timeout again. Any other failure (a missing header, no
  /// process or descriptor left for the compiler, a full disk, a lock waited for too long) is
  /// forgotten, and the next submission builds again.
  bool lasting = false;
};

/// The build of `site` with the current options: started in the background if needed (one per
/// process and cache key, and one per cache entry across processes). Thread-safe.
FERRY_INTERNAL_API std::shared_future<WrapBuild> wrap_build(const WrapSite& site);

/// How many plugins this process compiled itself (not found in the cache), for tests.
FERRY_INTERNAL_API unsigned wrap_compilations();

/// The environment the compiler gets: `env` (this process's) but the variables that add
/// directories to what it includes, links or runs (CPATH, C_INCLUDE_PATH, CPLUS_INCLUDE_PATH,
/// OBJC(PLUS)_INCLUDE_PATH, LIBRARY_PATH, COMPILER_PATH, GCC_EXEC_PREFIX) or where it writes
/// (DEPENDENCIES_OUTPUT, SUNPRO_DEPENDENCIES), clang's CCC_OVERRIDE_OPTIONS (which rewrites its
/// command line) and LD_RUN_PATH (a runpath the linker writes into the plugin). GCC reads an empty element of CPATH, a common
/// result of `CPATH=$CPATH:/opt/x/include`, as the current directory, searched before the
/// system's headers: another user's `vector` in a shared directory the host runs in would be
/// compiled into code the workers load; and none of them is part of a build's cache key.
/// Include directories go in WrapOptions::flags (FERRY_WRAP_FLAGS), which are. PATH keeps only
/// its absolute directories that pass the trust check as final ones: gcc runs `as` and `ld`
/// through it, and an empty element is the current directory.
FERRY_INTERNAL_API std::vector<std::string> compiler_environment(std::vector<std::string> env);

/// ferry's cache directory: $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else ~/.cache/ferry
/// (FERRY_WRAP plugins; the MPI agents' shipped plugins below it).
FERRY_INTERNAL_API std::filesystem::path default_cache_dir();

/// Where a wrap cache keeps its plugins (wrap-<key>-<content>.so): a directory of plugins only,
/// the one part of the cache a sandboxed worker may read. The generated sources, build logs and
/// records of what builds read stay in `cache_dir` itself, out of a task's sight: they hold the
/// user's other programs' code.
FERRY_INTERNAL_API std::filesystem::path wrap_plugin_dir(const std::filesystem::path& cache_dir);

/// Makes `dir` (and any missing parent) private, 0700, if missing, and says why a wrap cache may
/// not use it: not a directory, not this user's and private, not writable, or on a way others
/// could change ("" when it may). Builds refuse such a directory; a sandbox gives no rule on it.
std::string cache_dir_problem(const std::filesystem::path& dir);

/// After the prelude `key` was built in cache `dir`: removes the cache's other preludes (each
/// about 110 MB: one per compiler, flag set and version of ferry's headers) past the `kept` - 1
/// used last (the times mark_prelude_used sets on their lock files), each only when its lock can
/// be taken at once (no wrap's compiler is reading it, no process is building it). How many it
/// removed.
FERRY_INTERNAL_API std::size_t remove_old_preludes(const std::filesystem::path& dir, const std::string& key,
                                                   std::size_t kept);

/// Precompiles the prelude for the default compiler and flags into `dir` (ferry's build does this
/// once, so that no user pays for it), readable by every user (0644); returns the header to
/// -include, "" on failure. A shipped prelude this user cannot read is not used.
FERRY_INTERNAL_API std::string precompile_prelude(const std::filesystem::path& dir);

}  // namespace ferry::detail
