// SPDX-License-Identifier: BSD-3-Clause
// PluginIndex: plugin directories indexed from the files' own task records, never by loading them.
#include <ferry/plugin_index.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <span>
#include <unordered_map>

#include <ferry/errors.hpp>
#include <ferry/task.hpp>

#include "plugins/elf_reader.hpp"
#include "plugins/load_dependencies.hpp"
#include "platform/config.hpp"
#include "platform/trust.hpp"

namespace ferry {

namespace fs = std::filesystem;

namespace {

/// A file's identity: device, inode, size, modification and change times (as
/// detail::file_version spells them), kept as numbers: a scan compares one per file. 56 bytes:
/// one is kept for every library file of the directories, plugin or not.
struct Identity {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t size = 0;
  std::int64_t mtime_sec = 0, ctime_sec = 0;
  std::uint32_t mtime_nsec = 0, ctime_nsec = 0;
  bool known = false;  // a `stat` gave it

  static Identity of(const struct stat& st) {
    return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
            static_cast<std::int64_t>(st.st_size), static_cast<std::int64_t>(st.st_mtim.tv_sec),
            static_cast<std::int64_t>(st.st_ctim.tv_sec), static_cast<std::uint32_t>(st.st_mtim.tv_nsec),
            static_cast<std::uint32_t>(st.st_ctim.tv_nsec), true};
  }
  /// Of `path`, links followed; unknown when it cannot be had.
  static Identity of(const fs::path& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? of(st) : Identity{};
  }
  /// The same file, unchanged; never for an identity unknown.
  bool same_as(const Identity& o) const {
    return known && o.known && dev == o.dev && ino == o.ino && size == o.size && mtime_sec == o.mtime_sec &&
           mtime_nsec == o.mtime_nsec && ctime_sec == o.ctime_sec && ctime_nsec == o.ctime_nsec;
  }
};

/// A plugin file of the last scan: its tasks, read again only when its identity changes.
struct PluginFile {
  fs::path path;      // as found in its directory (perhaps a symbolic link)
  Identity identity;  // from a `stat` made before it was read
  /// Its change time was older than the scan by more than a file system's timestamps may lag
  /// (`settle_time_ns`) when it was read: a later change moves it. Otherwise it is read again.
  bool settled = false;
  std::vector<TaskInfo> tasks;
  std::string refused;  // why the trust check refuses it ("" = trusted, or the check is off)
};

/// A file of the last scan whose bytes make no plugin (not ELF, another machine's, not a shared
/// library, truncated, no task record): its name, identity and verdict, all a later scan needs to
/// pass it over while its identity stays: 96 bytes (and its name's, past 15 characters). It was a
/// whole entry with its path, an empty task list and its message twice (there and in the skipped
/// list): a process that indexed 20,000 other libraries peaked at 43 MB, 14 MB now
/// (bench/plugin_misses.cpp).
struct OtherFile {
  std::string name;  // in its directory
  Identity identity;
  std::uint32_t verdict = 0;  // in Entry::verdicts: the message without the file's path before it
  bool settled = false;       // as PluginFile::settled
  bool path_first = true;     // the message began with the file's path (they all do)
  /// This scan listed the file and found it unchanged or read it: skipped() says its verdict.
  /// False for a record kept from an earlier scan that this one did not see (its listing cut
  /// short before the name, or the file could not be read for want of descriptors or memory):
  /// kept, not said (skipped() said both "cannot read" and the old verdict of such a file, or the
  /// old verdict of a file no longer listed, as if this scan had seen them). In the padding.
  bool seen = true;
};

static_assert(sizeof(std::string) != 32 || sizeof(OtherFile) == 96, "an OtherFile is kept per file: keep it 96 bytes");

/// A line of skipped() about a file of a directory, other than a verdict of OtherFile.
struct SkippedLine {
  std::string name;
  SkippedFile line;
};

}  // namespace

