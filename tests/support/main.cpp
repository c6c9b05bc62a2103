// SPDX-License-Identifier: BSD-3-Clause
// The doctest main, compiled once for every test executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

namespace support {
bool leak_check_off = false;
}

#if defined(__SANITIZE_ADDRESS__)
// LeakSanitizer asks this when its check at exit runs. A forked child of a test
// (support::exit_code_of_child) turns the check off: the child has none of its parent's other
// threads, so LeakSanitizer cannot read their stacks ("Running thread ... was not suspended") and
// reports what only they pointed to as leaked (a manager thread's local vector of completions at
// the moment of the fork, in CI). The parent's own check is unchanged.
extern "C" __attribute__((used)) int __lsan_is_turned_off() {
  return support::leak_check_off ? 1 : 0;
}
#endif
