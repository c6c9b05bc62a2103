// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP: compile a recorded function body into a cached plugin, once per cache key.
//
// Cache layout ($FERRY_CACHE_DIR, private 0700, trust-checked with its whole way):
//   plugins/wrap-<key>-<h>.so  the plugin, <h> from its content (plugins/, 0700: the one part of
//                    the cache a sandboxed worker may read; wrap_plugin_dir)
//   wrap-<key>.lock  flock: one build per entry
//   wrap-<key>.sum   "<BLAKE2b of the .so> <size>", then the record of what its build read
//   wrap-<key>.cpp   the translation unit
//   wrap-<key>.err   the record of what a failed build read, then the compiler's words: the same
//                    key fails at once next time, with the same UnresolvableTaskError, instead
//                    of recompiling, while those files hold the same bytes
//   prelude-<p>.hpp(.gch|.pch)             the precompiled prelude, per compiler, flags and headers
//   prelude-<p>.hpp.inputs, prelude-<p>.lock  what it read (checked before each use); its flock
//   Lock files are 0200: a task given the cache to read (Sandbox::read) cannot open one to hold it.
// <key> is a BLAKE2b key over source, name, signature, compiler identity, flags, includes,
// libraries, ferry's version/ABI and the prelude's key <p> (which covers the content of every
// ferry header), and the current directory when a flag names a relative path. The plugin is
// wrap-<key>-<first 16 hex of its BLAKE2b>.so, renamed in before the .sum that names it; a plugin
// whose bytes no longer match the .sum, or one of whose recorded inputs changed, is rebuilt, never
// loaded.
//
// Everything run, included or loaded here passes the one trust check (platform/trust.hpp): the
// compiler, ferry's headers, a shipped precompiled prelude, the cache directory and its entries.
#include "wrap/wrap_compiler.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <ferry/errors.hpp>
#include <ferry/ferry.hpp>

#include "wire/channel.hpp"
#include "platform/config.hpp"
#include "platform/hash.hpp"
#include "platform/paths.hpp"
#include "platform/trust.hpp"
#include "plugins/load_dependencies.hpp"
#include "wrap/compiler_inputs.hpp"
#include "platform/debug.hpp"
#include "platform/fd.hpp"
#include "platform/spawn.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

// ---- state of this process, anew in a fork()ed child ---------------------------------------------

/// A leaked T of this process's own: made anew in a fork()ed child, whose copy of the parent's
/// may be locked by a thread the child does not have (a build's thread hashing ferry's headers,
/// precompiling the prelude or probing the linker: the child's first wrap waited for ever).
/// T's default state is a fresh one.
template <class T>
class ForkLocal {
 public:
  T& get() {
    const std::uint64_t generation = fork_generation();
    Slot* s = slot_.load(std::memory_order_acquire);
    while (!s || s->generation != generation) {
      auto* fresh = new Slot{generation, {}};  // NOLINT: leaked, as the one it replaces
      if (slot_.compare_exchange_strong(s, fresh, std::memory_order_acq_rel)) return fresh->value;
      delete fresh;  // another thread of this process made it first: s is now its
    }
    return s->value;
  }

 private:
  struct Slot {
    std::uint64_t generation;
    T value;
  };
  std::atomic<Slot*> slot_{nullptr};
};

// ---- registry ----------------------------------------------------------------------------------

/// A registered site with its own copy of the strings: a library unloaded (dlclose) takes its
/// string literals with it, and another loaded at the same address registers its own site there.
struct OwnedSite {
  std::string name, source, file, signature;
  WrapSite site{};
};

struct Registry {
  std::mutex mu;
  std::unordered_map<const void*, const WrapSite*> sites;
  /// Never freed, nor moved: find_wrap's callers keep the pointer after the lock (a site
  /// replaced by another library's at the same address stays valid for them).
  std::deque<OwnedSite> owned;
};
Registry& registry() {
  static auto* r = new Registry;  // NOLINT: leaked, as Builds: build threads outlive static destruction
  return *r;
}

// ---- options -----------------------------------------------------------------------------------

std::mutex options_mu;
std::optional<WrapOptions> user_options;

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

/// Directory holding <ferry/task.hpp>, relative to libferry (install and build trees alike).
fs::path ferry_include_dir() {
  fs::path lib = library_directory();
  if (lib.empty()) return {};
  std::error_code ec;
  return fs::weakly_canonical(lib / FERRY_WRAP_INCLUDE_RELATIVE, ec);
}

/// Key of the prelude's sources: every file under <include>/ferry, by relative path and content.
/// (A header edited without a new ferry version must not reuse a stale precompiled prelude.)
std::string headers_key(const fs::path& include_dir) {
  // Leaked, as Running and Builds below: build threads call this and may outlive static
  // destruction (a map destroyed under a running build was a use after free at exit). Anew in a
  // fork()ed child: a build's thread of the parent may have held the lock.
  struct Known {
    std::mutex mu;
    std::map<fs::path, std::string> keys;
  };
  static ForkLocal<Known> state;
  Known& k = state.get();
  std::lock_guard lock(k.mu);
  auto* known = &k.keys;
  if (auto it = known->find(include_dir); it != known->end()) return it->second;
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(include_dir / "ferry", ec), end; !ec && it != end;
       it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(it->path());
  std::sort(files.begin(), files.end());
  ContentHasher h;
  for (const auto& f : files)
    h.field(f.lexically_relative(include_dir).string()).field(file_content_key(f).value_or("?"));
  return (*known)[include_dir] = h.hex();
}

/// "<content key> <size>" of a file.
std::optional<std::string> file_digest(const fs::path& file) {
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  auto key = file_content_key(file);
  if (ec || !key) return std::nullopt;
  return *key + " " + std::to_string(size);
}

std::string read_file(const fs::path& file, std::size_t max = 1 << 20) {
  std::ifstream in(file, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > max) s.resize(max);
  return s;
}

/// Writes `file` (in the private cache directory) with mode 0600 whatever the umask: an entry
/// that the umask left group-writable would fail the trust check, and be rebuilt every time.
/// False with errno set when it cannot be written whole.
bool write_file(const fs::path& file, const std::string& content) {
  int error = 0;
  {
    Fd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd && ::fchmod(fd.get(), 0600) == 0 && write_all(fd.get(), content)) return true;
    error = errno;
  }
  errno = error;
  return false;
}

/// What the user is told when `file` of the cache cannot be written (errno `error`): the reason,
/// and a fix that fits it (a full disk is not an unwritable directory).
std::string cannot_write(const fs::path& file, int error) {
  const bool full = error == ENOSPC || error == EDQUOT;
  return "cannot write " + file.string() + ": " + std::strerror(error) +
         (full ? ". Free space there, or set FERRY_CACHE_DIR to another directory"
               : ". Set FERRY_CACHE_DIR to a writable directory");
}

/// Why the file system of `dir` counts as full (under 1 MiB free), or "": a compiler or linker
/// that could not write its list of what it read whole may still exit 0 (GNU ld does), and the
/// list cut short was refused as though another user had written it.
std::string full_file_system(const fs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return {};
  const std::uint64_t free_bytes = std::uint64_t{st.f_bavail} * st.f_frsize;
  if (free_bytes >= (std::uint64_t{1} << 20)) return {};
  return "the file system of " + dir.string() + " is full (" + std::to_string(free_bytes) + " bytes free)";
}

/// First lines of a compiler's output.
std::string head_lines(const std::string& text, int lines = 25) {
  std::size_t at = 0;
  for (int i = 0; i < lines && at != std::string::npos; ++i) {
    at = text.find('\n', at);
    if (at != std::string::npos) ++at;
  }
  return at == std::string::npos ? text : text.substr(0, at) + "[...]\n";
}

// ---- what the compiler reads --------------------------------------------------------------------

/// What the compiler (`linker_output` nullopt) or the linker (writing `linker_output`) listed in
/// `list`; nullopt, with `why` said, when the list cannot be read, is cut by the size bound or does
/// not parse.
std::optional<std::vector<std::string>> listed_inputs(const fs::path& list, const std::optional<std::string>& linker_output,
                                                      std::string& why) {
  constexpr std::size_t max_list = std::size_t{64} << 20;
  const std::string text = read_file(list, max_list + 1);
  const char* who = linker_output ? "the linker" : "the compiler";
  auto inputs = text.size() > max_list ? std::nullopt
                : linker_output        ? linker_list_inputs(text, *linker_output)
                                       : compiler_list_inputs(text);
  if (!inputs)
    why = std::string(who) + "'s list of what it read (" + list.string() + ") " +
          (text.size() > max_list ? "is larger than ferry reads" : "cannot be parsed");
  return inputs;
}

/// Why what the compiler (`linker_output` nullopt) or the linker (writing `linker_output`) listed
/// in `list` could have been written by another user: "" when all of it passes the trust check
/// (untrusted_input; `scratch` is the private directory the compiler gets as TMPDIR). A list that
/// cannot be read, is cut by the size bound or does not parse is a reason. What it listed is added
/// to `read`.
std::string judged_list(const fs::path& list, const std::optional<std::string>& linker_output, const fs::path& cwd,
                        const fs::path& scratch, std::vector<std::string>* read = nullptr) {
  std::string why;
  auto inputs = listed_inputs(list, linker_output, why);
  if (!inputs) return why;
  why = untrusted_input(*inputs, cwd, scratch);
  if (!why.empty()) return why + " (read by " + (linker_output ? "the linker" : "the compiler") + ")";
  if (read) read->insert(read->end(), inputs->begin(), inputs->end());
  return {};
}

