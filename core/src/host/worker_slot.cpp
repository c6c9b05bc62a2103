// SPDX-License-Identifier: BSD-3-Clause
#include "host/worker_slot.hpp"

#include <string>

namespace ferry::detail {

std::string WorkerSlot::describe(const Launcher& launcher) const {
  std::string s = launcher.program();
  if (pid > 0) s += " (pid " + std::to_string(pid) + ")";
  return s;
}

ChannelLease ChannelLease::after_event(WorkerSlot& w, Poller& poller) {
  ChannelLease lease(w, poller, true);
  lease.lock_ = std::unique_lock(w.read_mu, std::try_to_lock);
  return lease;
}

ChannelLease ChannelLease::for_waiter(WorkerSlot& w, Poller& poller) {
  ChannelLease lease(w, poller, true);
  lease.lock_ = std::unique_lock(w.read_mu, std::try_to_lock);
  if (lease.lock_) lease.disarm();
  return lease;
}

ChannelLease ChannelLease::after_death(WorkerSlot& w, Poller& poller) {
  ChannelLease lease(w, poller, false);
  lease.lock_ = std::unique_lock(w.read_mu);
  return lease;
}

void ChannelLease::disarm() {
  if (w_->sock) poller_->arm(w_->sock.get(), w_->serial, Poller::Tag::read, false);
}

void ChannelLease::release() {
  if (!lock_.owns_lock()) return;
  lock_.unlock();
  if (rearm_ && w_->sock) poller_->arm(w_->sock.get(), w_->serial, Poller::Tag::read, true);
}

bool ChannelLease::retake() {
  if (lock_.owns_lock()) return true;
  if (!lock_.try_lock()) return false;
  disarm();
  return true;
}

}  // namespace ferry::detail
