// SPDX-License-Identifier: BSD-3-Clause
// `ferry cache list|clear`: the plugins FERRY_WRAP compiled, and their precompiled preludes.
//
// The cache layout is core/src/wrap/wrap_compiler.cpp's: plugins/wrap-<key>-<content>.so (the one
// directory a sandboxed worker may read), wrap-<key>.sum, .cpp and .lock (+ .log.* and .tmp.*
// while building), wrap-<key>.err (a body the compiler refused, remembered) and
// prelude-<key>.hpp(.gch|.pch|.inputs|.lock). Only files named wrap-* and prelude-* are ferry's;
// clear leaves everything else in the directory alone.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <set>
#include <string_view>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "platform/fd.hpp"
#include "platform/paths.hpp"
#include "platform/trust.hpp"
#include "wrap/wrap_compiler.hpp"

namespace ferry::cli {

namespace fs = std::filesystem;

CLI::App* setup_cache(CLI::App& app, CacheOptions& options) {
  const std::string cache_dir_help =
      wrap("the cache directory (default: $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else "
           "~/.cache/ferry)");
  CLI::App* sub = app.add_subcommand("cache", "List or clear the FERRY_WRAP cache");
  sub->require_subcommand(1);
  sub->add_option("--cache-dir", options.cache_dir, cache_dir_help)->type_name("DIR");
  sub->footer(wrap("FERRY_WRAP compiles each wrapped function into a plugin of the cache "
                   "directory (plugins/wrap-<key>-<content>.so, with wrap-<key>.cpp, .sum and "
                   ".lock; a build after a header changed adds a plugin, and executors still running may "
                   "use the earlier one), and precompiles "
                   "the prelude it includes (prelude-<key>.hpp.gch or .pch). A body the compiler "
                   "refused is remembered (wrap-<key>.err, the compiler's words): the same build "
                   "fails at once until the body, flags, compiler or a file the build read (a "
                   "header, a library) change, or the cache is cleared. An entry is rebuilt "
                   "when a file its build read changed.",
                   100) +
              "\n\n" + exit_codes_help("012", "a file could not be removed (clear), or the output could not be written"));

  CLI::App* list = sub->add_subcommand("list", "List the cached wrap plugins and preludes");
  list->add_option("--cache-dir", options.cache_dir, cache_dir_help)->type_name("DIR");
  list->callback([&options] { options.list = true; });
  list->footer(wrap("Prints each cached wrap plugin (plugins/wrap-<key>-<content>.so: size, date, "
                    "the wrapped function and where it is defined, read from the first line of its .cpp; "
                    "wrap-<key>.err: a remembered failure, marked FAILED), "
                    "each precompiled prelude (size, date), then the number and total size of "
                    "ferry's files (wrap-<key>*, prelude-<key>*, plugins/wrap-<key>*; <key> a content "
                    "key, hex digits).",
                    100) +
               "\n\n" + exit_codes_help("012", "the output could not be written"));

  CLI::App* clear = sub->add_subcommand("clear", "Remove ferry's files from the cache");
  clear->add_option("--cache-dir", options.cache_dir, cache_dir_help)->type_name("DIR");
  clear->callback([&options] { options.clear = true; });
  clear->footer(wrap("Removes ferry's files, named wrap-<key>* and prelude-<key>* (<key> a content key "
                     "of at least 16 hex digits: not a wrap-notes.txt of yours), from the cache directory "
                     "and its plugins directory, and the scratch directories (wrap-scratch.*) of builds "
                     "whose program was killed, nothing else, and prints how much was freed. Wrapped functions are compiled "
                     "again when next submitted; do not clear while a program is compiling one.",
                     100) +
                "\n\n" + exit_codes_help("012", "a file could not be removed, or the output could not be written"));
  return sub;
}

namespace {

struct File {
  fs::path path;
  std::string name;
  std::uintmax_t size = 0;
  std::time_t mtime = 0;
  bool plugin = false;  // in the plugin directory (wrap_plugin_dir)
};

/// A name the wrap cache gives its files: wrap- or prelude-, a content key (64 hex digits; 32 in
/// older layouts), then '.', '-' or the end. Not every wrap-* and prelude-*: `ferry cache clear
/// --cache-dir .` removed a user's wrap-up.md and prelude-to-chapter-2.txt.
bool ours(const std::string& name) {
  static constexpr std::size_t min_key_digits = 16;
  for (const std::string_view prefix : {std::string_view("wrap-"), std::string_view("prelude-")}) {
    if (name.rfind(prefix, 0) != 0) continue;
    std::size_t end = prefix.size();
    while (end < name.size() && ((name[end] >= '0' && name[end] <= '9') || (name[end] >= 'a' && name[end] <= 'f'))) ++end;
    return end - prefix.size() >= min_key_digits && (end == name.size() || name[end] == '.' || name[end] == '-');
  }
  return false;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// ferry's files of `dir` (wrap-*, prelude-*), regular files and symlinks only, sorted by name.
std::vector<File> ferry_files(const fs::path& dir, std::error_code& ec) {
  std::vector<File> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!ours(name)) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) continue;
    out.push_back({it->path(), name, S_ISREG(st.st_mode) ? static_cast<std::uintmax_t>(st.st_size) : 0,
                   st.st_mtime});
  }
  std::sort(out.begin(), out.end(), [](const File& a, const File& b) { return a.name < b.name; });
  return out;
}