/// Whether `file` (as listed; relative to `cwd`) lies directly in the directory `dir`.
bool in_directory(const std::string& file, const fs::path& cwd, const fs::path& dir) {
  const fs::path path = fs::path(file).is_absolute() ? fs::path(file) : cwd / file;
  struct stat a {}, b {};
  return path.has_parent_path() && ::stat(path.parent_path().c_str(), &a) == 0 && ::stat(dir.c_str(), &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/// The arguments that make the compiler list what it reads into `compile_deps`, and the linker
/// (when `link_deps` is not empty) into `link_deps`. The linker's option goes through -Xlinker,
/// whole: gcc splits a -Wl, argument at every comma, and a cache directory with a comma in its
/// name failed every wrap (ld wrote its list to a file named by the part after the comma).
std::vector<std::string> listing_flags(const fs::path& compile_deps, const fs::path& link_deps) {
  std::vector<std::string> out = {"-MD", "-MF", compile_deps.string()};
  if (!link_deps.empty()) out.insert(out.end(), {"-Xlinker", "--dependency-file=" + link_deps.string()});
  return out;
}

/// `env` with TMPDIR set to `dir`: the compiler's temporary files (the object it hands the
/// linker, listed as an input) go in the private cache directory, where a missing one is one
/// nobody else could have created.
std::vector<std::string> with_tmpdir(std::vector<std::string> env, const fs::path& dir) {
  std::erase_if(env, [](const std::string& e) { return e.starts_with("TMPDIR="); });
  env.push_back("TMPDIR=" + dir.string());
  return env;
}

// ---- running the compiler ----------------------------------------------------------------------

std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_string(::getpid()) + "." + std::to_string(counter++);
}


struct RunResult {
  bool started = false;
  int spawn_errno = 0;
  bool ok = false;
  bool interrupted = false;  // killed: timed out, or the process is exiting
  bool timed_out = false;    // killed: timed out
  std::string output;
};

/// Compilers running for background builds. Builds run on detached threads, so that a process
/// never waits for them at exit (a program whose work took 0.13 s once took 6.4 s to exit,
/// joining a build it no longer needed); at exit the compilers are killed and their temporary
/// files removed. Never destroyed: detached threads may touch it while the process exits.
/// A compiler is killed with what it started (kill_process_tree): killing the driver alone left
/// cc1plus running (for ever on a blocked input), writing its ccXXXX.s and the output into the
/// cache. It stays in the application's process group, so a ^C at the terminal ends it as well.
struct Running {
  struct Child {
    std::vector<fs::path> files;  // temporary files it writes
    fs::path scratch;             // its TMPDIR, removed with what is in it
  };
  std::mutex mu;
  bool exiting = false;
  pid_t owner = ::getpid();  // a forked child that exits must not kill its parent's compilers
  std::map<pid_t, Child> children;
};
Running& running() {
  // Deliberately leaked, see above; anew in a fork()ed child (whose compilers are its own, and
  // whose copy of the lock a thread of the parent may have held).
  static ForkLocal<Running> r;
  return r.get();
}

/// Kills the compiler `pid` and every process it started. Its pid is not reaped yet, so it
/// cannot be another's.
void kill_compiler(pid_t pid) noexcept { kill_process_tree(pid); }

void remove_temporaries(const Running::Child& c) noexcept {
  for (const auto& f : c.files) ::unlink(f.c_str());
  if (!c.scratch.empty()) {
    std::error_code ec;
    fs::remove_all(c.scratch, ec);
  }
}

void kill_running_compilers() noexcept {
  auto& r = running();
  if (::getpid() != r.owner) return;  // (a child made without fork(), by clone: its parent's)
  std::lock_guard lock(r.mu);
  r.exiting = true;
  for (const auto& [pid, child] : r.children) {
    kill_compiler(pid);
    remove_temporaries(child);
  }
}

/// A private directory of the cache for one compiler run's temporary files (its TMPDIR: gcc's
/// ccXXXX.s and objects), removed with what is in it when the run is over, killed or not.
class Scratch {
 public:
  explicit Scratch(const fs::path& dir) : path_(dir / ("wrap-scratch." + unique_suffix())) {
    if (::mkdir(path_.c_str(), 0700) != 0) path_ = dir;  // then as before: the cache itself
    else owned_ = true;
  }
  ~Scratch() {
    std::error_code ec;
    if (owned_) fs::remove_all(path_, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const fs::path& path() const { return path_; }
  /// What to remove if the process exits while a compiler writes here.
  fs::path owned() const { return owned_ ? path_ : fs::path(); }

 private:
  fs::path path_;
  bool owned_ = false;
};

/// Bound on the compiler output kept (the rest is read and dropped: a compiler never blocks on it).
constexpr std::size_t max_output = std::size_t{1} << 20;

/// Reads what is there in `fd` into `out` (up to max_output); false at end of file or on an error.
bool read_some(int fd, std::string& out) {
  char buf[16384];
  // At most 16 reads: a compiler that writes without end keeps the pipe full, and the caller
  // must get back to its deadline.
  for (int reads = 0; reads < 16;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, std::min(static_cast<std::size_t>(n), max_output - std::min(max_output, out.size())));
      ++reads;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  return true;  // more to read: still open
}

/// Runs argv (argv[0] an absolute path) with exactly `env` (TMPDIR then `scratch`), stdout and
/// stderr into a pipe read here (not a log file in the cache: on a full file system the log was
/// empty, and the compiler's "No space left on device" was lost), stdin from /dev/null and no other
/// descriptor of ours (spawn_process: worker channels and the application's files stay out of the
/// compiler); kills it and what it started after `timeout`, and at exit. Builds
/// run on background threads: they never read this process's environment, which the application
/// may be changing meanwhile.
RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
              std::chrono::seconds timeout, const std::vector<fs::path>& outputs, const fs::path& cwd,
              const Scratch& scratch) {
  static const bool hook = [] { return std::atexit(kill_running_compilers) == 0; }();
  (void)hook;
  RunResult r;
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) {
    r.spawn_errno = errno;
    return r;
  }
  Fd out(ends[0]), in(ends[1]);
  if (in.get() <= STDERR_FILENO) in.reset(::fcntl(in.get(), F_DUPFD_CLOEXEC, 3));  // (stdio closed)
  // The compiler's end blocks (a compiler is not ready for EAGAIN on its stderr); ours does not.
  if (!in || ::fcntl(in.get(), F_SETFL, 0) != 0) {
    r.spawn_errno = errno;
    return r;
  }
  SpawnedProcess child;
  {
    // Spawned and registered under one lock: kill_running_compilers at exit either sees the
    // compiler or stops it from starting.
    auto& compilers = running();
    std::lock_guard lock(compilers.mu);
    if (compilers.exiting) {
      r.spawn_errno = ECANCELED;
      return r;
    }
    try {
      child = spawn_process(argv[0], std::vector<std::string>(argv.begin() + 1, argv.end()),
                            with_tmpdir(env, scratch.path()), -1, {}, cwd, in.get());
    } catch (const std::system_error& e) {
      r.spawn_errno = e.code().value();
      return r;
    }
    auto& registered = compilers.children[child.pid];
    registered.files = outputs;
    registered.scratch = scratch.owned();
  }
  in.reset();
  r.started = true;
  // Its output until it ends (or, without a pidfd, until the output ends), at most `timeout`.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool open = true, ended = false;
  while (!ended && (open || child.pidfd)) {
    pollfd p[2] = {{open ? out.get() : -1, POLLIN, 0}, {child.pidfd.get(), POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill_compiler(child.pid);
      r.interrupted = r.timed_out = true;
      break;
    }
    const int n = ::poll(p, child.pidfd ? 2 : 1, static_cast<int>(std::min<long long>(left.count(), 1 << 30)));
    if (n < 0 && errno != EINTR) {
      kill_compiler(child.pid);  // not waited for without a bound below
      r.interrupted = true;
      break;
    }
    if (n <= 0) continue;
    if (p[0].revents) open = read_some(out.get(), r.output);
    if (child.pidfd && p[1].revents) ended = true;
    if (!child.pidfd && !open) ended = true;
  }
  // Ended (or killed with what it started): no longer one the exit hook kills, then reaped.
  {
    auto& compilers = running();
    std::lock_guard lock(compilers.mu);
    compilers.children.erase(child.pid);
    if (compilers.exiting) r.interrupted = true;
  }
  ExitStatus status = reap(child.pid);
  // The rest of its output: the pipe's other end is closed once what it started is gone too
  // (waited for at most a second).
  const auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (open && std::chrono::steady_clock::now() < drain_until) {
    pollfd p{out.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) open = read_some(out.get(), r.output);
  }
  // An unknown status (the application ignores SIGCHLD, so the kernel reaped the compiler) is
  // judged by what the compiler left behind, as the callers check their outputs anyway.
  r.ok = !r.interrupted && (!status.known || (status.signal == 0 && status.exit_code == 0));
  return r;
}

/// An exclusive flock on `file` for the scope, waited for at most `timeout` (a lock held by a
/// stopped or hung process blocked every other build of the entry, silently, for ever). The file
/// is write-only (0200): a sandboxed task given the cache to read (Sandbox::read; by default it
/// reads only the plugins/ directory) neither opens it for writing (Landlock) nor, without read
/// permission, for reading, so it cannot hold the lock that every build of the entry waits for.
///
/// `shared`: a shared lock (LOCK_SH), which a wrap's build holds on its prelude's lock file for as
/// long as its compiler may read the prelude: `ferry cache clear` (whose exclusive probe fails
/// while any holder has it) then leaves the prelude, and a rebuild of the prelude (exclusive)
/// waits for the compile. A lock taken on a file that was removed meanwhile (by `ferry cache
/// clear`; another process may have made a new one under the name) is let go and taken again
/// on the file that has the name now.
class FileLock {
 public:
  FileLock(const fs::path& file, std::chrono::seconds timeout, bool shared = false) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto nap = std::chrono::milliseconds(1);
    bool said = false;
    for (int reopened = 0;; ++reopened) {
      fd_ = Fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0200));
      if (fd_.get() < 0) {
        error_ = errno;
        return;
      }
      struct stat st {};
      if (::fstat(fd_.get(), &st) == 0 && (st.st_mode & 07777) != 0200) (void)::fchmod(fd_.get(), 0200);
      if (!wait(file, timeout, deadline, nap, said, shared)) return;
      struct stat named {};
      if (reopened >= 100 || (::lstat(file.c_str(), &named) == 0 && named.st_dev == st.st_dev && named.st_ino == st.st_ino))
        return;
      ::flock(fd_.get(), LOCK_UN);  // removed under us: taken again on the file of that name
      held_ = false;
    }
  }
  ~FileLock() {
    if (held_) ::flock(fd_.get(), LOCK_UN);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool held() const { return held_; }
  /// Not held because another process held it all along (not for an error of the lock's own).
  bool timed_out() const { return timed_out_; }
  /// Why it is not held: "" when it is.
  std::string why_not(const fs::path& file, std::chrono::seconds timeout) const {
    if (held_) return {};
    if (timed_out_)
      return "another process has held the lock " + file.string() + " for " + std::to_string(timeout.count()) +
             " s without finishing its build of the same entry (FERRY_WRAP_TIMEOUT sets the wait): a stopped or "
             "hung process? `fuser " + file.string() + "` names it";
    return "cannot lock " + file.string() + ": " + std::strerror(error_) +
           ". Set FERRY_CACHE_DIR to a writable directory";
  }

 private:
  /// Waits for the lock on fd_ until `deadline`: whether it is held.
  bool wait(const fs::path& file, std::chrono::seconds timeout, std::chrono::steady_clock::time_point deadline,
            std::chrono::milliseconds& nap, bool& said, bool shared) {
    for (;;) {
      if (::flock(fd_.get(), (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) {
        held_ = true;
        return true;
      }
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) {
        error_ = errno;
        return false;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        timed_out_ = true;
        return false;
      }
      if (!said) {
        debug_log("wrap: waiting (at most %lld s) for the lock %s: another process is building the same entry",
                  static_cast<long long>(timeout.count()), file.c_str());
        said = true;
      }
      // Polled: flock has no timeout of its own (an alarm is the process's, and these waits run on
      // background threads).
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(nap, deadline - now));
      nap = std::min(nap * 2, std::chrono::milliseconds(100));
    }
  }

  Fd fd_;
  bool held_ = false;
  bool timed_out_ = false;
  int error_ = 0;
};

