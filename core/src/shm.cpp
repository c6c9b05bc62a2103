// SPDX-License-Identifier: BSD-3-Clause
// Shared-memory blocks for large buffers: memfds mapped in this process, handed to the peer over
// the channel (SCM_RIGHTS), recycled when they come back free, so that large arguments are encoded
// straight into memory the worker maps and their pages are touched once, not once per call.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <ferry/serialization.hpp>

#include "platform/config.hpp"

namespace ferry::detail {

namespace {

constexpr std::size_t page = 4096;
/// Free blocks kept for reuse, at most this many bytes in all.
constexpr std::size_t cache_limit = std::size_t{512} << 20;

std::size_t round_pages(std::size_t n) { return (n + page - 1) / page * page; }

struct Block {
  char* data;
  std::size_t capacity;
  int fd;
};

struct FreeBlocks {
  std::mutex mu;
  std::vector<Block> blocks;
  std::size_t bytes = 0;
};
FreeBlocks& free_blocks() {
  static auto* f = new FreeBlocks();  // outlives static destruction: buffers may die late
  return *f;
}

char* map_fd(int fd, std::size_t capacity) {
  // MAP_POPULATE: one call allocates the pages instead of one fault per 4 KiB page.
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

char* allocate(std::size_t n, std::size_t& capacity, int& fd) {
  {
    auto& f = free_blocks();
    std::lock_guard lock(f.mu);
    // The smallest free block that fits: its pages are already resident.
    auto best = f.blocks.end();
    for (auto it = f.blocks.begin(); it != f.blocks.end(); ++it)
      if (it->capacity >= n && (best == f.blocks.end() || it->capacity < best->capacity)) best = it;
    if (best != f.blocks.end()) {
      Block b = *best;
      f.blocks.erase(best);
      f.bytes -= b.capacity;
      capacity = b.capacity;
      fd = b.fd;
      return b.data;
    }
  }
  std::size_t cap = round_pages(n);
  int memfd = ::memfd_create("ferry-buffer", MFD_CLOEXEC);
  if (memfd < 0) return nullptr;
  if (::ftruncate(memfd, static_cast<off_t>(cap)) != 0) {
    ::close(memfd);
    return nullptr;
  }
  char* data = map_fd(memfd, cap);
  if (!data) {
    ::close(memfd);
    return nullptr;
  }
  capacity = cap;
  fd = memfd;
  return data;
}

char* grow(char* data, std::size_t old_capacity, std::size_t n, std::size_t& capacity, int fd) {
  std::size_t cap = round_pages(n);
  if (::ftruncate(fd, static_cast<off_t>(cap)) != 0) throw std::bad_alloc();
  void* p = ::mremap(data, old_capacity, cap, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_POPULATE_WRITE
  ::madvise(static_cast<char*>(p) + old_capacity, cap - old_capacity, MADV_POPULATE_WRITE);
#endif
  capacity = cap;
  return static_cast<char*>(p);
}

void release(char* data, std::size_t capacity, int fd, bool given_away) {
  if (!given_away) {
    auto& f = free_blocks();
    std::lock_guard lock(f.mu);
    if (f.bytes + capacity <= cache_limit) {
      f.blocks.push_back({data, capacity, fd});
      f.bytes += capacity;
      return;
    }
  }
  ::munmap(data, capacity);
  ::close(fd);
}

/// FERRY_SHM_THRESHOLD through the one table of FERRY_* variables (platform/config): a malformed
/// value is refused when an executor is made; here it keeps the default.
std::size_t threshold_from_env() {
  return static_cast<std::size_t>(Config::read().shm_threshold);
}

// Read when libferry loads (before any thread of ours exists).
const BlockAllocator allocator{threshold_from_env(), &allocate, &grow, &release};

}  // namespace

const BlockAllocator* large_block_allocator() noexcept { return &allocator; }

void unmap_shared(char* data, std::size_t capacity, int fd) noexcept {
  if (data) ::munmap(data, capacity);
  if (fd >= 0) ::close(fd);
}

}  // namespace ferry::detail

namespace ferry::detail {

Buffer Buffer::map_shared(int fd, std::size_t size) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < size) {
    ::close(fd);
    throw std::runtime_error("shared payload is smaller than announced");
  }
  Buffer b;
  b.fd_ = fd;
  b.kind_ = Kind::mapped;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      b.fd_ = -1;
      b.kind_ = Kind::heap;
      throw std::runtime_error("cannot map a shared payload");
    }
    b.data_ = static_cast<char*>(p);
  }
  b.size_ = b.capacity_ = size;
  return b;
}

}  // namespace ferry::detail
