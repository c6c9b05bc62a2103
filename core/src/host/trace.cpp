// SPDX-License-Identifier: BSD-3-Clause
// The trace file: safe creation, the lines of docs/trace-format.md, the writer thread.
#include "host/trace.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <typeinfo>
#include <utility>
#include <vector>

#include <ferry/detail/invoke.hpp>

#include "platform/debug.hpp"
#include "platform/format.hpp"
#include "platform/symbolize.hpp"
#include "platform/trust.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

constexpr auto flush_period = std::chrono::milliseconds(100);
constexpr std::size_t flush_bytes = std::size_t{512} << 10;
/// Each of the two buffers (the one events go into, the one being written) is this large and its
/// pages touched from the start: growing a buffer as events come faulted in a fresh page every ten
/// calls or so, on the emitting thread (~2 µs each on these VMs: the round trip's p90 rose 20 %).
constexpr std::size_t buffer_bytes = 2 * flush_bytes;
/// Kept free under the cap for `trace truncated`, the closing `stats` line and `]` (the stats line
/// holds ferry's error type names and the recycle reasons: well under 2 KiB).
constexpr std::uint64_t closing_reserve = 4096;
/// A message longer than this is cut (a task's what() may be megabytes).
constexpr std::size_t max_message = 1024;
/// A task name longer than this is cut: no task has one (a plugin's record holds at most 4,096
/// bytes), but a name submitted that is no task may be anything, say one a service took from a
/// request. Written whole, three times (queue begin, end, `call ended`), a 17 MiB name made an
/// event past what `ferry report` reads (16 MiB): the whole trace was refused.
constexpr std::size_t max_task_name = 4096;
constexpr std::int64_t counters_period_ns = 1'000'000;

/// The files one FERRY_TRACE path gave this process (Trace::from_environment), oldest first: the
/// names it claimed, and once a trace started there, the file (device, inode) and the header it
/// wrote, by which a file written over later is known to be still its own (reopen_own_file).
struct NumberedFiles {
  struct File {
    unsigned number = 0;
    fs::path path;
    std::string key;
    bool started = false;  // dev, ino and header are the file's (else: being opened)
    dev_t dev = 0;
    ino_t ino = 0;
    std::string header;
    off_t failed_size = -1;  // the header's write failed (a full disk): the size it left instead
  };
  unsigned next = 1;            // the first number no trace of this process claimed
  pid_t pid = 0;                // the process `files` are of: a child of fork() has none yet
  std::deque<File> files;       // at most the `files` asked for; oldest first
  std::uint64_t started = 0;    // traces started from this path: the `sequence` of the last
  std::int64_t run_started_unix_us = 0;  // when the first of them started
  bool said_full = false, said_busy = false;
};

/// What this process's traces share, under paths_mu: the paths its executors are writing (a second
/// executor given the same path writes a numbered sibling instead of interleaving its lines with
/// the first's; another process's executors are known by the lock on the file: open_trace_file),
/// for each FERRY_TRACE path (by path_key) the files it gave this process (NumberedFiles), and the
/// FERRY_TRACE paths already said to be refused. Never freed: executors may close during exit. A
/// child of fork() whose parent had a thread in here at the fork gets new ones
/// (start_path_tables_in_child); one that keeps its parent's starts its own files at its first
/// claim (claim_numbered).
struct PathTables {
  std::set<std::string> open;
  std::map<std::string, NumberedFiles> numbered;
  std::set<std::string> warned;
};
std::mutex paths_mu;
/// Made at the first claim, by whichever thread gets there (an atomic, not a function-local
/// static: a child of fork() whose parent had a thread inside a static's first initialisation
/// waited on its guard for good). Never freed: executors may close during exit.
std::atomic<PathTables*> path_tables_made{nullptr};
PathTables& path_tables() {
  PathTables* tables = path_tables_made.load(std::memory_order_acquire);
  if (tables) return *tables;
  auto* made = new PathTables;
  if (path_tables_made.compare_exchange_strong(tables, made, std::memory_order_acq_rel)) return *made;
  delete made;
  return *tables;
}

std::string path_key(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  return (ec ? p : abs).lexically_normal().string();
}

/// The `n`th name of a trace asked for at `wanted`: `wanted` itself for 1, then "stem.N.ext".
fs::path numbered_path(const fs::path& wanted, unsigned n) {
  if (n == 1) return wanted;
  return wanted.parent_path() / (wanted.stem().string() + "." + std::to_string(n) + wanted.extension().string());
}

struct Claim {
  unsigned number;
  fs::path path;
  std::string key;
};

/// Claims the first name of `wanted`, from its `from`th on (numbered_path), that no executor of
/// this process writes: the rule of a path the program names (ExecutorOptions::trace).
Claim claim_path(const fs::path& wanted, unsigned from) {
  std::lock_guard lock(paths_mu);
  for (unsigned n = from;; ++n) {
    fs::path p = numbered_path(wanted, n);
    std::string key = path_key(p);
    if (path_tables().open.insert(key).second) return {n, std::move(p), std::move(key)};
  }
}

/// The files of `wanted_key` in this process; those of the parent, in a child of fork(), are
/// forgotten (they are not the child's to write over), but for the next number, which goes on
/// from the parent's (the two would otherwise take the same names).
NumberedFiles& numbered_files(const std::string& wanted_key) {
  NumberedFiles& f = path_tables().numbered[wanted_key];
  if (f.pid != ::getpid()) {
    f.pid = ::getpid();
    f.files.clear();
    f.started = 0;
    f.run_started_unix_us = 0;
    f.said_full = f.said_busy = false;
  }
  return f;
}

