// SPDX-License-Identifier: BSD-3-Clause
// Shared-memory blocks for large buffers: memfds mapped in this process, handed to the peer over
// the channel (SCM_RIGHTS), recycled when they come back free, so that large arguments are encoded
// straight into memory the worker maps and their pages are touched once, not once per call.
#include <fcntl.h>
#include <pthread.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <ferry/detail/buffer.hpp>

#include "platform/config.hpp"
#include "wire/shm.hpp"

namespace ferry::detail {

namespace {

constexpr std::size_t page = 4096;
/// Free blocks kept for reuse, at most this many bytes in all, and this many blocks: each holds a
/// descriptor (a burst of 400 concurrent calls of 1 MiB left 90 of them open for good).
constexpr std::size_t cache_limit = std::size_t{512} << 20;
constexpr std::size_t cache_blocks = 64;

std::size_t round_pages(std::size_t n) { return (n + page - 1) / page * page; }

/// Blocks of at least this many bytes are made whatever descriptor_scarce says: on the heap they
/// would not fit a frame (half of FERRY_MAX_FRAME_BYTES; set when libferry loads, below, and
/// lowered by each pool made with a smaller limit: note_frame_limit).
std::atomic<std::size_t> shared_only_bytes{std::size_t{512} << 20};

/// Whether descriptor `fd` lies in the last quarter of RLIMIT_NOFILE (at least 64 numbers): it is
/// the lowest free one when just made, so fewer than that are left. Every block holds one
/// descriptor while its call waits, and a program that queued more large calls than its limit
/// had room for took them all: each large result then came back to a host that could not receive
/// it. A memfd there is not made for a buffer that fits a frame (it stays on the heap and goes
/// through the socket), nor is a block there kept for reuse.
bool descriptor_scarce(int fd) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return false;
  const rlim_t reserve = std::max<rlim_t>(64, limit.rlim_cur / 4);
  return static_cast<rlim_t>(fd) + reserve >= limit.rlim_cur;
}

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
/// The blocks kept for reuse. Constant-initialized, so no guard of a function-local static (a
/// child forked while a thread of the parent was inside its first initialisation waited on that
/// guard for good), and never destroyed: buffers may die after the statics' destructors ran.
union KeptBlocks {
  FreeBlocks cache;
  constexpr KeptBlocks() : cache() {}
  ~KeptBlocks() {}
};
constinit KeptBlocks kept_blocks;
FreeBlocks& free_blocks() { return kept_blocks.cache; }

/// In a child of fork(): the blocks kept for reuse are shared mappings of the parent's memfds,
/// so a buffer of the child and the parent's next buffer took the same block, one memory, each
/// writing over the other's arguments (a child may make an executor of its own). The child
/// drops them: unmapped and closed when the cache's lock is free; when a thread of the parent
/// held it at the fork (the list may be half-changed), left mapped, the cache made anew in
/// place (no other thread is left in the child to hold or read it; nothing is allocated).
void forget_blocks_in_child() noexcept {
  FreeBlocks& f = free_blocks();
  if (!f.mu.try_lock()) {
    new (&kept_blocks.cache) FreeBlocks();  // the old list's memory is left, as its blocks
    return;
  }
  for (const Block& b : f.blocks) {
    ::munmap(b.data, b.capacity);
    ::close(b.fd);
  }
  f.blocks.clear();
  f.bytes = 0;
  f.mu.unlock();
}
/// Registered when libferry is loaded, before any block is made.
const int fork_handler_registered = ::pthread_atfork(nullptr, nullptr, &forget_blocks_in_child);

// No MAP_POPULATE (issue 10): populating a 2.2 GB block had the kernel zero all of it (and the
// 29 % more that geometric growth reserved) before the encoder overwrote it, and on these VMs a
// fresh page costs far more than the copy into it (bench/analysis.md). Pages now come into being
// when written: by write_at, by populate for what a Buffer is about to memcpy, or by a fault.
// Capacity never written costs nothing.
char* map_fd(int fd, std::size_t capacity) {
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

/// Blocks smaller than this stay on the heap (set_shared_block_floor): allocate says so with
/// nullptr, and Buffer grows on the heap instead.
std::atomic<std::size_t> shared_floor{0};

/// Why this thread's last block could not be made: the call that failed and its errno, or a
/// null step when it was made (why_no_shared_block).
thread_local const char* refused_step = nullptr;
thread_local int refused_errno = 0;

char* refused(const char* step, int error, int memfd = -1) {
  refused_step = step;
  refused_errno = error;
  if (memfd >= 0) ::close(memfd);
  return nullptr;
}

char* allocate(std::size_t n, std::size_t& capacity, int& fd) {
  refused_step = nullptr;
  if (n < shared_floor.load(std::memory_order_relaxed)) return refused("under this process's floor for shared blocks", 0);
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
  int memfd = ::memfd_create("ferry-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) return refused("memfd_create", errno);
  // Never shrunk, by anyone: a task that truncated the block it was given (or found through
  // /proc/<host>/fd) made the host's next memcpy into it (reused, or still mapped) a SIGBUS.
  // The host only ever grows a block; the seal costs one call per block made, none per use.
  // Sealed before it is given its size: sized first, a task that opened it through /proc in
  // between could still cut it, and the first write through the mapping made next was a SIGBUS.
  // One that grows it meanwhile makes the ftruncate below a shrink, refused: the heap it is.
  if (cap < shared_only_bytes.load(std::memory_order_relaxed) && descriptor_scarce(memfd))
    return refused("descriptors (a quarter of RLIMIT_NOFILE is kept free for results)", EMFILE, memfd);
  if (::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) return refused("sealing it", errno, memfd);
  if (::ftruncate(memfd, static_cast<off_t>(cap)) != 0) return refused("ftruncate", errno, memfd);
  char* data = map_fd(memfd, cap);
  if (!data) return refused("mmap", errno, memfd);
  capacity = cap;
  fd = memfd;
  return data;
}

char* grow(char* data, std::size_t old_capacity, std::size_t n, std::size_t& capacity, int fd) {
  std::size_t cap = round_pages(n);
  if (::ftruncate(fd, static_cast<off_t>(cap)) != 0) {
    // A worker may have grown a block it was given (through a reopened descriptor): larger
    // already is as good, since shrinking it back is sealed.
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < cap) throw std::bad_alloc();
  }
  void* p = ::mremap(data, old_capacity, cap, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) throw std::bad_alloc();
  capacity = cap;
  return static_cast<char*>(p);
}

void populate(char* data, std::size_t from, std::size_t to) {
#ifdef MADV_POPULATE_WRITE
  std::size_t first = from / page * page;
  if (to > first) ::madvise(data + first, round_pages(to) - first, MADV_POPULATE_WRITE);
#else
  (void)data, (void)from, (void)to;  // the stores fault the pages in
#endif
}

bool resident(char* data, std::size_t offset) {
  unsigned char v = 0;
  return ::mincore(data + offset / page * page, page, &v) == 0 && (v & 1);
}

// A block that can be recycled (it fits the cache) is filled through its mapping, as before: its
// page tables then stay set up, and every later use is a plain memcpy (about twice as fast as a
// pwrite into existing pages). A larger one is never reused: write(2) allocates its fresh pages
// and fills them in one pass (shmem does not zero a page a write covers), sets up no page tables
// here, and so its munmap is cheap too. Measured on this VM, 1 GB into a fresh memfd:
// MAP_POPULATE + memcpy 1.4 s of CPU, pwrite 0.65 s.
void write_at(char* data, std::size_t capacity, int fd, std::size_t at, const void* bytes,
              std::size_t n) {
  if (capacity <= cache_limit) {
    // Fresh pages (the first whole page of the range is not in memory yet): one populate call
    // rather than a fault per page. A recycled block's pages are there, and mapped.
    std::size_t probe = round_pages(at);
    if (probe < at + n && !resident(data, probe)) populate(data, at, at + n);
    std::memcpy(data + at, bytes, n);
    return;
  }
  const char* p = static_cast<const char*>(bytes);
  while (n > 0) {
    // One call moves at most ~2 GiB (MAX_RW_COUNT); ask for 1 GiB at a time.
    ssize_t w = ::pwrite(fd, p, std::min(n, std::size_t{1} << 30), static_cast<off_t>(at));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EPERM) {
      // A recycled block that was handed to a worker is sealed against write(2)
      // (read_only_for_peer), then grew past the recycle limit: through the mapping it is.
      populate(data, at, at + n);
      std::memcpy(data + at, p, n);
      return;
    }
    if (w <= 0) throw std::bad_alloc();  // ENOMEM/ENOSPC: the offset is within the block
    p += w;
    at += static_cast<std::size_t>(w);
    n -= static_cast<std::size_t>(w);
  }
}

void release(char* data, std::size_t capacity, int fd, bool given_away) {
  if (!given_away) {
    auto& f = free_blocks();
    std::lock_guard lock(f.mu);
    if (f.bytes + capacity <= cache_limit && f.blocks.size() < cache_blocks && !descriptor_scarce(fd)) {
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
  const Config config = Config::read();
  shared_only_bytes.store(static_cast<std::size_t>(config.max_frame_bytes / 2), std::memory_order_relaxed);
  return static_cast<std::size_t>(config.shm_threshold);
}

// Read when libferry loads (before any thread of ours exists).
const BlockAllocator allocator{threshold_from_env(), &allocate, &grow, &release, &populate, &write_at};

}  // namespace

const BlockAllocator* large_block_allocator() noexcept { return &allocator; }

void drop_kept_blocks() noexcept {
  std::vector<Block> blocks;
  {
    FreeBlocks& f = free_blocks();
    std::lock_guard lock(f.mu);
    blocks.swap(f.blocks);
    f.bytes = 0;
  }
  for (const Block& b : blocks) {  // outside the lock: unmapping a large block takes a while
    ::munmap(b.data, b.capacity);
    ::close(b.fd);
  }
}

void note_frame_limit(std::uint64_t max_frame_bytes) noexcept {
  const auto half = static_cast<std::size_t>(std::min<std::uint64_t>(max_frame_bytes / 2, SIZE_MAX));
  std::size_t now = shared_only_bytes.load(std::memory_order_relaxed);
  while (half < now && !shared_only_bytes.compare_exchange_weak(now, half, std::memory_order_relaxed)) {
  }
}

std::string why_no_shared_block() {
  if (!refused_step) return "no reason known";
  if (refused_errno == 0) return refused_step;
  return std::string(refused_step) + ": " + std::strerror(refused_errno);
}

void set_shared_block_floor(std::size_t bytes) noexcept { shared_floor.store(bytes, std::memory_order_relaxed); }

void seal_for_peer(int fd) noexcept {
  (void)::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE);
}

Fd read_only_for_peer(int fd) {
  // Idempotent: a recycled block was sealed the first time it was sent. Two calls per shared
  // argument (at least FERRY_SHM_THRESHOLD bytes), none for arguments sent inline.
  (void)::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
  char path[40];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return Fd(::open(path, O_RDONLY | O_CLOEXEC));
}

Fd arguments_for_sandboxed_peer(int fd, char* data, std::size_t size, std::size_t capacity, bool& copied) {
  copied = false;
  struct stat st {};
  const auto end = ::fstat(fd, &st) == 0 ? static_cast<std::size_t>(st.st_size) : size;
  // Punching zeroes the partial page after the arguments too (shmem).
  if (end <= size || ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(size),
                                 static_cast<off_t>(end - size)) == 0)
    return read_only_for_peer(fd);
  // Sealed against writes (F_SEAL_FUTURE_WRITE) when an earlier call sent it: a copy.
  if (Fd copy(::memfd_create("ferry-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      copy && ::ftruncate(copy.get(), static_cast<off_t>(size)) == 0) {
    bool written = true;
    for (std::size_t at = 0; written && at < size;) {
      const ssize_t w = ::pwrite(copy.get(), data + at, std::min(size - at, std::size_t{1} << 30), static_cast<off_t>(at));
      if (w > 0) at += static_cast<std::size_t>(w);
      else written = w < 0 && errno == EINTR;
    }
    // No mapping of it exists: every write can be sealed, and the descriptor itself may travel.
    if (written && ::fcntl(copy.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) {
      copied = true;
      return copy;
    }
  }
  // Out of memory for a copy: zeros written through our own mapping, which the seal leaves
  // writable, as far as it goes (past it, only what a worker that grew the block put there).
  std::memset(data + size, 0, std::min(end, capacity) - size);
  return read_only_for_peer(fd);
}

void unmap_shared(char* data, std::size_t capacity, int fd) noexcept {
  if (data) ::munmap(data, capacity);
  if (fd >= 0) ::close(fd);
}

}  // namespace ferry::detail

namespace ferry::detail {

std::string shared_payload_problem(int fd, std::uint64_t size) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return "shared payload is not a memfd";
  if (!(seals & F_SEAL_SHRINK)) return "shared payload is not sealed against shrinking";
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0 || fs.f_type == HUGETLBFS_MAGIC)
    return "shared payload in huge pages (a hole punched in it would be a SIGBUS under its mappings)";
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < size)
    return "shared payload is smaller than announced";
  // A peer that frees pages after this check (punching holes) makes the reader pay for at most
  // what the peer paid for a moment before.
  if (static_cast<std::uint64_t>(st.st_blocks) < (size + 511) / 512)
    return "shared payload of " + std::to_string(size) + " bytes with only " +
           std::to_string(static_cast<std::uint64_t>(st.st_blocks) * 512) + " bytes of memory behind it";
  return {};
}

