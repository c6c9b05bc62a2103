// SPDX-License-Identifier: BSD-3-Clause
// A plugin's own search path for its libraries, judged as the loader would walk it.
#include "plugins/load_dependencies.hpp"

#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ferry/errors.hpp>

#include "platform/paths.hpp"
#include "plugins/elf_reader.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

/// The most libraries followed from one plugin (each counted once), and the most values one
/// search path element expands to (each `$LIB` or `$PLATFORM` in it multiplies them): past
/// either, refused rather than judged in part.
constexpr std::size_t max_objects = 4096;
constexpr std::size_t max_expansions = 256;
/// How deep the loader's capability subdirectories go (tls/haswell/avx512_1/x86_64 is four).
constexpr int max_capability_depth = 5;

/// The values glibc's loader may give `$PLATFORM` (AT_PLATFORM, or a name its CPU detection
/// picks on x86-64) and `$LIB` (Debian's multiarch directory; lib64 and lib elsewhere).
std::vector<std::string> platform_values() {
  std::vector<std::string> out;
  if (const char* p = reinterpret_cast<const char*>(::getauxval(AT_PLATFORM)); p && *p) out.emplace_back(p);
#if defined(__x86_64__)
  for (const char* p : {"x86_64", "haswell", "xeon_phi"})
    if (std::find(out.begin(), out.end(), p) == out.end()) out.emplace_back(p);
#endif
  return out;
}
std::vector<std::string> lib_values() {
#if defined(__x86_64__)
  return {"lib/x86_64-linux-gnu", "lib64", "lib"};
#elif defined(__aarch64__)
  return {"lib/aarch64-linux-gnu", "lib64", "lib"};
#else
  return {"lib64", "lib"};
#endif
}

/// Names of the subdirectories the loader also tries in each directory of a search path, before
/// the directory itself (LD_DEBUG=libs lists them: glibc-hwcaps/x86-64-v3, tls/x86_64/x86_64,
/// x86_64...). Any of them may hold another of these (tls/haswell/avx512_1/x86_64): up to five
/// deep.
const std::vector<std::string>& capability_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out = platform_values();
    for (const char* n : {"glibc-hwcaps", "tls", "avx512_1", "x86-64-v4", "x86-64-v3", "x86-64-v2", "x86_64"})
      if (std::find(out.begin(), out.end(), n) == out.end()) out.emplace_back(n);
    return out;
  }();
  return names;
}

