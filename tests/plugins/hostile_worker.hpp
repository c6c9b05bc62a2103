// SPDX-License-Identifier: BSD-3-Clause
// Tasks that turn on the host from inside its worker (tests/test_hostile_worker.cpp): task code
// runs in the worker, so it holds what the worker holds and can reach, as the same user, the
// host's descriptors through /proc/<host>/fd.
#pragma once

#include <cstdint>
#include <vector>

#include <ferry/task.hpp>

/// Tries to shrink and to write every shared-memory block of the host it can reach: the memfds
/// of this worker (its arguments) and those of its parent (the host), each also reopened
/// read-write through /proc. Returns the blocks it found << 32 | how many attempts succeeded
/// (found > 0, and 0 attempts succeeded, when the blocks are safe).
FERRY_EXPORT std::uint64_t attack_argument_memfds(std::vector<char> data);
