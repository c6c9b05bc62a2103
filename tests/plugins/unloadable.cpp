// SPDX-License-Identifier: BSD-3-Clause
// A plugin that cannot be loaded: it needs a symbol no library defines.
#include <ferry/task.hpp>

extern int ferry_test_symbol_nobody_defines(int);
int needs_missing(int x) { return ferry_test_symbol_nobody_defines(x); }
FERRY_TASK(needs_missing);