/// A name for a trace of FERRY_TRACE's path `wanted` (Trace::from_environment): while the process
/// has fewer than `files` of them, the first name from the path's next number on that no executor
/// of this process writes (the number then moves past it, in the same step: read apart from the
/// claim, another thread's executor made and destroyed between the two had its file written
/// over), counted at once among the files; then the oldest of its files no executor of this
/// process writes, but for those in `passed` (the caller found them in use): `reuse` set. None
/// when every file is in use.
struct NumberedClaim {
  Claim claim;
  bool reuse = false;
  dev_t dev = 0;
  ino_t ino = 0;
  std::string header;
  off_t failed_size = -1;
};
std::optional<NumberedClaim> claim_numbered(const fs::path& wanted, const std::string& wanted_key, unsigned files,
                                            const std::set<unsigned>& passed) {
  std::lock_guard lock(paths_mu);
  PathTables& tables = path_tables();
  NumberedFiles& mine = numbered_files(wanted_key);
  // FERRY_TRACE_FILES lowered while the program runs: the oldest files past the new count that
  // no executor writes are no longer counted (left on disk as they are), so that the last `files`
  // traces are those kept, as said.
  for (auto it = mine.files.begin(); mine.files.size() > files && it != mine.files.end();) {
    if (it->started && !tables.open.count(it->key))
      it = mine.files.erase(it);
    else
      ++it;
  }
  if (mine.files.size() >= files) {
    for (const auto& f : mine.files) {
      if (!f.started || passed.count(f.number) || !tables.open.insert(f.key).second) continue;
      return NumberedClaim{{f.number, f.path, f.key}, true, f.dev, f.ino, f.header, f.failed_size};
    }
    return std::nullopt;
  }
  for (unsigned n = std::max(mine.next, 1u);; ++n) {
    fs::path p = numbered_path(wanted, n);
    std::string key = path_key(p);
    if (!tables.open.insert(key).second) continue;
    mine.next = std::max(mine.next, n + 1);
    mine.files.push_back({n, p, key});
    return NumberedClaim{{n, std::move(p), std::move(key)}};
  }
}

/// The file numbered `number` is not one of `wanted_key`'s any more (its name was refused or is
/// another process's; or the file is no longer the one this process wrote).
void forget_numbered(const std::string& wanted_key, unsigned number) {
  std::lock_guard lock(paths_mu);
  auto& files = numbered_files(wanted_key).files;
  std::erase_if(files, [&](const NumberedFiles::File& f) { return f.number == number; });
}

/// A trace starts in the file numbered `number` (`st`): it becomes the newest. Its `sequence` and
/// the run's start; `first_reuse`: it is the first written over.
struct Started {
  std::uint64_t sequence = 0;
  std::int64_t run_started_unix_us = 0;
  bool first_reuse = false;
};
Started start_numbered(const std::string& wanted_key, unsigned number, const struct stat& st, bool reuse,
                       std::int64_t started_unix_us) {
  std::lock_guard lock(paths_mu);
  NumberedFiles& mine = numbered_files(wanted_key);
  auto it = std::find_if(mine.files.begin(), mine.files.end(),
                         [&](const NumberedFiles::File& f) { return f.number == number; });
  if (it != mine.files.end()) {
    NumberedFiles::File f = std::move(*it);
    mine.files.erase(it);
    f.started = false;  // until its header is recorded (record_numbered_header)
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    mine.files.push_back(std::move(f));
  }
  if (mine.started++ == 0) mine.run_started_unix_us = started_unix_us;
  Started s{mine.started, mine.run_started_unix_us, reuse && !mine.said_full};
  if (reuse) mine.said_full = true;
  return s;
}

/// The header written at the start of the file numbered `number`: from now on it may be written
/// over (once no executor writes it) if it still begins so. `failed_size` >= 0: the header's write
/// failed, and left the file that long (nothing more is written to it): written over if it still
/// is (it holds no trace; compared by its header, it was passed over and a new name taken each
/// time, without bound, while the disk stayed full).
void record_numbered_header(const std::string& wanted_key, unsigned number, const std::string& header,
                            off_t failed_size) {
  std::lock_guard lock(paths_mu);
  for (auto& f : numbered_files(wanted_key).files) {
    if (f.number != number) continue;
    f.header = failed_size < 0 ? header : std::string();
    f.failed_size = failed_size;
    f.started = true;
  }
}

/// The path itself (number 1) was refused: the next executor of FERRY_TRACE tries it again, not
/// NAME.2.EXT (the path named is the user's; a refusal of it ends the trace), unless another
/// claim moved past 2 meanwhile.
void unclaim_first_number(const std::string& wanted_key) {
  std::lock_guard lock(paths_mu);
  auto& numbered = path_tables().numbered;
  if (auto it = numbered.find(wanted_key); it != numbered.end() && it->second.next == 2) it->second.next = 1;
}

void release_path(const std::string& key) {
  std::lock_guard lock(paths_mu);
  path_tables().open.erase(key);
}

/// In a child of fork(): a thread of the parent may have been in claim_path or release_path. It
/// is not here to release the lock (the child's first executor with a trace waited for it for
/// good), and the table it was changing may be half-written: both start afresh. A free lock means
/// nothing was being changed: the tables stay, and the child goes on from its parent's numbers.
void start_path_tables_in_child() noexcept {
  if (paths_mu.try_lock()) {
    paths_mu.unlock();
    return;
  }
  new (&paths_mu) std::mutex;
  if (PathTables* tables = path_tables_made.load(std::memory_order_relaxed))
    new (tables) PathTables;  // the old nodes are left, not freed (no allocation here)
}

/// The descriptors of the traces being written, plus one (0: a free slot), for a child of fork()
/// to close: it inherits them, and with them each file's lock (the lock is the open file's, not
/// the process's), which it held for its whole life. A program that forked a long-lived child
/// (a daemon, a pre-fork server) without exec made every later run given the same path write
/// `NAME.2.EXT`, though nothing wrote NAME any more. The child cannot write them anyway: the
/// writer thread is the parent's. Lock-free, as the handler runs in the child after fork(): a
/// slot is cleared before its descriptor is closed, so a slot always names an open trace.
/// Traces past the slots (64 at once) are left to the child, as before.
std::atomic<int> fork_closed[64];

void close_traces_in_child() noexcept;
const int trace_fork_handler = ::pthread_atfork(nullptr, nullptr, &close_traces_in_child);

/// A slot of fork_closed for `fd`, or -1 when all are taken.
int hold_for_fork(int fd) noexcept {
  for (std::size_t i = 0; i < std::size(fork_closed); ++i) {
    int free = 0;
    if (fork_closed[i].compare_exchange_strong(free, fd + 1, std::memory_order_relaxed)) return static_cast<int>(i);
  }
  return -1;
}

void release_for_fork(int& slot) noexcept {
  if (slot >= 0) fork_closed[static_cast<std::size_t>(slot)].store(0, std::memory_order_relaxed);
  slot = -1;
}

/// The traces of this process, for exit() to write out what they hold: the writer gathers lines
/// for up to 100 ms, and a program that called exit() (std::exit anywhere, main returning while
/// an executor was left undestroyed, or shut down with wait = false) lost them all: a short run
/// left its header and no call. Written as a killed host's file, without the closing line (the
/// pool may still be running). A child of fork() starts with none: the table is the parent's,
/// and so may be its lock (held by a thread the child does not have).
struct LiveTraces {
  std::mutex mu;
  std::set<Trace*> traces;
};
std::atomic<LiveTraces*> live_traces{nullptr};

