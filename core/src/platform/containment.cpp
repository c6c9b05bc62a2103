// SPDX-License-Identifier: BSD-3-Clause
// The containment probe: what this machine offers, tried rather than guessed where trying is
// cheap (a user namespace is created in a throwaway child: sysctls, AppArmor and container
// runtimes all have a say, and only the kernel's answer is the truth).
#include "platform/containment.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "platform/paths.hpp"

namespace ferry::detail {

namespace {

bool user_namespace_works() {
  pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) _exit(::unshare(CLONE_NEWUSER) == 0 ? 0 : 1);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool seccomp_filters() {
  // PR_GET_SECCOMP fails with EINVAL without CONFIG_SECCOMP; actions_avail lists what filters can
  // return, and "trap" is the one the sandbox needs (it names the denied call).
  if (::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0) return false;
  std::ifstream in("/proc/sys/kernel/seccomp/actions_avail");
  std::string actions;
  if (!std::getline(in, actions)) return true;  // older kernels: no list, filters since 3.5
  return actions.find("trap") != std::string::npos;
}

bool file_has_word(const char* path, std::string_view word) {
  std::ifstream in(path);
  std::string w;
  while (in >> w)
    if (w == word) return true;
  return false;
}

bool pids_cgroup_writable(bool root) {
  // v2 delegation to a user is possible, but ferry does not use it.
  return root && !pids_cgroup_parent().empty();
}

}  // namespace

int landlock_abi() {
#ifdef SYS_landlock_create_ruleset
  long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, 1u /* ..._VERSION */);
  return abi > 0 ? static_cast<int>(abi) : 0;
#else
  return 0;
#endif
}

namespace {

ContainmentSupport probe() {
  ContainmentSupport s;
  s.root = ::geteuid() == 0;
  s.user_namespaces = user_namespace_works();
  s.pid_namespace = s.root || s.user_namespaces;
  s.network_namespace = s.root || s.user_namespaces;
  s.landlock_abi = landlock_abi();
  s.seccomp = seccomp_filters();
  s.pids_cgroup = pids_cgroup_writable(s.root);
  s.memory_cgroup = s.root && !memory_cgroup_parent().empty();
  // Not a PID namespace, although one can be made: a process whose children go to another PID
  // namespace than its own cannot create threads (clone(CLONE_THREAD) fails with EINVAL), and
  // ferry-worker is the host's child, so it cannot be inside one itself (worker/containment.cpp).
  s.descendants = s.pids_cgroup                    ? "pids cgroup"
                   : (!s.root && s.user_namespaces) ? "user namespace"
                                                    : "subreaper and sweep";
  s.processes = s.pids_cgroup                    ? "pids cgroup"
                : (!s.root && s.user_namespaces) ? "RLIMIT_NPROC in a user namespace"
                                                 : "none";
  s.memory = s.memory_cgroup ? "RLIMIT_DATA, and in a sandbox a memory cgroup"
                             : "RLIMIT_DATA (private memory only)";
  return s;
}

}  // namespace

namespace {

/// A process's cgroups from /proc/<pid>/cgroup: "N:pids:/path" (v1; controllers are a comma
/// list), "0::/path" (v2). Paths without the trailing "/" of the root ("" for it).
struct OwnCgroups {
  std::optional<std::string> v1_pids, v1_memory, v1_cpuacct, v2;
};

OwnCgroups own_cgroups(const std::string& file = "/proc/self/cgroup") {
  OwnCgroups own;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    std::string path = line.substr(b + 1);
    if (path == "/") path.clear();
    if (controllers.find(",pids,") != std::string::npos) own.v1_pids = path;
    if (controllers.find(",memory,") != std::string::npos) own.v1_memory = path;
    if (controllers.find(",cpuacct,") != std::string::npos) own.v1_cpuacct = path;
    if (controllers == ",,") own.v2 = path;
  }
  return own;
}

}  // namespace

std::string memory_cgroup_parent() {
  // v1 only: nested in this process's own memory cgroup, whose limits then count the workers too.
  // (v2 would need the worker's one cgroup to take the memory controller as well: not built.)
  OwnCgroups own = own_cgroups();
  if (own.v1_memory && ::access(("/sys/fs/cgroup/memory" + *own.v1_memory).c_str(), W_OK) == 0)
    return "/sys/fs/cgroup/memory" + *own.v1_memory;
  return "";
}

