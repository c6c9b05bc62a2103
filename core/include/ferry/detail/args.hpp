// SPDX-License-Identifier: BSD-3-Clause
// How a submission's arguments are typed for the wire: shared by Executor::submit and ferry::Call.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

namespace ferry::detail {

/// The type an argument travels as when the task's own signature is not known (by-name
/// submission): decayed, with C strings as std::string.
template <class A>
using wire_t = std::conditional_t<
    std::is_same_v<std::decay_t<A>, const char*> || std::is_same_v<std::decay_t<A>, char*>,
    std::string, std::remove_cvref_t<A>>;

/// Passes an argument through untouched when it already has the parameter's type, and converts
/// it otherwise.
template <class P, class A>
decltype(auto) as_param(A&& a) {
  if constexpr (std::is_same_v<std::remove_cvref_t<A>, P>) {
    return static_cast<const P&>(a);
  } else {
    return P(std::forward<A>(a));
  }
}

}  // namespace ferry::detail
