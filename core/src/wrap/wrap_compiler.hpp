// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP's host side: the registry of wrapped functions and the compiler of their plugins.
#pragma once

#include <exception>
#include <future>
#include <string>

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
};

/// The build of `site` with the current options: started in the background if needed (one per
/// process and cache key, and one per cache entry across processes). Thread-safe.
FERRY_INTERNAL_API std::shared_future<WrapBuild> wrap_build(const WrapSite& site);

/// How many plugins this process compiled itself (not found in the cache), for tests.
FERRY_INTERNAL_API unsigned wrap_compilations();

/// ferry's cache directory: $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else ~/.cache/ferry
/// (FERRY_WRAP plugins; the MPI agents' shipped plugins below it).
FERRY_INTERNAL_API std::filesystem::path default_cache_dir();

/// Precompiles the prelude for the default compiler and flags into `dir` (ferry's build does this
/// once, so that no user pays for it); returns the header to -include, "" on failure.
FERRY_INTERNAL_API std::string precompile_prelude(const std::filesystem::path& dir);

}  // namespace ferry::detail