/// One directory of the search path as the last scan found it (entries_ has one per dirs_, in
/// their order). Its files are in the order of their names.
struct PluginIndex::Entry {
  std::vector<PluginFile> plugins;
  std::vector<OtherFile> others;
  /// What the verdicts of `others` say after the file's path: most are the same few messages.
  std::vector<std::string> verdicts;
  /// What skipped() says of this directory first (its listing: links to nothing, FIFOs; that it
  /// is refused), then of its files other than `others` (merged with theirs by name).
  std::vector<SkippedFile> head;
  std::vector<SkippedLine> lines;
  /// Kept from an earlier scan when this one could not read the directory: its files are not
  /// listed as skipped again.
  bool kept = false;
};

namespace {

/// How far behind a scan's start a file's change time must be for what was read of it to be
/// remembered. A write sets the change time from a clock that may be coarse: a jiffy, or a whole
/// second or two on some file systems (ext4 with small inodes, FAT, some NFS servers). A file
/// written again within the same tick after it was read keeps its change time (and size, and a
/// forged mtime); one whose change time is this much older than the read cannot be written so.
/// (git's "racily clean" index entries are the same problem.)
constexpr std::int64_t settle_time_ns = 2'000'000'000;

std::int64_t nanoseconds(const struct timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

}  // namespace

std::string PluginIndex::file_version(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return detail::file_version(st);
}

namespace {

/// `dirs`, each made absolute against the current directory now: a relative one was judged at
/// each lookup against whatever the current directory had become (a program that chdir'd to a
/// tree of its own got the library a refused directory's scan had found).
std::vector<fs::path> absolute_dirs(std::vector<fs::path> dirs) {
  for (auto& d : dirs) {
    std::error_code ec;
    fs::path a = fs::absolute(d, ec);
    if (!ec) d = std::move(a);
  }
  return dirs;
}

/// A directory as one spelling: `/opt/plugins/` and `/opt/x/../plugins` are `/opt/plugins`.
fs::path directory_key(const fs::path& dir) {
  fs::path n = dir.lexically_normal();
  if (!n.has_filename() && n.has_relative_path()) n = n.parent_path();
  return n;
}

}  // namespace

PluginIndex::PluginIndex(std::vector<fs::path> dirs, PluginIndexOptions options)
    : dirs_(absolute_dirs(std::move(dirs))), options_(options) {
  if (detail::unsafe_allowed_by_environment()) options_.allow_unsafe = true;
}

std::vector<fs::path> PluginIndex::search_path(std::vector<fs::path> dirs) {
  auto env = detail::Config::read().plugin_path;
  dirs.insert(dirs.end(), env.begin(), env.end());
  return dirs;
}

namespace {

std::string plugin_name(const fs::path& file) {
  std::string n = file.filename().string();
  if (n.rfind("lib", 0) == 0) n.erase(0, 3);
  if (auto so = n.find(".so"); so != std::string::npos) n.erase(so);
  return n;
}

bool looks_like_library(const fs::path& file) {
  std::string n = file.filename().string();
  return n.size() > 3 && (n.ends_with(".so") || n.find(".so.") != std::string::npos);
}

/// Splits "plugin:task" at the first ':' that is not part of "::".
std::pair<std::string, std::string> split_plugin(std::string_view name) {
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] != ':') continue;
    bool pair = (i + 1 < name.size() && name[i + 1] == ':') || (i > 0 && name[i - 1] == ':');
    if (!pair) return {std::string(name.substr(0, i)), std::string(name.substr(i + 1))};
    ++i;
  }
  return {{}, std::string(name)};
}

/// The name without its namespaces: "png_dims" for "zl::png_dims".
std::string_view unqualified(std::string_view name) {
  auto colons = name.rfind("::");
  return colons == std::string_view::npos ? name : name.substr(colons + 2);
}