void write_out_traces_at_exit() {
  LiveTraces* live = live_traces.load(std::memory_order_acquire);
  if (!live) return;
  std::lock_guard lock(live->mu);
  for (Trace* t : live->traces) t->write_out_now();
}

void close_traces_in_child() noexcept {
  for (auto& slot : fork_closed) {
    const int v = slot.exchange(0, std::memory_order_relaxed);
    if (v != 0) ::close(v - 1);
  }
  live_traces.store(nullptr, std::memory_order_release);  // the parent's (left as it is)
  start_path_tables_in_child();
}

/// The table this process's traces join (made at the first, with the exit handler).
std::atomic<bool> exit_handler_registered{false};  // not a static's guard, which a fork() could leave held
LiveTraces* live_table() {
  if (!exit_handler_registered.exchange(true, std::memory_order_acq_rel)) std::atexit(&write_out_traces_at_exit);
  LiveTraces* live = live_traces.load(std::memory_order_acquire);
  if (live) return live;
  auto* made = new LiveTraces;  // never freed: exit() reads it after the statics' destructors may have run
  if (live_traces.compare_exchange_strong(live, made, std::memory_order_acq_rel)) return made;
  delete made;
  return live;
}

void check_max_bytes(std::uint64_t max_bytes) {
  if (max_bytes < Trace::min_max_bytes)
    throw std::invalid_argument("ferry: ExecutorOptions::trace_max_bytes must be at least " +
                                std::to_string(Trace::min_max_bytes) + " bytes");
}

[[noreturn]] void refuse(const fs::path& p, const std::string& why) {
  throw std::invalid_argument("ferry: refusing to write the trace to " + p.string() + ": " + why);
}

/// How this process has the file `st` describes open, other than as `self`: "its standard output",
/// "descriptor 7"; "" when it does not. Every descriptor from /proc/self/fd, or the standard three
/// where /proc is not mounted.
std::string opened_elsewhere(int self, const struct stat& st) {
  auto same = [&](int fd) {
    struct stat other {};
    return fd != self && ::fstat(fd, &other) == 0 && other.st_dev == st.st_dev && other.st_ino == st.st_ino;
  };
  auto name = [](int fd) {
    static constexpr const char* standard[] = {"its standard input", "its standard output", "its standard error"};
    return fd >= 0 && fd <= 2 ? std::string(standard[fd]) : "descriptor " + std::to_string(fd);
  };
  std::vector<int> fds;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(dir)) {
      int fd = -1;
      const char* end = e->d_name + std::strlen(e->d_name);
      if (std::from_chars(e->d_name, end, fd).ptr == end && fd != ::dirfd(dir)) fds.push_back(fd);
    }
    ::closedir(dir);
  } else {
    fds = {0, 1, 2};
  }
  std::sort(fds.begin(), fds.end());  // the standard ones first: the likeliest, and named
  for (int fd : fds)
    if (same(fd)) return name(fd);
  return "";
}

/// Whether `st` is the file of an object the dynamic loader loaded (the program's libraries and
/// plugins), by stat of the name each was loaded by: /proc/self/maps shows them too, but not
/// where /proc is not mounted (a chroot, a container), and it gives the superblock's device where
/// stat may give another (btrfs gives each subvolume a device of its own). A name that now names
/// another file (a library replaced by a rename) is not the one loaded, and is not matched.
bool loaded_here(const struct stat& st) {
  struct Search {
    const struct stat& file;
    bool found = false;
  } search{st};
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& s = *static_cast<Search*>(data);
        struct stat loaded {};
        if (info->dlpi_name && info->dlpi_name[0] != '\0' && ::stat(info->dlpi_name, &loaded) == 0 &&
            loaded.st_dev == s.file.st_dev && loaded.st_ino == s.file.st_ino)
          s.found = true;
        return s.found ? 1 : 0;
      },
      &search);
  return search.found;
}

/// Whether this process has the file `st` describes mapped: a library it loaded (libferry.so of
/// a build tree, a plugin; loaded_here), or a file it mapped for its own use, that no descriptor
/// holds any more (/proc/self/maps: its device and inode; not seen where /proc is not mounted).
bool mapped_here(const struct stat& st) {
  if (loaded_here(st)) return true;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  MapsLine m;
  while (std::getline(maps, line))
    if (parse_maps_line(line, m) && m.inode != 0 && m.inode == st.st_ino && m.dev_major == major(st.st_dev) &&
        m.dev_minor == minor(st.st_dev))
      return true;
  return false;
}

