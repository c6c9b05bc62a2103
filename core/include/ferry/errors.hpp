// SPDX-License-Identifier: BSD-3-Clause
// The whole ferry exception hierarchy, with named factories that keep the messages uniform.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry {

namespace detail {
class RemoteStack;  // a worker's stack, symbolized when first asked for (libferry's own)
}  // namespace detail

/** @brief Base of every error ferry throws or stores in a future. */
class FERRY_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;

  /**
  @brief For the error of an item of a map (map, imap, imap_unordered, map_outcomes): the index
  of its input, counted from 0 in input order; what() ends with " (input N)". For an error of a
  whole chunk of several inputs (its worker died running it, or it was cancelled), the chunk's
  first input, and what() ends with " (inputs N to M)". Empty for a plain submission.
  */
  std::optional<std::size_t> input_index() const noexcept {
    return input_count_ ? std::optional<std::size_t>(input_index_) : std::nullopt;
  }
  /// How many inputs input_index() begins: 1 for an input's own error, more for a chunk's, 0
  /// for none.
  std::size_t input_count() const noexcept { return input_count_; }
  /// The message, with the input index when there is one.
  const char* what() const noexcept override;

  /// ferry sets this before the error reaches a future (`count` inputs from `index`).
  void set_input_index(std::size_t index, std::size_t count = 1);

 private:
  std::size_t input_index_ = 0;
  std::size_t input_count_ = 0;  // 0: no input index
  std::string what_;             // what() with the index, once set
};

/**
@brief The task threw. Carries the remote exception's type and what(), the task and the worker pid.

Any exception the task lets escape becomes a TaskError, including `throw 42` (type "int").
*/
class FERRY_API TaskError : public Error {
 public:
  TaskError(std::string task, std::string remote_type, std::string remote_message, int pid,
            std::shared_ptr<const detail::RemoteStack> remote_stack = nullptr);
  const std::string& task() const noexcept { return task_; }
  /// Demangled C++ type of the exception thrown in the worker, e.g. "std::invalid_argument".
  const std::string& remote_type() const noexcept { return remote_type_; }
  /// what() of the exception in the worker.
  const std::string& remote_message() const noexcept { return remote_message_; }
  int pid() const noexcept { return pid_; }
  /**
  @brief The worker-side stack where the exception was thrown, one frame per line, innermost
  first: "#0  parse_row(std::string const&) at /src/rows.cpp:42 (librows.so)". Function names
  always; file:line where the module has debug information (-g). "" when unknown: the worker
  was not ferry-worker, or the exception was thrown in another thread and carried over.

  The worker sends raw addresses; they are symbolized here, in the host, on the first call
  (about 0.1 s on this project's VMs: it reads the modules' symbol and line tables; later calls return the same text). Thread-safe.
  */
  const std::string& remote_stack() const noexcept;

 private:
  std::string task_, remote_type_, remote_message_;
  int pid_;
  std::shared_ptr<const detail::RemoteStack> stack_;
};

/**
@brief The worker running the task died: killed by a signal, exited, or was OOM-killed.

Only the future of the task it was running fails; the pool respawns the worker.
*/
class FERRY_API TerminatedWorkerError : public Error {
 public:
  /// `signal` is 0 when the worker exited with `exit_code`; `exit_code` is -1 when it was signalled.
  TerminatedWorkerError(std::string task, int pid, int signal, int exit_code, bool oom_killed,
                        std::string detail = {},
                        std::shared_ptr<const detail::RemoteStack> remote_stack = nullptr);
  const std::string& task() const noexcept { return task_; }
  int pid() const noexcept { return pid_; }
  int signal() const noexcept { return signal_; }
  int exit_code() const noexcept { return exit_code_; }
  bool oom_killed() const noexcept { return oom_killed_; }
  /// "SIGSEGV", "SIGKILL", ... or "" when the worker exited.
  std::string signal_name() const;
  /**
  @brief Where the worker was when it took a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
  SIGABRT, SIGTRAP), innermost first, in the format of TaskError::remote_stack(): frame #0 is
  the instruction that faulted. Dumped in the worker by its signal handler without allocating,
  symbolized here on the first call. "" when unknown: SIGKILL (the OOM killer, a kill from
  outside), an exit, or a signal the task handled itself. Thread-safe.
  */
  const std::string& remote_stack() const noexcept;