/// Levenshtein distance, ignoring case.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  auto lower = [](char c) { return std::tolower(static_cast<unsigned char>(c)); };
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// Issue 16: what a missed lookup of `task` (in `plugin`, when given) may have meant, spelt as it
/// would be submitted. Close means, best first: the same name in another plugin; the same name in
/// another namespace, or without one (FERRY_TASK(zl::png_dims) is named "zl::png_dims", and
/// "zl::png_dims" may have meant task png_dims of plugin zl); a few typing mistakes away.
std::vector<std::string> close_names(const std::vector<const TaskInfo*>& known,
                                     const std::string& plugin, const std::string& task) {
  const std::size_t allowed = task.size() <= 4 ? 1 : task.size() <= 10 ? 2 : 3;
  struct Candidate {
    std::size_t rank;
    const TaskInfo* info;
  };
  std::vector<Candidate> close;
  for (const TaskInfo* t : known) {
    std::size_t rank;
    if (t->name == task) {
      rank = 0;
    } else if (unqualified(t->name) == unqualified(task) ||
               (plugin.empty() && task == t->plugin + "::" + t->name)) {
      rank = 1;
    } else {
      std::size_t d = std::min(edit_distance(t->name, task),
                               edit_distance(unqualified(t->name), unqualified(task)));
      if (d > allowed) continue;
      rank = 1 + d;
    }
    close.push_back({rank, t});
  }
  std::stable_sort(close.begin(), close.end(), [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.info->name < b.info->name;
  });
  std::vector<std::string> out;
  for (const auto& c : close) {
    // A name two plugins export, or a lookup that named a plugin, is spelt plugin:task.
    bool shared = std::count_if(known.begin(), known.end(), [&](const TaskInfo* t) {
                    return t->name == c.info->name && t->plugin != c.info->plugin;
                  }) > 0;
    std::string text = !plugin.empty() || shared
                           ? "'" + c.info->plugin + ":" + c.info->name + "'"
                           : "'" + c.info->name + "' (plugin " + c.info->plugin + ")";
    if (std::find(out.begin(), out.end(), text) == out.end()) out.push_back(std::move(text));
    if (out.size() == 4) break;
  }
  return out;
}

/// Why a directory entry under a plugin's name (not a regular file, or a symbolic link to none)
/// cannot be read as one; "" for a directory (a build may keep one under such a name: it is no
/// file, and not said) and for an entry gone since the listing. `stat` opens nothing: a FIFO or
/// a device is never opened.
std::string not_a_plugin_file(const fs::path& entry) {
  struct stat st {};
  if (::stat(entry.c_str(), &st) != 0) {
    const int error = errno;
    if (error != ENOENT) return std::strerror(error);
    std::error_code ec;
    const fs::path target = fs::read_symlink(entry, ec);
    if (ec) return {};
    struct stat link {};
    const fs::path seen = target.is_absolute() ? target : entry.parent_path() / target;
    return "a symbolic link to " + target.string() +
           (::lstat(seen.c_str(), &link) != 0 ? ", which does not exist" : ", which leads to no file");
  }
  switch (st.st_mode & S_IFMT) {
    case S_IFDIR: return {};
    case S_IFIFO: return "not a regular file (a FIFO)";
    case S_IFSOCK: return "not a regular file (a socket)";
    case S_IFCHR: return "not a regular file (a character device)";
    case S_IFBLK: return "not a regular file (a block device)";
    default: return "not a regular file";
  }
}

/// This process ran out of something it needs to read a file or a directory: the file says
/// nothing then, and what was read of it before still stands.
bool short_of_resources(int error) { return error == EMFILE || error == ENFILE || error == ENOMEM; }

/// "cannot read PATH: WHY", said of a plugin file that could not be read.
std::string cannot_read(const fs::path& file, const std::string& why) {
  return "cannot read " + file.string() + ": " + why;
}

