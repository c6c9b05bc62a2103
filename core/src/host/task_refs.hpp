// SPDX-License-Identifier: BSD-3-Clause
// What submit() was given (a function, a task name, a library and symbol), turned into the task
// reference workers are sent: resolved and checked here, on the submitting thread, and numbered
// once per distinct reference.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include <ferry/executor.hpp>
#include <ferry/plugin_index.hpp>

#include "host/call.hpp"

namespace ferry::detail {

class TaskRefs {
 public:
  explicit TaskRefs(const ExecutorOptions& options);

  /// The reference for `target`, the same object for the same task. A plugin file that changed
  /// on disk (rebuilt) gets a newer generation: workers that loaded the old one are retired.
  /// @throws the typed ferry::Error of a task that cannot be found or trusted.
  std::shared_ptr<const RefEntry> resolve(const Target& target);

 private:
  /// `check`: the library is trust-checked (PluginIndex::check_safe) when its entry is made,
  /// once per executor and reference: the workers load it by path, later.
  std::shared_ptr<const RefEntry> intern(protocol::RefKind kind, const std::string& library,
                                         const std::string& name, std::uint64_t fingerprint,
                                         std::string_view signature, std::string display,
                                         std::string version = {}, bool check = false);

  bool allow_unsafe_;  // ExecutorOptions::allow_unsafe_plugins or FERRY_ALLOW_UNSAFE_PLUGINS
  PluginIndex index_;
  std::mutex mu_;
  std::map<std::tuple<int, std::string, std::string, std::uint64_t, std::string>, std::shared_ptr<RefEntry>>
      entries_;
  std::uint32_t next_ref_ = 0;
  std::unordered_map<std::string, std::pair<std::string, std::uint64_t>> library_versions_;  // path → (version, generation)
};

}  // namespace ferry::detail