// ---- the builder -------------------------------------------------------------------------------

/// Everything a build depends on, resolved once per build.
struct Setup {
  WrapOptions options;
  std::string compiler;          // absolute path of the compiler
  std::vector<std::string> command;  // what runs it: the compiler (never ccache: make_setup)
  std::vector<std::string> environment;  // of the thread that asked for the build
  std::string compiler_identity; // resolved path, size, mtime
  bool clang = false;
  std::vector<std::string> flags;  // compile flags, all of them
  fs::path include_dir;
  fs::path cwd;  // the current directory when the build was asked for: the compiler runs there
  bool relative = false;  // a flag names a path relative to cwd: the entry is that directory's
  /// FERRY_WRAP_TIMEOUT, read by the thread that asked: for each compiler run, and for the wait
  /// for another build's lock (a build's thread never reads the environment, which the
  /// application may be changing meanwhile).
  std::chrono::seconds timeout{300};
  /// FERRY_WRAP_PRELUDES: the cache's preludes kept once a new one is built (remove_old_preludes).
  std::size_t kept_preludes = 4;
};

std::string where_of(const WrapSite& site) {
  return std::string(site.file) + ":" + std::to_string(site.line);
}

[[noreturn]] void setup_failed(const WrapSite& site, const std::string& why) {
  throw UnresolvableTaskError::wrap_setup_failed(site.name, where_of(site), why);
}

/// The program `name` (a path, or a name looked up in PATH), absolute, if it may run: found,
/// trusted, and no wrapper whose objects come from a cache or machine ferry cannot judge.
fs::path judged_program(const WrapSite& site, const std::string& name, const std::string& given) {
  auto found = find_program(name);
  if (!found)
    setup_failed(site, "no C++ compiler: tried '" + name + "'" + (given != name ? " (of FERRY_CXX='" + given + "')" : "") +
                           " (not found or not executable). Set FERRY_CXX (or "
                           "WrapOptions::compiler) to a C++20 compiler such as g++ or clang++, "
                           "optionally after ccache, with flags after it");
  // The compiler runs as the user, and what it reads it builds into code the workers load.
  if (std::string why = untrusted_reason(*found); !why.empty())
    setup_failed(site, "refusing to run the compiler: " + why +
                           ". Set FERRY_CXX to a compiler that only you or root can change");
  std::error_code ec;
  const fs::path real = fs::canonical(*found, ec);
  // Compiler wrappers that hand back objects from a cache others may fill (sccache's remote
  // storage) or compile elsewhere (distcc, icecream): what they return was compiled by no program
  // judged here. ccache is not run: its compiler is (make_setup).
  for (std::string_view wrapper : {"sccache", "distcc", "icecc", "icerun"})
    if (real.filename() == wrapper)
      setup_failed(site, "refusing to run the compiler: " + real.string() + " is " + std::string(wrapper) +
                             ", whose objects may come from a cache or a machine ferry cannot judge. "
                             "Set FERRY_CXX to the compiler itself");
  // Absolute: a compiler found through a relative entry of PATH ("." or "bin") would be looked
  // up again in whatever directory is current when a build thread runs it.
  return fs::absolute(*found);
}

/// The program named `name` that a ccache masquerade link of that name runs: the first on PATH
/// that is not ccache (as ccache finds it, skipping itself).
std::optional<fs::path> program_behind_ccache(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (std::string_view rest = path ? path : ""; !rest.empty();) {
    const auto colon = rest.find(':');
    const std::string_view dir = rest.substr(0, colon);
    rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon + 1);
    if (dir.empty()) continue;
    const auto found = find_program(fs::path(dir) / name);
    std::error_code ec;
    if (found && fs::canonical(*found, ec).filename() != "ccache" && !ec) return found;
  }
  return std::nullopt;
}

/// Why a -fsanitize= flag among `args` makes a plugin ferry-worker cannot run: "" when none does.
/// A runtime that must be the process's first library (ASan, HWASan, TSan, MSan) fails in a worker
/// that did not start with it ("ASan runtime does not come first": every call killed its worker);
/// taken when ferry itself is built with it. UBSan and the others load as a plugin's library.
std::string unusable_sanitizer(const std::vector<std::string>& args) {
  // GCC's macros; clang says so through __has_feature (older clang defines no macro).
#if defined(__has_feature)
  constexpr bool asan_feature = __has_feature(address_sanitizer);
  constexpr bool tsan_feature = __has_feature(thread_sanitizer);
  constexpr bool hwasan_feature = __has_feature(hwaddress_sanitizer);
  constexpr bool msan_feature = __has_feature(memory_sanitizer);
#else
  constexpr bool asan_feature = false, tsan_feature = false, hwasan_feature = false, msan_feature = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
  constexpr bool asan = true;
#else
  constexpr bool asan = asan_feature;
#endif
#if defined(__SANITIZE_THREAD__)
  constexpr bool tsan = true;
#else
  constexpr bool tsan = tsan_feature;
#endif
#if defined(__SANITIZE_HWADDRESS__)
  constexpr bool hwasan = true;
#else
  constexpr bool hwasan = hwasan_feature;
#endif
  struct Runtime {
    std::string_view value, name;
    bool ferry_has_it;
  };
  static constexpr Runtime runtimes[] = {{"address", "AddressSanitizer", asan},
                                         {"kernel-address", "AddressSanitizer", asan},
                                         {"hwaddress", "HWAddressSanitizer", hwasan},
                                         {"thread", "ThreadSanitizer", tsan},
                                         {"memory", "MemorySanitizer", msan_feature}};
  // In order, as the compiler takes them: a later -fno-sanitize= takes an earlier one back.
  std::map<std::string_view, std::string> asked;  // runtime -> the flag that asked for it
  for (const auto& a : args) {
    const bool on = a.starts_with("-fsanitize=");
    if (!on && !a.starts_with("-fno-sanitize=")) continue;
    std::string_view values = std::string_view(a).substr(a.find('=') + 1);
    while (!values.empty()) {
      const std::string_view v = values.substr(0, values.find(','));
      values.remove_prefix(std::min(values.size(), v.size() + 1));
      for (const auto& r : runtimes) {
        if (v != r.value && !(v == "all" && !on)) continue;
        if (on) asked[r.value] = a;
        else asked.erase(r.value);
      }
    }
  }
  for (const auto& r : runtimes)
    if (auto it = asked.find(r.value); it != asked.end() && !r.ferry_has_it)
      return "'" + it->second + "': a plugin built with " + std::string(r.name) +
             " runs only in a process started with its runtime, and ferry-worker is not built with it "
             "(every call would kill its worker). Build ferry itself with -fsanitize=" + std::string(r.value) +
             " to use it; -fsanitize=undefined works in any worker";
  return {};
}

/// "<resolved path> <size> <mtime>" of a program.
std::string program_identity(const fs::path& program) {
  std::error_code ec;
  fs::path real = fs::canonical(program, ec);
  struct stat st {};
  ::stat(real.c_str(), &st);
  return real.string() + " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec);
}

Setup make_setup(const WrapSite& site) {
  Setup s;
  s.options = wrap_options();
  // FERRY_CXX is a program, then its arguments, split as a shell splits words ("ccache g++",
  // "g++ -O2"; a path with spaces that names a program is taken whole): ccache's first argument is
  // the compiler it runs, judged as the program is, and the other arguments are flags, judged as
  // FERRY_WRAP_FLAGS are.
  const std::string given = s.options.compiler.string();
  const std::vector<std::string> words = command_words(given);
  fs::path compiler = judged_program(site, words[0], given);
  std::size_t flags_from = 1;
  std::error_code ec;
  // ccache is never run: disabled (it would hand back objects of a cache others may fill) it still
  // reads its configuration file from $HOME or $XDG_CONFIG_HOME, whose prefix_command or compiler
  // runs a program of that file's choosing (HOME=/tmp: another user's). Its compiler runs instead:
  // the next word ("ccache g++"), or, for a masquerade link (/usr/lib/ccache/g++ -> ccache), the
  // program of the link's name that ccache would have found after itself on PATH.
  const auto is_ccache = [&ec](const fs::path& p) { return fs::canonical(p, ec).filename() == "ccache"; };
  std::string named = words[0];
  if (is_ccache(compiler) && words.size() > 1 && !words[1].starts_with("-")) {
    named = words[1];
    compiler = judged_program(site, named, given);
    flags_from = 2;
  }
  if (is_ccache(compiler)) {
    const std::string name = fs::path(named).filename().string();
    std::optional<fs::path> behind = name == "ccache" ? std::nullopt : program_behind_ccache(name);
    if (!behind)
      setup_failed(site, "FERRY_CXX='" + given + "' is ccache" +
                             (name == "ccache" ? std::string(" with no compiler after it")
                                               : ", and no '" + name + "' that is not ccache is on PATH") +
                             ": ferry runs the compiler itself (ccache is not used). Set FERRY_CXX to the compiler, "
                             "such as g++ or clang++");
    compiler = judged_program(site, behind->string(), given);
  }
  s.command = {compiler.string()};
  s.compiler_identity = program_identity(compiler);
  s.compiler = s.command.back();
  s.environment = compiler_environment(merged_environment({}));
  {
    const Config config = Config::read();
    s.timeout = config.wrap_timeout;
    s.kept_preludes = config.wrap_preludes;
  }
  s.clang = fs::canonical(compiler, ec).filename().string().find("clang") != std::string::npos;
  s.include_dir = ferry_include_dir();
  if (s.include_dir.empty() || !fs::exists(s.include_dir / "ferry" / "task.hpp", ec))
    setup_failed(site, "ferry's headers are not where this libferry expects them (" +
                           (s.include_dir / "ferry").string() +
                           "): install ferry with its headers (cmake --install)");
  if (std::string why = untrusted_reason(s.include_dir / "ferry"); !why.empty())
    setup_failed(site, "refusing to compile with ferry's headers: " + why);
  // FERRY_DETAIL_NO_JSON_ENTRY: a wrapped function is submitted by function, never as JSON, and
  // the JSON entry point's code generation was most of a wrap's compile time (about 6 s of 7.5).
  s.flags = {"-std=c++20", "-fPIC", "-fvisibility=hidden", "-DBOOST_DLL_USE_STD_FS",
             "-DFERRY_DETAIL_NO_JSON_ENTRY", "-I" + s.include_dir.string()};
  for (const auto& f : s.options.flags) s.flags.push_back(f);
  s.flags.insert(s.flags.end(), words.begin() + static_cast<std::ptrdiff_t>(flags_from), words.end());
  // What the compiler runs or loads because a flag names it (headers and libraries are judged
  // from the compiler's and linker's own lists of what they read, after the build). Relative
  // paths are the current directory's, where the compiler will run.
  // Needed only when a flag names a path relative to it: a wrap whose flags are all absolute
  // builds, and is found in the cache, from a directory that was removed (the compiler then runs
  // in it, as this process does).
  std::error_code cwd_error;
  s.cwd = fs::current_path(cwd_error);
  for (const auto* args : {&s.flags, &s.options.libraries}) {
    std::string why = untrusted_compiler_flag(*args, s.cwd, unsafe_allowed_by_environment(), &s.relative);
    if (cwd_error && s.relative)
      setup_failed(site, "the current directory cannot be read (" + cwd_error.message() +
                             "), and a flag names a path relative to it (FERRY_WRAP_FLAGS, WrapOptions::flags "
                             "or ::libraries): give it as an absolute path");
    if (why.empty()) why = unusable_sanitizer(*args);
    if (!why.empty())
      setup_failed(site, "refusing a compiler flag: " + why +
                             " (FERRY_CXX, FERRY_WRAP_FLAGS, WrapOptions::flags or ::libraries; words are split "
                             "as a shell splits them: quote a flag with a space in it)");
  }
  return s;
}

