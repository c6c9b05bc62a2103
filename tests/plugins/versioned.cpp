// SPDX-License-Identifier: BSD-3-Clause
// A plugin built twice (FERRY_TEST_PLUGIN_VERSION 1 and 2) with the same task: replacing one file
// by the other on disk must be noticed.
#include <unistd.h>

#include <ferry/task.hpp>

int plugin_version() { return FERRY_TEST_PLUGIN_VERSION; }
int plugin_worker_pid() { return static_cast<int>(::getpid()); }
FERRY_TASK(plugin_version);
FERRY_TASK(plugin_worker_pid);
