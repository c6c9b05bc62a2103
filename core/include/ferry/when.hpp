// SPDX-License-Identifier: BSD-3-Clause
// ferry::when_all and ferry::when_any: futures that become ready when all, or any, of others are.
#pragma once

#include <atomic>
#include <cstddef>
#include <future>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include <ferry/future.hpp>

namespace ferry {

/**
@brief What a when_any() future holds: the position of a future that was ready, and all the
futures, in the order given (as std::experimental::when_any_result).
*/
template <class T>
struct WhenAnyResult {
  /// Position in `futures` of the first future seen ready; `npos` when there were none.
  std::size_t index = npos;
  std::vector<Future<T>> futures;

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

namespace detail {
template <class T>
void require_valid(const Future<T>& f) {
  if (!f.valid()) throw std::future_error(std::future_errc::no_state);
}
/// The states a when_all's or when_any's future follows (StateBase::follow).
template <class T>
std::vector<std::weak_ptr<StateBase>> sources_of(const std::vector<Future<T>>& futures) {
  std::vector<std::weak_ptr<StateBase>> out;
  out.reserve(futures.size());
  for (const auto& f : futures) out.emplace_back(FutureAccess::state(f));
  return out;
}
}  // namespace detail

/**
@brief A future that becomes ready once every one of `futures` is (as std::experimental::when_all,
asyncio.gather(..., return_exceptions=True), Ray's `ray.get(refs)` without the raise): it holds the
same futures, in the same order, each ready with its own value or error. It never fails itself:
`get()` on an element rethrows that element's error, so one failure loses no other result. An
empty vector gives a future ready at once. Duplicates are allowed.

Composed in the host (continuations on the futures; no worker and no thread involved): it becomes
ready in the thread that completes the last of them (see Future::operator co_await). info() and
running() of the returned future are empty/false; ask the elements. Waiting for it in a callback
on an executor's own thread waits as Future::get does there (see Future::then).
@throws std::future_error (no_state) when a future is default-constructed.
@code
std::vector<ferry::Future<int>> fs;
for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(square, i));
for (auto& f : ferry::when_all(fs).get()) total += f.get();   // or: co_await ferry::when_all(fs)
@endcode
*/
template <class T>
Future<std::vector<Future<T>>> when_all(std::vector<Future<T>> futures) {
  for (const auto& f : futures) detail::require_valid(f);
  auto out = detail::make_local_state<std::vector<Future<T>>>();
  out->follow(detail::sources_of(futures));
  struct Shared {
    std::atomic<std::size_t> left;
    std::vector<Future<T>> futures;
    std::shared_ptr<detail::State<std::vector<Future<T>>>> out;
  };
  // One count per future, plus one for this function: a future that is ready already runs its
  // callback right here, and the vector must not be handed over while it is still being walked.
  auto shared = std::make_shared<Shared>(futures.size() + 1, std::move(futures), out);
  auto arrive = [shared] {
    if (shared->left.fetch_sub(1, std::memory_order_acq_rel) == 1)
      shared->out->set_value(std::move(shared->futures));
  };
  for (const auto& f : shared->futures) f.then([arrive](const Future<T>&) { arrive(); });
  arrive();
  return Future<std::vector<Future<T>>>(std::move(out));
}

/**
@brief when_all of futures of different types: a future of a tuple of them, ready once all are.
@code
auto [a, b] = co_await ferry::when_all(ex.submit(square, 3), ex.submit<std::string>("greet", "x"));
@endcode
*/
template <class... T>
Future<std::tuple<Future<T>...>> when_all(Future<T>... futures) {
  (detail::require_valid(futures), ...);
  using Tuple = std::tuple<Future<T>...>;
  auto out = detail::make_local_state<Tuple>();
  out->follow(std::vector<std::weak_ptr<detail::StateBase>>{detail::FutureAccess::state(futures)...});
  struct Shared {
    std::atomic<std::size_t> left;
    Tuple futures;
    std::shared_ptr<detail::State<Tuple>> out;
  };
  auto shared = std::make_shared<Shared>(sizeof...(T) + 1, Tuple(std::move(futures)...), out);
  auto arrive = [shared] {
    if (shared->left.fetch_sub(1, std::memory_order_acq_rel) == 1)
      shared->out->set_value(std::move(shared->futures));
  };
  std::apply([&](const auto&... f) { (f.then([arrive](const auto&) { arrive(); }), ...); },
             shared->futures);
  arrive();
  return Future<Tuple>(std::move(out));
}

/**
@brief A future that becomes ready as soon as one of `futures` is (as std::experimental::when_any;
concurrent.futures.wait(FIRST_COMPLETED), Ray's `ray.wait(refs, num_returns=1)`): it holds the
index of the first one seen ready and all the futures, in the order given. Ready or failed both
count: the chosen future's own get() tells which. An empty vector gives a future ready at once with
`index == WhenAnyResult<T>::npos`. The others go on running (cancel them if they are not needed).

Composed in the host: it becomes ready in the thread that completes the first future, or at once
when one is ready already (the lowest such index).
@throws std::future_error (no_state) when a future is default-constructed.
@code
auto any = co_await ferry::when_any(fs);
int first = any.futures[any.index].get();
@endcode
*/
template <class T>
Future<WhenAnyResult<T>> when_any(std::vector<Future<T>> futures) {
  for (const auto& f : futures) detail::require_valid(f);
  auto out = detail::make_local_state<WhenAnyResult<T>>();
  out->follow(detail::sources_of(futures));
  if (futures.empty()) {
    out->set_value(WhenAnyResult<T>{WhenAnyResult<T>::npos, {}});
    return Future<WhenAnyResult<T>>(std::move(out));
  }
  // A watcher on each future (an entry in its list, as ferry::wait's), taken back from the others
  // once one decided: a then() on each, kept until each completed, made when_any in a loop over
  // the futures still pending quadratic in time and memory (1,500 futures: 225 MB).
  //
  // Until one decides, Shared and the notifier hold each other (the futures hold the notifier
  // weakly); the one that decides lets go of the notifier, which goes once its caller (the
  // thread completing that future, or watch() here) is done with it, and Shared with it.
  struct Shared {
    std::atomic<bool> decided{false};
    std::vector<Future<T>> futures;
    std::shared_ptr<detail::State<WhenAnyResult<T>>> out;
    std::shared_ptr<detail::Notifier> notifier;
  };
  auto shared = std::make_shared<Shared>();
  shared->futures = std::move(futures);
  shared->out = out;
  auto notifier = std::make_shared<detail::Notifier>();
  shared->notifier = notifier;
  notifier->on_notify = [shared](std::size_t i) {
    if (shared->decided.exchange(true, std::memory_order_acq_rel)) return;
    const auto self = std::move(shared->notifier);
    for (std::size_t j = 0; j < shared->futures.size(); ++j)
      if (j != i) detail::FutureAccess::state(shared->futures[j])->unwatch(self, j);
    shared->out->set_value(WhenAnyResult<T>{i, shared->futures});
  };
  for (std::size_t i = 0; i < shared->futures.size(); ++i) {
    detail::FutureAccess::state(shared->futures[i])->watch(notifier, i);
    if (shared->decided.load(std::memory_order_acquire)) break;  // no need to watch the rest
  }
  return Future<WhenAnyResult<T>>(std::move(out));
}

}  // namespace ferry
