// SPDX-License-Identifier: BSD-3-Clause
// What a plugin makes the dynamic loader read besides itself: the directories of its own
// DT_RUNPATH / DT_RPATH and the libraries found there, judged with the one trust check.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

#include "platform/trust.hpp"

namespace ferry::detail {

/**
The first place another user could have planted a library that loading `library` would load, or
where the loader would look: trusted (an empty verdict) when there is none.

Read from the library's dynamic segment as glibc's loader reads it (read_load_names): each
element of its DT_RUNPATH (or, without one, its DT_RPATH, and the DT_RPATH of the libraries that
led to it), with `$ORIGIN`, `$LIB` and `$PLATFORM` expanded (each value glibc may give the last
two), must be an absolute directory that passes the trust check as a final directory (nobody
else can add a file to it), as must whatever is there under the names of the
hardware-capability subdirectories the loader also tries in it (`glibc-hwcaps/x86-64-v3`, `tls`,
`x86_64`, `haswell`..., five deep). An empty or relative element is the worker's current directory
to the loader, and refused. A needed or filter library (DT_NEEDED, DT_AUXILIARY, DT_FILTER)
named by a path must be trusted; one named by its soname and present in one of those places must
be trusted too, and is read the same way (each library once; past 4,096, refused). A name of
`library` itself holding a token dlopen expands is refused; so is a library the loader may load
that ferry cannot read as the loader does, and an element that expands to more than 256 names.
Libraries the loader finds elsewhere (the workers' `LD_LIBRARY_PATH`, which keeps trusted
directories only; the loader's cache; the system's directories) are not read, nor what the
plugin's own code opens with dlopen. A file the loader would not load (missing, unreadable, not
ELF, another machine's) is left to it. The parsed names are remembered per file identity; the
trust checks run at every call.
*/
FERRY_INTERNAL_API TrustVerdict dependency_verdict(const std::filesystem::path& library);

/// Why a directory of the workers' (or the wrap compiler's) LD_LIBRARY_PATH could lead the
/// loader to another user's library: the directory as a final one (untrusted_reason), then
/// whatever is under the names of the capability subdirectories the loader tries in it, as for
/// a plugin's search path. "" when trusted. The local launcher, the wrap compiler and the MPI
/// agent (its workers' LD_LIBRARY_PATH) judge with it.
FERRY_INTERNAL_API std::string untrusted_search_directory(const std::filesystem::path& dir);

/// In a sandboxed worker, once, before it loads any plugin (Containment::build_sandbox): the
/// files and directories its tasks can write, as the worker sees them (Sandbox::write, the
/// private directory, and /tmp, /var/tmp, /dev/shm where the worker shows it there). Each is
/// known by its device and inode, taken now.
void set_task_writable_places(const std::vector<std::string>& places);

/**
In a sandboxed worker (set_task_writable_places), the first place from which loading `library`
would take a file a task of the sandbox could have put there: trusted (an empty verdict) when
there is none, or when no places were set (a worker without a sandbox).

The host judged the plugin's search path on its own file system, where a directory of the user's
under /var/tmp passes; the worker's loader searches the worker's mount namespace, where /var/tmp
is the sandbox's private directory, which every call writes: a library one call left there would
be loaded by a later worker's plugin. So the walk dependency_verdict makes (the same libraries,
the same expansions) is made again here, with another judgment: `library` itself, each element
of the search paths (DT_RUNPATH, or DT_RPATH and those that led to it), whatever is at the names
of their capability subdirectories and each library found or named by path must not lie at or
under a place a task can write (each directory on the way compared by device and inode, links
followed by hand), and a search path element must not hold one inside it (as
search_path_outside rules for the workers' LD_LIBRARY_PATH: the loader searches subdirectories
whose names differ by glibc and CPU). Refused, the plugin is not loaded.
*/
TrustVerdict task_writable_verdict(const std::filesystem::path& library);

/// `why` is a whole sentence (it names the place, and the library that makes the loader go there).
/// Throws PluginError::unsafe (for `library`, with that sentence) unless dependency_verdict(library)
/// passes.
void require_trusted_dependencies(const std::filesystem::path& library);

}  // namespace ferry::detail
