// SPDX-License-Identifier: BSD-3-Clause
// A plugin whose task calls into another library, found through its own search path.
#include <ferry/task.hpp>

#include "plain_library.hpp"

namespace {
int triple_elsewhere(int x) { return plain_triple(x); }
}  // namespace

FERRY_TASK(triple_elsewhere);
