// SPDX-License-Identifier: BSD-3-Clause
// What is done to a shared-memory block before a peer gets it (shm.cpp): a worker runs task code,
// which can reach every descriptor of its process (and, as the same user, the host's through
// /proc/<pid>/fd), so a block must not be one it can shrink under the host's mapping or write.
#pragma once

#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"

namespace ferry::detail {

/// The descriptor a worker gets for a block of ours (arguments): the block is sealed against
/// writes through any descriptor and against new writable mappings (F_SEAL_FUTURE_WRITE; our own
/// mapping keeps writing when the block is reused), and reopened read-only. Shrinking was sealed
/// when the block was made. Empty when the block cannot be reopened (no /proc): the caller then
/// passes `fd` itself, sealed all the same.
FERRY_INTERNAL_API Fd read_only_for_peer(int fd);

}  // namespace ferry::detail
