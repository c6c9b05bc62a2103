// SPDX-License-Identifier: BSD-3-Clause
// What every FERRY_WRAP body is compiled with: ferry's plugin side, cereal's std types and the
// common std headers. Precompiled once per compiler and flags in the wrap cache.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <ferry/task.hpp>
