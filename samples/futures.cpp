// SPDX-License-Identifier: BSD-3-Clause
// Futures: info(), running(), cancelled(), co_await in a coroutine, when_all and when_any.
#include <coroutine>
#include <exception>
#include <future>
#include <iostream>
#include <vector>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // spin_forever
#include "math.hpp"   // square, slow_identity

namespace {

/// Any C++20 coroutine type can co_await a ferry::Future; this one starts at once and hands its
/// result to a std::future.
template <class T>
struct Eager {
  struct promise_type {
    std::promise<T> result;
    Eager get_return_object() { return Eager{result.get_future()}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_value(T v) { result.set_value(std::move(v)); }
    void unhandled_exception() { result.set_exception(std::current_exception()); }
  };
  std::future<T> result;
};

Eager<int> sum_of_squares(ferry::Executor& ex) {
  int a = co_await ex.submit(square, 3);  // resumes in the thread that completed the future
  std::vector<ferry::Future<int>> fs = {ex.submit(square, 4), ex.submit(square, 5)};
  int total = a;
  for (auto& f : co_await ferry::when_all(fs)) total += f.get();
  co_return total;
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  ferry::Executor ex({.max_workers = 2});
  ex.warm_up();

  // info(): which worker ran the call, when, and what it cost (nullopt until ready).
  auto f = ex.submit(square, 7);
  f.wait();
  if (auto info = f.info())
    std::cout << "square(7) = " << f.get() << " ran in worker " << info->worker_pid << " on "
              << (info->worker_host.empty() ? "?" : "this host") << ", attempts " << info->attempts
              << ", took " << (info->finished - info->started < 1s ? "under a second" : "long")
              << ", peak RSS " << (info->max_rss > 0 ? "known" : "unknown") << "\n";

  // running(): true while its worker runs it; cancelled(): true once cancel() ended it.
  auto spinning = ex.submit(spin_forever, 1);
  std::cout << "running: " << (spinning.running() ? "true" : "false") << "\n";
  spinning.cancel({.kill_running = true});  // its worker is killed (and replaced)
  spinning.wait();                           // ends with CancelledError once the kill is seen
  std::cout << "cancelled: " << (spinning.cancelled() ? "true" : "false") << "\n";

  // co_await in a coroutine, with when_all.
  std::cout << "co_await: " << sum_of_squares(ex).result.get() << "\n";

  // when_any: a future of the index of the first one ready, and all of them.
  std::vector<ferry::Future<int>> fs = {ex.submit(slow_identity, 1, 2000), ex.submit(square, 6)};
  auto any = ferry::when_any(fs).get();
  std::cout << "when_any: index " << any.index << ", value " << any.futures[any.index].get() << "\n";
  fs[0].cancel({.kill_running = true});
}
