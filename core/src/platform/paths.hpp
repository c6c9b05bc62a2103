// SPDX-License-Identifier: BSD-3-Clause
// Where libferry's own files are: everything is found relative to libferry's file, in the
// install tree and in the build tree alike (which mirrors it); no build path is compiled in.
#pragma once

#include <filesystem>

namespace ferry::detail {

/// The directory holding this libferry (canonical), or empty if the loader cannot say.
std::filesystem::path library_directory();

}  // namespace ferry::detail
