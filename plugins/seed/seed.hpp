// SPDX-License-Identifier: BSD-3-Clause
// The seed plugin: the task of loky's cloudpickle_wrapper example, as a registered ferry task.
#pragma once

#include <vector>

#include <ferry/task.hpp>

/// loky's `func_async(i, *args)`: returns 2 * i whatever the extra argument.
FERRY_EXPORT int func_async(int i, const std::vector<int>& args);
