// SPDX-License-Identifier: BSD-3-Clause
// libferry's own location, from the loader.
#include "platform/paths.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

constexpr int max_tree_depth = 256;

/// Keeps the first reason something was left (those after it follow from it, mostly).
void first_error(std::string& error, std::string what) {
  if (error.empty()) error = std::move(what);
}

/// Empties the directory open as `fd` (which it closes), `depth` levels below the top.
bool empty_directory(int fd, int depth, std::string& error) {
  DIR* d = ::fdopendir(fd);
  if (!d) {
    first_error(error, std::string("fdopendir: ") + std::strerror(errno));
    ::close(fd);
    return false;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  bool ok = true;
  for (const std::string& name : names) {
    if (::unlinkat(fd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR && errno != EPERM) {
      first_error(error, name + ": " + std::strerror(errno));
      ok = false;
      continue;
    }
    if (depth >= max_tree_depth) {
      first_error(error, "more than " + std::to_string(max_tree_depth) + " levels of directories");
      ok = false;
      continue;
    }
    int child = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      // Replaced meanwhile (by a link, say): try it as a file once more.
      const int open_error = errno;
      if (::unlinkat(fd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
      first_error(error, name + ": " + std::strerror(open_error));
      ok = false;
      continue;
    }
    ok = empty_directory(child, depth + 1, error) && ok;
    if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      first_error(error, name + ": " + std::strerror(errno));
      ok = false;
    }
  }
  ::closedir(d);  // closes fd
  return ok;
}

}  // namespace

bool remove_tree(const std::filesystem::path& dir, std::string& error) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    first_error(error, dir.string() + ": " + std::strerror(errno));
    return false;
  }
  bool ok = empty_directory(fd, 1, error);
  if (::rmdir(dir.c_str()) != 0) {
    first_error(error, dir.string() + ": " + std::strerror(errno));
    return false;
  }
  return ok;
}

bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
}

}  // namespace ferry::detail