/// The manifest of `library` (PluginIndex::read_manifest). When this process could not open it
/// for want of descriptors or memory: empty, with the reason in `*short_of` if given, else a
/// PluginError saying so (it was "not a shared library"). When it could not open it for another
/// reason (no permission: `e.error()` is open's errno): empty, with the reason in `*unreadable`
/// if given, else a PluginError "cannot read" (it was "not a shared library: Permission denied",
/// as if the bytes were wrong).
///
/// `*by_content` (if given) is set when the PluginError thrown is a verdict of the file's bytes
/// alone (not ELF, another machine's, not a shared library, truncated, no task record): the
/// same bytes would give it again. Not for an open or a read that failed (permissions, which
/// the directories on the way and this process's credentials decide too; an I/O error).
std::vector<TaskInfo> manifest_of(const fs::path& library, std::string* short_of, std::string* unreadable,
                                  bool* by_content = nullptr) {
  std::vector<detail::ElfTaskRecord> records;
  if (by_content) *by_content = false;
  try {
    records = detail::read_task_records(library);
  } catch (const detail::ElfError& e) {
    using Kind = detail::ElfError::Kind;
    if (by_content)
      *by_content = e.kind() == Kind::not_elf || e.kind() == Kind::wrong_machine ||
                    e.kind() == Kind::not_shared_library || e.kind() == Kind::truncated;
    if (e.kind() == detail::ElfError::Kind::unreadable && e.error() != 0 && !e.out_of_resources()) {
      if (unreadable) {
        *unreadable = cannot_read(library, e.what());
        return {};
      }
      throw PluginError(cannot_read(library, e.what()), library.string(), {}, e.what());
    }
    if (e.out_of_resources()) {
      std::string why = cannot_read(library, e.what());
      if (short_of) {
        *short_of = std::move(why);
        return {};
      }
      throw PluginError(why + " (this process is out of descriptors or memory)", library.string(), {}, e.what());
    }
    if (e.kind() == detail::ElfError::Kind::missing)
      throw PluginError::file_missing(library.string(), {});
    if (e.kind() == detail::ElfError::Kind::wrong_machine)
      throw PluginError::wrong_machine(library.string(), e.what());
    throw PluginError::not_shared_library(library.string(), e.what());
  }
  std::vector<TaskInfo> out;
  fs::path abs;  // made for a plugin only: a path's links are read one component at a time
  for (const auto& r : records) {
    if (!r.problem.empty()) continue;
    if (abs.empty()) {
      std::error_code ec;
      abs = fs::weakly_canonical(library, ec);
      if (ec) abs = fs::absolute(library);
    }
    out.push_back(TaskInfo{r.name, r.signature, r.fingerprint, r.abi, abs, plugin_name(abs)});
  }
  if (out.empty()) {
    if (by_content) *by_content = true;
    throw PluginError::not_ferry_plugin(library.string());
  }
  return out;
}

}  // namespace

std::vector<TaskInfo> PluginIndex::read_manifest(const fs::path& library) {
  return manifest_of(library, nullptr, nullptr);
}

void PluginIndex::check_safe(const fs::path& path) {
  // A missing file is reported where it is used (the worker's loader), unless another user
  // could create it before then.
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) {
    if (std::string why = detail::untrusted_reason_if_present(path); !why.empty())
      throw PluginError::unsafe(path.parent_path().string(), why, path.string());
    return;
  }
  detail::require_trusted(path);
  detail::require_trusted_dependencies(path);
}

