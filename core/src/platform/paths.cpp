// SPDX-License-Identifier: BSD-3-Clause
// libferry's own location, from the loader.
#include "platform/paths.hpp"

#include <dlfcn.h>

namespace ferry::detail {

std::filesystem::path library_directory() {
  Dl_info info{};
  if (!::dladdr(reinterpret_cast<const void*>(&library_directory), &info) || !info.dli_fname)
    return {};
  std::error_code ec;
  auto file = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::filesystem::path(info.dli_fname).parent_path() : file.parent_path();
}

}  // namespace ferry::detail
