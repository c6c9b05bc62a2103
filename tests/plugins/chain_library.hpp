// SPDX-License-Identifier: BSD-3-Clause
// A library that needs another (plain_library) and has no search path of its own.
#pragma once
int chain_triple(int x);
