// SPDX-License-Identifier: BSD-3-Clause
// Content keys that guard what ferry loads: BLAKE2b (libsodium), never a non-cryptographic hash.
//
// A key names a cache entry (FERRY_WRAP plugins, the precompiled prelude) or a shipped library
// (the MPI backend), and is checked again against the bytes before they are loaded: a collision
// would let one content pass for another, so the function must resist a chosen collision.
// (Task signature fingerprints stay FNV-1a: they catch mistakes, not attackers.)
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// 256-bit BLAKE2b of data as it is fed in, written as 64 lowercase hex digits.
class ContentHasher {
 public:
  ContentHasher();
  ContentHasher& update(std::string_view bytes);
  /// A length-prefixed field: "ab","c" and "a","bc" hash differently.
  ContentHasher& field(std::string_view bytes);
  std::string hex();  ///< finishes: call once

 private:
  alignas(64) unsigned char state_[384];  // crypto_generichash_state, kept opaque here
};

/// The hex key of `bytes`.
std::string content_key(std::string_view bytes);
/// The hex key of a file's bytes, nullopt when it cannot be read or is not a regular file (a FIFO
/// or a device is never read: it could block, or never end).
FERRY_INTERNAL_API std::optional<std::string> file_content_key(const std::filesystem::path& file);

}  // namespace ferry::detail
