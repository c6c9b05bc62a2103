// SPDX-License-Identifier: BSD-3-Clause
// BLAKE2b through libsodium's crypto_generichash.
#include "platform/hash.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>

namespace ferry::detail {

namespace {
constexpr std::size_t key_bytes = 32;

crypto_generichash_state* as_state(unsigned char* p) {
  return reinterpret_cast<crypto_generichash_state*>(p);  // NOLINT: storage sized and aligned for it
}

void require_sodium() {
  // sodium_init is idempotent and thread-safe; it picks the fastest implementation.
  static const int rc = ::sodium_init();
  if (rc < 0) throw std::runtime_error("ferry: libsodium could not be initialised");
}
}  // namespace

static_assert(sizeof(crypto_generichash_state) <= 384, "ContentHasher::state_ is too small");

ContentHasher::ContentHasher() {
  require_sodium();
  ::crypto_generichash_init(as_state(state_), nullptr, 0, key_bytes);
}

ContentHasher& ContentHasher::update(std::string_view bytes) {
  ::crypto_generichash_update(as_state(state_), reinterpret_cast<const unsigned char*>(bytes.data()),
                              bytes.size());
  return *this;
}

ContentHasher& ContentHasher::field(std::string_view bytes) {
  std::uint64_t n = bytes.size();
  update(std::string_view(reinterpret_cast<const char*>(&n), sizeof n));
  return update(bytes);
}

std::string ContentHasher::hex() {
  unsigned char out[key_bytes];
  ::crypto_generichash_final(as_state(state_), out, sizeof out);
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * key_bytes);
  for (unsigned char c : out) {
    s.push_back(digits[c >> 4]);
    s.push_back(digits[c & 15]);
  }
  return s;
}

std::string content_key(std::string_view bytes) { return ContentHasher().update(bytes).hex(); }

std::optional<std::string> file_content_key(const std::filesystem::path& file) {
  // Regular files only, opened without waiting: a FIFO (or a link to one, or to /dev/zero) at a
  // path whose key is asked for would otherwise block the open or the reads for good. An MPI
  // agent hashes whatever is at the host's plugin path on its node.
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return std::nullopt;
  }
  ContentHasher h;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    h.update(std::string_view(buf, static_cast<std::size_t>(n)));
  }
  ::close(fd);
  return h.hex();
}

}  // namespace ferry::detail