/// The cache directory, created private (0700) if missing; refused (cache_dir_problem) if it is
/// not ours and private or if its way is not trusted.
fs::path prepare_cache_dir(const WrapSite& site, const fs::path& dir) {
  if (std::string why = cache_dir_problem(dir); !why.empty()) setup_failed(site, why);
  return dir;
}

/// Bound on an entry's .sum and .err (the record of what its build read, and a diagnostic).
constexpr std::size_t max_record = std::size_t{16} << 20;

/// The record of what an entry's build read: after the plugin's digest line in its .sum (`sum`),
/// or before the diagnostic in its .err; `rest` is what follows it.
std::optional<InputRecord> entry_record(const std::string& text, bool sum, std::string_view* rest = nullptr) {
  std::string_view body = text;
  if (sum) {
    const std::size_t eol = body.find('\n');
    if (eol == std::string_view::npos) return std::nullopt;
    body.remove_prefix(eol + 1);
  }
  return parse_input_record(body, rest);
}

/// The plugin of an entry with this digest ("<BLAKE2b> <size>"): named by its content too, so
/// that a file a running executor's workers load is never replaced by other code (a rebuild after
/// a header changed publishes another file).
fs::path plugin_of(const fs::path& dir, const std::string& key, const std::string& digest) {
  return wrap_plugin_dir(dir) / ("wrap-" + key + "-" + digest.substr(0, 16) + ".so");
}

/// The plugin the entry's .sum (`sum`) names, if it may be used: it passes the trust check,
/// matches the digest recorded, and every file its build read holds the bytes it had then.
std::optional<fs::path> valid_entry(const fs::path& dir, const std::string& key, const fs::path& sum) {
  std::error_code ec;
  if (!fs::exists(sum, ec)) return std::nullopt;
  const std::string text = read_file(sum, max_record + 1);
  std::string_view rest;
  const auto record = entry_record(text, true, &rest);
  const std::string recorded = text.substr(0, text.find('\n'));
  const bool named = recorded.size() > 16 && std::all_of(recorded.begin(), recorded.begin() + 16, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!record || !rest.empty() || !named) {
    debug_log("wrap cache: %s cannot be read: rebuilding", sum.c_str());
    return std::nullopt;
  }
  const fs::path so = plugin_of(dir, key, recorded);
  if (!fs::exists(so, ec)) return std::nullopt;
  if (std::string why = untrusted_reason(so); !why.empty()) {
    debug_log("wrap cache: %s: rebuilding", why.c_str());
    return std::nullopt;
  }
  if (file_digest(so) != recorded) {
    debug_log("wrap cache: %s does not match its recorded hash: rebuilding", so.c_str());
    return std::nullopt;
  }
  if (std::string why = changed_input(*record); !why.empty()) {
    debug_log("wrap cache: %s: rebuilding %s", why.c_str(), so.c_str());
    return std::nullopt;
  }
  return so;
}

/// The precompiled prelude shipped with this libferry (made by ferry's build, and again at
/// install, for the compiler and flags it was built with), relative to libferry.
fs::path shipped_prelude_dir() {
  fs::path lib = library_directory();
  return lib.empty() ? fs::path() : lib / FERRY_WRAP_PRELUDE_RELATIVE;
}

/// What the prelude is precompiled with: the flags but the linker's (compile_flags), the user's
/// -include (a header of theirs baked into the precompiled prelude went on standing in for the
/// file after an edit: the wrap's -include of it then found its guard defined) and relative
/// search directories (each wrap's own; the prelude is shared by directories). Absolute ones stay:
/// cereal or a library's headers may be found only through them. What the prelude then reads
/// is recorded and checked before each use (prelude()), as a wrap's is.
std::vector<std::string> prelude_flags(const Setup& s) {
  std::vector<std::string> out;
  const std::vector<std::string> flags = compile_flags(s.flags);
  for (std::size_t i = 0; i < flags.size(); ++i) {
    const std::string_view v(flags[i]);
    if (v == "-include") {
      ++i;  // and its file
      continue;
    }
    bool apart = false;
    std::optional<std::string> dir;
    for (std::string_view opt : {"-isystem", "-iquote", "-idirafter", "-I"}) {
      if (!v.starts_with(opt)) continue;
      apart = v == opt;
      if (!apart) dir = std::string(v.substr(opt.size()));
      else if (i + 1 < flags.size()) dir = flags[i + 1];
      break;
    }
    if (dir && fs::path(*dir).is_relative()) {
      i += apart;  // and its directory
      continue;
    }
    out.push_back(flags[i]);
    if (apart && dir) out.push_back(flags[++i]);
  }
  return out;
}

/// The prelude's key: compiler, flags, ferry's version, ABI and the content of ferry's headers.
std::string prelude_key(const Setup& s) {
  ContentHasher h;
  h.field("prelude").field(s.compiler_identity).field(FERRY_VERSION_STRING)
      .field(std::to_string(plugin_abi_version)).field(headers_key(s.include_dir));
  for (const auto& f : prelude_flags(s)) h.field(f);
  return h.hex();
}

/// The compiler, then ferry's prelude as its first -include: the precompiled one (`header`), or
/// ferry's header when there is none. After it (it has tokens), no precompiled header found beside
/// a header of the user's -include flags can be used in its place (gcc takes one only before the
/// first token, clang only for the first -include), and none is in the compiler's list of what
/// it read.
std::vector<std::string> compiler_and_prelude(const Setup& s, const std::string& header = {}) {
  std::vector<std::string> out = s.command;
  out.insert(out.end(), {"-include", header.empty() ? (s.include_dir / "ferry" / "wrap_prelude.hpp").string() : header});
  return out;
}

/// Sets the time of a cache prelude's lock file, which says when the prelude was last used
/// (remove_old_preludes), a use being a wrap's build (a built wrap is loaded without it). The
/// precompiled header keeps the time of its build, which `ferry cache list` shows.
void mark_prelude_used(const fs::path& lock_file) {
  // Non-blocking: a FIFO put at its name would hold the open for ever; only a regular file's time.
  const int fd = ::open(lock_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0200);
  if (fd < 0) return;
  if (struct stat st {}; ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) (void)::futimens(fd, nullptr);
  ::close(fd);
}

/// The key of a cache prelude's precompiled header "prelude-<key>.hpp.gch" (or .pch), "" for
/// any other name.
std::string_view prelude_key_of(std::string_view name) {
  constexpr std::string_view prefix = "prelude-";
  if (!name.starts_with(prefix)) return {};
  name.remove_prefix(prefix.size());
  for (std::string_view suffix : {".hpp.gch", ".hpp.pch"}) {
    if (!name.ends_with(suffix)) continue;
    name.remove_suffix(suffix.size());
    const bool hex = name.size() >= 32 && name.find_first_not_of("0123456789abcdef") == std::string_view::npos;
    return hex ? name : std::string_view();
  }
  return {};
}

}  // namespace

std::size_t remove_old_preludes(const fs::path& dir, const std::string& key, std::size_t kept) {
  struct Found {
    fs::file_time_type used;
    std::string key;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::string_view k = prelude_key_of(name);
    std::error_code entry_ec;  // an entry gone meanwhile: passed over, the walk goes on
    if (k.empty() || k == key || !fs::is_regular_file(it->symlink_status(entry_ec))) continue;
    // Last used: its lock file's time (mark_prelude_used), else when it was built.
    auto used = fs::last_write_time(dir / ("prelude-" + std::string(k) + ".lock"), entry_ec);
    if (entry_ec) used = it->last_write_time(entry_ec);
    if (entry_ec) used = fs::file_time_type::min();
    found.push_back({used, std::string(k)});
  }
  if (ec) return 0;  // a listing cut short: which were used last is not known
  // `key`'s own is one of the `kept`.
  const std::size_t others = kept == 0 ? 0 : kept - 1;
  if (found.size() <= others) return 0;
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.used > b.used; });
  std::size_t removed = 0;
  for (std::size_t i = others; i < found.size(); ++i) {
    const std::string base = "prelude-" + found[i].key;
    const fs::path lock = dir / (base + ".lock");
    // Not while a wrap's compiler may read it (its build holds the lock shared) nor while it is
    // being built again: tried once, left for a later pass.
    FileLock hold(lock, std::chrono::seconds(0));
    if (!hold.held()) continue;
    for (const char* suffix : {".hpp.gch", ".hpp.pch", ".hpp.inputs", ".hpp"}) fs::remove(dir / (base + suffix), ec);
    // Removed held: a process that opened it meanwhile takes the lock again on a new file
    // (FileLock), as after `ferry cache clear`.
    fs::remove(lock, ec);
    debug_log("wrap cache: removed the prelude %s (FERRY_WRAP_PRELUDES keeps %zu)", base.c_str(), kept);
    ++removed;
  }
  return removed;
}

