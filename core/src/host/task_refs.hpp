// SPDX-License-Identifier: BSD-3-Clause
// What submit() was given (a function, a task name, a library and symbol), turned into the task
// reference workers are sent: resolved and checked here, on the submitting thread, and numbered
// once per distinct reference.
#pragma once

#include <chrono>
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
  /// resolve() without the recent references: looked up and checked.
  std::shared_ptr<const RefEntry> resolve_checked(const Target& target);

  /// `check`: the library is trust-checked (PluginIndex::check_safe) when its entry is made,
  /// once per executor and reference: the workers load it by path, later.
  std::shared_ptr<const RefEntry> intern(protocol::RefKind kind, const std::string& library,
                                         const std::string& name, std::uint64_t fingerprint,
                                         std::string_view signature, LayoutFn layout, std::string display,
                                         std::string version = {}, bool check = false);

  /// What a name or a TaskRef resolved to lately: a submission of the same one within a second
  /// of its check, while the library's file keeps its identity, takes it without a lookup or a
  /// trust check (each costs several system calls per component of the path; a submission by
  /// name was 7x slower than one by function). Only this user or root can open to others what
  /// passed the check; a replaced, rewritten, chmod-ed or chown-ed file has another identity
  /// (file_identity: its change time moves), looked at every time. What is not looked at within
  /// the second: the plugin's directories and its libraries (a chmod of those by this user or
  /// root is seen at the next check).
  struct Recent {
    std::shared_ptr<const RefEntry> ref;
    std::string library;   // the file whose identity is compared
    std::string identity;  // file_identity when it was remembered (its version a prefix of it)
    std::chrono::steady_clock::time_point checked;
  };
  /// kind, absolute library (a TaskRef's; "" for a name), name, fingerprint, signature.
  using RecentKey = std::tuple<int, std::string, std::string, std::uint64_t, std::string>;
  static RecentKey recent_key(const Target& t);
  /// The reference `key` resolved to, if that can be taken now; else nullptr, with `library` the
  /// file it resolved to last ("" if none).
  std::shared_ptr<const RefEntry> recent(const RecentKey& key, std::string& library);
  /// Remembers `ref` for `key`; `before` is the identity of `library` taken before the check.
  void remember(RecentKey key, const std::shared_ptr<const RefEntry>& ref, const std::string& library,
                const std::string& before);

  bool allow_unsafe_;  // ExecutorOptions::allow_unsafe_plugins or FERRY_ALLOW_UNSAFE_PLUGINS
  PluginIndex index_;
  std::mutex mu_;
  std::map<std::tuple<int, std::string, std::string, std::uint64_t, std::string>, std::shared_ptr<RefEntry>>
      entries_;
  std::uint32_t next_ref_ = 0;
  std::unordered_map<std::string, std::pair<std::string, std::uint64_t>> library_versions_;  // path → (version, generation)
  std::map<RecentKey, Recent> recent_;
};

}  // namespace ferry::detail
