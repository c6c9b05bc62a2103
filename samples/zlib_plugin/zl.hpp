// SPDX-License-Identifier: BSD-3-Clause
// The zl plugin: zlib's crc32 and compress/uncompress as ferry tasks, declared in namespace zl.
#pragma once

#include <cstdint>
#include <string>

#include <ferry/task.hpp>

namespace zl {

/// Bytes compressed by zlib, with the size they had: uncompress() needs it.
struct Packed {
  std::uint64_t size = 0;
  std::string bytes;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(size, bytes);
  }
};

/// zlib's CRC-32 of the bytes. Task "zl::crc32": FERRY_TASK keeps the namespace in the name.
FERRY_EXPORT std::uint32_t crc32(ferry::BytesView data);
/// Compresses at `level` (0-9); throws std::runtime_error when zlib refuses.
FERRY_EXPORT Packed compress(const std::string& data, int level);
/// The bytes compress() was given; throws std::runtime_error for damaged input.
FERRY_EXPORT std::string uncompress(const Packed& packed);

}  // namespace zl
