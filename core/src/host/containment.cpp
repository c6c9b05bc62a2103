// SPDX-License-Identifier: BSD-3-Clause
#include "host/containment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <system_error>
#include <tuple>

#include <ferry/errors.hpp>
#include <ferry/plugin_index.hpp>
#include <ferry/wrap.hpp>

#include "platform/config.hpp"
#include "platform/containment.hpp"
#include "platform/debug.hpp"
#include "platform/format.hpp"
#include "platform/paths.hpp"
#include "platform/spawn.hpp"
#include "platform/trust.hpp"
#include "wrap/wrap_compiler.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

protocol::TaskLimits task_limits(const Limits& l) {
  return {static_cast<std::uint64_t>(l.memory),
          static_cast<std::uint64_t>(std::max<std::chrono::seconds::rep>(0, l.cpu_time.count())),
          static_cast<std::uint64_t>(l.open_files), static_cast<std::uint64_t>(l.processes),
          static_cast<std::uint64_t>(l.file_size)};
}

protocol::TaskLimits merge_limits(const protocol::TaskLimits& base, const Limits& over) {
  protocol::TaskLimits o = task_limits(over), r = base;
  if (o.memory) r.memory = o.memory;
  if (o.cpu_seconds) r.cpu_seconds = o.cpu_seconds;
  if (o.open_files) r.open_files = o.open_files;
  if (o.processes) r.processes = o.processes;
  if (o.file_size) r.file_size = o.file_size;
  return r;
}

bool any_limit(const protocol::TaskLimits& l) { return !(l == protocol::TaskLimits{}); }

void check_containment(const ExecutorOptions& options) {
  const Sandbox& sb = options.sandbox;
  if (options.limits.cpu_time.count() < 0)
    throw std::invalid_argument("ferry: Limits::cpu_time must not be negative");
  const bool contained = sb.enabled || any_limit(task_limits(options.limits));
  if (!contained) return;
  if (options.backend != "local")
    throw std::invalid_argument("ferry: Limits and Sandbox are supported by the \"local\" backend "
                                "only, not by \"" + options.backend + "\"");
  if (sb.best_effort) return;
  const ContainmentSupport& s = containment_support();
  std::string missing = containment_missing(s, sb.enabled, sb.network, options.limits.processes > 0);
  if (!missing.empty())
    throw Error("ferry: cannot contain the workers as asked on this machine: " + missing +
                " (set Sandbox::best_effort, or `ferry run/map --best-effort`, to run with what "
                "the kernel offers; `ferry info` shows it)");
}

namespace {

constexpr const char* private_dir_pattern = "ferry-sandbox-XXXXXX";

}  // namespace

PrivateDirPlace private_dir_place() {
  PrivateDirPlace place;
  const fs::path tmp = "/tmp";
  const char* env = std::getenv("TMPDIR");
  if (env && *env) {
    const fs::path base = env;
    place.tmpdir_refused = untrusted_way_reason(base / private_dir_pattern);
    if (place.tmpdir_refused.empty()) {
      place.base = base;
      return place;
    }
    // Another user could rename the directory away and put one of theirs at its name before a
    // worker opens it: the tasks' files in their hands. The user's TMPDIR asked for a place, not
    // for that: the shared /tmp instead, and a worker checks the directory anyway.
  }
  place.error = untrusted_way_reason(tmp / private_dir_pattern);
  if (place.error.empty()) place.base = tmp;
  return place;
}

namespace {

/// Where the private directory is made (private_dir_place), or ferry::Error.
fs::path private_dir_base() {
  const PrivateDirPlace place = private_dir_place();
  if (!place.tmpdir_refused.empty() && !place.base.empty())
    debug_log("sandbox: the private directory is made in /tmp, not under $TMPDIR: %s", place.tmpdir_refused.c_str());
  if (place.base.empty())
    throw Error("ferry: cannot make the sandbox's private directory: neither $TMPDIR nor /tmp is a "
                "place no other user can change (" + place.error + "); set TMPDIR to a directory of yours, "
                "or give Sandbox::write");
  return place.base;
}

/// The directory `path` opened without following a link as its last component: its identity
/// when it is a directory of this user's that no one else can write (made 0700; the user may
/// chmod it, a sandboxed task cannot); else nothing, and `why` says what it is.
bool private_dir_identity(const fs::path& path, std::uint64_t& dev, std::uint64_t& ino, std::string& why) {
  const int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    why = std::strerror(errno);
    return false;
  }
  struct stat st{};
  const bool seen = ::fstat(fd, &st) == 0;
  const int err = errno;
  ::close(fd);
  if (!seen) {
    why = std::strerror(err);
    return false;
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    char text[96];
    std::snprintf(text, sizeof text, "owned by uid %u, mode %04o", static_cast<unsigned>(st.st_uid),
                  static_cast<unsigned>(st.st_mode & 07777));
    why = text;
    return false;
  }
  dev = st.st_dev;
  ino = st.st_ino;
  return true;
}

}  // namespace