namespace {

/// The name of a file of a directory listing (`dir / name`): what follows its last '/'.
std::string_view file_name(const fs::path& file) {
  std::string_view p = file.native();
  const auto slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

std::string_view name_of(const PluginFile& f) { return file_name(f.path); }
std::string_view name_of(const OtherFile& f) { return f.name; }

/// The record of `name` in `files` (sorted by name) at or after `*from`, which moves past what
/// is smaller: a scan goes through the names in order, so through the last scan's records once.
template <class File>
File* record_of(std::vector<File>& files, std::size_t* from, std::string_view name) {
  while (*from < files.size() && name_of(files[*from]) < name) ++*from;
  return *from < files.size() && name_of(files[*from]) == name ? &files[*from] : nullptr;
}

}  // namespace

void PluginIndex::rescan_locked() {
  unreadable_dirs_.clear();
  unreadable_files_.clear();
  short_of_.clear();
  // The scan's start by the clock change times are stamped with: a file changed less than
  // `settle_time_ns` before it is read again at the next scan.
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t started = nanoseconds(now);
  // The scan moves the last scan's records over as it goes: one cut short by an exception (no
  // memory for a large ELF's table) left them half moved, and the next scan read verdict numbers
  // past the end of their texts (heap corruption). Cut short, the index forgets everything, and
  // its next use reads every directory again.
  struct ForgetUnlessDone {
    std::vector<std::shared_ptr<Entry>>& entries;
    bool done = false;
    ~ForgetUnlessDone() {
      if (!done) entries.clear();
    }
  } forget{entries_};
  std::vector<std::shared_ptr<Entry>> next;
  next.reserve(dirs_.size());
  for (std::size_t d = 0; d < dirs_.size(); ++d) {
    const fs::path& dir = dirs_[d];
    // What the last scan found in this directory: each file is looked up there by name (both are
    // in the order of the names), and what is kept is moved over. Files this scan does not list
    // are forgotten with it: the memory is the last listing's.
    Entry* previous = d < entries_.size() ? entries_[d].get() : nullptr;
    auto entry = std::make_shared<Entry>();
    // What the last scan found, kept when this process cannot read the directory now for want
    // of descriptors or memory: a host at its RLIMIT_NOFILE lost every task it had found, and
    // was told no plugin provides them.
    auto keep_all = [&] {
      if (!previous) return;
      entry->plugins = std::move(previous->plugins);
      entry->others = std::move(previous->others);
      entry->verdicts = std::move(previous->verdicts);
      entry->kept = true;
    };
    std::error_code ec;
    fs::directory_iterator it(dir, ec), end;
    if (ec) {
      entry->head.push_back({dir, "cannot read directory: " + ec.message()});
      unreadable_dirs_.push_back(entry->head.back());
      if (short_of_resources(ec.value())) {
        short_of_ = cannot_read(dir, ec.message());
        keep_all();
      }
      next.push_back(std::move(entry));
      continue;
    }
    std::vector<std::string> names;
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      if (!looks_like_library(it->path())) continue;
      // The loop's own error code stays the listing's: a link to nothing is said, not an error of
      // the directory.
      std::error_code type_error;
      if (it->is_regular_file(type_error)) {
        names.emplace_back(file_name(it->path()));
      } else if (std::string why = not_a_plugin_file(it->path()); !why.empty()) {
        // A link to a plugin not built yet, a FIFO or a device under a plugin's name was passed
        // over in silence, and a lookup of the task expected there said only that none has it.
        entry->head.push_back({it->path(), cannot_read(it->path(), why)});
        unreadable_files_.push_back(entry->head.back());
      }
    }
    // Read in part: what was found before stays (those listed again are read again below).
    const bool partial = ec && short_of_resources(ec.value());
    if (partial) {
      short_of_ = cannot_read(dir, ec.message());
      entry->head.push_back({dir, "cannot read directory: " + ec.message() +
                                      " (its listing was cut short: the files it did not list are kept as the "
                                      "last scan found them, and not said here)"});
    }
    // In the order of their names' bytes: path's own comparison, component by component, was a
    // tenth of a scan of 20,000 files.
    std::sort(names.begin(), names.end());
    // A directory others could write to is refused as a whole, and said once: whatever its
    // files' own modes, someone else decides what is in it.
    // Its way is walked once: each plugin's walk goes on from the directory (3,000 plugins walked
    // the same way from `/` at every scan), and the way is checked again after its files.
    std::optional<detail::DirectoryTrust> dir_trust;
    if (!options_.allow_unsafe) dir_trust.emplace(dir);
    std::string dir_refused = dir_trust ? dir_trust->reason() : std::string();
    if (!dir_refused.empty()) entry->head.push_back({dir, "refused: " + dir_refused});
    // Why a plugin of the directory is refused ("" when trusted): its path (through the directory
    // walked once, or `whole` from `/`), then what its own search path makes the loader read.
    auto refusal_of = [&](const fs::path& file, std::string_view name, bool whole) {
      std::string why = whole ? detail::untrusted_reason(file) : dir_trust->untrusted_reason_of(name);
      if (why.empty())
        if (detail::TrustVerdict v = detail::dependency_verdict(file); !v) why = std::move(v.why);
      return why;
    };
    std::vector<std::size_t> judged;  // plugins this scan judged through the directory's walk
    // The verdicts' texts: those of the last scan, their numbers kept, and any new ones.
    std::unordered_map<std::string, std::uint32_t> verdict_numbers;
    if (previous) {
      entry->verdicts = std::move(previous->verdicts);
      for (std::uint32_t v = 0; v < entry->verdicts.size(); ++v) verdict_numbers.emplace(entry->verdicts[v], v);
    }
    auto verdict_number = [&](std::string text) {
      auto [at, added] = verdict_numbers.emplace(std::move(text), static_cast<std::uint32_t>(entry->verdicts.size()));
      if (added) entry->verdicts.push_back(at->first);
      return at->second;
    };
    std::vector<PluginFile> no_plugins;
    std::vector<OtherFile> no_others;
    std::vector<PluginFile>& old_plugins = previous ? previous->plugins : no_plugins;
    std::vector<OtherFile>& old_others = previous ? previous->others : no_others;
    std::size_t next_old_plugin = 0, next_old_other = 0;
    // At most one record per name: the vector grows no more (growing by doubling held up to
    // three times the records while it was copied, with the last scan's).
    entry->others.reserve(names.size());
    for (const auto& name : names) {
      const fs::path file = dir / name;
      // Its identity before it is read: whatever changes it after this moves the identity (a
      // rename-over or a new file gives another inode, a write or a chmod the change time, which
      // only the clock sets), so what is read may be newer than the identity, never older.
      struct stat st {};
      const bool stated = ::stat(file.c_str(), &st) == 0;
      const Identity identity = stated ? Identity::of(st) : Identity{};
      PluginFile* old_plugin = record_of(old_plugins, &next_old_plugin, name);
      OtherFile* old_other = record_of(old_others, &next_old_other, name);
      if (old_other && old_other->settled && old_other->identity.same_as(identity)) {
        old_other->seen = true;
        entry->others.push_back(std::move(*old_other));  // no tasks to offer or refuse: no trust check
        continue;
      }
      PluginFile plugin;
      if (old_plugin && old_plugin->settled && old_plugin->identity.same_as(identity)) {
        plugin = std::move(*old_plugin);
      } else {
        plugin.path = file;
        plugin.identity = identity;
        plugin.settled = stated && nanoseconds(st.st_ctim) <= started - settle_time_ns;
        std::string short_of, unreadable;
        bool by_content = false;
        try {
          plugin.tasks = manifest_of(file, &short_of, &unreadable, &by_content);
        } catch (const PluginError& err) {
          // Bytes that make no plugin are remembered with the file's identity: 20,000 other
          // libraries beside the plugins were read again at every lookup that missed (1 s each).
          // What a failed open or read says (permissions, I/O) is not: it is tried again.
          if (!by_content || !stated) {
            entry->lines.push_back({name, {file, err.what()}});
            continue;
          }
          // The message less the path before it, which the file's name gives back (skipped()).
          std::string_view text = err.what();
          const bool path_first = text.starts_with(file.native());
          if (path_first) text.remove_prefix(file.native().size());
          entry->others.push_back(OtherFile{name, identity, verdict_number(std::string(text)), plugin.settled, path_first});
          continue;
        }
        if (!unreadable.empty()) {
          entry->lines.push_back({name, {file, unreadable}});
          unreadable_files_.push_back(entry->lines.back().line);
          continue;
        }
        if (!short_of.empty()) {
          // What was read of it before stands, but this scan says only what it saw: that it
          // cannot read the file (its old verdict is kept unsaid).
          entry->lines.push_back({name, {file, short_of}});
          short_of_ = std::move(short_of);
          if (old_plugin) entry->plugins.push_back(std::move(*old_plugin));
          if (old_other) {
            old_other->seen = false;
            entry->others.push_back(std::move(*old_other));
          }
          continue;
        }
        const std::string version = stated ? detail::file_version(st) : std::string();
        for (auto& t : plugin.tasks) t.version = version;
      }
      // Judged at every scan (the file's identity says nothing of its directories, its links'
      // or its owner's group): `ferry list` and a lookup see the same verdict. Reading a
      // manifest runs none of the plugin's code, so a refused plugin is still indexed, to be
      // named when someone asks for its tasks.
      if (options_.allow_unsafe) {
        plugin.refused.clear();
      } else if (!dir_refused.empty()) {
        plugin.refused = dir_refused;
      } else {
        plugin.refused = refusal_of(file, name, false);
        if (!plugin.refused.empty()) entry->lines.push_back({name, {file, "refused: " + plugin.refused}});
        judged.push_back(entry->plugins.size());
      }
      entry->plugins.push_back(std::move(plugin));
    }
    if (!judged.empty() && !dir_trust->still_holds()) {
      // The directory's way changed while its files were judged (by this user or root: nobody
      // else can change what passed): each is judged again, walked whole from `/`, and its line
      // said anew. (Every "refused: " line of a file is one of these.)
      std::erase_if(entry->lines, [](const SkippedLine& l) { return l.line.reason.starts_with("refused: "); });
      for (std::size_t i : judged) {
        PluginFile& p = entry->plugins[i];
        p.refused = refusal_of(p.path, name_of(p), true);
        if (!p.refused.empty()) entry->lines.push_back({std::string(name_of(p)), {p.path, "refused: " + p.refused}});
      }
      std::stable_sort(entry->lines.begin(), entry->lines.end(),
                       [](const SkippedLine& a, const SkippedLine& b) { return a.name < b.name; });
    }
    if (partial) {
      // The files of the last scan this one did not list (the name of one moved over is empty):
      // kept for lookups, not said by skipped(), which says the listing was cut short instead.
      for (auto& p : old_plugins)
        if (!p.path.empty() && !std::binary_search(names.begin(), names.end(), name_of(p)))
          entry->plugins.push_back(std::move(p));
      for (auto& o : old_others)
        if (!o.name.empty() && !std::binary_search(names.begin(), names.end(), o.name)) {
          o.seen = false;
          entry->others.push_back(std::move(o));
        }
      auto by_name = [](const auto& a, const auto& b) { return name_of(a) < name_of(b); };
      std::sort(entry->plugins.begin(), entry->plugins.end(), by_name);
      std::sort(entry->others.begin(), entry->others.end(), by_name);
    }
    // Verdicts no file has any more are dropped (each is one of a few messages, but a truncated
    // file's names its offsets).
    std::vector<std::uint32_t> renumbered(entry->verdicts.size(), UINT32_MAX);
    std::vector<std::string> used;
    for (auto& o : entry->others) {
      std::uint32_t& n = renumbered[o.verdict];
      if (n == UINT32_MAX) {
        n = static_cast<std::uint32_t>(used.size());
        used.push_back(std::move(entry->verdicts[o.verdict]));
      }
      o.verdict = n;
    }
    entry->verdicts = std::move(used);
    if (entry->others.capacity() > entry->others.size() + entry->others.size() / 8 + 64) entry->others.shrink_to_fit();
    // The last scan's records of this directory, moved from or forgotten: freed before the next
    // directory's are made.
    old_plugins = {};
    old_others = {};
    next.push_back(std::move(entry));
  }
  entries_ = std::move(next);
  forget.done = true;
}

