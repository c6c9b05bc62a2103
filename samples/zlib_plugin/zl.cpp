// SPDX-License-Identifier: BSD-3-Clause
// The zl plugin: what a plugin that links a third-party library looks like (LINK_LIBRARIES).
#include "zl.hpp"

#include <zlib.h>

#include <algorithm>
#include <stdexcept>

namespace zl {

namespace {
// zlib counts in uLong (64-bit here) but crc32 takes uInt: feed it in pieces.
constexpr std::size_t piece = 1u << 30;
}  // namespace

// Inside namespace zl, crc32, compress and uncompress are ours: zlib's are called as ::name.
std::uint32_t crc32(ferry::BytesView data) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  for (std::size_t at = 0; at < data.size(); at += piece) {
    auto n = static_cast<uInt>(std::min(piece, data.size() - at));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(data.data() + at), n);
  }
  return static_cast<std::uint32_t>(crc);
}

Packed compress(const std::string& data, int level) {
  Packed p{data.size(), std::string(::compressBound(data.size()), '\0')};
  uLongf size = p.bytes.size();
  int rc = ::compress2(reinterpret_cast<Bytef*>(p.bytes.data()), &size,
                       reinterpret_cast<const Bytef*>(data.data()), data.size(), level);
  if (rc != Z_OK) throw std::runtime_error(std::string("zlib compress2: ") + ::zError(rc));
  p.bytes.resize(size);
  return p;
}

std::string uncompress(const Packed& packed) {
  std::string out(packed.size, '\0');
  uLongf size = out.size();
  int rc = ::uncompress(reinterpret_cast<Bytef*>(out.data()), &size,
                        reinterpret_cast<const Bytef*>(packed.bytes.data()), packed.bytes.size());
  if (rc != Z_OK || size != packed.size)
    throw std::runtime_error(std::string("zlib uncompress: ") +
                             (rc != Z_OK ? ::zError(rc) : "size differs from the recorded one"));
  return out;
}

}  // namespace zl

FERRY_TASK(zl::crc32);       // task "zl::crc32"; with its plugin, "zl:zl::crc32"
FERRY_TASK(zl::compress);    // "zl::compress"
FERRY_TASK(zl::uncompress);  // "zl::uncompress"
