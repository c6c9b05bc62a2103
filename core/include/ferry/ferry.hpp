// SPDX-License-Identifier: BSD-3-Clause
// Umbrella header: all of libferry's public API (libferry-mpi's is <ferry/mpi.hpp>).
#pragma once

#define FERRY_VERSION_MAJOR 0
#define FERRY_VERSION_MINOR 1
#define FERRY_VERSION_PATCH 0
#define FERRY_VERSION_STRING "0.1.0"

#include <ferry/backend.hpp>
#include <ferry/call.hpp>
#include <ferry/detail/export.hpp>
#include <ferry/errors.hpp>
#include <ferry/executor.hpp>
#include <ferry/future.hpp>
#include <ferry/plugin_index.hpp>
#include <ferry/serialization.hpp>
#include <ferry/stats.hpp>
#include <ferry/system.hpp>
#include <ferry/task.hpp>
#include <ferry/task_info.hpp>
#include <ferry/task_ref.hpp>
#include <ferry/when.hpp>
#include <ferry/wrap.hpp>

namespace ferry {
/** @brief The library's version, "major.minor.patch" (may differ from the header's when mixed). */
FERRY_API const char* version() noexcept;
}  // namespace ferry