std::string memory_cgroup_of_process(int pid) {
  OwnCgroups of = own_cgroups("/proc/" + std::to_string(pid) + "/cgroup");
  return of.v1_memory ? "/sys/fs/cgroup/memory" + *of.v1_memory : "";
}

namespace {

/// Where the v1 hierarchy with cpuacct is mounted: alone, or with cpu (either order); "" when
/// none is.
const std::string& cpuacct_mount() {
  static const std::string mount = [] {
    for (const char* dir : {"/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"})
      if (::access((std::string(dir) + "/cpuacct.usage").c_str(), F_OK) == 0) return std::string(dir);
    return std::string();
  }();
  return mount;
}

/// The first bytes of a small file, NUL-terminated; false when it cannot be read.
bool read_text(const std::string& path, char* buf, std::size_t cap) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, buf, cap - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

/// Whether `path` (of /proc/<pid>/cgroup) is `pid`'s own worker cgroup, ".../ferry/<pid>.<...>",
/// or with `inner` its "task" cgroup inside it too; the worker cgroup's path, else "".
std::string worker_cgroup_path(const std::string& path, int pid, bool inner) {
  std::string dir = path;
  if (inner && dir.size() > 5 && dir.compare(dir.size() - 5, 5, "/task") == 0) dir.resize(dir.size() - 5);
  const auto slash = dir.rfind('/');
  if (slash == std::string::npos) return "";
  return is_worker_cgroup(dir, dir.substr(0, slash), pid) && slash >= 6 && dir.compare(slash - 6, 6, "/ferry") == 0
             ? dir
             : "";
}

}  // namespace

std::string cpuacct_cgroup_parent() {
  OwnCgroups own = own_cgroups();
  const std::string& mount = cpuacct_mount();
  if (own.v1_cpuacct && !mount.empty() && ::access((mount + *own.v1_cpuacct).c_str(), W_OK) == 0)
    return mount + *own.v1_cpuacct;
  return "";
}

std::optional<std::uint64_t> worker_cgroup_cpu_ns(int pid) {
  OwnCgroups of = own_cgroups("/proc/" + std::to_string(pid) + "/cgroup");
  char text[512];
  if (of.v1_cpuacct && !cpuacct_mount().empty()) {
    if (const std::string dir = worker_cgroup_path(*of.v1_cpuacct, pid, false); !dir.empty()) {
      if (read_text(cpuacct_mount() + dir + "/cpuacct.usage", text, sizeof text))
        return std::strtoull(text, nullptr, 10);
    }
  }
  // v2: every cgroup counts its CPU time (cpu.stat), the worker's pids cgroup among them (the
  // worker may be in its "task" cgroup: the one above counts both).
  if (of.v2) {
    if (const std::string dir = worker_cgroup_path(*of.v2, pid, true); !dir.empty()) {
      if (read_text("/sys/fs/cgroup" + dir + "/cpu.stat", text, sizeof text))
        if (const char* usage = std::strstr(text, "usage_usec "))
          return std::strtoull(usage + 11, nullptr, 10) * 1000;
    }
  }
  return std::nullopt;
}

std::string memory_cgroups_base() {
  static const std::string parent = memory_cgroup_parent();
  return parent.empty() ? parent : parent + "/ferry";
}

namespace {

/// This process's PID namespace, as the inode number /proc/self/ns/pid links to ("pid:[N]");
/// "0" when it cannot be read.
std::string pid_namespace_id() {
  char link[64] = {};
  ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof link - 1);
  std::string_view v(link, n > 0 ? static_cast<std::size_t>(n) : 0);
  auto open = v.find('['), close = v.find(']');
  if (open == std::string_view::npos || close == std::string_view::npos || close <= open + 1) return "0";
  return std::string(v.substr(open + 1, close - open - 1));
}

}  // namespace

std::string new_worker_cgroup_name() {
  unsigned char bytes[8];
  std::uint64_t unique = 0;
  if (::getrandom(bytes, sizeof bytes, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof bytes)) {
    for (unsigned char b : bytes) unique = unique << 8 | b;
  } else {
    // No random bytes (a filter, an old kernel): the time since boot in ns, which two processes
    // given the same pid one after the other cannot share.
    timespec t{};
    ::clock_gettime(CLOCK_BOOTTIME, &t);
    unique = static_cast<std::uint64_t>(t.tv_sec) * 1000000000u + static_cast<std::uint64_t>(t.tv_nsec);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(unique));
  return std::to_string(::getpid()) + "." + pid_namespace_id() + "." + hex;
}