/// Shared payloads smaller than this are copied out of their memfd, larger ones mapped.
constexpr std::size_t copied_below = std::size_t{1} << 20;

Buffer Buffer::map_shared(int fd, std::size_t size) {
  Fd owned(fd);
  // Nothing travels in shared memory below FERRY_SHM_THRESHOLD (at least 1 byte).
  if (size == 0) throw std::runtime_error("shared payload of 0 bytes");
  if (std::string why = shared_payload_problem(fd, size); !why.empty()) throw std::runtime_error(why);
  if (size < copied_below) {
    // Copied, not mapped: each mapping is an area of its own, kept as long as its result. With
    // FERRY_SHM_THRESHOLD set low, a host holding 65,530 results (vm.max_map_count) could map
    // no more of them, and its own large mallocs and thread stacks failed too. A copy of less
    // than 1 MiB costs about what mapping, populating and unmapping it does.
    Buffer b;
    try {
      b.data_ = new char[size];
    } catch (const std::bad_alloc&) {
      throw std::system_error(ENOMEM, std::generic_category(), "cannot copy a shared payload");
    }
    b.size_ = b.capacity_ = size;
    for (std::size_t at = 0; at < size;) {
      const ssize_t r = ::pread(fd, b.data_ + at, size - at, static_cast<off_t>(at));
      if (r > 0) at += static_cast<std::size_t>(r);
      else if (r == 0 || errno != EINTR) throw std::runtime_error("shared payload cannot be read");
    }
    return b;
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "cannot map a shared payload");
  // The mapping keeps the block: the descriptor goes now (a host holding 3000 large results
  // held 3000 descriptors, and reached its limit).
  Buffer b;
  b.kind_ = Kind::mapped;
  b.data_ = static_cast<char*>(p);
  b.size_ = b.capacity_ = size;
  return b;
}

}  // namespace ferry::detail
