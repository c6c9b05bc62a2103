// SPDX-License-Identifier: BSD-3-Clause
// TaskRef: a task named by plugin library and task name (host side; <ferry/executor.hpp> has it).
#pragma once

#include <filesystem>
#include <string>

namespace ferry {

/**
@brief Names a task by plugin library and task name, for submission without linking the plugin.

@code
auto f = ex->submit<int>(ferry::TaskRef{.library = "plugins/libmath.so", .name = "square"}, 7);
@endcode
*/
struct TaskRef {
  std::filesystem::path library;  ///< path of the plugin shared library
  std::string name;               ///< task name as given to FERRY_TASK / FERRY_TASK_AS
};

}  // namespace ferry
