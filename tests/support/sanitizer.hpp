// SPDX-License-Identifier: BSD-3-Clause
// FERRY_TEST_SHADOW_MEMORY: 1 under a sanitizer that maps terabytes of shadow memory
// (FERRY_SANITIZE=address or thread; the worker and the plugins are built with it too), where a
// memory limit (RLIMIT_DATA) cannot be set. GCC says __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__,
// clang __has_feature.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FERRY_TEST_SHADOW_MEMORY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FERRY_TEST_SHADOW_MEMORY 1
#endif
#endif
#ifndef FERRY_TEST_SHADOW_MEMORY
#define FERRY_TEST_SHADOW_MEMORY 0
#endif