/// Opens `p` for writing as the user asked, and nothing else: never through a symbolic link at
/// `p` (one another user planted in /tmp would make us overwrite whatever it points to), nor
/// through another user's link or a directory another user could swap on the way to it
/// (untrusted_way_reason: /tmp/their-link/x.json overwrote x.json wherever the link pointed),
/// only a regular file of this user with no other name. O_TRUNC is not used: a file is
/// truncated only after it passed those checks, was locked and was made mode 0600. An empty Fd
/// when another process writes the file: it holds the lock.
Fd open_trace_file(const fs::path& p) {
  if (std::string why = untrusted_way_reason(p); !why.empty()) refuse(p, why);
  int fd;
  do {
    fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0600);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int err = errno;
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        refuse(p, "it is a symbolic link, which ferry does not follow (remove it, or choose another path)");
      if (!S_ISREG(st.st_mode)) refuse(p, "it is not a regular file");  // a FIFO, a directory
    }
    throw std::invalid_argument("ferry: cannot create the trace file " + p.string() + ": " +
                                std::strerror(err));
  }
  Fd f(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) refuse(p, std::string("fstat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) refuse(p, "it is not a regular file");
  if (st.st_uid != ::geteuid())
    refuse(p, "it belongs to another user (uid " + std::to_string(st.st_uid) + ")");
  if (st.st_nlink > 1) refuse(p, "it has other hard links (writing it would change their content)");
  // An executor of another process may be writing this file (FERRY_TRACE set for two programs
  // run at once): both wrote one file, truncating and overwriting each other's lines. Each writer
  // holds an exclusive lock on its file for its life, taken before the file is changed in any
  // way, so a file locked already is left as it is and the caller takes the next name. Where
  // the file system has no locks (ENOLCK, EINVAL), the file is written as before.
  int locked;
  do {
    locked = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (locked != 0 && errno == EINTR);
  if (locked != 0) {
    if (errno == EWOULDBLOCK) return Fd();
    debug_log("trace: cannot lock %s (%s): written without a lock", p.c_str(), std::strerror(errno));
  }
  // No trace of this process holds it (they hold its lock): a file the program has open for its own
  // use is its input, its output or its log. `ferry map --trace in.jsonl task in.jsonl` emptied
  // the input it had just opened and mapped nothing, with status 0; `--trace out.jsonl ... >
  // out.jsonl` mixed the trace into the results.
  if (std::string use = opened_elsewhere(fd, st); !use.empty())
    refuse(p, "this program has it open already (" + use + "): writing the trace would destroy it");
  // Mapped, with no descriptor left: a library the program loaded. Emptied, it was lost on disk
  // and the program died of SIGBUS at its next page of it (`FERRY_TRACE=build/lib/libferry.so`).
  if (mapped_here(st))
    refuse(p, "this program has it mapped (a library it loaded, or a file it maps): writing the trace "
              "would destroy it");
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  // The trace holds task names and messages: an existing file written over is made private as a
  // new one is (it kept its mode: a file of mode 0666 stayed readable and writable by anyone, a
  // setuid one stayed setuid). On the descriptor, before anything is written to it.
  if (::fchmod(fd, 0600) != 0) refuse(p, std::string("fchmod: ") + std::strerror(errno));
  if (::ftruncate(fd, 0) != 0) refuse(p, std::string("ftruncate: ") + std::strerror(errno));
  return f;
}

/// What reopen_own_file found.
enum class Reopened {
  yes,   // the file this process wrote, emptied, locked and private: write it
  busy,  // it is, but in use for now (another process's lock; the program has it open or mapped;
         // no descriptor or memory to open or read it)
  gone,  // it is no longer that file (removed, replaced, a link, written by another process)
};

/// Opens again, to write a new trace over it, a file this process wrote a trace to: only if it is
/// still that file, the same device and inode, reached without a link (O_NOFOLLOW; the way to
/// it checked as open_trace_file checks it; never created: O_CREAT is not given), a regular file
/// of this user with one name, beginning with the `header` this process wrote (the inode alone
/// does not tell: another process, or a child of fork(), may have written it since, in place), and
/// then as open_trace_file opens one: locked, not open or mapped by the program, made 0600, and
/// emptied before anything is written to it. `failed_size` >= 0: the header's write failed; the
/// file must still be that long (a file no longer than that holds no trace of anyone's).
Reopened reopen_own_file(const fs::path& p, dev_t dev, ino_t ino, const std::string& header, off_t failed_size,
                         Fd& out) {
  if (!untrusted_way_reason(p).empty()) return Reopened::gone;
  int fd;
  do {
    fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    // Gone only when the name shows it is no longer the file (removed, a link or a directory put
    // there, made unwritable by its owner); a want of descriptors or memory is for now: forgotten,
    // the file stayed on disk uncounted and a new name was taken past the bound.
    const int e = errno;
    return e == ENOENT || e == ELOOP || e == ENOTDIR || e == EISDIR || e == ENXIO || e == EACCES || e == EPERM ||
                   e == EROFS
               ? Reopened::gone
               : Reopened::busy;
  }
  Fd f(fd);
  struct stat st {};
  // Still the file this process wrote: its identity, one name, and what it begins with (or, when
  // the header's write failed, its size). Asked before the lock too: a file another process has
  // taken over and is writing is not this process's (it held the rotation as "in use" for as
  // long as that process ran), and again once locked (it may have been written until then).
  auto still_ours = [&]() -> std::optional<Reopened> {
    if (::fstat(fd, &st) != 0) return Reopened::busy;
    if (!S_ISREG(st.st_mode) || st.st_dev != dev || st.st_ino != ino || st.st_uid != ::geteuid() ||
        st.st_nlink != 1)
      return Reopened::gone;
    if (failed_size >= 0) return st.st_size == failed_size ? std::nullopt : std::optional(Reopened::gone);
    std::string head(header.size(), '\0');
    ssize_t n;
    do {
      n = ::pread(fd, head.data(), head.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Reopened::busy;
    if (header.empty() || n != static_cast<ssize_t>(header.size()) || head != header) return Reopened::gone;
    return std::nullopt;
  };
  if (auto r = still_ours()) return *r;
  int locked;
  do {
    locked = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (locked != 0 && errno == EINTR);
  if (locked != 0) return Reopened::busy;
  if (auto r = still_ours()) return *r;
  if (!opened_elsewhere(fd, st).empty() || mapped_here(st)) return Reopened::busy;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  if (::fchmod(fd, 0600) != 0 || ::ftruncate(fd, 0) != 0) return Reopened::busy;
  out = std::move(f);
  return Reopened::yes;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

/// Appends one event's JSON to a string: numbers through to_chars, strings escaped (and any byte
/// that is not UTF-8 replaced, so that every viewer's parser takes the line; DEL, the C1 and
/// bidirectional controls and U+2028/U+2029 written \uXXXX, so that the file shown on a terminal
/// does nothing to it).
class Line {
 public:
  explicit Line(std::string& out) : out_(out) {}
  Line& raw(std::string_view s) {
    out_.append(s);
    return *this;
  }
  template <class N>
  Line& num(N v) {
    char buf[32];  // the longest double, "-1.2345678901234567e-308", and any integer
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, static_cast<std::size_t>(r.ptr - buf));  // (pointer, size): no iterator path
    return *this;
  }
  /// Nanoseconds as microseconds with three decimals.
  Line& us(std::int64_t ns) {
    if (ns < 0) ns = 0;
    num(ns / 1000);
    char frac[4] = {'.', char('0' + ns / 100 % 10), char('0' + ns / 10 % 10), char('0' + ns % 10)};
    out_.append(frac, 4);
    return *this;
  }
  Line& str(std::string_view s, std::size_t limit = SIZE_MAX) {
    out_ += '"';
    std::size_t i = 0;
    while (i < s.size()) {
      if (i >= limit) {
        out_ += "...";
        break;
      }
      // The common case, a run of plain ASCII (a task name), goes in with one append.
      std::size_t run = i;
      while (run < s.size() && run < limit && plain(static_cast<unsigned char>(s[run]))) ++run;
      if (run > i) {
        out_.append(s.data() + i, run - i);
        i = run;
        continue;
      }
      auto c = static_cast<unsigned char>(s[i]);
      switch (c) {
        case '"': out_ += "\\\""; ++i; continue;
        case '\\': out_ += "\\\\"; ++i; continue;
        case '\n': out_ += "\\n"; ++i; continue;
        case '\t': out_ += "\\t"; ++i; continue;
        case '\r': out_ += "\\r"; ++i; continue;
        default: break;
      }
      if (c < 0x20 || c == 0x7F) {
        static constexpr char hex[] = "0123456789abcdef";
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        out_.append(u, 6);
        ++i;
      } else if (std::size_t n = utf8_length(s, i)) {
        if (escaped_on_terminal(s, i, n)) {
          // A C1 control, a bidirectional control, U+2028 or U+2029 as \uXXXX: the same text
          // once parsed, but `cat` or `tail -f` of the file sends no escape sequence nor reordering
          // to a terminal (as the ferry command's JSON, json::printable).
          unsigned code = n == 2 ? c & 0x1Fu : c & 0x0Fu;
          for (std::size_t k = 1; k < n; ++k) code = code << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
          static constexpr char hex[] = "0123456789abcdef";
          char u[6] = {'\\', 'u', hex[code >> 12 & 15], hex[code >> 8 & 15], hex[code >> 4 & 15], hex[code & 15]};
          out_.append(u, 6);
        } else {
          out_.append(s.substr(i, n));
        }
        i += n;
      } else {
        out_ += "\\ufffd";
        ++i;
      }
    }
    out_ += '"';
    return *this;
  }

 private:
  static bool plain(unsigned char c) { return c >= 0x20 && c < 0x7F && c != '"' && c != '\\'; }
  std::string& out_;
};

}  // namespace

Trace::ErrorText Trace::describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return {error_type_name(typeid(e)), e.what()};
  } catch (...) {
    return {"unknown", ""};
  }
}

std::type_index Trace::error_type(const std::exception_ptr& error) {
  if (!error) return typeid(void);
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return typeid(e);
  } catch (...) {
    return typeid(void);
  }
}

std::string Trace::error_type_name(std::type_index type) {
  if (type == typeid(void)) return "unknown";
  std::string name = detail::demangle(type.name());
  if (name.rfind("ferry::", 0) == 0) name.erase(0, 7);
  return name;
}

namespace {

/// A file opened for a trace, and the name it was claimed by.
struct Opened {
  Fd fd;
  Claim claim;
  bool reused = false;
};

// A numbered name is ferry's choice, not the program's: one that is refused (another user's
// NAME.3.EXT in /tmp, a link there, a file the program has open) is passed over as a locked one
// is. It ended the trace: from FERRY_TRACE, every later executor of the process tried that name
// again and ran without one; from the option, a second executor given the path threw. At most
// max_refused in all, for a directory where every name is refused.
constexpr unsigned max_refused = 16;

/// The first name of `path` (the program's: ExecutorOptions::trace) no executor of this process
/// writes, and no other process has locked.
Opened open_named(const fs::path& path) {
  unsigned refused = 0;
  for (unsigned from = 1;;) {
    Claim claim = claim_path(path, from);
    Fd fd;
    try {
      fd = open_trace_file(claim.path);
    } catch (const std::invalid_argument& e) {
      release_path(claim.key);
      if (claim.number == 1 || ++refused >= max_refused) throw;
      debug_log("trace: %s (the next name is tried)", e.what());
      from = claim.number + 1;
      continue;
    } catch (...) {
      release_path(claim.key);
      throw;
    }
    if (fd) return {std::move(fd), std::move(claim)};
    release_path(claim.key);
    from = claim.number + 1;
  }
}

/// The file of FERRY_TRACE's `path` this trace writes (claim_numbered): a new name while the
/// process has fewer than `files`, else the oldest of them it may write over.
Opened open_numbered(const fs::path& path, const std::string& wanted_key, unsigned files) {
  unsigned refused = 0;
  std::set<unsigned> passed;  // files of this process in use elsewhere for now
  for (;;) {
    std::optional<NumberedClaim> c = claim_numbered(path, wanted_key, files, passed);
    if (!c) throw Trace::NoFreeFile("all " + std::to_string(files) +
                                   " of its files (FERRY_TRACE_FILES) are in use: executors of this program "
                                   "still running are writing them (or the program has them open, or they could "
                                   "not be opened for now)");
    Claim& claim = c->claim;
    Fd fd;
    if (c->reuse) {
      const Reopened r = reopen_own_file(claim.path, c->dev, c->ino, c->header, c->failed_size, fd);
      if (r == Reopened::yes) return {std::move(fd), std::move(claim), true};
      release_path(claim.key);
      if (r == Reopened::busy) {
        passed.insert(claim.number);
      } else {
        // Not this process's file any more: it is no longer counted, and a new name is taken.
        debug_log("trace: %s is no longer the file this process wrote: it is left as it is", claim.path.c_str());
        forget_numbered(wanted_key, claim.number);
      }
      continue;
    }
    try {
      fd = open_trace_file(claim.path);
    } catch (const std::invalid_argument& e) {
      forget_numbered(wanted_key, claim.number);
      release_path(claim.key);
      if (claim.number == 1) unclaim_first_number(wanted_key);
      if (claim.number == 1 || ++refused >= max_refused) throw;
      debug_log("trace: %s (the next name is tried)", e.what());
      continue;
    } catch (...) {
      forget_numbered(wanted_key, claim.number);
      release_path(claim.key);
      throw;
    }
    if (fd) return {std::move(fd), std::move(claim)};
    // Another process is writing it: its file, not one of this process's.
    forget_numbered(wanted_key, claim.number);
    release_path(claim.key);
  }
}

}  // namespace

Trace::Trace(const fs::path& path, std::uint64_t max_bytes, const Header& header, unsigned files)
    : pid_(::getpid()),
      start_(Clock::now()),
      start_unix_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count()),
      max_bytes_(max_bytes) {
  check_max_bytes(max_bytes);
  const std::string wanted_key = files > 0 ? path_key(path) : std::string();
  Opened opened = files > 0 ? open_numbered(path, wanted_key, files) : open_named(path);
  fd_ = std::move(opened.fd);
  path_ = std::move(opened.claim.path);
  registered_ = std::move(opened.claim.key);
  const unsigned number = opened.claim.number;
  // Until the header is recorded, a throw (no memory) would leave the name claimed for good and
  // the file counted but never written over: the name is given back, the file no longer counted.
  try {
    if (path_ != path)
      debug_log("trace: %s is taken (another executor is writing it, or an earlier one of FERRY_TRACE wrote it, "
                "or a name before this one was refused); writing %s", path.c_str(), path_.c_str());
    const std::int64_t unix_us = start_unix_ns_ / 1000;
    Started numbered;
    if (files > 0) {
      struct stat st {};
      if (::fstat(fd_.get(), &st) != 0) st = {};
      numbered = start_numbered(wanted_key, number, st, opened.reused, unix_us);
    }
    if (numbered.first_reuse) {
      // Once per path: from now on every executor writes over a file, and one line says it.
      const std::string shown = terminal_text(
          "FERRY_TRACE has made its " + std::to_string(files) + " files (FERRY_TRACE_FILES): each executor's " +
          "trace now writes over the oldest of them, starting with " + path_.string(), "\\n");
      std::fprintf(stderr, "ferry: %s (the last %u traces are kept)\n", shown.c_str(), files);
    }
    std::string head;
    Line l(head);
    l.raw("[\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":").num(pid_)
        .raw(",\"tid\":0,\"ts\":0,\"args\":{\"name\":\"ferry executor\"}},\n");
    l.raw("{\"ph\":\"M\",\"name\":\"ferry\",\"pid\":").num(pid_)
        .raw(",\"tid\":0,\"ts\":0,\"args\":{\"version\":1,\"started_unix_us\":").num(unix_us)
        .raw(",\"backend\":").str(header.backend)
        .raw(",\"max_workers\":").num(header.max_workers)
        .raw(",\"host\":").str(host_name());
    // FERRY_TRACE's files: which run of the program wrote this one, and in what order (the names
    // wrap round; a later run writes over the first names and leaves the others).
    if (files > 0)
      l.raw(",\"sequence\":").num(numbered.sequence).raw(",\"run_started_unix_us\":").num(numbered.run_started_unix_us);
    l.raw("}},\n");
    // Written now, before any event: a host that dies at once still leaves a trace that loads.
    write_out(head);
    if (files > 0) {
      struct stat st {};
      const off_t failed_size = !write_failed_ ? -1 : ::fstat(fd_.get(), &st) == 0 ? st.st_size : 0;
      record_numbered_header(wanted_key, number, head, failed_size);
    }
    accepted_ = head.size();
  } catch (...) {
    release_path(registered_);
    if (files > 0) forget_numbered(wanted_key, number);
    throw;
  }
  // A constructor that throws from here (no memory, no thread) leaves no slot naming the
  // descriptor it closes, no trace in the table, and its path free for the next executor.
  (void)trace_fork_handler;
  fork_slot_ = hold_for_fork(fd_.get());
  try {
    for (std::string* b : {&pending_, &spare_}) {
      b->resize(buffer_bytes);  // zero-filled: every page faulted in now, not under an event
      b->clear();               // the capacity stays
    }
    LiveTraces* live = live_table();
    {
      std::lock_guard lock(live->mu);
      live->traces.insert(this);
    }
    live_ = live;
    writer_ = std::thread([this] {
      ::pthread_setname_np(::pthread_self(), "ferry-trace");
      run_writer();
    });
  } catch (...) {
    leave_live_table();
    release_for_fork(fork_slot_);
    release_path(registered_);
    throw;
  }
}

void Trace::leave_live_table() noexcept {
  auto* live = static_cast<LiveTraces*>(live_);
  live_ = nullptr;
  // Not in a child of fork(): the table and its lock are the parent's.
  if (!live || live != live_traces.load(std::memory_order_acquire)) return;
  std::lock_guard lock(live->mu);
  live->traces.erase(this);
}

void Trace::write_out_now() {
  std::lock_guard io(io_mu_);
  std::string out;
  {
    std::lock_guard lock(mu_);
    out = pending_;  // a copy: pending_ keeps its buffer
    pending_.clear();
  }
  write_out(out);
}

std::unique_ptr<Trace> Trace::from_environment(const fs::path& path, std::uint64_t max_bytes,
                                               const Header& header, unsigned files) {
  check_max_bytes(max_bytes);
  files = std::max(files, 1u);
  try {
    // The next one takes the next name, whether this one is still open or not: executors made
    // one after another each wrote the path over (two at once already took two names). Up to
    // `files` names: then the oldest is written over.
    return std::make_unique<Trace>(path, max_bytes, header, files);
  } catch (const NoFreeFile& e) {
    {
      std::lock_guard lock(paths_mu);
      NumberedFiles& mine = numbered_files(path_key(path));
      if (std::exchange(mine.said_busy, true)) return nullptr;
    }
    const std::string shown = terminal_text("FERRY_TRACE is ignored for an executor: " + std::string(e.what()),
                                            "\\n");
    std::fprintf(stderr, "ferry: %s (that executor runs without a trace)\n", shown.c_str());
    return nullptr;
  } catch (const std::invalid_argument& e) {
    // Once per path: a program may make an executor a call (get_reusable_executor with new
    // options, a library's own pool), and one line says it all.
    {
      std::lock_guard lock(paths_mu);
      if (!path_tables().warned.insert(path.string()).second) return nullptr;
    }
    std::string_view why = e.what();
    if (why.rfind("ferry: ", 0) == 0) why.remove_prefix(7);
    // The path is the user's, but may hold anything: shown as a terminal may show it, on one line.
    const std::string shown = terminal_text(std::string("FERRY_TRACE is ignored: ") + std::string(why), "\\n");
    std::fprintf(stderr, "ferry: %s (the program runs without a trace)\n", shown.c_str());
    return nullptr;
  }
}

Trace::~Trace() {
  if (writer_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_one();
    writer_.join();
  }
  leave_live_table();
  release_for_fork(fork_slot_);
  release_path(registered_);
}

// ---- writing -------------------------------------------------------------------------------------

void Trace::write_out(const std::string& bytes) {
  if (write_failed_) return;
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd_.get(), bytes.data() + done, bytes.size() - done,
                         static_cast<off_t>(written_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A full disk, a quota, RLIMIT_FSIZE: the trace ends here, the pool goes on.
      write_failed_ = true;
      const int error = n < 0 ? errno : ENOSPC;
      // Said once on stderr too: a first write that fails left an empty file (no room even for
      // the `trace truncated` line) and nothing said why.
      const std::string shown = terminal_text("writing the trace " + path_.string() + " failed: " +
                                              std::strerror(error), "\\n");
      std::fprintf(stderr, "ferry: %s (the trace ends there; the program goes on)\n", shown.c_str());
      end_after_failed_write(bytes, done, error);
      return;
    }
    done += static_cast<std::size_t>(n);
  }
  written_ += bytes.size();
}

