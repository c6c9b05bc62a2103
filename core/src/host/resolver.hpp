// SPDX-License-Identifier: BSD-3-Clause
// Host side: which plugin and task a function address belongs to.
#pragma once

#include <exception>
#include <string>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// Where a submitted function lives, as far as a worker is concerned.
struct FunctionTask {
  enum class Kind {
    plugin,        // a FERRY_TASK of a loaded shared library: travels by path + task name
    main_program,  // defined in the executable: the worker will fail to load it
    foreign,       // in a shared library that has no ferry task for it
    unavailable,   // a FERRY_WRAP function whose plugin could not be built: see `error`
  } kind = Kind::foreign;
  std::string library;  // absolute path of the object holding the function
  std::string name;     // task name (plugin) or the function's name where known
  std::exception_ptr error;
};

/// Resolves `address` (cached per address; thread-safe). A FERRY_WRAP function resolves to its
/// cached plugin (built first if needed: this may wait for the compiler). Otherwise reads the
/// objects' ELF symbol tables and the records of already-loaded plugins; never loads anything.
FunctionTask resolve_function(const void* address);

/// Absolute path of this process's executable.
std::string executable_path();

/// What a worker is given to load for a function of the host's main program, which it loads only
/// to report why it cannot run it: `path` when nobody else can have put a file there, otherwise
/// a path in `/` that cannot load and says why. /proc/self/exe names a deleted executable
/// "PATH (deleted)", a name anyone who can create entries in its directory could give a library
/// of theirs, which every worker would then load.
FERRY_INTERNAL_API std::string main_program_to_load(const std::string& path);

}  // namespace ferry::detail
