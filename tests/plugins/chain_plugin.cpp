// SPDX-License-Identifier: BSD-3-Clause
// A plugin whose task calls a library that calls another, both found through its DT_RPATH.
#include <ferry/task.hpp>

#include "chain_library.hpp"

namespace {
int triple_twice_removed(int x) { return chain_triple(x); }
}  // namespace

FERRY_TASK(triple_twice_removed);
