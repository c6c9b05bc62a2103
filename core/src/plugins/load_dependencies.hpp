// SPDX-License-Identifier: BSD-3-Clause
// What a plugin makes the dynamic loader read besides itself: the directories of its own
// DT_RUNPATH / DT_RPATH and the libraries found there, judged with the one trust check.
#pragma once

#include <filesystem>

#include <ferry/detail/export.hpp>

#include "platform/trust.hpp"

namespace ferry::detail {

/**
The first place another user could have planted a library that loading `library` would load, or
where the loader would look: trusted (an empty verdict) when there is none.

Read from the library's dynamic segment, as glibc's loader uses it: each element of its
DT_RUNPATH (or, without one, its DT_RPATH, and the DT_RPATH of the libraries that led to it),
with `$ORIGIN`, `$LIB` and `$PLATFORM` expanded (each value glibc may give the last two), must be
an absolute directory that passes the trust check as a final directory (nobody else can add a
file to it), as must the hardware-capability subdirectories the loader also tries in it
(`glibc-hwcaps/x86-64-v3`, `tls`, `x86_64`...) where they exist. An empty or relative element is
the worker's current directory to the loader, and refused. A needed library named by a path must
be trusted; one named by its soname and present in one of those directories must be trusted
too, and is followed the same way (past 256 libraries, refused). Libraries the loader finds elsewhere
(the workers' `LD_LIBRARY_PATH`, which keeps trusted directories only; the loader's cache; the
system's directories) are not followed. A file that cannot be read as ELF is left to the loader.
The parsed names are remembered per file identity (device, inode, size, modification time); the
trust checks run at every call.
*/
FERRY_INTERNAL_API TrustVerdict dependency_verdict(const std::filesystem::path& library);

/// `why` is a whole sentence (it names the place, and the library that makes the loader go there).
/// Throws PluginError::unsafe (for `library`, with that sentence) unless dependency_verdict(library)
/// passes.
void require_trusted_dependencies(const std::filesystem::path& library);

}  // namespace ferry::detail
