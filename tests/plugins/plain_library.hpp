// SPDX-License-Identifier: BSD-3-Clause
// A shared library that is not a ferry plugin.
#pragma once
int plain_triple(int x);
