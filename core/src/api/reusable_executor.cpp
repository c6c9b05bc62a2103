// SPDX-License-Identifier: BSD-3-Clause
// get_reusable_executor: the process-wide executor (policy over the Pool mechanism), as loky's.
#include <ferry/ferry.hpp>

#include <pthread.h>

#include <mutex>
#include <new>
#include <utility>

namespace ferry {

namespace {
std::mutex reusable_mu;
std::shared_ptr<Executor> reusable;

/// In a child of fork(): a thread of the parent may have been inside get_reusable_executor. It
/// is not here to release the lock, and the handle it was changing may be half-written: both
/// start afresh (the parent's handle is dropped without running its destructor). A free lock
/// means nothing was being changed, and the parent's executor, which says it is a fork's copy,
/// is replaced on the next call.
void forget_in_child() noexcept {
  if (reusable_mu.try_lock()) {
    reusable_mu.unlock();
    return;
  }
  new (&reusable_mu) std::mutex;
  new (&reusable) std::shared_ptr<Executor>;
}

/// Registered when libferry is loaded, before get_reusable_executor can be called.
const int fork_handler_registered = ::pthread_atfork(nullptr, nullptr, &forget_in_child);

bool compatible(const ExecutorOptions& a, const ExecutorOptions& b) {
  ExecutorOptions x = a, y = b;
  x.max_workers = y.max_workers = 0;
  return x == y;
}
}  // namespace

std::shared_ptr<Executor> get_reusable_executor(const ExecutorOptions& options) {
  (void)fork_handler_registered;
  std::shared_ptr<Executor> old;  // released after the lock: its destructor waits for its work
  std::lock_guard lock(reusable_mu);
  if (reusable && !reusable->is_shutdown() && !reusable->is_broken() && compatible(reusable->options(), options)) {
    std::size_t want = options.max_workers ? options.max_workers : cpu_count();
    try {
      if (want != reusable->max_workers()) reusable->resize(want);
      return reusable;
    } catch (const BrokenProcessPool&) {
      // A thread holding the executor shut it down since the check above (shutdown takes the
      // pool's lock, not this one): replaced below, as one found shut down is. (A max_workers
      // past the limit still throws std::invalid_argument, as the constructor would.)
    }
  }
  // The replacement exists before the old one stops: threads still holding the old one submit
  // to it from the moment it is linked (loky 3.5), and bad options leave the old one untouched.
  auto fresh = std::make_shared<Executor>(options);
  fresh->make_reusable();
  old = std::exchange(reusable, fresh);
  if (old) old->hand_over(fresh);
  return reusable;
}

}  // namespace ferry
