// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target: bytes as the content of a trace file, through everything `ferry report` does
// with it: the reader, the summary, the notes and the HTML page (tests/fuzz/trace_fuzz.hpp, which
// the test suite replays over tests/data/fuzz/trace and tests/data/trace). A crash, a hang, a
// sanitizer report or a broken invariant is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "trace_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ferry::fuzz::trace_one_input(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