TaskInfo PluginIndex::find(std::string_view name) {
  auto [plugin, task] = split_plugin(name);
  std::lock_guard lock(mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    // A miss rescans: a plugin copied into the directory meanwhile is found without a restart.
    if (attempt == 1 || entries_.empty()) rescan_locked();
    // A refused plugin (another user's file, say) neither makes a trusted one's name ambiguous
    // (a denial of service by anyone who can drop a file in a shared directory) nor is taken
    // when a trusted one has the task; alone, it is named in the refusal.
    const TaskInfo* found = nullptr;
    const PluginFile* found_in = nullptr;
    for (bool refused : {false, true}) {
      for (const auto& dir : entries_) {
        for (const auto& e : dir->plugins) {
          if (e.refused.empty() == refused) continue;
          for (const auto& t : e.tasks) {
            if (t.name != task || (!plugin.empty() && t.plugin != plugin)) continue;
            if (found && found->library != t.library)
              throw PluginError::ambiguous(task, found->library.string(), t.library.string());
            found = &t;
            found_in = &e;
          }
        }
      }
      if (found) break;
    }
    if (!found) continue;
    // A plugin replaced since it was read: read it again (new work uses the new version). Its
    // identity through the path the scan found, as the scan compares it: the library's own path
    // missed a link of the directory pointed at another file (the old one kept, `ln -sf`).
    if (attempt == 0 && !Identity::of(found_in->path).same_as(found_in->identity)) continue;
    // Checked again now, along the path as found in the directory (through a symbolic link,
    // both the link's directory and the target's way), and the directory itself as `ferry list`
    // judges it: a sticky one (as /tmp) may be on a path's way, but whatever others add to a
    // plugin directory is taken as a plugin.
    // What the plugin's own search path makes the loader read too (its RUNPATH, $ORIGIN).
    if (!options_.allow_unsafe) {
      detail::require_trusted(found_in->path, /*directory_final=*/true);
      detail::require_trusted_dependencies(found->library);
    }
    if (found->abi != detail::plugin_abi_version)
      throw PluginError::abi_mismatch(found->library.string(), found->name, found->abi,
                                      detail::plugin_abi_version);
    return *found;
  }
  // Not found in what this process could read: the task may be in what it could not.
  if (!short_of_.empty())
    throw PluginError("cannot tell which plugin provides task " + std::string(1, '\'') + std::string(name) +
                          "': " + short_of_ +
                          " (this process is out of descriptors or memory: raise RLIMIT_NOFILE, ulimit -n)",
                      {}, "ferry_task:" + std::string(task), short_of_);
  // A directory that could not be read says why, and so do the files under plugins' names in it
  // (a few: the task may be in one of them).
  std::string searched;
  for (const auto& d : dirs_) {
    searched += (searched.empty() ? "" : ", ") + d.string();
    for (const auto& [path, why] : unreadable_dirs_)
      if (path == d) searched += " (" + why + ")";
    const fs::path key = directory_key(d);
    std::vector<std::string> files;
    for (const auto& [path, why] : unreadable_files_)
      if (directory_key(path.parent_path()) == key) files.push_back(why);
    if (files.empty()) continue;
    constexpr std::size_t named = 3;
    std::string said;
    for (std::size_t i = 0; i < files.size() && i < named; ++i) said += (i == 0 ? "" : "; ") + files[i];
    if (files.size() > named) said += "; and " + std::to_string(files.size() - named) + " more files it could not read";
    searched += " (" + said + ")";
  }
  std::vector<const TaskInfo*> known;
  for (const auto& dir : entries_)
    for (const auto& e : dir->plugins)
      for (const auto& t : e.tasks) known.push_back(&t);
  throw PluginError::task_not_found(std::string(name), searched, close_names(known, plugin, task));
}

