// SPDX-License-Identifier: BSD-3-Clause
// PluginIndex: which tasks the plugin directories offer, read from the plugins' manifests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/export.hpp>
#include <ferry/task_info.hpp>  // TaskInfo: one task of a plugin, as its manifest describes it

namespace ferry {

/** @brief A file of a plugin directory that was skipped, and why. */
struct SkippedFile {
  std::filesystem::path path;
  std::string reason;
};

struct PluginIndexOptions {
  /// Accept files and directories writable by group/others or owned by another user.
  bool allow_unsafe = false;
};

/**
@brief Index of the tasks found in plugin directories. Manifests are read from the files (ELF
symbols and section data), never by loading the plugin into this process.

Lookups that miss rescan the directories, so a plugin copied in while the host runs is found
without a restart. Thread-safe.
*/
class FERRY_API PluginIndex {
 public:
  /// Relative `dirs` are taken against the current directory now, once: a later chdir does not
  /// move them.
  explicit PluginIndex(std::vector<std::filesystem::path> dirs, PluginIndexOptions options = {});

  /// `dirs` followed by the entries of $FERRY_PLUGIN_PATH (colon-separated).
  static std::vector<std::filesystem::path> search_path(std::vector<std::filesystem::path> dirs);

  /**
  @brief The task named `name`, or `plugin:name` to choose among plugins exporting the same name.
  @throws PluginError when no plugin has it, or when two do (naming both paths), or when the
  plugin that has it is unsafe or of another ABI.
  */
  TaskInfo find(std::string_view name);

  /// Every task of every usable plugin (rescans first): refused plugins are not listed.
  std::vector<TaskInfo> tasks();
  /// Files skipped by the last scan, with the reason: not plugins, unreadable, or refused by the
  /// trust check ("refused: ..."), exactly as find() would refuse them.
  std::vector<SkippedFile> skipped();
  const std::vector<std::filesystem::path>& directories() const noexcept { return dirs_; }

  /**
  @brief The manifest of one plugin file.
  @throws PluginError: missing, not a shared library (or truncated), not a ferry plugin.
  */
  static std::vector<TaskInfo> read_manifest(const std::filesystem::path& library);

  /// Refuses (PluginError::unsafe) a plugin another user could have planted, like ssh's
  /// StrictModes: the file, every directory on its way from `/` and, through symbolic links, the
  /// link's directory and the target's whole way must be owned by this user or root and not
  /// writable by group or others (a sticky directory such as /tmp may be on the way). A missing
  /// file passes (it is reported where it is used).
  static void check_safe(const std::filesystem::path& path);

  /// Identity of a file as it is now ("dev:ino:size:mtime:ctime", times as sec.nsec), "" if it
  /// cannot be read. A plugin replaced on disk, or written in place, gets a new one (so does a
  /// chmod, chown or new hard link of it: they move its ctime).
  static std::string file_version(const std::filesystem::path& path);

 private:
  struct Entry;
  void rescan_locked();

  std::vector<std::filesystem::path> dirs_;
  PluginIndexOptions options_;
  std::mutex mu_;
  std::vector<std::shared_ptr<Entry>> entries_;
  std::vector<SkippedFile> unreadable_dirs_;  // directories of the last scan that could not be read
  std::vector<SkippedFile> unreadable_files_;  // files under plugins' names it could not read
  std::string short_of_;  // what the last scan could not read for want of descriptors or memory
};

}  // namespace ferry
