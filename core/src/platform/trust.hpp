// SPDX-License-Identifier: BSD-3-Clause
// The one trust check for every file ferry executes, includes or loads on the user's behalf.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// Why `path` is not a place another user could have planted: "" when it is trusted.
///
/// Trusted means, like ssh's StrictModes: the file (or directory) itself and every directory on
/// the way to it, from `/` down, is owned by this user (effective uid) or root; the file is not
/// writable by group or others; a directory on the way is not either, unless it has the sticky
/// bit (as /tmp: there only an entry's owner can replace it, and the next component is checked to
/// be ours or root's). A symbolic link is followed: the directory that holds the link is checked
/// as part of the way, the link must be ours or root's (its owner can repoint it at any time),
/// and its target is checked with every directory on the target's own way. A
/// relative path is taken from the current directory. A missing component is a reason too.
/// Never throws (an allocation failure aside).
FERRY_INTERNAL_API std::string untrusted_reason(const std::filesystem::path& path);

/// As untrusted_reason, for a path that is used later (spawned, loaded) and may not exist yet: a
/// missing file is fine ("") when no other user could create it before that use, that is when
/// the nearest directory of its way that exists passes the check as a final directory (not even a
/// sticky one open to others); the use then fails as missing. Otherwise the reason.
FERRY_INTERNAL_API std::string untrusted_reason_if_present(const std::filesystem::path& path);

/// As untrusted_reason for the way to `path` only: every directory and link on the way (its
/// own directory judged as one on the way, so a sticky /tmp passes), not the final component,
/// which need not exist. For a file ferry writes: no link of another user's, and no directory
/// another user could swap, leads its write elsewhere.
FERRY_INTERNAL_API std::string untrusted_way_reason(const std::filesystem::path& path);

/// The component of `path` that failed the check, with `untrusted_reason`'s words; empty `at`
/// when the path is trusted.
struct TrustVerdict {
  std::filesystem::path at;  ///< the offending component (a directory on the way, a link target...)
  std::string why;           ///< "writable by group or others (mode 0777)", ...
  explicit operator bool() const noexcept { return why.empty(); }  ///< true: trusted
};
/// `directory_final`: the directory that holds the file's name (wherever links on the way to it
/// lead, but before a link that is the file's own name is followed) is judged as a final one
/// too, not as one on the way (a sticky directory such as /tmp passes on the way, but whatever
/// others add to a plugin directory would be taken as a plugin).
FERRY_INTERNAL_API TrustVerdict trust_verdict(const std::filesystem::path& path, bool directory_final = false);

/// What a trust walk saw of one component it passed (`lstat`, links included).
struct ComponentSeen {
  std::uint64_t dev = 0, ino = 0;
  std::uint32_t uid = 0, gid = 0, mode = 0;
  bool operator==(const ComponentSeen&) const = default;
};

/// A directory walked once for the many files in it (a plugin directory's scan): each file's
/// walk resumes where the directory's ended, with the same links followed, instead of walking
/// the same directories from `/` again (a scan of 3,000 plugins walked its directory's way 3,000
/// times). What it says of a file is what untrusted_reason(dir / name) would have said at the
/// directory's walk. The way is by path, as every walk's: checked again at the end with
/// still_holds() (the same components, each judged again), a way changed meanwhile, which only
/// this user or root can do, is seen. Not thread-safe to share; not exported.
class DirectoryTrust {
 public:
  explicit DirectoryTrust(std::filesystem::path dir);
  /// untrusted_reason(dir), the directory judged as a final one: "" when it passes.
  const std::string& reason() const noexcept { return reason_; }
  /// untrusted_reason(dir / name) for a name of the directory's listing (no '/'): the file and
  /// whatever its links lead to, walked on from the directory. A directory that failed, or
  /// whose walk did not end at a directory, gives the whole walk from `/`.
  std::string untrusted_reason_of(std::string_view name) const;
  /// The directory walked again passes, ends where it did, and saw the same components (device,
  /// inode, owner, group, mode) with the same links: what untrusted_reason_of said holds. False
  /// otherwise (the caller judges the files again with untrusted_reason), and for a directory
  /// whose files were walked whole.
  bool still_holds() const;

 private:
  std::filesystem::path dir_;
  std::string reason_;
  std::filesystem::path at_;  // where the walk ended (no link in it); empty: files walked whole
  int links_ = 0;
  std::vector<ComponentSeen> way_;
};

/// Throws PluginError::unsafe (naming the offending component and why) unless `path` is trusted
/// (trust_verdict).
void require_trusted(const std::filesystem::path& path, bool directory_final = false);

