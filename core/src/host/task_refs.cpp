// SPDX-License-Identifier: BSD-3-Clause
#include "host/task_refs.hpp"

#include <ferry/ferry.hpp>

#include <sys/stat.h>

#include "host/resolver.hpp"
#include "plugins/elf_reader.hpp"
#include "platform/trust.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

TaskRefs::TaskRefs(const ExecutorOptions& options)
    : allow_unsafe_(options.allow_unsafe_plugins || unsafe_allowed_by_environment()),
      index_(PluginIndex::search_path(options.plugin_dirs), PluginIndexOptions{options.allow_unsafe_plugins}) {}

std::shared_ptr<const RefEntry> TaskRefs::intern(protocol::RefKind kind, const std::string& library,
                                                 const std::string& name, std::uint64_t fingerprint,
                                                 std::string_view signature, LayoutFn layout,
                                                 std::string display,
                                                 std::string version, bool check) {
  // Made outside the lock: it runs the user types' constructors and serialize functions (once
  // per signature and process). Only where the worker checks the types against the fingerprint,
  // not for JSON arguments.
  const char* layout_text = fingerprint != 0 && layout ? layout() : "";
  std::lock_guard lock(mu_);
  auto key = std::make_tuple(static_cast<int>(kind), library, name, fingerprint, version);
  if (auto it = entries_.find(key); it != entries_.end()) return it->second;
  if (check && !allow_unsafe_) PluginIndex::check_safe(library);
  auto e = std::make_shared<RefEntry>();
  e->define = protocol::Define{next_ref_++, kind, library, name, fingerprint, std::string(signature),
                               layout_text};
  e->frame = protocol::encode_define(e->define);
  e->display = std::move(display);
  if (!version.empty()) {
    auto& [seen, generation] = library_versions_[library];
    if (seen != version) {
      seen = version;
      ++generation;
    }
    e->generation = generation;
  }
  e->version = std::move(version);
  auto info = std::make_shared<TaskInfo>();
  info->name = name;
  info->signature = std::string(signature);
  info->fingerprint = fingerprint;
  info->library = library;
  info->version = e->version;
  e->info = std::move(info);
  entries_.emplace(key, e);
  return e;
}

namespace {

/// A TaskRef's library as resolve_checked names it: absolute (a relative one is the current
/// directory's now, and the key must change with it), lexically normal.
fs::path absolute_library(const fs::path& library) {
  std::error_code ec;
  fs::path lib = fs::absolute(library, ec);
  return (ec ? library : lib).lexically_normal();
}

/// file_identity of `path` (device, inode, size, modification and change times), "" when it
/// cannot be looked at.
std::string identity_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? file_identity(st) : std::string();
}

}  // namespace

TaskRefs::RecentKey TaskRefs::recent_key(const Target& t) {
  const std::string library = t.kind == Target::Kind::ref ? absolute_library(t.library).string() : std::string();
  return {static_cast<int>(t.kind), library, t.name, t.fingerprint, std::string(t.signature)};
}

std::shared_ptr<const RefEntry> TaskRefs::recent(const RecentKey& key, std::string& library) {
  constexpr auto keep = std::chrono::seconds(1);
  Recent r;
  {
    std::lock_guard lock(mu_);
    auto it = recent_.find(key);
    if (it == recent_.end()) return nullptr;
    r = it->second;
  }
  library = r.library;
  if (r.identity.empty() || std::chrono::steady_clock::now() - r.checked >= keep) return nullptr;
  // Outside the lock: a stat. The change time moves with a chmod or chown of the file itself too.
  if (identity_of(r.library) != r.identity) return nullptr;
  return r.ref;
}

void TaskRefs::remember(RecentKey key, const std::shared_ptr<const RefEntry>& ref, const std::string& library,
                        const std::string& before) {
  // Taken next time only if the file was, before the check began, the one it resolved (its
  // version then a prefix of that identity): a file replaced, or chmod-ed, while it was checked
  // is checked again. A name's library is known only once it was looked up: the entry then keeps
  // it, and the next check stats it first.
  const bool same = !ref->version.empty() && !before.empty() && library == ref->define.library &&
                    before.starts_with(ref->version + ":");
  std::lock_guard lock(mu_);
  if (recent_.size() >= 4096) recent_.clear();
  recent_[std::move(key)] = Recent{ref, ref->define.library, same ? before : std::string(), std::chrono::steady_clock::now()};
}

std::shared_ptr<const RefEntry> TaskRefs::resolve(const Target& t) {
  if (t.kind != Target::Kind::name && t.kind != Target::Kind::ref) return resolve_checked(t);
  RecentKey key = recent_key(t);
  std::string library;  // the file this key resolved to last, or the TaskRef's own
  if (auto ref = recent(key, library)) return ref;
  if (library.empty()) library = std::get<1>(key);
  const std::string before = library.empty() ? std::string() : identity_of(library);
  auto ref = resolve_checked(t);
  remember(std::move(key), ref, library, before);
  return ref;
}

std::shared_ptr<const RefEntry> TaskRefs::resolve_checked(const Target& t) {
  switch (t.kind) {
    case Target::Kind::function: {
      FunctionTask f = resolve_function(t.function);
      switch (f.kind) {
        case FunctionTask::Kind::plugin:
          // The host loaded it, but every worker loads it by path (on demand, after a crash):
          // checked like a plugin found by name, once (another user who can replace the file
          // would run code in every later worker).
          return intern(protocol::RefKind::plugin, f.library, f.name, t.fingerprint,
                            t.signature, t.layout, f.name, {}, /*check=*/true);
        case FunctionTask::Kind::main_program:
          // Sent anyway: the worker really tries to load the executable, and its loader's
          // message becomes the UnresolvableTaskError (DESIGN §1). Only a path nobody else can
          // have put a file at (main_program_to_load).
          return intern(protocol::RefKind::main_program,
                        allow_unsafe_ ? f.library : main_program_to_load(f.library),
                            f.name.empty() ? "(unnamed function)" : f.name, t.fingerprint,
                            t.signature, t.layout, f.name.empty() ? "(unnamed function)" : f.name);
        case FunctionTask::Kind::foreign:
          throw UnresolvableTaskError::not_a_task(f.name, f.library);
        case FunctionTask::Kind::unavailable:
          std::rethrow_exception(f.error);
      }
      break;
    }
    case Target::Kind::name: {
      TaskInfo info = index_.find(t.name);
      // Fingerprint 0: JSON arguments, whose types the worker's JSON decoding checks.
      if (t.fingerprint != 0 && info.fingerprint != t.fingerprint)
        throw PluginError::signature_mismatch(info.library.string(), info.name, info.signature,
                                              std::string(t.signature));
      return intern(protocol::RefKind::plugin, info.library.string(), info.name,
                        t.fingerprint, t.signature, t.layout, t.name, info.version);
    }
    case Target::Kind::ref: {
      std::error_code ec;
      fs::path lib = fs::absolute(t.library, ec);
      if (ec) lib = t.library;
      lib = lib.lexically_normal();
      if (!allow_unsafe_) PluginIndex::check_safe(lib);
      return intern(protocol::RefKind::plugin, lib.string(), t.name, t.fingerprint,
                        t.signature, t.layout, t.name, PluginIndex::file_version(lib));
    }
  }
  throw std::logic_error("unreachable");
}

}  // namespace ferry::detail
