// SPDX-License-Identifier: BSD-3-Clause
// Worker-side plugin loading with Boost.DLL.
#include "plugins/library_cache.hpp"

#include <sys/resource.h>

#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>
#include <filesystem>
#include <system_error>

#include "platform/format.hpp"
#include "plugins/load_dependencies.hpp"

namespace ferry::detail {

namespace {
/// Every library any cache loaded, for the life of the process: a worker never unloads code it
/// ran (reachable from here, so leak checkers do not flag it either).
std::vector<std::unique_ptr<boost::dll::shared_library>>& loaded_forever() {
  static auto* all = new std::vector<std::unique_ptr<boost::dll::shared_library>>();
  return *all;
}
std::mutex loaded_mu;

/// What to add to the loader's message when a memory limit may be why it failed: the worker's
/// RLIMIT_DATA (ferry::Limits::memory, set before the hello and kept between tasks) is in force
/// while a plugin loads, and the loader then says only "failed to map segment from shared
/// object" (its private, writable segments count against the limit), which names no limit.
/// Said only when a limit is in force and the loader's words are about mapping or allocating
/// memory: a missing dependency or an undefined symbol is never the limit's doing.
std::string memory_limit_note(const std::string& loader_message) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_DATA, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return "";
  std::string lower = loader_message;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // glibc's words when a mapping or an allocation is refused (phrases, not words: the message
  // holds paths, which may say "map" or "memory" themselves).
  static constexpr std::string_view phrases[] = {
      "failed to map segment", "cannot map", "cannot allocate", "cannot change memory protections",
      "out of memory"};
  const bool about_memory = std::any_of(std::begin(phrases), std::end(phrases), [&](std::string_view p) {
    return lower.find(p) != std::string::npos;
  });
  // "cannot allocate memory in static TLS block" is the loader's own table, no limit's doing.
  if (!about_memory || lower.find("static tls") != std::string::npos) return "";
  return " (the worker's memory limit of " + format_size(rl.rlim_cur) +
         " was in force while it loaded the plugin: loading may need more)";
}
}  // namespace

LibraryCache::LibraryCache() = default;
LibraryCache::~LibraryCache() = default;

boost::dll::shared_library* LibraryCache::load(const std::string& path, Failure& why) {
  if (auto it = libs_.find(path); it != libs_.end()) return it->second;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    why = Failure::library_missing(path);
    return nullptr;
  }
  // In a sandbox, where the loader would search places a task writes (the private directory the
  // worker shows at /tmp, /var/tmp, /dev/shm; Sandbox::write), which the host judged on its own
  // file system: a library an earlier call left there would be this plugin's dependency.
  // Refused before the loader reads anything, not cached (each call is refused alike).
  if (TrustVerdict v = task_writable_verdict(path); !v) {
    why = Failure::library_unloadable(path, "refused in the sandbox: " + v.why);
    return nullptr;
  }
  try {
    // rtld_now: a plugin with unresolved symbols fails here, with the loader's message, instead
    // of crashing the worker in the middle of a task.
    auto lib = std::make_unique<boost::dll::shared_library>(
        path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    auto* raw = lib.get();
    {
      std::lock_guard lock(loaded_mu);
      loaded_forever().push_back(std::move(lib));
    }
    libs_.emplace(path, raw);
    return raw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // Boost.DLL: "boost::dll::shared_library::load() failed (dlerror system message: <msg>):
    // <errc text>". Keep the loader's own words.
    static constexpr std::string_view marker = "dlerror system message: ";
    if (auto at = msg.find(marker); at != std::string::npos) {
      msg = msg.substr(at + marker.size());
      if (auto end = msg.rfind("): "); end != std::string::npos) {
        msg.resize(end);
      } else if (!msg.empty() && msg.back() == ')') {
        msg.pop_back();
      }
    }
    msg += memory_limit_note(msg);
    why = Failure::library_unloadable(path, msg);
    return nullptr;
  }
}

const TaskRecordHeader* LibraryCache::find(const std::string& path, const std::string& name,
                                           Failure& why) {
  auto* lib = load(path, why);
  if (!lib) return nullptr;
  std::string symbol = std::string(task_symbol_prefix) + name;
  if (!lib->has(symbol)) {
    why = Failure::symbol_missing(path, "undefined symbol: " + symbol);
    return nullptr;
  }
  const auto& rec = lib->get<const TaskRecordHeader>(symbol);
  if (std::memcmp(rec.magic, task_record_magic, sizeof rec.magic) != 0) {
    why = Failure::not_a_plugin(path, "symbol " + symbol + " is not a ferry task record");
    return nullptr;
  }
  if (rec.abi != plugin_abi_version) {
    why = Failure::abi_mismatch(path, rec.abi);
    return nullptr;
  }
  return &rec;
}

}  // namespace ferry::detail
