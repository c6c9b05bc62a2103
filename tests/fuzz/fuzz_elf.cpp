// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target: plugin files, through the ELF reader that indexes plugin directories (task records)
// and reads what a plugin makes the loader load (its dynamic segment).
#include <cstddef>
#include <cstdint>

#include "plugins/elf_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    ferry::detail::parse_task_records(data, size);
  } catch (const ferry::detail::ElfError&) {
  }
  try {
    ferry::detail::parse_load_names(data, size);
  } catch (const ferry::detail::ElfError&) {
  }
  return 0;
}
