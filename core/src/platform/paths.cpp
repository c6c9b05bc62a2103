// SPDX-License-Identifier: BSD-3-Clause
// libferry's own location, from the loader.
#include "platform/paths.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

namespace ferry::detail {

std::filesystem::path library_directory() {
  Dl_info info{};
  if (!::dladdr(reinterpret_cast<const void*>(&library_directory), &info) || !info.dli_fname)
    return {};
  std::error_code ec;
  auto file = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::filesystem::path(info.dli_fname).parent_path() : file.parent_path();
}

namespace {

/// Directories held open at once while a tree is removed: a directory found this deep is moved
/// to the top of the tree and emptied from there, so any depth is removed with at most this many
/// descriptors (and as many lists of names) in use.
constexpr int max_open_depth = 16;

/// Keeps the first reason something was left (those after it follow from it, mostly).
void first_error(std::string& error, std::string what) {
  if (error.empty()) error = std::move(what);
}

/// One removal: the top of the tree, open; what a pass did.
struct Removal {
  int top = -1;
  std::chrono::steady_clock::time_point deadline;
  std::string error;        // this pass's first reason
  bool progress = false;    // something removed or moved up
  bool moved_up = false;    // a directory moved to the top: another pass is needed
  bool out_of_time = false; // the deadline passed: everything stops where it is
  std::uint64_t names = 0;  // for the names of the directories moved up

