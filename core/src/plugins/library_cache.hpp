// SPDX-License-Identifier: BSD-3-Clause
// Worker side: plugins loaded once with Boost.DLL and never unloaded; task records found by name.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ferry/task.hpp>

#include "wire/failure.hpp"

namespace boost::dll {
class shared_library;
}

namespace ferry::detail {

/// Never unloads (Boost.DLL missuses: exceptions, type_info and deleters from a plugin must stay
/// valid); a changed plugin is picked up by recycling the worker.
class LibraryCache {
 public:
  LibraryCache();
  ~LibraryCache();
  LibraryCache(const LibraryCache&) = delete;
  LibraryCache& operator=(const LibraryCache&) = delete;

  /// Loads `path` (once). nullptr on failure, with `why` set (the failure the host reports).
  boost::dll::shared_library* load(const std::string& path, Failure& why);
  /// The record of task `name` in `path`, checked for magic and ABI. nullptr on failure.
  const TaskRecordHeader* find(const std::string& path, const std::string& name, Failure& why);

 private:
  std::map<std::string, boost::dll::shared_library*> libs_;
};

}  // namespace ferry::detail