bool a_directory(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// Whether `name` at `at` is the dynamic string token `token` (`$NAME` or `${NAME}`, `at` just
/// past the `$`), and how long it is then (0: it is not).
std::size_t token_at(std::string_view text, std::size_t at, std::string_view token) {
  if (at < text.size() && text[at] == '{') {
    if (text.substr(at + 1, token.size()) == token && at + 1 + token.size() < text.size() &&
        text[at + 1 + token.size()] == '}')
      return token.size() + 2;
    return 0;
  }
  if (text.substr(at, token.size()) != token) return 0;
  const std::size_t end = at + token.size();
  if (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) return 0;
  return token.size();
}

/// Whether `text` holds a dynamic string token glibc expands ($ORIGIN, $LIB, $PLATFORM, braced or
/// not).
bool has_token(std::string_view text) {
  for (std::size_t at = text.find('$'); at != std::string_view::npos; at = text.find('$', at + 1))
    for (std::string_view token : {"ORIGIN", "PLATFORM", "LIB"})
      if (token_at(text, at + 1, token) != 0) return true;
  return false;
}

/// `text` with its dynamic string tokens replaced, once for each combination of their possible
/// values (glibc leaves a `$` it does not know as it is); nullopt past max_expansions of them.
std::optional<std::vector<std::string>> expand_tokens(std::string_view text, const std::string& origin) {
  std::vector<std::string> out{std::string()};
  static const std::vector<std::string> platforms = platform_values(), libs = lib_values();
  for (std::size_t i = 0; i < text.size();) {
    const std::vector<std::string>* values = nullptr;
    std::vector<std::string> origin_value;
    std::size_t n = 0;
    if (text[i] == '$') {
      if ((n = token_at(text, i + 1, "ORIGIN")) != 0) {
        origin_value = {origin};
        values = &origin_value;
      } else if ((n = token_at(text, i + 1, "PLATFORM")) != 0) {
        values = &platforms;
      } else if ((n = token_at(text, i + 1, "LIB")) != 0) {
        values = &libs;
      }
    }
    if (!values) {
      for (auto& s : out) s += text[i];
      ++i;
      continue;
    }
    if (out.size() * values->size() > max_expansions) return std::nullopt;
    std::vector<std::string> next;
    for (const auto& s : out)
      for (const auto& v : *values) next.push_back(s + v);
    out = std::move(next);
    i += 1 + n;
  }
  return out;
}

/// Adds to `places` the capability subdirectories of `dir` the loader may try (deepest first, as
/// it tries them): whatever is there under one of their names (a link too, even one whose target
/// is missing: it may appear) must be trusted, else the verdict names it.
/// `judge` says why a place found there is refused ("" when it passes): the trust check, or in a
/// sandboxed worker whether a task can write there.
using PlaceJudge = std::function<std::string(const fs::path&)>;

TrustVerdict capability_dirs(const fs::path& dir, const std::string& who, int depth, std::vector<fs::path>& places,
                             const PlaceJudge& judge) {
  if (depth == max_capability_depth) return {};
  for (const auto& name : capability_names()) {
    fs::path sub = dir / name;
    struct stat st {};
    if (::lstat(sub.c_str(), &st) != 0) continue;
    if (std::string why = judge(sub); !why.empty())
      return {sub, why + "; the loader searches it for the libraries " + who + " needs"};
    if (!a_directory(sub)) continue;
    if (TrustVerdict v = capability_dirs(sub, who, depth + 1, places, judge); !v) return v;
    places.push_back(sub);
  }
  return {};
}

/// The places a sandboxed worker's tasks can write (set_task_writable_places), by identity.
class TaskWritable {
 public:
  explicit TaskWritable(const std::vector<std::string>& places) {
    for (const auto& p : places) {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) continue;  // nothing there: no task writes it either
      std::error_code ec;
      fs::path real = fs::canonical(p, ec);
      places_.push_back({p, ec ? fs::path(p) : real, st.st_dev, st.st_ino});
    }
  }

  /// "" when reaching `path` goes through no place a task can write; else why (it names that
  /// place). Walked from `/` one component at a time, links followed by hand (at most 40, then
  /// the loader gives up too), each component compared with the places by device and inode: a
  /// path may reach one through a link anywhere, or through another mount of it. A component
  /// that is missing ends the walk: a task could make it only inside a place it writes, which the
  /// walk met before. `resolved`: where the walk ended, the missing rest appended as written.
  std::string on_way(const fs::path& path, fs::path* resolved = nullptr) const {
    std::vector<std::string> rest;  // the components still to walk, the next one last
    auto push = [&rest](const std::string& text) {
      std::vector<std::string> parts;
      for (std::size_t at = 0; at <= text.size();) {
        const std::size_t slash = std::min(text.find('/', at), text.size());
        if (slash > at) parts.push_back(text.substr(at, slash - at));
        at = slash + 1;
      }
      rest.insert(rest.end(), parts.rbegin(), parts.rend());
    };
    push(path.string());
    std::string at = "/";
    struct stat st {};
    if (::stat("/", &st) == 0)
      if (const Place* p = match(st, "/")) return said(path, *p);
    int links = 0;
    while (!rest.empty()) {
      std::string name = std::move(rest.back());
      rest.pop_back();
      if (name == ".") continue;
      if (name == "..") {
        // `at` holds no link: its parent is the lexical one.
        at = fs::path(at).parent_path().string();
        continue;
      }
      const std::string next = (at == "/" ? "" : at) + "/" + name;
      if (::lstat(next.c_str(), &st) != 0) {
        at = next;
        break;
      }
      if (S_ISLNK(st.st_mode)) {
        char target[4096];
        const ssize_t n = ::readlink(next.c_str(), target, sizeof target - 1);
        if (n <= 0 || ++links > 40) {
          at = next;
          break;
        }
        const std::string to(target, static_cast<std::size_t>(n));
        if (to.front() == '/') at = "/";
        push(to);
        continue;
      }
      at = next;
      if (const Place* p = match(st, at)) return said(path, *p);
    }
    if (resolved) {
      fs::path out = at;
      for (auto it = rest.rbegin(); it != rest.rend(); ++it) out /= *it;
      *resolved = out;
    }
    return "";
  }

 private:
  struct Place {
    std::string given;  // as the worker was told, or where it shows its private directory
    fs::path real;      // canonical, in the worker's mount namespace
    dev_t dev;
    ino_t ino;
  };
  /// The place `st` (of `at`) is, by identity; of the names of one place (the private directory
  /// and where it is shown), `at` itself when it is one.
  const Place* match(const struct stat& st, const std::string& at) const {
    const Place* found = nullptr;
    for (const auto& p : places_)
      if (p.dev == st.st_dev && p.ino == st.st_ino && (!found || p.given == at)) found = &p;
    return found;
  }
  static std::string said(const fs::path& path, const Place& p) {
    return path.string() + (path == p.given ? " is" : " lies in " + p.given + ",") +
           " where a task of this sandbox can write";
  }
  std::vector<Place> places_;
};

