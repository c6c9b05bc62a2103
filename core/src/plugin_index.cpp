// SPDX-License-Identifier: BSD-3-Clause
// PluginIndex: plugin directories indexed from the files' own task records, never by loading them.
#include <ferry/plugin_index.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <ferry/errors.hpp>
#include <ferry/task.hpp>

#include "elf_reader.hpp"

namespace ferry {

namespace fs = std::filesystem;

struct PluginIndex::Entry {
  fs::path path;
  std::string version;  // file_version() when it was read
  std::vector<TaskInfo> tasks;
};

std::string PluginIndex::file_version(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

PluginIndex::PluginIndex(std::vector<fs::path> dirs, PluginIndexOptions options)
    : dirs_(std::move(dirs)), options_(options) {
  if (const char* v = std::getenv("FERRY_ALLOW_UNSAFE_PLUGINS"); v && *v && std::strcmp(v, "0") != 0)
    options_.allow_unsafe = true;
}

std::vector<fs::path> PluginIndex::search_path(std::vector<fs::path> dirs) {
  if (const char* env = std::getenv("FERRY_PLUGIN_PATH")) {
    std::string_view p(env);
    while (!p.empty()) {
      auto colon = p.find(':');
      auto dir = p.substr(0, colon);
      if (!dir.empty()) dirs.emplace_back(dir);
      if (colon == std::string_view::npos) break;
      p.remove_prefix(colon + 1);
    }
  }
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

}  // namespace

std::vector<TaskInfo> PluginIndex::read_manifest(const fs::path& library) {
  std::vector<detail::ElfTaskRecord> records;
  try {
    records = detail::read_task_records(library);
  } catch (const detail::ElfError& e) {
    if (e.kind() == detail::ElfError::Kind::missing)
      throw PluginError::file_missing(library.string(), {});
    throw PluginError::not_shared_library(library.string(), e.what());
  }
  std::error_code ec;
  fs::path abs = fs::weakly_canonical(library, ec);
  if (ec) abs = fs::absolute(library);
  std::vector<TaskInfo> out;
  for (const auto& r : records) {
    if (!r.problem.empty()) continue;
    out.push_back(TaskInfo{r.name, r.signature, r.fingerprint, r.abi, abs, plugin_name(abs)});
  }
  if (out.empty()) throw PluginError::not_ferry_plugin(library.string());
  return out;
}

void PluginIndex::check_safe(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;  // missing files are reported where they are used
  if (st.st_uid != ::getuid() && st.st_uid != 0)
    throw PluginError::unsafe(path.string(), "owned by uid " + std::to_string(st.st_uid) +
                                                 ", neither this user nor root");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw PluginError::unsafe(path.string(),
                              std::string("writable by group or others (mode ") + mode + ")");
  }
}

void PluginIndex::rescan_locked() {
  std::vector<std::shared_ptr<Entry>> next;
  skipped_.clear();
  for (const auto& dir : dirs_) {
    std::error_code ec;
    fs::directory_iterator it(dir, ec), end;
    if (ec) {
      skipped_.push_back({dir, "cannot read directory: " + ec.message()});
      continue;
    }
    std::vector<fs::path> files;
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      if (looks_like_library(it->path()) && it->is_regular_file(ec)) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      std::string version = file_version(file);
      auto same = std::find_if(entries_.begin(), entries_.end(), [&](const auto& e) {
        return e->path == file && e->version == version;
      });
      if (same != entries_.end()) {
        next.push_back(*same);
        continue;
      }
      try {
        auto e = std::make_shared<Entry>();
        e->path = file;
        e->version = version;
        e->tasks = read_manifest(file);
        for (auto& t : e->tasks) t.version = version;
        next.push_back(std::move(e));
      } catch (const PluginError& err) {
        skipped_.push_back({file, err.what()});
      }
    }
  }
  entries_ = std::move(next);
}

TaskInfo PluginIndex::find(std::string_view name) {
  auto [plugin, task] = split_plugin(name);
  std::lock_guard lock(mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    // A miss rescans: a plugin copied into the directory meanwhile is found without a restart.
    if (attempt == 1 || entries_.empty()) rescan_locked();
    const TaskInfo* found = nullptr;
    for (const auto& e : entries_) {
      for (const auto& t : e->tasks) {
        if (t.name != task || (!plugin.empty() && t.plugin != plugin)) continue;
        if (found && found->library != t.library)
          throw PluginError::ambiguous(task, found->library.string(), t.library.string());
        found = &t;
      }
    }
    if (!found) continue;
    // A plugin replaced since it was read: read it again (new work uses the new version).
    if (attempt == 0 && file_version(found->library) != found->version) continue;
    if (!options_.allow_unsafe) {
      check_safe(found->library.parent_path());
      check_safe(found->library);
    }
    if (found->abi != detail::plugin_abi_version)
      throw PluginError::abi_mismatch(found->library.string(), found->name, found->abi,
                                      detail::plugin_abi_version);
    return *found;
  }
  std::string searched;
  for (const auto& d : dirs_) searched += (searched.empty() ? "" : ", ") + d.string();
  throw PluginError::task_not_found(std::string(name), searched);
}

std::vector<TaskInfo> PluginIndex::tasks() {
  std::lock_guard lock(mu_);
  rescan_locked();
  std::vector<TaskInfo> out;
  for (const auto& e : entries_) out.insert(out.end(), e->tasks.begin(), e->tasks.end());
  return out;
}

std::vector<SkippedFile> PluginIndex::skipped() {
  std::lock_guard lock(mu_);
  return skipped_;
}

}  // namespace ferry
