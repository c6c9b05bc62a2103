// SPDX-License-Identifier: BSD-3-Clause
// cpu_count: hardware threads ∩ affinity ∩ cgroup quota ∩ $FERRY_MAX_CPU_COUNT (as loky's).
#include <ferry/system.hpp>

#include "platform/config.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace ferry {

namespace fs = std::filesystem;

namespace detail {

namespace {
/// ceil(quota / period), 0 when unlimited or unreadable.
unsigned quota_to_cpus(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<unsigned>((quota + period - 1) / period);
}

unsigned v2_limit(const fs::path& file) {
  std::ifstream in(file);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max") return 0;
  try {
    std::size_t used = 0;
    long long q = std::stoll(quota, &used);
    if (used != quota.size()) return 0;  // "15x0000" is malformed, not a quota of 15
    return quota_to_cpus(q, period);
  } catch (...) {
    return 0;  // malformed (loky #478): no limit from this file
  }
}

long long read_number(const fs::path& file) {
  std::ifstream in(file);
  long long v = 0;
  if (!(in >> v)) return -1;
  return v;
}
}  // namespace

unsigned cgroup_cpu_limit(const fs::path& root, const fs::path& proc_self_cgroup) {
  unsigned best = 0;
  auto take = [&](unsigned v) {
    if (v > 0 && (best == 0 || v < best)) best = v;
  };
  std::ifstream cg(proc_self_cgroup);
  std::string line;
  while (std::getline(cg, line)) {
    // "0::/path" is cgroup v2; "N:cpu,cpuacct:/path" is v1.
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1);
    fs::path rel = fs::path(line.substr(b + 1)).relative_path();
    if (controllers.empty()) {
      // Every ancestor's cpu.max limits us: take the smallest along the path.
      fs::path dir = root;
      take(v2_limit(dir / "cpu.max"));
      for (const auto& part : rel) {
        dir /= part;
        take(v2_limit(dir / "cpu.max"));
      }
    } else if (("," + controllers + ",").find(",cpu,") != std::string::npos) {
      for (const char* mount : {"cpu,cpuacct", "cpu", "cpuacct,cpu"}) {
        fs::path dir = root / mount / rel;
        long long quota = read_number(dir / "cpu.cfs_quota_us");
        long long period = read_number(dir / "cpu.cfs_period_us");
        if (quota == -1 && period == -1) {
          dir = root / mount;  // inside a container the hierarchy root is ours
          quota = read_number(dir / "cpu.cfs_quota_us");
          period = read_number(dir / "cpu.cfs_period_us");
        }
        take(quota_to_cpus(quota, period));
      }
    }
  }
  return best;
}

}  // namespace detail

unsigned cpu_count() {
  unsigned n = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0) n = std::min(n, static_cast<unsigned>(c));
  }
  if (unsigned q = detail::cgroup_cpu_limit("/sys/fs/cgroup", "/proc/self/cgroup"); q > 0)
    n = std::min(n, q);
  // A malformed value is ignored here and refused where an executor is made (platform/config).
  if (unsigned m = detail::Config::read().max_cpu_count; m > 0) n = std::min(n, m);
  return std::max(1u, n);
}

}  // namespace ferry