struct PrivateTempDir::Live {
  fs::path path;
  std::uint64_t dev = 0, ino = 0;
  pid_t pid = 0;         // the process that made it: a child of fork() has a copy of this
  bool claimed = false;  // by the exit handler, which removes it (under LiveDirs::mu)
  bool locked = false;   // named to be swept once this process is gone (what exit leaves)
  int fork_slot = -1;    // of fork_closed, for its lock
};

namespace {

constexpr const char* making_pattern = ".ferry-sandbox-XXXXXX";  // never swept: not yet locked
constexpr std::string_view made_prefix = "ferry-sandbox-";
constexpr std::string_view made_suffix = "-locked";

/// Whether the file system of `fd` may be shared with other machines: a lock taken there may be
/// local to each machine (NFS mounted with local locks, Lustre's localflock), so a sweep on
/// another machine would take a live pool's directory for a dead host's. Only the local file
/// systems a temporary directory is found on are taken as unshared (an unknown one, NFS, SMB,
/// Lustre, 9p, FUSE, Ceph, AFS, GPFS... is not locked, and such a place is not swept).
bool shared_between_machines(int fd) {
  struct statfs fs_info {};
  if (::fstatfs(fd, &fs_info) != 0) return true;
  switch (static_cast<unsigned long>(fs_info.f_type)) {
    case 0x01021994UL:  // tmpfs
    case 0x858458F6UL:  // ramfs
    case 0x0000EF53UL:  // ext2, ext3, ext4
    case 0x58465342UL:  // XFS
    case 0x9123683EUL:  // Btrfs
    case 0x2FC12FC1UL:  // ZFS
    case 0xF2F52010UL:  // F2FS
    case 0x794C7630UL:  // overlay (a container's root)
    case 0xCA451A4EUL:  // bcachefs
    case 0x3153464AUL:  // JFS
    case 0x52654973UL:  // ReiserFS
      return false;
    default:
      return true;
  }
}

bool is_locked_dir_name(std::string_view name) {
  if (name.size() != made_prefix.size() + 6 + made_suffix.size()) return false;
  if (name.substr(0, made_prefix.size()) != made_prefix) return false;
  if (name.substr(made_prefix.size() + 6) != made_suffix) return false;
  const std::string_view random = name.substr(made_prefix.size(), 6);
  return std::all_of(random.begin(), random.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

/// Why the directory at `path` is not the one made (`dev`, `ino`), "" when it is.
std::string changed_dir(const fs::path& path, std::uint64_t made_dev, std::uint64_t made_ino) {
  std::uint64_t dev = 0, ino = 0;
  std::string why;
  if (private_dir_identity(path, dev, ino, why) && dev == made_dev && ino == made_ino) return "";
  return path.string() + " (" + (why.empty() ? std::string("another directory") : why) + ")";
}

/// How long exit() spends on this process's private directories, all of them together: a task
/// still writing there (the workers live until this process ends) kept remove_tree at it for its
/// whole 30 s, and exit() with it. What is left of a locked one is the next pool's sweep's.
constexpr auto exit_removal_budget = std::chrono::seconds(1);

/// How long a pool's constructor spends sweeping what dead hosts left (sweep_stale_private_dirs),
/// reading the place included: a dead host's tree may be huge, or still being added to by what
/// its tasks left running, and the constructor waited for up to 30 s per tree. What is left (the
/// rest of a tree, trees not reached) is a later pool's.
constexpr auto sweep_budget = std::chrono::milliseconds(500);

/// Removes the directory made at `path`, if it is still the one made, by `deadline`; says on
/// stderr what it could not (no caller can be told: a destructor, exit). `swept_later`: what is
/// left is a dead host's for the next sweep there (at exit, a locked directory).
void remove_made_dir(const fs::path& path, std::uint64_t dev, std::uint64_t ino,
                     std::chrono::steady_clock::time_point deadline, bool swept_later) {
  // Only the directory this object made: one put at its name since (the way is the user's and
  // root's alone, so only they could) holds someone else's files.
  if (const std::string why = changed_dir(path, dev, ino); !why.empty()) {
    const std::string shown = terminal_text(why, "\\n");
    std::fprintf(stderr, "ferry: the sandbox's private directory %s is not the one ferry made; left as it is\n",
                 shown.c_str());
    return;
  }
  std::string why;
  // A task's descendant may still be running: the pool has waited for its workers, not for their
  // guardians, which may still be ending what the tasks started (at exit, the workers too). Never
  // through a link it put in place of a directory (std::filesystem::remove_all checks, then opens).
  if (remove_tree(path, why, deadline)) return;
  // What is left takes the user's disk (a task could leave up to all of it), and no caller can be
  // told: printed without FERRY_DEBUG (as a directory left as it is above), once per directory.
  // The reason may name a task's file: shown as a terminal may show it, on one line.
  const std::string shown = terminal_text(path.string() + " (" + why + ")", "\\n");
  if (swept_later)
    std::fprintf(stderr, "ferry: the sandbox's private directory %s was not all removed at exit; the next "
                 "sandboxed executor made in the same place goes on with it\n", shown.c_str());
  else
    std::fprintf(stderr, "ferry: could not remove the sandbox's private directory %s; remove it by hand\n",
                 shown.c_str());
}

/// remove_made_dir with remove_tree's own 30 s, for a pool's end (its workers have ended).
void remove_made_dir(const fs::path& path, std::uint64_t dev, std::uint64_t ino) {
  remove_made_dir(path, dev, ino, std::chrono::steady_clock::now() + std::chrono::seconds(30), false);
}

/// The private directories this process made and has not removed, for exit() to remove: a host
/// that ends by exit() (std::exit anywhere, or main returning) with an executor left alive (on
/// main's stack, a get_reusable_executor() handle in a local) never runs its destructors, and
/// left the directory, with what its tasks wrote, for good. Never freed: exit() reads it after
/// the statics' destructors may have run. A child of fork() starts with none (the table is the
/// parent's, and so may be its lock, held by a thread the child does not have).
struct LiveDirs {
  std::mutex mu;
  std::set<PrivateTempDir::Live*> dirs;
};
std::atomic<LiveDirs*> live_dirs{nullptr};

/// The locks' descriptors plus one (0: a free slot), for a child of fork() to close: it would
/// hold its parent's lock for its own life (the lock is the open file's), and a daemon the host
/// forked kept a killed host's directory from ever being swept. Lock-free, as in trace.cpp.
/// Past 64 live directories at once, a child keeps the others' locks (left as they were).
std::atomic<int> fork_closed[64];

int hold_for_fork(int fd) noexcept {
  for (std::size_t i = 0; i < std::size(fork_closed); ++i) {
    int free = 0;
    if (fork_closed[i].compare_exchange_strong(free, fd + 1, std::memory_order_relaxed)) return static_cast<int>(i);
  }
  return -1;
}

void release_for_fork(int slot) noexcept {
  if (slot >= 0) fork_closed[static_cast<std::size_t>(slot)].store(0, std::memory_order_relaxed);
}

void forget_private_dirs_in_child() noexcept {
  for (auto& slot : fork_closed) {
    const int v = slot.exchange(0, std::memory_order_relaxed);
    if (v != 0) ::close(v - 1);
  }
  live_dirs.store(nullptr, std::memory_order_release);  // the parent's (left as it is)
}
const int private_dir_fork_handler = ::pthread_atfork(nullptr, nullptr, &forget_private_dirs_in_child);

/// At exit() and quick_exit(): removes this process's live private directories, all of them
/// within exit_removal_budget. Each is claimed under the table's lock, then removed without it:
/// a destructor running in another thread meanwhile either took its directory out of the table
/// first (and removes it itself; exit does not wait for it) or finds it claimed (and leaves it).
/// The workers may still be running (they end when this process does: PR_SET_PDEATHSIG, EOF on
/// their channels), and a task writing meanwhile kept remove_tree at it for its 30 s: hence the
/// budget. The workers are not killed first: their pids are in the pools' tables, behind locks a
/// thread stopped anywhere by exit() may hold, and the pools' manager threads still run during
/// exit(), would see the deaths and start new workers (calls retried on them). What is left of a
/// locked directory is swept by the next sandboxed pool there, since the lock goes with this
/// process; one kept unlocked (a file system ferry does not lock on) is said to be removed by hand.
void remove_private_dirs_at_exit() {
  LiveDirs* live = live_dirs.load(std::memory_order_acquire);
  if (!live) return;
  const auto deadline = std::chrono::steady_clock::now() + exit_removal_budget;
  std::vector<std::tuple<fs::path, std::uint64_t, std::uint64_t, bool>> mine;
  {
    std::lock_guard lock(live->mu);
    const pid_t self = ::getpid();
    for (PrivateTempDir::Live* d : live->dirs) {
      if (d->claimed || d->pid != self) continue;  // a child of fork() never removes its parent's
      d->claimed = true;
      mine.emplace_back(d->path, d->dev, d->ino, d->locked);
    }
  }
  for (const auto& [path, dev, ino, locked] : mine) remove_made_dir(path, dev, ino, deadline, locked);
}

/// Registered when libferry is loaded, before anything of the program's: exit() runs them after
/// every other handler and the destructor of every static made since (a static executor's, the
/// reusable executor's, which remove their directories themselves), and after the handler that
/// waits for the pools shut down from a callback (Pool::exit_waits_for_one_more), whose calls
/// may still be running and writing in their directories. Registered at the first sandboxed pool
/// instead, it ran before that wait whenever a pool had been shut down so earlier.
bool register_exit_handlers() noexcept {
  std::atexit(&remove_private_dirs_at_exit);
  std::at_quick_exit(&remove_private_dirs_at_exit);
  return true;
}
const bool exit_handlers_registered = register_exit_handlers();

LiveDirs* live_table() {
  (void)private_dir_fork_handler;
  (void)exit_handlers_registered;
  LiveDirs* live = live_dirs.load(std::memory_order_acquire);
  if (live) return live;
  auto* made = new LiveDirs;
  if (live_dirs.compare_exchange_strong(live, made, std::memory_order_acq_rel)) return made;
  delete made;
  return live;
}

/// Renames `from` to `to` unless `to` exists (errno EEXIST).
int rename_unless_taken(const char* from, const char* to) {
  if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL) return -1;
  // A file system without RENAME_NOREPLACE: looked at first (rename would replace an empty
  // directory; only another ferry could make one of this shape meanwhile, from a name of its
  // own that mkdtemp made unique).
  if (::faccessat(AT_FDCWD, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
    errno = EEXIST;
    return -1;
  }
  return ::renameat(AT_FDCWD, from, AT_FDCWD, to);
}

}  // namespace

PrivateTempDir::PrivateTempDir(bool make) {
  if (!make) return;
  const fs::path base = private_dir_base();
  // Made under a name no sweep takes, locked, and only then given its name: a sweep in another
  // process never sees it unlocked. A host killed in between leaves an empty .ferry-sandbox-*.
  std::string made;
  for (int attempt = 0;; ++attempt) {
    std::string making = (base / making_pattern).string();
    if (!::mkdtemp(making.data()))  // mode 0700: the user's alone
      throw std::system_error(errno, std::generic_category(),
                              "ferry: cannot make the sandbox's private directory " + making);
    Fd dir(::open(making.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st{};
    if (!dir || ::fstat(dir.get(), &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
      std::string why;
      std::uint64_t dev = 0, ino = 0;
      private_dir_identity(making, dev, ino, why);
      throw Error("ferry: the sandbox's private directory " + making + " is not as it was made (" +
                  (why.empty() ? std::string("another directory") : why) + "); left as it is");
    }
    const std::string random = making.substr(making.size() - 6);
    std::string name = std::string(made_prefix) + random + std::string(made_suffix);
    const bool shared = shared_between_machines(dir.get());
    if (shared || ::flock(dir.get(), LOCK_SH) != 0) {
      // No locks on this file system (NFS without them, say), or locks that another machine
      // sharing it would not see (NFS with local locks, Lustre's localflock): the name older
      // ferry gave, which no sweep takes; left for good if this host never reaches its destructor or exit().
      debug_log("sandbox: no lock on the private directory (%s): not swept if this host is killed",
                shared ? "a file system other machines may share" : std::strerror(errno));
      name = std::string(made_prefix) + random;
      dir.reset();
    }
    const fs::path named = base / name;
    if (rename_unless_taken(making.c_str(), named.c_str()) == 0) {
      lock_ = std::move(dir);
      dev_ = st.st_dev;
      ino_ = st.st_ino;
      made = named.string();
      break;
    }
    const int err = errno;
    ::rmdir(making.c_str());
    if (err != EEXIST || attempt >= 100)
      throw std::system_error(err, std::generic_category(),
                              "ferry: cannot name the sandbox's private directory " + named.string());
  }
  path_ = resolved_path(made);  // as the worker gets it: no link on the way (Landlock::allow)
  try {
    auto live = std::make_unique<Live>();
    live->path = path_;
    live->dev = dev_;
    live->ino = ino_;
    live->pid = ::getpid();
    live->locked = static_cast<bool>(lock_);
    LiveDirs* table = live_table();
    {
      std::lock_guard lock(table->mu);
      table->dirs.insert(live.get());
    }
    if (lock_) live->fork_slot = hold_for_fork(lock_.get());
    live_ = std::move(live);
  } catch (...) {
    std::string why;
    remove_tree(path_, why);  // no destructor runs: the constructor did not finish
    throw;
  }
  // What hosts killed before left here: with this one locked, no sweep of ours takes it.
  if (lock_) {
    try {
      sweep_stale_private_dirs(base, std::chrono::steady_clock::now() + sweep_budget);
    } catch (const std::exception& e) {  // the pool starts anyway
      debug_log("sandbox: sweeping %s: %s", base.c_str(), e.what());
    }
  }
}

PrivateTempDir::PrivateTempDir(PrivateTempDir&& o) noexcept
    : path_(std::move(o.path_)), dev_(o.dev_), ino_(o.ino_), lock_(std::move(o.lock_)), live_(std::move(o.live_)) {
  o.path_.clear();
}

std::string PrivateTempDir::changed() const {
  if (path_.empty()) return "";
  return changed_dir(path_, dev_, ino_);
}

PrivateTempDir::~PrivateTempDir() {
  if (path_.empty()) return;
  if (live_ && live_->pid != ::getpid()) {
    // A child of fork(): the directory is its parent's, which may still use it. Its lock's
    // descriptor was closed at the fork (forget_private_dirs_in_child) or is the parent's copy:
    // its number may be another file's now, never closed here. The table was the parent's.
    (void)lock_.release();
    (void)live_.release();
    return;
  }
  if (live_) {
    bool claimed = false;
    if (LiveDirs* table = live_dirs.load(std::memory_order_acquire)) {
      std::lock_guard lock(table->mu);
      table->dirs.erase(live_.get());
      claimed = live_->claimed;
    }
    if (claimed) {
      // exit() is under way and removes it (maybe in another thread now): kept locked till the end.
      (void)lock_.release();
      return;
    }
  }
  remove_made_dir(path_, dev_, ino_);
  // Unlocked only now: a sweep never takes a directory still being removed. The slot is cleared
  // first, so that a child forked meanwhile never closes a number given to another file since.
  if (live_) release_for_fork(live_->fork_slot);
  lock_.reset();
}

std::size_t sweep_stale_private_dirs(const fs::path& base, std::chrono::steady_clock::time_point deadline) {
  Fd dir(::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir || shared_between_machines(dir.get())) return 0;
  const auto late = [&] { return std::chrono::steady_clock::now() >= deadline; };
  std::vector<std::string> names;
  bool read_all = true;
  try {
    const int copy = ::dup(dir.get());  // closedir closes it
    DIR* d = copy < 0 ? nullptr : ::fdopendir(copy);
    if (!d) {
      if (copy >= 0) ::close(copy);
      return 0;
    }
    // The whole place is read (all of /tmp): looked at the clock every 1024 names.
    std::size_t read = 0;
    while (dirent* e = ::readdir(d)) {
      if (is_locked_dir_name(e->d_name)) names.emplace_back(e->d_name);
      if (++read % 1024 == 0 && late()) {
        read_all = false;
        break;
      }
    }
    ::closedir(d);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  std::size_t removed = 0, left = 0;
  const uid_t self = ::geteuid();
  for (const std::string& name : names) {
    if (late()) {
      ++left;
      continue;
    }
    // Not through a link (another user's, in a shared /tmp, could point anywhere), nor a FIFO
    // (O_DIRECTORY refuses it before it could block).
    Fd fd(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) continue;
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != self || (st.st_mode & 07777) != 0700)
      continue;  // not as ferry makes them: not ours to remove
    // Held by a live pool, in any process or PID namespace (or no locks here): left.
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
    // Ours now. Still at its name? Another sweep may have removed it between our open and our
    // lock (the inode we locked is then gone), and a new pool may have the name since.
    struct stat locked{}, at_name{};
    if (::fstat(fd.get(), &locked) != 0 || locked.st_nlink == 0) continue;
    if (::fstatat(dir.get(), name.c_str(), &at_name, AT_SYMLINK_NOFOLLOW) != 0 || at_name.st_dev != st.st_dev ||
        at_name.st_ino != st.st_ino)
      continue;
    std::string why;
    const fs::path path = base / name;
    // Within what is left of the budget: a tree removed in part is unlocked again when `fd`
    // closes, and a later sweep goes on with it.
    if (remove_tree(path, why, deadline)) {
      ++removed;
      debug_log("sandbox: removed %s, a private directory its host left when it died", path.c_str());
    } else {
      debug_log("sandbox: could not remove %s, a private directory its host left: %s", path.c_str(), why.c_str());
    }
  }
  if (left || !read_all)
    debug_log("sandbox: sweeping %s: out of time, %zu of its names%s left for a later sweep", base.c_str(), left,
              read_all ? "" : " and the rest of the place");
  return removed;
}

namespace {

/// Files of the shared libraries loaded in this process, outside the system directories the
/// worker may read anyway.
std::vector<std::string> loaded_libraries() {
  std::vector<std::string> out;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        const char* name = info->dlpi_name;
        if (!name || name[0] != '/') return 0;
        for (const char* system : {"/usr/", "/lib/", "/lib64/", "/lib32/"})
          if (std::strncmp(name, system, std::strlen(system)) == 0) return 0;
        static_cast<std::vector<std::string>*>(data)->push_back(name);
        return 0;
      },
      &out);
  return out;
}

}  // namespace

std::string resolved_path(const std::string& p) {
  std::error_code ec;
  const fs::path a = fs::absolute(p, ec);
  if (ec) return p;
  const fs::path r = fs::weakly_canonical(a, ec);
  return ec ? a.lexically_normal().string() : r.string();
}

std::vector<std::string> sandbox_read_paths(const ExecutorOptions& options, const Sandbox& sb) {
  std::vector<std::string> read;
  for (const auto& p : sb.read) read.push_back(p.string());
  for (const auto& d : PluginIndex::search_path(options.plugin_dirs)) read.push_back(d.string());
  // Of the FERRY_WRAP cache only its plugins: its sources, build logs and records hold the user's
  // other programs' code. Made now if missing: a rule needs the directory to exist, and the
  // executor's wraps are built after its workers started. Only a directory the wrap cache would
  // use itself (ours, private, on a trusted way: the builds' own check).
  if (auto cache = wrap_options().cache_dir; !cache.empty()) {
    const fs::path plugins = wrap_plugin_dir(fs::absolute(cache));
    if (std::string why = cache_dir_problem(plugins); why.empty())
      read.push_back(plugins.string());
    else
      debug_log("sandbox: no FERRY_WRAP plugins in the workers' sight: %s", why.c_str());
  }
  for (auto& lib : loaded_libraries()) read.push_back(std::move(lib));
  for (auto& p : read) p = resolved_path(p);
  return read;
}

std::string search_path_outside(std::string_view search_path, const std::vector<std::string>& task_writable) {
  std::vector<fs::path> writable;  // resolved once, as each entry is (resolved_path)
  for (const auto& w : task_writable) writable.emplace_back(resolved_path(w));
  std::string kept;
  for (;;) {
    const std::size_t end = search_path.find_first_of(":;");
    const std::string entry(search_path.substr(0, end));
    if (!entry.empty()) {
      const fs::path real = resolved_path(entry);
      // At or under a writable directory, or holding one: the loader searches an entry's
      // capability subdirectories too (glibc-hwcaps/x86-64-v3, and before glibc 2.37 tls,
      // x86_64, haswell... by the CPU), so a write path there would plant a library as well.
      // Any directory inside the entry counts, not only those names: the names differ by glibc
      // and CPU, and an entry dropped for a write path the loader never searches costs only a
      // library found elsewhere (or not at all, said at the plugin's load).
      if (std::any_of(writable.begin(), writable.end(), [&](const fs::path& w) { return path_within(real, w); }))
        debug_log("sandbox: LD_LIBRARY_PATH leaves out '%s': a task can write there", entry.c_str());
      else if (std::any_of(writable.begin(), writable.end(), [&](const fs::path& w) { return path_within(w, real); }))
        debug_log("sandbox: LD_LIBRARY_PATH leaves out '%s': a task can write in a directory inside it", entry.c_str());
      else
        kept += (kept.empty() ? "" : ":") + entry;
    }
    if (end == std::string_view::npos) break;
    search_path.remove_prefix(end + 1);
  }
  return kept;
}

std::vector<std::string> containment_args(const ExecutorOptions& options, const Sandbox& sb,
                                          const PrivateTempDir* private_tmp, const std::vector<std::string>& read) {
  std::vector<std::string> args;
  const protocol::TaskLimits l = task_limits(options.limits);
  if (any_limit(l) || sb.enabled) {
    args.insert(args.end(), {"--limits", std::to_string(l.memory) + "," + std::to_string(l.cpu_seconds) +
                                             "," + std::to_string(l.open_files) + "," +
                                             std::to_string(l.processes) + "," +
                                             std::to_string(l.file_size)});
  }
  if (!sb.enabled) return args;
  int flags = (sb.network ? 1 : 0) | (sb.exec ? 2 : 0) | (sb.best_effort ? 4 : 0);
  args.insert(args.end(), {"--sandbox", std::to_string(flags)});
  std::vector<fs::path> writable;
  for (const auto& p : sb.write) writable.push_back(p);
  if (sb.write.empty() && private_tmp && !private_tmp->path().empty()) writable.push_back(private_tmp->path());
  auto under_writable = [&](const fs::path& p) {
    return std::any_of(writable.begin(), writable.end(), [&](const fs::path& w) { return path_within(p, w); });
  };
  for (const auto& p : read) args.insert(args.end(), {"--read", p});
  // Libraries this process loaded since the pool was made: resolved now, so one a task could
  // have replaced a directory of (under a writable path) is left out (the write rule covers it).
  for (auto& lib : loaded_libraries()) {
    if (std::find(read.begin(), read.end(), lib) != read.end() || under_writable(lib)) continue;
    std::string r = resolved_path(lib);
    if (std::find(read.begin(), read.end(), r) == read.end() && !under_writable(r))
      args.insert(args.end(), {"--read", r});
  }
  if (sb.write.empty()) {
    // The worker shows it at /tmp, /var/tmp and /dev/shm too where it hides nothing it reads.
    if (private_tmp && !private_tmp->path().empty()) {
      // With its identity, so that the worker refuses any other directory put at its name.
      args.insert(args.end(), {"--write", private_tmp->path().string(), "--private-tmp", "1", "--private-tmp-id",
                               std::to_string(private_tmp->dev()) + ":" + std::to_string(private_tmp->ino())});
    }
  } else {
    for (const auto& p : sb.write) args.insert(args.end(), {"--write", p.string()});
  }
  return args;
}

std::exception_ptr contained_error(const protocol::Contained& c, const std::string& task, int pid) {
  if (c.kind == protocol::ContainedKind::syscall)
    return std::make_exception_ptr(SandboxViolationError(task, pid, c.name, c.detail));
  return std::make_exception_ptr(
      ResourceLimitError(task, pid, protocol::contained_kind_name(c.kind), c.value, c.detail));
}

std::exception_ptr containment_death(int signal, const protocol::TaskLimits& limits, bool sandbox,
                                     const std::string& task, int pid) {
  if (signal == SIGXFSZ && limits.file_size)
    return std::make_exception_ptr(ResourceLimitError(task, pid, "file_size", limits.file_size,
                                                      "the worker died of SIGXFSZ"));
  if (signal == SIGXCPU && limits.cpu_seconds)
    return std::make_exception_ptr(ResourceLimitError(task, pid, "cpu_time", limits.cpu_seconds,
                                                      "the worker died of SIGXCPU"));
  if (signal == SIGSYS && sandbox)
    return std::make_exception_ptr(SandboxViolationError(
        task, pid, "unknown", "the worker died of SIGSYS before it could name the system call"));
  return nullptr;
}

std::exception_ptr memory_ceiling_error(const std::string& task, int pid, std::uint64_t ceiling,
                                        const std::string& how) {
  return std::make_exception_ptr(ResourceLimitError(
      task, pid, "memory", ceiling,
      "the worker's memory cgroup was full (the sandbox's ceiling counts shared memory too)" +
          (how.empty() ? how : "; " + how)));
}

MemoryCeilingWatch MemoryCeilingWatch::of(int pid) {
  MemoryCeilingWatch w;
  const std::string base = memory_cgroups_base();
  if (base.empty()) return w;
  // The worker is in a memory cgroup of its own (best effort, it may have made none). With the
  // memory and pids hierarchies mounted together and a processes ceiling, it is in that
  // cgroup's "task" (join_cgroup), whose limit is the ceiling's: the cgroup itself is watched.
  std::string dir = memory_cgroup_of_process(pid);
  if (dir.size() > 5 && dir.compare(dir.size() - 5, 5, "/task") == 0) dir.resize(dir.size() - 5);
  if (!is_worker_cgroup(dir, base, pid)) return w;
  auto give_up = [&](const char* what) {
    // The kernel's OOM killer stays on in it: a task that fills it is killed, not stopped.
    debug_log("worker %d: its memory cgroup is not watched (%s: %s)", pid, what, std::strerror(errno));
    return MemoryCeilingWatch{};
  };
  Fd control(::open((dir + "/memory.oom_control").c_str(), O_RDWR | O_CLOEXEC));
  if (!control) return give_up("memory.oom_control");
  Fd event(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event) return give_up("eventfd");
  Fd registry(::open((dir + "/cgroup.event_control").c_str(), O_WRONLY | O_CLOEXEC));
  if (!registry) return give_up("cgroup.event_control");
  const std::string line = std::to_string(event.get()) + " " + std::to_string(control.get());
  if (::write(registry.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return give_up("registering");
  w.event = std::move(event);
  w.control = std::move(control);
  return w;
}

bool MemoryCeilingWatch::stop_oom_killer() {
  // A task that fills the cgroup now stops there until the host kills its worker (with the OOM
  // killer, the kernel would pick the victim and say nothing of why).
  return ::pwrite(control.get(), "1", 1, 0) == 1;
}

bool MemoryCeilingWatch::reached() {
  std::uint64_t count = 0;
  while (::read(event.get(), &count, sizeof count) > 0) {
  }
  // "oom_kill_disable 1\nunder_oom 1\n...": read from outside the cgroup, which a reader inside
  // could not (the kernel charges the read's buffer to it). Gone (the cgroup was removed, which
  // notifies too): not out of memory.
  char text[256];
  ssize_t n = ::pread(control.get(), text, sizeof text - 1, 0);
  if (n <= 0) return false;
  text[n] = '\0';
  return std::strstr(text, "under_oom 1") != nullptr;
}

std::uint64_t cpu_ticks(int pid) {
  // Where the worker has a cgroup of its own (root), the CPU time of everything in it: a task's
  // child processes too, those that ended and those it left running when it returned.
  if (const auto ns = worker_cgroup_cpu_ns(pid)) return *ns / (1000000000u / ticks_per_second());
  const auto st = read_proc_stat(pid);
  if (!st) return UINT64_MAX;
  unsigned long long utime = 0, stime = 0;
  // After the command name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime(15)
  if (std::sscanf(st->fields.c_str(), " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    return UINT64_MAX;
  return utime + stime;
}

std::uint64_t ticks_per_second() {
  static const long t = ::sysconf(_SC_CLK_TCK);
  return t > 0 ? static_cast<std::uint64_t>(t) : 100;
}

}  // namespace ferry::detail
