// SPDX-License-Identifier: BSD-3-Clause
// Plugin side: FERRY_TASK / FERRY_TASK_AS and FERRY_EXPORT (header-only; all a plugin includes).
// The record format and the entry points these macros generate are in detail/: task_record.hpp,
// invoke.hpp, invoke_json.hpp, make_record.hpp. TaskRef, which names a task from the host, is in
// <ferry/task_ref.hpp>.
#pragma once

#include <ferry/bytes_view.hpp>
#include <ferry/detail/make_record.hpp>
#include <ferry/serialization.hpp>

/**
@brief Registers `fn` as task `name` of this shared library.

Exports one record under the C symbol `ferry_task:<name>` in section `ferry_tasks` (listable with
Boost.DLL's `library_info(path).symbols("ferry_tasks")` without loading the library). The record
holds the name, the signature text, its fingerprint and the ferry plugin ABI version. Use at
namespace scope, once per name and library. Overloaded functions need a cast-free wrapper.

@code
double sum(const std::vector<double>& v);
FERRY_TASK_AS(sum, "math.sum");
@endcode
*/
#define FERRY_TASK_AS(fn, name) \
  FERRY_DETAIL_TASK_RECORD(fn, name, FERRY_DETAIL_CAT(ferry_detail_task_record_, __COUNTER__))

/** @brief Registers `fn` as a task named after the function (`FERRY_TASK(square)` → "square"). */
#define FERRY_TASK(fn) FERRY_TASK_AS(fn, #fn)

/**
@brief Marks a plugin function as exported, for hosts that link the plugin and submit it by
function. Plugins are built with hidden visibility, so without it the host cannot link to it.
*/
#define FERRY_EXPORT __attribute__((visibility("default")))