std::atomic<const TaskWritable*> g_task_writable{nullptr};

/// What reading a file's load names gave: its names; nothing to follow (not a file the loader
/// would load: missing, unreadable, not ELF, another machine's); or `refused`, a file the loader
/// may load that ferry cannot read as it does (then what it loads cannot be judged).
struct LoadNames {
  std::optional<ElfLoadNames> names;
  std::string refused;
};

/// Load names of a file, remembered per path and identity (file_identity): a submission by name
/// checks its plugin every time, and reading the file every time would cost more than the call.
/// The identity stored is the one of the descriptor read, so a file replaced between the lookup
/// and the read is read again next time.
class NamesCache {
 public:
  static constexpr std::size_t max_entries = 16384;

  LoadNames get(const fs::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return {};
    const std::string id = file_identity(st);
    {
      std::lock_guard lock(mu_);
      if (auto it = entries_.find(file.string()); it != entries_.end() && it->second.first == id)
        return it->second.second;
    }
    LoadNames got;
    std::string read_id = id;
    try {
      got.names = read_load_names(file);
      read_id = got.names->identity;
    } catch (const ElfError& e) {
      // This process's own want (EMFILE, ENFILE, ENOMEM) says nothing of the file, which a
      // worker's loader reads: it cannot be judged now, and is not remembered. It was taken as a
      // file the loader would skip, and remembered so: a plugin whose search path is refused
      // passed every later check while its identity stayed.
      if (e.out_of_resources())
        return {std::nullopt, file.string() + " cannot be read now (" + e.what() +
                                  ": this process is out of descriptors or memory): what it loads cannot be judged"};
      if (e.kind() == ElfError::Kind::truncated)
        got.refused = file.string() + " cannot be read as the loader reads it (" + e.what() +
                      "): what it loads cannot be judged";
    }
    std::lock_guard lock(mu_);
    // Cleared when full. A scan judges every plugin of its directories in turn, so a cache smaller
    // than their number never hits: at 1,024 entries, a directory of 3,000 plugins had each read
    // again (an open and eight reads) at every scan, about half a lookup's miss. An entry is
    // about 650 bytes (its path, identity and names), 16,384 of them about 10 MB, where the index
    // keeps about 16 KB per plugin.
    if (entries_.size() >= max_entries) entries_.clear();
    entries_[file.string()] = {read_id, got};
    return got;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::pair<std::string, LoadNames>> entries_;
};

NamesCache& names_cache() {
  static NamesCache* cache = new NamesCache;  // never destroyed: checks may run at exit
  return *cache;
}

/// One walk from a plugin through the libraries it makes the loader read: a worklist, each
/// library once (a deep chain of libraries recursed as deep).
class Walk {
 public:
  /// With `writable` (a sandboxed worker), each place is judged by whether a task can write
  /// there instead of by the trust check (task_writable_verdict).
  explicit Walk(const TaskWritable* writable = nullptr) : writable_(writable) {}