  /// Whether the deadline has passed (then remembered). Looked at before each name, and while
  /// a directory is read: a writer as fast as the reader keeps a readdir going, and one pass
  /// over a huge tree may take longer than any budget.
  bool late() {
    if (!out_of_time && std::chrono::steady_clock::now() >= deadline) out_of_time = true;
    return out_of_time;
  }
};

/// Opens the directory `name` in `parent` (AT_FDCWD: a path) to read and change it, never
/// through a link. A sandboxed task may make directories without read, write or search
/// permission for their owner (mkdir's mode; it cannot chmod): ours are given them first, through
/// an O_PATH descriptor (the very directory, whatever its name becomes). -1 (errno set) when it
/// cannot.
int open_directory(int parent, const char* name) {
  int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 && errno == EACCES) {
    const int path = ::openat(parent, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (path < 0) return -1;
    char via[64];
    std::snprintf(via, sizeof via, "/proc/self/fd/%d", path);
    if (::fstat(path, &st) == 0 && st.st_uid == ::geteuid() && ::chmod(via, 0700) == 0)
      fd = ::openat(path, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(path);
    if (fd < 0) {
      errno = EACCES;
      return -1;
    }
  }
  // Readable, but not writable or searchable by its owner (0500): its entries cannot be removed.
  if (fd >= 0 && ::fstat(fd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU && st.st_uid == ::geteuid())
    ::fchmod(fd, S_IRWXU);
  return fd;
}

/// The names in the directory open as `fd` but "." and ".."; those read before the deadline.
bool list_names(Removal& r, int fd, std::vector<std::string>& names) {
  names.clear();
  const int copy = ::dup(fd);  // closedir closes it, `fd` stays open
  DIR* d = copy < 0 ? nullptr : ::fdopendir(copy);
  if (!d) {
    first_error(r.error, std::string("reading a directory: ") + std::strerror(errno));
    if (copy >= 0) ::close(copy);
    return false;
  }
  ::rewinddir(d);
  std::size_t read = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
    if (++read % 1024 == 0 && r.late()) break;
  }
  ::closedir(d);
  return true;
}

/// Moves the directory `name` in `parent` to the top of the tree, under a name of its own.
bool move_to_top(Removal& r, int parent, const char* name) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string to = ".ferry-removing-" + std::to_string(r.names++);
    if (::renameat2(parent, name, r.top, to.c_str(), RENAME_NOREPLACE) == 0) return true;
    // A file system without RENAME_NOREPLACE: the name is looked at first (what a task puts
    // there meanwhile is in the tree anyway).
    if (errno == EINVAL) {
      if (::faccessat(r.top, to.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0) continue;  // taken
      if (::renameat(parent, name, r.top, to.c_str()) == 0) return true;
    }
    if (errno != EEXIST && errno != ENOTEMPTY) return false;  // ENOENT: gone meanwhile (the caller looks)
  }
  return false;
}

/// Empties the directory open as `fd` (which it closes), `depth` levels below the top.
bool empty_directory(Removal& r, int fd, int depth) {
  std::vector<std::string> names;
  bool ok = list_names(r, fd, names);
  for (const std::string& name : names) {
    if (r.late()) break;
    if (::unlinkat(fd, name.c_str(), 0) == 0) {
      r.progress = true;
      continue;
    }
    if (errno == ENOENT) continue;
    if (errno != EISDIR && errno != EPERM) {
      first_error(r.error, name + ": " + std::strerror(errno));
      ok = false;
      continue;
    }
    if (depth >= max_open_depth) {
      // Emptied from the top, in a later pass.
      if (move_to_top(r, fd, name.c_str())) {
        r.progress = r.moved_up = true;
      } else if (errno != ENOENT) {
        first_error(r.error, name + ": moving it up: " + std::strerror(errno));
        ok = false;
      }
      continue;
    }
    const int child = open_directory(fd, name.c_str());
    if (child < 0) {
      // Replaced meanwhile (by a link, say): try it as a file once more.
      const int open_error = errno;
      if (::unlinkat(fd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
      first_error(r.error, name + ": " + std::strerror(open_error));
      ok = false;
      continue;
    }
    ok = empty_directory(r, child, depth + 1) && ok;
    if (r.out_of_time) break;  // not emptied: left as it is
    if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) == 0) {
      r.progress = true;
    } else if (errno != ENOENT) {
      first_error(r.error, name + ": " + std::strerror(errno));
      ok = false;
    }
  }
  ::close(fd);
  return ok && !r.out_of_time;
}

}  // namespace

bool remove_tree(const std::filesystem::path& dir, std::string& error) {
  return remove_tree(dir, error, std::chrono::steady_clock::now() + std::chrono::seconds(30));
}

bool remove_tree(const std::filesystem::path& dir, std::string& error,
                 std::chrono::steady_clock::time_point deadline) {
  Removal r;
  r.deadline = deadline;
  r.top = open_directory(AT_FDCWD, dir.c_str());
  if (r.top < 0) {
    if (errno == ENOENT) return true;
    first_error(error, dir.string() + ": " + std::strerror(errno));
    return false;
  }
  // Passes over the top until it is empty: each one removes what it finds, down to
  // max_open_depth, and moves deeper directories up for the next one. A pass that removed and
  // moved nothing ends it (what is left stays). A task's descendant may still be adding to the
  // tree (until its guardian ends it), or the tree may be too large for the time given: the
  // deadline stops a pass where it is (even inside a readdir), and the passes with it.
  bool ok = false;
  for (;;) {
    r.error.clear();
    r.progress = r.moved_up = false;
    const int top = ::dup(r.top);
    if (top < 0) {
      r.error = std::string("dup: ") + std::strerror(errno);
      break;
    }
    const bool emptied = empty_directory(r, top, 1);
    if (emptied && !r.moved_up) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) {
        ok = true;
        break;
      }
      if (errno != ENOTEMPTY && errno != EEXIST) {  // ENOTEMPTY: added to meanwhile
        r.error = dir.string() + ": " + std::strerror(errno);
        break;
      }
      r.progress = true;
    }
    if (r.out_of_time || r.late()) {
      r.error = "not emptied in the time given (too large, or something still adding to it)";
      break;
    }
    if (!r.progress) {
      if (r.error.empty()) r.error = "nothing in it could be removed";
      break;
    }
  }
  ::close(r.top);
  if (!ok) first_error(error, r.error);
  return ok;
}

bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
}

}  // namespace ferry::detail
