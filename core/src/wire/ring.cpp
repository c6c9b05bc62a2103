// SPDX-License-Identifier: BSD-3-Clause
#include "wire/ring.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <system_error>
#include <utility>

namespace ferry::detail {

namespace {

// Between processes: not FUTEX_PRIVATE_FLAG.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen, int ms) noexcept {
  timespec t{ms / 1000, static_cast<long>(ms % 1000) * 1000000L};
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen,
                  ms >= 0 ? &t : nullptr, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& word) noexcept {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

}  // namespace

long Ring::write(const char* p, std::size_t n) noexcept {
  const std::uint64_t tail = control_->tail.load(std::memory_order_acquire);
  const std::uint64_t used = mine_ - tail;  // wraps to a huge number if tail is ahead of us
  if (used > capacity_) return -1;
  const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, capacity_ - used));
  const std::size_t at = static_cast<std::size_t>(mine_ % capacity_);
  const std::size_t first = std::min(k, capacity_ - at);
  if (k == 0) return 0;  // no store: the peer's cache line stays where it is
  std::memcpy(data_ + at, p, first);
  std::memcpy(data_, p + first, k - first);
  mine_ += k;
  control_->head.store(mine_, std::memory_order_release);
  return static_cast<long>(k);
}

long Ring::read(char* p, std::size_t n) noexcept {
  const std::uint64_t head = control_->head.load(std::memory_order_acquire);
  const std::uint64_t ready = head - mine_;
  if (ready > capacity_) return -1;
  const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, ready));
  const std::size_t at = static_cast<std::size_t>(mine_ % capacity_);
  const std::size_t first = std::min(k, capacity_ - at);
  if (k == 0) return 0;
  std::memcpy(p, data_ + at, first);
  std::memcpy(p + first, data_, k - first);
  mine_ += k;
  control_->tail.store(mine_, std::memory_order_release);
  return static_cast<long>(k);
}

bool Ring::empty() const noexcept { return control_->head.load(std::memory_order_acquire) == mine_; }

bool Ring::has_room() const noexcept {
  return mine_ - control_->tail.load(std::memory_order_acquire) != capacity_;
}

// The waits and wakes pair up as in a Dekker exchange: the sleeper sets its flag and then looks
// at the index; the other side moves the index and then reads the flag. One of them must see the
// other's write, which a release store followed by a load does not promise (x86 lets the load
// pass the store: both sides saw nothing, and a doorbell was lost until the sleeper's next nap).
// So a full fence stands between each side's store and its load: the sequence word's fetch_add,
// and the fences in *_waits() and set_*_waiting(). The sequence word makes a FUTEX_WAIT that
// comes after the wake return at once.
void Ring::wake_consumer() noexcept {
  control_->data_seq.fetch_add(1);
  if (control_->consumer_waiting.load()) futex_wake(control_->data_seq);
}

void Ring::wake_producer() noexcept {
  control_->space_seq.fetch_add(1);
  if (control_->producer_waiting.load()) futex_wake(control_->space_seq);
}

bool Ring::consumer_waits() const noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // after the index's release store
  return control_->consumer_waiting.load() != 0;
}
bool Ring::producer_waits() const noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return control_->producer_waiting.load() != 0;
}

void Ring::set_consumer_waiting(bool on) noexcept {
  control_->consumer_waiting.store(on ? 1 : 0);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // before the caller looks at the index
}
void Ring::set_producer_waiting(bool on) noexcept {
  control_->producer_waiting.store(on ? 1 : 0);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void Ring::wait_for_data(int ms) noexcept {
  const std::uint32_t seen = control_->data_seq.load();
  control_->consumer_waiting.store(1);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (empty()) futex_wait(control_->data_seq, seen, ms);
  control_->consumer_waiting.store(0);
}

void Ring::wait_for_space(int ms) noexcept {
  const std::uint32_t seen = control_->space_seq.load();
  control_->producer_waiting.store(1);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!has_room()) futex_wait(control_->space_seq, seen, ms);
  control_->producer_waiting.store(0);
}

SharedRings SharedRings::create(std::size_t capacity) {
  SharedRings r;
  r.capacity_ = capacity;
  r.fd_ = Fd(::memfd_create("ferry-rings", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!r.fd_) fail("memfd_create");
  const std::size_t size = map_size(capacity);
  if (::ftruncate(r.fd_.get(), static_cast<off_t>(size)) != 0) fail("ftruncate");
  // The worker gets this descriptor: sealed, it cannot shrink the file under the agent's mapping
  // (a touch past the end would be SIGBUS in the agent).
  if (::fcntl(r.fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("seal");
  r.base_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_.get(), 0);
  if (r.base_ == MAP_FAILED) {
    r.base_ = nullptr;
    fail("mmap");
  }
  return r;
}

SharedRings SharedRings::map(int fd, std::size_t capacity) {
  SharedRings r;
  r.capacity_ = capacity;
  const std::size_t size = map_size(capacity);
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail("fstat");
  if (static_cast<std::size_t>(st.st_size) != size) {
    errno = EINVAL;
    fail("rings of another size");
  }
  r.base_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (r.base_ == MAP_FAILED) {
    r.base_ = nullptr;
    fail("mmap");
  }
  return r;
}

SharedRings::SharedRings(SharedRings&& o) noexcept
    : fd_(std::move(o.fd_)), base_(std::exchange(o.base_, nullptr)), capacity_(o.capacity_) {}

SharedRings& SharedRings::operator=(SharedRings&& o) noexcept {
  if (this != &o) {
    if (base_) ::munmap(base_, map_size(capacity_));
    fd_ = std::move(o.fd_);
    base_ = std::exchange(o.base_, nullptr);
    capacity_ = o.capacity_;
  }
  return *this;
}

SharedRings::~SharedRings() {
  if (base_) ::munmap(base_, map_size(capacity_));
}

Ring SharedRings::to_worker() const noexcept {
  auto* control = static_cast<RingControl*>(base_);
  return Ring(control, reinterpret_cast<char*>(control + 1), capacity_);
}

Ring SharedRings::to_agent() const noexcept {
  auto* control = reinterpret_cast<RingControl*>(static_cast<char*>(base_) + sizeof(RingControl) + capacity_);
  return Ring(control, reinterpret_cast<char*>(control + 1), capacity_);
}

}  // namespace ferry::detail
