// SPDX-License-Identifier: BSD-3-Clause
// Submit a plugin task by function: the host links the plugin, calls submit(fn, args...), and
// ferry sends the task's library path and name, not the function pointer.
#include <iostream>

#include <ferry/ferry.hpp>

#include "math.hpp"  // plugins/math: FERRY_TASK(square), FERRY_TASK(scale), ...

int main() {
  ferry::Executor ex({.max_workers = 2});

  ferry::Future<int> f = ex.submit(square, 7);
  std::cout << "square(7) = " << f.get() << "\n";

  // Any cereal-serializable type travels: std containers, strings, your own structs.
  math::Vec2 v = ex.submit(scale, math::Vec2{1.5, -2}, 2.0).get();
  std::cout << "scale({1.5, -2}, 2) = {" << v.x << ", " << v.y << "}\n";

  // Continuations run when the result arrives.
  auto g = ex.submit(square, 3).then([](int x) { return x + 1; });
  std::cout << "square(3) + 1 = " << g.get() << "\n";
}
