// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target: bytes as the JSON lines of a task call (submit_json, `ferry run/map`), through
// the worker's JSON entry point for representative parameter types and through the ferry
// command's line → argument-object conversion (tests/fuzz/json_fuzz.hpp, which the test suite
// replays over tests/data/fuzz/json). A crash, a sanitizer report or a broken invariant is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "json_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ferry::fuzz::json_one_input(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