void Trace::end_after_failed_write(const std::string& bytes, std::size_t done, int error) {
  // A line cut in the middle made the whole file unreadable to the viewers, which load one that
  // ends after whole lines (the closing `]` is optional). Cut back to the last whole line (freeing
  // blocks always works), then say why the trace ends there, earlier still if that does not fit.
  std::string tail;
  tail.reserve(256);
  Line(tail).raw("{\"ph\":\"i\",\"s\":\"g\",\"name\":\"trace truncated\",\"pid\":").num(pid_)
      .raw(",\"tid\":0,\"ts\":").us(now()).raw(",\"args\":{\"error\":").str(std::strerror(error))
      .raw("}}\n]\n");
  std::size_t keep = done;
  for (int attempt = 0; attempt < 8; ++attempt) {
    // The whole lines among the first `keep` bytes (up to the last newline in them); on a retry,
    // one line fewer.
    const std::size_t from = attempt == 0 ? keep : keep - 1;
    const std::size_t nl = from == 0 ? std::string::npos : bytes.rfind('\n', from - 1);
    keep = nl == std::string::npos ? 0 : nl + 1;
    const auto end = static_cast<off_t>(written_ + keep);
    if (::ftruncate(fd_.get(), end) != 0) return;
    // Nothing kept (the header's own write failed): the array opens first.
    if (end == 0 && tail.front() != '[') tail.insert(0, "[\n");
    ssize_t n;
    do {
      n = ::pwrite(fd_.get(), tail.data(), tail.size(), end);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(tail.size())) return;
    (void)::ftruncate(fd_.get(), end);  // no room for it here: whole lines at least
    if (keep == 0) return;
  }
}