namespace {

/// The precompiled prelude a wrap compiles with.
struct Prelude {
  std::string header;  ///< "" when there is none (the wrap then compiles ferry's header itself)
  InputRecord read;    ///< what the cache's prelude read (none for the shipped one): the wrap read
                       ///< it too, though gcc lists none of a precompiled header's files
  std::string hung;    ///< why the wrap fails at once: the compiler did not finish the prelude
                       ///< within the timeout (and would hang on the wrap too), or another
                       ///< process held its lock as long
  fs::path lock;       ///< the cache's prelude: its lock file, which a wrap's build holds shared
                       ///< while its compiler may read the prelude (none for the shipped one)
};

/// "the compiler did not finish within N s": the message of a compiler run that timed out.
std::string did_not_finish(const Setup& s, std::chrono::seconds timeout, const std::string& what) {
  return "the compiler '" + s.compiler + "' did not finish within " + std::to_string(timeout.count()) + " s (" +
         what + "; FERRY_WRAP_TIMEOUT sets the limit) and was stopped. Is FERRY_CXX a C++ compiler that works here?";
}

/// The precompiled prelude for these flags: the shipped one when it matches and is trusted, else
/// built in this cache, again when a file it read changed; none when it cannot be built.
Prelude prelude(const Setup& s, const fs::path& dir) {
  std::string key = prelude_key(s);
  std::string header_name = "prelude-" + key + ".hpp";
  std::string pch_name = header_name + (s.clang ? ".pch" : ".gch");
  std::error_code ec;
  if (fs::path shipped = shipped_prelude_dir(); !shipped.empty()) {
    if (fs::exists(shipped / pch_name, ec) && fs::exists(shipped / header_name, ec)) {
      std::string why = untrusted_reason(shipped / pch_name);
      if (why.empty()) why = untrusted_reason(shipped / header_name);
      // Installed by another user (root) 0600 before: unreadable here, every wrap failed on it.
      if (why.empty() && (::access((shipped / pch_name).c_str(), R_OK) != 0 ||
                          ::access((shipped / header_name).c_str(), R_OK) != 0))
        why = "not readable by this user";
      if (why.empty()) return {(shipped / header_name).string(), {}};
      debug_log("wrap prelude: not using the shipped one: %s", why.c_str());
    } else {
      debug_log("wrap prelude: none shipped for these flags in %s", shipped.c_str());
    }
  }
  fs::path header = dir / header_name;
  fs::path pch = dir / pch_name;
  // Its record of what it read, written after the precompiled header it describes (a reader
  // that sees a new record beside an old header would take it).
  const fs::path record = dir / (header_name + ".inputs");
  const fs::path lock_file = dir / ("prelude-" + key + ".lock");
  auto usable = [&]() -> std::optional<Prelude> {
    if (!fs::exists(pch, ec) || !fs::exists(header, ec)) return std::nullopt;
    auto read = parse_input_record(read_file(record, max_record));
    std::string why = !read ? "no record of what it read" : changed_input(*read);
    if (why.empty()) {
      mark_prelude_used(lock_file);
      return Prelude{header.string(), std::move(*read), {}, lock_file};
    }
    debug_log("wrap prelude %s: %s: built again", pch.c_str(), why.c_str());
    return std::nullopt;
  };
  // A prelude that could not be built is not tried again by this process (for these compiler and
  // flags): a compiler that hangs would cost every wrap, one after the other, its timeout.
  struct Failed {
    std::mutex mu;  // held for a build: anew in a fork()ed child, as the map
    std::map<std::string, Prelude> preludes;
  };
  static ForkLocal<Failed> state;
  Failed& known = state.get();
  std::lock_guard lock(known.mu);
  auto& failed = known.preludes;
  const std::string failed_key = dir.string() + "\n" + key;
  if (auto it = failed.find(failed_key); it != failed.end()) return it->second;
  if (auto p = usable()) return *p;
  // Its holder compiles for at most one timeout.
  const auto lock_timeout = 2 * s.timeout;
  FileLock file_lock(lock_file, lock_timeout);
  if (!file_lock.held() && file_lock.timed_out()) {
    Prelude none;
    none.hung = file_lock.why_not(lock_file, lock_timeout);
    return failed[failed_key] = none;
  }
  // A lock that cannot be taken at all (a file system without flock, no descriptor left for a
  // moment): built without it, as the rename keeps readers from a half-written file anyway.
  if (!file_lock.held()) debug_log("wrap: building the prelude without its lock: %s", file_lock.why_not(lock_file, lock_timeout).c_str());
  if (auto p = usable()) return *p;
  // The header goes in under its own name first (its content is always the same; renamed in, so
  // a reader never sees it half written): clang records in a PCH the name of the header it was
  // made from, and refused one whose header, made under a temporary name, had been renamed. A
  // header without its PCH is merely slow.
  std::string tmp_header = header.string() + ".tmp." + unique_suffix();
  std::string tmp_pch = pch.string() + ".tmp." + unique_suffix();
  if (!write_file(tmp_header, "#pragma once\n#include <ferry/wrap_prelude.hpp>\n")) return failed[failed_key] = {};
  fs::rename(tmp_header, header, ec);
  if (ec) {
    fs::remove(tmp_header, ec);
    return failed[failed_key] = {};
  }
  const auto started = std::chrono::system_clock::now();
  const fs::path deps = pch.string() + ".d.tmp." + unique_suffix();
  std::vector<std::string> argv = compiler_and_prelude(s);  // ferry's header, first
  for (const auto& f : prelude_flags(s)) argv.push_back(f);
  for (const auto& f : listing_flags(deps, {})) argv.push_back(f);
  argv.insert(argv.end(), {"-x", "c++-header", header.string(), "-o", tmp_pch});
  const Scratch scratch(dir);
  const auto timeout = s.timeout;
  RunResult r = run(argv, s.environment, timeout, {tmp_pch, deps}, s.cwd, scratch);
  // Every header it holds must be one only this user or root could have written: a wrap that
  // uses it lists none of them.
  std::vector<std::string> listed;
  const bool nothing = r.ok && (!fs::exists(tmp_pch, ec) || !fs::exists(deps, ec));
  std::string why = r.ok && !nothing ? judged_list(deps, std::nullopt, s.cwd, scratch.path(), &listed) : std::string();
  fs::remove(deps, ec);
  if (!r.ok || nothing || !why.empty()) {
    if (!r.ok) debug_log("wrap prelude could not be precompiled:\n%s", r.output.c_str());
    else if (nothing) debug_log("wrap prelude: the compiler produced no precompiled header or no list of what it read");
    else debug_log("wrap prelude not used: it read a file another user could change: %s", why.c_str());
    fs::remove(tmp_pch, ec);
    Prelude none;
    if (r.timed_out) none.hung = did_not_finish(s, timeout, "precompiling ferry's prelude");
    return failed[failed_key] = none;
  }
  Prelude out{header.string(), record_inputs(listed, s.cwd, dir, started), {}, lock_file};
  const std::string tmp_record = record.string() + ".tmp." + unique_suffix();
  ::chmod(tmp_pch.c_str(), 0600);  // the compiler made it 0666 less the umask
  if (!write_file(tmp_record, format_input_record(out.read))) {
    fs::remove(tmp_pch, ec);
    return {};
  }
  fs::rename(tmp_pch, pch, ec);
  if (!ec) fs::rename(tmp_record, record, ec);
  if (ec) {
    fs::remove(tmp_record, ec);
    return out;
  }
  mark_prelude_used(lock_file);
  remove_old_preludes(dir, key, s.kept_preludes);
  return out;
}

std::atomic<unsigned> compilations{0};

/// A remembered compiler failure for this entry: its diagnostic, while every file the failed
/// build read holds the bytes it had (a header fixed since is compiled again).
std::optional<std::string> remembered_failure(const fs::path& err) {
  std::error_code ec;
  if (!fs::exists(err, ec) || !untrusted_reason(err).empty()) return std::nullopt;
  const std::string text = read_file(err, max_record);
  std::string_view said;
  const auto record = entry_record(text, false, &said);
  if (!record) return std::nullopt;  // an older cache's, or cut: compiled again
  if (std::string why = changed_input(*record); !why.empty()) {
    debug_log("wrap cache: %s: compiling %s again", why.c_str(), err.c_str());
    return std::nullopt;
  }
  return std::string(said);
}

/// Whether the linker the compiler runs lists its inputs (GNU ld and gold since binutils 2.35,
/// lld: --dependency-file; its help says so), asked once per compiler and -fuse-ld= choice, with
/// no other flag of the user's (a version script the linker read while parsing its arguments,
/// made to fail once, turned the checks off). nullopt: the probe itself failed, and the build is
/// refused; false: this linker has no such list, and what it links in is not judged (design §11).
/// Remembered for the process, success or failure (a probe that hung would otherwise cost each
/// wrap its timeout, one after the other); `why` says how it failed.
std::optional<bool> linker_lists_inputs(const Setup& s, const fs::path& dir, std::string& why) {
  struct Known {
    std::mutex mu;  // held for the probe: anew in a fork()ed child, as the map
    std::map<std::string, std::pair<std::optional<bool>, std::string>> answers;
  };
  static ForkLocal<Known> state;
  Known& probes = state.get();
  auto& known = probes.answers;
  std::vector<std::string> argv = s.command;
  for (const auto* v : {&s.flags, &s.options.libraries})
    for (const auto& x : *v)
      if (x.starts_with("-fuse-ld=")) argv.push_back(x);
  argv.push_back("-Wl,--help");
  std::string key = s.compiler_identity;
  for (const auto& x : argv) key += "\n" + x;
  std::lock_guard lock(probes.mu);
  if (auto it = known.find(key); it != known.end()) {
    why = it->second.second;
    return it->second.first;
  }
  const Scratch scratch(dir);
  const auto timeout = std::min(s.timeout, std::chrono::seconds(60));
  RunResult r = run(argv, s.environment, timeout, {}, s.cwd, scratch);
  if (!r.ok) {
    std::string command = "'" + s.compiler + " -Wl,--help'";
    if (r.timed_out) why = did_not_finish(s, timeout, command + ", asking whether the linker lists what it reads");
    else if (!r.started) why = "cannot run the compiler '" + s.compiler + "': " + std::strerror(r.spawn_errno);
    else why = "cannot tell whether the linker lists what it reads: " + command + " failed" +
               (r.output.empty() ? std::string() : ":\n" + head_lines(r.output, 10)) +
               "Set FERRY_CXX to a working compiler";
    // Not a stop at exit, nor a compiler this process could not start (out of descriptors or
    // processes for a moment): the next wrap asks again.
    if (r.started && (!r.interrupted || r.timed_out)) known[key] = {std::nullopt, why};
    return std::nullopt;
  }
  const bool lists = r.output.find("--dependency-file") != std::string::npos;
  if (!lists) debug_log("wrap: the linker of %s does not list its inputs: what it links in is not checked", s.compiler.c_str());
  known[key] = {lists, {}};
  return lists;
}

/// Whether the wrap's translation unit `cpp` fails to compile on its own (-fsyntax-only, with the
/// flags the compiler gets): after a failed build whose linker wrote no list, whether the failure
/// was the compiler's (remembered with what the compiler read) or an early one of the linker's
/// (-lx not found: not remembered, as what it looked for is listed nowhere).
bool compile_fails_alone(const Setup& s, const std::string& header, const fs::path& cpp, const fs::path& dir) {
  std::vector<std::string> argv = compiler_and_prelude(s, header);
  for (auto& f : compile_flags(s.flags)) argv.push_back(std::move(f));
  argv.insert(argv.end(), {"-fsyntax-only", "-x", "c++", cpp.string()});
  const Scratch scratch(dir);
  RunResult r = run(argv, s.environment, s.timeout, {}, s.cwd, scratch);
  return r.started && !r.ok && !r.interrupted;
}

/// Whether every library `args` ask for, by name (-lname, -l name, -l:file) or by path, is among
/// what the linker listed (a name that is a flag's value apart, a header's say, is taken for a
/// library too: at worst a failure is not remembered).
bool every_library_found(std::initializer_list<const std::vector<std::string>*> args, const std::vector<std::string>& linked) {
  std::set<std::string> names;
  for (const auto& l : linked) names.insert(fs::path(l).filename().string());
  auto found = [&](const std::string& name) {
    if (name.starts_with(":")) return names.count(name.substr(1)) > 0;
    return names.count("lib" + name + ".so") > 0 || names.count("lib" + name + ".a") > 0;
  };
  static constexpr std::string_view with_value[] = {"-D", "-U", "-I", "-L", "-include", "-isystem", "-iquote",
                                                    "-idirafter", "-Xlinker", "--for-linker"};
  for (const auto* v : args)
    for (std::size_t i = 0; i < v->size(); ++i) {
      const std::string& a = (*v)[i];
      if (a == "-l") {
        if (i + 1 < v->size() && !found((*v)[++i])) return false;
      } else if (a.size() > 2 && a.starts_with("-l")) {
        if (!found(a.substr(2))) return false;
      } else if (std::find(std::begin(with_value), std::end(with_value), a) != std::end(with_value)) {
        ++i;
      } else if (!a.starts_with("-") && !names.count(fs::path(a).filename().string())) {
        return false;  // a library or object by path
      }
    }
  return true;
}

/// A wrap's record with its prelude's: a precompiled header's files are the wrap's too.
InputRecord with_prelude(InputRecord wrap, const Prelude& pre) {
  wrap.files.insert(wrap.files.end(), pre.read.files.begin(), pre.read.files.end());
  return wrap;
}

/// `text` as the inside of a C string literal (a #line's file name): a quote, a backslash or a
/// newline in the host's source path broke every wrap of that file.
std::string c_string_body(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char octal[8];
          std::snprintf(octal, sizeof octal, "\\%03o", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += octal;
        } else {
          out += c;
        }
    }
  }
  return out;
}