std::vector<TaskInfo> PluginIndex::tasks() {
  std::lock_guard lock(mu_);
  rescan_locked();
  std::vector<TaskInfo> out;
  for (const auto& dir : entries_)
    for (const auto& e : dir->plugins)
      if (e.refused.empty()) out.insert(out.end(), e.tasks.begin(), e.tasks.end());
  return out;
}

std::vector<SkippedFile> PluginIndex::skipped() {
  std::lock_guard lock(mu_);
  // Made now, not kept: each file that is no plugin would hold its path and message a second
  // time. In the order of the scan: each directory's own lines, then its files' by name.
  std::vector<SkippedFile> out;
  for (std::size_t d = 0; d < entries_.size(); ++d) {
    const Entry& e = *entries_[d];
    out.insert(out.end(), e.head.begin(), e.head.end());
    auto line = e.lines.begin();
    const std::span<const OtherFile> others = e.kept ? std::span<const OtherFile>() : std::span(e.others);
    for (const OtherFile& o : others) {
      if (!o.seen) continue;
      for (; line != e.lines.end() && line->name < o.name; ++line) out.push_back(line->line);
      fs::path file = dirs_[d] / o.name;
      std::string why = o.path_first ? file.native() + e.verdicts[o.verdict] : e.verdicts[o.verdict];
      out.push_back({std::move(file), std::move(why)});
    }
    for (; line != e.lines.end(); ++line) out.push_back(line->line);
  }
  return out;
}

}  // namespace ferry
