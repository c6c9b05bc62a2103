// SPDX-License-Identifier: BSD-3-Clause
// Function address → (plugin path, task name), by matching the addresses that loaded plugins'
// task records report. Python's analogue is pickling a function by reference (module + qualname).
#include "host/resolver.hpp"

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include <ferry/errors.hpp>
#include <ferry/task.hpp>

#include "platform/trust.hpp"
#include "plugins/elf_reader.hpp"
#include "wrap/wrap_compiler.hpp"

namespace ferry::detail {

namespace {

struct LoadedObject {
  std::string path;  // "" for the main program
  std::uintptr_t bias = 0;
};

/// The loaded object whose PT_LOAD segments contain `address`.
std::optional<LoadedObject> object_of(const void* address) {
  struct Search {
    std::uintptr_t address;
    std::optional<LoadedObject> found;
  } search{reinterpret_cast<std::uintptr_t>(address), std::nullopt};
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          std::uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
          if (s->address >= begin && s->address < begin + ph.p_memsz) {
            s->found = LoadedObject{info->dlpi_name ? info->dlpi_name : "", info->dlpi_addr};
            return 1;
          }
        }
        return 0;
      },
      &search);
  return search.found;
}

/// Every loaded shared object's path (not the main program, not the vdso).
std::vector<std::string> loaded_objects() {
  std::vector<std::string> out;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        if (info->dlpi_name && info->dlpi_name[0] == '/')
          static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name);
        return 0;
      },
      &out);
  return out;
}

std::string absolute(const std::string& p) {
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(p, ec);
  return ec ? p : c.string();
}

/// The task of `library` whose record reports `address`, if any. The library is already loaded
/// (we only ask objects found in this process), so reading its records runs no new code. A file
/// this process could not open for want of descriptors or memory is said in `unreadable`:
/// whether the function is a task is not known then (it was called "not a ferry task", or a
/// function of the main program, and cached as such).
std::optional<std::string> task_at(const std::string& library, const void* address, std::string& unreadable) {
  std::vector<ElfTaskRecord> records;
  try {
    records = read_task_records(library);
  } catch (const ElfError& e) {
    if (e.out_of_resources() && unreadable.empty()) unreadable = library + ": " + e.what();
    return std::nullopt;
  }
  if (records.empty()) return std::nullopt;
  void* handle = ::dlopen(library.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return std::nullopt;
  // A function registered under several names (FERRY_TASK(square) and FERRY_TASK_AS(square,
  // "math.square")) is sent as the shortest of them, the first in byte order among equals: the
  // first record in the symbol table was taken, and that order changed with the build (an ASan
  // build of the same plugin sent "math.square").
  std::optional<std::string> found;
  for (const auto& r : records) {
    if (!r.problem.empty() || r.abi != plugin_abi_version) continue;
    if (found && (r.name.size() > found->size() || (r.name.size() == found->size() && r.name >= *found))) continue;
    auto* rec = static_cast<const TaskRecordHeader*>(::dlsym(handle, r.symbol.c_str()));
    if (rec && rec->address && rec->address() == address) found = r.name;
  }
  ::dlclose(handle);
  return found;
}

FunctionTask resolve_wrap(const WrapSite& site) {
  FunctionTask t;
  WrapBuild built = wrap_build(site).get();
  t.name = built.task;
  if (built.error) {
    t.kind = FunctionTask::Kind::unavailable;
    t.error = built.error;
  } else {
    t.kind = FunctionTask::Kind::plugin;
    t.library = built.library;
  }
  return t;
}

/// A function whose library this process could not read (`why`): unavailable, with a PluginError
/// that says so (not cached: the next submit looks again).
FunctionTask unreadable_library(FunctionTask t, const std::string& why) {
  t.kind = FunctionTask::Kind::unavailable;
  t.error = std::make_exception_ptr(PluginError(
      "cannot tell whether function '" + (t.name.empty() ? std::string("(unnamed)") : t.name) +
          "' is a ferry task: this process could not read " + why,
      t.library, t.name, why));
  return t;
}

FunctionTask resolve_uncached(const void* address) {
  FunctionTask t;
  auto obj = object_of(address);
  if (obj && !obj->path.empty()) {
    t.library = absolute(obj->path);
    std::string unreadable;
    if (auto name = task_at(t.library, address, unreadable)) {
      t.kind = FunctionTask::Kind::plugin;
      t.name = *name;
      return t;
    }
    t.kind = FunctionTask::Kind::foreign;
    Dl_info info{};
    if (::dladdr(address, &info) && info.dli_sname) t.name = demangle(info.dli_sname);
    if (t.name.empty())
      if (auto s = function_symbol_at(t.library, reinterpret_cast<std::uintptr_t>(address) - obj->bias))
        t.name = *s;
    if (!unreadable.empty()) return unreadable_library(std::move(t), unreadable);
    return t;
  }
  // In the main program. A non-PIE host sees a plugin function through its own PLT stub, whose
  // address the plugin's record reports too: look in every loaded plugin first.
  std::string unreadable;
  for (const auto& lib : loaded_objects()) {
    if (auto name = task_at(lib, address, unreadable)) {
      t.kind = FunctionTask::Kind::plugin;
      t.library = absolute(lib);
      t.name = *name;
      return t;
    }
  }
  t.kind = FunctionTask::Kind::main_program;
  t.library = executable_path();
  std::uintptr_t bias = obj ? obj->bias : 0;
  if (auto s = function_symbol_at(t.library, reinterpret_cast<std::uintptr_t>(address) - bias))
    t.name = *s;
  if (!unreadable.empty()) return unreadable_library(std::move(t), unreadable);
  return t;
}

}  // namespace

std::string executable_path() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "(main program)";
  return std::string(buf, static_cast<std::size_t>(n));
}

std::string main_program_to_load(const std::string& path) {
  // A missing file (a deleted executable) is fine only where nobody else could create it.
  const std::string why = untrusted_reason_if_present(path);
  if (why.empty()) return path;
  return "/(not loaded: " + why + ")/" + std::filesystem::path(path).filename().string();
}

FunctionTask resolve_function(const void* address) {
  static std::mutex mu;
  static std::unordered_map<const void*, FunctionTask> cache;
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(address); it != cache.end()) return it->second;
  }
  // Wrapped functions are not cached here: their plugin depends on the wrap options in effect
  // (the wrap compiler keeps its own map, keyed by them).
  if (const WrapSite* site = find_wrap(address)) return resolve_wrap(*site);
  FunctionTask t = resolve_uncached(address);
  std::lock_guard lock(mu);
  // A library can be unloaded and another loaded at the same address; only plugins loaded by the
  // host (which never unloads them itself) are cached.
  if (t.kind == FunctionTask::Kind::plugin || t.kind == FunctionTask::Kind::main_program)
    cache.emplace(address, t);
  return t;
}

}  // namespace ferry::detail
