// SPDX-License-Identifier: BSD-3-Clause
// What libferry exports. It is built with hidden visibility: a symbol leaves libferry.so only
// when its declaration carries one of these two marks (docs/design.md, "What libferry exports").
#pragma once

/// ferry's API, and the few detail functions that the public headers' inline and template code
/// calls (so every program that includes them refers to them): exported, kept stable.
#define FERRY_API __attribute__((visibility("default")))

/// Not API. libferry's internals that ferry's own programs and libraries need (ferry-worker,
/// libferry-mpi and its agent, the test suites): exported because they live in libferry, but
/// nothing outside ferry's source tree may use them, and they change without notice. Each use is
/// an entry of the list in docs/design.md, which the Exports.* test compares with libferry.so.
#define FERRY_INTERNAL_API __attribute__((visibility("default")))
