// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target: bytes as a worker's result, decoded by the host into representative result
// types (tests/fuzz/results_fuzz.hpp, which the test suite replays over tests/data/fuzz/results).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "results_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ferry::fuzz::results_one_input(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
