// SPDX-License-Identifier: BSD-3-Clause
// An out-of-tree ferry plugin: its tasks, for hosts that link it.
#pragma once

#include <string>

#include <ferry/task.hpp>

FERRY_EXPORT int triple(int x);
FERRY_EXPORT std::string shout(const std::string& s);