  TrustVerdict run(const fs::path& library) {
    std::error_code ec;
    fs::path abs = fs::absolute(library, ec);
    if (ec) abs = library;
    // dlopen expands these in the name it is given: the path checked would not be the one loaded.
    if (has_token(abs.string())) {
      fail(abs, abs.string() + " holds a $ORIGIN, $LIB or $PLATFORM, which the loader expands in the name of what it loads");
      return verdict_;
    }
    if (writable_) {
      if (std::string why = writable_->on_way(abs); !why.empty()) {
        fail(abs, why + ": a library an earlier call put there would be loaded");
        return verdict_;
      }
    }
    seen_.insert(abs.string());
    work_.push_back({abs, abs.string(), {}});
    while (!work_.empty() && !failed()) {
      Item item = std::move(work_.front());
      work_.pop_front();
      follow(item);
    }
    return verdict_;
  }

 private:
  /// A library to read: `object` (absolute, as the loader names it: its `$ORIGIN` is its
  /// directory), `who` for messages, `inherited`: the DT_RPATH directories of the libraries
  /// that led to it.
  struct Item {
    fs::path object;
    std::string who;
    std::vector<fs::path> inherited;
  };

  bool failed() const { return !verdict_; }
  void fail(const fs::path& at, std::string why) {
    if (!failed()) verdict_ = TrustVerdict{at, std::move(why)};
  }

  void follow(const Item& item) {
    const fs::path& object = item.object;
    const std::string& who = item.who;
    LoadNames read = names_cache().get(object);
    if (!read.refused.empty()) {
      fail(object, read.refused);
      return;
    }
    if (!read.names) return;
    const ElfLoadNames& names = *read.names;
    const std::string origin = object.parent_path().string();
    // Without a DT_RUNPATH, the loader searches the DT_RPATH of this object, then those of the
    // objects that led to it; with one, that alone (and DT_RPATH is ignored).
    std::vector<fs::path> search;
    const char* what = names.runpath ? "RUNPATH" : "RPATH";
    const std::optional<std::string>& path = names.runpath ? names.runpath : names.rpath;
    if (path && !path->empty()) {
      std::size_t start = 0;
      for (;;) {
        const std::size_t colon = path->find(':', start);
        const std::string element = path->substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        add_element(element, object, who, what, search);
        if (failed() || colon == std::string::npos) break;
        start = colon + 1;
      }
    }
    if (failed()) return;
    if (!names.runpath) search.insert(search.end(), item.inherited.begin(), item.inherited.end());
    // Where the loader looks: each directory's capability subdirectories first, then itself.
    std::vector<fs::path> places;
    for (const auto& dir : search) {
      add_capability_dirs(dir, who, places);
      places.push_back(dir);
    }
    if (failed()) return;
    const std::vector<fs::path> passed_on = names.runpath ? std::vector<fs::path>{} : search;
    for (const auto& needed : names.needed) {
      auto expanded = expand_tokens(needed, origin);
      if (!expanded) {
        fail(object, who + " needs " + needed + ", which expands to more names than ferry judges");
        return;
      }
      for (const auto& name : *expanded) {
        if (failed()) return;
        if (name.empty()) continue;
        if (name.find('/') != std::string::npos) {
          if (name.front() != '/') {
            fail(object, who + " needs " + name +
                             ", a relative path, which the loader takes from the worker's current directory");
            return;
          }
          library_found(name, object, needed, passed_on);
          continue;
        }
        for (const auto& place : places) library_found(place / name, object, needed, passed_on);
      }
    }
  }

  void add_element(const std::string& element, const fs::path& object, const std::string& who,
                   const char* what, std::vector<fs::path>& search) {
    if (element.empty()) {
      fail(object, who + "'s " + what + " has an empty element, which the loader takes as the worker's current directory");
      return;
    }
    auto expanded = expand_tokens(element, object.parent_path().string());
    if (!expanded) {
      fail(object, who + "'s " + what + " element '" + element + "' expands to more directories than ferry judges");
      return;
    }
    for (const auto& dir : *expanded) {
      if (dir.empty()) continue;  // as glibc: an element that expands to nothing is skipped
      if (dir.front() != '/') {
        fail(object, who + "'s " + what + " element '" + element + "' is " + dir +
                         ", a relative directory, which the loader takes from the worker's current directory");
        return;
      }
      std::string why;
      if (writable_) {
        // A place a task writes inside the element is refused only where the loader looks:
        // its capability subdirectories, judged apart (a write path `<element>/out` refused
        // every $ORIGIN plugin beside it: a review).
        why = writable_->on_way(dir, nullptr);
      } else {
        why = untrusted_reason_if_present(dir);
      }
      if (!why.empty()) {
        fail(dir, why + "; the loader searches it for the libraries " + who + " needs (its " + what +
                      " element '" + element + "')" +
                      (writable_ ? ": a library an earlier call put there would be loaded" : ""));
        return;
      }
      search.emplace_back(dir);
    }
  }

