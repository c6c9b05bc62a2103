// SPDX-License-Identifier: BSD-3-Clause
// Descriptors in flight for tests of ETOOMANYREFS: the kernel counts, per user, the descriptors
// sent on UNIX sockets and not yet received, and refuses a process whose soft RLIMIT_NOFILE that
// count passes any descriptor it sends (unless it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN).
#pragma once

#include <sys/socket.h>

#include <algorithm>

namespace support {

/// Sends `count` copies of a descriptor into a UNIX socket pair nobody reads, which stays open
/// for the process's life: they stay in flight, on this user's account. False on a failure.
inline bool hold_descriptors_in_flight(int count) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
  constexpr int per_message = 100;  // below SCM_MAX_FD (253)
  while (count > 0) {
    const int n = std::min(count, per_message);
    char byte = 'x';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * per_message)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<unsigned>(n));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<unsigned>(n));
    int* fds = reinterpret_cast<int*>(CMSG_DATA(c));
    for (int i = 0; i < n; ++i) fds[i] = pair[0];
    if (::sendmsg(pair[1], &msg, 0) != 1) return false;
    count -= n;
  }
  return true;  // the pair is never closed
}

}  // namespace support
