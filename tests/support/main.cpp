// SPDX-License-Identifier: BSD-3-Clause
// The doctest main, compiled once for every test executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