void Trace::run_writer() {
  std::string out = std::move(spare_);  // the two buffers take turns; neither is reallocated
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    // Gather what comes in the next period: one write for many events, and the threads that
    // emit them wake nobody but this thread, at most once a period.
    if (!stop_) wake_.wait_for(lock, flush_period, [&] { return stop_ || pending_.size() >= flush_bytes; });
    // io_mu_ before mu_, as write_out_now takes them: the lines go out in the order they came.
    lock.unlock();
    bool last;
    {
      std::lock_guard io(io_mu_);
      lock.lock();
      out.swap(pending_);
      last = stop_;
      lock.unlock();
      write_out(out);
    }
    out.clear();
    lock.lock();
    if (last && pending_.empty()) return;
  }
}

bool Trace::fits(std::size_t bytes) {
  if (accepted_ + bytes + closing_reserve > max_bytes_) return false;
  accepted_ += bytes;
  return true;
}

void Trace::truncate(std::int64_t ts) {
  truncated_ = true;
  const std::size_t before = pending_.size();
  Line(pending_).raw("{\"ph\":\"i\",\"s\":\"g\",\"name\":\"trace truncated\",\"pid\":").num(pid_)
      .raw(",\"tid\":0,\"ts\":").us(ts).raw(",\"args\":{\"max_bytes\":").num(max_bytes_).raw("}},\n");
  accepted_ += pending_.size() - before;  // within closing_reserve
}

