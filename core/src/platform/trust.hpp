// SPDX-License-Identifier: BSD-3-Clause
// The one trust check for every file ferry executes, includes or loads on the user's behalf.
#pragma once

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

/// In `env` (NAME=VALUE strings), keeps of the colon-separated search path `name` (PATH,
/// LD_LIBRARY_PATH) only the absolute directories that pass the trust check: an empty or relative
/// element is the current directory to the program that reads it, and one another user can write
/// decides what it runs or loads. Each one left out is logged (FERRY_DEBUG) with `who`. When none
/// is kept, the variable becomes `fallback`, or is removed when `fallback` is empty. `judge`
/// says why a directory is not trusted (default untrusted_reason; for LD_LIBRARY_PATH,
/// untrusted_search_directory, which judges the loader's capability subdirectories too). Not
/// exported.
void keep_trusted_search_path(std::vector<std::string>& env, std::string_view name, const char* who,
                              std::string_view fallback = {},
                              std::string (*judge)(const std::filesystem::path&) = nullptr);

}  // namespace ferry::detail
