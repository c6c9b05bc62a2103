// SPDX-License-Identifier: BSD-3-Clause
#include "plain_library.hpp"
int plain_triple(int x) { return 3 * x; }