 protected:
  /// For the subclasses that say why themselves: `what` is the whole message.
  struct Explained {};
  TerminatedWorkerError(Explained, std::string what, std::string task, int pid);

 private:
  std::string task_;
  int pid_, signal_, exit_code_;
  bool oom_killed_;
  std::shared_ptr<const detail::RemoteStack> stack_;
};

/**
@brief The task went past a resource limit (ferry::Limits) while it ran: an allocation past
`memory`, more CPU time than `cpu_time`, a descriptor, process or file size past its limit. The
worker was replaced.
*/
class FERRY_API ResourceLimitError : public TerminatedWorkerError {
 public:
  ResourceLimitError(std::string task, int pid, std::string limit, unsigned long long value,
                     std::string detail = {});
  /// "memory", "cpu_time", "open_files", "processes" or "file_size".
  const std::string& limit() const noexcept { return limit_; }
  /// The limit's value: bytes (memory, file_size), seconds (cpu_time) or a count.
  unsigned long long value() const noexcept { return value_; }

 private:
  std::string limit_;
  unsigned long long value_;
};

/**
@brief The task made a system call its sandbox denies (ferry::Sandbox): "socket", "execve",
"ptrace", ... The worker was replaced.
*/
class FERRY_API SandboxViolationError : public TerminatedWorkerError {
 public:
  SandboxViolationError(std::string task, int pid, std::string operation, std::string detail = {});
  /// The denied system call's name ("socket", "connect", "execve", "ptrace", ...).
  const std::string& operation() const noexcept { return operation_; }

 private:
  std::string operation_;
};

/**
@brief The callable cannot be reached from a worker: a plain function of the host's main program,
or a function of a library that is not a ferry plugin.
*/
class FERRY_API UnresolvableTaskError : public Error {
 public:
  UnresolvableTaskError(std::string message, std::string function, std::string module,
                        std::string detail);
  /// A main-program function: names it and the executable, quotes the loader, gives both fixes.
  static UnresolvableTaskError main_program(const std::string& function, const std::string& module,
                                            const std::string& loader_message);
  /// An address inside a shared library that exports no ferry task for it.
  static UnresolvableTaskError not_a_task(const std::string& function, const std::string& module);
  /// A FERRY_WRAP body that could not be compiled into a plugin (the compiler's diagnostic).
  static UnresolvableTaskError wrap_failed(const std::string& function, const std::string& where,
                                           const std::string& diagnostic);
  /// A FERRY_WRAP function that cannot be built here: no compiler, cache not writable, ...
  static UnresolvableTaskError wrap_setup_failed(const std::string& function,
                                                 const std::string& where, const std::string& why);
  const std::string& function() const noexcept { return function_; }
  const std::string& module() const noexcept { return module_; }
  /// The loader's or compiler's own message.
  const std::string& detail() const noexcept { return detail_; }

 private:
  std::string function_, module_, detail_;
};

/** @brief Where in a task's round trip serialization failed. */
enum class SerializationStage {
  encode_arguments,  ///< in the host, at submit
  decode_arguments,  ///< in the worker
  encode_result,     ///< in the worker
  decode_result,     ///< in the host, at get()
};

/** @brief Arguments or a result could not be encoded or decoded; only that future fails. */
class FERRY_API SerializationError : public Error {
 public:
  SerializationError(SerializationStage stage, std::string type, std::string reason,
                     std::string task = {});
  SerializationStage stage() const noexcept { return stage_; }
  /// "host" or "worker".
  const char* side() const noexcept;
  /// The type (or signature) being encoded or decoded.
  const std::string& type() const noexcept { return type_; }
  /// cereal's (or the type's own) message.
  const std::string& reason() const noexcept { return reason_; }
  const std::string& task() const noexcept { return task_; }

