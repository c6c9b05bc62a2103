// SPDX-License-Identifier: BSD-3-Clause
// ferry::Executor: the public face of Pool.
#include <ferry/ferry.hpp>
#include <ferry/wrap.hpp>

#include <algorithm>
#include <thread>

#include "pool.hpp"
#include "protocol.hpp"

namespace ferry {

const char* version() noexcept { return FERRY_VERSION_STRING; }

Executor::Executor(ExecutorOptions options)
    : pool_(std::make_shared<detail::Pool>(std::move(options))) {
  pool_->start();
  // FERRY_WRAP functions start compiling now, in the background: the first submit need not wait.
  warm_up_wraps();
}

Executor::~Executor() {
  try {
    pool_->shutdown({.wait = true, .kill_workers = false});
  } catch (...) {
    // Destructors are noexcept; shutdown only throws on allocation failure.
  }
}

void Executor::submit_encoded(const detail::Target& target, detail::Buffer args,
                              std::uint32_t items, std::shared_ptr<detail::StateBase> state,
                              const SubmitOptions& options, std::uint8_t frame_flags) {
  pool_->submit(target, std::move(args), items, std::move(state), options, frame_flags);
}

Future<std::string> Executor::submit_json_to(detail::Target target, std::string lines,
                                             std::uint32_t items, bool keep_going) {
  target.signature = "(JSON arguments)";
  target.fingerprint = 0;  // the worker's JSON decoding checks the types
  auto state = std::make_shared<detail::State<std::string>>(0, /*raw=*/true);
  detail::Buffer args;
  args.append(lines.data(), lines.size());
  std::uint8_t flags = detail::protocol::flag_json | (keep_going ? detail::protocol::flag_keep_going : 0);
  submit_encoded(target, std::move(args), std::max<std::uint32_t>(items, 1), state, SubmitOptions{}, flags);
  return Future<std::string>(std::move(state));
}

Future<std::string> Executor::submit_json(std::string_view task, std::string lines,
                                          std::uint32_t items, bool keep_going) {
  return submit_json_to(detail::Target{.kind = detail::Target::Kind::name, .name = std::string(task)},
                        std::move(lines), items, keep_going);
}

Future<std::string> Executor::submit_json(const TaskRef& ref, std::string lines,
                                          std::uint32_t items, bool keep_going) {
  return submit_json_to(
      detail::Target{.kind = detail::Target::Kind::ref, .name = ref.name, .library = ref.library},
      std::move(lines), items, keep_going);
}

void Executor::fail_encoding(detail::StateBase& state, const detail::Target& target,
                             const char* what) {
  if (pool_->is_shutdown()) throw BrokenProcessPool::shut_down();
  state.attach({}, 0, target.name);
  state.set_error(std::make_exception_ptr(SerializationError(
      SerializationStage::encode_arguments, std::string(target.signature), what, target.name)));
}

std::size_t Executor::default_chunksize(std::size_t total) const {
  // About four chunks per worker: few messages, still some balance between workers.
  if (total == 0) return 16;
  std::size_t per = 4 * pool_->max_workers();
  return std::clamp<std::size_t>((total + per - 1) / per, 1, 4096);
}

void Executor::shutdown(ShutdownOptions options) { pool_->shutdown(options); }
void Executor::resize(std::size_t max_workers) { pool_->resize(max_workers); }
bool Executor::warm_up(Duration timeout) {
  return pool_->warm_up(std::chrono::duration_cast<detail::Clock::duration>(timeout));
}
std::size_t Executor::max_workers() const { return pool_->max_workers(); }
const ExecutorOptions& Executor::options() const { return pool_->options(); }
std::vector<int> Executor::worker_pids() const { return pool_->worker_pids(); }
bool Executor::is_shutdown() const { return pool_->is_shutdown(); }
bool Executor::is_broken() const { return pool_->broken() != nullptr; }

}  // namespace ferry
