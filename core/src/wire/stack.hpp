// SPDX-License-Identifier: BSD-3-Clause
// A worker's stack as it travels (a RawStack, platform/symbolize.hpp: raw return addresses plus the
// /proc/self/maps lines of the modules that hold them; the host symbolizes them). Used by
// a failed result (where the task's exception was thrown) and by the crashed frame (where the
// worker took a fatal signal, written from the signal handler without allocating).
//
// Stack, little-endian:  u32 count · count × u64 address · str maps
//   (a crash's stack deeper than max_stack_frames: its innermost addresses, stack_gap and the
//   number of frames left out, then its outermost; platform/symbolize.hpp)
// Crashed frame body:    u32 pid · u32 signal · u64 fault address · stack
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <ferry/detail/export.hpp>

#include "platform/symbolize.hpp"
#include "wire/protocol.hpp"

namespace ferry::detail {

void encode_stack(protocol::BodyWriter& w, const RawStack& s);
/// @throws protocol::ProtocolError on more than max_stack_frames addresses, more than
/// max_stack_maps bytes of maps, or a maps line that is not one (or names no file).
RawStack decode_stack(protocol::BodyReader& r);

/// What a crashed frame says: the worker (or a process forked by its task, which inherits the
/// handler and the channel: the host checks `pid`) took `signal` at `fault_address`.
struct Crashed {
  std::uint32_t pid = 0;
  std::uint32_t signal = 0;
  std::uint64_t fault_address = 0;
  RawStack stack;  // pcs[0] is the interrupted instruction itself, not a return address
};

/// A whole crashed frame into `out` (capacity `cap`) without allocating, for the signal handler.
/// `maps` holds the selected lines (select_modules). Returns the frame's size, 0 if it does not fit.
FERRY_INTERNAL_API std::size_t encode_crashed_into(char* out, std::size_t cap, std::uint32_t pid,
                                                   std::uint32_t signal, std::uint64_t fault_address,
                                                   const std::uint64_t* pcs, std::size_t count,
                                                   const char* maps, std::size_t maps_size) noexcept;
FERRY_INTERNAL_API Buffer encode_crashed(const Crashed& c);
/// @throws protocol::ProtocolError
FERRY_INTERNAL_API Crashed decode_crashed(std::string_view body);

}  // namespace ferry::detail
