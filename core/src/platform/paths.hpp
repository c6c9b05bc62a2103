// SPDX-License-Identifier: BSD-3-Clause
// Where libferry's own files are: everything is found relative to libferry's file, in the
// install tree and in the build tree alike (which mirrors it); no build path is compiled in.
#pragma once

#include <chrono>
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
/// its guardian has not ended yet) is removed itself, never followed into the user's files. Any
/// depth, with at most 16 directories open: one found 16 levels down is moved to the top of the
/// tree (renameat2, RENAME_NOREPLACE) and emptied from there in a later pass over the top. A
/// directory of ours without read, write or search permission for its owner (a task's mkdir can
/// make one; it cannot chmod) is given them first. Gives up when a pass removes nothing, or at
/// `deadline` (30 s from now without one), wherever it is then, even inside a pass or a readdir:
/// something may still be adding to the tree, or the tree may be too large for the time given.
/// False, with `error` set, if anything was left (the rest is a tree removed the same way later).
FERRY_INTERNAL_API bool remove_tree(const std::filesystem::path& dir, std::string& error);
FERRY_INTERNAL_API bool remove_tree(const std::filesystem::path& dir, std::string& error,
                                    std::chrono::steady_clock::time_point deadline);

}  // namespace ferry::detail