/// ferry's files of the cache `dir` and of its plugin directory (followed as the wrap cache
/// does); `failed` names the directory that could not be read.
std::vector<File> cache_files(const fs::path& dir, std::error_code& ec, fs::path& failed) {
  failed = dir;
  auto out = ferry_files(dir, ec);
  const fs::path plugins = ferry::detail::wrap_plugin_dir(dir);
  struct stat st {};
  if (ec || ::stat(plugins.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return out;
  failed = plugins;
  for (auto& f : ferry_files(plugins, ec)) {
    f.plugin = true;
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(), [](const File& a, const File& b) { return a.name < b.name; });
  return out;
}

std::string human_size(std::uintmax_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string date(std::time_t t) {
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

/// "name (file:line)" from the first line of a generated translation unit:
/// "// Generated by ferry for FERRY_WRAP(<name>) at <file>:<line>."
std::string wrapped_function(const fs::path& cpp) {
  // At most the first 4 KiB of a regular file, never through a link nor waiting (the cache
  // directory named may be anyone's: a FIFO or a link to /dev/zero there must not hang this).
  int fd = ::open(cpp.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return "?";
  struct stat st {};
  char buf[4096];
  ssize_t n = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? ::read(fd, buf, sizeof buf) : -1;
  ::close(fd);
  if (n <= 0) return "?";
  std::string line(buf, static_cast<std::size_t>(n));
  line = line.substr(0, line.find('\n'));
  static constexpr std::string_view open = "FERRY_WRAP(";
  auto a = line.find(open);
  auto b = a == std::string::npos ? a : line.find(')', a);
  if (b == std::string::npos) return "?";
  std::string name = line.substr(a + open.size(), b - a - open.size());
  auto at = line.find(" at ", b);
  if (at == std::string::npos) return name;
  std::string where = line.substr(at + 4);
  if (!where.empty() && where.back() == '.') where.pop_back();
  return name + "  (" + where + ")";
}

fs::path cache_dir(const CacheOptions& options) {
  return options.cache_dir.empty() ? wrap_options().cache_dir : fs::path(options.cache_dir);
}

int list_cache(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    // The directory may be named by $FERRY_CACHE_DIR or $XDG_CACHE_HOME: shown as text.
    std::fprintf(output(), "%s: no cache directory (nothing cached)\n", terminal_line(dir.string()).c_str());
    return exit_ok;
  }
  fs::path failed;
  auto files = cache_files(dir, ec, failed);
  if (ec) {
    print_error("cache list", "cannot read " + failed.string() + ": " + ec.message());
    return exit_usage;
  }
  std::vector<const File*> entries, preludes;
  std::uintmax_t total = 0;
  for (const auto& f : files) {
    total += f.size;
    // A plugin at the top is of an older ferry's layout: its file only.
    if (f.name.rfind("wrap-", 0) == 0 && (f.plugin ? ends_with(f.name, ".so") : ends_with(f.name, ".err")))
      entries.push_back(&f);
    if (f.name.rfind("prelude-", 0) == 0 && (ends_with(f.name, ".gch") || ends_with(f.name, ".pch")))
      preludes.push_back(&f);
  }
  std::size_t width = 5;
  // File names and the generated sources' first lines are shown as text, escapes and all, a
  // newline too (it would fake a line of the listing); escaped before the columns are measured.
  auto shown = terminal_line;
  for (const auto* f : entries) width = std::max(width, shown(f->name).size());
  for (const auto* f : preludes) width = std::max(width, shown(f->name).size());
  std::string out = "cache " + terminal_line(dir.string()) + "\n";
  auto row = [&](const std::string& a, const std::string& b, const std::string& c,
                 const std::string& d) {
    std::string size = b.size() < 10 ? std::string(10 - b.size(), ' ') + b : b;
    out += a + std::string(width - a.size() + 2, ' ') + size + "  " + c +
           (d.empty() ? "" : std::string(c.size() < 16 ? 16 - c.size() : 0, ' ') + "  " + d) +
           "\n";
  };
  if (!entries.empty()) {
    row("ENTRY", "SIZE", "DATE", "FUNCTION");
    for (const auto* f : entries) {
      // wrap-<key>.cpp, the source of wrap-<key>-<content>.so and of wrap-<key>.err.
      std::string stem = f->path.stem().string();
      if (const auto dash = stem.rfind('-'); ends_with(f->name, ".so") && dash != std::string::npos && dash > 5)
        stem.resize(dash);
      const fs::path cpp = dir / (stem + ".cpp");
      const bool remembered_failure = ends_with(f->name, ".err");
      row(shown(f->name), human_size(f->size), date(f->mtime),
          (remembered_failure ? "FAILED " : "") + shown(wrapped_function(cpp)));
    }
  }
  if (!preludes.empty()) {
    row("PRELUDE", "SIZE", "DATE", "");
    for (const auto* f : preludes) row(shown(f->name), human_size(f->size), date(f->mtime), "");
  }
  out += std::to_string(entries.size()) + (entries.size() == 1 ? " entry, " : " entries, ") +
         std::to_string(preludes.size()) + (preludes.size() == 1 ? " prelude; " : " preludes; ") +
         std::to_string(files.size()) + " ferry files, " + human_size(total) + "\n";
  std::fwrite(out.data(), 1, out.size(), output());
  return exit_ok;
}

/// "wrap-<key>" or "prelude-<key>" of one of ferry's file names (ours()).
std::string entry_of(const std::string& name) {
  const std::size_t dash = name.find('-');
  std::size_t end = dash + 1;
  while (end < name.size() && ((name[end] >= '0' && name[end] <= '9') || (name[end] >= 'a' && name[end] <= 'f'))) ++end;
  return name.substr(0, end);
}

/// Whether a process holds the lock file `lock`, exclusive (its build of the entry is under way)
/// or shared (a wrap's compiler reads the prelude it locks): never waited for, nor created. Taken
/// here when free, and kept in `taken` while the entry's files are removed: a build that starts
/// meanwhile waits, then finds them gone (and, the lock file removed too, locks the new one).
bool lock_held(const fs::path& lock, std::vector<ferry::detail::Fd>& taken) {
  ferry::detail::Fd fd(::open(lock.c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
    taken.push_back(std::move(fd));
    return false;
  }
  return errno == EWOULDBLOCK;
}

/// Whether the process of a scratch directory's name (wrap-scratch.<pid>.<n>) is alive.
bool owner_alive(const std::string& name) {
  const std::string_view rest = std::string_view(name).substr(std::string_view("wrap-scratch.").size());
  const std::string pid_text(rest.substr(0, rest.find('.')));
  if (pid_text.empty() || pid_text.size() > 9 || !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

int clear_cache(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    std::fprintf(output(), "%s: no cache directory (nothing to clear)\n", terminal_line(dir.string()).c_str());
    return exit_ok;
  }
  // Only a directory ferry would use (FERRY_WRAP refuses the others): in one another user owns or
  // can write (HOME=/tmp), what is removed could be swapped under the removal for a link into the
  // user's own files.
  if (std::string why = ferry::detail::untrusted_reason(dir); !why.empty()) {
    print_error("cache clear", "refusing to clear " + dir.string() + ": " + why +
                                   " (FERRY_WRAP does not use it either)");
    return exit_task_failed;
  }
  fs::path failed;
  auto files = cache_files(dir, ec, failed);
  if (ec) {
    print_error("cache clear", "cannot read " + failed.string() + ": " + ec.message());
    return exit_task_failed;
  }
  std::uintmax_t freed = 0;
  std::size_t removed = 0, busy = 0;
  int status = exit_ok;
  // The files of an entry whose build is under way (its lock held) stay: its source and its
  // temporaries removed under the compiler failed the build, and that failure was remembered.
  // A prelude's lock is held shared by every wrap compiling with it: the prelude stays too.
  std::set<std::string> building;
  std::vector<ferry::detail::Fd> taken;  // the locks of the entries removed, until they are
  for (const auto& f : files)
    if (!f.plugin && ends_with(f.name, ".lock") && lock_held(f.path, taken)) building.insert(entry_of(f.name));
  for (const auto& f : files) {
    if (building.count(entry_of(f.name))) {
      ++busy;
      continue;
    }
    if (fs::remove(f.path, ec)) {
      freed += f.size;
      ++removed;
    } else if (ec) {
      print_error("cache clear", "cannot remove " + f.path.string() + ": " + ec.message());
      status = exit_task_failed;
    }
  }
  taken.clear();  // let go: a build waiting for one finds its entry gone
  // The private scratch directories of builds whose program was killed in the middle
  // (wrap-scratch.<pid>.<n>: the compiler's TMPDIR, removed after every run otherwise).
  std::vector<fs::path> scratch_dirs;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    const std::string name = it->path().filename().string();
    if (name.rfind("wrap-scratch.", 0) == 0 && ::lstat(it->path().c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      // One of a live process is a compiler's TMPDIR now.
      if (owner_alive(name)) ++busy;
      else scratch_dirs.push_back(it->path());
    }
  }
  std::size_t scratch = 0;
  for (const auto& d : scratch_dirs) {
    // Never through a link, also one put in place of a directory while it is emptied.
    std::string why;
    if (!ferry::detail::remove_tree(d, why)) {
      print_error("cache clear", "cannot remove " + d.string() + ": " + why);
      status = exit_task_failed;
    } else {
      ++scratch;
    }
  }
  std::fprintf(output(), "removed %zu files%s from %s, freed %s%s\n", removed,
               scratch ? (" and " + std::to_string(scratch) + (scratch == 1 ? " scratch directory" : " scratch directories"))
                             .c_str()
                       : "",
               terminal_line(dir.string()).c_str(), human_size(freed).c_str(),
               busy ? ("; left " + std::to_string(busy) + " of builds under way").c_str() : "");
  return status;
}

}  // namespace

int run_cache(const CacheOptions& options, const GlobalOptions& /*global*/) {
  try {
    fs::path dir = cache_dir(options);
    return finish_output(options.clear ? "cache clear" : "cache list", output(),
                         options.clear ? clear_cache(dir) : list_cache(dir));
  } catch (...) {
    return report("cache", describe(std::current_exception()));
  }
}

}  // namespace ferry::cli
