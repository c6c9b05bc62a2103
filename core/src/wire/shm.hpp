// SPDX-License-Identifier: BSD-3-Clause
// What is done to a shared-memory block before a peer gets it (shm.cpp): a worker runs task code,
// which can reach every descriptor of its process (and, as the same user, the host's through
// /proc/<pid>/fd), so a block must not be one it can shrink under the host's mapping or write.
#pragma once

#include "platform/fd.hpp"

// Not exported: libferry's pool and worker loop are the only callers.
namespace ferry::detail {

/// The descriptor a worker gets for a block of ours (arguments): the block is sealed against
/// writes through any descriptor and against new writable mappings (F_SEAL_FUTURE_WRITE; our own
/// mapping keeps writing when the block is reused), and reopened read-only. Shrinking was sealed
/// when the block was made. Empty when the block cannot be reopened (no /proc): the caller then
/// passes `fd` itself, sealed all the same.
Fd read_only_for_peer(int fd);

/// Seals a block given away for good (a worker's result) against shrinking, growing and any
/// write but through the mappings it has now (F_SEAL_FUTURE_WRITE: sealing F_SEAL_WRITE would
/// first need the mapping gone, and its munmap would delay the result). Buffer::map_shared, which
/// maps a peer's block, refuses one that is not a memfd sealed against shrinking.
void seal_for_peer(int fd) noexcept;

}  // namespace ferry::detail
