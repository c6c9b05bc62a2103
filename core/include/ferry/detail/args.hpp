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

/// `a` as a V by copy-initialisation: the conversions a call makes, never an explicit
/// constructor; the V is the returned prvalue itself (no move constructor needed).
template <class V, class A>
V implicitly(A&& a) {
  return std::forward<A>(a);
}

/// Passes an argument through untouched when it already has the parameter's type, and converts
/// it otherwise, as a call of the task would: implicitly, never through an explicit constructor
/// (`std::vector<int>` from a count) or a cast.
template <class P, class A>
decltype(auto) as_param(A&& a) {
  using V = std::remove_cvref_t<P>;
  if constexpr (std::is_same_v<std::remove_cvref_t<A>, V>) {
    return static_cast<const V&>(a);
  } else {
    static_assert(std::is_convertible_v<A&&, V>,
                  "ferry: an argument cannot be converted implicitly to the matching parameter "
                  "type of the task, as a call of it would refuse it: convert it yourself");
    return implicitly<V>(std::forward<A>(a));
  }
}

}  // namespace ferry::detail
