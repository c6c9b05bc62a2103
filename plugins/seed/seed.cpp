// SPDX-License-Identifier: BSD-3-Clause
// The seed plugin.
#include "seed.hpp"

int func_async(int i, const std::vector<int>& /*args*/) { return 2 * i; }

FERRY_TASK(func_async);