/// Builds the entry `key` of `site`; `lasting` says whether its end, a success or a failure, is
/// one the process keeps (WrapBuild::lasting): set only where it is.
WrapBuild build(const WrapSite& site, const Setup& s, const std::string& key, bool& lasting) {
  // A refusal of the cache directory itself (not private, noexec, cannot be made) is kept for
  // the process: each submission set up, started a thread and hashed again to fail the same way.
  lasting = true;
  fs::path dir = prepare_cache_dir(site, s.options.cache_dir);
  prepare_cache_dir(site, wrap_plugin_dir(dir));
  lasting = false;
  fs::path sum = dir / ("wrap-" + key + ".sum");
  fs::path err = dir / ("wrap-" + key + ".err");
  if (auto so = valid_entry(dir, key, sum)) return lasting = true, WrapBuild{so->string(), site.name, nullptr};
  if (auto said = remembered_failure(err)) {
    lasting = true;
    throw UnresolvableTaskError::wrap_failed(site.name, where_of(site), *said);
  }
  const fs::path lock_file = dir / ("wrap-" + key + ".lock");
  // Its holder may wait for the prelude's lock and build the prelude, probe the linker, compile,
  // and compile again alone: up to five timeouts of its own before it lets go.
  const auto lock_timeout = 5 * s.timeout;
  FileLock lock(lock_file, lock_timeout);
  if (!lock.held() && lock.timed_out()) setup_failed(site, lock.why_not(lock_file, lock_timeout));
  // One that cannot be taken at all: built without it (the entry is renamed in whole).
  if (!lock.held()) debug_log("wrap: building %s without its lock: %s", key.c_str(), lock.why_not(lock_file, lock_timeout).c_str());
  // Another process built it while we waited.
  if (auto so = valid_entry(dir, key, sum)) return lasting = true, WrapBuild{so->string(), site.name, nullptr};
  if (auto said = remembered_failure(err)) {
    lasting = true;
    throw UnresolvableTaskError::wrap_failed(site.name, where_of(site), *said);
  }

  Prelude pre = prelude(s, dir);
  if (!pre.hung.empty()) {
    lasting = true;  // the prelude's failure is remembered too: every wrap fails at once
    setup_failed(site, pre.hung);
  }
  const std::string file = c_string_body(site.file);
  std::ostringstream tu;
  // (`ferry cache list` shows the first line's name and place.)
  tu << "// Generated by ferry for FERRY_WRAP(" << site.name << ") at " << file << ":" << site.line << ".\n";
  for (const auto& inc : s.options.includes) tu << "#include " << inc << "\n";
  tu << "#line " << site.line << " \"" << file << "\"\n"
     << site.source << "\n"
     << "FERRY_TASK_AS(" << site.name << ", \"" << site.name << "\");\n";
  fs::path cpp = dir / ("wrap-" + key + ".cpp");
  if (!write_file(cpp, tu.str())) {
    const int error = errno;
    std::error_code ignored;
    fs::remove(cpp, ignored);
    setup_failed(site, cannot_write(cpp, error));
  }

  const std::string tmp = (dir / ("wrap-" + key + ".so.tmp." + unique_suffix())).string();
  // What the compiler and the linker read, listed by them: judged below, before it is published.
  const fs::path compile_deps = tmp + ".d";
  std::string probe_failed;
  const std::optional<bool> lists = linker_lists_inputs(s, dir, probe_failed);
  if (!lists) setup_failed(site, probe_failed);
  const fs::path link_deps = *lists ? fs::path(tmp + ".ld.d") : fs::path();
  // The cache's prelude, held shared while the compiler may read it (here to the end): `ferry
  // cache clear` removed it under the compiler, and the wrap failed on a missing -include. Taken
  // after prelude() let go of its own (exclusive) hold, and never while calling it: a thread
  // holding it shared never waits for prelude()'s mutex or the exclusive lock, so a rebuild of
  // the prelude (here or in another process) waits for this compile at most. Between the two,
  // the prelude may have been cleared (or rebuilt): looked for again under the shared lock.
  std::optional<FileLock> prelude_hold;
  for (int attempt = 0; !pre.lock.empty(); ++attempt) {
    const auto hold_timeout = 2 * s.timeout;  // an exclusive holder builds it within one timeout
    prelude_hold.emplace(pre.lock, hold_timeout, true);
    if (!prelude_hold->held()) {
      if (prelude_hold->timed_out()) setup_failed(site, prelude_hold->why_not(pre.lock, hold_timeout));
      debug_log("wrap: compiling without the prelude's lock: %s", prelude_hold->why_not(pre.lock, hold_timeout).c_str());
      break;
    }
    std::error_code gone;
    if (fs::exists(pre.header, gone) && fs::exists(pre.header + (s.clang ? ".pch" : ".gch"), gone)) break;
    prelude_hold.reset();
    if (attempt == 2) setup_failed(site, "the precompiled prelude " + pre.header + " was removed again and again while " +
                                             "this wrap was being built (`ferry cache clear`?)");
    pre = prelude(s, dir);
    if (!pre.hung.empty()) {
      lasting = true;
      setup_failed(site, pre.hung);
    }
  }
  const std::string& header = pre.header;
  // The prelude first, as for the prelude's own build.
  std::vector<std::string> argv = compiler_and_prelude(s, header);
  argv.insert(argv.end(), s.flags.begin(), s.flags.end());
  for (const auto& f : listing_flags(compile_deps, link_deps)) argv.push_back(f);
  // -z defs: a body that needs a symbol of the host's program fails here, with the linker's
  // words, instead of in the worker's loader.
  argv.insert(argv.end(), {"-x", "c++", cpp.string(), "-x", "none", "-shared", "-Wl,-z,defs", "-o", tmp});
  argv.insert(argv.end(), s.options.libraries.begin(), s.options.libraries.end());
  ++compilations;
  debug_log("wrap: compiling %s into %s", site.name, tmp.c_str());
  std::vector<fs::path> outputs = {tmp, compile_deps};
  if (!link_deps.empty()) outputs.push_back(link_deps);
  const auto started = std::chrono::system_clock::now();
  const Scratch scratch(dir);
  const auto timeout = s.timeout;
  RunResult r = run(argv, s.environment, timeout, outputs, s.cwd, scratch);
  std::error_code ec;
  std::string untrusted, produced_nothing;
  std::vector<std::string> read;  // what the compiler and the linker listed
  // A "compiler" that exits 0 and writes nothing (FERRY_CXX=/bin/true) is not a refusal of what
  // it read: there is no list to judge.
  if (r.ok && !fs::exists(tmp, ec))
    produced_nothing = "the compiler '" + s.compiler + "' exited successfully but produced no plugin";
  else if (r.ok && !fs::exists(compile_deps, ec))
    produced_nothing = "the compiler '" + s.compiler + "' produced no dependency list (-MD -MF " +
                       compile_deps.string() + ")";
  else if (r.ok && !link_deps.empty() && !fs::exists(link_deps, ec))
    produced_nothing = "the linker produced no dependency list (-Xlinker --dependency-file=" + link_deps.string() +
                       "), though its --help offers one";
  if (!produced_nothing.empty()) {
    for (const fs::path& f : {fs::path(tmp), compile_deps, link_deps})
      if (!f.empty()) fs::remove(f, ec);
    setup_failed(site, produced_nothing + ". Set FERRY_CXX to a C++20 compiler (g++ or clang++)");
  }
  if (r.ok) {
    untrusted = judged_list(compile_deps, std::nullopt, s.cwd, scratch.path(), &read);
    if (untrusted.empty() && !link_deps.empty()) untrusted = judged_list(link_deps, tmp, s.cwd, scratch.path(), &read);
  } else if (r.started && !r.interrupted) {
    // A failure is remembered only with all it read (gcc and clang list it after an error, not
    // after a header they could not find). A linker that wrote its list ran, so the source
    // compiled: its failure (a symbol only the host has) is remembered when it found every
    // library asked for, by name or by path; one that did not may be fixed by a library that
    // appears, which no list names (bfd and lld write none then, gold lists what it found). With
    // no list, the source alone tells a compile error (remembered) from such a link (not).
    std::string why;
    if (auto compiled = listed_inputs(compile_deps, std::nullopt, why)) {
      std::optional<std::vector<std::string>> linked;
      if (!link_deps.empty() && fs::exists(link_deps, ec)) linked = listed_inputs(link_deps, tmp, why);
      if (linked ? every_library_found({&s.flags, &s.options.libraries}, *linked)
                 : compile_fails_alone(s, header, cpp, dir)) {
        read = std::move(*compiled);
        if (linked) read.insert(read.end(), linked->begin(), linked->end());
      }
    }
  }
  fs::remove(compile_deps, ec);
  if (!link_deps.empty()) fs::remove(link_deps, ec);
  // The compiler's temporaries (its object, listed by the linker) are not what the build read.
  std::erase_if(read, [&](const std::string& f) { return in_directory(f, s.cwd, scratch.path()); });
  if (!untrusted.empty()) {
    const std::string full = full_file_system(dir);
    fs::remove(tmp, ec);
    if (!full.empty())
      setup_failed(site, full + ": what the compiler and the linker listed as read may be cut short (" + untrusted +
                             "). Free space there, or set FERRY_CACHE_DIR to another directory");
    setup_failed(site, "refusing what the compiler read: " + untrusted +
                           " (a header or library another user could have changed)");
  }
  if (!r.started) {
    setup_failed(site, "cannot run the compiler '" + s.compiler + "': " +
                           std::strerror(r.spawn_errno) + ". Set FERRY_CXX to a C++20 compiler");
  }
  if (r.interrupted) {
    fs::remove(tmp, ec);
    lasting = r.timed_out;  // a compiler that hangs costs the process one timeout
    setup_failed(site, r.timed_out ? did_not_finish(s, timeout, "compiling the wrap")
                                   : "the compiler was stopped before it finished: the process is exiting");
  }
  if (!r.ok) {
    fs::remove(tmp, ec);
    std::string said = head_lines(r.output);
    // Remembered: the same key (same source, compiler, flags) fails at once next time, while
    // every file the build read (headers, libraries) holds the same bytes. Not when the build's
    // own files went meanwhile (`ferry cache clear` removed its source or its scratch directory:
    // "cannot create temporary file" was remembered as the body's failure).
    const bool intact = fs::exists(cpp, ec) && (scratch.owned().empty() || fs::is_directory(scratch.owned(), ec));
    if (!read.empty() && intact) {
      std::string tmp_err = err.string() + ".tmp." + unique_suffix();
      if (write_file(tmp_err, format_input_record(with_prelude(record_inputs(read, s.cwd, dir, started), pre)) + said)) {
        fs::rename(tmp_err, err, ec);
        lasting = !ec;
      } else {
        fs::remove(tmp_err, ec);  // not remembered (a full disk): nothing half written stays
      }
    }
    throw UnresolvableTaskError::wrap_failed(site.name, where_of(site), said);
  }
  // The linker creates it 0777 less the umask: under umask 002, group-writable, which the
  // trust check refuses when the entry is used.
  ::chmod(tmp.c_str(), 0700);
  auto digest = file_digest(tmp);
  std::string tmp_sum = sum.string() + ".tmp." + unique_suffix();
  if (!digest ||
      !write_file(tmp_sum, *digest + "\n" + format_input_record(with_prelude(record_inputs(read, s.cwd, dir, started), pre)))) {
    const int error = digest ? errno : 0;
    fs::remove(tmp, ec);
    fs::remove(tmp_sum, ec);
    setup_failed(site, error ? cannot_write(tmp_sum, error)
                             : "cannot read back " + tmp + ". Set FERRY_CACHE_DIR to a writable directory");
  }
  // The plugin first, under its content's name (no reader looks there before the .sum names it),
  // then the .sum. An earlier build's plugin stays: executors may still start workers on it.
  const fs::path so = plugin_of(dir, key, *digest);
  fs::rename(tmp, so, ec);
  if (!ec) fs::rename(tmp_sum, sum, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    fs::remove(tmp_sum, ec);
    setup_failed(site, "cannot publish " + so.string() + ": " + why);
  }
  fs::remove(err, ec);  // a failure with other headers: a later one writes its own
  lasting = true;
  return WrapBuild{so.string(), site.name, nullptr};
}

