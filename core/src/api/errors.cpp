// SPDX-License-Identifier: BSD-3-Clause
// Messages of the ferry error hierarchy, built in one place so they stay uniform.
#include <ferry/errors.hpp>

#include <string.h>

#include <algorithm>
#include <string_view>

#include "platform/format.hpp"
#include "platform/signals.hpp"
#include "platform/symbolize.hpp"

namespace ferry {

namespace {
/// A task's name in a message, cut at 4 KiB as the trace cuts it: a name submitted may be
/// anything (`ferry run` of a 100 KB name printed it whole); error accessors keep it whole.
std::string quoted(const std::string& s) { return "'" + detail::cut_text(s, 4096) + "'"; }
std::string or_unknown(const std::string& s) { return s.empty() ? "(unknown)" : s; }

const std::string& stack_text(const std::shared_ptr<const detail::RemoteStack>& stack) noexcept {
  static const std::string none;
  return stack ? stack->text() : none;
}
}  // namespace

const char* Error::what() const noexcept {
  return input_count_ ? what_.c_str() : std::runtime_error::what();
}

void Error::set_input_index(std::size_t index, std::size_t count) {
  input_index_ = index;
  input_count_ = std::max<std::size_t>(count, 1);
  what_ = std::runtime_error::what();
  what_ += input_count_ == 1 ? " (input " + std::to_string(index) + ")"
                             : " (inputs " + std::to_string(index) + " to " +
                                   std::to_string(index + input_count_ - 1) + ")";
}

TaskError::TaskError(std::string task, std::string remote_type, std::string remote_message, int pid,
                     std::shared_ptr<const detail::RemoteStack> remote_stack)
    // What a task raised is its own text: shown as message_text (no escape sequence reaches a
    // terminal or log that prints what()); remote_type() and remote_message() keep its bytes.
    : Error("task " + quoted(task) + " raised " + detail::message_text(remote_type) + " in worker " +
            std::to_string(pid) + ": " + detail::message_text(remote_message)),
      task_(std::move(task)),
      remote_type_(std::move(remote_type)),
      remote_message_(std::move(remote_message)),
      pid_(pid),
      stack_(std::move(remote_stack)) {}

const std::string& TaskError::remote_stack() const noexcept { return stack_text(stack_); }

namespace {
std::string signal_text(int sig) {
  std::string name = detail::signal_name(sig);
  if (const char* desc = ::sigdescr_np(sig)) name += std::string(" (") + desc + ")";
  return name;
}

std::string terminated_message(const std::string& task, int pid, int sig, int code, bool oom,
                               const std::string& detail) {
  std::string m = "worker " + std::to_string(pid) + " running task " + quoted(or_unknown(task)) +
                  " was terminated";
  if (sig) {
    m += " by " + signal_text(sig);
  } else if (code >= 0) {
    m += ": it exited with code " + std::to_string(code);
  }
  if (oom)
    m += "; most likely by the kernel's OOM killer (an OOM kill was counted as it died): the "
         "task needs more memory than the machine or its cgroup allows";
  if (!detail.empty()) m += " [" + detail::message_text(detail) + "]";  // a backend's or rank's words
  return m;
}
}  // namespace

TerminatedWorkerError::TerminatedWorkerError(std::string task, int pid, int signal, int exit_code,
                                             bool oom_killed, std::string detail,
                                             std::shared_ptr<const detail::RemoteStack> remote_stack)
    : Error(terminated_message(task, pid, signal, exit_code, oom_killed, detail)),
      task_(std::move(task)),
      pid_(pid),
      signal_(signal),
      exit_code_(exit_code),
      oom_killed_(oom_killed),
      stack_(std::move(remote_stack)) {}

const std::string& TerminatedWorkerError::remote_stack() const noexcept { return stack_text(stack_); }

TerminatedWorkerError::TerminatedWorkerError(Explained, std::string what, std::string task, int pid)
    : Error(std::move(what)), task_(std::move(task)), pid_(pid), signal_(0), exit_code_(-1),
      oom_killed_(false) {}

namespace {
std::string limit_text(const std::string& limit, unsigned long long value) {
  if (limit == "memory" || limit == "file_size") return detail::format_size(value);
  if (limit == "cpu_time") return std::to_string(value) + " s of CPU time";
  return std::to_string(value);
}
std::string with_detail(std::string m, const std::string& detail) {
  if (!detail.empty()) m += " (" + detail::message_text(detail) + ")";  // the task's exception
  return m + "; the worker was replaced";
}
}  // namespace

ResourceLimitError::ResourceLimitError(std::string task, int pid, std::string limit,
                                       unsigned long long value, std::string detail)
    : TerminatedWorkerError(Explained{},
                            with_detail("task " + quoted(or_unknown(task)) + " went past its " +
                                            limit + " limit of " + limit_text(limit, value) +
                                            " in worker " + std::to_string(pid),
                                        detail),
                            task, pid),
      limit_(std::move(limit)),
      value_(value) {}

SandboxViolationError::SandboxViolationError(std::string task, int pid, std::string operation,
                                             std::string detail)
    : TerminatedWorkerError(Explained{},
                            with_detail("task " + quoted(or_unknown(task)) + " made a system call " +
                                            "its sandbox denies: " + detail::message_text(operation) + " (worker " +
                                            std::to_string(pid) + ")",
                                        detail),
                            task, pid),
      operation_(std::move(operation)) {}

std::string TerminatedWorkerError::signal_name() const {
  return signal_ ? detail::signal_name(signal_) : std::string();
}

UnresolvableTaskError::UnresolvableTaskError(std::string message, std::string function,
                                             std::string module, std::string detail)
    : Error(std::move(message)),
      function_(std::move(function)),
      module_(std::move(module)),
      detail_(std::move(detail)) {}

UnresolvableTaskError UnresolvableTaskError::main_program(const std::string& function,
                                                          const std::string& module,
                                                          const std::string& loader_message) {
  std::string m = "function " + quoted(or_unknown(function)) + " is defined in the main program " +
                  module + ", which a worker cannot load";
  if (!loader_message.empty()) m += " (loader: " + loader_message + ")";
  m += ". Fix: move it into a plugin and register it with FERRY_TASK, or wrap it with FERRY_WRAP "
       "so that its source is compiled into a cached plugin.";
  return UnresolvableTaskError(std::move(m), function, module, loader_message);
}

UnresolvableTaskError UnresolvableTaskError::not_a_task(const std::string& function,
                                                        const std::string& module) {
  std::string m = "function " + quoted(or_unknown(function)) + " in " + or_unknown(module) +
                  " is not a ferry task. Fix: register it with FERRY_TASK in a plugin built with "
                  "ferry_add_plugin, or wrap it with FERRY_WRAP.";
  return UnresolvableTaskError(std::move(m), function, module, {});
}

UnresolvableTaskError UnresolvableTaskError::wrap_failed(const std::string& function,
                                                         const std::string& where,
                                                         const std::string& diagnostic) {
  // The advice only when the compiler or the linker points at a name the body does not have (a
  // full disk, a flag the compiler refuses, -std=c++17 are not that, and it misled there).
  static constexpr std::string_view missing_name[] = {
      "was not declared", "has not been declared", "undeclared", "does not name a type", "unknown type name",
      "is not a member of", "no member named", "undefined reference", "undefined symbol", "not declared in this scope"};
  bool missing = false;
  for (std::string_view said : missing_name) missing = missing || diagnostic.find(said) != std::string::npos;
  std::string m = "FERRY_WRAP(" + function + ") at " + where + " could not be compiled into a plugin" +
                  (missing ? ": its body must only use what it declares or includes itself, not symbols of "
                             "the main program"
                           : std::string()) +
                  ". Compiler said:\n" + diagnostic;
  return UnresolvableTaskError(std::move(m), function, where, diagnostic);
}

UnresolvableTaskError UnresolvableTaskError::wrap_setup_failed(const std::string& function,
                                                               const std::string& where,
                                                               const std::string& why) {
  std::string m = "FERRY_WRAP(" + function + ") at " + where + " cannot be built: " + why;
  return UnresolvableTaskError(std::move(m), function, where, why);
}

namespace {
const char* stage_text(SerializationStage s) {
  switch (s) {
    case SerializationStage::encode_arguments: return "encoding the arguments in the host";
    case SerializationStage::decode_arguments: return "decoding the arguments in the worker";
    case SerializationStage::encode_result: return "encoding the result in the worker";
    case SerializationStage::decode_result: return "decoding the result in the host";
  }
  return "serializing";
}
}  // namespace

SerializationError::SerializationError(SerializationStage stage, std::string type,
                                       std::string reason, std::string task)
    : Error("serialization failed " + std::string(stage_text(stage)) +
            (task.empty() ? std::string() : " of task " + quoted(task)) + " (type " +
            or_unknown(type) + "): " + reason),
      stage_(stage),
      type_(std::move(type)),
      reason_(std::move(reason)),
      task_(std::move(task)) {}

const char* SerializationError::side() const noexcept {
  return stage_ == SerializationStage::encode_arguments || stage_ == SerializationStage::decode_result
             ? "host"
             : "worker";
}

PluginError::PluginError(std::string message, std::string path, std::string symbol,
                         std::string loader_message)
    : Error(std::move(message)),
      path_(std::move(path)),
      symbol_(std::move(symbol)),
      loader_message_(std::move(loader_message)) {}

PluginError PluginError::file_missing(const std::string& path, const std::string& symbol) {
  return PluginError("plugin " + path + " does not exist (looking for " + symbol + ")", path,
                     symbol, "no such file");
}
PluginError PluginError::load_failed(const std::string& path, const std::string& symbol,
                                     const std::string& loader_message) {
  return PluginError("plugin " + path + " could not be loaded: " + loader_message, path, symbol,
                     loader_message);
}
PluginError PluginError::not_shared_library(const std::string& path, const std::string& why) {
  return PluginError(path + " is not a shared library: " + why, path, {}, why);
}
PluginError PluginError::wrong_machine(const std::string& path, const std::string& why) {
  return PluginError(path + " cannot be loaded here: " + why, path, {}, why);
}
PluginError PluginError::not_ferry_plugin(const std::string& path) {
  return PluginError(path + " is not a ferry plugin: it exports no ferry_task:* records (build it "
                            "with ferry_add_plugin and register tasks with FERRY_TASK)",
                     path, {}, {});
}
PluginError PluginError::symbol_not_found(const std::string& path, const std::string& symbol,
                                          const std::string& loader_message) {
  return PluginError("plugin " + path + " has no task symbol " + symbol +
                         (loader_message.empty() ? std::string() : " (" + loader_message + ")"),
                     path, symbol, loader_message);
}
PluginError PluginError::task_not_found(const std::string& task, const std::string& searched,
                                        const std::vector<std::string>& close_names) {
  std::string m = "no plugin provides task " + quoted(task) + " (searched: " +
                  (searched.empty() ? std::string("no plugin directories; set "
                                                  "ExecutorOptions::plugin_dirs or "
                                                  "FERRY_PLUGIN_PATH")
                                    : searched) +
                  ")";
  for (std::size_t i = 0; i < close_names.size(); ++i) {
    const char* glue = i == 0 ? "; did you mean " : i + 1 == close_names.size() ? " or " : ", ";
    m += glue + close_names[i];
  }
  if (!close_names.empty()) m += "?";
  return PluginError(std::move(m), {}, "ferry_task:" + task, {});
}
PluginError PluginError::ambiguous(const std::string& task, const std::string& first,
                                   const std::string& second) {
  return PluginError("task " + quoted(task) + " is exported by two plugins: " + first + " and " +
                         second + "; submit it as 'plugin:" + task + "' to choose one",
                     first, "ferry_task:" + task, {});
}
PluginError PluginError::signature_mismatch(const std::string& path, const std::string& task,
                                            const std::string& plugin_signature,
                                            const std::string& submitted_signature) {
  return PluginError("task " + quoted(task) + " of " + path + " has signature " +
                         plugin_signature + ", but was submitted as " + submitted_signature,
                     path, "ferry_task:" + task, {});
}
PluginError PluginError::layout_mismatch(const std::string& path, const std::string& task,
                                         const std::string& signature, const std::string& plugin_layout,
                                         const std::string& host_layout) {
  return PluginError("task " + quoted(task) + " of " + path + " (" + signature +
                         ") defines its types otherwise than the host: the plugin's serialize " +
                         plugin_layout + ", the host's " + (host_layout.empty() ? "(no user type)" : host_layout) +
                         "; build both from the same definitions and ferry headers (a plugin built with an older "
                         "ferry may describe them otherwise: rebuild it)",
                     path, "ferry_task:" + task, {});
}
PluginError PluginError::abi_mismatch(const std::string& path, const std::string& task,
                                      unsigned plugin_abi, unsigned ferry_abi) {
  return PluginError("plugin " + path + " (task " + quoted(task) + ") was built for ferry plugin ABI " +
                         std::to_string(plugin_abi) + ", this ferry uses ABI " +
                         std::to_string(ferry_abi) + "; rebuild the plugin",
                     path, "ferry_task:" + task, {});
}
PluginError PluginError::unsafe(const std::string& path, const std::string& why,
                                const std::string& plugin) {
  std::string way = plugin.empty() || plugin == path ? "" : " (on the way to " + plugin + ")";
  return PluginError("refusing plugin path " + path + way + ": " + why +
                         ". Fix the permissions (chmod go-w, chown), or set "
                         "ExecutorOptions::allow_unsafe_plugins / FERRY_ALLOW_UNSAFE_PLUGINS=1",
                     path, {}, why);
}

TimeoutError TimeoutError::map_timeout(std::chrono::nanoseconds timeout, std::size_t inputs_done,
                                       std::size_t inputs_total, std::size_t cancelled, std::size_t stopped,
                                       std::size_t left, bool kill_running) {
  // Each part says what happened to those chunks: "the rest was cancelled" was said of chunks
  // left running (without kill_running nothing running is stopped, and a chunk queued in a
  // worker's pipeline cannot be taken back).
  auto were = [](std::size_t n) { return std::to_string(n) + (n == 1 ? " was" : " were"); };
  std::vector<std::string> parts;
  if (cancelled) parts.push_back(were(cancelled) + " not yet started and cancelled");
  if (stopped)
    parts.push_back(were(stopped) + " running and stopped (" + (stopped == 1 ? "its worker" : "their workers") +
                    " killed)");
  if (left)
    parts.push_back(were(left) + " already on a worker and left to finish" +
                    (kill_running ? "" : " (MapOptions::kill_running stops running chunks)"));
  std::string out = "map did not finish within its timeout of " + detail::format_duration(timeout) + ": " +
                    std::to_string(inputs_done) +
                    (inputs_total ? " of " + std::to_string(inputs_total) : std::string()) + " inputs were done";
  if (parts.empty()) return TimeoutError(out + "; no chunk was still out");
  out += "; of the chunks still out, ";
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return TimeoutError(out);
}

BrokenProcessPool BrokenProcessPool::shut_down() {
  return BrokenProcessPool("cannot submit new tasks after shutdown");
}
BrokenProcessPool BrokenProcessPool::spawn_failed(const std::string& worker_path,
                                                  const std::string& why) {
  return BrokenProcessPool("cannot start worker processes (" + worker_path + "): " + why);
}

}  // namespace ferry