// ---- events --------------------------------------------------------------------------------------

Trace::Batch::Batch(Trace& t) : t_(t), lock_(t.mu_), size_before_(t.pending_.size()) {}

Trace::Batch::~Batch() {
  const std::size_t size = t_.pending_.size();
  // The writer waits for the first line after a write, then for a full buffer: wake it then only.
  const bool wake = (size_before_ == 0 && size > 0) || (size_before_ < flush_bytes && size >= flush_bytes);
  lock_.unlock();
  if (wake) t_.wake_.notify_one();
}

template <class Format>
void Trace::Batch::emit(std::int64_t ts, Format&& format) {
  if (t_.closed_ || t_.truncated_) return;
  const std::size_t mark = t_.pending_.size();
  format();
  // The lines of one event go in together or not at all.
  if (t_.fits(t_.pending_.size() - mark)) return;
  t_.pending_.resize(mark);
  t_.truncate(ts);
}

void Trace::Batch::queue_begin(const CallRef& call, std::int64_t ts) {
  emit(ts, [&] {
    Line(t_.pending_).raw("{\"ph\":\"b\",\"cat\":\"queue\",\"name\":").str(call.task, max_task_name)
        .raw(",\"id\":").num(call.id).raw(",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":0,\"ts\":").us(ts).raw(",\"args\":{\"call\":").num(call.id).raw("}},\n");
  });
}

void Trace::Batch::slice(const CallRef& call, const Slice& s, const ErrorText* error) {
  const std::int64_t ts = s.end;
  emit(ts, [&] {
    Line l(t_.pending_);
    l.raw("{\"ph\":\"e\",\"cat\":\"queue\",\"name\":").str(call.task, max_task_name).raw(",\"id\":").num(call.id)
        .raw(",\"pid\":").num(t_.pid_).raw(",\"tid\":0,\"ts\":").us(s.start).raw("},\n");
    l.raw("{\"ph\":\"X\",\"cat\":\"task\",\"name\":").str(call.task, max_task_name).raw(",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":").num(s.tid).raw(",\"ts\":").us(s.start).raw(",\"dur\":").us(s.end - s.start)
        .raw(",\"args\":{\"call\":").num(call.id).raw(",\"items\":").num(s.items);
    if (s.first_input != SIZE_MAX) l.raw(",\"first_input\":").num(s.first_input);
    l.raw(",\"arg_bytes\":").num(s.arg_bytes).raw(",\"result_bytes\":").num(s.result_bytes);
    if (error) l.raw(",\"error\":").str(error->type).raw(",\"message\":").str(error->message, max_message);
    l.raw("}},\n");
  });
}

void Trace::Batch::call_ended(const CallRef& call, const ErrorText& error, std::int64_t ts) {
  emit(ts, [&] {
    Line l(t_.pending_);
    l.raw("{\"ph\":\"e\",\"cat\":\"queue\",\"name\":").str(call.task, max_task_name).raw(",\"id\":").num(call.id)
        .raw(",\"pid\":").num(t_.pid_).raw(",\"tid\":0,\"ts\":").us(ts).raw("},\n");
    l.raw("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"call ended\",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":0,\"ts\":").us(ts).raw(",\"args\":{\"call\":").num(call.id)
        .raw(",\"task\":").str(call.task, max_task_name).raw(",\"error\":").str(error.type)
        .raw(",\"message\":").str(error.message, max_message).raw("}},\n");
  });
}

