// SPDX-License-Identifier: BSD-3-Clause
// ferry-worker's __cxa_throw: records where each exception is thrown, then throws it.
//
// A task's exception is caught inside the plugin's entry point, which reports only its type and
// what(); where it was thrown is gone by then. This executable defines __cxa_throw (exported, so
// that the plugins, libstdc++ and every other library the worker loads bind to it before
// libstdc++'s own), records the stack of the throw (worker/stack_capture.hpp) and calls
// libstdc++'s. Code that throws nothing pays nothing; a throw pays one unwind of its stack.
#include <dlfcn.h>

#include <exception>
#include <typeinfo>

#include "worker/stack_capture.hpp"

namespace {
using CxaThrow = void (*)(void*, std::type_info*, void (*)(void*));

CxaThrow next_throw() noexcept {
  static const CxaThrow next = reinterpret_cast<CxaThrow>(::dlsym(RTLD_NEXT, "__cxa_throw"));
  return next;
}
}  // namespace

extern "C" [[noreturn]] void __cxa_throw(void* object, std::type_info* type, void (*destroy)(void*)) {
  ferry::detail::note_throw(type, __builtin_return_address(0));
  if (CxaThrow next = next_throw()) next(object, type, destroy);
  std::terminate();  // no libstdc++ to throw with: cannot happen in a linked C++ program
}