/// Creates `dir` and every missing directory on its way with mode 0700, whatever the umask (with
/// umask 002, create_directories would make them group-writable, and the trust check would then
/// refuse what ferry itself created). Directories that exist are left as they are. False, with
/// `ec` set, when one cannot be created, or when the way to the first one to make fails
/// untrusted_way_reason (permission_denied, and `why_not` set to that reason: nothing is made
/// through another user's link).
FERRY_INTERNAL_API bool create_private_directories(const std::filesystem::path& dir, std::error_code& ec,
                                                   std::string* why_not = nullptr);

/// FERRY_ALLOW_UNSAFE_PLUGINS is set (and not "0"): the user turned the check off.
FERRY_INTERNAL_API bool unsafe_allowed_by_environment();

/// In `env` (NAME=VALUE strings), keeps of the colon-separated search path `name` (PATH, as
/// execvp reads it: split at ':' alone, each directory as written) only the absolute directories
/// that pass the trust check: an empty or relative element is the current directory to the
/// program that reads it, and one another user can write decides what it runs. An element
/// holding a control character is left out too. Each one left out is logged (FERRY_DEBUG) with
/// `who`. When none is kept, the variable becomes `fallback`, or is removed when `fallback` is
/// empty. `judge` says why a directory is not trusted (default untrusted_reason). The wrap
/// compiler (its PATH) calls it; LD_LIBRARY_PATH, which the loader splits at ';' too and expands
/// tokens in, is keep_trusted_loader_environment's. Not exported. Returns whether `env` held it.
bool keep_trusted_search_path(std::vector<std::string>& env, std::string_view name, const char* who,
                              std::string_view fallback = {},
                              std::string (*judge)(const std::filesystem::path&) = nullptr);

/// In `env` (NAME=VALUE strings), keeps of what the dynamic loader and glibc read from the
/// environment to load code only what no other user could have planted (the project's rule for
/// every file ferry executes, includes or loads), as keep_trusted_search_path does for PATH:
///  - LD_LIBRARY_PATH (split at ':' and ';', as glibc's rtld does): absolute directories free of
///    '$' (the loader expands $ORIGIN, $LIB, $PLATFORM there) that pass `search_directory` (the
///    platform layer cannot name untrusted_search_directory, which judges the loader's
///    capability subdirectories too: every caller passes it);
///  - LD_PRELOAD (entries split at spaces and colons, as glibc's rtld does) and LD_AUDIT (at
///    colons): an entry with a '/' is a file, kept when absolute, free of a token the loader
///    expands ($ORIGIN, $LIB, $PLATFORM: the file judged would not be the one loaded) and
///    passing untrusted_reason_if_present (a missing one only where nobody else could create
///    it: the loader then says it is missing and goes on), and, present, `library` (what its own
///    RUNPATH makes the loader read: dependency_verdict, which every caller passes, as for a
///    plugin); an entry without '/' is a name the
///    loader looks for where it looks for every library the program needs (the LD_LIBRARY_PATH
///    kept here, the program's own RUNPATH, the system's cache and directories): kept, judged
///    as those are;
///  - GCONV_PATH (directories of iconv modules, which iconv_open loads from the configuration
///    files there): an absolute directory that passes as a final one, with its gconv-modules,
///    its gconv-modules.d and every *.conf file in that;
///  - LD_ORIGIN_PATH (the loader's $ORIGIN of the program where /proc/self/exe cannot be read:
///    the directories the program's RUNPATH names from there are not judged): never kept.
/// An entry holding a control character is left out, whatever the variable (the MPI hub writes
/// what is kept as lines). An empty entry (which glibc skips) goes silently; each other entry
/// left out is logged (FERRY_DEBUG) with `who`, the variable and why. A variable of which nothing
/// is kept is removed. Returns the names of those variables `env` held (kept, changed or
/// removed). The local launcher, the wrap compiler, the MPI hub (a spawned agent's
/// LD_LIBRARY_PATH; it sets every variable, held or not) and agent (its workers') call it. The other variables
/// of glibc's list of those a setuid program ignores (unsecvars.h) load no code: each is named,
/// with why, where it is defined (trust.cpp).
FERRY_INTERNAL_API std::vector<std::string> keep_trusted_loader_environment(
    std::vector<std::string>& env, const char* who, std::string (*search_directory)(const std::filesystem::path&),
    TrustVerdict (*library)(const std::filesystem::path&));

}  // namespace ferry::detail