namespace {
void track_name(Line& l, pid_t host_pid, std::uint64_t tid, int pid, std::string_view host, int rank,
                std::int64_t ts) {
  l.raw("{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":").num(host_pid).raw(",\"tid\":").num(tid)
      .raw(",\"ts\":").us(ts).raw(",\"args\":{\"name\":");
  std::string name;
  if (rank >= 0) {
    name = "rank " + std::to_string(rank) + " @ " + (host.empty() ? std::string("?") : std::string(host)) +
           " (pid " + (pid > 0 ? std::to_string(pid) : std::string("?")) + ")";
  } else {
    name = "worker " + (pid > 0 ? std::to_string(pid) : std::string("?"));
  }
  l.str(name).raw("}},\n");
}
}  // namespace

void Trace::Batch::worker_start(std::uint64_t tid, int pid, std::string_view host, int rank, std::int64_t ts) {
  emit(ts, [&] {
    Line l(t_.pending_);
    track_name(l, t_.pid_, tid, pid, host, rank, ts);
    l.raw("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"worker start\",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":").num(tid).raw(",\"ts\":").us(ts).raw(",\"args\":{\"pid\":").num(pid)
        .raw(",\"host\":").str(host);
    if (rank >= 0) l.raw(",\"rank\":").num(rank);
    l.raw("}},\n");
  });
}

void Trace::Batch::name_track(std::uint64_t tid, int pid, int rank) {
  const std::int64_t ts = t_.now();
  emit(ts, [&] {
    Line l(t_.pending_);
    track_name(l, t_.pid_, tid, pid, {}, rank, ts);
  });
}

void Trace::Batch::worker_exit(std::uint64_t tid, std::string_view reason, std::int64_t ts) {
  emit(ts, [&] {
    Line(t_.pending_).raw("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"worker exit\",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":").num(tid).raw(",\"ts\":").us(ts).raw(",\"args\":{\"reason\":").str(reason)
        .raw("}},\n");
  });
}

void Trace::Batch::worker_crash(std::uint64_t tid, std::string_view reason, std::string_view error,
                                std::int64_t ts) {
  emit(ts, [&] {
    Line l(t_.pending_);
    l.raw("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"worker crash\",\"pid\":").num(t_.pid_)
        .raw(",\"tid\":").num(tid).raw(",\"ts\":").us(ts).raw(",\"args\":{\"reason\":").str(reason);
    if (!error.empty()) l.raw(",\"error\":").str(error);
    l.raw("}},\n");
  });
}

void Trace::Batch::counters(std::size_t queued, std::size_t running, std::size_t workers, std::int64_t ts) {
  if (t_.closed_ || t_.truncated_) return;
  auto write = [&](const Counters& c, std::int64_t at) {
    emit(at, [&] {
      Line(t_.pending_).raw("{\"ph\":\"C\",\"name\":\"pool\",\"pid\":").num(t_.pid_)
          .raw(",\"tid\":0,\"ts\":").us(at).raw(",\"args\":{\"queued\":").num(c.queued)
          .raw(",\"running\":").num(c.running).raw(",\"workers\":").num(c.workers).raw("}},\n");
    });
    t_.written_counters_ = c;
    t_.counters_at_ = at;
  };
  // A change held back goes out first, at its own time, once its period is over: the last of a
  // burst is the burst's end (twenty calls submitted within a millisecond: queued 1 was written,
  // then nothing until the first result, and the queue never showed the twenty).
  if (t_.latest_counters_ != t_.written_counters_ && ts - t_.counters_at_ >= counters_period_ns)
    write(t_.latest_counters_, std::max(t_.latest_at_, t_.counters_at_));
  t_.latest_counters_ = {queued, running, workers};
  t_.latest_at_ = ts;
  if (t_.latest_counters_ == t_.written_counters_ || ts - t_.counters_at_ < counters_period_ns) return;
  write(t_.latest_counters_, ts);
}

void Trace::close(const ExecutorStats& s) {
  {
    const std::int64_t ts = now();
    Batch b(*this);
    if (closed_) return;
    // The counters' last change, at its own time, if the once-per-millisecond rule held it back.
    counters_at_ = INT64_MIN / 2;
    b.counters(latest_counters_.queued, latest_counters_.running, latest_counters_.workers, ts);
    closed_ = true;
    // The closing line goes in whatever the cap: closing_reserve kept room for it.
    Line l(pending_);
    l.raw("{\"ph\":\"i\",\"s\":\"g\",\"name\":\"stats\",\"pid\":").num(pid_).raw(",\"tid\":0,\"ts\":").us(ts)
        .raw(",\"args\":{\"submitted\":").num(s.submitted).raw(",\"queued\":").num(s.queued)
        .raw(",\"running\":").num(s.running).raw(",\"completed\":").num(s.completed)
        .raw(",\"failed\":").num(s.failed).raw(",\"failed_by_type\":{");
    bool first = true;
    for (const auto& [type, n] : s.failed_by_type) {
      l.raw(first ? "" : ",").str(type, 100).raw(":").num(n);
      first = false;
    }
    l.raw("},\"workers_alive\":").num(s.workers_alive).raw(",\"workers_started\":").num(s.workers_started)
        .raw(",\"workers_crashed\":").num(s.workers_crashed).raw(",\"workers_killed\":").num(s.workers_killed)
        .raw(",\"workers_recycled\":").num(s.workers_recycled)
        .raw(",\"recycled_by_reason\":{");
    first = true;
    for (const auto& [reason, n] : s.recycled_by_reason) {
      l.raw(first ? "" : ",").str(reason, 100).raw(":").num(n);
      first = false;
    }
    l.raw("},\"workers_stopped\":").num(s.workers_stopped).raw(",\"bytes_sent\":").num(s.bytes_sent)
        .raw(",\"bytes_received\":").num(s.bytes_received).raw(",\"uptime\":").num(s.uptime.count())
        .raw("}}\n]\n");
    stop_ = true;
  }
  wake_.notify_one();
  writer_.join();
  leave_live_table();
  release_for_fork(fork_slot_);  // before the descriptor's number may be given to another file
  fd_.reset();
}

}  // namespace ferry::detail