/// A build in a process's maps, with what tells it from a later one under the same name.
struct Started {
  std::shared_future<WrapBuild> future;
  const void* token = nullptr;  // its promise's address, while its thread lives
};

struct Builds {
  std::mutex mu;
  std::map<std::string, Started> by_key;      // cache entry → its build
  std::map<std::string, Started> by_options;  // function + options → build
  /// The fork generation the maps are of: a fork()ed child keeps only the builds that had ended
  /// (the others' threads, which would end them, are not the child's: it waited for ever).
  std::uint64_t generation = 0;
};

bool ended(const std::shared_future<WrapBuild>& f) {
  return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

Builds& builds_state() {
  static auto* b = new Builds;  // NOLINT: leaked, as Running: build threads outlive static destruction
  return *b;
}

/// The builds of this process, their lock then held by `lock` (a fork()ed child's first use drops
/// those that had not ended).
Builds& builds(std::unique_lock<std::mutex>& lock) {
  Builds& b = builds_state();
  lock = std::unique_lock(b.mu);
  if (const std::uint64_t now = fork_generation(); b.generation != now) {
    b.generation = now;
    for (auto* map : {&b.by_key, &b.by_options})
      std::erase_if(*map, [](const auto& entry) { return !ended(entry.second.future); });
  }
  return b;
}

/// Held across fork(): the builds' lock is taken only for moments, with no other lock under it,
/// and a child must not start with it held by a thread it does not have. (The locks held for a
/// whole build or probe are ForkLocal's instead: fork() would wait for them. The registry's is
/// not taken here: it is taken under the loader's lock, by a library's static initialiser.)
void lock_for_fork() noexcept { builds_state().mu.lock(); }
void unlock_after_fork() noexcept { builds_state().mu.unlock(); }
const int fork_handlers_registered = ::pthread_atfork(&lock_for_fork, &unlock_after_fork, &unlock_after_fork);

}  // namespace

std::vector<std::string> compiler_environment(std::vector<std::string> env) {
  static constexpr std::string_view dropped[] = {
      "CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "OBJC_INCLUDE_PATH", "OBJCPLUS_INCLUDE_PATH",
      "LIBRARY_PATH", "COMPILER_PATH", "GCC_EXEC_PREFIX", "DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES",
      "CCC_OVERRIDE_OPTIONS", "LD_RUN_PATH",
      // lto-wrapper runs $MAKE (-flto=auto): a program named by the environment, unjudged.
      "MAKE", "MAKEFLAGS", "MFLAGS", "MAKEFILES", "GNUMAKEFLAGS",
      // More options or files for the compiler's programs (GCC_COMPARE_DEBUG adds its value to
      // cc1plus's options: -fplugin=... ran), catalogues and converters they load, and
      // reproduction archives the linkers write.
      "GCC_COMPARE_DEBUG", "GCC_EXTRA_DIAGNOSTIC_OUTPUT", "GCONV_PATH", "LOCPATH", "NLSPATH", "LLD_REPRODUCE",
      "MOLD_REPRO",
      // clang writes files they name (as DEPENDENCIES_OUTPUT makes gcc do), through any link.
      "CC_PRINT_HEADERS_FILE", "CC_LOG_DIAGNOSTICS_FILE", "CC_PRINT_OPTIONS_FILE", "CC_PRINT_PROC_STAT_FILE"};
  std::erase_if(env, [](const std::string& entry) {
    const std::string_view name = std::string_view(entry).substr(0, entry.find('='));
    // ccache's own settings (CCACHE_PREFIX runs a program, a shared cache hands back what others
    // stored), should a compiler script run it.
    return std::find(std::begin(dropped), std::end(dropped), name) != std::end(dropped) || name.starts_with("CCACHE_") ||
           name.starts_with("COLLECT_");
  });
  // Not run (make_setup runs ccache's compiler instead); should the compiler be a script that runs
  // it, it stays out of its cache, and reads no configuration file of $HOME's.
  env.push_back("CCACHE_DISABLE=1");
  env.push_back("CCACHE_CONFIGPATH=/dev/null");
  // gcc and collect2 run `as` and `ld` through PATH, and the dynamic loader of each finds its
  // libraries through LD_LIBRARY_PATH and loads what LD_PRELOAD and LD_AUDIT name: an empty or
  // relative element (the current directory) or one another user can write would run their
  // assembler or linker, or load their library, on the host's behalf. Only absolute directories
  // (and files) that pass the trust check stay; a PATH with none becomes the system's own (an
  // empty PATH is the current directory to gcc too). Unsafe plugins allowed or not: the compiler
  // is judged either way (judged_program).
  keep_trusted_search_path(env, "PATH", "wrap: the compiler's environment", "/usr/bin:/bin");
  keep_trusted_loader_environment(env, "wrap: the compiler's environment", untrusted_search_directory,
                                  dependency_verdict);
  return env;
}


fs::path default_cache_dir() { return Config::read().cache_dir; }

fs::path wrap_plugin_dir(const fs::path& cache_dir) { return cache_dir / "plugins"; }

std::string cache_dir_problem(const fs::path& dir) {
  std::error_code ec;
  // Created private in one step: create-then-chmod would let a concurrent build (every wrap of
  // an executor builds at once) find it open for a moment and refuse it. Missing parents are
  // made private too: under umask 002 they would be group-writable, and refused below.
  std::string unsafe;
  create_private_directories(dir, ec, &unsafe);
  if (!unsafe.empty())
    return "the cache directory " + dir.string() + " is not created: " + unsafe +
           ". Set FERRY_CACHE_DIR to another directory";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return "the cache directory " + dir.string() + " cannot be created" +
           (ec ? " (" + ec.message() + ")" : std::string()) + ". Set FERRY_CACHE_DIR to a writable directory";
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return "the cache directory " + dir.string() + " is not private to this user (it must be owned by uid " +
           std::to_string(::geteuid()) + " with mode 0700). Fix it, or set FERRY_CACHE_DIR to another directory";
  if (::access(dir.c_str(), W_OK) != 0)
    return "the cache directory " + dir.string() + " is not writable (" + std::strerror(errno) +
           "). Set FERRY_CACHE_DIR to a writable directory";
  if (std::string why = untrusted_reason(dir); !why.empty())
    return "the cache directory is not private to this user: " + why +
           ". Fix it, or set FERRY_CACHE_DIR to another directory";
  // Plugins built there could not be loaded ("failed to map segment from shared object", every
  // run, after a compile each time).
  if (struct statvfs fs_st {}; ::statvfs(dir.c_str(), &fs_st) == 0 && (fs_st.f_flag & ST_NOEXEC) != 0)
    return "the cache directory " + dir.string() +
           " is on a file system mounted noexec, from which no plugin can be loaded. Set FERRY_CACHE_DIR to a "
           "directory on another file system";
  return {};
}

