// SPDX-License-Identifier: BSD-3-Clause
// Facts about the machine that size a pool.
#pragma once

#include <filesystem>

#include <ferry/detail/export.hpp>

namespace ferry {

/**
@brief CPUs this process may really use: the minimum of the hardware threads, the affinity mask
(sched_getaffinity), the cgroup CPU quota (v2 cpu.max along the process's cgroup path, or v1 CFS
quota/period, rounded up) and $FERRY_MAX_CPU_COUNT; at least 1. Thread-safe.
*/
FERRY_API unsigned cpu_count();

namespace detail {
/// cpu_count's quota part, reading cgroup files under `root` (tests point it at a fake tree);
/// 0 when there is no quota.
FERRY_INTERNAL_API unsigned cgroup_cpu_limit(const std::filesystem::path& root,
                                             const std::filesystem::path& proc_self_cgroup);
}  // namespace detail

}  // namespace ferry