  void add_capability_dirs(const fs::path& dir, const std::string& who, std::vector<fs::path>& places) {
    const PlaceJudge judge = [this](const fs::path& sub) {
      return writable_ ? writable_->on_way(sub) : untrusted_reason(sub);
    };
    if (TrustVerdict v = capability_dirs(dir, who, 0, places, judge); !v) fail(v.at, v.why);
  }

  /// `file`, where the loader may find `needed` for `parent`: if something is there, it must be
  /// trusted, and is read in its turn. In a sandboxed worker, it must not be reached through a
  /// place a task writes: what is there, and a library named by its path even if missing (a task
  /// may put it there later; one found by its soname in a search directory is missing in a
  /// directory judged already).
  void library_found(const fs::path& file, const fs::path& parent, const std::string& needed,
                     const std::vector<fs::path>& inherited) {
    if (failed()) return;
    struct stat st {};
    const bool present = ::lstat(file.c_str(), &st) == 0;
    const int lstat_errno = errno;
    if (writable_ && (present || needed.find('/') != std::string::npos)) {
      if (std::string why = writable_->on_way(file); !why.empty()) {
        fail(file, why + "; the loader may load it for " + parent.string() + ", which needs " + needed +
                       ": a library an earlier call put there would be loaded");
        return;
      }
    }
    if (!present) {
      errno = lstat_errno;
      if (writable_) return;
      if (errno != ENOENT && errno != ENOTDIR) {
        fail(file, file.string() + " cannot be looked at (" + std::strerror(errno) + "); " + parent.string() +
                       " needs " + needed);
      } else if (needed.find('/') != std::string::npos) {
        // Named by its path: missing is fine only where nobody else could create it. (In a
        // search directory it is: those passed as final directories.)
        if (std::string why = untrusted_reason_if_present(file); !why.empty())
          fail(file, why + "; " + parent.string() + " needs it");
      }
      return;
    }
    if (std::string why = writable_ ? "" : untrusted_reason(file); !why.empty()) {
      fail(file, why + "; the loader may load it for " + parent.string() + ", which needs " + needed);
      return;
    }
    if (!seen_.insert(file.string()).second) return;
    if (seen_.size() > max_objects) {
      fail(file, "more than " + std::to_string(max_objects) +
                     " libraries are found through the search paths of the plugin and its libraries (" +
                     file.string() + " is one too many to judge)");
      return;
    }
    work_.push_back({file, file.string() + " (needed by " + parent.string() + ")", inherited});
  }

  const TaskWritable* writable_;
  TrustVerdict verdict_;
  std::set<std::string> seen_;
  std::deque<Item> work_;
};

}  // namespace

TrustVerdict dependency_verdict(const fs::path& library) { return Walk().run(library); }

void set_task_writable_places(const std::vector<std::string>& places) {
  // Never freed: set once, before the worker loads anything, and read by every load after.
  g_task_writable.store(new TaskWritable(places), std::memory_order_release);
}

TrustVerdict task_writable_verdict(const fs::path& library) {
  const TaskWritable* writable = g_task_writable.load(std::memory_order_acquire);
  if (!writable) return {};
  return Walk(writable).run(library);
}

std::string untrusted_search_directory(const fs::path& dir) {
  if (std::string why = untrusted_reason(dir); !why.empty()) return why;
  std::vector<fs::path> places;
  return capability_dirs(dir, "a worker", 0, places, [](const fs::path& sub) { return untrusted_reason(sub); }).why;
}

void require_trusted_dependencies(const fs::path& library) {
  // Every call walks (the names are remembered per file, the trust checks are not): at
  // submission, TaskRefs::recent keeps what passed for a second already.
  TrustVerdict v = dependency_verdict(library);
  if (!v) throw PluginError::unsafe(library.string(), v.why);
}

}  // namespace ferry::detail