bool is_worker_cgroup(const std::string& dir, const std::string& base, int pid) {
  const std::string prefix = base + "/" + std::to_string(pid) + ".";
  return !base.empty() && dir.size() > prefix.size() && dir.compare(0, prefix.size(), prefix) == 0 &&
         dir.find('/', prefix.size()) == std::string::npos;
}

void remove_stale_worker_cgroups(const std::string& base) {
  namespace fs = std::filesystem;
  // Only those of this PID namespace: in another, a pid names another process, and a live
  // worker's cgroup, still empty between its mkdir and the worker joining it, would go.
  const std::string ns = "." + pid_namespace_id() + ".";
  std::error_code ec;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto dot = name.find('.');
    if (dot == std::string::npos || dot == 0 || name.find_first_not_of("0123456789") < dot ||
        name.compare(dot, ns.size(), ns) != 0)
      continue;  // not a worker's of this namespace (an older ferry named them by pid alone)
    if (::access(("/proc/" + name.substr(0, dot)).c_str(), F_OK) == 0 || errno != ENOENT)
      continue;  // its pid has a process: perhaps its worker
    ::rmdir((it->path() / "task").c_str());  // a processes ceiling's inner cgroup (pids)
    ::rmdir(it->path().c_str());             // fails while it has processes
  }
}

std::string pids_cgroup_parent() {
  OwnCgroups own = own_cgroups();
  // v1: nested in this process's own pids cgroup, whose limits then count the workers too.
  if (own.v1_pids && ::access(("/sys/fs/cgroup/pids" + *own.v1_pids).c_str(), W_OK) == 0)
    return "/sys/fs/cgroup/pids" + *own.v1_pids;
  // v2: only from the root cgroup (a container's, with its cgroup namespace): elsewhere the
  // parent has processes of its own and cannot hand the pids controller down, and a worker moved
  // out of the host's cgroup would escape the host's memory and CPU limits.
  if (own.v2 && own.v2->empty() && ::access("/sys/fs/cgroup/cgroup.subtree_control", W_OK) == 0 &&
      file_has_word("/sys/fs/cgroup/cgroup.controllers", "pids"))
    return "/sys/fs/cgroup";
  return "";
}

std::vector<std::string> temp_dirs_to_hide(const std::vector<std::string>& needed) {
  namespace fs = std::filesystem;
  std::vector<fs::path> real;
  for (const auto& p : needed) {
    std::error_code ec;
    fs::path r = fs::weakly_canonical(p, ec);
    real.push_back(ec ? fs::path(p).lexically_normal() : r);
  }
  std::vector<std::string> out;
  for (const char* shared : {"/tmp", "/var/tmp", "/dev/shm"}) {
    std::error_code ec;
    fs::path dir = fs::canonical(shared, ec);
    if (ec || !fs::is_directory(dir, ec) || dir == "/") continue;
    if (std::find(out.begin(), out.end(), dir.string()) != out.end()) continue;  // a link to another
    bool clear = true;
    for (const auto& n : real)
      if (path_within(n, dir) || path_within(dir, n)) clear = false;
    if (clear) out.push_back(dir.string());
  }
  return out;
}

std::string landlock_scope_missing(int abi) {
  return "Landlock ABI 6 (Linux 6.12) is needed to keep a task's signals inside the sandbox; this kernel has ABI " +
         std::to_string(abi);
}

const ContainmentSupport& containment_support() {
  static const ContainmentSupport s = probe();  // thread-safe initialisation (C++11)
  return s;
}

std::string containment_missing(const ContainmentSupport& s, bool sandbox, bool network,
                                bool processes_limit) {
  std::string why;
  auto add = [&](const char* reason) {
    if (!why.empty()) why += "; ";
    why += reason;
  };
  if (sandbox) {
    if (s.landlock_abi == 0) add("Landlock is not available (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)");
    else if (s.landlock_abi < 6) add(landlock_scope_missing(s.landlock_abi).c_str());
    if (!s.seccomp) add("seccomp filters are not available (CONFIG_SECCOMP_FILTER)");
    // The same right makes either namespace; the IPC one is made whether the network is allowed
    // or not.
    if (!s.network_namespace)
      add(network ? "an IPC namespace cannot be created (needs root or unprivileged user namespaces)"
                  : "a network namespace cannot be created (needs root or unprivileged user namespaces)");
  }
  if (processes_limit && s.processes == "none")
    add("a processes limit needs a pids cgroup (as root) or user namespaces (as another user)");
  return why;
}

}  // namespace ferry::detail