 private:
  SerializationStage stage_;
  std::string type_, reason_, task_;
};

/** @brief A plugin is missing, unloadable, unsafe, of another ABI, or lacks the task asked for. */
class FERRY_API PluginError : public Error {
 public:
  PluginError(std::string message, std::string path, std::string symbol, std::string loader_message);

  static PluginError file_missing(const std::string& path, const std::string& symbol);
  static PluginError load_failed(const std::string& path, const std::string& symbol,
                                 const std::string& loader_message);
  static PluginError not_shared_library(const std::string& path, const std::string& why);
  static PluginError not_ferry_plugin(const std::string& path);
  /// An ELF file for another machine or class (aarch64 on x86-64, 32-bit, big-endian).
  static PluginError wrong_machine(const std::string& path, const std::string& why);
  static PluginError symbol_not_found(const std::string& path, const std::string& symbol,
                                      const std::string& loader_message);
  /// No plugin of `searched` exports `task`. `close_names` are what the user may have meant, as
  /// they would be submitted ("'zl::png_dims' (plugin zl)"): the message asks "did you mean ...?".
  static PluginError task_not_found(const std::string& task, const std::string& searched,
                                    const std::vector<std::string>& close_names = {});
  static PluginError ambiguous(const std::string& task, const std::string& first,
                               const std::string& second);
  static PluginError signature_mismatch(const std::string& path, const std::string& task,
                                        const std::string& plugin_signature,
                                        const std::string& submitted_signature);
  /// The signatures agree, but a user type in it is defined otherwise in the plugin than in the
  /// host: the layouts say what each side's types serialize ("geo::Point{x:f64,y:f64}").
  static PluginError layout_mismatch(const std::string& path, const std::string& task,
                                     const std::string& signature, const std::string& plugin_layout,
                                     const std::string& host_layout);
  static PluginError abi_mismatch(const std::string& path, const std::string& task,
                                  unsigned plugin_abi, unsigned ferry_abi);
  /// `path` (a plugin, or a directory or link target on the way to `plugin`) is not trusted:
  /// `why` says how (owner, mode).
  static PluginError unsafe(const std::string& path, const std::string& why,
                            const std::string& plugin = {});

  const std::string& path() const noexcept { return path_; }
  /// The exported symbol (ferry_task:<name>), when one is concerned.
  const std::string& symbol() const noexcept { return symbol_; }
  const std::string& loader_message() const noexcept { return loader_message_; }

 private:
  std::string path_, symbol_, loader_message_;
};

/** @brief The executor cannot take work: it was shut down, or no worker can be started. */
class FERRY_API BrokenProcessPool : public Error {
 public:
  using Error::Error;
  static BrokenProcessPool shut_down();
  static BrokenProcessPool spawn_failed(const std::string& worker_path, const std::string& why);
};

/** @brief The future was cancelled, or its executor was shut down with kill_workers. */
class FERRY_API CancelledError : public Error {
 public:
  using Error::Error;
};

/** @brief A wait or a task deadline expired. */
class FERRY_API TimeoutError : public Error {
 public:
  using Error::Error;
  /// MapOptions::timeout ran out: `inputs_done` of `inputs_total` (0: not known) inputs were done;
  /// of the chunks still out, `cancelled` had not started (cancelled), `stopped` were running and
  /// had their workers killed (MapOptions::kill_running), `left` were on a worker and go on to
  /// their end. `kill_running`: whether the map asked to kill running chunks.
  static TimeoutError map_timeout(std::chrono::nanoseconds timeout, std::size_t inputs_done,
                                  std::size_t inputs_total, std::size_t cancelled, std::size_t stopped,
                                  std::size_t left, bool kill_running);
};

}  // namespace ferry
