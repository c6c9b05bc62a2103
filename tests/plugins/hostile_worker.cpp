// SPDX-License-Identifier: BSD-3-Clause
// Tasks that turn on the host from inside its worker (see hostile_worker.hpp).
#include "hostile_worker.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace {

/// Shrinks and writes one block through `fd`; counts what worked.
std::uint64_t attack(int fd) {
  std::uint64_t won = 0;
  char byte = 0x5a;
  if (::pwrite(fd, &byte, 1, 0) == 1) ++won;
  if (::ftruncate(fd, 0) == 0) ++won;
  return won;
}

/// Attacks every shared-memory block in `dir` (a /proc/<pid>/fd): adds the blocks it found to
/// `found`, and returns how many attempts worked.
std::uint64_t attack_all_in(const std::string& dir, std::uint64_t& found) {
  std::uint64_t won = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = dir + "/" + e->d_name;
    char link[256] = {};
    if (::readlink(path.c_str(), link, sizeof link - 1) <= 0 || !std::strstr(link, "memfd:ferry-buffer"))
      continue;
    ++found;
    if (dir == "/proc/self/fd") won += attack(std::atoi(e->d_name));
    int rw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (rw >= 0) {
      won += attack(rw);
      ::close(rw);
    }
  }
  ::closedir(d);
  return won;
}

}  // namespace

std::uint64_t attack_argument_memfds(std::vector<char> data) {
  (void)data;  // large enough to travel in shared memory: that is the block attacked
  std::uint64_t found = 0;
  std::uint64_t won = attack_all_in("/proc/self/fd", found);
  won += attack_all_in("/proc/" + std::to_string(::getppid()) + "/fd", found);
  return found << 32 | won;
}

FERRY_TASK(attack_argument_memfds);
