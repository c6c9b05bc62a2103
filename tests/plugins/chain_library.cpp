// SPDX-License-Identifier: BSD-3-Clause
#include "chain_library.hpp"

#include "plain_library.hpp"

int chain_triple(int x) { return plain_triple(x); }
