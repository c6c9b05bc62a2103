// SPDX-License-Identifier: BSD-3-Clause
// Where libferry's own files are: everything is found relative to libferry's file, in the
// install tree and in the build tree alike (which mirrors it); no build path is compiled in.
#pragma once

#include <filesystem>
#include <string>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// The directory holding this libferry (canonical), or empty if the loader cannot say.
std::filesystem::path library_directory();

/// Whether `inner` is `outer` or lies under it, compared component by component as given
/// (no link resolved): "/tmpfoo" is not under "/tmp". Not exported.
bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

/// Removes the directory `dir` and everything under it, never through a symbolic link: each
/// directory is opened relative to its parent with O_NOFOLLOW and emptied with unlinkat, so a
/// link put in place of a subdirectory while this runs (by a sandboxed task's descendant that
/// outlived its worker) is removed itself, never followed into the user's files. At most 256
/// levels deep. False, with `error` set, if anything was left.
FERRY_INTERNAL_API bool remove_tree(const std::filesystem::path& dir, std::string& error);

}  // namespace ferry::detail
