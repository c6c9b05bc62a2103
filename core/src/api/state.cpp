// SPDX-License-Identifier: BSD-3-Clause
// What a thread is doing with future completions (detail::StateBase::ThisThread), one per thread.
#include <ferry/detail/state.hpp>

namespace ferry::detail {

// Out of line, in libferry: the headers' inline completion code in a program and libferry's own
// must see one queue per thread, not one per shared object.
StateBase::ThisThread& StateBase::this_thread() noexcept {
  thread_local ThisThread here;
  return here;
}

}  // namespace ferry::detail
