// SPDX-License-Identifier: BSD-3-Clause
// What is done to a shared-memory block before a peer gets it (shm.cpp): a worker runs task code,
// which can reach every descriptor of its process (and, as the same user, the host's through
// /proc/<pid>/fd), so a block must not be one it can shrink under the host's mapping or write.
#pragma once

#include <cstdint>
#include <string>

#include <ferry/detail/export.hpp>

#include "platform/fd.hpp"

// Not exported but shared_payload_problem (libferry-mpi's agent and hub map payloads too).
namespace ferry::detail {

/// Why a peer's block of `size` bytes must not be mapped, or "" when it may: it must be a memfd
/// (any other file, a FUSE one too, could end under the mapping at will) sealed against
/// shrinking (a block shrunk under a mapping makes the next access a SIGBUS), of at least `size`
/// bytes, with as much memory behind it (a sparse memfd of a terabyte costs its maker nothing,
/// and reading it through a mapping fills it with pages on the reader's account), and not in
/// huge pages (a hole punched in one takes the page from under every mapping, seals or not:
/// SIGBUS once the system's huge pages run out).
FERRY_INTERNAL_API std::string shared_payload_problem(int fd, std::uint64_t size);

/// The descriptor a worker gets for a block of ours (arguments): the block is sealed against
/// writes through any descriptor and against new writable mappings (F_SEAL_FUTURE_WRITE; our own
/// mapping keeps writing when the block is reused), and reopened read-only. Shrinking was sealed
/// when the block was made. Empty when the block cannot be reopened (no /proc): the caller then
/// passes `fd` itself, sealed all the same.
Fd read_only_for_peer(int fd);

/// The descriptor a sandboxed worker gets for arguments in our block `fd` (`size` bytes, mapped
/// here at `data` for `capacity` bytes). Its task may map past the arguments (mremap) and keep its mapping after the
/// call, so it must find nothing of another call there, then or later: what lies beyond the
/// arguments (an earlier use's bytes, when the block was recycled) is punched out, and the caller
/// gives the block away (never recycled). A block sealed by an earlier send cannot be punched: a
/// block of the arguments alone is made instead, sealed against every write, and `copied` says
/// so (the caller's block, which no worker saw, may then be recycled); with no memory for a copy,
/// zeros are written through our mapping (the seal leaves it writable). Empty when the block
/// cannot be reopened read-only (the caller then passes `fd` itself, sealed all the same).
Fd arguments_for_sandboxed_peer(int fd, char* data, std::size_t size, std::size_t capacity, bool& copied);

/// Seals a block given away for good (a worker's result) against shrinking, growing and any
/// write but through the mappings it has now (F_SEAL_FUTURE_WRITE: sealing F_SEAL_WRITE would
/// first need the mapping gone, and its munmap would delay the result). Buffer::map_shared, which
/// maps a peer's block, refuses one that is not a memfd sealed against shrinking.
void seal_for_peer(int fd) noexcept;

/// Unmaps and closes the blocks kept for reuse: the process's last executor has ended (each
/// holds a descriptor and its memory until then).
void drop_kept_blocks() noexcept;

/// Why the last shared block this thread asked for could not be made ("memfd_create: Operation
/// not permitted"), or "no reason known" when it was. A buffer that gets none stays on the heap and goes through
/// the socket, which carries no more than a frame (FERRY_MAX_FRAME_BYTES): a sender checks that
/// before sending, so that the call fails with this reason, not its peer with a malformed frame.
std::string why_no_shared_block();

/// A pool's frame limit (FERRY_MAX_FRAME_BYTES as read when it was made, which may be later than
/// libferry's loading): buffers of half of it or more get shared memory even when descriptors
/// are scarce, as on the heap they could not be sent. The smallest limit noted holds.
void note_frame_limit(std::uint64_t max_frame_bytes) noexcept;

/// Buffers smaller than `bytes` stay on the heap, however large (0: only FERRY_SHM_THRESHOLD
/// decides). A worker with a memory cgroup sets it to about a frame's size: a result in a memfd
/// stays charged to that cgroup while the host holds it, and one that fits no frame still needs
/// shared memory to travel at all.
void set_shared_block_floor(std::size_t bytes) noexcept;

}  // namespace ferry::detail
