// SPDX-License-Identifier: BSD-3-Clause
// Every process now, as /proc shows it: for tests and for the test programs beside them (no
// test settings needed, unlike fixture.hpp).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace support {

/// A process as /proc/PID/stat shows it: its parent and its state letter.
struct ProcessEntry {
  pid_t parent = 0;
  char state = 0;
};

/// Every process now, by pid.
inline std::map<pid_t, ProcessEntry> processes() {
  std::map<pid_t, ProcessEntry> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    ProcessEntry p;
    long ppid = 0;
    rest >> p.state >> ppid;
    p.parent = static_cast<pid_t>(ppid);
    out[static_cast<pid_t>(pid)] = p;
  }
  ::closedir(d);
  return out;
}

}  // namespace support