bool register_wrap(const WrapSite& site) noexcept {
  try {
    auto& r = registry();
    std::lock_guard lock(r.mu);
    auto text = [](const char* p) { return std::string(p ? p : ""); };
    OwnedSite& owned = r.owned.emplace_back(
        OwnedSite{text(site.name), text(site.source), text(site.file), text(site.signature), site});
    owned.site.name = owned.name.c_str();
    owned.site.source = owned.source.c_str();
    owned.site.file = owned.file.c_str();
    owned.site.signature = owned.signature.c_str();
    // Replaced: a library loaded where an unloaded one was registers its own function at the
    // same address (the first one's body was built for the second, as long as the process ran).
    r.sites.insert_or_assign(site.function, &owned.site);
  } catch (...) {
    // Out of memory before main: the function then resolves as a main-program function.
  }
  return true;
}

const WrapSite* find_wrap(const void* address) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.sites.find(address);
  return it == r.sites.end() ? nullptr : it->second;
}

namespace {

/// The per-process name of a build: the site (its address, and what tells a body registered
/// there by another library: fingerprint, name, place and a hash of the source) and the options,
/// each string and list with its size (flags {"a.a"} and libraries {"a.a"} were one build).
std::string fast_key(const WrapSite& site, const WrapOptions& options) {
  std::string out;
  auto field = [&out](std::string_view v) {
    out += std::to_string(v.size());
    out += ':';
    out += v;
  };
  field(std::to_string(reinterpret_cast<std::uintptr_t>(site.function)));
  field(std::to_string(site.fingerprint));
  field(site.name ? site.name : "");
  field(site.file ? site.file : "");
  field(std::to_string(site.line));
  field(std::to_string(std::hash<std::string_view>{}(site.source ? site.source : "")));
  field(options.compiler.string());
  field(options.cache_dir.string());
  for (const auto* v : {&options.flags, &options.includes, &options.libraries}) {
    field(std::to_string(v->size()));
    for (const auto& x : *v) field(x);
  }
  return out;
}

/// Forgets the build `token` filed under `name` in `map`, if it is still the one there.
void forget(std::map<std::string, Started>& map, const std::string& name, const void* token) {
  if (auto it = map.find(name); it != map.end() && it->second.token == token) map.erase(it);
}

}  // namespace

std::shared_future<WrapBuild> wrap_build(const WrapSite& site) {
  (void)fork_handlers_registered;
  // Fast path, every submission of a wrapped function: the build already started in this process
  // for this function and these options (no compiler lookup, no file hashing).
  WrapOptions options = ferry::wrap_options();
  const std::string fast = fast_key(site, options);
  {
    std::unique_lock<std::mutex> lock;
    auto& b = builds(lock);
    if (auto it = b.by_options.find(fast); it != b.by_options.end()) {
      const std::shared_future<WrapBuild>& f = it->second.future;
      // Its plugin removed since (`ferry cache clear`): built again, not named to workers that
      // would fail to find it ("plugin ... does not exist").
      std::error_code ec;
      if (!ended(f) || f.get().error || fs::exists(f.get().library, ec)) return f;
      const std::string library = f.get().library;
      b.by_options.erase(it);
      std::erase_if(b.by_key, [&library](const auto& e) {
        return ended(e.second.future) && !e.second.future.get().error && e.second.future.get().library == library;
      });
    }
  }
  std::shared_future<WrapBuild> f;
  try {
    // What reads this process's state (environment, current directory, options) runs here; the
    // rest runs on the build's thread: hashing ferry's headers into the entry's key took 2-3 ms
    // of every first Executor's constructor in a program with a FERRY_WRAP function
    // (warm_up_wraps, which is to return at once), more where the headers are not cached.
    Setup setup = make_setup(site);
    auto promise = std::make_shared<std::promise<WrapBuild>>();
    f = promise->get_future().share();
    const void* token = promise.get();
    {
      std::unique_lock<std::mutex> lock;
      auto& b = builds(lock);
      if (auto it = b.by_options.find(fast); it != b.by_options.end()) return it->second.future;
      b.by_options.emplace(fast, Started{f, token});
    }
    // A detached thread, not std::async: the future of std::async joins its thread when the
    // last copy dies, and the registry's copies die at exit, so every process that started a
    // build (each executor starts all of them) would wait for the compiler before exiting.
    std::thread([copy = WrapSite(site), setup = std::move(setup), promise, f, fast, token] {
      ::pthread_setname_np(::pthread_self(), "ferry-wrap");
      WrapBuild result;
      std::string key;
      bool ours = false;  // filed under `key` by this thread
      try {
        ContentHasher h;
        h.field("wrap").field(FERRY_VERSION_STRING).field(std::to_string(plugin_abi_version))
            .field(setup.compiler_identity).field(prelude_key(setup));
        for (const auto* v : {&setup.flags, &setup.options.includes, &setup.options.libraries}) {
          h.field(std::to_string(v->size()));
          for (const auto& x : *v) h.field(x);
        }
        h.field(copy.name).field(copy.signature).field(copy.source);
        // The generated source's #line: __LINE__, __FILE__ and the diagnostics' places are the
        // host's file and line (a body moved down a file ran with the line it had before).
        h.field("at").field(copy.file).field(std::to_string(copy.line));
        // `-Iinc`, `-include k.hpp`, `-Llib`...: each directory's own files, so its own entry.
        if (setup.relative) h.field("in directory").field(setup.cwd.string());
        const std::string entry = h.hex();
        key = entry + "@" + setup.options.cache_dir.string();
        std::shared_future<WrapBuild> same;  // the build of this entry that other options started
        {
          std::unique_lock<std::mutex> lock;
          auto& all = builds(lock);
          if (auto it = all.by_key.find(key); it != all.by_key.end()) same = it->second.future;
          else ours = all.by_key.emplace(key, Started{f, token}).second;
        }
        if (same.valid()) {
          result = same.get();
        } else {
          bool lasting = false;
          try {
            result = build(copy, setup, entry, lasting);
          } catch (...) {
            result = WrapBuild{{}, copy.name, std::current_exception()};
          }
          result.lasting = lasting;
        }
      } catch (...) {
        result = WrapBuild{{}, copy.name, std::current_exception()};
      }
      if (!result.lasting) {
        // Not kept: the next submission builds again (a header created since, a descriptor or
        // process free again, space freed; README: "not remembered").
        std::unique_lock<std::mutex> lock;
        auto& all = builds(lock);
        forget(all.by_options, fast, token);
        if (ours) forget(all.by_key, key, token);
      }
      promise->set_value(std::move(result));
    }).detach();
  } catch (...) {
    std::promise<WrapBuild> failed;
    failed.set_value(WrapBuild{{}, site.name, std::current_exception()});
    f = failed.get_future().share();
  }
  return f;
}

unsigned wrap_compilations() { return compilations.load(); }

std::string precompile_prelude(const fs::path& dir) {
  WrapSite none{nullptr, "(prelude)", "", "", 0, "", 0};
  Setup setup = make_setup(none);
  fs::create_directories(dir);
  std::string header = prelude(setup, dir).header;
  // Shipped for every user of this ferry (a cache's own prelude stays 0600): readable by all.
  if (!header.empty())
    for (const std::string& file : {header, header + (setup.clang ? ".pch" : ".gch")}) ::chmod(file.c_str(), 0644);
  return header;
}

}  // namespace ferry::detail

namespace ferry {

void set_wrap_options(WrapOptions options) {
  std::lock_guard lock(detail::options_mu);
  detail::user_options = std::move(options);
}

WrapOptions wrap_options() {
  WrapOptions o;
  {
    std::lock_guard lock(detail::options_mu);
    if (detail::user_options) o = *detail::user_options;
  }
  detail::Config config = detail::Config::read();
  if (o.compiler.empty()) o.compiler = config.cxx.empty() ? FERRY_WRAP_DEFAULT_CXX : config.cxx;
  std::vector<std::string> flags = detail::split_words(FERRY_WRAP_DEFAULT_FLAGS);
  flags.insert(flags.end(), o.flags.begin(), o.flags.end());
  flags.insert(flags.end(), config.wrap_flags.begin(), config.wrap_flags.end());
  o.flags = std::move(flags);
  if (o.cache_dir.empty()) {
    o.cache_dir = config.cache_dir;
  } else if (std::error_code ec; o.cache_dir.is_relative()) {
    // Against the current directory now, as FERRY_CACHE_DIR is: a relative plugin path was
    // looked for under whatever directory the host was in at a later use (after a chdir, "does
    // not exist", or another file of that name, never checked against the entry's hash).
    std::filesystem::path dir = std::filesystem::absolute(o.cache_dir, ec);
    if (!ec) o.cache_dir = dir.lexically_normal();
  }
  return o;
}

void warm_up_wraps() {
  std::vector<detail::WrapSite> sites;
  {
    auto& r = detail::registry();
    std::lock_guard lock(r.mu);
    for (const auto& [_, s] : r.sites) sites.push_back(*s);
  }
  for (const auto& s : sites) detail::wrap_build(s);
}

bool wait_for_wraps(std::chrono::duration<double> timeout) {
  // Saturating: a timeout too long for the clock (years, +infinity) waits as long as it takes.
  const auto deadline = detail::deadline_after(timeout);  // NaN: std::invalid_argument
  std::vector<std::shared_future<detail::WrapBuild>> all;
  {
    std::unique_lock<std::mutex> lock;
    auto& b = detail::builds(lock);
    // By options: a build's thread files it by its cache entry only once it hashed its inputs.
    for (const auto& [_, started] : b.by_options) all.push_back(started.future);
  }
  bool ok = true;
  for (auto& f : all) {
    if (deadline == detail::Clock::time_point::max()) f.wait();
    else if (f.wait_until(deadline) != std::future_status::ready) return false;
    if (f.get().error) ok = false;
  }
  return ok;
}

}  // namespace ferry
